//! Where the client's settings come from: the server's base URL, the
//! token, and `max_nodes` (how many nodes an action may touch without a
//! confirmation).
//!
//! Precedence, lowest first: a config file (the reference client's keys
//! `base_url` and `jwt_token`, and `max_nodes`), then `POWER_URL` /
//! `POWER_TOKEN` / `POWER_MAX_NODES`, then `--url` / `--token`. The config file is the first found among `--config
//! FILE`, `$POWER_CONFIG`, `$XDG_CONFIG_HOME/power/config.yaml` (else
//! `~/.config/power/config.yaml`), `/etc/power/config.yaml` and where the
//! reference client kept it, `/opt/flight/opt/power-client/etc/config.yaml`;
//! a file named explicitly (flag or variable) must exist.
//!
//! [`merge`] is pure; [`load`] reads the file.

use crate::exit::Failure;
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// The URL used when nothing else says: the reference server's port.
pub const DEFAULT_URL: &str = "http://localhost:6302";

/// The system-wide config file.
pub const SYSTEM_CONFIG: &str = "/etc/power/config.yaml";

/// Where the reference client (OpenFlight's Ruby power-client) kept its
/// config: read last, so a machine moved from it keeps working.
pub const REFERENCE_CONFIG: &str = "/opt/flight/opt/power-client/etc/config.yaml";

/// The resolved settings.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    /// The server's base URL, without a trailing `/`.
    pub base_url: String,
    /// The token, if any was configured.
    pub token: Option<String>,
    /// An action touching more nodes than this asks for confirmation
    /// (`--yes` gives it); `None`: never.
    pub max_nodes: Option<usize>,
}

// By hand, so the token never reaches a log or an error message.
impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("base_url", &self.base_url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("max_nodes", &self.max_nodes)
            .finish()
    }
}

/// The process environment, as far as settings are concerned. Empty values
/// count as unset.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// `$POWER_CONFIG`: the config file to read.
    pub power_config: Option<PathBuf>,
    /// `$POWER_URL`.
    pub power_url: Option<String>,
    /// `$POWER_TOKEN`.
    pub power_token: Option<String>,
    /// `$POWER_MAX_NODES`.
    pub power_max_nodes: Option<String>,
    /// `$XDG_CONFIG_HOME`.
    pub xdg_config_home: Option<PathBuf>,
    /// `$HOME`.
    pub home: Option<PathBuf>,
}

impl Env {
    /// Reads the variables from the process environment.
    pub fn from_process() -> Env {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let string = |name: &str| var(name).and_then(|v| v.into_string().ok());
        Env {
            power_config: var("POWER_CONFIG").map(PathBuf::from),
            power_url: string("POWER_URL"),
            power_token: string("POWER_TOKEN"),
            power_max_nodes: string("POWER_MAX_NODES"),
            xdg_config_home: var("XDG_CONFIG_HOME").map(PathBuf::from),
            home: var("HOME").map(PathBuf::from),
        }
    }
}

/// What the command line says about settings.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// `--config FILE`.
    pub config: Option<PathBuf>,
    /// `--url URL`.
    pub url: Option<String>,
    /// `--token JWT`.
    pub token: Option<String>,
}

/// A config file's contents. Keys other than these (the reference's `debug`,
/// for one) are accepted and ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct FileSettings {
    /// The server's base URL.
    pub base_url: Option<String>,
    /// The token.
    pub jwt_token: Option<String>,
    /// Most nodes an action may touch without a confirmation.
    pub max_nodes: Option<usize>,
}

/// Config files to try, in order, each with whether it must exist.
pub fn candidates(flags: &Flags, env: &Env) -> Vec<(PathBuf, bool)> {
    if let Some(path) = &flags.config {
        return vec![(path.clone(), true)];
    }
    if let Some(path) = &env.power_config {
        return vec![(path.clone(), true)];
    }
    let user = env
        .xdg_config_home
        .clone()
        .or_else(|| env.home.as_ref().map(|home| home.join(".config")));
    user.map(|dir| (dir.join("power").join("config.yaml"), false))
        .into_iter()
        .chain([
            (PathBuf::from(SYSTEM_CONFIG), false),
            (PathBuf::from(REFERENCE_CONFIG), false),
        ])
        .collect()
}

/// Parses a config file's text; `path` is for the message.
pub fn parse_file(path: &Path, text: &str) -> Result<FileSettings, Failure> {
    if text.trim().is_empty() {
        return Ok(FileSettings::default());
    }
    serde_yaml::from_str(text).map_err(|e| {
        Failure::Config(format!(
            "{}: {e}: expected a YAML map with base_url, jwt_token and max_nodes",
            path.display()
        ))
    })
}

/// Combines the three layers. Pure.
pub fn merge(file: FileSettings, env: &Env, flags: &Flags) -> Result<Settings, Failure> {
    let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.trim().is_empty());
    let base_url = nonempty(&flags.url)
        .or_else(|| nonempty(&env.power_url))
        .or_else(|| nonempty(&file.base_url))
        .unwrap_or_else(|| DEFAULT_URL.to_string());
    let token = nonempty(&flags.token)
        .or_else(|| nonempty(&env.power_token))
        .or_else(|| nonempty(&file.jwt_token))
        .map(|t| t.trim().to_string());
    let max_nodes = match nonempty(&env.power_max_nodes) {
        Some(text) => Some(text.trim().parse::<usize>().map_err(|_| {
            Failure::Config(format!(
                "POWER_MAX_NODES: {text:?} is not usable: expected a whole number of nodes"
            ))
        })?),
        None => file.max_nodes,
    };
    Ok(Settings {
        base_url: base_url.trim().trim_end_matches('/').to_string(),
        token,
        max_nodes,
    })
}

/// Finds and reads the config file, then merges the layers.
pub fn load(flags: &Flags, env: &Env) -> Result<Settings, Failure> {
    let mut file = FileSettings::default();
    for (path, required) in candidates(flags, env) {
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                file = parse_file(&path, &text)?;
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => continue,
            Err(e) => {
                return Err(Failure::Config(format!(
                    "cannot read config file {}: {}",
                    path.display(),
                    crate::describe_io(&e)
                )))
            }
        }
    }
    merge(file, env, flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(url: &str, token: &str) -> FileSettings {
        FileSettings {
            base_url: Some(url.into()),
            jwt_token: Some(token.into()),
            max_nodes: None,
        }
    }

    #[test]
    fn flags_beat_env_beat_file() {
        let env = Env {
            power_url: Some("http://env:1/".into()),
            power_token: Some("env-token".into()),
            ..Env::default()
        };
        let flags = Flags {
            url: Some("http://flag:2".into()),
            token: Some("flag-token".into()),
            ..Flags::default()
        };
        let s = merge(file("http://file:3", "file-token"), &env, &flags).unwrap();
        assert_eq!(
            (&*s.base_url, s.token.as_deref()),
            ("http://flag:2", Some("flag-token"))
        );
        let s = merge(file("http://file:3", "file-token"), &env, &Flags::default()).unwrap();
        assert_eq!(
            (&*s.base_url, s.token.as_deref()),
            ("http://env:1", Some("env-token"))
        );
        let s = merge(
            file("http://file:3", "file-token"),
            &Env::default(),
            &Flags::default(),
        )
        .unwrap();
        assert_eq!(
            (&*s.base_url, s.token.as_deref()),
            ("http://file:3", Some("file-token"))
        );
        let s = merge(FileSettings::default(), &Env::default(), &Flags::default()).unwrap();
        assert_eq!((&*s.base_url, s.token), (DEFAULT_URL, None));
    }

    #[test]
    fn empty_values_count_as_unset() {
        let env = Env {
            power_token: Some(" ".into()),
            ..Env::default()
        };
        let s = merge(file("", "file-token"), &env, &Flags::default()).unwrap();
        assert_eq!(
            (&*s.base_url, s.token.as_deref()),
            (DEFAULT_URL, Some("file-token"))
        );
    }

    #[test]
    fn config_locations_in_order() {
        let home = Env {
            home: Some("/home/u".into()),
            ..Env::default()
        };
        let paths = candidates(&Flags::default(), &home);
        assert_eq!(
            paths,
            [
                (PathBuf::from("/home/u/.config/power/config.yaml"), false),
                (PathBuf::from(SYSTEM_CONFIG), false),
                (PathBuf::from(REFERENCE_CONFIG), false)
            ]
        );
        let xdg = Env {
            xdg_config_home: Some("/x".into()),
            ..home.clone()
        };
        assert_eq!(
            candidates(&Flags::default(), &xdg)[0].0,
            PathBuf::from("/x/power/config.yaml")
        );
        let env = Env {
            power_config: Some("/env.yaml".into()),
            ..xdg
        };
        assert_eq!(
            candidates(&Flags::default(), &env),
            [(PathBuf::from("/env.yaml"), true)]
        );
        let flags = Flags {
            config: Some("/flag.yaml".into()),
            ..Flags::default()
        };
        assert_eq!(
            candidates(&flags, &env),
            [(PathBuf::from("/flag.yaml"), true)]
        );
    }

    #[test]
    fn parses_the_reference_config() {
        let text = "base_url: http://power:6302\njwt_token: abc\ndebug: false\n";
        assert_eq!(
            parse_file(Path::new("c.yaml"), text).unwrap(),
            file("http://power:6302", "abc")
        );
        assert_eq!(
            parse_file(Path::new("c.yaml"), "\n").unwrap(),
            FileSettings::default()
        );
        let err = parse_file(Path::new("c.yaml"), "- a list\n").unwrap_err();
        assert!(err.to_string().starts_with("c.yaml: "), "{err}");
    }

    #[test]
    fn max_nodes_from_the_file_or_the_environment() {
        let text = "base_url: http://p:6302\nmax_nodes: 100\n";
        let from_file = parse_file(Path::new("c.yaml"), text).unwrap();
        assert_eq!(from_file.max_nodes, Some(100));
        let s = merge(from_file.clone(), &Env::default(), &Flags::default()).unwrap();
        assert_eq!(s.max_nodes, Some(100));
        let env = Env {
            power_max_nodes: Some("7".into()),
            ..Env::default()
        };
        assert_eq!(
            merge(from_file.clone(), &env, &Flags::default())
                .unwrap()
                .max_nodes,
            Some(7)
        );
        let bad = Env {
            power_max_nodes: Some("lots".into()),
            ..Env::default()
        };
        let e = merge(from_file, &bad, &Flags::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "POWER_MAX_NODES: \"lots\" is not usable: expected a whole number of nodes"
        );
        assert_eq!(e.exit(), crate::exit::Exit::Usage);
        let none = merge(FileSettings::default(), &Env::default(), &Flags::default()).unwrap();
        assert_eq!(none.max_nodes, None);
    }

    #[test]
    fn debug_hides_the_token() {
        let s = merge(
            file("http://a", "secret"),
            &Env::default(),
            &Flags::default(),
        )
        .unwrap();
        assert!(!format!("{s:?}").contains("secret"));
    }
}
