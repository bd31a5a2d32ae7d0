//! Source text kept beside what was parsed from it, so every error the user
//! can cause points at a file, line and column with a snippet (miette renders
//! it in the binary; the runtime only builds the diagnostic).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::{Diagnostic, NamedSource, SourceSpan};

/// A file the operator wrote, as read from disk.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: Arc<str>,
}

impl SourceFile {
    pub fn new(path: impl Into<PathBuf>, text: impl Into<Arc<str>>) -> Self {
        Self { path: path.into(), text: text.into() }
    }

    /// Reads a file; the error names the path.
    pub fn read(path: &Path) -> Result<Self, std::io::Error> {
        std::fs::read_to_string(path).map(|text| Self::new(path, text))
    }

    pub fn display_name(&self) -> String {
        self.path.display().to_string()
    }

    /// The miette source used in diagnostics.
    pub fn named(&self) -> NamedSource<Arc<str>> {
        NamedSource::new(self.display_name(), self.text.clone())
    }

    /// Byte offset of a 1-based line and column (columns count characters).
    /// Positions past the end clamp to the end of the text.
    pub fn offset(&self, line: usize, column: usize) -> usize {
        let mut offset = 0;
        for (index, text) in self.text.split_inclusive('\n').enumerate() {
            if index + 1 == line {
                let within: usize = text.chars().take(column.saturating_sub(1)).map(char::len_utf8).sum();
                return offset + within.min(text.trim_end_matches('\n').len());
            }
            offset += text.len();
        }
        self.text.len()
    }

    /// A span covering the token that starts at a 1-based line and column:
    /// up to the next whitespace, comma or bracket, at least one character.
    pub fn span_at(&self, line: usize, column: usize) -> SourceSpan {
        let start = self.offset(line, column);
        let rest = &self.text[start..];
        let len = rest
            .find(|c: char| c.is_whitespace() || matches!(c, ',' | '}' | ']' | ')' | ';'))
            .unwrap_or(rest.len())
            .max(rest.chars().next().map_or(0, char::len_utf8));
        SourceSpan::new(start.into(), len)
    }

    /// 1-based line and column of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, column)
    }
}

/// An error at a line and column of a file the operator wrote, rendered
/// with a snippet of the file and a hint.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{file}:{line}:{column}: {message}")]
pub struct Located {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
    #[source_code]
    pub src: NamedSource<Arc<str>>,
    #[label("here")]
    pub span: SourceSpan,
    #[help]
    pub help: Option<String>,
}

impl SourceFile {
    /// An error at a 1-based line and column of this file.
    pub fn error_at(&self, line: usize, column: usize, message: String, help: Option<String>) -> Located {
        Located {
            file: self.display_name(),
            line,
            column,
            message,
            src: self.named(),
            span: self.span_at(line, column),
            help,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_and_line_columns_round_trip() {
        let src = SourceFile::new("x.yaml", "a: 1\nbeta: two\n");
        let offset = src.offset(2, 7);
        assert_eq!(&src.text[offset..offset + 3], "two");
        assert_eq!(src.line_col(offset), (2, 7));
        let span = src.span_at(2, 1);
        assert_eq!(span.len(), "beta:".len());
    }
}
