//! End-to-end benchmark: whole pipelines from `benches/pipelines/*.yaml` (and the
//! quickstart) run through the embedded runtime, on 1 and N worker threads.
//!
//! Prints, per case and worker count, the median over runs of events/s, events/s per
//! worker thread, and bytes per event across the edge -> cloud cut.
//!
//! `cargo bench --bench end_to_end` (env: `EDGEFLOW_BENCH_EVENTS`, `EDGEFLOW_BENCH_RUNS`,
//! `EDGEFLOW_BENCH_WORKERS` = max workers).

use std::path::Path;
use std::sync::Arc;

use edgeflow::metrics::Metrics;
use edgeflow::plan;
use edgeflow::runtime::{self, RunContext, RunOptions, RunReport};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn run_once(file: &Path, workers: usize, events: u64, data_dir: &Path) -> RunReport {
    let plan = Arc::new(plan::load_plan(file).unwrap_or_else(|d| panic!("{d}")));
    let options = RunOptions {
        workers,
        events: Some(events),
        data_dir: data_dir.to_path_buf(),
        ..RunOptions::default()
    };
    let catalog = Arc::new(runtime::catalog_for(&plan, workers));
    let ctx = RunContext::new(&plan, data_dir, Metrics::new(), catalog).expect("run context");
    runtime::run_embedded(plan, &options, ctx).expect("run")
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    // `cargo test --benches` runs bench binaries with `--bench`-less args; keep it quick then.
    let quick = !std::env::args().any(|a| a == "--bench");
    let events = if quick {
        200_000
    } else {
        env_or("EDGEFLOW_BENCH_EVENTS", 50_000_000)
    };
    let runs = if quick {
        1
    } else {
        env_or("EDGEFLOW_BENCH_RUNS", 3) as usize
    };
    let max_workers = env_or("EDGEFLOW_BENCH_WORKERS", 2) as usize;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cases: Vec<_> = std::fs::read_dir(root.join("benches/pipelines"))
        .expect("benches/pipelines")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    cases.sort();
    cases.push(root.join("pipelines/quickstart.yaml"));
    let data = tempfile::tempdir().expect("temp dir");
    println!("end-to-end: {events} events per run, median of {runs} run(s)");
    println!(
        "{:<28} {:>7} {:>14} {:>18} {:>12} {:>8}",
        "case", "workers", "events/s", "events/s/worker", "B/event", "scaling"
    );
    for case in &cases {
        let name = case
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let mut single = None;
        let mut workers = 1;
        while workers <= max_workers {
            let reports: Vec<RunReport> = (0..runs)
                .map(|_| run_once(case, workers, events, data.path()))
                .collect();
            let rate = median(reports.iter().map(RunReport::events_per_second).collect());
            let bytes = median(reports.iter().map(RunReport::bytes_per_event).collect());
            let base = *single.get_or_insert(rate);
            println!(
                "{name:<28} {workers:>7} {rate:>14.0} {:>18.0} {bytes:>12.3} {:>7.2}x",
                rate / workers as f64,
                rate / base
            );
            workers *= 2;
        }
    }
}
