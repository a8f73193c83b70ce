//! The execution engine: driver runs fanned out under concurrency bounds.
//!
//! A per-node platform gets one run per node. A batch platform gets one
//! run per chunk: its nodes of one request (and of one controller value,
//! with `serialize_by`) cut into even chunks of at most `batch_max`.
//!
//! Bounds, acquired always in this order so no two runs can wait on each
//! other: the nodes' own locks in name order (never two runs on one node),
//! the shared controller's lock (`serialize_by`), the platform's bound, the
//! global bound. A run's timeout starts when its driver starts, not while
//! queued.

use crate::driver::{self, batch, interpret, spawn};
use crate::load::Loaded;
use crate::topology::{Node, Platform};
use power_proto::wire::{Action, CommandAttributes};
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Notify, OwnedMutexGuard, OwnedSemaphorePermit, Semaphore};

/// The default bound on driver runs at once (the reference's `num_worker_commands`).
pub const DEFAULT_CONCURRENCY: usize = 50;

/// Ignored answer lines logged per batch run; the rest are only counted.
const IGNORED_LOGGED: usize = 10;

/// Runs drivers. Cheap to share: clone the `Arc`.
#[derive(Debug)]
pub struct Engine {
    global: Arc<Semaphore>,
    nodes: Locks,
    controllers: Locks,
    platforms: Bounds,
    inherited: Vec<(OsString, OsString)>,
    stop: watch::Sender<bool>,
    closed: AtomicBool,
    in_flight: AtomicUsize,
    idle: Notify,
}

/// Named async locks, made on first use.
#[derive(Debug, Default)]
struct Locks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl Locks {
    async fn lock(&self, key: &str) -> OwnedMutexGuard<()> {
        let lock = self
            .0
            .lock()
            .expect("lock table poisoned")
            .entry(key.to_string())
            .or_default()
            .clone();
        lock.lock_owned().await
    }
}

/// Per-platform bounds by platform name. They belong to the engine, not to
/// a load, so runs of the topology before and after a reload share one
/// bound; a reload that changes a platform's bound starts a new one.
#[derive(Debug, Default)]
struct Bounds(Mutex<HashMap<String, (usize, Arc<Semaphore>)>>);

impl Bounds {
    async fn acquire(&self, platform: &Platform) -> Option<OwnedSemaphorePermit> {
        let limit = platform.concurrency?;
        let semaphore = {
            let mut table = self.0.lock().expect("bound table poisoned");
            let entry = table
                .entry(platform.name.clone())
                .or_insert_with(|| (limit, Arc::new(Semaphore::new(limit))));
            if entry.0 != limit {
                *entry = (limit, Arc::new(Semaphore::new(limit)));
            }
            entry.1.clone()
        };
        Some(semaphore.acquire_owned().await.expect("never closed"))
    }
}

/// Everything one run holds while its driver runs; released on drop.
struct Held {
    _nodes: Vec<OwnedMutexGuard<()>>,
    _controller: Option<OwnedMutexGuard<()>>,
    _platform: Option<OwnedSemaphorePermit>,
    _global: OwnedSemaphorePermit,
}

impl Engine {
    /// An engine running at most `concurrency` drivers at once, with
    /// `environment` (usually the server's own, [`std::env::vars_os`]) as
    /// the base of every driver's environment, less what is private to the
    /// server (`POWER_SERVER_*`: the JWT secret never reaches a driver).
    pub fn new(
        concurrency: usize,
        environment: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Arc<Self> {
        let inherited = environment
            .into_iter()
            .filter(|(k, _)| !k.to_str().is_some_and(driver::plan::is_server_private))
            .collect();
        Arc::new(Engine {
            global: Arc::new(Semaphore::new(concurrency.max(1))),
            nodes: Locks::default(),
            controllers: Locks::default(),
            platforms: Bounds::default(),
            inherited,
            stop: watch::channel(false).0,
            closed: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
        })
    }

    /// Run `action` on `nodes`; results arrive as each node finishes.
    /// Unknown nodes are answered at once as missing. Runs go on to the end
    /// even if the receiver is dropped: a power action is never abandoned
    /// half way because a client went away.
    pub fn run(
        self: &Arc<Self>,
        loaded: Arc<Loaded>,
        action: Action,
        nodes: Vec<String>,
    ) -> mpsc::UnboundedReceiver<CommandAttributes> {
        let (tx, rx) = mpsc::unbounded_channel();
        // Nodes of batch platforms, by platform and controller value.
        let mut batches: BTreeMap<(Arc<str>, Option<String>), Vec<String>> = BTreeMap::new();
        for name in nodes {
            let Some(node) = loaded.topology.node(&name) else {
                let _ = tx.send(CommandAttributes::missing(action, &name));
                continue;
            };
            // Count the run before looking at `closed`: `shutdown` sets
            // `closed` before counting, so one of the two always sees the other.
            let counted = InFlight::count(self.clone(), 1);
            if self.closed.load(Ordering::SeqCst) {
                drop(counted);
                let error = "not run: the server is shutting down".to_string();
                let _ = tx.send(CommandAttributes::not_run(
                    action,
                    &name,
                    Some(node.platform.to_string()),
                    error,
                ));
                continue;
            }
            let platform = &loaded.topology.platforms[&*node.platform];
            if platform.batch.is_some() {
                // Counted again per chunk below.
                drop(counted);
                let controller = controller_key(platform, node);
                batches
                    .entry((node.platform.clone(), controller))
                    .or_default()
                    .push(name);
                continue;
            }
            let (engine, loaded, tx) = (self.clone(), loaded.clone(), tx.clone());
            tokio::spawn(async move {
                // Counted until dropped, even if the run panics.
                let _counted = counted;
                let result = engine.run_one(&loaded, action, &name).await;
                let _ = tx.send(result);
            });
        }
        for ((platform, _), names) in batches {
            let max = loaded.topology.platforms[&*platform]
                .batch
                .expect("a batch platform");
            for chunk in chunks(names, max) {
                let counted = InFlight::count(self.clone(), chunk.len());
                let (engine, loaded, tx) = (self.clone(), loaded.clone(), tx.clone());
                tokio::spawn(async move {
                    let _counted = counted;
                    engine.run_chunk(&loaded, action, chunk, &tx).await;
                });
            }
        }
        rx
    }

    /// Run `action` on `nodes` and return the results in the order asked.
    pub async fn run_all(
        self: &Arc<Self>,
        loaded: Arc<Loaded>,
        action: Action,
        nodes: Vec<String>,
    ) -> Vec<CommandAttributes> {
        let rx = self.run(loaded, action, nodes.clone());
        in_request_order(rx, &nodes).await
    }

    /// Wait for every bound a run on `nodes` (sorted by name, all of
    /// `platform`, sharing `controller`) needs.
    async fn hold(&self, nodes: &[&str], platform: &Platform, controller: Option<String>) -> Held {
        let mut guards = Vec::with_capacity(nodes.len());
        for name in nodes {
            guards.push(self.nodes.lock(name).await);
        }
        let controller = match controller {
            Some(key) => Some(self.controllers.lock(&key).await),
            None => None,
        };
        let platform = self.platforms.acquire(platform).await;
        let global = self
            .global
            .clone()
            .acquire_owned()
            .await
            .expect("never closed");
        Held {
            _nodes: guards,
            _controller: controller,
            _platform: platform,
            _global: global,
        }
    }

    async fn run_one(&self, loaded: &Loaded, action: Action, name: &str) -> CommandAttributes {
        let node = loaded.topology.node(name).expect("checked by run");
        let platform = &loaded.topology.platforms[&*node.platform];
        let driver = &loaded.drivers.by_platform[&*node.platform];
        let _held = self
            .hold(&[name], platform, controller_key(platform, node))
            .await;

        let invocation = driver::plan(&self.inherited, driver.path.clone(), platform, node, action);
        let secrets = driver::plan::secrets(node);
        let (outcome, captured) = spawn::run(&invocation, self.stop.subscribe(), None).await;
        let result = interpret::interpret(
            action,
            name,
            &platform.name,
            platform.status_off_exit_code,
            &outcome,
            &secrets,
        );
        log_run(&result, &captured, &secrets);
        result
    }

    /// One batch run: `names` (distinct nodes of one batch platform and
    /// controller value) on the driver's stdin, each answer line sent on as
    /// it arrives, then every silent node failed.
    async fn run_chunk(
        &self,
        loaded: &Loaded,
        action: Action,
        mut names: Vec<String>,
        tx: &mpsc::UnboundedSender<CommandAttributes>,
    ) {
        names.sort_unstable();
        let nodes: Vec<&Node> = names
            .iter()
            .map(|n| loaded.topology.node(n).expect("checked by run"))
            .collect();
        let platform = &loaded.topology.platforms[&*nodes[0].platform];
        let driver = &loaded.drivers.by_platform[&platform.name];
        let sorted: Vec<&str> = names.iter().map(String::as_str).collect();
        let _held = self
            .hold(&sorted, platform, controller_key(platform, nodes[0]))
            .await;

        let invocation = driver::plan_batch(
            &self.inherited,
            driver.path.clone(),
            platform,
            &nodes,
            action,
        );
        let mut secrets: Vec<String> = nodes
            .iter()
            .flat_map(|n| driver::plan::secrets(n))
            .collect();
        secrets.sort_unstable();
        secrets.dedup();
        let mut ledger = batch::Ledger::new(action, &platform.name, names.clone(), secrets.clone());
        let mut ignored = 0usize;
        let mut answer = |line: Vec<u8>, ledger: &mut batch::Ledger, started: Instant| match ledger
            .accept(&line, started.elapsed())
        {
            Ok(result) => {
                log_answer(&result);
                let _ = tx.send(result);
            }
            Err(why) => {
                ignored += 1;
                if ignored <= IGNORED_LOGGED {
                    let line = ledger.mask(&String::from_utf8_lossy(&line));
                    tracing::warn!(platform = %platform.name, %action, %line, "batch driver line ignored: {why}");
                }
            }
        };

        let started = Instant::now();
        let (lines_tx, mut lines) = mpsc::unbounded_channel();
        let run = spawn::run(&invocation, self.stop.subscribe(), Some(lines_tx));
        tokio::pin!(run);
        let (outcome, captured) = loop {
            tokio::select! {
                biased;
                Some(line) = lines.recv() => answer(line, &mut ledger, started),
                done = &mut run => break done,
            }
        };
        // Lines read before the reader finished, not yet taken.
        while let Ok(line) = lines.try_recv() {
            answer(line, &mut ledger, started);
        }
        let silent = ledger.unanswered(&outcome);
        tracing::info!(
            platform = %platform.name,
            %action,
            nodes = names.len(),
            answered = names.len() - silent.len(),
            ignored,
            exit = ?outcome.exit,
            duration_ms = outcome.duration.as_millis() as u64,
            "batch driver run"
        );
        if !captured.stderr.is_empty() {
            let stderr = interpret::redact(&String::from_utf8_lossy(&captured.stderr), &secrets);
            tracing::debug!(platform = %platform.name, %stderr, "batch driver stderr");
        }
        for result in silent {
            log_answer(&result);
            let _ = tx.send(result);
        }
    }

    /// Refuse new runs, let running drivers finish within `grace`, then kill
    /// what is left and wait for it to be gone.
    pub async fn shutdown(&self, grace: Duration) {
        self.closed.store(true, Ordering::SeqCst);
        if tokio::time::timeout(grace, self.wait_idle()).await.is_err() {
            tracing::warn!(
                running = self.in_flight.load(Ordering::SeqCst),
                "grace period over: killing drivers"
            );
            let _ = self.stop.send(true);
            self.wait_idle().await;
        }
    }

    async fn wait_idle(&self) {
        loop {
            let idle = self.idle.notified();
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }

    /// Node runs started and not yet finished (queued ones included).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
}

/// The lock key of the controller `node` shares under `platform`'s
/// `serialize_by`, if any.
fn controller_key(platform: &Platform, node: &Node) -> Option<String> {
    let var = platform.serialize_by.as_ref()?;
    let value = node.variables.get(var)?;
    Some(format!("{var}={value}"))
}

/// `names` in chunks of even size, at most `max` each. A node asked for
/// twice goes to a later chunk than its first time, so no chunk waits on
/// its own lock.
pub fn chunks(names: Vec<String>, max: usize) -> Vec<Vec<String>> {
    let mut rounds: Vec<Vec<String>> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(names.len());
    for name in names {
        let round = seen.entry(name.clone()).or_insert(0);
        if rounds.len() <= *round {
            rounds.push(Vec::new());
        }
        rounds[*round].push(name);
        *round += 1;
    }
    let mut out = Vec::new();
    for round in rounds {
        let count = round.len().div_ceil(max.max(1));
        let (base, extra) = (round.len() / count, round.len() % count);
        let mut names = round.into_iter();
        for i in 0..count {
            let size = base + usize::from(i < extra);
            out.push(names.by_ref().take(size).collect());
        }
    }
    out
}

/// Every result from `results`, in the order `nodes` asked for them (the
/// engine answers in the order runs finish). A node asked for twice gets
/// both its results.
pub async fn in_request_order(
    mut results: mpsc::UnboundedReceiver<CommandAttributes>,
    nodes: &[String],
) -> Vec<CommandAttributes> {
    let mut by_node: HashMap<String, std::collections::VecDeque<CommandAttributes>> =
        HashMap::with_capacity(nodes.len());
    while let Some(r) = results.recv().await {
        by_node.entry(r.node_name.clone()).or_default().push_back(r);
    }
    nodes
        .iter()
        .filter_map(|n| by_node.get_mut(n)?.pop_front())
        .collect()
}

/// Node runs counted in `in_flight` for as long as this lives.
struct InFlight(Arc<Engine>, usize);

impl InFlight {
    fn count(engine: Arc<Engine>, nodes: usize) -> Self {
        engine.in_flight.fetch_add(nodes, Ordering::SeqCst);
        InFlight(engine, nodes)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(self.1, Ordering::SeqCst) == self.1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// A batch node's result: failures at info, as a per-node run's; successes
/// at debug, as one line per node of a 1,000-node status would drown the log.
fn log_answer(result: &CommandAttributes) {
    if result.success {
        tracing::debug!(node = %result.node_name, action = %result.action, state = ?result.state, "batch answer");
    } else {
        tracing::info!(
            node = %result.node_name,
            action = %result.action,
            error = result.error.as_deref().unwrap_or(""),
            duration_ms = result.duration_ms,
            "batch answer"
        );
    }
}

fn log_run(result: &CommandAttributes, captured: &spawn::Captured, secrets: &[String]) {
    let tail = |bytes: &[u8]| interpret::redact(&String::from_utf8_lossy(bytes), secrets);
    tracing::info!(
        node = %result.node_name,
        action = %result.action,
        success = result.success,
        state = ?result.state,
        exit_code = ?result.exit_code,
        duration_ms = result.duration_ms,
        error = result.error.as_deref().unwrap_or(""),
        "driver run"
    );
    if !captured.stdout.is_empty() || !captured.stderr.is_empty() {
        tracing::debug!(node = %result.node_name, stdout = %tail(&captured.stdout), stderr = %tail(&captured.stderr), "driver output");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(prefix: &str, n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("{prefix}{i}")).collect()
    }

    #[test]
    fn chunks_are_even_and_never_over_the_maximum() {
        let sizes = |n, max| {
            chunks(names("n", n), max)
                .iter()
                .map(Vec::len)
                .collect::<Vec<_>>()
        };
        assert_eq!(sizes(1008, 256), [252, 252, 252, 252]);
        assert_eq!(sizes(5, 2), [2, 2, 1]);
        assert_eq!(sizes(3, 256), [3]);
        assert_eq!(sizes(0, 4), Vec::<usize>::new());
        let all: Vec<String> = chunks(names("n", 7), 3).concat();
        assert_eq!(all, names("n", 7));
    }

    #[test]
    fn a_node_asked_twice_goes_to_a_later_chunk() {
        let asked: Vec<String> = ["a", "b", "a", "c", "a"].map(String::from).into();
        let got = chunks(asked, 10);
        assert_eq!(got, [vec!["a", "b", "c"], vec!["a"], vec!["a"]]);
    }
}
