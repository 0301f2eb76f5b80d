//! The reconfiguration loop end to end, in one running process and without a restart: the
//! generator makes one site drift upward; the edge's threshold detector flags its readings
//! once they pass the bound; the cloud's insight sees the drift in the per-second summaries
//! and sends the detector a new bound; the edge applies it at an event time and acknowledges;
//! from that time on the drifting readings are no longer exceptions. Checked against the raw
//! readings (every reading above the bound before the switch is an exception, none after),
//! the incidents table and the control log.

use std::sync::Arc;

use arrow::array::AsArray;
use arrow::datatypes::{Float64Type, Int64Type};
use edgeflow::metrics::Metrics;
use edgeflow::plan;
use edgeflow::runtime::{self, RunContext, RunOptions};
use edgeflow::sql::QueryEngine;

use crate::common::embedded::query;

const PIPELINE: &str = r#"
pipeline: drift-loop
nodes:
  sensors:
    kind: generator
    devices: 8
    sites: 2
    sensors: [temp]
    rate_per_device: 20/s
    seed: 5
    start: 1767225600000
    anomaly_rate: 0
    drift_sites: [1]
    drift_rate: 600
    events: 1600
  spikes: { kind: detect, inputs: [sensors], key: [device, sensor], method: threshold, max: 125 }
  per_sec: { kind: window, inputs: [sensors], key: [device, sensor, site], size: 1s, aggregates: [mean] }
  alerts:
    kind: insight
    inputs: [per_sec]
    rules:
      - name: sensor_drift
        drift: { key: [device, sensor], value: mean, baseline: 2s, shift: 6.0, min_samples: 2 }
    control:
      - { on: sensor_drift, node: spikes, set_threshold: 1000 }
  raw: { kind: table, inputs: [sensors] }
  exceptions: { kind: table, inputs: [spikes] }
"#;

fn single_i64(engine: &QueryEngine, sql: &str) -> i64 {
    let r = query(engine, sql);
    let b = &r.batches[0];
    b.column(0).as_primitive::<Int64Type>().value(0)
}

#[test]
fn a_drift_seen_in_the_cloud_retunes_the_edge_detector_while_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let plan = Arc::new(
        plan::plan_with("loop.yaml", PIPELINE, dir.path(), &|_| None)
            .unwrap_or_else(|d| panic!("{d}")),
    );
    // One worker: the ack's applied_at is then the exact switch point (with several, each
    // worker switches at its first row at or after apply_at, and the ack gives the latest).
    let options = RunOptions {
        workers: 1,
        realtime: true,
        batch_rows: 32,
        data_dir: dir.path().to_path_buf(),
        ..RunOptions::default()
    };
    let catalog = Arc::new(runtime::catalog_for(&plan, options.workers));
    let ctx = RunContext::new(&plan, dir.path(), Metrics::new(), catalog.clone()).unwrap();
    // One run, never restarted: the record must reach the edge while it is running.
    runtime::run_embedded(plan, &options, ctx).unwrap();
    let engine = QueryEngine::new(catalog);

    // The cloud saw the drift at site-01 only.
    let incidents = query(
        &engine,
        "SELECT key FROM incidents WHERE rule = 'sensor_drift' ORDER BY time",
    );
    let keys: Vec<String> = incidents
        .batches
        .iter()
        .flat_map(|b| {
            let k = b.column(0).as_string::<i32>();
            (0..b.num_rows())
                .map(|r| k.value(r).to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(!keys.is_empty(), "no drift incident");
    // site-01 holds the odd-numbered devices (dev-0001, dev-0003, ...).
    let drifting = |key: &str| {
        key.split("dev-")
            .nth(1)
            .and_then(|s| s.get(..4))
            .and_then(|s| s.parse::<u32>().ok())
            .unwrap_or_else(|| panic!("key {key}"))
            % 2
            == 1
    };
    assert!(
        drifting(&keys[0]),
        "the first incident (the one that sends the record) is for the drifting site: {keys:?}"
    );
    for device in ["dev-0001", "dev-0003", "dev-0005", "dev-0007"] {
        assert!(
            keys.iter().any(|k| k.contains(device)),
            "{device} drifts: {keys:?}"
        );
    }

    // The record and its acknowledgement are in the control log.
    let log = query(
        &engine,
        "SELECT event, issued_by, node, action, status, CAST(applied_at AS BIGINT) \
         FROM edgeflow_control_log ORDER BY event DESC",
    );
    let b = &log.batches[0];
    assert_eq!(b.num_rows(), 2, "one record, one ack");
    let text = |c: usize, r: usize| b.column(c).as_string::<i32>().value(r).to_owned();
    assert_eq!(text(0, 0), "record");
    assert_eq!(text(1, 0), "alerts");
    assert_eq!(text(2, 0), "spikes");
    assert!(text(3, 0).contains("set_threshold") && text(3, 0).contains("1000"));
    assert_eq!(text(0, 1), "ack");
    assert_eq!(text(4, 1), "applied");
    let applied_at = b.column(5).as_primitive::<Int64Type>().value(1);

    // Before the switch, every reading above 125 is an exception (a naive check on the raw
    // readings); from it on, none is (the new bound, 1000, is never reached).
    let ms = |col: &str| format!("CAST({col} AS BIGINT)");
    let above_before = single_i64(
        &engine,
        &format!(
            "SELECT count(*) FROM raw WHERE value > 125 AND {} < {applied_at}",
            ms("ts")
        ),
    );
    let exceptions_before = single_i64(
        &engine,
        &format!(
            "SELECT count(*) FROM exceptions WHERE {} < {applied_at}",
            ms("ts")
        ),
    );
    let exceptions_after = single_i64(
        &engine,
        &format!(
            "SELECT count(*) FROM exceptions WHERE {} >= {applied_at}",
            ms("ts")
        ),
    );
    let above_after = single_i64(
        &engine,
        &format!(
            "SELECT count(*) FROM raw WHERE value > 125 AND {} >= {applied_at}",
            ms("ts")
        ),
    );
    assert!(
        above_before > 0,
        "the drift passed the old bound before the switch"
    );
    assert_eq!(exceptions_before, above_before);
    assert!(above_after > 0, "the drift went on after the switch");
    assert_eq!(
        exceptions_after, 0,
        "the new bound applies from {applied_at}"
    );
    let max = query(&engine, "SELECT max(value) FROM raw");
    assert!(
        max.batches[0]
            .column(0)
            .as_primitive::<Float64Type>()
            .value(0)
            < 1000.0
    );
}
