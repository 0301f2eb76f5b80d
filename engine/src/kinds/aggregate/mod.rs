//! The `aggregate` kind: incrementally maintained fleet aggregates (differential dataflow),
//! optionally joined to a `reference` (`lookup:`) and corrected by `identity`; its output is
//! a changelog of the view.

mod build;
mod rows;

use std::sync::Arc;

use edgeflow_operators::schema::{EventSchema, FieldType};
use timely::dataflow::Scope;

use super::reference::ReferenceSettings;
use super::{NodeKind, NodeSettings, Role};
use crate::error::EngineError;
use crate::plan::render::{duration, list};
use crate::plan::{Placement, PlanNode, StreamInfo, TypeCx, Typed, field_hint};
use crate::runtime::batch::EventTime;
use crate::runtime::node::{BatchStream, BuildEnv, NodeOutputs, require_input};
use crate::spec::settings::{Context, Settings};
use crate::spec::{AggregateCall, NodeSpec, PipelineSpec, Reporter, did_you_mean};

/// The `aggregate` kind.
pub struct Aggregate;

impl NodeKind for Aggregate {
    fn name(&self) -> &'static str {
        "aggregate"
    }

    fn role(&self) -> Role {
        Role::Transform
    }

    fn settings(&self) -> &'static [&'static str] {
        &[
            "key",
            "size",
            "allowed_lateness",
            "aggregates",
            "value",
            "identity",
            "lookup",
            "time_field",
        ]
    }

    fn read(&self, s: &mut Settings, _ctx: &Context, _role: Role) -> Option<Arc<dyn NodeSettings>> {
        s.aggregate().map(|x| Arc::new(x) as Arc<dyn NodeSettings>)
    }

    fn example(&self) -> &'static str {
        "{ kind: aggregate, inputs: [src], key: [site], size: 1m, allowed_lateness: 10s, aggregates: [count, sum(value), count_distinct(device)], value: value, identity: [device, ts], time_field: ts }"
    }
}

/// Functions of an `aggregate` (a subset of the window's: the ones a changing multiset of
/// rows can be kept under retractions, plus `count_distinct`).
pub const VIEW_AGGREGATE_FUNCTIONS: &[&str] =
    &["count", "sum", "min", "max", "mean", "count_distinct"];

/// Settings of an `aggregate`: an incrementally maintained fleet view (differential dataflow).
#[derive(Clone, Debug, PartialEq)]
pub struct AggregateSettings {
    /// Grouping fields, of the input or of the `lookup` reference (may be empty).
    pub key: Vec<String>,
    /// Event-time window length, ms; `None`: running totals over all time.
    pub size_ms: Option<i64>,
    /// How long after a window's end rows for it still update it, ms (windows only).
    pub allowed_lateness_ms: i64,
    /// The aggregates, in output order.
    pub aggregates: Vec<AggregateCall>,
    /// Fields that identify an input row: a later row with the same identity replaces
    /// (corrects) the earlier one. Empty: every row counts.
    pub identity: Vec<String>,
    /// A `reference` node whose rows are joined to every input row on the reference's key.
    pub lookup: Option<String>,
    /// The input's event-time field (filled by the planner when not written).
    pub time_field: String,
}

impl NodeSettings for AggregateSettings {
    fn kind(&self) -> &'static dyn NodeKind {
        &Aggregate
    }

    fn default_placement(&self, _inputs: &[Placement]) -> Placement {
        Placement::Cloud
    }

    fn typed(&self, cx: &mut TypeCx) -> Option<Typed> {
        let spec = cx.spec;
        let placement = cx.placement;
        let placement_of = cx.placement_of;
        let (r, f) = cx.split();
        let node = f.node;
        let check_field = |r: &mut Reporter, path: &str, setting: &str, name: &str| {
            f.check(r, path, setting, name)
        };
        let (settings, info) = type_aggregate(r, spec, node, f.input, self, &check_field)?;
        if !f.ok.get() {
            return None;
        }
        let lookup = settings
            .lookup
            .as_deref()
            .and_then(|l| placement_of(l).map(|p| (l, p)));
        if let Some((l, at)) = lookup
            && at != placement
        {
            r.error(
                node.pos_of("lookup"),
                format!(
                    "node \"{}\" runs at the {} but its lookup \"{l}\" runs at the {}",
                    node.id,
                    placement.name(),
                    at.name()
                ),
                Some(format!("give \"{l}\" the same `placement:`")),
            );
        }
        let mut typed = Typed::new(settings, Some(info));
        typed.changelog = true;
        Some(typed)
    }

    fn render(&self) -> String {
        let a = self;
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

    fn build<'scope>(
        &self,
        _scope: Scope<'scope, EventTime>,
        node: &PlanNode,
        inputs: Vec<BatchStream<'scope>>,
        env: &BuildEnv,
    ) -> Result<NodeOutputs<'scope>, EngineError> {
        build::aggregate(require_input(node, inputs)?, node, self, env)
    }
}

impl Settings<'_, '_> {
    fn aggregate(&mut self) -> Option<AggregateSettings> {
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
        Some(AggregateSettings {
            key,
            size_ms,
            allowed_lateness_ms,
            aggregates,
            identity,
            lookup,
            time_field,
        })
    }
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
    settings: &AggregateSettings,
    check_field: &dyn Fn(&mut Reporter, &str, &str, &str) -> Option<FieldType>,
) -> Option<(AggregateSettings, StreamInfo)> {
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
        let named = spec.nodes.iter().find(|n| n.id == *lookup);
        match named.map(|n| (n, n.settings_as::<ReferenceSettings>())) {
            Some((_, Some(reference))) => {
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
            Some((other, None)) => {
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
