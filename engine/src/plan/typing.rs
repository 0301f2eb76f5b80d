//! What a kind types itself with ([`crate::kinds::NodeSettings::typed`]): the node's input,
//! the streams typed so far, a field checker that records whether every check passed, and
//! what typing yields.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use edgeflow_operators::OperatorError;
use edgeflow_operators::schema::{EventSchema, FieldType};

use super::{Placement, Port, StreamRef};
use crate::kinds::NodeSettings;
use crate::spec::{NodeSpec, PipelineSpec, Pos, Reporter, did_you_mean};

/// What the planner knows about a stream.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StreamInfo {
    /// Its schema.
    pub schema: EventSchema,
    /// Its event-time field.
    pub time_field: String,
}

/// Checks field names against a node's input, remembering whether every check passed.
pub struct FieldCheck<'a> {
    /// The node being typed.
    pub node: &'a NodeSpec,
    /// Its input (all inputs share it; empty for sources).
    pub input: &'a StreamInfo,
    /// Whether every check so far passed (a `Cell` so checks and callers can both clear it).
    pub ok: Cell<bool>,
}

impl<'a> FieldCheck<'a> {
    /// A checker for `node` reading `input`.
    pub fn new(node: &'a NodeSpec, input: &'a StreamInfo) -> Self {
        FieldCheck {
            node,
            input,
            ok: Cell::new(true),
        }
    }

    /// The type of the input's field `name`; reports it missing at setting `path`.
    pub fn check(
        &self,
        r: &mut Reporter,
        path: &str,
        setting: &str,
        name: &str,
    ) -> Option<FieldType> {
        let schema = &self.input.schema;
        let t = schema.field_type(name);
        if t.is_none() {
            self.ok.set(false);
            r.error(
                self.node.pos_of(path),
                format!(
                    "node \"{}\": field \"{setting}\": the input has no field \"{name}\"",
                    self.node.id
                ),
                Some(field_hint(name, schema)),
            );
        }
        t
    }
}

/// What a kind types itself with.
pub struct TypeCx<'a, 'r> {
    /// Where problems go.
    pub r: &'r mut Reporter,
    /// The node, its input and the field checker.
    pub fields: FieldCheck<'a>,
    /// The whole spec (for settings naming other nodes, such as a `lookup`).
    pub spec: &'a PipelineSpec,
    /// The node's resolved inputs: stream, where it is written, index of its producer.
    pub inputs: &'a [(StreamRef, Pos, usize)],
    /// Every stream typed so far.
    pub streams: &'a HashMap<StreamRef, StreamInfo>,
    /// The streams typed so far that are changelogs (rows with a `diff`), not events.
    pub changelogs: &'a HashSet<StreamRef>,
    /// Whether every input is a changelog.
    pub inputs_changelog: bool,
    /// Where the node runs.
    pub placement: Placement,
    /// Where a node placed so far runs.
    pub placement_of: &'a dyn Fn(&str) -> Option<Placement>,
}

impl<'a> TypeCx<'a, '_> {
    /// The reporter and the field checker, borrowed together.
    pub fn split(&mut self) -> (&mut Reporter, &FieldCheck<'a>) {
        (&mut *self.r, &self.fields)
    }
}

/// What typing a node yields.
#[derive(Debug)]
pub struct Typed {
    /// Its settings with what the planner fills in (defaults taken from the input).
    pub settings: Arc<dyn NodeSettings>,
    /// Its main output (`None` for sinks).
    pub output: Option<StreamInfo>,
    /// Its other outputs.
    pub ports: Vec<(Port, StreamInfo)>,
    /// Whether its main output is a changelog.
    pub changelog: bool,
    /// The schema the plan shows for a node without an output that is not its input's.
    pub schema: Option<EventSchema>,
}

impl Typed {
    /// `settings` with main output `output` and nothing else.
    pub fn new(settings: impl NodeSettings, output: Option<StreamInfo>) -> Self {
        Typed {
            settings: Arc::new(settings),
            output,
            ports: Vec::new(),
            changelog: false,
            schema: None,
        }
    }
}

/// "did you mean" for a field, else the schema's fields.
pub fn field_hint(name: &str, schema: &EventSchema) -> String {
    match did_you_mean(name, schema.names()) {
        Some(m) => format!("did you mean \"{m}\"?"),
        None => format!(
            "the input's fields are: {}",
            schema.names().collect::<Vec<_>>().join(", ")
        ),
    }
}

/// An operator error as a user-facing message.
pub fn user_message(err: OperatorError) -> String {
    match err {
        OperatorError::User(m) => m,
        OperatorError::DataFusion(e) => edgeflow_operators::expr::datafusion_message(&e),
        other => other.to_string(),
    }
}
