//! The inventory: which clusters exist, their nodes, which adapter instance
//! serves each concern of a cluster, and the policy the guards enforce.
//!
//! Parsing is two passes. serde (with `deny_unknown_fields`) catches syntax,
//! type errors and unknown keys with serde_yaml's own location; a second pass
//! checks what serde cannot (a pool that could never drain a node, a
//! reference to an adapter that does not exist) and locates the offending key
//! in the text with [`locate`], because serde_yaml keeps no spans.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use indexmap::IndexMap;
use miette::Diagnostic;
use serde::{Deserialize, Serialize};

use crate::source::{Located, SourceFile};

/// What kind of high-availability arrangement a cluster is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterKind {
    /// One active node serves, the others are replicas ready to take over.
    ActivePassive,
    /// Every node serves behind a load balancer.
    Pool,
}

impl ClusterKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ActivePassive => "active_passive",
            Self::Pool => "pool",
        }
    }
}

/// The role of a node in an active/passive cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Active,
    Passive,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Passive => "passive",
        }
    }
}

/// The four concerns a cluster delegates to adapters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Concern {
    Traffic,
    Host,
    Replication,
    Probe,
}

impl Concern {
    pub const ALL: [Concern; 4] = [Self::Traffic, Self::Host, Self::Replication, Self::Probe];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Traffic => "traffic",
            Self::Host => "host",
            Self::Replication => "replication",
            Self::Probe => "probe",
        }
    }
}

/// An adapter instance declared under `adapters:`.
#[derive(Debug, Clone)]
pub struct AdapterSpec {
    pub name: String,
    pub kind: String,
    /// Adapter-specific settings, validated by the plugin that owns `kind`.
    pub settings: serde_yaml::Value,
}

/// The safety policy of one cluster. Every field has a default an operator
/// would accept for a first rehearsal; the guards read nothing else.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Pools: nodes that must stay in service at every moment.
    pub min_in_service: usize,
    /// Default batch size for `rolling`.
    pub batch: usize,
    /// Default number of node failures `rolling` tolerates before it halts.
    pub max_failures: usize,
    /// The run's node steps must finish within this long after the run starts.
    pub maintenance_window: Option<Duration>,
    /// A replica lagging more than this is not in sync.
    pub max_sync_lag: Duration,
    /// A successful `check_sync` older than this does not allow a switchover.
    pub sync_freshness: Duration,
    /// How long `check_sync` waits for a replica to catch up before it fails.
    pub sync_wait: Duration,
    /// How long `drain` waits for connections to reach zero.
    pub drain_timeout: Duration,
    /// How long `reboot` waits for a node to come back.
    pub reboot_timeout: Duration,
    /// Upper bound for any other adapter call.
    pub step_timeout: Duration,
    /// How long the guards may rely on a node's serving state (in service,
    /// connections, up) as pitcrew last observed or set it; older state is
    /// read again before a step depends on it. `0s` reads every node's
    /// state before every step that depends on it.
    pub observation_max_age: Duration,
}

/// One node of a cluster.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub name: String,
    pub role: Option<Role>,
    pub address: Option<String>,
    /// Free-form values for adapters and templates (e.g. the sim's `version`).
    pub vars: BTreeMap<String, serde_yaml::Value>,
}

/// A cluster: its nodes, adapters per concern and policy.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub name: String,
    pub kind: ClusterKind,
    /// Adapter instance name per concern; a concern may be absent.
    pub concerns: HashMap<Concern, String>,
    pub policy: Policy,
    /// Facts the peers of this cluster must agree on (`packages.openssl`).
    pub critical_facts: Vec<String>,
    pub nodes: Vec<NodeSpec>,
}

impl Cluster {
    pub fn node(&self, name: &str) -> Option<&NodeSpec> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn adapter_for(&self, concern: Concern) -> Option<&str> {
        self.concerns.get(&concern).map(String::as_str)
    }
}

/// A parsed and validated inventory.
#[derive(Debug, Clone)]
pub struct Inventory {
    pub source: SourceFile,
    pub adapters: IndexMap<String, AdapterSpec>,
    pub clusters: Vec<Cluster>,
    /// The `notifications:` section as written (null when absent).
    pub notifications: serde_yaml::Value,
    node_index: HashMap<String, (usize, usize)>,
}

/// One step of a path into the YAML document, for locating errors.
#[derive(Debug, Clone, Copy)]
pub enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// An inventory the operator must fix.
#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum InventoryError {
    #[error("cannot read inventory {path}")]
    #[diagnostic(code(pitcrew::inventory::read), help("check the path given with -i/--inventory"))]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    #[diagnostic(transparent)]
    Invalid(Box<Located>),
}

impl InventoryError {
    /// The message without location, for tests and summaries.
    pub fn message(&self) -> String {
        match self {
            Self::Read { source, .. } => source.to_string(),
            Self::Invalid(located) => located.message.clone(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInventory {
    #[serde(default)]
    adapters: IndexMap<String, RawAdapter>,
    clusters: IndexMap<String, RawCluster>,
    /// Notification sinks and templates; read by the binary.
    #[serde(default)]
    notifications: serde_yaml::Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdapter {
    kind: String,
    #[serde(default)]
    settings: serde_yaml::Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    kind: ClusterKind,
    /// Shorthand: one adapter instance for every concern.
    adapter: Option<String>,
    #[serde(default)]
    adapters: RawConcerns,
    #[serde(default)]
    policy: RawPolicy,
    /// Facts peers must agree on before a switchover (dotted names).
    #[serde(default)]
    critical_facts: Vec<String>,
    nodes: Vec<RawNode>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConcerns {
    traffic: Option<String>,
    host: Option<String>,
    replication: Option<String>,
    probe: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    min_in_service: Option<i64>,
    batch: Option<i64>,
    max_failures: Option<i64>,
    #[serde(default, with = "humantime_serde")]
    maintenance_window: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    max_sync_lag: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    sync_freshness: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    sync_wait: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    drain_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    reboot_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    step_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    observation_max_age: Option<Duration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: String,
    role: Option<Role>,
    address: Option<String>,
    #[serde(default)]
    vars: BTreeMap<String, serde_yaml::Value>,
}

impl Inventory {
    /// Reads and validates an inventory file.
    pub fn load(path: &Path) -> Result<Self, InventoryError> {
        let source = SourceFile::read(path)
            .map_err(|source| InventoryError::Read { path: path.display().to_string(), source })?;
        Self::parse(source)
    }

    /// Parses and validates inventory text.
    pub fn parse(source: SourceFile) -> Result<Self, InventoryError> {
        let raw: RawInventory = serde_yaml::from_str(&source.text).map_err(|e| {
            let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
            let message = e.to_string();
            let message = message.split(" at line ").next().unwrap_or(&message).to_string();
            let help = yaml_hint(&message);
            invalid(&source, line, column, message, help)
        })?;
        let notifications = raw.notifications.clone();
        Builder { source: &source }.build(raw).map(|(adapters, clusters)| {
            let mut node_index = HashMap::new();
            for (ci, cluster) in clusters.iter().enumerate() {
                for (ni, node) in cluster.nodes.iter().enumerate() {
                    node_index.insert(node.name.clone(), (ci, ni));
                }
            }
            Inventory { source: source.clone(), adapters, clusters, notifications, node_index }
        })
    }

    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.name == name)
    }

    /// The cluster a node belongs to and the node itself.
    pub fn node(&self, name: &str) -> Option<(&Cluster, &NodeSpec)> {
        let &(ci, ni) = self.node_index.get(name)?;
        let cluster = &self.clusters[ci];
        Some((cluster, &cluster.nodes[ni]))
    }

    pub fn node_names(&self) -> impl Iterator<Item = &str> {
        self.clusters.iter().flat_map(|c| c.nodes.iter().map(|n| n.name.as_str()))
    }

    /// Total number of nodes.
    pub fn node_count(&self) -> usize {
        self.node_index.len()
    }

    /// An error located at a path in this inventory's text, for the plugins
    /// that validate their own adapter settings.
    pub fn error_at(&self, path: &[Seg<'_>], message: impl Into<String>, help: Option<String>) -> InventoryError {
        let (line, column) = locate(&self.source.text, path);
        invalid(&self.source, line, column, message.into(), help)
    }
}

fn invalid(source: &SourceFile, line: usize, column: usize, message: String, help: Option<String>) -> InventoryError {
    InventoryError::Invalid(Box::new(source.error_at(line, column, message, help)))
}

fn yaml_hint(message: &str) -> Option<String> {
    if message.contains("unknown field") {
        Some("check the spelling; the inventory reference in the README lists every key".into())
    } else if message.contains("unknown variant") {
        Some("use one of the values listed above".into())
    } else if message.contains("missing field") {
        Some("add the missing key".into())
    } else if message.contains("invalid type") {
        Some("check the value's type (durations are written like 30s, 5m, 4h)".into())
    } else {
        None
    }
}

struct Builder<'a> {
    source: &'a SourceFile,
}

type Built = (IndexMap<String, AdapterSpec>, Vec<Cluster>);

impl Builder<'_> {
    fn error(&self, path: &[Seg<'_>], message: impl Into<String>, help: impl Into<String>) -> InventoryError {
        let (line, column) = locate(&self.source.text, path);
        invalid(self.source, line, column, message.into(), Some(help.into()))
    }

    fn build(&self, raw: RawInventory) -> Result<Built, InventoryError> {
        use Seg::{Index, Key};
        let adapters: IndexMap<String, AdapterSpec> = raw
            .adapters
            .into_iter()
            .map(|(name, a)| (name.clone(), AdapterSpec { name, kind: a.kind, settings: a.settings }))
            .collect();
        if raw.clusters.is_empty() {
            return Err(self.error(
                &[Key("clusters")],
                "the inventory declares no cluster",
                "add at least one cluster under `clusters:`",
            ));
        }
        let mut seen_nodes: HashMap<String, String> = HashMap::new();
        let mut clusters = Vec::with_capacity(raw.clusters.len());
        for (name, rc) in raw.clusters {
            if rc.nodes.is_empty() {
                return Err(self.error(
                    &in_cluster(&name, &[Key("nodes")]),
                    format!("cluster `{name}` has no nodes"),
                    "list the cluster's nodes under `nodes:`",
                ));
            }
            let mut nodes = Vec::with_capacity(rc.nodes.len());
            for (i, rn) in rc.nodes.into_iter().enumerate() {
                let here = in_cluster(&name, &[Key("nodes"), Index(i), Key("name")]);
                if rn.name.trim().is_empty() {
                    return Err(self.error(&here, "a node has an empty name", "give every node a unique name"));
                }
                if let Some(other) = seen_nodes.insert(rn.name.clone(), name.clone()) {
                    return Err(self.error(
                        &here,
                        format!("node `{}` is declared twice (also in cluster `{other}`)", rn.name),
                        "node names must be unique across the inventory",
                    ));
                }
                match (rc.kind, rn.role) {
                    (ClusterKind::Pool, Some(_)) => {
                        return Err(self.error(
                            &in_cluster(&name, &[Key("nodes"), Index(i), Key("role")]),
                            format!("node `{}` has a role but cluster `{name}` is a pool", rn.name),
                            "roles (active/passive) belong to active_passive clusters; remove `role`",
                        ))
                    }
                    (ClusterKind::ActivePassive, None) => {
                        return Err(self.error(
                            &here,
                            format!("node `{}` of active_passive cluster `{name}` has no role", rn.name),
                            "add `role: active` or `role: passive`",
                        ))
                    }
                    _ => {}
                }
                nodes.push(NodeSpec { name: rn.name, role: rn.role, address: rn.address, vars: rn.vars });
            }
            if rc.kind == ClusterKind::ActivePassive {
                let actives = nodes.iter().filter(|n| n.role == Some(Role::Active)).count();
                if actives != 1 || nodes.len() < 2 {
                    return Err(self.error(
                        &in_cluster(&name, &[Key("nodes")]),
                        format!("active_passive cluster `{name}` needs exactly one active node and at least one passive (has {actives} active of {})", nodes.len()),
                        "mark one node `role: active` and the others `role: passive`",
                    ));
                }
            }
            let concerns = self.concerns(&name, rc.kind, rc.adapter, rc.adapters, &adapters)?;
            let policy = self.policy(&name, rc.kind, nodes.len(), rc.policy)?;
            clusters.push(Cluster { name, kind: rc.kind, concerns, policy, critical_facts: rc.critical_facts, nodes });
        }
        Ok((adapters, clusters))
    }

    fn concerns(
        &self,
        cluster: &str,
        kind: ClusterKind,
        all: Option<String>,
        raw: RawConcerns,
        adapters: &IndexMap<String, AdapterSpec>,
    ) -> Result<HashMap<Concern, String>, InventoryError> {
        use Seg::Key;
        let mut concerns = HashMap::new();
        let given = [
            (Concern::Traffic, raw.traffic),
            (Concern::Host, raw.host),
            (Concern::Replication, raw.replication),
            (Concern::Probe, raw.probe),
        ];
        for (concern, name) in given {
            let explicit = name.is_some();
            let Some(name) = name.or_else(|| all.clone()) else { continue };
            if !adapters.contains_key(&name) {
                let path = if explicit {
                    vec![Key("clusters"), Key(cluster), Key("adapters"), Key(concern.as_str())]
                } else {
                    vec![Key("clusters"), Key(cluster), Key("adapter")]
                };
                let declared: Vec<&str> = adapters.keys().map(String::as_str).collect();
                return Err(self.error(
                    &path,
                    format!(
                        "cluster `{cluster}` uses adapter `{name}` for {}, but no such adapter is declared",
                        concern.as_str()
                    ),
                    if declared.is_empty() {
                        "declare it under `adapters:` (e.g. `twin: { kind: sim }`)".to_string()
                    } else {
                        format!("declared adapters: {}", declared.join(", "))
                    },
                ));
            }
            concerns.insert(concern, name);
        }
        let required: &[Concern] = match kind {
            ClusterKind::Pool => &[Concern::Traffic, Concern::Host],
            ClusterKind::ActivePassive => &[Concern::Replication, Concern::Host],
        };
        for concern in required {
            if !concerns.contains_key(concern) {
                return Err(self.error(
                    &[Key("clusters"), Key(cluster)],
                    format!("{} cluster `{cluster}` has no {} adapter", kind.as_str(), concern.as_str()),
                    format!("set `adapter: NAME` for every concern, or `adapters: {{ {}: NAME }}`", concern.as_str()),
                ));
            }
        }
        Ok(concerns)
    }

    fn policy(
        &self,
        cluster: &str,
        kind: ClusterKind,
        node_count: usize,
        raw: RawPolicy,
    ) -> Result<Policy, InventoryError> {
        use Seg::Key;
        let path = |key: &'static str| vec![Key("clusters"), Key(cluster), Key("policy"), Key(key)];
        let count =
            |key: &'static str, value: Option<i64>, default: usize, min: i64| -> Result<usize, InventoryError> {
                match value {
                    None => Ok(default),
                    Some(v) if v < min => Err(self.error(
                        &path(key),
                        format!("`{key}` is {v} in cluster `{cluster}`"),
                        format!("use a whole number of at least {min}"),
                    )),
                    Some(v) => Ok(usize::try_from(v).unwrap_or(usize::MAX)),
                }
            };
        let default_min = match kind {
            ClusterKind::Pool => node_count.saturating_sub(1).max(1),
            ClusterKind::ActivePassive => 1,
        };
        let min_in_service = count("min_in_service", raw.min_in_service, default_min, 1)?;
        if kind == ClusterKind::Pool && min_in_service >= node_count {
            return Err(self.error(
                &path("min_in_service"),
                format!("pool `{cluster}` has {node_count} node(s) and min_in_service {min_in_service}: no node could ever be drained for patching"),
                format!("lower min_in_service to at most {}, or add nodes", node_count.saturating_sub(1)),
            ));
        }
        if kind == ClusterKind::ActivePassive && min_in_service != 1 {
            return Err(self.error(
                &path("min_in_service"),
                format!("active_passive cluster `{cluster}` always serves from exactly one node"),
                "remove min_in_service from this cluster's policy",
            ));
        }
        let batch = count("batch", raw.batch, 1, 1)?;
        if kind == ClusterKind::Pool && batch > node_count - min_in_service {
            return Err(self.error(
                &path("batch"),
                format!("pool `{cluster}`: a batch of {batch} would take more than the {} node(s) min_in_service {min_in_service} allows out at once", node_count - min_in_service),
                format!("use a batch of at most {}", node_count - min_in_service),
            ));
        }
        let max_failures = count("max_failures", raw.max_failures, 0, 0)?;
        if raw.maintenance_window == Some(Duration::ZERO) {
            return Err(self.error(
                &path("maintenance_window"),
                "the maintenance window is zero long",
                "write it as a duration, e.g. `maintenance_window: 4h`",
            ));
        }
        Ok(Policy {
            min_in_service,
            batch,
            max_failures,
            maintenance_window: raw.maintenance_window,
            max_sync_lag: raw.max_sync_lag.unwrap_or(Duration::from_secs(5)),
            sync_freshness: raw.sync_freshness.unwrap_or(Duration::from_secs(120)),
            sync_wait: raw.sync_wait.unwrap_or(Duration::from_secs(30)),
            drain_timeout: raw.drain_timeout.unwrap_or(Duration::from_secs(300)),
            reboot_timeout: raw.reboot_timeout.unwrap_or(Duration::from_secs(600)),
            step_timeout: raw.step_timeout.unwrap_or(Duration::from_secs(900)),
            observation_max_age: raw.observation_max_age.unwrap_or(Duration::from_secs(2)),
        })
    }
}

/// The path of a key inside one cluster's block.
fn in_cluster<'a>(cluster: &'a str, rest: &[Seg<'a>]) -> Vec<Seg<'a>> {
    let mut path = vec![Seg::Key("clusters"), Seg::Key(cluster)];
    path.extend_from_slice(rest);
    path
}

/// Finds the 1-based line and column of a path in block-style YAML. Falls
/// back to the deepest segment it could find (or 1:1), so an error always
/// has a location even for flow-style documents.
pub fn locate(text: &str, path: &[Seg<'_>]) -> (usize, usize) {
    let lines: Vec<(usize, &str)> = text.lines().map(|l| (l.len() - l.trim_start().len(), l)).collect();
    let meaningful = |l: &str| {
        let t = l.trim();
        !t.is_empty() && !t.starts_with('#')
    };
    let mut found = (1, 1);
    let (mut start, mut end, mut parent_indent) = (0usize, lines.len(), None::<usize>);
    for seg in path {
        let mut hit = None;
        match *seg {
            Seg::Key(key) => {
                for (i, &(indent, line)) in lines.iter().enumerate().take(end).skip(start) {
                    if !meaningful(line) || parent_indent.is_some_and(|p| indent <= p && i > start) {
                        continue;
                    }
                    let content = line.trim_start();
                    let (content, extra) = match content.strip_prefix("- ") {
                        Some(rest) => (rest.trim_start(), content.len() - rest.trim_start().len()),
                        None => (content, 0),
                    };
                    let bare = content.strip_prefix(['"', '\'']).unwrap_or(content);
                    if bare.starts_with(key) && bare[key.len()..].trim_start_matches(['"', '\'']).starts_with(':') {
                        hit = Some((i, indent + extra));
                        break;
                    }
                }
            }
            Seg::Index(want) => {
                let mut seen = 0;
                for (i, &(indent, line)) in lines.iter().enumerate().take(end).skip(start) {
                    if !meaningful(line) {
                        continue;
                    }
                    if line.trim_start().starts_with('-') && parent_indent.is_none_or(|p| indent >= p) {
                        if seen == want {
                            hit = Some((i, indent + 2));
                            break;
                        }
                        seen += 1;
                    }
                }
            }
        }
        let Some((line, col)) = hit else { break };
        found = (line + 1, col + 1);
        // The block of this segment runs until a line indented at most as much.
        let block_indent = match seg {
            Seg::Key(_) => col,
            Seg::Index(_) => col.saturating_sub(2),
        };
        start = line + 1;
        end = lines
            .iter()
            .enumerate()
            .skip(start)
            .find(|(_, &(indent, l))| {
                meaningful(l) && (indent < block_indent || (indent == block_indent && matches!(seg, Seg::Key(_))))
            })
            .map_or(lines.len(), |(i, _)| i);
        if let Seg::Index(_) = seg {
            // Keys of a list item start on the dash line itself.
            start = line;
            parent_indent = Some(block_indent);
        } else {
            parent_indent = Some(block_indent);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
adapters:
  twin:
    kind: sim
clusters:
  web:
    kind: pool
    adapter: twin
    policy:
      min_in_service: 2
    nodes:
      - name: web-1
      - name: web-2
      - name: web-3
  db:
    kind: active_passive
    adapter: twin
    nodes:
      - { name: db-a, role: active }
      - { name: db-b, role: passive }
";

    fn parse(text: &str) -> Result<Inventory, InventoryError> {
        Inventory::parse(SourceFile::new("inv.yaml", text))
    }

    fn error_of(text: &str) -> (usize, usize, String, Option<String>) {
        match parse(text) {
            Err(InventoryError::Invalid(e)) => (e.line, e.column, e.message, e.help),
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("inventory should be rejected"),
        }
    }

    #[test]
    fn parses_pools_and_pairs_with_defaults() {
        let inv = parse(GOOD).expect("valid inventory");
        let web = inv.cluster("web").expect("web");
        assert_eq!(web.policy.min_in_service, 2);
        assert_eq!(web.adapter_for(Concern::Traffic), Some("twin"));
        let db = inv.cluster("db").expect("db");
        assert_eq!(db.node("db-a").and_then(|n| n.role), Some(Role::Active));
        assert_eq!(db.policy.max_sync_lag, Duration::from_secs(5));
        assert_eq!(inv.node("web-3").map(|(c, _)| c.name.as_str()), Some("web"));
        assert_eq!(inv.node_count(), 5);
    }

    #[test]
    fn unknown_key_is_located() {
        let text = GOOD.replace("min_in_service: 2", "min_in_servise: 2");
        let (line, column, message, help) = error_of(&text);
        assert_eq!((line, column), (9, 7));
        assert!(message.contains("unknown field `min_in_servise`"), "{message}");
        assert!(help.is_some());
    }

    #[test]
    fn pool_that_can_never_drain_is_rejected_at_the_key() {
        let text = GOOD.replace("min_in_service: 2", "min_in_service: 3");
        let (line, column, message, help) = error_of(&text);
        assert_eq!((line, column), (9, 7));
        assert!(message.contains("no node could ever be drained"), "{message}");
        assert_eq!(help.as_deref(), Some("lower min_in_service to at most 2, or add nodes"));
    }

    #[test]
    fn missing_adapter_names_the_declared_ones() {
        let text = GOOD.replace("adapter: twin\n    nodes:\n      - {", "adapter: tw1n\n    nodes:\n      - {");
        let (line, _, message, help) = error_of(&text);
        assert_eq!(line, 16);
        assert!(message.contains("no such adapter"), "{message}");
        assert_eq!(help.as_deref(), Some("declared adapters: twin"));
    }

    #[test]
    fn duplicate_node_and_missing_role_are_errors() {
        let dup = GOOD.replace("name: web-3", "name: web-2");
        let (line, column, message, _) = error_of(&dup);
        assert_eq!((line, column), (13, 9));
        assert!(message.contains("declared twice"));
        let no_role = GOOD.replace("{ name: db-b, role: passive }", "{ name: db-b }");
        assert!(error_of(&no_role).2.contains("has no role"));
        let no_active = GOOD.replace("role: active", "role: passive");
        assert!(error_of(&no_active).2.contains("exactly one active"));
    }

    #[test]
    fn type_errors_carry_yaml_location() {
        let text = GOOD.replace("kind: pool", "kind: swarm");
        let (line, column, message, _) = error_of(&text);
        assert_eq!(line, 6);
        assert!(column >= 5);
        assert!(message.contains("unknown variant `swarm`"), "{message}");
    }

    #[test]
    fn locate_finds_nested_keys_and_list_items() {
        assert_eq!(locate(GOOD, &[Seg::Key("clusters"), Seg::Key("db"), Seg::Key("kind")]), (15, 5));
        assert_eq!(locate(GOOD, &[Seg::Key("clusters"), Seg::Key("web"), Seg::Key("nodes"), Seg::Index(1)]), (12, 9));
        assert_eq!(locate(GOOD, &[Seg::Key("nope")]), (1, 1));
    }
}
