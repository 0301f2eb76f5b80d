//! Inference: an autoencoder (burn, ndarray backend) scores per-key windows of readings, and
//! windows scoring above a threshold are exceptions.
//!
//! [`InferOperator`] is a batch-in/batch-out state machine like the detectors. Per key it cuts
//! `window` consecutive readings into a window, standardizes it against the key's baseline
//! (`channel`), and scores all the windows a batch completes in one batched, parallel burn
//! forward pass ([`model`]). It emits one row per window: the time of its last reading, the
//! key, `window_start`, `score` and `reason` (null for normal windows with `emit: all`).
//!
//! The threshold and the model can be replaced while running ([`InferOperator::set_threshold`],
//! [`InferOperator::set_model`]): that is the API the cloud's control loop drives. A window
//! containing NaN readings is always an exception (the sensor is misbehaving), null readings
//! are skipped.
//!
//! [`train`] fits a model on normal data with burn's autodiff.

mod channel;
pub mod model;
pub mod train;

use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, RecordBatch, StringBuilder, TimestampMillisecondArray,
};
use arrow::datatypes::{Float64Type, Int64Type, TimestampMillisecondType};

use self::channel::{Channel, WindowSummary};
pub use self::model::AnomalyModel;
use crate::error::{OperatorError, Result};
use crate::schema::{EventSchema, FieldType};
use crate::window::check_batch;
use crate::window::keys::KeyInterner;

/// Which windows are emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InferEmit {
    /// Only exceptions.
    Exceptions,
    /// Every scored window.
    All,
}

/// One reading of a batch: its key id, event time and value.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reading {
    pub key: u32,
    pub ts_ms: i64,
    pub value: f64,
}

/// Reads (key, time, value) out of batches; shared by the operator and training.
#[derive(Debug)]
pub(crate) struct KeyedReadings {
    input: EventSchema,
    key_columns: Vec<usize>,
    value_column: usize,
    time_column: usize,
    interner: KeyInterner,
    key_ids: Vec<u32>,
}

impl KeyedReadings {
    pub(crate) fn new(
        input: &EventSchema,
        key: &[String],
        value: &str,
        time_field: &str,
    ) -> Result<Self> {
        let user = |m: String| OperatorError::User(m);
        let value_column = input.value_column_of(value, "inference")?;
        let time_column = input.column_of(time_field, "time")?;
        if input.fields()[time_column].1 != FieldType::TimestampMs {
            return Err(user(format!(
                "time field \"{time_field}\" must be a timestamp_ms"
            )));
        }
        let key_columns = key
            .iter()
            .map(|k| input.column_of(k, "key"))
            .collect::<Result<Vec<_>>>()?;
        let key_types = key_columns.iter().map(|&i| input.fields()[i].1).collect();
        Ok(KeyedReadings {
            input: input.clone(),
            key_columns,
            value_column,
            time_column,
            interner: KeyInterner::new(key_types),
            key_ids: Vec::new(),
        })
    }

    /// Distinct keys seen.
    pub(crate) fn keys(&self) -> usize {
        self.interner.len()
    }

    /// The non-null readings of `batch` with a non-null time, in row order.
    pub(crate) fn read(&mut self, batch: &RecordBatch) -> Result<Vec<Reading>> {
        check_batch(&self.input, batch)?;
        let n = batch.num_rows();
        let key_cols: Vec<&ArrayRef> = self.key_columns.iter().map(|&i| batch.column(i)).collect();
        self.interner.intern(&key_cols, n, &mut self.key_ids)?;
        let ts = batch
            .column(self.time_column)
            .as_primitive::<TimestampMillisecondType>();
        let col = batch.column(self.value_column);
        let value = |row: usize| -> Option<f64> {
            if let Some(a) = col.as_primitive_opt::<Float64Type>() {
                a.is_valid(row).then(|| a.value(row))
            } else {
                let a = col.as_primitive::<Int64Type>();
                a.is_valid(row).then(|| a.value(row) as f64)
            }
        };
        Ok((0..n)
            .filter(|&row| ts.is_valid(row))
            .filter_map(|row| {
                value(row).map(|value| Reading {
                    key: self.key_ids[row],
                    ts_ms: ts.value(row),
                    value,
                })
            })
            .collect())
    }
}

/// A standardized window waiting for its score.
struct Pending {
    key: u32,
    window: WindowSummary,
}

/// Scores per-key windows of a numeric field with an [`AnomalyModel`].
#[derive(Debug)]
pub struct InferOperator {
    readings: KeyedReadings,
    output: EventSchema,
    output_arrow: arrow::datatypes::SchemaRef,
    model: Arc<AnomalyModel>,
    threshold: Option<f64>,
    emit: InferEmit,
    parallel: bool,
    channels: Vec<Channel>,
    windows_scored: u64,
}

impl InferOperator {
    /// Scores `value` (i64 or f64) per `key`, ordered by `time_field`. `threshold` overrides
    /// the model's default. The input must not have `window_start`, `score` or `reason` fields.
    pub fn new(
        input: &EventSchema,
        key: &[String],
        value: &str,
        time_field: &str,
        model: Arc<AnomalyModel>,
        threshold: Option<f64>,
        emit: InferEmit,
    ) -> Result<Self> {
        let readings = KeyedReadings::new(input, key, value, time_field)?;
        let output = Self::output_schema_for(input, key, time_field)?;
        if let Some(t) = threshold {
            check_threshold(t)?;
        }
        Ok(InferOperator {
            output_arrow: output.to_arrow(),
            output,
            readings,
            model,
            threshold,
            emit,
            parallel: true,
            channels: Vec::new(),
            windows_scored: 0,
        })
    }

    /// The output schema for an input: the time field, the key fields, then
    /// `window_start: timestamp_ms`, `score: f64`, `reason: string`.
    pub fn output_schema_for(
        input: &EventSchema,
        key: &[String],
        time_field: &str,
    ) -> Result<EventSchema> {
        let user = |m: String| OperatorError::User(m);
        let mut fields = vec![(time_field.to_owned(), FieldType::TimestampMs)];
        for k in key {
            let t = input.field_type(k).ok_or_else(|| {
                user(format!(
                    "key field \"{k}\" is not in the input schema {input}"
                ))
            })?;
            if k == time_field {
                return Err(user(format!(
                    "key field \"{k}\" is the time field; inference keys are device fields"
                )));
            }
            fields.push((k.clone(), t));
        }
        for (name, t) in [
            ("window_start", FieldType::TimestampMs),
            ("score", FieldType::F64),
            ("reason", FieldType::String),
        ] {
            if fields.iter().any(|(n, _)| n == name) {
                return Err(user(format!(
                    "the inference output adds a \"{name}\" field but a key field has that name"
                )));
            }
            fields.push((name.to_owned(), t));
        }
        Ok(EventSchema::new(fields))
    }

    /// The output schema (see [`InferOperator::output_schema_for`]).
    pub fn output_schema(&self) -> &EventSchema {
        &self.output
    }

    /// Scores on the calling thread only (rayon is used by default for large batches).
    pub fn serial(mut self) -> Self {
        self.parallel = false;
        self
    }

    /// The threshold in effect.
    pub fn threshold(&self) -> f64 {
        self.threshold.unwrap_or(self.model.calibration().threshold)
    }

    /// Replaces the threshold from the next window on (`None`: the model's default).
    pub fn set_threshold(&mut self, threshold: Option<f64>) -> Result<()> {
        if let Some(t) = threshold {
            check_threshold(t)?;
        }
        self.threshold = threshold;
        Ok(())
    }

    /// Replaces the model from the next window on. Key baselines are kept (they do not depend
    /// on the model). With a different window length the open windows are dropped, since
    /// their readings were cut for the old length.
    pub fn set_model(&mut self, model: Arc<AnomalyModel>) {
        if model.shape().window != self.model.shape().window {
            for c in &mut self.channels {
                c.reset_open_window();
            }
        }
        self.model = model;
    }

    /// The model in use.
    pub fn model(&self) -> &Arc<AnomalyModel> {
        &self.model
    }

    /// Windows scored so far.
    pub fn windows_scored(&self) -> u64 {
        self.windows_scored
    }

    /// Keys seen.
    pub fn keys(&self) -> usize {
        self.readings.keys()
    }

    /// Adds a batch of readings; returns the rows for the windows it completes (None when
    /// nothing to emit).
    pub fn process(&mut self, batch: &RecordBatch) -> Result<Option<RecordBatch>> {
        let readings = self.readings.read(batch)?;
        self.channels
            .resize_with(self.readings.keys(), Channel::default);
        let model = Arc::clone(&self.model);
        let w = model.shape().window;
        let warmup = u64::from(model.calibration().warmup_windows);
        // Standardize every window the batch completes, in arrival order: a window is
        // standardized against its key's baseline before the window itself is folded in, so
        // the result does not depend on the scores and all windows go through the model in one
        // batched (parallel) call.
        let mut pending: Vec<Pending> = Vec::new();
        let mut z: Vec<f32> = Vec::new();
        for r in readings {
            let channel = &mut self.channels[r.key as usize];
            let Some(full) = channel.push(r.ts_ms, r.value, w) else {
                continue;
            };
            if channel.baseline.windows() >= warmup {
                let at = z.len();
                z.resize(at + w, 0.0);
                channel.baseline.standardize(&full.values, &mut z[at..]);
                pending.push(Pending {
                    key: r.key,
                    window: full.summary(),
                });
            }
            channel.baseline.update(&full.values);
        }
        if pending.is_empty() {
            return Ok(None);
        }
        let errors = model.errors(&z, self.parallel)?;
        self.windows_scored += pending.len() as u64;
        let threshold = self.threshold();
        let mut out = Emitted::default();
        let mut text = String::new();
        for (p, error) in pending.into_iter().zip(errors) {
            let score = model.score(error);
            text.clear();
            // Writing to a String cannot fail.
            let exception = if p.window.nan_readings > 0 {
                let _ = write!(text, "{} NaN readings in the window", p.window.nan_readings);
                true
            } else if score >= threshold {
                let ratio = f64::from(error) / model.calibration().reference_error;
                let _ = write!(
                    text,
                    "reconstruction error {ratio:.3}x normal, score {score:.3} >= {threshold}{}",
                    if ratio < 1.0 {
                        " (flat or stuck signal)"
                    } else {
                        ""
                    }
                );
                true
            } else {
                false
            };
            if exception || self.emit == InferEmit::All {
                out.keys.push(p.key);
                out.end_ms.push(p.window.end_ms);
                out.start_ms.push(p.window.start_ms);
                out.scores.push(score);
                if exception {
                    out.reasons.append_value(&text);
                } else {
                    out.reasons.append_null();
                }
            }
        }
        if out.keys.is_empty() {
            return Ok(None);
        }
        let mut columns: Vec<ArrayRef> =
            vec![Arc::new(TimestampMillisecondArray::from(out.end_ms))];
        columns.extend(self.readings.interner.arrays(&out.keys));
        columns.push(Arc::new(TimestampMillisecondArray::from(out.start_ms)));
        columns.push(Arc::new(Float64Array::from(out.scores)));
        columns.push(Arc::new(out.reasons.finish()));
        Ok(Some(RecordBatch::try_new(
            self.output_arrow.clone(),
            columns,
        )?))
    }
}

/// The columns of the rows a batch emits.
#[derive(Default)]
struct Emitted {
    keys: Vec<u32>,
    end_ms: Vec<i64>,
    start_ms: Vec<i64>,
    scores: Vec<f64>,
    reasons: StringBuilder,
}

fn check_threshold(t: f64) -> Result<()> {
    if t > 0.0 && t.is_finite() {
        Ok(())
    } else {
        Err(OperatorError::User(format!(
            "an inference threshold must be a number > 0, got {t}"
        )))
    }
}

#[cfg(test)]
mod tests;
