//! Printing a plan: human text (`edgeflow graph`, golden tests), graphviz dot and mermaid.

use std::fmt::Write as _;

use super::{Placement, Plan, PlanNode, Port, StreamRef};

/// A duration in the largest unit that divides it exactly, as the spec language writes it.
pub(crate) fn duration(ms: i64) -> String {
    for (unit, factor) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms != 0 && ms % factor == 0 {
            return format!("{}{unit}", ms / factor);
        }
    }
    format!("{ms}ms")
}

/// ` max_future=…` when a source's `max_future` is not the default (plans stay short).
pub(crate) fn max_future_note(ms: i64) -> String {
    if ms == crate::spec::settings::DEFAULT_MAX_FUTURE_MS {
        String::new()
    } else {
        format!(" max_future={}", duration(ms))
    }
}

/// `[a, b]`.
pub(crate) fn list(items: &[String]) -> String {
    format!("[{}]", items.join(", "))
}

fn inputs(node: &PlanNode) -> String {
    node.inputs
        .iter()
        .map(StreamRef::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The label of an arc: the topic name when it crosses the cut, "late" for late streams.
fn arc_label(plan: &Plan, stream: &StreamRef, consumer: &PlanNode) -> Option<String> {
    let producer = plan.node(&stream.node)?;
    if producer.placement == Placement::Edge && consumer.placement == Placement::Cloud {
        return plan.topic(stream).map(|t| t.name.clone());
    }
    match stream.port {
        Port::Main => None,
        Port::Late => Some("late".to_owned()),
        Port::Control => Some("control".to_owned()),
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

impl Plan {
    /// The human-readable plan: every node with kind, placement, inputs, settings and output
    /// schema, then the cut, one line per topic and consumer.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "pipeline {}: {} nodes ({} edge, {} cloud), {} cut topic{}",
            self.pipeline,
            self.nodes.len(),
            self.nodes
                .iter()
                .filter(|n| n.placement == Placement::Edge)
                .count(),
            self.nodes
                .iter()
                .filter(|n| n.placement == Placement::Cloud)
                .count(),
            self.topics.len(),
            if self.topics.len() == 1 { "" } else { "s" }
        );
        for node in &self.nodes {
            let _ = write!(out, "\n{} [{} @ {}]", node.id, node.kind, node.placement);
            if !node.inputs.is_empty() {
                let _ = write!(out, " <- {}", inputs(node));
            }
            let _ = writeln!(out);
            let _ = writeln!(out, "  {}", node.settings.render());
            match &node.time_field {
                Some(tf) => {
                    let _ = writeln!(out, "  out: {} time {tf}", node.schema);
                }
                None => {
                    let _ = writeln!(out, "  in: {}", node.schema);
                }
            }
            if let Some((schema, time_field)) = node.port(Port::Late) {
                let _ = writeln!(out, "  late: {schema} time {time_field}");
            }
        }
        let _ = writeln!(out, "\ncut:");
        if self.topics.is_empty() {
            let _ = writeln!(out, "  (none: nothing crosses from edge to cloud)");
        }
        for topic in &self.topics {
            for consumer in &topic.consumers {
                let _ = writeln!(
                    out,
                    "  edge {} --[{}]--> cloud {consumer}",
                    topic.stream, topic.name
                );
            }
        }
        if let Some(control) = &self.control {
            let _ = writeln!(
                out,
                "\ncontrol: records on {}, acknowledgements on {}",
                control.topic, control.acks_topic
            );
            for target in &control.targets {
                let _ = writeln!(
                    out,
                    "  cloud {} --[{}]--> edge {} ({})",
                    target.issuers.join(", "),
                    control.topic,
                    target.node,
                    target.actions.join(", ")
                );
            }
        }
        out
    }

    /// Graphviz dot: one cluster per placement, cut arcs bold and labelled with their topic.
    pub fn render_dot(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "digraph \"{}\" {{", escape(&self.pipeline));
        let _ = writeln!(out, "  rankdir=LR;");
        let _ = writeln!(out, "  node [shape=box, style=rounded];");
        for placement in [Placement::Edge, Placement::Cloud] {
            let members: Vec<&PlanNode> = self
                .nodes
                .iter()
                .filter(|n| n.placement == placement)
                .collect();
            if members.is_empty() {
                continue;
            }
            let _ = writeln!(out, "  subgraph cluster_{placement} {{");
            let _ = writeln!(out, "    label=\"{placement}\";");
            for n in members {
                let _ = writeln!(out, "    \"{}\" [label=\"{}\\n{}\"];", n.id, n.id, n.kind);
            }
            let _ = writeln!(out, "  }}");
        }
        for consumer in &self.nodes {
            for stream in &consumer.inputs {
                let cut = self.node(&stream.node).is_some_and(|p| {
                    p.placement == Placement::Edge && consumer.placement == Placement::Cloud
                });
                let attrs = match (arc_label(self, stream, consumer), cut) {
                    (Some(l), true) => {
                        format!(" [label=\"{}\", style=bold, color=red]", escape(&l))
                    }
                    (Some(l), false) => format!(" [label=\"{}\", style=dashed]", escape(&l)),
                    (None, _) => String::new(),
                };
                let _ = writeln!(out, "  \"{}\" -> \"{}\"{attrs};", stream.node, consumer.id);
            }
        }
        for (issuer, target, topic) in self.control_arcs() {
            if self.node(issuer).is_none() {
                let _ = writeln!(out, "  \"{issuer}\" [shape=diamond];");
            }
            let _ = writeln!(
                out,
                "  \"{issuer}\" -> \"{target}\" [label=\"{}\", style=dotted, color=blue];",
                escape(topic)
            );
        }
        let _ = writeln!(out, "}}");
        out
    }

    /// A mermaid flowchart with one subgraph per placement; cut arcs are thick and labelled.
    pub fn render_mermaid(&self) -> String {
        // Prefix ids: mermaid reserves words such as `end`.
        let id = |s: &str| format!("n_{s}");
        let mut out = String::from("flowchart LR\n");
        for placement in [Placement::Edge, Placement::Cloud] {
            let members: Vec<&PlanNode> = self
                .nodes
                .iter()
                .filter(|n| n.placement == placement)
                .collect();
            if members.is_empty() {
                continue;
            }
            let _ = writeln!(out, "  subgraph {placement}_side [{placement}]");
            for n in members {
                let _ = writeln!(out, "    {}[\"{}<br/><i>{}</i>\"]", id(&n.id), n.id, n.kind);
            }
            let _ = writeln!(out, "  end");
        }
        for consumer in &self.nodes {
            for stream in &consumer.inputs {
                let cut = self.node(&stream.node).is_some_and(|p| {
                    p.placement == Placement::Edge && consumer.placement == Placement::Cloud
                });
                let (from, to) = (id(&stream.node), id(&consumer.id));
                let _ = match (arc_label(self, stream, consumer), cut) {
                    (Some(l), true) => writeln!(out, "  {from} ==>|\"{l}\"| {to}"),
                    (Some(l), false) => writeln!(out, "  {from} -.->|{l}| {to}"),
                    (None, _) => writeln!(out, "  {from} --> {to}"),
                };
            }
        }
        for (issuer, target, topic) in self.control_arcs() {
            let _ = writeln!(out, "  {} -.->|\"{topic}\"| {}", id(issuer), id(target));
        }
        out
    }

    /// Every control arc: (issuer, target node, topic). The issuer is an `insight` node, or
    /// `control` for records people send.
    fn control_arcs(&self) -> Vec<(&str, &str, &str)> {
        let Some(control) = &self.control else {
            return Vec::new();
        };
        control
            .targets
            .iter()
            .flat_map(|t| {
                t.issuers
                    .iter()
                    .map(|i| (i.as_str(), t.node.as_str(), control.topic.as_str()))
            })
            .collect()
    }
}
