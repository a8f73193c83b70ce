//! The audit log: JSON lines about power requests, appended to a file.
//!
//! A line says when, who (the token's subject), what action, which nodes
//! (as a compressed hostlist), and how it went: counts of successes and
//! failures, or why the request was refused. An action (not a status) is
//! recorded twice: [`Started`] before anything runs, so a server that dies
//! mid-job leaves a trace, and then its outcome. It never holds a token or the
//! secret. The file is created 0600 and opened once, in append mode, so
//! each line lands whole at the end even with other writers.

use power_proto::hostlist;
use power_proto::wire::Action;
use serde::Serialize;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// Longest request text copied into a refusal line.
const MAX_QUERY: usize = 256;

/// An open audit log.
#[derive(Debug)]
pub struct Audit {
    path: PathBuf,
    file: Mutex<File>,
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Record {
    /// When the request arrived, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// The token's `sub` claim; `null` if it has none or was refused.
    pub subject: Option<String>,
    /// The action asked for.
    pub action: Action,
    /// The nodes run on, compressed (empty when refused).
    pub nodes: String,
    /// Nodes whose driver succeeded.
    pub succeeded: usize,
    /// Nodes that failed, missing ones included.
    pub failed: usize,
    /// Of the failed, nodes not in the topology.
    pub missing: usize,
    /// Why the request was refused, if it was (nothing was run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// The refused request's query string, truncated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Of the failed, nodes not run because they are in a protected group
    /// and the request did not say force.
    #[serde(skip_serializing_if = "is_zero")]
    pub protected: usize,
    /// The request said force for an action protection applies to (off,
    /// restart): protected nodes were run.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
    /// A graceful off: the grace given (`2m`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub graceful: Option<String>,
    /// Of a graceful off's nodes, those switched off hard.
    #[serde(skip_serializing_if = "is_zero")]
    pub forced_off: usize,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde passes a reference
fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Record {
    /// A request that ran: `nodes` in any order.
    pub fn ran(subject: Option<String>, action: Action, nodes: &[String]) -> Record {
        Record {
            time: now(),
            subject,
            action,
            nodes: hostlist::compress(nodes),
            succeeded: 0,
            failed: 0,
            missing: 0,
            refused: None,
            query: None,
            protected: 0,
            force: false,
            graceful: None,
            forced_off: 0,
        }
    }

    /// A request refused for `why`, nothing run.
    pub fn refused(subject: Option<String>, action: Action, why: String, query: &str) -> Record {
        let mut query = query.to_string();
        if query.len() > MAX_QUERY {
            let mut end = MAX_QUERY;
            while !query.is_char_boundary(end) {
                end -= 1;
            }
            query.truncate(end);
            query.push_str("...");
        }
        Record {
            refused: Some(why),
            query: Some(query),
            ..Record::ran(subject, action, &[])
        }
    }
}

/// The line written before an action runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Started {
    /// When the request arrived.
    pub time: String,
    /// The token's `sub` claim.
    pub subject: Option<String>,
    /// The action.
    pub action: Action,
    /// The nodes it will run on, compressed.
    pub nodes: String,
    /// Always `started`.
    pub event: &'static str,
    /// As [`Record::force`].
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
    /// As [`Record::graceful`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub graceful: Option<String>,
}

impl Record {
    /// The line announcing this record's action before it runs.
    pub fn started(&self) -> Started {
        Started {
            time: self.time.clone(),
            subject: self.subject.clone(),
            action: self.action,
            nodes: self.nodes.clone(),
            event: "started",
            force: self.force,
            graceful: self.graceful.clone(),
        }
    }
}

fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

impl Audit {
    /// Open (creating, mode 0600) the log at `path` for appending.
    pub fn open(path: &Path) -> std::io::Result<Audit> {
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)?;
        Ok(Audit {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    /// Append one line. A failure is logged, and returned: an action whose
    /// first line cannot be written is not run.
    pub fn write(&self, record: &impl Serialize) -> std::io::Result<()> {
        let mut line = serde_json::to_string(record).expect("a record serialises");
        line.push('\n');
        let mut file = self.file.lock().expect("audit lock poisoned");
        file.write_all(line.as_bytes()).inspect_err(|e| {
            tracing::error!("cannot write audit log {}: {e}", self.path.display());
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_appended_whole_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let audit = Audit::open(&path).unwrap();
        let mut r = Record::ran(
            Some("alice".into()),
            Action::PowerOn,
            &["n2".into(), "n1".into(), "n3".into()],
        );
        r.succeeded = 3;
        audit.write(&r).unwrap();
        audit
            .write(&Record::refused(
                None,
                Action::PowerOff,
                "no token".into(),
                "nodes=n1",
            ))
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["nodes"], "n[1-3]");
        assert_eq!(lines[0]["action"], "power_on");
        assert_eq!(lines[0]["subject"], "alice");
        assert_eq!(lines[0]["succeeded"], 3);
        assert!(lines[0].get("refused").is_none());
        assert!(lines[0].get("force").is_none() && lines[0].get("protected").is_none());
        assert_eq!(lines[1]["refused"], "no token");
        assert_eq!(lines[1]["query"], "nodes=n1");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn force_and_protected_appear_when_they_happened() {
        let mut r = Record::ran(None, Action::PowerOff, &["n1".into()]);
        r.force = true;
        r.protected = 2;
        let line = serde_json::to_value(&r).unwrap();
        assert_eq!(
            (&line["force"], &line["protected"]),
            (&serde_json::json!(true), &serde_json::json!(2))
        );
        let started = serde_json::to_value(r.started()).unwrap();
        assert_eq!(started["force"], true);
    }

    #[test]
    fn long_queries_are_truncated() {
        let r = Record::refused(None, Action::Status, "x".into(), &"é".repeat(300));
        assert!(r.query.unwrap().len() <= MAX_QUERY + 3);
    }
}
