//! Each rule gives the same incidents whatever the batching and watermark steps, and the
//! documented ones on small hand-made inputs.

use std::sync::Arc;

use arrow::array::{Float64Array, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

use super::*;

fn rows(rows: &[(i64, &str, &str, f64)]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        Field::new("device", DataType::Utf8, true),
        Field::new("site", DataType::Utf8, true),
        Field::new("value", DataType::Float64, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(TimestampMillisecondArray::from_iter_values(
                rows.iter().map(|r| r.0),
            )),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.3))),
        ],
    )
    .unwrap()
}

fn info(name: &str) -> RuleInfo {
    RuleInfo {
        name: name.into(),
        severity: Severity::Warning,
    }
}

/// Feeds `data` sorted by time in chunks of `chunk` rows, advancing the watermark to each
/// chunk's first time before pushing it, then to the end of time.
fn replay<P, A>(
    data: &[(i64, &str, &str, f64)],
    chunk: usize,
    mut push: P,
    mut advance: A,
) -> Vec<Incident>
where
    P: FnMut(&RecordBatch),
    A: FnMut(i64) -> Vec<Incident>,
{
    let mut out = Vec::new();
    for part in data.chunks(chunk) {
        out.extend(advance(part[0].0));
        push(&rows(part));
    }
    out.extend(advance(i64::MAX));
    out.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    out
}

fn sample() -> Vec<(i64, &'static str, &'static str, f64)> {
    let mut out = Vec::new();
    for i in 0..600i64 {
        let device = ["a", "b", "c", "d"][(i % 4) as usize];
        let site = if device < "c" { "s1" } else { "s2" };
        // device b stops between 200 and 300; device d drifts after 400.
        if device == "b" && (200..300).contains(&i) {
            continue;
        }
        let drift = if device == "d" && i > 400 {
            (i - 400) as f64
        } else {
            0.0
        };
        out.push((i * 10, device, site, 10.0 + (i % 7) as f64 * 0.1 + drift));
    }
    out
}

#[test]
fn incidents_do_not_depend_on_batching() {
    let data = sample();
    let run_all = |chunk: usize| {
        let mut c = Correlated::new(
            info("c"),
            CorrelatedSettings {
                by: vec!["site".into()],
                device: "device".into(),
                devices: 2,
                within_ms: 1000,
                time_field: "ts".into(),
            },
        );
        let corr = {
            let c = std::cell::RefCell::new(&mut c);
            replay(
                &data,
                chunk,
                |b| assert!(c.borrow_mut().push(b).unwrap().late.is_none()),
                |w| c.borrow_mut().advance(w),
            )
        };
        let mut d = Drift::new(
            info("d"),
            DriftSettings {
                key: vec!["device".into()],
                value: "value".into(),
                baseline_ms: 2000,
                shift: 4.0,
                min_samples: 10,
                per_device: true,
                time_field: "ts".into(),
            },
        );
        let drift = {
            let d = std::cell::RefCell::new(&mut d);
            replay(
                &data,
                chunk,
                |b| assert!(d.borrow_mut().push(b).unwrap().late.is_none()),
                |w| d.borrow_mut().advance(w),
            )
        };
        let mut s = Silence::new(
            info("s"),
            SilenceSettings {
                key: vec!["device".into()],
                after_ms: 200,
                per_device: true,
                time_field: "ts".into(),
            },
        );
        let silence = {
            let s = std::cell::RefCell::new(&mut s);
            replay(
                &data,
                chunk,
                |b| assert!(s.borrow_mut().push(b).unwrap().late.is_none()),
                |w| s.borrow_mut().advance(w),
            )
        };
        (corr, drift, silence)
    };
    let whole = run_all(data.len());
    for chunk in [1, 7, 64] {
        assert_eq!(run_all(chunk), whole, "chunks of {chunk}");
    }
    let (corr, drift, silence) = whole;
    // Six 1 s windows of two sites, both of whose devices report, except site s1 in
    // [2000, 3000) where b is silent.
    assert_eq!(corr.len(), 11, "{corr:?}");
    assert!(!corr.iter().any(|i| i.key == "site=s1" && i.time == 3000));
    assert_eq!(drift.len(), 1, "{drift:?}");
    assert_eq!(drift[0].key, "device=d");
    assert_eq!(silence.len(), 1, "{silence:?}");
    assert_eq!(silence[0].key, "device=b");
    // b's last row before the gap is at i = 197 (i % 4 == 1): 1970 ms, deadline 2170 ms.
    assert_eq!(silence[0].time, 2170);
}

#[test]
fn a_row_behind_the_watermark_is_late_and_ignored() {
    let mut s = Silence::new(
        info("s"),
        SilenceSettings {
            key: vec!["device".into()],
            after_ms: 100,
            per_device: true,
            time_field: "ts".into(),
        },
    );
    s.push(&rows(&[(0, "a", "s", 1.0), (50, "b", "s", 1.0)]))
        .unwrap();
    assert!(s.advance(60).is_empty());
    let rejected = s
        .push(&rows(&[(10, "a", "s", 1.0), (500, "b", "s", 1.0)]))
        .unwrap();
    assert_eq!(rejected.late.map(|b| b.num_rows()), Some(1));
    let incidents = s.advance(i64::MAX);
    let keys: Vec<(&str, i64)> = incidents.iter().map(|i| (i.key.as_str(), i.time)).collect();
    assert_eq!(keys, vec![("device=b", 150), ("device=a", 100)]);
}

#[test]
fn the_end_of_the_input_is_not_a_silence() {
    let mut s = Silence::new(
        info("s"),
        SilenceSettings {
            key: vec!["device".into()],
            after_ms: 100,
            per_device: true,
            time_field: "ts".into(),
        },
    );
    s.push(&rows(&[(0, "a", "s", 1.0), (90, "b", "s", 1.0)]))
        .unwrap();
    assert!(s.advance(i64::MAX).is_empty());
}
