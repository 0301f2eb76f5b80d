//! Cloud aggregation throughput: summaries per second through the differential `aggregate`
//! kind, per worker thread, on 1 and N workers.
//!
//! The generator stands in for the edge's summaries (each reading is one summary row with a
//! device, site, sensor and value); they cross the cut through the embedded log into the
//! aggregate, whose changes go to a changelog table. The baseline, measured in the same run,
//! is the same pipeline with a `filter` that keeps nothing in place of the aggregate, so the
//! ratio is the aggregate's own cost on top of generating and moving the rows.
//!
//! `cargo bench --bench aggregation` (env: `EDGEFLOW_BENCH_EVENTS`, `EDGEFLOW_BENCH_RUNS`,
//! `EDGEFLOW_BENCH_WORKERS` = max workers).

use std::sync::Arc;
use std::time::Duration;

use edgeflow::metrics::Metrics;
use edgeflow::plan;
use edgeflow::runtime::{self, RunContext, RunOptions};

const HEADER: &str = r#"
pipeline: aggregation-bench
nodes:
  summaries: { kind: generator, devices: 1000, sites: 20, anomaly_rate: 0 }
"#;

/// (name, the nodes after the source).
const CASES: &[(&str, &str)] = &[
    (
        "baseline: summaries dropped in the cloud",
        r#"
  dropped: { kind: filter, inputs: [summaries], where: "value > 1e300", placement: cloud }
  out: { kind: table, inputs: [dropped] }
"#,
    ),
    (
        "site x sensor, 1m windows",
        r#"
  fleet:
    kind: aggregate
    inputs: [summaries]
    key: [site, sensor]
    size: 1m
    allowed_lateness: 1m
    aggregates: [count, sum(value), min(value), max(value), mean(value)]
  out: { kind: table, inputs: [fleet] }
"#,
    ),
    (
        "device x sensor running totals",
        r#"
  totals:
    kind: aggregate
    inputs: [summaries]
    key: [device, sensor]
    aggregates: [count, sum(value), max(value)]
  out: { kind: table, inputs: [totals] }
"#,
    ),
];

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn run_once(yaml: &str, workers: usize, events: u64) -> Duration {
    let dir = tempfile::tempdir().expect("temp dir");
    let plan = Arc::new(
        plan::plan_with("bench.yaml", yaml, dir.path(), &|_| None)
            .unwrap_or_else(|d| panic!("{d}")),
    );
    let options = RunOptions {
        workers,
        events: Some(events),
        data_dir: dir.path().to_path_buf(),
        ..RunOptions::default()
    };
    let catalog = Arc::new(runtime::catalog_for(&plan, workers));
    let ctx = RunContext::new(&plan, dir.path(), Metrics::new(), catalog).expect("run context");
    let report = runtime::run_embedded(plan, &options, ctx).expect("run");
    assert_eq!(report.source_events, events);
    report.elapsed
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    // `cargo test --benches` runs bench binaries without `--bench`; keep it quick then.
    let quick = !std::env::args().any(|a| a == "--bench");
    let events = if quick {
        20_000
    } else {
        env_or("EDGEFLOW_BENCH_EVENTS", 2_000_000)
    };
    let runs = if quick {
        1
    } else {
        env_or("EDGEFLOW_BENCH_RUNS", 3) as usize
    };
    let max_workers = env_or("EDGEFLOW_BENCH_WORKERS", 2) as usize;
    println!("aggregation: {events} summaries per run, median of {runs} runs");
    let mut baseline: Vec<f64> = Vec::new();
    for (i, (name, nodes)) in CASES.iter().enumerate() {
        let yaml = format!("{HEADER}{nodes}");
        for workers in 1..=max_workers {
            let rate = median(
                (0..runs)
                    .map(|_| events as f64 / run_once(&yaml, workers, events).as_secs_f64())
                    .collect(),
            );
            let ratio = if i == 0 {
                baseline.push(rate);
                String::new()
            } else {
                format!(
                    "  ({:.2}x the baseline's time)",
                    baseline[workers - 1] / rate
                )
            };
            println!(
                "{name:<42} {workers} worker(s): {rate:>12.0} summaries/s  {:>12.0} per worker{ratio}",
                rate / workers as f64
            );
        }
    }
}
