//! The core through its library: real topology files, real driver
//! executables, the real engine. Each test says what it protects.

use power_server::engine::{Engine, EngineOptions};
use power_server::load::{LoadSettings, Loaded};
use power_server::wire::{Action, CommandAttributes, PowerState};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A topology in a temp directory, loaded with the checkout's and the test
/// fixtures' drivers; `out` is where fixture drivers write (`FIXTURE_OUT`).
pub struct Fixture {
    dir: tempfile::TempDir,
    pub loaded: Arc<Loaded>,
}

impl Fixture {
    pub fn new(files: &[(&str, &str)]) -> Fixture {
        Self::prepared(files, |_| {})
    }

    /// As [`Fixture::new`], with `prepare` run on the fixture's directory
    /// before the load (to put drivers in its `drivers/`).
    pub fn prepared(files: &[(&str, &str)], prepare: impl FnOnce(&Path)) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let topology = dir.path().join("topology.d");
        std::fs::create_dir_all(&topology).unwrap();
        std::fs::create_dir_all(dir.path().join("out")).unwrap();
        for (name, text) in files {
            std::fs::write(topology.join(name), text).unwrap();
        }
        prepare(dir.path());
        let loaded = Self::load(dir.path());
        Fixture { dir, loaded }
    }

    fn load(dir: &Path) -> Arc<Loaded> {
        let settings = LoadSettings {
            topology_named: true,
            topology_files: Vec::new(),
            protected_groups: Vec::new(),
            topology_dirs: vec![dir.join("topology.d")],
            drivers_dirs: vec![
                checkout().join("drivers"),
                checkout().join("tests/fixtures/drivers"),
                // A test's own drivers, when it makes any.
                dir.join("drivers"),
            ],
            runtime_dir: Some(dir.join("run")),
        };
        Arc::new(Loaded::read(&settings).unwrap_or_else(|e| panic!("{e}")))
    }

    /// The same files loaded again, as a reload does: a new load, while
    /// runs on the old one may go on.
    pub fn reload(&self) -> Arc<Loaded> {
        Self::load(self.dir.path())
    }

    /// The fixture's own drivers directory (looked in last, so it wins).
    pub fn drivers(&self) -> PathBuf {
        self.dir.path().join("drivers")
    }

    pub fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    /// An engine whose drivers inherit only what a test chooses, plus
    /// `FIXTURE_OUT` and `POWER_SIM_DIR` pointing into this fixture.
    pub fn engine(&self, concurrency: usize, extra: &[(&str, &str)]) -> Arc<Engine> {
        self.engine_with(concurrency, extra, EngineOptions::default())
    }

    /// [`Fixture::engine`], with `options`.
    pub fn engine_with(
        &self,
        concurrency: usize,
        extra: &[(&str, &str)],
        options: EngineOptions,
    ) -> Arc<Engine> {
        let mut env: Vec<(OsString, OsString)> = vec![
            ("PATH".into(), std::env::var_os("PATH").unwrap()),
            ("FIXTURE_OUT".into(), self.out().into()),
            ("POWER_SIM_DIR".into(), self.dir.path().join("sim").into()),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.into(), v.into())));
        Engine::with(concurrency, env, options)
    }

    pub async fn run(
        &self,
        engine: &Arc<Engine>,
        action: Action,
        nodes: &[&str],
    ) -> Vec<CommandAttributes> {
        let nodes = nodes.iter().map(ToString::to_string).collect();
        engine.run_all(self.loaded.clone(), action, nodes).await
    }
}

pub fn checkout() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The environment a fixture driver recorded for `node`.
fn recorded_env(out: &Path, node: &str) -> BTreeMap<String, String> {
    let raw = std::fs::read(out.join(format!("{node}.env"))).unwrap();
    raw.split(|b| *b == 0)
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let kv = String::from_utf8(kv.to_vec()).unwrap();
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// Poll `condition` until it holds or `limit` passes.
pub fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A process is gone once it no longer exists or is only a zombie.
pub fn gone(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
    }
}

const HOSTILE: &str = r#"
platforms:
  dump:
    driver: dump-env
    variables: [name, a, b, c, d, e, absent]
  inline:
    variables: [a, b, c, d, e]
    status: |-
      for v in a b c d e; do printf '%s\0' "$v=${!v}"; done >"$FIXTURE_OUT/$POWER_NODE.env"
      exit 111
static_nodes:
  hostile:
    platform: dump
    a: "$(touch $FIXTURE_OUT/pwned)"
    b: "`touch $FIXTURE_OUT/pwned`"
    c: "a;b && touch $FIXTURE_OUT/pwned"
    d: 'a''b"c'
    e: "line1\nline2"
    undeclared: "should not be seen"
  inline1:
    platform: inline
    a: "$(touch $FIXTURE_OUT/pwned)"
    b: "`touch $FIXTURE_OUT/pwned`"
    c: "a;b && touch $FIXTURE_OUT/pwned"
    d: 'a''b"c'
    e: "line1\nline2"
"#;

/// Values reach drivers literally; nothing in them is ever executed, and a
/// driver sees exactly the server's environment (less its own settings)
/// plus the declared variables and the protocol's three.
#[tokio::test(flavor = "multi_thread")]
async fn drivers_see_exactly_the_declared_variables_literally() {
    let f = Fixture::new(&[("t.yaml", HOSTILE)]);
    let engine = f.engine(
        4,
        &[
            ("POWER_SERVER_JWT_SECRET", "s3cret"),
            ("POWER_SERVER_BIND", "x"),
            ("absent", "server"),
        ],
    );
    let results = f
        .run(&engine, Action::Status, &["hostile", "inline1"])
        .await;
    assert!(results[0].success, "{:?}", results[0]);
    assert_eq!(results[1].state, Some(PowerState::Off), "{:?}", results[1]);

    let expected_values = [
        ("a", "$(touch $FIXTURE_OUT/pwned)"),
        ("b", "`touch $FIXTURE_OUT/pwned`"),
        ("c", "a;b && touch $FIXTURE_OUT/pwned"),
        ("d", "a'b\"c"),
        ("e", "line1\nline2"),
    ];
    let env = recorded_env(&f.out(), "hostile");
    let mut expected: BTreeMap<String, String> = expected_values
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    expected.insert("name".into(), "hostile".into());
    expected.insert("PATH".into(), std::env::var("PATH").unwrap());
    expected.insert("FIXTURE_OUT".into(), f.out().display().to_string());
    expected.insert(
        "POWER_SIM_DIR".into(),
        f.dir.path().join("sim").display().to_string(),
    );
    expected.insert("POWER_ACTION".into(), "status".into());
    expected.insert("POWER_NODE".into(), "hostile".into());
    expected.insert("POWER_PLATFORM".into(), "dump".into());
    // sh itself adds PWD; nothing else may appear.
    let mut env = env;
    env.remove("PWD");
    assert_eq!(
        env, expected,
        "no secret, no undeclared variable, no inherited `absent`"
    );
    assert_eq!(
        std::fs::read_to_string(f.out().join("hostile.argv")).unwrap(),
        "status\n"
    );

    let inline = recorded_env(&f.out(), "inline1");
    for (k, v) in expected_values {
        assert_eq!(inline[k], v, "inline commands see {k} literally too");
    }
    assert!(!f.out().join("pwned").exists(), "a value was executed");
}

/// A hung driver that left a grandchild behind is killed at its timeout,
/// whole process group and all.
#[tokio::test(flavor = "multi_thread")]
async fn a_hung_driver_and_its_grandchild_are_killed_at_the_timeout() {
    let f = Fixture::new(&[(
        "t.yaml",
        "platforms:\n  hang:\n    driver: hang\n    timeout: 1s\nstatic_nodes:\n  h1:\n    platform: hang\n",
    )]);
    let engine = f.engine(4, &[]);
    let results = f.run(&engine, Action::PowerOn, &["h1"]).await;
    let r = &results[0];
    assert!(!r.success);
    assert_eq!(r.exit_code, None);
    assert_eq!(
        r.error.as_deref(),
        Some("timed out after 1s; driver killed (last output: hanging)")
    );
    assert!((1000..10_000).contains(&r.duration_ms), "{}", r.duration_ms);
    for file in ["h1.leader", "h1.grandchild"] {
        let pid = std::fs::read_to_string(f.out().join(file)).unwrap();
        assert!(
            eventually(Duration::from_secs(5), || gone(&pid)),
            "{file} {pid} still running"
        );
    }
}

/// Stopping the engine (server shutdown) kills drivers still running after
/// the grace period, and refuses new runs.
#[tokio::test(flavor = "multi_thread")]
async fn shutdown_kills_what_outlives_the_grace_period() {
    let f = Fixture::new(&[(
        "t.yaml",
        "platforms:\n  hang:\n    driver: hang\nstatic_nodes:\n  h[1-3]:\n    platform: hang\n",
    )]);
    let engine = f.engine(4, &[]);
    let mut rx = engine.run(
        f.loaded.clone(),
        Action::PowerOff,
        vec!["h1".into(), "h2".into(), "h3".into()],
    );
    assert!(eventually(Duration::from_secs(10), || (1..=3)
        .all(|i| f.out().join(format!("h{i}.grandchild")).exists())));
    engine.shutdown(Duration::from_millis(200)).await;
    assert_eq!(engine.in_flight(), 0);
    for _ in 0..3 {
        let r = rx.recv().await.unwrap();
        assert!(!r.success);
        assert!(
            r.error
                .as_deref()
                .unwrap()
                .starts_with("stopped: the server is shutting down"),
            "{r:?}"
        );
    }
    for i in 1..=3 {
        for kind in ["leader", "grandchild"] {
            let pid = std::fs::read_to_string(f.out().join(format!("h{i}.{kind}"))).unwrap();
            assert!(
                eventually(Duration::from_secs(5), || gone(&pid)),
                "h{i} {kind} still running"
            );
        }
    }
    let after = f.run(&engine, Action::Status, &["h1"]).await;
    assert_eq!(
        after[0].error.as_deref(),
        Some("not run: the server is shutting down")
    );
}

/// Runs still queued behind the concurrency bound when shutdown begins
/// never start: they fail as not run, and only the running drivers are
/// stopped.
#[tokio::test(flavor = "multi_thread")]
async fn shutdown_never_starts_a_queued_run() {
    let f = Fixture::new(&[(
        "t.yaml",
        "platforms:\n  hang:\n    driver: hang\nstatic_nodes:\n  h[1-10]:\n    platform: hang\n",
    )]);
    // A request may hold 3 of the 4 slots.
    let engine = f.engine(4, &[]);
    let names: Vec<String> = (1..=10).map(|i| format!("h{i}")).collect();
    let mut rx = engine.run(f.loaded.clone(), Action::PowerOn, names);
    let started = || {
        std::fs::read_dir(f.out()).map_or(0, |d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".leader"))
            })
            .count()
        })
    };
    assert!(eventually(Duration::from_secs(10), || started() == 3));
    engine.shutdown(Duration::from_millis(200)).await;
    let mut errors = BTreeMap::new();
    for _ in 0..10 {
        let r = rx.recv().await.unwrap();
        assert!(!r.success, "{r:?}");
        let error = r.error.unwrap();
        let kind = error.split(':').next().unwrap().to_string();
        *errors.entry(kind).or_insert(0) += 1;
    }
    assert_eq!(
        errors,
        BTreeMap::from([("not run".to_string(), 7), ("stopped".to_string(), 3)])
    );
    assert_eq!(started(), 3, "a queued driver was started during shutdown");
}

fn rss_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// 100 MB of driver output costs a bounded buffer, and the tail (with the
/// last line) is what is kept. Measured in a process of its own (this
/// test binary again, running this test alone): the tests running beside
/// it in this one move the process's peak memory.
#[tokio::test(flavor = "multi_thread")]
async fn a_flooding_driver_does_not_grow_memory_past_the_bound() {
    use power_server::driver::{plan, spawn};
    const ALONE: &str = "POWER_TEST_FLOOD_ALONE";
    if std::env::var_os(ALONE).is_none() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "core::a_flooding_driver_does_not_grow_memory_past_the_bound",
                "--test-threads=1",
                "--nocapture",
            ])
            .env(ALONE, "1")
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{said}");
        assert!(
            said.contains("1 passed"),
            "the test did not run alone: {said}"
        );
        return;
    }
    let f = Fixture::new(&[(
        "t.yaml",
        "platforms:\n  flood:\n    driver: flood\nstatic_nodes:\n  f1:\n    platform: flood\n",
    )]);
    let before = rss_kib("VmRSS:");
    let t = &f.loaded.topology;
    let node = t.node("f1").unwrap();
    let invocation = plan(
        &[("PATH".into(), std::env::var_os("PATH").unwrap())],
        f.loaded.drivers.by_platform["flood"].path.clone(),
        &t.platforms["flood"],
        node,
        Action::Status,
    );
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let (outcome, captured) = spawn::run(&invocation, stop, None).await;
    drop(stop_tx);
    assert_eq!(outcome.exit, power_server::driver::Exit::Code(0));
    assert_eq!(captured.stdout.len(), spawn::OUTPUT_LIMIT);
    assert!(captured.stdout.ends_with(b"xxx\nend of flood\n"));
    assert_eq!(captured.stderr, b"flood finished\n");
    let grown_mib = rss_kib("VmHWM:").saturating_sub(before) / 1024;
    assert!(
        grown_mib < 40,
        "peak memory grew by {grown_mib} MiB reading 100 MB"
    );
    // And through the engine, the result is a plain success.
    let r = &f.run(&f.engine(2, &[]), Action::PowerOn, &["f1"]).await[0];
    assert!(r.success && r.error.is_none(), "{r:?}");
}

fn counts_and_overlaps(out: &Path) -> (Vec<usize>, String) {
    let counts = std::fs::read_to_string(out.join("counts")).unwrap();
    let counts = counts.lines().map(|l| l.trim().parse().unwrap()).collect();
    let overlaps = std::fs::read_to_string(out.join("overlaps")).unwrap_or_default();
    (counts, overlaps)
}

/// 200 nodes under a global bound of 10: never more than 10 drivers at
/// once, yet they do run in parallel.
#[tokio::test(flavor = "multi_thread")]
async fn the_global_bound_holds_over_200_nodes() {
    let f = Fixture::new(&[("t.yaml", "platforms:\n  count:\n    driver: count\nstatic_nodes:\n  n[001-200]:\n    platform: count\n")]);
    let nodes: Vec<String> = (1..=200).map(|i| format!("n{i:03}")).collect();
    let refs: Vec<&str> = nodes.iter().map(String::as_str).collect();
    let results = f.run(&f.engine(10, &[]), Action::PowerOn, &refs).await;
    assert_eq!(results.len(), 200);
    assert!(
        results.iter().all(|r| r.success),
        "{:?}",
        results.iter().find(|r| !r.success)
    );
    let order: Vec<&str> = results.iter().map(|r| r.node_name.as_str()).collect();
    assert_eq!(order, refs, "run_all answers in the order asked");
    let (counts, overlaps) = counts_and_overlaps(&f.out());
    assert_eq!(counts.len(), 200);
    let max = counts.iter().copied().max().unwrap();
    assert!(max <= 10, "{max} drivers ran at once under a bound of 10");
    assert!(max > 1, "drivers never ran in parallel");
    assert_eq!(overlaps, "");
}

/// A platform's own `concurrency` bounds it below the global bound.
#[tokio::test(flavor = "multi_thread")]
async fn a_platform_bound_holds_under_a_larger_global_one() {
    let f = Fixture::new(&[(
        "t.yaml",
        "platforms:\n  count:\n    driver: count\n    concurrency: 3\nstatic_nodes:\n  n[01-30]:\n    platform: count\n",
    )]);
    let nodes: Vec<String> = (1..=30).map(|i| format!("n{i:02}")).collect();
    let refs: Vec<&str> = nodes.iter().map(String::as_str).collect();
    let results = f.run(&f.engine(50, &[]), Action::PowerOn, &refs).await;
    assert!(results.iter().all(|r| r.success));
    let (counts, _) = counts_and_overlaps(&f.out());
    let max = counts.iter().copied().max().unwrap();
    assert!(
        (2..=3).contains(&max),
        "max {max} at once with concurrency 3"
    );
}

/// A large request cannot take every slot: a later request of one node
/// runs beside it instead of waiting for all of it.
#[tokio::test(flavor = "multi_thread")]
async fn a_large_request_leaves_room_for_a_small_one() {
    let f = Fixture::new(&[(
        "t.yaml",
        "platforms:\n  count:\n    driver: count\nstatic_nodes:\n  n[01-12]:\n    platform: count\n  lone:\n    platform: count\n",
    )]);
    let engine = f.engine(4, &[("hold", "0.5")]);
    let names: Vec<String> = (1..=12).map(|i| format!("n{i:02}")).collect();
    let mut large = engine.run(f.loaded.clone(), Action::PowerOn, names);
    let running = || std::fs::read_dir(f.out().join("running")).map_or(0, Iterator::count);
    assert!(eventually(Duration::from_secs(10), || running() >= 3));
    let small = f.run(&engine, Action::PowerOn, &["lone"]).await;
    assert!(small[0].success, "{small:?}");
    let mut done = 0;
    while large.try_recv().is_ok() {
        done += 1;
    }
    assert!(
        done <= 6,
        "the one-node request waited for {done} of the 12 runs before it"
    );
    let (counts, _) = counts_and_overlaps(&f.out());
    assert!(counts.iter().all(|&c| c <= 4), "{counts:?}");
}

/// Drivers run 10 nicer than the thread that starts them, and the
/// server's engine threads 10 nicer than its API's, so the API keeps
/// answering while hundreds of drivers compete for the CPU. A persistent
/// driver runs at the priority of the runtime its chunks run on: in the
/// server, the API's, since a request waits for every chunk. A one-shot
/// batch chunk, a process for each, stays on the engine's threads.
#[tokio::test(flavor = "multi_thread")]
async fn drivers_run_nicer_than_the_server() {
    let f = Fixture::new(&[(
        "t.yaml",
        "platforms:\n  p:\n    status: 'test \"$(nice)\" -eq \"$EXPECTED\" || { echo \"nice $(nice)\" >&2; exit 1; }'\n\
         \x20 kept:\n    driver: persistent\n    batch: true\n    persistent: true\n    variables: [mode]\n\
         \x20 chunked:\n    batch: true\n    status: 'read -r head; read -r id rest; n=$(nice); if test \"$n\" -eq \"$EXPECTED\"; then echo \"$id on\"; else echo \"$id error nice $n\"; fi'\n\
         static_nodes:\n  n1: {platform: p}\n  k1: {platform: kept, mode: nice}\n  b1: {platform: chunked}\n",
    )]);
    let mine = std::process::Command::new("nice").output().unwrap();
    let mine: i32 = String::from_utf8_lossy(&mine.stdout)
        .trim()
        .parse()
        .unwrap();
    let expected = (mine + 10).min(19).to_string();
    let engine = f.engine(2, &[("EXPECTED", &expected)]);
    let r = &f.run(&engine, Action::Status, &["n1"]).await[0];
    assert!(r.success, "{r:?}");

    // On the engine's own threads (as the server runs it), 10 nicer again.
    let workers = power_server::engine::Workers::start().unwrap();
    let expected = (mine + 20).min(19).to_string();
    let options = EngineOptions {
        tasks: Some(workers.handle()),
        ..EngineOptions::default()
    };
    let engine = f.engine_with(2, &[("EXPECTED", &expected)], options);
    let r = &f.run(&engine, Action::Status, &["n1"]).await[0];
    assert!(r.success, "{r:?}");
    let kept = &f.run(&engine, Action::Status, &["k1"]).await[0];
    let engine_nice = (mine + 10).min(19).to_string();
    assert_eq!(
        kept.error.as_deref(),
        Some(engine_nice.as_str()),
        "{kept:?}"
    );

    // As the server runs it: persistent chunks on the runtime that asks (the
    // API's), one-shot ones on the engine's.
    let options = EngineOptions {
        tasks: Some(workers.handle()),
        persistent_chunks: Some(tokio::runtime::Handle::current()),
        ..EngineOptions::default()
    };
    let engine = f.engine_with(2, &[("EXPECTED", &expected)], options);
    let r = &f.run(&engine, Action::Status, &["n1"]).await[0];
    assert!(r.success, "{r:?}");
    let kept = &f.run(&engine, Action::Status, &["k1"]).await[0];
    assert_eq!(
        kept.error.as_deref(),
        Some(mine.to_string().as_str()),
        "{kept:?}"
    );
    let chunked = &f.run(&engine, Action::Status, &["b1"]).await[0];
    assert!(chunked.success, "{chunked:?}");
}

/// A platform's bound belongs to the engine, not to one load: runs on the
/// topology from before a reload and on the reloaded one share it.
#[tokio::test(flavor = "multi_thread")]
async fn a_platform_bound_holds_across_a_reload() {
    let f = Fixture::new(&[(
        "t.yaml",
        "platforms:\n  count:\n    driver: count\n    concurrency: 2\nstatic_nodes:\n  n[01-20]:\n    platform: count\n",
    )]);
    let engine = f.engine(50, &[("hold", "0.2")]);
    let (old, new) = (f.loaded.clone(), f.reload());
    assert!(!Arc::ptr_eq(&old, &new));
    let names = |range: std::ops::RangeInclusive<i32>| range.map(|i| format!("n{i:02}")).collect();
    let (a, b) = tokio::join!(
        engine.run_all(old, Action::PowerOn, names(1..=6)),
        engine.run_all(new, Action::PowerOn, names(11..=16)),
    );
    assert!(a.iter().chain(&b).all(|r| r.success));
    let (counts, _) = counts_and_overlaps(&f.out());
    let max = counts.iter().copied().max().unwrap();
    assert_eq!(
        max, 2,
        "max {max} at once with concurrency 2 across two loads"
    );
}

/// Two requests on one node never overlap, and nodes sharing a controller
/// (`serialize_by`) never run at once, while other nodes do.
#[tokio::test(flavor = "multi_thread")]
async fn one_node_and_one_controller_never_run_twice_at_once() {
    let f = Fixture::new(&[(
        "t.yaml",
        "platforms:\n  count:\n    driver: count\n    variables: [ctl, hold]\n    serialize_by: ctl\n\
         static_nodes:\n  a[1-4]:\n    platform: count\n    ctl: pdu1\n    hold: '0.1'\n  b[1-4]:\n    platform: count\n    ctl: pdu2\n    hold: '0.1'\n  solo:\n    platform: count\n    hold: '0.1'\n",
    )]);
    let engine = f.engine(50, &[]);
    let all = ["a1", "a2", "a3", "a4", "b1", "b2", "b3", "b4", "solo"];
    let (first, second, third) = tokio::join!(
        f.run(&engine, Action::PowerOn, &all),
        f.run(&engine, Action::Restart, &all),
        f.run(&engine, Action::Status, &["solo", "solo"])
    );
    assert!(first.iter().chain(&second).chain(&third).all(|r| r.success));
    let (counts, overlaps) = counts_and_overlaps(&f.out());
    assert_eq!(overlaps, "", "runs overlapped");
    assert_eq!(counts.len(), 2 * all.len() + 2);
    assert!(
        counts.iter().any(|&c| c > 1),
        "different controllers should run in parallel"
    );
}

/// Unknown nodes are answered as missing without running anything, and a
/// driver that vanished after loading fails with what the server knows.
#[tokio::test(flavor = "multi_thread")]
async fn missing_nodes_and_vanished_drivers_fail_clearly() {
    let f = Fixture::new(&[(
        "t.yaml",
        "platforms:\n  sim:\n    driver: sim\nstatic_nodes:\n  s1:\n    platform: sim\n",
    )]);
    let engine = f.engine(4, &[]);
    let r = f.run(&engine, Action::Status, &["ghost"]).await;
    assert!(r[0].missing && !r[0].success);
    assert_eq!(r[0].platform, None);
    assert_eq!(
        r[0].error.as_deref(),
        Some("node ghost is not in the topology")
    );

    // A drop-in runs from its drivers directory; copy the fixture setup so
    // the checkout's own sim driver is left alone.
    let dir = tempfile::tempdir().unwrap();
    let drivers = dir.path().join("drivers");
    std::fs::create_dir_all(&drivers).unwrap();
    std::fs::copy(checkout().join("drivers/sim"), drivers.join("sim")).unwrap();
    let topology = dir.path().join("topology.d");
    std::fs::create_dir_all(&topology).unwrap();
    std::fs::write(
        topology.join("t.yaml"),
        "platforms:\n  sim:\n    driver: sim\nstatic_nodes:\n  s1:\n    platform: sim\n",
    )
    .unwrap();
    let settings = LoadSettings {
        topology_named: true,
        topology_files: Vec::new(),
        protected_groups: Vec::new(),
        topology_dirs: vec![topology],
        drivers_dirs: vec![drivers.clone()],
        runtime_dir: None,
    };
    let loaded = Arc::new(Loaded::read(&settings).unwrap());
    std::fs::remove_file(drivers.join("sim")).unwrap();
    let r = engine
        .run_all(loaded, Action::PowerOn, vec!["s1".into()])
        .await;
    let error = r[0].error.as_deref().unwrap();
    assert!(
        error.starts_with("cannot run driver: ") && error.contains("No such file"),
        "{error}"
    );
}

/// The sim driver the demo and tests rely on keeps state per node and
/// answers status with the reference protocol's exit codes.
#[tokio::test(flavor = "multi_thread")]
async fn the_sim_driver_simulates_power() {
    let f = Fixture::new(&[(
        "t.yaml",
        "platforms:\n  sim:\n    driver: sim\n    variables: [sim_initial, sim_fail, sim_stuck]\n\
         static_nodes:\n  s1:\n    platform: sim\n  s2:\n    platform: sim\n    sim_initial: 'on'\n  \
         bad:\n    platform: sim\n    sim_fail: power_on\n  stuck:\n    platform: sim\n    sim_stuck: 'yes'\n",
    )]);
    let engine = f.engine(4, &[]);
    let states = |rs: &[CommandAttributes]| rs.iter().map(|r| r.state.unwrap()).collect::<Vec<_>>();
    let nodes = ["s1", "s2", "bad", "stuck"];
    use PowerState::{Off, On};
    assert_eq!(
        states(&f.run(&engine, Action::Status, &nodes).await),
        [Off, On, Off, Off]
    );
    let on = f.run(&engine, Action::PowerOn, &nodes).await;
    assert_eq!(
        on.iter().map(|r| r.success).collect::<Vec<_>>(),
        [true, true, false, true]
    );
    assert_eq!(
        on[2].error.as_deref(),
        Some("sim: simulated failure of power_on on bad")
    );
    assert_eq!(
        states(&f.run(&engine, Action::Status, &nodes).await),
        [On, On, Off, Off]
    );
    f.run(&engine, Action::PowerOff, &["s2"]).await;
    assert_eq!(
        states(&f.run(&engine, Action::Status, &["s1", "s2"]).await),
        [On, Off]
    );
    f.run(&engine, Action::Restart, &["s2"]).await;
    assert_eq!(states(&f.run(&engine, Action::Status, &["s2"]).await), [On]);
}

/// A reload picks up a changed topology; a broken fragment leaves the
/// running topology in place, and runs in flight keep the load they began
/// with (its generated scripts included).
#[tokio::test(flavor = "multi_thread")]
async fn reload_swaps_a_valid_topology_and_keeps_the_old_one_when_broken() {
    use power_server::state::State;
    let tmp = tempfile::tempdir().unwrap();
    let topology = tmp.path().join("topology.d");
    std::fs::create_dir_all(&topology).unwrap();
    let platform = "platforms:\n  p:\n    status: exit 111\n";
    std::fs::write(topology.join("p.yaml"), platform).unwrap();
    std::fs::write(
        topology.join("n.yaml"),
        "static_nodes:\n  n1:\n    platform: p\n",
    )
    .unwrap();
    let settings = LoadSettings {
        topology_named: true,
        topology_files: Vec::new(),
        protected_groups: Vec::new(),
        topology_dirs: vec![topology.clone()],
        drivers_dirs: vec![],
        runtime_dir: Some(tmp.path().join("run")),
    };
    let state = State::start(settings).unwrap();
    let first = state.current();
    let first_script = first.drivers.by_platform["p"].path.clone();

    std::fs::write(
        topology.join("n.yaml"),
        "static_nodes:\n  n[1-2]:\n    platform: p\n",
    )
    .unwrap();
    state.reload().unwrap();
    assert_eq!(state.current().topology.nodes().len(), 2);
    assert_ne!(
        state.current().drivers.by_platform["p"].path,
        first_script,
        "scripts are rebuilt on every load"
    );
    assert!(
        first_script.exists(),
        "a load still in use keeps its scripts"
    );
    let engine = Engine::new(2, [("PATH".into(), std::env::var_os("PATH").unwrap())]);
    let r = engine
        .run_all(first.clone(), Action::Status, vec!["n1".into()])
        .await;
    assert_eq!(r[0].state, Some(PowerState::Off), "{r:?}");
    drop(first);
    assert!(
        !first_script.exists(),
        "a load no longer used takes its scripts with it"
    );

    std::fs::write(
        topology.join("n.yaml"),
        "static_nodes:\n  n3:\n    platform: nope\n",
    )
    .unwrap();
    let errors = state.reload().unwrap_err().to_string();
    assert!(
        errors.contains("n.yaml:3:15: node n3: unknown platform \"nope\""),
        "{errors}"
    );
    let names: Vec<String> = state
        .current()
        .topology
        .nodes()
        .iter()
        .map(|n| n.name.to_string())
        .collect();
    assert_eq!(names, ["n1", "n2"], "the running topology stays in place");
}

/// A platform's prelude runs before every action, so actions can share
/// functions; a shell syntax error in it is caught at load, named.
#[tokio::test(flavor = "multi_thread")]
async fn a_prelude_is_shared_by_every_action() {
    let f = Fixture::new(&[(
        "t.yaml",
        "platforms:\n  p:\n    variables: [who]\n    prelude: |\n      record() {\n        printf '%s %s\\n' \"$1\" \"$who\" >>\"$FIXTURE_OUT/log\"\n      }\n    \
         power_on: record on\n    status: |\n      record status\n      exit 111\n\
         static_nodes:\n  n1:\n    platform: p\n    who: \"a b\"\n",
    )]);
    let engine = f.engine(2, &[]);
    assert!(f.run(&engine, Action::PowerOn, &["n1"]).await[0].success);
    assert_eq!(
        f.run(&engine, Action::Status, &["n1"]).await[0].state,
        Some(PowerState::Off)
    );
    assert_eq!(
        std::fs::read_to_string(f.out().join("log")).unwrap(),
        "on a b\nstatus a b\n"
    );

    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("t.yaml"), "platforms:\n  p:\n    prelude: |\n      f() {\n        if true; then :\n      }\n    status: f\n").unwrap();
    let settings = LoadSettings {
        topology_named: true,
        topology_files: Vec::new(),
        protected_groups: Vec::new(),
        topology_dirs: vec![tmp.path().to_path_buf()],
        drivers_dirs: vec![],
        runtime_dir: None,
    };
    let error = Loaded::read(&settings).unwrap_err().to_string();
    assert!(
        error.contains("t.yaml:2:3: platform p: shell syntax error in prelude, line "),
        "{error}"
    );
}
