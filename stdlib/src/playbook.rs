//! A compiled playbook and the errors compiling one can give.

use std::path::{Path, PathBuf};

use miette::Diagnostic;
use pitcrew_runtime::source::Located;
use pitcrew_runtime::SourceFile;
use rhai::{Engine, AST};

/// A playbook that compiled.
#[derive(Debug, Clone)]
pub struct Playbook {
    pub source: SourceFile,
    pub ast: AST,
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
        Some("declare it with `let` first; playbooks use strict variables".into())
    } else if message.contains("Expecting ';'") {
        Some("end the statement with `;`".into())
    } else {
        None
    }
}

/// Compiles a playbook from disk.
pub fn compile(engine: &Engine, path: &Path) -> Result<Playbook, PlaybookError> {
    let source =
        SourceFile::read(path).map_err(|source| PlaybookError::Read { path: path.display().to_string(), source })?;
    compile_source(engine, source)
}

/// Compiles playbook text.
pub fn compile_source(engine: &Engine, source: SourceFile) -> Result<Playbook, PlaybookError> {
    match engine.compile(&*source.text) {
        Ok(mut ast) => {
            ast.set_source(source.display_name());
            Ok(Playbook { source, ast })
        }
        Err(e) => {
            let line = e.1.line().unwrap_or(1);
            let column = e.1.position().unwrap_or(1);
            let message = e.0.to_string();
            let hint = syntax_hint(&message);
            Err(PlaybookError::Syntax(Box::new(source.error_at(line, column, message, hint))))
        }
    }
}
