//! The executor runs each step as guard -> intent -> adapter call (timeout,
//! cancellation) -> outcome -> compensation -> event.
//!
//! Its methods are synchronous: they are called from the playbook's thread
//! (a plain OS thread, never a tokio worker) and reach the adapters through
//! one bridge, [`Executor::bridge`], which blocks on the tokio runtime and
//! races every call against the run's cancellation token.
//!
//! Every call the playbook makes is numbered and journaled (see
//! [`crate::recorder`]): steps as intent + outcome, observations as reads.
//! [`Executor::step`] is the one place that decides between replaying a
//! call from the journal, reconciling the call a crash interrupted, and
//! running it live; each step function only supplies its guard, its adapter
//! call, its reconciliation and its bookkeeping.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::adapter::{
    Adapters, CallCtx, ClusterAdapters, DrainReport, Facts, NodeRef, Params, PatchReport, ProbeReport,
    SwitchoverReport, SyncReport, TrafficSample,
};
use crate::clock::Clock;
use crate::error::{AdapterError, ErrorKind, StepError};
use crate::event::{Event, EventSink, Outcome};
use crate::guard::{self, NodeView, Refusal, SwitchoverContext, SyncCheck};
use crate::inventory::{Cluster, ClusterKind, Inventory, NodeSpec, Role};
use crate::journal::Body;
use crate::recorder::{Recorded, Recorder};
use crate::step::{default_estimate, Action, Compensation};

/// A node's state when the run first reached its cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeBefore {
    pub version: String,
    pub serving: bool,
}

/// A node at the end of a run, against how the run found it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeFinal {
    pub cluster: String,
    pub node: String,
    pub role: Option<Role>,
    pub version: String,
    pub version_before: String,
    pub serving: bool,
    pub up: bool,
}

/// What an observation asks of each node. Fields not asked are left
/// neutral (up, version unknown, no connections): only guards that do not
/// read them use such views.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ask {
    up: bool,
    version: bool,
    connections: bool,
}

impl Ask {
    /// Health, version and traffic state.
    const FULL: Ask = Ask { up: true, version: true, connections: true };
    /// Whether users reach it: up and in service (the drain guard).
    const SERVING: Ask = Ask { up: true, version: false, connections: false };
    /// In service and open connections (patch, reboot and restore guards).
    const QUIET: Ask = Ask { up: false, version: false, connections: true };
    /// Up, in service and version (the run's "before" snapshot).
    const BEFORE: Ask = Ask { up: true, version: true, connections: false };
}

/// How many nodes an observation asks at once.
const OBSERVE_AT_ONCE: usize = 16;

/// A compensation on the stack: its id (in push order), the lane that
/// pushed it, and what it undoes.
#[derive(Debug, Clone)]
struct Pushed {
    id: usize,
    lane: Option<usize>,
    compensation: Compensation,
}

/// A node's serving state as pitcrew last observed or set it, with when.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    in_service: Option<(bool, Duration)>,
    connections: Option<(u64, Duration)>,
    up: Option<(bool, Duration)>,
    /// Observations asked before this are out of date: a step of pitcrew's
    /// own changed the node after them, with an outcome it cannot state.
    floor: Duration,
}

/// Keeps an observation unless what is known is more recent.
fn newer<T>(field: &mut Option<(T, Duration)>, value: T, at: Duration, floor: Duration) {
    if at >= floor && field.as_ref().is_none_or(|(_, known)| *known <= at) {
        *field = Some((value, at));
    }
}

fn fresh<T: Copy>(field: Option<(T, Duration)>, now: Duration, max_age: Duration) -> Option<T> {
    field.filter(|(_, at)| !max_age.is_zero() && now.saturating_sub(*at) <= max_age).map(|(v, _)| v)
}

/// What a rollback did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RollbackReport {
    pub steps: usize,
    /// Compensations that failed (the unwinding went on past them).
    pub failures: Vec<String>,
    /// Problems with the service after unwinding: users reach a patched
    /// node, or too few nodes serve. Any entry means a human is needed.
    pub unsafe_service: Vec<String>,
    /// Nodes left out of service or out of sync; the service itself is fine.
    pub attention: Vec<String>,
}

impl RollbackReport {
    pub fn service_restored(&self) -> bool {
        self.unsafe_service.is_empty()
    }
}

#[derive(Default)]
struct RunState {
    seq: u64,
    /// What undoes each completed step, oldest first, with the lane that
    /// pushed it (`None` outside a parallel batch).
    compensations: Vec<Pushed>,
    /// The id the next compensation gets.
    next_compensation: usize,
    sync_checks: HashMap<String, SyncCheck>,
    last_change: HashMap<String, Duration>,
    before: BTreeMap<String, BTreeMap<String, NodeBefore>>,
    patched: BTreeSet<String>,
    steps: u64,
    touched: bool,
    rollbacks: u32,
    /// Serving state per node, as last observed or set by pitcrew's own
    /// steps; guards rely on it for `observation_max_age`.
    seen: HashMap<String, Seen>,
    /// Nodes the drain guard let go that have not finished draining: out of
    /// service for every other guard, whatever an observation says.
    draining: BTreeSet<String>,
}

/// Knobs of one run that are not in the inventory.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// Wall-clock bound on one adapter call in a rehearsal, where adapter
    /// timeouts are virtual and a stuck call would otherwise hang the run.
    pub rehearsal_call_limit: Duration,
}

impl Default for ExecutorOptions {
    fn default() -> Self {
        Self { rehearsal_call_limit: Duration::from_secs(30) }
    }
}

/// Runs the steps of one playbook run.
pub struct Executor {
    inventory: Arc<Inventory>,
    adapters: Adapters,
    handle: Handle,
    /// Stops the playbook (Ctrl-C, hot reload, deadline).
    cancel: CancellationToken,
    /// Stops a rollback too (a second Ctrl-C).
    abort: CancellationToken,
    events: Arc<dyn EventSink>,
    options: ExecutorOptions,
    state: Mutex<RunState>,
    recorder: Mutex<Recorder>,
    /// Held from a drain guard's decision until the node counts as out of
    /// service, so concurrent drains cannot each count the other in.
    drain_turn: Mutex<()>,
}

/// One step as the generic runner sees it.
struct StepSpec<'a> {
    cluster: &'a Cluster,
    node: Option<&'a NodeSpec>,
    action: Action,
    compensating: bool,
    timeout: Duration,
    /// Recorded with the intent; what reconciliation needs after a crash.
    params: Value,
}

impl StepSpec<'_> {
    fn node_name(&self) -> Option<&str> {
        self.node.map(|n| n.name.as_str())
    }

    fn error(&self, error: StepError) -> StepError {
        match self.node_name() {
            Some(node) => error.on_node(&self.cluster.name, node),
            None => error.on_cluster(&self.cluster.name),
        }
    }
}

type StepResult<T> = Result<T, StepError>;

impl Executor {
    pub fn new(inventory: Arc<Inventory>, adapters: Adapters, handle: Handle, events: Arc<dyn EventSink>) -> Self {
        let abort = CancellationToken::new();
        Self {
            inventory,
            adapters,
            handle,
            cancel: abort.child_token(),
            abort,
            events,
            options: ExecutorOptions::default(),
            state: Mutex::new(RunState::default()),
            recorder: Mutex::new(Recorder::default()),
            drain_turn: Mutex::new(()),
        }
    }

    /// Journals this run (and replays `recorder`'s journal first on resume).
    pub fn with_recorder(self, recorder: Recorder) -> Self {
        *self.recorder() = recorder;
        self
    }

    pub fn inventory(&self) -> &Arc<Inventory> {
        &self.inventory
    }

    pub fn clock(&self) -> &Clock {
        &self.adapters.clock
    }

    pub fn now(&self) -> Duration {
        self.adapters.clock.now()
    }

    /// Cancelling this token stops the playbook (not its rollback).
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Cancelling this token stops everything, rollback included.
    pub fn abort_token(&self) -> CancellationToken {
        self.abort.clone()
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    fn state(&self) -> MutexGuard<'_, RunState> {
        // A panic while holding the lock is a bug; the state is still the
        // best record of what happened, so keep using it.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn recorder(&self) -> MutexGuard<'_, Recorder> {
        self.recorder.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether any step that changes a node has started.
    pub fn touched_anything(&self) -> bool {
        self.state().touched
    }

    pub fn steps_run(&self) -> u64 {
        self.state().steps
    }

    pub fn patched_nodes(&self) -> Vec<String> {
        self.state().patched.iter().cloned().collect()
    }

    pub fn rollbacks(&self) -> u32 {
        self.state().rollbacks
    }

    /// Clusters this run has stepped on.
    pub fn clusters_used(&self) -> Vec<String> {
        self.state().before.keys().cloned().collect()
    }

    /// Where the compensation stack is now; pass to [`Self::rollback_to`]
    /// to undo what was pushed since (in a lane: what that lane pushed).
    pub fn mark(&self) -> usize {
        self.state().next_compensation
    }

    /// Writes a record to the journal, outside any step. A write failure is
    /// kept and stops the run at its next step.
    pub fn journal(&self, body: Body) {
        let now = self.now();
        let mut recorder = self.recorder();
        if let Err(e) = recorder.write(now, body) {
            recorder.failed.get_or_insert(e.to_string());
        }
    }

    /// Writes a record even while replaying (resume marker, end of run).
    pub fn journal_always(&self, body: Body) {
        let now = self.now();
        let mut recorder = self.recorder();
        if let Err(e) = recorder.write_always(now, body) {
            recorder.failed.get_or_insert(e.to_string());
        }
    }

    /// Replaying journaled calls on resume: nothing may reach the outside.
    pub fn replaying(&self) -> bool {
        self.recorder().replaying()
    }

    /// Tells the event sinks (progress, notifications) something happened.
    pub fn emit(&self, event: Event) {
        self.events.emit(&event);
    }

    pub fn log(&self, text: &str) {
        self.events.emit(&Event::Log { at: self.now(), text: text.to_string() });
        self.journal(Body::Log { text: text.to_string() });
    }

    // ----- lookups ---------------------------------------------------------

    pub fn cluster(&self, name: &str) -> Result<&Cluster, StepError> {
        self.inventory.cluster(name).ok_or_else(|| {
            let known: Vec<&str> = self.inventory.clusters.iter().map(|c| c.name.as_str()).collect();
            StepError::new(ErrorKind::Invalid, Action::Cluster, format!("no cluster named `{name}` in the inventory"))
                .with_hint(format!("clusters: {}", known.join(", ")))
        })
    }

    fn node(&self, name: &str, action: Action) -> Result<(&Cluster, &NodeSpec), StepError> {
        self.inventory.node(name).ok_or_else(|| {
            StepError::new(ErrorKind::Invalid, action, format!("no node named `{name}` in the inventory"))
        })
    }

    fn adapters_of(&self, cluster: &Cluster) -> &ClusterAdapters {
        self.adapters.clusters.get(&cluster.name).expect("adapters are built for every inventory cluster")
    }

    fn ctx(&self, timeout: Duration, token: &CancellationToken) -> CallCtx {
        CallCtx {
            clock: self.adapters.clock.clone(),
            timeout,
            cancel: token.clone(),
            transcript: Default::default(),
            boot_id: None,
        }
    }

    fn token(&self, compensating: bool) -> CancellationToken {
        if compensating {
            self.abort.clone()
        } else {
            self.cancel.clone()
        }
    }

    /// The bridge: runs an adapter future on the tokio runtime from the
    /// playbook thread, racing it against cancellation and a wall timeout.
    fn bridge<T>(
        &self,
        action: Action,
        token: &CancellationToken,
        timeout: Duration,
        fut: impl Future<Output = Result<T, AdapterError>>,
    ) -> Result<T, StepError> {
        if token.is_cancelled() {
            return Err(StepError::cancelled(action));
        }
        // On a virtual clock the twin answers at once unless it is paced to
        // real time, when a step may take up to its own timeout.
        let wall =
            if self.adapters.clock.is_virtual() { self.options.rehearsal_call_limit.max(timeout) } else { timeout };
        self.handle.block_on(async {
            tokio::select! {
                biased;
                _ = token.cancelled() => Err(StepError::cancelled(action)),
                result = tokio::time::timeout(wall, fut) => match result {
                    Ok(Ok(value)) => Ok(value),
                    Ok(Err(e)) => Err(StepError::new(e.kind(), action, e.to_string())),
                    Err(_) => Err(StepError::new(
                        ErrorKind::Timeout,
                        action,
                        format!("no answer from the adapter within {}", humantime::format_duration(wall)),
                    )),
                },
            }
        })
    }

    /// Moves a virtual clock up to a time the journal recorded, so a resumed
    /// rehearsal goes on where the original one was.
    fn catch_up(&self, vt: f64) {
        let recorded = Duration::from_secs_f64(vt.max(0.0));
        let now = self.now();
        if recorded > now {
            self.adapters.clock.advance(recorded - now);
        }
    }

    fn diverged(&self, call: u64, recorded: &str, now: &str) -> StepError {
        StepError::new(
            ErrorKind::Cancelled,
            Action::Param,
            format!("resume diverged at call {call}: the journal has {recorded}, the playbook now asks for {now}"),
        )
        .with_hint("the playbook, its parameters or the cluster changed since the run started; finish by hand")
    }

    /// An observation the playbook sees: recorded, and replayed on resume.
    fn read<T: Serialize + DeserializeOwned>(
        &self,
        what: &str,
        target: &str,
        live: impl FnOnce() -> StepResult<T>,
    ) -> StepResult<T> {
        let (call, recorded) = self.next_call();
        match recorded {
            Some(Recorded::Read { what: w, target: t, result, vt }) if w == what && t == target => {
                self.catch_up(vt);
                let result: Result<T, StepError> = serde_json::from_value(result).map_err(|e| {
                    StepError::new(ErrorKind::Failed, Action::Param, format!("journal read {call}: {e}"))
                })?;
                return result;
            }
            Some(other) => return Err(self.diverged(call, &describe(&other), &format!("{what} {target}"))),
            None => {}
        }
        let result = live();
        let value = serde_json::to_value(&result).unwrap_or(Value::Null);
        self.journal(Body::Read { call, what: what.to_string(), target: target.to_string(), result: value });
        result
    }

    /// Observes every node of a cluster: health, version, traffic and role.
    /// Not journaled: the switchover guard uses it.
    fn observe(&self, cluster: &Cluster, action: Action) -> Result<Vec<NodeView>, StepError> {
        self.observe_nodes(cluster, action, None, Ask::FULL)
    }

    /// Asks the adapters about some nodes of a cluster (all with `None`),
    /// [`OBSERVE_AT_ONCE`] at a time, in inventory order. What is observed
    /// becomes the nodes' [`Seen`] state.
    fn observe_nodes(
        &self,
        cluster: &Cluster,
        action: Action,
        names: Option<&BTreeSet<&str>>,
        ask: Ask,
    ) -> Result<Vec<NodeView>, StepError> {
        use futures::StreamExt;
        let adapters = self.adapters_of(cluster);
        let token = self.abort.clone();
        let asked = self.now();
        let views = self
            .bridge(action, &token, cluster.policy.step_timeout, async {
                let roles = match (&adapters.replication, cluster.kind) {
                    (Some(replication), ClusterKind::ActivePassive) => Some(replication.roles(cluster).await?),
                    _ => None,
                };
                let nodes = cluster.nodes.iter().filter(|n| names.is_none_or(|names| names.contains(n.name.as_str())));
                let views = nodes.map(|node| {
                    let roles = &roles;
                    async move {
                        let at = NodeRef { cluster, node };
                        let pool_traffic = adapters.traffic.as_ref().filter(|_| cluster.kind == ClusterKind::Pool);
                        let (up, version, traffic) = futures::join!(
                            async {
                                match ask.up {
                                    true => adapters.host.is_up(at).await,
                                    false => Ok(true),
                                }
                            },
                            async {
                                match ask.version {
                                    true => adapters.host.version(at).await.or_else(|_| Ok("unknown".to_string())),
                                    false => Ok(String::new()),
                                }
                            },
                            async {
                                match (pool_traffic, ask.connections) {
                                    (Some(t), true) => t.state(at).await.map(Some),
                                    (Some(t), false) => t
                                        .in_service(at)
                                        .await
                                        .map(|s| Some(crate::adapter::TrafficState { in_service: s, connections: 0 })),
                                    (None, _) => Ok(None),
                                }
                            }
                        );
                        let (up, version, traffic) = (up?, version?, traffic?);
                        let role =
                            roles.as_ref().and_then(|r| r.iter().find(|(n, _)| *n == node.name).map(|(_, role)| *role));
                        Ok::<_, AdapterError>(NodeView {
                            name: node.name.clone(),
                            role,
                            in_service: traffic.map_or(role == Some(Role::Active), |t| t.in_service),
                            connections: traffic.map_or(0, |t| t.connections),
                            up,
                            version,
                        })
                    }
                });
                let views: Vec<Result<NodeView, AdapterError>> =
                    futures::stream::iter(views).buffered(OBSERVE_AT_ONCE).collect().await;
                views.into_iter().collect::<Result<Vec<_>, _>>()
            })
            .map_err(|e| e.on_cluster(&cluster.name))?;
        // Stamped with when it was asked: a step that finished meanwhile
        // (another lane's drain) knows better.
        let mut state = self.state();
        for v in &views {
            let seen = state.seen.entry(v.name.clone()).or_default();
            let floor = seen.floor;
            newer(&mut seen.in_service, v.in_service, asked, floor);
            if ask.up {
                newer(&mut seen.up, v.up, asked, floor);
            }
            if ask.connections {
                newer(&mut seen.connections, v.connections, asked, floor);
            }
        }
        Ok(views)
    }

    /// The guards' view of some nodes: what pitcrew saw of them within the
    /// policy's `observation_max_age`, the rest asked again. A node another
    /// drain is taking out counts as out of service.
    fn guard_views(
        &self,
        cluster: &Cluster,
        action: Action,
        names: &[&str],
        ask: Ask,
    ) -> Result<Vec<NodeView>, Refusal> {
        self.guard_views_of(cluster, action, names, ask, None)
    }

    /// [`Self::guard_views`], where `up_of` names a node whose health must be
    /// known even while it is out of service (the node an undrain returns).
    fn guard_views_of(
        &self,
        cluster: &Cluster,
        action: Action,
        names: &[&str],
        ask: Ask,
        up_of: Option<&str>,
    ) -> Result<Vec<NodeView>, Refusal> {
        let max_age = cluster.policy.observation_max_age;
        // Pairs always ask: roles are not remembered.
        let remember = cluster.kind == ClusterKind::Pool;
        let now = self.now();
        let mut views = Vec::with_capacity(names.len());
        let mut stale = BTreeSet::new();
        {
            let state = self.state();
            for name in names {
                let seen = state.seen.get(*name).copied().unwrap_or_default();
                let view = (|| {
                    // Being drained: out of service, nothing to ask.
                    let in_service = match state.draining.contains(*name) {
                        true => false,
                        false => fresh(seen.in_service, now, max_age)?,
                    };
                    Some(NodeView {
                        name: (*name).to_string(),
                        role: None,
                        in_service,
                        connections: if ask.connections { fresh(seen.connections, now, max_age)? } else { 0 },
                        // A node out of service serves nobody, up or not.
                        up: if ask.up && (in_service || up_of == Some(*name)) {
                            fresh(seen.up, now, max_age)?
                        } else {
                            true
                        },
                        version: String::new(),
                    })
                })();
                match view {
                    Some(view) if remember => views.push(view),
                    _ => {
                        stale.insert(*name);
                    }
                }
            }
        }
        if !stale.is_empty() {
            let observed = self
                .observe_nodes(cluster, action, Some(&stale), ask)
                .map_err(|e| Refusal { message: e.message, hint: e.hint.unwrap_or_default() })?;
            views.extend(observed);
        }
        let state = self.state();
        for v in views.iter_mut() {
            if state.draining.contains(&v.name) {
                v.in_service = false;
            }
        }
        Ok(views)
    }

    /// A step replayed from the journal says nothing of the node now: what
    /// its bookkeeping noted is dropped, and the guards ask again.
    fn forget_seen(&self, spec: &StepSpec<'_>) {
        if let Some(node) = spec.node_name() {
            let now = self.now();
            self.state().seen.insert(node.to_string(), Seen { floor: now, ..Seen::default() });
        }
    }

    /// Notes what a step of pitcrew's own just made of a node.
    fn set_seen(&self, node: &str, change: impl FnOnce(&mut Seen, Duration)) {
        let now = self.now();
        change(self.state().seen.entry(node.to_string()).or_default(), now);
    }

    /// A cluster's nodes as the playbook sees them (journaled).
    pub fn observe_recorded(&self, cluster: &Cluster) -> Result<Vec<NodeView>, StepError> {
        self.read("observe", &cluster.name, || self.observe(cluster, Action::Param))
    }

    /// The live view of one node.
    pub fn node_view(&self, name: &str) -> Result<NodeView, StepError> {
        let (cluster, _) = self.node(name, Action::Param)?;
        self.read("node", name, || {
            let views = self.observe_nodes(cluster, Action::Param, Some(&BTreeSet::from([name])), Ask::FULL)?;
            views.into_iter().next().ok_or_else(|| {
                StepError::new(ErrorKind::Invalid, Action::Param, format!("no node named `{name}` in the inventory"))
            })
        })
    }

    /// The current roles of an active/passive cluster.
    pub fn roles(&self, cluster: &Cluster) -> Result<Vec<(String, Role)>, StepError> {
        let Some(replication) = self.adapters_of(cluster).replication.clone() else {
            return Err(StepError::new(
                ErrorKind::Invalid,
                Action::Param,
                format!("cluster `{}` has no replication adapter", cluster.name),
            )
            .on_cluster(&cluster.name));
        };
        self.read("roles", &cluster.name, || {
            self.bridge(Action::Param, &self.abort.clone(), cluster.policy.step_timeout, replication.roles(cluster))
        })
    }

    // ----- the generic step ---------------------------------------------------

    /// The next call number. A lane taking turns hands over here first.
    fn next_call(&self) -> (u64, Option<Recorded>) {
        crate::lanes::take_turns();
        self.recorder().next_call()
    }

    /// Runs `f(0)`, ..., `f(lanes - 1)` each in its own lane (thread) and
    /// returns their results in lane order. Lanes run at once on the wall
    /// clock and take turns on a virtual one (see [`crate::lanes`]). Inside a
    /// lane, lanes run one after another: batches do not nest.
    pub fn lanes<R: Send>(&self, lanes: usize, f: impl Fn(usize) -> R + Sync) -> Vec<R> {
        if crate::lanes::current().is_some() {
            return (0..lanes).map(&f).collect();
        }
        let first = self.recorder().reserve_lanes(lanes as u64);
        let turnstile = self.adapters.clock.is_virtual().then(|| Arc::new(crate::lanes::Turnstile::new(lanes)));
        std::thread::scope(|scope| {
            let running: Vec<_> = (0..lanes)
                .map(|lane| {
                    let (f, turnstile) = (&f, turnstile.clone());
                    scope.spawn(move || {
                        self.recorder().enter_lane(first + lane as u64 * crate::recorder::LANE_CALLS);
                        let guard = crate::lanes::LaneGuard::enter(lane, turnstile);
                        let result = f(lane);
                        self.recorder().leave_lane();
                        drop(guard);
                        result
                    })
                })
                .collect();
            running
                .into_iter()
                .map(|lane| lane.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
                .collect()
        })
    }

    fn next_seq(&self) -> u64 {
        let mut state = self.state();
        state.seq += 1;
        state.seq
    }

    fn refusal(&self, spec: &StepSpec<'_>, call: u64, refusal: Refusal) -> StepError {
        let error =
            spec.error(StepError::new(ErrorKind::Refused, spec.action, refusal.message).with_hint(refusal.hint));
        self.refused_event(spec, call, &error);
        error
    }

    fn refused_event(&self, spec: &StepSpec<'_>, call: u64, error: &StepError) {
        let seq = self.next_seq();
        self.events.emit(&Event::StepFinished {
            seq,
            at: self.now(),
            took: Duration::ZERO,
            cluster: spec.cluster.name.clone(),
            node: spec.node_name().map(str::to_string),
            action: spec.action,
            compensating: spec.compensating,
            outcome: Outcome::Refused { message: error.message.clone() },
        });
        self.journal(Body::Refused {
            call,
            cluster: spec.cluster.name.clone(),
            node: spec.node_name().map(str::to_string),
            action: spec.action.as_str().to_string(),
            error: error.clone(),
        });
    }

    /// Snapshots a cluster the first time a step reaches it (journaled, so
    /// a resumed run compares against the same "before"). `rolling` takes
    /// it before a parallel batch starts, so that no lane races for it.
    pub fn snapshot(&self, cluster: &Cluster) -> StepResult<()> {
        if self.state().before.contains_key(&cluster.name) {
            return Ok(());
        }
        let snapshot: BTreeMap<String, NodeBefore> = self.read("snapshot", &cluster.name, || {
            let views = self.observe_nodes(cluster, Action::Param, None, Ask::BEFORE)?;
            Ok(views
                .into_iter()
                .map(|v| (v.name.clone(), NodeBefore { serving: v.serving(cluster.kind), version: v.version }))
                .collect())
        })?;
        self.state().before.insert(cluster.name.clone(), snapshot);
        Ok(())
    }

    /// Bookkeeping every finished step does, live or replayed.
    fn account(&self, spec: &StepSpec<'_>, at: Duration) {
        let mut state = self.state();
        state.steps += 1;
        if spec.action.changes_state() {
            state.touched = true;
            state.last_change.insert(spec.cluster.name.clone(), at);
        }
    }

    /// Runs one step: replays it from the journal, reconciles it after a
    /// crash, or runs it live (guard, window, intent, adapter call, outcome).
    /// `after` is the step's bookkeeping (compensation, patched set, sync
    /// checks) and runs in every case with the step's result.
    fn step<T, Fut>(
        &self,
        spec: StepSpec<'_>,
        guard: impl FnOnce() -> Result<(), Refusal>,
        call: impl FnOnce(CallCtx) -> Fut,
        reconcile: impl FnOnce(&Value) -> StepResult<Option<T>>,
        after: impl FnOnce(&StepResult<T>),
        detail: impl FnOnce(&T) -> String,
    ) -> StepResult<T>
    where
        T: Serialize + DeserializeOwned,
        Fut: Future<Output = Result<T, AdapterError>>,
    {
        let token = self.token(spec.compensating);
        if token.is_cancelled() {
            return Err(StepError::cancelled(spec.action));
        }
        if let Some(failure) = self.recorder().failed.clone() {
            return Err(StepError::new(
                ErrorKind::Cancelled,
                spec.action,
                format!("the journal cannot be written: {failure}"),
            )
            .with_hint("no further step runs without its audit record"));
        }
        self.snapshot(spec.cluster)?;
        let (call_no, recorded) = self.next_call();
        let action = spec.action.as_str();
        let node = spec.node_name().map(str::to_string);
        let mut skip_intent = false;
        match recorded {
            Some(Recorded::Done { action: a, node: n, result, vt }) if a == action && n == node => {
                self.catch_up(vt);
                let result: StepResult<T> = result.and_then(|v| {
                    serde_json::from_value(v)
                        .map_err(|e| StepError::new(ErrorKind::Failed, spec.action, format!("journal: {e}")))
                });
                self.account(&spec, self.now());
                after(&result);
                self.forget_seen(&spec);
                self.finished_event(&spec, self.now(), Duration::ZERO, &result, detail, true);
                return result.map_err(|e| spec.error(e));
            }
            Some(Recorded::Refused { action: a, node: n, error }) if a == action && n == node => {
                self.refused_event(&spec, call_no, &error);
                return Err(error);
            }
            Some(Recorded::Pending { action: a, node: n, params }) if a == action && n == node => {
                // The run died during this call: see what the adapters show.
                if let Some(value) = reconcile(&params)? {
                    let result = Ok(value);
                    self.outcome_record(&spec, call_no, &result, Duration::ZERO, true, Vec::new());
                    self.account(&spec, self.now());
                    after(&result);
                    self.forget_seen(&spec);
                    self.finished_event(&spec, self.now(), Duration::ZERO, &result, detail, true);
                    return result;
                }
                skip_intent = true;
            }
            Some(other) => {
                return Err(self.diverged(
                    call_no,
                    &describe(&other),
                    &format!("{action} {}", node.as_deref().unwrap_or("")),
                ))
            }
            None => {}
        }

        // Compensations are exempt: a rollback must run even past the window.
        if spec.action.changes_state() && !spec.compensating {
            let estimate = self
                .adapters_of(spec.cluster)
                .host
                .estimate(spec.action)
                .unwrap_or_else(|| default_estimate(spec.action));
            if let Err(refusal) = guard::may_start_within_window(
                spec.action,
                self.now(),
                estimate,
                spec.cluster.policy.maintenance_window,
            ) {
                return Err(self.refusal(&spec, call_no, refusal));
            }
        }
        // Last: a drain guard that lets a drain go counts the node out at
        // once, so nothing may refuse the step after it.
        if let Err(refusal) = guard() {
            return Err(self.refusal(&spec, call_no, refusal));
        }
        let seq = self.next_seq();
        let started = self.now();
        if spec.action.changes_state() {
            self.state().touched = true;
        }
        self.events.emit(&Event::StepStarted {
            seq,
            at: started,
            cluster: spec.cluster.name.clone(),
            node: node.clone(),
            action: spec.action,
            compensating: spec.compensating,
        });
        if !skip_intent {
            // Write-ahead: the intent is on disk before the adapter is called.
            let intent = Body::Intent {
                call: call_no,
                cluster: spec.cluster.name.clone(),
                node: node.clone(),
                action: action.to_string(),
                params: spec.params.clone(),
            };
            let written = self.recorder().write(started, intent);
            if let Err(e) = written {
                if let Some(node) = spec.node_name() {
                    self.state().draining.remove(node);
                }
                return Err(spec.error(StepError::new(
                    ErrorKind::Cancelled,
                    spec.action,
                    format!("the journal cannot be written: {e}"),
                )));
            }
            self.pause_point(&spec, call_no, "intent");
        }
        let ctx = self.ctx(spec.timeout, &token);
        let transcript = ctx.transcript.clone();
        let result = self.bridge(spec.action, &token, spec.timeout, call(ctx));
        self.pause_point(&spec, call_no, "call");
        let at = self.now();
        self.outcome_record(&spec, call_no, &result, at.saturating_sub(started), false, transcript.take());
        self.account(&spec, at);
        after(&result);
        self.finished_event(&spec, at, at.saturating_sub(started), &result, detail, false);
        self.pause_point(&spec, call_no, "outcome");
        result.map_err(|e| spec.error(e))
    }

    /// The test hook, for journaled runs only (never the preflight).
    fn pause_point(&self, spec: &StepSpec<'_>, call: u64, phase: &str) {
        if self.recorder().has_journal() {
            crate::testing::pause_point(call, spec.action.as_str(), spec.node_name(), phase);
        }
    }

    fn outcome_record<T: Serialize>(
        &self,
        spec: &StepSpec<'_>,
        call: u64,
        result: &StepResult<T>,
        took: Duration,
        reconciled: bool,
        commands: Vec<Value>,
    ) {
        let (ok, value, error) = match result {
            Ok(v) => (true, serde_json::to_value(v).unwrap_or(Value::Null), None),
            Err(e) => (false, Value::Null, Some(spec.error(e.clone()))),
        };
        let body = Body::Outcome {
            call,
            cluster: spec.cluster.name.clone(),
            node: spec.node_name().map(str::to_string),
            action: spec.action.as_str().to_string(),
            ok,
            result: value,
            error,
            duration_s: took.as_secs_f64(),
            reconciled,
            commands,
        };
        let now = self.now();
        let mut recorder = self.recorder();
        if let Err(e) = recorder.write_always(now, body) {
            recorder.failed.get_or_insert(e.to_string());
        }
    }

    fn finished_event<T>(
        &self,
        spec: &StepSpec<'_>,
        at: Duration,
        took: Duration,
        result: &StepResult<T>,
        detail: impl FnOnce(&T) -> String,
        replayed: bool,
    ) {
        let outcome = match result {
            Ok(value) => {
                let detail = detail(value);
                Outcome::Ok { detail: if replayed { format!("{detail} (from the journal)") } else { detail } }
            }
            Err(e) => Outcome::Failed { kind: e.kind, message: e.message.clone() },
        };
        let seq = self.next_seq();
        self.events.emit(&Event::StepFinished {
            seq,
            at,
            took,
            cluster: spec.cluster.name.clone(),
            node: spec.node_name().map(str::to_string),
            action: spec.action,
            compensating: spec.compensating,
            outcome,
        });
    }

    fn push(&self, compensation: Compensation, compensating: bool) {
        if !compensating {
            let mut state = self.state();
            let id = state.next_compensation;
            state.next_compensation += 1;
            state.compensations.push(Pushed { id, lane: crate::lanes::current(), compensation });
        }
    }

    /// Records a fact snapshot of a node (journal, and the facts baseline
    /// of live runs). Best effort: a node that does not answer has none.
    fn snapshot_facts(&self, cluster: &Cluster, spec: &NodeSpec, reason: &str) {
        self.snapshot_facts_of(cluster, &[spec], reason);
    }

    /// [`Self::snapshot_facts`] of several nodes, asked [`OBSERVE_AT_ONCE`]
    /// at a time and recorded in the given order.
    fn snapshot_facts_of(&self, cluster: &Cluster, nodes: &[&NodeSpec], reason: &str) {
        use futures::StreamExt;
        if !self.recorder().has_journal() || self.recorder().replaying() {
            return;
        }
        let host = self.adapters_of(cluster).host.clone();
        let asks = nodes.iter().map(|node| {
            let host = &host;
            async move { host.facts(NodeRef { cluster, node }).await }
        });
        let all = self.bridge(Action::Facts, &self.abort, cluster.policy.step_timeout, async {
            Ok(futures::stream::iter(asks).buffered(OBSERVE_AT_ONCE).collect::<Vec<_>>().await)
        });
        let Ok(all) = all else { return };
        let dir = self.recorder().facts_dir.clone();
        for (spec, facts) in nodes.iter().zip(all) {
            let Ok(facts) = facts else { continue };
            let value = serde_json::to_value(&facts).unwrap_or(Value::Null);
            self.journal(Body::Facts {
                node: spec.name.clone(),
                cluster: cluster.name.clone(),
                reason: reason.to_string(),
                facts: value.clone(),
            });
            if let Some(dir) = &dir {
                let baseline = json!({ "node": spec.name, "cluster": cluster.name, "reason": reason, "facts": value });
                if let Err(e) = crate::drift::write_baseline(dir, &spec.name, &baseline) {
                    self.recorder().failed.get_or_insert(e.to_string());
                }
            }
        }
    }

    /// Starts every cluster's probe sampling the service (once per run).
    pub fn start_probes(&self) {
        let probes: Vec<_> = self.adapters.clusters.values().filter_map(|a| a.probe.clone()).collect();
        self.handle.block_on(async {
            for probe in probes {
                probe.start().await;
            }
        });
    }

    /// Records the facts of every node of the clusters this run used; for a
    /// live run they become the baseline the next `pitcrew drift` compares to.
    pub fn snapshot_used_facts(&self, reason: &str) {
        for name in self.clusters_used() {
            let Some(cluster) = self.inventory.cluster(&name) else { continue };
            let nodes: Vec<&NodeSpec> = cluster.nodes.iter().collect();
            self.snapshot_facts_of(cluster, &nodes, reason);
        }
    }

    // ----- steps -------------------------------------------------------------

    /// Takes a pool node out of service and waits for its connections to end.
    pub fn drain(&self, node: &str) -> StepResult<DrainReport> {
        self.drain_step(node, false)
    }

    fn drain_step(&self, name: &str, compensating: bool) -> StepResult<DrainReport> {
        let (cluster, node) = self.node(name, Action::Drain)?;
        let traffic = self.traffic_of(cluster, name, Action::Drain)?;
        let spec = StepSpec {
            cluster,
            node: Some(node),
            action: Action::Drain,
            compensating,
            timeout: cluster.policy.drain_timeout,
            params: Value::Null,
        };
        self.step(
            spec,
            || {
                // Decide and count the node out under one lock: a concurrent
                // drain then sees it out of service.
                let _turn = self.drain_turn.lock().unwrap_or_else(|p| p.into_inner());
                let names: Vec<&str> = cluster.nodes.iter().map(|n| n.name.as_str()).collect();
                let views = self.guard_views(cluster, Action::Drain, &names, Ask::SERVING)?;
                guard::may_drain(cluster.kind, &cluster.policy, &views, name)?;
                self.state().draining.insert(name.to_string());
                Ok(())
            },
            |ctx| async move { traffic.drain(NodeRef { cluster, node }, &ctx).await },
            // Draining again is harmless: run it.
            |_| Ok(None),
            // The drain command may have reached the load balancer even when
            // waiting for zero connections failed: undraining is always safe.
            |r| {
                let now = self.now();
                let mut state = self.state();
                state.draining.remove(name);
                let seen = state.seen.entry(name.to_string()).or_default();
                match r {
                    Ok(_) => (seen.in_service, seen.connections) = (Some((false, now)), Some((0, now))),
                    // In service or not: ask again, and take nothing asked before.
                    Err(_) => (seen.in_service, seen.connections, seen.floor) = (None, None, now),
                }
                drop(state);
                self.push(Compensation::Undrain { cluster: cluster.name.clone(), node: name.to_string() }, compensating)
            },
            |r| {
                format!(
                    "{} connection(s) closed in {}",
                    r.connections_at_start,
                    humantime::format_duration(round(r.waited))
                )
            },
        )
    }

    /// Puts a healthy pool node back in service.
    pub fn undrain(&self, node: &str) -> StepResult<()> {
        self.undrain_step(node, false)
    }

    fn undrain_step(&self, name: &str, compensating: bool) -> StepResult<()> {
        let (cluster, node) = self.node(name, Action::Undrain)?;
        let traffic = self.traffic_of(cluster, name, Action::Undrain)?;
        let spec = StepSpec {
            cluster,
            node: Some(node),
            action: Action::Undrain,
            compensating,
            timeout: cluster.policy.step_timeout,
            params: Value::Null,
        };
        self.step(
            spec,
            || {
                let views = self.guard_views_of(cluster, Action::Undrain, &[name], Ask::SERVING, Some(name))?;
                guard::may_undrain(&views, name)
            },
            |ctx| async move { traffic.undrain(NodeRef { cluster, node }, &ctx).await },
            |_| Ok(None),
            |r| {
                self.set_seen(name, |seen, now| seen.in_service = r.is_ok().then_some((true, now)));
                if r.is_ok() {
                    self.push(
                        Compensation::Drain { cluster: cluster.name.clone(), node: name.to_string() },
                        compensating,
                    );
                }
            },
            |_| "in service".to_string(),
        )
    }

    fn traffic_of(
        &self,
        cluster: &Cluster,
        node: &str,
        action: Action,
    ) -> StepResult<Arc<dyn crate::adapter::TrafficAdapter>> {
        self.adapters_of(cluster).traffic.clone().ok_or_else(|| {
            StepError::new(ErrorKind::Invalid, action, "this cluster has no traffic adapter")
                .on_node(&cluster.name, node)
                .with_hint("active/passive clusters move users with switchover")
        })
    }

    fn host_guard(&self, cluster: &Cluster, name: &str, action: Action) -> Result<(), Refusal> {
        // Only the node itself (and, for a pair, the roles) decides.
        let views = self.guard_views(cluster, action, &[name], Ask::QUIET)?;
        guard::may_change_host(cluster.kind, &views, name, action)
    }

    fn version_of(&self, cluster: &Cluster, node: &NodeSpec) -> StepResult<String> {
        let host = self.adapters_of(cluster).host.clone();
        self.bridge(Action::Param, &self.abort, cluster.policy.step_timeout, host.version(NodeRef { cluster, node }))
    }

    /// Patches a node that serves nobody; pushes a restore compensation.
    pub fn patch(&self, name: &str, params: &Params) -> StepResult<PatchReport> {
        let (cluster, node) = self.node(name, Action::Patch)?;
        // What the run changes shows as this against its "end of run" facts.
        if self.adapters_of(cluster).host.reports_facts() {
            self.snapshot_facts(cluster, node, "before patch");
        }
        let from: String =
            self.read("version", name, || self.version_of(cluster, node).map_err(|e| e.on_node(&cluster.name, name)))?;
        let host = self.adapters_of(cluster).host.clone();
        let spec = StepSpec {
            cluster,
            node: Some(node),
            action: Action::Patch,
            compensating: false,
            timeout: cluster.policy.step_timeout,
            params: json!({ "from_version": from, "params": params }),
        };
        self.step(
            spec,
            || self.host_guard(cluster, name, Action::Patch),
            // The version the intent recorded is the one the patch started from.
            |ctx| {
                let from = from.clone();
                async move {
                    let report = host.patch(NodeRef { cluster, node }, params, &ctx).await?;
                    Ok(PatchReport { from_version: from, ..report })
                }
            },
            // Never patch twice: a node whose version moved since the intent
            // was written has been patched.
            |intent| {
                let before = intent["from_version"].as_str().unwrap_or_default().to_string();
                let now = self.version_of(cluster, node)?;
                Ok((now != before).then_some(PatchReport { from_version: before, to_version: now, snapshot: None }))
            },
            |r| {
                // A patch may restart the service: health must be seen again.
                self.set_seen(name, |seen, now| (seen.up, seen.floor) = (None, now));
                let record = match r {
                    Ok(report) => report.clone(),
                    // A failed patch may have been half applied: record a
                    // restore to the version the node had.
                    Err(_) => PatchReport {
                        from_version: from.clone(),
                        to_version: "unknown (patch failed)".into(),
                        snapshot: None,
                    },
                };
                self.push(
                    Compensation::Restore { cluster: cluster.name.clone(), node: name.to_string(), patch: record },
                    false,
                );
                if r.is_ok() {
                    self.state().patched.insert(name.to_string());
                }
            },
            |r| format!("{} -> {}", r.from_version, r.to_version),
        )
    }

    fn restore_step(&self, name: &str, patch: &PatchReport) -> StepResult<()> {
        let (cluster, node) = self.node(name, Action::Restore)?;
        let host = self.adapters_of(cluster).host.clone();
        let spec = StepSpec {
            cluster,
            node: Some(node),
            action: Action::Restore,
            compensating: true,
            timeout: cluster.policy.reboot_timeout,
            params: json!({ "to_version": patch.from_version }),
        };
        self.step(
            spec,
            || self.host_guard(cluster, name, Action::Restore),
            |ctx| async move {
                // Nothing to undo when the node never left its version.
                if host.version(NodeRef { cluster, node }).await? == patch.from_version {
                    return Ok(());
                }
                host.restore(NodeRef { cluster, node }, patch, &ctx).await
            },
            |_| Ok((self.version_of(cluster, node)? == patch.from_version).then_some(())),
            |r| {
                self.set_seen(name, |seen, now| (seen.up, seen.floor) = (None, now));
                if r.is_ok() {
                    self.state().patched.remove(name);
                }
            },
            |_| format!("back to {}", patch.from_version),
        )
    }

    /// Reboots a node that serves nobody and waits for it to come back.
    pub fn reboot(&self, name: &str) -> StepResult<Duration> {
        let (cluster, node) = self.node(name, Action::Reboot)?;
        let host = self.adapters_of(cluster).host.clone();
        let boot_of = |host: &Arc<dyn crate::adapter::HostAdapter>| {
            self.bridge(
                Action::Reboot,
                &self.abort,
                cluster.policy.step_timeout,
                host.boot_id(NodeRef { cluster, node }),
            )
        };
        let boot: Option<String> = self.read("boot", name, || boot_of(&host))?;
        let spec = StepSpec {
            cluster,
            node: Some(node),
            action: Action::Reboot,
            compensating: false,
            timeout: cluster.policy.reboot_timeout,
            params: json!({ "boot_id": boot }),
        };
        let waiting = host.clone();
        self.step(
            spec,
            || self.host_guard(cluster, name, Action::Reboot),
            |ctx| async move { host.reboot(NodeRef { cluster, node }, &CallCtx { boot_id: boot.clone(), ..ctx }).await },
            // A new boot id means the reboot happened: wait for the node
            // instead of rebooting it again. Without boot ids, reboot again
            // (safe: the node serves nobody).
            |intent| {
                let before = intent["boot_id"].as_str().map(str::to_string);
                let now = boot_of(&waiting)?;
                if before.is_none() || now == before {
                    return Ok(None);
                }
                let ctx = self.ctx(cluster.policy.reboot_timeout, &self.cancel);
                self.bridge(
                    Action::Reboot,
                    &self.cancel,
                    cluster.policy.reboot_timeout,
                    waiting.wait_healthy(NodeRef { cluster, node }, &ctx),
                )?;
                Ok(Some(Duration::ZERO))
            },
            // Back means up and answering its health check.
            |r| self.set_seen(name, |seen, now| seen.up = r.is_ok().then_some((true, now))),
            |d| format!("back after {}", humantime::format_duration(round(*d))),
        )
    }

    /// Waits until a node answers its health check.
    pub fn wait_healthy(&self, name: &str, timeout: Option<Duration>) -> StepResult<()> {
        let (cluster, node) = self.node(name, Action::WaitHealthy)?;
        let host = self.adapters_of(cluster).host.clone();
        let timeout = timeout.unwrap_or(cluster.policy.reboot_timeout);
        let spec = StepSpec {
            cluster,
            node: Some(node),
            action: Action::WaitHealthy,
            compensating: false,
            timeout,
            params: Value::Null,
        };
        self.step(
            spec,
            || Ok(()),
            |ctx| async move { host.wait_healthy(NodeRef { cluster, node }, &ctx).await },
            |_| Ok(None),
            |r| self.set_seen(name, |seen, now| seen.up = r.is_ok().then_some((true, now))),
            |_| "healthy".to_string(),
        )
    }

    /// Smoke-tests one node.
    pub fn probe(&self, name: &str) -> StepResult<ProbeReport> {
        let (cluster, node) = self.node(name, Action::Probe)?;
        let adapters = self.adapters_of(cluster).clone();
        let spec = StepSpec {
            cluster,
            node: Some(node),
            action: Action::Probe,
            compensating: false,
            timeout: cluster.policy.step_timeout,
            params: Value::Null,
        };
        self.step(
            spec,
            || Ok(()),
            |ctx| async move {
                let at = NodeRef { cluster, node };
                let report = match &adapters.probe {
                    Some(probe) => probe.probe(at, &ctx).await?,
                    None => {
                        let state = adapters.host.state(at).await?;
                        ProbeReport { requests: 1, failed: u64::from(!state.up), latency_ms: 0.0 }
                    }
                };
                if report.requests > 0 && report.failed == report.requests {
                    return Err(AdapterError::Failed(format!(
                        "{name} did not answer any of {} probe request(s)",
                        report.requests
                    )));
                }
                Ok(report)
            },
            |_| Ok(None),
            |_| {},
            |r| format!("{}/{} ok, {:.0} ms", r.requests - r.failed, r.requests, r.latency_ms),
        )
    }

    /// Checks replication of an active/passive cluster; fails unless every
    /// replica is linked and within the policy's lag (after waiting up to
    /// `sync_wait` for it to catch up).
    pub fn check_sync(&self, cluster_name: &str) -> StepResult<SyncReport> {
        let cluster = self.cluster(cluster_name).map_err(|e| StepError { action: Action::CheckSync, ..e })?;
        self.check_sync_step(cluster, false)
    }

    fn check_sync_step(&self, cluster: &Cluster, compensating: bool) -> StepResult<SyncReport> {
        let Some(replication) = self.adapters_of(cluster).replication.clone() else {
            return Err(StepError::new(
                ErrorKind::Invalid,
                Action::CheckSync,
                format!("cluster `{}` has no replication adapter", cluster.name),
            )
            .on_cluster(&cluster.name)
            .with_hint("check_sync applies to active_passive clusters"));
        };
        let wait = cluster.policy.sync_wait;
        let max_lag = cluster.policy.max_sync_lag;
        let spec = StepSpec {
            cluster,
            node: None,
            action: Action::CheckSync,
            compensating,
            timeout: wait + cluster.policy.step_timeout,
            params: Value::Null,
        };
        let result = self.step(
            spec,
            || Ok(()),
            |ctx| async move {
                let ctx = CallCtx { timeout: wait, ..ctx };
                replication.wait_sync(cluster, max_lag, &ctx).await
            },
            |_| Ok(None),
            |r| {
                let ok = r.as_ref().is_ok_and(|report| report.in_sync(max_lag));
                self.state().sync_checks.insert(cluster.name.clone(), SyncCheck { at: self.now(), ok });
            },
            |r| {
                let lag = r.replicas.iter().map(|x| x.lag_seconds).fold(0.0, f64::max);
                if r.in_sync(max_lag) {
                    format!("in sync, max lag {lag:.1}s")
                } else {
                    format!("NOT in sync, max lag {lag:.1}s")
                }
            },
        )?;
        if result.in_sync(max_lag) {
            return Ok(result);
        }
        let worst = result
            .replicas
            .iter()
            .filter(|r| !r.link_up || r.lag_seconds > max_lag.as_secs_f64())
            .map(|r| {
                if r.link_up {
                    format!("{} lags {:.1}s behind {}", r.node, r.lag_seconds, result.primary)
                } else {
                    format!("{}'s replication link is down", r.node)
                }
            })
            .collect::<Vec<_>>()
            .join("; ");
        Err(StepError::new(
            ErrorKind::OutOfSync,
            Action::CheckSync,
            format!(
                "not in sync after waiting {}: {worst} (max_sync_lag {})",
                humantime::format_duration(wait),
                humantime::format_duration(max_lag)
            ),
        )
        .on_cluster(&cluster.name)
        .with_hint("investigate replication before any switchover; pitcrew will not switch to a lagging node"))
    }

    /// Makes `target` the active node of an active/passive cluster.
    pub fn switchover(&self, cluster_name: &str, target: &str) -> StepResult<SwitchoverReport> {
        let cluster = self.cluster(cluster_name).map_err(|e| StepError { action: Action::Switchover, ..e })?;
        self.switchover_step(cluster, target, false)
    }

    fn switchover_step(&self, cluster: &Cluster, target: &str, compensating: bool) -> StepResult<SwitchoverReport> {
        let Some(node) = cluster.node(target) else {
            return Err(StepError::new(
                ErrorKind::Invalid,
                Action::Switchover,
                format!("`{target}` is not a node of cluster `{}`", cluster.name),
            )
            .on_cluster(&cluster.name));
        };
        let Some(replication) = self.adapters_of(cluster).replication.clone() else {
            return Err(StepError::new(
                ErrorKind::Invalid,
                Action::Switchover,
                "this cluster has no replication adapter",
            )
            .on_cluster(&cluster.name)
            .with_hint("pools move users with drain/undrain"));
        };
        let roles = self.roles(cluster)?;
        let active = roles.iter().find(|(_, r)| *r == Role::Active).map(|(n, _)| n.clone()).unwrap_or_default();
        if active == target {
            return Ok(SwitchoverReport { from: active, to: target.to_string(), paused: Duration::ZERO });
        }
        let spec = StepSpec {
            cluster,
            node: Some(node),
            action: Action::Switchover,
            compensating,
            timeout: cluster.policy.step_timeout,
            params: json!({ "from": active }),
        };
        let sync_replication = replication.clone();
        self.step(
            spec,
            || {
                let views = self
                    .observe(cluster, Action::Switchover)
                    .map_err(|e| Refusal { message: e.message, hint: String::new() })?;
                let current = self
                    .bridge(
                        Action::Switchover,
                        &self.abort,
                        cluster.policy.step_timeout,
                        sync_replication.sync_status(cluster),
                    )
                    .map_err(|e| Refusal { message: e.message, hint: "check replication".into() })?;
                let (last_check, last_change) = {
                    let state = self.state();
                    (state.sync_checks.get(&cluster.name).cloned(), state.last_change.get(&cluster.name).copied())
                };
                let ctx = SwitchoverContext {
                    policy: &cluster.policy,
                    now: self.now(),
                    last_check: last_check.as_ref(),
                    last_change,
                    current: &current,
                };
                guard::may_switchover(cluster.kind, &views, target, &ctx)
            },
            |ctx| async move { replication.switchover(cluster, node, &ctx).await },
            |intent| {
                let from = intent["from"].as_str().unwrap_or_default().to_string();
                let roles = self.bridge(Action::Switchover, &self.abort, cluster.policy.step_timeout, async {
                    self.adapters_of(cluster).replication.as_ref().expect("checked above").roles(cluster).await
                })?;
                let done = roles.iter().any(|(n, r)| n == target && *r == Role::Active);
                Ok(done.then(|| SwitchoverReport { from, to: target.to_string(), paused: Duration::ZERO }))
            },
            |r| {
                if let (Ok(report), false) = (r, compensating) {
                    self.push(
                        Compensation::SwitchBack { cluster: cluster.name.clone(), node: report.from.clone() },
                        false,
                    );
                }
            },
            |r| format!("{} -> {}, users held {} ms", r.from, r.to, r.paused.as_millis()),
        )
    }

    /// Gathers a node's facts (and records them as a snapshot).
    pub fn facts(&self, name: &str) -> StepResult<Facts> {
        let (cluster, node) = self.node(name, Action::Facts)?;
        let host = self.adapters_of(cluster).host.clone();
        let facts: Facts = self.read("facts", name, || {
            self.bridge(Action::Facts, &self.cancel, cluster.policy.step_timeout, host.facts(NodeRef { cluster, node }))
                .map_err(|e| e.on_node(&cluster.name, name))
        })?;
        if !self.recorder().replaying() {
            let value = serde_json::to_value(&facts).unwrap_or(Value::Null);
            self.journal(Body::Facts {
                node: name.to_string(),
                cluster: cluster.name.clone(),
                reason: "facts()".into(),
                facts: value,
            });
        }
        Ok(facts)
    }

    /// Gathers the facts of every node of a cluster and compares the peers
    /// (journaled as one observation).
    pub fn drift(&self, cluster: &Cluster) -> StepResult<crate::drift::DriftReport> {
        let host = self.adapters_of(cluster).host.clone();
        self.read("drift", &cluster.name, || {
            let mut nodes = BTreeMap::new();
            let mut report = crate::drift::DriftReport::default();
            for node in &cluster.nodes {
                let facts = self.bridge(
                    Action::Drift,
                    &self.cancel,
                    cluster.policy.step_timeout,
                    host.facts(NodeRef { cluster, node }),
                );
                match facts {
                    Ok(facts) => {
                        nodes.insert(
                            node.name.clone(),
                            crate::drift::flatten(&serde_json::to_value(&facts).unwrap_or(Value::Null)),
                        );
                    }
                    Err(e) if e.kind == ErrorKind::Cancelled => return Err(e),
                    Err(_) => report.unreachable.push(node.name.clone()),
                }
            }
            report.peers = crate::drift::compare_peers(&cluster.name, &nodes, &cluster.critical_facts);
            Ok(report)
        })
    }

    /// Cumulative traffic of a cluster's probe since the run started.
    pub fn sample(&self, cluster: &Cluster) -> StepResult<Option<TrafficSample>> {
        let Some(probe) = self.adapters_of(cluster).probe.clone() else { return Ok(None) };
        self.read("traffic", &cluster.name, || {
            self.bridge(Action::Probe, &self.abort, cluster.policy.step_timeout, probe.sample(cluster)).map(Some)
        })
    }

    /// Waits (virtually in a rehearsal); cancellable.
    pub fn sleep(&self, duration: Duration) -> StepResult<()> {
        self.read("sleep", &format!("{}s", duration.as_secs_f64()), || {
            let clock = self.adapters.clock.clone();
            let done = if clock.is_virtual() {
                !self.cancel.is_cancelled() && {
                    clock.advance(duration);
                    true
                }
            } else {
                self.handle.block_on(clock.sleep(duration, &self.cancel))
            };
            if done {
                Ok(())
            } else {
                Err(StepError::cancelled(Action::Sleep))
            }
        })
    }

    // ----- rollback -----------------------------------------------------------

    /// Unwinds every compensation pushed since `mark`, newest first, then
    /// checks that the service runs on unpatched nodes again.
    pub fn rollback_to(&self, mark: usize, reason: &str) -> RollbackReport {
        let pending: Vec<Compensation> = {
            let mut state = self.state();
            state.rollbacks += 1;
            // In a lane, only what this lane did since the mark: the other
            // lanes' nodes are not this failure's to undo.
            let lane = crate::lanes::current();
            let (mine, others): (Vec<_>, Vec<_>) = std::mem::take(&mut state.compensations)
                .into_iter()
                .partition(|p| p.id >= mark && (lane.is_none() || p.lane == lane));
            state.compensations = others;
            mine.into_iter().map(|p| p.compensation).collect::<Vec<_>>()
        };
        self.events.emit(&Event::RollbackStarted { at: self.now(), reason: reason.to_string(), steps: pending.len() });
        self.journal(Body::RollbackStarted { reason: reason.to_string(), steps: pending.len() });
        let mut report = RollbackReport { steps: pending.len(), ..RollbackReport::default() };
        let mut clusters = BTreeSet::new();
        // A partial rollback (one node inside `rolling`) answers for the
        // nodes it unwound; nodes patched earlier on purpose may serve.
        let scope: Option<BTreeSet<String>> = (mark > 0 || crate::lanes::current().is_some())
            .then(|| pending.iter().map(|c| c.node().to_string()).collect());
        for compensation in pending.into_iter().rev() {
            let result = match &compensation {
                Compensation::Undrain { cluster, node } => {
                    clusters.insert(cluster.clone());
                    self.undrain_step(node, true)
                }
                Compensation::Drain { cluster, node } => {
                    clusters.insert(cluster.clone());
                    self.drain_step(node, true).map(|_| ())
                }
                Compensation::Restore { cluster, node, patch } => {
                    clusters.insert(cluster.clone());
                    self.restore_step(node, patch)
                }
                Compensation::SwitchBack { cluster, node } => {
                    clusters.insert(cluster.clone());
                    self.switch_back(cluster, node)
                }
            };
            if let Err(e) = result {
                if e.kind == ErrorKind::Cancelled && self.abort.is_cancelled() {
                    report.failures.push("rollback aborted".into());
                    break;
                }
                report.failures.push(e.to_string());
            }
        }
        self.verify_service(&clusters, scope.as_ref(), &mut report);
        self.events.emit(&Event::RollbackFinished { at: self.now(), ok: report.service_restored() });
        self.journal(Body::RollbackFinished { ok: report.service_restored() });
        report
    }

    /// Unwinds the whole run.
    pub fn rollback(&self, reason: &str) -> RollbackReport {
        self.rollback_to(0, reason)
    }

    fn switch_back(&self, cluster_name: &str, node: &str) -> StepResult<()> {
        let cluster = self.cluster(cluster_name)?;
        self.check_sync_step(cluster, true)?;
        self.switchover_step(cluster, node, true).map(|_| ())
    }

    fn verify_service(
        &self,
        clusters: &BTreeSet<String>,
        scope: Option<&BTreeSet<String>>,
        report: &mut RollbackReport,
    ) {
        for name in clusters {
            let Ok(cluster) = self.cluster(name) else { continue };
            let views = match self.observe_recorded(cluster) {
                Ok(views) => views,
                Err(e) => {
                    report.unsafe_service.push(format!("cluster {name}: cannot observe after rollback: {e}"));
                    continue;
                }
            };
            let before = self.state().before.get(name).cloned().unwrap_or_default();
            let original = |v: &NodeView| {
                scope.is_some_and(|nodes| !nodes.contains(&v.name))
                    || before.get(&v.name).is_none_or(|b| b.version == v.version)
            };
            let serving: Vec<&NodeView> = views.iter().filter(|v| v.serving(cluster.kind)).collect();
            for v in &serving {
                if !original(v) {
                    report.unsafe_service.push(format!(
                        "{}: serves users on {} (was {})",
                        v.name,
                        v.version,
                        before.get(&v.name).map_or("?", |b| &b.version)
                    ));
                }
            }
            let needed = match cluster.kind {
                ClusterKind::Pool => cluster.policy.min_in_service,
                ClusterKind::ActivePassive => 1,
            };
            if serving.len() < needed {
                report.unsafe_service.push(format!("cluster {name}: {} node(s) serve, {needed} needed", serving.len()));
            }
            for v in views.iter().filter(|v| !v.serving(cluster.kind)) {
                let was_serving = before.get(&v.name).is_some_and(|b| b.serving);
                if !original(v) || !v.up || (was_serving && cluster.kind == ClusterKind::Pool) {
                    report.attention.push(format!(
                        "{}: out of service, {}, version {}",
                        v.name,
                        if v.up { "up" } else { "down" },
                        v.version
                    ));
                }
            }
        }
    }

    /// Every node of the clusters this run stepped on, against how it found them.
    pub fn final_state(&self) -> Vec<NodeFinal> {
        let before = self.state().before.clone();
        let mut finals = Vec::new();
        for (cluster_name, nodes_before) in &before {
            let Ok(cluster) = self.cluster(cluster_name) else { continue };
            // Up, in service and version: what the summary shows.
            let Ok(views) = self.observe_nodes(cluster, Action::Param, None, Ask::BEFORE) else { continue };
            for v in views {
                let serving = v.serving(cluster.kind);
                finals.push(NodeFinal {
                    cluster: cluster_name.clone(),
                    version_before: nodes_before.get(&v.name).map_or_else(|| v.version.clone(), |b| b.version.clone()),
                    node: v.name,
                    role: v.role,
                    version: v.version,
                    serving,
                    up: v.up,
                });
            }
        }
        finals
    }

    /// Traffic totals over the clusters this run stepped on.
    pub fn traffic_totals(&self) -> TrafficSample {
        let mut total = TrafficSample::default();
        for cluster in self.clusters_used().iter().filter_map(|name| self.inventory.cluster(name)) {
            let Some(probe) = self.adapters_of(cluster).probe.clone() else { continue };
            if let Ok(sample) =
                self.bridge(Action::Probe, &self.abort, cluster.policy.step_timeout, probe.sample(cluster))
            {
                total.requests += sample.requests;
                total.failed += sample.failed;
                total.interruption += sample.interruption;
            }
        }
        total
    }
}

fn describe(recorded: &Recorded) -> String {
    match recorded {
        Recorded::Done { action, node, .. }
        | Recorded::Pending { action, node, .. }
        | Recorded::Refused { action, node, .. } => {
            format!("{action} {}", node.as_deref().unwrap_or(""))
        }
        Recorded::Read { what, target, .. } => format!("{what} {target}"),
    }
}

fn round(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64 / 100 * 100)
}
