//! Batch-at-a-time operators: a node's logic applied to every batch with its timestamp kept
//! (filter, map, detect, infer), optionally reconfigured by control records.
//!
//! A batch that fails to evaluate (a data error such as a division by zero) is counted and
//! its rows go to the dead-letter output with the reason; the worker keeps going.

use std::time::Instant;

use arrow::compute::concat_batches;
use arrow::record_batch::RecordBatch;
use edgeflow_connectors::error::chain;
use edgeflow_operators::OperatorError;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Operator;

use super::batch::Batch;
use super::control::{ControlPort, Controllable, event_times, process_controlled};
use super::node::{BatchStream, BuildEnv, NodeContext};
use crate::kinds::Counted;
use crate::plan::PlanNode;

/// A node's work on one batch, and what it does when its input ends.
pub trait BatchLogic: 'static {
    /// The rows to emit for `batch` (`None` or an empty batch: nothing).
    fn process(&mut self, batch: &RecordBatch) -> Result<Option<RecordBatch>, OperatorError>;
    /// Called once when the input has ended.
    fn input_ended(&mut self) {}
}

/// A stateless or closure-held node (filter, map).
pub struct FnLogic<F>(pub F);

impl<F> BatchLogic for FnLogic<F>
where
    F: FnMut(&RecordBatch) -> Result<Option<RecordBatch>, OperatorError> + 'static,
{
    fn process(&mut self, batch: &RecordBatch) -> Result<Option<RecordBatch>, OperatorError> {
        (self.0)(batch)
    }
}

/// An operator that control records can reconfigure.
pub trait ControlledNode: Controllable + 'static {
    /// Processes rows with the settings in effect.
    fn run(&mut self, batch: &RecordBatch) -> Result<Option<RecordBatch>, OperatorError>;
}

/// A controllable node with its control port (none when the node is not a control target).
pub struct Controlled<T> {
    /// The node's logic.
    pub node: T,
    /// Its control port (none when the node is not a control target).
    pub port: Option<ControlPort>,
    /// Whether it is enabled (a disabled node passes nothing on).
    pub enabled: bool,
    /// The event-time field control records are applied by.
    pub time_field: String,
}

impl<T: ControlledNode> BatchLogic for Controlled<T> {
    fn process(&mut self, batch: &RecordBatch) -> Result<Option<RecordBatch>, OperatorError> {
        if self.port.is_none() {
            return self.node.run(batch);
        }
        let times = event_times(batch, &self.time_field);
        let outputs = process_controlled(
            &mut self.port,
            &mut self.enabled,
            &mut self.node,
            batch,
            &times,
            T::run,
        )?;
        match outputs.len() {
            0 => Ok(None),
            1 => Ok(outputs.into_iter().next()),
            _ => Ok(Some(concat_batches(&outputs[0].schema(), &outputs)?)),
        }
    }

    fn input_ended(&mut self) {
        if let Some(port) = &mut self.port {
            port.input_ended();
        }
    }
}

/// Applies `logic` to every batch, keeping timestamps; `None` drops the batch.
pub fn map_batches<'scope, L: BatchLogic>(
    stream: BatchStream<'scope>,
    node: &PlanNode,
    env: &BuildEnv,
    mut logic: L,
) -> BatchStream<'scope> {
    let cx = env.node(node);
    let metrics = cx.metrics.clone();
    let flags_exceptions = node.settings.kind().counted() == Some(Counted::Exceptions);
    stream.unary_frontier(Pipeline, &cx.name.clone(), move |_capability, _info| {
        let mut ended = false;
        move |(input, frontier), output| {
            input.for_each(|cap, data| {
                let mut session = output.session(&cap);
                for batch in data.drain(..) {
                    let started = Instant::now();
                    metrics.batches_in.inc();
                    metrics.events_in.inc_by(batch.num_rows() as u64);
                    match logic.process(&batch) {
                        Ok(Some(out)) if out.num_rows() > 0 => {
                            metrics.events_out.inc_by(out.num_rows() as u64);
                            if flags_exceptions {
                                metrics.exceptions.inc_by(flagged_rows(&out));
                            }
                            session.give(Batch(out));
                        }
                        Ok(_) => {}
                        Err(e) => reject(&cx, &batch, &e),
                    }
                    metrics
                        .batch_seconds
                        .observe(started.elapsed().as_secs_f64());
                }
            });
            if !ended && frontier.is_empty() {
                ended = true;
                logic.input_ended();
            }
        }
    })
}

/// The rows of an exception-counted kind's output that are exceptions: those with a
/// `reason` (with `emit: all`, normal rows carry a null one).
fn flagged_rows(batch: &RecordBatch) -> u64 {
    match batch.column_by_name("reason") {
        Some(reason) => (reason.len() - reason.null_count()) as u64,
        None => batch.num_rows() as u64,
    }
}

fn reject(cx: &NodeContext, batch: &RecordBatch, error: &OperatorError) {
    cx.metrics.errors.inc();
    let reason = chain(error);
    tracing::warn!(node = %cx.id, rows = batch.num_rows(), %reason, "batch rejected");
    cx.dead_letter_rows(batch, &reason);
}
