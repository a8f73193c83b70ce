//! What happens after a node's run: a node whose driver said "busy" is run
//! again with backoff, a few times; an on, off or restart that succeeded is
//! confirmed, when the request or the platform asks, by polling the node's
//! status with growing intervals until it is in the action's target state
//! or the wait is over.
//!
//! [`Ledger`] is the bookkeeping: pure, driven by the clock it is given.
//! [`run`] feeds it from the engine, and runs the retries and the polls as
//! ordinary engine runs (so a batch platform confirms a whole chunk with
//! one status run, under the same node locks and bounds).

use crate::engine::Engine;
use crate::load::Loaded;
use power_proto::wire::{Action, CommandAttributes, ErrorClass, PowerState};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Times a node that answered "busy" is run again before its result says
/// so; the waits between are [`FIRST_BACKOFF`], doubling.
pub const BUSY_RETRIES: u32 = 3;

/// The wait before a busy node's first retry.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// The first status poll of a confirmation comes this long after the
/// action; each next one waits twice as long as the one before, up to
/// [`MAX_POLL`].
pub const FIRST_POLL: Duration = Duration::from_millis(250);

/// The longest interval between two polls of one node.
pub const MAX_POLL: Duration = Duration::from_secs(5);

/// The longest confirmation a request may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(3600);

/// How long a request asks the server to confirm its action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// As each node's platform says (`confirm`), if it says.
    Platform,
    /// This long for every node; zero: not at all.
    For(Duration),
}

/// Where a result comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// A run of the request's action (the first, or a retry).
    Action,
    /// A status poll confirming it.
    Poll,
}

/// A node whose action succeeded, waiting to be seen in the target state.
#[derive(Debug)]
struct Pending {
    held: CommandAttributes,
    wait: Duration,
    deadline: Instant,
    next: Instant,
    interval: Duration,
    polling: bool,
}

/// A node that answered busy, waiting for its retry.
#[derive(Debug)]
struct Busy {
    last: CommandAttributes,
    due: Instant,
}

/// The follow-up of one request's results.
#[derive(Debug)]
pub struct Ledger {
    action: Action,
    tries: HashMap<String, u32>,
    busy: HashMap<String, Busy>,
    pending: HashMap<String, Pending>,
}

impl Ledger {
    /// The follow-up of a request for `action`.
    pub fn new(action: Action) -> Self {
        Ledger {
            action,
            tries: HashMap::new(),
            busy: HashMap::new(),
            pending: HashMap::new(),
        }
    }

    /// A result of the action, at `now`; `wait` is how long to confirm it
    /// (zero: not at all). Returns it if it is final now.
    pub fn answered(
        &mut self,
        result: CommandAttributes,
        wait: Duration,
        now: Instant,
    ) -> Option<CommandAttributes> {
        if result.error_class == Some(ErrorClass::Busy) {
            return self.busy(result, now);
        }
        match self.action.target_state() {
            Some(_) if result.success && !wait.is_zero() => {
                let name = result.node_name.clone();
                let first = now + FIRST_POLL;
                self.pending.insert(
                    name,
                    Pending {
                        held: result,
                        wait,
                        deadline: now + wait,
                        next: first.min(now + wait),
                        interval: FIRST_POLL,
                        polling: false,
                    },
                );
                None
            }
            _ => Some(result),
        }
    }

    fn busy(&mut self, mut result: CommandAttributes, now: Instant) -> Option<CommandAttributes> {
        let tries = self.tries.entry(result.node_name.clone()).or_insert(0);
        if *tries >= BUSY_RETRIES {
            let tried = *tries + 1;
            if let Some(error) = &mut result.error {
                error.push_str(&format!(" (still busy after {tried} tries)"));
            }
            return Some(result);
        }
        let due = now + FIRST_BACKOFF * 2u32.pow(*tries);
        *tries += 1;
        let name = result.node_name.clone();
        self.busy.insert(name, Busy { last: result, due });
        None
    }

    /// A status result polled to confirm a node, at `now`. Returns the
    /// node's final result if it is in the target state, or if its wait
    /// is over.
    pub fn polled(
        &mut self,
        status: &CommandAttributes,
        now: Instant,
    ) -> Option<CommandAttributes> {
        let target = self.action.target_state()?;
        let name = status.node_name.as_str();
        let pending = self.pending.get_mut(name)?;
        pending.polling = false;
        let seen = if status.success {
            status.state.unwrap_or(PowerState::Unknown)
        } else {
            PowerState::Unknown
        };
        if seen == target {
            let mut held = self.pending.remove(name)?.held;
            held.confirmed = Some(true);
            held.state = Some(seen);
            return Some(held);
        }
        if now >= pending.deadline {
            let pending = self.pending.remove(name)?;
            return Some(unconfirmed(pending.held, target, seen, pending.wait));
        }
        pending.interval = (pending.interval * 2).min(MAX_POLL);
        pending.next = (now + pending.interval).min(pending.deadline);
        None
    }

    /// The nodes whose retry (of the action) or poll (a status) is due at
    /// `now`; each is marked as under way.
    pub fn due(&mut self, now: Instant) -> (Vec<String>, Vec<String>) {
        let retries: Vec<String> = self
            .busy
            .iter()
            .filter(|(_, b)| b.due <= now)
            .map(|(n, _)| n.clone())
            .collect();
        for name in &retries {
            self.busy.remove(name);
        }
        // Nodes due a little later come along: answers of one chunk arrive
        // microseconds apart, and one status run should poll them all.
        let mut polls = Vec::new();
        for (name, pending) in &mut self.pending {
            if !pending.polling && pending.next <= now + pending.interval / 2 {
                pending.polling = true;
                polls.push(name.clone());
            }
        }
        (retries, polls)
    }

    /// When the next retry or poll is due.
    pub fn next_due(&self) -> Option<Instant> {
        let retries = self.busy.values().map(|b| b.due);
        let polls = self.pending.values().filter(|p| !p.polling).map(|p| p.next);
        retries.chain(polls).min()
    }

    /// Nothing held: every node has its final result.
    pub fn is_done(&self) -> bool {
        self.busy.is_empty() && self.pending.is_empty()
    }

    /// Every node still held, as its final result now (the server is
    /// shutting down): busy ones as last answered, unconfirmed ones as
    /// not confirmed.
    pub fn give_up(&mut self, why: &str) -> Vec<CommandAttributes> {
        let mut results: Vec<CommandAttributes> = self.busy.drain().map(|(_, b)| b.last).collect();
        for (_, pending) in self.pending.drain() {
            let mut held = pending.held;
            held.success = false;
            held.confirmed = Some(false);
            held.error = Some(format!("not confirmed: {why}"));
            held.error_class = Some(ErrorClass::Unconfirmed);
            results.push(held);
        }
        results
    }
}

/// The final result of an action whose node did not reach `target` within
/// `wait`, last seen in `seen`.
fn unconfirmed(
    mut held: CommandAttributes,
    target: PowerState,
    seen: PowerState,
    wait: Duration,
) -> CommandAttributes {
    held.success = false;
    held.confirmed = Some(false);
    held.state = Some(seen);
    held.error = Some(format!(
        "did not reach {target} within {}: last seen {seen}",
        humantime::format_duration(wait)
    ));
    held.error_class = Some(ErrorClass::Unconfirmed);
    held
}

/// Runs `action` on `nodes` as [`Engine::run_until`] does, with the
/// follow-up: busy nodes retried, and the action confirmed as `wait` says.
/// Results arrive as each node's is final.
pub fn run(
    engine: &Arc<Engine>,
    loaded: Arc<Loaded>,
    action: Action,
    nodes: Vec<String>,
    abandoned: Option<watch::Receiver<bool>>,
    wait: Wait,
) -> mpsc::UnboundedReceiver<CommandAttributes> {
    let first = engine.run_until(loaded.clone(), action, nodes, abandoned.clone());
    let (tx, rx) = mpsc::unbounded_channel();
    let follow = Follow {
        engine: engine.clone(),
        waits: Waits::new(&loaded, action, wait),
        loaded,
        action,
        abandoned,
        ledger: Ledger::new(action),
        tx,
    };
    engine.spawn(follow.run(first));
    rx
}

/// How long each node's action is confirmed.
enum Waits {
    /// The same for every node (zero: none).
    All(Duration),
    /// Each node's platform's `confirm`.
    ByPlatform,
}

impl Waits {
    fn new(loaded: &Loaded, action: Action, wait: Wait) -> Self {
        let platforms = &loaded.topology.platforms;
        match wait {
            _ if action.target_state().is_none() => Waits::All(Duration::ZERO),
            Wait::For(d) => Waits::All(d),
            // Looked up per node only when some platform confirms.
            Wait::Platform if platforms.values().any(|p| p.confirm.is_some()) => Waits::ByPlatform,
            Wait::Platform => Waits::All(Duration::ZERO),
        }
    }

    fn of(&self, loaded: &Loaded, node: &str) -> Duration {
        match self {
            Waits::All(d) => *d,
            Waits::ByPlatform => loaded
                .topology
                .position(node)
                .and_then(|i| {
                    let platform = &loaded.topology.nodes()[i].platform;
                    loaded.topology.platforms[&**platform].confirm
                })
                .unwrap_or(Duration::ZERO),
        }
    }
}

/// One request's follow-up under way.
struct Follow {
    engine: Arc<Engine>,
    loaded: Arc<Loaded>,
    action: Action,
    abandoned: Option<watch::Receiver<bool>>,
    waits: Waits,
    ledger: Ledger,
    tx: mpsc::UnboundedSender<CommandAttributes>,
}

impl Follow {
    async fn run(mut self, mut first: mpsc::UnboundedReceiver<CommandAttributes>) {
        // Results of the retries and polls: `None` when one run is over.
        let (more_tx, mut more) = mpsc::unbounded_channel::<(Source, Option<CommandAttributes>)>();
        let mut first_open = true;
        let mut runs = 0usize;
        let mut closing = self.engine.closing();
        loop {
            let due = self.ledger.next_due();
            tokio::select! {
                result = first.recv(), if first_open => match result {
                    Some(result) => {
                        self.take(Source::Action, result);
                        // And the results already waiting, without a select each.
                        while let Ok(result) = first.try_recv() {
                            self.take(Source::Action, result);
                        }
                    }
                    None => first_open = false,
                },
                Some((source, result)) = more.recv(), if runs > 0 => match result {
                    Some(result) => self.take(source, result),
                    None => runs -= 1,
                },
                // No retry or poll can start once shutdown has begun.
                Ok(_) = closing.wait_for(|closing| *closing), if !self.ledger.is_done() => {
                    for result in self.ledger.give_up("the server is shutting down") {
                        let _ = self.tx.send(result);
                    }
                }
                () = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                    let (retries, polls) = self.ledger.due(Instant::now());
                    for (source, action, nodes) in [
                        (Source::Action, self.action, retries),
                        (Source::Poll, Action::Status, polls),
                    ] {
                        if !nodes.is_empty() {
                            runs += 1;
                            self.spawn_run(source, action, nodes, more_tx.clone());
                        }
                    }
                }
            }
            if !first_open && runs == 0 && self.ledger.is_done() {
                break;
            }
        }
    }

    fn take(&mut self, source: Source, result: CommandAttributes) {
        let now = Instant::now();
        let done = match source {
            Source::Action => {
                let wait = self.waits.of(&self.loaded, &result.node_name);
                self.ledger.answered(result, wait, now)
            }
            Source::Poll => self.ledger.polled(&result, now),
        };
        if let Some(result) = done {
            let _ = self.tx.send(result);
        }
    }

    fn spawn_run(
        &self,
        source: Source,
        action: Action,
        nodes: Vec<String>,
        tx: mpsc::UnboundedSender<(Source, Option<CommandAttributes>)>,
    ) {
        let abandoned = self.abandoned.clone();
        let mut rx = self
            .engine
            .run_until(self.loaded.clone(), action, nodes, abandoned);
        self.engine.spawn(async move {
            while let Some(result) = rx.recv().await {
                let _ = tx.send((source, Some(result)));
            }
            let _ = tx.send((source, None));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(action: Action, name: &str, success: bool) -> CommandAttributes {
        let mut r = CommandAttributes::not_run(action, name, Some("p".into()), "boom".into());
        r.success = success;
        if success {
            r.error = None;
            r.error_class = None;
        }
        r
    }

    fn status(name: &str, state: PowerState) -> CommandAttributes {
        let mut r = result(Action::Status, name, true);
        r.state = Some(state);
        r
    }

    fn busy(action: Action, name: &str) -> CommandAttributes {
        let mut r = result(action, name, false);
        r.error = Some("controller busy".into());
        r.error_class = Some(ErrorClass::Busy);
        r
    }

    const WAIT: Duration = Duration::from_secs(10);

    #[test]
    fn without_a_wait_results_pass_at_once() {
        let mut l = Ledger::new(Action::PowerOn);
        let now = Instant::now();
        let ok = l.answered(result(Action::PowerOn, "a", true), Duration::ZERO, now);
        assert_eq!(ok.map(|r| r.confirmed), Some(None));
        let failed = l.answered(result(Action::PowerOn, "b", false), WAIT, now);
        assert!(failed.is_some(), "a failure is final whatever the wait");
        let mut s = Ledger::new(Action::Status);
        assert!(s
            .answered(status("a", PowerState::Off), WAIT, now)
            .is_some());
        assert!(l.is_done() && s.is_done());
    }

    #[test]
    fn a_confirmed_action_polls_with_growing_intervals_until_the_state_holds() {
        let mut l = Ledger::new(Action::PowerOn);
        let t0 = Instant::now();
        assert!(l
            .answered(result(Action::PowerOn, "a", true), WAIT, t0)
            .is_none());
        assert_eq!(l.next_due(), Some(t0 + FIRST_POLL));
        assert_eq!(
            l.due(t0),
            (vec![], vec![]),
            "nothing due before the first poll"
        );
        let t1 = t0 + FIRST_POLL;
        assert_eq!(l.due(t1), (vec![], vec!["a".to_string()]));
        assert_eq!(l.next_due(), None, "no second poll while one is under way");
        assert!(l.polled(&status("a", PowerState::Off), t1).is_none());
        assert_eq!(l.next_due(), Some(t1 + FIRST_POLL * 2));
        let t2 = t1 + FIRST_POLL * 2;
        l.due(t2);
        assert!(l.polled(&status("a", PowerState::Off), t2).is_none());
        assert_eq!(l.next_due(), Some(t2 + FIRST_POLL * 4));
        let t3 = t2 + FIRST_POLL * 4;
        l.due(t3);
        let done = l.polled(&status("a", PowerState::On), t3).unwrap();
        assert_eq!(
            (done.success, done.confirmed, done.state, done.action),
            (true, Some(true), Some(PowerState::On), Action::PowerOn)
        );
        assert!(l.is_done());
    }

    #[test]
    fn a_node_that_never_gets_there_fails_at_its_deadline_with_its_last_state() {
        let mut l = Ledger::new(Action::PowerOff);
        let t0 = Instant::now();
        let wait = Duration::from_secs(1);
        l.answered(result(Action::PowerOff, "a", true), wait, t0);
        let mut now;
        let last = loop {
            now = l.next_due().expect("a poll is due");
            assert!(now <= t0 + wait, "never polled past the deadline");
            l.due(now);
            if let Some(done) = l.polled(&status("a", PowerState::On), now) {
                break done;
            }
        };
        assert_eq!(now, t0 + wait, "the last poll is at the deadline");
        assert_eq!(
            (last.success, last.confirmed, last.state, last.error_class),
            (
                false,
                Some(false),
                Some(PowerState::On),
                Some(ErrorClass::Unconfirmed)
            )
        );
        assert_eq!(
            last.error.as_deref(),
            Some("did not reach off within 1s: last seen on")
        );
    }

    #[test]
    fn a_failed_poll_counts_as_unknown_and_polling_goes_on() {
        let mut l = Ledger::new(Action::Restart);
        let t0 = Instant::now();
        l.answered(result(Action::Restart, "a", true), WAIT, t0);
        l.due(t0 + FIRST_POLL);
        assert!(l
            .polled(&result(Action::Status, "a", false), t0 + FIRST_POLL)
            .is_none());
        assert!(l.next_due().is_some());
        let late = l.give_up("the server is shutting down");
        assert_eq!(late.len(), 1);
        assert_eq!(
            late[0].error.as_deref(),
            Some("not confirmed: the server is shutting down")
        );
    }

    #[test]
    fn busy_is_retried_with_backoff_then_given_up() {
        let mut l = Ledger::new(Action::PowerOn);
        let mut now = Instant::now();
        assert!(l
            .answered(busy(Action::PowerOn, "a"), Duration::ZERO, now)
            .is_none());
        for retry in 0..BUSY_RETRIES {
            let due = l.next_due().unwrap();
            assert_eq!(due - now, FIRST_BACKOFF * 2u32.pow(retry));
            now = due;
            assert_eq!(l.due(now), (vec!["a".to_string()], vec![]));
            assert_eq!(l.next_due(), None);
            let again = l.answered(busy(Action::PowerOn, "a"), Duration::ZERO, now);
            if retry + 1 < BUSY_RETRIES {
                assert!(again.is_none());
            } else {
                let last = again.expect("given up after the last retry");
                assert_eq!(last.error_class, Some(ErrorClass::Busy));
                assert_eq!(
                    last.error.as_deref(),
                    Some("controller busy (still busy after 4 tries)")
                );
            }
        }
        assert!(l.is_done());
    }

    #[test]
    fn other_failures_are_never_retried() {
        let mut l = Ledger::new(Action::PowerOn);
        let mut auth = result(Action::PowerOn, "a", false);
        auth.error_class = Some(ErrorClass::Auth);
        assert!(l.answered(auth, WAIT, Instant::now()).is_some());
        assert!(l.is_done());
    }

    #[test]
    fn a_busy_node_that_then_succeeds_is_confirmed() {
        let mut l = Ledger::new(Action::PowerOn);
        let t0 = Instant::now();
        l.answered(busy(Action::PowerOn, "a"), WAIT, t0);
        let t1 = l.next_due().unwrap();
        l.due(t1);
        assert!(l
            .answered(result(Action::PowerOn, "a", true), WAIT, t1)
            .is_none());
        let t2 = l.next_due().unwrap();
        assert_eq!(l.due(t2), (vec![], vec!["a".to_string()]));
        let done = l.polled(&status("a", PowerState::On), t2).unwrap();
        assert_eq!(done.confirmed, Some(true));
    }
}
