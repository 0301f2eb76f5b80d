//! Criterion bench of the window aggregator: push + advance of 8192-row batches, 1 s tumbling
//! window, count/min/max/mean keyed by [device, sensor] over 1000 devices x 2 sensors, against a
//! naive per-row `HashMap<(String, String), acc>` baseline in the same group; then the same keyed
//! by [site] (10 sites, ~800 rows per group per batch: count/min/max go through the SIMD kernel)
//! and with no key (one group), against the same baseline keyed the same way.

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::sync::Arc;

use arrow::array::{
    Array, AsArray, Float64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use arrow::datatypes::{Float64Type, TimestampMillisecondType};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use edgeflow_operators::schema::{EventSchema, FieldType};
use edgeflow_operators::window::{AggregateFn, AggregateSpec, WindowAggregator, WindowSpec};

const ROWS_PER_BATCH: usize = 8192;
const BATCHES: usize = 64;
const DEVICES: usize = 1000;
const SENSORS: usize = 2;
/// Event-time rate of the generated stream: 200k events per second of event time, so each
/// 1 s window holds ~200k rows (~24 batches) and the run closes ~2-3 windows.
const EVENTS_PER_SEC: i64 = 200_000;

fn schema() -> EventSchema {
    EventSchema::new(vec![
        ("ts".into(), FieldType::TimestampMs),
        ("device".into(), FieldType::String),
        ("site".into(), FieldType::String),
        ("sensor".into(), FieldType::String),
        ("value".into(), FieldType::F64),
    ])
}

fn batches() -> Vec<RecordBatch> {
    let devices: Vec<String> = (0..DEVICES).map(|d| format!("dev-{d:04}")).collect();
    let sites: Vec<String> = (0..DEVICES)
        .map(|d| format!("site-{:02}", d % 10))
        .collect();
    let sensors: Vec<String> = (0..SENSORS).map(|s| format!("sensor-{s}")).collect();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..BATCHES)
        .map(|b| {
            let base = (b * ROWS_PER_BATCH) as i64;
            let mut ts = Vec::with_capacity(ROWS_PER_BATCH);
            let (mut dev, mut site, mut sensor, mut value) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for i in 0..ROWS_PER_BATCH {
                let series = (next() as usize) % (DEVICES * SENSORS);
                let (d, s) = (series / SENSORS, series % SENSORS);
                ts.push((base + i as i64) * 1000 / EVENTS_PER_SEC);
                dev.push(devices[d].as_str());
                site.push(sites[d].as_str());
                sensor.push(sensors[s].as_str());
                value.push((next() % 10_000) as f64 / 100.0);
            }
            RecordBatch::try_new(
                schema().to_arrow(),
                vec![
                    Arc::new(TimestampMillisecondArray::from(ts)),
                    Arc::new(StringArray::from(dev)),
                    Arc::new(StringArray::from(site)),
                    Arc::new(StringArray::from(sensor)),
                    Arc::new(Float64Array::from(value)),
                ],
            )
            .expect("bench batch")
        })
        .collect()
}

fn run_window(batches: &[RecordBatch], key: &[&str]) -> usize {
    let aggs: Vec<AggregateSpec> = ["count", "min", "max", "mean"]
        .iter()
        .map(|f| AggregateSpec {
            func: AggregateFn::from_name(f).expect("known aggregate"),
            field: "value".into(),
            output: (*f).into(),
        })
        .collect();
    let mut w = WindowAggregator::new(
        &schema(),
        "ts",
        &key.iter().map(|k| (*k).to_string()).collect::<Vec<_>>(),
        &aggs,
        WindowSpec::tumbling(1000),
    )
    .expect("window");
    let mut out = 0;
    for b in batches {
        w.push(b).expect("push");
        let wm = b
            .column(0)
            .as_primitive::<TimestampMillisecondType>()
            .value(0);
        if let Some(r) = w.advance(wm).expect("advance") {
            out += r.num_rows();
        }
    }
    if let Some(r) = w.advance(i64::MAX).expect("advance") {
        out += r.num_rows();
    }
    out
}

#[derive(Default)]
struct Acc {
    count: i64,
    min: f64,
    max: f64,
    sum: f64,
}

/// The naive baseline: one `HashMap<K, Acc>` per window, updated row by row; `key` reads row
/// `i`'s key from the (device, site, sensor) columns.
fn run_naive<K: std::hash::Hash + Ord>(
    batches: &[RecordBatch],
    key: impl Fn([&StringArray; 3], usize) -> K,
) -> usize {
    let mut windows: BTreeMap<i64, HashMap<K, Acc>> = BTreeMap::new();
    let mut out = 0;
    for b in batches {
        let ts = b.column(0).as_primitive::<TimestampMillisecondType>();
        let strings = [1, 2, 3].map(|c| b.column(c).as_string::<i32>());
        let value = b.column(4).as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            let start = ts.value(i).div_euclid(1000) * 1000;
            let acc = windows
                .entry(start)
                .or_default()
                .entry(key(strings, i))
                .or_insert(Acc {
                    min: f64::INFINITY,
                    max: f64::NEG_INFINITY,
                    ..Acc::default()
                });
            if value.is_valid(i) {
                let v = value.value(i);
                acc.count += 1;
                acc.sum += v;
                acc.min = acc.min.min(v);
                acc.max = acc.max.max(v);
            }
        }
        let wm = ts.value(0);
        while let Some(e) = windows.first_entry() {
            if e.key() + 1000 > wm {
                break;
            }
            let groups = e.remove();
            let mut rows: Vec<_> = groups
                .into_iter()
                .map(|(k, a)| (k, a.count, a.min, a.max, a.sum / a.count as f64))
                .collect();
            rows.sort_by(|a, b| a.0.cmp(&b.0));
            out += black_box(rows).len();
        }
    }
    out + windows.values().map(HashMap::len).sum::<usize>()
}

/// The key of the first group: (device, sensor).
fn device_sensor([dev, _, sensor]: [&StringArray; 3], i: usize) -> (String, String) {
    (dev.value(i).to_string(), sensor.value(i).to_string())
}

/// No key: one group per window.
fn no_key(_: [&StringArray; 3], _: usize) {}

/// The key of the second group: site.
fn site([_, site, _]: [&StringArray; 3], i: usize) -> String {
    site.value(i).to_string()
}

fn bench(c: &mut Criterion) {
    let batches = batches();
    let rows = (ROWS_PER_BATCH * BATCHES) as u64;
    let by_series = ["device", "sensor"];
    assert_eq!(
        run_window(&batches, &by_series),
        run_naive(&batches, device_sensor),
        "same number of groups"
    );
    let mut g = c.benchmark_group("window_tumbling_1s_count_min_max_mean");
    g.throughput(Throughput::Elements(rows));
    g.sample_size(20);
    g.bench_function("window_aggregator", |b| {
        b.iter(|| run_window(black_box(&batches), &by_series))
    });
    g.bench_function("naive_hashmap_per_row", |b| {
        b.iter(|| run_naive(black_box(&batches), device_sensor))
    });
    g.finish();

    few_groups(c, &batches, "by_site", &["site"], site);
    few_groups(c, &batches, "no_key", &[], no_key);
}

/// The aggregator keyed by `key` against the naive baseline keyed by `naive_key`.
fn few_groups<K: std::hash::Hash + Ord>(
    c: &mut Criterion,
    batches: &[RecordBatch],
    name: &str,
    key: &[&str],
    naive_key: impl Fn([&StringArray; 3], usize) -> K + Copy,
) {
    assert_eq!(
        run_window(batches, key),
        run_naive(batches, naive_key),
        "same number of groups"
    );
    let mut g = c.benchmark_group(format!("window_tumbling_1s_count_min_max_mean_{name}"));
    g.throughput(Throughput::Elements((ROWS_PER_BATCH * BATCHES) as u64));
    g.sample_size(20);
    g.bench_function("window_aggregator", |b| {
        b.iter(|| run_window(black_box(batches), key))
    });
    g.bench_function("naive_hashmap_per_row", |b| {
        b.iter(|| run_naive(black_box(batches), naive_key))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
