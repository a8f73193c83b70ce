//! Run one driver: its own process group, a timeout after which the whole
//! group is killed, its stdin written (a batch run's node lines), and output
//! captured up to a bound, stdout passed on line by line when asked.
//!
//! The only part of the driver module that touches processes.

use super::interpret::{Exit, Outcome};
use super::orphans;
use super::plan::Invocation;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};

/// Bytes kept of each output stream (the tail: the last line is the error).
pub const OUTPUT_LIMIT: usize = 64 * 1024;
/// Longest stdout line passed on; the rest of a longer line is dropped.
pub const LINE_LIMIT: usize = 16 * 1024;
/// Between TERM and KILL when a driver is stopped.
pub const KILL_GRACE: Duration = Duration::from_secs(2);
/// How long to wait for output after the driver exits: a descendant that
/// left the process group may hold the pipes open.
const DRAIN_GRACE: Duration = Duration::from_millis(500);
/// How long the pipes may stay open after the driver's group is killed
/// before escaped processes are looked for.
const ESCAPE_CHECK: Duration = Duration::from_millis(25);

/// Both streams' tails.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Captured {
    /// Tail of stdout.
    pub stdout: Vec<u8>,
    /// Tail of stderr.
    pub stderr: Vec<u8>,
}

/// Run `invocation`. `stop` turning true asks for the run to be killed (the
/// server is shutting down). With `lines`, every stdout line (without its
/// newline, cut at [`LINE_LIMIT`]) is sent there as soon as it is read.
/// Never panics on a driver's misbehaviour: every failure becomes the
/// outcome.
pub async fn run(
    invocation: &Invocation,
    mut stop: watch::Receiver<bool>,
    lines: Option<mpsc::UnboundedSender<Vec<u8>>>,
) -> (Outcome, Captured) {
    let started = Instant::now();
    let failed = |e: String| {
        (
            Outcome {
                exit: Exit::SpawnFailed(e),
                stderr: Vec::new(),
                duration: started.elapsed(),
            },
            Captured::default(),
        )
    };
    let mut child = match spawn(invocation).await {
        Ok(child) => child,
        Err(e) => return failed(format!("{}: {e}", invocation.program.display())),
    };
    let Some(pgid) = child.id().map(|id| Pid::from_raw(id as i32)) else {
        return failed("exited before it could be tracked".into());
    };
    if let (Some(input), Some(mut pipe)) = (invocation.stdin.clone(), child.stdin.take()) {
        // A driver that never reads its stdin only loses the lines (EPIPE).
        tokio::spawn(async move {
            let _ = pipe.write_all(&input).await;
        });
    }
    let stdout = match lines {
        // Passed on line by line, so not kept.
        Some(lines) => tokio::spawn(read_lines(child.stdout.take(), lines)),
        None => tokio::spawn(read_tail(child.stdout.take())),
    };
    let stderr = tokio::spawn(read_tail(child.stderr.take()));

    let exit = tokio::select! {
        status = child.wait() => match status {
            Ok(status) => match (status.code(), status.signal()) {
                (Some(code), _) => Exit::Code(code),
                (None, Some(signal)) => Exit::Signal(signal),
                (None, None) => Exit::SpawnFailed("ended without exit code or signal".into()),
            },
            Err(e) => Exit::SpawnFailed(format!("waiting for the driver: {e}")),
        },
        () = tokio::time::sleep(invocation.timeout) => {
            kill_group(pgid, &mut child).await;
            Exit::TimedOut(invocation.timeout)
        }
        // (The borrow `wait_for` returns must not live across the kill.)
        () = async {
            if stop.wait_for(|stop| *stop).await.is_err() {
                std::future::pending::<()>().await; // no engine, no stop
            }
        } => {
            kill_group(pgid, &mut child).await;
            Exit::Stopped
        }
    };
    // Reaped by now, whichever way it ended.
    orphans::reaped(pgid.as_raw() as u32);
    // Whatever the driver left running in its group (`sleep 1000 &`) goes
    // with it: a power action leaves no processes behind.
    let _ = killpg(pgid, Signal::SIGKILL);
    let (mut stdout, mut stderr) = (stdout, stderr);
    let deadline = tokio::time::Instant::now() + DRAIN_GRACE;
    let mut swept = false;
    let captured = Captured {
        stdout: drain(&mut stdout, deadline, &mut swept).await,
        stderr: drain(&mut stderr, deadline, &mut swept).await,
    };
    let outcome = Outcome {
        exit,
        stderr: captured.stderr.clone(),
        duration: started.elapsed(),
    };
    (outcome, captured)
}

async fn spawn(invocation: &Invocation) -> std::io::Result<Child> {
    let program = &invocation.program;
    let piped = invocation.stdin.is_some();
    let dir = invocation.dir.as_deref();
    start(
        program,
        invocation.action.as_str(),
        &invocation.env,
        piped,
        dir,
        Priority::Nicer,
    )
    .await
}

/// How much nicer than the thread that starts them drivers run: under a
/// load of drivers the server's own threads still get the CPU first, so
/// the API answers at once. In the server, a per-node run starts on the
/// engine's threads (so 20 nicer than the API's, capped at 19), and so
/// does a one-shot batch chunk.
pub const DRIVER_NICE: i32 = 10;

/// At what priority a driver runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// [`DRIVER_NICE`] nicer than the thread that starts it: a run for one
    /// node or one chunk, of which a large job starts thousands.
    Nicer,
    /// As the thread that starts it: a persistent driver, which answers
    /// every request's chunks for its nodes (in the server, started where
    /// chunks run: [`crate::engine::EngineOptions::persistent_chunks`]).
    Same,
}

/// Start `program ARG` with exactly `env`, in its own process group, stdout
/// and stderr piped, stdin piped or `/dev/null`, at `priority`, in `dir`
/// (the server's own working directory when `None`).
///
/// The fork and exec run on a blocking-pool thread, not on an async
/// worker: creating a process holds its thread for a while when many
/// drivers compete for the CPU, and the workers answer requests. A child
/// starts at that thread's priority (in the server, the engine's), and is
/// then made nicer unless `priority` says otherwise.
pub(super) async fn start(
    program: &Path,
    arg: &str,
    env: &[(OsString, OsString)],
    stdin_piped: bool,
    dir: Option<&Path>,
    priority: Priority,
) -> std::io::Result<Child> {
    let mut attempts = 0;
    loop {
        let mut command = Command::new(program);
        if let Some(dir) = dir {
            command.current_dir(dir);
        }
        command
            .arg(arg)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(if stdin_piped {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let spawned = tokio::task::spawn_blocking(move || {
            orphans::tracked(|| {
                let child = command.spawn()?;
                let pid = child.id().unwrap_or_default();
                if priority == Priority::Nicer {
                    renice_group(pid, DRIVER_NICE);
                }
                Ok((child, pid))
            })
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        match spawned {
            // A script written by this process moments ago can be busy while
            // another thread's fork still holds it open; that passes at once.
            Err(e) if e.raw_os_error() == Some(nix::libc::ETXTBSY) && attempts < 5 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(10 * attempts)).await;
            }
            result => return result,
        }
    }
}

/// Make the process group `pgid`, just started by this thread, `by` nicer
/// than this thread (at most 19). Done to the group, not the thread that
/// starts it: the threads that start drivers start persistent ones too,
/// and a thread once made nicer cannot be made less nice again. A process
/// the driver forked in the microseconds before is in the group already.
fn renice_group(pgid: u32, by: i32) {
    // 0 would name this process's own group.
    if pgid == 0 {
        return;
    }
    let nice = (this_thread_nice() + by).min(19);
    // SAFETY: a plain system call on a group of this process's children.
    unsafe {
        nix::libc::setpriority(nix::libc::PRIO_PGRP, pgid, nice);
    }
}

/// The calling thread's niceness.
pub(crate) fn this_thread_nice() -> i32 {
    // SAFETY: a plain system call on the calling thread's own id.
    unsafe {
        nix::libc::getpriority(
            nix::libc::PRIO_PROCESS,
            nix::libc::gettid() as nix::libc::id_t,
        )
    }
}

/// Make the calling thread exactly `nice` (at most 19). Only ever nicer
/// than it is: a thread starts with the niceness of the one that made it.
pub(crate) fn set_this_thread_nice(nice: i32) {
    // SAFETY: a plain system call on the calling thread's own id.
    unsafe {
        let tid = nix::libc::gettid() as nix::libc::id_t;
        nix::libc::setpriority(nix::libc::PRIO_PROCESS, tid, nice.min(19));
    }
}

/// TERM the group, give it [`KILL_GRACE`], then KILL it and reap the leader.
pub(super) async fn kill_group(pgid: Pid, child: &mut Child) {
    let _ = killpg(pgid, Signal::SIGTERM);
    if tokio::time::timeout(KILL_GRACE, child.wait())
        .await
        .is_err()
    {
        let _ = killpg(pgid, Signal::SIGKILL);
        let _ = child.wait().await;
    }
}

/// What a reader of the driver's output read, once its pipe closes. A pipe
/// still open [`ESCAPE_CHECK`] after the driver's group is gone is held by
/// a process that left the group: escaped processes are killed then (once
/// per run, see [`orphans`]), and at `deadline` the pipe is let go,
/// whatever holds it, so no run keeps a descriptor.
async fn drain(
    reader: &mut tokio::task::JoinHandle<Vec<u8>>,
    deadline: tokio::time::Instant,
    swept: &mut bool,
) -> Vec<u8> {
    if !*swept {
        match tokio::time::timeout(ESCAPE_CHECK, &mut *reader).await {
            Ok(read) => return read.unwrap_or_default(),
            Err(_) => {
                *swept = true;
                let _ = tokio::task::spawn_blocking(orphans::sweep).await;
            }
        }
    }
    match tokio::time::timeout_at(deadline, &mut *reader).await {
        Ok(read) => read.unwrap_or_default(),
        Err(_) => {
            reader.abort();
            Vec::new()
        }
    }
}

/// The last [`OUTPUT_LIMIT`] bytes of a stream.
#[derive(Debug, Default)]
pub(super) struct Tail(VecDeque<u8>);

impl Tail {
    pub(super) fn extend(&mut self, chunk: &[u8]) {
        let chunk = &chunk[chunk.len().saturating_sub(OUTPUT_LIMIT)..];
        let overflow = (self.0.len() + chunk.len()).saturating_sub(OUTPUT_LIMIT);
        self.0.drain(..overflow.min(self.0.len()));
        self.0.extend(chunk);
    }

    /// The bytes kept.
    pub(super) fn bytes(&self) -> Vec<u8> {
        self.0.iter().copied().collect()
    }
}

/// Read a stream to its end, keeping only the last [`OUTPUT_LIMIT`] bytes:
/// a driver that floods its output costs the server a bounded buffer.
async fn read_tail<R: AsyncRead + Unpin>(stream: Option<R>) -> Vec<u8> {
    let Some(mut stream) = stream else {
        return Vec::new();
    };
    let mut tail = Tail::default();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => tail.extend(&buf[..n]),
        }
    }
    tail.0.into()
}

/// Read a stream to its end, sending each line to `lines` as soon as it is
/// complete (and a last one without its newline). A line is cut at
/// [`LINE_LIMIT`] bytes. Nothing is kept: the result is always empty (it
/// stands where [`read_tail`]'s would).
pub(super) async fn read_lines<R: AsyncRead + Unpin>(
    stream: Option<R>,
    lines: mpsc::UnboundedSender<Vec<u8>>,
) -> Vec<u8> {
    let Some(stream) = stream else {
        return Vec::new();
    };
    let mut reader = BufReader::with_capacity(16 * 1024, stream);
    let mut line = Vec::new();
    loop {
        let buf = match reader.fill_buf().await {
            Ok(buf) if !buf.is_empty() => buf,
            _ => break,
        };
        let mut rest = buf;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            append_capped(&mut line, &rest[..end]);
            let _ = lines.send(std::mem::take(&mut line));
            rest = &rest[end + 1..];
        }
        append_capped(&mut line, rest);
        let used = buf.len();
        reader.consume(used);
    }
    if !line.is_empty() {
        let _ = lines.send(line);
    }
    Vec::new()
}

fn append_capped(line: &mut Vec<u8>, bytes: &[u8]) {
    let room = LINE_LIMIT.saturating_sub(line.len());
    line.extend_from_slice(&bytes[..bytes.len().min(room)]);
}
