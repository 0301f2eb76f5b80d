//! The `infer` kind: model inference (burn) over per-key windows of a numeric field,
//! emitting the exceptions (or every scored window); controllable at the edge, including
//! swapping the model while running.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use edgeflow_connectors::error::chain;
use edgeflow_operators::OperatorError;
use edgeflow_operators::control::ControlAction;
use edgeflow_operators::infer::{InferEmit, InferOperator};
use timely::dataflow::Scope;

use super::{Counted, NodeKind, NodeSettings, Role};
use crate::error::EngineError;
use crate::plan::render::list;
use crate::plan::{Placement, PlanNode, StreamInfo, TypeCx, Typed, user_message};
use crate::runtime::batch::EventTime;
use crate::runtime::batch_operator::{Controlled, ControlledNode, map_batches};
use crate::runtime::control::{Controllable, load_model_source};
use crate::runtime::exchange::exchange_by_key;
use crate::runtime::node::{BatchStream, BuildEnv, NodeOutputs, operator_error, require_input};
use crate::spec::load_model;
use crate::spec::resolve;
use crate::spec::settings::{Context, Settings};

/// The `infer` kind.
pub struct Infer;

impl NodeKind for Infer {
    fn name(&self) -> &'static str {
        "infer"
    }

    fn role(&self) -> Role {
        Role::Transform
    }

    fn settings(&self) -> &'static [&'static str] {
        &["key", "value", "model", "threshold", "emit"]
    }

    fn read(&self, s: &mut Settings, ctx: &Context, _role: Role) -> Option<Arc<dyn NodeSettings>> {
        s.infer(ctx).map(|x| Arc::new(x) as Arc<dyn NodeSettings>)
    }

    fn counted(&self) -> Option<Counted> {
        Some(Counted::Exceptions)
    }

    fn example(&self) -> &'static str {
        "{ kind: infer, inputs: [src], key: [device], value: value, model: models/sensors.bpk, threshold: 2.5, emit: all }"
    }
}

/// Settings of an `infer`.
#[derive(Clone, Debug, PartialEq)]
pub struct InferSettings {
    /// Windows are cut per key (the planner fills in `device` and `sensor`, those of them the
    /// input has, when none is written).
    pub key: Vec<String>,
    /// The scored field (i64 or f64).
    pub value: String,
    /// The model file as written.
    pub model_text: String,
    /// The model file, resolved against the pipeline file's directory.
    pub model: PathBuf,
    /// Replaces the model's default threshold.
    pub threshold: Option<f64>,
    /// Emit every scored window (`emit: all`) rather than only exceptions.
    pub emit_all: bool,
    /// The input's event-time field (filled by the planner).
    pub time_field: String,
}

impl NodeSettings for InferSettings {
    fn kind(&self) -> &'static dyn NodeKind {
        &Infer
    }

    fn default_placement(&self, _inputs: &[Placement]) -> Placement {
        Placement::Edge
    }

    fn typed(&self, cx: &mut TypeCx) -> Option<Typed> {
        let (r, f) = cx.split();
        let (node, input) = (f.node, f.input);
        let (id, schema) = (&node.id, &input.schema);
        let typed = {
            let mut settings = self.clone();
            if settings.key.is_empty() {
                settings.key = ["device", "sensor"]
                    .into_iter()
                    .filter(|k| schema.field_type(k).is_some())
                    .map(str::to_owned)
                    .collect();
                if settings.key.is_empty() {
                    r.error(
                        node.pos,
                        format!("node \"{id}\": the input has no \"device\" or \"sensor\" field to cut windows by"),
                        Some("name the fields that identify a device with `key: [...]`".into()),
                    );
                    return None;
                }
            }
            for (i, k) in settings.key.iter().enumerate() {
                f.check(r, &format!("key[{i}]"), "key", k);
            }
            match f.check(r, "value", "value", &settings.value) {
                Some(t) if !t.is_numeric() => {
                    f.ok.set(false);
                    r.error(
                        node.pos_of("value"),
                        format!("node \"{id}\": field \"value\": \"{}\" is {t}, but inference needs i64 or f64", settings.value),
                        None,
                    );
                }
                _ => {}
            }
            if !f.ok.get() {
                return None;
            }
            settings.time_field = input.time_field.clone();
            match InferOperator::output_schema_for(schema, &settings.key, &input.time_field) {
                Ok(out) => Typed::new(
                    settings,
                    Some(StreamInfo {
                        schema: out,
                        time_field: input.time_field.clone(),
                    }),
                ),
                Err(e) => {
                    r.error(
                        node.pos,
                        format!("node \"{id}\": {}", user_message(e)),
                        Some("rename the field with a map first".into()),
                    );
                    return None;
                }
            }
        };
        f.ok.get().then_some(typed)
    }

    fn control_actions(&self) -> &'static [&'static str] {
        &["set_threshold", "swap_model", "enable", "disable"]
    }

    fn render(&self) -> String {
        let i = self;
        format!(
            "model={} value={} key={} threshold={} emit={}",
            i.model_text,
            i.value,
            list(&i.key),
            i.threshold
                .map_or("model default".to_owned(), |t| t.to_string()),
            if i.emit_all { "all" } else { "exceptions" }
        )
    }

    fn build<'scope>(
        &self,
        _scope: Scope<'scope, EventTime>,
        node: &PlanNode,
        inputs: Vec<BatchStream<'scope>>,
        env: &BuildEnv,
    ) -> Result<NodeOutputs<'scope>, EngineError> {
        infer(require_input(node, inputs)?, node, self, env).map(NodeOutputs::main)
    }
}

impl Settings<'_, '_> {
    fn infer(&mut self, ctx: &Context<'_>) -> Option<InferSettings> {
        let key = self.field_list("key");
        let value = self.string("value").unwrap_or_else(|| "value".to_owned());
        let emit_all = self.choice("emit", &["exceptions", "all"]) == Some("all");
        let threshold = self.f64("threshold");
        if let Some(t) = threshold.filter(|t| *t <= 0.0) {
            let pos = self.positions["threshold"];
            self.err(
                pos,
                "threshold",
                format!("must be greater than 0, got {t}"),
                None,
            );
        }
        let (model_text, model) = match self.scalar("model") {
            Some((text, pos)) => {
                let resolved = resolve(ctx.dir, text);
                // A model that cannot be loaded is reported here, with the position, rather
                // than when the edge starts.
                let checked = load_model(&resolved);
                if let Err(message) = checked {
                    self.err(
                        pos,
                        "model",
                        message,
                        Some("train one with `edgeflow train` (see the README)".into()),
                    );
                }
                (text.to_owned(), resolved)
            }
            None => {
                self.missing("model", "add `model: <file written by edgeflow train>`");
                return None;
            }
        };
        Some(InferSettings {
            key,
            value,
            model_text,
            model,
            threshold,
            emit_all,
            time_field: String::new(),
        })
    }
}

/// The `infer` kind: rows are exchanged by key so each key's windows and baseline live on one
/// worker; the model file is loaded once per worker.
pub fn infer<'scope>(
    stream: BatchStream<'scope>,
    node: &PlanNode,
    settings: &InferSettings,
    env: &BuildEnv,
) -> Result<BatchStream<'scope>, EngineError> {
    let input = env.input_schema(node)?;
    let model = load_model(&settings.model).map_err(|message| EngineError::Operator {
        node: node.id.clone(),
        source: OperatorError::User(message),
    })?;
    let emit = if settings.emit_all {
        InferEmit::All
    } else {
        InferEmit::Exceptions
    };
    let operator = InferOperator::new(
        &input,
        &settings.key,
        &settings.value,
        &settings.time_field,
        Arc::new(model),
        settings.threshold,
        emit,
    )
    .map_err(operator_error(node))?;
    let keyed = exchange_by_key(stream, &settings.key, &node.id, env);
    let logic = Controlled {
        node: operator,
        port: env.ctx.control.port(&node.id, env.worker),
        enabled: true,
        time_field: settings.time_field.clone(),
    };
    Ok(map_batches(keyed, node, env, logic))
}

impl Controllable for InferOperator {
    fn apply(
        &mut self,
        action: &ControlAction,
        _applied_at: i64,
        base_dir: &Path,
    ) -> Result<String, String> {
        match action {
            ControlAction::SetThreshold { value } => {
                self.set_threshold(Some(*value)).map_err(|e| chain(&e))?;
                Ok(format!("threshold {value}"))
            }
            ControlAction::SwapModel { model } => {
                let model = load_model_source(model, base_dir)?;
                let description = format!(
                    "model swapped ({} parameters, window {})",
                    model.parameters(),
                    model.shape().window
                );
                self.set_model(Arc::new(model));
                Ok(description)
            }
            other => Err(format!("an infer node does not take {}", other.name())),
        }
    }
}

impl ControlledNode for InferOperator {
    fn run(&mut self, batch: &RecordBatch) -> Result<Option<RecordBatch>, OperatorError> {
        self.process(batch)
    }
}
