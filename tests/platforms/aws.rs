//! The shipped AWS platforms against moto's EC2 emulator, through the real
//! server and the real `power` client: the per-node `aws`
//! (`topology.d/10-aws.yaml`, inline commands as in the reference) and the
//! batch `aws-batch` (`topology.d/10-aws-batch.yaml`, `drivers/aws-batch`).
//! Each shared test runs for both ([`Variant`]); the batch-only ones follow.
//!
//! Every `aws` CLI call costs about half a second of CPU, so each test
//! makes only a handful: the per-node platform makes one per node and
//! action, the batch one one per chunk and action, the harness reads many
//! instances' states in one.

use super::{
    api_results, assert_class, assert_graceful, first_on_path, graceful_off, node_entry,
    power_rows, start_server, static_nodes, Row,
};
use crate::support::moto::{Moto, REGION};
use crate::support::{daemon, Server};
use std::ffi::OsString;
use std::time::{Duration, Instant};

/// Which shipped AWS platform a test runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// `aws`: one CLI call per node and action.
    PerNode,
    /// `aws-batch`: one CLI call per chunk of nodes and action.
    Batch,
}

impl Variant {
    /// The platform's name.
    fn platform(self) -> &'static str {
        match self {
            Variant::PerNode => "aws",
            Variant::Batch => "aws-batch",
        }
    }

    /// The shipped fragment that declares it.
    fn fragment(self) -> &'static str {
        match self {
            Variant::PerNode => "10-aws.yaml",
            Variant::Batch => "10-aws-batch.yaml",
        }
    }
}

/// `#[test]`s `NAME::aws` and `NAME::aws_batch`, each running the function
/// `NAME(Variant)` for its platform.
macro_rules! both_platforms {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn aws() {
                super::$name(super::Variant::PerNode)
            }

            #[test]
            fn aws_batch() {
                super::$name(super::Variant::Batch)
            }
        }
    )*};
}

both_platforms!(
    aws_instances_are_reported_stopped_started_and_rebooted,
    aws_unknown_instance_and_dead_endpoint_fail_saying_why,
    aws_silent_endpoint_times_out,
    aws_bad_credentials_are_refused,
    aws_failures_are_classed,
    aws_graceful_off_is_a_stop_without_force,
);

/// A node on the variant's platform: `(name, instance id, extra
/// variables)`.
/// Three running instances on `moto`, and their nodes `ec2-1`..`ec2-3`.
fn three_instances(variant: Variant, moto: &Moto) -> (Vec<String>, Vec<String>) {
    let ids = moto.run_instances(3);
    let endpoint = [("aws_endpoint_url", moto.url.as_str())];
    let nodes = (0..3)
        .map(|i| node(variant, &format!("ec2-{}", i + 1), &ids[i], &endpoint))
        .collect();
    (ids, nodes)
}

fn node(variant: Variant, name: &str, ec2_id: &str, extra: &[(&str, &str)]) -> String {
    let mut vars = vec![("ec2_id", ec2_id), ("region", REGION)];
    vars.extend_from_slice(extra);
    node_entry(name, variant.platform(), &vars)
}

/// Start a server with the variant's shipped fragment, these nodes and
/// this environment.
fn server(variant: Variant, nodes: &[String], env: Vec<(OsString, OsString)>) -> Server {
    start_server(variant.fragment(), &[], &static_nodes(nodes), env)
}

/// Assert that every row failed, with `unknown` state for a status, and an
/// error containing `expected`.
fn assert_failed(rows: &[Row], status: bool, expected: &str) {
    for row in rows {
        assert!(!row.success, "{row:?} should have failed");
        if status {
            assert_eq!(row.state.as_deref(), Some("unknown"), "{row:?}");
        }
        let error = row.error.as_deref().unwrap_or_default();
        assert!(
            error.contains(expected),
            "{}: error {error:?} should say {expected:?}",
            row.name
        );
    }
}

/// Three instances are reported, stopped, started and rebooted through
/// the client, and moto's own view follows each action.
fn aws_instances_are_reported_stopped_started_and_rebooted(variant: Variant) {
    let moto = Moto::start();
    let (ids, nodes) = three_instances(variant, &moto);
    let server = server(variant, &nodes, moto.server_env());
    let token = server.token(&["--role", "operator"]);

    let (status, rows) = power_rows(&server, &token, &["status", "ec2-[1-3]"]);
    assert_eq!(
        rows,
        ["ec2-1", "ec2-2", "ec2-3"].map(|n| Row::ok(n, Some("on"))),
        "server log:\n{}",
        server.log()
    );
    assert!(status.success());

    let (status, rows) = power_rows(&server, &token, &["off", "ec2-[1-2]"]);
    assert_eq!(rows, [Row::ok("ec2-1", None), Row::ok("ec2-2", None)]);
    assert!(status.success());
    assert_eq!(moto.states(&ids), ["stopped", "stopped", "running"]);

    // Off is the per-node platform's status_off_exit_code 123, as in the
    // reference; the batch driver says "off".
    let (status, rows) = power_rows(&server, &token, &["status", "ec2-[1-3]"]);
    assert_eq!(
        rows,
        [
            Row::ok("ec2-1", Some("off")),
            Row::ok("ec2-2", Some("off")),
            Row::ok("ec2-3", Some("on")),
        ]
    );
    assert!(status.success());

    let (status, rows) = power_rows(&server, &token, &["on", "ec2-1"]);
    assert_eq!(rows, [Row::ok("ec2-1", None)]);
    assert!(status.success());
    assert_eq!(moto.states(&ids), ["running", "stopped", "running"]);

    // moto reboots at once: the instance stays running.
    let (status, rows) = power_rows(&server, &token, &["restart", "ec2-3"]);
    assert_eq!(rows, [Row::ok("ec2-3", None)]);
    assert!(status.success());
    assert_eq!(moto.states(&ids), ["running", "stopped", "running"]);
}

/// An instance id the endpoint does not know, an instance in neither
/// state, an endpoint that refuses connections, and a node without an
/// instance id fail saying why: never
/// success, never a hang. The refused endpoint is tried with the CLI's
/// default retries, as a packaged server would.
fn aws_unknown_instance_and_dead_endpoint_fail_saying_why(variant: Variant) {
    let moto = Moto::start();
    let ids = moto.run_instances(1);
    moto.aws(&[
        "ec2",
        "terminate-instances",
        "--region",
        REGION,
        "--instance-ids",
        &ids[0],
    ]);
    let dead = format!("http://127.0.0.1:{}", daemon::closed_port());
    let live = [("aws_endpoint_url", moto.url.as_str())];
    let nodes = [
        node(variant, "ghost", "i-0123456789abcdef0", &live),
        node(variant, "gone", &ids[0], &live),
        node(
            variant,
            "dead",
            "i-0123456789abcdef0",
            &[("aws_endpoint_url", &dead)],
        ),
        format!(
            "  unset:\n    platform: {}\n    aws_endpoint_url: {:?}\n",
            variant.platform(),
            moto.url
        ),
    ];
    let server = server(variant, &nodes, moto.server_env());
    let token = server.token(&["--role", "operator"]);

    let (status, rows) = power_rows(&server, &token, &["status", "ghost", "gone", "dead"]);
    assert!(!status.success());
    assert_failed(&rows[0..1], true, "InvalidInstanceID.NotFound");
    assert_failed(
        &rows[1..2],
        true,
        &format!(
            "instance {} is terminated: neither running nor stopped",
            ids[0]
        ),
    );
    assert_failed(
        &rows[2..3],
        true,
        &format!("Could not connect to the endpoint URL: \"{dead}/\""),
    );

    let (status, rows) = power_rows(&server, &token, &["on", "ghost", "dead"]);
    assert!(!status.success());
    assert_failed(&rows[0..1], false, "InvalidInstanceID.NotFound");
    assert_failed(&rows[1..2], false, "Could not connect to the endpoint URL");

    // A node without ec2_id fails before any aws call.
    let (status, rows) = power_rows(&server, &token, &["status", "unset"]);
    assert!(!status.success());
    assert_failed(&rows, true, "ec2_id: node variable ec2_id is not set");
}

/// An endpoint that accepts the connection and never answers times out
/// (the platform's `--cli-read-timeout`), once per attempt: one attempt
/// here (`AWS_MAX_ATTEMPTS=1`) to keep the test short.
fn aws_silent_endpoint_times_out(variant: Variant) {
    let moto = Moto::start();
    // Connections complete in the kernel's backlog; nothing ever reads.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let url = format!("http://{}", silent.local_addr().unwrap());
    let mut env = moto.server_env();
    env.push(("AWS_MAX_ATTEMPTS".into(), "1".into()));
    let server = server(
        variant,
        &[node(
            variant,
            "silent",
            "i-0123456789abcdef0",
            &[("aws_endpoint_url", &url)],
        )],
        env,
    );
    let token = server.token(&["--role", "operator"]);

    let (status, rows) = power_rows(&server, &token, &["status", "silent"]);
    assert!(!status.success());
    assert_failed(
        &rows,
        true,
        &format!("Read timeout on endpoint URL: \"{url}/\""),
    );
    drop(silent);
}

/// With moto's IAM authentication on, a profile holding unknown keys is
/// refused (`AuthFailure`) and changes nothing, while a profile with the
/// IAM user's keys works. The endpoint comes from `AWS_ENDPOINT_URL` in
/// the server's environment, not from a node variable.
fn aws_bad_credentials_are_refused(variant: Variant) {
    let mut moto = Moto::start();
    let ids = moto.run_instances(1);
    let (key_id, secret) = moto.enable_auth();
    std::fs::write(
        moto.credentials_file(),
        format!(
            "[good]\naws_access_key_id = {key_id}\naws_secret_access_key = {secret}\n\
             [bad]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\n\
             aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n"
        ),
    )
    .unwrap();
    let nodes = [
        node(variant, "good", &ids[0], &[("aws_profile", "good")]),
        node(variant, "bad", &ids[0], &[("aws_profile", "bad")]),
    ];
    let mut env = moto.private_env();
    env.push(("AWS_ENDPOINT_URL".into(), moto.url.clone().into()));
    let server = server(variant, &nodes, env);
    let token = server.token(&["--role", "operator"]);

    let (status, rows) = power_rows(&server, &token, &["status", "good"]);
    assert_eq!(
        rows,
        [Row::ok("good", Some("on"))],
        "server log:\n{}",
        server.log()
    );
    assert!(status.success());

    let (status, rows) = power_rows(&server, &token, &["status", "bad"]);
    assert!(!status.success());
    assert_failed(&rows, true, "AuthFailure");
    assert_failed(
        &rows,
        true,
        "AWS was not able to validate the provided access credentials",
    );

    let (status, rows) = power_rows(&server, &token, &["off", "bad"]);
    assert!(!status.success());
    assert_failed(&rows, false, "AuthFailure");
    assert_eq!(moto.state(&ids[0]), "running");
}

/// Failures carry their class: keys the endpoint refuses are `auth`
/// (`AuthFailure`), tried once, one CLI call (the server never retries
/// them); an endpoint that refuses connections is `unreachable`.
fn aws_failures_are_classed(variant: Variant) {
    let mut moto = Moto::start();
    let ids = moto.run_instances(1);
    moto.enable_auth();
    std::fs::write(
        moto.credentials_file(),
        "[bad]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\n\
         aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n",
    )
    .unwrap();
    let dead = format!("http://127.0.0.1:{}", daemon::closed_port());
    let bad = [
        ("aws_profile", "bad"),
        ("aws_endpoint_url", moto.url.as_str()),
    ];
    let nodes = [
        node(variant, "bad", &ids[0], &bad),
        node(variant, "dead", &ids[0], &[("aws_endpoint_url", &dead)]),
    ];
    let dir = tempfile::tempdir().unwrap();
    let (path, log) = counting_aws(dir.path());
    let mut env = moto.server_env();
    // One attempt per CLI call: the refused endpoint fails at once.
    env.push(("AWS_MAX_ATTEMPTS".into(), "1".into()));
    env.push(("PATH".into(), path.into()));
    let server = server(variant, &nodes, env);
    let token = server.token(&["--role", "operator"]);

    let r = api_results(&server, &token, "DELETE", "bad");
    assert_class(&r, "bad", "auth", &["AuthFailure"]);
    assert_eq!(
        calls_since(&log),
        ["stop-instances --force"],
        "auth is tried once"
    );
    assert_eq!(moto.state(&ids[0]), "running");

    let r = api_results(&server, &token, "GET", "bad,dead");
    assert_class(&r, "bad", "auth", &["AuthFailure"]);
    assert_class(
        &r,
        "dead",
        "unreachable",
        &["Could not connect to the endpoint URL"],
    );
    if variant == Variant::PerNode {
        assert_eq!(r["bad"]["exit-code"], 77);
        assert_eq!(r["dead"]["exit-code"], 68);
    }
}

/// A graceful off is `stop-instances` without `--force` (the `shutdown`
/// action: EC2 lets the OS shut down); moto stops at once, so the
/// instances are seen stopped within the grace (no fallback) and no forced
/// stop follows. A hard off (`power off`) is `stop-instances --force`.
fn aws_graceful_off_is_a_stop_without_force(variant: Variant) {
    let moto = Moto::start();
    let (ids, nodes) = three_instances(variant, &moto);
    let dir = tempfile::tempdir().unwrap();
    let (path, log) = counting_aws(dir.path());
    let mut env = moto.server_env();
    env.push(("PATH".into(), path.into()));
    let server = server(variant, &nodes, env);
    let token = server.token(&["--role", "operator"]);

    let r = graceful_off(&server, &token, "ec2-[1-2]", "20s");
    for name in ["ec2-1", "ec2-2"] {
        assert_graceful(&r, name, false);
        assert_eq!(r[name]["state"], "off", "{}", r[name]);
    }
    assert_eq!(moto.states(&ids), ["stopped", "stopped", "running"]);
    let calls = calls_since(&log);
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.starts_with("stop-instances"))
            .collect::<Vec<_>>(),
        match variant {
            Variant::PerNode => vec!["stop-instances", "stop-instances"],
            Variant::Batch => vec!["stop-instances"],
        },
        "a stop without --force, and no forced one: {calls:?}"
    );

    let (status, rows) = power_rows(&server, &token, &["off", "ec2-3"]);
    assert!(status.success(), "{rows:?}");
    assert_eq!(moto.state(&ids[2]), "stopped");
    assert_eq!(calls_since(&log), ["stop-instances --force"]);
}

/// A `PATH` whose `aws` logs each call's operation (`describe-instances`,
/// ..., with ` --force` when the call has it) to `dir/aws-calls.log` and
/// runs the real CLI; the log's path.
fn counting_aws(dir: &std::path::Path) -> (String, std::path::PathBuf) {
    let real = which::which("aws").expect("the aws CLI (scripts/install-test-deps)");
    let bin = dir.join("counting-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = dir.join("aws-calls.log");
    std::fs::write(&log, "").unwrap();
    let path = first_on_path(
        &bin,
        "aws",
        &format!(
            "#!/bin/sh\nforce=\ncase \" $* \" in *' --force '*) force=' --force' ;; esac\n\
             printf '%s%s\\n' \"$2\" \"$force\" >>'{}'\nexec '{}' \"$@\"\n",
            log.display(),
            real.display()
        ),
    );
    (path, log)
}

/// The operations logged by [`counting_aws`] since the last call, which
/// empties the log.
fn calls_since(log: &std::path::Path) -> Vec<String> {
    let calls = std::fs::read_to_string(log).unwrap_or_default();
    std::fs::write(log, "").unwrap();
    calls.lines().map(str::to_string).collect()
}

/// One request over a chunk mixing instances moto knows, ids it does not
/// know and two nodes on the same instance: each node gets its own answer,
/// an unknown id fails only its node (naming the id), the known instances
/// are acted on, and it takes one CLI call per action (two when EC2 has
/// refused the first for the unknown ids).
#[test]
fn aws_batch_chunk_mixing_known_and_unknown_ids_answers_each() {
    let moto = Moto::start();
    let ids = moto.run_instances(3);
    let (path, log) = counting_aws(moto.dir());
    let live = [("aws_endpoint_url", moto.url.as_str())];
    let ghost = ["i-0123456789abcdef0", "i-0123456789abcdef1"];
    let nodes = [
        node(Variant::Batch, "k1", &ids[0], &live),
        node(Variant::Batch, "k2", &ids[1], &live),
        node(Variant::Batch, "k3", &ids[2], &live),
        node(Variant::Batch, "twin", &ids[0], &live),
        node(Variant::Batch, "u1", ghost[0], &live),
        node(Variant::Batch, "u2", ghost[1], &live),
    ];
    let mut env = moto.server_env();
    env.push(("PATH".into(), path.into()));
    let server = server(Variant::Batch, &nodes, env);
    let token = server.token(&["--role", "operator"]);
    let all = ["k1", "k2", "k3", "twin", "u1", "u2"];

    let assert_unknown = |rows: &[Row], status: bool| {
        for (row, id) in rows.iter().zip(ghost) {
            assert_failed(
                std::slice::from_ref(row),
                status,
                "InvalidInstanceID.NotFound",
            );
            assert_failed(std::slice::from_ref(row), status, &format!("'{id}'"));
        }
    };

    let mut args = vec!["status"];
    args.extend(all);
    let (status, rows) = power_rows(&server, &token, &args);
    assert!(!status.success());
    assert_eq!(
        rows[..4],
        ["k1", "k2", "k3", "twin"].map(|n| Row::ok(n, Some("on"))),
        "server log:\n{}",
        server.log()
    );
    assert_unknown(&rows[4..], true);
    // The call with every id fails for the unknown ones; one filtered
    // describe answers the rest.
    let calls = calls_since(&log);
    assert!(
        calls.len() <= 2 && calls.iter().all(|c| c == "describe-instances"),
        "{calls:?}"
    );

    let (status, rows) = power_rows(&server, &token, &["off", "k1", "u1", "k2", "twin", "u2"]);
    assert!(!status.success());
    assert_eq!(
        [&rows[0], &rows[2], &rows[3]],
        [
            &Row::ok("k1", None),
            &Row::ok("k2", None),
            &Row::ok("twin", None)
        ]
    );
    assert_unknown(&[rows[1].clone(), rows[4].clone()], false);
    let calls = calls_since(&log);
    assert_eq!(
        calls,
        ["stop-instances --force", "stop-instances --force"],
        "one refused, one without the unknown ids"
    );
    assert_eq!(moto.states(&ids), ["stopped", "stopped", "running"]);

    let (status, rows) = power_rows(&server, &token, &["status", "k1", "k2", "k3", "twin"]);
    assert!(status.success());
    assert_eq!(
        rows,
        [
            Row::ok("k1", Some("off")),
            Row::ok("k2", Some("off")),
            Row::ok("k3", Some("on")),
            Row::ok("twin", Some("off")),
        ]
    );
    assert_eq!(calls_since(&log), ["describe-instances"]);

    let mut args = vec!["on"];
    args.extend(all);
    let (status, rows) = power_rows(&server, &token, &args);
    assert!(!status.success());
    assert_eq!(
        rows[..4],
        ["k1", "k2", "k3", "twin"].map(|n| Row::ok(n, None))
    );
    assert_unknown(&rows[4..], false);
    assert_eq!(moto.states(&ids), ["running", "running", "running"]);
}

/// 200 instances' status in one request: every node answers, with one or
/// two aws CLI calls where the per-node platform makes 200; then all 200
/// are stopped with one more.
#[test]
fn aws_batch_200_instances_in_one_request_take_a_few_cli_calls() {
    let moto = Moto::start();
    let ids = moto.run_instances(200);
    let (path, log) = counting_aws(moto.dir());
    let live = [("aws_endpoint_url", moto.url.as_str())];
    let names: Vec<String> = (1..=200).map(|i| format!("ec2-{i:03}")).collect();
    let nodes: Vec<String> = names
        .iter()
        .zip(&ids)
        .map(|(name, id)| node(Variant::Batch, name, id, &live))
        .collect();
    let mut env = moto.server_env();
    env.push(("PATH".into(), path.into()));
    let server = server(Variant::Batch, &nodes, env);
    let token = server.token(&["--role", "operator"]);

    let start = Instant::now();
    let (status, rows) = power_rows(&server, &token, &["status", "ec2-[001-200]"]);
    let took = start.elapsed();
    assert_eq!(
        rows,
        names
            .iter()
            .map(|n| Row::ok(n, Some("on")))
            .collect::<Vec<_>>(),
        "server log:\n{}",
        server.log()
    );
    assert!(status.success());
    let calls = calls_since(&log);
    assert!(
        calls.len() <= 2,
        "200 statuses took {} aws calls: {calls:?}",
        calls.len()
    );
    // One CLI call is about half a second of CPU; 200 would be minutes.
    assert!(
        took < Duration::from_secs(120),
        "200 statuses took {took:?}"
    );
    eprintln!("200 statuses: {} aws call(s), {took:?}", calls.len());

    let (status, rows) = power_rows(&server, &token, &["off", "ec2-[001-200]"]);
    assert!(status.success(), "{rows:?}");
    assert!(rows.iter().all(|r| r.success), "{rows:?}");
    let calls = calls_since(&log);
    assert!(
        calls.len() <= 2,
        "200 stops took {} aws calls: {calls:?}",
        calls.len()
    );
    assert!(moto.states(&ids).iter().all(|s| s == "stopped"));
}
