//! Batch-at-a-time operators: `filter`, `map` (DataFusion expressions), `detect` and `infer`.
//!
//! A batch that fails to evaluate (a data error such as a division by zero) is counted and
//! its rows go to the dead-letter output with the reason; the worker keeps going.

use edgeflow_connectors::error::chain;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use arrow::compute::concat_batches;
use arrow::record_batch::RecordBatch;
use edgeflow_operators::OperatorError;
use edgeflow_operators::control::ControlAction;
use edgeflow_operators::detect::{Detector, DetectorKind, Emit};
use edgeflow_operators::expr::{CompiledFilter, CompiledMap};
use edgeflow_operators::infer::{InferEmit, InferOperator};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Operator;

use super::batch::Batch;
use super::build::{BatchStream, BuildEnv};
use super::context::RunContext;
use super::control::{
    ControlPort, Controllable, event_times, load_model_source, process_controlled,
};
use super::exchange::exchange_by_key;
use super::sinks::rows_as_dead_letters;
use super::sources::operator_name;
use crate::error::EngineError;
use crate::metrics::NodeMetrics;
use crate::plan::{DetectMethod, DetectSettings, InferSettings, PlanNode};
use crate::spec::load_model;

/// A node's work on one batch, and what it does when its input ends.
trait BatchLogic: 'static {
    /// The rows to emit for `batch` (`None` or an empty batch: nothing).
    fn process(&mut self, batch: &RecordBatch) -> Result<Option<RecordBatch>, OperatorError>;
    /// Called once when the input has ended.
    fn input_ended(&mut self) {}
}

/// A stateless or closure-held node (filter, map).
struct FnLogic<F>(F);

impl<F> BatchLogic for FnLogic<F>
where
    F: FnMut(&RecordBatch) -> Result<Option<RecordBatch>, OperatorError> + 'static,
{
    fn process(&mut self, batch: &RecordBatch) -> Result<Option<RecordBatch>, OperatorError> {
        (self.0)(batch)
    }
}

/// An operator that control records can reconfigure.
trait ControlledNode: Controllable + 'static {
    /// Processes rows with the settings in effect.
    fn run(&mut self, batch: &RecordBatch) -> Result<Option<RecordBatch>, OperatorError>;
}

/// A controllable node with its control port (none when the node is not a control target).
struct Controlled<T> {
    node: T,
    port: Option<ControlPort>,
    enabled: bool,
    time_field: String,
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
fn map_batches<'scope, L: BatchLogic>(
    stream: BatchStream<'scope>,
    node: &PlanNode,
    env: &BuildEnv,
    mut logic: L,
) -> BatchStream<'scope> {
    let metrics = env
        .ctx
        .metrics
        .node(&node.id, node.kind, node.placement.name());
    let ctx = env.ctx.clone();
    let node_id = node.id.clone();
    stream.unary_frontier(Pipeline, &operator_name(node), move |_capability, _info| {
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
                            session.give(Batch(out));
                        }
                        Ok(_) => {}
                        Err(e) => reject(&ctx, &metrics, &node_id, &batch, &e),
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

fn reject(
    ctx: &RunContext,
    metrics: &NodeMetrics,
    node: &str,
    batch: &RecordBatch,
    error: &OperatorError,
) {
    metrics.errors.inc();
    let reason = chain(error);
    tracing::warn!(node, rows = batch.num_rows(), %reason, "batch rejected");
    ctx.dead_letter(metrics, &rows_as_dead_letters(node, batch, &reason));
}

fn operator_error(node: &PlanNode) -> impl FnOnce(OperatorError) -> EngineError + '_ {
    move |source| EngineError::Operator {
        node: node.id.clone(),
        source,
    }
}

/// The `filter` kind.
pub fn filter<'scope>(
    stream: BatchStream<'scope>,
    node: &PlanNode,
    predicate: &str,
    env: &BuildEnv,
) -> Result<BatchStream<'scope>, EngineError> {
    let input = input_schema(node, env)?;
    let compiled = CompiledFilter::new(&input, predicate).map_err(operator_error(node))?;
    Ok(map_batches(
        stream,
        node,
        env,
        FnLogic(move |batch: &RecordBatch| compiled.apply(batch).map(Some)),
    ))
}

/// The `map` kind.
pub fn map<'scope>(
    stream: BatchStream<'scope>,
    node: &PlanNode,
    fields: &[(String, String)],
    drop: &[String],
    env: &BuildEnv,
) -> Result<BatchStream<'scope>, EngineError> {
    let input = input_schema(node, env)?;
    let compiled = CompiledMap::new(&input, fields, drop).map_err(operator_error(node))?;
    Ok(map_batches(
        stream,
        node,
        env,
        FnLogic(move |batch: &RecordBatch| compiled.apply(batch).map(Some)),
    ))
}

/// The `detect` kind: rows are exchanged by key so each key's running statistics live on
/// one worker.
pub fn detect<'scope>(
    stream: BatchStream<'scope>,
    node: &PlanNode,
    settings: &DetectSettings,
    env: &BuildEnv,
) -> Result<BatchStream<'scope>, EngineError> {
    let input = input_schema(node, env)?;
    let kind = match &settings.method {
        DetectMethod::Threshold { min, max } => DetectorKind::Threshold {
            min: *min,
            max: *max,
        },
        DetectMethod::ZScore {
            threshold,
            min_samples,
        } => DetectorKind::ZScore {
            threshold: *threshold,
            min_samples: *min_samples,
        },
    };
    let emit = if settings.emit_all {
        Emit::All
    } else {
        Emit::Exceptions
    };
    let detector = Detector::new(&input, &settings.key, &settings.value, kind.clone(), emit)
        .map_err(operator_error(node))?;
    let keyed = exchange_by_key(stream, &settings.key, &node.id, env);
    let logic = Controlled {
        node: DetectNode { detector, kind },
        port: env.ctx.control.port(&node.id, env.worker),
        enabled: true,
        time_field: input_stream(node, env)?.1,
    };
    Ok(map_batches(keyed, node, env, logic))
}

/// The `infer` kind: rows are exchanged by key so each key's windows and baseline live on one
/// worker; the model file is loaded once per worker.
pub fn infer<'scope>(
    stream: BatchStream<'scope>,
    node: &PlanNode,
    settings: &InferSettings,
    env: &BuildEnv,
) -> Result<BatchStream<'scope>, EngineError> {
    let input = input_schema(node, env)?;
    let model = load_model(&settings.model).map_err(|message| EngineError::Operator {
        node: node.id.clone(),
        source: OperatorError::User(message),
    })?;
    let emit = if settings.emit_all {
        InferEmit::All
    } else {
        InferEmit::Exceptions
    };
    let operator = InferOperator::new(
        &input,
        &settings.key,
        &settings.value,
        &settings.time_field,
        Arc::new(model),
        settings.threshold,
        emit,
    )
    .map_err(operator_error(node))?;
    let keyed = exchange_by_key(stream, &settings.key, &node.id, env);
    let logic = Controlled {
        node: operator,
        port: env.ctx.control.port(&node.id, env.worker),
        enabled: true,
        time_field: settings.time_field.clone(),
    };
    Ok(map_batches(keyed, node, env, logic))
}

/// A detector and the method it was built with (a threshold change keeps the rest).
struct DetectNode {
    detector: Detector,
    kind: DetectorKind,
}

impl Controllable for DetectNode {
    fn apply(
        &mut self,
        action: &ControlAction,
        _applied_at: i64,
        _base_dir: &Path,
    ) -> Result<String, String> {
        let ControlAction::SetThreshold { value } = action else {
            return Err(format!("a detect node does not take {}", action.name()));
        };
        let kind = match &self.kind {
            DetectorKind::ZScore { min_samples, .. } => DetectorKind::ZScore {
                threshold: *value,
                min_samples: *min_samples,
            },
            DetectorKind::Threshold { min, .. } => DetectorKind::Threshold {
                min: *min,
                max: Some(*value),
            },
        };
        self.detector
            .set_kind(kind.clone())
            .map_err(|e| chain(&e))?;
        self.kind = kind;
        Ok(format!("threshold {value}"))
    }
}

impl ControlledNode for DetectNode {
    fn run(&mut self, batch: &RecordBatch) -> Result<Option<RecordBatch>, OperatorError> {
        self.detector.process(batch)
    }
}

impl Controllable for InferOperator {
    fn apply(
        &mut self,
        action: &ControlAction,
        _applied_at: i64,
        base_dir: &Path,
    ) -> Result<String, String> {
        match action {
            ControlAction::SetThreshold { value } => {
                self.set_threshold(Some(*value)).map_err(|e| chain(&e))?;
                Ok(format!("threshold {value}"))
            }
            ControlAction::SwapModel { model } => {
                let model = load_model_source(model, base_dir)?;
                let description = format!(
                    "model swapped ({} parameters, window {})",
                    model.parameters(),
                    model.shape().window
                );
                self.set_model(Arc::new(model));
                Ok(description)
            }
            other => Err(format!("an infer node does not take {}", other.name())),
        }
    }
}

impl ControlledNode for InferOperator {
    fn run(&mut self, batch: &RecordBatch) -> Result<Option<RecordBatch>, OperatorError> {
        self.process(batch)
    }
}

/// The schema and event-time field of a node's (first) input.
fn input_stream(
    node: &PlanNode,
    env: &BuildEnv,
) -> Result<(edgeflow_operators::schema::EventSchema, String), EngineError> {
    let input = node
        .inputs
        .first()
        .ok_or_else(|| EngineError::Internal(format!("node {} has no input", node.id)))?;
    env.plan
        .stream(input)
        .map(|(schema, time_field)| (schema.clone(), time_field.to_owned()))
        .ok_or_else(|| {
            EngineError::Internal(format!("node {}: no schema for input {input}", node.id))
        })
}

/// The schema of a node's (first) input.
pub fn input_schema(
    node: &PlanNode,
    env: &BuildEnv,
) -> Result<edgeflow_operators::schema::EventSchema, EngineError> {
    input_stream(node, env).map(|(schema, _)| schema)
}
