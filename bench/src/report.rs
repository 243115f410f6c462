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

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was measured.
    pub scenario: String,
    /// The system measured.
    pub system: String,
    /// Events per second.
    pub events_per_sec: f64,
    /// Latency summary, if measured.
    pub latency: String,
}

/// Prints the report as Markdown.
pub fn print(rows: &[Row], notes: &[String], elapsed: Duration) {
    println!();
    println!("| scenario | system | events/s | latency |");
    println!("| --- | --- | ---: | --- |");
    for row in rows {
        println!(
            "| {} | {} | {:.0} | {} |",
            row.scenario, row.system, row.events_per_sec, row.latency
        );
    }
    println!();
    for note in notes {
        println!("- {note}");
    }
    println!("- whole run: {:.0} s", elapsed.as_secs_f64());
}
