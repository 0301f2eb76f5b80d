//! Running a plan: each half (edge, cloud) becomes a timely dataflow on every worker thread.
//!
//! Batches of Arrow records flow through the dataflows; timely timestamps are event time
//! in ms, so a stream's frontier is its watermark. In the embedded role both halves run in
//! one process and meet through the embedded log, exactly where the Kafka transport will
//! join separate edge and cloud processes.

pub mod batch;
pub(crate) mod batch_operator;
mod build;
pub(crate) mod context;
pub mod control;
mod cut;
pub(crate) mod exchange;
pub mod node;
#[cfg(feature = "kafka")]
pub mod remote;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use edgeflow_connectors::embedded_log::EmbeddedLog;

use crate::error::EngineError;
use crate::kinds::{Counted, KINDS};
use crate::metrics::{Family, Metrics};
use crate::plan::{CutTopic, Placement, Plan};
use crate::sql::{Catalog, MaterializedTable};
pub use context::RunContext;

/// Rows per batch a source emits when nothing else is asked for.
pub const DEFAULT_BATCH_ROWS: usize = 8192;

/// How to run a plan.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Worker threads.
    pub workers: usize,
    /// Stop every generator after this many readings in total (overrides the YAML).
    pub events: Option<u64>,
    /// Pace generators to wall-clock time instead of running as fast as possible.
    pub realtime: bool,
    /// Where the embedded log and the dead-letter file live.
    pub data_dir: PathBuf,
    /// Rows per source batch.
    pub batch_rows: usize,
    /// Print a progress line to stderr every second.
    pub progress: bool,
    /// `(i, n)`: this process generates share `i` of `n` of every generator's fleet (an edge
    /// of a fleet split over `n` edge processes). `(0, 1)` generates all of it.
    pub shard: (usize, usize),
    /// Brokers of `kafka` nodes that name none (else the pipeline's `transport:` brokers,
    /// else `EDGEFLOW_BROKERS`, else `127.0.0.1:9092`).
    pub brokers: Option<String>,
    /// Extra librdkafka settings for `kafka` nodes.
    pub kafka_options: Vec<(String, String)>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            workers: 1,
            events: None,
            realtime: false,
            data_dir: PathBuf::from("edgeflow-data"),
            batch_rows: DEFAULT_BATCH_ROWS,
            progress: false,
            shard: (0, 1),
            brokers: None,
            kafka_options: Vec::new(),
        }
    }
}

/// What a finished run did.
#[derive(Debug, Clone, PartialEq)]
pub struct RunReport {
    /// Events produced by all sources.
    pub source_events: u64,
    /// Window results emitted.
    pub windows: u64,
    /// Exceptions emitted by detectors.
    pub exceptions: u64,
    /// Events that arrived after their window closed.
    pub late_events: u64,
    /// Records sent to the dead-letter output.
    pub dead_letters: u64,
    /// Payload bytes that crossed the edge -> cloud cut.
    pub cut_bytes: u64,
    /// Wall-clock duration.
    pub elapsed: Duration,
}

impl RunReport {
    fn read(metrics: &Metrics, elapsed: Duration) -> Self {
        RunReport {
            source_events: metrics.total(Family::EventsOut, &counted_kinds(Counted::SourceEvents)),
            windows: metrics.total(Family::EventsOut, &counted_kinds(Counted::Windows)),
            exceptions: metrics.total(Family::EventsOut, &counted_kinds(Counted::Exceptions)),
            late_events: metrics.total(Family::Late, &[]),
            dead_letters: metrics.total(Family::DeadLetters, &[]),
            cut_bytes: metrics.total(Family::CutBytes, &[]),
            elapsed,
        }
    }

    /// Source events per second of wall time.
    pub fn events_per_second(&self) -> f64 {
        self.source_events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Cut bytes per source event.
    pub fn bytes_per_event(&self) -> f64 {
        self.cut_bytes as f64 / (self.source_events.max(1)) as f64
    }
}

impl std::fmt::Display for RunReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} events in {:.2}s ({:.0} events/s) | {} windows | {} exceptions | {} late | {} dead letters | {} edge->cloud ({:.3} B/event)",
            self.source_events,
            self.elapsed.as_secs_f64(),
            self.events_per_second(),
            self.windows,
            self.exceptions,
            self.late_events,
            self.dead_letters,
            human_bytes(self.cut_bytes),
            self.bytes_per_event(),
        )
    }
}

/// The kinds whose output events count towards `counted`, from the registry.
fn counted_kinds(counted: Counted) -> Vec<&'static str> {
    KINDS
        .iter()
        .filter(|k| k.counted() == Some(counted))
        .map(|k| k.name())
        .collect()
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The tables a plan materializes, empty, for `writers` workers; with the control log when
/// the plan has a control channel, and the `incidents` table when it has insight nodes.
pub fn catalog_for(plan: &Plan, writers: usize) -> Catalog {
    let mut catalog = Catalog::new();
    control::add_control_log(plan, &mut catalog);
    let insights = crate::kinds::insight_count(&plan.nodes);
    if insights > 0 {
        catalog.insert(Arc::new(MaterializedTable::new(
            crate::kinds::INCIDENTS_TABLE,
            edgeflow_operators::insight::incident_schema().to_arrow(),
            insights * writers.max(1),
        )));
    }
    for node in &plan.nodes {
        match node.settings.table() {
            Some((name, false)) => catalog.insert(Arc::new(MaterializedTable::new(
                name,
                node.schema.to_arrow(),
                writers,
            ))),
            Some((name, true)) => {
                // The table's columns are the changelog's but its `diff`.
                let mut fields = node.schema.fields().to_vec();
                fields.pop();
                let schema = edgeflow_operators::schema::EventSchema::new(fields);
                catalog.insert(Arc::new(MaterializedTable::changelog(
                    name,
                    schema.to_arrow(),
                    writers,
                )))
            }
            None => {}
        }
    }
    catalog
}

/// The embedded log's wiring: edge worker i writes as producer `embedded-i`, and cloud
/// worker i reads exactly what edge worker i wrote.
struct EmbeddedWiring {
    log: EmbeddedLog,
}

impl build::CutWiring for EmbeddedWiring {
    fn output(&self, topic: &CutTopic, edge_id: &str) -> Result<cut::FrameOut, EngineError> {
        let producer =
            self.log
                .producer(&topic.name, edge_id)
                .map_err(|source| EngineError::Connector {
                    node: topic.name.clone(),
                    source,
                })?;
        Ok(cut::FrameOut::Log(producer))
    }

    fn input(
        &self,
        topic: &CutTopic,
        worker: usize,
    ) -> Result<(cut::FrameIn, cut::Producers), EngineError> {
        let own = embedded_producer(worker);
        let expected = vec![own.clone()];
        let consumer = self.log.consumer(&topic.name, move |edge| edge == own);
        Ok((
            cut::FrameIn::Log(consumer),
            cut::Producers {
                expected,
                idle_timeout: None,
                end_on_stop: false,
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
        use control::{LogSink, LogSource};
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

/// Runs `halves` of `plan` on `options.workers` timely workers until they finish, printing
/// a progress line when asked. Worker i's edge half writes as `edge_id(i)`.
pub(crate) fn drive<W: build::CutWiring + Send + 'static>(
    plan: Arc<Plan>,
    options: &RunOptions,
    ctx: RunContext,
    wiring: Arc<W>,
    halves: &[Placement],
    edge_id: impl Fn(usize) -> String + Send + Sync + 'static,
) -> Result<RunReport, EngineError> {
    let workers = options.workers.max(1);
    let started = Instant::now();
    let finished_workers = Arc::new(AtomicUsize::new(0));
    let halves = halves.to_vec();
    let guards = {
        let ctx = ctx.clone();
        let options = options.clone();
        let finished_workers = finished_workers.clone();
        timely::execute(timely::Config::process(workers), move |worker| {
            let result = (|| {
                for placement in &halves {
                    let half = build::Half {
                        placement: *placement,
                        edge_id: edge_id(worker.index()),
                    };
                    build::build_half(worker, &plan, &half, &options, &ctx, &*wiring)?;
                }
                while worker.step_or_park(Some(Duration::from_millis(20))) {}
                Ok::<(), EngineError>(())
            })();
            finished_workers.fetch_add(1, Ordering::SeqCst);
            if let Err(e) = &result {
                ctx.fail(format!("{e}"));
            }
        })
        .map_err(EngineError::Internal)?
    };
    let mut last = (Instant::now(), 0u64);
    while finished_workers.load(Ordering::SeqCst) < workers {
        std::thread::sleep(Duration::from_millis(100));
        if options.progress && last.0.elapsed() >= Duration::from_secs(1) {
            let report = RunReport::read(&ctx.metrics, started.elapsed());
            let rate = (report.source_events - last.1) as f64 / last.0.elapsed().as_secs_f64();
            eprint!(
                "\r{:>7.1}s  {:>12.0} events/s  {:>10} windows  {:>8} exceptions  {:>10} edge->cloud   ",
                report.elapsed.as_secs_f64(),
                rate,
                report.windows,
                report.exceptions,
                human_bytes(report.cut_bytes),
            );
            last = (Instant::now(), report.source_events);
        }
    }
    for result in guards.join() {
        result
            .map_err(|panic| EngineError::Internal(format!("a worker thread panicked: {panic}")))?;
    }
    if options.progress {
        eprintln!();
    }
    ctx.finish_sinks()?;
    if let Some(message) = ctx.failure() {
        return Err(EngineError::Internal(message));
    }
    Ok(RunReport::read(&ctx.metrics, started.elapsed()))
}
