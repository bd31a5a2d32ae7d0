//! `rehearse --watch`: files edited on disk while the watcher runs.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use crate::copy_dir::copy_dir;
use crate::support::root;

/// A watcher on a private copy of the shipped playbooks.
struct Watcher {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    dir: tempfile::TempDir,
}

impl Watcher {
    fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        copy_dir(&root().join("playbooks"), &dir.path().join("playbooks"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_pitcrew"))
            .args(["rehearse", "playbooks/rolling_pool.rhai", "-i", "playbooks/inventories/demo.yaml", "--watch", "-q"])
            .args(extra)
            .current_dir(dir.path())
            .env_remove("PITCREW_LIB")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn watcher");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines, seen: Vec::new(), dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join("playbooks").join(name)
    }

    /// Saves like an editor that writes a new file and renames it over the old.
    fn save_by_rename(&self, name: &str, text: &str) {
        let path = self.path(name);
        let tmp = path.with_extension("rhai.swp");
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, &path).expect("rename");
    }

    /// Waits for a line containing `needle`; returns it and when it came.
    fn wait_for(&mut self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no line with {needle:?} within {within:?}; saw:\n{}", self.seen.join("\n")),
            }
        }
    }

    fn interrupt(mut self) -> (i32, Duration) {
        let started = Instant::now();
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-INT", &pid]).status().expect("kill -INT");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return (status.code().unwrap_or(-1), started.elapsed());
            }
            assert!(Instant::now() < deadline, "the watcher ignored Ctrl-C");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn saves_rerun_the_rehearsal_and_report_what_changed() {
    let mut w = Watcher::start(&[]);
    let first = w.wait_for("rehearsal #1:", WAIT);
    assert!(first.contains("succeeded (exit 0): 24 steps, 4 patched"), "{first}");

    // A module the playbook imports, saved by rename: the probes go away.
    let module = std::fs::read_to_string(w.path("lib/pool.rhai")).expect("module");
    let without_probe = module.replace("    probe(n);          // smoke test before users reach it again\n", "");
    assert_ne!(module, without_probe);
    w.save_by_rename("lib/pool.rhai", &without_probe);
    w.wait_for("rehearsal #2 started (playbooks/lib/pool.rhai changed)", WAIT);
    let second = w.wait_for("rehearsal #2:", WAIT);
    assert!(second.contains("20 steps"), "{second}");
    w.wait_for("steps: 24 -> 20 (0 added, 4 removed)", WAIT);
    w.wait_for("- probe web-1", WAIT);

    // A save that does not compile keeps the last good version.
    let playbook = std::fs::read_to_string(w.path("rolling_pool.rhai")).expect("playbook");
    std::fs::write(w.path("rolling_pool.rhai"), format!("{playbook}\nlet x = ;\n")).expect("write");
    w.wait_for("rolling_pool.rhai:16:9: Unexpected ';'", WAIT);
    w.wait_for("not rehearsed; keeping the last good version (rehearsal #2)", WAIT);

    // Fixed, with only two nodes patched.
    w.save_by_rename("rolling_pool.rhai", &playbook.replace("web.nodes,", "web.nodes.extract(0, 2),"));
    let third = w.wait_for("rehearsal #3:", WAIT);
    assert!(third.contains("10 steps, 2 patched"), "{third}");
    w.wait_for("node web-3: 1.24.1 serving -> 1.24.0 serving", WAIT);

    // The inventory is watched too (written in place this time).
    let inventory = w.path("inventories/demo.yaml");
    let text = std::fs::read_to_string(&inventory).expect("inventory");
    std::fs::write(&inventory, text.replace("patch_to: \"1.24.1\"", "patch_to: \"1.24.2\"")).expect("write");
    w.wait_for("rehearsal #4 started (playbooks/inventories/demo.yaml changed)", WAIT);
    w.wait_for("node web-1: 1.24.1 serving -> 1.24.2 serving", WAIT);

    let (code, took) = w.interrupt();
    assert_eq!(code, 0, "Ctrl-C exits cleanly");
    assert!(took < Duration::from_secs(5), "stopping took {took:?}");
}

#[test]
fn a_save_cancels_a_rehearsal_waiting_on_a_simulated_step() {
    // Real time: web-1's drain alone waits 16 simulated = 16 real seconds.
    let mut w = Watcher::start(&["--pace", "1"]);
    w.wait_for("rehearsal #1 started", WAIT);
    std::thread::sleep(Duration::from_millis(500));
    let saved = Instant::now();
    let playbook = std::fs::read_to_string(w.path("rolling_pool.rhai")).expect("playbook");
    w.save_by_rename("rolling_pool.rhai", &format!("{playbook}// edited\n"));
    w.wait_for("cancelled rehearsal #1", WAIT);
    w.wait_for("rehearsal #2 started", WAIT);
    assert!(saved.elapsed() < Duration::from_secs(5), "rerun took {:?}", saved.elapsed());
    assert!(!w.seen.iter().any(|l| l.contains("rehearsal #1:")), "#1 must not have finished:\n{}", w.seen.join("\n"));
    // Ctrl-C stops the rehearsal in progress, mid-step, and exits cleanly.
    let (code, took) = w.interrupt();
    assert_eq!(code, 0);
    assert!(took < Duration::from_secs(5), "stopping took {took:?}");
}
