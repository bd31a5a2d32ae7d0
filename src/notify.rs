//! Notifications: automatic ones (run started and finished, batches,
//! rollback) and the playbook's own `notify(event, data)`, rendered from
//! handlebars templates and sent to the sinks the inventory configures:
//!
//! ```yaml
//! notifications:
//!   templates: templates/notify     # EVENT.hbs files, relative to the inventory (optional)
//!   sinks:
//!     - { kind: stdout }
//!     - { kind: file, path: /var/log/pitcrew/notifications.jsonl }
//!     - { kind: webhook, url: "https://chat.example.com/hook", timeout: 5s, retries: 3, events: [run_started, run_finished] }
//! ```
//!
//! Delivery happens on a worker thread, so a slow or dead sink never holds
//! up a step, and never fails the run: every delivery (and its failure) is
//! recorded in the audit trail as a `notified` record. Rehearsals do not
//! notify; `run` and `resume` do.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use handlebars::{handlebars_helper, Handlebars};
use pitcrew_runtime::clock::format_offset;
use pitcrew_runtime::inventory::Seg;
use pitcrew_runtime::journal::Body;
use pitcrew_runtime::{Event, EventSink, Executor, Inventory, InventoryError};
use serde::Deserialize;
use serde_json::{json, Value};

/// The templates pitcrew ships (playbooks/templates/notify), used unless
/// the inventory's template directory has its own.
const SHIPPED: &[(&str, &str)] = &[
    ("run_started", include_str!("../playbooks/templates/notify/run_started.hbs")),
    ("run_finished", include_str!("../playbooks/templates/notify/run_finished.hbs")),
    ("batch_started", include_str!("../playbooks/templates/notify/batch_started.hbs")),
    ("batch_finished", include_str!("../playbooks/templates/notify/batch_finished.hbs")),
    ("rollback_started", include_str!("../playbooks/templates/notify/rollback_started.hbs")),
    ("rollback_finished", include_str!("../playbooks/templates/notify/rollback_finished.hbs")),
    ("default", include_str!("../playbooks/templates/notify/default.hbs")),
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// A directory of `EVENT.hbs` templates, relative to the inventory.
    templates: Option<PathBuf>,
    #[serde(default)]
    sinks: Vec<SinkConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum SinkConfig {
    Stdout {
        #[serde(default)]
        events: Vec<String>,
    },
    File {
        path: PathBuf,
        #[serde(default)]
        events: Vec<String>,
    },
    Webhook {
        url: String,
        /// Extra request headers; `${NAME}` in a value is read from the
        /// environment when sending (tokens stay out of the inventory and
        /// the audit trail).
        #[serde(default)]
        headers: BTreeMap<String, String>,
        #[serde(default = "default_timeout", with = "humantime_serde")]
        timeout: Duration,
        #[serde(default = "default_retries")]
        retries: u32,
        #[serde(default)]
        events: Vec<String>,
    },
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_retries() -> u32 {
    3
}

impl SinkConfig {
    fn wants(&self, event: &str) -> bool {
        let events = match self {
            Self::Stdout { events } | Self::File { events, .. } | Self::Webhook { events, .. } => events,
        };
        events.is_empty() || events.iter().any(|e| e == event)
    }

    fn name(&self) -> String {
        match self {
            Self::Stdout { .. } => "stdout".into(),
            Self::File { path, .. } => format!("file {}", path.display()),
            Self::Webhook { url, .. } => format!("webhook {url}"),
        }
    }
}

handlebars_helper!(join: |list: Value, sep: str| {
    list.as_array().map(|items| {
        items.iter().map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string)).collect::<Vec<_>>().join(sep)
    }).unwrap_or_default()
});
handlebars_helper!(json_helper: |value: Value| value.to_string());

/// A handlebars registry with pitcrew's helpers (`join`, `json`).
pub fn handlebars() -> Handlebars<'static> {
    let mut hb = Handlebars::new();
    hb.register_helper("join", Box::new(join));
    hb.register_helper("json", Box::new(json_helper));
    hb.register_escape_fn(handlebars::no_escape);
    hb
}

/// Facts about the run every template sees.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub run: String,
    pub mode: String,
    pub playbook: String,
    pub inventory: String,
    pub operator: String,
    pub host: String,
    pub clusters: Vec<String>,
}

struct Job {
    event: String,
    context: Value,
}

/// Sends notifications; also an [`EventSink`] for the automatic ones.
pub struct Notifier {
    tx: Mutex<Option<Sender<Job>>>,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
    info: RunInfo,
    exec: Arc<OnceLock<Weak<Executor>>>,
}

/// Checks the inventory's `notifications:` section without sending anything.
pub fn check(inventory: &Inventory) -> Result<(), InventoryError> {
    load(inventory).map(|_| ())
}

fn load(inventory: &Inventory) -> Result<Option<(Config, Handlebars<'static>)>, InventoryError> {
    if inventory.notifications.is_null() {
        return Ok(None);
    }
    let config: Config = serde_yaml::from_value(inventory.notifications.clone()).map_err(|e| {
        inventory.error_at(
            &[Seg::Key("notifications")],
            format!("notifications: {e}"),
            Some("sinks are `{ kind: stdout }`, `{ kind: file, path: P }` or `{ kind: webhook, url: U, timeout: 5s, retries: 3 }`; `events: [..]` filters".into()),
        )
    })?;
    let mut hb = handlebars();
    for (name, text) in SHIPPED {
        hb.register_template_string(name, text).map_err(|e| {
            inventory.error_at(&[Seg::Key("notifications")], format!("shipped template {name}: {e}"), None)
        })?;
    }
    if let Some(dir) = &config.templates {
        let base = inventory.source.path.parent().unwrap_or(Path::new("."));
        let dir = base.join(dir);
        let entries = std::fs::read_dir(&dir).map_err(|e| {
            inventory.error_at(
                &[Seg::Key("notifications"), Seg::Key("templates")],
                format!("cannot read the template directory {}: {e}", dir.display()),
                Some("the path is relative to the inventory file".into()),
            )
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".hbs")) else {
                continue;
            };
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            hb.register_template_string(name, text).map_err(|e| {
                inventory.error_at(
                    &[Seg::Key("notifications"), Seg::Key("templates")],
                    format!("template {}: {e}", path.display()),
                    Some("templates are handlebars: {{run}}, {{result_text}}, {{join patched \", \"}}".into()),
                )
            })?;
        }
    }
    Ok(Some((config, hb)))
}

/// Reads the inventory's `notifications:` section (`None` when absent).
pub fn from_inventory(inventory: &Inventory, info: RunInfo) -> Result<Option<Notifier>, InventoryError> {
    let Some((config, hb)) = load(inventory)? else { return Ok(None) };
    let (tx, rx) = channel::<Job>();
    let exec: Arc<OnceLock<Weak<Executor>>> = Arc::new(OnceLock::new());
    let (sinks, worker_exec) = (config.sinks, exec.clone());
    let worker = std::thread::Builder::new()
        .name("notify".into())
        .spawn(move || {
            for job in rx {
                let text = render(&hb, &job.event, &job.context);
                let deliveries: Vec<Value> =
                    sinks.iter().filter(|s| s.wants(&job.event)).map(|s| deliver(s, &job, &text)).collect();
                if let Some(exec) = worker_exec.get().and_then(Weak::upgrade) {
                    exec.journal(Body::Notified {
                        event: job.event.clone(),
                        data: job.context["data"].clone(),
                        deliveries,
                    });
                }
            }
        })
        .map_err(|e| inventory.error_at(&[Seg::Key("notifications")], format!("cannot start: {e}"), None))?;
    Ok(Some(Notifier { tx: Mutex::new(Some(tx)), worker: Mutex::new(Some(worker)), info, exec }))
}

fn render(hb: &Handlebars<'_>, event: &str, context: &Value) -> String {
    let name = if hb.has_template(event) { event } else { "default" };
    hb.render(name, context).map_or_else(|e| format!("{event}: (template error: {e})"), |t| t.trim().to_string())
}

fn deliver(sink: &SinkConfig, job: &Job, text: &str) -> Value {
    let started = Instant::now();
    let message = json!({
        "run": job.context["run"],
        "event": job.event,
        "text": text,
        "data": job.context["data"],
        "at": job.context["at"],
        "ts": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    });
    let (ok, attempts, error) = match sink {
        SinkConfig::Stdout { .. } => {
            crate::render::out(text);
            (true, 1, None)
        }
        SinkConfig::File { path, .. } => {
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| writeln!(f, "{message}"));
            match written {
                Ok(()) => (true, 1, None),
                Err(e) => (false, 1, Some(e.to_string())),
            }
        }
        SinkConfig::Webhook { url, headers, timeout, retries, .. } => {
            let agent = ureq::AgentBuilder::new().timeout(*timeout).build();
            let headers: Vec<(String, String)> = headers.iter().map(|(k, v)| (k.clone(), expand_env(v))).collect();
            let mut last = None;
            let mut attempts = 0;
            for attempt in 0..=*retries {
                attempts = attempt + 1;
                if attempt > 0 {
                    std::thread::sleep(Duration::from_millis(200) * 2u32.pow(attempt - 1));
                }
                let request = headers
                    .iter()
                    .fold(agent.post(url).set("Content-Type", "application/json"), |r, (k, v)| r.set(k, v));
                match request.send_string(&message.to_string()) {
                    Ok(_) => {
                        last = None;
                        break;
                    }
                    Err(e) => last = Some(e.to_string()),
                }
            }
            (last.is_none(), attempts, last)
        }
    };
    json!({
        "sink": sink.name(),
        "ok": ok,
        "attempts": attempts,
        "error": error,
        "duration_s": started.elapsed().as_secs_f64(),
    })
}

/// `${NAME}` replaced by the environment variable NAME (empty when unset).
fn expand_env(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        match rest[start + 2..].find('}') {
            Some(end) => {
                out.push_str(&std::env::var(&rest[start + 2..start + 2 + end]).unwrap_or_default());
                rest = &rest[start + 3 + end..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

impl Notifier {
    /// Journals deliveries through this executor from now on.
    pub fn attach(&self, exec: &Arc<Executor>) {
        let _ = self.exec.set(Arc::downgrade(exec));
    }

    /// Queues a notification; `data` is the event's own fields.
    pub fn send(&self, event: &str, at: Duration, mut data: Value) {
        let i = &self.info;
        let mut context = json!({
            "event": event,
            "run": i.run,
            "mode": i.mode,
            "playbook": i.playbook,
            "inventory": i.inventory,
            "operator": i.operator,
            "host": i.host,
            "clusters": i.clusters,
            "at": format_offset(at),
        });
        // The event's fields are also top-level for short templates.
        if let (Some(ctx), Some(fields)) = (context.as_object_mut(), data.as_object()) {
            for (k, v) in fields {
                ctx.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        if let Some(ctx) = context.as_object_mut() {
            ctx.insert("data".into(), std::mem::take(&mut data));
        }
        if let Ok(tx) = self.tx.lock() {
            if let Some(tx) = tx.as_ref() {
                let _ = tx.send(Job { event: event.to_string(), context });
            }
        }
    }

    /// Waits (up to `limit`) for every queued notification to be delivered
    /// and recorded.
    pub fn finish(&self, limit: Duration) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        let Some(worker) = self.worker.lock().ok().and_then(|mut w| w.take()) else { return };
        let deadline = Instant::now() + limit;
        while !worker.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if worker.is_finished() {
            let _ = worker.join();
        } else {
            eprintln!("warning: notifications still being delivered after {}s; not waiting", limit.as_secs());
        }
    }
}

impl EventSink for Notifier {
    fn emit(&self, event: &Event) {
        match event {
            Event::BatchStarted { at, cluster, index, of, nodes } => {
                self.send("batch_started", *at, json!({ "cluster": cluster, "index": index, "of": of, "nodes": nodes }))
            }
            Event::BatchFinished { at, cluster, index, of, failed, error_rate } => self.send(
                "batch_finished",
                *at,
                json!({
                    "cluster": cluster, "index": index, "of": of, "failed": failed,
                    "error_rate": error_rate,
                    "error_rate_pct": error_rate.map(|r| format!("{:.2}", r * 100.0)),
                }),
            ),
            Event::RollbackStarted { at, reason, steps } => {
                self.send("rollback_started", *at, json!({ "reason": reason, "steps": steps }))
            }
            Event::RollbackFinished { at, ok } => self.send("rollback_finished", *at, json!({ "ok": ok })),
            Event::Notify { at, name, data } => self.send(name, *at, data.clone()),
            _ => {}
        }
    }
}

/// The fields of `run_finished`, from the run's outcome.
pub fn finished_data(outcome: &pitcrew_stdlib::RunOutcome, result: &str, exit_code: u8) -> Value {
    let result_text = match outcome.result {
        pitcrew_stdlib::RunResult::Succeeded => "succeeded",
        pitcrew_stdlib::RunResult::Failed => "failed",
        pitcrew_stdlib::RunResult::RolledBack => "failed and was rolled back",
        pitcrew_stdlib::RunResult::Refused => "refused before anything was touched",
        pitcrew_stdlib::RunResult::RollbackFailed => "FAILED and could not be rolled back: the cluster needs a human",
    };
    let rollback = outcome.rollback.as_ref().map(|r| format!("{} step(s) undone", r.steps));
    json!({
        "result": result,
        "result_text": result_text,
        "exit_code": exit_code,
        "steps": outcome.steps,
        "patched": outcome.patched,
        "patched_count": outcome.patched.len(),
        "failed_requests": outcome.traffic.failed,
        "requests": outcome.traffic.requests,
        "interruption_s": format!("{:.1}", outcome.traffic.interruption.as_secs_f64()),
        "duration": humantime::format_duration(Duration::from_secs(outcome.duration.as_secs())).to_string(),
        "rollback": rollback,
        "error": outcome.error.as_ref().map(|e| e.message.clone()),
    })
}
