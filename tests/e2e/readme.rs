//! The README's commands work as written on a fresh clone, and the output it
//! shows is what they print, so the front door cannot rot. The same holds for
//! the book's introduction, which repeats "Try it".
//!
//! Each ```sh block may only hold commands this test knows how to check.
//! `cargo run --release -- ARGS` runs the built binary with ARGS from the
//! repository root, with a private state directory; the first ```text block
//! after the ```sh block (before the next one) is what those commands print,
//! compared line by line with run ids, time stamps and wall times masked and
//! `...` standing for any number of lines.

use crate::markdown;
use crate::support::{root, Pitcrew};

/// The pages whose commands are checked, relative to the repository root.
const PAGES: &[&str] = &["README.md", "docs/src/introduction.md"];

/// A command from a ```sh block, as this test knows it.
#[derive(Debug, PartialEq)]
enum Command {
    /// `cargo run --release -- ARGS`: the binary with these arguments.
    Pitcrew(Vec<String>),
    /// `bash tests/run.sh`: the test command, which cannot run inside the suite.
    TestScript,
    /// `cargo install --path .`: installs the binary of the root package.
    Install,
}

/// Reads one command line, or says why this test cannot check it.
fn parse(line: &str) -> Result<Command, String> {
    if let Some(bad) = line.chars().find(|c| "$'\"|&;<>`*\\(){}".contains(*c)) {
        return Err(format!("`{line}` uses the shell ({bad:?}); this test splits commands on spaces only"));
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["cargo", "run", "--release", "--", args @ ..] if !args.is_empty() => {
            Ok(Command::Pitcrew(args.iter().map(|a| a.to_string()).collect()))
        }
        ["bash", "tests/run.sh"] => Ok(Command::TestScript),
        ["cargo", "install", "--path", "."] => Ok(Command::Install),
        _ => Err(format!(
            "`{line}` is not a command this test knows how to check; \
             use `cargo run --release -- ...`, or teach tests/e2e/readme.rs the new command"
        )),
    }
}

/// Run ids, ISO time stamps and wall-clock milliseconds masked: what
/// differs from one run to the next.
fn mask(line: &str) -> String {
    let chars: Vec<char> = line.trim_end().chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        if let Some(len) = run_id_at(&chars[i..]) {
            out.push_str("[run id]");
            i += len;
        } else if let Some(len) = timestamp_at(&chars[i..]) {
            out.push_str("[time]");
            i += len;
        } else if let Some(len) = wall_at(&chars[i..]) {
            out.push_str("in [wall] ms wall");
            i += len;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// Whether `chars` starts with `pattern`, where `9` stands for any digit
/// and `f` for any lowercase hex digit.
fn shaped(chars: &[char], pattern: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    chars.len() >= pattern.len()
        && pattern.iter().zip(chars).all(|(p, c)| match p {
            '9' => c.is_ascii_digit(),
            'f' => c.is_ascii_digit() || ('a'..='f').contains(c),
            p => p == c,
        })
}

/// `20261123T125208-5714`.
fn run_id_at(chars: &[char]) -> Option<usize> {
    const RUN_ID: &str = "99999999T999999-ffff";
    shaped(chars, RUN_ID).then_some(RUN_ID.len())
}

/// `2026-11-23T15:30:40.448324Z`, `2026-11-23T15:30:55`.
fn timestamp_at(chars: &[char]) -> Option<usize> {
    const STAMP: &str = "9999-99-99T99:99:99";
    if !shaped(chars, STAMP) {
        return None;
    }
    let tail = chars[STAMP.len()..].iter().take_while(|c| c.is_ascii_digit() || **c == '.' || **c == 'Z').count();
    Some(STAMP.len() + tail)
}

/// `in 31 ms wall`.
fn wall_at(chars: &[char]) -> Option<usize> {
    let rest = chars.strip_prefix(&['i', 'n', ' '])?;
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    let after: String = rest[digits..].iter().take(8).collect();
    (digits > 0 && after == " ms wall").then_some(3 + digits + 8)
}

/// Whether `actual` matches `expected`, where an expected line `...` stands
/// for any number of lines (none included).
fn matches(expected: &[String], actual: &[String]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((first, rest)) if first == "..." => (0..=actual.len()).any(|skip| matches(rest, &actual[skip..])),
        Some((first, rest)) => actual.first() == Some(first) && matches(rest, &actual[1..]),
    }
}

/// One ```sh block with the output shown after it, if any.
struct Example {
    line: usize,
    commands: Vec<Command>,
    shown: Option<String>,
}

fn examples(page: &str) -> Vec<Example> {
    let text = std::fs::read_to_string(root().join(page)).unwrap_or_else(|e| panic!("read {page}: {e}"));
    let fences = markdown::fences(&text);
    let mut out = Vec::new();
    for (i, fence) in fences.iter().enumerate().filter(|(_, f)| f.info == "sh") {
        let commands = fence
            .body
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| parse(l.trim()).unwrap_or_else(|why| panic!("{page}:{}: {why}", fence.line)))
            .collect();
        let shown =
            fences[i + 1..].iter().take_while(|f| f.info != "sh").find(|f| f.info == "text").map(|f| f.body.clone());
        out.push(Example { line: fence.line, commands, shown });
    }
    out
}

/// Runs the example's pitcrew commands and compares what they print with
/// what the page shows.
fn check(page: &str, example: &Example) {
    let mut printed = Vec::new();
    for command in &example.commands {
        match command {
            Command::Pitcrew(args) => {
                let out = Pitcrew::new().args(args).run();
                printed.extend(out.stderr.lines().chain(out.stdout.lines()).map(mask));
            }
            Command::TestScript => {
                let script = std::fs::read_to_string(root().join("tests/run.sh")).expect("tests/run.sh exists");
                assert!(script.starts_with("#!/usr/bin/env bash\n"), "tests/run.sh is a bash script");
                for step in ["mdbook build docs", "cargo test --workspace --release"] {
                    assert!(script.lines().any(|l| l.trim() == step), "tests/run.sh runs `{step}`, as {page} says");
                }
            }
            Command::Install => {
                let manifest = std::fs::read_to_string(root().join("Cargo.toml")).expect("Cargo.toml");
                assert!(
                    manifest.contains("[[bin]]\nname = \"pitcrew\""),
                    "`cargo install --path .` installs the `pitcrew` binary of the root package"
                );
            }
        }
    }
    let runs_pitcrew = example.commands.iter().any(|c| matches!(c, Command::Pitcrew(_)));
    let Some(shown) = example.shown.as_deref().filter(|_| runs_pitcrew) else { return };
    let expected: Vec<String> = shown.lines().map(mask).collect();
    assert!(
        matches(&expected, &printed),
        "{page}:{}: the output shown after this command is not what it prints now; paste the new output.\n\
         --- shown (masked)\n{}\n--- printed (masked)\n{}",
        example.line,
        expected.join("\n"),
        printed.join("\n")
    );
}

#[test]
fn every_command_the_readme_shows_works_as_written() {
    for page in PAGES {
        let examples = examples(page);
        assert!(!examples.is_empty(), "{page} shows no ```sh block");
        for example in &examples {
            check(page, example);
        }
    }
}

#[test]
fn the_readme_shows_the_two_commands_first() {
    let first = examples("README.md").into_iter().next().expect("a ```sh block");
    assert_eq!(
        first.commands,
        vec![
            Command::Pitcrew(
                "rehearse playbooks/standby_first.rhai -i playbooks/inventories/demo.yaml"
                    .split(' ')
                    .map(str::to_string)
                    .collect()
            ),
            Command::TestScript,
        ]
    );
    assert!(first.shown.is_some(), "the README shows the rehearsal's output");
    assert!(root().join("tests/run.sh").is_file(), "tests/run.sh exists");
}

#[test]
fn output_comparison_masks_what_changes_and_nothing_else() {
    assert_eq!(
        mask("duration    T+00:03:43.4 virtual in 31 ms wall"),
        "duration    T+00:03:43.4 virtual in [wall] ms wall"
    );
    assert_eq!(mask("run id      20261203T082221-45e0 (rehearsal)  "), "run id      [run id] (rehearsal)");
    assert_eq!(mask("{\"timestamp\":\"2026-11-23T15:30:40.448324Z\"}"), "{\"timestamp\":\"[time]\"}");
    assert_eq!(mask("T+00:01:00.0  db-b  patch  ok  60.0s"), "T+00:01:00.0  db-b  patch  ok  60.0s");
    let lines = |s: &str| s.lines().map(str::to_string).collect::<Vec<_>>();
    assert!(matches(&lines("a\n...\nd"), &lines("a\nb\nc\nd")));
    assert!(matches(&lines("a\n...\nb"), &lines("a\nb")));
    assert!(!matches(&lines("a\nc"), &lines("a\nb\nc")));
    assert!(!matches(&lines("a\n..."), &lines("b")));
    assert!(parse("cargo run --release -- runs | head").is_err());
    assert!(parse("pitcrew runs").is_err());
}
