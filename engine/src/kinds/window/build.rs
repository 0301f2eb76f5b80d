//! The `window` kind on timely: keyed exchange, then an operator with two outputs (results
//! and late rows) that closes windows as the input frontier passes them.
//!
//! Results carry `window_start` as their event time and are emitted at that timely time. The
//! operator holds its result capability at `frontier - allowed_lateness - size`, which is
//! never later than the start of a window that may still open or close, so downstream
//! frontiers stay true watermarks.

use std::path::Path;
use std::time::Instant;

use arrow::array::{BooleanArray, TimestampMillisecondArray};
use arrow::record_batch::RecordBatch;
use edgeflow_operators::control::{ControlAction, ControlStep};
use edgeflow_operators::schema::EventSchema;
use edgeflow_operators::window::{AggregateFn, AggregateSpec, WindowAggregator, WindowSpec};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

use edgeflow_connectors::error::chain;

use super::WindowSettings;
use crate::runtime::batch::{Batch, EventTime};
use crate::runtime::control::{Controllable, event_times};
use crate::runtime::exchange::exchange_by_key;
use crate::runtime::node::{
    BatchStream, BuildEnv, LATE_REASON, NodeOutputs, operator_name, rows_as_dead_letters,
};

use crate::error::EngineError;
use crate::plan::PlanNode;

/// Builds a window node; returns its results and its late rows.
pub fn window<'scope>(
    stream: BatchStream<'scope>,
    node: &PlanNode,
    settings: &WindowSettings,
    env: &BuildEnv,
) -> Result<NodeOutputs<'scope>, EngineError> {
    let input = env.input_schema(node)?;
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
    let aggregator = WindowAggregator::new(
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
    let mut state = WindowState {
        aggregator,
        input: input.clone(),
        time_field: settings.time_field.clone(),
        key: settings.key.clone(),
        aggregates,
        spec,
        flushed: Vec::new(),
        switched_at: None,
    };
    let mut port = env.ctx.control.port(&node.id, env.worker);
    let mut enabled = true;
    let time_field = settings.time_field.clone();

    let keyed = exchange_by_key(stream, &settings.key, &node.id, env);
    let metrics = env.metrics(node);
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
                    let times = event_times(&batch, &time_field);
                    let steps = match port.as_mut() {
                        Some(port) => port.schedule(&times),
                        None => vec![ControlStep::Rows(0..batch.num_rows())],
                    };
                    for step in steps {
                        let range = match step {
                            ControlStep::Rows(range) if enabled => range,
                            ControlStep::Rows(_) => continue,
                            ControlStep::Apply { record, applied_at } => {
                                if let Some(port) = &port {
                                    port.apply(&record, applied_at, &mut enabled, &mut state);
                                }
                                continue;
                            }
                        };
                        let rows = batch.slice(range.start, range.len());
                        // Rows before a window-size switch belong to windows already closed.
                        let (before, rows) = match state.switched_at {
                            Some(at) => split_before(&rows, &times[range], at),
                            None => (None, Some(rows)),
                        };
                        let mut late_rows: Vec<RecordBatch> = before.into_iter().collect();
                        if let Some(rows) = rows {
                            match state.aggregator.push_with_watermark(&rows, declared) {
                                Ok(outcome) => {
                                    late_rows.extend(outcome.late);
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
                                        &rows_as_dead_letters(&node_id, &rows, &reason),
                                    );
                                }
                            }
                        }
                        for rows in late_rows {
                            metrics.late_events.inc_by(rows.num_rows() as u64);
                            match cap.least() {
                                Some(time) => late.session(&cap.delayed(time, 1)).give(Batch(rows)),
                                None => ctx.dead_letter(
                                    &metrics,
                                    &rows_as_dead_letters(&node_id, &rows, LATE_REASON),
                                ),
                            }
                        }
                    }
                    // Windows closed early by a size switch.
                    if let Some(held) = held.as_ref() {
                        for closed in state.flushed.drain(..) {
                            metrics.events_out.inc_by(closed.num_rows() as u64);
                            let time = earliest_start(&closed)
                                .unwrap_or(*held.time())
                                .max(*held.time());
                            results.session(&held.delayed(&time)).give(Batch(closed));
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
            if watermark == EventTime::MAX
                && let Some(port) = port.as_mut()
            {
                port.input_ended();
            }
            let Some(cap) = held.as_mut() else { return };
            match state.aggregator.advance(watermark) {
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
                let hold_back = state
                    .spec
                    .allowed_lateness_ms
                    .saturating_add(state.spec.size_ms);
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

/// A window node's aggregator and what it takes to rebuild it with another size.
struct WindowState {
    aggregator: WindowAggregator,
    input: EventSchema,
    time_field: String,
    key: Vec<String>,
    aggregates: Vec<AggregateSpec>,
    spec: WindowSpec,
    /// Windows closed by a size switch, not yet emitted.
    flushed: Vec<RecordBatch>,
    /// Event time of the last size switch: rows before it are late.
    switched_at: Option<i64>,
}

impl Controllable for WindowState {
    /// `set_window_size`: every open window closes now (with the rows it has), and windows
    /// of the new size start from `applied_at`; rows before `applied_at` arriving later are
    /// late.
    fn apply(
        &mut self,
        action: &ControlAction,
        applied_at: i64,
        _base_dir: &Path,
    ) -> Result<String, String> {
        let ControlAction::SetWindowSize { size_ms } = action else {
            return Err(format!("a window node does not take {}", action.name()));
        };
        if self.spec.slide_ms != self.spec.size_ms {
            return Err("only a tumbling window's size can change".into());
        }
        let spec = WindowSpec {
            size_ms: *size_ms,
            slide_ms: *size_ms,
            allowed_lateness_ms: self.spec.allowed_lateness_ms,
        };
        let fresh = WindowAggregator::new(
            &self.input,
            &self.time_field,
            &self.key,
            &self.aggregates,
            spec,
        )
        .map_err(|e| chain(&e))?;
        let old = std::mem::replace(&mut self.aggregator, fresh);
        let mut old = old;
        if let Some(closed) = old.advance(EventTime::MAX).map_err(|e| chain(&e))? {
            self.flushed.push(closed);
        }
        self.spec = spec;
        self.switched_at = Some(applied_at);
        Ok(format!("window size {size_ms} ms"))
    }
}

/// Splits rows (with event times `times`) into those before `at` and the rest.
fn split_before(
    rows: &RecordBatch,
    times: &[i64],
    at: i64,
) -> (Option<RecordBatch>, Option<RecordBatch>) {
    let before: BooleanArray = times.iter().map(|&t| Some(t < at)).collect();
    let count = before.true_count();
    if count == 0 {
        return (None, Some(rows.clone()));
    }
    if count == rows.num_rows() {
        return (Some(rows.clone()), None);
    }
    let after = arrow::compute::not(&before).unwrap_or_else(|_| before.clone());
    let pick = |mask: &BooleanArray| arrow::compute::filter_record_batch(rows, mask).ok();
    (pick(&before), pick(&after))
}

/// The smallest `window_start` of a result batch (its first column).
fn earliest_start(batch: &RecordBatch) -> Option<EventTime> {
    let starts = batch
        .column(0)
        .as_any()
        .downcast_ref::<TimestampMillisecondArray>()?;
    arrow::compute::min(starts)
}
