//! Latency percentiles and the Markdown report.

use std::time::Duration;

/// Latencies of one scenario, in microseconds.
#[derive(Debug, Default, Clone)]
pub struct Latencies(pub Vec<u64>);

impl Latencies {
    /// Adds the samples of another client.
    pub fn merge(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }

    /// `p50 / p99 / max` in milliseconds.
    pub fn summary(&mut self) -> String {
        if self.0.is_empty() {
            return "–".into();
        }
        self.0.sort_unstable();
        let at = |q: f64| {
            let i = ((self.0.len() as f64 - 1.0) * q).round() as usize;
            self.0[i] as f64 / 1000.0
        };
        format!(
            "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            at(0.5),
            at(0.99),
            at(1.0)
        )
    }
}

/// Measurements by scenario and system, in the order first added.
#[derive(Debug, Default)]
pub struct Table {
    series: Vec<Series>,
}

#[derive(Debug)]
struct Series {
    scenario: String,
    system: String,
    baseline: bool,
    rates: Vec<f64>,
    latencies: Latencies,
}

impl Table {
    /// Adds one run of Strata (or a system compared with the baselines).
    pub fn add(&mut self, scenario: &str, system: &str, rate: f64, latencies: Latencies) {
        self.entry(scenario, system, false).push(rate, latencies);
    }

    /// Adds one run of a baseline.
    pub fn add_baseline(&mut self, scenario: &str, system: &str, rate: f64) {
        self.add_baseline_timed(scenario, system, rate, Latencies::default());
    }

    /// Adds one run of a baseline whose latencies were measured too.
    pub fn add_baseline_timed(
        &mut self,
        scenario: &str,
        system: &str,
        rate: f64,
        latencies: Latencies,
    ) {
        self.entry(scenario, system, true).push(rate, latencies);
    }

    fn entry(&mut self, scenario: &str, system: &str, baseline: bool) -> &mut Series {
        let found = self
            .series
            .iter()
            .position(|s| s.scenario == scenario && s.system == system);
        let index = found.unwrap_or_else(|| {
            self.series.push(Series {
                scenario: scenario.to_owned(),
                system: system.to_owned(),
                baseline,
                rates: Vec::new(),
                latencies: Latencies::default(),
            });
            self.series.len() - 1
        });
        &mut self.series[index]
    }

    /// One row per series: the median rate, and Strata's median as a share of
    /// each baseline's of the same scenario (one share per Strata variant
    /// when a scenario has several).
    pub fn rows(&mut self) -> Vec<Row> {
        let medians: Vec<f64> = self.series.iter().map(|s| median(&s.rates)).collect();
        let shares: Vec<Option<String>> = (0..self.series.len())
            .map(|i| self.shares_of(i, &medians))
            .collect();
        let mut rows = Vec::new();
        for (i, series) in self.series.iter_mut().enumerate() {
            let runs: Vec<String> = series.rates.iter().map(|r| format!("{r:.0}")).collect();
            rows.push(Row {
                scenario: series.scenario.clone(),
                system: series.system.clone(),
                events_per_sec: medians[i],
                runs: runs.join(", "),
                strata_share: shares[i].clone(),
                latency: series.latencies.summary(),
            });
        }
        rows
    }

    /// For baseline series `i`: the Strata medians of its scenario as shares
    /// of its median.
    fn shares_of(&self, i: usize, medians: &[f64]) -> Option<String> {
        let this = &self.series[i];
        if !this.baseline || medians[i] <= 0.0 {
            return None;
        }
        let stratas: Vec<usize> = (0..self.series.len())
            .filter(|&j| !self.series[j].baseline && self.series[j].scenario == this.scenario)
            .collect();
        let share = |j: usize| 100.0 * medians[j] / medians[i];
        match stratas.as_slice() {
            [] => None,
            [j] => Some(format!("{:.0} %", share(*j))),
            many => Some(
                many.iter()
                    .map(|&j| format!("{:.0} % ({})", share(j), self.series[j].system))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
        }
    }
}

impl Series {
    fn push(&mut self, rate: f64, latencies: Latencies) {
        self.rates.push(rate);
        self.latencies.merge(latencies);
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was measured.
    pub scenario: String,
    /// The system measured.
    pub system: String,
    /// Median events per second.
    pub events_per_sec: f64,
    /// Every run's events per second.
    pub runs: String,
    /// For a baseline: Strata's median as a share of it.
    pub strata_share: Option<String>,
    /// Latency summary, if measured.
    pub latency: String,
}

/// Prints the report as Markdown.
pub fn print(rows: &[Row], notes: &[String], elapsed: Duration) {
    println!();
    println!(
        "| scenario | system | events/s (median) | runs | Strata / this | latency (all runs) |"
    );
    println!("| --- | --- | ---: | --- | ---: | --- |");
    for row in rows {
        println!(
            "| {} | {} | {:.0} | {} | {} | {} |",
            row.scenario,
            row.system,
            row.events_per_sec,
            row.runs,
            row.strata_share.as_deref().unwrap_or(""),
            row.latency
        );
    }
    println!();
    for note in notes {
        println!("- {note}");
    }
    println!("- whole run: {:.0} s", elapsed.as_secs_f64());
}
