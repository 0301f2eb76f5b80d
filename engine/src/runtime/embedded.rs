//! The embedded role: both halves of a plan in one process, joined by the embedded log (the
//! default `edgeflow run`, no server needed).

use std::sync::Arc;

use edgeflow_connectors::embedded_log::EmbeddedLog;

use super::build::CutWiring;
use super::context::RunContext;
use super::control::{LogSink, LogSource};
use super::cut::{FrameIn, FrameOut, Producers};
use super::drive::{RunReport, drive};
use super::options::RunOptions;
use crate::error::EngineError;
use crate::plan::{CutTopic, Placement, Plan};

/// The embedded log's wiring: edge worker i writes as producer `embedded-i`, and cloud
/// worker i reads exactly what edge worker i wrote.
struct EmbeddedWiring {
    log: EmbeddedLog,
}

impl CutWiring for EmbeddedWiring {
    fn output(&self, topic: &CutTopic, edge_id: &str) -> Result<FrameOut, EngineError> {
        let producer =
            self.log
                .producer(&topic.name, edge_id)
                .map_err(|source| EngineError::Connector {
                    node: topic.name.clone(),
                    source,
                })?;
        Ok(FrameOut::Log(producer))
    }

    fn input(&self, topic: &CutTopic, worker: usize) -> Result<(FrameIn, Producers), EngineError> {
        let own = embedded_producer(worker);
        let expected = vec![own.clone()];
        let consumer = self.log.consumer(&topic.name, move |edge| edge == own);
        Ok((
            FrameIn::Log(consumer),
            Producers {
                expected,
                idle_timeout: None,
                end_on_stop: false,
                // One process: the frames never leave it.
                enrolled: None,
            },
        ))
    }
}

/// The edge id an embedded run acknowledges control records as.
const EMBEDDED_EDGE: &str = "embedded";

fn embedded_producer(worker: usize) -> String {
    format!("embedded-{worker}")
}

/// Runs both halves of a plan in this process, joined by the embedded log under
/// `<data_dir>/<pipeline>/log`, until every source is exhausted (or `ctx.stop` is set).
pub fn run_embedded(
    plan: Arc<Plan>,
    options: &RunOptions,
    ctx: RunContext,
) -> Result<RunReport, EngineError> {
    let log = EmbeddedLog::open_empty(&ctx.pipeline_dir.join("log")).map_err(|source| {
        EngineError::Connector {
            node: "embedded log".into(),
            source,
        }
    })?;
    if let Some(control) = &plan.control {
        let channel = &ctx.control;
        channel.start_cloud(
            Box::new(LogSink::open(
                &log,
                &plan.pipeline,
                &control.topic,
                "cloud",
            )?),
            Box::new(LogSource::open(&log, &control.topic)),
            Box::new(LogSource::open(&log, &control.acks_topic)),
        );
        channel.start_edge(
            EMBEDDED_EDGE,
            options.workers.max(1),
            Box::new(LogSource::open(&log, &control.topic)),
            Box::new(LogSink::open(
                &log,
                &plan.pipeline,
                &control.acks_topic,
                EMBEDDED_EDGE,
            )?),
            None,
        )?;
    }
    let wiring = Arc::new(EmbeddedWiring { log });
    let halves = [Placement::Edge, Placement::Cloud];
    drive(plan, options, ctx, wiring, &halves, embedded_producer)
}
