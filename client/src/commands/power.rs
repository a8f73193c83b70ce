//! `power status|on|off|restart NODES... [--groups] [--wait]`: run an action,
//! optionally wait for the state, and report one outcome per node.
//!
//! The mapping from a server result to the reference client's words
//! ([`outcome`]) and the reports are pure; [`status`] and [`action`] do the
//! requests.

use crate::cli::{ActionArgs, Targets};
use crate::exit::{Exit, Failure};
use crate::http::{Api, Target};
use crate::output::{self, Format, Row, Tone};
use crate::progress::Progress;
use power_proto::hostlist;
use power_proto::wire::{Action, CommandAttributes, PowerState};
use serde::Serialize;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// What happened to one node, ready to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The node.
    pub name: String,
    /// Not in the topology.
    pub missing: bool,
    /// Did what was asked (with `--wait`: and reached the state).
    pub success: bool,
    /// The power state, when known: from `status`, or the last poll of
    /// `--wait`.
    pub state: Option<PowerState>,
    /// Why it did not succeed.
    pub error: Option<String>,
    /// The reference client's word: `On`, `Starting`, `Failed to stop`, ...
    pub word: String,
    /// The word's colour.
    pub tone: Tone,
    /// Where its outcome comes in a summary: good first, missing last.
    pub rank: Rank,
}

/// The order of outcomes in a summary, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rank {
    /// On, or the action done (and with `--wait`, the state reached).
    Done,
    /// Off (status).
    Off,
    /// `--wait` saw the node, in the wrong state.
    Late,
    /// The state is not known.
    Unknown,
    /// The action failed.
    Failed,
    /// Not in the topology.
    Missing,
}

/// The state a node is in when the action worked: on for on and restart,
/// off for off; none for status.
pub fn target_state(action: Action) -> Option<PowerState> {
    match action {
        Action::PowerOn | Action::Restart => Some(PowerState::On),
        Action::PowerOff => Some(PowerState::Off),
        Action::Status => None,
    }
}

/// The state a status result reports.
pub fn reported_state(result: &CommandAttributes) -> PowerState {
    result
        .state
        .unwrap_or(match (result.success, result.running) {
            (true, Some(true)) => PowerState::On,
            (true, _) => PowerState::Off,
            (false, _) => PowerState::Unknown,
        })
}

fn error_of(result: &CommandAttributes) -> Option<String> {
    result.error.clone().or_else(|| {
        let code = result.exit_code.map(|c| format!(" with code {c}"));
        Some(format!("driver failed{}", code.unwrap_or_default()))
    })
}

/// The outcome of one server result, in the reference client's words.
pub fn outcome(result: &CommandAttributes) -> Outcome {
    let (good, bad) = match result.action {
        Action::Status => ("", ""),
        Action::PowerOn => ("Starting", "Failed to start"),
        Action::PowerOff => ("Stopping", "Failed to stop"),
        Action::Restart => ("Restarting", "Failed to restart"),
    };
    let mut outcome = Outcome {
        name: result.node_name.clone(),
        missing: result.missing,
        success: result.success,
        state: None,
        error: None,
        word: good.to_string(),
        tone: Tone::Good,
        rank: Rank::Done,
    };
    if result.action == Action::Status {
        let state = reported_state(result);
        outcome.state = Some(state);
        outcome.success = result.success && state != PowerState::Unknown;
        (outcome.word, outcome.tone, outcome.rank) = match state {
            PowerState::On => ("On".into(), Tone::Good, Rank::Done),
            PowerState::Off => ("Off".into(), Tone::Plain, Rank::Off),
            PowerState::Unknown => ("Unknown".into(), Tone::Bad, Rank::Unknown),
        };
    } else if !result.success {
        (outcome.word, outcome.tone, outcome.rank) = (bad.into(), Tone::Bad, Rank::Failed);
    }
    if !outcome.success {
        outcome.error = error_of(result);
    }
    if result.missing {
        outcome.success = false;
        outcome.rank = Rank::Missing;
    }
    outcome
}

/// Updates a successful action's outcome with what `--wait` saw: the last
/// state polled, and whether that was the target.
pub fn waited(
    mut outcome: Outcome,
    target: PowerState,
    seen: PowerState,
    limit: Duration,
) -> Outcome {
    outcome.state = Some(seen);
    if seen == target {
        outcome.word = capitalised(target);
        outcome.tone = Tone::Good;
        outcome.rank = Rank::Done;
        return outcome;
    }
    outcome.success = false;
    outcome.error = Some(format!(
        "did not reach {target} within {}",
        humantime::format_duration(limit)
    ));
    (outcome.word, outcome.tone, outcome.rank) = match seen {
        PowerState::Unknown => ("Unknown".into(), Tone::Bad, Rank::Unknown),
        state => (format!("Still {state}"), Tone::Warn, Rank::Late),
    };
    outcome
}

fn capitalised(state: PowerState) -> String {
    match state {
        PowerState::On => "On",
        PowerState::Off => "Off",
        PowerState::Unknown => "Unknown",
    }
    .to_string()
}

/// The `--json` document: stable keys, one entry per node.
#[derive(Debug, Serialize)]
pub struct Report<'a> {
    /// `status`, `power_on`, `power_off` or `restart`.
    pub action: Action,
    /// The state waited for (`--wait`), else null.
    pub wait: Option<PowerState>,
    /// One entry per node, in the order of the table.
    pub nodes: Vec<ReportNode<'a>>,
}

/// One node in the `--json` document.
#[derive(Debug, Serialize)]
pub struct ReportNode<'a> {
    /// The node.
    pub name: &'a str,
    /// `on`, `off`, `unknown`, or null when not known (an action without
    /// `--wait`).
    pub state: Option<PowerState>,
    /// Did what was asked (with `--wait`: and reached the state).
    pub success: bool,
    /// Not in the topology.
    pub missing: bool,
    /// The table's word, lowercase: `on`, `starting`, `failed to start`, ...
    pub outcome: String,
    /// Why it did not succeed, else null.
    pub error: Option<&'a str>,
}

/// The outcome key a summary groups a node under.
fn summary_key(outcome: &Outcome) -> String {
    if outcome.missing {
        "missing".into()
    } else {
        outcome.word.to_lowercase()
    }
}

/// Renders the outcomes in `format`.
pub fn render(
    action: Action,
    wait: Option<PowerState>,
    outcomes: &[Outcome],
    format: Format,
    colour: bool,
) -> String {
    match format {
        Format::Table => {
            let rows: Vec<Row> = outcomes
                .iter()
                .map(|o| Row {
                    name: o.name.clone(),
                    word: o.word.clone(),
                    tone: o.tone,
                    note: o.error.clone(),
                })
                .collect();
            output::table(&rows, colour)
        }
        Format::Json => output::json(&Report {
            action,
            wait,
            nodes: outcomes
                .iter()
                .map(|o| ReportNode {
                    name: &o.name,
                    state: o.state,
                    success: o.success,
                    missing: o.missing,
                    outcome: o.word.to_lowercase(),
                    error: o.error.as_deref(),
                })
                .collect(),
        }),
        Format::Summary => {
            let mut lines: Vec<(Rank, String, Tone, Vec<String>)> = Vec::new();
            for o in outcomes {
                let key = summary_key(o);
                match lines.iter_mut().find(|line| line.1 == key) {
                    Some(line) => line.3.push(o.name.clone()),
                    None => lines.push((o.rank, key, o.tone, vec![o.name.clone()])),
                }
            }
            // Stable: equal ranks keep the order of first appearance.
            lines.sort_by_key(|line| line.0);
            let lines: Vec<_> = lines.into_iter().map(|(_, k, t, n)| (k, t, n)).collect();
            output::summary(&lines, colour)
        }
    }
}

/// Joins the NODES arguments into one expression and checks its grammar
/// locally, so a typo is a usage error before anything is sent.
pub fn target(targets: &Targets) -> Result<(Target, Option<Vec<String>>), Failure> {
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
    let position: HashMap<&str, usize> = asked
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

/// Options for [`status`] and [`action`] that come from the command line.
pub struct Options {
    /// The output format.
    pub format: Format,
    /// Colour the words.
    pub colour: bool,
}

/// `power status`.
pub fn status(api: &Api, targets: &Targets, options: &Options) -> Result<Exit, Failure> {
    run(api, Action::Status, targets, None, options)
}

/// `power on|off|restart`.
pub fn action(
    api: &Api,
    action: Action,
    args: &ActionArgs,
    options: &Options,
) -> Result<Exit, Failure> {
    let wait = args.wait.then_some(args.wait_timeout);
    run(api, action, &args.targets, wait, options)
}

fn run(
    api: &Api,
    action: Action,
    targets: &Targets,
    wait: Option<Duration>,
    options: &Options,
) -> Result<Exit, Failure> {
    let (target, asked) = target(targets)?;
    let progress = Progress::start(asked.as_ref().map(Vec::len), action.as_str());
    let mut results = api.power(action, &target, |_| progress.inc())?;
    progress.finish();
    sort(&mut results, asked.as_deref());
    let mut outcomes: Vec<Outcome> = results.iter().map(outcome).collect();
    let goal = wait.and_then(|_| target_state(action));
    if let (Some(limit), Some(goal)) = (wait, goal) {
        let pending: Vec<String> = outcomes
            .iter()
            .filter(|o| o.success)
            .map(|o| o.name.clone())
            .collect();
        let seen = poll(api, &pending, goal, limit)?;
        for o in outcomes.iter_mut().filter(|o| o.success) {
            let state = seen.get(&o.name).copied().unwrap_or(PowerState::Unknown);
            *o = waited(o.clone(), goal, state, limit);
        }
        let late: Vec<&str> = outcomes
            .iter()
            .filter(|o| o.state.is_some_and(|s| s != goal))
            .map(|o| o.name.as_str())
            .collect();
        if !late.is_empty() {
            let nodes = if late.len() == 1 { "node" } else { "nodes" };
            output::warn(&format!(
                "{} {nodes} did not reach {goal} within {}: {}",
                late.len(),
                humantime::format_duration(limit),
                hostlist::compress(&late)
            ));
        }
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

/// Polls the status of `nodes` until each is in `goal` or `limit` has
/// passed; returns the last state seen of each.
fn poll(
    api: &Api,
    nodes: &[String],
    goal: PowerState,
    limit: Duration,
) -> Result<HashMap<String, PowerState>, Failure> {
    let deadline = Instant::now() + limit;
    let mut seen: HashMap<String, PowerState> = HashMap::new();
    let mut pending: Vec<String> = nodes.to_vec();
    let progress = Progress::start(Some(nodes.len()), &format!("waiting for {goal}"));
    let mut interval = Duration::from_millis(200);
    while !pending.is_empty() {
        let expr = hostlist::compress(&pending);
        let results = api.power(Action::Status, &Target::Nodes(expr), |_| {})?;
        for result in &results {
            seen.insert(result.node_name.clone(), reported_state(result));
        }
        pending.retain(|n| seen.get(n) != Some(&goal));
        progress.set(nodes.len() - pending.len());
        let now = Instant::now();
        if pending.is_empty() || now >= deadline {
            break;
        }
        std::thread::sleep(interval.min(deadline - now));
        interval = (interval * 2).min(Duration::from_secs(2));
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(action: Action, name: &str, success: bool) -> CommandAttributes {
        CommandAttributes {
            action,
            node_name: name.into(),
            platform: Some("sim".into()),
            missing: false,
            success,
            running: None,
            state: None,
            error: (!success).then(|| "sim: boom".to_string()),
            exit_code: (!success).then_some(1),
            duration_ms: 1,
        }
    }

    fn status(name: &str, state: Option<PowerState>) -> CommandAttributes {
        let mut r = result(Action::Status, name, state.is_some());
        r.running = Some(state == Some(PowerState::On));
        r.state = Some(state.unwrap_or(PowerState::Unknown));
        r
    }

    #[test]
    fn words_follow_the_reference() {
        let word = |r: &CommandAttributes| outcome(r).word;
        assert_eq!(word(&status("n", Some(PowerState::On))), "On");
        assert_eq!(word(&status("n", Some(PowerState::Off))), "Off");
        assert_eq!(word(&status("n", None)), "Unknown");
        let pairs = [
            (Action::PowerOn, "Starting", "Failed to start"),
            (Action::PowerOff, "Stopping", "Failed to stop"),
            (Action::Restart, "Restarting", "Failed to restart"),
        ];
        for (action, good, bad) in pairs {
            assert_eq!(word(&result(action, "n", true)), good);
            assert_eq!(word(&result(action, "n", false)), bad);
        }
    }

    #[test]
    fn reference_results_without_state() {
        // The reference server sends `running`, never `state`.
        let mut r = result(Action::Status, "n", true);
        r.running = Some(false);
        assert_eq!(reported_state(&r), PowerState::Off);
        r.running = Some(true);
        assert_eq!(reported_state(&r), PowerState::On);
        r.success = false;
        assert_eq!(reported_state(&r), PowerState::Unknown);
    }

    #[test]
    fn missing_nodes_fail_and_group_apart() {
        let missing = CommandAttributes::missing(Action::PowerOn, "ghost");
        let o = outcome(&missing);
        assert_eq!(
            (o.success, &*o.word, o.rank),
            (false, "Failed to start", Rank::Missing)
        );
        assert_eq!(
            o.error.as_deref(),
            Some("node ghost is not in the topology")
        );
        let o = outcome(&CommandAttributes::missing(Action::Status, "ghost"));
        assert_eq!((o.success, &*o.word), (false, "Unknown"));
    }

    #[test]
    fn renders_each_format() {
        let outcomes: Vec<Outcome> = [
            status("n01", Some(PowerState::On)),
            status("n02", Some(PowerState::Off)),
            status("n03", Some(PowerState::On)),
            CommandAttributes::missing(Action::Status, "x"),
        ]
        .iter()
        .map(outcome)
        .collect();
        let table = render(Action::Status, None, &outcomes, Format::Table, false);
        assert_eq!(
            table,
            "n01  On\nn02  Off\nn03  On\nx    Unknown  node x is not in the topology\n"
        );
        let summary = render(Action::Status, None, &outcomes, Format::Summary, false);
        assert_eq!(summary, "on: n[01,03]\noff: n02\nmissing: x\n");
        let json: serde_json::Value = serde_json::from_str(&render(
            Action::Status,
            None,
            &outcomes,
            Format::Json,
            false,
        ))
        .unwrap();
        assert_eq!(
            json["nodes"][3],
            serde_json::json!({"name": "x", "state": "unknown", "success": false,
                "missing": true, "outcome": "unknown",
                "error": "node x is not in the topology"})
        );
        assert_eq!(json["action"], "status");
        assert_eq!(json["wait"], serde_json::Value::Null);
    }

    #[test]
    fn waiting_outcomes() {
        let limit = Duration::from_secs(5);
        let started = outcome(&result(Action::PowerOn, "n1", true));
        let reached = waited(started.clone(), PowerState::On, PowerState::On, limit);
        assert_eq!((reached.success, &*reached.word), (true, "On"));
        let stuck = waited(started.clone(), PowerState::On, PowerState::Off, limit);
        assert_eq!((stuck.success, &*stuck.word), (false, "Still off"));
        assert_eq!(stuck.error.as_deref(), Some("did not reach on within 5s"));
        let lost = waited(started, PowerState::On, PowerState::Unknown, limit);
        assert_eq!((lost.success, &*lost.word), (false, "Unknown"));
    }

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
        };
        let (target, asked) = target(&targets).unwrap();
        assert_eq!(target, Target::Nodes("n[1-2],login".into()));
        assert_eq!(asked.unwrap(), ["n1", "n2", "login"]);
        let bad = Targets {
            names: vec!["n[1-".into()],
            groups: true,
            nodes: false,
        };
        let message = super::target(&bad).unwrap_err().to_string();
        assert!(
            message.starts_with("bad group list `n[1-`: unbalanced"),
            "{message}"
        );
    }
}
