//! Who is asking and what they may do: API keys ([`keys`]), JWTs
//! ([`jwt`]), browser sessions made from keys ([`sessions`]), and the
//! principal a request carries once its [`Credentials`] are checked. Keys
//! and sessions cache what they read for a second in the same kind of
//! bounded cache (`cache.rs`).
//!
//! `auth` imports nothing else of the server; `http` (the one
//! authorization decision) and the command line use it.

use std::sync::{Arc, LazyLock};

use chrono::{DateTime, Utc};
use strata_core::auth::{Grant, Scope};

mod cache;
pub mod jwt;
pub mod keys;
pub mod sessions;

use jwt::{JwtVerifier, TokenError};
use keys::KeyStore;
use sessions::{NewSession, SessionError, SessionStore};

/// What a request presents to say who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credentials<'a> {
    /// `Authorization: Bearer <token>`: an API key.
    Bearer(&'a str),
    /// The value of the [`sessions::COOKIE`] cookie, from a request without
    /// a bearer token (a browser's `EventSource`, say).
    Session(&'a str),
}

/// The holder of checked credentials: a key or a token's subject, with its
/// grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Who the logs and the audit trail name: the key's name or the JWT's
    /// subject.
    pub name: String,
    /// What it may do.
    pub grants: Vec<Grant>,
    /// When its credentials stop working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
}

/// How a node checks credentials.
#[derive(Clone)]
pub struct Authenticator {
    keys: KeyStore,
    sessions: SessionStore,
    /// `Some`: bearer tokens that are not API keys are JWTs (`--jwt-jwks`).
    jwt: Option<JwtVerifier>,
    /// `false`: `--auth none`, everyone is [`Principal::anonymous`].
    required: bool,
    public_metrics: bool,
}

impl Authenticator {
    /// No authentication (`--auth none`): every request is
    /// [`Principal::anonymous`]; `keys` is still there to be managed.
    pub fn open(keys: KeyStore) -> Authenticator {
        Authenticator {
            sessions: SessionStore::new(keys.pool().clone()),
            keys,
            jwt: None,
            required: false,
            public_metrics: true,
        }
    }

    /// API keys from `keys` on every request; `/metrics` open when
    /// `public_metrics`.
    pub fn keys(keys: KeyStore, public_metrics: bool) -> Authenticator {
        Authenticator {
            sessions: SessionStore::new(keys.pool().clone()),
            keys,
            jwt: None,
            required: true,
            public_metrics,
        }
    }

    /// Also takes JWTs checked by `jwt`: a bearer token that does not start
    /// with `strata_` is one.
    pub fn with_jwt(mut self, jwt: JwtVerifier) -> Authenticator {
        self.jwt = Some(jwt);
        self
    }

    /// The node's keys.
    pub fn key_store(&self) -> &KeyStore {
        &self.keys
    }

    /// The node's browser sessions.
    pub fn sessions(&self) -> &SessionStore {
        &self.sessions
    }

    /// Whether requests need credentials at all (`false`: `--auth none`).
    pub fn required(&self) -> bool {
        self.required
    }

    /// Whether `/metrics` needs no credentials.
    pub fn public_metrics(&self) -> bool {
        self.public_metrics
    }

    /// Who `credentials` (if the request had any) belong to; `None` when
    /// they are missing, or an API key or session that is unknown, revoked
    /// or expired. A bearer token without the `strata_` prefix is a JWT
    /// when JWTs are taken, else unknown. A session is its key's principal,
    /// and only while the key itself would be accepted.
    ///
    /// # Errors
    ///
    /// [`AuthError::Token`]: a JWT was refused (the error says why);
    /// [`AuthError::Database`]: the database failed while a key or session
    /// was looked up.
    pub async fn authenticate(
        &self,
        credentials: Option<Credentials<'_>>,
    ) -> Result<Option<Arc<Principal>>, AuthError> {
        static ANONYMOUS: LazyLock<Arc<Principal>> =
            LazyLock::new(|| Arc::new(Principal::anonymous()));
        match (credentials, &self.jwt) {
            _ if !self.required => Ok(Some(Arc::clone(&ANONYMOUS))),
            (None, _) => Ok(None),
            (Some(Credentials::Bearer(token)), Some(jwt))
                if !token.starts_with(keys::TOKEN_PREFIX) =>
            {
                Ok(Some(Arc::new(jwt.verify(token).await?)))
            }
            (Some(Credentials::Bearer(token)), _) => Ok(self.keys.authenticate(token).await?),
            (Some(Credentials::Session(cookie)), _) => match self.sessions.key_of(cookie).await? {
                Some(key_id) => Ok(self.keys.principal_of(&key_id).await?),
                None => Ok(None),
            },
        }
    }

    /// Starts a browser session of the API key `token`: `None` when the
    /// token is no valid key (a session is made from a key, never from a
    /// session or a JWT).
    ///
    /// # Errors
    ///
    /// See [`SessionStore::start`]; a failed key lookup is
    /// [`SessionError::Database`].
    pub async fn start_session(&self, token: &str) -> Result<Option<NewSession>, SessionError> {
        match self.keys.authenticate(token).await? {
            Some(key) => self.sessions.start(&key, Utc::now()).await.map(Some),
            None => Ok(None),
        }
    }

    /// What to add to a `403` for `principal`: a JWT whose token had no
    /// grants claim holds no grants at all, and its holder should hear why.
    pub fn forbidden_hint(&self, principal: &Principal) -> Option<String> {
        let jwt = self.jwt.as_ref()?;
        principal.grants.is_empty().then(|| {
            format!(
                "it holds no grants at all: its token has no (or an empty) `{}` claim; have \
                 the token's issuer add one, a list like [{{\"scope\": \"read\", \"streams\": \
                 \"account-\"}}]",
                jwt.grants_claim()
            )
        })
    }

    /// Drops what this node remembers of the key `name` (it was revoked on
    /// some node).
    pub fn forget(&self, name: &str) {
        self.keys.forget(name);
    }
}

/// Why credentials could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A JWT was refused: a `401` whose message says why.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The database failed while an API key or a session was looked up.
    #[error("the database failed while an API key or a session was looked up")]
    Database(#[from] sqlx::Error),
}

/// What a request acts on, for the grant check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// One stream.
    Stream(&'a str),
    /// Every stream of a category (`$all` with `category=`): the stream
    /// named like the category and those starting with `category-`.
    Category(&'a str),
    /// Every stream (an unfiltered `$all` read).
    Every,
    /// The node itself: keys, cluster, subscription and projection
    /// management.
    Node,
}

impl Principal {
    /// The principal of a node without authentication (`--auth none`): it
    /// may do everything.
    pub fn anonymous() -> Principal {
        Principal {
            name: "anonymous".into(),
            grants: vec![Grant::new(Scope::Admin, "")],
            expires_at: None,
        }
    }

    /// Whether one of the grants allows `scope` on `target`.
    pub fn may(&self, scope: Scope, target: Target<'_>) -> bool {
        self.grants.iter().any(|grant| covers(grant, scope, target))
    }

    /// The stream prefixes a `scope` grant gives (an `admin` grant gives
    /// every scope over its streams).
    pub fn prefixes(&self, scope: Scope) -> impl Iterator<Item = &str> {
        self.grants
            .iter()
            .filter(move |g| g.scope == scope || g.scope == Scope::Admin)
            .map(|g| g.streams.as_str())
    }
}

/// Whether `grant` allows `scope` on `target`.
///
/// An `admin` grant allows every scope on the streams it covers; the node
/// itself and the reserved `$` streams (`$audit`) are covered only by an
/// `admin` grant over every stream. A prefix covers a category when every
/// stream of the category starts with it: `acc` and `account-` both cover
/// `account` (API.md: a grant `account-` covers `category=account`; a
/// stream named exactly `account`, if there is one, is in that category
/// too and is not yet left out of such a read — a known corner).
fn covers(grant: &Grant, scope: Scope, target: Target<'_>) -> bool {
    let admin = grant.scope == Scope::Admin;
    if grant.scope != scope && !admin {
        return false;
    }
    let prefix = grant.streams.as_str();
    match target {
        Target::Node => admin && prefix.is_empty(),
        Target::Every => prefix.is_empty(),
        Target::Stream(stream) if stream.starts_with('$') => admin && prefix.is_empty(),
        Target::Stream(stream) => stream.starts_with(prefix),
        Target::Category(category) => {
            category.starts_with(prefix)
                || prefix
                    .strip_prefix(category)
                    .is_some_and(|rest| rest == "-")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holding(grants: &[&str]) -> Principal {
        Principal {
            name: "k".into(),
            grants: grants.iter().map(|g| g.parse().unwrap()).collect(),
            expires_at: None,
        }
    }

    #[test]
    fn a_prefix_covers_the_streams_that_start_with_it() {
        let key = holding(&["read:account-"]);
        assert!(key.may(Scope::Read, Target::Stream("account-1")));
        assert!(!key.may(Scope::Read, Target::Stream("accounts")));
        assert!(!key.may(Scope::Write, Target::Stream("account-1")));
        assert!(!key.may(Scope::Read, Target::Every));
        assert!(!key.may(Scope::Read, Target::Node));
    }

    #[test]
    fn a_prefix_covers_a_category_when_it_covers_all_its_streams() {
        assert!(holding(&["read:account-"]).may(Scope::Read, Target::Category("account")));
        assert!(holding(&["read:acc"]).may(Scope::Read, Target::Category("account")));
        assert!(holding(&["read"]).may(Scope::Read, Target::Category("account")));
        assert!(!holding(&["read:account-1"]).may(Scope::Read, Target::Category("account")));
        assert!(!holding(&["read:account-"]).may(Scope::Read, Target::Category("acc")));
        assert!(!holding(&["read:accounts"]).may(Scope::Read, Target::Category("account")));
    }

    #[test]
    fn admin_is_every_scope_and_alone_reaches_the_node_and_reserved_streams() {
        let admin = holding(&["admin"]);
        for scope in Scope::ALL {
            assert!(admin.may(scope, Target::Stream("x")));
        }
        assert!(admin.may(Scope::Read, Target::Stream("$audit")));
        assert!(admin.may(Scope::Admin, Target::Node));
        let narrow = holding(&["admin:x-"]);
        assert!(narrow.may(Scope::Delete, Target::Stream("x-1")));
        assert!(!narrow.may(Scope::Admin, Target::Node));
        assert!(!narrow.may(Scope::Read, Target::Stream("$audit")));
        assert!(!holding(&["read"]).may(Scope::Read, Target::Stream("$audit")));
        assert!(Principal::anonymous().may(Scope::Admin, Target::Node));
    }
}
