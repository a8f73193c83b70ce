//! Fragments to one topology: duplicates across files, cross-references.
//!
//! Pure: works on parsed fragments in the order their files were read.

use super::diagnostic::{Diagnostic, Location};
use super::model::{Group, Node, Platform, Topology};
use super::parse::Fragment;
use std::collections::{BTreeMap, HashMap};

/// What merging found that is not fatal.
pub type Warnings = Vec<Diagnostic>;

/// Merge fragments in read order. Every error is reported, not only the first.
pub fn merge(fragments: Vec<Fragment>) -> Result<(Topology, Warnings), Vec<Diagnostic>> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut nodes: Vec<Node> = Vec::new();
    let mut node_at: HashMap<String, Location> = HashMap::new();
    let mut platforms: BTreeMap<String, Platform> = BTreeMap::new();
    let mut groups: BTreeMap<String, (Group, Option<Location>)> = BTreeMap::new();

    for fragment in fragments {
        for def in fragment.platforms {
            let name = def.name.value.clone();
            if let Some(first) = platforms.get(&name) {
                errors.push(twice("platform", &name, &first.defined_at, &def.name.at));
                continue;
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
            };
            platforms.insert(name, platform);
        }
        for def in fragment.nodes {
            let Some(platform) = def.platform else {
                continue;
            };
            for name in &def.names.value {
                if let Some(first) = node_at.get(name) {
                    errors.push(twice("node", name, first, &def.names.at));
                    continue;
                }
                node_at.insert(name.clone(), def.names.at.clone());
                let mut variables: BTreeMap<String, String> = def
                    .variables
                    .iter()
                    .map(|(k, v)| (k.value.clone(), v.clone()))
                    .collect();
                variables.insert("name".into(), name.clone());
                nodes.push(Node {
                    name: name.clone(),
                    platform: platform.value.clone(),
                    variables,
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

    // Cross-references, once every file is in.
    for node in &nodes {
        if !platforms.contains_key(&node.platform) {
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
            g.nodes.push(node.name.clone());
        }
    }
    let mut groups_out = BTreeMap::new();
    for (name, (mut group, at)) in groups {
        let mut seen = std::collections::HashSet::new();
        group.nodes.retain(|n| seen.insert(n.clone()));
        let unknown: Vec<&str> = group
            .nodes
            .iter()
            .filter(|n| !node_at.contains_key(*n))
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
        Ok((Topology::new(nodes, platforms, groups_out), warnings))
    } else {
        Err(errors)
    }
}

fn twice(what: &str, name: &str, first: &Location, second: &Location) -> Diagnostic {
    Diagnostic::at(
        second,
        format!("{what} {name} is defined twice: first at {first}, again here"),
    )
}
