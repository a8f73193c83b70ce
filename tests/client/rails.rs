//! Safety rails, with the real server and the real client: `--all`,
//! `max_nodes` and `--yes`, `--dry-run` with masked credentials, and
//! protected groups refused, then forced (and a viewer refused).

use super::Power;
use crate::support::Server;
use serde_json::{json, Value};

/// Four plain nodes in a rack, two in a protected group `infra`, one whose
/// driver gets a credential; and a group `empty` protected and missing.
const TOPOLOGY: &str = "\
platforms:
  sim:
    driver: sim
    variables: [sim_initial, bmc_password, bmc_port]
static_nodes:
  node[01-04]:
    platform: sim
    groups: [rack1]
    bmc_password: hunter2
  login[1-2]:
    platform: sim
    sim_initial: 'on'
    groups: [infra]
";

fn server() -> Server {
    Server::builder()
        .file("sim.yaml", TOPOLOGY)
        .env("POWER_SERVER_PROTECTED_GROUPS", "infra")
        .start()
}

fn audit(server: &Server) -> Vec<Value> {
    server
        .audit_lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `--all` reaches every node, and no request selects everything
/// implicitly: no NODES and no `--all` is a usage error, sending nothing.
#[test]
fn all_is_asked_for_never_implied() {
    let server = server();
    let token = server.token(&["--role", "operator"]);
    let power = |args: &[&str]| Power::at(&server, &token).args(args);
    power(&["status", "--all", "--summary"]).expect(0, "on: login[1-2]\noff: node[01-04]\n", "");
    power(&["on", "--all", "--summary"]).expect(0, "starting: login[1-2],node[01-04]\n", "");
    assert_eq!(server.sim_state("node03").as_deref(), Some("on"));
    for args in [
        &["off"][..],
        &["off", "--all", "node01"],
        &["on", "--all", "-g"],
    ] {
        let out = power(args).run();
        assert_eq!((out.code, &*out.stdout), (2, ""), "{args:?}: {out:?}");
        assert!(out.stderr.starts_with("error: "), "{args:?}: {out:?}");
    }
    let lines = audit(&server);
    assert_eq!(lines.len(), 3, "status, and on's two lines: {lines:?}");
    assert_eq!(lines[2]["nodes"], "login[1-2],node[01-04]");
    // A node-limited token's --all is its own nodes.
    let limited = server.token(&["--role", "viewer", "--nodes", "node0[1-2]"]);
    Power::at(&server, &limited)
        .args(&["status", "--all", "--summary"])
        .expect(0, "on: node[01-02]\n", "");
}

/// `--dry-run` says, per node, the platform, the driver and the variable
/// names, a credential's marked `***` and its value never shown; it runs
/// nothing, and writes nothing to the audit log.
#[test]
fn dry_run_shows_names_masks_credentials_and_runs_nothing() {
    let server = server();
    let token = server.token(&["--role", "operator"]);
    let power = |args: &[&str]| Power::at(&server, &token).args(args);
    power(&["off", "--dry-run", "node0[1-2]", "login1", "ghost"]).expect(
        1,
        "NODE    PLATFORM  DRIVER  VARIABLES\n\
         node01  sim       sim     bmc_password=***\n\
         node02  sim       sim     bmc_password=***\n\
         login1  sim       sim     sim_initial       login1 is in protected group infra: power_off needs force (force=true, or `power off --force`)\n\
         ghost   -         -       -                 node ghost is not in the topology\n",
        "power: dry run: power off would run on 2 of 4 nodes; nothing was run\n",
    );
    let doc = power(&["restart", "--dry-run", "--json", "--groups", "rack1"]).expect_json(0, "");
    assert_eq!(doc["action"], "restart");
    assert_eq!(doc["dry_run"], true);
    assert_eq!(doc["nodes"].as_array().unwrap().len(), 4);
    assert_eq!(
        doc["nodes"][0],
        json!({"name": "node01", "platform": "sim", "driver": "sim", "batch": false,
               "variables": ["bmc_password"], "secret_variables": ["bmc_password"],
               "unset_variables": ["sim_initial", "bmc_port"],
               "would_run": true, "missing": false, "error": null})
    );
    power(&["on", "--all", "--dry-run", "--summary"]).expect(
        0,
        "would run: login[1-2],node[01-04]\n",
        "",
    );
    // A viewer may dry-run a status, not an action.
    let viewer = server.token(&["--role", "viewer"]);
    Power::at(&server, &viewer)
        .args(&["status", "--dry-run", "--summary", "node01"])
        .expect(0, "would run: node01\n", "");
    Power::at(&server, &viewer)
        .args(&["off", "--dry-run", "node01"])
        .expect(
            3,
            "",
            "power: token refused by the server: \
             the token's role is viewer: power_off needs an operator token\n",
        );
    assert_eq!(server.sim_states(), [], "a dry run runs nothing");
    let lines = audit(&server);
    assert_eq!(lines.len(), 1, "only the viewer's refusal: {lines:?}");
    assert!(lines[0]["refused"].is_string());
    assert!(!server.log().contains("hunter2"));
}

/// Past `max_nodes` an action needs `--yes` when not on a terminal (exit 5,
/// nothing done); within it, or for a status, nothing is asked. Groups and
/// `--all` are counted by a dry run on the server.
#[test]
fn max_nodes_needs_yes_off_a_terminal() {
    let server = server();
    let token = server.token(&["--role", "operator"]);
    let power = |args: &[&str]| {
        Power::at(&server, &token)
            .write_user_config("max_nodes: 2\n")
            .args(args)
    };
    power(&["on", "node[01-03]"]).expect(
        5,
        "",
        "power: power on 3 nodes: more than max_nodes (2), and not confirmed: \
         nothing was done (add --yes to confirm)\n",
    );
    power(&["off", "--groups", "rack1"]).expect(
        5,
        "",
        "power: power off 4 nodes: more than max_nodes (2), and not confirmed: \
         nothing was done (add --yes to confirm)\n",
    );
    power(&["restart", "--all"]).expect(
        5,
        "",
        "power: power restart 6 nodes: more than max_nodes (2), and not confirmed: \
         nothing was done (add --yes to confirm)\n",
    );
    assert_eq!(server.sim_states(), [], "nothing was run");
    assert_eq!(
        audit(&server),
        Vec::<Value>::new(),
        "nothing was sent but dry runs"
    );
    power(&["status", "--all", "--summary"]).expect(0, "on: login[1-2]\noff: node[01-04]\n", "");
    power(&["on", "node0[1-2]"]).expect(0, "node01  Starting\nnode02  Starting\n", "");
    power(&["on", "--yes", "node[01-03]", "--summary"]).expect(0, "starting: node[01-03]\n", "");
    assert_eq!(server.sim_state("node03").as_deref(), Some("on"));
    // The environment beats the file.
    Power::at(&server, &token)
        .write_user_config("max_nodes: 2\n")
        .env("POWER_MAX_NODES", "10")
        .args(&["off", "-g", "rack1", "--summary"])
        .expect(0, "stopping: node[01-04]\n", "");
}

/// On a terminal the client asks, and only a yes goes ahead. The terminal
/// is util-linux `script`'s pseudo-terminal, fed the answer.
#[test]
fn max_nodes_asks_on_a_terminal() {
    use std::io::Write;
    let script = std::path::PathBuf::from("/usr/bin/script");
    assert!(script.exists(), "no /usr/bin/script for a pseudo-terminal");
    let server = server();
    let token = server.token(&["--role", "operator"]);
    let answer = |reply: &str| {
        let power = Power::at(&server, &token)
            .write_user_config("max_nodes: 1\n")
            .env("NO_COLOR", "1");
        let command = format!(
            "{} on node0[1-2] --summary",
            crate::support::power_bin().display()
        );
        let mut child = power
            .command_of(&script)
            .args(["-qec", &command, "/dev/null"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(reply.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let (code, text) = answer("n\n");
    assert_eq!(code, Some(5), "{text:?}");
    assert!(text.contains("power on 2 nodes? [y/N] "), "{text:?}");
    assert!(
        text.contains("power: not confirmed: nothing was done"),
        "{text:?}"
    );
    assert_eq!(server.sim_state("node01"), None);
    let (code, text) = answer("y\n");
    assert_eq!(code, Some(0), "{text:?}");
    assert!(text.contains("starting: node[01-02]"), "{text:?}");
    assert_eq!(server.sim_state("node02").as_deref(), Some("on"));
}

/// A node in a protected group refuses off and restart, with a reason
/// naming the group; `--force` runs it and the audit log says so. Status
/// and on are never refused; a viewer cannot force, nor can a token limited
/// to nodes.
#[test]
fn protected_nodes_are_refused_then_forced() {
    let server = server();
    let operator = server.token(&["--role", "operator", "--subject", "alice"]);
    let power = |args: &[&str]| Power::at(&server, &operator).args(args);
    power(&["off", "node01", "login1"]).expect(
        1,
        "node01  Stopping\n\
         login1  Failed to stop  login1 is in protected group infra: power_off needs force \
         (force=true, or `power off --force`)\n",
        "",
    );
    assert_eq!(server.sim_state("login1"), None, "not run");
    power(&["restart", "--groups", "infra", "--summary"]).expect(
        1,
        "failed to restart: login[1-2]\n",
        "",
    );
    power(&["on", "login1"]).expect(0, "login1  Starting\n", "");
    power(&["status", "login1"]).expect(0, "login1  On\n", "");
    power(&["off", "--force", "login1"]).expect(0, "login1  Stopping\n", "");
    assert_eq!(server.sim_state("login1").as_deref(), Some("off"));

    let viewer = server.token(&["--role", "viewer"]);
    Power::at(&server, &viewer)
        .args(&["off", "--force", "login2"])
        .expect(
            3,
            "",
            "power: token refused by the server: \
             the token's role is viewer: power_off needs an operator token\n",
        );
    let limited = server.token(&["--role", "operator", "--nodes", "login[1-2]"]);
    Power::at(&server, &limited)
        .args(&["restart", "--force", "login2"])
        .expect(
            3,
            "",
            "power: token refused by the server: force needs a token not limited to nodes: \
             restart with force=true is refused\n",
        );
    assert_eq!(server.sim_state("login2"), None, "refusals ran nothing");

    let lines = audit(&server);
    let off = lines
        .iter()
        .find(|l| l["action"] == "power_off" && l.get("event").is_none())
        .unwrap();
    assert_eq!(
        (
            &off["nodes"],
            &off["succeeded"],
            &off["failed"],
            &off["protected"]
        ),
        (&json!("login1,node01"), &json!(1), &json!(1), &json!(1))
    );
    assert!(off.get("force").is_none(), "{off}");
    let forced: Vec<&Value> = lines.iter().filter(|l| l["force"] == true).collect();
    assert_eq!(forced.len(), 2, "started and done: {lines:?}");
    assert_eq!(forced[0]["event"], "started");
    assert_eq!(
        (
            &forced[1]["subject"],
            &forced[1]["nodes"],
            &forced[1]["succeeded"]
        ),
        (&json!("alice"), &json!("login1"), &json!(1))
    );
    let refusals: Vec<&Value> = lines.iter().filter(|l| l["refused"].is_string()).collect();
    assert_eq!(refusals.len(), 2, "{lines:?}");
    assert!(refusals.iter().all(|l| l.get("force").is_none()));
}

/// `power-server check` warns of a protected group the topology lacks.
#[test]
fn check_warns_of_an_unknown_protected_group() {
    let server = server();
    let mut cmd = std::process::Command::new(crate::support::server_bin());
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("POWER_SERVER_")) {
            cmd.env_remove(key);
        }
    }
    let out = cmd
        .env("POWER_SERVER_PROTECTED_GROUPS", "infra,storage")
        .arg("check")
        .arg("--topology-dir")
        .arg(server.dir.path().join("topology.d"))
        .arg("--drivers-dir")
        .arg(crate::support::checkout().join("drivers"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        stdout.contains(
            "warnings:\n  protected_groups: group storage is not in the topology: it protects nothing\n"
        ),
        "{stdout}"
    );
    assert!(!stdout.contains("group infra is not"), "{stdout}");
}

/// A reload warns of a protected group the new topology lacks, as the
/// start does: the group's nodes are unprotected from then on.
#[test]
fn a_reload_warns_of_a_protected_group_gone() {
    let server = server();
    let warning = "protected_groups: group infra is not in the topology: it protects nothing";
    assert!(!server.log().contains(warning), "{}", server.log());
    std::fs::write(
        server.dir.path().join("topology.d/sim.yaml"),
        TOPOLOGY.replace("groups: [infra]", "groups: [logins]"),
    )
    .unwrap();
    server.signal(nix::sys::signal::Signal::SIGHUP);
    crate::support::poll(
        "the reload and its warning",
        std::time::Duration::from_secs(30),
        || {
            let log = server.log();
            (log.contains("topology reloaded") && log.contains(warning)).then_some(())
        },
    );
}
