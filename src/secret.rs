//! The JWT shared secret: taken as given, or read from its file, which is
//! generated (random, mode 0600, in a 0700 directory if that has to be made)
//! the first time it is needed.
//!
//! The secret is never written to a log, an error or a response.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Random bytes in a generated secret (written hex-encoded).
const GENERATED_BYTES: usize = 32;

/// The secret, wrapped so that `Debug` cannot print it.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// The secret's bytes, for signing.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Why no secret could be had.
#[derive(Debug)]
pub enum SecretError {
    /// The secret given directly is empty.
    Empty,
    /// The file exists but is empty.
    EmptyFile(PathBuf),
    /// The file may be read by group or others.
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Reading, creating or writing the file failed.
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done (`cannot read`, `cannot create`, ...).
        doing: &'static str,
        /// What failed.
        error: std::io::Error,
    },
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("the JWT secret is empty: set a non-empty jwt_shared_secret"),
            Self::EmptyFile(p) => write!(
                f,
                "secret file {} is empty: remove it to have a new secret generated",
                p.display()
            ),
            Self::Exposed { path, mode } => write!(
                f,
                "secret file {} is readable by others (mode {mode:04o}): expected 0600; run chmod 600 {}",
                path.display(),
                path.display()
            ),
            Self::Io { path, doing, error } => {
                write!(f, "{doing} secret file {}: {error}", path.display())
            }
        }
    }
}

impl std::error::Error for SecretError {}

/// Get the secret from `source`, generating its file if absent.
pub fn obtain(source: &SecretSource) -> Result<Secret, SecretError> {
    match source {
        SecretSource::Value(v) if v.is_empty() => Err(SecretError::Empty),
        SecretSource::Value(v) => Ok(Secret(v.as_bytes().to_vec())),
        SecretSource::File(path) => read_or_generate(path),
    }
}

/// The variable the secret may be given in.
pub const ENV_VAR: &str = "POWER_SERVER_JWT_SECRET";

/// Take the secret out of the process's environment, once it is read:
/// unset it, and wipe its value where the process's first environment
/// holds it, which is what `/proc/PID/environ` shows to any process of the
/// same user (a driver, say). Call it before any thread starts: the
/// environment is not safe to change while another thread reads it.
pub fn scrub_from_environment() {
    extern "C" {
        static mut environ: *mut *mut std::ffi::c_char;
    }
    let prefix = format!("{ENV_VAR}=");
    // SAFETY: single-threaded (see above); `environ` is a NULL-terminated
    // array of NUL-terminated strings, and each value is overwritten
    // within its own length only.
    unsafe {
        let mut entry = environ;
        while !entry.is_null() && !(*entry).is_null() {
            let bytes = std::ffi::CStr::from_ptr(*entry).to_bytes();
            if let Some(value) = bytes.strip_prefix(prefix.as_bytes()) {
                std::ptr::write_bytes((*entry).add(prefix.len()), b'x', value.len());
            }
            entry = entry.add(1);
        }
        std::env::remove_var(ENV_VAR);
    }
}

/// The secret file used by root when none is named.
pub const SYSTEM_SECRET_FILE: &str = "/etc/power-server/jwt-secret";

/// Where the JWT secret comes from, in the order it is looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// Given directly (environment or config file).
    Value(String),
    /// Read from this file, generated there if absent.
    File(PathBuf),
}

impl SecretSource {
    /// From the settings layers: a value if one was given, else the named
    /// file, else `default` (see [`default_file`]).
    pub fn from_layers(
        value: Option<String>,
        file: Option<PathBuf>,
        default: impl FnOnce() -> PathBuf,
    ) -> SecretSource {
        match (value, file) {
            (Some(v), _) => SecretSource::Value(v),
            (None, Some(f)) => SecretSource::File(f),
            (None, None) => SecretSource::File(default()),
        }
    }
}

/// The secret file when none is named: root's is [`SYSTEM_SECRET_FILE`];
/// anyone else's is `$XDG_CONFIG_HOME/power-server/jwt-secret`
/// (`$HOME/.config` by default), the variables looked up with `var`.
pub fn default_file(var: impl Fn(&str) -> Option<std::ffi::OsString>, root: bool) -> PathBuf {
    if root {
        return PathBuf::from(SYSTEM_SECRET_FILE);
    }
    let config = var("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    config.join("power-server").join("jwt-secret")
}

/// A fresh random secret, hex-encoded (also used by `demo`).
pub fn generate() -> String {
    let mut bytes = [0u8; GENERATED_BYTES];
    getrandom::fill(&mut bytes).expect("the system's random source works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Wrap a secret known to the caller.
pub fn from_value(value: &str) -> Secret {
    Secret(value.as_bytes().to_vec())
}

fn read_or_generate(path: &Path) -> Result<Secret, SecretError> {
    let io = |doing| {
        move |error| SecretError::Io {
            path: path.to_path_buf(),
            doing,
            error,
        }
    };
    match std::fs::metadata(path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(SecretError::Exposed {
                    path: path.to_path_buf(),
                    mode,
                });
            }
            let text = std::fs::read_to_string(path).map_err(io("cannot read"))?;
            let text = text.trim();
            if text.is_empty() {
                return Err(SecretError::EmptyFile(path.to_path_buf()));
            }
            Ok(Secret(text.as_bytes().to_vec()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(io("cannot create the directory of"))?;
            }
            let value = generate();
            // create_new: if another process made the file meanwhile, use theirs.
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
            {
                Ok(mut file) => {
                    file.write_all(format!("{value}\n").as_bytes())
                        .and_then(|()| file.sync_all())
                        .map_err(io("cannot write"))?;
                    tracing::info!("generated a new JWT secret in {}", path.display());
                    Ok(Secret(value.into_bytes()))
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_or_generate(path),
                Err(e) => Err(io("cannot create")(e)),
            }
        }
        Err(e) => Err(io("cannot read")(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_file_is_root_s_or_the_user_s_config() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.into())
        };
        assert_eq!(
            default_file(vars(&[]), true),
            PathBuf::from(SYSTEM_SECRET_FILE)
        );
        assert_eq!(
            default_file(vars(&[("HOME", "/home/u")]), false),
            PathBuf::from("/home/u/.config/power-server/jwt-secret")
        );
        assert_eq!(
            default_file(
                vars(&[("HOME", "/home/u"), ("XDG_CONFIG_HOME", "/x")]),
                false
            ),
            PathBuf::from("/x/power-server/jwt-secret")
        );
    }

    #[test]
    fn a_missing_file_is_generated_private_and_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/jwt-secret");
        let first = obtain(&SecretSource::File(path.clone())).unwrap();
        assert_eq!(first.bytes().len(), GENERATED_BYTES * 2);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
        let second = obtain(&SecretSource::File(path)).unwrap();
        assert_eq!(first.bytes(), second.bytes());
    }

    #[test]
    fn an_exposed_or_empty_file_is_refused_without_showing_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "hunter2\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = obtain(&SecretSource::File(path.clone()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("mode 0644") && !e.contains("hunter2"), "{e}");
        std::fs::write(&path, "\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = obtain(&SecretSource::File(path)).unwrap_err().to_string();
        assert!(e.contains("is empty"), "{e}");
    }

    #[test]
    fn debug_never_shows_the_secret() {
        assert_eq!(format!("{:?}", from_value("hunter2")), "Secret(..)");
    }
}
