//! Insight rules: the fleet-level conditions an `insight` node watches for (correlated
//! exceptions, drift against a key's own baseline, silence), evaluated in event time, and the
//! incidents they raise. No I/O and no timely: the engine feeds batches in, tells each rule how
//! far its input is complete (the watermark) and routes the incidents.
//!
//! Every rule is deterministic in its input rows: rows are only acted on once the watermark has
//! passed them, in event-time order, so incidents do not depend on how the input was cut into
//! batches or spread over workers (as long as every row of a key reaches the same rule state).
//! A row whose event time the rule has already passed is *late*: it is handed back to the
//! caller (to count and dead-letter) and not used.

mod correlated;
mod drift;
mod silence;

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Float64Array, Int64Array, StringArray, TimestampMillisecondArray, UInt32Array,
};
use arrow::compute::take_record_batch;
use arrow::record_batch::RecordBatch;
use arrow::util::display::array_value_to_string;
use serde::{Deserialize, Serialize};

pub use correlated::{Correlated, CorrelatedSettings};
pub use drift::{Drift, DriftSettings};
pub use silence::{Silence, SilenceSettings};

use crate::error::{OperatorError, Result};
use crate::schema::{EventSchema, FieldType};

/// How serious an incident is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth a look.
    Info,
    /// Something is off.
    Warning,
    /// Act now.
    Critical,
}

impl Severity {
    /// Every severity, by name, for pipeline files.
    pub const NAMES: &'static [&'static str] = &["info", "warning", "critical"];

    /// The name used in pipeline files and the `incidents` table.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    /// The severity called `name`.
    pub fn from_name(name: &str) -> Option<Severity> {
        match name {
            "info" => Some(Severity::Info),
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

/// The rule types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// k or more devices of one group with exceptions within a window.
    Correlated,
    /// A key's value moved away from its own baseline.
    Drift,
    /// A key stopped reporting.
    Silence,
    /// An SQL query over the catalog returned rows.
    Sql,
}

impl RuleKind {
    /// Every rule type, by its YAML name.
    pub const NAMES: &'static [&'static str] = &["correlated", "drift", "silence", "sql"];

    /// The YAML name.
    pub fn name(self) -> &'static str {
        match self {
            RuleKind::Correlated => "correlated",
            RuleKind::Drift => "drift",
            RuleKind::Silence => "silence",
            RuleKind::Sql => "sql",
        }
    }
}

/// What one rule raised: one row of the `incidents` table once numbered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// Event time (ms) at which the condition became true.
    pub time: i64,
    /// The rule's name.
    pub rule: String,
    /// The rule's type.
    pub kind: RuleKind,
    /// The key the incident is about, `field=value` pairs joined by `,` (empty: the fleet).
    pub key: String,
    /// How serious.
    pub severity: Severity,
    /// How many distinct devices are involved.
    pub devices: i64,
    /// The value that fired the rule (drift: the value; correlated: exception rows; silence:
    /// ms since the key was last seen; sql: none).
    pub value: Option<f64>,
    /// What happened, for people.
    pub message: String,
}

impl Incident {
    /// The order incidents are numbered in: time, then rule, then key.
    pub fn order_key(&self) -> (i64, &str, &str) {
        (self.time, &self.rule, &self.key)
    }
}

/// The fields of an incident stream (an `insight` node's main output and the `incidents`
/// table), in order.
pub fn incident_schema() -> EventSchema {
    EventSchema::new(vec![
        ("time".into(), FieldType::TimestampMs),
        ("id".into(), FieldType::String),
        ("insight".into(), FieldType::String),
        ("rule".into(), FieldType::String),
        ("kind".into(), FieldType::String),
        ("key".into(), FieldType::String),
        ("severity".into(), FieldType::String),
        ("devices".into(), FieldType::I64),
        ("value".into(), FieldType::F64),
        ("message".into(), FieldType::String),
    ])
}

/// Numbered incidents `(id, incident)` of insight node `insight` as a batch of
/// [`incident_schema`].
pub fn incidents_to_batch(insight: &str, incidents: &[(String, Incident)]) -> Result<RecordBatch> {
    fn text<'a>(
        incidents: &'a [(String, Incident)],
        f: impl Fn(&'a (String, Incident)) -> &'a str,
    ) -> ArrayRef {
        Arc::new(StringArray::from_iter_values(incidents.iter().map(f)))
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(TimestampMillisecondArray::from_iter_values(
            incidents.iter().map(|(_, i)| i.time),
        )),
        text(incidents, |(id, _)| id),
        Arc::new(StringArray::from_iter_values(
            incidents.iter().map(|_| insight),
        )),
        text(incidents, |(_, i)| &i.rule),
        text(incidents, |(_, i)| i.kind.name()),
        text(incidents, |(_, i)| &i.key),
        text(incidents, |(_, i)| i.severity.name()),
        Arc::new(Int64Array::from_iter_values(
            incidents.iter().map(|(_, i)| i.devices),
        )),
        Arc::new(Float64Array::from_iter(
            incidents.iter().map(|(_, i)| i.value),
        )),
        text(incidents, |(_, i)| &i.message),
    ];
    Ok(RecordBatch::try_new(incident_schema().to_arrow(), columns)?)
}

/// What a rule reports about every rule: its name and severity.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleInfo {
    /// The rule's name.
    pub name: String,
    /// The severity of its incidents.
    pub severity: Severity,
}

/// Rows a rule could not use, to be counted and dead-lettered by the caller.
#[derive(Debug, Default)]
pub struct Rejected {
    /// Rows whose event time the rule had already passed.
    pub late: Option<RecordBatch>,
    /// Rows with a missing time or value, and why.
    pub invalid: Option<(RecordBatch, String)>,
}

impl Rejected {
    fn from_rows(
        batch: &RecordBatch,
        late: Vec<u32>,
        invalid: Vec<u32>,
        why: &str,
    ) -> Result<Self> {
        let pick = |rows: Vec<u32>| -> Result<Option<RecordBatch>> {
            if rows.is_empty() {
                return Ok(None);
            }
            Ok(Some(take_record_batch(batch, &UInt32Array::from(rows))?))
        };
        Ok(Rejected {
            late: pick(late)?,
            invalid: pick(invalid)?.map(|b| (b, why.to_owned())),
        })
    }
}

/// The columns a rule reads from a batch, found by name.
struct RuleColumns<'a> {
    time: &'a TimestampMillisecondArray,
    key: Vec<(&'a str, &'a ArrayRef)>,
}

impl<'a> RuleColumns<'a> {
    fn new(batch: &'a RecordBatch, time_field: &str, key: &'a [String]) -> Result<Self> {
        let time = column(batch, time_field)?
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .ok_or_else(|| {
                OperatorError::User(format!("insight: \"{time_field}\" is not a timestamp_ms"))
            })?;
        let key = key
            .iter()
            .map(|k| column(batch, k).map(|c| (k.as_str(), c)))
            .collect::<Result<Vec<_>>>()?;
        Ok(RuleColumns { time, key })
    }

    /// The event time of `row`, if present.
    fn time(&self, row: usize) -> Option<i64> {
        self.time.is_valid(row).then(|| self.time.value(row))
    }

    /// The key of `row` as text: `field=value` pairs joined by `,`.
    fn key(&self, row: usize) -> String {
        let mut out = String::new();
        for (i, (name, col)) in self.key.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(name);
            out.push('=');
            out.push_str(&cell_text(col, row));
        }
        out
    }
}

/// A cell as text (empty for null).
pub fn cell_text(column: &ArrayRef, row: usize) -> String {
    if column.is_null(row) {
        return String::new();
    }
    if let Some(s) = column.as_any().downcast_ref::<StringArray>() {
        return s.value(row).to_owned();
    }
    array_value_to_string(column, row).unwrap_or_default()
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    batch
        .column_by_name(name)
        .ok_or_else(|| OperatorError::User(format!("insight: the input has no field \"{name}\"")))
}

/// A numeric column read as f64.
fn numeric(batch: &RecordBatch, name: &str) -> Result<Vec<Option<f64>>> {
    let col = column(batch, name)?;
    if let Some(a) = col.as_any().downcast_ref::<Float64Array>() {
        return Ok(a.iter().collect());
    }
    if let Some(a) = col.as_any().downcast_ref::<Int64Array>() {
        return Ok(a.iter().map(|v| v.map(|v| v as f64)).collect());
    }
    Err(OperatorError::User(format!(
        "insight: \"{name}\" is not an i64 or f64 field"
    )))
}

/// Rows buffered until the watermark passes them, then released in event-time order.
#[derive(Debug)]
struct Pending<R> {
    rows: Vec<(i64, String, R)>,
    /// Every row with time < this has been released; later rows below it are late.
    released_until: i64,
}

impl<R: PartialOrd> Pending<R> {
    fn new() -> Self {
        Pending {
            rows: Vec::new(),
            released_until: i64::MIN,
        }
    }

    /// The rows with time < `watermark`, ordered by time, key, then value.
    fn release(&mut self, watermark: i64) -> Vec<(i64, String, R)> {
        if watermark <= self.released_until {
            return Vec::new();
        }
        self.released_until = watermark;
        let (mut ready, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.rows)
            .into_iter()
            .partition(|(t, _, _)| *t < watermark);
        self.rows = keep;
        ready.sort_by(|a, b| {
            (a.0, &a.1)
                .cmp(&(b.0, &b.1))
                .then(a.2.partial_cmp(&b.2).unwrap_or(std::cmp::Ordering::Equal))
        });
        ready
    }
}

#[cfg(test)]
mod tests;
