//! HTTPS (`--tls-cert`, `--tls-key`; API.md, Security → TLS and limits):
//! the SDK and curl with the CA, clients that do not trust it, plain HTTP
//! on the TLS port, SIGHUP reloads, files the node refuses at start, silent
//! sockets cut off at the header timeout, and PostgreSQL over TLS.
//!
//! Certificates are made at test time (rcgen): a CA, and leaves for
//! 127.0.0.1 and localhost signed by it, written to the test's own folder.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use serde_json::json;
use strata_sdk::{Client, Error, ExpectedVersion, LiveMessage, ReadStream, SubscribeFrom, event};
use strata_tests::{NodeBuilder, StrataNode, TestDatabase, run_to_end, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

const T: Duration = Duration::from_secs(30);

/// A folder of this test's own, removed when dropped.
struct Folder(PathBuf);

impl Folder {
    fn new(tag: &str) -> Folder {
        let path = std::env::temp_dir().join(format!(
            "strata-tls-{tag}-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&path).unwrap();
        Folder(path)
    }

    fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A certificate authority of the test.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A leaf certificate and its key.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("Strata test CA {name}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for 127.0.0.1 and localhost, named `name` (its common name).
    fn leaf(&self, name: &str) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

/// A folder with a CA and one leaf written as `ca.pem`, `cert.pem`, `key.pem`.
struct Pki {
    folder: Folder,
    ca: Ca,
    leaf: Leaf,
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn new(tag: &str) -> Pki {
        let folder = Folder::new(tag);
        let ca = Ca::new(tag);
        let leaf = ca.leaf("node-a");
        folder.write("ca.pem", &ca.pem);
        let cert = folder.write("cert.pem", &leaf.cert_pem);
        let key = folder.write("key.pem", &leaf.key_pem);
        Pki {
            folder,
            ca,
            leaf,
            cert,
            key,
        }
    }

    fn ca_path(&self) -> PathBuf {
        self.folder.0.join("ca.pem")
    }

    fn tls_args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert.display().to_string(),
            "--tls-key".into(),
            self.key.display().to_string(),
        ]
    }
}

fn https(node: &StrataNode) -> String {
    format!("https://127.0.0.1:{}", node.addr().port())
}

fn trusting_client(node: &StrataNode, ca: &Ca) -> Client {
    Client::builder(https(node))
        .ca_certificate(ca.pem.as_bytes())
        .unwrap()
        .timeout(Duration::from_secs(20))
        .max_backoff(Duration::from_millis(200))
        .build()
        .unwrap()
}

async fn tls_node(db: &TestDatabase, pki: &Pki, extra: &[&str]) -> StrataNode {
    NodeBuilder::new(db.url())
        .args(pki.tls_args())
        .args(extra.iter().copied())
        .start()
        .await
}

/// A rustls client trusting `ca` only (its own config each time: no
/// session is resumed, so every handshake shows the served certificate).
fn connector(ca: &Ca) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

async fn tls_connect(addr: SocketAddr, ca: &Ca) -> std::io::Result<TlsStream<TcpStream>> {
    let socket = TcpStream::connect(addr).await?;
    let name = ServerName::IpAddress(addr.ip().into());
    connector(ca).connect(name, socket).await
}

/// The end-entity certificate a fresh handshake gets.
async fn served_certificate(addr: SocketAddr, ca: &Ca) -> CertificateDer<'static> {
    let stream = tls_connect(addr, ca).await.expect("a TLS handshake");
    stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("a certificate")[0]
        .clone()
}

/// `GET path` on an open keep-alive connection; the answer's status line.
async fn get_on<S>(stream: &mut S, path: &str) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let request = format!("GET {path} HTTP/1.1\r\nHost: strata\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    // Read the head and the body its Content-Length announces.
    loop {
        let n = tokio::time::timeout(T, stream.read(&mut buf))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(
            n > 0,
            "the connection closed: {:?}",
            String::from_utf8_lossy(&received)
        );
        received.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&received).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if received.len() >= end + 4 + length {
                return text.lines().next().unwrap_or("").to_owned();
            }
        }
    }
}

async fn next(s: &mut strata_sdk::Subscription) -> LiveMessage {
    tokio::time::timeout(T, s.next())
        .await
        .expect("a message within the timeout")
        .expect("the subscription goes on")
        .expect("no error")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_with_the_ca_appends_reads_and_subscribes_over_https() {
    let db = TestDatabase::create().await;
    let pki = Pki::new("sdk");
    let node = tls_node(&db, &pki, &[]).await;
    let advertised = format!("https://{}", node.addr());
    wait_until(T, "the advertised URL to be https://", || async {
        node.logs().contains(&advertised)
    })
    .await;
    let client = trusting_client(&node, &pki.ca);
    assert!(client.is_ready().await.unwrap());

    let mut live = client.subscribe_stream("tls-1", SubscribeFrom::Start);
    client
        .append(
            "tls-1",
            ExpectedVersion::NoStream,
            [event("Opened", json!({"n": 1}))],
        )
        .await
        .unwrap();
    let page = client
        .read_stream("tls-1", &ReadStream::default())
        .await
        .unwrap();
    assert_eq!(page.events.len(), 1);
    assert_eq!(page.events[0].event_type, "Opened");

    // The subscription (its own HTTP client, streaming) over TLS too: the
    // first event, caught up, then one appended while it is live.
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match next(&mut live).await {
            LiveMessage::Event(e) => seen.push(e.data["n"].as_i64().unwrap()),
            LiveMessage::CaughtUp(_) => {
                client
                    .append(
                        "tls-1",
                        ExpectedVersion::Exact(1),
                        [event("Deposited", json!({"n": 2}))],
                    )
                    .await
                    .unwrap();
            }
        }
    }
    assert_eq!(seen, [1, 2]);
}

#[tokio::test]
async fn curl_with_the_ca_gets_ready_over_https() {
    if !std::process::Command::new("which")
        .arg("curl")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        eprintln!("SKIPPED curl_with_the_ca_gets_ready_over_https: curl is not installed");
        return;
    }
    let db = TestDatabase::create().await;
    let pki = Pki::new("curl");
    let node = tls_node(&db, &pki, &[]).await;
    let curl = |args: Vec<String>| async move {
        tokio::process::Command::new("curl")
            .args(["--silent", "--show-error", "--max-time", "20"])
            .args(args)
            .env_remove("CURL_CA_BUNDLE")
            .output()
            .await
            .unwrap()
    };
    let url = format!("{}/health/ready", https(&node));
    let trusted = curl(vec![
        "--fail".into(),
        "--cacert".into(),
        pki.ca_path().display().to_string(),
        url.clone(),
    ])
    .await;
    assert!(
        trusted.status.success(),
        "curl --cacert: {}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    // And by name: the leaf names localhost too.
    let by_name = curl(vec![
        "--fail".into(),
        "--cacert".into(),
        pki.ca_path().display().to_string(),
        format!("https://localhost:{}/health/live", node.addr().port()),
    ])
    .await;
    assert!(
        by_name.status.success(),
        "curl https://localhost: {}",
        String::from_utf8_lossy(&by_name.stderr)
    );
    // Without the CA, curl refuses the certificate (exit 60).
    let untrusted = curl(vec![url]).await;
    assert_eq!(
        untrusted.status.code(),
        Some(60),
        "{}",
        String::from_utf8_lossy(&untrusted.stderr)
    );
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_fails_the_handshake() {
    let db = TestDatabase::create().await;
    let pki = Pki::new("untrusted");
    let node = tls_node(&db, &pki, &[]).await;

    // The SDK with the system's roots only.
    let stranger = Client::builder(https(&node)).retries(0).build().unwrap();
    match stranger.is_ready().await {
        Err(error @ Error::Transport { .. }) => {
            let chain = format!("{:?}", anyhow::Error::from(error));
            assert!(chain.contains("certificate"), "{chain}");
        }
        other => panic!("expected a TLS failure, got {other:?}"),
    }
    // A client trusting another CA.
    let other = Ca::new("other");
    let refused = tls_connect(node.addr(), &other).await;
    let error = refused.expect_err("a handshake with a CA that did not sign the leaf");
    assert!(error.to_string().contains("UnknownIssuer"), "{error}");
    // The node goes on for clients that trust its CA.
    assert!(trusting_client(&node, &pki.ca).is_ready().await.unwrap());
}

#[tokio::test]
async fn plain_http_to_the_tls_port_is_refused_and_the_node_goes_on() {
    let db = TestDatabase::create().await;
    let pki = Pki::new("plain");
    let node = tls_node(&db, &pki, &[]).await;

    // A plain HTTP request: a 400 that says to use https://, then closed.
    let mut socket = TcpStream::connect(node.addr()).await.unwrap();
    socket
        .write_all(b"GET /health/ready HTTP/1.1\r\nHost: strata\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(T, socket.read_to_end(&mut answer))
        .await
        .expect("the node closes the connection")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("https://"), "{answer}");

    // reqwest over http:// sees the same answer, not a hang.
    let plain = reqwest::Client::builder().timeout(T).build().unwrap();
    let reply = plain
        .get(format!("http://{}/health/ready", node.addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), reqwest::StatusCode::BAD_REQUEST);

    // Bytes that are neither TLS nor HTTP: closed without a word.
    let mut socket = TcpStream::connect(node.addr()).await.unwrap();
    socket.write_all(&[0x00, 0x01, 0x02, 0x03]).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(T, socket.read_to_end(&mut answer))
        .await
        .expect("the node closes the connection");
    assert!(answer.is_empty(), "{answer:?}");

    // Unharmed.
    let client = trusting_client(&node, &pki.ca);
    client
        .append("after-plain", ExpectedVersion::Any, [event("E", json!({}))])
        .await
        .unwrap();
    assert!(client.is_ready().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_gives_new_connections_the_new_certificate_and_keeps_open_ones() {
    let db = TestDatabase::create().await;
    let pki = Pki::new("reload");
    let node = tls_node(&db, &pki, &[]).await;
    let addr = node.addr();
    assert_eq!(served_certificate(addr, &pki.ca).await, pki.leaf.der);

    // A keep-alive connection opened before the reload.
    let mut open = tls_connect(addr, &pki.ca).await.unwrap();
    assert!(get_on(&mut open, "/health/live").await.contains("200"));

    // A new pair in place of the files, then SIGHUP to this node's PID.
    let renewed = pki.ca.leaf("node-b");
    std::fs::write(&pki.cert, &renewed.cert_pem).unwrap();
    std::fs::write(&pki.key, &renewed.key_pem).unwrap();
    node.signal(libc::SIGHUP);
    let (ca, expected) = (&pki.ca, &renewed.der);
    wait_until(
        T,
        "new connections to get the renewed certificate",
        || async move { served_certificate(addr, ca).await == *expected },
    )
    .await;
    wait_until(T, "the reload to be logged", || async {
        node.logs().contains("reloaded the TLS certificate")
    })
    .await;
    // The connection opened before goes on, on its old session.
    assert!(get_on(&mut open, "/health/live").await.contains("200"));
    assert_eq!(
        open.get_ref().1.peer_certificates().unwrap()[0],
        pki.leaf.der
    );

    // A broken key: the reload fails, says what to fix, and the renewed
    // pair is still served.
    std::fs::write(&pki.key, "not a key").unwrap();
    node.signal(libc::SIGHUP);
    wait_until(T, "the failed reload to be logged", || async {
        node.logs().contains("cannot reload the TLS certificate")
    })
    .await;
    let logs = node.logs();
    assert!(logs.contains("Fix --tls-key"), "{logs}");
    assert!(logs.contains(&pki.key.display().to_string()), "{logs}");
    assert_eq!(served_certificate(addr, &pki.ca).await, renewed.der);
    // Still alive and serving: SIGHUP did not end it.
    assert!(trusting_client(&node, &pki.ca).is_ready().await.unwrap());
}

/// `strata serve` with `args` after a database URL it never reaches.
async fn refused_start(args: &[&str]) -> String {
    let mut all = vec![
        "serve",
        "--database-url",
        "postgres://nobody@127.0.0.1:1/none",
    ];
    all.extend_from_slice(args);
    let output = run_to_end(&all, T).await;
    assert!(!output.status.success(), "{args:?} started");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn bad_certificate_or_key_files_stop_the_node_naming_the_flag() {
    let pki = Pki::new("bad-files");
    let cert = pki.cert.display().to_string();
    let key = pki.key.display().to_string();
    let missing = pki.folder.0.join("missing.pem").display().to_string();

    let stderr = refused_start(&["--tls-cert", &cert, "--tls-key", &missing]).await;
    assert!(stderr.contains("--tls-key"), "{stderr}");
    assert!(stderr.contains(&missing), "{stderr}");
    assert!(stderr.contains("cannot read"), "{stderr}");

    let stderr = refused_start(&["--tls-cert", &missing, "--tls-key", &key]).await;
    assert!(stderr.contains("--tls-cert"), "{stderr}");

    let garbage = pki
        .folder
        .write("garbage.pem", "hello")
        .display()
        .to_string();
    let stderr = refused_start(&["--tls-cert", &garbage, "--tls-key", &key]).await;
    assert!(stderr.contains("--tls-cert"), "{stderr}");
    assert!(stderr.contains("no certificate"), "{stderr}");
    let stderr = refused_start(&["--tls-cert", &cert, "--tls-key", &garbage]).await;
    assert!(stderr.contains("--tls-key"), "{stderr}");
    assert!(stderr.contains("no private key"), "{stderr}");

    // The key of another certificate.
    let stranger = pki.ca.leaf("someone-else");
    let other_key = pki
        .folder
        .write("other-key.pem", &stranger.key_pem)
        .display()
        .to_string();
    let stderr = refused_start(&["--tls-cert", &cert, "--tls-key", &other_key]).await;
    assert!(stderr.contains("--tls-key"), "{stderr}");
    assert!(stderr.contains("does not belong"), "{stderr}");

    // One without the other, by flag or by environment twin.
    let stderr = refused_start(&["--tls-cert", &cert]).await;
    assert!(stderr.contains("--tls-cert: needs --tls-key"), "{stderr}");
    let output = tokio::process::Command::new(strata_tests::node_binary())
        .args([
            "serve",
            "--database-url",
            "postgres://nobody@127.0.0.1:1/none",
        ])
        .env("STRATA_TLS_KEY", &key)
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--tls-key: needs --tls-cert"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_socket_is_cut_off_at_the_header_timeout_while_others_are_served() {
    let db = TestDatabase::create().await;
    let pki = Pki::new("silent");
    let node = tls_node(&db, &pki, &["--header-timeout-ms", "600"]).await;
    let client = trusting_client(&node, &pki.ca);

    // Connected, nothing sent; and one that sends the first bytes of a
    // TLS record and stops.
    let started = Instant::now();
    let mut silent = TcpStream::connect(node.addr()).await.unwrap();
    let mut trickle = TcpStream::connect(node.addr()).await.unwrap();
    trickle.write_all(&[0x16, 0x03, 0x01]).await.unwrap();

    // Meanwhile another client is served, more than once.
    for n in 0..3 {
        client
            .append("busy", ExpectedVersion::Any, [event("E", json!({"n": n}))])
            .await
            .unwrap();
    }
    for socket in [&mut silent, &mut trickle] {
        let mut received = Vec::new();
        // Closed (or reset, with bytes unread): either way, nothing sent.
        let _ = tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut received))
            .await
            .expect("the node closes a silent handshake");
        assert!(received.is_empty(), "{received:?}");
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(500),
        "closed after {waited:?}, before the header timeout"
    );
    wait_until(T, "the timeouts to be counted", || async {
        let metrics = client.metrics().await.unwrap();
        metrics
            .lines()
            .any(|l| l.starts_with("strata_tls_handshakes_failed_total{reason=\"timeout\"} 2"))
    })
    .await;
    assert!(client.is_ready().await.unwrap());
}

/// The PostgreSQL connection over TLS with `sslmode=verify-full`, when the
/// local server has TLS on and its certificate can be read here to trust
/// (Debian's self-signed `ssl-cert-snakeoil`, for localhost).
#[tokio::test]
async fn the_node_reaches_postgresql_over_tls_with_verify_full() {
    let db = TestDatabase::create().await;
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(db.url())
        .await
        .unwrap();
    let ssl: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    let cert_file: String = sqlx::query_scalar("SHOW ssl_cert_file")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    let host_is_loopback = url::Url::parse(db.url())
        .ok()
        .and_then(|u| u.host_str().map(|h| h == "127.0.0.1" || h == "localhost"))
        .unwrap_or(false);
    let root = Path::new(&cert_file);
    if ssl != "on" || !host_is_loopback || !root.is_file() {
        eprintln!(
            "SKIPPED the_node_reaches_postgresql_over_tls_with_verify_full: PostgreSQL has \
             ssl={ssl}, its certificate {cert_file:?} readable here: {}",
            root.is_file()
        );
        return;
    }
    let mut url = url::Url::parse(db.url()).unwrap();
    url.set_host(Some("localhost")).unwrap();
    url.query_pairs_mut()
        .append_pair("sslmode", "verify-full")
        .append_pair("sslrootcert", &cert_file);
    let node = NodeBuilder::new(url.as_str()).start().await;
    node.api()
        .append("over-tls", json!("any"), crate::events("E", 1))
        .await;
    let database = url.path().trim_start_matches('/').to_owned();
    let encrypted: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
         WHERE ssl AND datname = $1",
    )
    .bind(&database)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(
        encrypted > 0,
        "no TLS connection of the node's in pg_stat_ssl"
    );

    // verify-full checks: a root that did not sign the server's
    // certificate makes the node refuse to start.
    let pki = Pki::new("pg");
    let mut wrong = url.clone();
    wrong
        .query_pairs_mut()
        .clear()
        .append_pair("sslmode", "verify-full")
        .append_pair("sslrootcert", &pki.ca_path().display().to_string());
    let output = run_to_end(
        &["serve", "--database-url", wrong.as_str(), "--auth", "none"],
        Duration::from_secs(60),
    )
    .await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("certificate"), "{stderr}");
}

#[test]
fn ca_certificate_refuses_what_is_not_a_pem_certificate() {
    for bad in [
        &b"hello"[..],
        b"-----BEGIN CERTIFICATE-----\n%%%\n-----END CERTIFICATE-----\n",
    ] {
        match Client::builder("https://127.0.0.1:1").ca_certificate(bad) {
            Err(Error::Usage(message)) => {
                assert!(message.contains("BEGIN CERTIFICATE"), "{message}")
            }
            other => panic!("expected a usage error, got {other:?}"),
        }
    }
    let ca = Ca::new("good");
    assert!(
        Client::builder("https://127.0.0.1:1")
            .ca_certificate(ca.pem.as_bytes())
            .is_ok()
    );
}
