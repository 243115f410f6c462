//! Who is asking and what they may do: API keys ([`keys`]) and the
//! principal a request carries once its credentials are checked.
//!
//! `auth` imports nothing else of the server; `http` (the one
//! authorization decision) and the command line use it.

use chrono::{DateTime, Utc};
use strata_core::auth::Grant;

pub mod keys;

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
