//! Tests of training, the model file and the operator, against a naive sequential scorer.

use std::sync::{Arc, OnceLock};

use arrow::array::AsArray;
use arrow::array::{Float64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{Float64Type, TimestampMillisecondType};
use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use super::channel::Baseline;
use super::model::ModelShape;
use super::train::{TrainConfig, TrainingSet, train};
use super::*;

fn schema() -> EventSchema {
    EventSchema::new(vec![
        ("ts".into(), FieldType::TimestampMs),
        ("device".into(), FieldType::String),
        ("value".into(), FieldType::F64),
    ])
}

/// Normal readings of `devices` devices: a per-device level, a slow sine and Gaussian-ish noise
/// (sum of uniforms), one reading per device every 10 ms, `ticks` ticks from `start`.
fn readings(devices: usize, start: i64, ticks: usize, seed: u64) -> Vec<(i64, String, f64)> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut out = Vec::with_capacity(devices * ticks);
    for t in 0..ticks {
        for d in 0..devices {
            let tick = start + t as i64;
            let level = 10.0 * d as f64;
            let periodic = 2.0 * (tick as f64 / 40.0 + d as f64).sin();
            let noise: f64 = (0..4).map(|_| rng.random::<f64>() - 0.5).sum::<f64>() * 0.6;
            out.push((tick * 10, format!("d{d}"), level + periodic + noise));
        }
    }
    out
}

fn batch(rows: &[(i64, String, f64)]) -> RecordBatch {
    RecordBatch::try_new(
        schema().to_arrow(),
        vec![
            Arc::new(TimestampMillisecondArray::from(
                rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.1.as_str()).collect::<Vec<_>>(),
            )),
            Arc::new(Float64Array::from(
                rows.iter().map(|r| r.2).collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap()
}

/// An operator over per-device windows of [`schema`].
fn device_operator(
    model: Arc<AnomalyModel>,
    threshold: Option<f64>,
    emit: InferEmit,
) -> InferOperator {
    let key = ["device".to_owned()];
    InferOperator::new(&schema(), &key, "value", "ts", model, threshold, emit).unwrap()
}

fn small_config() -> TrainConfig {
    TrainConfig {
        shape: ModelShape {
            window: 16,
            hidden: 8,
            latent: 3,
        },
        epochs: 8,
        batch_size: 32,
        ..TrainConfig::default()
    }
}

fn trained(config: &TrainConfig) -> AnomalyModel {
    let key = vec!["device".to_owned()];
    let mut set = TrainingSet::new(&schema(), &key, "value", "ts", config).unwrap();
    for chunk in readings(8, 0, 2000, 1).chunks(1000) {
        set.push(&batch(chunk)).unwrap();
    }
    train(&set, config).unwrap().0
}

/// One model for the tests that only use it (training takes a moment in a debug build).
fn shared_model() -> Arc<AnomalyModel> {
    static MODEL: OnceLock<Arc<AnomalyModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| Arc::new(trained(&small_config())))
        .clone()
}

#[test]
fn training_is_reproducible_and_the_file_round_trips() {
    let config = small_config();
    let a = trained(&config).to_bytes().unwrap();
    let b = trained(&config).to_bytes().unwrap();
    assert!(a == b, "same seed and data must give the same file");
    let other = trained(&TrainConfig {
        seed: 8,
        ..config.clone()
    });
    assert!(
        other.to_bytes().unwrap() != a,
        "another seed gives other weights"
    );

    let loaded = AnomalyModel::from_bytes(&a).unwrap();
    let original = shared_model();
    assert_eq!(loaded.shape(), config.shape);
    assert_eq!(loaded.calibration(), original.calibration());
    assert_eq!(loaded.to_bytes().unwrap(), a);
    let windows: Vec<f32> = (0..16 * 40)
        .map(|i| ((i * 7) % 13) as f32 / 5.0 - 1.0)
        .collect();
    assert_eq!(
        loaded.errors(&windows, false).unwrap(),
        original.errors(&windows, true).unwrap()
    );
    assert!(a.len() < 1 << 20);
    assert_eq!(
        loaded.parameters(),
        16 * 8 + 8 + 8 * 3 + 3 + 3 * 8 + 8 + 8 * 16 + 16
    );
}

#[test]
fn training_reduces_the_error_and_needs_enough_windows() {
    let config = small_config();
    let key = vec!["device".to_owned()];
    let mut set = TrainingSet::new(&schema(), &key, "value", "ts", &config).unwrap();
    set.push(&batch(&readings(8, 0, 2000, 1))).unwrap();
    // 8 keys x (2000 / 16 = 125 windows - 16 warm-up).
    assert_eq!((set.len(), set.keys()), (8 * (125 - 16), 8));
    let (_, report) = train(&set, &config).unwrap();
    let first = report.epoch_loss[0];
    let last = *report.epoch_loss.last().unwrap();
    assert!(last < first * 0.7, "loss {first} -> {last}");

    let mut few = TrainingSet::new(&schema(), &key, "value", "ts", &config).unwrap();
    few.push(&batch(&readings(1, 0, 100, 1))).unwrap();
    let err = train(&few, &config).unwrap_err().to_string();
    assert!(err.contains("too few"), "{err}");
}

#[test]
fn wrong_or_corrupt_model_files_are_clear_errors() {
    let good = shared_model().to_bytes().unwrap();
    let check = |bytes: &[u8], expect: &str| {
        let err = AnomalyModel::from_bytes(bytes).unwrap_err().to_string();
        assert!(err.contains("not a valid edgeflow model"), "{err}");
        assert!(err.contains(expect), "{err} should mention {expect}");
    };
    check(
        b"hello, this is not a model",
        "cannot read it as a burn record",
    );
    check(&[], "cannot read it as a burn record");
    check(&good[..good.len() / 2], "");
    let mut flipped = good.clone();
    let n = flipped.len();
    flipped[n - 8..].copy_from_slice(&[0xff; 8]);
    // Flipped weights still parse (burnpack has no checksum); the shape checks must hold.
    if let Ok(m) = AnomalyModel::from_bytes(&flipped) {
        assert_eq!(m.shape(), small_config().shape);
    }
    // A burn record of another module has no edgeflow metadata.
    let bare = shared_model()
        .to_bytes()
        .map(|b| {
            let r = burn_pack::Reader::from_bytes(burn::tensor::Bytes::from_bytes_vec(b)).unwrap();
            burn_pack::Writer::new(r.into_tensors().unwrap())
                .into_bytes()
                .unwrap()
                .to_vec()
        })
        .unwrap();
    check(&bare, "without edgeflow metadata");
    // Metadata that disagrees with the tensors.
    let lying = {
        let r = burn_pack::Reader::from_bytes(burn::tensor::Bytes::from_bytes_vec(good.clone()))
            .unwrap();
        let mut meta = r.metadata().clone();
        meta.insert("edgeflow.window".into(), "20".into());
        meta.iter()
            .fold(
                burn_pack::Writer::new(r.into_tensors().unwrap()),
                |w, (k, v)| w.with_metadata(k, v),
            )
            .into_bytes()
            .unwrap()
            .to_vec()
    };
    check(&lying, "");
}

/// The naive scorer: one key at a time, one window at a time, straight through burn.
fn naive_scores(model: &AnomalyModel, rows: &[(i64, String, f64)]) -> Vec<(String, i64, i64, f64)> {
    let w = model.shape().window;
    let warmup = u64::from(model.calibration().warmup_windows);
    let mut devices: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    devices.sort();
    devices.dedup();
    let mut out = Vec::new();
    for d in devices {
        let mine: Vec<&(i64, String, f64)> = rows.iter().filter(|r| r.1 == d).collect();
        let mut baseline = Baseline::default();
        for chunk in mine.chunks_exact(w) {
            let values: Vec<f64> = chunk.iter().map(|r| r.2).collect();
            if baseline.windows() < warmup {
                baseline.update(&values);
                continue;
            }
            let mut z = vec![0.0f32; w];
            baseline.standardize(&values, &mut z);
            let score = model.score(model.errors(&z, false).unwrap()[0]);
            baseline.update(&values);
            out.push((d.to_owned(), chunk[0].0, chunk[w - 1].0, score));
        }
    }
    out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    out
}

fn collect(
    op: &mut InferOperator,
    rows: &[(i64, String, f64)],
    chunk: usize,
) -> Vec<(String, i64, i64, f64)> {
    let mut out = Vec::new();
    for part in rows.chunks(chunk) {
        if let Some(b) = op.process(&batch(part)).unwrap() {
            let end = b.column(0).as_primitive::<TimestampMillisecondType>();
            let dev = b.column(1).as_string::<i32>();
            let start = b.column(2).as_primitive::<TimestampMillisecondType>();
            let score = b.column(3).as_primitive::<Float64Type>();
            for i in 0..b.num_rows() {
                out.push((
                    dev.value(i).to_owned(),
                    start.value(i),
                    end.value(i),
                    score.value(i),
                ));
            }
        }
    }
    out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    out
}

fn with_anomalies() -> Vec<(i64, String, f64)> {
    let mut rows = readings(6, 0, 1500, 2);
    for r in &mut rows {
        let t = r.0 / 10;
        // A spike on d1, a stuck d2, a level shift on d3.
        if r.1 == "d1" && t == 700 {
            r.2 += 25.0;
        }
        if r.1 == "d2" && (900..1000).contains(&t) {
            r.2 = 20.5;
        }
        if r.1 == "d3" && (1100..1300).contains(&t) {
            r.2 += 8.0;
        }
    }
    rows
}

#[test]
fn operator_matches_the_naive_scorer_in_any_batching() {
    let model = shared_model();
    let rows = with_anomalies();
    let expected = naive_scores(&model, &rows);
    assert!(expected.len() >= 6 * 70, "{}", expected.len());
    for (chunk, parallel) in [(rows.len(), true), (997, true), (61, false), (7, false)] {
        let mut op = device_operator(model.clone(), None, InferEmit::All);
        if !parallel {
            op = op.serial();
        }
        let got = collect(&mut op, &rows, chunk);
        assert_eq!(got.len(), expected.len(), "chunk {chunk}");
        for (g, e) in got.iter().zip(&expected) {
            assert_eq!((&g.0, g.1, g.2), (&e.0, e.1, e.2), "chunk {chunk}");
            assert!(
                (g.3 - e.3).abs() <= 1e-9 * e.3.abs().max(1.0),
                "chunk {chunk}: {g:?} vs {e:?}"
            );
        }
        assert_eq!(op.windows_scored() as usize, expected.len());
    }
}

#[test]
fn injected_anomalies_are_exceptions_and_normal_devices_are_quiet() {
    let model = shared_model();
    let rows = with_anomalies();
    let mut op = device_operator(model, None, InferEmit::Exceptions);
    let got = collect(&mut op, &rows, 512);
    let hit = |dev: &str, from: i64, to: i64| {
        got.iter()
            .any(|g| g.0 == dev && g.2 >= from * 10 && g.1 <= to * 10)
    };
    assert!(hit("d1", 700, 700), "spike missed: {got:?}");
    assert!(hit("d2", 900, 999), "stuck signal missed: {got:?}");
    assert!(hit("d3", 1100, 1299), "level shift missed: {got:?}");
    let quiet = got
        .iter()
        .filter(|g| ["d0", "d4", "d5"].contains(&g.0.as_str()))
        .count();
    let windows = 3 * (1500 / 16);
    assert!(
        quiet * 50 < windows,
        "{quiet} false alarms in {windows} normal windows"
    );
}

#[test]
fn threshold_and_model_can_be_replaced_while_running() {
    let model = shared_model();
    let rows = with_anomalies();
    let (first, second) = rows.split_at(rows.len() / 2);
    let mut op = device_operator(model.clone(), None, InferEmit::Exceptions);
    collect(&mut op, first, 500);
    assert_eq!(op.threshold(), model.calibration().threshold);
    assert!(op.set_threshold(Some(-1.0)).is_err());
    assert!(op.set_threshold(Some(f64::NAN)).is_err());
    op.set_threshold(Some(1e-6)).unwrap();
    let windows_before = op.windows_scored();
    let all = collect(&mut op, second, 500);
    // With a tiny threshold every scored window is an exception.
    assert_eq!(all.len() as u64, op.windows_scored() - windows_before);
    op.set_threshold(None).unwrap();
    assert_eq!(op.threshold(), model.calibration().threshold);

    // A model with another window length takes over from the next window.
    let wider = Arc::new(trained(&TrainConfig {
        shape: ModelShape {
            window: 24,
            hidden: 8,
            latent: 3,
        },
        ..small_config()
    }));
    op.set_model(wider.clone());
    op.set_threshold(Some(1e-6)).unwrap();
    let later = readings(6, 1500, 240, 3);
    let got = collect(&mut op, &later, 100);
    assert_eq!(
        got.len(),
        6 * 10,
        "240 readings per device = 10 windows of 24"
    );
    assert!(got.iter().all(|g| g.2 - g.1 == 23 * 10));
    assert!(Arc::ptr_eq(op.model(), &wider));
}

#[test]
fn nan_readings_make_an_exception_and_nulls_are_skipped() {
    let model = shared_model();
    let mut op = device_operator(model, None, InferEmit::Exceptions);
    let mut rows = readings(1, 0, 16 * 20, 4);
    rows[16 * 18 + 3].2 = f64::NAN;
    let got = op.process(&batch(&rows)).unwrap().unwrap();
    let reasons = got.column(4).as_string::<i32>();
    let nan_rows: Vec<usize> = (0..got.num_rows())
        .filter(|&i| reasons.value(i).contains("1 NaN readings"))
        .collect();
    assert_eq!(nan_rows.len(), 1, "{got:?}");

    // Nulls take no slot: 16 valid readings among nulls make exactly one window.
    let schema = schema();
    let mut op = device_operator(shared_model(), Some(1e-6), InferEmit::All);
    let values: Vec<Option<f64>> = (0..16 * 25 + 10)
        .map(|i| (i % 5 != 0).then_some(1.0 + (i % 3) as f64))
        .collect();
    let b = RecordBatch::try_new(
        schema.to_arrow(),
        vec![
            Arc::new(TimestampMillisecondArray::from(
                (0..values.len() as i64).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(vec!["x"; values.len()])),
            Arc::new(Float64Array::from(values.clone())),
        ],
    )
    .unwrap();
    let out = op.process(&b).unwrap();
    let valid = values.iter().flatten().count();
    let scored = valid / 16 - 16;
    assert_eq!(out.map_or(0, |b| b.num_rows()), scored);
    assert_eq!(op.keys(), 1);
}

#[test]
fn bad_settings_are_user_errors() {
    let model = shared_model();
    let new = |key: &[&str], value: &str, time: &str, threshold| {
        let key: Vec<String> = key.iter().map(|s| s.to_string()).collect();
        InferOperator::new(
            &schema(),
            &key,
            value,
            time,
            model.clone(),
            threshold,
            InferEmit::All,
        )
        .map(|_| ())
        .unwrap_err()
        .to_string()
    };
    assert!(new(&["device"], "nope", "ts", None).contains("value field \"nope\""));
    assert!(new(&["device"], "device", "ts", None).contains("must be i64 or f64"));
    assert!(new(&["device"], "value", "value", None).contains("timestamp_ms"));
    assert!(new(&["site"], "value", "ts", None).contains("key field \"site\""));
    assert!(new(&["device"], "value", "ts", Some(0.0)).contains("> 0"));
}

#[test]
fn the_simd_dense_kernel_computes_the_same_network() {
    let model = shared_model();
    let w = model.shape().window;
    let windows: Vec<f32> = (0..w * 300)
        .map(|i| ((i * 37 % 101) as f32 / 25.0 - 2.0) * if i % 7 == 0 { 3.0 } else { 1.0 })
        .collect();
    let burn = model.errors(&windows, false).unwrap();
    let kernel = model.to_kernel().unwrap();
    let out = kernel
        .forward(crate::kernels::Exec::new(), &windows)
        .unwrap();
    for (row, expected) in burn.iter().enumerate() {
        let x = &windows[row * w..(row + 1) * w];
        let y = &out[row * w..(row + 1) * w];
        let e = x.iter().zip(y).map(|(a, b)| (a - b) * (a - b)).sum::<f32>() / w as f32;
        assert!(
            (e - expected).abs() <= 1e-4 * expected.max(1.0),
            "row {row}: {e} vs {expected}"
        );
    }
}
