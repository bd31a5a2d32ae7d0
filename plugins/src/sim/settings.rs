//! Settings of a `sim` adapter instance (`adapters: { twin: { kind: sim, settings: {...} } }`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How the simulated clusters behave. Every field has a default close to a
/// small real service, so `kind: sim` alone is a useful twin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimSettings {
    /// Simulated user requests per second reaching each cluster.
    pub rps: f64,
    /// Open connections on a node in service.
    pub connections: u64,
    /// Connections that close per second once a node is drained.
    pub drain_rate: f64,
    #[serde(with = "humantime_serde")]
    pub patch_time: Duration,
    #[serde(with = "humantime_serde")]
    pub restore_time: Duration,
    #[serde(with = "humantime_serde")]
    pub reboot_time: Duration,
    /// How long clients are held while the active role moves.
    #[serde(with = "humantime_serde")]
    pub switchover_time: Duration,
    /// How long a replica takes to catch up after it comes back.
    #[serde(with = "humantime_serde")]
    pub resync_time: Duration,
    /// Requests sent by one `probe(n)`.
    pub probe_requests: u64,
    /// Version of nodes that do not set `vars.version`.
    pub version: String,
    /// Version a patch installs, unless the node sets `vars.patch_to` or the
    /// playbook passes `#{ version: ... }`.
    pub patch_to: String,
}

impl Default for SimSettings {
    fn default() -> Self {
        Self {
            rps: 100.0,
            connections: 8,
            drain_rate: 0.5,
            patch_time: Duration::from_secs(60),
            restore_time: Duration::from_secs(90),
            reboot_time: Duration::from_secs(45),
            switchover_time: Duration::from_millis(600),
            resync_time: Duration::from_secs(5),
            probe_requests: 10,
            version: "1.0.0".into(),
            patch_to: "1.0.1".into(),
        }
    }
}
