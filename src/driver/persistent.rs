//! Persistent batch drivers: one long-lived driver process, fed chunk after
//! chunk on its stdin, answering each node on its stdout.
//!
//! The process is `DRIVER serve`, in its own process group, with the
//! server's environment plus `POWER_BATCH=1`, `POWER_PERSISTENT=1` and
//! `POWER_PLATFORM`. A chunk is written as [`super::batch::persistent_input`]
//! makes it; answers are the batch protocol's `ID WORD [MESSAGE]` lines.
//! The engine runs one chunk at a time on a process, and drops (kills) a
//! process that overran a chunk's timeout or stopped answering.

use super::spawn::{self, Tail};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;

/// The process (of `lanes` for one platform and controller value) that
/// serves node `name`: always the same one while `lanes` is unchanged, so
/// a driver may keep what it knows of its nodes in memory.
pub fn lane(name: &str, lanes: usize) -> usize {
    super::build::fnv1a(name) as usize % lanes.max(1)
}

/// Longest wait before restarting a driver that keeps failing.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A running persistent driver.
#[derive(Debug)]
pub struct Process {
    child: Child,
    pgid: Pid,
    stdin: ChildStdin,
    /// Its stdout, line by line; closed when it exits.
    pub lines: mpsc::UnboundedReceiver<Vec<u8>>,
    stderr: Arc<Mutex<Tail>>,
    stderr_reader: Option<tokio::task::JoinHandle<()>>,
    program: PathBuf,
    /// The program's modification time when it was started: a driver
    /// upgraded in place is restarted at its next chunk.
    modified: Option<std::time::SystemTime>,
    env: Vec<(OsString, OsString)>,
    next_id: usize,
}

impl Process {
    /// Start `program serve` with exactly `env`.
    pub async fn start(
        program: &Path,
        env: &[(OsString, OsString)],
        dir: Option<&Path>,
    ) -> std::io::Result<Self> {
        let mut child =
            spawn::start(program, "serve", env, true, dir, spawn::Priority::Same).await?;
        let pgid = child
            .id()
            .map(|id| Pid::from_raw(id as i32))
            .ok_or_else(|| std::io::Error::other("exited before it could be tracked"))?;
        let stdin = child.stdin.take().expect("piped");
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(spawn::read_lines(child.stdout.take(), tx));
        let stderr = Arc::new(Mutex::new(Tail::default()));
        let stderr_reader = child.stderr.take().map(|mut pipe| {
            let tail = stderr.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8 * 1024];
                while let Ok(n @ 1..) = pipe.read(&mut buf).await {
                    tail.lock().expect("tail poisoned").extend(&buf[..n]);
                }
            })
        });
        Ok(Process {
            child,
            pgid,
            stdin,
            lines,
            stderr,
            stderr_reader,
            program: program.to_path_buf(),
            modified: modified(program),
            env: env.to_vec(),
            next_id: 1,
        })
    }

    /// Was it started as `program`, as that file is now, with `env`? A
    /// reload that changes either, or a driver file replaced since, needs a
    /// new process.
    pub fn runs(&self, program: &Path, env: &[(OsString, OsString)]) -> bool {
        self.program == program && self.env == env && self.modified == modified(program)
    }

    /// Reserve `n` ids for a chunk; the first is returned. Ids never
    /// repeat within a process, so a late answer cannot hit a later chunk.
    pub fn ids(&mut self, n: usize) -> usize {
        let first = self.next_id;
        self.next_id += n;
        first
    }

    /// Write a chunk to its stdin.
    pub async fn send(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.stdin.write_all(chunk).await?;
        self.stdin.flush().await
    }

    /// Its exit code (or `128 + signal`) once it has exited, waiting at
    /// most `wait` for it to go.
    pub async fn exit_code(&mut self, wait: Duration) -> Option<i32> {
        let status = tokio::time::timeout(wait, self.child.wait())
            .await
            .ok()?
            .ok()?;
        super::orphans::reaped(self.pgid.as_raw() as u32);
        status.code().or_else(|| status.signal().map(|s| 128 + s))
    }

    /// The tail of what it wrote on stderr so far.
    pub fn stderr(&self) -> Vec<u8> {
        self.stderr.lock().expect("tail poisoned").bytes()
    }

    /// The tail of its stderr once the process has gone: waits at most
    /// `wait` for the last of it to be read (a descendant that left the
    /// process group may hold the pipe open).
    pub async fn final_stderr(&mut self, wait: Duration) -> Vec<u8> {
        if let Some(reader) = self.stderr_reader.take() {
            let _ = tokio::time::timeout(wait, reader).await;
        }
        self.stderr()
    }

    /// TERM its process group, then KILL it after the grace period.
    pub async fn kill(&mut self) {
        spawn::kill_group(self.pgid, &mut self.child).await;
        super::orphans::reaped(self.pgid.as_raw() as u32);
        let _ = killpg(self.pgid, Signal::SIGKILL);
    }
}

fn modified(program: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(program).and_then(|m| m.modified()).ok()
}

impl Drop for Process {
    fn drop(&mut self) {
        // Whatever state it is in, nothing of it outlives its handle.
        let _ = killpg(self.pgid, Signal::SIGKILL);
    }
}

/// One persistent driver's place in the engine: the process, if running,
/// and when it may be started again after failures.
#[derive(Debug, Default)]
pub struct Slot {
    /// The running process.
    pub process: Option<Process>,
    failures: u32,
    not_before: Option<Instant>,
}

impl Slot {
    /// The chunk was fully answered: the process is healthy.
    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.not_before = None;
    }

    /// The process failed a chunk and is gone: the next start waits 1 s,
    /// then 2, 4 ... up to [`MAX_BACKOFF`], counted from now.
    pub fn failed(&mut self) {
        self.process = None;
        let delay = Duration::from_secs(1 << self.failures.min(6)).min(MAX_BACKOFF);
        self.failures += 1;
        self.not_before = Some(Instant::now() + delay);
    }

    /// How long until the process may be started again.
    pub fn backoff(&self) -> Duration {
        self.not_before.map_or(Duration::ZERO, |t| {
            t.saturating_duration_since(Instant::now())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_back_off_exponentially_up_to_a_minute_and_success_resets() {
        let mut slot = Slot::default();
        assert_eq!(slot.backoff(), Duration::ZERO);
        let mut delays = Vec::new();
        for _ in 0..8 {
            slot.failed();
            delays.push(slot.backoff().as_secs_f64().round() as u64);
        }
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
        slot.succeeded();
        assert_eq!(slot.backoff(), Duration::ZERO);
    }
}
