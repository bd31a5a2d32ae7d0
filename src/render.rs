//! Everything the binary prints: progress lines, the run summary, the JSON
//! summary and diagnostics.

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use miette::{Diagnostic, NamedSource, SourceSpan};
use pitcrew_runtime::clock::format_offset;
use pitcrew_runtime::{Event, EventSink, Outcome};
use pitcrew_stdlib::modules::ModuleFile;
use pitcrew_stdlib::{Playbook, RunError, RunOutcome, RunResult};
use serde::Serialize;
use std::sync::Arc;

/// Writes to stdout; a closed pipe (`| head`) ends the output quietly
/// instead of failing the command.
pub fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes()).and_then(|()| stdout.write_all(b"\n"));
}

/// Progress on stderr: one line per finished step, log lines, rollback
/// marks; with `verbose`, step starts and batch boundaries too.
pub struct ProgressSink {
    out: Mutex<std::io::Stderr>,
    verbose: bool,
}

impl ProgressSink {
    pub fn new() -> Self {
        Self { out: Mutex::new(std::io::stderr()), verbose: false }
    }

    pub fn verbose(mut self, verbose: bool) -> Self {
        self.verbose = verbose;
        self
    }

    /// The line an event prints, if any.
    pub fn line(&self, event: &Event) -> Option<String> {
        Some(match event {
            Event::StepStarted { at, cluster, node, action, compensating, .. } if self.verbose => {
                let target = node.as_deref().unwrap_or(cluster);
                let undo = if *compensating { "undo " } else { "" };
                format!("{}  {target:<10} {undo}{} ...", format_offset(*at), action.as_str())
            }
            Event::StepStarted { .. } => return None,
            Event::StepFinished { at, took, cluster, node, action, compensating, outcome, .. } => {
                let target = node.as_deref().unwrap_or(cluster);
                let step =
                    if *compensating { format!("undo {}", action.as_str()) } else { action.as_str().to_string() };
                let (status, detail) = match outcome {
                    Outcome::Ok { detail } => ("ok", detail.clone()),
                    Outcome::Refused { message } => ("REFUSED", message.clone()),
                    Outcome::Failed { kind, message } => (kind.as_str(), message.clone()),
                };
                format!("{}  {target:<10} {step:<18} {status:<8} {:>7}  {detail}", format_offset(*at), secs(*took))
            }
            Event::Log { at, text } => format!("{}  {text}", format_offset(*at)),
            Event::RollbackStarted { at, reason, steps } => {
                format!("{}  rolling back {steps} step(s): {reason}", format_offset(*at))
            }
            Event::RollbackFinished { at, ok } => {
                format!(
                    "{}  rollback {}",
                    format_offset(*at),
                    if *ok { "finished: service on unpatched nodes" } else { "FAILED: the service needs a human" }
                )
            }
            // `rolling` logs its batches as lines already.
            Event::BatchStarted { .. } => return None,
            Event::BatchFinished { at, cluster, index, of, failed, .. } if self.verbose => {
                format!("{}  {cluster}: batch {index}/{of} done, {} failed", format_offset(*at), failed.len())
            }
            Event::BatchFinished { .. } => return None,
            Event::Notify { at, name, data } => format!("{}  notify {name} {data}", format_offset(*at)),
        })
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

impl EventSink for ProgressSink {
    fn emit(&self, event: &Event) {
        let Some(line) = self.line(event) else { return };
        if let Ok(mut out) = self.out.lock() {
            // A closed stderr is not a reason to stop a patch run.
            let _ = writeln!(out, "{line}");
        }
    }
}

/// The machine-readable summary printed by `--json`.
#[derive(Debug, Serialize)]
pub struct JsonSummary<'a> {
    pub run_id: &'a str,
    pub mode: &'a str,
    pub playbook: String,
    pub inventory: String,
    pub exit_code: u8,
    pub faults: Vec<String>,
    #[serde(flatten)]
    pub outcome: &'a RunOutcome,
    pub duration_s: f64,
    pub interruption_s: f64,
    pub failed_requests: u64,
    pub wall_ms: u128,
}

pub fn result_text(result: RunResult) -> &'static str {
    match result {
        RunResult::Succeeded => "succeeded",
        RunResult::Failed => "failed",
        RunResult::RolledBack => "rolled back",
        RunResult::Refused => "refused before anything was touched",
        RunResult::RollbackFailed => "ROLLBACK FAILED: the cluster needs a human",
    }
}

/// The result as the journal and `pitcrew runs` name it.
pub fn result_key(result: RunResult) -> &'static str {
    match result {
        RunResult::Succeeded => "succeeded",
        RunResult::Failed => "failed",
        RunResult::RolledBack => "rolled_back",
        RunResult::Refused => "refused",
        RunResult::RollbackFailed => "rollback_failed",
    }
}

/// The human summary on stderr.
pub fn summary(run_id: &str, mode: &str, outcome: &RunOutcome, exit: u8, wall: Duration, is_virtual: bool) -> String {
    let mut s = String::new();
    let mut line = |k: &str, v: String| {
        s.push_str(format!("{k:<12}{v}").trim_end());
        s.push('\n');
    };
    line("result", format!("{} (exit {exit})", result_text(outcome.result)));
    if let Some(e) = &outcome.error {
        let at = e.location().map(|l| format!(" at {l}")).unwrap_or_default();
        line("error", format!("{}{at}", error_line(e)));
    }
    line("steps", outcome.steps.to_string());
    line(
        "patched",
        if outcome.patched.is_empty() {
            "none".into()
        } else {
            format!("{} ({})", outcome.patched.len(), outcome.patched.join(", "))
        },
    );
    match &outcome.rollback {
        Some(r) => {
            let status =
                if r.service_restored() { "service restored on unpatched nodes" } else { "service NOT restored" };
            line("rollback", format!("{} step(s) undone; {status}", r.steps));
            for f in &r.failures {
                line("", format!("compensation failed: {f}"));
            }
            for u in &r.unsafe_service {
                line("", format!("UNSAFE: {u}"));
            }
            for a in &r.attention {
                line("", format!("attention: {a}"));
            }
        }
        None => line("rollback", "none".into()),
    }
    let t = &outcome.traffic;
    line(
        "users",
        format!(
            "{} failed of {} requests, interrupted {:.1}s{}",
            t.failed,
            t.requests,
            t.interruption.as_secs_f64(),
            if is_virtual { " (simulated)" } else { "" }
        ),
    );
    line(
        "duration",
        format!(
            "{}{} in {} ms wall",
            format_offset(outcome.duration),
            if is_virtual { " virtual" } else { "" },
            wall.as_millis()
        ),
    );
    line("run id", format!("{run_id} ({mode})"));
    if !outcome.nodes.is_empty() {
        line("nodes", String::new());
        for n in &outcome.nodes {
            let state = match (n.serving, n.up, n.role) {
                (_, false, _) => "DOWN",
                (true, _, Some(_)) => "serving (active)",
                (true, _, None) => "serving",
                (false, true, Some(_)) => "standby (passive)",
                (false, true, None) => "out of service",
            };
            let version = if n.version == n.version_before {
                n.version.clone()
            } else {
                format!("{} (was {})", n.version, n.version_before)
            };
            line("", format!("{:<10} {:<10} {version:<22} {state}", n.cluster, n.node));
        }
    }
    s
}

fn error_line(e: &RunError) -> String {
    let kind = e.domain_kind.as_deref().unwrap_or(match e.stop {
        pitcrew_stdlib::StopKind::Limit => "limit",
        pitcrew_stdlib::StopKind::Cancelled => "cancelled",
        _ => "script",
    });
    match (&e.action, &e.node.as_ref().or(e.cluster.as_ref())) {
        (Some(action), Some(target)) => format!("{action} {target}: {} ({kind})", e.message),
        _ => format!("{} ({kind})", e.message),
    }
}

/// A run error as a diagnostic with the playbook snippet.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{message}")]
pub struct RunDiagnostic {
    message: String,
    #[source_code]
    src: Option<NamedSource<Arc<str>>>,
    #[label("{label}")]
    span: Option<SourceSpan>,
    label: String,
    #[help]
    help: Option<String>,
}

pub fn run_diagnostic(prefix: &str, e: &RunError, playbook: &Playbook) -> RunDiagnostic {
    // The snippet comes from the file the error is in: the playbook or a module.
    let file = e.source.as_deref().and_then(|name| playbook.file_named(name));
    let span = match (file, e.line, e.column) {
        (Some((src, _)), Some(line), Some(column)) => Some(src.span_at(line, column)),
        _ => None,
    };
    let chain = file.and_then(|(_, module)| module).map(ModuleFile::chain_text);
    let calls = (!e.calls.is_empty()).then(|| format!("called from: {}", e.calls.join(" -> ")));
    let notes: Vec<String> = [e.hint.clone(), calls, chain].into_iter().flatten().collect();
    let help = (!notes.is_empty()).then(|| notes.join("\n"));
    let at = e.location().map(|l| format!("{l}: ")).unwrap_or_default();
    RunDiagnostic {
        message: format!("{at}{prefix}{}", error_line(e)),
        src: span.and(file).map(|(src, _)| src.named()),
        span,
        label: e.action.clone().unwrap_or_else(|| "here".into()),
        help,
    }
}

/// Renders any diagnostic to stderr with miette's graphical handler.
pub fn report(diagnostic: impl Diagnostic + Send + Sync + 'static) {
    eprintln!("{:?}", miette::Report::new(diagnostic));
}
