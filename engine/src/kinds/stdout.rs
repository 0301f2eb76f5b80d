//! The `stdout` kind: prints a stream as JSON lines or aligned tables.

use std::io::Write;
use std::sync::Arc;

use edgeflow_connectors::file_sink::{TextFormat, format_batch};
use timely::dataflow::Scope;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Operator;

use super::{NodeKind, NodeSettings, Role, follow_inputs};
use crate::error::EngineError;
use crate::plan::{Placement, PlanNode, TypeCx, Typed};
use crate::runtime::batch::EventTime;
use crate::runtime::node::{BatchStream, BuildEnv, NodeOutputs, operator_name, require_input};
use crate::spec::settings::{Context, Settings};

/// The `stdout` kind.
pub struct Stdout;

impl NodeKind for Stdout {
    fn name(&self) -> &'static str {
        "stdout"
    }

    fn role(&self) -> Role {
        Role::Sink
    }

    fn settings(&self) -> &'static [&'static str] {
        &["format"]
    }

    fn read(&self, s: &mut Settings, _ctx: &Context, _role: Role) -> Option<Arc<dyn NodeSettings>> {
        s.stdout().map(|x| Arc::new(x) as Arc<dyn NodeSettings>)
    }

    fn example(&self) -> &'static str {
        "{ kind: stdout, inputs: [src], format: table }"
    }
}

/// Settings of a `stdout` sink.
#[derive(Clone, Debug, PartialEq)]
pub struct StdoutSettings {
    /// Pretty tables rather than JSON lines.
    pub table_format: bool,
}

impl NodeSettings for StdoutSettings {
    fn kind(&self) -> &'static dyn NodeKind {
        &Stdout
    }

    fn default_placement(&self, inputs: &[Placement]) -> Placement {
        follow_inputs(inputs)
    }

    fn typed(&self, _cx: &mut TypeCx) -> Option<Typed> {
        Some(Typed::new(self.clone(), None))
    }

    fn render(&self) -> String {
        format!(
            "format={}",
            if self.table_format { "table" } else { "jsonl" }
        )
    }

    fn build<'scope>(
        &self,
        _scope: Scope<'scope, EventTime>,
        node: &PlanNode,
        inputs: Vec<BatchStream<'scope>>,
        env: &BuildEnv,
    ) -> Result<NodeOutputs<'scope>, EngineError> {
        stdout(require_input(node, inputs)?, node, self.table_format, env);
        Ok(NodeOutputs::default())
    }
}

impl Settings<'_, '_> {
    fn stdout(&mut self) -> Option<StdoutSettings> {
        let table_format = self.choice("format", &["table", "jsonl"]) == Some("table");
        Some(StdoutSettings { table_format })
    }
}

/// The `stdout` kind: JSON lines or aligned tables on standard output.
fn stdout(stream: BatchStream, node: &PlanNode, table_format: bool, env: &BuildEnv) {
    let metrics = env.metrics(node);
    let format = if table_format {
        TextFormat::Table
    } else {
        TextFormat::JsonLines
    };
    stream.sink(Pipeline, &operator_name(node), move |(input, _frontier)| {
        input.for_each(|_cap, data| {
            for batch in data.drain(..) {
                metrics.batches_in.inc();
                metrics.events_in.inc_by(batch.num_rows() as u64);
                match format_batch(&batch, format) {
                    Ok(text) => {
                        let mut out = std::io::stdout().lock();
                        // A closed stdout (e.g. `| head`) must not stop the pipeline.
                        let _ = out.write_all(text.as_bytes());
                        if !text.ends_with('\n') {
                            let _ = out.write_all(b"\n");
                        }
                    }
                    Err(e) => {
                        metrics.errors.inc();
                        tracing::warn!(error = %e, "cannot format batch for stdout");
                    }
                }
            }
        });
    });
}
