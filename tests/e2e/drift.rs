//! Drift between peers and since the last run, and drift(c) in a playbook.

use crate::support::{assert_service_on_unpatched_nodes, in_state, Pitcrew, DEMO};

#[test]
fn peers_that_differ_are_reported_fact_by_fact() {
    let dir = tempfile::tempdir().expect("tmp");
    in_state(dir.path(), &["drift", "-i", DEMO]).expect_code(0);
    let out =
        in_state(dir.path(), &["drift", "-i", DEMO, "--cluster", "db-pair", "--fault", "drift:db-b:openssl=3.0.2"]);
    out.expect_code(5);
    assert!(
        out.stdout.contains("packages.openssl") && out.stdout.contains("db-b=3.0.2") && out.stdout.contains("CRITICAL"),
        "{}",
        out.stdout
    );
    // The change happened in the world: it stays until something changes it back.
    let json = in_state(dir.path(), &["drift", "-i", DEMO, "--json"]);
    json.expect_code(5);
    let report: serde_json::Value = serde_json::from_str(&json.stdout).expect("json");
    assert_eq!(report["peers"][0]["fact"], "packages.openssl");
    assert_eq!(report["peers"][0]["critical"], true);
}

#[test]
fn changes_since_the_last_run_are_reported_per_node() {
    let dir = tempfile::tempdir().expect("tmp");
    in_state(dir.path(), &["run", "playbooks/standby_first.rhai", "-i", DEMO, "-q"]).expect_code(0);
    // The run's own changes (both nodes patched) are explained: no drift.
    in_state(dir.path(), &["drift", "-i", DEMO, "--cluster", "db-pair"])
        .expect_code(0)
        .expect_stderr("0 change(s) since the last run");
    let out = in_state(
        dir.path(),
        &["drift", "-i", DEMO, "--cluster", "db-pair", "--fault", "drift:db-a:kernel=6.1.0-27-amd64"],
    );
    out.expect_code(5);
    assert!(out.stdout.contains("changed since the last run"), "{}", out.stdout);
    assert!(
        out.stdout.contains("db-a       kernel") && out.stdout.contains("6.1.0-26-amd64 -> 6.1.0-27-amd64"),
        "{}",
        out.stdout
    );
    // A second run patches the world that the first one left: 15.6 stays 15.6.
    let again = Pitcrew::new()
        .args(["run", "playbooks/rolling_pool.rhai", "-i", DEMO, "--json", "-q"])
        .env("PITCREW_STATE_DIR", &dir.path().display().to_string())
        .run();
    again.expect_code(0);
}

#[test]
fn standby_first_refuses_to_switch_to_a_peer_with_critical_drift() {
    let out = Pitcrew::rehearse("playbooks/standby_first.rhai", &["--fault", "drift:db-b:openssl=3.0.2"]);
    out.expect_code(1).expect_stderr("refusing to switch over: db-pair peers differ in packages.openssl");
    let json = out.json();
    assert_eq!(json["result"], "rolled_back");
    assert_service_on_unpatched_nodes(&json, 1);
}
