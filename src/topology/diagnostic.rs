//! Where a topology fact came from, and messages that point there.
//!
//! Every load error and warning carries a [`Location`] so an admin reads
//! `topology.d/20-rack1.yaml:14:3: node cn07: unknown platform "ipmii"` and
//! knows which line to fix.

use std::fmt;
use std::sync::Arc;

/// A position in a topology file (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file, as it was named when found (directory joined with file name).
    pub file: Arc<str>,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// One load error or warning: what is wrong, and where when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where the offending text is; `None` for facts about a whole
    /// directory or the environment.
    pub location: Option<Location>,
    /// What is wrong and what was expected.
    pub message: String,
}

impl Diagnostic {
    /// A diagnostic at `location`.
    pub fn at(location: &Location, message: impl Into<String>) -> Self {
        Diagnostic {
            location: Some(location.clone()),
            message: message.into(),
        }
    }

    /// A diagnostic with no position (a directory, a file as a whole).
    pub fn general(message: impl Into<String>) -> Self {
        Diagnostic {
            location: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(at) => write!(f, "{at}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Every error of one load (a load reports them all, not only the first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadErrors(pub Vec<Diagnostic>);

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "topology has {n} error{}:",
            if n == 1 { "" } else { "s" }
        )?;
        for d in &self.0 {
            write!(f, "\n  {d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadErrors {}
