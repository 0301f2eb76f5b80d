//! [`ControlChannel`]: one process's control channel and the threads that move its
//! messages (the cloud's control-log reader, the edge's record reader), with their backoff.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use edgeflow_operators::control::ControlRecord;

use super::hub::{ControlHub, ControlPort};
use super::log::{CONTROL_LOG_TABLE, ControlLog};
use super::{ControlMetrics, IssuedRecord, MessageSink, MessageSource, lock, now_ms};
use crate::error::EngineError;
use crate::metrics::Metrics;
use crate::plan::{ControlPlan, Plan};
use crate::sql::Catalog;

/// How often the reader threads look for new messages.
const POLL_EVERY: Duration = Duration::from_millis(20);

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
        self.tail("cloud", vec![records, acks], move |source, json| {
            log.add(&json, source == 0);
        });
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
        let metrics = self.metrics.clone();
        self.tail(
            "edge",
            vec![records],
            move |_, json| match serde_json::from_slice::<IssuedRecord>(&json) {
                Ok(issued) => hub.deliver(issued.record),
                Err(e) => {
                    metrics.count("malformed");
                    tracing::warn!(error = %e, "a control message is not a record; skipped");
                }
            },
        );
        Ok(())
    }

    /// Starts a thread that tails `sources` until the channel stops: every message goes to
    /// `deliver` with the index of its source; a transport error is counted for `side`,
    /// logged and retried after a backoff.
    fn tail(
        &self,
        side: &'static str,
        mut sources: Vec<Box<dyn MessageSource>>,
        mut deliver: impl FnMut(usize, Vec<u8>) + Send + 'static,
    ) {
        let (stop, metrics) = (self.stop.clone(), self.metrics.clone());
        let thread = std::thread::spawn(move || {
            let mut backoff = Backoff::default();
            while !stop.load(Ordering::SeqCst) {
                for (index, source) in sources.iter_mut().enumerate() {
                    match source.poll() {
                        Ok(messages) => {
                            backoff.reset();
                            for json in messages {
                                deliver(index, json);
                            }
                        }
                        Err(e) => {
                            metrics.error(side);
                            tracing::warn!(error = %e, side, "reading a control topic; retrying");
                            backoff.pause(&stop);
                        }
                    }
                }
                pause(POLL_EVERY, &stop);
            }
        });
        lock(&self.threads).push(thread);
    }

    /// The port through which worker `worker`'s instance of `node` receives records, if the
    /// node is controllable and this process runs the edge side.
    pub fn port(&self, node: &str, worker: usize) -> Option<ControlPort> {
        let base_dir = self
            .plan
            .as_ref()
            .map(|p| p.base_dir.clone())
            .unwrap_or_default();
        ControlPort::open(self.hub.get()?, node, worker, base_dir)
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
