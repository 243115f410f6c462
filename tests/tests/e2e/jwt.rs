//! JWT bearer tokens (API.md, "Security" → "JWT"): nodes started with
//! `--auth keys --jwt-jwks …`, tokens signed here with the test-only keys of
//! `tests/fixtures/jwt/`, key sets from a file and from a URL served by a
//! small HTTP server inside the test.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};
use strata_tests::{NodeBuilder, StrataNode, TestDatabase};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ISSUER: &str = "https://idp.strata.test";
const AUDIENCE: &str = "strata-e2e";

/// A file of `tests/fixtures/jwt/`.
fn fixture(name: &str) -> String {
    let path = format!("{}/fixtures/jwt/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A JWKS of the public halves of the fixture keys `names`.
pub fn jwks(names: &[&str]) -> String {
    let keys: Vec<Value> = names
        .iter()
        .map(|name| serde_json::from_str(&fixture(&format!("{name}.jwk.json"))).unwrap())
        .collect();
    json!({ "keys": keys }).to_string()
}

/// A key set in a file of its own (removed when the guard goes).
pub struct JwksFile(std::path::PathBuf);

impl JwksFile {
    /// A new file holding `contents`.
    pub fn new(contents: &str) -> JwksFile {
        let path = std::env::temp_dir().join(format!("strata-jwks-{}.json", uuid::Uuid::new_v4()));
        std::fs::write(&path, contents).unwrap();
        JwksFile(path)
    }

    /// Where it is.
    pub fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for JwksFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims that pass: this node's issuer and audience, `sub` alice, ten
/// minutes to live, and `grants` (none when `Value::Null`).
fn claims(grants: Value) -> Value {
    let mut claims = json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "iat": now(),
        "exp": now() + 600,
    });
    if !grants.is_null() {
        claims["strata_grants"] = grants;
    }
    claims
}

/// A token signed with the fixture key `key` (its algorithm from its name),
/// naming `kid` in its header.
fn sign(key: &str, kid: Option<&str>, claims: &Value) -> String {
    let pem = fixture(&format!("{key}.pem"));
    let (algorithm, encoding) = match &key[..2] {
        "rs" => (Algorithm::RS256, EncodingKey::from_rsa_pem(pem.as_bytes())),
        "ec" => (Algorithm::ES256, EncodingKey::from_ec_pem(pem.as_bytes())),
        "ed" => (Algorithm::EdDSA, EncodingKey::from_ed_pem(pem.as_bytes())),
        _ => unreachable!("fixture keys are rsa-*, ec-*, ed-*"),
    };
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &encoding.unwrap()).unwrap()
}

/// A token signed with fixture key `key`, its `kid` the key's name.
fn token(key: &str, claims: &Value) -> String {
    sign(key, Some(key), claims)
}

/// A token of subject `sub` signed with the fixture key `ed-1`, holding
/// `grants` in the matrix's spelling (`read`, `write:other-`).
pub fn token_granting(sub: &str, grants: &[&str]) -> String {
    let grants: Vec<Value> = grants
        .iter()
        .map(|grant| {
            let (scope, streams) = grant.split_once(':').unwrap_or((grant, ""));
            json!({"scope": scope, "streams": streams})
        })
        .collect();
    let mut claims = claims(json!(grants));
    claims["sub"] = json!(sub);
    if grants.is_empty() {
        claims.as_object_mut().unwrap().remove("strata_grants");
    }
    token("ed-1", &claims)
}

/// A node requiring keys or JWTs from `jwks` (a file or URL).
async fn jwt_node(jwks: &str) -> (TestDatabase, StrataNode) {
    let db = TestDatabase::create().await;
    let node = jwt_node_on(&db, jwks).await;
    (db, node)
}

/// A node on `db` requiring keys or JWTs from `jwks` (a file or URL).
pub async fn jwt_node_on(db: &TestDatabase, jwks: &str) -> StrataNode {
    NodeBuilder::new(db.url())
        .args([
            "--auth",
            "keys",
            "--jwt-jwks",
            jwks,
            "--jwt-issuer",
            ISSUER,
            "--jwt-audience",
            AUDIENCE,
        ])
        .start()
        .await
}

/// The status and the body of `GET path` with `token`.
async fn get(node: &StrataNode, path: &str, token: &str) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .get(format!("{}{path}", node.url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    answer(response).await
}

/// The status and the body of appending one event to `stream` with `token`.
async fn append(node: &StrataNode, stream: &str, token: &str) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/streams/{stream}", node.url()))
        .bearer_auth(token)
        .json(&json!({"expected_version": "any", "events": [{"type": "Touched", "data": {}}]}))
        .send()
        .await
        .unwrap();
    answer(response).await
}

async fn answer(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    if status == StatusCode::UNAUTHORIZED {
        assert_eq!(
            response
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap()),
            Some("Bearer"),
            "a 401 carries the challenge"
        );
    }
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// A token reads and appends where its grants reach and gets 403 beyond;
/// one without the grants claim is a valid principal that may do nothing,
/// and its 403 says why; API keys keep working beside JWTs.
#[tokio::test]
async fn a_token_reads_and_appends_within_its_grants_and_gets_403_outside() {
    let file = JwksFile::new(&jwks(&["rsa-1", "ec-1", "ed-1"]));
    let (db, node) = jwt_node(file.path()).await;
    let alice = token(
        "rsa-1",
        &claims(json!([
            {"scope": "read", "streams": "account-"},
            {"scope": "write", "streams": "account-"}
        ])),
    );
    let (status, body) = append(&node, "account-1", &alice).await;
    assert!(status.is_success(), "{status} {body}");
    let (status, body) = get(&node, "/streams/account-1", &alice).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["events"].as_array().unwrap().len(), 1, "{body}");

    let (status, body) = append(&node, "other-1", &alice).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"], "forbidden");
    assert!(
        body["message"].as_str().unwrap().contains("\"alice\""),
        "the 403 names the token's subject: {body}"
    );
    let (status, _) = get(&node, "/streams/other-1", &alice).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = get(&node, "/all", &alice).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = get(&node, "/cluster", &alice).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // No grants claim: authenticated, allowed nothing, told why.
    let empty = token("ed-1", &claims(Value::Null));
    let (status, body) = get(&node, "/streams/account-1", &empty).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("no grants") && message.contains("`strata_grants` claim"),
        "the 403 explains a token without grants: {message}"
    );

    // An API key on the same node, as before.
    let key = super::auth::create_key(db.url(), "reader", &["read"]).await;
    let (status, _) = get(&node, "/streams/account-1", &key).await;
    assert_eq!(status, StatusCode::OK);
    // A token that is neither a key nor a JWT.
    let (status, body) = get(&node, "/streams/account-1", "hello").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("neither an API key"),
        "{body}"
    );
}

/// Every way a token can be wrong gets a 401 whose message says which;
/// RS256, ES256 and EdDSA tokens are each accepted.
#[tokio::test]
async fn each_algorithm_is_accepted_and_each_bad_token_is_refused_saying_why() {
    let file = JwksFile::new(&jwks(&["rsa-1", "ec-1", "ed-1"]));
    let (_db, node) = jwt_node(file.path()).await;
    let read = || claims(json!([{"scope": "read", "streams": ""}]));
    for key in ["rsa-1", "ec-1", "ed-1"] {
        let (status, body) = get(&node, "/all", &token(key, &read())).await;
        assert_eq!(status, StatusCode::OK, "{key}: {body}");
    }

    let with = |change: &dyn Fn(&mut Value)| {
        let mut claims = read();
        change(&mut claims);
        claims
    };
    let good = token("rsa-1", &read());
    let (header, rest) = good.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    // The claims of an admin, under alice's signature.
    let forged_claims = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &with(&|c| c["strata_grants"] = json!([{"scope": "admin"}])),
        &EncodingKey::from_secret(b"x"),
    )
    .unwrap();
    let forged_payload = forged_claims.split('.').nth(1).unwrap();
    let forged = format!("{header}.{forged_payload}.{signature}");
    // One character of the signature changed (in the middle: the last may
    // hold only padding bits).
    let mut tampered_signature: Vec<char> = signature.chars().collect();
    let middle = tampered_signature.len() / 2;
    tampered_signature[middle] = if tampered_signature[middle] == 'A' {
        'B'
    } else {
        'A'
    };
    let tampered_signature: String = tampered_signature.into_iter().collect();
    let tampered = format!(
        "{header}.{}.{tampered_signature}",
        rest.split_once('.').unwrap().0
    );
    let mut hs256 = Header::new(Algorithm::HS256);
    hs256.kid = Some("rsa-1".into());
    let hs256 =
        jsonwebtoken::encode(&hs256, &read(), &EncodingKey::from_secret(b"guessable")).unwrap();
    let b64 = |v: Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let unsigned = format!("{}.{}.", b64(json!({"alg": "none"})), b64(read()));

    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            token("ec-1", &with(&|c| c["exp"] = json!(now() - 3600))),
            "expired",
        ),
        (
            "not yet valid",
            token("ec-1", &with(&|c| c["nbf"] = json!(now() + 3600))),
            "not valid yet",
        ),
        (
            "wrong issuer",
            token("ed-1", &with(&|c| c["iss"] = json!("https://evil.test"))),
            "wrong issuer",
        ),
        (
            "wrong audience",
            token("ed-1", &with(&|c| c["aud"] = json!("another-service"))),
            "wrong audience",
        ),
        (
            "unknown key id",
            sign("rsa-1", Some("nobody-knows"), &read()),
            "\"nobody-knows\" is unknown",
        ),
        ("forged claims", forged, "signature does not verify"),
        ("tampered signature", tampered, "signature does not verify"),
        (
            "signed by another key",
            sign("rsa-2", Some("rsa-1"), &read()),
            "signature does not verify",
        ),
        ("HS256", hs256, "\"HS256\""),
        ("alg none", unsigned, "\"none\""),
        (
            "a key of another algorithm",
            sign("rsa-1", Some("ec-1"), &read()),
            "is for ES256",
        ),
        (
            "no kid among several keys",
            sign("rsa-1", None, &read()),
            "names no key id",
        ),
        (
            "malformed grants",
            token("rsa-1", &with(&|c| c["strata_grants"] = json!("read"))),
            "`strata_grants` claim is malformed",
        ),
        (
            "an unknown scope",
            token(
                "rsa-1",
                &with(&|c| c["strata_grants"] = json!([{"scope": "everything"}])),
            ),
            "`strata_grants` claim is malformed",
        ),
        (
            "no subject",
            token(
                "rsa-1",
                &with(&|c| {
                    c.as_object_mut().unwrap().remove("sub");
                }),
            ),
            "`sub`",
        ),
        (
            "no expiry",
            token(
                "rsa-1",
                &with(&|c| {
                    c.as_object_mut().unwrap().remove("exp");
                }),
            ),
            "`exp`",
        ),
    ];
    let mut failures = Vec::new();
    for (what, token, says) in cases {
        let (status, body) = get(&node, "/all", &token).await;
        let message = body["message"].as_str().unwrap_or_default();
        if status != StatusCode::UNAUTHORIZED
            || body["error"] != "unauthorized"
            || !message.contains(says)
        {
            failures.push(format!(
                "{what}: {status} {body} (expected 401 saying {says:?})"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// What the small key server answers: a status and a body, changed by the
/// test; and how many requests it had.
#[derive(Default)]
struct Served {
    status: u16,
    body: String,
    /// Requests answered 503 before the set is served (for the retries at
    /// start).
    fail_first: usize,
    requests: usize,
}

/// A one-route HTTP server on a free port: every request gets `served`.
async fn key_server(served: Arc<Mutex<Served>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/.well-known/jwks.json",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let served = Arc::clone(&served);
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                let (status, body) = {
                    let mut served = served.lock().unwrap();
                    served.requests += 1;
                    if served.fail_first > 0 {
                        served.fail_first -= 1;
                        (503, "down".to_owned())
                    } else {
                        (served.status, served.body.clone())
                    }
                };
                let response = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    url
}

/// A key set from a URL: fetched at start (retried while the server
/// fails), and fetched again when a token names a key it does not hold —
/// the issuer rotated in a new key, and its tokens are taken at once.
#[tokio::test]
async fn keys_from_a_url_are_retried_at_start_and_a_rotated_in_key_is_accepted() {
    let served = Arc::new(Mutex::new(Served {
        status: 200,
        body: jwks(&["rsa-1"]),
        fail_first: 2,
        requests: 0,
    }));
    let url = key_server(Arc::clone(&served)).await;
    let (_db, node) = jwt_node(&url).await;
    assert_eq!(
        served.lock().unwrap().requests,
        3,
        "two failures, then the set"
    );
    let read = claims(json!([{"scope": "read"}]));
    let (status, body) = get(&node, "/all", &token("rsa-1", &read)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A lone key also verifies a token without a kid.
    let (status, body) = get(&node, "/all", &sign("rsa-1", None, &read)).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Rotation: the issuer publishes rsa-2 beside rsa-1 and signs with it.
    served.lock().unwrap().body = jwks(&["rsa-1", "rsa-2"]);
    let (status, body) = get(&node, "/all", &token("rsa-2", &read)).await;
    assert_eq!(status, StatusCode::OK, "the new key is fetched: {body}");
    let (status, _) = get(&node, "/all", &token("rsa-1", &read)).await;
    assert_eq!(status, StatusCode::OK, "the old key still works");
    strata_tests::wait_until(
        Duration::from_secs(10),
        "the refetch to be logged",
        || async { node.logs().contains("JWT keys fetched again") },
    )
    .await;
}

/// A refresh that fails keeps the keys fetched before, with a warning; an
/// unknown key id does not make the node fetch more than once per 30 s.
#[tokio::test]
async fn a_failed_refresh_keeps_the_old_keys() {
    let served = Arc::new(Mutex::new(Served {
        status: 200,
        body: jwks(&["ec-1"]),
        ..Served::default()
    }));
    let url = key_server(Arc::clone(&served)).await;
    let (_db, node) = jwt_node(&url).await;
    served.lock().unwrap().status = 500;
    let read = claims(json!([{"scope": "read"}]));
    let (status, body) = get(&node, "/all", &token("ed-1", &read)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("\"ed-1\" is unknown"),
        "{body}"
    );
    // The node's log is read from its stderr as it comes: the warning may
    // land a moment after the answer.
    strata_tests::wait_until(Duration::from_secs(10), "the refresh's warning", || async {
        let logs = node.logs();
        logs.contains("could not be fetched again") && logs.contains("500")
    })
    .await;
    let (status, body) = get(&node, "/all", &token("ec-1", &read)).await;
    assert_eq!(status, StatusCode::OK, "the old keys stay: {body}");
    // Made-up key ids within 30 s: no more fetches.
    let before = served.lock().unwrap().requests;
    for i in 0..5 {
        let (status, _) = get(
            &node,
            "/all",
            &sign("ec-1", Some(&format!("made-up-{i}")), &read),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(served.lock().unwrap().requests, before);
}

/// `strata serve` with JWT flags it cannot use exits non-zero before it
/// serves, naming the flag.
#[tokio::test]
async fn bad_jwt_flags_stop_the_node_at_start_naming_the_flag() {
    let bad = JwksFile::new("{\"keys\": \"none\"}");
    let hmac_only = JwksFile::new(r#"{"keys": [{"kty": "oct", "kid": "s", "k": "c2VjcmV0"}]}"#);
    let missing = std::env::temp_dir().join("strata-no-such-jwks.json");
    let missing = missing.to_str().unwrap();
    let db = "postgres://postgres@127.0.0.1:1/unused";
    let serve = |extra: &[&str]| {
        let mut args = vec![
            "serve",
            "--database-url",
            db,
            "--listen",
            "127.0.0.1:0",
            "--auth",
            "keys",
        ];
        args.extend_from_slice(extra);
        args.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let both = ["--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE];
    let with_both = |jwks: &str| {
        let mut args = vec!["--jwt-jwks", jwks];
        args.extend_from_slice(&both);
        serve(&args)
    };
    let cases = [
        (with_both(bad.path()), "--jwt-jwks", "not a usable key set"),
        (with_both(hmac_only.path()), "--jwt-jwks", "shared secret"),
        (with_both(missing), "--jwt-jwks", "cannot read"),
        (
            serve(&["--jwt-jwks", bad.path(), "--jwt-audience", AUDIENCE]),
            "--jwt-issuer",
            "required",
        ),
        (
            serve(&["--jwt-jwks", bad.path(), "--jwt-issuer", ISSUER]),
            "--jwt-audience",
            "required",
        ),
        (
            serve(&["--jwt-issuer", ISSUER]),
            "--jwt-issuer",
            "without --jwt-jwks",
        ),
    ];
    for (args, flag, says) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = strata_tests::run_to_end(&args, Duration::from_secs(60)).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} started: {stderr}");
        assert!(
            stderr.contains(flag) && stderr.contains(says),
            "{args:?}: the error names {flag} and says {says:?}: {stderr}"
        );
    }
    // --auth none takes no JWT flags.
    let mut args = vec![
        "serve",
        "--database-url",
        db,
        "--listen",
        "127.0.0.1:0",
        "--auth",
        "none",
        "--jwt-jwks",
        bad.path(),
    ];
    args.extend_from_slice(&both);
    let output = strata_tests::run_to_end(&args, Duration::from_secs(60)).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("--jwt-jwks") && stderr.contains("--auth none"),
        "{stderr}"
    );
}
