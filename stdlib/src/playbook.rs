//! A compiled playbook and the errors compiling one can give.

use std::path::{Path, PathBuf};

use miette::Diagnostic;
use pitcrew_runtime::source::Located;
use pitcrew_runtime::SourceFile;
use rhai::{Engine, AST};

use crate::modules::{self, ModuleFile};

/// A playbook that compiled.
#[derive(Debug, Clone)]
pub struct Playbook {
    pub source: SourceFile,
    pub ast: AST,
    /// The modules it imports, transitively, compiled from the files found.
    pub modules: Vec<ModuleFile>,
    /// Library roots searched after the playbook's directory.
    pub lib_roots: Vec<PathBuf>,
}

impl Playbook {
    /// The directory imports resolve from first.
    pub fn dir(&self) -> PathBuf {
        self.source
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    }

    /// Where imports resolve from, first match wins.
    pub fn roots(&self) -> Vec<PathBuf> {
        std::iter::once(self.dir()).chain(self.lib_roots.iter().cloned()).collect()
    }

    /// The playbook's or a module's source, by display name.
    pub fn file_named(&self, name: &str) -> Option<(&SourceFile, Option<&ModuleFile>)> {
        if self.source.display_name() == name {
            return Some((&self.source, None));
        }
        self.modules.iter().find(|m| m.source.display_name() == name).map(|m| (&m.source, Some(m)))
    }

    /// Every file a run of this playbook reads: the playbook and its modules.
    pub fn files(&self) -> impl Iterator<Item = &SourceFile> {
        std::iter::once(&self.source).chain(self.modules.iter().map(|m| &m.source))
    }
}

/// A playbook that does not compile.
#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum PlaybookError {
    #[error("cannot read playbook {path}")]
    #[diagnostic(code(pitcrew::playbook::read), help("check the playbook path"))]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    #[diagnostic(transparent)]
    Syntax(Box<Located>),
}

fn syntax_hint(message: &str) -> Option<String> {
    if message.contains("eval") {
        Some("eval is disabled in playbooks; call the built-ins directly".into())
    } else if message.contains("Variable not found") || message.contains("Undefined variable") {
        Some("declare it with `let` first (playbooks use strict variables); a function sees only its parameters, so pass it in".into())
    } else if message.contains("Expecting ';'") {
        Some("end the statement with `;`".into())
    } else if message.starts_with("Unexpected") {
        Some("something is missing before this: a value, an operand or a closing bracket".into())
    } else if message.starts_with("Expecting") {
        Some("a bracket, comma or quote before this is probably unclosed".into())
    } else if message.contains("reserved keyword") {
        Some("this word is reserved by Rhai; choose another name".into())
    } else {
        Some("`pitcrew docs` and the README's playbook tour show the syntax pitcrew playbooks use".into())
    }
}

/// A parse error located in its file.
pub fn syntax_error(source: &SourceFile, e: &rhai::ParseError) -> Located {
    let line = e.1.line().unwrap_or(1);
    let column = e.1.position().unwrap_or(1);
    let message = e.0.to_string();
    let hint = syntax_hint(&message);
    source.error_at(line, column, message, hint)
}

/// Compiles a playbook from disk with the modules it imports, found in its
/// own directory and then `lib_roots`.
pub fn compile(engine: &Engine, path: &Path, lib_roots: &[PathBuf]) -> Result<Playbook, PlaybookError> {
    let source =
        SourceFile::read(path).map_err(|source| PlaybookError::Read { path: path.display().to_string(), source })?;
    compile_source(engine, source, lib_roots)
}

/// Compiles playbook text (imports resolve as for [`compile`]).
pub fn compile_source(engine: &Engine, source: SourceFile, lib_roots: &[PathBuf]) -> Result<Playbook, PlaybookError> {
    let mut ast =
        engine.compile(&*source.text).map_err(|e| PlaybookError::Syntax(Box::new(syntax_error(&source, &e))))?;
    ast.set_source(source.display_name());
    let mut playbook = Playbook { source, ast, modules: Vec::new(), lib_roots: lib_roots.to_vec() };
    playbook.modules = modules::load(engine, &playbook.source, &playbook.ast, &playbook.roots())?;
    Ok(playbook)
}
