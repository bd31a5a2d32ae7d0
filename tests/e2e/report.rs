//! `pitcrew report`: every format rendered from recorded runs, pinned with
//! snapshots; the HTML page is self-contained; templates can be replaced.

use std::path::Path;

use serde_json::Value;

use crate::support::{Pitcrew, DEMO};

/// Runs `args` in a fresh state dir and returns (state dir, run id, header).
fn recorded(args: &[&str], code: i32) -> (tempfile::TempDir, String, Value) {
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().display().to_string();
    Pitcrew::new().env("PITCREW_STATE_DIR", &state).args(args).run().expect_code(code);
    let journal = std::fs::read_dir(dir.path().join("runs"))
        .expect("runs")
        .flatten()
        .find(|e| e.path().extension().is_some_and(|x| x == "jsonl"))
        .expect("journal");
    let id = journal.path().file_stem().and_then(|s| s.to_str()).expect("id").to_string();
    let first = std::fs::read_to_string(journal.path()).expect("read");
    let header: Value = serde_json::from_str(first.lines().next().expect("header")).expect("json");
    (dir, id, header)
}

fn report(state: &Path, args: &[&str]) -> String {
    let out = Pitcrew::new().env("PITCREW_STATE_DIR", &state.display().to_string()).args(args).run();
    out.expect_code(0);
    out.stdout
}

fn pinned(name: &str, text: &str, header: &Value) {
    let operator = regex_escape(header["operator"].as_str().unwrap_or("unknown"));
    let host = regex_escape(header["host"].as_str().unwrap_or("host"));
    insta::with_settings!({
        snapshot_path => "snapshots",
        prepend_module_to_snapshot => false,
        filters => vec![
            (r"\d{8}T\d{6}-[0-9a-f]{4}", "[run id]"),
            (r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z", "[timestamp]"),
            (format!(r"\b{operator} on {host}\b").leak(), "[operator] on [host]"),
            (format!(r#""operator": "{operator}""#).leak(), r#""operator": "[operator]""#),
            (format!(r#""host": "{host}""#).leak(), r#""host": "[host]""#),
        ],
    }, {
        insta::assert_snapshot!(name, text);
    });
}

fn regex_escape(text: &str) -> String {
    text.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_string() } else { format!("\\{c}") }).collect()
}

#[test]
fn a_standby_first_run_renders_as_markdown_json_and_html() {
    let args = ["rehearse", "playbooks/standby_first.rhai", "-i", DEMO, "-q", "--param", "switch_back=true"];
    let (dir, id, header) = recorded(&args, 0);
    let markdown = report(dir.path(), &["report", &id]);
    pinned("report_standby_first_md", &markdown, &header);
    let json = report(dir.path(), &["report", &id, "--format", "json"]);
    pinned("report_standby_first_json", &json, &header);
    let parsed: Value = serde_json::from_str(&json).expect("the JSON report parses");
    assert_eq!(parsed["switchovers"].as_array().map(Vec::len), Some(2));
    assert_eq!(parsed["facts"][0]["changes"][0]["fact"], "packages.postgresql");

    let html_file = dir.path().join("report.html");
    let html_path = html_file.display().to_string();
    report(dir.path(), &["report", &id, "--format", "html", "-o", &html_path]);
    let html = std::fs::read_to_string(&html_file).expect("html written");
    pinned("report_standby_first_html", &html, &header);
    // Self-contained: nothing to fetch, the chart is inline.
    for external in ["src=\"http", "href=\"http", "<script src", "<link "] {
        assert!(!html.contains(external), "the page loads {external}");
    }
    assert!(html.contains("<svg") && html.contains("users held 0.4 s (switchover)"), "timeline with holds marked");
}

#[test]
fn a_rolled_back_run_reports_the_failure_and_the_rollback() {
    let args = ["rehearse", "playbooks/rolling_pool.rhai", "-i", DEMO, "-q", "--fault", "patch:web-3:fail"];
    let (dir, id, header) = recorded(&args, 1);
    let markdown = report(dir.path(), &["report", &id]);
    pinned("report_rolled_back_md", &markdown, &header);
    assert!(markdown.contains("**rolled back** (exit 1)"), "{markdown}");
    assert!(markdown.contains("> **Stopped by:** package manager exited with status 100 (injected fault)"));
}

#[test]
fn an_organisation_can_brand_the_report_with_its_own_template() {
    let (dir, id, _) = recorded(&["rehearse", "playbooks/rolling_pool.rhai", "-i", DEMO, "-q"], 0);
    let template = dir.path().join("brand.hbs");
    std::fs::write(&template, "ACME change record {{run}}: {{result}}, {{patched_count}} patched\n{{#each nodes}}- {{node}} {{before}} -> {{after}}\n{{/each}}").expect("template");
    let text = report(dir.path(), &["report", &id, "--template", &template.display().to_string()]);
    assert!(text.starts_with(&format!("ACME change record {id}: succeeded, 4 patched")), "{text}");
    assert!(text.contains("- web-2 1.24.0 -> 1.24.1"), "{text}");
    // A broken template is a clear error naming it.
    std::fs::write(&template, "{{#each nodes}}").expect("template");
    Pitcrew::new()
        .env("PITCREW_STATE_DIR", &dir.path().display().to_string())
        .args(["report", &id, "--template", &template.display().to_string()])
        .run()
        .expect_code(2)
        .expect_stderr("brand.hbs");
}
