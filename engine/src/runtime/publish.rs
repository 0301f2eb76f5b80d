//! [`publish`]: a timely stream of control batches (e.g. an `insight` node's control output)
//! published on the control topic.

use edgeflow_operators::control::{batch_to_records, records_to_batch};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Operator;

use super::node::{BatchStream, BuildEnv, rows_as_dead_letters};
use crate::plan::PlanNode;

/// Publishes a stream of control batches
/// ([`control_schema`](edgeflow_operators::control::control_schema) rows, e.g. an `insight`
/// node's control output) on the control topic, from worker 0 (every batch is routed there, so ids
/// are published in one order). Rows that are not valid records, or that the plan does not
/// allow, are dead letters with the reason.
pub fn publish(stream: BatchStream<'_>, node: &PlanNode, env: &BuildEnv) {
    let channel = env.ctx.control.clone();
    let ctx = env.ctx.clone();
    let metrics = env
        .ctx
        .metrics
        .node(&node.id, node.kind, node.placement.name());
    let node_id = node.id.clone();
    stream.sink(
        Exchange::new(|_| 0u64),
        &format!("control[{}]", node.id),
        move |(input, _frontier)| {
            input.for_each(|_time, data| {
                for batch in data.drain(..) {
                    metrics.batches_in.inc();
                    metrics.events_in.inc_by(batch.num_rows() as u64);
                    let records = match batch_to_records(&batch) {
                        Ok(records) => records,
                        Err(e) => {
                            metrics.errors.inc();
                            let reason = edgeflow_connectors::error::chain(&e);
                            ctx.dead_letter(
                                &metrics,
                                &rows_as_dead_letters(&node_id, &batch, &reason),
                            );
                            continue;
                        }
                    };
                    for record in records {
                        let refused = match channel.send(record.clone()) {
                            Ok(_) => {
                                metrics.events_out.inc();
                                continue;
                            }
                            Err(e) => e.to_string(),
                        };
                        metrics.errors.inc();
                        tracing::warn!(node = %node_id, reason = %refused, "control record not published");
                        if let Ok(row) = records_to_batch(&[record]) {
                            ctx.dead_letter(
                                &metrics,
                                &rows_as_dead_letters(&node_id, &row, &refused),
                            );
                        }
                    }
                }
            });
        },
    );
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use arrow::array::StringArray;
    use arrow::record_batch::RecordBatch;
    use edgeflow_connectors::embedded_log::EmbeddedLog;
    use edgeflow_operators::control::{ControlAction, ControlRecord};
    use timely::dataflow::operators::ToStream;

    use super::*;
    use crate::metrics::Metrics;
    use crate::runtime::batch::Batch;
    use crate::runtime::control::{
        CONTROL_LOG_TABLE, IssuedRecord, LogSink, LogSource, MessageSource,
    };
    use crate::runtime::{RunContext, RunOptions, catalog_for};

    const PIPELINE: &str = r#"
pipeline: pub
control: { nodes: [spikes] }
nodes:
  sensors: { kind: generator, devices: 2 }
  spikes:  { kind: detect, inputs: [sensors], key: [device], method: zscore, threshold: 4 }
  alerts:  { kind: table, inputs: [spikes] }
"#;

    fn record(id: &str, node: &str) -> ControlRecord {
        ControlRecord {
            id: id.into(),
            node: node.into(),
            action: ControlAction::SetThreshold { value: 3.0 },
            apply_at: 10,
            issued_by: "insights".into(),
            reason: "drift".into(),
        }
    }

    #[test]
    fn a_control_stream_is_published_on_the_topic_and_logged() {
        let dir = tempfile::tempdir().unwrap();
        let plan = Arc::new(
            crate::plan::plan_with("pub.yaml", PIPELINE, Path::new(""), &|_| None).unwrap(),
        );
        let catalog = Arc::new(catalog_for(&plan, 1));
        let ctx = RunContext::new(&plan, dir.path(), Metrics::new(), catalog.clone()).unwrap();
        let control = plan.control.clone().unwrap();
        let log = EmbeddedLog::open_empty(&dir.path().join("log")).unwrap();
        ctx.control.start_cloud(
            Box::new(LogSink::open(&log, "pub", &control.topic, "cloud").unwrap()),
            Box::new(LogSource::open(&log, &control.topic)),
            Box::new(LogSource::open(&log, &control.acks_topic)),
        );
        // One valid record and one for a node that is not controllable (refused).
        let batch = records_to_batch(&[record("i-1", "spikes"), record("i-2", "alerts")]).unwrap();
        {
            let (plan, ctx) = (plan.clone(), ctx.clone());
            timely::execute_directly(move |worker| {
                let options = RunOptions::default();
                let env = BuildEnv {
                    plan: &plan,
                    options: &options,
                    ctx: &ctx,
                    worker: 0,
                    peers: 1,
                    edge_id: "cloud",
                };
                let node = plan.node("spikes").unwrap();
                worker.dataflow::<i64, _, _>(|scope| {
                    let stream = vec![Batch(batch)].to_stream(scope);
                    publish(stream, node, &env);
                });
            });
        }
        let mut topic = LogSource::open(&log, &control.topic);
        let published: Vec<IssuedRecord> = topic
            .poll()
            .unwrap()
            .iter()
            .map(|json| serde_json::from_slice(json).unwrap())
            .collect();
        assert_eq!(published.len(), 1);
        assert_eq!(published[0].record, record("i-1", "spikes"));
        // The log thread appends the record's row (bounded wait: 5 s).
        let table = catalog.get(CONTROL_LOG_TABLE).unwrap().clone();
        let started = std::time::Instant::now();
        while table.visible_rows() < 1 && started.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let rows = table.snapshot().batches;
        assert_eq!(rows.iter().map(RecordBatch::num_rows).sum::<usize>(), 1);
        let ids = rows[0]
            .column_by_name("id")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap()
            .value(0)
            .to_owned();
        assert_eq!(ids, "i-1");
        // The refused record is a dead letter with the reason.
        ctx.finish_sinks().unwrap();
        let dead = std::fs::read_to_string(ctx.dead_letter_path()).unwrap();
        assert_eq!(dead.lines().count(), 1, "{dead}");
        assert!(
            dead.contains("i-2") && dead.contains("not controllable"),
            "{dead}"
        );
        ctx.control.shutdown();
    }
}
