//! The `libvirt` platform (drivers/libvirt, topology.d/10-libvirt.yaml)
//! against a private libvirtd's test driver, through the real server and
//! the real `power` client. State changes are checked with virsh, on a
//! connection of its own.

use crate::support::libvirtd::Libvirtd;
use crate::support::{checkout, power, Server};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The shipped fragment, as the server loads it.
fn shipped() -> String {
    std::fs::read_to_string(checkout().join("topology.d/10-libvirt.yaml"))
        .expect("topology.d/10-libvirt.yaml")
}

/// A YAML string (JSON's quoting is YAML's).
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// A server with the shipped libvirt fragment and `nodes`.
fn server(nodes: &str) -> (Server, String) {
    let server = Server::start(&[("10-libvirt.yaml", &shipped()), ("50-nodes.yaml", nodes)]);
    let token = server.token(&["--role", "operator"]);
    (server, token)
}

/// `power --json ARGS...`: each node's result by name, and the exit code.
fn results(
    server: &Server,
    token: &str,
    args: &[&str],
) -> (i32, BTreeMap<String, serde_json::Value>) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (status, out, err) = power(server, token, &all);
    let json: serde_json::Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("power {args:?}: not JSON ({e}): {out}\nstderr: {err}"));
    let nodes = json["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("no nodes in {out}"))
        .iter()
        .map(|n| (n["name"].as_str().unwrap().to_string(), n.clone()))
        .collect();
    (status.code().unwrap_or(-1), nodes)
}

/// Status, on, off and restart through `power`, each seen by virsh: the
/// test driver's own `test` domain (running), a domain the test defines
/// (shut off), and a node whose domain is named by `libvirt_domain`.
#[test]
fn libvirt_status_on_off_restart_through_power() {
    let lv = Libvirtd::start();
    lv.define("vm1");
    lv.define("guest-b");
    let uri = q(&lv.uri);
    let (server, token) = server(&format!(
        "static_nodes:\n\
         \x20 test:\n    platform: libvirt\n    libvirt_uri: {uri}\n\
         \x20 vm1:\n    platform: libvirt\n    libvirt_uri: {uri}\n\
         \x20 alias:\n    platform: libvirt\n    libvirt_uri: {uri}\n    libvirt_domain: guest-b\n"
    ));

    let (code, r) = results(&server, &token, &["status", "test", "vm1", "alias"]);
    assert_eq!(code, 0, "a known state is a success: {r:?}");
    assert_eq!(r["test"]["state"], "on", "{r:?}");
    assert_eq!(r["vm1"]["state"], "off", "{r:?}");
    assert_eq!(r["alias"]["state"], "off", "{r:?}");
    assert!(r.values().all(|n| n["success"] == true), "{r:?}");

    // on: the shut-off domains start; the running one stays up.
    let (code, r) = results(&server, &token, &["on", "test", "vm1", "alias"]);
    assert_eq!(code, 0, "{r:?}");
    assert_eq!(lv.domstate("test"), "running");
    assert_eq!(lv.domstate("vm1"), "running");
    assert_eq!(lv.domstate("guest-b"), "running");
    let (_, r) = results(&server, &token, &["status", "vm1", "alias"]);
    assert!(r.values().all(|n| n["state"] == "on"), "{r:?}");

    // off: destroyed; an off of a domain already off succeeds.
    let (code, r) = results(&server, &token, &["off", "test", "alias"]);
    assert_eq!(code, 0, "{r:?}");
    assert_eq!(lv.domstate("test"), "shut off");
    assert_eq!(lv.domstate("guest-b"), "shut off");
    let (code, r) = results(&server, &token, &["off", "alias"]);
    assert_eq!(code, 0, "{r:?}");
    let (_, r) = results(&server, &token, &["status", "test", "vm1", "alias"]);
    assert_eq!(r["test"]["state"], "off", "{r:?}");
    assert_eq!(r["vm1"]["state"], "on", "{r:?}");
    assert_eq!(r["alias"]["state"], "off", "{r:?}");

    // restart: a running domain is reset and stays running (the test
    // driver's reset leaves no other trace); a shut-off one is started.
    let (code, r) = results(&server, &token, &["restart", "vm1", "test"]);
    assert_eq!(code, 0, "{r:?}");
    assert_eq!(lv.domstate("vm1"), "running");
    assert_eq!(lv.domstate("test"), "running");
    assert!(
        lv.events().contains("'test': Started"),
        "the daemon saw no start of test: {}",
        lv.events()
    );
}

/// `libvirt_power_off: shutdown` and `libvirt_restart: reboot` ask the
/// guest instead (the test driver's guest obeys at once).
#[test]
fn libvirt_graceful_variants() {
    let lv = Libvirtd::start();
    let (server, token) = server(&format!(
        "static_nodes:\n\
         \x20 test:\n    platform: libvirt\n    libvirt_uri: {}\n\
         \x20   libvirt_power_off: shutdown\n    libvirt_restart: reboot\n",
        q(&lv.uri)
    ));
    let (code, r) = results(&server, &token, &["restart", "test"]);
    assert_eq!(code, 0, "{r:?}");
    assert_eq!(lv.domstate("test"), "running");
    let (code, r) = results(&server, &token, &["off", "test"]);
    assert_eq!(code, 0, "{r:?}");
    assert_eq!(lv.domstate("test"), "shut off");
    assert!(
        lv.events().contains("Stopped Shutdown"),
        "the daemon saw no shutdown: {}",
        lv.events()
    );
}

/// An unknown domain, a socket nobody listens on, and one that never
/// answers: each a failed result saying so, none a success, none a hang.
#[test]
fn libvirt_unknown_domain_and_dead_endpoints_fail_clearly() {
    let lv = Libvirtd::start();
    let dead = lv.dir().join("sock/no-such-socket");
    // Bound but never accepted: a connect succeeds, no answer ever comes.
    let silent_path = lv.dir().join("silent-sock");
    let _silent = std::os::unix::net::UnixListener::bind(&silent_path).unwrap();
    let (server, token) = server(&format!(
        "static_nodes:\n\
         \x20 ghost:\n    platform: libvirt\n    libvirt_uri: {}\n\
         \x20 dead:\n    platform: libvirt\n    libvirt_uri: {}\n    libvirt_domain: test\n\
         \x20 silent:\n    platform: libvirt\n    libvirt_uri: {}\n    libvirt_domain: test\n\
         \x20   libvirt_timeout: \"2\"\n",
        q(&lv.uri),
        q(&format!("test+unix:///default?socket={}", dead.display())),
        q(&format!(
            "test+unix:///default?socket={}",
            silent_path.display()
        )),
    ));
    for action in ["status", "on", "off", "restart"] {
        let start = Instant::now();
        let (code, r) = results(&server, &token, &[action, "ghost", "dead", "silent"]);
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{action} took {:?}",
            start.elapsed()
        );
        assert_eq!(code, 1, "{action}: {r:?}");
        assert!(r.values().all(|n| n["success"] == false), "{action}: {r:?}");
        let error = |n: &str| r[n]["error"].as_str().unwrap_or_default().to_string();
        assert!(
            error("ghost").contains("no domain 'ghost'"),
            "{action}: {}",
            error("ghost")
        );
        assert!(
            error("dead").contains("cannot connect to")
                && error("dead").contains("endpoint unreachable"),
            "{action}: {}",
            error("dead")
        );
        assert!(
            error("silent").contains("timed out after 2s"),
            "{action}: {}",
            error("silent")
        );
    }
    // Nothing the failures did touched the real domain.
    assert_eq!(lv.domstate("test"), "running");
}
