//! The safety rules the runtime enforces whatever the playbook says.
//!
//! Guards are pure functions over what the adapters observed just before the
//! step, so they can be tested without any adapter and so a refusal always
//! happens before anything is touched.

use std::time::Duration;

use crate::adapter::SyncReport;
use crate::clock::format_offset;
use crate::inventory::{ClusterKind, Policy, Role};
use crate::step::Action;

/// A node as the guards see it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeView {
    pub name: String,
    pub role: Option<Role>,
    /// Pools: the load balancer sends it new requests.
    pub in_service: bool,
    pub connections: u64,
    pub up: bool,
    pub version: String,
}

impl NodeView {
    /// Whether users reach this node right now.
    pub fn serving(&self, kind: ClusterKind) -> bool {
        match kind {
            ClusterKind::Pool => self.in_service && self.up,
            ClusterKind::ActivePassive => self.role == Some(Role::Active) && self.up,
        }
    }
}

/// Why a guard refused a step, and what the operator can do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub message: String,
    pub hint: String,
}

fn refuse(message: impl Into<String>, hint: impl Into<String>) -> Result<(), Refusal> {
    Err(Refusal { message: message.into(), hint: hint.into() })
}

/// The last `check_sync` of a cluster in this run.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncCheck {
    pub at: Duration,
    pub ok: bool,
}

fn target<'a>(nodes: &'a [NodeView], name: &str) -> &'a NodeView {
    nodes.iter().find(|n| n.name == name).expect("the executor only guards nodes of the observed cluster")
}

/// Patch, reboot and restore need a node that serves nobody.
pub fn may_change_host(kind: ClusterKind, nodes: &[NodeView], node: &str, action: Action) -> Result<(), Refusal> {
    let n = target(nodes, node);
    let verb = action.as_str();
    match kind {
        ClusterKind::Pool if n.in_service => refuse(
            format!("{node} is in service; {verb} would fail the requests it is serving"),
            format!("drain({node}) first; the runtime never lets a serving node be patched or rebooted"),
        ),
        ClusterKind::Pool if n.connections > 0 => refuse(
            format!("{node} still has {} open connection(s)", n.connections),
            "wait until drain() reports zero connections",
        ),
        ClusterKind::ActivePassive if n.role == Some(Role::Active) => refuse(
            format!("{node} is the active node; {verb} would interrupt the service"),
            "patch the passive first, check_sync, then switchover to it",
        ),
        _ => Ok(()),
    }
}

/// Draining must leave at least `min_in_service` healthy nodes serving.
pub fn may_drain(kind: ClusterKind, policy: &Policy, nodes: &[NodeView], node: &str) -> Result<(), Refusal> {
    if kind == ClusterKind::ActivePassive {
        return refuse(
            format!("drain({node}): active/passive clusters move users with switchover, not drain"),
            "use switchover(c, other_node) to move the active role",
        );
    }
    if !target(nodes, node).in_service {
        return Ok(());
    }
    let remaining = nodes.iter().filter(|n| n.name != node && n.serving(kind)).count();
    if remaining < policy.min_in_service {
        let serving: Vec<&str> =
            nodes.iter().filter(|n| n.name != node && n.serving(kind)).map(|n| n.name.as_str()).collect();
        return refuse(
            format!(
                "draining {node} would leave {remaining} node(s) in service ({}), below min_in_service {}",
                if serving.is_empty() { "none".to_string() } else { serving.join(", ") },
                policy.min_in_service
            ),
            "undrain a patched node first, or use a smaller batch",
        );
    }
    Ok(())
}

/// Undraining sends users to the node, so it must be healthy.
pub fn may_undrain(nodes: &[NodeView], node: &str) -> Result<(), Refusal> {
    if !target(nodes, node).up {
        return refuse(
            format!("{node} is not healthy; putting it in service would send users to a broken node"),
            format!("wait_healthy({node}) first"),
        );
    }
    Ok(())
}

/// What `may_switchover` needs to know besides the nodes.
#[derive(Debug, Clone)]
pub struct SwitchoverContext<'a> {
    pub policy: &'a Policy,
    pub now: Duration,
    pub last_check: Option<&'a SyncCheck>,
    /// The last state-changing step on this cluster, if any.
    pub last_change: Option<Duration>,
    /// Replication as observed just now.
    pub current: &'a SyncReport,
}

/// Switching over needs a fresh successful `check_sync` and a target that is
/// up, linked and within the lag limit right now.
pub fn may_switchover(
    kind: ClusterKind,
    nodes: &[NodeView],
    node: &str,
    ctx: &SwitchoverContext<'_>,
) -> Result<(), Refusal> {
    if kind != ClusterKind::ActivePassive {
        return refuse("switchover applies to active_passive clusters", "pools move users with drain/undrain");
    }
    let n = target(nodes, node);
    if !n.up {
        return refuse(
            format!("{node} is down; switching over would stop the service"),
            format!("wait_healthy({node}) first"),
        );
    }
    let Some(check) = ctx.last_check else {
        return refuse(
            format!("no check_sync of this cluster before switching over to {node}"),
            "call check_sync(c) right before switchover(c, node)",
        );
    };
    if !check.ok {
        return refuse(
            format!("the last check_sync failed; {node} may not have every write"),
            "fix replication, then check_sync(c) again",
        );
    }
    let age = ctx.now.saturating_sub(check.at);
    if age > ctx.policy.sync_freshness {
        return refuse(
            format!(
                "the last check_sync is stale ({} old, policy sync_freshness is {})",
                humantime::format_duration(Duration::from_secs(age.as_secs())),
                humantime::format_duration(ctx.policy.sync_freshness)
            ),
            "call check_sync(c) right before switchover(c, node)",
        );
    }
    if ctx.last_change.is_some_and(|changed| changed > check.at) {
        return refuse(
            format!("the cluster changed since the last check_sync (at {})", format_offset(check.at)),
            "call check_sync(c) after the last reboot or patch, right before switchover",
        );
    }
    match ctx.current.replica(node) {
        None => refuse(format!("{node} is not a replica of {}", ctx.current.primary), "switch over to a passive node"),
        Some(r) if !r.link_up => {
            refuse(format!("{node}'s replication link is down"), "fix replication, then check_sync(c) again")
        }
        Some(r) if r.lag_seconds > ctx.policy.max_sync_lag.as_secs_f64() => refuse(
            format!(
                "{node} lags {:.1}s behind {} (max_sync_lag {})",
                r.lag_seconds,
                ctx.current.primary,
                humantime::format_duration(ctx.policy.max_sync_lag)
            ),
            "wait for it to catch up and check_sync(c) again",
        ),
        Some(_) => Ok(()),
    }
}

/// No new node step that cannot finish inside the maintenance window.
pub fn may_start_within_window(
    action: Action,
    now: Duration,
    estimate: Duration,
    window: Option<Duration>,
) -> Result<(), Refusal> {
    let Some(window) = window else { return Ok(()) };
    if now + estimate > window {
        return refuse(
            format!(
                "{} is expected to take {} but the maintenance window closes at {} (now {})",
                action.as_str(),
                humantime::format_duration(estimate),
                format_offset(window),
                format_offset(now)
            ),
            "stop here and continue in the next window, or widen policy.maintenance_window",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::ReplicaSync;

    fn policy(min: usize) -> Policy {
        Policy {
            min_in_service: min,
            batch: 1,
            max_failures: 0,
            maintenance_window: None,
            max_sync_lag: Duration::from_secs(5),
            sync_freshness: Duration::from_secs(120),
            sync_wait: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(300),
            reboot_timeout: Duration::from_secs(600),
            step_timeout: Duration::from_secs(900),
            observation_max_age: Duration::from_secs(2),
        }
    }

    fn node(name: &str, in_service: bool, role: Option<Role>) -> NodeView {
        NodeView { name: name.into(), role, in_service, connections: 0, up: true, version: "1".into() }
    }

    fn pool(serving: &[bool]) -> Vec<NodeView> {
        serving.iter().enumerate().map(|(i, &s)| node(&format!("web-{}", i + 1), s, None)).collect()
    }

    #[test]
    fn serving_pool_node_cannot_be_patched() {
        let nodes = pool(&[true, false]);
        let refusal = may_change_host(ClusterKind::Pool, &nodes, "web-1", Action::Patch).unwrap_err();
        assert_eq!(refusal.message, "web-1 is in service; patch would fail the requests it is serving");
        assert!(may_change_host(ClusterKind::Pool, &nodes, "web-2", Action::Reboot).is_ok());
    }

    #[test]
    fn node_with_open_connections_cannot_be_rebooted() {
        let mut nodes = pool(&[false, true]);
        nodes[0].connections = 3;
        let refusal = may_change_host(ClusterKind::Pool, &nodes, "web-1", Action::Reboot).unwrap_err();
        assert!(refusal.message.contains("3 open connection(s)"));
    }

    #[test]
    fn active_node_cannot_be_patched() {
        let nodes = vec![node("db-a", false, Some(Role::Active)), node("db-b", false, Some(Role::Passive))];
        assert!(may_change_host(ClusterKind::ActivePassive, &nodes, "db-a", Action::Patch).is_err());
        assert!(may_change_host(ClusterKind::ActivePassive, &nodes, "db-b", Action::Patch).is_ok());
    }

    #[test]
    fn drain_below_min_in_service_is_refused() {
        let nodes = pool(&[true, true, true, true]);
        assert!(may_drain(ClusterKind::Pool, &policy(3), &nodes, "web-1").is_ok());
        let nodes = pool(&[false, true, true, true]);
        let refusal = may_drain(ClusterKind::Pool, &policy(3), &nodes, "web-2").unwrap_err();
        assert_eq!(
            refusal.message,
            "draining web-2 would leave 2 node(s) in service (web-3, web-4), below min_in_service 3"
        );
        // Draining an already drained node changes nothing.
        assert!(may_drain(ClusterKind::Pool, &policy(3), &nodes, "web-1").is_ok());
    }

    #[test]
    fn a_down_node_does_not_count_as_serving() {
        let mut nodes = pool(&[true, true, true, true]);
        nodes[3].up = false;
        assert!(may_drain(ClusterKind::Pool, &policy(3), &nodes, "web-1").is_err());
        assert!(may_undrain(&nodes, "web-4").is_err());
    }

    fn sync(lag: f64, link_up: bool) -> SyncReport {
        SyncReport {
            primary: "db-a".into(),
            replicas: vec![ReplicaSync { node: "db-b".into(), link_up, lag_seconds: lag }],
        }
    }

    fn pair() -> Vec<NodeView> {
        vec![node("db-a", false, Some(Role::Active)), node("db-b", false, Some(Role::Passive))]
    }

    #[test]
    fn switchover_needs_a_fresh_successful_check() {
        let p = policy(1);
        let current = sync(0.0, true);
        let ok = SyncCheck { at: Duration::from_secs(100), ok: true };
        let mut ctx = SwitchoverContext {
            policy: &p,
            now: Duration::from_secs(110),
            last_check: None,
            last_change: None,
            current: &current,
        };
        assert!(may_switchover(ClusterKind::ActivePassive, &pair(), "db-b", &ctx)
            .unwrap_err()
            .message
            .starts_with("no check_sync"));
        ctx.last_check = Some(&ok);
        assert!(may_switchover(ClusterKind::ActivePassive, &pair(), "db-b", &ctx).is_ok());
        ctx.last_change = Some(Duration::from_secs(105));
        assert!(may_switchover(ClusterKind::ActivePassive, &pair(), "db-b", &ctx)
            .unwrap_err()
            .message
            .contains("changed since"));
        ctx.last_change = None;
        ctx.now = Duration::from_secs(400);
        assert!(may_switchover(ClusterKind::ActivePassive, &pair(), "db-b", &ctx)
            .unwrap_err()
            .message
            .contains("stale"));
        let failed = SyncCheck { at: Duration::from_secs(100), ok: false };
        ctx.now = Duration::from_secs(110);
        ctx.last_check = Some(&failed);
        assert!(may_switchover(ClusterKind::ActivePassive, &pair(), "db-b", &ctx)
            .unwrap_err()
            .message
            .contains("failed"));
    }

    #[test]
    fn switchover_to_a_lagging_or_unlinked_node_is_refused() {
        let p = policy(1);
        let ok = SyncCheck { at: Duration::from_secs(100), ok: true };
        for (report, expect) in [(sync(30.0, true), "lags 30.0s behind db-a"), (sync(0.0, false), "link is down")] {
            let ctx = SwitchoverContext {
                policy: &p,
                now: Duration::from_secs(101),
                last_check: Some(&ok),
                last_change: None,
                current: &report,
            };
            let refusal = may_switchover(ClusterKind::ActivePassive, &pair(), "db-b", &ctx).unwrap_err();
            assert!(refusal.message.contains(expect), "{}", refusal.message);
        }
    }

    #[test]
    fn window_refuses_steps_that_would_overrun() {
        let window = Some(Duration::from_secs(3600));
        assert!(
            may_start_within_window(Action::Patch, Duration::from_secs(3000), Duration::from_secs(120), window).is_ok()
        );
        let refusal =
            may_start_within_window(Action::Reboot, Duration::from_secs(3500), Duration::from_secs(180), window)
                .unwrap_err();
        assert!(refusal.message.contains("closes at T+01:00:00.0"), "{}", refusal.message);
        assert!(
            may_start_within_window(Action::Reboot, Duration::from_secs(99_999), Duration::from_secs(1), None).is_ok()
        );
    }
}
