//! `power-server check`: load and validate exactly as `serve` would, and
//! say what was found, so an admin can try a change before reloading.

use crate::driver::{generate, DriverKind};
use crate::load::{LoadSettings, Loaded};
use crate::topology::{Diagnostic, DriverSpec, LoadErrors, Resolved};
use power_proto::hostlist;
use std::fmt::Write as _;

/// What `check` found: the report for stdout, or every error. `notes` are
/// what reading the config noticed (warnings of their own).
pub fn check(settings: &LoadSettings, notes: &[String]) -> Result<String, LoadErrors> {
    let loaded = Loaded::read(settings)?;
    let notes: Vec<Diagnostic> = notes.iter().cloned().map(Diagnostic::general).collect();
    let report = report(&loaded, &notes, &missing_tools(&loaded));
    // The command ends here: freeing each of a large topology's nodes
    // only delays the exit (10 ms of 100,000). The drivers are dropped
    // as usual: they remove their generated scripts.
    let Loaded { topology, .. } = loaded;
    std::mem::forget(topology);
    Ok(report)
}

/// Tools an inline command calls that `which` cannot find on PATH.
pub fn missing_tools(loaded: &Loaded) -> Vec<Diagnostic> {
    let mut found = Vec::new();
    for platform in loaded.topology.platforms.values() {
        let DriverSpec::Inline { prelude, commands } = &platform.run.driver else {
            continue;
        };
        let prelude = prelude.as_deref().unwrap_or("");
        let programs: Vec<String> = std::iter::once(prelude)
            .chain(commands.values().map(String::as_str))
            .flat_map(generate::called_programs)
            .collect();
        // The prelude's own functions need nothing on PATH.
        let mut seen: std::collections::BTreeSet<String> =
            generate::defined_functions(prelude).into_iter().collect();
        for program in programs {
            if seen.insert(program.clone()) && which::which(&program).is_err() {
                found.push(Diagnostic::at(
                    &platform.defined_at,
                    format!(
                        "platform {}: its commands call {program:?}, which is not on PATH",
                        platform.name
                    ),
                ));
            }
        }
    }
    found
}

fn report(loaded: &Loaded, notes: &[Diagnostic], missing_tools: &[Diagnostic]) -> String {
    let mut out = String::new();
    let topology = &loaded.topology;
    out.push_str("files:\n");
    for (_, resolved) in &loaded.files {
        let _ = match resolved {
            Resolved::File(path) => writeln!(out, "  {}", path.display()),
            Resolved::Masked(path) => writeln!(out, "  {} (masks this name)", path.display()),
        };
    }
    out.push_str("platforms:\n");
    let width = topology
        .platforms
        .keys()
        .map(String::len)
        .max()
        .unwrap_or(0);
    for (name, platform) in &topology.platforms {
        let driver = &loaded.drivers.by_platform[name];
        let mut kind = match driver.kind {
            DriverKind::Inline => "inline".to_string(),
            DriverKind::DropIn => format!("driver {}", driver.path.display()),
        };
        if let Some(max) = platform.run.batch {
            let mode = if platform.run.persistent {
                "persistent batch"
            } else {
                "batch"
            };
            let _ = write!(kind, ", {mode} of up to {max}");
        }
        let nodes = topology
            .nodes()
            .iter()
            .filter(|n| *n.platform == **name)
            .count();
        let _ = writeln!(
            out,
            "  {name:width$}  {nodes:>5} node{}  {kind}  ({})",
            if nodes == 1 { " " } else { "s" },
            platform.defined_at
        );
    }
    let names = topology.nodes().iter().map(|n| &*n.name);
    let _ = writeln!(
        out,
        "nodes: {} ({})",
        topology.nodes().len(),
        hostlist::compress(names)
    );
    let _ = writeln!(out, "groups: {}", topology.groups.len());
    for group in topology.groups.values() {
        let _ = writeln!(
            out,
            "  {}: {}",
            group.name,
            hostlist::compress(&group.nodes)
        );
    }
    let warnings: Vec<&Diagnostic> = notes
        .iter()
        .chain(&loaded.warnings)
        .chain(missing_tools)
        .collect();
    if !warnings.is_empty() {
        let _ = writeln!(out, "warnings:");
        for w in warnings {
            let _ = writeln!(out, "  {w}");
        }
    }
    out.push_str("topology OK\n");
    out
}
