//! The reports: the outcomes as a table, a summary or a `--json` document.

use super::outcome::{Outcome, Rank};
use crate::output::{self, Format, Row, Tone};
use power_proto::wire::{Action, ErrorClass, PowerState};
use serde::Serialize;

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
    /// What kind of failure (`auth`, `unreachable`, `busy`, `unsupported`,
    /// `timeout`, `unconfirmed`, `missing`, `failed`), else null.
    pub error_class: Option<ErrorClass>,
}

/// The classes worth a word beside the error: the ones that say what to
/// do (fix credentials, check the network, try later). `failed` says
/// nothing more than the word, and the words already say missing and
/// unconfirmed.
fn telling(class: Option<ErrorClass>) -> Option<ErrorClass> {
    class.filter(|c| {
        !matches!(
            c,
            ErrorClass::Failed | ErrorClass::Missing | ErrorClass::Unconfirmed
        )
    })
}

/// The outcome key a summary groups a node under: failed nodes by class
/// too.
fn summary_key(outcome: &Outcome) -> String {
    if outcome.missing {
        return "missing".into();
    }
    let word = outcome.word.to_lowercase();
    match telling(outcome.class) {
        Some(class) => format!("{word} ({class})"),
        None => word,
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
                    name: o.name.as_str().into(),
                    word: o.word.as_ref().into(),
                    tone: o.tone,
                    note: match (telling(o.class), &o.error) {
                        (Some(class), Some(error)) => Some(format!("{class}: {error}").into()),
                        (_, error) => error.as_deref().map(Into::into),
                    },
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
                    error_class: o.class,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::power::outcome::outcome;
    use crate::commands::power::test_support::{result, status};
    use power_proto::wire::CommandAttributes;

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
                "error": "node x is not in the topology", "error_class": "missing"})
        );
        assert_eq!(json["action"], "status");
        assert_eq!(json["wait"], serde_json::Value::Null);
    }

    #[test]
    fn failures_show_their_class_and_summaries_group_by_it() {
        let failed = |name: &str, class: ErrorClass, error: &str| {
            let mut r = result(Action::PowerOn, name, false);
            r.error = Some(error.into());
            r.error_class = Some(class);
            outcome(&r)
        };
        let outcomes = [
            outcome(&result(Action::PowerOn, "n1", true)),
            failed("n2", ErrorClass::Auth, "password refused"),
            failed("n3", ErrorClass::Auth, "password refused"),
            failed("n4", ErrorClass::Busy, "locked"),
            failed("n5", ErrorClass::Failed, "exited 1"),
        ];
        assert_eq!(
            render(Action::PowerOn, None, &outcomes, Format::Table, false),
            "n1  Starting\nn2  Failed to start  auth: password refused\n\
             n3  Failed to start  auth: password refused\nn4  Failed to start  busy: locked\n\
             n5  Failed to start  exited 1\n"
        );
        assert_eq!(
            render(Action::PowerOn, None, &outcomes, Format::Summary, false),
            "starting: n1\nfailed to start (auth): n[2-3]\nfailed to start (busy): n4\n\
             failed to start: n5\n"
        );
    }
}
