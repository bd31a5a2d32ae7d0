//! Unit tests of the sim twin's model.

use std::time::Duration;

use pitcrew_runtime::adapter::Params;
use pitcrew_runtime::{AdapterError, Inventory, SourceFile};

use crate::sim::{Fault, SimTwin};
use crate::{rehearsal_adapters, PluginError};

const INVENTORY: &str = "\
adapters:
  twin: { kind: sim, settings: { rps: 100, connections: 8, drain_rate: 0.5 } }
clusters:
  web:
    kind: pool
    adapter: twin
    policy: { min_in_service: 1 }
    nodes: [ { name: web-1 }, { name: web-2 } ]
  db:
    kind: active_passive
    adapter: twin
    nodes:
      - { name: db-a, role: active }
      - { name: db-b, role: passive }
";

fn twin(faults: &[&str]) -> std::sync::Arc<SimTwin> {
    let inventory = Inventory::parse(SourceFile::new("t.yaml", INVENTORY)).expect("inventory");
    let faults: Vec<Fault> = faults.iter().map(|f| f.parse().expect("fault")).collect();
    rehearsal_adapters(&inventory, &faults).expect("adapters").twin.expect("twin")
}

const S: fn(u64) -> Duration = Duration::from_secs;

#[test]
fn drain_waits_for_connections_in_virtual_time() {
    let twin = twin(&[]);
    let report = twin.drain("web-1", S(300)).expect("drain");
    assert_eq!(report.connections_at_start, 8);
    assert_eq!(report.waited, S(16));
    assert_eq!(twin.clock().now(), S(16));
    let state = twin.traffic_state("web-1").expect("state");
    assert!(!state.in_service);
    assert_eq!(state.connections, 0);
}

#[test]
fn stuck_drain_times_out_with_connections_left() {
    let twin = twin(&["drain:web-2:stuck"]);
    match twin.drain("web-2", S(300)) {
        Err(AdapterError::Timeout { after, message }) => {
            assert_eq!(after, S(300));
            assert_eq!(message, "8 connection(s) still open on web-2");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
}

#[test]
fn a_drained_pool_loses_no_requests_but_an_empty_one_loses_all() {
    let twin = twin(&[]);
    twin.drain("web-1", S(300)).expect("drain");
    twin.clock().advance(S(100));
    let sample = twin.sample("web").expect("sample");
    assert_eq!(sample.failed, 0);
    assert_eq!(sample.requests, 11_600);
    twin.drain("web-2", S(300)).expect("drain");
    twin.clock().advance(S(10));
    let sample = twin.sample("web").expect("sample");
    // 16 s of draining web-2 (nobody serves) plus 10 s more, at 100 rps.
    assert_eq!(sample.failed, 2_600);
    assert_eq!(sample.interruption, S(26));
}

#[test]
fn reboot_takes_time_and_a_hung_node_never_returns() {
    let twin = twin(&["reboot:db-b:hang"]);
    assert_eq!(twin.reboot("web-1", S(600)).expect("reboot"), S(45));
    assert!(twin.host_state("web-1").expect("state").up);
    let err = twin.reboot("db-b", S(600)).unwrap_err();
    assert!(matches!(err, AdapterError::Timeout { .. }), "{err:?}");
    assert!(!twin.host_state("db-b").expect("state").up);
    assert!(twin.wait_healthy("db-b", S(60)).is_err());
    assert!(twin
        .restore(
            "db-b",
            &pitcrew_runtime::adapter::PatchReport {
                from_version: "1.0.0".into(),
                to_version: "1.0.1".into(),
                snapshot: None
            }
        )
        .is_err());
}

#[test]
fn patch_fault_keeps_the_version_and_patch_otherwise_moves_it() {
    let twin = twin(&["patch:web-2:fail"]);
    let report = twin.patch("web-1", &Params::new()).expect("patch");
    assert_eq!((report.from_version.as_str(), report.to_version.as_str()), ("1.0.0", "1.0.1"));
    assert!(matches!(twin.patch("web-2", &Params::new()), Err(AdapterError::Failed(_))));
    assert_eq!(twin.host_state("web-2").expect("state").version, "1.0.0");
    twin.restore("web-1", &report).expect("restore");
    assert_eq!(twin.host_state("web-1").expect("state").version, "1.0.0");
}

#[test]
fn replica_catches_up_after_reboot_unless_it_lags_by_fault() {
    let twin = twin(&[]);
    twin.reboot("db-b", S(600)).expect("reboot");
    let report = twin.sync_status("db").expect("sync");
    assert!(report.replicas[0].lag_seconds > 4.9);
    let report = twin.wait_sync("db", S(1), S(30)).expect("sync");
    assert!(report.in_sync(S(1)), "{report:?}");

    let lagging = self::twin(&["sync:db-b:lag=30s"]);
    let report = lagging.wait_sync("db", S(5), S(30)).expect("sync");
    assert!(!report.in_sync(S(5)));
    assert_eq!(lagging.clock().now(), S(30));
}

#[test]
fn switchover_holds_requests_without_failing_them() {
    let twin = twin(&[]);
    let report = twin.switchover("db", "db-b").expect("switchover");
    assert_eq!((report.from.as_str(), report.to.as_str()), ("db-a", "db-b"));
    let sample = twin.sample("db").expect("sample");
    assert_eq!(sample.failed, 0);
    assert_eq!(sample.interruption, Duration::from_millis(600));
    let roles = twin.roles("db").expect("roles");
    assert!(roles.contains(&("db-b".to_string(), pitcrew_runtime::Role::Active)));
}

#[test]
fn bad_patch_fails_a_share_of_requests_once_serving() {
    let twin = twin(&["probe:web-1:errors=20%"]);
    twin.drain("web-1", S(300)).expect("drain");
    twin.patch("web-1", &Params::new()).expect("patch");
    let probe = twin.probe("web-1").expect("probe");
    assert_eq!((probe.requests, probe.failed), (10, 2));
    let before = twin.sample("web").expect("sample");
    twin.undrain("web-1").expect("undrain");
    twin.clock().advance(S(100));
    let after = twin.sample("web").expect("sample");
    // web-1 takes half of 100 rps; 20% of that fails for 100 s.
    assert_eq!(after.failed - before.failed, 1_000);
}

#[test]
fn fault_on_unknown_node_suggests_the_closest() {
    let inventory = Inventory::parse(SourceFile::new("t.yaml", INVENTORY)).expect("inventory");
    let fault: Fault = "patch:web-3:fail".parse().expect("fault");
    match rehearsal_adapters(&inventory, &[fault]) {
        Err(PluginError::UnknownFaultNode(e)) => {
            assert_eq!(e.node, "web-3");
            assert_eq!(e.suggestions.first().map(String::as_str), Some("web-1"));
        }
        _ => panic!("expected an unknown-node error"),
    }
}

#[test]
fn unknown_sim_setting_is_located_in_the_inventory() {
    let text = INVENTORY.replace("drain_rate: 0.5", "drain_rat: 0.5");
    let inventory = Inventory::parse(SourceFile::new("t.yaml", text)).expect("inventory");
    match rehearsal_adapters(&inventory, &[]) {
        Err(PluginError::Inventory(e)) => assert!(e.message().contains("unknown field `drain_rat`"), "{}", e.message()),
        _ => panic!("expected a settings error"),
    }
}
