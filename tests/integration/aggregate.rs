//! The differential `aggregate` kind against from-scratch recomputations written here: late
//! rows, corrected rows, a reference lookup, and a reference that changes while running.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int64Type, TimestampMillisecondType};
use edgeflow::metrics::Metrics;
use edgeflow::plan;
use edgeflow::runtime::{self, RunContext, RunOptions};
use edgeflow::sql::QueryEngine;
use rand::{RngExt, SeedableRng};

use crate::common::embedded::{query, run_embedded};

const T0: i64 = 1_700_000_000_000;
const MINUTE: i64 = 60_000;

/// One summary row as the edge would send it: identity (device, sensor, ts).
#[derive(Clone, Debug)]
struct Summary {
    ts: i64,
    device: String,
    sensor: String,
    count: i64,
    mean: f64,
    max: f64,
}

/// Rows in file order: summaries every 5 s per device and sensor over 3 hours, some
/// corrected a few rows later, some sent again an hour late, plus malformed lines.
/// Returns the CSV text; the rows a windowed view with an identity must hold (late rows and
/// superseded rows out); the rows running totals must hold (no lateness: a stale row
/// replaces the row with its identity like any correction); and every row that is not late
/// (what a windowed view without an identity counts: a correction is one more row).
fn make_input(seed: u64) -> (String, Vec<Summary>, Vec<Summary>, Vec<Summary>) {
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
    let devices = 7;
    let mut lines = vec!["ts,device,sensor,count,mean,max".to_owned()];
    let mut current: BTreeMap<(String, String, i64), Summary> = BTreeMap::new();
    let mut pending_corrections: Vec<Summary> = Vec::new();
    let mut stale_rows: Vec<Summary> = Vec::new();
    let mut on_time: Vec<Summary> = Vec::new();
    let line = |s: &Summary| {
        format!(
            "{},{},{},{},{},{}",
            s.ts, s.device, s.sensor, s.count, s.mean, s.max
        )
    };
    for step in 0..(3 * 60 * 12) {
        let ts = T0 + step * 5_000;
        for d in 0..devices {
            for sensor in ["temp", "vib"] {
                let s = Summary {
                    ts,
                    device: format!("d{d}"),
                    sensor: sensor.to_owned(),
                    count: rng.random_range(1..50),
                    mean: rng.random_range(-1000..1000) as f64 / 8.0,
                    max: rng.random_range(0..4000) as f64 / 4.0,
                };
                lines.push(line(&s));
                on_time.push(s.clone());
                current.insert((s.device.clone(), s.sensor.clone(), ts), s.clone());
                if rng.random_range(0..40) == 0 {
                    let mut fixed = s.clone();
                    fixed.count += 100;
                    fixed.mean += 0.5;
                    pending_corrections.push(fixed);
                }
            }
        }
        // Corrections arrive one step later (well within the allowed lateness).
        if step % 2 == 1 {
            for fixed in pending_corrections.drain(..) {
                lines.push(line(&fixed));
                on_time.push(fixed.clone());
                current.insert(
                    (fixed.device.clone(), fixed.sensor.clone(), fixed.ts),
                    fixed,
                );
            }
        }
        // An hour late: beyond any window's lateness, so never counted.
        if step > 12 * 70 && step % 97 == 0 {
            let mut stale = current.values().next().cloned().unwrap();
            stale.ts = ts - 60 * MINUTE;
            stale.count = 999_999;
            lines.push(line(&stale));
            stale_rows.push(stale);
        }
        if step % 301 == 7 {
            lines.push(format!("{ts},d1,temp,not-a-count,1.0,2.0"));
        }
    }
    let windowed: Vec<Summary> = current.values().cloned().collect();
    // A stale row replaces the row of its identity (at most one stale row per identity here,
    // and no correction of that row follows it).
    for stale in stale_rows {
        current.insert(
            (stale.device.clone(), stale.sensor.clone(), stale.ts),
            stale,
        );
    }
    (
        lines.join("\n") + "\n",
        windowed,
        current.into_values().collect(),
        on_time,
    )
}

fn registry(lines_of: &[(&str, &str)]) -> String {
    let mut out = String::from("device,line,model\n");
    for (device, line) in lines_of {
        out.push_str(&format!("{device},{line},m-{device}\n"));
    }
    out
}

const PIPELINE: &str = r#"
pipeline: fleet-views
schema:
  summary: { ts: timestamp_ms, device: string, sensor: string, count: i64, mean: f64, max: f64 }
nodes:
  summaries:
    kind: file
    path: summaries.csv
    schema: summary
    disorder: 10s
  registry:
    kind: reference
    path: registry.csv
    schema: { device: string, line: string, model: string }
    key: [device]
    reload: 100ms
  by_line:
    kind: aggregate
    inputs: [summaries]
    lookup: registry
    key: [line]
    size: 1m
    allowed_lateness: 2m
    identity: [device, sensor, ts]
    aggregates: [count, sum(count), max(max), mean(mean), min(mean), count_distinct(device)]
  device_totals:
    kind: aggregate
    inputs: [summaries]
    key: [device]
    identity: [device, sensor, ts]
    aggregates: [sum(count), max(max)]
  by_line_rows:
    kind: aggregate
    inputs: [summaries]
    lookup: registry
    key: [line]
    size: 1m
    allowed_lateness: 2m
    aggregates: [count, sum(count), max(max), mean(mean), min(mean), count_distinct(device)]
  line_view: { kind: table, inputs: [by_line] }
  line_rows_view: { kind: table, inputs: [by_line_rows] }
  totals_view: { kind: table, inputs: [device_totals] }
"#;

/// Runs `dir/pipeline.yaml` to its end; an engine over its tables.
fn run(dir: &Path, workers: usize, batch_rows: usize) -> QueryEngine {
    run_embedded(&dir.join("pipeline.yaml"), workers, batch_rows).1
}

/// The line view computed from scratch: (line, window start) -> (count, sum, max, mean,
/// min of means, distinct devices).
type LineView = BTreeMap<(Option<String>, i64), (i64, i64, f64, f64, f64, i64)>;

fn expected_lines(rows: &[Summary], line_of: &BTreeMap<String, String>) -> LineView {
    let mut groups: BTreeMap<(Option<String>, i64), Vec<&Summary>> = BTreeMap::new();
    for s in rows {
        let line = line_of.get(&s.device).cloned();
        groups
            .entry((line, s.ts.div_euclid(MINUTE) * MINUTE))
            .or_default()
            .push(s);
    }
    groups
        .into_iter()
        .map(|(k, g)| {
            let n = g.len() as i64;
            let sum = g.iter().map(|s| s.count).sum();
            let max = g.iter().map(|s| s.max).fold(f64::MIN, f64::max);
            let mean = g.iter().map(|s| s.mean).sum::<f64>() / n as f64;
            let min_mean = g.iter().map(|s| s.mean).fold(f64::MAX, f64::min);
            let devices = g.iter().map(|s| &s.device).collect::<BTreeSet<_>>().len() as i64;
            (k, (n, sum, max, mean, min_mean, devices))
        })
        .collect()
}

fn actual_lines(engine: &QueryEngine, table: &str) -> LineView {
    let result = query(
        engine,
        &format!(
            "SELECT line, window_start, count, sum_count, max_max, mean_mean, min_mean, \
             count_distinct_device FROM {table}"
        ),
    );
    let mut out = LineView::new();
    for b in &result.batches {
        let line = b.column(0).as_string::<i32>();
        let start = b.column(1).as_primitive::<TimestampMillisecondType>();
        let i = |c: usize| b.column(c).as_primitive::<Int64Type>();
        let f = |c: usize| b.column(c).as_primitive::<Float64Type>();
        for r in 0..b.num_rows() {
            let key = (
                (!line.is_null(r)).then(|| line.value(r).to_owned()),
                start.value(r),
            );
            let row = (
                i(2).value(r),
                i(3).value(r),
                f(4).value(r),
                f(5).value(r),
                f(6).value(r),
                i(7).value(r),
            );
            assert!(out.insert(key.clone(), row).is_none(), "{key:?} twice");
        }
    }
    out
}

fn assert_views_equal(actual: &LineView, expected: &LineView) {
    assert_eq!(
        actual.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (key, a) in actual {
        let e = &expected[key];
        assert_eq!((a.0, a.1, a.5), (e.0, e.1, e.5), "{key:?}");
        for (x, y) in [(a.2, e.2), (a.3, e.3), (a.4, e.4)] {
            assert!(
                (x - y).abs() <= 1e-9 * y.abs().max(1.0),
                "{key:?}: {a:?} vs {e:?}"
            );
        }
    }
}

#[test]
fn incremental_views_equal_a_recomputation_with_late_and_corrected_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (csv, rows, totals_rows, on_time) = make_input(2026);
    std::fs::write(dir.path().join("summaries.csv"), csv).unwrap();
    let mapping = [
        ("d0", "a"),
        ("d1", "a"),
        ("d2", "b"),
        ("d3", "b"),
        ("d4", "c"),
        ("d5", "c"),
    ];
    std::fs::write(dir.path().join("registry.csv"), registry(&mapping)).unwrap();
    std::fs::write(dir.path().join("pipeline.yaml"), PIPELINE).unwrap();
    let line_of: BTreeMap<String, String> = mapping
        .iter()
        .map(|(d, l)| ((*d).to_owned(), (*l).to_owned()))
        .collect();
    let expected = expected_lines(&rows, &line_of);
    let expected_rows = expected_lines(&on_time, &line_of);
    assert!(
        expected.keys().any(|(line, _)| line.is_none()),
        "d6 is not in the registry: its rows keep a null line"
    );
    for (workers, batch_rows) in [(1, 500), (2, 97)] {
        let engine = run(dir.path(), workers, batch_rows);
        assert_views_equal(&actual_lines(&engine, "line_view"), &expected);
        assert_views_equal(&actual_lines(&engine, "line_rows_view"), &expected_rows);
        let totals = query(
            &engine,
            "SELECT device, sum_count FROM totals_view ORDER BY device",
        );
        let mut expected_totals: BTreeMap<&str, i64> = BTreeMap::new();
        for s in &totals_rows {
            *expected_totals.entry(&s.device).or_default() += s.count;
        }
        let b = &totals.batches[0];
        let devices = b.column(0).as_string::<i32>();
        let sums = b.column(1).as_primitive::<Int64Type>();
        let actual_totals: BTreeMap<&str, i64> = (0..b.num_rows())
            .map(|r| (devices.value(r), sums.value(r)))
            .collect();
        assert_eq!(actual_totals, expected_totals, "{workers} workers");
    }
}

#[test]
fn a_reference_changed_while_running_moves_rows_to_their_new_groups() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = r#"
pipeline: moving-registry
nodes:
  sensors:
    kind: generator
    devices: 6
    sites: 2
    sensors: [temp]
    rate_per_device: 200/s
    events: 6000
    anomaly_rate: 0
  registry:
    kind: reference
    path: registry.csv
    schema: { device: string, line: string, model: string }
    key: [device]
    reload: 50ms
  by_line:
    kind: aggregate
    inputs: [sensors]
    lookup: registry
    key: [line]
    aggregates: [count, sum(value)]
  raw: { kind: table, inputs: [sensors] }
  lines: { kind: table, inputs: [by_line] }
"#;
    std::fs::write(dir.path().join("pipeline.yaml"), pipeline).unwrap();
    let path = dir.path().join("registry.csv");
    let before = [("dev-0001", "a"), ("dev-0002", "a"), ("dev-0003", "b")];
    let after = [
        ("dev-0001", "b"),
        ("dev-0002", "a"),
        ("dev-0004", "c"),
        ("dev-0005", "c"),
    ];
    std::fs::write(&path, registry(&before)).unwrap();
    let plan = Arc::new(
        plan::load_plan(&dir.path().join("pipeline.yaml")).unwrap_or_else(|d| panic!("{d}")),
    );
    let options = RunOptions {
        workers: 2,
        realtime: true,
        batch_rows: 64,
        data_dir: dir.path().join("data"),
        ..RunOptions::default()
    };
    let catalog = Arc::new(runtime::catalog_for(&plan, options.workers));
    let metrics = Metrics::new();
    let ctx = RunContext::new(&plan, &options.data_dir, metrics.clone(), catalog.clone()).unwrap();
    let engine = QueryEngine::new(catalog);
    let started = Instant::now();
    let running = std::thread::spawn(move || runtime::run_embedded(plan, &options, ctx));
    // The run takes ~5 s of event time paced to wall time; change the registry in the middle,
    // once the view has counted rows under the first mapping.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = query(&engine, "SELECT count(*) AS n FROM raw");
        let n = r
            .batches
            .first()
            .map_or(0, |b| b.column(0).as_primitive::<Int64Type>().value(0));
        if n >= 1000 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::write(&path, registry(&after)).unwrap();
    let changed_at = started.elapsed();
    running.join().unwrap().unwrap();
    assert!(
        started.elapsed() > changed_at + Duration::from_millis(500),
        "the registry changed while the pipeline was running"
    );
    // From scratch: every reading grouped by the registry as it is now.
    let line_of: BTreeMap<&str, &str> = after.iter().copied().collect();
    let raw = query(&engine, "SELECT device, value FROM raw");
    let mut expected: BTreeMap<Option<String>, (i64, f64)> = BTreeMap::new();
    for b in &raw.batches {
        let devices = b.column(0).as_string::<i32>();
        let values = b.column(1).as_primitive::<Float64Type>();
        for r in 0..b.num_rows() {
            let line = line_of.get(devices.value(r)).map(|l| (*l).to_owned());
            let e = expected.entry(line).or_default();
            e.0 += 1;
            e.1 += values.value(r);
        }
    }
    assert_eq!(expected.values().map(|e| e.0).sum::<i64>(), 6000);
    let view = query(&engine, "SELECT line, count, sum_value FROM lines");
    let mut actual = BTreeMap::new();
    for b in &view.batches {
        let lines = b.column(0).as_string::<i32>();
        let counts = b.column(1).as_primitive::<Int64Type>();
        let sums = b.column(2).as_primitive::<Float64Type>();
        for r in 0..b.num_rows() {
            let line = (!lines.is_null(r)).then(|| lines.value(r).to_owned());
            actual.insert(line, (counts.value(r), sums.value(r)));
        }
    }
    assert_eq!(
        actual.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (line, (count, sum)) in &actual {
        let (e_count, e_sum) = expected[line];
        assert_eq!(*count, e_count, "{line:?}");
        assert!(
            (sum - e_sum).abs() < 1e-6 * e_sum.abs().max(1.0),
            "{line:?}"
        );
    }
}
