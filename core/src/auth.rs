//! Who may do what: scopes, grants and API keys as the API shows them
//! (API.md, "Security").

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What a grant allows (API.md's table of scopes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Stream and `$all` reads, live subscriptions, snapshot reads, listing.
    Read,
    /// Appends and snapshot writes.
    Write,
    /// Soft and hard deletes, snapshot deletes.
    Delete,
    /// `consume`, `ack` and `nack` of persistent subscriptions.
    Subscribe,
    /// `GET /metrics`.
    Metrics,
    /// Everything, including keys, subscription and projection management,
    /// `/cluster` and `$audit`.
    Admin,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 6] = [
        Scope::Read,
        Scope::Write,
        Scope::Delete,
        Scope::Subscribe,
        Scope::Metrics,
        Scope::Admin,
    ];

    /// The scope's name on the wire, on the command line and in the database.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Delete => "delete",
            Scope::Subscribe => "subscribe",
            Scope::Metrics => "metrics",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A text that names no [`Scope`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope {0:?} (expected read, write, delete, subscribe, metrics or admin)")]
pub struct UnknownScope(pub String);

impl FromStr for Scope {
    type Err = UnknownScope;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| UnknownScope(text.to_owned()))
    }
}

/// One permission: a scope over the streams whose names start with
/// `streams` (`""`: every stream).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Grant {
    /// What it allows.
    pub scope: Scope,
    /// The stream-name prefix it covers; `""` covers every stream.
    #[serde(default)]
    pub streams: String,
}

impl Grant {
    /// A grant of `scope` over the streams starting with `streams`.
    pub fn new(scope: Scope, streams: impl Into<String>) -> Grant {
        Grant {
            scope,
            streams: streams.into(),
        }
    }
}

/// The command line's spelling of a grant, `SCOPE[:PREFIX]`.
impl FromStr for Grant {
    type Err = UnknownScope;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (scope, streams) = text.split_once(':').unwrap_or((text, ""));
        Ok(Grant::new(scope.parse()?, streams))
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.streams.is_empty() {
            write!(f, "{}", self.scope)
        } else {
            write!(f, "{}:{}", self.scope, self.streams)
        }
    }
}

/// The body of `POST /admin/keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// A unique name: who the audit trail and the logs name.
    pub name: String,
    /// What the key may do.
    pub grants: Vec<Grant>,
    /// When the key stops working, if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// The answer to `POST /admin/keys`: the only time the token is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedKey {
    /// The key's name.
    pub name: String,
    /// The secret to send as `Authorization: Bearer <token>`.
    pub token: String,
    /// What the key may do.
    pub grants: Vec<Grant>,
    /// When the key stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A key as `GET /admin/keys` lists it: never its token or hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyInfo {
    /// The key's name.
    pub name: String,
    /// What the key may do.
    pub grants: Vec<Grant>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// The answer to `GET /admin/keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyList {
    /// Every key, revoked and expired ones included, by name.
    pub keys: Vec<KeyInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_read_as_the_command_line_spells_them() {
        assert_eq!("read".parse(), Ok(Grant::new(Scope::Read, "")));
        assert_eq!(
            "write:account-".parse(),
            Ok(Grant::new(Scope::Write, "account-"))
        );
        assert_eq!("reed:x".parse::<Grant>(), Err(UnknownScope("reed".into())));
        assert_eq!(Grant::new(Scope::Delete, "a:b").to_string(), "delete:a:b");
        assert_eq!("delete:a:b".parse(), Ok(Grant::new(Scope::Delete, "a:b")));
    }

    #[test]
    fn a_grant_without_streams_covers_every_stream() {
        let grant: Grant = serde_json::from_str(r#"{"scope": "admin"}"#).unwrap();
        assert_eq!(grant, Grant::new(Scope::Admin, ""));
    }
}
