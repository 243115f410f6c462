//! The cluster as `GET /cluster` shows it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeInfo {
    /// Its id.
    pub id: String,
    /// How to reach it.
    pub advertised_url: String,
    /// When it started.
    #[serde(with = "crate::time::micros")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub started_at: DateTime<Utc>,
    /// Its last heartbeat.
    #[serde(with = "crate::time::micros")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub last_heartbeat: DateTime<Utc>,
}

/// A lease: who leads a resource, in which epoch, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeaseInfo {
    /// `subscription:<name>` or `projection:<name>`.
    pub resource: String,
    /// The leader; `None` when released.
    pub owner: Option<String>,
    /// Grows with every change of owner.
    pub epoch: u64,
    /// When it lapses unless renewed.
    #[serde(with = "crate::time::micros")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub expires_at: DateTime<Utc>,
}

/// The answer of `GET /cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClusterView {
    /// The node that answered.
    pub node: String,
    /// Nodes with a heartbeat younger than the lease TTL.
    pub nodes: Vec<NodeInfo>,
    /// Every lease.
    pub leases: Vec<LeaseInfo>,
}
