//! Control records: what the cloud asks a running edge node to change, and the edge's
//! acknowledgement. Plain data (serde); the engine carries them on the control topics and
//! the operators apply them.
//!
//! A record names one edge node and one action, and the event time from which it applies:
//! an edge node applies it to the first data at or after `apply_at` that it processes once
//! the record has arrived (a record that arrives after `apply_at` applies from its arrival).
//! Every edge that applies (or refuses) a record answers with a [`ControlAck`].

use std::ops::Range;
use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray, TimestampMillisecondArray};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::error::{OperatorError, Result};
use crate::schema::{EventSchema, FieldType};

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
/// settings). Records apply in arrival order when they fall on the same row.
#[derive(Clone, Debug, Default)]
pub struct ControlQueue {
    pending: Vec<ControlRecord>,
}

impl ControlQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a record that has just arrived.
    pub fn push(&mut self, record: ControlRecord) {
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
        std::mem::take(&mut self.pending)
    }

    /// How to process a batch whose rows have event times `times` (in batch order): ranges of
    /// rows interleaved with the records to apply between them. Records that apply to none
    /// of these rows stay queued. Without pending records this is one range of all rows.
    pub fn schedule(&mut self, times: &[i64]) -> Vec<ControlStep> {
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
            steps.push(ControlStep::Apply {
                record: self.pending[i].clone(),
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

/// Keeps one reading in `every` per device (a node's sampling under
/// [`ControlAction::SetSampling`]): a counter per key over the rows it has seen, so the rate
/// holds across batch boundaries and every device keeps sending.
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
    /// Keep one row in `every` (>= 1) per key from now on; the counts restart, so each key's
    /// next row is kept.
    pub fn set_every(&mut self, every: u32) -> Result<()> {
        if every == 0 {
            return Err(OperatorError::User(
                "sampling: keep one reading in N needs N >= 1".into(),
            ));
        }
        self.every = every;
        self.seen.clear();
        Ok(())
    }

    /// The sampling divisor in effect.
    pub fn every(&self) -> u32 {
        self.every
    }

    /// Which of the next rows, with these keys, to keep.
    pub fn keep<'a>(&mut self, keys: impl IntoIterator<Item = &'a str>) -> Vec<bool> {
        let every = u64::from(self.every);
        keys.into_iter()
            .map(|key| {
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
            })
            .collect()
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
}
