//! Projection workers: exactly-once read models, failover, rebuild, pause,
//! failure.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use strata_tests::{Api, TestDatabase, WorkerProcess, wait_until};

use crate::setup;

async fn projection(api: &Api) -> Value {
    let all = api.get("/projections").await;
    assert_eq!(all.status, StatusCode::OK);
    all.body
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "account_balances")
        .cloned()
        .unwrap_or(Value::Null)
}

/// The read model, as `account → (balance, events)`.
async fn read_model(db: &TestDatabase) -> BTreeMap<String, (i64, i64)> {
    let pool = db.pool().await;
    let rows: Vec<(String, i64, i64)> =
        sqlx::query_as("SELECT account, balance, events FROM account_balances")
            .fetch_all(&pool)
            .await
            .unwrap();
    rows.into_iter().map(|(a, b, e)| (a, (b, e))).collect()
}

/// The fold of every account event of `$all`.
async fn fold(api: &Api) -> BTreeMap<String, (i64, i64)> {
    let mut model: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for event in api.read_all_events().await {
        let stream = event["stream"].as_str().unwrap();
        if !stream.starts_with("account-") && stream != "account" {
            continue;
        }
        let amount = event["data"]["amount"].as_i64().unwrap();
        let delta = match event["type"].as_str().unwrap() {
            "Deposited" => amount,
            "Withdrawn" => -amount,
            _ => continue,
        };
        let entry = model.entry(stream.to_owned()).or_default();
        entry.0 += delta;
        entry.1 += 1;
    }
    model
}

fn money(i: usize) -> Value {
    let kind = if i.is_multiple_of(3) {
        "Withdrawn"
    } else {
        "Deposited"
    };
    json!({"type": kind, "data": {"amount": (i % 17) as i64 + 1}})
}

async fn caught_up(api: &Api) -> bool {
    let p = projection(api).await;
    p["lag"] == 0 && p["state"] == "running"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_and_a_sigkill_leave_exactly_the_fold() {
    let (db, node) = setup().await;
    let api = node.api();
    let flags = ["--lease-ttl-ms", "1000", "--batch-size", "150"];
    let mut workers = [
        WorkerProcess::start(db.url(), "w0", &flags),
        WorkerProcess::start(db.url(), "w1", &flags),
    ];
    wait_until(Duration::from_secs(20), "a worker to lead", || async {
        projection(&api).await["leader"].is_string()
    })
    .await;
    // 20,000 events from 4 writers, plus noise the projection must skip.
    let mut writers = Vec::new();
    for w in 0..4usize {
        let api = api.clone();
        writers.push(tokio::spawn(async move {
            for b in 0..50usize {
                let events: Vec<Value> = (0..100).map(|i| money(w * 5000 + b * 100 + i)).collect();
                let r = api
                    .append(
                        &format!("account-{}", (w * 50 + b) % 40),
                        json!("any"),
                        json!(events),
                    )
                    .await;
                assert_eq!(r.status, StatusCode::CREATED);
                if b % 10 == 0 {
                    api.append(
                        "noise-1",
                        json!("any"),
                        json!([{"type": "Deposited", "data": {"amount": "x"}}]),
                    )
                    .await;
                }
            }
        }));
    }
    // Kill the active worker while it is busy.
    wait_until(
        Duration::from_secs(30),
        "the projection to be under way",
        || async { projection(&api).await["checkpoint"].as_u64().unwrap_or(0) > 3000 },
    )
    .await;
    let leader = projection(&api).await["leader"]
        .as_str()
        .unwrap()
        .to_owned();
    let victim = workers.iter().position(|w| w.id == leader).unwrap();
    workers[victim].kill();
    for w in writers {
        w.await.unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !caught_up(&api).await {
        assert!(
            std::time::Instant::now() < deadline,
            "the other worker did not catch up: {}\nits log:\n{}",
            projection(&api).await,
            workers[1 - victim].logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let survivor = &workers[1 - victim].id;
    assert_eq!(
        projection(&api).await["leader"].as_str(),
        Some(survivor.as_str())
    );
    let expected = fold(&api).await;
    assert_eq!(expected.values().map(|v| v.1).sum::<i64>(), 20_000);
    assert_eq!(
        read_model(&db).await,
        expected,
        "the read model is exactly the fold of the events"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_gives_the_same_read_model_and_pause_holds_progress() {
    let (db, node) = setup().await;
    let api = node.api();
    let _worker = WorkerProcess::start(
        db.url(),
        "solo",
        &["--lease-ttl-ms", "1000", "--batch-size", "100"],
    );
    for b in 0..5usize {
        let events: Vec<Value> = (0..100).map(|i| money(b * 100 + i)).collect();
        api.append(&format!("account-{b}"), json!("any"), json!(events))
            .await;
    }
    wait_until(
        Duration::from_secs(30),
        "the projection to catch up",
        || async { caught_up(&api).await },
    )
    .await;
    let before = read_model(&db).await;
    assert_eq!(before, fold(&api).await);

    let r = api
        .post("/projections/account_balances/rebuild", &json!({}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    // The request is taken up by the worker asynchronously: until it is
    // (the flag cleared, in the transaction that resets the checkpoint), the
    // old read model would pass for a finished rebuild.
    wait_until(Duration::from_secs(30), "the rebuild to finish", || async {
        let pool = db.pool().await;
        let requested: bool = sqlx::query_scalar(
            "SELECT rebuild_requested FROM projections WHERE name = 'account_balances'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        let p = projection(&api).await;
        !requested && p["state"] == "running" && p["lag"] == 0 && read_model(&db).await == before
    })
    .await;

    let r = api
        .post("/projections/account_balances/pause", &json!({}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    wait_until(Duration::from_secs(10), "the pause", || async {
        projection(&api).await["state"] == "paused"
    })
    .await;
    let paused_at = projection(&api).await["checkpoint"].clone();
    api.append("account-9", json!("any"), json!([money(1), money(2)]))
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        projection(&api).await["checkpoint"],
        paused_at,
        "a paused projection does not move"
    );
    assert_eq!(read_model(&db).await, before);
    let r = api
        .post("/projections/account_balances/resume", &json!({}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    wait_until(Duration::from_secs(10), "the resume", || async {
        caught_up(&api).await
    })
    .await;
    assert_eq!(read_model(&db).await, fold(&api).await);
    assert_eq!(
        api.post("/projections/nope/pause", &json!({})).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_projection_stops_as_failed_with_its_error_visible() {
    let (db, node) = setup().await;
    let api = node.api();
    let _worker = WorkerProcess::start(
        db.url(),
        "fragile",
        &["--lease-ttl-ms", "1000", "--max-failures", "2"],
    );
    api.append("account-1", json!("any"), json!([money(1), money(2)]))
        .await;
    wait_until(Duration::from_secs(20), "the first events", || async {
        caught_up(&api).await
    })
    .await;
    let good = projection(&api).await["checkpoint"].as_u64().unwrap();
    api.append(
        "account-1",
        json!("any"),
        json!([{"type": "Deposited", "data": {"amount": "ten"}}]),
    )
    .await;
    wait_until(
        Duration::from_secs(20),
        "the projection to fail",
        || async { projection(&api).await["state"] == "failed" },
    )
    .await;
    let p = projection(&api).await;
    assert!(p["last_error"].as_str().unwrap().contains("amount"), "{p}");
    assert_eq!(
        p["checkpoint"].as_u64().unwrap(),
        good,
        "a failed batch does not advance"
    );
    assert_eq!(read_model(&db).await.get("account-1").map(|v| v.1), Some(2));
    // Resuming without a fix fails again.
    api.post("/projections/account_balances/resume", &json!({}))
        .await;
    wait_until(
        Duration::from_secs(20),
        "the projection to fail again",
        || async { projection(&api).await["state"] == "failed" },
    )
    .await;
}

/// The projection's lease row, straight from the database: (owner, epoch,
/// whether it is unexpired).
async fn lease(pool: &sqlx::PgPool) -> (Option<String>, i64, bool) {
    sqlx::query_as(
        "SELECT owner, epoch, expires_at > clock_timestamp() FROM leases \
         WHERE resource = 'projection:account_balances'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Issue 10, item 10: a taker that waited for the lease row (locked by a
/// holder stalled in its transaction) wrote an `expires_at` computed before
/// the wait, so the lease it took was already expired and the next standby
/// took it again at once (epoch +2, leadership flipping).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_taken_after_a_wait_for_its_row_is_taken_once() {
    let (db, node) = setup().await;
    let api = node.api();
    let flags = ["--lease-ttl-ms", "1000"];
    let mut first = WorkerProcess::start(db.url(), "first", &flags);
    wait_until(
        Duration::from_secs(20),
        "the first worker to lead",
        || async { projection(&api).await["leader"] == "first" },
    )
    .await;
    let _standbys = [
        WorkerProcess::start(db.url(), "second", &flags),
        WorkerProcess::start(db.url(), "third", &flags),
    ];
    let pool = db.pool().await;
    let (_, epoch, _) = lease(&pool).await;
    // A stalled holder, as the fence holds the row: locked in share mode
    // while the leader dies and its lease runs out.
    let mut stalled = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM leases WHERE resource = 'projection:account_balances' FOR SHARE")
        .execute(&mut *stalled)
        .await
        .unwrap();
    first.kill();
    wait_until(
        Duration::from_secs(20),
        "the lease to have been expired for a TTL",
        || async {
            sqlx::query_scalar::<_, bool>(
                "SELECT expires_at < clock_timestamp() - interval '1 s' FROM leases \
                 WHERE resource = 'projection:account_balances'",
            )
            .fetch_one(&pool)
            .await
            .unwrap()
        },
    )
    .await;
    stalled.commit().await.unwrap();
    wait_until(Duration::from_secs(20), "a standby to lead", || async {
        matches!(lease(&pool).await, (Some(owner), _, true) if owner != "first")
    })
    .await;
    let (owner, taken, _) = lease(&pool).await;
    assert_eq!(
        taken,
        epoch + 1,
        "the lease changed hands more than once after the wait (now {owner:?})"
    );
}

/// Issue 10, item 9: the active worker paused inside its batch transaction
/// (SIGSTOP, or cut off from the network) kept the lease row locked, and the
/// standby's takeover waited behind the lock for as long as the pause lasted.
/// Now PostgreSQL ends a fenced transaction left idle, and the standby takes
/// over within the TTL while the first worker is still stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_paused_inside_its_transaction_is_replaced_within_the_ttl() {
    let (db, node) = setup().await;
    let api = node.api();
    for b in 0..20usize {
        let events: Vec<Value> = (0..500).map(|i| money(b * 500 + i)).collect();
        let r = api
            .append(&format!("account-{}", b % 7), json!("any"), json!(events))
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let flags = ["--lease-ttl-ms", "2000", "--batch-size", "20"];
    let workers = [
        WorkerProcess::start(db.url(), "w0", &flags),
        WorkerProcess::start(db.url(), "w1", &flags),
    ];
    wait_until(Duration::from_secs(20), "a worker to lead", || async {
        projection(&api).await["leader"].is_string()
    })
    .await;
    let pool = db.pool().await;
    // Stop the active worker until it is caught inside a batch transaction
    // (it spends part of its time between them); rebuild to keep it busy.
    let mut victim = None;
    for _ in 0..100 {
        let p = projection(&api).await;
        let Some(leader) = p["leader"].as_str() else {
            continue;
        };
        let index = workers.iter().position(|w| w.id == leader).unwrap();
        workers[index].signal(libc::SIGSTOP);
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_millis(500) {
            if db.stalled_lease_holder(&pool).await {
                victim = Some(index);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if victim.is_some() {
            break;
        }
        workers[index].signal(libc::SIGCONT);
        if p["lag"] == 0 {
            api.post("/projections/account_balances/rebuild", &json!({}))
                .await;
        }
    }
    let victim = victim.expect("the active worker was never caught inside its transaction");
    let other = workers[1 - victim].id.clone();
    wait_until(
        Duration::from_secs(20),
        "the standby to lead while the active worker is stopped",
        || async { projection(&api).await["leader"] == other.as_str() },
    )
    .await;
    let epoch = projection(&api).await["epoch"].clone();
    wait_until(
        Duration::from_secs(60),
        "the standby to catch up",
        || async { caught_up(&api).await },
    )
    .await;
    workers[victim].signal(libc::SIGCONT);
    wait_until(
        Duration::from_secs(20),
        "the paused worker to stand by",
        || async { workers[victim].logs().contains("standing by") },
    )
    .await;
    let p = projection(&api).await;
    assert_eq!(p["leader"], other.as_str(), "{p}");
    assert_eq!(p["epoch"], epoch, "leadership moved again: {p}");
    assert_eq!(read_model(&db).await, fold(&api).await);
}

/// Issue 10 (smaller items): a worker given several flags out of range
/// answered with one message listing every rule, naming none of the flags
/// at fault. Now each flag at fault is named with its value, and only those.
#[tokio::test]
async fn a_worker_names_each_flag_out_of_range() {
    let run = |args: &'static [&'static str]| async move {
        let binary = strata_tests::node_binary().with_file_name("account-balances");
        let output = tokio::process::Command::new(binary)
            .args(["--database-url", "postgres://nowhere.invalid/x"])
            .args(args)
            .output()
            .await
            .unwrap();
        assert_eq!(output.status.code(), Some(2));
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let one = run(&["--batch-size", "0"]).await;
    assert!(one.contains("--batch-size 0"), "{one}");
    assert!(
        !one.contains("--lease-ttl-ms") && !one.contains("--max-failures"),
        "{one}"
    );
    let all = run(&[
        "--lease-ttl-ms",
        "1",
        "--batch-size",
        "0",
        "--max-failures",
        "0",
    ])
    .await;
    for flag in ["--lease-ttl-ms 1", "--batch-size 0", "--max-failures 0"] {
        assert!(all.contains(flag), "{flag} not named: {all}");
    }
}

/// Issue 10 (smaller items): once the active worker's lease lapsed,
/// `/projections` showed `epoch: 0`, as if no worker had ever led. Now it
/// keeps the last epoch, with `leader: null` saying the lease lapsed.
#[tokio::test]
async fn a_lapsed_lease_shows_its_last_epoch() {
    let (db, node) = setup().await;
    let api = node.api();
    let mut worker = WorkerProcess::start(db.url(), "gone", &["--lease-ttl-ms", "500"]);
    wait_until(Duration::from_secs(20), "the worker to lead", || async {
        projection(&api).await["leader"] == "gone"
    })
    .await;
    let epoch = projection(&api).await["epoch"].as_u64().unwrap();
    assert!(epoch >= 1);
    worker.kill();
    wait_until(Duration::from_secs(20), "the lease to lapse", || async {
        projection(&api).await["leader"].is_null()
    })
    .await;
    assert_eq!(projection(&api).await["epoch"], epoch);
}
