use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{events, setup};

fn versions(body: &Value) -> Vec<u64> {
    body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["version"].as_u64().unwrap())
        .collect()
}

fn positions(body: &Value) -> Vec<u64> {
    body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn stream_reads_page_forward_and_backward() {
    let (_db, node) = setup().await;
    let api = node.api();
    assert_eq!(
        api.append("s-1", json!("no_stream"), events("E", 25))
            .await
            .status,
        StatusCode::CREATED
    );

    let page = api.get("/streams/s-1?limit=10").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.body["version"], 25);
    assert_eq!(versions(&page.body), (1..=10).collect::<Vec<_>>());
    assert_eq!(page.body["next"], 11);
    let page = api.get("/streams/s-1?from=21&limit=10").await;
    assert_eq!(versions(&page.body), (21..=25).collect::<Vec<_>>());
    assert_eq!(page.body["next"], json!(null));
    let page = api.get("/streams/s-1?from=20&limit=5").await;
    assert_eq!(versions(&page.body), (20..=24).collect::<Vec<_>>());
    assert_eq!(page.body["next"], 25);

    let page = api.get("/streams/s-1?direction=backward&limit=10").await;
    assert_eq!(versions(&page.body), (16..=25).rev().collect::<Vec<_>>());
    assert_eq!(page.body["next"], 15);
    let page = api
        .get("/streams/s-1?direction=backward&from=5&limit=10")
        .await;
    assert_eq!(versions(&page.body), (1..=5).rev().collect::<Vec<_>>());
    assert_eq!(page.body["next"], json!(null));

    // Past the end: an empty page of an existing stream.
    let page = api.get("/streams/s-1?from=100").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(versions(&page.body), Vec::<u64>::new());

    let missing = api.get("/streams/nothing-here").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.error(), "stream_not_found");
}

#[tokio::test]
async fn all_reads_in_position_order_with_next_to_continue() {
    let (_db, node) = setup().await;
    let api = node.api();
    for i in 0..5 {
        api.append(&format!("a-{i}"), json!("any"), events("E", 3))
            .await;
    }
    let page = api.get("/all?limit=4").await;
    assert_eq!(positions(&page.body), vec![1, 2, 3, 4]);
    assert_eq!(page.body["next"], 5);
    let page = api.get("/all?from=13&limit=10").await;
    assert_eq!(positions(&page.body), vec![13, 14, 15]);
    assert_eq!(page.body["next"], 16, "forward reads always give next");
    let page = api.get("/all?from=16").await;
    assert_eq!(positions(&page.body), Vec::<u64>::new());
    assert_eq!(page.body["next"], 16);

    let page = api.get("/all?direction=backward&limit=4").await;
    assert_eq!(positions(&page.body), vec![15, 14, 13, 12]);
    assert_eq!(page.body["next"], 11);
    let page = api.get("/all?direction=backward&from=2&limit=4").await;
    assert_eq!(positions(&page.body), vec![2, 1]);
    assert_eq!(page.body["next"], json!(null));

    assert_eq!(api.read_all_events().await.len(), 15);
}

#[tokio::test]
async fn all_filters_by_category_type_and_correlation() {
    let (_db, node) = setup().await;
    let api = node.api();
    let corr = Uuid::new_v4();
    api.append(
        "account-1",
        json!("any"),
        json!([{"type": "Deposited", "data": 1}, {"type": "Withdrawn", "data": 1}]),
    )
    .await;
    api.append(
        "order-1",
        json!("any"),
        json!([{"type": "Placed", "data": 1, "correlation_id": corr}]),
    )
    .await;
    api.append(
        "account-2",
        json!("any"),
        json!([{"type": "Deposited", "data": 2, "correlation_id": corr}]),
    )
    .await;
    api.append(
        "account",
        json!("any"),
        json!([{"type": "Deposited", "data": 3}]),
    )
    .await;
    api.append(
        "user-1",
        json!("any"),
        json!([{"type": "Registered", "data": 3}]),
    )
    .await;

    let streams = |body: &Value| -> Vec<String> {
        body["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["stream"].as_str().unwrap().to_owned())
            .collect()
    };
    let page = api.get("/all?category=account").await;
    assert_eq!(
        streams(&page.body),
        ["account-1", "account-1", "account-2", "account"]
    );
    assert_eq!(
        page.body["next"], 7,
        "a filtered page that reached the head continues after it"
    );
    let page = api.get("/all?category=order,user").await;
    assert_eq!(streams(&page.body), ["order-1", "user-1"]);
    let page = api.get("/all?type=Deposited").await;
    assert_eq!(positions(&page.body), vec![1, 4, 5]);
    let page = api.get("/all?type=Deposited,Placed&limit=2").await;
    assert_eq!(positions(&page.body), vec![1, 3]);
    assert_eq!(page.body["next"], 4);
    let page = api.get("/all?category=account&type=Withdrawn").await;
    assert_eq!(positions(&page.body), vec![2]);
    let page = api.get(&format!("/all?correlation_id={corr}")).await;
    assert_eq!(positions(&page.body), vec![3, 4]);
    let page = api
        .get(&format!("/all?correlation_id={corr}&category=account"))
        .await;
    assert_eq!(positions(&page.body), vec![4]);
    let page = api
        .get("/all?category=account,user&direction=backward&limit=2")
        .await;
    assert_eq!(positions(&page.body), vec![6, 5]);
    assert_eq!(page.body["next"], 4);
    let page = api.get("/all?category=nothing").await;
    assert_eq!(positions(&page.body), Vec::<u64>::new());
    assert_eq!(page.body["next"], 7);
}

#[tokio::test]
async fn list_streams_pages_by_name_with_a_prefix() {
    let (_db, node) = setup().await;
    let api = node.api();
    for name in ["b-1", "a-2", "a-1", "a_x", "c", "a-3"] {
        api.append(name, json!("any"), events("E", 1)).await;
    }
    api.delete("/streams/a-3").await;
    let names = |body: &Value| -> Vec<String> {
        body["streams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["stream"].as_str().unwrap().to_owned())
            .collect()
    };
    let page = api.get("/streams").await;
    assert_eq!(names(&page.body), ["a-1", "a-2", "a_x", "b-1", "c"]);
    assert_eq!(page.body["next"], json!(null));
    assert_eq!(page.body["streams"][0]["version"], 1);
    let page = api.get("/streams?prefix=a-").await;
    assert_eq!(names(&page.body), ["a-1", "a-2"]);
    let page = api.get("/streams?limit=2").await;
    assert_eq!(names(&page.body), ["a-1", "a-2"]);
    assert_eq!(page.body["next"], "a-2");
    let page = api.get("/streams?limit=2&after=a-2").await;
    assert_eq!(names(&page.body), ["a_x", "b-1"]);
    // `_` is a literal, not a wildcard.
    let page = api.get("/streams?prefix=a_").await;
    assert_eq!(names(&page.body), ["a_x"]);
}
