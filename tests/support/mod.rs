//! Test harness: start the real `power-server serve` on an ephemeral
//! loopback port in a private temp directory, mint tokens with the real
//! `power-server token`, make requests, and stop the server in `Drop`.
//!
//! Each server gets its own topology directory (the files a test passes),
//! sim state directory (`POWER_SIM_DIR`), runtime directory, audit log,
//! log file (the server's stderr) and random JWT secret. The drivers
//! directories are the checkout's `drivers/` then `tests/fixtures/drivers/`.
//!
//! Nothing here sleeps to synchronise: every wait polls with a deadline.
//!
//! The client binary `power` lives in another package: [`power_bin`] finds
//! it next to the server binary, where `cargo test --workspace` (or a
//! `cargo build -p power-client` before the tests) puts it.

#![allow(dead_code)] // each test module uses a different part of the harness

pub mod daemon;
pub mod ipmi_sim;
pub mod libvirtd;
pub mod moto;
pub mod sushy;

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a server may take to load and print its address.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// How long a server may take to exit after SIGTERM before it is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(30);

/// The server binary under test.
pub fn server_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_power-server"))
}

/// The client binary `power`, next to the server binary. It belongs to the
/// `power-client` package: `cargo test --workspace` builds it.
pub fn power_bin() -> PathBuf {
    server_bin()
        .parent()
        .expect("the server binary is in a directory")
        .join("power")
}

/// The checkout's root (where `Cargo.toml` is).
pub fn checkout() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh random secret, hex-encoded.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("random bytes");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Poll `f` until it returns `Some`, or panic naming `what` after `deadline`.
pub fn poll<T>(what: &str, deadline: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// How to start a server: topology files, extra arguments and environment.
#[derive(Debug, Default)]
pub struct Builder {
    files: Vec<(String, String)>,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    secret_in_env: bool,
}

impl Builder {
    /// Add a topology fragment `name` with YAML `text`.
    pub fn file(mut self, name: &str, text: &str) -> Self {
        self.files.push((name.into(), text.into()));
        self
    }

    /// Add several topology fragments.
    pub fn files(mut self, files: &[(&str, &str)]) -> Self {
        for (name, text) in files {
            self = self.file(name, text);
        }
        self
    }

    /// Pass an extra argument to `serve`.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Set an extra environment variable for the server.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Do not set `POWER_SERVER_JWT_SECRET`: the server must find its secret
    /// elsewhere (config, secret file, or generate one). [`Server::secret`]
    /// is then empty and [`Server::token`] passes the same config arguments.
    pub fn no_secret_env(mut self) -> Self {
        self.secret_in_env = false;
        self
    }

    /// Start the server and wait until it prints its address.
    pub fn start(self) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("power-api-test")
            .tempdir()
            .expect("temp dir");
        let topology = dir.path().join("topology.d");
        std::fs::create_dir(&topology).unwrap();
        for (name, text) in &self.files {
            std::fs::write(topology.join(name), text).unwrap();
        }
        for sub in ["sim", "runtime", "config"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        let secret = if self.secret_in_env {
            random_secret()
        } else {
            String::new()
        };
        let log = dir.path().join("server.log");
        let mut cmd = base_command(dir.path(), &secret, &self.env);
        cmd.arg("serve")
            .arg("--bind")
            .arg("127.0.0.1:0")
            .arg("--topology-dir")
            .arg(&topology)
            .arg("--drivers-dir")
            .arg(checkout().join("drivers"))
            .arg("--drivers-dir")
            .arg(checkout().join("tests/fixtures/drivers"))
            .arg("--runtime-dir")
            .arg(dir.path().join("runtime"))
            .arg("--audit-log")
            .arg(dir.path().join("audit.log"))
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        let mut child = cmd.spawn().expect("start power-server serve");

        // Read the address line on a thread so the wait has a deadline.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            // Keep draining so the server never blocks on a full pipe.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let line = match rx.recv_timeout(START_DEADLINE) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "power-server printed no address within {START_DEADLINE:?}; its log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        let Some(url) = line.trim().strip_prefix("listening on ") else {
            let status = child.wait().ok();
            panic!(
                "power-server did not start (stdout {line:?}, exit {status:?}); its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        assert!(
            url.starts_with("http://127.0.0.1:"),
            "the server must listen on loopback, printed {url}"
        );
        Server {
            url: url.to_string(),
            secret,
            env: self.env,
            args: self.args,
            dir,
            child: Some(child),
        }
    }
}

/// A `power-server` command isolated from the user's environment: no
/// `POWER_SERVER_*` from outside, its own `XDG_CONFIG_HOME`, the sim state
/// in the temp dir, and the secret (when given) in the environment.
fn base_command(dir: &Path, secret: &str, env: &[(OsString, OsString)]) -> Command {
    let mut cmd = Command::new(server_bin());
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("POWER_SERVER_")) {
            cmd.env_remove(key);
        }
    }
    cmd.env("XDG_CONFIG_HOME", dir.join("config"))
        .env("POWER_SIM_DIR", dir.join("sim"))
        .env_remove("RUST_LOG");
    if !secret.is_empty() {
        cmd.env("POWER_SERVER_JWT_SECRET", secret);
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd
}

/// A running `power-server serve`, stopped when dropped.
#[derive(Debug)]
pub struct Server {
    /// Its base URL, `http://127.0.0.1:PORT`.
    pub url: String,
    /// The JWT secret it was given (empty with [`Builder::no_secret_env`]).
    pub secret: String,
    env: Vec<(OsString, OsString)>,
    args: Vec<OsString>,
    /// Its private directory: `topology.d/`, `sim/` (the sim drivers'
    /// state), `runtime/`, `config/` (`XDG_CONFIG_HOME`), `audit.log`,
    /// `server.log` (its stderr).
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

/// An HTTP answer, read whole.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The body as text.
    pub body: String,
}

impl Reply {
    /// The body parsed as JSON (panics with the body if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

impl Server {
    /// Start a server with these topology fragments (file name, YAML).
    pub fn start(files: &[(&str, &str)]) -> Server {
        Server::builder().files(files).start()
    }

    /// A builder, for extra arguments or environment.
    pub fn builder() -> Builder {
        Builder {
            secret_in_env: true,
            ..Builder::default()
        }
    }

    /// Mint a token with the real `power-server token ARGS...` and the same
    /// secret (and the same extra arguments' config, if any was given with
    /// `--config` or `--secret-file`).
    pub fn token(&self, args: &[&str]) -> String {
        let out = self
            .token_command(args)
            .output()
            .expect("run power-server token");
        assert!(
            out.status.success(),
            "power-server token {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let token = String::from_utf8(out.stdout).expect("token is UTF-8");
        assert!(
            token.ends_with('\n') && token.lines().count() == 1,
            "{token:?}"
        );
        token.trim().to_string()
    }

    /// The `power-server token ARGS...` command this server's tokens come from.
    pub fn token_command(&self, args: &[&str]) -> Command {
        let mut cmd = base_command(self.dir.path(), &self.secret, &self.env);
        cmd.arg("token");
        // Secret-bearing options given to serve apply to token as well.
        let mut given = self.args.iter();
        while let Some(a) = given.next() {
            if a == "--config" || a == "--secret-file" {
                cmd.arg(a);
                if let Some(v) = given.next() {
                    cmd.arg(v);
                }
            }
        }
        cmd.args(args);
        cmd
    }

    /// The sim driver's recorded state of `node` (`on`/`off`), if any.
    pub fn sim_state(&self, node: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.path().join("sim").join(node))
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// Set the sim driver's state of `node`.
    pub fn set_sim_state(&self, node: &str, state: &str) {
        std::fs::write(self.dir.path().join("sim").join(node), format!("{state}\n")).unwrap();
    }

    /// Every sim state file, as `(node, state)`, sorted: to check that a
    /// refused request ran nothing.
    pub fn sim_states(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = std::fs::read_dir(self.dir.path().join("sim"))
            .unwrap()
            .filter_map(|e| {
                let e = e.ok()?;
                let name = e.file_name().into_string().ok()?;
                let state = std::fs::read_to_string(e.path()).ok()?;
                Some((name, state.trim().to_string()))
            })
            .collect();
        out.sort();
        out
    }

    /// The audit log's lines.
    pub fn audit_lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("audit.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// What the server has written to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Make a request: `method` and `path_and_query` (e.g. `/?nodes=n1`),
    /// with a bearer `token` if given and extra `headers`.
    pub fn request(
        &self,
        method: &str,
        path_and_query: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let response = self.send(method, path_and_query, token, headers);
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        let body = response
            .into_body()
            .read_to_string()
            .expect("read the response body");
        Reply {
            status,
            content_type,
            body,
        }
    }

    /// Make a request and return the response unread, for streaming.
    pub fn send(
        &self,
        method: &str,
        path_and_query: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> ureq::http::Response<ureq::Body> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path_and_query}", self.url));
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        agent
            .run(request.body(()).unwrap())
            .unwrap_or_else(|e| panic!("{method} {path_and_query}: {e}"))
    }

    /// GET with a token.
    pub fn get(&self, path_and_query: &str, token: &str) -> Reply {
        self.request("GET", path_and_query, Some(token), &[])
    }

    /// Send SIGTERM and wait for the server to exit (killing it after a
    /// deadline); returns its exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        signal(&child, nix::sys::signal::Signal::SIGTERM);
        wait_or_kill(&mut child)
    }

    /// Send a signal to the server.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        signal(self.child.as_ref().expect("running"), sig);
    }
}

fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, sig);
}

fn wait_or_kill(child: &mut Child) -> ExitStatus {
    if let Some(status) = daemon::wait_exit(child, STOP_DEADLINE) {
        return status;
    }
    let _ = child.kill();
    let status = child.wait().expect("wait for power-server");
    panic!("power-server did not exit within {STOP_DEADLINE:?} of SIGTERM ({status})");
}

impl Drop for Server {
    /// SIGTERM; if the server is still in its grace period after a few
    /// seconds, a second SIGTERM (which kills its drivers at once); KILL
    /// only as a last resort, since that would leave drivers behind.
    fn drop(&mut self) {
        daemon::show_log_if_failing("power-server", || self.log());
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal(&child, nix::sys::signal::Signal::SIGTERM);
        if daemon::wait_exit(&mut child, Duration::from_secs(5)).is_some() {
            return;
        }
        signal(&child, nix::sys::signal::Signal::SIGTERM);
        if daemon::wait_exit(&mut child, STOP_DEADLINE).is_some() {
            return;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Run the real `power` client against `server` with `token`, isolated from
/// the user's own settings; returns (status, stdout, stderr).
pub fn power(server: &Server, token: &str, args: &[&str]) -> (ExitStatus, String, String) {
    let home = tempfile::tempdir().expect("temp home");
    let mut cmd = Command::new(power_bin());
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("POWER_")) {
            cmd.env_remove(key);
        }
    }
    cmd.args(args)
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path().join(".config"))
        .env("POWER_URL", &server.url)
        .env("POWER_TOKEN", token)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    run(&mut cmd)
}

/// Run a command to completion with its output captured; returns (status,
/// stdout, stderr).
pub fn run(cmd: &mut Command) -> (ExitStatus, String, String) {
    let out = cmd.output().expect("run command");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Read from `reader` until a whole line is available or the reader ends.
pub fn read_line(reader: &mut impl Read) -> Option<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match reader.read(&mut byte) {
            Ok(0) => return (!line.is_empty()).then(|| String::from_utf8_lossy(&line).into()),
            Ok(_) if byte[0] == b'\n' => return Some(String::from_utf8_lossy(&line).into()),
            Ok(_) => line.push(byte[0]),
            Err(e) => panic!("reading a stream: {e}"),
        }
    }
}
