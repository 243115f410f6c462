//! The scenarios, each measured side by side with its baseline.

use std::time::Instant;

use anyhow::Context;
use sqlx::{Connection, PgConnection};

use crate::node::Node;
use crate::pgbench::{self, Target};
use crate::report::{self, Latencies};
use crate::workloads::{
    fill_all, postgres_es_appends, prepare_pgbench_table, read_all, strata_appends,
};
use crate::{Options, live, postgres_es};

const BENCH_DB: &str = "strata_bench";
const PGES_DB: &str = "strata_bench_pges";

/// `admin` with its database replaced by `database`, through a URL parser.
fn url_for(admin: &str, database: &str) -> anyhow::Result<String> {
    let mut url = url::Url::parse(admin).with_context(|| format!("{admin} is not a URL"))?;
    url.set_path(database);
    Ok(url.to_string())
}

async fn recreate_database(admin: &str, name: &str) -> anyhow::Result<String> {
    let mut conn = PgConnection::connect(admin)
        .await
        .with_context(|| format!("connecting to {admin}"))?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await?;
    url_for(admin, name)
}

fn private_postgres() -> anyhow::Result<String> {
    use strata_server::embedded::{EmbeddedOptions, EmbeddedPostgres};
    let dir = std::env::temp_dir().join(format!("strata-bench-pg-{}", std::process::id()));
    let pg = EmbeddedPostgres::start(EmbeddedOptions::durable(dir))?;
    let url = pg.url("postgres");
    std::mem::forget(pg);
    Ok(url)
}

/// Runs every selected scenario and prints the report.
pub async fn run(options: Options) -> anyhow::Result<()> {
    let started = Instant::now();
    let admin = match &options.database_url {
        Some(url) => url.clone(),
        None => tokio::task::spawn_blocking(private_postgres).await??,
    };
    let mut notes = machine_notes(&admin).await?;
    let bench_url = url_for(&admin, BENCH_DB)?;
    let node = match &options.url {
        Some(url) => NodeHandle::External(url.trim_end_matches('/').to_owned()),
        None => {
            recreate_database(&admin, BENCH_DB).await?;
            NodeHandle::Spawned(Node::start(&bench_url, &["--pool-size", "16"])?)
        }
    };
    notes.push(format!("Strata node: {}", node.url()));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let target = Target::from_url(&admin)?.with_database(BENCH_DB);
    // The `--auth keys` lines: a second node on the same database that
    // requires keys, and a client that sends one (only when this run starts
    // its own nodes).
    let keyed = match (&node, options.runs("appends") || options.runs("read")) {
        (NodeHandle::Spawned(_), true) => Some(keyed_node(&bench_url).await?),
        _ => None,
    };
    let mut series = report::Table::default();
    let duration = options.duration();
    const SINGLE: &str = "single-event appends, 16 clients";
    const BATCH: &str = "100-event batches, 4 clients";

    if options.runs("appends") || options.runs("postgres-es") {
        prepare_pgbench_table(&bench_url).await?;
        let pges_url = if options.runs("postgres-es") {
            let url = recreate_database(&admin, PGES_DB).await?;
            let mut conn = PgConnection::connect(&url).await?;
            sqlx::raw_sql(postgres_es::SCHEMA)
                .execute(&mut conn)
                .await?;
            Some(url)
        } else {
            None
        };
        for round in 1..=options.rounds {
            eprintln!("single-event appends, round {round}/{} ...", options.rounds);
            if options.runs("appends") {
                let result = strata_appends(&client, &node.url(), 16, 1, 0, duration).await?;
                series.add(
                    SINGLE,
                    "Strata (HTTP)",
                    result.events_per_sec(),
                    result.latencies,
                );
                if let Some((keyed, keyed_client)) = &keyed {
                    let result =
                        strata_appends(keyed_client, &keyed.url(), 16, 1, 0, duration).await?;
                    series.add(
                        SINGLE,
                        "Strata (HTTP), --auth keys",
                        result.events_per_sec(),
                        result.latencies,
                    );
                }
                let script = pgbench::single_insert_script("pgbench_events");
                let tps = pgbench::run(&target, &script, 16, duration)?;
                series.add_baseline(SINGLE, "pgbench one-row INSERT", tps);
                let script = pgbench::single_insert_script("pgbench_events_keys");
                let tps = pgbench::run(&target, &script, 16, duration)?;
                series.add_baseline(
                    SINGLE,
                    "pgbench one-row INSERT, table with only the primary key and the two unique indexes",
                    tps,
                );
                // The same with one live `$all` subscriber on the node: its
                // shared tail then sends every commit as the append statement
                // returned it (with none, it does nothing).
                let result = live::with_subscriber(&client, &node.url(), async {
                    let result = strata_appends(&client, &node.url(), 16, 1, 0, duration).await?;
                    let appended = result.events;
                    Ok((result, appended))
                })
                .await?;
                series.add(
                    SINGLE,
                    "Strata (HTTP), one live subscriber",
                    result.events_per_sec(),
                    result.latencies,
                );
                // Clients repeating their previous append (a retry after a
                // timeout): answered 200 with the original result.
                for percent in [5, 20] {
                    let result =
                        strata_appends(&client, &node.url(), 16, 1, percent, duration).await?;
                    series.add(
                        SINGLE,
                        &format!("Strata (HTTP), {percent}% of requests repeats"),
                        result.events_per_sec(),
                        result.latencies,
                    );
                }
            }
            if let Some(url) = &pges_url {
                let result = postgres_es_appends(url, 16, duration).await?;
                series.add_baseline_timed(
                    SINGLE,
                    "postgres-es (direct, no HTTP)",
                    result.events_per_sec(),
                    result.latencies,
                );
            }
        }
    }
    if options.runs("batches") {
        prepare_pgbench_table(&bench_url).await?;
        for round in 1..=options.rounds {
            eprintln!("100-event batches, round {round}/{} ...", options.rounds);
            let result = strata_appends(&client, &node.url(), 4, 100, 0, duration).await?;
            series.add(
                BATCH,
                "Strata (HTTP)",
                result.events_per_sec(),
                result.latencies,
            );
            let tps = pgbench::run(&target, &pgbench::batch_values_script(), 4, duration)?;
            series.add_baseline(
                BATCH,
                "pgbench 100-row INSERT … VALUES (rows sent by the client)",
                tps * 100.0,
            );
            let tps = pgbench::run(&target, &pgbench::batch_generated_script(), 4, duration)?;
            series.add_baseline(
                BATCH,
                "pgbench 100-row INSERT … SELECT generate_series (rows made inside PostgreSQL)",
                tps * 100.0,
            );
        }
    }
    if options.runs("read") {
        eprintln!("read: preparing {} events in $all ...", options.read_events);
        fill_all(&client, &node.url(), options.read_events).await?;
        let scenario = format!(
            "read {} events of $all forward, 1 client, pages of 1,000",
            options.read_events
        );
        for round in 1..=options.rounds {
            eprintln!("read, round {round}/{} ...", options.rounds);
            let (rate, latencies) = read_all(&client, &node.url(), options.read_events).await?;
            series.add(&scenario, "Strata (HTTP)", rate, latencies);
            if let Some((keyed, keyed_client)) = &keyed {
                let (rate, latencies) =
                    read_all(keyed_client, &keyed.url(), options.read_events).await?;
                series.add(&scenario, "Strata (HTTP), --auth keys", rate, latencies);
            }
            let tps = pgbench::run(
                &target,
                &pgbench::keyset_read_script(options.read_events),
                1,
                duration,
            )?;
            series.add_baseline(
                &scenario,
                "pgbench keyset SELECT of 1,000 rows (no HTTP, nothing decoded)",
                tps * 1000.0,
            );
        }
    }
    if options.runs("live") {
        for (label, rate) in [
            ("idle (20 appends/s)", 20),
            ("under load (2,000 appends/s)", 2000),
        ] {
            for round in 1..=options.rounds {
                eprintln!("live latency {label}, round {round}/{} ...", options.rounds);
                let (latencies, appended, _) =
                    live::latency(&client, &node.url(), rate, duration).await?;
                let achieved = appended as f64 / duration.as_secs_f64();
                series.add(
                    &format!("append → SSE delivery, one subscriber, {label}"),
                    "Strata (HTTP)",
                    achieved,
                    latencies,
                );
            }
        }
    }
    if options.runs("fanout") {
        eprintln!("fan-out: {} subscribers on $all ...", options.subscribers);
        let rate = 20;
        let fan = live::fan_out(
            &node.url(),
            &bench_url,
            node.pid(),
            options.subscribers,
            rate,
            duration,
        )
        .await?;
        let mut latencies = fan.latencies;
        notes.push(format!(
            "fan-out: {} subscribers on `$all` while {} events were appended at {rate}/s: {} got every event in order; \
             node RSS {:.0} MiB; delivery of sampled subscribers (1 in 100): {}; database: {:.1} transactions/s in all \
             (the appends included), tail {:.1} queries/s, subscriber catch-up {:.1} queries/s",
            fan.subscribers, fan.appended, fan.complete, fan.rss_mib, latencies.summary(), fan.db_xacts_per_sec,
            fan.tail_queries_per_sec, fan.catch_up_queries_per_sec
        ));
    }
    if options.runs("memory")
        && let Some(pid) = node.pid()
    {
        eprintln!(
            "memory: one stalled $all subscriber while {} MiB of events are appended ...",
            options.stalled_mib
        );
        let m = live::stalled_subscriber(&node.url(), pid, options.stalled_mib << 20).await?;
        notes.push(format!(
                "memory: one SSE subscriber on `$all` that never reads while {:.0} MiB of events ({} appends of 8 × 400 KB) \
                 were appended: node RSS {:.0} MiB before, peak {:.0} MiB, {:.0} MiB 2 s after the subscriber left \
                 (--live-buffer-bytes 64 MiB, the default)",
                m.appended_mib, m.appends, m.rss_before_mib, m.rss_peak_mib, m.rss_after_mib
            ));
    }
    if options.runs("subscription") {
        for round in 1..=options.rounds {
            eprintln!(
                "persistent subscription, 200,000 events, 4 consumers, round {round}/{} ...",
                options.rounds
            );
            let rate = crate::subscription::throughput(&node.url(), 200_000).await?;
            series.add("acked events through one persistent subscription, 4 consumers (200,000-event backlog)", "Strata (HTTP)", rate, Latencies::default());
        }
    }
    if options.runs("failover") {
        let mut times = Vec::new();
        for round in 1..=options.rounds {
            eprintln!(
                "failover (3 nodes, kill -9 the leader), round {round}/{} ...",
                options.rounds
            );
            let url = recreate_database(&admin, "strata_bench_failover").await?;
            times.push(crate::subscription::failover(&url, 5000).await?);
        }
        times.sort();
        let shown: Vec<String> = times
            .iter()
            .map(|t| format!("{:.2} s", t.as_secs_f64()))
            .collect();
        notes.push(format!(
            "failover of a persistent subscription (3 nodes, --lease-ttl-ms 5000, kill -9 of the leader → first delivery by the new leader): median {:.2} s (runs: {})",
            times[times.len() / 2].as_secs_f64(),
            shown.join(", ")
        ));
    }
    if options.runs("projection") {
        eprintln!(
            "projection: {} account events, then account_balances from scratch ...",
            options.projection_events
        );
        let url = recreate_database(&admin, "strata_bench_projection").await?;
        let node = Node::start(&url, &["--pool-size", "16"])?;
        let figures =
            crate::projection::run(&node.url(), &url, options.projection_events, duration).await?;
        let mut lag = figures.live_lag.clone();
        series.add(
            &format!(
                "account_balances catch-up over {} events (batches of 5,000)",
                figures.events
            ),
            "strata-projections",
            figures.catch_up_rate,
            Latencies::default(),
        );
        notes.push(format!(
            "projection live lag (append sent → read model and checkpoint committed), one append at a time: {}",
            lag.summary()
        ));
    }
    if options.runs("aggregates") {
        let pges = recreate_database(&admin, "strata_bench_aggregates_pges").await?;
        let mut conn = PgConnection::connect(&pges).await?;
        sqlx::raw_sql(postgres_es::SCHEMA)
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        for (snapshots, label) in [
            (
                0,
                "commands through aggregates, 16 tasks, 100 distinct aggregates each, no snapshots",
            ),
            (
                10,
                "commands through aggregates, 16 tasks, 100 distinct aggregates each, snapshot every 10 events",
            ),
        ] {
            for round in 1..=options.rounds {
                eprintln!("{label}, round {round}/{} ...", options.rounds);
                let result = crate::aggregates::strata(&node.url(), snapshots, 0, duration).await?;
                series.add(
                    label,
                    "strata-sdk Repository (HTTP), load every command",
                    result.events_per_sec(),
                    result.latencies,
                );
                if snapshots == 0 {
                    let result =
                        crate::aggregates::strata(&node.url(), 0, 10_000, duration).await?;
                    series.add(
                        label,
                        "strata-sdk Repository (HTTP), aggregate cache",
                        result.events_per_sec(),
                        result.latencies,
                    );
                }
                let result = crate::aggregates::cqrs_es(&pges, snapshots, duration).await?;
                series.add_baseline_timed(
                    label,
                    "cqrs-es CqrsFramework + postgres-es (direct, no HTTP)",
                    result.events_per_sec(),
                    result.latencies,
                );
            }
        }
    }
    let rows = series.rows();
    drop(node);
    report::print(&rows, &notes, started.elapsed());
    Ok(())
}

/// The node under test: started by the benchmark, or already running.
/// A node on `bench_url` started with `--auth keys`, and a client sending
/// a key granted `read` and `write` over every stream.
async fn keyed_node(bench_url: &str) -> anyhow::Result<(Node, reqwest::Client)> {
    use strata_core::auth::{CreateKey, Grant, Scope};
    let node = Node::start(bench_url, &["--pool-size", "16", "--auth", "keys"])?;
    let pool = sqlx::PgPool::connect(bench_url).await?;
    let created = strata_server::auth::keys::KeyStore::new(pool.clone())
        .create(
            &CreateKey {
                name: format!("bench-{}", std::process::id()),
                grants: vec![Grant::new(Scope::Read, ""), Grant::new(Scope::Write, "")],
                expires_at: None,
            },
            &strata_pg::audit::Actor::new("strata-bench", "local"),
        )
        .await?;
    pool.close().await;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {}", created.token).parse()?,
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .default_headers(headers)
        .build()?;
    Ok((node, client))
}

enum NodeHandle {
    Spawned(Node),
    External(String),
}

impl NodeHandle {
    fn pid(&self) -> Option<u32> {
        match self {
            NodeHandle::Spawned(node) => Some(node.pid()),
            NodeHandle::External(_) => None,
        }
    }

    fn url(&self) -> String {
        match self {
            NodeHandle::Spawned(node) => node.url(),
            NodeHandle::External(url) => url.clone(),
        }
    }
}

async fn machine_notes(admin: &str) -> anyhow::Result<Vec<String>> {
    let mut conn = PgConnection::connect(admin).await?;
    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&mut conn)
        .await?;
    let fsync: String = sqlx::query_scalar("SHOW fsync")
        .fetch_one(&mut conn)
        .await?;
    let sync: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(&mut conn)
        .await?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    Ok(vec![
        format!(
            "machine: {cores} cores; PostgreSQL {version}, fsync={fsync}, synchronous_commit={sync}"
        ),
        "every system runs against the same PostgreSQL, one after the other, with the same payload"
            .into(),
    ])
}
