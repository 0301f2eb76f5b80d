//! The edge -> cloud cut: the edge writes each cut stream as frames to a topic, the cloud
//! reads them back into a stream.
//!
//! The producer stamps every frame with its sequence number and watermark (its input
//! frontier); a `watermark` frame goes out whenever the frontier moves without data, and an
//! `end` frame when the stream finishes. The consumer holds its capability at the minimum
//! watermark of the producers it reads, drops frames it has already applied (by edge and
//! sequence), and sends frames it cannot use to the dead-letter output with the reason.

use std::collections::BTreeMap;
use std::time::Duration;

use edgeflow_connectors::embedded_log::{EmbeddedLog, LogProducer};
use edgeflow_connectors::file_source::DeadLetter;
use edgeflow_connectors::frame::{
    Frame, FrameHeader, FrameKind, decode_batch, encode_batch, schema_fingerprint,
};
use timely::dataflow::Scope;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Operator;
use timely::dataflow::operators::generic::operator::source;

use super::batch::{Batch, EventTime};
use super::build::{BatchStream, BuildEnv};
use super::transforms::error_chain;
use crate::error::EngineError;
use crate::metrics::TopicMetrics;
use crate::plan::CutTopic;

/// Frames read per activation.
const FRAMES_PER_POLL: usize = 256;
/// How long an idle consumer waits before polling again.
const IDLE_POLL: Duration = Duration::from_millis(2);

/// One producer's side of a topic: numbers and sends frames.
struct TopicWriter {
    producer: LogProducer,
    header: FrameHeader,
    metrics: TopicMetrics,
}

impl TopicWriter {
    fn send(
        &mut self,
        kind: FrameKind,
        watermark: EventTime,
        payload: Vec<u8>,
    ) -> Result<(), String> {
        self.header.sequence += 1;
        self.header.watermark = watermark;
        self.header.kind = kind;
        let frame = Frame {
            header: self.header.clone(),
            payload,
        };
        let bytes = self.producer.append(&frame).map_err(|e| error_chain(&e))?;
        self.metrics.bytes.inc_by(bytes as u64);
        self.metrics.frames.inc();
        Ok(())
    }
}

/// Writes a cut stream to its topic as producer `edge_id`.
pub fn produce(
    stream: BatchStream,
    topic: &CutTopic,
    env: &BuildEnv,
    log: &EmbeddedLog,
    edge_id: &str,
) -> Result<(), EngineError> {
    let producer = log
        .producer(&topic.name, edge_id)
        .map_err(|source| EngineError::Connector {
            node: topic.name.clone(),
            source,
        })?;
    let mut writer = TopicWriter {
        producer,
        header: FrameHeader {
            pipeline: env.plan.pipeline.clone(),
            stream: topic.stream.to_string(),
            edge_id: edge_id.to_string(),
            sequence: 0,
            watermark: EventTime::MIN,
            schema_fingerprint: schema_fingerprint(&topic.schema),
            kind: FrameKind::Data,
        },
        metrics: env.ctx.metrics.topic(&topic.name),
    };
    let ctx = env.ctx.clone();
    let topic_name = topic.name.clone();
    let mut sent_watermark = EventTime::MIN;
    let mut ended = false;
    stream.sink(
        Pipeline,
        &format!("cut[{}]", topic.name),
        move |(input, frontier)| {
            let watermark = frontier
                .frontier()
                .first()
                .copied()
                .unwrap_or(EventTime::MAX);
            input.for_each(|cap, data| {
                for batch in data.drain(..) {
                    let sent =
                        encode_batch(&batch)
                            .map_err(|e| error_chain(&e))
                            .and_then(|payload| {
                                writer.send(
                                    FrameKind::Data,
                                    cap.least().map_or(watermark, |t| watermark.min(*t)),
                                    payload,
                                )
                            });
                    if let Err(e) = sent {
                        ctx.fail(format!("topic {topic_name}: {e}"));
                    }
                }
            });
            if ended || watermark <= sent_watermark {
                return;
            }
            sent_watermark = watermark;
            let kind = if watermark == EventTime::MAX {
                FrameKind::End
            } else {
                FrameKind::Watermark
            };
            ended = kind == FrameKind::End;
            if let Err(e) = writer.send(kind, watermark, Vec::new()) {
                ctx.fail(format!("topic {topic_name}: {e}"));
            }
        },
    );
    Ok(())
}

/// Progress of one producer as seen by a consumer.
struct ProducerState {
    watermark: EventTime,
    applied_sequence: u64,
}

/// Reads a cut topic back into a stream, from the producers `accept` selects.
pub fn consume<'scope>(
    scope: Scope<'scope, EventTime>,
    topic: &CutTopic,
    env: &BuildEnv,
    log: &EmbeddedLog,
    accept: impl Fn(&str) -> bool + Send + Clone + 'static,
) -> Result<BatchStream<'scope>, EngineError> {
    let mut consumer = log.consumer(&topic.name, accept.clone());
    // Which producers must report before the watermark may pass them: in one process, the
    // edge workers whose ids `accept` selects.
    let mut producers: BTreeMap<String, ProducerState> = (0..env.peers)
        .map(|i| format!("embedded-{i}"))
        .filter(|edge| accept(edge))
        .map(|edge| {
            (
                edge,
                ProducerState {
                    watermark: EventTime::MIN,
                    applied_sequence: 0,
                },
            )
        })
        .collect();
    let expected_fingerprint = schema_fingerprint(&topic.schema);
    let expected_stream = topic.stream.to_string();
    let pipeline = env.plan.pipeline.clone();
    let metrics = env.ctx.metrics.topic(&topic.name);
    let node_metrics = env.ctx.metrics.node(&topic.name, "cut", "cloud");
    let ctx = env.ctx.clone();
    let topic_name = topic.name.clone();
    Ok(source(
        scope,
        &format!("cut[{}]", topic.name),
        move |capability, info| {
            let activator = scope.activator_for(info.address);
            let mut capability = Some(capability);
            move |output| {
                let Some(cap) = capability.as_mut() else {
                    return;
                };
                let frames = match consumer.poll(FRAMES_PER_POLL) {
                    Ok(frames) => frames,
                    Err(e) => {
                        ctx.fail(format!("topic {topic_name}: {}", error_chain(&e)));
                        capability = None;
                        return;
                    }
                };
                let mut rejected = Vec::new();
                let mut session = output.session(&*cap);
                for frame in &frames {
                    let header = &frame.header;
                    let reject = |reason: String| DeadLetter {
                        node: topic_name.clone(),
                        reason,
                        raw: format!("{header:?}"),
                        location: format!("{}:{}", header.edge_id, header.sequence),
                    };
                    if header.pipeline != pipeline || header.stream != expected_stream {
                        rejected.push(reject(format!(
                            "frame for {}/{} on the topic of {pipeline}/{expected_stream}",
                            header.pipeline, header.stream
                        )));
                        continue;
                    }
                    let state = producers
                        .entry(header.edge_id.clone())
                        .or_insert(ProducerState {
                            watermark: EventTime::MIN,
                            applied_sequence: 0,
                        });
                    if header.sequence <= state.applied_sequence {
                        metrics.duplicates.inc();
                        continue;
                    }
                    if header.kind == FrameKind::Data {
                        if header.schema_fingerprint != expected_fingerprint {
                            rejected.push(reject(format!(
                            "unknown schema fingerprint {:016x} (expected {expected_fingerprint:016x})",
                            header.schema_fingerprint
                        )));
                            state.applied_sequence = header.sequence;
                            continue;
                        }
                        match decode_batch(&frame.payload) {
                            Ok(batch) => {
                                node_metrics.events_out.inc_by(batch.num_rows() as u64);
                                session.give(Batch(batch));
                            }
                            Err(e) => rejected
                                .push(reject(format!("corrupt payload: {}", error_chain(&e)))),
                        }
                    }
                    state.applied_sequence = header.sequence;
                    state.watermark = state.watermark.max(header.watermark);
                }
                drop(session);
                ctx.dead_letter(&node_metrics, &rejected);
                let watermark = producers
                    .values()
                    .map(|p| p.watermark)
                    .min()
                    .unwrap_or(EventTime::MAX);
                if watermark == EventTime::MAX || (frames.is_empty() && ctx.failure().is_some()) {
                    capability = None;
                    return;
                }
                if watermark > *cap.time() {
                    cap.downgrade(&watermark);
                }
                if frames.is_empty() {
                    activator.activate_after(IDLE_POLL);
                } else {
                    activator.activate();
                }
            }
        },
    ))
}
