//! The system tables every query sees next to the user's tables: `edgeflow_nodes`,
//! `edgeflow_edges`, `edgeflow_topics` and `edgeflow_tables`.
//!
//! The runtime fills a [`SystemState`] while it runs (each node's watermark per worker, each
//! producer's progress across the cut); the metrics registry holds the counters. A query
//! turns both into small Arrow tables when it starts. `edgeflow_tables` is built from the very
//! snapshots the query's user tables were registered from, so its `frontier` tells exactly
//! which rows a query in the same statement read.
//!
//! What the tables mean:
//! - `edgeflow_nodes`: one row per dataflow node this process runs (the plan's nodes of the
//!   halves it runs, plus one `cut` node per topic the cloud half reads). `watermark` is the
//!   node's input frontier (a source's or a cut's: its output frontier), the minimum over
//!   workers (null until known and once `finished`); `lag_ms` is how far it is behind the newest watermark of the heads feeding it
//!   (event time, not wall clock): the sources of its half, or, for the cloud half, the
//!   newest watermark any producer sent on the cut topics it reads.
//! - `edgeflow_edges`: one row per (topic, producer edge id). A process that reads the cut
//!   (cloud, or `run` with both halves) shows each producer as it received it (`side`
//!   = `consumer`); an edge process shows its own frames as it wrote them to its spool
//!   (`side` = `producer`) with the spool's depth.
//! - `edgeflow_topics`: one row per cut topic (plus the dead-letter topic where this process
//!   writes it): what this process sent and received.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use edgeflow_connectors::spool::Spool;

use crate::metrics::{Metrics, NodeMetrics, TopicMetrics};
use crate::plan::{Placement, Plan};

/// Per node: events, watermark, lag.
pub const NODES_TABLE: &str = "edgeflow_nodes";
/// Per (topic, producer edge): last seen, watermark, sequence, spool depth.
pub const EDGES_TABLE: &str = "edgeflow_edges";
/// Per cut topic: frames, bytes, compression, duplicates.
pub const TOPICS_TABLE: &str = "edgeflow_topics";
/// Per materialized table: rows and frontier of the snapshot a query read.
pub const TABLES_TABLE: &str = "edgeflow_tables";
/// Every system table name (reserved: the spec rejects a `table` node named like one, see
/// `spec::kinds::SYSTEM_TABLE_NAMES`).
pub const SYSTEM_TABLES: [&str; 4] = [NODES_TABLE, EDGES_TABLE, TOPICS_TABLE, TABLES_TABLE];

/// Kind label of the pseudo node that reads a cut topic in the cloud half.
pub const CUT_KIND: &str = "cut";

/// No watermark known yet (timely's minimum time).
const UNKNOWN: i64 = i64::MIN;
/// The input has ended (timely's empty frontier).
const ENDED: i64 = i64::MAX;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Entries are inserted whole; a panic elsewhere cannot leave one half-made.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn wall_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// One node's watermark on one worker, written by the runtime's watermark probe.
#[derive(Debug)]
pub struct WatermarkSlot {
    current: AtomicI64,
    last_finite: AtomicI64,
}

impl WatermarkSlot {
    fn new() -> Self {
        WatermarkSlot {
            current: AtomicI64::new(UNKNOWN),
            last_finite: AtomicI64::new(UNKNOWN),
        }
    }

    /// Records the frontier (`i64::MAX`: the input ended).
    pub fn observe(&self, frontier: i64) {
        self.current.store(frontier, Ordering::Relaxed);
        if frontier != ENDED {
            self.last_finite.store(frontier, Ordering::Relaxed);
        }
    }
}

/// Which side of the cut a row of `edgeflow_edges` describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeSide {
    /// The process reading the topic (cloud, or both halves in one process).
    Consumer,
    /// The edge process writing the topic into its spool.
    Producer,
}

impl EdgeSide {
    fn name(self) -> &'static str {
        match self {
            EdgeSide::Consumer => "consumer",
            EdgeSide::Producer => "producer",
        }
    }
}

/// The progress of one producer on one topic, updated once per frame.
#[derive(Debug)]
pub struct EdgeProgress {
    side: EdgeSide,
    last_seen_ms: AtomicI64,
    watermark: AtomicI64,
    ended: AtomicI64,
    sequence: AtomicU64,
    frames: AtomicU64,
    bytes: AtomicU64,
    duplicates: AtomicU64,
    spool: Option<Arc<Spool>>,
}

impl EdgeProgress {
    fn new(side: EdgeSide, spool: Option<Arc<Spool>>) -> Self {
        EdgeProgress {
            side,
            last_seen_ms: AtomicI64::new(UNKNOWN),
            watermark: AtomicI64::new(UNKNOWN),
            ended: AtomicI64::new(0),
            sequence: AtomicU64::new(0),
            frames: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            spool,
        }
    }

    /// A frame applied (consumer) or written (producer): its sequence number, the watermark
    /// it carried (`i64::MAX`: the stream ended) and its payload bytes.
    pub fn record_frame(&self, sequence: u64, watermark: i64, bytes: u64) {
        self.last_seen_ms.store(wall_clock_ms(), Ordering::Relaxed);
        self.sequence.store(sequence, Ordering::Relaxed);
        self.frames.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        if watermark == ENDED {
            self.ended.store(1, Ordering::Relaxed);
        } else {
            self.watermark.fetch_max(watermark, Ordering::Relaxed);
        }
    }

    /// A frame dropped because its sequence number was already applied.
    pub fn record_duplicate(&self) {
        self.last_seen_ms.store(wall_clock_ms(), Ordering::Relaxed);
        self.duplicates.fetch_add(1, Ordering::Relaxed);
    }
}

struct NodeEntry {
    kind: String,
    placement: String,
    metrics: NodeMetrics,
    slots: Vec<Arc<WatermarkSlot>>,
}

struct TopicInfo {
    name: String,
    stream: String,
    producer: String,
    consumers: String,
}

/// What a running pipeline publishes for the system tables: filled by the runtime, read by
/// every query. Cheap to share (`Arc`); every update is an atomic store.
pub struct SystemState {
    metrics: Metrics,
    topics: Vec<TopicInfo>,
    /// Node id (or cut topic name) -> its place in plan order, for row order.
    order: HashMap<String, usize>,
    /// Node id -> the heads feeding it: source nodes of its half, or cut topics.
    heads: HashMap<String, Vec<String>>,
    nodes: Mutex<BTreeMap<String, NodeEntry>>,
    edges: Mutex<BTreeMap<(String, String), Arc<EdgeProgress>>>,
    dead_letter_topic: Mutex<Option<String>>,
}

impl std::fmt::Debug for SystemState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemState")
            .field("nodes", &lock(&self.nodes).keys().collect::<Vec<_>>())
            .field("edges", &lock(&self.edges).keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl SystemState {
    /// The state of a run of `plan`, counting into `metrics`; nodes appear as the runtime
    /// builds them.
    pub fn new(plan: &Plan, metrics: Metrics) -> Self {
        let mut order = HashMap::new();
        let mut heads: HashMap<String, Vec<String>> = HashMap::new();
        for node in &plan.nodes {
            order.insert(node.id.clone(), order.len());
            for topic in plan.topics.iter().filter(|t| t.stream.node == node.id) {
                order.insert(topic.name.clone(), order.len());
                heads.insert(topic.name.clone(), vec![topic.name.clone()]);
            }
            let mut mine: Vec<String> = Vec::new();
            if node.inputs.is_empty() {
                mine.push(node.id.clone());
            }
            for input in &node.inputs {
                let producer = plan.node(&input.node);
                let crosses_cut = node.placement == Placement::Cloud
                    && producer.is_some_and(|p| p.placement == Placement::Edge);
                let upstream = match plan.topic(input) {
                    Some(topic) if crosses_cut => vec![topic.name.clone()],
                    _ => heads.get(&input.node).cloned().unwrap_or_default(),
                };
                for head in upstream {
                    if !mine.contains(&head) {
                        mine.push(head);
                    }
                }
            }
            heads.insert(node.id.clone(), mine);
        }
        let topics = plan
            .topics
            .iter()
            .map(|t| TopicInfo {
                name: t.name.clone(),
                stream: t.stream.to_string(),
                producer: t.stream.node.clone(),
                consumers: t.consumers.join(","),
            })
            .collect();
        SystemState {
            metrics,
            topics,
            order,
            heads,
            nodes: Mutex::new(BTreeMap::new()),
            edges: Mutex::new(BTreeMap::new()),
            dead_letter_topic: Mutex::new(None),
        }
    }

    /// Registers one worker's instance of a node (`kind` [`CUT_KIND`] for the reader of a
    /// cut topic, named after the topic) and returns the slot its watermark goes to.
    pub fn watch_node(&self, node: &str, kind: &str, placement: &str) -> Arc<WatermarkSlot> {
        let slot = Arc::new(WatermarkSlot::new());
        let mut nodes = lock(&self.nodes);
        let entry = nodes.entry(node.to_string()).or_insert_with(|| NodeEntry {
            kind: kind.to_string(),
            placement: placement.to_string(),
            metrics: self.metrics.node(node, kind, placement),
            slots: Vec::new(),
        });
        entry.slots.push(slot.clone());
        slot
    }

    /// The progress record of `edge_id` on `topic` as seen from `side` (created on first
    /// use); a producer passes the spool it writes to.
    pub fn edge(
        &self,
        topic: &str,
        edge_id: &str,
        side: EdgeSide,
        spool: Option<Arc<Spool>>,
    ) -> Arc<EdgeProgress> {
        lock(&self.edges)
            .entry((topic.to_string(), edge_id.to_string()))
            .or_insert_with(|| Arc::new(EdgeProgress::new(side, spool)))
            .clone()
    }

    /// Lists the topic this process sends records it cannot apply to.
    pub fn set_dead_letter_topic(&self, topic: &str) {
        *lock(&self.dead_letter_topic) = Some(topic.to_string());
    }

    /// The newest finite watermark of a head: a source node (max over workers) or a cut topic
    /// (max over the producers this process received).
    fn head_watermark(&self, head: &str, nodes: &BTreeMap<String, NodeEntry>) -> Option<i64> {
        let newest = if let Some(entry) = nodes.get(head).filter(|e| e.kind != CUT_KIND) {
            entry
                .slots
                .iter()
                .map(|s| s.last_finite.load(Ordering::Relaxed))
                .max()
        } else {
            lock(&self.edges)
                .iter()
                .filter(|((topic, _), p)| topic == head && p.side == EdgeSide::Consumer)
                .map(|(_, p)| p.watermark.load(Ordering::Relaxed))
                .max()
        };
        newest.filter(|&w| w != UNKNOWN)
    }

    fn nodes_batch(&self) -> RecordBatch {
        let nodes = lock(&self.nodes);
        let mut ids: Vec<&String> = nodes.keys().collect();
        ids.sort_by_key(|id| self.order.get(*id).copied().unwrap_or(usize::MAX));
        let mut rows = NodeRows::default();
        for id in ids {
            let entry = &nodes[id];
            let current: Vec<i64> = entry
                .slots
                .iter()
                .map(|s| s.current.load(Ordering::Relaxed))
                .collect();
            let finished = current.iter().all(|&w| w == ENDED);
            // The minimum over workers; none before every worker has one, nor once the
            // input ended (an empty frontier: every time has passed).
            let watermark = current
                .iter()
                .copied()
                .min()
                .filter(|&w| w != UNKNOWN && w != ENDED);
            let heads = self.heads.get(id).map(Vec::as_slice).unwrap_or_default();
            let head = if entry.kind == CUT_KIND {
                self.head_watermark(id, &nodes)
            } else {
                heads
                    .iter()
                    .filter_map(|h| self.head_watermark(h, &nodes))
                    .max()
            };
            let lag = if finished {
                Some(0)
            } else {
                watermark.zip(head).map(|(w, h)| h.saturating_sub(w).max(0))
            };
            let m = &entry.metrics;
            rows.node.push(id.clone());
            rows.kind.push(entry.kind.clone());
            rows.placement.push(entry.placement.clone());
            rows.events_in.push(m.events_in.get() as i64);
            rows.events_out.push(m.events_out.get() as i64);
            rows.batches_in.push(m.batches_in.get() as i64);
            rows.errors.push(m.errors.get() as i64);
            rows.dead_letters.push(m.dead_letters.get() as i64);
            rows.late_events.push(m.late_events.get() as i64);
            rows.watermark.push(watermark);
            rows.finished.push(finished);
            rows.lag_ms.push(lag);
        }
        rows.finish()
    }

    fn edges_batch(&self) -> RecordBatch {
        let edges = lock(&self.edges);
        let mut rows = EdgeRows::default();
        for ((topic, edge_id), p) in edges.iter() {
            let spool = p.spool.as_ref().map(|s| s.stats());
            rows.topic.push(topic.clone());
            rows.edge_id.push(edge_id.clone());
            rows.side.push(p.side.name());
            rows.last_seen
                .push(Some(p.last_seen_ms.load(Ordering::Relaxed)).filter(|&t| t != UNKNOWN));
            rows.watermark
                .push(Some(p.watermark.load(Ordering::Relaxed)).filter(|&t| t != UNKNOWN));
            rows.ended.push(p.ended.load(Ordering::Relaxed) != 0);
            rows.sequence
                .push(p.sequence.load(Ordering::Relaxed) as i64);
            rows.frames.push(p.frames.load(Ordering::Relaxed) as i64);
            rows.bytes.push(p.bytes.load(Ordering::Relaxed) as i64);
            rows.duplicates
                .push(p.duplicates.load(Ordering::Relaxed) as i64);
            rows.spool_frames
                .push(spool.as_ref().map(|s| s.depth as i64));
            rows.spool_bytes
                .push(spool.as_ref().map(|s| s.bytes as i64));
        }
        rows.finish()
    }

    fn topics_batch(&self) -> RecordBatch {
        let received: HashMap<&str, i64> = {
            let edges = lock(&self.edges);
            let mut received: HashMap<&str, i64> = HashMap::new();
            for ((topic, _), p) in edges.iter() {
                if p.side == EdgeSide::Consumer
                    && let Some(info) = self.topics.iter().find(|t| &t.name == topic)
                {
                    *received.entry(info.name.as_str()).or_default() +=
                        p.frames.load(Ordering::Relaxed) as i64;
                }
            }
            received
        };
        let mut rows = TopicRows::default();
        for info in &self.topics {
            let TopicMetrics {
                bytes,
                frames,
                raw_bytes,
                duplicates,
            } = self.metrics.topic(&info.name);
            rows.push(
                &info.name,
                Some(&info.stream),
                Some(&info.producer),
                &info.consumers,
                [
                    frames.get() as i64,
                    bytes.get() as i64,
                    raw_bytes.get() as i64,
                    received.get(info.name.as_str()).copied().unwrap_or(0),
                    duplicates.get() as i64,
                ],
            );
        }
        if let Some(topic) = lock(&self.dead_letter_topic).clone() {
            // Records the cut readers rejected: each went to the dead-letter topic.
            let nodes = lock(&self.nodes);
            let rejected: u64 = nodes
                .values()
                .filter(|e| e.kind == CUT_KIND)
                .map(|e| e.metrics.dead_letters.get())
                .sum();
            rows.push(&topic, None, None, "", [rejected as i64, 0, 0, 0, 0]);
        }
        rows.finish()
    }
}

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
struct NodeRows {
    node: Vec<String>,
    kind: Vec<String>,
    placement: Vec<String>,
    events_in: Vec<i64>,
    events_out: Vec<i64>,
    batches_in: Vec<i64>,
    errors: Vec<i64>,
    dead_letters: Vec<i64>,
    late_events: Vec<i64>,
    watermark: Vec<Option<i64>>,
    finished: Vec<bool>,
    lag_ms: Vec<Option<i64>>,
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
    fn finish(self) -> RecordBatch {
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
struct EdgeRows {
    topic: Vec<String>,
    edge_id: Vec<String>,
    side: Vec<&'static str>,
    last_seen: Vec<Option<i64>>,
    watermark: Vec<Option<i64>>,
    ended: Vec<bool>,
    sequence: Vec<i64>,
    frames: Vec<i64>,
    bytes: Vec<i64>,
    duplicates: Vec<i64>,
    spool_frames: Vec<Option<i64>>,
    spool_bytes: Vec<Option<i64>>,
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
        int("sequence"),
        int("frames"),
        int("bytes"),
        int("duplicates"),
        field("spool_frames", DataType::Int64, true),
        field("spool_bytes", DataType::Int64, true),
    ]))
}

impl EdgeRows {
    fn finish(self) -> RecordBatch {
        batch(
            edges_schema(),
            vec![
                string_column(&self.topic),
                string_column(&self.edge_id),
                string_column(&self.side),
                time_column(self.last_seen),
                time_column(self.watermark),
                Arc::new(BooleanArray::from(self.ended)),
                int_column(self.sequence),
                int_column(self.frames),
                int_column(self.bytes),
                int_column(self.duplicates),
                Arc::new(Int64Array::from(self.spool_frames)),
                Arc::new(Int64Array::from(self.spool_bytes)),
            ],
        )
    }
}

#[derive(Default)]
struct TopicRows {
    topic: Vec<String>,
    stream: Vec<Option<String>>,
    producer: Vec<Option<String>>,
    consumers: Vec<String>,
    /// frames, bytes, raw_bytes, frames_received, duplicates
    counts: [Vec<i64>; 5],
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
    fn push(
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

    fn finish(self) -> RecordBatch {
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

/// The name and schema of every system table.
pub fn system_schemas() -> [(&'static str, SchemaRef); 4] {
    [
        (NODES_TABLE, nodes_schema()),
        (EDGES_TABLE, edges_schema()),
        (TOPICS_TABLE, topics_schema()),
        (TABLES_TABLE, tables_schema()),
    ]
}

/// The four system tables, by name, as one query sees them (`state`: `None` when the engine
/// serves no running pipeline: the node, edge and topic tables are empty).
pub fn system_tables(
    state: Option<&SystemState>,
    reads: &[TableRead],
) -> [(&'static str, RecordBatch); 4] {
    let (nodes, edges, topics) = match state {
        Some(state) => (
            state.nodes_batch(),
            state.edges_batch(),
            state.topics_batch(),
        ),
        None => (
            RecordBatch::new_empty(nodes_schema()),
            RecordBatch::new_empty(edges_schema()),
            RecordBatch::new_empty(topics_schema()),
        ),
    };
    [
        (NODES_TABLE, nodes),
        (EDGES_TABLE, edges),
        (TOPICS_TABLE, topics),
        (TABLES_TABLE, tables_batch(reads)),
    ]
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::atomic::AtomicBool;

    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Int64Type, TimestampMillisecondType};

    use super::*;
    use crate::plan::plan_with;
    use crate::sql::{Catalog, MaterializedTable, QueryEngine};

    const PIPELINE: &str = r#"
pipeline: sys
nodes:
  sensors: { kind: generator, devices: 4, sensors: [vibration] }
  per_sec: { kind: window, inputs: [sensors], key: [device], size: 1s, aggregates: [count] }
  fleet:   { kind: table, inputs: [per_sec] }
"#;

    fn column<'a>(batch: &'a RecordBatch, name: &str) -> &'a dyn Array {
        batch.column_by_name(name).unwrap().as_ref()
    }

    fn lag_of(batch: &RecordBatch, node: &str) -> Option<i64> {
        let names = column(batch, "node").as_string::<i32>();
        let row = (0..batch.num_rows())
            .find(|&i| names.value(i) == node)
            .unwrap_or_else(|| panic!("no row for {node}"));
        let lag = column(batch, "lag_ms").as_primitive::<Int64Type>();
        lag.is_valid(row).then(|| lag.value(row))
    }

    #[test]
    fn lag_is_the_newest_head_watermark_minus_the_nodes_own() {
        let plan = plan_with("p.yaml", PIPELINE, Path::new(""), &|_| None).unwrap();
        let state = SystemState::new(&plan, Metrics::new());
        // Two workers of every node, as the runtime registers them.
        let sensors = [0, 1].map(|_| state.watch_node("sensors", "generator", "edge"));
        let per_sec = [0, 1].map(|_| state.watch_node("per_sec", "window", "edge"));
        let cut = [0, 1].map(|_| state.watch_node("sys.per_sec", CUT_KIND, "cloud"));
        let fleet = [0, 1].map(|_| state.watch_node("fleet", "table", "cloud"));

        let nodes = state.nodes_batch();
        assert_eq!(lag_of(&nodes, "per_sec"), None, "no watermark yet");

        sensors[0].observe(10_000);
        sensors[1].observe(12_500);
        per_sec[0].observe(9_000);
        per_sec[1].observe(11_000);
        cut[0].observe(7_000);
        cut[1].observe(i64::MAX); // a worker that reads nothing
        fleet[0].observe(6_000);
        fleet[1].observe(6_500);
        let producers = [("embedded-0", 7_000), ("embedded-1", 8_000)];
        for (edge, watermark) in producers {
            let p = state.edge("sys.per_sec", edge, EdgeSide::Consumer, None);
            p.record_frame(3, watermark, 100);
        }
        let nodes = state.nodes_batch();
        let order: Vec<&str> = column(&nodes, "node")
            .as_string::<i32>()
            .iter()
            .flatten()
            .collect();
        assert_eq!(order, ["sensors", "per_sec", "sys.per_sec", "fleet"]);
        // The newest source watermark (12.5 s) minus the slowest worker's (9 s).
        assert_eq!(lag_of(&nodes, "per_sec"), Some(3_500));
        assert_eq!(lag_of(&nodes, "sensors"), Some(2_500));
        // The cloud half's head is the newest producer watermark on its cut topic.
        assert_eq!(lag_of(&nodes, "sys.per_sec"), Some(1_000));
        assert_eq!(lag_of(&nodes, "fleet"), Some(2_000));
        let watermark = column(&nodes, "watermark").as_primitive::<TimestampMillisecondType>();
        assert_eq!(watermark.value(1), 9_000);

        // Finished nodes: no lag, no watermark (the frontier is empty).
        per_sec[0].observe(i64::MAX);
        per_sec[1].observe(i64::MAX);
        let nodes = state.nodes_batch();
        assert_eq!(lag_of(&nodes, "per_sec"), Some(0));
        assert!(column(&nodes, "watermark").is_null(1));
        // The finished source still heads the window: its last watermark counts.
        sensors[1].observe(i64::MAX);
        let nodes = state.nodes_batch();
        assert_eq!(lag_of(&nodes, "fleet"), Some(2_000));
        assert_eq!(lag_of(&nodes, "sensors"), Some(2_500));
        assert!(column(&nodes, "finished").as_boolean().value(1));

        let edges = state.edges_batch();
        assert_eq!(edges.num_rows(), 2);
        let frames = column(&edges, "frames").as_primitive::<Int64Type>();
        assert_eq!(frames.values().to_vec(), [1, 1]);
    }

    fn rows(values: std::ops::Range<i64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("t", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(values))]).unwrap()
    }

    /// Rows the writer below appends at time `10 * i`: `i % 5 + 1` of them.
    fn rows_at(i: i64) -> i64 {
        i % 5 + 1
    }

    #[test]
    fn edgeflow_tables_reports_the_frontier_of_the_snapshot_the_statement_read() {
        let table = Arc::new(MaterializedTable::new("t", rows(0..0).schema(), 1));
        let mut catalog = Catalog::new();
        catalog.insert(table.clone());
        let engine = QueryEngine::new(Arc::new(catalog));
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (table, stop) = (table.clone(), stop.clone());
            std::thread::spawn(move || {
                // Bounded: 1M commits, or until the queries are done.
                for i in 0..1_000_000 {
                    if stop.load(Ordering::SeqCst) {
                        return i;
                    }
                    let time = 10 * i;
                    table.append(time, rows(time..time + rows_at(i)));
                    table.advance(0, time + 5);
                }
                1_000_000
            })
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let sql = "SELECT s.rows, CAST(s.frontier AS BIGINT) AS frontier, \
                   (SELECT count(*) FROM t) AS n, (SELECT max(t) FROM t) AS last \
                   FROM edgeflow_tables s WHERE s.name = 't'";
        let mut frontiers = Vec::new();
        // Bounded: 300 queries while the writer keeps committing.
        for _ in 0..300 {
            let result = runtime.block_on(engine.query(sql)).unwrap();
            let batch = &result.batches[0];
            let get = |name| column(batch, name).as_primitive::<Int64Type>();
            let (reported, frontier, n) = (get("rows"), get("frontier"), get("n"));
            if frontier.is_null(0) {
                continue;
            }
            let frontier = frontier.value(0);
            // Commits i = 0..=(frontier - 5) / 10 are visible, and nothing else.
            let committed = (frontier - 5) / 10;
            let expected: i64 = (0..=committed).map(rows_at).sum();
            assert_eq!(n.value(0), expected, "frontier {frontier}");
            assert_eq!(reported.value(0), expected);
            assert!(get("last").value(0) < frontier);
            frontiers.push(frontier);
        }
        stop.store(true, Ordering::SeqCst);
        let commits = writer.join().unwrap();
        frontiers.dedup();
        assert!(
            frontiers.len() > 10,
            "the queries saw too few distinct frontiers ({} over {commits} commits)",
            frontiers.len()
        );
    }
}
