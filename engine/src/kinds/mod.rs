//! The node kinds: one module per kind, and [`KINDS`], the one list that names them all.
//!
//! A kind's module holds everything about it: its settings type, the code that reads them
//! from YAML, its type check and output schema, its default placement, its control actions,
//! how the plan prints it, and the builder of its dataflow operators, with its tests beside
//! them. Nothing outside this folder names a kind: the spec reader, the planner and the
//! runtime reach a kind through [`NodeKind`] (what the registry knows before a node is read)
//! and [`NodeSettings`] (one node's typed settings). Dispatch happens once per node, when the
//! plan is compiled or the dataflow built; no record goes through a trait object.
//!
//! Adding a kind: write `kinds/<name>.rs` (or a folder) with a unit struct implementing
//! [`NodeKind`] and a settings type implementing [`NodeSettings`], then add one line to
//! [`KINDS`].

mod aggregate;
mod detect;
mod file;
mod filter;
mod generator;
mod infer;
mod insight;
mod kafka;
mod map;
mod reference;
mod stdout;
mod table;
mod window;

use std::any::Any;
use std::fmt::Debug;
use std::path::Path;
use std::sync::Arc;

use edgeflow_connectors::file_source::FileFormat;
use timely::dataflow::Scope;

use crate::error::EngineError;
use crate::plan::{Placement, PlanNode, Port, TypeCx, Typed};
use crate::runtime::batch::EventTime;
use crate::runtime::node::{BatchStream, BuildEnv, NodeOutputs};
use crate::spec::settings::{Context, Settings};
use crate::spec::{NodeSpec, Reporter};

pub use aggregate::{AggregateSettings, DIFF_COLUMN, LAST_EVENT_COLUMN, VIEW_AGGREGATE_FUNCTIONS};
pub use detect::{DetectMethod, DetectSettings};
pub use file::{FileSinkSettings, FileSourceSettings};
pub use filter::FilterSettings;
pub use generator::{ANOMALY_SHAPES, GeneratorSettings};
pub use infer::InferSettings;
pub use insight::{
    ControlRule, INCIDENTS_TABLE, InsightRule, InsightSettings, RuleCondition, insight_count,
    words_of,
};
pub use kafka::{KafkaFormat, KafkaSinkSettings, KafkaSourceSettings};
pub use map::MapSettings;
pub use reference::{ReferenceSettings, ReferenceSource};
pub use stdout::StdoutSettings;
pub use table::{SYSTEM_TABLE_NAMES, TableSettings};
pub use window::{AGGREGATE_FUNCTIONS, WindowSettings};

/// Every node kind, in the order `kinds are: ...` lists them. Adding a kind means one module
/// and one line here.
pub const KINDS: &[&dyn NodeKind] = &[
    &generator::Generator,
    &file::File,
    &kafka::Kafka,
    &filter::Filter,
    &map::Map,
    &window::Window,
    &detect::Detect,
    &infer::Infer,
    &aggregate::Aggregate,
    &reference::Reference,
    &insight::Insight,
    &table::Table,
    &stdout::Stdout,
];

/// The registered kind called `name`.
pub fn kind(name: &str) -> Option<&'static dyn NodeKind> {
    KINDS.iter().copied().find(|k| k.name() == name)
}

/// What a kind does with streams.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Role {
    /// No inputs, produces a stream.
    Source,
    /// Inputs and an output stream.
    Transform,
    /// Inputs, no output stream.
    Sink,
    /// `file`, `kafka`: a source without `inputs`, a sink with them.
    SourceOrSink,
}

/// Which figure of a run's report a kind's output events count towards.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Counted {
    /// Events read from outside (the report's events and events/s).
    SourceEvents,
    /// Window results.
    Windows,
    /// Exceptions (detector and model output): never dropped from a full spool.
    Exceptions,
}

/// A node kind, as the registry knows it before any node is read.
pub trait NodeKind: Sync {
    /// The YAML name.
    fn name(&self) -> &'static str;
    /// What it does with streams.
    fn role(&self) -> Role;
    /// Its settings keys (besides kind, inputs, placement, description, compress); the
    /// reader reads no other key (checked by the registry test).
    fn settings(&self) -> &'static [&'static str];
    /// Outputs besides the main one (a window's `late`, an insight's `control`).
    fn ports(&self) -> &'static [Port] {
        &[]
    }
    /// Which report figure its output events count towards.
    fn counted(&self) -> Option<Counted> {
        None
    }
    /// Reads one node's settings; `role` is [`Role::Source`] or [`Role::Sink`] for a
    /// [`Role::SourceOrSink`] kind, depending on whether the node has `inputs`. `None` when
    /// a setting is wrong (reported).
    fn read(&self, s: &mut Settings, ctx: &Context, role: Role) -> Option<Arc<dyn NodeSettings>>;
    /// Checks that need the whole plan, once per plan after every node is typed.
    fn check_plan(&self, _r: &mut Reporter, _specs: &[NodeSpec], _nodes: &[PlanNode]) {}
    /// A node of this kind as written in a pipeline (the registry test plans it after a
    /// `generator` called `src` and with a `reading` schema).
    fn example(&self) -> &'static str;
}

/// One node's typed settings (units resolved), and what the planner and the runtime ask of
/// its kind.
pub trait NodeSettings: Debug + Send + Sync + Any {
    /// Its kind.
    fn kind(&self) -> &'static dyn NodeKind;
    /// Whether the node has no output stream.
    fn is_sink(&self) -> bool {
        self.kind().role() == Role::Sink
    }
    /// Why nodes cannot read this node's main output though it is no sink: `(what it is,
    /// hint)`.
    fn not_a_stream(&self, _id: &str) -> Option<(String, String)> {
        None
    }
    /// The placement it gets when none is written and its inputs run at `inputs`.
    fn default_placement(&self, inputs: &[Placement]) -> Placement;
    /// Reports an explicit placement the kind cannot run at; `false` when reported.
    fn check_placement(&self, _r: &mut Reporter, _node: &NodeSpec, _at: Placement) -> bool {
        true
    }
    /// Whether the planner types it against each input separately (else against their
    /// common schema).
    fn types_each_input(&self) -> bool {
        false
    }
    /// Checks it against its input and computes its outputs. `None` when wrong (reported).
    fn typed(&self, cx: &mut TypeCx) -> Option<Typed>;
    /// The control actions it supports at run time (empty: not controllable).
    fn control_actions(&self) -> &'static [&'static str] {
        &[]
    }
    /// Edge nodes it asks to control: `(node, path of the setting naming it)`.
    fn control_requests(&self) -> Vec<(String, String)> {
        Vec::new()
    }
    /// The settings on one line of `edgeflow graph`.
    fn render(&self) -> String;
    /// The SQL table it materializes: `(name, changelog)`.
    fn table(&self) -> Option<(&str, bool)> {
        None
    }
    /// The file it reads, if any (`validate` warns when it cannot be read yet; the run fails
    /// with the OS error).
    fn input_file(&self) -> Option<&Path> {
        None
    }
    /// The file it writes, created before the run starts.
    fn output_file(&self) -> Option<(&Path, FileFormat)> {
        None
    }
    /// Builds its operators on one worker.
    fn build<'scope>(
        &self,
        scope: Scope<'scope, EventTime>,
        node: &PlanNode,
        inputs: Vec<BatchStream<'scope>>,
        env: &BuildEnv,
    ) -> Result<NodeOutputs<'scope>, EngineError>;
}

/// Placement of a kind that runs wherever its inputs are: in the cloud when any input is.
pub fn follow_inputs(inputs: &[Placement]) -> Placement {
    if inputs.contains(&Placement::Cloud) {
        Placement::Cloud
    } else {
        Placement::Edge
    }
}

#[cfg(test)]
mod tests;
