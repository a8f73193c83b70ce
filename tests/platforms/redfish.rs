//! The `redfish` platform (drivers/redfish, topology.d/10-redfish.yaml)
//! against sushy-tools' Redfish emulator with basic auth, through the real
//! server and the real `power` client. The emulator applies a reset after
//! a random 1 to 11 s delay, so state changes are polled with a deadline.

use crate::support::daemon::free_port;
use crate::support::sushy::{Sushy, REDFISH_DEADLINE};
use crate::support::{checkout, poll, power, Server};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The shipped fragment, as the server loads it.
fn shipped() -> String {
    std::fs::read_to_string(checkout().join("topology.d/10-redfish.yaml"))
        .expect("topology.d/10-redfish.yaml")
}

/// A YAML string (JSON's quoting is YAML's).
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// A server with the shipped redfish fragment, `nodes`, and `env`.
fn server(nodes: &str, env: &[(&str, &str)]) -> (Server, String) {
    let mut builder = Server::builder()
        .file("10-redfish.yaml", &shipped())
        .file("50-nodes.yaml", nodes);
    for (k, v) in env {
        builder = builder.env(k, v);
    }
    let server = builder.start();
    let token = server.token(&["--role", "operator"]);
    (server, token)
}

/// `power --json ARGS...`: the exit code, each node's result by name, and
/// the whole output (stdout and stderr).
fn results(
    server: &Server,
    token: &str,
    args: &[&str],
) -> (i32, BTreeMap<String, serde_json::Value>, String) {
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
    (status.code().unwrap_or(-1), nodes, format!("{out}{err}"))
}

/// Poll `power status NODE` until it says `state`.
fn wait_status(server: &Server, token: &str, node: &str, state: &str) {
    poll(
        &format!("power status {node} to say {state}"),
        REDFISH_DEADLINE,
        || {
            let (_, r, _) = results(server, token, &["status", node]);
            (r[node]["state"] == state).then_some(())
        },
    );
}

/// Status, on, off and restart through `power`, each seen in the emulator:
/// one node names its system by id with its password as a node variable;
/// the other is found by its name among several systems, with the password
/// from the server's environment (REDFISH_PASSWORD).
#[test]
fn redfish_status_on_off_restart_through_power() {
    let sushy = Sushy::start(&["rf1", "rf2", "rf3"]);
    let (rf1, rf2) = (&sushy.systems[0].uuid, &sushy.systems[1].uuid);
    let (server, token) = server(
        &format!(
            "static_nodes:\n\
             \x20 rf1:\n    platform: redfish\n    redfish_host: {url}\n\
             \x20   redfish_system: {rf1}\n    redfish_user: admin\n\
             \x20   redfish_password: {password}\n\
             \x20 rf2:\n    platform: redfish\n    redfish_host: {host}\n\
             \x20   redfish_user: admin\n",
            url = q(&sushy.url),
            host = q(&format!("http://{}", sushy.host)),
            password = q(&sushy.password),
        ),
        &[("REDFISH_PASSWORD", &sushy.password)],
    );

    let (code, r, _) = results(&server, &token, &["status", "rf1", "rf2"]);
    assert_eq!(code, 0, "{r:?}");
    assert!(r.values().all(|n| n["state"] == "off"), "{r:?}");

    let (code, r, _) = results(&server, &token, &["on", "rf1", "rf2"]);
    assert_eq!(code, 0, "{r:?}");
    sushy.wait_power_state(rf1, "On", REDFISH_DEADLINE);
    sushy.wait_power_state(rf2, "On", REDFISH_DEADLINE);
    assert_eq!(sushy.power_state(&sushy.systems[2].uuid), "Off");
    wait_status(&server, &token, "rf2", "on");

    let (code, r, _) = results(&server, &token, &["off", "rf1"]);
    assert_eq!(code, 0, "{r:?}");
    sushy.wait_power_state(rf1, "Off", REDFISH_DEADLINE);
    wait_status(&server, &token, "rf1", "off");
    assert_eq!(sushy.power_state(rf2), "On");

    // The emulator's restart turns a system off at once and on after its
    // delay: from off, a restart shows as the system coming on.
    let before = reset_posts(&sushy, rf1);
    let (code, r, _) = results(&server, &token, &["restart", "rf1"]);
    assert_eq!(code, 0, "{r:?}");
    assert_eq!(reset_posts(&sushy, rf1), before + 1, "{}", sushy.log());
    sushy.wait_power_state(rf1, "On", REDFISH_DEADLINE);
    wait_status(&server, &token, "rf1", "on");

    // Nothing printed or logged holds the password.
    let (_, _, all) = results(&server, &token, &["status", "rf1", "rf2"]);
    assert!(!all.contains(&sushy.password), "{all}");
    assert!(!server.log().contains(&sushy.password), "{}", server.log());
}

/// How many resets of `uuid` the emulator has answered (its request log).
fn reset_posts(sushy: &Sushy, uuid: &str) -> usize {
    let needle = format!("\"POST /redfish/v1/Systems/{uuid}/Actions/ComputerSystem.Reset");
    sushy.log().matches(&needle).count()
}

/// The ResetType variables reach the BMC: GracefulShutdown powers off (in
/// the emulator), and a type the BMC refuses fails with its own message.
#[test]
fn redfish_reset_type_variables() {
    let sushy = Sushy::start_with(&[("g1", "On")]);
    let uuid = &sushy.systems[0].uuid;
    let nodes = |restart: &str| {
        format!(
            "static_nodes:\n\
             \x20 g1:\n    platform: redfish\n    redfish_host: {}\n\
             \x20   redfish_system: {uuid}\n    redfish_user: admin\n\
             \x20   redfish_power_off: GracefulShutdown\n    redfish_restart: {restart}\n",
            q(&sushy.url)
        )
    };
    let (server, token) = server(&nodes("Bogus"), &[("REDFISH_PASSWORD", &sushy.password)]);
    let (code, r, _) = results(&server, &token, &["restart", "g1"]);
    assert_eq!(code, 1, "{r:?}");
    let error = r["g1"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("HTTP 501") && error.contains("Power state Bogus is not supported"),
        "{error}"
    );
    let (code, r, _) = results(&server, &token, &["off", "g1"]);
    assert_eq!(code, 0, "{r:?}");
    sushy.wait_power_state(uuid, "Off", REDFISH_DEADLINE);
}

/// A wrong password: every action fails, saying authentication was
/// refused, and neither password shows anywhere.
#[test]
fn redfish_wrong_password_is_refused() {
    let sushy = Sushy::start_with(&[("bad1", "On")]);
    let wrong = "not-the-password-4711";
    let (server, token) = server(
        &format!(
            "static_nodes:\n\
             \x20 bad1:\n    platform: redfish\n    redfish_host: {}\n\
             \x20   redfish_system: {}\n    redfish_user: admin\n\
             \x20   redfish_password: {wrong}\n",
            q(&sushy.url),
            sushy.systems[0].uuid
        ),
        &[],
    );
    for action in ["status", "on", "off", "restart"] {
        let (code, r, all) = results(&server, &token, &[action, "bad1"]);
        assert_eq!(code, 1, "{action}: {r:?}");
        assert_eq!(r["bad1"]["success"], false, "{action}: {r:?}");
        let error = r["bad1"]["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("authentication refused by") && error.contains(&sushy.url),
            "{action}: {error}"
        );
        assert!(
            !all.contains(wrong) && !all.contains(&sushy.password),
            "{all}"
        );
    }
    assert!(!server.log().contains(wrong), "{}", server.log());
    // Nothing was done.
    assert_eq!(sushy.power_state(&sushy.systems[0].uuid), "On");
}

/// A port nobody listens on is unreachable; one that accepts and never
/// answers times out: both fail, never succeed, never hang.
#[test]
fn redfish_dead_endpoints_fail_clearly() {
    let dead = free_port();
    // Bound and listening but never accepted: the connection is made, the
    // answer never comes.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let (server, token) = server(
        &format!(
            "static_nodes:\n\
             \x20 dead:\n    platform: redfish\n    redfish_host: \"http://127.0.0.1:{dead}\"\n\
             \x20   redfish_system: \"1\"\n    redfish_user: admin\n\
             \x20 silent:\n    platform: redfish\n    redfish_host: \"http://127.0.0.1:{silent_port}\"\n\
             \x20   redfish_system: \"1\"\n    redfish_user: admin\n    redfish_timeout: \"2\"\n"
        ),
        &[("REDFISH_PASSWORD", "unused-secret")],
    );
    for action in ["status", "on", "off", "restart"] {
        let start = Instant::now();
        let (code, r, _) = results(&server, &token, &[action, "dead", "silent"]);
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{action} took {:?}",
            start.elapsed()
        );
        assert_eq!(code, 1, "{action}: {r:?}");
        assert!(r.values().all(|n| n["success"] == false), "{action}: {r:?}");
        let error = |n: &str| r[n]["error"].as_str().unwrap_or_default().to_string();
        assert!(
            error("dead").contains(&format!("cannot reach http://127.0.0.1:{dead}"))
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
    drop(silent);
}

/// The password never reaches a command line: the driver runs under a
/// `curl` wrapper (first on the server's PATH) that records its argv and
/// stdin-less arguments, then runs the real curl.
#[test]
fn redfish_password_never_on_a_command_line() {
    let sushy = Sushy::start_with(&[("argv1", "Off")]);
    let bin = tempfile::tempdir().unwrap();
    let record = bin.path().join("argv.log");
    let real_curl = which::which("curl").expect("curl is installed");
    let wrapper = bin.path().join("curl");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> {}\nexec {} \"$@\"\n",
            q(&record.to_string_lossy()),
            q(&real_curl.to_string_lossy())
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let (server, token) = server(
        &format!(
            "static_nodes:\n\
             \x20 argv1:\n    platform: redfish\n    redfish_host: {}\n\
             \x20   redfish_user: admin\n    redfish_password: {}\n",
            q(&sushy.url),
            q(&sushy.password)
        ),
        &[("PATH", &path)],
    );
    for action in ["status", "on", "restart", "off"] {
        let (code, r, all) = results(&server, &token, &[action, "argv1"]);
        assert_eq!(code, 0, "{action}: {r:?}");
        assert!(!all.contains(&sushy.password), "{all}");
    }
    let argv = std::fs::read_to_string(&record).expect("the wrapper ran");
    // status: list + GET; the others: list + POST.
    assert!(argv.lines().count() >= 8, "{argv}");
    assert!(argv.lines().all(|l| l.contains("--config -")), "{argv}");
    assert!(!argv.contains(&sushy.password), "{argv}");
    assert!(!server.log().contains(&sushy.password), "{}", server.log());
}

/// A BMC with a self-signed certificate: refused when verified against the
/// system's CAs (saying how to fix it), accepted with `redfish_ca_file`
/// naming its certificate, or with `redfish_verify_tls: no`.
#[test]
fn redfish_tls_is_verified() {
    let sushy = Sushy::start_tls(&[("tls1", "Off")]);
    assert!(sushy.url.starts_with("https://127.0.0.1:"), "{}", sushy.url);
    let uuid = &sushy.systems[0].uuid;
    let ca = sushy.ca_cert.as_ref().unwrap();
    let node = |name: &str, extra: &str| {
        format!(
            "\x20 {name}:\n    platform: redfish\n    redfish_host: {}\n\
             \x20   redfish_system: {uuid}\n    redfish_user: admin\n{extra}",
            q(&sushy.host)
        )
    };
    let (server, token) = server(
        &format!(
            "static_nodes:\n{}{}{}",
            node("verified", ""),
            node(
                "with-ca",
                &format!("    redfish_ca_file: {}\n", q(&ca.to_string_lossy()))
            ),
            node("unverified", "    redfish_verify_tls: \"no\"\n"),
        ),
        &[("REDFISH_PASSWORD", &sushy.password)],
    );
    let (code, r, _) = results(
        &server,
        &token,
        &["status", "verified", "with-ca", "unverified"],
    );
    assert_eq!(code, 1, "{r:?}");
    let error = r["verified"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("TLS with {} failed", sushy.url))
            && error.contains("redfish_verify_tls: no"),
        "{error}"
    );
    assert_eq!(r["with-ca"]["state"], "off", "{r:?}");
    assert_eq!(r["unverified"]["state"], "off", "{r:?}");

    let (code, r, _) = results(&server, &token, &["on", "with-ca"]);
    assert_eq!(code, 0, "{r:?}");
    sushy.wait_power_state(uuid, "On", REDFISH_DEADLINE);
}

/// A system id the BMC does not have, and a node whose name no system
/// has: each fails, naming what is missing.
#[test]
fn redfish_unknown_system_fails_clearly() {
    let sushy = Sushy::start(&["known1", "known2"]);
    let (server, token) = server(
        &format!(
            "static_nodes:\n\
             \x20 wrong-id:\n    platform: redfish\n    redfish_host: {url}\n\
             \x20   redfish_system: no-such-system\n    redfish_user: admin\n\
             \x20 ghost:\n    platform: redfish\n    redfish_host: {url}\n\
             \x20   redfish_user: admin\n",
            url = q(&sushy.url)
        ),
        &[("REDFISH_PASSWORD", &sushy.password)],
    );
    for action in ["status", "on", "off", "restart"] {
        let (code, r, _) = results(&server, &token, &[action, "wrong-id", "ghost"]);
        assert_eq!(code, 1, "{action}: {r:?}");
        let error = |n: &str| r[n]["error"].as_str().unwrap_or_default().to_string();
        assert!(
            error("wrong-id").contains(&format!("no system no-such-system at {}", sushy.url)),
            "{action}: {}",
            error("wrong-id")
        );
        assert!(
            error("ghost").contains(&format!("no system named ghost at {}", sushy.url))
                && error("ghost").contains("set redfish_system"),
            "{action}: {}",
            error("ghost")
        );
    }
    for s in &sushy.systems {
        assert_eq!(sushy.power_state(&s.uuid), "Off");
    }
}
