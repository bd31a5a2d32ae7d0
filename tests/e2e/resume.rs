//! Crash safety: SIGKILL the runner at every step boundary and mid-step,
//! resume, and compare with an uninterrupted run. Plus the cluster locks.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::support::{in_state, kill_at, records, run_ids, spawn_paused, step_calls, Pitcrew, DEMO};

/// What must be equal between an interrupted-and-resumed run and a clean
/// one: the cluster's final state, the steps and what users saw. (Elapsed
/// simulated time may differ: a read-only step such as a probe that was cut
/// off is run again, and takes its time again.)
fn final_state(json: &Value) -> Value {
    serde_json::json!({
        "result": json["result"],
        "nodes": json["nodes"],
        "patched": json["patched"],
        "failed_requests": json["failed_requests"],
        "steps": json["steps"],
    })
}

/// Live (not reconciled) successful patches per node in a journal.
fn patches(state: &Path, run: &str) -> BTreeMap<String, usize> {
    let mut count = BTreeMap::new();
    for r in records(state, run) {
        if r["kind"] == "outcome" && r["action"] == "patch" && r["ok"] == true && r["reconciled"] == false {
            *count.entry(r["node"].as_str().unwrap_or_default().to_string()).or_default() += 1;
        }
    }
    count
}

fn sweep(playbook: &str, extra: &[&str]) -> usize {
    sweep_on(playbook, DEMO, extra)
}

fn sweep_on(playbook: &str, inventory: &str, extra: &[&str]) -> usize {
    let clean_dir = tempfile::tempdir().expect("tmp");
    let mut args = vec!["rehearse", playbook, "-i", inventory, "-q"];
    args.extend_from_slice(extra);
    let mut json_args = args.clone();
    json_args.push("--json");
    let clean = in_state(clean_dir.path(), &json_args);
    clean.expect_code(0);
    let expected = final_state(&clean.json());
    let clean_id = run_ids(clean_dir.path()).pop().expect("clean run");
    let calls: Vec<u64> = records(clean_dir.path(), &clean_id)
        .iter()
        .filter(|r| r["kind"] == "intent")
        .filter_map(|r| r["call"].as_u64())
        .collect();
    assert!(calls.len() >= 12, "{calls:?}");
    let mut tried = 0;
    for call in calls {
        for phase in ["intent", "call", "outcome"] {
            let dir = tempfile::tempdir().expect("tmp");
            assert!(kill_at(&args, dir.path(), &format!("{call}:{phase}")), "{playbook}: never reached {call}:{phase}");
            let id = run_ids(dir.path()).pop().expect("killed run");
            let resumed = in_state(dir.path(), &["resume", &id, "--json", "-q"]);
            resumed.expect_code(0);
            assert_eq!(final_state(&resumed.json()), expected, "{playbook} killed at {call}:{phase}");
            in_state(dir.path(), &["audit", "verify", &id]).expect_code(0);
            assert!(
                patches(dir.path(), &id).values().all(|&n| n <= 1),
                "{playbook} at {call}:{phase}: a node was patched twice"
            );
            tried += 1;
        }
    }
    tried
}

#[test]
fn rolling_pool_survives_sigkill_at_every_step_boundary_and_mid_step() {
    let tried = sweep("playbooks/rolling_pool.rhai", &[]);
    eprintln!("rolling_pool: {tried} kill points resumed to the uninterrupted final state");
    assert_eq!(tried, 24 * 3);
}

/// Parallel lanes number their calls in blocks of their own: a run killed
/// while two nodes are in flight resumes both, and no node is patched twice.
#[test]
fn a_parallel_batch_survives_sigkill_at_every_step_boundary_and_mid_step() {
    let tried = sweep_on("tests/fixtures/parallel/parallel.rhai", "tests/fixtures/parallel/pool.yaml", &[]);
    eprintln!("parallel: {tried} kill points resumed to the uninterrupted final state");
    assert_eq!(tried, 20 * 3);
}

#[test]
fn standby_first_survives_sigkill_at_every_step_boundary_and_mid_step() {
    let tried = sweep("playbooks/standby_first.rhai", &["--param", "switch_back=true"]);
    eprintln!("standby_first: {tried} kill points resumed to the uninterrupted final state");
    assert!(tried >= 15 * 3, "{tried}");
}

#[test]
fn a_killed_run_that_was_rolling_back_finishes_its_rollback_on_resume() {
    let args = ["rehearse", "playbooks/rolling_pool.rhai", "-i", DEMO, "-q", "--fault", "patch:web-2:fail"];
    let clean_dir = tempfile::tempdir().expect("tmp");
    let mut json_args = args.to_vec();
    json_args.push("--json");
    let clean = in_state(clean_dir.path(), &json_args);
    clean.expect_code(1);
    let id = run_ids(clean_dir.path()).pop().expect("run");
    // The first compensation of the final rollback.
    let undo = records(clean_dir.path(), &id)
        .iter()
        .filter(|r| r["kind"] == "intent" && r["action"] == "restore")
        .filter_map(|r| r["call"].as_u64())
        .next_back()
        .expect("a restore in the rollback");
    let dir = tempfile::tempdir().expect("tmp");
    assert!(kill_at(&args, dir.path(), &format!("{undo}:call")));
    let killed = run_ids(dir.path()).pop().expect("killed");
    let resumed = in_state(dir.path(), &["resume", &killed, "--json", "-q"]);
    resumed.expect_code(1);
    assert_eq!(final_state(&resumed.json()), final_state(&clean.json()));
}

#[test]
fn a_torn_last_record_is_set_aside_and_the_run_resumes() {
    let args = ["rehearse", "playbooks/rolling_pool.rhai", "-i", DEMO, "-q"];
    let dir = tempfile::tempdir().expect("tmp");
    let fourth = step_calls(&args)[3];
    assert!(kill_at(&args, dir.path(), &format!("{fourth}:intent")));
    let id = run_ids(dir.path()).pop().expect("killed");
    let path = dir.path().join("runs").join(format!("{id}.jsonl"));
    let text = std::fs::read_to_string(&path).expect("journal");
    // As if the machine lost power while the intent line was being written.
    std::fs::write(&path, &text[..text.len() - 30]).expect("tear");
    in_state(dir.path(), &["audit", "verify", &id]).expect_code(6);
    let resumed = in_state(dir.path(), &["resume", &id, "-q"]);
    resumed.expect_code(0);
    let side: Vec<_> = std::fs::read_dir(dir.path().join("runs"))
        .expect("runs")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains(".torn-"))
        .collect();
    assert_eq!(side.len(), 1, "the torn bytes are kept");
    in_state(dir.path(), &["audit", "verify", &id]).expect_code(0);
    assert!(records(dir.path(), &id).iter().any(|r| r["kind"] == "resumed" && r["repaired"].is_string()));
}

#[test]
fn resume_refuses_a_changed_playbook_or_module_and_a_finished_run() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = Pitcrew::new();
    let read = |f: &str| std::fs::read_to_string(crate::support::root().join(f)).expect("shipped file");
    let playbook = p.file("play.rhai", &read("playbooks/rolling_pool.rhai"));
    let module = p.file("lib/pool.rhai", &read("playbooks/lib/pool.rhai"));
    let args = ["rehearse", playbook.as_str(), "-i", DEMO, "-q"];
    assert!(kill_at(&args, dir.path(), "5:intent"));
    let id = run_ids(dir.path()).pop().expect("killed");
    std::fs::write(&module, read("playbooks/lib/pool.rhai").replace("probe(n);", "")).expect("edit module");
    in_state(dir.path(), &["resume", &id]).expect_code(2).expect_stderr("module lib/pool changed since run");
    std::fs::write(&module, read("playbooks/lib/pool.rhai")).expect("restore module");
    std::fs::write(&playbook, "log(\"something else\");\n").expect("edit");
    in_state(dir.path(), &["resume", &id]).expect_code(2).expect_stderr("the playbook changed since run");
    let done = tempfile::tempdir().expect("tmp");
    in_state(done.path(), &["rehearse", "playbooks/rolling_pool.rhai", "-i", DEMO, "-q"]).expect_code(0);
    let finished = run_ids(done.path()).pop().expect("run");
    in_state(done.path(), &["resume", &finished]).expect_code(2).expect_stderr("already finished");
}

#[test]
fn one_run_per_cluster_live_holders_block_and_stale_ones_need_break_lock() {
    let dir = tempfile::tempdir().expect("tmp");
    let args = ["rehearse", "playbooks/rolling_pool.rhai", "-i", DEMO, "-q"];
    // A live run, held at its fifth call.
    let mut holder = spawn_paused(&args, dir.path(), "5:intent").expect("the holder reaches call 5");
    let held_by = run_ids(dir.path()).pop().expect("holder run");
    let blocked = in_state(dir.path(), &args);
    blocked.expect_code(3).expect_stderr(&format!("cluster `web` is locked by run {held_by} (pid {}", holder.id()));
    // Other clusters are free.
    in_state(dir.path(), &["rehearse", "playbooks/standby_first.rhai", "-i", DEMO, "-q"]).expect_code(0);
    holder.kill().expect("SIGKILL");
    holder.wait().expect("reap");
    in_state(dir.path(), &args).expect_code(3).expect_stderr("stale lock");
    let mut breaking = args.to_vec();
    breaking.push("--break-lock");
    in_state(dir.path(), &breaking).expect_code(0);
    let newest = run_ids(dir.path()).pop().expect("breaker");
    let broke = records(dir.path(), &newest).into_iter().find(|r| r["kind"] == "lock_broken").expect("recorded");
    assert_eq!(broke["holder"]["run"], held_by.as_str());
}

#[test]
fn resume_asks_again_for_secrets_and_works_from_another_directory() {
    let dir = tempfile::tempdir().expect("tmp");
    let args = ["rehearse", "playbooks/rolling_pool.rhai", "-i", DEMO, "-q", "--param", "db_password=hunter2"];
    assert!(kill_at(&args, dir.path(), "patch@web-2:intent"));
    let id = run_ids(dir.path()).pop().expect("killed");
    in_state(dir.path(), &["resume", &id])
        .expect_code(2)
        .expect_stderr(&format!("pitcrew resume {id} --param db_password=VALUE"));
    // Resumed from elsewhere: the journal's relative paths resolve from where the run started.
    let elsewhere = tempfile::tempdir().expect("tmp");
    let mut command = Pitcrew::new()
        .args(["resume", &id, "--param", "db_password=hunter2", "-q"])
        .env("PITCREW_STATE_DIR", &dir.path().display().to_string())
        .command();
    let out = command.current_dir(elsewhere.path()).output().expect("resume");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!std::fs::read_to_string(dir.path().join("runs").join(format!("{id}.jsonl")))
        .expect("journal")
        .contains("hunter2"));
}

#[test]
fn each_run_on_the_persistent_sim_world_has_its_own_clock_and_figures() {
    let dir = tempfile::tempdir().expect("tmp");
    let args = ["run", "playbooks/rolling_pool.rhai", "-i", DEMO, "-q", "--json"];
    let first = in_state(dir.path(), &args);
    first.expect_code(0);
    let second = in_state(dir.path(), &args);
    second.expect_code(0);
    let (a, b) = (first.json(), second.json());
    // The second run patches 1.24.1 -> 1.24.1 and takes as long as the first, from T+0.
    assert!((a["duration_s"].as_f64().expect("d") - b["duration_s"].as_f64().expect("d")).abs() < 1.0, "{a} {b}");
    assert_eq!(a["traffic"]["requests"], b["traffic"]["requests"]);
    assert!(b["nodes"].as_array().expect("nodes").iter().all(|n| n["version_before"] == "1.24.1"));
}
