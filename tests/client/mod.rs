//! The `power` client, driven as the real binary against the real
//! `power-server` with sim drivers on an ephemeral loopback port.
//!
//! Output is user-facing API (scripts parse it, Slurm wrappers rely on the
//! exit codes), so every run here pins stdout, stderr and the exit code
//! exactly. Each client run is isolated from the user's own settings: its
//! own HOME and XDG_CONFIG_HOME, no POWER_* from outside.
//!
//! The binary belongs to the `power-client` package: `cargo test
//! --workspace` builds it, or `cargo build -p power-client` first.

mod rails;

use crate::support::{checkout, power_bin, Server};
use serde_json::json;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Nodes for every outcome: off by default, on from the start, failing,
/// stuck (actions succeed, the state never changes).
const TOPOLOGY: &str = "\
platforms:
  sim:
    driver: sim
    variables: [sim_initial, sim_fail, sim_stuck]
static_nodes:
  node[01-04]:
    platform: sim
    groups: [rack1]
  node05:
    platform: sim
    sim_initial: 'on'
    groups: [rack2]
  broken01:
    platform: sim
    sim_fail: all
  stuck01:
    platform: sim
    sim_stuck: 'yes'
groups:
  rack2: node[04-05]
";

fn server() -> Server {
    Server::start(&[("sim.yaml", TOPOLOGY)])
}

/// What one run of `power` did.
#[derive(Debug, PartialEq, Eq)]
struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Output {
    fn new(code: i32, stdout: &str, stderr: &str) -> Output {
        Output {
            code,
            stdout: stdout.into(),
            stderr: stderr.into(),
        }
    }
}

/// A `power` command in an empty home, with no settings from outside.
struct Power {
    home: tempfile::TempDir,
    args: Vec<OsString>,
    env: Vec<(String, String)>,
}

impl Power {
    fn new() -> Power {
        let bin = power_bin();
        assert!(
            bin.exists(),
            "{} is missing: run `cargo build -p power-client` (or test with --workspace)",
            bin.display()
        );
        Power {
            home: tempfile::Builder::new()
                .prefix("power-client-test")
                .tempdir()
                .unwrap(),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// A `power` command pointed at `server` with `token`, through the
    /// environment (the common way to run it from scripts).
    fn at(server: &Server, token: &str) -> Power {
        Power::new()
            .env("POWER_URL", &server.url)
            .env("POWER_TOKEN", token)
    }

    fn args(mut self, args: &[&str]) -> Power {
        self.args.extend(args.iter().map(OsString::from));
        self
    }

    fn env(mut self, key: &str, value: &str) -> Power {
        self.env.push((key.into(), value.into()));
        self
    }

    /// `$XDG_CONFIG_HOME/power/config.yaml`, the user's config file.
    fn user_config(&self) -> PathBuf {
        self.home.path().join("config/power/config.yaml")
    }

    fn write_user_config(self, text: &str) -> Power {
        let path = self.user_config();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
        self
    }

    fn command(&self) -> Command {
        self.command_of(&power_bin())
    }

    /// `program` with this command's isolated environment and arguments.
    fn command_of(&self, program: &std::path::Path) -> Command {
        let mut cmd = Command::new(program);
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(|k| k.starts_with("POWER_")) {
                cmd.env_remove(key);
            }
        }
        cmd.env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path().join("config"))
            .env_remove("NO_COLOR")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(&self.args)
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self) -> Output {
        let out = self.command().output().expect("run power");
        Output {
            code: out.status.code().expect("power exited, not killed"),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }

    /// Runs and checks stdout, stderr and the exit code exactly.
    fn expect(&self, code: i32, stdout: &str, stderr: &str) {
        assert_eq!(
            self.run(),
            Output::new(code, stdout, stderr),
            "power {:?}",
            self.args
        );
    }

    /// Runs, checks stderr and the code exactly, and parses stdout as JSON.
    fn expect_json(&self, code: i32, stderr: &str) -> serde_json::Value {
        let out = self.run();
        assert_eq!(
            (out.code, &*out.stderr),
            (code, stderr),
            "power {:?}: {out:?}",
            self.args
        );
        assert!(out.stdout.ends_with("}\n"), "{out:?}");
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
    }
}

/// A token signed by `secret` that expired a minute ago.
fn expired_token(secret: &str) -> String {
    use power_server::auth::{Claims, Keys};
    let keys = Keys::new(
        &power_server::secret::from_value(secret),
        power_server::hostlist::DEFAULT_LIMIT,
    );
    keys.mint(&Claims {
        exp: power_server::auth::now() - 60,
        iat: None,
        sub: None,
        role: None,
        nodes: None,
    })
}

/// A loopback URL nothing listens on: a port bound and closed again.
fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// As the reference: no arguments prints the help, and that is not an error.
#[test]
fn no_arguments_prints_help() {
    let out = Power::new().run();
    assert_eq!((out.code, &*out.stderr), (0, ""));
    assert!(out.stdout.contains("Usage: power [OPTIONS] [COMMAND]"));
    for word in ["list", "status", "on", "off", "restart", "Exit codes:"] {
        assert!(
            out.stdout.contains(word),
            "help lacks {word}: {}",
            out.stdout
        );
    }
}

/// Usage errors exit 2 before anything is sent, and say what was expected.
#[test]
fn usage_errors_exit_2() {
    Power::new().args(&["status", "node[01-"]).expect(
        2,
        "",
        "power: bad node list `node[01-`: unbalanced brackets in `node[01-`: \
         expected each `[` closed by `]`, unnested\n",
    );
    Power::new()
        .args(&["on", "n1", "--wait-timeout", "soon", "--wait"])
        .expect(
            2,
            "",
            "error: invalid value 'soon' for '--wait-timeout <DURATION>': \
         expected number at 0: expected a duration such as `90s`, `5m` or `1h 30m`\n\n\
         For more information, try '--help'.\n",
        );
    for args in [
        &["status"][..],
        &["bogus"],
        &["on", "n1", "--wait-timeout", "5s"],
        &["status", "n1", "--json", "--summary"],
    ] {
        let out = Power::new().args(args).run();
        assert_eq!((out.code, &*out.stdout), (2, ""), "{args:?}: {out:?}");
        assert!(out.stderr.starts_with("error: "), "{args:?}: {out:?}");
    }
}

/// `list` as the reference (one name a line), and each other format.
#[test]
fn list_in_each_format() {
    let server = server();
    let token = server.token(&["--role", "viewer"]);
    let power = |args: &[&str]| Power::at(&server, &token).args(args);
    power(&["list"]).expect(
        0,
        "node01\nnode02\nnode03\nnode04\nnode05\nbroken01\nstuck01\n",
        "",
    );
    power(&["list", "--verbose"]).expect(
        0,
        "node01    sim  rack1\n\
         node02    sim  rack1\n\
         node03    sim  rack1\n\
         node04    sim  rack1,rack2\n\
         node05    sim  rack2\n\
         broken01  sim\n\
         stuck01   sim\n",
        "",
    );
    power(&["list", "--summary"]).expect(0, "nodes: broken01,node[01-05],stuck01\n", "");
    power(&["list", "--groups"]).expect(0, "rack1\nrack2\n", "");
    power(&["list", "--groups", "--verbose"]).expect(
        0,
        "rack1  node[01-04]\nrack2  node[04-05]\n",
        "",
    );
    power(&["list", "--groups", "--summary"]).expect(
        0,
        "rack1: node[01-04]\nrack2: node[04-05]\n",
        "",
    );
    let nodes = power(&["list", "--json"]).expect_json(0, "");
    assert_eq!(nodes["nodes"].as_array().unwrap().len(), 7);
    assert_eq!(
        nodes["nodes"][3],
        json!({"name": "node04", "platform": "sim", "groups": ["rack1", "rack2"]})
    );
    let groups = power(&["--json", "list", "--groups"]).expect_json(0, "");
    assert_eq!(
        groups,
        json!({"groups": [
            {"name": "rack1", "nodes": ["node01", "node02", "node03", "node04"]},
            {"name": "rack2", "nodes": ["node04", "node05"]},
        ]})
    );
}

/// `status` says On/Off/Unknown as the reference did, in the order asked,
/// and exits 1 when any node is unknown or missing.
#[test]
fn status_in_each_format() {
    let server = server();
    let token = server.token(&["--role", "viewer"]);
    let power = |args: &[&str]| Power::at(&server, &token).args(args);
    power(&["status", "node05", "node[01-02]"]).expect(
        0,
        "node05  On\nnode01  Off\nnode02  Off\n",
        "",
    );
    power(&["status", "node[01-02],node05", "broken01", "ghost"]).expect(
        1,
        "node01    Off\n\
         node02    Off\n\
         node05    On\n\
         broken01  Unknown  sim: simulated failure of status on broken01\n\
         ghost     Unknown  node ghost is not in the topology\n",
        "",
    );
    power(&["status", "--summary", "node[01-05]", "broken01", "ghost"]).expect(
        1,
        "on: node05\noff: node[01-04]\nunknown: broken01\nmissing: ghost\n",
        "",
    );
    let doc = power(&["status", "--json", "node05", "broken01", "ghost"]).expect_json(1, "");
    assert_eq!(
        doc,
        json!({"action": "status", "wait": null, "nodes": [
            {"name": "node05", "state": "on", "success": true, "missing": false,
             "outcome": "on", "error": null, "error_class": null},
            {"name": "broken01", "state": "unknown", "success": false, "missing": false,
             "outcome": "unknown", "error": "sim: simulated failure of status on broken01",
             "error_class": "failed"},
            {"name": "ghost", "state": "unknown", "success": false, "missing": true,
             "outcome": "unknown", "error": "node ghost is not in the topology",
             "error_class": "missing"},
        ]})
    );
}

/// `--groups` makes NODES name groups; an unknown group is the server's
/// usage error, passed on with exit 2.
#[test]
fn groups_select_nodes() {
    let server = server();
    let token = server.token(&["--role", "viewer"]);
    let power = |args: &[&str]| Power::at(&server, &token).args(args);
    power(&["status", "--groups", "rack2"]).expect(0, "node04  Off\nnode05  On\n", "");
    power(&["status", "rack[1-2]", "-g", "--summary"]).expect(
        0,
        "on: node05\noff: node[01-04]\n",
        "",
    );
    power(&["status", "--groups", "rack9"]).expect(
        2,
        "",
        "power: the server refused the request: unknown group rack9: see GET /groups\n",
    );
}

/// The reference client's `-n/--nodes` still works, hidden from help as
/// it was deprecated there; it cannot be mixed with --groups.
#[test]
fn the_reference_nodes_flag_is_accepted() {
    let server = server();
    let token = server.token(&["--role", "operator"]);
    let power = |args: &[&str]| Power::at(&server, &token).args(args);
    power(&["on", "-n", "node01"]).expect(0, "node01  Starting\n", "");
    power(&["status", "--nodes", "node01"]).expect(0, "node01  On\n", "");
    let help = Power::at(&server, &token).args(&["status", "--help"]).run();
    assert!(!help.stdout.contains("--nodes"), "{}", help.stdout);
    let mixed = Power::at(&server, &token)
        .args(&["status", "-n", "-g", "rack1"])
        .run();
    assert_eq!(mixed.code, 2, "{mixed:?}");
}

/// on, off and restart say the reference's words, change the (simulated)
/// power, and exit 1 when a node failed or is missing.
#[test]
fn actions_in_each_format() {
    let server = server();
    let token = server.token(&["--role", "operator"]);
    let power = |args: &[&str]| Power::at(&server, &token).args(args);
    power(&["on", "node[01-02]"]).expect(0, "node01  Starting\nnode02  Starting\n", "");
    assert_eq!(server.sim_state("node01").as_deref(), Some("on"));
    power(&["off", "node01"]).expect(0, "node01  Stopping\n", "");
    assert_eq!(server.sim_state("node01").as_deref(), Some("off"));
    power(&["restart", "node01"]).expect(0, "node01  Restarting\n", "");
    assert_eq!(server.sim_state("node01").as_deref(), Some("on"));
    power(&["on", "node03", "broken01", "ghost"]).expect(
        1,
        "node03    Starting\n\
         broken01  Failed to start  sim: simulated failure of power_on on broken01\n\
         ghost     Failed to start  node ghost is not in the topology\n",
        "",
    );
    power(&["off", "broken01"]).expect(
        1,
        "broken01  Failed to stop  sim: simulated failure of power_off on broken01\n",
        "",
    );
    power(&["restart", "broken01"]).expect(
        1,
        "broken01  Failed to restart  sim: simulated failure of restart on broken01\n",
        "",
    );
    power(&["off", "--summary", "node[01-04]", "broken01", "ghost"]).expect(
        1,
        "stopping: node[01-04]\nfailed to stop: broken01\nmissing: ghost\n",
        "",
    );
    let doc = power(&["restart", "--json", "node04", "ghost"]).expect_json(1, "");
    assert_eq!(
        doc,
        json!({"action": "restart", "wait": null, "nodes": [
            {"name": "node04", "state": null, "success": true, "missing": false,
             "outcome": "restarting", "error": null, "error_class": null},
            {"name": "ghost", "state": null, "success": false, "missing": true,
             "outcome": "failed to restart", "error": "node ghost is not in the topology",
             "error_class": "missing"},
        ]})
    );
    assert_eq!(server.sim_state("node04").as_deref(), Some("on"));
}

/// `--wait` polls until every node is in the target state and then says so.
#[test]
fn wait_reaches_the_state() {
    let server = server();
    let token = server.token(&["--role", "operator"]);
    let power = |args: &[&str]| Power::at(&server, &token).args(args);
    power(&["on", "node[01-03]", "--wait", "--wait-timeout", "60s"]).expect(
        0,
        "node01  On\nnode02  On\nnode03  On\n",
        "",
    );
    power(&["off", "-w", "node[01-02]", "--summary"]).expect(0, "off: node[01-02]\n", "");
    let doc = power(&["restart", "node01", "--wait", "--json"]).expect_json(0, "");
    assert_eq!(
        doc,
        json!({"action": "restart", "wait": "on", "nodes": [
            {"name": "node01", "state": "on", "success": true, "missing": false,
             "outcome": "on", "error": null, "error_class": null},
        ]})
    );
    // The server confirmed: the client asked it once per command and
    // polled nothing itself.
    let log = server.log();
    let requests: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("power request"))
        .collect();
    assert_eq!(requests.len(), 3, "{log}");
    assert!(
        requests.iter().all(|l| !l.contains("action=status")),
        "{log}"
    );
    assert!(
        log.contains("action=status outcome=\"on\""),
        "the server polled: {log}"
    );
}

/// `--wait` gives up at the timeout and says which nodes did not get there;
/// a node whose action failed is not waited for.
#[test]
fn wait_times_out_on_a_stuck_node() {
    let server = server();
    let token = server.token(&["--role", "operator"]);
    Power::at(&server, &token)
        .args(&[
            "on",
            "node01",
            "stuck01",
            "broken01",
            "--wait",
            "--wait-timeout",
            "1s",
        ])
        .expect(
            1,
            "node01    On\n\
             stuck01   Still off        did not reach on within 1s: last seen off\n\
             broken01  Failed to start  sim: simulated failure of power_on on broken01\n",
            "power: 1 node did not reach on within 1s: stuck01\n",
        );
    Power::at(&server, &token)
        .args(&[
            "on",
            "stuck01",
            "--wait",
            "--wait-timeout",
            "1",
            "--summary",
        ])
        .expect(
            1,
            "still off: stuck01\n",
            "power: 1 node did not reach on within 1s: stuck01\n",
        );
}

/// Exit 4 with the URL and the reason when nothing listens there.
#[test]
fn unreachable_server_exits_4() {
    let url = dead_url();
    let message = format!("power: cannot reach power server at {url}: connection refused\n");
    Power::new()
        .args(&["status", "node01", "--url", &url])
        .expect(4, "", &message);
    Power::new()
        .env("POWER_URL", &url)
        .args(&["list"])
        .expect(4, "", &message);
}

/// Exit 4 when the URL answers, but not as the power API does (here: the
/// real server, under a wrong path).
#[test]
fn a_wrong_url_exits_4() {
    let server = server();
    let token = server.token(&[]);
    let url = format!("{}/power", server.url);
    Power::new()
        .args(&["list", "--url", &url, "--token", &token])
        .expect(
            4,
            "",
            &format!(
                "power: unexpected answer from power server at {url}: 404 Not Found: \
                 no such route: expected /, /nodes, /groups, /healthz or /metrics\n"
            ),
        );
}

/// Exit 3 for a refused token, saying why, and never printing the token.
#[test]
fn refused_tokens_exit_3() {
    let server = server();
    let expired = expired_token(&server.secret);
    let power = |token: &str, args: &[&str]| Power::at(&server, token).args(args);
    power(&expired, &["status", "node01"]).expect(
        3,
        "",
        "power: token refused by the server: the token has expired\n",
    );
    let foreign = expired_token("another secret");
    power(&foreign, &["list"]).expect(
        3,
        "",
        "power: token refused by the server: the token is not valid: bad signature\n",
    );
    let viewer = server.token(&["--role", "viewer"]);
    power(&viewer, &["on", "node01"]).expect(
        3,
        "",
        "power: token refused by the server: \
         the token's role is viewer: power_on needs an operator token\n",
    );
    assert_eq!(
        server.sim_state("node01"),
        None,
        "a refused request ran nothing"
    );
    Power::new()
        .env("POWER_URL", &server.url)
        .args(&["list"])
        .expect(
            3,
            "",
            "power: no token configured: set jwt_token in the config file, POWER_TOKEN or --token \
         (an admin mints one with `power-server token`)\n",
        );
}

/// Settings: config file < POWER_URL/POWER_TOKEN < --url/--token, and the
/// file is found where the reference's users would put it.
#[test]
fn settings_precedence() {
    let server = server();
    let token = server.token(&[]);
    let dead = dead_url();
    let good_file = format!(
        "base_url: {}\njwt_token: {token}\ndebug: false\n",
        server.url
    );
    let bad_file = format!("base_url: {dead}\njwt_token: not-a-token\n");
    let ok = |p: Power| p.args(&["status", "node05"]).expect(0, "node05  On\n", "");
    let unreachable = format!("power: cannot reach power server at {dead}: connection refused\n");

    // The file alone.
    ok(Power::new().write_user_config(&good_file));
    // The environment beats the file.
    ok(Power::new()
        .write_user_config(&bad_file)
        .env("POWER_URL", &server.url)
        .env("POWER_TOKEN", &token));
    Power::new()
        .write_user_config(&good_file)
        .env("POWER_URL", &dead)
        .args(&["status", "node05"])
        .expect(4, "", &unreachable);
    // Flags beat the environment.
    ok(Power::new()
        .write_user_config(&bad_file)
        .env("POWER_URL", &dead)
        .env("POWER_TOKEN", "not-a-token")
        .args(&["--url", &server.url, "--token", &token]));
    Power::new()
        .write_user_config(&good_file)
        .args(&["--token", "not-a-token", "status", "node05"])
        .expect(
            3,
            "",
            "power: token refused by the server: the token is not valid: malformed token\n",
        );

    // --config and $POWER_CONFIG name the file; named, it must exist.
    let power = Power::new().write_user_config(&bad_file);
    let elsewhere = power.home.path().join("elsewhere.yaml");
    std::fs::write(&elsewhere, &good_file).unwrap();
    let elsewhere = elsewhere.to_str().unwrap();
    ok(Power::new()
        .write_user_config(&bad_file)
        .args(&["--config", elsewhere]));
    ok(Power::new()
        .write_user_config(&bad_file)
        .env("POWER_CONFIG", elsewhere));
    let missing = format!("{elsewhere}.missing");
    Power::new()
        .args(&["status", "node05", "--config", &missing])
        .expect(
            2,
            "",
            &format!("power: cannot read config file {missing}: no such file or directory\n"),
        );
    let broken = Power::new().write_user_config("base_url: [\n");
    let path = broken.user_config();
    let out = broken.args(&["list"]).run();
    let prefix = format!("power: {}: ", path.display());
    assert_eq!((out.code, &*out.stdout), (2, ""), "{out:?}");
    assert!(out.stderr.starts_with(&prefix), "{out:?}");
    assert!(out
        .stderr
        .ends_with("expected a YAML map with base_url, jwt_token and max_nodes\n"));
}

/// The same CLI definition gives completions and a man page.
#[test]
fn completions_and_man_page() {
    for (shell, marker) in [
        ("bash", "_power()"),
        ("zsh", "#compdef power"),
        ("fish", "complete -c power"),
    ] {
        let out = Power::new().args(&["completions", shell]).run();
        assert_eq!((out.code, &*out.stderr), (0, ""), "{shell}");
        assert!(out.stdout.contains(marker), "{shell}: {}", out.stdout);
        assert!(out.stdout.contains("wait-timeout"), "{shell}");
    }
    let man = Power::new().args(&["man"]).run();
    assert_eq!((man.code, &*man.stderr), (0, ""));
    assert!(man.stdout.contains(".TH power 1"), "{}", man.stdout);
    assert!(man.stdout.contains("Exit codes:"), "{}", man.stdout);
    let power = Power::new();
    let dir = power.home.path().join("man1");
    std::fs::create_dir(&dir).unwrap();
    let power = power.args(&["man", "--dir", dir.to_str().unwrap()]);
    power.expect(0, "", "");
    let mut pages: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    pages.sort();
    assert_eq!(
        pages,
        [
            "power-completions.1",
            "power-list.1",
            "power-man.1",
            "power-off.1",
            "power-on.1",
            "power-restart.1",
            "power-status.1",
            "power.1"
        ]
    );
    let on = std::fs::read_to_string(dir.join("power-on.1")).unwrap();
    assert!(on.contains("wait\\-timeout"), "{on}");
}

/// A reader that goes away early (`power list | head -1`) is not an error.
#[test]
fn a_closed_pipe_is_not_an_error() {
    let server = server();
    let token = server.token(&[]);
    let mut child = Power::at(&server, &token)
        .args(&["list"])
        .command()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close the read end before the client has its answer to write.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).as_ref()
        ),
        (Some(0), "")
    );
}

/// The Slurm wrappers hand Slurm's hostlist to `power`, log one line per
/// outcome, and exit with `power`'s code.
#[test]
fn slurm_resume_and_suspend_programs() {
    let server = server();
    let token = server.token(&["--role", "operator", "--subject", "slurm"]);
    let slurm = |script: &str, hostlist: &str, extra: &[(&str, &str)]| {
        let mut power = Power::at(&server, &token)
            .env("POWER", power_bin().to_str().unwrap())
            .env("POWER_SLURM_DEFAULTS", "/nonexistent")
            .args(&[hostlist]);
        for (k, v) in extra {
            power = power.env(k, v);
        }
        let log = power.home.path().join("slurm.log");
        power = power.env("POWER_SLURM_LOG", log.to_str().unwrap());
        let out = power
            .command_of(&checkout().join("contrib/slurm").join(script))
            .output()
            .unwrap();
        assert_eq!(
            (
                &*String::from_utf8_lossy(&out.stdout),
                &*String::from_utf8_lossy(&out.stderr)
            ),
            ("", ""),
            "{script} {hostlist}"
        );
        // Strip each line's timestamp: `2026-01-01T00:00:00 TAG: TEXT`.
        let lines: Vec<String> = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(|l| l.split_once(' ').expect("a timestamp").1.to_string())
            .collect();
        (out.status.code().unwrap(), lines)
    };
    assert_eq!(
        slurm("power-slurm-resume", "node[01-02]", &[]),
        (
            0,
            vec![
                "power-slurm-resume: power on node[01-02]".to_string(),
                "power-slurm-resume: starting: node[01-02]".to_string(),
            ]
        )
    );
    assert_eq!(server.sim_state("node02").as_deref(), Some("on"));
    server.set_sim_state("stuck01", "on");
    assert_eq!(
        slurm(
            "power-slurm-suspend",
            "node[01-02],stuck01",
            &[("POWER_SLURM_SUSPEND_WAIT", "1s")]
        ),
        (
            1,
            vec![
                "power-slurm-suspend: power off node[01-02],stuck01".to_string(),
                "power-slurm-suspend: power: 1 node did not reach off within 1s: stuck01"
                    .to_string(),
                "power-slurm-suspend: off: node[01-02]".to_string(),
                "power-slurm-suspend: still on: stuck01".to_string(),
            ]
        )
    );
    assert_eq!(server.sim_state("node02").as_deref(), Some("off"));
    // The server confirmed (the client sent no status request of its own).
    let log = server.log();
    assert!(
        log.lines()
            .filter(|l| l.contains("power request"))
            .all(|l| !l.contains("action=status")),
        "{log}"
    );
    let (code, lines) = slurm("power-slurm-resume", "broken01", &[]);
    assert_eq!(code, 1);
    assert_eq!(lines[1], "power-slurm-resume: failed to start: broken01");
}

/// On a terminal the words are coloured, unless NO_COLOR is set; piped
/// output (every other test) has no escape codes and no progress bar. The
/// terminal is util-linux `script`'s pseudo-terminal.
#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    // scripts/test installs it (Debian's bsdutils) when missing.
    let script = PathBuf::from("/usr/bin/script");
    assert!(
        script.exists(),
        "no /usr/bin/script to run power on a pseudo-terminal"
    );
    let server = server();
    let token = server.token(&["--role", "viewer"]);
    let on_a_terminal = |no_color: Option<&str>| {
        let mut power = Power::at(&server, &token);
        if let Some(value) = no_color {
            power = power.env("NO_COLOR", value);
        }
        let command = format!("{} status node05 node01", power_bin().display());
        let out = power
            .command_of(&script)
            .args(["-qec", &command, "/dev/null"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let coloured = on_a_terminal(None);
    assert!(
        coloured.contains("node05  \x1b[32mOn\x1b[0m"),
        "{coloured:?}"
    );
    // An empty NO_COLOR does not count (no-color.org).
    assert!(on_a_terminal(Some("")).contains("\x1b[32mOn"));
    let plain = on_a_terminal(Some("1"));
    assert!(plain.contains("node05  On\r\nnode01  Off\r\n"), "{plain:?}");
    assert!(!plain.contains("\x1b[3"), "{plain:?}");
}

/// `off --graceful` shuts down what can, within the grace, and switches
/// off hard the rest: a node that ignores the shutdown and a platform
/// with no shutdown at all, named on stderr. One-shot and batch sim alike.
#[test]
fn graceful_off_falls_back_to_hard_off() {
    let server = Server::start(&[(
        "g.yaml",
        "platforms:\n  sim:\n    driver: sim\n    variables: [sim_initial, sim_shutdown]\n  \
         simb:\n    driver: sim\n    batch: true\n    variables: [sim_initial, sim_shutdown]\n  \
         plain:\n    power_off: \"true\"\n    status: exit 111\n\
         static_nodes:\n  polite01: {platform: sim, sim_initial: 'on'}\n  \
         deaf01: {platform: sim, sim_initial: 'on', sim_shutdown: ignore}\n  \
         dumb01: {platform: plain}\n  \
         b[1-2]: {platform: simb, sim_initial: 'on'}\n  \
         b3: {platform: simb, sim_initial: 'on', sim_shutdown: ignore}\n",
    )]);
    let token = server.token(&["--role", "operator"]);
    let power = |args: &[&str]| Power::at(&server, &token).args(args);
    power(&[
        "off",
        "--graceful",
        "--grace",
        "1s",
        "polite01",
        "deaf01",
        "dumb01",
    ])
    .expect(
        0,
        "polite01  Off\ndeaf01    Forced off\ndumb01    Forced off\n",
        "power: 2 nodes did not shut down within 1s (or cannot) and were switched off hard: \
         deaf01,dumb01\n",
    );
    assert_eq!(server.sim_state("polite01").as_deref(), Some("off"));
    assert_eq!(server.sim_state("deaf01").as_deref(), Some("off"));
    power(&["off", "--graceful", "--grace", "1s", "--summary", "b[1-3]"]).expect(
        0,
        "off: b[1-2]\nforced off: b3\n",
        "power: 1 node did not shut down within 1s (or cannot) and were switched off hard: b3\n",
    );
    // A batch sim writes its state files once it has answered: wait for it.
    crate::support::poll(
        "b3's state file says off",
        std::time::Duration::from_secs(10),
        || (server.sim_state("b3").as_deref() == Some("off")).then_some(()),
    );
    let log = server.log();
    assert!(
        log.contains("action=shutdown"),
        "the drivers were asked to shut down"
    );
    // On record: the grace, and how many were switched off hard.
    let audit = server.audit_lines();
    let done: Vec<serde_json::Value> = audit
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r.get("event").is_none())
        .collect();
    assert_eq!(done[0]["graceful"], "1s", "{audit:?}");
    assert_eq!(done[0]["forced_off"], 2, "{audit:?}");
    assert_eq!(done[1]["forced_off"], 1, "{audit:?}");
    let out = power(&["on", "--grace", "1s", "b1"]).run();
    assert_eq!(out.code, 2, "--grace is off's, with --graceful: {out:?}");
}
