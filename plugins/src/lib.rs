//! pitcrew-plugins: the adapters pitcrew ships.
//!
//! Today: `sim`, the simulated twin every rehearsal runs on. The registry
//! below turns an inventory into the [`Adapters`] the executor calls, either
//! as the inventory names them ([`live_adapters`]) or all on the twin
//! ([`rehearsal_adapters`]).

pub mod sim;

use std::collections::HashMap;
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

/// Every cluster on one sim twin (virtual clock), whatever adapters the
/// inventory names; sim settings come from the cluster's `sim` adapter
/// instance where it has one.
pub fn rehearsal_adapters(inventory: &Inventory, faults: &[Fault]) -> Result<BuiltAdapters, PluginError> {
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
    let clock = Clock::virtual_clock();
    let twin =
        Arc::new(SimTwin::new(inventory, &settings, faults, clock.clone()).map_err(PluginError::UnknownFaultNode)?);
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
    Ok(BuiltAdapters { adapters: Adapters { clock, clusters }, twin: Some(twin) })
}

/// The adapters the inventory names. Only `sim` exists in this build, so a
/// live run is a run on the twin; real adapters add their kinds here.
pub fn live_adapters(inventory: &Inventory) -> Result<BuiltAdapters, PluginError> {
    rehearsal_adapters(inventory, &[])
}

#[cfg(test)]
mod tests;
