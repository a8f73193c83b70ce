//! The `power` client: lists nodes and reports or changes their power state
//! through a power server, with the reference client's command line and
//! words, plus `--json`, `--summary`, `--wait` and documented exit codes.
//!
//! [`run`] is the whole program; `main` only calls it.

pub mod cli;
pub mod commands;
pub mod exit;
pub mod http;
pub mod output;
pub mod progress;
pub mod settings;

use clap::Parser;
use cli::{Cli, Command};
use exit::{Exit, Failure};
use output::Format;
use power_proto::wire::Action;
use std::ffi::OsString;
use std::process::ExitCode;

/// Runs `power` with `args` (the first is the program name) and returns the
/// exit code. Reads settings from the process environment and config files;
/// writes results on stdout and errors on stderr.
pub fn run<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                Exit::Usage
            } else {
                Exit::Success
            }
            .into();
        }
    };
    let mut token = None;
    let result = dispatch(cli, &mut token);
    match result {
        Ok(exit) => exit.into(),
        Err(failure) => {
            output::warn(&redact(&failure.to_string(), token.as_deref()));
            failure.exit().into()
        }
    }
}

/// Runs the parsed command; `token` is set to the token in use, so an error
/// message can be scrubbed of it.
fn dispatch(cli: Cli, token: &mut Option<String>) -> Result<Exit, Failure> {
    let Some(command) = cli.command else {
        // No arguments prints help, as in the reference, and is not an error.
        output::write_stdout(&cli::command().render_help().to_string())?;
        return Ok(Exit::Success);
    };
    match &command {
        Command::Completions { shell } => return completions(*shell),
        Command::Man { dir } => return man(dir.as_deref()),
        _ => {}
    }

    let global = cli.global;
    let flags = settings::Flags {
        config: global.config,
        url: global.url,
        token: global.token,
    };
    let settings = settings::load(&flags, &settings::Env::from_process())?;
    token.clone_from(&settings.token);
    let api = http::Api::new(&settings.base_url, settings.token.as_deref());
    let format = if global.json {
        Format::Json
    } else if global.summary {
        Format::Summary
    } else {
        Format::Table
    };
    let options = commands::power::Options {
        format,
        colour: format != Format::Json && output::colour_enabled(),
        max_nodes: settings.max_nodes,
    };
    match command {
        Command::List(args) => commands::list::run(&api, &args, format),
        Command::Status(targets) => commands::power::status(&api, &targets, &options),
        Command::On(args) => commands::power::action(&api, Action::PowerOn, &args, &options),
        Command::Off(args) => commands::power::off(&api, &args, &options),
        Command::Restart(args) => commands::power::action(&api, Action::Restart, &args, &options),
        Command::Completions { .. } | Command::Man { .. } => unreachable!("handled above"),
    }
}

/// `power completions SHELL`: from the same definition as the parser.
fn completions(shell: clap_complete::Shell) -> Result<Exit, Failure> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cli::command(), "power", &mut script);
    output::write_stdout(&String::from_utf8_lossy(&script))?;
    Ok(Exit::Success)
}

/// `power man [--dir DIR]`: the page on stdout, or a page per subcommand.
fn man(dir: Option<&std::path::Path>) -> Result<Exit, Failure> {
    match dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cli::command())
                .render(&mut page)
                .map_err(|e| Failure::Output(describe_io(&e)))?;
            output::write_stdout(&String::from_utf8_lossy(&page))?;
        }
        Some(dir) => clap_mangen::generate_to(cli::command(), dir).map_err(|e| {
            Failure::Usage(format!(
                "cannot write man pages into {}: {}",
                dir.display(),
                describe_io(&e)
            ))
        })?,
    }
    Ok(Exit::Success)
}

/// Replaces the token wherever it appears, so it is never printed.
fn redact(message: &str, token: Option<&str>) -> String {
    match token {
        Some(token) if !token.is_empty() => message.replace(token, "<token>"),
        _ => message.to_string(),
    }
}

/// An I/O error in a few lowercase words: `connection refused`, not
/// `Connection refused (os error 111)`.
pub fn describe_io(e: &std::io::Error) -> String {
    use std::io::ErrorKind::{
        AddrNotAvailable, ConnectionAborted, ConnectionRefused, ConnectionReset, NotFound,
        PermissionDenied, TimedOut, UnexpectedEof,
    };
    let words = match e.kind() {
        ConnectionRefused => "connection refused",
        ConnectionReset => "connection reset",
        ConnectionAborted => "connection aborted",
        TimedOut => "timed out",
        NotFound => "no such file or directory",
        PermissionDenied => "permission denied",
        AddrNotAvailable => "address not available",
        UnexpectedEof => "connection closed early",
        _ => return e.to_string(),
    };
    words.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_tokens() {
        assert_eq!(
            redact("bad token abc.def", Some("abc.def")),
            "bad token <token>"
        );
        assert_eq!(redact("x", Some("")), "x");
        assert_eq!(redact("x", None), "x");
    }

    #[test]
    fn io_words() {
        let e = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(describe_io(&e), "connection refused");
    }
}
