//! Built-ins that find clusters and nodes and read their live state.

use rhai::plugin::*;

#[export_module]
pub mod cluster_api {
    use pitcrew_runtime::Role;
    use rhai::{Array, Dynamic, ImmutableString, Map, NativeCallContext};

    use crate::handles::{ClusterHandle, NodeHandle};
    use crate::host::{host, to_dynamic, to_rhai, RhaiResult};

    pub type Cluster = ClusterHandle;
    pub type Node = NodeHandle;

    /// The cluster of that name from the inventory.
    ///
    /// ```rhai
    /// let c = cluster("db-pair");
    /// log(`${c.name} is ${c.kind} with ${c.nodes.len()} nodes`);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn cluster(ctx: NativeCallContext, name: &str) -> RhaiResult<ClusterHandle> {
        let host = host(&ctx)?;
        host.exec.cluster(name).map(super::handle_of).map_err(to_rhai)
    }

    /// Every cluster of the inventory, in file order.
    ///
    /// ```rhai
    /// for c in clusters() { log(c.name); }
    /// ```
    #[rhai_fn(return_raw)]
    pub fn clusters(ctx: NativeCallContext) -> RhaiResult<Array> {
        let host = host(&ctx)?;
        Ok(host.exec.inventory().clusters.iter().map(|c| Dynamic::from(super::handle_of(c))).collect())
    }

    /// The cluster's name.
    #[rhai_fn(get = "name", pure)]
    pub fn cluster_name(c: &mut ClusterHandle) -> ImmutableString {
        c.name.clone()
    }

    /// `"active_passive"` or `"pool"`.
    #[rhai_fn(get = "kind", pure)]
    pub fn cluster_kind(c: &mut ClusterHandle) -> ImmutableString {
        c.kind.as_str().into()
    }

    /// The cluster's nodes in inventory order.
    ///
    /// ```rhai
    /// for n in cluster("web").nodes { log(n.name); }
    /// ```
    #[rhai_fn(get = "nodes", pure)]
    pub fn cluster_nodes(c: &mut ClusterHandle) -> Array {
        c.nodes.iter().cloned().map(Dynamic::from).collect()
    }

    /// The node that serves users now (active/passive clusters).
    ///
    /// ```rhai
    /// let db = cluster("db-pair");
    /// log(`active: ${db.active().name}`);
    /// ```
    #[rhai_fn(return_raw, pure)]
    pub fn active(ctx: NativeCallContext, c: &mut ClusterHandle) -> RhaiResult<NodeHandle> {
        super::with_role(&ctx, c, Role::Active)?
            .into_iter()
            .next()
            .ok_or_else(|| format!("cluster `{}` has no active node", c.name).into())
    }

    /// The first passive node (active/passive clusters).
    ///
    /// ```rhai
    /// let db = cluster("db-pair");
    /// log(`standby: ${db.passive().name}`);
    /// ```
    #[rhai_fn(return_raw, pure)]
    pub fn passive(ctx: NativeCallContext, c: &mut ClusterHandle) -> RhaiResult<NodeHandle> {
        super::with_role(&ctx, c, Role::Passive)?
            .into_iter()
            .next()
            .ok_or_else(|| format!("cluster `{}` has no passive node", c.name).into())
    }

    /// Every passive node (active/passive clusters).
    ///
    /// ```rhai
    /// for n in cluster("db-pair").passives() { log(n.name); }
    /// ```
    #[rhai_fn(return_raw, pure)]
    pub fn passives(ctx: NativeCallContext, c: &mut ClusterHandle) -> RhaiResult<Array> {
        Ok(super::with_role(&ctx, c, Role::Passive)?.into_iter().map(Dynamic::from).collect())
    }

    /// The node's name.
    #[rhai_fn(get = "name", pure)]
    pub fn node_name(n: &mut NodeHandle) -> ImmutableString {
        n.name.clone()
    }

    /// The name of the node's cluster.
    #[rhai_fn(get = "cluster", pure)]
    pub fn node_cluster(n: &mut NodeHandle) -> ImmutableString {
        n.cluster.clone()
    }

    /// `"active"` or `"passive"` now (active/passive clusters), `()` in pools.
    ///
    /// ```rhai
    /// let n = cluster("db-pair").nodes[0];
    /// log(`${n.name} is ${n.role}`);
    /// ```
    #[rhai_fn(get = "role", pure, return_raw)]
    pub fn node_role(ctx: NativeCallContext, n: &mut NodeHandle) -> RhaiResult<Dynamic> {
        let view = host(&ctx)?.exec.node_view(&n.name).map_err(to_rhai)?;
        Ok(view.role.map_or(Dynamic::UNIT, |r| r.as_str().into()))
    }

    /// Whether users reach the node now: in service behind the load balancer
    /// (pools) or the active node (active/passive).
    ///
    /// ```rhai
    /// let n = cluster("web").nodes[0];
    /// if n.in_service { log(`${n.name} serves`); }
    /// ```
    #[rhai_fn(get = "in_service", pure, return_raw)]
    pub fn node_in_service(ctx: NativeCallContext, n: &mut NodeHandle) -> RhaiResult<bool> {
        let view = host(&ctx)?.exec.node_view(&n.name).map_err(to_rhai)?;
        Ok(view.in_service && view.up)
    }

    /// The version the node runs now.
    ///
    /// ```rhai
    /// log(cluster("web").nodes[0].version);
    /// ```
    #[rhai_fn(get = "version", pure, return_raw)]
    pub fn node_version(ctx: NativeCallContext, n: &mut NodeHandle) -> RhaiResult<ImmutableString> {
        let view = host(&ctx)?.exec.node_view(&n.name).map_err(to_rhai)?;
        Ok(view.version.into())
    }

    /// Whether the node is up and answering its health check now.
    ///
    /// ```rhai
    /// let n = cluster("web").nodes[0];
    /// if !n.up { log(`${n.name} is down`); }
    /// ```
    #[rhai_fn(get = "up", pure, return_raw)]
    pub fn node_up(ctx: NativeCallContext, n: &mut NodeHandle) -> RhaiResult<bool> {
        Ok(host(&ctx)?.exec.node_view(&n.name).map_err(to_rhai)?.up)
    }

    /// The cluster's policy from the inventory, as a map.
    ///
    /// ```rhai
    /// log(`min in service: ${cluster("web").policy.min_in_service}`);
    /// ```
    #[rhai_fn(get = "policy", pure, return_raw)]
    pub fn cluster_policy(ctx: NativeCallContext, c: &mut ClusterHandle) -> RhaiResult<Map> {
        let host = host(&ctx)?;
        let p = &host.exec.cluster(&c.name).map_err(to_rhai)?.policy;
        let mut map = Map::new();
        map.insert("min_in_service".into(), (p.min_in_service as i64).into());
        map.insert("batch".into(), (p.batch as i64).into());
        map.insert("max_failures".into(), (p.max_failures as i64).into());
        map.insert("max_sync_lag_s".into(), p.max_sync_lag.as_secs_f64().into());
        map.insert(
            "maintenance_window_s".into(),
            p.maintenance_window.map_or(Dynamic::UNIT, |w| (w.as_secs() as i64).into()),
        );
        Ok(map)
    }

    #[rhai_fn(name = "to_string", name = "to_debug", pure)]
    pub fn cluster_to_string(c: &mut ClusterHandle) -> String {
        format!("cluster {}", c.name)
    }

    #[rhai_fn(name = "to_string", name = "to_debug", pure)]
    pub fn node_to_string(n: &mut NodeHandle) -> String {
        format!("node {}", n.name)
    }

    #[rhai_fn(name = "==", pure)]
    pub fn node_eq(a: &mut NodeHandle, b: NodeHandle) -> bool {
        *a == b
    }

    #[rhai_fn(name = "!=", pure)]
    pub fn node_ne(a: &mut NodeHandle, b: NodeHandle) -> bool {
        *a != b
    }

    /// Facts about a node: OS, kernel, packages, version.
    ///
    /// ```rhai
    /// let f = facts(cluster("db-pair").passive());
    /// log(`kernel ${f.kernel}`);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn facts(ctx: NativeCallContext, n: NodeHandle) -> RhaiResult<Dynamic> {
        let facts = host(&ctx)?.exec.facts(&n.name).map_err(to_rhai)?;
        to_dynamic(facts)
    }
}

use pitcrew_runtime::{ClusterKind, Role};
use rhai::NativeCallContext;

use crate::handles::{ClusterHandle, NodeHandle};
use crate::host::{host, to_rhai, RhaiResult};

pub fn with_role(ctx: &NativeCallContext, c: &ClusterHandle, role: Role) -> RhaiResult<Vec<NodeHandle>> {
    if c.kind != ClusterKind::ActivePassive {
        return Err(
            format!("cluster `{}` is a pool; active()/passive() apply to active_passive clusters", c.name).into()
        );
    }
    let host = host(ctx)?;
    let cluster = host.exec.cluster(&c.name).map_err(to_rhai)?;
    let roles = host.exec.roles(cluster).map_err(to_rhai)?;
    Ok(roles
        .into_iter()
        .filter(|(_, r)| *r == role)
        .map(|(name, _)| NodeHandle { name: name.into(), cluster: c.name.clone() })
        .collect())
}

/// The handle of an inventory cluster.
pub fn handle_of(c: &pitcrew_runtime::Cluster) -> ClusterHandle {
    ClusterHandle {
        name: c.name.as_str().into(),
        kind: c.kind,
        nodes: c
            .nodes
            .iter()
            .map(|n| NodeHandle { name: n.name.as_str().into(), cluster: c.name.as_str().into() })
            .collect(),
    }
}
