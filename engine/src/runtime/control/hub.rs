//! The edge side: the [`ControlHub`] that hands records to every worker's [`ControlPort`]
//! and acknowledges them, and what a controllable node kind uses to apply them
//! ([`Controllable`], [`process_controlled`]).

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow::array::TimestampMillisecondArray;
use arrow::record_batch::RecordBatch;
use base64::Engine as _;
use edgeflow_connectors::error::chain;
use edgeflow_connectors::model_file::{ModelDirs, read_requested_model};
use edgeflow_operators::OperatorError;
use edgeflow_operators::control::{
    AckStatus, ControlAck, ControlAction, ControlQueue, ControlRecord, ControlStep, ModelSource,
};
use edgeflow_operators::infer::model::AnomalyModel;

use super::{AckMessage, ControlMetrics, MessageSink, lock, now_ms};
use crate::error::EngineError;
use crate::plan::ControlPlan;

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
    pub(super) fn new(
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
    pub(super) fn deliver(&self, record: ControlRecord) {
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
    /// Worker `worker`'s port of `node` on `hub`, if the node is controllable; `base_dir`
    /// resolves the model files of `swap_model` records.
    pub(super) fn open(
        hub: &Arc<ControlHub>,
        node: &str,
        worker: usize,
        base_dir: PathBuf,
    ) -> Option<Self> {
        hub.nodes.contains(node).then(|| ControlPort {
            mailbox: hub.mailbox(node, worker),
            hub: hub.clone(),
            worker,
            queue: ControlQueue::new(),
            base_dir,
        })
    }

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
