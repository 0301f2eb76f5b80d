//! The `edgeflow_control_log` SQL table: one row per control record and one per
//! acknowledgement, appended by the cloud's control-log reader.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow::array::{ArrayRef, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use edgeflow_operators::control::AckStatus;

use super::{AckMessage, IssuedRecord, lock};
use crate::plan::Plan;
use crate::sql::{Catalog, MaterializedTable};

/// The SQL table of every control record and acknowledgement.
pub const CONTROL_LOG_TABLE: &str = "edgeflow_control_log";

/// The schema of `edgeflow_control_log`: one row per record (`event` = `record`, ack
/// columns null) and one per acknowledgement (`event` = `ack`, with its record's columns).
pub fn control_log_schema() -> SchemaRef {
    let ts = || DataType::Timestamp(TimeUnit::Millisecond, None);
    Arc::new(Schema::new(vec![
        Field::new("event", DataType::Utf8, false),
        Field::new("issued_at", ts(), true),
        Field::new("id", DataType::Utf8, false),
        Field::new("node", DataType::Utf8, false),
        Field::new("action", DataType::Utf8, true),
        Field::new("apply_at", ts(), true),
        Field::new("issued_by", DataType::Utf8, true),
        Field::new("reason", DataType::Utf8, true),
        Field::new("edge_id", DataType::Utf8, true),
        Field::new("status", DataType::Utf8, true),
        Field::new("applied_at", ts(), true),
        Field::new("acked_at", ts(), true),
        Field::new("detail", DataType::Utf8, true),
    ]))
}

/// Adds the `edgeflow_control_log` table to a catalog when the plan has a control channel.
pub fn add_control_log(plan: &Plan, catalog: &mut Catalog) {
    if plan.control.is_some() {
        let table = MaterializedTable::new(CONTROL_LOG_TABLE, control_log_schema(), 1);
        // An append-only log: every row is visible as soon as it is appended.
        table.advance(0, i64::MAX);
        catalog.insert(Arc::new(table));
    }
}

/// Appends control messages to the control log table.
pub(super) struct ControlLog {
    table: Arc<MaterializedTable>,
    records: Mutex<HashMap<String, IssuedRecord>>,
}

impl ControlLog {
    pub(super) fn new(table: Arc<MaterializedTable>) -> Self {
        ControlLog {
            table,
            records: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn add(&self, json: &[u8], is_record: bool) {
        let row = if is_record {
            match serde_json::from_slice::<IssuedRecord>(json) {
                Ok(issued) => {
                    let row = LogRow::record(&issued);
                    lock(&self.records).insert(issued.record.id.clone(), issued);
                    row
                }
                Err(e) => {
                    tracing::warn!(error = %e, "a control message is not a record; not logged");
                    return;
                }
            }
        } else {
            match serde_json::from_slice::<AckMessage>(json) {
                Ok(ack) => LogRow::ack(&ack, lock(&self.records).get(&ack.ack.id)),
                Err(e) => {
                    tracing::warn!(error = %e, "a control message is not an acknowledgement; not logged");
                    return;
                }
            }
        };
        match row.batch(self.table.schema()) {
            Ok(batch) => self.table.append(i64::MIN, batch),
            Err(e) => tracing::warn!(error = %e, "control log row"),
        }
    }
}

/// One row of the control log.
struct LogRow {
    event: &'static str,
    issued_at: Option<i64>,
    id: String,
    node: String,
    action: Option<String>,
    apply_at: Option<i64>,
    issued_by: Option<String>,
    reason: Option<String>,
    edge_id: Option<String>,
    status: Option<&'static str>,
    applied_at: Option<i64>,
    acked_at: Option<i64>,
    detail: Option<String>,
}

impl LogRow {
    fn record(issued: &IssuedRecord) -> Self {
        let r = &issued.record;
        LogRow {
            event: "record",
            issued_at: Some(issued.issued_at),
            id: r.id.clone(),
            node: r.node.clone(),
            action: serde_json::to_string(&r.action).ok(),
            apply_at: Some(r.apply_at),
            issued_by: Some(r.issued_by.clone()),
            reason: Some(r.reason.clone()),
            edge_id: None,
            status: None,
            applied_at: None,
            acked_at: None,
            detail: None,
        }
    }

    fn ack(message: &AckMessage, record: Option<&IssuedRecord>) -> Self {
        let mut row = match record {
            Some(issued) => LogRow::record(issued),
            None => LogRow {
                event: "ack",
                issued_at: None,
                id: message.ack.id.clone(),
                node: message.ack.node.clone(),
                action: None,
                apply_at: None,
                issued_by: None,
                reason: None,
                edge_id: None,
                status: None,
                applied_at: None,
                acked_at: None,
                detail: None,
            },
        };
        let ack = &message.ack;
        row.event = "ack";
        row.edge_id = Some(ack.edge_id.clone());
        row.status = Some(match ack.status {
            AckStatus::Applied => "applied",
            AckStatus::Rejected => "rejected",
        });
        row.applied_at = ack.applied_at;
        row.acked_at = Some(message.acked_at);
        row.detail = Some(ack.detail.clone());
        row
    }

    fn batch(self, schema: SchemaRef) -> Result<RecordBatch, arrow::error::ArrowError> {
        let text = |v: Option<String>| -> ArrayRef { Arc::new(StringArray::from(vec![v])) };
        let ts =
            |v: Option<i64>| -> ArrayRef { Arc::new(TimestampMillisecondArray::from(vec![v])) };
        RecordBatch::try_new(
            schema,
            vec![
                text(Some(self.event.to_owned())),
                ts(self.issued_at),
                text(Some(self.id)),
                text(Some(self.node)),
                text(self.action),
                ts(self.apply_at),
                text(self.issued_by),
                text(self.reason),
                text(self.edge_id),
                text(self.status.map(str::to_owned)),
                ts(self.applied_at),
                ts(self.acked_at),
                text(self.detail),
            ],
        )
    }
}
