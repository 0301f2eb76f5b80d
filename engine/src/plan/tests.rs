//! Unit tests of the planner: graph checks, schemas, placement and the cut.

use std::path::Path;

use super::*;
use crate::kinds::WindowSettings;
use crate::spec::parse_with;

fn plan(text: &str) -> Result<Plan, Vec<String>> {
    let spec = parse_with("p.yaml", text, Path::new(""), &|_| None)
        .map_err(|d| d.0.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    compile(&spec).map_err(|d| d.0.iter().map(ToString::to_string).collect())
}

fn errors(text: &str) -> Vec<String> {
    match plan(text) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => e,
    }
}

const QUICKSTART: &str = r#"pipeline: quickstart
nodes:
  sensors:  { kind: generator, devices: 200, sites: 8, rate_per_device: 100/s, seed: 7 }
  hot:      { kind: filter, inputs: [sensors], where: "value > 0.5 AND sensor = 'vibration'" }
  scaled:   { kind: map, inputs: [hot], fields: { value_mm: "value * 25.4", alarm: "value > 3" }, drop: [site] }
  per_sec:  { kind: window, inputs: [sensors], key: [site, device, sensor], size: 1s,
              aggregates: [count, min, max, mean, stddev, p95, "max(value)"], allowed_lateness: 2s }
  late_log: { kind: file, inputs: [per_sec.late], path: out/late.jsonl }
  spikes:   { kind: detect, inputs: [sensors], key: [device, sensor], method: zscore, threshold: 4.0 }
  fleet:    { kind: table, inputs: [per_sec] }
  alerts:   { kind: stdout, inputs: [spikes] }
"#;

#[test]
fn quickstart_schemas_placements_and_cut() {
    let p = plan(QUICKSTART).unwrap();
    let ids: Vec<&str> = p.nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(
        ids,
        vec![
            "sensors", "hot", "scaled", "per_sec", "late_log", "spikes", "fleet", "alerts"
        ]
    );
    let scaled = p.node("scaled").unwrap();
    assert_eq!(
        scaled.schema.to_string(),
        "{ ts: timestamp_ms, device: string, sensor: string, value: f64, value_mm: f64, alarm: bool }"
    );
    let per_sec = p.node("per_sec").unwrap();
    assert_eq!(
        per_sec.schema.to_string(),
        "{ window_start: timestamp_ms, window_end: timestamp_ms, site: string, device: string, sensor: string, \
         count: i64, min: f64, max: f64, mean: f64, stddev: f64, p95: f64, max_value: f64 }"
    );
    assert_eq!(per_sec.time_field.as_deref(), Some("window_start"));
    let Some(w) = per_sec.settings_as::<WindowSettings>() else {
        panic!()
    };
    assert_eq!(w.time_field, "ts");
    let spikes = p.node("spikes").unwrap();
    assert_eq!(spikes.schema.fields().last().unwrap().0, "reason");
    assert_eq!(p.node("fleet").unwrap().time_field, None);
    for (id, placement) in [
        ("sensors", Placement::Edge),
        ("hot", Placement::Edge),
        ("late_log", Placement::Edge),
        ("fleet", Placement::Cloud),
        ("alerts", Placement::Edge),
    ] {
        assert_eq!(p.node(id).unwrap().placement, placement, "{id}");
    }
    assert_eq!(p.topics.len(), 1);
    assert_eq!(p.topics[0].name, "quickstart.per_sec");
    assert_eq!(p.topics[0].consumers, vec!["fleet"]);
    assert_eq!(p.topics[0].time_field, "window_start");
    assert!(
        p.render_text()
            .contains("edge per_sec --[quickstart.per_sec]--> cloud fleet")
    );
}

#[test]
fn placement_inherits_cloud_from_any_input_and_late_topics_are_named() {
    let p = plan(
        "pipeline: x\nnodes:\n  g: { kind: generator }\n  w: { kind: window, inputs: [g], size: 1s, aggregates: [count] }\n  \
         c: { kind: filter, inputs: [g], where: \"value > 1\", placement: cloud }\n  \
         f: { kind: filter, inputs: [c], where: \"value > 2\" }\n  \
         l: { kind: stdout, inputs: [w.late], placement: cloud }\n  t: { kind: table, inputs: [w] }\n",
    )
    .unwrap();
    assert_eq!(p.node("f").unwrap().placement, Placement::Cloud);
    let names: Vec<&str> = p.topics.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, vec!["x.g", "x.w", "x.w.late"]);
    let late = p
        .topic(&StreamRef {
            node: "w".into(),
            port: Port::Late,
        })
        .unwrap();
    assert_eq!(late.time_field, "ts");
    assert_eq!(late.schema, p.node("g").unwrap().schema);
}

#[test]
fn one_topic_per_stream_with_every_consumer() {
    let p = plan("pipeline: x\nnodes:\n  g: { kind: generator }\n  a: { kind: table, inputs: [g] }\n  b: { kind: table, inputs: [g] }\n").unwrap();
    assert_eq!(p.topics.len(), 1);
    assert_eq!(p.topics[0].consumers, vec!["a", "b"]);
}

#[test]
fn edge_node_may_not_read_the_cloud() {
    let e = errors(
        "pipeline: x\nnodes:\n  g: { kind: generator }\n  c: { kind: filter, inputs: [g], where: \"true\", placement: cloud }\n  d: { kind: detect, inputs: [c], method: zscore }\n",
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("p.yaml:5:31: error: node \"d\" runs at the edge but reads \"c\", which runs in the cloud"), "{e:?}");
    assert!(
        e[0].contains("only control arcs may flow cloud -> edge"),
        "{e:?}"
    );
}

#[test]
fn unknown_input_suggests_the_closest_node() {
    let e = errors(
        "pipeline: x\nnodes:\n  sensors: { kind: generator }\n  t: { kind: table, inputs: [sensor] }\n  u: { kind: table, inputs: [zzz] }\n",
    );
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].starts_with(
            "p.yaml:4:30: error: node \"t\": unknown input \"sensor\"; did you mean \"sensors\"?"
        ),
        "{e:?}"
    );
    assert!(e[1].contains("= help: nodes are: sensors, t, u"), "{e:?}");
}

/// A node with its own errors still has its inputs checked: `validate` reports both.
#[test]
fn unknown_input_of_a_node_with_other_errors_is_reported_too() {
    let text = "pipeline: x\nnodes:\n  sensors: { kind: generator }\n  w: { kind: window, inputs: [sensor], size: 1s, aggregates: [count], colour: red }\n  t: { kind: table, inputs: [w] }\n";
    let e: Vec<String> = plan_with("p.yaml", text, Path::new(""), &|_| None)
        .expect_err("errors")
        .0
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        e.iter().any(|m| m.contains("unknown field \"colour\"")),
        "{e:?}"
    );
    assert!(
        e.iter().any(|m| m.starts_with(
            "p.yaml:4:31: error: node \"w\": unknown input \"sensor\"; did you mean \"sensors\"?"
        )),
        "{e:?}"
    );
}

#[test]
fn kafka_nodes_default_to_the_edge_and_a_sink_key_must_be_an_input_field() {
    let p = plan("pipeline: x\nnodes:\n  k: { kind: kafka, topic: r, schema: { ts: timestamp_ms, device: string, value: f64 } }\n  w: { kind: window, inputs: [k], key: [device], size: 1s, aggregates: [count] }\n  o: { kind: kafka, inputs: [w], topic: s, key: device }\n  t: { kind: table, inputs: [w] }\n").unwrap();
    let placement = |id: &str| p.node(id).unwrap().placement;
    assert_eq!(
        (
            placement("k"),
            placement("w"),
            placement("o"),
            placement("t")
        ),
        (
            Placement::Edge,
            Placement::Edge,
            Placement::Edge,
            Placement::Cloud
        )
    );
    let e = errors(
        "pipeline: x\nnodes:\n  k: { kind: kafka, topic: r, schema: { ts: timestamp_ms, device: string } }\n  o: { kind: kafka, inputs: [k], topic: s, key: devise }\n",
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with(
            "p.yaml:4:49: error: node \"o\": field \"key\": the input has no field \"devise\""
        ),
        "{e:?}"
    );
    assert!(e[0].contains("did you mean \"device\"?"), "{e:?}");
}

#[test]
fn late_only_from_windows_and_sinks_have_no_output() {
    let e = errors(
        "pipeline: x\nnodes:\n  g: { kind: generator }\n  t: { kind: table, inputs: [g] }\n  a: { kind: stdout, inputs: [g.late] }\n  b: { kind: stdout, inputs: [t] }\n",
    );
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].contains("only window nodes have a late output"),
        "{e:?}"
    );
    assert!(
        e[1].contains("is a table sink, which has no output"),
        "{e:?}"
    );
}

#[test]
fn cycles_are_reported_once_with_their_nodes() {
    let e = errors(
        "pipeline: x\nnodes:\n  g: { kind: generator }\n  a: { kind: filter, inputs: [g, c], where: \"true\" }\n  b: { kind: filter, inputs: [a], where: \"true\" }\n  c: { kind: filter, inputs: [b], where: \"true\" }\n  d: { kind: stdout, inputs: [c] }\n  s: { kind: filter, inputs: [s], where: \"true\" }\n",
    );
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].starts_with("p.yaml:4:3: error: node \"a\": cycle: a -> b -> c -> a"),
        "{e:?}"
    );
    assert!(e[1].contains("node \"s\": cycle: s -> s"), "{e:?}");
}

#[test]
fn inputs_must_share_a_schema() {
    let e = errors(
        "pipeline: x\nnodes:\n  g: { kind: generator }\n  h: { kind: generator, ground_truth: true }\n  u: { kind: stdout, inputs: [g, h] }\n",
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].contains("input \"h\" has schema"), "{e:?}");
}

#[test]
fn expression_errors_point_at_the_expression() {
    let e = errors(
        "pipeline: x\nnodes:\n  g: { kind: generator }\n  f: { kind: filter, inputs: [g], where: \"value + 1\" }\n  m: { kind: map, inputs: [g], fields: { a: \"valu * 2\", ts: \"value\" } }\n",
    );
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].starts_with(
            "p.yaml:4:42: error: node \"f\": field \"where\": filter expression must be boolean"
        ),
        "{e:?}"
    );
    assert!(
        e[1].starts_with("p.yaml:5:45: error: node \"m\": field \"fields.a\": No field named valu"),
        "{e:?}"
    );
}

#[test]
fn map_must_keep_the_time_field() {
    let e = errors(
        "pipeline: x\nnodes:\n  g: { kind: generator }\n  m: { kind: map, inputs: [g], fields: { v: \"1\" }, drop: [ts] }\n  n: { kind: map, inputs: [g], fields: { ts: \"value\" } }\n",
    );
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(e[0].contains("cannot drop the time field \"ts\""), "{e:?}");
    assert!(
        e[1].contains("the time field \"ts\" must stay timestamp_ms, but the map makes it f64"),
        "{e:?}"
    );
}

#[test]
fn field_references_are_checked_against_the_input() {
    let e = errors(
        "pipeline: x\nnodes:\n  g: { kind: generator }\n  w: { kind: window, inputs: [g], key: [devce], size: 1s, aggregates: [count, \"mean(site)\"] }\n  d: { kind: detect, inputs: [g], value: sensor, method: zscore }\n",
    );
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(
        e[0].contains("field \"key\": the input has no field \"devce\"")
            && e[0].contains("did you mean \"device\"?"),
        "{e:?}"
    );
    assert!(
        e[1].contains("mean needs an i64 or f64 field, but \"site\" is string"),
        "{e:?}"
    );
    assert!(
        e[2].contains("\"sensor\" is string, but a detector needs i64 or f64"),
        "{e:?}"
    );
}

#[test]
fn hopping_window_over_a_file_source() {
    let p = plan("pipeline: x\nnodes:\n  f: { kind: file, path: in.csv, schema: { at: timestamp_ms, n: i64 }, time_field: at }\n  w: { kind: window, inputs: [f], size: 1m, slide: 15s, aggregates: [\"sum(n)\", \"mean(n)\"] }\n").unwrap();
    let w = p.node("w").unwrap();
    assert_eq!(
        w.schema.to_string(),
        "{ window_start: timestamp_ms, window_end: timestamp_ms, sum_n: i64, mean_n: f64 }"
    );
    assert!(p.render_text().contains("hopping 1m every 15s on at"));
}

#[test]
fn renderers_show_clusters_and_cut_labels() {
    let p = plan(QUICKSTART).unwrap();
    let dot = p.render_dot();
    assert!(
        dot.contains("subgraph cluster_edge") && dot.contains("subgraph cluster_cloud"),
        "{dot}"
    );
    assert!(
        dot.contains(
            "\"per_sec\" -> \"fleet\" [label=\"quickstart.per_sec\", style=bold, color=red];"
        ),
        "{dot}"
    );
    assert!(
        dot.contains("\"per_sec\" -> \"late_log\" [label=\"late\", style=dashed];"),
        "{dot}"
    );
    let mermaid = p.render_mermaid();
    assert!(
        mermaid.starts_with("flowchart LR\n  subgraph edge_side [edge]"),
        "{mermaid}"
    );
    assert!(
        mermaid.contains("n_per_sec ==>|\"quickstart.per_sec\"| n_fleet"),
        "{mermaid}"
    );
}

/// The time to plan a pipeline of one generator and `n` sinks reading it (best of 3).
fn planning_time(n: usize) -> std::time::Duration {
    let mut text = String::from("pipeline: wide\nnodes:\n  sensors: { kind: generator }\n");
    for i in 0..n {
        text.push_str(&format!(
            "  out_{i}: {{ kind: stdout, inputs: [sensors] }}\n"
        ));
    }
    (0..3)
        .map(|_| {
            let started = std::time::Instant::now();
            let plan = plan(&text).unwrap();
            assert_eq!(plan.nodes.len(), n + 1);
            started.elapsed()
        })
        .min()
        .unwrap()
}

/// Regression (hardening case 18): validating 90k nodes took 59 s, quadratic in the node
/// count (a linear duplicate-key check per YAML map entry, a linear scan per node for the
/// next one in topological order). 16 times the nodes must cost about 16 times the time, not
/// 256: the bound of 64 leaves room for a noisy machine.
#[test]
fn planning_time_grows_linearly_with_the_node_count() {
    let small = planning_time(1_000);
    let large = planning_time(16_000);
    let ratio = large.as_secs_f64() / small.as_secs_f64().max(1e-6);
    assert!(
        ratio < 64.0,
        "1k nodes {small:?}, 16k nodes {large:?}: {ratio:.0}x"
    );
}
