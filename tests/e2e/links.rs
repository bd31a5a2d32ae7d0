//! The documentation's internal links hold: every relative link in the
//! README, ARCHITECTURE.md and the book (docs/src) names a file that exists
//! and, with `#anchor`, a heading of that page; the book's pages stay inside
//! the book, so the built HTML has no dead link either; and SUMMARY.md lists
//! every page, so none is left out of the book.

use std::path::{Component, Path, PathBuf};

use crate::markdown;
use crate::support::root;

/// The book's sources.
const BOOK: &str = "docs/src";

/// Every Markdown page the test covers, relative to the repository root.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![PathBuf::from("README.md"), PathBuf::from("ARCHITECTURE.md")];
    pages.extend(book_pages());
    pages
}

/// The book's pages, relative to the repository root, sorted.
fn book_pages() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(root().join(dir)).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
            let entry = entry.expect("directory entry");
            let path = dir.join(entry.file_name());
            if entry.file_type().expect("file type").is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(Path::new(BOOK), &mut out);
    out.sort();
    out
}

/// `path` with `.` and `..` folded, still relative to the repository root;
/// `None` when it climbs out of the repository.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            other => out.push(other),
        }
    }
    Some(out)
}

fn is_external(target: &str) -> bool {
    target.contains("://") || target.starts_with("mailto:")
}

/// What is wrong with the links of one page, one line per broken link.
fn broken_links(page: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(root().join(page)).unwrap_or_else(|e| panic!("read {}: {e}", page.display()));
    broken_links_in(page, &text)
}

/// The same for `text`, read as if it were the page at `page`.
fn broken_links_in(page: &Path, text: &str) -> Vec<String> {
    let dir = page.parent().unwrap_or(Path::new(""));
    let in_book = page.starts_with(BOOK);
    let mut broken = Vec::new();
    for link in markdown::links(text) {
        if is_external(&link.target) {
            continue;
        }
        let at = format!("{}:{}: ({})", page.display(), link.line, link.target);
        let (file, anchor) = link.target.split_once('#').unwrap_or((link.target.as_str(), ""));
        if file.is_empty() {
            if !markdown::anchors(text).iter().any(|a| a == anchor) {
                broken.push(format!("{at}: the page has no heading with the anchor #{anchor}"));
            }
            continue;
        }
        let Some(target) = normalize(&dir.join(file)) else {
            broken.push(format!("{at}: leaves the repository"));
            continue;
        };
        if !root().join(&target).exists() {
            broken.push(format!("{at}: {} does not exist", target.display()));
            continue;
        }
        if in_book && !target.starts_with(BOOK) {
            broken.push(format!(
                "{at}: {} is outside the book, so the built book would link nowhere; \
                 name the file as `code` instead",
                target.display()
            ));
            continue;
        }
        if anchor.is_empty() {
            continue;
        }
        if target.extension().is_none_or(|e| e != "md") {
            broken.push(format!("{at}: #{anchor} on a file that is not a Markdown page"));
            continue;
        }
        let target_text = std::fs::read_to_string(root().join(&target)).expect("read link target");
        if !markdown::anchors(&target_text).iter().any(|a| a == anchor) {
            broken.push(format!("{at}: {} has no heading with the anchor #{anchor}", target.display()));
        }
    }
    broken
}

#[test]
fn every_internal_link_of_the_readme_architecture_and_book_resolves() {
    let broken: Vec<String> = pages().iter().flat_map(|p| broken_links(p)).collect();
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn summary_lists_every_page_of_the_book() {
    let summary_path = Path::new(BOOK).join("SUMMARY.md");
    let summary = std::fs::read_to_string(root().join(&summary_path)).expect("docs/src/SUMMARY.md");
    let listed: Vec<PathBuf> =
        markdown::links(&summary).iter().filter_map(|l| normalize(&Path::new(BOOK).join(&l.target))).collect();
    let missing: Vec<String> = book_pages()
        .into_iter()
        .filter(|p| *p != summary_path && !listed.contains(p))
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "pages that docs/src/SUMMARY.md does not list (mdbook would leave them out):\n{}",
        missing.join("\n")
    );
}

#[test]
fn a_broken_link_or_anchor_is_found() {
    // The check itself, on a page that would sit in docs/src/adapters/: a
    // missing file, a missing anchor, a link out of the book, and links that
    // are fine (a page, a heading of its own, code that only looks like a link).
    let page = Path::new(BOOK).join("adapters/scratch.md");
    let text = "# Scratch page\n\nSee [guards](../guards.md), [nowhere](../nowhere.md),\n\
                [no anchor](../guards.md#no-such-heading), [here](#scratch-page),\n\
                [the crate](../../../Cargo.toml) and `[code](../nowhere.md)`.\n";
    let broken = broken_links_in(&page, text);
    assert_eq!(broken.len(), 3, "{broken:#?}");
    assert!(broken[0].contains("docs/src/nowhere.md does not exist"), "{broken:#?}");
    assert!(broken[1].contains("no heading with the anchor #no-such-heading"), "{broken:#?}");
    assert!(broken[2].contains("Cargo.toml is outside the book"), "{broken:#?}");
}
