//! Built-ins that touch a cluster. Each is one step of the executor:
//! guard, intent, adapter call, outcome, compensation, event.

use rhai::plugin::*;

#[export_module]
pub mod steps_api {
    use std::time::Duration;

    use rhai::{Dynamic, Map, NativeCallContext};

    use crate::handles::{ClusterHandle, NodeHandle};
    use crate::host::{host, to_dynamic, to_json, to_rhai, RhaiResult};

    /// Takes a pool node out of service and waits until its connections
    /// reach zero. Refused if it would leave fewer than `min_in_service`
    /// nodes serving. Rollback puts the node back in service.
    ///
    /// ```rhai
    /// let n = cluster("web").nodes[0];
    /// let r = drain(n);
    /// log(`${r.connections} connections closed in ${r.waited_s}s`);
    /// undrain(n);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn drain(ctx: NativeCallContext, n: NodeHandle) -> RhaiResult<Map> {
        let report = host(&ctx)?.exec.drain(&n.name).map_err(to_rhai)?;
        let mut map = Map::new();
        map.insert("connections".into(), (report.connections_at_start as i64).into());
        map.insert("waited_s".into(), report.waited.as_secs_f64().into());
        Ok(map)
    }

    /// Puts a healthy pool node back in service. Refused if the node is down.
    ///
    /// ```rhai
    /// let n = cluster("web").nodes[1];
    /// drain(n);
    /// undrain(n);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn undrain(ctx: NativeCallContext, n: NodeHandle) -> RhaiResult<()> {
        host(&ctx)?.exec.undrain(&n.name).map_err(to_rhai)
    }

    /// Patches a node that serves nobody (drained, or passive). Refused for
    /// a node in service or an active node. Rollback restores the version
    /// the node had (snapshot or downgrade, where the adapter can).
    ///
    /// ```rhai
    /// let db = cluster("db-pair");
    /// let r = patch(db.passive());
    /// log(`${r.from} -> ${r.to}`);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn patch(ctx: NativeCallContext, n: NodeHandle) -> RhaiResult<Map> {
        patch_with(ctx, n, Map::new())
    }

    /// Patches with parameters for the host adapter (e.g. `version`,
    /// `packages`).
    ///
    /// ```rhai
    /// let db = cluster("db-pair");
    /// patch(db.passive(), #{ version: "15.7" });
    /// ```
    #[rhai_fn(name = "patch", return_raw)]
    pub fn patch_with(ctx: NativeCallContext, n: NodeHandle, params: Map) -> RhaiResult<Map> {
        let params = match to_json(&Dynamic::from_map(params))? {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        let report = host(&ctx)?.exec.patch(&n.name, &params).map_err(to_rhai)?;
        let mut map = Map::new();
        map.insert("from".into(), report.from_version.into());
        map.insert("to".into(), report.to_version.into());
        map.insert("snapshot".into(), report.snapshot.map_or(Dynamic::UNIT, Into::into));
        Ok(map)
    }

    /// Reboots a node that serves nobody and waits until it is back (up to
    /// the policy's `reboot_timeout`). Returns the downtime in seconds.
    ///
    /// ```rhai
    /// let standby = cluster("db-pair").passive();
    /// let down = reboot(standby);
    /// log(`back after ${down}s`);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn reboot(ctx: NativeCallContext, n: NodeHandle) -> RhaiResult<f64> {
        host(&ctx)?.exec.reboot(&n.name).map(|d| d.as_secs_f64()).map_err(to_rhai)
    }

    /// Waits until the node answers its health check (up to the policy's
    /// `reboot_timeout`).
    ///
    /// ```rhai
    /// wait_healthy(cluster("db-pair").passive());
    /// ```
    #[rhai_fn(return_raw)]
    pub fn wait_healthy(ctx: NativeCallContext, n: NodeHandle) -> RhaiResult<()> {
        host(&ctx)?.exec.wait_healthy(&n.name, None).map_err(to_rhai)
    }

    /// Waits up to `timeout_s` seconds until the node answers.
    ///
    /// ```rhai
    /// wait_healthy(cluster("db-pair").passive(), 120);
    /// ```
    #[rhai_fn(name = "wait_healthy", return_raw)]
    pub fn wait_healthy_for(ctx: NativeCallContext, n: NodeHandle, timeout_s: i64) -> RhaiResult<()> {
        let timeout =
            Duration::from_secs(u64::try_from(timeout_s).map_err(|_| "wait_healthy: the timeout must be positive")?);
        host(&ctx)?.exec.wait_healthy(&n.name, Some(timeout)).map_err(to_rhai)
    }

    /// Smoke test: sends a few requests to the node. Throws if it answers
    /// none; returns `#{ requests, failed, error_rate, latency_ms }`.
    ///
    /// ```rhai
    /// let r = probe(cluster("web").nodes[0]);
    /// log(`error rate ${r.error_rate}`);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn probe(ctx: NativeCallContext, n: NodeHandle) -> RhaiResult<Map> {
        let r = host(&ctx)?.exec.probe(&n.name).map_err(to_rhai)?;
        let mut map = Map::new();
        map.insert("requests".into(), (r.requests as i64).into());
        map.insert("failed".into(), (r.failed as i64).into());
        map.insert("error_rate".into(), if r.requests == 0 { 0.0 } else { r.failed as f64 / r.requests as f64 }.into());
        map.insert("latency_ms".into(), r.latency_ms.into());
        Ok(map)
    }

    /// User traffic a cluster has seen since the run started, from its probe:
    /// `#{ requests, failed, error_rate, interruption_s }`.
    ///
    /// ```rhai
    /// let t = probe(cluster("web"));
    /// log(`${t.failed} of ${t.requests} requests failed`);
    /// ```
    #[rhai_fn(name = "probe", return_raw)]
    pub fn probe_cluster(ctx: NativeCallContext, c: ClusterHandle) -> RhaiResult<Map> {
        let host = host(&ctx)?;
        let cluster = host.exec.cluster(&c.name).map_err(to_rhai)?;
        let sample = host.exec.sample(cluster).map_err(to_rhai)?.unwrap_or_default();
        let mut map = Map::new();
        map.insert("requests".into(), (sample.requests as i64).into());
        map.insert("failed".into(), (sample.failed as i64).into());
        let rate = if sample.requests == 0 { 0.0 } else { sample.failed as f64 / sample.requests as f64 };
        map.insert("error_rate".into(), rate.into());
        map.insert("interruption_s".into(), sample.interruption.as_secs_f64().into());
        Ok(map)
    }

    /// Checks replication of an active/passive cluster, waiting up to the
    /// policy's `sync_wait` for replicas to catch up. Throws `out_of_sync`
    /// unless every replica is linked and within `max_sync_lag`. A
    /// successful check is what allows the next `switchover`.
    ///
    /// ```rhai
    /// let r = check_sync(cluster("db-pair"));
    /// log(`primary ${r.primary}, lag ${r.replicas[0].lag_seconds}s`);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn check_sync(ctx: NativeCallContext, c: ClusterHandle) -> RhaiResult<Dynamic> {
        let report = host(&ctx)?.exec.check_sync(&c.name).map_err(to_rhai)?;
        to_dynamic(report)
    }

    /// Compares the facts of a cluster's nodes: `#{ clean, peers, critical,
    /// unreachable }`, where `peers` lists every fact the nodes disagree on
    /// (`#{ fact, values, critical }`) and `critical` those the inventory
    /// marks in `critical_facts`.
    ///
    /// ```rhai
    /// let db = cluster("db-pair");
    /// let d = drift(db);
    /// if d.critical.len() > 0 { throw `peers differ in ${d.critical[0].fact}`; }
    /// ```
    #[rhai_fn(return_raw)]
    pub fn drift(ctx: NativeCallContext, c: ClusterHandle) -> RhaiResult<Map> {
        let host = host(&ctx)?;
        let cluster = host.exec.cluster(&c.name).map_err(to_rhai)?;
        let report = host.exec.drift(cluster).map_err(to_rhai)?;
        let critical: Vec<_> = report.critical().cloned().collect();
        let mut map = Map::new();
        map.insert("clean".into(), report.peers.is_empty().into());
        map.insert("critical".into(), to_dynamic(critical)?);
        map.insert("peers".into(), to_dynamic(&report.peers)?);
        map.insert("unreachable".into(), to_dynamic(&report.unreachable)?);
        Ok(map)
    }

    /// Makes `n` the active node. Refused without a fresh successful
    /// `check_sync`, or when `n` is down or lagging. Rollback fails back to
    /// the node that was active.
    ///
    /// ```rhai
    /// let db = cluster("db-pair");
    /// check_sync(db);
    /// let r = switchover(db, db.passive());
    /// log(`users held ${r.paused_ms} ms`);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn switchover(ctx: NativeCallContext, c: ClusterHandle, n: NodeHandle) -> RhaiResult<Map> {
        let r = host(&ctx)?.exec.switchover(&c.name, &n.name).map_err(to_rhai)?;
        let mut map = Map::new();
        map.insert("from".into(), r.from.into());
        map.insert("to".into(), r.to.into());
        map.insert("paused_ms".into(), (r.paused.as_millis() as i64).into());
        Ok(map)
    }
}
