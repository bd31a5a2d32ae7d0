//! Errors of a step, as the playbook sees them. Every one names the node
//! (or cluster) and the action, and carries a hint where the operator can
//! act. `Cancelled` is the only kind a playbook cannot catch.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::step::Action;

/// What went wrong, coarse enough for a playbook to branch on (`e.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// A guard refused the step; nothing was touched.
    Refused,
    /// The adapter reported a failure.
    Failed,
    /// The step did not finish within its timeout.
    Timeout,
    /// Replication is not in sync within the policy's lag.
    OutOfSync,
    /// The node or its adapter cannot be reached.
    Unreachable,
    /// A rolling run exceeded its failure budget or error rate.
    ErrorBudget,
    /// The playbook asked for something that does not exist or fit.
    Invalid,
    /// The run was cancelled (Ctrl-C, hot reload); not catchable.
    Cancelled,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Refused => "refused",
            Self::Failed => "failed",
            Self::Timeout => "timeout",
            Self::OutOfSync => "out_of_sync",
            Self::Unreachable => "unreachable",
            Self::ErrorBudget => "error_budget",
            Self::Invalid => "invalid",
            Self::Cancelled => "cancelled",
        }
    }
}

/// An error of one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepError {
    pub kind: ErrorKind,
    pub action: Action,
    pub cluster: Option<String>,
    pub node: Option<String>,
    pub message: String,
    pub hint: Option<String>,
}

impl StepError {
    pub fn new(kind: ErrorKind, action: Action, message: impl Into<String>) -> Self {
        Self { kind, action, cluster: None, node: None, message: message.into(), hint: None }
    }

    pub fn on_node(mut self, cluster: &str, node: &str) -> Self {
        self.cluster = Some(cluster.to_string());
        self.node = Some(node.to_string());
        self
    }

    pub fn on_cluster(mut self, cluster: &str) -> Self {
        self.cluster = Some(cluster.to_string());
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn cancelled(action: Action) -> Self {
        Self::new(ErrorKind::Cancelled, action, "the run was cancelled")
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.action.as_str())?;
        match (&self.node, &self.cluster) {
            (Some(node), _) => write!(f, " {node}")?,
            (None, Some(cluster)) => write!(f, " {cluster}")?,
            _ => {}
        }
        write!(f, ": {} ({})", self.message, self.kind.as_str())
    }
}

impl std::error::Error for StepError {}

/// What an adapter call can report. The executor maps it to a [`StepError`].
#[derive(Debug, Clone, thiserror::Error)]
pub enum AdapterError {
    #[error("{0}")]
    Failed(String),
    #[error("timed out after {}: {message}", humantime::format_duration(*after))]
    Timeout { after: Duration, message: String },
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("{0} is not supported by this adapter")]
    Unsupported(String),
}

impl AdapterError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Failed(_) | Self::Unsupported(_) => ErrorKind::Failed,
            Self::Timeout { .. } => ErrorKind::Timeout,
            Self::Unreachable(_) => ErrorKind::Unreachable,
        }
    }
}
