//! Authentication and authorization (API.md, "Security"): the route-walking
//! matrix, and what a key's grants show and hide.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use strata_tests::{NodeBuilder, StrataNode, TestDatabase};

/// Creates a key with `strata keys create` and returns its token (the last
/// line of the output).
pub async fn create_key(database_url: &str, name: &str, grants: &[&str]) -> String {
    let mut args = vec![
        "keys",
        "create",
        "--database-url",
        database_url,
        "--name",
        name,
    ];
    for grant in grants {
        args.extend(["--grant", grant]);
    }
    let output = strata_tests::run_to_end(&args, Duration::from_secs(60)).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "strata keys create failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .last()
        .expect("a token line")
        .trim()
        .to_owned()
}

/// A node that requires keys, on a database of its own.
pub async fn secured_node() -> (TestDatabase, StrataNode) {
    let db = TestDatabase::create().await;
    let node = NodeBuilder::new(db.url())
        .args(["--auth", "keys"])
        .start()
        .await;
    (db, node)
}

/// What a route needs, as API.md's table says — written out here, apart
/// from the server's own table, so that the two are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// Anyone, without credentials.
    Open,
    /// Valid credentials, of any grant.
    Credentials,
    /// `read` of any prefix (the listing is filtered).
    Listing,
    /// The scope on the stream `acct-1`.
    Stream(&'static str),
    /// `read` over every stream (an unfiltered `$all`).
    All,
    /// `subscribe` over the source of subscription `sub` (the stream `acct-1`).
    Subscription,
    /// The `metrics` scope.
    Metrics,
    /// `admin` over every stream.
    Node,
}

fn rules() -> BTreeMap<(&'static str, &'static str), Rule> {
    use Rule::*;
    BTreeMap::from([
        (("GET", "/health/live"), Open),
        (("GET", "/health/ready"), Open),
        (("GET", "/openapi.json"), Open),
        (("GET", "/metrics"), Metrics),
        (("POST", "/auth/session"), Credentials),
        (("DELETE", "/auth/session"), Open),
        (("GET", "/streams"), Listing),
        (("GET", "/streams/{stream}"), Stream("read")),
        (("POST", "/streams/{stream}"), Stream("write")),
        (("DELETE", "/streams/{stream}"), Stream("delete")),
        (("GET", "/streams/{stream}/snapshot"), Stream("read")),
        (("PUT", "/streams/{stream}/snapshot"), Stream("write")),
        (("DELETE", "/streams/{stream}/snapshot"), Stream("delete")),
        (("GET", "/streams/{stream}/subscribe"), Stream("read")),
        (("GET", "/all"), All),
        (("GET", "/all/subscribe"), All),
        (("GET", "/subscriptions"), Node),
        (("GET", "/subscriptions/{name}"), Node),
        (("PUT", "/subscriptions/{name}"), Node),
        (("DELETE", "/subscriptions/{name}"), Node),
        (("GET", "/subscriptions/{name}/consume"), Subscription),
        (("POST", "/subscriptions/{name}/ack"), Subscription),
        (("POST", "/subscriptions/{name}/nack"), Subscription),
        (("GET", "/subscriptions/{name}/parked"), Node),
        (("POST", "/subscriptions/{name}/parked/replay"), Node),
        (("POST", "/subscriptions/{name}/reset"), Node),
        (("GET", "/cluster"), Node),
        (("GET", "/projections"), Node),
        (("POST", "/projections/{name}/pause"), Node),
        (("POST", "/projections/{name}/resume"), Node),
        (("POST", "/projections/{name}/rebuild"), Node),
        (("GET", "/admin/keys"), Node),
        (("POST", "/admin/keys"), Node),
        (("DELETE", "/admin/keys/{name}"), Node),
    ])
}

/// A caller of the matrix: a name, its grants (`None`: no credentials),
/// and whether it holds a JWT instead of an API key.
struct Caller {
    name: &'static str,
    grants: Option<&'static [&'static str]>,
    jwt: bool,
}

const CALLERS: &[Caller] = &[
    Caller {
        name: "nobody",
        grants: None,
        jwt: false,
    },
    Caller {
        name: "reader",
        grants: Some(&["read"]),
        jwt: false,
    },
    Caller {
        name: "writer",
        grants: Some(&["write"]),
        jwt: false,
    },
    Caller {
        name: "deleter",
        grants: Some(&["delete"]),
        jwt: false,
    },
    Caller {
        name: "subscriber",
        grants: Some(&["subscribe"]),
        jwt: false,
    },
    Caller {
        name: "scraper",
        grants: Some(&["metrics"]),
        jwt: false,
    },
    Caller {
        name: "other-reader",
        grants: Some(&["read:other-"]),
        jwt: false,
    },
    Caller {
        name: "other-writer",
        grants: Some(&["write:other-"]),
        jwt: false,
    },
    Caller {
        name: "other-deleter",
        grants: Some(&["delete:other-"]),
        jwt: false,
    },
    Caller {
        name: "other-subscriber",
        grants: Some(&["subscribe:other-"]),
        jwt: false,
    },
    Caller {
        name: "other-admin",
        grants: Some(&["admin:other-"]),
        jwt: false,
    },
    // JWTs (signed with the test-only keys of tests/fixtures/jwt/) pass
    // the same gate: one with a grant, one for another prefix, one whose
    // token carries no grants claim at all.
    Caller {
        name: "jwt-reader",
        grants: Some(&["read"]),
        jwt: true,
    },
    Caller {
        name: "jwt-other-writer",
        grants: Some(&["write:other-"]),
        jwt: true,
    },
    Caller {
        name: "jwt-without-grants",
        grants: Some(&[]),
        jwt: true,
    },
    // Last: its deletes would take the fixtures away from the others.
    Caller {
        name: "admin",
        grants: Some(&["admin"]),
        jwt: false,
    },
];

/// Whether `grants` pass `rule` (on the fixtures: stream `acct-1`,
/// subscription `sub` reading it).
fn expected_allowed(rule: Rule, grants: &[&str]) -> bool {
    let has = |scope: &str| grants.iter().any(|g| *g == scope || *g == "admin");
    match rule {
        Rule::Open | Rule::Credentials => true,
        Rule::Listing => grants
            .iter()
            .any(|g| g.starts_with("read") || g.starts_with("admin")),
        Rule::Stream(scope) => has(scope),
        Rule::All => has("read"),
        Rule::Subscription => has("subscribe"),
        Rule::Metrics => has("metrics"),
        Rule::Node => grants.contains(&"admin"),
    }
}

/// The request to send for a documented operation.
fn concrete(template: &str) -> String {
    template.replace("{stream}", "acct-1").replace(
        "{name}",
        if template.starts_with("/admin/keys") {
            "nobody-key"
        } else {
            "sub"
        },
    )
}

fn body_for(method: &str, template: &str) -> Option<Value> {
    match (method, template) {
        ("POST", "/streams/{stream}") => Some(json!({
            "expected_version": "any",
            "events": [{"type": "Touched", "data": {}}]
        })),
        ("PUT", "/subscriptions/{name}") => Some(json!({"source": {"stream": "acct-1"}})),
        ("POST" | "PUT", _) => Some(json!({})),
        _ => None,
    }
}

/// Sends one request; reads only the status and headers (SSE answers are
/// streams).
async fn send(
    client: &reqwest::Client,
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, Option<String>) {
    let template_body = body_for(method, path);
    let mut request = client.request(
        Method::from_bytes(method.as_bytes()).unwrap(),
        format!("{base}{path}"),
    );
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = template_body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    (response.status(), challenge)
}

/// Stream `acct-1` with one event, and subscription `sub` reading it.
async fn fixtures(client: &reqwest::Client, base: &str, admin: &str) {
    let appended = client
        .post(format!("{base}/streams/acct-1"))
        .bearer_auth(admin)
        .json(&json!({"expected_version": "any", "events": [{"type": "Opened", "data": {}}]}))
        .send()
        .await
        .unwrap();
    assert!(appended.status().is_success(), "{}", appended.status());
    let created = client
        .put(format!("{base}/subscriptions/sub"))
        .bearer_auth(admin)
        .json(&json!({"source": {"stream": "acct-1"}}))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "{}", created.status());
}

/// Every operation of the OpenAPI document, with no key, a key of each
/// scope, keys for another prefix and a few JWTs, against API.md's table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_each_caller_as_the_table_says() {
    let jwks = super::jwt::JwksFile::new(&super::jwt::jwks(&["ed-1"]));
    let db = TestDatabase::create().await;
    let node = super::jwt::jwt_node_on(&db, jwks.path()).await;
    let base = node.url();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let admin = create_key(db.url(), "fixtures", &["admin"]).await;
    let document: Value = client
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rules = rules();
    let mut documented = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in item.as_object().unwrap().keys() {
            let method = method.to_uppercase();
            let rule = rules
                .iter()
                .find(|((m, p), _)| *m == method && p == path)
                .map(|(_, rule)| *rule)
                .unwrap_or_else(|| panic!("{method} {path} is documented but not in the test's table: decide who may call it"));
            documented.push((method, path.clone(), rule));
        }
    }
    assert_eq!(
        documented.len(),
        rules.len(),
        "the table names routes the document lacks"
    );

    let mut failures = Vec::new();
    for caller in CALLERS {
        fixtures(&client, &base, &admin).await;
        let token = match caller.grants {
            Some(grants) if caller.jwt => Some(super::jwt::token_granting(caller.name, grants)),
            Some(grants) => Some(create_key(db.url(), caller.name, grants).await),
            None => None,
        };
        for (method, path, rule) in &documented {
            let (status, challenge) =
                send(&client, &base, method, &concrete(path), token.as_deref()).await;
            let verdict = match caller.grants {
                None if *rule == Rule::Open => status != StatusCode::UNAUTHORIZED,
                None => {
                    status == StatusCode::UNAUTHORIZED && challenge.as_deref() == Some("Bearer")
                }
                // A session is made from an API key only, not yet from a
                // JWT (SECURITY.md, "Not yet done"): a JWT gets the 401
                // that says so.
                Some(_) if caller.jwt && *rule == Rule::Credentials => {
                    status == StatusCode::UNAUTHORIZED
                }
                Some(grants) if expected_allowed(*rule, grants) => {
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN
                }
                Some(_) => status == StatusCode::FORBIDDEN,
            };
            if !verdict {
                failures.push(format!(
                    "{} {method} {path} ({rule:?}): {status}",
                    caller.name
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "answers that break the table:\n{}",
        failures.join("\n")
    );
}

/// A `$all` read or subscription filtered by category is allowed when a
/// read grant covers every stream of the categories, and only then.
#[tokio::test]
async fn a_category_read_needs_a_grant_that_covers_the_category() {
    let (db, node) = secured_node().await;
    let base = node.url();
    let client = reqwest::Client::new();
    let acct = create_key(db.url(), "acct-reader", &["read:acct-"]).await;
    let narrow = create_key(db.url(), "acct-1-reader", &["read:acct-1"]).await;
    for path in ["/all", "/all/subscribe"] {
        for (token, query, allowed) in [
            (&acct, "?category=acct", true),
            (&acct, "?category=acct,other", false),
            (&acct, "", false),
            (&acct, "?type=Opened", false),
            (&narrow, "?category=acct", false),
        ] {
            let (status, _) = send(
                &client,
                &base,
                "GET",
                &format!("{path}{query}"),
                Some(token),
            )
            .await;
            assert_eq!(
                status != StatusCode::FORBIDDEN,
                allowed,
                "GET {path}{query}: {status}"
            );
        }
    }
}

/// A listing shows only the streams the key may read.
#[tokio::test]
async fn a_listing_shows_only_what_the_grants_cover() {
    let (db, node) = secured_node().await;
    let base = node.url();
    let client = reqwest::Client::new();
    let admin = create_key(db.url(), "admin", &["admin"]).await;
    for stream in ["acct-1", "acct-2", "other-1", "zeta-1"] {
        let answer = client
            .post(format!("{base}/streams/{stream}"))
            .bearer_auth(&admin)
            .json(&json!({"expected_version": "any", "events": [{"type": "Opened", "data": {}}]}))
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success());
    }
    let key = create_key(db.url(), "two-ranges", &["read:zeta-", "read:acct-"]).await;
    let names = |page: &Value| -> Vec<String> {
        page["streams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["stream"].as_str().unwrap().to_owned())
            .collect()
    };
    let get = |query: &'static str| {
        let client = client.clone();
        let (base, key) = (base.clone(), key.clone());
        async move {
            client
                .get(format!("{base}/streams{query}"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(names(&get("").await), ["acct-1", "acct-2", "zeta-1"]);
    let first = get("?limit=2").await;
    assert_eq!(names(&first), ["acct-1", "acct-2"]);
    assert_eq!(first["next"], "acct-2");
    assert_eq!(names(&get("?limit=2&after=acct-2").await), ["zeta-1"]);
    assert!(names(&get("?prefix=other").await).is_empty());
}

/// The SDK sends its key with every call and names each refusal with its
/// own error.
#[tokio::test]
async fn the_sdk_sends_its_key_and_types_each_refusal() {
    use strata_core::ExpectedVersion;
    use strata_sdk::{Client, Error, ReadStream, event};

    let (db, node) = secured_node().await;
    let writer = create_key(db.url(), "writer", &["write:acct-", "read:acct-"]).await;
    let client = Client::builder(node.url())
        .api_key(&writer)
        .build()
        .unwrap();
    client
        .append(
            "acct-1",
            ExpectedVersion::NoStream,
            [event("Opened", json!({}))],
        )
        .await
        .expect("a write the key covers");
    let page = client
        .read_stream("acct-1", &ReadStream::default())
        .await
        .unwrap();
    assert_eq!(page.events.len(), 1);
    match client
        .append(
            "other-1",
            ExpectedVersion::Any,
            [event("Opened", json!({}))],
        )
        .await
    {
        Err(Error::Forbidden { scope, message }) => {
            assert_eq!(scope, "write");
            assert!(message.contains("other-1"), "{message}");
        }
        other => panic!("expected Forbidden, got {other:?}"),
    }
    let anonymous = Client::new(node.url()).unwrap();
    match anonymous
        .read_stream("acct-1", &ReadStream::default())
        .await
    {
        Err(Error::Unauthorized { message }) => assert!(message.contains("Bearer"), "{message}"),
        other => panic!("expected Unauthorized, got {other:?}"),
    }
    let revoked = create_key(db.url(), "short-lived", &["read"]).await;
    let client = Client::builder(node.url())
        .api_key(&revoked)
        .build()
        .unwrap();
    client
        .read_stream("acct-1", &ReadStream::default())
        .await
        .unwrap();
    let output = strata_tests::run_to_end(
        &["keys", "revoke", "--database-url", db.url(), "short-lived"],
        Duration::from_secs(60),
    )
    .await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Every node refuses a revoked key within 2 s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        match client.read_stream("acct-1", &ReadStream::default()).await {
            Err(Error::Unauthorized { .. }) => break,
            Ok(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("the revoked key still worked after 2 s: {other:?}"),
        }
    }
}

/// Per-key rates and open streams: beyond them `429 rate_limited` with
/// `Retry-After`; another key is not touched; a closed stream frees its
/// place.
#[tokio::test]
async fn rates_and_open_streams_are_limited_per_key() {
    let db = TestDatabase::create().await;
    let node = NodeBuilder::new(db.url())
        .args(["--auth", "keys", "--rate-limit", "1", "--rate-burst", "3"])
        .args(["--max-sse-per-key", "1", "--sse-keepalive-ms", "200"])
        .start()
        .await;
    let base = node.url();
    let client = reqwest::Client::new();
    let busy = create_key(db.url(), "busy", &["read"]).await;
    let calm = create_key(db.url(), "calm", &["read"]).await;
    let get = |token: &str| {
        client
            .get(format!("{base}/streams"))
            .bearer_auth(token)
            .send()
    };
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(get(&busy).await.unwrap());
    }
    assert!(statuses[..3].iter().all(|r| r.status() == StatusCode::OK));
    let limited = statuses.pop().unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers()["retry-after"], "1");
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
    assert!(
        body["message"].as_str().unwrap().contains("--rate-limit"),
        "{body}"
    );
    assert_eq!(get(&calm).await.unwrap().status(), StatusCode::OK);

    // One live stream per key: the second is refused until the first ends.
    let stream = create_key(db.url(), "streamer", &["read"]).await;
    let open = || {
        client
            .get(format!("{base}/all/subscribe"))
            .bearer_auth(&stream)
            .send()
    };
    let first = open().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let second = open().await.unwrap();
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: Value = second.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("--max-sse-per-key"),
        "{body}"
    );
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        // Under the key's rate of one a second with bursts of three.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let again = open().await.unwrap();
        if again.status() == StatusCode::OK {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed stream's place was not freed: {}",
            again.status()
        );
    }
}
