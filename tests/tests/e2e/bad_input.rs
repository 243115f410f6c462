//! Malformed input: every case of the contract's error table answers its JSON
//! error, and random garbage never gets a 5xx or a dropped connection.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{events, setup};

/// Sends raw bytes and returns the status and the parsed JSON error body.
async fn raw(
    client: &reqwest::Client,
    method: Method,
    url: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let mut request = client.request(method.clone(), url).body(body);
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: connection failed: {e}"));
    let status = response.status();
    let bytes = response.bytes().await.expect("a complete body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            panic!(
                "{method} {url} → {status}: not JSON: {}",
                String::from_utf8_lossy(&bytes)
            )
        })
    };
    (status, body)
}

#[tokio::test]
async fn each_bad_request_gets_its_code_and_names_the_field() {
    let (_db, node) = setup().await;
    let api = node.api();
    let base = api.base().to_owned();
    let client = api.client().clone();
    let post = |path: &str, body: &str| {
        let client = client.clone();
        let url = format!("{base}{path}");
        let body = body.as_bytes().to_vec();
        async move { raw(&client, Method::POST, &url, Some("application/json"), body).await }
    };

    let cases: Vec<(&str, &str, StatusCode, &str, Option<&str>)> = vec![
        (
            "/streams/s-1",
            "{not json",
            StatusCode::BAD_REQUEST,
            "invalid_request",
            None,
        ),
        (
            "/streams/s-1",
            "",
            StatusCode::BAD_REQUEST,
            "invalid_request",
            None,
        ),
        (
            "/streams/s-1",
            r#"{"events": []}"#,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some("events"),
        ),
        (
            "/streams/s-1",
            r#"{"events": [{"data": 1}]}"#,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some("events[0]"),
        ),
        (
            "/streams/s-1",
            r#"{"events": [{"type": "a b", "data": 1}]}"#,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some("events[0].type"),
        ),
        (
            "/streams/s-1",
            r#"{"events": [{"type": "A", "data": 1, "metadata": 5}]}"#,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some("events[0].metadata"),
        ),
        (
            "/streams/s-1",
            r#"{"events": [{"type": "A", "data": 1, "id": "nope"}]}"#,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some("events[0].id"),
        ),
        (
            "/streams/s-1",
            r#"{"expected_version": -1, "events": [{"type": "A", "data": 1}]}"#,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some("expected_version"),
        ),
        (
            "/streams/s-1",
            r#"{"expected_version": "later", "events": [{"type": "A", "data": 1}]}"#,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some("expected_version"),
        ),
        (
            "/streams/s-1",
            r#"{"events": [{"type": "A", "data": 1}], "extra": true}"#,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            None,
        ),
        (
            "/streams/s-1",
            r#"{"events": [{"type": "A", "data": "\u0000"}]}"#,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some("events[0].data"),
        ),
        (
            "/streams/%24all",
            r#"{"events": [{"type": "A", "data": 1}]}"#,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some("stream"),
        ),
        (
            "/streams/a%20b",
            r#"{"events": [{"type": "A", "data": 1}]}"#,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some("stream"),
        ),
        (
            "/streams/%FF%FE",
            r#"{"events": [{"type": "A", "data": 1}]}"#,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            None,
        ),
    ];
    for (path, body, status, code, field) in cases {
        let (got, reply) = post(path, body).await;
        assert_eq!(got, status, "{path} {body}: {reply}");
        assert_eq!(reply["error"], code, "{path} {body}: {reply}");
        assert!(reply["message"].as_str().is_some_and(|m| !m.is_empty()));
        if let Some(field) = field {
            let named = reply["field"].as_str().unwrap_or_default();
            assert!(
                named.starts_with(field),
                "{path} {body}: field {named:?}, wanted {field:?}"
            );
        }
    }

    let long = "a".repeat(201);
    let (got, reply) = post(
        &format!("/streams/{long}"),
        r#"{"events": [{"type": "A", "data": 1}]}"#,
    )
    .await;
    assert_eq!(
        (got, reply["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("stream"))
    );

    // Limits: batch, event, body.
    let batch = json!({"events": events("E", 1001)}).to_string();
    let (got, reply) = post("/streams/s-1", &batch).await;
    assert_eq!(
        (got, reply["error"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"))
    );
    let big = json!({"events": [{"type": "E", "data": "x".repeat(1 << 20)}]}).to_string();
    let (got, reply) = post("/streams/s-1", &big).await;
    assert_eq!(
        (got, reply["field"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("events[0]"))
    );
    let huge = json!({"events": [{"type": "E", "data": "x".repeat(17 << 20)}]}).to_string();
    let (got, reply) = post("/streams/s-1", &huge).await;
    assert_eq!(
        (got, reply["error"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"))
    );

    // Content type, routes, methods, query parameters.
    let url = format!("{}/streams/s-1", api.base());
    let (got, reply) = raw(
        &client,
        Method::POST,
        &url,
        Some("text/plain"),
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(
        (got, reply["error"].as_str()),
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Some("unsupported_media_type")
        )
    );
    let r = api.get("/nowhere").await;
    assert_eq!((r.status, r.error()), (StatusCode::NOT_FOUND, "not_found"));
    let r = api.request(Method::PATCH, "/streams/s-1", None).await;
    assert_eq!(
        (r.status, r.error()),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
    for (path, field) in [
        ("/streams/s-1?limit=0", "limit"),
        ("/streams/s-1?limit=1001", "limit"),
        ("/streams/s-1?from=-1", "from"),
        ("/streams/s-1?direction=sideways", "direction"),
        ("/streams/s-1?form=1", "form"),
        ("/streams/s-1?limit=1&limit=2", "limit"),
        ("/all?category=a-b", "category"),
        ("/all?category=", "category"),
        ("/all?type=a%20b", "type"),
        ("/all?correlation_id=x", "correlation_id"),
        ("/all?from=1.5", "from"),
        ("/streams?prefix=%24", "prefix"),
        ("/streams/s-1?hard=yes", "hard"),
    ] {
        let r = if path.contains("hard") {
            api.delete(path).await
        } else {
            api.get(path).await
        };
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {:?}", r.body);
        assert_eq!(r.body["field"], field, "{path}: {:?}", r.body);
    }
    // Snapshots.
    for (body, field) in [
        (json!({"version": 0, "type": "S", "data": {}}), "version"),
        (json!({"version": 1, "type": "a b", "data": {}}), "type"),
        (json!({"type": "S", "data": {}}), ""),
    ] {
        let r = api.put("/streams/s-1/snapshot", &body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {:?}", r.body);
        assert!(
            r.body["field"]
                .as_str()
                .unwrap_or_default()
                .starts_with(field)
        );
    }
}

/// Random requests: methods, paths, query strings, content types and bodies.
fn arbitrary_request() -> impl Strategy<Value = (Method, String, Option<String>, Vec<u8>)> {
    let method = prop_oneof![
        Just(Method::GET),
        Just(Method::POST),
        Just(Method::PUT),
        Just(Method::DELETE),
        Just(Method::PATCH),
    ];
    let name = prop_oneof![
        "[a-z]{1,8}-[0-9]{1,3}",
        "[ -~]{0,20}",
        "\\PC{0,12}",
        Just("a".repeat(250)),
    ]
    .prop_map(|n| utf8_percent(&n));
    let path = (name, prop_oneof![Just(""), Just("/snapshot"), Just("/x/y")])
        .prop_map(|(n, tail)| format!("/streams/{n}{tail}"));
    let path = prop_oneof![
        4 => path,
        1 => Just("/all".to_owned()),
        1 => Just("/streams".to_owned()),
        1 => "[ -~]{0,16}".prop_map(|p| format!("/{}", utf8_percent(&p).replace("%2F", "/"))),
    ];
    let query = prop_oneof![
        Just(String::new()),
        "(from|limit|direction|category|type|correlation_id|hard|expected_version|prefix|after|zz)=[ -~]{0,12}"
            .prop_map(|q| format!("?{}", utf8_percent(&q).replacen("%3D", "=", 1))),
    ];
    let content_type = prop_oneof![
        Just(Some("application/json".to_owned())),
        Just(None),
        Just(Some("text/plain".to_owned())),
        "[ -~]{0,20}".prop_map(Some),
    ];
    let body = prop_oneof![
        Just(Vec::new()),
        any::<Vec<u8>>(),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        json_value().prop_map(|v| json!({"events": [{"type": "T", "data": v}]})
            .to_string()
            .into_bytes()),
        (json_value(), json_value()).prop_map(|(a, b)| json!({"expected_version": a, "events": b})
            .to_string()
            .into_bytes()),
        (json_value(), json_value(), json_value()).prop_map(|(v, t, d)| {
            json!({"version": v, "type": t, "data": d})
                .to_string()
                .into_bytes()
        }),
    ];
    (
        method,
        (path, query).prop_map(|(p, q)| p + &q),
        content_type,
        body,
    )
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,10}".prop_map(Value::from),
        Just(Value::from("\u{0}")),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z_]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Percent-encodes everything but unreserved ASCII.
fn utf8_percent(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[test]
fn random_requests_never_get_a_5xx_or_a_dropped_connection() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (db, node) = runtime.block_on(setup());
    let client = reqwest::Client::new();
    let base = node.url();
    let mut runner = TestRunner::new(Config {
        cases: 400,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(
        &arbitrary_request(),
        |(method, path, content_type, body)| {
            let url = format!("{base}{path}");
            let (status, reply) = runtime.block_on(raw(
                &client,
                method.clone(),
                &url,
                content_type.as_deref(),
                body,
            ));
            prop_assert!(status.as_u16() < 500, "{method} {path} → {status}: {reply}");
            if !status.is_success() {
                prop_assert!(
                    reply["error"].is_string(),
                    "{method} {path} → {status}: {reply}"
                );
            }
            Ok(())
        },
    );
    drop((node, db));
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[tokio::test]
async fn anything_after_the_json_body_is_refused_and_nothing_is_stored() {
    let (_db, node) = setup().await;
    let api = node.api();
    let url = format!("{}/streams/trailing-1", api.base());
    let one = r#"{"events": [{"type": "A", "data": 1}]}"#;
    for body in [
        format!("{one}xyz"),
        format!("{one}{one}"),
        format!("{one} {{}}"),
        format!("{one}\n]"),
    ] {
        let (status, error) = raw(
            api.client(),
            Method::POST,
            &url,
            Some("application/json"),
            body.clone().into_bytes(),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body:?} → {error}");
        assert_eq!(error["error"], "invalid_request", "{body:?} → {error}");
    }
    // Whitespace after the document is still fine.
    let (status, _) = raw(
        api.client(),
        Method::POST,
        &url,
        Some("application/json"),
        format!("{one} \n\t").into_bytes(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let stored = api.get("/streams/trailing-1").await;
    assert_eq!(
        stored.body["events"].as_array().map(Vec::len),
        Some(1),
        "{}",
        stored.body
    );
}

/// `depth` levels of `[` around `1`.
fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

#[tokio::test]
async fn json_nested_past_the_limit_is_refused_naming_the_field_and_never_a_500() {
    let (_db, node) = setup().await;
    let api = node.api();
    let deep = nested(20_000);
    let cases = [
        (
            format!("{}/streams/deep-1", api.base()),
            format!(r#"{{"events": [{{"type": "A", "data": {deep}}}]}}"#),
            "events[0].data",
        ),
        (
            format!("{}/streams/deep-1", api.base()),
            format!(
                r#"{{"events": [{{"type": "A", "data": {{}}}}, {{"type": "B", "data": 1, "metadata": {deep}}}]}}"#
            ),
            "events[1].metadata",
        ),
        (
            format!("{}/streams/deep-1/snapshot", api.base()),
            format!(r#"{{"version": 1, "type": "S", "data": {deep}}}"#),
            "data[0][0]",
        ),
    ];
    for (url, body, field) in cases {
        let method = if url.ends_with("/snapshot") {
            Method::PUT
        } else {
            Method::POST
        };
        let (status, error) = raw(
            api.client(),
            method,
            &url,
            Some("application/json"),
            body.into_bytes(),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}: {error}");
        assert_eq!(error["error"], "invalid_request", "{error}");
        assert_eq!(error["field"], field, "{error}");
        assert!(
            error["message"]
                .as_str()
                .unwrap_or_default()
                .contains("512"),
            "the message names the limit: {error}"
        );
    }
    // Nothing was stored; a document within the limit is.
    assert_eq!(
        api.get("/streams/deep-1").await.status,
        StatusCode::NOT_FOUND
    );
    let fine = format!(
        r#"{{"events": [{{"type": "A", "data": {}}}]}}"#,
        nested(500)
    );
    let (status, answer) = raw(
        api.client(),
        Method::POST,
        &format!("{}/streams/deep-1", api.base()),
        Some("application/json"),
        fine.into_bytes(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
}
