//! Just enough Markdown for the documentation tests: fenced blocks, the
//! prose outside them, headings and their anchors, and link targets.
//!
//! Written by hand rather than with a Markdown crate: the README and the
//! book use fences that start at the line start, ATX headings and inline
//! links only, and a test that reads them the way GitHub and mdBook do needs
//! nothing more.

/// A fenced code block.
pub struct Fence {
    /// The info string after the opening backticks (`sh`, `text`, `rhai`).
    pub info: String,
    pub body: String,
    /// 1-based line of the opening fence.
    pub line: usize,
}

/// Every fenced block, in order.
pub fn fences(text: &str) -> Vec<Fence> {
    let mut out = Vec::new();
    let mut open: Option<Fence> = None;
    for (i, line) in text.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => {
                open = Some(Fence { info: info.trim().to_string(), body: String::new(), line: i + 1 })
            }
            (Some(_), Some(_)) => out.extend(open.take()),
            (Some(fence), None) => {
                fence.body.push_str(line);
                fence.body.push('\n');
            }
            (None, None) => {}
        }
    }
    out
}

/// The text with fenced blocks and inline code spans blanked out, line
/// breaks kept, so that offsets still give line numbers.
pub fn prose(text: &str) -> String {
    let mut outside = String::with_capacity(text.len());
    let mut in_fence = false;
    for line in text.split_inclusive('\n') {
        let fence = line.starts_with("```");
        if fence || in_fence {
            outside.push_str(&blank(line));
        } else {
            outside.push_str(line);
        }
        if fence {
            in_fence = !in_fence;
        }
    }
    blank_code_spans(&outside)
}

/// `text` with every character but line breaks turned into a space.
fn blank(text: &str) -> String {
    text.chars().map(|c| if c == '\n' { '\n' } else { ' ' }).collect()
}

/// Blanks inline code: a run of backticks up to the next run of the same
/// length. A span may cross a line break inside its paragraph, not a blank
/// line.
fn blank_code_spans(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '`' {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let run = chars[i..].iter().take_while(|&&c| c == '`').count();
        match closing_run(&chars, i + run, run) {
            Some(end) => {
                out.push_str(&blank(&chars[i..end].iter().collect::<String>()));
                i = end;
            }
            None => {
                out.extend(&chars[i..i + run]);
                i += run;
            }
        }
    }
    out
}

/// The end of the backtick run of length `run` that closes a span opened
/// before `from`, or `None` when the paragraph ends first.
fn closing_run(chars: &[char], from: usize, run: usize) -> Option<usize> {
    let mut j = from;
    while j < chars.len() {
        if chars[j] == '\n' && next_line_is_blank(&chars[j + 1..]) {
            return None;
        }
        if chars[j] == '`' {
            let len = chars[j..].iter().take_while(|&&c| c == '`').count();
            if len == run {
                return Some(j + len);
            }
            j += len;
        } else {
            j += 1;
        }
    }
    None
}

/// Whether the text up to the next line break is only whitespace (a blank
/// line, or a blanked fence line).
fn next_line_is_blank(chars: &[char]) -> bool {
    chars.iter().take_while(|&&c| c != '\n').all(|c| c.is_whitespace())
}

/// The anchors of the page's headings, as GitHub and mdBook make them:
/// lowercase, spaces to `-`, every other character but letters, digits,
/// `-` and `_` dropped; a repeated anchor gets `-1`, `-2`, ...
pub fn anchors(text: &str) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for line in prose_lines_with_code(text) {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        let Some(title) = line.get(hashes..).and_then(|rest| rest.strip_prefix(' ')) else { continue };
        if hashes == 0 || hashes > 6 {
            continue;
        }
        let base = slug(title.trim());
        let mut anchor = base.clone();
        let mut n = 0;
        while seen.contains(&anchor) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
        seen.push(anchor);
    }
    seen
}

/// The lines outside fenced blocks, inline code kept (a heading's code
/// span is part of its anchor).
fn prose_lines_with_code(text: &str) -> Vec<&str> {
    let mut in_fence = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_fence = !in_fence;
        } else if !in_fence {
            out.push(line);
        }
    }
    out
}

pub fn slug(title: &str) -> String {
    title
        .chars()
        .filter_map(|c| match c {
            c if c.is_alphanumeric() => Some(c.to_lowercase().collect::<String>()),
            '-' | '_' => Some(c.to_string()),
            c if c.is_whitespace() => Some("-".to_string()),
            _ => None,
        })
        .collect()
}

/// A link target found in prose: `[text](target)` or `![alt](target)`.
pub struct Link {
    pub line: usize,
    pub target: String,
}

/// Every inline link and image target outside code.
pub fn links(text: &str) -> Vec<Link> {
    let prose = prose(text);
    let mut out = Vec::new();
    let mut rest = prose.as_str();
    let mut offset = 0;
    while let Some(at) = rest.find("](") {
        let start = at + 2;
        let end = rest[start..].find(|c: char| c == ')' || c.is_whitespace()).map_or(rest.len(), |e| start + e);
        let line = prose[..offset + start].matches('\n').count() + 1;
        out.push(Link { line, target: rest[start..end].to_string() });
        offset += end;
        rest = &rest[end..];
    }
    out
}

#[test]
fn slugs_follow_github_and_mdbook() {
    assert_eq!(slug("Rehearsing on every save: `--watch`"), "rehearsing-on-every-save---watch");
    assert_eq!(slug("Shared modules: `playbooks/lib/`"), "shared-modules-playbookslib");
    assert_eq!(slug("`drift:db-b:openssl=3.0.2` on standby first"), "driftdb-bopenssl302-on-standby-first");
    assert_eq!(anchors("# A\n```\n# not a heading\n```\n## A\n#no\n"), vec!["a", "a-1"]);
}

#[test]
fn links_in_code_are_not_links() {
    let text = "See [a](a.md) and `[b](b.md)`,\nand ``x `[c](c.md)` y``.\n\n```text\n[d](d.md)\n```\n![e](img/e.png)\n";
    let found: Vec<(usize, String)> = links(text).into_iter().map(|l| (l.line, l.target)).collect();
    assert_eq!(found, vec![(1, "a.md".to_string()), (7, "img/e.png".to_string())]);
}
