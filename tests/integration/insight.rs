//! The `insight` kind end to end through the library API: every rule's incidents (read back
//! from the `incidents` table) and the control records, compared with naive recomputations
//! written here over the same CSV input, on 1 and 2 workers and different batch sizes; and
//! the pipeline-file errors of insight nodes, with their positions and hints.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use arrow::array::{Array, Float64Array, Int64Array, StringArray};
use edgeflow::plan;
use edgeflow_operators::control::{ControlAction, ControlRecord};
use rand::{RngExt, SeedableRng};

use crate::common::embedded::{query, run_embedded};
use crate::common::repo;

const T0: i64 = 1_700_000_000_000;
const SECONDS: i64 = 240;
const DEVICES: usize = 12;
const WITHIN_MS: i64 = 10_000;
const MIN_DEVICES: usize = 3;
const BASELINE_MS: i64 = 60_000;
const SHIFT: f64 = 5.0;
const MIN_SAMPLES: usize = 10;
const AFTER_MS: i64 = 5_000;
const HOT: f64 = 58.0;

fn device(i: usize) -> String {
    format!("dev-{i:02}")
}

fn site(i: usize) -> String {
    format!("s{}", i % 3)
}

/// A per-second summary: (ts, device index, mean).
type Summary = (i64, usize, f64);
/// An exception: (ts, device index).
type Exception = (i64, usize);

/// One summary per device and second, with noise; dev-04 drifts slowly from 120 s, dev-07
/// jumps by 10 in [150 s, 170 s), dev-02 is silent in [60 s, 80 s) and dev-09 stops at 200 s.
/// Exceptions: sparse random ones, and a burst at site s1 in [100 s, 110 s).
fn make_data(seed: u64) -> (Vec<Summary>, Vec<Exception>) {
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
    let (mut summaries, mut exceptions) = (Vec::new(), Vec::new());
    for s in 0..SECONDS {
        let ts = T0 + s * 1000;
        for d in 0..DEVICES {
            let silent = (d == 2 && (60..80).contains(&s)) || (d == 9 && s >= 200);
            if !silent {
                let mut mean = 50.0 + rng.random_range(-1.0..1.0);
                if d == 4 && s >= 120 {
                    mean += 0.1 * (s - 120) as f64;
                }
                if d == 7 && (150..170).contains(&s) {
                    mean += 10.0;
                }
                summaries.push((ts, d, mean));
            }
            let burst = d % 3 == 1 && (100..110).contains(&s) && rng.random_range(0..4) == 0;
            if burst || rng.random_range(0..100) < 2 {
                exceptions.push((ts + rng.random_range(0..1000), d));
            }
        }
    }
    exceptions.sort();
    (summaries, exceptions)
}

/// An incident as the oracles see it: (time, rule, key).
type Expected = BTreeSet<(i64, String, String)>;

fn correlated_oracle(exceptions: &[Exception]) -> Expected {
    let mut windows: BTreeMap<(String, i64), BTreeSet<usize>> = BTreeMap::new();
    for (ts, d) in exceptions {
        let start = ts - ts.rem_euclid(WITHIN_MS);
        windows.entry((site(*d), start)).or_default().insert(*d);
    }
    windows
        .into_iter()
        .filter(|(_, devices)| devices.len() >= MIN_DEVICES)
        .map(|((site, start), _)| (start + WITHIN_MS, "outbreak".into(), format!("site={site}")))
        .collect()
}

fn drift_oracle(summaries: &[Summary]) -> Expected {
    let mut series: BTreeMap<usize, Vec<(i64, f64)>> = BTreeMap::new();
    for (ts, d, mean) in summaries {
        series.entry(*d).or_default().push((*ts, *mean));
    }
    let mut out = Expected::new();
    for (d, rows) in series {
        let start = rows[0].0;
        let learned = rows
            .iter()
            .take_while(|(ts, _)| *ts < start + BASELINE_MS)
            .count()
            .max(MIN_SAMPLES);
        let baseline = &rows[..learned.min(rows.len())];
        let n = baseline.len() as f64;
        let mean = baseline.iter().map(|(_, v)| v).sum::<f64>() / n;
        let stddev = (baseline
            .iter()
            .map(|(_, v)| (v - mean).powi(2))
            .sum::<f64>()
            / n)
            .sqrt();
        let mut drifting = false;
        for (ts, v) in &rows[baseline.len()..] {
            let outside = (v - mean).abs() > SHIFT * stddev;
            if outside && !drifting {
                out.insert((*ts, "drift".into(), format!("device={}", device(d))));
            }
            drifting = outside;
        }
    }
    out
}

fn silence_oracle(summaries: &[Summary]) -> Expected {
    let end = summaries.iter().map(|s| s.0).max().unwrap();
    let mut seen: BTreeMap<usize, Vec<i64>> = BTreeMap::new();
    for (ts, d, _) in summaries {
        seen.entry(*d).or_default().push(*ts);
    }
    let mut out = Expected::new();
    for (d, times) in seen {
        let key = format!("device={}", device(d));
        for pair in times.windows(2) {
            if pair[1] - pair[0] > AFTER_MS {
                out.insert((pair[0] + AFTER_MS, "quiet".into(), key.clone()));
            }
        }
        let last = *times.last().unwrap();
        if last + AFTER_MS < end {
            out.insert((last + AFTER_MS, "quiet".into(), key));
        }
    }
    out
}

/// The control records the documented rules give: incidents in (time, rule, key) order; a
/// drift sends `set_threshold`, a silence `disable`, unless that is what was sent last.
fn control_oracle(
    incidents: &[(i64, String, String, String)],
) -> Vec<(String, i64, ControlAction)> {
    let mut out = Vec::new();
    let mut last: Option<ControlAction> = None;
    for (time, rule, _key, id) in incidents {
        let action = match rule.as_str() {
            "drift" => ControlAction::SetThreshold { value: 6.0 },
            "quiet" => ControlAction::Disable,
            _ => continue,
        };
        if last.as_ref() == Some(&action) {
            continue;
        }
        last = Some(action.clone());
        out.push((id.clone(), *time, action));
    }
    out
}

fn pipeline_yaml(dir: &Path) -> String {
    format!(
        r#"
pipeline: insight-oracle
schema:
  summary: {{ ts: timestamp_ms, site: string, device: string, mean: f64 }}
  exception: {{ ts: timestamp_ms, site: string, device: string, score: f64 }}
nodes:
  summaries: {{ kind: file, path: {summaries}, schema: summary }}
  exceptions: {{ kind: file, path: {exceptions}, schema: exception }}
  scoring: {{ kind: detect, inputs: [summaries], key: [device], value: mean, method: zscore }}
  summaries_tbl: {{ kind: table, inputs: [summaries] }}
  alerts:
    kind: insight
    inputs: [exceptions, summaries]
    rules:
      - name: outbreak
        correlated: {{ input: exceptions, by: [site], devices: {MIN_DEVICES}, within: {WITHIN_MS}ms }}
      - name: drift
        drift: {{ input: summaries, key: [device], value: mean, baseline: {BASELINE_MS}ms, shift: {SHIFT}, min_samples: {MIN_SAMPLES} }}
      - name: quiet
        silence: {{ input: summaries, after: {AFTER_MS}ms }}
    control:
      - {{ on: drift, node: scoring, set_threshold: 6.0 }}
      - {{ on: quiet, node: scoring, disable: true }}
  watch:
    kind: insight
    inputs: [summaries]
    rules:
      - name: hot
        sql: {{ query: "SELECT device, max(mean) AS peak FROM summaries_tbl WHERE mean > {HOT} GROUP BY device", every: 10s, key: device }}
  control_out: {{ kind: file, inputs: [alerts.control], path: {control} }}
"#,
        summaries = dir.join("summaries.csv").display(),
        exceptions = dir.join("exceptions.csv").display(),
        control = dir.join("control.jsonl").display(),
    )
}

/// An incident row: (time, id, insight, rule, kind, key, devices, value).
type Row = (
    i64,
    String,
    String,
    String,
    String,
    String,
    i64,
    Option<f64>,
);

fn run(dir: &Path, workers: usize, batch_rows: usize) -> (Vec<Row>, Vec<ControlRecord>) {
    let control_path = dir.join("control.jsonl");
    let (report, engine) = run_embedded(&dir.join("insight.yaml"), workers, batch_rows);
    assert_eq!(report.dead_letters, 0, "{report}");
    let result = query(
        &engine,
        "SELECT CAST(time AS BIGINT) AS t, id, insight, rule, kind, key, devices, value \
         FROM incidents ORDER BY insight, t, rule, key",
    );
    let mut rows = Vec::new();
    for b in &result.batches {
        let text = |i: usize| b.column(i).as_any().downcast_ref::<StringArray>().unwrap();
        let int = |i: usize| b.column(i).as_any().downcast_ref::<Int64Array>().unwrap();
        let value = b.column(7).as_any().downcast_ref::<Float64Array>().unwrap();
        for r in 0..b.num_rows() {
            rows.push((
                int(0).value(r),
                text(1).value(r).to_owned(),
                text(2).value(r).to_owned(),
                text(3).value(r).to_owned(),
                text(4).value(r).to_owned(),
                text(5).value(r).to_owned(),
                int(6).value(r),
                value.is_valid(r).then(|| value.value(r)),
            ));
        }
    }
    let control = std::fs::read_to_string(&control_path)
        .unwrap()
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            ControlRecord {
                id: v["id"].as_str().unwrap().to_owned(),
                node: v["node"].as_str().unwrap().to_owned(),
                action: serde_json::from_str(v["action"].as_str().unwrap()).unwrap(),
                apply_at: time_ms(v["apply_at"].as_str().unwrap()),
                issued_by: v["issued_by"].as_str().unwrap().to_owned(),
                reason: v["reason"].as_str().unwrap().to_owned(),
            }
        })
        .collect();
    (rows, control)
}

/// RFC 3339 text (as the JSON-lines sink writes timestamps) to ms.
fn time_ms(text: &str) -> i64 {
    arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(text).unwrap() / 1_000_000
}

#[test]
fn incidents_and_control_records_match_naive_recomputations_on_1_and_2_workers() {
    let dir = tempfile::tempdir().unwrap();
    let (summaries, exceptions) = make_data(5);
    let mut csv = String::from("ts,site,device,mean\n");
    for (ts, d, mean) in &summaries {
        csv.push_str(&format!("{ts},{},{},{mean}\n", site(*d), device(*d)));
    }
    std::fs::write(dir.path().join("summaries.csv"), csv).unwrap();
    let mut csv = String::from("ts,site,device,score\n");
    for (ts, d) in &exceptions {
        csv.push_str(&format!("{ts},{},{},9.5\n", site(*d), device(*d)));
    }
    std::fs::write(dir.path().join("exceptions.csv"), csv).unwrap();
    std::fs::write(dir.path().join("insight.yaml"), pipeline_yaml(dir.path())).unwrap();

    let correlated = correlated_oracle(&exceptions);
    let drift = drift_oracle(&summaries);
    let silence = silence_oracle(&summaries);
    // The data must exercise every rule, more than once where it can.
    assert!(correlated.len() >= 2, "{correlated:?}");
    assert!(
        correlated
            .iter()
            .any(|(t, _, k)| k == "site=s1" && *t == T0 + 110_000),
        "{correlated:?}"
    );
    assert!(drift.len() >= 2, "{drift:?}");
    assert_eq!(silence.len(), 2, "{silence:?}");
    let mut expected: Expected = correlated.clone();
    expected.extend(drift);
    expected.extend(silence);
    let hot: BTreeSet<String> = summaries
        .iter()
        .filter(|(_, _, mean)| *mean > HOT)
        .map(|(_, d, _)| device(*d))
        .collect();
    assert!(hot.len() >= 2, "{hot:?}");

    let mut first: Option<(Vec<Row>, Vec<ControlRecord>)> = None;
    for (workers, batch_rows) in [(1, 64), (2, 500), (2, 37)] {
        let (rows, control) = run(dir.path(), workers, batch_rows);
        let alerts: Vec<&Row> = rows.iter().filter(|r| r.2 == "alerts").collect();
        let got: Expected = alerts
            .iter()
            .map(|r| (r.0, r.3.clone(), r.5.clone()))
            .collect();
        assert_eq!(got, expected, "{workers} workers, batches of {batch_rows}");
        assert_eq!(got.len(), alerts.len(), "an incident was raised twice");
        // Numbered in (time, rule, key) order, from 1.
        let mut ordered: Vec<&&Row> = alerts.iter().collect();
        ordered.sort_by(|a, b| (a.0, &a.3, &a.5).cmp(&(b.0, &b.3, &b.5)));
        for (n, r) in ordered.iter().enumerate() {
            assert_eq!(r.1, format!("alerts#{}", n + 1));
        }
        for r in &alerts {
            if r.4 == "correlated" {
                let start = r.0 - WITHIN_MS;
                let devices: BTreeSet<usize> = exceptions
                    .iter()
                    .filter(|(ts, d)| {
                        (start..r.0).contains(ts) && format!("site={}", site(*d)) == r.5
                    })
                    .map(|(_, d)| *d)
                    .collect();
                assert_eq!(r.6, devices.len() as i64, "{r:?}");
            }
        }
        // SQL: each device the query returns fires once, at a tick, whatever the timing.
        let watch: Vec<&Row> = rows.iter().filter(|r| r.2 == "watch").collect();
        let keys: BTreeSet<String> = watch.iter().map(|r| r.5.clone()).collect();
        assert_eq!(keys, hot, "{workers} workers");
        assert_eq!(watch.len(), hot.len(), "a sql row fired twice: {watch:?}");
        assert!(watch.iter().all(|r| (r.0 - T0) % 10_000 == 0), "{watch:?}");

        let numbered: Vec<(i64, String, String, String)> = ordered
            .iter()
            .map(|r| (r.0, r.3.clone(), r.5.clone(), r.1.clone()))
            .collect();
        let want = control_oracle(&numbered);
        assert!(want.len() >= 3, "the data must switch actions: {want:?}");
        assert_eq!(control.len(), want.len(), "{control:?}");
        for (n, (record, (incident, apply_at, action))) in control.iter().zip(&want).enumerate() {
            assert_eq!(record.id, format!("alerts-{}", n + 1));
            assert_eq!(record.node, "scoring");
            assert_eq!(record.issued_by, "alerts");
            assert_eq!(record.apply_at, *apply_at);
            assert_eq!(&record.action, action);
            assert!(
                record.reason.starts_with(&format!("{incident}: ")),
                "{record:?}"
            );
        }

        let comparable: Vec<Row> = alerts.into_iter().cloned().collect();
        match &first {
            None => first = Some((comparable, control)),
            Some((rows, records)) => {
                assert_eq!(
                    &comparable, rows,
                    "{workers} workers, batches of {batch_rows}"
                );
                assert_eq!(&control, records);
            }
        }
    }
}

/// Plans `text` and returns its diagnostics, rendered.
fn errors(text: &str) -> String {
    let dir = repo("pipelines");
    match plan::plan_with("bad.yaml", text, &dir, &|_| None) {
        Ok(_) => panic!("the pipeline should not validate:\n{text}"),
        Err(d) => d.to_string(),
    }
}

/// `bad.yaml:line:col` of the `nth` occurrence of `needle` in `text`.
fn at(text: &str, needle: &str, nth: usize) -> String {
    let offset = text
        .match_indices(needle)
        .nth(nth)
        .unwrap_or_else(|| panic!("{needle} not in text"))
        .0;
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = offset - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    format!("bad.yaml:{line}:{column}")
}

const GOOD_PREFIX: &str = r#"pipeline: bad
nodes:
  sensors: { kind: generator, devices: 4, events: 100 }
  per_sec: { kind: window, inputs: [sensors], key: [site, device, sensor], size: 1s, aggregates: [count, mean] }
  scored: { kind: detect, inputs: [sensors], key: [device], method: zscore }
  bounds: { kind: detect, inputs: [sensors], method: threshold, max: 10 }
  per_sec_tbl: { kind: table, inputs: [per_sec] }
"#;

#[test]
fn insight_errors_point_at_the_setting_with_a_hint() {
    let cases: &[(&str, &str, usize, &str, &str)] = &[
        (
            "  alerts:\n    kind: insight\n    inputs: [scored]\n    rules:\n      - name: x\n        drfit: { baseline: 1m }\n",
            "drfit",
            0,
            "unknown key \"drfit\"; did you mean \"drift\"?",
            "",
        ),
        (
            "  alerts:\n    kind: insight\n    inputs: [scored]\n    rules:\n      - name: x\n        correlated: { by: [site], devices: 3 }\n",
            "{ by",
            0,
            "missing required field \"rules[0].correlated.within\"",
            "add `within: 1m`",
        ),
        (
            "  alerts:\n    kind: insight\n    inputs: [scored]\n    rules:\n      - name: x\n        correlated: { by: [sitee], devices: 3, within: 1m }\n",
            "sitee",
            0,
            "field \"rules[0].correlated.by\": the input has no field \"sitee\"",
            "did you mean \"site\"?",
        ),
        (
            "  alerts:\n    kind: insight\n    inputs: [scored, per_sec]\n    rules:\n      - name: x\n        silence: { after: 5s }\n",
            "{ after: 5s }",
            0,
            "the node has 2 inputs; name the one this rule reads",
            "add `input: <one of scored, per_sec>`",
        ),
        (
            "  alerts:\n    kind: insight\n    inputs: [scored, per_sec]\n    rules:\n      - name: x\n        silence: { input: per_se, after: 5s }\n",
            "per_se,",
            0,
            "\"per_se\" is not an input of the node",
            "did you mean \"per_sec\"?",
        ),
        (
            "  alerts:\n    kind: insight\n    inputs: [per_sec]\n    rules:\n      - name: x\n        drift: { value: count, baseline: 1m, shift: -1 }\n",
            "-1",
            0,
            "field \"rules[0].drift.shift\": must be greater than 0, got -1",
            "",
        ),
        (
            "  alerts:\n    kind: insight\n    inputs: [per_sec]\n    rules:\n      - name: x\n        silence: { after: 5s }\n        sql: { query: \"SELECT 1\", every: 1s }\n",
            "{ query: \"SELECT 1\"",
            0,
            "a rule has exactly one condition",
            "split it into two rules",
        ),
        (
            "  alerts:\n    kind: insight\n    inputs: [per_sec]\n    rules:\n      - name: x\n        silence: { after: 5s }\n    control:\n      - { on: x, node: scord, set_threshold: 5 }\n",
            "scord",
            0,
            "field \"control[0].node\": unknown node \"scord\"",
            "did you mean \"scored\"?",
        ),
        (
            "  alerts:\n    kind: insight\n    inputs: [per_sec]\n    rules:\n      - name: x\n        silence: { after: 5s }\n    control:\n      - { on: x, node: per_sec_tbl, disable: true }\n",
            "per_sec_tbl,",
            0,
            "\"per_sec_tbl\" runs in the cloud; control records go to edge nodes",
            "name an edge node",
        ),
        (
            "  alerts:\n    kind: insight\n    inputs: [per_sec]\n    rules:\n      - name: x\n        silence: { after: 5s }\n    control:\n      - { on: x, node: bounds, sampling: 5 }\n",
            "bounds,",
            0,
            "\"bounds\" is a detect node, which cannot take set_sampling",
            "\"bounds\" takes: set_threshold, enable, disable; set_sampling goes to: sensors",
        ),
        (
            "  alerts:\n    kind: insight\n    inputs: [per_sec]\n    rules:\n      - name: x\n        silence: { after: 5s }\n    control:\n      - { on: y, node: scored, set_threshold: 5 }\n",
            "y, node",
            0,
            "field \"control[0].on\": no rule is named \"y\"",
            "the node's rules are: x",
        ),
        (
            "  alerts:\n    kind: insight\n    inputs: [per_sec]\n    rules:\n      - name: x\n        sql: { query: \"SELECT device FROM per_sec_tabl\", every: 10s }\n",
            "\"SELECT",
            0,
            "field \"rules[0].sql.query\":",
            "tables are: per_sec_tbl, incidents",
        ),
        (
            "  alerts:\n    kind: insight\n    inputs: [per_sec]\n    rules:\n      - name: x\n        sql: { query: \"SELECT device FROM per_sec_tbl\", every: 10s, key: site }\n",
            "\"SELECT",
            0,
            "the query returns no column \"site\"",
            "",
        ),
        (
            "  alerts:\n    kind: insight\n    inputs: [per_sec]\n    rules:\n      - name: x\n        silence: { after: 5s }\n      - name: x\n        silence: { after: 9s }\n",
            "x\n        silence: { after: 9s }",
            0,
            "rule name \"x\" is used twice",
            "give every rule of a node its own name",
        ),
        (
            "  alerts:\n    kind: insight\n    inputs: [per_sec]\n    rules:\n      - name: x\n        sql: { query: \"SELECT * FROM mine\", every: 10s }\n  mine: { kind: table, inputs: [alerts] }\n",
            "\"SELECT * FROM mine",
            0,
            "table node \"mine\" is fed by this insight, whose rules cannot wait for it",
            "query the `incidents` table",
        ),
        (
            "  totals: { kind: aggregate, inputs: [per_sec], key: [sensor], aggregates: [sum(count)] }\n  alerts:\n    kind: insight\n    inputs: [totals]\n    rules:\n      - name: x\n        silence: { key: [sensor], after: 5s }\n",
            "{ key: [sensor], after",
            0,
            "rule \"x\": \"totals\" is a changelog",
            "materialize it with a table and watch it with a `sql` rule",
        ),
        (
            "  alerts:\n    kind: insight\n    inputs: [per_sec]\n    placement: edge\n    rules:\n      - name: x\n        silence: { after: 5s }\n",
            "edge",
            0,
            "an insight runs in the cloud",
            "remove `placement: edge`",
        ),
        (
            "  alerts:\n    kind: insight\n    inputs: [per_sec]\n    rules:\n      - name: x\n        silence: { after: 5s }\n  printed: { kind: stdout, inputs: [per_sec.control] }\n",
            "per_sec.control",
            0,
            "only insight nodes have a control output",
            "read \"per_sec\" instead",
        ),
    ];
    for (tail, needle, nth, message, hint) in cases {
        let text = format!("{GOOD_PREFIX}{tail}");
        let rendered = errors(&text);
        let position = at(&text, needle, *nth);
        let line = rendered
            .lines()
            .enumerate()
            .find(|(_, l)| l.contains(message))
            .unwrap_or_else(|| panic!("no \"{message}\" in:\n{rendered}"));
        assert!(
            line.1.starts_with(&format!("{position}: error: ")),
            "expected at {position}:\n{rendered}"
        );
        if !hint.is_empty() {
            let next = rendered.lines().nth(line.0 + 1).unwrap_or_default();
            assert!(next.contains(hint), "hint \"{hint}\" missing:\n{rendered}");
        }
    }
}
