//! The handles a playbook holds: `cluster("db-pair")` and its nodes.
//! Handles are names; every live property (`n.role`, `n.in_service`) asks
//! the adapters at the moment it is read.

use pitcrew_runtime::ClusterKind;
use rhai::ImmutableString;

#[derive(Debug, Clone)]
pub struct ClusterHandle {
    pub name: ImmutableString,
    pub kind: ClusterKind,
    pub nodes: Vec<NodeHandle>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeHandle {
    pub name: ImmutableString,
    pub cluster: ImmutableString,
}
