//! A test hook compiled into every build: `PITCREW_TEST_PAUSE_AT=CALL:PHASE`
//! or `ACTION@NODE:PHASE` (PHASE = `intent`, `call` or `outcome`; e.g.
//! `13:call`, `patch@web-2:intent`) stops the runner at that journal
//! boundary and says so on stderr, so the end-to-end tests can SIGKILL it at
//! exactly that point. Unset, it costs one cached lookup per step.

use std::sync::OnceLock;
use std::time::Duration;

fn target() -> &'static Option<(String, String)> {
    static TARGET: OnceLock<Option<(String, String)>> = OnceLock::new();
    TARGET.get_or_init(|| {
        let value = std::env::var("PITCREW_TEST_PAUSE_AT").ok()?;
        let (at, phase) = value.rsplit_once(':')?;
        Some((at.to_string(), phase.to_string()))
    })
}

/// Parks the runner forever when this is the configured pause point.
pub fn pause_point(call: u64, action: &str, node: Option<&str>, phase: &str) {
    if let Some((at, at_phase)) = target() {
        let here = *at == call.to_string() || node.is_some_and(|n| *at == format!("{action}@{n}"));
        if here && at_phase == phase {
            eprintln!("PITCREW-PAUSED {call}:{phase}");
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
    }
}
