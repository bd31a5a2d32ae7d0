//! Lanes: the threads that run the nodes of a parallel batch.
//!
//! On the wall clock, lanes run at once. On a virtual clock (rehearsals, the
//! sim world) they take turns through a [`Turnstile`]: one lane runs at a
//! time and hands over at every executor call, round-robin, so the twin sees
//! the batch's steps interleaved as they would be live (every drain before
//! any patch), time only moves forward, and the same playbook always gives
//! the same rehearsal. The price is that a rehearsed parallel batch takes
//! the sum of its nodes' step times: a conservative estimate.

use std::cell::RefCell;
use std::sync::{Arc, Condvar, Mutex};

/// Round-robin turns among the lanes of one batch.
#[derive(Debug)]
pub struct Turnstile {
    state: Mutex<Turns>,
    changed: Condvar,
}

#[derive(Debug)]
struct Turns {
    running: Vec<bool>,
    current: usize,
}

impl Turnstile {
    pub fn new(lanes: usize) -> Self {
        Self { state: Mutex::new(Turns { running: vec![true; lanes], current: 0 }), changed: Condvar::new() }
    }

    fn turns(&self) -> std::sync::MutexGuard<'_, Turns> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Blocks until it is `lane`'s turn.
    pub fn wait(&self, lane: usize) {
        let mut turns = self.turns();
        while turns.current != lane {
            turns = self.changed.wait(turns).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// `lane` hands over to the next running lane and waits for its turn again.
    pub fn pass(&self, lane: usize) {
        {
            let mut turns = self.turns();
            turns.advance(lane);
        }
        self.changed.notify_all();
        self.wait(lane);
    }

    /// `lane` is done: the next running lane goes on.
    pub fn finish(&self, lane: usize) {
        {
            let mut turns = self.turns();
            turns.running[lane] = false;
            if turns.current == lane {
                turns.advance(lane);
            }
        }
        self.changed.notify_all();
    }
}

impl Turns {
    fn advance(&mut self, from: usize) {
        let n = self.running.len();
        if let Some(next) = (1..=n).map(|k| (from + k) % n).find(|&i| self.running[i]) {
            self.current = next;
        }
    }
}

thread_local! {
    /// The lane the current thread runs, and its turnstile on a virtual clock.
    static LANE: RefCell<Option<(usize, Option<Arc<Turnstile>>)>> = const { RefCell::new(None) };
}

/// The lane index of the current thread, if it runs one.
pub fn current() -> Option<usize> {
    LANE.with(|l| l.borrow().as_ref().map(|(i, _)| *i))
}

/// Hands the turn over at an executor call (no-op outside turn-taking lanes).
pub fn take_turns() {
    let turn = LANE.with(|l| l.borrow().as_ref().and_then(|(i, t)| t.clone().map(|t| (*i, t))));
    if let Some((lane, turnstile)) = turn {
        turnstile.pass(lane);
    }
}

/// Marks the current thread as lane `lane` until dropped; on a virtual clock
/// it first waits for the lane's turn and, when dropped (even by a panic),
/// lets the others go on.
pub struct LaneGuard {
    lane: usize,
    turnstile: Option<Arc<Turnstile>>,
}

impl LaneGuard {
    pub fn enter(lane: usize, turnstile: Option<Arc<Turnstile>>) -> Self {
        LANE.with(|l| *l.borrow_mut() = Some((lane, turnstile.clone())));
        if let Some(t) = &turnstile {
            t.wait(lane);
        }
        Self { lane, turnstile }
    }
}

impl Drop for LaneGuard {
    fn drop(&mut self) {
        LANE.with(|l| *l.borrow_mut() = None);
        if let Some(t) = &self.turnstile {
            t.finish(self.lane);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_take_turns_round_robin_per_call() {
        let turnstile = Arc::new(Turnstile::new(3));
        let log = Arc::new(Mutex::new(Vec::new()));
        std::thread::scope(|s| {
            for lane in 0..3 {
                let (turnstile, log) = (turnstile.clone(), log.clone());
                s.spawn(move || {
                    let _guard = LaneGuard::enter(lane, Some(turnstile));
                    // Lane 1 makes fewer calls: the others go on without it.
                    for call in 0..(if lane == 1 { 1 } else { 3 }) {
                        take_turns();
                        log.lock().unwrap().push((lane, call));
                    }
                });
            }
        });
        let log = log.lock().unwrap().clone();
        assert_eq!(log, vec![(0, 0), (1, 0), (2, 0), (0, 1), (2, 1), (0, 2), (2, 2)]);
    }
}
