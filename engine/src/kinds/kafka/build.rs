//! Building a `kafka` node: a source of raw readings from an external topic (JSON lines, CSV
//! or Arrow IPC records, read by worker 0 as a member of a consumer group) and a sink that
//! writes any stream to a topic (a JSON record per row, or an Arrow IPC record per batch).
//! Bad records go to the dead-letter output like a file's bad lines. Broker outages are
//! retried by librdkafka with backoff; its errors are logged and counted in the node's
//! `errors` metric.

#[cfg(feature = "kafka")]
pub use with_kafka::{sink, source};
#[cfg(not(feature = "kafka"))]
pub use without_kafka::{sink, source};

#[cfg(feature = "kafka")]
mod with_kafka {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use arrow::array::Array;
    use arrow::record_batch::RecordBatch;
    use edgeflow_connectors::file_sink::{TextFormat, format_batch};
    use edgeflow_connectors::file_source::{DeadLetter, RecordDecoder, RecordFormat};
    use edgeflow_connectors::kafka::{KafkaSettings, LinkStats, RecordReader, RecordWriter};
    use timely::dataflow::Scope;
    use timely::dataflow::channels::pact::Pipeline;
    use timely::dataflow::operators::Operator;
    use timely::dataflow::operators::generic::operator::source as timely_source;

    use super::super::{KafkaFormat, KafkaSinkSettings, KafkaSourceSettings};
    use crate::error::EngineError;
    use crate::metrics::NodeMetrics;
    use crate::plan::PlanNode;
    use crate::runtime::batch::{Batch, EventTime};
    use crate::runtime::node::{BatchStream, BuildEnv, SourceClock, operator_name};

    /// Records polled per activation at most.
    const RECORDS_PER_ACTIVATION: usize = 4096;
    /// How long an idle source waits before polling again.
    const IDLE_POLL: Duration = Duration::from_millis(20);
    /// Partitions of a topic edgeflow creates for a `kafka` node.
    const TOPIC_PARTITIONS: i32 = 3;

    /// The brokers a `kafka` node talks to: its own `brokers:`, else the run's (`--brokers`),
    /// else the pipeline's `transport:` section, else `EDGEFLOW_BROKERS`, else the local default.
    fn brokers(node: Option<&String>, env: &BuildEnv) -> String {
        node.cloned()
            .or_else(|| env.options.brokers.clone())
            .or_else(|| env.plan.transport.brokers.clone())
            .or_else(|| std::env::var("EDGEFLOW_BROKERS").ok())
            .unwrap_or_else(|| "127.0.0.1:9092".into())
    }

    fn settings(node: &PlanNode, brokers: Option<&String>, env: &BuildEnv) -> KafkaSettings {
        KafkaSettings {
            brokers: self::brokers(brokers, env),
            client_id: format!("edgeflow-{}-{}", env.plan.pipeline, node.id),
            extra: env.options.kafka_options.clone(),
        }
    }

    /// The errors a Kafka client reports, added to its node's `errors` metric as they come.
    #[derive(Default)]
    struct ClientErrors {
        stats: Arc<LinkStats>,
        counted: u64,
    }

    impl ClientErrors {
        fn count(&mut self, metrics: &NodeMetrics) {
            let errors = self.stats.errors.load(Ordering::Relaxed);
            metrics.errors.inc_by(errors - self.counted);
            self.counted = errors;
        }
    }

    fn connector(
        node: &PlanNode,
    ) -> impl FnOnce(edgeflow_connectors::ConnectorError) -> EngineError {
        let node = node.id.clone();
        move |source| EngineError::Connector { node, source }
    }

    /// The `kafka` kind as a source.
    pub fn source<'scope>(
        scope: Scope<'scope, EventTime>,
        node: &PlanNode,
        settings: &KafkaSourceSettings,
        env: &BuildEnv,
    ) -> Result<BatchStream<'scope>, EngineError> {
        let mut errors = ClientErrors::default();
        let reader = if env.worker == 0 {
            let group = settings
                .group
                .clone()
                .unwrap_or_else(|| format!("edgeflow.{}.{}", env.plan.pipeline, node.id));
            Some(
                RecordReader::new(
                    &self::settings(node, settings.brokers.as_ref(), env),
                    &settings.topic,
                    TOPIC_PARTITIONS,
                    &group,
                    errors.stats.clone(),
                )
                .map_err(connector(node))?,
            )
        } else {
            None
        };
        let format = match settings.format {
            KafkaFormat::JsonLines => RecordFormat::JsonLines,
            KafkaFormat::Csv => RecordFormat::Csv,
            KafkaFormat::Arrow => RecordFormat::Arrow,
        };
        let mut decoder = RecordDecoder::new(format, settings.schema.clone());
        let mut clock = SourceClock::new(
            &node.id,
            &settings.time_field,
            settings.disorder_ms,
            settings.max_future_ms,
        );
        let limit = env.options.events;
        let topic = settings.topic.clone();
        let metrics = env.metrics(node);
        let ctx = env.ctx.clone();
        let node_id = node.id.clone();
        Ok(timely_source(
            scope,
            &operator_name(node),
            move |capability, info| {
                let activator = scope.activator_for(info.address);
                let mut capability = reader.as_ref().map(|_| capability);
                let mut produced = 0u64;
                move |output| {
                    let (Some(cap), Some(reader)) = (capability.as_mut(), reader.as_ref()) else {
                        return;
                    };
                    errors.count(&metrics);
                    if ctx.stopping() || limit.is_some_and(|n| produced >= n) {
                        reader.close();
                        capability = None;
                        return;
                    }
                    let records = reader.poll(RECORDS_PER_ACTIVATION, Duration::ZERO);
                    if records.is_empty() {
                        activator.activate_after(IDLE_POLL);
                        return;
                    }
                    let mut letters = Vec::new();
                    let mut positions = std::collections::BTreeMap::new();
                    for record in &records {
                        for (reason, raw) in decoder.push(&record.payload) {
                            letters.push(DeadLetter {
                                node: node_id.clone(),
                                reason,
                                raw,
                                location: format!("{topic}/{}@{}", record.partition, record.offset),
                            });
                        }
                        positions.insert(record.partition, record.offset);
                    }
                    ctx.dead_letter(&metrics, &letters);
                    match decoder.finish() {
                        Ok(batch) if batch.num_rows() > 0 => {
                            let (batch, implausible) = clock.admit(batch);
                            ctx.dead_letter(&metrics, &implausible);
                            let batch = match limit {
                                Some(n) if produced + batch.num_rows() as u64 > n => {
                                    batch.slice(0, (n - produced) as usize)
                                }
                                _ => batch,
                            };
                            produced += batch.num_rows() as u64;
                            if batch.num_rows() > 0 {
                                metrics.events_out.inc_by(batch.num_rows() as u64);
                                output.session(&*cap).give(Batch(batch));
                            }
                            let watermark = clock.watermark();
                            if watermark > *cap.time() {
                                cap.downgrade(&watermark);
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            metrics.errors.inc();
                            ctx.fail(format!("node \"{node_id}\": {e}"));
                            capability = None;
                            return;
                        }
                    }
                    let positions: Vec<(i32, i64)> = positions.into_iter().collect();
                    reader.processed(&positions);
                    activator.activate();
                }
            },
        ))
    }

    /// The `kafka` kind as a sink: every worker writes its share of the stream.
    pub fn sink(
        stream: BatchStream,
        node: &PlanNode,
        settings: &KafkaSinkSettings,
        env: &BuildEnv,
    ) -> Result<(), EngineError> {
        let mut errors = ClientErrors::default();
        let writer = RecordWriter::new(
            &self::settings(node, settings.brokers.as_ref(), env),
            &settings.topic,
            TOPIC_PARTITIONS,
            errors.stats.clone(),
        )
        .map_err(connector(node))?;
        let metrics = env.metrics(node);
        let ctx = env.ctx.clone();
        let node_id = node.id.clone();
        let format = settings.format;
        let key_field = settings.key.clone();
        let edge_id = env.edge_id.to_string();
        let mut finished = false;
        stream.sink(Pipeline, &operator_name(node), move |(input, frontier)| {
            input.for_each(|_cap, data| {
                for batch in data.drain(..) {
                    metrics.batches_in.inc();
                    metrics.events_in.inc_by(batch.num_rows() as u64);
                    let written = match format {
                        KafkaFormat::Arrow => arrow_record(&batch.0)
                            .and_then(|bytes| writer.send(edge_id.as_bytes(), &bytes)),
                        _ => json_records(&batch.0, key_field.as_deref(), &edge_id, &writer),
                    };
                    if let Err(e) = written {
                        metrics.errors.inc();
                        ctx.fail(format!("node \"{node_id}\": {e}"));
                    }
                }
            });
            errors.count(&metrics);
            if frontier.frontier().is_empty() && !finished {
                finished = true;
                if let Err(e) = writer.flush(Duration::from_secs(60)) {
                    metrics.errors.inc();
                    tracing::warn!(node = %node_id, error = %e, "kafka sink not fully flushed");
                }
            }
        });
        Ok(())
    }

    fn arrow_record(batch: &RecordBatch) -> Result<Vec<u8>, edgeflow_connectors::ConnectorError> {
        let mut bytes = Vec::new();
        let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut bytes, &batch.schema())?;
        writer.write(batch)?;
        writer.finish()?;
        drop(writer);
        Ok(bytes)
    }

    /// One JSON object per row, keyed by `key_field`'s value (or the edge id).
    fn json_records(
        batch: &RecordBatch,
        key_field: Option<&str>,
        edge_id: &str,
        writer: &RecordWriter,
    ) -> Result<(), edgeflow_connectors::ConnectorError> {
        let lines = format_batch(batch, TextFormat::JsonLines)?;
        let keys = key_field.and_then(|f| batch.column_by_name(f));
        let options = arrow::util::display::FormatOptions::default();
        let formatter = keys
            .map(|k| arrow::util::display::ArrayFormatter::try_new(k.as_ref(), &options))
            .transpose()?;
        for (row, line) in lines.lines().filter(|l| !l.is_empty()).enumerate() {
            let key = match (&formatter, keys) {
                (Some(f), Some(k)) if k.is_valid(row) => f.value(row).to_string(),
                _ => edge_id.to_string(),
            };
            writer.send(key.as_bytes(), line.as_bytes())?;
        }
        Ok(())
    }
}

#[cfg(not(feature = "kafka"))]
mod without_kafka {
    use timely::dataflow::Scope;

    use super::super::{KafkaSinkSettings, KafkaSourceSettings};
    use crate::error::EngineError;
    use crate::plan::PlanNode;
    use crate::runtime::batch::EventTime;
    use crate::runtime::node::{BatchStream, BuildEnv};

    fn unsupported(node: &PlanNode) -> EngineError {
        EngineError::Internal(format!(
            "node \"{}\": this edgeflow was built without the `kafka` feature",
            node.id
        ))
    }

    /// The `kafka` kind as a source: needs the `kafka` feature.
    pub fn source<'scope>(
        _scope: Scope<'scope, EventTime>,
        node: &PlanNode,
        _settings: &KafkaSourceSettings,
        _env: &BuildEnv,
    ) -> Result<BatchStream<'scope>, EngineError> {
        Err(unsupported(node))
    }

    /// The `kafka` kind as a sink: needs the `kafka` feature.
    pub fn sink(
        _stream: BatchStream,
        node: &PlanNode,
        _settings: &KafkaSinkSettings,
        _env: &BuildEnv,
    ) -> Result<(), EngineError> {
        Err(unsupported(node))
    }
}
