//! One topology fragment: YAML text to definitions with their locations.
//!
//! Pure: takes the file's label and text, touches nothing. Every problem in
//! the file is collected, not only the first, so one `check` shows them all.

use super::diagnostic::{Diagnostic, Location};
use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::{LoadError, LoaderOptions, Node, Span};
use power_proto::hostlist;
use power_proto::wire::Action;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The reference's exit code for "off" from a `status` command.
pub const DEFAULT_STATUS_OFF_EXIT_CODE: i32 = 111;
/// How long a driver may run before its process group is killed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// A node-key hostlist may define at most this many nodes.
const NODE_KEY_LIMIT: usize = hostlist::DEFAULT_LIMIT;

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

/// How a platform's actions are carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriverSpec {
    /// Inline shell per action, turned into a generated script.
    Inline(BTreeMap<Action, String>),
    /// A drop-in executable found in the drivers directories.
    DropIn(At<String>),
}

/// One `platforms` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformDef {
    /// The platform's name, where its key stands.
    pub name: At<String>,
    /// Node variables passed to the driver.
    pub variables: Vec<At<String>>,
    /// Inline commands or a drop-in driver.
    pub driver: DriverSpec,
    /// `status` exit code meaning "off".
    pub status_off_exit_code: i32,
    /// Per-run timeout.
    pub timeout: Duration,
    /// Most runs of this platform at once (`None`: only the global bound).
    pub concurrency: Option<usize>,
    /// A variable whose value names a shared controller: runs sharing it
    /// never overlap.
    pub serialize_by: Option<At<String>>,
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
pub fn parse(file: &Arc<str>, text: &str) -> Result<Fragment, Vec<Diagnostic>> {
    let mut p = Parser {
        file: file.clone(),
        errors: Vec::new(),
    };
    let fragment = p.fragment(text);
    if p.errors.is_empty() {
        Ok(fragment)
    } else {
        Err(p.errors)
    }
}

struct Parser {
    file: Arc<str>,
    errors: Vec<Diagnostic>,
}

impl Parser {
    fn loc(&self, span: &Span) -> Location {
        let (line, column) = span.start().map_or((1, 1), |m| (m.line(), m.column()));
        Location {
            file: self.file.clone(),
            line,
            column,
        }
    }

    fn error(&mut self, span: &Span, message: impl Into<String>) {
        let d = Diagnostic::at(&self.loc(span), message);
        self.errors.push(d);
    }

    fn at(&self, key: &MarkedScalarNode) -> At<String> {
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
        let options = LoaderOptions::default()
            .error_on_duplicate_keys(true)
            .prevent_coercion(true);
        let root = match marked_yaml::parse_yaml_with_options(0, text, options) {
            Ok(root) => root,
            Err(e) => {
                self.errors.push(self.yaml_error(&e));
                return fragment;
            }
        };
        let Some(root) = root.as_mapping() else {
            self.error(
                root.span(),
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

    fn yaml_error(&self, e: &LoadError) -> Diagnostic {
        let (marker, message) = match e {
            LoadError::TopLevelMustBeMapping(m) => (
                Some(*m),
                "expected a mapping with static_nodes, platforms and groups".to_string(),
            ),
            LoadError::TopLevelMustBeSequence(m) => (Some(*m), "unexpected top level".to_string()),
            LoadError::UnexpectedAnchor(m) => (
                Some(*m),
                "YAML anchors and aliases are not supported".into(),
            ),
            LoadError::MappingKeyMustBeScalar(m) => {
                (Some(*m), "a mapping key must be a plain string".into())
            }
            LoadError::UnexpectedTag(m) => (Some(*m), "YAML tags are not supported".into()),
            LoadError::ScanError(m, e) => (Some(*m), format!("invalid YAML: {}", e.info())),
            LoadError::DuplicateKey(inner) => {
                let first = inner.prev_key.span().start().map(|m| m.line()).unwrap_or(0);
                (
                    inner.key.span().start().copied(),
                    format!(
                        "key {:?} given twice in one mapping (first at line {first})",
                        inner.key.as_str()
                    ),
                )
            }
        };
        let (line, column) = marker.map_or((1, 1), |m| (m.line(), m.column()));
        Diagnostic::at(
            &Location {
                file: self.file.clone(),
                line,
                column,
            },
            message,
        )
    }

    /// `value` as a mapping, or an error naming `what` and the expected shape.
    fn mapping<'n>(
        &mut self,
        value: &'n Node,
        what: &str,
        shape: &str,
    ) -> Option<&'n MarkedMappingNode> {
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

    fn scalar<'n>(&mut self, value: &'n Node, what: &str) -> Option<&'n MarkedScalarNode> {
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
            Node::Sequence(items) => items
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

    fn node(&mut self, key: &MarkedScalarNode, value: &Node) -> Option<NodeDef> {
        let names = match hostlist::expand(key.as_str(), NODE_KEY_LIMIT) {
            Ok(names) if names.is_empty() => {
                self.error(key.span(), "static_nodes: empty node name");
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
        let label = format!("node {}", key.as_str());
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
            other => self.mapping(other, &label, "platform and variables"),
        };
        for (k, v) in settings.into_iter().flat_map(|m| m.iter()) {
            match k.as_str() {
                "platform" => {
                    def.platform = self
                        .scalar(v, &format!("{label}: platform"))
                        .map(|s| self.at(s))
                }
                "groups" => def.groups = self.strings(v, &format!("{label}: groups")),
                "name" => self.error(
                    k.span(),
                    format!("{label}: \"name\" is set from the node's key and cannot be given"),
                ),
                _ => {
                    let what = format!("{label}: variable {}", k.as_str());
                    if let Err(e) = check_variable_name(k.as_str()) {
                        self.error(k.span(), format!("{what}: {e}"));
                    } else if let Some(s) = self.scalar(v, &what) {
                        def.variables.push((self.at(k), s.as_str().to_string()));
                    }
                }
            }
        }
        if def.platform.is_none() {
            self.error(
                key.span(),
                format!("{label}: no platform (expected a \"platform\" key)"),
            );
        }
        Some(def)
    }

    fn platform(&mut self, key: &MarkedScalarNode, value: &Node) -> Option<PlatformDef> {
        let label = format!("platform {}", key.as_str());
        let map = self.mapping(value, &label, "variables, commands or driver")?;
        let mut variables = Vec::new();
        let mut commands = BTreeMap::new();
        let mut driver = None;
        let mut status_off_exit_code = DEFAULT_STATUS_OFF_EXIT_CODE;
        let mut timeout = DEFAULT_TIMEOUT;
        let mut concurrency = None;
        let mut serialize_by = None;
        for (k, v) in map.iter() {
            let what = format!("{label}: {}", k.as_str());
            match k.as_str() {
                "variables" => {
                    variables = self.strings(v, &what);
                    for var in &variables {
                        if let Err(e) = check_variable_name(&var.value) {
                            self.errors.push(Diagnostic::at(&var.at, format!("{what}: {:?}: {e}", var.value)));
                        }
                    }
                }
                "power_on" | "power_off" | "restart" | "status" => {
                    if let Some(s) = self.scalar(v, &what) {
                        let action = k.as_str().parse::<Action>().expect("matched an action name");
                        commands.insert(action, s.as_str().to_string());
                    }
                }
                "driver" => driver = self.scalar(v, &what).map(|s| self.at(s)),
                "status_off_exit_code" => {
                    if let Some(s) = self.scalar(v, &what) {
                        match s.as_str().parse::<i32>() {
                            Ok(code) if (1..=255).contains(&code) => status_off_exit_code = code,
                            _ => self.error(
                                s.span(),
                                format!("{what}: expected an exit code from 1 to 255, found {:?}", s.as_str()),
                            ),
                        }
                    }
                }
                "timeout" => {
                    if let Some(s) = self.scalar(v, &what) {
                        match parse_duration(s.as_str()) {
                            Ok(d) => timeout = d,
                            Err(e) => self.error(s.span(), format!("{what}: {e}")),
                        }
                    }
                }
                "concurrency" => {
                    if let Some(s) = self.scalar(v, &what) {
                        match s.as_str().parse::<usize>() {
                            Ok(n) if n >= 1 => concurrency = Some(n),
                            _ => self.error(
                                s.span(),
                                format!("{what}: expected a whole number of at least 1, found {:?}", s.as_str()),
                            ),
                        }
                    }
                }
                "serialize_by" => serialize_by = self.scalar(v, &what).map(|s| self.at(s)),
                other => self.error(
                    k.span(),
                    format!(
                        "{label}: unknown key {other:?} (expected variables, power_on, power_off, restart, \
                         status, driver, status_off_exit_code, timeout, concurrency or serialize_by)"
                    ),
                ),
            }
        }
        let driver = match (driver, commands.is_empty()) {
            (Some(name), true) => DriverSpec::DropIn(name),
            (None, false) => DriverSpec::Inline(commands),
            (Some(name), false) => {
                self.error(
                    key.span(),
                    format!("{label}: gives both \"driver: {}\" and inline commands; use one or the other", name.value),
                );
                return None;
            }
            (None, true) => {
                self.error(
                    key.span(),
                    format!("{label}: no commands (expected power_on, power_off, restart and status, or driver: NAME)"),
                );
                return None;
            }
        };
        if let Some(var) = &serialize_by {
            if !variables.iter().any(|v| v.value == var.value) {
                self.error(
                    key.span(),
                    format!(
                        "{label}: serialize_by names {:?}, which is not one of its variables",
                        var.value
                    ),
                );
            }
        }
        Some(PlatformDef {
            name: self.at(key),
            variables,
            driver,
            status_off_exit_code,
            timeout,
            concurrency,
            serialize_by,
        })
    }

    fn group(&mut self, key: &MarkedScalarNode, value: &Node) -> Option<GroupDef> {
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
            match hostlist::expand(&expr.value, NODE_KEY_LIMIT) {
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

/// Node variables become environment variables of the driver, so their
/// names must be valid ones, and must not replace what the server or the
/// dynamic loader relies on.
pub fn check_variable_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err("not a valid environment variable name (letters, digits and '_', not starting with a digit)".into());
    }
    if name == "PATH" || name.starts_with("LD_") || name.starts_with("POWER_") || name == "BASH_ENV"
    {
        return Err(
            "would shadow PATH, LD_*, POWER_* or BASH_ENV in the driver's environment".into(),
        );
    }
    Ok(())
}

/// Group names are used in `?groups=` hostlists, so they follow node-name rules.
pub fn is_group_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// `90s`, `2m`, `1m 30s`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let parsed = match text.parse::<u64>() {
        Ok(secs) => Ok(Duration::from_secs(secs)),
        Err(_) => humantime::parse_duration(text).map_err(|e| e.to_string()),
    };
    match parsed {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("expected a duration above zero".to_string()),
        Err(e) => Err(format!(
            "expected a duration such as 90s or 2m, found {text:?} ({e})"
        )),
    }
}

fn kind(node: &Node) -> &'static str {
    match node {
        Node::Scalar(_) => "a single value",
        Node::Sequence(_) => "a list",
        Node::Mapping(_) => "a mapping",
    }
}
