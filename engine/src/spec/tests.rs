//! Unit tests of spec parsing and per-kind validation.

use std::path::Path;

use edgeflow_connectors::file_source::FileFormat;

use super::settings::{parse_duration_ms, parse_rate};
use super::*;
use crate::kinds::{
    DetectMethod, DetectSettings, FileSinkSettings, FileSourceSettings, GeneratorSettings,
    InferSettings, KafkaFormat, KafkaSinkSettings, KafkaSourceSettings, WindowSettings,
};

fn env(name: &str) -> Option<String> {
    match name {
        "DEVICES" => Some("42".into()),
        _ => None,
    }
}

fn parse(text: &str) -> Result<PipelineSpec, Diagnostics> {
    parse_with("p.yaml", text, Path::new(""), &env)
}

fn errors(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(d) => d.0.iter().map(ToString::to_string).collect(),
    }
}

fn one_node(settings: &str) -> String {
    format!("pipeline: t\nnodes:\n  src: {{ kind: generator }}\n  n: {{ {settings} }}\n")
}

fn node<'a>(spec: &'a PipelineSpec, id: &str) -> &'a NodeSpec {
    spec.nodes.iter().find(|n| n.id == id).unwrap()
}

#[test]
fn durations_take_a_unit() {
    assert_eq!(parse_duration_ms("500ms"), Ok(500));
    assert_eq!(parse_duration_ms("1s"), Ok(1_000));
    assert_eq!(parse_duration_ms("5m"), Ok(300_000));
    assert_eq!(parse_duration_ms("2h"), Ok(7_200_000));
    assert_eq!(parse_duration_ms("1d"), Ok(86_400_000));
    assert_eq!(parse_duration_ms("0ms"), Ok(0));
    let plain = parse_duration_ms("5000").unwrap_err();
    assert!(plain.contains("\"5000ms\""), "{plain}");
    for bad in ["1.5s", "1 sec", "s", "-1s", "", "99999999999999999999d"] {
        assert!(parse_duration_ms(bad).is_err(), "{bad}");
    }
}

#[test]
fn rates_are_per_second() {
    assert_eq!(parse_rate("100/s"), Some(100.0));
    assert_eq!(parse_rate("0.5/s"), Some(0.5));
    assert_eq!(parse_rate("600/m"), Some(10.0));
    assert_eq!(parse_rate("3600/h"), Some(1.0));
    assert_eq!(parse_rate("7"), Some(7.0));
    for bad in ["0/s", "-1/s", "10/d", "fast", "inf"] {
        assert_eq!(parse_rate(bad), None, "{bad}");
    }
}

#[test]
fn generator_defaults_and_env_interpolation() {
    let spec = parse("pipeline: t\nnodes:\n  g: { kind: generator, devices: \"${DEVICES}\", sites: \"${SITES:-3}\" }\n")
        .unwrap();
    let Some(g) = node(&spec, "g").settings_as::<GeneratorSettings>() else {
        panic!()
    };
    assert_eq!((g.devices, g.sites, g.seed), (42, 3, 1));
    assert_eq!(g.sensors, vec!["vibration", "temperature"]);
    assert_eq!(g.rate_per_device, 10.0);
    assert_eq!(g.start_ms, None);
    assert_eq!(g.anomaly_shapes.len(), 4);
    assert_eq!(g.disorder_ms, 0);
}

#[test]
fn unset_variable_is_an_error_at_its_value() {
    let e = errors("pipeline: t\nnodes:\n  g: { kind: generator, seed: \"${SEED}\" }\n");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("p.yaml:3:31: error: environment variable \"SEED\" is not set"),
        "{e:?}"
    );
}

#[test]
fn generator_start_accepts_rfc3339_and_millis() {
    let spec = parse("pipeline: t\nnodes:\n  a: { kind: generator, start: 2026-01-02T00:00:01Z }\n  b: { kind: generator, start: 5 }\n").unwrap();
    let Some(a) = node(&spec, "a").settings_as::<GeneratorSettings>() else {
        panic!()
    };
    let Some(b) = node(&spec, "b").settings_as::<GeneratorSettings>() else {
        panic!()
    };
    assert_eq!(a.start_ms, Some(1_767_225_600_000 + 86_400_000 + 1_000));
    assert_eq!(b.start_ms, Some(5));
}

#[test]
fn generator_schema_must_match_its_output() {
    let ok = "pipeline: t\nschema:\n  r: { ts: timestamp_ms, device: string, site: string, sensor: string, value: f64 }\nnodes:\n  g: { kind: generator, schema: r }\n";
    parse(ok).unwrap();
    let e = errors("pipeline: t\nnodes:\n  g: { kind: generator, schema: { ts: timestamp_ms } }\n");
    assert!(
        e[0].contains("is not the generator's output schema"),
        "{e:?}"
    );
}

#[test]
fn unknown_kind_suggests_and_lists_kinds() {
    let e = errors(&one_node("kind: windw, inputs: [src]"));
    assert_eq!(e.len(), 1);
    assert!(
        e[0].contains("node \"n\": unknown kind \"windw\"; did you mean \"window\"?"),
        "{e:?}"
    );
    assert!(
        e[0].contains("= help: kinds are: generator, file, kafka, filter"),
        "{e:?}"
    );
}

#[test]
fn unknown_field_suggests_or_lists_fields() {
    let e = errors(&one_node("kind: filter, inputs: [src], wher: \"x\""));
    assert!(
        e.iter()
            .any(|m| m.contains("unknown field \"wher\" for kind filter; did you mean \"where\"?")),
        "{e:?}"
    );
    let e = errors(&one_node(
        "kind: filter, inputs: [src], where: x, zzzzzz: 1",
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains("unknown field \"zzzzzz\"") && e[0].contains("valid keys are: where, kind"),
        "{e:?}"
    );
}

#[test]
fn missing_required_settings_are_reported() {
    let e = errors(&one_node("kind: window, inputs: [src]"));
    assert!(
        e.iter()
            .any(|m| m.contains("missing required field \"size\"")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|m| m.contains("missing required field \"aggregates\"")),
        "{e:?}"
    );
    let e = errors(&one_node("kind: filter"));
    assert!(
        e.iter().any(|m| m.contains("needs at least one input")),
        "{e:?}"
    );
    let e = errors("nodes:\n  g: { kind: generator, inputs: [g] }\n");
    assert!(
        e.iter()
            .any(|m| m.contains("missing required key \"pipeline\"")),
        "{e:?}"
    );
    assert!(e.iter().any(|m| m.contains("takes no inputs")), "{e:?}");
}

#[test]
fn bad_duration_has_the_hint() {
    let e = errors(&one_node(
        "kind: window, inputs: [src], size: 1000, aggregates: [count]",
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with(
            "p.yaml:4:43: error: node \"n\": field \"size\": invalid duration \"1000\""
        ),
        "{e:?}"
    );
    assert!(
        e[0].contains("expected a duration like \"500ms\", \"1s\" or \"5m\""),
        "{e:?}"
    );
}

#[test]
fn window_slide_must_divide_size() {
    let spec = parse(&one_node(
        "kind: window, inputs: [src], size: 1m, slide: 10s, aggregates: [count, \"max(value)\"]",
    ))
    .unwrap();
    let Some(w) = node(&spec, "n").settings_as::<WindowSettings>() else {
        panic!()
    };
    assert_eq!((w.size_ms, w.slide_ms), (60_000, 10_000));
    assert_eq!(w.aggregates[1].output, "max_value");
    assert_eq!(w.aggregates[0].field, "value");
    assert!(w.time_field.is_empty());
    for slide in ["7s", "2m", "0ms"] {
        let e = errors(&one_node(&format!(
            "kind: window, inputs: [src], size: 1m, slide: {slide}, aggregates: [count]"
        )));
        assert!(e[0].contains("field \"slide\""), "{e:?}");
    }
}

#[test]
fn window_aggregates_are_checked() {
    let e = errors(&one_node(
        "kind: window, inputs: [src], size: 1s, aggregates: [cnt, \"max(value\", count, count]",
    ));
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(
        e[0].contains("unknown aggregate function \"cnt\"; did you mean \"count\"?"),
        "{e:?}"
    );
    assert!(e[1].contains("invalid aggregate \"max(value\""), "{e:?}");
    assert!(e[2].contains("listed twice"), "{e:?}");
}

#[test]
fn detect_method_settings() {
    let spec = parse(&one_node(
        "kind: detect, inputs: [src], method: threshold, max: 10",
    ))
    .unwrap();
    let Some(d) = node(&spec, "n").settings_as::<DetectSettings>() else {
        panic!()
    };
    assert_eq!(
        d.method,
        DetectMethod::Threshold {
            min: None,
            max: Some(10.0)
        }
    );
    let spec = parse(&one_node(
        "kind: detect, inputs: [src], method: zscore, emit: all",
    ))
    .unwrap();
    let Some(d) = node(&spec, "n").settings_as::<DetectSettings>() else {
        panic!()
    };
    assert_eq!(
        d.method,
        DetectMethod::ZScore {
            threshold: 4.0,
            min_samples: 30
        }
    );
    assert!(d.emit_all);
    let e = errors(&one_node("kind: detect, inputs: [src], method: threshold"));
    assert!(
        e[0].contains("threshold needs `min`, `max` or both"),
        "{e:?}"
    );
    let e = errors(&one_node(
        "kind: detect, inputs: [src], method: zscore, max: 3, threshold: -1",
    ));
    assert_eq!(e.len(), 2, "{e:?}");
    let e = errors(&one_node("kind: detect, inputs: [src], method: zscor"));
    assert!(
        e[0].contains("invalid value \"zscor\"; did you mean \"zscore\"?"),
        "{e:?}"
    );
}

#[test]
fn kafka_source_and_sink() {
    let text = "pipeline: t\nnodes:\n  k: { kind: kafka, topic: plant.readings, format: csv, schema: { ts: timestamp_ms, device: string, v: f64 }, disorder: 2s }\n  o: { kind: kafka, inputs: [k], topic: out, key: device }\n";
    let spec = parse(text).unwrap();
    let Some(k) = node(&spec, "k").settings_as::<KafkaSourceSettings>() else {
        panic!()
    };
    assert_eq!(
        (
            k.topic.as_str(),
            k.format,
            k.disorder_ms,
            k.group.as_deref()
        ),
        ("plant.readings", KafkaFormat::Csv, 2000, None)
    );
    let Some(o) = node(&spec, "o").settings_as::<KafkaSinkSettings>() else {
        panic!()
    };
    assert_eq!(
        (o.topic.as_str(), o.format, o.key.as_deref()),
        ("out", KafkaFormat::JsonLines, Some("device"))
    );

    let e = errors(
        "pipeline: t\nnodes:\n  k: { kind: kafka, topic: \"a b\", key: x, schema: { ts: timestamp_ms } }\n  o: { kind: kafka, inputs: [k], format: arrow, key: ts, group: g }\n",
    );
    assert_eq!(
        e.iter()
            .map(|m| m.lines().next().unwrap_or_default())
            .collect::<Vec<_>>(),
        vec![
            "p.yaml:3:28: error: node \"k\": field \"topic\": invalid topic name \"a b\"",
            "p.yaml:3:35: error: node \"k\": field \"key\": only applies to a kafka sink (a kafka node with inputs)",
            "p.yaml:4:8: error: node \"o\": missing required field \"topic\"",
            "p.yaml:4:54: error: node \"o\": field \"key\": a record holds a whole batch in the arrow format; a key field needs `format: jsonl`",
            "p.yaml:4:58: error: node \"o\": field \"group\": only applies to a kafka source (a kafka node without inputs)",
        ],
        "{e:?}"
    );
}

#[test]
fn file_source_and_sink() {
    let text = "pipeline: t\nnodes:\n  f: { kind: file, path: data/in.csv, schema: { ts: timestamp_ms, v: f64 }, header: false }\n  o: { kind: file, inputs: [f], path: out/x.parquet }\n";
    let spec = parse_with("dir/p.yaml", text, Path::new("dir"), &env).unwrap();
    let Some(f) = node(&spec, "f").settings_as::<FileSourceSettings>() else {
        panic!()
    };
    assert_eq!(f.path, Path::new("dir/data/in.csv"));
    assert_eq!(
        (f.format, f.header, f.time_field.as_str()),
        (FileFormat::Csv, false, "ts")
    );
    let Some(FileSinkSettings { path, format }) =
        node(&spec, "o").settings_as::<FileSinkSettings>()
    else {
        panic!()
    };
    assert_eq!(
        (path.as_path(), *format),
        (Path::new("dir/out/x.parquet"), FileFormat::Parquet)
    );

    let e = errors("pipeline: t\nnodes:\n  f: { kind: file, path: in.txt, schema: { t: f64 } }\n");
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].contains("cannot tell the format of \"in.txt\""),
        "{e:?}"
    );
    assert!(e[1].contains("the schema has no field \"ts\""), "{e:?}");
    let e = errors("pipeline: t\nnodes:\n  f: { kind: file, path: in.jsonl }\n");
    assert!(e[0].contains("missing required field \"schema\""), "{e:?}");
}

#[test]
fn inputs_syntax_and_table_names() {
    let e = errors(&one_node("kind: stdout, inputs: [src.early]"));
    assert!(e[0].contains("unknown output \"early\""), "{e:?}");
    let e = errors(
        "pipeline: t\nnodes:\n  g: { kind: generator }\n  a: { kind: table, inputs: [g], name: x }\n  b: { kind: table, inputs: [g], name: x }\n",
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains("table name \"x\" is already used by node \"a\""),
        "{e:?}"
    );
}

#[test]
fn yaml_syntax_error_has_a_position() {
    let e = errors("pipeline: t\nnodes: [\n");
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("p.yaml:3:"), "{e:?}");
}

#[test]
fn every_problem_is_collected_in_file_order() {
    let text = "pipeline: Bad Name\nnodez: {}\nnodes:\n  g: { kind: generator, devices: 0, rate_per_device: fast }\n  w: { kind: window, inputs: [g], size: 1x, aggregates: [count] }\n";
    let e = errors(text);
    assert_eq!(e.len(), 5, "{e:?}");
    let lines: Vec<usize> = parse(text).unwrap_err().0.iter().map(|d| d.line).collect();
    assert_eq!(lines, vec![1, 2, 4, 4, 5]);
}

#[test]
fn diagnostics_display_counts_errors() {
    let d = Diagnostics(vec![Diagnostic {
        file: "f.yaml".into(),
        line: 2,
        column: 3,
        message: "bad".into(),
        hint: Some("fix".into()),
    }]);
    assert_eq!(
        d.to_string(),
        "f.yaml:2:3: error: bad\n  = help: fix\n1 error"
    );
}

#[test]
fn infer_settings_and_model_errors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let parse_here = |text: &str| parse_with("p.yaml", text, &dir, &env);
    let spec = parse_here(&one_node(
        "kind: infer, inputs: [src], model: models/sensors.bpk, threshold: 2.5, emit: all",
    ))
    .unwrap();
    let Some(i) = node(&spec, "n").settings_as::<InferSettings>() else {
        panic!()
    };
    assert_eq!(i.model, dir.join("models/sensors.bpk"));
    assert_eq!((i.threshold, i.emit_all), (Some(2.5), true));
    assert!(i.key.is_empty(), "the planner fills the default key");

    let text = one_node("kind: infer, inputs: [src], model: models/nope.bpk, threshold: 0");
    let e: Vec<String> = parse_here(&text)
        .unwrap_err()
        .0
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e.iter().any(|m| m.contains("p.yaml:4:")
            && m.contains("field \"model\": cannot read")
            && m.contains("nope.bpk")
            && m.contains("edgeflow train")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|m| m.contains("field \"threshold\": must be greater than 0")),
        "{e:?}"
    );

    // A file that is not a model (this pipeline file) is reported as such.
    let e: Vec<String> = parse_here(&one_node(
        "kind: infer, inputs: [src], model: quickstart.yaml",
    ))
    .unwrap_err()
    .0
    .iter()
    .map(ToString::to_string)
    .collect();
    assert!(e[0].contains("not a valid edgeflow model"), "{e:?}");
    let e = errors(&one_node("kind: infer, inputs: [src]"));
    assert!(e[0].contains("missing required field \"model\""), "{e:?}");
}

#[test]
fn a_table_may_not_take_a_system_table_name() {
    let e = errors(&one_node(
        "kind: table, inputs: [src], name: edgeflow_nodes",
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("p.yaml:4:"), "{e:?}");
    assert!(
        e[0].contains("\"edgeflow_nodes\" is the name of a system table"),
        "{e:?}"
    );
    let e = errors(
        "pipeline: t\nnodes:\n  src: { kind: generator }\n  edgeflow_tables: { kind: table, inputs: [src] }\n",
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("p.yaml:4:"), "{e:?}");
    assert!(e[0].contains("system table"), "{e:?}");
    assert!(crate::sql::system::SYSTEM_TABLES == crate::kinds::SYSTEM_TABLE_NAMES);
}
