//! Starting and stopping the endpoint daemons the tests run (moto,
//! sushy-emulator, socat, libvirtd, ipmi_sim): a free loopback port, a
//! bounded wait until the daemon answers, and a stop that reaches the
//! daemon's whole process group.
//!
//! Nothing here sleeps to synchronise: every wait polls with a deadline.

use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// How long a daemon's process group may take to exit after SIGTERM before
/// it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// How many free ports [`start_on_free_port`] tries: another process can
/// take a port between our bind and the daemon's.
const PORT_TRIES: usize = 3;

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A loopback port nothing listens on: bound and released, so a
/// connection to it is refused (a dead endpoint).
pub fn closed_port() -> u16 {
    free_port()
}

/// Spawn `cmd` as the leader of a new process group, so that
/// [`stop_group`] reaches everything it starts.
pub fn spawn_group(cmd: &mut Command) -> std::io::Result<Child> {
    std::os::unix::process::CommandExt::process_group(cmd, 0);
    cmd.spawn()
}

/// Poll `child` until it exits or `within` has passed; its exit status if
/// it exited.
pub fn wait_exit(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < within {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// Stop the process group led by `child`, if any: SIGTERM, up to `grace`
/// for the leader to exit, then SIGKILL to whatever is left of the group;
/// the leader is reaped.
pub fn stop_group(child: Option<Child>, grace: Duration) {
    let Some(mut child) = child else {
        return;
    };
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGTERM);
    if wait_exit(&mut child, grace).is_some() {
        // Anything else left in the group goes too.
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        return;
    }
    let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    let _ = child.wait();
}

/// When the test is failing (the thread panics), print the last lines of
/// the log `log` reads to stderr under `name`, so a failure in CI shows
/// what the daemon saw (the harness shows a failing test's stderr; the
/// log's directory is gone once the test ends). Read only then.
pub fn show_log_if_failing(name: &str, log: impl FnOnce() -> String) {
    /// Enough for a test's worth of requests, short of flooding the report.
    const LINES: usize = 200;
    if !std::thread::panicking() {
        return;
    }
    let log = log();
    let lines: Vec<&str> = log.lines().collect();
    let tail = &lines[lines.len().saturating_sub(LINES)..];
    eprintln!(
        "--- {name}'s log, last {} of {} lines ---\n{}\n--- end of {name}'s log ---",
        tail.len(),
        lines.len(),
        tail.join("\n")
    );
}

/// A daemon being started: its group is stopped when dropped (also when a
/// start panics half-way) unless taken.
struct Starting(Option<Child>);

impl Drop for Starting {
    fn drop(&mut self) {
        stop_group(self.0.take(), STOP_GRACE);
    }
}

/// Poll until `ready` says the daemon answers. Err(`log`'s text, after
/// why) if the daemon exits first or does not answer within `deadline`.
pub fn wait_ready(
    child: &mut Child,
    log: &Path,
    deadline: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<(), String> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(20);
    loop {
        let log = || std::fs::read_to_string(log).unwrap_or_default();
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("(exited: {status})\n{}", log()));
        }
        if ready() {
            return Ok(());
        }
        if start.elapsed() > deadline {
            return Err(format!("(no answer within {deadline:?})\n{}", log()));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// Start a daemon `what` on a free 127.0.0.1 port: `spawn(port)` starts it
/// (in its own process group, its output in `log`), `ready(port)` says
/// whether it answers. A port taken by someone else in the meantime (the
/// log says "in use") means another try on another port; any other failure
/// panics with the log. Returns the port and the running daemon.
pub fn start_on_free_port(
    what: &str,
    log: &Path,
    deadline: Duration,
    mut spawn: impl FnMut(u16) -> Child,
    mut ready: impl FnMut(u16) -> bool,
) -> (u16, Child) {
    let mut last_log = String::new();
    for _ in 0..PORT_TRIES {
        let port = free_port();
        let mut starting = Starting(Some(spawn(port)));
        let child = starting.0.as_mut().expect("just spawned");
        match wait_ready(child, log, deadline, || ready(port)) {
            Ok(()) => return (port, starting.0.take().expect("running")),
            Err(text) => {
                drop(starting);
                if !text.contains("in use") {
                    panic!("{what} did not start; its log:\n{text}");
                }
                last_log = text;
            }
        }
    }
    panic!("{what} did not start; its log:\n{last_log}");
}
