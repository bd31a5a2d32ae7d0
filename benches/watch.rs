//! Save-to-rerun latency of `pitcrew rehearse --watch`: the time from an
//! editor's save (write a new file, rename it over the playbook) until the
//! watcher has started the new rehearsal, and until it has printed the new
//! outcome and its diff. Target: under 200 ms on the 2-core CI machine.
//!
//!   cargo bench --bench watch

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};
#[path = "../tests/e2e/copy_dir.rs"]
mod copy_dir;

use copy_dir::copy_dir;

const SAVES: usize = 40;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let dir = tempfile::tempdir().expect("tmp");
    copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks"), &dir.path().join("playbooks"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_pitcrew"))
        .args(["rehearse", "playbooks/micro_window.rhai", "-i", "playbooks/inventories/demo.yaml", "--watch", "-q"])
        .current_dir(dir.path())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn pitcrew --watch");
    let (tx, lines) = channel();
    let stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    let wait_for = |needle: &str| -> Instant {
        loop {
            let (at, line) = lines.recv_timeout(Duration::from_secs(30)).expect("the watcher went quiet");
            if line.contains(needle) {
                return at;
            }
        }
    };
    wait_for("rehearsal #1:");
    let playbook = dir.path().join("playbooks/micro_window.rhai");
    let original = std::fs::read_to_string(&playbook).expect("playbook");
    let (mut to_start, mut to_outcome) = (Vec::new(), Vec::new());
    for save in 0..SAVES {
        // Let the previous save settle past the debounce window.
        std::thread::sleep(Duration::from_millis(150));
        let tmp = playbook.with_extension("rhai.swp");
        std::fs::write(&tmp, format!("{original}// save {save}\n")).expect("write");
        let saved = Instant::now();
        std::fs::rename(&tmp, &playbook).expect("rename");
        let generation = save + 2;
        let started = wait_for(&format!("rehearsal #{generation} started"));
        let finished = wait_for(&format!("rehearsal #{generation}:"));
        to_start.push(started - saved);
        to_outcome.push(finished - saved);
    }
    let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let _ = child.wait();
    for (what, mut samples) in [("save -> rehearsal started", to_start), ("save -> outcome printed", to_outcome)] {
        samples.sort();
        println!(
            "{what:<28} min {:>6.1} ms  median {:>6.1} ms  p95 {:>6.1} ms  max {:>6.1} ms  ({SAVES} saves, micro_window.rhai: 12 nodes, 72 steps)",
            samples[0].as_secs_f64() * 1e3,
            percentile(&samples, 0.5).as_secs_f64() * 1e3,
            percentile(&samples, 0.95).as_secs_f64() * 1e3,
            samples[samples.len() - 1].as_secs_f64() * 1e3,
        );
    }
}
