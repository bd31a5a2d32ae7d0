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

/// `hosts` local `shell` hosts, directories `h1`, `h2`, ... under the test's
/// directory, each with `version` 1.0 and `connections` 0, as one pool
/// (`min_in_service: 2`) in `shell-pool.yaml`. `vars` is added to each
/// node's vars (`, key: value`); `commands`, one per line, come after the
/// ones every pool here shares (version, restore, reboot, boot id,
/// in service); `concerns` is the cluster's `adapters:` map.
fn shell_pool(p: &Pitcrew, hosts: usize, vars: &str, commands: &str, concerns: &str) -> String {
    let mut nodes = String::new();
    for i in 1..=hosts {
        let dir = p.dir_path().join(format!("h{i}"));
        std::fs::create_dir_all(&dir).expect("host dir");
        std::fs::write(dir.join("version"), "1.0\n").expect("version");
        std::fs::write(dir.join("connections"), "0\n").expect("connections");
        nodes.push_str(&format!("      - {{ name: h{i}, vars: {{ dir: \"{}\"{vars} }} }}\n", dir.display()));
    }
    let shared = "version: cat {{vars.dir}}/version
restore: echo {{version}} > {{vars.dir}}/version
reboot: date +%s%N > {{vars.dir}}/boot_id
boot_id: cat {{vars.dir}}/boot_id 2>/dev/null || echo none
in_service: test ! -f {{vars.dir}}/drained";
    let commands: String = shared.lines().chain(commands.lines()).map(|c| format!("        {c}\n")).collect();
    p.file(
        "shell-pool.yaml",
        &format!(
            "adapters:\n  hosts:\n    kind: shell\n    settings:\n      poll_interval: 10ms\n      commands:\n{commands}\
             clusters:\n  pool:\n    kind: pool\n    adapters: {concerns}\n    policy: {{ min_in_service: 2 }}\n    nodes:\n{nodes}"
        ),
    )
}

/// A pool whose traffic and probe concerns are `shell` commands on local
/// files: the rolling playbook patches every node, and the guards use the
/// `in_service` command (a patch of a node still in service is refused).
#[test]
fn a_shell_pool_drains_patches_probes_and_is_guarded() {
    let p = Pitcrew::new();
    let root = p.dir_path();
    let inventory = shell_pool(
        &p,
        3,
        "",
        "patch: echo 2.0 > {{vars.dir}}/version
health: test -f {{vars.dir}}/version
drain: touch {{vars.dir}}/drained
undrain: rm -f {{vars.dir}}/drained
connections: cat {{vars.dir}}/connections
probe: grep -qx 2.0 {{vars.dir}}/version",
        "{ host: hosts, traffic: hosts, probe: hosts }",
    );
    let state = root.join("state").display().to_string();
    let run = |playbook: &str, extra: &[&str]| {
        Pitcrew::new()
            .env("PITCREW_STATE_DIR", &state)
            .args(["run", playbook, "-i", inventory.as_str(), "-q", "--json"])
            .args(extra)
            .run()
    };
    let out = run("playbooks/rolling_pool.rhai", &["--param", "cluster=pool"]);
    out.expect_code(0);
    for i in 1..=3 {
        let dir = root.join(format!("h{i}"));
        assert_eq!(std::fs::read_to_string(dir.join("version")).expect("version"), "2.0\n");
        assert!(!dir.join("drained").exists(), "h{i} is back in service");
    }
    assert_eq!(out.json()["steps"], 18);
    // A node that is out of service by hand is not counted as serving: the
    // second drain would leave one node serving, below min_in_service 2.
    std::fs::write(root.join("h3/drained"), "").expect("drain h3 by hand");
    let two = p.file("two.rhai", "let c = cluster(\"pool\");\ndrain(c.nodes[0]);\n");
    run(two.as_str(), &["--no-preflight"]).expect_code(3).expect_stderr("below min_in_service 2");
}

/// Four `shell` hosts that log their drains, undrains and patches to one file.
/// A host is unhealthy while its directory holds a `broken` file.
fn logging_shell_pool(p: &Pitcrew) -> (String, std::path::PathBuf) {
    let log = p.dir_path().join("events.log");
    let inventory = shell_pool(
        p,
        4,
        &format!(", log: \"{}\"", log.display()),
        "patch: echo patch-start {{node}} >> {{vars.log}}; sleep 0.3; echo 2.0 > {{vars.dir}}/version; echo patch-end {{node}} >> {{vars.log}}
health: test -f {{vars.dir}}/version && ! test -f {{vars.dir}}/broken
drain: touch {{vars.dir}}/drained; echo drain {{node}} >> {{vars.log}}
undrain: rm -f {{vars.dir}}/drained; echo undrain {{node}} >> {{vars.log}}",
        "{ host: hosts, traffic: hosts }",
    );
    (inventory, log)
}

/// The most nodes out of service at once, and the most patches at once.
fn peaks(log: &std::path::Path) -> (usize, usize) {
    let text = std::fs::read_to_string(log).expect("events log");
    let (mut out, mut patching, mut max_out, mut max_patching) = (0i32, 0i32, 0i32, 0i32);
    for line in text.lines() {
        match line.split_whitespace().next() {
            Some("drain") => out += 1,
            Some("undrain") => out -= 1,
            Some("patch-start") => patching += 1,
            Some("patch-end") => patching -= 1,
            _ => {}
        }
        (max_out, max_patching) = (max_out.max(out), max_patching.max(patching));
    }
    (max_out as usize, max_patching as usize)
}

/// `parallel: true` on real commands: a batch's nodes are patched at once,
/// and a batch bigger than the policy allows is cut by the drain guard even
/// though the drains race: never more than two nodes out of four.
#[test]
fn a_parallel_batch_of_shell_hosts_runs_at_once_within_the_policy() {
    let p = Pitcrew::new();
    let (inventory, log) = logging_shell_pool(&p);
    let playbook = p.file(
        "parallel.rhai",
        "rolling(cluster(\"pool\").nodes, #{ batch: param(\"batch\", 2), parallel: true }, |n| {\n    drain(n); patch(n); reboot(n); undrain(n);\n});\n",
    );
    let state = p.dir_path().join("state").display().to_string();
    let run = |extra: &[&str]| {
        Pitcrew::new()
            .env("PITCREW_STATE_DIR", &state)
            .args(["run", playbook.as_str(), "-i", inventory.as_str(), "-q", "--json", "--no-preflight"])
            .args(extra)
            .run()
    };
    run(&[]).expect_code(0);
    let (max_out, max_patching) = peaks(&log);
    assert_eq!((max_out, max_patching), (2, 2), "{}", std::fs::read_to_string(&log).unwrap_or_default());
    for i in 1..=4 {
        let version = std::fs::read_to_string(p.dir_path().join(format!("h{i}/version"))).expect("version");
        assert_eq!(version, "2.0\n", "h{i}");
    }
    // Three at once: the drain guard lets two go and refuses one, whatever
    // order the lanes reach it in; the run fails and rolls back.
    for i in 1..=4 {
        std::fs::write(p.dir_path().join(format!("h{i}/version")), "1.0\n").expect("reset");
    }
    std::fs::remove_file(&log).expect("clear the log");
    let out = run(&["--param", "batch=3"]);
    out.expect_code(1).expect_stderr("below min_in_service 2");
    assert_eq!(out.json()["result"], "rolled_back");
    let (max_out, _) = peaks(&log);
    assert!(max_out <= 2, "{max_out} nodes were out at once:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
    for i in 1..=4 {
        let dir = p.dir_path().join(format!("h{i}"));
        assert_eq!(std::fs::read_to_string(dir.join("version")).expect("version"), "1.0\n", "h{i} restored");
        assert!(!dir.join("drained").exists(), "h{i} is back in service");
    }
}

/// What pitcrew remembers of a node never vouches for its health after a
/// patch: a patch that breaks the node a moment after its drain leaves the
/// undrain refused, well within `observation_max_age`.
#[test]
fn an_undrain_right_after_a_patch_that_broke_the_node_is_refused() {
    let p = Pitcrew::new();
    let (inventory, _) = logging_shell_pool(&p);
    let broken = p.dir_path().join("h1/broken");
    let playbook = p.file("break.rhai", "let n = cluster(\"pool\").nodes[0];\ndrain(n);\npatch(n);\nundrain(n);\n");
    // The patch command itself leaves the node broken.
    let inventory_text = std::fs::read_to_string(&inventory).expect("inventory");
    let breaking = inventory_text.replace("sleep 0.3; echo 2.0 >", &format!("touch {}; echo 2.0 >", broken.display()));
    assert_ne!(breaking, inventory_text, "the patch command was found");
    std::fs::write(&inventory, breaking).expect("inventory");
    let out = Pitcrew::new()
        .env("PITCREW_STATE_DIR", &p.dir_path().join("state").display().to_string())
        // Without rollback: a restore would wait for the broken node's health.
        .args(["run", playbook.as_str(), "-i", inventory.as_str(), "-q", "--no-preflight", "--no-rollback"])
        .run();
    out.expect_code(1).expect_stderr("h1 is not healthy; putting it in service would send users to a broken node");
    assert!(p.dir_path().join("h1/drained").exists(), "h1 stays out of service");
}
