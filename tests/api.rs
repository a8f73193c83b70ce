//! The HTTP API, against the real `power-server serve` on an ephemeral
//! loopback port with real sim drivers. Each test says what it protects.
//!
//! A refused request must run nothing: those tests compare every sim state
//! file before and after.

use crate::support::{poll, run, Reply, Server};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::io::Read;
use std::time::Duration;

/// Nodes for every outcome: four plain ones in a rack, one on from the
/// start, one slow, one whose driver always fails. `bmc_password` is a
/// node variable that must never reach a client.
const TOPOLOGY: &str = "\
platforms:
  sim:
    driver: sim
    variables: [sim_initial, sim_delay, sim_fail]
static_nodes:
  n[01-04]:
    platform: sim
    groups: [rack]
    bmc_password: hunter2
  lit:
    platform: sim
    sim_initial: 'on'
  slow:
    platform: sim
    sim_delay: '5'
  broken:
    platform: sim
    sim_fail: all
groups:
  pair: n[01-02]
";

fn server() -> Server {
    Server::start(&[("nodes.yaml", TOPOLOGY)])
}

/// The body's `data`, with each resource's `duration-ms` checked to be a
/// number and then removed, so the rest can be compared exactly.
fn data(reply: &Reply) -> Vec<Value> {
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.content_type.as_deref(), Some("application/json"));
    let mut doc = reply.json();
    let data = doc["data"].as_array_mut().expect("data is a list");
    for resource in data.iter_mut() {
        if resource["type"] == "commands" {
            let attrs = resource["attributes"].as_object_mut().unwrap();
            let ms = attrs.remove("duration-ms").expect("duration-ms is present");
            assert!(ms.is_u64(), "duration-ms is a number: {ms}");
        }
    }
    data.clone()
}

/// A refusal: the status, JSON:API error document, and its detail.
fn refused(reply: &Reply, status: u16) -> String {
    assert_eq!(reply.status, status, "{}", reply.body);
    assert_eq!(reply.content_type.as_deref(), Some("application/json"));
    let doc = reply.json();
    let error = &doc["errors"][0];
    assert_eq!(error["status"], status.to_string());
    error["detail"].as_str().expect("a detail").to_string()
}

fn command(id: &str, attributes: Value) -> Value {
    json!({ "type": "commands", "id": id, "attributes": attributes })
}

/// Status keeps the reference's attributes and adds `state`, `error`,
/// `exit-code`, `duration-ms`; missing nodes and failing drivers are
/// answered per node, in the order asked, with 200.
#[test]
fn status_reports_every_node_field_by_field() {
    let s = server();
    s.set_sim_state("n02", "on");
    let t = s.token(&[]);
    let reply = s.get("/?nodes=n[01-02],ghost,broken,lit", &t);
    assert_eq!(
        data(&reply),
        [
            command(
                "n01",
                json!({"action": "status", "node-name": "n01", "platform": "sim",
                       "missing": false, "success": true, "running": false,
                       "state": "off", "exit-code": 111})
            ),
            command(
                "n02",
                json!({"action": "status", "node-name": "n02", "platform": "sim",
                       "missing": false, "success": true, "running": true,
                       "state": "on", "exit-code": 0})
            ),
            command(
                "ghost",
                json!({"action": "status", "node-name": "ghost", "platform": null,
                       "missing": true, "success": false, "running": false,
                       "state": "unknown", "error": "node ghost is not in the topology",
                       "error-class": "missing"})
            ),
            command(
                "broken",
                json!({"action": "status", "node-name": "broken", "platform": "sim",
                       "missing": false, "success": false, "running": false,
                       "state": "unknown", "exit-code": 1,
                       "error": "sim: simulated failure of status on broken",
                       "error-class": "failed"})
            ),
            command(
                "lit",
                json!({"action": "status", "node-name": "lit", "platform": "sim",
                       "missing": false, "success": true, "running": true,
                       "state": "on", "exit-code": 0})
            ),
        ]
    );
    assert!(!reply.body.contains("hunter2"));
}

/// PATCH powers on, DELETE off, PUT restarts: the drivers really run, and
/// the results carry the reference's action names and no `running`.
#[test]
fn power_routes_run_their_action() {
    let s = server();
    let t = s.token(&["--role", "operator"]);
    for (method, action, after) in [
        ("PATCH", "power_on", "on"),
        ("DELETE", "power_off", "off"),
        ("PUT", "restart", "on"),
    ] {
        let reply = s.request(method, "/?nodes=n01,broken", Some(&t), &[]);
        assert_eq!(
            data(&reply),
            [
                command(
                    "n01",
                    json!({"action": action, "node-name": "n01", "platform": "sim",
                           "missing": false, "success": true, "exit-code": 0})
                ),
                command(
                    "broken",
                    json!({"action": action, "node-name": "broken", "platform": "sim",
                           "missing": false, "success": false, "exit-code": 1,
                           "error": format!("sim: simulated failure of {action} on broken"),
                           "error-class": "failed"})
                ),
            ],
            "{method}"
        );
        assert_eq!(s.sim_state("n01").as_deref(), Some(after), "{method}");
    }
}

/// `/nodes` and `/groups` have the reference's shapes (added attributes
/// only) and never carry node variables; no token, no list.
#[test]
fn lists_of_nodes_and_groups() {
    let s = server();
    let t = s.token(&["--role", "viewer"]);
    let nodes = s.get("/nodes", &t);
    let mut expected: Vec<Value> = ["n01", "n02", "n03", "n04"]
        .iter()
        .map(|n| {
            let groups = if *n <= "n02" {
                json!(["pair", "rack"])
            } else {
                json!(["rack"])
            };
            json!({"type": "nodes", "id": n,
                   "attributes": {"name": n, "platform": "sim", "groups": groups}})
        })
        .collect();
    for n in ["lit", "slow", "broken"] {
        expected
            .push(json!({"type": "nodes", "id": n, "attributes": {"name": n, "platform": "sim"}}));
    }
    assert_eq!(data(&nodes), expected);
    assert!(!nodes.body.contains("hunter2") && !nodes.body.contains("bmc_password"));

    assert_eq!(
        data(&s.get("/groups", &t)),
        [
            json!({"type": "groups", "id": "pair",
                   "attributes": {"name": "pair", "nodes": ["n01", "n02"]}}),
            json!({"type": "groups", "id": "rack",
                   "attributes": {"name": "rack", "nodes": ["n01", "n02", "n03", "n04"]}}),
        ]
    );
    for path in ["/nodes", "/groups"] {
        refused(&s.request("GET", path, None, &[]), 403);
    }
}

/// `?groups=` selects the members of the topology's groups and of groups
/// nodes list themselves in, after `?nodes=`, without duplicates; an
/// unknown group is a 400 naming it.
#[test]
fn groups_select_their_members() {
    let s = server();
    let t = s.token(&[]);
    let ids = |reply: &Reply| -> Vec<String> {
        data(reply)
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        ids(&s.get("/?nodes=n03&groups=pair,rack", &t)),
        ["n03", "n01", "n02", "n04"]
    );
    assert_eq!(
        ids(&s.get("/?groups=pair&nodes=lit", &t)),
        ["lit", "n01", "n02"]
    );
    let detail = refused(&s.get("/?groups=rack,nope", &t), 400);
    assert_eq!(detail, "unknown group nope: see GET /groups");
}

/// An empty or absent selection selects no node, never all of them, and
/// runs nothing.
#[test]
fn nothing_selected_runs_nothing() {
    let s = server();
    let t = s.token(&[]);
    for query in [
        "/",
        "/?nodes=",
        "/?groups=",
        "/?nodes=&groups=",
        "/?other=n01",
    ] {
        let reply = s.request("PATCH", query, Some(&t), &[]);
        assert_eq!(data(&reply), Vec::<Value>::new(), "{query}");
    }
    assert_eq!(s.sim_states(), []);
}

/// Bad hostlists are refused with 400 and a message naming the fault; an
/// expression past the limit is refused before anything is expanded (this
/// one would not fit in memory).
#[test]
fn bad_hostlists_are_400_naming_the_fault() {
    let s = server();
    let t = s.token(&[]);
    for (query, detail) in [
        (
            "/?nodes=n[01-",
            "bad nodes parameter: unbalanced brackets in `n[01-`: expected each `[` closed by `]`, unnested",
        ),
        (
            "/?nodes=n[3-1]",
            "bad nodes parameter: range `3-1` in `n[3-1]` is reversed: the lower bound must come first",
        ),
        (
            "/?groups=g%20x",
            "bad groups parameter: character ' ' is not allowed in host name `g x`: expected ASCII letters, digits, `-`, `_` or `.`",
        ),
        (
            "/?nodes=n[0-18446744073709551615]",
            "bad nodes parameter: hostlist expands to 18446744073709551616 names, more than the limit of 100000",
        ),
        (
            "/?nodes=n[1-100001]",
            "bad nodes parameter: hostlist expands to 100001 names, more than the limit of 100000",
        ),
    ] {
        assert_eq!(refused(&s.request("PATCH", query, Some(&t), &[]), 400), detail);
    }
    assert_eq!(s.sim_states(), []);
}

/// The limit is a setting.
#[test]
fn the_hostlist_limit_can_be_set() {
    let s = Server::builder()
        .file("nodes.yaml", TOPOLOGY)
        .arg("--hostlist-limit")
        .arg("3")
        .start();
    let t = s.token(&[]);
    assert_eq!(data(&s.get("/?nodes=n[01-03]", &t)).len(), 3);
    assert_eq!(
        refused(&s.get("/?nodes=n[01-04]", &t), 400),
        "bad nodes parameter: hostlist expands to 4 names, more than the limit of 3"
    );
}

/// URL-safe base64 without padding, for hand-made tokens.
fn b64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sign(alg: Algorithm, secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// Every bad token, and every token that does not allow the request, gets
/// 403 and runs nothing.
#[test]
fn token_matrix() {
    let s = server();
    let secret = s.secret.as_str();
    let later = now() + 3600;
    let unsigned = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(json!({ "exp": later }).to_string().as_bytes())
    );
    let cases: Vec<(&str, Option<String>, &str, &str)> = vec![
        ("no token", None, "/?nodes=n01", "no token"),
        (
            "garbage",
            Some("Bearer garbage".into()),
            "/?nodes=n01",
            "not valid",
        ),
        (
            "not bearer",
            Some(format!("Basic {}", s.token(&[]))),
            "/?nodes=n01",
            "not \"Bearer TOKEN\"",
        ),
        (
            "wrong secret",
            Some(format!(
                "Bearer {}",
                sign(Algorithm::HS256, "other", &json!({"exp": later}))
            )),
            "/?nodes=n01",
            "bad signature",
        ),
        (
            "alg none",
            Some(format!("Bearer {unsigned}")),
            "/?nodes=n01",
            "not valid",
        ),
        (
            "HS512 with the same secret",
            Some(format!(
                "Bearer {}",
                sign(Algorithm::HS512, secret, &json!({"exp": later}))
            )),
            "/?nodes=n01",
            "not valid",
        ),
        (
            "no exp",
            Some(format!(
                "Bearer {}",
                sign(Algorithm::HS256, secret, &json!({"sub": "x"}))
            )),
            "/?nodes=n01",
            "the token is not valid: the exp claim is required",
        ),
        (
            "expired",
            Some(format!(
                "Bearer {}",
                sign(Algorithm::HS256, secret, &json!({"exp": now() - 10}))
            )),
            "/?nodes=n01",
            "expired",
        ),
        (
            "unknown role",
            Some(format!(
                "Bearer {}",
                sign(
                    Algorithm::HS256,
                    secret,
                    &json!({"exp": later, "role": "root"})
                )
            )),
            "/?nodes=n01",
            "not valid",
        ),
        (
            "viewer on a power route",
            Some(format!("Bearer {}", s.token(&["--role", "viewer"]))),
            "/?nodes=n01",
            "power_on needs an operator token",
        ),
        (
            "node-limited token touching another node",
            Some(format!("Bearer {}", s.token(&["--nodes", "n01"]))),
            "/?nodes=n01,n02",
            "the token does not cover nodes n02",
        ),
    ];
    for (what, header, query, detail) in cases {
        let mut headers = Vec::new();
        if let Some(h) = &header {
            headers.push(("Authorization", h.as_str()));
        }
        let reply = s.request("PATCH", query, None, &headers);
        let got = refused(&reply, 403);
        assert!(got.contains(detail), "{what}: {got}");
        assert!(!got.contains(secret), "{what}: the secret leaked");
    }
    // Status is refused the same way for bad tokens.
    refused(&s.request("GET", "/?nodes=n01", None, &[]), 403);
    assert_eq!(s.sim_states(), [], "a refused request ran a driver");
    let log = s.log();
    assert!(!log.contains(secret), "the secret is in the server's log");
}

/// A viewer may list and read status; an operator may act; a token without
/// a role (as the reference minted them, `{"admin": null, "exp": ...}`)
/// keeps full access.
#[test]
fn roles_and_reference_tokens() {
    let s = server();
    let viewer = s.token(&["--role", "viewer"]);
    assert_eq!(data(&s.get("/?nodes=n01", &viewer)).len(), 1);
    assert_eq!(data(&s.get("/nodes", &viewer)).len(), 7);
    let operator = s.token(&["--role", "operator"]);
    assert_eq!(
        data(&s.request("PATCH", "/?nodes=n01", Some(&operator), &[]))[0]["attributes"]["success"],
        true
    );
    let reference = sign(
        Algorithm::HS256,
        &s.secret,
        &json!({"admin": null, "exp": now() + 3600}),
    );
    assert_eq!(
        data(&s.request("DELETE", "/?nodes=n01", Some(&reference), &[]))[0]["attributes"]
            ["success"],
        true
    );
    assert_eq!(s.sim_state("n01").as_deref(), Some("off"));
}

/// A token limited to a node set sees only those nodes: in lists, in
/// groups, and in what it may act on.
#[test]
fn node_limited_tokens_see_only_their_nodes() {
    let s = server();
    let t = s.token(&["--nodes", "n[02-03],lit"]);
    let ids = |reply: &Reply| -> Vec<String> {
        data(reply)
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&s.get("/nodes", &t)), ["n02", "n03", "lit"]);
    assert_eq!(
        data(&s.get("/groups", &t)),
        [
            json!({"type": "groups", "id": "pair",
                   "attributes": {"name": "pair", "nodes": ["n02"]}}),
            json!({"type": "groups", "id": "rack",
                   "attributes": {"name": "rack", "nodes": ["n02", "n03"]}}),
        ]
    );
    assert_eq!(
        ids(&s.request("PATCH", "/?groups=rack", Some(&t), &[])),
        ["n02", "n03"]
    );
    assert_eq!(
        s.sim_states(),
        [
            ("n02".to_string(), "on".to_string()),
            ("n03".into(), "on".into())
        ]
    );
    let detail = refused(&s.get("/?nodes=n[01-04]", &t), 403);
    assert_eq!(detail, "the token does not cover nodes n[01,04]");
    let detail = refused(&s.get("/?nodes=ghost", &t), 403);
    assert_eq!(detail, "the token does not cover nodes ghost");
}

/// With `Accept: application/x-ndjson` results arrive one per line as each
/// node finishes: the first line comes while the slow node still runs.
#[test]
fn ndjson_streams_results_as_they_finish() {
    let s = server();
    let t = s.token(&[]);
    let response = s.send(
        "PATCH",
        "/?nodes=slow,n01",
        Some(&t),
        &[("Accept", "application/x-ndjson")],
    );
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/x-ndjson"
    );
    let mut body = response.into_body().into_reader();
    let first: Value =
        serde_json::from_str(&crate::support::read_line(&mut body).unwrap()).unwrap();
    assert_eq!(first["type"], "commands");
    assert_eq!(first["id"], "n01");
    assert_eq!(first["attributes"]["action"], "power_on");
    assert_eq!(first["attributes"]["success"], true);
    assert_eq!(
        s.sim_state("slow"),
        None,
        "the first line came only after the slow node finished"
    );
    let mut rest = String::new();
    body.read_to_string(&mut rest).unwrap();
    let lines: Vec<Value> = rest
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{rest}");
    assert_eq!(lines[0]["id"], "slow");
    assert_eq!(lines[0]["attributes"]["success"], true);
    assert_eq!(s.sim_state("slow").as_deref(), Some("on"));
}

/// Errors on the streaming route are still JSON:API documents.
#[test]
fn ndjson_refusals_are_json() {
    let s = server();
    let reply = s.request(
        "GET",
        "/?nodes=n01",
        None,
        &[("Accept", "application/x-ndjson")],
    );
    refused(&reply, 403);
}

/// One audit line per power request, refused ones included: time, subject,
/// action, nodes compressed, counts; an action has one more, before it
/// runs; never a token or the secret.
#[test]
fn audit_log_has_one_line_per_request_and_no_secret() {
    let s = server();
    let t = s.token(&["--subject", "alice"]);
    s.get("/?nodes=n[01-04],ghost", &t);
    s.request("PATCH", "/?nodes=n01,broken", Some(&t), &[]);
    s.request("PATCH", "/?nodes=n01", None, &[]);
    s.get("/nodes", &t);
    let lines: Vec<Value> = s
        .audit_lines()
        .iter()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    let without_time = |v: &Value| {
        let mut v = v.clone();
        let time = v.as_object_mut().unwrap().remove("time").unwrap();
        assert!(time.as_str().unwrap().ends_with('Z'), "{time}");
        v
    };
    assert_eq!(
        without_time(&lines[0]),
        json!({"subject": "alice", "action": "status", "nodes": "ghost,n[01-04]",
               "succeeded": 4, "failed": 1, "missing": 1})
    );
    assert_eq!(
        without_time(&lines[1]),
        json!({"subject": "alice", "action": "power_on", "nodes": "broken,n01",
               "event": "started"})
    );
    assert_eq!(
        without_time(&lines[2]),
        json!({"subject": "alice", "action": "power_on", "nodes": "broken,n01",
               "succeeded": 1, "failed": 1, "missing": 0})
    );
    assert_eq!(
        without_time(&lines[3]),
        json!({"subject": null, "action": "power_on", "nodes": "",
               "succeeded": 0, "failed": 0, "missing": 0,
               "refused": "no token: expected an Authorization: Bearer header",
               "query": "nodes=n01"})
    );
    let text = s.audit_lines().join("\n");
    assert!(!text.contains(&s.secret) && !text.contains(&t));
    assert!(!s.log().contains(&s.secret) && !s.log().contains(&t));
}

/// An action whose audit line cannot be written is refused, and runs
/// nothing; a status still answers.
#[test]
fn an_action_is_refused_when_the_audit_log_cannot_be_written() {
    let s = Server::builder()
        .file("nodes.yaml", TOPOLOGY)
        .arg("--audit-log")
        .arg("/dev/full")
        .start();
    let t = s.token(&["--role", "operator"]);
    let before = s.sim_states();
    let reply = s.request("PATCH", "/?nodes=n01", Some(&t), &[]);
    assert_eq!(
        refused(&reply, 503),
        "the audit log cannot be written (No space left on device (os error 28)): nothing was run"
    );
    assert_eq!(s.sim_states(), before, "a driver ran");
    assert_eq!(data(&s.get("/?nodes=n01", &t)).len(), 1);
}

/// Health needs no token; unknown routes and methods get JSON errors.
#[test]
fn healthz_and_unknown_routes() {
    let s = server();
    let reply = s.request("GET", "/healthz", None, &[]);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json(), json!({"status": "ok"}));
    refused(&s.request("GET", "/nope", None, &[]), 404);
    refused(&s.request("POST", "/", None, &[]), 405);
    refused(&s.request("POST", "/nodes", None, &[]), 405);
    refused(&s.request("OPTIONS", "/", None, &[]), 405);
}

/// A client that trickles its headers a line at a time, and one that
/// connects and says nothing, are both cut off after the header timeout
/// (10 s); the server answers others all along.
#[test]
fn slow_and_silent_connections_are_cut_off() {
    use std::io::Write;
    use std::net::TcpStream;
    use std::time::Instant;
    let s = server();
    let addr = s.url.trim_start_matches("http://").to_string();
    let start = Instant::now();
    let mut trickle = TcpStream::connect(&addr).unwrap();
    let mut silent = TcpStream::connect(&addr).unwrap();
    trickle.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
    for stream in [&trickle, &silent] {
        stream
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
    }
    // Ok(0) or an error other than a read timeout: the server hung up.
    let closed = |stream: &mut TcpStream| match stream.read(&mut [0u8; 64]) {
        Ok(n) => n == 0,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    };
    let (mut trickle_closed, mut silent_closed) = (None, None);
    while trickle_closed.is_none() || silent_closed.is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "still open after 40 s: trickle {trickle_closed:?}, silent {silent_closed:?}"
        );
        if trickle_closed.is_none()
            && (trickle.write_all(b"X-Slow: yes\r\n").is_err() || closed(&mut trickle))
        {
            trickle_closed = Some(start.elapsed());
        }
        if silent_closed.is_none() && closed(&mut silent) {
            silent_closed = Some(start.elapsed());
        }
        assert_eq!(s.request("GET", "/healthz", None, &[]).status, 200);
    }
    for at in [trickle_closed.unwrap(), silent_closed.unwrap()] {
        assert!(
            at >= Duration::from_secs(9),
            "cut off after {at:?}, before the timeout"
        );
    }
}

/// Nothing comes from `stream` for `wait`: no answer (yet).
fn silent_for(stream: &mut std::net::TcpStream, wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).unwrap();
    stream.read(&mut [0u8; 64]).is_err()
}

/// The whole answer on `stream`, up to its close.
fn answer_of(stream: &mut std::net::TcpStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

/// An action's request body (ureq sends an empty chunked one with PATCH)
/// is read to its end before the answer: a connection closed with it
/// unread is reset, and a reset can cut the answer short at the client.
#[test]
fn an_action_reads_its_request_body_before_answering() {
    use std::io::Write;
    use std::net::TcpStream;
    let s = server();
    let addr = s.url.trim_start_matches("http://").to_string();
    let mut stream = TcpStream::connect(&addr).unwrap();
    let head = format!(
        "PATCH /?nodes=n01 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        s.token(&["--role", "operator"])
    );
    stream.write_all(head.as_bytes()).unwrap();
    // The body has not ended: no answer yet.
    assert!(
        silent_for(&mut stream, Duration::from_millis(500)),
        "answered before the body ended"
    );
    stream.write_all(b"0\r\n\r\n").unwrap();
    let answer = answer_of(&mut stream);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"node-name\":\"n01\""), "{answer}");
}

/// The JWT secret given in the environment is gone from it once read:
/// neither the server's environment (`/proc/PID/environ`, readable by any
/// process of its user, drivers included) nor a driver's holds it.
#[test]
fn the_secret_leaves_the_environment() {
    let s = server();
    assert!(!s.secret.is_empty());
    let environ = std::fs::read(format!("/proc/{}/environ", s.pid())).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        !environ.contains(&s.secret),
        "the secret is in /proc/PID/environ"
    );
    // Still in force: tokens signed with it work.
    let reply = s.get("/nodes", &s.token(&[]));
    assert_eq!(reply.status, 200);
}

/// A status whose client goes away mid-answer does not run the nodes not
/// yet started: they are recorded as not run, and the slots are free.
#[test]
fn an_abandoned_status_stops_starting_runs() {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpStream;
    let s = Server::builder()
        .file(
            "nodes.yaml",
            "platforms:\n  sim:\n    driver: sim\n    variables: [sim_delay]\n\
             static_nodes:\n  d[1-8]:\n    platform: sim\n    sim_delay: '1'\n",
        )
        .arg("--concurrency")
        .arg("2")
        .start();
    let addr = s.url.trim_start_matches("http://").to_string();
    let mut stream = TcpStream::connect(&addr).unwrap();
    let request = format!(
        "GET /?nodes=d[1-8] HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Accept: application/x-ndjson\r\n\r\n",
        s.token(&[])
    );
    stream.write_all(request.as_bytes()).unwrap();
    // Read until the first node's result, then go away.
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    while !line.contains("\"node-name\"") {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "the answer ended");
    }
    drop(reader);
    let finished: Value = poll("the status's audit line", Duration::from_secs(30), || {
        s.audit_lines()
            .iter()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|v| v["action"] == "status")
    });
    let failed = finished["failed"].as_u64().unwrap();
    assert!(
        failed >= 3,
        "{failed} of 8 not run after the client went away: {finished}"
    );
}

/// At `--max-connections`, a further connection waits unaccepted until one
/// of those being served ends, then is answered.
#[test]
fn connections_past_the_limit_wait_their_turn() {
    use std::io::Write;
    use std::net::TcpStream;
    let s = Server::builder()
        .file("nodes.yaml", TOPOLOGY)
        .arg("--max-connections")
        .arg("2")
        .start();
    let addr = s.url.trim_start_matches("http://").to_string();
    let first = TcpStream::connect(&addr).unwrap();
    let _second = TcpStream::connect(&addr).unwrap();
    let mut third = TcpStream::connect(&addr).unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert!(
        silent_for(&mut third, Duration::from_millis(700)),
        "served past the limit"
    );
    drop(first);
    let answer = answer_of(&mut third);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// SIGTERM during a long job: the server stops accepting, and once the
/// grace period is over, kills the driver's whole process group (its
/// grandchild too) and exits with nothing left behind.
#[test]
fn sigterm_during_a_long_job_leaves_no_driver_behind() {
    let (out, mut s, request) = hung_power_on("1s");
    let leader = driver_pid(out.path(), "leader");
    let grandchild = driver_pid(out.path(), "grandchild");
    let status = s.terminate();
    assert!(status.success(), "the server exited with {status}");
    for pid in [leader, grandchild] {
        poll(
            &format!("driver process {pid} to be gone"),
            Duration::from_secs(5),
            || gone(pid).then_some(()),
        );
    }
    // The request in flight was answered with the killed run's result.
    let body = request.join().unwrap().expect("an answer before exit");
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["data"][0]["attributes"]["success"], false, "{body}");
}

/// A server whose one node `h1` runs the `hang` fixture driver (it records
/// its pids in the returned directory), with `--shutdown-grace GRACE`, and
/// a power-on request to it under way in a thread that returns the answer.
fn hung_power_on(
    grace: &str,
) -> (
    tempfile::TempDir,
    Server,
    std::thread::JoinHandle<Option<String>>,
) {
    let out = tempfile::tempdir().unwrap();
    let s = Server::builder()
        .file(
            "hang.yaml",
            "platforms:\n  hang:\n    driver: hang\n    timeout: 10m\nstatic_nodes:\n  h1:\n    platform: hang\n",
        )
        .env("FIXTURE_OUT", out.path())
        .arg("--shutdown-grace")
        .arg(grace)
        .start();
    let (t, url) = (s.token(&[]), s.url.clone());
    let request = std::thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        agent
            .patch(format!("{url}/?nodes=h1"))
            .header("Authorization", format!("Bearer {t}"))
            .send_empty()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
    });
    (out, s, request)
}

/// The pid the `hang` driver of `h1` recorded as `which` (`leader` or
/// `grandchild`) in `out`, once it has.
fn driver_pid(out: &std::path::Path, which: &str) -> i32 {
    let path = out.join(format!("h1.{which}"));
    poll(which, Duration::from_secs(30), || {
        std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
    })
}

/// Whether `pid` no longer exists (a zombie awaiting its reaper counts as gone).
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// A driver whose child leaves the process group (`setsid`) cannot leave
/// it behind: the server adopts it when the driver exits and kills it.
/// One holding the run's output pipes is killed at once, so runs stay
/// quick and keep no descriptor; one that let go of them is found by the
/// periodic look.
#[test]
fn a_process_that_escapes_its_drivers_group_is_killed_and_keeps_no_descriptor() {
    let out = tempfile::tempdir().unwrap();
    let s = Server::builder()
        .file(
            "escape.yaml",
            "platforms:\n  escape:\n    timeout: 30s\n\
             \x20   power_on: |\n      setsid sleep 300 &\n      echo $! > \"$FIXTURE_OUT/held.$POWER_NODE\"\n\
             \x20   power_off: |\n      setsid sleep 300 </dev/null >/dev/null 2>&1 &\n      echo $! > \"$FIXTURE_OUT/quiet.$POWER_NODE\"\n\
             \x20   status: exit 111\n\
             static_nodes:\n  e[1-4]:\n    platform: escape\n",
        )
        .env("FIXTURE_OUT", out.path())
        .start();
    let token = s.token(&[]);
    let descriptors = || {
        std::fs::read_dir(format!("/proc/{}/fd", s.pid()))
            .unwrap()
            .count()
    };
    let on = |nodes: &str| {
        let reply = s.request("PATCH", &format!("/?nodes={nodes}"), Some(&token), &[]);
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(
            reply.body.matches("\"success\":true").count(),
            4,
            "{}",
            reply.body
        );
    };
    on("e[1-4]");
    let baseline = descriptors();
    for _ in 0..5 {
        on("e[1-4]");
    }
    let pid_of = |file: &str| -> i32 {
        std::fs::read_to_string(out.path().join(file))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    for node in ["e1", "e2", "e3", "e4"] {
        let pid = pid_of(&format!("held.{node}"));
        poll(
            &format!("escaped process {pid} (held the pipes) to be killed and reaped"),
            Duration::from_secs(10),
            || reaped(pid).then_some(()),
        );
    }
    poll(
        "the server's descriptors back to what they were",
        Duration::from_secs(10),
        || (descriptors() <= baseline).then_some(()),
    );
    let reply = s.request("DELETE", "/?nodes=e1", Some(&token), &[]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let quiet = pid_of("quiet.e1");
    poll(
        &format!("escaped process {quiet} (let go of the pipes) to be killed and reaped"),
        Duration::from_secs(20),
        || reaped(quiet).then_some(()),
    );
    assert!(
        s.log().contains("escaped their driver's process group"),
        "{}",
        s.log()
    );
    assert_eq!(s.get("/healthz", "").status, 200);
}

/// Gone from the process table: killed, and reaped (not a zombie).
fn reaped(pid: i32) -> bool {
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// SIGTERM lets a run that fits in the grace period finish and answer.
#[test]
fn sigterm_lets_running_drivers_finish_within_the_grace() {
    let mut s = Server::builder()
        .file(
            "sim.yaml",
            "platforms:\n  sim:\n    driver: sim\n    variables: [sim_delay]\nstatic_nodes:\n  s1:\n    platform: sim\n    sim_delay: '1'\n",
        )
        .start();
    let t = s.token(&[]);
    let url = s.url.clone();
    let request = std::thread::spawn(move || {
        ureq::patch(format!("{url}/?nodes=s1"))
            .header("Authorization", format!("Bearer {t}"))
            .send_empty()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap()
    });
    // The run has started once the server logs the request... wait for the
    // driver's own sleep to exist rather than guess a time.
    poll("the sim driver to start", Duration::from_secs(30), || {
        has_child(s.pid()).then_some(())
    });
    let status = s.terminate();
    assert!(status.success());
    let doc: Value = serde_json::from_str(&request.join().unwrap()).unwrap();
    assert_eq!(doc["data"][0]["attributes"]["success"], true);
    assert_eq!(s.sim_state("s1").as_deref(), Some("on"));
}

/// Whether process `pid` has a child.
fn has_child(pid: u32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/task")).is_ok_and(|tasks| {
        tasks.flatten().any(|t| {
            std::fs::read_to_string(t.path().join("children")).is_ok_and(|c| !c.trim().is_empty())
        })
    })
}

/// `power-server token` prints the token alone, refuses bad input, and the
/// server finds its secret in a generated 0600 file when none is given.
#[test]
fn secret_file_is_generated_and_shared_with_token() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("conf/jwt-secret");
    let s = Server::builder()
        .file("nodes.yaml", TOPOLOGY)
        .no_secret_env()
        .arg("--secret-file")
        .arg(&secret_file)
        .start();
    let mode = std::fs::metadata(&secret_file)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let t = s.token(&["--role", "viewer", "--days", "1"]);
    assert_eq!(data(&s.get("/?nodes=n01", &t)).len(), 1);
    let secret = std::fs::read_to_string(&secret_file).unwrap();
    assert!(!s.log().contains(secret.trim()));

    let (status, stdout, stderr) = run(&mut s.token_command(&["--nodes", "n[1-"]));
    assert!(!status.success());
    assert_eq!(stdout, "");
    assert!(
        stderr.starts_with("power-server: --nodes: unbalanced brackets"),
        "{stderr}"
    );
    let (status, _, stderr) = run(&mut s.token_command(&["--role", "admin"]));
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("expected viewer or operator"), "{stderr}");
}

/// The config file carries the reference's `jwt_shared_secret` and every
/// setting; flags win over it.
#[test]
fn config_file_settings() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    let audit = dir.path().join("from-config.log");
    std::fs::write(
        &config,
        format!(
            "jwt_shared_secret: from-the-config\nnum_worker_commands: 4\nbind: 127.0.0.1:1\naudit_log: {}\n",
            audit.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    // The harness passes --bind 127.0.0.1:0 and --audit-log: flags win.
    let s = Server::builder()
        .file("nodes.yaml", TOPOLOGY)
        .no_secret_env()
        .arg("--config")
        .arg(&config)
        .start();
    let t = s.token(&[]);
    let reference = sign(
        Algorithm::HS256,
        "from-the-config",
        &json!({"exp": now() + 60}),
    );
    assert_eq!(data(&s.get("/?nodes=n01", &t)).len(), 1);
    assert_eq!(data(&s.get("/?nodes=n01", &reference)).len(), 1);
    assert_eq!(s.audit_lines().len(), 2);
    assert!(!audit.exists());
    assert!(!s.log().contains("from-the-config"));
}

/// Bad settings stop the server at start with a message naming them.
#[test]
fn bad_settings_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(crate::support::server_bin());
    cmd.args(["serve", "--bind", "nowhere", "--topology-dir"])
        .arg(dir.path())
        .env("POWER_SERVER_JWT_SECRET", "x");
    let (status, stdout, stderr) = run(&mut cmd);
    assert_eq!(status.code(), Some(1));
    assert_eq!(stdout, "");
    assert_eq!(
        stderr,
        "power-server: bind: \"nowhere\" is not usable: expected ADDR:PORT, e.g. 127.0.0.1:6302 or [::1]:6302\n"
    );
}

/// The quick start: `power-server demo` serves the shipped topology on
/// loopback and prints a token that works and the commands to try; Ctrl-C
/// stops it cleanly.
#[test]
fn demo_prints_a_working_token() {
    use std::io::BufRead;
    let mut child = std::process::Command::new(crate::support::server_bin())
        .args(["demo", "--bind", "127.0.0.1:0"])
        .env_remove("POWER_SERVER_JWT_SECRET")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    while !lines
        .iter()
        .any(|l: &String| l.contains("curl -g -X PATCH"))
    {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => lines.push(line),
            Err(e) => {
                let _ = child.kill();
                panic!("demo stopped printing ({e}): {lines:?}");
            }
        }
    }
    let url = lines[0].strip_prefix("listening on ").unwrap().to_string();
    assert!(url.starts_with("http://127.0.0.1:"));
    let token = lines
        .iter()
        .find_map(|l| l.trim().strip_prefix("export POWER_TOKEN="))
        .expect("a token line")
        .to_string();
    assert!(lines.iter().any(|l| l.trim() == "power list"));
    let mut reply = ureq::get(format!("{url}/?groups=rack1"))
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .unwrap();
    let doc: Value = serde_json::from_str(&reply.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(doc["data"].as_array().unwrap().len(), 8);
    assert_eq!(doc["data"][0]["attributes"]["success"], true);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = poll("the demo to exit", Duration::from_secs(30), || {
        child.try_wait().unwrap()
    });
    assert!(status.success(), "{status}");
}

/// A driver that echoes a credential in its error does not leak it: the
/// result's `error` has it masked, and so has the server's log.
#[test]
fn credentials_echoed_by_a_driver_are_masked() {
    let s = Server::start(&[(
        "leaky.yaml",
        "platforms:\n  leaky:\n    variables: [bmc_password]\n    power_on: exit 0\n    power_off: exit 0\n    restart: exit 0\n    status: |-\n      echo \"login failed with password $bmc_password\" >&2\n      exit 1\nstatic_nodes:\n  l1:\n    platform: leaky\n    bmc_password: hunter2\n",
    )]);
    let t = s.token(&[]);
    let reply = s.get("/?nodes=l1", &t);
    let results = data(&reply);
    assert_eq!(
        results[0]["attributes"]["error"],
        "login failed with password ***"
    );
    assert!(!reply.body.contains("hunter2"));
    assert!(!s.log().contains("hunter2"));
}

/// After SIGTERM the server stops accepting at once, even while a driver
/// still runs; a second signal ends the grace period early, and the driver
/// is killed and answered before the server exits.
#[test]
fn sigterm_stops_accepting_and_a_second_signal_hurries() {
    let (out, mut s, request) = hung_power_on("10m");
    let leader = driver_pid(out.path(), "leader");
    s.signal(nix::sys::signal::Signal::SIGTERM);
    let addr = s.url.strip_prefix("http://").unwrap().to_string();
    poll("the listener to close", Duration::from_secs(10), || {
        std::net::TcpStream::connect(&addr).is_err().then_some(())
    });
    assert!(
        !gone(leader),
        "the driver was killed before the grace period"
    );
    // The grace period is ten minutes: only the second signal can end it
    // within the harness's deadline.
    let status = s.terminate();
    assert!(status.success(), "{status}");
    poll("the driver to be gone", Duration::from_secs(5), || {
        gone(leader).then_some(())
    });
    let body = request.join().unwrap().expect("an answer before exit");
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["data"][0]["attributes"]["success"], false, "{body}");
}

/// SIGHUP reloads the topology the API serves; a broken change is refused
/// and the running topology stays.
#[test]
fn sighup_reloads_what_the_api_serves() {
    let s = server();
    let t = s.token(&[]);
    let count = || data(&s.get("/nodes", &t)).len();
    assert_eq!(count(), 7);
    std::fs::write(
        s.dir.path().join("topology.d/more.yaml"),
        "static_nodes:\n  extra[1-3]:\n    platform: sim\n",
    )
    .unwrap();
    s.signal(nix::sys::signal::Signal::SIGHUP);
    poll("the reload", Duration::from_secs(30), || {
        (count() == 10).then_some(())
    });
    std::fs::write(
        s.dir.path().join("topology.d/more.yaml"),
        "static_nodes:\n  extra[1-3]:\n    platform: nosuch\n",
    )
    .unwrap();
    s.signal(nix::sys::signal::Signal::SIGHUP);
    poll(
        "the refused reload to be logged",
        Duration::from_secs(30),
        || s.log().contains("reload refused").then_some(()),
    );
    assert_eq!(count(), 10);
}

/// The reference client's requests, byte for byte: brackets escaped as
/// `%5B`/`%5D`, commas raw, one of `nodes` or `groups`.
#[test]
fn the_reference_clients_requests_work() {
    let s = server();
    let t = sign(
        Algorithm::HS256,
        &s.secret,
        &json!({"admin": null, "exp": now() + 3600}),
    );
    let ids = |reply: &Reply| -> Vec<String> {
        data(reply)
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        ids(&s.get("/?nodes=n%5B01-02%5D,lit", &t)),
        ["n01", "n02", "lit"]
    );
    assert_eq!(
        ids(&s.request("PATCH", "/?groups=pair", Some(&t), &[])),
        ["n01", "n02"]
    );
}

/// 200 clients at once for a few seconds, mixing reads and actions with
/// viewer and operator tokens, one-shot batch and per-node platforms: no
/// request fails, and afterwards no driver process is left and the
/// server's descriptors are back to what they were. Prints its figures
/// (they are in docs/security.md); asserts none of them.
#[test]
fn two_hundred_clients_mixing_reads_and_actions() {
    const CLIENTS: usize = 200;
    const FOR: Duration = Duration::from_secs(8);
    let s = Server::start(&[(
        "load.yaml",
        "platforms:\n  simb:\n    driver: sim\n    batch: true\n  sim:\n    driver: sim\n\
         static_nodes:\n  b[01-64]:\n    platform: simb\n    groups: [batch]\n  p[01-16]:\n    platform: sim\n",
    )]);
    let (operator, viewer) = (
        s.token(&["--role", "operator"]),
        s.token(&["--role", "viewer"]),
    );
    let descriptors = |pid: u32| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };
    // One of each request first, so what the server opens once is open.
    for (method, query) in [
        ("GET", "/?nodes=b[01-64]"),
        ("PATCH", "/?nodes=p01"),
        ("DELETE", "/?nodes=p01"),
    ] {
        assert_eq!(s.request(method, query, Some(&operator), &[]).status, 200);
    }
    let baseline = descriptors(s.pid());
    let started = std::time::Instant::now();
    let peak = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<(usize, Vec<Duration>, Vec<String>)> = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            while started.elapsed() < FOR {
                peak.fetch_max(descriptors(s.pid()), std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (s, operator, viewer) = (&s, &operator, &viewer);
                scope.spawn(move || {
                    let (mut done, mut times, mut failures) = (0, Vec::new(), Vec::new());
                    let mut i = c;
                    while started.elapsed() < FOR || done < 3 {
                        let b = c % 8 * 8 + 1;
                        let batch = format!("b[{b:02}-{:02}]", b + 7);
                        let single = format!("p{:02}", c % 16 + 1);
                        let (method, query, token, expect) = match i % 7 {
                            0 => ("GET", "/nodes".to_string(), viewer, "\"nodes\""),
                            1 => ("GET", "/groups".to_string(), viewer, "\"batch\""),
                            2 => (
                                "GET",
                                format!("/?nodes={batch}"),
                                viewer,
                                "\"success\":true",
                            ),
                            3 => (
                                "PATCH",
                                format!("/?nodes={batch}"),
                                operator,
                                "\"success\":true",
                            ),
                            4 => (
                                "DELETE",
                                format!("/?nodes={batch}"),
                                operator,
                                "\"success\":true",
                            ),
                            5 => (
                                "PUT",
                                format!("/?nodes={single}"),
                                operator,
                                "\"success\":true",
                            ),
                            _ => (
                                "GET",
                                format!("/?nodes={single}"),
                                viewer,
                                "\"success\":true",
                            ),
                        };
                        let t = std::time::Instant::now();
                        let reply = s.request(method, &query, Some(token), &[]);
                        times.push(t.elapsed());
                        if reply.status != 200
                            || !reply.body.contains(expect)
                            || reply.body.contains("\"success\":false")
                        {
                            failures
                                .push(format!("{method} {query}: {} {}", reply.status, reply.body));
                        }
                        done += 1;
                        i += 1;
                    }
                    (done, times, failures)
                })
            })
            .collect();
        let results = clients.into_iter().map(|c| c.join().unwrap()).collect();
        watcher.join().unwrap();
        results
    });
    let elapsed = started.elapsed();
    let failures: Vec<&String> = results.iter().flat_map(|r| &r.2).collect();
    assert!(
        failures.is_empty(),
        "{} failed requests, first: {}",
        failures.len(),
        failures[0]
    );
    let mut times: Vec<Duration> = results.iter().flat_map(|r| r.1.iter().copied()).collect();
    times.sort_unstable();
    let requests = times.len();
    let at = |q: f64| times[((requests as f64 * q) as usize).min(requests - 1)];
    eprintln!(
        "load: {CLIENTS} clients, {requests} requests in {:.1} s ({:.0}/s), latency p50 {:?} p99 {:?} max {:?}; \
         descriptors {baseline} before, {} at most",
        elapsed.as_secs_f64(),
        requests as f64 / elapsed.as_secs_f64(),
        at(0.5),
        at(0.99),
        times[requests - 1],
        peak.load(std::sync::atomic::Ordering::Relaxed),
    );
    poll("no driver process left", Duration::from_secs(10), || {
        children_of(s.pid()).is_empty().then_some(())
    });
    poll(
        "the server's descriptors back to what they were",
        Duration::from_secs(15),
        || (descriptors(s.pid()) <= baseline).then_some(()),
    );
}

/// The processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat")).is_ok_and(|stat| {
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(pid)
            })
        })
        .collect()
}

/// `--log-format json`: every log line is one JSON object, and each driver
/// run is one line naming node, platform, action, outcome and duration,
/// with no secret.
#[test]
fn json_logs_have_one_line_per_driver_run() {
    let s = Server::builder()
        .file("nodes.yaml", TOPOLOGY)
        .arg("--log-format")
        .arg("json")
        .start();
    let t = s.token(&[]);
    assert_eq!(
        s.request("PATCH", "/?nodes=n01,broken", Some(&t), &[])
            .status,
        200
    );
    let runs = poll("two driver run lines", Duration::from_secs(10), || {
        let lines: Vec<Value> = s
            .log()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        let runs: Vec<Value> = lines
            .into_iter()
            .filter(|l| l["message"] == "driver run")
            .collect();
        (runs.len() == 2).then_some(runs)
    });
    let by_node = |n: &str| runs.iter().find(|r| r["node"] == n).unwrap().clone();
    let ok = by_node("n01");
    assert_eq!(
        (&ok["platform"], &ok["action"], &ok["outcome"], &ok["level"]),
        (
            &json!("sim"),
            &json!("power_on"),
            &json!("ok"),
            &json!("INFO")
        ),
        "{ok}"
    );
    assert!(
        ok["duration_ms"].is_u64() && ok["timestamp"].is_string(),
        "{ok}"
    );
    let failed = by_node("broken");
    assert_eq!(failed["outcome"], "failed", "{failed}");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("simulated failure"),
        "{failed}"
    );
    assert!(!s.log().contains("hunter2"), "a secret in the log");
    // A format it does not know is refused, naming what it takes.
    let out = std::process::Command::new(crate::support::server_bin())
        .args(["serve", "--log-format", "xml", "--bind", "127.0.0.1:0"])
        .env("POWER_SERVER_JWT_SECRET", "x".repeat(32))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "power-server: log_format: \"xml\" is not usable: expected text or json\n"
    );
}

/// `GET /metrics`: Prometheus text that a Prometheus parser reads, whose
/// counters move as requests and driver runs happen; a token is needed
/// unless the config says `metrics_public: true`.
#[test]
fn metrics_are_prometheus_text_and_move_with_the_work() {
    let s = server();
    let t = s.token(&["--role", "viewer"]);
    assert_eq!(s.get("/metrics", "").status, 403, "metrics without a token");
    let scrape = |s: &Server, token: &str| {
        let reply = s.get("/metrics", token);
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert!(
            reply
                .content_type
                .as_deref()
                .is_some_and(|c| c.starts_with("application/openmetrics-text")),
            "{:?}",
            reply.content_type
        );
        prometheus_parse::Scrape::parse(reply.body.lines().map(|l| Ok(l.to_string())))
            .unwrap_or_else(|e| panic!("not Prometheus text ({e}):\n{}", reply.body))
    };
    let value = |scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|m| m.metric == name && labels.iter().all(|(k, v)| m.labels.get(k) == Some(*v)))
            .map(|m| match &m.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => *v,
                other => panic!("{name}: {other:?}"),
            })
            .sum()
    };
    let before = scrape(&s, &t);
    assert_eq!(value(&before, "power_topology_nodes", &[]), 7.0);
    assert_eq!(value(&before, "power_last_load_success", &[]), 1.0);
    assert_eq!(value(&before, "power_runs_in_flight", &[]), 0.0);
    let status = [("route", "/"), ("method", "GET"), ("status", "200")];
    let statuses = value(&before, "power_http_requests_total", &status);

    assert_eq!(s.get("/?nodes=n[01-03]", &t).status, 200);
    assert_eq!(s.get("/?nodes=n01", "not-a-token").status, 403);
    let after = scrape(&s, &t);
    assert_eq!(
        value(&after, "power_http_requests_total", &status),
        statuses + 1.0
    );
    assert_eq!(
        value(
            &after,
            "power_http_requests_total",
            &[("route", "/"), ("status", "403")]
        ),
        value(
            &before,
            "power_http_requests_total",
            &[("route", "/"), ("status", "403")]
        ) + 1.0
    );
    let sim_status = [("platform", "sim"), ("action", "status")];
    assert_eq!(
        value(&after, "power_driver_runs_total", &sim_status)
            - value(&before, "power_driver_runs_total", &sim_status),
        3.0
    );
    assert_eq!(
        value(
            &after,
            "power_node_results_total",
            &[
                ("platform", "sim"),
                ("action", "status"),
                ("outcome", "off")
            ]
        ) - value(
            &before,
            "power_node_results_total",
            &[
                ("platform", "sim"),
                ("action", "status"),
                ("outcome", "off")
            ]
        ),
        3.0
    );
    let durations = after
        .samples
        .iter()
        .find(|m| {
            m.metric == "power_driver_duration_seconds" && m.labels.get("action") == Some("status")
        })
        .unwrap_or_else(|| panic!("no duration histogram: {:?}", after.samples));
    match &durations.value {
        prometheus_parse::Value::Histogram(buckets) => {
            assert!(buckets.iter().any(|b| b.count >= 3.0), "{buckets:?}");
        }
        other => panic!("the durations are not a histogram: {other:?}"),
    }

    // A reload that fails shows as the last load's result.
    std::fs::write(
        s.dir.path().join("topology.d/broken.yaml"),
        "static_nodes: [",
    )
    .unwrap();
    s.signal(nix::sys::signal::Signal::SIGHUP);
    let refused = poll(
        "the refused reload in the metrics",
        Duration::from_secs(10),
        || {
            let m = scrape(&s, &t);
            (value(&m, "power_last_load_success", &[]) == 0.0).then_some(m)
        },
    );
    assert!(
        value(&refused, "power_last_load_timestamp_seconds", &[])
            >= value(&before, "power_last_load_timestamp_seconds", &[])
    );

    let public = Server::builder()
        .file("nodes.yaml", TOPOLOGY)
        .env("POWER_SERVER_METRICS_PUBLIC", "true")
        .start();
    assert_eq!(public.get("/metrics", "").status, 200);
}

/// `scripts_dir` (the reference's) is where drivers run.
#[test]
fn drivers_run_in_scripts_dir() {
    let out = tempfile::tempdir().unwrap();
    let config = out.path().join("config.yaml");
    std::fs::write(&config, format!("scripts_dir: {}\n", out.path().display())).unwrap();
    let s = Server::builder()
        .file(
            "pwd.yaml",
            "platforms:\n  pwd:\n    power_on: pwd > \"$FIXTURE_OUT/pwd\"\n    power_off: exit 0\n    restart: exit 0\n    status: exit 0\nstatic_nodes:\n  w1:\n    platform: pwd\n",
        )
        .env("FIXTURE_OUT", out.path())
        .arg("--config")
        .arg(&config)
        .start();
    let reply = s.request("PATCH", "/?nodes=w1", Some(&s.token(&[])), &[]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        std::fs::read_to_string(out.path().join("pwd"))
            .unwrap()
            .trim(),
        out.path().display().to_string()
    );
    assert!(
        s.log().contains("scripts_dir: drivers run in"),
        "{}",
        s.log()
    );
}

/// `all=true` selects every node the token covers and comes alone;
/// `dry_run=true` (or `dry-run`) answers `plans` without a value and runs
/// nothing, asked with the action's method or as a GET naming it; bad
/// yes-or-no values and a misplaced `action` are 400s, after the token.
#[test]
fn all_and_dry_run_parameters() {
    let s = server();
    let operator = s.token(&["--role", "operator"]);
    let names = |reply: &Reply| -> Vec<String> {
        data(reply)
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    let every = s.get("/?all=true", &operator);
    assert_eq!(
        names(&every),
        ["n01", "n02", "n03", "n04", "lit", "slow", "broken"]
    );
    let limited = s.token(&["--nodes", "n0[3-4]"]);
    assert_eq!(names(&s.get("/?all=1", &limited)), ["n03", "n04"]);
    assert_eq!(
        names(&s.get("/?all=false", &operator)),
        Vec::<String>::new()
    );
    for (query, detail) in [
        (
            "/?all=true&nodes=n01",
            "all=true selects every node: give it without nodes or groups",
        ),
        (
            "/?all=yes",
            "bad all parameter: \"yes\": expected true or false",
        ),
        (
            "/?nodes=n01&dry-run=",
            "bad dry_run parameter: \"\": expected true or false",
        ),
        (
            "/?nodes=n01&action=power_off",
            "the action parameter is taken only by a dry run asked with GET \
             (GET /?dry_run=true&action=power_off): otherwise the method says the action",
        ),
        (
            "/?nodes=n01&dry_run=true&action=reboot",
            "bad action parameter: unknown action \"reboot\" (expected power_on, power_off, \
             restart, status or shutdown)",
        ),
    ] {
        assert_eq!(refused(&s.get(query, &operator), 400), detail, "{query}");
        let anonymous = s.request("GET", query, None, &[]);
        refused(&anonymous, 403);
    }
    let plans = |method: &str, query: &str| {
        let reply = s.request(method, query, Some(&operator), &[]);
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.content_type.as_deref(), Some("application/json"));
        reply.json()["data"].clone()
    };
    let by_method = plans("DELETE", "/?nodes=n01,ghost&dry_run=true");
    let by_get = plans("GET", "/?nodes=n01,ghost&dry-run=true&action=power_off");
    assert_eq!(by_method, by_get);
    assert_eq!(
        by_method[0],
        json!({"type": "plans", "id": "n01", "attributes": {
            "action": "power_off", "node-name": "n01", "platform": "sim", "missing": false,
            "driver": "sim", "batch": false, "variables": [], "secret-variables": [],
            "unset-variables": ["sim_initial", "sim_delay", "sim_fail"], "would-run": true}})
    );
    assert_eq!(by_method[1]["attributes"]["missing"], true);
    assert_eq!(
        by_method[1]["attributes"]["error"],
        "node ghost is not in the topology"
    );
    assert!(!by_method.to_string().contains("hunter2"));
    assert_eq!(s.sim_states(), [], "a dry run runs nothing");
    let viewer = s.token(&["--role", "viewer"]);
    let reply = s.request(
        "GET",
        "/?all=true&dry_run=true&action=restart",
        Some(&viewer),
        &[],
    );
    assert_eq!(
        refused(&reply, 403),
        "the token's role is viewer: restart needs an operator token"
    );
}

/// `wait` asks the server to confirm: the answer comes once each node is
/// seen in the action's target state (`confirmed`, with the state), or is
/// refused with a 400 when it is not a duration up to an hour.
#[test]
fn wait_confirms_actions() {
    let s = server();
    let operator = s.token(&["--role", "operator"]);
    let reply = s.request("PATCH", "/?nodes=n01,broken&wait=30s", Some(&operator), &[]);
    assert_eq!(
        data(&reply),
        [
            json!({"type": "commands", "id": "n01", "attributes": {
                "action": "power_on", "node-name": "n01", "platform": "sim",
                "missing": false, "success": true, "state": "on", "confirmed": true,
                "exit-code": 0}}),
            json!({"type": "commands", "id": "broken", "attributes": {
                "action": "power_on", "node-name": "broken", "platform": "sim",
                "missing": false, "success": false,
                "error": "sim: simulated failure of power_on on broken",
                "error-class": "failed", "exit-code": 1}}),
        ]
    );
    // Without wait, as before: no confirmed, no state.
    let reply = s.request("DELETE", "/?nodes=n01", Some(&operator), &[]);
    assert_eq!(data(&reply)[0]["attributes"].get("confirmed"), None);
    for (query, detail) in [
        (
            "/?nodes=n01&wait=soon",
            "bad wait parameter: \"soon\": expected a duration such as 90s or 2m, or 0 for none",
        ),
        (
            "/?nodes=n01&wait=2h",
            "bad wait parameter: \"2h\": at most 1h",
        ),
    ] {
        let reply = s.request("PATCH", query, Some(&operator), &[]);
        assert_eq!(refused(&reply, 400), detail, "{query}");
    }
    assert_eq!(
        s.sim_state("n01").as_deref(),
        Some("off"),
        "a refused wait runs nothing"
    );
}

/// With the server's `power_on_rate`, `turns=true` streams the nodes of a
/// staged power-on that wait their turn first, soonest first, then every
/// result; without it, results only.
#[test]
fn a_staged_power_on_says_who_waits() {
    let s = Server::builder()
        .file(
            "nodes.yaml",
            "platforms:\n  sim:\n    driver: sim\nstatic_nodes:\n  m1: {platform: sim}\n  \
             m2: {platform: sim}\n  m3: {platform: sim}\n",
        )
        .env("POWER_SERVER_POWER_ON_RATE", "5/s")
        .start();
    let operator = s.token(&["--role", "operator"]);
    let ndjson = [("Accept", "application/x-ndjson")];
    let reply = s.request(
        "PATCH",
        "/?nodes=m1,m2,m3&turns=true",
        Some(&operator),
        &ndjson,
    );
    let lines: Vec<Value> = reply
        .body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["turns", "turns", "commands", "commands", "commands"]
    );
    assert_eq!(
        (&lines[0]["id"], &lines[1]["id"]),
        (&json!("m2"), &json!("m3"))
    );
    let waits: Vec<u64> = lines[..2]
        .iter()
        .map(|l| l["attributes"]["starts-in-ms"].as_u64().unwrap())
        .collect();
    assert!(
        (100..=200).contains(&waits[0]) && (300..=400).contains(&waits[1]),
        "one 200 ms interval apart: {waits:?}"
    );
    assert_eq!(lines[0]["attributes"]["action"], "power_on");
    assert!(lines[2..]
        .iter()
        .all(|l| l["attributes"]["success"] == true));
    let reply = s.request("PATCH", "/?nodes=m1,m2,m3", Some(&operator), &ndjson);
    assert!(!reply.body.contains("\"turns\""), "{}", reply.body);
}
