//! Printing a plan: human text (`edgeflow graph`, golden tests), graphviz dot and mermaid.

use std::fmt::Write as _;

use super::{
    DetectMethod, Operator, Placement, Plan, PlanNode, Port, ReferenceSource, SinkFormat, StreamRef,
};
use crate::spec::{FileFormatName, InsightSettings, RuleCondition};

/// A duration in the largest unit that divides it exactly, as the spec language writes it.
fn duration(ms: i64) -> String {
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

fn list(items: &[String]) -> String {
    format!("[{}]", items.join(", "))
}

/// An insight's rules and control actions on one line.
fn insight_settings(settings: &InsightSettings) -> String {
    let rules: Vec<String> = settings
        .rules
        .iter()
        .map(|r| {
            let input = r
                .input
                .as_ref()
                .map_or(String::new(), |i| format!(" on {i}"));
            let what = match &r.condition {
                RuleCondition::Correlated {
                    by,
                    device,
                    devices,
                    within_ms,
                } => format!(
                    "correlated by={} {devices}+ {device} within {}",
                    list(by),
                    duration(*within_ms)
                ),
                RuleCondition::Drift {
                    key,
                    value,
                    baseline_ms,
                    shift,
                    min_samples,
                } => format!(
                    "drift key={} value={value} baseline={} shift={shift} min_samples={min_samples}",
                    list(key),
                    duration(*baseline_ms)
                ),
                RuleCondition::Silence { key, after_ms } => {
                    format!("silence key={} after={}", list(key), duration(*after_ms))
                }
                RuleCondition::Sql {
                    query,
                    every_ms,
                    key,
                } => format!(
                    "sql every={} key={} query={query:?}",
                    duration(*every_ms),
                    key.as_deref().unwrap_or("(row)")
                ),
            };
            format!("{}({}{input}, {})", r.name, what, r.severity.name())
        })
        .collect();
    let mut s = format!("rules={}", list(&rules));
    for c in &settings.control {
        let action = serde_json::to_string(&c.action).unwrap_or_default();
        let _ = write!(s, " control({} -> {} {action})", c.on, c.node);
    }
    s
}

/// One line summarising a node's settings.
fn settings(op: &Operator) -> String {
    match op {
        Operator::Generator(g) => {
            let mut text = format!(
                "seed={} devices={} sites={} sensors={} rate_per_device={}/s start_ms={} anomaly_rate={} anomaly_shapes={} ground_truth={} disorder={} events={}",
                g.seed,
                g.devices,
                g.sites,
                list(&g.sensors),
                g.rate_per_device,
                g.start_ms
                    .map_or_else(|| "default".to_string(), |ms| ms.to_string()),
                g.anomaly_rate,
                list(&g.anomaly_shapes),
                g.ground_truth,
                duration(g.disorder_ms),
                g.events
                    .map_or_else(|| "unbounded".to_string(), |n| n.to_string()),
            );
            if !g.drift_sites.is_empty() {
                let sites: Vec<String> = g.drift_sites.iter().map(u32::to_string).collect();
                text.push_str(&format!(
                    " drift_sites={} drift_rate={}",
                    list(&sites),
                    g.drift_rate
                ));
            }
            text
        }
        Operator::FileSource(f) => format!(
            "path={} format={} header={} time_field={} disorder={}",
            f.path.display(),
            match f.format {
                FileFormatName::Csv => "csv",
                FileFormatName::JsonLines => "jsonl",
            },
            f.header,
            f.time_field,
            duration(f.disorder_ms)
        ),
        Operator::KafkaSource(k) => format!(
            "topic={} format={} group={} time_field={} disorder={}",
            k.topic,
            k.format.name(),
            k.group.as_deref().unwrap_or("(default)"),
            k.time_field,
            duration(k.disorder_ms)
        ),
        Operator::KafkaSink(k) => format!(
            "topic={} format={} key={}",
            k.topic,
            k.format.name(),
            k.key.as_deref().unwrap_or("(edge id)")
        ),
        Operator::Filter { predicate } => format!("where {predicate}"),
        Operator::Map { fields, drop } => {
            let mut s = fields
                .iter()
                .map(|(n, e)| format!("{n} = {e}"))
                .collect::<Vec<_>>()
                .join("; ");
            if !drop.is_empty() {
                let _ = write!(s, "; drop {}", list(drop));
            }
            s
        }
        Operator::Window(w) => {
            let shape = if w.slide_ms == w.size_ms {
                format!("tumbling {}", duration(w.size_ms))
            } else {
                format!(
                    "hopping {} every {}",
                    duration(w.size_ms),
                    duration(w.slide_ms)
                )
            };
            let aggs: Vec<String> = w
                .aggregates
                .iter()
                .map(|a| format!("{}({}) as {}", a.func, a.field, a.output))
                .collect();
            format!(
                "{shape} on {} key={} aggregates={} allowed_lateness={}",
                w.time_field,
                list(&w.key),
                list(&aggs),
                duration(w.allowed_lateness_ms)
            )
        }
        Operator::Detect(d) => {
            let method = match &d.method {
                DetectMethod::Threshold { min, max } => format!(
                    "threshold min={} max={}",
                    min.map_or("-".to_owned(), |v| v.to_string()),
                    max.map_or("-".to_owned(), |v| v.to_string())
                ),
                DetectMethod::ZScore {
                    threshold,
                    min_samples,
                } => format!("zscore threshold={threshold} min_samples={min_samples}"),
            };
            format!(
                "{method} value={} key={} emit={}",
                d.value,
                list(&d.key),
                if d.emit_all { "all" } else { "exceptions" }
            )
        }
        Operator::Infer(i) => format!(
            "model={} value={} key={} threshold={} emit={}",
            i.model_text,
            i.value,
            list(&i.key),
            i.threshold
                .map_or("model default".to_owned(), |t| t.to_string()),
            if i.emit_all { "all" } else { "exceptions" }
        ),
        Operator::Insight(settings) => insight_settings(settings),
        Operator::Aggregate(a) => {
            let aggs: Vec<String> = a
                .aggregates
                .iter()
                .map(|x| format!("{}({})", x.func, x.field))
                .collect();
            let mut text = format!(
                "{} time_field={} key={} aggregates={}",
                a.size_ms.map_or("running totals".to_owned(), |ms| format!(
                    "size={} allowed_lateness={}",
                    duration(ms),
                    duration(a.allowed_lateness_ms)
                )),
                a.time_field,
                list(&a.key),
                list(&aggs),
            );
            if !a.identity.is_empty() {
                text.push_str(&format!(" identity={}", list(&a.identity)));
            }
            if let Some(l) = &a.lookup {
                text.push_str(&format!(" lookup={l}"));
            }
            text
        }
        Operator::Reference(r) => {
            let ReferenceSource::File { path, .. } = &r.source;
            format!(
                "path={} key={} reload={}",
                path.display(),
                list(&r.key),
                duration(r.reload_ms)
            )
        }
        Operator::Table { name, changelog } => {
            if *changelog {
                format!("name={name} changelog")
            } else {
                format!("name={name}")
            }
        }
        Operator::FileSink { path, format } => format!(
            "path={} format={}",
            path.display(),
            match format {
                SinkFormat::Csv => "csv",
                SinkFormat::JsonLines => "jsonl",
                SinkFormat::Parquet => "parquet",
            }
        ),
        Operator::Stdout { table_format } => {
            format!("format={}", if *table_format { "table" } else { "jsonl" })
        }
    }
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
            let _ = writeln!(out, "  {}", settings(&node.operator));
            match &node.time_field {
                Some(tf) => {
                    let _ = writeln!(out, "  out: {} time {tf}", node.schema);
                }
                None => {
                    let _ = writeln!(out, "  in: {}", node.schema);
                }
            }
            let late = StreamRef {
                node: node.id.clone(),
                port: Port::Late,
            };
            if let (Operator::Window(w), Some((schema, _))) = (&node.operator, self.stream(&late)) {
                let _ = writeln!(out, "  late: {schema} time {}", w.time_field);
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
