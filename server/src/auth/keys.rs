//! API keys: stored as a hash of their secret, checked against an
//! in-memory cache that revocations clear on every node.
//!
//! # Design
//!
//! A token is `strata_<id>_<secret>` (see `token.rs`): a 16-hex-character
//! id that says which key is meant and is no secret, and 32 random bytes of
//! secret in URL-safe base64. The `api_keys` table holds the id and the
//! **SHA-256** of the secret, never the token: whoever reads the table (a
//! backup, a replica, a leaked dump) holds no working key.
//!
//! - *Why SHA-256 and not a slow hash* (bcrypt, Argon2): slow hashes make
//!   guessing a *password*, a secret with little entropy, expensive. The
//!   secret here is 256 bits drawn from the operating system's random source:
//!   there is nothing to guess, and a preimage of SHA-256 is out of reach. A
//!   fast hash lets every request be checked in about a microsecond.
//! - *Why a constant-time compare*: comparing byte by byte and stopping at
//!   the first difference tells, by its timing, how much of a guess was
//!   right. Comparing SHA-256 digests already hides that (a prefix of a
//!   digest says nothing of the secret), and [`subtle`] removes the leak
//!   altogether for the cost of 32 byte operations.
//!
//! # The cache
//!
//! [`KeyStore::authenticate`] is on every request's path. A key read from
//! the database is trusted for [`CACHE_TTL`] (1 s): a hit costs a hash-map
//! lookup, one SHA-256 and a constant-time compare, and no query. Expiry is
//! checked against the clock on every hit. An older entry is read again, so
//! a revocation is seen by every node within about a second even when its
//! notification is lost; [`KeyStore::revoke`] also sends
//! [`ClusterNotice::KeyRevoked`] in its transaction, on which each node's
//! listener calls [`KeyStore::forget`] and refuses the key at once. Ids the
//! database does not know are remembered as misses for the same second, in
//! a map of their own (bounded, like the keys' map, at [`CACHE_CAPACITY`]),
//! so made-up tokens cost one query per id and second and never keep a real
//! key out of the cache. The cache is `auth::cache`, shared in shape with
//! the sessions' ([`super::sessions`]); a session's every use checks its
//! key here too (`KeyStore::principal_of`), so a revocation ends the
//! key's sessions with it.

mod token;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::types::Json;
use sqlx::{PgPool, Row};
use strata_core::auth::{CreateKey, CreatedKey, Grant, KeyInfo};
use strata_core::names::{validate_resource_name, validate_stream_name};
use strata_pg::audit::{self, Actor};
use strata_pg::notify::{self, Channel, ClusterNotice};

use self::token::{SecretHash, Token};
use super::Principal;
use super::cache::{Cache, Limits, Lookup};

/// What every API key token starts with; a bearer token without it is not
/// a key (a JWT, say).
pub const TOKEN_PREFIX: &str = token::PREFIX;

/// How long a key read from the database is trusted before it is read
/// again: the bound on how late a node sees a revocation whose notification
/// it missed.
pub const CACHE_TTL: Duration = Duration::from_secs(1);

/// Most keys the cache holds; as many unknown ids are remembered besides.
pub const CACHE_CAPACITY: usize = 10_000;

/// Most grants one key may hold.
pub const MAX_GRANTS: usize = 100;

/// The constraint on `api_keys.name`.
const NAME_TAKEN: &str = "api_keys_pkey";
/// The constraint on `api_keys.key_id`.
const ID_TAKEN: &str = "api_keys_key_id_key";

/// Why a key could not be created.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key of this name exists (revoked keys keep their names). HTTP `409`.
    #[error(
        "a key named {name:?} exists already (a revoked key keeps its name); choose another name"
    )]
    NameTaken {
        /// The name asked for.
        name: String,
    },
    /// The request breaks a rule. HTTP `400`.
    #[error(transparent)]
    Invalid(#[from] InvalidKey),
    /// The operating system gave no random bytes for the secret.
    #[error("cannot draw the key's secret from the operating system's random source")]
    Randomness(#[source] getrandom::Error),
    /// The database failed.
    #[error("the database failed while storing the key")]
    Database(#[from] sqlx::Error),
}

/// A key to be created that breaks a rule ([`validate`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidKey {
    /// The field at fault: `name`, `grants`, `grants[2].streams`,
    /// `expires_at`.
    pub field: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl InvalidKey {
    fn new(field: impl Into<String>, message: impl Into<String>) -> InvalidKey {
        InvalidKey {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Checks a key to be created against the rules, as of `now`: a name of
/// 1–100 characters of `A-Z a-z 0-9 _ - .`, 1 to [`MAX_GRANTS`] grants, each
/// over a stream-name prefix (`""` or what may start a stream name), and an
/// expiry after `now`. [`KeyStore::create`] calls it; the command line calls
/// it before connecting.
///
/// # Errors
///
/// [`InvalidKey`] naming the first field at fault.
pub fn validate(key: &CreateKey, now: DateTime<Utc>) -> Result<(), InvalidKey> {
    validate_resource_name(&key.name).map_err(|e| InvalidKey::new("name", format!("key {e}")))?;
    if key.grants.is_empty() {
        return Err(InvalidKey::new(
            "grants",
            "a key needs at least one grant, a scope over a stream prefix such as \
             {\"scope\": \"read\", \"streams\": \"account-\"} (`--grant read:account-`)",
        ));
    }
    if key.grants.len() > MAX_GRANTS {
        return Err(InvalidKey::new(
            "grants",
            format!(
                "{} grants; a key holds at most {MAX_GRANTS}: merge prefixes, or give the \
                 holder several keys",
                key.grants.len()
            ),
        ));
    }
    for (i, grant) in key.grants.iter().enumerate() {
        if grant.streams.is_empty() {
            continue;
        }
        validate_stream_name(&grant.streams).map_err(|e| {
            InvalidKey::new(
                format!("grants[{i}].streams"),
                format!(
                    "{e}; a grant's streams is the start of the stream names it covers, \
                     \"\" for every stream"
                ),
            )
        })?;
    }
    if let Some(at) = key.expires_at
        && at <= now
    {
        return Err(InvalidKey::new(
            "expires_at",
            format!(
                "{} is not in the future; give a later time, or none for a key that does not \
                 expire",
                at.to_rfc3339()
            ),
        ));
    }
    Ok(())
}

/// The API keys: created, listed and revoked in the database, and checked
/// on every request through a cache. Clones share the pool and the cache.
#[derive(Clone)]
pub struct KeyStore {
    pool: PgPool,
    cache: Arc<Cache<CachedKey>>,
}

/// A key as the cache holds it: what a request needs to be checked, and
/// the principal it then carries (shared, so a hit allocates nothing).
struct CachedKey {
    /// The SHA-256 of its secret.
    secret_hash: SecretHash,
    /// Its name, grants and expiry.
    principal: Arc<Principal>,
}

impl CachedKey {
    /// Whether the key has not expired at `now`.
    fn current(&self, now: DateTime<Utc>) -> bool {
        self.principal.expires_at.is_none_or(|at| at > now)
    }
}

impl fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyStore").finish_non_exhaustive()
    }
}

impl KeyStore {
    /// The database the keys are in (the sessions' too).
    pub(super) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A store on `pool` (with the schema applied) and an empty cache.
    pub fn new(pool: PgPool) -> KeyStore {
        KeyStore {
            pool,
            cache: Arc::new(Cache::new(Limits {
                ttl: CACHE_TTL,
                capacity: CACHE_CAPACITY,
            })),
        }
    }

    /// Creates a key and returns its token, the only time it is shown; the
    /// audit trail's `KeyCreated` entry, naming `actor`, commits with it.
    ///
    /// # Errors
    ///
    /// [`KeyError::Invalid`] (see [`validate`]), [`KeyError::NameTaken`],
    /// [`KeyError::Randomness`] or [`KeyError::Database`].
    pub async fn create(&self, key: &CreateKey, actor: &Actor) -> Result<CreatedKey, KeyError> {
        validate(key, Utc::now())?;
        // 64 random bits of id: a collision is a curiosity, but costs only
        // another draw.
        let mut attempts = 0;
        let token = loop {
            attempts += 1;
            let token = Token::generate().map_err(KeyError::Randomness)?;
            let mut tx = self.pool.begin().await.map_err(KeyError::Database)?;
            let inserted = sqlx::query(
                "INSERT INTO api_keys (name, key_id, secret_hash, grants, expires_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&key.name)
            .bind(token.id())
            .bind(&token.secret_hash()[..])
            .bind(Json(&key.grants))
            .bind(key.expires_at)
            .execute(&mut *tx)
            .await;
            match inserted {
                Ok(_) => {
                    let what = json!({
                        "name": key.name,
                        "grants": key.grants,
                        "expires_at": key.expires_at,
                    });
                    audit::record(&mut tx, actor, "KeyCreated", &what)
                        .await
                        .map_err(KeyError::Database)?;
                    tx.commit().await.map_err(KeyError::Database)?;
                    break token;
                }
                Err(sqlx::Error::Database(e)) if e.constraint() == Some(NAME_TAKEN) => {
                    return Err(KeyError::NameTaken {
                        name: key.name.clone(),
                    });
                }
                Err(sqlx::Error::Database(e))
                    if e.constraint() == Some(ID_TAKEN) && attempts < 3 => {}
                Err(e) => return Err(KeyError::Database(e)),
            }
        };
        Ok(CreatedKey {
            name: key.name.clone(),
            token: token.reveal(),
            grants: key.grants.clone(),
            expires_at: key.expires_at,
        })
    }

    /// Every key, revoked and expired ones included, by name. Never a token
    /// or a hash.
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub async fn list(&self) -> Result<Vec<KeyInfo>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT name, grants, created_at, expires_at, revoked_at FROM api_keys ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(KeyInfo {
                    name: row.try_get("name")?,
                    grants: row.try_get::<Json<Vec<Grant>>, _>("grants")?.0,
                    created_at: row.try_get("created_at")?,
                    expires_at: row.try_get("expires_at")?,
                    revoked_at: row.try_get("revoked_at")?,
                })
            })
            .collect()
    }

    /// Revokes the key called `name` and tells every node
    /// ([`ClusterNotice::KeyRevoked`], sent in the same transaction, with
    /// the audit trail's `KeyRevoked` entry naming `actor`); this node's
    /// cache forgets it at once. A second revocation writes nothing.
    ///
    /// Returns whether such a key exists: `true` also when it was revoked
    /// before (the first revocation's time is kept), so that a repeated
    /// `DELETE` is answered like the first; `false` when there is no key of
    /// that name.
    ///
    /// # Errors
    ///
    /// When the database fails; nothing is revoked then.
    pub async fn revoke(&self, name: &str, actor: &Actor) -> Result<bool, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let revoked_now = sqlx::query(
            "UPDATE api_keys SET revoked_at = clock_timestamp() \
             WHERE name = $1 AND revoked_at IS NULL",
        )
        .bind(name)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        let found = revoked_now
            || sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM api_keys WHERE name = $1)")
                .bind(name)
                .fetch_one(&mut *tx)
                .await?;
        if revoked_now {
            let notice = ClusterNotice::KeyRevoked(name.to_owned());
            notify::send(&mut *tx, Channel::Cluster, &notice.payload()).await?;
            audit::record(&mut tx, actor, "KeyRevoked", &json!({ "name": name })).await?;
        }
        tx.commit().await?;
        self.forget(name);
        Ok(found)
    }

    /// The principal of a bearer `token`, or `None` when it is malformed,
    /// names no key, holds the wrong secret, or its key is revoked or
    /// expired. Served from the cache when the key was read less than
    /// [`CACHE_TTL`] ago.
    ///
    /// # Errors
    ///
    /// When the key had to be read and the database failed.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Arc<Principal>>, sqlx::Error> {
        let Some(token) = Token::parse(token) else {
            return Ok(None);
        };
        Ok(self
            .current(token.id())
            .await?
            .filter(|key| token.matches(&key.secret_hash))
            .map(|key| Arc::clone(&key.principal)))
    }

    /// The principal of the unrevoked, unexpired key whose public id is
    /// `id`, without a secret: for a session, whose secret was checked on
    /// its own and which holds its key's id. Cached like
    /// [`KeyStore::authenticate`], so a revocation reaches it as fast.
    ///
    /// # Errors
    ///
    /// When the key had to be read and the database failed.
    pub(super) async fn principal_of(
        &self,
        id: &str,
    ) -> Result<Option<Arc<Principal>>, sqlx::Error> {
        Ok(self
            .current(id)
            .await?
            .map(|key| Arc::clone(&key.principal)))
    }

    /// The key of `id` from the cache or the database, if it is neither
    /// revoked nor expired.
    async fn current(&self, id: &str) -> Result<Option<Arc<CachedKey>>, sqlx::Error> {
        let key = match self.cache.get(id, Instant::now()) {
            Lookup::Found(key) => Some(key),
            Lookup::Missing => None,
            Lookup::Unknown => self.load(id).await?,
        };
        Ok(key.filter(|key| key.current(Utc::now())))
    }

    /// Drops the key called `name` from this node's cache, so that its next
    /// use reads the database: what a node does on hearing
    /// [`ClusterNotice::KeyRevoked`].
    pub fn forget(&self, name: &str) {
        self.cache.forget(|_, key| key.principal.name == name);
    }

    /// Reads the unrevoked key of `id` into the cache.
    async fn load(&self, id: &str) -> Result<Option<Arc<CachedKey>>, sqlx::Error> {
        let epoch = self.cache.epoch();
        let row = sqlx::query(
            "SELECT name, secret_hash, grants, expires_at FROM api_keys \
             WHERE key_id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let key = match row {
            Some(row) => {
                let hash: Vec<u8> = row.try_get("secret_hash")?;
                // The table's CHECK makes it 32 bytes; anything else
                // matches no secret.
                hash.try_into().ok().map(|secret_hash| {
                    Ok::<_, sqlx::Error>(Arc::new(CachedKey {
                        secret_hash,
                        principal: Arc::new(Principal {
                            name: row.try_get("name")?,
                            grants: row.try_get::<Json<Vec<Grant>>, _>("grants")?.0,
                            expires_at: row.try_get("expires_at")?,
                        }),
                    }))
                })
            }
            None => None,
        }
        .transpose()?;
        self.cache.put(id, key.clone(), epoch, Instant::now());
        Ok(key)
    }
}

#[cfg(test)]
mod tests;
