//! The `power-server` command line: its subcommands and flags (clap).
//! [`crate::run`] carries them out.

use crate::auth::Role;
use crate::config::Options;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Platform-agnostic cluster power manager: topology, drivers, power API.
#[derive(Debug, Parser)]
#[command(name = "power-server", version, about)]
// A flag given twice: the last wins, so a wrapper may append to a command.
#[command(args_override_self = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Load and validate the topology and drivers exactly as `serve` would
    /// (same flags, POWER_SERVER_* variables and config file), and report
    /// what was found. Exit 0 when usable, 1 with every error otherwise.
    Check(CheckArgs),
    /// Serve the power API. Prints `listening on http://ADDR:PORT` on stdout
    /// once bound; logs go to stderr. SIGHUP reloads the topology; SIGTERM
    /// or SIGINT stops, letting running drivers finish within the grace
    /// period. Settings: flags, then POWER_SERVER_* variables, then the
    /// config file, then defaults (see docs/api.md).
    Serve(ServeArgs),
    /// Mint a token signed with the server's secret (found as `serve` finds
    /// it) and print it alone on stdout.
    Token(TokenArgs),
    /// Quick start: serve the shipped topology.d/ and its simulated nodes
    /// on loopback, with a fresh secret, and print a ready token and the
    /// client commands to try.
    Demo(DemoArgs),
}

/// Where the config file and the secret are (shared by `serve` and `token`).
#[derive(Debug, Args)]
pub(crate) struct SecretArgs {
    /// YAML config file; its keys are the long flags' names with `_` for
    /// `-` (and the lists `topology_dirs`, `drivers_dirs`), plus
    /// `jwt_shared_secret` [env: POWER_SERVER_CONFIG] [default:
    /// /etc/power-server/config.yaml if it exists]
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// File holding the JWT secret, generated (mode 0600) if absent; used
    /// when neither POWER_SERVER_JWT_SECRET nor the config's
    /// jwt_shared_secret is set [env: POWER_SERVER_SECRET_FILE] [default:
    /// /etc/power-server/jwt-secret for root, else
    /// $XDG_CONFIG_HOME/power-server/jwt-secret]
    #[arg(long, value_name = "FILE")]
    pub(crate) secret_file: Option<PathBuf>,
}

/// `check`'s flags: where `serve` would load from.
#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    #[command(flatten)]
    pub(crate) load: LoadArgs,
    /// YAML config file, as for `serve` [env: POWER_SERVER_CONFIG]
    /// [default: /etc/power-server/config.yaml if it exists]
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
}

/// `serve`'s flags. Each has a config key and a POWER_SERVER_* variable.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address and port to listen on [env: POWER_SERVER_BIND] [default:
    /// 127.0.0.1:6302]
    #[arg(long, value_name = "ADDR:PORT")]
    pub(crate) bind: Option<String>,
    #[command(flatten)]
    pub(crate) load: LoadArgs,
    /// Most driver runs at once [env: POWER_SERVER_CONCURRENCY] [default: 50]
    #[arg(long, value_name = "N")]
    pub(crate) concurrency: Option<usize>,
    /// Append one JSON line per power request to FILE [env:
    /// POWER_SERVER_AUDIT_LOG]
    #[arg(long, value_name = "FILE")]
    pub(crate) audit_log: Option<PathBuf>,
    /// Log filter when RUST_LOG is unset [env: POWER_SERVER_LOG_LEVEL]
    /// [default: info]
    #[arg(long, value_name = "FILTER")]
    pub(crate) log_level: Option<String>,
    /// Log lines as `text`, or `json` (one object a line, for log
    /// shippers) [env: POWER_SERVER_LOG_FORMAT] [default: text]
    #[arg(long, value_name = "FORMAT")]
    pub(crate) log_format: Option<String>,
    /// How long running drivers may finish after SIGTERM [env:
    /// POWER_SERVER_SHUTDOWN_GRACE] [default: 30s]
    #[arg(long, value_name = "DURATION")]
    pub(crate) shutdown_grace: Option<String>,
    /// Most names one hostlist may expand to [env:
    /// POWER_SERVER_HOSTLIST_LIMIT] [default: 100000]
    #[arg(long, value_name = "N")]
    pub(crate) hostlist_limit: Option<usize>,
    /// Most connections served at once; more wait until one ends [env:
    /// POWER_SERVER_MAX_CONNECTIONS] [default: 4096]
    #[arg(long, value_name = "N")]
    pub(crate) max_connections: Option<usize>,
    #[command(flatten)]
    pub(crate) secret: SecretArgs,
}

/// `token`'s flags.
#[derive(Debug, Args)]
pub(crate) struct TokenArgs {
    /// Days until the token expires
    #[arg(long, value_name = "N", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=36500))]
    pub(crate) days: u64,
    /// viewer: list and status only; operator: also on, off, restart
    /// [default: no role, which is full access, as in the reference]
    #[arg(long)]
    pub(crate) role: Option<Role>,
    /// Limit the token to these nodes (a hostlist)
    #[arg(long, value_name = "HOSTLIST")]
    pub(crate) nodes: Option<String>,
    /// Who the token is for; written to the audit log
    #[arg(long, value_name = "NAME")]
    pub(crate) subject: Option<String>,
    #[command(flatten)]
    pub(crate) secret: SecretArgs,
}

/// `demo`'s flags.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Loopback address and port to listen on
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:6302")]
    pub(crate) bind: SocketAddr,
}

/// Where the topology and drivers come from.
#[derive(Debug, Args)]
pub(crate) struct LoadArgs {
    /// A topology directory; repeat for several, lowest precedence first
    /// [env: POWER_SERVER_TOPOLOGY_DIRS, `:`-separated] [default:
    /// /usr/lib/power-server/topology.d, /etc/power-server/topology.d, and
    /// the checkout's topology.d when run from a checkout]
    #[arg(long = "topology-dir", value_name = "DIR")]
    pub(crate) topology_dirs: Vec<PathBuf>,
    /// A drivers directory; repeat for several, lowest precedence first
    /// [env: POWER_SERVER_DRIVERS_DIRS, `:`-separated] [default:
    /// /usr/lib/power-server/drivers, /etc/power-server/drivers, and the
    /// checkout's drivers when run from a checkout]
    #[arg(long = "drivers-dir", value_name = "DIR")]
    pub(crate) drivers_dirs: Vec<PathBuf>,
    /// Where generated driver scripts are written [env:
    /// POWER_SERVER_RUNTIME_DIR] [default: a private directory under the
    /// system temp directory]
    #[arg(long, value_name = "DIR")]
    pub(crate) runtime_dir: Option<PathBuf>,
}

impl LoadArgs {
    /// The flags' layer of settings; directories not given are left to the
    /// environment, the config file and the defaults.
    pub(crate) fn options(self) -> Options {
        Options {
            topology_dirs: Some(self.topology_dirs).filter(|d| !d.is_empty()),
            drivers_dirs: Some(self.drivers_dirs).filter(|d| !d.is_empty()),
            runtime_dir: self.runtime_dir,
            ..Options::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// The help names its environment variables by hand ([env: ...]); each
    /// one named must be one the settings read, and each setting read
    /// from the environment that has a flag must be named.
    #[test]
    fn the_help_names_exactly_the_variables_the_settings_read() {
        let read = std::cell::RefCell::new(std::collections::BTreeSet::new());
        let _ = Options::from_env(|name| {
            read.borrow_mut().insert(name.to_string());
            None
        });
        let mut read = read.into_inner();
        // Read by run::layers, to find the file the other layers come from.
        read.insert("POWER_SERVER_CONFIG".to_string());
        let mut command = Cli::command();
        let mut named = std::collections::BTreeSet::new();
        for sub in ["serve", "check", "token"] {
            let help = command
                .find_subcommand_mut(sub)
                .unwrap()
                .render_long_help()
                .to_string();
            for word in help.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                // (`POWER_SERVER_*` in prose names them all.)
                if word.starts_with("POWER_SERVER_") && word.len() > "POWER_SERVER_".len() {
                    named.insert(word.to_string());
                }
            }
        }
        let unread: Vec<&String> = named.difference(&read).collect();
        assert!(
            unread.is_empty(),
            "the help names variables nothing reads: {unread:?}"
        );
        // Read but with no flag, so not in a flag's help: the secret (no
        // flag, by design) and what only the config or environment sets.
        let flagless = [
            "POWER_SERVER_JWT_SECRET",
            "POWER_SERVER_METRICS_PUBLIC",
            "POWER_SERVER_PROTECTED_GROUPS",
            "POWER_SERVER_POWER_ON_RATE",
        ];
        let unnamed: Vec<&String> = read
            .difference(&named)
            .filter(|v| !flagless.contains(&v.as_str()))
            .collect();
        assert!(unnamed.is_empty(), "read but not in any help: {unnamed:?}");
    }
}
