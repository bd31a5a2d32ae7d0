//! Cost of one local command: the `shell` adapter's long-lived shells
//! (`pitcrew_plugins::localsh`) against a fresh `sh -c` per command.
//!
//!   cargo bench --bench localsh
//!
//! Rounds alternate between the two; the best and the median round are
//! printed, because other work on the machine skews single rounds. Figures,
//! never assertions.

use std::process::Stdio;
use std::time::{Duration, Instant};

use pitcrew_plugins::localsh::ShellPool;
use tokio_util::sync::CancellationToken;

const ROUNDS: usize = 7;
const RUNS: u32 = 200;

fn main() {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    runtime.block_on(async {
        let pool = ShellPool::new();
        let never = CancellationToken::new();
        let run = |script: &'static str| {
            let (pool, never) = (&pool, &never);
            async move { pool.run(script, Duration::from_secs(10), never).await.expect("the pool runs it") }
        };
        run("true").await;
        println!("µs per command, best / median of {ROUNDS} rounds of {RUNS}:");
        for script in ["test -f /etc/hostname", "cat /etc/hostname"] {
            let (mut pooled, mut spawned) = (Vec::new(), Vec::new());
            for _ in 0..ROUNDS {
                let started = Instant::now();
                for _ in 0..RUNS {
                    run(script).await;
                }
                pooled.push(started.elapsed() / RUNS);
                let started = Instant::now();
                for _ in 0..RUNS {
                    tokio::process::Command::new("sh")
                        .arg("-c")
                        .arg(script)
                        .stdin(Stdio::null())
                        .output()
                        .await
                        .expect("sh -c runs");
                }
                spawned.push(started.elapsed() / RUNS);
            }
            pooled.sort();
            spawned.sort();
            println!(
                "  {script:<24} long-lived shell {:>5} / {:>5}   sh -c {:>5} / {:>5}   ({} shell(s) started)",
                pooled[0].as_micros(),
                pooled[ROUNDS / 2].as_micros(),
                spawned[0].as_micros(),
                spawned[ROUNDS / 2].as_micros(),
                pool.shells_started()
            );
        }
    });
}
