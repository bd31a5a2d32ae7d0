//! What the executor tells the world while it runs. The binary turns events
//! into progress lines; the audit trail will record them.

use std::time::Duration;

use serde::Serialize;

use crate::error::ErrorKind;
use crate::step::Action;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Ok { detail: String },
    Refused { message: String },
    Failed { kind: ErrorKind, message: String },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    StepStarted {
        seq: u64,
        at: Duration,
        cluster: String,
        node: Option<String>,
        action: Action,
        compensating: bool,
    },
    StepFinished {
        seq: u64,
        at: Duration,
        took: Duration,
        cluster: String,
        node: Option<String>,
        action: Action,
        compensating: bool,
        #[serde(flatten)]
        outcome: Outcome,
    },
    Log {
        at: Duration,
        text: String,
    },
    RollbackStarted {
        at: Duration,
        reason: String,
        steps: usize,
    },
    RollbackFinished {
        at: Duration,
        ok: bool,
    },
    /// `rolling` starts a batch (1-based `index` of `of`).
    BatchStarted {
        at: Duration,
        cluster: String,
        index: usize,
        of: usize,
        nodes: Vec<String>,
    },
    /// `rolling` finished a batch; `error_rate` is what users saw, when watched.
    BatchFinished {
        at: Duration,
        cluster: String,
        index: usize,
        of: usize,
        failed: Vec<String>,
        error_rate: Option<f64>,
    },
    /// `notify(event, data)` in the playbook.
    Notify {
        at: Duration,
        name: String,
        data: serde_json::Value,
    },
}

/// Receives events; implementations must be cheap, they run on the hot path.
pub trait EventSink: Send + Sync {
    fn emit(&self, event: &Event);
}

/// Discards everything (preflight rehearsals, benchmarks).
pub struct NullSink;

impl EventSink for NullSink {
    fn emit(&self, _event: &Event) {}
}
