//! `max_nodes`: an action that would touch more nodes than that asks for a
//! yes on a terminal, and is refused elsewhere unless `--yes` was given.
//!
//! The decision and the answer's reading are pure; [`confirm`] talks to the
//! terminal.

use crate::exit::Failure;
use power_proto::wire::Action;
use std::io::{BufRead, IsTerminal, Write};

/// What to do before sending an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead: within `max_nodes`, none set, or `--yes`.
    Go,
    /// Ask this question on the terminal.
    Ask(String),
    /// Refuse, with this message: not a terminal, and no `--yes`.
    Refuse(String),
}

/// The verb a person typed: `on`, `off`, `restart`, `status`.
pub fn verb(action: Action) -> &'static str {
    match action {
        Action::Status => "status",
        Action::PowerOn => "on",
        Action::PowerOff | Action::Shutdown => "off",
        Action::Restart => "restart",
    }
}

/// `count` with thousands separated by commas: `1,200`.
pub fn thousands(count: usize) -> String {
    let digits = count.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Whether `action` on `count` nodes needs a confirmation, and how to get
/// it. A status only reads, so it never asks.
pub fn decide(
    action: Action,
    count: usize,
    max_nodes: Option<usize>,
    yes: bool,
    terminal: bool,
) -> Decision {
    let Some(max) = max_nodes else {
        return Decision::Go;
    };
    if yes || action == Action::Status || count <= max {
        return Decision::Go;
    }
    let nodes = if count == 1 { "node" } else { "nodes" };
    let what = format!("power {} {} {nodes}", verb(action), thousands(count));
    if terminal {
        Decision::Ask(format!("{what}? [y/N] "))
    } else {
        Decision::Refuse(format!(
            "{what}: more than max_nodes ({}), and not confirmed: nothing was done \
             (add --yes to confirm)",
            thousands(max)
        ))
    }
}

/// Does a typed answer say yes? Only `y` or `yes`, in any case: anything
/// else, an empty line included, is no.
pub fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// Are stdin and stderr a terminal (someone there to ask)?
pub fn on_a_terminal() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// Carry out `decision`: ask on stderr and read the answer from stdin.
pub fn confirm(decision: Decision) -> Result<(), Failure> {
    match decision {
        Decision::Go => Ok(()),
        Decision::Refuse(message) => Err(Failure::NotConfirmed(message)),
        Decision::Ask(question) => {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(question.as_bytes());
            let _ = err.flush();
            drop(err);
            let mut answer = String::new();
            let _ = std::io::stdin().lock().read_line(&mut answer);
            if is_yes(&answer) {
                Ok(())
            } else {
                Err(Failure::NotConfirmed(
                    "not confirmed: nothing was done".into(),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_only_past_the_limit_and_never_for_a_status() {
        use Decision::{Ask, Go, Refuse};
        let off = Action::PowerOff;
        assert_eq!(decide(off, 1200, None, false, true), Go);
        assert_eq!(decide(off, 3, Some(3), false, false), Go);
        assert_eq!(decide(off, 4, Some(3), true, false), Go);
        assert_eq!(decide(Action::Status, 4, Some(3), false, false), Go);
        assert_eq!(
            decide(off, 1200, Some(100), false, true),
            Ask("power off 1,200 nodes? [y/N] ".into())
        );
        assert_eq!(
            decide(Action::Restart, 4, Some(3), false, false),
            Refuse(
                "power restart 4 nodes: more than max_nodes (3), and not confirmed: \
                 nothing was done (add --yes to confirm)"
                    .into()
            )
        );
        assert_eq!(
            decide(Action::PowerOn, 1, Some(0), false, true),
            Ask("power on 1 node? [y/N] ".into())
        );
    }

    #[test]
    fn only_y_or_yes_is_yes() {
        for yes in ["y", "Y\n", " yes ", "YES"] {
            assert!(is_yes(yes), "{yes:?}");
        }
        for no in ["", "\n", "n", "no", "yep", "y es"] {
            assert!(!is_yes(no), "{no:?}");
        }
    }

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1200), "1,200");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
