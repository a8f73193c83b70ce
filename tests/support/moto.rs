//! A real EC2 endpoint for tests: moto's `moto_server` on `127.0.0.1` at a
//! free port, driven with the real `aws` CLI.
//!
//! Each [`Moto`] has its own temp dir holding a private `HOME`,
//! `AWS_CONFIG_FILE` and `AWS_SHARED_CREDENTIALS_FILE` (so the user's
//! `~/.aws` is never read) and the server's log. The server runs in its own
//! process group, which `Drop` kills.
//!
//! ```ignore
//! let moto = Moto::start();
//! let ids = moto.run_instances(3);         // all "running"
//! moto.states(&ids);                       // ["running", "running", "running"]
//! moto.server_env();                       // what a power-server needs to reach it
//! moto.enable_auth();                      // from now on only an IAM user's keys work
//! ```
//!
//! Every `aws` call costs about half a second of CPU (Python start-up), so
//! [`Moto::states`] reads many instances in one call. The CLI always gets
//! `--endpoint-url` and `AWS_EC2_METADATA_DISABLED=true`: nothing here
//! sends traffic anywhere but loopback. A missing `moto_server` or `aws`
//! fails the test with a message naming `scripts/install-test-deps`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::daemon::{spawn_group, start_on_free_port, stop_group, STOP_GRACE};

/// How long the server may take to answer its first request (Python
/// start-up on a loaded 2-core machine).
const START_DEADLINE: Duration = Duration::from_secs(60);

/// The region every test uses.
pub const REGION: &str = "us-east-1";

/// A running `moto_server`, stopped when dropped.
#[derive(Debug)]
pub struct Moto {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The access key id the harness's own calls use (`test` until
    /// [`Moto::enable_auth`], then the IAM user's).
    access_key: String,
    /// Its secret.
    secret_key: String,
    aws: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Moto {
    /// Start a server and wait until it answers.
    pub fn start() -> Moto {
        let bin = which::which("moto_server").unwrap_or_else(|_| {
            panic!(
                "moto_server is not installed (the aws tests need it): \
                 run scripts/install-test-deps"
            )
        });
        let aws = which::which("aws").unwrap_or_else(|_| {
            panic!(
                "the aws CLI is not installed (the aws tests need it): \
                 run scripts/install-test-deps"
            )
        });
        let dir = tempfile::Builder::new()
            .prefix("power-moto")
            .tempdir()
            .expect("temp dir");
        std::fs::create_dir(dir.path().join("home")).unwrap();
        std::fs::write(
            dir.path().join("config"),
            format!("[default]\nregion = {REGION}\n"),
        )
        .unwrap();
        std::fs::write(dir.path().join("credentials"), "").unwrap();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();

        let log = dir.path().join("moto.log");
        let (port, child) = start_on_free_port(
            "moto_server",
            &log,
            START_DEADLINE,
            |port| spawn(&bin, dir.path(), port),
            |port| {
                // Any HTTP answer will do.
                agent
                    .get(format!("http://127.0.0.1:{port}/moto-api/"))
                    .call()
                    .is_ok()
            },
        );
        Moto {
            url: format!("http://127.0.0.1:{port}"),
            access_key: "test".into(),
            secret_key: "test".into(),
            aws,
            child: Some(child),
            dir,
        }
    }

    /// The server's log (its stdout and stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("moto.log")).unwrap_or_default()
    }

    /// The private directory: `home/`, `config`, `credentials`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The private shared-credentials file (empty unless a test writes
    /// profiles to it).
    pub fn credentials_file(&self) -> PathBuf {
        self.dir.path().join("credentials")
    }

    /// The environment a `power-server` (and so the `aws` CLI it runs)
    /// needs: the private config files and `HOME`, dummy credentials, no
    /// instance-metadata lookups, no pager. The endpoint is not in it:
    /// each test says how the platform reaches moto.
    pub fn server_env(&self) -> Vec<(OsString, OsString)> {
        let mut env = self.private_env();
        env.push(("AWS_ACCESS_KEY_ID".into(), "test".into()));
        env.push(("AWS_SECRET_ACCESS_KEY".into(), "test".into()));
        env
    }

    /// The private files and settings, without credentials. The server
    /// inherits the test runner's environment, and the harness can only set
    /// variables: an AWS setting of the user's that would change where the
    /// CLI looks for credentials is set to its empty or default value here
    /// (the CLI treats an empty key, token or role as unset).
    pub fn private_env(&self) -> Vec<(OsString, OsString)> {
        let d = self.dir.path();
        let mut env: Vec<(OsString, OsString)> = [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_SECURITY_TOKEN",
            "AWS_ROLE_ARN",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CA_BUNDLE",
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_EC2",
        ]
        .into_iter()
        .map(|k| (k.into(), "".into()))
        .collect();
        env.extend([
            ("AWS_PROFILE".into(), "default".into()),
            ("AWS_DEFAULT_PROFILE".into(), "default".into()),
        ]);
        env.extend([
            ("HOME".into(), d.join("home").into()),
            ("AWS_CONFIG_FILE".into(), d.join("config").into()),
            (
                "AWS_SHARED_CREDENTIALS_FILE".into(),
                d.join("credentials").into(),
            ),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
            ("AWS_DEFAULT_REGION".into(), REGION.into()),
            ("AWS_PAGER".into(), "".into()),
        ]);
        env
    }

    /// Run `aws ARGS... --endpoint-url URL --output json` with the
    /// harness's credentials; its stdout parsed as JSON.
    pub fn aws(&self, args: &[&str]) -> serde_json::Value {
        let mut cmd = Command::new(&self.aws);
        // Nothing of the user's AWS settings leaks in.
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(|k| k.starts_with("AWS_")) {
                cmd.env_remove(key);
            }
        }
        cmd.envs(self.private_env())
            .env("AWS_ACCESS_KEY_ID", &self.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret_key)
            .args(args)
            .args(["--endpoint-url", &self.url, "--output", "json"])
            .stdin(Stdio::null());
        let (status, stdout, stderr) = super::run(&mut cmd);
        assert!(
            status.success(),
            "aws {args:?} failed ({status}): {stderr}\nmoto's log:\n{}",
            self.log()
        );
        if stdout.trim().is_empty() {
            return serde_json::Value::Null;
        }
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("aws {args:?}: {e}: {stdout}"))
    }

    /// Create `n` running t2.micro instances (one `aws` call); their ids.
    pub fn run_instances(&self, n: usize) -> Vec<String> {
        let count = n.to_string();
        let out = self.aws(&[
            "ec2",
            "run-instances",
            "--image-id",
            "ami-1e749f67",
            "--count",
            &count,
            "--instance-type",
            "t2.micro",
            "--region",
            REGION,
        ]);
        let ids: Vec<String> = out["Instances"]
            .as_array()
            .unwrap_or_else(|| panic!("no Instances in {out}"))
            .iter()
            .map(|i| i["InstanceId"].as_str().expect("InstanceId").to_string())
            .collect();
        assert_eq!(ids.len(), n, "{out}");
        ids
    }

    /// Each instance's state name (`running`, `stopped`, ...), in the order
    /// asked, read with one `describe-instances` call.
    pub fn states(&self, ids: &[String]) -> Vec<String> {
        let mut args = vec!["ec2", "describe-instances", "--region", REGION];
        args.push("--instance-ids");
        args.extend(ids.iter().map(String::as_str));
        let out = self.aws(&args);
        let mut found = std::collections::HashMap::new();
        for reservation in out["Reservations"].as_array().into_iter().flatten() {
            for instance in reservation["Instances"].as_array().into_iter().flatten() {
                found.insert(
                    instance["InstanceId"].as_str().unwrap_or("").to_string(),
                    instance["State"]["Name"].as_str().unwrap_or("").to_string(),
                );
            }
        }
        ids.iter()
            .map(|id| {
                found
                    .get(id)
                    .cloned()
                    .unwrap_or_else(|| panic!("moto does not know {id}: {out}"))
            })
            .collect()
    }

    /// One instance's state name.
    pub fn state(&self, id: &str) -> String {
        self.states(&[id.to_string()]).remove(0)
    }

    /// Turn on moto's IAM authentication: create an IAM user allowed
    /// everything, switch the harness's own calls to its keys, and from then
    /// on refuse any request not signed with a known key (`AuthFailure`, as
    /// EC2 does). Returns the user's (access key id, secret access key).
    /// Costs three `aws` calls.
    pub fn enable_auth(&mut self) -> (String, String) {
        self.aws(&["iam", "create-user", "--user-name", "power"]);
        self.aws(&[
            "iam",
            "put-user-policy",
            "--user-name",
            "power",
            "--policy-name",
            "everything",
            "--policy-document",
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#,
        ]);
        let key = self.aws(&["iam", "create-access-key", "--user-name", "power"]);
        let id = key["AccessKey"]["AccessKeyId"]
            .as_str()
            .expect("AccessKeyId");
        let secret = key["AccessKey"]["SecretAccessKey"]
            .as_str()
            .expect("SecretAccessKey");
        // moto authenticates every request after this many more: none.
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let reply = agent
            .post(format!("{}/moto-api/reset-auth", self.url))
            .header("Content-Type", "application/octet-stream")
            .send("0")
            .unwrap_or_else(|e| panic!("POST /moto-api/reset-auth: {e}"));
        assert_eq!(reply.status().as_u16(), 200, "moto refused reset-auth");
        self.access_key = id.to_string();
        self.secret_key = secret.to_string();
        (id.to_string(), secret.to_string())
    }
}

/// Start the server on `port` in its own process group, its output in
/// `dir/moto.log`.
fn spawn(bin: &Path, dir: &Path, port: u16) -> Child {
    let log = std::fs::File::create(dir.join("moto.log")).unwrap();
    let mut cmd = Command::new(bin);
    // moto uses boto itself: none of the user's AWS settings may reach it.
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("AWS_")) {
            cmd.env_remove(key);
        }
    }
    cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .env("HOME", dir.join("home"))
        .env("TMPDIR", dir)
        .env_remove("INITIAL_NO_AUTH_ACTION_COUNT")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    spawn_group(&mut cmd).unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()))
}

impl Drop for Moto {
    fn drop(&mut self) {
        super::daemon::show_log_if_failing("moto_server", || self.log());
        stop_group(self.child.take(), STOP_GRACE);
    }
}
