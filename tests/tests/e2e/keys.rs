//! API keys (issue 12): the `strata keys` command run as a process; the
//! server's `KeyStore` on its own in [`store`].

/// `KeyStore`: authentication, its cache, expiry, revocation across nodes.
mod store;

use std::process::Output;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use strata_core::auth::{Grant, Scope};
use strata_server::auth::keys::KeyStore;
use strata_tests::{TestDatabase, node_binary, wait_until};

/// The contract's bound on how late a node refuses a revoked key.
const REVOCATION_BOUND: Duration = Duration::from_secs(2);

/// Runs `strata ARGS` to its end with the database variables cleared and
/// then `env` set.
async fn strata(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(node_binary());
    command
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("STRATA_DATABASE_URL")
        .env("STRATA_LOG", "warn")
        .kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .unwrap_or_else(|_| panic!("`strata {}` still ran after 60 s", args.join(" ")))
        .expect("running strata-node")
}

/// `strata keys SUBCOMMAND --database-url URL ARGS`.
async fn keys(db: &TestDatabase, subcommand: &str, args: &[&str]) -> Output {
    let mut all = vec!["keys", subcommand, "--database-url", db.url()];
    all.extend_from_slice(args);
    strata(&all, &[]).await
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The token `keys create` printed on its last line.
fn token_of(output: &Output) -> String {
    assert!(output.status.success(), "{}", stderr(output));
    let out = stdout(output);
    let last = out.lines().last().expect("some output").to_owned();
    assert!(
        out.ends_with(&format!("\n{last}\n")),
        "a summary, then the token: {out:?}"
    );
    assert!(last.starts_with("strata_") && last.len() == 67, "{last:?}");
    last
}

#[tokio::test]
async fn create_prints_the_token_last_and_list_shows_the_key_without_it() {
    let db = TestDatabase::create().await;
    let created = keys(
        &db,
        "create",
        &[
            "--name",
            "ci",
            "--grant",
            "read:account-",
            "--grant",
            "write",
            "--expires-in",
            "30d",
        ],
    )
    .await;
    let token = token_of(&created);
    let summary = stdout(&created);
    assert!(
        summary.contains("\"ci\"") && summary.contains("read:account-, write"),
        "{summary}"
    );
    assert!(summary.contains("shown only this once"), "{summary}");

    let listed = keys(&db, "list", &[]).await;
    assert!(listed.status.success(), "{}", stderr(&listed));
    let list = stdout(&listed);
    let line = list
        .lines()
        .find(|l| l.starts_with("ci "))
        .unwrap_or_else(|| panic!("no line for ci in:\n{list}"));
    assert!(line.contains("read:account-, write"), "{line}");
    let year = (Utc::now() + TimeDelta::days(30))
        .format("%Y-%m-")
        .to_string();
    assert!(line.contains(&year), "its expiry: {line}");
    assert!(line.ends_with(" -"), "not revoked: {line}");
    assert!(
        !list.contains(&token[24..]),
        "the secret is not listed:\n{list}"
    );

    // The token works.
    let store = KeyStore::new(db.pool().await);
    let principal = store.authenticate(&token).await.unwrap().expect("accepted");
    assert_eq!(principal.name, "ci");
    assert_eq!(
        principal.grants,
        vec![
            Grant::new(Scope::Read, "account-"),
            Grant::new(Scope::Write, "")
        ]
    );
    assert!(principal.expires_at.is_some());
}

#[tokio::test]
async fn the_key_table_holds_neither_the_token_nor_the_secret() {
    let db = TestDatabase::create().await;
    let token = token_of(&keys(&db, "create", &["--name", "ci", "--grant", "admin"]).await);
    let secret = &token[24..];
    let pool = db.pool().await;
    // Every column of every row as text (bytea as hex), and the secret's
    // bytes in hex, both by PostgreSQL.
    let rows: Vec<String> = sqlx::query_scalar("SELECT t::text FROM api_keys t")
        .fetch_all(&pool)
        .await
        .unwrap();
    let (secret_hex, hash_matches): (String, bool) = sqlx::query_as(
        "SELECT encode(s, 'hex'), (SELECT secret_hash FROM api_keys) = sha256(s) \
         FROM decode(translate($1, '-_', '+/') || '=', 'base64') AS s",
    )
    .bind(secret)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 1);
    for needle in [token.as_str(), secret, secret_hex.as_str()] {
        assert!(!rows[0].contains(needle), "{needle} in {}", rows[0]);
    }
    assert!(
        rows[0].contains(&token[7..23]),
        "the public id is stored: {}",
        rows[0]
    );
    assert!(hash_matches, "the row holds the SHA-256 of the secret");
}

#[tokio::test]
async fn revoke_refuses_the_key_and_an_unknown_name_fails_clearly() {
    let db = TestDatabase::create().await;
    let token = token_of(&keys(&db, "create", &["--name", "ci", "--grant", "read"]).await);
    let node = KeyStore::new(db.pool().await);
    assert!(node.authenticate(&token).await.unwrap().is_some());

    let revoked = keys(&db, "revoke", &["ci"]).await;
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    assert!(
        stdout(&revoked).contains("Revoked key \"ci\""),
        "{}",
        stdout(&revoked)
    );
    let started = Instant::now();
    wait_until(REVOCATION_BOUND, "the revoked key refused", || async {
        node.authenticate(&token).await.unwrap().is_none()
    })
    .await;
    assert!(started.elapsed() <= REVOCATION_BOUND);
    let list = stdout(&keys(&db, "list", &[]).await);
    let line = list.lines().find(|l| l.starts_with("ci ")).unwrap();
    assert!(
        !line.ends_with(" -"),
        "the revocation time is listed: {line}"
    );

    let unknown = keys(&db, "revoke", &["nobody"]).await;
    assert!(!unknown.status.success());
    let error = stderr(&unknown);
    assert!(
        error.contains("no key named \"nobody\"") && error.contains("strata keys list"),
        "{error}"
    );
}

#[tokio::test]
async fn a_second_key_of_the_same_name_is_refused_clearly() {
    let db = TestDatabase::create().await;
    let first = token_of(&keys(&db, "create", &["--name", "ci", "--grant", "read"]).await);
    let second = keys(&db, "create", &["--name", "ci", "--grant", "write"]).await;
    assert!(!second.status.success());
    assert!(
        !stdout(&second).contains("strata_"),
        "no token: {}",
        stdout(&second)
    );
    let error = stderr(&second);
    assert!(
        error.contains("\"ci\" exists already") && error.contains("choose another name"),
        "{error}"
    );
    let store = KeyStore::new(db.pool().await);
    let principal = store.authenticate(&first).await.unwrap().unwrap();
    assert_eq!(
        principal.grants,
        vec![Grant::new(Scope::Read, "")],
        "unchanged"
    );
}

#[tokio::test]
async fn bad_input_exits_non_zero_naming_the_flag_and_writes_nothing() {
    let db = TestDatabase::create().await;
    for (args, flag, code) in [
        (&["--name", "ci", "--grant", "reed"][..], "--grant", 2),
        (&["--name", "ci", "--grant", "read:a b"][..], "--grant", 1),
        (&["--name", "ci"][..], "--grant", 2),
        (&["--name", "a b", "--grant", "read"][..], "--name", 1),
        (
            &["--name", "ci", "--grant", "read", "--expires-in", "3x"][..],
            "--expires-in",
            2,
        ),
        (
            &["--name", "ci", "--grant", "read", "--expires-in", "0s"][..],
            "--expires-in",
            1,
        ),
    ] {
        let output = keys(&db, "create", args).await;
        let error = stderr(&output);
        assert_eq!(output.status.code(), Some(code), "{args:?}: {error}");
        assert!(
            error.lines().any(|l| l.starts_with("error:")) && error.contains(flag),
            "{args:?}: {error}"
        );
        assert!(stdout(&output).is_empty(), "{args:?}");
    }
    let pool = db.pool().await;
    let table: Option<String> = sqlx::query_scalar("SELECT to_regclass('api_keys')::text")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        table, None,
        "bad input is refused before the database is touched"
    );
}

#[tokio::test]
async fn the_database_url_comes_from_the_flag_or_the_environment_as_elsewhere() {
    let db = TestDatabase::create().await;
    let create = ["keys", "create", "--name", "ci", "--grant", "read"];
    token_of(&strata(&create, &[("STRATA_DATABASE_URL", db.url())]).await);
    let listed = strata(&["keys", "list"], &[("DATABASE_URL", db.url())]).await;
    assert!(
        stdout(&listed).lines().any(|l| l.starts_with("ci ")),
        "{}",
        stderr(&listed)
    );
    let none = strata(&["keys", "list"], &[]).await;
    assert!(!none.status.success());
    assert!(
        stderr(&none).contains("--database-url"),
        "{}",
        stderr(&none)
    );
}

#[tokio::test]
async fn keys_refuse_another_applications_database_as_migrate_does() {
    let db = TestDatabase::create().await;
    let pool = db.pool().await;
    sqlx::query("CREATE TABLE events (id int)")
        .execute(&pool)
        .await
        .unwrap();
    let output = keys(&db, "create", &["--name", "ci", "--grant", "admin"]).await;
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("of its own"),
        "{}",
        stderr(&output)
    );
    assert!(stdout(&output).is_empty());
}
