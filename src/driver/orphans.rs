//! Processes that escape their driver's process group.
//!
//! A driver's run ends with its whole process group killed, but a
//! descendant that made a group or session of its own (`setsid`, `set -m`,
//! a daemon's double fork) is not in it: it would outlive its timeout and
//! the server, and, holding the driver's output pipes, keep two of the
//! server's descriptors and make every run wait for them.
//!
//! The server therefore makes itself the *child subreaper* of everything
//! it starts ([`adopt`]): when such a process's parent exits, the kernel
//! makes it the server's child instead of init's. The server's own
//! children are the drivers it started, each tracked from its fork to its
//! reaping; [`sweep`] kills (with its group) and reaps any other child,
//! which can only be an escaped descendant. It runs when a finished
//! driver's pipes stay open, and every [`SWEEP_EVERY`] besides.
//!
//! Only the server adopts: a process that did not call [`adopt`] (the
//! tests, `check`) tracks nothing and sweeps nothing, since its other
//! children are not drivers.

use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::{getpgrp, Pid};
use std::collections::HashSet;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

/// How often the server looks for escaped processes when nothing else
/// made it look.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Set by [`adopt`]: the pids of the drivers this process started and has
/// not yet reaped.
static OWN: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

/// Held (shared) by a fork until its child is in [`OWN`], and (exclusive)
/// by a sweep: a sweep never sees a child of ours that is not yet tracked.
static GATE: RwLock<()> = RwLock::new(());

/// Become the subreaper of every process this one starts, and track its
/// drivers from now on.
pub fn adopt() -> std::io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(std::io::Error::from)?;
    *OWN.lock().expect("orphans poisoned") = Some(HashSet::new());
    Ok(())
}

/// Start a process with `start`, which returns it and its pid, tracked as
/// one of ours until [`reaped`] is called with that pid.
pub fn tracked<T>(start: impl FnOnce() -> std::io::Result<(T, u32)>) -> std::io::Result<T> {
    let _gate = GATE.read().expect("orphan gate poisoned");
    let (started, pid) = start()?;
    if let Some(own) = OWN.lock().expect("orphans poisoned").as_mut() {
        own.insert(pid as i32);
    }
    Ok(started)
}

/// The tracked process `pid` has been reaped (waited for): its pid may now
/// be reused by anyone.
pub fn reaped(pid: u32) {
    if let Some(own) = OWN.lock().expect("orphans poisoned").as_mut() {
        own.remove(&(pid as i32));
    }
}

/// Kill and reap every child of this process that is not a tracked
/// driver: escaped descendants of drivers. Returns how many were found.
/// Does nothing unless [`adopt`] was called. Blocking (it reads `/proc`).
pub fn sweep() -> usize {
    let _gate = GATE.write().expect("orphan gate poisoned");
    let own = match OWN.lock().expect("orphans poisoned").as_ref() {
        Some(own) => own.clone(),
        None => return 0,
    };
    let strays: Vec<i32> = children()
        .into_iter()
        .filter(|pid| !own.contains(pid))
        .collect();
    let ours = getpgrp();
    for &pid in &strays {
        let pid = Pid::from_raw(pid);
        // Its group too (what it started), unless it shares ours.
        if nix::unistd::getpgid(Some(pid)).is_ok_and(|group| group == pid && group != ours) {
            let _ = killpg(pid, Signal::SIGKILL);
        }
        let _ = kill(pid, Signal::SIGKILL);
    }
    for &pid in &strays {
        // Killed above: gone at once unless stuck in the kernel, in which
        // case a later sweep reaps it.
        for _ in 0..50 {
            match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                Ok(nix::sys::wait::WaitStatus::StillAlive) => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                _ => break,
            }
        }
    }
    if !strays.is_empty() {
        tracing::warn!(
            count = strays.len(),
            pids = ?strays,
            "killed processes that escaped their driver's process group"
        );
    }
    strays.len()
}

/// The pids of this process's children: from each of its threads'
/// `children` list (an orphan is given to one of its threads) where the
/// kernel has them, else from every process's parent in `/proc`.
fn children() -> Vec<i32> {
    let mut pids = Vec::new();
    let mut listed = false;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
                listed = true;
                pids.extend(
                    list.split_whitespace()
                        .filter_map(|p| p.parse::<i32>().ok()),
                );
            }
        }
    }
    if !listed {
        let me = std::process::id() as i32;
        let Ok(all) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        for entry in all.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            if parent_in_stat(&stat) == Some(me) {
                pids.push(pid);
            }
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// The parent pid in a `/proc/PID/stat` line: the second field after the
/// command, which is in parentheses and may hold anything, spaces and `)`.
fn parent_in_stat(stat: &str) -> Option<i32> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_parent_from_a_stat_line() {
        assert_eq!(parent_in_stat("42 (sleep) S 7 42 7 0 -1"), Some(7));
        // A command may hold spaces and parentheses.
        assert_eq!(parent_in_stat("42 (a) b (c) R 9 42 9 0"), Some(9));
        assert_eq!(parent_in_stat("garbage"), None);
    }

    #[test]
    fn without_adopting_nothing_is_tracked_or_swept() {
        // This test process has other children (cargo's harness may too):
        // none of them may be touched.
        let child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        assert_eq!(sweep(), 0);
        let mut child = child;
        assert!(
            child.try_wait().unwrap().is_none(),
            "a non-driver child was killed"
        );
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
