//! How a run shows itself while it runs: a live progress view on a
//! terminal, plain lines otherwise, or one JSON object per event
//! (`--log-format json`, through tracing) for log shippers.

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use pitcrew_runtime::clock::format_offset;
use pitcrew_runtime::event::NullSink;
use pitcrew_runtime::{Action, Event, EventSink, Outcome};

use crate::cli::{LogFormat, OutputArgs};
use crate::render::ProgressSink;

/// The progress sink the output options ask for. `nodes` is how many nodes
/// the run is expected to patch (from the preflight), for the live view.
pub fn progress_sink(output: &OutputArgs, nodes: usize) -> Arc<dyn EventSink> {
    match output.log_format {
        LogFormat::Json => Arc::new(JsonLog::new()),
        _ if output.quiet => Arc::new(NullSink),
        LogFormat::Auto if std::io::stderr().is_terminal() => Arc::new(LiveView::new(nodes, output.verbose)),
        _ => Arc::new(ProgressSink::new().verbose(output.verbose)),
    }
}

/// Sends every event to each of several sinks.
pub struct Tee(pub Vec<Arc<dyn EventSink>>);

impl EventSink for Tee {
    fn emit(&self, event: &Event) {
        for sink in &self.0 {
            sink.emit(event);
        }
    }
}

#[derive(Default)]
struct LiveState {
    batch: Option<(usize, usize)>,
    node: String,
    step: String,
    patched: BTreeSet<String>,
    error_rate: Option<f64>,
}

/// A progress bar on the terminal: current batch, node and step, nodes done
/// of the total, elapsed time and the error rate users saw; finished steps
/// scroll above it as plain lines.
pub struct LiveView {
    bar: ProgressBar,
    lines: ProgressSink,
    state: Mutex<LiveState>,
}

impl LiveView {
    pub fn new(nodes: usize, verbose: bool) -> Self {
        let bar = ProgressBar::new(nodes as u64);
        let style = ProgressStyle::with_template(
            "{spinner} {elapsed_precise} [{bar:24.cyan/blue}] {pos}/{len} nodes patched  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(120));
        Self { bar, lines: ProgressSink::new().verbose(verbose), state: Mutex::new(LiveState::default()) }
    }

    fn refresh(&self, state: &LiveState) {
        let batch = state.batch.map(|(i, of)| format!("batch {i}/{of} · ")).unwrap_or_default();
        let errors = state.error_rate.map_or("errors —".to_string(), |r| format!("errors {:.2}%", r * 100.0));
        self.bar.set_position(state.patched.len() as u64);
        self.bar.set_message(format!("{batch}{} {} · {errors}", state.node, state.step));
    }
}

impl Drop for LiveView {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

impl EventSink for LiveView {
    fn emit(&self, event: &Event) {
        if let Some(line) = self.lines.line(event) {
            self.bar.println(line);
        }
        let Ok(mut state) = self.state.lock() else { return };
        match event {
            Event::StepStarted { cluster, node, action, compensating, .. } => {
                state.node = node.clone().unwrap_or_else(|| cluster.clone());
                state.step = if *compensating { format!("undo {}", action.as_str()) } else { action.as_str().into() };
            }
            Event::StepFinished { node: Some(node), action, outcome: Outcome::Ok { .. }, compensating, .. } => {
                if *action == Action::Patch && !compensating {
                    state.patched.insert(node.clone());
                } else if *action == Action::Restore {
                    state.patched.remove(node);
                }
            }
            Event::BatchStarted { index, of, .. } => state.batch = Some((*index, *of)),
            Event::BatchFinished { error_rate: Some(rate), .. } => state.error_rate = Some(*rate),
            Event::RollbackStarted { .. } => state.step = "rolling back".into(),
            _ => {}
        }
        self.refresh(&state);
    }
}

/// One JSON object per event on stderr, through tracing.
pub struct JsonLog;

impl JsonLog {
    pub fn new() -> Self {
        // Once per process; a second init (tests) is harmless.
        let _ = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .try_init();
        Self
    }
}

impl EventSink for JsonLog {
    fn emit(&self, event: &Event) {
        match event {
            Event::StepStarted { seq, at, cluster, node, action, compensating } => tracing::info!(
                kind = "step_started",
                seq,
                at_s = at.as_secs_f64(),
                at = %format_offset(*at),
                cluster = %cluster,
                node = node.as_deref().unwrap_or(""),
                action = action.as_str(),
                compensating,
            ),
            Event::StepFinished { seq, at, took, cluster, node, action, compensating, outcome } => {
                let (status, detail) = match outcome {
                    Outcome::Ok { detail } => ("ok", detail.as_str()),
                    Outcome::Refused { message } => ("refused", message.as_str()),
                    Outcome::Failed { kind, message } => (kind.as_str(), message.as_str()),
                };
                tracing::info!(
                    kind = "step_finished",
                    seq,
                    at_s = at.as_secs_f64(),
                    at = %format_offset(*at),
                    took_s = took.as_secs_f64(),
                    cluster = %cluster,
                    node = node.as_deref().unwrap_or(""),
                    action = action.as_str(),
                    compensating,
                    status,
                    detail,
                )
            }
            Event::Log { at, text } => tracing::info!(kind = "log", at_s = at.as_secs_f64(), text = %text),
            Event::RollbackStarted { at, reason, steps } => {
                tracing::warn!(kind = "rollback_started", at_s = at.as_secs_f64(), reason = %reason, steps)
            }
            Event::RollbackFinished { at, ok } => {
                tracing::info!(kind = "rollback_finished", at_s = at.as_secs_f64(), ok)
            }
            Event::BatchStarted { at, cluster, index, of, nodes } => tracing::info!(
                kind = "batch_started",
                at_s = at.as_secs_f64(),
                cluster = %cluster,
                index,
                of,
                nodes = %nodes.join(","),
            ),
            Event::BatchFinished { at, cluster, index, of, failed, error_rate } => tracing::info!(
                kind = "batch_finished",
                at_s = at.as_secs_f64(),
                cluster = %cluster,
                index,
                of,
                failed = %failed.join(","),
                error_rate = error_rate.unwrap_or(0.0),
            ),
            Event::Notify { at, name, data } => {
                tracing::info!(kind = "notify", at_s = at.as_secs_f64(), name = %name, data = %data)
            }
        }
    }
}

/// The end of a run as one JSON log object.
pub fn json_run_finished(run: &str, result: &str, exit_code: u8, steps: u64, failed_requests: u64, interruption: f64) {
    tracing::info!(
        kind = "run_finished",
        run,
        result,
        exit_code,
        steps,
        failed_requests,
        interruption_s = interruption
    );
}
