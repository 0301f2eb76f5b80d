//! Turning one half of a plan into a timely dataflow: wiring the cut streams and every node's
//! inputs and outputs. What each node runs is its kind's builder, reached through
//! [`build_node`].

use std::collections::HashMap;

use timely::dataflow::Scope;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::{Concatenate, Operator};
use timely::worker::Worker;

use super::batch::EventTime;
use super::context::RunContext;
use super::cut::{FrameIn, FrameOut, Producers};
use super::node::{BatchStream, BuildEnv, LATE_REASON, NodeOutputs, watermark_probe};
use super::options::RunOptions;
use super::{cut, publish};
use crate::error::EngineError;
use crate::plan::{CutTopic, Placement, Plan, PlanNode, Port, StreamRef};
use crate::sql::system::CUT_KIND;

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
                watermark_probe(stream.clone(), slot, &topic.name);
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
                watermark_probe(stream, slot, &node.id);
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
                    dead_letter_late(late, node, &env);
                }
            }
            if let Some(control) = outputs.control {
                // Records go to the edges over the control topic; nodes may read them too
                // (`<insight>.control`).
                if plan.control.is_some() {
                    publish::publish(control.clone(), node, &env);
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

/// Late rows of a window whose `late` output no node reads: counted already, written to the
/// dead-letter output so they are never silently lost.
fn dead_letter_late(stream: BatchStream, node: &PlanNode, env: &BuildEnv) {
    let cx = env.node(node);
    stream.sink(
        Pipeline,
        &format!("late[{}]", node.id),
        move |(input, _frontier)| {
            input.for_each(|_cap, data| {
                for batch in data.drain(..) {
                    cx.dead_letter_rows(&batch, LATE_REASON);
                }
            });
        },
    );
}

fn is_consumed(plan: &Plan, stream: &StreamRef) -> bool {
    plan.nodes.iter().any(|n| n.inputs.contains(stream))
}

/// Builds one node: its kind's builder, chosen once per node through its settings.
fn build_node<'scope>(
    scope: Scope<'scope, EventTime>,
    node: &PlanNode,
    inputs: Vec<BatchStream<'scope>>,
    env: &BuildEnv,
) -> Result<NodeOutputs<'scope>, EngineError> {
    node.settings.build(scope, node, inputs, env)
}
