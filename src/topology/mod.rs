//! The cluster's topology: nodes, platforms and groups, merged from YAML
//! fragments in drop-in directories.
//!
//! `sources` finds the files (I/O), `parse` reads one fragment (pure),
//! `merge` joins them and checks cross-references (pure).

mod diagnostic;
mod merge;
mod model;
mod parse;
mod sources;

pub use diagnostic::{Diagnostic, LoadErrors, Location};
pub use model::{Group, Node, Platform, Topology};
pub use parse::{
    check_variable_name, is_group_name, parse_duration, DriverSpec, DEFAULT_STATUS_OFF_EXIT_CODE,
    DEFAULT_TIMEOUT,
};
pub use sources::Resolved;

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

/// A loaded topology with what the load noticed.
#[derive(Debug, Clone)]
pub struct LoadedTopology {
    /// The merged topology.
    pub topology: Topology,
    /// Non-fatal findings (a group member not defined, a missing variable).
    pub warnings: Vec<Diagnostic>,
    /// Each file name and what it resolved to, in read order.
    pub files: Vec<(OsString, Resolved)>,
}

/// Load the topology from `dirs` (lowest precedence first).
pub fn load(dirs: &[PathBuf]) -> Result<LoadedTopology, LoadErrors> {
    let files = sources::resolve(dirs).map_err(LoadErrors)?;
    let mut errors = Vec::new();
    let mut fragments = Vec::new();
    for (_, resolved) in &files {
        let Resolved::File(path) = resolved else {
            continue;
        };
        let label: Arc<str> = path.display().to_string().into();
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                errors.push(Diagnostic::general(format!("{label}: cannot read: {e}")));
                continue;
            }
        };
        match parse::parse(&label, &text) {
            Ok(fragment) => fragments.push(fragment),
            Err(mut e) => errors.append(&mut e),
        }
    }
    if !errors.is_empty() {
        return Err(LoadErrors(errors));
    }
    let (topology, warnings) = merge::merge(fragments).map_err(LoadErrors)?;
    Ok(LoadedTopology {
        topology,
        warnings,
        files,
    })
}
