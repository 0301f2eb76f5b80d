//! Batch-at-a-time operators: `filter`, `map` (DataFusion expressions), `detect` and `infer`.
//!
//! A batch that fails to evaluate (a data error such as a division by zero) is counted and
//! its rows go to the dead-letter output with the reason; the worker keeps going.

use edgeflow_connectors::error::chain;
use std::sync::Arc;
use std::time::Instant;

use arrow::record_batch::RecordBatch;
use edgeflow_operators::OperatorError;
use edgeflow_operators::detect::{Detector, DetectorKind, Emit};
use edgeflow_operators::expr::{CompiledFilter, CompiledMap};
use edgeflow_operators::infer::{InferEmit, InferOperator};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Operator;

use super::batch::Batch;
use super::build::{BatchStream, BuildEnv};
use super::context::RunContext;
use super::exchange::exchange_by_key;
use super::sinks::rows_as_dead_letters;
use super::sources::operator_name;
use crate::error::EngineError;
use crate::metrics::NodeMetrics;
use crate::plan::{DetectMethod, DetectSettings, InferSettings, PlanNode};
use crate::spec::load_model;

/// Applies `logic` to every batch, keeping timestamps; `None` drops the batch.
fn map_batches<'scope, F>(
    stream: BatchStream<'scope>,
    node: &PlanNode,
    env: &BuildEnv,
    mut logic: F,
) -> BatchStream<'scope>
where
    F: FnMut(&RecordBatch) -> Result<Option<RecordBatch>, OperatorError> + 'static,
{
    let metrics = env
        .ctx
        .metrics
        .node(&node.id, node.kind, node.placement.name());
    let ctx = env.ctx.clone();
    let node_id = node.id.clone();
    stream.unary(Pipeline, &operator_name(node), move |_capability, _info| {
        move |input, output| {
            input.for_each(|cap, data| {
                let mut session = output.session(&cap);
                for batch in data.drain(..) {
                    let started = Instant::now();
                    metrics.batches_in.inc();
                    metrics.events_in.inc_by(batch.num_rows() as u64);
                    match logic(&batch) {
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
    Ok(map_batches(stream, node, env, move |batch| {
        compiled.apply(batch).map(Some)
    }))
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
    Ok(map_batches(stream, node, env, move |batch| {
        compiled.apply(batch).map(Some)
    }))
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
    let mut detector = Detector::new(&input, &settings.key, &settings.value, kind, emit)
        .map_err(operator_error(node))?;
    let keyed = exchange_by_key(stream, &settings.key, &node.id, env);
    Ok(map_batches(keyed, node, env, move |batch| {
        detector.process(batch)
    }))
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
    let mut operator = InferOperator::new(
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
    Ok(map_batches(keyed, node, env, move |batch| {
        operator.process(batch)
    }))
}

/// The schema of a node's (first) input.
pub fn input_schema(
    node: &PlanNode,
    env: &BuildEnv,
) -> Result<edgeflow_operators::schema::EventSchema, EngineError> {
    let input = node
        .inputs
        .first()
        .ok_or_else(|| EngineError::Internal(format!("node {} has no input", node.id)))?;
    env.plan
        .stream(input)
        .map(|(schema, _)| schema.clone())
        .ok_or_else(|| {
            EngineError::Internal(format!("node {}: no schema for input {input}", node.id))
        })
}
