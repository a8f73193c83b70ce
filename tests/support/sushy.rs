//! A real Redfish endpoint for tests: sushy-tools' `sushy-emulator` with its
//! fake systems driver, on `127.0.0.1` at a free port, with HTTP basic auth.
//!
//! Each [`Sushy`] has its own temp dir holding the config, the htpasswd file
//! (a bcrypt entry made with Python's `bcrypt`, which sushy-tools depends
//! on, or `htpasswd -B`), the emulator's state (`SUSHY_EMULATOR_STATE_DIR`,
//! sqlite) and its log. The emulator runs in its own process group, which
//! `Drop` kills.
//!
//! ```ignore
//! let sushy = Sushy::start(&["node1", "node2"]);   // both Off
//! sushy.url;                                       // "http://127.0.0.1:PORT"
//! sushy.host;                                      // "127.0.0.1:PORT"
//! (&sushy.user, &sushy.password);                  // basic auth
//! let uuid = &sushy.systems[0].uuid;               // also the Redfish system id
//! sushy.power_state(uuid);                         // "On" / "Off"
//! sushy.wait_power_state(uuid, "On", REDFISH_DEADLINE);
//! ```
//!
//! The fake driver applies a reset after a random 1 to 11 s delay (a
//! restart turns the system Off at once, then On after the delay): poll
//! with a deadline, e.g. [`REDFISH_DEADLINE`], never expect the change at
//! once. [`Sushy::start_tls`] serves HTTPS with a self-signed certificate.
//! A missing `sushy-emulator` fails the test with a message naming
//! `scripts/install-test-deps`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::daemon::{spawn_group, start_on_free_port, stop_group, STOP_GRACE};

/// How long the emulator may take to answer its first request (Python
/// start-up on a loaded 2-core machine).
const START_DEADLINE: Duration = Duration::from_secs(60);

/// A deadline for a reset to show: the fake driver applies it after up to
/// 11 s, and the emulator is slow under load.
pub const REDFISH_DEADLINE: Duration = Duration::from_secs(40);

/// One fake system.
#[derive(Debug, Clone)]
pub struct System {
    /// Its UUID, which is also its Redfish id (`/redfish/v1/Systems/UUID`).
    pub uuid: String,
    /// Its `Name`.
    pub name: String,
}

/// A running `sushy-emulator`, stopped when dropped.
#[derive(Debug)]
pub struct Sushy {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// `127.0.0.1:PORT`.
    pub host: String,
    /// The basic-auth user.
    pub user: String,
    /// The basic-auth password (random).
    pub password: String,
    /// The fake systems, in the order given.
    pub systems: Vec<System>,
    /// With [`Sushy::start_tls`]: its self-signed certificate (for
    /// 127.0.0.1), which is also the CA that verifies it.
    pub ca_cert: Option<PathBuf>,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Sushy {
    /// Start an emulator with one system per name, all powered Off.
    pub fn start(names: &[&str]) -> Sushy {
        let systems: Vec<(&str, &str)> = names.iter().map(|n| (*n, "Off")).collect();
        Sushy::start_with(&systems)
    }

    /// Start an emulator with systems given as `(name, power state)`, the
    /// state `"On"` or `"Off"`.
    pub fn start_with(systems: &[(&str, &str)]) -> Sushy {
        Sushy::launch(systems, false)
    }

    /// Like [`Sushy::start_with`], served over HTTPS with a fresh
    /// self-signed certificate for `127.0.0.1` ([`Sushy::ca_cert`]); `url`
    /// is then `https://127.0.0.1:PORT`. Needs the `openssl` command.
    pub fn start_tls(systems: &[(&str, &str)]) -> Sushy {
        Sushy::launch(systems, true)
    }

    fn launch(systems: &[(&str, &str)], tls: bool) -> Sushy {
        let bin = which::which("sushy-emulator").unwrap_or_else(|_| {
            panic!(
                "sushy-emulator is not installed (the Redfish tests need it): \
                 run scripts/install-test-deps"
            )
        });
        let dir = tempfile::Builder::new()
            .prefix("power-sushy")
            .tempdir()
            .expect("temp dir");
        let user = "admin".to_string();
        let password = super::random_secret()[..24].to_string();
        write_htpasswd(&dir.path().join("htpasswd"), &user, &password);
        let mut entries = String::new();
        let mut list = Vec::new();
        for (name, state) in systems {
            let uuid = random_uuid();
            entries.push_str(&format!(
                "    {{'uuid': {}, 'name': {}, 'power_state': {}, 'external_notifier': False}},\n",
                py_str(&uuid),
                py_str(name),
                py_str(state)
            ));
            list.push(System {
                uuid,
                name: name.to_string(),
            });
        }
        let mut tls_config = String::new();
        let ca_cert = tls.then(|| {
            let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
            self_signed(&cert, &key);
            tls_config = format!(
                "SUSHY_EMULATOR_SSL_CERT = {}\nSUSHY_EMULATOR_SSL_KEY = {}\n",
                py_str(&cert.to_string_lossy()),
                py_str(&key.to_string_lossy())
            );
            cert
        });
        let scheme = if tls { "https" } else { "http" };
        let config = dir.path().join("sushy.conf");
        std::fs::write(
            &config,
            format!(
                "SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n\
                 SUSHY_EMULATOR_FAKE_DRIVER = True\n\
                 SUSHY_EMULATOR_STATE_DIR = {}\n\
                 SUSHY_EMULATOR_AUTH_FILE = {}\n\
                 SUSHY_EMULATOR_FAKE_SYSTEMS = [\n{entries}]\n{tls_config}",
                py_str(&dir.path().join("state").to_string_lossy()),
                py_str(&dir.path().join("htpasswd").to_string_lossy()),
            ),
        )
        .unwrap();

        let log = dir.path().join("sushy.log");
        let probe = agent(Duration::from_secs(5));
        let (port, child) = start_on_free_port(
            "sushy-emulator",
            &log,
            START_DEADLINE,
            |port| spawn(&bin, &config, dir.path(), port),
            |port| {
                // The service root needs no credentials.
                probe
                    .get(format!("{scheme}://127.0.0.1:{port}/redfish/v1/"))
                    .call()
                    .is_ok_and(|r| r.status().as_u16() == 200)
            },
        );
        let sushy = Sushy {
            url: format!("{scheme}://127.0.0.1:{port}"),
            host: format!("127.0.0.1:{port}"),
            user,
            password,
            systems: list,
            ca_cert,
            child: Some(child),
            dir,
        };
        // One GET per system, one after another, before any test's: the
        // fake driver writes its state database on a system's first read,
        // and two first reads at once can meet a locked database (an HTTP
        // 500) on a busy machine.
        for system in &sushy.systems {
            sushy.power_state(&system.uuid);
        }
        sushy
    }

    /// The emulator's log (its stdout and stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sushy.log")).unwrap_or_default()
    }

    /// The system's Redfish URL path, `/redfish/v1/Systems/UUID`.
    // A method, so a test reads it off the emulator it talks to.
    #[allow(clippy::unused_self)]
    pub fn system_path(&self, uuid: &str) -> String {
        format!("/redfish/v1/Systems/{uuid}")
    }

    /// GET the system and return its `PowerState` (`"On"`, `"Off"`, ...).
    pub fn power_state(&self, uuid: &str) -> String {
        let (status, body) = self
            .request("GET", &self.system_path(uuid), None, true)
            .unwrap_or_else(|e| panic!("GET system {uuid}: {e}"));
        assert_eq!(status, 200, "GET system {uuid}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).expect("system JSON");
        json["PowerState"]
            .as_str()
            .unwrap_or_else(|| panic!("no PowerState in {body}"))
            .to_string()
    }

    /// Poll until the system's `PowerState` is `state`, panicking after
    /// `deadline`.
    pub fn wait_power_state(&self, uuid: &str, state: &str, deadline: Duration) {
        super::poll(
            &format!("Redfish system {uuid} to be {state}"),
            deadline,
            || (self.power_state(uuid) == state).then_some(()),
        );
    }

    /// POST a `ComputerSystem.Reset` with `reset_type` (to set a state
    /// behind the driver's back); returns the HTTP status.
    pub fn reset(&self, uuid: &str, reset_type: &str) -> u16 {
        let body = format!("{{\"ResetType\": \"{reset_type}\"}}");
        let path = format!("{}/Actions/ComputerSystem.Reset", self.system_path(uuid));
        self.request("POST", &path, Some(&body), true)
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
            .0
    }

    /// A request with (or without) the right credentials: (status, body),
    /// or the transport error.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        auth: bool,
    ) -> Result<(u16, String), String> {
        let agent = agent(Duration::from_secs(30));
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.url))
            .header("Content-Type", "application/json");
        if auth {
            let token = base64(format!("{}:{}", self.user, self.password).as_bytes());
            request = request.header("Authorization", format!("Basic {token}"));
        }
        let response = match body {
            Some(body) => agent.run(request.body(body.to_string()).map_err(|e| e.to_string())?),
            None => agent.run(request.body(()).map_err(|e| e.to_string())?),
        }
        .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let text = response
            .into_body()
            .read_to_string()
            .map_err(|e| e.to_string())?;
        Ok((status, text))
    }
}

/// Start the emulator on `port` in its own process group, its output in
/// `dir/sushy.log`.
fn spawn(bin: &Path, config: &Path, dir: &Path, port: u16) -> Child {
    let log = std::fs::File::create(dir.join("sushy.log")).unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg("--config")
        .arg(config)
        .arg("-i")
        .arg("127.0.0.1")
        .arg("-p")
        .arg(port.to_string())
        // Anything it keeps in the temp dir stays in ours.
        .env("TMPDIR", dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    spawn_group(&mut cmd).unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()))
}

impl Drop for Sushy {
    fn drop(&mut self) {
        super::daemon::show_log_if_failing("sushy-emulator", || self.log());
        stop_group(self.child.take(), STOP_GRACE);
    }
}

/// An HTTP agent for the emulator: statuses are not errors, redirects are
/// not followed, and its certificate (self-signed) is not verified.
fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(timeout))
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .disable_verification(true)
                .build(),
        )
        .build()
        .into()
}

/// A fresh self-signed certificate and key for 127.0.0.1 (openssl).
fn self_signed(cert: &Path, key: &Path) {
    let openssl = which::which("openssl").unwrap_or_else(|_| {
        panic!("openssl is not installed (the Redfish TLS test needs it): run scripts/install-test-deps")
    });
    let (status, _, err) = super::run(
        Command::new(openssl)
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .arg("ec_paramgen_curve:prime256v1")
            .args(["-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1"])
            .arg("-keyout")
            .arg(key)
            .arg("-out")
            .arg(cert)
            .stdin(Stdio::null()),
    );
    assert!(status.success(), "openssl req -x509 failed: {err}");
}

/// Write an htpasswd file with one bcrypt entry for `user`. The password
/// goes to the hashing program on stdin, never on its command line.
fn write_htpasswd(path: &Path, user: &str, password: &str) {
    let python = "import bcrypt, sys; \
                  print(bcrypt.hashpw(sys.stdin.buffer.read(), bcrypt.gensalt(rounds=4)).decode())";
    let hash = pipe(Command::new("python3").args(["-c", python]), password)
        .or_else(|python_err| {
            // htpasswd -i reads the password from stdin; -n prints the entry.
            pipe(
                Command::new("htpasswd").args(["-niB", "-C", "4", user]),
                password,
            )
            .map(|line| {
                line.split_once(':')
                    .map(|(_, h)| h.to_string())
                    .unwrap_or(line)
            })
            .map_err(|e| format!("{python_err}; htpasswd: {e}"))
        })
        .unwrap_or_else(|e| {
            panic!(
                "cannot make a bcrypt hash for sushy-emulator's htpasswd \
                 (python3 with bcrypt, or htpasswd): {e}"
            )
        });
    std::fs::write(path, format!("{user}:{}\n", hash.trim())).unwrap();
}

/// Run `cmd` with `input` on stdin; its stdout's first line.
fn pipe(cmd: &mut Command, input: &str) -> Result<String, String> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let line = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    if !out.status.success() || !line.contains('$') {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(line)
}

/// A random version-4 UUID, lower-case hex.
fn random_uuid() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("random bytes");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A Python string literal for `s` (JSON's escapes are Python's too).
fn py_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// Standard base64 with padding, for a Basic authorization header.
fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
