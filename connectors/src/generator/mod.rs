//! The deterministic synthetic sensor fleet: readings of many devices, with labelled anomalies.
//!
//! Every (device, sensor) pair is a *channel* with its own random generator seeded from the
//! options' seed and the pair's indices, so a reading's value never depends on how devices are
//! split across workers: N workers together produce exactly the rows one worker produces.
//!
//! Time: device `d` emits one reading per sensor every `1000 / rate_per_device` ms. Devices are
//! spread evenly inside each interval (device `d` at tick `k` is at slot `k * devices + d`), so
//! the fleet's readings are in event-time order and windows see a steady flow. Rows are produced
//! in the order (tick, device, sensor); `disorder_ms` then moves each timestamp back by a random
//! amount, which the watermark accounts for.
//!
//! Values: per-channel base level + periodic component (period 1..5 min, from a sine table) +
//! slow wander (period 1..3 h) + Gaussian noise, plus anomaly episodes (spike, level shift,
//! stuck, drift) that start with probability `anomaly_rate` per reading.
//!
//! `signal.rs` holds the signal model (one `Channel` per device and sensor, and
//! the anomaly shapes); this file the fleet's options and the batch producer.

mod signal;

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use edgeflow_operators::schema::{EventSchema, FieldType};
use rand::RngExt;

use crate::error::{ConnectorError, Result};
pub use signal::AnomalyShape;
use signal::{Channel, SIN_BITS};

/// What the generator produces; see the module docs for the signal model.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratorOptions {
    /// Seed of every random choice (default 1).
    pub seed: u64,
    /// Number of devices (default 100), named `dev-0001`, `dev-0002`, ...
    pub devices: u32,
    /// Number of sites (default 10), named `site-01`, ...; device `d` (0-based) is at site `d % sites`.
    pub sites: u32,
    /// Sensor names (default `["vibration", "temperature"]`). `vibration`, `temperature`,
    /// `pressure`, `humidity` and `current` get realistic levels; other names level 100 +- 10.
    pub sensors: Vec<String>,
    /// Readings per second per device per sensor (default 10.0).
    pub rate_per_device: f64,
    /// Event time of the first reading in ms since the epoch (default 2026-01-01T00:00:00Z).
    pub start_ms: i64,
    /// Probability per reading that an anomaly episode starts (default 0.0005).
    pub anomaly_rate: f64,
    /// The shapes episodes are drawn from, uniformly (default all).
    pub anomaly_shapes: Vec<AnomalyShape>,
    /// Adds a column `anomaly: string` with the shape name, null when normal (default false).
    pub ground_truth: bool,
    /// Maximum out-of-orderness: each timestamp moves back by U[0, disorder_ms] (default 0).
    pub disorder_ms: i64,
    /// Sites (0-based) whose devices drift slowly upward (default none).
    pub drift_sites: Vec<u32>,
    /// Their drift, in standard deviations of the noise per minute (default 0.1).
    pub drift_per_minute: f64,
}

impl Default for GeneratorOptions {
    fn default() -> Self {
        GeneratorOptions {
            seed: 1,
            devices: 100,
            sites: 10,
            sensors: vec!["vibration".into(), "temperature".into()],
            rate_per_device: 10.0,
            start_ms: 1_767_225_600_000,
            anomaly_rate: 0.0005,
            anomaly_shapes: AnomalyShape::ALL.to_vec(),
            ground_truth: false,
            disorder_ms: 0,
            drift_sites: Vec::new(),
            drift_per_minute: 0.1,
        }
    }
}

/// Largest batch `next_batch` builds, so string offsets stay far from `i32::MAX`.
const MAX_BATCH_ROWS: usize = 1 << 24;

/// A string column built from precomputed names: offsets and bytes, no per-row allocation.
struct StrColumn {
    offsets: Vec<i32>,
    bytes: Vec<u8>,
}

impl StrColumn {
    fn with_capacity(rows: usize, bytes_per_row: usize) -> Self {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        StrColumn {
            offsets,
            bytes: Vec::with_capacity(rows * bytes_per_row),
        }
    }

    #[inline]
    fn push(&mut self, s: &[u8]) {
        self.bytes.extend_from_slice(s);
        // Fits: batches are capped at MAX_BATCH_ROWS rows of short names.
        self.offsets.push(self.bytes.len() as i32);
    }

    fn finish(self, nulls: Option<NullBuffer>) -> ArrayRef {
        // Offsets start at 0 and grow by construction; the bytes are concatenated `&str`s and
        // `nulls` (if any) has one entry per pushed row: neither call can fail.
        let offsets = OffsetBuffer::new(ScalarBuffer::from(self.offsets));
        let array = StringArray::try_new(offsets, Buffer::from_vec(self.bytes), nulls)
            .expect("offsets and UTF-8 are valid by construction");
        Arc::new(array)
    }
}

/// A worker's share of the synthetic sensor fleet; see the module docs.
#[derive(Debug, Clone)]
pub struct Generator {
    opts: GeneratorOptions,
    schema: arrow::datatypes::SchemaRef,
    /// The devices (0-based indices) of this worker, ascending.
    devices: Vec<u32>,
    device_names: Vec<String>,
    site_names: Vec<String>,
    /// channels[j * sensors + s]: device `devices[j]`, sensor `s`.
    channels: Vec<Channel>,
    sin: Vec<f64>,
    /// Interval between two slots (a slot is one device's tick): interval / devices.
    slot_ms: f64,
    /// Cursor: the next reading is (tick, devices[dev], sensor).
    tick: u64,
    dev: usize,
    sensor: usize,
    /// Readings with a fleet-wide index >= limit are never produced.
    limit: u64,
}

impl Generator {
    /// The generator's output schema: `ts: timestamp_ms, device: string, site: string,
    /// sensor: string, value: f64`, plus `anomaly: string` when `ground_truth` is set.
    pub fn schema(opts: &GeneratorOptions) -> EventSchema {
        let mut fields = vec![
            ("ts".to_string(), FieldType::TimestampMs),
            ("device".to_string(), FieldType::String),
            ("site".to_string(), FieldType::String),
            ("sensor".to_string(), FieldType::String),
            ("value".to_string(), FieldType::F64),
        ];
        if opts.ground_truth {
            fields.push(("anomaly".to_string(), FieldType::String));
        }
        EventSchema::new(fields)
    }

    /// A generator producing the share of devices of `worker` out of `workers` (devices `d`
    /// with `d % workers == worker`), so N workers together produce exactly what 1 worker
    /// produces. A worker with no devices is exhausted from the start.
    pub fn new(opts: GeneratorOptions, worker: usize, workers: usize) -> Result<Self> {
        validate(&opts, worker, workers)?;
        let interval_ms = 1000.0 / opts.rate_per_device;
        let devices: Vec<u32> = (0..opts.devices)
            .filter(|d| *d as usize % workers == worker)
            .collect();
        let device_names = devices
            .iter()
            .map(|d| format!("dev-{:04}", d + 1))
            .collect();
        let site_names = devices
            .iter()
            .map(|d| format!("site-{:02}", d % opts.sites + 1))
            .collect();
        let mut channels = Vec::with_capacity(devices.len() * opts.sensors.len());
        for &d in &devices {
            for s in 0..opts.sensors.len() {
                channels.push(Channel::new(&opts, d, s, interval_ms));
            }
        }
        let n = 1usize << SIN_BITS;
        let sin = (0..n)
            .map(|i| (std::f64::consts::TAU * i as f64 / n as f64).sin())
            .collect();
        Ok(Generator {
            schema: Self::schema(&opts).to_arrow(),
            slot_ms: interval_ms / f64::from(opts.devices),
            opts,
            devices,
            device_names,
            site_names,
            channels,
            sin,
            tick: 0,
            dev: 0,
            sensor: 0,
            limit: u64::MAX,
        })
    }

    /// Stops after `total` readings across all workers.
    ///
    /// The limit is exact: the union of every worker's output equals the first `total` rows of
    /// the 1-worker run (rows are numbered fleet-wide in (tick, device, sensor) order and each
    /// worker keeps its rows numbered below `total`).
    pub fn set_limit(&mut self, total: u64) {
        self.limit = total;
    }

    /// The fleet-wide number of the reading at the cursor.
    fn global_index(&self) -> u64 {
        match self.devices.get(self.dev) {
            Some(&d) => self
                .tick
                .saturating_mul(u64::from(self.opts.devices))
                .saturating_add(u64::from(d))
                .saturating_mul(self.opts.sensors.len() as u64)
                .saturating_add(self.sensor as u64),
            None => u64::MAX,
        }
    }

    fn exhausted(&self) -> bool {
        self.global_index() >= self.limit
    }

    /// Event time of the reading at the cursor, before jitter.
    fn nominal_ts(&self, tick: u64, device: u32) -> i64 {
        let slot = tick as f64 * f64::from(self.opts.devices) + f64::from(device);
        self.opts.start_ms + (slot * self.slot_ms) as i64
    }

    /// Event time of the next reading before jitter (for real-time pacing by the caller), or
    /// `i64::MAX` once the generator is exhausted.
    pub fn next_event_time(&self) -> i64 {
        if self.exhausted() {
            return i64::MAX;
        }
        self.nominal_ts(self.tick, self.devices[self.dev])
    }

    /// Low watermark: every reading produced from now on has `ts >= watermark()`; `i64::MAX`
    /// once the generator is exhausted.
    pub fn watermark(&self) -> i64 {
        match self.next_event_time() {
            i64::MAX => i64::MAX,
            t => t - self.opts.disorder_ms,
        }
    }

    /// Next batch of up to `max_rows` readings (at least 1, at most 2^24), in event-time order
    /// apart from the jitter, or `None` once the limit is reached.
    pub fn next_batch(&mut self, max_rows: usize) -> Option<RecordBatch> {
        if self.exhausted() {
            return None;
        }
        // `max_rows == 0` is read as 1: `None` must keep meaning "exhausted".
        let cap = max_rows.clamp(1, MAX_BATCH_ROWS);
        let sensors = self.opts.sensors.len();
        let sensor_names: Vec<&[u8]> = self.opts.sensors.iter().map(|s| s.as_bytes()).collect();
        let mut ts = Vec::with_capacity(cap);
        let mut values = Vec::with_capacity(cap);
        let mut device_col = StrColumn::with_capacity(cap, 8);
        let mut site_col = StrColumn::with_capacity(cap, 7);
        let mut sensor_col = StrColumn::with_capacity(cap, 11);
        let truth = self.opts.ground_truth;
        let mut anomaly_col = StrColumn::with_capacity(if truth { cap } else { 0 }, 0);
        let mut anomaly_valid: Vec<bool> = Vec::with_capacity(if truth { cap } else { 0 });
        let rate = self.opts.anomaly_rate;
        let disorder = self.opts.disorder_ms;
        let devices = u64::from(self.opts.devices);

        let mut rows = 0;
        'outer: while rows < cap {
            let d = self.devices[self.dev];
            let group = (self
                .tick
                .saturating_mul(devices)
                .saturating_add(u64::from(d)))
            .saturating_mul(sensors as u64);
            let t = self.nominal_ts(self.tick, d);
            let device_name = self.device_names[self.dev].as_bytes();
            let site_name = self.site_names[self.dev].as_bytes();
            while self.sensor < sensors {
                if rows == cap {
                    break 'outer;
                }
                if group.saturating_add(self.sensor as u64) >= self.limit {
                    break 'outer;
                }
                let channel = &mut self.channels[self.dev * sensors + self.sensor];
                let (value, label) = channel.next(&self.sin, &self.opts.anomaly_shapes, rate);
                let jitter = if disorder > 0 {
                    channel.rng.random_range(0..=disorder)
                } else {
                    0
                };
                ts.push(t - jitter);
                values.push(value);
                device_col.push(device_name);
                site_col.push(site_name);
                sensor_col.push(sensor_names[self.sensor]);
                if truth {
                    anomaly_col.push(label.map_or(&b""[..], |s| s.name().as_bytes()));
                    anomaly_valid.push(label.is_some());
                }
                rows += 1;
                self.sensor += 1;
            }
            self.sensor = 0;
            self.dev += 1;
            if self.dev == self.devices.len() {
                self.dev = 0;
                self.tick += 1;
            }
        }
        if rows == 0 {
            return None;
        }
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(TimestampMillisecondArray::new(ScalarBuffer::from(ts), None)),
            device_col.finish(None),
            site_col.finish(None),
            sensor_col.finish(None),
            Arc::new(Float64Array::new(ScalarBuffer::from(values), None)),
        ];
        if truth {
            columns.push(anomaly_col.finish(Some(NullBuffer::from(anomaly_valid))));
        }
        // Columns match the schema by construction (same order, types and lengths).
        Some(
            RecordBatch::try_new(self.schema.clone(), columns)
                .expect("generator columns match its schema"),
        )
    }
}

fn validate(opts: &GeneratorOptions, worker: usize, workers: usize) -> Result<()> {
    let err = |m: String| Err(ConnectorError::User(format!("generator: {m}")));
    if workers == 0 || worker >= workers {
        return Err(ConnectorError::Internal(format!(
            "generator worker {worker} out of {workers} workers"
        )));
    }
    if opts.devices == 0 {
        return err("devices must be at least 1".into());
    }
    if opts.sites == 0 {
        return err("sites must be at least 1".into());
    }
    if opts.sensors.is_empty() {
        return err("sensors must list at least one sensor".into());
    }
    if !(opts.rate_per_device.is_finite() && opts.rate_per_device > 0.0) {
        return err(format!(
            "rate_per_device must be a positive number, got {}",
            opts.rate_per_device
        ));
    }
    if !(0.0..=1.0).contains(&opts.anomaly_rate) {
        return err(format!(
            "anomaly_rate must be in [0, 1], got {}",
            opts.anomaly_rate
        ));
    }
    if opts.anomaly_rate > 0.0 && opts.anomaly_shapes.is_empty() {
        return err("anomaly_shapes is empty but anomaly_rate > 0".into());
    }
    if opts.disorder_ms < 0 {
        return err(format!(
            "disorder_ms must be >= 0, got {}",
            opts.disorder_ms
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, TimestampMillisecondType};

    /// One row as plain values: (ts, device, site, sensor, value bits, anomaly).
    type Row = (i64, String, String, String, u64, Option<String>);

    fn rows(batch: &RecordBatch) -> Vec<Row> {
        let ts = batch.column(0).as_primitive::<TimestampMillisecondType>();
        let s = |i: usize| batch.column(i).as_string::<i32>();
        let v = batch.column(4).as_primitive::<Float64Type>();
        let anomaly = (batch.num_columns() > 5).then(|| s(5));
        (0..batch.num_rows())
            .map(|r| {
                (
                    ts.value(r),
                    s(1).value(r).to_string(),
                    s(2).value(r).to_string(),
                    s(3).value(r).to_string(),
                    v.value(r).to_bits(),
                    anomaly.and_then(|a| a.is_valid(r).then(|| a.value(r).to_string())),
                )
            })
            .collect()
    }

    fn drain(g: &mut Generator, batch_rows: usize) -> Vec<Row> {
        let mut out = Vec::new();
        while let Some(b) = g.next_batch(batch_rows) {
            assert!(b.num_rows() <= batch_rows);
            out.extend(rows(&b));
        }
        out
    }

    fn busy_options() -> GeneratorOptions {
        GeneratorOptions {
            devices: 17,
            sites: 4,
            sensors: vec!["vibration".into(), "temperature".into(), "odd".into()],
            anomaly_rate: 0.01,
            ground_truth: true,
            disorder_ms: 40,
            drift_sites: vec![1],
            ..GeneratorOptions::default()
        }
    }

    #[test]
    fn one_worker_equals_the_union_of_three_workers() {
        let total = 5_003;
        let mut one = Generator::new(busy_options(), 0, 1).unwrap();
        one.set_limit(total);
        let one_rows = drain(&mut one, 333);
        assert_eq!(one_rows.len() as u64, total);

        // The limited run is exactly the prefix of an unlimited run.
        let mut unlimited = Generator::new(busy_options(), 0, 1).unwrap();
        let mut prefix = Vec::new();
        while prefix.len() < total as usize {
            prefix.extend(rows(&unlimited.next_batch(1000).unwrap()));
        }
        prefix.truncate(total as usize);
        assert_eq!(one_rows, prefix);

        let mut union = Vec::new();
        for w in 0..3 {
            let mut g = Generator::new(busy_options(), w, 3).unwrap();
            g.set_limit(total);
            let part = drain(&mut g, 101);
            assert!(part.iter().all(|r| {
                let d: usize = r.1["dev-".len()..].parse().unwrap();
                (d - 1) % 3 == w
            }));
            union.extend(part);
        }
        let mut sorted_one = one_rows;
        sorted_one.sort();
        union.sort();
        assert_eq!(sorted_one, union);
    }

    #[test]
    fn same_seed_same_batches_and_another_seed_other_values() {
        let run = |seed| {
            let mut g = Generator::new(
                GeneratorOptions {
                    seed,
                    ..busy_options()
                },
                0,
                1,
            )
            .unwrap();
            (0..5)
                .map(|_| g.next_batch(777).unwrap())
                .collect::<Vec<_>>()
        };
        let (a, b, c) = (run(7), run(7), run(8));
        assert_eq!(a, b);
        assert_ne!(rows(&a[0]), rows(&c[0]));
    }

    #[test]
    fn timestamps_spread_devices_evenly_and_names_follow_the_convention() {
        // 100 devices at 10/s: one device every millisecond.
        let opts = GeneratorOptions {
            sensors: vec!["vibration".into()],
            anomaly_rate: 0.0,
            ..GeneratorOptions::default()
        };
        let start = opts.start_ms;
        let mut g = Generator::new(opts, 0, 1).unwrap();
        let r = rows(&g.next_batch(250).unwrap());
        for (i, row) in r.iter().enumerate() {
            assert_eq!(row.0, start + i as i64);
        }
        assert_eq!((r[0].1.as_str(), r[0].2.as_str()), ("dev-0001", "site-01"));
        assert_eq!(
            (r[12].1.as_str(), r[12].2.as_str()),
            ("dev-0013", "site-03")
        );
        assert_eq!(r[100].1, "dev-0001");
        assert_eq!(g.next_event_time(), start + 250);
    }

    #[test]
    fn values_sit_around_each_sensors_level() {
        let mut g = Generator::new(
            GeneratorOptions {
                anomaly_rate: 0.0,
                ..GeneratorOptions::default()
            },
            0,
            1,
        )
        .unwrap();
        let r = drain_n(&mut g, 20_000);
        for (sensor, lo, hi) in [("vibration", 0.6, 1.4), ("temperature", 50.0, 70.0)] {
            let v: Vec<f64> = r
                .iter()
                .filter(|x| x.3 == sensor)
                .map(|x| f64::from_bits(x.4))
                .collect();
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            assert!(mean > lo && mean < hi, "{sensor} mean {mean}");
            assert!(v.iter().all(|x| x.is_finite()));
        }
    }

    fn drain_n(g: &mut Generator, n: usize) -> Vec<Row> {
        let mut out = Vec::new();
        while out.len() < n {
            out.extend(rows(&g.next_batch(4096).unwrap()));
        }
        out
    }

    #[test]
    fn anomalies_of_each_shape_appear_with_ground_truth() {
        let sigma = 0.05; // vibration noise
        let mut g = Generator::new(
            GeneratorOptions {
                devices: 20,
                sensors: vec!["vibration".into()],
                anomaly_rate: 0.002,
                ground_truth: true,
                ..GeneratorOptions::default()
            },
            0,
            1,
        )
        .unwrap();
        let r = drain_n(&mut g, 400_000);
        let mut seen = std::collections::HashMap::new();
        for dev in 1..=20 {
            let name = format!("dev-{dev:04}");
            let ch: Vec<&Row> = r.iter().filter(|x| x.1 == name).collect();
            let v = |i: usize| f64::from_bits(ch[i].4);
            let label = |i: usize| ch[i].5.as_deref();
            let mut i = 1;
            while i < ch.len() {
                let Some(shape) = label(i) else {
                    i += 1;
                    continue;
                };
                let start = i;
                while i < ch.len() && label(i) == Some(shape) {
                    i += 1;
                }
                let len = i - start;
                *seen.entry(shape.to_string()).or_insert(0) += 1;
                // Mean of W readings from `from`, if they are all normal (no other episode).
                const W: usize = 10;
                let calm = |from: usize| {
                    (from + W <= ch.len() && (from..from + W).all(|j| label(j).is_none()))
                        .then(|| (from..from + W).map(v).sum::<f64>() / W as f64)
                };
                let inside = |from: usize| (from..from + W).map(v).sum::<f64>() / W as f64;
                let before = start.checked_sub(W).and_then(calm);
                let after = calm(i);
                match shape {
                    "spike" => {
                        // Two episodes of one shape may follow each other (rarely).
                        assert!(len <= 3, "spike of {len} readings");
                        if let (Some(_), Some(_)) = (before, after) {
                            let around = (v(start - 1) + v(i)) / 2.0;
                            assert!(v(start) - around > 3.0 * sigma, "spike too small");
                        }
                    }
                    "stuck" => {
                        assert!((100..=2000).contains(&len) || i == ch.len());
                        let last = v(start - 1);
                        assert!((start..i).all(|j| v(j) == last), "stuck value moved");
                    }
                    "level_shift" => {
                        assert!((200..=4000).contains(&len) || i == ch.len());
                        if let Some(b) = before {
                            assert!(inside(start) - b > 2.5 * sigma, "level shift too small");
                        }
                        if let Some(a) = after {
                            assert!(inside(i - W) - a > 2.5 * sigma, "level shift too small");
                        }
                    }
                    "drift" => {
                        assert!((200..=4000).contains(&len) || i == ch.len());
                        if let Some(b) = before {
                            let step = inside(start) - b;
                            assert!(step.abs() < 3.0 * sigma, "drift starts with a jump");
                        }
                        if let Some(a) = after {
                            assert!(inside(i - W) - a > 5.0 * sigma, "drift too small");
                        }
                    }
                    other => panic!("unknown shape {other}"),
                }
            }
        }
        for shape in AnomalyShape::ALL {
            assert!(
                seen.get(shape.name()).copied().unwrap_or(0) > 0,
                "no {shape:?}: {seen:?}"
            );
        }
    }

    #[test]
    fn no_anomalies_when_the_rate_is_zero() {
        let mut g = Generator::new(
            GeneratorOptions {
                anomaly_rate: 0.0,
                ground_truth: true,
                ..GeneratorOptions::default()
            },
            0,
            1,
        )
        .unwrap();
        assert!(drain_n(&mut g, 50_000).iter().all(|r| r.5.is_none()));
    }

    #[test]
    fn every_row_respects_the_watermark_observed_before_it() {
        for workers in [1, 2] {
            let mut g = Generator::new(
                GeneratorOptions {
                    disorder_ms: 250,
                    devices: 7,
                    rate_per_device: 3.0,
                    ..busy_options()
                },
                workers - 1,
                workers,
            )
            .unwrap();
            g.set_limit(20_000);
            let mut watermarks: Vec<i64> = Vec::new();
            let mut min_later = i64::MAX;
            let mut batches = Vec::new();
            loop {
                let wm = g.watermark();
                assert!(wm >= watermarks.last().copied().unwrap_or(i64::MIN));
                assert!(wm <= g.next_event_time());
                watermarks.push(wm);
                match g.next_batch(97) {
                    Some(b) => batches.push(rows(&b)),
                    None => break,
                }
            }
            assert_eq!(watermarks.last(), Some(&i64::MAX));
            // Walk backwards: every row of batch i and later has ts >= watermark before batch i.
            let mut jittered = 0;
            for (i, batch) in batches.iter().enumerate().rev() {
                for r in batch {
                    min_later = min_later.min(r.0);
                }
                assert!(min_later >= watermarks[i], "batch {i}");
                jittered += batch.windows(2).filter(|w| w[1].0 < w[0].0).count();
            }
            assert!(jittered > 0, "disorder_ms had no effect");
        }
    }

    #[test]
    fn bad_options_are_user_errors_and_an_empty_share_is_exhausted() {
        let bad = [
            GeneratorOptions {
                devices: 0,
                ..Default::default()
            },
            GeneratorOptions {
                rate_per_device: 0.0,
                ..Default::default()
            },
            GeneratorOptions {
                sensors: vec![],
                ..Default::default()
            },
            GeneratorOptions {
                anomaly_shapes: vec![],
                ..Default::default()
            },
            GeneratorOptions {
                disorder_ms: -1,
                ..Default::default()
            },
        ];
        for opts in bad {
            let e = Generator::new(opts, 0, 1).unwrap_err();
            assert!(e.is_user_error(), "{e}");
        }
        assert!(Generator::new(GeneratorOptions::default(), 2, 2).is_err());
        let mut g = Generator::new(
            GeneratorOptions {
                devices: 2,
                ..Default::default()
            },
            2,
            3,
        )
        .unwrap();
        assert!(g.next_batch(10).is_none());
        assert_eq!(g.watermark(), i64::MAX);
    }

    #[test]
    fn schema_lists_the_ground_truth_column_only_when_asked() {
        let mut opts = GeneratorOptions::default();
        assert_eq!(
            Generator::schema(&opts).to_string(),
            "{ ts: timestamp_ms, device: string, site: string, sensor: string, value: f64 }"
        );
        opts.ground_truth = true;
        assert_eq!(
            Generator::schema(&opts).field_type("anomaly"),
            Some(FieldType::String)
        );
        let mut g = Generator::new(opts.clone(), 0, 1).unwrap();
        assert_eq!(
            g.next_batch(3).unwrap().schema(),
            Generator::schema(&opts).to_arrow()
        );
    }
}
