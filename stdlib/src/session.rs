//! One run of a playbook: a fresh engine on its own OS thread with a large
//! stack, the executor reached through the engine's tag, and the run's
//! rollback policy applied when the playbook fails.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pitcrew_runtime::adapter::TrafficSample;
use pitcrew_runtime::executor::{NodeFinal, RollbackReport};
use pitcrew_runtime::Executor;
use rhai::{Dynamic, EvalAltResult, Map, Scope};
use serde::Serialize;

use crate::engine::{new_engine, ConfinedResolver, Limits};
use crate::host::RunHost;
use crate::playbook::Playbook;

/// What to run and how.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub playbook: Playbook,
    pub params: BTreeMap<String, serde_json::Value>,
    /// Unwind the run when the playbook fails (off with `--no-rollback`).
    pub rollback_on_failure: bool,
    pub limits: Limits,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunResult {
    /// The playbook finished; nothing was rolled back.
    Succeeded,
    /// The playbook failed; nothing was rolled back (nothing changed, or
    /// `--no-rollback`).
    Failed,
    /// The run was rolled back and the service is on unpatched nodes.
    RolledBack,
    /// A guard refused a step before anything was touched.
    Refused,
    /// Rollback could not restore the service: a human is needed.
    RollbackFailed,
}

/// What stopped the playbook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopKind {
    /// A built-in raised a domain error (see `domain_kind`).
    Step,
    /// A runtime limit (operations, call depth, sizes, deadline).
    Limit,
    /// Ctrl-C or hot reload.
    Cancelled,
    /// The script itself: `throw`, a type error, an unknown variable.
    Script,
}

/// The error that stopped a playbook, located in the playbook.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunError {
    pub stop: StopKind,
    /// For `Step`: refused, failed, timeout, out_of_sync, ...
    pub domain_kind: Option<String>,
    pub action: Option<String>,
    pub cluster: Option<String>,
    pub node: Option<String>,
    pub message: String,
    pub hint: Option<String>,
    /// Where in the playbook (or module) it was raised.
    pub source: Option<String>,
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// The function calls (and module imports) that led to the error,
    /// outermost first, as `name() at file:line:col`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<String>,
}

impl RunError {
    pub fn is_refusal(&self) -> bool {
        self.stop == StopKind::Step && self.domain_kind.as_deref() == Some("refused")
    }

    /// `file:line:col` when known.
    pub fn location(&self) -> Option<String> {
        Some(format!("{}:{}:{}", self.source.as_deref()?, self.line?, self.column?))
    }
}

/// Everything a run produced, for the summary and `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct RunOutcome {
    pub result: RunResult,
    pub error: Option<RunError>,
    pub rollback: Option<RollbackReport>,
    pub steps: u64,
    pub patched: Vec<String>,
    pub nodes: Vec<NodeFinal>,
    pub traffic: TrafficSample,
    /// Time on the run's clock (virtual in a rehearsal).
    pub duration: Duration,
}

fn strip_position(message: String) -> String {
    match message.rfind(" (line ") {
        Some(at) if message.ends_with(')') => message[..at].to_string(),
        _ => message,
    }
}

fn map_str(map: &Map, key: &str) -> Option<String> {
    map.get(key).filter(|v| !v.is_unit()).map(ToString::to_string)
}

/// Reads the error that stopped the script.
pub fn classify(error: &EvalAltResult, playbook: &Playbook, limits: &Limits) -> RunError {
    let inner = error.unwrap_inner();
    let mut position = inner.position();
    if position.is_none() {
        position = error.position();
    }
    // Errors raised in an imported module carry the module's name.
    let (module, calls) = module_of(error, playbook);
    let source = module.unwrap_or_else(|| playbook.source.display_name());
    let mut run_error = RunError {
        stop: StopKind::Script,
        domain_kind: None,
        action: None,
        cluster: None,
        node: None,
        message: strip_position(inner.to_string()),
        hint: None,
        source: Some(source),
        line: position.line(),
        column: position.position(),
        calls,
    };
    match inner {
        EvalAltResult::ErrorRuntime(value, _) => {
            if let Some(map) =
                value.clone().try_cast::<Map>().filter(|m| m.contains_key("kind") && m.contains_key("message"))
            {
                run_error.stop = StopKind::Step;
                run_error.domain_kind = map_str(&map, "kind");
                run_error.action = map_str(&map, "action");
                run_error.cluster = map_str(&map, "cluster");
                run_error.node = map_str(&map, "node");
                run_error.message = map_str(&map, "message").unwrap_or_default();
                run_error.hint = map_str(&map, "hint");
            } else {
                run_error.message = format!("the playbook threw: {value}");
            }
        }
        EvalAltResult::ErrorTerminated(reason, _) => {
            if reason.to_string() == "deadline" {
                run_error.stop = StopKind::Limit;
                run_error.message = format!(
                    "the playbook ran past its wall-clock limit of {}",
                    humantime::format_duration(limits.deadline)
                );
                run_error.hint = Some("raise --deadline if the run really needs longer".into());
            } else {
                run_error.stop = StopKind::Cancelled;
                run_error.message = "the run was cancelled".into();
            }
        }
        EvalAltResult::ErrorTooManyOperations(_) => {
            run_error.stop = StopKind::Limit;
            run_error.message =
                format!("the playbook exceeded {} operations (an endless loop?)", limits.max_operations);
            run_error.hint =
                Some("check loop conditions; raise --max-operations if the playbook really needs more".into());
        }
        EvalAltResult::ErrorStackOverflow(_) => {
            run_error.stop = StopKind::Limit;
            run_error.message = format!("the playbook nested calls deeper than {} levels", limits.max_call_levels);
            run_error.hint = Some("check for unbounded recursion".into());
        }
        EvalAltResult::ErrorDataTooLarge(what, _) => {
            run_error.stop = StopKind::Limit;
            run_error.message = format!("{what} grew past the playbook's size limit");
        }
        EvalAltResult::ErrorVariableNotFound(..) => {
            run_error.hint = Some("declare it with `let` first; playbooks use strict variables".into());
        }
        EvalAltResult::ErrorFunctionNotFound(..) => {
            run_error.hint = Some("check the name and argument types; the README lists the built-ins".into());
        }
        _ => {}
    }
    run_error
}

/// The file the error was raised in, and the calls that led there
/// (outermost first, as `name at file:line:col`).
fn module_of(error: &EvalAltResult, playbook: &Playbook) -> (Option<String>, Vec<String>) {
    // A closure's body is in the file that defined it, whoever calls it.
    let defined_in = |name: &str| {
        playbook
            .files()
            .zip(std::iter::once(&playbook.ast).chain(playbook.modules.iter().map(|m| &m.ast)))
            .find(|(_, ast)| ast.iter_functions().any(|f| f.name == name))
            .map(|(file, _)| file.display_name())
    };
    let playbook = playbook.source.display_name();
    let mut current = error;
    let mut module = None;
    let mut calls = Vec::new();
    loop {
        let here = module.clone().unwrap_or_else(|| playbook.to_string());
        match current {
            EvalAltResult::ErrorInModule(name, inner, pos) => {
                if let (Some(line), Some(column)) = (pos.line(), pos.position()) {
                    calls.push(format!("import of {name} at {here}:{line}:{column}"));
                }
                module = Some(name.clone());
                current = inner;
            }
            EvalAltResult::ErrorInFunctionCall(name, src, inner, pos) => {
                if let (Some(line), Some(column)) = (pos.line(), pos.position()) {
                    let name = if name.starts_with("anon$") { "a closure".to_string() } else { format!("{name}()") };
                    calls.push(format!("{name} at {here}:{line}:{column}"));
                }
                if name.starts_with("anon$") {
                    module = defined_in(name).or(module);
                } else if !src.is_empty() {
                    module = Some(src.clone());
                }
                current = inner;
            }
            _ => return (module, calls),
        }
    }
}

/// Runs a playbook with an executor and applies the rollback policy.
/// Must be called from a thread that is not a tokio worker.
pub fn run(exec: Arc<Executor>, request: RunRequest) -> RunOutcome {
    let host = RunHost {
        exec: exec.clone(),
        params: Arc::new(request.params.clone()),
        rollback_on_failure: request.rollback_on_failure,
        last_rollback: Arc::new(Mutex::new(None)),
    };
    exec.start_probes();
    let roots = request.playbook.roots();
    let thread_host = host.clone();
    let limits = request.limits.clone();
    let playbook = request.playbook.clone();
    let joined = std::thread::Builder::new()
        .name("playbook".into())
        .stack_size(64 << 20)
        .spawn(move || {
            let mut engine = new_engine(&limits, Vec::new(), Some(thread_host.exec.cancel_token()));
            engine.set_module_resolver(ConfinedResolver::new(roots).with_modules(&playbook.modules));
            let log_exec = thread_host.exec.clone();
            engine.on_print(move |text| log_exec.log(text));
            engine.set_default_tag(Dynamic::from(thread_host));
            engine
                .run_ast_with_scope(&mut Scope::new(), &playbook.ast)
                .map_err(|e| Box::new(classify(&e, &playbook, &limits)))
        })
        .map_err(|e| e.to_string())
        .and_then(|handle| handle.join().map_err(|_| "the playbook thread panicked".to_string()));
    let error = match joined {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(*e),
        Err(internal) => Some(RunError {
            stop: StopKind::Script,
            domain_kind: None,
            action: None,
            cluster: None,
            node: None,
            message: format!("internal error: {internal}"),
            hint: Some("this is a pitcrew bug; the run is rolled back".into()),
            source: None,
            line: None,
            column: None,
            calls: Vec::new(),
        }),
    };
    let mut rollback = host.last_rollback.lock().ok().and_then(|mut r| r.take());
    let explicit = exec.rollbacks() > 0;
    let result = match &error {
        None if !explicit => RunResult::Succeeded,
        None => rolled_back(rollback.as_ref()),
        Some(e) if e.is_refusal() && !exec.touched_anything() => RunResult::Refused,
        Some(_) if !exec.touched_anything() => {
            if explicit {
                rolled_back(rollback.as_ref())
            } else {
                RunResult::Failed
            }
        }
        Some(e) if request.rollback_on_failure => {
            let report = exec.rollback(&format!("the playbook failed: {}", e.message));
            let result = rolled_back(Some(&report));
            rollback = Some(report);
            result
        }
        Some(_) => RunResult::Failed,
    };
    RunOutcome {
        result,
        error,
        rollback,
        steps: exec.steps_run(),
        patched: exec.patched_nodes(),
        nodes: exec.final_state(),
        traffic: exec.traffic_totals(),
        duration: exec.now(),
    }
}

fn rolled_back(report: Option<&RollbackReport>) -> RunResult {
    match report {
        Some(r) if !r.service_restored() => RunResult::RollbackFailed,
        _ => RunResult::RolledBack,
    }
}
