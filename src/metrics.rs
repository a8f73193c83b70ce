//! The server's metrics, in the Prometheus text format (`GET /metrics`):
//! what it was asked, what its drivers did, and the topology it serves.
//!
//! Counters and the duration histogram move as things happen; the gauges
//! (runs in flight, nodes, the last load) are read when scraped. Labels
//! hold only the server's own words and the topology's platform names,
//! never a client's text, so their number stays small.

use power_proto::wire::Action;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

/// The media type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    platform: String,
    action: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    platform: String,
    action: String,
}

/// Every metric the server keeps. Cheap to update from any thread.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    runs: Family<RunLabels, Counter>,
    results: Family<RunLabels, Counter>,
    durations: Family<DurationLabels, Histogram>,
    in_flight: Gauge,
    nodes: Gauge,
    loaded_at: Gauge<f64, AtomicU64>,
    load_ok: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("power");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route, method and status",
            requests.clone(),
        );
        let runs = Family::<RunLabels, Counter>::default();
        registry.register(
            "driver_runs",
            "Driver processes run (a batch chunk is one), by platform, action and outcome",
            runs.clone(),
        );
        let results = Family::<RunLabels, Counter>::default();
        registry.register(
            "node_results",
            "Per-node results, by platform, action and outcome (on, off, ok, failed)",
            results.clone(),
        );
        let durations = Family::<DurationLabels, Histogram>::new_with_constructor(|| {
            // 10 ms to about 10 minutes.
            Histogram::new(exponential_buckets(0.01, 2.0, 17))
        });
        registry.register_with_unit(
            "driver_duration",
            "How long driver processes ran",
            prometheus_client::registry::Unit::Seconds,
            durations.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "runs_in_flight",
            "Node runs started or waiting for a driver slot",
            in_flight.clone(),
        );
        let nodes = Gauge::default();
        registry.register(
            "topology_nodes",
            "Nodes in the topology served",
            nodes.clone(),
        );
        let loaded_at = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "last_load_timestamp_seconds",
            "When the topology was last loaded or reloaded (Unix time), whatever the outcome",
            loaded_at.clone(),
        );
        let load_ok = Gauge::default();
        registry.register(
            "last_load_success",
            "1 if the last load or reload succeeded, 0 if it was refused",
            load_ok.clone(),
        );
        Metrics {
            registry,
            requests,
            runs,
            results,
            durations,
            in_flight,
            nodes,
            loaded_at,
            load_ok,
        }
    }

    /// An HTTP request answered with `status`.
    pub fn request(&self, route: &str, method: &str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                method: method.to_string(),
                status: status.to_string(),
            })
            .inc();
    }

    /// A driver process ran for `took`, ending as `outcome`.
    pub fn driver_run(&self, platform: &str, action: Action, outcome: &str, took: Duration) {
        self.runs
            .get_or_create(&run_labels(platform, action, outcome))
            .inc();
        self.durations
            .get_or_create(&DurationLabels {
                platform: platform.to_string(),
                action: action.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// `count` nodes' results: `outcome` is `on`, `off`, `ok` or `failed`.
    pub fn node_results(&self, platform: &str, action: Action, outcome: &str, count: u64) {
        if count > 0 {
            self.results
                .get_or_create(&run_labels(platform, action, outcome))
                .inc_by(count);
        }
    }

    /// The text of every metric, with the gauges read now: runs in flight,
    /// nodes, and when the last load was and whether it succeeded.
    pub fn render(
        &self,
        in_flight: usize,
        nodes: usize,
        last_load: Option<(SystemTime, bool)>,
    ) -> String {
        self.in_flight.set(in_flight as i64);
        self.nodes.set(nodes as i64);
        if let Some((at, ok)) = last_load {
            let secs = at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            self.loaded_at.set(secs);
            self.load_ok.set(i64::from(ok));
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String does not fail");
        text
    }
}

fn run_labels(platform: &str, action: Action, outcome: &str) -> RunLabels {
    RunLabels {
        platform: platform.to_string(),
        action: action.to_string(),
        outcome: outcome.to_string(),
    }
}

/// The words of node results, in [`outcome_index`]'s order.
pub const OUTCOMES: [&str; 4] = ["on", "off", "ok", "failed"];

/// A node result's word for logs and metrics: `on` or `off` for a status,
/// `ok` for an action, `failed` for any failure.
pub fn outcome_word(success: bool, state: Option<power_proto::wire::PowerState>) -> &'static str {
    OUTCOMES[outcome_index(success, state)]
}

/// Where a node result's word stands in [`OUTCOMES`].
pub fn outcome_index(success: bool, state: Option<power_proto::wire::PowerState>) -> usize {
    use power_proto::wire::PowerState;
    match (success, state) {
        (true, Some(PowerState::On)) => 0,
        (true, Some(PowerState::Off)) => 1,
        (true, _) => 2,
        (false, _) => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_gauges_show_in_the_text() {
        let m = Metrics::new();
        m.request("/", "GET", 200);
        m.request("/", "GET", 200);
        m.driver_run("sim", Action::PowerOn, "ok", Duration::from_millis(30));
        m.node_results("sim", Action::Status, "on", 1);
        m.node_results("sim", Action::Status, "off", 0);
        let text = m.render(
            3,
            17,
            Some((SystemTime::UNIX_EPOCH + Duration::from_secs(5), true)),
        );
        for line in [
            "power_http_requests_total{route=\"/\",method=\"GET\",status=\"200\"} 2",
            "power_driver_runs_total{platform=\"sim\",action=\"power_on\",outcome=\"ok\"} 1",
            "power_node_results_total{platform=\"sim\",action=\"status\",outcome=\"on\"} 1",
            "power_driver_duration_seconds_count{platform=\"sim\",action=\"power_on\"} 1",
            "power_runs_in_flight 3",
            "power_topology_nodes 17",
            "power_last_load_timestamp_seconds 5.0",
            "power_last_load_success 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
        assert!(
            !text.contains("outcome=\"off\""),
            "a count of 0 made a series: {text}"
        );
    }
}
