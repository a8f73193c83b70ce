//! After a run, through the real engine and real driver executables:
//! actions confirmed by polling status, busy answers retried, the reserved
//! exit codes and batch words classed. Each test says what it protects.

use crate::core::Fixture;
use power_server::follow_up::{self, Asked, Wait, BUSY_RETRIES};
use power_server::wire::{Action, CommandAttributes, ErrorClass, PowerState};
use std::collections::BTreeMap;
use std::time::Duration;

/// Inline platforms whose nodes reach a new state some time after the
/// action: `power_on` writes the time, and `status` says on once `ready`
/// seconds (a node variable, in tenths) have passed since, and off before;
/// every status run appends a line to `$FIXTURE_OUT/polls`. `late` is the
/// per-node platform, `late-batch` the same as a batch one; `stuck` never
/// gets there (on succeeds, status says off).
const LATE: &str = r#"
platforms:
  late:
    variables: [ready]
    power_on: date +%s%N > "$FIXTURE_OUT/$POWER_NODE"
    status: |
      echo "$POWER_NODE" >> "$FIXTURE_OUT/polls"
      [ -f "$FIXTURE_OUT/$POWER_NODE" ] || exit 111
      age=$(( $(date +%s%N) - $(cat "$FIXTURE_OUT/$POWER_NODE") ))
      [ "$age" -ge $(( ready * 100000000 )) ] || exit 111
  late-batch:
    batch: true
    variables: [ready]
    power_on: |
      IFS= read -r header
      while IFS=$'\t' read -r id node ready; do
        date +%s%N > "$FIXTURE_OUT/$node"; echo "$id ok"
      done
    status: |
      echo run >> "$FIXTURE_OUT/status-runs"
      IFS= read -r header
      now=$(date +%s%N)
      while IFS=$'\t' read -r id node ready; do
        if [ -f "$FIXTURE_OUT/$node" ] &&
           [ $(( now - $(cat "$FIXTURE_OUT/$node") )) -ge $(( ready * 100000000 )) ]; then
          echo "$id on"
        else
          echo "$id off"
        fi
      done
  stuck:
    confirm: 1s
    power_on: "true"
    status: exit 111
static_nodes:
  soon: {platform: late, ready: "6"}
  b[01-12]: {platform: late-batch, ready: "4"}
  never: {platform: stuck}
"#;

/// Runs `action` on `nodes` with the follow-up, all results by node.
async fn follow(
    f: &Fixture,
    action: Action,
    nodes: &[&str],
    wait: Wait,
) -> BTreeMap<String, CommandAttributes> {
    follow_asked(f, action, nodes, Asked { wait, grace: None }).await
}

async fn follow_asked(
    f: &Fixture,
    action: Action,
    nodes: &[&str],
    asked: Asked,
) -> BTreeMap<String, CommandAttributes> {
    let engine = f.engine(8, &[]);
    let nodes = nodes.iter().map(ToString::to_string).collect();
    let (mut follow, _) = follow_up::run(&engine, f.loaded.clone(), action, nodes, None, asked);
    let mut results = BTreeMap::new();
    while let Some(result) = follow.recv().await {
        let previous = results.insert(result.node_name.clone(), result);
        assert!(previous.is_none(), "one result per node");
    }
    results
}

fn lines(f: &Fixture, file: &str) -> Vec<String> {
    std::fs::read_to_string(f.out().join(file))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A node that reaches the state after 0.6 s is confirmed after a few
/// polls, with the state it reached; without a wait the same action is
/// answered at once, unconfirmed either way.
#[tokio::test(flavor = "multi_thread")]
async fn a_confirmed_action_waits_for_its_node_to_get_there() {
    let f = Fixture::new(&[("t.yaml", LATE)]);
    let results = follow(
        &f,
        Action::PowerOn,
        &["soon"],
        Wait::For(Duration::from_secs(20)),
    )
    .await;
    let soon = &results["soon"];
    assert_eq!(
        (soon.success, soon.confirmed, soon.state, soon.error_class),
        (true, Some(true), Some(PowerState::On), None)
    );
    let polls = lines(&f, "polls").len();
    assert!(
        (2..=4).contains(&polls),
        "polled until on with growing intervals (0.25 s, then 0.5, 1, ...): {polls} polls"
    );

    let results = follow(&f, Action::PowerOn, &["soon"], Wait::For(Duration::ZERO)).await;
    assert_eq!(
        (results["soon"].success, results["soon"].confirmed),
        (true, None)
    );
    assert_eq!(lines(&f, "polls").len(), polls, "no poll without a wait");
}

/// A node that never gets there fails at the end of its wait, saying the
/// state it was last seen in; the platform's `confirm` is the wait when
/// the request gives none, and a wait of zero turns it off.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_that_never_gets_there_fails_with_its_last_state() {
    let f = Fixture::new(&[("t.yaml", LATE)]);
    let started = std::time::Instant::now();
    let results = follow(&f, Action::PowerOn, &["never"], Wait::Platform).await;
    let never = &results["never"];
    assert_eq!(
        (
            never.success,
            never.confirmed,
            never.state,
            never.error_class
        ),
        (
            false,
            Some(false),
            Some(PowerState::Off),
            Some(ErrorClass::Unconfirmed)
        )
    );
    assert_eq!(
        never.error.as_deref(),
        Some("did not reach on within 1s: last seen off")
    );
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited the platform's confirm"
    );

    let results = follow(&f, Action::PowerOn, &["never"], Wait::For(Duration::ZERO)).await;
    assert_eq!(
        (results["never"].success, results["never"].confirmed),
        (true, None)
    );
}

/// A batch platform's nodes are confirmed together: one status run per
/// poll round for all twelve, not one per node.
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_platform_confirms_a_chunk_with_one_status_run() {
    let f = Fixture::new(&[("t.yaml", LATE)]);
    let nodes: Vec<String> = (1..=12).map(|i| format!("b{i:02}")).collect();
    let names: Vec<&str> = nodes.iter().map(String::as_str).collect();
    let results = follow(
        &f,
        Action::PowerOn,
        &names,
        Wait::For(Duration::from_secs(20)),
    )
    .await;
    assert_eq!(results.len(), 12);
    for r in results.values() {
        assert_eq!(
            (r.success, r.confirmed, r.state),
            (true, Some(true), Some(PowerState::On)),
            "{}",
            r.node_name
        );
    }
    let runs = lines(&f, "status-runs").len();
    assert!(
        (1..=4).contains(&runs),
        "a status run per round, not per node: {runs} runs for 12 nodes"
    );
}

/// A driver per reserved exit code, and a batch driver per reserved word:
/// each gives its class. Busy is retried with backoff and then given up;
/// bad credentials are tried once; a node busy at first and then fine
/// succeeds.
const CLASSES: &str = r#"
platforms:
  coded:
    variables: [code]
    power_on: |
      echo "$POWER_NODE" >> "$FIXTURE_OUT/tries"
      [ "$code" = 0 ] || echo "the BMC says no" >&2
      exit "$code"
  settles:
    power_on: |
      echo "$POWER_NODE" >> "$FIXTURE_OUT/tries"
      [ "$(grep -c "^$POWER_NODE\$" "$FIXTURE_OUT/tries")" -ge 3 ] || exit 75
  worded:
    batch: true
    variables: [word]
    power_on: |
      IFS= read -r header
      while IFS=$'\t' read -r id node word; do
        echo "$node" >> "$FIXTURE_OUT/tries"
        echo "$id $word"
      done
static_nodes:
  auth: {platform: coded, code: "77"}
  far: {platform: coded, code: "68"}
  nope: {platform: coded, code: "69"}
  busy: {platform: coded, code: "75"}
  other: {platform: coded, code: "3"}
  later: {platform: settles}
  w-auth: {platform: worded, word: auth}
  w-busy: {platform: worded, word: busy}
  w-far: {platform: worded, word: unreachable}
  w-nope: {platform: worded, word: unsupported}
  w-error: {platform: worded, word: error}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn failures_carry_their_class_and_only_busy_is_retried() {
    let f = Fixture::new(&[("t.yaml", CLASSES)]);
    let all = [
        "auth", "far", "nope", "busy", "other", "later", "w-auth", "w-busy", "w-far", "w-nope",
        "w-error",
    ];
    let results = follow(&f, Action::PowerOn, &all, Wait::Platform).await;
    let class = |n: &str| results[n].error_class;
    for (node, expected) in [
        ("auth", ErrorClass::Auth),
        ("far", ErrorClass::Unreachable),
        ("nope", ErrorClass::Unsupported),
        ("busy", ErrorClass::Busy),
        ("other", ErrorClass::Failed),
        ("w-auth", ErrorClass::Auth),
        ("w-busy", ErrorClass::Busy),
        ("w-far", ErrorClass::Unreachable),
        ("w-nope", ErrorClass::Unsupported),
        ("w-error", ErrorClass::Failed),
    ] {
        assert_eq!(class(node), Some(expected), "{node}");
        assert!(!results[node].success, "{node}");
    }
    assert_eq!(results["auth"].error.as_deref(), Some("the BMC says no"));
    assert_eq!(
        results["busy"].error.as_deref(),
        Some("the BMC says no (still busy after 4 tries)")
    );
    assert_eq!(
        results["w-nope"].error.as_deref(),
        Some("power_on: the platform cannot do this action")
    );
    assert_eq!((results["later"].success, class("later")), (true, None));

    let tries = lines(&f, "tries");
    let count = |n: &str| tries.iter().filter(|t| *t == n).count();
    let retried = BUSY_RETRIES as usize + 1;
    for (node, expected) in [
        ("busy", retried),
        ("w-busy", retried),
        ("later", 3),
        ("auth", 1),
        ("w-auth", 1),
        ("far", 1),
        ("nope", 1),
        ("other", 1),
    ] {
        assert_eq!(count(node), expected, "runs of {node}");
    }
}

/// Nodes that shut down when asked (after `down` tenths of a second), one
/// that ignores it, and a platform with no `shutdown` at all. Every run
/// appends `NODE ACTION` to `$FIXTURE_OUT/runs`.
const GRACEFUL: &str = r#"
platforms:
  acpi:
    variables: [down]
    prelude: |
      echo "$POWER_NODE $POWER_ACTION" >> "$FIXTURE_OUT/runs"
      f="$FIXTURE_OUT/$POWER_NODE"
    shutdown: |
      [ "$down" = never ] || date +%s%N > "$f.down"
    power_off: echo off > "$f.off"
    status: |
      [ -f "$f.off" ] && exit 111
      [ -f "$f.down" ] || exit 0
      [ $(( $(date +%s%N) - $(cat "$f.down") )) -ge $(( down * 100000000 )) ] && exit 111
      exit 0
  plain:
    prelude: echo "$POWER_NODE $POWER_ACTION" >> "$FIXTURE_OUT/runs"
    power_off: "true"
    status: exit 0
static_nodes:
  polite: {platform: acpi, down: "3"}
  deaf: {platform: acpi, down: never}
  dumb: {platform: plain}
"#;

/// A graceful off shuts down what can, and switches off hard what is
/// still on after the grace or cannot shut down, saying which.
#[tokio::test(flavor = "multi_thread")]
async fn a_graceful_off_falls_back_to_a_hard_off() {
    let f = Fixture::new(&[("t.yaml", GRACEFUL)]);
    let asked = Asked {
        wait: Wait::Platform,
        grace: Some(Duration::from_secs(2)),
    };
    let started = std::time::Instant::now();
    let results = follow_asked(&f, Action::PowerOff, &["polite", "deaf", "dumb"], asked).await;
    for r in results.values() {
        assert_eq!(
            (r.action, r.success),
            (Action::PowerOff, true),
            "{}",
            r.node_name
        );
    }
    assert_eq!(
        (results["polite"].fallback, results["polite"].state),
        (Some(false), Some(PowerState::Off))
    );
    assert_eq!(results["deaf"].fallback, Some(true));
    assert_eq!(results["dumb"].fallback, Some(true));
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "deaf had its grace"
    );
    let mut runs = lines(&f, "runs");
    runs.retain(|r| !r.ends_with(" status"));
    runs.sort();
    assert_eq!(
        runs,
        [
            "deaf power_off",
            "deaf shutdown",
            "dumb power_off",
            "dumb shutdown",
            "polite shutdown"
        ],
        "polite was never switched off hard"
    );
}

/// A platform with `power_on_rate: 50/s`: its nodes' drivers start at
/// least 20 ms apart, each no sooner than its turn.
const PACED: &str = r#"
platforms:
  paced:
    power_on_rate: 50/s
    power_on: echo "$(date +%s%N) $POWER_NODE" >> "$FIXTURE_OUT/starts"
    power_off: "true"
    status: exit 111
  paced-batch:
    batch: true
    power_on_rate: 50/s
    power_on: |
      IFS= read -r header
      while IFS=$'\t' read -r id node; do
        echo "$(date +%s%N) $node" >> "$FIXTURE_OUT/starts"; echo "$id ok"
      done
static_nodes:
  p[001-100]: {platform: paced}
  q[01-10]: {platform: paced-batch}
"#;

fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Each driver start, in order, in nanoseconds since the epoch.
fn starts(f: &Fixture) -> Vec<u128> {
    let mut starts: Vec<u128> = lines(f, "starts")
        .iter()
        .map(|l| l.split(' ').next().unwrap().parse().unwrap())
        .collect();
    starts.sort_unstable();
    starts
}

/// A staged power-on of 100 nodes holds the rate: the i-th driver starts
/// no sooner than i intervals after the request; the request lists the
/// 99 nodes that wait, and other actions are not paced. A batch
/// platform's nodes are paced one by one too.
#[tokio::test(flavor = "multi_thread")]
async fn a_staged_power_on_holds_its_rate() {
    let f = Fixture::new(&[("t.yaml", PACED)]);
    let engine = f.engine(50, &[]);
    let interval = 20_000_000u128;
    let nodes: Vec<String> = (1..=100).map(|i| format!("p{i:03}")).collect();
    let before = now_ns();
    let (mut rx, waiting) =
        engine.run_with_turns(f.loaded.clone(), Action::PowerOn, nodes.clone(), None);
    assert_eq!(waiting.len(), 99, "all but the first wait their turn");
    assert!(waiting.windows(2).all(|w| w[1].starts > w[0].starts));
    let mut done = 0;
    while let Some(r) = rx.recv().await {
        assert!(r.success, "{r:?}");
        done += 1;
    }
    assert_eq!(done, 100);
    let started = starts(&f);
    assert_eq!(started.len(), 100);
    for (i, start) in started.iter().enumerate() {
        assert!(
            *start >= before + i as u128 * interval,
            "start {i} came {} ms early",
            (before + i as u128 * interval - start) / 1_000_000
        );
    }
    // Other actions are not paced.
    for action in [Action::PowerOff, Action::Status] {
        let (_, waiting) = engine.run_with_turns(f.loaded.clone(), action, nodes.clone(), None);
        assert!(waiting.is_empty(), "{action} paced");
    }

    std::fs::remove_file(f.out().join("starts")).unwrap();
    let batch: Vec<String> = (1..=10).map(|i| format!("q{i:02}")).collect();
    let names: Vec<&str> = batch.iter().map(String::as_str).collect();
    let before = now_ns();
    let results = f.run(&engine, Action::PowerOn, &names).await;
    assert!(results.iter().all(|r| r.success));
    for (i, start) in starts(&f).iter().enumerate() {
        assert!(
            *start >= before + i as u128 * interval,
            "batch start {i} early"
        );
    }
}
