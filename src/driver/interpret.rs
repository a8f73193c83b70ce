//! A driver run's outcome to the node's result.
//!
//! Pure: exit codes per the reference protocol (0 success; for `status`, 0
//! on, `status_off_exit_code` off, anything else unknown), and an error
//! message a person can act on.

use power_proto::wire::{Action, CommandAttributes, ErrorClass, PowerState};
use std::time::Duration;

/// How a driver run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal (not by the server).
    Signal(i32),
    /// Overran its timeout; the server killed its process group.
    TimedOut(Duration),
    /// The server stopped it while shutting down.
    Stopped,
    /// Could not be started at all.
    SpawnFailed(String),
}

/// What the engine knows after one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// How it ended.
    pub exit: Exit,
    /// The tail of its stderr (bounded).
    pub stderr: Vec<u8>,
    /// How long it ran.
    pub duration: Duration,
}

/// The exit codes a driver may use to say why it failed, from
/// `sysexits.h` (so a driver in any language has them by name, e.g.
/// Python's `os.EX_NOPERM`), with the class each gives the result.
pub const RESERVED_EXITS: [(i32, &str, ErrorClass); 4] = [
    (68, "EX_NOHOST", ErrorClass::Unreachable),
    (69, "EX_UNAVAILABLE", ErrorClass::Unsupported),
    (75, "EX_TEMPFAIL", ErrorClass::Busy),
    (77, "EX_NOPERM", ErrorClass::Auth),
];

/// The class a driver's exit code gives a failure.
pub fn exit_class(code: i32) -> ErrorClass {
    RESERVED_EXITS
        .iter()
        .find(|(c, _, _)| *c == code)
        .map_or(ErrorClass::Failed, |(_, _, class)| *class)
}

/// The class of a failure, from how the run ended.
pub fn class_of(exit: &Exit) -> ErrorClass {
    match exit {
        Exit::Code(code) => exit_class(*code),
        Exit::TimedOut(_) => ErrorClass::Timeout,
        Exit::Signal(_) | Exit::Stopped | Exit::SpawnFailed(_) => ErrorClass::Failed,
    }
}

/// What a reserved exit code means, for a message when the driver said
/// nothing on stderr.
pub fn reserved_meaning(class: ErrorClass) -> Option<&'static str> {
    match class {
        ErrorClass::Auth => Some("the endpoint refused the credentials"),
        ErrorClass::Unreachable => Some("the endpoint could not be reached"),
        ErrorClass::Busy => Some("the endpoint is busy"),
        ErrorClass::Unsupported => Some("the platform cannot do this action"),
        _ => None,
    }
}

/// Longest error message passed on, in characters.
pub const MAX_ERROR_CHARS: usize = 500;

/// The node's result for `outcome`. `secrets` are masked in the error.
pub fn interpret(
    action: Action,
    node: &str,
    platform: &str,
    status_off_exit_code: i32,
    outcome: &Outcome,
    secrets: &[String],
) -> CommandAttributes {
    let is_status = action == Action::Status;
    let (success, state, exit_code) = match outcome.exit {
        Exit::Code(0) => (true, PowerState::On, Some(0)),
        Exit::Code(c) if is_status && c == status_off_exit_code => (true, PowerState::Off, Some(c)),
        Exit::Code(c) => (false, PowerState::Unknown, Some(c)),
        _ => (false, PowerState::Unknown, None),
    };
    let error_class = (!success).then(|| class_of(&outcome.exit));
    let error = (!success).then(|| {
        let message = failure(outcome, |c| match reserved_meaning(exit_class(c)) {
            Some(meaning) => format!("{action}: {meaning} (exit {c})"),
            None if is_status => {
                format!("status exited {c}: neither on (0) nor off ({status_off_exit_code})")
            }
            None => format!("{action} exited {c}"),
        });
        truncate(&redact(&message, secrets), MAX_ERROR_CHARS)
    });
    let verdict = Verdict {
        success,
        state: is_status.then_some(state),
        error,
        error_class,
        exit_code,
    };
    verdict.result(action, node, platform, outcome.duration)
}

/// What a run says of one node, before it becomes the node's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The action did what was asked (for `status`: the state is known).
    pub success: bool,
    /// For `status` only: the power state.
    pub state: Option<PowerState>,
    /// Why it failed.
    pub error: Option<String>,
    /// What kind of failure it is.
    pub error_class: Option<ErrorClass>,
    /// The driver's exit code, when it is the node's own.
    pub exit_code: Option<i32>,
}

impl Verdict {
    /// The node's result, `duration` after its run started.
    pub fn result(
        self,
        action: Action,
        node: &str,
        platform: &str,
        duration: Duration,
    ) -> CommandAttributes {
        CommandAttributes {
            action,
            node_name: node.to_string(),
            platform: Some(platform.to_string()),
            missing: false,
            success: self.success,
            running: self.state.map(|s| self.success && s == PowerState::On),
            state: self.state,
            error: self.error,
            error_class: self.error_class,
            confirmed: None,
            fallback: None,
            exit_code: self.exit_code,
            duration_ms: duration.as_millis().min(u128::from(u64::MAX)) as u64,
        }
    }
}

/// Why a run failed, as a person reads it. The driver's own last word is
/// the best explanation of an exit code (`exited` says it when there is
/// none), but not of a kill: then what the server did comes first.
pub fn failure(outcome: &Outcome, exited: impl FnOnce(i32) -> String) -> String {
    let known = match &outcome.exit {
        Exit::Code(c) => {
            return last_line(&outcome.stderr).unwrap_or_else(|| exited(*c));
        }
        Exit::Signal(s) => format!("driver killed by signal {s} ({})", signal_name(*s)),
        Exit::TimedOut(d) => format!(
            "timed out after {}; driver killed",
            humantime::format_duration(*d)
        ),
        Exit::Stopped => "stopped: the server is shutting down".to_string(),
        Exit::SpawnFailed(e) => format!("cannot run driver: {e}"),
    };
    match last_line(&outcome.stderr) {
        Some(line) => format!("{known} (last output: {line})"),
        None => known,
    }
}

/// The last non-blank line of `bytes`, trimmed.
pub fn last_line(bytes: &[u8]) -> Option<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
}

/// Secrets shorter than this are masked only where they stand alone (not
/// inside a word): masking every `a` of a message would hide the message
/// and spell out a one-letter password anyway.
const SHORT_SECRET: usize = 4;

/// `text` with every secret replaced by `***`: each line of a secret of
/// several lines too (a driver may print it across lines), the longest
/// first, so one secret inside another leaves nothing of the longer one.
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut parts: Vec<&str> = secrets
        .iter()
        .flat_map(|s| std::iter::once(s.as_str()).chain(s.lines()))
        .filter(|s| !s.trim().is_empty())
        .collect();
    parts.sort_unstable_by_key(|s| std::cmp::Reverse(s.chars().count()));
    parts.dedup();
    parts.into_iter().fold(text.to_string(), |text, secret| {
        if secret.chars().count() >= SHORT_SECRET {
            text.replace(secret, "***")
        } else {
            replace_alone(&text, secret)
        }
    })
}

/// `text` with each occurrence of `secret` not inside a word (no letter or
/// digit either side) replaced by `***`.
fn replace_alone(text: &str, secret: &str) -> String {
    let word = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (at, _) in text.match_indices(secret) {
        let end = at + secret.len();
        if at < last || word(text[..at].chars().next_back()) || word(text[end..].chars().next()) {
            continue;
        }
        out.push_str(&text[last..at]);
        out.push_str("***");
        last = end;
    }
    out.push_str(&text[last..]);
    out
}

/// `text` cut to `max` characters, with `...` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

fn signal_name(signal: i32) -> &'static str {
    nix::sys::signal::Signal::try_from(signal)
        .map_or("unknown signal", nix::sys::signal::Signal::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(exit: Exit, stderr: &str) -> Outcome {
        Outcome {
            exit,
            stderr: stderr.as_bytes().to_vec(),
            duration: Duration::from_millis(12),
        }
    }

    fn run(action: Action, exit: Exit, stderr: &str) -> CommandAttributes {
        interpret(
            action,
            "n1",
            "p",
            111,
            &outcome(exit, stderr),
            &["hunter2".to_string()],
        )
    }

    #[test]
    fn status_exit_codes_follow_the_reference_protocol() {
        let on = run(Action::Status, Exit::Code(0), "");
        assert_eq!(
            (on.success, on.running, on.state),
            (true, Some(true), Some(PowerState::On))
        );
        assert_eq!(on.error, None);
        let off = run(Action::Status, Exit::Code(111), "");
        assert_eq!(
            (off.success, off.running, off.state),
            (true, Some(false), Some(PowerState::Off))
        );
        let unknown = run(Action::Status, Exit::Code(1), "");
        assert_eq!(
            (unknown.success, unknown.running, unknown.state),
            (false, Some(false), Some(PowerState::Unknown))
        );
        assert_eq!(
            unknown.error.as_deref(),
            Some("status exited 1: neither on (0) nor off (111)")
        );
    }

    #[test]
    fn reserved_exit_codes_classify_failures() {
        let auth = run(Action::PowerOn, Exit::Code(77), "");
        assert_eq!(auth.error_class, Some(ErrorClass::Auth));
        assert_eq!(
            auth.error.as_deref(),
            Some("power_on: the endpoint refused the credentials (exit 77)")
        );
        let busy = run(
            Action::Status,
            Exit::Code(75),
            "controller locked by hunter2",
        );
        assert_eq!(busy.error_class, Some(ErrorClass::Busy));
        assert_eq!(busy.error.as_deref(), Some("controller locked by ***"));
        assert_eq!(
            run(Action::Restart, Exit::Code(68), "").error_class,
            Some(ErrorClass::Unreachable)
        );
        assert_eq!(
            run(Action::PowerOff, Exit::Code(69), "").error_class,
            Some(ErrorClass::Unsupported)
        );
        let timed_out = Exit::TimedOut(Duration::from_secs(3));
        assert_eq!(
            run(Action::PowerOn, timed_out, "").error_class,
            Some(ErrorClass::Timeout)
        );
        assert_eq!(
            run(Action::PowerOn, Exit::Code(1), "").error_class,
            Some(ErrorClass::Failed)
        );
        assert_eq!(
            run(Action::PowerOn, Exit::Signal(9), "").error_class,
            Some(ErrorClass::Failed)
        );
        // Success has no class; nor has "off".
        assert_eq!(run(Action::Status, Exit::Code(111), "").error_class, None);
        assert_eq!(run(Action::PowerOn, Exit::Code(0), "").error_class, None);
    }

    #[test]
    fn actions_succeed_only_on_zero_and_have_no_state() {
        let ok = run(Action::PowerOn, Exit::Code(0), "");
        assert_eq!(
            (ok.success, ok.running, ok.state, ok.exit_code),
            (true, None, None, Some(0))
        );
        // 111 is only "off" for status.
        let bad = run(Action::PowerOn, Exit::Code(111), "");
        assert!(!bad.success);
        assert_eq!(bad.error.as_deref(), Some("power_on exited 111"));
    }

    #[test]
    fn the_last_stderr_line_explains_a_failure() {
        let r = run(
            Action::PowerOff,
            Exit::Code(1),
            "trying\nError: unable to establish IPMI session\n\n",
        );
        assert_eq!(
            r.error.as_deref(),
            Some("Error: unable to establish IPMI session")
        );
    }

    #[test]
    fn kills_and_timeouts_say_what_the_server_did() {
        let t = run(Action::Restart, Exit::TimedOut(Duration::from_secs(60)), "");
        assert_eq!(
            t.error.as_deref(),
            Some("timed out after 1m; driver killed")
        );
        assert_eq!(t.exit_code, None);
        let s = run(Action::Restart, Exit::Signal(9), "half done");
        assert_eq!(
            s.error.as_deref(),
            Some("driver killed by signal 9 (SIGKILL) (last output: half done)")
        );
        let f = run(
            Action::Status,
            Exit::SpawnFailed("Permission denied".into()),
            "",
        );
        assert_eq!(
            f.error.as_deref(),
            Some("cannot run driver: Permission denied")
        );
    }

    #[test]
    fn multi_line_and_one_letter_secrets_are_masked_as_such() {
        let secrets = [
            "top\nsecret".to_string(),
            "x".to_string(),
            "topsecret".to_string(),
        ];
        assert_eq!(
            redact("login failed for secret", &secrets),
            "login failed for ***"
        );
        assert_eq!(redact("wrong: topsecret", &secrets), "wrong: ***");
        assert_eq!(
            redact("exit 1: password x refused (x)", &secrets),
            "exit 1: password *** refused (***)"
        );
    }

    #[test]
    fn secrets_never_reach_the_error() {
        let r = run(
            Action::PowerOn,
            Exit::Code(1),
            "login failed for admin:hunter2",
        );
        assert_eq!(r.error.as_deref(), Some("login failed for admin:***"));
    }
}
