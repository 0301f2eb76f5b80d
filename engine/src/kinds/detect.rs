//! The `detect` kind: scores a numeric field per key (thresholds or a running z-score) and
//! emits the exceptions (or every event with its score); controllable at the edge.

use std::path::Path;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use edgeflow_connectors::error::chain;
use edgeflow_operators::OperatorError;
use edgeflow_operators::control::ControlAction;
use edgeflow_operators::detect::{Detector, DetectorKind, Emit};
use edgeflow_operators::schema::{EventSchema, FieldType};
use timely::dataflow::Scope;

use super::{Counted, NodeKind, NodeSettings, Role};
use crate::error::EngineError;
use crate::plan::render::list;
use crate::plan::{Placement, PlanNode, StreamInfo, TypeCx, Typed};
use crate::runtime::batch::EventTime;
use crate::runtime::batch_operator::{Controlled, ControlledNode, map_batches};
use crate::runtime::control::Controllable;
use crate::runtime::exchange::exchange_by_key;
use crate::runtime::node::{BatchStream, BuildEnv, NodeOutputs, operator_error, require_input};
use crate::spec::settings::{Context, Settings};

/// The `detect` kind.
pub struct Detect;

impl NodeKind for Detect {
    fn name(&self) -> &'static str {
        "detect"
    }

    fn role(&self) -> Role {
        Role::Transform
    }

    fn settings(&self) -> &'static [&'static str] {
        &[
            "key",
            "value",
            "method",
            "min",
            "max",
            "threshold",
            "min_samples",
            "emit",
        ]
    }

    fn read(&self, s: &mut Settings, _ctx: &Context, _role: Role) -> Option<Arc<dyn NodeSettings>> {
        s.detect().map(|x| Arc::new(x) as Arc<dyn NodeSettings>)
    }

    fn counted(&self) -> Option<Counted> {
        Some(Counted::Exceptions)
    }

    fn example(&self) -> &'static str {
        "{ kind: detect, inputs: [src], key: [device], value: value, method: zscore, threshold: 3, min_samples: 10, emit: all }"
    }
}

/// How a detector scores values.
#[derive(Clone, Debug, PartialEq)]
pub enum DetectMethod {
    /// Outside `[min, max]` is an exception.
    Threshold {
        /// Lower bound, if any.
        min: Option<f64>,
        /// Upper bound, if any.
        max: Option<f64>,
    },
    /// `|z| > threshold` against the key's running mean and deviation.
    ZScore {
        /// The z-score bound (> 0).
        threshold: f64,
        /// Samples needed before scoring.
        min_samples: u64,
    },
}

/// Settings of a `detect`.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectSettings {
    /// Per-key state is kept for these fields.
    pub key: Vec<String>,
    /// The scored field (i64 or f64).
    pub value: String,
    /// The scoring method.
    pub method: DetectMethod,
    /// Emit every event (`emit: all`) rather than only exceptions.
    pub emit_all: bool,
}

impl NodeSettings for DetectSettings {
    fn kind(&self) -> &'static dyn NodeKind {
        &Detect
    }

    fn default_placement(&self, _inputs: &[Placement]) -> Placement {
        Placement::Edge
    }

    fn typed(&self, cx: &mut TypeCx) -> Option<Typed> {
        let (r, f) = cx.split();
        let (node, input) = (f.node, f.input);
        let (id, schema) = (&node.id, &input.schema);
        let typed = {
            for (i, k) in self.key.iter().enumerate() {
                f.check(r, &format!("key[{i}]"), "key", k);
            }
            match f.check(r, "value", "value", &self.value) {
                Some(t) if !t.is_numeric() => {
                    f.ok.set(false);
                    r.error(
                        node.pos_of("value"),
                        format!("node \"{id}\": field \"value\": \"{}\" is {t}, but a detector needs i64 or f64", self.value),
                        None,
                    );
                }
                _ => {}
            }
            let mut fields = schema.fields().to_vec();
            for (name, t) in [("score", FieldType::F64), ("reason", FieldType::String)] {
                if schema.field_type(name).is_some() {
                    f.ok.set(false);
                    r.error(
                        node.pos,
                        format!("node \"{id}\": the input already has a field \"{name}\", which a detector adds"),
                        Some("rename it with a map first".into()),
                    );
                }
                fields.push((name.to_owned(), t));
            }
            Typed::new(
                self.clone(),
                Some(StreamInfo {
                    schema: EventSchema::new(fields),
                    time_field: input.time_field.clone(),
                }),
            )
        };
        f.ok.get().then_some(typed)
    }

    fn control_actions(&self) -> &'static [&'static str] {
        &["set_threshold", "enable", "disable"]
    }

    fn render(&self) -> String {
        let d = self;
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

    fn build<'scope>(
        &self,
        _scope: Scope<'scope, EventTime>,
        node: &PlanNode,
        inputs: Vec<BatchStream<'scope>>,
        env: &BuildEnv,
    ) -> Result<NodeOutputs<'scope>, EngineError> {
        detect(require_input(node, inputs)?, node, self, env).map(NodeOutputs::main)
    }
}

impl Settings<'_, '_> {
    fn detect(&mut self) -> Option<DetectSettings> {
        let key = self.field_list("key");
        let value = self.string("value").unwrap_or_else(|| "value".to_owned());
        let emit_all = self.choice("emit", &["exceptions", "all"]) == Some("all");
        let method = self.choice("method", &["threshold", "zscore"]);
        if method.is_none() && !self.positions.contains_key("method") {
            self.missing(
                "method",
                "add `method: zscore` or `method: threshold` with `min`/`max`",
            );
        }
        let min = self.f64("min");
        let max = self.f64("max");
        let threshold = self.f64("threshold");
        let min_samples = self.get("min_samples").is_some();
        let min_samples_value = self.u64("min_samples", 30);
        let misplaced = |names: &[&str], this: &mut Self, method: &str| {
            for n in names {
                if let Some(pos) = this
                    .entries
                    .iter()
                    .find(|(k, _)| k.name == *n)
                    .map(|(k, _)| k.pos)
                {
                    this.err(pos, n, format!("does not apply to method {method}"), None);
                }
            }
        };
        match method? {
            "threshold" => {
                misplaced(&["threshold", "min_samples"], self, "threshold");
                let _ = min_samples;
                if min.is_none() && max.is_none() {
                    let pos = self.positions["method"];
                    self.err(pos, "method", "threshold needs `min`, `max` or both", None);
                }
                if let (Some(lo), Some(hi)) = (min, max)
                    && lo > hi
                {
                    let pos = self.positions["min"];
                    self.err(pos, "min", format!("{lo} is greater than max {hi}"), None);
                }
                Some(DetectSettings {
                    key,
                    value,
                    method: DetectMethod::Threshold { min, max },
                    emit_all,
                })
            }
            _ => {
                misplaced(&["min", "max"], self, "zscore");
                let threshold = match threshold {
                    None => 4.0,
                    Some(t) if t > 0.0 => t,
                    Some(t) => {
                        let pos = self.positions["threshold"];
                        self.err(
                            pos,
                            "threshold",
                            format!("must be greater than 0, got {t}"),
                            None,
                        );
                        t
                    }
                };
                Some(DetectSettings {
                    key,
                    value,
                    method: DetectMethod::ZScore {
                        threshold,
                        min_samples: min_samples_value,
                    },
                    emit_all,
                })
            }
        }
    }
}

/// The `detect` kind: rows are exchanged by key so each key's running statistics live on
/// one worker.
pub fn detect<'scope>(
    stream: BatchStream<'scope>,
    node: &PlanNode,
    settings: &DetectSettings,
    env: &BuildEnv,
) -> Result<BatchStream<'scope>, EngineError> {
    let input = env.input_schema(node)?;
    let kind = match &settings.method {
        DetectMethod::Threshold { min, max } => DetectorKind::Threshold {
            min: *min,
            max: *max,
        },
        DetectMethod::ZScore {
            threshold,
            min_samples,
        } => DetectorKind::ZScore {
            threshold: *threshold,
            min_samples: *min_samples,
        },
    };
    let emit = if settings.emit_all {
        Emit::All
    } else {
        Emit::Exceptions
    };
    let detector = Detector::new(&input, &settings.key, &settings.value, kind.clone(), emit)
        .map_err(operator_error(node))?;
    let keyed = exchange_by_key(stream, &settings.key, &node.id, env);
    let logic = Controlled {
        node: DetectNode { detector, kind },
        port: env.ctx.control.port(&node.id, env.worker),
        enabled: true,
        time_field: env.input_stream(node)?.1,
    };
    Ok(map_batches(keyed, node, env, logic))
}

/// A detector and the method it was built with (a threshold change keeps the rest).
struct DetectNode {
    detector: Detector,
    kind: DetectorKind,
}

impl Controllable for DetectNode {
    fn apply(
        &mut self,
        action: &ControlAction,
        _applied_at: i64,
        _base_dir: &Path,
    ) -> Result<String, String> {
        let ControlAction::SetThreshold { value } = action else {
            return Err(format!("a detect node does not take {}", action.name()));
        };
        let kind = match &self.kind {
            DetectorKind::ZScore { min_samples, .. } => DetectorKind::ZScore {
                threshold: *value,
                min_samples: *min_samples,
            },
            DetectorKind::Threshold { min, .. } => DetectorKind::Threshold {
                min: *min,
                max: Some(*value),
            },
        };
        self.detector
            .set_kind(kind.clone())
            .map_err(|e| chain(&e))?;
        self.kind = kind;
        Ok(format!("threshold {value}"))
    }
}

impl ControlledNode for DetectNode {
    fn run(&mut self, batch: &RecordBatch) -> Result<Option<RecordBatch>, OperatorError> {
        self.detector.process(batch)
    }
}
