//! Fragments to one topology: duplicates across files, cross-references.
//!
//! Pure: works on parsed fragments in the order their files were read.

use super::diagnostic::{Diagnostic, Location};
use super::model::{Group, Node, Platform, Topology, Variables};
use super::parse::Fragment;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// What merging found that is not fatal.
pub type Warnings = Vec<Diagnostic>;

/// Merge fragments in read order. Every error is reported, not only the first.
///
/// A platform defined in two files of one directory is an error; defined in
/// files of two directories, the later directory's definition wins (an
/// admin redefines a packaged platform, as a later file replaces an earlier
/// one), with a warning naming both.
pub fn merge(fragments: Vec<Fragment>) -> Result<(Topology, Warnings), Vec<Diagnostic>> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut nodes: Vec<Node> = Vec::new();
    let mut strings = Interner::default();
    // Each node's index in `nodes`, by name: duplicates are found here, and
    // it becomes the topology's index.
    let mut index = super::model::NodeIndex::default();
    let mut platforms: BTreeMap<String, (Platform, usize)> = BTreeMap::new();
    let mut groups: BTreeMap<String, (Group, Option<Location>)> = BTreeMap::new();
    // Values a batch driver could not read on a line, checked once the
    // platforms are known.
    let mut unsendable: Vec<Unsendable> = Vec::new();

    for fragment in fragments {
        let precedence = fragment.precedence;
        for def in fragment.platforms {
            let name = def.name.value.clone();
            if let Some((first, first_precedence)) = platforms.get(&name) {
                let (kept, dropped) = match precedence.cmp(first_precedence) {
                    std::cmp::Ordering::Equal => {
                        errors.push(twice("platform", &name, &first.defined_at, &def.name.at));
                        continue;
                    }
                    std::cmp::Ordering::Less => (&first.defined_at, &def.name.at),
                    std::cmp::Ordering::Greater => (&def.name.at, &first.defined_at),
                };
                warnings.push(Diagnostic::at(
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
                driver: def.driver,
                status_off_exit_code: def.status_off_exit_code,
                timeout: def.timeout,
                concurrency: def.concurrency,
                serialize_by: def.serialize_by.map(|v| v.value),
                batch: def.batch,
                persistent: def.persistent,
                processes: def.processes,
            };
            platforms.insert(name, (platform, precedence));
        }
        for def in fragment.nodes {
            let Some(platform) = def.platform else {
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
            for name in &def.names.value {
                if let Some(&first) = index.get(name.as_str()) {
                    errors.push(twice("node", name, &nodes[first].defined_at, &def.names.at));
                    continue;
                }
                let name: Arc<str> = Arc::from(name.as_str());
                index.insert(name.clone(), nodes.len());
                let mut variables: Vec<(Arc<str>, Arc<str>)> = def
                    .variables
                    .iter()
                    .map(|(k, v)| (strings.get(&k.value), strings.get(v)))
                    .collect();
                variables.push((strings.get("name"), name.clone()));
                nodes.push(Node {
                    name,
                    platform: strings.get(&platform.value),
                    variables: Variables::new(variables),
                    groups: def.groups.iter().map(|g| g.value.clone()).collect(),
                    defined_at: def.names.at.clone(),
                    platform_at: platform.at.clone(),
                });
            }
        }
        for def in fragment.groups {
            let name = def.name.value;
            if let Some((_, Some(first))) = groups.get(&name) {
                errors.push(twice("group", &name, first, &def.name.at));
                continue;
            }
            groups.insert(
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

    let platforms: BTreeMap<String, Platform> = platforms
        .into_iter()
        .map(|(name, (platform, _))| (name, platform))
        .collect();

    // Cross-references, once every file is in.
    for node in &nodes {
        if !platforms.contains_key(&*node.platform) {
            let defined: Vec<&str> = platforms.keys().map(String::as_str).collect();
            let defined = if defined.is_empty() {
                "none".to_string()
            } else {
                defined.join(", ")
            };
            errors.push(Diagnostic::at(
                &node.platform_at,
                format!(
                    "node {}: unknown platform {:?} (defined: {defined})",
                    node.name, node.platform
                ),
            ));
        }
    }
    for u in unsendable {
        let Some(platform) = platforms.get(&u.platform) else {
            continue;
        };
        if platform.batch.is_some() && platform.variables.contains(&u.variable.value) {
            errors.push(Diagnostic::at(
                &u.variable.at,
                format!(
                    "node {}: variable {}: the value holds {}, which cannot be sent to \
                     the batch platform {} (one node per line, fields split by TAB)",
                    u.nodes, u.variable.value, u.what, u.platform
                ),
            ));
        }
    }
    // A node's own `groups` list adds it to (or creates) those groups.
    for node in &nodes {
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
    let mut groups_out = BTreeMap::new();
    for (name, (mut group, at)) in groups {
        let mut seen = std::collections::HashSet::new();
        group.nodes.retain(|n| seen.insert(n.clone()));
        let unknown: Vec<&str> = group
            .nodes
            .iter()
            .filter(|n| !index.contains_key(n.as_str()))
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            let message = format!(
                "group {name}: {} member{} not in static_nodes: {}",
                unknown.len(),
                if unknown.len() == 1 { " is" } else { "s are" },
                power_proto::hostlist::compress(unknown)
            );
            warnings.push(match &at {
                Some(at) => Diagnostic::at(at, message),
                None => Diagnostic::general(message),
            });
        }
        groups_out.insert(name, group);
    }

    if errors.is_empty() {
        Ok((Topology::new(nodes, index, platforms, groups_out), warnings))
    } else {
        Err(errors)
    }
}

/// One shared copy of each string: 100,000 nodes name a handful of
/// platforms and variables, and often repeat values (a user name, a region).
#[derive(Default)]
struct Interner(HashSet<Arc<str>, foldhash::fast::RandomState>);

impl Interner {
    fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(shared) = self.0.get(s) {
            return shared.clone();
        }
        let shared: Arc<str> = Arc::from(s);
        self.0.insert(shared.clone());
        shared
    }
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
            assert!(matches!(&t.platforms["p"].driver, DriverSpec::DropIn(d) if d.value == "mine"));
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
