//! Audit trail and drift benchmark: prints figures, asserts nothing.
//!
//! `cargo bench --bench audit` measures journal appends per second with an
//! fsync per record (as runs write them) and without, chain verification,
//! and drift comparison of 1,000 nodes x 2,000 facts (100 clusters of 10
//! peers, plus each node against its baseline).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pitcrew_runtime::drift::{compare_baseline, compare_peers};
use pitcrew_runtime::journal::{verify, Body, JournalWriter, RunHeader};
use serde_json::json;

fn append_rate(records: usize, sync: bool) -> (f64, Duration, std::path::PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("bench.jsonl");
    let mut writer = JournalWriter::create(&path, "bench").expect("journal");
    writer.set_sync(sync);
    let header = RunHeader {
        operator: "bench".into(),
        host: "bench".into(),
        pid: 0,
        mode: "rehearsal".into(),
        playbook: "bench.rhai".into(),
        playbook_sha256: String::new(),
        inventory: "bench.yaml".into(),
        inventory_sha256: String::new(),
        params: json!({}),
        faults: Vec::new(),
        rollback_on_failure: true,
        lib: Vec::new(),
        clusters: vec!["web".into()],
        cwd: String::new(),
        max_operations: None,
        deadline_s: None,
        modules: Default::default(),
    };
    writer.append(Duration::ZERO, Body::Header(header)).expect("header");
    let started = Instant::now();
    for call in 0..records as u64 {
        let body = Body::Intent {
            call,
            cluster: "web".into(),
            node: Some(format!("web-{}", call % 10)),
            action: "patch".into(),
            params: json!({ "from_version": "1.24.0" }),
        };
        writer.append(Duration::from_secs(call), body).expect("append");
    }
    let took = started.elapsed();
    (records as f64 / took.as_secs_f64(), took, path, dir)
}

fn main() {
    let (synced, took, _, _keep) = append_rate(2_000, true);
    println!(
        "journal append, fsync per record   {synced:>10.0} records/s  (2,000 in {:.0} ms)",
        took.as_secs_f64() * 1e3
    );
    let (unsynced, took, path, _keep2) = append_rate(100_000, false);
    println!(
        "journal append, no fsync           {unsynced:>10.0} records/s  (100,000 in {:.0} ms)",
        took.as_secs_f64() * 1e3
    );
    let started = Instant::now();
    let count = verify(&path).expect("read").expect("intact");
    let took = started.elapsed();
    println!(
        "chain verification                 {:>10.0} records/s  ({count} in {:.0} ms)",
        count as f64 / took.as_secs_f64(),
        took.as_secs_f64() * 1e3
    );

    // 1,000 nodes x 2,000 facts; every tenth node differs in a few facts.
    let facts_per_node = 2_000;
    let build = |node: usize, drifted: bool| -> BTreeMap<String, String> {
        (0..facts_per_node)
            .map(|f| {
                let value = if drifted && f % 500 == 0 { format!("drifted-{node}") } else { format!("1.{f}.0") };
                (format!("packages.pkg-{f:04}"), value)
            })
            .collect()
    };
    let clusters: Vec<BTreeMap<String, BTreeMap<String, String>>> =
        (0..100).map(|c| (0..10).map(|n| (format!("node-{c:03}-{n}"), build(c * 10 + n, n == 3))).collect()).collect();
    let baselines: Vec<BTreeMap<String, String>> = (0..1_000).map(|i| build(i, false)).collect();
    let started = Instant::now();
    let mut peer_diffs = 0;
    for (c, nodes) in clusters.iter().enumerate() {
        peer_diffs += compare_peers(&format!("pool-{c:03}"), nodes, &["packages.pkg-0000".to_string()]).len();
    }
    let peers = started.elapsed();
    let started = Instant::now();
    let mut changes = 0;
    for (c, nodes) in clusters.iter().enumerate() {
        for (n, (name, facts)) in nodes.iter().enumerate() {
            changes += compare_baseline("pool", name, &baselines[c * 10 + n], facts).len();
        }
    }
    let baseline = started.elapsed();
    println!("drift, 1,000 nodes x {facts_per_node} facts: peers {:.0} ms ({peer_diffs} differences), since last run {:.0} ms ({changes} changes)", peers.as_secs_f64() * 1e3, baseline.as_secs_f64() * 1e3);
}
