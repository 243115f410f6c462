use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use strata_tests::{TestDatabase, WorkerProcess, wait_until};

use crate::subscriptions::{ack, consumer, create, delivery, leader, status, two_nodes};
use crate::{events, setup};

const T: Duration = Duration::from_secs(20);

#[tokio::test]
async fn soft_delete_hides_the_stream_and_later_appends_go_on_numbering() {
    let (_db, node) = setup().await;
    let api = node.api();
    api.append("cart-1", json!("any"), events("Added", 3)).await;
    let r = api.delete("/streams/cart-1").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        api.get("/streams/cart-1").await.status,
        StatusCode::NOT_FOUND
    );
    // Its events stay in $all.
    assert_eq!(
        api.get("/all").await.body["events"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    // Not listed any more; a second soft delete finds nothing.
    assert_eq!(api.get("/streams").await.body["streams"], json!([]));
    assert_eq!(
        api.delete("/streams/cart-1").await.status,
        StatusCode::NOT_FOUND
    );

    // no_stream is accepted, and versions go on from where they were.
    let r = api
        .append("cart-1", json!("no_stream"), events("Added", 2))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["events"][0]["version"], 4);
    let read = api.get("/streams/cart-1").await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.body["version"], 5);
    let versions: Vec<u64> = read.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["version"].as_u64().unwrap())
        .collect();
    assert_eq!(
        versions,
        vec![4, 5],
        "events from before the delete stay hidden"
    );
    let back = api.get("/streams/cart-1?direction=backward").await;
    assert_eq!(back.body["events"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn hard_delete_erases_the_events_and_tombstones_the_name() {
    let (db, node) = setup().await;
    let api = node.api();
    api.append("doomed-1", json!("any"), events("E", 4)).await;
    api.append("kept-1", json!("any"), events("E", 1)).await;
    api.put(
        "/streams/doomed-1/snapshot",
        &json!({"version": 2, "type": "S", "data": {}}),
    )
    .await;
    let r = api.delete("/streams/doomed-1?hard=true").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);

    for reply in [
        api.get("/streams/doomed-1").await,
        api.append("doomed-1", json!("any"), events("E", 1)).await,
        api.append("doomed-1", json!("no_stream"), events("E", 1))
            .await,
        api.get("/streams/doomed-1/snapshot").await,
        api.delete("/streams/doomed-1").await,
        api.delete("/streams/doomed-1?hard=true").await,
    ] {
        assert_eq!(reply.status, StatusCode::GONE, "{:?}", reply.body);
        assert_eq!(reply.error(), "stream_deleted");
    }
    // Erased from storage, not only hidden.
    let pool = db.pool().await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE stream = 'doomed-1'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
    let all = api.get("/all").await;
    let streams: Vec<&str> = all.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["stream"].as_str().unwrap())
        .collect();
    assert_eq!(streams, vec!["kept-1"]);
}

#[tokio::test]
async fn delete_checks_the_expected_version() {
    let (_db, node) = setup().await;
    let api = node.api();
    api.append("d-1", json!("any"), events("E", 2)).await;
    let r = api.delete("/streams/d-1?expected_version=1").await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.body["actual"], 2);
    let r = api.delete("/streams/d-1?expected_version=no_stream").await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(
        api.delete("/streams/d-1?expected_version=2").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.delete("/streams/never-1?hard=true").await.status,
        StatusCode::NOT_FOUND
    );
    let r = api.delete("/streams/d-1?expected_version=soon").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["field"], "expected_version");
}

#[tokio::test]
async fn a_hard_delete_ends_persistent_subscription_deliveries_on_the_leader() {
    let db = TestDatabase::create().await;
    let nodes = two_nodes(&db).await;
    let api = nodes[0].api();
    // "held": only the delete's notice frees what is out (the ack timeout
    // is ten minutes); "lapsing": the ack timeout passes many times while
    // the test runs, so the events out would go out again.
    for (name, timeout) in [("held", 600_000), ("lapsing", 200)] {
        create(
            &api,
            name,
            json!({"source": {"all": true}, "partition_by": "none", "max_in_flight": 2,
                   "ack_timeout_ms": timeout, "max_retries": 1000}),
        )
        .await;
    }
    // The two subscriptions' audit entries come first.
    let o = crate::subscriptions::head(&api, "lapsing").await;
    api.append("hd-1", json!("any"), events("Secret", 5)).await;
    let mut consumers = Vec::new();
    let mut leaders = Vec::new();
    for name in ["held", "lapsing"] {
        let leader = if leader(&api, name).await == "n0" {
            0
        } else {
            1
        };
        let mut sse = consumer(&nodes[leader].url(), name).await;
        let held = [
            delivery(&mut sse, T).await.unwrap().0,
            delivery(&mut sse, T).await.unwrap().0,
        ];
        assert_eq!(held, [o + 1, o + 2], "{name}");
        consumers.push(sse);
        leaders.push(nodes[leader].api());
    }

    // Erased through the node that does not lead "held".
    let other = if leaders[0].base() == nodes[0].url() {
        1
    } else {
        0
    };
    let other = nodes[other].api();
    let r = other.delete("/streams/hd-1?hard=true").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    let kept = other
        .append("kept-1", json!("any"), events("Public", 1))
        .await
        .body["events"][0]["position"]
        .as_u64()
        .unwrap();

    for ((name, sse), leader) in ["held", "lapsing"]
        .into_iter()
        .zip(&mut consumers)
        .zip(&leaders)
    {
        // The next delivery is the later event: no redelivery of what was
        // out, none of what waited behind it. (Bounded as a whole: pings
        // restart the wait for each frame.)
        let (position, event) = tokio::time::timeout(T, delivery(sse, T))
            .await
            .unwrap_or_else(|_| panic!("{name}: no delivery within {T:?}"))
            .unwrap();
        assert_eq!(
            (position, event["stream"].as_str()),
            (kept, Some("kept-1")),
            "{name}: {event}"
        );
        // The consumer's ack of the erased events it holds is harmless.
        assert_eq!(
            ack(leader, name, &[o + 1, o + 2]).await,
            StatusCode::NO_CONTENT
        );
        assert_eq!(ack(leader, name, &[kept]).await, StatusCode::NO_CONTENT);
        wait_until(T, "everything to settle", || async {
            let s = status(&api, name).await;
            s["checkpoint"] == kept && s["in_flight"] == 0
        })
        .await;
    }
    // A consumer connecting later gets what comes next, nothing erased.
    drop(consumers);
    let mut late = consumer(leaders[0].base(), "held").await;
    api.append("kept-1", json!("any"), events("Public", 1))
        .await;
    let (position, _) = delivery(&mut late, T).await.unwrap();
    assert_eq!(position, kept + 1);
}

#[tokio::test]
async fn a_hard_delete_keeps_a_batch_in_progress_out_of_a_projection() {
    let (db, node) = setup().await;
    let api = node.api();
    let _worker = WorkerProcess::start(db.url(), "w0", &[]);
    let deposit = json!([{"type": "Deposited", "data": {"amount": 10}}]);
    api.append("account-kept", json!("any"), deposit.clone())
        .await;
    let pool = db.pool().await;
    let balances = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, String>("SELECT account FROM account_balances ORDER BY account")
            .fetch_all(&pool)
            .await
            .unwrap_or_default()
    };
    wait_until(T, "the projection to apply the first event", || {
        let pool = pool.clone();
        async move { balances(pool).await == ["account-kept"] }
    })
    .await;

    // The worker reads the next batch, and blocks writing it.
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE account_balances IN EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    api.append("account-doomed", json!("any"), deposit.clone())
        .await;
    wait_until(T, "the worker to wait for the read model", || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND application_name = 'strata-projection' AND wait_event_type = 'Lock'",
            )
            .fetch_one(&pool)
            .await
            .unwrap()
                > 0
        }
    })
    .await;

    // The stream is erased while the worker holds it in its batch.
    let r = api.delete("/streams/account-doomed?hard=true").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    blocker.rollback().await.unwrap();
    api.append("account-kept", json!("any"), deposit).await;
    wait_until(T, "the projection to catch up", || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT events FROM account_balances WHERE account = 'account-kept'",
            )
            .fetch_optional(&pool)
            .await
            .unwrap()
                == Some(2)
        }
    })
    .await;
    assert_eq!(
        balances(pool.clone()).await,
        ["account-kept"],
        "the erased stream's events reached the read model after the delete"
    );
}
