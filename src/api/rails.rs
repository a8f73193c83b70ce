//! Safety rails: nodes in protected groups refuse off and restart unless
//! the request says `force`, and a dry run says what a request would do,
//! node by node, without running anything.
//!
//! Pure: no I/O.

use crate::driver::plan::looks_secret;
use crate::load::Loaded;
use crate::topology::{DriverSpec, Topology};
use power_proto::wire::{Action, CommandAttributes, PlanAttributes};
use std::collections::HashMap;

/// Does protection apply to `action`? Only to those that take a running
/// node away: a status reads, and powering on harms no running job.
pub fn guarded(action: Action) -> bool {
    matches!(action, Action::PowerOff | Action::Restart)
}

/// The protected group of each node in one, by node: the first group of
/// `protected` (in the setting's order) that holds it. Groups not in the
/// topology protect nothing (`check` warns of them).
pub fn protectors<'t>(
    topology: &'t Topology,
    protected: &'t [String],
) -> HashMap<&'t str, &'t str> {
    let mut by_node = HashMap::new();
    for name in protected {
        if let Some(group) = topology.groups.get(name) {
            for node in &group.nodes {
                by_node.entry(node.as_str()).or_insert(name.as_str());
            }
        }
    }
    by_node
}

/// Why `node` is not run: it is in `group`, and the request did not say
/// force. Names the group and the way past it.
pub fn refusal(action: Action, node: &str, group: &str) -> String {
    let verb = if action == Action::Restart {
        "restart"
    } else {
        "off"
    };
    format!(
        "{node} is in protected group {group}: {action} needs force \
         (force=true, or `power {verb} --force`)"
    )
}

/// Split `nodes` into those to run and the results of those refused by
/// protection (in the request's order). With `force`, or for an action
/// that is not [guarded], nothing is refused.
pub fn split(
    topology: &Topology,
    protected: &[String],
    action: Action,
    nodes: Vec<String>,
    force: bool,
) -> (Vec<String>, Vec<CommandAttributes>) {
    if force || !guarded(action) || protected.is_empty() {
        return (nodes, Vec::new());
    }
    let by_node = protectors(topology, protected);
    if by_node.is_empty() {
        return (nodes, Vec::new());
    }
    let mut run = Vec::with_capacity(nodes.len());
    let mut refused = Vec::new();
    for node in nodes {
        match by_node.get(node.as_str()) {
            Some(group) => {
                let platform = topology.node(&node).map(|n| n.platform.to_string());
                let why = refusal(action, &node, group);
                refused.push(CommandAttributes::not_run(action, &node, platform, why));
            }
            None => run.push(node),
        }
    }
    (run, refused)
}

/// What `action` on `nodes` would do, node by node, in their order: the
/// platform, the driver, the variable names its driver would get (never a
/// value), and whether it would run at all.
pub fn plan(
    loaded: &Loaded,
    protected: &[String],
    action: Action,
    nodes: &[String],
    force: bool,
) -> Vec<PlanAttributes> {
    let topology = &loaded.topology;
    let by_node = if force || !guarded(action) {
        HashMap::new()
    } else {
        protectors(topology, protected)
    };
    nodes
        .iter()
        .map(|name| {
            let Some(node) = topology.node(name) else {
                return PlanAttributes {
                    action,
                    node_name: name.clone(),
                    platform: None,
                    missing: true,
                    driver: None,
                    batch: false,
                    variables: Vec::new(),
                    secret_variables: Vec::new(),
                    unset_variables: Vec::new(),
                    would_run: false,
                    error: Some(format!("node {name} is not in the topology")),
                };
            };
            let platform = topology.platforms.get(&*node.platform);
            let declared = platform.map(|p| p.variables.as_slice()).unwrap_or_default();
            let (variables, unset): (Vec<&String>, Vec<&String>) = declared
                .iter()
                .partition(|v| node.variables.get(v).is_some());
            let error = by_node.get(name.as_str()).map(|g| refusal(action, name, g));
            PlanAttributes {
                action,
                node_name: name.clone(),
                platform: Some(node.platform.to_string()),
                missing: false,
                driver: platform.map(|p| match &p.run.driver {
                    DriverSpec::Inline { .. } => "inline".to_string(),
                    DriverSpec::DropIn(name) => name.value.clone(),
                }),
                batch: platform.is_some_and(|p| p.run.batch.is_some()),
                secret_variables: variables
                    .iter()
                    .filter(|v| looks_secret(v))
                    .map(|v| (*v).clone())
                    .collect(),
                variables: variables.into_iter().cloned().collect(),
                unset_variables: unset.into_iter().cloned().collect(),
                would_run: error.is_none(),
                error,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{LoadSettings, Loaded};

    fn loaded(dir: &std::path::Path) -> Loaded {
        let topology = dir.join("topology.d");
        std::fs::create_dir_all(&topology).unwrap();
        std::fs::write(
            topology.join("t.yaml"),
            "platforms:\n  p:\n    variables: [bmc, bmc_password, port]\n    power_off: exit 0\n    restart: exit 0\n    status: exit 0\n\
             static_nodes:\n  n[1-3]:\n    platform: p\n    bmc: b\n    bmc_password: hunter2\n\
             groups:\n  infra: n[1-2]\n  login: n2\n",
        )
        .unwrap();
        Loaded::read(&LoadSettings {
            topology_dirs: vec![topology],
            drivers_dirs: Vec::new(),
            runtime_dir: Some(dir.join("run")),
            topology_named: true,
            topology_files: Vec::new(),
            protected_groups: vec!["infra".into(), "gone".into()],
        })
        .unwrap()
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn protected_nodes_refuse_off_and_restart_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        let l = loaded(dir.path());
        let protected = names(&["login", "infra", "gone"]);
        let nodes = names(&["n3", "n2", "n1"]);
        let (run, refused) = split(
            &l.topology,
            &protected,
            Action::PowerOff,
            nodes.clone(),
            false,
        );
        assert_eq!(run, ["n3"]);
        let errors: Vec<&str> = refused
            .iter()
            .map(|r| r.error.as_deref().unwrap())
            .collect();
        assert_eq!(
            errors,
            [
                "n2 is in protected group login: power_off needs force (force=true, or `power off --force`)",
                "n1 is in protected group infra: power_off needs force (force=true, or `power off --force`)",
            ]
        );
        assert!(refused.iter().all(|r| !r.success && !r.missing));
        assert_eq!(refused[0].platform.as_deref(), Some("p"));
        for (action, force) in [
            (Action::PowerOff, true),
            (Action::Restart, true),
            (Action::PowerOn, false),
            (Action::Status, false),
        ] {
            let (run, refused) = split(&l.topology, &protected, action, nodes.clone(), force);
            assert_eq!((run.len(), refused.len()), (3, 0), "{action} force={force}");
        }
        let (_, refused) = split(&l.topology, &protected, Action::Restart, nodes, false);
        assert!(refused[0]
            .error
            .as_deref()
            .unwrap()
            .contains("`power restart --force`"));
        let warned: Vec<String> = l.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            warned,
            ["protected_groups: group gone is not in the topology: it protects nothing"]
        );
    }

    #[test]
    fn a_plan_names_variables_never_values() {
        let dir = tempfile::tempdir().unwrap();
        let l = loaded(dir.path());
        let plans = plan(
            &l,
            &names(&["infra"]),
            Action::PowerOff,
            &names(&["n3", "n1", "ghost"]),
            false,
        );
        assert_eq!(plans[0].driver.as_deref(), Some("inline"));
        assert_eq!(plans[0].variables, ["bmc", "bmc_password"]);
        assert_eq!(plans[0].secret_variables, ["bmc_password"]);
        assert_eq!(plans[0].unset_variables, ["port"]);
        assert!(plans[0].would_run && plans[0].error.is_none());
        assert!(!plans[1].would_run);
        assert!(plans[1]
            .error
            .as_deref()
            .unwrap()
            .contains("protected group infra"));
        assert!(plans[2].missing && !plans[2].would_run && plans[2].platform.is_none());
        let text = serde_json::to_string(&plans).unwrap();
        assert!(!text.contains("hunter2"), "{text}");
        let forced = plan(
            &l,
            &names(&["infra"]),
            Action::PowerOff,
            &names(&["n1"]),
            true,
        );
        assert!(forced[0].would_run);
    }
}
