//! `haproxy`: the traffic concern over HAProxy's runtime API (a stats
//! socket at `level admin`, unix or TCP).
//!
//! drain = `set server B/S state drain`, then wait until `show stat` reports
//! zero current sessions for the server; undrain = `set server B/S state
//! ready`, then wait until the health check reports it UP again, so the
//! guards never count a server that takes no traffic yet. The server name is
//! the node's `vars.server`, or the node name.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pitcrew_runtime::adapter::{CallCtx, DrainReport, NodeRef, TrafficAdapter, TrafficState};
use pitcrew_runtime::AdapterError;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaproxySettings {
    /// The runtime API unix socket (`stats socket ... level admin`).
    pub socket: Option<PathBuf>,
    /// Or its TCP address, `host:port`.
    pub address: Option<String>,
    /// The backend the cluster's nodes are servers of.
    pub backend: String,
    #[serde(default = "default_poll", with = "humantime_serde")]
    pub poll_interval: Duration,
}

fn default_poll() -> Duration {
    Duration::from_millis(200)
}

pub fn validate(settings: &HaproxySettings) -> Result<(), String> {
    match (&settings.socket, &settings.address) {
        (None, None) => Err("set `socket` (unix socket path) or `address` (host:port) of the runtime API".into()),
        (Some(_), Some(_)) => Err("set only one of `socket` and `address`".into()),
        _ => Ok(()),
    }
}

/// One server's row of `show stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerStat {
    pub status: String,
    pub sessions: u64,
}

/// Finds a server's status and current sessions in `show stat` CSV output.
pub fn parse_stat(csv: &str, backend: &str, server: &str) -> Option<ServerStat> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next()?.trim_start_matches("# ").split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let (px, sv, scur, status) = (col("pxname")?, col("svname")?, col("scur")?, col("status")?);
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|f| f.get(px) == Some(&backend) && f.get(sv) == Some(&server))
        .map(|f| ServerStat {
            status: f.get(status).copied().unwrap_or_default().to_string(),
            sessions: f.get(scur).and_then(|s| s.parse().ok()).unwrap_or(0),
        })
}

/// Whether HAProxy sends new requests to a server in this state.
pub fn serving(status: &str) -> bool {
    status == "UP" || status.starts_with("UP ") || status == "no check"
}

pub struct HaproxyTraffic {
    settings: HaproxySettings,
}

impl HaproxyTraffic {
    pub fn new(settings: HaproxySettings) -> Result<Self, String> {
        validate(&settings)?;
        Ok(Self { settings })
    }

    fn server(node: NodeRef<'_>) -> String {
        node.node.vars.get("server").and_then(|v| v.as_str()).map_or_else(|| node.node.name.clone(), str::to_string)
    }

    /// Sends one runtime API command and returns the answer.
    async fn command(&self, command: &str) -> Result<String, AdapterError> {
        let unreachable = |e: std::io::Error| AdapterError::Unreachable(format!("HAProxy runtime API: {e}"));
        let mut answer = String::new();
        let line = format!("{command}\n");
        match (&self.settings.socket, &self.settings.address) {
            (Some(path), _) => {
                let mut stream = tokio::net::UnixStream::connect(path).await.map_err(unreachable)?;
                stream.write_all(line.as_bytes()).await.map_err(unreachable)?;
                stream.read_to_string(&mut answer).await.map_err(unreachable)?;
            }
            (None, Some(address)) => {
                let mut stream = tokio::net::TcpStream::connect(address).await.map_err(unreachable)?;
                stream.write_all(line.as_bytes()).await.map_err(unreachable)?;
                stream.read_to_string(&mut answer).await.map_err(unreachable)?;
            }
            (None, None) => return Err(AdapterError::Failed("no runtime API configured".into())),
        }
        Ok(answer)
    }

    async fn stat(&self, server: &str) -> Result<ServerStat, AdapterError> {
        let csv = self.command("show stat").await?;
        parse_stat(&csv, &self.settings.backend, server).ok_or_else(|| {
            AdapterError::Failed(format!(
                "HAProxy has no server `{}/{server}` (check backend and vars.server)",
                self.settings.backend
            ))
        })
    }

    async fn set_state(&self, server: &str, state: &str, ctx: &CallCtx) -> Result<(), AdapterError> {
        // The runtime API reads one command per line: a name must be one word.
        if server.is_empty() || server.chars().any(|c| c.is_whitespace() || c.is_control() || c == ';') {
            return Err(AdapterError::Failed(format!("`{server}` is not a valid HAProxy server name (vars.server)")));
        }
        let command = format!("set server {}/{server} state {state}", self.settings.backend);
        let answer = self.command(&command).await?;
        ctx.transcript.push(serde_json::json!({ "command": command, "answer": answer.trim() }));
        if answer.trim().is_empty() {
            Ok(())
        } else {
            Err(AdapterError::Failed(format!("HAProxy refused `{command}`: {}", answer.trim())))
        }
    }
}

#[async_trait]
impl TrafficAdapter for HaproxyTraffic {
    async fn state(&self, node: NodeRef<'_>) -> Result<TrafficState, AdapterError> {
        let stat = self.stat(&Self::server(node)).await?;
        Ok(TrafficState { in_service: serving(&stat.status), connections: stat.sessions })
    }

    async fn drain(&self, node: NodeRef<'_>, ctx: &CallCtx) -> Result<DrainReport, AdapterError> {
        let server = Self::server(node);
        let connections_at_start = self.stat(&server).await?.sessions;
        self.set_state(&server, "drain", ctx).await?;
        let started = Instant::now();
        loop {
            let stat = self.stat(&server).await?;
            if stat.sessions == 0 {
                return Ok(DrainReport { waited: started.elapsed(), connections_at_start });
            }
            if started.elapsed() >= ctx.timeout {
                return Err(AdapterError::Timeout {
                    after: ctx.timeout,
                    message: format!("{} session(s) still open on {server}", stat.sessions),
                });
            }
            tokio::time::sleep(self.settings.poll_interval).await;
        }
    }

    async fn undrain(&self, node: NodeRef<'_>, ctx: &CallCtx) -> Result<(), AdapterError> {
        let server = Self::server(node);
        self.set_state(&server, "ready", ctx).await?;
        let started = Instant::now();
        loop {
            let stat = self.stat(&server).await?;
            if serving(&stat.status) {
                return Ok(());
            }
            if started.elapsed() >= ctx.timeout {
                return Err(AdapterError::Timeout {
                    after: ctx.timeout,
                    message: format!("{server} is ready but its health check still says {}", stat.status),
                });
            }
            tokio::time::sleep(self.settings.poll_interval).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight\n\
web_front,FRONTEND,,,3,9,2000,120,0,0,0,0,0,,,,,OPEN,\n\
web_back,web1,0,0,2,5,,40,0,0,,0,,0,0,0,0,UP,1\n\
web_back,web2,0,0,0,4,,38,0,0,,0,,0,0,0,0,DRAIN,1\n\
web_back,BACKEND,0,0,2,9,200,78,0,0,0,0,,0,0,0,0,UP,2\n";

    #[test]
    fn show_stat_rows_are_found_by_backend_and_server() {
        assert_eq!(parse_stat(STAT, "web_back", "web1"), Some(ServerStat { status: "UP".into(), sessions: 2 }));
        assert_eq!(parse_stat(STAT, "web_back", "web2").map(|s| s.status), Some("DRAIN".into()));
        assert_eq!(parse_stat(STAT, "web_back", "web9"), None);
        assert!(serving("UP") && serving("UP 1/2") && !serving("DRAIN") && !serving("MAINT") && !serving("DOWN"));
    }
}
