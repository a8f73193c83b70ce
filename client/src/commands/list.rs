//! `power list [--groups] [--verbose]`: the nodes or groups the server knows.
//!
//! As in the reference, plain `list` prints one name a line. `--verbose`
//! adds a node's platform and groups, or a group's members (as a hostlist).

use crate::cli::ListArgs;
use crate::exit::{Exit, Failure};
use crate::http::Api;
use crate::output::{self, Format, Row, Tone};
use power_proto::hostlist;
use power_proto::wire::{GroupAttributes, NodeAttributes};
use serde_json::json;

/// Runs `power list`.
pub fn run(api: &Api, args: &ListArgs, format: Format) -> Result<Exit, Failure> {
    let text = if args.groups {
        render_groups(&api.groups()?, args.verbose, format)
    } else {
        render_nodes(&api.nodes()?, args.verbose, format)
    };
    output::write_stdout(&text)?;
    Ok(Exit::Success)
}

fn row(name: &str, word: String) -> Row<'_> {
    Row {
        name: name.into(),
        word: word.into(),
        tone: Tone::Plain,
        note: None,
    }
}

/// Renders nodes. Pure.
pub fn render_nodes(nodes: &[NodeAttributes], verbose: bool, format: Format) -> String {
    match format {
        Format::Json => output::json(&json!({ "nodes": nodes.iter().map(|n| json!({
            "name": n.name,
            "platform": n.platform,
            "groups": n.groups,
        })).collect::<Vec<_>>() })),
        Format::Summary => {
            let names = nodes.iter().map(|n| n.name.clone()).collect();
            output::summary(&[("nodes".into(), Tone::Plain, names)], false)
        }
        Format::Table if verbose => {
            let rows: Vec<Row> = nodes
                .iter()
                .map(|n| {
                    let platform = n.platform.as_deref().unwrap_or("-");
                    let mut r = row(&n.name, platform.to_string());
                    r.note = (!n.groups.is_empty()).then(|| n.groups.join(",").into());
                    r
                })
                .collect();
            output::table(&rows, false)
        }
        Format::Table => nodes.iter().map(|n| format!("{}\n", n.name)).collect(),
    }
}

/// Renders groups. Pure.
pub fn render_groups(groups: &[GroupAttributes], verbose: bool, format: Format) -> String {
    match format {
        Format::Json => output::json(&json!({ "groups": groups.iter().map(|g| json!({
            "name": g.name,
            "nodes": g.nodes,
        })).collect::<Vec<_>>() })),
        Format::Summary => {
            let lines: Vec<_> = groups
                .iter()
                .map(|g| (g.name.clone(), Tone::Plain, g.nodes.clone()))
                .collect();
            output::summary(&lines, false)
        }
        Format::Table if verbose => {
            let rows: Vec<Row> = groups
                .iter()
                .map(|g| row(&g.name, hostlist::compress(&g.nodes)))
                .collect();
            output::table(&rows, false)
        }
        Format::Table => groups.iter().map(|g| format!("{}\n", g.name)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, platform: &str, groups: &[&str]) -> NodeAttributes {
        NodeAttributes {
            name: name.into(),
            platform: Some(platform.into()),
            groups: groups.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn nodes_each_way() {
        let nodes = [
            node("n01", "sim", &["rack1", "gpu"]),
            node("login", "aws", &[]),
        ];
        assert_eq!(render_nodes(&nodes, false, Format::Table), "n01\nlogin\n");
        assert_eq!(
            render_nodes(&nodes, true, Format::Table),
            "n01    sim  rack1,gpu\nlogin  aws\n"
        );
        assert_eq!(
            render_nodes(&nodes, false, Format::Summary),
            "nodes: login,n01\n"
        );
        let doc: serde_json::Value =
            serde_json::from_str(&render_nodes(&nodes, false, Format::Json)).unwrap();
        assert_eq!(
            doc["nodes"][1],
            json!({"name": "login", "platform": "aws", "groups": []})
        );
    }

    #[test]
    fn groups_each_way() {
        let groups = [GroupAttributes {
            name: "rack1".into(),
            nodes: vec!["n01".into(), "n02".into(), "n03".into()],
        }];
        assert_eq!(render_groups(&groups, false, Format::Table), "rack1\n");
        assert_eq!(
            render_groups(&groups, true, Format::Table),
            "rack1  n[01-03]\n"
        );
        assert_eq!(
            render_groups(&groups, false, Format::Summary),
            "rack1: n[01-03]\n"
        );
    }
}
