//! The Rhai engine pitcrew runs playbooks on: built-ins registered, limits
//! always on, `eval` disabled, strict variables, imports confined to the
//! playbook's directory and library roots.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rhai::module_resolvers::FileModuleResolver;
use rhai::{
    exported_module, Dynamic, Engine, EvalAltResult, Module, ModuleResolver, OptimizationLevel, Position, Scope,
    Shared, AST,
};
use tokio_util::sync::CancellationToken;

use crate::api_cluster::cluster_api;
use crate::api_flow::flow_api;
use crate::api_steps::steps_api;
use crate::modules::{refusal, ModuleFile};

/// Limits of one run; every one is always on.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_operations: u64,
    pub max_call_levels: usize,
    pub max_string_size: usize,
    pub max_array_size: usize,
    pub max_map_size: usize,
    /// Wall-clock time the playbook may run.
    pub deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_operations: 5_000_000,
            max_call_levels: 64,
            max_string_size: 1 << 20,
            max_array_size: 100_000,
            max_map_size: 10_000,
            deadline: Duration::from_secs(24 * 3600),
        }
    }
}

/// Resolves `import "x"` only below the playbook's directory and the
/// library roots; absolute paths and `..` are refused.
/// Modules compiled with the playbook are evaluated from that text (what
/// was checked and hashed is what runs); a path only known at run time is
/// read from disk under the same rules.
pub struct ConfinedResolver {
    roots: Vec<FileModuleResolver>,
    compiled: HashMap<String, AST>,
    evaluated: Mutex<HashMap<String, Shared<Module>>>,
}

impl ConfinedResolver {
    pub fn new(roots: impl IntoIterator<Item = PathBuf>) -> Self {
        Self {
            roots: roots.into_iter().map(FileModuleResolver::new_with_path).collect(),
            compiled: HashMap::new(),
            evaluated: Mutex::new(HashMap::new()),
        }
    }

    /// Serves these compiled modules by their import path.
    pub fn with_modules(mut self, modules: &[ModuleFile]) -> Self {
        self.compiled = modules.iter().map(|m| (m.import.clone(), m.ast.clone())).collect();
        self
    }
}

fn refused_import(path: &str, why: &str, pos: Position) -> Box<EvalAltResult> {
    EvalAltResult::ErrorInModule(
        path.to_string(),
        EvalAltResult::ErrorRuntime(
            format!("import `{path}` refused: {why}; imports resolve from the playbook's directory and --lib roots")
                .into(),
            pos,
        )
        .into(),
        pos,
    )
    .into()
}

impl ModuleResolver for ConfinedResolver {
    fn resolve(
        &self,
        engine: &Engine,
        source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<Shared<Module>, Box<EvalAltResult>> {
        if let Some(why) = refusal(path) {
            return Err(refused_import(path, why, pos));
        }
        if let Some(ast) = self.compiled.get(path) {
            if let Some(module) = self.evaluated.lock().ok().and_then(|m| m.get(path).cloned()) {
                return Ok(module);
            }
            let name = ast.source().unwrap_or(path).to_string();
            let module: Shared<Module> = Module::eval_ast_as_new(Scope::new(), ast, engine)
                .map_err(|e| Box::new(EvalAltResult::ErrorInModule(name, e, pos)))?
                .into();
            if let Ok(mut evaluated) = self.evaluated.lock() {
                evaluated.insert(path.to_string(), module.clone());
            }
            return Ok(module);
        }
        let mut last = None;
        for root in &self.roots {
            match root.resolve(engine, None, path, pos) {
                Ok(module) => return Ok(module),
                Err(e) if matches!(*e, EvalAltResult::ErrorModuleNotFound(..)) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        let _ = source;
        Err(last.unwrap_or_else(|| EvalAltResult::ErrorModuleNotFound(path.to_string(), pos).into()))
    }
}

/// An engine with pitcrew's built-ins and limits. `cancel` and the deadline
/// stop the script between any two operations.
pub fn new_engine(limits: &Limits, roots: Vec<PathBuf>, cancel: Option<CancellationToken>) -> Engine {
    let mut engine = Engine::new();
    engine.set_optimization_level(OptimizationLevel::Simple);
    engine.set_strict_variables(true);
    engine.disable_symbol("eval");
    engine.set_max_operations(limits.max_operations);
    engine.set_max_call_levels(limits.max_call_levels);
    engine.set_max_expr_depths(128, 64);
    engine.set_max_string_size(limits.max_string_size);
    engine.set_max_array_size(limits.max_array_size);
    engine.set_max_map_size(limits.max_map_size);
    engine.set_max_modules(64);
    engine.set_max_variables(10_000);
    engine.set_module_resolver(ConfinedResolver::new(roots));
    engine.register_global_module(exported_module!(cluster_api).into());
    engine.register_global_module(exported_module!(steps_api).into());
    engine.register_global_module(exported_module!(flow_api).into());
    let deadline = Instant::now() + limits.deadline;
    engine.on_progress(move |ops| {
        if ops % 128 != 0 {
            return None;
        }
        if cancel.as_ref().is_some_and(CancellationToken::is_cancelled) {
            return Some(Dynamic::from("cancelled"));
        }
        if Instant::now() > deadline {
            return Some(Dynamic::from("deadline"));
        }
        None
    });
    engine
}
