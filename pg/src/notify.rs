//! NOTIFY channels and their payloads: what one Strata process tells the
//! others, and the one function that sends it.
//!
//! A notification is only a wake-up: whoever hears it reads the database for
//! the truth, and whoever misses one (a lost LISTEN connection, a pooler in
//! transaction mode) finds the same truth at its next poll.

use std::fmt;

use sqlx::PgExecutor;

/// The channels Strata listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Events were committed: the payload is a [`CommitNotice`] (or a LISTEN
    /// probe, see [`probe_payload`]).
    Events,
    /// A [`ClusterNotice`]: coordinators should look at the cluster now (a
    /// subscription was created or deleted, a lease released), a stream
    /// was hard-deleted, or an API key revoked.
    Cluster,
    /// A projection was asked to pause, resume or rebuild; the payload is its
    /// name.
    Projections,
}

impl Channel {
    /// Every channel.
    pub const ALL: [Channel; 3] = [Channel::Events, Channel::Cluster, Channel::Projections];

    /// The channel's name in PostgreSQL.
    pub const fn name(self) -> &'static str {
        match self {
            Channel::Events => "strata_all",
            Channel::Cluster => "strata_cluster",
            Channel::Projections => "strata_projections",
        }
    }

    /// The channel of a name heard on a LISTEN connection.
    pub fn from_name(name: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// "Node `node` committed events up to `position`", sent on
/// [`Channel::Events`] after the commit. Written as `<node>:<position>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitNotice {
    /// The node that committed.
    pub node: String,
    /// The last position it committed.
    pub position: i64,
}

impl CommitNotice {
    /// The payload text.
    pub fn payload(&self) -> String {
        format!("{}:{}", self.node, self.position)
    }

    /// Reads a payload; `None` for anything else (a probe, a foreign sender).
    /// Node ids may contain `:`, so the position is what follows the last one.
    pub fn parse(payload: &str) -> Option<CommitNotice> {
        let (node, position) = payload.rsplit_once(':')?;
        Some(CommitNotice {
            node: node.to_owned(),
            position: position.parse().ok()?,
        })
    }
}

/// What is said on [`Channel::Cluster`].
///
/// ```
/// use strata_pg::notify::ClusterNotice;
/// let erased = ClusterNotice::StreamErased("account-42".into());
/// assert_eq!(erased.payload(), "erased:account-42");
/// assert_eq!(ClusterNotice::parse(&erased.payload()), erased);
/// let revoked = ClusterNotice::KeyRevoked("ci-bot".into());
/// assert_eq!(revoked.payload(), "revoked:ci-bot");
/// assert_eq!(ClusterNotice::parse(&revoked.payload()), revoked);
/// assert_eq!(ClusterNotice::parse(""), ClusterNotice::Wake);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterNotice {
    /// Coordinators should look at the cluster now (a subscription was
    /// created or deleted, a lease released). The empty payload; anything
    /// this version does not read is taken as one too.
    Wake,
    /// Every event of this stream was erased (a hard delete). Sent inside
    /// the deleting transaction, so it is delivered when, and only if, the
    /// erasure commits: whoever hears it drops the copies it holds. Written
    /// as `erased:<stream>` (stream names fit NOTIFY's 8000-byte payload).
    StreamErased(String),
    /// The API key of this name was revoked. Sent inside the revoking
    /// transaction: whoever hears it drops the key from its cache at once
    /// (the cache re-reads a key every second anyway, so a lost notice
    /// delays the refusal by at most that). Written as `revoked:<name>`.
    KeyRevoked(String),
}

impl ClusterNotice {
    const ERASED: &'static str = "erased:";
    const REVOKED: &'static str = "revoked:";

    /// The payload text.
    pub fn payload(&self) -> String {
        match self {
            ClusterNotice::Wake => String::new(),
            ClusterNotice::StreamErased(stream) => format!("{}{stream}", Self::ERASED),
            ClusterNotice::KeyRevoked(name) => format!("{}{name}", Self::REVOKED),
        }
    }

    /// Reads a payload of [`Channel::Cluster`].
    pub fn parse(payload: &str) -> ClusterNotice {
        let named = |prefix: &str| {
            payload
                .strip_prefix(prefix)
                .filter(|rest| !rest.is_empty())
                .map(str::to_owned)
        };
        if let Some(stream) = named(Self::ERASED) {
            ClusterNotice::StreamErased(stream)
        } else if let Some(name) = named(Self::REVOKED) {
            ClusterNotice::KeyRevoked(name)
        } else {
            ClusterNotice::Wake
        }
    }
}

/// The payload of a LISTEN probe of node `node`: a notification a node sends
/// itself to check that its LISTEN connection hears (it does not behind a
/// pooler in transaction mode). Never parses as a [`CommitNotice`].
pub fn probe_payload(node: &str, nonce: &str) -> String {
    format!("probe:{node}:{nonce}:")
}

/// Sends `payload` on `channel`.
///
/// # Errors
///
/// When the database fails. Callers usually only log it: listeners also poll.
pub async fn send<'e>(
    executor: impl PgExecutor<'e>,
    channel: Channel,
    payload: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(channel.name())
        .bind(payload)
        .execute(executor)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_notice_reads_back_what_it_wrote() {
        let notice = CommitNotice {
            node: "node:a".into(),
            position: 42,
        };
        assert_eq!(notice.payload(), "node:a:42");
        assert_eq!(CommitNotice::parse(&notice.payload()), Some(notice));
    }

    #[test]
    fn a_probe_is_not_a_commit_notice() {
        assert_eq!(CommitNotice::parse(&probe_payload("n1", "abc")), None);
        assert_eq!(CommitNotice::parse(""), None);
    }

    #[test]
    fn a_stream_name_with_colons_survives_an_erasure_notice() {
        let notice = ClusterNotice::StreamErased("a:b:c".into());
        assert_eq!(ClusterNotice::parse(&notice.payload()), notice);
        assert_eq!(ClusterNotice::parse("erased:"), ClusterNotice::Wake);
        assert_eq!(ClusterNotice::parse("something else"), ClusterNotice::Wake);
    }

    #[test]
    fn a_revocation_notice_reads_back_what_it_wrote() {
        let notice = ClusterNotice::KeyRevoked("ci.bot-1_x".into());
        assert_eq!(notice.payload(), "revoked:ci.bot-1_x");
        assert_eq!(ClusterNotice::parse(&notice.payload()), notice);
        assert_eq!(ClusterNotice::parse("revoked:"), ClusterNotice::Wake);
        // A stream may be called `revoked:x`: its erasure stays an erasure.
        assert_eq!(
            ClusterNotice::parse("erased:revoked:x"),
            ClusterNotice::StreamErased("revoked:x".into())
        );
    }

    #[test]
    fn channels_are_found_by_name() {
        for channel in Channel::ALL {
            assert_eq!(Channel::from_name(channel.name()), Some(channel));
        }
        assert_eq!(Channel::from_name("other"), None);
    }
}
