//! The control channel end to end in one process (`edgeflow run --serve`): a control record
//! sent with `edgeflow control` while the pipeline runs changes a detector's threshold at a
//! known event time, without a restart; the rows before and after the switch match a naive
//! z-score recomputation with the old and the new threshold, and `edgeflow_control_log`
//! shows the record and its acknowledgement.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::common::served::{Served, serve};
use crate::common::{edgeflow, repo};

/// Event time of the generator's first reading.
const START_MS: i64 = 1_767_225_600_000;
/// The record applies from this event time: 3 s of event (= wall) time after the start.
const APPLY_AT: i64 = START_MS + 3_000;

const PIPELINE: &str = r#"
pipeline: tuning
control: { nodes: [spikes, sensors] }
nodes:
  sensors: { kind: generator, devices: 20, sites: 2, sensors: [vibration], rate_per_device: 20/s, seed: 11, start: 1767225600000, anomaly_rate: 0.002 }
  spikes:  { kind: detect, inputs: [sensors], key: [device, sensor], method: zscore, threshold: 4, min_samples: 20, emit: all }
  scored:  { kind: table, inputs: [spikes] }
"#;

/// Serves the pipeline paced in real time for `events` readings.
fn serve_realtime(pipeline: &Path, data_dir: &Path, events: u64) -> Served {
    serve(
        pipeline,
        data_dir,
        &["--realtime", "--events", &events.to_string()],
    )
}

/// The z-score detector written out naively: per key, Welford statistics over the values
/// that were not exceptions; an exception when at least `min_samples` values were seen and
/// |x - mean| / sample stddev >= the threshold in effect at the row's event time.
fn naive_exceptions(
    rows: &[(String, i64, f64)],
    min_samples: u64,
    threshold_at: impl Fn(i64) -> f64,
) -> Vec<bool> {
    let mut stats: BTreeMap<&str, (u64, f64, f64)> = BTreeMap::new();
    rows.iter()
        .map(|(key, ts, x)| {
            let (n, mean, m2) = stats.entry(key).or_default();
            let score = (*n >= 2).then(|| {
                let sd = (*m2 / (*n - 1) as f64).abs().sqrt();
                let d = (x - *mean).abs();
                if sd > 0.0 {
                    d / sd
                } else if d == 0.0 {
                    0.0
                } else {
                    f64::INFINITY
                }
            });
            let exception = *n >= min_samples && score.is_some_and(|s| s >= threshold_at(*ts));
            if !exception {
                *n += 1;
                let d = x - *mean;
                *mean += d / *n as f64;
                *m2 += d * (x - *mean);
            }
            exception
        })
        .collect()
}

#[test]
fn a_threshold_sent_while_running_applies_at_its_event_time_and_is_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = dir.path().join("tuning.yaml");
    std::fs::write(&pipeline, PIPELINE).unwrap();
    // 400 readings/s in real time: 6 s of event time.
    let served = serve_realtime(&pipeline, &dir.path().join("data"), 2_400);

    // A bad record is refused with the reason, and nothing is published.
    let refused = edgeflow()
        .args(["control", "--server", &served.http, "--node", "spikes"])
        .args(["--window-size", "5s"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("does not take set_window_size"), "{stderr}");

    let sent = edgeflow()
        .args(["control", "--server", &served.http, "--node", "spikes"])
        .args(["--set-threshold", "2", "--apply-at", &APPLY_AT.to_string()])
        .args(["--reason", "more sensitive"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&sent.stdout);
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let issued: Value = serde_json::from_str(stdout.trim()).unwrap();
    let id = issued["id"].as_str().unwrap().to_string();
    assert_eq!(issued["apply_at"], APPLY_AT);
    assert_eq!(issued["action"], "set_threshold");

    served.wait_finished();

    let log = served.sql(&format!(
        "SELECT event, node, action, apply_at, issued_by, reason, edge_id, status, \
         CAST(applied_at AS BIGINT) AS applied_at, detail \
         FROM edgeflow_control_log WHERE id = '{id}' ORDER BY event DESC"
    ));
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[0]["event"], "record");
    assert_eq!(log[0]["node"], "spikes");
    assert_eq!(log[0]["issued_by"], "http");
    assert_eq!(log[0]["reason"], "more sensitive");
    assert!(log[0]["status"].is_null());
    assert_eq!(log[1]["event"], "ack");
    assert_eq!(log[1]["status"], "applied", "{log:?}");
    assert_eq!(log[1]["edge_id"], "embedded");
    assert_eq!(log[1]["reason"], "more sensitive");
    let applied_at = log[1]["applied_at"].as_i64().unwrap();
    // The first reading at or after apply_at: readings are 50 ms apart per device.
    assert!(
        (APPLY_AT..APPLY_AT + 50).contains(&applied_at),
        "{applied_at}"
    );

    let rows = served.sql(
        "SELECT device || '/' || sensor AS key, CAST(ts AS BIGINT) AS ts, value, \
         reason IS NOT NULL AS exception FROM scored ORDER BY ts, device",
    );
    assert_eq!(rows.len(), 2_400);
    let readings: Vec<(String, i64, f64)> = rows
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap().to_string(),
                r["ts"].as_i64().unwrap(),
                r["value"].as_f64().unwrap(),
            )
        })
        .collect();
    let got: Vec<bool> = rows
        .iter()
        .map(|r| r["exception"].as_bool().unwrap())
        .collect();
    let want = naive_exceptions(&readings, 20, |ts| if ts < applied_at { 4.0 } else { 2.0 });
    let mismatches: Vec<_> = (0..rows.len()).filter(|&i| got[i] != want[i]).collect();
    assert!(
        mismatches.is_empty(),
        "{} rows differ from the naive detector, first: {:?}",
        mismatches.len(),
        mismatches.first().map(|&i| &rows[i])
    );
    // The switch matters: the old threshold alone would flag far fewer rows after it.
    let after = |flags: &[bool]| {
        readings
            .iter()
            .zip(flags)
            .filter(|((_, ts, _), e)| *ts >= applied_at && **e)
            .count()
    };
    let old_only = naive_exceptions(&readings, 20, |_| 4.0);
    assert!(
        after(&got) > 2 * after(&old_only) + 5,
        "new {} vs old {}",
        after(&got),
        after(&old_only)
    );
}

const RETUNE: &str = r#"
pipeline: retune
control: { nodes: [sensors, per_sec, scored] }
nodes:
  sensors: { kind: generator, devices: 4, sensors: [vibration], rate_per_device: 20/s, seed: 2, start: 1767225600000 }
  per_sec: { kind: window, inputs: [sensors], key: [device], size: 1s, aggregates: [count] }
  scored:  { kind: infer, inputs: [sensors], model: MODEL, emit: all }
  raw:     { kind: table, inputs: [sensors] }
  fleet:   { kind: table, inputs: [per_sec] }
  windows: { kind: table, inputs: [scored] }
"#;

fn post_control(address: &str, body: Value) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .post(&format!("http://{address}/control"))
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .unwrap();
    let text = response.body_mut().read_to_string().unwrap();
    (
        response.status().as_u16(),
        serde_json::from_str(&text).unwrap(),
    )
}

#[test]
fn window_size_sampling_and_model_swaps_apply_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let model = repo("pipelines/models/sensors.bpk");
    // The swapped-in model, named relative to the pipeline file's directory.
    std::fs::copy(&model, dir.path().join("second.bpk")).unwrap();
    let pipeline = dir.path().join("retune.yaml");
    std::fs::write(&pipeline, RETUNE.replace("MODEL", model.to_str().unwrap())).unwrap();
    // 80 readings/s in real time: 12 s of event time.
    let served = serve_realtime(&pipeline, &dir.path().join("data"), 960);

    let switch_at = START_MS + 3_000;
    let sample_at = START_MS + 6_000;
    let mut ids = BTreeMap::new();
    for (name, body) in [
        (
            "size",
            serde_json::json!({"node": "per_sec", "action": "set_window_size", "size_ms": 5000, "apply_at": switch_at}),
        ),
        (
            "sampling",
            serde_json::json!({"node": "sensors", "action": "set_sampling", "every": 2, "apply_at": sample_at}),
        ),
        (
            "missing_model",
            serde_json::json!({"node": "scored", "action": "swap_model", "model": {"path": "missing.bpk"}, "apply_at": START_MS + 1_000}),
        ),
        (
            "model",
            serde_json::json!({"node": "scored", "action": "swap_model", "model": {"path": "second.bpk"}, "apply_at": START_MS + 2_000}),
        ),
    ] {
        let (status, issued) = post_control(&served.http, body);
        assert_eq!(status, 200, "{name}: {issued}");
        ids.insert(name, issued["id"].as_str().unwrap().to_string());
    }
    let (status, refused) = post_control(
        &served.http,
        serde_json::json!({"node": "fleet", "action": "disable"}),
    );
    assert_eq!(status, 400);
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("not controllable")
    );

    served.wait_finished();

    let acks = served.sql(
        "SELECT id, status, CAST(applied_at AS BIGINT) AS applied_at, detail \
         FROM edgeflow_control_log WHERE event = 'ack'",
    );
    let ack = |name: &str| {
        acks.iter()
            .find(|a| a["id"] == ids[name].as_str())
            .unwrap_or_else(|| panic!("no ack for {name}: {acks:?}"))
            .clone()
    };
    assert_eq!(acks.len(), 4, "{acks:?}");
    assert_eq!(ack("missing_model")["status"], "rejected");
    assert!(
        ack("missing_model")["detail"]
            .as_str()
            .unwrap()
            .contains("missing.bpk"),
        "{acks:?}"
    );
    assert_eq!(ack("model")["status"], "applied", "{acks:?}");
    assert_eq!(ack("size")["status"], "applied", "{acks:?}");
    assert_eq!(ack("sampling")["status"], "applied", "{acks:?}");
    let switched = ack("size")["applied_at"].as_i64().unwrap();
    let sampled = ack("sampling")["applied_at"].as_i64().unwrap();
    assert!((switch_at..switch_at + 50).contains(&switched));
    assert!((sample_at..sample_at + 50).contains(&sampled));

    // The readings the generator emitted: all of them before the sampling switch, then
    // every other one of each device (50 ms apart before, 100 ms after).
    let raw = served.sql("SELECT device, CAST(ts AS BIGINT) AS ts FROM raw ORDER BY device, ts");
    let mut by_device: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for r in &raw {
        by_device
            .entry(r["device"].as_str().unwrap().to_string())
            .or_default()
            .push(r["ts"].as_i64().unwrap());
    }
    assert_eq!(by_device.len(), 4);
    for (device, ts) in &by_device {
        for pair in ts.windows(2) {
            let gap = pair[1] - pair[0];
            let want = if pair[0] < sampled { 50 } else { 100 };
            assert_eq!(gap, want, "{device}: {pair:?}");
        }
        assert!(
            ts.iter().any(|&t| t >= sampled + 1_000),
            "{device} kept sending"
        );
    }

    // The windows, recomputed from the emitted readings: 1 s windows before the size switch,
    // 5 s windows (aligned to the epoch) from it on, every window counting its readings.
    let mut expected: BTreeMap<(String, i64, i64), i64> = BTreeMap::new();
    for (device, ts) in &by_device {
        for &t in ts {
            let size = if t < switched { 1_000 } else { 5_000 };
            let start = t - t.rem_euclid(size);
            *expected
                .entry((device.clone(), start, start + size))
                .or_default() += 1;
        }
    }
    let fleet = served.sql(
        "SELECT device, CAST(window_start AS BIGINT) AS s, CAST(window_end AS BIGINT) AS e, count \
         FROM fleet ORDER BY device, s",
    );
    let got: BTreeMap<(String, i64, i64), i64> = fleet
        .iter()
        .map(|r| {
            (
                (
                    r["device"].as_str().unwrap().to_string(),
                    r["s"].as_i64().unwrap(),
                    r["e"].as_i64().unwrap(),
                ),
                r["count"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, expected);
    assert!(got.keys().any(|(_, s, e)| e - s == 5_000));
}

const BOUNDS: &str = r#"
pipeline: bounds
control: { nodes: [high] }
nodes:
  sensors: { kind: generator, devices: 4, sensors: [vibration], rate_per_device: 20/s, seed: 9, start: 1767225600000 }
  high:    { kind: detect, inputs: [sensors], key: [device], method: threshold, max: 1.0, emit: all }
  checked: { kind: table, inputs: [high] }
"#;

#[test]
fn a_threshold_detector_takes_a_new_bound_and_is_disabled_then_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = dir.path().join("bounds.yaml");
    std::fs::write(&pipeline, BOUNDS).unwrap();
    // 80 readings/s in real time: 8 s of event time.
    let served = serve_realtime(&pipeline, &dir.path().join("data"), 640);
    let (bound_at, off_at, on_at) = (START_MS + 2_000, START_MS + 4_000, START_MS + 5_000);
    for body in [
        serde_json::json!({"node": "high", "action": "set_threshold", "value": 0.25, "apply_at": bound_at}),
        serde_json::json!({"node": "high", "action": "disable", "apply_at": off_at}),
        serde_json::json!({"node": "high", "action": "enable", "apply_at": on_at}),
    ] {
        let (status, issued) = post_control(&served.http, body);
        assert_eq!(status, 200, "{issued}");
    }
    served.wait_finished();
    let acks = served.sql(
        "SELECT action, status, CAST(applied_at AS BIGINT) AS applied_at \
         FROM edgeflow_control_log WHERE event = 'ack' ORDER BY applied_at",
    );
    assert_eq!(acks.len(), 3, "{acks:?}");
    assert!(acks.iter().all(|a| a["status"] == "applied"), "{acks:?}");
    let at: Vec<i64> = acks
        .iter()
        .map(|a| a["applied_at"].as_i64().unwrap())
        .collect();
    let rows = served.sql(
        "SELECT device, CAST(ts AS BIGINT) AS ts, value, reason IS NOT NULL AS exception \
         FROM checked ORDER BY device, ts",
    );
    // Each device reads every 50 ms; the disabled second (1 s, 20 readings a device) is
    // missing and nothing else.
    assert_eq!(rows.len(), 640 - 4 * 20, "{at:?}");
    let mut by_device: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for r in &rows {
        by_device
            .entry(r["device"].as_str().unwrap())
            .or_default()
            .push(r["ts"].as_i64().unwrap());
    }
    for (device, ts) in &by_device {
        let gaps: Vec<(i64, i64)> = ts
            .windows(2)
            .filter(|p| p[1] - p[0] != 50)
            .map(|p| (p[0], p[1]))
            .collect();
        assert_eq!(gaps.len(), 1, "{device}: {gaps:?}");
        let (last_before, first_after) = gaps[0];
        assert!(
            last_before < at[1] && last_before + 50 >= at[1],
            "{device}: {gaps:?}"
        );
        assert!(
            first_after >= at[2] && first_after - 50 < at[2],
            "{device}: {gaps:?}"
        );
    }
    for r in &rows {
        let (ts, value) = (r["ts"].as_i64().unwrap(), r["value"].as_f64().unwrap());
        let max = if ts < at[0] { 1.0 } else { 0.25 };
        assert_eq!(
            r["exception"].as_bool().unwrap(),
            value > max || value.is_nan(),
            "{r}"
        );
    }
}
