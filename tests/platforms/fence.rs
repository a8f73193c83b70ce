//! The `fence` drop-in driver (drivers/fence, topology.d/10-fence.yaml)
//! running ClusterLabs fence agents against real endpoints, through the
//! real server and the real `power` client: `fence_ipmilan` against
//! OpenIPMI's `ipmi_sim` (`tests/support/ipmi_sim.rs`) and `fence_redfish`
//! against sushy-tools' emulator (`tests/support/sushy.rs`).
//!
//! fence_redfish speaks HTTPS only, and the emulator here serves plain
//! HTTP, so [`TlsFront`] puts `socat` with a fresh self-signed certificate
//! in front of it, as a BMC's own web server would present one. The
//! emulator applies a reset after a random 1 to 11 s delay: states are
//! polled with a deadline.

use super::{
    all_fail_within, api_results, assert_class, assert_error_has, assert_graceful, calls,
    counting_wrapper, driver_actions, first_on_path, graceful_off, node_entry, q, results,
    start_with_operator, static_nodes, wait_status,
};
use crate::support::daemon::{free_port, spawn_group, start_on_free_port, stop_group, STOP_GRACE};
use crate::support::ipmi_sim::{Bmc, IpmiSim};
use crate::support::sushy::{Sushy, REDFISH_DEADLINE};
use crate::support::Server;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A fence_ipmilan node for `bmc` at `addr`, with `password` (none: the
/// driver takes FENCE_PASSWORD from the server's environment).
fn ipmi_node(name: &str, addr: &str, bmc: &Bmc, password: Option<&str>) -> String {
    let mut vars = vec![
        ("fence_ip", addr),
        ("fence_username", bmc.user.as_str()),
        ("fence_lanplus", "1"),
        ("fence_cipher", "3"),
    ];
    if let Some(password) = password {
        vars.push(("fence_password", password));
    }
    node_entry(name, "fence_ipmilan", &vars)
}

/// A server with the shipped fragment, `extra` fragments, `nodes` and
/// `env`, and an operator token.
fn server(extra: &[(&str, &str)], nodes: &[String], env: &[(&str, &str)]) -> (Server, String) {
    start_with_operator(
        "10-fence.yaml",
        extra,
        &static_nodes(nodes),
        env.iter().copied(),
    )
}

/// Assert that `secret` shows nowhere: not in the client's output, the
/// API's answer for `nodes`, nor the server's log.
fn assert_hidden(server: &Server, token: &str, nodes: &str, secret: &str, client_output: &str) {
    assert!(!client_output.contains(secret), "{client_output}");
    let reply = server.get(&format!("/?nodes={nodes}"), token);
    assert!(!reply.body.contains(secret), "{}", reply.body);
    let log = server.log();
    assert!(!log.contains(secret), "{log}");
}

/// fence_ipmilan with the shipped platform: status reads each simulated
/// BMC exactly (off is exit 111 from the agent's 2), on and off change
/// only the asked BMC, and a restart is the agent's reboot (off, then on).
/// One node has its password as a node variable, the other takes
/// FENCE_PASSWORD from the server's environment; neither password shows in
/// an answer or the log.
#[test]
fn fence_ipmilan_status_on_off_restart_through_power() {
    let sim = IpmiSim::start(2);
    let (b1, b2) = (&sim.bmcs[0], &sim.bmcs[1]);
    b2.set_power(true);
    let (server, token) = server(
        &[],
        &[
            ipmi_node("f1", &b1.addr, b1, Some(&b1.password)),
            ipmi_node("f2", &b2.addr, b2, None),
        ],
        &[("FENCE_PASSWORD", &b2.password)],
    );

    let (code, r, _) = results(&server, &token, &["status", "f1", "f2"]);
    assert_eq!(code, 0, "{r:?}\n{}", server.log());
    assert_eq!(r["f1"]["state"], "off", "{r:?}");
    assert_eq!(r["f2"]["state"], "on", "{r:?}");
    let reply = server.get("/?nodes=f1,f2", &token);
    let attrs: Vec<_> = reply.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["attributes"].clone())
        .collect();
    assert_eq!(attrs[0]["exit-code"], 111, "{}", reply.body);
    assert_eq!(attrs[1]["exit-code"], 0, "{}", reply.body);
    assert!(b1.set_events().is_empty(), "status changes nothing");

    let (code, r, _) = results(&server, &token, &["on", "f1"]);
    assert_eq!(code, 0, "{r:?}\n{}", server.log());
    assert!(b1.power());
    assert_eq!(b1.set_events(), ["set power 1"]);

    let (code, r, _) = results(&server, &token, &["off", "f2"]);
    assert_eq!(code, 0, "{r:?}\n{}", server.log());
    assert!(!b2.power());
    assert!(b1.power(), "only the asked BMC changes");

    let (code, r, _) = results(&server, &token, &["restart", "f1"]);
    assert_eq!(code, 0, "{r:?}\n{}", server.log());
    assert_eq!(
        b1.set_events(),
        ["set power 1", "set power 0", "set power 1"],
        "the agent's reboot is off, then on"
    );
    assert!(b1.power());

    let (code, r, all) = results(&server, &token, &["status", "f1", "f2"]);
    assert_eq!(code, 0, "{r:?}");
    assert_eq!(r["f1"]["state"], "on", "{r:?}");
    assert_eq!(r["f2"]["state"], "off", "{r:?}");
    assert_hidden(&server, &token, "f1,f2", &b1.password, &all);
    assert_hidden(&server, &token, "f1,f2", &b2.password, &all);
}

/// Fence agents cannot ask an OS to shut down: `shutdown` is
/// `unsupported` (exit 69, no agent run), so a graceful off switches the
/// node off hard at once through the agent (fallback), without waiting out
/// the grace; the BMC never sees a soft off, even one whose machine would
/// honour it.
#[test]
fn fence_graceful_off_falls_back_to_the_agents_off_at_once() {
    let sim = IpmiSim::start(1);
    let bmc = &sim.bmcs[0];
    bmc.set_power(true);
    bmc.honour_soft_off();
    let (server, token) = server(
        &[],
        &[ipmi_node("g1", &bmc.addr, bmc, Some(&bmc.password))],
        &[],
    );
    let start = Instant::now();
    let r = graceful_off(&server, &token, "g1", "1m");
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "the grace was waited out"
    );
    assert_graceful(&r, "g1", true);
    assert!(!bmc.power());
    assert_eq!(bmc.set_events(), ["set power 0"], "no soft off, a hard one");
    assert_eq!(driver_actions(&server, "g1"), ["shutdown", "power_off"]);
    assert!(
        server
            .log()
            .contains("no graceful shutdown through a fence agent"),
        "{}",
        server.log()
    );
}

/// fence_ipmilan with a wrong password fails at once, saying the BMC
/// refused the session; a BMC address nothing answers on fails, saying it
/// timed out, within the agent's power_timeout: never a success, never a
/// hang, and nothing is switched.
#[test]
fn fence_ipmilan_wrong_password_and_dead_bmc_fail_clearly() {
    let sim = IpmiSim::start(1);
    let bmc = &sim.bmcs[0];
    let wrong = "wrong-password-4711"; // IPMI passwords are at most 20 bytes
    let dead = IpmiSim::dead_addr();
    let (server, token) = server(
        &[],
        &[
            ipmi_node("bad", &bmc.addr, bmc, Some(wrong)),
            ipmi_node("dead", &dead, bmc, Some(&bmc.password)),
        ],
        &[],
    );
    for action in ["status", "on", "off", "restart"] {
        let start = Instant::now();
        let (code, r, all) = results(&server, &token, &[action, "bad"]);
        assert!(start.elapsed() < Duration::from_secs(15), "{action}");
        assert_eq!(code, 1, "{action}: {r:?}");
        assert_eq!(r["bad"]["success"], false, "{action}: {r:?}");
        assert_error_has(
            &r,
            "bad",
            action,
            &[
                "fence_ipmilan",
                &bmc.addr,
                "authentication refused",
                "wrong password",
            ],
        );
        assert_hidden(&server, &token, "bad", wrong, &all);
    }
    assert!(bmc.set_events().is_empty(), "{:?}", bmc.events());

    // Each run waits out the agent's power_timeout (20 s by default).
    for action in ["status", "on"] {
        let start = Instant::now();
        let (code, r, all) = results(&server, &token, &[action, "dead"]);
        assert!(
            start.elapsed() < Duration::from_secs(45),
            "{action} took {:?}",
            start.elapsed()
        );
        assert_eq!(code, 1, "{action}: {r:?}");
        assert_eq!(r["dead"]["success"], false, "{action}: {r:?}");
        assert_error_has(&r, "dead", action, &[&dead, "did not answer: timed out"]);
        // (Not through the API: that would be one more 20 s status.)
        assert!(!all.contains(&bmc.password), "{all}");
        assert!(!server.log().contains(&bmc.password), "{}", server.log());
    }
}

/// `socat` terminating TLS with a fresh self-signed certificate on a free
/// 127.0.0.1 port, forwarding to a plain-HTTP endpoint; stopped (its whole
/// process group) when dropped.
struct TlsFront {
    port: u16,
    child: Option<Child>,
    /// The certificate, key and log.
    _dir: tempfile::TempDir,
}

impl TlsFront {
    /// Front `target` (`127.0.0.1:PORT`).
    fn start(target: &str) -> TlsFront {
        let socat = which::which("socat").unwrap_or_else(|_| {
            panic!(
                "socat is not installed (the fence_redfish tests put it in front of \
                 sushy-emulator for HTTPS): run scripts/install-test-deps"
            )
        });
        let openssl = which::which("openssl").unwrap_or_else(|_| {
            panic!("openssl is not installed (a test certificate): run scripts/install-test-deps")
        });
        let dir = tempfile::Builder::new()
            .prefix("fence-tls")
            .tempdir()
            .expect("temp dir");
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let out = Command::new(openssl)
            .args([
                "req",
                "-x509",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=127.0.0.1",
            ])
            .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdin(Stdio::null())
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl req: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let log = dir.path().join("socat.log");
        let (port, child) = start_on_free_port(
            "socat",
            &log,
            Duration::from_secs(20),
            |port| {
                let mut cmd = Command::new(&socat);
                cmd.arg(format!(
                    "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},verify=0",
                    cert.display(),
                    key.display()
                ))
                .arg(format!("TCP:{target}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap());
                spawn_group(&mut cmd).expect("start socat")
            },
            |port| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
        TlsFront {
            port,
            child: Some(child),
            _dir: dir,
        }
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        stop_group(self.child.take(), STOP_GRACE);
    }
}

/// A fence_redfish node for `uuid` behind `port`, with `password` and
/// these extra variables (which replace the defaults of the same name).
fn redfish_node(
    name: &str,
    port: u16,
    uuid: &str,
    password: &str,
    extra: &[(&str, &str)],
) -> String {
    let port = port.to_string();
    let uri = format!("/redfish/v1/Systems/{uuid}");
    let mut vars = vec![
        ("fence_ip", "127.0.0.1"),
        ("fence_ipport", port.as_str()),
        ("fence_username", "admin"),
        ("fence_password", password),
        ("fence_systems_uri", uri.as_str()),
        ("fence_ssl_insecure", "1"),
    ];
    for (k, v) in extra {
        vars.retain(|(name, _)| name != k);
        vars.push((k, v));
    }
    node_entry(name, "fence_redfish", &vars)
}

/// fence_redfish with the shipped platform over HTTPS: status, on, off and
/// restart through `power`, each seen in the emulator, only on the asked
/// system; the password shows in no answer and no log.
#[test]
fn fence_redfish_status_on_off_restart_through_power() {
    let sushy = Sushy::start(&["r1", "r2"]);
    let tls = TlsFront::start(&sushy.host);
    let (u1, u2) = (&sushy.systems[0].uuid, &sushy.systems[1].uuid);
    let slow = &[("fence_power_timeout", "30")];
    let (server, token) = server(
        &[],
        &[
            // The emulator takes up to 11 s per reset, more when the
            // machine is busy: more room than the agent's default 20 s.
            redfish_node("r1", tls.port, u1, &sushy.password, slow),
            redfish_node("r2", tls.port, u2, &sushy.password, slow),
        ],
        &[],
    );

    let (code, r, _) = results(&server, &token, &["status", "r1", "r2"]);
    assert_eq!(code, 0, "{r:?}\n{}", server.log());
    assert!(r.values().all(|n| n["state"] == "off"), "{r:?}");

    // The agent itself waits until the system is on.
    let (code, r, _) = results(&server, &token, &["on", "r1"]);
    assert_eq!(code, 0, "{r:?}\n{}", server.log());
    sushy.wait_power_state(u1, "On", REDFISH_DEADLINE);
    assert_eq!(sushy.power_state(u2), "Off", "only the asked system");
    wait_status(&server, &token, "r1", "on", REDFISH_DEADLINE);

    let (code, r, _) = results(&server, &token, &["off", "r1"]);
    assert_eq!(code, 0, "{r:?}\n{}", server.log());
    sushy.wait_power_state(u1, "Off", REDFISH_DEADLINE);
    wait_status(&server, &token, "r1", "off", REDFISH_DEADLINE);

    let (code, r, _) = results(&server, &token, &["restart", "r1"]);
    assert_eq!(code, 0, "{r:?}\n{}", server.log());
    sushy.wait_power_state(u1, "On", REDFISH_DEADLINE);
    assert_eq!(sushy.power_state(u2), "Off");
    let resets = sushy
        .log()
        .matches(&format!("\"POST /redfish/v1/Systems/{u1}/Actions"))
        .count();
    assert!(resets >= 3, "on, off and a restart reached the emulator");

    let (code, r, all) = results(&server, &token, &["status", "r1", "r2"]);
    assert_eq!(code, 0, "{r:?}");
    assert_eq!(r["r1"]["state"], "on", "{r:?}");
    assert_eq!(r["r2"]["state"], "off", "{r:?}");
    assert_hidden(&server, &token, "r1,r2", &sushy.password, &all);
}

/// fence_redfish failures say what went wrong: a wrong password is an
/// authentication refusal (HTTP 401), a port nobody listens on is
/// unreachable, a self-signed certificate without fence_ssl_insecure is
/// not trusted, plain HTTP is a failed TLS handshake. All fail fast, none
/// succeeds, nothing is switched, and no password shows.
#[test]
fn fence_redfish_failures_say_why() {
    let sushy = Sushy::start_with(&[("x1", "On")]);
    let tls = TlsFront::start(&sushy.host);
    let uuid = &sushy.systems[0].uuid;
    let wrong = "not-the-password-4711";
    let dead = free_port();
    let plain: u16 = sushy.host.rsplit(':').next().unwrap().parse().unwrap();
    let (server, token) = server(
        &[],
        &[
            redfish_node("bad", tls.port, uuid, wrong, &[]),
            redfish_node("dead", dead, uuid, &sushy.password, &[]),
            redfish_node(
                "untrusted",
                tls.port,
                uuid,
                &sushy.password,
                &[("fence_ssl_insecure", "")],
            ),
            redfish_node("plain", plain, uuid, &sushy.password, &[]),
        ],
        &[],
    );
    let all_nodes = "bad,dead,untrusted,plain";
    for action in ["status", "on", "off", "restart"] {
        let (r, all) = all_fail_within(
            &server,
            &token,
            &[action, all_nodes],
            Duration::from_secs(30),
        );
        assert_error_has(
            &r,
            "bad",
            action,
            &[
                &format!("127.0.0.1:{}", tls.port),
                "authentication refused (HTTP 401",
            ],
        );
        assert_error_has(
            &r,
            "dead",
            action,
            &[
                &format!("127.0.0.1:{dead}"),
                "endpoint unreachable (connection refused)",
            ],
        );
        assert_error_has(&r, "untrusted", action, &["TLS certificate not trusted"]);
        assert_error_has(&r, "plain", action, &["TLS handshake failed"]);
        assert_hidden(&server, &token, all_nodes, wrong, &all);
        assert_hidden(&server, &token, all_nodes, &sushy.password, &all);
    }
    assert_eq!(sushy.power_state(uuid), "On", "nothing was switched");
}

/// Failures carry their class: a wrong password is `auth`, for
/// fence_ipmilan (an IPMI session refused; the agent run once, as the
/// server never retries it) and fence_redfish (HTTP 401); a port nobody
/// listens on is `unreachable`; an untrusted certificate stays `failed`.
#[test]
fn fence_failures_are_classed() {
    let sim = IpmiSim::start(1);
    let bmc = &sim.bmcs[0];
    let sushy = Sushy::start_with(&[("x1", "On")]);
    let tls = TlsFront::start(&sushy.host);
    let uuid = &sushy.systems[0].uuid;
    let wrong = "wrong-password-4711";
    let dead = free_port();
    let bin = tempfile::tempdir().unwrap();
    let (path, agent_calls) = counting_wrapper(bin.path(), "fence_ipmilan");
    let (server, token) = server(
        &[],
        &[
            ipmi_node("ibad", &bmc.addr, bmc, Some(wrong)),
            redfish_node("rbad", tls.port, uuid, wrong, &[]),
            redfish_node("dead", dead, uuid, &sushy.password, &[]),
            redfish_node(
                "untrusted",
                tls.port,
                uuid,
                &sushy.password,
                &[("fence_ssl_insecure", "")],
            ),
        ],
        &[("PATH", &path)],
    );

    let r = api_results(&server, &token, "PATCH", "ibad");
    assert_class(&r, "ibad", "auth", &["authentication refused"]);
    assert_eq!(r["ibad"]["exit-code"], 77);
    // One driver run: the agent's `-o metadata`, then the action.
    assert_eq!(calls(&agent_calls), 2, "auth is tried once");
    assert!(bmc.set_events().is_empty());

    let r = api_results(&server, &token, "GET", "rbad,dead,untrusted");
    assert_class(&r, "rbad", "auth", &["authentication refused (HTTP 401"]);
    assert_class(&r, "dead", "unreachable", &["endpoint unreachable"]);
    assert_eq!(r["dead"]["exit-code"], 68);
    assert_class(&r, "untrusted", "failed", &["TLS certificate not trusted"]);
    assert_eq!(sushy.power_state(uuid), "On", "nothing was switched");
}

/// The options are checked before the agent runs, with errors that name
/// the problem: an option the agent does not have (from its own
/// `-o metadata`), an agent that is not installed, a name that is not a
/// fence agent's, and a value with a line break (which would smuggle in a
/// second option).
#[test]
fn fence_options_are_checked_against_the_agent() {
    let platform = "platforms:\n  bmc:\n    driver: fence\n    \
                    variables: [fence_agent, fence_ip, fence_plgu]\n";
    let (server, token) = server(
        &[("20-bmc.yaml", platform)],
        &[
            node_entry(
                "typo",
                "bmc",
                &[("fence_agent", "fence_ipmilan"), ("fence_plgu", "3")],
            ),
            node_entry("missing", "bmc", &[("fence_agent", "fence_nosuchagent")]),
            node_entry("notfence", "bmc", &[("fence_agent", "/bin/sh")]),
            node_entry("none", "bmc", &[("fence_ip", "127.0.0.1")]),
            node_entry(
                "smuggle",
                "bmc",
                &[
                    ("fence_agent", "fence_ipmilan"),
                    ("fence_ip", "127.0.0.1\nipmitool_path=/bin/true"),
                ],
            ),
        ],
        &[],
    );
    let (code, r, _) = results(
        &server,
        &token,
        &["status", "typo,missing,notfence,none,smuggle"],
    );
    assert_eq!(code, 1, "{r:?}");
    let expect = [
        (
            "typo",
            "fence_ipmilan has no option 'plgu' (from fence_plgu)",
        ),
        ("missing", "fence agent fence_nosuchagent not found"),
        (
            "notfence",
            "fence_agent '/bin/sh' is not a fence agent's name",
        ),
        ("none", "no fence agent for node none"),
        ("smuggle", "fence_ip: the value holds a line break"),
    ];
    for (node, text) in expect {
        assert_eq!(r[node]["success"], false, "{node}: {r:?}");
        assert_error_has(&r, node, node, &[text]);
    }
}

/// Options reach the agent on its stdin only: an agent wrapper first on
/// the server's PATH records its command line and its environment's
/// fence_* names, and neither holds the password (the agent's argv is
/// empty, or `-o metadata`).
#[test]
fn fence_password_never_on_the_agent_command_line() {
    let sushy = Sushy::start_with(&[("argv1", "Off")]);
    let tls = TlsFront::start(&sushy.host);
    let bin = tempfile::tempdir().unwrap();
    let record = bin.path().join("argv.log");
    let real = ["/usr/sbin/fence_redfish", "/sbin/fence_redfish"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .map(Path::to_path_buf)
        .or_else(|| which::which("fence_redfish").ok())
        .expect("fence_redfish is not installed: run scripts/install-test-deps");
    let path = first_on_path(
        bin.path(),
        "fence_redfish",
        &format!(
            "#!/bin/sh\n{{ printf 'argv=%s\\n' \"$*\"; env | grep '^fence_' | cut -d= -f1; }} >> {}\n\
             exec {} \"$@\"\n",
            q(&record.to_string_lossy()),
            q(&real.to_string_lossy())
        ),
    );
    let uuid = &sushy.systems[0].uuid;
    let (server, token) = server(
        &[],
        &[redfish_node("argv1", tls.port, uuid, &sushy.password, &[])],
        &[("PATH", &path)],
    );
    for action in ["status", "on"] {
        let (code, r, all) = results(&server, &token, &[action, "argv1"]);
        assert_eq!(code, 0, "{action}: {r:?}\n{}", server.log());
        assert_hidden(&server, &token, "argv1", &sushy.password, &all);
    }
    sushy.wait_power_state(uuid, "On", REDFISH_DEADLINE);
    let lines = std::fs::read_to_string(&record).expect("the wrapper ran");
    // Each run (the API checks above ran some statuses too) is one
    // `-o metadata` and one run with an empty command line.
    let argvs: Vec<&str> = lines.lines().filter(|l| l.starts_with("argv=")).collect();
    assert!(argvs.len() >= 4 && argvs.len() % 2 == 0, "{lines}");
    for pair in argvs.chunks(2) {
        assert_eq!(pair, ["argv=-o metadata", "argv="], "{lines}");
    }
    assert!(
        lines.lines().all(|l| l.starts_with("argv=")),
        "no fence_* variable reaches the agent: {lines}"
    );
    assert!(!lines.contains(&sushy.password), "{lines}");
}
