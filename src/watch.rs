//! `pitcrew rehearse --watch`: rehearse on every save of the playbook, its
//! modules or the inventory. A save that does not compile (or fails the
//! static checks) is reported and the last good version stays; a good one
//! cancels the rehearsal in progress (even mid-step) and starts again. Each
//! finished rehearsal is compared with the one before.
//!
//! Watch rehearsals are not journaled: they are drafts, thrown away on the
//! next save. Run `pitcrew rehearse` without `--watch` for a recorded one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use notify::event::ModifyKind;
use notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{new_debouncer, DebounceEventResult};
use pitcrew_plugins::rehearsal_adapters;
use pitcrew_plugins::sim::Fault;
use pitcrew_runtime::executor::NodeFinal;
use pitcrew_runtime::{Event, EventSink, Executor, Inventory};
use pitcrew_stdlib::{compile, new_engine, Limits, Playbook, RunOutcome, RunRequest};
use similar::{capture_diff_slices, Algorithm, DiffOp};
use tokio_util::sync::CancellationToken;

use crate::app::{self, INVALID, SUCCESS};
use crate::cli::RunArgs;
use crate::render::{self, ProgressSink};

/// Quiet time after the last file event before a save counts as done.
/// Editors write a file in several events (truncate, write, rename).
pub const DEBOUNCE: Duration = Duration::from_millis(40);

enum Msg {
    Changed(Vec<PathBuf>),
    Finished(u64, Box<Report>),
    Interrupt,
}

/// What one rehearsal produced, for the outcome and the diff.
struct Report {
    outcome: RunOutcome,
    /// `action target` of every step, in order (compensations as `undo ...`).
    steps: Vec<String>,
    wall: Duration,
}

/// Everything a rehearsal needs, loaded and checked.
struct Loaded {
    inventory: Arc<Inventory>,
    playbook: Playbook,
}

impl Loaded {
    /// The files a save of which means "rehearse again".
    fn files(&self) -> BTreeSet<PathBuf> {
        self.playbook.files().map(|f| absolute(&f.path)).chain([absolute(&self.inventory.source.path)]).collect()
    }
}

/// An absolute path with its directory resolved (the file itself may be
/// missing for a moment while an editor saves by rename).
fn absolute(path: &Path) -> PathBuf {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    path.file_name().map_or(dir.clone(), |name| dir.join(name))
}

/// Step lines, and progress on stderr unless quiet.
struct StepLog {
    steps: Mutex<Vec<String>>,
    progress: Option<ProgressSink>,
}

impl EventSink for StepLog {
    fn emit(&self, event: &Event) {
        if let Event::StepFinished { cluster, node, action, compensating, .. } = event {
            let target = node.as_deref().unwrap_or(cluster);
            let undo = if *compensating { "undo " } else { "" };
            if let Ok(mut steps) = self.steps.lock() {
                steps.push(format!("{undo}{} {target}", action.as_str()));
            }
        }
        if let Some(progress) = &self.progress {
            progress.emit(event);
        }
    }
}

/// A rehearsal in progress.
struct Running {
    generation: u64,
    cancel: CancellationToken,
    abort: CancellationToken,
}

impl Running {
    fn stop(&self) {
        // The rollback of a superseded draft is not worth waiting for.
        self.cancel.cancel();
        self.abort.cancel();
    }
}

struct Watch<'a> {
    args: &'a RunArgs,
    faults: &'a [Fault],
    pace: Option<f64>,
    runtime: tokio::runtime::Runtime,
    tx: Sender<Msg>,
    rx: Receiver<Msg>,
    generation: u64,
    running: Option<Running>,
    last_good: Option<Loaded>,
    previous: Option<Report>,
}

pub fn run(args: &RunArgs, faults: &[Fault], pace: Option<f64>) -> u8 {
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return INVALID;
        }
    };
    let (tx, rx) = channel();
    let interrupts = tx.clone();
    runtime.spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            if interrupts.send(Msg::Interrupt).is_err() {
                break;
            }
        }
    });
    let changes = tx.clone();
    let debouncer = new_debouncer(DEBOUNCE, None, move |result: DebounceEventResult| {
        if let Ok(events) = result {
            // Reads (ours included) and metadata changes are not saves.
            let paths = events
                .into_iter()
                .filter(|e| match e.event.kind {
                    EventKind::Create(_) | EventKind::Remove(_) | EventKind::Any => true,
                    EventKind::Modify(kind) => !matches!(kind, ModifyKind::Metadata(_)),
                    EventKind::Access(_) | EventKind::Other => false,
                })
                .flat_map(|e| e.event.paths)
                .collect();
            let _ = changes.send(Msg::Changed(paths));
        }
    });
    let mut debouncer = match debouncer {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: cannot watch files: {e}\n  help: rehearse without --watch");
            return INVALID;
        }
    };
    let mut watch =
        Watch { args, faults, pace, runtime, tx, rx, generation: 0, running: None, last_good: None, previous: None };
    // Until something compiles, watch what the command line names.
    let mut files: BTreeSet<PathBuf> = [absolute(&args.playbook), absolute(&args.inventory)].into();
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    if watch.reload("start") {
        files = watch.last_good.as_ref().map_or(files, Loaded::files);
    }
    loop {
        // Directories, not files: an editor that saves by writing a new
        // file and renaming it over the old one replaces the watched inode.
        let wanted: BTreeSet<PathBuf> = files.iter().filter_map(|f| f.parent().map(Path::to_path_buf)).collect();
        for gone in dirs.difference(&wanted) {
            let _ = debouncer.unwatch(gone);
        }
        for new in wanted.difference(&dirs) {
            if let Err(e) = debouncer.watch(new, RecursiveMode::NonRecursive) {
                eprintln!("warning: cannot watch {}: {e}", new.display());
            }
        }
        dirs = wanted;
        eprintln!("[watch] watching {} file(s); save to rehearse again, Ctrl-C to stop", files.len());
        match watch.next(&files) {
            Some(changed) => {
                let names: Vec<String> = changed.iter().map(|p| shown(p)).collect();
                if watch.reload(&format!("{} changed", names.join(", "))) {
                    files = watch.last_good.as_ref().map_or(files, Loaded::files);
                }
            }
            None => break,
        }
    }
    if let Some(running) = watch.running.take() {
        running.stop();
        watch.wait_for(running.generation);
    }
    eprintln!("[watch] stopped");
    SUCCESS
}

/// A path as the operator would write it: relative to the working directory when below it.
fn shown(path: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| path.to_path_buf())
        .display()
        .to_string()
}

impl Watch<'_> {
    /// Waits for a save of one of `files`, reporting rehearsals that finish
    /// meanwhile. `None` on Ctrl-C.
    fn next(&mut self, files: &BTreeSet<PathBuf>) -> Option<BTreeSet<PathBuf>> {
        loop {
            match self.rx.recv().ok()? {
                Msg::Interrupt => return None,
                Msg::Changed(paths) => {
                    let hit: BTreeSet<PathBuf> = paths.into_iter().filter(|p| files.contains(p)).collect();
                    if !hit.is_empty() {
                        return Some(hit);
                    }
                }
                Msg::Finished(generation, report) => self.finished(generation, *report),
            }
        }
    }

    /// Waits until rehearsal `generation` has stopped (it was cancelled).
    fn wait_for(&mut self, generation: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Msg::Finished(g, _)) if g == generation => return,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    eprintln!("[watch] warning: rehearsal #{generation} did not stop within 10 s; leaving it behind");
                    return;
                }
            }
        }
    }

    /// Loads and checks everything; on success supersedes the rehearsal in
    /// progress with a new one. On failure the diagnostic is shown and the
    /// last good version stays (and keeps running).
    fn reload(&mut self, why: &str) -> bool {
        let loaded = match load(self.args, self.faults) {
            Ok(l) => l,
            Err(()) => {
                match &self.last_good {
                    Some(_) => eprintln!(
                        "[watch] {why}: not rehearsed; keeping the last good version (rehearsal #{})",
                        self.generation
                    ),
                    None => eprintln!("[watch] {why}: nothing to rehearse yet; fix the error and save"),
                }
                return false;
            }
        };
        if let Some(running) = self.running.take() {
            running.stop();
            eprintln!("[watch] cancelled rehearsal #{}", running.generation);
            self.wait_for(running.generation);
        }
        self.generation += 1;
        eprintln!("[watch] rehearsal #{} started ({why})", self.generation);
        self.running = self.start(&loaded);
        self.last_good = Some(loaded);
        true
    }

    fn start(&self, loaded: &Loaded) -> Option<Running> {
        let built = match rehearsal_adapters(&loaded.inventory, self.faults) {
            Ok(b) => b,
            Err(e) => {
                render::report(e);
                return None;
            }
        };
        if let (Some(pace), Some(twin)) = (self.pace, &built.twin) {
            twin.set_pace(pace);
        }
        let log = Arc::new(StepLog {
            steps: Mutex::new(Vec::new()),
            progress: (!self.args.output.quiet).then(ProgressSink::new),
        });
        let exec = Arc::new(Executor::new(
            loaded.inventory.clone(),
            built.adapters,
            self.runtime.handle().clone(),
            log.clone(),
        ));
        let running = Running { generation: self.generation, cancel: exec.cancel_token(), abort: exec.abort_token() };
        let request = RunRequest {
            playbook: loaded.playbook.clone(),
            params: self.args.params.iter().cloned().collect::<BTreeMap<_, _>>(),
            rollback_on_failure: !self.args.no_rollback,
            limits: app::limits(self.args, true),
        };
        let (tx, generation) = (self.tx.clone(), self.generation);
        let spawned = std::thread::Builder::new().name(format!("rehearsal-{generation}")).spawn(move || {
            let started = Instant::now();
            let outcome = pitcrew_stdlib::run(exec, request);
            let steps = log.steps.lock().map(|mut s| std::mem::take(&mut *s)).unwrap_or_default();
            let report = Report { outcome, steps, wall: started.elapsed() };
            let _ = tx.send(Msg::Finished(generation, Box::new(report)));
        });
        if let Err(e) = spawned {
            eprintln!("error: cannot start the rehearsal: {e}");
            return None;
        }
        Some(running)
    }

    fn finished(&mut self, generation: u64, report: Report) {
        if self.running.as_ref().map(|r| r.generation) != Some(generation) {
            return;
        }
        self.running = None;
        let playbook = self.last_good.as_ref().map(|l| &l.playbook);
        if let (Some(e), Some(playbook)) = (&report.outcome.error, playbook) {
            render::report(render::run_diagnostic("", e, playbook));
        }
        eprintln!("[watch] rehearsal #{generation}: {}", outcome_line(&report));
        if let Some(before) = &self.previous {
            let changes = diff(before, &report);
            if changes.is_empty() {
                eprintln!("[watch] no change in the outcome since the last rehearsal");
            } else {
                eprintln!("[watch] changes since the last rehearsal:");
                for line in changes {
                    eprintln!("  {line}");
                }
            }
        }
        self.previous = Some(report);
    }
}

fn load(args: &RunArgs, faults: &[Fault]) -> Result<Loaded, ()> {
    let inventory = Inventory::load(&args.inventory).map(Arc::new).map_err(render::report)?;
    rehearsal_adapters(&inventory, faults).map_err(render::report)?;
    let engine = new_engine(&Limits::default(), Vec::new(), None);
    let playbook = compile(&engine, &args.playbook, &args.lib).map_err(render::report)?;
    if !app::static_checks(&engine, &playbook, Some(&inventory)) {
        return Err(());
    }
    Ok(Loaded { inventory, playbook })
}

fn outcome_line(report: &Report) -> String {
    let o = &report.outcome;
    format!(
        "{} (exit {}): {} steps, {} patched, users {} failed of {} requests, interrupted {:.1}s; {} simulated in {} ms",
        render::result_key(o.result).replace('_', " "),
        app::exit_code(o),
        o.steps,
        o.patched.len(),
        o.traffic.failed,
        o.traffic.requests,
        o.traffic.interruption.as_secs_f64(),
        pitcrew_runtime::clock::format_offset(o.duration),
        report.wall.as_millis()
    )
}

fn node_state(n: &NodeFinal) -> String {
    let serving = if n.serving { "serving" } else { "not serving" };
    let up = if n.up { "" } else { ", down" };
    let role = n.role.map(|r| format!(" ({})", r.as_str())).unwrap_or_default();
    format!("{} {serving}{role}{up}", n.version)
}

/// What differs between two rehearsals' outcomes, one line each.
fn diff(before: &Report, after: &Report) -> Vec<String> {
    const MAX_STEP_LINES: usize = 30;
    let (b, a) = (&before.outcome, &after.outcome);
    let mut lines = Vec::new();
    if b.result != a.result {
        lines.push(format!("result: {} -> {}", render::result_key(b.result), render::result_key(a.result)));
    }
    let mut step_lines = Vec::new();
    for op in capture_diff_slices(Algorithm::Myers, &before.steps, &after.steps) {
        match op {
            DiffOp::Equal { .. } => {}
            DiffOp::Delete { old_index, old_len, .. } => {
                step_lines.extend(before.steps[old_index..old_index + old_len].iter().map(|s| format!("- {s}")));
            }
            DiffOp::Insert { new_index, new_len, .. } => {
                step_lines.extend(after.steps[new_index..new_index + new_len].iter().map(|s| format!("+ {s}")));
            }
            DiffOp::Replace { old_index, old_len, new_index, new_len } => {
                step_lines.extend(before.steps[old_index..old_index + old_len].iter().map(|s| format!("- {s}")));
                step_lines.extend(after.steps[new_index..new_index + new_len].iter().map(|s| format!("+ {s}")));
            }
        }
    }
    if !step_lines.is_empty() {
        let (added, removed) = (
            step_lines.iter().filter(|l| l.starts_with('+')).count(),
            step_lines.iter().filter(|l| l.starts_with('-')).count(),
        );
        lines.push(format!("steps: {} -> {} ({added} added, {removed} removed)", b.steps, a.steps));
        let shown = step_lines.len().min(MAX_STEP_LINES);
        lines.extend(step_lines.drain(..shown).map(|l| format!("  {l}")));
        if !step_lines.is_empty() {
            lines.push(format!("  ... and {} more", step_lines.len()));
        }
    }
    let before_nodes: BTreeMap<(&str, &str), &NodeFinal> =
        b.nodes.iter().map(|n| ((n.cluster.as_str(), n.node.as_str()), n)).collect();
    for n in &a.nodes {
        match before_nodes.get(&(n.cluster.as_str(), n.node.as_str())) {
            Some(old) if node_state(old) != node_state(n) => {
                lines.push(format!("node {}: {} -> {}", n.node, node_state(old), node_state(n)));
            }
            None => lines.push(format!("node {}: new, {}", n.node, node_state(n))),
            _ => {}
        }
    }
    if b.traffic.failed != a.traffic.failed {
        lines.push(format!("failed requests: {} -> {}", b.traffic.failed, a.traffic.failed));
    }
    if (b.traffic.interruption.as_secs_f64() - a.traffic.interruption.as_secs_f64()).abs() >= 0.05 {
        lines.push(format!(
            "interruption: {:.1}s -> {:.1}s",
            b.traffic.interruption.as_secs_f64(),
            a.traffic.interruption.as_secs_f64()
        ));
    }
    if b.duration != a.duration {
        lines.push(format!(
            "duration: {} -> {}",
            pitcrew_runtime::clock::format_offset(b.duration),
            pitcrew_runtime::clock::format_offset(a.duration)
        ));
    }
    lines
}
