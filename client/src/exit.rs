//! The exit-code contract and the errors that end a run early.
//!
//! Scripts (Slurm's ResumeProgram, cron jobs) rely on these codes: they are
//! documented in `--help`, the man page and docs/client.md, and pinned by the
//! integration tests. Pure: no I/O.

use std::fmt;
use std::process::ExitCode;

/// How a run ended, as the process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: every node did what was asked.
    Success = 0,
    /// 1: some node failed, was unknown or missing, or did not reach the
    /// state `--wait` waited for.
    NodesFailed = 1,
    /// 2: bad arguments, a bad hostlist, a bad config file.
    Usage = 2,
    /// 3: the server refused the token.
    TokenRefused = 3,
    /// 4: the server could not be reached, or answered something that is not
    /// the power API.
    Server = 4,
    /// 5: the request would touch more nodes than `max_nodes` and was not
    /// confirmed (no `--yes`, not a terminal, or the answer was not yes):
    /// nothing was done.
    NotConfirmed = 5,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

/// Why a run could not finish: each variant holds what its message needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A usage error found by the client itself (e.g. a bad hostlist).
    Usage(String),
    /// A config file that cannot be read or parsed.
    Config(String),
    /// The server answered 400: it refused the request as malformed.
    BadRequest(String),
    /// The server answered 401 or 403 and no token was configured.
    NoToken,
    /// The server answered 401 or 403 to the token; the server's reason, if
    /// it gave one.
    TokenRefused(Option<String>),
    /// No HTTP answer at all.
    Unreachable {
        /// The base URL that was tried.
        url: String,
        /// What went wrong, in a few lowercase words (`connection refused`).
        reason: String,
    },
    /// An answer that is not the power API's.
    BadAnswer {
        /// The base URL that was asked.
        url: String,
        /// What was wrong with it.
        what: String,
    },
    /// Writing the output failed (other than a closed pipe, which is fine).
    Output(String),
    /// More nodes than `max_nodes`, not confirmed: why, and what to do.
    NotConfirmed(String),
}

impl Failure {
    /// The exit code this failure ends the run with.
    pub fn exit(&self) -> Exit {
        match self {
            Failure::Usage(_) | Failure::Config(_) | Failure::BadRequest(_) => Exit::Usage,
            Failure::NoToken | Failure::TokenRefused(_) => Exit::TokenRefused,
            Failure::Unreachable { .. } | Failure::BadAnswer { .. } => Exit::Server,
            Failure::Output(_) => Exit::NodesFailed,
            Failure::NotConfirmed(_) => Exit::NotConfirmed,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Usage(message) | Failure::Config(message) | Failure::NotConfirmed(message) => {
                f.write_str(message)
            }
            Failure::BadRequest(detail) => write!(f, "the server refused the request: {detail}"),
            Failure::NoToken => f.write_str(
                "no token configured: set jwt_token in the config file, POWER_TOKEN or --token \
                 (an admin mints one with `power-server token`)",
            ),
            Failure::TokenRefused(reason) => write!(
                f,
                "token refused by the server: {}",
                reason
                    .as_deref()
                    .unwrap_or("expired or not signed by this server")
            ),
            Failure::Unreachable { url, reason } => {
                write!(f, "cannot reach power server at {url}: {reason}")
            }
            Failure::BadAnswer { url, what } => {
                write!(f, "unexpected answer from power server at {url}: {what}")
            }
            Failure::Output(e) => write!(f, "cannot write the output: {e}"),
        }
    }
}

impl std::error::Error for Failure {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_codes() {
        let cases = [
            (
                Failure::Unreachable {
                    url: "http://127.0.0.1:9".into(),
                    reason: "connection refused".into(),
                },
                "cannot reach power server at http://127.0.0.1:9: connection refused",
                4,
            ),
            (
                Failure::TokenRefused(None),
                "token refused by the server: expired or not signed by this server",
                3,
            ),
            (
                Failure::TokenRefused(Some("token expired".into())),
                "token refused by the server: token expired",
                3,
            ),
            (
                Failure::BadRequest("bad hostlist".into()),
                "the server refused the request: bad hostlist",
                2,
            ),
        ];
        for (failure, message, code) in cases {
            assert_eq!(failure.to_string(), message);
            assert_eq!(failure.exit() as u8, code);
        }
        assert!(Failure::NoToken.to_string().contains("POWER_TOKEN"));
    }
}
