//! Every shipped platform against a real management endpoint, through the
//! real server and the real client. The endpoints are started on loopback
//! by the tests themselves (`tests/support/`); `scripts/install-test-deps`
//! installs them. A missing endpoint fails its test: none is skipped.
//!
//! The helpers here are what the platform tests share: a server with a
//! shipped fragment and a nodes fragment, and `power --json` read back as
//! each node's result.

mod aws;
mod azure;
mod fence;
mod ipmi;
mod ipmipower;
mod libvirt;
mod redfish;

use crate::support::{self, Server};
use serde_json::Value;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

/// The shipped fragment `topology.d/NAME`, as a vendor installs it.
pub fn shipped(name: &str) -> String {
    std::fs::read_to_string(support::checkout().join("topology.d").join(name))
        .unwrap_or_else(|e| panic!("read topology.d/{name}: {e}"))
}

/// A YAML string (JSON's quoting is YAML's).
pub fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// A node `name` on `platform` with these variables, as YAML under
/// `static_nodes` (indented by two).
pub fn node_entry(name: &str, platform: &str, vars: &[(&str, &str)]) -> String {
    let mut s = format!("  {name}:\n    platform: {platform}\n");
    for (k, v) in vars {
        s.push_str(&format!("    {k}: {}\n", q(v)));
    }
    s
}

/// The variables reaching a BMC at `addr` as `user`, with `password` (no
/// `ipmi_password` at all when `None`): the `ipmi` and `ipmipower`
/// platforms name them alike.
pub fn bmc_vars<'a>(
    addr: &'a str,
    user: &'a str,
    password: Option<&'a str>,
) -> Vec<(&'a str, &'a str)> {
    let mut vars = vec![("ipmi_host", addr), ("ipmi_username", user)];
    if let Some(password) = password {
        vars.push(("ipmi_password", password));
    }
    vars
}

/// A nodes fragment: these node entries (YAML, indented by two) under
/// `static_nodes:`.
pub fn static_nodes(nodes: &[String]) -> String {
    format!("static_nodes:\n{}", nodes.concat())
}

/// Start a server with the shipped fragment `fragment` (a file name in
/// `topology.d/`, loaded under the same name), the `extra` fragments,
/// `nodes` as `50-nodes.yaml`, and `env` in its environment.
pub fn start_server<K: Into<OsString>, V: Into<OsString>>(
    fragment: &str,
    extra: &[(&str, &str)],
    nodes: &str,
    env: impl IntoIterator<Item = (K, V)>,
) -> Server {
    let mut builder = Server::builder()
        .file(fragment, &shipped(fragment))
        .files(extra)
        .file("50-nodes.yaml", nodes);
    for (k, v) in env {
        builder = builder.env(k, v);
    }
    builder.start()
}

/// [`start_server`], and an operator token for it.
pub fn start_with_operator<K: Into<OsString>, V: Into<OsString>>(
    fragment: &str,
    extra: &[(&str, &str)],
    nodes: &str,
    env: impl IntoIterator<Item = (K, V)>,
) -> (Server, String) {
    let server = start_server(fragment, extra, nodes, env);
    let token = server.token(&["--role", "operator"]);
    (server, token)
}

/// Run the real `power --json ARGS...`: its exit status, its stdout parsed
/// (a failure naming the output and the server's log if it is not JSON),
/// and its whole output (stdout and stderr).
fn power_json(server: &Server, token: &str, args: &[&str]) -> (ExitStatus, Value, String) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (status, stdout, stderr) = support::power(server, token, &all);
    let json: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "power {args:?}: not JSON ({e}): {stdout}\nstderr: {stderr}\nserver log:\n{}",
            server.log()
        )
    });
    (status, json, format!("{stdout}{stderr}"))
}

/// The `nodes` array of `power --json` output.
fn nodes(json: &Value) -> &Vec<Value> {
    json["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("no nodes in {json}"))
}

/// `power --json ARGS...`: the exit code, each node's result by name, and
/// the whole output (stdout and stderr).
pub fn results(
    server: &Server,
    token: &str,
    args: &[&str],
) -> (i32, BTreeMap<String, Value>, String) {
    let (status, json, all) = power_json(server, token, args);
    let nodes = nodes(&json)
        .iter()
        .map(|n| (n["name"].as_str().unwrap().to_string(), n.clone()))
        .collect();
    (status.code().unwrap_or(-1), nodes, all)
}

/// Run `power --json ARGS...` (an action, then nodes) where every node
/// must fail fast: the run takes less than `within`, exits 1, and no node
/// succeeds. Each node's result by name, and the whole output.
pub fn all_fail_within(
    server: &Server,
    token: &str,
    args: &[&str],
    within: Duration,
) -> (BTreeMap<String, Value>, String) {
    let action = args[0];
    let start = Instant::now();
    let (code, r, all) = results(server, token, args);
    assert!(
        start.elapsed() < within,
        "{action} took {:?}",
        start.elapsed()
    );
    assert_eq!(code, 1, "{action}: {r:?}");
    assert!(r.values().all(|n| n["success"] == false), "{action}: {r:?}");
    (r, all)
}

/// Assert that the `error` of `node` in [`results`] holds each of
/// `parts`; a failure names `action` and the error.
pub fn assert_error_has(r: &BTreeMap<String, Value>, node: &str, action: &str, parts: &[&str]) {
    let error = error(r, node);
    assert!(
        parts.iter().all(|part| error.contains(part)),
        "{action}: {error}"
    );
}

/// Write an executable `script` as `bin/NAME` (a wrapper around a real
/// program, say); the `PATH` for a server that finds `bin` first.
pub fn first_on_path(bin: &Path, name: &str, script: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let wrapper = bin.join(name);
    std::fs::write(&wrapper, script).unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// The `error` of `node` in [`results`] (empty if it has none).
pub fn error(r: &BTreeMap<String, Value>, node: &str) -> String {
    r[node]["error"].as_str().unwrap_or_default().to_string()
}

/// Poll `power status NODE` until it says `state`, failing after
/// `deadline`.
pub fn wait_status(server: &Server, token: &str, node: &str, state: &str, deadline: Duration) {
    support::poll(
        &format!("power status {node} to say {state}"),
        deadline,
        || {
            let (_, r, _) = results(server, token, &["status", node]);
            (r[node]["state"] == state).then_some(())
        },
    );
}

/// One node's result as the client reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The node's name.
    pub name: String,
    /// Whether the action succeeded.
    pub success: bool,
    /// The state a status found (`on`, `off`, `unknown`).
    pub state: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
}

impl Row {
    /// A success, with the state a status found.
    pub fn ok(name: &str, state: Option<&str>) -> Row {
        Row {
            name: name.into(),
            success: true,
            state: state.map(str::to_string),
            error: None,
        }
    }

    /// A failure saying `error`.
    pub fn failed(name: &str, state: Option<&str>, error: &str) -> Row {
        Row {
            name: name.into(),
            success: false,
            state: state.map(str::to_string),
            error: Some(error.into()),
        }
    }
}

/// Run `power --json ARGS...`; the exit status and each node's result, in
/// the client's order.
pub fn power_rows(server: &Server, token: &str, args: &[&str]) -> (ExitStatus, Vec<Row>) {
    let (status, json, _) = power_json(server, token, args);
    let rows = nodes(&json)
        .iter()
        .map(|n| Row {
            name: n["name"].as_str().unwrap_or_default().to_string(),
            success: n["success"].as_bool().unwrap_or(false),
            state: n["state"].as_str().map(str::to_string),
            error: n["error"].as_str().map(str::to_string),
        })
        .collect();
    (status, rows)
}

/// The API's result attributes, by node, for `method` (`GET` status,
/// `PATCH` on, `DELETE` off, `PUT` restart) on the hostlist `nodes`: what
/// carries `error-class`, which the client's `--json` does not.
pub fn api_results(
    server: &Server,
    token: &str,
    method: &str,
    nodes: &str,
) -> BTreeMap<String, Value> {
    results_at(server, token, method, &format!("/?nodes={nodes}"))
}

/// Each node's result attributes by name, from `method path`.
fn results_at(server: &Server, token: &str, method: &str, path: &str) -> BTreeMap<String, Value> {
    let reply = server.request(method, path, Some(token), &[]);
    assert_eq!(reply.status, 200, "{method} {path}: {}", reply.body);
    reply.json()["data"]
        .as_array()
        .unwrap_or_else(|| panic!("{method} {path}: no data in {}", reply.body))
        .iter()
        .map(|d| {
            let a = d["attributes"].clone();
            (a["node-name"].as_str().unwrap_or_default().to_string(), a)
        })
        .collect()
}

/// A graceful off through the API, `DELETE /?nodes=NODES&graceful=true
/// &grace=GRACE`: each node's result attributes by name (`fallback` says
/// whether it was switched off hard).
pub fn graceful_off(
    server: &Server,
    token: &str,
    nodes: &str,
    grace: &str,
) -> BTreeMap<String, Value> {
    let path = format!("/?nodes={nodes}&graceful=true&grace={grace}");
    results_at(server, token, "DELETE", &path)
}

/// Assert that a graceful off of `node` in [`graceful_off`] succeeded as
/// a power off, `fallback` as given: false when the node shut down and was
/// seen off, true when it was switched off hard.
pub fn assert_graceful(r: &BTreeMap<String, Value>, node: &str, fallback: bool) {
    let a = &r[node];
    assert_eq!(a["success"], true, "{node}: {a}");
    assert_eq!(a["action"], "power_off", "{node}: {a}");
    assert_eq!(a["fallback"], fallback, "{node}: {a}");
}

/// The actions the server ran drivers for on `node`, in order, from its
/// log's `driver run` lines (per-node platforms only: a batch run's lines
/// name no node).
pub fn driver_actions(server: &Server, node: &str) -> Vec<String> {
    let node_field = format!("node={node} ");
    server
        .log()
        .lines()
        .filter(|l| l.contains("driver run") && l.contains(&node_field))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("action="))
                .map(str::to_string)
        })
        .collect()
}

/// Assert that `node` failed in [`api_results`] with `class` as its
/// `error-class`, and an `error` holding each of `parts`.
pub fn assert_class(r: &BTreeMap<String, Value>, node: &str, class: &str, parts: &[&str]) {
    let a = &r[node];
    assert_eq!(a["success"], false, "{node}: {a}");
    assert_eq!(a["error-class"], class, "{node}: {a}");
    let error = a["error"].as_str().unwrap_or_default();
    assert!(
        parts.iter().all(|part| error.contains(part)),
        "{node}: error {error:?} should hold {parts:?}"
    );
}

/// A wrapper `bin/TOOL` that appends a line to `bin/TOOL.calls` on every
/// call, then runs the real `tool` found on `PATH`: the `PATH` for a
/// server that finds it first, and the calls file, to count how often a
/// driver ran the tool (a class the server never retries runs it once).
pub fn counting_wrapper(bin: &Path, tool: &str) -> (String, std::path::PathBuf) {
    let real = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{tool} is not on PATH: run scripts/install-test-deps"));
    let calls = bin.join(format!("{tool}.calls"));
    let script = format!(
        "#!/bin/sh\necho call >> '{}'\nexec '{}' \"$@\"\n",
        calls.display(),
        real.display()
    );
    (first_on_path(bin, tool, &script), calls)
}

/// How many lines [`counting_wrapper`]'s calls file has.
pub fn calls(file: &Path) -> usize {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .count()
}
