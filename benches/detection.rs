//! Detection quality and inference throughput.
//!
//! Quality: the generator's fleet with labelled anomalies (a seed the shipped model was not
//! trained on) is scored by the `infer` operator with `pipelines/models/sensors.bpk` and by
//! the z-score detector, and both are judged per window of the model's width: a window is
//! anomalous of shape S when one of its readings is labelled S, and flagged when the detector
//! raised an exception on it (for z-score: on one of its readings). Per shape, precision and
//! F1 count that shape's windows against the normal windows (one-vs-normal); "all" pools
//! every shape. Windows a key spends warming up are left out for every detector.
//!
//! Throughput: the whole data set through the `infer` operator on 1 thread and on rayon's
//! pool: windows/s and readings/s, median of runs.
//!
//! `cargo bench --workspace --bench detection` (env: `EDGEFLOW_BENCH_EVENTS`,
//! `EDGEFLOW_BENCH_RUNS`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::TimestampMillisecondType;
use edgeflow_connectors::{AnomalyShape, Generator, GeneratorOptions};
use edgeflow_operators::detect::{Detector, DetectorKind, Emit};
use edgeflow_operators::infer::{AnomalyModel, InferEmit, InferOperator};
use edgeflow_operators::kernels::Exec;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// (device, sensor)
type Key = (String, String);

/// Per key: the labels of its readings in order, and their timestamps.
struct Truth {
    labels: HashMap<Key, Vec<Option<AnomalyShape>>>,
    times: HashMap<Key, Vec<i64>>,
}

fn truth(batches: &[RecordBatch]) -> Truth {
    let mut labels: HashMap<Key, Vec<Option<AnomalyShape>>> = HashMap::new();
    let mut times: HashMap<Key, Vec<i64>> = HashMap::new();
    for b in batches {
        let ts = b.column(0).as_primitive::<TimestampMillisecondType>();
        let device = b.column(1).as_string::<i32>();
        let sensor = b.column(3).as_string::<i32>();
        let anomaly = b.column(5).as_string::<i32>();
        for i in 0..b.num_rows() {
            let key = (device.value(i).to_owned(), sensor.value(i).to_owned());
            let label = anomaly
                .is_valid(i)
                .then(|| AnomalyShape::from_name(anomaly.value(i)).expect("shape name"));
            labels.entry(key.clone()).or_default().push(label);
            times.entry(key).or_default().push(ts.value(i));
        }
    }
    Truth { labels, times }
}

/// Counts of one detector: per shape (and pooled) true positives and positives, plus false
/// alarms among normal windows.
#[derive(Default)]
struct Confusion {
    positives: HashMap<&'static str, (u64, u64)>,
    normal: u64,
    false_alarms: u64,
}

impl Confusion {
    fn add(&mut self, shapes: &[AnomalyShape], flagged: bool) {
        if shapes.is_empty() {
            self.normal += 1;
            self.false_alarms += u64::from(flagged);
            return;
        }
        let all = self.positives.entry("all").or_default();
        all.0 += u64::from(flagged);
        all.1 += 1;
        for s in shapes {
            let e = self.positives.entry(s.name()).or_default();
            e.0 += u64::from(flagged);
            e.1 += 1;
        }
    }

    fn row(&self, shape: &str) -> String {
        let (tp, p) = self.positives.get(shape).copied().unwrap_or_default();
        let recall = tp as f64 / p.max(1) as f64;
        let precision = tp as f64 / (tp + self.false_alarms).max(1) as f64;
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        format!("P {precision:.3}  R {recall:.3}  F1 {f1:.3}  ({p} windows)")
    }
}

/// The generator's schema with the `anomaly` label column.
fn labelled_schema() -> edgeflow_operators::schema::EventSchema {
    Generator::schema(&GeneratorOptions {
        ground_truth: true,
        ..GeneratorOptions::default()
    })
}

/// An `infer` operator over (device, sensor) windows of the labelled generator data.
fn infer_operator(model: &Arc<AnomalyModel>, emit: InferEmit) -> InferOperator {
    let key = ["device".to_owned(), "sensor".to_owned()];
    InferOperator::new(
        &labelled_schema(),
        &key,
        "value",
        "ts",
        model.clone(),
        None,
        emit,
    )
    .expect("infer operator")
}

/// The windows `infer` scored: key -> (start ts -> flagged).
fn infer_windows(
    model: &Arc<AnomalyModel>,
    batches: &[RecordBatch],
) -> HashMap<Key, HashMap<i64, bool>> {
    let mut op = infer_operator(model, InferEmit::All);
    let mut out: HashMap<Key, HashMap<i64, bool>> = HashMap::new();
    for b in batches {
        let Some(rows) = op.process(b).expect("infer") else {
            continue;
        };
        let device = rows.column(1).as_string::<i32>();
        let sensor = rows.column(2).as_string::<i32>();
        let start = rows.column(3).as_primitive::<TimestampMillisecondType>();
        let reason = rows.column(5);
        for i in 0..rows.num_rows() {
            out.entry((device.value(i).to_owned(), sensor.value(i).to_owned()))
                .or_default()
                .insert(start.value(i), reason.is_valid(i));
        }
    }
    out
}

/// Readings the z-score detector flags, per key in order.
fn zscore_flags(threshold: f64, batches: &[RecordBatch]) -> HashMap<Key, Vec<bool>> {
    let key = ["device".to_owned(), "sensor".to_owned()];
    let mut detector = Detector::new(
        &labelled_schema(),
        &key,
        "value",
        DetectorKind::ZScore {
            threshold,
            min_samples: 30,
        },
        Emit::All,
    )
    .expect("detector");
    let mut out: HashMap<Key, Vec<bool>> = HashMap::new();
    for b in batches {
        let rows = detector.process(b).expect("detect").expect("emit all");
        let device = rows.column(1).as_string::<i32>();
        let sensor = rows.column(3).as_string::<i32>();
        let reason = rows.column(rows.num_columns() - 1);
        for i in 0..rows.num_rows() {
            out.entry((device.value(i).to_owned(), sensor.value(i).to_owned()))
                .or_default()
                .push(reason.is_valid(i));
        }
    }
    out
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let events = if quick {
        100_000
    } else {
        env_or("EDGEFLOW_BENCH_EVENTS", 2_000_000)
    };
    let runs = if quick {
        1
    } else {
        env_or("EDGEFLOW_BENCH_RUNS", 5) as usize
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(root.join("pipelines/models/sensors.bpk")).expect("model file");
    let model = Arc::new(AnomalyModel::from_bytes(&bytes).expect("model"));
    let window = model.shape().window;

    let opts = GeneratorOptions {
        seed: 2026,
        devices: 50,
        anomaly_rate: 0.0001,
        ground_truth: true,
        ..GeneratorOptions::default()
    };
    let mut generator = Generator::new(opts, 0, 1).expect("generator");
    generator.set_limit(events);
    let mut batches = Vec::new();
    while let Some(b) = generator.next_batch(8192) {
        batches.push(b);
    }
    let truth = truth(&batches);

    // Quality.
    let scored = infer_windows(&model, &batches);
    let mut detectors: Vec<(String, Confusion)> = vec![(
        format!("infer ({} readings/window)", window),
        Confusion::default(),
    )];
    let zscores = [4.0, 6.0];
    let flags: Vec<HashMap<Key, Vec<bool>>> =
        zscores.iter().map(|t| zscore_flags(*t, &batches)).collect();
    for t in zscores {
        detectors.push((format!("zscore threshold {t}"), Confusion::default()));
    }
    for (key, labels) in &truth.labels {
        let times = &truth.times[key];
        let Some(windows) = scored.get(key) else {
            continue;
        };
        for (w, chunk) in labels.chunks_exact(window).enumerate() {
            let start = times[w * window];
            let Some(&flagged) = windows.get(&start) else {
                continue; // warm-up
            };
            let mut shapes: Vec<AnomalyShape> = chunk.iter().flatten().copied().collect();
            shapes.sort_by_key(|s| s.name());
            shapes.dedup();
            detectors[0].1.add(&shapes, flagged);
            for (i, f) in flags.iter().enumerate() {
                let any = f[key][w * window..(w + 1) * window].iter().any(|x| *x);
                detectors[i + 1].1.add(&shapes, any);
            }
        }
    }
    println!(
        "detection quality: {events} readings, 50 devices x 2 sensors, anomaly rate 0.0001, seed 2026"
    );
    for (name, c) in &detectors {
        println!(
            "  {name}: {} normal windows, {} false alarms",
            c.normal, c.false_alarms
        );
        for shape in AnomalyShape::ALL.iter().map(|s| s.name()).chain(["all"]) {
            println!("    {shape:<12} {}", c.row(shape));
        }
    }

    // Throughput.
    let threads = rayon::current_num_threads();
    // Batches of 64 x 8192 readings, so a call completes many windows to score together;
    // concatenated before the clock starts.
    let big: Vec<RecordBatch> = batches
        .chunks(64)
        .map(|b| arrow::compute::concat_batches(&b[0].schema(), b).expect("concat"))
        .collect();
    for parallel in [false, true] {
        let mut rates = Vec::new();
        let mut windows = 0;
        for _ in 0..runs {
            let mut op = infer_operator(&model, InferEmit::Exceptions);
            if !parallel {
                op = op.serial();
            }
            let started = Instant::now();
            for b in &big {
                op.process(b).expect("infer");
            }
            let secs = started.elapsed().as_secs_f64();
            windows = op.windows_scored();
            rates.push(secs);
        }
        let secs = median(rates);
        let cores = if parallel { threads } else { 1 };
        println!(
            "infer throughput ({} thread{}): {:.0} windows/s, {:.2}M readings/s, {:.2}M readings/s per core (median of {runs})",
            cores,
            if cores == 1 { "" } else { "s" },
            windows as f64 / secs,
            events as f64 / secs / 1e6,
            events as f64 / secs / 1e6 / cores as f64,
        );
    }

    // The model's forward pass alone: burn (what `infer` runs) against the same network in the
    // SIMD dense-layer kernel, one thread, on 65536 windows.
    let rows = 65_536;
    let z: Vec<f32> = (0..rows * window)
        .map(|i| ((i * 37 % 101) as f32 / 25.0) - 2.0)
        .collect();
    let kernel = model.to_kernel().expect("kernel");
    let exec = Exec::new().serial();
    let mut burn_secs = Vec::new();
    let mut kernel_secs = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        std::hint::black_box(model.errors(&z, false).expect("burn"));
        burn_secs.push(started.elapsed().as_secs_f64());
        let started = Instant::now();
        std::hint::black_box(kernel.forward(exec, &z).expect("kernel"));
        kernel_secs.push(started.elapsed().as_secs_f64());
    }
    let (b, k) = (median(burn_secs), median(kernel_secs));
    println!(
        "model forward pass, 1 thread: burn (ndarray) {:.0} windows/s, SIMD dense kernel ({}) {:.0} windows/s: {:.1}x (median of {runs})",
        rows as f64 / b,
        exec.isa().name(),
        rows as f64 / k,
        b / k
    );
}
