//! Runs one command and returns its exit code. Only this file picks exit
//! codes; it turns clap arguments into a run once and hands the rest to the
//! runtime, the stdlib and the plugins.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use pitcrew_plugins::sim::Fault;
use pitcrew_plugins::{live_adapters, rehearsal_adapters, BuiltAdapters, PluginError};
use pitcrew_runtime::event::NullSink;
use pitcrew_runtime::{EventSink, Executor, Inventory};
use pitcrew_stdlib::{compile, new_engine, Limits, Playbook, RunOutcome, RunRequest, RunResult, StopKind};

use crate::cli::{Cli, Command, RunArgs};
use crate::render::{self, JsonSummary, ProgressSink};

pub const SUCCESS: u8 = 0;
pub const FAILED: u8 = 1;
pub const INVALID: u8 = 2;
pub const REFUSED: u8 = 3;
pub const NEEDS_HUMAN: u8 = 4;

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
    match cli.command {
        Command::Rehearse { run, faults } => execute(&run, Mode::Rehearsal(faults), true),
        Command::Run { run, no_preflight } => execute(&run, Mode::Live, !no_preflight),
        Command::Check { playbook, inventory } => check(&playbook, inventory.as_deref()),
    }
}

enum Mode {
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
}

fn check(playbook: &Path, inventory: Option<&Path>) -> u8 {
    if let Some(path) = inventory {
        if let Err(e) =
            Inventory::load(path).map_err(PluginError::from).and_then(|inv| rehearsal_adapters(&inv, &[]).map(|_| ()))
        {
            render::report(e);
            return INVALID;
        }
    }
    let engine = new_engine(&Limits::default(), Vec::new(), None);
    match compile(&engine, playbook) {
        Ok(_) => {
            eprintln!(
                "ok: {} compiles{}",
                playbook.display(),
                inventory.map(|i| format!(", {} is valid", i.display())).unwrap_or_default()
            );
            SUCCESS
        }
        Err(e) => {
            render::report(e);
            INVALID
        }
    }
}

fn limits(args: &RunArgs, rehearsal: bool) -> Limits {
    let default_deadline = if rehearsal { Duration::from_secs(300) } else { Duration::from_secs(24 * 3600) };
    Limits {
        max_operations: args.max_operations,
        deadline: args.deadline.unwrap_or(default_deadline),
        ..Limits::default()
    }
}

fn request(args: &RunArgs, playbook: &Playbook, rehearsal: bool) -> RunRequest {
    RunRequest {
        playbook: playbook.clone(),
        params: args.params.iter().cloned().collect::<BTreeMap<_, _>>(),
        rollback_on_failure: !args.no_rollback,
        limits: limits(args, rehearsal),
        lib_roots: args.lib.clone(),
    }
}

fn run_id() -> String {
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string().replace(['-', ':'], "");
    format!("{}-{:04x}", stamp.trim_end_matches('Z'), std::process::id() & 0xffff)
}

fn execute(args: &RunArgs, mode: Mode, preflight: bool) -> u8 {
    let inventory = match Inventory::load(&args.inventory) {
        Ok(inv) => Arc::new(inv),
        Err(e) => {
            render::report(e);
            return INVALID;
        }
    };
    let build = |faults: &[Fault]| match &mode {
        Mode::Rehearsal(_) => rehearsal_adapters(&inventory, faults),
        Mode::Live => live_adapters(&inventory),
    };
    let faults: &[Fault] = match &mode {
        Mode::Rehearsal(f) => f,
        Mode::Live => &[],
    };
    let built = match build(faults) {
        Ok(b) => b,
        Err(e) => {
            render::report(e);
            return INVALID;
        }
    };
    let roots: Vec<PathBuf> = args.lib.clone();
    let engine = new_engine(&Limits::default(), roots, None);
    let playbook = match compile(&engine, &args.playbook) {
        Ok(p) => p,
        Err(e) => {
            render::report(e);
            return INVALID;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return INVALID;
        }
    };
    let rehearsal = matches!(mode, Mode::Rehearsal(_));

    if preflight {
        // The same playbook on a fault-free twin first: a guard refusal or a
        // script error found here costs nothing, because nothing real was touched.
        let twin = match rehearsal_adapters(&inventory, &[]) {
            Ok(t) => t,
            Err(e) => {
                render::report(e);
                return INVALID;
            }
        };
        let exec =
            Arc::new(Executor::new(inventory.clone(), twin.adapters, runtime.handle().clone(), Arc::new(NullSink)));
        let outcome = pitcrew_stdlib::run(exec, request(args, &playbook, true));
        if let Some(e) = &outcome.error {
            if e.is_refusal() {
                render::report(render::run_diagnostic(
                    "refused in the preflight rehearsal (nothing was touched): ",
                    e,
                    &playbook.source,
                ));
                return finish_early(args, &mode, &outcome, REFUSED);
            }
            let invalid = e.stop == StopKind::Step && e.domain_kind.as_deref() == Some("invalid");
            if invalid || matches!(e.stop, StopKind::Script | StopKind::Limit) {
                render::report(render::run_diagnostic(
                    "the playbook fails even on a fault-free twin: ",
                    e,
                    &playbook.source,
                ));
                return finish_early(args, &mode, &outcome, INVALID);
            }
        }
    }

    let BuiltAdapters { adapters, .. } = built;
    let is_virtual = adapters.clock.is_virtual();
    let sink: Arc<dyn EventSink> = if args.quiet { Arc::new(NullSink) } else { Arc::new(ProgressSink::new()) };
    let exec = Arc::new(Executor::new(inventory.clone(), adapters, runtime.handle().clone(), sink));
    let (cancel, abort) = (exec.cancel_token(), exec.abort_token());
    runtime.spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\ninterrupted: stopping the playbook and rolling back (Ctrl-C again aborts the rollback)");
            cancel.cancel();
            if tokio::signal::ctrl_c().await.is_ok() {
                abort.cancel();
            }
        }
    });
    let id = run_id();
    if !args.quiet {
        eprintln!("pitcrew {} {} on {} (run {id})", mode.name(), args.playbook.display(), args.inventory.display());
    }
    let started = Instant::now();
    let outcome = pitcrew_stdlib::run(exec, request(args, &playbook, rehearsal));
    let wall = started.elapsed();
    let code = exit_code(&outcome);
    if let Some(e) = &outcome.error {
        render::report(render::run_diagnostic("", e, &playbook.source));
    }
    eprint!("{}", render::summary(&id, mode.name(), &outcome, code, wall, is_virtual));
    if args.json {
        print_json(&id, args, &mode, &outcome, code, wall);
    }
    runtime.shutdown_background();
    code
}

fn exit_code(outcome: &RunOutcome) -> u8 {
    match outcome.result {
        RunResult::Succeeded => SUCCESS,
        RunResult::Failed | RunResult::RolledBack => FAILED,
        RunResult::Refused => REFUSED,
        RunResult::RollbackFailed => NEEDS_HUMAN,
    }
}

fn finish_early(args: &RunArgs, mode: &Mode, outcome: &RunOutcome, code: u8) -> u8 {
    if args.json {
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
        print_json("none", args, mode, &empty, code, Duration::ZERO);
    }
    code
}

fn print_json(id: &str, args: &RunArgs, mode: &Mode, outcome: &RunOutcome, code: u8, wall: Duration) {
    let faults = match mode {
        Mode::Rehearsal(f) => f.iter().map(ToString::to_string).collect(),
        Mode::Live => Vec::new(),
    };
    let summary = JsonSummary {
        run_id: id,
        mode: mode.name(),
        playbook: args.playbook.display().to_string(),
        inventory: args.inventory.display().to_string(),
        exit_code: code,
        faults,
        outcome,
        duration_s: outcome.duration.as_secs_f64(),
        interruption_s: outcome.traffic.interruption.as_secs_f64(),
        failed_requests: outcome.traffic.failed,
        wall_ms: wall.as_millis(),
    };
    match serde_json::to_string_pretty(&summary) {
        Ok(json) => println!("{json}"),
        Err(e) => eprintln!("error: cannot write the JSON summary: {e}"),
    }
}
