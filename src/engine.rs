//! The execution engine: driver runs fanned out under concurrency bounds.
//!
//! A per-node platform gets one run per node. A batch platform gets one
//! run per chunk: its nodes of one request (and of one controller value,
//! with `serialize_by`; and of one process, when persistent) cut into even
//! chunks of at most `batch_max`.
//!
//! Bounds, acquired always in this order so no two runs can wait on each
//! other: the nodes' own locks in name order (never two runs on one node),
//! the shared controller's lock (`serialize_by`), the request's share (no
//! request holds more than three quarters of a bound), the platform's
//! bound, the global bound. A run's timeout starts when its driver starts, not while
//! queued.

use crate::driver::{self, batch, interpret, persistent, spawn, Exit, Outcome};
use crate::load::Loaded;
use crate::metrics::{self, Metrics};
use crate::pace::{Pacer, Rate};
use crate::topology::{Node, Platform};
use power_proto::wire::{Action, CommandAttributes};
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Notify, OwnedMutexGuard, OwnedSemaphorePermit, Semaphore};

/// The default bound on driver runs at once (the reference's `num_worker_commands`).
pub const DEFAULT_CONCURRENCY: usize = 50;

/// Why a node was not run: shutdown began before its driver could start.
const NOT_RUN: &str = "not run: the server is shutting down";

/// Why a node of a status was not run: its client went away first.
const ABANDONED: &str = "not run: the client went away";

/// A run's place in its request: the request's share of the bound, and
/// (for a status) whether its client has gone, which cancels the runs
/// still waiting. A power action always runs to its end.
#[derive(Clone)]
struct Turn {
    share: Arc<Semaphore>,
    abandoned: Option<watch::Receiver<bool>>,
    /// A staged power-on's start time: nothing is taken before it.
    start_at: Option<tokio::time::Instant>,
}

/// A node of a staged power-on, and when its driver may start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// The node.
    pub node: String,
    /// Its start time.
    pub starts: tokio::time::Instant,
}

/// Ignored answer lines logged per batch run; the rest are only counted.
const IGNORED_LOGGED: usize = 10;

/// How much nicer than the API's threads the engine's own run: under a
/// load of driver runs, a request's answer still gets the CPU first
/// (measured: `/healthz` p99 during 10,000 per-node runs 9.2 -> 3.0 ms).
pub const ENGINE_NICE: i32 = 10;

/// A runtime of the engine's own, with [`ENGINE_NICE`] threads, one per
/// core: the bookkeeping of thousands of driver runs (their pipes, timers
/// and results) then waits while the API's threads answer requests. Shut
/// down without waiting when dropped, so it may be dropped anywhere.
#[derive(Debug)]
pub struct Workers(Option<tokio::runtime::Runtime>);

impl Workers {
    /// Start the runtime's threads.
    pub fn start() -> std::io::Result<Self> {
        // The same for every thread, however made: a blocking-pool thread
        // is started by a worker, already nicer, whose niceness it inherits.
        let nice = spawn::this_thread_nice() + ENGINE_NICE;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name("power-engine")
            .on_thread_start(move || spawn::set_this_thread_nice(nice))
            .enable_all()
            .build()?;
        Ok(Workers(Some(runtime)))
    }

    /// Where to spawn onto it.
    pub fn handle(&self) -> tokio::runtime::Handle {
        self.0
            .as_ref()
            .expect("running until dropped")
            .handle()
            .clone()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Runs drivers. Cheap to share: clone the `Arc`.
#[derive(Debug)]
pub struct Engine {
    global: Arc<Semaphore>,
    /// The global bound's size.
    concurrency: usize,
    nodes: Locks,
    controllers: Locks,
    platforms: Bounds,
    /// Persistent drivers by platform and controller value.
    persistent: Mutex<HashMap<String, Arc<tokio::sync::Mutex<persistent::Slot>>>>,
    /// Persistent driver processes per platform and controller value.
    lanes: usize,
    inherited: Vec<(OsString, OsString)>,
    stop: watch::Sender<bool>,
    /// Set when shutdown begins: runs still waiting for their bounds give up.
    closing: watch::Sender<bool>,
    closed: AtomicBool,
    in_flight: AtomicUsize,
    idle: Notify,
    /// Where runs (and what they spawn) go: a runtime of the engine's own,
    /// or, when `None`, the one calling [`Engine::run`].
    tasks: Option<tokio::runtime::Handle>,
    /// Where persistent platforms' chunks run instead, when set
    /// ([`EngineOptions::persistent_chunks`]).
    persistent_chunks: Option<tokio::runtime::Handle>,
    /// Driver runs and node results counted.
    metrics: Arc<Metrics>,
    /// Where drivers run; the server's working directory when `None`.
    working_dir: Option<PathBuf>,
    /// The server's `power_on_rate`, over every platform.
    power_on_rate: Option<Rate>,
    /// Staged power-on start times, by platform name ("" for the server's
    /// rate): kept across requests and reloads.
    pacers: Mutex<HashMap<String, Arc<Pacer>>>,
}

/// How an engine runs, beyond its bound and environment.
#[derive(Debug, Default)]
pub struct EngineOptions {
    /// Where runs (and what they spawn) go: a runtime of the engine's own
    /// ([`Workers`]); by default, the one calling [`Engine::run`].
    pub tasks: Option<tokio::runtime::Handle>,
    /// Where a persistent platform's chunks run instead (in the server,
    /// the API's runtime, whose threads, and so a persistent driver started
    /// there, are not nicer). A chunk is one run for hundreds of nodes,
    /// which a request waits for; on the engine's threads a persistent
    /// chunk's answers waited for the CPU behind the client and the API's
    /// threads: a 1,008-node persistent status 9.9-10.1 ms at the median
    /// and 11.7-14.3 ms at the 90th percentile, against 8.3-9.2 and
    /// 9.1-11.4 ms. One-shot chunks stay on the nicer threads: each starts
    /// a process and reads all its answers, and on the API's runtime 10,000
    /// one-shot nodes asked again and again took `/healthz` p99 from 4.4-5
    /// ms to 18-22 ms (new connections: 6-7.4 ms to 27-33 ms), for 10-20
    /// ms less a request (131-143 against 143-164 ms). By default, where
    /// `tasks` says.
    pub persistent_chunks: Option<tokio::runtime::Handle>,
    /// Where drivers run (the reference's `scripts_dir`); by default, the
    /// server's working directory.
    pub working_dir: Option<PathBuf>,
    /// The server's `power_on_rate`: at most so many nodes of all
    /// platforms switched on per period.
    pub power_on_rate: Option<Rate>,
}

/// Named async locks, made on first use. Keyed by the topology's shared
/// names (no copy per lookup) and hashed with foldhash: a chunk takes
/// hundreds of these.
#[derive(Debug, Default)]
struct Locks(Mutex<LockTable>);

type LockTable = HashMap<Arc<str>, Arc<tokio::sync::Mutex<()>>, foldhash::fast::RandomState>;

impl Locks {
    /// The locks of `keys`, taken one after another in the order given
    /// (callers keep one global order), all looked up under one lock of
    /// the table.
    async fn lock_all(&self, keys: &[&Arc<str>]) -> Vec<OwnedMutexGuard<()>> {
        let locks: Vec<_> = {
            let mut table = self.0.lock().expect("lock table poisoned");
            keys.iter()
                .map(|&key| match table.get(&**key) {
                    Some(lock) => lock.clone(),
                    None => table.entry(key.clone()).or_default().clone(),
                })
                .collect()
        };
        let mut guards = Vec::with_capacity(locks.len());
        for lock in locks {
            guards.push(lock.lock_owned().await);
        }
        guards
    }
}

/// Per-platform bounds by platform name. They belong to the engine, not to
/// a load, so runs of the topology before and after a reload share one
/// bound; a reload that changes a platform's bound starts a new one.
#[derive(Debug, Default)]
struct Bounds(Mutex<HashMap<String, (usize, Arc<Semaphore>)>>);

impl Bounds {
    async fn acquire(&self, platform: &Platform) -> Option<OwnedSemaphorePermit> {
        let limit = platform.run.concurrency?;
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
    _share: OwnedSemaphorePermit,
    _platform: Option<OwnedSemaphorePermit>,
    _global: OwnedSemaphorePermit,
}

/// One request's shares of the bounds, made as its runs first need them.
struct Shares {
    /// The global bound's size.
    global: usize,
    /// Its share of each platform's bound (of the global one, for a
    /// platform without its own), by platform name.
    by_platform: HashMap<Arc<str>, Arc<Semaphore>>,
    /// Set when a status's client has gone.
    abandoned: Option<watch::Receiver<bool>>,
}

impl Shares {
    /// What a run on `platform` (named `name`) waits its turn with.
    fn turn(&mut self, platform: &Platform, name: &Arc<str>) -> Turn {
        let bound = platform
            .run
            .concurrency
            .map_or(self.global, |c| c.min(self.global));
        let share = self
            .by_platform
            .entry(name.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(share_of(bound))))
            .clone();
        Turn {
            share,
            abandoned: self.abandoned.clone(),
            start_at: None,
        }
    }
}

/// The part of a bound one request may hold: three quarters (at least one
/// run), so the rest stays free for other requests. Slots are first come,
/// first served; without this a 1,000-node status would make a later
/// power-off of one node wait for nearly all of it.
fn share_of(bound: usize) -> usize {
    (bound * 3 / 4).max(1)
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
        Self::with(concurrency, environment, EngineOptions::default())
    }

    /// [`Engine::new`], with `options`.
    pub fn with(
        concurrency: usize,
        environment: impl IntoIterator<Item = (OsString, OsString)>,
        options: EngineOptions,
    ) -> Arc<Self> {
        let inherited = environment
            .into_iter()
            .filter(|(k, _)| !k.to_str().is_some_and(driver::plan::is_server_private))
            .collect();
        Arc::new(Engine {
            global: Arc::new(Semaphore::new(concurrency.max(1))),
            concurrency: concurrency.max(1),
            nodes: Locks::default(),
            controllers: Locks::default(),
            platforms: Bounds::default(),
            persistent: Mutex::default(),
            lanes: std::thread::available_parallelism().map_or(1, usize::from),
            power_on_rate: options.power_on_rate,
            pacers: Mutex::default(),
            inherited,
            stop: watch::channel(false).0,
            closing: watch::channel(false).0,
            closed: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            tasks: options.tasks,
            persistent_chunks: options.persistent_chunks,
            metrics: Arc::new(Metrics::new()),
            working_dir: options.working_dir,
        })
    }

    /// When `node` of `platform` may be switched on, reserved in turn:
    /// `None` when nothing paces it.
    fn pace(&self, platform: &Platform) -> Option<tokio::time::Instant> {
        let rates = [
            (platform.name.as_str(), platform.run.power_on_rate),
            ("", self.power_on_rate),
        ];
        let mut start: Option<tokio::time::Instant> = None;
        for (key, rate) in rates {
            let Some(rate) = rate else { continue };
            let pacer = self
                .pacers
                .lock()
                .expect("pacers poisoned")
                .entry(key.to_string())
                .or_default()
                .clone();
            // Not before the platform's own turn.
            let earliest = start.unwrap_or_else(tokio::time::Instant::now);
            start = Some(pacer.reserve(rate, earliest));
        }
        start
    }

    /// The metrics its runs are counted in (the API serves them).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Spawn `task` where the engine's work runs.
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.tasks {
            Some(runtime) => runtime.spawn(task),
            None => tokio::spawn(task),
        }
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
        self.run_until(loaded, action, nodes, None)
    }

    /// [`Engine::run`], where a status's runs still waiting for a slot when
    /// `abandoned` turns true are not run (its client has gone). Ignored
    /// for power actions, which always run to their end.
    pub fn run_until(
        self: &Arc<Self>,
        loaded: Arc<Loaded>,
        action: Action,
        nodes: Vec<String>,
        abandoned: Option<watch::Receiver<bool>>,
    ) -> mpsc::UnboundedReceiver<CommandAttributes> {
        self.run_with_turns(loaded, action, nodes, abandoned).0
    }

    /// [`Engine::run_until`], saying too which nodes of a staged power-on
    /// (`power_on_rate`) wait for their turn, and until when.
    pub fn run_with_turns(
        self: &Arc<Self>,
        loaded: Arc<Loaded>,
        action: Action,
        nodes: Vec<String>,
        abandoned: Option<watch::Receiver<bool>>,
    ) -> (mpsc::UnboundedReceiver<CommandAttributes>, Vec<Waiting>) {
        let abandoned = abandoned.filter(|_| action == Action::Status);
        let mut waiting = Vec::new();
        let (tx, rx) = mpsc::unbounded_channel();
        // The dispatch is counted until every run it starts is counted on
        // its own: `shutdown` sets `closed` before it waits for the count
        // to reach zero, so either it waits for this dispatch (whose runs
        // then see `closing` and never start) or the dispatch sees `closed`.
        let dispatching = InFlight::count(self.clone(), 1);
        let closed = self.closed.load(Ordering::SeqCst);
        let mut shares = Shares {
            global: self.concurrency,
            by_platform: HashMap::new(),
            abandoned,
        };
        // Nodes of batch platforms (their places in the topology), by
        // platform, controller value and persistent process.
        let mut batches: BTreeMap<(Arc<str>, Option<String>, usize), Vec<usize>> = BTreeMap::new();
        // The platform of the node before, with its lanes: a request's
        // nodes mostly share one.
        let mut last: Option<(&Arc<str>, &Platform, usize)> = None;
        let mut previous = None;
        for name in nodes {
            let Some(position) = loaded.topology.position_after(previous, &name) else {
                let _ = tx.send(CommandAttributes::missing(action, &name));
                continue;
            };
            previous = Some(position);
            let node = &loaded.topology.nodes()[position];
            if closed {
                let error = NOT_RUN.to_string();
                let _ = tx.send(CommandAttributes::not_run(
                    action,
                    &name,
                    Some(node.platform.to_string()),
                    error,
                ));
                continue;
            }
            let (platform, lanes) = match last {
                Some((name, platform, lanes)) if Arc::ptr_eq(name, &node.platform) => {
                    (platform, lanes)
                }
                _ => {
                    let platform = &loaded.topology.platforms[&*node.platform];
                    let lanes = self.lanes(platform);
                    last = Some((&node.platform, platform, lanes));
                    (platform, lanes)
                }
            };
            let paced = if action == Action::PowerOn {
                self.pace(platform)
            } else {
                None
            };
            if let Some(start) = paced.filter(|s| *s > tokio::time::Instant::now()) {
                waiting.push(Waiting {
                    node: name.clone(),
                    starts: start,
                });
            }
            let lane = match lanes {
                1 => 0,
                lanes => persistent::lane(&node.name, lanes),
            };
            let batch = platform.run.batch.is_some();
            if batch && paced.is_none() {
                // Counted per chunk below.
                let controller = controller_key(platform, node);
                batches
                    .entry((node.platform.clone(), controller, lane))
                    .or_default()
                    .push(position);
                continue;
            }
            // A run of its own: a per-node platform's, or a paced node's (a
            // chunk of one, so its nodes' turns stay one interval apart).
            let counted = InFlight::count(self.clone(), 1);
            let mut turn = shares.turn(platform, &node.platform);
            turn.start_at = paced;
            let (engine, loaded, tx) = (self.clone(), loaded.clone(), tx.clone());
            self.spawn(async move {
                // Counted until dropped, even if the run panics.
                let _counted = counted;
                if batch {
                    engine
                        .run_chunk(&loaded, action, vec![position], lane, turn, tx)
                        .await;
                } else {
                    let result = engine.run_one(&loaded, action, &name, turn).await;
                    let _ = tx.send(result);
                }
            });
        }
        self.spawn_chunks(&loaded, action, batches, &mut shares, &tx);
        drop(dispatching);
        (rx, waiting)
    }

    /// A run per chunk of each batch platform's nodes (`batches`, by
    /// platform, controller value and persistent process), each counted
    /// in flight with its nodes.
    fn spawn_chunks(
        self: &Arc<Self>,
        loaded: &Arc<Loaded>,
        action: Action,
        batches: BTreeMap<(Arc<str>, Option<String>, usize), Vec<usize>>,
        shares: &mut Shares,
        tx: &mpsc::UnboundedSender<CommandAttributes>,
    ) {
        for ((platform, _, lane), positions) in batches {
            let definition = &loaded.topology.platforms[&*platform];
            let max = definition.run.batch.expect("a batch platform");
            for chunk in chunks(positions, max) {
                let counted = InFlight::count(self.clone(), chunk.len());
                let turn = shares.turn(definition, &platform);
                let (engine, loaded, tx) = (self.clone(), loaded.clone(), tx.clone());
                let run = async move {
                    let _counted = counted;
                    engine
                        .run_chunk(&loaded, action, chunk, lane, turn, tx)
                        .await;
                };
                match &self.persistent_chunks {
                    Some(runtime) if definition.run.persistent => drop(runtime.spawn(run)),
                    _ => drop(self.spawn(run)),
                }
            }
        }
    }

    /// Persistent driver processes for each controller value of
    /// `platform`: its `processes`, else one per core, so a request's
    /// chunks run side by side as one-shot ones do; one where
    /// `serialize_by` lets a single chunk run at a time anyway. None but a
    /// persistent platform has more than one.
    fn lanes(&self, platform: &Platform) -> usize {
        if platform.run.persistent && platform.serialize_by.is_none() {
            platform.run.processes.unwrap_or(self.lanes)
        } else {
            1
        }
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
    /// `platform`, sharing `controller`) needs; or, once shutdown has begun
    /// or the status's client has gone, why the run must not start.
    async fn hold(
        &self,
        nodes: &[&Node],
        platform: &Platform,
        controller: Option<String>,
        turn: Turn,
    ) -> Result<Held, &'static str> {
        let mut closing = self.closing.subscribe();
        let abandoned = async {
            let gone = match turn.abandoned {
                Some(mut gone) => gone.wait_for(|gone| *gone).await.is_ok(),
                None => false,
            };
            if !gone {
                std::future::pending::<()>().await;
            }
        };
        let start_at = turn.start_at;
        let acquire = async {
            if let Some(start) = start_at {
                tokio::time::sleep_until(start).await;
            }
            self.acquire(nodes, platform, controller, turn.share).await
        };
        let held = tokio::select! {
            held = acquire => held,
            _ = closing.wait_for(|closing| *closing) => return Err(NOT_RUN),
            () = abandoned => return Err(ABANDONED),
        };
        // Shutdown may have begun as the last bound came free.
        if self.closed.load(Ordering::SeqCst) {
            return Err(NOT_RUN);
        }
        Ok(held)
    }

    async fn acquire(
        &self,
        nodes: &[&Node],
        platform: &Platform,
        controller: Option<String>,
        share: Arc<Semaphore>,
    ) -> Held {
        let names: Vec<&Arc<str>> = nodes.iter().map(|n| &n.name).collect();
        let guards = self.nodes.lock_all(&names).await;
        let controller = match controller {
            Some(key) => {
                let key: Arc<str> = key.into();
                self.controllers.lock_all(&[&key]).await.pop()
            }
            None => None,
        };
        // The request's own: never shared, so taken in any order it cannot
        // make two runs wait on each other.
        let share = share.acquire_owned().await.expect("never closed");
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
            _share: share,
            _platform: platform,
            _global: global,
        }
    }

    async fn run_one(
        &self,
        loaded: &Loaded,
        action: Action,
        name: &str,
        turn: Turn,
    ) -> CommandAttributes {
        let node = loaded.topology.node(name).expect("checked by run");
        let platform = &loaded.topology.platforms[&*node.platform];
        let driver = &loaded.drivers.by_platform[&*node.platform];
        let held = self
            .hold(&[node], platform, controller_key(platform, node), turn)
            .await;
        let _held = match held {
            Ok(held) => held,
            Err(why) => {
                let platform = Some(platform.name.clone());
                return CommandAttributes::not_run(action, name, platform, why.to_string());
            }
        };

        let mut invocation =
            driver::plan(&self.inherited, driver.path.clone(), platform, node, action);
        invocation.dir = self.working_dir.clone();
        let secrets = driver::plan::secrets(node);
        let (outcome, captured) = spawn::run(&invocation, self.stop.subscribe(), None).await;
        let result = interpret(
            action,
            name,
            &platform.name,
            platform.run.status_off_exit_code,
            &outcome,
            &secrets,
        );
        log_run(&result, &captured, &secrets);
        let run = if result.success {
            "ok"
        } else {
            exit_word(&outcome.exit)
        };
        self.metrics
            .driver_run(&platform.name, action, run, outcome.duration);
        self.metrics.node_results(
            &platform.name,
            action,
            metrics::outcome_word(result.success, result.state),
            1,
        );
        result
    }

    /// One batch run: the nodes at `positions` in the topology (distinct
    /// nodes of one batch platform and controller value) to the driver,
    /// each answer line sent on as it arrives, then every silent node
    /// failed.
    async fn run_chunk(
        &self,
        loaded: &Loaded,
        action: Action,
        positions: Vec<usize>,
        lane: usize,
        turn: Turn,
        tx: mpsc::UnboundedSender<CommandAttributes>,
    ) {
        let all = loaded.topology.nodes();
        let mut nodes: Vec<&Node> = positions.into_iter().map(|i| &all[i]).collect();
        // Locks in name order: the one global order.
        nodes.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        let platform = &loaded.topology.platforms[&*nodes[0].platform];
        let driver = &loaded.drivers.by_platform[&platform.name];
        let controller = controller_key(platform, nodes[0]);
        let _held = match self.hold(&nodes, platform, controller.clone(), turn).await {
            Ok(held) => held,
            Err(why) => {
                for node in nodes {
                    let _ = tx.send(CommandAttributes::not_run(
                        action,
                        &node.name,
                        Some(platform.name.clone()),
                        why.to_string(),
                    ));
                }
                return;
            }
        };
        let names = nodes.iter().map(|n| n.name.clone()).collect();

        let mut secrets: Vec<String> = nodes
            .iter()
            .flat_map(|n| driver::plan::secrets(n))
            .collect();
        secrets.sort_unstable();
        secrets.dedup();
        let mut answers = Answers {
            metrics: &self.metrics,
            counts: [0; 4],
            ledger: batch::Ledger::new(action, &platform.name, names, secrets.clone()),
            tx: Some(tx),
            pending: Vec::new(),
            platform: &platform.name,
            action,
            ignored: 0,
            started: Instant::now(),
        };
        let outcome = if platform.run.persistent {
            let key = format!(
                "{}\0{}\0{lane}",
                platform.name,
                controller.unwrap_or_default()
            );
            self.run_persistent(key, platform, &driver.path, &nodes, &mut answers)
                .await
        } else {
            let mut invocation = driver::plan_batch(
                &self.inherited,
                driver.path.clone(),
                platform,
                &nodes,
                action,
            );
            invocation.dir = self.working_dir.clone();
            self.run_once(&invocation, &mut answers).await
        };
        self.metrics.driver_run(
            &platform.name,
            action,
            exit_word(&outcome.exit),
            outcome.duration,
        );
        answers.finish(&outcome, &secrets);
    }

    /// A chunk on a driver run for it alone.
    async fn run_once(
        &self,
        invocation: &driver::Invocation,
        answers: &mut Answers<'_>,
    ) -> Outcome {
        let (lines_tx, mut lines) = mpsc::unbounded_channel();
        let run = spawn::run(invocation, self.stop.subscribe(), Some(lines_tx));
        tokio::pin!(run);
        let (outcome, _) = loop {
            tokio::select! {
                biased;
                Some(line) = lines.recv() => {
                    answers.line(&line);
                    while let Ok(line) = lines.try_recv() {
                        answers.line(&line);
                    }
                    answers.flush();
                }
                done = &mut run => break done,
            }
        };
        // Lines read before the reader finished, not yet taken.
        while let Ok(line) = lines.try_recv() {
            answers.line(&line);
        }
        answers.flush();
        outcome
    }

    /// The persistent driver process for `key` (platform, controller value
    /// and lane), once its chunk before this one is done.
    async fn persistent_lane(&self, key: String) -> OwnedMutexGuard<persistent::Slot> {
        let slot = {
            let mut table = self.persistent.lock().expect("slot table poisoned");
            table.entry(key).or_default().clone()
        };
        slot.lock_owned().await
    }

    /// `slot`'s process, running the driver `program` as `platform` has it
    /// now: kept if it does, else (re)started once its back-off allows, or
    /// why it cannot be.
    async fn ready(
        &self,
        slot: &mut persistent::Slot,
        platform: &Platform,
        program: &std::path::Path,
    ) -> Result<(), String> {
        let env = driver::plan::persistent_env(&self.inherited, platform);
        if slot
            .process
            .as_ref()
            .is_some_and(|p| !p.runs(program, &env))
        {
            // A reload changed the driver or its environment.
            slot.process = None;
        }
        if slot.process.is_some() {
            return Ok(());
        }
        let wait = slot.backoff();
        if wait >= platform.run.timeout {
            return Err(format!(
                "the driver keeps failing; next start in {}",
                humantime::format_duration(Duration::from_secs(wait.as_secs().max(1)))
            ));
        }
        tokio::time::sleep(wait).await;
        match persistent::Process::start(program, &env, self.working_dir.as_deref()).await {
            Ok(process) => {
                slot.process = Some(process);
                Ok(())
            }
            Err(e) => {
                slot.failed();
                Err(format!("{}: {e}", program.display()))
            }
        }
    }

    /// A chunk on the platform's persistent driver (started, or restarted
    /// after its back-off, when it is not running). A driver that overruns
    /// the timeout, exits or is stopped is dropped with its process group.
    async fn run_persistent(
        &self,
        key: String,
        platform: &Platform,
        program: &std::path::Path,
        nodes: &[&Node],
        answers: &mut Answers<'_>,
    ) -> Outcome {
        let mut slot = self.persistent_lane(key).await;
        // Answers count their time from here, not from the wait for a lane.
        let started = Instant::now();
        answers.started = started;
        let ended = |exit: Exit, stderr: Vec<u8>| Outcome {
            exit,
            stderr,
            duration: started.elapsed(),
        };
        if let Err(why) = self.ready(&mut slot, platform, program).await {
            return ended(Exit::SpawnFailed(why), Vec::new());
        }
        let process = slot.process.as_mut().expect("made ready above");
        let first = process.ids(nodes.len());
        answers.ledger.set_first_id(first);
        let chunk = batch::persistent_input(answers.action, &platform.variables, nodes, first);
        let deadline = tokio::time::Instant::from_std(started + platform.run.timeout);
        let mut stop = self.stop.subscribe();
        let sent = tokio::time::timeout_at(deadline, process.send(&chunk)).await;
        let exit = match sent {
            Err(_) => Some(Exit::TimedOut(platform.run.timeout)),
            // It has gone: its exit code and stderr say why.
            Ok(Err(_)) => Some(gone(process).await),
            Ok(Ok(())) => {
                // Made once, not per line: a chunk is hundreds of lines.
                let expired = tokio::time::sleep_until(deadline);
                // (The borrow `wait_for` returns must not live across the kill.)
                let stopped = async {
                    if stop.wait_for(|stop| *stop).await.is_err() {
                        std::future::pending::<()>().await;
                    }
                };
                tokio::pin!(expired, stopped);
                loop {
                    if answers.ledger.left() == 0 {
                        break None;
                    }
                    tokio::select! {
                        line = process.lines.recv() => match line {
                            Some(line) => {
                                answers.line(&line);
                                // And the lines already waiting, without a select each.
                                while answers.ledger.left() > 0 {
                                    let Ok(line) = process.lines.try_recv() else { break };
                                    answers.line(&line);
                                }
                                answers.flush();
                            }
                            None => break Some(gone(process).await),
                        },
                        () = &mut expired => break Some(Exit::TimedOut(platform.run.timeout)),
                        () = &mut stopped => break Some(Exit::Stopped),
                    }
                }
            }
        };
        match exit {
            None => {
                let stderr = process.stderr();
                slot.succeeded();
                ended(Exit::Code(0), stderr)
            }
            Some(exit) => {
                if matches!(exit, Exit::TimedOut(_) | Exit::Stopped) {
                    process.kill().await;
                }
                let stderr = process.final_stderr(Duration::from_millis(500)).await;
                slot.failed();
                ended(exit, stderr)
            }
        }
    }

    /// Refuse new runs and never start the queued ones (they fail as not
    /// run), let running drivers finish within `grace`, then kill what is
    /// left and wait for it to be gone; persistent drivers go last.
    pub async fn shutdown(&self, grace: Duration) {
        self.closed.store(true, Ordering::SeqCst);
        self.closing.send_replace(true);
        if tokio::time::timeout(grace, self.wait_idle()).await.is_err() {
            tracing::warn!(
                running = self.in_flight.load(Ordering::SeqCst),
                "grace period over: killing drivers"
            );
            let _ = self.stop.send(true);
            self.wait_idle().await;
        }
        let slots: Vec<_> = self
            .persistent
            .lock()
            .expect("slot table poisoned")
            .drain()
            .map(|(_, slot)| slot)
            .collect();
        for slot in slots {
            if let Some(mut process) = slot.lock().await.process.take() {
                process.kill().await;
            }
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

    /// Turns true when shutdown begins: no run starts after that.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Node runs started and not yet finished (queued ones included).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
}

/// How a persistent driver that closed its stdout (or its stdin) ended.
async fn gone(process: &mut persistent::Process) -> Exit {
    match process.exit_code(Duration::from_millis(500)).await {
        Some(code) => Exit::Code(code),
        None => Exit::SpawnFailed("the driver closed its output but did not exit".into()),
    }
}

/// A batch run's answers on their way to the caller.
struct Answers<'a> {
    metrics: &'a Metrics,
    /// Results by [`metrics::OUTCOMES`], counted in the metrics at the end.
    counts: [u64; 4],
    ledger: batch::Ledger,
    /// Let go once every node has its answer: the request's results end
    /// there, not when the driver exits (a one-shot `sim` still writes its
    /// state files then, under the nodes' locks, which the run keeps).
    tx: Option<mpsc::UnboundedSender<CommandAttributes>>,
    /// Results not sent yet: sent together by [`Answers::flush`] once the
    /// lines waiting are read, so the request wakes once for them, not once
    /// a line (and sends its client a few large pieces, not many small).
    pending: Vec<CommandAttributes>,
    platform: &'a str,
    action: Action,
    ignored: usize,
    started: Instant,
}

impl Answers<'_> {
    /// One line of the driver's stdout: a node's result, or logged and ignored.
    fn line(&mut self, line: &[u8]) {
        match self.ledger.accept(line, self.started.elapsed()) {
            Ok(result) => {
                self.deliver(result);
                if self.ledger.left() == 0 {
                    self.flush();
                    self.tx = None;
                }
            }
            Err(why) => {
                self.ignored += 1;
                if self.ignored <= IGNORED_LOGGED {
                    let line = self.ledger.mask(&String::from_utf8_lossy(line));
                    tracing::warn!(platform = %self.platform, action = %self.action, %line, "batch driver line ignored: {why}");
                }
            }
        }
    }

    /// A node's result logged, counted, and kept to send while the
    /// request still waits for this chunk.
    fn deliver(&mut self, result: CommandAttributes) {
        log_answer(&result);
        self.counts[metrics::outcome_index(result.success, result.state)] += 1;
        if self.tx.is_some() {
            self.pending.push(result);
        }
    }

    /// Sends the results kept, one after another with nothing between.
    fn flush(&mut self) {
        if let Some(tx) = &self.tx {
            for result in self.pending.drain(..) {
                let _ = tx.send(result);
            }
        }
    }

    /// The run is over: every silent node fails as `outcome` says.
    fn finish(mut self, outcome: &Outcome, secrets: &[String]) {
        let silent = self.ledger.unanswered(outcome);
        let nodes = silent.len() + self.ledger.answered();
        tracing::info!(
            platform = %self.platform,
            action = %self.action,
            nodes,
            answered = nodes - silent.len(),
            ignored = self.ignored,
            exit = ?outcome.exit,
            duration_ms = outcome.duration.as_millis() as u64,
            "batch driver run"
        );
        if !outcome.stderr.is_empty() {
            let stderr = interpret::redact(&String::from_utf8_lossy(&outcome.stderr), secrets);
            tracing::debug!(platform = %self.platform, %stderr, "batch driver stderr");
        }
        for result in silent {
            self.deliver(result);
        }
        self.flush();
        for (outcome, count) in metrics::OUTCOMES.iter().zip(self.counts) {
            self.metrics
                .node_results(self.platform, self.action, outcome, count);
        }
    }
}

/// The lock key of the controller `node` shares under `platform`'s
/// `serialize_by`, if any.
fn controller_key(platform: &Platform, node: &Node) -> Option<String> {
    let var = platform.serialize_by.as_ref()?;
    let value = node.variables.get(var)?;
    Some(format!("{var}={value}"))
}

/// `items` in chunks of even size, at most `max` each. A node asked for
/// twice goes to a later chunk than its first time, so no chunk waits on
/// its own lock.
fn chunks<T: Clone + Eq + std::hash::Hash>(items: Vec<T>, max: usize) -> Vec<Vec<T>> {
    let mut rounds: Vec<Vec<T>> = Vec::new();
    let mut seen: HashMap<T, usize, foldhash::fast::RandomState> =
        HashMap::with_capacity_and_hasher(items.len(), foldhash::fast::RandomState::default());
    for item in items {
        let round = seen.entry(item.clone()).or_insert(0);
        if rounds.len() <= *round {
            rounds.push(Vec::new());
        }
        rounds[*round].push(item);
        *round += 1;
    }
    let mut out = Vec::new();
    for round in rounds {
        let count = round.len().div_ceil(max.max(1));
        let (base, extra) = (round.len() / count, round.len() % count);
        let mut items = round.into_iter();
        for i in 0..count {
            let size = base + usize::from(i < extra);
            out.push(items.by_ref().take(size).collect());
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

/// How a driver process ended, for the metrics: `ok` (exit 0), `failed`,
/// `timed_out`, `stopped` (at shutdown) or `not_started`.
fn exit_word(exit: &Exit) -> &'static str {
    match exit {
        Exit::Code(0) => "ok",
        Exit::Code(_) | Exit::Signal(_) => "failed",
        Exit::TimedOut(_) => "timed_out",
        Exit::Stopped => "stopped",
        Exit::SpawnFailed(_) => "not_started",
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
    // One line per run, its fields named for log shippers (--log-format json).
    let outcome = metrics::outcome_word(result.success, result.state);
    tracing::info!(
        node = %result.node_name,
        platform = result.platform.as_deref().unwrap_or(""),
        action = %result.action,
        outcome,
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
