//! Every built-in's documented example runs against the sim twin of the
//! demo inventory, so the reference cannot go stale; and cancellation
//! cannot be caught by a playbook.

use std::sync::Arc;
use std::time::Duration;

use pitcrew_plugins::rehearsal_adapters;
use pitcrew_runtime::event::NullSink;
use pitcrew_runtime::{Executor, Inventory};
use pitcrew_stdlib::{compile_source, new_engine, Limits, RunOutcome, RunRequest, StopKind};

fn demo() -> Arc<Inventory> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../playbooks/inventories/demo.yaml");
    Arc::new(Inventory::load(std::path::Path::new(path)).expect("demo inventory"))
}

fn rehearse(runtime: &tokio::runtime::Runtime, name: &str, script: &str, cancel_after: Option<Duration>) -> RunOutcome {
    let inventory = demo();
    let engine = new_engine(&Limits::default(), Vec::new(), None);
    let playbook = compile_source(&engine, pitcrew_runtime::SourceFile::new(name, script.to_string()), &[])
        .unwrap_or_else(|e| panic!("{name} does not compile: {e}\n{script}"));
    let adapters = rehearsal_adapters(&inventory, &[]).expect("twin").adapters;
    let exec = Arc::new(Executor::new(inventory, adapters, runtime.handle().clone(), Arc::new(NullSink)));
    if let Some(after) = cancel_after {
        let token = exec.cancel_token();
        std::thread::spawn(move || {
            std::thread::sleep(after);
            token.cancel();
        });
    }
    let request = RunRequest {
        playbook,
        params: Default::default(),
        rollback_on_failure: true,
        limits: Limits { max_operations: u64::MAX / 2, ..Limits::default() },
    };
    pitcrew_stdlib::run(exec, request)
}

/// The ```rhai blocks of every registered function's doc comment.
fn documented_examples() -> Vec<(String, String)> {
    let engine = new_engine(&Limits::default(), Vec::new(), None);
    let metadata: serde_json::Value =
        serde_json::from_str(&engine.gen_fn_metadata_to_json(false).expect("metadata")).expect("metadata json");
    let mut examples = Vec::new();
    for f in metadata["functions"].as_array().expect("functions") {
        let name = f["name"].as_str().unwrap_or_default().to_string();
        let comments: Vec<&str> =
            f["docComments"].as_array().map(|c| c.iter().filter_map(|l| l.as_str()).collect()).unwrap_or_default();
        let text: Vec<String> = comments
            .iter()
            .flat_map(|c| c.lines())
            .map(|l| l.trim_start_matches("///").trim_start().to_string())
            .collect();
        let mut block: Option<Vec<String>> = None;
        for line in text {
            match (&mut block, line.trim()) {
                (None, "```rhai") => block = Some(Vec::new()),
                (Some(b), "```") => {
                    examples.push((name.clone(), b.join("\n")));
                    block = None;
                }
                (Some(b), _) => b.push(line),
                _ => {}
            }
        }
    }
    examples
}

#[test]
fn every_builtin_example_runs_on_the_sim() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let examples = documented_examples();
    for required in [
        "drain",
        "undrain",
        "patch",
        "reboot",
        "wait_healthy",
        "probe",
        "check_sync",
        "switchover",
        "rollback",
        "facts",
        "rolling",
        "param",
        "log",
        "sleep",
        "cluster",
    ] {
        assert!(
            examples.iter().any(|(n, _)| n == required),
            "{required} has no example; documented: {:?}",
            examples.iter().map(|e| &e.0).collect::<Vec<_>>()
        );
    }
    for (name, script) in &examples {
        let outcome = rehearse(&runtime, name, script, None);
        assert!(outcome.error.is_none(), "example of {name} failed: {:?}\n{script}", outcome.error);
    }
}

#[test]
fn cancellation_is_not_catchable() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let script = "let caught = 0;\nloop {\n    try { sleep(1); } catch (e) { caught += 1; }\n}\n";
    let outcome = rehearse(&runtime, "cancel.rhai", script, Some(Duration::from_millis(50)));
    let error = outcome.error.expect("the run stops");
    assert_eq!(error.stop, StopKind::Cancelled, "{error:?}");
}

#[test]
fn a_cancelled_run_rolls_back_what_it_changed() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let script = "let n = cluster(\"web\").nodes[0];\ndrain(n);\npatch(n);\nloop { sleep(1); }\n";
    let outcome = rehearse(&runtime, "cancel.rhai", script, Some(Duration::from_millis(50)));
    assert_eq!(outcome.error.map(|e| e.stop), Some(StopKind::Cancelled));
    assert_eq!(outcome.result, pitcrew_stdlib::RunResult::RolledBack);
    assert!(outcome.nodes.iter().all(|n| n.serving && n.version == n.version_before), "{:?}", outcome.nodes);
}
