use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::{events, setup};

#[tokio::test]
async fn append_returns_versions_and_positions_and_reads_back() {
    let (_db, node) = setup().await;
    let api = node.api();
    let correlation = Uuid::new_v4();
    let reply = api
        .append(
            "account-1",
            json!("no_stream"),
            json!([
                {"type": "Opened", "data": {"owner": "ada"}, "metadata": {"source": "web"},
                 "correlation_id": correlation},
                {"type": "Deposited", "data": 100},
            ]),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    assert_eq!(reply.body["stream"], "account-1");
    assert_eq!(reply.body["version"], 2);
    let appended = reply.body["events"].as_array().unwrap();
    assert_eq!(appended[0]["version"], 1);
    assert_eq!(appended[1]["version"], 2);
    let p0 = appended[0]["position"].as_u64().unwrap();
    assert_eq!(appended[1]["position"].as_u64().unwrap(), p0 + 1);

    let read = api.get("/streams/account-1").await;
    assert_eq!(read.status, StatusCode::OK);
    let events = read.body["events"].as_array().unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["type"], "Opened");
    assert_eq!(events[0]["data"], json!({"owner": "ada"}));
    assert_eq!(events[0]["metadata"], json!({"source": "web"}));
    assert_eq!(events[0]["correlation_id"], json!(correlation));
    assert_eq!(events[0]["id"], appended[0]["id"]);
    assert_eq!(events[1]["data"], 100);
    assert_eq!(events[1]["metadata"], json!({}));
    assert_eq!(events[1]["causation_id"], json!(null));
    let created_at = events[0]["created_at"].as_str().unwrap();
    assert_eq!(
        created_at.len(),
        "2026-11-25T12:00:00.123456Z".len(),
        "{created_at}"
    );
    assert!(created_at.ends_with('Z'));
}

#[tokio::test]
async fn every_expected_version_form_is_enforced() {
    let (_db, node) = setup().await;
    let api = node.api();
    let one = || events("E", 1);

    // A stream that does not exist.
    let r = api.append("s-1", json!("exists"), one()).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.error(), "wrong_expected_version");
    assert_eq!(r.body["expected"], "exists");
    assert_eq!(r.body["actual"], json!(null));
    let r = api.append("s-1", json!(1), one()).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.body["expected"], 1);
    assert_eq!(r.body["actual"], json!(null));
    assert_eq!(
        api.append("s-1", json!(0), one()).await.status,
        StatusCode::CREATED
    );

    // Now at version 1.
    let r = api.append("s-1", json!("no_stream"), one()).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.body["actual"], 1);
    let r = api.append("s-1", json!(0), one()).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(
        (r.body["expected"].clone(), r.body["actual"].clone()),
        (json!(0), json!(1))
    );
    assert_eq!(
        api.append("s-1", json!("exists"), one()).await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        api.append("s-1", json!(2), one()).await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        api.append("s-1", json!("any"), one()).await.status,
        StatusCode::CREATED
    );
    // Absent means any.
    let r = api.post("/streams/s-1", &json!({"events": one()})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.body["version"], 5);
    // A stale version.
    let r = api.append("s-1", json!(3), one()).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.body["actual"], 5);
    // no_stream on a fresh stream.
    assert_eq!(
        api.append("s-2", json!("no_stream"), one()).await.status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn a_rejected_batch_stores_none_of_its_events() {
    let (db, node) = setup().await;
    let api = node.api();
    assert_eq!(
        api.append("acc-1", json!("any"), events("E", 2))
            .await
            .status,
        StatusCode::CREATED
    );
    let r = api.append("acc-1", json!(7), events("Rejected", 50)).await;
    assert_eq!(r.status, StatusCode::CONFLICT);

    // A batch with one event PostgreSQL refuses (a number beyond numeric's range)
    // is refused whole.
    let bad = json!({"events": [
        {"type": "Fine", "data": 1},
        {"type": "Fine", "data": 2},
    ]});
    let mut text = bad.to_string();
    text = text.replacen("\"data\":2", "\"data\":1e999999", 1);
    let response = api
        .client()
        .post(format!("{}/streams/acc-1", api.base()))
        .header("content-type", "application/json")
        .body(text)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let read = api.get("/streams/acc-1").await;
    assert_eq!(read.body["version"], 2);
    let pool = db.pool().await;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, 2);
}

#[tokio::test]
async fn retrying_the_same_event_ids_returns_the_original_result() {
    let (_db, node) = setup().await;
    let api = node.api();
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let batch = json!([
        {"id": a, "type": "E", "data": 1},
        {"id": b, "type": "E", "data": 2},
    ]);
    let first = api
        .append("order-9", json!("no_stream"), batch.clone())
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(
        api.append("order-9", json!("any"), events("Later", 1))
            .await
            .status,
        StatusCode::CREATED
    );

    // Whatever the expected version says, the same ids in the same order answer
    // 200 with the original positions, and nothing is stored twice.
    for expected in [json!("no_stream"), json!(0), json!("any"), json!(2)] {
        let retry = api.append("order-9", expected, batch.clone()).await;
        assert_eq!(retry.status, StatusCode::OK, "{:?}", retry.body);
        assert_eq!(retry.body, first.body);
    }
    assert_eq!(api.get("/streams/order-9").await.body["version"], 3);
}

#[tokio::test]
async fn reusing_an_event_id_any_other_way_is_a_duplicate() {
    let (_db, node) = setup().await;
    let api = node.api();
    let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let batch = json!([{"id": a, "type": "E", "data": 1}, {"id": b, "type": "E", "data": 2}]);
    assert_eq!(
        api.append("x-1", json!("any"), batch).await.status,
        StatusCode::CREATED
    );

    let cases = [
        // Another stream.
        ("x-2", json!([{"id": a, "type": "E", "data": 1}])),
        // Another order.
        (
            "x-1",
            json!([{"id": b, "type": "E", "data": 2}, {"id": a, "type": "E", "data": 1}]),
        ),
        // Mixed with a new id.
        (
            "x-1",
            json!([{"id": a, "type": "E", "data": 1}, {"id": c, "type": "E", "data": 3}]),
        ),
    ];
    for (stream, batch) in cases {
        let r = api.append(stream, json!("any"), batch.clone()).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{stream} {batch}");
        assert_eq!(r.error(), "duplicate_event_id");
        assert!(
            r.body["ids"].as_array().unwrap().contains(&json!(a))
                || r.body["ids"].as_array().unwrap().contains(&json!(b))
        );
    }
    assert_eq!(api.get("/streams/x-1").await.body["version"], 2);
    assert_eq!(api.get("/streams/x-2").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn concurrent_retries_of_one_append_store_it_once() {
    let (_db, node) = setup().await;
    let api = node.api();
    let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    let batch = json!(
        ids.iter()
            .map(|id| json!({"id": id, "type": "E", "data": 1}))
            .collect::<Vec<_>>()
    );
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let api = api.clone();
        let batch = batch.clone();
        tasks.push(tokio::spawn(async move {
            api.append("dup-1", json!("any"), batch).await
        }));
    }
    let mut created = 0;
    let mut bodies = Vec::new();
    for task in tasks {
        let r = task.await.unwrap();
        match r.status {
            StatusCode::CREATED => created += 1,
            StatusCode::OK => {}
            other => panic!("unexpected {other}: {:?}", r.body),
        }
        bodies.push(r.body);
    }
    assert_eq!(created, 1);
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(api.get("/streams/dup-1").await.body["version"], 3);
}
