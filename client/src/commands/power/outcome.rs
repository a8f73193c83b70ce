//! What happened to each node: a server result (and what `--wait` saw) in
//! the reference client's words, with a colour and a rank.

use crate::output::Tone;
use power_proto::wire::{Action, CommandAttributes, ErrorClass, PowerState};
use std::borrow::Cow;
use std::time::Duration;

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
    /// What kind of failure, as the server classed it.
    pub class: Option<ErrorClass>,
    /// The reference client's word: `On`, `Starting`, `Failed to stop`, ...
    pub word: Cow<'static, str>,
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
        Action::PowerOff | Action::Shutdown => ("Stopping", "Failed to stop"),
        Action::Restart => ("Restarting", "Failed to restart"),
    };
    let mut outcome = Outcome {
        name: result.node_name.clone(),
        missing: result.missing,
        success: result.success,
        state: None,
        error: None,
        class: None,
        word: good.into(),
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
        outcome.class = result.error_class;
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
        state => (format!("Still {state}").into(), Tone::Warn, Rank::Late),
    };
    outcome
}

/// The outcome of an action the server confirmed (`?wait=`): the state
/// reached, or the state it was last seen in with the server's reason.
pub fn confirmed_by_server(result: &CommandAttributes, limit: Duration) -> Outcome {
    let mut done = result.clone();
    done.success = true;
    done.error = None;
    done.error_class = None;
    let Some(goal) = result.action.target_state() else {
        return outcome(result);
    };
    let seen = result.state.unwrap_or(PowerState::Unknown);
    let mut outcome = waited(outcome(&done), goal, seen, limit);
    if result.confirmed == Some(false) {
        outcome.error.clone_from(&result.error);
        outcome.class = result.error_class;
    }
    outcome
}

/// A graceful off's outcome: `Off` for a node that shut down (the server
/// saw it off), `Forced off` for one switched off hard after its grace.
pub fn graceful(mut outcome: Outcome, result: &CommandAttributes) -> Outcome {
    if !outcome.success {
        return outcome;
    }
    match result.fallback {
        Some(false) => {
            outcome.word = "Off".into();
            outcome.state = Some(PowerState::Off);
        }
        Some(true) => {
            outcome.word = "Forced off".into();
            outcome.tone = Tone::Warn;
        }
        None => {}
    }
    outcome
}

fn capitalised(state: PowerState) -> Cow<'static, str> {
    match state {
        PowerState::On => "On",
        PowerState::Off => "Off",
        PowerState::Unknown => "Unknown",
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::power::test_support::{result, status};

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
}
