//! The server's settings: where each one comes from and what it defaults to.
//!
//! Every setting can be given four ways, the first found winning: a
//! command-line flag, an environment variable (`POWER_SERVER_*`), a key in
//! the YAML config file, the default. [`Options`] is one such layer; flags,
//! environment and file each produce one and [`Options::or`] stacks them.
//! [`Settings::resolve`] turns the stack into checked settings.
//!
//! Pure apart from reading the config file: the environment comes in as a
//! lookup function, so tests need not touch the process environment.

use crate::engine::DEFAULT_CONCURRENCY;
use crate::load::LoadSettings;
use crate::pace::Rate;
use crate::paths;
use crate::secret::{self, SecretSource};
use power_proto::hostlist::DEFAULT_LIMIT;
use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The reference's port.
pub const DEFAULT_PORT: u16 = 6302;
/// Where `serve` listens unless told otherwise: loopback only, because a
/// token is a bearer credential sent over plain HTTP (see docs/security.md).
pub const DEFAULT_BIND: &str = "127.0.0.1:6302";
/// The config file read when none is named, if it exists.
pub const DEFAULT_CONFIG: &str = "/etc/power-server/config.yaml";
/// How long running drivers may go on after SIGTERM before they are killed.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Connections served at once, unless set: more wait, unaccepted, until
/// one ends (silent ones are cut after the header timeout).
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// One layer of settings. Every field is optional: absent means "ask the
/// next layer". The config file's keys are these field names.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// `ADDR:PORT` to listen on (`POWER_SERVER_BIND`; default `127.0.0.1:6302`).
    pub bind: Option<String>,
    /// Topology directories, lowest precedence first
    /// (`POWER_SERVER_TOPOLOGY_DIRS`, colon-separated).
    pub topology_dirs: Option<Vec<PathBuf>>,
    /// Drivers directories, lowest precedence first
    /// (`POWER_SERVER_DRIVERS_DIRS`, colon-separated).
    pub drivers_dirs: Option<Vec<PathBuf>>,
    /// Where generated driver scripts go (`POWER_SERVER_RUNTIME_DIR`).
    pub runtime_dir: Option<PathBuf>,
    /// Most driver runs at once (`POWER_SERVER_CONCURRENCY`; the
    /// reference's `num_worker_commands` is accepted in the file).
    #[serde(alias = "num_worker_commands")]
    pub concurrency: Option<usize>,
    /// The JWT secret itself (`POWER_SERVER_JWT_SECRET`; the reference's
    /// key name in the file). Never logged.
    pub jwt_shared_secret: Option<String>,
    /// A file holding the JWT secret, generated if absent
    /// (`POWER_SERVER_SECRET_FILE`).
    pub secret_file: Option<PathBuf>,
    /// Append one JSON line per power request here (`POWER_SERVER_AUDIT_LOG`).
    pub audit_log: Option<PathBuf>,
    /// Log filter when `RUST_LOG` is unset, e.g. `info` or `debug`
    /// (`POWER_SERVER_LOG_LEVEL`).
    pub log_level: Option<String>,
    /// `text` (the default) or `json`, one object per line, for log
    /// shippers (`POWER_SERVER_LOG_FORMAT`).
    pub log_format: Option<String>,
    /// `GET /metrics` without a token (`POWER_SERVER_METRICS_PUBLIC`:
    /// `true` or `false`; default `false`).
    pub metrics_public: Option<bool>,
    /// One more topology file, read after the directories (the reference's
    /// single topology file; a relative path is from the working directory).
    pub topology_config: Option<PathBuf>,
    /// The directory drivers run in (the reference's `scripts_dir`); the
    /// server's working directory by default.
    pub scripts_dir: Option<PathBuf>,
    /// What reading the file noticed: keys of the reference's config taken
    /// differently or ignored. Not a key.
    #[serde(skip)]
    pub warnings: Vec<String>,
    /// How long running drivers may finish after SIGTERM, e.g. `30s`
    /// (`POWER_SERVER_SHUTDOWN_GRACE`).
    pub shutdown_grace: Option<String>,
    /// Most names one hostlist may expand to (`POWER_SERVER_HOSTLIST_LIMIT`;
    /// default 100000).
    pub hostlist_limit: Option<usize>,
    /// Most connections served at once (`POWER_SERVER_MAX_CONNECTIONS`;
    /// default 4096).
    pub max_connections: Option<usize>,
    /// Groups whose nodes refuse power off and restart unless the request
    /// says `force=true` (`POWER_SERVER_PROTECTED_GROUPS`, comma-separated;
    /// default none).
    pub protected_groups: Option<Vec<String>>,
    /// At most so many nodes of all platforms switched on per period, e.g.
    /// `50/min` (`POWER_SERVER_POWER_ON_RATE`; default: not paced).
    pub power_on_rate: Option<String>,
}

/// Why settings could not be worked out. Never carries a secret.
#[derive(Debug)]
pub enum ConfigError {
    /// The config file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// What failed.
        error: std::io::Error,
    },
    /// The config file is not valid YAML for [`Options`].
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        error: String,
    },
    /// A setting of the reference's that this server does not offer.
    Unsupported {
        /// The setting.
        setting: String,
        /// The value given.
        value: String,
        /// Why, and what to do instead.
        why: &'static str,
    },
    /// A setting's value is unusable.
    Invalid {
        /// The setting (key or environment variable).
        setting: String,
        /// The value given.
        value: String,
        /// What would have been usable.
        expected: &'static str,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read { path, error } => {
                write!(f, "cannot read config file {}: {error}", path.display())
            }
            Self::Parse { path, error } => write!(f, "config file {}: {error}", path.display()),
            Self::Unsupported {
                setting,
                value,
                why,
            } => write!(f, "{setting}: {value:?}: {why}"),
            Self::Invalid {
                setting,
                value,
                expected,
            } => write!(f, "{setting}: {value:?} is not usable: expected {expected}"),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Options {
    /// This layer, with what it leaves unset taken from `lower`.
    #[must_use]
    pub fn or(self, lower: Options) -> Options {
        Options {
            bind: self.bind.or(lower.bind),
            topology_dirs: self.topology_dirs.or(lower.topology_dirs),
            drivers_dirs: self.drivers_dirs.or(lower.drivers_dirs),
            runtime_dir: self.runtime_dir.or(lower.runtime_dir),
            concurrency: self.concurrency.or(lower.concurrency),
            jwt_shared_secret: self.jwt_shared_secret.or(lower.jwt_shared_secret),
            secret_file: self.secret_file.or(lower.secret_file),
            audit_log: self.audit_log.or(lower.audit_log),
            log_level: self.log_level.or(lower.log_level),
            log_format: self.log_format.or(lower.log_format),
            metrics_public: self.metrics_public.or(lower.metrics_public),
            topology_config: self.topology_config.or(lower.topology_config),
            scripts_dir: self.scripts_dir.or(lower.scripts_dir),
            warnings: [self.warnings, lower.warnings].concat(),
            shutdown_grace: self.shutdown_grace.or(lower.shutdown_grace),
            hostlist_limit: self.hostlist_limit.or(lower.hostlist_limit),
            max_connections: self.max_connections.or(lower.max_connections),
            protected_groups: self.protected_groups.or(lower.protected_groups),
            power_on_rate: self.power_on_rate.or(lower.power_on_rate),
        }
    }

    /// The layer given by `POWER_SERVER_*` variables, looked up with `var`.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Options, ConfigError> {
        let get = |name: &str| var(name).filter(|v| !v.is_empty());
        let dirs = |name: &str| get(name).map(|v| v.split(':').map(PathBuf::from).collect());
        let number = |name: &str| -> Result<Option<usize>, ConfigError> {
            get(name)
                .map(|v| {
                    v.parse().map_err(|_| ConfigError::Invalid {
                        setting: name.to_string(),
                        value: v,
                        expected: "a whole number",
                    })
                })
                .transpose()
        };
        Ok(Options {
            bind: get("POWER_SERVER_BIND"),
            topology_dirs: dirs("POWER_SERVER_TOPOLOGY_DIRS"),
            drivers_dirs: dirs("POWER_SERVER_DRIVERS_DIRS"),
            runtime_dir: get("POWER_SERVER_RUNTIME_DIR").map(PathBuf::from),
            concurrency: number("POWER_SERVER_CONCURRENCY")?,
            jwt_shared_secret: get("POWER_SERVER_JWT_SECRET"),
            secret_file: get("POWER_SERVER_SECRET_FILE").map(PathBuf::from),
            audit_log: get("POWER_SERVER_AUDIT_LOG").map(PathBuf::from),
            log_level: get("POWER_SERVER_LOG_LEVEL"),
            log_format: get("POWER_SERVER_LOG_FORMAT"),
            metrics_public: match get("POWER_SERVER_METRICS_PUBLIC").as_deref() {
                None => None,
                Some("true") => Some(true),
                Some("false") => Some(false),
                Some(other) => {
                    return Err(invalid(
                        "POWER_SERVER_METRICS_PUBLIC",
                        other,
                        "true or false",
                    ))
                }
            },
            shutdown_grace: get("POWER_SERVER_SHUTDOWN_GRACE"),
            hostlist_limit: number("POWER_SERVER_HOSTLIST_LIMIT")?,
            max_connections: number("POWER_SERVER_MAX_CONNECTIONS")?,
            protected_groups: get("POWER_SERVER_PROTECTED_GROUPS").map(|v| {
                v.split(',')
                    .map(|g| g.trim().to_string())
                    .filter(|g| !g.is_empty())
                    .collect()
            }),
            power_on_rate: get("POWER_SERVER_POWER_ON_RATE"),
            topology_config: None,
            scripts_dir: None,
            warnings: Vec::new(),
        })
    }

    /// Parse a config file's text (`path` is for messages). An empty file
    /// is an empty layer.
    ///
    /// The reference's config (Figaro's `application.yaml`) loads too, with
    /// a warning for each key taken differently or ignored (see
    /// `migrate`); its `remote_url` is refused.
    pub fn parse(text: &str, path: &Path) -> Result<Options, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Options::default());
        }
        let parse_error = |e: serde_yaml::Error| ConfigError::Parse {
            path: path.to_path_buf(),
            error: e.to_string(),
        };
        let mut value: serde_yaml::Value = serde_yaml::from_str(text).map_err(parse_error)?;
        let mut warnings = Vec::new();
        let changed = match &mut value {
            serde_yaml::Value::Mapping(map) => migrate(map, &mut warnings)?,
            _ => false,
        };
        // Parsed from the text where nothing changed: its errors then say
        // where (line and column).
        let mut options: Options = if changed {
            serde_yaml::from_value(value).map_err(parse_error)?
        } else {
            serde_yaml::from_str(text).map_err(parse_error)?
        };
        options.warnings = warnings
            .into_iter()
            .map(|w| format!("config file {}: {w}", path.display()))
            .collect();
        Ok(options)
    }

    /// The config file to read: `explicit` (which must exist), else
    /// [`DEFAULT_CONFIG`] if it exists, else none.
    pub fn file_path(explicit: Option<&Path>) -> Option<PathBuf> {
        match explicit {
            Some(p) => Some(p.to_path_buf()),
            None if Path::new(DEFAULT_CONFIG).exists() => Some(PathBuf::from(DEFAULT_CONFIG)),
            None => None,
        }
    }

    /// Read the config file at `path`, if any; no path is an empty layer.
    pub fn read_file(path: Option<&Path>) -> Result<Options, ConfigError> {
        let Some(path) = path else {
            return Ok(Options::default());
        };
        let path = path.to_path_buf();
        let text = std::fs::read_to_string(&path).map_err(|error| ConfigError::Read {
            path: path.clone(),
            error,
        })?;
        Options::parse(&text, &path)
    }
}

/// Figaro's environment sections in the reference's config.
const FIGARO_ENVIRONMENTS: [&str; 3] = ["development", "test", "production"];

/// Take the reference's config keys into this server's: a quoted number
/// for `num_worker_commands` (as its sample has it), `log_level: fatal`
/// (errors only), `topology_config` and `scripts_dir` (kept, with a word
/// on how they are read), and Figaro's per-environment sections and a lone
/// `remote_cluster` (dropped). Each is a warning. `remote_url` (upstream
/// mode) is refused. Keys left empty, as in its template, are dropped.
/// Says whether anything changed.
fn migrate(map: &mut serde_yaml::Mapping, warnings: &mut Vec<String>) -> Result<bool, ConfigError> {
    use serde_yaml::Value;
    let keys = map.len();
    if let Some(url) = map.get("remote_url").filter(|v| !v.is_null()) {
        return Err(ConfigError::Unsupported {
            setting: "remote_url".into(),
            value: scalar_text(url),
            why: "upstream mode (the reference's nodeattr-server inventory) is not supported: list the nodes in topology fragments instead",
        });
    }
    // Empty keys of the reference's template: nothing set.
    map.retain(|_, v| !v.is_null());
    for env in FIGARO_ENVIRONMENTS {
        if map.remove(env).is_some() {
            warnings.push(format!(
                "the `{env}:` section is ignored: Figaro's per-environment settings do not apply here (set the keys at the top level)"
            ));
        }
    }
    if map.remove("remote_cluster").is_some() {
        warnings.push(
            "remote_cluster is ignored: it belongs to upstream mode (remote_url), which is not supported"
                .into(),
        );
    }
    let mut changed = false;
    for key in ["num_worker_commands", "concurrency"] {
        if let Some(Value::String(text)) = map.get(key) {
            if let Ok(n) = text.trim().parse::<u64>() {
                map.insert(key.into(), Value::Number(n.into()));
                changed = true;
            }
        }
    }
    if let Some(Value::String(level)) = map.get("log_level") {
        if matches!(level.to_ascii_lowercase().as_str(), "fatal" | "unknown") {
            warnings.push(format!(
                "log_level: {level} is read as `error` (errors only)"
            ));
            map.insert("log_level".into(), Value::String("error".into()));
            changed = true;
        }
    }
    if let Some(file) = map.get("topology_config") {
        warnings.push(format!(
            "topology_config: {} is read as one more topology fragment, after the topology directories (a relative path is from the server's working directory)",
            scalar_text(file)
        ));
    }
    if let Some(dir) = map.get("scripts_dir") {
        warnings.push(format!(
            "scripts_dir: drivers run in {} (a relative path is from the server's working directory)",
            scalar_text(dir)
        ));
    }
    // Keys dropped (empty ones, sections) or values rewritten.
    Ok(changed || map.len() != keys)
}

fn scalar_text(value: &serde_yaml::Value) -> String {
    match value {
        serde_yaml::Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

/// Warn (through `tracing`) if the config file at `path` may be read by
/// others: call it when the file holds `jwt_shared_secret`.
pub fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o044 != 0 {
            tracing::warn!(
                "config file {} holds jwt_shared_secret and is readable by others: chmod 600 it",
                path.display()
            );
        }
    }
}

/// Everything `serve` needs, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where to listen.
    pub bind: SocketAddr,
    /// Where topology and drivers come from.
    pub load: LoadSettings,
    /// Most driver runs at once.
    pub concurrency: usize,
    /// Where the JWT secret comes from.
    pub secret: SecretSource,
    /// The audit log, if any.
    pub audit_log: Option<PathBuf>,
    /// Log filter used when `RUST_LOG` is unset.
    pub log_level: String,
    /// How log lines are written.
    pub log_format: LogFormat,
    /// `GET /metrics` answers without a token.
    pub metrics_public: bool,
    /// Where drivers run (the server's working directory when `None`).
    pub working_dir: Option<PathBuf>,
    /// What reading the config noticed, for the log (and `check`).
    pub warnings: Vec<String>,
    /// How long running drivers may finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// Most names one hostlist may expand to.
    pub hostlist_limit: usize,
    /// Most connections served at once.
    pub max_connections: usize,
    /// At most so many nodes switched on per period, over all platforms.
    pub power_on_rate: Option<Rate>,
}

/// How the server writes its log lines (on stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// `LEVEL target: message key=value ...`, without a timestamp of its
    /// own under systemd's journal, which adds one.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message`
    /// and each field, for log shippers.
    Json,
}

/// What settings depend on beyond their layers: where the secret file
/// goes by default depends on the user (root or not) and on
/// `XDG_CONFIG_HOME` and `HOME`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Host {
    /// Running as root.
    pub root: bool,
    /// `XDG_CONFIG_HOME`.
    pub xdg_config_home: Option<std::ffi::OsString>,
    /// `HOME`.
    pub home: Option<std::ffi::OsString>,
}

impl Host {
    /// This process's.
    pub fn current() -> Host {
        Host {
            root: nix::unistd::geteuid().is_root(),
            xdg_config_home: std::env::var_os("XDG_CONFIG_HOME"),
            home: std::env::var_os("HOME"),
        }
    }

    /// The environment variable `key` as this host has it: those it keeps
    /// (all the defaults read), else none.
    fn var(&self, key: &str) -> Option<std::ffi::OsString> {
        match key {
            "XDG_CONFIG_HOME" => self.xdg_config_home.clone(),
            "HOME" => self.home.clone(),
            _ => None,
        }
    }
}

impl Settings {
    /// Check a stack of layers and fill in the defaults, those that depend
    /// on the user from `host`.
    pub fn resolve(options: Options, host: &Host) -> Result<Settings, ConfigError> {
        let bind_text = options.bind.unwrap_or_else(|| DEFAULT_BIND.to_string());
        let bind = parse_bind(&bind_text)?;
        let concurrency = options.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
        if concurrency == 0 {
            return Err(invalid("concurrency", "0", "at least 1"));
        }
        let shutdown_grace = match options.shutdown_grace {
            None => DEFAULT_SHUTDOWN_GRACE,
            Some(text) => power_proto::duration::parse(&text)
                .map_err(|_| invalid("shutdown_grace", &text, "a duration such as 30s or 2m"))?,
        };
        let hostlist_limit = options.hostlist_limit.unwrap_or(DEFAULT_LIMIT);
        if hostlist_limit == 0 {
            return Err(invalid("hostlist_limit", "0", "at least 1"));
        }
        let max_connections = options.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if max_connections == 0 {
            return Err(invalid("max_connections", "0", "at least 1"));
        }
        let protected_groups = options.protected_groups.unwrap_or_default();
        if let Some(bad) = protected_groups.iter().find(|g| g.trim().is_empty()) {
            return Err(invalid("protected_groups", bad, "a list of group names"));
        }
        let power_on_rate = match options.power_on_rate.as_deref() {
            None => None,
            Some(text) => Some(
                Rate::parse(text)
                    .map_err(|_| invalid("power_on_rate", text, "a rate such as 50/min"))?,
            ),
        };
        Ok(Settings {
            power_on_rate,
            bind,
            load: LoadSettings {
                topology_files: options.topology_config.into_iter().collect(),
                protected_groups,
                ..load_settings(
                    options.topology_dirs,
                    options.drivers_dirs,
                    options.runtime_dir,
                )
            },
            working_dir: options.scripts_dir,
            warnings: options.warnings,
            concurrency,
            secret: SecretSource::from_layers(
                options.jwt_shared_secret,
                options.secret_file,
                || secret::default_file(|k| host.var(k), host.root),
            ),
            audit_log: options.audit_log,
            log_level: options.log_level.unwrap_or_else(|| "info".into()),
            log_format: match options.log_format.as_deref() {
                None | Some("text") => LogFormat::Text,
                Some("json") => LogFormat::Json,
                Some(other) => return Err(invalid("log_format", other, "text or json")),
            },
            metrics_public: options.metrics_public.unwrap_or(false),
            shutdown_grace,
            hostlist_limit,
            max_connections,
        })
    }
}

/// Topology and drivers directories: those given, else the packaged and
/// admin directories plus the checkout's own when run from one.
pub fn load_settings(
    topology_dirs: Option<Vec<PathBuf>>,
    drivers_dirs: Option<Vec<PathBuf>>,
    runtime_dir: Option<PathBuf>,
) -> LoadSettings {
    let topology_dirs = topology_dirs.filter(|d| !d.is_empty());
    LoadSettings {
        topology_named: topology_dirs.is_some(),
        topology_files: Vec::new(),
        protected_groups: Vec::new(),
        topology_dirs: topology_dirs
            .unwrap_or_else(|| paths::defaults(&paths::SYSTEM_TOPOLOGY_DIRS, "topology.d")),
        drivers_dirs: drivers_dirs
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| paths::defaults(&paths::SYSTEM_DRIVERS_DIRS, "drivers")),
        runtime_dir,
    }
}

/// `ADDR:PORT`, or `ADDR` alone for the default port.
fn parse_bind(text: &str) -> Result<SocketAddr, ConfigError> {
    let expected = "ADDR:PORT, e.g. 127.0.0.1:6302 or [::1]:6302";
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    text.parse::<std::net::IpAddr>()
        .map(|ip| SocketAddr::new(ip, DEFAULT_PORT))
        .map_err(|_| invalid("bind", text, expected))
}

fn invalid(setting: &str, value: &str, expected: &'static str) -> ConfigError {
    ConfigError::Invalid {
        setting: setting.into(),
        value: value.into(),
        expected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn the_default_secret_file_is_the_host_s() {
        let user = Host {
            root: false,
            xdg_config_home: None,
            home: Some("/home/u".into()),
        };
        let s = Settings::resolve(Options::default(), &user).unwrap();
        assert_eq!(
            s.secret,
            SecretSource::File("/home/u/.config/power-server/jwt-secret".into())
        );
        let xdg = Host {
            xdg_config_home: Some("/x".into()),
            ..user.clone()
        };
        let s = Settings::resolve(Options::default(), &xdg).unwrap();
        assert_eq!(
            s.secret,
            SecretSource::File("/x/power-server/jwt-secret".into())
        );
        let root = Host { root: true, ..user };
        let s = Settings::resolve(Options::default(), &root).unwrap();
        assert_eq!(
            s.secret,
            SecretSource::File(secret::SYSTEM_SECRET_FILE.into())
        );
    }

    /// The reference's config loads: each key it has that this server
    /// takes differently or not at all is one warning, pinned here.
    #[test]
    fn the_reference_config_loads_with_a_warning_per_difference() {
        let text = include_str!("../tests/fixtures/reference/application.yaml");
        let o = Options::parse(text, Path::new("application.yaml")).unwrap();
        assert_eq!(o.concurrency, Some(50), "a quoted number");
        assert_eq!(o.log_level.as_deref(), Some("error"));
        assert_eq!(o.topology_config, Some(PathBuf::from("topology.yaml")));
        assert_eq!(o.scripts_dir, Some(PathBuf::from("scripts")));
        assert_eq!(o.jwt_shared_secret, None, "an empty key sets nothing");
        let at = "config file application.yaml: ";
        assert_eq!(
            o.warnings,
            [
                "the `development:` section is ignored: Figaro's per-environment settings do not apply here (set the keys at the top level)",
                "the `test:` section is ignored: Figaro's per-environment settings do not apply here (set the keys at the top level)",
                "remote_cluster is ignored: it belongs to upstream mode (remote_url), which is not supported",
                "log_level: fatal is read as `error` (errors only)",
                "topology_config: topology.yaml is read as one more topology fragment, after the topology directories (a relative path is from the server's working directory)",
                "scripts_dir: drivers run in scripts (a relative path is from the server's working directory)",
            ]
            .map(|w| format!("{at}{w}"))
        );
        let s = Settings::resolve(o, &Host::default()).unwrap();
        assert_eq!(s.concurrency, 50);
        assert_eq!(s.load.topology_files, [PathBuf::from("topology.yaml")]);
        assert_eq!(s.working_dir, Some(PathBuf::from("scripts")));
        assert_eq!(s.warnings.len(), 6);
    }

    #[test]
    fn upstream_mode_is_refused_saying_so() {
        let e = Options::parse(
            "remote_url: http://nodeattr:6303
remote_cluster: c1
",
            Path::new("c.yaml"),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "remote_url: \"http://nodeattr:6303\": upstream mode (the reference's nodeattr-server \
             inventory) is not supported: list the nodes in topology fragments instead"
        );
        // A config of this server's own keys parses as before, with lines.
        let e = Options::parse(
            "bind: x
concurency: 3
",
            Path::new("c.yaml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
    }

    #[test]
    fn flags_beat_environment_beat_file_beat_defaults() {
        let flags = Options {
            bind: Some("127.0.0.1:1".into()),
            ..Options::default()
        };
        let from_env = Options::from_env(env(&[
            ("POWER_SERVER_BIND", "127.0.0.1:2"),
            ("POWER_SERVER_CONCURRENCY", "7"),
        ]))
        .unwrap();
        let file = Options::parse(
            "bind: 127.0.0.1:3\nconcurrency: 9\nnum_worker_commands: 9\nlog_level: debug\n",
            Path::new("c.yaml"),
        );
        // Both a key and its alias: serde refuses the duplicate field.
        assert!(file.is_err());
        let file = Options::parse(
            "bind: 127.0.0.1:3\nconcurrency: 9\nlog_level: debug\n",
            Path::new("c"),
        )
        .unwrap();
        let s = Settings::resolve(flags.or(from_env).or(file), &Host::default()).unwrap();
        assert_eq!(s.bind, "127.0.0.1:1".parse().unwrap());
        assert_eq!(s.concurrency, 7);
        assert_eq!(s.log_level, "debug");
        assert_eq!(s.shutdown_grace, DEFAULT_SHUTDOWN_GRACE);
        assert_eq!(s.hostlist_limit, DEFAULT_LIMIT);
    }

    #[test]
    fn the_reference_key_names_are_accepted() {
        let o = Options::parse(
            "jwt_shared_secret: s3cret\nnum_worker_commands: 5\n",
            Path::new("c"),
        )
        .unwrap();
        assert_eq!(o.concurrency, Some(5));
        let s = Settings::resolve(o, &Host::default()).unwrap();
        assert_eq!(s.secret, SecretSource::Value("s3cret".into()));
    }

    #[test]
    fn defaults_listen_on_loopback_port_6302() {
        let s = Settings::resolve(Options::default(), &Host::default()).unwrap();
        assert_eq!(s.bind, "127.0.0.1:6302".parse().unwrap());
        assert_eq!(s.concurrency, DEFAULT_CONCURRENCY);
        assert!(matches!(s.secret, SecretSource::File(_)));
    }

    #[test]
    fn bad_values_name_the_setting_and_what_was_expected() {
        let e = Settings::resolve(
            Options {
                bind: Some("localhost:x".into()),
                ..Options::default()
            },
            &Host::default(),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "bind: \"localhost:x\" is not usable: expected ADDR:PORT, e.g. 127.0.0.1:6302 or [::1]:6302"
        );
        let e = Options::from_env(env(&[("POWER_SERVER_CONCURRENCY", "lots")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("POWER_SERVER_CONCURRENCY") && e.contains("whole number"));
        let e = Options::parse("bnid: x\n", Path::new("/etc/c.yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("config file /etc/c.yaml: ") && e.contains("bnid"),
            "{e}"
        );
        let e = Settings::resolve(
            Options {
                shutdown_grace: Some("soon".into()),
                ..Options::default()
            },
            &Host::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("shutdown_grace"), "{e}");
    }

    #[test]
    fn an_address_alone_gets_the_default_port() {
        assert_eq!(
            parse_bind("0.0.0.0").unwrap(),
            "0.0.0.0:6302".parse().unwrap()
        );
    }

    #[test]
    fn protected_groups_come_from_the_file_or_the_environment() {
        let file = Options::parse("protected_groups: [infra, login]\n", Path::new("c")).unwrap();
        let s = Settings::resolve(file.clone(), &Host::default()).unwrap();
        assert_eq!(s.load.protected_groups, ["infra", "login"]);
        let from_env =
            Options::from_env(env(&[("POWER_SERVER_PROTECTED_GROUPS", "storage, ,mgmt")])).unwrap();
        let s = Settings::resolve(from_env.or(file), &Host::default()).unwrap();
        assert_eq!(
            s.load.protected_groups,
            ["storage", "mgmt"],
            "the environment wins"
        );
        let none = Settings::resolve(Options::default(), &Host::default()).unwrap();
        assert!(none.load.protected_groups.is_empty());
        let e = Settings::resolve(
            Options {
                protected_groups: Some(vec![String::new()]),
                ..Options::default()
            },
            &Host::default(),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("protected_groups: "), "{e}");
    }

    #[test]
    fn power_on_rate_is_a_rate() {
        let file = Options::parse("power_on_rate: 50/min\n", Path::new("c")).unwrap();
        let s = Settings::resolve(file, &Host::default()).unwrap();
        assert_eq!(s.power_on_rate, Some(Rate::parse("50/min").unwrap()));
        let from_env = Options::from_env(env(&[("POWER_SERVER_POWER_ON_RATE", "fast")])).unwrap();
        let e = Settings::resolve(from_env, &Host::default()).unwrap_err();
        assert!(e.to_string().starts_with("power_on_rate: "), "{e}");
        assert!(e.to_string().contains("a rate such as 50/min"), "{e}");
        let none = Settings::resolve(Options::default(), &Host::default()).unwrap();
        assert_eq!(none.power_on_rate, None);
    }

    #[test]
    fn environment_lists_are_colon_separated() {
        let o = Options::from_env(env(&[("POWER_SERVER_TOPOLOGY_DIRS", "/a:/b")])).unwrap();
        assert_eq!(
            o.topology_dirs,
            Some(vec![PathBuf::from("/a"), PathBuf::from("/b")])
        );
    }
}
