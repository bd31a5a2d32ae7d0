//! `pitcrew report RUN`: a run rendered from its audit trail (nothing
//! else), as Markdown, a self-contained HTML page with a timeline chart, or
//! JSON. The Markdown and HTML come from handlebars templates
//! (playbooks/templates/report.*.hbs) that `--template FILE` replaces.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use handlebars::html_escape;
use pitcrew_runtime::clock::format_offset;
use pitcrew_runtime::drift::flatten;
use pitcrew_runtime::journal::{Body, Journal};
use serde::Serialize;
use serde_json::{json, Value};

use crate::app::{INVALID, SUCCESS};
use crate::render;

const MARKDOWN: &str = include_str!("../playbooks/templates/report.md.hbs");
const HTML: &str = include_str!("../playbooks/templates/report.html.hbs");

/// One step: its intent and outcome records joined.
#[derive(Debug, Clone, Serialize)]
struct Step {
    call: u64,
    at: String,
    start_s: f64,
    end_s: f64,
    took_s: f64,
    cluster: String,
    target: String,
    action: String,
    status: String,
    detail: String,
}

#[derive(Debug, Serialize)]
struct NodeLine {
    node: String,
    cluster: String,
    before: String,
    after: String,
    state: String,
    steps_count: usize,
    steps: Vec<Step>,
}

#[derive(Debug, Serialize)]
struct FactChange {
    fact: String,
    before: String,
    after: String,
}

#[derive(Debug, Serialize)]
struct NodeFacts {
    node: String,
    changes: Vec<FactChange>,
}

/// Everything a report template sees.
#[derive(Debug, Serialize)]
struct Model {
    run: String,
    mode: String,
    playbook: String,
    inventory: String,
    operator: String,
    host: String,
    started: String,
    finished: String,
    clusters: Vec<String>,
    params: Value,
    faults: Vec<String>,
    result: String,
    exit_code: Option<u8>,
    error: Option<String>,
    duration: String,
    duration_s: f64,
    steps_count: usize,
    patched: Vec<String>,
    patched_count: usize,
    requests: u64,
    failed_requests: u64,
    interruption_s: String,
    rollback: Option<String>,
    steps: Vec<Step>,
    nodes: Vec<NodeLine>,
    switchovers: Vec<Value>,
    sync_checks: Vec<Value>,
    drift: Vec<Value>,
    facts: Vec<NodeFacts>,
    notifications: Vec<Value>,
    /// The timeline chart, inline SVG (HTML only).
    timeline_svg: String,
}

fn short(value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        v => v.to_string(),
    };
    if text.len() > 160 {
        let cut = (0..=160).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
        format!("{}...", &text[..cut])
    } else {
        text
    }
}

fn detail(action: &str, result: &Value) -> String {
    match action {
        "patch" | "restore" if result.get("from_version").is_some() => {
            format!("{} -> {}", short(&result["from_version"]), short(&result["to_version"]))
        }
        "switchover" => format!(
            "{} -> {}, users held {} ms",
            short(&result["from"]),
            short(&result["to"]),
            result["paused"]["secs"].as_f64().unwrap_or(0.0) * 1000.0
                + result["paused"]["nanos"].as_f64().unwrap_or(0.0) / 1e6
        ),
        "check_sync" => {
            let replicas = result["replicas"].as_array().cloned().unwrap_or_default();
            let lags: Vec<String> = replicas
                .iter()
                .map(|r| {
                    let link = if r["link_up"] == true { "" } else { ", link down" };
                    format!("{} {:.1} s behind{link}", short(&r["node"]), r["lag_seconds"].as_f64().unwrap_or(0.0))
                })
                .collect();
            format!("primary {}; {}", short(&result["primary"]), lags.join(", "))
        }
        _ if result.get("secs").is_some() && result.get("nanos").is_some() => format!("{:.1} s", seconds(result)),
        _ => short(result),
    }
}

fn seconds(d: &Value) -> f64 {
    d["secs"].as_f64().unwrap_or(0.0) + d["nanos"].as_f64().unwrap_or(0.0) / 1e9
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn model(journal: &Journal) -> Model {
    let header = journal.header().cloned();
    let mut steps: Vec<Step> = Vec::new();
    let mut open: BTreeMap<u64, (f64, String, String, String)> = BTreeMap::new();
    let mut switchovers = Vec::new();
    let mut sync_checks = Vec::new();
    let mut drift = Vec::new();
    let mut notifications = Vec::new();
    let mut facts: BTreeMap<String, (Option<Value>, Option<Value>)> = BTreeMap::new();
    let mut end: Option<(String, u8, Value)> = None;
    let mut rollbacks: Vec<(f64, Option<f64>)> = Vec::new();
    for stored in &journal.records {
        let r = &stored.record;
        match &r.body {
            Body::Intent { call, cluster, node, action, .. } => {
                let target = node.clone().unwrap_or_else(|| cluster.clone());
                open.insert(*call, (r.vt, cluster.clone(), target, action.clone()));
            }
            Body::Outcome { call, action, ok, result, error, .. } => {
                let Some((start, cluster, target, _)) = open.remove(call) else { continue };
                let (status, text) = match error {
                    Some(e) => (e.kind.as_str().to_string(), e.message.clone()),
                    None if *ok => ("ok".to_string(), detail(action, result)),
                    None => ("failed".to_string(), short(result)),
                };
                if action == "switchover" && *ok {
                    switchovers.push(json!({ "at": format_offset(dur(r.vt)), "at_s": r.vt, "cluster": cluster,
                        "detail": text.clone(), "paused_s": seconds(&result["paused"]) }));
                }
                if action == "check_sync" {
                    sync_checks.push(json!({ "at": format_offset(dur(r.vt)), "cluster": cluster, "status": status.clone(), "detail": text.clone() }));
                }
                steps.push(Step {
                    call: *call,
                    at: format_offset(dur(start)),
                    start_s: start,
                    end_s: r.vt,
                    took_s: round1(r.vt - start),
                    cluster,
                    target,
                    action: action.clone(),
                    status,
                    detail: text,
                });
            }
            Body::Refused { call, cluster, node, action, error } => steps.push(Step {
                call: *call,
                at: format_offset(dur(r.vt)),
                start_s: r.vt,
                end_s: r.vt,
                took_s: 0.0,
                cluster: cluster.clone(),
                target: node.clone().unwrap_or_else(|| cluster.clone()),
                action: action.clone(),
                status: "refused".into(),
                detail: error.message.clone(),
            }),
            Body::Read { what, target, result, .. } if what == "drift" => {
                let peers = result["Ok"]["peers"].as_array().cloned().unwrap_or_default();
                let critical: Vec<String> = peers
                    .iter()
                    .filter(|p| p["critical"] == true)
                    .map(|p| format!("{} {}", short(&p["fact"]), short(&p["values"])))
                    .collect();
                drift.push(json!({ "at": format_offset(dur(r.vt)), "cluster": target, "critical": critical.len(),
                    "differences": peers.len(), "detail": critical.join("; ") }));
            }
            Body::Facts { node, reason, facts: f, .. } => {
                let entry = facts.entry(node.clone()).or_default();
                if reason == "before patch" && entry.0.is_none() {
                    entry.0 = Some(f.clone());
                } else if reason != "before patch" {
                    entry.1 = Some(f.clone());
                }
            }
            Body::Notified { event, deliveries, .. } => {
                let failed = deliveries.iter().filter(|d| d["ok"] != true).count();
                notifications.push(json!({ "at": format_offset(dur(r.vt)), "event": event,
                    "sinks": deliveries.len(), "failed": failed }));
            }
            Body::RollbackStarted { .. } => rollbacks.push((r.vt, None)),
            Body::RollbackFinished { .. } => {
                if let Some(last) = rollbacks.last_mut() {
                    last.1 = Some(r.vt);
                }
            }
            Body::End { result, exit_code, outcome } => end = Some((result.clone(), *exit_code, outcome.clone())),
            _ => {}
        }
    }
    let outcome = end.as_ref().map(|e| e.2.clone()).unwrap_or(Value::Null);
    let duration_s = journal.records.last().map_or(0.0, |r| r.record.vt);
    let mut nodes: Vec<NodeLine> = outcome["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| steps.iter().any(|s| s.target == short(&n["node"])))
        .map(|n| {
            let node = short(&n["node"]);
            let serving = if n["serving"] == true { "serving" } else { "not serving" };
            let role = n["role"].as_str().map(|r| format!(" ({r})")).unwrap_or_default();
            let own: Vec<Step> = steps.iter().filter(|s| s.target == node).cloned().collect();
            NodeLine {
                steps_count: own.len(),
                steps: own,
                node,
                cluster: short(&n["cluster"]),
                before: short(&n["version_before"]),
                after: short(&n["version"]),
                state: format!("{serving}{role}"),
            }
        })
        .collect();
    nodes.sort_by(|a, b| (a.cluster.as_str(), a.node.as_str()).cmp(&(b.cluster.as_str(), b.node.as_str())));
    let facts = facts
        .into_iter()
        .filter_map(|(node, (before, after))| {
            let (before, after) = (flatten(&before?), flatten(&after?));
            let changes: Vec<FactChange> = after
                .iter()
                .filter(|(k, v)| before.get(*k) != Some(v) && !matches!(k.as_str(), "boot_id" | "patched"))
                .map(|(k, v)| FactChange {
                    fact: k.clone(),
                    before: before.get(k).cloned().unwrap_or_else(|| "(absent)".into()),
                    after: v.clone(),
                })
                .collect();
            (!changes.is_empty()).then_some(NodeFacts { node, changes })
        })
        .collect();
    let rollback = outcome["rollback"].as_object().map(|r| {
        let failures = r.get("failures").and_then(Value::as_array).map_or(0, Vec::len);
        format!("{} step(s) undone, {failures} failed", r.get("steps").and_then(Value::as_u64).unwrap_or(0))
    });
    let timeline_svg = timeline(&steps, &nodes, &switchovers, &rollbacks, duration_s);
    Model {
        run: journal.records.first().map(|r| r.record.run.clone()).unwrap_or_default(),
        mode: header.as_ref().map(|h| h.mode.clone()).unwrap_or_default(),
        playbook: header.as_ref().map(|h| h.playbook.clone()).unwrap_or_default(),
        inventory: header.as_ref().map(|h| h.inventory.clone()).unwrap_or_default(),
        operator: header.as_ref().map(|h| h.operator.clone()).unwrap_or_default(),
        host: header.as_ref().map(|h| h.host.clone()).unwrap_or_default(),
        started: journal.records.first().map(|r| r.record.ts.clone()).unwrap_or_default(),
        finished: journal.records.last().map(|r| r.record.ts.clone()).unwrap_or_default(),
        clusters: header.as_ref().map(|h| h.clusters.clone()).unwrap_or_default(),
        params: header.as_ref().map(|h| h.params.clone()).unwrap_or_default(),
        faults: header.as_ref().map(|h| h.faults.clone()).unwrap_or_default(),
        result: end.as_ref().map_or_else(|| "unfinished".to_string(), |e| e.0.replace('_', " ")),
        exit_code: end.as_ref().map(|e| e.1),
        error: outcome["error"]["message"].as_str().map(str::to_string),
        duration: format_offset(dur(duration_s)),
        duration_s,
        steps_count: steps.len(),
        patched_count: outcome["patched"].as_array().map_or(0, Vec::len),
        patched: outcome["patched"].as_array().into_iter().flatten().map(short).collect(),
        requests: outcome["traffic"]["requests"].as_u64().unwrap_or(0),
        failed_requests: outcome["traffic"]["failed"].as_u64().unwrap_or(0),
        interruption_s: format!("{:.1}", seconds(&outcome["traffic"]["interruption"])),
        rollback,
        steps,
        nodes,
        switchovers,
        sync_checks,
        drift,
        facts,
        notifications,
        timeline_svg,
    }
}

fn dur(s: f64) -> std::time::Duration {
    std::time::Duration::from_secs_f64(s.max(0.0))
}

fn color(action: &str, status: &str) -> &'static str {
    if status != "ok" {
        return "#d62728";
    }
    match action {
        "drain" | "undrain" => "#1f77b4",
        "patch" => "#2ca02c",
        "reboot" => "#9467bd",
        "wait_healthy" | "probe" => "#17becf",
        "switchover" => "#ff7f0e",
        "check_sync" => "#bcbd22",
        "restore" => "#8c564b",
        _ => "#7f7f7f",
    }
}

/// Steps per node over time; switchover holds and rollbacks marked.
fn timeline(
    steps: &[Step],
    nodes: &[NodeLine],
    switchovers: &[Value],
    rollbacks: &[(f64, Option<f64>)],
    total: f64,
) -> String {
    let mut rows: Vec<String> = nodes.iter().map(|n| n.node.clone()).collect();
    for s in steps {
        if !rows.contains(&s.target) {
            rows.push(s.target.clone());
        }
    }
    let (left, width, row_h, top) = (110.0, 760.0, 22.0, 24.0);
    let height = top + row_h * rows.len() as f64 + 30.0;
    let total = total.max(1.0);
    let x = |t: f64| left + width * (t / total);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {height}" width="100%" role="img" aria-label="timeline of the run"><style>text{{font:11px sans-serif;fill:#333}}</style>"#,
        w = left + width + 50.0
    );
    for (start, end) in rollbacks {
        let end = end.unwrap_or(total);
        let _ = write!(
            svg,
            r##"<rect x="{:.1}" y="{top}" width="{:.1}" height="{:.1}" fill="#ffe8cc"><title>rollback</title></rect>"##,
            x(*start),
            (x(end) - x(*start)).max(1.0),
            row_h * rows.len() as f64
        );
    }
    for (i, row) in rows.iter().enumerate() {
        let y = top + row_h * i as f64;
        let _ = write!(
            svg,
            r##"<text x="4" y="{:.1}">{}</text><line x1="{left}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#eee"/>"##,
            y + 15.0,
            html_escape(row),
            left + width,
            y + row_h,
            y + row_h
        );
        for s in steps.iter().filter(|s| &s.target == row) {
            let _ = write!(
                svg,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} {} at {}: {} {}</title></rect>"#,
                x(s.start_s),
                y + 3.0,
                (x(s.end_s) - x(s.start_s)).max(2.0),
                row_h - 6.0,
                color(&s.action, &s.status),
                html_escape(&s.action),
                html_escape(&s.target),
                html_escape(&s.at),
                html_escape(&s.status),
                html_escape(&s.detail)
            );
        }
    }
    for s in switchovers {
        let (at, paused) = (s["at_s"].as_f64().unwrap_or(0.0), s["paused_s"].as_f64().unwrap_or(0.0));
        let _ = write!(
            svg,
            r##"<rect x="{:.1}" y="{}" width="{:.1}" height="{:.1}" fill="#d62728" opacity="0.35"><title>users held {:.1} s (switchover)</title></rect>"##,
            x(at),
            top - 6.0,
            (x(at + paused) - x(at)).max(3.0),
            row_h * rows.len() as f64 + 6.0,
            paused
        );
    }
    let axis_y = top + row_h * rows.len() as f64 + 16.0;
    for k in 0..=4 {
        let t = total * k as f64 / 4.0;
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{axis_y}" text-anchor="middle">{}</text>"#,
            x(t),
            html_escape(&format_offset(dur(t)))
        );
    }
    svg.push_str("</svg>");
    svg
}

pub fn run(state_dir: &Path, run: &str, format: &str, output: Option<&Path>, template: Option<&Path>) -> u8 {
    let path = match crate::audit::open(state_dir, run) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let help = format!("a report is only made from an intact trail; `pitcrew audit verify {run}` says more");
    let journal = match crate::audit::intact_journal(&path, &help) {
        Ok(j) => j,
        Err(code) => return code,
    };
    let model = model(&journal);
    let builtin = match format {
        "md" | "markdown" => MARKDOWN,
        "html" => HTML,
        "json" => "",
        other => {
            eprintln!("error: unknown report format `{other}`\n  help: use --format md, html or json");
            return INVALID;
        }
    };
    let text = if format == "json" {
        let mut value = serde_json::to_value(&model).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            map.remove("timeline_svg");
        }
        serde_json::to_string_pretty(&value).unwrap_or_default()
    } else {
        let template_text = match template {
            Some(file) => match std::fs::read_to_string(file) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: cannot read template {}: {e}", file.display());
                    return INVALID;
                }
            },
            None => builtin.to_string(),
        };
        let mut hb = crate::notify::handlebars();
        if format == "html" {
            hb.register_escape_fn(handlebars::html_escape);
        }
        hb.set_strict_mode(false);
        match hb.render_template(&template_text, &model) {
            Ok(t) => t,
            Err(e) => {
                let name = template.map_or("the built-in template".to_string(), |p| p.display().to_string());
                eprintln!("error: {name}: {e}");
                eprintln!("  help: `pitcrew report RUN --format json` shows every field a template can use");
                return INVALID;
            }
        }
    };
    match output {
        Some(file) => match std::fs::write(file, &text) {
            Ok(()) => {
                eprintln!("wrote the {format} report of run {} to {}", model.run, file.display());
                SUCCESS
            }
            Err(e) => {
                eprintln!("error: cannot write {}: {e}", file.display());
                INVALID
            }
        },
        None => {
            render::out(text.trim_end());
            SUCCESS
        }
    }
}
