//! Anomaly detectors: per-key threshold and z-score scoring of a numeric field, row by row.
//!
//! A [`Detector`] is a batch-in/batch-out state machine: [`Detector::process`] scores every row
//! of a batch in order and returns the exceptions (or every row, with [`Emit::All`]) with two
//! added columns, `score` and `reason`. Its thresholds can be replaced while running
//! ([`Detector::set_kind`]), which is how the cloud reconfigures an edge.
//!
//! Null values are never exceptions and are not added to the statistics (score and reason are
//! null). A NaN value is always an exception with reason `"value is NaN"` and a null score.
//!
//! # SIMD kernels
//!
//! The threshold detector's rows are independent: when only exceptions are emitted, the
//! [`bounds_mask`] kernel finds them (NaN, or outside the bounds, among the valid rows: exactly
//! the row-by-row test) and only those rows are formatted.
//!
//! The z-score detector stays row by row, because no vectorised form gives the same results: a
//! row's score uses its key's statistics after every earlier row of the key, and whether an
//! earlier row entered them depends on that row's own score (exceptions are left out). Scoring a
//! batch against the statistics as of its start would change results, and the per-row means
//! and deviations the [`zscore`](crate::kernels::zscore) kernel could take are only known by
//! running the sequential loop, which computes the score anyway.

use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Float64Array, RecordBatch, StringBuilder};
use arrow::datatypes::{Float64Type, Int64Type};

use crate::error::{OperatorError, Result};
use crate::kernels::{Exec, Validity, bounds_mask};
use crate::schema::{EventSchema, FieldType};
use crate::window::keys::KeyInterner;
use crate::window::{check_batch, take_rows};

/// What makes a value an exception.
#[derive(Debug, Clone, PartialEq)]
pub enum DetectorKind {
    /// Exception when value < min or value > max (either bound optional, at least one set).
    Threshold {
        /// Lower bound (inclusive: `min` itself is normal).
        min: Option<f64>,
        /// Upper bound (inclusive).
        max: Option<f64>,
    },
    /// score = |x - mean| / stddev against the key's running statistics (Welford, over the
    /// values seen BEFORE x, sample stddev with divisor n - 1; exceptions are not added to the
    /// statistics so an anomaly does not mask the next), exception when score >= threshold and
    /// at least `min_samples` values were seen for the key. With fewer than 2 values there is
    /// no score; with a zero stddev a value different from the mean scores +inf.
    ZScore {
        /// The score at and above which a value is an exception.
        threshold: f64,
        /// Values a key must have seen before it can raise exceptions.
        min_samples: u64,
    },
}

impl DetectorKind {
    fn validate(&self) -> Result<()> {
        let err = |m: String| Err(OperatorError::User(m));
        match *self {
            DetectorKind::Threshold { min, max } => {
                if min.is_none() && max.is_none() {
                    return err("a threshold detector needs min, max or both".into());
                }
                if min.is_some_and(f64::is_nan) || max.is_some_and(f64::is_nan) {
                    return err("threshold bounds must be numbers, not NaN".into());
                }
                if let (Some(lo), Some(hi)) = (min, max)
                    && lo > hi
                {
                    return err(format!("threshold min ({lo}) is greater than max ({hi})"));
                }
            }
            DetectorKind::ZScore { threshold, .. } => {
                if !(threshold.is_finite() && threshold > 0.0) {
                    return err(format!(
                        "z-score threshold must be a finite number > 0, got {threshold}"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Which rows [`Detector::process`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emit {
    /// Only the exceptions.
    Exceptions,
    /// Every row; `reason` is null for normal rows.
    All,
}

/// Running statistics of one key (Welford).
#[derive(Debug, Clone, Copy, Default)]
struct Stats {
    n: u64,
    mean: f64,
    m2: f64,
}

impl Stats {
    fn add(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }

    /// Sample standard deviation; None below 2 values.
    fn stddev(&self) -> Option<f64> {
        (self.n >= 2).then(|| (self.m2 / (self.n - 1) as f64).abs().sqrt())
    }
}

/// Scores one numeric field of a keyed stream. See [`DetectorKind`].
#[derive(Debug)]
pub struct Detector {
    input: EventSchema,
    output: EventSchema,
    output_arrow: arrow::datatypes::SchemaRef,
    key_columns: Vec<usize>,
    value_column: usize,
    kind: DetectorKind,
    emit: Emit,
    interner: KeyInterner,
    stats: Vec<Stats>,
    key_ids: Vec<u32>,
    /// How the SIMD kernels run: on this thread (a timely worker), best instruction set.
    exec: Exec,
}

/// The rows a batch emits, with their scores and reasons.
#[derive(Default)]
struct Emitted {
    rows: Vec<u32>,
    scores: Vec<Option<f64>>,
    reasons: StringBuilder,
}

impl Emitted {
    /// Emits `row`; `reason` is Some for an exception.
    fn push(&mut self, row: usize, score: Option<f64>, reason: Option<&str>) {
        // Batches are at most u32::MAX rows (checked by the caller).
        self.rows.push(row as u32);
        self.scores.push(score);
        self.reasons.append_option(reason);
    }
}

/// The threshold detector on one valid value: its score and whether it is an exception, with
/// the reason written to `text`.
fn threshold_row(
    x: f64,
    min: Option<f64>,
    max: Option<f64>,
    text: &mut String,
) -> (Option<f64>, bool) {
    // Writing to a String cannot fail.
    if x.is_nan() {
        text.push_str("value is NaN");
        (None, true)
    } else if let Some(lo) = min.filter(|&lo| x < lo) {
        let _ = write!(text, "value {x} < min {lo}");
        (Some(lo - x), true)
    } else if let Some(hi) = max.filter(|&hi| x > hi) {
        let _ = write!(text, "value {x} > max {hi}");
        (Some(x - hi), true)
    } else {
        (Some(0.0), false)
    }
}

impl Detector {
    /// A detector of `value_field` (i64 or f64) per `key`. The input must not already have
    /// `score` or `reason` fields.
    pub fn new(
        input: &EventSchema,
        key: &[String],
        value_field: &str,
        kind: DetectorKind,
        emit: Emit,
    ) -> Result<Self> {
        kind.validate()?;
        let user = |m: String| OperatorError::User(m);
        let value_column = input.value_column_of(value_field, "detector")?;
        let key_columns = key
            .iter()
            .map(|k| input.column_of(k, "key"))
            .collect::<Result<Vec<_>>>()?;
        let key_types = key_columns.iter().map(|&i| input.fields()[i].1).collect();
        for extra in ["score", "reason"] {
            if input.field_type(extra).is_some() {
                return Err(user(format!(
                    "the detector adds a \"{extra}\" field but the input already has one"
                )));
            }
        }
        let mut fields = input.fields().to_vec();
        fields.push(("score".into(), FieldType::F64));
        fields.push(("reason".into(), FieldType::String));
        let output = EventSchema::new(fields);
        Ok(Detector {
            input: input.clone(),
            output_arrow: output.to_arrow(),
            output,
            key_columns,
            value_column,
            kind,
            emit,
            interner: KeyInterner::new(key_types),
            stats: Vec::new(),
            key_ids: Vec::new(),
            exec: Exec::new().serial(),
        })
    }

    /// The input fields, then `score: f64` and `reason: string` (reason null for normal rows
    /// when emitting all). Threshold scores are the distance outside the bound (0 inside).
    pub fn output_schema(&self) -> &EventSchema {
        &self.output
    }

    /// Number of keys with statistics.
    pub fn keys(&self) -> usize {
        self.interner.len()
    }

    /// Replaces the thresholds while running; takes effect for the next row processed. The
    /// statistics are kept. Error if the kind does not match the detector's.
    pub fn set_kind(&mut self, kind: DetectorKind) -> Result<()> {
        if std::mem::discriminant(&kind) != std::mem::discriminant(&self.kind) {
            return Err(OperatorError::User(format!(
                "cannot change a detector's kind at run time (from {:?} to {:?})",
                self.kind, kind
            )));
        }
        kind.validate()?;
        self.kind = kind;
        Ok(())
    }

    /// Scores a batch in row order; returns the rows to emit (None when nothing to emit).
    pub fn process(&mut self, batch: &RecordBatch) -> Result<Option<RecordBatch>> {
        check_batch(&self.input, batch)?;
        let n = batch.num_rows();
        if n == 0 {
            return Ok(None);
        }
        if n > u32::MAX as usize {
            return Err(OperatorError::User(format!(
                "batch of {n} rows is too large (max {})",
                u32::MAX
            )));
        }
        let key_cols: Vec<&ArrayRef> = self.key_columns.iter().map(|&i| batch.column(i)).collect();
        self.interner.intern(&key_cols, n, &mut self.key_ids)?;
        if self.stats.len() < self.interner.len() {
            self.stats.resize(self.interner.len(), Stats::default());
        }
        let col = batch.column(self.value_column);
        // An f64 column is read in place; an i64 one is converted first.
        let converted: Vec<f64>;
        let values: &[f64] = match (
            col.as_primitive_opt::<Float64Type>(),
            col.as_primitive_opt::<Int64Type>(),
        ) {
            (Some(a), _) => a.values(),
            (None, Some(a)) => {
                converted = a.values().iter().map(|&v| v as f64).collect();
                &converted
            }
            _ => return Err(OperatorError::Internal("detector value column type".into())),
        };
        let nulls = col.nulls().filter(|b| b.null_count() > 0);
        let valid = |row: usize| nulls.is_none_or(|b| b.is_valid(row));

        let mut out = Emitted::default();
        let mut text = String::new();
        let all = self.emit == Emit::All;
        match self.kind {
            DetectorKind::Threshold { min, max } if !all => {
                // Rows outside the mask are exactly those `threshold_row` finds normal.
                let mask = bounds_mask(self.exec, values, nulls.map(Validity::from), min, max)?;
                for row in mask.set_indices() {
                    text.clear();
                    let (score, exception) = threshold_row(values[row], min, max, &mut text);
                    if exception {
                        out.push(row, score, Some(&text));
                    }
                }
            }
            DetectorKind::Threshold { min, max } => {
                for (row, &x) in values.iter().enumerate() {
                    text.clear();
                    let (score, exception) = if valid(row) {
                        threshold_row(x, min, max, &mut text)
                    } else {
                        (None, false)
                    };
                    out.push(row, score, exception.then_some(text.as_str()));
                }
            }
            DetectorKind::ZScore {
                threshold,
                min_samples,
            } => {
                for (row, &x) in values.iter().enumerate() {
                    let stats = &mut self.stats[self.key_ids[row] as usize];
                    text.clear();
                    let (score, exception) = if !valid(row) {
                        (None, false)
                    } else if x.is_nan() {
                        text.push_str("value is NaN");
                        (None, true)
                    } else {
                        let score = stats.stddev().map(|sd| {
                            let d = (x - stats.mean).abs();
                            if sd > 0.0 {
                                d / sd
                            } else if d == 0.0 {
                                0.0
                            } else {
                                f64::INFINITY
                            }
                        });
                        let exception =
                            stats.n >= min_samples && score.is_some_and(|s| s >= threshold);
                        if exception {
                            // Writing to a String cannot fail.
                            let _ = write!(
                                text,
                                "z-score {:.2} >= {threshold} (mean {:.2}, stddev {:.2}, n {})",
                                score.unwrap_or_default(),
                                stats.mean,
                                stats.stddev().unwrap_or_default(),
                                stats.n
                            );
                        } else {
                            stats.add(x);
                        }
                        (score, exception)
                    };
                    if exception || all {
                        out.push(row, score, exception.then_some(text.as_str()));
                    }
                }
            }
        }
        let Emitted {
            rows,
            scores,
            mut reasons,
        } = out;
        if rows.is_empty() {
            return Ok(None);
        }
        let taken = if rows.len() == n {
            batch.clone()
        } else {
            take_rows(batch, &rows)?
        };
        let mut columns = taken.columns().to_vec();
        columns.push(Arc::new(Float64Array::from(scores)));
        columns.push(Arc::new(reasons.finish()));
        Ok(Some(RecordBatch::try_new(
            self.output_arrow.clone(),
            columns,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use rand::{RngExt, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;

    fn schema() -> EventSchema {
        EventSchema::new(vec![
            ("device".into(), FieldType::String),
            ("value".into(), FieldType::F64),
        ])
    }

    fn batch(rows: &[(Option<&str>, Option<f64>)]) -> RecordBatch {
        RecordBatch::try_new(
            schema().to_arrow(),
            vec![
                Arc::new(rows.iter().map(|r| r.0).collect::<StringArray>()),
                Arc::new(rows.iter().map(|r| r.1).collect::<Float64Array>()),
            ],
        )
        .unwrap()
    }

    fn strings(b: &RecordBatch, col: &str) -> Vec<Option<String>> {
        b.column_by_name(col)
            .unwrap()
            .as_string::<i32>()
            .iter()
            .map(|s| s.map(str::to_string))
            .collect()
    }

    fn floats(b: &RecordBatch, col: &str) -> Vec<Option<f64>> {
        b.column_by_name(col)
            .unwrap()
            .as_primitive::<Float64Type>()
            .iter()
            .collect()
    }

    fn threshold(min: Option<f64>, max: Option<f64>) -> DetectorKind {
        DetectorKind::Threshold { min, max }
    }

    #[test]
    fn threshold_scores_distance_and_explains() {
        let mut d = Detector::new(
            &schema(),
            &[],
            "value",
            threshold(Some(0.0), Some(10.0)),
            Emit::All,
        )
        .unwrap();
        let out = d
            .process(&batch(&[
                (Some("a"), Some(12.5)),
                (Some("a"), Some(5.0)),
                (Some("a"), Some(-3.0)),
                (Some("a"), Some(10.0)),
            ]))
            .unwrap()
            .unwrap();
        assert_eq!(out.num_columns(), 4);
        assert_eq!(
            floats(&out, "score"),
            vec![Some(2.5), Some(0.0), Some(3.0), Some(0.0)]
        );
        assert_eq!(
            strings(&out, "reason"),
            vec![
                Some("value 12.5 > max 10".into()),
                None,
                Some("value -3 < min 0".into()),
                None
            ]
        );
    }

    #[test]
    fn threshold_swap_takes_effect_on_the_next_batch() {
        let mut d = Detector::new(
            &schema(),
            &[],
            "value",
            threshold(None, Some(10.0)),
            Emit::Exceptions,
        )
        .unwrap();
        let b = batch(&[(Some("a"), Some(8.0)), (Some("a"), Some(11.0))]);
        assert_eq!(d.process(&b).unwrap().unwrap().num_rows(), 1);
        d.set_kind(threshold(None, Some(7.0))).unwrap();
        assert_eq!(d.process(&b).unwrap().unwrap().num_rows(), 2);
        d.set_kind(threshold(None, Some(20.0))).unwrap();
        assert!(d.process(&b).unwrap().is_none());
        let wrong = DetectorKind::ZScore {
            threshold: 3.0,
            min_samples: 2,
        };
        assert!(matches!(d.set_kind(wrong), Err(OperatorError::User(_))));
        assert!(d.set_kind(threshold(None, None)).is_err());
        assert!(d.set_kind(threshold(Some(3.0), Some(1.0))).is_err());
    }

    #[test]
    fn null_is_never_an_exception_and_nan_always_is() {
        let z = DetectorKind::ZScore {
            threshold: 3.0,
            min_samples: 2,
        };
        for kind in [threshold(Some(0.0), None), z] {
            let mut d =
                Detector::new(&schema(), &["device".into()], "value", kind, Emit::All).unwrap();
            let out = d
                .process(&batch(&[
                    (Some("a"), Some(1.0)),
                    (Some("a"), None),
                    (None, Some(f64::NAN)),
                    (Some("a"), Some(1.0)),
                ]))
                .unwrap()
                .unwrap();
            let reasons = strings(&out, "reason");
            assert_eq!(reasons[1], None);
            assert_eq!(reasons[2].as_deref(), Some("value is NaN"));
            assert_eq!(reasons[3], None);
            assert_eq!(floats(&out, "score")[1], None);
            assert_eq!(d.keys(), 2);
        }
    }

    #[test]
    fn zscore_reason_and_exceptions_do_not_mask_the_next() {
        let mut d = Detector::new(
            &schema(),
            &["device".into()],
            "value",
            DetectorKind::ZScore {
                threshold: 4.0,
                min_samples: 4,
            },
            Emit::Exceptions,
        )
        .unwrap();
        let mut rows: Vec<(Option<&str>, Option<f64>)> = [1.0, 1.1, 0.9, 1.0]
            .iter()
            .map(|&v| (Some("a"), Some(v)))
            .collect();
        rows.push((Some("a"), Some(100.0)));
        rows.push((Some("a"), Some(100.0)));
        let out = d.process(&batch(&rows)).unwrap().unwrap();
        assert_eq!(out.num_rows(), 2, "the second 100 is still an exception");
        let r = strings(&out, "reason");
        let expected_score = 99.0 / (0.02f64 / 3.0).sqrt();
        assert_eq!(
            r[0].as_deref(),
            Some(
                format!("z-score {expected_score:.2} >= 4 (mean 1.00, stddev 0.08, n 4)").as_str()
            )
        );
    }

    #[test]
    fn rejects_bad_configuration() {
        let s = schema();
        let t = threshold(None, Some(1.0));
        assert!(Detector::new(&s, &[], "device", t.clone(), Emit::All).is_err());
        assert!(Detector::new(&s, &[], "nope", t.clone(), Emit::All).is_err());
        assert!(Detector::new(&s, &["nope".into()], "value", t, Emit::All).is_err());
        let z = DetectorKind::ZScore {
            threshold: f64::NAN,
            min_samples: 1,
        };
        assert!(Detector::new(&s, &[], "value", z, Emit::All).is_err());
        let s2 = EventSchema::new(vec![
            ("score".into(), FieldType::I64),
            ("value".into(), FieldType::I64),
        ]);
        assert!(Detector::new(&s2, &[], "value", threshold(None, Some(1.0)), Emit::All).is_err());
    }

    /// Oracle: a naive per-key running mean/variance loop over every row ever seen.
    #[test]
    fn zscore_matches_naive_recomputation() {
        let s = EventSchema::new(vec![
            ("device".into(), FieldType::String),
            ("value".into(), FieldType::I64),
        ]);
        for seed in 0..20u64 {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
            let threshold = rng.random_range(1.0..3.0);
            let min_samples = rng.random_range(0..6);
            let kind = DetectorKind::ZScore {
                threshold,
                min_samples,
            };
            let mut d = Detector::new(&s, &["device".into()], "value", kind, Emit::All).unwrap();
            let mut history: std::collections::BTreeMap<Option<String>, Vec<f64>> =
                Default::default();
            for _ in 0..rng.random_range(1..6) {
                let n = rng.random_range(1..200);
                let devs: Vec<Option<String>> = (0..n)
                    .map(|_| match rng.random_range(0..5) {
                        0 => None,
                        k => Some(format!("d{k}")),
                    })
                    .collect();
                let vals: Vec<Option<i64>> = (0..n)
                    .map(|_| {
                        if rng.random_bool(0.1) {
                            None
                        } else if rng.random_bool(0.05) {
                            Some(rng.random_range(-1000..1000))
                        } else {
                            Some(rng.random_range(0..20))
                        }
                    })
                    .collect();
                let b = RecordBatch::try_new(
                    s.to_arrow(),
                    vec![
                        Arc::new(devs.iter().cloned().collect::<StringArray>()),
                        Arc::new(vals.iter().copied().collect::<Int64Array>()),
                    ],
                )
                .unwrap();
                let out = d.process(&b).unwrap().unwrap();
                assert_eq!(out.num_rows(), n);
                let got_scores = floats(&out, "score");
                let got_reasons = strings(&out, "reason");
                for i in 0..n {
                    let seen = history.entry(devs[i].clone()).or_default();
                    let (score, exc) = match vals[i] {
                        None => (None, false),
                        Some(x) => {
                            let x = x as f64;
                            let k = seen.len();
                            let score = (k >= 2).then(|| {
                                let mean = seen.iter().sum::<f64>() / k as f64;
                                let var = seen.iter().map(|v| (v - mean).powi(2)).sum::<f64>()
                                    / (k - 1) as f64;
                                let sd = var.sqrt();
                                let dev = (x - mean).abs();
                                if sd > 1e-9 {
                                    dev / sd
                                } else if dev == 0.0 {
                                    0.0
                                } else {
                                    f64::INFINITY
                                }
                            });
                            let exc =
                                k as u64 >= min_samples && score.is_some_and(|s| s >= threshold);
                            if !exc {
                                seen.push(x);
                            }
                            (score, exc)
                        }
                    };
                    match (score, got_scores[i]) {
                        (None, None) => {}
                        (Some(a), Some(b)) if a.is_infinite() || b.is_infinite() => {
                            assert_eq!(a, b, "seed {seed} row {i}")
                        }
                        (Some(a), Some(b)) => {
                            assert!(
                                (a - b).abs() <= 1e-6 * a.abs().max(1.0),
                                "seed {seed} row {i}: {a} vs {b}"
                            )
                        }
                        other => panic!("seed {seed} row {i}: {other:?}"),
                    }
                    if (score.unwrap_or(0.0) - threshold).abs() > 1e-6 {
                        assert_eq!(got_reasons[i].is_some(), exc, "seed {seed} row {i}");
                    }
                }
            }
            assert_eq!(d.keys(), history.len());
        }
    }

    mod exact {
        //! Property test: the detector's output, bit for bit, against a naive row-by-row
        //! re-implementation (threshold and z-score, both emit modes), with NaN, infinities,
        //! signed zeros, nulls and empty batches.
        use super::*;
        use proptest::prelude::*;
        use std::collections::HashMap;

        type Input = (Option<&'static str>, Option<f64>);

        /// An output row: device, then the bits of value and score (NaN canonicalised), reason.
        type Out = (Option<String>, Option<u64>, Option<u64>, Option<String>);

        fn bits(x: f64) -> u64 {
            if x.is_nan() {
                f64::NAN.to_bits()
            } else {
                x.to_bits()
            }
        }

        fn value() -> impl Strategy<Value = Option<f64>> {
            prop_oneof![
                2 => Just(None),
                1 => Just(Some(f64::NAN)),
                1 => Just(Some(f64::INFINITY)),
                1 => Just(Some(f64::NEG_INFINITY)),
                1 => Just(Some(0.0)),
                1 => Just(Some(-0.0)),
                8 => (-20.0f64..20.0).prop_map(Some),
            ]
        }

        fn input() -> impl Strategy<Value = Vec<Vec<Input>>> {
            let device = prop_oneof![Just(None), Just(Some("a")), Just(Some("b"))];
            prop::collection::vec(prop::collection::vec((device, value()), 0..150), 0..5)
        }

        fn kind() -> impl Strategy<Value = DetectorKind> {
            let bound = prop_oneof![
                Just(None),
                Just(Some(f64::NEG_INFINITY)),
                Just(Some(f64::INFINITY)),
                (-15.0f64..15.0).prop_map(Some),
            ];
            prop_oneof![
                (bound.clone(), bound)
                    .prop_filter("a bound", |(a, b)| a.is_some() || b.is_some())
                    .prop_map(|(a, b)| match (a, b) {
                        (Some(a), Some(b)) if a > b => threshold(Some(b), Some(a)),
                        (a, b) => threshold(a, b),
                    }),
                (0.5f64..3.0, 0u64..5).prop_map(|(threshold, min_samples)| {
                    DetectorKind::ZScore {
                        threshold,
                        min_samples,
                    }
                }),
            ]
        }

        /// The naive detector: one row at a time, per-key Welford statistics in a HashMap.
        fn naive(batches: &[Vec<Input>], kind: &DetectorKind, emit: Emit) -> Vec<Vec<Out>> {
            let mut stats: HashMap<Option<&str>, (u64, f64, f64)> = HashMap::new();
            batches
                .iter()
                .map(|b| {
                    let mut out = Vec::new();
                    for &(dev, v) in b {
                        let (score, reason) = match (v, kind) {
                            (None, _) => (None, None),
                            (Some(x), _) if x.is_nan() => (None, Some("value is NaN".to_string())),
                            (Some(x), DetectorKind::Threshold { min, max }) => {
                                if let Some(lo) = min.filter(|&lo| x < lo) {
                                    (Some(lo - x), Some(format!("value {x} < min {lo}")))
                                } else if let Some(hi) = max.filter(|&hi| x > hi) {
                                    (Some(x - hi), Some(format!("value {x} > max {hi}")))
                                } else {
                                    (Some(0.0), None)
                                }
                            }
                            (Some(x), DetectorKind::ZScore { threshold, min_samples }) => {
                                let (n, mean, m2) = stats.entry(dev).or_default();
                                let sd = (*n >= 2).then(|| (*m2 / (*n - 1) as f64).abs().sqrt());
                                let score = sd.map(|sd| {
                                    let d = (x - *mean).abs();
                                    if sd > 0.0 { d / sd } else if d == 0.0 { 0.0 } else { f64::INFINITY }
                                });
                                if *n >= *min_samples && score.is_some_and(|s| s >= *threshold) {
                                    let r = format!(
                                        "z-score {:.2} >= {threshold} (mean {:.2}, stddev {:.2}, n {})",
                                        score.unwrap_or_default(), *mean, sd.unwrap_or_default(), *n
                                    );
                                    (score, Some(r))
                                } else {
                                    *n += 1;
                                    let d = x - *mean;
                                    *mean += d / *n as f64;
                                    *m2 += d * (x - *mean);
                                    (score, None)
                                }
                            }
                        };
                        if reason.is_some() || emit == Emit::All {
                            out.push((dev.map(str::to_string), v.map(bits), score.map(bits), reason));
                        }
                    }
                    out
                })
                .collect()
        }

        fn run(batches: &[Vec<Input>], kind: &DetectorKind, emit: Emit) -> Vec<Vec<Out>> {
            let mut d =
                Detector::new(&schema(), &["device".into()], "value", kind.clone(), emit).unwrap();
            batches
                .iter()
                .map(|b| {
                    let Some(out) = d.process(&batch(b)).unwrap() else {
                        return Vec::new();
                    };
                    let dev = strings(&out, "device");
                    let val = floats(&out, "value");
                    let score = floats(&out, "score");
                    let reason = strings(&out, "reason");
                    (0..out.num_rows())
                        .map(|r| {
                            (
                                dev[r].clone(),
                                val[r].map(bits),
                                score[r].map(bits),
                                reason[r].clone(),
                            )
                        })
                        .collect()
                })
                .collect()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn output_is_bit_identical_to_a_naive_detector(
                data in input(),
                kind in kind(),
                all in any::<bool>(),
            ) {
                let emit = if all { Emit::All } else { Emit::Exceptions };
                prop_assert_eq!(run(&data, &kind, emit), naive(&data, &kind, emit));
            }
        }
    }
}
