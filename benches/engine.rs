//! The engine's overhead, measured against a raw spawn loop doing the same
//! work in the same run.
//!
//! Both run the same driver (the shipped `sim`, and a bare `exit 0` script)
//! for N nodes with the same concurrency bound. The raw loop is the floor:
//! spawn, wait, nothing else. The engine adds planning the environment, the
//! per-node and per-platform locks, process groups, output capture, the
//! timeout and interpretation. Run with `cargo bench --bench engine`.

use power_server::engine::Engine;
use power_server::load::{LoadSettings, Loaded};
use power_server::wire::Action;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

const CONCURRENCY: usize = 50;

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let checkout = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let nodes: usize = std::env::var("BENCH_NODES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let tmp = tempfile::tempdir().unwrap();
    let topology = tmp.path().join("topology.d");
    std::fs::create_dir_all(&topology).unwrap();
    std::fs::write(
        topology.join("bench.yaml"),
        format!(
            "platforms:\n  sim:\n    driver: sim\n  bare:\n    variables: [name]\n    status: exit 0\n\
             static_nodes:\n  s[1-{nodes}]:\n    platform: sim\n  b[1-{nodes}]:\n    platform: bare\n"
        ),
    )
    .unwrap();
    let settings = LoadSettings {
        topology_named: true,
        topology_files: Vec::new(),
        protected_groups: Vec::new(),
        topology_dirs: vec![topology],
        drivers_dirs: vec![checkout.join("drivers")],
        runtime_dir: Some(tmp.path().join("run")),
    };
    let started = Instant::now();
    let loaded = Arc::new(Loaded::read(&settings).unwrap());
    println!(
        "load {} nodes: {:.1} ms",
        2 * nodes,
        started.elapsed().as_secs_f64() * 1e3
    );
    std::env::set_var("POWER_SIM_DIR", tmp.path().join("sim"));

    println!(
        "{nodes} nodes, concurrency {CONCURRENCY}, {} cores",
        std::thread::available_parallelism().unwrap()
    );
    println!(
        "{:<8} {:>14} {:>14} {:>10}",
        "driver", "raw loop/s", "engine/s", "overhead"
    );
    for (platform, prefix) in [("bare", "b"), ("sim", "s")] {
        let driver = loaded.drivers.by_platform[platform].path.clone();
        let names: Vec<String> = (1..=nodes).map(|i| format!("{prefix}{i}")).collect();
        let raw = runtime.block_on(raw_loop(&driver, &names));
        let engine = Engine::new(CONCURRENCY, std::env::vars_os());
        let started = Instant::now();
        let results =
            runtime.block_on(engine.run_all(loaded.clone(), Action::Status, names.clone()));
        let took = started.elapsed();
        assert!(
            results.iter().all(|r| r.success),
            "{:?}",
            results.iter().find(|r| !r.success)
        );
        let per_run_us = (took.as_secs_f64() - raw.as_secs_f64()) / nodes as f64 * 1e6;
        println!(
            "{platform:<8} {:>14.0} {:>14.0} {:>8.0}µs/run",
            nodes as f64 / raw.as_secs_f64(),
            nodes as f64 / took.as_secs_f64(),
            per_run_us
        );
    }
    println!("peak RSS: {} MiB", peak_rss_kib() / 1024);
}

/// The floor: spawn the driver per node under the same bound, wait, done.
async fn raw_loop(driver: &Path, names: &[String]) -> Duration {
    let bound = Arc::new(Semaphore::new(CONCURRENCY));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(names.len());
    for name in names {
        let permit = bound.clone().acquire_owned().await.unwrap();
        let mut command = tokio::process::Command::new(driver);
        command
            .arg("status")
            .env("POWER_NODE", name)
            .env("name", name)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        tasks.push(tokio::spawn(async move {
            let status = command.status().await.unwrap();
            drop(permit);
            status
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    started.elapsed()
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
