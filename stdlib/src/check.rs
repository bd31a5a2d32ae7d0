//! Static checks of a compiled playbook and every module it imports, before
//! anything runs: unknown functions (with a "did you mean"), wrong argument
//! counts for built-ins and module functions, `cluster("x")` naming a
//! cluster the inventory lacks, and modules that act when imported.
//! (Unresolvable and refused imports, and `eval`, fail compilation itself.)

use std::collections::{BTreeMap, BTreeSet};

use pitcrew_runtime::{Inventory, SourceFile};
use rhai::{ASTNode, Engine, Expr, FnAccess, Stmt, AST};
use serde_json::Value;

use crate::modules::{chain_text, imports, ModuleFile};
use crate::playbook::Playbook;

/// Something the operator should fix, located in the playbook.
#[derive(Debug, Clone)]
pub struct Finding {
    /// The playbook or module file it is in.
    pub source: SourceFile,
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

/// Built-ins that act on the cluster or the outside world when called.
fn acts(name: &str, ours: &BTreeSet<String>) -> bool {
    ours.contains(name) || matches!(name, "print" | "debug")
}

/// Checks a playbook and its modules; `inventory` enables the cluster-name check.
pub fn check(engine: &Engine, playbook: &Playbook, inventory: Option<&Inventory>) -> Vec<Finding> {
    let (known, ours) = known(engine);
    let mut findings = check_file(&playbook.source, &playbook.ast, None, playbook, &known, &ours, inventory);
    for module in &playbook.modules {
        findings.extend(side_effects(module, &ours));
        findings.extend(check_file(&module.source, &module.ast, Some(module), playbook, &known, &ours, inventory));
    }
    findings
}

/// A module may define functions and constants and import others; any other
/// top-level statement runs when the module is imported.
fn side_effects(module: &ModuleFile, ours: &BTreeSet<String>) -> Vec<Finding> {
    let mut findings = Vec::new();
    for stmt in module.ast.statements() {
        let pos = stmt.position();
        let acting = match stmt {
            Stmt::Import(..) | Stmt::Export(..) | Stmt::Noop(..) => None,
            Stmt::Var(var, ..) => first_acting_call(ASTNode::Expr(&var.1), ours).map(|name| format!("calls `{name}`")),
            other => Some(
                first_acting_call(ASTNode::Stmt(other), ours)
                    .map_or_else(|| "runs a statement".into(), |n| format!("calls `{n}`")),
            ),
        };
        if let Some(what) = acting {
            findings.push(Finding {
                source: module.source.clone(),
                line: pos.line().unwrap_or(1),
                column: pos.position().unwrap_or(1),
                message: format!("module `{}` {what} when it is imported", module.import),
                hint: Some(format!(
                    "modules may only define functions, constants and imports; move this into a function the playbook calls\n{}",
                    module.chain_text()
                )),
            });
        }
    }
    findings
}

/// The first call to an acting built-in inside an expression or statement.
fn first_acting_call(node: ASTNode<'_>, ours: &BTreeSet<String>) -> Option<String> {
    let mut found = None;
    let mut visit = |path: &[ASTNode]| {
        if let Some(ASTNode::Expr(Expr::FnCall(call, _)) | ASTNode::Stmt(Stmt::FnCall(call, _))) = path.last() {
            if call.namespace.is_empty() && acts(call.name.as_str(), ours) {
                found = Some(call.name.to_string());
            }
        }
        found.is_none()
    };
    match node {
        ASTNode::Expr(expr) => expr.walk(&mut Vec::new(), &mut visit),
        ASTNode::Stmt(stmt) => stmt.walk(&mut Vec::new(), &mut visit),
        _ => true,
    };
    found
}

/// A module's functions by name: the argument counts each takes, and
/// whether it is private.
type Functions = BTreeMap<String, (BTreeSet<usize>, bool)>;

fn module_functions(ast: &AST) -> Functions {
    let mut functions = Functions::new();
    for f in ast.iter_functions() {
        let entry = functions.entry(f.name.to_string()).or_default();
        entry.0.insert(f.params.len());
        entry.1 = f.access == FnAccess::Private;
    }
    functions
}

fn closest<'a>(candidates: impl Iterator<Item = &'a String>, name: &str) -> Option<&'a String> {
    candidates
        .map(|k| (strsim::jaro_winkler(k, name), k))
        .filter(|(score, _)| *score > 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

fn check_file(
    source: &SourceFile,
    ast: &AST,
    module: Option<&ModuleFile>,
    playbook: &Playbook,
    known: &BTreeMap<String, BTreeSet<usize>>,
    ours: &BTreeSet<String>,
    inventory: Option<&Inventory>,
) -> Vec<Finding> {
    let mut known = known.clone();
    for f in ast.iter_functions() {
        known.entry(f.name.to_string()).or_default().insert(f.params.len());
    }
    // alias -> the functions of the module it names
    let aliases: BTreeMap<String, (String, Functions)> = imports(ast)
        .into_iter()
        .filter_map(|(import, _, _, alias)| {
            let m = playbook.modules.iter().find(|m| m.import == import)?;
            Some((alias?, (import, module_functions(&m.ast))))
        })
        .collect();
    let chain = module.map(|m| format!("\n{}", chain_text(&m.chain))).unwrap_or_default();
    let mut findings = Vec::new();
    let mut push = |line: usize, column: usize, message: String, hint: String| {
        findings.push(Finding { source: source.clone(), line, column, message, hint: Some(format!("{hint}{chain}")) });
    };
    ast.walk(&mut |path: &[ASTNode]| {
        // Calls appear as expressions, and as statements when their value is unused.
        let (call, pos) = match path.last() {
            Some(ASTNode::Expr(Expr::FnCall(call, pos))) => (call, pos),
            Some(ASTNode::Stmt(Stmt::FnCall(call, pos))) => (call, pos),
            _ => return true,
        };
        let name = call.name.as_str();
        let (line, column) = (pos.line().unwrap_or(1), pos.position().unwrap_or(1));
        if !call.namespace.is_empty() {
            let alias = call.namespace.path.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join("::");
            if let Some((import, functions)) = aliases.get(&alias) {
                match functions.get(name) {
                    None => push(
                        line,
                        column,
                        format!("module `{import}` has no function `{name}`"),
                        closest(functions.keys(), name).map_or_else(
                            || format!("it defines: {}", functions.keys().cloned().collect::<Vec<_>>().join(", ")),
                            |k| format!("did you mean `{alias}::{k}`?"),
                        ),
                    ),
                    Some((_, true)) => push(
                        line,
                        column,
                        format!("`{name}` is private to module `{import}`"),
                        "remove `private` from its definition to call it from outside".into(),
                    ),
                    Some((counts, _)) if !counts.contains(&call.args.len()) => {
                        let takes: Vec<String> = counts.iter().map(ToString::to_string).collect();
                        push(
                            line,
                            column,
                            format!(
                                "`{alias}::{name}` takes {} argument(s), not {}",
                                takes.join(" or "),
                                call.args.len()
                            ),
                            format!("see its definition in module `{import}`"),
                        );
                    }
                    _ => {}
                }
            }
            return true;
        }
        if call.op_token.is_some() || INTRINSICS.contains(&name) || name.starts_with("anon$") {
            return true;
        }
        match known.get(name) {
            None => push(
                line,
                column,
                format!("unknown function `{name}`"),
                closest(known.keys(), name).map_or_else(
                    || "`pitcrew docs` lists the built-ins".to_string(),
                    |k| format!("did you mean `{k}`?"),
                ),
            ),
            Some(counts) if ours.contains(name) && !counts.contains(&call.args.len()) => {
                let takes: Vec<String> = counts.iter().map(ToString::to_string).collect();
                push(
                    line,
                    column,
                    format!("`{name}` takes {} argument(s), not {}", takes.join(" or "), call.args.len()),
                    "`pitcrew docs` shows each built-in's signature".into(),
                );
            }
            _ => {}
        }
        if let (Some(inventory), "cluster", Some(Expr::StringConstant(cluster, at))) =
            (inventory, name, call.args.first())
        {
            if inventory.cluster(cluster).is_none() {
                let names: Vec<&str> = inventory.clusters.iter().map(|c| c.name.as_str()).collect();
                push(
                    at.line().unwrap_or(line),
                    at.position().unwrap_or(column),
                    format!("the inventory has no cluster `{cluster}`"),
                    format!("clusters: {}", names.join(", ")),
                );
            }
        }
        true
    });
    findings
}
