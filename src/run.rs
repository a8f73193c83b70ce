//! Running a `power-server` command: settings layered from flags, the
//! environment and the config file, logging, then the library's work;
//! every failure becomes one line on stderr and exit 1.

use crate::auth::{self, Claims, Keys};
use crate::cli::{CheckArgs, Cli, Command, DemoArgs, ServeArgs, TokenArgs};
use crate::config::{self, LogFormat, Options, Settings};
use crate::{api, demo, secret};
use clap::Parser;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

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
            logs.with_ansi(false).without_time().init();
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
    let settings = Settings::resolve(options, &config::Host::current())?;
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
    let settings = Settings::resolve(options, &config::Host::current())?;
    init_logging("warn", LogFormat::Text)?;
    if let Some(nodes) = &args.nodes {
        crate::hostlist::expand(nodes, settings.hostlist_limit)
            .map_err(|e| format!("--nodes: {e}"))?;
    }
    let fresh = match &settings.secret {
        secret::SecretSource::File(path) if !path.exists() => Some(path.clone()),
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
    let mut settings = Settings::resolve(Options::default(), &config::Host::current())?;
    settings.bind = args.bind;
    settings.load = demo::load_settings();
    settings.shutdown_grace = std::time::Duration::from_secs(5);
    let value = secret::generate();
    settings.secret = secret::SecretSource::Value(value.clone());
    let secret = secret::from_value(&value);
    let token = demo::token(&settings, &secret);
    let mut environment: Vec<_> = std::env::vars_os().collect();
    environment.push(("POWER_SIM_DIR".into(), sim_dir.path().into()));
    let client = std::env::current_exe()?
        .parent()
        .map_or_else(|| PathBuf::from("power"), |d| d.join("power"));
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
    let settings = Settings::resolve(options, &config::Host::current())?;
    write_stdout(&crate::check::check(&settings.load, &settings.warnings)?)
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

/// Parse the command line and run it; the binary's whole `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => exit(serve(args)),
        Command::Token(args) => exit(token(args)),
        Command::Demo(args) => exit(run_demo(args)),
        Command::Check(args) => exit(check(args)),
    }
}
