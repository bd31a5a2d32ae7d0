//! A test hook compiled into every build: `PITCREW_TEST_PAUSE_AT=CALL:PHASE`
//! (PHASE = `intent`, `call` or `outcome`) stops the runner at that journal
//! boundary and says so on stderr, so the end-to-end tests can SIGKILL it at
//! exactly that point. Unset, it costs one cached lookup per step.

use std::sync::OnceLock;
use std::time::Duration;

fn target() -> &'static Option<(u64, String)> {
    static TARGET: OnceLock<Option<(u64, String)>> = OnceLock::new();
    TARGET.get_or_init(|| {
        let value = std::env::var("PITCREW_TEST_PAUSE_AT").ok()?;
        let (call, phase) = value.split_once(':')?;
        Some((call.parse().ok()?, phase.to_string()))
    })
}

/// Parks the runner forever when this is the configured pause point.
pub fn pause_point(call: u64, phase: &str) {
    if let Some((at, at_phase)) = target() {
        if *at == call && at_phase == phase {
            eprintln!("PITCREW-PAUSED {call}:{phase}");
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
    }
}
