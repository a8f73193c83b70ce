//! The batch protocol through the real engine, with real batch driver
//! executables (`tests/fixtures/drivers/batch`, the shipped `sim`). Each
//! test says what it protects.

use crate::core::{eventually, gone, Fixture};
use power_server::load::{LoadSettings, Loaded};
use power_server::wire::{Action, CommandAttributes, PowerState};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// A batch platform on the fixture driver, plus `nodes` (YAML under
/// `static_nodes:`, indented by two).
fn fixture(platform_extra: &str, nodes: &str) -> Fixture {
    Fixture::new(&[(
        "t.yaml",
        &format!(
            "platforms:\n  b:\n    driver: batch\n    batch: true\n    variables: [mode, ctl, secret_pass]\n\
             {platform_extra}static_nodes:\n{nodes}"
        ),
    )])
}

/// Each result by node name.
fn by_node(results: Vec<CommandAttributes>) -> BTreeMap<String, CommandAttributes> {
    results
        .into_iter()
        .map(|r| (r.node_name.clone(), r))
        .collect()
}

/// Every run's recorded stdin, smallest first.
fn runs_stdin(out: &Path) -> Vec<String> {
    let mut runs: Vec<String> = std::fs::read_dir(out.join("runs"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".stdin"))
                .map(|e| std::fs::read_to_string(e.path()).unwrap())
                .collect()
        })
        .unwrap_or_default();
    runs.sort_by_key(|r| (r.lines().count(), r.clone()));
    runs
}

fn error_of<'a>(results: &'a BTreeMap<String, CommandAttributes>, node: &str) -> &'a str {
    results[node].error.as_deref().unwrap_or("")
}

/// One chunk gets every node on stdin with its variables (unset ones as
/// empty fields), and its answers count whatever their order; the driver
/// sees no node variable and no POWER_NODE in its environment.
#[tokio::test(flavor = "multi_thread")]
async fn a_chunk_is_answered_in_any_order() {
    let f = fixture(
        "",
        "  n1: {platform: b, mode: \"on\", ctl: c1}\n  n2: {platform: b, mode: \"off\"}\n  \
         n3: {platform: b, mode: error, secret_pass: hunter2}\n",
    );
    let engine = f.engine(4, &[("mode", "from-the-server")]);
    let results = f.run(&engine, Action::Status, &["n2", "n3", "n1"]).await;
    let names: Vec<&str> = results.iter().map(|r| r.node_name.as_str()).collect();
    assert_eq!(names, ["n2", "n3", "n1"], "results in the order asked");
    let results = by_node(results);
    assert_eq!(
        (results["n1"].success, results["n1"].state),
        (true, Some(PowerState::On))
    );
    assert_eq!(
        (results["n2"].success, results["n2"].state),
        (true, Some(PowerState::Off))
    );
    assert_eq!(
        (results["n3"].success, results["n3"].state),
        (false, Some(PowerState::Unknown))
    );
    assert_eq!(
        error_of(&results, "n3"),
        "status failed on n3 (login *** refused)"
    );
    assert_eq!(
        runs_stdin(&f.out()),
        ["id\tnode\tmode\tctl\tsecret_pass\n1\tn1\ton\tc1\t\n2\tn2\toff\t\t\n3\tn3\terror\t\thunter2\n"]
    );
    let env_file = std::fs::read_dir(f.out().join("runs"))
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().ends_with(".env"))
        .unwrap()
        .path();
    let env: BTreeMap<String, String> = std::fs::read(env_file)
        .unwrap()
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    assert_eq!(env.get("POWER_BATCH").map(String::as_str), Some("1"));
    assert_eq!(env.get("POWER_ACTION").map(String::as_str), Some("status"));
    assert_eq!(env.get("POWER_PLATFORM").map(String::as_str), Some("b"));
    for absent in ["POWER_NODE", "mode", "ctl", "secret_pass"] {
        assert!(!env.contains_key(absent), "{absent} in the environment");
    }
}

/// Lines the driver has no business writing (an unknown id, a second
/// answer, a word that does not fit the action) change nothing.
#[tokio::test(flavor = "multi_thread")]
async fn unknown_ids_duplicate_answers_and_wrong_words_are_ignored() {
    let f = fixture(
        "",
        "  n1: {platform: b, mode: ok}\n  n2: {platform: b, mode: \"on\"}\n  n3: {platform: b, mode: ok}\n",
    );
    // Before its real answers: an id never sent, a blank line, garbage,
    // then answers for n3 ("3 ok" from the loop comes second, ignored).
    let engine = f.engine(
        4,
        &[
            (
                "BATCH_EXTRA",
                "99 ok\\n\\nnonsense\\n3 error first answer wins\\n",
            ),
            ("BATCH_STDERR", "gave up on the PDU"),
        ],
    );
    let results = by_node(f.run(&engine, Action::PowerOn, &["n1", "n2", "n3"]).await);
    assert!(results["n1"].success, "{:?}", results["n1"]);
    // "2 on" answers status, not power_on: ignored, so n2 has no answer.
    assert!(!results["n2"].success);
    assert_eq!(error_of(&results, "n2"), "gave up on the PDU");
    assert!(!results["n3"].success);
    assert_eq!(error_of(&results, "n3"), "first answer wins");
}

/// A driver that answers half its nodes and exits non-zero: the half
/// stands, the rest fail with its last stderr line and exit code, or with
/// "no answer from driver" when it said nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_driver_that_answers_half_and_fails_fails_only_the_rest() {
    let nodes = "  n[1-2]: {platform: b, mode: ok}\n  n[3-4]: {platform: b, mode: silent}\n";
    let f = fixture("", nodes);
    let engine = f.engine(
        4,
        &[
            ("BATCH_EXIT", "3"),
            ("BATCH_STDERR", "lost contact with the PDU"),
        ],
    );
    let results = by_node(
        f.run(&engine, Action::PowerOff, &["n1", "n2", "n3", "n4"])
            .await,
    );
    assert!(results["n1"].success && results["n2"].success);
    for n in ["n3", "n4"] {
        assert!(!results[n].success);
        assert_eq!(error_of(&results, n), "lost contact with the PDU");
        assert_eq!(results[n].exit_code, Some(3));
    }
    let quiet = f.engine(4, &[]);
    let results = by_node(f.run(&quiet, Action::PowerOff, &["n3"]).await);
    assert_eq!(error_of(&results, "n3"), "no answer from driver");
}

/// A driver that hangs after answering half: the answers reach the caller
/// while it still runs, the rest time out, and nothing is left running.
#[tokio::test(flavor = "multi_thread")]
async fn a_driver_that_hangs_after_half_times_out_the_rest_and_leaves_nothing() {
    let f = fixture(
        "    timeout: 2s\n",
        "  n[1-2]: {platform: b, mode: ok}\n  n3: {platform: b, mode: hang}\n",
    );
    let engine = f.engine(4, &[]);
    let names = ["n1", "n2", "n3"].map(String::from).to_vec();
    let mut rx = engine.run(f.loaded.clone(), Action::Restart, names);
    let first = rx.recv().await.unwrap();
    assert!(first.success, "{first:?}");
    // The first answer came while the driver still ran: had it waited for
    // the run's end, the driver would be gone by now.
    let leader = f.out().join("leader");
    assert!(eventually(Duration::from_secs(5), || leader.exists()));
    let leader = std::fs::read_to_string(leader).unwrap();
    assert!(!gone(&leader), "the answer waited for the driver's end");
    let mut rest = [rx.recv().await.unwrap(), rx.recv().await.unwrap()];
    assert!(rx.recv().await.is_none());
    rest.sort_by(|a, b| a.node_name.cmp(&b.node_name));
    let timed_out: Vec<&CommandAttributes> = rest.iter().filter(|r| !r.success).collect();
    assert_eq!(timed_out.len(), 1);
    assert_eq!(timed_out[0].node_name, "n3");
    assert_eq!(
        timed_out[0].error.as_deref(),
        Some("timed out after 2s; driver killed (last output: stuck waiting for the PDU)")
    );
    for pid_file in ["leader", "grandchild"] {
        let pid = std::fs::read_to_string(f.out().join(pid_file)).unwrap();
        assert!(
            eventually(Duration::from_secs(5), || gone(&pid)),
            "{pid_file} {pid} still running"
        );
    }
}

/// `batch_max` cuts a request into even chunks, one driver run each.
#[tokio::test(flavor = "multi_thread")]
async fn batch_max_splits_a_request_into_even_chunks() {
    let f = fixture(
        "    batch_max: 3\n",
        "  n[01-10]: {platform: b, mode: ok}\n",
    );
    let engine = f.engine(8, &[]);
    let names: Vec<&str> = (1..=10)
        .map(|i| Box::leak(format!("n{i:02}").into_boxed_str()) as &str)
        .collect();
    let results = f.run(&engine, Action::PowerOn, &names).await;
    assert!(results.iter().all(|r| r.success), "{results:?}");
    let sizes: Vec<usize> = runs_stdin(&f.out())
        .iter()
        .map(|r| r.lines().count() - 1)
        .collect();
    assert_eq!(sizes, [2, 2, 3, 3]);
}

/// Two requests overlapping on some nodes, and chunks of one controller
/// value: no node, and no controller, is ever in two runs at once, and
/// every node of both requests is answered.
#[tokio::test(flavor = "multi_thread")]
async fn overlapping_requests_never_run_a_node_twice_at_once() {
    let f = fixture(
        "    batch_max: 4\n    serialize_by: ctl\n",
        "  n[1-6]: {platform: b, mode: ok, ctl: pdu-a}\n  n[7-12]: {platform: b, mode: ok, ctl: pdu-b}\n",
    );
    let engine = f.engine(8, &[("BATCH_HOLD", "0.2")]);
    let first: Vec<String> = (1..=9).map(|i| format!("n{i}")).collect();
    let second: Vec<String> = (4..=12).map(|i| format!("n{i}")).collect();
    let a = engine.run_all(f.loaded.clone(), Action::PowerOn, first);
    let b = engine.run_all(f.loaded.clone(), Action::PowerOff, second);
    let (a, b) = tokio::join!(a, b);
    assert_eq!((a.len(), b.len()), (9, 9));
    assert!(a.iter().chain(&b).all(|r| r.success), "{a:?} {b:?}");
    let overlaps = std::fs::read_to_string(f.out().join("overlaps")).unwrap_or_default();
    assert_eq!(overlaps, "", "runs overlapped");
    // Every chunk held nodes of one controller only.
    for run in runs_stdin(&f.out()) {
        let ctls: std::collections::BTreeSet<&str> = run
            .lines()
            .skip(1)
            .map(|l| l.split('\t').nth(3).unwrap())
            .collect();
        assert_eq!(ctls.len(), 1, "{run}");
    }
}

/// A value a batch driver could not read on its line is refused at load,
/// naming file, line, node and variable; the same value is fine for a
/// per-node platform, which gets it in its environment.
#[test]
fn a_tab_in_a_value_is_refused_at_load_for_batch_platforms_only() {
    let dir = tempfile::tempdir().unwrap();
    let topology = dir.path().join("topology.d");
    std::fs::create_dir_all(&topology).unwrap();
    let text = |batch: &str| {
        format!(
            "platforms:\n  b:\n    driver: batch\n{batch}    variables: [mode]\n\
             static_nodes:\n  n[1-3]:\n    platform: b\n    mode: \"a\\tb\"\n"
        )
    };
    let settings = LoadSettings {
        topology_named: true,
        topology_files: Vec::new(),
        protected_groups: Vec::new(),
        topology_dirs: vec![topology.clone()],
        drivers_dirs: vec![crate::core::checkout().join("tests/fixtures/drivers")],
        runtime_dir: Some(dir.path().join("run")),
    };
    std::fs::write(topology.join("t.yaml"), text("    batch: true\n")).unwrap();
    let error = Loaded::read(&settings).unwrap_err().to_string();
    assert!(
        error.contains(
            "t.yaml:9:5: node n[1-3]: variable mode: the value holds a TAB, which cannot be sent \
             to the batch platform b"
        ),
        "{error}"
    );
    std::fs::write(topology.join("t.yaml"), text("")).unwrap();
    assert!(Loaded::read(&settings).is_ok());
}

/// The shipped `sim` driver in batch mode keeps the same state as per
/// node, answers many nodes in one run, and fails what it is told to.
#[tokio::test(flavor = "multi_thread")]
async fn the_sim_driver_answers_a_chunk() {
    let f = Fixture::new(&[(
        "t.yaml",
        "platforms:\n  sim:\n    driver: sim\n    batch: true\n    variables: [sim_initial, sim_fail, sim_delay]\n\
         static_nodes:\n  s[1-300]: {platform: sim}\n  slow: {platform: sim, sim_delay: \"0.1\"}\n  \
         broken: {platform: sim, sim_fail: power_on}\n",
    )]);
    let engine = f.engine(4, &[]);
    let mut names: Vec<String> = (1..=300).map(|i| format!("s{i}")).collect();
    names.extend(["slow".to_string(), "broken".to_string()]);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let off = f.run(&engine, Action::Status, &refs).await;
    assert!(off
        .iter()
        .all(|r| r.state == Some(PowerState::Off) || r.node_name == "broken"));
    let on = by_node(f.run(&engine, Action::PowerOn, &refs).await);
    assert!(on["s1"].success && on["slow"].success);
    assert_eq!(
        error_of(&on, "broken"),
        "sim: simulated failure of power_on on broken"
    );
    let status = f.run(&engine, Action::Status, &refs).await;
    let states: BTreeMap<bool, usize> = status.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r.state == Some(PowerState::On)).or_default() += 1;
        m
    });
    assert_eq!(states, BTreeMap::from([(true, 301), (false, 1)]));
    // The state is the per-node driver's: one file per node.
    let state = std::fs::read_to_string(f.out().parent().unwrap().join("sim/s42")).unwrap();
    assert_eq!(state, "on\n");
}

/// A persistent platform on the fixture driver `persistent`, with `nodes`,
/// and one process (so which process a node goes to is no matter).
fn persistent(timeout: &str, nodes: &str) -> Fixture {
    persistent_with(1, timeout, nodes)
}

fn persistent_with(processes: usize, timeout: &str, nodes: &str) -> Fixture {
    Fixture::new(&[(
        "t.yaml",
        &format!(
            "platforms:\n  p:\n    driver: persistent\n    batch: true\n    persistent: true\n    \
             processes: {processes}\n    timeout: {timeout}\n    variables: [mode]\nstatic_nodes:\n{nodes}"
        ),
    )])
}

/// With several processes, a node goes to the same one every time, whatever
/// else a request asks for; the request's nodes are spread over all of them.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_always_goes_to_the_same_persistent_process() {
    let f = persistent_with(3, "5s", "  n[1-30]: {platform: p, mode: pid}\n");
    let engine = f.engine(8, &[]);
    let names: Vec<String> = (1..=30).map(|i| format!("n{i}")).collect();
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    let served = |results: Vec<CommandAttributes>| -> BTreeMap<String, String> {
        results
            .into_iter()
            .map(|r| {
                (
                    r.node_name,
                    r.error.expect("the fixture answers with its pid"),
                )
            })
            .collect()
    };
    let first = served(f.run(&engine, Action::PowerOn, &all).await);
    let pids: std::collections::BTreeSet<&String> = first.values().collect();
    assert_eq!(pids.len(), 3, "30 nodes over 3 processes: {first:?}");
    assert_eq!(starts(&f.out()).len(), 3);
    let odd: Vec<&str> = all.iter().copied().step_by(2).collect();
    let again = served(f.run(&engine, Action::PowerOff, &odd).await);
    for (node, pid) in again {
        assert_eq!(pid, first[&node], "{node} went to another process");
    }
    assert_eq!(starts(&f.out()).len(), 3, "no process started again");
    engine.shutdown(Duration::from_secs(1)).await;
}

fn starts(out: &Path) -> Vec<String> {
    std::fs::read_to_string(out.join("starts"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// One persistent driver serves request after request: started once, fed
/// each chunk with its action and ids that never repeat.
#[tokio::test(flavor = "multi_thread")]
async fn a_persistent_driver_serves_request_after_request() {
    let f = persistent("5s", "  n1: {platform: p, mode: \"on\"}\n  n2: {platform: p, mode: \"off\"}\n  n3: {platform: p, mode: ok}\n");
    let engine = f.engine(4, &[]);
    let first = by_node(f.run(&engine, Action::Status, &["n1", "n2"]).await);
    assert_eq!(first["n1"].state, Some(PowerState::On));
    assert_eq!(first["n2"].state, Some(PowerState::Off));
    let second = f.run(&engine, Action::PowerOn, &["n3"]).await;
    assert!(second[0].success, "{second:?}");
    assert_eq!(starts(&f.out()).len(), 1, "started once");
    let chunks = std::fs::read_to_string(f.out().join("chunks")).unwrap();
    assert_eq!(
        chunks,
        "status\nid\tnode\tmode\n1\tn1\ton\n2\tn2\toff\npower_on\nid\tnode\tmode\n3\tn3\tok\n"
    );
    engine.shutdown(Duration::from_secs(1)).await;
    let pid = &starts(&f.out())[0];
    assert!(
        eventually(Duration::from_secs(5), || gone(pid)),
        "the persistent driver outlived shutdown"
    );
}

/// A persistent driver that dies mid-chunk fails only the nodes it left
/// unanswered, with its last words, and is started again for the next
/// request (after a back-off of a second).
#[tokio::test(flavor = "multi_thread")]
async fn a_persistent_driver_that_dies_fails_its_silent_nodes_and_is_restarted() {
    let f = persistent("10s", "  a1: {platform: p, mode: ok}\n  a2: {platform: p, mode: die}\n  a3: {platform: p, mode: ok}\n");
    let engine = f.engine(4, &[]);
    let results = by_node(f.run(&engine, Action::PowerOff, &["a1", "a2", "a3"]).await);
    assert!(results["a1"].success);
    for n in ["a2", "a3"] {
        assert_eq!(error_of(&results, n), "crashed on a2");
        assert_eq!(results[n].exit_code, Some(3));
    }
    let again = f.run(&engine, Action::PowerOff, &["a3"]).await;
    assert!(again[0].success, "{again:?}");
    assert_eq!(starts(&f.out()).len(), 2, "restarted once");
}

/// A persistent driver that stops answering is killed at the timeout,
/// with its whole process group; the nodes it answered keep their answers.
#[tokio::test(flavor = "multi_thread")]
async fn a_persistent_driver_that_hangs_is_killed_at_the_timeout() {
    let f = persistent(
        "1s",
        "  h1: {platform: p, mode: ok}\n  h2: {platform: p, mode: hang}\n",
    );
    let engine = f.engine(4, &[]);
    let results = by_node(f.run(&engine, Action::Restart, &["h1", "h2"]).await);
    assert!(results["h1"].success);
    assert_eq!(
        error_of(&results, "h2"),
        "timed out after 1s; driver killed"
    );
    let pid = &starts(&f.out())[0];
    assert!(
        eventually(Duration::from_secs(5), || gone(pid)),
        "still running"
    );
}

/// A persistent driver replaced on disk (an upgrade, by rename as package
/// managers do) is restarted at its next chunk; until then it keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn a_replaced_persistent_driver_is_restarted() {
    let install = |drivers: &Path| {
        std::fs::create_dir_all(drivers).unwrap();
        let fresh = drivers.join(".mine.new");
        let fixture = crate::core::checkout().join("tests/fixtures/drivers/persistent");
        std::fs::copy(fixture, &fresh).unwrap();
        std::fs::rename(&fresh, drivers.join("mine")).unwrap();
    };
    let f = Fixture::prepared(
        &[(
            "t.yaml",
            "platforms:\n  p:\n    driver: mine\n    batch: true\n    persistent: true\n    variables: [mode]\n\
             static_nodes:\n  n1: {platform: p, mode: ok}\n",
        )],
        |dir| install(&dir.join("drivers")),
    );
    let engine = f.engine(1, &[]);
    assert!(f.run(&engine, Action::PowerOn, &["n1"]).await[0].success);
    assert!(f.run(&engine, Action::PowerOn, &["n1"]).await[0].success);
    assert_eq!(starts(&f.out()).len(), 1, "kept between requests");
    install(&f.drivers());
    assert!(f.run(&engine, Action::PowerOn, &["n1"]).await[0].success);
    assert_eq!(starts(&f.out()).len(), 2, "restarted after the upgrade");
    engine.shutdown(Duration::from_secs(1)).await;
}

/// The shipped sim driver runs persistent too, with the same state.
#[tokio::test(flavor = "multi_thread")]
async fn the_sim_driver_runs_persistent() {
    let f = Fixture::new(&[(
        "t.yaml",
        "platforms:\n  sim:\n    driver: sim\n    batch: true\n    persistent: true\n    variables: [sim_fail]\n\
         static_nodes:\n  s[1-50]: {platform: sim}\n  broken: {platform: sim, sim_fail: all}\n",
    )]);
    let engine = f.engine(4, &[]);
    let mut names: Vec<String> = (1..=50).map(|i| format!("s{i}")).collect();
    names.push("broken".into());
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let on = by_node(f.run(&engine, Action::PowerOn, &refs).await);
    assert!(on["s1"].success && on["s50"].success);
    assert_eq!(
        error_of(&on, "broken"),
        "sim: simulated failure of power_on on broken"
    );
    let status = f.run(&engine, Action::Status, &refs).await;
    let on_count = status
        .iter()
        .filter(|r| r.state == Some(PowerState::On))
        .count();
    assert_eq!(on_count, 50);
    // Answered from memory; the state files follow just after.
    let file = f.out().parent().unwrap().join("sim/s50");
    assert!(
        eventually(Duration::from_secs(5), || {
            std::fs::read_to_string(&file).is_ok_and(|s| s == "on\n")
        }),
        "the state file of s50 was not written"
    );
    engine.shutdown(Duration::from_secs(1)).await;
}
