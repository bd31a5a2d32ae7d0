//! The rolling drain-stop workflow on real servers: HAProxy, three HTTP
//! backends (one patched over SSH), continuous client load. What users see
//! is measured, not assumed.

use crate::real::pool::{RealPool, NEEDED};
use crate::real::{servers_available, Load};
use crate::support::{in_state, kill_at, records, run_ids, Pitcrew};

fn pitcrew_run(pool: &RealPool, playbook: &str, extra: &[&str]) -> crate::support::Output {
    let inventory = pool.inventory();
    let mut args = vec!["run", playbook, "-i", inventory.as_str(), "--json"];
    args.extend_from_slice(extra);
    in_state(&pool.state_dir(), &args)
}

#[test]
fn rolling_pool_patches_every_backend_with_zero_failed_requests_under_load() {
    if !servers_available(NEEDED) {
        return;
    }
    let pool = RealPool::start();
    let load = Load::start(&pool.url(), 4);
    let out = pitcrew_run(&pool, "playbooks/rolling_pool.rhai", &[]);
    let report = load.finish(2_000);
    out.expect_code(0);
    eprintln!(
        "real pool: {} requests, {} failed, max latency {} ms; errors: {:?}",
        report.requests,
        report.failed,
        report.max_latency.as_millis(),
        report.errors.iter().take(3).collect::<Vec<_>>()
    );
    assert!(report.requests >= 2_000, "{report:?}");
    assert_eq!(report.failed, 0, "users saw failures: {:?}", report.errors.iter().take(5).collect::<Vec<_>>());
    for backend in &pool.backends {
        assert_eq!(backend.serving(), "2.0.0", "{} serves the new version", backend.name);
    }
    // The audit trail shows drain -> patch -> reboot -> healthy -> smoke test -> ready, per node.
    let id = run_ids(&pool.state_dir()).pop().expect("run");
    let records = records(&pool.state_dir(), &id);
    for backend in &pool.backends {
        let steps: Vec<&str> = records
            .iter()
            .filter(|r| r["kind"] == "outcome" && r["node"] == backend.name.as_str() && r["ok"] == true)
            .filter_map(|r| r["action"].as_str())
            .collect();
        assert_eq!(steps, ["drain", "patch", "reboot", "wait_healthy", "probe", "undrain"], "{}", backend.name);
    }
    let over_ssh = records
        .iter()
        .filter(|r| r["kind"] == "outcome" && r["node"] == "web-2" && r["action"] == "patch")
        .flat_map(|r| r["commands"].as_array().cloned().unwrap_or_default())
        .any(|c| c["via"] == "ssh" && c["status"] == 0);
    assert!(over_ssh, "web-2 was patched over SSH");
    // Figures for the closing note: drain time per node, and what the shell
    // adapter adds to a step beyond the commands it ran.
    let outcomes: Vec<&serde_json::Value> =
        records.iter().filter(|r| r["kind"] == "outcome" && r["ok"] == true).collect();
    let drains: Vec<String> = outcomes
        .iter()
        .filter(|r| r["action"] == "drain")
        .map(|r| {
            format!(
                "{} {:.0} ms",
                r["node"].as_str().unwrap_or_default(),
                r["duration_s"].as_f64().unwrap_or_default() * 1e3
            )
        })
        .collect();
    let overheads: Vec<f64> = outcomes
        .iter()
        .filter(|r| r["action"] == "patch")
        .map(|r| {
            let commands: f64 =
                r["commands"].as_array().map_or(0.0, |c| c.iter().filter_map(|c| c["duration_s"].as_f64()).sum());
            (r["duration_s"].as_f64().unwrap_or_default() - commands) * 1e3
        })
        .collect();
    eprintln!(
        "drain times: {}; shell overhead per patch step beyond its commands: {overheads:.1?} ms; run wall {} ms",
        drains.join(", "),
        out.json()["wall_ms"]
    );
    // Regression: drift on real hosts returns (it once hung reaping its
    // commands) and finds nothing after the run (boot ids are not drift).
    in_state(&pool.state_dir(), &["drift", "-i", &pool.inventory()]).expect_code(0);
    let drain = records.iter().find(|r| r["kind"] == "outcome" && r["action"] == "drain").expect("a drain");
    assert!(drain["commands"][0]["command"].as_str().is_some_and(|c| c.contains("state drain")), "{drain}");
}

#[test]
fn patching_without_draining_is_refused_and_users_see_nothing() {
    if !servers_available(NEEDED) {
        return;
    }
    let pool = RealPool::start();
    let p = Pitcrew::new();
    let playbook = p.file("careless.rhai", "for n in cluster(\"web\").nodes { patch(n); reboot(n); }\n");
    let load = Load::start(&pool.url(), 2);
    let out = pitcrew_run(&pool, &playbook, &[]);
    let report = load.finish(300);
    out.expect_code(3).expect_stderr("web-1 is in service");
    assert_eq!(report.failed, 0, "{:?}", report.errors.iter().take(5).collect::<Vec<_>>());
    assert!(pool.backends.iter().all(|b| b.installed() == "1.0.0"));
}

#[test]
fn a_failed_patch_is_rolled_back_to_the_old_version_with_zero_failed_requests() {
    if !servers_available(NEEDED) {
        return;
    }
    let pool = RealPool::start();
    std::fs::write(pool.backends[1].dir.join("fail_patch"), "").expect("fault");
    let load = Load::start(&pool.url(), 4);
    let out = pitcrew_run(&pool, "playbooks/rolling_pool.rhai", &[]);
    let report = load.finish(1_000);
    out.expect_code(1).expect_stderr("broken package (test fault)");
    assert_eq!(report.failed, 0, "{:?}", report.errors.iter().take(5).collect::<Vec<_>>());
    let json = out.json();
    assert_eq!(json["result"], "rolled_back");
    for backend in &pool.backends {
        assert_eq!(backend.serving(), "1.0.0", "{} serves the old version", backend.name);
    }
    assert!(json["nodes"].as_array().expect("nodes").iter().all(|n| n["serving"] == true), "{json}");
}

#[test]
fn sigkill_while_a_backend_is_drained_then_resume_ends_with_all_in_service() {
    if !servers_available(NEEDED) {
        return;
    }
    let pool = RealPool::start();
    let inventory = pool.inventory();
    let args = ["run", "playbooks/rolling_pool.rhai", "-i", inventory.as_str(), "-q"];
    // At the patch of web-2: drained, not yet patched.
    let load = Load::start(&pool.url(), 2);
    assert!(kill_at(&args, &pool.state_dir(), "patch@web-2:intent"));
    let id = run_ids(&pool.state_dir()).pop().expect("killed run");
    let resumed = in_state(&pool.state_dir(), &["resume", &id, "--json", "-q"]);
    let report = load.finish(500);
    resumed.expect_code(0);
    assert_eq!(report.failed, 0, "{:?}", report.errors.iter().take(5).collect::<Vec<_>>());
    let json = resumed.json();
    assert!(
        json["nodes"].as_array().expect("nodes").iter().all(|n| n["serving"] == true && n["version"] == "2.0.0"),
        "{json}"
    );
}
