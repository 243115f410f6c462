//! Projections as the API shows them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What a projection is doing, as stored in `projections.state` and shown by
/// `GET /projections`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ProjectionState {
    /// Applying events as they come.
    Running,
    /// Stopped on request; `resume` starts it again.
    Paused,
    /// Replaying from the start after a `rebuild`, until caught up.
    Rebuilding,
    /// Stopped after too many failures in a row; `resume` starts it again.
    Failed,
}

impl ProjectionState {
    /// Every state.
    pub const ALL: [ProjectionState; 4] = [
        ProjectionState::Running,
        ProjectionState::Paused,
        ProjectionState::Rebuilding,
        ProjectionState::Failed,
    ];

    /// The state's name on the wire and in the database.
    pub const fn as_str(self) -> &'static str {
        match self {
            ProjectionState::Running => "running",
            ProjectionState::Paused => "paused",
            ProjectionState::Rebuilding => "rebuilding",
            ProjectionState::Failed => "failed",
        }
    }
}

impl fmt::Display for ProjectionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A text that names no [`ProjectionState`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown projection state {0:?} (expected running, paused, rebuilding or failed)")]
pub struct UnknownProjectionState(pub String);

impl FromStr for ProjectionState {
    type Err = UnknownProjectionState;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        ProjectionState::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| UnknownProjectionState(text.to_owned()))
    }
}

impl TryFrom<String> for ProjectionState {
    type Error = UnknownProjectionState;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

/// A projection as `GET /projections` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProjectionStatus {
    /// Its name.
    pub name: String,
    /// The worker holding its lease, when the lease is alive.
    pub leader: Option<String>,
    /// The lease epoch.
    pub epoch: u64,
    /// Every position up to this is applied to the read model.
    pub checkpoint: u64,
    /// The last position of `$all`.
    pub head: u64,
    /// `head - checkpoint`.
    pub lag: u64,
    /// `running`, `paused`, `rebuilding` or `failed`.
    pub state: ProjectionState,
    /// The last error, while it is failing.
    pub last_error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_read_back_what_they_wrote() {
        for state in ProjectionState::ALL {
            assert_eq!(state.as_str().parse::<ProjectionState>(), Ok(state));
            assert_eq!(
                serde_json::to_value(state).unwrap(),
                serde_json::Value::from(state.as_str())
            );
        }
        assert!("stopped".parse::<ProjectionState>().is_err());
    }
}
