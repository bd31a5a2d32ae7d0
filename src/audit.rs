//! `pitcrew audit verify|show` and `pitcrew runs`: reading the audit trail.

use std::collections::BTreeSet;
use std::path::Path;

use pitcrew_runtime::clock::format_offset;
use pitcrew_runtime::journal::{self, Body, Journal, StateDir};

use crate::app::{BROKEN_TRAIL, INVALID, SUCCESS};
use crate::render;

pub(crate) fn open(state_dir: &Path, run: &str) -> Result<std::path::PathBuf, u8> {
    let state = StateDir::existing(state_dir).map_err(|e| {
        render::report(e);
        INVALID
    })?;
    state.find_run(run).map_err(|e| {
        render::report(e);
        INVALID
    })
}

/// The journal at `path`, read only if its hash chain is intact; a broken
/// chain is reported with `help` (what needs the intact trail) and exit 6.
pub(crate) fn intact_journal(path: &Path, help: &str) -> Result<Journal, u8> {
    let id = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    match journal::verify(path) {
        Ok(Ok(_)) => {}
        Ok(Err(b)) => {
            eprintln!("error: the audit trail of run {id} is broken at line {}: {}", b.line, b.message);
            eprintln!("  help: {help}");
            return Err(BROKEN_TRAIL);
        }
        Err(e) => {
            render::report(e);
            return Err(INVALID);
        }
    }
    journal::read(path).map_err(|e| {
        render::report(e);
        INVALID
    })
}

pub fn verify(state_dir: &Path, run: &str) -> u8 {
    let path = match open(state_dir, run) {
        Ok(p) => p,
        Err(code) => return code,
    };
    match journal::verify(&path) {
        Ok(Ok(count)) => {
            render::out(&format!("intact: {count} records in {}", path.display()));
            SUCCESS
        }
        Ok(Err(b)) => {
            render::out(&format!("BROKEN: {}, line {}: {}", path.display(), b.line, b.message));
            BROKEN_TRAIL
        }
        Err(e) => {
            render::report(e);
            INVALID
        }
    }
}

/// One line of the timeline for a record.
fn describe(body: &Body) -> (String, String) {
    let target = |node: &Option<String>, cluster: &str| node.clone().unwrap_or_else(|| cluster.to_string());
    match body {
        Body::Header(h) => (
            "start".into(),
            format!(
                "{} {} on {} by {}@{} (pid {}), clusters {}",
                h.mode,
                h.playbook,
                h.inventory,
                h.operator,
                h.host,
                h.pid,
                h.clusters.join(",")
            ),
        ),
        Body::Resumed { operator, host, pid, repaired } => (
            "resumed".into(),
            format!(
                "by {operator}@{host} (pid {pid}){}",
                repaired.as_ref().map(|r| format!("; {r}")).unwrap_or_default()
            ),
        ),
        Body::LockBroken { cluster, holder } => {
            ("lock".into(), format!("stale lock of {cluster} taken over from {holder}"))
        }
        Body::Intent { call, cluster, node, action, .. } => {
            ("intent".into(), format!("#{call} {action} {}", target(node, cluster)))
        }
        Body::Outcome { call, cluster, node, action, ok, error, duration_s, reconciled, .. } => {
            let status = if *ok {
                "ok".to_string()
            } else {
                error.as_ref().map_or("failed".into(), |e| format!("{}: {}", e.kind.as_str(), e.message))
            };
            let how = if *reconciled { " (reconciled on resume)" } else { "" };
            ("outcome".into(), format!("#{call} {action} {} {status} in {duration_s:.1}s{how}", target(node, cluster)))
        }
        Body::Refused { call, cluster, node, action, error } => {
            ("refused".into(), format!("#{call} {action} {}: {}", target(node, cluster), error.message))
        }
        Body::Read { call, what, target, .. } => ("read".into(), format!("#{call} {what} {target}")),
        Body::Facts { node, reason, facts, .. } => {
            let count = pitcrew_runtime::drift::flatten(facts).len();
            ("facts".into(), format!("{node}: {count} facts ({reason})"))
        }
        Body::Log { text } => ("log".into(), text.clone()),
        Body::RollbackStarted { reason, steps } => ("rollback".into(), format!("{steps} step(s): {reason}")),
        Body::RollbackFinished { ok } => {
            ("rollback".into(), if *ok { "finished: service on unpatched nodes".into() } else { "FAILED".into() })
        }
        Body::End { result, exit_code, .. } => ("end".into(), format!("{result} (exit {exit_code})")),
        Body::Notified { event, deliveries, .. } => {
            let failed = deliveries.iter().filter(|d| d["ok"] != true).count();
            ("notified".into(), format!("{event} to {} sink(s), {failed} failed", deliveries.len()))
        }
    }
}

pub fn show(state_dir: &Path, run: &str) -> u8 {
    let path = match open(state_dir, run) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let journal = match journal::read(&path) {
        Ok(j) => j,
        Err(e) => {
            render::report(e);
            return INVALID;
        }
    };
    for stored in &journal.records {
        let r = &stored.record;
        let (kind, text) = describe(&r.body);
        let at = format_offset(std::time::Duration::from_secs_f64(r.vt.max(0.0)));
        render::out(&format!("{:>4}  {}  {at}  {kind:<8} {text}", r.seq, r.ts));
    }
    if journal.torn_tail.is_some() {
        render::out("      (the last record was cut short: the runner died while writing it)");
    }
    SUCCESS
}

/// Nodes a run changed, from its outcomes.
fn touched(journal: &Journal) -> BTreeSet<String> {
    journal
        .records
        .iter()
        .filter_map(|s| match &s.record.body {
            Body::Outcome { node: Some(node), action, ok: true, .. }
                if matches!(action.as_str(), "drain" | "undrain" | "patch" | "restore" | "reboot" | "switchover") =>
            {
                Some(node.clone())
            }
            _ => None,
        })
        .collect()
}

pub fn runs(state_dir: &Path) -> u8 {
    let state = match StateDir::existing(state_dir) {
        Ok(s) => s,
        Err(e) => {
            render::report(e);
            return INVALID;
        }
    };
    let ids = match state.run_ids() {
        Ok(ids) => ids,
        Err(e) => {
            render::report(e);
            return INVALID;
        }
    };
    render::out(&format!(
        "{:<22} {:<10} {:<20} {:<16} {:<32} nodes touched",
        "run", "mode", "started", "result", "playbook"
    ));
    for id in ids {
        let path = state.journal_path(&id);
        let line = match journal::read(&path) {
            Ok(j) => {
                let (mode, playbook) =
                    j.header().map_or(("?".into(), "?".into()), |h| (h.mode.clone(), h.playbook.clone()));
                let started = j.records.first().map_or(String::new(), |r| r.record.ts.chars().take(19).collect());
                let result = j.ended().map_or_else(|| "unfinished".to_string(), |(r, _)| r.to_string());
                let nodes: Vec<String> = touched(&j).into_iter().collect();
                format!("{id:<22} {mode:<10} {started:<20} {result:<16} {playbook:<32} {}", nodes.join(","))
            }
            Err(e) => format!("{id:<22} unreadable: {e}"),
        };
        render::out(&line);
    }
    SUCCESS
}
