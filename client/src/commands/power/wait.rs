//! `--wait`: polls the nodes' status until they reach the state or time is up.

use super::outcome::reported_state;
use crate::exit::Failure;
use crate::http::{Api, Ask, Target};
use crate::progress::Progress;
use power_proto::hostlist;
use power_proto::wire::{Action, PowerState};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Polls the status of `nodes` until each is in `goal` or `limit` has
/// passed; returns the last state seen of each.
pub(super) fn poll(
    api: &Api,
    nodes: &[String],
    goal: PowerState,
    limit: Duration,
) -> Result<HashMap<String, PowerState>, Failure> {
    let deadline = Instant::now() + limit;
    let mut seen: HashMap<String, PowerState> = HashMap::new();
    let mut pending: Vec<String> = nodes.to_vec();
    let progress = Progress::start(Some(nodes.len()), &format!("waiting for {goal}"));
    let mut interval = Duration::from_millis(200);
    while !pending.is_empty() {
        let expr = hostlist::compress(&pending);
        let results = api.power(Action::Status, &Target::Nodes(expr), Ask::default(), |_| {})?;
        for result in &results {
            seen.insert(result.node_name.clone(), reported_state(result));
        }
        pending.retain(|n| seen.get(n) != Some(&goal));
        progress.set(nodes.len() - pending.len());
        let now = Instant::now();
        if pending.is_empty() || now >= deadline {
            break;
        }
        std::thread::sleep(interval.min(deadline - now));
        interval = (interval * 2).min(Duration::from_secs(2));
    }
    Ok(seen)
}
