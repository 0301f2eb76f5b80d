//! Control records: what the cloud asks a running edge node to change, and the edge's
//! acknowledgement. Plain data (serde); the engine carries them on the control topics and
//! the operators apply them.
//!
//! A record names one edge node and one action, and the event time from which it applies:
//! an edge node applies it to the first data at or after `apply_at` that it processes once
//! the record has arrived (a record that arrives after `apply_at` applies from its arrival).
//! Every edge that applies (or refuses) a record answers with a [`ControlAck`].

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
}
