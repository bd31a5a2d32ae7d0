//! Time as the executor sees it: the wall clock for real runs, a virtual
//! clock for rehearsals so hours of simulated maintenance take milliseconds.
//!
//! The virtual clock only moves when someone advances it (the sim adapter
//! while an operation "takes time", `sleep` in a playbook). A rehearsal is
//! single-threaded per run, so there is no event queue to order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub enum Clock {
    /// Real time since the run started.
    System(Instant),
    /// Simulated time in nanoseconds since the run started.
    Virtual(Arc<AtomicU64>),
}

impl Clock {
    pub fn system() -> Self {
        Self::System(Instant::now())
    }

    pub fn virtual_clock() -> Self {
        Self::Virtual(Arc::new(AtomicU64::new(0)))
    }

    pub fn is_virtual(&self) -> bool {
        matches!(self, Self::Virtual(_))
    }

    /// Time since the run started.
    pub fn now(&self) -> Duration {
        match self {
            Self::System(start) => start.elapsed(),
            Self::Virtual(nanos) => Duration::from_nanos(nanos.load(Ordering::Acquire)),
        }
    }

    /// Moves virtual time forward; the wall clock cannot be moved.
    pub fn advance(&self, by: Duration) {
        if let Self::Virtual(nanos) = self {
            let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
            nanos.fetch_add(by, Ordering::AcqRel);
        }
    }

    /// Sets virtual time (a persistent sim world starting a new run).
    pub fn set(&self, to: Duration) {
        if let Self::Virtual(nanos) = self {
            nanos.store(u64::try_from(to.as_nanos()).unwrap_or(u64::MAX), Ordering::Release);
        }
    }

    /// Waits `duration` (virtually: advances at once). Returns false when
    /// cancelled first.
    pub async fn sleep(&self, duration: Duration, cancel: &CancellationToken) -> bool {
        match self {
            Self::Virtual(_) => {
                if cancel.is_cancelled() {
                    return false;
                }
                self.advance(duration);
                true
            }
            Self::System(_) => tokio::select! {
                _ = cancel.cancelled() => false,
                _ = tokio::time::sleep(duration) => true,
            },
        }
    }
}

/// `T+hh:mm:ss.s` for progress lines and reports.
pub fn format_offset(at: Duration) -> String {
    let total = at.as_secs();
    let tenths = at.subsec_millis() / 100;
    format!("T+{:02}:{:02}:{:02}.{}", total / 3600, total / 60 % 60, total % 60, tenths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn virtual_time_moves_only_when_advanced() {
        let clock = Clock::virtual_clock();
        assert_eq!(clock.now(), Duration::ZERO);
        let cancel = CancellationToken::new();
        assert!(clock.sleep(Duration::from_secs(3600), &cancel).await);
        assert_eq!(clock.now(), Duration::from_secs(3600));
        cancel.cancel();
        assert!(!clock.sleep(Duration::from_secs(1), &cancel).await);
        assert_eq!(format_offset(clock.now()), "T+01:00:00.0");
    }
}
