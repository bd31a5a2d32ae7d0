//! The actions a step can perform, and the compensations that undo them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::adapter::PatchReport;

/// Every built-in that touches a cluster is one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Drain,
    Undrain,
    Patch,
    Restore,
    Reboot,
    WaitHealthy,
    Probe,
    CheckSync,
    Switchover,
    Facts,
    Sleep,
    Rollback,
    Rolling,
    Param,
    Cluster,
    Drift,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Drain => "drain",
            Self::Undrain => "undrain",
            Self::Patch => "patch",
            Self::Restore => "restore",
            Self::Reboot => "reboot",
            Self::WaitHealthy => "wait_healthy",
            Self::Probe => "probe",
            Self::CheckSync => "check_sync",
            Self::Switchover => "switchover",
            Self::Facts => "facts",
            Self::Sleep => "sleep",
            Self::Rollback => "rollback",
            Self::Rolling => "rolling",
            Self::Param => "param",
            Self::Cluster => "cluster",
            Self::Drift => "drift",
        }
    }

    /// Whether the step changes a node (and so must fit in the window and
    /// invalidates earlier sync checks).
    pub fn changes_state(self) -> bool {
        matches!(self, Self::Drain | Self::Undrain | Self::Patch | Self::Restore | Self::Reboot | Self::Switchover)
    }
}

/// What undoes a completed step. Pushed on the run's stack; `rollback`
/// runs them newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Compensation {
    /// Put a drained node back in service.
    Undrain { cluster: String, node: String },
    /// Take a node out of service again.
    Drain { cluster: String, node: String },
    /// Return a patched node to its version before the patch.
    Restore { cluster: String, node: String, patch: PatchReport },
    /// Fail back to the node that was active before a switchover.
    SwitchBack { cluster: String, node: String },
}

impl Compensation {
    pub fn node(&self) -> &str {
        match self {
            Self::Undrain { node, .. }
            | Self::Drain { node, .. }
            | Self::Restore { node, .. }
            | Self::SwitchBack { node, .. } => node,
        }
    }

    pub fn action(&self) -> Action {
        match self {
            Self::Undrain { .. } => Action::Undrain,
            Self::Drain { .. } => Action::Drain,
            Self::Restore { .. } => Action::Restore,
            Self::SwitchBack { .. } => Action::Switchover,
        }
    }
}

/// The time a step is expected to take, used by the window guard.
pub fn default_estimate(action: Action) -> Duration {
    let secs = match action {
        Action::Drain => 60,
        Action::Patch => 120,
        Action::Restore => 120,
        Action::Reboot => 180,
        Action::WaitHealthy => 60,
        Action::Switchover => 10,
        _ => 1,
    };
    Duration::from_secs(secs)
}
