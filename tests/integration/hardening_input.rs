//! Malformed, hostile and unlucky input entering through files and control records (issue 12,
//! cases 2, 3, 7, 8, 9, 11 and 17), against the real `edgeflow` binary on pipelines written to
//! a temp dir: a bad record costs itself only (exact counts of the good rows kept, one dead
//! letter with its reason and line), and a hostile control record is refused with a clear
//! reason while the process keeps running.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::edgeflow;

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs a file-to-table pipeline over `input` and returns the table's row count (from SQL)
/// and the dead letters written.
fn run_file_pipeline(dir: &Path, input: &Path) -> (u64, Vec<Value>) {
    let pipeline = dir.join("read.yaml");
    std::fs::write(
        &pipeline,
        format!(
            "pipeline: read\nnodes:\n  readings: {{ kind: file, path: {}, schema: {{ ts: timestamp_ms, device: string, value: f64 }} }}\n  kept: {{ kind: table, inputs: [readings] }}\n",
            input.file_name().unwrap().to_str().unwrap()
        ),
    )
    .unwrap();
    let data = dir.join("data");
    let output = edgeflow()
        .args([
            "run",
            pipeline.to_str().unwrap(),
            "--quiet",
            "--format",
            "csv",
        ])
        .args(["--data-dir", data.to_str().unwrap()])
        .args(["--query", "SELECT count(*) AS n FROM kept"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    let count = stdout
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count in {stdout:?}"));
    let letters = std::fs::read_to_string(data.join("read/dead_letter.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (count, letters)
}

#[test]
fn an_over_long_line_is_one_dead_letter_and_the_rows_after_it_are_kept() {
    // Regression (issue 12, case 2): a 2 GB line without a newline aborted the process on a
    // 2 GiB allocation. Here a 50 MB line between good rows, in JSON lines and in CSV.
    const LONG: usize = 50_000_000;
    for (name, header, row) in [
        (
            "in.jsonl",
            "",
            (|i: usize| {
                format!(
                    "{{\"ts\": {i}, \"device\": \"d{}\", \"value\": 1.5}}\n",
                    i % 7
                )
            }) as fn(usize) -> String,
        ),
        ("in.csv", "ts,device,value\n", |i: usize| {
            format!("{i},d{},1.5\n", i % 7)
        }),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join(name);
        let mut out = BufWriter::new(File::create(&input).unwrap());
        out.write_all(header.as_bytes()).unwrap();
        for i in 0..1000 {
            out.write_all(row(i).as_bytes()).unwrap();
        }
        let chunk = vec![b'x'; 1 << 20];
        let mut left = LONG;
        while left > 0 {
            let n = left.min(chunk.len());
            out.write_all(&chunk[..n]).unwrap();
            left -= n;
        }
        out.write_all(b"\n").unwrap();
        for i in 1000..1500 {
            out.write_all(row(i).as_bytes()).unwrap();
        }
        drop(out);
        let header_lines = header.lines().count() as u64;

        let (kept, letters) = run_file_pipeline(dir.path(), &input);
        assert_eq!(kept, 1500, "{name}: every good row is kept");
        assert_eq!(letters.len(), 1, "{name}: {letters:?}");
        let reason = letters[0]["reason"].as_str().unwrap();
        assert!(
            reason.starts_with(&format!(
                "line is longer than the 1048576-byte bound ({LONG} bytes)"
            )),
            "{name}: {reason}"
        );
        let location = letters[0]["location"].as_str().unwrap();
        assert!(
            location.ends_with(&format!(":{}", header_lines + 1001)),
            "{name}: {location}"
        );
        // The dead letter holds a sample, not the line.
        assert!(letters[0]["raw"].as_str().unwrap().len() < 1000);
    }
}

#[test]
fn an_unterminated_csv_quote_costs_one_record_not_the_rest_of_the_file() {
    // Regression (issue 12, case 9): one unterminated quote swallowed the rest of the file
    // into one dead letter (39,313 valid rows of 100,000 lost).
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    let mut csv = String::from("ts,device,value\n");
    const BAD_ROW: usize = 60_687;
    for i in 0..100_000 {
        if i == BAD_ROW {
            csv.push_str(&format!("{i},\"d{},1.5\n", i % 13));
        } else {
            csv.push_str(&format!("{i},d{},{}.25\n", i % 13, i % 100));
        }
    }
    std::fs::write(&input, &csv).unwrap();
    // A naive count: data lines without a quote character are the good rows.
    let naive_good = csv.lines().skip(1).filter(|l| !l.contains('"')).count() as u64;
    let bad_line = csv
        .lines()
        .position(|l| l.contains('"'))
        .map(|i| i as u64 + 1)
        .unwrap();

    let (kept, letters) = run_file_pipeline(dir.path(), &input);
    assert_eq!(naive_good, 99_999);
    assert_eq!(kept, naive_good);
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(
        letters[0]["location"].as_str().unwrap(),
        format!("{}:{bad_line}", input.display())
    );
    assert_eq!(bad_line, BAD_ROW as u64 + 2);
    assert_eq!(
        letters[0]["raw"].as_str().unwrap(),
        format!("{BAD_ROW},\"d{},1.5", BAD_ROW % 13)
    );
    let reason = letters[0]["reason"].as_str().unwrap();
    assert!(reason.starts_with("unterminated quoted field"), "{reason}");
}

/// Event time of the generator's first reading.
const START_MS: i64 = 1_767_225_600_000;
/// Devices, sensors and readings per second per series of the served pipeline.
const DEVICES: usize = 4;
const SENSORS: usize = 2;
/// Readings per series: 8 s of event (= wall) time at 20 readings/s.
const PER_SERIES: usize = 160;
/// Milliseconds between two readings of one series.
const INTERVAL_MS: i64 = 50;

const PIPELINE: &str = r#"
pipeline: hostile
control: { nodes: [sensors, per_sec, scored] }
nodes:
  sensors: { kind: generator, devices: 4, sensors: [vibration, temperature], rate_per_device: 20/s, seed: 5, start: 1767225600000 }
  per_sec: { kind: window, inputs: [sensors], key: [device, sensor], size: 1s, aggregates: [count] }
  scored:  { kind: infer, inputs: [sensors], model: models/sensors.bpk, emit: all }
  raw:     { kind: table, inputs: [sensors] }
  fleet:   { kind: table, inputs: [per_sec] }
  windows: { kind: table, inputs: [scored] }
"#;

/// A served instance, killed on drop.
struct Served {
    child: Child,
    address: String,
    lines: std::io::Lines<BufReader<std::process::ChildStderr>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

impl Served {
    fn start(pipeline: &Path, data_dir: &Path, model_dir: &str) -> Served {
        let events = DEVICES * SENSORS * PER_SERIES;
        let mut child = edgeflow()
            .args(["run", pipeline.to_str().unwrap(), "--realtime", "--serve"])
            .args(["--events", &events.to_string()])
            .args(["--listen", "127.0.0.1:0", "--pg-listen", "off", "--quiet"])
            .args(["--data-dir", data_dir.to_str().unwrap()])
            .env("EDGEFLOW_MODEL_DIR", model_dir)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut address = None;
        // Bounded: the address is the first line printed.
        for _ in 0..20 {
            let Some(Ok(line)) = lines.next() else { break };
            if let Some(rest) = line.split("http://").nth(1) {
                address = Some(rest.split('/').next().unwrap().to_string());
                break;
            }
        }
        Served {
            child,
            address: address.expect("no serving address printed"),
            lines,
        }
    }

    /// Reads stderr until the pipeline has finished (bounded: 200 lines, 120 s).
    fn wait_finished(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        for _ in 0..200 {
            let Some(Ok(line)) = self.lines.next() else {
                break;
            };
            if line.contains("still serving") {
                return;
            }
            assert!(Instant::now() < deadline, "pipeline did not finish");
        }
        panic!("pipeline did not finish");
    }

    fn query(&self, sql: &str) -> Vec<Value> {
        let mut response = agent()
            .post(&format!("http://{}/sql", self.address))
            .send(sql)
            .unwrap();
        let body = response.body_mut().read_to_string().unwrap();
        assert_eq!(response.status(), 200, "{sql}: {body}");
        serde_json::from_str::<Vec<Value>>(&body).unwrap()
    }

    fn control(&self, body: Value) -> (u16, Value) {
        let mut response = agent()
            .post(&format!("http://{}/control", self.address))
            .header("Content-Type", "application/json")
            .send(body.to_string())
            .unwrap();
        let text = response.body_mut().read_to_string().unwrap();
        (
            response.status().as_u16(),
            serde_json::from_str(&text).unwrap(),
        )
    }

    /// Sends a record the process must accept; returns its id.
    fn send(&self, body: Value) -> String {
        let (status, issued) = self.control(body.clone());
        assert_eq!(status, 200, "{body}: {issued}");
        issued["id"].as_str().unwrap().to_string()
    }
}

#[test]
fn hostile_control_records_are_refused_and_the_edge_keeps_running() {
    // Regressions (issue 12): swap_model read /dev/urandom forever and opened any path
    // (cases 3, 7); out-of-range window sizes and sampling were applied (case 8); `every: 4`
    // kept one sensor only (case 11); a past apply_at was applied silently (case 17).
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("pipeline");
    std::fs::create_dir_all(dir.join("models")).unwrap();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/models/sensors.bpk");
    std::fs::copy(&model, dir.join("models/sensors.bpk")).unwrap();
    // A model outside the pipeline's directory, and one over the size bound inside it.
    std::fs::copy(&model, root.path().join("outside.bpk")).unwrap();
    File::create(dir.join("models/huge.bpk"))
        .unwrap()
        .set_len(100_000_000)
        .unwrap();
    let pipeline: PathBuf = dir.join("hostile.yaml");
    std::fs::write(&pipeline, PIPELINE).unwrap();
    // `/dev` is an allowed model directory, so /dev/urandom meets the regular-file check.
    let mut served = Served::start(&pipeline, &root.path().join("data"), "/dev");

    // Values out of range never leave the HTTP call.
    for (body, error) in [
        (
            serde_json::json!({"node": "per_sec", "action": "set_window_size", "size_ms": i64::MAX}),
            format!("set_window_size {} ms: a window size must be between 1 ms and 86400000 ms (1 day)", i64::MAX),
        ),
        (
            serde_json::json!({"node": "per_sec", "action": "set_window_size", "size_ms": 1000_i64 * 365 * 86_400_000}),
            "set_window_size 31536000000000 ms: a window size must be between 1 ms and 86400000 ms (1 day)".to_string(),
        ),
        (
            serde_json::json!({"node": "sensors", "action": "set_sampling", "every": u32::MAX}),
            "set_sampling 4294967295: keep one reading in N needs N between 1 and 1000000".to_string(),
        ),
    ] {
        let (status, refused) = served.control(body.clone());
        assert_eq!(status, 400, "{body}: {refused}");
        assert_eq!(refused["error"].as_str().unwrap(), error);
    }

    let swap = |path: &str, at: i64| serde_json::json!({"node": "scored", "action": "swap_model", "model": {"path": path}, "apply_at": START_MS + at});
    let mut refused_ids = BTreeMap::new();
    for (path, reason) in [
        (
            "/dev/urandom",
            "model /dev/urandom is not a regular file".to_string(),
        ),
        (
            "/etc/passwd",
            "resolves to /etc/passwd, outside the pipeline's directory".into(),
        ),
        ("../outside.bpk", "outside the pipeline's directory".into()),
        (
            "../../../../etc/passwd",
            "outside the pipeline's directory".into(),
        ),
        (
            "models/huge.bpk",
            "is 100000000 bytes, larger than the 67108864-byte bound".into(),
        ),
    ] {
        refused_ids.insert(served.send(swap(path, 500)), (path, reason));
    }
    let good_swap = served.send(swap("models/sensors.bpk", 1_000));
    let sampling_at = START_MS + 2_000;
    let sampling = served.send(serde_json::json!({"node": "sensors", "action": "set_sampling", "every": 4, "apply_at": sampling_at}));

    // A record whose apply_at the window has already passed: applied now, and the ack says so.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = served.query("SELECT CAST(max(ts) AS BIGINT) AS t FROM raw");
        if rows[0]["t"].as_i64().is_some_and(|t| t > START_MS + 1_200) {
            break;
        }
        assert!(Instant::now() < deadline, "no data reached the raw table");
        std::thread::sleep(Duration::from_millis(100));
    }
    let past = served.send(serde_json::json!({"node": "per_sec", "action": "set_window_size", "size_ms": 2000, "apply_at": START_MS + 100}));

    served.wait_finished();
    let acks = served.query(
        "SELECT id, status, CAST(applied_at AS BIGINT) AS applied_at, detail \
         FROM edgeflow_control_log WHERE event = 'ack'",
    );
    let ack = |id: &str| {
        acks.iter()
            .find(|a| a["id"] == id)
            .unwrap_or_else(|| panic!("no ack for {id}: {acks:?}"))
            .clone()
    };
    assert_eq!(acks.len(), refused_ids.len() + 3, "{acks:?}");
    for (id, (path, reason)) in &refused_ids {
        let a = ack(id);
        assert_eq!(a["status"], "rejected", "{path}: {a}");
        let detail = a["detail"].as_str().unwrap();
        assert!(detail.contains(reason.as_str()), "{path}: {detail}");
    }
    assert_eq!(ack(&good_swap)["status"], "applied", "{acks:?}");
    let past_ack = ack(&past);
    assert_eq!(past_ack["status"], "applied", "{past_ack}");
    assert!(
        past_ack["detail"].as_str().unwrap().contains(&format!(
            "apply_at {} was already past when the record arrived",
            START_MS + 100
        )),
        "{past_ack}"
    );
    let sampled = ack(&sampling);
    assert_eq!(sampled["status"], "applied", "{sampled}");
    let applied_at = sampled["applied_at"].as_i64().unwrap();
    assert!((sampling_at..sampling_at + INTERVAL_MS).contains(&applied_at));

    // Sampling oracle: every reading of each series before the switch; from it, one in four
    // of that series' readings (its 1st, 5th, 9th, ...), i.e. ceil(n / 4) of its n readings.
    let raw = served.query(
        "SELECT device, sensor, CAST(ts AS BIGINT) AS ts FROM raw ORDER BY device, sensor, ts",
    );
    let mut series: BTreeMap<(String, String), Vec<i64>> = BTreeMap::new();
    for r in &raw {
        series
            .entry((
                r["device"].as_str().unwrap().to_string(),
                r["sensor"].as_str().unwrap().to_string(),
            ))
            .or_default()
            .push(r["ts"].as_i64().unwrap());
    }
    assert_eq!(series.len(), DEVICES * SENSORS, "{:?}", series.keys());
    for (key, times) in &series {
        let before = times.iter().filter(|t| **t < applied_at).count();
        let after: Vec<i64> = times[before..].to_vec();
        let generated_after = PER_SERIES - before;
        assert_eq!(after.len(), generated_after.div_ceil(4), "{key:?}");
        assert!(
            after.windows(2).all(|w| w[1] - w[0] == 4 * INTERVAL_MS),
            "{key:?}: {after:?}"
        );
        assert!(after[0] - times[before - 1] == INTERVAL_MS, "{key:?}");
    }

    // Still up and answering after all of it.
    assert!(served.child.try_wait().unwrap().is_none());
    let health = agent()
        .get(&format!("http://{}/health", served.address))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let health: Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["status"], "ok");
}

#[test]
fn a_row_from_a_clock_in_year_9999_is_a_dead_letter_and_does_not_make_later_rows_late() {
    // Regression (issue 12, case 10): one row with a far-future timestamp moved the
    // watermark, and 34% of the later valid rows were dead-lettered as late.
    let dir = tempfile::tempdir().unwrap();
    let base: i64 = 1_767_225_600_000; // 2026-01-01, in the past of the wall clock
    let mut csv = String::from("ts,device,value\n");
    let mut good = 0u64;
    for i in 0..2_000i64 {
        if i == 500 {
            // 9999-12-31T23:59:59Z, then an hour past the wall clock's reach on any test day.
            csv.push_str("253402300799000,d0,1.0\n");
            csv.push_str(&format!("{},d1,1.0\n", 4_102_444_800_000i64)); // 2100-01-01
        }
        csv.push_str(&format!("{},d{},{}.5\n", base + i * 100, i % 4, i % 10));
        good += 1;
    }
    std::fs::write(dir.path().join("in.csv"), csv).unwrap();
    let pipeline = dir.path().join("clock.yaml");
    std::fs::write(
        &pipeline,
        "pipeline: clock\nnodes:\n  readings: { kind: file, path: in.csv, schema: { ts: timestamp_ms, device: string, value: f64 } }\n  per_sec: { kind: window, inputs: [readings], key: [device], size: 1s, aggregates: [count] }\n  fleet: { kind: table, inputs: [per_sec] }\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let output = edgeflow()
        .args(["run", pipeline.to_str().unwrap(), "--format", "csv"])
        .args(["--data-dir", data.to_str().unwrap()])
        .args(["--query", "SELECT sum(count) AS n FROM fleet"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    // Every good row is counted in a window: none became late.
    assert_eq!(
        stdout.lines().nth(1).map(str::trim),
        Some(good.to_string().as_str()),
        "{stdout}{stderr}"
    );
    let letters: Vec<Value> = std::fs::read_to_string(data.join("clock/dead_letter.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(letters.len(), 2, "{letters:?}");
    for letter in &letters {
        assert_eq!(letter["node"], "readings");
        assert!(
            letter["reason"]
                .as_str()
                .unwrap()
                .contains("ahead of the wall clock (max_future)"),
            "{letter}"
        );
    }
    assert!(stderr.contains("0 late"), "{stderr}");
}

#[test]
fn epoch_seconds_in_a_millisecond_column_are_pointed_out() {
    // Regression (issue 12, case 15): epoch seconds in a `timestamp_ms` column were silently
    // read as milliseconds (dates in January 1970).
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("ts,device,value\n");
    for i in 0..50 {
        csv.push_str(&format!("{},d{},1.5\n", 1_767_225_600 + i, i % 3));
    }
    let input = dir.path().join("seconds.csv");
    std::fs::write(&input, csv).unwrap();
    let pipeline = dir.path().join("read.yaml");
    std::fs::write(
        &pipeline,
        "pipeline: read\nnodes:\n  readings: { kind: file, path: seconds.csv, schema: { ts: timestamp_ms, device: string, value: f64 } }\n  kept: { kind: table, inputs: [readings] }\n",
    )
    .unwrap();
    let output = edgeflow()
        .args(["run", pipeline.to_str().unwrap(), "--quiet"])
        .args(["--data-dir", dir.path().join("data").to_str().unwrap()])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains("read as milliseconds, which is 1970-01-21T")
            && stderr.contains("epoch seconds"),
        "{stderr}"
    );
    // Said once, not once per batch.
    assert_eq!(stderr.matches("epoch seconds").count(), 1, "{stderr}");
}
