//! The shipped `aws` platform (`topology.d/10-aws.yaml`) against moto's EC2
//! emulator, through the real server and the real `power` client.
//!
//! Every `aws` CLI call costs about half a second of CPU, so each test
//! makes only a handful: the platform makes one per node and action, the
//! harness reads many instances' states in one.

use super::{power_rows, start_server, static_nodes, Row};
use crate::support::moto::{Moto, REGION};
use crate::support::{daemon, Server};
use std::ffi::OsString;

/// A node on the aws platform: `(name, instance id, extra variables)`.
fn node(name: &str, ec2_id: &str, extra: &[(&str, &str)]) -> String {
    let mut s =
        format!("  {name}:\n    platform: aws\n    ec2_id: {ec2_id:?}\n    region: {REGION}\n");
    for (k, v) in extra {
        s.push_str(&format!("    {k}: {v:?}\n"));
    }
    s
}

/// Start a server with the shipped fragment, these nodes and this
/// environment.
fn server(nodes: &[String], env: Vec<(OsString, OsString)>) -> Server {
    start_server("10-aws.yaml", &[], &static_nodes(nodes), env)
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
#[test]
fn aws_instances_are_reported_stopped_started_and_rebooted() {
    let moto = Moto::start();
    let ids = moto.run_instances(3);
    let endpoint = [("aws_endpoint_url", moto.url.as_str())];
    let nodes: Vec<String> = (0..3)
        .map(|i| node(&format!("ec2-{}", i + 1), &ids[i], &endpoint))
        .collect();
    let server = server(&nodes, moto.server_env());
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

    // Off is the platform's status_off_exit_code 123, as in the reference.
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
#[test]
fn aws_unknown_instance_and_dead_endpoint_fail_saying_why() {
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
        node("ghost", "i-0123456789abcdef0", &live),
        node("gone", &ids[0], &live),
        node(
            "dead",
            "i-0123456789abcdef0",
            &[("aws_endpoint_url", &dead)],
        ),
        format!(
            "  unset:\n    platform: aws\n    aws_endpoint_url: {:?}\n",
            moto.url
        ),
    ];
    let server = server(&nodes, moto.server_env());
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
#[test]
fn aws_silent_endpoint_times_out() {
    let moto = Moto::start();
    // Connections complete in the kernel's backlog; nothing ever reads.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let url = format!("http://{}", silent.local_addr().unwrap());
    let mut env = moto.server_env();
    env.push(("AWS_MAX_ATTEMPTS".into(), "1".into()));
    let server = server(
        &[node(
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
#[test]
fn aws_bad_credentials_are_refused() {
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
        node("good", &ids[0], &[("aws_profile", "good")]),
        node("bad", &ids[0], &[("aws_profile", "bad")]),
    ];
    let mut env = moto.private_env();
    env.push(("AWS_ENDPOINT_URL".into(), moto.url.clone().into()));
    let server = server(&nodes, env);
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
