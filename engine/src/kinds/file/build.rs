//! Building a `file` node: as a source, worker 0 reads the file (bad lines go to the
//! dead-letter output) holding its capability at the file's watermark; as a sink, every
//! worker appends its batches to the file opened before the run.

use edgeflow_connectors::file_source::{FileSource, FileSourceOptions};
use timely::dataflow::Scope;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Operator;
use timely::dataflow::operators::generic::operator::source as timely_source;

use super::FileSourceSettings;
use crate::error::EngineError;
use crate::plan::PlanNode;
use crate::runtime::batch::{Batch, EventTime};
use crate::runtime::node::{
    BATCHES_PER_ACTIVATION, BatchStream, BuildEnv, SourceClock, operator_name,
};

/// The `file` kind as a source: CSV or JSON lines, read by worker 0; bad lines go to the
/// dead-letter output.
pub fn source<'scope>(
    scope: Scope<'scope, EventTime>,
    node: &PlanNode,
    settings: &FileSourceSettings,
    env: &BuildEnv,
) -> Result<BatchStream<'scope>, EngineError> {
    let mut reader = if env.worker == 0 {
        let options = FileSourceOptions {
            path: settings.path.clone(),
            format: settings.format,
            schema: node.schema.clone(),
            has_header: settings.header,
            batch_rows: env.options.batch_rows,
        };
        Some(
            FileSource::open(&node.id, options).map_err(|source| EngineError::Connector {
                node: node.id.clone(),
                source,
            })?,
        )
    } else {
        None
    };
    let time_field = node.time_field.clone().ok_or_else(|| {
        EngineError::Internal(format!("file source {} has no time field", node.id))
    })?;
    let mut clock = SourceClock::new(
        &node.id,
        &time_field,
        settings.disorder_ms,
        settings.max_future_ms,
    );
    let metrics = env.metrics(node);
    let ctx = env.ctx.clone();
    let node_id = node.id.clone();
    Ok(timely_source(
        scope,
        &operator_name(node),
        move |capability, info| {
            let activator = scope.activator_for(info.address);
            let mut capability = if reader.is_some() {
                Some(capability)
            } else {
                None
            };
            move |output| {
                let (Some(cap), Some(source)) = (capability.as_mut(), reader.as_mut()) else {
                    return;
                };
                if ctx.stopping() {
                    capability = None;
                    return;
                }
                for _ in 0..BATCHES_PER_ACTIVATION {
                    match source.next_batch() {
                        Ok(Some((batch, dead))) => {
                            ctx.dead_letter(&metrics, &dead);
                            let (batch, implausible) = clock.admit(batch);
                            ctx.dead_letter(&metrics, &implausible);
                            if batch.num_rows() == 0 {
                                continue;
                            }
                            metrics.events_out.inc_by(batch.num_rows() as u64);
                            output.session(&*cap).give(Batch(batch));
                            let watermark = clock.watermark();
                            if watermark > *cap.time() {
                                cap.downgrade(&watermark);
                            }
                        }
                        Ok(None) => {
                            capability = None;
                            return;
                        }
                        Err(e) => {
                            metrics.errors.inc();
                            ctx.fail(format!("node \"{node_id}\": {e}"));
                            capability = None;
                            return;
                        }
                    }
                }
                activator.activate();
            }
        },
    ))
}

/// The `file` kind as a sink.
pub fn sink(stream: BatchStream, node: &PlanNode, env: &BuildEnv) {
    let metrics = env.metrics(node);
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
