//! The executor runs each step as guard -> intent -> adapter call (timeout,
//! cancellation) -> outcome -> compensation -> event.
//!
//! Its methods are synchronous: they are called from the playbook's thread
//! (a plain OS thread, never a tokio worker) and reach the adapters through
//! one bridge, [`Executor::bridge`], which blocks on the tokio runtime and
//! races every call against the run's cancellation token.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
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
use crate::step::{default_estimate, Action, Compensation};

/// A node's state when the run first touched its cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
    compensations: Vec<Compensation>,
    sync_checks: HashMap<String, SyncCheck>,
    last_change: HashMap<String, Duration>,
    before: BTreeMap<String, BTreeMap<String, NodeBefore>>,
    patched: BTreeSet<String>,
    steps: u64,
    touched: bool,
    rollbacks: u32,
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
}

/// A step that has passed its guard and been announced.
struct Begun<'a> {
    seq: u64,
    started: Duration,
    cluster: &'a Cluster,
    node: Option<&'a str>,
    action: Action,
    compensating: bool,
}

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
        }
    }

    pub fn with_options(mut self, options: ExecutorOptions) -> Self {
        self.options = options;
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

    /// Number of compensations on the stack; pass to [`Self::rollback_to`].
    pub fn mark(&self) -> usize {
        self.state().compensations.len()
    }

    pub fn log(&self, text: &str) {
        self.events.emit(&Event::Log { at: self.now(), text: text.to_string() });
    }

    // ----- lookups ---------------------------------------------------------

    pub fn cluster(&self, name: &str) -> Result<&Cluster, StepError> {
        self.inventory.cluster(name).ok_or_else(|| {
            let known: Vec<&str> = self.inventory.clusters.iter().map(|c| c.name.as_str()).collect();
            StepError::new(ErrorKind::Invalid, Action::Param, format!("no cluster named `{name}` in the inventory"))
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
        CallCtx { clock: self.adapters.clock.clone(), timeout, cancel: token.clone() }
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
        let wall = if self.adapters.clock.is_virtual() { self.options.rehearsal_call_limit } else { timeout };
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

    /// Observes every node of a cluster: health, version, traffic or role.
    pub fn observe(&self, cluster: &Cluster, action: Action) -> Result<Vec<NodeView>, StepError> {
        let adapters = self.adapters_of(cluster);
        let token = self.abort.clone();
        self.bridge(action, &token, cluster.policy.step_timeout, async {
            let roles = match (&adapters.replication, cluster.kind) {
                (Some(replication), ClusterKind::ActivePassive) => Some(replication.roles(cluster).await?),
                _ => None,
            };
            let mut views = Vec::with_capacity(cluster.nodes.len());
            for node in &cluster.nodes {
                let at = NodeRef { cluster, node };
                let host = adapters.host.state(at).await?;
                let traffic = match &adapters.traffic {
                    Some(traffic) if cluster.kind == ClusterKind::Pool => Some(traffic.state(at).await?),
                    _ => None,
                };
                let role = roles.as_ref().and_then(|r| r.iter().find(|(n, _)| *n == node.name).map(|(_, role)| *role));
                views.push(NodeView {
                    name: node.name.clone(),
                    role,
                    in_service: traffic.map_or(role == Some(Role::Active), |t| t.in_service),
                    connections: traffic.map_or(0, |t| t.connections),
                    up: host.up,
                    version: host.version,
                });
            }
            Ok(views)
        })
        .map_err(|e| e.on_cluster(&cluster.name))
    }

    /// The live view of one node.
    pub fn node_view(&self, name: &str) -> Result<NodeView, StepError> {
        let (cluster, _) = self.node(name, Action::Param)?;
        let views = self.observe(cluster, Action::Param)?;
        Ok(views.into_iter().find(|v| v.name == name).expect("observe returns every node of the cluster"))
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
        self.bridge(Action::Param, &self.abort.clone(), cluster.policy.step_timeout, replication.roles(cluster))
    }

    // ----- step plumbing ----------------------------------------------------

    fn refused(
        &self,
        cluster: &Cluster,
        node: Option<&str>,
        action: Action,
        compensating: bool,
        refusal: Refusal,
    ) -> StepError {
        let seq = self.next_seq();
        let at = self.now();
        self.events.emit(&Event::StepFinished {
            seq,
            at,
            took: Duration::ZERO,
            cluster: cluster.name.clone(),
            node: node.map(str::to_string),
            action,
            compensating,
            outcome: Outcome::Refused { message: refusal.message.clone() },
        });
        let error = StepError::new(ErrorKind::Refused, action, refusal.message).with_hint(refusal.hint);
        match node {
            Some(node) => error.on_node(&cluster.name, node),
            None => error.on_cluster(&cluster.name),
        }
    }

    fn next_seq(&self) -> u64 {
        let mut state = self.state();
        state.seq += 1;
        state.seq
    }

    /// Announces a step whose guard passed; checks the window for new node
    /// steps and snapshots the cluster the first time it is changed.
    fn begin<'a>(
        &self,
        cluster: &'a Cluster,
        node: Option<&'a str>,
        action: Action,
        compensating: bool,
    ) -> Result<Begun<'a>, StepError> {
        let token = if compensating { &self.abort } else { &self.cancel };
        if token.is_cancelled() {
            return Err(StepError::cancelled(action));
        }
        // Compensations are exempt: a rollback must run even past the window.
        if action.changes_state() && !compensating {
            let estimate = self.adapters_of(cluster).host.estimate(action).unwrap_or_else(|| default_estimate(action));
            if let Err(refusal) =
                guard::may_start_within_window(action, self.now(), estimate, cluster.policy.maintenance_window)
            {
                return Err(self.refused(cluster, node, action, compensating, refusal));
            }
        }
        let needs_snapshot = !self.state().before.contains_key(&cluster.name);
        if needs_snapshot {
            let views = self.observe(cluster, action)?;
            let snapshot = views
                .into_iter()
                .map(|v| (v.name.clone(), NodeBefore { serving: v.serving(cluster.kind), version: v.version }))
                .collect();
            self.state().before.insert(cluster.name.clone(), snapshot);
        }
        let seq = {
            let mut state = self.state();
            state.seq += 1;
            if action.changes_state() {
                state.touched = true;
            }
            state.seq
        };
        let started = self.now();
        self.events.emit(&Event::StepStarted {
            seq,
            at: started,
            cluster: cluster.name.clone(),
            node: node.map(str::to_string),
            action,
            compensating,
        });
        Ok(Begun { seq, started, cluster, node, action, compensating })
    }

    /// Records the outcome of a begun step and emits its event.
    fn finish<T>(
        &self,
        step: Begun<'_>,
        result: Result<T, StepError>,
        detail: impl FnOnce(&T) -> String,
    ) -> Result<T, StepError> {
        let at = self.now();
        let outcome = match &result {
            Ok(value) => Outcome::Ok { detail: detail(value) },
            Err(e) => Outcome::Failed { kind: e.kind, message: e.message.clone() },
        };
        {
            let mut state = self.state();
            state.steps += 1;
            if step.action.changes_state() {
                state.last_change.insert(step.cluster.name.clone(), at);
            }
        }
        self.events.emit(&Event::StepFinished {
            seq: step.seq,
            at,
            took: at.saturating_sub(step.started),
            cluster: step.cluster.name.clone(),
            node: step.node.map(str::to_string),
            action: step.action,
            compensating: step.compensating,
            outcome,
        });
        result.map_err(|e| match step.node {
            Some(node) => e.on_node(&step.cluster.name, node),
            None => e.on_cluster(&step.cluster.name),
        })
    }

    fn push(&self, compensation: Compensation, compensating: bool) {
        if !compensating {
            self.state().compensations.push(compensation);
        }
    }

    fn token(&self, compensating: bool) -> CancellationToken {
        if compensating {
            self.abort.clone()
        } else {
            self.cancel.clone()
        }
    }

    // ----- steps -------------------------------------------------------------

    /// Takes a pool node out of service and waits for its connections to end.
    pub fn drain(&self, node: &str) -> Result<DrainReport, StepError> {
        self.drain_step(node, false)
    }

    fn drain_step(&self, name: &str, compensating: bool) -> Result<DrainReport, StepError> {
        let (cluster, spec) = self.node(name, Action::Drain)?;
        let views = self.observe(cluster, Action::Drain)?;
        if let Err(refusal) = guard::may_drain(cluster.kind, &cluster.policy, &views, name) {
            return Err(self.refused(cluster, Some(name), Action::Drain, compensating, refusal));
        }
        let traffic = self.adapters_of(cluster).traffic.clone().expect("pools always have a traffic adapter");
        let step = self.begin(cluster, Some(name), Action::Drain, compensating)?;
        let token = self.token(compensating);
        let ctx = self.ctx(cluster.policy.drain_timeout, &token);
        let result = self.bridge(
            Action::Drain,
            &token,
            cluster.policy.drain_timeout,
            traffic.drain(NodeRef { cluster, node: spec }, &ctx),
        );
        // The drain command may have reached the load balancer even when
        // waiting for zero connections failed: undraining is always safe.
        self.push(Compensation::Undrain { cluster: cluster.name.clone(), node: name.to_string() }, compensating);
        self.finish(step, result, |r| {
            format!(
                "{} connection(s) closed in {}",
                r.connections_at_start,
                humantime::format_duration(round(r.waited))
            )
        })
    }

    /// Puts a healthy pool node back in service.
    pub fn undrain(&self, node: &str) -> Result<(), StepError> {
        self.undrain_step(node, false)
    }

    fn undrain_step(&self, name: &str, compensating: bool) -> Result<(), StepError> {
        let (cluster, spec) = self.node(name, Action::Undrain)?;
        let Some(traffic) = self.adapters_of(cluster).traffic.clone() else {
            return Err(StepError::new(ErrorKind::Invalid, Action::Undrain, "this cluster has no traffic adapter")
                .on_node(&cluster.name, name)
                .with_hint("active/passive clusters move users with switchover"));
        };
        let views = self.observe(cluster, Action::Undrain)?;
        if let Err(refusal) = guard::may_undrain(&views, name) {
            return Err(self.refused(cluster, Some(name), Action::Undrain, compensating, refusal));
        }
        let step = self.begin(cluster, Some(name), Action::Undrain, compensating)?;
        let token = self.token(compensating);
        let ctx = self.ctx(cluster.policy.step_timeout, &token);
        let result = self.bridge(
            Action::Undrain,
            &token,
            cluster.policy.step_timeout,
            traffic.undrain(NodeRef { cluster, node: spec }, &ctx),
        );
        if result.is_ok() {
            self.push(Compensation::Drain { cluster: cluster.name.clone(), node: name.to_string() }, compensating);
        }
        self.finish(step, result, |_| "in service".to_string())
    }

    fn guard_host_change(
        &self,
        cluster: &Cluster,
        name: &str,
        action: Action,
        compensating: bool,
    ) -> Result<(), StepError> {
        let views = self.observe(cluster, action)?;
        guard::may_change_host(cluster.kind, &views, name, action)
            .map_err(|refusal| self.refused(cluster, Some(name), action, compensating, refusal))
    }

    /// Patches a node that serves nobody; pushes a restore compensation.
    pub fn patch(&self, name: &str, params: &Params) -> Result<PatchReport, StepError> {
        let (cluster, spec) = self.node(name, Action::Patch)?;
        self.guard_host_change(cluster, name, Action::Patch, false)?;
        let before = self.node_view(name)?.version;
        let step = self.begin(cluster, Some(name), Action::Patch, false)?;
        let host = self.adapters_of(cluster).host.clone();
        let token = self.token(false);
        let ctx = self.ctx(cluster.policy.step_timeout, &token);
        let result = self.bridge(
            Action::Patch,
            &token,
            cluster.policy.step_timeout,
            host.patch(NodeRef { cluster, node: spec }, params, &ctx),
        );
        let record = match &result {
            Ok(report) => report.clone(),
            // A failed patch may have been half applied: record a restore to
            // the version the node had, so rollback returns it there.
            Err(_) => PatchReport { from_version: before, to_version: "unknown (patch failed)".into(), snapshot: None },
        };
        self.push(
            Compensation::Restore { cluster: cluster.name.clone(), node: name.to_string(), patch: record },
            false,
        );
        if result.is_ok() {
            self.state().patched.insert(name.to_string());
        }
        self.finish(step, result, |r| format!("{} -> {}", r.from_version, r.to_version))
    }

    fn restore_step(&self, name: &str, patch: &PatchReport) -> Result<(), StepError> {
        let (cluster, spec) = self.node(name, Action::Restore)?;
        if self.node_view(name)?.version == patch.from_version {
            return Ok(());
        }
        self.guard_host_change(cluster, name, Action::Restore, true)?;
        let step = self.begin(cluster, Some(name), Action::Restore, true)?;
        let host = self.adapters_of(cluster).host.clone();
        let ctx = self.ctx(cluster.policy.reboot_timeout, &self.abort);
        let result = self.bridge(
            Action::Restore,
            &self.abort,
            cluster.policy.reboot_timeout,
            host.restore(NodeRef { cluster, node: spec }, patch, &ctx),
        );
        if result.is_ok() {
            self.state().patched.remove(name);
        }
        self.finish(step, result, |_| format!("back to {}", patch.from_version))
    }

    /// Reboots a node that serves nobody and waits for it to come back.
    pub fn reboot(&self, name: &str) -> Result<Duration, StepError> {
        let (cluster, spec) = self.node(name, Action::Reboot)?;
        self.guard_host_change(cluster, name, Action::Reboot, false)?;
        let step = self.begin(cluster, Some(name), Action::Reboot, false)?;
        let host = self.adapters_of(cluster).host.clone();
        let token = self.token(false);
        let ctx = self.ctx(cluster.policy.reboot_timeout, &token);
        let result = self.bridge(
            Action::Reboot,
            &token,
            cluster.policy.reboot_timeout,
            host.reboot(NodeRef { cluster, node: spec }, &ctx),
        );
        self.finish(step, result, |d| format!("back after {}", humantime::format_duration(round(*d))))
    }

    /// Waits until a node answers its health check.
    pub fn wait_healthy(&self, name: &str, timeout: Option<Duration>) -> Result<(), StepError> {
        let (cluster, spec) = self.node(name, Action::WaitHealthy)?;
        let timeout = timeout.unwrap_or(cluster.policy.reboot_timeout);
        let step = self.begin(cluster, Some(name), Action::WaitHealthy, false)?;
        let host = self.adapters_of(cluster).host.clone();
        let token = self.token(false);
        let ctx = self.ctx(timeout, &token);
        let result =
            self.bridge(Action::WaitHealthy, &token, timeout, host.wait_healthy(NodeRef { cluster, node: spec }, &ctx));
        self.finish(step, result, |_| "healthy".to_string())
    }

    /// Smoke-tests one node.
    pub fn probe(&self, name: &str) -> Result<ProbeReport, StepError> {
        let (cluster, spec) = self.node(name, Action::Probe)?;
        let step = self.begin(cluster, Some(name), Action::Probe, false)?;
        let adapters = self.adapters_of(cluster).clone();
        let token = self.token(false);
        let ctx = self.ctx(cluster.policy.step_timeout, &token);
        let at = NodeRef { cluster, node: spec };
        let result = self.bridge(Action::Probe, &token, cluster.policy.step_timeout, async {
            match &adapters.probe {
                Some(probe) => probe.probe(at, &ctx).await,
                None => {
                    let state = adapters.host.state(at).await?;
                    Ok(ProbeReport { requests: 1, failed: u64::from(!state.up), latency_ms: 0.0 })
                }
            }
        });
        let result = result.and_then(|report| {
            if report.requests > 0 && report.failed == report.requests {
                Err(StepError::new(
                    ErrorKind::Failed,
                    Action::Probe,
                    format!("{name} did not answer any of {} probe request(s)", report.requests),
                )
                .with_hint("check the service on the node; rollback returns it to its previous version"))
            } else {
                Ok(report)
            }
        });
        self.finish(step, result, |r| format!("{}/{} ok, {:.0} ms", r.requests - r.failed, r.requests, r.latency_ms))
    }

    /// Checks replication of an active/passive cluster; fails unless every
    /// replica is linked and within the policy's lag (after waiting up to
    /// `sync_wait` for it to catch up).
    pub fn check_sync(&self, cluster_name: &str) -> Result<SyncReport, StepError> {
        let cluster = self.cluster(cluster_name).map_err(|e| StepError { action: Action::CheckSync, ..e })?;
        self.check_sync_step(cluster, false)
    }

    fn check_sync_step(&self, cluster: &Cluster, compensating: bool) -> Result<SyncReport, StepError> {
        let Some(replication) = self.adapters_of(cluster).replication.clone() else {
            return Err(StepError::new(
                ErrorKind::Invalid,
                Action::CheckSync,
                format!("cluster `{}` has no replication adapter", cluster.name),
            )
            .on_cluster(&cluster.name)
            .with_hint("check_sync applies to active_passive clusters"));
        };
        let step = self.begin(cluster, None, Action::CheckSync, compensating)?;
        let token = self.token(compensating);
        let wait = cluster.policy.sync_wait;
        let ctx = self.ctx(wait, &token);
        let max_lag = cluster.policy.max_sync_lag;
        let result = self.bridge(
            Action::CheckSync,
            &token,
            wait + cluster.policy.step_timeout,
            replication.wait_sync(cluster, max_lag, &ctx),
        );
        let result = result.and_then(|report| {
            let ok = report.in_sync(max_lag);
            self.state().sync_checks.insert(cluster.name.clone(), SyncCheck { at: self.now(), ok });
            if ok {
                return Ok(report);
            }
            let worst = report
                .replicas
                .iter()
                .filter(|r| !r.link_up || r.lag_seconds > max_lag.as_secs_f64())
                .map(|r| {
                    if r.link_up {
                        format!("{} lags {:.1}s behind {}", r.node, r.lag_seconds, report.primary)
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
            .with_hint("investigate replication before any switchover; pitcrew will not switch to a lagging node"))
        });
        self.finish(step, result, |r| {
            let lag = r.replicas.iter().map(|x| x.lag_seconds).fold(0.0, f64::max);
            format!("in sync, max lag {lag:.1}s")
        })
    }

    /// Makes `target` the active node of an active/passive cluster.
    pub fn switchover(&self, cluster_name: &str, target: &str) -> Result<SwitchoverReport, StepError> {
        let cluster = self.cluster(cluster_name).map_err(|e| StepError { action: Action::Switchover, ..e })?;
        self.switchover_step(cluster, target, false)
    }

    fn switchover_step(
        &self,
        cluster: &Cluster,
        target: &str,
        compensating: bool,
    ) -> Result<SwitchoverReport, StepError> {
        let Some(spec) = cluster.node(target) else {
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
        let views = self.observe(cluster, Action::Switchover)?;
        let active = views.iter().find(|v| v.role == Some(Role::Active)).map(|v| v.name.clone());
        if active.as_deref() == Some(target) {
            return Ok(SwitchoverReport { from: target.to_string(), to: target.to_string(), paused: Duration::ZERO });
        }
        let current = self.bridge(
            Action::Switchover,
            &self.token(compensating),
            cluster.policy.step_timeout,
            replication.sync_status(cluster),
        )?;
        let (last_check, last_change) = {
            let state = self.state();
            (state.sync_checks.get(&cluster.name).cloned(), state.last_change.get(&cluster.name).copied())
        };
        let guard_ctx = SwitchoverContext {
            policy: &cluster.policy,
            now: self.now(),
            last_check: last_check.as_ref(),
            last_change,
            current: &current,
        };
        if let Err(refusal) = guard::may_switchover(cluster.kind, &views, target, &guard_ctx) {
            return Err(self.refused(cluster, Some(target), Action::Switchover, compensating, refusal));
        }
        let step = self.begin(cluster, Some(target), Action::Switchover, compensating)?;
        let token = self.token(compensating);
        let ctx = self.ctx(cluster.policy.step_timeout, &token);
        let result = self.bridge(
            Action::Switchover,
            &token,
            cluster.policy.step_timeout,
            replication.switchover(cluster, spec, &ctx),
        );
        if let (Ok(report), false) = (&result, compensating) {
            self.push(Compensation::SwitchBack { cluster: cluster.name.clone(), node: report.from.clone() }, false);
        }
        self.finish(step, result, |r| format!("{} -> {}, users held {} ms", r.from, r.to, r.paused.as_millis()))
    }

    /// Gathers a node's facts.
    pub fn facts(&self, name: &str) -> Result<Facts, StepError> {
        let (cluster, spec) = self.node(name, Action::Facts)?;
        let host = self.adapters_of(cluster).host.clone();
        let token = self.token(false);
        self.bridge(Action::Facts, &token, cluster.policy.step_timeout, host.facts(NodeRef { cluster, node: spec }))
            .map_err(|e| e.on_node(&cluster.name, name))
    }

    /// Cumulative traffic of a cluster's probe since the run started.
    pub fn sample(&self, cluster: &Cluster) -> Result<Option<TrafficSample>, StepError> {
        let Some(probe) = self.adapters_of(cluster).probe.clone() else { return Ok(None) };
        let token = self.abort.clone();
        self.bridge(Action::Probe, &token, cluster.policy.step_timeout, probe.sample(cluster)).map(Some)
    }

    /// Waits (virtually in a rehearsal); cancellable.
    pub fn sleep(&self, duration: Duration) -> Result<(), StepError> {
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
    }

    // ----- rollback -----------------------------------------------------------

    /// Unwinds every compensation pushed since `mark`, newest first, then
    /// checks that the service runs on unpatched nodes again.
    pub fn rollback_to(&self, mark: usize, reason: &str) -> RollbackReport {
        let pending: Vec<Compensation> = {
            let mut state = self.state();
            let mark = mark.min(state.compensations.len());
            state.rollbacks += 1;
            state.compensations.split_off(mark)
        };
        self.events.emit(&Event::RollbackStarted { at: self.now(), reason: reason.to_string(), steps: pending.len() });
        let mut report = RollbackReport { steps: pending.len(), ..RollbackReport::default() };
        let mut clusters = BTreeSet::new();
        // A partial rollback (one node inside `rolling`) answers for the
        // nodes it unwound; nodes patched earlier on purpose may serve.
        let scope: Option<BTreeSet<String>> =
            (mark > 0).then(|| pending.iter().map(|c| c.node().to_string()).collect());
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
                report.failures.push(e.to_string());
            }
        }
        self.verify_service(&clusters, scope.as_ref(), &mut report);
        self.events.emit(&Event::RollbackFinished { at: self.now(), ok: report.service_restored() });
        report
    }

    /// Unwinds the whole run.
    pub fn rollback(&self, reason: &str) -> RollbackReport {
        self.rollback_to(0, reason)
    }

    fn switch_back(&self, cluster_name: &str, node: &str) -> Result<(), StepError> {
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
            let views = match self.observe(cluster, Action::Rollback) {
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
            let Ok(views) = self.observe(cluster, Action::Param) else { continue };
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
        let used: Vec<String> = self.state().before.keys().cloned().collect();
        let mut total = TrafficSample::default();
        for cluster in used.iter().filter_map(|name| self.inventory.cluster(name)) {
            if let Ok(Some(sample)) = self.sample(cluster) {
                total.requests += sample.requests;
                total.failed += sample.failed;
                total.interruption += sample.interruption;
            }
        }
        total
    }
}

fn round(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64 / 100 * 100)
}
