//! The `libvirt` platform (drivers/libvirt, topology.d/10-libvirt.yaml)
//! against a private libvirtd's test driver, through the real server and
//! the real `power` client. State changes are checked with virsh, on a
//! connection of its own.
//!
//! The shipped platform is batch (`batch: true`: one driver run per chunk
//! of nodes). Each shared test runs twice ([`Mode`]): with the fragment as
//! shipped, and with its `batch: true` line taken out, the driver then run
//! once per node as before. The batch-only tests follow.

use super::{
    all_fail_within, api_results, assert_class, assert_error_has, assert_graceful, first_on_path,
    graceful_off, q, results, shipped,
};
use crate::support::libvirtd::Libvirtd;
use crate::support::Server;
use std::time::Duration;

/// How the platform runs its driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// As shipped: one run per chunk of nodes.
    Batch,
    /// Without `batch: true`: one run per node.
    PerNode,
}

/// `#[test]`s `NAME::batch` and `NAME::per_node`, each running the function
/// `NAME(Mode)`.
macro_rules! both_modes {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn batch() {
                super::$name(super::Mode::Batch)
            }

            #[test]
            fn per_node() {
                super::$name(super::Mode::PerNode)
            }
        }
    )*};
}

both_modes!(
    libvirt_status_on_off_restart_through_power,
    libvirt_graceful_variants,
    libvirt_graceful_off_shuts_domains_down,
    libvirt_unknown_domain_and_dead_endpoints_fail_clearly,
    libvirt_failures_are_classed,
);

/// The shipped libvirt fragment, as shipped (batch) or with its
/// `batch: true` line taken out.
fn fragment(mode: Mode) -> String {
    let shipped = shipped("10-libvirt.yaml");
    let line = "\n    batch: true\n";
    assert!(
        shipped.contains(line),
        "topology.d/10-libvirt.yaml should declare the platform batch:\n{shipped}"
    );
    match mode {
        Mode::Batch => shipped,
        Mode::PerNode => shipped.replacen(line, "\n", 1),
    }
}

/// A server with the libvirt fragment for `mode`, `nodes`, and `env` in its
/// environment; an operator token for it.
fn server_with(mode: Mode, nodes: &str, env: &[(&str, &str)]) -> (Server, String) {
    let mut builder = Server::builder()
        .file("10-libvirt.yaml", &fragment(mode))
        .file("50-nodes.yaml", nodes);
    for (k, v) in env {
        builder = builder.env(k, v);
    }
    let server = builder.start();
    let token = server.token(&["--role", "operator"]);
    (server, token)
}

/// A server with the libvirt fragment for `mode` and `nodes`.
fn server(mode: Mode, nodes: &str) -> (Server, String) {
    server_with(mode, nodes, &[])
}

/// Status, on, off and restart through `power`, each seen by virsh: the
/// test driver's own `test` domain (running), a domain the test defines
/// (shut off), and a node whose domain is named by `libvirt_domain`.
fn libvirt_status_on_off_restart_through_power(mode: Mode) {
    let lv = Libvirtd::start();
    lv.define("vm1");
    lv.define("guest-b");
    let uri = q(&lv.uri);
    let (server, token) = server(
        mode,
        &format!(
            "static_nodes:\n\
         \x20 test:\n    platform: libvirt\n    libvirt_uri: {uri}\n\
         \x20 vm1:\n    platform: libvirt\n    libvirt_uri: {uri}\n\
         \x20 alias:\n    platform: libvirt\n    libvirt_uri: {uri}\n    libvirt_domain: guest-b\n"
        ),
    );

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
fn libvirt_graceful_variants(mode: Mode) {
    let lv = Libvirtd::start();
    let (server, token) = server(
        mode,
        &format!(
            "static_nodes:\n\
         \x20 test:\n    platform: libvirt\n    libvirt_uri: {}\n\
         \x20   libvirt_power_off: shutdown\n    libvirt_restart: reboot\n",
            q(&lv.uri)
        ),
    );
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

/// A graceful off runs `virsh shutdown` (the `shutdown` action) on each
/// running domain, whatever `libvirt_power_off` says; the test driver's
/// guest obeys at once, so the domains are seen off and never destroyed
/// (no fallback). A domain already shut off is left alone.
fn libvirt_graceful_off_shuts_domains_down(mode: Mode) {
    let lv = Libvirtd::start();
    lv.define("vm2");
    lv.define("vm3");
    let (status, _, err) = lv.virsh(&["start", "vm2"]);
    assert!(status.success(), "virsh start vm2: {err}");
    let node = |name: &str| {
        format!(
            "  {name}:\n    platform: libvirt\n    libvirt_uri: {}\n",
            q(&lv.uri)
        )
    };
    let (server, token) = server(
        mode,
        &format!(
            "static_nodes:\n{}{}{}",
            node("test"),
            node("vm2"),
            node("vm3")
        ),
    );
    let r = graceful_off(&server, &token, "test,vm[2-3]", "10s");
    for name in ["test", "vm2", "vm3"] {
        assert_graceful(&r, name, false);
        assert_eq!(r[name]["state"], "off", "{}", r[name]);
        assert_eq!(lv.domstate(name), "shut off");
    }
    let events = lv.events();
    for name in ["test", "vm2"] {
        assert!(
            events.contains(&format!("'{name}': Stopped Shutdown")),
            "the daemon saw no shutdown of {name}: {events}"
        );
    }
    assert!(
        !events.contains("Destroyed"),
        "a domain was destroyed: {events}"
    );
    assert!(
        !events.contains("'vm3': Stopped") && !events.contains("'vm3': Started"),
        "vm3 was touched: {events}"
    );
}

/// An unknown domain, a socket nobody listens on, and one that never
/// answers: each a failed result saying so, none a success, none a hang.
fn libvirt_unknown_domain_and_dead_endpoints_fail_clearly(mode: Mode) {
    let lv = Libvirtd::start();
    let dead = lv.dir().join("sock/no-such-socket");
    // Bound but never accepted: a connect succeeds, no answer ever comes.
    let silent_path = lv.dir().join("silent-sock");
    let _silent = std::os::unix::net::UnixListener::bind(&silent_path).unwrap();
    let (server, token) = server(
        mode,
        &format!(
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
        ),
    );
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

/// Failures carry their class: the daemon's socket refusing the server's
/// user (permission denied: a UNIX socket's credentials are the user) is
/// `auth`, tried once (one virsh run: the server never retries it); a
/// socket nobody listens on is `unreachable`; an unknown domain stays
/// `failed`. The wrapper `virsh` runs the real one as uid 1 when the tests
/// run as root, for whom a socket's mode means nothing.
fn libvirt_failures_are_classed(mode: Mode) {
    use std::os::unix::fs::PermissionsExt;
    let lv = Libvirtd::start();
    let real = which::which("virsh").expect("virsh (scripts/install-test-deps)");
    let bin = tempfile::tempdir().unwrap();
    let home = bin.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o777)).unwrap();
    let log = bin.path().join("virsh-runs.log");
    let path = first_on_path(
        bin.path(),
        "virsh",
        &format!(
            "#!/bin/sh
echo run >>'{log}'
\
             if [ \"$(id -u)\" = 0 ]; then
\
             \x20 exec setpriv --reuid=1 --regid=1 --clear-groups env HOME='{home}' \\
\
             \x20   XDG_CACHE_HOME='{home}' XDG_CONFIG_HOME='{home}' XDG_RUNTIME_DIR='{home}' '{real}' \"$@\"
\
             fi
exec '{real}' \"$@\"
",
            log = log.display(),
            home = home.display(),
            real = real.display()
        ),
    );
    let dead = lv.dir().join("sock/no-such-socket");
    let (server, token) = server_with(
        mode,
        &format!(
            "static_nodes:\n\
         \x20 denied:\n    platform: libvirt\n    libvirt_uri: {}\n    libvirt_domain: test\n\
         \x20 dead:\n    platform: libvirt\n    libvirt_uri: {}\n    libvirt_domain: test\n",
            q(&lv.uri),
            q(&format!("test+unix:///default?socket={}", dead.display())),
        ),
        &[("PATH", &path)],
    );
    std::fs::set_permissions(&lv.socket, std::fs::Permissions::from_mode(0o000)).unwrap();

    let r = api_results(&server, &token, "DELETE", "denied");
    assert_class(
        &r,
        "denied",
        "auth",
        &["cannot connect to", "access refused", "Permission denied"],
    );
    let runs = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(runs.lines().count(), 1, "auth is tried once");
    let r = api_results(&server, &token, "GET", "denied,dead");
    assert_class(&r, "denied", "auth", &["Permission denied"]);
    assert_class(&r, "dead", "unreachable", &["endpoint unreachable"]);
    if mode == Mode::PerNode {
        assert_eq!(r["denied"]["exit-code"], 77);
        assert_eq!(r["dead"]["exit-code"], 68);
    }

    std::fs::set_permissions(&lv.socket, std::fs::Permissions::from_mode(0o777)).unwrap();
    assert_eq!(lv.domstate("test"), "running", "nothing was done");
}

/// A `PATH` whose `virsh` logs each run to `dir/virsh-runs.log` and runs
/// the real one; the log's path.
fn counting_virsh(dir: &std::path::Path) -> (String, std::path::PathBuf) {
    let real = which::which("virsh").expect("virsh (scripts/install-test-deps)");
    let bin = dir.join("counting-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = dir.join("virsh-runs.log");
    std::fs::write(&log, "").unwrap();
    let path = first_on_path(
        &bin,
        "virsh",
        &format!(
            "#!/bin/sh\necho run >>'{}'\nexec '{}' \"$@\"\n",
            log.display(),
            real.display()
        ),
    );
    (path, log)
}

/// The number of virsh runs logged by [`counting_virsh`] since the last
/// call, which empties the log.
fn runs_since(log: &std::path::Path) -> usize {
    let runs = std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .count();
    std::fs::write(log, "").unwrap();
    runs
}

/// One chunk mixing a running domain, a shut-off one, one named by its
/// UUID, a paused one, an unknown one and a dead connection: each node
/// gets its own answer, the same as a per-node run would give.
#[test]
fn libvirt_batch_chunk_mixing_domains_and_connections_answers_each() {
    let lv = Libvirtd::start();
    lv.define("vm1");
    lv.define("guest-b");
    lv.define("vm2");
    for args in [["start", "vm2"], ["suspend", "vm2"]] {
        let (status, _, err) = lv.virsh(&args);
        assert!(status.success(), "virsh {args:?}: {err}");
    }
    let (_, uuid, _) = lv.virsh(&["domuuid", "guest-b"]);
    let uuid = uuid.trim();
    let dead = lv.dir().join("sock/no-such-socket");
    let uri = q(&lv.uri);
    let (server, token) = server(
        Mode::Batch,
        &format!(
            "static_nodes:\n\
             \x20 test:\n    platform: libvirt\n    libvirt_uri: {uri}\n\
             \x20 vm1:\n    platform: libvirt\n    libvirt_uri: {uri}\n\
             \x20 by-uuid:\n    platform: libvirt\n    libvirt_uri: {uri}\n    libvirt_domain: {uuid}\n\
             \x20 paused:\n    platform: libvirt\n    libvirt_uri: {uri}\n    libvirt_domain: vm2\n\
             \x20 ghost:\n    platform: libvirt\n    libvirt_uri: {uri}\n\
             \x20 dead:\n    platform: libvirt\n    libvirt_uri: {}\n    libvirt_domain: test\n",
            q(&format!("test+unix:///default?socket={}", dead.display())),
        ),
    );
    let all = [
        "status", "test", "vm1", "by-uuid", "paused", "ghost", "dead",
    ];

    let (code, r, _) = results(&server, &token, &all);
    assert_eq!(code, 1, "{r:?}");
    assert_eq!(r["test"]["state"], "on", "{r:?}");
    assert_eq!(r["vm1"]["state"], "off", "{r:?}");
    assert_eq!(r["by-uuid"]["state"], "off", "{r:?}");
    for node in ["test", "vm1", "by-uuid"] {
        assert_eq!(r[node]["success"], true, "{r:?}");
    }
    assert_error_has(&r, "paused", "status", &["domain vm2 is paused"]);
    assert_error_has(&r, "ghost", "status", &["no domain 'ghost'"]);
    assert_error_has(
        &r,
        "dead",
        "status",
        &["cannot connect to", "endpoint unreachable"],
    );
    for node in ["paused", "ghost", "dead"] {
        assert_eq!(r[node]["success"], false, "{r:?}");
        assert_eq!(r[node]["state"], "unknown", "{r:?}");
    }

    let mut on = all;
    on[0] = "on";
    let (code, r, _) = results(&server, &token, &on);
    assert_eq!(code, 1, "{r:?}");
    for node in ["test", "vm1", "by-uuid"] {
        assert_eq!(r[node]["success"], true, "{r:?}");
    }
    for node in ["paused", "ghost", "dead"] {
        assert_eq!(r[node]["success"], false, "{r:?}");
    }
    assert_error_has(&r, "ghost", "on", &["no domain 'ghost'"]);
    assert_eq!(lv.domstate("test"), "running");
    assert_eq!(lv.domstate("vm1"), "running");
    assert_eq!(lv.domstate("guest-b"), "running");
    assert_eq!(lv.domstate("vm2"), "paused");
}

/// 60 domains in one request: status is one virsh run, and on and off a
/// few more (the states, then the actions in sessions of many commands),
/// where the per-node driver makes one or two per domain.
#[test]
fn libvirt_batch_many_domains_take_few_virsh_runs() {
    let lv = Libvirtd::start();
    let names: Vec<String> = (1..=60).map(|i| format!("vm{i:02}")).collect();
    let mut script = String::new();
    for name in &names {
        let xml = lv.domain_xml(name);
        script.push_str(&format!("define {}; ", xml.display()));
    }
    let (status, _, err) = lv.virsh(&[&script]);
    assert!(status.success(), "virsh define: {err}");
    let (path, log) = counting_virsh(lv.dir());
    let (server, token) = server_with(
        Mode::Batch,
        &format!(
            "static_nodes:\n  vm[01-60]:\n    platform: libvirt\n    libvirt_uri: {}\n",
            q(&lv.uri)
        ),
        &[("PATH", &path)],
    );
    let listed = |state: &str| -> Vec<String> {
        let (_, out, _) = lv.virsh(&["list", state, "--name"]);
        let mut names: Vec<String> = out
            .lines()
            .filter(|l| l.starts_with("vm"))
            .map(str::to_string)
            .collect();
        names.sort();
        names
    };

    let (code, r, _) = results(&server, &token, &["status", "vm[01-60]"]);
    assert_eq!(code, 0, "{r:?}\nserver log:\n{}", server.log());
    assert_eq!(r.len(), 60);
    assert!(r.values().all(|n| n["state"] == "off"), "{r:?}");
    assert_eq!(runs_since(&log), 1, "status of 60 domains");

    let (code, r, _) = results(&server, &token, &["on", "vm[01-60]"]);
    assert_eq!(code, 0, "{r:?}");
    let runs = runs_since(&log);
    assert!(runs <= 4, "on of 60 domains took {runs} virsh runs");
    assert_eq!(listed("--state-running"), names);

    let (code, r, _) = results(&server, &token, &["off", "vm[01-60]"]);
    assert_eq!(code, 0, "{r:?}");
    let runs = runs_since(&log);
    assert!(runs <= 4, "off of 60 domains took {runs} virsh runs");
    assert_eq!(listed("--state-shutoff"), names);
}
