//! The server's `KeyStore` against a real database: authentication, its
//! cache, expiry and revocation across nodes.

use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use sqlx::PgPool;
use strata_core::auth::{CreateKey, Grant, Scope};
use strata_pg::audit::Actor;
use strata_server::auth::keys::{KeyError, KeyStore};
use strata_tests::{TestDatabase, wait_until};

use super::REVOCATION_BOUND;

/// A migrated database and a pool on it.
async fn migrated() -> (TestDatabase, PgPool) {
    let db = TestDatabase::create().await;
    let pool = db.pool().await;
    strata_server::store::migrate(&pool)
        .await
        .expect("migrating");
    (db, pool)
}

/// Who the audit trail names for the keys these tests create and revoke.
fn actor() -> Actor {
    Actor::new("store-test", "local")
}

fn request(name: &str, grants: Vec<Grant>) -> CreateKey {
    CreateKey {
        name: name.into(),
        grants,
        expires_at: None,
    }
}

#[tokio::test]
async fn authenticate_accepts_the_token_and_refuses_every_other() {
    let (_db, pool) = migrated().await;
    let store = KeyStore::new(pool);
    let created = store
        .create(
            &request("ci", vec![Grant::new(Scope::Read, "account-")]),
            &actor(),
        )
        .await
        .unwrap();
    let principal = store.authenticate(&created.token).await.unwrap().unwrap();
    assert_eq!(principal.name, "ci");
    assert_eq!(principal.grants, created.grants);
    assert_eq!(principal.expires_at, None);

    let other = store
        .create(
            &request("other", vec![Grant::new(Scope::Admin, "")]),
            &actor(),
        )
        .await
        .unwrap()
        .token;
    let wrong_secret = format!("{}{}", &created.token[..24], &other[24..]);
    let unknown_id = format!("strata_0123456789abcdef{}", &created.token[23..]);
    for refused in [
        wrong_secret.as_str(),
        unknown_id.as_str(),
        "",
        "strata_",
        "Bearer strata_x",
        &created.token[..66],
        &created.token[7..],
    ] {
        assert_eq!(
            store.authenticate(refused).await.unwrap(),
            None,
            "{refused:?}"
        );
    }
    // A refusal changes nothing for the real token.
    assert!(store.authenticate(&created.token).await.unwrap().is_some());
}

#[tokio::test]
async fn a_cache_hit_needs_no_database() {
    let (_db, pool) = migrated().await;
    let store = KeyStore::new(pool.clone());
    let token = store
        .create(&request("ci", vec![Grant::new(Scope::Write, "")]), &actor())
        .await
        .unwrap()
        .token;
    let other = store
        .create(
            &request("other", vec![Grant::new(Scope::Write, "")]),
            &actor(),
        )
        .await
        .unwrap()
        .token;
    let wrong = format!("{}{}", &token[..24], &other[24..]);
    let made_up = format!("strata_0123456789abcdef{}", &token[23..]);
    assert!(store.authenticate(&token).await.unwrap().is_some());
    assert!(store.authenticate(&made_up).await.unwrap().is_none());
    pool.close().await;
    // Within the second, from memory: the key, a wrong secret for it, and
    // the id the database did not know.
    assert!(store.authenticate(&token).await.unwrap().is_some());
    assert!(store.authenticate(&wrong).await.unwrap().is_none());
    assert!(store.authenticate(&made_up).await.unwrap().is_none());
    // A second later the key is read again, and the closed pool says so.
    wait_until(
        Duration::from_secs(3),
        "the entry to be read again",
        || async { store.authenticate(&token).await.is_err() },
    )
    .await;
}

#[tokio::test]
async fn an_expired_key_is_refused() {
    let (_db, pool) = migrated().await;
    let store = KeyStore::new(pool);
    let mut key = request("brief", vec![Grant::new(Scope::Read, "")]);
    key.expires_at = Some(Utc::now() + TimeDelta::seconds(1));
    let token = store.create(&key, &actor()).await.unwrap().token;
    assert!(store.authenticate(&token).await.unwrap().is_some());
    wait_until(Duration::from_secs(3), "the key to expire", || async {
        store.authenticate(&token).await.unwrap().is_none()
    })
    .await;
    assert!(Utc::now() >= key.expires_at.unwrap());

    key.name = "late".into();
    key.expires_at = Some(Utc::now() - TimeDelta::seconds(1));
    match store.create(&key, &actor()).await {
        Err(KeyError::Invalid(invalid)) => assert_eq!(invalid.field, "expires_at"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_key_revoked_on_another_node_is_refused_within_two_seconds() {
    let (db, pool) = migrated().await;
    let here = KeyStore::new(pool);
    let elsewhere = KeyStore::new(db.pool().await);
    let token = here
        .create(&request("ci", vec![Grant::new(Scope::Read, "")]), &actor())
        .await
        .unwrap()
        .token;
    assert!(here.authenticate(&token).await.unwrap().is_some());
    assert!(elsewhere.revoke("ci", &actor()).await.unwrap());
    let started = Instant::now();
    // No `forget`: the notification is not wired here, as if it were lost.
    wait_until(REVOCATION_BOUND, "the revocation seen", || async {
        here.authenticate(&token).await.unwrap().is_none()
    })
    .await;
    assert!(started.elapsed() <= REVOCATION_BOUND);
}

#[tokio::test]
async fn forget_refuses_a_revoked_key_at_once() {
    let (db, pool) = migrated().await;
    let here = KeyStore::new(pool);
    let elsewhere = KeyStore::new(db.pool().await);
    let token = here
        .create(&request("ci", vec![Grant::new(Scope::Read, "")]), &actor())
        .await
        .unwrap()
        .token;
    assert!(here.authenticate(&token).await.unwrap().is_some());
    assert!(elsewhere.revoke("ci", &actor()).await.unwrap());
    here.forget("ci");
    assert_eq!(here.authenticate(&token).await.unwrap(), None);
    // The revoking node's own cache forgot it too.
    assert_eq!(elsewhere.authenticate(&token).await.unwrap(), None);
}

#[tokio::test]
async fn a_revocation_is_announced_on_the_cluster_channel() {
    let (db, pool) = migrated().await;
    let store = KeyStore::new(pool);
    store
        .create(&request("ci", vec![Grant::new(Scope::Read, "")]), &actor())
        .await
        .unwrap();
    let mut listener = sqlx::postgres::PgListener::connect(db.url()).await.unwrap();
    listener.listen("strata_cluster").await.unwrap();
    assert!(store.revoke("ci", &actor()).await.unwrap());
    let heard = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .expect("a notification")
        .unwrap();
    assert_eq!(heard.payload(), "revoked:ci");
}

#[tokio::test]
async fn names_are_unique_and_revocation_keeps_its_first_time() {
    let (_db, pool) = migrated().await;
    let store = KeyStore::new(pool);
    store
        .create(&request("ci", vec![Grant::new(Scope::Read, "")]), &actor())
        .await
        .unwrap();
    match store
        .create(&request("ci", vec![Grant::new(Scope::Admin, "")]), &actor())
        .await
    {
        Err(KeyError::NameTaken { name }) => assert_eq!(name, "ci"),
        other => panic!("{other:?}"),
    }
    match store.create(&request("ci 2", vec![]), &actor()).await {
        Err(KeyError::Invalid(invalid)) => assert_eq!(invalid.field, "name"),
        other => panic!("{other:?}"),
    }
    assert!(!store.revoke("nobody", &actor()).await.unwrap());
    assert!(store.revoke("ci", &actor()).await.unwrap());
    let first = store.list().await.unwrap()[0].revoked_at.expect("revoked");
    assert!(
        store.revoke("ci", &actor()).await.unwrap(),
        "a repeat finds the key"
    );
    let keys = store.list().await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].revoked_at, Some(first));
    assert_eq!(keys[0].grants, vec![Grant::new(Scope::Read, "")]);
}
