//! The `map` kind: computes fields from SQL expressions and drops fields; the event-time
//! field must survive as `timestamp_ms`.

use std::fmt::Write as _;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use edgeflow_operators::expr::CompiledMap;
use edgeflow_operators::schema::FieldType;
use timely::dataflow::Scope;

use super::{NodeKind, NodeSettings, Role, follow_inputs};
use crate::error::EngineError;
use crate::plan::render::list;
use crate::plan::{Placement, PlanNode, StreamInfo, TypeCx, Typed, field_hint, user_message};
use crate::runtime::batch::EventTime;
use crate::runtime::batch_operator::{FnLogic, map_batches};
use crate::runtime::node::{BatchStream, BuildEnv, NodeOutputs, operator_error, require_input};
use crate::spec::settings::{Context, Settings};
use crate::spec::yaml::Value;

/// The `map` kind.
pub struct Map;

impl NodeKind for Map {
    fn name(&self) -> &'static str {
        "map"
    }

    fn role(&self) -> Role {
        Role::Transform
    }

    fn settings(&self) -> &'static [&'static str] {
        &["fields", "drop"]
    }

    fn read(&self, s: &mut Settings, _ctx: &Context, _role: Role) -> Option<Arc<dyn NodeSettings>> {
        s.map().map(|x| Arc::new(x) as Arc<dyn NodeSettings>)
    }

    fn example(&self) -> &'static str {
        "{ kind: map, inputs: [src], fields: { doubled: value * 2 }, drop: [site] }"
    }
}

/// Settings of a `map`.
#[derive(Clone, Debug, PartialEq)]
pub struct MapSettings {
    /// `(name, SQL expression)` in order.
    pub fields: Vec<(String, String)>,
    /// Fields removed.
    pub drop: Vec<String>,
}

impl NodeSettings for MapSettings {
    fn kind(&self) -> &'static dyn NodeKind {
        &Map
    }

    fn default_placement(&self, inputs: &[Placement]) -> Placement {
        follow_inputs(inputs)
    }

    fn typed(&self, cx: &mut TypeCx) -> Option<Typed> {
        let (r, f) = cx.split();
        let (node, input) = (f.node, f.input);
        let (id, schema) = (&node.id, &input.schema);
        let (fields, drop) = (&self.fields, &self.drop);
        let typed = {
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
            Typed::new(
                self.clone(),
                Some(StreamInfo {
                    schema: out,
                    time_field: input.time_field.clone(),
                }),
            )
        };
        f.ok.get().then_some(typed)
    }

    fn render(&self) -> String {
        let (fields, drop) = (&self.fields, &self.drop);
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

    fn build<'scope>(
        &self,
        _scope: Scope<'scope, EventTime>,
        node: &PlanNode,
        inputs: Vec<BatchStream<'scope>>,
        env: &BuildEnv,
    ) -> Result<NodeOutputs<'scope>, EngineError> {
        let stream = require_input(node, inputs)?;
        let input = env.input_schema(node)?;
        let compiled =
            CompiledMap::new(&input, &self.fields, &self.drop).map_err(operator_error(node))?;
        Ok(NodeOutputs::main(map_batches(
            stream,
            node,
            env,
            FnLogic(move |batch: &RecordBatch| compiled.apply(batch).map(Some)),
        )))
    }
}

impl Settings<'_, '_> {
    fn map(&mut self) -> Option<MapSettings> {
        let fields = match self.get("fields") {
            None => {
                self.missing("fields", "add `fields: { name: \"<SQL expression>\" }`");
                Vec::new()
            }
            Some(node) => match &node.value {
                Value::Map(entries) if !entries.is_empty() => {
                    let mut out = Vec::new();
                    for (k, v) in entries {
                        match v.as_scalar() {
                            Some(expr) if !expr.trim().is_empty() => {
                                self.positions.insert(format!("fields.{}", k.name), v.pos);
                                out.push((k.name.clone(), expr.to_owned()));
                            }
                            _ => self.err(
                                v.pos,
                                "fields",
                                format!(
                                    "\"{}\" must be an SQL expression, not {}",
                                    k.name,
                                    v.shape()
                                ),
                                None,
                            ),
                        }
                    }
                    out
                }
                _ => {
                    self.err(
                        node.pos,
                        "fields",
                        format!(
                            "expected a non-empty map of name -> SQL expression, not {}",
                            node.shape()
                        ),
                        None,
                    );
                    Vec::new()
                }
            },
        };
        let drop = self.field_list("drop");
        Some(MapSettings { fields, drop })
    }
}
