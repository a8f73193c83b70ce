//! `power status|on|off|restart NODES...|--all [--groups] [--wait]`: run an
//! action, optionally wait for the state, and report one outcome per node;
//! or, with `--dry-run`, say what it would do. An action past `max_nodes`
//! needs a confirmation ([`max_nodes::confirm`]).
//!
//! The mapping from a server result to the reference client's words
//! ([`outcome`]) and the reports are pure; [`status`] and [`action`] do the
//! requests.

mod dry_run;
pub mod max_nodes;
mod outcome;
mod report;
mod wait;

pub use outcome::{confirmed_by_server, graceful, outcome, reported_state, waited, Outcome, Rank};
pub use report::{render, Report, ReportNode};

use crate::cli::{ActionArgs, OffArgs, Targets};
use crate::exit::{Exit, Failure};
use crate::http::{Api, Ask, Streamed, Target};
use crate::output::{self, Format};
use crate::progress::Progress;
use power_proto::hostlist;
use power_proto::wire::{Action, CommandAttributes, PowerState};
use std::collections::HashMap;
use std::time::Duration;
use wait::poll;

/// Joins the NODES arguments into one expression and checks its grammar
/// locally, so a typo is a usage error before anything is sent. With
/// `--all`, every node, none named.
pub fn target(targets: &Targets) -> Result<(Target, Option<Vec<String>>), Failure> {
    if targets.all {
        return Ok((Target::All, None));
    }
    let expr = targets.names.join(",");
    let what = if targets.groups { "group" } else { "node" };
    let names = hostlist::expand(&expr, hostlist::DEFAULT_LIMIT)
        .map_err(|e| Failure::Usage(format!("bad {what} list `{expr}`: {e}")))?;
    if names.is_empty() {
        return Err(Failure::Usage(format!("no {what}s named in `{expr}`")));
    }
    Ok(if targets.groups {
        (Target::Groups(expr), None)
    } else {
        (Target::Nodes(expr), Some(names))
    })
}

/// Sorts results in the order the nodes were asked for (natural order for
/// groups, or anything not asked for).
fn sort(results: &mut [CommandAttributes], asked: Option<&[String]>) {
    // foldhash: SipHash was a tenth of a 1,008-row status's instructions.
    let position: HashMap<&str, usize, foldhash::fast::RandomState> = asked
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    // Each position looked up once, not once per comparison.
    results.sort_by_cached_key(|r| {
        position
            .get(r.node_name.as_str())
            .copied()
            .unwrap_or(usize::MAX)
    });
    let unasked = results
        .iter()
        .position(|r| !position.contains_key(r.node_name.as_str()))
        .unwrap_or(results.len());
    results[unasked..].sort_by(|a, b| output::natural_cmp(&a.node_name, &b.node_name));
}

/// Options for [`status`] and [`action`] that come from the command line
/// and the settings.
pub struct Options {
    /// The output format.
    pub format: Format,
    /// Colour the words.
    pub colour: bool,
    /// An action touching more nodes than this needs a confirmation.
    pub max_nodes: Option<usize>,
}

/// What an action's flags ask beyond its nodes.
#[derive(Debug, Clone, Copy, Default)]
struct Flags {
    /// `--wait`'s limit.
    wait: Option<Duration>,
    /// `--yes`.
    yes: bool,
    /// `--force`.
    force: bool,
    /// `--graceful`'s grace.
    grace: Option<Duration>,
}

/// `power status`.
pub fn status(api: &Api, targets: &Targets, options: &Options) -> Result<Exit, Failure> {
    run(api, Action::Status, targets, Flags::default(), options)
}

/// `power on|restart`, and `power off` without `--graceful`.
pub fn action(
    api: &Api,
    action: Action,
    args: &ActionArgs,
    options: &Options,
) -> Result<Exit, Failure> {
    run(api, action, &args.targets, flags(action, args), options)
}

/// `power off`: hard, or with `--graceful` a shutdown first.
pub fn off(api: &Api, args: &OffArgs, options: &Options) -> Result<Exit, Failure> {
    let mut flags = flags(Action::PowerOff, &args.action);
    flags.grace = args.graceful.then_some(args.grace);
    if args.graceful && !args.action.targets.dry_run {
        // A server that knows no graceful off (the reference) would take
        // the request for a hard off: ask for a dry run first, which such
        // a server answers as a status, running nothing.
        let (target, _) = target(&args.action.targets)?;
        api.plan(Action::PowerOff, &target, flags.force)
            .map_err(|e| match e {
                Failure::BadAnswer { url, what } => Failure::BadAnswer {
                    url,
                    what: format!("{what}; --graceful needs a server that knows graceful offs: nothing was switched off"),
                },
                other => other,
            })?;
    }
    run(api, Action::PowerOff, &args.action.targets, flags, options)
}

fn flags(action: Action, args: &ActionArgs) -> Flags {
    Flags {
        wait: args.wait.then_some(args.wait_timeout),
        yes: args.yes,
        // Only off and restart are ever refused for protection.
        force: args.force && matches!(action, Action::PowerOff | Action::Restart),
        grace: None,
    }
}

/// How many nodes `action` on `target` would touch: the hostlist's own
/// count, or, for groups and `--all`, the server's dry run (which runs
/// nothing).
fn count(
    api: &Api,
    action: Action,
    target: &Target,
    asked: Option<&[String]>,
    force: bool,
) -> Result<usize, Failure> {
    match asked {
        Some(names) => Ok(names.iter().collect::<std::collections::HashSet<_>>().len()),
        None => Ok(api.plan(action, target, force)?.len()),
    }
}

fn run(
    api: &Api,
    action: Action,
    targets: &Targets,
    flags: Flags,
    options: &Options,
) -> Result<Exit, Failure> {
    let wait = flags.wait;
    let (target, asked) = target(targets)?;
    if targets.dry_run {
        let plans = api.plan(action, &target, flags.force)?;
        let all_run = dry_run::report(action, flags.force, &plans, options.format)?;
        return Ok(if all_run {
            Exit::Success
        } else {
            Exit::NodesFailed
        });
    }
    if action != Action::Status && !flags.yes && options.max_nodes.is_some() {
        let count = count(api, action, &target, asked.as_deref(), flags.force)?;
        max_nodes::confirm(max_nodes::decide(
            action,
            count,
            options.max_nodes,
            flags.yes,
            max_nodes::on_a_terminal(),
        ))?;
    }
    let progress = Progress::start(asked.as_ref().map(Vec::len), action.as_str());
    let goal = wait.and_then(|_| action.target_state());
    let ask = Ask {
        force: flags.force,
        wait: wait.filter(|_| goal.is_some()),
        grace: flags.grace,
        // Only a bar shows them.
        turns: action == Action::PowerOn && progress.is_shown(),
    };
    let mut waiting = 0;
    let mut results = api.power(action, &target, ask, |streamed| match streamed {
        Streamed::Result(_) => progress.inc(),
        Streamed::Turn(_) => {
            waiting += 1;
            progress.note(&format!(
                "{action}: {waiting} waiting their turn (power_on_rate)"
            ));
        }
    })?;
    progress.finish();
    sort(&mut results, asked.as_deref());
    let mut outcomes: Vec<Outcome> = results
        .iter()
        .map(|r| {
            let o = match (r.confirmed, wait) {
                (Some(_), Some(limit)) => confirmed_by_server(r, limit),
                _ => outcome(r),
            };
            graceful(o, r)
        })
        .collect();
    let forced: Vec<&str> = results
        .iter()
        .filter(|r| r.fallback == Some(true))
        .map(|r| r.node_name.as_str())
        .collect();
    if let Some(grace) = flags.grace {
        let grace = humantime::format_duration(grace);
        let what =
            format!("did not shut down within {grace} (or cannot) and were switched off hard");
        warn_nodes(&forced, &what);
    }
    if let (Some(limit), Some(goal)) = (wait, goal) {
        // A server that does not confirm (an older one, or the reference)
        // leaves `confirmed` unset: those nodes are polled from here.
        let unconfirmed = |r: &CommandAttributes| r.success && r.confirmed.is_none();
        let pending: Vec<String> = results
            .iter()
            .filter(|r| unconfirmed(r))
            .map(|r| r.node_name.clone())
            .collect();
        if !pending.is_empty() {
            let seen = poll(api, &pending, goal, limit)?;
            for (o, _) in outcomes
                .iter_mut()
                .zip(&results)
                .filter(|(_, r)| unconfirmed(r))
            {
                let state = seen.get(&o.name).copied().unwrap_or(PowerState::Unknown);
                *o = waited(o.clone(), goal, state, limit);
            }
        }
        let late: Vec<&str> = outcomes
            .iter()
            .filter(|o| o.state.is_some_and(|s| s != goal))
            .map(|o| o.name.as_str())
            .collect();
        let limit = humantime::format_duration(limit);
        warn_nodes(&late, &format!("did not reach {goal} within {limit}"));
    }
    output::write_stdout(&render(
        action,
        goal,
        &outcomes,
        options.format,
        options.colour,
    ))?;
    Ok(if outcomes.iter().all(|o| o.success) {
        Exit::Success
    } else {
        Exit::NodesFailed
    })
}

/// Says on stderr that `nodes` (if any) `what`: `2 nodes did not ...: n[1-2]`.
fn warn_nodes(nodes: &[&str], what: &str) {
    if nodes.is_empty() {
        return;
    }
    let noun = if nodes.len() == 1 { "node" } else { "nodes" };
    output::warn(&format!(
        "{} {noun} {what}: {}",
        nodes.len(),
        hostlist::compress(nodes)
    ));
}

/// Results to build tests on, shared by the tests of the submodules.
#[cfg(test)]
mod test_support {
    use power_proto::wire::{Action, CommandAttributes, ErrorClass, PowerState};

    pub(super) fn result(action: Action, name: &str, success: bool) -> CommandAttributes {
        CommandAttributes {
            action,
            node_name: name.into(),
            platform: Some("sim".into()),
            missing: false,
            success,
            running: None,
            state: None,
            error: (!success).then(|| "sim: boom".to_string()),
            error_class: (!success).then_some(ErrorClass::Failed),
            confirmed: None,
            fallback: None,
            exit_code: (!success).then_some(1),
            duration_ms: 1,
        }
    }

    pub(super) fn status(name: &str, state: Option<PowerState>) -> CommandAttributes {
        let mut r = result(Action::Status, name, state.is_some());
        r.running = Some(state == Some(PowerState::On));
        r.state = Some(state.unwrap_or(PowerState::Unknown));
        r
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::result;
    use super::*;

    #[test]
    fn orders_as_asked() {
        let mut results = vec![
            result(Action::PowerOn, "b", true),
            result(Action::PowerOn, "z10", true),
            result(Action::PowerOn, "a", true),
            result(Action::PowerOn, "z9", true),
        ];
        sort(&mut results, Some(&["b".to_string(), "a".to_string()]));
        let names: Vec<_> = results.iter().map(|r| r.node_name.as_str()).collect();
        assert_eq!(names, ["b", "a", "z9", "z10"]);
    }

    #[test]
    fn checks_hostlists_locally() {
        let targets = Targets {
            names: vec!["n[1-2]".into(), "login".into()],
            groups: false,
            nodes: false,
            all: false,
            dry_run: false,
        };
        let (target, asked) = target(&targets).unwrap();
        assert_eq!(target, Target::Nodes("n[1-2],login".into()));
        assert_eq!(asked.unwrap(), ["n1", "n2", "login"]);
        let bad = Targets {
            names: vec!["n[1-".into()],
            groups: true,
            nodes: false,
            all: false,
            dry_run: false,
        };
        let message = super::target(&bad).unwrap_err().to_string();
        assert!(
            message.starts_with("bad group list `n[1-`: unbalanced"),
            "{message}"
        );
    }
}
