//! One topology fragment: YAML text to definitions with their locations.
//!
//! Pure: takes the file's label and text, touches nothing. Every problem in
//! the file is collected, not only the first, so one `check` shows them all.

use super::diagnostic::{Diagnostic, Location};
pub use super::model::{DriverSpec, RunSettings};
use super::yaml::{self, Mapping, Node, Scalar, Span};
use power_proto::hostlist;
use std::sync::Arc;
use std::time::Duration;

mod platform;

pub use platform::{check_variable_name, is_group_name, parse_duration};

/// The reference's exit code for "off" from a `status` command.
pub const DEFAULT_STATUS_OFF_EXIT_CODE: i32 = 111;
/// How long a driver may run before its process group is killed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Nodes per driver run of a batch platform, unless it sets `batch_max`.
pub const DEFAULT_BATCH_MAX: usize = 256;
/// A node-key hostlist may define at most this many nodes.
const NODE_KEY_LIMIT: usize = hostlist::DEFAULT_LIMIT;
/// The hostlists of one load (node keys and group members, every file
/// together) may name at most this many nodes: twenty keys of 100,000 in a
/// few hundred bytes would otherwise take gigabytes.
pub const TOTAL_NAMES_LIMIT: usize = 1_000_000;

/// Names the hostlists of one load may still expand to; shared by the
/// files and pieces read side by side.
#[derive(Debug)]
pub struct Budget(std::sync::atomic::AtomicUsize);

impl Default for Budget {
    fn default() -> Self {
        Budget(TOTAL_NAMES_LIMIT.into())
    }
}

impl Budget {
    /// A budget of `names` (tests; loads use [`TOTAL_NAMES_LIMIT`]).
    #[cfg(test)]
    pub fn new(names: usize) -> Self {
        Budget(names.into())
    }

    /// Take `count` names, if that many are left.
    fn take(&self, count: usize) -> bool {
        use std::sync::atomic::Ordering;
        self.0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(count)
            })
            .is_ok()
    }
}

/// A value together with where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct At<T> {
    /// The value.
    pub value: T,
    /// Where it was written.
    pub at: Location,
}

/// What one file defines.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Fragment {
    /// `static_nodes` entries, in file order.
    pub nodes: Vec<NodeDef>,
    /// `platforms` entries, in file order.
    pub platforms: Vec<PlatformDef>,
    /// `groups` entries, in file order.
    pub groups: Vec<GroupDef>,
    /// The index of the directory the file came from (later directories
    /// take precedence); set by the loader, 0 when parsed alone.
    pub precedence: usize,
}

/// One `static_nodes` entry; its key may be a hostlist naming many nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeDef {
    /// The names the key expands to, with the key's location.
    pub names: At<Vec<String>>,
    /// The `platform` value.
    pub platform: Option<At<String>>,
    /// The node's variables (everything but `platform` and `groups`).
    pub variables: Vec<(At<String>, String)>,
    /// The node's own `groups` list.
    pub groups: Vec<At<String>>,
}

/// One `platforms` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformDef {
    /// The platform's name, where its key stands.
    pub name: At<String>,
    /// Node variables passed to the driver.
    pub variables: Vec<At<String>>,
    /// A variable whose value names a shared controller: runs sharing it
    /// never overlap.
    pub serialize_by: Option<At<String>>,
    /// The driver and how it runs.
    pub run: RunSettings,
}

/// One `groups` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDef {
    /// The group's name, where its key stands.
    pub name: At<String>,
    /// Its members, expanded from the hostlist.
    pub members: Vec<String>,
}

/// Parse one fragment. `file` labels every location.
#[cfg(test)]
pub fn parse(file: &Arc<str>, text: &str) -> Result<Fragment, Vec<Diagnostic>> {
    parse_at(file, text, 1, &Budget::default())
}

/// Parse `text`, which starts at line `first_line` of `file` (a piece of a
/// large file, cut by [`super::split`]).
/// Every hostlist takes its names from `budget`, the load's.
pub fn parse_at(
    file: &Arc<str>,
    text: &str,
    first_line: usize,
    budget: &Budget,
) -> Result<Fragment, Vec<Diagnostic>> {
    let mut p = Parser {
        file: file.clone(),
        first_line,
        budget,
        errors: Vec::new(),
    };
    let fragment = p.fragment(text);
    if p.errors.is_empty() {
        Ok(fragment)
    } else {
        Err(p.errors)
    }
}

struct Parser<'b> {
    file: Arc<str>,
    /// The file's line number of the text's first line.
    first_line: usize,
    budget: &'b Budget,
    errors: Vec<Diagnostic>,
}

impl Parser<'_> {
    /// The names of hostlist `expr`, if it is valid and the load's budget
    /// has room for them; else why not.
    fn expand(&self, expr: &str) -> Result<Vec<String>, String> {
        // A plain name (most node keys) is one name: no need to parse it
        // twice, to count and then to expand.
        let count = if expr.contains(['[', ',']) {
            hostlist::count(expr).map_err(|e| e.to_string())?
        } else {
            1
        };
        if count <= NODE_KEY_LIMIT as u128 && !self.budget.take(count as usize) {
            return Err(format!(
                "the topology's hostlists (node keys and group members) would name more \
                 than {TOTAL_NAMES_LIMIT} nodes"
            ));
        }
        hostlist::expand(expr, NODE_KEY_LIMIT).map_err(|e| e.to_string())
    }

    fn loc(&self, span: &Span) -> Location {
        Location {
            file: self.file.clone(),
            line: span.line,
            column: span.column,
        }
    }

    fn error(&mut self, span: &Span, message: impl Into<String>) {
        let d = Diagnostic::at(&self.loc(span), message);
        self.errors.push(d);
    }

    fn at(&self, key: &Scalar) -> At<String> {
        At {
            value: key.as_str().to_string(),
            at: self.loc(key.span()),
        }
    }

    fn fragment(&mut self, text: &str) -> Fragment {
        let mut fragment = Fragment::default();
        // A file of comments only is valid and defines nothing.
        if text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            return fragment;
        }
        let parsed = match yaml::parse_from(text, self.first_line) {
            Ok(parsed) => parsed,
            Err(e) => {
                self.error(&e.span, e.message);
                return fragment;
            }
        };
        for problem in parsed.problems {
            self.error(&problem.span, problem.message);
        }
        let Node::Mapping(root) = &parsed.root else {
            self.error(
                parsed.root.span(),
                "expected a mapping with static_nodes, platforms and groups",
            );
            return fragment;
        };
        for (key, value) in root.iter() {
            match key.as_str() {
                "static_nodes" => {
                    if let Some(map) =
                        self.mapping(value, "static_nodes", "node name -> its settings")
                    {
                        fragment.nodes = map.iter().filter_map(|(k, v)| self.node(k, v)).collect();
                    }
                }
                "platforms" => {
                    if let Some(map) =
                        self.mapping(value, "platforms", "platform name -> its settings")
                    {
                        fragment.platforms = map
                            .iter()
                            .filter_map(|(k, v)| self.platform(k, v))
                            .collect();
                    }
                }
                "groups" => {
                    if let Some(map) = self.mapping(value, "groups", "group name -> hostlist") {
                        fragment.groups =
                            map.iter().filter_map(|(k, v)| self.group(k, v)).collect();
                    }
                }
                other => self.error(
                    key.span(),
                    format!("unknown key {other:?} (expected static_nodes, platforms or groups)"),
                ),
            }
        }
        fragment
    }

    /// `value` as a mapping, or an error naming `what` and the expected shape.
    fn mapping<'n>(&mut self, value: &'n Node, what: &str, shape: &str) -> Option<&'n Mapping> {
        match value {
            Node::Mapping(m) => Some(m),
            // `static_nodes:` with nothing after it: an empty section.
            Node::Scalar(s) if s.as_str().is_empty() => None,
            other => {
                self.error(
                    other.span(),
                    format!(
                        "{what}: expected a mapping ({shape}), found {}",
                        kind(other)
                    ),
                );
                None
            }
        }
    }

    fn scalar<'n>(&mut self, value: &'n Node, what: &str) -> Option<&'n Scalar> {
        match value {
            Node::Scalar(s) => Some(s),
            other => {
                self.error(
                    other.span(),
                    format!("{what}: expected a single value, found {}", kind(other)),
                );
                None
            }
        }
    }

    /// A list of strings; a lone string is accepted as a list of one.
    fn strings(&mut self, value: &Node, what: &str) -> Vec<At<String>> {
        match value {
            Node::Scalar(s) if s.as_str().is_empty() => Vec::new(),
            Node::Scalar(s) => vec![self.at(s)],
            Node::Sequence(items, _) => items
                .iter()
                .filter_map(|item| self.scalar(item, what).map(|s| self.at(s)))
                .collect(),
            Node::Mapping(m) => {
                self.error(
                    m.span(),
                    format!("{what}: expected a list of names, found a mapping"),
                );
                Vec::new()
            }
        }
    }

    fn node(&mut self, key: &Scalar, value: &Node) -> Option<NodeDef> {
        let names = match self.expand(key.as_str()) {
            Ok(names) if names.is_empty() => {
                self.error(key.span(), "static_nodes: empty node name");
                return None;
            }
            // A name is also a driver's argument-like value and a sim's
            // file name: `-rf` and `..` are not host names.
            Ok(names) if names.iter().any(|n| n.starts_with(['-', '.'])) => {
                self.error(
                    key.span(),
                    format!(
                        "static_nodes: node key {:?}: a node name must not start with '-' or '.'",
                        key.as_str()
                    ),
                );
                return None;
            }
            Ok(names) => names,
            Err(e) => {
                self.error(
                    key.span(),
                    format!("static_nodes: node key {:?}: {e}", key.as_str()),
                );
                return None;
            }
        };
        // Messages are made only for errors: this runs for 100,000 nodes.
        let label = || format!("node {}", key.as_str());
        let mut def = NodeDef {
            names: At {
                value: names,
                at: self.loc(key.span()),
            },
            platform: None,
            variables: Vec::new(),
            groups: Vec::new(),
        };
        let settings = match value {
            // `node01:` alone: a node with no settings (an error below: no platform).
            Node::Scalar(s) if s.as_str().is_empty() => None,
            Node::Mapping(m) => Some(m),
            other => self.mapping(other, &label(), "platform and variables"),
        };
        let mut platform_given = false;
        for (k, v) in settings.into_iter().flat_map(Mapping::iter) {
            match (k.as_str(), v) {
                ("platform", Node::Scalar(s)) => {
                    platform_given = true;
                    def.platform = Some(self.at(s));
                }
                ("platform", other) => {
                    platform_given = true;
                    self.scalar(other, &format!("{}: platform", label()));
                }
                ("groups", v) => def.groups = self.strings(v, &format!("{}: groups", label())),
                ("name", _) => self.error(
                    k.span(),
                    format!(
                        "{}: \"name\" is set from the node's key and cannot be given",
                        label()
                    ),
                ),
                (name, v) => {
                    let what = || format!("{}: variable {name}", label());
                    match (check_variable_name(name), v) {
                        (Err(e), _) => self.error(k.span(), format!("{}: {e}", what())),
                        (Ok(()), Node::Scalar(s)) => {
                            def.variables.push((self.at(k), s.as_str().to_string()));
                        }
                        (Ok(()), other) => {
                            self.scalar(other, &what());
                        }
                    }
                }
            }
        }
        if !platform_given {
            self.error(
                key.span(),
                format!("{}: no platform (expected a \"platform\" key)", label()),
            );
        }
        Some(def)
    }

    fn group(&mut self, key: &Scalar, value: &Node) -> Option<GroupDef> {
        let label = format!("group {}", key.as_str());
        if !is_group_name(key.as_str()) {
            self.error(
                key.span(),
                format!("{label}: a group name is letters, digits, '-', '_' and '.' only"),
            );
            return None;
        }
        let mut members = Vec::new();
        for expr in self.strings(value, &label) {
            match self.expand(&expr.value) {
                Ok(names) => members.extend(names),
                Err(e) => self.errors.push(Diagnostic::at(
                    &expr.at,
                    format!("{label}: hostlist {:?}: {e}", expr.value),
                )),
            }
        }
        Some(GroupDef {
            name: self.at(key),
            members,
        })
    }
}

fn kind(node: &Node) -> &'static str {
    match node {
        Node::Scalar(_) => "a single value",
        Node::Sequence(..) => "a list",
        Node::Mapping(_) => "a mapping",
    }
}

/// Helpers the tests of this module and of `platform` share.
#[cfg(test)]
mod test_support {
    use super::*;

    pub(super) fn parse_ok(text: &str) -> Fragment {
        parse(&Arc::from("t.yaml"), text).unwrap_or_else(|e| panic!("unexpected errors: {e:?}"))
    }

    /// Every error of `text`, rendered as a person reads it.
    pub(super) fn errors(text: &str) -> Vec<String> {
        match parse(&Arc::from("t.yaml"), text) {
            Ok(f) => panic!("expected errors, parsed {f:?}"),
            Err(e) => e.iter().map(ToString::to_string).collect(),
        }
    }

    pub(super) fn one_error(text: &str) -> String {
        let e = errors(text);
        assert_eq!(e.len(), 1, "expected one error, got {e:#?}");
        e.into_iter().next().unwrap()
    }

    /// The reference server's documented topology.yaml, verbatim.
    pub(crate) const REFERENCE: &str =
        include_str!("../../../tests/fixtures/reference/topology.yaml");
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use power_proto::wire::Action;

    /// Hostlists share one budget of names for the whole load: the key or
    /// group that would pass it is an error, and nothing is expanded.
    #[test]
    fn hostlists_share_a_budget_of_names() {
        let budget = Budget::new(250);
        let text = "static_nodes:\n  n[1-100]: {platform: p}\n  m[1-100]: {platform: p}\n\
                    groups:\n  g: x[1-60]\n";
        let errors = parse_at(&Arc::from("t.yaml"), text, 1, &budget).unwrap_err();
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            errors,
            [format!(
                "t.yaml:5:6: group g: hostlist \"x[1-60]\": the topology's hostlists (node keys \
                 and group members) would name more than {TOTAL_NAMES_LIMIT} nodes"
            )]
        );
        // Another file of the same load finds the budget as the first left it.
        let more = parse_at(&Arc::from("u.yaml"), "groups:\n  h: y[1-50]\n", 1, &budget);
        assert!(more.is_ok());
        assert!(parse_at(&Arc::from("v.yaml"), "groups:\n  h: z1\n", 1, &budget).is_err());
    }

    #[test]
    fn the_reference_topology_parses_unchanged() {
        let f = parse_ok(REFERENCE);
        let names: Vec<&str> = f.nodes.iter().map(|n| n.names.value[0].as_str()).collect();
        assert_eq!(names, ["node01", "node02", "node03"]);
        assert_eq!(f.nodes[0].platform.as_ref().unwrap().value, "aws");
        assert_eq!(f.nodes[0].variables[0].0.value, "ec2_id");
        assert_eq!(f.nodes[0].variables[0].1, "i-node01xxxxxxxxxxx");
        let platforms: Vec<&str> = f.platforms.iter().map(|p| p.name.value.as_str()).collect();
        assert_eq!(platforms, ["ipmi", "aws", "azure"]);
        let aws = &f.platforms[1];
        assert_eq!(aws.run.status_off_exit_code, 123);
        assert_eq!(
            f.platforms[0].run.status_off_exit_code,
            DEFAULT_STATUS_OFF_EXIT_CODE
        );
        assert_eq!(aws.run.timeout, DEFAULT_TIMEOUT);
        let DriverSpec::Inline { commands, .. } = &aws.run.driver else {
            panic!("aws is inline")
        };
        assert_eq!(commands.len(), 4);
        assert!(commands[&Action::Status].contains("\\\"stopped\\\")"));
    }

    #[test]
    fn values_stay_as_written() {
        // A password of digits must not lose its leading zero, nor a
        // version become a float.
        let f = parse_ok(
            "static_nodes:\n  n1:\n    platform: p\n    pw: 0123\n    v: 1.10\n    flag: yes\n",
        );
        let vars: Vec<(&str, &str)> = f.nodes[0]
            .variables
            .iter()
            .map(|(k, v)| (k.value.as_str(), v.as_str()))
            .collect();
        assert_eq!(vars, [("pw", "0123"), ("v", "1.10"), ("flag", "yes")]);
    }

    #[test]
    fn a_node_key_may_be_a_hostlist() {
        let f = parse_ok("static_nodes:\n  cn[001-003]:\n    platform: p\n");
        assert_eq!(f.nodes[0].names.value, ["cn001", "cn002", "cn003"]);
        assert_eq!(
            (f.nodes[0].names.at.line, f.nodes[0].names.at.column),
            (2, 3)
        );
    }

    #[test]
    fn comment_only_and_empty_sections_define_nothing() {
        assert_eq!(parse_ok("# nothing here\n\n"), Fragment::default());
        assert_eq!(parse_ok("static_nodes:\nplatforms:\n"), Fragment::default());
    }

    #[test]
    fn unknown_keys_are_errors_with_file_and_line() {
        assert_eq!(
            one_error("platforms: {}\nstatic_node:\n  n1: {platform: p}\n"),
            "t.yaml:2:1: unknown key \"static_node\" (expected static_nodes, platforms or groups)"
        );
        let e = one_error("platforms:\n  p:\n    driver: sim\n    timeuot: 5s\n");
        assert!(
            e.starts_with("t.yaml:4:5: platform p: unknown key \"timeuot\" (expected variables,"),
            "{e}"
        );
    }

    #[test]
    fn node_names_do_not_start_with_a_dash_or_a_dot() {
        for bad in ["-rf", "..", ".hidden", "-n[1-2]"] {
            let e = one_error(&format!("static_nodes:\n  \"{bad}\":\n    platform: p\n"));
            assert_eq!(
                e,
                format!(
                    "t.yaml:2:3: static_nodes: node key {bad:?}: a node name must not start with '-' or '.'"
                )
            );
        }
        let names = parse_ok("static_nodes:\n  n-1.x_2:\n    platform: p\n").nodes;
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn node_errors_name_the_node_and_line() {
        assert_eq!(
            one_error("static_nodes:\n  n1:\n    ipmi_user: x\n"),
            "t.yaml:2:3: node n1: no platform (expected a \"platform\" key)"
        );
        assert_eq!(
            one_error("static_nodes:\n  n1:\n    platform: p\n    name: other\n"),
            "t.yaml:4:5: node n1: \"name\" is set from the node's key and cannot be given"
        );
        assert_eq!(
            one_error("static_nodes:\n  n1:\n    platform: [a, b]\n"),
            "t.yaml:3:15: node n1: platform: expected a single value, found a list"
        );
        let e = one_error("static_nodes:\n  n1:\n    platform: p\n    bmc:\n      host: x\n");
        assert!(e.starts_with("t.yaml:5:"), "{e}");
        assert!(
            e.ends_with(": node n1: variable bmc: expected a single value, found a mapping"),
            "{e}"
        );
        let e = one_error("static_nodes:\n  n[3-1]:\n    platform: p\n");
        assert!(
            e.starts_with("t.yaml:2:3: static_nodes: node key \"n[3-1]\": "),
            "{e}"
        );
    }

    #[test]
    fn yaml_errors_carry_their_position() {
        let e = one_error("static_nodes:\n  n1:\n    platform: \"unterminated\n");
        assert!(e.starts_with("t.yaml:"), "{e}");
        assert!(e.contains("invalid YAML"), "{e}");
        assert_eq!(
            one_error("static_nodes:\n  n1:\n    platform: a\n  n1:\n    platform: b\n"),
            "t.yaml:4:3: key \"n1\" given twice in one mapping (first at line 2)"
        );
        assert_eq!(
            one_error("- just\n- a list\n"),
            "t.yaml:1:1: expected a mapping with static_nodes, platforms and groups"
        );
        assert_eq!(
            one_error("static_nodes: [n1, n2]\n"),
            "t.yaml:1:15: static_nodes: expected a mapping (node name -> its settings), found a list"
        );
    }

    #[test]
    fn every_error_of_a_file_is_reported() {
        let e = errors("bogus: 1\nplatforms:\n  p:\n    driver: d\n    concurrency: -1\nstatic_nodes:\n  n1: {}\n");
        assert_eq!(e.len(), 3, "{e:#?}");
        assert!(e[0].starts_with("t.yaml:1:1:"));
        assert!(e[1].starts_with("t.yaml:5:18:"));
        assert!(e[2].starts_with("t.yaml:7:3:"));
    }

    #[test]
    fn groups_are_hostlists() {
        let f = parse_ok("groups:\n  rack1: n[1-3],x\n  gpu: [g1, \"g[2-3]\"]\n");
        assert_eq!(f.groups[0].members, ["n1", "n2", "n3", "x"]);
        assert_eq!(f.groups[1].members, ["g1", "g2", "g3"]);
        let e = one_error("groups:\n  rack1: n[1-\n");
        assert!(
            e.starts_with("t.yaml:2:10: group rack1: hostlist \"n[1-\": "),
            "{e}"
        );
        let e = one_error("groups:\n  \"bad name\": n1\n");
        assert!(
            e.starts_with("t.yaml:2:3: group bad name: a group name is"),
            "{e}"
        );
    }
}
