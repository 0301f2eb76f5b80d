//! [`SystemState`]: what a running pipeline publishes for the system tables (watermarks per
//! node and worker, each producer's progress on each topic), and the node, edge and topic
//! tables built from it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use arrow::record_batch::RecordBatch;
use edgeflow_connectors::spool::Spool;

use super::tables::{EdgeRows, NodeRows, TopicRows};
use super::{CUT_KIND, ENDED, UNKNOWN};
use crate::metrics::{Metrics, NodeMetrics, TopicMetrics};
use crate::plan::{Placement, Plan};

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
    pub(super) fn name(self) -> &'static str {
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
    incarnation: AtomicU64,
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
            incarnation: AtomicU64::new(0),
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

    /// The producer's frames now come from `incarnation` (see `FrameHeader::incarnation`):
    /// a re-provisioned edge starts a new life, not ended, its sequence counted from 0.
    pub fn start_incarnation(&self, incarnation: u64) {
        self.incarnation.store(incarnation, Ordering::Relaxed);
        self.ended.store(0, Ordering::Relaxed);
        self.sequence.store(0, Ordering::Relaxed);
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
    /// Whether this process talks to a Kafka broker (edge, cloud), whose reachability then
    /// shows next to each producer (`link_up`).
    has_link: AtomicBool,
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
            has_link: AtomicBool::new(false),
        }
    }

    /// Marks this process as linked to a Kafka broker: `edgeflow_edges.link_up` then says
    /// whether the broker is reachable (a frozen `last_seen` is then explained).
    pub fn watch_link(&self) {
        self.has_link.store(true, Ordering::Relaxed);
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

    pub(super) fn nodes_batch(&self) -> RecordBatch {
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

    pub(super) fn edges_batch(&self) -> RecordBatch {
        let edges = lock(&self.edges);
        let mut rows = EdgeRows::default();
        let link_up = self
            .has_link
            .load(Ordering::Relaxed)
            .then(|| self.metrics.link().up.get() == 1);
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
            rows.incarnation.push(
                Some(p.incarnation.load(Ordering::Relaxed))
                    .filter(|&i| i != 0)
                    .map(|i| format!("{i:016x}")),
            );
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
            rows.link_up.push(link_up);
        }
        rows.finish()
    }

    pub(super) fn topics_batch(&self) -> RecordBatch {
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
