//! The simulated twin: every node's version, traffic state, health and
//! replication role, on a virtual clock.
//!
//! User traffic is a fluid, not a list of requests: each cluster receives
//! `rps` requests per second and the twin integrates, between state changes,
//! the share that fails (no serving node, a serving node that is down, a bad
//! patch). Accounting is lazy per cluster and split at the moments nodes
//! come back from reboot, so it costs O(1) per state change and a rehearsal
//! of hours of simulated time runs in microseconds per step.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use pitcrew_runtime::adapter::{
    DrainReport, Facts, HostState, Params, PatchReport, ProbeReport, ReplicaSync, SwitchoverReport, SyncReport,
    TrafficSample, TrafficState,
};
use pitcrew_runtime::{AdapterError, Clock, ClusterKind, Inventory, Role};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::fault::{Fault, FaultEffect};
use super::settings::SimSettings;

/// A fault aimed at a node the inventory does not have.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("fault `{fault}` names node `{node}`, which is not in the inventory")]
pub struct UnknownFaultNode {
    pub fault: String,
    pub node: String,
    /// The closest node names, for a "did you mean".
    pub suggestions: Vec<String>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct NodeFaults {
    patch_fails: bool,
    reboot_hangs: bool,
    drain_stuck: bool,
    sync_lag: Option<Duration>,
    probe_errors: Option<f64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SimNode {
    name: String,
    cluster: usize,
    version: String,
    patch_to: String,
    in_service: bool,
    /// When draining began and how many connections were open then.
    drain_from: Option<(Duration, u64)>,
    /// Down until this time; `Duration::MAX` means it never comes back.
    down_until: Option<Duration>,
    role: Option<Role>,
    /// A replica has every write from this time on.
    synced_at: Duration,
    patched: bool,
    faults: NodeFaults,
    base_facts: Facts,
    snapshots: u32,
    #[serde(default)]
    boots: u32,
}

#[derive(Debug, Serialize, Deserialize)]
struct SimCluster {
    name: String,
    kind: ClusterKind,
    settings: SimSettings,
    nodes: Vec<usize>,
    accounted: Duration,
    requests: f64,
    failed: f64,
    interruption: Duration,
}

#[derive(Debug, Serialize, Deserialize)]
struct Twin {
    /// Virtual time, saved with the state it belongs to.
    clock_nanos: u64,
    clusters: Vec<SimCluster>,
    nodes: Vec<SimNode>,
    #[serde(skip)]
    cluster_index: HashMap<String, usize>,
    #[serde(skip)]
    index: HashMap<String, usize>,
}

/// The twin shared by every `sim` adapter instance of a run.
#[derive(Debug)]
pub struct SimTwin {
    clock: Clock,
    twin: Mutex<Twin>,
    /// Where the state is saved after every change, if anywhere.
    persist: Option<Persist>,
    /// Simulated seconds per real second as f64 bits; 0: as fast as possible.
    pace: std::sync::atomic::AtomicU64,
}

/// A base snapshot plus an append-only log of changed nodes and clusters:
/// one short line per change instead of the whole twin, so a 1,000-node
/// rehearsal saves in microseconds per step. The log is not fsynced: it
/// survives the runner being killed (the kernel keeps the pages), and a
/// rehearsal twin does not need to survive a power cut.
#[derive(Debug)]
struct Persist {
    log: Mutex<std::fs::File>,
    path: PathBuf,
}

/// What a change touched.
enum Touch<'a> {
    Node(&'a str),
    /// A cluster's traffic accounting, and with `nodes` all its nodes.
    Cluster {
        name: &'a str,
        nodes: bool,
    },
    Clock,
}

#[derive(Serialize)]
struct DeltaRef<'a> {
    clock_nanos: u64,
    nodes: Vec<(usize, &'a SimNode)>,
    clusters: Vec<(usize, &'a SimCluster)>,
}

#[derive(Deserialize)]
struct Delta {
    clock_nanos: u64,
    nodes: Vec<(usize, SimNode)>,
    clusters: Vec<(usize, SimCluster)>,
}

fn log_path(base: &Path) -> PathBuf {
    let mut name = base.as_os_str().to_owned();
    name.push(".log");
    PathBuf::from(name)
}

/// The twin's saved state cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TwinStateError {
    #[error("cannot read the sim state {path}: {message}")]
    Read { path: String, message: String },
    #[error("the sim state {path} was built from another inventory ({message})")]
    Mismatch { path: String, message: String },
}

fn var_str(vars: &BTreeMap<String, serde_yaml::Value>, key: &str) -> Option<String> {
    match vars.get(key)? {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl SimTwin {
    /// Builds a twin of the inventory. `settings` gives the sim settings of
    /// each cluster (clusters not listed use the defaults).
    pub fn new(
        inventory: &Inventory,
        settings: &HashMap<String, Arc<SimSettings>>,
        faults: &[Fault],
        clock: Clock,
    ) -> Result<Self, UnknownFaultNode> {
        let mut twin = Twin {
            clock_nanos: 0,
            clusters: Vec::new(),
            cluster_index: HashMap::new(),
            nodes: Vec::new(),
            index: HashMap::new(),
        };
        let defaults = Arc::new(SimSettings::default());
        for (ci, cluster) in inventory.clusters.iter().enumerate() {
            let settings = settings.get(&cluster.name).cloned().unwrap_or_else(|| defaults.clone());
            let mut members = Vec::with_capacity(cluster.nodes.len());
            for node in &cluster.nodes {
                let version = var_str(&node.vars, "version").unwrap_or_else(|| settings.version.clone());
                let patch_to = var_str(&node.vars, "patch_to").unwrap_or_else(|| settings.patch_to.clone());
                let base_facts = base_facts(&node.vars);
                twin.index.insert(node.name.clone(), twin.nodes.len());
                members.push(twin.nodes.len());
                twin.nodes.push(SimNode {
                    name: node.name.clone(),
                    cluster: ci,
                    version,
                    patch_to,
                    in_service: true,
                    drain_from: None,
                    down_until: None,
                    role: node.role,
                    synced_at: Duration::ZERO,
                    patched: false,
                    faults: NodeFaults::default(),
                    base_facts,
                    snapshots: 0,
                    boots: 0,
                });
            }
            twin.cluster_index.insert(cluster.name.clone(), ci);
            twin.clusters.push(SimCluster {
                name: cluster.name.clone(),
                kind: cluster.kind,
                settings: (*settings).clone(),
                nodes: members,
                accounted: Duration::ZERO,
                requests: 0.0,
                failed: 0.0,
                interruption: Duration::ZERO,
            });
        }
        for fault in faults {
            let Some(&i) = twin.index.get(&fault.node) else {
                let mut suggestions: Vec<(f64, String)> = twin
                    .index
                    .keys()
                    .map(|name| (strsim::jaro_winkler(name, &fault.node), name.clone()))
                    .filter(|(score, _)| *score > 0.8)
                    .collect();
                suggestions.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
                return Err(UnknownFaultNode {
                    fault: fault.to_string(),
                    node: fault.node.clone(),
                    suggestions: suggestions.into_iter().take(3).map(|(_, n)| n).collect(),
                });
            };
            let f = &mut twin.nodes[i].faults;
            match fault.effect {
                FaultEffect::PatchFails => f.patch_fails = true,
                FaultEffect::RebootHangs => f.reboot_hangs = true,
                FaultEffect::DrainStuck => f.drain_stuck = true,
                FaultEffect::SyncLag(lag) => f.sync_lag = Some(lag),
                FaultEffect::ProbeErrors(rate) => f.probe_errors = Some(rate),
                FaultEffect::Drift { ref fact, ref value } => set_fact(&mut twin.nodes[i].base_facts, fact, value),
            }
        }
        Ok(Self { clock, twin: Mutex::new(twin), persist: None, pace: Default::default() })
    }

    /// Saves the state to `path` (and changes to `path.log`) from now on.
    pub fn persist_to(mut self, path: PathBuf) -> Result<Self, AdapterError> {
        let fail =
            |e: std::io::Error| AdapterError::Failed(format!("cannot save the sim state to {}: {e}", path.display()));
        let text = {
            let twin = self.lock();
            serde_json::to_string(&*twin)
                .map_err(|e| AdapterError::Failed(format!("cannot save the sim state: {e}")))?
        };
        let tmp = path.with_extension("tmp");
        let mut file = std::fs::File::create(&tmp).map_err(fail)?;
        file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(fail)?;
        std::fs::rename(&tmp, &path).map_err(fail)?;
        let log = std::fs::File::create(log_path(&path)).map_err(fail)?;
        self.persist = Some(Persist { log: Mutex::new(log), path });
        Ok(self)
    }

    /// Starts a new run on a persistent world: time restarts at zero (the
    /// world's pending timers move with it) and user traffic counts afresh,
    /// so a run's times, window and figures are its own. Saved as a new base.
    pub fn start_new_run(self) -> Result<Self, AdapterError> {
        let now = self.clock.now();
        {
            let mut twin = self.lock();
            for node in &mut twin.nodes {
                node.down_until = node.down_until.map(|t| if t == Duration::MAX { t } else { t.saturating_sub(now) });
                node.synced_at = node.synced_at.saturating_sub(now);
                node.drain_from = node.drain_from.map(|(since, open)| (since.saturating_sub(now), open));
            }
            for cluster in &mut twin.clusters {
                cluster.accounted = Duration::ZERO;
                cluster.requests = 0.0;
                cluster.failed = 0.0;
                cluster.interruption = Duration::ZERO;
            }
            twin.clock_nanos = 0;
        }
        self.clock.set(Duration::ZERO);
        match self.persist.as_ref().map(|p| p.path.clone()) {
            Some(path) => self.persist_to(path),
            None => Ok(self),
        }
    }

    /// Loads a saved twin (base and change log); its nodes must match the
    /// inventory's. A change cut short at the end of the log is ignored.
    pub fn load(path: &Path, inventory: &Inventory) -> Result<Self, TwinStateError> {
        let read_err = |message: String| TwinStateError::Read { path: path.display().to_string(), message };
        let text = std::fs::read_to_string(path).map_err(|e| read_err(e.to_string()))?;
        let mut twin: Twin = serde_json::from_str(&text).map_err(|e| read_err(e.to_string()))?;
        let log = std::fs::read_to_string(log_path(path)).unwrap_or_default();
        for line in log.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
            let delta: Delta = serde_json::from_str(line).map_err(|e| read_err(format!("change log: {e}")))?;
            twin.clock_nanos = delta.clock_nanos;
            for (i, node) in delta.nodes {
                if let Some(slot) = twin.nodes.get_mut(i) {
                    *slot = node;
                }
            }
            for (i, cluster) in delta.clusters {
                if let Some(slot) = twin.clusters.get_mut(i) {
                    *slot = cluster;
                }
            }
        }
        let saved: Vec<&str> = twin.nodes.iter().map(|n| n.name.as_str()).collect();
        let wanted: Vec<&str> = inventory.node_names().collect();
        if saved != wanted {
            return Err(TwinStateError::Mismatch {
                path: path.display().to_string(),
                message: format!("it has nodes {} where the inventory has {}", saved.join(","), wanted.join(",")),
            });
        }
        twin.reindex();
        let clock = Clock::virtual_clock();
        clock.advance(std::time::Duration::from_nanos(twin.clock_nanos));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path(path))
            .map_err(|e| read_err(e.to_string()))?;
        Ok(Self {
            clock,
            twin: Mutex::new(twin),
            persist: Some(Persist { log: Mutex::new(log), path: path.to_path_buf() }),
            pace: Default::default(),
        })
    }

    /// Applies a fault to a running twin (drift from outside any step).
    pub fn apply_drift(&self, fault: &Fault) -> Result<(), AdapterError> {
        if let FaultEffect::Drift { fact, value } = &fault.effect {
            let mut twin = self.lock();
            let i = Self::node_index(&twin, &fault.node)?;
            set_fact(&mut twin.nodes[i].base_facts, fact, value);
        }
        self.save(Touch::Node(&fault.node))
    }

    /// Appends what a change touched to the change log.
    fn save(&self, touch: Touch<'_>) -> Result<(), AdapterError> {
        let Some(persist) = &self.persist else { return Ok(()) };
        let line = {
            let twin = self.lock();
            let clock_nanos = u64::try_from(self.clock.now().as_nanos()).unwrap_or(u64::MAX);
            let (nodes, clusters): (Vec<usize>, Vec<usize>) = match touch {
                Touch::Node(name) => {
                    let i = Self::node_index(&twin, name)?;
                    (vec![i], vec![twin.nodes[i].cluster])
                }
                Touch::Cluster { name, nodes } => {
                    let c = Self::cluster_index(&twin, name)?;
                    (if nodes { twin.clusters[c].nodes.clone() } else { Vec::new() }, vec![c])
                }
                Touch::Clock => (Vec::new(), Vec::new()),
            };
            let delta = DeltaRef {
                clock_nanos,
                nodes: nodes.into_iter().map(|i| (i, &twin.nodes[i])).collect(),
                clusters: clusters.into_iter().map(|c| (c, &twin.clusters[c])).collect(),
            };
            let mut line = serde_json::to_string(&delta)
                .map_err(|e| AdapterError::Failed(format!("cannot save the sim state: {e}")))?;
            line.push('\n');
            line
        };
        let mut log = persist.log.lock().unwrap_or_else(|p| p.into_inner());
        log.write_all(line.as_bytes())
            .map_err(|e| AdapterError::Failed(format!("cannot save the sim state to {}: {e}", persist.path.display())))
    }

    fn saved<T>(&self, result: Result<T, AdapterError>, touch: Touch<'_>) -> Result<T, AdapterError> {
        self.save(touch)?;
        result
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Plays simulated time `factor` times faster than real time: a step
    /// that takes a simulated minute then lasts 60/factor real seconds, so
    /// a rehearsal can be watched (and cancelled mid-step).
    pub fn set_pace(&self, factor: f64) {
        let bits = if factor > 0.0 && factor.is_finite() { factor.to_bits() } else { 0 };
        self.pace.store(bits, std::sync::atomic::Ordering::Relaxed);
    }

    /// The pace set with [`Self::set_pace`], if any.
    pub fn pace(&self) -> Option<f64> {
        let bits = self.pace.load(std::sync::atomic::Ordering::Relaxed);
        (bits != 0).then(|| f64::from_bits(bits))
    }

    fn lock(&self) -> MutexGuard<'_, Twin> {
        self.twin.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn node_index(twin: &Twin, name: &str) -> Result<usize, AdapterError> {
        twin.index
            .get(name)
            .copied()
            .ok_or_else(|| AdapterError::Unreachable(format!("the sim twin has no node `{name}`")))
    }

    fn cluster_index(twin: &Twin, name: &str) -> Result<usize, AdapterError> {
        twin.cluster_index
            .get(name)
            .copied()
            .ok_or_else(|| AdapterError::Failed(format!("the sim twin has no cluster `{name}`")))
    }

    /// Runs `f` on the twin at the current virtual time, with the node's
    /// cluster accounted up to now (so a state change starts a new segment).
    fn with_node<T>(
        &self,
        name: &str,
        f: impl FnOnce(&mut Twin, usize, Duration) -> Result<T, AdapterError>,
    ) -> Result<T, AdapterError> {
        let mut twin = self.lock();
        let i = Self::node_index(&twin, name)?;
        let now = self.clock.now();
        let cluster = twin.nodes[i].cluster;
        twin.account(cluster, now);
        f(&mut twin, i, now)
    }

    // ----- traffic ------------------------------------------------------------

    pub fn traffic_state(&self, name: &str) -> Result<TrafficState, AdapterError> {
        let twin = self.lock();
        let i = Self::node_index(&twin, name)?;
        let now = self.clock.now();
        Ok(TrafficState { in_service: twin.nodes[i].in_service, connections: twin.connections(i, now) })
    }

    fn drain_now(&self, name: &str, timeout: Duration) -> Result<DrainReport, AdapterError> {
        let (needed, open) = self.with_node(name, |twin, i, now| {
            let open = twin.connections(i, now);
            let node = &mut twin.nodes[i];
            if node.in_service {
                node.in_service = false;
                node.drain_from = Some((now, open));
            }
            let settings = &twin.clusters[node.cluster].settings;
            let needed = if open == 0 {
                Some(Duration::ZERO)
            } else if node.faults.drain_stuck || settings.drain_rate <= 0.0 {
                None
            } else {
                Some(Duration::from_secs_f64(open as f64 / settings.drain_rate))
            };
            Ok((needed, open))
        })?;
        match needed {
            Some(wait) if wait <= timeout => {
                self.clock.advance(wait);
                Ok(DrainReport { waited: wait, connections_at_start: open })
            }
            _ => {
                self.clock.advance(timeout);
                let left = self.traffic_state(name)?.connections;
                Err(AdapterError::Timeout {
                    after: timeout,
                    message: format!("{left} connection(s) still open on {name}"),
                })
            }
        }
    }

    fn undrain_now(&self, name: &str) -> Result<(), AdapterError> {
        self.with_node(name, |twin, i, now| {
            if !twin.up(i, now) {
                return Err(AdapterError::Unreachable(format!("{name} is down")));
            }
            let node = &mut twin.nodes[i];
            node.in_service = true;
            node.drain_from = None;
            Ok(())
        })
    }

    // ----- host ---------------------------------------------------------------

    pub fn host_state(&self, name: &str) -> Result<HostState, AdapterError> {
        let twin = self.lock();
        let i = Self::node_index(&twin, name)?;
        let node = &twin.nodes[i];
        Ok(HostState {
            up: twin.up(i, self.clock.now()),
            version: node.version.clone(),
            boot_id: Some(format!("{}-boot-{}", node.name, node.boots)),
        })
    }

    fn patch_now(&self, name: &str, params: &Params) -> Result<PatchReport, AdapterError> {
        let (result, took) = self.with_node(name, |twin, i, now| {
            if !twin.up(i, now) {
                return Err(AdapterError::Unreachable(format!("{name} is down")));
            }
            let patch_time = twin.clusters[twin.nodes[i].cluster].settings.patch_time;
            let node = &mut twin.nodes[i];
            if node.faults.patch_fails {
                return Ok((
                    Err(AdapterError::Failed("package manager exited with status 100 (injected fault)".into())),
                    patch_time / 2,
                ));
            }
            let to = match params.get("version") {
                Some(Value::String(v)) => v.clone(),
                Some(other) => other.to_string(),
                None => node.patch_to.clone(),
            };
            node.snapshots += 1;
            let report = PatchReport {
                from_version: std::mem::replace(&mut node.version, to.clone()),
                to_version: to,
                snapshot: Some(format!("sim-snapshot-{name}-{}", node.snapshots)),
            };
            node.patched = true;
            Ok((Ok(report), patch_time))
        })?;
        self.clock.advance(took);
        result
    }

    fn restore_now(&self, name: &str, patch: &PatchReport) -> Result<(), AdapterError> {
        let took = self.with_node(name, |twin, i, now| {
            if !twin.up(i, now) {
                return Err(AdapterError::Unreachable(format!("{name} is down; its snapshot cannot be restored")));
            }
            let restore_time = twin.clusters[twin.nodes[i].cluster].settings.restore_time;
            let node = &mut twin.nodes[i];
            node.version = patch.from_version.clone();
            node.patched = false;
            Ok(restore_time)
        })?;
        self.clock.advance(took);
        Ok(())
    }

    fn reboot_now(&self, name: &str, timeout: Duration) -> Result<Duration, AdapterError> {
        let took = self.with_node(name, |twin, i, now| {
            let settings = twin.clusters[twin.nodes[i].cluster].settings.clone();
            let node = &mut twin.nodes[i];
            node.boots += 1;
            if node.faults.reboot_hangs {
                node.down_until = Some(Duration::MAX);
                return Ok(None);
            }
            let back = now + settings.reboot_time;
            node.down_until = Some(back);
            node.synced_at = back + settings.resync_time;
            Ok(Some(settings.reboot_time))
        })?;
        match took {
            Some(took) if took <= timeout => {
                self.clock.advance(took);
                Ok(took)
            }
            _ => {
                self.clock.advance(timeout);
                Err(AdapterError::Timeout { after: timeout, message: format!("{name} did not come back from reboot") })
            }
        }
    }

    fn wait_healthy_now(&self, name: &str, timeout: Duration) -> Result<(), AdapterError> {
        let wait = {
            let twin = self.lock();
            let i = Self::node_index(&twin, name)?;
            let now = self.clock.now();
            twin.nodes[i].down_until.filter(|&until| until > now).map(|until| until.saturating_sub(now))
        };
        match wait {
            None => Ok(()),
            Some(wait) if wait <= timeout => {
                self.clock.advance(wait);
                Ok(())
            }
            Some(_) => {
                self.clock.advance(timeout);
                Err(AdapterError::Timeout { after: timeout, message: format!("{name} is still not healthy") })
            }
        }
    }

    pub fn facts(&self, name: &str) -> Result<Facts, AdapterError> {
        let twin = self.lock();
        let i = Self::node_index(&twin, name)?;
        let node = &twin.nodes[i];
        if !twin.up(i, self.clock.now()) {
            return Err(AdapterError::Unreachable(format!("{name} is down")));
        }
        let mut facts = node.base_facts.clone();
        facts.insert("version".into(), json!(node.version));
        facts.insert("patched".into(), json!(node.patched));
        if let Some(Value::Object(packages)) = facts.get_mut("packages") {
            let app = node.base_facts.get("service").and_then(Value::as_str).unwrap_or("app").to_string();
            packages.insert(app, json!(node.version));
        }
        Ok(facts)
    }

    // ----- replication --------------------------------------------------------

    pub fn roles(&self, cluster: &str) -> Result<Vec<(String, Role)>, AdapterError> {
        let twin = self.lock();
        let c = Self::cluster_index(&twin, cluster)?;
        Ok(twin.clusters[c]
            .nodes
            .iter()
            .filter_map(|&i| twin.nodes[i].role.map(|r| (twin.nodes[i].name.clone(), r)))
            .collect())
    }

    pub fn sync_status(&self, cluster: &str) -> Result<SyncReport, AdapterError> {
        let twin = self.lock();
        let c = Self::cluster_index(&twin, cluster)?;
        twin.sync_report(c, self.clock.now())
    }

    /// Waits until every replica is within `max_lag`, or `timeout` passes.
    fn wait_sync_now(&self, cluster: &str, max_lag: Duration, timeout: Duration) -> Result<SyncReport, AdapterError> {
        let wait = {
            let twin = self.lock();
            let c = Self::cluster_index(&twin, cluster)?;
            let now = self.clock.now();
            let mut ready = Some(now);
            for &i in &twin.clusters[c].nodes {
                let node = &twin.nodes[i];
                if node.role != Some(Role::Passive) {
                    continue;
                }
                let at = if node.faults.sync_lag.is_some_and(|lag| lag > max_lag)
                    || node.down_until == Some(Duration::MAX)
                {
                    None
                } else {
                    let fault = node.faults.sync_lag.unwrap_or_default();
                    let catch_up = node.synced_at.saturating_sub(max_lag - fault);
                    Some(catch_up.max(node.down_until.unwrap_or_default()).max(now))
                };
                ready = ready.zip(at).map(|(a, b)| a.max(b));
            }
            ready.map(|at| at - now)
        };
        match wait {
            Some(wait) if wait <= timeout => self.clock.advance(wait),
            _ => self.clock.advance(timeout),
        }
        self.sync_status(cluster)
    }

    fn switchover_now(&self, cluster: &str, target: &str) -> Result<SwitchoverReport, AdapterError> {
        let mut twin = self.lock();
        let c = Self::cluster_index(&twin, cluster)?;
        let now = self.clock.now();
        twin.account(c, now);
        let t = Self::node_index(&twin, target)?;
        if !twin.up(t, now) {
            return Err(AdapterError::Unreachable(format!("{target} is down")));
        }
        let active = twin.clusters[c]
            .nodes
            .iter()
            .copied()
            .find(|&i| twin.nodes[i].role == Some(Role::Active))
            .ok_or_else(|| AdapterError::Failed(format!("cluster `{cluster}` has no active node")))?;
        let pause = twin.clusters[c].settings.switchover_time;
        // Writes are held, not refused, while the roles move.
        twin.clusters[c].interruption += pause;
        twin.clusters[c].requests += twin.clusters[c].settings.rps * pause.as_secs_f64();
        twin.clusters[c].accounted = now + pause;
        twin.nodes[active].role = Some(Role::Passive);
        twin.nodes[active].synced_at = now + pause;
        twin.nodes[t].role = Some(Role::Active);
        let from = twin.nodes[active].name.clone();
        drop(twin);
        self.clock.advance(pause);
        Ok(SwitchoverReport { from, to: target.to_string(), paused: pause })
    }

    // ----- probe --------------------------------------------------------------

    fn probe_now(&self, name: &str) -> Result<ProbeReport, AdapterError> {
        let report = {
            let twin = self.lock();
            let i = Self::node_index(&twin, name)?;
            let requests = twin.clusters[twin.nodes[i].cluster].settings.probe_requests;
            let share = twin.error_share(i, self.clock.now());
            let failed = ((requests as f64) * share).round() as u64;
            ProbeReport { requests, failed, latency_ms: if share >= 1.0 { 0.0 } else { 12.0 } }
        };
        self.clock.advance(Duration::from_secs(1));
        Ok(report)
    }

    fn sample_now(&self, cluster: &str) -> Result<TrafficSample, AdapterError> {
        let mut twin = self.lock();
        let c = Self::cluster_index(&twin, cluster)?;
        twin.account(c, self.clock.now());
        let sc = &twin.clusters[c];
        Ok(TrafficSample {
            requests: sc.requests.round() as u64,
            failed: sc.failed.round() as u64,
            interruption: sc.interruption,
        })
    }
}

/// Every change is saved before the adapter call returns, so a runner
/// killed after the call finds the change on resume.
impl SimTwin {
    pub fn drain(&self, name: &str, timeout: Duration) -> Result<DrainReport, AdapterError> {
        let result = self.drain_now(name, timeout);
        self.saved(result, Touch::Node(name))
    }

    pub fn undrain(&self, name: &str) -> Result<(), AdapterError> {
        let result = self.undrain_now(name);
        self.saved(result, Touch::Node(name))
    }

    pub fn patch(&self, name: &str, params: &Params) -> Result<PatchReport, AdapterError> {
        let result = self.patch_now(name, params);
        self.saved(result, Touch::Node(name))
    }

    pub fn restore(&self, name: &str, patch: &PatchReport) -> Result<(), AdapterError> {
        let result = self.restore_now(name, patch);
        self.saved(result, Touch::Node(name))
    }

    pub fn reboot(&self, name: &str, timeout: Duration) -> Result<Duration, AdapterError> {
        let result = self.reboot_now(name, timeout);
        self.saved(result, Touch::Node(name))
    }

    pub fn wait_healthy(&self, name: &str, timeout: Duration) -> Result<(), AdapterError> {
        let result = self.wait_healthy_now(name, timeout);
        self.saved(result, Touch::Clock)
    }

    pub fn wait_sync(&self, cluster: &str, max_lag: Duration, timeout: Duration) -> Result<SyncReport, AdapterError> {
        let result = self.wait_sync_now(cluster, max_lag, timeout);
        self.saved(result, Touch::Clock)
    }

    pub fn switchover(&self, cluster: &str, target: &str) -> Result<SwitchoverReport, AdapterError> {
        let result = self.switchover_now(cluster, target);
        self.saved(result, Touch::Cluster { name: cluster, nodes: true })
    }

    pub fn probe(&self, name: &str) -> Result<ProbeReport, AdapterError> {
        let result = self.probe_now(name);
        self.saved(result, Touch::Clock)
    }

    pub fn sample(&self, cluster: &str) -> Result<TrafficSample, AdapterError> {
        let result = self.sample_now(cluster);
        self.saved(result, Touch::Cluster { name: cluster, nodes: false })
    }
}

impl Twin {
    fn reindex(&mut self) {
        self.index = self.nodes.iter().enumerate().map(|(i, n)| (n.name.clone(), i)).collect();
        self.cluster_index = self.clusters.iter().enumerate().map(|(i, c)| (c.name.clone(), i)).collect();
    }

    fn up(&self, i: usize, now: Duration) -> bool {
        self.nodes[i].down_until.is_none_or(|until| now >= until)
    }

    fn connections(&self, i: usize, now: Duration) -> u64 {
        let node = &self.nodes[i];
        let settings = &self.clusters[node.cluster].settings;
        if node.in_service {
            return if self.up(i, now) { settings.connections } else { 0 };
        }
        match node.drain_from {
            None => 0,
            Some((_, open)) if node.faults.drain_stuck => open,
            Some((since, open)) => {
                let closed = now.saturating_sub(since).as_secs_f64() * settings.drain_rate;
                (open as f64 - closed).ceil().max(0.0) as u64
            }
        }
    }

    /// Share of a node's requests that fail at `now`.
    fn error_share(&self, i: usize, now: Duration) -> f64 {
        let node = &self.nodes[i];
        if !self.up(i, now) {
            1.0
        } else if node.patched {
            node.faults.probe_errors.unwrap_or(0.0)
        } else {
            0.0
        }
    }

    /// Share of the cluster's user requests that fail at `now`.
    fn failing_fraction(&self, c: usize, now: Duration) -> f64 {
        let cluster = &self.clusters[c];
        match cluster.kind {
            ClusterKind::Pool => {
                let serving: Vec<usize> = cluster.nodes.iter().copied().filter(|&i| self.nodes[i].in_service).collect();
                if serving.is_empty() {
                    return 1.0;
                }
                serving.iter().map(|&i| self.error_share(i, now)).sum::<f64>() / serving.len() as f64
            }
            ClusterKind::ActivePassive => cluster
                .nodes
                .iter()
                .copied()
                .find(|&i| self.nodes[i].role == Some(Role::Active))
                .map_or(1.0, |i| self.error_share(i, now)),
        }
    }

    /// Integrates the cluster's traffic from its last accounting up to `now`,
    /// split at the moments nodes come back up.
    fn account(&mut self, c: usize, now: Duration) {
        let from = self.clusters[c].accounted;
        if now <= from {
            return;
        }
        let mut cuts: Vec<Duration> = self.clusters[c]
            .nodes
            .iter()
            .filter_map(|&i| self.nodes[i].down_until)
            .filter(|&t| t > from && t < now)
            .collect();
        cuts.sort();
        cuts.push(now);
        let rps = self.clusters[c].settings.rps;
        let mut start = from;
        for end in cuts {
            let span = end.saturating_sub(start);
            let fraction = self.failing_fraction(c, start);
            let cluster = &mut self.clusters[c];
            cluster.requests += rps * span.as_secs_f64();
            cluster.failed += rps * span.as_secs_f64() * fraction;
            if fraction > 0.0 {
                cluster.interruption += span;
            }
            start = end;
        }
        self.clusters[c].accounted = now;
    }

    fn sync_report(&self, c: usize, now: Duration) -> Result<SyncReport, AdapterError> {
        let cluster = &self.clusters[c];
        let primary = cluster
            .nodes
            .iter()
            .copied()
            .find(|&i| self.nodes[i].role == Some(Role::Active))
            .ok_or_else(|| AdapterError::Failed("no active node".into()))?;
        let replicas = cluster
            .nodes
            .iter()
            .copied()
            .filter(|&i| self.nodes[i].role == Some(Role::Passive))
            .map(|i| {
                let node = &self.nodes[i];
                let lag = node.faults.sync_lag.unwrap_or_default() + node.synced_at.saturating_sub(now);
                ReplicaSync { node: node.name.clone(), link_up: self.up(i, now), lag_seconds: lag.as_secs_f64() }
            })
            .collect();
        Ok(SyncReport { primary: self.nodes[primary].name.clone(), replicas })
    }
}

/// Facts of a node that do not change with patching, from its `vars`.
fn base_facts(vars: &BTreeMap<String, serde_yaml::Value>) -> Facts {
    let mut facts = Facts::new();
    facts.insert("os".into(), json!(var_str(vars, "os").unwrap_or_else(|| "Debian GNU/Linux 12 (bookworm)".into())));
    facts.insert("kernel".into(), json!(var_str(vars, "kernel").unwrap_or_else(|| "6.1.0-26-amd64".into())));
    if let Some(service) = var_str(vars, "service") {
        facts.insert("service".into(), json!(service));
    }
    let packages = vars
        .get("packages")
        .and_then(|p| serde_json::to_value(p).ok())
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    facts.insert("packages".into(), packages);
    // Configured files are known by their content hash, as on a real host.
    if let Some(serde_yaml::Value::Mapping(files)) = vars.get("files") {
        let hashes: serde_json::Map<String, Value> = files
            .iter()
            .filter_map(|(path, content)| {
                let path = path.as_str()?;
                let content = content.as_str().unwrap_or_default();
                Some((path.to_string(), json!(format!("sha256:{:x}", Sha256::digest(content.as_bytes())))))
            })
            .collect();
        facts.insert("files".into(), Value::Object(hashes));
    }
    facts
}

/// Sets a fact: a top-level fact by name (`kernel`), a dotted path
/// (`files./etc/x`), or else a package (`openssl`).
fn set_fact(facts: &mut Facts, fact: &str, value: &str) {
    if facts.contains_key(fact) && !facts[fact].is_object() {
        facts.insert(fact.to_string(), json!(value));
        return;
    }
    let (group, key) = fact.split_once('.').unwrap_or(("packages", fact));
    let entry = facts.entry(group.to_string()).or_insert_with(|| json!({}));
    if let Value::Object(map) = entry {
        map.insert(key.to_string(), json!(value));
    }
}
