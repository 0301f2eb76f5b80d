//! The edge -> cloud cut: the edge writes each cut stream as frames to a topic, the cloud
//! reads them back into a stream.
//!
//! The producer stamps every frame with its sequence number and watermark (its input
//! frontier); a `watermark` frame goes out whenever the frontier moves without data, and an
//! `end` frame when the stream finishes. Frames go to the embedded log, or (edge role) into
//! the spool that the forwarder drains into Kafka. The consumer holds its capability at the
//! minimum watermark of the producers it waits for (an edge silent for longer than the idle
//! timeout stops holding it back), refuses frames not signed by their enrolled edge when
//! it has a registry of edges (before anything else), drops frames it has already applied (by edge,
//! incarnation and sequence), and sends frames it cannot use to the dead-letter output with
//! the reason.
//!
//! A producer is an edge id in one incarnation (its spool's life, see
//! `FrameHeader::incarnation`). When a new incarnation of an edge is heard from, the edge was
//! re-provisioned: the old one is retired (its late frames still count, exactly once, but
//! it no longer holds the watermark back or keeps the stream from ending) and the new one
//! numbers its frames from 1 again. Without a list of expected edges, the edges heard from
//! are the fleet so far: once every one of them has ended, the frontier moves past all they
//! sent (so every received window becomes final), and the stream stays open for edges that
//! start later.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use edgeflow_connectors::embedded_log::{LogConsumer, LogProducer};
use edgeflow_connectors::error::chain;
use edgeflow_connectors::file_source::DeadLetter;
use edgeflow_connectors::frame::{
    Frame, FrameHeader, FrameKind, decode_batch_as, encode_batch, schema_fingerprint,
};
use edgeflow_connectors::identity::{EdgeRegistry, FrameSigner, Rejection};
#[cfg(feature = "kafka")]
use edgeflow_connectors::kafka::{CloudFeed, FeedItem};
use edgeflow_connectors::spool::{Appended, Spool};
use edgeflow_operators::codec::{self, CodecMode, CodecOptions, Encoder};
use timely::dataflow::Scope;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Operator;
use timely::dataflow::operators::generic::operator::source;

use super::batch::{Batch, EventTime};
use super::node::{BatchStream, BuildEnv};
use crate::error::EngineError;
use crate::metrics::TopicMetrics;
use crate::plan::CutTopic;
use crate::spec::CompressMode;
use crate::sql::system::{CUT_KIND, EdgeProgress, EdgeSide};

/// Where the frames of a cut stream go.
pub enum FrameOut {
    /// The embedded log (one process).
    Log(LogProducer),
    /// The edge's spool, drained into Kafka by the forwarder.
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    Spool {
        /// The spool.
        spool: Arc<Spool>,
        /// Kept when the spool is full (exceptions), rather than dropped.
        keep: bool,
        /// Set when the edge is stopping: a blocked append gives up.
        stop: Arc<AtomicBool>,
        /// The edge's key: every frame is signed here, once, before it is spooled (re-sends
        /// carry the same signature). `None`: frames go unsigned.
        signer: Option<Arc<FrameSigner>>,
    },
}

impl FrameOut {
    /// Writes `frame` for `topic` (signing it first when the edge has a key), returning the
    /// bytes it took.
    fn append(&mut self, topic: &str, frame: &mut Frame) -> Result<u64, String> {
        match self {
            FrameOut::Log(producer) => producer
                .append(frame)
                .map(|n| n as u64)
                .map_err(|e| chain(&e)),
            FrameOut::Spool {
                spool,
                keep,
                stop,
                signer,
            } => {
                if let Some(signer) = signer {
                    signer.sign(frame);
                }
                let stopping = || stop.load(Ordering::Relaxed);
                match spool.append(topic, frame, *keep, &stopping) {
                    Ok(Appended::Stored(_)) => Ok(frame.payload.len() as u64),
                    Ok(_) => Ok(0),
                    Err(e) => Err(chain(&e)),
                }
            }
        }
    }
}

/// Where the frames of a cut stream come from.
pub enum FrameIn {
    /// The embedded log.
    Log(LogConsumer),
    /// A Kafka topic behind the cloud's input log.
    #[cfg(feature = "kafka")]
    Kafka(Box<CloudFeed>),
    /// Nothing: this worker does not read the topic (another one does).
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    Nothing,
}

/// Which producers the consumer waits for.
#[derive(Debug, Clone, Default)]
pub struct Producers {
    /// Producers whose watermark holds the stream back from the start, before they are
    /// heard from. The stream ends when all of them have ended; with none, it never ends.
    pub expected: Vec<String>,
    /// A producer not heard from for this long stops holding the watermark back until it
    /// sends again.
    pub idle_timeout: Option<Duration>,
    /// End the stream when the run is asked to stop (the cloud role: no producer will send
    /// an end frame for it). In one process the edges end their streams themselves.
    pub end_on_stop: bool,
    /// The enrolled edges: when set, a frame is applied only if it is signed by its edge's
    /// key. Checked first, so a refused frame changes nothing (no producer, watermark,
    /// sequence or end). `None`: every frame is taken at its word.
    pub enrolled: Option<Arc<EdgeRegistry>>,
}

/// The `edge` label of frames refused because their edge id is not enrolled (it cannot be an
/// edge id: those are letters, digits, `-`, `_` and `.`).
const UNENROLLED: &str = "(unenrolled)";

/// Frames read per activation.
const FRAMES_PER_POLL: usize = 256;
/// How long an idle consumer waits before polling again.
const IDLE_POLL: Duration = Duration::from_millis(2);

/// One producer's side of a topic: numbers and sends frames.
struct TopicWriter {
    out: FrameOut,
    /// `None`: plain Arrow IPC (`compress: off`).
    encoder: Option<Encoder>,
    topic: String,
    header: FrameHeader,
    metrics: TopicMetrics,
    /// This edge's row in `edgeflow_edges`, when it writes to its own spool (edge role).
    progress: Option<Arc<EdgeProgress>>,
}

impl TopicWriter {
    /// Encodes a batch as configured, counting its raw (Arrow) bytes.
    fn encode(&mut self, batch: &RecordBatch) -> Result<Vec<u8>, String> {
        let raw: usize = batch
            .columns()
            .iter()
            .map(|c| codec::raw_bytes(c.as_ref()))
            .sum();
        self.metrics.raw_bytes.inc_by(raw as u64);
        match &mut self.encoder {
            Some(encoder) => encoder.encode(batch).map_err(|e| chain(&e)),
            None => encode_batch(batch).map_err(|e| chain(&e)),
        }
    }

    fn send(
        &mut self,
        kind: FrameKind,
        watermark: EventTime,
        payload: Vec<u8>,
    ) -> Result<(), String> {
        self.header.sequence += 1;
        self.header.watermark = watermark;
        self.header.kind = kind;
        let mut frame = Frame {
            header: self.header.clone(),
            payload,
            signature: None,
        };
        let bytes = self.out.append(&self.topic, &mut frame)?;
        self.metrics.bytes.inc_by(bytes);
        self.metrics.frames.inc();
        if let Some(progress) = &self.progress {
            progress.record_frame(frame.header.sequence, watermark, bytes);
        }
        Ok(())
    }
}

/// Writes a cut stream to `out` as producer `edge_id`.
pub fn produce(
    stream: BatchStream,
    topic: &CutTopic,
    env: &BuildEnv,
    out: FrameOut,
    edge_id: &str,
) -> Result<(), EngineError> {
    let encoder = match topic.compress.mode {
        CompressMode::Off => None,
        mode => {
            let options = CodecOptions {
                mode: if mode == CompressMode::Fast {
                    CodecMode::Fast
                } else {
                    CodecMode::Auto
                },
                error_bounds: topic.compress.error_bounds.clone(),
            };
            Some(Encoder::new(options).map_err(|e| EngineError::Internal(chain(&e)))?)
        }
    };
    let (progress, incarnation) = match &out {
        FrameOut::Spool { spool, .. } => {
            let progress = env.ctx.system.edge(
                &topic.name,
                edge_id,
                EdgeSide::Producer,
                Some(spool.clone()),
            );
            progress.start_incarnation(spool.incarnation());
            (Some(progress), spool.incarnation())
        }
        FrameOut::Log(_) => (None, 0),
    };
    let mut writer = TopicWriter {
        out,
        progress,
        encoder,
        topic: topic.name.clone(),
        header: FrameHeader {
            pipeline: env.plan.pipeline.clone(),
            stream: topic.stream.to_string(),
            edge_id: edge_id.to_string(),
            incarnation,
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
                    let sent = writer.encode(&batch).and_then(|payload| {
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

/// Progress of one producer (an edge in one incarnation) as seen by a consumer.
struct ProducerState {
    watermark: EventTime,
    /// The highest watermark it sent before its `end` frame.
    open_watermark: EventTime,
    applied_sequence: u64,
    last_seen: Instant,
    /// A newer incarnation of the same edge has been heard from: this one no longer holds
    /// the watermark back.
    retired: bool,
    /// The edge's row, published for `edgeflow_edges` (shared by its incarnations).
    published: Arc<EdgeProgress>,
}

impl ProducerState {
    fn new(published: Arc<EdgeProgress>) -> Self {
        ProducerState {
            watermark: EventTime::MIN,
            open_watermark: EventTime::MIN,
            applied_sequence: 0,
            last_seen: Instant::now(),
            retired: false,
            published,
        }
    }

    fn ended(&self) -> bool {
        self.watermark == EventTime::MAX
    }
}

/// Every producer a consumer has heard from, by `(edge id, incarnation)`.
type ProducerMap = BTreeMap<(String, u64), ProducerState>;

/// One polled item: a frame, or a record that was rejected before it became one.
enum Polled {
    Frame(Frame),
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    Rejected(String, String),
}

impl FrameIn {
    /// Up to `max` items; the flag says they are a replay (dead letters already written).
    fn poll(&mut self, max: usize) -> Result<(Vec<Polled>, bool), String> {
        match self {
            FrameIn::Log(consumer) => consumer
                .poll(max)
                .map(|frames| (frames.into_iter().map(Polled::Frame).collect(), false))
                .map_err(|e| chain(&e)),
            #[cfg(feature = "kafka")]
            FrameIn::Kafka(feed) => feed
                .poll(max)
                .map(|(items, replayed)| {
                    let items = items
                        .into_iter()
                        .map(|item| match item {
                            FeedItem::Frame(f) => Polled::Frame(f),
                            FeedItem::Rejected(reason, description) => {
                                Polled::Rejected(reason, description)
                            }
                        })
                        .collect();
                    (items, replayed)
                })
                .map_err(|e| chain(&e)),
            FrameIn::Nothing => Ok((Vec::new(), false)),
        }
    }

    /// Passes a frame the consumer cannot apply to the transport's dead-letter topic.
    fn reject(&self, frame: &Frame, reason: &str) {
        #[cfg(feature = "kafka")]
        if let FrameIn::Kafka(feed) = self {
            feed.reject(frame, reason);
        }
        #[cfg(not(feature = "kafka"))]
        let _ = (frame, reason);
    }

    fn close(&self) {
        #[cfg(feature = "kafka")]
        if let FrameIn::Kafka(feed) = self {
            feed.close();
        }
    }
}

/// The watermark the consumer may hold its capability at, or `None` to keep it where it is;
/// `Some(MAX)` means every expected producer has ended. `last_data` is the time the consumer
/// last gave data at.
fn consumer_watermark(
    producers: &ProducerMap,
    expected: &Producers,
    started: Instant,
    last_data: EventTime,
) -> Option<EventTime> {
    let idle = |since: Instant| expected.idle_timeout.is_some_and(|t| since.elapsed() > t);
    let current = || producers.values().filter(|p| !p.retired);
    let heard_from = |edge: &str| producers.keys().any(|(e, _)| e == edge);
    let all_current_ended = current().next().is_some() && current().all(ProducerState::ended);
    if !expected.expected.is_empty() {
        if all_current_ended && expected.expected.iter().all(|e| heard_from(e)) {
            return Some(EventTime::MAX);
        }
        if expected.expected.iter().any(|e| !heard_from(e)) && !idle(started) {
            return None;
        }
    } else if all_current_ended {
        // Everything the fleet heard from so far sent is final; later edges may still come.
        let sent = current().map(|p| p.open_watermark).max()?;
        return Some(sent.max(last_data.saturating_add(1)));
    }
    current()
        .filter(|p| !p.ended() && !idle(p.last_seen))
        .map(|p| p.watermark)
        .min()
}

/// Looks up the producer of `header`, registering a new incarnation of its edge (and
/// retiring the edge's older ones) the first time it is heard from.
fn producer_of<'a>(
    producers: &'a mut ProducerMap,
    header: &FrameHeader,
    publish: impl FnOnce() -> Arc<EdgeProgress>,
) -> &'a mut ProducerState {
    let key = (header.edge_id.clone(), header.incarnation);
    let mut earlier = None;
    if !producers.contains_key(&key) {
        for ((edge, _), older) in producers.iter_mut() {
            if *edge == header.edge_id {
                older.retired = true;
                earlier = Some(older.published.clone());
            }
        }
    }
    producers.entry(key).or_insert_with(|| {
        let published = earlier.unwrap_or_else(publish);
        published.start_incarnation(header.incarnation);
        ProducerState::new(published)
    })
}

/// Reads a cut topic back into a stream.
pub fn consume<'scope>(
    scope: Scope<'scope, EventTime>,
    topic: &CutTopic,
    env: &BuildEnv,
    mut input: FrameIn,
    expected: Producers,
) -> BatchStream<'scope> {
    let reads = !matches!(input, FrameIn::Nothing);
    let mut producers = ProducerMap::new();
    let mut last_data = EventTime::MIN;
    let expected_fingerprint = schema_fingerprint(&topic.schema);
    let expected_schema = topic.schema.to_arrow();
    let expected_stream = topic.stream.to_string();
    let pipeline = env.plan.pipeline.clone();
    let metrics = env.ctx.metrics.topic(&topic.name);
    let node_metrics = env.ctx.metrics.node(&topic.name, CUT_KIND, "cloud");
    let ctx = env.ctx.clone();
    let system = env.ctx.system.clone();
    let topic_name = topic.name.clone();
    let started = Instant::now();
    source(
        scope,
        &format!("cut[{}]", topic.name),
        move |capability, info| {
            let activator = scope.activator_for(info.address);
            let mut capability = reads.then_some(capability);
            move |output| {
                let Some(cap) = capability.as_mut() else {
                    return;
                };
                let (items, replayed) = match input.poll(FRAMES_PER_POLL) {
                    Ok(polled) => polled,
                    Err(e) => {
                        ctx.fail(format!("topic {topic_name}: {e}"));
                        capability = None;
                        return;
                    }
                };
                let mut rejected = Vec::new();
                let mut session = output.session(&*cap);
                for item in &items {
                    let frame = match item {
                        Polled::Frame(frame) => frame,
                        Polled::Rejected(reason, description) => {
                            rejected.push(DeadLetter {
                                node: topic_name.clone(),
                                reason: reason.clone(),
                                raw: description.clone(),
                                location: topic_name.clone(),
                            });
                            continue;
                        }
                    };
                    let header = &frame.header;
                    let verified = expected.enrolled.as_ref().map(|r| r.verify(frame));
                    let mut reject = |reason: String| {
                        if !replayed {
                            input.reject(frame, &reason);
                        }
                        rejected.push(DeadLetter {
                            node: topic_name.clone(),
                            reason,
                            raw: format!("{header:?}"),
                            location: format!("{}:{}", header.edge_id, header.sequence),
                        });
                    };
                    if let Some(Err(rejection)) = verified {
                        // An unknown id is the attacker's choice: one label for all of them
                        // keeps the metric's series bounded (the dead letter names it).
                        let edge = if rejection == Rejection::UnknownEdge {
                            UNENROLLED
                        } else {
                            header.edge_id.as_str()
                        };
                        ctx.metrics
                            .frame_rejected(&topic_name, edge, rejection.reason());
                        reject(format!("{rejection}: edge {:?}", header.edge_id));
                        continue;
                    }
                    if header.pipeline != pipeline || header.stream != expected_stream {
                        reject(format!(
                            "frame for {}/{} on the topic of {pipeline}/{expected_stream}",
                            header.pipeline, header.stream
                        ));
                        continue;
                    }
                    if let Some(p) = producers
                        .get(&(header.edge_id.clone(), header.incarnation))
                        .filter(|p| header.sequence <= p.applied_sequence)
                    {
                        metrics.duplicates.inc();
                        p.published.record_duplicate();
                        continue;
                    }
                    // Check a data frame fully before it may move its producer's watermark.
                    let batch = if header.kind == FrameKind::Data {
                        if header.schema_fingerprint != expected_fingerprint {
                            reject(format!(
                                "unknown schema fingerprint {:016x} (expected {expected_fingerprint:016x})",
                                header.schema_fingerprint
                            ));
                            continue;
                        }
                        match decode_batch_as(&frame.payload, &expected_schema) {
                            Ok(batch) => Some(batch),
                            Err(e) => {
                                reject(format!("corrupt payload: {}", chain(&e)));
                                continue;
                            }
                        }
                    } else {
                        None
                    };
                    let state = producer_of(&mut producers, header, || {
                        system.edge(&topic_name, &header.edge_id, EdgeSide::Consumer, None)
                    });
                    state.last_seen = Instant::now();
                    state.applied_sequence = header.sequence;
                    state.watermark = state.watermark.max(header.watermark);
                    if header.kind != FrameKind::End {
                        state.open_watermark = state.open_watermark.max(header.watermark);
                    }
                    if !state.retired {
                        state.published.record_frame(
                            header.sequence,
                            header.watermark,
                            frame.payload.len() as u64,
                        );
                    }
                    if let Some(batch) = batch {
                        last_data = *cap.time();
                        node_metrics.events_out.inc_by(batch.num_rows() as u64);
                        session.give(Batch(batch));
                    }
                }
                drop(session);
                if replayed {
                    node_metrics.dead_letters.inc_by(rejected.len() as u64);
                } else {
                    ctx.dead_letter(&node_metrics, &rejected);
                }
                let watermark = consumer_watermark(&producers, &expected, started, last_data);
                let failed = items.is_empty() && ctx.failure().is_some();
                if watermark == Some(EventTime::MAX)
                    || failed
                    || (items.is_empty() && expected.end_on_stop && ctx.stopping())
                {
                    input.close();
                    capability = None;
                    return;
                }
                if let Some(watermark) = watermark
                    && watermark > *cap.time()
                {
                    cap.downgrade(&watermark);
                }
                if items.is_empty() {
                    activator.activate_after(IDLE_POLL);
                } else {
                    activator.activate();
                }
            }
        },
    )
}
