//! The running topology, and reloading it.
//!
//! The current load sits behind a lock as an `Arc`; a request clones the
//! `Arc` and keeps that load for its whole run. A reload builds a new load
//! aside and swaps it in only if it is valid: a broken fragment leaves the
//! running topology in place.

use crate::load::{LoadSettings, Loaded};
use crate::topology::LoadErrors;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

/// The topology currently served, and how to load it again.
#[derive(Debug)]
pub struct State {
    settings: LoadSettings,
    current: RwLock<Arc<Loaded>>,
    /// When the last load or reload was, and whether it succeeded.
    last_load: Mutex<(SystemTime, bool)>,
}

impl State {
    /// Load for the first time; fails with every error if the topology is unusable.
    pub fn start(settings: LoadSettings) -> Result<Arc<Self>, LoadErrors> {
        let loaded = Loaded::read(&settings)?;
        log_warnings(&loaded);
        release_free_memory();
        Ok(Arc::new(State {
            settings,
            current: RwLock::new(Arc::new(loaded)),
            last_load: Mutex::new((SystemTime::now(), true)),
        }))
    }

    /// When the last load or reload was, and whether it succeeded.
    pub fn last_load(&self) -> (SystemTime, bool) {
        *self.last_load.lock().expect("state lock poisoned")
    }

    /// The load in force now.
    pub fn current(&self) -> Arc<Loaded> {
        self.current.read().expect("state lock poisoned").clone()
    }

    /// Load again; on success the new load replaces the current one, on
    /// failure nothing changes and the errors are returned.
    pub fn reload(&self) -> Result<Arc<Loaded>, LoadErrors> {
        let loaded = Loaded::read(&self.settings);
        *self.last_load.lock().expect("state lock poisoned") = (SystemTime::now(), loaded.is_ok());
        let loaded = Arc::new(loaded?);
        log_warnings(&loaded);
        let old = std::mem::replace(
            &mut *self.current.write().expect("state lock poisoned"),
            loaded.clone(),
        );
        // Dropped outside the lock (a large topology takes a while to
        // free), and only if no request still runs on it.
        drop(old);
        release_free_memory();
        Ok(loaded)
    }

    /// Reload on every SIGHUP, logging the outcome, for as long as the
    /// returned task runs.
    pub fn reload_on_sighup(self: &Arc<Self>) -> std::io::Result<tokio::task::JoinHandle<()>> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = signal(SignalKind::hangup())?;
        let state = self.clone();
        Ok(tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                let state = state.clone();
                // Loading reads files and runs `bash -n`: keep it off the async workers.
                match tokio::task::spawn_blocking(move || state.reload()).await {
                    Ok(Ok(loaded)) => tracing::info!(
                        nodes = loaded.topology.nodes().len(),
                        platforms = loaded.topology.platforms.len(),
                        "topology reloaded"
                    ),
                    Ok(Err(errors)) => {
                        tracing::error!(
                            "reload refused, the running topology stays in place: {errors}"
                        );
                    }
                    Err(e) => tracing::error!("reload failed: {e}"),
                }
            }
        }))
    }
}

/// Hand memory freed by a load (the YAML trees, a replaced topology) back
/// to the system at once, rather than when jemalloc's decay gets to it: a
/// 100,000-node load would otherwise keep its parse-time peak for seconds.
fn release_free_memory() {
    // "arena.<MALLCTL_ARENAS_ALL>.purge": every arena's unused dirty pages.
    const PURGE_ALL: &[u8] = b"arena.4096.purge\0";
    // SAFETY: a void mallctl command; it takes and returns no data.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            PURGE_ALL.as_ptr().cast(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        );
    }
}

fn log_warnings(loaded: &Loaded) {
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
}
