//! A real libvirt endpoint for tests: a private `libvirtd` in session mode
//! with libvirt's test driver, reached over a UNIX socket only.
//!
//! - Run as root (as here), the daemon runs as `nobody` (a session daemon
//!   refuses to run as root); otherwise as the current user. Its `HOME` and
//!   `XDG_*` directories are in a temp dir owned by that user.
//! - Its config puts the socket in `DIR/sock/libvirt-sock`, mode 0777 with
//!   no auth, so the tests and the server (root or not) can connect; no TCP.
//! - The test driver's state lives only while a connection is open, so a
//!   `virsh event --all --loop` holds one for the daemon's whole life; the
//!   start waits until state is seen to persist from one virsh call to the
//!   next (a probe domain defined, found again, undefined).
//! - Daemon and holder each run in their own process group, which `Drop`
//!   kills.
//!
//! ```ignore
//! let lv = Libvirtd::start();
//! lv.uri;                        // "test+unix:///default?socket=/tmp/.../sock/libvirt-sock"
//! lv.domstate("test");           // "running": test:///default's own domain
//! lv.define("vm1");              // a new test domain, shut off
//! lv.virsh(&["start", "vm1"]);   // (status, stdout, stderr)
//! ```
//!
//! A missing `libvirtd` or `virsh` fails the test with a message naming
//! `scripts/install-test-deps`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::daemon::{spawn_group, stop_group, STOP_GRACE};

/// How long the daemon may take to accept connections and keep state.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// The uid and gid the daemon runs as when the tests run as root: the
/// `nobody` user's.
fn nobody() -> (u32, u32) {
    match nix::unistd::User::from_name("nobody") {
        Ok(Some(user)) => (user.uid.as_raw(), user.gid.as_raw()),
        _ => (65534, 65534),
    }
}

/// A running private `libvirtd`, stopped when dropped.
#[derive(Debug)]
pub struct Libvirtd {
    /// The connection URI: `test+unix:///default?socket=SOCKET`.
    pub uri: String,
    /// The daemon's read-write UNIX socket.
    pub socket: PathBuf,
    holder: Option<Child>,
    daemon: Option<Child>,
    dir: tempfile::TempDir,
}

impl Libvirtd {
    /// Start a daemon, hold a connection to it, and wait until the test
    /// driver's state persists between connections.
    pub fn start() -> Libvirtd {
        let libvirtd = find("libvirtd", "libvirt-daemon");
        find("virsh", "libvirt-clients");
        let dir = tempfile::Builder::new()
            .prefix("power-libvirtd")
            .tempdir()
            .expect("temp dir");
        let root = nix::unistd::geteuid().is_root();
        let (uid, gid) = nobody();
        for sub in ["run", "config", "cache", "data", "sock"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        let socket = dir.path().join("sock/libvirt-sock");
        let config = dir.path().join("libvirtd.conf");
        std::fs::write(
            &config,
            format!(
                "unix_sock_dir = \"{}\"\n\
                 unix_sock_rw_perms = \"0777\"\n\
                 unix_sock_ro_perms = \"0777\"\n\
                 unix_sock_admin_perms = \"0700\"\n\
                 auth_unix_rw = \"none\"\n\
                 auth_unix_ro = \"none\"\n",
                dir.path().join("sock").display()
            ),
        )
        .unwrap();
        if root {
            // The daemon's own files belong to it; the dir must be
            // traversable for it (tempfile makes it 0700, owned by root).
            chown_tree(dir.path(), uid, gid);
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        }

        let log = std::fs::File::create(dir.path().join("libvirtd.log")).unwrap();
        let mut cmd = if root {
            let mut cmd = Command::new(find("setpriv", "util-linux"));
            cmd.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .arg("--clear-groups")
                .arg("--")
                .arg(&libvirtd);
            cmd
        } else {
            Command::new(&libvirtd)
        };
        let d = dir.path();
        cmd.arg("--config")
            .arg(&config)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("HOME", d)
            .env("XDG_RUNTIME_DIR", d.join("run"))
            .env("XDG_CONFIG_HOME", d.join("config"))
            .env("XDG_CACHE_HOME", d.join("cache"))
            .env("XDG_DATA_HOME", d.join("data"))
            .env("TMPDIR", d)
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let daemon = spawn_group(&mut cmd).expect("start libvirtd");
        let mut lv = Libvirtd {
            uri: format!("test+unix:///default?socket={}", socket.display()),
            socket,
            holder: None,
            daemon: Some(daemon),
            dir,
        };
        lv.wait_socket();

        let mut holder = Command::new("virsh");
        holder
            .args(["--connect", &lv.uri, "event", "--all", "--loop"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(lv.dir.path().join("events.log")).unwrap())
            .stderr(std::fs::File::create(lv.dir.path().join("holder.log")).unwrap());
        lv.holder = Some(spawn_group(&mut holder).expect("start virsh event --loop"));
        lv.wait_persistent();
        lv
    }

    /// Wait until the daemon's socket exists (or the daemon died).
    fn wait_socket(&mut self) {
        let start = Instant::now();
        while !self.socket.exists() {
            if let Some(Ok(Some(status))) = self.daemon.as_mut().map(Child::try_wait) {
                panic!("libvirtd exited ({status}); its log:\n{}", self.log());
            }
            assert!(
                start.elapsed() < START_DEADLINE,
                "libvirtd made no socket at {} within {START_DEADLINE:?}; its log:\n{}",
                self.socket.display(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait until a domain defined by one virsh call is seen by the next:
    /// only then is the holder's connection keeping the test driver alive.
    fn wait_persistent(&mut self) {
        const PROBE: &str = "power-harness-probe";
        let start = Instant::now();
        loop {
            if let Some(Ok(Some(status))) = self.holder.as_mut().map(Child::try_wait) {
                panic!(
                    "virsh event --loop exited ({status}): {}\nlibvirtd's log:\n{}",
                    std::fs::read_to_string(self.dir.path().join("holder.log")).unwrap_or_default(),
                    self.log()
                );
            }
            let (found, _, _) = self.virsh(&["domstate", PROBE]);
            if found.success() {
                let (status, _, err) = self.virsh(&["undefine", PROBE]);
                assert!(status.success(), "virsh undefine {PROBE}: {err}");
                return;
            }
            self.define(PROBE);
            assert!(
                start.elapsed() < START_DEADLINE,
                "libvirtd's test driver kept no state within {START_DEADLINE:?}; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("libvirtd.log")).unwrap_or_default()
    }

    /// The lifecycle events seen by the holder connection so far.
    pub fn events(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("events.log")).unwrap_or_default()
    }

    /// A private directory next to the daemon's, for a test's own files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Run `virsh --connect URI ARGS...`; (status, stdout, stderr).
    pub fn virsh(&self, args: &[&str]) -> (ExitStatus, String, String) {
        super::run(
            Command::new("virsh")
                .arg("--quiet")
                .arg("--connect")
                .arg(&self.uri)
                .args(args)
                .stdin(Stdio::null()),
        )
    }

    /// The domain's state as `virsh domstate` prints it ("running",
    /// "shut off", ...); panics if virsh fails.
    pub fn domstate(&self, domain: &str) -> String {
        let (status, out, err) = self.virsh(&["domstate", domain]);
        assert!(status.success(), "virsh domstate {domain}: {err}");
        out.trim().to_string()
    }

    /// Write the XML of a test-driver domain `name` and return its path.
    pub fn domain_xml(&self, name: &str) -> PathBuf {
        let xml = self.dir.path().join(format!("{name}.xml"));
        std::fs::write(
            &xml,
            format!(
                "<domain type='test'><name>{name}</name><memory>8192</memory>\
                 <os><type>hvm</type></os></domain>\n"
            ),
        )
        .unwrap();
        xml
    }

    /// Define a new test-driver domain `name`, shut off.
    pub fn define(&self, name: &str) {
        let xml = self.domain_xml(name);
        let (status, _, err) = self.virsh(&["define", xml.to_str().unwrap()]);
        assert!(status.success(), "virsh define {name}: {err}");
    }
}

impl Drop for Libvirtd {
    fn drop(&mut self) {
        super::daemon::show_log_if_failing("libvirtd", || self.log());
        stop_group(self.holder.take(), STOP_GRACE);
        stop_group(self.daemon.take(), STOP_GRACE);
    }
}

/// The full path of `program`, or a failure naming the package.
fn find(program: &str, package: &str) -> PathBuf {
    which::which(program)
        .or_else(|_| which::which(Path::new("/usr/sbin").join(program)))
        .unwrap_or_else(|_| {
            panic!(
                "{program} is not installed (the libvirt tests need Debian's {package}): \
                 run scripts/install-test-deps"
            )
        })
}

/// Give `path` and everything under it to `uid` and `gid`.
fn chown_tree(path: &Path, uid: u32, gid: u32) {
    let owner = Some(nix::unistd::Uid::from_raw(uid));
    let group = Some(nix::unistd::Gid::from_raw(gid));
    nix::unistd::chown(path, owner, group).unwrap();
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            chown_tree(&entry.unwrap().path(), uid, gid);
        }
    }
}
