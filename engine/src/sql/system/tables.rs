//! The system tables' schemas, and the row builders that turn their columns into Arrow
//! batches (`edgeflow_tables` from the snapshots a query read).

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;

use super::{ENDED, UNKNOWN};

fn string_column<S: AsRef<str>>(values: &[S]) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(
        values.iter().map(|v| v.as_ref()),
    ))
}

fn int_column(values: Vec<i64>) -> ArrayRef {
    Arc::new(Int64Array::from(values))
}

fn time_column(values: Vec<Option<i64>>) -> ArrayRef {
    Arc::new(TimestampMillisecondArray::from(values))
}

fn field(name: &str, data_type: DataType, nullable: bool) -> Field {
    Field::new(name, data_type, nullable)
}

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, None)
}

fn batch(schema: SchemaRef, columns: Vec<ArrayRef>) -> RecordBatch {
    // Every builder below fills each column once per row, in schema order.
    RecordBatch::try_new(schema, columns)
        .unwrap_or_else(|e| unreachable!("system table columns match their schema: {e}"))
}

#[derive(Default)]
pub(super) struct NodeRows {
    pub(super) node: Vec<String>,
    pub(super) kind: Vec<String>,
    pub(super) placement: Vec<String>,
    pub(super) events_in: Vec<i64>,
    pub(super) events_out: Vec<i64>,
    pub(super) batches_in: Vec<i64>,
    pub(super) errors: Vec<i64>,
    pub(super) dead_letters: Vec<i64>,
    pub(super) late_events: Vec<i64>,
    pub(super) watermark: Vec<Option<i64>>,
    pub(super) finished: Vec<bool>,
    pub(super) lag_ms: Vec<Option<i64>>,
}

/// The schema of `edgeflow_nodes`.
pub fn nodes_schema() -> SchemaRef {
    let int = |name| field(name, DataType::Int64, false);
    Arc::new(Schema::new(vec![
        field("node", DataType::Utf8, false),
        field("kind", DataType::Utf8, false),
        field("placement", DataType::Utf8, false),
        int("events_in"),
        int("events_out"),
        int("batches_in"),
        int("errors"),
        int("dead_letters"),
        int("late_events"),
        field("watermark", timestamp(), true),
        field("finished", DataType::Boolean, false),
        field("lag_ms", DataType::Int64, true),
    ]))
}

impl NodeRows {
    pub(super) fn finish(self) -> RecordBatch {
        batch(
            nodes_schema(),
            vec![
                string_column(&self.node),
                string_column(&self.kind),
                string_column(&self.placement),
                int_column(self.events_in),
                int_column(self.events_out),
                int_column(self.batches_in),
                int_column(self.errors),
                int_column(self.dead_letters),
                int_column(self.late_events),
                time_column(self.watermark),
                Arc::new(BooleanArray::from(self.finished)),
                Arc::new(Int64Array::from(self.lag_ms)),
            ],
        )
    }
}

#[derive(Default)]
pub(super) struct EdgeRows {
    pub(super) topic: Vec<String>,
    pub(super) edge_id: Vec<String>,
    pub(super) side: Vec<&'static str>,
    pub(super) last_seen: Vec<Option<i64>>,
    pub(super) watermark: Vec<Option<i64>>,
    pub(super) ended: Vec<bool>,
    pub(super) incarnation: Vec<Option<String>>,
    pub(super) sequence: Vec<i64>,
    pub(super) frames: Vec<i64>,
    pub(super) bytes: Vec<i64>,
    pub(super) duplicates: Vec<i64>,
    pub(super) spool_frames: Vec<Option<i64>>,
    pub(super) spool_bytes: Vec<Option<i64>>,
    pub(super) link_up: Vec<Option<bool>>,
}

/// The schema of `edgeflow_edges`.
pub fn edges_schema() -> SchemaRef {
    let int = |name| field(name, DataType::Int64, false);
    Arc::new(Schema::new(vec![
        field("topic", DataType::Utf8, false),
        field("edge_id", DataType::Utf8, false),
        field("side", DataType::Utf8, false),
        field("last_seen", timestamp(), true),
        field("watermark", timestamp(), true),
        field("ended", DataType::Boolean, false),
        field("incarnation", DataType::Utf8, true),
        int("sequence"),
        int("frames"),
        int("bytes"),
        int("duplicates"),
        field("spool_frames", DataType::Int64, true),
        field("spool_bytes", DataType::Int64, true),
        field("link_up", DataType::Boolean, true),
    ]))
}

impl EdgeRows {
    pub(super) fn finish(self) -> RecordBatch {
        batch(
            edges_schema(),
            vec![
                string_column(&self.topic),
                string_column(&self.edge_id),
                string_column(&self.side),
                time_column(self.last_seen),
                time_column(self.watermark),
                Arc::new(BooleanArray::from(self.ended)),
                Arc::new(StringArray::from(self.incarnation)),
                int_column(self.sequence),
                int_column(self.frames),
                int_column(self.bytes),
                int_column(self.duplicates),
                Arc::new(Int64Array::from(self.spool_frames)),
                Arc::new(Int64Array::from(self.spool_bytes)),
                Arc::new(BooleanArray::from(self.link_up)),
            ],
        )
    }
}

#[derive(Default)]
pub(super) struct TopicRows {
    pub(super) topic: Vec<String>,
    pub(super) stream: Vec<Option<String>>,
    pub(super) producer: Vec<Option<String>>,
    pub(super) consumers: Vec<String>,
    /// frames, bytes, raw_bytes, frames_received, duplicates
    pub(super) counts: [Vec<i64>; 5],
}

/// The schema of `edgeflow_topics`.
pub fn topics_schema() -> SchemaRef {
    let int = |name| field(name, DataType::Int64, false);
    Arc::new(Schema::new(vec![
        field("topic", DataType::Utf8, false),
        field("stream", DataType::Utf8, true),
        field("producer", DataType::Utf8, true),
        field("consumers", DataType::Utf8, false),
        int("frames"),
        int("bytes"),
        int("raw_bytes"),
        field("compression_ratio", DataType::Float64, true),
        int("frames_received"),
        int("duplicates"),
    ]))
}

impl TopicRows {
    pub(super) fn push(
        &mut self,
        topic: &str,
        stream: Option<&str>,
        producer: Option<&str>,
        consumers: &str,
        counts: [i64; 5],
    ) {
        self.topic.push(topic.to_string());
        self.stream.push(stream.map(str::to_string));
        self.producer.push(producer.map(str::to_string));
        self.consumers.push(consumers.to_string());
        for (column, value) in self.counts.iter_mut().zip(counts) {
            column.push(value);
        }
    }

    pub(super) fn finish(self) -> RecordBatch {
        let [frames, bytes, raw_bytes, received, duplicates] = self.counts;
        let ratio: Vec<Option<f64>> = raw_bytes
            .iter()
            .zip(&bytes)
            .map(|(&raw, &sent)| (sent > 0).then(|| raw as f64 / sent as f64))
            .collect();
        batch(
            topics_schema(),
            vec![
                string_column(&self.topic),
                Arc::new(StringArray::from(self.stream)),
                Arc::new(StringArray::from(self.producer)),
                string_column(&self.consumers),
                int_column(frames),
                int_column(bytes),
                int_column(raw_bytes),
                Arc::new(Float64Array::from(ratio)),
                int_column(received),
                int_column(duplicates),
            ],
        )
    }
}

/// What a query read of one materialized table: the snapshot's size and frontier.
#[derive(Debug, Clone)]
pub struct TableRead {
    /// The SQL name.
    pub name: String,
    /// Rows in the snapshot.
    pub rows: usize,
    /// The snapshot's frontier (`i64::MAX`: the input ended; `i64::MIN`: nothing yet).
    pub frontier: i64,
}

/// The schema of `edgeflow_tables`.
pub fn tables_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        field("name", DataType::Utf8, false),
        field("rows", DataType::Int64, false),
        field("frontier", timestamp(), true),
        field("finished", DataType::Boolean, false),
    ]))
}

/// `edgeflow_tables` for the snapshots a query registered.
pub fn tables_batch(reads: &[TableRead]) -> RecordBatch {
    let names: Vec<&str> = reads.iter().map(|r| r.name.as_str()).collect();
    batch(
        tables_schema(),
        vec![
            string_column(&names),
            int_column(reads.iter().map(|r| r.rows as i64).collect()),
            time_column(
                reads
                    .iter()
                    .map(|r| Some(r.frontier).filter(|&f| f != UNKNOWN && f != ENDED))
                    .collect(),
            ),
            Arc::new(BooleanArray::from(
                reads
                    .iter()
                    .map(|r| r.frontier == ENDED)
                    .collect::<Vec<_>>(),
            )),
        ],
    )
}
