//! Which fragment files make up the topology: systemd-style drop-in
//! directories with precedence and masking.
//!
//! A later directory's file replaces an earlier directory's file of the same
//! name; an empty file or a link to `/dev/null` masks without replacing. The
//! survivors are read in lexical order of file name.

use super::diagnostic::Diagnostic;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

/// What one file name resolved to across the directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// This file is read.
    File(PathBuf),
    /// Masked by this empty file or `/dev/null` link.
    Masked(PathBuf),
}

/// One file name's outcome, and the index in `dirs` of the directory that
/// decided it.
pub type Source = (OsString, Resolved, usize);

/// Resolve the fragment files of `dirs`, in precedence order (later wins).
/// A directory that does not exist contributes nothing.
pub fn resolve(dirs: &[PathBuf]) -> Result<Vec<Source>, Vec<Diagnostic>> {
    let mut by_name: BTreeMap<OsString, (Resolved, usize)> = BTreeMap::new();
    let mut errors = Vec::new();
    for (precedence, dir) in dirs.iter().enumerate() {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                errors.push(Diagnostic::general(format!(
                    "{}: cannot read topology directory: {e}",
                    dir.display()
                )));
                continue;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    errors.push(Diagnostic::general(format!(
                        "{}: cannot list: {e}",
                        dir.display()
                    )));
                    continue;
                }
            };
            let name = entry.file_name();
            if !is_fragment_name(&name) {
                continue;
            }
            let path = entry.path();
            match masks(&path) {
                Ok(true) => by_name.insert(name, (Resolved::Masked(path), precedence)),
                Ok(false) => by_name.insert(name, (Resolved::File(path), precedence)),
                Err(e) => {
                    errors.push(Diagnostic::general(format!("{}: {e}", path.display())));
                    continue;
                }
            };
        }
    }
    if errors.is_empty() {
        Ok(by_name
            .into_iter()
            .map(|(name, (resolved, precedence))| (name, resolved, precedence))
            .collect())
    } else {
        Err(errors)
    }
}

/// `*.yaml` and `*.yml`, not hidden (editors' and packagers' temp files are).
fn is_fragment_name(name: &OsString) -> bool {
    let name = name.to_string_lossy();
    !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml"))
}

/// An empty file, or a link to `/dev/null`, masks.
fn masks(path: &Path) -> std::io::Result<bool> {
    if fs::symlink_metadata(path)?.file_type().is_symlink() {
        // A dangling link is an error a person should see, not a silent mask.
        if fs::read_link(path)? == Path::new("/dev/null") {
            return Ok(true);
        }
    }
    let meta = fs::metadata(path)?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(meta.len() == 0)
}
