//! Bad input: clear errors naming file, line and column, with a hint; never a panic.

use crate::support::{Pitcrew, DEMO};

#[test]
fn an_endless_loop_is_stopped_by_the_operation_limit() {
    let p = Pitcrew::new();
    let path = p.file("loop.rhai", "let i = 0;\nloop {\n    i += 1;\n}\n");
    let out = p.args(["rehearse", path.as_str(), "-i", DEMO, "--max-operations", "200000"]).run();
    out.expect_code(2).expect_stderr("exceeded 200000 operations (an endless loop?)").expect_stderr("loop.rhai:3:");
}

#[test]
fn limits_cannot_be_caught() {
    let p = Pitcrew::new();
    let path = p.file("loop.rhai", "try {\n    loop { sleep(1); }\n} catch (e) {\n    log(\"swallowed\");\n}\n");
    let out = p.args(["rehearse", path.as_str(), "-i", DEMO, "--max-operations", "100000"]).run();
    out.expect_code(2).expect_stderr("exceeded 100000 operations");
    assert!(!out.stderr.contains("swallowed"));
}

#[test]
fn a_syntax_error_names_file_line_and_column() {
    let p = Pitcrew::new();
    let path = p.file("bad.rhai", "let web = cluster(\"web\");\ndrain(web.nodes[0]\npatch(web.nodes[0]);\n");
    let out = p.args(["rehearse", path.as_str(), "-i", DEMO]).run();
    out.expect_code(2).expect_stderr("bad.rhai:3:1: Expecting ',' to separate the arguments");
    let p = Pitcrew::new();
    let path = p.file("bad.rhai", "let web = cluster(\"web\");\ndrain(web.nodes[0]\npatch(web.nodes[0]);\n");
    p.args(["check", path.as_str()]).run().expect_code(2).expect_stderr("bad.rhai:3:1");
}

#[test]
fn check_accepts_every_shipped_playbook() {
    for name in ["standby_first.rhai", "rolling_pool.rhai", "micro_window.rhai"] {
        let path = crate::support::playbook(name);
        Pitcrew::new().args(["check", path.as_str(), "-i", DEMO]).run().expect_code(0).expect_stderr("compiles");
    }
    // The shipped real-pool example validates and rehearses on the twin.
    let example = "playbooks/inventories/haproxy-example.yaml";
    Pitcrew::new().args(["check", "playbooks/rolling_pool.rhai", "-i", example]).run().expect_code(0);
    Pitcrew::new().args(["rehearse", "playbooks/rolling_pool.rhai", "-i", example, "-q"]).run().expect_code(0);
}

#[test]
fn inventory_errors_are_located_with_a_hint() {
    let p = Pitcrew::new();
    let text = std::fs::read_to_string(crate::support::root().join(DEMO)).expect("demo inventory");
    let inventory = p.file("inv.yaml", &text.replace("min_in_service: 3", "min_in_service: 4"));
    let line = text.lines().position(|l| l.trim() == "min_in_service: 3").expect("web policy") + 1;
    let out = p.args(["check", "playbooks/rolling_pool.rhai", "-i", inventory.as_str()]).run();
    out.expect_code(2)
        .expect_stderr(&format!("inv.yaml:{line}:7: pool `web` has 4 node(s) and min_in_service 4"))
        .expect_stderr("lower min_in_service to at most 3");
}

#[test]
fn unknown_inventory_keys_and_adapter_kinds_are_errors() {
    let p = Pitcrew::new();
    let text = std::fs::read_to_string(crate::support::root().join(DEMO)).expect("demo inventory");
    let typo = p.file("typo.yaml", &text.replace("max_sync_lag: 5s", "max_sync_lagg: 5s"));
    Pitcrew::new()
        .args(["check", "playbooks/standby_first.rhai", "-i", typo.as_str()])
        .run()
        .expect_code(2)
        .expect_stderr("unknown field `max_sync_lagg`");
    let kind = p.file(
        "kind.yaml",
        &text.replace(
            "kind: sim\n    settings: { version: \"15.4\"",
            "kind: haproxi\n    settings: { version: \"15.4\"",
        ),
    );
    Pitcrew::new()
        .args(["check", "playbooks/standby_first.rhai", "-i", kind.as_str()])
        .run()
        .expect_code(2)
        .expect_stderr("unknown kind `haproxi`");
}

#[test]
fn bad_faults_are_invalid_arguments() {
    let out = Pitcrew::rehearse("playbooks/rolling_pool.rhai", &["--fault", "patch:web-2"]);
    out.expect_code(2).expect_stderr("expected three parts separated by `:`");
    let out = Pitcrew::rehearse("playbooks/rolling_pool.rhai", &["--fault", "patch:web-5:fail"]);
    out.expect_code(2)
        .expect_stderr("names node `web-5`, which is not in the inventory")
        .expect_stderr("did you mean web-1");
}

#[test]
fn a_missing_parameter_is_invalid_input() {
    let p = Pitcrew::new();
    let path = p.file("param.rhai", "let c = cluster(param(\"cluster\"));\nlog(c.name);\n");
    let out = p.args(["rehearse", path.as_str(), "-i", DEMO]).run();
    out.expect_code(2)
        .expect_stderr("the playbook needs parameter `cluster`")
        .expect_stderr("pass --param cluster=VALUE");
    let p = Pitcrew::new();
    let path = p.file("param.rhai", "let c = cluster(param(\"cluster\"));\nlog(c.name);\n");
    p.args(["rehearse", path.as_str(), "-i", DEMO, "--param", "cluster=web"])
        .run()
        .expect_code(0)
        .expect_stderr("T+00:00:00.0  web");
}

#[test]
fn imports_outside_the_playbook_directory_are_refused() {
    let p = Pitcrew::new();
    let path = p.file("imp.rhai", "import \"../etc/passwd\" as x;\n");
    p.args(["rehearse", path.as_str(), "-i", DEMO]).run().expect_code(2).expect_stderr("`..` is not allowed");
    let p = Pitcrew::new();
    p.file("helpers.rhai", "fn drain_and_patch(n) { drain(n); patch(n); undrain(n); }\n");
    let path =
        p.file("imp.rhai", "import \"helpers\" as h;\nlet n = cluster(\"web\").nodes[0];\nh::drain_and_patch(n);\n");
    p.args(["rehearse", path.as_str(), "-i", DEMO, "-q"]).run().expect_code(0);
}

#[test]
fn missing_files_are_clear_errors() {
    Pitcrew::rehearse("playbooks/nope.rhai", &[])
        .expect_code(2)
        .expect_stderr("cannot read playbook playbooks/nope.rhai");
    Pitcrew::new()
        .args(["rehearse", "playbooks/rolling_pool.rhai", "-i", "nope.yaml"])
        .run()
        .expect_code(2)
        .expect_stderr("cannot read inventory nope.yaml");
}

#[test]
fn eval_is_disabled() {
    let p = Pitcrew::new();
    let path = p.file("eval.rhai", "eval(\"drain(cluster(`web`).nodes[0])\");\n");
    p.args(["check", path.as_str()]).run().expect_code(2).expect_stderr("eval.rhai:1:1");
}

#[test]
fn static_checks_find_typos_wrong_arity_and_unknown_clusters_before_running() {
    let p = Pitcrew::new();
    let path = p.file("typo.rhai", "let web = cluster(\"webb\");\nfor n in web.nodes { drian(n); patch(n, 1, 2); }\n");
    let out = p.args(["check", path.as_str(), "-i", DEMO]).run();
    out.expect_code(2)
        .expect_stderr("typo.rhai:1:19: the inventory has no cluster `webb`")
        .expect_stderr("typo.rhai:2:22: unknown function `drian`")
        .expect_stderr("did you mean `drain`?")
        .expect_stderr("typo.rhai:2:32: `patch` takes 1 or 2 argument(s), not 3");
    let p = Pitcrew::new();
    let path = p.file("typo.rhai", "let web = cluster(\"web\");\ndrian(web.nodes[0]);\n");
    p.args(["rehearse", path.as_str(), "-i", DEMO, "--json"])
        .run()
        .expect_code(2)
        .expect_stderr("unknown function `drian`");
}

#[test]
fn docs_print_the_reference_and_write_editor_definitions() {
    let text = Pitcrew::new().args(["docs"]).run();
    text.expect_code(0);
    assert!(text.stdout.contains("switchover(c: Cluster, n: Node) -> Map"), "{}", text.stdout);
    let markdown = Pitcrew::new().args(["docs", "--format", "markdown"]).run();
    assert!(markdown.stdout.contains("## `drain`") && markdown.stdout.contains("```rhai"), "{}", markdown.stdout);
    let dir = tempfile::tempdir().expect("tmp");
    Pitcrew::new().args(["docs", "--definitions", &dir.path().display().to_string()]).run().expect_code(0);
    let written = std::fs::read_dir(dir.path()).expect("definitions").count();
    assert!(written > 0);
}

#[test]
fn the_committed_reference_is_what_the_engine_generates() {
    let generated = Pitcrew::new().args(["docs", "--format", "markdown"]).run();
    generated.expect_code(0);
    let committed =
        std::fs::read_to_string(crate::support::root().join("docs/src/builtins.md")).expect("docs/src/builtins.md");
    assert_eq!(
        committed, generated.stdout,
        "regenerate with: cargo run --release -- docs --format markdown > docs/src/builtins.md"
    );
}

#[test]
fn imports_are_resolved_before_anything_runs() {
    let p = Pitcrew::new();
    let path = p.file("missing.rhai", "import \"org/nope\" as nope;\nnope::x();\n");
    p.args(["check", path.as_str()])
        .run()
        .expect_code(2)
        .expect_stderr("missing.rhai:1:8: cannot find module `org/nope`")
        .expect_stderr("add a library root with --lib DIR");
    // A syntax error in a module points into the module, with the chain.
    let p = Pitcrew::new();
    p.file("org/inner.rhai", "fn broken( { }\n");
    p.file("org/outer.rhai", "import \"org/inner\" as inner;\nfn run_it() { inner::x(); }\n");
    let path = p.file("chain.rhai", "// top\nimport \"org/outer\" as outer;\nouter::run_it();\n");
    let out = p.args(["check", path.as_str()]).run();
    out.expect_code(2).expect_stderr("org/inner.rhai:1:").expect_stderr("import chain: ");
    let chain = out.stderr.lines().find(|l| l.contains("import chain:")).expect("chain line");
    assert!(chain.contains("org/outer.rhai:1:8 <- ") && chain.contains("chain.rhai:2:8"), "{chain}");
    // A cycle is refused with the files in it.
    let p = Pitcrew::new();
    p.file("a.rhai", "import \"b\" as b;\nfn f() { 1 }\n");
    p.file("b.rhai", "import \"a\" as a;\nfn g() { 2 }\n");
    let path = p.file("cycle.rhai", "import \"a\" as a;\n");
    p.args(["check", path.as_str()]).run().expect_code(2).expect_stderr("forms a cycle");
}

#[test]
fn library_roots_come_after_the_playbook_directory_and_first_match_wins() {
    let p = Pitcrew::new();
    let lib = tempfile::tempdir().expect("lib");
    std::fs::create_dir_all(lib.path().join("org")).expect("org");
    std::fs::write(lib.path().join("org/steps.rhai"), "fn where_from() { \"lib\" }\n").expect("lib module");
    let path = p.file("uses_lib.rhai", "import \"org/steps\" as steps;\nlog(`from ${steps::where_from()}`);\n");
    let lib_dir = lib.path().display().to_string();
    Pitcrew::new()
        .args(["rehearse", path.as_str(), "-i", DEMO, "--lib", &lib_dir])
        .run()
        .expect_code(0)
        .expect_stderr("from lib");
    // Without the root it is not found; PITCREW_LIB gives it too.
    Pitcrew::new().args(["check", path.as_str()]).run().expect_code(2).expect_stderr("cannot find module");
    Pitcrew::new().args(["check", path.as_str()]).env("PITCREW_LIB", &lib_dir).run().expect_code(0);
    // A module beside the playbook wins over the library root.
    let beside = std::path::Path::new(&path).parent().expect("dir").join("org");
    std::fs::create_dir_all(&beside).expect("org");
    std::fs::write(beside.join("steps.rhai"), "fn where_from() { \"beside\" }\n").expect("beside");
    Pitcrew::new()
        .args(["rehearse", path.as_str(), "-i", DEMO, "--lib", &lib_dir])
        .run()
        .expect_code(0)
        .expect_stderr("from beside");
}

#[test]
fn module_functions_and_side_effects_are_checked() {
    let p = Pitcrew::new();
    p.file(
        "steps.rhai",
        "const RETRIES = 3;\nlet first = cluster(\"web\").nodes[0];\ndrain(first);\nfn prove(n) { probe(n); }\nprivate fn helper() { 1 }\n",
    );
    let path = p.file(
        "uses.rhai",
        "import \"steps\" as steps;\nlet n = cluster(\"web\").nodes[0];\nsteps::prov(n);\nsteps::prove(n, 2);\nsteps::helper();\n",
    );
    let out = p.args(["check", path.as_str(), "-i", DEMO]).run();
    out.expect_code(2)
        .expect_stderr("steps.rhai:2:1: module `steps` calls `cluster` when it is imported")
        .expect_stderr("steps.rhai:3:1: module `steps` calls `drain` when it is imported")
        .expect_stderr("uses.rhai:3:8: module `steps` has no function `prov`")
        .expect_stderr("did you mean `steps::prove`?")
        .expect_stderr("uses.rhai:4:8: `steps::prove` takes 1 argument(s), not 2")
        .expect_stderr("uses.rhai:5:8: `helper` is private to module `steps`");
    assert!(!out.stderr.contains("steps.rhai:1:"), "a constant is not a side effect:\n{}", out.stderr);
}

#[test]
fn runtime_errors_in_modules_point_into_the_module_with_the_calls_that_led_there() {
    let out = Pitcrew::rehearse("playbooks/rolling_pool.rhai", &["--fault", "patch:web-3:fail"]);
    out.expect_code(1)
        .expect_stderr("playbooks/lib/pool.rhai:11:5: patch web-3")
        .expect_stderr("11 │     patch(n);")
        .expect_stderr("called from: a closure at playbooks/rolling_pool.rhai:11:1 -> drain_patch_return() at playbooks/rolling_pool.rhai:11:")
        .expect_stderr("import chain: playbooks/rolling_pool.rhai:7:8");
}
