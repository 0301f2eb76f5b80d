//! SQL latency on a table of 1 million rows while ingest continues, against the same
//! queries once ingest has stopped (the baseline), in one run.
//!
//! A pipeline runs in-process on a timely worker thread: a `bulk` generator writes 1M
//! readings into the `readings` table as fast as real time at 1M readings/s allows, then
//! ends; a `live` generator keeps adding 20k readings/s (paced in real time) through the
//! edge -> cloud cut, like a fleet reporting. Once the table holds >= 1M rows, the bench runs
//! a point lookup, a GROUP BY aggregate and a COUNT(*) round-robin through the same
//! `QueryEngine` the HTTP and Postgres servers use, then stops the pipeline and runs them
//! again. It prints p50/p99 per query and phase and the ratio ingest/baseline.
//!
//! `cargo bench --workspace --bench sql` (env: `EDGEFLOW_BENCH_SQL_ROWS` table rows before
//! measuring, `EDGEFLOW_BENCH_SQL_QUERIES` queries of each kind per phase).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use edgeflow::metrics::Metrics;
use edgeflow::plan;
use edgeflow::runtime::{self, RunContext, RunOptions};
use edgeflow::sql::QueryEngine;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pipeline(bulk_rows: u64) -> String {
    format!(
        r#"
pipeline: sqlbench
schema:
  reading: {{ ts: timestamp_ms, device: string, site: string, sensor: string, value: f64 }}
nodes:
  bulk: {{ kind: generator, schema: reading, devices: 1000, sites: 10, sensors: [vibration, temperature], rate_per_device: 500/s, seed: 1, events: {bulk_rows} }}
  live: {{ kind: generator, schema: reading, devices: 200, sites: 10, sensors: [vibration, temperature], rate_per_device: 50/s, seed: 2 }}
  readings: {{ kind: table, inputs: [bulk, live] }}
"#
    )
}

/// Latencies of one query kind in one phase, in ms.
struct Samples {
    name: &'static str,
    ms: Vec<f64>,
}

impl Samples {
    fn percentile(&self, p: f64) -> f64 {
        let mut sorted = self.ms.clone();
        sorted.sort_by(f64::total_cmp);
        let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted[rank.min(sorted.len() - 1)]
    }
}

/// Runs every query `rounds` times, round-robin, and returns the latencies per query.
fn measure(
    tokio: &tokio::runtime::Runtime,
    engine: &QueryEngine,
    queries: &[(&'static str, String)],
    rounds: usize,
) -> Vec<Samples> {
    let mut samples: Vec<Samples> = queries
        .iter()
        .map(|(name, _)| Samples {
            name,
            ms: Vec::with_capacity(rounds),
        })
        .collect();
    for _ in 0..rounds {
        for ((_, sql), samples) in queries.iter().zip(&mut samples) {
            let started = Instant::now();
            let result = tokio.block_on(engine.query(sql)).expect("query");
            samples.ms.push(started.elapsed().as_secs_f64() * 1e3);
            assert!(result.num_rows() > 0, "{sql} returned no rows");
        }
    }
    samples
}

fn rows(engine: &QueryEngine) -> usize {
    engine
        .catalog()
        .get("readings")
        .map_or(0, |t| t.visible_rows())
}

fn main() {
    // `cargo test --benches` runs bench binaries without `--bench`; keep it quick then.
    let quick = !std::env::args().any(|a| a == "--bench");
    let target_rows = if quick {
        20_000
    } else {
        env_or("EDGEFLOW_BENCH_SQL_ROWS", 1_000_000)
    };
    let rounds = if quick {
        3
    } else {
        env_or("EDGEFLOW_BENCH_SQL_QUERIES", 100) as usize
    };
    let data = tempfile::tempdir().expect("temp dir");
    let plan = plan::plan_with(
        "sqlbench.yaml",
        &pipeline(target_rows),
        Path::new(""),
        &|_| None,
    )
    .unwrap_or_else(|d| panic!("{d}"));
    let plan = Arc::new(plan);
    let options = RunOptions {
        workers: 1,
        realtime: true,
        data_dir: data.path().to_path_buf(),
        ..RunOptions::default()
    };
    let catalog = Arc::new(runtime::catalog_for(&plan, options.workers));
    let ctx =
        RunContext::new(&plan, data.path(), Metrics::new(), catalog.clone()).expect("run context");
    let engine = QueryEngine::new(catalog).with_system(ctx.system.clone());
    // As `edgeflow run --serve` runs its servers: two async worker threads.
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("tokio");

    let pipeline = {
        let (plan, options, ctx) = (plan.clone(), options.clone(), ctx.clone());
        std::thread::spawn(move || runtime::run_embedded(plan, &options, ctx))
    };
    let filling = Instant::now();
    // Bounded: 10 minutes.
    while rows(&engine) < target_rows as usize {
        assert!(
            filling.elapsed() < Duration::from_secs(600),
            "the table did not reach {target_rows} rows"
        );
        assert!(!pipeline.is_finished(), "the pipeline ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "sql: table `readings` reached {} rows in {:.1} s; {rounds} queries of each kind per phase",
        rows(&engine),
        filling.elapsed().as_secs_f64()
    );
    let device = {
        let result = tokio
            .block_on(engine.query("SELECT device FROM readings LIMIT 1"))
            .expect("a device");
        let column = result.batches[0].column(0).clone();
        arrow::util::display::array_value_to_string(&column, 0).expect("device name")
    };
    let queries = [
        (
            "point lookup",
            format!(
                "SELECT ts, sensor, value FROM readings WHERE device = '{device}' \
                 AND sensor = 'vibration' ORDER BY ts DESC LIMIT 1"
            ),
        ),
        (
            "group by",
            "SELECT site, sensor, count(*) AS n, avg(value) AS mean, max(value) AS top \
             FROM readings GROUP BY site, sensor"
                .to_string(),
        ),
        ("count(*)", "SELECT count(*) FROM readings".to_string()),
    ];

    let before = rows(&engine);
    let started = Instant::now();
    let ingesting = measure(&tokio, &engine, &queries, rounds);
    let elapsed = started.elapsed().as_secs_f64();
    let after = rows(&engine);
    println!(
        "while ingesting: {before} -> {after} rows in {elapsed:.1} s ({:.0} rows/s visible)",
        (after - before) as f64 / elapsed
    );

    ctx.stop.store(true, Ordering::SeqCst);
    let report = pipeline
        .join()
        .expect("pipeline thread")
        .expect("pipeline run");
    let stopped_rows = rows(&engine);
    println!(
        "ingest stopped: {stopped_rows} rows ({} readings generated)",
        report.source_events
    );
    let baseline = measure(&tokio, &engine, &queries, rounds);

    println!(
        "{:<14} {:>12} {:>12} {:>12} {:>12} {:>9} {:>9}",
        "query", "p50 ingest", "p99 ingest", "p50 stopped", "p99 stopped", "p50 x", "p99 x"
    );
    for (live, idle) in ingesting.iter().zip(&baseline) {
        let (p50, p99) = (live.percentile(0.5), live.percentile(0.99));
        let (b50, b99) = (idle.percentile(0.5), idle.percentile(0.99));
        println!(
            "{:<14} {:>9.2} ms {:>9.2} ms {:>9.2} ms {:>9.2} ms {:>8.2}x {:>8.2}x",
            live.name,
            p50,
            p99,
            b50,
            b99,
            p50 / b50,
            p99 / b99
        );
    }
}
