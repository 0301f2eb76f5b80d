//! Sink operators: `table` (materialized for SQL), `file`, `stdout`, and the dead-letter
//! sink that keeps late rows nobody consumes from being lost.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use arrow::record_batch::RecordBatch;
use edgeflow_connectors::file_sink::{TextFormat, format_batch};
use edgeflow_connectors::file_source::DeadLetter;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Operator;

use super::batch::EventTime;
use super::build::{BatchStream, BuildEnv};
use super::sources::operator_name;
use crate::error::EngineError;
use crate::plan::PlanNode;
use crate::sql::system::WatermarkSlot;

/// The `table` kind: appends rows to the materialized table and tells it how far this
/// worker's input is complete, so SQL sees whole windows only.
pub fn table(
    stream: BatchStream,
    node: &PlanNode,
    name: &str,
    env: &BuildEnv,
) -> Result<(), EngineError> {
    let table = env
        .ctx
        .catalog
        .get(name)
        .cloned()
        .ok_or_else(|| EngineError::Internal(format!("table {name} is not in the catalog")))?;
    let metrics = env
        .ctx
        .metrics
        .node(&node.id, node.kind, node.placement.name());
    let worker = env.worker;
    stream.sink(Pipeline, &operator_name(node), move |(input, frontier)| {
        input.for_each(|cap, data| {
            for batch in data.drain(..) {
                let started = Instant::now();
                metrics.batches_in.inc();
                metrics.events_in.inc_by(batch.num_rows() as u64);
                // A message without a time makes no progress claim; such rows are final at once.
                table.append(cap.least().copied().unwrap_or(EventTime::MIN), batch.0);
                metrics
                    .batch_seconds
                    .observe(started.elapsed().as_secs_f64());
            }
        });
        let watermark = frontier
            .frontier()
            .first()
            .copied()
            .unwrap_or(EventTime::MAX);
        metrics.watermark.set(watermark);
        table.advance(worker, watermark);
    });
    Ok(())
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

/// The `file` kind as a sink.
pub fn file(stream: BatchStream, node: &PlanNode, env: &BuildEnv) {
    let metrics = env
        .ctx
        .metrics
        .node(&node.id, node.kind, node.placement.name());
    let ctx = env.ctx.clone();
    let node_id = node.id.clone();
    stream.sink(Pipeline, &operator_name(node), move |(input, _frontier)| {
        input.for_each(|_cap, data| {
            for batch in data.drain(..) {
                metrics.batches_in.inc();
                metrics.events_in.inc_by(batch.num_rows() as u64);
                ctx.write_file_sink(&node_id, &batch);
            }
        });
    });
}

/// The `stdout` kind: JSON lines or aligned tables on standard output.
pub fn stdout(stream: BatchStream, node: &PlanNode, table_format: bool, env: &BuildEnv) {
    let metrics = env
        .ctx
        .metrics
        .node(&node.id, node.kind, node.placement.name());
    let format = if table_format {
        TextFormat::Table
    } else {
        TextFormat::JsonLines
    };
    stream.sink(Pipeline, &operator_name(node), move |(input, _frontier)| {
        input.for_each(|_cap, data| {
            for batch in data.drain(..) {
                metrics.batches_in.inc();
                metrics.events_in.inc_by(batch.num_rows() as u64);
                match format_batch(&batch, format) {
                    Ok(text) => {
                        let mut out = std::io::stdout().lock();
                        // A closed stdout (e.g. `| head`) must not stop the pipeline.
                        let _ = out.write_all(text.as_bytes());
                        if !text.ends_with('\n') {
                            let _ = out.write_all(b"\n");
                        }
                    }
                    Err(e) => {
                        metrics.errors.inc();
                        tracing::warn!(error = %e, "cannot format batch for stdout");
                    }
                }
            }
        });
    });
}

/// Late rows of a window whose `late` output no node reads: counted already, written to the
/// dead-letter output so they are never silently lost.
pub fn dead_letter_late(stream: BatchStream, node: &PlanNode, env: &BuildEnv) {
    let metrics = env
        .ctx
        .metrics
        .node(&node.id, node.kind, node.placement.name());
    let ctx = env.ctx.clone();
    let node_id = node.id.clone();
    stream.sink(
        Pipeline,
        &format!("late[{}]", node.id),
        move |(input, _frontier)| {
            input.for_each(|_cap, data| {
                for batch in data.drain(..) {
                    ctx.dead_letter(
                        &metrics,
                        &rows_as_dead_letters(&node_id, &batch, LATE_REASON),
                    );
                }
            });
        },
    );
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
