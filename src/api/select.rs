//! Which nodes a request names: its `nodes` and `groups` hostlists, or
//! `all=true`, expanded, checked against the topology's groups and the
//! token's grant; and the request's other parameters: yes-or-no (`all`,
//! `dry_run`, `force`) and `wait`.
//!
//! Pure: no I/O.

use crate::auth::Grant;
use crate::follow_up::{Wait, DEFAULT_GRACE, MAX_WAIT};
use crate::topology::Topology;
use power_proto::hostlist::{self, HostlistError};
use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

/// A request's node selection, as given. Repeated parameters are joined
/// (`?nodes=a&nodes=b` is `a,b`); other parameters are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// The `nodes` hostlist, if any.
    pub nodes: Option<String>,
    /// The `groups` hostlist, if any.
    pub groups: Option<String>,
    /// `all=true`: every node the token covers. Never implied: a request
    /// naming nothing selects nothing.
    pub all: bool,
}

impl Selection {
    /// From the query string's pairs. `all` must be `true` or `false`, and
    /// `all=true` comes alone: beside `nodes` or `groups` it would make
    /// them pointless, so the request is taken for a mistake.
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<Selection, SelectError> {
        let join = |key: &str| {
            let values: Vec<&str> = pairs
                .iter()
                .filter(|(k, v)| k == key && !v.trim().is_empty())
                .map(|(_, v)| v.as_str())
                .collect();
            (!values.is_empty()).then(|| values.join(","))
        };
        let selection = Selection {
            nodes: join("nodes"),
            groups: join("groups"),
            all: flag(pairs, &["all"])?,
        };
        if selection.all && (selection.nodes.is_some() || selection.groups.is_some()) {
            return Err(SelectError::AllWithOthers);
        }
        Ok(selection)
    }
}

/// A yes-or-no parameter known by any of `names` (the first is its name in
/// messages): `true` or `false` (`1` or `0`), the last one given winning;
/// absent is `false`. Anything else, an empty value included, is refused:
/// a script's empty variable must not turn into a guess.
pub fn flag(pairs: &[(String, String)], names: &[&'static str]) -> Result<bool, SelectError> {
    let mut value = false;
    for (_, given) in pairs.iter().filter(|(k, _)| names.contains(&k.as_str())) {
        value = match given.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => {
                return Err(SelectError::BadFlag {
                    param: names[0],
                    value: given.clone(),
                })
            }
        };
    }
    Ok(value)
}

/// How long the request asks the server to confirm its action: `wait`,
/// a duration (`90s`, `2m`; a bare number is seconds), `0` for not at
/// all; without it, as each node's platform says. The last one given
/// counts.
pub fn wait(pairs: &[(String, String)]) -> Result<Wait, SelectError> {
    Ok(duration(pairs, "wait")?.map_or(Wait::Platform, Wait::For))
}

/// How long a graceful off (`graceful=true`) gives the nodes to shut down
/// before they are switched off hard (`grace`, default
/// [`DEFAULT_GRACE`]); `None` for a plain off.
pub fn graceful(pairs: &[(String, String)]) -> Result<Option<Duration>, SelectError> {
    let grace = duration(pairs, "grace")?;
    match (flag(pairs, &["graceful"])?, last(pairs, "grace")) {
        (true, _) => Ok(Some(grace.unwrap_or(DEFAULT_GRACE))),
        (false, None) => Ok(None),
        (false, Some(given)) => Err(SelectError::BadWait {
            param: "grace",
            value: given.clone(),
            why: "grace is the time a graceful off gives: add graceful=true".into(),
        }),
    }
}

/// The last value given for `key`.
fn last<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a String> {
    pairs.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// The duration parameter `param` (the last one given), at most
/// [`MAX_WAIT`].
fn duration(
    pairs: &[(String, String)],
    param: &'static str,
) -> Result<Option<Duration>, SelectError> {
    let Some(given) = last(pairs, param) else {
        return Ok(None);
    };
    let bad = |why: &str| SelectError::BadWait {
        param,
        value: given.clone(),
        why: why.to_string(),
    };
    let duration = power_proto::duration::parse(given)
        .map_err(|_| bad("expected a duration such as 90s or 2m, or 0 for none"))?;
    if duration > MAX_WAIT {
        return Err(bad("at most 1h"));
    }
    Ok(Some(duration))
}

/// Why a selection was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectError {
    /// A parameter is not a valid hostlist, or expands past the limit (400).
    BadHostlist {
        /// `nodes` or `groups`.
        param: &'static str,
        /// What was wrong with it.
        error: HostlistError,
    },
    /// Groups the topology does not have, or the token cannot see (400).
    UnknownGroups(Vec<String>),
    /// Nodes outside the token's node set (403), as a hostlist.
    NotCovered(String),
    /// More named nodes than [`MISSING_LIMIT`] are not in the topology
    /// (400): how many, as a hostlist.
    TooManyMissing(usize, String),
    /// A yes-or-no parameter with another value (400).
    BadFlag {
        /// The parameter.
        param: &'static str,
        /// The value given.
        value: String,
    },
    /// A `wait` or `grace` that is not a duration, or too long (400).
    BadWait {
        /// `wait` or `grace`.
        param: &'static str,
        /// The value given.
        value: String,
        /// What was expected.
        why: String,
    },
    /// `all=true` beside `nodes` or `groups` (400).
    AllWithOthers,
}

/// Named nodes a request may ask for that are not in the topology. Each is
/// answered with a result of its own: without a bound, 20 bytes of query
/// (`?nodes=zz[1-100000]`) would cost 23 MB of answer.
pub const MISSING_LIMIT: usize = 10_000;

impl fmt::Display for SelectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadHostlist { param, error } => write!(f, "bad {param} parameter: {error}"),
            Self::UnknownGroups(g) => write!(
                f,
                "unknown group{} {}: see GET /groups",
                if g.len() == 1 { "" } else { "s" },
                g.join(", ")
            ),
            Self::NotCovered(nodes) => write!(f, "the token does not cover nodes {nodes}"),
            Self::TooManyMissing(count, nodes) => write!(
                f,
                "{count} of the nodes named are not in the topology (at most {MISSING_LIMIT} \
                 may be): {nodes}"
            ),
            Self::BadFlag { param, value } => {
                write!(
                    f,
                    "bad {param} parameter: {value:?}: expected true or false"
                )
            }
            Self::BadWait { param, value, why } => {
                write!(f, "bad {param} parameter: {value:?}: {why}")
            }
            Self::AllWithOthers => {
                f.write_str("all=true selects every node: give it without nodes or groups")
            }
        }
    }
}

impl std::error::Error for SelectError {}

/// The nodes `selection` names, in order, without duplicates: the `nodes`
/// expansion first, then each group's members; or, for `all`, every node
/// the grant covers, in topology order. Nothing given selects
/// nothing. Named nodes need not exist (they are answered as missing), but
/// must be covered by the grant; a group shows only the members the grant
/// covers, and one with none is unknown to it.
pub fn select(
    topology: &Topology,
    selection: &Selection,
    grant: &Grant,
    limit: usize,
) -> Result<Vec<String>, SelectError> {
    if selection.all {
        return Ok(topology
            .nodes()
            .iter()
            .filter(|n| grant.covers(&n.name))
            .map(|n| n.name.to_string())
            .collect());
    }
    let expand = |param, expr: &Option<String>| match expr {
        None => Ok(Vec::new()),
        Some(e) => {
            hostlist::expand(e, limit).map_err(|error| SelectError::BadHostlist { param, error })
        }
    };
    let named = expand("nodes", &selection.nodes)?;
    let group_names = expand("groups", &selection.groups)?;

    let outside: Vec<&String> = named.iter().filter(|n| !grant.covers(n)).collect();
    if !outside.is_empty() {
        return Err(SelectError::NotCovered(hostlist::compress(outside)));
    }

    if named.len() > MISSING_LIMIT {
        let missing: Vec<&String> = named
            .iter()
            .filter(|n| topology.node(n).is_none())
            .collect();
        if missing.len() > MISSING_LIMIT {
            let count = missing.len();
            return Err(SelectError::TooManyMissing(
                count,
                hostlist::compress(missing),
            ));
        }
    }

    if group_names.is_empty() {
        return Ok(named);
    }
    let mut seen: HashSet<String> = named.iter().cloned().collect();
    let mut out = named;
    let mut unknown = Vec::new();
    for name in group_names {
        let members: Vec<&String> = topology
            .groups
            .get(&name)
            .map(|g| g.nodes.iter().filter(|n| grant.covers(n)).collect())
            .unwrap_or_default();
        if members.is_empty() {
            unknown.push(name);
            continue;
        }
        for node in members {
            if seen.insert(node.clone()) {
                out.push(node.clone());
            }
        }
    }
    if !unknown.is_empty() {
        return Err(SelectError::UnknownGroups(unknown));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::Group;

    fn topology() -> Topology {
        let mut t = Topology::default();
        for (name, nodes) in [("rack1", "n[1-3]"), ("even", "n[2,4]")] {
            t.groups.insert(
                name.into(),
                Group {
                    name: name.into(),
                    nodes: hostlist::expand(nodes, 10).unwrap(),
                },
            );
        }
        t
    }

    fn all() -> Grant {
        Grant {
            subject: None,
            may_act: true,
            nodes: None,
        }
    }

    fn sel(nodes: Option<&str>, groups: Option<&str>) -> Selection {
        Selection {
            nodes: nodes.map(Into::into),
            groups: groups.map(Into::into),
            all: false,
        }
    }

    #[test]
    fn nothing_given_selects_nothing() {
        let s = Selection::from_pairs(&[("nodes".into(), String::new()), ("x".into(), "y".into())])
            .unwrap();
        assert_eq!(s, Selection::default());
        assert_eq!(select(&topology(), &s, &all(), 100), Ok(vec![]));
    }

    #[test]
    fn nodes_then_groups_without_duplicates() {
        let s = Selection::from_pairs(&[
            ("nodes".into(), "n4,x".into()),
            ("groups".into(), "rack1,even".into()),
            ("nodes".into(), "n2".into()),
        ])
        .unwrap();
        assert_eq!(s.nodes.as_deref(), Some("n4,x,n2"));
        assert_eq!(
            select(&topology(), &s, &all(), 100).unwrap(),
            ["n4", "x", "n2", "n1", "n3"]
        );
    }

    #[test]
    fn bad_and_oversized_hostlists_name_the_parameter() {
        let e = select(&topology(), &sel(Some("n[1-"), None), &all(), 100).unwrap_err();
        assert!(
            e.to_string().starts_with("bad nodes parameter: unbalanced"),
            "{e}"
        );
        let e = select(&topology(), &sel(None, Some("g[1-1000]")), &all(), 100).unwrap_err();
        assert_eq!(
            e.to_string(),
            "bad groups parameter: hostlist expands to 1000 names, more than the limit of 100"
        );
    }

    #[test]
    fn too_many_nodes_not_in_the_topology_are_refused_in_one_line() {
        let many = select(
            &topology(),
            &sel(Some("zz[1-10001]"), None),
            &all(),
            100_000,
        );
        assert_eq!(
            many.unwrap_err().to_string(),
            "10001 of the nodes named are not in the topology (at most 10000 may be): zz[1-10001]"
        );
        let at_most = select(
            &topology(),
            &sel(Some("zz[1-10000]"), None),
            &all(),
            100_000,
        );
        assert_eq!(at_most.unwrap().len(), 10_000, "each answered as missing");
    }

    #[test]
    fn unknown_groups_are_named() {
        let e = select(
            &topology(),
            &sel(None, Some("rack1,nope,gone")),
            &all(),
            100,
        );
        assert_eq!(
            e.unwrap_err().to_string(),
            "unknown groups nope, gone: see GET /groups"
        );
    }

    #[test]
    fn a_limited_grant_sees_only_its_nodes() {
        let grant = Grant {
            nodes: Some(["n1".to_string(), "n2".to_string()].into()),
            ..all()
        };
        assert_eq!(
            select(&topology(), &sel(None, Some("rack1")), &grant, 100).unwrap(),
            ["n1", "n2"]
        );
        assert_eq!(
            select(&topology(), &sel(Some("n[1-5]"), None), &grant, 100),
            Err(SelectError::NotCovered("n[3-5]".into()))
        );
        let only_n4 = Grant {
            nodes: Some(["n4".to_string()].into()),
            ..all()
        };
        assert_eq!(
            select(&topology(), &sel(None, Some("rack1")), &only_n4, 100),
            Err(SelectError::UnknownGroups(vec!["rack1".into()]))
        );
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn all_selects_every_covered_node_and_comes_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("t.yaml"),
            "platforms:\n  p:\n    status: exit 0\nstatic_nodes:\n  n[1-3]:\n    platform: p\n",
        )
        .unwrap();
        let t = crate::topology::load(&[dir.path().to_path_buf()])
            .unwrap()
            .topology;
        let s = Selection::from_pairs(&pairs(&[("all", "true")])).unwrap();
        assert!(s.all);
        assert_eq!(select(&t, &s, &all(), 100).unwrap(), ["n1", "n2", "n3"]);
        let limited = Grant {
            nodes: Some(["n2".to_string()].into()),
            ..all()
        };
        assert_eq!(select(&t, &s, &limited, 100).unwrap(), ["n2"]);
        for other in ["nodes", "groups"] {
            let e = Selection::from_pairs(&pairs(&[("all", "1"), (other, "n1")])).unwrap_err();
            assert_eq!(
                e.to_string(),
                "all=true selects every node: give it without nodes or groups"
            );
        }
        let off = Selection::from_pairs(&pairs(&[("all", "false"), ("nodes", "n1")])).unwrap();
        assert_eq!(select(&t, &off, &all(), 100).unwrap(), ["n1"]);
    }

    #[test]
    fn flags_are_true_or_false_and_nothing_else() {
        let names = &["dry_run", "dry-run"];
        assert_eq!(flag(&pairs(&[]), names), Ok(false));
        assert_eq!(flag(&pairs(&[("dry-run", "TRUE")]), names), Ok(true));
        assert_eq!(
            flag(&pairs(&[("dry_run", "1"), ("dry_run", "false")]), names),
            Ok(false),
            "the last wins"
        );
        for bad in ["", "yes", "maybe"] {
            let e = flag(&pairs(&[("dry-run", bad)]), names).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("bad dry_run parameter: {bad:?}: expected true or false")
            );
        }
    }

    #[test]
    fn wait_is_a_duration_up_to_an_hour() {
        assert_eq!(wait(&pairs(&[])), Ok(Wait::Platform));
        assert_eq!(
            wait(&pairs(&[("wait", "90")])),
            Ok(Wait::For(Duration::from_secs(90)))
        );
        assert_eq!(
            wait(&pairs(&[("wait", "2m"), ("wait", "0")])),
            Ok(Wait::For(Duration::ZERO)),
            "the last wins; 0 is none"
        );
        assert_eq!(
            wait(&pairs(&[("wait", "1h")])),
            Ok(Wait::For(Duration::from_secs(3600)))
        );
        for (bad, why) in [
            (
                "soon",
                "expected a duration such as 90s or 2m, or 0 for none",
            ),
            ("", "expected a duration such as 90s or 2m, or 0 for none"),
            ("2h", "at most 1h"),
        ] {
            assert_eq!(
                wait(&pairs(&[("wait", bad)])).unwrap_err().to_string(),
                format!("bad wait parameter: {bad:?}: {why}")
            );
        }
    }

    #[test]
    fn graceful_takes_a_grace() {
        assert_eq!(graceful(&pairs(&[])), Ok(None));
        assert_eq!(
            graceful(&pairs(&[("graceful", "true")])),
            Ok(Some(DEFAULT_GRACE))
        );
        assert_eq!(
            graceful(&pairs(&[("graceful", "1"), ("grace", "30s")])),
            Ok(Some(Duration::from_secs(30)))
        );
        assert_eq!(
            graceful(&pairs(&[("grace", "30s")])).unwrap_err().to_string(),
            "bad grace parameter: \"30s\": grace is the time a graceful off gives: add graceful=true"
        );
        assert_eq!(
            graceful(&pairs(&[("graceful", "true"), ("grace", "2h")]))
                .unwrap_err()
                .to_string(),
            "bad grace parameter: \"2h\": at most 1h"
        );
    }
}
