//! Driving built halves on timely workers until they finish, and the [`RunReport`] of what a
//! run did (read from the metrics, with the kinds each figure counts taken from the registry).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::build::{self, CutWiring};
use super::context::RunContext;
use super::options::RunOptions;
use crate::error::EngineError;
use crate::kinds::{Counted, KINDS};
use crate::metrics::{Family, Metrics};
use crate::plan::{Placement, Plan};
use crate::sql::limits::human_bytes;
use crate::sql::system::CUT_KIND;

/// What a finished run did.
#[derive(Debug, Clone, PartialEq)]
pub struct RunReport {
    /// Events produced by all sources (in a cloud process, which has none: the rows received
    /// from the edges).
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
            source_events: match metrics
                .total(Family::EventsOut, &counted_kinds(Counted::SourceEvents))
            {
                // A cloud process has no sources: its input is what the edges sent.
                0 => metrics.total(Family::EventsOut, &[CUT_KIND]),
                events => events,
            },
            windows: metrics.total(Family::EventsOut, &counted_kinds(Counted::Windows)),
            exceptions: metrics.total(Family::Exceptions, &[]),
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
            human_bytes(self.cut_bytes as usize),
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

/// Runs `halves` of `plan` on `options.workers` timely workers until they finish, printing
/// a progress line when asked. Worker i's edge half writes as `edge_id(i)`.
pub(crate) fn drive<W: CutWiring + Send + 'static>(
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
                // With its causes: `node "src"` alone does not say the file is missing.
                ctx.fail(edgeflow_connectors::error::chain(e));
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
                human_bytes(report.cut_bytes as usize),
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
        return Err(EngineError::RunFailed(message));
    }
    Ok(RunReport::read(&ctx.metrics, started.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (hardening case 24): a cloud fed over Kafka reported "0 events".
    #[test]
    fn a_cloud_report_counts_the_rows_received_from_the_edges() {
        let metrics = Metrics::new();
        metrics
            .node("fleet.per_sec", CUT_KIND, "cloud")
            .events_out
            .inc_by(7);
        metrics.node("fleet", "table", "cloud").events_out.inc_by(7);
        let report = RunReport::read(&metrics, Duration::from_secs(1));
        assert_eq!(report.source_events, 7);
        // With sources (the embedded role), the sources count and the cut does not again.
        metrics
            .node("sensors", "generator", "edge")
            .events_out
            .inc_by(100);
        let report = RunReport::read(&metrics, Duration::from_secs(1));
        assert_eq!(report.source_events, 100);
    }
}
