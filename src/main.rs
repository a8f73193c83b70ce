//! The `power-server` binary: parse arguments, set up logging, call the
//! library, map errors to exit codes.

use clap::{Args, Parser, Subcommand};
use power_server::auth::{self, Claims, Keys, Role};
use power_server::config::{self, LogFormat, Options, Settings};
use power_server::{api, demo, secret};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Platform-agnostic cluster power manager: topology, drivers, power API.
#[derive(Debug, Parser)]
#[command(name = "power-server", version, about)]
// A flag given twice: the last wins, so a wrapper may append to a command.
#[command(args_override_self = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
struct SecretArgs {
    /// YAML config file; its keys are the long flags' names with `_` for
    /// `-` (and the lists `topology_dirs`, `drivers_dirs`), plus
    /// `jwt_shared_secret` [env: POWER_SERVER_CONFIG] [default:
    /// /etc/power-server/config.yaml if it exists]
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// File holding the JWT secret, generated (mode 0600) if absent; used
    /// when neither POWER_SERVER_JWT_SECRET nor the config's
    /// jwt_shared_secret is set [env: POWER_SERVER_SECRET_FILE] [default:
    /// /etc/power-server/jwt-secret for root, else
    /// $XDG_CONFIG_HOME/power-server/jwt-secret]
    #[arg(long, value_name = "FILE")]
    secret_file: Option<PathBuf>,
}

/// `check`'s flags: where `serve` would load from.
#[derive(Debug, Args)]
struct CheckArgs {
    #[command(flatten)]
    load: LoadArgs,
    /// YAML config file, as for `serve` [env: POWER_SERVER_CONFIG]
    /// [default: /etc/power-server/config.yaml if it exists]
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// `serve`'s flags. Each has a config key and a POWER_SERVER_* variable.
#[derive(Debug, Args)]
struct ServeArgs {
    /// Address and port to listen on [env: POWER_SERVER_BIND] [default:
    /// 127.0.0.1:6302]
    #[arg(long, value_name = "ADDR:PORT")]
    bind: Option<String>,
    #[command(flatten)]
    load: LoadArgs,
    /// Most driver runs at once [env: POWER_SERVER_CONCURRENCY] [default: 50]
    #[arg(long, value_name = "N")]
    concurrency: Option<usize>,
    /// Append one JSON line per power request to FILE [env:
    /// POWER_SERVER_AUDIT_LOG]
    #[arg(long, value_name = "FILE")]
    audit_log: Option<PathBuf>,
    /// Log filter when RUST_LOG is unset [env: POWER_SERVER_LOG_LEVEL]
    /// [default: info]
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// Log lines as `text`, or `json` (one object a line, for log
    /// shippers) [env: POWER_SERVER_LOG_FORMAT] [default: text]
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
    /// How long running drivers may finish after SIGTERM [env:
    /// POWER_SERVER_SHUTDOWN_GRACE] [default: 30s]
    #[arg(long, value_name = "DURATION")]
    shutdown_grace: Option<String>,
    /// Most names one hostlist may expand to [env:
    /// POWER_SERVER_HOSTLIST_LIMIT] [default: 100000]
    #[arg(long, value_name = "N")]
    hostlist_limit: Option<usize>,
    /// Most connections served at once; more wait until one ends [env:
    /// POWER_SERVER_MAX_CONNECTIONS] [default: 4096]
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    #[command(flatten)]
    secret: SecretArgs,
}

/// `token`'s flags.
#[derive(Debug, Args)]
struct TokenArgs {
    /// Days until the token expires
    #[arg(long, value_name = "N", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=36500))]
    days: u64,
    /// viewer: list and status only; operator: also on, off, restart
    /// [default: no role, which is full access, as in the reference]
    #[arg(long)]
    role: Option<Role>,
    /// Limit the token to these nodes (a hostlist)
    #[arg(long, value_name = "HOSTLIST")]
    nodes: Option<String>,
    /// Who the token is for; written to the audit log
    #[arg(long, value_name = "NAME")]
    subject: Option<String>,
    #[command(flatten)]
    secret: SecretArgs,
}

/// `demo`'s flags.
#[derive(Debug, Args)]
struct DemoArgs {
    /// Loopback address and port to listen on
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:6302")]
    bind: SocketAddr,
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
    /// The flags' layer of settings; directories not given are left to the
    /// environment, the config file and the defaults.
    fn options(self) -> Options {
        Options {
            topology_dirs: Some(self.topology_dirs).filter(|d| !d.is_empty()),
            drivers_dirs: Some(self.drivers_dirs).filter(|d| !d.is_empty()),
            runtime_dir: self.runtime_dir,
            ..Options::default()
        }
    }
}

/// A failure to report on stderr, and exit 1.
type Failure = Box<dyn std::error::Error>;

/// The stacked settings layers: flags over environment over the config
/// file (`config`, else `POWER_SERVER_CONFIG`, else the default if it
/// exists). Also returns the config file's path when it holds the secret.
fn layers(flags: Options, config: Option<PathBuf>) -> Result<(Options, Option<PathBuf>), Failure> {
    let env = Options::from_env(|k| std::env::var(k).ok())?;
    let explicit = config.or_else(|| std::env::var_os("POWER_SERVER_CONFIG").map(PathBuf::from));
    let path = Options::file_path(explicit.as_deref());
    let file = Options::read_file(path.as_deref())?;
    let holds_secret = file.jwt_shared_secret.is_some();
    Ok((flags.or(env).or(file), path.filter(|_| holds_secret)))
}

fn init_logging(level: &str, format: LogFormat) -> Result<(), Failure> {
    use tracing_subscriber::EnvFilter;
    let filter = match EnvFilter::try_from_default_env() {
        Ok(f) => f,
        Err(_) => EnvFilter::try_new(level)
            .map_err(|e| format!("log_level: {level:?} is not a log filter: {e}"))?,
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => logs.json().flatten_event(true).init(),
        // systemd sets JOURNAL_STREAM when stderr goes to its journal,
        // which stamps each line itself.
        LogFormat::Text if std::env::var_os("JOURNAL_STREAM").is_some() => {
            logs.with_ansi(false).without_time().init()
        }
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    Ok(())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn serve(args: ServeArgs) -> Result<(), Failure> {
    let flags = Options {
        bind: args.bind,
        concurrency: args.concurrency,
        audit_log: args.audit_log,
        log_level: args.log_level,
        log_format: args.log_format,
        shutdown_grace: args.shutdown_grace,
        hostlist_limit: args.hostlist_limit,
        max_connections: args.max_connections,
        secret_file: args.secret.secret_file,
        ..args.load.options()
    };
    let (options, secret_config) = layers(flags, args.secret.config)?;
    let settings = Settings::resolve(options)?;
    init_logging(&settings.log_level, settings.log_format)?;
    for warning in &settings.warnings {
        tracing::warn!("{warning}");
    }
    if let Some(path) = secret_config {
        config::warn_if_readable_by_others(&path);
    }
    let secret = secret::obtain(&settings.secret)?;
    // Before the runtime starts any thread.
    secret::scrub_from_environment();
    runtime().block_on(api::serve(
        &settings,
        &secret,
        std::env::vars_os().collect(),
        |addr, _| announce(addr),
    ))?;
    Ok(())
}

/// The one line the tests and scripts wait for.
fn announce(addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening on http://{addr}");
    let _ = out.flush();
}

fn token(args: TokenArgs) -> Result<(), Failure> {
    let flags = Options {
        secret_file: args.secret.secret_file,
        ..Options::default()
    };
    let (options, _) = layers(flags, args.secret.config)?;
    let settings = Settings::resolve(options)?;
    init_logging("warn", LogFormat::Text)?;
    if let Some(nodes) = &args.nodes {
        power_server::hostlist::expand(nodes, settings.hostlist_limit)
            .map_err(|e| format!("--nodes: {e}"))?;
    }
    let fresh = match &settings.secret {
        config::SecretSource::File(path) if !path.exists() => Some(path.clone()),
        _ => None,
    };
    let secret = secret::obtain(&settings.secret)?;
    if let Some(path) = fresh {
        eprintln!(
            "power-server: generated a new secret in {}: only a server using this secret accepts the token",
            path.display()
        );
    }
    let now = auth::now();
    let token = Keys::new(&secret, settings.hostlist_limit).mint(&Claims {
        exp: now + args.days * 86_400,
        iat: Some(now),
        sub: args.subject,
        role: args.role,
        nodes: args.nodes,
    });
    write_stdout(&format!("{token}\n"))
}

/// Writes `text` to stdout. A reader that went away (`| head -1`, `| true`)
/// is not an error: what it did not read, it did not want.
fn write_stdout(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(format!("cannot write to stdout: {e}").into())
        }
        _ => Ok(()),
    }
}

fn run_demo(args: DemoArgs) -> Result<(), Failure> {
    if !args.bind.ip().is_loopback() {
        return Err(format!(
            "--bind {}: the demo listens on loopback only (127.0.0.1 or ::1)",
            args.bind
        )
        .into());
    }
    init_logging("warn", LogFormat::Text)?;
    let sim_dir = tempfile::Builder::new().prefix("power-demo-").tempdir()?;
    let mut settings = Settings::resolve(Options::default())?;
    settings.bind = args.bind;
    settings.load = demo::load_settings();
    settings.shutdown_grace = std::time::Duration::from_secs(5);
    let value = secret::generate();
    settings.secret = config::SecretSource::Value(value.clone());
    let secret = secret::from_value(&value);
    let token = demo::token(&settings, &secret);
    let mut environment: Vec<_> = std::env::vars_os().collect();
    environment.push(("POWER_SIM_DIR".into(), sim_dir.path().into()));
    let client = std::env::current_exe()?
        .parent()
        .map(|d| d.join("power"))
        .unwrap_or_else(|| PathBuf::from("power"));
    runtime().block_on(api::serve(
        &settings,
        &secret,
        environment,
        |addr, topology| {
            announce(addr);
            let url = format!("http://{addr}");
            print!(
                "{}",
                demo::instructions(
                    &url,
                    &token,
                    topology,
                    sim_dir.path(),
                    if client.is_file() {
                        Ok(&client)
                    } else {
                        Err(&client)
                    },
                )
            );
            let _ = std::io::stdout().flush();
        },
    ))?;
    Ok(())
}

fn check(args: CheckArgs) -> Result<(), Failure> {
    let (options, _) = layers(args.load.options(), args.config)?;
    let settings = Settings::resolve(options)?;
    write_stdout(&power_server::check::check(
        &settings.load,
        &settings.warnings,
    )?)
}

fn exit(result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("power-server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => exit(serve(args)),
        Command::Token(args) => exit(token(args)),
        Command::Demo(args) => exit(run_demo(args)),
        Command::Check(args) => exit(check(args)),
    }
}
