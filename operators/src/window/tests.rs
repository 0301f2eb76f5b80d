//! Tests of the window aggregator: a hand-computed case, configuration errors, and an oracle
//! test against a naive from-scratch recomputation.

use std::collections::BTreeMap;

use arrow::array::{Int64Array, StringArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use super::*;

fn schema() -> EventSchema {
    EventSchema::new(vec![
        ("id".into(), FieldType::I64),
        ("ts".into(), FieldType::TimestampMs),
        ("device".into(), FieldType::String),
        ("zone".into(), FieldType::I64),
        ("x".into(), FieldType::F64),
        ("n".into(), FieldType::I64),
    ])
}

/// One input row of [`schema`].
#[derive(Debug, Clone)]
struct Row {
    id: i64,
    ts: Option<i64>,
    device: Option<String>,
    zone: Option<i64>,
    x: Option<f64>,
    n: Option<i64>,
}

fn batch(rows: &[Row]) -> RecordBatch {
    RecordBatch::try_new(
        schema().to_arrow(),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.id))),
            Arc::new(
                rows.iter()
                    .map(|r| r.ts)
                    .collect::<TimestampMillisecondArray>(),
            ),
            Arc::new(
                rows.iter()
                    .map(|r| r.device.clone())
                    .collect::<StringArray>(),
            ),
            Arc::new(rows.iter().map(|r| r.zone).collect::<Int64Array>()),
            Arc::new(rows.iter().map(|r| r.x).collect::<Float64Array>()),
            Arc::new(rows.iter().map(|r| r.n).collect::<Int64Array>()),
        ],
    )
    .unwrap()
}

fn ids(b: &RecordBatch) -> Vec<i64> {
    b.column(0).as_primitive::<Int64Type>().values().to_vec()
}

fn agg(func: AggregateFn, field: &str) -> AggregateSpec {
    AggregateSpec {
        func,
        field: field.into(),
        output: format!("{}_{field}", func.name()),
    }
}

/// One output cell, typed.
#[derive(Debug, Clone)]
enum Cell {
    I(Option<i64>),
    F(Option<f64>),
    S(Option<String>),
}

fn same(a: &Cell, b: &Cell) -> bool {
    match (a, b) {
        (Cell::I(a), Cell::I(b)) => a == b,
        (Cell::S(a), Cell::S(b)) => a == b,
        (Cell::F(Some(a)), Cell::F(Some(b))) => {
            (a.is_nan() && b.is_nan())
                || a == b
                || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
        }
        (Cell::F(None), Cell::F(None)) => true,
        _ => false,
    }
}

fn cells(b: &RecordBatch) -> Vec<Vec<Cell>> {
    (0..b.num_rows())
        .map(|r| {
            b.columns()
                .iter()
                .map(|c| match c.data_type() {
                    DataType::Float64 => {
                        let a = c.as_primitive::<Float64Type>();
                        Cell::F(a.is_valid(r).then(|| a.value(r)))
                    }
                    DataType::Utf8 => {
                        let a = c.as_string::<i32>();
                        Cell::S(a.is_valid(r).then(|| a.value(r).to_string()))
                    }
                    DataType::Int64 => {
                        let a = c.as_primitive::<Int64Type>();
                        Cell::I(a.is_valid(r).then(|| a.value(r)))
                    }
                    _ => {
                        let a = c.as_primitive::<TimestampMillisecondType>();
                        Cell::I(a.is_valid(r).then(|| a.value(r)))
                    }
                })
                .collect()
        })
        .collect()
}

fn row(id: i64, ts: i64, device: Option<&str>, x: Option<f64>) -> Row {
    Row {
        id,
        ts: Some(ts),
        device: device.map(str::to_string),
        zone: Some(1),
        x,
        n: Some(id),
    }
}

#[test]
fn hand_computed_tumbling_window() {
    let aggs: Vec<AggregateSpec> = AggregateFn::ALL
        .iter()
        .map(|&f| agg(f, "x"))
        .chain([agg(AggregateFn::Count, "ts"), agg(AggregateFn::Sum, "n")])
        .collect();
    let mut w = WindowAggregator::new(
        &schema(),
        "ts",
        &["device".into()],
        &aggs,
        WindowSpec::tumbling(1000),
    )
    .unwrap();
    assert_eq!(
        w.output_schema().names().collect::<Vec<_>>()[..5],
        ["window_start", "window_end", "device", "count_x", "sum_x"]
    );
    let out = w
        .push(&batch(&[
            row(1, 100, Some("a"), Some(1.0)),
            row(2, 50, Some("a"), Some(3.0)),
            row(3, 900, Some("b"), Some(f64::NAN)),
            row(4, 1500, Some("a"), Some(2.0)),
            row(5, 700, None, None),
            Row {
                ts: None,
                ..row(6, 0, Some("a"), Some(9.0))
            },
        ]))
        .unwrap();
    assert!(out.late.is_none());
    let (invalid, reason) = out.invalid.unwrap();
    assert_eq!(ids(&invalid), [6]);
    assert_eq!(reason, "null timestamp in field \"ts\"");
    assert_eq!(w.open_groups(), 4);
    assert_eq!(w.earliest_open_start(), Some(0));
    assert!(w.advance(999).unwrap().is_none());
    let res = w.advance(1000).unwrap().unwrap();
    assert_eq!(w.open_groups(), 1);
    assert_eq!(w.earliest_open_start(), Some(1000));
    use Cell::{F, I, S};
    let s = |v: &str| S(Some(v.into()));
    let expected = vec![
        // null key first
        vec![
            I(Some(0)),
            I(Some(1000)),
            S(None),
            I(Some(0)),
            F(None),
            F(None),
            F(None),
            F(None),
            F(None),
            F(None),
            F(None),
            F(None),
            F(None),
            F(None),
            I(Some(1)),
            I(Some(5)),
        ],
        vec![
            I(Some(0)),
            I(Some(1000)),
            s("a"),
            I(Some(2)),
            F(Some(4.0)),
            F(Some(1.0)),
            F(Some(3.0)),
            F(Some(2.0)),
            F(Some(2f64.sqrt())),
            F(Some(3.0)),
            F(Some(1.0)),
            F(Some(2.0)),
            F(Some(2.9)),
            F(Some(2.98)),
            I(Some(2)),
            I(Some(3)),
        ],
        vec![
            I(Some(0)),
            I(Some(1000)),
            s("b"),
            I(Some(1)),
            F(Some(f64::NAN)),
            F(None),
            F(None),
            F(Some(f64::NAN)),
            F(None),
            F(Some(f64::NAN)),
            F(Some(f64::NAN)),
            F(None),
            F(None),
            F(None),
            I(Some(1)),
            I(Some(3)),
        ],
    ];
    let got = cells(&res);
    assert_eq!(got.len(), expected.len());
    for (g, e) in got.iter().zip(&expected) {
        assert!(
            g.iter().zip(e).all(|(a, b)| same(a, b)),
            "\n got {g:?}\nwant {e:?}"
        );
    }
    // Rows of closed windows come back as late, exactly; open ones are still taken.
    let out = w
        .push(&batch(&[
            row(7, 999, Some("a"), Some(1.0)),
            row(8, 1000, Some("a"), Some(1.0)),
            row(9, -5, Some("z"), None),
        ]))
        .unwrap();
    assert_eq!(ids(&out.late.unwrap()), [7, 9]);
    assert!(out.invalid.is_none());
    // A smaller watermark is ignored.
    assert!(w.advance(10).unwrap().is_none());
    let res = w.advance(2000).unwrap().unwrap();
    assert_eq!(res.num_rows(), 1);
    assert_eq!(res.column(3).as_primitive::<Int64Type>().value(0), 2);
    assert_eq!(w.open_groups(), 0);
    assert_eq!(w.earliest_open_start(), None);
}

#[test]
fn hopping_rows_land_in_every_window_and_lateness_keeps_windows_open() {
    let spec = WindowSpec {
        size_ms: 30,
        slide_ms: 10,
        allowed_lateness_ms: 5,
    };
    let mut w = WindowAggregator::new(&schema(), "ts", &[], &[agg(AggregateFn::Count, "id")], spec)
        .unwrap();
    assert!(
        w.push(&batch(&[row(1, 25, None, None)]))
            .unwrap()
            .late
            .is_none()
    );
    // Windows containing 25: [0,30), [10,40), [20,50).
    assert_eq!(w.open_groups(), 3);
    let r = w.advance(35).unwrap().unwrap();
    assert_eq!(cells(&r).len(), 1);
    assert!(same(&cells(&r)[0][0], &Cell::I(Some(0))));
    // 12 is in [0,30) (closed), [10,40) (open until 45): not late.
    let out = w.push(&batch(&[row(2, 12, None, None)])).unwrap();
    assert!(out.late.is_none());
    let r = w.advance(45).unwrap().unwrap();
    assert_eq!(r.column(2).as_primitive::<Int64Type>().values()[..], [2]);
    let out = w.push(&batch(&[row(3, 19, None, None)])).unwrap();
    assert_eq!(ids(&out.late.unwrap()), [3]);
}

#[test]
fn percentiles_interpolate_linearly_and_survive_infinities() {
    let inf = f64::INFINITY;
    assert_eq!(percentile_sorted(&[], 0.5), None);
    assert_eq!(percentile_sorted(&[1.0, 2.0, 3.0, 4.0], 0.5), Some(2.5));
    let p99 = percentile_sorted(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.99).unwrap();
    assert!((p99 - 4.96).abs() < 1e-12, "{p99}");
    assert_eq!(percentile_sorted(&[4.0, 5.0, inf], 0.5), Some(5.0));
    assert_eq!(percentile_sorted(&[4.0, 5.0, inf], 0.75), Some(inf));
    assert_eq!(percentile_sorted(&[-inf, 5.0], 0.25), Some(-inf));
    assert!(percentile_sorted(&[-inf, inf], 0.5).unwrap().is_nan());
}

#[test]
fn rejects_bad_configuration_with_user_errors() {
    let s = schema();
    let ok = [agg(AggregateFn::Mean, "x")];
    let t = WindowSpec::tumbling(1000);
    let bad = |r: Result<WindowAggregator>| match r {
        Err(OperatorError::User(m)) => m,
        other => panic!("expected a user error, got {other:?}"),
    };
    assert!(bad(WindowAggregator::new(&s, "id", &[], &ok, t)).contains("timestamp_ms"));
    assert!(bad(WindowAggregator::new(&s, "nope", &[], &ok, t)).contains("nope"));
    assert!(
        bad(WindowAggregator::new(
            &s,
            "ts",
            &[],
            &[agg(AggregateFn::Mean, "device")],
            t
        ))
        .contains("i64 or f64")
    );
    // count accepts any type
    assert!(WindowAggregator::new(&s, "ts", &[], &[agg(AggregateFn::Count, "device")], t).is_ok());
    let twice = [agg(AggregateFn::Mean, "x"), agg(AggregateFn::Mean, "x")];
    assert!(bad(WindowAggregator::new(&s, "ts", &[], &twice, t)).contains("twice"));
    for spec in [
        WindowSpec::tumbling(0),
        WindowSpec {
            size_ms: 100,
            slide_ms: 30,
            allowed_lateness_ms: 0,
        },
        WindowSpec {
            size_ms: 100,
            slide_ms: 200,
            allowed_lateness_ms: 0,
        },
        WindowSpec {
            size_ms: 100,
            slide_ms: 100,
            allowed_lateness_ms: -1,
        },
    ] {
        bad(WindowAggregator::new(&s, "ts", &[], &ok, spec));
    }
    assert_eq!(
        AggregateFn::ALL.map(|f| AggregateFn::from_name(f.name())),
        AggregateFn::ALL.map(Some)
    );
}

#[test]
fn timestamps_at_the_ends_of_the_range_are_invalid_not_a_panic() {
    let mut w = WindowAggregator::new(
        &schema(),
        "ts",
        &[],
        &[agg(AggregateFn::Count, "id")],
        WindowSpec::tumbling(1000),
    )
    .unwrap();
    let out = w
        .push(&batch(&[
            row(1, i64::MIN, None, None),
            row(2, i64::MAX, None, None),
            row(3, 0, None, None),
        ]))
        .unwrap();
    assert_eq!(ids(&out.invalid.unwrap().0), [1, 2]);
    assert_eq!(w.advance(i64::MAX).unwrap().unwrap().num_rows(), 1);
}

/// The naive recomputation: every accepted row, grouped by (window start, key) in a BTreeMap.
fn oracle(
    accepted: &[Row],
    key: &[String],
    aggs: &[AggregateSpec],
    spec: WindowSpec,
    closing: impl Fn(i64) -> bool,
) -> Vec<Vec<Cell>> {
    type Key = Vec<Cell>;
    let mut groups: BTreeMap<(i64, String), (Key, Vec<&Row>)> = BTreeMap::new();
    for r in accepted {
        let ts = r.ts.unwrap();
        let mut start = ts.div_euclid(spec.slide_ms) * spec.slide_ms;
        while start > ts - spec.size_ms {
            if closing(start) {
                let cells: Key = key
                    .iter()
                    .map(|k| match k.as_str() {
                        "device" => Cell::S(r.device.clone()),
                        _ => Cell::I(r.zone),
                    })
                    .collect();
                // A sortable rendering of the key: nulls first, then values in order.
                let sort_key = key
                    .iter()
                    .map(|k| match k.as_str() {
                        "device" => match &r.device {
                            None => "0".to_string(),
                            Some(d) => format!("1{d}"),
                        },
                        _ => match r.zone {
                            None => "0".to_string(),
                            Some(z) => format!("1{:020}", z as i128 - i64::MIN as i128),
                        },
                    })
                    .collect::<Vec<_>>()
                    .join("\u{0}");
                groups
                    .entry((start, sort_key))
                    .or_insert_with(|| (cells, Vec::new()))
                    .1
                    .push(r);
            }
            start -= spec.slide_ms;
        }
    }
    let mut out = Vec::new();
    for ((start, _), (key_cells, rows)) in groups {
        let mut line = vec![Cell::I(Some(start)), Cell::I(Some(start + spec.size_ms))];
        line.extend(key_cells);
        for a in aggs {
            let is_int = a.field == "n";
            // Non-null values with their timestamps, in arrival order.
            let vals: Vec<(i64, f64, i64)> = rows
                .iter()
                .filter_map(|r| match a.field.as_str() {
                    "x" => r.x.map(|x| (r.ts.unwrap(), x, 0)),
                    "n" => r.n.map(|n| (r.ts.unwrap(), n as f64, n)),
                    "device" => r.device.as_ref().map(|_| (0, 0.0, 0)),
                    _ => Some((0, 0.0, 0)),
                })
                .collect();
            let ordered: Vec<f64> = vals.iter().map(|v| v.1).filter(|v| !v.is_nan()).collect();
            let num = |f: Option<(f64, i64)>| {
                if is_int {
                    Cell::I(f.map(|f| f.1))
                } else {
                    Cell::F(f.map(|f| f.0))
                }
            };
            let pct = |q: f64| {
                let mut s = ordered.clone();
                s.sort_by(f64::total_cmp);
                Cell::F((!s.is_empty()).then(|| {
                    let pos = (s.len() - 1) as f64 * q;
                    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
                    s[lo] + (s[hi] - s[lo]) * (pos - lo as f64)
                }))
            };
            let n = vals.len();
            let cell = match a.func {
                AggregateFn::Count => Cell::I(Some(n as i64)),
                AggregateFn::Sum => num((n > 0).then(|| {
                    (
                        vals.iter().map(|v| v.1).sum(),
                        vals.iter().fold(0i64, |s, v| s.wrapping_add(v.2)),
                    )
                })),
                AggregateFn::Min => {
                    let m = vals
                        .iter()
                        .filter(|v| !v.1.is_nan())
                        .min_by(|a, b| a.1.total_cmp(&b.1).then(a.2.cmp(&b.2)));
                    num(m.map(|v| (v.1, v.2)))
                }
                AggregateFn::Max => {
                    let m = vals
                        .iter()
                        .filter(|v| !v.1.is_nan())
                        .max_by(|a, b| a.1.total_cmp(&b.1).then(a.2.cmp(&b.2)));
                    num(m.map(|v| (v.1, v.2)))
                }
                AggregateFn::Mean => {
                    Cell::F((n > 0).then(|| vals.iter().map(|v| v.1).sum::<f64>() / n as f64))
                }
                AggregateFn::Stddev => Cell::F((n > 1).then(|| {
                    let mean = vals.iter().map(|v| v.1).sum::<f64>() / n as f64;
                    (vals.iter().map(|v| (v.1 - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
                })),
                AggregateFn::First => {
                    // min_by_key keeps the first of equal elements: arrival order.
                    num(vals.iter().min_by_key(|v| v.0).map(|v| (v.1, v.2)))
                }
                AggregateFn::Last => {
                    // max_by_key keeps the last of equal elements: arrival order.
                    num(vals.iter().max_by_key(|v| v.0).map(|v| (v.1, v.2)))
                }
                AggregateFn::P50 => pct(0.5),
                AggregateFn::P95 => pct(0.95),
                AggregateFn::P99 => pct(0.99),
            };
            line.push(cell);
        }
        out.push(line);
    }
    out
}

fn random_row(rng: &mut Xoshiro256PlusPlus, id: i64, now: i64) -> Row {
    let ts = if rng.random_bool(0.02) {
        None
    } else if rng.random_bool(0.05) {
        Some(now - rng.random_range(0..20_000))
    } else {
        Some(now + rng.random_range(-3000..500))
    };
    Row {
        id,
        ts,
        device: match rng.random_range(0..6) {
            0 => None,
            k => Some(format!("dev{k}")),
        },
        zone: match rng.random_range(0..4) {
            0 => None,
            k => Some(k - 2),
        },
        x: match rng.random_range(0..20) {
            0 => None,
            1 => Some(f64::NAN),
            2 => Some(-0.0),
            3 => Some(rng.random_range(-1e6..1e6)),
            _ => Some(rng.random_range(0..50) as f64 / 4.0),
        },
        n: match rng.random_range(0..30) {
            0..3 => None,
            3 => Some(rng.random_range(i64::MAX / 4..i64::MAX)),
            _ => Some(rng.random_range(-100..100)),
        },
    }
}

fn check_open_state(
    w: &WindowAggregator,
    accepted: &[Row],
    key: &[String],
    spec: WindowSpec,
    wm: i64,
) {
    let mut open = std::collections::BTreeSet::new();
    for r in accepted {
        let ts = r.ts.unwrap();
        let mut start = ts.div_euclid(spec.slide_ms) * spec.slide_ms;
        while start > ts - spec.size_ms {
            if wm == i64::MIN || start + spec.size_ms + spec.allowed_lateness_ms > wm {
                let device = key.iter().any(|k| k == "device").then(|| r.device.clone());
                let zone = key.iter().any(|k| k == "zone").then_some(r.zone);
                open.insert((start, device, zone));
            }
            start -= spec.slide_ms;
        }
    }
    assert_eq!(w.open_groups(), open.len());
    assert_eq!(w.earliest_open_start(), open.first().map(|g| g.0));
}

#[test]
fn random_batches_match_naive_recomputation() {
    let all_aggs: Vec<AggregateSpec> = AggregateFn::ALL
        .iter()
        .flat_map(|&f| [agg(f, "x"), agg(f, "n")])
        .chain([
            agg(AggregateFn::Count, "ts"),
            agg(AggregateFn::Count, "device"),
        ])
        .collect();
    for seed in 0..40u64 {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let slide = [100, 250, 1000][rng.random_range(0..3)];
        let size = slide * [1, 1, 2, 4][rng.random_range(0..4)];
        let spec = WindowSpec {
            size_ms: size,
            slide_ms: slide,
            allowed_lateness_ms: [0, 0, 300, 2000][rng.random_range(0..4)],
        };
        let key: Vec<String> = match rng.random_range(0..3) {
            0 => vec![],
            1 => vec!["device".into()],
            _ => vec!["device".into(), "zone".into()],
        };
        let aggs: Vec<AggregateSpec> = all_aggs
            .iter()
            .filter(|_| rng.random_bool(0.6))
            .cloned()
            .chain([agg(AggregateFn::Count, "ts")].into_iter().take(1))
            .enumerate()
            .map(|(i, mut a)| {
                a.output = format!("{}_{i}", a.output);
                a
            })
            .collect();
        let ctx = format!("seed {seed}, {spec:?}, key {key:?}");
        let mut w = WindowAggregator::new(&schema(), "ts", &key, &aggs, spec).unwrap();
        let mut now = rng.random_range(-50_000..50_000);
        let mut wm = i64::MIN;
        let mut accepted: Vec<Row> = Vec::new();
        let mut id = 0;
        for step in 0..rng.random_range(5..40) {
            let n = rng.random_range(0..300);
            let rows: Vec<Row> = (0..n)
                .map(|_| {
                    id += 1;
                    random_row(&mut rng, id, now)
                })
                .collect();
            let out = w.push(&batch(&rows)).unwrap();
            let mut want_late = Vec::new();
            let mut want_invalid = Vec::new();
            for r in &rows {
                match r.ts {
                    None => want_invalid.push(r.id),
                    Some(ts) => {
                        let latest = ts.div_euclid(slide) * slide;
                        if wm != i64::MIN && latest + size + spec.allowed_lateness_ms <= wm {
                            want_late.push(r.id);
                        } else {
                            accepted.push(r.clone());
                        }
                    }
                }
            }
            assert_eq!(
                out.late.map(|b| ids(&b)).unwrap_or_default(),
                want_late,
                "{ctx} step {step}"
            );
            assert_eq!(
                out.invalid.map(|b| ids(&b.0)).unwrap_or_default(),
                want_invalid,
                "{ctx} step {step}"
            );
            now += rng.random_range(0..1500);
            if rng.random_bool(0.7) {
                let new_wm = if rng.random_bool(0.1) {
                    wm.saturating_sub(100) // going backwards: ignored
                } else {
                    now - rng.random_range(0..2500)
                };
                let got = w.advance(new_wm).unwrap();
                let prev = wm;
                wm = wm.max(new_wm);
                let lateness = spec.allowed_lateness_ms;
                let want = oracle(&accepted, &key, &aggs, spec, |s| {
                    let close = s + size + lateness;
                    (prev == i64::MIN || close > prev) && close <= wm
                });
                let got = got.map(|b| cells(&b)).unwrap_or_default();
                assert_eq!(got.len(), want.len(), "{ctx} step {step}: rows");
                for (g, e) in got.iter().zip(&want) {
                    assert!(
                        g.len() == e.len() && g.iter().zip(e).all(|(a, b)| same(a, b)),
                        "{ctx} step {step}\n got {g:?}\nwant {e:?}"
                    );
                }
                check_open_state(&w, &accepted, &key, spec, wm);
            }
        }
        // Close everything and check the rest.
        let got = w
            .advance(i64::MAX)
            .unwrap()
            .map(|b| cells(&b))
            .unwrap_or_default();
        let prev = wm;
        let want = oracle(&accepted, &key, &aggs, spec, |s| {
            prev == i64::MIN || s + size + spec.allowed_lateness_ms > prev
        });
        assert_eq!(got.len(), want.len(), "{ctx} final rows");
        for (g, e) in got.iter().zip(&want) {
            assert!(
                g.iter().zip(e).all(|(a, b)| same(a, b)),
                "{ctx} final\n got {g:?}\nwant {e:?}"
            );
        }
        assert_eq!(w.open_groups(), 0);
    }
}

/// Regression guard for key garbage collection: once many keys stop appearing, their ids are
/// recycled, and keys still open keep aggregating correctly.
#[test]
fn dead_keys_are_forgotten_and_live_keys_survive_renumbering() {
    let mut w = WindowAggregator::new(
        &schema(),
        "ts",
        &["device".into()],
        &[agg(AggregateFn::Count, "id"), agg(AggregateFn::Sum, "n")],
        WindowSpec::tumbling(1000),
    )
    .unwrap();
    let mut id = 0;
    for window in 0..4i64 {
        let rows: Vec<Row> = (0..10_000)
            .map(|i| {
                id += 1;
                // "live" appears in every window, the rest only once.
                let dev = if i % 2 == 0 {
                    "live".to_string()
                } else {
                    format!("w{window}-{i}")
                };
                row(id, window * 1000 + 1, Some(&dev), None)
            })
            .collect();
        w.push(&batch(&rows)).unwrap();
        // The next window is already open when this one closes.
        w.push(&batch(&[row(0, window * 1000 + 1001, Some("live"), None)]))
            .unwrap();
        let out = w.advance(window * 1000 + 1000).unwrap().unwrap();
        assert_eq!(out.num_rows(), 5001);
        let devices = out.column(2).as_string::<i32>();
        let live = (0..out.num_rows())
            .find(|&r| devices.value(r) == "live")
            .unwrap();
        let count = out.column(3).as_primitive::<Int64Type>().value(live);
        assert_eq!(count, if window == 0 { 5000 } else { 5001 });
        // Only "live" is still used, by the next window.
        assert_eq!(w.interner.len(), 1, "dead keys were not forgotten");
    }
}

/// Property test of the outputs the SIMD kernels compute (`count`, `min`, `max` of an f64
/// field) and of `sum`/`mean` next to them, bit for bit, against a naive per-group loop in
/// arrival order. Few keys put many rows per group in a batch (the kernel path, in place when a
/// window's rows are contiguous, gathered otherwise), many keys few (the row-by-row path).
mod exact {
    use proptest::prelude::*;

    use super::*;

    /// One row: timestamp, key, value.
    type Input = (i64, Option<i64>, Option<f64>);

    fn input_schema() -> EventSchema {
        EventSchema::new(vec![
            ("ts".into(), FieldType::TimestampMs),
            ("k".into(), FieldType::I64),
            ("x".into(), FieldType::F64),
        ])
    }

    fn to_batch(rows: &[Input]) -> RecordBatch {
        RecordBatch::try_new(
            input_schema().to_arrow(),
            vec![
                Arc::new(TimestampMillisecondArray::from_iter_values(
                    rows.iter().map(|r| r.0),
                )),
                Arc::new(rows.iter().map(|r| r.1).collect::<Int64Array>()),
                Arc::new(rows.iter().map(|r| r.2).collect::<Float64Array>()),
            ],
        )
        .unwrap()
    }

    const FUNCS: [AggregateFn; 5] = [
        AggregateFn::Count,
        AggregateFn::Min,
        AggregateFn::Max,
        AggregateFn::Sum,
        AggregateFn::Mean,
    ];

    /// An output row: window start, key, then the bits of each aggregate (count as i64 bits,
    /// None for null, NaN canonicalised since its payload is unspecified).
    type Out = (i64, Option<i64>, Vec<Option<u64>>);

    fn bits(x: f64) -> u64 {
        if x.is_nan() {
            f64::NAN.to_bits()
        } else {
            x.to_bits()
        }
    }

    /// The naive recomputation: every group's non-null values in the aggregator's order, folded
    /// one by one; min (max) is the first smallest (largest) non-NaN value. That order is
    /// arrival order, except that a hopping window takes a batch's rows in passes: first the
    /// rows for which it is the latest window, then those for which it is the one before, ...
    fn naive(batches: &[Vec<Input>], keyed: bool, size: i64, slide: i64) -> Vec<Out> {
        let mut groups: BTreeMap<(i64, Option<i64>), Vec<Option<f64>>> = BTreeMap::new();
        for batch in batches {
            for pass in 0..size / slide {
                for &(ts, k, x) in batch {
                    let start = ts.div_euclid(slide) * slide - pass * slide;
                    let key = if keyed { k } else { None };
                    groups.entry((start, key)).or_default().push(x);
                }
            }
        }
        groups
            .into_iter()
            .map(|((start, key), xs)| {
                let vals: Vec<f64> = xs.into_iter().flatten().collect();
                let (mut sum, mut min, mut max) = (0.0f64, None::<f64>, None::<f64>);
                for &x in &vals {
                    sum += x;
                    if !x.is_nan() {
                        if min.is_none_or(|m| x < m) {
                            min = Some(x);
                        }
                        if max.is_none_or(|m| x > m) {
                            max = Some(x);
                        }
                    }
                }
                let n = vals.len();
                let some = |x: f64| (n > 0).then(|| bits(x));
                let cells = vec![
                    Some(n as u64),
                    min.map(bits),
                    max.map(bits),
                    some(sum),
                    some(sum / n as f64),
                ];
                (start, key, cells)
            })
            .collect()
    }

    fn run(batches: &[Vec<Input>], keyed: bool, size: i64, slide: i64) -> Vec<Out> {
        let aggs: Vec<AggregateSpec> = FUNCS.iter().map(|&f| agg(f, "x")).collect();
        let key: Vec<String> = if keyed { vec!["k".into()] } else { vec![] };
        let spec = WindowSpec {
            size_ms: size,
            slide_ms: slide,
            allowed_lateness_ms: 0,
        };
        let mut w = WindowAggregator::new(&input_schema(), "ts", &key, &aggs, spec).unwrap();
        for b in batches {
            let out = w.push(&to_batch(b)).unwrap();
            assert!(out.late.is_none() && out.invalid.is_none());
        }
        let Some(out) = w.advance(i64::MAX).unwrap() else {
            return Vec::new();
        };
        let first = if keyed { 3 } else { 2 };
        let starts = out.column(0).as_primitive::<TimestampMillisecondType>();
        (0..out.num_rows())
            .map(|r| {
                let key = keyed.then(|| {
                    let k = out.column(2).as_primitive::<Int64Type>();
                    k.is_valid(r).then(|| k.value(r))
                });
                let count = out.column(first).as_primitive::<Int64Type>().value(r);
                let mut cells = vec![Some(count as u64)];
                for c in first + 1..out.num_columns() {
                    let a = out.column(c).as_primitive::<Float64Type>();
                    cells.push(a.is_valid(r).then(|| bits(a.value(r))));
                }
                (starts.value(r), key.flatten(), cells)
            })
            .collect()
    }

    fn value() -> impl Strategy<Value = Option<f64>> {
        prop_oneof![
            2 => Just(None),
            1 => Just(Some(f64::NAN)),
            1 => Just(Some(f64::INFINITY)),
            1 => Just(Some(f64::NEG_INFINITY)),
            2 => Just(Some(0.0)),
            2 => Just(Some(-0.0)),
            4 => (-4i32..4).prop_map(|i| Some(f64::from(i))),
            6 => (-1e6f64..1e6).prop_map(Some),
        ]
    }

    /// Batches of rows over a few seconds, with `keys` distinct keys and a null key.
    fn batches(keys: i64) -> impl Strategy<Value = Vec<Vec<Input>>> {
        let row = (0i64..4000, prop::option::weighted(0.9, 0..keys), value());
        prop::collection::vec(prop::collection::vec(row, 0..300), 0..6)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn count_min_max_sum_mean_are_bit_identical_to_a_naive_loop(
            mut data in prop_oneof![Just(1i64), Just(3), Just(60)].prop_flat_map(batches),
            keyed in any::<bool>(),
            hopping in any::<bool>(),
            sorted in any::<bool>(),
        ) {
            if sorted {
                // Each batch in time order: a window's rows are contiguous (read in place).
                for b in &mut data {
                    b.sort_by_key(|r| r.0);
                }
            }
            let (size, slide) = if hopping { (2000, 1000) } else { (1000, 1000) };
            let got = run(&data, keyed, size, slide);
            let want = naive(&data, keyed, size, slide);
            prop_assert_eq!(got, want);
        }
    }

    /// Regression guard for signed zeros: the kernel's lanes can keep `+0.0` (row 8, lane 0)
    /// over an earlier `-0.0` (row 1, lane 1) as the min, where the row-by-row loop keeps the
    /// first zero; likewise for the max.
    #[test]
    fn a_zero_min_or_max_keeps_the_sign_of_the_first_zero() {
        let mut rows: Vec<Input> = (0..64).map(|i| (i, None, Some(1.0 + i as f64))).collect();
        rows[1].2 = Some(-0.0);
        rows[8].2 = Some(0.0);
        let neg: Vec<Input> = rows.iter().map(|r| (r.0, r.1, r.2.map(|x| -x))).collect();
        for b in [rows, neg] {
            let data = vec![b];
            let got = run(&data, false, 1000, 1000);
            assert_eq!(got, naive(&data, false, 1000, 1000));
            assert_eq!(got.len(), 1);
        }
    }
}
