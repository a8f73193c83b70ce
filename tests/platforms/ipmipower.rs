//! The shipped batch platform `ipmipower` (drivers/ipmipower,
//! topology.d/10-ipmipower.yaml) against real BMCs, OpenIPMI's `ipmi_sim`
//! (`tests/support/ipmi_sim.rs`), through the real server and the real
//! `power` client: one FreeIPMI `ipmipower` process for many BMCs.
//!
//! The shipped platform is persistent (`ipmipower serve`): the driver keeps
//! ipmipower processes in interactive mode between requests. Tests marked
//! `one_shot` run a copy of the fragment without `persistent: true`, where
//! the driver runs once per chunk and ipmipower once per group.
//!
//! Each simulated BMC has its own loopback address on port 623, which
//! ipmipower needs: it names its answers by host alone. ipmi_sim wants
//! `-W opensesspriv`, so the nodes set `ipmi_workaround: opensesspriv`.
//!
//! A wrapper named `ipmipower`, first on the server's `PATH`, records each
//! call's arguments and pid (and the mode of the config file it is given)
//! before it runs the real one (as the same process): the tests count the
//! ipmipower processes and look for passwords in their arguments.

use super::{
    api_results, assert_class, assert_graceful, bmc_vars, graceful_off, node_entry, results,
    shipped, static_nodes,
};
use crate::support::ipmi_sim::{Bmc, IpmiSim};
use crate::support::{self, Server};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A node on the ipmipower platform for the BMC at `addr`, as `user` with
/// `password` (no `ipmi_password` when `None`), with ipmi_sim's workaround
/// and `extra` variables. An empty value leaves the variable out.
fn node(
    name: &str,
    addr: &str,
    user: &str,
    password: Option<&str>,
    extra: &[(&str, &str)],
) -> String {
    let mut vars = bmc_vars(addr, user, password);
    if !extra.iter().any(|(k, _)| *k == "ipmi_workaround") {
        vars.push(("ipmi_workaround", "opensesspriv"));
    }
    vars.extend_from_slice(extra);
    vars.retain(|(_, v)| !v.is_empty());
    node_entry(name, "ipmipower", &vars)
}

/// A node with `bmc`'s own address and credentials.
fn node_for(name: &str, bmc: &Bmc) -> String {
    node_with(name, bmc, &[])
}

/// A node with `bmc`'s own address and credentials, and `extra` variables.
fn node_with(name: &str, bmc: &Bmc, extra: &[(&str, &str)]) -> String {
    node(name, &bmc.addr, &bmc.user, Some(&bmc.password), extra)
}

/// A node for each of `sim`'s BMCs, `bmc01`.., with its own credentials.
fn nodes_for(sim: &IpmiSim) -> Vec<String> {
    names(sim.bmcs.len())
        .iter()
        .zip(&sim.bmcs)
        .map(|(name, bmc)| node_for(name, bmc))
        .collect()
}

/// How the platform runs its driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The shipped platform, `persistent: true`: `ipmipower serve`.
    Persistent,
    /// A copy of it without `persistent: true` (and its `processes`): one
    /// driver run per chunk.
    OneShot,
}

/// The shipped fragment as `mode` wants it.
fn fragment(mode: Mode) -> String {
    let yaml = shipped("10-ipmipower.yaml");
    match mode {
        Mode::Persistent => yaml,
        Mode::OneShot => {
            let without: String = yaml
                .lines()
                .filter(|l| !matches!(l.trim(), "persistent: true" | "processes: 1"))
                .map(|l| format!("{l}\n"))
                .collect();
            assert_ne!(without, yaml, "no `persistent: true` in the fragment");
            without
        }
    }
}

/// A server with the shipped fragment (as `mode` wants it), these nodes and
/// `env`, whose `ipmipower` is the recording wrapper.
struct Rig {
    server: Server,
    token: String,
    /// The wrapper's directory; `calls.log` has lines for each call.
    bin: tempfile::TempDir,
}

impl Rig {
    /// The shipped, persistent platform.
    fn start(nodes: &[String], env: &[(&str, &str)]) -> Rig {
        Rig::start_in(Mode::Persistent, nodes, env)
    }

    fn start_in(mode: Mode, nodes: &[String], env: &[(&str, &str)]) -> Rig {
        let real = real_ipmipower();
        let bin = tempfile::Builder::new()
            .prefix("ipmipower-wrapper")
            .tempdir()
            .unwrap();
        let log = bin.path().join("calls.log");
        std::fs::write(&log, "").unwrap();
        // Each call: its arguments on one line, its pid (exec keeps it),
        // then the modes of the config file and of its directory, and the
        // file's path.
        let script = format!(
            r#"#!/bin/sh
conf=
for arg; do
  case $arg in --config-file=*) conf=${{arg#--config-file=}} ;; esac
done
{{
  printf 'args: %s\n' "$*"
  printf 'pid: %s\n' "$$"
  if [ -n "$conf" ]; then
    printf 'modes: %s %s\n' "$(stat -c %a "$conf")" "$(stat -c %a "$(dirname "$conf")")"
    printf 'conf: %s\n' "$conf"
  fi
}} >>'{log}'
exec '{real}' "$@"
"#,
            log = log.display(),
            real = real.display(),
        );
        let path = super::first_on_path(bin.path(), "ipmipower", &script);
        let mut builder = Server::builder()
            .file("10-ipmipower.yaml", &fragment(mode))
            .file("50-nodes.yaml", &static_nodes(nodes))
            .env("PATH", &path);
        for (k, v) in env {
            builder = builder.env(*k, *v);
        }
        let server = builder.start();
        let token = server.token(&["--role", "operator"]);
        Rig { server, token, bin }
    }

    /// The wrapper's log lines of one kind (`args`, `modes`, `conf`).
    fn logged(&self, kind: &str) -> Vec<String> {
        let prefix = format!("{kind}: ");
        std::fs::read_to_string(self.bin.path().join("calls.log"))
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
            .collect()
    }

    /// The arguments of every ipmipower call so far, one string per call
    /// (persistent: per ipmipower started).
    fn calls(&self) -> Vec<String> {
        self.logged("args")
    }

    /// The pid of every ipmipower started so far.
    fn pids(&self) -> Vec<i32> {
        self.logged("pid")
            .iter()
            .map(|p| p.parse().unwrap_or_else(|e| panic!("pid {p:?}: {e}")))
            .collect()
    }

    /// `power --json ARGS...`: exit code, results by node, whole output.
    fn power(&self, args: &[&str]) -> (i32, BTreeMap<String, Value>, String) {
        results(&self.server, &self.token, args)
    }

    /// The state `power status NODES` reports for each node, by name.
    fn states(&self, nodes: &str) -> BTreeMap<String, String> {
        let (_, r, all) = self.power(&["status", nodes]);
        r.iter()
            .map(|(name, n)| {
                let state = n["state"].as_str().unwrap_or_else(|| panic!("{all}"));
                (name.clone(), state.to_string())
            })
            .collect()
    }
}

/// The installed ipmipower (it lives in /usr/sbin, maybe not on PATH).
fn real_ipmipower() -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join("ipmipower"))
        .find(|p| p.is_file())
        .expect(
            "ipmipower is not installed: run scripts/install-test-deps (it installs freeipmi-tools)",
        )
}

/// The names `bmc01`..`bmcNN` for `n` BMCs.
fn names(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("bmc{i:02}")).collect()
}

/// Each BMC's power as the simulator holds it, by node name.
fn sim_states(sim: &IpmiSim) -> BTreeMap<String, String> {
    names(sim.bmcs.len())
        .into_iter()
        .zip(&sim.bmcs)
        .map(|(name, bmc)| (name, if bmc.power() { "on" } else { "off" }.to_string()))
        .collect()
}

/// Assert that every node in `r` succeeded.
fn assert_all_ok(action: &str, code: i32, r: &BTreeMap<String, Value>, all: &str, server: &Server) {
    assert_eq!(code, 0, "{action}: {all}\nserver log:\n{}", server.log());
    assert!(
        r.values().all(|n| n["success"] == true),
        "{action}: {all}\nserver log:\n{}",
        server.log()
    );
}

/// The `error` of `node` in [`results`].
fn error_of(r: &BTreeMap<String, Value>, node: &str) -> String {
    r[node]["error"].as_str().unwrap_or_default().to_string()
}

/// Sixteen BMCs with one password (from the server's environment): status
/// reads every simulator exactly, on and off change only the asked BMCs,
/// and a restart is one chassis reset that leaves the machine on. The
/// shipped platform does it all with one ipmipower, started once, the BMCs
/// on its stdin, never on its command line.
#[test]
fn ipmipower_status_on_off_restart_of_16_bmcs_in_one_call_each() {
    status_on_off_restart_of_16_bmcs(Mode::Persistent);
}

/// The same without `persistent: true`: each action on all of them is one
/// ipmipower call, the BMCs on its command line.
#[test]
fn ipmipower_one_shot_status_on_off_restart_of_16_bmcs_in_one_call_each() {
    status_on_off_restart_of_16_bmcs(Mode::OneShot);
}

fn status_on_off_restart_of_16_bmcs(mode: Mode) {
    let password = format!("pw{}", &support::random_secret()[..14]);
    let sim = IpmiSim::start_with_password(16, &password);
    let names = names(16);
    let nodes: Vec<String> = names
        .iter()
        .zip(&sim.bmcs)
        .map(|(name, bmc)| node(name, &bmc.addr, &bmc.user, None, &[]))
        .collect();
    for i in [1, 4, 9, 15] {
        sim.bmcs[i].set_power(true);
    }
    let rig = Rig::start_in(mode, &nodes, &[("IPMI_PASSWORD", &password)]);

    let start = Instant::now();
    let states = rig.states("bmc[01-16]");
    let took = start.elapsed();
    assert_eq!(
        states,
        sim_states(&sim),
        "server log:\n{}",
        rig.server.log()
    );
    assert!(
        took < Duration::from_secs(10),
        "status of 16 BMCs took {took:?}"
    );
    let calls = rig.calls();
    assert_eq!(calls.len(), 1, "one ipmipower for 16 BMCs: {calls:#?}");
    for bmc in &sim.bmcs {
        match mode {
            Mode::OneShot => assert!(
                calls[0].contains(&bmc.addr),
                "{} not in {}",
                bmc.addr,
                calls[0]
            ),
            Mode::Persistent => assert!(
                !calls[0].contains(&bmc.addr),
                "hosts go on stdin: {}",
                calls[0]
            ),
        }
    }
    match mode {
        Mode::OneShot => assert!(calls[0].contains("--stat"), "{}", calls[0]),
        // Interactive mode: no action; the session timeout (5 s) and no
        // pings, on its command line.
        Mode::Persistent => assert!(
            !calls[0].contains("--stat")
                && calls[0].contains("--session-timeout=5000")
                && calls[0].contains("--ping-interval=0"),
            "{}",
            calls[0]
        ),
    }

    let (code, r, all) = rig.power(&["on", "bmc[01-08]"]);
    assert_all_ok("on", code, &r, &all, &rig.server);
    assert_eq!(r.len(), 8);
    for (i, bmc) in sim.bmcs.iter().enumerate() {
        assert_eq!(
            bmc.power(),
            i < 8 || [9, 15].contains(&i),
            "bmc{:02}",
            i + 1
        );
    }
    assert!(sim.bmcs[0]
        .set_events()
        .contains(&"set power 1".to_string()));
    assert!(sim.bmcs[8].set_events().is_empty(), "bmc09 was not asked");

    let (code, r, all) = rig.power(&["off", "bmc[05-12]"]);
    assert_all_ok("off", code, &r, &all, &rig.server);
    for (i, bmc) in sim.bmcs.iter().enumerate() {
        assert_eq!(bmc.power(), i < 4 || i == 15, "bmc{:02}", i + 1);
    }

    let before = sim.bmcs[0].set_events();
    let (code, r, all) = rig.power(&["restart", "bmc01", "bmc16"]);
    assert_all_ok("restart", code, &r, &all, &rig.server);
    let after = sim.bmcs[0].set_events();
    assert_eq!(
        &after[before.len()..],
        ["set reset 1"],
        "a restart is one chassis reset"
    );
    assert!(sim.bmcs[0].power(), "a reset leaves the machine on");
    assert!(sim.bmcs[15]
        .set_events()
        .contains(&"set reset 1".to_string()));

    assert_eq!(rig.states("bmc[01-16]"), sim_states(&sim));
    let calls = rig.calls();
    match mode {
        Mode::OneShot => {
            assert_eq!(calls.len(), 5, "one call per action: {calls:#?}");
            for (call, option) in calls
                .iter()
                .zip(["--stat", "--on", "--off", "--reset", "--stat"])
            {
                assert!(call.ends_with(option), "{call}");
            }
        }
        Mode::Persistent => {
            assert_eq!(calls.len(), 1, "one ipmipower for it all: {calls:#?}");
        }
    }
}

/// BMCs with passwords of their own (node variables) go to one group per
/// password, side by side; two nodes of one BMC (the same host, one with
/// the port spelled out) are not confused, since ipmipower answers by host:
/// each gets its own group and its own answer. A node without `ipmi_host`
/// reaches `<node>-bmc`, and one name that does not resolve fails alone.
/// Persistent: one ipmipower per group of the largest chunk, serving any
/// credentials in the requests after it.
#[test]
fn ipmipower_passwords_duplicate_hosts_and_unknown_names() {
    passwords_duplicate_hosts_and_unknown_names(Mode::Persistent);
}

/// The same, one driver run per chunk: one ipmipower call per group.
#[test]
fn ipmipower_one_shot_passwords_duplicate_hosts_and_unknown_names() {
    passwords_duplicate_hosts_and_unknown_names(Mode::OneShot);
}

fn passwords_duplicate_hosts_and_unknown_names(mode: Mode) {
    let sim = IpmiSim::start(4);
    sim.bmcs[2].set_power(true);
    let mut nodes = nodes_for(&sim);
    let b1 = &sim.bmcs[0];
    nodes.push(node_with("twin", b1, &[("ipmi_port", "623")]));
    // No ipmi_host: the platform asks for "nowhere-x7q-bmc", which no
    // resolver knows. Same credentials as bmc01: the same call.
    nodes.push(node("nowhere-x7q", "", &b1.user, Some(&b1.password), &[]));
    let rig = Rig::start_in(mode, &nodes, &[]);

    let (code, r, all) = rig.power(&["status", "bmc[01-04]", "twin", "nowhere-x7q"]);
    assert_eq!(code, 1, "{all}");
    let states: BTreeMap<&str, &str> = r
        .iter()
        .map(|(k, v)| (k.as_str(), v["state"].as_str().unwrap_or("?")))
        .collect();
    assert_eq!(
        states,
        BTreeMap::from([
            ("bmc01", "off"),
            ("bmc02", "off"),
            ("bmc03", "on"),
            ("bmc04", "off"),
            ("twin", "off"),
            ("nowhere-x7q", "unknown"),
        ]),
        "{all}\nserver log:\n{}",
        rig.server.log()
    );
    let error = error_of(&r, "nowhere-x7q");
    assert!(
        error.contains("nowhere-x7q-bmc") && error.contains("host name not found"),
        "{error}"
    );
    // bmc01 and twin share a host: two groups for that password; one each
    // for the other three.
    let calls = rig.calls();
    match mode {
        // And bmc01's call once more after ipmipower stopped at the
        // unknown name.
        Mode::OneShot => {
            assert!((6..=7).contains(&calls.len()), "{calls:#?}");
            let with_b1: Vec<&String> = calls.iter().filter(|c| c.contains(&b1.addr)).collect();
            assert!(
                with_b1.iter().all(|c| c.matches(&b1.addr).count() == 1),
                "one host once per call: {with_b1:#?}"
            );
        }
        // One ipmipower per group, side by side; the host list is set again
        // without the unknown name. No host on a command line.
        Mode::Persistent => {
            assert_eq!(calls.len(), 5, "{calls:#?}");
            assert!(calls.iter().all(|c| !c.contains(&b1.addr)), "{calls:#?}");
        }
    }

    let (code, r, all) = rig.power(&["on", "twin"]);
    assert_all_ok("on", code, &r, &all, &rig.server);
    assert!(b1.power(), "twin is bmc01's machine");
    let (_, r, all) = rig.power(&["status", "bmc01", "twin"]);
    assert_eq!(r["bmc01"]["state"], "on", "{all}");
    assert_eq!(r["twin"]["state"], "on", "{all}");
    if mode == Mode::Persistent {
        assert_eq!(
            rig.calls().len(),
            5,
            "the running ipmipowers serve the next requests, whatever their credentials: {:#?}",
            rig.calls()
        );
    }
}

/// A wrong password or user fails every action with an error saying the
/// BMC refused authentication and naming it, with nothing changed; no
/// password, right or wrong, is on ipmipower's command line, in an API
/// answer, the server log or the audit log. The config file given to
/// ipmipower (persistent: an empty one; the password goes on its stdin) is
/// mode 0600 in a private directory, and gone after the run (persistent:
/// once the server has stopped the driver).
#[test]
fn ipmipower_wrong_password_is_refused_and_never_shown() {
    wrong_password_is_refused_and_never_shown(Mode::Persistent);
}

/// The same, one driver run per chunk: the password is in the config file.
#[test]
fn ipmipower_one_shot_wrong_password_is_refused_and_never_shown() {
    wrong_password_is_refused_and_never_shown(Mode::OneShot);
}

fn wrong_password_is_refused_and_never_shown(mode: Mode) {
    let sim = IpmiSim::start(2);
    let (good_bmc, bad_bmc) = (&sim.bmcs[0], &sim.bmcs[1]);
    let wrong = "Wr0ng-pass-4711";
    let nodes = [
        node_for("good", good_bmc),
        node("bad", &bad_bmc.addr, "admin", Some(wrong), &[]),
        node("nouser", &bad_bmc.addr, "nobody", Some(wrong), &[]),
    ];
    let rig = Rig::start_in(mode, &nodes, &[]);

    let reply = rig.server.get("/?nodes=good,bad", &rig.token);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let attrs: Vec<Value> = reply.json()["data"]
        .as_array()
        .expect("data is a list")
        .iter()
        .map(|d| d["attributes"].clone())
        .collect();
    assert_eq!(attrs[0]["success"], true, "{}", reply.body);
    assert_eq!(attrs[0]["state"], "off");
    assert_eq!(attrs[1]["success"], false, "{}", reply.body);
    assert_eq!(attrs[1]["state"], "unknown");
    let error = attrs[1]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("authentication refused")
            && error.contains(&bad_bmc.addr)
            && error.contains("wrong password"),
        "error {error:?} should say the BMC refused the password"
    );

    let (code, r, all) = rig.power(&["status", "bad", "nouser"]);
    assert_eq!(code, 1, "{all}");
    assert!(
        error_of(&r, "bad").contains("authentication refused"),
        "{all}"
    );
    let error = error_of(&r, "nouser");
    assert!(
        error.contains("authentication refused") && error.contains("'nobody'"),
        "an unknown user is refused as such: {error}"
    );
    for action in ["on", "off", "restart"] {
        let (code, r, all) = rig.power(&[action, "bad"]);
        assert_eq!(code, 1, "{action}: {all}");
        assert_eq!(r["bad"]["success"], false, "{all}");
        assert!(
            error_of(&r, "bad").contains("authentication refused"),
            "{all}"
        );
        assert!(error_of(&r, "bad").contains(&bad_bmc.addr), "{all}");
    }
    // The table names the failure too.
    let (status, table, _) = support::power(&rig.server, &rig.token, &["off", "bad"]);
    assert_eq!(status.code(), Some(1));
    assert!(
        table.contains("Failed to stop") && table.contains("authentication refused"),
        "{table}"
    );
    assert!(bad_bmc.set_events().is_empty(), "nothing ran on the BMC");
    assert!(!bad_bmc.power());

    let body = rig.server.get("/?nodes=good,bad,nouser", &rig.token).body;
    let log = rig.server.log();
    let audit = rig.server.audit_lines().join("\n");
    let calls = rig.calls().join("\n");
    for password in [wrong, good_bmc.password.as_str()] {
        assert!(!body.contains(password), "the API answer shows a password");
        assert!(!log.contains(password), "the server log shows a password");
        assert!(!audit.contains(password), "the audit log shows a password");
        assert!(
            !calls.contains(password),
            "ipmipower's argv holds a password: {calls}"
        );
    }
    for flag in [" -p ", "--password", " -P", " -k ", "--k-g"] {
        assert!(!calls.contains(flag), "ipmipower got {flag}: {calls}");
    }
    let modes = rig.logged("modes");
    assert!(!modes.is_empty());
    assert!(
        modes.iter().all(|m| m == "600 700"),
        "config file and its directory: {modes:?}"
    );
    let confs = rig.logged("conf");
    if mode == Mode::Persistent {
        // The driver keeps running until the server stops it.
        let Rig { server, bin, .. } = rig;
        drop(server);
        drop(bin);
    }
    // A one-shot driver removes them as it exits, which may be just after
    // its last answer has ended the request.
    for conf in confs {
        let dir = Path::new(&conf).parent().unwrap().to_path_buf();
        support::poll(
            &format!("{conf} and its private directory to be removed"),
            Duration::from_secs(10),
            || (!Path::new(&conf).exists() && !dir.exists()).then_some(()),
        );
    }
}

/// Failures carry their class in the batch answer's word: a wrong
/// password and an unknown user are `auth`, answered by one run (one
/// ipmipower call, one-shot: the server never retries credentials); a BMC
/// that does not answer is `unreachable`; the good BMC beside them
/// succeeds.
#[test]
fn ipmipower_failures_are_classed() {
    failures_are_classed(Mode::Persistent);
}

/// The same, one driver run per chunk.
#[test]
fn ipmipower_one_shot_failures_are_classed() {
    failures_are_classed(Mode::OneShot);
}

fn failures_are_classed(mode: Mode) {
    let sim = IpmiSim::start(1);
    let bmc = &sim.bmcs[0];
    let dead = IpmiSim::dead_addr();
    let wrong = "Wr0ng-pass-4711";
    let timeout = [("ipmi_timeout", "1")];
    let nodes = [
        node_for("good", bmc),
        node("bad", &bmc.addr, &bmc.user, Some(wrong), &[]),
        node("nouser", &bmc.addr, "nobody", Some(wrong), &[]),
        node("dead", &dead, &bmc.user, Some(wrong), &timeout),
    ];
    let rig = Rig::start_in(mode, &nodes, &[]);

    let r = api_results(&rig.server, &rig.token, "PATCH", "bad");
    assert_class(&r, "bad", "auth", &["authentication refused", &bmc.addr]);
    if mode == Mode::OneShot {
        assert_eq!(
            rig.calls().len(),
            1,
            "auth is tried once: {:?}",
            rig.calls()
        );
    }
    assert!(bmc.set_events().is_empty());

    let r = api_results(&rig.server, &rig.token, "GET", "good,nouser,dead");
    assert_eq!(r["good"]["success"], true, "{r:?}");
    assert_eq!(r["good"]["error-class"], Value::Null, "{r:?}");
    assert_class(&r, "nouser", "auth", &["'nobody'"]);
    assert_class(&r, "dead", "unreachable", &["unreachable", &dead]);
}

/// A graceful off sends each BMC an ACPI soft off first (`soft` on a
/// running ipmipower's stdin): a machine whose OS honours it is seen off
/// within the grace (no fallback); one that ignores it (ipmi_sim's
/// default) gets a hard off after the grace (fallback).
#[test]
fn ipmipower_graceful_off_soft_off_then_hard_off() {
    graceful_off_soft_then_hard(Mode::Persistent);
}

/// The same, one driver run per chunk: `ipmipower --soft`, then `--off`
/// for the node still on.
#[test]
fn ipmipower_one_shot_graceful_off_soft_off_then_hard_off() {
    graceful_off_soft_then_hard(Mode::OneShot);
}

fn graceful_off_soft_then_hard(mode: Mode) {
    let sim = IpmiSim::start(2);
    let [polite, deaf] = [&sim.bmcs[0], &sim.bmcs[1]];
    polite.set_power(true);
    polite.honour_soft_off();
    deaf.set_power(true);
    let rig = Rig::start_in(
        mode,
        &[node_for("polite", polite), node_for("deaf", deaf)],
        &[],
    );

    let r = graceful_off(&rig.server, &rig.token, "polite,deaf", "2s");
    assert_graceful(&r, "polite", false);
    assert_eq!(r["polite"]["state"], "off", "{}", r["polite"]);
    assert_graceful(&r, "deaf", true);
    assert!(!polite.power() && !deaf.power());
    assert_eq!(polite.set_events(), ["set shutdown 1"], "soft off only");
    assert_eq!(
        deaf.set_events(),
        ["set shutdown 1", "set power 0"],
        "soft off first, then the hard off"
    );
    if mode == Mode::OneShot {
        let calls = rig.calls();
        assert!(calls[0].ends_with("--soft"), "{calls:?}");
        assert!(calls.last().unwrap().ends_with("--off"), "{calls:?}");
    }
}

/// Without `ipmi_password`, the password comes from `IPMI_PASSWORD` in the
/// server's environment; with neither, the node fails at once saying where
/// to set one, and ipmipower is not run (it would use a null password).
#[test]
fn ipmipower_password_from_the_environment_or_none() {
    let sim = IpmiSim::start(1);
    let bmc = &sim.bmcs[0];
    let nodes = [node("envnode", &bmc.addr, &bmc.user, None, &[])];

    let rig = Rig::start(&nodes, &[("IPMI_PASSWORD", &bmc.password)]);
    let (code, r, all) = rig.power(&["on", "envnode"]);
    assert_all_ok("on", code, &r, &all, &rig.server);
    assert!(bmc.power());
    assert_eq!(rig.states("envnode")["envnode"], "on");
    drop(rig);

    let rig = Rig::start(&nodes, &[]);
    let (code, r, all) = rig.power(&["off", "envnode"]);
    assert_eq!(code, 1, "{all}");
    let error = error_of(&r, "envnode");
    assert!(
        error.contains("no IPMI password")
            && error.contains("ipmi_password")
            && error.contains("IPMI_PASSWORD")
            && error.contains(&bmc.addr),
        "{error}"
    );
    assert!(rig.calls().is_empty(), "ipmipower ran: {:?}", rig.calls());
    assert!(bmc.power(), "nothing changed");
}

/// A BMC nothing answers on, in one chunk and one ipmipower call with four
/// live ones: the live answers arrive (streamed per node) long before the
/// dead one, which fails within its `ipmi_timeout`, saying it is
/// unreachable and timed out, never as a killed driver. Meanwhile no
/// process shows the password on its command line.
#[test]
fn ipmipower_dead_bmc_fails_in_bounded_time_while_the_others_answer() {
    let password = format!("pw{}", &support::random_secret()[..14]);
    let sim = IpmiSim::start_with_password(4, &password);
    sim.bmcs[3].set_power(true);
    let dead = IpmiSim::dead_addr();
    let timeout = [("ipmi_timeout", "3")];
    let mut nodes: Vec<String> = names(4)
        .iter()
        .zip(&sim.bmcs)
        .map(|(name, bmc)| node(name, &bmc.addr, &bmc.user, Some(&password), &timeout))
        .collect();
    nodes.push(node("dead", &dead, "admin", Some(&password), &timeout));
    let rig = Rig::start(&nodes, &[]);

    let start = Instant::now();
    let response = rig.server.send(
        "GET",
        "/?nodes=bmc[01-04],dead",
        Some(&rig.token),
        &[("Accept", "application/x-ndjson")],
    );
    assert_eq!(response.status().as_u16(), 200);
    let mut body = response.into_body().into_reader();
    // Watch every command line while the driver waits for the dead BMC.
    let watcher = std::thread::spawn({
        let password = password.clone();
        move || {
            let mut seen = Vec::new();
            let until = Instant::now() + Duration::from_secs(2);
            while Instant::now() < until {
                seen.extend(command_lines_with(&password));
                std::thread::sleep(Duration::from_millis(20));
            }
            seen
        }
    });
    let mut arrivals = Vec::new();
    while let Some(line) = support::read_line(&mut body) {
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        arrivals.push((
            start.elapsed(),
            v["id"].as_str().unwrap_or_default().to_string(),
            v,
        ));
    }
    let seen = watcher.join().unwrap();
    assert!(seen.is_empty(), "command lines with the password: {seen:?}");

    let log = rig.server.log();
    assert_eq!(arrivals.len(), 5, "{arrivals:#?}\nserver log:\n{log}");
    let (dead_at, dead_id, dead_result) = arrivals.last().unwrap();
    assert_eq!(dead_id, "dead", "the dead BMC answers last: {arrivals:#?}");
    for (at, id, v) in &arrivals[..4] {
        assert_eq!(
            v["attributes"]["success"], true,
            "{id}: {v}\nserver log:\n{log}"
        );
        assert!(
            *at + Duration::from_millis(1500) < *dead_at,
            "{id} came at {at:?}, the dead BMC's error at {dead_at:?}"
        );
    }
    let states: Vec<_> = arrivals[..4]
        .iter()
        .map(|(_, id, v)| (id.as_str(), v["attributes"]["state"].as_str().unwrap()))
        .collect::<BTreeMap<_, _>>()
        .into_iter()
        .collect();
    assert_eq!(
        states,
        [
            ("bmc01", "off"),
            ("bmc02", "off"),
            ("bmc03", "off"),
            ("bmc04", "on")
        ]
    );
    let attrs = &dead_result["attributes"];
    assert_eq!(attrs["success"], false);
    assert_eq!(attrs["state"], "unknown");
    let error = attrs["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("unreachable") && error.contains("timed out") && error.contains(&dead),
        "error {error:?} should say the BMC is unreachable"
    );
    assert!(!error.contains("driver killed"), "{error}");
    assert!(
        *dead_at < Duration::from_secs(10),
        "the dead BMC took {dead_at:?} (ipmi_timeout 3 s)"
    );
    assert_eq!(rig.calls().len(), 1, "{:#?}", rig.calls());

    let (code, r, all) = rig.power(&["off", "dead", "bmc04"]);
    assert_eq!(code, 1, "{all}");
    assert_eq!(r["bmc04"]["success"], true, "{all}");
    assert!(error_of(&r, "dead").contains("unreachable"), "{all}");
    assert!(!sim.bmcs[3].power());
}

/// The shipped (persistent) platform starts one ipmipower and keeps it:
/// successive requests, statuses and actions, all go through it. When it
/// dies between requests, the next request starts a fresh one and is
/// answered as usual; when it stops answering, the request's nodes fail
/// within their ipmi_timeout and the driver's 5 s of grace, saying so
/// (never as a killed driver), and the next request starts a fresh one.
#[test]
fn ipmipower_persistent_reuses_one_ipmipower_and_replaces_a_dead_or_hung_one() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let password = format!("pw{}", &support::random_secret()[..14]);
    let sim = IpmiSim::start_with_password(4, &password);
    let timeout = [("ipmi_timeout", "2")];
    let nodes: Vec<String> = names(4)
        .iter()
        .zip(&sim.bmcs)
        .map(|(name, bmc)| node(name, &bmc.addr, &bmc.user, None, &timeout))
        .collect();
    let rig = Rig::start(&nodes, &[("IPMI_PASSWORD", &password)]);

    assert_eq!(rig.states("bmc[01-04]"), sim_states(&sim));
    let (code, r, all) = rig.power(&["on", "bmc[02-03]"]);
    assert_all_ok("on", code, &r, &all, &rig.server);
    assert_eq!(rig.states("bmc[01-04]"), sim_states(&sim));
    let (code, r, all) = rig.power(&["off", "bmc03"]);
    assert_all_ok("off", code, &r, &all, &rig.server);
    let states = rig.states("bmc[01-04]");
    assert_eq!(states, sim_states(&sim));
    assert_eq!(states["bmc02"], "on");
    assert_eq!(states["bmc03"], "off");
    let pids = rig.pids();
    assert_eq!(
        pids.len(),
        1,
        "one ipmipower for five requests: {:#?}",
        rig.calls()
    );

    // Killed between requests: replaced before use, nothing fails.
    kill(Pid::from_raw(pids[0]), Signal::SIGKILL).unwrap();
    assert_eq!(rig.states("bmc[01-04]"), sim_states(&sim));
    let pids = rig.pids();
    assert_eq!(pids.len(), 2, "{:#?}", rig.calls());

    // Stopped: the request fails in bounded time, saying why.
    kill(Pid::from_raw(pids[1]), Signal::SIGSTOP).unwrap();
    let start = Instant::now();
    let (code, r, all) = rig.power(&["status", "bmc[01-04]"]);
    let took = start.elapsed();
    assert_eq!(code, 1, "{all}");
    assert_eq!(r.len(), 4, "{all}");
    for (name, result) in &r {
        let error = result["error"].as_str().unwrap_or_default();
        assert!(
            result["success"] == false
                && error.contains("no answer within 7s")
                && error.contains("restarted"),
            "{name}: {error}\nserver log:\n{}",
            rig.server.log()
        );
        assert!(!error.contains("driver killed"), "{error}");
    }
    assert!(
        took >= Duration::from_secs(6) && took < Duration::from_secs(20),
        "the stopped ipmipower was given up after {took:?} (ipmi_timeout 2 s + 5 s)"
    );
    // The next request: a fresh ipmipower; the stopped one is gone.
    assert_eq!(rig.states("bmc[01-04]"), sim_states(&sim));
    assert_eq!(rig.pids().len(), 3, "{:#?}", rig.calls());
    assert!(
        !Path::new(&format!("/proc/{}", pids[1])).exists(),
        "the stopped ipmipower is still there"
    );
}

/// Groups with credentials of their own in one chunk run side by side on
/// ipmipowers of their own: a wrong password fails only its group, and the
/// other group's answers and actions are right. One ipmipower serves
/// groups with different credentials one after the other: the right
/// password works again after a wrong one.
#[test]
fn ipmipower_persistent_wrong_password_group_does_not_break_another_group() {
    let sim = IpmiSim::start(2);
    let (a, b) = (&sim.bmcs[0], &sim.bmcs[1]);
    b.set_power(true);
    let wrong = "Wr0ng-pass-4711";
    let nodes = [
        node_for("good", a),
        node("bad", &b.addr, &b.user, Some(wrong), &[]),
        node_for("good2", b),
    ];
    let rig = Rig::start(&nodes, &[]);

    let (code, r, all) = rig.power(&["status", "good", "bad"]);
    assert_eq!(code, 1, "{all}");
    assert_eq!(r["good"]["success"], true, "{all}");
    assert_eq!(r["good"]["state"], "off", "{all}");
    let error = error_of(&r, "bad");
    assert!(
        error.contains("authentication refused")
            && error.contains("wrong password")
            && error.contains(&b.addr),
        "{error}"
    );
    let (code, r, all) = rig.power(&["on", "good", "bad"]);
    assert_eq!(code, 1, "{all}");
    assert_eq!(r["good"]["success"], true, "{all}");
    assert!(
        error_of(&r, "bad").contains("authentication refused"),
        "{all}"
    );
    assert!(a.power(), "good was powered on");
    assert!(b.set_events().is_empty(), "nothing ran on bad's BMC");
    let started = rig.pids().len();
    assert!(started <= 2, "{:#?}", rig.calls());

    // One at a time, on one ipmipower: wrong, right, right, wrong, right.
    for (name, want) in [
        ("bad", None),
        ("good2", Some("on")),
        ("good", Some("on")),
        ("bad", None),
        ("good2", Some("on")),
    ] {
        let (_, r, all) = rig.power(&["status", name]);
        match want {
            Some(state) => assert_eq!(r[name]["state"], state, "{name}: {all}"),
            None => assert!(
                error_of(&r, name).contains("authentication refused"),
                "{name}: {all}"
            ),
        }
    }
    assert_eq!(
        rig.pids().len(),
        started,
        "the requests one at a time start no ipmipower: {:#?}",
        rig.calls()
    );
    let calls = rig.calls().join("\n");
    assert!(!calls.contains(wrong) && !calls.contains(&a.password));
}

/// BMCs with different passwords are on different lanes (one ipmipower
/// each), whose relays answer into the driver's one stdout at the same
/// moment: every answer still reaches the server whole. (mawk writes each
/// piece of a `printf` apart; two lanes once mixed "4 off" and "3 on" into
/// "4 off3" and " on", and the server waited out the driver's timeout.)
#[test]
fn ipmipower_persistent_lanes_answering_at_once_never_mix_their_lines() {
    const BMCS: usize = 6;
    const ROUNDS: usize = 60;
    let sim = IpmiSim::start(BMCS);
    for bmc in sim.bmcs.iter().step_by(2) {
        bmc.set_power(true);
    }
    let nodes = nodes_for(&sim);
    let rig = Rig::start(&nodes, &[]);

    let all = format!("bmc[01-{BMCS:02}]");
    // A mixed line leaves its nodes unanswered: "unknown" after the
    // driver's timeout.
    for round in 0..ROUNDS {
        assert_eq!(rig.states(&all), sim_states(&sim), "round {round}");
    }
    assert_eq!(
        rig.pids().len(),
        BMCS,
        "one lane a password: {:#?}",
        rig.calls()
    );
    let log = rig.server.log();
    assert!(!log.contains("line ignored"), "{log}");
}

/// A password ipmipower's interactive parser cannot take as one word (it
/// has a space) goes, for its group, to a one-shot ipmipower call with a
/// private config file, removed right after; the other groups use the
/// running ipmipower. (ipmi_sim cannot hold such a password: the test sends
/// a wrong one, which the BMC must get whole and refuse.)
#[test]
fn ipmipower_persistent_password_with_a_space_goes_through_a_config_file() {
    let sim = IpmiSim::start(1);
    let bmc = &sim.bmcs[0];
    let spaced = "Wr0ng pass 4711";
    let nodes = [
        node_for("good", bmc),
        node("spaced", &bmc.addr, &bmc.user, Some(spaced), &[]),
    ];
    let rig = Rig::start(&nodes, &[]);

    let (code, r, all) = rig.power(&["status", "good", "spaced"]);
    assert_eq!(code, 1, "{all}");
    assert_eq!(r["good"]["state"], "off", "{all}");
    assert!(
        error_of(&r, "spaced").contains("authentication refused"),
        "{all}"
    );
    let calls = rig.calls();
    assert_eq!(calls.len(), 2, "{calls:#?}");
    let one_shot: Vec<&String> = calls.iter().filter(|c| c.contains("--stat")).collect();
    assert_eq!(one_shot.len(), 1, "{calls:#?}");
    assert!(one_shot[0].contains(&bmc.addr), "{calls:#?}");
    assert!(!calls.join("\n").contains("pass 4711"), "{calls:#?}");
    let modes = rig.logged("modes");
    assert!(modes.iter().all(|m| m == "600 700"), "{modes:?}");
    // (Removed right after the call's last answer: not kept while the
    // driver runs.)
    for conf in rig.logged("conf") {
        if !conf.ends_with("/empty.conf") {
            support::poll(
                &format!("{conf} to be removed"),
                Duration::from_secs(5),
                || (!Path::new(&conf).exists()).then_some(()),
            );
        }
    }
}

/// Every process whose command line holds `secret` (pid and command line).
fn command_lines_with(secret: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let path = entry.path().join("cmdline");
        if let Ok(bytes) = std::fs::read(&path) {
            let line = String::from_utf8_lossy(&bytes).replace('\0', " ");
            if line.contains(secret) {
                found.push(format!("{}: {line}", entry.file_name().to_string_lossy()));
            }
        }
    }
    found
}

/// The other variables reach ipmipower: IPMI 1.5 (`ipmi_interface: lan`)
/// works without a workaround and refuses a wrong password; lanplus without
/// `opensesspriv` is refused by ipmi_sim with an error naming the
/// workaround; a cipher suite ipmi_sim does not offer is named; values that
/// would not be a host or a number fail alone, saying which variable.
#[test]
fn ipmipower_interface_cipher_workaround_and_bad_values() {
    let sim = IpmiSim::start(3);
    let [a, b, c] = [&sim.bmcs[0], &sim.bmcs[1], &sim.bmcs[2]];
    let lan = ("ipmi_interface", "lan");
    let no_workaround = ("ipmi_workaround", "");
    let nodes = [
        node(
            "v15",
            &a.addr,
            &a.user,
            Some(&a.password),
            &[lan, no_workaround],
        ),
        node(
            "v15bad",
            &a.addr,
            &a.user,
            Some("not-the-pw"),
            &[lan, no_workaround, ("ipmi_timeout", "1")],
        ),
        node(
            "nowork",
            &b.addr,
            &b.user,
            Some(&b.password),
            &[no_workaround],
        ),
        node(
            "c17",
            &c.addr,
            &c.user,
            Some(&c.password),
            &[("ipmi_cipher", "17")],
        ),
        node("badhost", "bmc[1-2]", "admin", Some("x"), &[]),
        node(
            "badtime",
            &c.addr,
            "admin",
            Some("x"),
            &[("ipmi_timeout", "soon")],
        ),
    ];
    let rig = Rig::start(&nodes, &[]);

    // IPMI 1.5: ipmi_sim refuses lanplus without opensesspriv (as nowork
    // shows below), so this success is the LAN driver type, which the
    // persistent driver sets on ipmipower's stdin.
    let (code, r, all) = rig.power(&["on", "v15"]);
    assert_all_ok("on", code, &r, &all, &rig.server);
    assert!(a.power());

    let (code, r, all) = rig.power(&["status", "v15bad", "nowork", "c17", "badhost", "badtime"]);
    assert_eq!(code, 1, "{all}");
    assert!(r.values().all(|n| n["success"] == false), "{all}");
    assert!(
        error_of(&r, "v15bad").contains("authentication refused"),
        "{all}"
    );
    let error = error_of(&r, "nowork");
    assert!(
        error.contains(&b.addr) && error.contains("opensesspriv"),
        "{error}"
    );
    let error = error_of(&r, "c17");
    assert!(
        error.contains(&c.addr) && error.contains("cipher suite 17"),
        "{error}"
    );
    assert!(error_of(&r, "badhost").contains("ipmi_host"), "{all}");
    assert!(error_of(&r, "badtime").contains("ipmi_timeout"), "{all}");
    assert!(
        rig.calls()
            .iter()
            .all(|c| !c.contains("bmc[") && !c.contains("soon")),
        "{:?}",
        rig.calls()
    );
    assert!(!b.power() && !c.power(), "nothing changed");
}

/// The shipped fragment declares a persistent batch platform on the
/// ipmipower driver, with every variable the driver reads and a timeout;
/// the driver is executable, serves, and never passes a password on
/// ipmipower's command line.
#[test]
fn ipmipower_shipped_fragment_and_driver() {
    let yaml: serde_yaml::Value = serde_yaml::from_str(&shipped("10-ipmipower.yaml")).unwrap();
    let platform = &yaml["platforms"]["ipmipower"];
    assert_eq!(platform["driver"].as_str(), Some("ipmipower"));
    assert_eq!(platform["batch"].as_bool(), Some(true));
    assert_eq!(platform["persistent"].as_bool(), Some(true));
    assert!(platform["timeout"].as_str().is_some(), "{platform:?}");
    let variables: Vec<&str> = platform["variables"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let driver = std::fs::read_to_string(support::checkout().join("drivers/ipmipower")).unwrap();
    for var in [
        "ipmi_host",
        "ipmi_port",
        "ipmi_username",
        "ipmi_password",
        "ipmi_cipher",
        "ipmi_workaround",
        "ipmi_interface",
        "ipmi_timeout",
    ] {
        assert!(
            variables.contains(&var),
            "{var} not declared: {variables:?}"
        );
        assert!(
            driver.contains(&format!("fields[at_{var}]")),
            "the driver does not read {var}"
        );
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(support::checkout().join("drivers/ipmipower"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "drivers/ipmipower is not executable");
    assert!(
        driver.contains("--config-file="),
        "the password goes in a config file"
    );
    assert!(driver.contains("serve"), "the driver has no serve mode");
    for flag in ["--password", " -p ", "-P"] {
        assert!(
            !driver
                .lines()
                .any(|l| l.contains(flag) && !l.trim_start().starts_with('#')),
            "the driver uses {flag}"
        );
    }
}

/// The persistent driver's relay (the awk program `relay` in
/// `drivers/ipmipower`), run alone on what a lane's fifo carries: the
/// driver's node map, ipmipower's prompts and answers. Its stdout is a
/// packet-mode pipe (`O_DIRECT`: a read returns one write), so the test
/// sees that each answer line leaves in one write, whole, as lanes sharing
/// the driver's stdout need. Everything else goes to the driver on `rep`.
#[test]
fn ipmipower_relay_answers_each_line_in_one_write_and_reports_the_rest() {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};

    let program = driver_awk("relay");
    let dir = tempfile::tempdir().unwrap();
    let rep = dir.path().join("rep");
    let (packets, out) = nix::unistd::pipe2(nix::fcntl::OFlag::O_DIRECT).unwrap();
    let mut relay = Command::new("awk")
        .args(awk_interactive())
        .arg("-v")
        .arg(format!("rep={}", rep.display()))
        .arg(program)
        .stdin(Stdio::piped())
        .stdout(Stdio::from(out))
        .spawn()
        .unwrap();

    // Between commands, then a status of three BMCs (one refuses, one is
    // answered in capitals, an unknown host answers too), then an on of
    // two, of which one answers before ipmipower's output ends. Prompts
    // land anywhere, the last one unterminated.
    let input = "ipmipower> hostname: h1,h2,h3\n\
                 ipmipower> \u{1e}stat 3\n\u{1f}h1 0 11\n\u{1f}h2 1 12\n\u{1f}h3 2 13\n\
                 h1: on\nh9: on\nh2: password invalid\nH3: off\n\
                 ipmipower> \u{1e}on 2\n\u{1f}h1 0 21\n\u{1f}h3 2 23\n\
                 h3: ok\nipmipower> ";
    let mut stdin = relay.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);

    let mut packets = std::fs::File::from(packets);
    let mut writes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = packets.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        writes.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(relay.wait().unwrap().success());
    assert_eq!(
        writes,
        ["11 on\n", "13 off\n", "23 ok\n"],
        "one write a line"
    );
    assert_eq!(
        std::fs::read_to_string(&rep).unwrap(),
        "p hostname: h1,h2,h3\nu h9: on\nx 1 password invalid\ndone\ngone 0\n",
        "to the driver: the line between commands, the unknown host, the \
         answer to explain, the end of the status, and h1 (place 0) left \
         unanswered by the on"
    );
}

/// The awk program the driver keeps in the shell variable `name`.
fn driver_awk(name: &str) -> String {
    let driver = std::fs::read_to_string(support::checkout().join("drivers/ipmipower")).unwrap();
    let opening = format!("\n{name}='");
    let start = driver
        .find(&opening)
        .unwrap_or_else(|| panic!("no {name} program in the driver"))
        + opening.len();
    driver[start..start + driver[start..].find('\'').unwrap()].to_string()
}

/// awk's options as the driver runs its programs: mawk reads its input a
/// line at a time only when told.
fn awk_interactive() -> &'static [&'static str] {
    let version = std::process::Command::new("awk")
        .args(["-W", "version"])
        .output()
        .unwrap();
    if String::from_utf8_lossy(&version.stdout).contains("mawk") {
        &["-W", "interactive"]
    } else {
        &[]
    }
}

/// The persistent driver's front passes a chunk that repeats the one before
/// it but for its ids as one line, the action and the ids; anything else
/// whole, as it came: a changed value, an id that is not a plain word, a
/// header whose first column is not the id, and a chunk cut short by the
/// end of input.
#[test]
fn ipmipower_front_passes_a_repeat_as_its_ids_and_anything_else_whole() {
    use std::io::Write;
    use std::process::{Command, Stdio};

    let mut front = Command::new("awk")
        .args(awk_interactive())
        .arg(driver_awk("front"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let head = "id\tnode\tipmi_host\n";
    let first = format!("status\n{head}1\tn1\th1\n2\tn2\th2\n\n");
    let moved = format!("status\n{head}7\tn1\th1\n8\tn2\th9\n\n");
    let odd_id = format!("status\n{head}9\tn1\th1\n1 0\tn2\th9\n\n");
    let id_second = "status\nnode\tid\nn1\t11\n\n";
    let id_alone = "status\nid\tnode\n13\n\n";
    let cut = format!("status\n{head}15\tn1\th1\n");
    let input = [
        first.as_str(),
        &format!("status\n{head}3\tn1\th1\n4\tn2\th2\n\n"),
        // An empty line between chunks is no chunk.
        "\n",
        &format!("power_on\n{head}5\tn1\th1\n6\tn2\th2\n\n"),
        &moved,
        &odd_id,
        id_second,
        "status\nnode\tid\nn1\t12\n\n",
        id_alone,
        "status\nid\tnode\n14\n\n",
        &cut,
    ]
    .concat();
    let mut stdin = front.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    let out = front.wait_with_output().unwrap();
    assert!(out.status.success());
    let expected = [
        first.as_str(),
        "\u{1e}status\t3\t4\n",
        "\u{1e}power_on\t5\t6\n",
        &moved,
        &odd_id,
        id_second,
        "status\nnode\tid\nn1\t12\n\n",
        id_alone,
        "\u{1e}status\t14\n",
        &cut,
    ]
    .concat();
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
}

/// A status asked again and again reaches the driver's loop as ids alone
/// (the front); each answer is still its node's own: when every node of
/// the chunk before went into a call (its calls are held), when one was
/// refused at its check (the chunk is checked again, node by node), and
/// when the power changed between two repeats. No ipmipower is started
/// again.
#[test]
fn ipmipower_persistent_repeated_chunks_answer_each_node_right() {
    let sim = IpmiSim::start(2);
    sim.bmcs[1].set_power(true);
    let mut nodes = nodes_for(&sim);
    let b1 = &sim.bmcs[0];
    nodes.push(node_with("badtime", b1, &[("ipmi_timeout", "soon")]));
    let rig = Rig::start(&nodes, &[]);

    let expect = |bmc01: &str, bmc02: &str| {
        BTreeMap::from([
            ("bmc01".to_string(), bmc01.to_string()),
            ("bmc02".to_string(), bmc02.to_string()),
        ])
    };
    assert_eq!(rig.states("bmc[01-02]"), expect("off", "on"));
    // One lane a password: the simulators have a password each.
    let lanes = rig.calls();
    for _ in 0..2 {
        assert_eq!(rig.states("bmc[01-02]"), expect("off", "on"));
    }
    sim.bmcs[0].set_power(true);
    assert_eq!(rig.states("bmc[01-02]"), expect("on", "on"));

    for round in 0..4 {
        if round == 2 {
            sim.bmcs[1].set_power(false);
        }
        let (code, r, all) = rig.power(&["status", "bmc[01-02]", "badtime"]);
        assert_eq!(code, 1, "round {round}: {all}");
        assert_eq!(r["bmc01"]["state"], "on", "round {round}: {all}");
        let bmc02 = if round < 2 { "on" } else { "off" };
        assert_eq!(r["bmc02"]["state"], bmc02, "round {round}: {all}");
        assert!(
            error_of(&r, "badtime").contains("ipmi_timeout 'soon'"),
            "round {round}: {all}"
        );
    }
    assert_eq!(
        rig.calls(),
        lanes,
        "the same ipmipowers served every repeat"
    );
}

/// A repeat on a lane that holds its call's hosts hands the relay only the
/// new ids, and the relay answers them by the places it holds. Two calls
/// with the same settings and hosts (two nodes on each BMC: ipmipower
/// answers a host once a command) run side by side, one in the driver and
/// one in a job; when a lane dies they land on each other's lanes, and
/// every answer still goes to its own node.
#[test]
fn ipmipower_persistent_repeats_keep_each_answer_on_its_node() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let password = format!("pw{}", &support::random_secret()[..14]);
    let sim = IpmiSim::start_with_password(2, &password);
    sim.bmcs[1].set_power(true);
    let nodes: Vec<String> = ["a1", "a2", "b1", "b2"]
        .iter()
        .zip(sim.bmcs.iter().cycle())
        .map(|(name, bmc)| node(name, &bmc.addr, &bmc.user, None, &[]))
        .collect();
    let rig = Rig::start(&nodes, &[("IPMI_PASSWORD", &password)]);
    let expect = |first: &str, second: &str| {
        ["a1", "a2", "b1", "b2"]
            .iter()
            .zip([first, second, first, second])
            .map(|(n, s)| (n.to_string(), s.to_string()))
            .collect::<BTreeMap<_, _>>()
    };
    for _ in 0..3 {
        assert_eq!(rig.states("a[1-2],b[1-2]"), expect("off", "on"));
    }
    let pids = rig.pids();
    assert_eq!(pids.len(), 2, "a lane each call: {:#?}", rig.calls());
    // The lane of the first call dies between two repeats.
    kill(Pid::from_raw(pids[0]), Signal::SIGKILL).unwrap();
    for round in 0..4 {
        if round == 2 {
            sim.bmcs[0].set_power(true);
            sim.bmcs[1].set_power(false);
        }
        let expected = if round < 2 {
            expect("off", "on")
        } else {
            expect("on", "off")
        };
        assert_eq!(
            rig.states("a[1-2],b[1-2]"),
            expected,
            "round {round}; server log:\n{}",
            rig.server.log()
        );
    }
    assert_eq!(rig.pids().len(), 3, "one lane replaced: {:#?}", rig.calls());
}
