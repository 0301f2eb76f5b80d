//! Planning `insight` nodes: each rule typed against the input it names (the inputs of an
//! insight may have different schemas), SQL rules planned against the run's tables, and
//! control actions checked against the edge nodes they target.

use std::cell::Cell;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use edgeflow_operators::control::{ControlAction, control_schema};
use edgeflow_operators::insight::incident_schema;
use edgeflow_operators::schema::{EventSchema, FieldType};

use super::{InsightSettings, RuleCondition};
use crate::plan::{Placement, PlanNode, StreamInfo, field_hint};
use crate::spec::{NodeSpec, Pos, Reporter, StreamRef, did_you_mean};

/// The SQL table every insight's incidents land in.
pub const INCIDENTS_TABLE: &str = "incidents";

/// The incident stream (an insight's main output).
pub(super) fn incident_stream() -> StreamInfo {
    StreamInfo {
        schema: incident_schema(),
        time_field: "time".to_owned(),
    }
}

/// The control stream (an insight's `control` output).
pub(super) fn control_stream() -> StreamInfo {
    StreamInfo {
        schema: control_schema(),
        time_field: "apply_at".to_owned(),
    }
}

/// Types every rule of an insight against the input it reads; fills in inputs, time fields
/// and default keys and values. `None` when a rule is wrong (reported).
pub(super) fn type_insight(
    r: &mut Reporter,
    node: &NodeSpec,
    settings: &InsightSettings,
    inputs: &[(StreamRef, Pos, usize)],
    streams: &HashMap<StreamRef, StreamInfo>,
    changelogs: &HashSet<StreamRef>,
) -> Option<InsightSettings> {
    let id = &node.id;
    // A Cell so the field checker and the arms can both clear it.
    let ok = Cell::new(true);
    let mut settings = settings.clone();
    for (i, rule) in settings.rules.iter_mut().enumerate() {
        let kind = rule.condition.kind().name();
        let at = |field: &str| node.pos_of(&format!("rules[{i}].{kind}.{field}"));
        let rule_pos = node.pos_of(&format!("rules[{i}].{kind}"));
        if matches!(rule.condition, RuleCondition::Sql { .. }) {
            continue;
        }
        let names: Vec<String> = inputs.iter().map(|(s, _, _)| s.to_string()).collect();
        let input = match &rule.input {
            None if inputs.len() == 1 => inputs[0].0.clone(),
            None => {
                ok.set(false);
                r.error(
                    rule_pos,
                    format!(
                        "node \"{id}\": rule \"{}\": the node has {} inputs; name the one this rule reads",
                        rule.name,
                        inputs.len()
                    ),
                    Some(format!("add `input: <one of {}>`", names.join(", "))),
                );
                continue;
            }
            Some(input) if !inputs.iter().any(|(s, _, _)| s == input) => {
                ok.set(false);
                let text = input.to_string();
                let hint = match did_you_mean(&text, names.iter().map(String::as_str)) {
                    Some(m) => format!("did you mean \"{m}\"?"),
                    None => format!(
                        "a rule reads one of the node's inputs: {}",
                        names.join(", ")
                    ),
                };
                r.error(
                    at("input"),
                    format!(
                        "node \"{id}\": field \"rules[{i}].{kind}.input\": \"{text}\" is not an input of the node"
                    ),
                    Some(hint),
                );
                continue;
            }
            Some(input) => input.clone(),
        };
        let Some(info) = streams.get(&input) else {
            ok.set(false);
            continue;
        };
        let schema = &info.schema;
        if changelogs.contains(&input) {
            ok.set(false);
            r.error(
                if rule.input.is_some() {
                    at("input")
                } else {
                    rule_pos
                },
                format!(
                    "node \"{id}\": rule \"{}\": \"{input}\" is a changelog (an aggregate's updates and retractions), not a stream of events",
                    rule.name
                ),
                Some(
                    "read the events it aggregates, or materialize it with a table and watch it with a `sql` rule"
                        .into(),
                ),
            );
            continue;
        }
        rule.input = Some(input);
        rule.time_field = info.time_field.clone();
        let check = |r: &mut Reporter, path: &str, name: &str| -> Option<FieldType> {
            let t = schema.field_type(name);
            if t.is_none() {
                ok.set(false);
                r.error(
                    at(path),
                    format!(
                        "node \"{id}\": field \"rules[{i}].{kind}.{}\": the input has no field \"{name}\"",
                        path.split('[').next().unwrap_or(path)
                    ),
                    Some(field_hint(name, schema)),
                );
            }
            t
        };
        match &mut rule.condition {
            RuleCondition::Correlated { by, device, .. } => {
                for (j, b) in by.iter().enumerate() {
                    check(r, &format!("by[{j}]"), b);
                }
                check(r, "device", device);
            }
            RuleCondition::Drift { key, value, .. } => {
                if key.is_empty() {
                    *key = default_key(schema, &["device", "sensor"]);
                }
                if key.is_empty() {
                    missing_default(r, &ok, rule_pos, id, &rule.name, "key", "device or sensor");
                }
                for (j, k) in key.iter().enumerate() {
                    check(r, &format!("key[{j}]"), k);
                }
                if value.is_empty() {
                    *value = default_key(schema, &["mean", "value"])
                        .into_iter()
                        .next()
                        .unwrap_or_default();
                }
                if value.is_empty() {
                    missing_default(r, &ok, rule_pos, id, &rule.name, "value", "mean or value");
                } else if let Some(t) = check(r, "value", value)
                    && !t.is_numeric()
                {
                    ok.set(false);
                    r.error(
                        at("value"),
                        format!(
                            "node \"{id}\": field \"rules[{i}].drift.value\": \"{value}\" is {t}, but drift needs i64 or f64"
                        ),
                        None,
                    );
                }
            }
            RuleCondition::Silence { key, .. } => {
                if key.is_empty() {
                    *key = default_key(schema, &["device"]);
                }
                if key.is_empty() {
                    missing_default(r, &ok, rule_pos, id, &rule.name, "key", "device");
                }
                for (j, k) in key.iter().enumerate() {
                    check(r, &format!("key[{j}]"), k);
                }
            }
            RuleCondition::Sql { .. } => {}
        }
    }
    ok.get().then_some(settings)
}

fn default_key(schema: &EventSchema, candidates: &[&str]) -> Vec<String> {
    candidates
        .iter()
        .filter(|c| schema.field_type(c).is_some())
        .map(|c| (*c).to_owned())
        .collect()
}

fn missing_default(
    r: &mut Reporter,
    ok: &Cell<bool>,
    pos: Pos,
    id: &str,
    rule: &str,
    field: &str,
    defaults: &str,
) {
    ok.set(false);
    r.error(
        pos,
        format!(
            "node \"{id}\": rule \"{rule}\": the input has no {defaults} field to use as `{field}`"
        ),
        Some(format!("name it: `{field}: ...`")),
    );
}

/// The lowercased words of an SQL query (what may name a table): a rule waits for the tables
/// its query names.
pub fn words_of(query: &str) -> BTreeSet<String> {
    query
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect()
}

/// The nodes that read, directly or not, the outputs of `node` (`nodes` in topological order).
fn downstream_of<'a>(node: &'a str, nodes: &'a [PlanNode]) -> HashSet<&'a str> {
    let mut out: HashSet<&str> = HashSet::from([node]);
    for n in nodes {
        if n.inputs.iter().any(|i| out.contains(i.node.as_str())) {
            out.insert(n.id.as_str());
        }
    }
    out
}

/// Checks what needs the whole plan: control targets (edge nodes that support the action)
/// and SQL rules (planned against the run's tables, `incidents` included).
pub(super) fn check_insights(r: &mut Reporter, specs: &[NodeSpec], nodes: &[PlanNode]) {
    let mut tables: Vec<(String, EventSchema)> = nodes
        .iter()
        .filter_map(|n| {
            n.settings
                .table()
                .map(|(name, _)| (name.to_owned(), n.schema.clone()))
        })
        .collect();
    let has_insight = nodes
        .iter()
        .any(|n| n.settings_as::<InsightSettings>().is_some());
    if has_insight {
        if let Some(clash) = nodes.iter().find(|n| {
            n.settings
                .table()
                .is_some_and(|(name, _)| name == INCIDENTS_TABLE)
        }) {
            let spec = specs.iter().find(|s| s.id == clash.id);
            r.error(
                spec.map_or(Pos::default(), |s| s.pos_of("name")),
                format!(
                    "node \"{}\": table name \"{INCIDENTS_TABLE}\" is reserved for the incidents of insight nodes",
                    clash.id
                ),
                Some("give the table another `name:`".into()),
            );
        }
        tables.push((INCIDENTS_TABLE.to_owned(), incident_schema()));
    }
    for node in nodes {
        let Some(settings) = node.settings_as::<InsightSettings>() else {
            continue;
        };
        let Some(spec) = specs.iter().find(|s| s.id == node.id) else {
            continue;
        };
        for (i, c) in settings.control.iter().enumerate() {
            check_target(r, spec, i, &c.node, &c.action, nodes, specs);
        }
        for (i, rule) in settings.rules.iter().enumerate() {
            let RuleCondition::Sql { query, key, .. } = &rule.condition else {
                continue;
            };
            // The rule waits for the tables it reads: one fed by the insight itself would
            // never be complete.
            let downstream = downstream_of(&node.id, nodes);
            let words = words_of(query);
            if let Some(fed) = nodes.iter().find(|n| {
                n.settings
                    .table()
                    .is_some_and(|(name, _)| words.contains(&name.to_ascii_lowercase()))
                    && downstream.contains(n.id.as_str())
            }) {
                r.error(
                    spec.pos_of(&format!("rules[{i}].sql.query")),
                    format!(
                        "node \"{}\": field \"rules[{i}].sql.query\": table node \"{}\" is fed by this insight, whose rules cannot wait for it",
                        node.id, fed.id
                    ),
                    Some(format!("query the `{INCIDENTS_TABLE}` table for the insight's own incidents")),
                );
                continue;
            }
            if let Err(message) = check_sql(query, key.as_deref(), &tables) {
                r.error(
                    spec.pos_of(&format!("rules[{i}].sql.query")),
                    format!(
                        "node \"{}\": field \"rules[{i}].sql.query\": {message}",
                        node.id
                    ),
                    Some(format!(
                        "tables are: {}",
                        tables
                            .iter()
                            .map(|(n, _)| n.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                );
            }
        }
    }
}

fn check_target(
    r: &mut Reporter,
    spec: &NodeSpec,
    i: usize,
    target: &str,
    action: &ControlAction,
    nodes: &[PlanNode],
    specs: &[NodeSpec],
) {
    let id = &spec.id;
    let pos = spec.pos_of(&format!("control[{i}].node"));
    let Some(node) = nodes.iter().find(|n| n.id == target) else {
        if specs.iter().any(|s| s.id == target) {
            return; // a node with errors of its own, already reported
        }
        let edge: Vec<&str> = nodes
            .iter()
            .filter(|n| n.placement == Placement::Edge)
            .map(|n| n.id.as_str())
            .collect();
        let hint = match did_you_mean(target, edge.iter().copied()) {
            Some(m) => format!("did you mean \"{m}\"?"),
            None => format!("edge nodes are: {}", edge.join(", ")),
        };
        r.error(
            pos,
            format!("node \"{id}\": field \"control[{i}].node\": unknown node \"{target}\""),
            Some(hint),
        );
        return;
    };
    if node.placement != Placement::Edge {
        r.error(
            pos,
            format!(
                "node \"{id}\": field \"control[{i}].node\": \"{target}\" runs in the cloud; control records go to edge nodes"
            ),
            Some("name an edge node (a detect, infer, window... placed at the edge)".into()),
        );
        return;
    }
    let action_name = serde_json::to_value(action)
        .ok()
        .and_then(|v| v.get("action").and_then(|a| a.as_str()).map(str::to_owned))
        .unwrap_or_default();
    let actions = node.settings.control_actions();
    let supported = actions.contains(&action_name.as_str());
    if !supported {
        let takers: Vec<&str> = nodes
            .iter()
            .filter(|n| {
                n.placement == Placement::Edge
                    && n.settings.control_actions().contains(&action_name.as_str())
            })
            .map(|n| n.id.as_str())
            .collect();
        let hint = match (actions.is_empty(), takers.is_empty()) {
            (true, _) => "controllable kinds are: infer, detect, window, generator".to_owned(),
            (false, true) => format!("\"{target}\" takes: {}", actions.join(", ")),
            (false, false) => format!(
                "\"{target}\" takes: {}; {action_name} goes to: {}",
                actions.join(", "),
                takers.join(", ")
            ),
        };
        r.error(
            pos,
            format!(
                "node \"{id}\": field \"control[{i}].node\": \"{target}\" is a {} node, which cannot take {action_name}",
                node.kind
            ),
            Some(hint),
        );
    }
}

/// Plans `query` against empty tables of the run's schemas; the error is DataFusion's.
fn check_sql(
    query: &str,
    key: Option<&str>,
    tables: &[(String, EventSchema)],
) -> Result<(), String> {
    let plan = || -> Result<Vec<String>, String> {
        let ctx = SessionContext::new();
        for (name, schema) in tables {
            let table = MemTable::try_new(schema.to_arrow(), vec![Vec::new()])
                .map_err(|e| e.to_string())?;
            ctx.register_table(name.as_str(), Arc::new(table))
                .map_err(|e| e.to_string())?;
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|e| e.to_string())?;
        let frame = runtime
            .block_on(ctx.sql(query))
            .map_err(|e| edgeflow_operators::expr::datafusion_message(&e))?;
        Ok(frame
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect())
    };
    // Planning runs on a thread of its own: the caller may be inside an async runtime.
    let columns = std::thread::scope(|s| s.spawn(plan).join())
        .map_err(|_| "planning the query panicked".to_owned())??;
    if let Some(key) = key
        && !columns.iter().any(|c| c == key)
    {
        return Err(format!(
            "the query returns no column \"{key}\" (named by `key`); it returns: {}",
            columns.join(", ")
        ));
    }
    Ok(())
}
