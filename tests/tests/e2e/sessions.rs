//! Browser sessions (API.md, "Security → Sessions"): `POST /auth/session`
//! trades a bearer key for an HttpOnly cookie that reads, SSE and every
//! other call accept instead of `Authorization`; CORS gives credentials to
//! named origins only.

use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use reqwest::header::{HeaderMap, SET_COOKIE};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use strata_tests::{NodeBuilder, StrataNode, TestDatabase, wait_until};

use crate::auth::{create_key, secured_node};

/// The contract's bound on how late every node sees a revocation, and
/// (Strata's choice) an ended session.
const BOUND: Duration = Duration::from_secs(2);

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A session cookie as the server set it: the value and the attributes.
#[derive(Debug)]
struct SetCookie {
    value: String,
    attributes: Vec<String>,
}

impl SetCookie {
    fn of(headers: &HeaderMap) -> SetCookie {
        let cookies: Vec<_> = headers.get_all(SET_COOKIE).iter().collect();
        assert_eq!(cookies.len(), 1, "one Set-Cookie: {cookies:?}");
        let text = cookies[0].to_str().unwrap();
        let mut parts = text.split(';').map(str::trim);
        let (name, value) = parts.next().unwrap().split_once('=').expect("name=value");
        assert_eq!(name, "strata_session", "{text}");
        SetCookie {
            value: value.to_owned(),
            attributes: parts.map(str::to_owned).collect(),
        }
    }

    fn has(&self, attribute: &str) -> bool {
        self.attributes
            .iter()
            .any(|a| a.eq_ignore_ascii_case(attribute))
    }

    fn max_age(&self) -> u64 {
        self.attributes
            .iter()
            .find_map(|a| a.strip_prefix("Max-Age="))
            .expect("a Max-Age")
            .parse()
            .expect("seconds")
    }

    /// The `Cookie` header a browser would send back.
    fn header(&self) -> String {
        format!("theme=dark; strata_session={}", self.value)
    }
}

/// `POST /auth/session` with `token`: the cookie it set.
async fn start_session(client: &Client, base: &str, token: &str) -> SetCookie {
    let answer = client
        .post(format!("{base}/auth/session"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::NO_CONTENT);
    SetCookie::of(answer.headers())
}

/// `GET path` with only `cookie` (no `Authorization`): status and JSON body.
async fn get_with(client: &Client, base: &str, path: &str, cookie: &str) -> (StatusCode, Value) {
    let answer = client
        .get(format!("{base}{path}"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    let status = answer.status();
    let challenge = answer.headers().get("www-authenticate").cloned();
    let body = answer.json().await.unwrap_or(Value::Null);
    if status == StatusCode::UNAUTHORIZED {
        assert_eq!(
            challenge.as_ref().map(|v| v.to_str().unwrap()),
            Some("Bearer")
        );
        assert_eq!(body["error"], "unauthorized", "{body}");
    }
    (status, body)
}

async fn append(client: &Client, base: &str, token: &str, stream: &str, kind: &str) {
    let answer = client
        .post(format!("{base}/streams/{stream}"))
        .bearer_auth(token)
        .json(&json!({"expected_version": "any", "events": [{"type": kind, "data": {}}]}))
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "{}", answer.status());
}

/// A key made through `POST /admin/keys` (for an expiry).
async fn create_key_over_http(client: &Client, base: &str, admin: &str, body: Value) -> String {
    let answer = client
        .post(format!("{base}/admin/keys"))
        .bearer_auth(admin)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::CREATED);
    let created: Value = answer.json().await.unwrap();
    created["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_cookie_is_http_only_strict_for_the_whole_site_and_outlives_neither_12_hours_nor_its_key()
 {
    let (db, node) = secured_node().await;
    let (client, base) = (client(), node.url());
    let admin = create_key(db.url(), "admin", &["admin"]).await;

    let cookie = start_session(&client, &base, &admin).await;
    assert!(cookie.has("HttpOnly"), "{cookie:?}");
    assert!(cookie.has("SameSite=Strict"), "{cookie:?}");
    assert!(cookie.has("Path=/"), "{cookie:?}");
    // Plain HTTP: a `Secure` cookie would never come back.
    assert!(!cookie.has("Secure"), "{cookie:?}");
    assert!(cookie.max_age() <= 43_200, "{cookie:?}");
    assert!(
        cookie.max_age() >= 43_190,
        "a key without expiry: 12 h, {cookie:?}"
    );
    assert_eq!(cookie.value.len(), 43, "{cookie:?}");

    let expires_at = Utc::now() + TimeDelta::minutes(30);
    let short = create_key_over_http(
        &client,
        &base,
        &admin,
        json!({"name": "short", "grants": [{"scope": "read", "streams": ""}],
               "expires_at": expires_at.to_rfc3339()}),
    )
    .await;
    let cookie = start_session(&client, &base, &short).await;
    assert!(
        cookie.max_age() <= 1800,
        "no later than the key: {cookie:?}"
    );
    assert!(cookie.max_age() >= 1790, "{cookie:?}");

    // Two sessions of one key are two cookies.
    let again = start_session(&client, &base, &short).await;
    assert_ne!(again.value, cookie.value);
}

#[tokio::test]
async fn the_database_holds_the_digest_of_the_secret_never_the_secret() {
    let (db, node) = secured_node().await;
    let (client, base) = (client(), node.url());
    let admin = create_key(db.url(), "admin", &["admin"]).await;
    let cookie = start_session(&client, &base, &admin).await;
    let pool = db.pool().await;
    let (by_digest, by_text): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE secret_hash = \
                    sha256(decode(translate($1, '-_', '+/') || '=', 'base64'))), \
                count(*) FILTER (WHERE position(convert_to($1, 'UTF8') IN secret_hash) > 0) \
         FROM sessions WHERE key_name = 'admin'",
    )
    .bind(&cookie.value)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((by_digest, by_text), (1, 0));
}

#[tokio::test]
async fn the_cookie_alone_reads_and_follows_a_live_subscription() {
    let (db, node) = secured_node().await;
    let (client, base) = (client(), node.url());
    let writer = create_key(db.url(), "writer", &["write:acct-"]).await;
    let reader = create_key(db.url(), "reader", &["read:acct-"]).await;
    append(&client, &base, &writer, "acct-1", "Opened").await;
    let cookie = start_session(&client, &base, &reader).await;

    let (status, page) = get_with(&client, &base, "/streams/acct-1", &cookie.header()).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["events"][0]["type"], "Opened", "{page}");

    // What an EventSource does: a GET with the browser's cookies, no header
    // of its own.
    let mut live = client
        .get(format!("{base}/streams/acct-1/subscribe"))
        .header("accept", "text/event-stream")
        .header("cookie", cookie.header())
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), StatusCode::OK);
    assert!(
        live.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut appended = false;
    while !seen.contains("\"Deposited\"") {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, live.chunk())
            .await
            .unwrap_or_else(|_| panic!("no live event within 10 s; got {seen:?}"))
            .unwrap()
            .expect("the stream stays open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
        if !appended && seen.contains("\"Opened\"") {
            append(&client, &base, &writer, "acct-1", "Deposited").await;
            appended = true;
        }
    }
}

#[tokio::test]
async fn a_session_holds_its_keys_grants_and_no_more() {
    let (db, node) = secured_node().await;
    let (client, base) = (client(), node.url());
    let reader = create_key(db.url(), "reader", &["read:acct-"]).await;
    let cookie = start_session(&client, &base, &reader).await.header();
    for path in ["/streams/other-1", "/all", "/admin/keys", "/metrics"] {
        let (status, body) = get_with(&client, &base, path, &cookie).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert_eq!(body["error"], "forbidden", "{path}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains("\"reader\""),
            "{body}"
        );
    }
    let written = client
        .post(format!("{base}/streams/acct-1"))
        .header("cookie", &cookie)
        .json(&json!({"expected_version": "any", "events": [{"type": "X", "data": {}}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(written.status(), StatusCode::FORBIDDEN);
    let (status, _) = get_with(&client, &base, "/all?category=acct", &cookie).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn delete_ends_the_session_and_expires_the_cookie() {
    let (db, node) = secured_node().await;
    let (client, base) = (client(), node.url());
    let reader = create_key(db.url(), "reader", &["read"]).await;
    let cookie = start_session(&client, &base, &reader).await;
    let (status, _) = get_with(&client, &base, "/streams", &cookie.header()).await;
    assert_eq!(status, StatusCode::OK);

    let ended = client
        .delete(format!("{base}/auth/session"))
        .header("cookie", cookie.header())
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), StatusCode::NO_CONTENT);
    let expired = SetCookie::of(ended.headers());
    assert_eq!(expired.value, "");
    assert_eq!(expired.max_age(), 0);
    assert!(expired.has("HttpOnly") && expired.has("SameSite=Strict") && expired.has("Path=/"));
    // At once on the node that ended it.
    let (status, _) = get_with(&client, &base, "/streams", &cookie.header()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Without a cookie, or again: nothing to end, still 204.
    for cookie in [None, Some(cookie.header())] {
        let mut request = client.delete(format!("{base}/auth/session"));
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        assert_eq!(
            request.send().await.unwrap().status(),
            StatusCode::NO_CONTENT
        );
    }
    // The key itself goes on.
    let listed = client
        .get(format!("{base}/streams"))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), StatusCode::OK);
}

/// Two nodes on one database, requiring keys.
async fn two_nodes() -> (TestDatabase, StrataNode, StrataNode) {
    let db = TestDatabase::create().await;
    let first = NodeBuilder::new(db.url())
        .args(["--auth", "keys"])
        .start()
        .await;
    let second = NodeBuilder::new(db.url())
        .args(["--auth", "keys"])
        .start()
        .await;
    (db, first, second)
}

#[tokio::test]
async fn revoking_the_key_ends_its_session_on_another_node_within_two_seconds() {
    let (db, first, second) = two_nodes().await;
    let client = client();
    let admin = create_key(db.url(), "admin", &["admin"]).await;
    let reader = create_key(db.url(), "reader", &["read"]).await;
    let cookie = start_session(&client, &first.url(), &reader).await.header();
    // The second node has the session and its key cached.
    let (status, _) = get_with(&client, &second.url(), "/streams", &cookie).await;
    assert_eq!(status, StatusCode::OK);

    let revoked = client
        .delete(format!("{}/admin/keys/reader", first.url()))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    let started = Instant::now();
    wait_until(BOUND, "the session refused on the second node", || async {
        get_with(&client, &second.url(), "/streams", &cookie)
            .await
            .0
            == StatusCode::UNAUTHORIZED
    })
    .await;
    assert!(started.elapsed() <= BOUND);
    let (status, _) = get_with(&client, &first.url(), "/streams", &cookie).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn ending_a_session_reaches_every_node_within_two_seconds() {
    let (db, first, second) = two_nodes().await;
    let client = client();
    let reader = create_key(db.url(), "reader", &["read"]).await;
    let cookie = start_session(&client, &first.url(), &reader).await.header();
    let (status, _) = get_with(&client, &second.url(), "/streams", &cookie).await;
    assert_eq!(status, StatusCode::OK);

    let ended = client
        .delete(format!("{}/auth/session", first.url()))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), StatusCode::NO_CONTENT);
    let started = Instant::now();
    wait_until(
        BOUND,
        "the ended session refused on the second node",
        || async {
            get_with(&client, &second.url(), "/streams", &cookie)
                .await
                .0
                == StatusCode::UNAUTHORIZED
        },
    )
    .await;
    assert!(started.elapsed() <= BOUND);
}

#[tokio::test]
async fn an_expired_session_is_refused_and_swept_when_the_next_one_starts() {
    let (db, node) = secured_node().await;
    let (client, base) = (client(), node.url());
    let reader = create_key(db.url(), "reader", &["read"]).await;
    let cookie = start_session(&client, &base, &reader).await.header();
    let pool = db.pool().await;
    sqlx::query("UPDATE sessions SET expires_at = clock_timestamp() - interval '1 second'")
        .execute(&pool)
        .await
        .unwrap();
    wait_until(BOUND, "the expired session refused", || async {
        get_with(&client, &base, "/streams", &cookie).await.0 == StatusCode::UNAUTHORIZED
    })
    .await;

    start_session(&client, &base, &reader).await;
    let (left, live): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE expires_at <= clock_timestamp()), \
                count(*) FILTER (WHERE expires_at > clock_timestamp()) FROM sessions",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((left, live), (0, 1));
}

#[tokio::test]
async fn a_garbage_or_unknown_cookie_is_refused_with_the_contracts_401() {
    let (db, node) = secured_node().await;
    let (client, base) = (client(), node.url());
    create_key(db.url(), "reader", &["read"]).await;
    let unknown = "A".repeat(43);
    for cookie in [
        "strata_session=garbage".to_owned(),
        "strata_session=".to_owned(),
        format!("strata_session={unknown}"),
        "strata_session=garbage; strata_session=also".to_owned(),
        "strata_session=strata_0123456789abcdef_xyz".to_owned(),
    ] {
        let (status, body) = get_with(&client, &base, "/streams", &cookie).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{cookie}: {body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("unknown, revoked or expired"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn starting_a_session_needs_a_bearer_key() {
    let (db, node) = secured_node().await;
    let (client, base) = (client(), node.url());
    let reader = create_key(db.url(), "reader", &["read"]).await;
    let cookie = start_session(&client, &base, &reader).await.header();
    let bad = format!("{}x", &reader[..reader.len() - 1]);
    for (what, bearer, cookie) in [
        ("nothing", None, None),
        ("a wrong key", Some(bad.as_str()), None),
        (
            "a session alone: it cannot renew itself",
            None,
            Some(&cookie),
        ),
    ] {
        let mut request = client.post(format!("{base}/auth/session"));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        let answer = request.send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED, "{what}");
        assert!(answer.headers().get(SET_COOKIE).is_none(), "{what}");
        assert_eq!(answer.headers()["www-authenticate"], "Bearer", "{what}");
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["error"], "unauthorized", "{what}: {body}");
    }
}

/// A CORS preflight for an `EventSource`-like GET with `Authorization`.
async fn preflight(client: &Client, base: &str, origin: &str) -> HeaderMap {
    let answer = client
        .request(
            reqwest::Method::OPTIONS,
            format!("{base}/streams/acct-1/subscribe"),
        )
        .header("origin", origin)
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "{}", answer.status());
    answer.headers().clone()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn cors_gives_credentials_to_named_origins_and_never_to_any_origin() {
    let db = TestDatabase::create().await;
    let client = client();
    let named = NodeBuilder::new(db.url())
        .args([
            "--auth",
            "keys",
            "--cors-origins",
            "https://console.example",
        ])
        .start()
        .await;
    let allowed = preflight(&client, &named.url(), "https://console.example").await;
    assert_eq!(
        header(&allowed, "access-control-allow-origin"),
        Some("https://console.example")
    );
    assert_eq!(
        header(&allowed, "access-control-allow-credentials"),
        Some("true")
    );
    let headers = header(&allowed, "access-control-allow-headers").unwrap_or_default();
    assert!(
        headers.to_ascii_lowercase().contains("authorization"),
        "{headers}"
    );
    let stranger = preflight(&client, &named.url(), "https://evil.example").await;
    assert_eq!(header(&stranger, "access-control-allow-origin"), None);
    assert_eq!(header(&stranger, "access-control-allow-credentials"), None);

    let any = NodeBuilder::new(db.url())
        .args(["--auth", "keys", "--cors-origins", "*"])
        .start()
        .await;
    for origin in ["https://console.example", "https://evil.example"] {
        let answer = preflight(&client, &any.url(), origin).await;
        assert_eq!(header(&answer, "access-control-allow-origin"), Some("*"));
        assert_eq!(
            header(&answer, "access-control-allow-credentials"),
            None,
            "{origin}"
        );
    }

    // Both at once would mean credentials for some and not others: refused.
    let mixed = strata_tests::run_to_end(
        &[
            "serve",
            "--database-url",
            db.url(),
            "--auth",
            "keys",
            "--cors-origins",
            "*,https://console.example",
        ],
        Duration::from_secs(60),
    )
    .await;
    assert!(!mixed.status.success());
    let stderr = String::from_utf8_lossy(&mixed.stderr);
    assert!(stderr.contains("--cors-origins"), "{stderr}");
}

#[tokio::test]
async fn without_authentication_a_session_is_not_needed() {
    let db = TestDatabase::create().await;
    let node = StrataNode::start(db.url()).await;
    let answer = client()
        .post(format!("{}/auth/session", node.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::NO_CONTENT);
    assert!(answer.headers().get(SET_COOKIE).is_none());
}

#[tokio::test]
async fn a_jwt_cannot_start_a_session_and_is_told_why() {
    let db = TestDatabase::create().await;
    let jwks = crate::jwt::JwksFile::new(&crate::jwt::jwks(&["ed-1"]));
    let node = crate::jwt::jwt_node_on(&db, jwks.path()).await;
    let token = crate::jwt::token_granting("jwt-reader", &["read"]);
    let answer = client()
        .post(format!("{}/auth/session", node.url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    assert!(answer.headers().get(SET_COOKIE).is_none());
    let body: Value = answer.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("made from an API key"),
        "{body}"
    );
}
