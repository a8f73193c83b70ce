//! Real IPMI BMCs for tests: OpenIPMI's `ipmi_sim`, one process per BMC,
//! each on its own loopback address (`127.0.X.Y`) at the standard port 623,
//! with a lanplus (RMCP+) channel and one admin user.
//!
//! Power is simulated by a `chassis_control` program (a small shell script
//! in the temp dir) that keeps the state in a file holding `0` or `1` and
//! appends every request it gets to an events file (`get power`,
//! `set power 1`, `set reset 1`, `set shutdown 1`, ...), so a test can see
//! a restart that leaves the power on.
//!
//! Each BMC gets its own address from a process-wide counter that starts at
//! a random point of 127.0.10.1-127.0.250.254, skipping addresses whose
//! port 623 is taken: tests in parallel threads (and other test processes)
//! never share one. Every tool (ipmitool, ipmipower, fence_ipmilan) then
//! addresses a BMC by host alone, on the standard port.
//!
//! ```ignore
//! let sim = IpmiSim::start(4);              // four BMCs, all powered off
//! let bmc = &sim.bmcs[0];
//! bmc.addr;                                 // "127.0.37.12"
//! bmc.port;                                 // 623
//! (&bmc.user, &bmc.password);               // "admin", a random password
//! bmc.power();                              // false (reads bmc.state_file)
//! bmc.set_power(true);                      // as if pressed at the machine
//! bmc.events();                             // ["get power", "set power 1", ...]
//! bmc.ipmitool(&["chassis", "power", "status"]); // (status, stdout, stderr)
//! let dead = IpmiSim::dead_addr();          // a loopback address nothing answers on
//! ```
//!
//! ipmitool needs `-C 3` (cipher suite 3) against ipmi_sim: without it each
//! call waits about 10 s for a cipher-suite answer that never comes.
//! [`Bmc::ipmitool`] passes it. The password travels in `IPMI_PASSWORD`
//! with `-E`, never on a command line.
//!
//! Dropping the [`IpmiSim`] stops every `ipmi_sim` (SIGTERM to its process
//! group, then SIGKILL). A missing `ipmi_sim` or `ipmitool` fails the test
//! with a message naming `scripts/install-test-deps`.

use std::net::{Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::daemon::{spawn_group, stop_group};

/// The standard IPMI-over-LAN port every simulated BMC listens on.
pub const IPMI_PORT: u16 = 623;
/// The cipher suite ipmitool must ask ipmi_sim for (`-C 3`).
pub const CIPHER: &str = "3";
/// How long one BMC may take to answer its first status.
const READY_DEADLINE: Duration = Duration::from_secs(30);
/// How long an `ipmi_sim` may take to exit after SIGTERM.
const STOP_DEADLINE: Duration = Duration::from_secs(5);
/// First and last third octet of the addresses handed out (127.0.X.Y).
const OCTET3: std::ops::RangeInclusive<u32> = 10..=250;
/// Fourth octets used: never .0 or .255.
const OCTET4: std::ops::RangeInclusive<u32> = 1..=254;

/// A set of simulated BMCs, stopped when dropped.
#[derive(Debug)]
pub struct IpmiSim {
    /// The BMCs, in the order they were started.
    pub bmcs: Vec<Bmc>,
    /// Holds every BMC's config, state and log files.
    pub dir: tempfile::TempDir,
}

/// One simulated BMC: an `ipmi_sim` process and its power state file.
#[derive(Debug)]
pub struct Bmc {
    /// Its loopback address, e.g. `127.0.37.12`.
    pub addr: String,
    /// Its UDP port, always [`IPMI_PORT`].
    pub port: u16,
    /// The admin user's name (`admin`).
    pub user: String,
    /// The admin user's password: random, unique to this BMC.
    pub password: String,
    /// The power state: a file holding `0` (off) or `1` (on).
    pub state_file: PathBuf,
    /// Every request the chassis control program got, one per line.
    pub events_file: PathBuf,
    /// `ipmi_sim`'s own output (startup errors land here).
    pub log_file: PathBuf,
    child: Option<Child>,
}

impl IpmiSim {
    /// Start `n` BMCs, all powered off, and wait until each answers a
    /// `chassis power status` through ipmitool. Panics (naming the BMC and
    /// its log) if one does not within 30 s.
    pub fn start(n: usize) -> IpmiSim {
        IpmiSim::start_inner(n, None)
    }

    /// [`IpmiSim::start`], with one `password` for the admin user of every
    /// BMC (as a site with one BMC password has), instead of one each.
    pub fn start_with_password(n: usize, password: &str) -> IpmiSim {
        IpmiSim::start_inner(n, Some(password))
    }

    fn start_inner(n: usize, password: Option<&str>) -> IpmiSim {
        require("ipmi_sim");
        require("ipmitool");
        let dir = tempfile::Builder::new()
            .prefix("ipmi-sim-test")
            .tempdir()
            .expect("temp dir");
        let control = dir.path().join("chassis-control");
        std::fs::write(&control, CHASSIS_CONTROL).unwrap();
        make_executable(&control);
        let mut bmcs = Vec::with_capacity(n);
        for i in 0..n {
            bmcs.push(start_bmc(dir.path(), &control, i, 0, password));
        }
        // Readiness in a second pass, so the processes start up together.
        for (i, bmc) in bmcs.iter_mut().enumerate() {
            let mut attempt = 0;
            // Another process may take the address between the check and
            // ipmi_sim's own bind: then start again on the next one.
            while let Err(log) = bmc.wait_ready() {
                attempt += 1;
                if !log.contains("Address already in use") || attempt > 3 {
                    panic!("ipmi_sim at {} exited at start; its log:\n{log}", bmc.addr);
                }
                *bmc = start_bmc(dir.path(), &control, i, attempt, password);
            }
        }
        IpmiSim { bmcs, dir }
    }

    /// A loopback address with no BMC: port 623 is free on it, and it
    /// comes from the same counter as the BMCs' addresses, so no BMC of
    /// this test process will take it. An IPMI client pointed at it gets no
    /// answer and times out.
    pub fn dead_addr() -> String {
        next_free_addr().to_string()
    }
}

impl Drop for Bmc {
    /// Stop this `ipmi_sim`: also when a test, or [`IpmiSim::start`]
    /// itself, panics half-way.
    fn drop(&mut self) {
        let name = format!("ipmi_sim at {} (its chassis control requests)", self.addr);
        super::daemon::show_log_if_failing(&name, || self.events().join("\n"));
        self.stop();
    }
}

impl Bmc {
    /// The simulated power state: true when on.
    pub fn power(&self) -> bool {
        let text = std::fs::read_to_string(&self.state_file)
            .unwrap_or_else(|e| panic!("read {}: {e}", self.state_file.display()));
        match text.trim() {
            "1" => true,
            "0" => false,
            other => panic!("{}: unexpected state {other:?}", self.state_file.display()),
        }
    }

    /// Set the simulated power state, as if someone pressed the button.
    pub fn set_power(&self, on: bool) {
        std::fs::write(&self.state_file, if on { "1\n" } else { "0\n" }).unwrap();
    }

    /// Make the simulated machine's operating system honour an ACPI soft
    /// off (`chassis power soft`, a `set shutdown 1`) by powering off, as
    /// a running OS does; without this the soft off is recorded only.
    pub fn honour_soft_off(&self) {
        let mut acpi = self.state_file.clone().into_os_string();
        acpi.push(".acpi");
        std::fs::write(acpi, "").unwrap();
    }

    /// The chassis control requests so far (`get power`, `set power 1`,
    /// `set reset 1`, `set power 0`, `set shutdown 1`, ...), oldest first.
    pub fn events(&self) -> Vec<String> {
        std::fs::read_to_string(&self.events_file)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Only the requests that change something (`set ...`), oldest first.
    pub fn set_events(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter(|e| e.starts_with("set "))
            .collect()
    }

    /// Run `ipmitool -I lanplus -H ADDR -p PORT -U USER -E -C 3 -N 1 -R 1
    /// ARGS...` against this BMC with the password in `IPMI_PASSWORD`;
    /// returns (status, stdout, stderr).
    pub fn ipmitool(&self, args: &[&str]) -> (ExitStatus, String, String) {
        let out = self
            .ipmitool_command()
            .args(args)
            .output()
            .expect("run ipmitool");
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The `ipmitool` command for this BMC, without the request words.
    pub fn ipmitool_command(&self) -> Command {
        let mut cmd = Command::new("ipmitool");
        cmd.args(["-I", "lanplus", "-H", &self.addr, "-p"])
            .arg(self.port.to_string())
            .args(["-U", &self.user, "-E", "-C", CIPHER, "-N", "1", "-R", "1"])
            .env("IPMI_PASSWORD", &self.password)
            .stdin(Stdio::null());
        cmd
    }

    /// Wait until the BMC answers a status request. Err(its log) if
    /// `ipmi_sim` exited; a panic, with the log, after the deadline.
    fn wait_ready(&mut self) -> Result<(), String> {
        let start = Instant::now();
        // First its socket: cheap to check, and an ipmitool call before the
        // bind would spend its whole timeout waiting.
        let hex = udp_hex(&self.addr, self.port);
        loop {
            self.check_alive()?;
            if udp_bound(&hex) {
                break;
            }
            if start.elapsed() > READY_DEADLINE {
                panic!(
                    "ipmi_sim at {} did not bind UDP port {} within {READY_DEADLINE:?}; its log:\n{}",
                    self.addr,
                    self.port,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        loop {
            self.check_alive()?;
            let (status, stdout, stderr) = self.ipmitool(&["chassis", "power", "status"]);
            if status.success() && stdout.contains("Chassis Power is") {
                return Ok(());
            }
            if start.elapsed() > READY_DEADLINE {
                panic!(
                    "ipmi_sim at {} did not answer within {READY_DEADLINE:?}: ipmitool {status}: {stdout}{stderr}; its log:\n{}",
                    self.addr,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Err(its log) if `ipmi_sim` has exited.
    fn check_alive(&mut self) -> Result<(), String> {
        let child = self.child.as_mut().expect("running");
        if let Some(status) = child.try_wait().expect("wait for ipmi_sim") {
            self.child = None;
            return Err(format!("({status})\n{}", self.log()));
        }
        Ok(())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }

    /// SIGTERM to the process group (and whatever it started, a chassis
    /// control run), SIGKILL after a deadline.
    fn stop(&mut self) {
        stop_group(self.child.take(), STOP_DEADLINE);
    }
}

/// The chassis control program: `chassis-control STATE EVENTS DEVICE get
/// power` prints `power:0|1`; `... set power 0|1` writes the state; `set
/// reset|shutdown|boot|identify ...` is recorded only (a reset of a running
/// machine leaves it on), but a shutdown powers off a machine that
/// [`Bmc::honour_soft_off`]. ipmi_sim reads a `get` answer from stdout and
/// takes a non-zero exit as failure.
/// (The script is shared with `bench/`.)
const CHASSIS_CONTROL: &str = include_str!("../fixtures/ipmi-chassis-control");

/// A BMC's LAN configuration, its `{...}` to fill in.
const LAN_CONF: &str = include_str!("../fixtures/ipmi-sim-lan.conf");

/// The commands that make ipmi_sim's emulator a BMC.
const EMU_CMDS: &str = include_str!("../fixtures/ipmi-sim-emu.cmds");

/// Start one `ipmi_sim` in `root/bmcN` (`bmcN.ATTEMPT` after the first)
/// on a fresh address, with `password` (else a random one) for its admin.
fn start_bmc(root: &Path, control: &Path, i: usize, attempt: usize, password: Option<&str>) -> Bmc {
    let dir = match attempt {
        0 => root.join(format!("bmc{i}")),
        n => root.join(format!("bmc{i}.{n}")),
    };
    std::fs::create_dir(&dir).unwrap();
    std::fs::create_dir(dir.join("persist")).unwrap();
    let addr = next_free_addr().to_string();
    // 16 bytes at most: the limit of IPMI 1.5 (`-I lan`); 2.0 allows 20.
    let password = password.map_or_else(
        || format!("pw{}", &super::random_secret()[..14]),
        str::to_string,
    );
    let state_file = dir.join("power");
    let events_file = dir.join("events");
    let log_file = dir.join("ipmi_sim.log");
    std::fs::write(&state_file, "0\n").unwrap();
    std::fs::write(&events_file, "").unwrap();
    // The same files as the bench's BMCs (bench/bench.py), filled in.
    let lan_conf = LAN_CONF
        .replace("{name}", &format!("bmc{i}"))
        .replace("{addr}", &addr)
        .replace("{port}", &IPMI_PORT.to_string())
        .replace("{control}", &control.display().to_string())
        .replace("{state}", &state_file.display().to_string())
        .replace("{events}", &events_file.display().to_string())
        .replace("{password}", &password);
    std::fs::write(dir.join("lan.conf"), lan_conf).unwrap();
    std::fs::write(dir.join("emu.cmds"), EMU_CMDS).unwrap();
    let log = std::fs::File::create(&log_file).unwrap();
    let child = spawn_group(
        Command::new("ipmi_sim")
            .arg("-n")
            .arg("-c")
            .arg(dir.join("lan.conf"))
            .arg("-f")
            .arg(dir.join("emu.cmds"))
            .arg("-s")
            .arg(dir.join("persist"))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log),
    )
    .expect("start ipmi_sim");
    Bmc {
        addr,
        port: IPMI_PORT,
        user: "admin".into(),
        password,
        state_file,
        events_file,
        log_file,
        child: Some(child),
    }
}

/// The next address from the process-wide counter whose UDP port 623 is
/// free (checked by binding it for a moment).
fn next_free_addr() -> Ipv4Addr {
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    let span3 = OCTET3.end() - OCTET3.start() + 1;
    let span4 = OCTET4.end() - OCTET4.start() + 1;
    let total = span3 * span4;
    let counter = NEXT.get_or_init(|| {
        let mut bytes = [0u8; 4];
        getrandom::fill(&mut bytes).expect("random bytes");
        AtomicU32::new(u32::from_ne_bytes(bytes) % total)
    });
    for _ in 0..1000 {
        let k = counter.fetch_add(1, Ordering::Relaxed) % total;
        let addr = Ipv4Addr::new(
            127,
            0,
            (OCTET3.start() + k / span4) as u8,
            (OCTET4.start() + k % span4) as u8,
        );
        match UdpSocket::bind((addr, IPMI_PORT)) {
            Ok(_) => return addr,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => panic!(
                "cannot bind UDP {addr}:{IPMI_PORT} ({e}): the IPMI tests run ipmi_sim on the \
                 standard port 623, which needs root or CAP_NET_BIND_SERVICE"
            ),
            Err(_) => continue,
        }
    }
    panic!("no free loopback address for a simulated BMC after 1000 tries");
}

/// `/proc/net/udp`'s form of a local address: `0100007F:026F`.
fn udp_hex(addr: &str, port: u16) -> String {
    let ip: Ipv4Addr = addr.parse().expect("an IPv4 address");
    // The kernel prints the address as a host-order u32 of network bytes.
    let n = u32::from_ne_bytes(ip.octets());
    format!("{n:08X}:{port:04X}")
}

/// Whether some socket is bound to `hex` (see [`udp_hex`]).
fn udp_bound(hex: &str) -> bool {
    std::fs::read_to_string("/proc/net/udp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .any(|l| l.split_whitespace().nth(1) == Some(hex))
}

/// Fail clearly when a program the simulator needs is not installed.
fn require(program: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()));
    assert!(
        found,
        "{program} is not installed: run scripts/install-test-deps (it installs \
         openipmi and ipmitool)"
    );
}

fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}
