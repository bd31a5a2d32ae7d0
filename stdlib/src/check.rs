//! Static checks of a compiled playbook, before anything runs: unknown
//! functions (with a "did you mean"), wrong argument counts for built-ins,
//! and `cluster("x")` naming a cluster the inventory lacks.

use std::collections::{BTreeMap, BTreeSet};

use pitcrew_runtime::Inventory;
use rhai::{ASTNode, Engine, Expr, Stmt};
use serde_json::Value;

use crate::playbook::Playbook;

/// Something the operator should fix, located in the playbook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub hint: Option<String>,
}

/// Names the engine resolves itself, not through registered functions.
const INTRINSICS: &[&str] =
    &["Fn", "call", "curry", "type_of", "print", "debug", "is_def_var", "is_def_fn", "is_shared", "throw"];

/// Known function names with the argument counts each accepts; `ours` marks
/// pitcrew's built-ins (whose counts are checked).
fn known(engine: &Engine) -> (BTreeMap<String, BTreeSet<usize>>, BTreeSet<String>) {
    let mut all: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
    let mut ours = BTreeSet::new();
    for (include_std, mark) in [(true, false), (false, true)] {
        let metadata: Value = engine
            .gen_fn_metadata_to_json(include_std)
            .ok()
            .and_then(|j| serde_json::from_str(&j).ok())
            .unwrap_or_default();
        for f in metadata["functions"].as_array().into_iter().flatten() {
            let name = f["name"].as_str().unwrap_or_default().to_string();
            let params = f["params"].as_array().map_or(0, Vec::len);
            all.entry(name.clone()).or_default().insert(params);
            if mark {
                ours.insert(name);
            }
        }
    }
    (all, ours)
}

/// Checks a playbook; `inventory` enables the cluster-name check.
pub fn check(engine: &Engine, playbook: &Playbook, inventory: Option<&Inventory>) -> Vec<Finding> {
    let (mut known, ours) = known(engine);
    for f in playbook.ast.iter_functions() {
        known.entry(f.name.to_string()).or_default().insert(f.params.len());
    }
    let mut findings = Vec::new();
    playbook.ast.walk(&mut |path: &[ASTNode]| {
        // Calls appear as expressions, and as statements when their value is unused.
        let (call, pos) = match path.last() {
            Some(ASTNode::Expr(Expr::FnCall(call, pos))) => (call, pos),
            Some(ASTNode::Stmt(Stmt::FnCall(call, pos))) => (call, pos),
            _ => return true,
        };
        let name = call.name.as_str();
        if call.op_token.is_some()
            || !call.namespace.is_empty()
            || INTRINSICS.contains(&name)
            || name.starts_with("anon$")
        {
            return true;
        }
        let (line, column) = (pos.line().unwrap_or(1), pos.position().unwrap_or(1));
        match known.get(name) {
            None => {
                let best = known
                    .keys()
                    .map(|k| (strsim::jaro_winkler(k, name), k))
                    .filter(|(score, _)| *score > 0.85)
                    .max_by(|a, b| a.0.total_cmp(&b.0));
                findings.push(Finding {
                    line,
                    column,
                    message: format!("unknown function `{name}`"),
                    hint: Some(best.map_or_else(
                        || "`pitcrew docs` lists the built-ins".to_string(),
                        |(_, k)| format!("did you mean `{k}`?"),
                    )),
                });
            }
            Some(counts) if ours.contains(name) && !counts.contains(&call.args.len()) => {
                let takes: Vec<String> = counts.iter().map(ToString::to_string).collect();
                findings.push(Finding {
                    line,
                    column,
                    message: format!("`{name}` takes {} argument(s), not {}", takes.join(" or "), call.args.len()),
                    hint: Some("`pitcrew docs` shows each built-in's signature".into()),
                });
            }
            _ => {}
        }
        if let (Some(inventory), "cluster", Some(Expr::StringConstant(cluster, at))) =
            (inventory, name, call.args.first())
        {
            if inventory.cluster(cluster).is_none() {
                let names: Vec<&str> = inventory.clusters.iter().map(|c| c.name.as_str()).collect();
                findings.push(Finding {
                    line: at.line().unwrap_or(line),
                    column: at.position().unwrap_or(column),
                    message: format!("the inventory has no cluster `{cluster}`"),
                    hint: Some(format!("clusters: {}", names.join(", "))),
                });
            }
        }
        true
    });
    findings
}
