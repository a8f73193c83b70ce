//! Fragments to one topology: duplicates across files, cross-references.
//!
//! Pure: works on parsed fragments in the order their files were read.

use super::diagnostic::{Diagnostic, Location};
use super::model::{Group, Node, Platform, Topology, Variables};
use super::parse::{Fragment, GroupDef, NodeDef, PlatformDef};
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// What merging found that is not fatal.
pub type Warnings = Vec<Diagnostic>;

#[cfg(test)]
/// Merge fragments in read order. Every error is reported, not only the first.
///
/// A platform defined in two files of one directory is an error; defined in
/// files of two directories, the later directory's definition wins (an
/// admin redefines a packaged platform, as a later file replaces an earlier
/// one), with a warning naming both.
pub fn merge(fragments: Vec<Fragment>) -> Result<(Topology, Warnings), Vec<Diagnostic>> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    merge_prepared(fragments.into_iter().map(|f| prepare(f, threads)).collect())
}

/// A fragment with its nodes built: the part of the merge that needs no
/// other fragment, so fragments (and pieces of one) can be prepared side
/// by side.
pub struct Prepared {
    precedence: usize,
    platforms: Vec<PlatformDef>,
    groups: Vec<GroupDef>,
    nodes: Vec<Node>,
    unsendable: Vec<Unsendable>,
}

/// Build `fragment`'s nodes, on up to `threads` threads when it has many.
pub fn prepare(fragment: Fragment, threads: usize) -> Prepared {
    let mut nodes = Vec::new();
    let mut unsendable = Vec::new();
    for (built, found) in build_nodes(fragment.nodes, threads) {
        if nodes.is_empty() {
            nodes = built;
        } else {
            nodes.extend(built);
        }
        unsendable.extend(found);
    }
    Prepared {
        precedence: fragment.precedence,
        platforms: fragment.platforms,
        groups: fragment.groups,
        nodes,
        unsendable,
    }
}

/// [`merge`] of fragments already prepared, in read order.
pub fn merge_prepared(fragments: Vec<Prepared>) -> Result<(Topology, Warnings), Vec<Diagnostic>> {
    let mut joined = Joined::default();
    for fragment in fragments {
        joined.add_platforms(fragment.platforms, fragment.precedence);
        joined.unsendable.extend(fragment.unsendable);
        joined.add_nodes(fragment.nodes);
        joined.add_groups(fragment.groups);
    }
    joined.finish()
}

/// Fragments joined so far: every name once, errors and warnings as found.
#[derive(Default)]
struct Joined {
    errors: Vec<Diagnostic>,
    warnings: Warnings,
    nodes: Vec<Node>,
    /// Each node's index in `nodes`, by name: duplicates are found here,
    /// and it becomes the topology's index.
    index: super::model::NodeIndex,
    platforms: BTreeMap<String, (Platform, usize)>,
    groups: BTreeMap<String, (Group, Option<Location>)>,
    /// Values a batch driver could not read on a line, checked once the
    /// platforms are known.
    unsendable: Vec<Unsendable>,
}

impl Joined {
    /// A fragment's platforms: one of a later directory replaces one of an
    /// earlier (a warning); two in one directory are an error.
    fn add_platforms(&mut self, defs: Vec<PlatformDef>, precedence: usize) {
        for def in defs {
            let name = def.name.value.clone();
            if let Some((first, first_precedence)) = self.platforms.get(&name) {
                let (kept, dropped) = match precedence.cmp(first_precedence) {
                    std::cmp::Ordering::Equal => {
                        self.errors
                            .push(twice("platform", &name, &first.defined_at, &def.name.at));
                        continue;
                    }
                    std::cmp::Ordering::Less => (&first.defined_at, &def.name.at),
                    std::cmp::Ordering::Greater => (&def.name.at, &first.defined_at),
                };
                self.warnings.push(Diagnostic::at(
                    kept,
                    format!(
                        "platform {name}: replaces the one at {dropped} (a later directory wins)"
                    ),
                ));
                if precedence < *first_precedence {
                    continue;
                }
            }
            let platform = Platform {
                name: name.clone(),
                defined_at: def.name.at,
                variables: def.variables.into_iter().map(|v| v.value).collect(),
                serialize_by: def.serialize_by.map(|v| v.value),
                run: def.run,
            };
            self.platforms.insert(name, (platform, precedence));
        }
    }

    /// A fragment's nodes, each name once: a repeat is an error naming both
    /// places, and is dropped.
    fn add_nodes(&mut self, fragment: Vec<Node>) {
        let nodes = &mut self.nodes;
        self.index.reserve(fragment.len());
        let mut repeated = Vec::new();
        // Each repeat with its first definition, reported once per pair of
        // places (two hostlists that overlap are one mistake).
        let mut twice_at: Vec<(&Node, &Location)> = Vec::new();
        for (i, node) in fragment.iter().enumerate() {
            match self.index.entry(node.name.clone()) {
                Entry::Occupied(first) => {
                    let first = match *first.get() {
                        j if j < nodes.len() => &nodes[j],
                        // Kept in this fragment: its place among them, less
                        // the repeats dropped before it.
                        j => {
                            let mut raw = j - nodes.len();
                            for &dropped in &repeated {
                                if dropped <= raw {
                                    raw += 1;
                                }
                            }
                            &fragment[raw]
                        }
                    };
                    twice_at.push((node, &first.defined_at));
                    repeated.push(i);
                }
                Entry::Vacant(slot) => {
                    slot.insert(nodes.len() + i - repeated.len());
                }
            }
        }
        for run in twice_at.chunk_by(|a, b| a.1 == b.1 && a.0.defined_at == b.0.defined_at) {
            let (node, first) = run[0];
            let is = if run.len() == 1 { "is" } else { "are" };
            self.errors.push(Diagnostic::at(
                &node.defined_at,
                format!(
                    "{} {is} defined twice: first at {first}, again here",
                    named(run.iter().map(|(n, _)| *n))
                ),
            ));
        }
        if nodes.is_empty() && repeated.is_empty() {
            // The usual first fragment: its nodes as they are, not moved one by one.
            *nodes = fragment;
        } else {
            nodes.extend(
                fragment
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| repeated.binary_search(i).is_err())
                    .map(|(_, node)| node),
            );
        }
    }

    /// A fragment's groups: one defined twice is an error.
    fn add_groups(&mut self, defs: Vec<GroupDef>) {
        for def in defs {
            let name = def.name.value;
            if let Some((_, Some(first))) = self.groups.get(&name) {
                self.errors.push(twice("group", &name, first, &def.name.at));
                continue;
            }
            self.groups.insert(
                name.clone(),
                (
                    Group {
                        name,
                        nodes: def.members,
                    },
                    Some(def.name.at),
                ),
            );
        }
    }

    /// The cross-references, once every file is in: each node's platform
    /// exists, batch platforms can be sent their values, nodes' own
    /// `groups` join their groups, and group members not defined are a
    /// warning. The topology, or every error.
    fn finish(mut self) -> Result<(Topology, Warnings), Vec<Diagnostic>> {
        let platforms: BTreeMap<String, Platform> = std::mem::take(&mut self.platforms)
            .into_iter()
            .map(|(name, (platform, _))| (name, platform))
            .collect();
        self.check_platforms_exist(&platforms);
        self.check_sendable(&platforms);
        let groups = self.join_groups();
        if self.errors.is_empty() {
            Ok((
                Topology::new(self.nodes, self.index, platforms, groups),
                self.warnings,
            ))
        } else {
            Err(self.errors)
        }
    }

    /// Each node's platform is defined. One error per `platform` line,
    /// naming its nodes as a hostlist: a typo under `n[0001-1000]` is one
    /// mistake, not a thousand (the nodes of one key are side by side).
    fn check_platforms_exist(&mut self, platforms: &BTreeMap<String, Platform>) {
        let nodes = &self.nodes;
        let defined: Vec<&str> = platforms.keys().map(String::as_str).collect();
        let defined = if defined.is_empty() {
            "none".to_string()
        } else {
            defined.join(", ")
        };
        let mut i = 0;
        while i < nodes.len() {
            let node = &nodes[i];
            if platforms.contains_key(&*node.platform) {
                i += 1;
                continue;
            }
            let end = nodes[i..]
                .iter()
                .position(|n| n.platform_at != node.platform_at || n.platform != node.platform)
                .map_or(nodes.len(), |k| i + k);
            self.errors.push(Diagnostic::at(
                &node.platform_at,
                format!(
                    "{}: unknown platform {:?} (defined: {defined})",
                    named(&nodes[i..end]),
                    node.platform
                ),
            ));
            i = end;
        }
    }

    fn check_sendable(&mut self, platforms: &BTreeMap<String, Platform>) {
        for u in std::mem::take(&mut self.unsendable) {
            let Some(platform) = platforms.get(&u.platform) else {
                continue;
            };
            if platform.run.batch.is_some() && platform.variables.contains(&u.variable.value) {
                self.errors.push(Diagnostic::at(
                    &u.variable.at,
                    format!(
                        "node {}: variable {}: the value holds {}, which cannot be sent to \
                         the batch platform {} (one node per line, fields split by TAB)",
                        u.nodes, u.variable.value, u.what, u.platform
                    ),
                ));
            }
        }
    }

    /// The groups with the nodes' own `groups` lists added (a group named
    /// only there is made), members once each; members not defined warn.
    fn join_groups(&mut self) -> BTreeMap<String, Group> {
        let mut groups = std::mem::take(&mut self.groups);
        for node in &self.nodes {
            for group in &node.groups {
                let (g, _) = groups.entry(group.clone()).or_insert_with(|| {
                    (
                        Group {
                            name: group.clone(),
                            nodes: Vec::new(),
                        },
                        None,
                    )
                });
                g.nodes.push(node.name.to_string());
            }
        }
        let mut out = BTreeMap::new();
        for (name, (mut group, at)) in groups {
            let mut seen = HashSet::new();
            group.nodes.retain(|n| seen.insert(n.clone()));
            let unknown: Vec<&str> = group
                .nodes
                .iter()
                .filter(|n| !self.index.contains_key(n.as_str()))
                .map(String::as_str)
                .collect();
            if !unknown.is_empty() {
                let message = format!(
                    "group {name}: {} member{} not in static_nodes: {}",
                    unknown.len(),
                    if unknown.len() == 1 { " is" } else { "s are" },
                    power_proto::hostlist::compress(unknown)
                );
                self.warnings.push(match &at {
                    Some(at) => Diagnostic::at(at, message),
                    None => Diagnostic::general(message),
                });
            }
            out.insert(name, group);
        }
        out
    }
}

/// `defs` as nodes, built side by side on the cores when there are many, in
/// order; and the values among them a batch driver could not be sent.
fn build_nodes(defs: Vec<NodeDef>, threads: usize) -> Vec<(Vec<Node>, Vec<Unsendable>)> {
    const PER_THREAD: usize = 20_000;
    let threads = threads.min(defs.len() / PER_THREAD).max(1);
    if threads == 1 {
        return vec![build_some(&defs)];
    }
    // Owned parts, so each thread also frees its definitions.
    let share = defs.len().div_ceil(threads);
    let mut parts = Vec::with_capacity(threads);
    let mut rest = defs;
    while rest.len() > share {
        let tail = rest.split_off(share);
        parts.push(rest);
        rest = tail;
    }
    parts.push(rest);
    std::thread::scope(|scope| {
        let built: Vec<_> = parts
            .into_iter()
            .map(|part| scope.spawn(move || build_some(&part)))
            .collect();
        built
            .into_iter()
            .map(|t| t.join().expect("building nodes does not panic"))
            .collect()
    })
}

/// `defs` as nodes, sharing their strings, and the unsendable values.
fn build_some(defs: &[NodeDef]) -> (Vec<Node>, Vec<Unsendable>) {
    let mut strings = Interner::default();
    // A copy of the file name of this thread's own: 200,000 counts of one
    // shared `Arc` from every thread at once would contend for it.
    let mut file: Option<(Arc<str>, Arc<str>)> = None;
    let mut here = |at: &Location| {
        let own = match &file {
            Some((shared, own)) if Arc::ptr_eq(shared, &at.file) => own.clone(),
            _ => {
                let own: Arc<str> = Arc::from(&*at.file);
                file = Some((at.file.clone(), own.clone()));
                own
            }
        };
        Location {
            file: own,
            ..at.clone()
        }
    };
    let mut nodes = Vec::with_capacity(defs.len());
    let mut unsendable = Vec::new();
    for def in defs {
        let Some(platform) = &def.platform else {
            continue;
        };
        for (key, value) in &def.variables {
            if let Some(what) = line_breaking(value) {
                unsendable.push(Unsendable {
                    nodes: power_proto::hostlist::compress(
                        def.names.value.iter().map(String::as_str),
                    ),
                    platform: platform.value.clone(),
                    variable: key.clone(),
                    what,
                });
            }
        }
        let defined_at = here(&def.names.at);
        let platform_at = here(&platform.at);
        for name in &def.names.value {
            let name: Arc<str> = Arc::from(name.as_str());
            let mut variables = Vec::with_capacity(def.variables.len() + 1);
            for (k, v) in &def.variables {
                let key = strings.get(&k.value);
                let value = strings.value(&key, v);
                variables.push((key, value));
            }
            variables.push((strings.get("name"), name.clone()));
            nodes.push(Node {
                name,
                platform: strings.get(&platform.value),
                variables: Variables::new(variables),
                groups: def.groups.iter().map(|g| g.value.clone()).collect(),
                defined_at: defined_at.clone(),
                platform_at: platform_at.clone(),
            });
        }
    }
    (nodes, unsendable)
}

/// One shared copy of each string: 100,000 nodes name a handful of
/// platforms and variables, and often repeat values (a user name, a region).
/// A variable whose values seldom repeat (an address per node) stops being
/// looked up: each value then has its own copy, as it would anyway.
#[derive(Default)]
struct Interner {
    strings: HashSet<Arc<str>, foldhash::fast::RandomState>,
    /// Per variable name: values seen, and how many were new.
    seen: HashMap<Arc<str>, (usize, usize), foldhash::fast::RandomState>,
}

/// Values of a variable looked up before deciding whether they repeat.
const INTERN_TRIAL: usize = 256;

impl Interner {
    fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(shared) = self.strings.get(s) {
            return shared.clone();
        }
        let shared: Arc<str> = Arc::from(s);
        self.strings.insert(shared.clone());
        shared
    }

    /// `value` of the variable `name`: shared while its values repeat.
    fn value(&mut self, name: &Arc<str>, value: &str) -> Arc<str> {
        let (seen, new) = match self.seen.get_mut(name) {
            Some(counts) => counts,
            None => self.seen.entry(name.clone()).or_default(),
        };
        if *seen >= INTERN_TRIAL && *new * 2 > *seen {
            return Arc::from(value);
        }
        *seen += 1;
        if let Some(shared) = self.strings.get(value) {
            return shared.clone();
        }
        *new += 1;
        let shared: Arc<str> = Arc::from(value);
        self.strings.insert(shared.clone());
        shared
    }
}

/// `nodes` for a message: `node n1`, or `nodes n[1-3]` as a hostlist.
fn named<'a>(nodes: impl IntoIterator<Item = &'a Node>) -> String {
    let names: Vec<&str> = nodes.into_iter().map(|n| &*n.name).collect();
    let what = if names.len() == 1 { "node" } else { "nodes" };
    format!("{what} {}", power_proto::hostlist::compress(names))
}

/// A node variable whose value would break a batch driver's input line.
struct Unsendable {
    nodes: String,
    platform: String,
    variable: super::parse::At<String>,
    what: &'static str,
}

/// What in `value` would break a TAB-separated line, if anything.
fn line_breaking(value: &str) -> Option<&'static str> {
    value.chars().find_map(|c| match c {
        '\t' => Some("a TAB"),
        '\n' => Some("a line feed"),
        '\r' => Some("a carriage return"),
        '\0' => Some("a NUL"),
        _ => None,
    })
}

fn twice(what: &str, name: &str, first: &Location, second: &Location) -> Diagnostic {
    Diagnostic::at(
        second,
        format!("{what} {name} is defined twice: first at {first}, again here"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::parse::{parse, DriverSpec};
    use std::sync::Arc;

    fn fragment(file: &str, text: &str) -> Fragment {
        parse(&Arc::from(file), text).unwrap()
    }

    fn merge_errors(files: &[(&str, &str)]) -> Vec<String> {
        let fragments = files.iter().map(|(f, t)| fragment(f, t)).collect();
        match merge(fragments) {
            Ok(_) => panic!("expected errors"),
            Err(e) => e.iter().map(ToString::to_string).collect(),
        }
    }

    const PLATFORM: &str = "platforms:\n  p:\n    driver: sim\n";

    #[test]
    fn a_node_defined_twice_names_both_files_and_lines() {
        let e = merge_errors(&[
            ("a.yaml", "static_nodes:\n  cn[1-4]:\n    platform: p\n"),
            (
                "b.yaml",
                "platforms:\n  p:\n    driver: sim\nstatic_nodes:\n  cn3:\n    platform: p\n",
            ),
        ]);
        assert_eq!(
            e,
            ["b.yaml:5:3: node cn3 is defined twice: first at a.yaml:2:3, again here"]
        );
    }

    #[test]
    fn overlapping_hostlists_in_one_file_are_duplicates_too() {
        let e = merge_errors(&[
            (
                "a.yaml",
                "static_nodes:\n  cn[1-2]:\n    platform: p\n  cn2:\n    platform: p\n",
            ),
            ("p.yaml", PLATFORM),
        ]);
        assert_eq!(
            e,
            ["a.yaml:4:3: node cn2 is defined twice: first at a.yaml:2:3, again here"]
        );
        // Each repeat names its own first definition, however many were
        // dropped before it.
        let e = merge_errors(&[
            (
                "a.yaml",
                "static_nodes:\n  a[1-3]: {platform: p}\n  a2: {platform: p}\n  b: {platform: p}\n  \
                 a[3-4]: {platform: p}\n  b,z: {platform: p}\n  a4,y: {platform: p}\n",
            ),
            ("p.yaml", PLATFORM),
        ]);
        assert_eq!(
            e,
            [
                "a.yaml:3:3: node a2 is defined twice: first at a.yaml:2:3, again here",
                "a.yaml:5:3: node a3 is defined twice: first at a.yaml:2:3, again here",
                "a.yaml:6:3: node b is defined twice: first at a.yaml:4:3, again here",
                "a.yaml:7:3: node a4 is defined twice: first at a.yaml:5:3, again here",
            ]
        );
    }

    #[test]
    fn platforms_and_groups_defined_twice_name_both_places() {
        let e = merge_errors(&[
            ("a.yaml", PLATFORM),
            (
                "b.yaml",
                "groups:\n  g: n1\nplatforms:\n  p:\n    driver: other\n",
            ),
            ("c.yaml", "groups:\n  g: n2\n"),
        ]);
        assert_eq!(
            e,
            [
                "b.yaml:4:3: platform p is defined twice: first at a.yaml:2:3, again here",
                "c.yaml:2:3: group g is defined twice: first at b.yaml:2:3, again here",
            ]
        );
    }

    #[test]
    fn a_later_directory_redefines_a_platform_with_a_warning() {
        let vendor = fragment("v/10-p.yaml", "platforms:\n  p:\n    driver: vendor\n");
        let admin = Fragment {
            precedence: 1,
            ..fragment("a/50-mine.yaml", "platforms:\n  p:\n    driver: mine\n")
        };
        // Read in either order (lexical file order crosses directories),
        // the admin's definition wins.
        for fragments in [vec![vendor.clone(), admin.clone()], vec![admin, vendor]] {
            let (t, warnings) = merge(fragments).unwrap();
            assert!(
                matches!(&t.platforms["p"].run.driver, DriverSpec::DropIn(d) if d.value == "mine")
            );
            let w: Vec<String> = warnings.iter().map(ToString::to_string).collect();
            assert_eq!(w, ["a/50-mine.yaml:2:3: platform p: replaces the one at v/10-p.yaml:2:3 (a later directory wins)"]);
        }
    }

    #[test]
    fn an_unknown_platform_lists_the_defined_ones() {
        let e = merge_errors(&[
            ("a.yaml", PLATFORM),
            ("n.yaml", "static_nodes:\n  cn07:\n    platform: ipmii\n"),
        ]);
        assert_eq!(
            e,
            ["n.yaml:3:15: node cn07: unknown platform \"ipmii\" (defined: p)"]
        );
        let e = merge_errors(&[("n.yaml", "static_nodes:\n  cn07:\n    platform: ipmi\n")]);
        assert_eq!(
            e,
            ["n.yaml:3:15: node cn07: unknown platform \"ipmi\" (defined: none)"]
        );
    }

    #[test]
    fn one_mistake_under_a_hostlist_is_one_error_naming_its_nodes() {
        let e = merge_errors(&[
            ("a.yaml", PLATFORM),
            (
                "n.yaml",
                "static_nodes:\n  n[0001-1000]:\n    platform: pp\n  \
                 m[1-2]:\n    platform: pp\n  k1:\n    platform: p\n  \
                 cn[1-4]:\n    platform: p\n  cn[3-6],x:\n    platform: p\n",
            ),
        ]);
        assert_eq!(
            e,
            [
                "n.yaml:10:3: nodes cn[3-4] are defined twice: first at n.yaml:8:3, again here",
                "n.yaml:3:15: nodes n[0001-1000]: unknown platform \"pp\" (defined: p)",
                "n.yaml:5:15: nodes m[1-2]: unknown platform \"pp\" (defined: p)",
            ]
        );
    }

    #[test]
    fn groups_come_from_the_groups_key_and_from_nodes() {
        let (t, warnings) = merge(vec![
            fragment("p.yaml", PLATFORM),
            fragment("n.yaml", "static_nodes:\n  n[1-3]:\n    platform: p\n    groups: [compute, all]\n  gpu1:\n    platform: p\n    groups: all\n"),
            fragment("g.yaml", "groups:\n  compute: n[2-4],n1\n"),
        ])
        .unwrap();
        assert_eq!(t.groups["all"].nodes, ["n1", "n2", "n3", "gpu1"]);
        // Listed members first, then nodes that name the group; no duplicates.
        assert_eq!(t.groups["compute"].nodes, ["n2", "n3", "n4", "n1"]);
        assert_eq!(warnings.len(), 1);
        assert_eq!(
            warnings[0].to_string(),
            "g.yaml:2:3: group compute: 1 member is not in static_nodes: n4"
        );
        let n2 = t.node("n2").unwrap();
        assert_eq!(&n2.variables["name"], "n2");
        assert_eq!(&*n2.platform, "p");
        let order: Vec<&str> = t.nodes().iter().map(|n| &*n.name).collect();
        assert_eq!(order, ["n1", "n2", "n3", "gpu1"]);
    }
}
