//! Edge and cloud as separate processes over a real Kafka-protocol broker (tansu, started by
//! `scripts/dev-broker` on a free loopback port with its own storage): the cloud's tables
//! must equal the embedded run's on the same input — with no fault, across a broker outage,
//! across an edge and a cloud killed with SIGKILL — bad records go to the dead-letter topic,
//! and a Kafka client that is not ours (Python's confluent-kafka) reads the topics.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::broker::Broker;
use crate::common::{Running, edgeflow, free_port, http, text};

/// Edges summarize per device and second and flag spikes; the cloud aggregates the
/// summaries per site over 10 s windows (a cloud-side window, so the watermark across the
/// cut matters) and materializes all three streams.
const FLEET: &str = r#"
pipeline: linkfleet
nodes:
  sensors:  { kind: generator, devices: 40, sites: 4, sensors: [vibration, temperature], rate_per_device: 50/s, seed: 11, anomaly_rate: 0.0005, start: "2026-01-01T00:00:00Z" }
  per_sec:  { kind: window, inputs: [sensors], key: [site, device, sensor], size: 1s, aggregates: [count, min, max, mean] }
  spikes:   { kind: detect, inputs: [sensors], key: [device, sensor], method: zscore, threshold: 5.0 }
  per_site: { kind: window, inputs: [per_sec], key: [site, sensor], size: 10s, value: mean, aggregates: [count, min, max], placement: cloud }
  fleet:    { kind: table, inputs: [per_sec] }
  sites:    { kind: table, inputs: [per_site] }
  exceptions: { kind: table, inputs: [spikes] }
"#;

const QUERIES: [&str; 3] = [
    "SELECT site, device, sensor, window_start, count, min, max, mean FROM fleet ORDER BY site, device, sensor, window_start",
    "SELECT site, sensor, window_start, count, min, max FROM sites ORDER BY site, sensor, window_start",
    "SELECT device, sensor, ts, value, score FROM exceptions ORDER BY device, sensor, ts",
];

fn with_queries(command: &mut Command) -> &mut Command {
    command.args(["--quiet", "--format", "csv"]);
    for q in QUERIES {
        command.args(["--query", q]);
    }
    command
}

pub(crate) fn pipeline(dir: &Path) -> PathBuf {
    let path = dir.join("linkfleet.yaml");
    std::fs::write(&path, FLEET).unwrap();
    path
}

/// The reference: both halves in one process, two workers (one per edge share).
pub(crate) fn embedded(pipeline: &Path, dir: &Path, events: u64) -> String {
    let out = with_queries(
        edgeflow()
            .args(["run", pipeline.to_str().unwrap(), "--workers", "2"])
            .args(["--events", &events.to_string()])
            .arg("--data-dir")
            .arg(dir.join("embedded")),
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.lines().count() > 100, "too little output: {text}");
    text
}

pub(crate) fn edge(
    pipeline: &Path,
    data: &Path,
    broker: &Broker,
    id: &str,
    shard: &str,
    events: u64,
) -> Command {
    let mut c = edgeflow();
    c.args([
        "edge",
        pipeline.to_str().unwrap(),
        "--edge-id",
        id,
        "--shard",
        shard,
    ])
    .args(["--brokers", &broker.address(), "--quiet"])
    .args(["--events", &events.to_string()])
    .arg("--data-dir")
    .arg(data);
    c
}

pub(crate) fn cloud(pipeline: &Path, data: &Path, broker: &Broker) -> Command {
    let mut c = edgeflow();
    c.args([
        "cloud",
        pipeline.to_str().unwrap(),
        "--edges",
        "a,b",
        "--workers",
        "2",
    ])
    .args(["--brokers", &broker.address(), "--idle-timeout", "10m"])
    .arg("--data-dir")
    .arg(data);
    with_queries(&mut c);
    c
}

pub(crate) const LIMIT: Duration = Duration::from_secs(240);

/// Waits for a child that talks to `broker` (bounded: [`LIMIT`]); its stdout, after checking
/// it succeeded. A timeout says whether the broker still answers.
fn finish(broker: &Broker, run: Running, what: &str) -> String {
    let out = broker.wait(run, what, LIMIT);
    assert!(out.status.success(), "{what} failed: {}", text(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn two_edges_and_a_cloud_match_the_embedded_run() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path());
    let expected = embedded(&p, dir.path(), 40_000);
    let broker = Broker::start(dir.path());
    let data = dir.path().join("data");
    // After the run, each side's system tables: the cloud sees both edges on both topics,
    // each frame applied once; an edge sees its own frames, all delivered from its spool.
    let cloud_edges = "SELECT topic, edge_id, side, ended, sequence = frames AS all_applied, \
                       spool_frames IS NULL AS no_spool, link_up FROM edgeflow_edges ORDER BY topic, edge_id";
    let cloud_topics =
        "SELECT topic, frames_received > 0 AS received FROM edgeflow_topics ORDER BY topic";
    let cloud_run = Running::start(cloud(&p, &data, &broker).args([
        "--query",
        cloud_edges,
        "--query",
        cloud_topics,
    ]));
    let edge_edges = "SELECT topic, edge_id, side, ended, sequence = frames AS all_written, \
                      spool_frames, spool_bytes IS NOT NULL AS spool_bytes FROM edgeflow_edges ORDER BY topic";
    let a = Running::start(
        edge(&p, &data, &broker, "a", "0/2", 40_000)
            .args(["--query", edge_edges, "--format", "csv"]),
    );
    let b = Running::start(&mut edge(&p, &data, &broker, "b", "1/2", 40_000));
    let a_out = finish(&broker, a, "edge a");
    assert_eq!(
        a_out,
        "topic,edge_id,side,ended,all_written,spool_frames,spool_bytes\n\
         linkfleet.per_sec,a,producer,true,true,0,true\n\
         linkfleet.spikes,a,producer,true,true,0,true\n"
    );
    finish(&broker, b, "edge b");
    let out = finish(&broker, cloud_run, "cloud");
    let system = "topic,edge_id,side,ended,all_applied,no_spool,link_up\n\
                  linkfleet.per_sec,a,consumer,true,true,true,true\n\
                  linkfleet.per_sec,b,consumer,true,true,true,true\n\
                  linkfleet.spikes,a,consumer,true,true,true,true\n\
                  linkfleet.spikes,b,consumer,true,true,true,true\n\
                  topic,received\n\
                  linkfleet.dead_letter,false\n\
                  linkfleet.per_sec,true\n\
                  linkfleet.spikes,true\n";
    let tables = out
        .strip_suffix(system)
        .unwrap_or_else(|| panic!("cloud output: {out}"));
    assert_eq!(tables, expected);
}

#[test]
fn a_broker_outage_loses_nothing_and_counts_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path());
    // Enough readings that the edges are still producing when the broker goes away (a
    // debug build makes about 0.5M readings/s), and keep detecting and spooling meanwhile.
    let events = 3_000_000;
    let expected = embedded(&p, dir.path(), events);
    let broker = Broker::start(dir.path());
    let data = dir.path().join("data");
    let cloud_run = Running::start(&mut cloud(&p, &data, &broker));
    let a = Running::start(&mut edge(&p, &data, &broker, "a", "0/2", events));
    let b = Running::start(&mut edge(&p, &data, &broker, "b", "1/2", events));
    std::thread::sleep(Duration::from_secs(1));
    broker.down();
    std::thread::sleep(Duration::from_secs(4));
    broker.up();
    finish(&broker, a, "edge a");
    finish(&broker, b, "edge b");
    let out = finish(&broker, cloud_run, "cloud");
    assert_eq!(out, expected);
}

#[test]
fn a_killed_edge_and_a_killed_cloud_resume_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path());
    let events = 2_000_000;
    let expected = embedded(&p, dir.path(), events);
    let broker = Broker::start(dir.path());
    let data = dir.path().join("data");
    let mut cloud_run = Running::start(&mut cloud(&p, &data, &broker));
    let mut a = Running::start(&mut edge(&p, &data, &broker, "a", "0/2", events));
    let b = Running::start(&mut edge(&p, &data, &broker, "b", "1/2", events));
    std::thread::sleep(Duration::from_millis(1500));
    a.kill();
    cloud_run.kill();
    std::thread::sleep(Duration::from_millis(500));
    let cloud_run = Running::start(&mut cloud(&p, &data, &broker));
    let a = Running::start(&mut edge(&p, &data, &broker, "a", "0/2", events));
    finish(&broker, a, "restarted edge a");
    finish(&broker, b, "edge b");
    let out = finish(&broker, cloud_run, "restarted cloud");
    assert_eq!(out, expected);
}

/// The `edgeflow-schema` header of the first data record of `topic` (read with the `rdkafka`
/// crate directly, within 30 s).
fn schema_fingerprint(broker: &Broker, topic: &str) -> String {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .set("group.id", "test-fingerprint")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .unwrap();
    let mut list = rdkafka::TopicPartitionList::new();
    for p in metadata.topics()[0].partitions() {
        list.add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&list).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let header = |name: &str| {
            message.headers().and_then(|h| {
                h.iter()
                    .find(|x| x.key == name)
                    .and_then(|x| x.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            })
        };
        if header("edgeflow-kind").as_deref() == Some("data") {
            return header("edgeflow-schema").unwrap();
        }
    }
    panic!("no data record in {topic} within 30 s");
}

/// Sends raw records to a cut topic with the `rdkafka` crate directly (not edgeflow's
/// producer): a record without edgeflow headers, one with the right fingerprint whose
/// payload is not Arrow, and one with a schema fingerprint the cloud does not know.
fn send_bad_records(broker: &Broker, topic: &str) {
    let fingerprint = schema_fingerprint(broker, topic);
    use rdkafka::config::ClientConfig;
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .create()
        .unwrap();
    let headers = |fingerprint: &str, seq: &str| {
        let mut h = OwnedHeaders::new();
        for (k, v) in [
            ("edgeflow-pipeline", "linkfleet"),
            ("edgeflow-stream", "per_sec"),
            ("edgeflow-edge", "rogue"),
            ("edgeflow-incarnation", "000000000000002a"),
            ("edgeflow-seq", seq),
            ("edgeflow-watermark", "0"),
            ("edgeflow-schema", fingerprint),
            ("edgeflow-kind", "data"),
        ] {
            h = h.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        h
    };
    let records = [
        BaseRecord::to(topic)
            .key("rogue")
            .payload("no headers at all"),
        BaseRecord::to(topic)
            .key("rogue")
            .payload("not arrow")
            .headers(headers(&fingerprint, "1")),
        BaseRecord::to(topic)
            .key("rogue")
            .payload("x")
            .headers(headers("00000000deadbeef", "2")),
    ];
    for r in records {
        producer.send(r).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

#[test]
fn bad_records_go_to_the_dead_letter_topic_and_python_reads_plain_kafka() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path());
    let expected = embedded(&p, dir.path(), 20_000);
    let broker = Broker::start(dir.path());
    let data = dir.path().join("data");
    // The edges first, so the topics exist; then the poison; then the cloud.
    let a = Running::start(&mut edge(&p, &data, &broker, "a", "0/2", 20_000));
    let b = Running::start(&mut edge(&p, &data, &broker, "b", "1/2", 20_000));
    finish(&broker, a, "edge a");
    finish(&broker, b, "edge b");
    send_bad_records(&broker, "linkfleet.per_sec");
    let out = finish(
        &broker,
        Running::start(&mut cloud(&p, &data, &broker)),
        "cloud",
    );
    // The cloud kept going: its tables are still exactly right.
    assert_eq!(out, expected);
    let letters = std::fs::read_to_string(data.join("linkfleet/dead_letter.jsonl")).unwrap();
    assert_eq!(letters.lines().count(), 3, "{letters}");
    assert!(
        letters.contains("missing header edgeflow-pipeline"),
        "{letters}"
    );
    assert!(letters.contains("corrupt payload"), "{letters}");
    assert!(
        letters.contains("unknown schema fingerprint 00000000deadbeef"),
        "{letters}"
    );

    // A client that is not ours: confluent-kafka (PyPI, bundling a current librdkafka).
    let python = python_with_confluent_kafka();
    let script = r#"
import json, sys
from confluent_kafka import Consumer, TopicPartition
c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": "py-check", "enable.auto.commit": False})
def read(topic):
    md = c.list_topics(topic, timeout=30).topics[topic]
    c.assign([TopicPartition(topic, p, 0) for p in md.partitions])
    out, idle = [], 0
    while idle < 20:
        m = c.poll(0.5)
        if m is None:
            idle += 1
            continue
        if m.error():
            continue
        idle = 0
        out.append({"key": (m.key() or b"").decode(), "headers": {k: v.decode() for k, v in (m.headers() or [])}, "size": len(m.value() or b"")})
    return out
summary = {}
for topic in sys.argv[2:]:
    records = read(topic)
    summary[topic] = {
        "records": len(records),
        "keys": sorted({r["key"] for r in records}),
        "kinds": sorted({r["headers"].get("edgeflow-kind", "") for r in records}),
        "reasons": sorted({r["headers"].get("edgeflow-dead-letter-reason", "") for r in records}),
        "data_bytes": sum(r["size"] for r in records if r["headers"].get("edgeflow-kind") == "data"),
    }
print(json.dumps(summary))
"#;
    let out = run_python(
        &python,
        script,
        &[
            &broker.address(),
            "linkfleet.per_sec",
            "linkfleet.dead_letter",
        ],
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let per_sec = &summary["linkfleet.per_sec"];
    assert_eq!(
        per_sec["keys"],
        serde_json::json!(["a", "b", "rogue"]),
        "{summary}"
    );
    // Rogue records have no kind; edges send data and end frames (watermark frames only
    // when a watermark moves without data).
    let kinds: Vec<&str> = per_sec["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert!(
        ["", "data", "end"].iter().all(|k| kinds.contains(k))
            && kinds
                .iter()
                .all(|k| ["", "data", "end", "watermark"].contains(k)),
        "{summary}"
    );
    assert!(per_sec["data_bytes"].as_u64().unwrap() > 1_000, "{summary}");
    let dead = &summary["linkfleet.dead_letter"];
    assert_eq!(dead["records"], 3, "{summary}");
    assert_eq!(dead["keys"], serde_json::json!(["rogue"]), "{summary}");
}

/// Runs a Python `script` with `args` and checks that it succeeded; its output.
fn run_python(python: &Path, script: &str, args: &[&str]) -> Output {
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A Python that can `import confluent_kafka`, installing it from PyPI into a venv under the
/// target directory when needed; once per test process (two tests creating the venv at the
/// same time would race).
fn python_with_confluent_kafka() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(find_or_install_python).clone()
}

fn find_or_install_python() -> PathBuf {
    let has = |python: &Path| {
        Command::new(python)
            .args(["-c", "import confluent_kafka"])
            .status()
            .is_ok_and(|s| s.success())
    };
    let system = PathBuf::from("python3");
    if has(&system) {
        return system;
    }
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("py-kafka");
    let python = venv.join("bin/python");
    if !has(&python) {
        let made = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .status()
            .unwrap();
        assert!(made.success(), "python3 -m venv failed");
        let installed = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "confluent-kafka"])
            .status()
            .unwrap();
        assert!(installed.success(), "pip install confluent-kafka failed");
    }
    python
}

/// The `kafka` node kinds: readings produced to a topic by Python's confluent-kafka (one
/// JSON line per record, two of them bad) are read by a `kafka` source, summarized per
/// device and second, materialized, and written back by a `kafka` sink; the table equals a
/// per-key loop over the same readings, the bad lines are dead letters, and Python reads the
/// summaries.
#[test]
fn kafka_source_and_sink_nodes_carry_plain_records() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let python = python_with_confluent_kafka();
    // 3 devices x 250 readings, 10 ms apart, integer values so sums are exact.
    let devices = ["d0", "d1", "d2"];
    let base: i64 = 1_767_225_600_000;
    let mut lines = Vec::new();
    let mut expected = std::collections::BTreeMap::<(String, i64), (u64, f64)>::new();
    for i in 0..250i64 {
        for (d, device) in devices.iter().enumerate() {
            let ts = base + i * 10 + d as i64;
            let value = ((i * 7 + d as i64 * 3) % 11) as f64;
            lines.push(format!(
                "{{\"ts\": {ts}, \"device\": \"{device}\", \"value\": {value}}}"
            ));
            let start = ts - ts.rem_euclid(1000);
            let e = expected.entry((device.to_string(), start)).or_default();
            e.0 += 1;
            e.1 += value;
        }
        if i == 100 {
            lines.push("not json".into());
            lines.push(format!(
                "{{\"ts\": {}, \"device\": \"d0\", \"value\": \"x\"}}",
                base + 1000
            ));
        }
    }
    let readings = dir.path().join("readings.jsonl");
    std::fs::write(&readings, lines.join("\n")).unwrap();
    let produce = r#"
import sys
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
admin = AdminClient({"bootstrap.servers": sys.argv[1]})
admin.create_topics([NewTopic(sys.argv[2], num_partitions=3, replication_factor=1)])[sys.argv[2]].result(30)
p = Producer({"bootstrap.servers": sys.argv[1]})
failed = []
def delivered(err, msg):
    if err is not None:
        failed.append(str(err))
for line in open(sys.argv[3]):
    p.produce(sys.argv[2], line.rstrip("\n").encode(), on_delivery=delivered)
assert p.flush(60) == 0 and not failed, failed[:3]
"#;
    run_python(
        &python,
        produce,
        &[
            &broker.address(),
            "ext.readings",
            readings.to_str().unwrap(),
        ],
    );

    let p = dir.path().join("ext.yaml");
    std::fs::write(
        &p,
        r#"
pipeline: ext
transport: { brokers: "${TEST_BROKERS}" }
nodes:
  readings: { kind: kafka, topic: ext.readings, schema: { ts: timestamp_ms, device: string, value: f64 }, disorder: 10s }
  per_sec:  { kind: window, inputs: [readings], key: [device], size: 1s, aggregates: [count, sum] }
  out:      { kind: kafka, inputs: [per_sec], topic: ext.summaries, key: device }
  fleet:    { kind: table, inputs: [per_sec] }
"#,
    )
    .unwrap();
    let data = dir.path().join("data");
    let table = finish(&broker, Running::start(
            edgeflow()
                .args(["run", p.to_str().unwrap(), "--quiet", "--format", "csv"])
                .args(["--events", "750", "--query"])
                .arg("SELECT device, CAST(window_start AS BIGINT) AS start, count, CAST(sum AS BIGINT) AS sum FROM fleet ORDER BY device, start")
                .arg("--data-dir")
                .arg(&data)
                .env("TEST_BROKERS", broker.address()),
        ), "edgeflow run with kafka nodes");
    let mut want = String::from("device,start,count,sum\n");
    for ((device, start), (count, sum)) in &expected {
        want.push_str(&format!("{device},{start},{count},{sum}\n"));
    }
    assert_eq!(table, want);

    let letters = std::fs::read_to_string(data.join("ext/dead_letter.jsonl")).unwrap();
    assert_eq!(letters.lines().count(), 2, "{letters}");
    assert!(letters.contains("invalid JSON"), "{letters}");
    assert!(
        letters.contains("field \\\"value\\\": expected f64"),
        "{letters}"
    );

    let consume = r#"
import json, sys
from confluent_kafka import Consumer, TopicPartition
c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": "py-sink-check", "enable.auto.commit": False})
md = c.list_topics(sys.argv[2], timeout=30).topics[sys.argv[2]]
c.assign([TopicPartition(sys.argv[2], p, 0) for p in md.partitions])
rows, idle = [], 0
while idle < 20:
    m = c.poll(0.5)
    if m is None:
        idle += 1
        continue
    if m.error():
        continue
    idle = 0
    row = json.loads(m.value())
    rows.append([m.key().decode(), row["device"], row["count"]])
print(json.dumps(rows))
"#;
    let out = run_python(&python, consume, &[&broker.address(), "ext.summaries"]);
    let rows: Vec<(String, String, u64)> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), expected.len(), "{rows:?}");
    assert!(
        rows.iter().all(|(key, device, _)| key == device),
        "{rows:?}"
    );
    assert_eq!(rows.iter().map(|r| r.2).sum::<u64>(), 750);
}

/// An edge applies a control record sent through the cloud, acknowledges it once, and a
/// restarted edge (same id and data directory) reads the record again but does not apply it
/// a second time.
const CONTROLLED: &str = r#"
pipeline: ctlfleet
control: { nodes: [spikes] }
nodes:
  sensors: { kind: generator, devices: 4, sensors: [vibration], rate_per_device: 20/s, seed: 3, start: 1767225600000 }
  spikes:  { kind: detect, inputs: [sensors], key: [device, sensor], method: zscore, threshold: 4, emit: all }
  alerts:  { kind: table, inputs: [spikes] }
"#;

fn control_metric(metrics: &str, event: &str) -> u64 {
    let prefix = format!("edgeflow_control_records_total{{event=\"{event}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_control_record_reaches_the_edge_is_acknowledged_and_not_reapplied_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ctlfleet.yaml");
    std::fs::write(&p, CONTROLLED).unwrap();
    let broker = Broker::start(dir.path());
    let data = dir.path().join("data");
    let cloud_address = format!("127.0.0.1:{}", free_port());
    let _cloud = Running::start(
        edgeflow()
            .args(["cloud", p.to_str().unwrap(), "--serve", "--quiet"])
            .args(["--listen", &cloud_address, "--pg-listen", "off"])
            .args(["--brokers", &broker.address(), "--idle-timeout", "10m"])
            .arg("--data-dir")
            .arg(dir.path().join("cloud")),
    );
    broker.eventually("the cloud to serve", LIMIT, || {
        http(&cloud_address, "/health", None)
    });
    // 80 readings/s in real time for 10 s of event time.
    let edge_run = Running::start(edge(&p, &data, &broker, "a", "0/1", 800).arg("--realtime"));

    let apply_at = 1_767_225_600_000i64 + 2_000;
    let sent = edgeflow()
        .args(["control", "--server", &cloud_address, "--node", "spikes"])
        .args([
            "--set-threshold",
            "2.5",
            "--apply-at",
            &apply_at.to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let issued: serde_json::Value = serde_json::from_slice(&sent.stdout).unwrap();
    let id = issued["id"].as_str().unwrap().to_string();

    let ack_query = format!(
        "SELECT edge_id, status, CAST(applied_at AS BIGINT) AS applied_at, detail \
         FROM edgeflow_control_log WHERE id = '{id}' AND event = 'ack'"
    );
    let acks = broker.eventually("the acknowledgement", LIMIT, || {
        let text = http(&cloud_address, "/sql", Some(&ack_query))?;
        let rows: Vec<serde_json::Value> = serde_json::from_str(&text).ok()?;
        (!rows.is_empty()).then_some(rows)
    });
    assert_eq!(acks.len(), 1, "{acks:?}");
    assert_eq!(acks[0]["edge_id"], "a");
    assert_eq!(acks[0]["status"], "applied", "{acks:?}");
    let applied_at = acks[0]["applied_at"].as_i64().unwrap();
    assert!(
        (apply_at..apply_at + 50).contains(&applied_at),
        "{applied_at}"
    );
    finish(&broker, edge_run, "edge a");
    let applied =
        std::fs::read_to_string(data.join("ctlfleet/edge-a/control_applied.txt")).unwrap();
    assert_eq!(applied.lines().collect::<Vec<_>>(), vec![id.as_str()]);

    // Restart the edge, serving its metrics: it reads the record again and skips it.
    let edge_address = format!("127.0.0.1:{}", free_port());
    let _restarted = Running::start(edge(&p, &data, &broker, "a", "0/1", 800).args([
        "--serve",
        "--listen",
        &edge_address,
        "--pg-listen",
        "off",
    ]));
    let metrics = broker.eventually("the restarted edge to read the record", LIMIT, || {
        let metrics = http(&edge_address, "/metrics", None)?;
        (control_metric(&metrics, "duplicate") >= 1).then_some(metrics)
    });
    assert_eq!(control_metric(&metrics, "applied"), 0, "{metrics}");
    assert_eq!(control_metric(&metrics, "duplicate"), 1, "{metrics}");
    // Still exactly one acknowledgement in the cloud's log.
    std::thread::sleep(Duration::from_secs(1));
    let text = http(&cloud_address, "/sql", Some(&ack_query)).unwrap();
    let rows: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
}
