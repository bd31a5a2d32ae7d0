//! Runs one command and returns its exit code. Only the binary picks exit
//! codes; this file turns clap arguments into a run once and hands the rest
//! to the runtime, the stdlib and the plugins.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use clap::Parser;
use pitcrew_plugins::sim::Fault;
use pitcrew_plugins::{
    live_adapters, rehearsal_adapters, rehearsal_twin, saved_twin, world_for_new_run, BuiltAdapters,
};
use pitcrew_runtime::event::NullSink;
use pitcrew_runtime::journal::{self, sha256_hex, Body, JournalWriter, RunHeader, StateDir, StateError};
use pitcrew_runtime::lock::{self, ClusterLocks, LockError, LockHolder};
use pitcrew_runtime::recorder::Recorder;
use pitcrew_runtime::{EventSink, Executor, Inventory};
use pitcrew_stdlib::{compile, new_engine, Limits, Playbook, RunOutcome, RunRequest, RunResult, StopKind};

use crate::cli::{AuditCommand, Cli, Command, LogFormat, OutputArgs, RunArgs};
use crate::render::{self, JsonSummary};

pub const SUCCESS: u8 = 0;
pub const FAILED: u8 = 1;
pub const INVALID: u8 = 2;
pub const REFUSED: u8 = 3;
pub const NEEDS_HUMAN: u8 = 4;
pub const DRIFT: u8 = 5;
pub const BROKEN_TRAIL: u8 = 6;

pub fn run() -> u8 {
    // Long messages stay on one line so logs can be searched.
    let _ = miette::set_hook(Box::new(|_| Box::new(miette::MietteHandlerOpts::new().wrap_lines(false).build())));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { INVALID } else { SUCCESS };
        }
    };
    let state_dir = cli.state_dir.clone().unwrap_or_else(|| PathBuf::from(".pitcrew"));
    match cli.command {
        Command::Rehearse { run, faults, watch: true, pace } => crate::watch::run(&run, &faults, pace),
        Command::Rehearse { run, faults, watch: false, pace } => {
            execute(&run, Mode::Rehearsal(faults), true, &state_dir, pace)
        }
        Command::Run { run, no_preflight } => execute(&run, Mode::Live, !no_preflight, &state_dir, None),
        Command::Resume { run, output, break_lock, params } => resume(&run, &output, break_lock, &params, &state_dir),
        Command::Audit { command: AuditCommand::Verify { run } } => crate::audit::verify(&state_dir, &run),
        Command::Audit { command: AuditCommand::Show { run } } => crate::audit::show(&state_dir, &run),
        Command::Runs => crate::audit::runs(&state_dir),
        Command::Report { run, format, output, template } => {
            crate::report::run(&state_dir, &run, &format, output.as_deref(), template.as_deref())
        }
        Command::Drift { inventory, cluster, json, faults } => {
            crate::drift::run(&state_dir, &inventory, cluster.as_deref(), json, &faults)
        }
        Command::Check { playbook, inventory, lib } => check(&playbook, inventory.as_deref(), &lib),
        Command::Docs { format, definitions } => docs(&format, definitions.as_deref()),
    }
}

pub enum Mode {
    Rehearsal(Vec<Fault>),
    Live,
}

impl Mode {
    fn name(&self) -> &'static str {
        match self {
            Self::Rehearsal(_) => "rehearsal",
            Self::Live => "run",
        }
    }

    fn faults(&self) -> &[Fault] {
        match self {
            Self::Rehearsal(f) => f,
            Self::Live => &[],
        }
    }
}

fn docs(format: &str, definitions: Option<&Path>) -> u8 {
    let engine = new_engine(&Limits::default(), Vec::new(), None);
    if let Some(dir) = definitions {
        return match std::fs::create_dir_all(dir).and_then(|()| engine.definitions().write_to_dir(dir)) {
            Ok(()) => {
                eprintln!("wrote the built-in definitions to {}", dir.display());
                SUCCESS
            }
            Err(e) => {
                eprintln!("error: cannot write definitions to {}: {e}", dir.display());
                INVALID
            }
        };
    }
    match format {
        "text" => render::out(pitcrew_stdlib::reference::text(&engine).trim_end()),
        "markdown" | "md" => render::out(pitcrew_stdlib::reference::markdown(&engine).trim_end()),
        other => {
            eprintln!("error: unknown format `{other}`\n  help: use --format text or --format markdown");
            return INVALID;
        }
    }
    SUCCESS
}

/// The static checks; reports every finding and says whether there were none.
pub(crate) fn static_checks(
    engine: &pitcrew_stdlib::Engine,
    playbook: &Playbook,
    inventory: Option<&Inventory>,
) -> bool {
    let findings = pitcrew_stdlib::check::check(engine, playbook, inventory);
    for f in &findings {
        render::report(f.source.error_at(f.line, f.column, f.message.clone(), f.hint.clone()));
    }
    findings.is_empty()
}

fn check(playbook: &Path, inventory: Option<&Path>, lib: &[PathBuf]) -> u8 {
    let inventory = match inventory.map(Inventory::load).transpose() {
        Ok(inv) => inv,
        Err(e) => return fail(INVALID, e),
    };
    if let Some(inv) = &inventory {
        if let Err(e) = rehearsal_adapters(inv, &[]) {
            return fail(INVALID, e);
        }
        if let Err(e) = crate::notify::check(inv) {
            return fail(INVALID, e);
        }
    }
    let engine = new_engine(&Limits::default(), Vec::new(), None);
    match compile(&engine, playbook, lib) {
        Ok(compiled) if !static_checks(&engine, &compiled, inventory.as_ref()) => INVALID,
        Ok(compiled) => {
            let modules = match compiled.modules.len() {
                0 => String::new(),
                n => format!(" with {n} module(s)"),
            };
            eprintln!(
                "ok: {} compiles{modules}{}",
                playbook.display(),
                inventory.as_ref().map(|i| format!(", {} is valid", i.source.path.display())).unwrap_or_default()
            );
            SUCCESS
        }
        Err(e) => {
            render::report(e);
            INVALID
        }
    }
}

/// Everything a run needs besides its arguments, loaded and checked.
struct Prepared {
    inventory: Arc<Inventory>,
    playbook: Playbook,
    runtime: tokio::runtime::Runtime,
    state: StateDir,
}

/// Reports a diagnostic and yields the exit code.
fn fail(code: u8, e: impl miette::Diagnostic + Send + Sync + 'static) -> u8 {
    render::report(e);
    code
}

fn prepare(playbook: &Path, inventory: &Path, lib: &[PathBuf], state_dir: &Path) -> Result<Prepared, u8> {
    let inventory = Inventory::load(inventory).map(Arc::new).map_err(|e| fail(INVALID, e))?;
    crate::notify::check(&inventory).map_err(|e| fail(INVALID, e))?;
    let engine = new_engine(&Limits::default(), Vec::new(), None);
    let playbook = compile(&engine, playbook, lib).map_err(|e| fail(INVALID, e))?;
    if !static_checks(&engine, &playbook, Some(&inventory)) {
        return Err(INVALID);
    }
    let state = StateDir::open(state_dir).map_err(|e| fail(INVALID, e))?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(|e| {
        eprintln!("error: cannot start the async runtime: {e}");
        INVALID
    })?;
    Ok(Prepared { inventory, playbook, runtime, state })
}

pub(crate) fn limits(args: &RunArgs, rehearsal: bool) -> Limits {
    let default_deadline = if rehearsal { Duration::from_secs(300) } else { Duration::from_secs(24 * 3600) };
    Limits {
        max_operations: args.max_operations,
        deadline: args.deadline.unwrap_or(default_deadline),
        ..Limits::default()
    }
}

fn run_id() -> String {
    let stamp = humantime::format_rfc3339_seconds(SystemTime::now()).to_string().replace(['-', ':'], "");
    format!("{}-{:04x}", stamp.trim_end_matches('Z'), std::process::id() & 0xffff)
}

fn operator() -> String {
    std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into())
}

fn now_text() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// The playbook on a fault-free twin, quietly. Returns the clusters it
/// stepped on, or the exit code when the playbook must not run.
fn preflight(prepared: &Prepared, request: &RunRequest, args: &RunArgs, mode: &Mode) -> Result<Vec<String>, u8> {
    let twin = rehearsal_adapters(&prepared.inventory, &[]).map_err(|e| fail(INVALID, e))?;
    let exec = Arc::new(Executor::new(
        prepared.inventory.clone(),
        twin.adapters,
        prepared.runtime.handle().clone(),
        Arc::new(NullSink),
    ));
    let outcome = pitcrew_stdlib::run(exec.clone(), request.clone());
    if let Some(e) = &outcome.error {
        if e.is_refusal() {
            render::report(render::run_diagnostic(
                "refused in the preflight rehearsal (nothing was touched): ",
                e,
                &prepared.playbook,
            ));
            return Err(finish_early(args, mode, &outcome, REFUSED));
        }
        let invalid = e.stop == StopKind::Step && e.domain_kind.as_deref() == Some("invalid");
        if invalid || matches!(e.stop, StopKind::Script | StopKind::Limit) {
            render::report(render::run_diagnostic(
                "the playbook fails even on a fault-free twin: ",
                e,
                &prepared.playbook,
            ));
            return Err(finish_early(args, mode, &outcome, INVALID));
        }
    }
    Ok(exec.clusters_used())
}

fn take_locks(
    state: &StateDir,
    clusters: &[String],
    run: &str,
    break_lock: bool,
) -> Result<(ClusterLocks, Vec<(String, LockHolder)>), u8> {
    let me = LockHolder { run: run.to_string(), pid: std::process::id(), host: lock::host_name(), since: now_text() };
    lock::acquire(&state.locks_dir(), clusters, &me, break_lock).map_err(|e| match e {
        LockError::Io { .. } => fail(INVALID, e),
        _ => fail(REFUSED, e),
    })
}

fn execute(args: &RunArgs, mode: Mode, with_preflight: bool, state_dir: &Path, pace: Option<f64>) -> u8 {
    let prepared = match prepare(&args.playbook, &args.inventory, &args.lib, state_dir) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let rehearsal = matches!(mode, Mode::Rehearsal(_));
    // Faults name nodes: check them before anything else runs.
    if let Err(e) = rehearsal_adapters(&prepared.inventory, mode.faults()) {
        return fail(INVALID, e);
    }
    let request = RunRequest {
        playbook: prepared.playbook.clone(),
        params: args.params.iter().cloned().collect::<BTreeMap<_, _>>(),
        rollback_on_failure: !args.no_rollback,
        limits: limits(args, rehearsal),
    };
    let clusters = if with_preflight {
        // A guard refusal or a script error found here costs nothing,
        // because nothing real was touched.
        match preflight(&prepared, &request, args, &mode) {
            Ok(c) => c,
            Err(code) => return code,
        }
    } else {
        prepared.inventory.clusters.iter().map(|c| c.name.clone()).collect()
    };

    let id = run_id();
    let (locks, broken) = match take_locks(&prepared.state, &clusters, &id, args.break_lock) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let header = RunHeader {
        operator: operator(),
        host: lock::host_name(),
        pid: std::process::id(),
        mode: mode.name().to_string(),
        playbook: args.playbook.display().to_string(),
        playbook_sha256: sha256_hex(prepared.playbook.source.text.as_bytes()),
        inventory: args.inventory.display().to_string(),
        inventory_sha256: sha256_hex(prepared.inventory.source.text.as_bytes()),
        params: serde_json::to_value(&request.params).unwrap_or_default(),
        faults: mode.faults().iter().map(ToString::to_string).collect(),
        rollback_on_failure: request.rollback_on_failure,
        lib: args.lib.iter().map(|p| p.display().to_string()).collect(),
        clusters: clusters.clone(),
        cwd: std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default(),
        max_operations: Some(request.limits.max_operations),
        deadline_s: Some(request.limits.deadline.as_secs_f64()),
        modules: module_hashes(&prepared.playbook),
    };
    let built = match &mode {
        Mode::Rehearsal(faults) => rehearsal_twin(&prepared.inventory, faults, Some(prepared.state.twin_path(&id))),
        Mode::Live => {
            live_adapters(&prepared.inventory, Some(&prepared.state.sim_dir())).and_then(|built| match built.twin {
                // A persistent sim world: this run starts its clock and figures at zero.
                Some(_) => world_for_new_run(&prepared.inventory, &prepared.state.sim_dir()),
                None => Ok(built),
            })
        }
    };
    let built = match built {
        Ok(b) => b,
        Err(e) => return fail(INVALID, e),
    };
    if let (Some(pace), Some(twin)) = (pace, &built.twin) {
        twin.set_pace(pace);
    }
    let mut writer = match JournalWriter::create(&prepared.state.journal_path(&id), &id) {
        Ok(w) => w,
        Err(e) => return fail(INVALID, e),
    };
    let started = writer.append(Duration::ZERO, Body::Header(header)).and_then(|()| {
        broken.iter().try_for_each(|(cluster, holder)| {
            writer.append(
                Duration::ZERO,
                Body::LockBroken { cluster: cluster.clone(), holder: serde_json::to_value(holder).unwrap_or_default() },
            )
        })
    });
    if let Err(e) = started {
        return fail(INVALID, e);
    }
    let mut recorder = Recorder::new(Some(writer), None);
    if !rehearsal {
        recorder.facts_dir = Some(prepared.state.facts_dir());
    }
    let title = format!("{} {} on {} (run {id})", mode.name(), args.playbook.display(), args.inventory.display());
    let code = run_journaled(&prepared, built, recorder, request, &args.output, &mode, &id, &title, None, &clusters);
    drop(locks);
    code
}

/// Runs with a journal, writes the end record, prints the summary.
#[allow(clippy::too_many_arguments)]
fn run_journaled(
    prepared: &Prepared,
    built: BuiltAdapters,
    recorder: Recorder,
    request: RunRequest,
    output: &OutputArgs,
    mode: &Mode,
    id: &str,
    title: &str,
    resumed: Option<Body>,
    request_clusters: &[String],
) -> u8 {
    let BuiltAdapters { adapters, .. } = built;
    let is_virtual = adapters.clock.is_virtual();
    let expected = prepared
        .inventory
        .clusters
        .iter()
        .filter(|c| request_clusters.is_empty() || request_clusters.contains(&c.name))
        .map(|c| c.nodes.len())
        .sum();
    let mut sink: Arc<dyn EventSink> = crate::live::progress_sink(output, expected);
    // Rehearsals never notify anyone.
    let notifier = match mode {
        Mode::Live => {
            let info = crate::notify::RunInfo {
                run: id.to_string(),
                mode: mode.name().to_string(),
                playbook: prepared.playbook.source.display_name(),
                inventory: prepared.inventory.source.display_name(),
                operator: operator(),
                host: lock::host_name(),
                clusters: request_clusters.to_vec(),
            };
            match crate::notify::from_inventory(&prepared.inventory, info) {
                Ok(n) => n.map(Arc::new),
                Err(e) => return fail(INVALID, e),
            }
        }
        Mode::Rehearsal(_) => None,
    };
    if let Some(n) = &notifier {
        sink = Arc::new(crate::live::Tee(vec![sink, n.clone()]));
    }
    let exec = Arc::new(
        Executor::new(prepared.inventory.clone(), adapters, prepared.runtime.handle().clone(), sink)
            .with_recorder(recorder),
    );
    if let Some(n) = &notifier {
        n.attach(&exec);
        n.send(if resumed.is_some() { "run_resumed" } else { "run_started" }, exec.now(), serde_json::json!({}));
    }
    if let Some(marker) = resumed {
        exec.journal_always(marker);
    }
    let (cancel, abort) = (exec.cancel_token(), exec.abort_token());
    prepared.runtime.spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\ninterrupted: stopping the playbook and rolling back (Ctrl-C again aborts the rollback)");
            cancel.cancel();
            if tokio::signal::ctrl_c().await.is_ok() {
                abort.cancel();
            }
        }
    });
    if !output.quiet && output.log_format != LogFormat::Json {
        eprintln!("pitcrew {title}");
    }
    let started = Instant::now();
    let outcome = pitcrew_stdlib::run(exec.clone(), request);
    let wall = started.elapsed();
    let code = exit_code(&outcome);
    exec.snapshot_used_facts("end of run");
    if let Some(n) = &notifier {
        let data = crate::notify::finished_data(&outcome, render::result_key(outcome.result), code);
        n.send("run_finished", exec.now(), data);
        n.finish(Duration::from_secs(60));
    }
    exec.journal_always(Body::End {
        result: render::result_key(outcome.result).to_string(),
        exit_code: code,
        outcome: serde_json::to_value(&outcome).unwrap_or_default(),
    });
    if let Some(e) = &outcome.error {
        render::report(render::run_diagnostic("", e, &prepared.playbook));
    }
    if output.log_format == LogFormat::Json {
        crate::live::json_run_finished(
            id,
            render::result_key(outcome.result),
            code,
            outcome.steps,
            outcome.traffic.failed,
            outcome.traffic.interruption.as_secs_f64(),
        );
    } else {
        eprint!("{}", render::summary(id, mode.name(), &outcome, code, wall, is_virtual));
    }
    if output.json {
        print_json(
            id,
            &prepared.playbook.source.display_name(),
            &prepared.inventory.source.display_name(),
            mode,
            &outcome,
            code,
            wall,
        );
    }
    code
}

/// Each imported module (by its import path) and the SHA-256 of its text.
fn module_hashes(playbook: &Playbook) -> BTreeMap<String, String> {
    playbook.modules.iter().map(|m| (m.import.clone(), sha256_hex(m.source.text.as_bytes()))).collect()
}

pub(crate) fn exit_code(outcome: &RunOutcome) -> u8 {
    match outcome.result {
        RunResult::Succeeded => SUCCESS,
        RunResult::Failed | RunResult::RolledBack => FAILED,
        RunResult::Refused => REFUSED,
        RunResult::RollbackFailed => NEEDS_HUMAN,
    }
}

fn finish_early(args: &RunArgs, mode: &Mode, outcome: &RunOutcome, code: u8) -> u8 {
    if args.output.json {
        // Nothing real ran: report the refusal with empty results.
        let empty = RunOutcome {
            result: if code == REFUSED { RunResult::Refused } else { RunResult::Failed },
            error: outcome.error.clone(),
            rollback: None,
            steps: 0,
            patched: Vec::new(),
            nodes: Vec::new(),
            traffic: Default::default(),
            duration: Duration::ZERO,
        };
        let (playbook, inventory) = (args.playbook.display().to_string(), args.inventory.display().to_string());
        print_json("none", &playbook, &inventory, mode, &empty, code, Duration::ZERO);
    }
    code
}

fn print_json(id: &str, playbook: &str, inventory: &str, mode: &Mode, outcome: &RunOutcome, code: u8, wall: Duration) {
    let summary = JsonSummary {
        run_id: id,
        mode: mode.name(),
        playbook: playbook.to_string(),
        inventory: inventory.to_string(),
        exit_code: code,
        faults: mode.faults().iter().map(ToString::to_string).collect(),
        outcome,
        duration_s: outcome.duration.as_secs_f64(),
        interruption_s: outcome.traffic.interruption.as_secs_f64(),
        failed_requests: outcome.traffic.failed,
        wall_ms: wall.as_millis(),
    };
    match serde_json::to_string_pretty(&summary) {
        Ok(json) => render::out(&json),
        Err(e) => eprintln!("error: cannot write the JSON summary: {e}"),
    }
}

/// Moves a record cut short by a crash out of the journal into a side file
/// (nothing is lost) so the chain can continue. Returns the side file.
fn set_aside_torn_tail(path: &Path) -> Result<Option<PathBuf>, StateError> {
    let journal = journal::read(path)?;
    let Some(tail) = journal.torn_tail else { return Ok(None) };
    let io = |source| StateError::Write { path: path.display().to_string(), source };
    let side = path.with_extension(format!(
        "jsonl.torn-{}",
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
    ));
    std::fs::write(&side, tail.as_bytes()).map_err(io)?;
    let len = std::fs::metadata(path).map_err(io)?.len() - tail.len() as u64;
    let file = std::fs::OpenOptions::new().write(true).open(path).map_err(io)?;
    file.set_len(len).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(Some(side))
}

fn resume(
    run: &str,
    output: &OutputArgs,
    break_lock: bool,
    given: &[(String, serde_json::Value)],
    state_dir: &Path,
) -> u8 {
    let state = match StateDir::open(state_dir) {
        Ok(s) => s,
        Err(e) => return fail(INVALID, e),
    };
    let path = match state.find_run(run) {
        Ok(p) => p,
        Err(e) => return fail(INVALID, e),
    };
    let id = path.file_stem().and_then(|s| s.to_str()).unwrap_or(run).to_string();
    // A record the dead runner was still writing is the only damage resume
    // repairs; any other break of the chain stops it.
    let repaired = match set_aside_torn_tail(&path) {
        Ok(side) => side,
        Err(e) => return fail(INVALID, e),
    };
    let help = format!("resume needs an intact journal; `pitcrew audit show {id}` shows what is there");
    let journal = match crate::audit::intact_journal(&path, &help) {
        Ok(j) => j,
        Err(code) => return code,
    };
    if let Some((result, code)) = journal.ended() {
        eprintln!("error: run {id} already finished: {result} (exit {code}); there is nothing to resume");
        return INVALID;
    }
    let Some(header) = journal.header().cloned() else {
        eprintln!("error: run {id} has no header record");
        return BROKEN_TRAIL;
    };
    // Paths as the run was started, from the directory it was started in.
    let at = |p: &str| if header.cwd.is_empty() { PathBuf::from(p) } else { Path::new(&header.cwd).join(p) };
    let lib: Vec<PathBuf> = header.lib.iter().map(|p| at(p)).collect();
    let prepared = match prepare(&at(&header.playbook), &at(&header.inventory), &lib, state_dir) {
        Ok(p) => p,
        Err(code) => return code,
    };
    for (what, recorded, now) in [
        ("playbook", &header.playbook_sha256, sha256_hex(prepared.playbook.source.text.as_bytes())),
        ("inventory", &header.inventory_sha256, sha256_hex(prepared.inventory.source.text.as_bytes())),
    ] {
        if *recorded != now {
            eprintln!("error: the {what} changed since run {id} started; resuming would replay a different run");
            eprintln!("  help: restore the {what} the run started with (sha256 {recorded})");
            return INVALID;
        }
    }
    let now = module_hashes(&prepared.playbook);
    if header.modules != now {
        let changed: Vec<&String> = header
            .modules
            .keys()
            .chain(now.keys())
            .filter(|k| header.modules.get(*k) != now.get(*k))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        eprintln!(
            "error: module {} changed since run {id} started; resuming would replay a different run",
            changed.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        );
        eprintln!("  help: restore the modules the run started with (their SHA-256 are in the run's header record)");
        return INVALID;
    }
    let (locks, broken) = match take_locks(&state, &header.clusters, &id, break_lock) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let (mode, built) = if header.mode == "rehearsal" {
        let faults = header.faults.iter().filter_map(|f| f.parse().ok()).collect();
        (Mode::Rehearsal(faults), saved_twin(&prepared.inventory, &state.twin_path(&id)))
    } else {
        (Mode::Live, live_adapters(&prepared.inventory, Some(&state.sim_dir())))
    };
    let built = match built {
        Ok(b) => b,
        Err(e) => return fail(INVALID, e),
    };
    let Some(last) = journal.records.last() else { return BROKEN_TRAIL };
    let mut writer = match JournalWriter::append_to(&path, last) {
        Ok(w) => w,
        Err(e) => return fail(INVALID, e),
    };
    for (cluster, holder) in &broken {
        let body =
            Body::LockBroken { cluster: cluster.clone(), holder: serde_json::to_value(holder).unwrap_or_default() };
        if let Err(e) = writer.append(Duration::from_secs_f64(last.record.vt), body) {
            return fail(INVALID, e);
        }
    }
    let mut recorder = Recorder::new(Some(writer), Some(&journal));
    if header.mode != "rehearsal" {
        recorder.facts_dir = Some(state.facts_dir());
    }
    let mut params: BTreeMap<String, serde_json::Value> = match &header.params {
        serde_json::Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        _ => BTreeMap::new(),
    };
    // Secrets were never written down: the operator gives them again.
    for (key, value) in given {
        params.insert(key.clone(), value.clone());
    }
    if let Some((key, _)) = params.iter().find(|(_, v)| v.as_str() == Some("[redacted]")) {
        eprintln!("error: parameter `{key}` was a secret and the journal does not keep it");
        eprintln!("  help: pass it again: pitcrew resume {id} --param {key}=VALUE");
        return INVALID;
    }
    let request = RunRequest {
        playbook: prepared.playbook.clone(),
        params,
        rollback_on_failure: header.rollback_on_failure,
        limits: Limits {
            max_operations: header.max_operations.unwrap_or(Limits::default().max_operations),
            deadline: header.deadline_s.map_or(Duration::from_secs(24 * 3600), Duration::from_secs_f64),
            ..Limits::default()
        },
    };
    let marker = Body::Resumed {
        operator: operator(),
        host: lock::host_name(),
        pid: std::process::id(),
        repaired: repaired.map(|p| format!("a torn last record was moved to {}", p.display())),
    };
    let title = format!("resume of {id}: {} {} on {}", header.mode, header.playbook, header.inventory);
    let code =
        run_journaled(&prepared, built, recorder, request, output, &mode, &id, &title, Some(marker), &header.clusters);
    drop(locks);
    code
}
