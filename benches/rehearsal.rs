//! Rehearsal benchmark: prints figures, asserts nothing.
//!
//! `cargo bench --bench rehearsal` generates a fleet of 1,000 nodes in 100
//! pool clusters on the sim twin and rehearses a rolling patch of every node
//! (drain, patch, reboot, wait_healthy, probe, undrain), then measures the
//! per-step overhead of the executor alone and through Rhai.
//! `PITCREW_BENCH_NODES=10000` changes the fleet size.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pitcrew_plugins::rehearsal_adapters;
use pitcrew_runtime::event::NullSink;
use pitcrew_runtime::{Executor, Inventory, SourceFile};
use pitcrew_stdlib::{compile_source, new_engine, Limits, RunRequest, RunResult};

const ROLLING_ALL: &str = "\
for c in clusters() {
    rolling(c.nodes, #{ batch: 1, max_failures: 0 }, |n| {
        drain(n);
        patch(n);
        reboot(n);
        wait_healthy(n);
        probe(n);
        undrain(n);
    });
}
";

fn fleet(clusters: usize, per_cluster: usize) -> String {
    let mut yaml = String::from("adapters:\n  twin: { kind: sim }\nclusters:\n");
    for c in 0..clusters {
        let _ = write!(
            yaml,
            "  pool-{c:03}:\n    kind: pool\n    adapter: twin\n    policy: {{ min_in_service: {} }}\n    nodes:\n",
            per_cluster - 1
        );
        for n in 0..per_cluster {
            let _ = writeln!(yaml, "      - {{ name: node-{c:03}-{n:03} }}");
        }
    }
    yaml
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn main() {
    let nodes: usize = std::env::var("PITCREW_BENCH_NODES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let clusters = (nodes / 10).max(1);
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");

    let started = Instant::now();
    let text = fleet(clusters, nodes / clusters);
    let inventory = Arc::new(Inventory::parse(SourceFile::new("fleet.yaml", text)).expect("generated inventory"));
    let parse = started.elapsed();
    let engine = new_engine(&Limits::default(), Vec::new(), None);
    let playbook =
        compile_source(&engine, SourceFile::new("rolling_all.rhai", ROLLING_ALL), &[]).expect("bench playbook");

    let request = RunRequest {
        playbook: playbook.clone(),
        params: Default::default(),
        rollback_on_failure: true,
        limits: Limits { max_operations: u64::MAX / 2, ..Limits::default() },
    };
    let mut walls = Vec::new();
    let mut steps = 0;
    let mut virtual_time = Duration::ZERO;
    for _ in 0..5 {
        let adapters = rehearsal_adapters(&inventory, &[]).expect("twin").adapters;
        let exec = Arc::new(Executor::new(inventory.clone(), adapters, runtime.handle().clone(), Arc::new(NullSink)));
        let t = Instant::now();
        let outcome = pitcrew_stdlib::run(exec, request.clone());
        walls.push(t.elapsed());
        assert_eq!(outcome.result, RunResult::Succeeded, "{:?}", outcome.error);
        steps = outcome.steps;
        virtual_time = outcome.duration;
    }
    let wall = median(walls.clone());
    println!("rehearsal of {nodes} nodes in {clusters} clusters (rolling patch, 6 steps per node)");
    println!("  inventory generate+parse   {:>10.1} ms", parse.as_secs_f64() * 1e3);
    println!("  steps                      {steps:>10}");
    println!("  simulated time             {:>10.1} h", virtual_time.as_secs_f64() / 3600.0);
    println!(
        "  wall time (median of 5)    {:>10.1} ms   (min {:.1} ms)",
        wall.as_secs_f64() * 1e3,
        walls.iter().min().expect("runs").as_secs_f64() * 1e3
    );
    println!("  `pitcrew rehearse` ~ 2 runs (preflight + run): {:.1} ms", 2.0 * wall.as_secs_f64() * 1e3);
    println!("  per step, end to end       {:>10.2} us", wall.as_secs_f64() * 1e6 / steps as f64);

    // Executor alone: probe one node repeatedly from a plain thread.
    let adapters = rehearsal_adapters(&inventory, &[]).expect("twin").adapters;
    let exec = Executor::new(inventory.clone(), adapters, runtime.handle().clone(), Arc::new(NullSink));
    let node = inventory.clusters[0].nodes[0].name.clone();
    let n = 100_000;
    let t = Instant::now();
    for _ in 0..n {
        exec.probe(&node).expect("probe");
    }
    let direct = t.elapsed();
    println!("  executor step (probe), no Rhai   {:>6.2} us", direct.as_secs_f64() * 1e6 / n as f64);

    // Through Rhai: the same step called from a script loop.
    let script =
        format!("let n = cluster(\"{}\").nodes[0];\nfor i in 0..{n} {{ probe(n); }}\n", inventory.clusters[0].name);
    let playbook = compile_source(&engine, SourceFile::new("probe_loop.rhai", script), &[]).expect("probe loop");
    let adapters = rehearsal_adapters(&inventory, &[]).expect("twin").adapters;
    let exec = Arc::new(Executor::new(inventory.clone(), adapters, runtime.handle().clone(), Arc::new(NullSink)));
    let t = Instant::now();
    let outcome = pitcrew_stdlib::run(exec, RunRequest { playbook, ..request });
    let scripted = t.elapsed();
    assert_eq!(outcome.result, RunResult::Succeeded, "{:?}", outcome.error);
    println!("  step through Rhai (probe)        {:>6.2} us", scripted.as_secs_f64() * 1e6 / n as f64);
    println!("  peak RSS                         {:>6.1} MiB", peak_rss_mib());

    // The whole command as an operator runs it: preflight, locks, fsynced
    // journal, twin state saved after every change.
    let dir = tempfile::tempdir().expect("tmp");
    let inventory_path = dir.path().join("fleet.yaml");
    let playbook_path = dir.path().join("rolling_all.rhai");
    std::fs::write(&inventory_path, fleet(clusters, nodes / clusters)).expect("write fleet");
    std::fs::write(&playbook_path, ROLLING_ALL).expect("write playbook");
    let t = Instant::now();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_pitcrew"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(["rehearse", "-q", "--max-operations", "100000000"])
        .arg(&playbook_path)
        .arg("-i")
        .arg(&inventory_path)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run pitcrew");
    println!(
        "  `pitcrew rehearse` end to end (journal + twin state): {:.0} ms ({status})",
        t.elapsed().as_secs_f64() * 1e3
    );
}
