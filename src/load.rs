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

/// Load and validate exactly as the server does (`check` calls this too).
pub fn load(settings: &LoadSettings) -> Result<Loaded, LoadErrors> {
    let loaded = topology::load(&settings.topology_dirs)?;
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
