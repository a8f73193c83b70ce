//! The merged topology: nodes, platforms and groups as the server uses them.

use super::diagnostic::Location;
use super::parse::DriverSpec;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// One node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The node's name (also its `name` variable).
    pub name: String,
    /// Its platform's name.
    pub platform: String,
    /// Its variables, `name` included. Never sent to clients.
    pub variables: BTreeMap<String, String>,
    /// Groups it lists itself in.
    pub groups: Vec<String>,
    /// Where its key stands.
    pub defined_at: Location,
    /// Where its `platform` value stands.
    pub platform_at: Location,
}

/// One platform: how to run each action for its nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// Its name.
    pub name: String,
    /// Where its key stands.
    pub defined_at: Location,
    /// The node variables its driver sees.
    pub variables: Vec<String>,
    /// Inline commands or a drop-in driver.
    pub driver: DriverSpec,
    /// `status` exit code that means "off".
    pub status_off_exit_code: i32,
    /// Per-run timeout.
    pub timeout: Duration,
    /// Most runs at once for this platform.
    pub concurrency: Option<usize>,
    /// A variable naming a shared controller; runs sharing its value never overlap.
    pub serialize_by: Option<String>,
    /// `Some(batch_max)` for a batch platform: its driver runs once per
    /// chunk of at most that many nodes, reading them on stdin.
    pub batch: Option<usize>,
}

/// One group of nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Its name.
    pub name: String,
    /// Its members, in order, without duplicates.
    pub nodes: Vec<String>,
}

/// The whole merged topology.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    nodes: Vec<Node>,
    index: HashMap<String, usize>,
    /// Platforms by name.
    pub platforms: BTreeMap<String, Platform>,
    /// Groups by name.
    pub groups: BTreeMap<String, Group>,
}

impl Topology {
    pub(super) fn new(
        nodes: Vec<Node>,
        platforms: BTreeMap<String, Platform>,
        groups: BTreeMap<String, Group>,
    ) -> Self {
        let index = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
        Topology {
            nodes,
            index,
            platforms,
            groups,
        }
    }

    /// Every node, in definition order (files in order, keys in file order).
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.index.get(name).map(|&i| &self.nodes[i])
    }
}
