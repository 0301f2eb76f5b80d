//! The registry test: kind names are unique, and every kind's example node validates and
//! plans (which also checks, in this debug build, that its reader reads only the settings
//! its kind lists).

use std::collections::HashSet;
use std::path::Path;

use super::{Counted, KINDS, Role};
use crate::plan::plan_with;
use crate::spec::parse_partial;

fn no_env(_: &str) -> Option<String> {
    None
}

/// A pipeline with a `reading` schema, a generator `src` and the node `n` under test.
fn pipeline_with(node: &str) -> String {
    format!(
        "pipeline: registry\nschema:\n  reading: {{ ts: timestamp_ms, device: string, site: string, sensor: string, value: f64 }}\nnodes:\n  src: {{ kind: generator, devices: 2, events: 10 }}\n  n: {node}\n"
    )
}

#[test]
fn kind_names_are_unique() {
    let mut seen = HashSet::new();
    for kind in KINDS {
        assert!(
            seen.insert(kind.name()),
            "kind {} is registered twice",
            kind.name()
        );
    }
    assert_eq!(seen.len(), 13, "every kind of the README is registered");
}

#[test]
fn every_kind_example_validates_and_plans() {
    // Relative paths (the infer example's model) are resolved against `pipelines/`.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    for kind in KINDS {
        let text = pipeline_with(kind.example());
        let plan = plan_with("registry.yaml", &text, &dir, &no_env)
            .unwrap_or_else(|e| panic!("the {} example does not plan:\n{e}", kind.name()));
        let node = plan
            .node("n")
            .unwrap_or_else(|| panic!("the {} example has no node n", kind.name()));
        assert_eq!(node.kind, kind.name());
        assert_eq!(node.settings.kind().name(), kind.name());
        let role = match kind.role() {
            Role::SourceOrSink if node.inputs.is_empty() => Role::Source,
            Role::SourceOrSink => Role::Sink,
            other => other,
        };
        assert_eq!(node.is_sink(), role == Role::Sink, "kind {}", kind.name());
    }
}

#[test]
fn every_listed_setting_is_read_by_its_kind() {
    // Set each listed key the example leaves out to a value: the reader must look at it (its
    // position is recorded) or report it (a bad value, or a setting of the other role).
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    for kind in KINDS {
        let example = kind.example();
        for key in kind.settings() {
            if example.contains(&format!(" {key}:")) {
                continue;
            }
            let node = example.replacen("{ ", &format!("{{ {key}: x, "), 1);
            let text = pipeline_with(&node);
            let (spec, reporter) = parse_partial("registry.yaml", &text, &dir, &no_env);
            let read = spec
                .as_ref()
                .and_then(|s| s.nodes.iter().find(|n| n.id == "n"))
                .is_some_and(|n| n.positions.contains_key(*key));
            let reported = reporter.finish().0.iter().any(|d| {
                d.message.contains(&format!("field \"{key}\"")) && !d.message.contains("unknown")
            });
            assert!(
                read || reported,
                "kind {}: listed setting {key} is neither read nor reported",
                kind.name()
            );
        }
    }
}

/// Regression: the run report counted the source events of `generator` and `file` nodes only
/// (a list of kind names in the runtime), so a pipeline fed by `kafka` reported no events/s
/// and no bytes/event.
#[test]
fn every_stream_source_counts_towards_source_events() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    for kind in KINDS {
        let text = pipeline_with(kind.example());
        let Ok(plan) = plan_with("registry.yaml", &text, &dir, &no_env) else {
            continue;
        };
        let Some(node) = plan.node("n") else { continue };
        if node.inputs.is_empty() && node.time_field.is_some() {
            assert_eq!(
                kind.counted(),
                Some(Counted::SourceEvents),
                "kind {}",
                kind.name()
            );
        }
    }
    let kafka = super::kind("kafka").and_then(|k| k.counted());
    assert_eq!(kafka, Some(Counted::SourceEvents));
}
