//! The power API over HTTP (warp on tokio): the reference's routes and
//! JSON:API documents, tokens, the audit log, and a clean shutdown.
//!
//! Filters only route and extract; [`handlers`] do the work; [`error`]
//! turns every refusal into a status and a JSON:API error document.
//! Authentication happens in the handlers, after routing, so an unknown
//! path is a 404 with or without a token.

pub mod audit;
pub mod error;
pub mod handlers;
pub mod rails;
pub mod select;

use crate::auth::Keys;
use crate::config::Settings;
use crate::engine::{Engine, EngineOptions, Workers};
use crate::secret::Secret;
use crate::state::State;
use crate::topology::LoadErrors;
use audit::Audit;
use handlers::PowerRequest;
use power_proto::wire::Action;
use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use warp::Filter;

/// Extra time, after the shutdown grace, for responses to reach clients.
const DRAIN_MARGIN: Duration = Duration::from_secs(5);

/// Longest a connection may take to send a request's headers, counted from
/// when the server waits for them (so also the longest a kept-alive
/// connection may sit idle): a client trickling bytes, or holding sockets
/// open without a word, cannot keep them for ever.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the handlers share.
#[derive(Debug)]
pub struct App {
    /// The topology in force, reloaded on SIGHUP.
    pub state: Arc<State>,
    /// Runs drivers.
    pub engine: Arc<Engine>,
    /// Verifies tokens.
    pub keys: Keys,
    /// The audit log, if one is configured.
    pub audit: Option<Audit>,
    /// Most names one hostlist may expand to.
    pub hostlist_limit: usize,
    /// `GET /metrics` answers without a token.
    pub metrics_public: bool,
    /// Groups whose nodes refuse off and restart without `force`.
    pub protected_groups: Vec<String>,
}

/// Every route, with the rejection handler.
pub fn routes(
    app: Arc<App>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = std::convert::Infallible> + Clone {
    let app_metrics = app.engine.metrics().clone();
    let with_app = warp::any().map(move || app.clone());
    let authorization = warp::header::optional::<String>("authorization");

    let healthz = warp::path!("healthz")
        .and(warp::get())
        .map(handlers::healthz);
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with_app.clone())
        .and(authorization)
        .map(handlers::metrics);
    let nodes = warp::path!("nodes")
        .and(warp::get())
        .and(with_app.clone())
        .and(authorization)
        .map(handlers::nodes);
    let groups = warp::path!("groups")
        .and(warp::get())
        .and(with_app.clone())
        .and(authorization)
        .map(handlers::groups);
    // The method says the action (proto's one table of them).
    let action = warp::method().and_then(|method: warp::http::Method| async move {
        Action::from_method(method.as_str())
            .ok_or_else(|| warp::reject::custom(error::NoSuchAction))
    });
    let power = warp::path::end()
        .and(action)
        .and(warp::query::<Vec<(String, String)>>())
        .and(authorization)
        .and(warp::header::optional::<String>("accept"))
        .map(|action, query, authorization, accept| PowerRequest {
            action,
            query,
            authorization,
            accept,
        })
        .and(with_app)
        .then(|request, app| handlers::power(app, request));

    // Every request's body is read first: one left unread makes the
    // connection's close a reset, which can cut the answer short.
    let any = healthz
        .or(metrics)
        .unify()
        .or(nodes)
        .unify()
        .or(groups)
        .unify()
        .or(power)
        .unify();
    let counted = app_metrics.clone();
    body_drained()
        .and(any)
        .recover(error::recover)
        .unify()
        .with(warp::log::custom(move |info| {
            counted.request(
                route_of(info.path()),
                info.method().as_str(),
                info.status().as_u16(),
            );
        }))
        .map(warp::Reply::into_response)
}

/// A request's route for the metrics: the API's own paths, or `other`
/// (a client's path never becomes a label).
fn route_of(path: &str) -> &'static str {
    match path {
        "/" => "/",
        "/nodes" => "/nodes",
        "/groups" => "/groups",
        "/healthz" => "/healthz",
        "/metrics" => "/metrics",
        _ => "other",
    }
}

/// Request bodies read (and dropped) at most: no route takes one.
const BODY_DRAINED: usize = 64 * 1024;

/// The request's body, read to its end (up to [`BODY_DRAINED`]) and
/// dropped. No route takes a body, but a client may send an empty chunked
/// one (ureq does for PATCH); a connection closed with it unread ends in a
/// reset, which can cut the answer short at the client.
fn body_drained() -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    warp::body::stream().then(drain).untuple_one()
}

async fn drain<B: bytes::Buf>(body: impl futures_util::Stream<Item = Result<B, warp::Error>>) {
    use futures_util::StreamExt;
    let mut body = std::pin::pin!(body);
    let mut read = 0;
    while let Some(Ok(chunk)) = body.next().await {
        read += chunk.remaining();
        if read > BODY_DRAINED {
            break;
        }
    }
}

/// Why the server could not start.
#[derive(Debug)]
pub enum ServeError {
    /// The topology or a driver is unusable.
    Load(LoadErrors),
    /// The audit log cannot be opened.
    Audit {
        /// Its path.
        path: std::path::PathBuf,
        /// What failed.
        error: std::io::Error,
    },
    /// The address cannot be listened on.
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What failed.
        error: std::io::Error,
    },
    /// Signal handlers cannot be installed.
    Signals(std::io::Error),
    /// The engine's threads cannot be started.
    Runtime(std::io::Error),
}

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Load(e) => write!(f, "{e}"),
            Self::Audit { path, error } => {
                write!(f, "cannot open audit log {}: {error}", path.display())
            }
            Self::Bind { addr, error } => write!(f, "cannot listen on {addr}: {error}"),
            Self::Signals(e) => write!(f, "cannot install signal handlers: {e}"),
            Self::Runtime(e) => write!(f, "cannot start the engine's threads: {e}"),
        }
    }
}

impl std::error::Error for ServeError {}

/// A listener on `addr` whose connections send each write at once
/// (TCP_NODELAY, which Linux passes from the listener to every accepted
/// socket). Without it the last piece of a streamed answer waits for the
/// client's delayed ACK: 40 ms on Linux, in about half of all requests.
fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Serve `routes` on each connection `listener` accepts, until `stop`;
/// then close the listener and wait for the connections in flight. As
/// warp's own loop, plus [`HEADER_TIMEOUT`].
async fn connections<F>(
    listener: tokio::net::TcpListener,
    limit: usize,
    routes: F,
    stop: impl std::future::Future<Output = ()>,
) where
    F: Filter + Clone + Send + Sync + 'static,
    F::Extract: warp::Reply,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(limit));
    let mut stop = std::pin::pin!(stop);
    loop {
        // At the limit, the next connection waits in the listen queue.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("never closed"),
            () = &mut stop => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, say: back off rather than spin.
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let service = hyper_util::service::TowerToHyperService::new(warp::service(routes.clone()));
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT);
        let connection = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = connection.await {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// `wanted` connections at most, and fewer when the open files limit
/// cannot hold them beside the drivers' pipes (256 descriptors kept back).
fn connection_limit(wanted: usize) -> usize {
    use nix::sys::resource::{getrlimit, Resource};
    let Ok((soft, _)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return wanted;
    };
    let room = usize::try_from(soft.saturating_sub(256))
        .unwrap_or(usize::MAX)
        .max(16);
    if room < wanted {
        tracing::warn!(
            "serving at most {room} connections at once, not {wanted}: the open files limit is {soft}"
        );
    }
    wanted.min(room)
}

/// Raise this process's soft limit on open files to its hard limit: each
/// connection and each running driver's pipes hold descriptors, and the
/// usual soft limit (1,024) is few for a server.
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!("cannot raise the open files limit from {soft} to {hard}: {e}");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot read the open files limit: {e}"),
    }
}

/// Load the topology, listen, call `ready` with the bound address and the
/// topology, and serve until SIGTERM or SIGINT; then stop accepting, give running drivers
/// `settings.shutdown_grace` to finish, kill what is left, and return.
/// A second signal skips the rest of the grace period. `environment` is the
/// base of every driver's environment.
pub async fn serve(
    settings: &Settings,
    secret: &Secret,
    environment: Vec<(OsString, OsString)>,
    ready: impl FnOnce(SocketAddr, &crate::topology::Topology),
) -> Result<(), ServeError> {
    use tokio::signal::unix::{signal, SignalKind};

    raise_open_files_limit();
    let (app, workers) = prepare(settings, secret, environment).await?;
    let (state, engine) = (app.state.clone(), app.engine.clone());

    let mut terminate = signal(SignalKind::terminate()).map_err(ServeError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(ServeError::Signals)?;
    let reloader = state.reload_on_sighup().map_err(ServeError::Signals)?;

    let bind_error = |error| ServeError::Bind {
        addr: settings.bind,
        error,
    };
    let listener = listen(settings.bind).map_err(bind_error)?;
    let addr = listener.local_addr().map_err(bind_error)?;
    let loaded = state.current();
    tracing::info!(
        nodes = loaded.topology.nodes().len(),
        groups = loaded.topology.groups.len(),
        platforms = loaded.topology.platforms.len(),
        "listening on http://{addr}"
    );
    ready(addr, &loaded.topology);
    drop(loaded);

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let limit = connection_limit(settings.max_connections);
    let server = connections(listener, limit, routes(app), async {
        let _ = stopped.await;
    });
    let mut server = std::pin::pin!(server);

    let signal_name = tokio::select! {
        () = &mut server => {
            tracing::error!("the server stopped by itself");
            None
        }
        _ = terminate.recv() => Some("SIGTERM"),
        _ = interrupt.recv() => Some("SIGINT"),
    };
    if let Some(name) = signal_name {
        let _ = stop.send(());
        let signals = [&mut terminate, &mut interrupt];
        shut_down(name, &engine, settings.shutdown_grace, server, signals).await;
    }
    reloader.abort();
    // Escaped processes of the last runs, before their adopter goes.
    let _ = tokio::task::spawn_blocking(crate::driver::orphans::sweep).await;
    drop(workers);
    tracing::info!("stopped");
    Ok(())
}

/// After `name` (a signal): the listener is closed (`server` was told to
/// stop); running drivers get `grace`, then are killed, while `server`
/// waits for the connections in flight, which end as their drivers do. A
/// second signal skips the rest of the grace period.
async fn shut_down(
    name: &str,
    engine: &Engine,
    grace: Duration,
    mut server: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    [terminate, interrupt]: [&mut tokio::signal::unix::Signal; 2],
) {
    tracing::info!(
        running = engine.in_flight(),
        "{name}: no longer accepting; running drivers have {}",
        humantime::format_duration(grace)
    );
    let drain = async {
        let _ = tokio::join!(
            engine.shutdown(grace),
            tokio::time::timeout(grace + DRAIN_MARGIN, &mut server)
        );
    };
    let hurried = tokio::select! {
        () = drain => false,
        _ = terminate.recv() => true,
        _ = interrupt.recv() => true,
    };
    if hurried {
        tracing::warn!("second signal: killing running drivers now");
        engine.shutdown(Duration::ZERO).await;
        let _ = tokio::time::timeout(DRAIN_MARGIN, &mut server).await;
    }
}

/// Everything the routes need, before anything listens: the topology
/// (loaded off the async workers), the audit log, and the engine on a
/// runtime of its own, adopting what escapes its drivers.
async fn prepare(
    settings: &Settings,
    secret: &Secret,
    environment: Vec<(OsString, OsString)>,
) -> Result<(Arc<App>, Workers), ServeError> {
    let load = settings.load.clone();
    let state = tokio::task::spawn_blocking(move || State::start(load))
        .await
        .expect("loading does not panic")
        .map_err(ServeError::Load)?;
    let audit = match &settings.audit_log {
        Some(path) => Some(Audit::open(path).map_err(|error| ServeError::Audit {
            path: path.clone(),
            error,
        })?),
        None => None,
    };
    // Driver runs on threads of their own, nicer than the API's.
    let workers = Workers::start().map_err(ServeError::Runtime)?;
    let engine = Engine::with(
        settings.concurrency,
        environment,
        EngineOptions {
            tasks: Some(workers.handle()),
            persistent_chunks: Some(tokio::runtime::Handle::current()),
            working_dir: settings.working_dir.clone(),
            power_on_rate: settings.power_on_rate,
        },
    );
    adopt_orphans(&engine);
    let app = Arc::new(App {
        state,
        engine,
        keys: Keys::new(secret, settings.hostlist_limit),
        audit,
        hostlist_limit: settings.hostlist_limit,
        metrics_public: settings.metrics_public,
        protected_groups: settings.load.protected_groups.clone(),
    });
    Ok((app, workers))
}

/// Make what escapes a driver's process group this process's child, and
/// kill such processes every [`orphans::SWEEP_EVERY`] (see
/// [`crate::driver::orphans`]); where that cannot be, say so.
fn adopt_orphans(engine: &Engine) {
    use crate::driver::orphans;
    match orphans::adopt() {
        Ok(()) => {
            engine.spawn(async {
                let mut every = tokio::time::interval(orphans::SWEEP_EVERY);
                loop {
                    every.tick().await;
                    let _ = tokio::task::spawn_blocking(orphans::sweep).await;
                }
            });
        }
        Err(e) => tracing::warn!(
            "cannot adopt what escapes a driver's process group ({e}): such processes may outlive their run"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Claims;
    use crate::load::LoadSettings;

    /// The routes in-process (no socket, no server process) over a
    /// one-node inline platform, and a full-access token for them.
    fn app(dir: &std::path::Path) -> (Arc<App>, String) {
        let topology = dir.join("topology.d");
        std::fs::create_dir_all(&topology).unwrap();
        std::fs::write(
            topology.join("t.yaml"),
            "platforms:\n  p:\n    power_on: exit 0\n    power_off: exit 0\n    restart: exit 0\n    status: exit 0\n\
             static_nodes:\n  n1:\n    platform: p\n",
        )
        .unwrap();
        let state = State::start(LoadSettings {
            topology_dirs: vec![topology],
            drivers_dirs: Vec::new(),
            runtime_dir: Some(dir.join("run")),
            topology_named: true,
            topology_files: Vec::new(),
            protected_groups: Vec::new(),
        })
        .unwrap();
        let keys = Keys::new(&crate::secret::from_value("in-process-secret"), 100);
        let token = keys.mint(&Claims {
            exp: crate::auth::now() + 600,
            iat: None,
            sub: Some("t".into()),
            role: None,
            nodes: None,
        });
        let app = Arc::new(App {
            state,
            engine: Engine::new(4, std::env::vars_os()),
            keys,
            audit: None,
            hostlist_limit: 100,
            metrics_public: false,
            protected_groups: Vec::new(),
        });
        (app, token)
    }

    #[tokio::test]
    async fn routes_answer_in_process() {
        let dir = tempfile::tempdir().unwrap();
        let (app, token) = app(dir.path());
        let routes = routes(app);
        let bearer = format!("Bearer {token}");
        let health = warp::test::request().path("/healthz").reply(&routes).await;
        assert_eq!(health.status(), 200);
        assert_eq!(health.body().as_ref(), b"{\"status\":\"ok\"}");
        for (method, path, status) in [
            ("GET", "/nope", 404),
            ("POST", "/", 405),
            ("GET", "/?nodes=n1", 403),
        ] {
            let r = warp::test::request()
                .method(method)
                .path(path)
                .reply(&routes)
                .await;
            assert_eq!(r.status(), status, "{method} {path}");
            assert_eq!(
                r.headers()["content-type"],
                "application/json",
                "{method} {path}"
            );
        }
        let status = warp::test::request()
            .path("/?nodes=n1,ghost")
            .header("authorization", &bearer)
            .reply(&routes)
            .await;
        assert_eq!(status.status(), 200);
        let doc: serde_json::Value = serde_json::from_slice(status.body()).unwrap();
        let attrs: Vec<&serde_json::Value> = doc["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| &r["attributes"])
            .collect();
        assert_eq!(
            (
                attrs[0]["node-name"].as_str(),
                attrs[0]["running"].as_bool()
            ),
            (Some("n1"), Some(true))
        );
        assert_eq!(
            (
                attrs[1]["node-name"].as_str(),
                attrs[1]["missing"].as_bool()
            ),
            (Some("ghost"), Some(true))
        );
        let metrics = warp::test::request()
            .path("/metrics")
            .header("authorization", &bearer)
            .reply(&routes)
            .await;
        let text = String::from_utf8_lossy(metrics.body());
        assert!(
            text.contains(
                "power_driver_runs_total{platform=\"p\",action=\"status\",outcome=\"ok\"} 1"
            ),
            "{text}"
        );
    }

    #[tokio::test]
    async fn accepted_connections_send_at_once() {
        let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert!(accepted.nodelay().unwrap(), "TCP_NODELAY is off");
    }
}
