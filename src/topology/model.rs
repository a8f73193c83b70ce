//! The merged topology: nodes, platforms and groups as the server uses them.

use super::diagnostic::Location;
use super::parse::At;
use power_proto::wire::Action;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// How a platform's actions are carried out: built by the driver module
/// (a generated script, or the drop-in found).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriverSpec {
    /// Inline shell per action, turned into a generated script.
    Inline {
        /// Shell run before every action (shared functions, settings).
        prelude: Option<String>,
        /// Each action's command.
        commands: BTreeMap<Action, String>,
    },
    /// A drop-in executable found in the drivers directories.
    DropIn(At<String>),
}

/// One node. A topology may hold 100,000 of them: the strings they share
/// (platform and variable names, repeated values) are shared, not copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The node's name (also its `name` variable).
    pub name: Arc<str>,
    /// Its platform's name.
    pub platform: Arc<str>,
    /// Its variables, `name` included. Never sent to clients.
    pub variables: Variables,
    /// Groups it lists itself in.
    pub groups: Vec<String>,
    /// Where its key stands.
    pub defined_at: Location,
    /// Where its `platform` value stands.
    pub platform_at: Location,
}

#[cfg(test)]
impl Node {
    /// A node of platform `p` with `vars`, defined at `t.yaml:1:1`.
    pub fn sample(name: &str, vars: &[(&str, &str)]) -> Node {
        let here = Location {
            file: "t.yaml".into(),
            line: 1,
            column: 1,
        };
        Node {
            name: name.into(),
            platform: "p".into(),
            variables: vars.iter().copied().collect(),
            groups: vec![],
            defined_at: here.clone(),
            platform_at: here,
        }
    }
}

/// A node's variables, sorted by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Variables(Box<[(Arc<str>, Arc<str>)]>);

impl Variables {
    /// The variables `pairs` define. Their names are distinct: the parser
    /// refuses a key given twice, and `name` as a variable.
    pub fn new(mut pairs: Vec<(Arc<str>, Arc<str>)>) -> Self {
        pairs.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        debug_assert!(
            pairs.windows(2).all(|w| w[0].0 != w[1].0),
            "a variable given twice"
        );
        Variables(pairs.into_boxed_slice())
    }

    /// The value of `name`, if the node sets it.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| (**k).cmp(name))
            .ok()
            .map(|i| &*self.0[i].1)
    }

    /// Every variable, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for Variables {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Self {
        Variables::new(
            pairs
                .into_iter()
                .map(|(k, v)| (Arc::from(k.as_ref()), Arc::from(v.as_ref())))
                .collect(),
        )
    }
}

impl std::ops::Index<&str> for Variables {
    type Output = str;

    fn index(&self, name: &str) -> &str {
        self.get(name)
            .unwrap_or_else(|| panic!("no variable {name:?}"))
    }
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
    /// A variable naming a shared controller; runs sharing its value never overlap.
    pub serialize_by: Option<String>,
    /// How its driver runs, as its `platforms` entry says.
    pub run: RunSettings,
}

/// How a platform's driver runs: the keys of its `platforms` entry that
/// the merge takes as they were parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSettings {
    /// Inline commands or a drop-in driver.
    pub driver: DriverSpec,
    /// `status` exit code that means "off".
    pub status_off_exit_code: i32,
    /// Per-run timeout.
    pub timeout: Duration,
    /// How long the server confirms an on, off or restart by polling
    /// status when a request does not say (`?wait=`); `None`: it does not.
    pub confirm: Option<Duration>,
    /// At most so many of its nodes switched on per period, evenly spaced
    /// (`power_on_rate`); other actions are not paced.
    pub power_on_rate: Option<crate::pace::Rate>,
    /// Most runs at once for this platform (`None`: only the global bound).
    pub concurrency: Option<usize>,
    /// `Some(batch_max)` for a batch platform: its driver runs once per
    /// chunk of at most that many nodes, reading them on stdin.
    pub batch: Option<usize>,
    /// A batch platform whose driver processes stay running, fed chunk
    /// after chunk (one per core for each controller value).
    pub persistent: bool,
    /// A persistent platform's processes, when not one per core.
    pub processes: Option<usize>,
}

/// One group of nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Its name.
    pub name: String,
    /// Its members, in order, without duplicates.
    pub nodes: Vec<String>,
}

/// Node positions by name. foldhash, not SipHash: it is looked up for
/// every node of every request, and its keys are the topology's own.
pub(super) type NodeIndex = HashMap<Arc<str>, usize, foldhash::fast::RandomState>;

/// The whole merged topology.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    nodes: Vec<Node>,
    index: NodeIndex,
    /// Platforms by name.
    pub platforms: BTreeMap<String, Platform>,
    /// Groups by name.
    pub groups: BTreeMap<String, Group>,
}

impl Topology {
    /// `index` maps each node's name to its place in `nodes`.
    pub(super) fn new(
        nodes: Vec<Node>,
        index: NodeIndex,
        platforms: BTreeMap<String, Platform>,
        groups: BTreeMap<String, Group>,
    ) -> Self {
        debug_assert_eq!(nodes.len(), index.len());
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
        self.position(name).map(|i| &self.nodes[i])
    }

    /// Where the node called `name` stands in [`Topology::nodes`].
    pub fn position(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// [`Topology::position`], trying first the node after `previous` (the
    /// position of the name before; `None`: try the first node). A
    /// request's names mostly come as ranges in definition order, and the
    /// next node is a compare in memory read just before, where a probe of
    /// the index misses the cache twice: for a 1,008-node request those
    /// misses were the top of the server's profile.
    pub fn position_after(&self, previous: Option<usize>, name: &str) -> Option<usize> {
        let next = previous.map_or(0, |p| p + 1);
        match self.nodes.get(next) {
            Some(node) if *node.name == *name => Some(next),
            _ => self.position(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology(names: &[&str]) -> Topology {
        let nodes: Vec<Node> = names.iter().map(|n| Node::sample(n, &[])).collect();
        let index = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
        Topology::new(nodes, index, BTreeMap::new(), BTreeMap::new())
    }

    #[test]
    fn position_after_agrees_with_position_whatever_the_hint() {
        let t = topology(&["n1", "n2", "n3", "m1"]);
        let previous = [None, Some(0), Some(1), Some(2), Some(3), Some(99)];
        for name in ["n1", "n2", "n3", "m1", "nx", ""] {
            for p in previous {
                assert_eq!(
                    t.position_after(p, name),
                    t.position(name),
                    "{name} after {p:?}"
                );
            }
        }
    }
}
