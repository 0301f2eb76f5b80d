//! Turning one half of a plan into a timely dataflow: the one place that maps every node
//! kind to the operator that runs it (a missing kind is a compile error here).

use std::collections::HashMap;

use timely::dataflow::operators::Concatenate;
use timely::dataflow::{Scope, Stream};
use timely::worker::Worker;

use super::batch::{Batch, EventTime};
use super::context::RunContext;
use super::cut::{FrameIn, FrameOut, Producers};
use super::{RunOptions, aggregate, cut, insight, kafka_nodes, sinks, sources, transforms, window};
use crate::error::EngineError;
use crate::plan::{CutTopic, Operator, Placement, Plan, PlanNode, Port, StreamRef};
use crate::sql::system::CUT_KIND;

/// A stream of batches in event time.
pub type BatchStream<'scope> = Stream<'scope, EventTime, Vec<Batch>>;

/// Which half a dataflow runs, and as which edge.
pub struct Half {
    /// Edge or cloud nodes.
    pub placement: Placement,
    /// The id this process's edge half writes under.
    pub edge_id: String,
}

/// How the cut streams of a plan are carried: the embedded log, or the spool and Kafka.
pub trait CutWiring: Sync {
    /// Where worker `worker`'s edge half writes `topic`, as producer `edge_id`.
    fn output(&self, topic: &CutTopic, edge_id: &str) -> Result<FrameOut, EngineError>;
    /// What worker `worker` of the cloud half reads for `topic`, and whom it waits for.
    fn input(&self, topic: &CutTopic, worker: usize) -> Result<(FrameIn, Producers), EngineError>;
}

/// What building one node produced.
#[derive(Default)]
pub struct NodeOutputs<'scope> {
    /// The main output (none for sinks).
    pub main: Option<BatchStream<'scope>>,
    /// The late side output (windows only).
    pub late: Option<BatchStream<'scope>>,
    /// The control records (insights only), in `control_schema()`: what the control channel
    /// publishes to the edge.
    pub control: Option<BatchStream<'scope>>,
}

/// Everything a node builder may need besides its inputs.
pub struct BuildEnv<'a> {
    /// The plan being built.
    pub plan: &'a Plan,
    /// Run options.
    pub options: &'a RunOptions,
    /// Shared run state.
    pub ctx: &'a RunContext,
    /// This worker's index and the number of workers.
    pub worker: usize,
    /// Number of workers.
    pub peers: usize,
    /// The id this worker's edge half writes under (keys of `kafka` sink records).
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    pub edge_id: &'a str,
}

/// Builds the dataflow of `half` on this worker.
pub fn build_half(
    worker: &mut Worker,
    plan: &Plan,
    half: &Half,
    options: &RunOptions,
    ctx: &RunContext,
    wiring: &dyn CutWiring,
) -> Result<(), EngineError> {
    let (index, peers) = (worker.index(), worker.peers());
    let env = BuildEnv {
        plan,
        options,
        ctx,
        worker: index,
        peers,
        edge_id: &half.edge_id,
    };
    worker.dataflow::<EventTime, _, _>(|scope| {
        let mut streams: HashMap<StreamRef, BatchStream> = HashMap::new();
        if half.placement == Placement::Cloud {
            for topic in &plan.topics {
                let (input, producers) = wiring.input(topic, index)?;
                let stream = cut::consume(scope, topic, &env, input, producers);
                let slot = ctx
                    .system
                    .watch_node(&topic.name, CUT_KIND, Placement::Cloud.name());
                sinks::watermark_probe(stream.clone(), slot, &topic.name);
                streams.insert(topic.stream.clone(), stream);
            }
        }
        for node in plan.nodes.iter().filter(|n| n.placement == half.placement) {
            let inputs = node
                .inputs
                .iter()
                .map(|input| {
                    streams.get(input).cloned().ok_or_else(|| {
                        EngineError::Internal(format!(
                            "node {}: input {input} was not built",
                            node.id
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            // A node's watermark: its inputs' frontier; a source's: its output frontier. (A
            // node with neither, such as a reference, is not a dataflow node of its own.)
            let probed = match inputs.len() {
                0 => None,
                1 => inputs.first().cloned(),
                _ => Some(scope.concatenate(inputs.clone())),
            };
            let outputs = build_node(scope, node, inputs, &env)?;
            if let Some(stream) = probed.or_else(|| outputs.main.clone()) {
                let slot = ctx
                    .system
                    .watch_node(&node.id, node.kind, node.placement.name());
                sinks::watermark_probe(stream, slot, &node.id);
            }
            if let Some(main) = outputs.main {
                streams.insert(
                    StreamRef {
                        node: node.id.clone(),
                        port: Port::Main,
                    },
                    main,
                );
            }
            if let Some(late) = outputs.late {
                let late_ref = StreamRef {
                    node: node.id.clone(),
                    port: Port::Late,
                };
                if is_consumed(plan, &late_ref) {
                    streams.insert(late_ref, late);
                } else {
                    sinks::dead_letter_late(late, node, &env);
                }
            }
            if let Some(control) = outputs.control {
                // Records go to the edges over the control topic; nodes may read them too
                // (`<insight>.control`).
                if plan.control.is_some() {
                    super::control::publish(control.clone(), node, &env);
                }
                streams.insert(
                    StreamRef {
                        node: node.id.clone(),
                        port: Port::Control,
                    },
                    control,
                );
            }
        }
        if half.placement == Placement::Edge {
            for topic in &plan.topics {
                let stream = streams.get(&topic.stream).cloned().ok_or_else(|| {
                    EngineError::Internal(format!("cut stream {} was not built", topic.stream))
                })?;
                let out = wiring.output(topic, &half.edge_id)?;
                cut::produce(stream, topic, &env, out, &half.edge_id)?;
            }
        }
        Ok(())
    })
}

fn is_consumed(plan: &Plan, stream: &StreamRef) -> bool {
    plan.nodes.iter().any(|n| n.inputs.contains(stream))
}

/// The node's inputs as one stream (concatenated when there are several).
fn require_input<'scope>(
    node: &PlanNode,
    mut inputs: Vec<BatchStream<'scope>>,
) -> Result<BatchStream<'scope>, EngineError> {
    match inputs.len() {
        0 => Err(EngineError::Internal(format!(
            "node {} has no input",
            node.id
        ))),
        1 => Ok(inputs.remove(0)),
        _ => {
            let scope = inputs[0].scope();
            Ok(scope.concatenate(inputs))
        }
    }
}

/// The registry: one line per node kind.
fn build_node<'scope>(
    scope: Scope<'scope, EventTime>,
    node: &PlanNode,
    input: Vec<BatchStream<'scope>>,
    env: &BuildEnv,
) -> Result<NodeOutputs<'scope>, EngineError> {
    let main = |stream| {
        Ok(NodeOutputs {
            main: Some(stream),
            late: None,
            control: None,
        })
    };
    match &node.operator {
        Operator::Generator(settings) => main(sources::generator(scope, node, settings, env)?),
        Operator::FileSource(settings) => main(sources::file(scope, node, settings, env)?),
        Operator::KafkaSource(settings) => main(kafka_nodes::source(scope, node, settings, env)?),
        Operator::KafkaSink(settings) => {
            kafka_nodes::sink(require_input(node, input)?, node, settings, env)?;
            Ok(NodeOutputs::default())
        }
        Operator::Filter { predicate } => main(transforms::filter(
            require_input(node, input)?,
            node,
            predicate,
            env,
        )?),
        Operator::Map { fields, drop } => main(transforms::map(
            require_input(node, input)?,
            node,
            fields,
            drop,
            env,
        )?),
        Operator::Detect(settings) => main(transforms::detect(
            require_input(node, input)?,
            node,
            settings,
            env,
        )?),
        Operator::Infer(settings) => main(transforms::infer(
            require_input(node, input)?,
            node,
            settings,
            env,
        )?),
        Operator::Window(settings) => {
            window::window(require_input(node, input)?, node, settings, env)
        }
        Operator::Aggregate(settings) => {
            aggregate::aggregate(require_input(node, input)?, node, settings, env)
        }
        // Built by the aggregates that look it up, on their input's clock.
        Operator::Reference(_) => Ok(NodeOutputs::default()),
        Operator::Insight(settings) => insight::insight(input, node, settings, env),
        Operator::Table { name, .. } => {
            sinks::table(require_input(node, input)?, node, name, env)?;
            Ok(NodeOutputs::default())
        }
        Operator::FileSink { .. } => {
            sinks::file(require_input(node, input)?, node, env);
            Ok(NodeOutputs::default())
        }
        Operator::Stdout { table_format } => {
            sinks::stdout(require_input(node, input)?, node, *table_format, env);
            Ok(NodeOutputs::default())
        }
    }
}
