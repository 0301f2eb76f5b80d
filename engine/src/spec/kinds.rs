//! The node kinds: one registry line per kind ([`KINDS`]), their typed settings, and the code
//! that reads each kind's settings from YAML with positioned errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use edgeflow_operators::infer::AnomalyModel;
use edgeflow_operators::schema::{EventSchema, FieldType};

mod insight;

pub use insight::{ControlRule, InsightRule, InsightSettings, RuleCondition};

use super::yaml::{Key, Node, Pos, Value};
use super::{
    NodeSpec, Placement, Port, Reporter, StreamRef, TransportSpec, did_you_mean, is_name, resolve,
    schema_value, show, unknown_key,
};

/// Reads and checks a model file written by `edgeflow train`; the error names the file.
pub fn load_model(path: &Path) -> Result<AnomalyModel, String> {
    let bytes = edgeflow_connectors::model_file::read_model_file(path)
        .map_err(|e| edgeflow_connectors::error::chain(&e))?;
    AnomalyModel::from_bytes(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// What a kind does with streams.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Role {
    /// No inputs, produces a stream.
    Source,
    /// Inputs and an output stream.
    Transform,
    /// Inputs, no output stream.
    Sink,
    /// `file`: a source without `inputs`, a sink with them.
    SourceOrSink,
}

/// One registered node kind.
#[derive(Debug)]
pub struct KindInfo {
    /// The YAML name.
    pub name: &'static str,
    /// Its settings (besides kind, inputs, placement, description).
    pub settings: &'static [&'static str],
    /// Its role.
    pub role: Role,
}

/// Every node kind. Adding a kind means one line here, its settings type and its reader below.
pub const KINDS: &[KindInfo] = &[
    KindInfo {
        name: "generator",
        settings: &[
            "seed",
            "devices",
            "sites",
            "sensors",
            "rate_per_device",
            "start",
            "anomaly_rate",
            "anomaly_shapes",
            "ground_truth",
            "disorder",
            "events",
            "drift_sites",
            "drift_rate",
            "schema",
        ],
        role: Role::Source,
    },
    KindInfo {
        name: "file",
        settings: &[
            "path",
            "format",
            "schema",
            "time_field",
            "header",
            "disorder",
        ],
        role: Role::SourceOrSink,
    },
    KindInfo {
        name: "kafka",
        settings: &[
            "topic",
            "format",
            "schema",
            "time_field",
            "disorder",
            "group",
            "brokers",
            "key",
        ],
        role: Role::SourceOrSink,
    },
    KindInfo {
        name: "filter",
        settings: &["where"],
        role: Role::Transform,
    },
    KindInfo {
        name: "map",
        settings: &["fields", "drop"],
        role: Role::Transform,
    },
    KindInfo {
        name: "window",
        settings: &[
            "key",
            "size",
            "slide",
            "aggregates",
            "value",
            "allowed_lateness",
            "time_field",
        ],
        role: Role::Transform,
    },
    KindInfo {
        name: "detect",
        settings: &[
            "key",
            "value",
            "method",
            "min",
            "max",
            "threshold",
            "min_samples",
            "emit",
        ],
        role: Role::Transform,
    },
    KindInfo {
        name: "infer",
        settings: &["key", "value", "model", "threshold", "emit"],
        role: Role::Transform,
    },
    KindInfo {
        name: "aggregate",
        settings: &[
            "key",
            "size",
            "allowed_lateness",
            "aggregates",
            "value",
            "identity",
            "lookup",
            "time_field",
        ],
        role: Role::Transform,
    },
    KindInfo {
        name: "reference",
        settings: &["path", "format", "header", "schema", "key", "reload"],
        role: Role::Source,
    },
    KindInfo {
        name: "insight",
        settings: &["rules", "control"],
        role: Role::Transform,
    },
    KindInfo {
        name: "table",
        settings: &["name"],
        role: Role::Sink,
    },
    KindInfo {
        name: "stdout",
        settings: &["format"],
        role: Role::Sink,
    },
];

/// Keys every node may have.
pub const COMMON_KEYS: &[&str] = &["kind", "inputs", "placement", "description", "compress"];

/// How a node's output is encoded where it crosses the edge -> cloud cut.
#[derive(Clone, Debug, PartialEq)]
pub struct Compression {
    /// Which codec.
    pub mode: CompressMode,
    /// Lossy columns: `(f64 field, absolute error bound)`.
    pub error_bounds: Vec<(String, f64)>,
}

impl Default for Compression {
    fn default() -> Self {
        Compression {
            mode: CompressMode::Auto,
            error_bounds: Vec::new(),
        }
    }
}

/// The `compress` choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompressMode {
    /// The content-aware codec, smallest encoding per column (the default).
    Auto,
    /// The content-aware codec with lz4 only: faster, a little larger.
    Fast,
    /// Plain Arrow IPC.
    Off,
}

impl CompressMode {
    /// The name in pipeline files.
    pub fn name(self) -> &'static str {
        match self {
            CompressMode::Auto => "auto",
            CompressMode::Fast => "fast",
            CompressMode::Off => "off",
        }
    }
}

/// The anomaly shapes the generator can inject.
pub const ANOMALY_SHAPES: &[&str] = &["spike", "level_shift", "stuck", "drift"];

/// The window aggregate functions.
pub const AGGREGATE_FUNCTIONS: &[&str] = &[
    "count", "sum", "min", "max", "mean", "stddev", "first", "last", "p50", "p95", "p99",
];

/// Settings of a `generator` source.
#[derive(Clone, Debug, PartialEq)]
pub struct GeneratorSettings {
    /// Random seed.
    pub seed: u64,
    /// Number of devices.
    pub devices: u32,
    /// Number of sites devices are spread over.
    pub sites: u32,
    /// Sensor names; each device has each sensor.
    pub sensors: Vec<String>,
    /// Readings per second per device (and sensor).
    pub rate_per_device: f64,
    /// Event time of the first reading, ms since the epoch; `None`: 2026-01-01T00:00:00Z
    /// when running as fast as possible, the wall clock at start with `--realtime`.
    pub start_ms: Option<i64>,
    /// Probability that a reading starts an anomaly.
    pub anomaly_rate: f64,
    /// Which anomaly shapes to inject.
    pub anomaly_shapes: Vec<String>,
    /// Whether to add the `anomaly` ground-truth column.
    pub ground_truth: bool,
    /// Maximum event-time disorder, ms.
    pub disorder_ms: i64,
    /// Stop after this many readings in total (`None`: run until stopped).
    pub events: Option<u64>,
    /// Sites (numbered from 1, as in `site-01`) whose devices drift slowly upward.
    pub drift_sites: Vec<u32>,
    /// How fast they drift, in standard deviations of the noise per minute.
    pub drift_rate: f64,
}

impl GeneratorSettings {
    /// The generator's output schema.
    pub fn schema(&self) -> EventSchema {
        let mut fields = vec![
            ("ts".to_owned(), FieldType::TimestampMs),
            ("device".to_owned(), FieldType::String),
            ("site".to_owned(), FieldType::String),
            ("sensor".to_owned(), FieldType::String),
            ("value".to_owned(), FieldType::F64),
        ];
        if self.ground_truth {
            fields.push(("anomaly".to_owned(), FieldType::String));
        }
        EventSchema::new(fields)
    }
}

/// Formats a file source reads.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FileFormatName {
    /// Comma-separated values.
    Csv,
    /// One JSON object per line.
    JsonLines,
}

/// Formats a file sink writes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SinkFormat {
    /// Comma-separated values.
    Csv,
    /// One JSON object per line.
    JsonLines,
    /// Apache Parquet.
    Parquet,
}

/// Settings of a `file` source.
#[derive(Clone, Debug, PartialEq)]
pub struct FileSourceSettings {
    /// The file, resolved against the pipeline file's directory.
    pub path: PathBuf,
    /// Its format.
    pub format: FileFormatName,
    /// Whether a CSV file starts with a header line.
    pub header: bool,
    /// Maximum event-time disorder, ms.
    pub disorder_ms: i64,
    /// The schema of the file's records.
    pub schema: EventSchema,
    /// The event-time field (a `timestamp_ms` field of `schema`).
    pub time_field: String,
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

/// One window aggregate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AggregateSetting {
    /// Function name (one of [`AGGREGATE_FUNCTIONS`]).
    pub func: String,
    /// The field it reads.
    pub field: String,
    /// The output column.
    pub output: String,
}

/// Settings of a `window`.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowSettings {
    /// Grouping fields (may be empty).
    pub key: Vec<String>,
    /// Window length, ms.
    pub size_ms: i64,
    /// Distance between window starts, ms (`== size_ms` for tumbling windows).
    pub slide_ms: i64,
    /// How long after a window's end late events are still counted, ms.
    pub allowed_lateness_ms: i64,
    /// The event-time field windows are assigned by (filled by the planner when not written).
    pub time_field: String,
    /// The aggregates, in output order.
    pub aggregates: Vec<AggregateSetting>,
}

/// Functions of an `aggregate` (a subset of the window's: the ones a changing multiset of
/// rows can be kept under retractions, plus `count_distinct`).
pub const VIEW_AGGREGATE_FUNCTIONS: &[&str] =
    &["count", "sum", "min", "max", "mean", "count_distinct"];

/// Settings of an `aggregate`: an incrementally maintained fleet view (differential dataflow).
#[derive(Clone, Debug, PartialEq)]
pub struct AggregateViewSettings {
    /// Grouping fields, of the input or of the `lookup` reference (may be empty).
    pub key: Vec<String>,
    /// Event-time window length, ms; `None`: running totals over all time.
    pub size_ms: Option<i64>,
    /// How long after a window's end rows for it still update it, ms (windows only).
    pub allowed_lateness_ms: i64,
    /// The aggregates, in output order.
    pub aggregates: Vec<AggregateSetting>,
    /// Fields that identify an input row: a later row with the same identity replaces
    /// (corrects) the earlier one. Empty: every row counts.
    pub identity: Vec<String>,
    /// A `reference` node whose rows are joined to every input row on the reference's key.
    pub lookup: Option<String>,
    /// The input's event-time field (filled by the planner when not written).
    pub time_field: String,
}

/// Where a `reference` table comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum ReferenceSource {
    /// A CSV or JSON-lines file, re-read when it changes.
    File {
        /// The file, resolved against the pipeline file's directory.
        path: PathBuf,
        /// CSV or JSON lines.
        format: FileFormatName,
        /// Whether a CSV file starts with a header line.
        header: bool,
    },
}

/// Settings of a `reference`: a keyed table that can change while the pipeline runs.
#[derive(Clone, Debug, PartialEq)]
pub struct ReferenceSettings {
    /// Where the rows come from.
    pub source: ReferenceSource,
    /// The rows' fields.
    pub schema: EventSchema,
    /// Fields that identify a row (the join key of a `lookup`); a later row with the same
    /// key replaces an earlier one.
    pub key: Vec<String>,
    /// How often the source is checked for changes, ms.
    pub reload_ms: i64,
}

/// How a detector scores values.
#[derive(Clone, Debug, PartialEq)]
pub enum DetectMethod {
    /// Outside `[min, max]` is an exception.
    Threshold {
        /// Lower bound, if any.
        min: Option<f64>,
        /// Upper bound, if any.
        max: Option<f64>,
    },
    /// `|z| > threshold` against the key's running mean and deviation.
    ZScore {
        /// The z-score bound (> 0).
        threshold: f64,
        /// Samples needed before scoring.
        min_samples: u64,
    },
}

/// Settings of a `detect`.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectSettings {
    /// Per-key state is kept for these fields.
    pub key: Vec<String>,
    /// The scored field (i64 or f64).
    pub value: String,
    /// The scoring method.
    pub method: DetectMethod,
    /// Emit every event (`emit: all`) rather than only exceptions.
    pub emit_all: bool,
}

/// Settings of an `infer`.
#[derive(Clone, Debug, PartialEq)]
pub struct InferSettings {
    /// Windows are cut per key (the planner fills in `device` and `sensor`, those of them the
    /// input has, when none is written).
    pub key: Vec<String>,
    /// The scored field (i64 or f64).
    pub value: String,
    /// The model file as written.
    pub model_text: String,
    /// The model file, resolved against the pipeline file's directory.
    pub model: PathBuf,
    /// Replaces the model's default threshold.
    pub threshold: Option<f64>,
    /// Emit every scored window (`emit: all`) rather than only exceptions.
    pub emit_all: bool,
    /// The input's event-time field (filled by the planner).
    pub time_field: String,
}

/// A node's validated settings, units resolved to ms and per-second floats.
#[derive(Clone, Debug, PartialEq)]
pub enum Operator {
    /// Synthetic sensor readings.
    Generator(GeneratorSettings),
    /// Reads a CSV or JSON-lines file.
    FileSource(FileSourceSettings),
    /// Reads records from a Kafka topic.
    KafkaSource(KafkaSourceSettings),
    /// Writes records to a Kafka topic.
    KafkaSink(KafkaSinkSettings),
    /// Keeps events where `predicate` is true.
    Filter {
        /// SQL boolean expression.
        predicate: String,
    },
    /// Computes and drops fields.
    Map {
        /// `(name, SQL expression)` in order.
        fields: Vec<(String, String)>,
        /// Fields removed.
        drop: Vec<String>,
    },
    /// Event-time window aggregation.
    Window(WindowSettings),
    /// Anomaly detection.
    Detect(DetectSettings),
    /// Model inference over per-key windows.
    Infer(InferSettings),
    /// Incrementally maintained aggregates (differential dataflow); its output is a changelog.
    Aggregate(AggregateViewSettings),
    /// A keyed table read by `lookup`s, which may change while running.
    Reference(ReferenceSettings),
    /// Fleet rules raising incidents, and the control records they send to the edge.
    Insight(InsightSettings),
    /// A materialized, SQL-queryable table.
    Table {
        /// The SQL table name.
        name: String,
        /// Its input is a changelog (an `aggregate`): rows carry a `diff` and the table
        /// holds their sum (filled by the planner).
        changelog: bool,
    },
    /// Writes a file.
    FileSink {
        /// The file, resolved against the pipeline file's directory.
        path: PathBuf,
        /// Its format.
        format: SinkFormat,
    },
    /// Prints to standard output.
    Stdout {
        /// Pretty tables rather than JSON lines.
        table_format: bool,
    },
}

impl Operator {
    /// Whether the node has no output stream.
    pub fn is_sink(&self) -> bool {
        matches!(
            self,
            Operator::Table { .. }
                | Operator::FileSink { .. }
                | Operator::KafkaSink(_)
                | Operator::Stdout { .. }
        )
    }
}

/// What the node readers need besides the node itself.
pub struct Context<'a> {
    /// The pipeline file's directory.
    pub dir: &'a Path,
    /// Top-level schemas.
    pub schemas: &'a BTreeMap<String, EventSchema>,
}

/// Reads one node. `Err` holds the inputs of a node too broken to be planned (its errors are
/// reported), so that the planner can still check them.
pub(crate) fn build_node(
    r: &mut Reporter,
    ctx: &Context<'_>,
    key: &Key,
    value: &Node,
) -> Result<NodeSpec, Vec<(StreamRef, Pos)>> {
    let id = key.name.as_str();
    if !is_name(id, false) {
        r.error(
            key.pos,
            format!("invalid node id \"{id}\""),
            Some("use lowercase letters, digits and '_'".into()),
        );
    }
    let Value::Map(entries) = &value.value else {
        r.error(
            value.pos,
            format!(
                "node \"{id}\": a node is a map with a `kind`, not {}",
                value.shape()
            ),
            None,
        );
        return Err(Vec::new());
    };
    let mut s = Settings {
        r,
        node: id,
        entries,
        positions: BTreeMap::new(),
        broken: false,
        known: &[],
        prefix: String::new(),
        here: None,
    };

    // kind
    let kind_node = s
        .entries
        .iter()
        .find(|(k, _)| k.name == "kind")
        .map(|(_, v)| v);
    let info = match kind_node {
        None => {
            s.r.error(
                key.pos,
                format!("node \"{id}\": missing required field \"kind\""),
                Some(format!("kinds are: {}", kind_names())),
            );
            None
        }
        Some(k) if k.value == Value::Poisoned => None,
        Some(k) => {
            let name = k.as_scalar().unwrap_or_default();
            match KINDS.iter().find(|i| i.name == name) {
                Some(info) => Some(info),
                None => {
                    let msg = format!("node \"{id}\": unknown kind {}", show(k));
                    match did_you_mean(name, KINDS.iter().map(|i| i.name)) {
                        Some(m) => s.r.error(
                            k.pos,
                            format!("{msg}; did you mean \"{m}\"?"),
                            Some(format!("kinds are: {}", kind_names())),
                        ),
                        None => {
                            s.r.error(k.pos, msg, Some(format!("kinds are: {}", kind_names())))
                        }
                    }
                    None
                }
            }
        }
    };

    // inputs
    let has_inputs_key = s.entries.iter().any(|(k, _)| k.name == "inputs");
    let inputs = s.inputs();
    let placement = s.choice("placement", &["edge", "cloud"]).map(|p| {
        if p == "edge" {
            Placement::Edge
        } else {
            Placement::Cloud
        }
    });
    let description = s.string("description");
    let compress = s.compress();
    let Some(info) = info else {
        return Err(inputs);
    };
    s.known = info.settings;

    let role = match info.role {
        Role::SourceOrSink if has_inputs_key => Role::Sink,
        Role::SourceOrSink => Role::Source,
        other => other,
    };
    let inputs_pos = s.positions.get("inputs").copied().unwrap_or(key.pos);
    match role {
        Role::Source if has_inputs_key => s.r.error(
            inputs_pos,
            format!("node \"{id}\": a {} source takes no inputs", info.name),
            None,
        ),
        Role::Transform | Role::Sink if inputs.is_empty() && !s.broken => s.r.error(
            inputs_pos,
            format!(
                "node \"{id}\": a {} node needs at least one input",
                info.name
            ),
            Some("add `inputs: [<node id>]`".into()),
        ),
        _ => {}
    }

    // unknown settings
    for (k, _) in s.entries {
        if COMMON_KEYS.contains(&k.name.as_str()) || info.settings.contains(&k.name.as_str()) {
            continue;
        }
        let valid: Vec<&str> = info.settings.iter().chain(COMMON_KEYS).copied().collect();
        let msg = format!(
            "node \"{id}\": unknown field \"{}\" for kind {}",
            k.name, info.name
        );
        unknown_key(s.r, k, &msg, &valid);
        s.broken = true;
    }

    let operator = match (info.name, role) {
        ("generator", _) => s.generator(ctx),
        ("file", Role::Source) => s.file_source(ctx),
        ("file", _) => s.file_sink(ctx),
        ("kafka", Role::Source) => s.kafka_source(ctx),
        ("kafka", _) => s.kafka_sink(),
        ("filter", _) => s.filter(),
        ("map", _) => s.map(),
        ("window", _) => s.window(),
        ("detect", _) => s.detect(),
        ("infer", _) => s.infer(ctx),
        ("aggregate", _) => s.aggregate(),
        ("reference", _) => s.reference(ctx),
        ("insight", _) => s.insight(ctx),
        ("table", _) => Some(s.table()),
        ("stdout", _) => s.stdout(),
        _ => None,
    };
    let Some(operator) = operator.filter(|_| !s.broken) else {
        return Err(inputs);
    };
    Ok(NodeSpec {
        id: id.to_owned(),
        pos: key.pos,
        kind: info.name,
        inputs,
        placement,
        description,
        compress,
        operator,
        positions: s.positions,
    })
}

fn kind_names() -> String {
    KINDS.iter().map(|i| i.name).collect::<Vec<_>>().join(", ")
}

/// Reads one node's settings, reporting problems as `node "id": field "x": ...`.
struct Settings<'a, 'r> {
    r: &'r mut Reporter,
    node: &'a str,
    entries: &'a [(Key, Node)],
    positions: BTreeMap<String, Pos>,
    /// Whether a setting was invalid (the node is then not planned).
    broken: bool,
    /// The kind's settings, once the kind is known.
    known: &'static [&'static str],
    /// Path of the map being read inside the node (`rules[0].drift.`), for messages.
    prefix: String,
    /// Where that nested map is written (missing fields are reported there).
    here: Option<Pos>,
}

/// Prefix of [`Settings::node`] when the settings are a top-level section, not a node.
const SECTION: &str = "section:";

/// Keys of the `transport:` section.
pub(crate) const TRANSPORT_KEYS: &[&str] = &[
    "brokers",
    "partitions",
    "idle_timeout",
    "spool_max_bytes",
    "spool_when_full",
];

/// Reads the `transport:` section: how `edgeflow edge` and `edgeflow cloud` reach Kafka.
/// Flags and `EDGEFLOW_*` variables override each setting.
pub(crate) fn build_transport(r: &mut Reporter, value: &Node) -> TransportSpec {
    let Value::Map(entries) = &value.value else {
        r.error(
            value.pos,
            format!("\"transport\" must be a map, not {}", value.shape()),
            Some(format!("keys are: {}", TRANSPORT_KEYS.join(", "))),
        );
        return TransportSpec::default();
    };
    for (k, _) in entries {
        if !TRANSPORT_KEYS.contains(&k.name.as_str()) {
            let msg = format!("\"transport\": unknown key \"{}\"", k.name);
            unknown_key(r, k, &msg, TRANSPORT_KEYS);
        }
    }
    let mut s = Settings {
        r,
        node: "section:transport",
        entries,
        positions: BTreeMap::new(),
        broken: false,
        known: TRANSPORT_KEYS,
        prefix: String::new(),
        here: None,
    };
    let partitions = s.get("partitions").map(|_| s.count("partitions", 1));
    let spool_max_bytes = s
        .get("spool_max_bytes")
        .map(|_| s.u64("spool_max_bytes", 0));
    TransportSpec {
        brokers: s.string("brokers"),
        partitions,
        idle_timeout_ms: s.duration_ms("idle_timeout").map(|(ms, _)| ms),
        spool_max_bytes,
        spool_when_full: s.choice("spool_when_full", &["block", "drop_oldest_summaries"]),
    }
}

/// Names of the SQL system tables, which no `table` node may take.
pub const SYSTEM_TABLE_NAMES: [&str; 4] = [
    "edgeflow_nodes",
    "edgeflow_edges",
    "edgeflow_topics",
    "edgeflow_tables",
];

const DURATION_HINT: &str = "expected a duration like \"500ms\", \"1s\" or \"5m\"";

impl<'a> Settings<'a, '_> {
    /// The value of `name`, if present and not null; records its position.
    fn get(&mut self, name: &str) -> Option<&'a Node> {
        let (_, v) = self.entries.iter().find(|(k, _)| k.name == name)?;
        self.positions.insert(name.to_owned(), v.pos);
        match v.value {
            Value::Null => None,
            Value::Poisoned => {
                self.broken = true;
                None
            }
            _ => Some(v),
        }
    }

    /// How messages name what is being read: `node "id"`, or a top-level section.
    fn subject(&self) -> String {
        match self.node.strip_prefix(SECTION) {
            Some(section) => format!("\"{section}\""),
            None => format!("node \"{}\"", self.node),
        }
    }

    fn err(
        &mut self,
        pos: Pos,
        field: &str,
        message: impl std::fmt::Display,
        hint: Option<String>,
    ) {
        self.broken = true;
        self.r.error(
            pos,
            format!(
                "{}: field \"{}{field}\": {message}",
                self.subject(),
                self.prefix
            ),
            hint,
        );
    }

    fn missing(&mut self, field: &str, hint: &str) {
        self.broken = true;
        let poisoned = self
            .entries
            .iter()
            .any(|(k, v)| k.name == field && v.value == Value::Poisoned);
        // A misspelt key (`wher:`) is reported as unknown with "did you mean"; saying the
        // field is missing too would be noise.
        let misspelt = self.entries.iter().any(|(k, _)| {
            let name = k.name.as_str();
            !self.known.contains(&name)
                && !COMMON_KEYS.contains(&name)
                && did_you_mean(name, [field]).is_some()
        });
        if poisoned || misspelt {
            return;
        }
        let pos = self.here.unwrap_or_else(|| {
            self.entries
                .iter()
                .find(|(k, _)| k.name == "kind")
                .map(|(k, _)| k.pos)
                .unwrap_or_default()
        });
        self.broken = true;
        self.r.error(
            pos,
            format!(
                "node \"{}\": missing required field \"{}{field}\"",
                self.node, self.prefix
            ),
            Some(hint.to_owned()),
        );
    }

    /// A scalar's text; reports non-scalars.
    fn scalar(&mut self, name: &str) -> Option<(&'a str, Pos)> {
        let v = self.get(name)?;
        match v.as_scalar() {
            Some(s) => Some((s, v.pos)),
            None => {
                self.err(
                    v.pos,
                    name,
                    format!("expected a scalar, not {}", v.shape()),
                    None,
                );
                None
            }
        }
    }

    fn string(&mut self, name: &str) -> Option<String> {
        self.scalar(name).map(|(s, _)| s.to_owned())
    }

    fn parsed<T: std::str::FromStr>(&mut self, name: &str, what: &str) -> Option<(T, Pos)> {
        let (text, pos) = self.scalar(name)?;
        match text.trim().parse::<T>() {
            Ok(v) => Some((v, pos)),
            Err(_) => {
                self.err(pos, name, format!("expected {what}, got \"{text}\""), None);
                None
            }
        }
    }

    fn u64(&mut self, name: &str, default: u64) -> u64 {
        self.parsed(name, "a non-negative integer")
            .map_or(default, |(v, _)| v)
    }

    fn count(&mut self, name: &str, default: u32) -> u32 {
        match self.parsed::<u32>(name, "a positive integer") {
            None => default,
            Some((0, pos)) => {
                self.err(pos, name, "must be at least 1, got \"0\"", None);
                default
            }
            Some((v, _)) => v,
        }
    }

    fn f64(&mut self, name: &str) -> Option<f64> {
        let (v, pos) = self.parsed::<f64>(name, "a number")?;
        if !v.is_finite() {
            self.err(
                pos,
                name,
                format!("expected a finite number, got \"{v}\""),
                None,
            );
            return None;
        }
        Some(v)
    }

    fn bool(&mut self, name: &str, default: bool) -> bool {
        let Some((text, pos)) = self.scalar(name) else {
            return default;
        };
        match text {
            "true" | "True" | "TRUE" => true,
            "false" | "False" | "FALSE" => false,
            _ => {
                self.err(
                    pos,
                    name,
                    format!("expected true or false, got \"{text}\""),
                    None,
                );
                default
            }
        }
    }

    fn choice(&mut self, name: &str, choices: &[&'static str]) -> Option<&'static str> {
        let (text, pos) = self.scalar(name)?;
        if let Some(c) = choices.iter().find(|c| **c == text) {
            return Some(c);
        }
        let hint = format!("expected one of: {}", choices.join(", "));
        match did_you_mean(text, choices.iter().copied()) {
            Some(m) => self.err(
                pos,
                name,
                format!("invalid value \"{text}\"; did you mean \"{m}\"?"),
                Some(hint),
            ),
            None => self.err(pos, name, format!("invalid value \"{text}\""), Some(hint)),
        }
        None
    }

    fn duration_ms(&mut self, name: &str) -> Option<(i64, Pos)> {
        let (text, pos) = self.scalar(name)?;
        match parse_duration_ms(text) {
            Ok(ms) => Some((ms, pos)),
            Err(hint) => {
                self.err(
                    pos,
                    name,
                    format!("invalid duration \"{text}\""),
                    Some(hint),
                );
                None
            }
        }
    }

    /// `compress: auto|fast|off`, or `compress: { codec: ..., error_bounds: { field: e } }`.
    fn compress(&mut self) -> Compression {
        let mut out = Compression::default();
        let Some(v) = self.get("compress") else {
            return out;
        };
        let mode = |s: &mut Self, text: &str, pos: Pos| match text {
            "auto" => Some(CompressMode::Auto),
            "fast" => Some(CompressMode::Fast),
            "off" => Some(CompressMode::Off),
            _ => {
                s.err(
                    pos,
                    "compress",
                    format!("invalid codec \"{text}\""),
                    Some("expected one of: auto, fast, off".into()),
                );
                None
            }
        };
        match &v.value {
            Value::Scalar(text) => {
                if let Some(m) = mode(self, text, v.pos) {
                    out.mode = m;
                }
            }
            Value::Map(entries) => {
                for (k, value) in entries {
                    match k.name.as_str() {
                        "codec" => match value.as_scalar() {
                            Some(text) => {
                                if let Some(m) = mode(self, text, value.pos) {
                                    out.mode = m;
                                }
                            }
                            None => self.err(
                                value.pos,
                                "compress.codec",
                                "expected auto, fast or off",
                                None,
                            ),
                        },
                        "error_bounds" => {
                            let Value::Map(bounds) = &value.value else {
                                self.err(
                                    value.pos,
                                    "compress.error_bounds",
                                    format!(
                                        "expected a map of f64 field -> absolute error, not {}",
                                        value.shape()
                                    ),
                                    None,
                                );
                                continue;
                            };
                            for (field, bound) in bounds {
                                let parsed =
                                    bound.as_scalar().and_then(|t| t.trim().parse::<f64>().ok());
                                match parsed {
                                    Some(e) if e.is_finite() && e > 0.0 => {
                                        self.positions.insert(
                                            format!("compress.error_bounds.{}", field.name),
                                            field.pos,
                                        );
                                        out.error_bounds.push((field.name.clone(), e));
                                    }
                                    _ => self.err(
                                        bound.pos,
                                        "compress.error_bounds",
                                        format!(
                                            "field \"{}\": expected a positive number, got {}",
                                            field.name,
                                            show(bound)
                                        ),
                                        None,
                                    ),
                                }
                            }
                        }
                        other => {
                            let msg = format!(
                                "node \"{}\": field \"compress\": unknown key \"{other}\"",
                                self.node
                            );
                            unknown_key(self.r, k, &msg, &["codec", "error_bounds"]);
                            self.broken = true;
                        }
                    }
                }
            }
            _ => self.err(
                v.pos,
                "compress",
                format!("expected auto, fast, off or a map, not {}", v.shape()),
                None,
            ),
        }
        out
    }

    fn rate(&mut self, name: &str) -> Option<f64> {
        let (text, pos) = self.scalar(name)?;
        match parse_rate(text) {
            Some(r) => Some(r),
            None => {
                self.err(
                    pos,
                    name,
                    format!("invalid rate \"{text}\""),
                    Some("expected a positive rate like \"100/s\", \"600/m\" or \"0.5\" (per second)".into()),
                );
                None
            }
        }
    }

    /// A list of scalars, each recorded at `name[i]`.
    fn list(&mut self, name: &str) -> Option<Vec<(String, Pos)>> {
        let v = self.get(name)?;
        let Value::Seq(items) = &v.value else {
            self.err(
                v.pos,
                name,
                format!("expected a list, not {}", v.shape()),
                Some(format!("write `{name}: [a, b]`")),
            );
            return None;
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item.as_scalar() {
                Some(s) => {
                    self.positions.insert(format!("{name}[{i}]"), item.pos);
                    out.push((s.to_owned(), item.pos));
                }
                None if item.value == Value::Poisoned => self.broken = true,
                None => self.err(
                    item.pos,
                    name,
                    format!("list items must be scalars, not {}", item.shape()),
                    None,
                ),
            }
        }
        Some(out)
    }

    /// A list of field names (no duplicates).
    fn field_list(&mut self, name: &str) -> Vec<String> {
        let items = self.list(name).unwrap_or_default();
        let mut out: Vec<String> = Vec::new();
        for (s, pos) in items {
            if out.contains(&s) {
                self.err(pos, name, format!("\"{s}\" is listed twice"), None);
            } else {
                out.push(s);
            }
        }
        out
    }

    fn inputs(&mut self) -> Vec<(StreamRef, Pos)> {
        let Some(items) = self.list("inputs") else {
            return Vec::new();
        };
        let mut out: Vec<(StreamRef, Pos)> = Vec::new();
        for (text, pos) in items {
            let stream = match text.split_once('.') {
                None => Some(StreamRef::main(&text)),
                Some((node, "late")) => Some(StreamRef {
                    node: node.to_owned(),
                    port: Port::Late,
                }),
                Some((node, "control")) => Some(StreamRef {
                    node: node.to_owned(),
                    port: Port::Control,
                }),
                Some((_, port)) => {
                    self.err(
                        pos,
                        "inputs",
                        format!("unknown output \"{port}\" in \"{text}\""),
                        Some("an input is `node`, `node.late` (a window's late events) or `node.control` (an insight's control records)".into()),
                    );
                    None
                }
            };
            if let Some(stream) = stream {
                if out.iter().any(|(s, _)| *s == stream) {
                    self.err(pos, "inputs", format!("\"{text}\" is listed twice"), None);
                } else {
                    out.push((stream, pos));
                }
            }
        }
        out
    }

    fn generator(&mut self, ctx: &Context<'_>) -> Option<Operator> {
        let seed = self.u64("seed", 1);
        let devices = self.count("devices", 100);
        let sites = self.count("sites", 10);
        let sensors = match self.list("sensors") {
            None => vec!["vibration".to_owned(), "temperature".to_owned()],
            Some(items) => {
                if items.is_empty() {
                    let pos = self.positions["sensors"];
                    self.err(pos, "sensors", "needs at least one sensor", None);
                }
                items.into_iter().map(|(s, _)| s).collect()
            }
        };
        let rate_per_device = self.rate("rate_per_device").unwrap_or(10.0);
        let start_ms = match self.scalar("start") {
            None => None,
            Some((text, pos)) => match parse_start(text) {
                Some(ms) => Some(ms),
                None => {
                    self.err(
                        pos,
                        "start",
                        format!("invalid start time \"{text}\""),
                        Some("expected RFC 3339 text like \"2026-01-01T00:00:00Z\" or milliseconds since the epoch".into()),
                    );
                    None
                }
            },
        };
        let anomaly_rate = match self.f64("anomaly_rate") {
            None => 0.0005,
            Some(v) if (0.0..=1.0).contains(&v) => v,
            Some(v) => {
                let pos = self.positions["anomaly_rate"];
                self.err(
                    pos,
                    "anomaly_rate",
                    format!("must be between 0 and 1, got {v}"),
                    None,
                );
                0.0
            }
        };
        let anomaly_shapes = match self.list("anomaly_shapes") {
            None => ANOMALY_SHAPES.iter().map(|s| (*s).to_owned()).collect(),
            Some(items) => {
                let mut out = Vec::new();
                for (s, pos) in items {
                    if ANOMALY_SHAPES.contains(&s.as_str()) {
                        if !out.contains(&s) {
                            out.push(s);
                        }
                    } else {
                        let hint = Some(format!("shapes are: {}", ANOMALY_SHAPES.join(", ")));
                        match did_you_mean(&s, ANOMALY_SHAPES.iter().copied()) {
                            Some(m) => self.err(
                                pos,
                                "anomaly_shapes",
                                format!("unknown shape \"{s}\"; did you mean \"{m}\"?"),
                                hint,
                            ),
                            None => self.err(
                                pos,
                                "anomaly_shapes",
                                format!("unknown shape \"{s}\""),
                                hint,
                            ),
                        }
                    }
                }
                out
            }
        };
        let ground_truth = self.bool("ground_truth", false);
        let disorder_ms = self.duration_ms("disorder").map_or(0, |(v, _)| v);
        let events = self.get("events").is_some().then(|| self.u64("events", 0));
        let mut drift_sites = Vec::new();
        for (text, pos) in self.list("drift_sites").unwrap_or_default() {
            match text.trim().parse::<u32>() {
                Ok(site) if (1..=sites).contains(&site) => drift_sites.push(site),
                _ => self.err(
                    pos,
                    "drift_sites",
                    format!("\"{text}\" is not a site number between 1 and {sites}"),
                    Some("sites are numbered from 1, as in `site-01`".into()),
                ),
            }
        }
        let drift_rate = match self.f64("drift_rate") {
            None => 0.1,
            Some(v) if v >= 0.0 => v,
            Some(v) => {
                let pos = self.positions["drift_rate"];
                self.err(
                    pos,
                    "drift_rate",
                    format!("must be at least 0, got {v}"),
                    None,
                );
                0.1
            }
        };
        let settings = GeneratorSettings {
            seed,
            devices,
            sites,
            sensors,
            rate_per_device,
            start_ms,
            anomaly_rate,
            anomaly_shapes,
            ground_truth,
            disorder_ms,
            events,
            drift_sites,
            drift_rate,
        };
        if let Some(node) = self.get("schema") {
            let what = format!("node \"{}\": field \"schema\"", self.node);
            match schema_value(self.r, node, ctx.schemas, &what) {
                Some(s) if s == settings.schema() => {}
                Some(s) => self.err(
                    node.pos,
                    "schema",
                    format!("{s} is not the generator's output schema"),
                    Some(format!("a generator produces {}", settings.schema())),
                ),
                None => self.broken = true,
            }
        }
        Some(Operator::Generator(settings))
    }

    fn file_format(&mut self, path: &str, formats: &[&'static str]) -> Option<&'static str> {
        if self.get("format").is_some() {
            return self.choice("format", formats);
        }
        let ext = Path::new(path)
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default();
        let from_ext = match ext {
            "csv" => Some("csv"),
            "jsonl" | "ndjson" | "json" => Some("jsonl"),
            "parquet" => Some("parquet"),
            _ => None,
        };
        match from_ext.and_then(|f| formats.iter().find(|x| **x == f).copied()) {
            Some(f) => Some(f),
            None => {
                let pos = self.positions["path"];
                self.err(
                    pos,
                    "path",
                    format!("cannot tell the format of \"{path}\" from its extension"),
                    Some(format!("set `format:` to one of: {}", formats.join(", "))),
                );
                None
            }
        }
    }

    fn required_path(&mut self, ctx: &Context<'_>) -> Option<(String, PathBuf)> {
        match self.string("path") {
            Some(p) if !p.is_empty() => {
                let resolved = resolve(ctx.dir, &p);
                Some((p, resolved))
            }
            Some(_) => {
                let pos = self.positions["path"];
                self.err(pos, "path", "must not be empty", None);
                None
            }
            None => {
                self.missing("path", "add `path: <file>`");
                None
            }
        }
    }

    fn file_source(&mut self, ctx: &Context<'_>) -> Option<Operator> {
        let path = self.required_path(ctx);
        let format = path
            .as_ref()
            .and_then(|(p, _)| self.file_format(p, &["csv", "jsonl"]));
        let header_given = self.get("header").is_some();
        let header = self.bool("header", true);
        if header_given && format == Some("jsonl") {
            let pos = self.positions["header"];
            self.err(pos, "header", "only applies to CSV files", None);
        }
        let disorder_ms = self.duration_ms("disorder").map_or(0, |(v, _)| v);
        let (schema, time_field) = self.source_schema(ctx, "a file source")?;
        let (_, path) = path?;
        let format = match format? {
            "csv" => FileFormatName::Csv,
            _ => FileFormatName::JsonLines,
        };
        Some(Operator::FileSource(FileSourceSettings {
            path,
            format,
            header,
            disorder_ms,
            schema,
            time_field,
        }))
    }

    /// The `schema` setting (a schema name or an inline map), which `what` needs.
    fn required_schema(&mut self, ctx: &Context<'_>, what: &str) -> Option<EventSchema> {
        match self.get("schema") {
            Some(node) => {
                let field = format!("node \"{}\": field \"schema\"", self.node);
                let s = schema_value(self.r, node, ctx.schemas, &field);
                if s.is_none() {
                    self.broken = true;
                }
                s
            }
            None => {
                self.missing(
                    "schema",
                    &format!("{what} needs `schema:` (a schema name or an inline map)"),
                );
                None
            }
        }
    }

    /// The `schema` and `time_field` (default `ts`, a `timestamp_ms` field) of a source that
    /// reads records (`what`: "a file source", ...).
    fn source_schema(&mut self, ctx: &Context<'_>, what: &str) -> Option<(EventSchema, String)> {
        let time_field = self.string("time_field").unwrap_or_else(|| "ts".to_owned());
        let schema = self.required_schema(ctx, what);
        let schema = schema?;
        match schema.field_type(&time_field) {
            Some(FieldType::TimestampMs) => {}
            Some(t) => {
                let pos = self
                    .positions
                    .get("time_field")
                    .copied()
                    .unwrap_or(self.positions["schema"]);
                self.err(
                    pos,
                    "time_field",
                    format!("\"{time_field}\" has type {t}, not timestamp_ms"),
                    None,
                );
            }
            None => {
                let pos = self
                    .positions
                    .get("time_field")
                    .copied()
                    .unwrap_or(self.positions["schema"]);
                let hint = match did_you_mean(&time_field, schema.names()) {
                    Some(m) => format!("did you mean \"{m}\"?"),
                    None => format!(
                        "the schema's fields are: {}",
                        schema.names().collect::<Vec<_>>().join(", ")
                    ),
                };
                self.err(
                    pos,
                    "time_field",
                    format!("the schema has no field \"{time_field}\""),
                    Some(hint),
                );
            }
        }
        Some((schema, time_field))
    }

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

    /// Reports each of `names` that is set, with `why` it does not apply to this node.
    fn reject_settings(&mut self, names: &[&str], why: &str) {
        for &name in names {
            if let Some((k, _)) = self.entries.iter().find(|(k, _)| k.name == name) {
                let pos = k.pos;
                self.err(pos, name, why, None);
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

    fn kafka_source(&mut self, ctx: &Context<'_>) -> Option<Operator> {
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
        let (schema, time_field) = self.source_schema(ctx, "a kafka source")?;
        Some(Operator::KafkaSource(KafkaSourceSettings {
            topic: topic?,
            format: format?,
            group,
            brokers,
            disorder_ms,
            schema,
            time_field,
        }))
    }

    fn kafka_sink(&mut self) -> Option<Operator> {
        self.reject_settings(
            &["schema", "time_field", "disorder", "group"],
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
        Some(Operator::KafkaSink(KafkaSinkSettings {
            topic: topic?,
            format: format?,
            key,
            brokers,
        }))
    }

    fn file_sink(&mut self, ctx: &Context<'_>) -> Option<Operator> {
        self.reject_settings(
            &["schema", "time_field", "header", "disorder"],
            "only applies to a file source (a file node without inputs)",
        );
        let (p, path) = self.required_path(ctx)?;
        let format = match self.file_format(&p, &["csv", "jsonl", "parquet"])? {
            "csv" => SinkFormat::Csv,
            "jsonl" => SinkFormat::JsonLines,
            _ => SinkFormat::Parquet,
        };
        Some(Operator::FileSink { path, format })
    }

    fn filter(&mut self) -> Option<Operator> {
        match self.string("where") {
            Some(p) if !p.trim().is_empty() => Some(Operator::Filter { predicate: p }),
            Some(_) => {
                let pos = self.positions["where"];
                self.err(pos, "where", "must not be empty", None);
                None
            }
            None => {
                self.missing("where", "add `where: \"<SQL boolean expression>\"`");
                None
            }
        }
    }

    fn map(&mut self) -> Option<Operator> {
        let fields = match self.get("fields") {
            None => {
                self.missing("fields", "add `fields: { name: \"<SQL expression>\" }`");
                Vec::new()
            }
            Some(node) => match &node.value {
                Value::Map(entries) if !entries.is_empty() => {
                    let mut out = Vec::new();
                    for (k, v) in entries {
                        match v.as_scalar() {
                            Some(expr) if !expr.trim().is_empty() => {
                                self.positions.insert(format!("fields.{}", k.name), v.pos);
                                out.push((k.name.clone(), expr.to_owned()));
                            }
                            _ => self.err(
                                v.pos,
                                "fields",
                                format!(
                                    "\"{}\" must be an SQL expression, not {}",
                                    k.name,
                                    v.shape()
                                ),
                                None,
                            ),
                        }
                    }
                    out
                }
                _ => {
                    self.err(
                        node.pos,
                        "fields",
                        format!(
                            "expected a non-empty map of name -> SQL expression, not {}",
                            node.shape()
                        ),
                        None,
                    );
                    Vec::new()
                }
            },
        };
        let drop = self.field_list("drop");
        Some(Operator::Map { fields, drop })
    }

    fn window(&mut self) -> Option<Operator> {
        let key = self.field_list("key");
        let size = self.duration_ms("size");
        if size.is_none() && !self.positions.contains_key("size") {
            self.missing("size", "add `size: 1m` (a duration)");
        }
        let slide = self.duration_ms("slide");
        let allowed_lateness_ms = self.duration_ms("allowed_lateness").map_or(0, |(v, _)| v);
        let value = self.string("value").unwrap_or_else(|| "value".to_owned());
        let time_field = self.string("time_field").unwrap_or_default();
        let aggregates = self.aggregates(
            &value,
            AGGREGATE_FUNCTIONS,
            "e.g. `aggregates: [count, mean, max]`",
        );
        let (size_ms, size_pos) = size?;
        if size_ms == 0 {
            self.err(size_pos, "size", "must be longer than 0ms", None);
        }
        let slide_ms = match slide {
            None => size_ms,
            Some((s, pos)) => {
                if s == 0 || s > size_ms || size_ms % s != 0 {
                    self.err(
                        pos,
                        "slide",
                        format!("{s}ms does not divide the window size {size_ms}ms"),
                        Some("the slide must be > 0, at most `size`, and divide it (size 1m, slide 10s)".into()),
                    );
                }
                s
            }
        };
        Some(Operator::Window(WindowSettings {
            key,
            size_ms,
            slide_ms,
            allowed_lateness_ms,
            time_field,
            aggregates,
        }))
    }

    fn detect(&mut self) -> Option<Operator> {
        let key = self.field_list("key");
        let value = self.string("value").unwrap_or_else(|| "value".to_owned());
        let emit_all = self.choice("emit", &["exceptions", "all"]) == Some("all");
        let method = self.choice("method", &["threshold", "zscore"]);
        if method.is_none() && !self.positions.contains_key("method") {
            self.missing(
                "method",
                "add `method: zscore` or `method: threshold` with `min`/`max`",
            );
        }
        let min = self.f64("min");
        let max = self.f64("max");
        let threshold = self.f64("threshold");
        let min_samples = self.get("min_samples").is_some();
        let min_samples_value = self.u64("min_samples", 30);
        let misplaced = |names: &[&str], this: &mut Self, method: &str| {
            for n in names {
                if let Some(pos) = this
                    .entries
                    .iter()
                    .find(|(k, _)| k.name == *n)
                    .map(|(k, _)| k.pos)
                {
                    this.err(pos, n, format!("does not apply to method {method}"), None);
                }
            }
        };
        match method? {
            "threshold" => {
                misplaced(&["threshold", "min_samples"], self, "threshold");
                let _ = min_samples;
                if min.is_none() && max.is_none() {
                    let pos = self.positions["method"];
                    self.err(pos, "method", "threshold needs `min`, `max` or both", None);
                }
                if let (Some(lo), Some(hi)) = (min, max)
                    && lo > hi
                {
                    let pos = self.positions["min"];
                    self.err(pos, "min", format!("{lo} is greater than max {hi}"), None);
                }
                Some(Operator::Detect(DetectSettings {
                    key,
                    value,
                    method: DetectMethod::Threshold { min, max },
                    emit_all,
                }))
            }
            _ => {
                misplaced(&["min", "max"], self, "zscore");
                let threshold = match threshold {
                    None => 4.0,
                    Some(t) if t > 0.0 => t,
                    Some(t) => {
                        let pos = self.positions["threshold"];
                        self.err(
                            pos,
                            "threshold",
                            format!("must be greater than 0, got {t}"),
                            None,
                        );
                        t
                    }
                };
                Some(Operator::Detect(DetectSettings {
                    key,
                    value,
                    method: DetectMethod::ZScore {
                        threshold,
                        min_samples: min_samples_value,
                    },
                    emit_all,
                }))
            }
        }
    }

    fn infer(&mut self, ctx: &Context<'_>) -> Option<Operator> {
        let key = self.field_list("key");
        let value = self.string("value").unwrap_or_else(|| "value".to_owned());
        let emit_all = self.choice("emit", &["exceptions", "all"]) == Some("all");
        let threshold = self.f64("threshold");
        if let Some(t) = threshold.filter(|t| *t <= 0.0) {
            let pos = self.positions["threshold"];
            self.err(
                pos,
                "threshold",
                format!("must be greater than 0, got {t}"),
                None,
            );
        }
        let (model_text, model) = match self.scalar("model") {
            Some((text, pos)) => {
                let resolved = resolve(ctx.dir, text);
                // A model that cannot be loaded is reported here, with the position, rather
                // than when the edge starts.
                let checked = load_model(&resolved);
                if let Err(message) = checked {
                    self.err(
                        pos,
                        "model",
                        message,
                        Some("train one with `edgeflow train` (see the README)".into()),
                    );
                }
                (text.to_owned(), resolved)
            }
            None => {
                self.missing("model", "add `model: <file written by edgeflow train>`");
                return None;
            }
        };
        Some(Operator::Infer(InferSettings {
            key,
            value,
            model_text,
            model,
            threshold,
            emit_all,
            time_field: String::new(),
        }))
    }

    fn table(&mut self) -> Operator {
        let name = match self.scalar("name") {
            None => {
                let kind_pos = self.entries.iter().find(|(k, _)| k.name == "kind");
                if let Some((_, kind)) = kind_pos
                    && SYSTEM_TABLE_NAMES.contains(&self.node)
                {
                    self.err(
                        kind.pos,
                        "name",
                        format!("\"{}\" is the name of a system table", self.node),
                        Some("give the table another `name:`".into()),
                    );
                }
                self.node.to_owned()
            }
            Some((n, pos)) if SYSTEM_TABLE_NAMES.contains(&n) => {
                self.err(
                    pos,
                    "name",
                    format!("\"{n}\" is the name of a system table"),
                    Some("choose a name that does not clash with edgeflow_nodes, edgeflow_edges, edgeflow_topics or edgeflow_tables".into()),
                );
                n.to_owned()
            }
            Some((n, pos)) => {
                let valid = n
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    self.err(
                        pos,
                        "name",
                        format!("\"{n}\" is not an SQL table name"),
                        Some("use letters, digits and '_', not starting with a digit".into()),
                    );
                }
                n.to_owned()
            }
        };
        Operator::Table {
            name,
            changelog: false,
        }
    }

    /// The required `aggregates` list: each `fn` (over `value`) or `fn(field)`, `fn` one of
    /// `functions`, no output column twice.
    fn aggregates(
        &mut self,
        value: &str,
        functions: &[&str],
        example: &str,
    ) -> Vec<AggregateSetting> {
        let mut aggregates: Vec<AggregateSetting> = Vec::new();
        match self.list("aggregates") {
            None if !self.positions.contains_key("aggregates") => {
                self.missing("aggregates", &format!("add {example}"))
            }
            None => {}
            Some(items) if items.is_empty() => {
                let pos = self.positions["aggregates"];
                self.err(
                    pos,
                    "aggregates",
                    "needs at least one aggregate",
                    Some(example.to_owned()),
                );
            }
            Some(items) => {
                for (text, pos) in items {
                    match parse_function(&text, value, functions) {
                        Ok(a) if aggregates.iter().any(|b| b.output == a.output) => self.err(
                            pos,
                            "aggregates",
                            format!(
                                "\"{text}\" is listed twice (output column \"{}\")",
                                a.output
                            ),
                            None,
                        ),
                        Ok(a) => aggregates.push(a),
                        Err((msg, hint)) => self.err(pos, "aggregates", msg, hint),
                    }
                }
            }
        }
        aggregates
    }

    fn aggregate(&mut self) -> Option<Operator> {
        let key = self.field_list("key");
        let size_ms = match self.duration_ms("size") {
            Some((0, pos)) => {
                self.err(
                    pos,
                    "size",
                    "must be longer than 0ms",
                    Some("omit `size` for running totals".into()),
                );
                None
            }
            other => other.map(|(ms, _)| ms),
        };
        let allowed_lateness_ms = match self.duration_ms("allowed_lateness") {
            Some((_, pos)) if size_ms.is_none() => {
                self.err(
                    pos,
                    "allowed_lateness",
                    "only applies to windows (with `size`); running totals take every row",
                    None,
                );
                0
            }
            other => other.map_or(0, |(ms, _)| ms),
        };
        let value = self.string("value").unwrap_or_else(|| "value".to_owned());
        let identity = self.field_list("identity");
        let lookup = self.string("lookup");
        let time_field = self.string("time_field").unwrap_or_default();
        let aggregates = self.aggregates(
            &value,
            VIEW_AGGREGATE_FUNCTIONS,
            "e.g. `aggregates: [count, sum(count), max(max)]`",
        );
        Some(Operator::Aggregate(AggregateViewSettings {
            key,
            size_ms,
            allowed_lateness_ms,
            aggregates,
            identity,
            lookup,
            time_field,
        }))
    }

    fn reference(&mut self, ctx: &Context<'_>) -> Option<Operator> {
        let path = self.required_path(ctx);
        let format = path
            .as_ref()
            .and_then(|(p, _)| self.file_format(p, &["csv", "jsonl"]));
        let header = self.bool("header", true);
        let reload_ms = match self.duration_ms("reload") {
            None => 1000,
            Some((0, pos)) => {
                self.err(pos, "reload", "must be longer than 0ms", None);
                1000
            }
            Some((ms, _)) => ms,
        };
        let schema = self.required_schema(ctx, "a reference");
        let key = self.field_list("key");
        let schema = schema?;
        if key.is_empty() && !self.positions.contains_key("key") {
            self.missing("key", "add `key: [device]`: the fields a lookup joins on");
        }
        for (i, k) in key.iter().enumerate() {
            if schema.field_type(k).is_none() {
                let pos = self.positions[&format!("key[{i}]")];
                self.err(
                    pos,
                    "key",
                    format!("the schema has no field \"{k}\""),
                    Some(match did_you_mean(k, schema.names()) {
                        Some(m) => format!("did you mean \"{m}\"?"),
                        None => format!(
                            "fields are: {}",
                            schema.names().collect::<Vec<_>>().join(", ")
                        ),
                    }),
                );
            }
        }
        let (_, path) = path?;
        let format = match format? {
            "csv" => FileFormatName::Csv,
            _ => FileFormatName::JsonLines,
        };
        Some(Operator::Reference(ReferenceSettings {
            source: ReferenceSource::File {
                path,
                format,
                header,
            },
            schema,
            key,
            reload_ms,
        }))
    }

    fn stdout(&mut self) -> Option<Operator> {
        let table_format = self.choice("format", &["table", "jsonl"]) == Some("table");
        Some(Operator::Stdout { table_format })
    }
}

/// Parses `fn` (over `value`) or `fn(field)`.
/// Parses `fn` (over `value`) or `fn(field)`, `fn` one of `functions`.
fn parse_function(
    text: &str,
    value: &str,
    functions: &[&str],
) -> Result<AggregateSetting, (String, Option<String>)> {
    let text = text.trim();
    let (func, field, explicit) = match text.split_once('(') {
        None => (text, value, false),
        Some((f, rest)) => match rest.strip_suffix(')') {
            Some(field) if !field.trim().is_empty() => (f.trim(), field.trim(), true),
            _ => {
                return Err((
                    format!("invalid aggregate \"{text}\""),
                    Some("write `fn` or `fn(field)`, e.g. `max(value)`".into()),
                ));
            }
        },
    };
    if !functions.contains(&func) {
        let hint = Some(format!("functions are: {}", functions.join(", ")));
        return Err(match did_you_mean(func, functions.iter().copied()) {
            Some(m) => (
                format!("unknown aggregate function \"{func}\"; did you mean \"{m}\"?"),
                hint,
            ),
            None => (format!("unknown aggregate function \"{func}\""), hint),
        });
    }
    Ok(AggregateSetting {
        func: func.to_owned(),
        field: field.to_owned(),
        output: if explicit {
            format!("{func}_{field}")
        } else {
            func.to_owned()
        },
    })
}

/// Parses `<integer><ms|s|m|h|d>` into milliseconds; the error is a hint.
pub fn parse_duration_ms(text: &str) -> Result<i64, String> {
    let t = text.trim();
    let digits = t.chars().take_while(char::is_ascii_digit).count();
    let (num, unit) = t.split_at(digits);
    let factor: i64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "" if !num.is_empty() => {
            return Err(format!(
                "{DURATION_HINT}; a plain number has no unit: write \"{num}ms\" or \"{num}s\""
            ));
        }
        _ => return Err(DURATION_HINT.to_owned()),
    };
    num.parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .ok_or_else(|| DURATION_HINT.to_owned())
}

/// Parses `<number>/s|/m|/h` or a bare number (per second) into events per second.
pub fn parse_rate(text: &str) -> Option<f64> {
    let t = text.trim();
    let (num, per) = match t.split_once('/') {
        None => (t, 1.0),
        Some((n, "s")) => (n, 1.0),
        Some((n, "m")) => (n, 60.0),
        Some((n, "h")) => (n, 3600.0),
        Some(_) => return None,
    };
    let n: f64 = num.trim().parse().ok()?;
    (n.is_finite() && n > 0.0).then_some(n / per)
}

/// Parses RFC 3339 text or integer milliseconds.
fn parse_start(text: &str) -> Option<i64> {
    if let Ok(ms) = text.trim().parse::<i64>() {
        return Some(ms);
    }
    arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(text.trim())
        .ok()
        .map(|ns| ns.div_euclid(1_000_000))
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
