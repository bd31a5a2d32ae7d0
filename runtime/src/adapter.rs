//! The adapter traits: one small async trait per concern of a cluster.
//!
//! A plugin implements the concerns its product serves; the inventory says
//! which adapter instance serves which concern of which cluster. Adapters
//! report what they observe; they never decide whether a step is safe (the
//! guards do that, from what the adapters report).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::error::AdapterError;
use crate::inventory::{Cluster, NodeSpec, Role};
use crate::step::Action;

/// What every adapter call receives: the clock, how long it may take, the
/// run's cancellation token, and where to note what it did for the audit
/// trail.
#[derive(Debug, Clone)]
pub struct CallCtx {
    pub clock: Clock,
    pub timeout: Duration,
    pub cancel: CancellationToken,
    pub transcript: Transcript,
    /// `reboot` only: the boot id the executor read just before the intent,
    /// so the adapter need not read it again to see the reboot happen.
    pub boot_id: Option<String>,
}

/// Commands an adapter ran during one call (command, exit status, truncated
/// output), recorded with the step's outcome.
#[derive(Debug, Clone, Default)]
pub struct Transcript(Arc<std::sync::Mutex<Vec<serde_json::Value>>>);

impl Transcript {
    pub fn push(&self, entry: serde_json::Value) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(entry);
    }

    pub fn take(&self) -> Vec<serde_json::Value> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// A node as adapters see it: its spec and the cluster it belongs to.
#[derive(Debug, Clone, Copy)]
pub struct NodeRef<'a> {
    pub cluster: &'a Cluster,
    pub node: &'a NodeSpec,
}

impl NodeRef<'_> {
    pub fn name(&self) -> &str {
        &self.node.name
    }
}

/// Load-balancer view of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficState {
    /// Receives new requests.
    pub in_service: bool,
    /// Open connections or sessions.
    pub connections: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrainReport {
    /// How long it took for connections to reach zero.
    pub waited: Duration,
    pub connections_at_start: u64,
}

/// Host view of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostState {
    /// Up and answering its health check.
    pub up: bool,
    /// The version or patch level the host reports.
    pub version: String,
    /// Changes with every boot (Linux: /proc/sys/kernel/random/boot_id), so
    /// a reboot interrupted by a crash can be recognised on resume.
    #[serde(default)]
    pub boot_id: Option<String>,
}

/// What a patch did; enough for the adapter to undo it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatchReport {
    pub from_version: String,
    pub to_version: String,
    /// An adapter-specific snapshot handle, when the adapter took one.
    pub snapshot: Option<String>,
}

/// Facts about a node: OS, kernel, packages, configuration hashes.
pub type Facts = BTreeMap<String, serde_json::Value>;

/// Parameters given to `patch(n, #{...})`.
pub type Params = serde_json::Map<String, serde_json::Value>;

/// One replica in a sync report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaSync {
    pub node: String,
    pub link_up: bool,
    /// Seconds behind the primary.
    pub lag_seconds: f64,
}

/// Replication state of a cluster at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncReport {
    pub primary: String,
    pub replicas: Vec<ReplicaSync>,
}

impl SyncReport {
    pub fn replica(&self, node: &str) -> Option<&ReplicaSync> {
        self.replicas.iter().find(|r| r.node == node)
    }

    /// Every replica is linked and within `max_lag`.
    pub fn in_sync(&self, max_lag: Duration) -> bool {
        self.replicas.iter().all(|r| r.link_up && r.lag_seconds <= max_lag.as_secs_f64())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwitchoverReport {
    pub from: String,
    pub to: String,
    /// How long clients were paused or refused while roles moved.
    pub paused: Duration,
}

/// A smoke test of one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    pub requests: u64,
    pub failed: u64,
    pub latency_ms: f64,
}

/// Cumulative traffic seen by a cluster's probe since the run started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TrafficSample {
    pub requests: u64,
    pub failed: u64,
    /// Time during which user requests failed or were held.
    pub interruption: Duration,
}

#[async_trait]
pub trait TrafficAdapter: Send + Sync {
    async fn state(&self, node: NodeRef<'_>) -> Result<TrafficState, AdapterError>;
    /// Stops new work reaching the node and waits (up to `ctx.timeout`) until
    /// its connections reach zero.
    async fn drain(&self, node: NodeRef<'_>, ctx: &CallCtx) -> Result<DrainReport, AdapterError>;
    async fn undrain(&self, node: NodeRef<'_>, ctx: &CallCtx) -> Result<(), AdapterError>;
    /// Whether the node receives new requests (the drain guard asks this
    /// of every peer; adapters with a cheaper answer than `state` give it).
    async fn in_service(&self, node: NodeRef<'_>) -> Result<bool, AdapterError> {
        Ok(self.state(node).await?.in_service)
    }
}

#[async_trait]
pub trait HostAdapter: Send + Sync {
    async fn state(&self, node: NodeRef<'_>) -> Result<HostState, AdapterError>;
    async fn patch(&self, node: NodeRef<'_>, params: &Params, ctx: &CallCtx) -> Result<PatchReport, AdapterError>;
    /// Undoes a patch (snapshot restore or downgrade) where the adapter can.
    async fn restore(&self, node: NodeRef<'_>, patch: &PatchReport, ctx: &CallCtx) -> Result<(), AdapterError>;
    /// Reboots and waits (up to `ctx.timeout`) until the node is back.
    async fn reboot(&self, node: NodeRef<'_>, ctx: &CallCtx) -> Result<Duration, AdapterError>;
    async fn wait_healthy(&self, node: NodeRef<'_>, ctx: &CallCtx) -> Result<(), AdapterError>;
    async fn facts(&self, node: NodeRef<'_>) -> Result<Facts, AdapterError>;
    /// Whether `facts` tells more than the version and the boot id, which
    /// the journal records around every patch and reboot anyway. Without,
    /// no fact snapshot is taken before a patch (the end-of-run one is).
    fn reports_facts(&self) -> bool {
        true
    }
    /// Whether the node is up and healthy (cheaper than `state` where the
    /// adapter can tell without the version).
    async fn is_up(&self, node: NodeRef<'_>) -> Result<bool, AdapterError> {
        Ok(self.state(node).await?.up)
    }
    /// The installed version alone (cheaper than `state` where it can be).
    async fn version(&self, node: NodeRef<'_>) -> Result<String, AdapterError> {
        Ok(self.state(node).await?.version)
    }
    /// The boot id alone (cheaper than `state` where it can be).
    async fn boot_id(&self, node: NodeRef<'_>) -> Result<Option<String>, AdapterError> {
        Ok(self.state(node).await?.boot_id)
    }
    /// How long `action` is expected to take on this host, for the window guard.
    fn estimate(&self, action: Action) -> Option<Duration> {
        let _ = action;
        None
    }
}

#[async_trait]
pub trait ReplicationAdapter: Send + Sync {
    async fn roles(&self, cluster: &Cluster) -> Result<Vec<(String, Role)>, AdapterError>;
    async fn sync_status(&self, cluster: &Cluster) -> Result<SyncReport, AdapterError>;
    /// Waits (up to `ctx.timeout`) until every replica is within `max_lag`,
    /// and returns the last report either way.
    async fn wait_sync(&self, cluster: &Cluster, max_lag: Duration, ctx: &CallCtx) -> Result<SyncReport, AdapterError>;
    async fn switchover(
        &self,
        cluster: &Cluster,
        target: &NodeSpec,
        ctx: &CallCtx,
    ) -> Result<SwitchoverReport, AdapterError>;
}

#[async_trait]
pub trait ProbeAdapter: Send + Sync {
    /// Starts sampling the service (called once when a run begins).
    async fn start(&self) {}
    async fn probe(&self, node: NodeRef<'_>, ctx: &CallCtx) -> Result<ProbeReport, AdapterError>;
    async fn sample(&self, cluster: &Cluster) -> Result<TrafficSample, AdapterError>;
}

/// The adapters serving one cluster.
#[derive(Clone)]
pub struct ClusterAdapters {
    pub traffic: Option<Arc<dyn TrafficAdapter>>,
    pub host: Arc<dyn HostAdapter>,
    pub replication: Option<Arc<dyn ReplicationAdapter>>,
    pub probe: Option<Arc<dyn ProbeAdapter>>,
}

/// Every cluster's adapters, and the clock they run on.
#[derive(Clone)]
pub struct Adapters {
    pub clock: Clock,
    pub clusters: HashMap<String, ClusterAdapters>,
}
