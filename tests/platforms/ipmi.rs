//! The shipped `ipmi` platform (`topology.d/10-ipmi.yaml`) against real
//! BMCs, OpenIPMI's `ipmi_sim` (`tests/support/ipmi_sim.rs`), through the
//! real server and the real `power` client.
//!
//! Each simulated BMC has its own loopback address on port 623, so nodes
//! point at it with `ipmi_host` and ask for cipher suite 3 with
//! `ipmi_cipher`, as an admin would for BMCs not named `<node>-bmc`.

use super::{
    api_results, assert_class, assert_graceful, bmc_vars, calls, counting_wrapper, graceful_off,
    node_entry, shipped, start_server, static_nodes,
};
use crate::support::ipmi_sim::{Bmc, IpmiSim};
use crate::support::{self, Server};
use serde_json::Value;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

/// A node on the ipmi platform reaching the BMC at `addr` as `user` with
/// `password` (no `ipmi_password` at all when `None`), cipher suite 3.
fn node(name: &str, addr: &str, user: &str, password: Option<&str>) -> String {
    node_with(name, addr, user, password, &[("ipmi_cipher", "3")])
}

/// [`node`] with other `extra` variables instead of the cipher suite.
fn node_with(
    name: &str,
    addr: &str,
    user: &str,
    password: Option<&str>,
    extra: &[(&str, &str)],
) -> String {
    let mut vars = bmc_vars(addr, user, password);
    vars.extend_from_slice(extra);
    node_entry(name, "ipmi", &vars)
}

/// A node with `bmc`'s own address and credentials.
fn node_for(name: &str, bmc: &Bmc) -> String {
    node(name, &bmc.addr, &bmc.user, Some(&bmc.password))
}

/// A server with the shipped fragment and these nodes, and `env` for it.
fn server(nodes: &[String], env: &[(&str, &str)]) -> Server {
    start_server(
        "10-ipmi.yaml",
        &[],
        &static_nodes(nodes),
        env.iter().copied(),
    )
}

/// Run the real `power ARGS...`; its exit status and its table as
/// `(node, word, error)` rows (the columns are separated by two or more
/// spaces; the error column is empty on success).
fn power(server: &Server, token: &str, args: &[&str]) -> (ExitStatus, Vec<[String; 3]>) {
    let (status, stdout, stderr) = support::power(server, token, args);
    let rows = stdout
        .lines()
        .map(|line| {
            let mut cols = line
                .split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_string);
            [(); 3].map(|()| cols.next().unwrap_or_default())
        })
        .collect::<Vec<_>>();
    assert!(
        !rows.is_empty(),
        "power {args:?} printed nothing ({status}); stderr: {stderr}\nserver log:\n{}",
        server.log()
    );
    (status, rows)
}

/// `(node, word)` of every row, for comparing successes.
fn words(rows: &[[String; 3]]) -> Vec<(&str, &str)> {
    rows.iter()
        .map(|r| (r[0].as_str(), r[1].as_str()))
        .collect()
}

/// Each BMC's power, as the simulator holds it.
fn powers(sim: &IpmiSim) -> Vec<bool> {
    sim.bmcs.iter().map(Bmc::power).collect()
}

/// The API's result attributes for `GET /?nodes=NODES` (status).
fn api_status(server: &Server, token: &str, nodes: &str) -> (String, Vec<Value>) {
    let reply = server.get(&format!("/?nodes={nodes}"), token);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let attrs = reply.json()["data"]
        .as_array()
        .expect("data is a list")
        .iter()
        .map(|d| d["attributes"].clone())
        .collect();
    (reply.body, attrs)
}

/// The simulator itself: ipmitool sees and changes the state file's power,
/// and a reset is recorded. Every other test here stands on this.
#[test]
fn ipmi_simulated_bmcs_answer_ipmitool() {
    let sim = IpmiSim::start(2);
    assert_ne!(sim.bmcs[0].addr, sim.bmcs[1].addr);
    let bmc = &sim.bmcs[1];
    assert!(!bmc.power());
    let (status, out, err) = bmc.ipmitool(&["chassis", "power", "on"]);
    assert!(status.success(), "{out}{err}");
    assert!(bmc.power());
    let (_, out, _) = bmc.ipmitool(&["chassis", "power", "status"]);
    assert_eq!(out.trim(), "Chassis Power is on");
    bmc.set_power(false);
    let (_, out, _) = bmc.ipmitool(&["chassis", "power", "status"]);
    assert_eq!(out.trim(), "Chassis Power is off");
    bmc.ipmitool(&["chassis", "power", "reset"]);
    assert!(
        bmc.set_events().contains(&"set reset 1".to_string()),
        "{:?}",
        bmc.events()
    );
    assert!(!sim.bmcs[0].power());
    assert!(sim.bmcs[0].set_events().is_empty());
}

/// Four BMCs are reported, switched on and off and restarted through the
/// client with the shipped platform, and each simulated BMC follows: only
/// the asked nodes change, `status` maps on and off exactly (off is exit
/// 111), and a restart is a chassis reset.
#[test]
fn ipmi_status_on_off_restart_through_the_client() {
    let sim = IpmiSim::start(4);
    sim.bmcs[1].set_power(true);
    sim.bmcs[3].set_power(true);
    let nodes: Vec<String> = (0..4)
        .map(|i| node_for(&format!("bmc{}", i + 1), &sim.bmcs[i]))
        .collect();
    let server = server(&nodes, &[]);
    let token = server.token(&["--role", "operator"]);

    let (status, rows) = power(&server, &token, &["status", "bmc[1-4]"]);
    assert_eq!(
        words(&rows),
        [
            ("bmc1", "Off"),
            ("bmc2", "On"),
            ("bmc3", "Off"),
            ("bmc4", "On")
        ],
        "{rows:?}\nserver log:\n{}",
        server.log()
    );
    assert!(status.success());
    let (_, attrs) = api_status(&server, &token, "bmc[1-2]");
    assert_eq!(attrs[0]["state"], "off");
    assert_eq!(attrs[0]["exit-code"], 111);
    assert_eq!(attrs[1]["state"], "on");
    assert_eq!(attrs[1]["exit-code"], 0);

    let (status, rows) = power(&server, &token, &["on", "bmc[1-3]"]);
    assert_eq!(
        words(&rows),
        [
            ("bmc1", "Starting"),
            ("bmc2", "Starting"),
            ("bmc3", "Starting")
        ],
        "{rows:?}"
    );
    assert!(status.success());
    assert_eq!(powers(&sim), [true, true, true, true]);
    assert!(sim.bmcs[0].set_events().contains(&"set power 1".into()));

    let (status, rows) = power(&server, &token, &["off", "bmc2", "bmc4"]);
    assert_eq!(
        words(&rows),
        [("bmc2", "Stopping"), ("bmc4", "Stopping")],
        "{rows:?}"
    );
    assert!(status.success());
    assert_eq!(powers(&sim), [true, false, true, false]);

    let (status, rows) = power(&server, &token, &["restart", "bmc1"]);
    assert_eq!(words(&rows), [("bmc1", "Restarting")], "{rows:?}");
    assert!(status.success());
    assert_eq!(
        sim.bmcs[0].set_events(),
        ["set power 1", "set reset 1"],
        "a restart is one chassis reset"
    );
    assert_eq!(sim.bmcs[2].set_events(), ["set power 1"]);
    assert!(sim.bmcs[0].power(), "a reset leaves the machine on");

    let (status, rows) = power(&server, &token, &["status", "bmc[1-4]"]);
    assert_eq!(
        words(&rows),
        [
            ("bmc1", "On"),
            ("bmc2", "Off"),
            ("bmc3", "On"),
            ("bmc4", "Off")
        ],
        "{rows:?}"
    );
    assert!(status.success());
}

/// A wrong password fails every action with an error saying the BMC
/// refused authentication, in the API's `error` and the client's table,
/// with exit 1 and nothing changed; and no password, right or wrong,
/// appears in an API answer or the server log.
#[test]
fn ipmi_wrong_password_is_refused_and_never_shown() {
    let sim = IpmiSim::start(2);
    let wrong = "Wr0ng-pass-4711";
    let nodes = [
        node(
            "good",
            &sim.bmcs[0].addr,
            "admin",
            Some(&sim.bmcs[0].password),
        ),
        node("bad", &sim.bmcs[1].addr, "admin", Some(wrong)),
        node("nouser", &sim.bmcs[1].addr, "nobody", Some(wrong)),
    ];
    let server = server(&nodes, &[]);
    let token = server.token(&["--role", "operator"]);

    let (body, attrs) = api_status(&server, &token, "good,bad");
    assert_eq!(attrs[0]["success"], true, "{body}");
    assert_eq!(attrs[0]["state"], "off");
    assert_eq!(attrs[1]["success"], false, "{body}");
    assert_eq!(attrs[1]["state"], "unknown");
    let error = attrs[1]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("authentication refused") && error.contains(&sim.bmcs[1].addr),
        "error {error:?} should say the BMC refused authentication"
    );

    let (status, rows) = power(&server, &token, &["status", "bad", "nouser"]);
    assert_eq!(status.code(), Some(1));
    assert_eq!(words(&rows), [("bad", "Unknown"), ("nouser", "Unknown")]);
    assert!(rows[0][2].contains("authentication refused"), "{rows:?}");
    assert!(
        rows[1][2].contains("authentication refused") && rows[1][2].contains("'nobody'"),
        "an unknown user is refused as such: {rows:?}"
    );
    for (action, word) in [
        ("on", "Failed to start"),
        ("off", "Failed to stop"),
        ("restart", "Failed to restart"),
    ] {
        let (status, rows) = power(&server, &token, &[action, "bad"]);
        assert_eq!(status.code(), Some(1), "{action}: {rows:?}");
        assert_eq!(rows[0][1], word, "{rows:?}");
        assert!(rows[0][2].contains("authentication refused"), "{rows:?}");
    }
    assert!(
        sim.bmcs[1].set_events().is_empty(),
        "nothing ran on the BMC"
    );
    assert!(!sim.bmcs[1].power());

    let (body, _) = api_status(&server, &token, "good,bad");
    let log = server.log();
    let audit = server.audit_lines().join("\n");
    // The generated driver script holds commands, never a node's values.
    let scripts: String = walk(&server.dir.path().join("runtime"))
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect();
    assert!(
        scripts.contains("ipmitool"),
        "the generated script was found"
    );
    for password in [wrong, sim.bmcs[0].password.as_str()] {
        assert!(!body.contains(password), "the API answer shows a password");
        assert!(!log.contains(password), "the server log shows a password");
        assert!(!audit.contains(password), "the audit log shows a password");
        assert!(
            !scripts.contains(password),
            "a driver script holds a password"
        );
    }
}

/// Without `ipmi_password` on the node, the password comes from
/// `IPMI_PASSWORD` in the server's environment, as in the reference.
#[test]
fn ipmi_password_from_the_server_environment() {
    let sim = IpmiSim::start(1);
    let bmc = &sim.bmcs[0];
    let server = server(
        &[node("envnode", &bmc.addr, &bmc.user, None)],
        &[("IPMI_PASSWORD", &bmc.password)],
    );
    let token = server.token(&["--role", "operator"]);
    let (status, rows) = power(&server, &token, &["on", "envnode"]);
    assert_eq!(words(&rows), [("envnode", "Starting")], "{rows:?}");
    assert!(status.success());
    assert!(bmc.power());
    let (_, rows) = power(&server, &token, &["status", "envnode"]);
    assert_eq!(words(&rows), [("envnode", "On")]);
}

/// A node with no password anywhere fails at once, saying where to set
/// one, instead of ipmitool prompting on a terminal it does not have.
#[test]
fn ipmi_missing_password_says_where_to_set_it() {
    let sim = IpmiSim::start(1);
    let server = server(&[node("nopass", &sim.bmcs[0].addr, "admin", None)], &[]);
    let token = server.token(&["--role", "operator"]);
    let (status, rows) = power(&server, &token, &["on", "nopass"]);
    assert_eq!(status.code(), Some(1));
    assert_eq!(rows[0][1], "Failed to start");
    assert!(
        rows[0][2].contains("no IPMI password") && rows[0][2].contains("ipmi_password"),
        "{rows:?}"
    );
    assert!(sim.bmcs[0].set_events().is_empty());
}

/// The interface and cipher suite variables reach ipmitool: IPMI 1.5
/// (`ipmi_interface: lan`) works and refuses a wrong password as such;
/// ipmitool's own cipher choice works against ipmi_sim (slowly, see the
/// docs' quirks); a cipher suite the BMC does not offer is named.
#[test]
fn ipmi_interface_and_cipher_variables() {
    let sim = IpmiSim::start(3);
    let [a, b, c] = [&sim.bmcs[0], &sim.bmcs[1], &sim.bmcs[2]];
    let lan = [("ipmi_interface", "lan")];
    let nodes = [
        node_with("v15", &a.addr, &a.user, Some(&a.password), &lan),
        node_with("v15bad", &a.addr, &a.user, Some("not-the-password"), &lan),
        node_with("auto", &b.addr, &b.user, Some(&b.password), &[]),
        node_with(
            "c17",
            &c.addr,
            &c.user,
            Some(&c.password),
            &[("ipmi_cipher", "17")],
        ),
    ];
    let server = server(&nodes, &[]);
    let token = server.token(&["--role", "operator"]);

    let (status, rows) = power(&server, &token, &["on", "v15", "auto"]);
    assert_eq!(
        words(&rows),
        [("v15", "Starting"), ("auto", "Starting")],
        "{rows:?}\nserver log:\n{}",
        server.log()
    );
    assert!(status.success());
    assert_eq!(powers(&sim), [true, true, false]);

    let (status, rows) = power(&server, &token, &["status", "v15bad", "c17"]);
    assert_eq!(status.code(), Some(1));
    assert_eq!(words(&rows), [("v15bad", "Unknown"), ("c17", "Unknown")]);
    assert!(rows[0][2].contains("authentication refused"), "{rows:?}");
    assert!(rows[1][2].contains("refused cipher suite 17"), "{rows:?}");
}

/// A BMC address nothing answers on fails within seconds (the platform's
/// ipmitool timeout and retries, not the server's 60 s driver timeout)
/// with an error saying it is unreachable and timed out: never success.
#[test]
fn ipmi_dead_bmc_fails_quickly_saying_unreachable() {
    let dead = IpmiSim::dead_addr();
    let server = server(&[node("dead", &dead, "admin", Some("whatever-pw"))], &[]);
    let token = server.token(&["--role", "operator"]);

    let start = Instant::now();
    let (body, attrs) = api_status(&server, &token, "dead");
    let took = start.elapsed();
    assert_eq!(attrs[0]["success"], false, "{body}");
    assert_eq!(attrs[0]["state"], "unknown");
    let error = attrs[0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("unreachable") && error.contains("timed out") && error.contains(&dead),
        "error {error:?} should say the BMC is unreachable"
    );
    assert!(!error.contains("driver killed"), "{error}");
    // ipmitool's own defaults take about 20 s; the platform's about 6 s.
    assert!(took < Duration::from_secs(20), "took {took:?}");

    let (status, rows) = power(&server, &token, &["off", "dead"]);
    assert_eq!(status.code(), Some(1));
    assert_eq!(rows[0][1], "Failed to stop");
    assert!(rows[0][2].contains("unreachable"), "{rows:?}");
}

/// Failures carry their class: a wrong password is `auth` (exit 77) and
/// ipmitool runs once for it, as the server never retries credentials; a
/// BMC that does not answer, or a name that does not resolve, is
/// `unreachable` (exit 68); a refused cipher suite stays `failed`. The
/// error message is the one the platform always gave.
#[test]
fn ipmi_failures_are_classed() {
    let sim = IpmiSim::start(1);
    let bmc = &sim.bmcs[0];
    let dead = IpmiSim::dead_addr();
    let nodes = [
        node("bad", &bmc.addr, &bmc.user, Some("Wr0ng-pass-4711")),
        node("dead", &dead, &bmc.user, Some("whatever-pw")),
        node_with(
            "c17",
            &bmc.addr,
            &bmc.user,
            Some(&bmc.password),
            &[("ipmi_cipher", "17")],
        ),
    ];
    let bin = tempfile::tempdir().unwrap();
    let (path, calls_file) = counting_wrapper(bin.path(), "ipmitool");
    let server = server(&nodes, &[("PATH", &path)]);
    let token = server.token(&["--role", "operator"]);

    let r = api_results(&server, &token, "PATCH", "bad");
    assert_class(&r, "bad", "auth", &["authentication refused", &bmc.addr]);
    assert_eq!(r["bad"]["exit-code"], 77);
    assert_eq!(calls(&calls_file), 1, "auth is tried once");
    let r = api_results(&server, &token, "GET", "bad");
    assert_class(&r, "bad", "auth", &["authentication refused"]);
    assert_eq!(r["bad"]["state"], "unknown");
    assert!(sim.bmcs[0].set_events().is_empty());

    let r = api_results(&server, &token, "GET", "dead,c17");
    assert_class(&r, "dead", "unreachable", &["unreachable", &dead]);
    assert_eq!(r["dead"]["exit-code"], 68);
    assert_class(&r, "c17", "failed", &["refused cipher suite 17"]);
    assert_eq!(r["c17"]["exit-code"], 1);
    assert_eq!(calls(&calls_file), 4, "each tried once");
}

/// The shipped commands hand the password to ipmitool in `IPMI_PASSWORD`
/// with `-E`, never with `-P` or a file: a command line is visible to every
/// user in `ps`. Every action calls ipmitool once, bounded by `-N`/`-R`,
/// through the function the prelude defines.
#[test]
fn ipmi_shipped_commands_keep_the_password_off_the_command_line() {
    let yaml: serde_yaml::Value = serde_yaml::from_str(&shipped("10-ipmi.yaml")).unwrap();
    let platform = &yaml["platforms"]["ipmi"];
    let variables: Vec<&str> = platform["variables"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(variables.contains(&"ipmi_password"), "{variables:?}");
    // One bounded ipmitool call, in the prelude's function every action uses.
    let prelude = platform["prelude"].as_str().expect("a prelude");
    let calls: Vec<&str> = prelude
        .split("ipmitool ")
        .skip(1)
        .filter(|c| c.starts_with('-'))
        .collect();
    assert_eq!(calls.len(), 1, "one ipmitool call: {prelude}");
    let call = calls[0].split(" 2>&1)").next().unwrap();
    assert!(call.contains(" -E "), "{call}");
    assert!(call.contains("-N ") && call.contains("-R "), "{call}");
    for flag in ["-P ", "-f ", "-k ", "-y "] {
        assert!(!call.contains(flag), "passes {flag}: {call}");
    }
    assert!(!call.contains("ipmi_password"), "{call}");
    assert!(prelude.contains(r#"export IPMI_PASSWORD="$ipmi_password""#));
    for (action, verb) in [
        ("power_on", "on"),
        ("power_off", "off"),
        ("restart", "reset"),
        ("status", "status"),
        ("shutdown", "soft"),
    ] {
        let command = platform[action].as_str().expect(action);
        assert!(
            command.starts_with(&format!("chassis_power {verb}\n")),
            "{action}: {command}"
        );
        assert!(
            !command.contains("ipmitool "),
            "{action} calls ipmitool itself: {command}"
        );
    }
}

/// A graceful off sends each BMC an ACPI soft off (`chassis power soft`,
/// ipmi_sim's `set shutdown 1`) first: a machine whose OS honours it
/// powers off and is seen off within the grace (no fallback); one that
/// ignores it (ipmi_sim's default) is switched off hard after the grace
/// (`set power 0`, fallback). A node already off gets the soft off too,
/// and stays off.
#[test]
fn ipmi_graceful_off_soft_off_then_hard_off() {
    let sim = IpmiSim::start(3);
    let [polite, deaf, off] = [&sim.bmcs[0], &sim.bmcs[1], &sim.bmcs[2]];
    polite.set_power(true);
    polite.honour_soft_off();
    deaf.set_power(true);
    let nodes = [
        node_for("polite", polite),
        node_for("deaf", deaf),
        node_for("off", off),
    ];
    let server = server(&nodes, &[]);
    let token = server.token(&["--role", "operator"]);

    let start = Instant::now();
    let r = graceful_off(&server, &token, "polite,deaf,off", "2s");
    assert!(start.elapsed() >= Duration::from_secs(2), "the grace");
    assert_graceful(&r, "polite", false);
    assert_eq!(r["polite"]["state"], "off", "{}", r["polite"]);
    assert_graceful(&r, "deaf", true);
    assert_graceful(&r, "off", false);
    assert_eq!(powers(&sim), [false, false, false]);
    assert_eq!(polite.set_events(), ["set shutdown 1"], "soft off only");
    assert_eq!(
        deaf.set_events(),
        ["set shutdown 1", "set power 0"],
        "soft off first, then the hard off"
    );
    assert_eq!(off.set_events(), ["set shutdown 1"]);
}

/// Every file under `dir`, recursively.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
