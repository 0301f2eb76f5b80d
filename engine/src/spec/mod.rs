//! The pipeline file: reading YAML with positions, typing every setting, and reporting every
//! problem as a `file:line:column` [`Diagnostic`].
//!
//! Three stages (STYLE.md): [`yaml`] gives a tree whose nodes keep their positions; this module
//! and [`settings`] (with each kind's reader in [`crate::kinds`]) turn it into a
//! [`PipelineSpec`] with typed, unit-resolved settings; the [`plan`](crate::plan) checks the
//! graph, schemas and expressions.

pub mod node;
pub mod settings;
pub mod yaml;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use edgeflow_operators::schema::{EventSchema, FieldType};

use crate::kinds::NodeSettings;

pub use node::{CompressMode, Compression};
pub use settings::AggregateCall;
pub use settings::{load_model, parse_duration_ms};
pub use yaml::Pos;

/// Whether `id` can name an edge: 1-64 ASCII letters, digits, `-`, `_` and `.` (it becomes a
/// Kafka key, a header value and a directory name).
pub fn is_valid_edge_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && id != "."
        && id != ".."
}
use yaml::{Key, Node, Value};

/// One problem in a pipeline file, pointing at the offending key or value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file name as given by the user.
    pub file: String,
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
    /// What is wrong, naming the node, field and bad value.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: error: {}",
            self.file, self.line, self.column, self.message
        )?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  = help: {hint}")?;
        }
        Ok(())
    }
}

/// Every problem found in a pipeline file, in file order.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        let n = self.0.len();
        write!(f, "{n} error{}", if n == 1 { "" } else { "s" })
    }
}

impl std::error::Error for Diagnostics {}

/// Collects diagnostics for one file.
#[derive(Debug)]
pub struct Reporter {
    file: String,
    diags: Vec<Diagnostic>,
}

impl Reporter {
    /// A reporter for `file`.
    pub fn new(file: &str) -> Self {
        Reporter {
            file: file.to_owned(),
            diags: Vec::new(),
        }
    }

    /// Records a problem at `pos`.
    pub fn error(&mut self, pos: Pos, message: impl Into<String>, hint: Option<String>) {
        self.diags.push(Diagnostic {
            file: self.file.clone(),
            line: pos.line,
            column: pos.column,
            message: message.into(),
            hint,
        });
    }

    /// Whether nothing was reported.
    pub fn is_empty(&self) -> bool {
        self.diags.is_empty()
    }

    /// How many problems were reported.
    pub fn len(&self) -> usize {
        self.diags.len()
    }

    /// The diagnostics, sorted by position (stable, so same-position ones keep their order).
    pub fn finish(mut self) -> Diagnostics {
        self.diags.sort_by_key(|d| (d.line, d.column));
        Diagnostics(self.diags)
    }
}

/// Where a node runs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Placement {
    /// Next to the devices.
    Edge,
    /// In the cloud.
    Cloud,
}

impl Placement {
    /// The name used in pipeline files.
    pub fn name(self) -> &'static str {
        match self {
            Placement::Edge => "edge",
            Placement::Cloud => "cloud",
        }
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An output of a node.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum Port {
    /// The node's main output.
    Main,
    /// A window's late events.
    Late,
    /// An insight's control records.
    Control,
}

/// A reference to a node's output: `node` or `node.late`.
#[derive(Clone, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct StreamRef {
    /// The node id.
    pub node: String,
    /// Which output.
    pub port: Port,
}

impl StreamRef {
    /// The main output of `node`.
    pub fn main(node: &str) -> Self {
        StreamRef {
            node: node.to_owned(),
            port: Port::Main,
        }
    }
}

impl fmt::Display for StreamRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Port::Main => f.write_str(&self.node),
            Port::Late => write!(f, "{}.late", self.node),
            Port::Control => write!(f, "{}.control", self.node),
        }
    }
}

/// A validated pipeline file: every setting typed, units resolved, positions kept for the
/// planner's messages.
#[derive(Clone, Debug)]
pub struct PipelineSpec {
    /// The file name used in diagnostics.
    pub file: String,
    /// The pipeline name (`[a-z0-9_-]+`).
    pub pipeline: String,
    /// Free text.
    pub description: Option<String>,
    /// Named schemas.
    pub schemas: BTreeMap<String, EventSchema>,
    /// The `transport:` section.
    pub transport: TransportSpec,
    /// The `control: { nodes: [...] }` section: edge nodes the cloud may reconfigure while
    /// running (`edgeflow control`, `POST /control`), each with where it is written.
    pub control: Vec<(String, Pos)>,
    /// The nodes, in file order.
    pub nodes: Vec<NodeSpec>,
    /// Nodes left out because they have errors (only in a spec from [`parse_partial`]), with
    /// the inputs they name: the planner still checks those, and skips whatever reads a broken
    /// node instead of reporting it as unknown.
    pub broken: BTreeMap<String, Vec<(StreamRef, Pos)>>,
}

/// One node as written, with typed settings.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    /// The node id.
    pub id: String,
    /// Where the id is written.
    pub pos: Pos,
    /// The YAML kind name.
    pub kind: &'static str,
    /// Its inputs, each with the position of the reference.
    pub inputs: Vec<(StreamRef, Pos)>,
    /// The explicit placement, if any.
    pub placement: Option<Placement>,
    /// Free text.
    pub description: Option<String>,
    /// How its output crosses the edge -> cloud cut.
    pub compress: Compression,
    /// The typed settings of its kind. For a window without `time_field`, `time_field` is
    /// empty and the planner fills in the input's time field.
    pub settings: Arc<dyn NodeSettings>,
    /// Positions of settings' values by path (`"where"`, `"fields.alarm"`, `"key[1]"`,
    /// `"aggregates[2]"`, `"placement"`, `"inputs"`), for the planner's messages.
    pub positions: BTreeMap<String, Pos>,
}

impl NodeSpec {
    /// Its settings as `T`, when they are of that type.
    pub fn settings_as<T: 'static>(&self) -> Option<&T> {
        // Trait upcasting: every `NodeSettings` is `Any`.
        (self.settings.as_ref() as &dyn std::any::Any).downcast_ref()
    }

    /// The position of the setting at `path`, or of the node id.
    pub fn pos_of(&self, path: &str) -> Pos {
        self.positions.get(path).copied().unwrap_or(self.pos)
    }
}

/// Reads, parses and validates the pipeline file at `path` (environment variables from the
/// process environment; relative paths resolved against the file's directory).
pub fn load(path: &Path) -> Result<PipelineSpec, Diagnostics> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        Diagnostics(vec![Diagnostic {
            file: file.clone(),
            line: 1,
            column: 1,
            message: format!("cannot read the pipeline file: {e}"),
            hint: None,
        }])
    })?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    parse_with(&file, &text, &dir, &|name| std::env::var(name).ok())
}

/// Parses and validates pipeline text; `file_name` is used in diagnostics and its directory to
/// resolve relative paths. Variables come from the process environment.
pub fn parse_str(file_name: &str, text: &str) -> Result<PipelineSpec, Diagnostics> {
    let dir = Path::new(file_name)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    parse_with(file_name, text, &dir, &|name| std::env::var(name).ok())
}

/// Like [`parse_str`] with an explicit base directory and environment lookup.
pub fn parse_with(
    file_name: &str,
    text: &str,
    dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<PipelineSpec, Diagnostics> {
    let (spec, r) = parse_partial(file_name, text, dir, env);
    match spec {
        Some(spec) if r.is_empty() => Ok(spec),
        _ => Err(r.finish()),
    }
}

/// Parses as much as possible: the spec holds every node that validated (the others are named
/// in [`PipelineSpec::broken`]) and the reporter every problem so far, so that the planner can
/// add graph and expression problems to the same list. `None` when the file is not even a map.
pub fn parse_partial(
    file_name: &str,
    text: &str,
    dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> (Option<PipelineSpec>, Reporter) {
    let mut r = Reporter::new(file_name);
    let (root, yaml_errors) = match yaml::parse(text, env) {
        Ok(x) => x,
        Err(e) => {
            r.error(e.pos, e.message, e.hint);
            return (None, r);
        }
    };
    for e in yaml_errors {
        r.error(e.pos, e.message, e.hint);
    }
    let spec = build(&mut r, file_name, dir, &root);
    (spec, r)
}

const TOP_LEVEL: &[&str] = &[
    "pipeline",
    "description",
    "schema",
    "transport",
    "control",
    "nodes",
];

/// The optional `transport:` section: how the `edge` and `cloud` roles reach Kafka. Every
/// setting can be overridden by a flag or an `EDGEFLOW_*` variable.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TransportSpec {
    /// Kafka bootstrap servers.
    pub brokers: Option<String>,
    /// Partitions of the topics edgeflow creates.
    pub partitions: Option<u32>,
    /// An edge silent for this long stops holding back the cloud's watermark.
    pub idle_timeout_ms: Option<i64>,
    /// Bound of the edge's spool, in bytes.
    pub spool_max_bytes: Option<u64>,
    /// `block` or `drop_oldest_summaries`.
    pub spool_when_full: Option<&'static str>,
}

fn build(r: &mut Reporter, file: &str, dir: &Path, root: &Node) -> Option<PipelineSpec> {
    let Value::Map(entries) = &root.value else {
        r.error(
            root.pos,
            format!("a pipeline file must be a map, not {}", root.shape()),
            Some("start with `pipeline: <name>` and `nodes:`".into()),
        );
        return None;
    };
    let mut pipeline = None;
    let mut description = None;
    let mut schemas = BTreeMap::new();
    let mut nodes_node = None;
    let mut transport = TransportSpec::default();
    let mut control = Vec::new();
    for (key, value) in entries {
        match key.name.as_str() {
            "pipeline" => match value.as_scalar() {
                Some(name) if is_name(name, true) => pipeline = Some(name.to_owned()),
                None if value.value == Value::Poisoned => {}
                _ => r.error(
                    value.pos,
                    format!("invalid pipeline name {}", show(value)),
                    Some("use lowercase letters, digits, '_' and '-'".into()),
                ),
            },
            "description" => description = scalar_text(r, value, "description"),
            "schema" => schemas = build_schemas(r, value),
            "transport" => transport = node::build_transport(r, value),
            "control" => control = build_control(r, value),
            "nodes" => nodes_node = Some(value),
            other => unknown_key(
                r,
                key,
                &format!("unknown top-level key \"{other}\""),
                TOP_LEVEL,
            ),
        }
    }
    if pipeline.is_none() && !entries.iter().any(|(k, _)| k.name == "pipeline") {
        r.error(
            root.pos,
            "missing required key \"pipeline\"",
            Some("name the pipeline: `pipeline: my_pipeline`".into()),
        );
    }
    let mut nodes = Vec::new();
    let mut broken = BTreeMap::new();
    match nodes_node {
        None => r.error(
            root.pos,
            "missing required key \"nodes\"",
            Some("add a `nodes:` map of node id -> node".into()),
        ),
        Some(n) => match &n.value {
            Value::Map(items) if !items.is_empty() => {
                let ctx = settings::Context {
                    dir,
                    schemas: &schemas,
                };
                for (key, value) in items {
                    let before = r.len();
                    match node::build_node(r, &ctx, key, value) {
                        Ok(node) if r.len() == before => nodes.push(node),
                        Ok(node) => {
                            broken.insert(key.name.clone(), node.inputs);
                        }
                        Err(inputs) => {
                            broken.insert(key.name.clone(), inputs);
                        }
                    }
                }
            }
            _ => r.error(
                n.pos,
                format!(
                    "\"nodes\" must be a non-empty map of node id -> node, not {}",
                    n.shape()
                ),
                None,
            ),
        },
    }
    check_table_names(r, &nodes);
    Some(PipelineSpec {
        file: file.to_owned(),
        pipeline: pipeline.unwrap_or_default(),
        description,
        schemas,
        transport,
        control,
        nodes,
        broken,
    })
}

/// The top-level `control:` section: `{ nodes: [node, ...] }`.
fn build_control(r: &mut Reporter, value: &Node) -> Vec<(String, Pos)> {
    const HINT: &str =
        "write `control: { nodes: [node, ...] }` with the edge nodes the cloud may reconfigure";
    let Value::Map(entries) = &value.value else {
        r.error(
            value.pos,
            format!("\"control\" must be a map, not {}", value.shape()),
            Some(HINT.into()),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (key, node) in entries {
        if key.name != "nodes" {
            unknown_key(
                r,
                key,
                &format!("\"control\": unknown key \"{}\"", key.name),
                &["nodes"],
            );
            continue;
        }
        let Value::Seq(items) = &node.value else {
            r.error(
                node.pos,
                format!(
                    "\"control.nodes\" must be a list of node ids, not {}",
                    node.shape()
                ),
                Some(HINT.into()),
            );
            continue;
        };
        for item in items {
            match item.as_scalar() {
                Some(id) if !id.is_empty() => {
                    if out.iter().any(|(seen, _)| seen == id) {
                        r.error(
                            item.pos,
                            format!("\"control.nodes\": \"{id}\" is listed twice"),
                            Some("list each node once".into()),
                        );
                    } else {
                        out.push((id.to_owned(), item.pos));
                    }
                }
                _ if item.value == Value::Poisoned => {}
                _ => r.error(
                    item.pos,
                    format!(
                        "\"control.nodes\": expected a node id, not {}",
                        item.shape()
                    ),
                    None,
                ),
            }
        }
    }
    out
}

fn check_table_names(r: &mut Reporter, nodes: &[NodeSpec]) {
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for n in nodes {
        if let Some((name, _)) = n.settings.table() {
            if let Some(first) = seen.get(name) {
                r.error(
                    n.pos_of("name"),
                    format!(
                        "node \"{}\": table name \"{name}\" is already used by node \"{first}\"",
                        n.id
                    ),
                    Some("give one of them another `name:`".into()),
                );
            } else {
                seen.insert(name, &n.id);
            }
        }
    }
}

/// Parses a schema: a name of a top-level schema or an inline `{ field: type }` map.
pub(crate) fn schema_value(
    r: &mut Reporter,
    node: &Node,
    named: &BTreeMap<String, EventSchema>,
    what: &str,
) -> Option<EventSchema> {
    match &node.value {
        Value::Scalar(name) => match named.get(name) {
            Some(s) => Some(s.clone()),
            None => {
                let hint = match did_you_mean(name, named.keys().map(String::as_str)) {
                    Some(s) => Some(format!("did you mean \"{s}\"?")),
                    None if named.is_empty() => Some(
                        "define it under the top-level `schema:` key, or write the fields inline"
                            .into(),
                    ),
                    None => Some(format!(
                        "schemas are: {}",
                        named.keys().cloned().collect::<Vec<_>>().join(", ")
                    )),
                };
                r.error(node.pos, format!("{what}: unknown schema \"{name}\""), hint);
                None
            }
        },
        Value::Map(fields) => inline_schema(r, fields, what),
        _ => {
            r.error(
                node.pos,
                format!(
                    "{what}: a schema is a name or a map of field -> type, not {}",
                    node.shape()
                ),
                None,
            );
            None
        }
    }
}

fn inline_schema(r: &mut Reporter, fields: &[(Key, Node)], what: &str) -> Option<EventSchema> {
    let mut out = Vec::new();
    let mut ok = true;
    if fields.is_empty() {
        return Some(EventSchema::new(out));
    }
    for (key, ty) in fields {
        let type_name = ty.as_scalar().unwrap_or_default();
        match FieldType::from_name(type_name) {
            Some(t) => out.push((key.name.clone(), t)),
            None => {
                ok = false;
                let names: Vec<&str> = FieldType::ALL.iter().map(|t| t.name()).collect();
                let hint = match did_you_mean(type_name, names.iter().copied()) {
                    Some(s) => format!("did you mean \"{s}\"? types are: {}", names.join(", ")),
                    None => format!("types are: {}", names.join(", ")),
                };
                r.error(
                    ty.pos,
                    format!("{what}: field \"{}\": unknown type {}", key.name, show(ty)),
                    Some(hint),
                );
            }
        }
    }
    ok.then(|| EventSchema::new(out))
}

fn build_schemas(r: &mut Reporter, node: &Node) -> BTreeMap<String, EventSchema> {
    let mut out = BTreeMap::new();
    let Value::Map(entries) = &node.value else {
        r.error(
            node.pos,
            format!(
                "\"schema\" must be a map of schema name -> fields, not {}",
                node.shape()
            ),
            None,
        );
        return out;
    };
    for (key, value) in entries {
        let what = format!("schema \"{}\"", key.name);
        match &value.value {
            Value::Map(fields) => {
                if let Some(s) = inline_schema(r, fields, &what) {
                    out.insert(key.name.clone(), s);
                }
            }
            _ => r.error(
                value.pos,
                format!(
                    "{what}: must be a map of field -> type, not {}",
                    value.shape()
                ),
                None,
            ),
        }
    }
    out
}

fn scalar_text(r: &mut Reporter, node: &Node, what: &str) -> Option<String> {
    match &node.value {
        Value::Scalar(s) => Some(s.clone()),
        Value::Null | Value::Poisoned => None,
        _ => {
            r.error(
                node.pos,
                format!("\"{what}\" must be text, not {}", node.shape()),
                None,
            );
            None
        }
    }
}

/// Whether `s` is a valid id: `[a-z0-9_]+`, plus `-` when `dash`.
pub(crate) fn is_name(s: &str, dash: bool) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || (dash && c == '-'))
}

/// `"text"` for a scalar, else its shape.
pub(crate) fn show(node: &Node) -> String {
    match &node.value {
        Value::Scalar(s) => format!("\"{s}\""),
        _ => node.shape().to_owned(),
    }
}

/// The closest candidate to `name`: Jaro-Winkler >= 0.7 or Levenshtein <= 2.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let mut best: Option<(&str, f64)> = None;
    for c in candidates {
        if c == name {
            continue;
        }
        let jw = strsim::jaro_winkler(name, c);
        let close = jw >= 0.7 || strsim::levenshtein(name, c) <= 2.min(c.len().saturating_sub(1));
        if close && best.is_none_or(|(_, s)| jw > s) {
            best = Some((c, jw));
        }
    }
    best.map(|(c, _)| c)
}

/// Reports an unknown key with "did you mean" or the list of valid keys.
pub(crate) fn unknown_key(r: &mut Reporter, key: &Key, message: &str, valid: &[&str]) {
    match did_you_mean(&key.name, valid.iter().copied()) {
        Some(s) => r.error(key.pos, format!("{message}; did you mean \"{s}\"?"), None),
        None => r.error(
            key.pos,
            message,
            Some(format!("valid keys are: {}", valid.join(", "))),
        ),
    }
}

/// A path resolved against the pipeline file's directory.
pub(crate) fn resolve(dir: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() || dir.as_os_str().is_empty() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

#[cfg(test)]
mod tests;
