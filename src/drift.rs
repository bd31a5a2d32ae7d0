//! `pitcrew drift`: gather facts now; report peers that differ and nodes
//! whose facts changed since the last live run recorded them.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use pitcrew_plugins::live_adapters;
use pitcrew_plugins::sim::{Fault, FaultEffect};
use pitcrew_runtime::drift::{compare_baseline, compare_peers, flatten, read_baseline, DriftReport};
use pitcrew_runtime::event::NullSink;
use pitcrew_runtime::journal::StateDir;
use pitcrew_runtime::{Executor, Inventory};

use crate::app::{DRIFT, INVALID, SUCCESS};
use crate::render;

pub fn run(state_dir: &Path, inventory: &Path, only: Option<&str>, json: bool, faults: &[Fault]) -> u8 {
    let inventory = match Inventory::load(inventory) {
        Ok(i) => Arc::new(i),
        Err(e) => {
            render::report(e);
            return INVALID;
        }
    };
    let state = match StateDir::open(state_dir) {
        Ok(s) => s,
        Err(e) => {
            render::report(e);
            return INVALID;
        }
    };
    if let Some(bad) = faults.iter().find(|f| !matches!(f.effect, FaultEffect::Drift { .. })) {
        eprintln!("error: `{bad}` is not a drift fault; drift takes drift:NODE:PACKAGE=VERSION only");
        return INVALID;
    }
    let built = match live_adapters(&inventory, Some(&state.sim_dir())) {
        Ok(b) => b,
        Err(e) => {
            render::report(e);
            return INVALID;
        }
    };
    if let Some(twin) = &built.twin {
        for fault in faults {
            if let Err(e) = twin.apply_drift(fault) {
                eprintln!("error: {fault}: {e}");
                return INVALID;
            }
        }
    }
    let clusters: Vec<_> = match only {
        Some(name) => match inventory.cluster(name) {
            Some(c) => vec![c.clone()],
            None => {
                let known: Vec<&str> = inventory.clusters.iter().map(|c| c.name.as_str()).collect();
                eprintln!("error: no cluster `{name}` in the inventory\n  help: clusters: {}", known.join(", "));
                return INVALID;
            }
        },
        None => inventory.clusters.clone(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return INVALID;
        }
    };
    let exec = Executor::new(inventory.clone(), built.adapters, runtime.handle().clone(), Arc::new(NullSink));
    let started = std::time::Instant::now();
    let mut report = DriftReport::default();
    let mut compared = 0usize;
    for cluster in &clusters {
        let mut now = BTreeMap::new();
        for node in &cluster.nodes {
            match exec.facts(&node.name) {
                Ok(facts) => {
                    let flat = flatten(&serde_json::to_value(&facts).unwrap_or_default());
                    compared += flat.len();
                    if let Some(baseline) = read_baseline(&state.facts_dir(), &node.name) {
                        let before = flatten(&baseline["facts"]);
                        report.changed.extend(compare_baseline(&cluster.name, &node.name, &before, &flat));
                    }
                    now.insert(node.name.clone(), flat);
                }
                Err(_) => report.unreachable.push(node.name.clone()),
            }
        }
        report.peers.extend(compare_peers(&cluster.name, &now, &cluster.critical_facts));
    }
    let took = started.elapsed();
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => render::out(&text),
            Err(e) => eprintln!("error: cannot write JSON: {e}"),
        }
    } else {
        render::out(text(&report).trim_end());
    }
    eprintln!(
        "drift: {} peer difference(s), {} change(s) since the last run, {compared} facts compared in {} ms",
        report.peers.len(),
        report.changed.len(),
        took.as_millis()
    );
    if report.is_clean() {
        SUCCESS
    } else {
        DRIFT
    }
}

fn text(report: &DriftReport) -> String {
    let mut out = String::new();
    if !report.peers.is_empty() {
        out.push_str("peers that differ:\n");
        for d in &report.peers {
            let values: Vec<String> =
                d.values.iter().map(|(n, v)| format!("{n}={}", v.as_deref().unwrap_or("(missing)"))).collect();
            let mark = if d.critical { "  CRITICAL" } else { "" };
            out.push_str(&format!("  {:<10} {:<28} {}{mark}\n", d.cluster, d.fact, values.join("  ")));
        }
    }
    if !report.changed.is_empty() {
        out.push_str("changed since the last run, with no pitcrew step to explain it:\n");
        for c in &report.changed {
            out.push_str(&format!(
                "  {:<10} {:<10} {:<28} {} -> {}\n",
                c.cluster,
                c.node,
                c.fact,
                c.before.as_deref().unwrap_or("(missing)"),
                c.now.as_deref().unwrap_or("(missing)")
            ));
        }
    }
    if !report.unreachable.is_empty() {
        out.push_str(&format!("unreachable: {}\n", report.unreachable.join(", ")));
    }
    if report.is_clean() {
        out.push_str("no drift\n");
    }
    out
}
