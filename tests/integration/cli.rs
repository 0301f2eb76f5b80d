//! The real `edgeflow` binary: run, validate, graph, and sql against a served instance.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use crate::common::served::serve;
use crate::common::{Running, SMALL_FLEET, edgeflow, repo, write_pipeline};

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn run_with_query_counts_every_generated_event_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = write_pipeline(dir.path(), "small.yaml", SMALL_FLEET);
    for workers in ["1", "3"] {
        let output = edgeflow()
            .args([
                "run",
                pipeline.to_str().unwrap(),
                "--events",
                "60000",
                "--workers",
                workers,
                "--quiet",
            ])
            .args(["--data-dir", dir.path().join("data").to_str().unwrap()])
            .args([
                "--format",
                "csv",
                "--query",
                "SELECT sum(count) AS events, count(*) AS windows FROM fleet",
            ])
            .output()
            .unwrap();
        let (stdout, stderr) = text(&output);
        assert!(output.status.success(), "workers {workers}: {stderr}");
        // 60 series (30 devices x 2 sensors) at 10/s: 60000 readings = 100 s of event
        // time, so 100 one-second windows per series.
        assert_eq!(
            stdout, "events,windows\n60000,6000\n",
            "workers {workers}: {stderr}"
        );
    }
}

/// With `--realtime` the generator is paced to the wall clock and still ends at `--events`
/// (600 readings of a 600/s fleet: about one second), within a bounded wait.
#[test]
fn a_realtime_run_ends_when_its_events_are_produced() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = write_pipeline(dir.path(), "small.yaml", SMALL_FLEET);
    let started = Instant::now();
    let output = Running::start(
        edgeflow()
            .args(["run", pipeline.to_str().unwrap(), "--realtime", "--quiet"])
            .args(["--events", "600", "--format", "csv"])
            .args(["--data-dir", dir.path().join("data").to_str().unwrap()])
            .args(["--query", "SELECT sum(count) AS events FROM fleet"]),
    )
    .wait("a 1 s real-time run", Duration::from_secs(60));
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(stdout, "events\n600\n", "{stderr}");
    assert!(started.elapsed() >= Duration::from_millis(800), "not paced");
}

#[test]
fn validate_reports_every_problem_with_positions_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write_pipeline(
        dir.path(),
        "bad.yaml",
        "pipeline: bad\nnodes:\n  sensors: { kind: generator }\n  per_sec: { kind: window, inputs: [sensor], size: 1s, aggregates: [count] }\n  slow: { kind: window, inputs: [sensors], size: 1x, aggregates: [count] }\n  out: { kind: tabel, inputs: [per_sec] }\n",
    );
    let output = edgeflow()
        .args(["validate", bad.to_str().unwrap()])
        .output()
        .unwrap();
    let (_, stderr) = text(&output);
    assert!(!output.status.success());
    assert!(stderr.contains("bad.yaml:4:37: error: node \"per_sec\": unknown input \"sensor\"; did you mean \"sensors\"?"), "{stderr}");
    assert!(
        stderr.contains(
            "bad.yaml:5:50: error: node \"slow\": field \"size\": invalid duration \"1x\""
        ),
        "duration error position: {stderr}"
    );
    assert!(stderr.contains("tabel"), "{stderr}");

    let good = edgeflow()
        .args([
            "validate",
            repo("pipelines/quickstart.yaml").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(good.status.success(), "{}", text(&good).1);
}

#[test]
fn graph_shows_the_cut_with_topic_names_in_every_format() {
    let quickstart = repo("pipelines/quickstart.yaml");
    for (format, needle) in [
        ("text", "quickstart.per_sec"),
        ("dot", "digraph"),
        ("mermaid", "flowchart"),
    ] {
        let output = edgeflow()
            .args(["graph", quickstart.to_str().unwrap(), "--format", format])
            .output()
            .unwrap();
        let (stdout, stderr) = text(&output);
        assert!(output.status.success(), "{format}: {stderr}");
        assert!(stdout.contains(needle), "{format}: {stdout}");
        assert!(stdout.contains("quickstart.spikes"), "{format}: {stdout}");
    }
}

#[test]
fn sql_client_and_http_endpoint_answer_a_served_instance() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = write_pipeline(dir.path(), "small.yaml", SMALL_FLEET);
    let served = serve(&pipeline, &dir.path().join("data"), &["--events", "60000"]);
    served.wait_finished();

    let output = edgeflow()
        .args([
            "sql",
            "--server",
            &served.http,
            "SELECT sensor, sum(count) AS n FROM fleet GROUP BY sensor ORDER BY sensor",
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    let expected = "\
+-------------+-------+
| sensor      | n     |
+-------------+-------+
| temperature | 30000 |
| vibration   | 30000 |
+-------------+-------+
(2 rows)
";
    assert_eq!(stdout, expected);

    let bad = edgeflow()
        .args(["sql", "--server", &served.http, "SELECT nope FROM fleet"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(text(&bad).1.contains("nope"), "{}", text(&bad).1);

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let base = format!("http://{}", served.http);
    let mut json = agent
        .post(&format!("{base}/sql"))
        .send("SELECT count(*) AS windows FROM fleet")
        .unwrap();
    assert_eq!(
        json.body_mut().read_to_string().unwrap().trim(),
        r#"[{"windows":6000}]"#
    );
    let mut csv = agent
        .post(&format!("{base}/sql"))
        .header("Accept", "text/csv")
        .send("SELECT count(*) AS windows FROM fleet")
        .unwrap();
    assert_eq!(csv.body_mut().read_to_string().unwrap(), "windows\n6000\n");
    let mut error = agent.post(&format!("{base}/sql")).send("SELEC 1").unwrap();
    assert_eq!(error.status(), 400);
    assert!(error.body_mut().read_to_string().unwrap().contains("error"));
    let mut metrics = agent.get(&format!("{base}/metrics")).call().unwrap();
    let metrics = metrics.body_mut().read_to_string().unwrap();
    assert!(
        metrics.contains(r#"edgeflow_node_events_out_total{kind="generator",node="sensors",placement="edge"} 60000"#),
        "{metrics}"
    );
    let mut health = agent.get(&format!("{base}/health")).call().unwrap();
    assert!(
        health
            .body_mut()
            .read_to_string()
            .unwrap()
            .contains(r#""state":"finished""#)
    );
}

/// Normal readings of `devices` devices, 100 ms apart: a per-device level, a slow sine and
/// noise from a fixed LCG, as CSV rows `ts,device,value` in time order.
fn normal_readings(devices: usize, per_device: usize, seed: u64) -> Vec<(i64, String, f64)> {
    let mut state = seed;
    let mut noise = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    let mut rows = Vec::new();
    for i in 0..per_device {
        for d in 0..devices {
            let ts = 1_767_225_600_000 + i as i64 * 100;
            let value = 20.0 + 5.0 * d as f64 + 2.0 * (i as f64 / 50.0 + d as f64).sin() + noise();
            rows.push((ts, format!("d{d}"), value));
        }
    }
    rows
}

fn write_csv(path: &Path, rows: &[(i64, String, f64)], extra: &str) {
    let mut text = String::from("ts,device,value\n");
    for (ts, device, value) in rows {
        text.push_str(&format!("{ts},{device},{value}\n"));
    }
    text.push_str(extra);
    std::fs::write(path, text).unwrap();
}

#[test]
fn train_writes_a_model_that_an_infer_pipeline_uses() {
    let dir = tempfile::tempdir().unwrap();
    let normal = dir.path().join("normal.csv");
    write_csv(&normal, &normal_readings(4, 3000, 1), "not,a,reading\n");
    let model = dir.path().join("models/m.bpk");
    let train = |out: &Path| {
        edgeflow()
            .args(["train", "--input", normal.to_str().unwrap()])
            .args(["--schema", "ts:timestamp_ms,device:string,value:f64"])
            .args(["--key", "device", "--out", out.to_str().unwrap()])
            .args(["--window", "16", "--hidden", "8", "--latent", "3"])
            .args(["--epochs", "20", "--batch-size", "32"])
            .output()
            .unwrap()
    };
    let output = train(&model);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    // 3000 readings per device = 187 windows of 16, the first 16 of each only warm up.
    let windows = 4 * (3000 / 16 - 16);
    assert!(
        stdout.contains(&format!(
            "read 12000 readings (1 skipped as malformed) -> {windows} windows of 16 from 4 keys"
        )),
        "{stdout}"
    );
    assert!(stdout.contains("normal.csv:12002"), "{stdout}");
    let again = dir.path().join("again.bpk");
    assert!(train(&again).status.success());
    assert_eq!(
        std::fs::read(&model).unwrap(),
        std::fs::read(&again).unwrap(),
        "training is reproducible"
    );

    // Live data: a spike on d1 and a stuck d2; d0 and d3 stay normal.
    let mut live = normal_readings(4, 1600, 2);
    let spike_ts = live[4 * 900 + 1].0;
    live[4 * 900 + 1].2 += 40.0;
    for i in 1000..1200 {
        live[4 * i + 2].2 = 30.0;
    }
    write_csv(&dir.path().join("live.csv"), &live, "");
    let pipeline = write_pipeline(
        dir.path(),
        "scored.yaml",
        r#"
pipeline: scored
nodes:
  readings: { kind: file, path: live.csv, schema: { ts: timestamp_ms, device: string, value: f64 } }
  scored:   { kind: infer, inputs: [readings], key: [device], model: models/m.bpk }
  anomalies: { kind: table, inputs: [scored] }
"#,
    );
    let output = edgeflow()
        .args(["run", pipeline.to_str().unwrap(), "--quiet", "--format", "csv"])
        .args(["--data-dir", dir.path().join("data").to_str().unwrap()])
        .args([
            "--query",
            "SELECT device, CAST(window_start AS BIGINT) AS s, CAST(ts AS BIGINT) AS e FROM anomalies ORDER BY device, s",
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    let rows: Vec<(String, i64, i64)> = stdout
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split(',');
            Some((
                f.next()?.to_owned(),
                f.next()?.parse().ok()?,
                f.next()?.parse().ok()?,
            ))
        })
        .collect();
    let stuck = (live[4 * 1000 + 2].0, live[4 * 1199 + 2].0);
    assert!(
        rows.iter()
            .any(|r| r.0 == "d1" && r.1 <= spike_ts && spike_ts <= r.2),
        "the spike window is an exception: {stdout}"
    );
    assert!(
        rows.iter()
            .any(|r| r.0 == "d2" && r.2 >= stuck.0 && r.1 <= stuck.1),
        "the stuck signal is an exception: {stdout}"
    );
    let quiet = rows.iter().filter(|r| r.0 == "d0" || r.0 == "d3").count();
    assert!(quiet <= 3, "normal devices raise few alarms: {stdout}");
}
