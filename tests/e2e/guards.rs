//! The runtime, not the playbook, refuses unsafe steps, before anything is touched.

use crate::support::{nodes, Pitcrew, DEMO};

const PATCH_ACTIVE: &str = "let db = cluster(\"db-pair\");\ncheck_sync(db);\npatch(db.active());\n";
const DRAIN_ALL: &str = "let web = cluster(\"web\");\nfor n in web.nodes {\n    drain(n);\n}\n";

fn refused(script: &str, extra: &[&str]) -> crate::support::Output {
    let p = Pitcrew::new();
    let path = p.file("play.rhai", script);
    p.args(["rehearse", path.as_str(), "-i", DEMO, "--json", "-q"]).args(extra).run()
}

#[test]
fn patching_the_active_node_is_refused_with_exit_3() {
    let out = refused(PATCH_ACTIVE, &[]);
    out.expect_code(3).expect_stderr("db-a is the active node").expect_stderr("play.rhai:3:1");
    let json = out.json();
    assert_eq!(json["result"], "refused");
    assert_eq!(json["steps"], 0, "nothing ran on the real twin");
}

#[test]
fn draining_every_pool_node_is_refused_before_the_first_drain() {
    let out = refused(DRAIN_ALL, &[]);
    out.expect_code(3).expect_stderr("below min_in_service 3").expect_stderr("nothing was touched");
    assert_eq!(out.json()["steps"], 0);
}

#[test]
fn without_preflight_the_guard_still_refuses_before_touching() {
    let p = Pitcrew::new();
    let path = p.file("play.rhai", PATCH_ACTIVE);
    let out = p.args(["run", path.as_str(), "-i", DEMO, "--json", "-q", "--no-preflight"]).run();
    out.expect_code(3);
    let json = out.json();
    assert_eq!(json["result"], "refused");
    assert!(nodes(&json).iter().all(|n| n.version == n.version_before), "nothing patched");
}

#[test]
fn a_refusal_after_changes_rolls_them_back() {
    let p = Pitcrew::new();
    let path = p.file("play.rhai", DRAIN_ALL);
    let out = p.args(["run", path.as_str(), "-i", DEMO, "--json", "-q", "--no-preflight"]).run();
    out.expect_code(1);
    let json = out.json();
    assert_eq!(json["result"], "rolled_back");
    assert!(nodes(&json).iter().all(|n| n.serving), "web-1 is back in service");
}

#[test]
fn a_step_that_would_overrun_the_maintenance_window_is_refused() {
    let p = Pitcrew::new();
    let text = std::fs::read_to_string(crate::support::root().join(DEMO)).expect("demo inventory");
    let inventory = p.file(
        "inv.yaml",
        &text.replacen(
            "maintenance_window: 2h\n    nodes:\n      - {",
            "maintenance_window: 5m\n    nodes:\n      - {",
            1,
        ),
    );
    let out = p.args(["rehearse", "playbooks/rolling_pool.rhai", "-i", inventory.as_str(), "--json", "-q"]).run();
    out.expect_code(3).expect_stderr("maintenance window closes at T+00:05:00.0");
}

#[test]
fn switchover_without_check_sync_is_refused() {
    let out = refused("let db = cluster(\"db-pair\");\nswitchover(db, db.passive());\n", &[]);
    out.expect_code(3).expect_stderr("no check_sync of this cluster before switching over to db-b");
}

#[test]
fn switchover_after_a_reboot_needs_a_new_check_sync() {
    let script =
        "let db = cluster(\"db-pair\");\nlet s = db.passive();\ncheck_sync(db);\nreboot(s);\nswitchover(db, s);\n";
    refused(script, &[]).expect_code(3).expect_stderr("the cluster changed since the last check_sync");
}

#[test]
fn domain_errors_are_catchable_in_playbooks() {
    let script = "let web = cluster(\"web\");\ntry {\n    patch(web.nodes[0]);\n} catch (e) {\n    log(`caught ${e.kind} on ${e.node}: ${e.hint}`);\n}\n";
    let p = Pitcrew::new();
    let path = p.file("play.rhai", script);
    let out = p.args(["rehearse", path.as_str(), "-i", DEMO]).run();
    out.expect_code(0).expect_stderr("caught refused on web-1: drain(web-1) first");
}

#[test]
fn an_explicit_rollback_undoes_the_run_and_exits_1() {
    let script = "let web = cluster(\"web\");\nlet n = web.nodes[0];\ndrain(n);\npatch(n);\nlet r = rollback();\nlog(`undid ${r.steps}`);\n";
    let p = Pitcrew::new();
    let path = p.file("play.rhai", script);
    let out = p.args(["rehearse", path.as_str(), "-i", DEMO, "--json"]).run();
    out.expect_code(1).expect_stderr("undid 2");
    let json = out.json();
    assert_eq!(json["result"], "rolled_back");
    assert!(nodes(&json).iter().all(|n| n.serving && n.version == "1.24.0"));
}
