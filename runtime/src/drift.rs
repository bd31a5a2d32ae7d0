//! Drift: how nodes differ from their peers, and from their own facts at
//! the end of the last live run.
//!
//! Facts are nested maps; they are compared flattened to dotted names
//! (`packages.openssl`), so an operator can mark any leaf critical in the
//! inventory (`critical_facts: [packages.openssl, kernel]`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Facts that change on their own (a boot id differs on every boot and
/// every node) or describe a run, not the node; never drift.
const VOLATILE: &[&str] = &["patched", "boot_id"];

/// Flattens nested facts to `a.b.c -> value` (values as text).
pub fn flatten(facts: &Value) -> BTreeMap<String, String> {
    fn walk(prefix: &str, value: &Value, out: &mut BTreeMap<String, String>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    walk(&key, v, out);
                }
            }
            Value::String(s) => {
                out.insert(prefix.to_string(), s.clone());
            }
            other => {
                out.insert(prefix.to_string(), other.to_string());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk("", facts, &mut out);
    for key in VOLATILE {
        out.remove(*key);
    }
    out
}

/// One fact on which the peers of a cluster disagree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerDifference {
    pub cluster: String,
    pub fact: String,
    /// Every node's value (`None`: the node lacks the fact).
    pub values: BTreeMap<String, Option<String>>,
    /// The inventory marks this fact critical for the cluster.
    pub critical: bool,
}

/// One fact of a node that changed since the last recorded snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeChange {
    pub cluster: String,
    pub node: String,
    pub fact: String,
    pub before: Option<String>,
    pub now: Option<String>,
}

/// Everything drift found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DriftReport {
    pub peers: Vec<PeerDifference>,
    pub changed: Vec<NodeChange>,
    /// Nodes whose facts could not be gathered.
    pub unreachable: Vec<String>,
}

impl DriftReport {
    pub fn is_clean(&self) -> bool {
        self.peers.is_empty() && self.changed.is_empty()
    }

    pub fn critical(&self) -> impl Iterator<Item = &PeerDifference> {
        self.peers.iter().filter(|p| p.critical)
    }
}

/// Facts on which the nodes of one cluster differ, fact by fact.
///
/// The maps are sorted, so this walks them together once (a k-way merge):
/// no fact is copied unless the peers disagree on it.
pub fn compare_peers(
    cluster: &str,
    nodes: &BTreeMap<String, BTreeMap<String, String>>,
    critical: &[String],
) -> Vec<PeerDifference> {
    let mut heads: Vec<_> = nodes.iter().map(|(name, facts)| (name, facts.iter().peekable())).collect();
    let mut diffs = Vec::new();
    while let Some(fact) = heads.iter_mut().filter_map(|(_, it)| it.peek().map(|(k, _)| *k)).min() {
        let mut first: Option<Option<&String>> = None;
        let mut differs = false;
        let mut row: Vec<(&String, Option<&String>)> = Vec::with_capacity(heads.len());
        for (name, it) in heads.iter_mut() {
            let value = match it.peek() {
                Some((k, _)) if *k == fact => it.next().map(|(_, v)| v),
                _ => None,
            };
            match first {
                None => first = Some(value),
                Some(f) if f != value => differs = true,
                _ => {}
            }
            row.push((name, value));
        }
        if differs {
            diffs.push(PeerDifference {
                cluster: cluster.to_string(),
                fact: fact.clone(),
                values: row.into_iter().map(|(n, v)| (n.clone(), v.cloned())).collect(),
                critical: critical
                    .iter()
                    .any(|c| c == fact || fact.strip_prefix(c.as_str()).is_some_and(|rest| rest.starts_with('.'))),
            });
        }
    }
    diffs
}

/// Facts of one node that differ from its baseline (one merge-walk).
pub fn compare_baseline(
    cluster: &str,
    node: &str,
    before: &BTreeMap<String, String>,
    now: &BTreeMap<String, String>,
) -> Vec<NodeChange> {
    let change = |fact: &String, before: Option<&String>, now: Option<&String>| NodeChange {
        cluster: cluster.to_string(),
        node: node.to_string(),
        fact: fact.clone(),
        before: before.cloned(),
        now: now.cloned(),
    };
    let (mut a, mut b) = (before.iter().peekable(), now.iter().peekable());
    let mut changes = Vec::new();
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some((ka, va)), Some((kb, vb))) if ka == kb => {
                if va != vb {
                    changes.push(change(ka, Some(va), Some(vb)));
                }
                a.next();
                b.next();
            }
            (Some((ka, va)), Some((kb, _))) if ka < kb => {
                changes.push(change(ka, Some(va), None));
                a.next();
            }
            (Some((ka, va)), None) => {
                changes.push(change(ka, Some(va), None));
                a.next();
            }
            (_, Some((kb, vb))) => {
                changes.push(change(kb, None, Some(vb)));
                b.next();
            }
        }
    }
    changes
}

fn baseline_path(dir: &Path, node: &str) -> std::path::PathBuf {
    dir.join(format!("{node}.json"))
}

/// Replaces a node's baseline atomically (temp file, fsync, rename).
pub fn write_baseline(dir: &Path, node: &str, value: &Value) -> std::io::Result<()> {
    let path = baseline_path(dir, node);
    let tmp = dir.join(format!(".{node}.json.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(serde_json::to_string_pretty(value).map_err(std::io::Error::other)?.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)
}

/// A node's last recorded facts, with the run that recorded them.
pub fn read_baseline(dir: &Path, node: &str) -> Option<Value> {
    let text = std::fs::read_to_string(baseline_path(dir, node)).ok()?;
    serde_json::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn peers_differ_fact_by_fact_and_critical_facts_are_marked() {
        let a = flatten(&json!({"kernel": "6.1", "packages": {"openssl": "3.0.11", "nginx": "1.24"}, "patched": true}));
        let b = flatten(&json!({"kernel": "6.1", "packages": {"openssl": "3.0.2"}}));
        let nodes = BTreeMap::from([("a".to_string(), a), ("b".to_string(), b)]);
        let diffs = compare_peers("web", &nodes, &["packages.openssl".to_string()]);
        let facts: Vec<&str> = diffs.iter().map(|d| d.fact.as_str()).collect();
        assert_eq!(facts, ["packages.nginx", "packages.openssl"]);
        assert!(diffs[1].critical && !diffs[0].critical);
        assert_eq!(diffs[0].values["b"], None);
    }

    #[test]
    fn baseline_changes_are_listed_both_ways() {
        let before = flatten(&json!({"kernel": "6.1", "packages": {"openssl": "3.0.11"}}));
        let now = flatten(&json!({"kernel": "6.1", "packages": {"openssl": "3.0.2", "curl": "8"}}));
        let changes = compare_baseline("web", "a", &before, &now);
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[1].before.as_deref(), Some("3.0.11"));
        assert!(compare_baseline("web", "a", &before, &before).is_empty());
    }
}
