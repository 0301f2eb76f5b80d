//! The control channel: control records from the cloud to running edge nodes, and the edges'
//! acknowledgements back, on the plan's control topics (the embedded log in one process,
//! Kafka between `edgeflow cloud` and `edgeflow edge`).
//!
//! - **Cloud side.** [`ControlChannel::send`] (behind `POST /control` and `edgeflow control`)
//!   and [`publish`] (a timely stream of [`control_schema`] batches, e.g. an `insight` node's
//!   control output) write JSON records on `<pipeline>.control`. A reader thread tails that
//!   topic and `<pipeline>.control.acks` and appends one row per record and one per
//!   acknowledgement to the `edgeflow_control_log` SQL table.
//! - **Edge side.** A reader thread tails `<pipeline>.control` and hands each record for a node
//!   this process runs to that node's [`ControlPort`] on every worker (out of band: data never
//!   waits for the control topic, so an edge cut off from the cloud keeps deciding). Each
//!   worker applies it to the first row at or after `apply_at` it processes (see
//!   [`ControlQueue`]); when every worker has answered, the [`ControlHub`] sends one
//!   acknowledgement for the edge (`applied_at`: the latest of the workers' switch times, from
//!   which every worker applies it; `rejected` when any worker refused, with the reasons),
//!   and remembers the id so that a record is never applied twice, across restarts too when
//!   the edge has a data directory of its own.

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arrow::array::{ArrayRef, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use base64::Engine as _;
use edgeflow_connectors::embedded_log::{EmbeddedLog, LogConsumer, LogProducer};
use edgeflow_connectors::error::chain;
use edgeflow_connectors::frame::{Frame, FrameHeader, FrameKind};
use edgeflow_connectors::model_file::{ModelDirs, read_requested_model};
use edgeflow_operators::OperatorError;
use edgeflow_operators::control::{
    AckStatus, ControlAck, ControlAction, ControlQueue, ControlRecord, ControlStep, ModelSource,
    batch_to_records, records_to_batch,
};
use edgeflow_operators::infer::model::AnomalyModel;
use prometheus::{IntCounterVec, Opts};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Operator;

use super::node::{BatchStream, BuildEnv};
use crate::error::EngineError;
use crate::metrics::Metrics;
use crate::plan::{ControlPlan, Plan, PlanNode};
use crate::sql::{Catalog, MaterializedTable};

/// The SQL table of every control record and acknowledgement.
pub const CONTROL_LOG_TABLE: &str = "edgeflow_control_log";

/// How often the reader threads look for new messages.
const POLL_EVERY: Duration = Duration::from_millis(20);

/// A control record as it travels on the control topic: the record and when it was issued
/// (wall clock, ms since the epoch).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IssuedRecord {
    /// When the cloud published it.
    pub issued_at: i64,
    /// The record.
    #[serde(flatten)]
    pub record: ControlRecord,
}

/// An acknowledgement as it travels on the acknowledgement topic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AckMessage {
    /// When the edge sent it (wall clock, ms since the epoch).
    pub acked_at: i64,
    /// The acknowledgement.
    #[serde(flatten)]
    pub ack: ControlAck,
}

/// Wall-clock time in ms since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// One side of a control topic: writes JSON messages.
pub trait MessageSink: Send {
    /// Writes one message, keyed by `key` (the issuer or the edge id).
    fn send(&mut self, key: &str, json: &[u8]) -> Result<(), EngineError>;
}

/// The other side: reads every message of a topic from its beginning, in order per writer.
pub trait MessageSource: Send {
    /// The messages that arrived since the last call (possibly none).
    fn poll(&mut self) -> Result<Vec<Vec<u8>>, EngineError>;
}

/// A control topic on the embedded log: each message is a frame whose payload is the JSON.
pub struct LogSink {
    producer: LogProducer,
    header: FrameHeader,
}

impl LogSink {
    /// Writes `topic` of `log` as producer `writer`.
    pub fn open(
        log: &EmbeddedLog,
        pipeline: &str,
        topic: &str,
        writer: &str,
    ) -> Result<Self, EngineError> {
        let producer = log
            .producer(topic, writer)
            .map_err(|source| EngineError::Connector {
                node: topic.to_owned(),
                source,
            })?;
        Ok(LogSink {
            producer,
            header: FrameHeader {
                pipeline: pipeline.to_owned(),
                stream: topic.to_owned(),
                edge_id: writer.to_owned(),
                sequence: 0,
                watermark: 0,
                schema_fingerprint: 0,
                kind: FrameKind::Data,
            },
        })
    }
}

impl MessageSink for LogSink {
    fn send(&mut self, _key: &str, json: &[u8]) -> Result<(), EngineError> {
        self.header.sequence += 1;
        let frame = Frame {
            header: self.header.clone(),
            payload: json.to_vec(),
        };
        self.producer
            .append(&frame)
            .map(|_| ())
            .map_err(|source| EngineError::Connector {
                node: self.header.stream.clone(),
                source,
            })
    }
}

/// Reads a control topic of the embedded log (every writer).
pub struct LogSource {
    consumer: LogConsumer,
    topic: String,
}

impl LogSource {
    /// Reads `topic` of `log` from its beginning.
    pub fn open(log: &EmbeddedLog, topic: &str) -> Self {
        LogSource {
            consumer: log.consumer(topic, |_| true),
            topic: topic.to_owned(),
        }
    }
}

impl MessageSource for LogSource {
    fn poll(&mut self) -> Result<Vec<Vec<u8>>, EngineError> {
        let frames = self
            .consumer
            .poll(1024)
            .map_err(|source| EngineError::Connector {
                node: self.topic.clone(),
                source,
            })?;
        Ok(frames.into_iter().map(|f| f.payload).collect())
    }
}

/// Counters of the control channel, registered on the process's metrics.
#[derive(Clone)]
struct ControlMetrics {
    /// `edgeflow_control_records_total{event}`: published, received, applied, rejected,
    /// ignored (not for this edge), duplicate (already applied).
    records: IntCounterVec,
    /// `edgeflow_control_errors_total{side}`: transport errors (retried with backoff).
    errors: IntCounterVec,
}

impl ControlMetrics {
    fn new(metrics: &Metrics) -> Self {
        let records = IntCounterVec::new(
            Opts::new(
                "edgeflow_control_records_total",
                "Control records by what happened to them: published, received, applied, rejected, ignored, duplicate.",
            ),
            &["event"],
        )
        .unwrap_or_else(|e| unreachable!("metric is well-formed: {e}"));
        let errors = IntCounterVec::new(
            Opts::new(
                "edgeflow_control_errors_total",
                "Errors reading or writing the control topics (retried with backoff).",
            ),
            &["side"],
        )
        .unwrap_or_else(|e| unreachable!("metric is well-formed: {e}"));
        // A second channel on the same registry (tests) shares the first one's families.
        let records = match metrics.registry().register(Box::new(records.clone())) {
            Ok(()) => records,
            Err(prometheus::Error::AlreadyReg) => records,
            Err(e) => unreachable!("control metrics register: {e}"),
        };
        let errors = match metrics.registry().register(Box::new(errors.clone())) {
            Ok(()) => errors,
            Err(prometheus::Error::AlreadyReg) => errors,
            Err(e) => unreachable!("control metrics register: {e}"),
        };
        ControlMetrics { records, errors }
    }

    fn count(&self, event: &str) {
        self.records.with_label_values(&[event]).inc();
    }

    fn error(&self, side: &str) {
        self.errors.with_label_values(&[side]).inc();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the state whole; a panic elsewhere must not stop control.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The control channel of one process: what it publishes (cloud), what it applies (edge),
/// and the control log (cloud). Shared by the run context, the HTTP server and the threads
/// that move messages; dropping the last handle stops and joins those threads.
pub struct ControlChannel {
    plan: Option<ControlPlan>,
    pipeline: String,
    metrics: ControlMetrics,
    watermarks: Metrics,
    publisher: Mutex<Option<Box<dyn MessageSink>>>,
    hub: OnceLock<Arc<ControlHub>>,
    log: Option<Arc<ControlLog>>,
    next_id: AtomicU64,
    stop: Arc<AtomicBool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl ControlChannel {
    /// The channel of `plan` (inert when the plan has no control targets); its log table,
    /// when the plan has one, is in `catalog` (see [`add_control_log`]).
    pub fn new(plan: &Plan, metrics: &Metrics, catalog: &Catalog) -> Self {
        let log = catalog
            .get(CONTROL_LOG_TABLE)
            .map(|table| Arc::new(ControlLog::new(table.clone())));
        ControlChannel {
            plan: plan.control.clone(),
            pipeline: plan.pipeline.clone(),
            metrics: ControlMetrics::new(metrics),
            watermarks: metrics.clone(),
            publisher: Mutex::new(None),
            hub: OnceLock::new(),
            log,
            next_id: AtomicU64::new(1),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Mutex::new(Vec::new()),
        }
    }

    /// The plan's control section, if any.
    pub fn plan(&self) -> Option<&ControlPlan> {
        self.plan.as_ref()
    }

    /// Cloud side: records go to `sink`; `records` and `acks` (both read from their start)
    /// feed the control log.
    pub fn start_cloud(
        &self,
        sink: Box<dyn MessageSink>,
        records: Box<dyn MessageSource>,
        acks: Box<dyn MessageSource>,
    ) {
        *lock(&self.publisher) = Some(sink);
        let Some(log) = self.log.clone() else { return };
        let (stop, metrics) = (self.stop.clone(), self.metrics.clone());
        let thread = std::thread::spawn(move || {
            let mut sources = [(records, true), (acks, false)];
            let mut backoff = Backoff::default();
            while !stop.load(Ordering::SeqCst) {
                for (source, is_record) in &mut sources {
                    match source.poll() {
                        Ok(messages) => {
                            backoff.reset();
                            for json in messages {
                                log.add(&json, *is_record);
                            }
                        }
                        Err(e) => {
                            metrics.error("cloud");
                            tracing::warn!(error = %e, "reading a control topic; retrying");
                            backoff.pause(&stop);
                        }
                    }
                }
                pause(POLL_EVERY, &stop);
            }
        });
        lock(&self.threads).push(thread);
    }

    /// Edge side: this process runs the edge nodes of the plan on `workers` workers as edge
    /// `edge_id`; records come from `records`, acknowledgements go to `acks`. With
    /// `applied_file`, the ids of records already answered are kept there across restarts.
    pub fn start_edge(
        &self,
        edge_id: &str,
        workers: usize,
        records: Box<dyn MessageSource>,
        acks: Box<dyn MessageSink>,
        applied_file: Option<PathBuf>,
    ) -> Result<(), EngineError> {
        let Some(plan) = &self.plan else {
            return Ok(());
        };
        let hub = Arc::new(ControlHub::new(
            edge_id,
            workers,
            plan,
            acks,
            applied_file,
            self.metrics.clone(),
        )?);
        if self.hub.set(hub.clone()).is_err() {
            return Err(EngineError::Internal(
                "the control channel's edge side was started twice".into(),
            ));
        }
        let (stop, metrics) = (self.stop.clone(), self.metrics.clone());
        let mut records = records;
        let thread = std::thread::spawn(move || {
            let mut backoff = Backoff::default();
            while !stop.load(Ordering::SeqCst) {
                match records.poll() {
                    Ok(messages) => {
                        backoff.reset();
                        for json in messages {
                            match serde_json::from_slice::<IssuedRecord>(&json) {
                                Ok(issued) => hub.deliver(issued.record),
                                Err(e) => {
                                    metrics.count("malformed");
                                    tracing::warn!(error = %e, "a control message is not a record; skipped");
                                }
                            }
                        }
                    }
                    Err(e) => {
                        metrics.error("edge");
                        tracing::warn!(error = %e, "reading the control topic; retrying");
                        backoff.pause(&stop);
                    }
                }
                pause(POLL_EVERY, &stop);
            }
        });
        lock(&self.threads).push(thread);
        Ok(())
    }

    /// The port through which worker `worker`'s instance of `node` receives records, if the
    /// node is controllable and this process runs the edge side.
    pub fn port(&self, node: &str, worker: usize) -> Option<ControlPort> {
        let hub = self.hub.get()?;
        hub.nodes.contains(node).then(|| ControlPort {
            mailbox: hub.mailbox(node, worker),
            hub: hub.clone(),
            worker,
            queue: ControlQueue::new(),
            base_dir: self
                .plan
                .as_ref()
                .map(|p| p.base_dir.clone())
                .unwrap_or_default(),
        })
    }

    /// The highest event-time watermark a node of this process reports (the default
    /// `apply_at` of a record sent without one); 0 before any.
    pub fn watermark(&self) -> i64 {
        self.watermarks
            .registry()
            .gather()
            .iter()
            .filter(|f| f.name() == "edgeflow_node_watermark_ms")
            .flat_map(|f| {
                f.get_metric()
                    .iter()
                    .map(|m| m.get_gauge().get_value() as i64)
            })
            .max()
            .unwrap_or(0)
    }

    /// Checks a record against the plan: a controllable edge node and an action its kind
    /// supports, with a valid value.
    pub fn check(&self, record: &ControlRecord) -> Result<(), String> {
        let Some(plan) = &self.plan else {
            return Err(format!(
                "pipeline {} has no controllable nodes (add `control: {{ nodes: [...] }}`)",
                self.pipeline
            ));
        };
        let Some(target) = plan.target(&record.node) else {
            let names: Vec<&str> = plan.targets.iter().map(|t| t.node.as_str()).collect();
            return Err(format!(
                "node \"{}\" is not controllable; controllable nodes are: {}",
                record.node,
                names.join(", ")
            ));
        };
        let action = record.action.name();
        if !target.actions.contains(&action) {
            return Err(format!(
                "node \"{}\" does not take {action}; it takes: {}",
                record.node,
                target.actions.join(", ")
            ));
        }
        record.action.validate().map_err(|e| e.to_string())
    }

    /// Publishes a record on the control topic: checks it, gives it an id when it has none
    /// (`<issued_by>-<n>`), and returns it as sent.
    pub fn send(&self, mut record: ControlRecord) -> Result<IssuedRecord, EngineError> {
        self.check(&record).map_err(EngineError::Control)?;
        if record.id.is_empty() {
            let n = self.next_id.fetch_add(1, Ordering::SeqCst);
            record.id = format!("{}-{}-{n}", record.issued_by, now_ms());
        }
        let issued = IssuedRecord {
            issued_at: now_ms(),
            record,
        };
        let json = serde_json::to_vec(&issued)
            .map_err(|e| EngineError::Internal(format!("encoding a control record: {e}")))?;
        // The transport starts with the run, just after the HTTP server: wait for it a little
        // (an edge process, which has only the edge side, never publishes).
        let started = std::time::Instant::now();
        let mut publisher = lock(&self.publisher);
        while publisher.is_none()
            && self.hub.get().is_none()
            && started.elapsed() < Duration::from_secs(5)
        {
            drop(publisher);
            std::thread::sleep(POLL_EVERY);
            publisher = lock(&self.publisher);
        }
        let Some(sink) = publisher.as_mut() else {
            return Err(EngineError::ControlUnavailable(
                "this process does not publish control records: it is an edge, or its control transport has not started (send to the cloud or `edgeflow run`)"
                    .into(),
            ));
        };
        sink.send(&issued.record.issued_by, &json)
            .inspect_err(|_| {
                self.metrics.error("cloud");
            })?;
        self.metrics.count("published");
        Ok(issued)
    }

    /// Asks the reader threads to stop and waits for them.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let threads = std::mem::take(&mut *lock(&self.threads));
        for thread in threads {
            let _ = thread.join();
        }
    }
}

impl Drop for ControlChannel {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Exponential backoff of a reader after a transport error: 200 ms doubling to 10 s.
#[derive(Default)]
struct Backoff {
    next: Option<Duration>,
}

impl Backoff {
    fn pause(&mut self, stop: &AtomicBool) {
        let wait = self.next.unwrap_or(Duration::from_millis(200));
        pause(wait, stop);
        self.next = Some((wait * 2).min(Duration::from_secs(10)));
    }

    fn reset(&mut self) {
        self.next = None;
    }
}

fn pause(duration: Duration, stop: &AtomicBool) {
    let until = std::time::Instant::now() + duration;
    while std::time::Instant::now() < until && !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(10).min(duration));
    }
}

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
struct ControlLog {
    table: Arc<MaterializedTable>,
    records: Mutex<HashMap<String, IssuedRecord>>,
}

impl ControlLog {
    fn new(table: Arc<MaterializedTable>) -> Self {
        ControlLog {
            table,
            records: Mutex::new(HashMap::new()),
        }
    }

    fn add(&self, json: &[u8], is_record: bool) {
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

/// The edge side of one process: hands records to the workers' ports and acknowledges each
/// record once every worker has answered.
pub struct ControlHub {
    edge_id: String,
    workers: usize,
    nodes: HashSet<String>,
    state: Mutex<HubState>,
    acks: Mutex<Box<dyn MessageSink>>,
    applied_file: Option<PathBuf>,
    metrics: ControlMetrics,
}

type Mailbox = Arc<Mutex<Vec<ControlRecord>>>;

#[derive(Default)]
struct HubState {
    mailboxes: HashMap<(String, usize), Mailbox>,
    outstanding: HashMap<String, Outstanding>,
    answered: HashSet<String>,
}

struct Outstanding {
    node: String,
    answers: usize,
    applied_at: Option<i64>,
    rejected: Vec<String>,
    details: Vec<String>,
}

impl ControlHub {
    fn new(
        edge_id: &str,
        workers: usize,
        plan: &ControlPlan,
        acks: Box<dyn MessageSink>,
        applied_file: Option<PathBuf>,
        metrics: ControlMetrics,
    ) -> Result<Self, EngineError> {
        let mut answered = HashSet::new();
        if let Some(path) = &applied_file {
            match std::fs::read_to_string(path) {
                Ok(text) => answered.extend(text.lines().map(str::to_owned)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(EngineError::Io {
                        what: format!("reading {}", path.display()),
                        source,
                    });
                }
            }
        }
        Ok(ControlHub {
            edge_id: edge_id.to_owned(),
            workers: workers.max(1),
            nodes: plan.targets.iter().map(|t| t.node.clone()).collect(),
            state: Mutex::new(HubState {
                answered,
                ..HubState::default()
            }),
            acks: Mutex::new(acks),
            applied_file,
            metrics,
        })
    }

    fn mailbox(&self, node: &str, worker: usize) -> Mailbox {
        lock(&self.state)
            .mailboxes
            .entry((node.to_owned(), worker))
            .or_default()
            .clone()
    }

    /// Hands a record to every worker's port of its node; ignores records for nodes this
    /// process does not run and records it has already answered or is applying.
    fn deliver(&self, record: ControlRecord) {
        self.metrics.count("received");
        if !self.nodes.contains(&record.node) {
            self.metrics.count("ignored");
            return;
        }
        let mut state = lock(&self.state);
        if state.answered.contains(&record.id) || state.outstanding.contains_key(&record.id) {
            self.metrics.count("duplicate");
            return;
        }
        state.outstanding.insert(
            record.id.clone(),
            Outstanding {
                node: record.node.clone(),
                answers: 0,
                applied_at: None,
                rejected: Vec::new(),
                details: Vec::new(),
            },
        );
        for worker in 0..self.workers {
            let mailbox = state
                .mailboxes
                .entry((record.node.clone(), worker))
                .or_default()
                .clone();
            lock(&mailbox).push(record.clone());
        }
    }

    /// A worker's answer; the last one sends the edge's acknowledgement.
    fn report(&self, id: &str, worker: usize, outcome: Result<(i64, String), String>) {
        let mut state = lock(&self.state);
        let Some(entry) = state.outstanding.get_mut(id) else {
            return;
        };
        entry.answers += 1;
        match outcome {
            Ok((at, detail)) => {
                entry.applied_at = Some(entry.applied_at.map_or(at, |a| a.max(at)));
                if entry.details.is_empty() {
                    entry.details.push(detail);
                }
            }
            Err(reason) => entry.rejected.push(format!("worker {worker}: {reason}")),
        }
        if entry.answers < self.workers {
            return;
        }
        let Some(done) = state.outstanding.remove(id) else {
            return;
        };
        state.answered.insert(id.to_owned());
        drop(state);
        let ack = if done.rejected.is_empty() {
            self.metrics.count("applied");
            ControlAck {
                id: id.to_owned(),
                node: done.node,
                edge_id: self.edge_id.clone(),
                status: AckStatus::Applied,
                applied_at: done.applied_at,
                detail: done.details.join("; "),
            }
        } else {
            self.metrics.count("rejected");
            ControlAck {
                id: id.to_owned(),
                node: done.node,
                edge_id: self.edge_id.clone(),
                status: AckStatus::Rejected,
                applied_at: None,
                detail: done.rejected.join("; "),
            }
        };
        self.remember(id);
        let message = AckMessage {
            acked_at: now_ms(),
            ack,
        };
        match serde_json::to_vec(&message) {
            Ok(json) => {
                if let Err(e) = lock(&self.acks).send(&self.edge_id, &json) {
                    self.metrics.error("edge");
                    tracing::warn!(error = %e, id, "cannot send a control acknowledgement");
                }
            }
            Err(e) => tracing::warn!(error = %e, "encoding a control acknowledgement"),
        }
    }

    /// Writes an answered id to the applied file (one id a line, appended and synced).
    fn remember(&self, id: &str) {
        let Some(path) = &self.applied_file else {
            return;
        };
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut file| {
                writeln!(file, "{id}")?;
                file.sync_data()
            });
        if let Err(e) = written {
            self.metrics.error("edge");
            tracing::warn!(error = %e, path = %path.display(), "cannot record an applied control record");
        }
    }
}

/// What a node does with a control action; implemented by each controllable node kind.
pub trait Controllable {
    /// Applies a threshold, size, sampling or model change from event time `applied_at`;
    /// returns a short description of what changed, or why the action cannot apply (the
    /// record is then rejected and the node keeps its settings). `enable` and `disable`
    /// never reach this.
    fn apply(
        &mut self,
        action: &ControlAction,
        applied_at: i64,
        base_dir: &Path,
    ) -> Result<String, String>;
}

/// One worker's end of a controllable node: the records that have arrived for it and the
/// rule of when they apply.
pub struct ControlPort {
    hub: Arc<ControlHub>,
    mailbox: Mailbox,
    worker: usize,
    queue: ControlQueue,
    base_dir: PathBuf,
}

impl ControlPort {
    /// How to process a batch with event times `times`: ranges of rows and the records to
    /// apply between them (records that arrived since the last call included).
    pub fn schedule(&mut self, times: &[i64]) -> Vec<ControlStep> {
        for record in lock(&self.mailbox).drain(..) {
            self.queue.push(record);
        }
        self.queue.schedule(times)
    }

    /// Applies one record to `node` (and to `enabled` for enable/disable) and reports the
    /// outcome to the hub.
    pub fn apply(
        &self,
        record: &ControlRecord,
        applied_at: i64,
        enabled: &mut bool,
        node: &mut dyn Controllable,
    ) {
        let outcome = match &record.action {
            ControlAction::Enable => {
                *enabled = true;
                Ok("enabled".to_owned())
            }
            ControlAction::Disable => {
                *enabled = false;
                Ok("disabled".to_owned())
            }
            action => (action.validate().map_err(|e| e.to_string()))
                .and_then(|()| node.apply(action, applied_at, &self.base_dir)),
        };
        if let Err(reason) = &outcome {
            tracing::warn!(id = %record.id, node = %record.node, %reason, "control record rejected");
        }
        self.hub.report(
            &record.id,
            self.worker,
            outcome.map(|d| (applied_at, self.queue.ack_detail(record, d))),
        );
    }

    /// The node's input has ended: records still waiting can never apply; reject them.
    pub fn input_ended(&mut self) {
        for record in lock(&self.mailbox).drain(..) {
            self.queue.push(record);
        }
        for record in self.queue.drain() {
            self.hub.report(
                &record.id,
                self.worker,
                Err(format!(
                    "the node's input ended before event time {}",
                    record.apply_at
                )),
            );
        }
    }
}

/// A model of a `swap_model` record: a file (relative to the pipeline file's directory) or
/// base64 bytes.
pub fn load_model_source(source: &ModelSource, base_dir: &Path) -> Result<AnomalyModel, String> {
    match source {
        ModelSource::Path(path) => read_requested_model(base_dir, path, &ModelDirs::from_env())
            .map_err(|e| chain(&e))
            .and_then(|bytes| AnomalyModel::from_bytes(&bytes).map_err(|e| format!("{path}: {e}"))),
        ModelSource::Weights(text) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|e| format!("model weights are not base64: {e}"))?;
            AnomalyModel::from_bytes(&bytes).map_err(|e| format!("model weights: {e}"))
        }
    }
}

/// Runs one batch of a controllable node: splits it where records apply, applies them, and
/// processes each range of rows with `process` while the node is enabled (a disabled node
/// drops its input). `times` are the rows' event times. Returns the outputs, in order.
pub fn process_controlled<T: Controllable>(
    port: &mut Option<ControlPort>,
    enabled: &mut bool,
    node: &mut T,
    batch: &RecordBatch,
    times: &[i64],
    mut process: impl FnMut(&mut T, &RecordBatch) -> Result<Option<RecordBatch>, OperatorError>,
) -> Result<Vec<RecordBatch>, OperatorError> {
    let Some(port) = port.as_mut() else {
        return Ok(process(node, batch)?.into_iter().collect());
    };
    let mut out = Vec::new();
    for step in port.schedule(times) {
        match step {
            ControlStep::Rows(range) if *enabled => {
                let slice = if range.len() == batch.num_rows() {
                    batch.clone()
                } else {
                    batch.slice(range.start, range.len())
                };
                out.extend(process(node, &slice)?);
            }
            ControlStep::Rows(_) => {}
            ControlStep::Apply { record, applied_at } => {
                port.apply(&record, applied_at, enabled, node);
            }
        }
    }
    Ok(out)
}

/// The event times of a batch's `timestamp_ms` column `field` (0 for nulls; a batch without
/// it has none).
pub fn event_times(batch: &RecordBatch, field: &str) -> Vec<i64> {
    batch
        .column_by_name(field)
        .and_then(|c| c.as_any().downcast_ref::<TimestampMillisecondArray>())
        .map(|ts| ts.values().to_vec())
        .unwrap_or_else(|| vec![0; batch.num_rows()])
}

/// Publishes a stream of control batches ([`control_schema`] rows, e.g. an `insight` node's
/// control output) on the control topic, from worker 0 (every batch is routed there, so ids
/// are published in one order). Rows that are not valid records, or that the plan does not
/// allow, are dead letters with the reason.
pub fn publish(stream: BatchStream<'_>, node: &PlanNode, env: &BuildEnv) {
    let channel = env.ctx.control.clone();
    let ctx = env.ctx.clone();
    let metrics = env
        .ctx
        .metrics
        .node(&node.id, node.kind, node.placement.name());
    let node_id = node.id.clone();
    stream.sink(
        Exchange::new(|_| 0u64),
        &format!("control[{}]", node.id),
        move |(input, _frontier)| {
            input.for_each(|_time, data| {
                for batch in data.drain(..) {
                    metrics.batches_in.inc();
                    metrics.events_in.inc_by(batch.num_rows() as u64);
                    let records = match batch_to_records(&batch) {
                        Ok(records) => records,
                        Err(e) => {
                            metrics.errors.inc();
                            let reason = edgeflow_connectors::error::chain(&e);
                            ctx.dead_letter(
                                &metrics,
                                &super::node::rows_as_dead_letters(&node_id, &batch, &reason),
                            );
                            continue;
                        }
                    };
                    for record in records {
                        let refused = match channel.send(record.clone()) {
                            Ok(_) => {
                                metrics.events_out.inc();
                                continue;
                            }
                            Err(e) => e.to_string(),
                        };
                        metrics.errors.inc();
                        tracing::warn!(node = %node_id, reason = %refused, "control record not published");
                        if let Ok(row) = records_to_batch(&[record]) {
                            ctx.dead_letter(
                                &metrics,
                                &super::node::rows_as_dead_letters(&node_id, &row, &refused),
                            );
                        }
                    }
                }
            });
        },
    );
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use timely::dataflow::operators::ToStream;

    use super::*;
    use crate::runtime::batch::Batch;
    use crate::runtime::{RunContext, RunOptions, catalog_for};

    const PIPELINE: &str = r#"
pipeline: pub
control: { nodes: [spikes] }
nodes:
  sensors: { kind: generator, devices: 2 }
  spikes:  { kind: detect, inputs: [sensors], key: [device], method: zscore, threshold: 4 }
  alerts:  { kind: table, inputs: [spikes] }
"#;

    fn record(id: &str, node: &str) -> ControlRecord {
        ControlRecord {
            id: id.into(),
            node: node.into(),
            action: ControlAction::SetThreshold { value: 3.0 },
            apply_at: 10,
            issued_by: "insights".into(),
            reason: "drift".into(),
        }
    }

    #[test]
    fn a_control_stream_is_published_on_the_topic_and_logged() {
        let dir = tempfile::tempdir().unwrap();
        let plan = Arc::new(
            crate::plan::plan_with("pub.yaml", PIPELINE, Path::new(""), &|_| None).unwrap(),
        );
        let catalog = Arc::new(catalog_for(&plan, 1));
        let ctx = RunContext::new(&plan, dir.path(), Metrics::new(), catalog.clone()).unwrap();
        let control = plan.control.clone().unwrap();
        let log = EmbeddedLog::open_empty(&dir.path().join("log")).unwrap();
        ctx.control.start_cloud(
            Box::new(LogSink::open(&log, "pub", &control.topic, "cloud").unwrap()),
            Box::new(LogSource::open(&log, &control.topic)),
            Box::new(LogSource::open(&log, &control.acks_topic)),
        );
        // One valid record and one for a node that is not controllable (refused).
        let batch = records_to_batch(&[record("i-1", "spikes"), record("i-2", "alerts")]).unwrap();
        {
            let (plan, ctx) = (plan.clone(), ctx.clone());
            timely::execute_directly(move |worker| {
                let options = RunOptions::default();
                let env = BuildEnv {
                    plan: &plan,
                    options: &options,
                    ctx: &ctx,
                    worker: 0,
                    peers: 1,
                    edge_id: "cloud",
                };
                let node = plan.node("spikes").unwrap();
                worker.dataflow::<i64, _, _>(|scope| {
                    let stream = vec![Batch(batch)].to_stream(scope);
                    publish(stream, node, &env);
                });
            });
        }
        let mut topic = LogSource::open(&log, &control.topic);
        let published: Vec<IssuedRecord> = topic
            .poll()
            .unwrap()
            .iter()
            .map(|json| serde_json::from_slice(json).unwrap())
            .collect();
        assert_eq!(published.len(), 1);
        assert_eq!(published[0].record, record("i-1", "spikes"));
        // The log thread appends the record's row (bounded wait: 5 s).
        let table = catalog.get(CONTROL_LOG_TABLE).unwrap().clone();
        let started = std::time::Instant::now();
        while table.visible_rows() < 1 && started.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let rows = table.snapshot().batches;
        assert_eq!(rows.iter().map(RecordBatch::num_rows).sum::<usize>(), 1);
        let ids = rows[0]
            .column_by_name("id")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap()
            .value(0)
            .to_owned();
        assert_eq!(ids, "i-1");
        // The refused record is a dead letter with the reason.
        ctx.finish_sinks().unwrap();
        let dead = std::fs::read_to_string(ctx.dead_letter_path()).unwrap();
        assert_eq!(dead.lines().count(), 1, "{dead}");
        assert!(
            dead.contains("i-2") && dead.contains("not controllable"),
            "{dead}"
        );
        ctx.control.shutdown();
    }
}
