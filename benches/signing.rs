//! Frame signing bench (issue 13): what signing every frame at the edge and verifying it in
//! the cloud costs, per frame and per event, against the work that builds the frame's
//! payload (encoding the batch with the content-aware codec, as the edge does by default).
//! The goal the issue states: under 2% of edge -> cloud throughput at the quickstart's
//! frame sizes.
//!
//! Frames: the quickstart's `per_sec` summaries (one frame per closed 1 s window, 1000 rows:
//! 500 devices x 2 sensors), and a payload-less watermark frame (fixed cost only).
//!
//! `cargo bench --bench signing` prints a table (medians over repeated runs, one thread),
//! then runs the criterion groups; `SIGNING_BENCH_TABLE_ONLY=1` skips those.

use std::hint::black_box;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use criterion::{Criterion, Throughput};
use edgeflow_connectors::frame::{Frame, FrameHeader, FrameKind};
use edgeflow_connectors::generator::{Generator, GeneratorOptions};
use edgeflow_connectors::identity::{EdgeRegistry, FrameSigner, write_key_pair};
use edgeflow_operators::codec::{CodecOptions, Encoder};
use edgeflow_operators::window::{AggregateFn, AggregateSpec, WindowAggregator, WindowSpec};

/// What the quickstart's `per_sec` window sends to the cloud: one batch per closed second.
fn summaries(windows: usize) -> Vec<RecordBatch> {
    let opts = GeneratorOptions {
        devices: 500,
        sites: 10,
        sensors: vec!["vibration".into(), "temperature".into()],
        rate_per_device: 100.0,
        seed: 42,
        ..GeneratorOptions::default()
    };
    let schema = Generator::schema(&opts);
    let aggs: Vec<AggregateSpec> = ["count", "min", "max", "mean", "stddev"]
        .iter()
        .map(|f| AggregateSpec {
            func: AggregateFn::from_name(f).expect("known aggregate"),
            field: "value".into(),
            output: (*f).into(),
        })
        .collect();
    let key: Vec<String> = ["site", "device", "sensor"].map(String::from).to_vec();
    let mut w = WindowAggregator::new(&schema, "ts", &key, &aggs, WindowSpec::tumbling(1000))
        .expect("window");
    let mut g = Generator::new(opts, 0, 1).expect("generator");
    let mut out = Vec::new();
    while out.len() < windows {
        let Some(b) = g.next_batch(8192) else { break };
        w.push(&b).expect("push");
        if let Some(closed) = w.advance(g.watermark()).expect("advance") {
            out.push(closed);
        }
    }
    out
}

fn frame(sequence: u64, kind: FrameKind, payload: Vec<u8>) -> Frame {
    Frame {
        header: FrameHeader {
            pipeline: "quickstart".into(),
            stream: "per_sec".into(),
            edge_id: "press-07".into(),
            incarnation: 0x00c0_ffee,
            sequence,
            watermark: 1_767_225_600_000,
            schema_fingerprint: 0x1234_5678_9abc_def0,
            kind,
        },
        payload,
        signature: None,
    }
}

/// Median time of `f` over `runs` runs.
fn median(runs: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

fn main() {
    let keys = tempfile::tempdir().expect("temporary directory");
    let (private, _) = write_key_pair("press-07", keys.path()).expect("key pair");
    let signer = FrameSigner::load(&private).expect("signer");
    let registry = EdgeRegistry::load(keys.path()).expect("registry");

    let batches = summaries(8);
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let mut encoder = Encoder::new(CodecOptions::default()).expect("encoder");
    let payloads: Vec<Vec<u8>> = batches
        .iter()
        .map(|b| encoder.encode(b).expect("encode"))
        .collect();
    let mut frames: Vec<Frame> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| frame(i as u64 + 1, FrameKind::Data, p.clone()))
        .collect();
    for f in &mut frames {
        signer.sign(f);
    }
    let bytes: usize = payloads.iter().map(Vec::len).sum();
    let n = batches.len() as u32;

    let encode = median(15, || {
        for b in &batches {
            black_box(encoder.encode(black_box(b)).expect("encode"));
        }
    }) / n;
    let sign = median(15, || {
        for f in &frames {
            let mut f = f.clone();
            signer.sign(black_box(&mut f));
            black_box(f);
        }
    }) / n;
    let clone = median(15, || {
        for f in &frames {
            black_box(f.clone());
        }
    }) / n;
    let sign = sign.saturating_sub(clone);
    let verify = median(15, || {
        for f in &frames {
            black_box(registry.verify(black_box(f))).expect("verifies");
        }
    }) / n;
    let mut empty = frame(1, FrameKind::Watermark, Vec::new());
    let sign_empty = median(101, || signer.sign(black_box(&mut empty)));
    let verify_empty = median(101, || {
        black_box(registry.verify(black_box(&empty))).expect("verifies");
    });

    let per_frame_rows = rows as f64 / f64::from(n);
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let pct = |d: Duration| 100.0 * d.as_secs_f64() / encode.as_secs_f64();
    println!(
        "frame signing (quickstart per_sec frames: {} frames, {per_frame_rows:.0} rows and {:.0} payload bytes each)",
        n,
        bytes as f64 / f64::from(n)
    );
    println!(
        "{:<34} {:>12} {:>14} {:>16}",
        "", "us/frame", "ns/event", "% of encoding"
    );
    for (name, d) in [
        ("encode payload (codec auto)", encode),
        ("sign (SHA-512 + Ed25519)", sign),
        ("verify (SHA-512 + Ed25519 strict)", verify),
    ] {
        println!(
            "{name:<34} {:>12.1} {:>14.1} {:>15.2}%",
            us(d),
            us(d) * 1000.0 / per_frame_rows,
            pct(d)
        );
    }
    println!(
        "{:<34} {:>12.1} {:>14} {:>16}",
        "sign watermark frame (no payload)",
        us(sign_empty),
        "-",
        "-"
    );
    println!(
        "{:<34} {:>12.1} {:>14} {:>16}",
        "verify watermark frame",
        us(verify_empty),
        "-",
        "-"
    );

    if std::env::var_os("SIGNING_BENCH_TABLE_ONLY").is_some() {
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("signing");
    group.throughput(Throughput::Elements(rows as u64));
    group.bench_function("encode", |b| {
        b.iter(|| {
            for batch in &batches {
                black_box(encoder.encode(batch).expect("encode"));
            }
        })
    });
    group.bench_function("sign", |b| {
        b.iter_batched(
            || frames.clone(),
            |mut fs| {
                for f in &mut fs {
                    signer.sign(f);
                }
                fs
            },
            criterion::BatchSize::LargeInput,
        )
    });
    group.bench_function("verify", |b| {
        b.iter(|| {
            for f in &frames {
                black_box(registry.verify(f)).expect("verifies");
            }
        })
    });
    group.finish();
    c.final_summary();
}
