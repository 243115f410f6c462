//! Browser sessions (API.md, "Security → Sessions"): an `EventSource`
//! cannot send an `Authorization` header, so `POST /auth/session` turns a
//! bearer API key into the cookie [`COOKIE`], which the browser then sends
//! by itself.
//!
//! # Design
//!
//! - The cookie's value is a secret of 32 random bytes from the operating
//!   system, in URL-safe base64 without padding (43 characters). The
//!   `sessions` table holds its **SHA-256**, never the secret, with the
//!   name of the key it was made from and its expiry: at most
//!   [`MAX_LIFETIME`] (12 h), and never after its key's.
//! - A session is its key's grants, not a copy of them: each use finds the
//!   session's key (its public id) and checks that key through the key
//!   store's cache ([`KeyStore::principal_of`]), so revoking the key ends
//!   its sessions on every node as fast as it refuses the key itself
//!   (at once on the revocation's notice, within a second without it).
//! - Sessions are cached like keys (`auth::cache`, [`CACHE_TTL`] = 1 s): an
//!   ended session is forgotten at once on the node that ended it, and
//!   read again, and found gone, within a second on every other node.
//! - The lookup is *by* the digest, in the cache's map and in the table's
//!   primary key. Unlike a key's secret no constant-time compare follows,
//!   and none is needed: a lookup's timing can say at most how close the
//!   digest of a guess came to a stored digest, and a digest close to
//!   another says nothing of the secret behind it (finding one that matches
//!   means finding a SHA-256 preimage).
//! - Expired sessions, and those of revoked keys, are deleted when the next
//!   session is started (by the same statement).
//!
//! [`KeyStore::principal_of`]: super::keys::KeyStore

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, TimeDelta, Utc};
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};

use super::Principal;
use super::cache::{Cache, Limits, Lookup};

/// The cookie's name.
pub const COOKIE: &str = "strata_session";

/// The longest a session lasts (API.md: at most 12 hours).
pub const MAX_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);

/// How long a session read from the database is trusted before it is read
/// again: the bound on how late another node sees that it ended.
pub const CACHE_TTL: Duration = Duration::from_secs(1);

/// Most sessions the cache holds; as many unknown ones are remembered
/// besides.
pub const CACHE_CAPACITY: usize = 10_000;

/// Random bytes of a session's secret.
const SECRET_BYTES: usize = 32;
/// Base64 characters of a secret: ⌈32 · 8 / 6⌉.
const SECRET_LEN: usize = 43;

/// The constraint on `sessions.key_name`.
const NO_SUCH_KEY: &str = "sessions_key_name_fkey";

/// Why a session could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The key expires (or was removed) before a session of it could last
    /// a second. HTTP `401`, like the key itself a moment later.
    #[error("the key {name:?} expires within a second; a session of it would not outlive it")]
    KeyEnding {
        /// The key's name.
        name: String,
    },
    /// The operating system gave no random bytes for the secret.
    #[error("cannot draw the session's secret from the operating system's random source")]
    Randomness(#[source] getrandom::Error),
    /// The database failed.
    #[error("the database failed while storing the session")]
    Database(#[from] sqlx::Error),
}

/// A session just started: what goes into its `Set-Cookie`.
pub struct NewSession {
    /// The cookie's value, shown to the browser only, never stored.
    pub secret: String,
    /// How long it lasts, in whole seconds: the cookie's `Max-Age`.
    pub max_age: u64,
    /// When it ends.
    pub expires_at: DateTime<Utc>,
}

impl fmt::Debug for NewSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewSession")
            .field("secret", &"…")
            .field("max_age", &self.max_age)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// A session as the cache holds it.
struct CachedSession {
    /// The public id of the key it was made from.
    key_id: String,
    /// When it ends.
    expires_at: DateTime<Utc>,
}

/// The sessions: started and ended in the database, and looked up on every
/// request that carries the cookie instead of a bearer token. Clones share
/// the pool and the cache.
#[derive(Clone)]
pub struct SessionStore {
    pool: PgPool,
    cache: Arc<Cache<CachedSession>>,
}

impl fmt::Debug for SessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionStore").finish_non_exhaustive()
    }
}

impl SessionStore {
    /// A store on `pool` (with the schema applied) and an empty cache.
    pub fn new(pool: PgPool) -> SessionStore {
        SessionStore {
            pool,
            cache: Arc::new(Cache::new(Limits {
                ttl: CACHE_TTL,
                capacity: CACHE_CAPACITY,
            })),
        }
    }

    /// Starts a session of the key `key` (a principal its bearer token
    /// proved) as of `now`: it lasts [`MAX_LIFETIME`], or until the key
    /// expires if that is sooner. Deletes the sessions that expired or
    /// whose key was revoked on the way.
    ///
    /// # Errors
    ///
    /// [`SessionError::KeyEnding`] when the key has less than a second
    /// left (or is gone); [`SessionError::Randomness`] or
    /// [`SessionError::Database`].
    pub async fn start(
        &self,
        key: &Principal,
        now: DateTime<Utc>,
    ) -> Result<NewSession, SessionError> {
        let ending = || SessionError::KeyEnding {
            name: key.name.clone(),
        };
        let longest = TimeDelta::from_std(MAX_LIFETIME).unwrap_or(TimeDelta::MAX);
        let lifetime = key.expires_at.map_or(longest, |at| (at - now).min(longest));
        // Whole seconds, so that the cookie's Max-Age and the row agree.
        let max_age = u64::try_from(lifetime.num_seconds()).unwrap_or(0);
        if max_age == 0 {
            return Err(ending());
        }
        let expires_at = now + TimeDelta::seconds(lifetime.num_seconds());
        let secret = Secret::generate().map_err(SessionError::Randomness)?;
        let inserted = sqlx::query(
            "WITH swept AS ( \
                 DELETE FROM sessions WHERE expires_at <= clock_timestamp() \
                 OR key_name IN (SELECT name FROM api_keys WHERE revoked_at IS NOT NULL)) \
             INSERT INTO sessions (secret_hash, key_name, expires_at) VALUES ($1, $2, $3)",
        )
        .bind(&secret.digest()[..])
        .bind(&key.name)
        .bind(expires_at)
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => Ok(NewSession {
                secret: secret.reveal(),
                max_age,
                expires_at,
            }),
            Err(sqlx::Error::Database(e)) if e.constraint() == Some(NO_SUCH_KEY) => Err(ending()),
            Err(e) => Err(SessionError::Database(e)),
        }
    }

    /// The public id of the key behind the session whose cookie holds
    /// `cookie`; `None` when the value is malformed, names no session, or
    /// the session has expired or ended. Whether the key still counts is
    /// the key store's to say.
    ///
    /// # Errors
    ///
    /// When the session had to be read and the database failed.
    pub(super) async fn key_of(&self, cookie: &str) -> Result<Option<String>, sqlx::Error> {
        let Some(secret) = Secret::parse(cookie) else {
            return Ok(None);
        };
        let digest = secret.digest();
        let id = hex(&digest);
        let session = match self.cache.get(&id, Instant::now()) {
            Lookup::Found(session) => Some(session),
            Lookup::Missing => None,
            Lookup::Unknown => self.load(&id, &digest).await?,
        };
        Ok(session
            .filter(|session| session.expires_at > Utc::now())
            .map(|session| session.key_id.clone()))
    }

    /// Ends the session whose cookie holds `cookie`, on every node: here
    /// at once, elsewhere within [`CACHE_TTL`]. Nothing happens for a
    /// value that names no session.
    ///
    /// # Errors
    ///
    /// When the database fails; the session goes on then.
    pub async fn end(&self, cookie: &str) -> Result<(), sqlx::Error> {
        let Some(secret) = Secret::parse(cookie) else {
            return Ok(());
        };
        let digest = secret.digest();
        let ended = sqlx::query("DELETE FROM sessions WHERE secret_hash = $1")
            .bind(&digest[..])
            .execute(&self.pool)
            .await?
            .rows_affected();
        // The route is open: a made-up cookie must not cost a scan of the
        // cache, nor stop the loads in flight from caching.
        if ended > 0 {
            let id = hex(&digest);
            self.cache.forget(|cached, _| cached == id);
        }
        Ok(())
    }

    /// Reads the unexpired session of `digest` into the cache (as `id`).
    async fn load(
        &self,
        id: &str,
        digest: &[u8; 32],
    ) -> Result<Option<Arc<CachedSession>>, sqlx::Error> {
        let epoch = self.cache.epoch();
        let row = sqlx::query(
            "SELECT k.key_id, s.expires_at FROM sessions s \
             JOIN api_keys k ON k.name = s.key_name \
             WHERE s.secret_hash = $1 AND s.expires_at > clock_timestamp()",
        )
        .bind(&digest[..])
        .fetch_optional(&self.pool)
        .await?;
        let session = row
            .map(|row| {
                Ok::<_, sqlx::Error>(Arc::new(CachedSession {
                    key_id: row.try_get("key_id")?,
                    expires_at: row.try_get("expires_at")?,
                }))
            })
            .transpose()?;
        self.cache.put(id, session.clone(), epoch, Instant::now());
        Ok(session)
    }
}

/// A session's secret. `Debug` shows nothing of it.
struct Secret([u8; SECRET_BYTES]);

impl Secret {
    /// A new secret from the operating system's random source.
    fn generate() -> Result<Secret, getrandom::Error> {
        let mut bytes = [0u8; SECRET_BYTES];
        getrandom::fill(&mut bytes)?;
        Ok(Secret(bytes))
    }

    /// Reads a cookie's value; `None` for anything but 43 characters of
    /// URL-safe base64 (the engine refuses padding and non-zero trailing
    /// bits, so one secret has one spelling).
    fn parse(text: &str) -> Option<Secret> {
        if text.len() != SECRET_LEN {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        Some(Secret(bytes.try_into().ok()?))
    }

    /// The SHA-256 of the secret: what the database holds.
    fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.0).into()
    }

    /// The cookie's value.
    fn reveal(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// A digest as the cache's id.
fn hex(digest: &[u8; 32]) -> String {
    use std::fmt::Write;
    digest
        .iter()
        .fold(String::with_capacity(64), |mut text, b| {
            let _ = write!(text, "{b:02x}");
            text
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_reads_back_as_itself_and_nothing_else_does() {
        let secret = Secret::generate().unwrap();
        let text = secret.reveal();
        assert_eq!(text.len(), SECRET_LEN, "{text}");
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
            "a cookie value needs no quoting: {text}"
        );
        assert_eq!(Secret::parse(&text).unwrap().0, secret.0);
        for bad in [
            String::new(),
            text[..42].to_owned(),
            format!("{text}A"),
            format!("{}=", &text[..42]),
            format!("{}+", &text[..42]),
            format!("{}é", &text[..41]),
            "strata_0123456789abcdef_".to_owned() + &text,
        ] {
            assert!(Secret::parse(&bad).is_none(), "{bad:?}");
        }
        assert_ne!(Secret::generate().unwrap().0, secret.0);
    }

    #[test]
    fn debug_shows_no_secret() {
        let secret = Secret::generate().unwrap();
        assert!(!format!("{secret:?}").contains(&secret.reveal()));
        let new = NewSession {
            secret: secret.reveal(),
            max_age: 1,
            expires_at: Utc::now(),
        };
        assert!(!format!("{new:?}").contains(&secret.reveal()));
    }

    #[test]
    fn the_cache_id_is_the_digest_in_hex() {
        let id = hex(&[0xab; 32]);
        assert_eq!(id.len(), 64);
        assert!(id.chars().all(|c| c == 'a' || c == 'b'));
    }
}
