//! The audit trail (API.md, "Security" → "Audit"): one `$audit` event per
//! admin action, in the action's transaction; readable with `admin` only;
//! never in `$all`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use strata_tests::{Api, Sse, WorkerProcess, wait_until};

use crate::auth::{create_key, secured_node};
use crate::subscriptions::leader;
use crate::{events, setup};

const T: Duration = Duration::from_secs(30);

/// The events of `$audit`, read as `api` can.
async fn trail(api: &Api) -> Vec<Value> {
    let page = api.get("/streams/$audit?limit=1000").await;
    match page.status {
        StatusCode::OK => page.body["events"].as_array().unwrap().clone(),
        StatusCode::NOT_FOUND => Vec::new(),
        other => panic!("GET /streams/$audit: {other} {:?}", page.body),
    }
}

/// The next event of a live stream, past the `caught-up` notice and other
/// named frames.
async fn next_recorded(live: &mut Sse) -> Value {
    loop {
        let (_, name, event) = live.next_event(T).await.expect("the live stream");
        if name.is_none() {
            return event;
        }
    }
}

/// `POST path` to a subscription's leader, again while it answers `503`:
/// after an update the leader restarts the subscription in its new
/// generation and answers `503` (retry shortly) until it runs; a client
/// retries, and so does this.
async fn at_leader(api: &Api, path: &str, body: Value) -> strata_tests::Reply {
    let deadline = std::time::Instant::now() + T;
    loop {
        let reply = api.post(path, &body).await;
        if reply.status != StatusCode::SERVICE_UNAVAILABLE || std::time::Instant::now() > deadline {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn types(trail: &[Value]) -> Vec<&str> {
    trail.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

/// Every admin action appends one event naming what was done, by whom and
/// from where; refused or empty actions append none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_action_appends_one_event_and_refusals_none() {
    let (db, node) = setup().await;
    let api = node.api();
    let _worker = WorkerProcess::start(db.url(), "solo", &["--lease-ttl-ms", "1000"]);

    let created = api
        .post(
            "/admin/keys",
            &json!({"name": "ci", "grants": [{"scope": "read", "streams": "acct-"}]}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(
        api.delete("/admin/keys/ci").await.status,
        StatusCode::NO_CONTENT
    );
    // A second revocation, and one of a key that does not exist: nothing.
    assert_eq!(
        api.delete("/admin/keys/ci").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.delete("/admin/keys/nobody").await.status,
        StatusCode::NOT_FOUND
    );

    api.append("acct-1", json!("any"), events("Opened", 2))
        .await;
    // A soft delete is no admin action; a hard one is.
    api.append("acct-2", json!("any"), events("Opened", 1))
        .await;
    assert_eq!(
        api.delete("/streams/acct-2").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.delete("/streams/acct-1?hard=true").await.status,
        StatusCode::NO_CONTENT
    );

    let settings = json!({"source": {"category": "acct"}, "partition_by": "none"});
    assert_eq!(
        api.put("/subscriptions/s", &settings).await.status,
        StatusCode::CREATED
    );
    // A PUT repeating the settings changes nothing and writes nothing; one
    // that changes a setting is an update.
    assert_eq!(
        api.put("/subscriptions/s", &settings).await.status,
        StatusCode::OK
    );
    let wider = json!({"source": {"category": "acct"}, "partition_by": "none", "max_in_flight": 7});
    assert_eq!(
        api.put("/subscriptions/s", &wider).await.status,
        StatusCode::OK
    );
    let moved = json!({"source": {"category": "acct"}, "start_from": "end"});
    assert_eq!(
        api.put("/subscriptions/s", &moved).await.status,
        StatusCode::CONFLICT
    );
    leader(&api, "s").await;
    let reset = at_leader(&api, "/subscriptions/s/reset", json!({"to": "start"})).await;
    assert_eq!(reset.status, StatusCode::NO_CONTENT, "{:?}", reset.body);
    let replayed = at_leader(&api, "/subscriptions/s/parked/replay", json!({})).await;
    assert_eq!(replayed.status, StatusCode::OK, "{:?}", replayed.body);
    assert_eq!(
        api.delete("/subscriptions/s").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.delete("/subscriptions/s").await.status,
        StatusCode::NOT_FOUND
    );

    wait_until(T, "the worker to register its projection", || async {
        api.get("/projections")
            .await
            .body
            .as_array()
            .is_some_and(|p| !p.is_empty())
    })
    .await;
    for request in ["pause", "resume", "rebuild"] {
        let asked = api
            .post(
                &format!("/projections/account_balances/{request}"),
                &json!({}),
            )
            .await;
        assert_eq!(
            asked.status,
            StatusCode::ACCEPTED,
            "{request}: {:?}",
            asked.body
        );
    }
    let missing = api.post("/projections/nothing/rebuild", &json!({})).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    let trail = trail(&api).await;
    assert_eq!(
        types(&trail),
        [
            "KeyCreated",
            "KeyRevoked",
            "StreamHardDeleted",
            "SubscriptionCreated",
            "SubscriptionUpdated",
            "SubscriptionReset",
            "ParkedReplayed",
            "SubscriptionDeleted",
            "ProjectionPaused",
            "ProjectionResumed",
            "ProjectionRebuildRequested",
        ]
    );
    assert_eq!(trail[0]["data"]["name"], "ci");
    assert_eq!(trail[0]["data"]["grants"][0]["streams"], "acct-");
    assert!(
        trail[0]["data"].get("token").is_none(),
        "the token stays out of the trail"
    );
    assert_eq!(trail[2]["data"], json!({"stream": "acct-1", "version": 2}));
    assert_eq!(
        trail[3]["data"]["settings"]["source"],
        json!({"category": "acct"})
    );
    assert_eq!(trail[4]["data"]["settings"]["max_in_flight"], 7);
    assert_eq!(trail[5]["data"], json!({"name": "s", "from": 1}));
    assert_eq!(trail[6]["data"], json!({"name": "s", "replayed": 0}));
    assert_eq!(trail[10]["data"], json!({"name": "account_balances"}));
    for event in &trail {
        let metadata = &event["metadata"];
        // `--auth none`: everyone is `anonymous`.
        assert_eq!(metadata["actor"], "anonymous", "{event}");
        let remote = metadata["remote"].as_str().unwrap();
        assert!(remote.starts_with("127.0.0.1:"), "{event}");
    }
}

/// On a node with keys, the trail names the key, or the operator at the
/// command line; only `admin` reads it; it never shows in `$all`, and its
/// live subscription hears an action at once.
#[tokio::test]
async fn the_trail_names_the_key_and_only_admin_reads_it() {
    let (db, node) = secured_node().await;
    let base = node.url();
    let admin = create_key(db.url(), "root", &["admin"]).await;
    let reader = create_key(db.url(), "reader", &["read", "write"]).await;
    let narrow_admin = create_key(db.url(), "acct-admin", &["admin:acct-"]).await;
    let client = reqwest::Client::new();
    let get = |path: String, token: &str| {
        client
            .get(format!("{base}{path}"))
            .bearer_auth(token)
            .send()
    };

    for path in ["/streams/$audit", "/streams/$audit/subscribe"] {
        for token in [&reader, &narrow_admin] {
            let answer = get(path.to_owned(), token).await.unwrap();
            assert_eq!(answer.status(), StatusCode::FORBIDDEN, "GET {path}");
        }
    }
    let answer = client
        .get(format!("{base}/streams/$audit"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);

    // Follow the trail live, then act.
    let response = get("/streams/$audit/subscribe".to_owned(), &admin)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut live = Sse::from_response(response);
    let created = client
        .post(format!("{base}/admin/keys"))
        .bearer_auth(&admin)
        .json(&json!({"name": "made-by-root", "grants": [{"scope": "read", "streams": ""}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let heard = loop {
        let event = next_recorded(&mut live).await;
        if event["data"]["name"] == "made-by-root" {
            break event;
        }
    };
    assert_eq!(heard["type"], "KeyCreated");
    assert_eq!(heard["metadata"]["actor"], "root");

    let trail: Value = get("/streams/$audit".to_owned(), &admin)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let trail = trail["events"].as_array().unwrap();
    // The three keys made at the command line, then the one made by root.
    assert_eq!(types(trail), ["KeyCreated"; 4]);
    let cli = trail[0]["metadata"]["actor"].as_str().unwrap();
    assert!(cli.starts_with("strata keys create (command line"), "{cli}");
    assert_eq!(trail[0]["metadata"]["remote"], "local");

    // `$all` never holds `$` streams: not for a reader of every stream, not
    // for admin, not live.
    let append = client
        .post(format!("{base}/streams/acct-1"))
        .bearer_auth(&reader)
        .json(&json!({"expected_version": "any", "events": [{"type": "Opened", "data": {}}]}))
        .send()
        .await
        .unwrap();
    assert!(append.status().is_success());
    for token in [&reader, &admin] {
        let page: Value = get("/all".to_owned(), token)
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let streams: Vec<&str> = page["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["stream"].as_str().unwrap())
            .collect();
        assert_eq!(streams, ["acct-1"], "{page}");
        for query in ["?type=KeyCreated", "?category=$audit"] {
            let answer = get(format!("/all{query}"), token).await.unwrap();
            let status = answer.status();
            let body: Value = answer.json().await.unwrap();
            assert!(
                status == StatusCode::BAD_REQUEST
                    || status == StatusCode::FORBIDDEN
                    || body["events"].as_array().is_some_and(Vec::is_empty),
                "GET /all{query}: {status} {body}"
            );
        }
    }
    let response = get("/all/subscribe".to_owned(), &reader).await.unwrap();
    let mut all = Sse::from_response(response);
    let first = next_recorded(&mut all).await;
    assert_eq!(first["stream"], "acct-1");
    client
        .delete(format!("{base}/admin/keys/made-by-root"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    let append = client
        .post(format!("{base}/streams/acct-2"))
        .bearer_auth(&reader)
        .json(&json!({"expected_version": "any", "events": [{"type": "Opened", "data": {}}]}))
        .send()
        .await
        .unwrap();
    assert!(append.status().is_success());
    let next = next_recorded(&mut all).await;
    assert_eq!(
        next["stream"], "acct-2",
        "the revocation's entry is not in $all"
    );
}

/// A grant `acct-` covers `category=acct` (API.md), but not a stream named
/// exactly `acct`, which is in that category too: such a reader's category
/// reads leave it out, a reader whose grant covers it sees it.
#[tokio::test]
async fn a_category_read_leaves_out_the_stream_the_grant_does_not_cover() {
    let (db, node) = secured_node().await;
    let base = node.url();
    let writer = create_key(db.url(), "writer", &["write"]).await;
    let dashed = create_key(db.url(), "dashed", &["read:acct-"]).await;
    let whole = create_key(db.url(), "whole", &["read:acct"]).await;
    let client = reqwest::Client::new();
    for stream in ["acct", "acct-1", "acct", "acct-2"] {
        let append = client
            .post(format!("{base}/streams/{stream}"))
            .bearer_auth(&writer)
            .json(&json!({"expected_version": "any", "events": [{"type": "Opened", "data": {}}]}))
            .send()
            .await
            .unwrap();
        assert!(append.status().is_success());
    }
    for (token, expected) in [
        (&dashed, vec!["acct-1", "acct-2"]),
        (&whole, vec!["acct", "acct-1", "acct", "acct-2"]),
    ] {
        let page: Value = client
            .get(format!("{base}/all?category=acct&limit=2"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut streams: Vec<String> = page["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["stream"].as_str().unwrap().to_owned())
            .collect();
        // Page on: a full page's `next` must not skip what the filter let
        // through.
        let next = page["next"].as_u64().unwrap();
        let rest: Value = client
            .get(format!("{base}/all?category=acct&from={next}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        streams.extend(
            rest["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["stream"].as_str().unwrap().to_owned()),
        );
        assert_eq!(streams, expected);

        let response = client
            .get(format!("{base}/all/subscribe?category=acct"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let mut live = Sse::from_response(response);
        let mut heard = Vec::new();
        while heard.len() < expected.len() {
            let event = next_recorded(&mut live).await;
            heard.push(event["stream"].as_str().unwrap().to_owned());
        }
        assert_eq!(heard, expected);
    }
}
