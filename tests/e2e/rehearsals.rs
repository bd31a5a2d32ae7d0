//! The shipped playbooks, rehearsed clean and with every documented fault.

use crate::support::{assert_service_on_unpatched_nodes, nodes, playbook, Pitcrew};

#[test]
fn standby_first_patches_both_nodes_with_zero_failed_requests() {
    let out = Pitcrew::rehearse(&playbook("standby_first.rhai"), &[]);
    out.expect_code(0);
    let json = out.json();
    assert_eq!(json["result"], "succeeded");
    assert_eq!(json["failed_requests"], 0);
    let interruption = json["interruption_s"].as_f64().expect("interruption");
    assert!(interruption > 0.0 && interruption < 1.0, "switchover holds users briefly: {interruption}");
    let nodes = nodes(&json);
    assert_eq!(nodes.len(), 2);
    for n in &nodes {
        assert_eq!((n.version_before.as_str(), n.version.as_str()), ("15.4", "15.6"), "{n:?}");
    }
    // Without switch_back the patched standby stays active.
    assert_eq!(nodes.iter().find(|n| n.serving).map(|n| n.name.as_str()), Some("db-b"));
}

#[test]
fn standby_first_switches_back_when_asked() {
    let out = Pitcrew::rehearse(
        &playbook("standby_first.rhai"),
        &["--param", "switch_back=true", "--param", "test_switchover=true"],
    );
    out.expect_code(0);
    let json = out.json();
    let nodes = nodes(&json);
    let active = nodes.iter().find(|n| n.role.as_deref() == Some("active")).expect("an active node");
    assert_eq!(active.name, "db-a");
    assert!(nodes.iter().all(|n| n.version == "15.6"));
    assert_eq!(json["failed_requests"], 0);
    // Two test switchovers plus two real ones, each holding users 0.4 s.
    let interruption = json["interruption_s"].as_f64().expect("interruption");
    assert!((interruption - 1.6).abs() < 1e-6, "{interruption}");
}

#[test]
fn rolling_pool_patches_every_node_without_a_failed_request() {
    let out = Pitcrew::rehearse(&playbook("rolling_pool.rhai"), &[]);
    out.expect_code(0);
    let json = out.json();
    assert_eq!(json["failed_requests"], 0);
    assert_eq!(json["interruption_s"], 0.0);
    let nodes = nodes(&json);
    assert_eq!(nodes.len(), 4);
    assert!(nodes.iter().all(|n| n.serving && n.version == "1.24.1"), "{nodes:#?}");
    assert_eq!(json["patched"].as_array().map(Vec::len), Some(4));
}

#[test]
fn micro_window_patches_the_fleet_in_batches() {
    let out =
        Pitcrew::new().args(["rehearse", &playbook("micro_window.rhai"), "-i", crate::support::DEMO, "--json"]).run();
    out.expect_code(0);
    out.expect_stderr("batch 4/4: app-10, app-11, app-12");
    let json = out.json();
    assert_eq!(json["failed_requests"], 0);
    let nodes = nodes(&json);
    assert_eq!(nodes.len(), 12);
    assert!(nodes.iter().all(|n| n.serving && n.version == "3.2.1"));
    // Twelve nodes with a 60 s watch after each of four batches is well over
    // twenty minutes of simulated time.
    assert!(json["duration_s"].as_f64().expect("duration") > 1200.0);
}

#[test]
fn failed_patch_in_the_pool_rolls_back_to_unpatched_serving_nodes() {
    let out = Pitcrew::new()
        .args([
            "rehearse",
            &playbook("rolling_pool.rhai"),
            "-i",
            crate::support::DEMO,
            "--json",
            "--fault",
            "patch:web-2:fail",
        ])
        .run();
    out.expect_code(1).expect_stderr("patch web-2: package manager exited with status 100");
    // Regression: unwinding web-2 alone inside `rolling` must not flag web-1,
    // which was patched on purpose and serves, as a failed rollback.
    assert!(!out.stderr.contains("rollback FAILED"), "{}", out.stderr);
    let json = out.json();
    assert_eq!(json["result"], "rolled_back");
    assert_eq!(json["failed_requests"], 0);
    assert_service_on_unpatched_nodes(&json, 4);
    assert_eq!(json["patched"].as_array().map(Vec::len), Some(0), "web-1 was restored");
}

#[test]
fn stuck_drain_times_out_and_returns_the_node_to_service() {
    let out = Pitcrew::rehearse(&playbook("rolling_pool.rhai"), &["--fault", "drain:web-3:stuck"]);
    out.expect_code(1).expect_stderr("connection(s) still open on web-3");
    let json = out.json();
    assert_eq!(json["error"]["domain_kind"], "timeout");
    assert_service_on_unpatched_nodes(&json, 4);
}

#[test]
fn standby_that_never_returns_leaves_the_active_serving_unpatched() {
    let out = Pitcrew::rehearse(&playbook("standby_first.rhai"), &["--fault", "reboot:db-b:hang"]);
    out.expect_code(1);
    let json = out.json();
    assert_eq!(json["result"], "rolled_back");
    assert_service_on_unpatched_nodes(&json, 1);
    let attention = json["rollback"]["attention"].as_array().expect("attention");
    assert!(
        attention.iter().any(|a| a.as_str().is_some_and(|a| a.starts_with("db-b: out of service, down"))),
        "{attention:?}"
    );
}

#[test]
fn lagging_replica_stops_the_run_before_anything_is_touched() {
    let out = Pitcrew::rehearse(&playbook("standby_first.rhai"), &["--fault", "sync:db-b:lag=30s"]);
    out.expect_code(1).expect_stderr("db-b lags 30.0s behind db-a");
    let json = out.json();
    assert_eq!(json["error"]["domain_kind"], "out_of_sync");
    assert_eq!(json["steps"], 1);
    assert_service_on_unpatched_nodes(&json, 1);
    assert!(nodes(&json).iter().all(|n| n.version == "15.4"));
}

#[test]
fn error_rate_above_threshold_halts_the_fleet_and_rolls_back() {
    let out = Pitcrew::rehearse(&playbook("micro_window.rhai"), &["--fault", "probe:app-05:errors=20%"]);
    out.expect_code(1).expect_stderr("after batch 2/4 (app-04, app-05, app-06) is above max_error_rate 1.00%");
    let json = out.json();
    assert_eq!(json["error"]["domain_kind"], "error_budget");
    assert_service_on_unpatched_nodes(&json, 12);
    // The bad patch did hurt users while it served: the twin counted it.
    assert!(json["failed_requests"].as_u64().expect("failed") > 0);
    // Batches 3 and 4 never started.
    let steps = json["steps"].as_u64().expect("steps");
    assert!(steps < 12 * 6, "{steps}");
}

#[test]
fn no_rollback_leaves_the_failed_node_drained_for_inspection() {
    let out = Pitcrew::rehearse(&playbook("rolling_pool.rhai"), &["--fault", "patch:web-2:fail", "--no-rollback"]);
    out.expect_code(1);
    let json = out.json();
    assert_eq!(json["result"], "failed");
    assert!(json["rollback"].is_null());
    let nodes = nodes(&json);
    let web2 = nodes.iter().find(|n| n.name == "web-2").expect("web-2");
    assert!(!web2.serving, "web-2 stays drained: {web2:?}");
    let web1 = nodes.iter().find(|n| n.name == "web-1").expect("web-1");
    assert_eq!(web1.version, "1.24.1", "web-1 keeps its patch");
}

#[test]
fn run_on_sim_adapters_behaves_like_a_rehearsal() {
    let out =
        Pitcrew::new().args(["run", &playbook("rolling_pool.rhai"), "-i", crate::support::DEMO, "--json", "-q"]).run();
    out.expect_code(0);
    assert_eq!(out.json()["mode"], "run");
}

#[test]
fn progress_has_one_line_per_step_and_a_summary() {
    let out = Pitcrew::new().args(["rehearse", &playbook("rolling_pool.rhai"), "-i", crate::support::DEMO]).run();
    out.expect_code(0);
    let step_lines = out.stderr.lines().filter(|l| l.starts_with("T+") && l.contains(" ok ")).count();
    assert_eq!(step_lines, 4 * 6, "{}", out.stderr);
    for field in ["result      succeeded (exit 0)", "patched     4", "users       0 failed of", "run id"] {
        out.expect_stderr(field);
    }
    assert!(out.stdout.is_empty(), "without --json stdout stays empty");
}

#[test]
fn log_format_json_writes_one_object_per_event_for_log_shippers() {
    let out = Pitcrew::new()
        .args(["rehearse", &playbook("micro_window.rhai"), "-i", crate::support::DEMO, "--log-format", "json"])
        .run();
    out.expect_code(0);
    let events: Vec<serde_json::Value> = out
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON object ({e}): {l}")))
        .collect();
    let kinds = |k: &str| events.iter().filter(|e| e["kind"] == k).count();
    assert_eq!(kinds("step_finished"), 72, "12 nodes x 6 steps");
    assert_eq!(kinds("batch_started"), 4);
    assert_eq!(kinds("batch_finished"), 4);
    assert_eq!(kinds("run_finished"), 1);
    let last = events.last().expect("events");
    assert_eq!(last["result"], "succeeded");
    assert_eq!(last["exit_code"], 0);
}

#[test]
fn verbose_shows_step_starts_and_quiet_only_the_summary() {
    let verbose = Pitcrew::new()
        .args(["rehearse", &playbook("rolling_pool.rhai"), "-i", crate::support::DEMO, "-v", "--log-format", "plain"])
        .run();
    verbose.expect_code(0).expect_stderr("web-1      drain ...");
    let quiet =
        Pitcrew::new().args(["rehearse", &playbook("rolling_pool.rhai"), "-i", crate::support::DEMO, "-q"]).run();
    quiet.expect_code(0);
    assert!(!quiet.stderr.contains(" drain "), "{}", quiet.stderr);
    assert!(quiet.stderr.contains("result      succeeded (exit 0)"), "{}", quiet.stderr);
}

#[test]
fn a_terminal_gets_the_live_progress_view() {
    // `script` gives the command a pseudo-terminal, as an operator's shell would.
    let command = format!(
        "{} rehearse playbooks/micro_window.rhai -i {} --pace 6000",
        env!("CARGO_BIN_EXE_pitcrew"),
        crate::support::DEMO
    );
    let state = tempfile::tempdir().expect("tmp");
    let out = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .current_dir(crate::support::root())
        .env("PITCREW_STATE_DIR", state.path())
        .output()
        .expect("script (util-linux) runs");
    assert!(out.status.success(), "{out:?}");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(screen.contains("nodes patched"), "no progress bar:\n{screen}");
    assert!(screen.contains("batch 4/4 · app-12"), "no batch/node/step line:\n{screen}");
    assert!(screen.contains("12/12 nodes patched"), "the bar did not reach 12/12:\n{screen}");
}

/// The steps of a rehearsal as `action node`, from its JSON log.
fn step_lines(args: &[&str]) -> (crate::support::Output, Vec<String>) {
    let mut all = args.to_vec();
    all.extend(["--log-format", "json"]);
    let out = Pitcrew::new().args(all).run();
    let steps = out
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["kind"] == "step_finished")
        .map(|e| format!("{} {} {}", e["action"].as_str().unwrap_or(""), e["node"].as_str().unwrap_or(""), e["status"]))
        .collect();
    (out, steps)
}

/// A parallel batch on the twin: its nodes take turns step by step, so
/// every drain of the batch comes before its first patch, the same way on
/// every rehearsal; and the drain guard counts the other lanes' drains.
#[test]
fn a_parallel_batch_interleaves_its_nodes_the_same_way_every_time() {
    let args = ["rehearse", "tests/fixtures/parallel/parallel.rhai", "-i", "tests/fixtures/parallel/pool.yaml"];
    let (out, first) = step_lines(&args);
    out.expect_code(0);
    let (_, second) = step_lines(&args);
    assert_eq!(first, second, "two rehearsals of the same parallel playbook differ");
    assert_eq!(first.len(), 20, "{first:#?}");
    let ok = |s: &str| format!("{s} \"ok\"");
    assert_eq!(first[..4], [ok("drain web-1"), ok("drain web-2"), ok("patch web-1"), ok("patch web-2")], "{first:#?}");
    // Three at once would leave one node serving, below min_in_service 2:
    // the third lane's drain is refused although the others' are not done.
    let (out, _) = step_lines(&[&args[..], &["--param", "batch=3"]].concat());
    out.expect_code(3)
        .expect_stderr("drain web-3: draining web-3 would leave 1 node(s) in service (web-4), below min_in_service 2");
}
