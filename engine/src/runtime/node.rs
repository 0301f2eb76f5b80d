//! What every node builder shares: the stream type, the build environment, what building a
//! node yields, and one node's context (its metrics handle, its operator name such as
//! `window[per_sec]`, its dead letters and its input's schema).
//!
//! This module sits below every builder: builders import it, never each other, and it
//! imports no builder.

use std::sync::Arc;

use arrow::array::{BooleanArray, TimestampMillisecondArray};
use arrow::compute::filter_record_batch;
use arrow::record_batch::RecordBatch;
use edgeflow_connectors::file_sink::{TextFormat, format_batch};
use edgeflow_connectors::file_source::DeadLetter;
use edgeflow_operators::OperatorError;
use edgeflow_operators::schema::EventSchema;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::{Concatenate, Operator};

use super::batch::{Batch, EventTime};
use super::context::RunContext;
use super::options::RunOptions;
use crate::error::EngineError;
use crate::metrics::NodeMetrics;
use crate::plan::{Plan, PlanNode};
use crate::sql::system::WatermarkSlot;

/// Batches a source emits per activation before yielding to other operators.
pub const BATCHES_PER_ACTIVATION: usize = 4;

/// A stream of batches in event time.
pub type BatchStream<'scope> = Stream<'scope, EventTime, Vec<Batch>>;

/// What building one node produced.
#[derive(Default)]
pub struct NodeOutputs<'scope> {
    /// The main output (none for sinks).
    pub main: Option<BatchStream<'scope>>,
    /// The late side output (windows only).
    pub late: Option<BatchStream<'scope>>,
    /// The control records (insights only), in `control_schema()`: what the control channel
    /// publishes to the edge.
    pub control: Option<BatchStream<'scope>>,
}

impl<'scope> NodeOutputs<'scope> {
    /// A node with only a main output.
    pub fn main(stream: BatchStream<'scope>) -> Self {
        NodeOutputs {
            main: Some(stream),
            late: None,
            control: None,
        }
    }
}

/// Everything a node builder may need besides its inputs.
pub struct BuildEnv<'a> {
    /// The plan being built.
    pub plan: &'a Plan,
    /// Run options.
    pub options: &'a RunOptions,
    /// Shared run state.
    pub ctx: &'a RunContext,
    /// This worker's index and the number of workers.
    pub worker: usize,
    /// Number of workers.
    pub peers: usize,
    /// The id this worker's edge half writes under (keys of `kafka` sink records).
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    pub edge_id: &'a str,
}

impl BuildEnv<'_> {
    /// The metrics of `node` (labelled by id, kind and placement).
    pub fn metrics(&self, node: &PlanNode) -> NodeMetrics {
        self.ctx
            .metrics
            .node(&node.id, node.kind, node.placement.name())
    }

    /// The schema and event-time field of a node's (first) input.
    pub fn input_stream(&self, node: &PlanNode) -> Result<(EventSchema, String), EngineError> {
        let input = node
            .inputs
            .first()
            .ok_or_else(|| EngineError::Internal(format!("node {} has no input", node.id)))?;
        self.plan
            .stream(input)
            .map(|(schema, time_field)| (schema.clone(), time_field.to_owned()))
            .ok_or_else(|| {
                EngineError::Internal(format!("node {}: no schema for input {input}", node.id))
            })
    }

    /// The schema of a node's (first) input.
    pub fn input_schema(&self, node: &PlanNode) -> Result<EventSchema, EngineError> {
        self.input_stream(node).map(|(schema, _)| schema)
    }

    /// The context of one node on this worker.
    pub fn node(&self, node: &PlanNode) -> NodeContext {
        NodeContext {
            id: node.id.clone(),
            name: operator_name(node),
            metrics: self.metrics(node),
            run: self.ctx.clone(),
        }
    }
}

/// One node on one worker: what its operator closures keep (cheap to clone).
#[derive(Clone)]
pub struct NodeContext {
    /// The node id.
    pub id: String,
    /// Its operator name as timely and the metrics see it: `kind[id]`.
    pub name: String,
    /// Its metrics.
    pub metrics: NodeMetrics,
    /// The run's shared state.
    pub run: RunContext,
}

impl NodeContext {
    /// Writes every row of `batch` to the dead-letter output with `reason`, counted in this
    /// node's metrics.
    pub fn dead_letter_rows(&self, batch: &RecordBatch, reason: &str) {
        self.run.dead_letter(
            &self.metrics,
            &rows_as_dead_letters(&self.id, batch, reason),
        );
    }
}

/// Node name as timely and the metrics see it: `kind[id]`.
pub fn operator_name(node: &PlanNode) -> String {
    format!("{}[{}]", node.kind, node.id)
}

/// An operator error of `node` as the engine's error.
pub fn operator_error(node: &PlanNode) -> impl FnOnce(OperatorError) -> EngineError + '_ {
    move |source| EngineError::Operator {
        node: node.id.clone(),
        source,
    }
}

/// Why late rows nobody consumes are dead letters.
pub const LATE_REASON: &str = "late event: its window had already closed (see allowed_lateness)";

/// One dead letter per row, the row rendered as a JSON object.
pub fn rows_as_dead_letters(node: &str, batch: &RecordBatch, reason: &str) -> Vec<DeadLetter> {
    let lines = match format_batch(batch, TextFormat::JsonLines) {
        Ok(text) => text.lines().map(str::to_string).collect::<Vec<_>>(),
        Err(e) => vec![format!("(rows cannot be rendered: {e})"); batch.num_rows()],
    };
    lines
        .into_iter()
        .map(|raw| DeadLetter {
            node: node.to_string(),
            reason: reason.to_string(),
            raw,
            location: String::new(),
        })
        .collect()
}

/// The node's inputs as one stream (concatenated when there are several).
pub fn require_input<'scope>(
    node: &PlanNode,
    mut inputs: Vec<BatchStream<'scope>>,
) -> Result<BatchStream<'scope>, EngineError> {
    match inputs.len() {
        0 => Err(EngineError::Internal(format!(
            "node {} has no input",
            node.id
        ))),
        1 => Ok(inputs.remove(0)),
        _ => {
            let scope = inputs[0].scope();
            Ok(scope.concatenate(inputs))
        }
    }
}

/// Publishes a stream's frontier (a node's watermark) to the system tables' `slot`; the
/// batches are only looked at by reference count (a stream with several readers hands
/// each a clone of the `Arc`-backed batch).
pub fn watermark_probe(stream: BatchStream, slot: Arc<WatermarkSlot>, name: &str) {
    stream.sink(
        Pipeline,
        &format!("watermark[{name}]"),
        move |(input, frontier)| {
            input.for_each(|_cap, data| data.clear());
            slot.observe(
                frontier
                    .frontier()
                    .first()
                    .copied()
                    .unwrap_or(EventTime::MAX),
            );
        },
    );
}

/// A source's event-time clock: which rows are plausible, and the watermark they imply.
///
/// A row whose event time is more than `max_future` ahead of the wall clock (a device whose
/// clock says year 9999) is a dead letter and never moves the watermark; otherwise one such
/// row would close every window of the fleet and make the good rows after it late. The
/// watermark is the highest plausible event time seen minus the allowed `disorder`.
pub struct SourceClock {
    node: String,
    time_field: String,
    disorder_ms: i64,
    max_future_ms: i64,
    max_seen: EventTime,
    /// Whether it said that its event times look like epoch seconds.
    warned_seconds: bool,
}

/// Event times in ms that are epoch seconds of this century read as ms: 10^9 ms is
/// 1970-01-12, 10^11 ms is 1973-03-03; 10^9..10^11 s are the years 2001..5138.
const EPOCH_SECONDS_AS_MS: std::ops::Range<i64> = 1_000_000_000..100_000_000_000;

impl SourceClock {
    /// The clock of source `node`, reading event time from `time_field`.
    pub fn new(node: &str, time_field: &str, disorder_ms: i64, max_future_ms: i64) -> Self {
        SourceClock {
            node: node.to_owned(),
            time_field: time_field.to_owned(),
            disorder_ms,
            max_future_ms,
            max_seen: EventTime::MIN,
            warned_seconds: false,
        }
    }

    /// Splits a decoded batch into its plausible rows (which advance the clock) and the
    /// dead letters of the others.
    pub fn admit(&mut self, batch: RecordBatch) -> (RecordBatch, Vec<DeadLetter>) {
        let Some(max) = event_times(&batch, &self.time_field).and_then(arrow::compute::max) else {
            return (batch, Vec::new());
        };
        if !self.warned_seconds && EPOCH_SECONDS_AS_MS.contains(&max) {
            self.warned_seconds = true;
            tracing::warn!(
                node = %self.node,
                field = %self.time_field,
                "event times such as {max} are read as milliseconds, which is {}; if they are epoch seconds, write them in milliseconds or as RFC 3339 text",
                edgeflow_connectors::rfc3339_ms(max)
            );
        }
        let limit = wall_clock_ms().saturating_add(self.max_future_ms);
        if max <= limit {
            self.max_seen = self.max_seen.max(max);
            return (batch, Vec::new());
        }
        let Some((kept, rejected)) = split_at_time(&batch, &self.time_field, limit) else {
            return (batch, Vec::new());
        };
        if let Some(max) = event_times(&kept, &self.time_field).and_then(arrow::compute::max) {
            self.max_seen = self.max_seen.max(max);
        }
        let reason = format!(
            "event time is more than {} ahead of the wall clock (max_future)",
            crate::plan::render::duration(self.max_future_ms)
        );
        let letters = rows_as_dead_letters(&self.node, &rejected, &reason);
        (kept, letters)
    }

    /// The watermark: the highest plausible event time seen, minus the allowed disorder.
    pub fn watermark(&self) -> EventTime {
        self.max_seen.saturating_sub(self.disorder_ms)
    }
}

/// The `timestamp_ms` column `field` of `batch`.
fn event_times<'a>(batch: &'a RecordBatch, field: &str) -> Option<&'a TimestampMillisecondArray> {
    batch.column_by_name(field)?.as_any().downcast_ref()
}

/// `batch` split into the rows whose time (null included) is at most `limit` and the others.
fn split_at_time(
    batch: &RecordBatch,
    field: &str,
    limit: i64,
) -> Option<(RecordBatch, RecordBatch)> {
    let times = event_times(batch, field)?;
    let early: BooleanArray = times
        .iter()
        .map(|t| Some(t.is_none_or(|t| t <= limit)))
        .collect();
    let late = arrow::compute::not(&early).ok()?;
    Some((
        filter_record_batch(batch, &early).ok()?,
        filter_record_batch(batch, &late).ok()?,
    ))
}

fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
