//! The Prometheus registry shared by every node of a running pipeline.
//!
//! One [`Metrics`] is made per process and passed in (never a global). Each node asks for
//! its [`NodeMetrics`] once, at build time, so the per-batch path only bumps pre-labelled
//! counters. Labels are bounded: node id, kind, placement, topic — never device ids.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric family edgeflow exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    events_in: IntCounterVec,
    events_out: IntCounterVec,
    batches_in: IntCounterVec,
    errors: IntCounterVec,
    late_events: IntCounterVec,
    dead_letters: IntCounterVec,
    exceptions: IntCounterVec,
    batch_seconds: HistogramVec,
    watermark: IntGaugeVec,
    cut_bytes: IntCounterVec,
    cut_frames: IntCounterVec,
    cut_raw_bytes: IntCounterVec,
    duplicates: IntCounterVec,
    frames_rejected: IntCounterVec,
    link: LinkMetrics,
}

/// The edge-cloud link of an `edge` or `cloud` process: spool and broker connection.
#[derive(Clone)]
pub struct LinkMetrics {
    /// Bytes in the edge's spool.
    pub spool_bytes: IntGauge,
    /// Frames in the spool not yet delivered.
    pub spool_depth: IntGauge,
    /// Age of the oldest undelivered frame, in ms.
    pub spool_oldest_age_ms: IntGauge,
    /// Frames the spool dropped under `drop_oldest_summaries`.
    pub spool_dropped: IntGauge,
    /// How long the pipeline has been waiting for room in a full spool, in ms (0: it is not).
    pub spool_blocked_ms: IntGauge,
    /// 1 while the broker is reachable.
    pub up: IntGauge,
    /// Errors reported by the Kafka client.
    pub errors: IntGauge,
    /// Frames the broker acknowledged.
    pub delivered: IntGauge,
    /// Frames sent again after a failed delivery.
    pub retries: IntGauge,
    /// Current backoff pause of the forwarder, in ms (0 when sending).
    pub backoff_ms: IntGauge,
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).unwrap_or_else(|e| unreachable!("gauge {name}: {e}"));
    registry
        .register(Box::new(g.clone()))
        .unwrap_or_else(|e| unreachable!("gauge {name} is registered once: {e}"));
    g
}

impl LinkMetrics {
    fn new(registry: &Registry) -> Self {
        LinkMetrics {
            spool_bytes: gauge(
                registry,
                "edgeflow_spool_bytes",
                "Bytes in the edge's spool.",
            ),
            spool_depth: gauge(
                registry,
                "edgeflow_spool_depth",
                "Frames in the edge's spool not yet delivered to the broker.",
            ),
            spool_oldest_age_ms: gauge(
                registry,
                "edgeflow_spool_oldest_age_ms",
                "Age of the oldest undelivered frame in the spool, in ms.",
            ),
            spool_dropped: gauge(
                registry,
                "edgeflow_spool_dropped_total",
                "Frames dropped by the spool's drop_oldest_summaries policy.",
            ),
            spool_blocked_ms: gauge(
                registry,
                "edgeflow_spool_blocked_ms",
                "How long the edge's pipeline has been waiting for room in a full spool, in ms (0: it is not).",
            ),
            up: gauge(
                registry,
                "edgeflow_link_up",
                "1 while the Kafka broker is reachable.",
            ),
            errors: gauge(
                registry,
                "edgeflow_link_errors_total",
                "Errors reported by the Kafka client (connection refused, broker down, ...).",
            ),
            delivered: gauge(
                registry,
                "edgeflow_link_delivered_total",
                "Frames the broker acknowledged.",
            ),
            retries: gauge(
                registry,
                "edgeflow_link_retries_total",
                "Frames sent again after a failed delivery.",
            ),
            backoff_ms: gauge(
                registry,
                "edgeflow_link_backoff_ms",
                "Current pause of the forwarder after a failure, in ms (0 when sending).",
            ),
        }
    }
}

const NODE_LABELS: [&str; 3] = ["node", "kind", "placement"];

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let family = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("metric {name} is well-formed: {e}"));
    registry
        .register(Box::new(family.clone()))
        .unwrap_or_else(|e| unreachable!("metric {name} is registered once: {e}"));
    family
}

impl Metrics {
    /// A fresh registry with every edgeflow metric family registered.
    pub fn new() -> Self {
        let registry = Registry::new();
        let batch_seconds = HistogramVec::new(
            HistogramOpts::new(
                "edgeflow_node_batch_seconds",
                "Time a node spends processing one input batch.",
            )
            .buckets(prometheus::exponential_buckets(1e-6, 4.0, 12).unwrap_or_default()),
            &NODE_LABELS,
        )
        .unwrap_or_else(|e| unreachable!("histogram is well-formed: {e}"));
        registry
            .register(Box::new(batch_seconds.clone()))
            .unwrap_or_else(|e| unreachable!("histogram is registered once: {e}"));
        let watermark = IntGaugeVec::new(
            Opts::new(
                "edgeflow_node_watermark_ms",
                "Event-time watermark (input frontier) of a node, in ms since the epoch.",
            ),
            &NODE_LABELS,
        )
        .unwrap_or_else(|e| unreachable!("gauge is well-formed: {e}"));
        registry
            .register(Box::new(watermark.clone()))
            .unwrap_or_else(|e| unreachable!("gauge is registered once: {e}"));
        Metrics {
            events_in: counter(
                &registry,
                "edgeflow_node_events_in_total",
                "Events received by a node.",
                &NODE_LABELS,
            ),
            events_out: counter(
                &registry,
                "edgeflow_node_events_out_total",
                "Events emitted by a node on its main output.",
                &NODE_LABELS,
            ),
            batches_in: counter(
                &registry,
                "edgeflow_node_batches_in_total",
                "Batches received by a node.",
                &NODE_LABELS,
            ),
            errors: counter(
                &registry,
                "edgeflow_node_errors_total",
                "Errors met by a node (bad records, failed writes).",
                &NODE_LABELS,
            ),
            late_events: counter(
                &registry,
                "edgeflow_node_late_events_total",
                "Events that arrived after their window closed.",
                &NODE_LABELS,
            ),
            dead_letters: counter(
                &registry,
                "edgeflow_node_dead_letters_total",
                "Records sent to the dead-letter output.",
                &NODE_LABELS,
            ),
            exceptions: counter(
                &registry,
                "edgeflow_node_exceptions_total",
                "Exceptions a detect or infer node flagged (with emit: all, the rows with a reason).",
                &NODE_LABELS,
            ),
            cut_bytes: counter(
                &registry,
                "edgeflow_cut_bytes_total",
                "Payload bytes sent across the edge-cloud cut.",
                &["topic"],
            ),
            cut_raw_bytes: counter(
                &registry,
                "edgeflow_cut_raw_bytes_total",
                "Arrow bytes of the batches sent across the edge-cloud cut before encoding (compare with edgeflow_cut_bytes_total).",
                &["topic"],
            ),
            cut_frames: counter(
                &registry,
                "edgeflow_cut_frames_total",
                "Frames sent across the edge-cloud cut.",
                &["topic"],
            ),
            duplicates: counter(
                &registry,
                "edgeflow_cut_duplicates_total",
                "Frames the cloud dropped as already applied.",
                &["topic"],
            ),
            frames_rejected: counter(
                &registry,
                "edgeflow_frames_rejected_total",
                "Frames the cloud refused before applying anything of them: unsigned, badly signed, or from an edge not enrolled (edge=\"(unenrolled)\"); each is a dead letter.",
                &["topic", "edge", "reason"],
            ),
            link: LinkMetrics::new(&registry),
            batch_seconds,
            watermark,
            registry,
        }
    }

    /// The pre-labelled handles of one node.
    pub fn node(&self, node: &str, kind: &str, placement: &str) -> NodeMetrics {
        let labels = [node, kind, placement];
        NodeMetrics {
            events_in: self.events_in.with_label_values(&labels),
            events_out: self.events_out.with_label_values(&labels),
            batches_in: self.batches_in.with_label_values(&labels),
            errors: self.errors.with_label_values(&labels),
            late_events: self.late_events.with_label_values(&labels),
            dead_letters: self.dead_letters.with_label_values(&labels),
            exceptions: self.exceptions.with_label_values(&labels),
            batch_seconds: self.batch_seconds.with_label_values(&labels),
            watermark: self.watermark.with_label_values(&labels),
        }
    }

    /// The pre-labelled handles of one cut topic.
    pub fn topic(&self, topic: &str) -> TopicMetrics {
        TopicMetrics {
            bytes: self.cut_bytes.with_label_values(&[topic]),
            frames: self.cut_frames.with_label_values(&[topic]),
            raw_bytes: self.cut_raw_bytes.with_label_values(&[topic]),
            duplicates: self.duplicates.with_label_values(&[topic]),
        }
    }

    /// Counts a frame of `topic` refused for `reason` (a bounded set) as coming from `edge`
    /// (an enrolled edge, or one label for all unknown ones).
    pub fn frame_rejected(&self, topic: &str, edge: &str, reason: &str) {
        self.frames_rejected
            .with_label_values(&[topic, edge, reason])
            .inc();
    }

    /// The link metrics (spool and broker connection).
    pub fn link(&self) -> &LinkMetrics {
        &self.link
    }

    /// Sum of a counter family over the series whose `kind` label is one of `kinds`
    /// (all series when `kinds` is empty), for progress lines and summaries.
    pub fn total(&self, family: Family, kinds: &[&str]) -> u64 {
        let vec = match family {
            Family::EventsIn => &self.events_in,
            Family::EventsOut => &self.events_out,
            Family::Late => &self.late_events,
            Family::DeadLetters => &self.dead_letters,
            Family::Exceptions => &self.exceptions,
            Family::Errors => &self.errors,
            Family::CutBytes => &self.cut_bytes,
        };
        let mut total = 0;
        for mf in prometheus::core::Collector::collect(vec) {
            for m in mf.get_metric() {
                let kind_ok = kinds.is_empty()
                    || m.get_label()
                        .iter()
                        .any(|l| l.name() == "kind" && kinds.contains(&l.value()));
                if kind_ok {
                    total += m.get_counter().get_value() as u64;
                }
            }
        }
        total
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The underlying registry, for callers that add their own families.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Counter families [`Metrics::total`] can sum.
#[derive(Debug, Clone, Copy)]
pub enum Family {
    /// `edgeflow_node_events_in_total`
    EventsIn,
    /// `edgeflow_node_events_out_total`
    EventsOut,
    /// `edgeflow_node_late_events_total`
    Late,
    /// `edgeflow_node_dead_letters_total`
    DeadLetters,
    /// `edgeflow_node_exceptions_total`
    Exceptions,
    /// `edgeflow_node_errors_total`
    Errors,
    /// `edgeflow_cut_bytes_total`
    CutBytes,
}

/// One node's metric handles.
#[derive(Clone)]
pub struct NodeMetrics {
    /// Events received.
    pub events_in: IntCounter,
    /// Events emitted on the main output.
    pub events_out: IntCounter,
    /// Batches received.
    pub batches_in: IntCounter,
    /// Errors met.
    pub errors: IntCounter,
    /// Late events.
    pub late_events: IntCounter,
    /// Records sent to the dead-letter output.
    pub dead_letters: IntCounter,
    /// Exceptions flagged (detect and infer nodes).
    pub exceptions: IntCounter,
    /// Per-batch processing time.
    pub batch_seconds: Histogram,
    /// Input frontier in ms.
    pub watermark: IntGauge,
}

/// One cut topic's metric handles.
#[derive(Clone)]
pub struct TopicMetrics {
    /// Payload bytes sent.
    pub bytes: IntCounter,
    /// Frames sent.
    pub frames: IntCounter,
    /// Arrow bytes of the batches sent, before encoding.
    pub raw_bytes: IntCounter,
    /// Duplicate frames dropped by the consumer.
    pub duplicates: IntCounter,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_sum_over_selected_kinds_and_render_as_prometheus_text() {
        let m = Metrics::new();
        m.node("a", "generator", "edge").events_out.inc_by(5);
        m.node("b", "window", "edge").events_out.inc_by(7);
        m.node("c", "file", "edge").events_out.inc_by(11);
        assert_eq!(m.total(Family::EventsOut, &["generator", "file"]), 16);
        assert_eq!(m.total(Family::EventsOut, &[]), 23);
        let text = m.render();
        assert!(
            text.contains(
                r#"edgeflow_node_events_out_total{kind="window",node="b",placement="edge"} 7"#
            ),
            "{text}"
        );
    }
}
