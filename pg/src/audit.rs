//! The audit trail: one event in the reserved stream [`AUDIT_STREAM`] for
//! every admin action, written inside the action's own transaction, so the
//! trail holds an action if and only if it happened.
//!
//! An entry is an ordinary event of `$audit`: its `type` names the action
//! (`KeyCreated`, `StreamHardDeleted`, …), its `data` what was acted on, its
//! `metadata` `{"actor": …, "remote": …}`. It is stored by the same
//! `strata_append` as every other event, so it takes its place in `$all`'s
//! positions; `$all` readers never see `$` streams (see [`crate::log`]), and
//! `/streams/$audit` needs `admin`.
//!
//! The transaction also sends a commit notice for the entry's position on
//! [`Channel::Events`] under the sender [`AUDIT_SENDER`], delivered when the
//! action commits: every node's live tail, the writer's own included, then
//! reads it, and `/streams/$audit/subscribe` sees it at once.

use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::notify::{self, Channel, CommitNotice};

/// The reserved stream of the audit trail.
pub const AUDIT_STREAM: &str = "$audit";

/// The sender named in the commit notice of an audit entry. No node can
/// bear it (node ids cannot start with `$`), so every node reads the entry,
/// the writer's own included.
pub const AUDIT_SENDER: &str = "$audit";

/// Who did it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The key's name or the JWT's subject; `anonymous` on a node without
    /// authentication.
    pub name: String,
    /// The address the request came from, or what ran the action (the
    /// command line).
    pub remote: String,
}

impl Actor {
    /// The actor of a request.
    pub fn new(name: impl Into<String>, remote: impl Into<String>) -> Actor {
        Actor {
            name: name.into(),
            remote: remote.into(),
        }
    }

    /// An operator at the command line (`strata keys …`): no request, no
    /// address; the operating system's user, when known, says who.
    pub fn command_line(command: &str) -> Actor {
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "unknown".into());
        Actor {
            name: format!("{command} (command line, user {user})"),
            remote: "local".into(),
        }
    }
}

/// Appends one entry to [`AUDIT_STREAM`] on `tx`, which must be the action's
/// transaction, and returns its position. Call it as the last statement
/// before the commit: it holds the `$all` head until then, like an append.
///
/// # Errors
///
/// When the database fails; the action's transaction should then be rolled
/// back (dropping it does).
pub async fn record(
    tx: &mut PgConnection,
    actor: &Actor,
    action: &str,
    data: &Value,
) -> Result<i64, sqlx::Error> {
    let metadata = json!({"actor": actor.name, "remote": actor.remote});
    let position: i64 = sqlx::query_scalar(
        "SELECT a.position FROM strata_append(false, false, ARRAY[$1::text], ARRAY[1], \
           ARRAY[-1::bigint], ARRAY[1], ARRAY[1], ARRAY[0], ARRAY[$2::uuid], ARRAY[$3::text], \
           ARRAY[$4::jsonb], ARRAY[$5::jsonb], ARRAY[NULL::uuid], ARRAY[NULL::uuid]) AS a \
         WHERE a.outcome = 0",
    )
    .bind(AUDIT_STREAM)
    .bind(Uuid::now_v7())
    .bind(action)
    .bind(data)
    .bind(&metadata)
    .fetch_one(&mut *tx)
    .await?;
    let notice = CommitNotice {
        node: AUDIT_SENDER.to_owned(),
        position,
    };
    notify::send(&mut *tx, Channel::Events, &notice.payload()).await?;
    Ok(position)
}
