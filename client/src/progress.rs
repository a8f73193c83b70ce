//! A progress bar on stderr while a job over many nodes runs, fed by the
//! server's NDJSON stream. Only on a terminal: when stderr is piped or
//! redirected nothing of it is drawn.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

/// A progress bar, or nothing when stderr is not a terminal.
pub struct Progress(Option<ProgressBar>);

impl Progress {
    /// Starts a bar for `len` nodes (a spinner with a count when the number
    /// is not known beforehand, as for groups). Jobs of one node get none.
    pub fn start(len: Option<usize>, message: &str) -> Progress {
        if len.is_some_and(|n| n < 2) || !std::io::stderr().is_terminal() {
            return Progress(None);
        }
        let bar = match len {
            Some(n) => ProgressBar::with_draw_target(Some(n as u64), ProgressDrawTarget::stderr())
                .with_style(
                    ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} nodes ({elapsed})")
                        .expect("valid template")
                        .progress_chars("=> "),
                ),
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(
                ProgressStyle::with_template("{spinner} {msg}: {pos} nodes ({elapsed})")
                    .expect("valid template"),
            ),
        };
        bar.set_message(message.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        Progress(Some(bar))
    }

    /// Whether a bar is drawn (stderr is a terminal).
    pub fn is_shown(&self) -> bool {
        self.0.is_some()
    }

    /// Replaces the bar's message.
    pub fn note(&self, message: &str) {
        if let Some(bar) = &self.0 {
            bar.set_message(message.to_string());
        }
    }

    /// One more node done.
    pub fn inc(&self) {
        if let Some(bar) = &self.0 {
            bar.inc(1);
        }
    }

    /// Sets how many nodes are done.
    pub fn set(&self, done: usize) {
        if let Some(bar) = &self.0 {
            bar.set_position(done as u64);
        }
    }

    /// Removes the bar, so the results print on a clean line.
    pub fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
