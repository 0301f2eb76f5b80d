//! Codec bench: bytes per event, ratio and MB/s of the content-aware codec
//! (`edgeflow_operators::codec`) against Arrow IPC + zstd(3) and Arrow IPC + lz4, on the
//! generator's readings, on the window summaries the quickstart ships to the cloud, and on
//! two real datasets (`benches/data/`, licenses in its README).
//!
//! `cargo bench --bench codec` prints a table (medians of repeated runs over every batch of a
//! dataset, one thread), then runs criterion groups; `CODEC_BENCH_TABLE_ONLY=1` skips those.
//! MB = 10^6 Arrow buffer bytes of the rows (values, offsets, string data, validity:
//! `codec::raw_bytes`), the same work for every method.

use std::hint::black_box;
use std::io::Cursor;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, Float64Array, RecordBatch, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use criterion::{Criterion, Throughput};
use edgeflow_connectors::generator::{Generator, GeneratorOptions};
use edgeflow_operators::codec::{self, CodecOptions, Decoder, Encoder};
use edgeflow_operators::window::{AggregateFn, AggregateSpec, WindowAggregator, WindowSpec};

/// A named set of batches, each encoded as one frame.
struct Dataset {
    name: &'static str,
    batches: Vec<RecordBatch>,
    /// Error bounds for the lossy row of the table.
    bounds: Vec<(String, f64)>,
}

impl Dataset {
    fn rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }

    fn raw_bytes(&self) -> usize {
        self.batches
            .iter()
            .flat_map(|b| b.columns())
            .map(|c| codec::raw_bytes(c.as_ref()))
            .sum()
    }
}

fn fleet() -> GeneratorOptions {
    GeneratorOptions {
        devices: 500,
        sites: 10,
        sensors: vec!["vibration".into(), "temperature".into()],
        rate_per_device: 100.0,
        seed: 42,
        ..GeneratorOptions::default()
    }
}

/// The generator's readings, as the edge sees them.
fn readings(batches: usize) -> Vec<RecordBatch> {
    let mut g = Generator::new(fleet(), 0, 1).expect("generator");
    (0..batches)
        .map(|_| g.next_batch(8192).expect("readings"))
        .collect()
}

/// What the quickstart's `per_sec` window sends to the cloud: one batch per closed second.
fn summaries(windows: usize) -> Vec<RecordBatch> {
    let opts = fleet();
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

fn data(file: &str) -> String {
    format!("{}/benches/data/{file}", env!("CARGO_MANIFEST_DIR"))
}

fn datasets() -> Vec<Dataset> {
    vec![
        Dataset {
            name: "sensors (generator: 500 devices x 2 sensors, 8192-row batches)",
            batches: readings(16),
            bounds: vec![("value".into(), 1e-3)],
        },
        Dataset {
            name: "window summaries (quickstart per_sec: 1 s windows)",
            batches: summaries(8),
            bounds: ["min", "max", "mean", "stddev"]
                .iter()
                .map(|c| (c.to_string(), 1e-3))
                .collect(),
        },
        Dataset {
            name: "water-flow.csv (real, hourly l/s, 1 batch)",
            batches: vec![water_flow(&data("water-flow.csv")).expect("water-flow.csv")],
            bounds: vec![("flow".into(), 0.01)],
        },
        Dataset {
            name: "703165TY.csv (real TMY3 hourly, ts + 8 f64, 1 batch)",
            batches: vec![tmy3(&data("703165TY.csv")).expect("703165TY.csv")],
            bounds: TMY3_COLUMNS
                .iter()
                .map(|(_, c)| (c.to_string(), 0.05))
                .collect(),
        },
    ]
}

/// A way to turn a batch into bytes and back.
trait Method {
    fn name(&self) -> String;
    fn encode(&mut self, b: &RecordBatch) -> Vec<u8>;
    fn decode(&mut self, bytes: &[u8]) -> RecordBatch;
}

struct Ours {
    label: &'static str,
    enc: Encoder,
    dec: Decoder,
}

impl Ours {
    fn new(label: &'static str, opts: CodecOptions) -> Self {
        Ours {
            label,
            enc: Encoder::new(opts).expect("valid options"),
            dec: Decoder::default(),
        }
    }
}

impl Method for Ours {
    fn name(&self) -> String {
        self.label.to_string()
    }
    fn encode(&mut self, b: &RecordBatch) -> Vec<u8> {
        self.enc.encode(b).expect("encode")
    }
    fn decode(&mut self, bytes: &[u8]) -> RecordBatch {
        self.dec.decode(bytes).expect("decode")
    }
}

/// Arrow IPC stream (schema + batch), optionally with IPC's own buffer compression, then
/// optionally a whole-stream compressor.
#[derive(Clone, Copy)]
enum Outer {
    None,
    Zstd3,
    Lz4,
}

struct Ipc {
    outer: Outer,
}

impl Method for Ipc {
    fn name(&self) -> String {
        let outer = match self.outer {
            Outer::None => "",
            Outer::Zstd3 => " + zstd(3)",
            Outer::Lz4 => " + lz4",
        };
        format!("Arrow IPC{outer}")
    }

    fn encode(&mut self, b: &RecordBatch) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = StreamWriter::try_new(&mut out, b.schema_ref()).expect("ipc writer");
        w.write(b).expect("ipc write");
        w.finish().expect("ipc finish");
        drop(w);
        match self.outer {
            Outer::None => out,
            Outer::Zstd3 => zstd::bulk::compress(&out, 3).expect("zstd"),
            Outer::Lz4 => lz4_flex::block::compress_prepend_size(&out),
        }
    }

    fn decode(&mut self, bytes: &[u8]) -> RecordBatch {
        let ipc = match self.outer {
            Outer::None => bytes.to_vec(),
            Outer::Zstd3 => zstd::stream::decode_all(bytes).expect("zstd"),
            Outer::Lz4 => lz4_flex::block::decompress_size_prepended(bytes).expect("lz4"),
        };
        let mut r = StreamReader::try_new(Cursor::new(ipc), None).expect("ipc reader");
        r.next().expect("one batch").expect("ipc batch")
    }
}

fn methods(ds: &Dataset) -> Vec<Box<dyn Method>> {
    let lossy = CodecOptions {
        error_bounds: ds.bounds.clone(),
        ..CodecOptions::default()
    };
    vec![
        Box::new(Ipc {
            outer: Outer::Zstd3,
        }),
        Box::new(Ipc { outer: Outer::Lz4 }),
        Box::new(Ipc { outer: Outer::None }),
        Box::new(Ours::new("codec Auto (lossless)", CodecOptions::default())),
        Box::new(Ours::new("codec Fast (lossless)", CodecOptions::fast())),
        Box::new(Ours::new("codec Auto + error bounds", lossy)),
    ]
}

/// Median wall time of `reps` runs of `f`.
fn median(reps: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[reps / 2]
}

fn table(sets: &[Dataset]) {
    let reps: usize = std::env::var("CODEC_BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    println!(
        "\n# codec vs Arrow IPC (median of {reps} runs, 1 thread; MB = 10^6 Arrow buffer bytes)\n"
    );
    for ds in sets {
        let (rows, raw) = (ds.rows(), ds.raw_bytes());
        println!(
            "## {}: {} batches, {rows} rows, {:.1} Arrow bytes/row",
            ds.name,
            ds.batches.len(),
            raw as f64 / rows as f64
        );
        if !ds.bounds.is_empty() {
            let b: Vec<String> = ds.bounds.iter().map(|(c, e)| format!("{c}={e}")).collect();
            println!("   error bounds of the lossy row: {}", b.join(", "));
        }
        println!(
            "| {:<34} | {:>10} | {:>9} | {:>12} | {:>10} | {:>10} | {:>10} |",
            "method",
            "wire bytes",
            "bytes/row",
            "vs IPC+zstd3",
            "vs IPC+lz4",
            "enc MB/s",
            "dec MB/s"
        );
        println!(
            "|{:-<36}|{:->12}|{:->11}|{:->14}|{:->12}|{:->12}|{:->12}|",
            "", "", "", "", "", "", ""
        );
        let mut results = Vec::new();
        for mut m in methods(ds) {
            let frames: Vec<Vec<u8>> = ds.batches.iter().map(|b| m.encode(b)).collect();
            let wire: usize = frames.iter().map(Vec::len).sum();
            let enc = median(reps, || {
                for b in &ds.batches {
                    black_box(m.encode(black_box(b)));
                }
            });
            let dec = median(reps, || {
                for f in &frames {
                    black_box(m.decode(black_box(f)));
                }
            });
            results.push((m.name(), wire, enc, dec));
        }
        let wire_of = |name: &str| {
            results
                .iter()
                .find(|r| r.0 == name)
                .map_or(f64::NAN, |r| r.1 as f64)
        };
        let (zstd_bytes, lz4_bytes) = (wire_of("Arrow IPC + zstd(3)"), wire_of("Arrow IPC + lz4"));
        let mbps = |d: Duration| raw as f64 / 1e6 / d.as_secs_f64();
        for (name, wire, enc, dec) in &results {
            println!(
                "| {:<34} | {:>10} | {:>9.3} | {:>11.2}x | {:>9.2}x | {:>10.0} | {:>10.0} |",
                name,
                wire,
                *wire as f64 / rows as f64,
                zstd_bytes / *wire as f64,
                lz4_bytes / *wire as f64,
                mbps(*enc),
                mbps(*dec),
            );
        }
        // What the codec chose, from the first batch.
        if let Some(b) = ds.batches.first() {
            for (label, opts) in [
                ("Auto", CodecOptions::default()),
                (
                    "Auto+bounds",
                    CodecOptions {
                        error_bounds: ds.bounds.clone(),
                        ..CodecOptions::default()
                    },
                ),
            ] {
                if let Ok((_, stats)) = codec::encode_with_stats(b, &opts) {
                    let cols: Vec<String> = stats
                        .columns
                        .iter()
                        .map(|c| format!("{}: {} ({} B)", c.name, c.encoding, c.wire_bytes))
                        .collect();
                    println!("   {label} choices (batch 1): {}", cols.join("; "));
                }
            }
        }
        println!();
    }
}

fn main() {
    let sets = datasets();
    table(&sets);
    if std::env::var_os("CODEC_BENCH_TABLE_ONLY").is_some() {
        return;
    }
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    for ds in &sets {
        let mut g = c.benchmark_group(ds.name.split(' ').next().unwrap_or("data"));
        g.throughput(Throughput::Bytes(ds.raw_bytes() as u64));
        for mut m in methods(ds) {
            let name = m.name();
            if !(name.starts_with("codec") || name == "Arrow IPC + zstd(3)") {
                continue;
            }
            let frames: Vec<Vec<u8>> = ds.batches.iter().map(|b| m.encode(b)).collect();
            g.bench_function(format!("encode/{name}"), |bench| {
                bench.iter(|| {
                    for b in &ds.batches {
                        black_box(m.encode(black_box(b)));
                    }
                })
            });
            g.bench_function(format!("decode/{name}"), |bench| {
                bench.iter(|| {
                    for f in &frames {
                        black_box(m.decode(black_box(f)));
                    }
                })
            });
        }
        g.finish();
    }
    c.final_summary();
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn num(s: &str) -> Result<i64, String> {
    s.trim().parse::<i64>().map_err(|e| format!("{s:?}: {e}"))
}

/// `water-flow.csv`: `Time` (ISO 8601 with offset) -> `ts`, `Water flow [l/s]` -> `flow`.
fn water_flow(path: &str) -> Result<RecordBatch, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let mut ts = Vec::new();
    let mut flow = Vec::new();
    for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let (t, v) = line.split_once(',').ok_or("no comma")?;
        // 2022-03-20T11:00:00+01:00
        let (date, rest) = t.split_once('T').ok_or("no T")?;
        let mut dp = date.split('-');
        let (y, mo, d) = (
            num(dp.next().ok_or("y")?)?,
            num(dp.next().ok_or("m")?)?,
            num(dp.next().ok_or("d")?)?,
        );
        let (hms, sign, off) = match rest.find(['+', '-']) {
            Some(i) => (
                &rest[..i],
                if &rest[i..=i] == "-" { -1 } else { 1 },
                &rest[i + 1..],
            ),
            None => (rest.trim_end_matches('Z'), 1, "00:00"),
        };
        let mut tp = hms.split(':');
        let (h, mi, s) = (
            num(tp.next().ok_or("h")?)?,
            num(tp.next().ok_or("min")?)?,
            num(tp.next().unwrap_or("0"))?,
        );
        let (oh, om) = off.split_once(':').ok_or("offset")?;
        let offset_s = sign * (num(oh)? * 3600 + num(om)? * 60);
        let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s - offset_s;
        ts.push(secs * 1000);
        flow.push(v.trim().parse::<f64>().map_err(|e| format!("{v}: {e}"))?);
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        Field::new("flow", DataType::Float64, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(TimestampMillisecondArray::from(ts)),
            Arc::new(Float64Array::from(flow)),
        ],
    )
    .map_err(|e| e.to_string())
}

/// The TMY3 columns the bench reads, as `(header name, column name)`.
const TMY3_COLUMNS: [(&str, &str); 8] = [
    ("GHI (W/m^2)", "ghi"),
    ("DNI (W/m^2)", "dni"),
    ("Dry-bulb (C)", "temp_air"),
    ("Dew-point (C)", "dew_point"),
    ("RHum (%)", "rel_hum"),
    ("Pressure (mbar)", "pressure"),
    ("Wdir (degrees)", "wind_dir"),
    ("Wspd (m/s)", "wind_speed"),
];

/// A TMY3 file: `ts` from date + time (hour 24:00 is midnight of the next day) and the
/// [`TMY3_COLUMNS`] as f64, -9900 (missing) read as null.
fn tmy3(path: &str) -> Result<RecordBatch, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let mut lines = text.lines().skip(1);
    let header: Vec<&str> = lines.next().ok_or("no header")?.split(',').collect();
    let idx: Vec<usize> = TMY3_COLUMNS
        .iter()
        .map(|(h, _)| header.iter().position(|c| c == h).ok_or(format!("no {h}")))
        .collect::<Result<_, _>>()?;
    let mut ts = Vec::new();
    let mut cols: Vec<Vec<Option<f64>>> = vec![Vec::new(); idx.len()];
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        let mut dp = f.first().ok_or("date")?.split('/');
        let (mo, d, y) = (
            num(dp.next().ok_or("m")?)?,
            num(dp.next().ok_or("d")?)?,
            num(dp.next().ok_or("y")?)?,
        );
        let (h, mi) = f.get(1).ok_or("time")?.split_once(':').ok_or("hh:mm")?;
        let secs = days_from_civil(y, mo, d) * 86_400 + num(h)? * 3600 + num(mi)? * 60;
        ts.push(secs * 1000);
        for (c, &i) in idx.iter().enumerate() {
            let v: f64 = f
                .get(i)
                .ok_or("short row")?
                .trim()
                .parse()
                .map_err(|e| format!("{e}"))?;
            cols[c].push((v != -9900.0).then_some(v));
        }
    }
    let mut fields = vec![Field::new(
        "ts",
        DataType::Timestamp(TimeUnit::Millisecond, None),
        true,
    )];
    let mut arrays: Vec<ArrayRef> = vec![Arc::new(TimestampMillisecondArray::from(ts))];
    for ((_, name), values) in TMY3_COLUMNS.iter().zip(cols) {
        fields.push(Field::new(*name, DataType::Float64, true));
        arrays.push(Arc::new(Float64Array::from(values)));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).map_err(|e| e.to_string())
}
