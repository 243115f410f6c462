//! Leases with fencing in PostgreSQL: one leader per resource, elected through
//! the `leases` table, shared by the server (persistent subscriptions) and the
//! projection workers.
//!
//! - Taking a lease that is free, released or expired bumps its `epoch`; the
//!   holder renews it before it expires; a clean shutdown releases it.
//! - Every write a leader makes is conditional on its [`Fence`]: the lease row
//!   still has the leader's owner and epoch. A paused or cut-off ex-leader
//!   therefore cannot write once someone else took over. The fence locks the
//!   lease row in share mode, so no takeover commits while a fenced write is
//!   in flight and the write never lands after the takeover.
//! - A holder cannot keep that lock past its lease: PostgreSQL ends a fenced
//!   transaction left idle for half the TTL (the holder paused, hung or cut
//!   off from the network in the middle of it), which rolls it back and
//!   frees the row, and a taker skips a row locked by a holder rather than
//!   wait behind it. Failover takes the TTL whatever the old holder does.
//! - All times are the database's clock; nodes' clocks never matter.
//! - Nothing here uses session state (advisory locks, LISTEN): it works the
//!   same through connection poolers in transaction mode.
//!
//! ```
//! use strata_pg::lease::rendezvous;
//!
//! let nodes = ["a".to_owned(), "b".to_owned(), "c".to_owned()];
//! let leader = rendezvous(&nodes, "subscription:orders").unwrap();
//! // Another node leaving does not move the resource.
//! let rest: Vec<String> = nodes.iter().filter(|n| *n == leader || n.as_str() != "c").cloned().collect();
//! assert_eq!(rendezvous(&rest, "subscription:orders"), Some(leader));
//! ```

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres};

/// Something one process leads at a time, named in the `leases` table as
/// `<kind>:<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Resource {
    /// A persistent subscription, led by a server node.
    Subscription(String),
    /// A projection, led by a projection worker.
    Projection(String),
}

impl Resource {
    const SUBSCRIPTION: &'static str = "subscription:";
    const PROJECTION: &'static str = "projection:";

    /// The lease row's `resource` text.
    pub fn key(&self) -> String {
        self.to_string()
    }

    /// Reads a lease row's `resource` text; `None` for an unknown kind.
    pub fn parse(key: &str) -> Option<Resource> {
        if let Some(name) = key.strip_prefix(Self::SUBSCRIPTION) {
            Some(Resource::Subscription(name.to_owned()))
        } else {
            key.strip_prefix(Self::PROJECTION)
                .map(|name| Resource::Projection(name.to_owned()))
        }
    }

    /// The SQL expression of a projection's lease key, for joins of the
    /// `leases` table with `projections p`.
    pub const PROJECTION_KEY_SQL: &'static str = "'projection:' || p.name";

    /// The SQL expression of a subscription's lease key, for joins of the
    /// `leases` table with `subscriptions s`.
    pub const SUBSCRIPTION_KEY_SQL: &'static str = "'subscription:' || s.name";
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Subscription(name) => write!(f, "{}{name}", Self::SUBSCRIPTION),
            Resource::Projection(name) => write!(f, "{}{name}", Self::PROJECTION),
        }
    }
}

/// Who holds a lease, and in which epoch.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Holder {
    /// The holder (a node or worker id).
    pub owner: String,
    /// The epoch of its lease.
    pub epoch: i64,
}

/// Where a resource should be led: the live node with the highest score for
/// it (rendezvous hashing). Leadership spreads over the nodes, and when a node
/// comes or goes only the resources it wins or held move.
pub fn rendezvous<'a>(nodes: &'a [String], resource: &str) -> Option<&'a str> {
    nodes
        .iter()
        .max_by_key(|node| score(node, resource))
        .map(String::as_str)
}

fn score(node: &str, resource: &str) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    for byte in node.bytes().chain([0]).chain(resource.bytes()) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
    }
    // A final mix so that similar names do not score alike.
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^ (hash >> 33)
}

/// Proof of leadership for conditional writes: the lease of `resource` held
/// by `owner` in `epoch`. Made by [`Leases::acquire`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The resource led.
    pub resource: String,
    /// The leader.
    pub owner: String,
    /// Its epoch.
    pub epoch: i64,
    /// How long a fenced transaction may sit idle before PostgreSQL ends it.
    idle_limit: Duration,
}

impl Fence {
    /// Checks, inside `tx`, that the lease is still ours, and locks it in
    /// share mode until `tx` ends so that no takeover can commit meanwhile.
    ///
    /// The lock must not outlive the lease when the holder stops in the
    /// middle of `tx` (paused, hung, cut off from the network): `tx` also
    /// gets an `idle_in_transaction_session_timeout` of half the lease TTL,
    /// so PostgreSQL ends it (and rolls it back) when it waits that long for
    /// the holder's next statement. Work between two statements of a fenced
    /// transaction must therefore take less than that.
    ///
    /// # Errors
    ///
    /// When the database fails. `Ok(false)`: the lease moved on (fenced).
    pub async fn hold(
        &self,
        tx: &mut sqlx::Transaction<'_, Postgres>,
    ) -> Result<bool, sqlx::Error> {
        // One round trip: the setting is local to `tx`, like the lock.
        let held: Option<i64> = sqlx::query_scalar(
            "SELECT l.epoch FROM leases l, \
                 set_config('idle_in_transaction_session_timeout', $4, true) \
             WHERE l.resource = $1 AND l.owner = $2 AND l.epoch = $3 FOR SHARE OF l",
        )
        .bind(&self.resource)
        .bind(&self.owner)
        .bind(self.epoch)
        .bind(self.idle_limit.as_millis().max(1).to_string())
        .fetch_optional(&mut **tx)
        .await?;
        Ok(held.is_some())
    }
}

/// A process's claim on its node id, made by [`Leases::claim`]: the
/// `started_at` it wrote in the id's `nodes` row. Heartbeats count only
/// while the row still has it, so two processes started with one id cannot
/// both pass for the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Membership {
    started_at: DateTime<Utc>,
}

impl Membership {
    /// When this process claimed the id (the database's clock).
    pub fn started_at(&self) -> DateTime<Utc> {
        self.started_at
    }
}

/// A node id's row in `nodes`, as another process wrote it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct NodeRow {
    /// Where that process says it is reachable.
    pub advertised_url: String,
    /// When it claimed the id.
    pub started_at: DateTime<Utc>,
    /// Its last heartbeat.
    pub last_heartbeat: DateTime<Utc>,
}

/// What a heartbeat found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heartbeat {
    /// Recorded: the id is this process's.
    Alive,
    /// Another process holds the id now.
    Displaced(NodeRow),
}

/// The leases of one owner (a node, or a projection worker).
#[derive(Debug, Clone)]
pub struct Leases {
    pool: PgPool,
    owner: String,
    ttl: Duration,
}

impl Leases {
    /// Leases held by `owner`, valid `ttl` after each renewal.
    pub fn new(pool: PgPool, owner: impl Into<String>, ttl: Duration) -> Self {
        Leases {
            pool,
            owner: owner.into(),
            ttl,
        }
    }

    /// The owner's name.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The time-to-live of a lease.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn ttl_ms(&self) -> i64 {
        self.ttl.as_millis() as i64
    }

    /// Claims this owner's id in `nodes` for this process, reachable at
    /// `url`: when no row has the id, or its last heartbeat is older than
    /// the TTL (the process that wrote it stopped, or crashed). `Err` with
    /// the row when a process heartbeated as this id within the TTL: maybe
    /// a previous run that just crashed, maybe another process started with
    /// the same id; only a next heartbeat of that row tells them apart.
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub async fn claim(&self, url: &str) -> Result<Result<Membership, NodeRow>, sqlx::Error> {
        loop {
            let claimed: Option<DateTime<Utc>> = sqlx::query_scalar(
                "INSERT INTO nodes AS n (id, advertised_url) VALUES ($1, $2) \
                 ON CONFLICT (id) DO UPDATE SET advertised_url = excluded.advertised_url, \
                     started_at = clock_timestamp(), last_heartbeat = clock_timestamp() \
                 WHERE n.last_heartbeat <= clock_timestamp() - make_interval(secs => $3 / 1000.0) \
                 RETURNING started_at",
            )
            .bind(&self.owner)
            .bind(url)
            .bind(self.ttl_ms() as f64)
            .fetch_optional(&self.pool)
            .await?;
            if let Some(started_at) = claimed {
                return Ok(Ok(Membership { started_at }));
            }
            // Gone again meanwhile (a clean shutdown): claim it again.
            if let Some(row) = self.node_row().await? {
                return Ok(Err(row));
            }
        }
    }

    async fn node_row(&self) -> Result<Option<NodeRow>, sqlx::Error> {
        sqlx::query_as("SELECT advertised_url, started_at, last_heartbeat FROM nodes WHERE id = $1")
            .bind(&self.owner)
            .fetch_optional(&self.pool)
            .await
    }

    /// Records that this process, reachable at `url`, is alive, under the
    /// id it claimed. [`Heartbeat::Displaced`] when another process holds
    /// the id now (it claimed it while this one did not heartbeat for over
    /// a TTL); the id comes back to this process once that one stops
    /// heartbeating for a TTL, or leaves.
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub async fn heartbeat(
        &self,
        url: &str,
        membership: &Membership,
    ) -> Result<Heartbeat, sqlx::Error> {
        loop {
            let beat = sqlx::query(
                "UPDATE nodes SET advertised_url = $2, started_at = $3, \
                     last_heartbeat = clock_timestamp() \
                 WHERE id = $1 AND (started_at = $3 \
                     OR last_heartbeat <= clock_timestamp() - make_interval(secs => $4 / 1000.0))",
            )
            .bind(&self.owner)
            .bind(url)
            .bind(membership.started_at)
            .bind(self.ttl_ms() as f64)
            .execute(&self.pool)
            .await?;
            if beat.rows_affected() > 0 {
                return Ok(Heartbeat::Alive);
            }
            // No row (removed by hand, say): write ours again.
            let inserted = sqlx::query(
                "INSERT INTO nodes (id, advertised_url, started_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(&self.owner)
            .bind(url)
            .bind(membership.started_at)
            .execute(&self.pool)
            .await?;
            if inserted.rows_affected() > 0 {
                return Ok(Heartbeat::Alive);
            }
            if let Some(other) = self.node_row().await? {
                return Ok(Heartbeat::Displaced(other));
            }
        }
    }

    /// Removes this process from the live nodes (a clean shutdown); a row
    /// another process holds under the same id stays.
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub async fn leave(&self, membership: &Membership) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM nodes WHERE id = $1 AND started_at = $2")
            .bind(&self.owner)
            .bind(membership.started_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Ids of the nodes whose heartbeat is younger than the TTL, sorted.
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub async fn live_nodes(&self) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT id FROM nodes \
             WHERE last_heartbeat > clock_timestamp() - make_interval(secs => $1 / 1000.0) \
             ORDER BY id",
        )
        .bind(self.ttl_ms() as f64)
        .fetch_all(&self.pool)
        .await
    }

    /// Takes every lease of `resources` that is free, released or expired;
    /// returns the fences of those taken (their epochs bumped).
    ///
    /// A lease row locked by its holder's fenced write is skipped, not
    /// waited for: a holder stalled in that write would otherwise hold up
    /// the taker (and whatever else the taker does in turn, heartbeats
    /// included) until PostgreSQL ends the stalled transaction. The next
    /// call takes it. A lease taken lasts the TTL from when its row is
    /// written, not from when the statement began: had the statement
    /// waited for the row, a lease computed before the wait would be
    /// expired already and the next taker would take it again at once.
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub async fn acquire(&self, resources: &[String]) -> Result<Vec<Fence>, sqlx::Error> {
        if resources.is_empty() {
            return Ok(Vec::new());
        }
        #[derive(sqlx::FromRow)]
        struct Taken {
            resource: String,
            epoch: i64,
        }
        let rows: Vec<Taken> = sqlx::query_as(
            "WITH takeable AS ( \
                 SELECT resource FROM leases \
                 WHERE resource = ANY($1) AND (owner IS NULL OR expires_at < clock_timestamp()) \
                 FOR UPDATE SKIP LOCKED) \
             INSERT INTO leases AS l (resource, owner, epoch, expires_at) \
             SELECT r, $2, 1, clock_timestamp() + make_interval(secs => $3 / 1000.0) \
             FROM unnest($1::text[]) AS r \
             WHERE r IN (SELECT resource FROM takeable) \
                OR NOT EXISTS (SELECT 1 FROM leases x WHERE x.resource = r) \
             ORDER BY r \
             ON CONFLICT (resource) DO UPDATE \
                 SET owner = excluded.owner, epoch = l.epoch + 1, \
                     expires_at = clock_timestamp() + make_interval(secs => $3 / 1000.0) \
                 WHERE l.owner IS NULL OR l.expires_at < clock_timestamp() \
             RETURNING resource, epoch",
        )
        .bind(resources)
        .bind(&self.owner)
        .bind(self.ttl_ms() as f64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|taken| Fence {
                resource: taken.resource,
                owner: self.owner.clone(),
                epoch: taken.epoch,
                idle_limit: self.ttl / 2,
            })
            .collect())
    }

    /// Extends the leases still ours; returns the resources renewed (a lease
    /// missing from the answer was lost).
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub async fn renew(&self, held: &[Fence]) -> Result<Vec<String>, sqlx::Error> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let resources: Vec<&str> = held.iter().map(|f| f.resource.as_str()).collect();
        let epochs: Vec<i64> = held.iter().map(|f| f.epoch).collect();
        sqlx::query_scalar(
            "UPDATE leases AS l \
             SET expires_at = clock_timestamp() + make_interval(secs => $4 / 1000.0) \
             FROM unnest($1::text[], $2::int8[]) AS h (resource, epoch) \
             WHERE l.resource = h.resource AND l.epoch = h.epoch AND l.owner = $3 \
             RETURNING l.resource",
        )
        .bind(&resources)
        .bind(&epochs)
        .bind(&self.owner)
        .bind(self.ttl_ms() as f64)
        .fetch_all(&self.pool)
        .await
    }

    /// Gives leases back at once (a clean shutdown, or a handover to the
    /// node that should lead): the next taker does not wait for the TTL.
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub async fn release(&self, held: &[Fence]) -> Result<(), sqlx::Error> {
        if held.is_empty() {
            return Ok(());
        }
        let resources: Vec<&str> = held.iter().map(|f| f.resource.as_str()).collect();
        let epochs: Vec<i64> = held.iter().map(|f| f.epoch).collect();
        sqlx::query(
            "UPDATE leases AS l SET owner = NULL, expires_at = clock_timestamp() \
             FROM unnest($1::text[], $2::int8[]) AS h (resource, epoch) \
             WHERE l.resource = h.resource AND l.epoch = h.epoch AND l.owner = $3",
        )
        .bind(&resources)
        .bind(&epochs)
        .bind(&self.owner)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Who holds `resource` now (an unexpired lease), and in which epoch.
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub async fn holder(&self, resource: &Resource) -> Result<Option<Holder>, sqlx::Error> {
        sqlx::query_as(
            "SELECT owner, epoch FROM leases \
             WHERE resource = $1 AND owner IS NOT NULL AND expires_at > clock_timestamp()",
        )
        .bind(resource.key())
        .fetch_optional(&self.pool)
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_spreads_and_moves_little() {
        let nodes: Vec<String> = (0..3).map(|i| format!("node-{i}")).collect();
        let resources: Vec<String> = (0..300).map(|i| format!("subscription:s{i}")).collect();
        let mut counts = [0; 3];
        for r in &resources {
            let leader = rendezvous(&nodes, r).unwrap();
            counts[nodes.iter().position(|n| n == leader).unwrap()] += 1;
        }
        assert!(counts.iter().all(|c| *c > 60), "uneven spread: {counts:?}");
        // node-2 leaves: only its resources move.
        let fewer = &nodes[..2];
        for r in &resources {
            let before = rendezvous(&nodes, r).unwrap();
            let after = rendezvous(fewer, r).unwrap();
            if before != "node-2" {
                assert_eq!(before, after, "{r} moved without reason");
            }
        }
        assert_eq!(rendezvous(&[], "x"), None);
    }

    #[test]
    fn resources_read_back_what_they_wrote() {
        for resource in [
            Resource::Subscription("orders".into()),
            Resource::Projection("account-balances".into()),
        ] {
            assert_eq!(Resource::parse(&resource.key()), Some(resource.clone()));
        }
        assert_eq!(Resource::Subscription("o".into()).key(), "subscription:o");
        assert_eq!(Resource::Projection("p".into()).key(), "projection:p");
        assert_eq!(Resource::parse("other:x"), None);
        // The SQL forms write the same keys.
        assert!(Resource::PROJECTION_KEY_SQL.starts_with(&format!("'{}'", Resource::PROJECTION)));
        assert!(
            Resource::SUBSCRIPTION_KEY_SQL.starts_with(&format!("'{}'", Resource::SUBSCRIPTION))
        );
    }
}
