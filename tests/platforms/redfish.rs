//! The `redfish` platform (drivers/redfish, topology.d/10-redfish.yaml)
//! against sushy-tools' Redfish emulator with basic auth, through the real
//! server and the real `power` client. The emulator applies a reset after
//! a random 1 to 11 s delay, so state changes are polled with a deadline.

use super::{
    all_fail_within, api_results, assert_class, assert_error_has, assert_graceful, calls,
    counting_wrapper, driver_actions, error, first_on_path, graceful_off, q, results,
    start_with_operator, wait_status,
};
use crate::support::daemon::free_port;
use crate::support::sushy::{Sushy, REDFISH_DEADLINE};
use crate::support::Server;
use std::time::Duration;

/// A server with the shipped redfish fragment, `nodes`, and `env`.
fn server(nodes: &str, env: &[(&str, &str)]) -> (Server, String) {
    start_with_operator("10-redfish.yaml", &[], nodes, env.iter().copied())
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
    wait_status(&server, &token, "rf2", "on", REDFISH_DEADLINE);

    let (code, r, _) = results(&server, &token, &["off", "rf1"]);
    assert_eq!(code, 0, "{r:?}");
    sushy.wait_power_state(rf1, "Off", REDFISH_DEADLINE);
    wait_status(&server, &token, "rf1", "off", REDFISH_DEADLINE);
    assert_eq!(sushy.power_state(rf2), "On");

    // The emulator's restart turns a system off at once and on after its
    // delay: from off, a restart shows as the system coming on.
    let before = reset_posts(&sushy, rf1);
    let (code, r, _) = results(&server, &token, &["restart", "rf1"]);
    assert_eq!(code, 0, "{r:?}");
    assert_eq!(reset_posts(&sushy, rf1), before + 1, "{}", sushy.log());
    sushy.wait_power_state(rf1, "On", REDFISH_DEADLINE);
    wait_status(&server, &token, "rf1", "on", REDFISH_DEADLINE);

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
    let error = error(&r, "g1");
    assert!(
        error.contains("HTTP 501") && error.contains("Power state Bogus is not supported"),
        "{error}"
    );
    let (code, r, _) = results(&server, &token, &["off", "g1"]);
    assert_eq!(code, 0, "{r:?}");
    sushy.wait_power_state(uuid, "Off", REDFISH_DEADLINE);
}

/// A graceful off POSTs `GracefulShutdown` (the `shutdown` action), which
/// the emulator applies after its delay: the system is seen off within the
/// grace and never switched off hard (one reset POST, no `power_off` run).
/// A system already off gets no reset at all.
#[test]
fn redfish_graceful_off_is_a_graceful_shutdown() {
    let sushy = Sushy::start_with(&[("g1", "On"), ("g2", "Off")]);
    let (g1, g2) = (&sushy.systems[0].uuid, &sushy.systems[1].uuid);
    let (server, token) = server(
        &format!(
            "static_nodes:\n\
             \x20 g1:\n    platform: redfish\n    redfish_host: {url}\n\
             \x20   redfish_system: {g1}\n    redfish_user: admin\n\
             \x20 g2:\n    platform: redfish\n    redfish_host: {url}\n\
             \x20   redfish_system: {g2}\n    redfish_user: admin\n",
            url = q(&sushy.url),
        ),
        &[("REDFISH_PASSWORD", &sushy.password)],
    );
    // The emulator's delay is up to 11 s: a grace well past it.
    let r = graceful_off(&server, &token, "g1,g2", "40s");
    assert_graceful(&r, "g1", false);
    assert_graceful(&r, "g2", false);
    assert_eq!(r["g1"]["state"], "off", "{}", r["g1"]);
    assert_eq!(sushy.power_state(g1), "Off");
    assert_eq!(reset_posts(&sushy, g1), 1, "{}", sushy.log());
    assert_eq!(reset_posts(&sushy, g2), 0, "{}", sushy.log());
    for node in ["g1", "g2"] {
        let actions = driver_actions(&server, node);
        assert_eq!(
            actions.first().map(String::as_str),
            Some("shutdown"),
            "{actions:?}"
        );
        assert!(!actions.iter().any(|a| a == "power_off"), "{actions:?}");
    }
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
        assert_error_has(
            &r,
            "bad1",
            action,
            &["authentication refused by", &sushy.url],
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
        let (r, _) = all_fail_within(
            &server,
            &token,
            &[action, "dead", "silent"],
            Duration::from_secs(30),
        );
        assert_error_has(
            &r,
            "dead",
            action,
            &[
                &format!("cannot reach http://127.0.0.1:{dead}"),
                "endpoint unreachable",
            ],
        );
        assert_error_has(&r, "silent", action, &["timed out after 2s"]);
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
    let path = first_on_path(
        bin.path(),
        "curl",
        &format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> {}\nexec {} \"$@\"\n",
            q(&record.to_string_lossy()),
            q(&real_curl.to_string_lossy())
        ),
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
    let error = error(&r, "verified");
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
        assert_error_has(
            &r,
            "wrong-id",
            action,
            &[&format!("no system no-such-system at {}", sushy.url)],
        );
        assert_error_has(
            &r,
            "ghost",
            action,
            &[
                &format!("no system named ghost at {}", sushy.url),
                "set redfish_system",
            ],
        );
    }
    for s in &sushy.systems {
        assert_eq!(sushy.power_state(&s.uuid), "Off");
    }
}

/// Failures carry their class: a wrong password is `auth` (HTTP 401,
/// exit 77), tried once (one request: the server never retries it); a
/// port nothing listens on is `unreachable` (exit 68); a ResetType the BMC
/// does not implement is `unsupported` (HTTP 501, exit 69); an unknown
/// system stays `failed`.
#[test]
fn redfish_failures_are_classed() {
    let sushy = Sushy::start_with(&[("c1", "Off")]);
    let uuid = &sushy.systems[0].uuid;
    let dead = free_port();
    let node = |name: &str, host: &str, system: &str, extra: &str| {
        format!(
            "\x20 {name}:\n    platform: redfish\n    redfish_host: {}\n\
             \x20   redfish_system: {}\n    redfish_user: admin\n{extra}",
            q(host),
            q(system)
        )
    };
    let bin = tempfile::tempdir().unwrap();
    let (path, curl_calls) = counting_wrapper(bin.path(), "curl");
    let (server, token) = server(
        &format!(
            "static_nodes:\n{}{}{}{}",
            node(
                "bad",
                &sushy.url,
                uuid,
                "    redfish_password: not-the-password-4711\n"
            ),
            node("dead", &format!("http://127.0.0.1:{dead}"), "1", ""),
            node("bogus", &sushy.url, uuid, "    redfish_restart: Bogus\n"),
            node("ghost", &sushy.url, "no-such-system", ""),
        ),
        &[("REDFISH_PASSWORD", &sushy.password), ("PATH", &path)],
    );

    let r = api_results(&server, &token, "PATCH", "bad");
    assert_class(
        &r,
        "bad",
        "auth",
        &["authentication refused by", &sushy.url],
    );
    assert_eq!(r["bad"]["exit-code"], 77);
    assert_eq!(calls(&curl_calls), 1, "auth is tried once");
    let r = api_results(&server, &token, "GET", "bad,dead,ghost");
    assert_class(&r, "bad", "auth", &["authentication refused by"]);
    assert_class(&r, "dead", "unreachable", &["endpoint unreachable"]);
    assert_eq!(r["dead"]["exit-code"], 68);
    assert_class(&r, "ghost", "failed", &["no system no-such-system"]);
    let r = api_results(&server, &token, "PUT", "bogus");
    assert_class(&r, "bogus", "unsupported", &["HTTP 501"]);
    assert_eq!(r["bogus"]["exit-code"], 69);
    assert_eq!(sushy.power_state(uuid), "Off", "nothing was done");
}
