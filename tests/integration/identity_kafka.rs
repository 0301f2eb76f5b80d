//! Identity and integrity of the data path (issue 13) over a real broker: two genuine edges
//! sign their frames with keys from `edgeflow keys new`; a cloud with `--edge-keys` applies
//! only frames signed by the edge they claim. The attacks the issue reproduced with a few
//! lines of Python are forged here with the `rdkafka` crate, before the genuine frames, on
//! the same partitions: each must be a dead letter with its reason, counted, and change
//! nothing (the cloud's tables equal the embedded run's, and the cloud finishes).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{
    ArrayRef, Float64Array, Int64Array, StringArray, TimestampMillisecondArray, UInt64Array,
    new_null_array,
};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use edgeflow_connectors::frame::{Frame, FrameHeader, FrameKind, encode_batch, schema_fingerprint};
use edgeflow_connectors::identity::FrameSigner;
use edgeflow_connectors::kafka::{KafkaSettings, ensure_topics};

use crate::common::broker::Broker;
use crate::common::{Running, edgeflow, free_port, http, text};
use crate::kafka::{LIMIT, cloud, edge, embedded, pipeline};

/// Incarnations the test gives the edges' spools (written before they start), so forged
/// frames can claim exactly the genuine producers.
const INCARNATION_A: u64 = 0xa1;
const INCARNATION_B: u64 = 0xb2;
/// A sequence far beyond anything genuine: applied, it made the cloud drop every genuine
/// frame after it as a duplicate.
const HUGE_SEQ: u64 = 1_000_000_000_000;

/// `edgeflow keys new --edge-id ID --dir DIR`.
fn new_key(dir: &Path, id: &str) {
    let out = edgeflow()
        .args(["keys", "new", "--edge-id", id, "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "keys new: {}", text(&out.stderr));
}

/// A batch of `schema` with 3 rows of plausible values and counts of 999999.
fn forged_batch(schema: &arrow::datatypes::SchemaRef) -> RecordBatch {
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| -> ArrayRef {
            match f.data_type() {
                DataType::Utf8 => Arc::new(StringArray::from(vec!["site-00"; 3])),
                DataType::Int64 => Arc::new(Int64Array::from(vec![999_999; 3])),
                DataType::UInt64 => Arc::new(UInt64Array::from(vec![999_999; 3])),
                DataType::Float64 => Arc::new(Float64Array::from(vec![999_999.0; 3])),
                DataType::Timestamp(_, _) => Arc::new(TimestampMillisecondArray::from(vec![
                    1_767_225_600_000i64;
                    3
                ])),
                other => new_null_array(other, 3),
            }
        })
        .collect();
    RecordBatch::try_new(schema.clone(), columns).unwrap()
}

fn header(
    edge: &str,
    incarnation: u64,
    sequence: u64,
    watermark: i64,
    kind: FrameKind,
) -> FrameHeader {
    FrameHeader {
        pipeline: "linkfleet".into(),
        stream: "per_sec".into(),
        edge_id: edge.into(),
        incarnation,
        sequence,
        watermark,
        schema_fingerprint: 0,
        kind,
    }
}

/// Writes `frames` to `topic` with a plain rdkafka producer (key = the claimed edge id).
fn send_forged(broker: &Broker, topic: &str, frames: &[Frame]) {
    use rdkafka::config::ClientConfig;
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .create()
        .unwrap();
    for frame in frames {
        let mut headers = OwnedHeaders::new();
        for (key, value) in frame.header_pairs() {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        }
        producer
            .send(
                BaseRecord::to(topic)
                    .key(frame.header.edge_id.as_bytes())
                    .payload(&frame.payload)
                    .headers(headers),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// The value of `edgeflow_frames_rejected_total` for `edge` and `reason` on per_sec.
fn rejected(metrics: &str, edge: &str, reason: &str) -> u64 {
    let prefix = format!(
        "edgeflow_frames_rejected_total{{edge=\"{edge}\",reason=\"{reason}\",topic=\"linkfleet.per_sec\"}} "
    );
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn forged_unsigned_stolen_and_unknown_frames_are_rejected_counted_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path());
    let events = 20_000;
    let expected = embedded(&p, dir.path(), events);
    let keys = dir.path().join("keys");
    new_key(&keys, "a");
    new_key(&keys, "b");
    // The thief knows edge a's id but not its key: a key of its own under that name.
    let thief = dir.path().join("thief");
    new_key(&thief, "a");
    let thief = FrameSigner::load(&thief.join("a.key")).unwrap();

    let broker = Broker::start(dir.path());
    let data = dir.path().join("data");
    for (edge, incarnation) in [("a", INCARNATION_A), ("b", INCARNATION_B)] {
        let spool = data.join(format!("linkfleet/edge-{edge}/spool"));
        std::fs::create_dir_all(&spool).unwrap();
        std::fs::write(spool.join("incarnation"), format!("{incarnation:016x}\n")).unwrap();
    }
    let plan = edgeflow::plan::load_plan(&p).unwrap();
    let topics: Vec<String> = plan.topics.iter().map(|t| t.name.clone()).collect();
    let settings = KafkaSettings {
        brokers: broker.address(),
        client_id: "forger".into(),
        extra: Vec::new(),
    };
    ensure_topics(&settings, &topics, 3, Duration::from_secs(30)).unwrap();
    let per_sec = plan
        .topics
        .iter()
        .find(|t| t.name == "linkfleet.per_sec")
        .unwrap();
    let fingerprint = schema_fingerprint(&per_sec.schema);
    let payload = encode_batch(&forged_batch(&per_sec.schema.to_arrow())).unwrap();
    let start = 1_767_225_600_000i64;
    let data_frame = |edge: &str, incarnation: u64, sequence: u64| Frame {
        header: FrameHeader {
            schema_fingerprint: fingerprint,
            ..header(edge, incarnation, sequence, start, FrameKind::Data)
        },
        payload: payload.clone(),
        signature: None,
    };
    let end = |edge: &str, incarnation: u64| Frame {
        header: header(edge, incarnation, HUGE_SEQ + 2, i64::MAX, FrameKind::End),
        payload: Vec::new(),
        signature: None,
    };
    let watermark = |edge: &str, at: i64| Frame {
        header: header(edge, 1, 1, at, FrameKind::Watermark),
        payload: Vec::new(),
        signature: None,
    };
    // (a) a data frame for a with a huge sequence and no signature;
    let unsigned_data = data_frame("a", INCARNATION_A, HUGE_SEQ);
    // (b) one signed by the thief's key (a stolen edge id);
    let mut stolen_data = data_frame("a", INCARNATION_A, HUGE_SEQ + 1);
    thief.sign(&mut stolen_data);
    // (c) forged ends for both edges: a's unsigned, b's signed by the thief;
    let unsigned_end = end("a", INCARNATION_A);
    let mut stolen_end = end("b", INCARNATION_B);
    thief.sign(&mut stolen_end);
    // (d) watermark-only frames from unknown ids: one far in the future, one that would
    // hold the frontier back forever.
    let future = watermark("ghost", 1_000_000_000_000_000);
    let past = watermark("ghost-low", 0);
    send_forged(
        &broker,
        "linkfleet.per_sec",
        &[
            unsigned_data,
            stolen_data,
            unsigned_end,
            stolen_end,
            future,
            past,
        ],
    );

    // The genuine edges, each with its key, after the forgeries.
    for (id, shard) in [("a", "0/2"), ("b", "1/2")] {
        let key = keys.join(format!("{id}.key"));
        let run = Running::start(
            edge(&p, &data, &broker, id, shard, events)
                .arg("--edge-key")
                .arg(&key),
        );
        let out = broker.wait(run, &format!("edge {id}"), LIMIT);
        assert!(out.status.success(), "edge {id}: {}", text(&out.stderr));
        assert!(
            !text(&out.stderr).contains("frames are unsigned"),
            "{}",
            text(&out.stderr)
        );
    }

    let address = format!("127.0.0.1:{}", free_port());
    let edges = "SELECT topic, edge_id, ended, sequence = frames AS all_applied \
                 FROM edgeflow_edges ORDER BY topic, edge_id";
    let cloud_run = Running::start(
        cloud(&p, &data, &broker)
            .arg("--edge-keys")
            .arg(&keys)
            .args(["--serve", "--listen", &address, "--pg-listen", "off"])
            .args(["--query", edges]),
    );
    // The cloud finishes: the forged ends did not end it early (its tables are checked
    // below) and the low watermark of an unknown id did not hold it back.
    broker.eventually("the cloud to finish", LIMIT, || {
        let health = http(&address, "/health", None)?;
        health.contains("\"finished\"").then_some(())
    });
    let metrics = http(&address, "/metrics", None).unwrap();
    let (_, out) = cloud_run.terminate("cloud", Duration::from_secs(30));
    assert!(out.status.success(), "cloud: {}", text(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    // Only the genuine edges are producers, every frame of theirs applied once, both ended.
    let system = "topic,edge_id,ended,all_applied\n\
                  linkfleet.per_sec,a,true,true\n\
                  linkfleet.per_sec,b,true,true\n\
                  linkfleet.spikes,a,true,true\n\
                  linkfleet.spikes,b,true,true\n";
    let tables = stdout
        .strip_suffix(system)
        .unwrap_or_else(|| panic!("cloud output: {stdout}"));
    // Nothing forged, nothing doubled, nothing dropped as a duplicate or as late.
    assert_eq!(tables, expected);

    let letters = std::fs::read_to_string(data.join("linkfleet/dead_letter.jsonl")).unwrap();
    let lines: Vec<&str> = letters.lines().collect();
    assert_eq!(lines.len(), 6, "{letters}");
    for (reason, count) in [
        ("unsigned frame: edge \\\"a\\\"", 2),
        ("bad signature: edge \\\"a\\\"", 1),
        ("bad signature: edge \\\"b\\\"", 1),
        ("unknown edge: edge \\\"ghost\\\"", 1),
        ("unknown edge: edge \\\"ghost-low\\\"", 1),
    ] {
        let found = lines.iter().filter(|l| l.contains(reason)).count();
        assert_eq!(found, count, "{reason}: {letters}");
    }
    assert_eq!(rejected(&metrics, "a", "unsigned frame"), 2, "{metrics}");
    assert_eq!(rejected(&metrics, "a", "bad signature"), 1, "{metrics}");
    assert_eq!(rejected(&metrics, "b", "bad signature"), 1, "{metrics}");
    assert_eq!(
        rejected(&metrics, "(unenrolled)", "unknown edge"),
        2,
        "{metrics}"
    );
}
