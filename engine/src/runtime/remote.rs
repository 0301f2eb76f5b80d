//! The `edge` and `cloud` roles: the two halves of a plan in separate processes, joined by
//! Kafka topics (`<pipeline>.<node>` per cut arc, `<pipeline>.dead_letter` for records the
//! cloud cannot apply).
//!
//! An edge runs its half on one timely worker (its frames are one ordered sequence per
//! stream, and a deterministic source replays identically after a crash) and writes every
//! cut frame to its spool; a forwarder thread drains the spool into Kafka, retrying with
//! backoff while the broker is unreachable. The cloud reads each topic on worker 0 through
//! its input log (see `edgeflow_connectors::input_log`) and exchanges by key to its workers
//! like any other stream.
//!
//! Identity: an edge given a key signs every frame it spools; a cloud given a registry of
//! enrolled edges refuses (dead-letters and counts) every frame not signed by its edge.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use edgeflow_connectors::error::chain;
use edgeflow_connectors::identity::{EdgeRegistry, FrameSigner};
use edgeflow_connectors::kafka::{
    CloudFeed, FrameProducer, KafkaSettings, LinkStats, ensure_topics, forward,
};
use edgeflow_connectors::spool::{Spool, SpoolOptions};

use super::build::CutWiring;
use super::context::RunContext;
use super::control::{KafkaMessageSink, KafkaMessageSource, MessageSink, MessageSource};
use super::cut::{FrameIn, FrameOut, Producers};
use super::drive::{RunReport, drive};
use super::options::RunOptions;
use crate::error::EngineError;
use crate::kinds::Counted;
use crate::metrics::LinkMetrics;
use crate::plan::{CutTopic, Placement, Plan};

/// How an edge or cloud process reaches the broker.
#[derive(Debug, Clone)]
pub struct TransportOptions {
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// Partitions of topics edgeflow creates.
    pub partitions: i32,
    /// An edge silent for this long stops holding back the cloud's watermark.
    pub idle_timeout: Duration,
    /// The edge's spool.
    pub spool: SpoolOptions,
    /// Extra librdkafka settings.
    pub kafka: Vec<(String, String)>,
}

/// The topic records the cloud cannot apply go to.
pub fn dead_letter_topic(plan: &Plan) -> String {
    format!("{}.dead_letter", plan.pipeline)
}

fn settings(transport: &TransportOptions, client_id: String) -> KafkaSettings {
    KafkaSettings {
        brokers: transport.brokers.clone(),
        client_id,
        extra: transport.kafka.clone(),
    }
}

fn connector_error(node: &str) -> impl FnOnce(edgeflow_connectors::ConnectorError) -> EngineError {
    let node = node.to_string();
    move |source| EngineError::Connector { node, source }
}

/// Copies the link and spool figures into the metrics every 200 ms until `done`.
fn report_link(
    metrics: LinkMetrics,
    stats: Arc<LinkStats>,
    spool: Option<Arc<Spool>>,
    done: Arc<AtomicBool>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        loop {
            let finished = done.load(Ordering::SeqCst);
            if let Some(spool) = &spool {
                let s = spool.stats();
                metrics.spool_bytes.set(s.bytes as i64);
                metrics.spool_depth.set(s.depth as i64);
                metrics.spool_oldest_age_ms.set(s.oldest_age_ms as i64);
                metrics.spool_dropped.set(s.dropped as i64);
                metrics.spool_blocked_ms.set(s.blocked_ms as i64);
            }
            metrics
                .up
                .set(i64::from(stats.connected.load(Ordering::Relaxed)));
            metrics
                .errors
                .set(stats.errors.load(Ordering::Relaxed) as i64);
            metrics
                .delivered
                .set(stats.delivered.load(Ordering::Relaxed) as i64);
            metrics
                .retries
                .set(stats.retries.load(Ordering::Relaxed) as i64);
            metrics
                .backoff_ms
                .set(stats.backoff_ms.load(Ordering::Relaxed));
            if finished {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    })
}

fn control_writer(
    transport: &TransportOptions,
    client: String,
    topic: &str,
) -> Result<Box<dyn MessageSink>, EngineError> {
    let sink = KafkaMessageSink::open(&settings(transport, client), topic, transport.partitions)?;
    Ok(Box::new(sink))
}

fn control_reader(
    transport: &TransportOptions,
    client: String,
    topic: &str,
) -> Result<Box<dyn MessageSource>, EngineError> {
    let source =
        KafkaMessageSource::open(&settings(transport, client), topic, transport.partitions)?;
    Ok(Box::new(source))
}

/// What an edge process is.
#[derive(Debug, Clone)]
pub struct EdgeOptions {
    /// This edge's id: the Kafka key of its frames and the producer the cloud tracks.
    pub edge_id: String,
    /// `(i, n)`: this edge generates share i of n of the pipeline's generators.
    pub shard: (usize, usize),
    /// Broker and spool.
    pub transport: TransportOptions,
    /// The edge's private key: every frame it writes is signed with it. `None`: unsigned.
    pub signer: Option<Arc<FrameSigner>>,
}

struct EdgeWiring {
    spool: Arc<Spool>,
    stop: Arc<AtomicBool>,
    plan: Arc<Plan>,
    signer: Option<Arc<FrameSigner>>,
}

impl CutWiring for EdgeWiring {
    fn output(&self, topic: &CutTopic, _edge_id: &str) -> Result<FrameOut, EngineError> {
        // Exceptions are what an operator acts on: never dropped when the spool is full.
        let keep = self
            .plan
            .node(&topic.stream.node)
            .is_some_and(|n| n.settings.kind().counted() == Some(Counted::Exceptions));
        Ok(FrameOut::Spool {
            spool: self.spool.clone(),
            keep,
            stop: self.stop.clone(),
            signer: self.signer.clone(),
        })
    }

    fn input(&self, topic: &CutTopic, _worker: usize) -> Result<(FrameIn, Producers), EngineError> {
        Err(EngineError::Internal(format!(
            "the edge role has no cloud half to read {}",
            topic.name
        )))
    }
}

/// Runs the edge half of `plan` as edge `edge.edge_id`: until its sources are exhausted and
/// its spool is drained into Kafka, or until `ctx.stop` (the spool keeps what was not sent,
/// for the next start).
pub fn run_edge(
    plan: Arc<Plan>,
    options: &RunOptions,
    edge: &EdgeOptions,
    ctx: RunContext,
) -> Result<RunReport, EngineError> {
    let spool_dir = ctx
        .pipeline_dir
        .join(format!("edge-{}", edge.edge_id))
        .join("spool");
    let spool = Arc::new(
        Spool::open(&spool_dir, edge.transport.spool.clone()).map_err(connector_error("spool"))?,
    );
    let stats = Arc::new(LinkStats::default());
    ctx.system.watch_link();
    let drained = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let topics: Vec<String> = plan
        .topics
        .iter()
        .map(|t| t.name.clone())
        .chain([dead_letter_topic(&plan)])
        .collect();
    let kafka = settings(&edge.transport, format!("edgeflow-edge-{}", edge.edge_id));
    let forwarder = {
        let (spool, stats, drained, stop) = (
            spool.clone(),
            stats.clone(),
            drained.clone(),
            ctx.stop.clone(),
        );
        let partitions = edge.transport.partitions;
        std::thread::spawn(move || {
            forwarder(kafka, topics, partitions, spool, stats, drained, stop)
        })
    };
    let reporter = report_link(
        ctx.metrics.link().clone(),
        stats.clone(),
        Some(spool.clone()),
        done.clone(),
    );
    if let Some(control) = &plan.control {
        let client = format!("edgeflow-edge-{}-control", edge.edge_id);
        let edge_dir = ctx.pipeline_dir.join(format!("edge-{}", edge.edge_id));
        ctx.control.start_edge(
            &edge.edge_id,
            1,
            control_reader(&edge.transport, client.clone(), &control.topic)?,
            control_writer(&edge.transport, client, &control.acks_topic)?,
            Some(edge_dir.join("control_applied.txt")),
        )?;
    }
    let wiring = Arc::new(EdgeWiring {
        spool: spool.clone(),
        stop: ctx.stop.clone(),
        plan: plan.clone(),
        signer: edge.signer.clone(),
    });
    let options = RunOptions {
        workers: 1,
        ..options.clone()
    };
    let edge_id = edge.edge_id.clone();
    let result = drive(
        plan,
        &options,
        ctx.clone(),
        wiring,
        &[Placement::Edge],
        move |_| edge_id.clone(),
    );
    if let Err(e) = spool.sync() {
        tracing::warn!(error = %chain(&e), "spool not synced");
    }
    let pending = spool.stats().depth;
    if pending > 0 && !ctx.stopping() && options.progress {
        eprintln!(
            "edgeflow: waiting for {pending} spooled frames to reach the broker (Ctrl-C leaves them in the spool for the next start)"
        );
    }
    drained.store(true, Ordering::SeqCst);
    let forwarded = forwarder
        .join()
        .map_err(|_| EngineError::Internal("the forwarder thread panicked".into()))?;
    done.store(true, Ordering::SeqCst);
    let _ = reporter.join();
    forwarded?;
    result
}

/// Sends the spool to Kafka until `drained` is set and the spool is empty, or `stop`.
fn forwarder(
    kafka: KafkaSettings,
    topics: Vec<String>,
    partitions: i32,
    spool: Arc<Spool>,
    stats: Arc<LinkStats>,
    drained: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> Result<(), EngineError> {
    let new_producer = || FrameProducer::new(&kafka, stats.clone());
    let mut producer = new_producer().map_err(connector_error("kafka producer"))?;
    let mut backoff = Duration::from_millis(200);
    let mut topics_ready = false;
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        if !topics_ready {
            match ensure_topics(&kafka, &topics, partitions, Duration::from_secs(5)) {
                Ok(()) => topics_ready = true,
                Err(e) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %chain(&e), "cannot create topics yet; retrying");
                    pause(backoff, &stop);
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            }
        }
        match forward(
            &spool,
            &mut producer,
            &new_producer,
            &stats,
            &drained,
            &stop,
        ) {
            Ok(()) => {
                if !stop.load(Ordering::SeqCst) {
                    producer
                        .flush(Duration::from_secs(10))
                        .map_err(connector_error("kafka producer"))?;
                }
                return Ok(());
            }
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %chain(&e), "forwarding failed; retrying");
                pause(backoff, &stop);
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(connector_error("forwarder")(e)),
        }
    }
}

fn pause(duration: Duration, stop: &AtomicBool) {
    let until = Instant::now() + duration;
    while Instant::now() < until && !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What a cloud process is.
#[derive(Debug, Clone)]
pub struct CloudOptions {
    /// Broker and idle timeout.
    pub transport: TransportOptions,
    /// Edges the cloud waits for from the start; when all of them have finished, so has
    /// the cloud. Empty: serve whatever edges appear, until stopped.
    pub edges: Vec<String>,
    /// Consumer group (for offset commits and lag monitoring).
    pub group: String,
    /// The registry of enrolled edges: when set, only frames signed by their edge's
    /// enrolled key are applied. `None`: frames are not authenticated.
    pub enrolled: Option<Arc<EdgeRegistry>>,
}

struct CloudWiring {
    kafka: KafkaSettings,
    cloud: CloudOptions,
    input_dir: PathBuf,
    dead_letter_topic: String,
    stats: Arc<LinkStats>,
}

impl CutWiring for CloudWiring {
    fn output(&self, topic: &CutTopic, _edge_id: &str) -> Result<FrameOut, EngineError> {
        Err(EngineError::Internal(format!(
            "the cloud role has no edge half to write {}",
            topic.name
        )))
    }

    fn input(&self, topic: &CutTopic, worker: usize) -> Result<(FrameIn, Producers), EngineError> {
        let producers = Producers {
            expected: self.cloud.edges.clone(),
            idle_timeout: Some(self.cloud.transport.idle_timeout),
            end_on_stop: true,
            enrolled: self.cloud.enrolled.clone(),
        };
        if worker != 0 {
            return Ok((FrameIn::Nothing, producers));
        }
        let feed = CloudFeed::open(
            &self.kafka,
            &topic.name,
            self.cloud.transport.partitions,
            &self.cloud.group,
            &self.input_dir.join(format!("{}.log", topic.name)),
            &self.dead_letter_topic,
            self.stats.clone(),
        )
        .map_err(connector_error(&topic.name))?;
        Ok((FrameIn::Kafka(Box::new(feed)), producers))
    }
}

/// Runs the cloud half of `plan`: until every edge of `cloud.edges` has finished, or until
/// `ctx.stop`. A restarted cloud first replays its input log, then resumes Kafka where the
/// log ends.
pub fn run_cloud(
    plan: Arc<Plan>,
    options: &RunOptions,
    cloud: &CloudOptions,
    ctx: RunContext,
) -> Result<RunReport, EngineError> {
    ctx.system.set_dead_letter_topic(&dead_letter_topic(&plan));
    let stats = Arc::new(LinkStats::default());
    ctx.system.watch_link();
    let done = Arc::new(AtomicBool::new(false));
    let reporter = report_link(
        ctx.metrics.link().clone(),
        stats.clone(),
        None,
        done.clone(),
    );
    if let Some(control) = &plan.control {
        let client = "edgeflow-cloud-control".to_owned();
        ctx.control.start_cloud(
            control_writer(&cloud.transport, client.clone(), &control.topic)?,
            control_reader(
                &cloud.transport,
                format!("{client}-records"),
                &control.topic,
            )?,
            control_reader(
                &cloud.transport,
                format!("{client}-acks"),
                &control.acks_topic,
            )?,
        );
    }
    let wiring = Arc::new(CloudWiring {
        kafka: settings(&cloud.transport, "edgeflow-cloud".into()),
        cloud: cloud.clone(),
        input_dir: ctx.pipeline_dir.join("cloud").join("input"),
        dead_letter_topic: dead_letter_topic(&plan),
        stats,
    });
    let result = drive(plan, options, ctx, wiring, &[Placement::Cloud], |i| {
        format!("cloud-{i}")
    });
    done.store(true, Ordering::SeqCst);
    let _ = reporter.join();
    result
}
