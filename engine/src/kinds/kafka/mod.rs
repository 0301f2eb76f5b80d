//! The `kafka` kind: without `inputs` a source of raw readings from an external topic, with
//! them a sink writing a stream to a topic.

mod build;

use std::sync::Arc;

use edgeflow_operators::schema::EventSchema;
use timely::dataflow::Scope;

use super::{Counted, NodeKind, NodeSettings, Role, follow_inputs};
use crate::error::EngineError;
use crate::plan::render::{duration, max_future_note};
use crate::plan::{Placement, PlanNode, StreamInfo, TypeCx, Typed};
use crate::runtime::batch::EventTime;
use crate::runtime::node::{BatchStream, BuildEnv, NodeOutputs, require_input};
use crate::spec::did_you_mean;
use crate::spec::settings::{Context, Settings};

/// The `kafka` kind.
pub struct Kafka;

impl NodeKind for Kafka {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn role(&self) -> Role {
        Role::SourceOrSink
    }

    fn settings(&self) -> &'static [&'static str] {
        &[
            "topic",
            "format",
            "schema",
            "time_field",
            "disorder",
            "max_future",
            "group",
            "brokers",
            "key",
        ]
    }

    fn counted(&self) -> Option<Counted> {
        Some(Counted::SourceEvents)
    }

    fn read(&self, s: &mut Settings, ctx: &Context, role: Role) -> Option<Arc<dyn NodeSettings>> {
        if role == Role::Source {
            s.kafka_source(ctx)
                .map(|k| Arc::new(k) as Arc<dyn NodeSettings>)
        } else {
            s.kafka_sink().map(|k| Arc::new(k) as Arc<dyn NodeSettings>)
        }
    }

    fn example(&self) -> &'static str {
        "{ kind: kafka, topic: readings, format: csv, schema: reading, group: g, disorder: 2s }"
    }
}

/// The payload format of a `kafka` node's records.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum KafkaFormat {
    /// One JSON object per line (a sink writes one record per row).
    JsonLines,
    /// CSV lines without a header, fields in schema order (sources only).
    Csv,
    /// An Arrow IPC stream (a sink writes one record per batch).
    Arrow,
}

impl KafkaFormat {
    /// The name used in pipeline files.
    pub fn name(self) -> &'static str {
        match self {
            KafkaFormat::JsonLines => "jsonl",
            KafkaFormat::Csv => "csv",
            KafkaFormat::Arrow => "arrow",
        }
    }
}

/// Settings of a `kafka` source: raw readings from an external topic.
#[derive(Clone, Debug, PartialEq)]
pub struct KafkaSourceSettings {
    /// The topic read.
    pub topic: String,
    /// Its records' format.
    pub format: KafkaFormat,
    /// Consumer group (default `edgeflow.<pipeline>.<node>`).
    pub group: Option<String>,
    /// Brokers, when not the transport's.
    pub brokers: Option<String>,
    /// Maximum event-time disorder, ms.
    pub disorder_ms: i64,
    /// How far ahead of the wall clock an event time may be, ms (further: a dead letter).
    pub max_future_ms: i64,
    /// The schema of the records.
    pub schema: EventSchema,
    /// The event-time field (a `timestamp_ms` field of `schema`).
    pub time_field: String,
}

/// Settings of a `kafka` sink: a stream written to an external topic.
#[derive(Clone, Debug, PartialEq)]
pub struct KafkaSinkSettings {
    /// The topic written.
    pub topic: String,
    /// JSON lines (a record per row) or Arrow (a record per batch).
    pub format: KafkaFormat,
    /// The field whose value is each record's key (JSON lines only); none: the edge id.
    pub key: Option<String>,
    /// Brokers, when not the transport's.
    pub brokers: Option<String>,
}

impl NodeSettings for KafkaSourceSettings {
    fn kind(&self) -> &'static dyn NodeKind {
        &Kafka
    }

    fn default_placement(&self, _inputs: &[Placement]) -> Placement {
        Placement::Edge
    }

    fn typed(&self, _cx: &mut TypeCx) -> Option<Typed> {
        let output = StreamInfo {
            schema: self.schema.clone(),
            time_field: self.time_field.clone(),
        };
        Some(Typed::new(self.clone(), Some(output)))
    }

    fn render(&self) -> String {
        let k = self;
        format!(
            "topic={} format={} group={} time_field={} disorder={}",
            k.topic,
            k.format.name(),
            k.group.as_deref().unwrap_or("(default)"),
            k.time_field,
            duration(k.disorder_ms)
        ) + &max_future_note(k.max_future_ms)
    }

    fn build<'scope>(
        &self,
        scope: Scope<'scope, EventTime>,
        node: &PlanNode,
        _inputs: Vec<BatchStream<'scope>>,
        env: &BuildEnv,
    ) -> Result<NodeOutputs<'scope>, EngineError> {
        build::source(scope, node, self, env).map(NodeOutputs::main)
    }
}

impl NodeSettings for KafkaSinkSettings {
    fn kind(&self) -> &'static dyn NodeKind {
        &Kafka
    }

    fn is_sink(&self) -> bool {
        true
    }

    fn default_placement(&self, inputs: &[Placement]) -> Placement {
        follow_inputs(inputs)
    }

    fn typed(&self, cx: &mut TypeCx) -> Option<Typed> {
        let (r, f) = cx.split();
        let (node, schema, id) = (f.node, &f.input.schema, &f.node.id);
        let k = self;

        if let Some(key) = &k.key
            && schema.field_type(key).is_none()
        {
            r.error(
                node.pos_of("key"),
                format!("node \"{id}\": field \"key\": the input has no field \"{key}\""),
                Some(match did_you_mean(key, schema.names()) {
                    Some(m) => format!("did you mean \"{m}\"?"),
                    None => format!(
                        "the input's fields are: {}",
                        schema.names().collect::<Vec<_>>().join(", ")
                    ),
                }),
            );
            return None;
        }
        Some(Typed::new(self.clone(), None))
    }

    fn render(&self) -> String {
        let k = self;
        format!(
            "topic={} format={} key={}",
            k.topic,
            k.format.name(),
            k.key.as_deref().unwrap_or("(edge id)")
        )
    }

    fn build<'scope>(
        &self,
        _scope: Scope<'scope, EventTime>,
        node: &PlanNode,
        inputs: Vec<BatchStream<'scope>>,
        env: &BuildEnv,
    ) -> Result<NodeOutputs<'scope>, EngineError> {
        build::sink(require_input(node, inputs)?, node, self, env)?;
        Ok(NodeOutputs::default())
    }
}

impl Settings<'_, '_> {
    fn kafka_topic(&mut self) -> Option<String> {
        match self.string("topic") {
            Some(t) if is_topic_name(&t) => Some(t),
            Some(t) => {
                let pos = self.positions["topic"];
                self.err(
                    pos,
                    "topic",
                    format!("invalid topic name \"{t}\""),
                    Some("use at most 249 letters, digits, '.', '_' and '-'".into()),
                );
                None
            }
            None => {
                self.missing("topic", "name the Kafka topic: `topic: readings`");
                None
            }
        }
    }

    /// `format`, one of `formats` (default JSON lines).
    fn kafka_format(&mut self, formats: &[KafkaFormat]) -> Option<KafkaFormat> {
        if self.get("format").is_none() {
            return Some(KafkaFormat::JsonLines);
        }
        let names: Vec<&'static str> = formats.iter().map(|f| f.name()).collect();
        let name = self.choice("format", &names)?;
        formats.iter().copied().find(|f| f.name() == name)
    }

    fn kafka_source(&mut self, ctx: &Context<'_>) -> Option<KafkaSourceSettings> {
        self.reject_settings(
            &["key"],
            "only applies to a kafka sink (a kafka node with inputs)",
        );
        let topic = self.kafka_topic();
        let format =
            self.kafka_format(&[KafkaFormat::JsonLines, KafkaFormat::Csv, KafkaFormat::Arrow]);
        let group = self.string("group");
        let brokers = self.string("brokers");
        let disorder_ms = self.duration_ms("disorder").map_or(0, |(v, _)| v);
        let max_future_ms = self.max_future_ms();
        let (schema, time_field) = self.source_schema(ctx, "a kafka source")?;
        Some(KafkaSourceSettings {
            topic: topic?,
            format: format?,
            group,
            brokers,
            disorder_ms,
            max_future_ms,
            schema,
            time_field,
        })
    }

    fn kafka_sink(&mut self) -> Option<KafkaSinkSettings> {
        self.reject_settings(
            &["schema", "time_field", "disorder", "max_future", "group"],
            "only applies to a kafka source (a kafka node without inputs)",
        );
        let topic = self.kafka_topic();
        let format = self.kafka_format(&[KafkaFormat::JsonLines, KafkaFormat::Arrow]);
        let key = self.string("key");
        if key.is_some() && format == Some(KafkaFormat::Arrow) {
            let pos = self.positions["key"];
            self.err(
                pos,
                "key",
                "a record holds a whole batch in the arrow format; a key field needs `format: jsonl`",
                None,
            );
        }
        let brokers = self.string("brokers");
        Some(KafkaSinkSettings {
            topic: topic?,
            format: format?,
            key,
            brokers,
        })
    }
}

/// Kafka's rule for topic names.
fn is_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}
