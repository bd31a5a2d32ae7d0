//! pitcrew-plugins: the adapters pitcrew ships.
//!
//! Today: `sim`, the simulated twin every rehearsal runs on. The registry
//! below turns an inventory into the [`Adapters`] the executor calls, either
//! as the inventory names them ([`live_adapters`]) or all on a twin
//! ([`rehearsal_twin`], [`saved_twin`]).

pub mod haproxy;
pub mod localsh;
pub mod probe;
pub mod redis;
pub mod shell;
pub mod sim;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::Diagnostic;
use pitcrew_runtime::adapter::{Adapters, ClusterAdapters};
use pitcrew_runtime::inventory::{Concern, Seg};
use pitcrew_runtime::{Clock, Inventory, InventoryError};

use sim::{Fault, SimAdapter, SimSettings, SimTwin, UnknownFaultNode};

/// Adapter kinds this build knows, and the concerns each can serve.
pub const KINDS: &[(&str, &[Concern])] = &[
    ("sim", &[Concern::Traffic, Concern::Host, Concern::Replication, Concern::Probe]),
    ("shell", &[Concern::Host, Concern::Traffic, Concern::Probe]),
    ("haproxy", &[Concern::Traffic]),
    ("http", &[Concern::Probe]),
    ("tcp", &[Concern::Probe]),
    ("redis", &[Concern::Replication]),
];

/// Adapters could not be built from the inventory or the command line.
#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum PluginError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Inventory(#[from] InventoryError),
    #[error("{0}")]
    #[diagnostic(code(pitcrew::fault::unknown_node), help("{}", fault_hint(.0)))]
    UnknownFaultNode(UnknownFaultNode),
    #[error("{0}")]
    #[diagnostic(
        code(pitcrew::sim::state),
        help("the sim state lives in the state directory; remove the file to start from the inventory again")
    )]
    State(String),
}

fn fault_hint(e: &UnknownFaultNode) -> String {
    if e.suggestions.is_empty() {
        "name a node of the inventory".to_string()
    } else {
        format!("did you mean {}?", e.suggestions.join(" or "))
    }
}

/// Adapters as built for one run, with the twin when the run is simulated.
pub struct BuiltAdapters {
    pub adapters: Adapters,
    pub twin: Option<Arc<SimTwin>>,
}

fn settings_of<T: serde::de::DeserializeOwned>(inventory: &Inventory, adapter: &str) -> Result<T, InventoryError> {
    let spec = &inventory.adapters[adapter];
    let value =
        if spec.settings.is_null() { serde_yaml::Value::Mapping(Default::default()) } else { spec.settings.clone() };
    serde_yaml::from_value(value).map_err(|e| {
        let message = e.to_string();
        let key = message.split('`').nth(1).unwrap_or("settings").to_string();
        inventory.error_at(
            &[Seg::Key("adapters"), Seg::Key(adapter), Seg::Key("settings"), Seg::Key(&key)],
            format!("{} adapter `{adapter}`: {message}", spec.kind),
            Some(format!("see the `{}` adapter in the README's inventory reference", spec.kind)),
        )
    })
}

fn invalid_settings(inventory: &Inventory, adapter: &str, message: String) -> InventoryError {
    inventory.error_at(
        &[Seg::Key("adapters"), Seg::Key(adapter), Seg::Key("settings")],
        format!("{} adapter `{adapter}`: {message}", inventory.adapters[adapter].kind),
        None,
    )
}

/// Every adapter instance has a known kind, valid settings, and serves only
/// concerns its kind can serve.
fn check_kinds(inventory: &Inventory) -> Result<(), InventoryError> {
    for (name, spec) in &inventory.adapters {
        let Some((_, _)) = KINDS.iter().find(|(k, _)| *k == spec.kind) else {
            let known: Vec<&str> = KINDS.iter().map(|(k, _)| *k).collect();
            return Err(inventory.error_at(
                &[Seg::Key("adapters"), Seg::Key(name), Seg::Key("kind")],
                format!("adapter `{name}` has unknown kind `{}`", spec.kind),
                Some(format!("this build of pitcrew knows: {}", known.join(", "))),
            ));
        };
        let checked = match spec.kind.as_str() {
            "shell" => shell::validate(&settings_of(inventory, name)?),
            "haproxy" => haproxy::validate(&settings_of(inventory, name)?),
            "http" => {
                settings_of::<probe::HttpProbeSettings>(inventory, name)?;
                Ok(())
            }
            "tcp" => {
                settings_of::<probe::TcpProbeSettings>(inventory, name)?;
                Ok(())
            }
            "redis" => {
                settings_of::<redis::RedisSettings>(inventory, name)?;
                Ok(())
            }
            _ => Ok(()),
        };
        checked.map_err(|message| invalid_settings(inventory, name, message))?;
    }
    for cluster in &inventory.clusters {
        for concern in Concern::ALL {
            let Some(name) = cluster.adapter_for(concern) else { continue };
            let kind = inventory.adapters[name].kind.as_str();
            let serves = KINDS.iter().find(|(k, _)| *k == kind).is_some_and(|(_, c)| c.contains(&concern));
            let shell_lacks = kind == "shell"
                && match concern {
                    Concern::Traffic => !settings_of::<shell::ShellSettings>(inventory, name)?.commands.traffic(),
                    Concern::Probe => settings_of::<shell::ShellSettings>(inventory, name)?.commands.probe.is_none(),
                    _ => false,
                };
            if shell_lacks {
                let needs = if concern == Concern::Traffic { "`drain` and `undrain`" } else { "`probe`" };
                return Err(inventory.error_at(
                    &[Seg::Key("clusters"), Seg::Key(&cluster.name)],
                    format!(
                        "cluster `{}` uses shell adapter `{name}` for {}, but it has no {needs} command",
                        cluster.name,
                        concern.as_str()
                    ),
                    Some(format!("add {needs} to adapters.{name}.settings.commands, or use another adapter")),
                ));
            }
            if !serves {
                return Err(inventory.error_at(
                    &[Seg::Key("clusters"), Seg::Key(&cluster.name), Seg::Key("adapters"), Seg::Key(concern.as_str())],
                    format!(
                        "cluster `{}` uses `{name}` ({kind}) for {}, which a {kind} adapter cannot serve",
                        cluster.name,
                        concern.as_str()
                    ),
                    Some("shell serves host (and traffic with drain/undrain commands, probe with a probe command); haproxy serves traffic; redis serves replication; http and tcp serve probe; sim serves all".into()),
                ));
            }
        }
    }
    Ok(())
}

fn cluster_settings(inventory: &Inventory) -> Result<HashMap<String, Arc<SimSettings>>, PluginError> {
    check_kinds(inventory)?;
    let mut settings = HashMap::new();
    for cluster in &inventory.clusters {
        let sim_instance = Concern::ALL
            .iter()
            .filter_map(|c| cluster.adapter_for(*c))
            .find(|name| inventory.adapters.get(*name).is_some_and(|a| a.kind == "sim"));
        let s = match sim_instance {
            Some(name) => settings_of(inventory, name)?,
            None => SimSettings::default(),
        };
        settings.insert(cluster.name.clone(), Arc::new(s));
    }
    Ok(settings)
}

fn on_twin(inventory: &Inventory, twin: Arc<SimTwin>, settings: &HashMap<String, Arc<SimSettings>>) -> BuiltAdapters {
    let clusters = inventory
        .clusters
        .iter()
        .map(|cluster| {
            let adapter = Arc::new(SimAdapter::new(twin.clone(), settings[&cluster.name].clone()));
            let adapters = ClusterAdapters {
                traffic: Some(adapter.clone()),
                host: adapter.clone(),
                replication: Some(adapter.clone()),
                probe: Some(adapter),
            };
            (cluster.name.clone(), adapters)
        })
        .collect();
    BuiltAdapters { adapters: Adapters { clock: twin.clock().clone(), clusters }, twin: Some(twin) }
}

/// Every cluster on one fresh sim twin (virtual clock), whatever adapters the
/// inventory names; sim settings come from the cluster's `sim` adapter
/// instance where it has one. With `persist`, the twin's state is saved
/// there after every change so the run can be resumed.
pub fn rehearsal_twin(
    inventory: &Inventory,
    faults: &[Fault],
    persist: Option<PathBuf>,
) -> Result<BuiltAdapters, PluginError> {
    let settings = cluster_settings(inventory)?;
    let mut twin =
        SimTwin::new(inventory, &settings, faults, Clock::virtual_clock()).map_err(PluginError::UnknownFaultNode)?;
    if let Some(path) = persist {
        twin = twin.persist_to(path).map_err(|e| PluginError::State(e.to_string()))?;
    }
    Ok(on_twin(inventory, Arc::new(twin), &settings))
}

/// A fresh, unsaved twin (preflights, tests, benchmarks).
pub fn rehearsal_adapters(inventory: &Inventory, faults: &[Fault]) -> Result<BuiltAdapters, PluginError> {
    rehearsal_twin(inventory, faults, None)
}

/// A twin saved at `path`, to resume the run it belongs to.
pub fn saved_twin(inventory: &Inventory, path: &Path) -> Result<BuiltAdapters, PluginError> {
    let settings = cluster_settings(inventory)?;
    let twin = SimTwin::load(path, inventory).map_err(|e| PluginError::State(e.to_string()))?;
    Ok(on_twin(inventory, Arc::new(twin), &settings))
}

/// The persistent sim world of an inventory, ready for a new run (its
/// clock and user figures start from zero).
pub fn world_for_new_run(inventory: &Inventory, sim_dir: &Path) -> Result<BuiltAdapters, PluginError> {
    let path = world_path(sim_dir, inventory);
    if !path.exists() {
        return rehearsal_twin(inventory, &[], Some(path));
    }
    let settings = cluster_settings(inventory)?;
    let state = |e: String| PluginError::State(e);
    let twin = SimTwin::load(&path, inventory)
        .map_err(|e| state(e.to_string()))?
        .start_new_run()
        .map_err(|e| state(e.to_string()))?;
    Ok(on_twin(inventory, Arc::new(twin), &settings))
}

/// Where the persistent sim world of an inventory lives in a state dir.
pub fn world_path(sim_dir: &Path, inventory: &Inventory) -> PathBuf {
    let canonical = std::fs::canonicalize(&inventory.source.path).unwrap_or_else(|_| inventory.source.path.clone());
    let stem = inventory.source.path.file_stem().and_then(|s| s.to_str()).unwrap_or("inventory");
    let id = pitcrew_runtime::journal::sha256_hex(canonical.display().to_string().as_bytes());
    sim_dir.join(format!("world-{stem}-{}.json", &id[..12]))
}

/// The adapters the inventory names. An inventory all on `sim` drives the
/// persistent sim world of the inventory (kept in the state dir's `sim/`,
/// created from the inventory the first time), so runs, drift and resume
/// see one world that changes only through them. Real adapters run on the
/// wall clock; the two cannot be mixed in one inventory.
pub fn live_adapters(inventory: &Inventory, sim_dir: Option<&Path>) -> Result<BuiltAdapters, PluginError> {
    check_kinds(inventory)?;
    let used: Vec<&str> =
        inventory.clusters.iter().flat_map(|c| Concern::ALL.iter().filter_map(|k| c.adapter_for(*k))).collect();
    let sims = used.iter().filter(|n| inventory.adapters[**n].kind == "sim").count();
    if sims == used.len() {
        let Some(dir) = sim_dir else { return rehearsal_adapters(inventory, &[]) };
        let path = world_path(dir, inventory);
        // `pitcrew run` rebases it with world_for_new_run; resume and drift
        // continue the world as it is.
        return if path.exists() { saved_twin(inventory, &path) } else { rehearsal_twin(inventory, &[], Some(path)) };
    }
    if sims > 0 {
        return Err(inventory
            .error_at(
                &[Seg::Key("adapters")],
                "this inventory mixes `sim` with real adapters; sim runs on virtual time and real adapters on the wall clock",
                Some("use real adapters for `pitcrew run`; `pitcrew rehearse` puts any inventory on the sim twin".into()),
            )
            .into());
    }
    real_adapters(inventory)
}

fn real_adapters(inventory: &Inventory) -> Result<BuiltAdapters, PluginError> {
    use pitcrew_runtime::adapter::{HostAdapter, ProbeAdapter, ReplicationAdapter, TrafficAdapter};
    let mut hosts: HashMap<String, Arc<dyn HostAdapter>> = HashMap::new();
    let mut traffic: HashMap<String, Arc<dyn TrafficAdapter>> = HashMap::new();
    let mut probes: HashMap<String, Arc<dyn ProbeAdapter>> = HashMap::new();
    let mut replication: HashMap<String, Arc<dyn ReplicationAdapter>> = HashMap::new();
    for (name, spec) in &inventory.adapters {
        let fail = |message: String| PluginError::from(invalid_settings(inventory, name, message));
        match spec.kind.as_str() {
            "shell" => {
                let shell = Arc::new(shell::ShellHost::new(settings_of(inventory, name)?).map_err(fail)?);
                traffic.insert(name.clone(), shell.clone());
                probes.insert(name.clone(), shell.clone());
                hosts.insert(name.clone(), shell);
            }
            "haproxy" => {
                traffic.insert(
                    name.clone(),
                    Arc::new(haproxy::HaproxyTraffic::new(settings_of(inventory, name)?).map_err(fail)?),
                );
            }
            "http" => {
                probes.insert(
                    name.clone(),
                    Arc::new(probe::ServiceProbe::http(settings_of(inventory, name)?).map_err(fail)?),
                );
            }
            "tcp" => {
                probes.insert(
                    name.clone(),
                    Arc::new(probe::ServiceProbe::tcp(settings_of(inventory, name)?).map_err(fail)?),
                );
            }
            "redis" => {
                let adapter = redis::RedisReplication::new(settings_of(inventory, name)?).map_err(fail)?;
                replication.insert(name.clone(), Arc::new(adapter));
            }
            _ => {}
        }
    }
    let mut clusters = HashMap::new();
    for cluster in &inventory.clusters {
        let host_name = cluster.adapter_for(Concern::Host).expect("the inventory requires a host adapter");
        let adapters = ClusterAdapters {
            traffic: cluster.adapter_for(Concern::Traffic).and_then(|n| traffic.get(n).cloned()),
            host: hosts
                .get(host_name)
                .cloned()
                .ok_or_else(|| PluginError::State(format!("no host adapter `{host_name}`")))?,
            replication: cluster.adapter_for(Concern::Replication).and_then(|n| replication.get(n).cloned()),
            probe: cluster.adapter_for(Concern::Probe).and_then(|n| probes.get(n).cloned()),
        };
        clusters.insert(cluster.name.clone(), adapters);
    }
    Ok(BuiltAdapters { adapters: Adapters { clock: Clock::system(), clusters }, twin: None })
}

#[cfg(test)]
mod tests;
