//! Modules a playbook imports, found and compiled with the playbook, so
//! that a bad import is an error before anything runs, every finding can
//! point into the module's own file with the chain of imports that reached
//! it, and a run executes exactly the text that was checked.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use pitcrew_runtime::SourceFile;
use rhai::{ASTNode, Engine, Expr, Stmt, AST};

use crate::playbook::{syntax_error, PlaybookError};

/// Where an `import` statement is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportSite {
    pub file: String,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for ImportSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// One imported module file, compiled.
#[derive(Debug, Clone)]
pub struct ModuleFile {
    /// The path as the `import` statement wrote it, e.g. `lib/standby`.
    pub import: String,
    pub source: SourceFile,
    pub ast: AST,
    /// The imports that led here, playbook first.
    pub chain: Vec<ImportSite>,
}

impl ModuleFile {
    /// "imported at a.rhai:3:1, from b.rhai:2:1" for hints.
    pub fn chain_text(&self) -> String {
        chain_text(&self.chain)
    }
}

/// The chain of imports in words, innermost first.
pub fn chain_text(chain: &[ImportSite]) -> String {
    let sites: Vec<String> = chain.iter().rev().map(ToString::to_string).collect();
    format!("import chain: {}", sites.join(" <- "))
}

/// Why an import path is refused, if it is.
pub fn refusal(path: &str) -> Option<&'static str> {
    let p = Path::new(path);
    if p.is_absolute() {
        Some("absolute paths are not allowed")
    } else if p.components().any(|c| matches!(c, Component::ParentDir)) {
        Some("`..` is not allowed")
    } else {
        None
    }
}

/// The file an import path names under a root (the `.rhai` extension is
/// implied, as Rhai's file resolver does).
pub fn file_under(root: &Path, import: &str) -> PathBuf {
    root.join(import).with_extension("rhai")
}

/// `import "x" as y;` statements of an AST with a constant path: the path,
/// its position and the alias.
pub fn imports(ast: &AST) -> Vec<(String, usize, usize, Option<String>)> {
    let mut found = Vec::new();
    ast.walk(&mut |path: &[ASTNode]| {
        if let Some(ASTNode::Stmt(Stmt::Import(import, pos))) = path.last() {
            let (expr, alias) = &**import;
            let alias = (!alias.name.is_empty()).then(|| alias.name.to_string());
            if let Expr::StringConstant(text, at) = expr {
                let at = if at.is_none() { *pos } else { *at };
                found.push((text.to_string(), at.line().unwrap_or(1), at.position().unwrap_or(1), alias));
            }
        }
        true
    });
    found
}

/// Finds and compiles every module the playbook imports, transitively,
/// from `roots` in order (first match wins).
pub fn load(
    engine: &Engine,
    playbook: &SourceFile,
    ast: &AST,
    roots: &[PathBuf],
) -> Result<Vec<ModuleFile>, PlaybookError> {
    let mut loaded: BTreeMap<String, ModuleFile> = BTreeMap::new();
    let mut order = Vec::new();
    // (file, its AST, the chain that reached it)
    let mut pending = vec![(playbook.clone(), ast.clone(), Vec::<ImportSite>::new())];
    while let Some((file, ast, chain)) = pending.pop() {
        for (import, line, column, _) in imports(&ast) {
            let site = ImportSite { file: file.display_name(), line, column };
            let mut here = chain.clone();
            here.push(site);
            let located = |message: String, hint: String| {
                let mut help = hint;
                if !chain.is_empty() {
                    help.push_str(&format!("\n{}", chain_text(&chain)));
                }
                PlaybookError::Syntax(Box::new(file.error_at(line, column, message, Some(help))))
            };
            if let Some(why) = refusal(&import) {
                return Err(located(
                    format!("import `{import}` refused: {why}"),
                    "imports resolve from the playbook's directory and --lib roots".into(),
                ));
            }
            let Some(path) = roots.iter().map(|r| file_under(r, &import)).find(|p| p.is_file()) else {
                let looked: Vec<String> = roots.iter().map(|r| file_under(r, &import).display().to_string()).collect();
                return Err(located(
                    format!("cannot find module `{import}`"),
                    format!("looked for {}; add a library root with --lib DIR or PITCREW_LIB", looked.join(", ")),
                ));
            };
            if here.iter().any(|s| Path::new(&s.file) == path) {
                let cycle: Vec<String> = here.iter().map(|s| s.file.clone()).collect();
                return Err(located(
                    format!("import `{import}` forms a cycle: {} -> {}", cycle.join(" -> "), path.display()),
                    "modules may not import each other in a circle; move the shared part into a third module".into(),
                ));
            }
            if loaded.contains_key(&import) {
                continue;
            }
            let source = SourceFile::read(&path)
                .map_err(|source| PlaybookError::Read { path: path.display().to_string(), source })?;
            let mut module_ast = engine.compile(&*source.text).map_err(|e| {
                let mut error = syntax_error(&source, &e);
                let note = chain_text(&here);
                error.help = Some(error.help.take().map_or(note.clone(), |h| format!("{h}\n{note}")));
                PlaybookError::Syntax(Box::new(error))
            })?;
            module_ast.set_source(source.display_name());
            let module = ModuleFile { import: import.clone(), source, ast: module_ast, chain: here };
            pending.push((module.source.clone(), module.ast.clone(), module.chain.clone()));
            order.push(import.clone());
            loaded.insert(import, module);
        }
    }
    Ok(order.into_iter().filter_map(|name| loaded.remove(&name)).collect())
}
