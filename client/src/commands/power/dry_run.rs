//! `--dry-run`: what an action would do, node by node, from the server's
//! plan; nothing is run. Rendering is pure.

use crate::output::{self, Format};
use power_proto::hostlist;
use power_proto::wire::{Action, PlanAttributes};
use serde::Serialize;
use std::fmt::Write as _;

/// The `--json` document of a dry run.
#[derive(Debug, Serialize)]
struct PlanReport<'a> {
    action: Action,
    dry_run: bool,
    force: bool,
    nodes: Vec<PlanNode<'a>>,
}

/// One node of the `--json` document.
#[derive(Debug, Serialize)]
struct PlanNode<'a> {
    name: &'a str,
    platform: Option<&'a str>,
    driver: Option<&'a str>,
    batch: bool,
    variables: &'a [String],
    secret_variables: &'a [String],
    unset_variables: &'a [String],
    would_run: bool,
    missing: bool,
    error: Option<&'a str>,
}

/// The variables as a person reads them: names, and `=***` after a
/// credential's (its value is never shown, nor any other).
fn variables(plan: &PlanAttributes) -> String {
    if plan.variables.is_empty() {
        return "-".into();
    }
    plan.variables
        .iter()
        .map(|v| {
            if plan.secret_variables.contains(v) {
                format!("{v}=***")
            } else {
                v.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The plans as a table (a header, then a row per node), a summary or a
/// `--json` document.
pub fn render(action: Action, force: bool, plans: &[PlanAttributes], format: Format) -> String {
    match format {
        Format::Json => {
            let doc = PlanReport {
                action,
                dry_run: true,
                force,
                nodes: plans
                    .iter()
                    .map(|p| PlanNode {
                        name: &p.node_name,
                        platform: p.platform.as_deref(),
                        driver: p.driver.as_deref(),
                        batch: p.batch,
                        variables: &p.variables,
                        secret_variables: &p.secret_variables,
                        unset_variables: &p.unset_variables,
                        would_run: p.would_run,
                        missing: p.missing,
                        error: p.error.as_deref(),
                    })
                    .collect(),
            };
            let mut text = serde_json::to_string_pretty(&doc).expect("a report serialises");
            text.push('\n');
            text
        }
        Format::Summary => {
            let mut out = String::new();
            for (key, pick) in [
                (
                    "would run",
                    (|p: &PlanAttributes| p.would_run) as fn(&PlanAttributes) -> bool,
                ),
                ("refused", |p| !p.would_run && !p.missing),
                ("missing", |p| p.missing),
            ] {
                let names: Vec<&str> = plans
                    .iter()
                    .filter(|p| pick(p))
                    .map(|p| p.node_name.as_str())
                    .collect();
                if !names.is_empty() {
                    let _ = writeln!(out, "{key}: {}", hostlist::compress(&names));
                }
            }
            out
        }
        Format::Table => {
            let header = ["NODE", "PLATFORM", "DRIVER", "VARIABLES", ""].map(String::from);
            let rows: Vec<[String; 5]> = std::iter::once(header)
                .chain(plans.iter().map(|p| {
                    [
                        p.node_name.clone(),
                        p.platform.clone().unwrap_or_else(|| "-".into()),
                        p.driver.clone().unwrap_or_else(|| "-".into()),
                        if p.missing { "-".into() } else { variables(p) },
                        p.error.clone().unwrap_or_default(),
                    ]
                }))
                .collect();
            columns(&rows)
        }
    }
}

/// Rows as columns two spaces apart, without trailing spaces.
fn columns(rows: &[[String; 5]]) -> String {
    let mut widths = [0; 5];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            line.push_str(&" ".repeat(widths[i] - cell.chars().count()));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The line for stderr after a dry run's table: how many nodes would run,
/// and that none did.
pub fn note(action: Action, plans: &[PlanAttributes]) -> String {
    let running = plans.iter().filter(|p| p.would_run).count();
    format!(
        "dry run: power {} would run on {} of {} node{}; nothing was run",
        super::max_nodes::verb(action),
        super::max_nodes::thousands(running),
        super::max_nodes::thousands(plans.len()),
        if plans.len() == 1 { "" } else { "s" }
    )
}

/// Writes the plans and the note, and says how the run would end: every
/// node would run, or not.
pub fn report(
    action: Action,
    force: bool,
    plans: &[PlanAttributes],
    format: Format,
) -> Result<bool, crate::exit::Failure> {
    output::write_stdout(&render(action, force, plans, format))?;
    if format == Format::Table {
        output::warn(&note(action, plans));
    }
    Ok(plans.iter().all(|p| p.would_run))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(name: &str, error: Option<&str>) -> PlanAttributes {
        PlanAttributes {
            action: Action::PowerOff,
            node_name: name.into(),
            platform: Some("ipmi".into()),
            missing: false,
            driver: Some("inline".into()),
            batch: false,
            variables: vec!["name".into(), "ipmi_password".into()],
            secret_variables: vec!["ipmi_password".into()],
            unset_variables: vec![],
            would_run: error.is_none(),
            error: error.map(Into::into),
        }
    }

    #[test]
    fn a_table_names_variables_and_marks_credentials() {
        let mut ghost = plan("ghost", Some("node ghost is not in the topology"));
        ghost.missing = true;
        ghost.platform = None;
        ghost.driver = None;
        let plans = [plan("n1", None), plan("n10", Some("protected")), ghost];
        assert_eq!(
            render(Action::PowerOff, false, &plans, Format::Table),
            "NODE   PLATFORM  DRIVER  VARIABLES\n\
             n1     ipmi      inline  name,ipmi_password=***\n\
             n10    ipmi      inline  name,ipmi_password=***  protected\n\
             ghost  -         -       -                       node ghost is not in the topology\n"
        );
        assert_eq!(
            render(Action::PowerOff, false, &plans, Format::Summary),
            "would run: n1\nrefused: n10\nmissing: ghost\n"
        );
        assert_eq!(
            note(Action::PowerOff, &plans),
            "dry run: power off would run on 1 of 3 nodes; nothing was run"
        );
    }
}
