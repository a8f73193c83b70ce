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

use crate::engine::{Engine, Waiting};
use crate::load::Loaded;
use power_proto::wire::{Action, CommandAttributes, ErrorClass, PowerState};
use std::collections::{HashMap, HashSet, VecDeque};
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

/// How long a graceful off gives nodes to shut down when the request does
/// not say (`grace`).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(120);

/// The longest confirmation (or grace) a request may ask for.
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
    target: PowerState,
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

/// Runs the follow-up wants now: `action` on `nodes`, as a retry or hard
/// off, or a status poll.
#[derive(Debug, PartialEq, Eq)]
pub struct Due {
    source: Source,
    /// The action to run.
    pub action: Action,
    /// The nodes to run it on.
    pub nodes: Vec<String>,
}

/// The follow-up of one request's results.
#[derive(Debug, Default)]
pub struct Ledger {
    tries: HashMap<String, u32>,
    busy: HashMap<String, Busy>,
    pending: HashMap<String, Pending>,
    /// Nodes a graceful off switches off hard, and since when.
    hard: Vec<(String, Instant)>,
    /// Nodes a graceful off switched off hard.
    forced: HashSet<String>,
}

impl Ledger {
    /// A result of the request's action (or of a graceful off's
    /// `shutdown`, or of its hard off), at `now`; `wait` is how long to
    /// confirm it (zero: not at all), and for a `shutdown`, the grace.
    /// Returns the node's final result if it is final now.
    pub fn answered(
        &mut self,
        mut result: CommandAttributes,
        wait: Duration,
        now: Instant,
    ) -> Option<CommandAttributes> {
        if result.error_class == Some(ErrorClass::Busy) {
            return self.busy(result, now);
        }
        if result.action == Action::Shutdown {
            return self.shut_down(result, wait, now);
        }
        if self.forced.contains(&result.node_name) {
            result.fallback = Some(true);
        }
        match result.action.target_state() {
            Some(target) if result.success && !wait.is_zero() => {
                self.hold(result, target, wait, now);
                None
            }
            _ => Some(result),
        }
    }

    /// A graceful off's `shutdown`: done, it is confirmed within the grace
    /// (and else switched off hard); not supported by the platform, the
    /// node is switched off hard at once; failed otherwise, that is the
    /// off's result (a hard off would meet the same credentials or
    /// network).
    fn shut_down(
        &mut self,
        mut result: CommandAttributes,
        grace: Duration,
        now: Instant,
    ) -> Option<CommandAttributes> {
        if result.success {
            self.hold(result, PowerState::Off, grace, now);
            return None;
        }
        if result.error_class == Some(ErrorClass::Unsupported) {
            self.force(result.node_name, now);
            return None;
        }
        result.action = Action::PowerOff;
        Some(result)
    }

    fn hold(
        &mut self,
        result: CommandAttributes,
        target: PowerState,
        wait: Duration,
        now: Instant,
    ) {
        let name = result.node_name.clone();
        self.pending.insert(
            name,
            Pending {
                held: result,
                target,
                wait,
                deadline: now + wait,
                next: (now + FIRST_POLL).min(now + wait),
                interval: FIRST_POLL,
                polling: false,
            },
        );
    }

    fn force(&mut self, node: String, now: Instant) {
        self.forced.insert(node.clone());
        self.hard.push((node, now));
    }

    fn busy(&mut self, mut result: CommandAttributes, now: Instant) -> Option<CommandAttributes> {
        let tries = self.tries.entry(result.node_name.clone()).or_insert(0);
        if *tries >= BUSY_RETRIES {
            let tried = *tries + 1;
            if let Some(error) = &mut result.error {
                error.push_str(&format!(" (still busy after {tried} tries)"));
            }
            if result.action == Action::Shutdown {
                result.action = Action::PowerOff;
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
    /// is over (a graceful off's node still on then is switched off hard
    /// instead).
    pub fn polled(
        &mut self,
        status: &CommandAttributes,
        now: Instant,
    ) -> Option<CommandAttributes> {
        let name = status.node_name.as_str();
        let pending = self.pending.get_mut(name)?;
        pending.polling = false;
        let seen = if status.success {
            status.state.unwrap_or(PowerState::Unknown)
        } else {
            PowerState::Unknown
        };
        if seen == pending.target {
            let mut held = self.pending.remove(name)?.held;
            if held.action == Action::Shutdown {
                held.action = Action::PowerOff;
                held.fallback = Some(false);
            }
            held.confirmed = Some(true);
            held.state = Some(seen);
            return Some(held);
        }
        if now >= pending.deadline {
            let pending = self.pending.remove(name)?;
            if pending.held.action == Action::Shutdown {
                self.force(pending.held.node_name, now);
                return None;
            }
            return Some(unconfirmed(
                pending.held,
                pending.target,
                seen,
                pending.wait,
            ));
        }
        pending.interval = (pending.interval * 2).min(MAX_POLL);
        pending.next = (now + pending.interval).min(pending.deadline);
        None
    }

    /// The runs due at `now`: busy nodes' retries (of the action each was
    /// busy with), graceful offs' hard offs, and status polls; each node
    /// is marked as under way.
    pub fn due(&mut self, now: Instant) -> Vec<Due> {
        let mut runs: Vec<Due> = Vec::new();
        let mut add = |source: Source, action: Action, node: String| match runs
            .iter_mut()
            .find(|d| d.source == source && d.action == action)
        {
            Some(due) => due.nodes.push(node),
            None => runs.push(Due {
                source,
                action,
                nodes: vec![node],
            }),
        };
        let retries: Vec<String> = self
            .busy
            .iter()
            .filter(|(_, b)| b.due <= now)
            .map(|(n, _)| n.clone())
            .collect();
        for name in retries {
            let busy = self.busy.remove(&name).expect("listed just now");
            add(Source::Action, busy.last.action, name);
        }
        for (name, _) in self.hard.drain(..) {
            add(Source::Action, Action::PowerOff, name);
        }
        // Nodes due a little later come along: answers of one chunk arrive
        // microseconds apart, and one status run should poll them all.
        for (name, pending) in &mut self.pending {
            if !pending.polling && pending.next <= now + pending.interval / 2 {
                pending.polling = true;
                add(Source::Poll, Action::Status, name.clone());
            }
        }
        runs
    }

    /// When the next run is due.
    pub fn next_due(&self) -> Option<Instant> {
        let hard = self.hard.iter().map(|(_, since)| *since);
        let retries = self.busy.values().map(|b| b.due);
        let polls = self.pending.values().filter(|p| !p.polling).map(|p| p.next);
        hard.chain(retries).chain(polls).min()
    }

    /// Nothing held: every node has its final result.
    pub fn is_done(&self) -> bool {
        self.busy.is_empty() && self.pending.is_empty() && self.hard.is_empty()
    }

    /// Every node still held, as its final result now (the server is
    /// shutting down): busy ones as last answered, unconfirmed ones as
    /// not confirmed, graceful offs as not switched off.
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
        for (node, _) in self.hard.drain(..) {
            let error = format!("not switched off: {why}");
            results.push(CommandAttributes::not_run(
                Action::PowerOff,
                &node,
                None,
                error,
            ));
        }
        for result in &mut results {
            if result.action == Action::Shutdown {
                result.action = Action::PowerOff;
            }
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

/// What a request asks of the follow-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asked {
    /// How long to confirm the action.
    pub wait: Wait,
    /// A graceful off: shut down, and switch off hard what is still on
    /// after this long.
    pub grace: Option<Duration>,
}

/// Runs `action` on `nodes` as [`Engine::run_until`] does, with the
/// follow-up: busy nodes retried, the action confirmed as `asked.wait`
/// says, and for a graceful off (`asked.grace`, `action` power_off) a
/// `shutdown` first, then a hard off of the nodes still on after the
/// grace. [`FollowUp::recv`] gives each node's result once it is final;
/// the nodes of a staged power-on waiting for their turn are listed at
/// once.
pub fn run(
    engine: &Arc<Engine>,
    loaded: Arc<Loaded>,
    action: Action,
    nodes: Vec<String>,
    abandoned: Option<watch::Receiver<bool>>,
    asked: Asked,
) -> (FollowUp, Vec<Waiting>) {
    let grace = asked.grace.filter(|_| action == Action::PowerOff);
    let first_action = if grace.is_some() {
        Action::Shutdown
    } else {
        action
    };
    let (first, waiting) =
        engine.run_with_turns(loaded.clone(), first_action, nodes, abandoned.clone());
    let (more_tx, more) = mpsc::unbounded_channel();
    let follow = FollowUp {
        first: Some(first),
        more,
        more_tx,
        runs: 0,
        closing: engine.closing(),
        ready: VecDeque::new(),
        now: Instant::now(),
        engine: engine.clone(),
        waits: Waits::new(&loaded, action, asked.wait),
        grace: grace.unwrap_or_default(),
        loaded,
        abandoned,
        ledger: Ledger::default(),
    };
    (follow, waiting)
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
            Wait::Platform if platforms.values().any(|p| p.run.confirm.is_some()) => {
                Waits::ByPlatform
            }
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
                    loaded.topology.platforms[&**platform].run.confirm
                })
                .unwrap_or(Duration::ZERO),
        }
    }
}

/// One request's follow-up under way: its results, each once final.
/// Driven by whoever reads them ([`FollowUp::recv`]), with no task of its
/// own: the results of a request with nothing to follow pass through
/// without a hop.
pub struct FollowUp {
    /// The first run's results, until it is over.
    first: Option<mpsc::UnboundedReceiver<CommandAttributes>>,
    /// Results of the retries and polls: `None` when one run is over.
    more: mpsc::UnboundedReceiver<(Source, Option<CommandAttributes>)>,
    more_tx: mpsc::UnboundedSender<(Source, Option<CommandAttributes>)>,
    /// Retries and polls under way.
    runs: usize,
    closing: watch::Receiver<bool>,
    /// Final results not yet given.
    ready: VecDeque<CommandAttributes>,
    /// The time results are taken at: read once each time [`Self::recv`]
    /// wakes, not once per result (the clock showed in profiles), so a
    /// burst of results shares it.
    now: Instant,
    engine: Arc<Engine>,
    loaded: Arc<Loaded>,
    abandoned: Option<watch::Receiver<bool>>,
    waits: Waits,
    grace: Duration,
    ledger: Ledger,
}

impl FollowUp {
    /// The next node's final result; `None` once every node has had its.
    /// Cancel-safe: it holds nothing across its one await.
    pub async fn recv(&mut self) -> Option<CommandAttributes> {
        /// What woke the wait.
        enum Woke {
            First(Option<CommandAttributes>),
            More(Source, Option<CommandAttributes>),
            Other,
        }
        loop {
            if let Some(result) = self.try_recv() {
                return Some(result);
            }
            if self.first.is_none() && self.runs == 0 && self.ledger.is_done() {
                return None;
            }
            let due = self.ledger.next_due();
            let first_open = self.first.is_some();
            let held = !self.ledger.is_done();
            let mut closing = self.closing.clone();
            let woke = tokio::select! {
                result = recv_some(&mut self.first), if first_open => Woke::First(result),
                Some((source, result)) = self.more.recv(), if self.runs > 0 => {
                    Woke::More(source, result)
                }
                // No retry or poll can start once shutdown has begun.
                Ok(_) = closing.wait_for(|closing| *closing), if held => {
                    let given_up = self.ledger.give_up("the server is shutting down");
                    self.ready.extend(given_up);
                    Woke::Other
                }
                () = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                    for due in self.ledger.due(Instant::now()) {
                        self.runs += 1;
                        self.spawn_run(due);
                    }
                    Woke::Other
                }
            };
            self.now = Instant::now();
            match woke {
                Woke::First(Some(result)) => self.take(Source::Action, result),
                Woke::First(None) => self.first = None,
                Woke::More(source, Some(result)) => self.take(source, result),
                Woke::More(_, None) => self.runs -= 1,
                Woke::Other => {}
            }
        }
    }

    /// A final result already to hand, without waiting.
    pub fn try_recv(&mut self) -> Option<CommandAttributes> {
        while self.ready.is_empty() {
            let result = self.first.as_mut()?.try_recv().ok()?;
            self.take(Source::Action, result);
        }
        self.ready.pop_front()
    }

    fn take(&mut self, source: Source, result: CommandAttributes) {
        let now = self.now;
        let done = match source {
            Source::Action if result.action == Action::Shutdown => {
                self.ledger.answered(result, self.grace, now)
            }
            Source::Action => {
                let wait = self.waits.of(&self.loaded, &result.node_name);
                self.ledger.answered(result, wait, now)
            }
            Source::Poll => self.ledger.polled(&result, now),
        };
        self.ready.extend(done);
    }

    fn spawn_run(&self, due: Due) {
        let abandoned = self.abandoned.clone();
        let mut rx = self
            .engine
            .run_until(self.loaded.clone(), due.action, due.nodes, abandoned);
        let (source, tx) = (due.source, self.more_tx.clone());
        self.engine.spawn(async move {
            while let Some(result) = rx.recv().await {
                let _ = tx.send((source, Some(result)));
            }
            let _ = tx.send((source, None));
        });
    }
}

/// The next of `rx`'s results (`None` when it is over); never, without one.
async fn recv_some(
    rx: &mut Option<mpsc::UnboundedReceiver<CommandAttributes>>,
) -> Option<CommandAttributes> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
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

    fn poll(nodes: &[&str]) -> Due {
        Due {
            source: Source::Poll,
            action: Action::Status,
            nodes: nodes.iter().map(ToString::to_string).collect(),
        }
    }

    fn retry(action: Action, nodes: &[&str]) -> Due {
        Due {
            source: Source::Action,
            action,
            nodes: nodes.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn without_a_wait_results_pass_at_once() {
        let mut l = Ledger::default();
        let now = Instant::now();
        let ok = l.answered(result(Action::PowerOn, "a", true), Duration::ZERO, now);
        assert_eq!(ok.map(|r| r.confirmed), Some(None));
        let failed = l.answered(result(Action::PowerOn, "b", false), WAIT, now);
        assert!(failed.is_some(), "a failure is final whatever the wait");
        let mut s = Ledger::default();
        assert!(s
            .answered(status("a", PowerState::Off), WAIT, now)
            .is_some());
        assert!(l.is_done() && s.is_done());
    }

    #[test]
    fn a_confirmed_action_polls_with_growing_intervals_until_the_state_holds() {
        let mut l = Ledger::default();
        let t0 = Instant::now();
        assert!(l
            .answered(result(Action::PowerOn, "a", true), WAIT, t0)
            .is_none());
        assert_eq!(l.next_due(), Some(t0 + FIRST_POLL));
        assert_eq!(l.due(t0), [], "nothing due before the first poll");
        let t1 = t0 + FIRST_POLL;
        assert_eq!(l.due(t1), [poll(&["a"])]);
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
        let mut l = Ledger::default();
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
        let mut l = Ledger::default();
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
        let mut l = Ledger::default();
        let mut now = Instant::now();
        assert!(l
            .answered(busy(Action::PowerOn, "a"), Duration::ZERO, now)
            .is_none());
        for attempt in 0..BUSY_RETRIES {
            let due = l.next_due().unwrap();
            assert_eq!(due - now, FIRST_BACKOFF * 2u32.pow(attempt));
            now = due;
            assert_eq!(l.due(now), [retry(Action::PowerOn, &["a"])]);
            assert_eq!(l.next_due(), None);
            let again = l.answered(busy(Action::PowerOn, "a"), Duration::ZERO, now);
            if attempt + 1 < BUSY_RETRIES {
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
        let mut l = Ledger::default();
        let mut auth = result(Action::PowerOn, "a", false);
        auth.error_class = Some(ErrorClass::Auth);
        assert!(l.answered(auth, WAIT, Instant::now()).is_some());
        assert!(l.is_done());
    }

    #[test]
    fn a_busy_node_that_then_succeeds_is_confirmed() {
        let mut l = Ledger::default();
        let t0 = Instant::now();
        l.answered(busy(Action::PowerOn, "a"), WAIT, t0);
        let t1 = l.next_due().unwrap();
        l.due(t1);
        assert!(l
            .answered(result(Action::PowerOn, "a", true), WAIT, t1)
            .is_none());
        let t2 = l.next_due().unwrap();
        assert_eq!(l.due(t2), [poll(&["a"])]);
        let done = l.polled(&status("a", PowerState::On), t2).unwrap();
        assert_eq!(done.confirmed, Some(true));
    }

    #[test]
    fn a_graceful_off_confirms_the_shutdown_or_falls_back_to_a_hard_off() {
        let mut l = Ledger::default();
        let t0 = Instant::now();
        let grace = Duration::from_secs(2);
        for node in ["down", "on", "none"] {
            let mut r = result(Action::Shutdown, node, node != "none");
            if node == "none" {
                r.error_class = Some(ErrorClass::Unsupported);
            }
            assert!(l.answered(r, grace, t0).is_none(), "{node} held");
        }
        // No shutdown on its platform: switched off hard at once.
        assert_eq!(l.due(t0), [retry(Action::PowerOff, &["none"])]);
        let hard = l
            .answered(result(Action::PowerOff, "none", true), Duration::ZERO, t0)
            .unwrap();
        assert_eq!((hard.action, hard.fallback), (Action::PowerOff, Some(true)));
        // Polled: one shuts down in time, one stays on past the grace.
        let t1 = l.next_due().unwrap();
        let mut due = l.due(t1);
        due[0].nodes.sort();
        assert_eq!(due, [poll(&["down", "on"])]);
        let down = l.polled(&status("down", PowerState::Off), t1).unwrap();
        assert_eq!(
            (down.action, down.success, down.fallback, down.confirmed),
            (Action::PowerOff, true, Some(false), Some(true))
        );
        assert!(l.polled(&status("on", PowerState::On), t1).is_none());
        let late = t0 + grace;
        loop {
            let at = l.next_due().unwrap();
            let due = l.due(at);
            if due == [retry(Action::PowerOff, &["on"])] {
                assert_eq!(at, late.max(at), "the hard off only after the grace");
                break;
            }
            assert_eq!(due, [poll(&["on"])]);
            assert!(l.polled(&status("on", PowerState::On), at).is_none());
        }
        let forced = l
            .answered(result(Action::PowerOff, "on", true), Duration::ZERO, late)
            .unwrap();
        assert_eq!(forced.fallback, Some(true));
        assert!(l.is_done());
    }

    #[test]
    fn a_graceful_off_that_fails_otherwise_is_the_offs_failure() {
        let mut l = Ledger::default();
        let mut r = result(Action::Shutdown, "a", false);
        r.error_class = Some(ErrorClass::Auth);
        let done = l.answered(r, WAIT, Instant::now()).unwrap();
        assert_eq!(
            (done.action, done.error_class),
            (Action::PowerOff, Some(ErrorClass::Auth))
        );
        assert!(l.is_done());
    }
}
