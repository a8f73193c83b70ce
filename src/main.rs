//! The `power-server` binary: parse arguments, set up logging, call the
//! library, map errors to exit codes.

use clap::{Args, Parser, Subcommand};
use power_server::load::LoadSettings;
use power_server::paths;
use std::path::PathBuf;
use std::process::ExitCode;

/// Platform-agnostic cluster power manager: topology, drivers, power API.
#[derive(Debug, Parser)]
#[command(name = "power-server", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load and validate the topology and drivers exactly as `serve` would,
    /// and report what was found. Exit 0 when usable, 1 with every error
    /// otherwise.
    Check(LoadArgs),
}

/// Where the topology and drivers come from.
#[derive(Debug, Args)]
struct LoadArgs {
    /// A topology directory; repeat for several, lowest precedence first
    /// [default: /usr/lib/power-server/topology.d, /etc/power-server/topology.d,
    /// and the checkout's topology.d when run from a checkout]
    #[arg(long = "topology-dir", value_name = "DIR")]
    topology_dirs: Vec<PathBuf>,
    /// A drivers directory; repeat for several, lowest precedence first
    /// [default: /usr/lib/power-server/drivers, /etc/power-server/drivers,
    /// and the checkout's drivers when run from a checkout]
    #[arg(long = "drivers-dir", value_name = "DIR")]
    drivers_dirs: Vec<PathBuf>,
    /// Where generated driver scripts are written [default: a private
    /// directory under the system temp directory]
    #[arg(long, value_name = "DIR")]
    runtime_dir: Option<PathBuf>,
}

impl LoadArgs {
    fn settings(&self) -> LoadSettings {
        let or_default = |given: &Vec<PathBuf>, system: &[&str], sub: &str| {
            if given.is_empty() {
                paths::defaults(system, sub)
            } else {
                given.clone()
            }
        };
        LoadSettings {
            topology_dirs: or_default(
                &self.topology_dirs,
                &paths::SYSTEM_TOPOLOGY_DIRS,
                "topology.d",
            ),
            drivers_dirs: or_default(&self.drivers_dirs, &paths::SYSTEM_DRIVERS_DIRS, "drivers"),
            runtime_dir: self.runtime_dir.clone(),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check(args) => match power_server::check::check(&args.settings()) {
            Ok(report) => {
                print!("{report}");
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("power-server: {errors}");
                ExitCode::FAILURE
            }
        },
    }
}
