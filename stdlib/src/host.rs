//! What a built-in reaches through the engine's tag: the executor of the
//! run, the playbook's parameters and the run's rollback policy.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use pitcrew_runtime::executor::RollbackReport;
use pitcrew_runtime::{ErrorKind, Executor, StepError};
use rhai::{Dynamic, EvalAltResult, Map, NativeCallContext, Position};

/// Shared state of one run, cloned into every built-in call.
#[derive(Clone)]
pub struct RunHost {
    pub exec: Arc<Executor>,
    pub params: Arc<BTreeMap<String, serde_json::Value>>,
    /// Unwind a failed node inside `rolling` (off with `--no-rollback`).
    pub rollback_on_failure: bool,
    /// The report of the last `rollback()` the playbook called.
    pub last_rollback: Arc<Mutex<Option<RollbackReport>>>,
}

pub type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

/// The run host of the current call; built-ins fail cleanly when a script
/// is evaluated outside a run (e.g. by `pitcrew check`).
pub fn host(ctx: &NativeCallContext) -> RhaiResult<RunHost> {
    ctx.tag()
        .and_then(|tag| tag.read_lock::<RunHost>().map(|h| h.clone()))
        .ok_or_else(|| "pitcrew built-ins run only inside a pitcrew run".into())
}

/// Turns a step error into what the playbook sees: a catchable map with
/// `kind`, `node`, `cluster`, `action`, `message` and `hint`, or, for
/// cancellation, a termination no `catch` can stop.
pub fn to_rhai(error: StepError) -> Box<EvalAltResult> {
    if error.kind == ErrorKind::Cancelled {
        return EvalAltResult::ErrorTerminated(Dynamic::from(error.message), Position::NONE).into();
    }
    let mut map = Map::new();
    map.insert("kind".into(), error.kind.as_str().into());
    map.insert("action".into(), error.action.as_str().into());
    map.insert("node".into(), error.node.map_or(Dynamic::UNIT, Into::into));
    map.insert("cluster".into(), error.cluster.map_or(Dynamic::UNIT, Into::into));
    map.insert("message".into(), error.message.into());
    map.insert("hint".into(), error.hint.map_or(Dynamic::UNIT, Into::into));
    EvalAltResult::ErrorRuntime(map.into(), Position::NONE).into()
}

/// Converts a script value into JSON for the runtime (patch parameters).
pub fn to_json(value: &Dynamic) -> RhaiResult<serde_json::Value> {
    rhai::serde::from_dynamic(value)
}

/// Converts a runtime value into a script value.
pub fn to_dynamic<T: serde::Serialize>(value: T) -> RhaiResult<Dynamic> {
    rhai::serde::to_dynamic(value)
}
