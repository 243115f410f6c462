//! Projections: their status, and the requests to their workers.

use strata_core::subscription::ProjectionStatus;

use super::Client;
use crate::error::Result;

impl Client {
    /// Every projection with its leader, checkpoint, lag and state.
    pub async fn projections(&self) -> Result<Vec<ProjectionStatus>> {
        self.get(&["projections"]).json().await
    }

    /// Asks the active worker of projection `name` to pause.
    pub async fn pause_projection(&self, name: &str) -> Result<()> {
        self.post(&["projections", name, "pause"]).send().await
    }

    /// Asks the active worker of projection `name` to resume (also after `failed`).
    pub async fn resume_projection(&self, name: &str) -> Result<()> {
        self.post(&["projections", name, "resume"]).send().await
    }

    /// Asks the active worker of projection `name` to rebuild from the start.
    pub async fn rebuild_projection(&self, name: &str) -> Result<()> {
        self.post(&["projections", name, "rebuild"])
            .once()
            .send()
            .await
    }
}
