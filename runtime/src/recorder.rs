//! What the executor writes to the journal and, on resume, reads back.
//!
//! Every executor call the playbook makes gets a call number in the order
//! the playbook makes it. A resumed run replays the playbook from the top:
//! while call numbers are covered by the journal, completed calls return
//! their recorded results without touching the cluster, and the one call
//! with an intent but no outcome is reconciled. Past the journal's last
//! call the run is live again and appends to the same chain.
//!
//! Nodes of a parallel batch run in *lanes*, one thread each. Every lane
//! gets its own block of [`LANE_CALLS`] call numbers, reserved in lane
//! order when the batch starts, so each call keeps the same number however
//! the lanes interleave, and a resume finds it again.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::thread::ThreadId;
use std::time::Duration;

use serde_json::Value;

use crate::error::StepError;
use crate::journal::{Body, Journal, JournalWriter, StateError};

/// A call as the journal recorded it.
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    /// A step that finished (successfully or not).
    Done { action: String, node: Option<String>, result: Result<Value, StepError>, vt: f64 },
    /// A step whose intent was written but whose outcome was not: the run
    /// died during the adapter call.
    Pending { action: String, node: Option<String>, params: Value },
    /// A guard refusal.
    Refused { action: String, node: Option<String>, error: StepError },
    /// An observation.
    Read { what: String, target: String, result: Value, vt: f64 },
}

/// Call numbers one lane of a parallel batch may use.
pub const LANE_CALLS: u64 = 1 << 24;

/// Journal writer, replay map and call counter of one run.
#[derive(Debug, Default)]
pub struct Recorder {
    writer: Option<JournalWriter>,
    replay: BTreeMap<u64, Recorded>,
    /// Every call number the resumed journal holds.
    recorded: BTreeSet<u64>,
    next_call: u64,
    /// Lane threads: their next call number and the end of their block.
    lanes: HashMap<ThreadId, (u64, u64)>,
    /// Where live runs keep the latest fact snapshot of each node.
    pub facts_dir: Option<PathBuf>,
    /// The first journal write that failed; the run stops at the next step.
    pub failed: Option<String>,
}

impl Recorder {
    /// Records to `writer`; with `resume`, replays that journal's calls first.
    pub fn new(writer: Option<JournalWriter>, resume: Option<&Journal>) -> Self {
        let mut replay = BTreeMap::new();
        for stored in resume.map(|j| j.records.as_slice()).unwrap_or_default() {
            let vt = stored.record.vt;
            match &stored.record.body {
                Body::Intent { call, node, action, params, .. } => {
                    replay.insert(
                        *call,
                        Recorded::Pending { action: action.clone(), node: node.clone(), params: params.clone() },
                    );
                }
                Body::Outcome { call, node, action, ok, result, error, .. } => {
                    let result = match (ok, error) {
                        (true, _) | (false, None) => Ok(result.clone()),
                        (false, Some(e)) => Err(e.clone()),
                    };
                    replay.insert(*call, Recorded::Done { action: action.clone(), node: node.clone(), result, vt });
                }
                Body::Refused { call, node, action, error, .. } => {
                    replay.insert(
                        *call,
                        Recorded::Refused { action: action.clone(), node: node.clone(), error: error.clone() },
                    );
                }
                Body::Read { call, what, target, result } => {
                    replay.insert(
                        *call,
                        Recorded::Read { what: what.clone(), target: target.clone(), result: result.clone(), vt },
                    );
                }
                _ => {}
            }
        }
        let recorded = replay.keys().copied().collect();
        Self { writer, replay, recorded, next_call: 1, lanes: HashMap::new(), facts_dir: None, failed: None }
    }

    /// The next call number (of this thread's lane, if it is one) and what
    /// the journal recorded for it.
    pub fn next_call(&mut self) -> (u64, Option<Recorded>) {
        let call = match self.lane_mut() {
            Some((next, _)) => {
                *next += 1;
                *next - 1
            }
            None => {
                self.next_call += 1;
                self.next_call - 1
            }
        };
        (call, self.replay.remove(&call))
    }

    /// Reserves the call numbers of `lanes` lanes; returns the first.
    pub fn reserve_lanes(&mut self, lanes: u64) -> u64 {
        let first = self.next_call;
        self.next_call += lanes * LANE_CALLS;
        first
    }

    /// Makes the current thread the lane whose block starts at `first`.
    pub fn enter_lane(&mut self, first: u64) {
        self.lanes.insert(std::thread::current().id(), (first, first + LANE_CALLS));
    }

    pub fn leave_lane(&mut self) {
        self.lanes.remove(&std::thread::current().id());
    }

    /// This thread's lane: its next call number and block end. Outside a
    /// parallel batch there are no lanes, and no thread lookup.
    fn lane_mut(&mut self) -> Option<&mut (u64, u64)> {
        if self.lanes.is_empty() {
            return None;
        }
        self.lanes.get_mut(&std::thread::current().id())
    }

    /// Still replaying calls the journal already holds (in this thread's lane).
    pub fn replaying(&self) -> bool {
        let lane = (!self.lanes.is_empty()).then(|| self.lanes.get(&std::thread::current().id())).flatten();
        match lane {
            Some(&(next, end)) => self.recorded.range(next..end).next().is_some(),
            None => self.recorded.range(self.next_call..).next().is_some(),
        }
    }

    pub fn has_journal(&self) -> bool {
        self.writer.is_some()
    }

    /// Appends a record (not while replaying what is already there).
    pub fn write(&mut self, vt: Duration, body: Body) -> Result<(), StateError> {
        if self.replaying() {
            return Ok(());
        }
        match &mut self.writer {
            Some(writer) => writer.append(vt, body),
            None => Ok(()),
        }
    }

    /// Appends a record whatever the replay state (outcomes of reconciled
    /// calls, the resume marker, the end).
    pub fn write_always(&mut self, vt: Duration, body: Body) -> Result<(), StateError> {
        match &mut self.writer {
            Some(writer) => writer.append(vt, body),
            None => Ok(()),
        }
    }
}
