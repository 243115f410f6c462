//! JWT bearer tokens (API.md, "Security" → "JWT"): the second way in,
//! beside API keys.
//!
//! A token is checked by [`jsonwebtoken`] (signature and the registered
//! claims; no crypto is written here) against the keys of a JSON Web Key Set
//! (`--jwt-jwks`, `jwks.rs`):
//!
//! - **Algorithms**: RS256, ES256 and EdDSA (Ed25519) only. `HS*` would make
//!   the verifier hold a secret that also signs, `none` signs nothing; both
//!   are refused before any key is looked at, as is a token whose algorithm
//!   does not fit the key it names (an RSA key never verifies an `ES256`
//!   token).
//! - **Keys** are selected by the token's `kid`; a set of one key also
//!   verifies tokens without a `kid`.
//! - **Claims**: `exp` (required), `nbf` (when present), `iss` (required,
//!   equal to `--jwt-issuer`), `aud` (required, naming `--jwt-audience`) and
//!   `sub` (required: the principal's name, which logs, quotas and the audit
//!   trail use). `exp` and `nbf` are checked with [`LEEWAY`] (30 s) for
//!   clocks that disagree a little.
//! - **Grants** come from the claim `--jwt-grants-claim` (default
//!   [`DEFAULT_GRANTS_CLAIM`]), a list of grant objects like an API key's
//!   (`[{"scope": "read", "streams": "account-"}]`). A token without the
//!   claim is valid and may do nothing (every route answers 403, saying so);
//!   a malformed claim makes the token invalid (401).
//!
//! # Key sets from a URL
//!
//! Fetched at start (with retries; a node that cannot get its keys does
//! not start), then again every [`REFRESH_EVERY`] (5 min), and when a token
//! names a `kid` the set does not hold — at most once per
//! [`REFETCH_AT_MOST_EVERY`] (30 s), so made-up key ids cannot make the node
//! hammer the issuer. A failed refresh keeps the keys fetched before and
//! logs a warning. An issuer rotates by publishing the new key beside the
//! old one, signing with it, and dropping the old key once its tokens have
//! expired.

mod jwks;
mod token;

use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};
use strata_core::auth::Grant;
use strata_core::names::validate_stream_name;

pub use self::jwks::JwksSource;
use self::jwks::{Found, KeySet};
pub use self::token::TokenError;
use self::token::{explain, name, peek_header};
use super::Principal;

/// The claim holding a token's grants unless `--jwt-grants-claim` says
/// otherwise.
pub const DEFAULT_GRANTS_CLAIM: &str = "strata_grants";

/// How far `exp` and `nbf` may be off: a token is taken until 30 s after
/// its `exp` and from 30 s before its `nbf`.
pub const LEEWAY: Duration = Duration::from_secs(30);

/// How often a key set fetched from a URL is fetched again.
pub const REFRESH_EVERY: Duration = Duration::from_secs(300);

/// The least time between two fetches caused by tokens with unknown key ids.
pub const REFETCH_AT_MOST_EVERY: Duration = Duration::from_secs(30);

/// Most grants one token may hold (as for a key).
pub const MAX_GRANTS: usize = super::keys::MAX_GRANTS;

/// Fetches of a key set URL at start before the node gives up.
const START_ATTEMPTS: u32 = 5;

/// How JWTs are checked (the `--jwt-*` flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Where the keys are.
    pub jwks: JwksSource,
    /// The `iss` every token must carry.
    pub issuer: String,
    /// The audience every token's `aud` must name.
    pub audience: String,
    /// The claim holding the grants.
    pub grants_claim: String,
}

/// The key set could not be had at start.
#[derive(Debug, thiserror::Error)]
#[error("--jwt-jwks {from}: {message}")]
pub struct JwksError {
    /// The file or URL.
    from: String,
    /// What went wrong, and what to do.
    message: String,
}

/// Checks JWTs; clones share the keys.
#[derive(Clone)]
pub struct JwtVerifier {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("jwks", &self.inner.settings.jwks.to_string())
            .finish_non_exhaustive()
    }
}

struct Inner {
    settings: Settings,
    keys: RwLock<Arc<KeySet>>,
    /// One per algorithm taken, in the order RS256, ES256, EdDSA.
    validations: [Validation; 3],
    remote: Option<Remote>,
}

/// A key set fetched from a URL.
struct Remote {
    url: url::Url,
    client: reqwest::Client,
    /// When a token with an unknown `kid` last caused a fetch.
    last_refetch: tokio::sync::Mutex<Option<Instant>>,
}

const ALGORITHMS: [Algorithm; 3] = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

impl JwtVerifier {
    /// Reads the key set (a file) or fetches it (a URL, retried a few
    /// times); for a URL, starts refreshing it every [`REFRESH_EVERY`] for
    /// as long as the verifier lives.
    ///
    /// # Errors
    ///
    /// [`JwksError`] naming `--jwt-jwks`: the file cannot be read, the URL
    /// cannot be fetched, or the set holds no usable key.
    pub async fn start(settings: Settings) -> Result<JwtVerifier, JwksError> {
        let failed = |message: String| JwksError {
            from: settings.jwks.to_string(),
            message,
        };
        let ((keys, skipped), remote) = match &settings.jwks {
            JwksSource::File(path) => {
                let bytes = tokio::fs::read(path).await.map_err(|e| {
                    failed(format!(
                        "cannot read the file ({e}); give the path of a JWKS file or an \
                         https:// URL"
                    ))
                })?;
                let set = jwks::parse(&bytes)
                    .map_err(|e| failed(format!("the file is not a usable key set: {e}")))?;
                (set, None)
            }
            JwksSource::Url(url) => {
                let client = jwks::client();
                let set = fetch_at_start(&client, url).await.map_err(failed)?;
                let remote = Remote {
                    url: url.clone(),
                    client,
                    last_refetch: tokio::sync::Mutex::new(None),
                };
                (set, Some(remote))
            }
        };
        for why in &skipped {
            tracing::warn!(jwks = %settings.jwks, "{why}");
        }
        tracing::info!(jwks = %settings.jwks, keys = ?keys.ids(), "JWT keys loaded");
        let validation = |algorithm| {
            let mut validation = Validation::new(algorithm);
            validation.leeway = LEEWAY.as_secs();
            validation.validate_nbf = true;
            validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            validation.set_issuer(&[&settings.issuer]);
            validation.set_audience(&[&settings.audience]);
            validation
        };
        let inner = Arc::new(Inner {
            validations: ALGORITHMS.map(validation),
            keys: RwLock::new(Arc::new(keys)),
            remote,
            settings,
        });
        if inner.remote.is_some() {
            tokio::spawn(refresh_periodically(Arc::downgrade(&inner)));
        }
        Ok(JwtVerifier { inner })
    }

    /// The principal of `token`: its `sub`, its grants, its `exp`.
    ///
    /// # Errors
    ///
    /// [`TokenError`], saying why the token is refused.
    pub async fn verify(&self, token: &str) -> Result<Principal, TokenError> {
        let (alg, kid) = peek_header(token)?;
        let Some(index) = ALGORITHMS.iter().position(|a| name(*a) == alg) else {
            return Err(TokenError::Algorithm(alg));
        };
        let algorithm = ALGORITHMS[index];
        let keys = self.inner.current_keys();
        let key = match keys.find(kid.as_deref()) {
            Found::Key(key) => Arc::clone(key),
            Found::Ambiguous(n) => return Err(TokenError::NoKeyId(n)),
            Found::Unknown => {
                let unknown = kid.clone().unwrap_or_default();
                self.inner.refetch_for(&unknown).await;
                match self.inner.current_keys().find(Some(&unknown)) {
                    Found::Key(key) => Arc::clone(key),
                    _ => return Err(TokenError::UnknownKey(unknown)),
                }
            }
        };
        if key.algorithm != algorithm {
            return Err(TokenError::KeyMismatch {
                kid: kid.unwrap_or_default(),
                alg,
                key: name(key.algorithm).to_owned(),
            });
        }
        let data = jsonwebtoken::decode::<Map<String, Value>>(
            token,
            &key.key,
            &self.inner.validations[index],
        )
        .map_err(|e| explain(&e, token))?;
        principal(data.claims, &self.inner.settings.grants_claim)
    }

    /// The claim that holds the grants (for the messages of refusals).
    pub fn grants_claim(&self) -> &str {
        &self.inner.settings.grants_claim
    }
}

impl Inner {
    fn current_keys(&self) -> Arc<KeySet> {
        Arc::clone(&self.keys.read().expect("unpoisoned"))
    }

    /// Fetches the set again (a URL only), keeping the old keys on failure.
    async fn refresh(&self, why: &str) {
        let Some(remote) = &self.remote else { return };
        match jwks::fetch(&remote.client, &remote.url).await {
            Ok((keys, skipped)) => {
                for skip in &skipped {
                    tracing::warn!(jwks = %remote.url, "{skip}");
                }
                tracing::info!(jwks = %remote.url, keys = ?keys.ids(), why, "JWT keys fetched again");
                *self.keys.write().expect("unpoisoned") = Arc::new(keys);
            }
            Err(error) => tracing::warn!(
                jwks = %remote.url,
                why,
                "the JWT key set could not be fetched again ({error}); the keys fetched before \
                 stay in use"
            ),
        }
    }

    /// Fetches the set again for a token naming the unknown `kid`, unless
    /// that was done less than [`REFETCH_AT_MOST_EVERY`] ago. Callers that
    /// arrive during a fetch wait for it and then find its keys.
    async fn refetch_for(&self, kid: &str) {
        let Some(remote) = &self.remote else { return };
        let mut last = remote.last_refetch.lock().await;
        if last.is_some_and(|at| at.elapsed() < REFETCH_AT_MOST_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        self.refresh(&format!("a token named the unknown kid {kid:?}"))
            .await;
    }
}

/// The first fetch of a key set URL, retried with growing pauses.
async fn fetch_at_start(
    client: &reqwest::Client,
    url: &url::Url,
) -> Result<(KeySet, Vec<String>), String> {
    let mut pause = Duration::from_millis(500);
    let mut attempt = 1;
    loop {
        match jwks::fetch(client, url).await {
            Ok(set) => return Ok(set),
            Err(error) if attempt >= START_ATTEMPTS => {
                return Err(format!(
                    "{error} (after {START_ATTEMPTS} attempts); check the URL and that the \
                     issuer serves its key set there"
                ));
            }
            Err(error) => {
                tracing::warn!(jwks = %url, attempt, "the JWT key set could not be fetched ({error}); trying again");
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
        }
    }
}

/// Fetches the set every [`REFRESH_EVERY`] while the verifier lives.
async fn refresh_periodically(inner: Weak<Inner>) {
    let start = tokio::time::Instant::now() + REFRESH_EVERY;
    let mut every = tokio::time::interval_at(start, REFRESH_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        inner.refresh("scheduled").await;
    }
}

/// The principal of verified `claims`.
fn principal(mut claims: Map<String, Value>, grants_claim: &str) -> Result<Principal, TokenError> {
    let name = match claims.get("sub") {
        Some(Value::String(sub)) if !sub.is_empty() => sub.clone(),
        _ => return Err(TokenError::BadClaim("sub".into())),
    };
    let expires_at = claims
        .get("exp")
        .and_then(Value::as_i64)
        .and_then(|exp| DateTime::<Utc>::from_timestamp(exp, 0));
    let grants = match claims.remove(grants_claim) {
        None => Vec::new(),
        Some(value) => grants(value, grants_claim)?,
    };
    Ok(Principal {
        name,
        grants,
        expires_at,
    })
}

/// The grants of the grants claim's `value`.
fn grants(value: Value, claim: &str) -> Result<Vec<Grant>, TokenError> {
    let malformed = |detail: String| TokenError::MalformedGrants {
        claim: claim.to_owned(),
        detail,
    };
    let grants: Vec<Grant> = serde_json::from_value(value).map_err(|e| malformed(e.to_string()))?;
    if grants.len() > MAX_GRANTS {
        return Err(malformed(format!(
            "{} grants, at most {MAX_GRANTS} are taken",
            grants.len()
        )));
    }
    for (i, grant) in grants.iter().enumerate() {
        if !grant.streams.is_empty() {
            validate_stream_name(&grant.streams)
                .map_err(|e| malformed(format!("grant {i}'s streams: {e}")))?;
        }
    }
    Ok(grants)
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use strata_core::auth::Scope;

    use super::*;

    #[test]
    fn the_principal_is_the_subject_with_the_claimed_grants() {
        let claims = json!({"sub": "alice", "exp": 2_000_000_000,
            "g": [{"scope": "read", "streams": "account-"}, {"scope": "write"}]});
        let Value::Object(claims) = claims else {
            unreachable!()
        };
        let p = principal(claims.clone(), "g").unwrap();
        assert_eq!(p.name, "alice");
        assert_eq!(
            p.grants,
            [
                Grant::new(Scope::Read, "account-"),
                Grant::new(Scope::Write, "")
            ]
        );
        assert_eq!(p.expires_at.unwrap().timestamp(), 2_000_000_000);
        let none = principal(claims, "strata_grants").unwrap();
        assert!(none.grants.is_empty());
    }

    #[test]
    fn a_malformed_grants_claim_says_what_is_wrong() {
        for (value, says) in [
            (json!("read"), "invalid type"),
            (json!([{"scope": "reed"}]), "unknown variant"),
            (
                json!([{"scope": "read", "streams": "a b"}]),
                "grant 0's streams",
            ),
        ] {
            let err = grants(value, "strata_grants").unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains("`strata_grants` claim is malformed"),
                "{text}"
            );
            assert!(text.contains(says), "{text}");
        }
    }
}
