//! The `window` kind on timely: keyed exchange, then an operator with two outputs (results
//! and late rows) that closes windows as the input frontier passes them.
//!
//! Results carry `window_start` as their event time and are emitted at that timely time. The
//! operator holds its result capability at `frontier - allowed_lateness - size`, which is
//! never later than the start of a window that may still open or close, so downstream
//! frontiers stay true watermarks.

use std::time::Instant;

use arrow::array::TimestampMillisecondArray;
use arrow::record_batch::RecordBatch;
use edgeflow_operators::window::{AggregateFn, AggregateSpec, WindowAggregator, WindowSpec};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

use super::batch::{Batch, EventTime};
use super::build::{BatchStream, BuildEnv, NodeOutputs};
use super::exchange::exchange_by_key;
use super::sinks::{LATE_REASON, rows_as_dead_letters};
use super::sources::operator_name;
use edgeflow_connectors::error::chain;

use super::transforms::input_schema;
use crate::error::EngineError;
use crate::plan::{PlanNode, WindowSettings};

/// Builds a window node; returns its results and its late rows.
pub fn window<'scope>(
    stream: BatchStream<'scope>,
    node: &PlanNode,
    settings: &WindowSettings,
    env: &BuildEnv,
) -> Result<NodeOutputs<'scope>, EngineError> {
    let input = input_schema(node, env)?;
    let aggregates = settings
        .aggregates
        .iter()
        .map(|a| {
            AggregateFn::from_name(&a.func)
                .map(|func| AggregateSpec {
                    func,
                    field: a.field.clone(),
                    output: a.output.clone(),
                })
                .ok_or_else(|| EngineError::Internal(format!("unknown aggregate {}", a.func)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let spec = WindowSpec {
        size_ms: settings.size_ms,
        slide_ms: settings.slide_ms,
        allowed_lateness_ms: settings.allowed_lateness_ms,
    };
    let mut aggregator = WindowAggregator::new(
        &input,
        &settings.time_field,
        &settings.key,
        &aggregates,
        spec,
    )
    .map_err(|source| EngineError::Operator {
        node: node.id.clone(),
        source,
    })?;
    let hold_back = settings
        .allowed_lateness_ms
        .saturating_add(settings.size_ms);

    let keyed = exchange_by_key(stream, &settings.key, &node.id, env);
    let metrics = env
        .ctx
        .metrics
        .node(&node.id, node.kind, node.placement.name());
    let ctx = env.ctx.clone();
    let node_id = node.id.clone();

    let mut builder = OperatorBuilder::new(operator_name(node), keyed.scope());
    let mut input = builder.new_input(keyed, Pipeline);
    let (results, results_stream) = builder.new_output::<Vec<Batch>>();
    let (late, late_stream) = builder.new_output::<Vec<Batch>>();
    let mut results = OutputBuilder::from(results);
    let mut late = OutputBuilder::from(late);
    builder.build(move |mut capabilities| {
        // One capability per output, in order: results, late. Late rows are sent with the
        // capability of the batch they came in, so only the results capability is held.
        capabilities.truncate(1);
        let mut held = capabilities.pop();
        let mut last_watermark = EventTime::MIN;
        move |frontiers| {
            let mut results = results.activate();
            let mut late = late.activate();
            input.for_each(|cap, data| {
                for batch in data.drain(..) {
                    let started = Instant::now();
                    metrics.batches_in.inc();
                    metrics.events_in.inc_by(batch.num_rows() as u64);
                    let declared = cap.least().copied().unwrap_or(EventTime::MIN);
                    match aggregator.push_with_watermark(&batch, declared) {
                        Ok(outcome) => {
                            if let Some(rows) = outcome.late {
                                metrics.late_events.inc_by(rows.num_rows() as u64);
                                match cap.least() {
                                    Some(time) => {
                                        late.session(&cap.delayed(time, 1)).give(Batch(rows))
                                    }
                                    None => ctx.dead_letter(
                                        &metrics,
                                        &rows_as_dead_letters(&node_id, &rows, LATE_REASON),
                                    ),
                                }
                            }
                            if let Some((rows, reason)) = outcome.invalid {
                                metrics.errors.inc();
                                ctx.dead_letter(
                                    &metrics,
                                    &rows_as_dead_letters(&node_id, &rows, &reason),
                                );
                            }
                        }
                        Err(e) => {
                            metrics.errors.inc();
                            let reason = chain(&e);
                            ctx.dead_letter(
                                &metrics,
                                &rows_as_dead_letters(&node_id, &batch, &reason),
                            );
                        }
                    }
                    metrics
                        .batch_seconds
                        .observe(started.elapsed().as_secs_f64());
                }
            });
            let watermark = frontiers[0]
                .frontier()
                .first()
                .copied()
                .unwrap_or(EventTime::MAX);
            if watermark <= last_watermark {
                return;
            }
            last_watermark = watermark;
            metrics.watermark.set(watermark);
            let Some(cap) = held.as_mut() else { return };
            match aggregator.advance(watermark) {
                Ok(Some(closed)) => {
                    metrics.events_out.inc_by(closed.num_rows() as u64);
                    let time = earliest_start(&closed)
                        .unwrap_or(*cap.time())
                        .max(*cap.time());
                    results.session(&cap.delayed(&time)).give(Batch(closed));
                }
                Ok(None) => {}
                Err(e) => {
                    metrics.errors.inc();
                    ctx.fail(format!(
                        "node \"{node_id}\": closing windows: {}",
                        chain(&e)
                    ));
                }
            }
            if watermark == EventTime::MAX {
                held = None;
            } else {
                let hold = watermark.saturating_sub(hold_back);
                if hold > *cap.time() {
                    cap.downgrade(&hold);
                }
            }
        }
    });
    Ok(NodeOutputs {
        main: Some(results_stream),
        late: Some(late_stream),
        control: None,
    })
}

/// The smallest `window_start` of a result batch (its first column).
fn earliest_start(batch: &RecordBatch) -> Option<EventTime> {
    let starts = batch
        .column(0)
        .as_any()
        .downcast_ref::<TimestampMillisecondArray>()?;
    arrow::compute::min(starts)
}
