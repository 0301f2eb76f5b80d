//! Control records: what the cloud asks a running edge node to change, and the edge's
//! acknowledgement. Plain data (serde); the engine carries them on the control topics and
//! the operators apply them.
//!
//! A record names one edge node and one action, and the event time from which it applies:
//! an edge node applies it to the first data at or after `apply_at` that it processes once
//! the record has arrived (a record that arrives after `apply_at` applies from its arrival).
//! Every edge that applies (or refuses) a record answers with a [`ControlAck`].
//!
//! Values are bounded ([`ControlAction::validate`]; the cloud checks a record before it
//! publishes it, and every edge checks it again before applying it):
//! - `set_window_size`: `size_ms` in [`MIN_WINDOW_SIZE_MS`] ..= [`MAX_WINDOW_SIZE_MS`]
//!   (1 ms ..= 1 day);
//! - `set_sampling`: `every` in 1 ..= [`MAX_SAMPLING_EVERY`] (1,000,000);
//! - `set_threshold`: a finite number > 0;
//! - `swap_model`: a path of at most [`MAX_MODEL_PATH_BYTES`] bytes, or base64 `weights` of
//!   at most [`MAX_WEIGHTS_BASE64_BYTES`] characters (a model of at most
//!   [`MAX_MODEL_BYTES`], 64 MiB).
//!
//! A record whose `apply_at` is already behind the node's progress when it arrives (e.g.
//! `--apply-at` in the past) is applied from the next row the node processes, and its
//! acknowledgement says so ([`ControlQueue::ack_detail`]).

use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, StringArray, TimestampMillisecondArray};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::error::{OperatorError, Result};
use crate::infer::model::MAX_MODEL_BYTES;
use crate::schema::{EventSchema, FieldType};

/// The smallest window size `set_window_size` accepts, ms.
pub const MIN_WINDOW_SIZE_MS: i64 = 1;
/// The largest window size `set_window_size` accepts, ms (one day).
pub const MAX_WINDOW_SIZE_MS: i64 = 86_400_000;
/// The largest sampling divisor `set_sampling` accepts (keep one reading in a million).
pub const MAX_SAMPLING_EVERY: u32 = 1_000_000;
/// The longest model path a `swap_model` record may name, bytes.
pub const MAX_MODEL_PATH_BYTES: usize = 4096;
/// The longest base64 `weights` text of a `swap_model` record: the encoding of a
/// [`MAX_MODEL_BYTES`] model.
pub const MAX_WEIGHTS_BASE64_BYTES: usize = (MAX_MODEL_BYTES as usize).div_ceil(3) * 4;

/// One instruction for one edge node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ControlRecord {
    /// Unique id (the issuer's name and a sequence number); acknowledgements repeat it and
    /// an edge applies a given id once.
    pub id: String,
    /// The edge node it is for (its id in the pipeline).
    pub node: String,
    /// What to change.
    #[serde(flatten)]
    pub action: ControlAction,
    /// Event time (ms since the epoch) from which the change applies.
    pub apply_at: i64,
    /// Who issued it: an `insight` node's id, or `cli`.
    pub issued_by: String,
    /// Why (shown in the control log).
    #[serde(default)]
    pub reason: String,
}

/// A change to a running edge node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ControlAction {
    /// A detector's (`detect` z-score or `infer`) threshold.
    SetThreshold {
        /// The new threshold.
        value: f64,
    },
    /// A `window`'s size (tumbling), ms.
    SetWindowSize {
        /// The new size, ms.
        size_ms: i64,
    },
    /// Keep one reading in `every` (a sampling rate of 1/`every`); 1 keeps all.
    SetSampling {
        /// The sampling divisor (>= 1).
        every: u32,
    },
    /// Replace an `infer` node's model.
    SwapModel {
        /// Where the new model comes from.
        model: ModelSource,
    },
    /// Resume a disabled node.
    Enable,
    /// Stop a node's processing: it drops its input until enabled again.
    Disable,
}

/// The model of a [`ControlAction::SwapModel`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelSource {
    /// A model file (as written by `edgeflow train`) the edge can read.
    Path(String),
    /// The model file's bytes, base64 (standard alphabet, padded).
    Weights(String),
}

/// Whether an edge applied a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckStatus {
    /// Applied from `applied_at`.
    Applied,
    /// Refused (unknown node, an action the node does not support, a bad value); see
    /// `detail`.
    Rejected,
}

/// An edge's answer to a [`ControlRecord`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ControlAck {
    /// The record's id.
    pub id: String,
    /// The record's node.
    pub node: String,
    /// The edge that answers.
    pub edge_id: String,
    /// Applied or refused.
    pub status: AckStatus,
    /// Event time from which it took effect (for `applied`).
    pub applied_at: Option<i64>,
    /// Why it was refused, or what was applied.
    #[serde(default)]
    pub detail: String,
}

/// The fields of a control stream (an `insight` node's control output), in order: the
/// event time it applies from, then the record's fields, the action as its JSON object.
pub fn control_schema() -> EventSchema {
    EventSchema::new(vec![
        ("apply_at".into(), FieldType::TimestampMs),
        ("id".into(), FieldType::String),
        ("node".into(), FieldType::String),
        ("action".into(), FieldType::String),
        ("issued_by".into(), FieldType::String),
        ("reason".into(), FieldType::String),
    ])
}

/// Control records as a batch of [`control_schema`].
pub fn records_to_batch(records: &[ControlRecord]) -> Result<RecordBatch> {
    let text = |f: fn(&ControlRecord) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(records.iter().map(f)))
    };
    let actions = records
        .iter()
        .map(|r| serde_json::to_string(&r.action))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| OperatorError::User(format!("control action: {e}")))?;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(TimestampMillisecondArray::from_iter_values(
            records.iter().map(|r| r.apply_at),
        )),
        text(|r| &r.id),
        text(|r| &r.node),
        Arc::new(StringArray::from_iter_values(actions)),
        text(|r| &r.issued_by),
        text(|r| &r.reason),
    ];
    Ok(RecordBatch::try_new(control_schema().to_arrow(), columns)?)
}

/// The control records of a batch of [`control_schema`]; a row that is not a valid record
/// is an error naming the row.
pub fn batch_to_records(batch: &RecordBatch) -> Result<Vec<ControlRecord>> {
    let schema = control_schema();
    let column = |name: &str| {
        let index = schema.column_of(name, "control")?;
        batch
            .columns()
            .get(index)
            .ok_or_else(|| OperatorError::User(format!("control batch: no {name} column")))
    };
    let text = |name: &str| -> Result<&StringArray> {
        column(name)?
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| OperatorError::User(format!("control batch: {name} is not text")))
    };
    let apply_at = column("apply_at")?
        .as_any()
        .downcast_ref::<TimestampMillisecondArray>()
        .ok_or_else(|| OperatorError::User("control batch: apply_at is not a timestamp".into()))?;
    let (ids, nodes, actions, issuers, reasons) = (
        text("id")?,
        text("node")?,
        text("action")?,
        text("issued_by")?,
        text("reason")?,
    );
    (0..batch.num_rows())
        .map(|row| {
            let action = serde_json::from_str(actions.value(row)).map_err(|e| {
                OperatorError::User(format!(
                    "control record {}: action {}: {e}",
                    ids.value(row),
                    actions.value(row)
                ))
            })?;
            Ok(ControlRecord {
                id: ids.value(row).to_string(),
                node: nodes.value(row).to_string(),
                action,
                apply_at: apply_at.value(row),
                issued_by: issuers.value(row).to_string(),
                reason: reasons.value(row).to_string(),
            })
        })
        .collect()
}

impl ControlAction {
    /// Checks the action's values against their documented ranges (see the module docs); the
    /// error names the action, the value and the range.
    pub fn validate(&self) -> Result<()> {
        let refuse = |m: String| Err(OperatorError::User(m));
        match self {
            ControlAction::SetThreshold { value } if !value.is_finite() || *value <= 0.0 => refuse(
                format!("set_threshold {value}: a threshold must be a finite number > 0"),
            ),
            ControlAction::SetWindowSize { size_ms }
                if !(MIN_WINDOW_SIZE_MS..=MAX_WINDOW_SIZE_MS).contains(size_ms) =>
            {
                refuse(format!(
                    "set_window_size {size_ms} ms: a window size must be between \
                     {MIN_WINDOW_SIZE_MS} ms and {MAX_WINDOW_SIZE_MS} ms (1 day)"
                ))
            }
            ControlAction::SetSampling { every } => check_sampling(*every),
            ControlAction::SwapModel {
                model: ModelSource::Path(path),
            } if path.is_empty() || path.len() > MAX_MODEL_PATH_BYTES || path.contains('\0') => {
                refuse(format!(
                    "swap_model: a model path must be 1 to {MAX_MODEL_PATH_BYTES} bytes without \
                     NUL, got {} bytes",
                    path.len()
                ))
            }
            ControlAction::SwapModel {
                model: ModelSource::Weights(text),
            } if text.trim().len() > MAX_WEIGHTS_BASE64_BYTES => refuse(format!(
                "swap_model: weights of {} base64 characters are over the bound of \
                 {MAX_WEIGHTS_BASE64_BYTES} (a {MAX_MODEL_BYTES}-byte model)",
                text.trim().len()
            )),
            _ => Ok(()),
        }
    }

    /// The action's name as written in JSON and in pipeline files (`set_threshold`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            ControlAction::SetThreshold { .. } => "set_threshold",
            ControlAction::SetWindowSize { .. } => "set_window_size",
            ControlAction::SetSampling { .. } => "set_sampling",
            ControlAction::SwapModel { .. } => "swap_model",
            ControlAction::Enable => "enable",
            ControlAction::Disable => "disable",
        }
    }
}

/// One step of processing a batch under control: process a range of its rows with the
/// settings in effect, or apply a record before the rows that follow.
#[derive(Clone, Debug, PartialEq)]
pub enum ControlStep {
    /// Process these rows (in batch order) with the current settings.
    Rows(Range<usize>),
    /// Apply this record now; `applied_at` is the event time of the first row it applies to.
    Apply {
        /// The record.
        record: ControlRecord,
        /// The event time of the row it first applies to.
        applied_at: i64,
    },
}

/// The records an operator has received but not yet applied, and where in a batch each one
/// takes effect.
///
/// A record applies to the first row, in processing order, whose event time is at or after
/// its `apply_at`, among the rows processed after it arrived. Once applied it stays applied
/// (a later row with an earlier event time, out of order, is processed with the new
/// settings). Records apply in arrival order when they fall on the same row. A record whose
/// `apply_at` the node had already passed when it arrived applies from the next row, and
/// [`ControlQueue::ack_detail`] says so.
#[derive(Clone, Debug, Default)]
pub struct ControlQueue {
    pending: Vec<ControlRecord>,
    /// The latest event time of the rows scheduled so far.
    progress: Option<i64>,
    /// Ids of pending records that arrived after the node had passed their `apply_at`, with
    /// the progress it had then.
    late: std::collections::HashMap<String, i64>,
    /// Notes for the acknowledgements of the records the last [`ControlQueue::schedule`]
    /// applied late.
    notes: std::collections::HashMap<String, String>,
}

impl ControlQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a record that has just arrived.
    pub fn push(&mut self, record: ControlRecord) {
        if let Some(progress) = self.progress.filter(|p| record.apply_at <= *p) {
            self.late.insert(record.id.clone(), progress);
        }
        self.pending.push(record);
    }

    /// Whether no record waits.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The records still waiting, in arrival order.
    pub fn pending(&self) -> &[ControlRecord] {
        &self.pending
    }

    /// Removes and returns every waiting record (for a node whose input has ended).
    pub fn drain(&mut self) -> Vec<ControlRecord> {
        self.late.clear();
        std::mem::take(&mut self.pending)
    }

    /// The acknowledgement detail of a record the last [`ControlQueue::schedule`] applied:
    /// `detail`, plus a note when its `apply_at` was already past when it arrived.
    pub fn ack_detail(&self, record: &ControlRecord, detail: String) -> String {
        match self.notes.get(&record.id) {
            Some(note) => format!("{detail}; {note}"),
            None => detail,
        }
    }

    /// How to process a batch whose rows have event times `times` (in batch order): ranges of
    /// rows interleaved with the records to apply between them. Records that apply to none
    /// of these rows stay queued. Without pending records this is one range of all rows.
    pub fn schedule(&mut self, times: &[i64]) -> Vec<ControlStep> {
        self.notes.clear();
        if let Some(latest) = times.iter().max() {
            self.progress = Some(self.progress.map_or(*latest, |p| p.max(*latest)));
        }
        let n = times.len();
        if self.pending.is_empty() {
            return if n == 0 {
                Vec::new()
            } else {
                vec![ControlStep::Rows(0..n)]
            };
        }
        // For each pending record: the first row at or after its apply_at.
        let mut applies: Vec<(usize, usize)> = Vec::new(); // (row, index in pending)
        for (i, record) in self.pending.iter().enumerate() {
            if let Some(row) = times.iter().position(|&t| t >= record.apply_at) {
                applies.push((row, i));
            }
        }
        applies.sort_unstable();
        let mut steps = Vec::with_capacity(applies.len() * 2 + 1);
        let mut start = 0;
        for &(row, i) in &applies {
            if row > start {
                steps.push(ControlStep::Rows(start..row));
                start = row;
            }
            let record = &self.pending[i];
            if let Some(progress) = self.late.remove(&record.id) {
                self.notes.insert(
                    record.id.clone(),
                    format!(
                        "apply_at {} was already past when the record arrived (the node had \
                         processed event time {progress}), so it applied from the next row, \
                         event time {}",
                        record.apply_at, times[row]
                    ),
                );
            }
            steps.push(ControlStep::Apply {
                record: record.clone(),
                applied_at: times[row],
            });
        }
        if start < n {
            steps.push(ControlStep::Rows(start..n));
        }
        let applied: std::collections::HashSet<usize> = applies.iter().map(|&(_, i)| i).collect();
        let mut index = 0;
        self.pending.retain(|_| {
            let keep = !applied.contains(&index);
            index += 1;
            keep
        });
        steps
    }
}

fn check_sampling(every: u32) -> Result<()> {
    if (1..=MAX_SAMPLING_EVERY).contains(&every) {
        Ok(())
    } else {
        Err(OperatorError::User(format!(
            "set_sampling {every}: keep one reading in N needs N between 1 and \
             {MAX_SAMPLING_EVERY}"
        )))
    }
}

/// The columns that name a series of readings (the generator's key): a [`Sampler`] keeps one
/// reading in N of each series. Columns a batch does not have are left out of the key.
pub const SERIES_KEY: [&str; 2] = ["device", "sensor"];

/// Keeps one reading in `every` per series (a node's sampling under
/// [`ControlAction::SetSampling`]): a counter per series ([`SERIES_KEY`]: device and sensor)
/// over the rows it has seen, so the rate holds across batch boundaries and every series of
/// every device keeps sending (a per-device count would keep the same sensor of devices whose
/// sensors are interleaved, and drop the others entirely).
#[derive(Clone, Debug)]
pub struct Sampler {
    every: u32,
    seen: std::collections::HashMap<String, u64>,
}

impl Default for Sampler {
    fn default() -> Self {
        Sampler {
            every: 1,
            seen: std::collections::HashMap::new(),
        }
    }
}

impl Sampler {
    /// Keep one row in `every` (1 ..= [`MAX_SAMPLING_EVERY`]) per series from now on; the
    /// counts restart, so each series' next row is kept.
    pub fn set_every(&mut self, every: u32) -> Result<()> {
        check_sampling(every)?;
        self.every = every;
        self.seen.clear();
        Ok(())
    }

    /// Which rows of `batch` to keep, each row's series read from the [`SERIES_KEY`] columns
    /// it has (text columns; a null is an empty name).
    pub fn keep_rows(&mut self, batch: &RecordBatch) -> Vec<bool> {
        let columns: Vec<&StringArray> = SERIES_KEY
            .iter()
            .filter_map(|name| batch.column_by_name(name))
            .filter_map(|c| c.as_any().downcast_ref::<StringArray>())
            .collect();
        let mut key = String::new();
        let mut keep = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            key.clear();
            for column in &columns {
                if column.is_valid(row) {
                    key.push_str(column.value(row));
                }
                // A separator no sensor or device name holds.
                key.push('\u{1f}');
            }
            keep.push(self.keep_one(&key));
        }
        keep
    }

    /// The sampling divisor in effect.
    pub fn every(&self) -> u32 {
        self.every
    }

    /// Which of the next rows, with these series keys, to keep.
    pub fn keep<'a>(&mut self, keys: impl IntoIterator<Item = &'a str>) -> Vec<bool> {
        keys.into_iter().map(|key| self.keep_one(key)).collect()
    }

    fn keep_one(&mut self, key: &str) -> bool {
        let every = u64::from(self.every);
        if every == 1 {
            return true;
        }
        let seen = match self.seen.get_mut(key) {
            Some(seen) => seen,
            None => self.seen.entry(key.to_owned()).or_insert(0),
        };
        let keep = *seen % every == 0;
        *seen += 1;
        keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_batch_and_actions_read_as_documented() {
        let records = vec![
            ControlRecord {
                id: "drift-1".into(),
                node: "scored".into(),
                action: ControlAction::SetThreshold { value: 3.5 },
                apply_at: 1_700_000_000_000,
                issued_by: "insights".into(),
                reason: "site-3 drifted".into(),
            },
            ControlRecord {
                id: "cli-2".into(),
                node: "scored".into(),
                action: ControlAction::SwapModel {
                    model: ModelSource::Path("models/new.bpk".into()),
                },
                apply_at: 5,
                issued_by: "cli".into(),
                reason: String::new(),
            },
        ];
        let batch = records_to_batch(&records).unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch_to_records(&batch).unwrap(), records);
        let action: ControlAction =
            serde_json::from_str(r#"{"action":"set_threshold","value":2.0}"#).unwrap();
        assert_eq!(action, ControlAction::SetThreshold { value: 2.0 });
        let disable: ControlAction = serde_json::from_str(r#"{"action":"disable"}"#).unwrap();
        assert_eq!(disable, ControlAction::Disable);
    }

    fn record(id: &str, apply_at: i64) -> ControlRecord {
        ControlRecord {
            id: id.into(),
            node: "n".into(),
            action: ControlAction::Disable,
            apply_at,
            issued_by: "test".into(),
            reason: String::new(),
        }
    }

    /// A naive reading of the rule: walk the rows in order; before a row, apply every
    /// pending record (in arrival order) whose apply_at the row's time has reached.
    fn naive(pending: &[ControlRecord], times: &[i64]) -> (Vec<(String, usize)>, Vec<String>) {
        let mut waiting: Vec<&ControlRecord> = pending.iter().collect();
        let mut applied = Vec::new();
        for (row, &t) in times.iter().enumerate() {
            waiting.retain(|r| {
                if t >= r.apply_at {
                    applied.push((r.id.clone(), row));
                    false
                } else {
                    true
                }
            });
        }
        (applied, waiting.iter().map(|r| r.id.clone()).collect())
    }

    #[test]
    fn records_apply_at_the_first_row_at_or_after_apply_at_in_processing_order() {
        // Out-of-order times: 10 reaches apply_at 8 at row 1; the later 5 at row 2 is already
        // processed with the new settings.
        let mut queue = ControlQueue::new();
        queue.push(record("a", 8));
        queue.push(record("b", 100));
        let steps = queue.schedule(&[3, 10, 5, 12]);
        assert_eq!(
            steps,
            vec![
                ControlStep::Rows(0..1),
                ControlStep::Apply {
                    record: record("a", 8),
                    applied_at: 10
                },
                ControlStep::Rows(1..4),
            ]
        );
        assert_eq!(queue.pending(), &[record("b", 100)]);
        // A record whose apply_at is already past applies to the next row processed.
        queue.push(record("c", 0));
        let steps = queue.schedule(&[200, 201]);
        assert_eq!(
            steps,
            vec![
                ControlStep::Apply {
                    record: record("b", 100),
                    applied_at: 200
                },
                ControlStep::Apply {
                    record: record("c", 0),
                    applied_at: 200
                },
                ControlStep::Rows(0..2),
            ]
        );
        assert!(queue.is_empty());
        assert_eq!(queue.schedule(&[]), vec![]);
    }

    #[test]
    fn schedule_matches_a_row_by_row_walk_on_seeded_random_batches() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(42);
        for _ in 0..500 {
            let records: Vec<ControlRecord> = (0..rng.random_range(0..4))
                .map(|i| record(&format!("r{i}"), rng.random_range(0..60)))
                .collect();
            let times: Vec<i64> = (0..rng.random_range(0..20))
                .map(|_| rng.random_range(0..50))
                .collect();
            let (want_applied, want_left) = naive(&records, &times);
            let mut queue = ControlQueue::new();
            for r in &records {
                queue.push(r.clone());
            }
            let steps = queue.schedule(&times);
            let mut row = 0;
            let mut applied = Vec::new();
            let mut covered = Vec::new();
            for step in steps {
                match step {
                    ControlStep::Rows(range) => {
                        assert_eq!(range.start, row, "ranges are contiguous");
                        row = range.end;
                        covered.extend(range);
                    }
                    ControlStep::Apply { record, applied_at } => {
                        assert_eq!(applied_at, times[row]);
                        applied.push((record.id, row));
                    }
                }
            }
            assert_eq!(covered, (0..times.len()).collect::<Vec<_>>());
            assert_eq!(applied, want_applied, "times {times:?}");
            let left: Vec<String> = queue.pending().iter().map(|r| r.id.clone()).collect();
            assert_eq!(left, want_left);
        }
    }

    #[test]
    fn sampler_keeps_one_in_n_per_key_across_batches() {
        let mut sampler = Sampler::default();
        assert_eq!(sampler.keep(["a", "b", "a"]), vec![true, true, true]);
        sampler.set_every(3).unwrap();
        let keys = ["a", "b", "a", "a", "b", "a", "b", "a", "b"];
        let kept: Vec<bool> = [
            sampler.keep(keys[..4].iter().copied()),
            sampler.keep(keys[4..].iter().copied()),
        ]
        .concat();
        // Per key: a's rows 0,2,3,5,7 -> kept are its 1st and 4th; b's rows 1,4,6,8 -> 1st and 4th.
        let mut seen = std::collections::HashMap::new();
        let expected: Vec<bool> = keys
            .iter()
            .map(|k| {
                let n = seen.entry(*k).or_insert(0u64);
                *n += 1;
                (*n - 1) % 3 == 0
            })
            .collect();
        assert_eq!(kept, expected);
        assert_eq!(
            kept,
            vec![true, true, false, false, false, true, false, false, true]
        );
        assert!(sampler.set_every(0).is_err());
    }

    #[test]
    fn control_values_are_refused_outside_their_documented_ranges() {
        // Regression (issue 12, case 8): a window of 1000 years or i64::MAX ms, and sampling
        // 4294967295, were applied.
        let ok = |a: ControlAction| a.validate().is_ok();
        let size = |size_ms| ControlAction::SetWindowSize { size_ms };
        assert!(!ok(size(0)) && !ok(size(-5)) && !ok(size(i64::MIN)));
        assert!(ok(size(MIN_WINDOW_SIZE_MS)) && ok(size(MAX_WINDOW_SIZE_MS)));
        assert!(!ok(size(MAX_WINDOW_SIZE_MS + 1)) && !ok(size(i64::MAX)));
        assert!(!ok(size(1000 * 365 * 86_400_000)));
        let every = |every| ControlAction::SetSampling { every };
        assert!(!ok(every(0)) && ok(every(1)) && ok(every(MAX_SAMPLING_EVERY)));
        assert!(!ok(every(MAX_SAMPLING_EVERY + 1)) && !ok(every(u32::MAX)));
        let threshold = |value| ControlAction::SetThreshold { value };
        assert!(ok(threshold(f64::MIN_POSITIVE)) && ok(threshold(1e300)));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(!ok(threshold(bad)), "{bad}");
        }
        let weights = |n: usize| ControlAction::SwapModel {
            model: ModelSource::Weights("A".repeat(n)),
        };
        assert!(ok(weights(MAX_WEIGHTS_BASE64_BYTES)));
        assert!(!ok(weights(MAX_WEIGHTS_BASE64_BYTES + 1)));
        let path = |p: String| ControlAction::SwapModel {
            model: ModelSource::Path(p),
        };
        assert!(ok(path("m.bpk".into())) && ok(path("a".repeat(MAX_MODEL_PATH_BYTES))));
        assert!(!ok(path(String::new())) && !ok(path("a".repeat(MAX_MODEL_PATH_BYTES + 1))));
        assert!(!ok(path("m\0.bpk".into())));
        assert!(ok(ControlAction::Enable) && ok(ControlAction::Disable));
        let message = size(i64::MAX).validate().unwrap_err().to_string();
        assert_eq!(
            message,
            format!(
                "set_window_size {} ms: a window size must be between 1 ms and 86400000 ms (1 day)",
                i64::MAX
            )
        );
        let message = every(u32::MAX).validate().unwrap_err().to_string();
        assert_eq!(
            message,
            "set_sampling 4294967295: keep one reading in N needs N between 1 and 1000000"
        );
        let mut sampler = Sampler::default();
        assert!(sampler.set_every(u32::MAX).is_err());
        assert_eq!(sampler.every(), 1);
    }

    #[test]
    fn a_record_whose_apply_at_has_passed_applies_now_and_its_ack_says_so() {
        // Regression (issue 12, case 17): `--apply-at` in the past was applied silently.
        let mut queue = ControlQueue::new();
        queue.push(record("early", 5));
        queue.schedule(&[10, 20]);
        assert_eq!(
            queue.ack_detail(&record("early", 5), "disabled".into()),
            "disabled",
            "it arrived before the node reached its apply_at"
        );
        queue.push(record("past", 15));
        queue.push(record("future", 40));
        let steps = queue.schedule(&[30, 41]);
        assert_eq!(steps.len(), 4, "{steps:?}");
        assert_eq!(
            queue.ack_detail(&record("past", 15), "disabled".into()),
            "disabled; apply_at 15 was already past when the record arrived (the node had \
             processed event time 20), so it applied from the next row, event time 30"
        );
        assert_eq!(
            queue.ack_detail(&record("future", 40), "disabled".into()),
            "disabled"
        );
    }

    /// A quickstart-like batch: devices in turn, each with two sensors interleaved.
    fn readings(devices: usize, ticks: usize) -> RecordBatch {
        let mut device = Vec::new();
        let mut sensor = Vec::new();
        for _ in 0..ticks {
            for d in 0..devices {
                for s in ["vibration", "temperature"] {
                    device.push(format!("d{d}"));
                    sensor.push(s.to_string());
                }
            }
        }
        let schema = EventSchema::new(vec![
            ("device".into(), FieldType::String),
            ("sensor".into(), FieldType::String),
        ]);
        RecordBatch::try_new(
            schema.to_arrow(),
            vec![
                Arc::new(StringArray::from(device)),
                Arc::new(StringArray::from(sensor)),
            ],
        )
        .unwrap()
    }

    #[test]
    fn sampling_keeps_one_reading_in_n_of_every_sensor_of_every_device() {
        // Regression (issue 12, case 11): `every: 4` counted per device, and with two sensors
        // interleaved it kept vibration only.
        let batch = readings(3, 37);
        let mut sampler = Sampler::default();
        sampler.set_every(4).unwrap();
        // Two batches, cut at an odd row, so the counts carry across a batch boundary.
        let cut = 101;
        let kept: Vec<bool> = [
            sampler.keep_rows(&batch.slice(0, cut)),
            sampler.keep_rows(&batch.slice(cut, batch.num_rows() - cut)),
        ]
        .concat();
        let devices = batch
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        let sensors = batch
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        let mut total: std::collections::BTreeMap<(&str, &str), usize> = Default::default();
        let mut kept_per: std::collections::BTreeMap<(&str, &str), usize> = Default::default();
        for (row, keep) in kept.iter().enumerate() {
            let series = (devices.value(row), sensors.value(row));
            *total.entry(series).or_default() += 1;
            if *keep {
                *kept_per.entry(series).or_default() += 1;
            }
        }
        assert_eq!(total.len(), 6);
        for (series, count) in &total {
            assert_eq!(kept_per.get(series), Some(&count.div_ceil(4)), "{series:?}");
        }
    }
}
