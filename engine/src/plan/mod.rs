//! The plan: a validated spec turned into a typed graph in topological order, each node placed
//! at the edge or in the cloud, with the edge -> cloud cut as named topics. Pure data: it can be
//! printed ([`Plan::render_text`], dot, mermaid) and tested without running anything.

mod insight;
mod render;

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use edgeflow_operators::OperatorError;
use edgeflow_operators::expr::{CompiledFilter, CompiledMap};
use edgeflow_operators::infer::InferOperator;
use edgeflow_operators::schema::{EventSchema, FieldType};

use crate::spec::{self, Diagnostics, NodeSpec, PipelineSpec, Pos, Reporter, did_you_mean};
pub use crate::spec::{
    AggregateSetting, AggregateViewSettings, DetectMethod, DetectSettings, FileFormatName,
    FileSourceSettings, GeneratorSettings, InferSettings, KafkaFormat, KafkaSinkSettings,
    KafkaSourceSettings, Operator, Placement, Port, ReferenceSettings, ReferenceSource, SinkFormat,
    StreamRef, WindowSettings,
};
pub use insight::{INCIDENTS_TABLE, words_of};

/// A compiled pipeline.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The pipeline name.
    pub pipeline: String,
    /// The nodes, in topological order (file order among independent nodes).
    pub nodes: Vec<PlanNode>,
    /// Streams crossing from the edge to the cloud, in topological order of their producer.
    pub topics: Vec<CutTopic>,
    /// The `transport:` section, for the `edge` and `cloud` roles.
    pub transport: crate::spec::TransportSpec,
    /// The control channel (cloud -> edge), when some edge node is controllable.
    pub control: Option<ControlPlan>,
}

/// The control arcs of a plan: the topics control records and their acknowledgements travel
/// on, and the edge nodes they may reconfigure.
#[derive(Clone, Debug, PartialEq)]
pub struct ControlPlan {
    /// `<pipeline>.control`: control records, cloud -> every edge.
    pub topic: String,
    /// `<pipeline>.control.acks`: acknowledgements, edges -> cloud.
    pub acks_topic: String,
    /// The controllable edge nodes, in plan order.
    pub targets: Vec<ControlTarget>,
    /// The pipeline file's directory: model paths of `swap_model` records are relative to it.
    pub base_dir: PathBuf,
}

/// An edge node the cloud may reconfigure.
#[derive(Clone, Debug, PartialEq)]
pub struct ControlTarget {
    /// The node id.
    pub node: String,
    /// The actions its kind supports (see [`supported_actions`]).
    pub actions: &'static [&'static str],
    /// Who may send it records: `control` (the top-level section, i.e. people through
    /// `edgeflow control` / `POST /control`) and/or the `insight` nodes that list it.
    pub issuers: Vec<String>,
}

impl ControlPlan {
    /// The target for `node`, if it is controllable.
    pub fn target(&self, node: &str) -> Option<&ControlTarget> {
        self.targets.iter().find(|t| t.node == node)
    }
}

/// A request, somewhere in a pipeline file, to make an edge node controllable: the node id,
/// where it is written, and who asks (`control` for the top-level section, else the id of the
/// `insight` node whose `control:` list names it).
#[derive(Clone, Debug, PartialEq)]
pub struct ControlRequest {
    /// The node to control.
    pub node: String,
    /// Where it is named.
    pub pos: Pos,
    /// Who asks.
    pub issuer: String,
}

/// The control actions a node kind supports at run time (empty: not controllable).
///
/// - `infer`: `set_threshold`, `swap_model`, `enable`, `disable`;
/// - `detect`: `set_threshold` (the z-score threshold, or a threshold detector's `max`),
///   `enable`, `disable`;
/// - `window`: `set_window_size` (tumbling windows only), `enable`, `disable`;
/// - `generator`: `set_sampling` (keep one reading in N), `enable`, `disable`.
pub fn supported_actions(op: &Operator) -> &'static [&'static str] {
    match op {
        Operator::Infer(_) => &["set_threshold", "swap_model", "enable", "disable"],
        Operator::Detect(_) => &["set_threshold", "enable", "disable"],
        Operator::Window(w) if w.slide_ms == w.size_ms => &["set_window_size", "enable", "disable"],
        Operator::Window(_) => &["enable", "disable"],
        Operator::Generator(_) => &["set_sampling", "enable", "disable"],
        _ => &[],
    }
}

/// Every control request of a spec: the top-level `control: { nodes }` section (issuer
/// `control`). An `insight` node's `control:` list adds its own requests here, with the
/// insight's id as issuer, so that both reach the same [`ControlPlan`] (the insight's own
/// checks report its bad targets; [`control_plan`] reports those of the top-level section).
pub fn control_requests(spec: &PipelineSpec) -> Vec<ControlRequest> {
    let mut requests: Vec<ControlRequest> = spec
        .control
        .iter()
        .map(|(node, pos)| ControlRequest {
            node: node.clone(),
            pos: *pos,
            issuer: "control".to_owned(),
        })
        .collect();
    for node in &spec.nodes {
        if let Operator::Insight(settings) = &node.operator {
            for (i, rule) in settings.control.iter().enumerate() {
                requests.push(ControlRequest {
                    node: rule.node.clone(),
                    pos: node.pos_of(&format!("control[{i}].node")),
                    issuer: node.id.clone(),
                });
            }
        }
    }
    requests
}

/// Checks control requests against the typed nodes and builds the control plan (`None`
/// without requests).
fn control_plan(
    r: &mut Reporter,
    spec: &PipelineSpec,
    nodes: &[PlanNode],
    base_dir: &Path,
) -> Option<ControlPlan> {
    let requests = control_requests(spec);
    if requests.is_empty() {
        return None;
    }
    let mut targets: Vec<ControlTarget> = Vec::new();
    for request in requests {
        // An insight's own checks report its bad targets, with the action it names; here
        // they are only left out.
        if request.issuer != "control"
            && !nodes.iter().any(|n| {
                n.id == request.node
                    && n.placement == Placement::Edge
                    && !supported_actions(&n.operator).is_empty()
            })
        {
            continue;
        }
        let Some(node) = nodes.iter().find(|n| n.id == request.node) else {
            if spec.broken.contains_key(&request.node) {
                continue;
            }
            let ids = nodes.iter().map(|n| n.id.as_str());
            let hint = match did_you_mean(&request.node, ids) {
                Some(m) => format!("did you mean \"{m}\"?"),
                None => format!(
                    "controllable edge nodes are: {}",
                    nodes
                        .iter()
                        .filter(|n| n.placement == Placement::Edge
                            && !supported_actions(&n.operator).is_empty())
                        .map(|n| n.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            r.error(
                request.pos,
                format!(
                    "{}: control target \"{}\" is not a node",
                    issuer_text(&request.issuer),
                    request.node
                ),
                Some(hint),
            );
            continue;
        };
        if node.placement != Placement::Edge {
            r.error(
                request.pos,
                format!(
                    "{}: control target \"{}\" runs in the cloud; control records reconfigure edge nodes",
                    issuer_text(&request.issuer),
                    node.id
                ),
                Some(format!(
                    "name an edge node, or place \"{}\" at the edge (`placement: edge`)",
                    node.id
                )),
            );
            continue;
        }
        let actions = supported_actions(&node.operator);
        if actions.is_empty() {
            r.error(
                request.pos,
                format!(
                    "{}: control target \"{}\" is a {} node, which takes no control records",
                    issuer_text(&request.issuer),
                    node.id,
                    node.kind
                ),
                Some("controllable kinds are: infer, detect, window, generator".into()),
            );
            continue;
        }
        match targets.iter_mut().find(|t| t.node == node.id) {
            Some(t) => {
                if !t.issuers.contains(&request.issuer) {
                    t.issuers.push(request.issuer);
                }
            }
            None => targets.push(ControlTarget {
                node: node.id.clone(),
                actions,
                issuers: vec![request.issuer],
            }),
        }
    }
    let position: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    targets.sort_by_key(|t| position.get(t.node.as_str()).copied());
    Some(ControlPlan {
        topic: format!("{}.control", spec.pipeline),
        acks_topic: format!("{}.control.acks", spec.pipeline),
        targets,
        base_dir: base_dir.to_path_buf(),
    })
}

fn issuer_text(issuer: &str) -> String {
    if issuer == "control" {
        "\"control.nodes\"".to_owned()
    } else {
        format!("node \"{issuer}\": field \"control\"")
    }
}

/// One node of the plan.
#[derive(Clone, Debug)]
pub struct PlanNode {
    /// The node id.
    pub id: String,
    /// The YAML kind name.
    pub kind: &'static str,
    /// Where it runs.
    pub placement: Placement,
    /// The streams it reads.
    pub inputs: Vec<StreamRef>,
    /// Its validated settings.
    pub operator: Operator,
    /// Main output schema (for sinks: their input's schema).
    pub schema: EventSchema,
    /// Event-time field of the main output; `None` for sinks.
    pub time_field: Option<String>,
}

impl PlanNode {
    /// Whether the node has no output stream.
    pub fn is_sink(&self) -> bool {
        self.operator.is_sink()
    }
}

/// A stream produced at the edge and read in the cloud: one topic.
#[derive(Clone, Debug, PartialEq)]
pub struct CutTopic {
    /// `<pipeline>.<node>` or `<pipeline>.<node>.late`.
    pub name: String,
    /// The stream carried.
    pub stream: StreamRef,
    /// Its schema.
    pub schema: EventSchema,
    /// Its event-time field.
    pub time_field: String,
    /// The cloud nodes reading it.
    pub consumers: Vec<String>,
    /// How its frames are encoded (the producing node's `compress`).
    pub compress: crate::spec::Compression,
}

impl Plan {
    /// The node with this id.
    pub fn node(&self, id: &str) -> Option<&PlanNode> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// The schema and time field of a stream, if it exists and carries events.
    pub fn stream(&self, stream: &StreamRef) -> Option<(&EventSchema, &str)> {
        let node = self.node(&stream.node)?;
        match (stream.port, &node.operator, &node.time_field) {
            (Port::Main, _, Some(tf)) => Some((&node.schema, tf)),
            (Port::Late, Operator::Window(w), _) => {
                let input = node.inputs.first()?;
                let (schema, _) = self.stream(input)?;
                Some((schema, &w.time_field))
            }
            (Port::Control, Operator::Insight(_), _) => {
                static CONTROL: std::sync::OnceLock<EventSchema> = std::sync::OnceLock::new();
                Some((
                    CONTROL.get_or_init(edgeflow_operators::control::control_schema),
                    "apply_at",
                ))
            }
            _ => None,
        }
    }

    /// The topic a stream is published on, if it crosses the cut.
    pub fn topic(&self, stream: &StreamRef) -> Option<&CutTopic> {
        self.topics.iter().find(|t| t.stream == *stream)
    }
}

/// Loads the pipeline file at `path` and compiles it, reporting spec, graph and expression
/// problems together (environment from the process, paths relative to the file).
pub fn load_plan(path: &Path) -> Result<Plan, Diagnostics> {
    let file = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            let mut r = Reporter::new(&file);
            r.error(
                Pos { line: 1, column: 1 },
                format!("cannot read the pipeline file: {e}"),
                None,
            );
            return Err(r.finish());
        }
    };
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    plan_with(&file, &text, &dir, &|name| std::env::var(name).ok())
}

/// Parses and compiles pipeline text, collecting every problem of every stage.
pub fn plan_with(
    file_name: &str,
    text: &str,
    dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Plan, Diagnostics> {
    let (spec, mut r) = spec::parse_partial(file_name, text, dir, env);
    let plan = spec.and_then(|s| compile_into(&s, &mut r, dir));
    match plan {
        Some(plan) if r.is_empty() => Ok(plan),
        _ => Err(r.finish()),
    }
}

/// Which kind a port other than the main output belongs to.
struct PortOwner {
    /// Whether an operator has the port.
    has_port: fn(&Operator) -> bool,
    /// The kind that has it.
    kind: &'static str,
    /// The port's name in messages.
    port: &'static str,
}

fn port_owner(port: Port) -> Option<PortOwner> {
    match port {
        Port::Main => None,
        Port::Late => Some(PortOwner {
            has_port: |op| matches!(op, Operator::Window(_)),
            kind: "window",
            port: "late",
        }),
        Port::Control => Some(PortOwner {
            has_port: |op| matches!(op, Operator::Insight(_)),
            kind: "insight",
            port: "control",
        }),
    }
}

/// The topic name of a stream.
pub fn topic_name(pipeline: &str, stream: &StreamRef) -> String {
    format!("{pipeline}.{stream}")
}

/// The placement a kind gets when none is written and its inputs are at `inputs`.
pub fn default_placement(op: &Operator, inputs: impl IntoIterator<Item = Placement>) -> Placement {
    match op {
        Operator::Generator(_)
        | Operator::FileSource(_)
        | Operator::KafkaSource(_)
        | Operator::Detect(_)
        | Operator::Infer(_)
        | Operator::Window(_) => Placement::Edge,
        Operator::Table { .. }
        | Operator::Aggregate(_)
        | Operator::Reference(_)
        | Operator::Insight(_) => Placement::Cloud,
        Operator::Filter { .. }
        | Operator::Map { .. }
        | Operator::FileSink { .. }
        | Operator::KafkaSink(_)
        | Operator::Stdout { .. } => {
            if inputs.into_iter().any(|p| p == Placement::Cloud) {
                Placement::Cloud
            } else {
                Placement::Edge
            }
        }
    }
}

/// What the planner knows about a stream.
#[derive(Clone)]
struct StreamInfo {
    schema: EventSchema,
    time_field: String,
}

/// Checks the graph, schemas, expressions and placements of `spec` and builds the plan.
pub fn compile(spec: &PipelineSpec) -> Result<Plan, Diagnostics> {
    let mut r = Reporter::new(&spec.file);
    let dir = Path::new(&spec.file)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    match compile_into(spec, &mut r, &dir) {
        Some(plan) if r.is_empty() => Ok(plan),
        _ => Err(r.finish()),
    }
}

/// Compiles `spec`, adding problems to `r`; `None` when any problem was found.
fn compile_into(spec: &PipelineSpec, r: &mut Reporter, dir: &Path) -> Option<Plan> {
    let before = r.len();
    let index: HashMap<&str, usize> = spec
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();

    // 1. Resolve inputs.
    let mut inputs: Vec<Vec<(StreamRef, Pos, usize)>> = Vec::with_capacity(spec.nodes.len());
    let mut broken = vec![false; spec.nodes.len()];
    for (i, node) in spec.nodes.iter().enumerate() {
        let mut resolved = Vec::new();
        for (stream, pos) in &node.inputs {
            match index.get(stream.node.as_str()) {
                None if spec.broken.contains_key(&stream.node) => broken[i] = true,
                None => {
                    broken[i] = true;
                    unknown_input(r, spec, &node.id, stream, *pos);
                }
                Some(&j) => {
                    let producer = &spec.nodes[j];
                    if producer.operator.is_sink() {
                        broken[i] = true;
                        r.error(
                            *pos,
                            format!(
                                "node \"{}\": input \"{stream}\" is a {} sink, which has no output",
                                node.id, producer.kind
                            ),
                            None,
                        );
                    } else if matches!(producer.operator, Operator::Reference(_)) {
                        broken[i] = true;
                        r.error(
                            *pos,
                            format!(
                                "node \"{}\": input \"{stream}\" is a reference table, which is not a stream",
                                node.id
                            ),
                            Some(format!(
                                "read it from an aggregate with `lookup: {}`",
                                producer.id
                            )),
                        );
                    } else if let Some(owner) = port_owner(stream.port)
                        .filter(|owner| !(owner.has_port)(&producer.operator))
                    {
                        broken[i] = true;
                        r.error(
                            *pos,
                            format!(
                                "node \"{}\": input \"{stream}\": only {} nodes have a {} output, \"{}\" is a {}",
                                node.id, owner.kind, owner.port, producer.id, producer.kind
                            ),
                            Some(format!("read \"{}\" instead", producer.id)),
                        );
                    } else {
                        resolved.push((stream.clone(), *pos, j));
                    }
                }
            }
        }
        inputs.push(resolved);
    }
    for (id, node_inputs) in &spec.broken {
        for (stream, pos) in node_inputs {
            let known =
                index.contains_key(stream.node.as_str()) || spec.broken.contains_key(&stream.node);
            if !known {
                unknown_input(r, spec, id, stream, *pos);
            }
        }
    }

    // 2. Order the graph; report cycles.
    let order = topological_order(r, spec, &inputs, &mut broken);

    // 3. Schemas, time fields, expressions, placement, in order.
    let mut streams: HashMap<StreamRef, StreamInfo> = HashMap::new();
    // Streams of (row, diff) changes rather than events: an aggregate's output.
    let mut changelogs: HashSet<StreamRef> = HashSet::new();
    let mut placements: Vec<Option<Placement>> = vec![None; spec.nodes.len()];
    let mut nodes = Vec::new();
    for &i in &order {
        let node = &spec.nodes[i];
        let ins = &inputs[i];
        if broken[i] || ins.iter().any(|(s, _, _)| !streams.contains_key(s)) {
            continue;
        }
        let input_placements: Vec<Placement> =
            ins.iter().filter_map(|(_, _, j)| placements[*j]).collect();
        let placement = node
            .placement
            .unwrap_or_else(|| default_placement(&node.operator, input_placements.iter().copied()));
        placements[i] = Some(placement);
        if placement == Placement::Edge && matches!(node.operator, Operator::Insight(_)) {
            r.error(
                node.pos_of("placement"),
                format!("node \"{}\": an insight runs in the cloud", node.id),
                Some("remove `placement: edge`".into()),
            );
            continue;
        }
        if placement == Placement::Edge {
            for (stream, pos, j) in ins {
                if placements[*j] == Some(Placement::Cloud) {
                    r.error(
                        *pos,
                        format!(
                            "node \"{}\" runs at the edge but reads \"{stream}\", which runs in the cloud",
                            node.id
                        ),
                        Some(format!(
                            "only control arcs may flow cloud -> edge; place \"{}\" in the cloud or \"{}\" at the edge",
                            node.id, spec.nodes[*j].id
                        )),
                    );
                }
            }
        }

        let (mut operator, output, late, input_schema) = match &node.operator {
            // The inputs of an insight may differ: each rule is typed against its own.
            Operator::Insight(settings) => {
                let Some(op) = insight::type_insight(r, node, settings, ins, &streams, &changelogs)
                else {
                    continue;
                };
                streams.insert(
                    StreamRef {
                        node: node.id.clone(),
                        port: Port::Control,
                    },
                    insight::control_stream(),
                );
                (op, Some(insight::incident_stream()), None, None)
            }
            _ => {
                let input = match common_input(r, node, ins, &streams) {
                    Some(x) => x,
                    None if ins.is_empty() => StreamInfo {
                        schema: EventSchema::default(),
                        time_field: String::new(),
                    },
                    None => continue,
                };
                let Some((operator, output, late)) = type_node(r, spec, node, &input) else {
                    continue;
                };
                (operator, output, late, Some(input.schema))
            }
        };
        match &mut operator {
            Operator::Aggregate(a) => {
                changelogs.insert(StreamRef::main(&node.id));
                let lookup = a
                    .lookup
                    .as_deref()
                    .and_then(|l| index.get(l).map(|&j| (l, j)));
                if let Some((l, j)) = lookup
                    && placements[j].is_some_and(|p| p != placement)
                {
                    r.error(
                        node.pos_of("lookup"),
                        format!(
                            "node \"{}\" runs at the {} but its lookup \"{l}\" runs at the {}",
                            node.id,
                            placement.name(),
                            placements[j].map_or("", Placement::name)
                        ),
                        Some(format!("give \"{l}\" the same `placement:`")),
                    );
                }
            }
            Operator::Table { changelog, .. } => {
                *changelog = ins.iter().all(|(s, _, _)| changelogs.contains(s));
            }
            Operator::Filter { .. } if ins.iter().all(|(s, _, _)| changelogs.contains(s)) => {
                changelogs.insert(StreamRef::main(&node.id));
            }
            _ => {}
        }
        let time_field = output.as_ref().map(|o| o.time_field.clone());
        let schema = match (&output, &operator, input_schema) {
            (Some(o), _, _) => o.schema.clone(),
            (None, Operator::Reference(settings), _) => settings.schema.clone(),
            (None, _, Some(input)) => input,
            (None, _, None) => EventSchema::default(),
        };
        for (field, _) in &node.compress.error_bounds {
            if schema.field_type(field) != Some(FieldType::F64) {
                let f64_fields: Vec<&str> = schema
                    .fields()
                    .iter()
                    .filter(|(_, t)| *t == FieldType::F64)
                    .map(|(n, _)| n.as_str())
                    .collect();
                r.error(
                    node.pos_of(&format!("compress.error_bounds.{field}")),
                    format!(
                        "node \"{}\": field \"compress.error_bounds\": \"{field}\" is not an f64 field of its output",
                        node.id
                    ),
                    Some(format!("f64 fields: {}", f64_fields.join(", "))),
                );
            }
        }
        if let Some(o) = output {
            streams.insert(StreamRef::main(&node.id), o);
        }
        if let Some(l) = late {
            streams.insert(
                StreamRef {
                    node: node.id.clone(),
                    port: Port::Late,
                },
                l,
            );
        }
        nodes.push(PlanNode {
            id: node.id.clone(),
            kind: node.kind,
            placement,
            inputs: ins.iter().map(|(s, _, _)| s.clone()).collect(),
            operator,
            schema,
            time_field,
        });
    }

    insight::check_insights(r, &spec.nodes, &nodes);
    if r.len() > before {
        return None;
    }

    // 4. The cut.
    let mut topics: Vec<CutTopic> = Vec::new();
    let placement_of: HashMap<&str, Placement> =
        nodes.iter().map(|n| (n.id.as_str(), n.placement)).collect();
    for consumer in &nodes {
        for stream in &consumer.inputs {
            let producer = placement_of.get(stream.node.as_str()).copied();
            if producer == Some(Placement::Edge) && consumer.placement == Placement::Cloud {
                match topics.iter_mut().find(|t| t.stream == *stream) {
                    Some(t) => t.consumers.push(consumer.id.clone()),
                    None => {
                        // Every resolved stream has an entry (checked while typing nodes).
                        let Some(info) = streams.get(stream) else {
                            continue;
                        };
                        topics.push(CutTopic {
                            name: topic_name(&spec.pipeline, stream),
                            stream: stream.clone(),
                            schema: info.schema.clone(),
                            time_field: info.time_field.clone(),
                            consumers: vec![consumer.id.clone()],
                            compress: spec
                                .nodes
                                .iter()
                                .find(|n| n.id == stream.node)
                                .map(|n| n.compress.clone())
                                .unwrap_or_default(),
                        });
                    }
                }
            }
        }
    }
    let position: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    topics.sort_by_key(|t| (position.get(t.stream.node.as_str()).copied(), t.stream.port));
    let control = control_plan(r, spec, &nodes, dir);
    if r.len() > before {
        return None;
    }

    Some(Plan {
        transport: spec.transport.clone(),
        pipeline: spec.pipeline.clone(),
        nodes,
        topics,
        control,
    })
}

fn unknown_input(
    r: &mut Reporter,
    spec: &PipelineSpec,
    node_id: &str,
    stream: &StreamRef,
    pos: Pos,
) {
    let ids = spec
        .nodes
        .iter()
        .map(|n| n.id.as_str())
        .chain(spec.broken.keys().map(String::as_str))
        .filter(|id| *id != node_id);
    match did_you_mean(&stream.node, ids) {
        Some(m) => {
            let suggestion = StreamRef {
                node: m.to_owned(),
                port: stream.port,
            };
            r.error(
                pos,
                format!(
                    "node \"{}\": unknown input \"{stream}\"; did you mean \"{suggestion}\"?",
                    node_id
                ),
                None,
            );
        }
        None => {
            let ids: Vec<&str> = spec.nodes.iter().map(|n| n.id.as_str()).collect();
            r.error(
                pos,
                format!("node \"{}\": unknown input \"{stream}\"", node_id),
                Some(format!("nodes are: {}", ids.join(", "))),
            );
        }
    }
}

/// Kahn's algorithm, taking the earliest node in file order among the ready ones. Nodes left
/// over sit on or behind a cycle; each cycle is reported once.
fn topological_order(
    r: &mut Reporter,
    spec: &PipelineSpec,
    inputs: &[Vec<(StreamRef, Pos, usize)>],
    broken: &mut [bool],
) -> Vec<usize> {
    let n = spec.nodes.len();
    let mut indegree: Vec<usize> = inputs
        .iter()
        .map(|ins| ins.iter().map(|(_, _, j)| *j).collect::<HashSet<_>>().len())
        .collect();
    let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, ins) in inputs.iter().enumerate() {
        for j in ins.iter().map(|(_, _, j)| *j).collect::<HashSet<_>>() {
            consumers[j].push(i);
        }
    }
    let mut done = vec![false; n];
    let mut order = Vec::with_capacity(n);
    while let Some(i) = (0..n).find(|&i| !done[i] && indegree[i] == 0) {
        done[i] = true;
        order.push(i);
        for &c in &consumers[i] {
            indegree[c] -= 1;
        }
    }
    let mut reported: HashSet<usize> = HashSet::new();
    for start in 0..n {
        if done[start] {
            continue;
        }
        broken[start] = true;
        // Walk up remaining inputs until a node repeats: that closes a cycle.
        let mut path = vec![start];
        let cycle = loop {
            let cur = path[path.len() - 1];
            let Some(next) = inputs[cur].iter().map(|(_, _, j)| *j).find(|j| !done[*j]) else {
                break None;
            };
            if let Some(at) = path.iter().position(|p| *p == next) {
                break Some(path[at..].to_vec());
            }
            path.push(next);
        };
        let Some(mut cycle) = cycle else { continue };
        if cycle.iter().any(|c| reported.contains(c)) {
            continue;
        }
        reported.extend(cycle.iter().copied());
        // Data flows from an input to its reader: reverse the walk, start at the first node
        // in file order.
        cycle.reverse();
        let first = cycle
            .iter()
            .enumerate()
            .min_by_key(|(_, i)| **i)
            .map_or(0, |(k, _)| k);
        cycle.rotate_left(first);
        let names: Vec<&str> = cycle
            .iter()
            .chain(cycle.first())
            .map(|&i| spec.nodes[i].id.as_str())
            .collect();
        let head = &spec.nodes[cycle[0]];
        r.error(
            head.pos,
            format!("node \"{}\": cycle: {}", head.id, names.join(" -> ")),
            Some(
                "a pipeline must be acyclic; only control arcs (cloud -> edge) may loop back"
                    .into(),
            ),
        );
    }
    order
}

/// The schema and time field shared by all inputs of `node`.
fn common_input(
    r: &mut Reporter,
    node: &NodeSpec,
    ins: &[(StreamRef, Pos, usize)],
    streams: &HashMap<StreamRef, StreamInfo>,
) -> Option<StreamInfo> {
    let (first_ref, _, _) = ins.first()?;
    let first = streams.get(first_ref)?.clone();
    let mut ok = true;
    for (stream, pos, _) in &ins[1..] {
        let info = streams.get(stream)?;
        if info.schema != first.schema {
            ok = false;
            r.error(
                *pos,
                format!(
                    "node \"{}\": input \"{stream}\" has schema {}, but input \"{first_ref}\" has {}",
                    node.id, info.schema, first.schema
                ),
                Some("all inputs of a node must have the same schema; add a map to align them".into()),
            );
        } else if info.time_field != first.time_field {
            ok = false;
            r.error(
                *pos,
                format!(
                    "node \"{}\": input \"{stream}\" has time field \"{}\", but input \"{first_ref}\" has \"{}\"",
                    node.id, info.time_field, first.time_field
                ),
                None,
            );
        }
    }
    ok.then_some(first)
}

fn field_hint(name: &str, schema: &EventSchema) -> String {
    match did_you_mean(name, schema.names()) {
        Some(m) => format!("did you mean \"{m}\"?"),
        None => format!(
            "the input's fields are: {}",
            schema.names().collect::<Vec<_>>().join(", ")
        ),
    }
}

fn user_message(err: OperatorError) -> String {
    match err {
        OperatorError::User(m) => m,
        OperatorError::DataFusion(e) => edgeflow_operators::expr::datafusion_message(&e),
        other => other.to_string(),
    }
}

type Typed = (Operator, Option<StreamInfo>, Option<StreamInfo>);

/// Types one node against its input: returns its operator (window time field filled in), its
/// main output (`None` for sinks) and its late output.
fn type_node(
    r: &mut Reporter,
    spec: &PipelineSpec,
    node: &NodeSpec,
    input: &StreamInfo,
) -> Option<Typed> {
    let id = &node.id;
    let schema = &input.schema;
    let same = || StreamInfo {
        schema: input.schema.clone(),
        time_field: input.time_field.clone(),
    };
    // Whether every check passed; a Cell so the field checker and the arms can both clear it.
    let ok = Cell::new(true);
    let check_field =
        |r: &mut Reporter, path: &str, setting: &str, name: &str| -> Option<FieldType> {
            let t = schema.field_type(name);
            if t.is_none() {
                ok.set(false);
                r.error(
                    node.pos_of(path),
                    format!(
                        "node \"{id}\": field \"{setting}\": the input has no field \"{name}\""
                    ),
                    Some(field_hint(name, schema)),
                );
            }
            t
        };
    let result = match &node.operator {
        Operator::Generator(g) => (
            node.operator.clone(),
            Some(StreamInfo {
                schema: g.schema(),
                time_field: "ts".to_owned(),
            }),
            None,
        ),
        Operator::FileSource(f) => (
            node.operator.clone(),
            Some(StreamInfo {
                schema: f.schema.clone(),
                time_field: f.time_field.clone(),
            }),
            None,
        ),
        Operator::KafkaSource(k) => (
            node.operator.clone(),
            Some(StreamInfo {
                schema: k.schema.clone(),
                time_field: k.time_field.clone(),
            }),
            None,
        ),
        Operator::KafkaSink(k) => {
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
            (node.operator.clone(), None, None)
        }
        Operator::Filter { predicate } => {
            if let Err(e) = CompiledFilter::new(schema, predicate) {
                r.error(
                    node.pos_of("where"),
                    format!("node \"{id}\": field \"where\": {}", user_message(e)),
                    None,
                );
                return None;
            }
            (node.operator.clone(), Some(same()), None)
        }
        Operator::Map { fields, drop } => {
            let mut fields_ok = true;
            for (name, sql) in fields {
                if let Err(e) = CompiledMap::new(schema, &[(name.clone(), sql.clone())], &[]) {
                    fields_ok = false;
                    let msg = user_message(e);
                    let msg = msg
                        .strip_prefix(&format!("field \"{name}\": "))
                        .unwrap_or(&msg)
                        .to_owned();
                    r.error(
                        node.pos_of(&format!("fields.{name}")),
                        format!("node \"{id}\": field \"fields.{name}\": {msg}"),
                        None,
                    );
                }
            }
            for (i, d) in drop.iter().enumerate() {
                if schema.field_type(d).is_none() && !fields.iter().any(|(n, _)| n == d) {
                    fields_ok = false;
                    r.error(
                        node.pos_of(&format!("drop[{i}]")),
                        format!("node \"{id}\": field \"drop\": the input has no field \"{d}\""),
                        Some(field_hint(d, schema)),
                    );
                } else if d == &input.time_field {
                    fields_ok = false;
                    r.error(
                        node.pos_of(&format!("drop[{i}]")),
                        format!(
                            "node \"{id}\": field \"drop\": cannot drop the time field \"{d}\""
                        ),
                        Some("the event-time field must survive a map".into()),
                    );
                }
            }
            if !fields_ok {
                return None;
            }
            let out = match CompiledMap::new(schema, fields, drop) {
                Ok(m) => m.output_schema().clone(),
                Err(e) => {
                    r.error(
                        node.pos_of("fields"),
                        format!("node \"{id}\": {}", user_message(e)),
                        None,
                    );
                    return None;
                }
            };
            match out.field_type(&input.time_field) {
                Some(FieldType::TimestampMs) => {}
                other => {
                    let path = format!("fields.{}", input.time_field);
                    r.error(
                        node.pos_of(&path),
                        format!(
                            "node \"{id}\": the time field \"{}\" must stay timestamp_ms, but the map makes it {}",
                            input.time_field,
                            other.map_or("absent".to_owned(), |t| t.to_string())
                        ),
                        Some("compute the new value under another name".into()),
                    );
                    return None;
                }
            }
            (
                node.operator.clone(),
                Some(StreamInfo {
                    schema: out,
                    time_field: input.time_field.clone(),
                }),
                None,
            )
        }
        Operator::Window(w) => {
            let mut w = w.clone();
            if w.time_field.is_empty() {
                w.time_field = input.time_field.clone();
            } else {
                match check_field(r, "time_field", "time_field", &w.time_field) {
                    Some(FieldType::TimestampMs) | None => {}
                    Some(t) => {
                        ok.set(false);
                        r.error(
                            node.pos_of("time_field"),
                            format!("node \"{id}\": field \"time_field\": \"{}\" has type {t}, not timestamp_ms", w.time_field),
                            None,
                        );
                    }
                }
            }
            let mut fields = vec![
                ("window_start".to_owned(), FieldType::TimestampMs),
                ("window_end".to_owned(), FieldType::TimestampMs),
            ];
            for (i, k) in w.key.iter().enumerate() {
                if let Some(t) = check_field(r, &format!("key[{i}]"), "key", k) {
                    fields.push((k.clone(), t));
                }
            }
            // A bare `count` counts events: on a stream without the value field it reads the
            // time field, which every event has.
            let time_field = w.time_field.clone();
            for a in &mut w.aggregates {
                if a.func == "count" && a.output == "count" && schema.field_type(&a.field).is_none()
                {
                    a.field = time_field.clone();
                }
            }
            for (i, a) in w.aggregates.iter().enumerate() {
                let path = format!("aggregates[{i}]");
                let Some(t) = check_field(r, &path, "aggregates", &a.field) else {
                    continue;
                };
                let out_type = match a.func.as_str() {
                    "count" => FieldType::I64,
                    _ if !t.is_numeric() => {
                        ok.set(false);
                        r.error(
                            node.pos_of(&path),
                            format!(
                                "node \"{id}\": field \"aggregates\": {} needs an i64 or f64 field, but \"{}\" is {t}",
                                a.func, a.field
                            ),
                            None,
                        );
                        continue;
                    }
                    "sum" | "min" | "max" | "first" | "last" => t,
                    _ => FieldType::F64,
                };
                if fields.iter().any(|(n, _)| *n == a.output) {
                    ok.set(false);
                    r.error(
                        node.pos_of(&path),
                        format!("node \"{id}\": field \"aggregates\": output column \"{}\" clashes with another column", a.output),
                        None,
                    );
                    continue;
                }
                fields.push((a.output.clone(), out_type));
            }
            (
                Operator::Window(w.clone()),
                Some(StreamInfo {
                    schema: EventSchema::new(fields),
                    time_field: "window_start".to_owned(),
                }),
                Some(StreamInfo {
                    schema: input.schema.clone(),
                    time_field: w.time_field.clone(),
                }),
            )
        }
        Operator::Detect(d) => {
            for (i, k) in d.key.iter().enumerate() {
                check_field(r, &format!("key[{i}]"), "key", k);
            }
            match check_field(r, "value", "value", &d.value) {
                Some(t) if !t.is_numeric() => {
                    ok.set(false);
                    r.error(
                        node.pos_of("value"),
                        format!("node \"{id}\": field \"value\": \"{}\" is {t}, but a detector needs i64 or f64", d.value),
                        None,
                    );
                }
                _ => {}
            }
            let mut fields = schema.fields().to_vec();
            for (name, t) in [("score", FieldType::F64), ("reason", FieldType::String)] {
                if schema.field_type(name).is_some() {
                    ok.set(false);
                    r.error(
                        node.pos,
                        format!("node \"{id}\": the input already has a field \"{name}\", which a detector adds"),
                        Some("rename it with a map first".into()),
                    );
                }
                fields.push((name.to_owned(), t));
            }
            (
                node.operator.clone(),
                Some(StreamInfo {
                    schema: EventSchema::new(fields),
                    time_field: input.time_field.clone(),
                }),
                None,
            )
        }
        Operator::Infer(settings) => {
            let mut settings = settings.clone();
            if settings.key.is_empty() {
                settings.key = ["device", "sensor"]
                    .into_iter()
                    .filter(|k| schema.field_type(k).is_some())
                    .map(str::to_owned)
                    .collect();
                if settings.key.is_empty() {
                    r.error(
                        node.pos,
                        format!("node \"{id}\": the input has no \"device\" or \"sensor\" field to cut windows by"),
                        Some("name the fields that identify a device with `key: [...]`".into()),
                    );
                    return None;
                }
            }
            for (i, k) in settings.key.iter().enumerate() {
                check_field(r, &format!("key[{i}]"), "key", k);
            }
            match check_field(r, "value", "value", &settings.value) {
                Some(t) if !t.is_numeric() => {
                    ok.set(false);
                    r.error(
                        node.pos_of("value"),
                        format!("node \"{id}\": field \"value\": \"{}\" is {t}, but inference needs i64 or f64", settings.value),
                        None,
                    );
                }
                _ => {}
            }
            if !ok.get() {
                return None;
            }
            settings.time_field = input.time_field.clone();
            match InferOperator::output_schema_for(schema, &settings.key, &input.time_field) {
                Ok(out) => (
                    Operator::Infer(settings),
                    Some(StreamInfo {
                        schema: out,
                        time_field: input.time_field.clone(),
                    }),
                    None,
                ),
                Err(e) => {
                    r.error(
                        node.pos,
                        format!("node \"{id}\": {}", user_message(e)),
                        Some("rename the field with a map first".into()),
                    );
                    return None;
                }
            }
        }
        Operator::Aggregate(settings) => {
            let (settings, info) = type_aggregate(r, spec, node, input, settings, &check_field)?;
            (Operator::Aggregate(settings), Some(info), None)
        }
        Operator::Reference(_)
        | Operator::Table { .. }
        | Operator::FileSink { .. }
        | Operator::Stdout { .. } => (node.operator.clone(), None, None),
        Operator::Insight(_) => {
            r.error(
                node.pos,
                format!(
                    "internal error (a bug in edgeflow): insight \"{id}\" typed as a one-input node"
                ),
                None,
            );
            return None;
        }
    };
    ok.get().then_some(result)
}

/// The column of an aggregate's output that holds each change's multiplicity.
pub const DIFF_COLUMN: &str = "diff";
/// The column of an aggregate's output that holds the latest event time of the group.
pub const LAST_EVENT_COLUMN: &str = "last_event";

/// Checks an aggregate against its input and lookup, filling in the time field; its output
/// is the group fields, the window bounds (windows only), the aggregates, `last_event`, and
/// `diff`.
fn type_aggregate(
    r: &mut Reporter,
    spec: &PipelineSpec,
    node: &NodeSpec,
    input: &StreamInfo,
    settings: &AggregateViewSettings,
    check_field: &dyn Fn(&mut Reporter, &str, &str, &str) -> Option<FieldType>,
) -> Option<(AggregateViewSettings, StreamInfo)> {
    let id = &node.id;
    let mut settings = settings.clone();
    let mut ok = true;
    if settings.time_field.is_empty() {
        settings.time_field = input.time_field.clone();
    } else if let Some(t) = check_field(r, "time_field", "time_field", &settings.time_field)
        && t != FieldType::TimestampMs
    {
        ok = false;
        r.error(
            node.pos_of("time_field"),
            format!(
                "node \"{id}\": field \"time_field\": \"{}\" has type {t}, not timestamp_ms",
                settings.time_field
            ),
            None,
        );
    }
    // Fields a group key or aggregate may name: the input's, then the lookup's.
    let mut available = input.schema.clone();
    if let Some(lookup) = &settings.lookup {
        match spec.nodes.iter().find(|n| n.id == *lookup) {
            Some(NodeSpec {
                operator: Operator::Reference(reference),
                ..
            }) => {
                let mut fields = available.fields().to_vec();
                for k in &reference.key {
                    let (ours, theirs) =
                        (input.schema.field_type(k), reference.schema.field_type(k));
                    if ours != theirs {
                        ok = false;
                        r.error(
                            node.pos_of("lookup"),
                            format!(
                                "node \"{id}\": field \"lookup\": the reference's key field \"{k}\" is {} there but {} in the input",
                                theirs.map_or("absent".to_owned(), |t| t.to_string()),
                                ours.map_or("absent".to_owned(), |t| t.to_string()),
                            ),
                            Some("a lookup joins on the reference's `key` fields, which the input must have with the same types".into()),
                        );
                    }
                }
                for (name, t) in reference.schema.fields() {
                    if reference.key.contains(name) {
                        continue;
                    }
                    if input.schema.field_type(name).is_some() {
                        ok = false;
                        r.error(
                            node.pos_of("lookup"),
                            format!("node \"{id}\": field \"lookup\": the reference's field \"{name}\" is also a field of the input"),
                            Some("rename one of them (a map on the input)".into()),
                        );
                    }
                    fields.push((name.clone(), *t));
                }
                available = EventSchema::new(fields);
            }
            Some(other) => {
                ok = false;
                r.error(
                    node.pos_of("lookup"),
                    format!(
                        "node \"{id}\": field \"lookup\": \"{lookup}\" is a {}, not a reference",
                        other.kind
                    ),
                    None,
                );
            }
            None => {
                ok = false;
                let hint = did_you_mean(lookup, spec.nodes.iter().map(|n| n.id.as_str()))
                    .map(|m| format!("did you mean \"{m}\"?"));
                r.error(
                    node.pos_of("lookup"),
                    format!("node \"{id}\": field \"lookup\": no node \"{lookup}\""),
                    hint,
                );
            }
        }
    }
    let field = |r: &mut Reporter, path: &str, setting: &str, name: &str| {
        let t = available.field_type(name);
        if t.is_none() {
            r.error(
                node.pos_of(path),
                format!("node \"{id}\": field \"{setting}\": neither the input nor the lookup has a field \"{name}\""),
                Some(field_hint(name, &available)),
            );
        }
        t
    };
    let mut fields = Vec::new();
    for (i, k) in settings.key.iter().enumerate() {
        match field(r, &format!("key[{i}]"), "key", k) {
            Some(t) => fields.push((k.clone(), t)),
            None => ok = false,
        }
    }
    for (i, k) in settings.identity.iter().enumerate() {
        ok &= check_field(r, &format!("identity[{i}]"), "identity", k).is_some();
    }
    if settings.size_ms.is_some() {
        fields.push(("window_start".to_owned(), FieldType::TimestampMs));
        fields.push(("window_end".to_owned(), FieldType::TimestampMs));
    }
    let time_field = settings.time_field.clone();
    for a in &mut settings.aggregates {
        if a.func == "count" && a.output == "count" && available.field_type(&a.field).is_none() {
            a.field = time_field.clone();
        }
    }
    for (i, a) in settings.aggregates.iter().enumerate() {
        let path = format!("aggregates[{i}]");
        if input.schema.field_type(&a.field).is_none() && available.field_type(&a.field).is_some() {
            ok = false;
            r.error(
                node.pos_of(&path),
                format!("node \"{id}\": field \"aggregates\": \"{}\" is a field of the lookup; aggregates read the input's fields", a.field),
                Some("a lookup's fields can be grouped by (`key:`), not aggregated".into()),
            );
            continue;
        }
        let Some(t) = field(r, &path, "aggregates", &a.field) else {
            ok = false;
            continue;
        };
        let out_type = match a.func.as_str() {
            "count" | "count_distinct" => FieldType::I64,
            _ if !t.is_numeric() => {
                ok = false;
                r.error(
                    node.pos_of(&path),
                    format!(
                        "node \"{id}\": field \"aggregates\": {} needs an i64 or f64 field, but \"{}\" is {t}",
                        a.func, a.field
                    ),
                    None,
                );
                continue;
            }
            "sum" | "min" | "max" => t,
            _ => FieldType::F64,
        };
        fields.push((a.output.clone(), out_type));
    }
    fields.push((LAST_EVENT_COLUMN.to_owned(), FieldType::TimestampMs));
    fields.push((DIFF_COLUMN.to_owned(), FieldType::I64));
    for (i, (name, _)) in fields.iter().enumerate() {
        if fields[..i].iter().any(|(n, _)| n == name) {
            ok = false;
            r.error(
                node.pos,
                format!("node \"{id}\": output column \"{name}\" appears twice"),
                Some(format!(
                    "\"window_start\", \"window_end\", \"{LAST_EVENT_COLUMN}\" and \"{DIFF_COLUMN}\" are added to every output; rename a key field with a map"
                )),
            );
        }
    }
    let out_time = if settings.size_ms.is_some() {
        "window_start"
    } else {
        LAST_EVENT_COLUMN
    };
    ok.then(|| {
        (
            settings,
            StreamInfo {
                schema: EventSchema::new(fields),
                time_field: out_time.to_owned(),
            },
        )
    })
}

#[cfg(test)]
mod tests;
