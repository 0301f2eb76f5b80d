//! The `window` kind: event-time window aggregation (tumbling or hopping) per key, closed
//! when the watermark passes a window's end; late events go to its `late` output.
//! Controllable at the edge (`set_window_size` for tumbling windows, `enable`, `disable`).

mod build;

use std::sync::Arc;

use edgeflow_operators::schema::{EventSchema, FieldType};
use timely::dataflow::Scope;

use super::{Counted, NodeKind, NodeSettings, Role};
use crate::error::EngineError;
use crate::plan::render::{duration, list};
use crate::plan::{Placement, PlanNode, Port, StreamInfo, TypeCx, Typed};
use crate::runtime::batch::EventTime;
use crate::runtime::node::{BatchStream, BuildEnv, NodeOutputs, require_input};
use crate::spec::AggregateCall;
use crate::spec::settings::{Context, Settings};

/// The `window` kind.
pub struct Window;

impl NodeKind for Window {
    fn name(&self) -> &'static str {
        "window"
    }

    fn role(&self) -> Role {
        Role::Transform
    }

    fn settings(&self) -> &'static [&'static str] {
        &[
            "key",
            "size",
            "slide",
            "aggregates",
            "value",
            "allowed_lateness",
            "time_field",
        ]
    }

    fn read(&self, s: &mut Settings, _ctx: &Context, _role: Role) -> Option<Arc<dyn NodeSettings>> {
        s.window().map(|x| Arc::new(x) as Arc<dyn NodeSettings>)
    }

    fn ports(&self) -> &'static [Port] {
        &[Port::Late]
    }

    fn counted(&self) -> Option<Counted> {
        Some(Counted::Windows)
    }

    fn example(&self) -> &'static str {
        "{ kind: window, inputs: [src], key: [device], size: 10s, slide: 5s, aggregates: [count, mean, max(value)], value: value, allowed_lateness: 1s, time_field: ts }"
    }
}

/// The window aggregate functions.
pub const AGGREGATE_FUNCTIONS: &[&str] = &[
    "count", "sum", "min", "max", "mean", "stddev", "first", "last", "p50", "p95", "p99",
];

/// Settings of a `window`.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowSettings {
    /// Grouping fields (may be empty).
    pub key: Vec<String>,
    /// Window length, ms.
    pub size_ms: i64,
    /// Distance between window starts, ms (`== size_ms` for tumbling windows).
    pub slide_ms: i64,
    /// How long after a window's end late events are still counted, ms.
    pub allowed_lateness_ms: i64,
    /// The event-time field windows are assigned by (filled by the planner when not written).
    pub time_field: String,
    /// The aggregates, in output order.
    pub aggregates: Vec<AggregateCall>,
}

impl NodeSettings for WindowSettings {
    fn kind(&self) -> &'static dyn NodeKind {
        &Window
    }

    fn default_placement(&self, _inputs: &[Placement]) -> Placement {
        Placement::Edge
    }

    fn typed(&self, cx: &mut TypeCx) -> Option<Typed> {
        let (r, f) = cx.split();
        let (node, input) = (f.node, f.input);
        let (id, schema) = (&node.id, &input.schema);
        let typed = {
            let mut w = self.clone();
            if w.time_field.is_empty() {
                w.time_field = input.time_field.clone();
            } else {
                match f.check(r, "time_field", "time_field", &w.time_field) {
                    Some(FieldType::TimestampMs) | None => {}
                    Some(t) => {
                        f.ok.set(false);
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
                if let Some(t) = f.check(r, &format!("key[{i}]"), "key", k) {
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
                let Some(t) = f.check(r, &path, "aggregates", &a.field) else {
                    continue;
                };
                let out_type = match a.func.as_str() {
                    "count" => FieldType::I64,
                    _ if !t.is_numeric() => {
                        f.ok.set(false);
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
                    f.ok.set(false);
                    r.error(
                        node.pos_of(&path),
                        format!("node \"{id}\": field \"aggregates\": output column \"{}\" clashes with another column", a.output),
                        None,
                    );
                    continue;
                }
                fields.push((a.output.clone(), out_type));
            }
            let late = StreamInfo {
                schema: input.schema.clone(),
                time_field: w.time_field.clone(),
            };
            let mut typed = Typed::new(
                w,
                Some(StreamInfo {
                    schema: EventSchema::new(fields),
                    time_field: "window_start".to_owned(),
                }),
            );
            typed.ports.push((Port::Late, late));
            typed
        };
        f.ok.get().then_some(typed)
    }

    fn control_actions(&self) -> &'static [&'static str] {
        if self.slide_ms == self.size_ms {
            &["set_window_size", "enable", "disable"]
        } else {
            &["enable", "disable"]
        }
    }

    fn render(&self) -> String {
        let w = self;
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

    fn build<'scope>(
        &self,
        _scope: Scope<'scope, EventTime>,
        node: &PlanNode,
        inputs: Vec<BatchStream<'scope>>,
        env: &BuildEnv,
    ) -> Result<NodeOutputs<'scope>, EngineError> {
        build::window(require_input(node, inputs)?, node, self, env)
    }
}

impl Settings<'_, '_> {
    fn window(&mut self) -> Option<WindowSettings> {
        let key = self.field_list("key");
        let size = self.duration_ms("size");
        if size.is_none() && !self.positions.contains_key("size") {
            self.missing("size", "add `size: 1m` (a duration)");
        }
        let slide = self.duration_ms("slide");
        let allowed_lateness_ms = self.duration_ms("allowed_lateness").map_or(0, |(v, _)| v);
        let value = self.string("value").unwrap_or_else(|| "value".to_owned());
        let time_field = self.string("time_field").unwrap_or_default();
        let aggregates = self.aggregates(
            &value,
            AGGREGATE_FUNCTIONS,
            "e.g. `aggregates: [count, mean, max]`",
        );
        let (size_ms, size_pos) = size?;
        if size_ms == 0 {
            self.err(size_pos, "size", "must be longer than 0ms", None);
        }
        let slide_ms = match slide {
            None => size_ms,
            Some((s, pos)) => {
                if s == 0 || s > size_ms || size_ms % s != 0 {
                    self.err(
                        pos,
                        "slide",
                        format!("{s}ms does not divide the window size {size_ms}ms"),
                        Some("the slide must be > 0, at most `size`, and divide it (size 1m, slide 10s)".into()),
                    );
                }
                s
            }
        };
        Some(WindowSettings {
            key,
            size_ms,
            slide_ms,
            allowed_lateness_ms,
            time_field,
            aggregates,
        })
    }
}
