//! The route handlers: plain async functions from what the filters
//! extracted to a response. Every failure goes through [`ApiError`].

use super::audit::Record;
use super::error::ApiError;
use super::rails;
use super::select::{self, flag, select, SelectError, Selection};
use super::App;
use crate::auth::{AuthError, Grant};
use crate::engine;
use crate::engine::Waiting;
use crate::follow_up::{self, Asked};
use crate::load::Loaded;
use power_proto::wire::{
    Action, CommandAttributes, Document, GroupAttributes, NodeAttributes, Resource, TurnAttributes,
};
use power_proto::{hostlist, result_line};
use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::mpsc;
use warp::http::header::CONTENT_TYPE;
use warp::reply::Response;
use warp::Reply;

/// The media type asking for one result per line as each node finishes.
pub const NDJSON: &str = "application/x-ndjson";

/// `GET /healthz`: the server is up. No token needed, nothing revealed.
pub fn healthz() -> Response {
    warp::reply::json(&serde_json::json!({ "status": "ok" })).into_response()
}

/// `GET /metrics`: the Prometheus text, for any valid token (or none,
/// with `metrics_public`).
pub fn metrics(app: Arc<App>, authorization: Option<String>) -> Response {
    if !app.metrics_public {
        if let Err(e) = authorize(&app, authorization.as_deref()) {
            return e.into_response();
        }
    }
    let loaded = app.state.current();
    let text = app.engine.metrics().render(
        app.engine.in_flight(),
        loaded.topology.nodes().len(),
        Some(app.state.last_load()),
    );
    let mut response = Response::new(text.into());
    response.headers_mut().insert(
        CONTENT_TYPE,
        crate::metrics::CONTENT_TYPE
            .parse()
            .expect("a valid header value"),
    );
    response
}

/// `GET /nodes`: the nodes the token can see, in topology order.
pub fn nodes(app: Arc<App>, authorization: Option<String>) -> Response {
    let grant = match authorize(&app, authorization.as_deref()) {
        Ok(g) => g,
        Err(e) => return e.into_response(),
    };
    let loaded = app.state.current();
    let topology = &loaded.topology;
    let mut memberships: HashMap<&str, Vec<String>> = HashMap::new();
    for group in topology.groups.values() {
        for node in &group.nodes {
            memberships
                .entry(node.as_str())
                .or_default()
                .push(group.name.clone());
        }
    }
    let data = topology
        .nodes()
        .iter()
        .filter(|n| grant.covers(&n.name))
        .map(|n| Resource {
            kind: "nodes".into(),
            id: n.name.to_string(),
            attributes: NodeAttributes {
                name: n.name.to_string(),
                platform: Some(n.platform.to_string()),
                groups: memberships.remove(&*n.name).unwrap_or_default(),
            },
        })
        .collect();
    warp::reply::json(&Document { data }).into_response()
}

/// `GET /groups`: the groups the token can see, each with the members it
/// can see; a group with none of them is left out.
pub fn groups(app: Arc<App>, authorization: Option<String>) -> Response {
    let grant = match authorize(&app, authorization.as_deref()) {
        Ok(g) => g,
        Err(e) => return e.into_response(),
    };
    let loaded = app.state.current();
    let data = loaded
        .topology
        .groups
        .values()
        .filter_map(|g| {
            let nodes: Vec<String> = g
                .nodes
                .iter()
                .filter(|n| grant.covers(n))
                .cloned()
                .collect();
            (!nodes.is_empty()).then(|| Resource {
                kind: "groups".into(),
                id: g.name.clone(),
                attributes: GroupAttributes {
                    name: g.name.clone(),
                    nodes,
                },
            })
        })
        .collect();
    warp::reply::json(&Document { data }).into_response()
}

/// What a power request carried.
#[derive(Debug)]
pub struct PowerRequest {
    /// The action its method stands for.
    pub action: Action,
    /// The query string's pairs.
    pub query: Vec<(String, String)>,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The `Accept` header.
    pub accept: Option<String>,
}

/// `GET|PATCH|PUT|DELETE /`: run the action on the selected nodes; or,
/// with `dry_run=true`, say what it would do and run nothing.
pub async fn power(app: Arc<App>, request: PowerRequest) -> Response {
    let Admitted {
        action,
        grant,
        loaded,
        nodes,
        dry_run,
        force,
        asked,
        turns,
    } = match admit(&app, &request) {
        Ok(admitted) => admitted,
        Err((subject, error)) => {
            if let Some(audit) = &app.audit {
                let query = request
                    .query
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join("&");
                let action = request.action;
                let _ = audit.write(&Record::refused(subject, action, error.detail(), &query));
            }
            let action = request.action;
            tracing::info!(%action, status = error.status().as_u16(), "refused: {}", error.detail());
            return error.into_response();
        }
    };
    if dry_run {
        // Not audited: it runs nothing and changes nothing; the log has it.
        let plans = rails::plan(&loaded, &app.protected_groups, action, &nodes, force);
        tracing::info!(
            subject = grant.subject.as_deref().unwrap_or(""),
            %action,
            nodes = %hostlist::compress(&nodes),
            force,
            "dry run"
        );
        return warp::reply::json(&Document {
            data: plans.into_iter().map(Resource::plan).collect(),
        })
        .into_response();
    }
    let mut record = Record::ran(grant.subject, action, &nodes);
    record.force = force && rails::guarded(action);
    record.graceful = asked
        .grace
        .map(|grace| humantime::format_duration(grace).to_string());
    let (run, refused) = rails::split(
        &loaded.topology,
        &app.protected_groups,
        action,
        nodes.clone(),
        force,
    );
    // An action is on record before it runs, or it does not run.
    if let (Some(audit), true) = (&app.audit, action != Action::Status) {
        if let Err(e) = audit.write(&record.started()) {
            let error = ApiError::Unavailable(format!(
                "the audit log cannot be written ({e}): nothing was run"
            ));
            tracing::warn!(%action, "refused: {}", error.detail());
            return error.into_response();
        }
    }
    let (results, waiting) = start(&app, loaded, record, run, refused, asked);
    let streaming = request
        .accept
        .as_deref()
        .is_some_and(|a| a.split(',').any(|t| t.trim().starts_with(NDJSON)));
    if streaming {
        // Asked for (`turns=true`), the nodes waiting their turn come first.
        let first = if turns {
            turn_lines(action, &waiting)
        } else {
            Vec::new()
        };
        let lines = Lines {
            first: (!first.is_empty()).then_some(first),
            results,
        };
        let mut response = warp::reply::stream(lines).into_response();
        response
            .headers_mut()
            .insert(CONTENT_TYPE, NDJSON.parse().expect("a valid header value"));
        return response;
    }
    let results = engine::in_request_order(results, &nodes).await;
    warp::reply::json(&Document {
        data: results.into_iter().map(Resource::command).collect(),
    })
    .into_response()
}

/// The action a request asks for: its method's, or, for a dry run asked
/// with `GET`, its `action` parameter's. A dry run of an action asked as a
/// `GET` is safe to send to any server: one that knows no dry run (the
/// reference) answers it as a status rather than run the action.
fn planned_action(request: &PowerRequest) -> Result<Action, Refusal> {
    let named: Vec<&str> = request
        .query
        .iter()
        .filter(|(k, _)| k == "action")
        .map(|(_, v)| v.as_str())
        .collect();
    let Some(last) = named.last() else {
        return Ok(request.action);
    };
    let bad = |why: String| Err((None, ApiError::BadRequest(why)));
    let dry_run = flag(&request.query, &["dry_run", "dry-run"]).unwrap_or(false);
    if request.action != Action::Status || !dry_run {
        return bad(
            "the action parameter is taken only by a dry run asked with GET \
             (GET /?dry_run=true&action=power_off): otherwise the method says the action"
                .into(),
        );
    }
    last.parse::<Action>()
        .or_else(|e| bad(format!("bad action parameter: {e}")))
}

/// A request let through: what its token allows, the load it was checked
/// against, the nodes it selects, and its `dry_run` and `force`.
struct Admitted {
    action: Action,
    grant: Grant,
    loaded: Arc<Loaded>,
    nodes: Vec<String>,
    dry_run: bool,
    force: bool,
    asked: Asked,
    /// `turns=true`: an NDJSON answer lists the nodes of a staged power-on
    /// waiting for their turn first.
    turns: bool,
}

/// A request refused: its token's subject, if known, and why.
type Refusal = (Option<String>, ApiError);

/// Check the token, the role, `force` and the selection, against one load
/// of the topology that the run then uses too; on refusal, say who asked
/// (if known) and why.
fn admit(app: &App, request: &PowerRequest) -> Result<Admitted, Refusal> {
    let grant = authorize(app, request.authorization.as_deref()).map_err(|e| (None, e))?;
    let subject = grant.subject.clone();
    let action = planned_action(request).map_err(|(_, e)| (subject.clone(), e))?;
    if action != Action::Status && !grant.may_act {
        return Err((
            subject,
            ApiError::Forbidden(format!(
                "the token's role is viewer: {action} needs an operator token"
            )),
        ));
    }
    let bad = |e: SelectError| {
        let error = match e {
            SelectError::NotCovered(_) => ApiError::Forbidden(e.to_string()),
            _ => ApiError::BadRequest(e.to_string()),
        };
        (subject.clone(), error)
    };
    let dry_run = flag(&request.query, &["dry_run", "dry-run"]).map_err(bad)?;
    let force = flag(&request.query, &["force"]).map_err(bad)?;
    let wait = select::wait(&request.query).map_err(bad)?;
    let grace = select::graceful(&request.query).map_err(bad)?;
    let turns = flag(&request.query, &["turns"]).map_err(bad)?;
    if grace.is_some() && action != Action::PowerOff {
        return Err((
            subject,
            ApiError::BadRequest(format!("graceful=true is an off (DELETE), not {action}")),
        ));
    }
    // Force overrides a cluster-wide rail: only a token for the whole
    // cluster may (one limited to some nodes is a delegate's).
    if force && rails::guarded(action) && grant.nodes.is_some() {
        return Err((
            subject,
            ApiError::Forbidden(format!(
                "force needs a token not limited to nodes: {action} with force=true is refused"
            )),
        ));
    }
    let selection = Selection::from_pairs(&request.query).map_err(bad)?;
    let loaded = app.state.current();
    let nodes = select(&loaded.topology, &selection, &grant, app.hostlist_limit).map_err(bad)?;
    Ok(Admitted {
        action,
        grant,
        loaded,
        nodes,
        dry_run,
        force,
        asked: Asked { wait, grace },
        turns,
    })
}

fn authorize(app: &App, header: Option<&str>) -> Result<Grant, ApiError> {
    app.keys.authorize(header).map_err(|e: AuthError| {
        tracing::debug!("token refused: {e}");
        ApiError::Forbidden(e.to_string())
    })
}

/// Run the action and pass results on as they come, after `refused`'s
/// (nodes not run, by protection); when the last is in, write the audit
/// line, then end the stream. An action's runs and the audit line complete
/// even if the client goes away; a status's runs not yet started are then
/// not run.
fn start(
    app: &Arc<App>,
    loaded: Arc<Loaded>,
    mut record: Record,
    nodes: Vec<String>,
    refused: Vec<CommandAttributes>,
    asked: Asked,
) -> (mpsc::UnboundedReceiver<CommandAttributes>, Vec<Waiting>) {
    // Set when the client has gone: a status's runs not yet started are
    // then not run (an action's always are).
    let (gone, abandoned) = tokio::sync::watch::channel(false);
    let (mut from_engine, waiting) = follow_up::run(
        &app.engine,
        loaded,
        record.action,
        nodes,
        Some(abandoned),
        asked,
    );
    let (tx, rx) = mpsc::unbounded_channel();
    record.protected = refused.len();
    record.failed = refused.len();
    for result in refused {
        let _ = tx.send(result);
    }
    let app = app.clone();
    // On the API's runtime, beside the connection that reads its output:
    // on the engine's nicer threads, it lost the CPU to that connection
    // after every result, which then went out one per body chunk (155
    // bytes each, measured), and the client woke for each.
    tokio::spawn(async move {
        loop {
            let result = tokio::select! {
                result = from_engine.recv() => match result {
                    Some(result) => result,
                    None => break,
                },
                () = tx.closed(), if !*gone.borrow() => {
                    gone.send_replace(true);
                    continue;
                }
            };
            // And the results already waiting, without a select each.
            let mut next = Some(result);
            while let Some(result) = next {
                record.forced_off += usize::from(result.fallback == Some(true));
                if result.success {
                    record.succeeded += 1;
                } else {
                    record.failed += 1;
                    record.missing += usize::from(result.missing);
                }
                let _ = tx.send(result);
                next = from_engine.try_recv();
            }
        }
        if let Some(audit) = &app.audit {
            let _ = audit.write(&record);
        }
        tracing::info!(
            subject = record.subject.as_deref().unwrap_or(""),
            action = %record.action,
            nodes = %record.nodes,
            succeeded = record.succeeded,
            failed = record.failed,
            protected = record.protected,
            force = record.force,
            forced_off = record.forced_off,
            "power request"
        );
        drop(tx);
    });
    (rx, waiting)
}

/// The `turns` lines of the nodes waiting for their turn, soonest first.
fn turn_lines(action: Action, waiting: &[Waiting]) -> Vec<u8> {
    let now = tokio::time::Instant::now();
    let mut lines = Vec::new();
    for w in waiting {
        let starts_in = w.starts.saturating_duration_since(now);
        let turn = TurnAttributes {
            action,
            node_name: w.node.clone(),
            starts_in_ms: u64::try_from(starts_in.as_millis()).unwrap_or(u64::MAX),
        };
        serde_json::to_writer(&mut lines, &Resource::turn(turn)).expect("a turn serialises");
        lines.push(b'\n');
    }
    lines
}

/// Results as NDJSON: one `commands` resource per line, as each arrives.
/// The results already waiting go out together, as one chunk of the body:
/// a batch driver's answers come in bursts, and a chunk each cost the
/// server and the client more than the JSON.
struct Lines {
    /// Lines to send before any result.
    first: Option<Vec<u8>>,
    results: mpsc::UnboundedReceiver<CommandAttributes>,
}

/// Waiting results joined into one chunk, up to about this many bytes.
const LINES_CHUNK: usize = 64 * 1024;

impl futures_util::Stream for Lines {
    type Item = Result<Vec<u8>, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        // About 170 bytes a result: room for the results waiting now.
        let waiting = self.results.len() + 1;
        let mut chunk = Vec::with_capacity((waiting * 192).min(LINES_CHUNK + 4096));
        while chunk.len() < LINES_CHUNK {
            match self.results.poll_recv(cx) {
                Poll::Ready(Some(result)) => {
                    result_line::write(&mut chunk, &result);
                    chunk.push(b'\n');
                }
                // The end, or nothing more yet: send what there is first.
                Poll::Ready(None) if chunk.is_empty() => return Poll::Ready(None),
                Poll::Pending if chunk.is_empty() => return Poll::Pending,
                Poll::Ready(None) | Poll::Pending => break,
            }
        }
        Poll::Ready(Some(Ok(chunk)))
    }
}
