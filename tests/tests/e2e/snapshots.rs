use reqwest::StatusCode;
use serde_json::json;

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
