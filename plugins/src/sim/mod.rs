//! The `sim` adapter: a twin of the inventory on a virtual clock, with
//! injected faults. It serves every concern, so one `kind: sim` instance can
//! stand in for a whole cluster, and `pitcrew rehearse` runs any inventory
//! against it.

mod fault;
mod settings;
mod twin;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pitcrew_runtime::adapter::{
    CallCtx, DrainReport, Facts, HostAdapter, HostState, NodeRef, Params, PatchReport, ProbeAdapter, ProbeReport,
    ReplicationAdapter, SwitchoverReport, SyncReport, TrafficAdapter, TrafficSample, TrafficState,
};
use pitcrew_runtime::{Action, AdapterError, Cluster, NodeSpec, Role};

pub use fault::{Fault, FaultEffect, FaultSpecError, FAULT_GRAMMAR};
pub use settings::SimSettings;
pub use twin::{SimTwin, UnknownFaultNode};

/// One view of the shared twin, implementing every adapter concern.
#[derive(Debug, Clone)]
pub struct SimAdapter {
    twin: Arc<SimTwin>,
    settings: Arc<SimSettings>,
}

impl SimAdapter {
    pub fn new(twin: Arc<SimTwin>, settings: Arc<SimSettings>) -> Self {
        Self { twin, settings }
    }

    /// Runs a step on the twin; with a pace set, then waits the real time
    /// the step's simulated time stands for (the executor cancels the wait).
    async fn paced<T>(&self, step: impl FnOnce() -> Result<T, AdapterError>) -> Result<T, AdapterError> {
        let before = self.twin.clock().now();
        let result = step();
        if let Some(pace) = self.twin.pace() {
            let spent = self.twin.clock().now().saturating_sub(before);
            if !spent.is_zero() {
                tokio::time::sleep(spent.div_f64(pace)).await;
            }
        }
        result
    }
}

#[async_trait]
impl TrafficAdapter for SimAdapter {
    async fn state(&self, node: NodeRef<'_>) -> Result<TrafficState, AdapterError> {
        self.twin.traffic_state(node.name())
    }

    async fn drain(&self, node: NodeRef<'_>, ctx: &CallCtx) -> Result<DrainReport, AdapterError> {
        self.paced(|| self.twin.drain(node.name(), ctx.timeout)).await
    }

    async fn undrain(&self, node: NodeRef<'_>, _ctx: &CallCtx) -> Result<(), AdapterError> {
        self.twin.undrain(node.name())
    }
}

#[async_trait]
impl HostAdapter for SimAdapter {
    async fn state(&self, node: NodeRef<'_>) -> Result<HostState, AdapterError> {
        self.twin.host_state(node.name())
    }

    async fn patch(&self, node: NodeRef<'_>, params: &Params, _ctx: &CallCtx) -> Result<PatchReport, AdapterError> {
        self.paced(|| self.twin.patch(node.name(), params)).await
    }

    async fn restore(&self, node: NodeRef<'_>, patch: &PatchReport, _ctx: &CallCtx) -> Result<(), AdapterError> {
        self.paced(|| self.twin.restore(node.name(), patch)).await
    }

    async fn reboot(&self, node: NodeRef<'_>, ctx: &CallCtx) -> Result<Duration, AdapterError> {
        self.paced(|| self.twin.reboot(node.name(), ctx.timeout)).await
    }

    async fn wait_healthy(&self, node: NodeRef<'_>, ctx: &CallCtx) -> Result<(), AdapterError> {
        self.paced(|| self.twin.wait_healthy(node.name(), ctx.timeout)).await
    }

    async fn facts(&self, node: NodeRef<'_>) -> Result<Facts, AdapterError> {
        self.twin.facts(node.name())
    }

    fn estimate(&self, action: Action) -> Option<Duration> {
        let s = &self.settings;
        match action {
            Action::Patch => Some(s.patch_time),
            Action::Restore => Some(s.restore_time),
            Action::Reboot => Some(s.reboot_time),
            Action::Drain => Some(Duration::from_secs_f64(s.connections as f64 / s.drain_rate.max(0.001))),
            Action::Switchover => Some(s.switchover_time),
            _ => None,
        }
    }
}

#[async_trait]
impl ReplicationAdapter for SimAdapter {
    async fn roles(&self, cluster: &Cluster) -> Result<Vec<(String, Role)>, AdapterError> {
        self.twin.roles(&cluster.name)
    }

    async fn sync_status(&self, cluster: &Cluster) -> Result<SyncReport, AdapterError> {
        self.twin.sync_status(&cluster.name)
    }

    async fn wait_sync(&self, cluster: &Cluster, max_lag: Duration, ctx: &CallCtx) -> Result<SyncReport, AdapterError> {
        self.paced(|| self.twin.wait_sync(&cluster.name, max_lag, ctx.timeout)).await
    }

    async fn switchover(
        &self,
        cluster: &Cluster,
        target: &NodeSpec,
        _ctx: &CallCtx,
    ) -> Result<SwitchoverReport, AdapterError> {
        self.paced(|| self.twin.switchover(&cluster.name, &target.name)).await
    }
}

#[async_trait]
impl ProbeAdapter for SimAdapter {
    async fn probe(&self, node: NodeRef<'_>, _ctx: &CallCtx) -> Result<ProbeReport, AdapterError> {
        self.twin.probe(node.name())
    }

    async fn sample(&self, cluster: &Cluster) -> Result<TrafficSample, AdapterError> {
        self.twin.sample(&cluster.name)
    }
}
