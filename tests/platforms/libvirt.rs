//! The `libvirt` platform (drivers/libvirt, topology.d/10-libvirt.yaml)
//! against a private libvirtd's test driver, through the real server and
//! the real `power` client. State changes are checked with virsh, on a
//! connection of its own.

use super::{all_fail_within, assert_error_has, q, results, start_with_operator};
use crate::support::libvirtd::Libvirtd;
use crate::support::Server;
use std::time::Duration;

/// A server with the shipped libvirt fragment and `nodes`.
fn server(nodes: &str) -> (Server, String) {
    start_with_operator::<&str, &str>("10-libvirt.yaml", &[], nodes, [])
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

    let (code, r, _) = results(&server, &token, &["status", "test", "vm1", "alias"]);
    assert_eq!(code, 0, "a known state is a success: {r:?}");
    assert_eq!(r["test"]["state"], "on", "{r:?}");
    assert_eq!(r["vm1"]["state"], "off", "{r:?}");
    assert_eq!(r["alias"]["state"], "off", "{r:?}");
    assert!(r.values().all(|n| n["success"] == true), "{r:?}");

    // on: the shut-off domains start; the running one stays up.
    let (code, r, _) = results(&server, &token, &["on", "test", "vm1", "alias"]);
    assert_eq!(code, 0, "{r:?}");
    assert_eq!(lv.domstate("test"), "running");
    assert_eq!(lv.domstate("vm1"), "running");
    assert_eq!(lv.domstate("guest-b"), "running");
    let (_, r, _) = results(&server, &token, &["status", "vm1", "alias"]);
    assert!(r.values().all(|n| n["state"] == "on"), "{r:?}");

    // off: destroyed; an off of a domain already off succeeds.
    let (code, r, _) = results(&server, &token, &["off", "test", "alias"]);
    assert_eq!(code, 0, "{r:?}");
    assert_eq!(lv.domstate("test"), "shut off");
    assert_eq!(lv.domstate("guest-b"), "shut off");
    let (code, r, _) = results(&server, &token, &["off", "alias"]);
    assert_eq!(code, 0, "{r:?}");
    let (_, r, _) = results(&server, &token, &["status", "test", "vm1", "alias"]);
    assert_eq!(r["test"]["state"], "off", "{r:?}");
    assert_eq!(r["vm1"]["state"], "on", "{r:?}");
    assert_eq!(r["alias"]["state"], "off", "{r:?}");

    // restart: a running domain is reset and stays running (the test
    // driver's reset leaves no other trace); a shut-off one is started.
    let (code, r, _) = results(&server, &token, &["restart", "vm1", "test"]);
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
    let (code, r, _) = results(&server, &token, &["restart", "test"]);
    assert_eq!(code, 0, "{r:?}");
    assert_eq!(lv.domstate("test"), "running");
    let (code, r, _) = results(&server, &token, &["off", "test"]);
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
        let (r, _) = all_fail_within(
            &server,
            &token,
            &[action, "ghost", "dead", "silent"],
            Duration::from_secs(30),
        );
        assert_error_has(&r, "ghost", action, &["no domain 'ghost'"]);
        assert_error_has(
            &r,
            "dead",
            action,
            &["cannot connect to", "endpoint unreachable"],
        );
        assert_error_has(&r, "silent", action, &["timed out after 2s"]);
    }
    // Nothing the failures did touched the real domain.
    assert_eq!(lv.domstate("test"), "running");
}
