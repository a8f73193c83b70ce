//! Every platform to an executable: generated scripts for inline commands
//! (in a private directory made anew on every load), drop-in drivers found
//! in the drivers directories.

use super::generate;
use crate::topology::{Diagnostic, DriverSpec, LoadErrors, Location, Topology};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// How a platform's driver came to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriverKind {
    /// Generated from inline commands.
    Inline,
    /// A drop-in executable.
    DropIn,
}

/// One platform's executable.
#[derive(Debug, Clone)]
pub struct Driver {
    /// What to execute.
    pub path: PathBuf,
    /// Generated or drop-in.
    pub kind: DriverKind,
}

/// The drivers of one load. Generated scripts live as long as this does:
/// the directory is removed when the last run using this load ends.
#[derive(Debug)]
pub struct Drivers {
    /// Driver by platform name.
    pub by_platform: BTreeMap<String, Driver>,
    _scripts: tempfile::TempDir,
}

/// Build every platform's driver. `runtime_root` holds the generated
/// scripts (the system temp directory when `None`).
pub fn build(
    topology: &Topology,
    drivers_dirs: &[PathBuf],
    runtime_root: Option<&Path>,
) -> Result<Drivers, LoadErrors> {
    let scripts = make_script_dir(runtime_root).map_err(|e| {
        LoadErrors(vec![Diagnostic::general(format!(
            "cannot create the driver runtime directory: {e}"
        ))])
    })?;
    let mut by_platform = BTreeMap::new();
    let mut errors = Vec::new();
    for (name, platform) in &topology.platforms {
        let built = match &platform.run.driver {
            DriverSpec::Inline { prelude, commands } => {
                let origin = platform.defined_at.to_string();
                let script = generate::script(name, &origin, prelude.as_deref(), commands);
                write_script(scripts.path(), name, &script, &platform.defined_at).map(|path| {
                    Driver {
                        path,
                        kind: DriverKind::Inline,
                    }
                })
            }
            DriverSpec::DropIn(driver) => find_drop_in(&driver.value, drivers_dirs)
                .map(|path| Driver {
                    path,
                    kind: DriverKind::DropIn,
                })
                .map_err(|e| Diagnostic::at(&driver.at, format!("platform {name}: {e}"))),
        };
        match built {
            Ok(driver) => {
                by_platform.insert(name.clone(), driver);
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(Drivers {
            by_platform,
            _scripts: scripts,
        })
    } else {
        Err(LoadErrors(errors))
    }
}

fn make_script_dir(root: Option<&Path>) -> std::io::Result<tempfile::TempDir> {
    let mut builder = tempfile::Builder::new();
    builder
        .prefix("power-server-drivers-")
        .permissions(fs::Permissions::from_mode(0o700));
    match root {
        Some(root) => {
            fs::create_dir_all(root)?;
            builder.tempdir_in(root)
        }
        None => builder.tempdir(),
    }
}

fn write_script(
    dir: &Path,
    name: &str,
    script: &generate::Script,
    origin: &Location,
) -> Result<PathBuf, Diagnostic> {
    // Platform names may hold characters unfit for a file name; the file
    // name only needs to be unique and recognisable.
    let file: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let path = dir.join(format!("{file}-{:x}", fnv1a(name)));
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o700)
        .open(&path)
        .and_then(|mut f| f.write_all(script.text.as_bytes()));
    if let Err(e) = written {
        return Err(Diagnostic::at(
            origin,
            format!(
                "platform {name}: cannot write its driver script {}: {e}",
                path.display()
            ),
        ));
    }
    // Catch shell syntax errors now, not when someone presses the button.
    match syntax_check(&path) {
        Ok(out) if out.status.success() => Ok(path),
        Ok(out) => {
            let message = String::from_utf8_lossy(&out.stderr);
            let first = message.lines().next().unwrap_or("").trim();
            let detail = first.rsplit(": ").next().unwrap_or(first);
            let place = match generate::locate(script, first) {
                Some((part, line)) => format!("{part}, line {line}"),
                None => "its commands".to_string(),
            };
            Err(Diagnostic::at(
                origin,
                format!("platform {name}: shell syntax error in {place}: {detail}"),
            ))
        }
        Err(e) => Err(Diagnostic::at(
            origin,
            format!("platform {name}: cannot run bash to check its commands: {e}"),
        )),
    }
}

/// FNV-1a: a short stable hash, so two platforms whose names sanitise
/// alike differ, and so a node keeps its persistent driver process.
pub(crate) fn fnv1a(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Find drop-in driver `name`: the last drivers directory holding it wins,
/// as with topology files.
/// `bash -n` on `path`: a child of this process like a driver, so tracked
/// as one (see [`super::orphans`]).
fn syntax_check(path: &Path) -> std::io::Result<std::process::Output> {
    let child = super::orphans::tracked(|| {
        let child = Command::new("bash")
            .arg("-n")
            .arg(path)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        let pid = child.id();
        Ok((child, pid))
    })?;
    let pid = child.id();
    let output = child.wait_with_output();
    super::orphans::reaped(pid);
    output
}

fn find_drop_in(name: &str, dirs: &[PathBuf]) -> Result<PathBuf, String> {
    if name.is_empty() || name.contains('/') || name.starts_with(['.', '_']) {
        return Err(format!(
            "driver {name:?} is not a driver name (a file name in a drivers directory, not starting with '.' or '_')"
        ));
    }
    let Some(path) = dirs.iter().rev().map(|d| d.join(name)).find(|p| p.exists()) else {
        let searched: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        return Err(format!(
            "driver {name:?} not found in the drivers directories ({})",
            searched.join(", ")
        ));
    };
    let meta = fs::metadata(&path).map_err(|e| format!("driver {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("driver {} is not a regular file", path.display()));
    }
    if meta.permissions().mode() & 0o111 == 0
        || nix::unistd::access(&path, nix::unistd::AccessFlags::X_OK).is_err()
    {
        return Err(format!(
            "driver {} is not executable (chmod +x it)",
            path.display()
        ));
    }
    Ok(path)
}
