//! The plan: a validated spec turned into a typed graph in topological order, each node placed
//! at the edge or in the cloud, with the edge -> cloud cut as named topics. Pure data: it can be
//! printed ([`Plan::render_text`], dot, mermaid) and tested without running anything.
//!
//! This module compiles a spec (inputs, order, typing through each kind, the cut);
//! [`control`] plans the control arcs; [`typing`] holds what kinds type themselves with;
//! [`render`] prints a plan.

mod control;
pub(crate) mod render;
mod typing;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use edgeflow_operators::schema::{EventSchema, FieldType};

use crate::kinds::{KINDS, NodeSettings};
use crate::spec::{self, Diagnostics, PipelineSpec, Pos, Reporter, did_you_mean};
pub use crate::spec::{Placement, Port, StreamRef};
pub use control::{ControlPlan, ControlRequest, ControlTarget, control_requests};
pub use typing::{FieldCheck, StreamInfo, TypeCx, Typed, field_hint, user_message};

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
    /// Its validated settings (defaults the planner fills in included).
    pub settings: Arc<dyn NodeSettings>,
    /// Main output schema (for sinks: their input's schema).
    pub schema: EventSchema,
    /// Event-time field of the main output; `None` for sinks.
    pub time_field: Option<String>,
    /// Its outputs besides the main one (a window's `late`, an insight's `control`).
    pub ports: Vec<(Port, StreamInfo)>,
}

impl PlanNode {
    /// Whether the node has no output stream.
    pub fn is_sink(&self) -> bool {
        self.settings.is_sink()
    }

    /// Its settings as `T`, when they are of that type.
    pub fn settings_as<T: 'static>(&self) -> Option<&T> {
        // Trait upcasting: every `NodeSettings` is `Any`.
        (self.settings.as_ref() as &dyn std::any::Any).downcast_ref()
    }

    /// The schema and time field of its output `port` other than the main one.
    pub fn port(&self, port: Port) -> Option<(&EventSchema, &str)> {
        self.ports
            .iter()
            .find(|(p, _)| *p == port)
            .map(|(_, info)| (&info.schema, info.time_field.as_str()))
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
        match (stream.port, &node.time_field) {
            (Port::Main, Some(tf)) => Some((&node.schema, tf)),
            (Port::Main, None) => None,
            (port, _) => node.port(port),
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
    load_plan_with(path, &|name| std::env::var(name).ok())
}

/// Like [`load_plan`], with `${VAR}`s looked up by `env`.
pub fn load_plan_with(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Plan, Diagnostics> {
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
    plan_with(&file, &text, &dir, env)
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

/// The topic name of a stream.
pub fn topic_name(pipeline: &str, stream: &StreamRef) -> String {
    format!("{pipeline}.{stream}")
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
                    let refusal = producer.settings.not_a_stream(&producer.id);
                    let owner = (stream.port != Port::Main)
                        .then(|| KINDS.iter().find(|k| k.ports().contains(&stream.port)))
                        .flatten()
                        .filter(|_| !producer.settings.kind().ports().contains(&stream.port));
                    if producer.settings.is_sink() {
                        broken[i] = true;
                        r.error(
                            *pos,
                            format!(
                                "node \"{}\": input \"{stream}\" is a {} sink, which has no output",
                                node.id, producer.kind
                            ),
                            None,
                        );
                    } else if let Some((what, hint)) = refusal {
                        broken[i] = true;
                        r.error(
                            *pos,
                            format!("node \"{}\": input \"{stream}\" {what}", node.id),
                            Some(hint),
                        );
                    } else if let Some(owner) = owner {
                        broken[i] = true;
                        r.error(
                            *pos,
                            format!(
                                "node \"{}\": input \"{stream}\": only {} nodes have a {} output, \"{}\" is a {}",
                                node.id,
                                owner.name(),
                                port_name(stream.port),
                                producer.id,
                                producer.kind
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
            .unwrap_or_else(|| node.settings.default_placement(&input_placements));
        placements[i] = Some(placement);
        if !node.settings.check_placement(r, node, placement) {
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

        let each_input = node.settings.types_each_input();
        let input = if each_input {
            StreamInfo::default()
        } else {
            match common_input(r, node, ins, &streams) {
                Some(x) => x,
                None if ins.is_empty() => StreamInfo::default(),
                None => continue,
            }
        };
        let placement_of = |id: &str| index.get(id).and_then(|&j| placements[j]);
        let mut cx = TypeCx {
            r: &mut *r,
            fields: FieldCheck::new(node, &input),
            spec,
            inputs: ins,
            streams: &streams,
            changelogs: &changelogs,
            inputs_changelog: ins.iter().all(|(s, _, _)| changelogs.contains(s)),
            placement,
            placement_of: &placement_of,
        };
        let Some(typed) = node.settings.typed(&mut cx) else {
            continue;
        };
        let Typed {
            settings,
            output,
            ports,
            changelog,
            schema: own_schema,
        } = typed;
        if changelog {
            changelogs.insert(StreamRef::main(&node.id));
        }
        let input_schema = (!each_input).then_some(input.schema);
        let time_field = output.as_ref().map(|o| o.time_field.clone());
        let schema = match (&output, own_schema, input_schema) {
            (Some(o), _, _) => o.schema.clone(),
            (None, Some(own), _) => own,
            (None, None, Some(input)) => input,
            (None, None, None) => EventSchema::default(),
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
        for (port, info) in &ports {
            streams.insert(
                StreamRef {
                    node: node.id.clone(),
                    port: *port,
                },
                info.clone(),
            );
        }
        nodes.push(PlanNode {
            id: node.id.clone(),
            kind: node.kind,
            placement,
            inputs: ins.iter().map(|(s, _, _)| s.clone()).collect(),
            settings,
            schema,
            time_field,
            ports,
        });
    }

    for kind in KINDS {
        kind.check_plan(r, &spec.nodes, &nodes);
    }
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
    let control = control::control_plan(r, spec, &nodes, dir);
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
    // Always the lowest-numbered ready node next (file order where the graph allows), from a
    // min-heap: O(n log n), where scanning for it each time was O(n^2) (a minute for 90k
    // nodes).
    let mut ready: BinaryHeap<Reverse<usize>> =
        (0..n).filter(|&i| indegree[i] == 0).map(Reverse).collect();
    while let Some(Reverse(i)) = ready.pop() {
        done[i] = true;
        order.push(i);
        for &c in &consumers[i] {
            indegree[c] -= 1;
            if indegree[c] == 0 {
                ready.push(Reverse(c));
            }
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
    node: &spec::NodeSpec,
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

/// A port's name in messages.
fn port_name(port: Port) -> &'static str {
    match port {
        Port::Main => "main",
        Port::Late => "late",
        Port::Control => "control",
    }
}

#[cfg(test)]
mod tests;
