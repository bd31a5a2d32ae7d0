//! `redis`: the replication concern of a Redis primary/replica pair.
//!
//! Roles and sync come from `INFO replication`: a replica is in sync when
//! its link is up, its offset matches the primary's (or trails it by less
//! than the inventory's lag), and the primary heard from it recently.
//! Switchover is `FAILOVER TO host port` (Redis 6.2+: the primary pauses
//! writes until the target has every one, then they swap roles); where the
//! server refuses it, pause-and-swap does the same by hand. Failback is the
//! same operation towards the unpatched node. A node's address is its
//! `address` (default 127.0.0.1) and `vars.port` (default 6379). The
//! password is read from the environment variable `password_env` names and
//! is never written anywhere.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pitcrew_runtime::adapter::{CallCtx, ReplicaSync, ReplicationAdapter, SwitchoverReport, SyncReport};
use pitcrew_runtime::{AdapterError, Cluster, NodeSpec, Role};
use redis::aio::MultiplexedConnection;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// Environment variable holding the password (the password itself is
    /// never in the inventory).
    pub password_env: Option<String>,
    #[serde(default = "default_poll", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How long FAILOVER may hold writes while the target catches up.
    #[serde(default = "default_failover", with = "humantime_serde")]
    pub failover_timeout: Duration,
    /// `auto` (FAILOVER where the server has it, else pause-and-swap),
    /// `failover`, or `pause` (pause-and-swap: polls offsets itself, so it
    /// does not wait for the replica's once-a-second acknowledgement).
    #[serde(default)]
    pub method: SwitchMethod,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SwitchMethod {
    #[default]
    Auto,
    Failover,
    Pause,
}

fn default_poll() -> Duration {
    Duration::from_millis(50)
}

fn default_failover() -> Duration {
    Duration::from_secs(5)
}

pub struct RedisReplication {
    settings: RedisSettings,
    password: Option<String>,
}

fn endpoint(node: &NodeSpec) -> (String, u16) {
    let host = node.address.clone().unwrap_or_else(|| "127.0.0.1".into());
    let port =
        node.vars.get("port").and_then(serde_yaml::Value::as_u64).and_then(|p| u16::try_from(p).ok()).unwrap_or(6379);
    (host, port)
}

/// `INFO` output as key/value pairs.
pub fn parse_info(text: &str) -> HashMap<String, String> {
    text.lines().filter_map(|l| l.trim().split_once(':')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The primary's view of one replica (`slaveN:ip=..,port=..,state=..,offset=..,lag=..`).
pub fn replica_entry(primary: &HashMap<String, String>, port: u16) -> Option<HashMap<String, String>> {
    primary.iter().filter(|(k, _)| k.starts_with("slave") && k[5..].chars().all(|c| c.is_ascii_digit())).find_map(
        |(_, v)| {
            let fields: HashMap<String, String> =
                v.split(',').filter_map(|kv| kv.split_once('=')).map(|(a, b)| (a.to_string(), b.to_string())).collect();
            (fields.get("port").map(String::as_str) == Some(port.to_string().as_str())).then_some(fields)
        },
    )
}

impl RedisReplication {
    pub fn new(settings: RedisSettings) -> Result<Self, String> {
        let password = match &settings.password_env {
            Some(var) => {
                Some(std::env::var(var).map_err(|_| format!("`{var}` (password_env) is not set in the environment"))?)
            }
            None => None,
        };
        Ok(Self { settings, password })
    }

    async fn connect(&self, node: &NodeSpec) -> Result<MultiplexedConnection, AdapterError> {
        let (host, port) = endpoint(node);
        let info = redis::ConnectionInfo {
            addr: redis::ConnectionAddr::Tcp(host.clone(), port),
            redis: redis::RedisConnectionInfo { password: self.password.clone(), ..Default::default() },
        };
        let unreachable = |e: String| AdapterError::Unreachable(format!("redis {} ({host}:{port}): {e}", node.name));
        let client = redis::Client::open(info).map_err(|e| unreachable(e.to_string()))?;
        tokio::time::timeout(Duration::from_secs(2), client.get_multiplexed_async_connection())
            .await
            .map_err(|_| unreachable("no answer within 2s".into()))?
            .map_err(|e| unreachable(e.to_string()))
    }

    async fn query(&self, node: &NodeSpec, command: &redis::Cmd) -> Result<redis::Value, AdapterError> {
        let mut con = self.connect(node).await?;
        tokio::time::timeout(Duration::from_secs(5), command.query_async::<redis::Value>(&mut con))
            .await
            .map_err(|_| AdapterError::Unreachable(format!("redis {}: no answer within 5s", node.name)))?
            .map_err(|e| AdapterError::Failed(format!("redis {}: {e}", node.name)))
    }

    async fn info(&self, node: &NodeSpec) -> Result<HashMap<String, String>, AdapterError> {
        let mut con = self.connect(node).await?;
        let text: String =
            tokio::time::timeout(Duration::from_secs(5), redis::cmd("INFO").arg("replication").query_async(&mut con))
                .await
                .map_err(|_| AdapterError::Unreachable(format!("redis {}: no answer within 5s", node.name)))?
                .map_err(|e| AdapterError::Failed(format!("redis {}: {e}", node.name)))?;
        Ok(parse_info(&text))
    }

    async fn primary<'c>(&self, cluster: &'c Cluster) -> Result<(&'c NodeSpec, HashMap<String, String>), AdapterError> {
        for node in &cluster.nodes {
            if let Ok(info) = self.info(node).await {
                if info.get("role").map(String::as_str) == Some("master") {
                    return Ok((node, info));
                }
            }
        }
        Err(AdapterError::Failed(format!("no node of `{}` reports role:master", cluster.name)))
    }

    /// Waits until `target` is the primary and every other node follows it.
    async fn wait_roles(&self, cluster: &Cluster, target: &NodeSpec, timeout: Duration) -> Result<(), AdapterError> {
        let started = Instant::now();
        loop {
            let report = self.sync_status(cluster).await;
            if let Ok(report) = &report {
                if report.primary == target.name && report.replicas.iter().all(|r| r.link_up) {
                    return Ok(());
                }
            }
            if started.elapsed() >= timeout {
                return Err(AdapterError::Timeout {
                    after: timeout,
                    message: format!("{} did not become the primary", target.name),
                });
            }
            tokio::time::sleep(self.settings.poll_interval).await;
        }
    }

    /// Pause writes on the primary, wait for the target to have them all,
    /// promote it, re-point the old primary, unpause.
    async fn pause_and_swap(&self, old: &NodeSpec, target: &NodeSpec, ctx: &CallCtx) -> Result<(), AdapterError> {
        let ms = self.settings.failover_timeout.as_millis().to_string();
        self.query(old, redis::cmd("CLIENT").arg("PAUSE").arg(&ms).arg("WRITE")).await?;
        ctx.transcript.push(serde_json::json!({ "redis": format!("CLIENT PAUSE {ms} WRITE"), "on": old.name }));
        let started = Instant::now();
        let caught_up = loop {
            let (p, r) = (self.info(old).await?, self.info(target).await?);
            if p.contains_key("master_repl_offset") && p.get("master_repl_offset") == r.get("slave_repl_offset") {
                break true;
            }
            if started.elapsed() >= self.settings.failover_timeout {
                break false;
            }
            tokio::time::sleep(self.settings.poll_interval).await;
        };
        if !caught_up {
            self.query(old, redis::cmd("CLIENT").arg("UNPAUSE")).await?;
            return Err(AdapterError::Failed(format!(
                "{} did not catch up while writes were paused; nothing was switched",
                target.name
            )));
        }
        let (host, port) = endpoint(target);
        self.query(target, redis::cmd("REPLICAOF").arg("NO").arg("ONE")).await?;
        self.query(old, redis::cmd("REPLICAOF").arg(&host).arg(port)).await?;
        self.query(old, redis::cmd("CLIENT").arg("UNPAUSE")).await?;
        ctx.transcript
            .push(serde_json::json!({ "redis": "REPLICAOF NO ONE / REPLICAOF / CLIENT UNPAUSE", "to": target.name }));
        Ok(())
    }
}

#[async_trait]
impl ReplicationAdapter for RedisReplication {
    async fn roles(&self, cluster: &Cluster) -> Result<Vec<(String, Role)>, AdapterError> {
        let mut roles = Vec::new();
        for node in &cluster.nodes {
            // A node that does not answer has no role now.
            if let Ok(info) = self.info(node).await {
                match info.get("role").map(String::as_str) {
                    Some("master") => roles.push((node.name.clone(), Role::Active)),
                    Some("slave") => roles.push((node.name.clone(), Role::Passive)),
                    _ => {}
                }
            }
        }
        Ok(roles)
    }

    async fn sync_status(&self, cluster: &Cluster) -> Result<SyncReport, AdapterError> {
        let (primary, pinfo) = self.primary(cluster).await?;
        let primary_offset: u64 = pinfo.get("master_repl_offset").and_then(|o| o.parse().ok()).unwrap_or(0);
        let mut replicas = Vec::new();
        for node in cluster.nodes.iter().filter(|n| n.name != primary.name) {
            let (_, port) = endpoint(node);
            let seen = replica_entry(&pinfo, port);
            let (link_up, offset) = match self.info(node).await {
                Ok(info) => (
                    info.get("master_link_status").map(String::as_str) == Some("up") && seen.is_some(),
                    info.get("slave_repl_offset").and_then(|o| o.parse::<u64>().ok()).unwrap_or(0),
                ),
                Err(_) => (false, 0),
            };
            // Level with the primary: no lag. Behind: as old as the last
            // acknowledgement the primary has from it (Redis's own `lag`).
            let heard =
                seen.as_ref().and_then(|s| s.get("lag")).and_then(|l| l.parse::<f64>().ok()).unwrap_or(f64::INFINITY);
            let lag_seconds = match (link_up, offset >= primary_offset) {
                (false, _) => f64::INFINITY,
                (true, true) => 0.0,
                (true, false) => heard,
            };
            replicas.push(ReplicaSync { node: node.name.clone(), link_up, lag_seconds });
        }
        Ok(SyncReport { primary: primary.name.clone(), replicas })
    }

    async fn wait_sync(&self, cluster: &Cluster, max_lag: Duration, ctx: &CallCtx) -> Result<SyncReport, AdapterError> {
        let started = Instant::now();
        loop {
            let report = self.sync_status(cluster).await;
            match report {
                Ok(r) if r.in_sync(max_lag) => return Ok(r),
                Ok(r) if started.elapsed() >= ctx.timeout => return Ok(r),
                Err(e) if started.elapsed() >= ctx.timeout => return Err(e),
                _ => tokio::time::sleep(self.settings.poll_interval).await,
            }
        }
    }

    async fn switchover(
        &self,
        cluster: &Cluster,
        target: &NodeSpec,
        ctx: &CallCtx,
    ) -> Result<SwitchoverReport, AdapterError> {
        let (old, _) = self.primary(cluster).await?;
        let (host, port) = endpoint(target);
        let started = Instant::now();
        let ms = self.settings.failover_timeout.as_millis().to_string();
        if self.settings.method == SwitchMethod::Pause {
            self.pause_and_swap(old, target, ctx).await?;
        } else {
            let failover =
                self.query(old, redis::cmd("FAILOVER").arg("TO").arg(&host).arg(port).arg("TIMEOUT").arg(&ms)).await;
            ctx.transcript.push(serde_json::json!({ "redis": format!("FAILOVER TO {host} {port} TIMEOUT {ms}"), "on": old.name, "answer": format!("{failover:?}") }));
            match failover {
                Ok(_) => {}
                Err(e) if self.settings.method == SwitchMethod::Failover => return Err(e),
                Err(_) => self.pause_and_swap(old, target, ctx).await?,
            }
        }
        self.wait_roles(cluster, target, ctx.timeout.saturating_sub(started.elapsed())).await?;
        Ok(SwitchoverReport { from: old.name.clone(), to: target.name.clone(), paused: started.elapsed() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replication_info_and_replica_entries_parse() {
        let info = parse_info("# Replication\r\nrole:master\r\nconnected_slaves:1\r\nslave0:ip=127.0.0.1,port=7001,state=online,offset=420,lag=0\r\nmaster_repl_offset:420\r\n");
        assert_eq!(info["role"], "master");
        assert_eq!(info["master_repl_offset"], "420");
        let entry = replica_entry(&info, 7001).expect("replica");
        assert_eq!(entry["state"], "online");
        assert!(replica_entry(&info, 7002).is_none());
    }
}
