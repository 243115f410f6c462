//! Operating the cluster: its nodes and leases, health, metrics, the API's
//! description.

use serde_json::Value;
use strata_core::subscription::ClusterView;

use super::Client;
use crate::error::Result;

impl Client {
    /// The nodes of the cluster and the leases they hold.
    pub async fn cluster(&self) -> Result<ClusterView> {
        self.get(&["cluster"]).json().await
    }

    /// Whether the node's process answers (`/health/live`).
    pub async fn is_live(&self) -> Result<bool> {
        self.probe(&["health", "live"]).await
    }

    /// Whether the node is ready: its database answers and the schema is
    /// current (`/health/ready`).
    pub async fn is_ready(&self) -> Result<bool> {
        self.probe(&["health", "ready"]).await
    }

    /// The node's metrics in Prometheus text format.
    pub async fn metrics(&self) -> Result<String> {
        self.get(&["metrics"]).text().await
    }

    /// The OpenAPI document of the node's HTTP API.
    pub async fn openapi(&self) -> Result<Value> {
        self.get(&["openapi.json"]).json().await
    }
}
