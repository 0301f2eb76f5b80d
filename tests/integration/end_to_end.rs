//! Whole pipelines through the library API, checked against naive recomputations written
//! here: windows with out-of-order, late and malformed input, on 1 and 3 workers.

use std::collections::BTreeMap;
use std::path::Path;

use edgeflow::runtime::RunReport;
use edgeflow::sql::{ResultFormat, encode_result};
use rand::{RngExt, SeedableRng};

use crate::common::embedded::{query, run_embedded};

const T0: i64 = 1_700_000_000_000;
const DISORDER_MS: i64 = 300;
const LATENESS_MS: i64 = 200;
const SIZE_MS: i64 = 1000;

/// One CSV record as written, and what it is.
struct Record {
    line: String,
    /// (device, ts, value) for well-formed records.
    row: Option<(String, i64, Option<f64>)>,
}

fn make_records(seed: u64, n: usize) -> Vec<Record> {
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut records = Vec::new();
    for i in 0..n {
        let base = T0 + i as i64 * 7;
        let device = format!("d{}", rng.random_range(0..4));
        if i % 211 == 5 {
            records.push(Record {
                line: format!("{base},{device},not-a-number"),
                row: None,
            });
            continue;
        }
        if i % 307 == 9 {
            records.push(Record {
                line: format!(",{device},1.0"),
                row: None,
            });
            continue;
        }
        let ts = match i % 97 {
            0 => base - 3_000,                     // far behind: late whatever the batching
            13 => base - 600,                      // behind disorder + lateness: usually late
            _ => base - rng.random_range(0..=250), // within the declared disorder
        };
        let value = if i % 53 == 0 {
            None
        } else {
            Some((rng.random_range(-1000..1000) as f64) / 8.0)
        };
        let text = value.map(|v| v.to_string()).unwrap_or_default();
        records.push(Record {
            line: format!("{ts},{device},{text}"),
            row: Some((device, ts, value)),
        });
    }
    records
}

#[derive(Debug, Default, PartialEq)]
struct Agg {
    count: i64,
    sum: f64,
    min: Option<f64>,
    max: Option<f64>,
}

/// Expected aggregates by (device, window start).
type Windows = BTreeMap<(String, i64), Agg>;

/// The oracle: replays the source's batching and watermarks, decides lateness the way the
/// documentation says, and aggregates with plain loops.
fn expected(records: &[Record], batch_rows: usize) -> (Windows, Vec<(String, i64)>) {
    let mut windows = Windows::new();
    let mut late = Vec::new();
    let mut max_ts = i64::MIN;
    for batch in records.chunks(batch_rows) {
        let watermark = if max_ts == i64::MIN {
            i64::MIN
        } else {
            max_ts - DISORDER_MS
        };
        for record in batch {
            let Some((device, ts, value)) = &record.row else {
                continue;
            };
            let start = ts.div_euclid(SIZE_MS) * SIZE_MS;
            if start + SIZE_MS + LATENESS_MS <= watermark {
                late.push((device.clone(), *ts));
                continue;
            }
            let agg = windows.entry((device.clone(), start)).or_default();
            if let Some(v) = value {
                agg.count += 1;
                agg.sum += v;
                agg.min = Some(agg.min.map_or(*v, |m: f64| m.min(*v)));
                agg.max = Some(agg.max.map_or(*v, |m: f64| m.max(*v)));
            }
        }
        for record in batch {
            if let Some((_, ts, _)) = &record.row {
                max_ts = max_ts.max(*ts);
            }
        }
    }
    late.sort();
    (windows, late)
}

fn pipeline_yaml(dir: &Path) -> String {
    format!(
        r#"
pipeline: oracle
schema:
  reading: {{ ts: timestamp_ms, device: string, value: f64 }}
nodes:
  readings: {{ kind: file, path: {input}, schema: reading, disorder: {DISORDER_MS}ms }}
  per_sec:
    kind: window
    inputs: [readings]
    key: [device]
    size: 1s
    allowed_lateness: {LATENESS_MS}ms
    aggregates: [count, sum, min, max, mean]
  windows: {{ kind: table, inputs: [per_sec] }}
  late: {{ kind: file, inputs: [per_sec.late], path: {late} }}
"#,
        input = dir.join("readings.csv").display(),
        late = dir.join("late.csv").display(),
    )
}

fn run(dir: &Path, workers: usize, batch_rows: usize) -> (RunReport, String) {
    let (report, engine) = run_embedded(&dir.join("oracle.yaml"), workers, batch_rows);
    let result = query(
        &engine,
        "SELECT device, CAST(window_start AS BIGINT) AS start, count, sum, min, max, mean \
         FROM windows ORDER BY device, start",
    );
    let csv = String::from_utf8(encode_result(&result, ResultFormat::Csv).unwrap()).unwrap();
    (report, csv)
}

fn format_expected(windows: &Windows) -> String {
    let mut out = String::from("device,start,count,sum,min,max,mean\n");
    // Arrow's CSV writer prints floats as Rust's `{:?}` does (`120.0`, not `120`).
    let opt = |v: Option<f64>| v.map(|v| format!("{v:?}")).unwrap_or_default();
    for ((device, start), agg) in windows {
        let (sum, mean) = if agg.count == 0 {
            (String::new(), String::new())
        } else {
            (
                format!("{:?}", agg.sum),
                format!("{:?}", agg.sum / agg.count as f64),
            )
        };
        out.push_str(&format!(
            "{device},{start},{},{sum},{},{},{mean}\n",
            agg.count,
            opt(agg.min),
            opt(agg.max)
        ));
    }
    out
}

#[test]
fn window_results_match_a_naive_recomputation_with_disorder_late_and_bad_rows() {
    let dir = tempfile::tempdir().unwrap();
    let records = make_records(11, 4000);
    let mut csv = String::from("ts,device,value\n");
    for r in &records {
        csv.push_str(&r.line);
        csv.push('\n');
    }
    std::fs::write(dir.path().join("readings.csv"), csv).unwrap();
    std::fs::write(dir.path().join("oracle.yaml"), pipeline_yaml(dir.path())).unwrap();
    let bad_lines = records.iter().filter(|r| r.row.is_none()).count() as u64;

    for (workers, batch_rows) in [(1, 64), (3, 64), (2, 500)] {
        let (windows, late) = expected(&records, batch_rows);
        assert!(late.len() > 10, "the data must exercise lateness");
        let (report, table) = run(dir.path(), workers, batch_rows);
        assert_eq!(
            table,
            format_expected(&windows),
            "workers {workers}, batch {batch_rows}"
        );
        assert_eq!(report.late_events, late.len() as u64, "workers {workers}");
        assert_eq!(report.dead_letters, bad_lines, "workers {workers}");

        // The late side output holds exactly the late rows.
        let late_file = std::fs::read_to_string(dir.path().join("late.csv")).unwrap();
        let mut written: Vec<(String, i64)> = late_file
            .lines()
            .skip(1)
            .map(|line| {
                let fields: Vec<&str> = line.split(',').collect();
                let ts = chrono_free_millis(fields[0]);
                (fields[1].to_string(), ts)
            })
            .collect();
        written.sort();
        assert_eq!(written, late, "workers {workers}");

        let dead_path = dir.path().join(format!(
            "data-{workers}-{batch_rows}/oracle/dead_letter.jsonl"
        ));
        let dead = std::fs::read_to_string(dead_path).unwrap();
        assert_eq!(dead.lines().count() as u64, bad_lines);
        assert!(dead.contains("not-a-number"), "{dead}");
    }
}

/// Parses the RFC 3339 millisecond timestamps the CSV sink writes
/// (`2023-11-14T22:13:20.123Z`), or plain integers.
fn chrono_free_millis(text: &str) -> i64 {
    if let Ok(ms) = text.parse::<i64>() {
        return ms;
    }
    let (date, time) = text.trim_end_matches('Z').split_once('T').unwrap();
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    // Days from civil (Howard Hinnant's algorithm).
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let millis: i64 = format!("{frac:0<3}")[..3].parse().unwrap();
    ((days * 24 + t[0]) * 60 + t[1]) * 60_000 + t[2] * 1000 + millis
}
