//! The audit trail: one hash-chained journal per run; tampering is caught.

use crate::support::{in_state, records, run_ids, DEMO};

fn one_run() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tmp");
    in_state(dir.path(), &["rehearse", "playbooks/rolling_pool.rhai", "-i", DEMO, "-q"]).expect_code(0);
    let id = run_ids(dir.path()).pop().expect("a run");
    (dir, id)
}

fn journal(dir: &std::path::Path, id: &str) -> std::path::PathBuf {
    dir.join("runs").join(format!("{id}.jsonl"))
}

#[test]
fn every_run_writes_a_verifiable_journal_with_intents_before_outcomes() {
    let (dir, id) = one_run();
    in_state(dir.path(), &["audit", "verify", &id]).expect_code(0);
    let records = records(dir.path(), &id);
    assert_eq!(records[0]["kind"], "header");
    assert_eq!(records[0]["playbook"], "playbooks/rolling_pool.rhai");
    assert_eq!(records[0]["playbook_sha256"].as_str().map(str::len), Some(64));
    assert_eq!(records.last().expect("end")["kind"], "end");
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["seq"], i as u64);
        if r["kind"] == "outcome" {
            let call = &r["call"];
            assert!(
                records[..i].iter().any(|p| p["kind"] == "intent" && &p["call"] == call),
                "outcome {call} without an earlier intent"
            );
        }
    }
    let facts = |reason: &str| records.iter().filter(|r| r["kind"] == "facts" && r["reason"] == reason).count();
    assert_eq!(facts("before patch"), 4, "a fact snapshot before every patch");
    assert_eq!(facts("end of run"), 4, "a fact snapshot of every node at the end");
}

#[test]
fn edited_removed_reordered_appended_and_truncated_records_are_caught() {
    let (dir, id) = one_run();
    let path = journal(dir.path(), &id);
    let original: Vec<String> =
        std::fs::read_to_string(&path).expect("read").lines().map(|l| format!("{l}\n")).collect();
    let appended_line = format!("line {}:", original.len() + 1);
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        (
            "edited",
            {
                let mut l = original.clone();
                l[5] = l[5].replacen("\"vt\":", "\"vt\":1", 1);
                l
            },
            "line 6: record 5 was edited",
        ),
        (
            "removed",
            {
                let mut l = original.clone();
                l.remove(7);
                l
            },
            "line 8: record 8 does not follow",
        ),
        (
            "reordered",
            {
                let mut l = original.clone();
                l.swap(3, 4);
                l
            },
            "line 4:",
        ),
        (
            "appended",
            {
                let mut l = original.clone();
                l.push(original[2].clone());
                l
            },
            &appended_line,
        ),
    ];
    for (what, lines, expect) in cases {
        std::fs::write(&path, lines.concat()).expect("tamper");
        let out = in_state(dir.path(), &["audit", "verify", &id]);
        out.expect_code(6);
        assert!(out.stdout.contains(expect), "{what}: {}", out.stdout);
    }
    let mut torn = original.concat();
    torn.truncate(torn.len() - 20);
    std::fs::write(&path, torn).expect("truncate");
    let out = in_state(dir.path(), &["audit", "verify", &id]);
    out.expect_code(6);
    assert!(out.stdout.contains("truncated"), "{}", out.stdout);
}

#[test]
fn show_and_runs_describe_the_run() {
    let (dir, id) = one_run();
    let show = in_state(dir.path(), &["audit", "show", &id]);
    show.expect_code(0);
    for needle in [
        "start    rehearsal playbooks/rolling_pool.rhai",
        "intent   #3 drain web-1",
        "outcome  #5 patch web-1 ok",
        "end      succeeded (exit 0)",
    ] {
        assert!(show.stdout.contains(needle), "{needle}:\n{}", show.stdout);
    }
    let runs = in_state(dir.path(), &["runs"]);
    runs.expect_code(0);
    assert!(
        runs.stdout.contains(&id)
            && runs.stdout.contains("succeeded")
            && runs.stdout.contains("web-1,web-2,web-3,web-4"),
        "{}",
        runs.stdout
    );
}

#[test]
fn unknown_runs_and_missing_state_dirs_are_clear_errors() {
    let (dir, _) = one_run();
    in_state(dir.path(), &["audit", "verify", "19990101"]).expect_code(2).expect_stderr("no run `19990101`");
    let missing = dir.path().join("nowhere");
    in_state(&missing, &["runs"]).expect_code(2).expect_stderr("cannot use state directory");
    assert!(!missing.exists(), "reading commands create nothing");
}

#[test]
fn secret_parameters_never_reach_the_audit_trail() {
    let dir = tempfile::tempdir().expect("tmp");
    let args = ["rehearse", "playbooks/rolling_pool.rhai", "-i", DEMO, "-q", "--param", "db_password=hunter2"];
    in_state(dir.path(), &args).expect_code(0);
    let id = run_ids(dir.path()).pop().expect("a run");
    let text = std::fs::read_to_string(journal(dir.path(), &id)).expect("journal");
    assert!(!text.contains("hunter2"), "the secret leaked into the journal");
    assert_eq!(records(dir.path(), &id)[0]["params"]["db_password"], "[redacted]");
}
