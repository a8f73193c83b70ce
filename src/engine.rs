//! The execution engine: one driver run per node and action, fanned out
//! under concurrency bounds.
//!
//! Bounds, acquired always in this order so no two runs can wait on each
//! other: the node's own lock (never two runs on one node), the shared
//! controller's lock (`serialize_by`), the platform's bound, the global
//! bound. A run's timeout starts when its driver starts, not while queued.

use crate::driver::{self, interpret, spawn};
use crate::load::Loaded;
use power_proto::wire::{Action, CommandAttributes};
use std::collections::HashMap;
use std::ffi::OsString;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify, OwnedMutexGuard, Semaphore};

/// The default bound on driver runs at once (the reference's `num_worker_commands`).
pub const DEFAULT_CONCURRENCY: usize = 50;

/// Runs drivers. Cheap to share: clone the `Arc`.
#[derive(Debug)]
pub struct Engine {
    global: Arc<Semaphore>,
    nodes: Locks,
    controllers: Locks,
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
        for name in nodes {
            let Some(node) = loaded.topology.node(&name) else {
                let _ = tx.send(CommandAttributes::missing(action, &name));
                continue;
            };
            // Count the run before looking at `closed`: `shutdown` sets
            // `closed` before counting, so one of the two always sees the other.
            let counted = InFlight::count(self.clone());
            if self.closed.load(Ordering::SeqCst) {
                drop(counted);
                let error = "not run: the server is shutting down".to_string();
                let _ = tx.send(CommandAttributes::not_run(
                    action,
                    &name,
                    Some(node.platform.clone()),
                    error,
                ));
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

    async fn run_one(&self, loaded: &Loaded, action: Action, name: &str) -> CommandAttributes {
        let node = loaded.topology.node(name).expect("checked by run");
        let platform = &loaded.topology.platforms[&node.platform];
        let driver = &loaded.drivers.by_platform[&node.platform];

        let _node = self.nodes.lock(name).await;
        let _controller = match platform
            .serialize_by
            .as_ref()
            .and_then(|v| node.variables.get(v).map(|value| (v, value)))
        {
            Some((var, value)) => Some(self.controllers.lock(&format!("{var}={value}")).await),
            None => None,
        };
        let _platform = match loaded.platform_limits.get(&platform.name) {
            Some(limit) => Some(limit.clone().acquire_owned().await.expect("never closed")),
            None => None,
        };
        let _global = self
            .global
            .clone()
            .acquire_owned()
            .await
            .expect("never closed");

        let invocation = driver::plan(&self.inherited, driver.path.clone(), platform, node, action);
        let secrets = driver::plan::secrets(node);
        let (outcome, captured) = spawn::run(&invocation, self.stop.subscribe()).await;
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

    /// Driver runs started and not yet finished (queued ones included).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
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

/// One run counted in `in_flight` for as long as this lives.
struct InFlight(Arc<Engine>);

impl InFlight {
    fn count(engine: Arc<Engine>) -> Self {
        engine.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(engine)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
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
