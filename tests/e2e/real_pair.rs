//! The standby-first workflow on a real Redis pair behind HAProxy, with a
//! writer running the whole time: no acknowledged write is lost and the
//! longest gap between acknowledged writes (the interruption users see) is
//! measured.

use crate::real::pair::{missing_on, RealPair, Writer, NEEDED};
use crate::real::servers_available;
use crate::support::{in_state, records, run_ids, Pitcrew};

fn run(pair: &RealPair, playbook: &str, extra: &[&str]) -> crate::support::Output {
    let inventory = pair.inventory();
    let mut args = vec!["run", playbook, "-i", inventory.as_str(), "--json", "--param", "cluster=db"];
    args.extend_from_slice(extra);
    in_state(&pair.state_dir(), &args)
}

fn standby_first(switch_back: bool, method: &str) {
    if !servers_available(NEEDED) {
        return;
    }
    let pair = RealPair::start(method);
    let writer = Writer::start(pair.front);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = run(&pair, "playbooks/standby_first.rhai", &["--param", &format!("switch_back={switch_back}")]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let report = writer.finish();
    out.expect_code(0);
    let primary = pair.primary();
    let missing = missing_on(primary, &report.acknowledged);
    eprintln!(
        "redis pair (switch_back={switch_back}, {method}): {} writes acknowledged, {} missing on {}, {} errors, longest gap {} ms; first errors {:?}",
        report.acknowledged.len(),
        missing.len(),
        primary.name,
        report.errors,
        report.longest_gap.as_millis(),
        report.first_errors
    );
    assert!(missing.is_empty(), "acknowledged writes lost: {:?}", &missing[..missing.len().min(10)]);
    assert!(report.acknowledged.len() > 100, "only {} writes acknowledged", report.acknowledged.len());
    assert!(report.longest_gap < std::time::Duration::from_secs(2), "users waited {:?}", report.longest_gap);
    assert_eq!(primary.name, if switch_back { "db-a" } else { "db-b" });
    for node in &pair.nodes {
        assert_eq!(node.reported_version(), "7.0.99", "{} runs the new version", node.name);
    }
    // The audit trail holds the sync reports around each switchover.
    let id = run_ids(&pair.state_dir()).pop().expect("run");
    let actions: Vec<String> = records(&pair.state_dir(), &id)
        .iter()
        .filter(|r| r["kind"] == "outcome" && r["ok"] == true)
        .filter_map(|r| r["action"].as_str().map(str::to_string))
        .collect();
    let phases: Vec<String> = records(&pair.state_dir(), &id)
        .iter()
        .filter(|r| r["kind"] == "outcome" && r["ok"] == true)
        .map(|r| {
            format!(
                "{} {} {:.2}s",
                r["action"].as_str().unwrap_or_default(),
                r["node"].as_str().unwrap_or(""),
                r["duration_s"].as_f64().unwrap_or_default()
            )
        })
        .collect();
    eprintln!("phases ({method}, switch_back={switch_back}): {}", phases.join(", "));
    let before_switch = actions.iter().position(|a| a == "switchover").expect("a switchover");
    assert_eq!(actions[before_switch - 1], "check_sync", "{actions:?}");
    let sync = records(&pair.state_dir(), &id)
        .into_iter()
        .find(|r| r["kind"] == "outcome" && r["action"] == "check_sync")
        .expect("sync");
    assert!(sync["result"]["replicas"][0]["link_up"] == true, "{sync}");
}

#[test]
fn standby_first_on_redis_loses_no_acknowledged_write() {
    standby_first(false, "auto");
}

#[test]
fn standby_first_on_redis_with_pause_and_swap_loses_no_acknowledged_write() {
    standby_first(false, "pause");
}

#[test]
fn standby_first_on_redis_switching_back_loses_no_acknowledged_write() {
    standby_first(true, "auto");
}

#[test]
fn a_broken_replication_link_makes_switchover_refuse_and_moves_nothing() {
    if !servers_available(NEEDED) {
        return;
    }
    let pair = RealPair::start("auto");
    // The replica follows a primary that does not exist: its link is down.
    pair.nodes[1].cli(&["replicaof", "127.0.0.1", "1"]);
    let p = Pitcrew::new();
    let playbook = p.file(
        "switch.rhai",
        "let db = cluster(\"db\");\ntry { check_sync(db); } catch (e) { log(`sync: ${e.message}`); }\nswitchover(db, db.passive());\n",
    );
    let out = run(&pair, &playbook, &[]);
    out.expect_code(3).expect_stderr("the last check_sync failed");
    assert_eq!(pair.nodes[0].role(), "master", "no traffic moved");
}

#[test]
fn a_validation_failure_after_switchover_fails_back_without_losing_writes() {
    if !servers_available(NEEDED) {
        return;
    }
    let pair = RealPair::start("auto");
    let p = Pitcrew::new();
    let playbook = p.file(
        "validate.rhai",
        "let db = cluster(\"db\");\nlet standby = db.passive();\npatch(standby);\nreboot(standby);\nwait_healthy(standby);\ncheck_sync(db);\nswitchover(db, standby);\nif param(\"fail\", true) { throw \"validation of the patched standby failed\"; }\n",
    );
    let writer = Writer::start(pair.front);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = run(&pair, &playbook, &[]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let report = writer.finish();
    out.expect_code(1).expect_stderr("validation of the patched standby failed");
    assert_eq!(out.json()["result"], "rolled_back");
    let primary = pair.primary();
    assert_eq!(primary.name, "db-a", "failed back to the unpatched node");
    assert_eq!(primary.reported_version(), "7.0.0");
    let missing = missing_on(primary, &report.acknowledged);
    assert!(missing.is_empty(), "acknowledged writes lost: {:?}", &missing[..missing.len().min(10)]);
}
