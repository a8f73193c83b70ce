//! The command line, defined once: parsing, `--help`, the shell completions
//! and the man page all come from these types.
//!
//! Pure: no I/O beyond what clap does when asked for help.

use clap::{Args, CommandFactory, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

/// What `power` was asked to do.
#[derive(Debug, Parser)]
#[command(
    name = "power",
    version,
    about = "List cluster nodes and report or change their power state through a power server",
    long_about = "List cluster nodes and report or change their power state through a power \
        server.\n\nNODES are hostlist expressions such as `node[01-08],login1`; with --groups \
        they name groups instead.",
    after_help = EXIT_CODES,
    after_long_help = AFTER_LONG_HELP,
)]
pub struct Cli {
    /// Options every subcommand takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The subcommand; none prints the help.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The exit-code table, written once for `--help`, `--help` long and the man page.
macro_rules! exit_codes {
    () => {
        "\
Exit codes:
  0  every node did what was asked
  1  some node failed, was unknown or missing (or, with --wait, did not reach the state)
  2  usage error: bad arguments, bad hostlist, bad config file
  3  the token was refused (missing, expired, not signed by this server, not allowed)
  4  the server could not be reached or answered nonsense
  5  not confirmed: more nodes than max_nodes, and no --yes (nothing was done)"
    };
}

/// The exit codes, as `--help` shows them.
pub const EXIT_CODES: &str = exit_codes!();

const AFTER_LONG_HELP: &str = concat!(
    "\
Settings:
  base_url, jwt_token and max_nodes are read from the first config file found among
  --config FILE, $POWER_CONFIG, $XDG_CONFIG_HOME/power/config.yaml (default
  ~/.config/power/config.yaml) and /etc/power/config.yaml; POWER_URL, POWER_TOKEN and
  POWER_MAX_NODES override the file, and --url and --token override both. The default URL
  is http://localhost:6302; by default no action asks for confirmation.

",
    exit_codes!()
);

/// Options that every subcommand accepts, before or after it.
#[derive(Debug, Args, Default)]
pub struct GlobalArgs {
    /// Read settings from FILE instead of the usual config locations.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The power server's base URL (overrides POWER_URL and the config file's base_url).
    #[arg(long, global = true, value_name = "URL")]
    pub url: Option<String>,
    /// The token to present (overrides POWER_TOKEN and the config file's jwt_token).
    /// Visible to other users in the process list: prefer the config file or POWER_TOKEN.
    #[arg(long, global = true, value_name = "JWT")]
    pub token: Option<String>,
    /// Print one JSON document on stdout, for scripts.
    #[arg(long, global = true, conflicts_with = "summary")]
    pub json: bool,
    /// Print the nodes grouped per outcome, as hostlists (`on: node[01-05,07]`).
    #[arg(long, global = true)]
    pub summary: bool,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the nodes (or, with --groups, the groups) the server knows.
    List(ListArgs),
    /// Report whether nodes are on or off.
    Status(Targets),
    /// Power nodes on.
    On(ActionArgs),
    /// Power nodes off (hard, or with --graceful, a shutdown first).
    Off(OffArgs),
    /// Power-cycle nodes.
    Restart(ActionArgs),
    /// Print a shell completion script on stdout.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout, or write one page per
    /// subcommand into a directory.
    Man {
        /// Write power.1, power-status.1, ... into DIR instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// Arguments of `power list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// List groups instead of nodes.
    #[arg(long, short = 'g')]
    pub groups: bool,
    /// Say more of each: a node's platform and groups, a group's members.
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

/// The nodes (or groups) a power command acts on.
#[derive(Debug, Args)]
#[allow(clippy::struct_excessive_bools)] // each is one command-line switch
pub struct Targets {
    /// Hostlist expressions naming nodes (with --groups: groups).
    #[arg(required_unless_present = "all", value_name = "NODES")]
    pub names: Vec<String>,
    /// NODES name groups, not nodes.
    #[arg(long, short = 'g')]
    pub groups: bool,
    /// Every node the server knows (that the token covers), instead of NODES.
    #[arg(long, conflicts_with_all = ["names", "groups", "nodes"])]
    pub all: bool,
    /// Say, per node, the platform, the driver and the variables it would
    /// get (names only; credentials shown as ***), and run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The reference client's `-n/--nodes` (NODES name nodes, as they do
    /// anyway): accepted so its users' scripts keep working; hidden, as it
    /// was deprecated there.
    #[arg(long, short = 'n', hide = true, conflicts_with = "groups")]
    pub nodes: bool,
}

/// Arguments of `power on`, `off` and `restart`.
#[derive(Debug, Args)]
pub struct ActionArgs {
    /// The nodes to act on.
    #[command(flatten)]
    pub targets: Targets,
    /// After the action, poll the status until every node reaches the
    /// target state (on for on and restart, off for off).
    #[arg(long, short = 'w', conflicts_with = "dry_run")]
    pub wait: bool,
    /// How long --wait waits, e.g. `90s`, `5m` (a bare number is seconds).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration,
          default_value = "5m", requires = "wait")]
    pub wait_timeout: Duration,
    /// Do not ask for confirmation when more nodes than max_nodes are
    /// touched (without it, the client asks on a terminal and refuses
    /// elsewhere).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Off and restart nodes in the server's protected groups too (needs a
    /// token for the whole cluster; the audit log records it). Power on is
    /// never refused, so it changes nothing there.
    #[arg(long)]
    pub force: bool,
}

/// `power off`: the arguments of any action, and a graceful off.
#[derive(Debug, Args)]
pub struct OffArgs {
    /// The arguments every action takes.
    #[command(flatten)]
    pub action: ActionArgs,
    /// Ask each node's operating system to shut down first (ACPI soft off,
    /// a graceful shutdown); switch off hard the nodes still on after
    /// --grace, and those whose platform cannot shut down.
    #[arg(long)]
    pub graceful: bool,
    /// How long --graceful gives the nodes to shut down, e.g. `90s`, `5m`.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration,
          default_value = "2m", requires = "graceful")]
    pub grace: Duration,
}

/// Parses `90s`, `5m`, `1h 30m` (humantime), or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    power_proto::duration::parse(s)
        .map_err(|e| format!("{e}: expected a duration such as `90s`, `5m` or `1h 30m`"))
}

/// The clap command, for help, completions and the man page.
pub fn command() -> clap::Command {
    Cli::command()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definition_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("soon")
            .unwrap_err()
            .contains("expected a duration"));
    }

    #[test]
    fn flags_go_before_or_after_the_subcommand() {
        let cli = Cli::try_parse_from(["power", "--json", "status", "n[1-2]", "-g"]).unwrap();
        assert!(cli.global.json);
        let cli = Cli::try_parse_from(["power", "on", "n1", "--url", "http://x", "--wait"]);
        let cli = cli.unwrap();
        assert_eq!(cli.global.url.as_deref(), Some("http://x"));
        match cli.command {
            Some(Command::On(a)) => {
                assert!(a.wait);
                assert_eq!(a.wait_timeout, Duration::from_secs(300));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn all_stands_for_nodes() {
        let cli = Cli::try_parse_from(["power", "off", "--all", "--yes", "--dry-run"]).unwrap();
        match cli.command {
            Some(Command::Off(OffArgs { action: a, .. })) => {
                assert!(a.targets.all && a.targets.dry_run && a.yes && !a.force);
                assert!(a.targets.names.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refuses_bad_combinations() {
        for args in [
            &["power", "status"][..],
            &["power", "on", "n1", "--wait-timeout", "5s"],
            &["power", "status", "n1", "--wait"],
            &["power", "status", "n1", "--json", "--summary"],
            &["power", "list", "n1"],
            &["power", "off", "--all", "n1"],
            &["power", "off", "--all", "--groups"],
            &["power", "on", "--dry-run"],
            &["power", "on", "n1", "--dry-run", "--wait"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
    }
}
