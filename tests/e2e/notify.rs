//! Notifications: a webhook the test serves on loopback receives the
//! automatic and the playbook's own notifications; a dead sink never fails
//! the run and is recorded in the audit trail.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::support::{root, Pitcrew};

/// A tiny HTTP server: answers 500 to the first `fail_first` requests,
/// then 200, and keeps every JSON body it got.
fn webhook(fail_first: usize) -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let got = Arc::new(Mutex::new(Vec::new()));
    let bodies = got.clone();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut length = 0;
            let mut authorization = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if line.to_ascii_lowercase().starts_with("authorization:") {
                    authorization = line["authorization:".len()..].trim().to_string();
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let status = if n < fail_first { "500 Internal Server Error" } else { "200 OK" };
            if n >= fail_first {
                if let Ok(mut json) = serde_json::from_slice::<Value>(&body) {
                    json["_authorization"] = Value::String(authorization);
                    bodies.lock().expect("lock").push(json);
                }
            }
            let _ = write!(stream, "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (url, got)
}

fn inventory_with(p: &Pitcrew, notifications: &str) -> String {
    let demo = std::fs::read_to_string(root().join("playbooks/inventories/demo.yaml")).expect("demo");
    p.file("inv.yaml", &format!("{demo}\nnotifications:\n{notifications}"))
}

fn records(state: &std::path::Path) -> Vec<Value> {
    let runs = state.join("runs");
    let journal = std::fs::read_dir(&runs)
        .expect("runs")
        .flatten()
        .find(|e| e.path().extension().is_some_and(|x| x == "jsonl"))
        .expect("a journal");
    std::fs::read_to_string(journal.path())
        .expect("read")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect()
}

#[test]
fn a_webhook_receives_the_window_start_batches_the_playbooks_own_and_the_finish() {
    let (url, got) = webhook(1);
    let p = Pitcrew::new();
    let file = p.dir_path().join("notes.jsonl");
    let inventory = inventory_with(
        &p,
        &format!(
            "  sinks:\n    - {{ kind: webhook, url: \"{url}\", timeout: 2s, retries: 2, headers: {{ Authorization: \"Bearer ${{PITCREW_TEST_TOKEN}}\" }} }}\n    - {{ kind: file, path: \"{}\", events: [run_finished] }}\n",
            file.display()
        ),
    );
    let playbook = p.file(
        "play.rhai",
        "import \"lib/pool\" as pool;\nlet fleet = cluster(\"fleet\");\nrolling(fleet.nodes.extract(0, 6), #{ batch: 3 }, |n| pool::drain_patch_return(n));\nnotify(\"fleet_half_done\", #{ patched: 6 });\n",
    );
    let state = p.state_dir();
    let out = Pitcrew::new()
        .env("PITCREW_STATE_DIR", &state.display().to_string())
        .env("PITCREW_TEST_TOKEN", "s3cr3t-token")
        .args(["run", playbook.as_str(), "-i", inventory.as_str(), "--lib", "playbooks", "-q"])
        .run();
    out.expect_code(0);
    let got = got.lock().expect("lock").clone();
    let events: Vec<&str> = got.iter().map(|m| m["event"].as_str().unwrap_or("")).collect();
    assert_eq!(
        events,
        [
            "run_started",
            "batch_started",
            "batch_finished",
            "batch_started",
            "batch_finished",
            "fleet_half_done",
            "run_finished"
        ],
        "{got:#?}"
    );
    assert!(got[0]["text"].as_str().unwrap_or("").starts_with("Maintenance window starting: "), "{}", got[0]);
    let finished = got[6]["text"].as_str().unwrap_or("");
    assert!(finished.starts_with("Maintenance window finished: succeeded. 6 node(s) patched (app-01"), "{finished}");
    assert_eq!(got[5]["data"]["patched"], 6);
    assert_eq!(got[0]["_authorization"], "Bearer s3cr3t-token", "the header carries the token from the environment");
    let trail: String = records(&state).iter().map(Value::to_string).collect();
    assert!(!trail.contains("s3cr3t-token"), "the token must not reach the audit trail");
    // The file sink only wanted the finish.
    let lines = std::fs::read_to_string(&file).expect("file sink");
    assert_eq!(lines.lines().count(), 1, "{lines}");
    // Every delivery is in the audit trail; the first webhook try got a 500 and was retried.
    let notified: Vec<Value> = records(&state).into_iter().filter(|r| r["kind"] == "notified").collect();
    assert_eq!(notified.len(), 7);
    let first = &notified[0]["deliveries"][0];
    assert_eq!(first["ok"], true);
    assert_eq!(first["attempts"], 2, "{first}");
}

#[test]
fn a_dead_webhook_never_fails_the_run_and_is_recorded() {
    let dead = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", dead.local_addr().expect("addr"));
    drop(dead);
    let p = Pitcrew::new();
    let inventory =
        inventory_with(&p, &format!("  sinks:\n    - {{ kind: webhook, url: \"{url}\", timeout: 1s, retries: 1 }}\n"));
    let state = p.state_dir();
    let out = Pitcrew::new()
        .env("PITCREW_STATE_DIR", &state.display().to_string())
        .args(["run", "playbooks/standby_first.rhai", "-i", inventory.as_str(), "-q"])
        .run();
    out.expect_code(0);
    let notified: Vec<Value> = records(&state).into_iter().filter(|r| r["kind"] == "notified").collect();
    assert_eq!(notified.len(), 2, "run_started and run_finished");
    for n in &notified {
        assert_eq!(n["deliveries"][0]["ok"], false);
        assert_eq!(n["deliveries"][0]["attempts"], 2);
        assert!(n["deliveries"][0]["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
}

#[test]
fn rehearsals_notify_no_one_and_bad_sinks_are_located_errors() {
    let (url, got) = webhook(0);
    let p = Pitcrew::new();
    let inventory = inventory_with(&p, &format!("  sinks:\n    - {{ kind: webhook, url: \"{url}\" }}\n"));
    Pitcrew::new()
        .args(["rehearse", "playbooks/rolling_pool.rhai", "-i", inventory.as_str(), "-q"])
        .run()
        .expect_code(0);
    assert!(got.lock().expect("lock").is_empty(), "a rehearsal sent a notification");
    let bad = inventory_with(&p, "  sinks:\n    - { kind: pager, number: 112 }\n");
    Pitcrew::new()
        .args(["rehearse", "playbooks/rolling_pool.rhai", "-i", bad.as_str(), "-q"])
        .run()
        .expect_code(2)
        .expect_stderr("notifications: unknown variant `pager`");
}
