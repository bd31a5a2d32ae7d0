//! The rendered form of every kind of error an operator can cause, pinned
//! with snapshots (tests/e2e/snapshots/). A change to how pitcrew reports
//! an error shows up as a snapshot diff to review (`cargo insta review`).

use crate::support::{Pitcrew, DEMO};

const DIR: &str = "tests/fixtures/diagnostics";

/// stderr with what changes from run to run (run ids, wall times) masked.
fn stderr_of(args: &[&str]) -> (i32, String) {
    let out = Pitcrew::new().args(args).run();
    (out.code, out.stderr)
}

fn snapshot(name: &str, args: &[&str], code: i32) {
    let (got, stderr) = stderr_of(args);
    assert_eq!(got, code, "exit code of {args:?}:\n{stderr}");
    insta::with_settings!({
        snapshot_path => "snapshots",
        prepend_module_to_snapshot => false,
        description => args.join(" "),
        filters => vec![
            (r"\d{8}T\d{6}-[0-9a-f]{4}", "[run id]"),
            (r"in \d+ ms wall", "in [wall] ms wall"),
        ],
    }, {
        insta::assert_snapshot!(name, stderr);
    });
}

fn fixture(name: &str) -> String {
    format!("{DIR}/{name}")
}

#[test]
fn a_playbook_syntax_error() {
    snapshot("syntax", &["check", &fixture("syntax.rhai")], 2);
}

#[test]
fn static_check_findings() {
    snapshot("checks", &["check", &fixture("checks.rhai"), "-i", DEMO], 2);
}

#[test]
fn an_inventory_with_an_unknown_key() {
    snapshot("inventory_unknown_key", &["check", &fixture("syntax.rhai"), "-i", &fixture("bad-inventory.yaml")], 2);
}

#[test]
fn an_inventory_whose_policy_cannot_hold() {
    snapshot("inventory_policy", &["check", &fixture("refused.rhai"), "-i", &fixture("small-pool.yaml")], 2);
}

#[test]
fn a_guard_refusal() {
    snapshot("guard_refusal", &["rehearse", &fixture("refused.rhai"), "-i", DEMO, "-q"], 3);
}

#[test]
fn an_adapter_failure_inside_a_module() {
    let args = ["rehearse", &fixture("module_failure.rhai"), "-i", DEMO, "-q", "--fault", "patch:web-2:fail"];
    snapshot("module_step_failure", &args, 1);
}

#[test]
fn a_module_that_does_not_parse() {
    snapshot("module_syntax", &["check", &fixture("module_syntax.rhai")], 2);
}

#[test]
fn a_module_with_side_effects_and_a_misnamed_function() {
    snapshot("module_effects", &["check", &fixture("module_effects.rhai"), "-i", DEMO], 2);
}

#[test]
fn an_import_that_resolves_nowhere() {
    snapshot("missing_import", &["check", &fixture("missing_import.rhai")], 2);
}

#[test]
fn a_thrown_error() {
    snapshot("thrown", &["rehearse", &fixture("thrown.rhai"), "-i", DEMO, "-q"], 2);
}

#[test]
fn an_endless_loop() {
    snapshot("endless", &["rehearse", &fixture("endless.rhai"), "-i", DEMO, "-q", "--max-operations", "10000"], 2);
}
