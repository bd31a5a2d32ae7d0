//! pitcrew-plugins: the adapters pitcrew ships.
//!
//! Today: `sim`, the simulated twin every rehearsal runs on. The registry
//! below turns an inventory into the [`Adapters`] the executor calls, either
//! as the inventory names them ([`live_adapters`]) or all on a twin
//! ([`rehearsal_twin`], [`saved_twin`]).

pub mod sim;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::Diagnostic;
use pitcrew_runtime::adapter::{Adapters, ClusterAdapters};
use pitcrew_runtime::inventory::{Concern, Seg};
use pitcrew_runtime::{Clock, Inventory, InventoryError};

use sim::{Fault, SimAdapter, SimSettings, SimTwin, UnknownFaultNode};

/// Adapter kinds this build knows.
pub const KINDS: &[&str] = &["sim"];

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

fn sim_settings(inventory: &Inventory, adapter: &str) -> Result<SimSettings, InventoryError> {
    let spec = &inventory.adapters[adapter];
    if spec.settings.is_null() {
        return Ok(SimSettings::default());
    }
    serde_yaml::from_value(spec.settings.clone()).map_err(|e| {
        let message = e.to_string();
        let key = message.split('`').nth(1).unwrap_or("settings").to_string();
        inventory.error_at(
            &[Seg::Key("adapters"), Seg::Key(adapter), Seg::Key("settings"), Seg::Key(&key)],
            format!("sim adapter `{adapter}`: {message}"),
            Some("sim settings: rps, connections, drain_rate, patch_time, restore_time, reboot_time, switchover_time, resync_time, probe_requests, version, patch_to".into()),
        )
    })
}

fn check_kinds(inventory: &Inventory) -> Result<(), InventoryError> {
    for (name, spec) in &inventory.adapters {
        if !KINDS.contains(&spec.kind.as_str()) {
            return Err(inventory.error_at(
                &[Seg::Key("adapters"), Seg::Key(name), Seg::Key("kind")],
                format!("adapter `{name}` has unknown kind `{}`", spec.kind),
                Some(format!("this build of pitcrew knows: {}", KINDS.join(", "))),
            ));
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
            Some(name) => sim_settings(inventory, name)?,
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

/// Where the persistent sim world of an inventory lives in a state dir.
pub fn world_path(sim_dir: &Path, inventory: &Inventory) -> PathBuf {
    let canonical = std::fs::canonicalize(&inventory.source.path).unwrap_or_else(|_| inventory.source.path.clone());
    let stem = inventory.source.path.file_stem().and_then(|s| s.to_str()).unwrap_or("inventory");
    let id = pitcrew_runtime::journal::sha256_hex(canonical.display().to_string().as_bytes());
    sim_dir.join(format!("world-{stem}-{}.json", &id[..12]))
}

/// The adapters the inventory names. Only `sim` exists in this build: a
/// live run drives the persistent sim world of the inventory (kept in the
/// state dir's `sim/`, created from the inventory the first time), so
/// runs, drift and resume see one world that changes only through them.
pub fn live_adapters(inventory: &Inventory, sim_dir: Option<&Path>) -> Result<BuiltAdapters, PluginError> {
    let Some(dir) = sim_dir else { return rehearsal_adapters(inventory, &[]) };
    let path = world_path(dir, inventory);
    if path.exists() {
        saved_twin(inventory, &path)
    } else {
        rehearsal_twin(inventory, &[], Some(path))
    }
}

#[cfg(test)]
mod tests;
