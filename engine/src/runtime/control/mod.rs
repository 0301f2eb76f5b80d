//! The control channel: control records from the cloud to running edge nodes, and the edges'
//! acknowledgements back, on the plan's control topics (the embedded log in one process,
//! Kafka between `edgeflow cloud` and `edgeflow edge`).
//!
//! - **Cloud side.** [`ControlChannel::send`] (behind `POST /control` and `edgeflow control`)
//!   and `runtime::publish` (a timely stream of control batches, e.g. an `insight` node's
//!   control output) write JSON records on `<pipeline>.control`. A reader thread tails that
//!   topic and `<pipeline>.control.acks` and appends one row per record and one per
//!   acknowledgement to the `edgeflow_control_log` SQL table.
//! - **Edge side.** A reader thread tails `<pipeline>.control` and hands each record for a node
//!   this process runs to that node's [`ControlPort`] on every worker (out of band: data never
//!   waits for the control topic, so an edge cut off from the cloud keeps deciding). Each
//!   worker applies it to the first row at or after `apply_at` it processes (see
//!   [`ControlQueue`](edgeflow_operators::control::ControlQueue)); when every worker has answered, the [`ControlHub`] sends one
//!   acknowledgement for the edge (`applied_at`: the latest of the workers' switch times, from
//!   which every worker applies it; `rejected` when any worker refused, with the reasons),
//!   and remembers the id so that a record is never applied twice, across restarts too when
//!   the edge has a data directory of its own.

mod channel;
mod hub;
#[cfg(feature = "kafka")]
mod kafka;
mod log;
mod transport;

use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use edgeflow_operators::control::{ControlAck, ControlRecord};
use prometheus::{IntCounterVec, Opts};
use serde::{Deserialize, Serialize};

use crate::metrics::Metrics;

pub use channel::ControlChannel;
pub use hub::{
    ControlHub, ControlPort, Controllable, event_times, load_model_source, process_controlled,
};
#[cfg(feature = "kafka")]
pub use kafka::{KafkaMessageSink, KafkaMessageSource};
pub use log::{CONTROL_LOG_TABLE, add_control_log, control_log_schema};
pub use transport::{LogSink, LogSource, MessageSink, MessageSource};

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
        let records = counter_family(
            metrics,
            "edgeflow_control_records_total",
            "Control records by what happened to them: published, received, applied, rejected, ignored, duplicate.",
            "event",
        );
        let errors = counter_family(
            metrics,
            "edgeflow_control_errors_total",
            "Errors reading or writing the control topics (retried with backoff).",
            "side",
        );
        ControlMetrics { records, errors }
    }

    fn count(&self, event: &str) {
        self.records.with_label_values(&[event]).inc();
    }

    fn error(&self, side: &str) {
        self.errors.with_label_values(&[side]).inc();
    }
}

/// A counter family `name` with one label, registered on `metrics`.
fn counter_family(metrics: &Metrics, name: &str, help: &str, label: &str) -> IntCounterVec {
    let family = IntCounterVec::new(Opts::new(name, help), &[label])
        .unwrap_or_else(|e| unreachable!("metric is well-formed: {e}"));
    // A second channel on the same registry (tests) shares the first one's families.
    match metrics.registry().register(Box::new(family.clone())) {
        Ok(()) | Err(prometheus::Error::AlreadyReg) => family,
        Err(e) => unreachable!("control metrics register: {e}"),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the state whole; a panic elsewhere must not stop control.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
