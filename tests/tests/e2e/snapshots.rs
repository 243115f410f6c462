use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{events, setup};

#[tokio::test]
async fn the_newest_snapshot_wins_and_older_ones_are_ignored() {
    let (_db, node) = setup().await;
    let api = node.api();
    api.append("acct-1", json!("any"), events("E", 10)).await;
    let path = "/streams/acct-1/snapshot";
    let missing = api.get(path).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.error(), "snapshot_not_found");

    let r = api
        .put(
            path,
            &json!({"version": 5, "type": "AccountState", "data": {"balance": 5}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["version"], 5);
    let r = api
        .put(
            path,
            &json!({"version": 8, "type": "AccountState", "data": {"balance": 8}}),
        )
        .await;
    assert_eq!(r.body["version"], 8);
    // Older: ignored, 200 with the kept one.
    let r = api
        .put(
            path,
            &json!({"version": 6, "type": "AccountState", "data": {"balance": 6}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["version"], 8);
    assert_eq!(r.body["data"], json!({"balance": 8}));

    let got = api.get(path).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body["stream"], "acct-1");
    assert_eq!(got.body["type"], "AccountState");
    assert_eq!(got.body["data"], json!({"balance": 8}));
    assert!(got.body["created_at"].is_string());

    // Above the stream's version.
    let r = api
        .put(
            path,
            &json!({"version": 11, "type": "AccountState", "data": {}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["field"], "version");
    // No such stream.
    let r = api
        .put(
            "/streams/nope-1/snapshot",
            &json!({"version": 1, "type": "S", "data": {}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    assert_eq!(api.delete(path).await.status, StatusCode::NO_CONTENT);
    assert_eq!(api.get(path).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_append_with_a_snapshot_stores_both_or_neither() {
    let (_db, node) = setup().await;
    let api = node.api();
    let body = |expected: Value, ids: &[&str], balance: i64| {
        json!({
            "expected_version": expected,
            "events": ids.iter().map(|id| json!({"id": id, "type": "Deposited", "data": {}})).collect::<Vec<_>>(),
            "snapshot": {"type": "AccountState", "data": {"balance": balance}},
        })
    };
    let a = "0b6f1c1e-6b7e-4c1e-9f0a-2b1c3d4e5f61";
    let b = "0b6f1c1e-6b7e-4c1e-9f0a-2b1c3d4e5f62";
    let c = "0b6f1c1e-6b7e-4c1e-9f0a-2b1c3d4e5f63";
    let r = api
        .post("/streams/acct-2", &body(json!("no_stream"), &[a, b], 2))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["version"], 2);
    let snapshot = api.get("/streams/acct-2/snapshot").await;
    assert_eq!(snapshot.body["version"], 2);
    assert_eq!(snapshot.body["type"], "AccountState");
    assert_eq!(snapshot.body["data"], json!({"balance": 2}));

    // A wrong expected version stores neither the events nor the snapshot.
    let r = api.post("/streams/acct-2", &body(json!(5), &[c], 99)).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.error(), "wrong_expected_version");
    assert_eq!(api.get("/streams/acct-2").await.body["version"], 2);
    assert_eq!(api.get("/streams/acct-2/snapshot").await.body["version"], 2);

    // Next append moves the snapshot on; a retry of the first answers 200
    // with its original result and does not move the snapshot back.
    let r = api.post("/streams/acct-2", &body(json!(2), &[c], 3)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let r = api
        .post("/streams/acct-2", &body(json!("no_stream"), &[a, b], 2))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["version"], 2);
    let snapshot = api.get("/streams/acct-2/snapshot").await;
    assert_eq!(snapshot.body["version"], 3);
    assert_eq!(snapshot.body["data"], json!({"balance": 3}));

    // The events are in $all and readable as any others.
    let page = api.get("/streams/acct-2").await;
    assert_eq!(page.body["events"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn a_bad_snapshot_field_is_a_400_naming_it_and_stores_nothing() {
    let (_db, node) = setup().await;
    let api = node.api();
    let cases = [
        (json!({"type": "bad type", "data": {}}), "snapshot.type"),
        (json!({"type": "", "data": {}}), "snapshot.type"),
        (
            json!({"type": "S", "data": {"s": "nul \u{0}"}}),
            "snapshot.data",
        ),
    ];
    for (snapshot, field) in cases {
        let r = api
            .post(
                "/streams/acct-3",
                &json!({"events": [{"type": "E", "data": {}}], "snapshot": snapshot}),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{snapshot}: {:?}",
            r.body
        );
        assert_eq!(r.body["field"], field, "{:?}", r.body);
    }
    // Unknown or missing fields inside the snapshot: the JSON body is refused.
    for snapshot in [
        json!({"type": "S", "data": {}, "version": 3}),
        json!({"type": "S"}),
    ] {
        let r = api
            .post(
                "/streams/acct-3",
                &json!({"events": [{"type": "E", "data": {}}], "snapshot": snapshot}),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{snapshot}: {:?}",
            r.body
        );
    }
    assert_eq!(
        api.get("/streams/acct-3").await.status,
        StatusCode::NOT_FOUND
    );

    // The OpenAPI document describes the field.
    let doc = api.get("/openapi.json").await;
    let schemas = &doc.body["components"]["schemas"];
    assert!(
        schemas["AppendRequest"]["properties"]["snapshot"].is_object(),
        "{schemas}"
    );
    assert!(
        schemas["AppendSnapshot"]["properties"]["type"].is_object(),
        "{schemas}"
    );
}

#[tokio::test]
async fn live_subscribers_hear_of_an_append_with_a_snapshot() {
    let (_db, node) = setup().await;
    let api = node.api();
    let url = format!("{}/all/subscribe", api.base());
    let mut sse = strata_tests::Sse::connect(&url, None).await;
    let r = api
        .post(
            "/streams/acct-4",
            &json!({"events": [{"type": "Opened", "data": {}}],
                    "snapshot": {"type": "AccountState", "data": {"balance": 0}}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    // A safety net only: the event comes as soon as the commit is heard of.
    let limit = std::time::Duration::from_secs(20);
    loop {
        let (_, _, event) = sse.next_event(limit).await.expect("the event, live");
        if event["stream"] == "acct-4" {
            assert_eq!(event["type"], "Opened");
            assert_eq!(event["version"], 1);
            break;
        }
    }
}
