//! One load: topology from its directories plus every platform's driver.
//! The result is immutable and swapped whole on reload, so runs in flight
//! keep the topology and scripts they started with.

use crate::driver::{self, Drivers};
use crate::topology::{self, Diagnostic, LoadErrors, Resolved, Topology};
use std::ffi::OsString;
use std::path::PathBuf;

/// Where a load reads from.
#[derive(Debug, Clone, Default)]
pub struct LoadSettings {
    /// Topology directories, lowest precedence first.
    pub topology_dirs: Vec<PathBuf>,
    /// Drivers directories, lowest precedence first.
    pub drivers_dirs: Vec<PathBuf>,
    /// Where generated driver scripts go (system temp directory when `None`).
    pub runtime_dir: Option<PathBuf>,
    /// The topology directories were named (a flag, the environment or the
    /// config), not the defaults: then each must exist.
    pub topology_named: bool,
    /// Single files read after the directories, each as one more fragment
    /// of highest precedence (the reference's `topology_config`); each
    /// must exist.
    pub topology_files: Vec<PathBuf>,
    /// Groups whose nodes are protected (`protected_groups`): each one the
    /// topology lacks protects nothing, a warning of every load and reload.
    pub protected_groups: Vec<String>,
}

/// Everything one load produced.
#[derive(Debug)]
pub struct Loaded {
    /// The merged topology.
    pub topology: Topology,
    /// Each platform's driver.
    pub drivers: Drivers,
    /// Non-fatal findings.
    pub warnings: Vec<Diagnostic>,
    /// Each fragment file name and what it resolved to.
    pub files: Vec<(OsString, Resolved)>,
}

impl Loaded {
    /// Load and validate exactly as the server does (`check` calls this too).
    ///
    /// Nothing to serve is never silent: a named topology directory that does
    /// not exist is an error; no default directory existing, or no node at
    /// all, is a warning.
    pub fn read(settings: &LoadSettings) -> Result<Loaded, LoadErrors> {
        let dirs = &settings.topology_dirs;
        let absent: Vec<&PathBuf> = dirs.iter().filter(|d| !d.exists()).collect();
        if settings.topology_named && !absent.is_empty() {
            return Err(LoadErrors(
                absent
                    .iter()
                    .map(|d| {
                        Diagnostic::general(format!(
                            "topology directory {} does not exist",
                            d.display()
                        ))
                    })
                    .collect(),
            ));
        }
        let mut loaded = topology::load_with_files(dirs, &settings.topology_files)?;
        if absent.len() == dirs.len() {
            loaded.warnings.push(Diagnostic::general(format!(
                "no topology directory exists (looked in {})",
                list(dirs)
            )));
        } else if loaded.topology.nodes().is_empty() {
            loaded.warnings.push(Diagnostic::general(format!(
                "the topology has no node: nothing to serve (read {})",
                list(dirs)
            )));
        }
        // A typo, or a group gone, protects nothing: an admin should hear.
        for group in &settings.protected_groups {
            if !loaded.topology.groups.contains_key(group.as_str()) {
                loaded.warnings.push(Diagnostic::general(format!(
                    "protected_groups: group {group} is not in the topology: it protects nothing"
                )));
            }
        }
        let drivers = driver::build(
            &loaded.topology,
            &settings.drivers_dirs,
            settings.runtime_dir.as_deref(),
        )?;
        Ok(Loaded {
            topology: loaded.topology,
            drivers,
            warnings: loaded.warnings,
            files: loaded.files,
        })
    }
}

fn list(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
