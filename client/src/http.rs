//! Talking to the power server: one blocking HTTP request per call (ureq),
//! and every way an answer can go wrong mapped to a [`Failure`].
//!
//! Power routes ask for the server's NDJSON stream (one command result a
//! line, as each node finishes) so a progress bar can follow a large job,
//! and fall back to the plain JSON:API document when the server answers
//! `application/json`, as the reference server does.

use crate::exit::Failure;
use power_proto::result_line;
use power_proto::wire::{
    Action, CommandAttributes, Document, ErrorDocument, GroupAttributes, NodeAttributes,
    PlanAttributes, Resource, TurnAttributes,
};
use serde::de::DeserializeOwned;
use std::io::BufRead;
use std::time::Duration;
use ureq::http::{Method, Request, Response};
use ureq::Body;

/// The largest JSON document the client reads (a very large cluster's
/// status is a few tens of MB).
const BODY_LIMIT: u64 = 1 << 30;

/// What a power request asks beside its action and its nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ask {
    /// `force=true`: protected nodes are run too.
    pub force: bool,
    /// `wait=SECONDS`: the server confirms the action, polling each node's
    /// status until it is in the target state or this time is up.
    pub wait: Option<Duration>,
    /// `graceful=true&grace=SECONDS` (an off): a shutdown first, and a hard
    /// off of the nodes still on after this long.
    pub grace: Option<Duration>,
    /// `turns=true`: the nodes of a staged power-on waiting for their turn
    /// are streamed first ([`Streamed::Turn`]).
    pub turns: bool,
}

/// What a power answer's stream brings, as it comes.
#[derive(Debug, Clone, Copy)]
pub enum Streamed<'a> {
    /// A node's result.
    Result(&'a CommandAttributes),
    /// A node waiting for its turn (a staged power-on).
    Turn(&'a TurnAttributes),
}

/// What a power request acts on: a hostlist of nodes, or of groups, or
/// every node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `?nodes=EXPR`.
    Nodes(String),
    /// `?groups=EXPR`.
    Groups(String),
    /// `?all=true`.
    All,
}

/// A connection to one power server.
pub struct Api {
    agent: ureq::Agent,
    base_url: String,
    token: Option<String>,
}

impl Api {
    /// A client for the server at `base_url` (no trailing `/`), presenting
    /// `token` if there is one.
    pub fn new(base_url: &str, token: Option<&str>) -> Api {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            // Keep the token across a redirect on the same host (http to
            // https, a path moved), never to another host.
            .redirect_auth_headers(ureq::config::RedirectAuthHeaders::SameHost)
            // A fresh connection per request: a pooled one the server has
            // just closed fails the next request with an early EOF, and a
            // command makes too few requests for reuse to matter.
            .max_idle_connections(0)
            .max_idle_connections_per_host(0)
            .user_agent(concat!("power/", env!("CARGO_PKG_VERSION")))
            // 16 KiB, not ureq's 128: a large answer then costs a few more
            // reads, not 28 more pages to fault in, which cost more. The
            // output buffer is sized per request, in `send`.
            .input_buffer_size(16 * 1024)
            .build()
            .into();
        Api {
            agent,
            base_url: base_url.to_string(),
            token: token.map(str::to_string),
        }
    }

    /// `GET /nodes`.
    pub fn nodes(&self) -> Result<Vec<NodeAttributes>, Failure> {
        let response = self.send(Method::GET, "nodes", None, &[], "application/json")?;
        Ok(attributes(self.document(response)?))
    }

    /// `GET /groups`.
    pub fn groups(&self) -> Result<Vec<GroupAttributes>, Failure> {
        let response = self.send(Method::GET, "groups", None, &[], "application/json")?;
        Ok(attributes(self.document(response)?))
    }

    /// Runs `action` on `target` as `ask` says and returns one result per
    /// node; `each` is called as each result arrives (all at once for a
    /// plain document).
    pub fn power(
        &self,
        action: Action,
        target: &Target,
        ask: Ask,
        mut each: impl FnMut(Streamed<'_>),
    ) -> Result<Vec<CommandAttributes>, Failure> {
        let method = Method::from_bytes(action.method().as_bytes()).expect("a valid method");
        let accept = "application/x-ndjson, application/json;q=0.9";
        let seconds = |d: Duration| d.as_secs().max(1).to_string();
        let (wait, grace) = (ask.wait.map(seconds), ask.grace.map(seconds));
        let mut extra: Vec<(&str, &str)> = Vec::new();
        if ask.force {
            extra.push(("force", "true"));
        }
        if let Some(wait) = &wait {
            extra.push(("wait", wait));
        }
        if let Some(grace) = &grace {
            extra.extend([("graceful", "true"), ("grace", grace.as_str())]);
        }
        if ask.turns {
            extra.push(("turns", "true"));
        }
        let response = self.send(method, "", Some(target), &extra, accept)?;
        if essence(&response) == "application/x-ndjson" {
            return self.stream(response, each);
        }
        let results = attributes(self.document(response)?);
        for result in &results {
            each(Streamed::Result(result));
        }
        Ok(results)
    }

    /// What `action` on `target` would do, node by node, running nothing
    /// (`?dry_run=true`). Always sent as a `GET` naming the action in a
    /// parameter: a server that knows no dry run (the reference) then runs
    /// a status, never the action, and its answer (no `plans`) is refused.
    pub fn plan(
        &self,
        action: Action,
        target: &Target,
        force: bool,
    ) -> Result<Vec<PlanAttributes>, Failure> {
        let mut extra = vec![("dry_run", "true"), ("action", action.as_str())];
        if force {
            extra.push(("force", "true"));
        }
        let response = self.send(Method::GET, "", Some(target), &extra, "application/json")?;
        let document: Document<serde_json::Value> = self.document(response)?;
        document
            .data
            .into_iter()
            .map(|r| {
                if r.kind != "plans" {
                    return Err(self.bad_answer(format!(
                        "a dry run answered with {:?} resources, not plans: \
                         the server does not know dry runs (nothing was run but a status)",
                        r.kind
                    )));
                }
                serde_json::from_value(r.attributes)
                    .map_err(|e| self.bad_answer(format!("not a plan: {e}")))
            })
            .collect()
    }

    fn url(&self, path: &str, target: Option<&Target>, extra: &[(&str, &str)]) -> String {
        let mut query = match target {
            None => String::new(),
            Some(Target::Nodes(expr)) => format!("?nodes={}", percent_encode(expr)),
            Some(Target::Groups(expr)) => format!("?groups={}", percent_encode(expr)),
            Some(Target::All) => "?all=true".to_string(),
        };
        for (key, value) in extra {
            query.push(if query.is_empty() { '?' } else { '&' });
            query.push_str(key);
            query.push('=');
            query.push_str(&percent_encode(value));
        }
        format!("{}/{path}{query}", self.base_url)
    }

    /// Sends a request; anything but a 2xx answer becomes a [`Failure`].
    fn send(
        &self,
        method: Method,
        path: &str,
        target: Option<&Target>,
        extra: &[(&str, &str)],
        accept: &str,
    ) -> Result<Response<Body>, Failure> {
        let url = self.url(path, target, extra);
        // ureq's buffer for the request head is 128 KiB unless told, and
        // zeroed: most of a small command's page faults. A head is the
        // URL, the token and a few short headers.
        let head = url.len() + self.token.as_ref().map_or(0, String::len) + 1024;
        let output_buffer = head.next_power_of_two().max(4096);
        let mut request = Request::builder()
            .method(method)
            .uri(url)
            .header("Accept", accept);
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        let unusable = |e: ureq::http::Error| {
            Failure::Config(format!(
                "base URL {} is not usable: {e}: expected e.g. http://localhost:6302",
                self.base_url
            ))
        };
        // No body, said plainly: for PATCH and PUT, ureq would otherwise
        // send an empty chunked one, which a server may close on unread.
        let sent = if matches!(request.method_ref(), Some(&Method::PATCH | &Method::PUT)) {
            self.run(request.body(&[][..]).map_err(unusable)?, output_buffer)
        } else {
            self.run(request.body(()).map_err(unusable)?, output_buffer)
        };
        let mut response = sent.map_err(|e| self.transport_failure(e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_string()
            .unwrap_or_default();
        let detail = error_detail(&body);
        Err(match status.as_u16() {
            401 | 403 if self.token.is_none() => Failure::NoToken,
            401 | 403 => Failure::TokenRefused(detail),
            400 => Failure::BadRequest(detail.unwrap_or_else(|| "400 Bad Request".into())),
            _ => self.bad_answer(match detail {
                Some(detail) => format!("{status}: {detail}"),
                None => status.to_string(),
            }),
        })
    }

    /// Runs `request` with an output buffer (the request head's) of
    /// `output_buffer` bytes.
    fn run<S: ureq::AsSendBody>(
        &self,
        request: Request<S>,
        output_buffer: usize,
    ) -> Result<Response<Body>, ureq::Error> {
        let request = self
            .agent
            .configure_request(request)
            .output_buffer_size(output_buffer)
            .build();
        self.agent.run(request)
    }

    /// Reads a JSON:API document of resources.
    fn document<A: DeserializeOwned>(
        &self,
        mut response: Response<Body>,
    ) -> Result<Document<A>, Failure> {
        let kind = essence(&response);
        if !kind.ends_with("json") {
            let kind = if kind.is_empty() {
                "no content type"
            } else {
                &kind
            };
            return Err(self.bad_answer(format!(
                "expected JSON, got {kind}: is {} a power server?",
                self.base_url
            )));
        }
        let text = response
            .body_mut()
            .with_config()
            .limit(BODY_LIMIT)
            .read_to_string()
            .map_err(|e| self.transport_failure(e))?;
        serde_json::from_str(&text)
            .map_err(|e| self.bad_answer(format!("not a power API document: {e}")))
    }

    /// Reads an NDJSON stream of command results.
    fn stream(
        &self,
        response: Response<Body>,
        mut each: impl FnMut(Streamed<'_>),
    ) -> Result<Vec<CommandAttributes>, Failure> {
        let mut reader = std::io::BufReader::new(response.into_body().into_reader());
        let mut results = Vec::new();
        // One buffer for every line: a line is parsed where it was read.
        let mut line = Vec::new();
        for n in 1.. {
            line.clear();
            let read = reader
                .read_until(b'\n', &mut line)
                .map_err(|e| Failure::Unreachable {
                    url: self.base_url.clone(),
                    reason: format!("connection lost mid-answer: {}", crate::describe_io(&e)),
                })?;
            if read == 0 {
                break;
            }
            if line.trim_ascii().is_empty() {
                continue;
            }
            let result = match parse_line(&line) {
                Ok(result) => result,
                // Seldom: tried only once a line is not a result.
                Err(e) => match serde_json::from_slice::<Resource<TurnAttributes>>(&line) {
                    Ok(turn) if turn.kind == "turns" => {
                        each(Streamed::Turn(&turn.attributes));
                        continue;
                    }
                    _ => return Err(self.bad_answer(format!("line {n} of the stream: {e}"))),
                },
            };
            each(Streamed::Result(&result));
            results.push(result);
        }
        Ok(results)
    }

    fn bad_answer(&self, what: String) -> Failure {
        Failure::BadAnswer {
            url: self.base_url.clone(),
            what,
        }
    }

    fn transport_failure(&self, e: ureq::Error) -> Failure {
        let reason = match e {
            ureq::Error::BadUri(e) => {
                return Failure::Config(format!(
                    "base URL {} is not usable: {e}: expected e.g. http://localhost:6302",
                    self.base_url
                ))
            }
            ureq::Error::Protocol(e) => return self.bad_answer(format!("not HTTP: {e}")),
            ureq::Error::Io(e) => crate::describe_io(&e),
            ureq::Error::HostNotFound => "host not found".into(),
            ureq::Error::ConnectionFailed => "connection failed".into(),
            ureq::Error::Timeout(t) => format!("timed out ({t})"),
            other => other.to_string(),
        };
        Failure::Unreachable {
            url: self.base_url.clone(),
            reason,
        }
    }
}

/// The media type of an answer, lowercase, without parameters.
fn essence(response: &Response<Body>) -> String {
    let value = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = value.split(';').next().unwrap_or("");
    essence.trim().to_ascii_lowercase()
}

fn attributes<A>(document: Document<A>) -> Vec<A> {
    document.data.into_iter().map(|r| r.attributes).collect()
}

/// One NDJSON line: a `commands` resource, or its bare attributes. Read
/// fast when it is in the server's own form (nearly always), else by serde.
///
/// Tried in that order rather than as an untagged enum: serde buffers an
/// untagged value before choosing, which was most of the client's time on
/// 10,000-node answers.
fn parse_line(line: &[u8]) -> Result<CommandAttributes, serde_json::Error> {
    if let Some(result) = result_line::read(line) {
        return Ok(result);
    }
    match serde_json::from_slice::<Resource<CommandAttributes>>(line) {
        Ok(resource) => Ok(resource.attributes),
        Err(as_resource) => serde_json::from_slice(line).map_err(|_| as_resource),
    }
}

/// The person-readable reason in an error answer: the first error's detail
/// in a JSON:API error document, else the first line of the body.
fn error_detail(body: &str) -> Option<String> {
    if let Ok(document) = serde_json::from_str::<ErrorDocument>(body) {
        // The title only repeats the status (`Forbidden`): say nothing rather
        // than that, so the caller's own explanation is used.
        return document.errors.into_iter().next()?.detail;
    }
    let line = body.lines().map(str::trim).find(|l| !l.is_empty())?;
    Some(line.chars().take(200).collect())
}

/// Percent-encodes a query value (everything but RFC 3986's unreserved
/// characters), so `node[01-05],login1` arrives intact.
pub fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_hostlists() {
        assert_eq!(
            percent_encode("node[01-05],login1"),
            "node%5B01-05%5D%2Clogin1"
        );
        assert_eq!(percent_encode("a b&c=d"), "a%20b%26c%3Dd");
    }

    #[test]
    fn builds_urls() {
        let api = Api::new("http://h:1/prefix", None);
        assert_eq!(api.url("nodes", None, &[]), "http://h:1/prefix/nodes");
        let target = Target::Groups("rack[1-2]".into());
        assert_eq!(
            api.url("", Some(&target), &[]),
            "http://h:1/prefix/?groups=rack%5B1-2%5D"
        );
        assert_eq!(
            api.url(
                "",
                Some(&Target::All),
                &[("dry_run", "true"), ("action", "power_off")]
            ),
            "http://h:1/prefix/?all=true&dry_run=true&action=power_off"
        );
    }

    #[test]
    fn parses_stream_lines_either_way() {
        let bare = r#"{"action":"power_on","node-name":"n1","platform":"sim","missing":false,"success":true,"duration-ms":3}"#;
        let wrapped = format!(r#"{{"type":"commands","id":"n1","attributes":{bare}}}"#);
        let a = parse_line(bare.as_bytes()).unwrap();
        assert_eq!(
            (a.action, &*a.node_name, a.success),
            (Action::PowerOn, "n1", true)
        );
        assert_eq!(parse_line(wrapped.as_bytes()).unwrap(), a);
        assert!(parse_line(br#"{"hello":1}"#).is_err());
    }

    #[test]
    fn error_details() {
        let doc = r#"{"errors":[{"status":"403","title":"Forbidden","detail":"token expired"}]}"#;
        assert_eq!(error_detail(doc).as_deref(), Some("token expired"));
        let doc = r#"{"errors":[{"status":"403","title":"Forbidden"}]}"#;
        assert_eq!(error_detail(doc), None);
        assert_eq!(error_detail("\n oops \nmore").as_deref(), Some("oops"));
        assert_eq!(error_detail(""), None);
    }
}
