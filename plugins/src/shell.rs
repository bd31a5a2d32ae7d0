//! `shell`: the host concern (patch, reboot, health, version, facts) as
//! commands run locally or over OpenSSH.
//!
//! Commands are handlebars templates from the inventory. The escape
//! function shell-quotes every interpolated value, and triple braces (which
//! would skip escaping) are refused when the inventory is loaded, so no node
//! name, variable or parameter can inject a command. Local commands run in
//! long-lived shells ([`crate::localsh`]). SSH is the system client in batch
//! mode with ControlMaster connection reuse; a reboot that drops the
//! connection is expected.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use handlebars::Handlebars;
use pitcrew_runtime::adapter::{
    CallCtx, DrainReport, Facts, HostAdapter, HostState, NodeRef, Params, PatchReport, ProbeAdapter, ProbeReport,
    TrafficAdapter, TrafficSample, TrafficState,
};
use pitcrew_runtime::inventory::Cluster;
use pitcrew_runtime::AdapterError;
use serde::Deserialize;
use serde_json::{json, Value};

/// `adapters: { hosts: { kind: shell, settings: {...} } }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShellSettings {
    /// Run commands over SSH (absent: locally).
    pub ssh: Option<SshSettings>,
    /// Limit for one command (patch and reboot get the step's timeout).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// How often health is polled while waiting for a node.
    #[serde(default = "default_poll", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Environment variables whose values templates may use as
    /// `{{secrets.NAME}}`; their values never reach the audit trail.
    #[serde(default)]
    pub secrets: Vec<String>,
    pub commands: Commands,
}

fn default_timeout() -> Duration {
    Duration::from_secs(300)
}

fn default_poll() -> Duration {
    Duration::from_millis(500)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshSettings {
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
    /// Extra `-o` options, e.g. `ConnectTimeout=5`.
    #[serde(default)]
    pub options: Vec<String>,
}

/// The command templates. Context: `node`, `address`, `cluster`, `vars`,
/// `params` (what the playbook passed to patch), `packages` (a list: use
/// `{{#each packages}} {{this}}{{/each}}`), `version`, `secrets`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Commands {
    /// Prints the installed version or patch level.
    pub version: String,
    pub patch: String,
    /// Starts a reboot (it may drop the SSH connection).
    pub reboot: String,
    /// Exits 0 when the node's service is healthy.
    pub health: String,
    /// Returns the node to `{{version}}`; without it rollback cannot undo a patch.
    pub restore: Option<String>,
    #[serde(default = "default_boot_id")]
    pub boot_id: String,
    /// Prints a JSON object of extra facts.
    pub facts: Option<String>,
    /// Traffic concern (with `undrain`): takes the node out of service.
    pub drain: Option<String>,
    /// Traffic concern: puts the node back in service.
    pub undrain: Option<String>,
    /// Traffic concern: exits 0 while the node is in service. Without it,
    /// a node counts as in service until pitcrew drains it.
    pub in_service: Option<String>,
    /// Traffic concern: prints the node's open connections; `drain` polls
    /// it until 0. Without it, a drained node has none.
    pub connections: Option<String>,
    /// Probe concern: exits 0 when the node answers correctly.
    pub probe: Option<String>,
}

impl Commands {
    /// Optional commands by name, for validation and registration.
    fn optional(&self) -> [(&'static str, Option<&String>); 7] {
        [
            ("restore", self.restore.as_ref()),
            ("facts", self.facts.as_ref()),
            ("drain", self.drain.as_ref()),
            ("undrain", self.undrain.as_ref()),
            ("in_service", self.in_service.as_ref()),
            ("connections", self.connections.as_ref()),
            ("probe", self.probe.as_ref()),
        ]
    }

    /// Can serve the traffic concern.
    pub fn traffic(&self) -> bool {
        self.drain.is_some() && self.undrain.is_some()
    }
}

fn default_boot_id() -> String {
    "cat /proc/sys/kernel/random/boot_id".into()
}

/// Errors in a shell adapter's settings, found when the inventory loads.
pub fn validate(settings: &ShellSettings) -> Result<(), String> {
    let c = &settings.commands;
    if c.drain.is_some() != c.undrain.is_some() {
        return Err("commands `drain` and `undrain` go together: give both, or neither".into());
    }
    let required = [
        ("version", Some(&c.version)),
        ("patch", Some(&c.patch)),
        ("reboot", Some(&c.reboot)),
        ("health", Some(&c.health)),
        ("boot_id", Some(&c.boot_id)),
    ];
    for (name, template) in required.into_iter().chain(c.optional()) {
        let Some(template) = template else { continue };
        if template.contains("{{{") || template.contains("{{&") {
            return Err(format!(
                "command `{name}` uses unescaped interpolation; every value must be shell-quoted, use {{{{value}}}}"
            ));
        }
        templates().register_template_string(name, template).map_err(|e| format!("command `{name}`: {e}"))?;
    }
    Ok(())
}

fn templates() -> Handlebars<'static> {
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    hb.register_escape_fn(|value| shlex::try_quote(value).map_or_else(|_| "''".to_string(), |q| q.into_owned()));
    hb
}

/// One command's result.
#[derive(Debug)]
struct Ran {
    status: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn ok(&self) -> bool {
        self.status == Some(0)
    }
}

/// The shell host adapter of one inventory adapter instance.
pub struct ShellHost {
    settings: ShellSettings,
    templates: Handlebars<'static>,
    secrets: Vec<(String, String)>,
    control_dir: PathBuf,
    /// One SSH command at a time: the first sets up the ControlMaster and
    /// every later one reuses it (concurrent first connections would each
    /// pay a full handshake).
    ssh_turn: tokio::sync::Mutex<()>,
    /// Nodes this adapter drained, for inventories without `in_service`.
    drained: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// Long-lived local shells: a local command costs what it costs in a
    /// shell script, not a new `sh` process.
    local: crate::localsh::ShellPool,
}

impl ShellHost {
    pub fn new(settings: ShellSettings) -> Result<Self, String> {
        validate(&settings)?;
        let mut templates = templates();
        let c = &settings.commands;
        for (name, template) in [
            ("version", &c.version),
            ("patch", &c.patch),
            ("reboot", &c.reboot),
            ("health", &c.health),
            ("boot_id", &c.boot_id),
        ] {
            templates.register_template_string(name, template).map_err(|e| format!("command `{name}`: {e}"))?;
        }
        for (name, template) in c.optional() {
            if let Some(t) = template {
                templates.register_template_string(name, t).map_err(|e| format!("command `{name}`: {e}"))?;
            }
        }
        let secrets = settings
            .secrets
            .iter()
            .map(|name| {
                std::env::var(name)
                    .map(|v| (name.clone(), v))
                    .map_err(|_| format!("secret `{name}` is not set in the environment"))
            })
            .collect::<Result<_, _>>()?;
        // Short: a unix socket path must fit in 108 bytes.
        let control_dir = std::env::temp_dir().join(format!("pitcrew-ssh-{}", std::process::id()));
        Ok(Self {
            settings,
            templates,
            secrets,
            control_dir,
            ssh_turn: tokio::sync::Mutex::new(()),
            drained: Default::default(),
            local: crate::localsh::ShellPool::new(),
        })
    }

    fn redact(&self, text: &str) -> String {
        self.secrets
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .fold(text.to_string(), |t, (_, v)| t.replace(v, "[redacted]"))
    }

    fn render(&self, command: &str, node: NodeRef<'_>, params: &Params) -> Result<String, AdapterError> {
        let vars = serde_json::to_value(&node.node.vars).unwrap_or(Value::Null);
        let packages = params.get("packages").cloned().unwrap_or_else(|| json!([]));
        let secrets: BTreeMap<&str, &str> = self.secrets.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let context = json!({
            "node": node.node.name,
            "address": node.node.address.clone().unwrap_or_else(|| "127.0.0.1".into()),
            "cluster": node.cluster.name,
            "vars": vars,
            "params": params,
            "packages": packages,
            "version": params.get("version").cloned().unwrap_or(Value::Null),
            "secrets": secrets,
        });
        self.templates
            .render(command, &context)
            .map_err(|e| AdapterError::Failed(format!("cannot render command `{command}` for {}: {e}", node.node.name)))
    }

    /// The `ssh` arguments that run `script` on the node; `None` (run it
    /// locally) unless the settings ask for SSH and the node has an address
    /// (a node with `vars: { connection: local }` always runs locally).
    fn ssh_args(&self, node: NodeRef<'_>, script: &str) -> Option<Vec<String>> {
        let local = node.node.vars.get("connection").and_then(|v| v.as_str()) == Some("local");
        match (&self.settings.ssh, &node.node.address) {
            (Some(ssh), Some(address)) if !local => {
                // ssh keeps the first value of an option: the operator's come first.
                let mut args: Vec<String> = ssh.options.iter().flat_map(|o| ["-o".to_string(), o.clone()]).collect();
                args.extend([
                    "-o".into(),
                    "BatchMode=yes".into(),
                    "-o".into(),
                    "ControlMaster=auto".into(),
                    "-o".into(),
                    format!("ControlPath={}/%C", self.control_dir.display()),
                    "-o".into(),
                    "ControlPersist=60".into(),
                    "-o".into(),
                    "ConnectTimeout=5".into(),
                ]);
                if let Some(port) = ssh.port {
                    args.extend(["-p".into(), port.to_string()]);
                }
                if let Some(identity) = &ssh.identity {
                    args.extend([
                        "-i".into(),
                        identity.display().to_string(),
                        "-o".into(),
                        "IdentitiesOnly=yes".into(),
                    ]);
                }
                if let Some(known) = &ssh.known_hosts {
                    args.extend([
                        "-o".into(),
                        format!("UserKnownHostsFile={}", known.display()),
                        "-o".into(),
                        "StrictHostKeyChecking=yes".into(),
                    ]);
                }
                let target = match &ssh.user {
                    Some(user) => format!("{user}@{address}"),
                    None => address.clone(),
                };
                // `--` first: a target can never be read as an ssh option.
                args.extend(["--".into(), target, script.to_string()]);
                Some(args)
            }
            _ => None,
        }
    }

    /// Runs one named command on a node; `ctx` records it in the transcript.
    async fn run(
        &self,
        node: NodeRef<'_>,
        command: &str,
        params: &Params,
        timeout: Duration,
        ctx: Option<&CallCtx>,
    ) -> Result<Ran, AdapterError> {
        let script = self.render(command, node, params)?;
        let Some(args) = self.ssh_args(node, &script) else {
            return self.run_local(node, command, &script, timeout, ctx).await;
        };
        let _ = std::fs::create_dir_all(&self.control_dir);
        let _turn = self.ssh_turn.lock().await;
        let started = Instant::now();
        let child = tokio::process::Command::new("ssh")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| AdapterError::Unreachable(format!("cannot start ssh for {}: {e}", node.node.name)))?;
        let cancelled = async {
            match ctx {
                Some(ctx) => ctx.cancel.cancelled().await,
                None => std::future::pending().await,
            }
        };
        let output = tokio::select! {
            out = tokio::time::timeout(timeout, child.wait_with_output()) => out,
            _ = cancelled => return Err(AdapterError::Failed(format!("`{command}` on {} was cancelled", node.node.name))),
        };
        let output = match output {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => return Err(AdapterError::Failed(format!("`{command}` on {}: {e}", node.node.name))),
            Err(_) => {
                return Err(AdapterError::Timeout {
                    after: timeout,
                    message: format!("`{command}` on {} did not finish", node.node.name),
                })
            }
        };
        let ran = Ran {
            status: output.status.code(),
            stdout: self.redact(&String::from_utf8_lossy(&output.stdout)),
            stderr: self.redact(&String::from_utf8_lossy(&output.stderr)),
        };
        self.note(ctx, command, &script, "ssh", &ran, started);
        Ok(ran)
    }

    /// Runs a rendered local command in one of the adapter's long-lived
    /// shells (see [`crate::localsh`]).
    async fn run_local(
        &self,
        node: NodeRef<'_>,
        command: &str,
        script: &str,
        timeout: Duration,
        ctx: Option<&CallCtx>,
    ) -> Result<Ran, AdapterError> {
        use crate::localsh::PoolError;
        let started = Instant::now();
        let never = tokio_util::sync::CancellationToken::new();
        let cancel = ctx.map_or(&never, |ctx| &ctx.cancel);
        let output = self.local.run(script, timeout, cancel).await.map_err(|e| match e {
            PoolError::Timeout { after } => {
                AdapterError::Timeout { after, message: format!("`{command}` on {} did not finish", node.node.name) }
            }
            PoolError::Cancelled => AdapterError::Failed(format!("`{command}` on {} was cancelled", node.node.name)),
            PoolError::Start(e) => AdapterError::Unreachable(format!("cannot start sh for {}: {e}", node.node.name)),
            other => AdapterError::Failed(format!("`{command}` on {}: {other}", node.node.name)),
        })?;
        let ran = Ran {
            status: output.status,
            stdout: self.redact(&String::from_utf8_lossy(&output.stdout)),
            stderr: self.redact(&String::from_utf8_lossy(&output.stderr)),
        };
        self.note(ctx, command, script, "local", &ran, started);
        Ok(ran)
    }

    /// Records a command in the step's transcript (secrets redacted).
    fn note(&self, ctx: Option<&CallCtx>, command: &str, script: &str, via: &str, ran: &Ran, started: Instant) {
        if let Some(ctx) = ctx {
            ctx.transcript.push(json!({
                "command": command,
                "run": self.redact(script),
                "via": via,
                "status": ran.status,
                "stdout": truncate(&ran.stdout),
                "stderr": truncate(&ran.stderr),
                "duration_s": started.elapsed().as_secs_f64(),
            }));
        }
    }

    fn quick(&self) -> Duration {
        self.settings.timeout.min(Duration::from_secs(15))
    }

    async fn healthy(&self, node: NodeRef<'_>) -> bool {
        self.run(node, "health", &Params::new(), self.quick(), None).await.is_ok_and(|r| r.ok())
    }

    async fn output_of(&self, node: NodeRef<'_>, command: &str) -> Result<String, AdapterError> {
        let ran = self.run(node, command, &Params::new(), self.quick(), None).await?;
        if ran.ok() {
            Ok(ran.stdout.trim().to_string())
        } else {
            Err(failed(command, node, &ran))
        }
    }

    /// Polls health until it passes (and, with `boot_before`, the boot id
    /// changed) or `timeout` runs out.
    async fn wait_until_up(
        &self,
        node: NodeRef<'_>,
        timeout: Duration,
        boot_before: Option<&str>,
    ) -> Result<Duration, AdapterError> {
        let started = Instant::now();
        loop {
            if self.healthy(node).await {
                let rebooted = match boot_before {
                    None => true,
                    Some(before) => self.output_of(node, "boot_id").await.is_ok_and(|now| now != before),
                };
                if rebooted {
                    return Ok(started.elapsed());
                }
            }
            if started.elapsed() >= timeout {
                return Err(AdapterError::Timeout {
                    after: timeout,
                    message: format!("{} is not back and healthy", node.node.name),
                });
            }
            tokio::time::sleep(self.settings.poll_interval).await;
        }
    }
}

fn truncate(text: &str) -> String {
    const LIMIT: usize = 2048;
    if text.len() <= LIMIT {
        return text.to_string();
    }
    let cut = (0..=LIMIT).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
    format!("{}... [{} bytes cut]", &text[..cut], text.len() - cut)
}

fn failed(command: &str, node: NodeRef<'_>, ran: &Ran) -> AdapterError {
    let status = ran.status.map_or("a signal".to_string(), |s| format!("status {s}"));
    let detail = ran.stderr.trim().lines().last().unwrap_or_default().to_string();
    if ran.status == Some(255) {
        return AdapterError::Unreachable(format!("`{command}` on {}: ssh exited 255: {detail}", node.node.name));
    }
    AdapterError::Failed(format!("`{command}` on {} exited with {status}: {detail}", node.node.name))
}

#[async_trait]
impl HostAdapter for ShellHost {
    async fn state(&self, node: NodeRef<'_>) -> Result<HostState, AdapterError> {
        let (up, version, boot_id) =
            tokio::join!(self.healthy(node), self.output_of(node, "version"), self.output_of(node, "boot_id"));
        Ok(HostState { up, version: version.unwrap_or_else(|_| "unknown".into()), boot_id: boot_id.ok() })
    }

    fn reports_facts(&self) -> bool {
        self.settings.commands.facts.is_some()
    }

    async fn version(&self, node: NodeRef<'_>) -> Result<String, AdapterError> {
        self.output_of(node, "version").await
    }

    async fn boot_id(&self, node: NodeRef<'_>) -> Result<Option<String>, AdapterError> {
        Ok(self.output_of(node, "boot_id").await.ok())
    }

    /// The executor read the version before its intent and reports it as
    /// `from_version`; the patch reads only the version it led to.
    async fn patch(&self, node: NodeRef<'_>, params: &Params, ctx: &CallCtx) -> Result<PatchReport, AdapterError> {
        let ran = self.run(node, "patch", params, ctx.timeout, Some(ctx)).await?;
        if !ran.ok() {
            return Err(failed("patch", node, &ran));
        }
        let to_version = self.output_of(node, "version").await?;
        Ok(PatchReport { from_version: String::new(), to_version, snapshot: None })
    }

    async fn restore(&self, node: NodeRef<'_>, patch: &PatchReport, ctx: &CallCtx) -> Result<(), AdapterError> {
        if self.settings.commands.restore.is_none() {
            return Err(AdapterError::Unsupported("restore (no `restore` command in the inventory)".into()));
        }
        let mut params = Params::new();
        params.insert("version".into(), json!(patch.from_version));
        let started = Instant::now();
        let ran = self.run(node, "restore", &params, ctx.timeout, Some(ctx)).await?;
        if !ran.ok() {
            return Err(failed("restore", node, &ran));
        }
        // A restore may restart the service: it is done when the node is healthy.
        self.wait_until_up(node, ctx.timeout.saturating_sub(started.elapsed()), None).await.map(|_| ())
    }

    async fn reboot(&self, node: NodeRef<'_>, ctx: &CallCtx) -> Result<Duration, AdapterError> {
        let boot_before = match &ctx.boot_id {
            Some(boot) => Some(boot.clone()),
            None => self.output_of(node, "boot_id").await.ok(),
        };
        let started = Instant::now();
        let ran = self.run(node, "reboot", &Params::new(), self.settings.timeout.min(ctx.timeout), Some(ctx)).await?;
        // 255: ssh lost the connection because the host went down, as it should.
        if !ran.ok() && ran.status != Some(255) {
            return Err(failed("reboot", node, &ran));
        }
        let left = ctx.timeout.saturating_sub(started.elapsed());
        self.wait_until_up(node, left, boot_before.as_deref()).await?;
        Ok(started.elapsed())
    }

    async fn wait_healthy(&self, node: NodeRef<'_>, ctx: &CallCtx) -> Result<(), AdapterError> {
        self.wait_until_up(node, ctx.timeout, None).await.map(|_| ())
    }

    async fn is_up(&self, node: NodeRef<'_>) -> Result<bool, AdapterError> {
        Ok(self.healthy(node).await)
    }

    async fn facts(&self, node: NodeRef<'_>) -> Result<Facts, AdapterError> {
        let mut facts = Facts::new();
        facts.insert("version".into(), json!(self.output_of(node, "version").await?));
        if let Ok(boot) = self.output_of(node, "boot_id").await {
            facts.insert("boot_id".into(), json!(boot));
        }
        if self.settings.commands.facts.is_some() {
            let text = self.output_of(node, "facts").await?;
            match serde_json::from_str::<Value>(&text) {
                Ok(Value::Object(map)) => facts.extend(map),
                _ => {
                    return Err(AdapterError::Failed(format!(
                        "the `facts` command on {} did not print a JSON object",
                        node.node.name
                    )))
                }
            }
        }
        Ok(facts)
    }
}

impl ShellHost {
    /// Runs a command that must succeed, recorded in the step's transcript.
    async fn must(&self, node: NodeRef<'_>, command: &str, ctx: &CallCtx) -> Result<(), AdapterError> {
        let ran = self.run(node, command, &Params::new(), ctx.timeout, Some(ctx)).await?;
        if ran.ok() {
            Ok(())
        } else {
            Err(failed(command, node, &ran))
        }
    }

    async fn connections(&self, node: NodeRef<'_>) -> Result<u64, AdapterError> {
        if self.settings.commands.connections.is_none() {
            return Ok(0);
        }
        let text = self.output_of(node, "connections").await?;
        text.parse().map_err(|_| {
            AdapterError::Failed(format!(
                "the `connections` command on {} printed `{text}`, not a number",
                node.node.name
            ))
        })
    }
}

/// The traffic concern from `drain`, `undrain`, `in_service` and
/// `connections` commands.
#[async_trait]
impl TrafficAdapter for ShellHost {
    async fn state(&self, node: NodeRef<'_>) -> Result<TrafficState, AdapterError> {
        let in_service = if self.settings.commands.in_service.is_some() {
            self.run(node, "in_service", &Params::new(), self.quick(), None).await?.ok()
        } else {
            !self.drained.lock().map_or(false, |d| d.contains(&node.node.name))
        };
        Ok(TrafficState { in_service, connections: self.connections(node).await? })
    }

    async fn in_service(&self, node: NodeRef<'_>) -> Result<bool, AdapterError> {
        if self.settings.commands.in_service.is_some() {
            Ok(self.run(node, "in_service", &Params::new(), self.quick(), None).await?.ok())
        } else {
            Ok(!self.drained.lock().map_or(false, |d| d.contains(&node.node.name)))
        }
    }

    async fn drain(&self, node: NodeRef<'_>, ctx: &CallCtx) -> Result<DrainReport, AdapterError> {
        let started = Instant::now();
        self.must(node, "drain", ctx).await?;
        if let Ok(mut d) = self.drained.lock() {
            d.insert(node.node.name.clone());
        }
        // Draining lets open connections finish: the first count is the
        // number there were when the drain began.
        let mut connections_at_start = None;
        loop {
            let open = self.connections(node).await?;
            let connections_at_start = *connections_at_start.get_or_insert(open);
            if open == 0 {
                return Ok(DrainReport { waited: started.elapsed(), connections_at_start });
            }
            if started.elapsed() >= ctx.timeout {
                return Err(AdapterError::Timeout {
                    after: ctx.timeout,
                    message: format!("{} still has {open} connections", node.node.name),
                });
            }
            tokio::select! {
                _ = tokio::time::sleep(self.settings.poll_interval) => {}
                _ = ctx.cancel.cancelled() => {
                    return Err(AdapterError::Failed(format!("draining {} was cancelled", node.node.name)))
                }
            }
        }
    }

    async fn undrain(&self, node: NodeRef<'_>, ctx: &CallCtx) -> Result<(), AdapterError> {
        self.must(node, "undrain", ctx).await?;
        if let Ok(mut d) = self.drained.lock() {
            d.remove(&node.node.name);
        }
        Ok(())
    }
}

/// The probe concern from a `probe` command: one request per probe.
#[async_trait]
impl ProbeAdapter for ShellHost {
    async fn probe(&self, node: NodeRef<'_>, ctx: &CallCtx) -> Result<ProbeReport, AdapterError> {
        let started = Instant::now();
        let ran = self.run(node, "probe", &Params::new(), ctx.timeout, Some(ctx)).await?;
        Ok(ProbeReport {
            requests: 1,
            failed: u64::from(!ran.ok()),
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
        })
    }

    async fn sample(&self, cluster: &Cluster) -> Result<TrafficSample, AdapterError> {
        let _ = cluster;
        Ok(TrafficSample::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolated_values_are_shell_quoted() {
        let hb = templates();
        let out = hb
            .render_template(
                "apt-get install -y{{#each packages}} {{this}}{{/each}} # {{node}}",
                &json!({"packages": ["nginx", "x; rm -rf /"], "node": "web-1 $(id)"}),
            )
            .expect("render");
        assert_eq!(out, "apt-get install -y nginx 'x; rm -rf /' # 'web-1 $(id)'");
    }

    #[test]
    fn packages_come_from_the_playbook_or_else_the_node() {
        let template = "upgrade{{#each packages}} {{this}}{{/each}}{{#unless packages}}{{#each vars.packages}} {{this}}{{/each}}{{/unless}}";
        let hb = templates();
        let from_vars = hb
            .render_template(template, &json!({"packages": [], "vars": {"packages": ["nginx", "openssl"]}}))
            .expect("render");
        assert_eq!(from_vars, "upgrade nginx openssl");
        let given = hb
            .render_template(template, &json!({"packages": ["curl"], "vars": {"packages": ["nginx"]}}))
            .expect("render");
        assert_eq!(given, "upgrade curl");
    }

    #[test]
    fn unescaped_interpolation_and_bad_templates_are_refused() {
        let mut settings: ShellSettings = serde_yaml::from_str(
            "commands: { version: 'cat v', patch: 'echo {{{version}}} > v', reboot: 'true', health: 'true' }",
        )
        .expect("settings");
        assert!(validate(&settings).unwrap_err().contains("unescaped"));
        settings.commands.patch = "echo {{#if}}".into();
        assert!(validate(&settings).unwrap_err().starts_with("command `patch`"));
    }
}
