//! The `table` kind: a materialized, SQL-queryable table. Over a changelog (an aggregate's
//! output) the table holds the sum of the changes, keyed by their rows.

use std::sync::Arc;
use std::time::Instant;

use timely::dataflow::Scope;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Operator;

use super::{NodeKind, NodeSettings, Role};
use crate::error::EngineError;
use crate::plan::{Placement, PlanNode, TypeCx, Typed};
use crate::runtime::batch::EventTime;
use crate::runtime::node::{BatchStream, BuildEnv, NodeOutputs, operator_name, require_input};
use crate::spec::settings::{Context, Settings};

/// The `table` kind.
pub struct Table;

impl NodeKind for Table {
    fn name(&self) -> &'static str {
        "table"
    }

    fn role(&self) -> Role {
        Role::Sink
    }

    fn settings(&self) -> &'static [&'static str] {
        &["name"]
    }

    fn read(&self, s: &mut Settings, _ctx: &Context, _role: Role) -> Option<Arc<dyn NodeSettings>> {
        Some(Arc::new(s.table()))
    }

    fn example(&self) -> &'static str {
        "{ kind: table, inputs: [src], name: readings }"
    }
}

/// Names of the SQL system tables, which no `table` node may take.
pub const SYSTEM_TABLE_NAMES: [&str; 4] = [
    "edgeflow_nodes",
    "edgeflow_edges",
    "edgeflow_topics",
    "edgeflow_tables",
];

/// Settings of a `table`.
#[derive(Clone, Debug, PartialEq)]
pub struct TableSettings {
    /// The SQL table name.
    pub name: String,
    /// Its input is a changelog (an `aggregate`): rows carry a `diff` and the table holds
    /// their sum (filled by the planner).
    pub changelog: bool,
}

impl NodeSettings for TableSettings {
    fn kind(&self) -> &'static dyn NodeKind {
        &Table
    }

    fn default_placement(&self, _inputs: &[Placement]) -> Placement {
        Placement::Cloud
    }

    fn typed(&self, cx: &mut TypeCx) -> Option<Typed> {
        let settings = TableSettings {
            name: self.name.clone(),
            changelog: cx.inputs_changelog,
        };
        Some(Typed::new(settings, None))
    }

    fn render(&self) -> String {
        if self.changelog {
            format!("name={} changelog", self.name)
        } else {
            format!("name={}", self.name)
        }
    }

    fn table(&self) -> Option<(&str, bool)> {
        Some((&self.name, self.changelog))
    }

    fn build<'scope>(
        &self,
        _scope: Scope<'scope, EventTime>,
        node: &PlanNode,
        inputs: Vec<BatchStream<'scope>>,
        env: &BuildEnv,
    ) -> Result<NodeOutputs<'scope>, EngineError> {
        table(require_input(node, inputs)?, node, &self.name, env)?;
        Ok(NodeOutputs::default())
    }
}

impl Settings<'_, '_> {
    fn table(&mut self) -> TableSettings {
        let name = match self.scalar("name") {
            None => {
                let kind_pos = self.entries.iter().find(|(k, _)| k.name == "kind");
                if let Some((_, kind)) = kind_pos
                    && SYSTEM_TABLE_NAMES.contains(&self.node)
                {
                    self.err(
                        kind.pos,
                        "name",
                        format!("\"{}\" is the name of a system table", self.node),
                        Some("give the table another `name:`".into()),
                    );
                }
                self.node.to_owned()
            }
            Some((n, pos)) if SYSTEM_TABLE_NAMES.contains(&n) => {
                self.err(
                    pos,
                    "name",
                    format!("\"{n}\" is the name of a system table"),
                    Some("choose a name that does not clash with edgeflow_nodes, edgeflow_edges, edgeflow_topics or edgeflow_tables".into()),
                );
                n.to_owned()
            }
            Some((n, pos)) => {
                let valid = n
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    self.err(
                        pos,
                        "name",
                        format!("\"{n}\" is not an SQL table name"),
                        Some("use letters, digits and '_', not starting with a digit".into()),
                    );
                }
                n.to_owned()
            }
        };
        TableSettings {
            name,
            changelog: false,
        }
    }
}

/// The `table` kind: appends rows to the materialized table and tells it how far this
/// worker's input is complete, so SQL sees whole windows only.
fn table(
    stream: BatchStream,
    node: &PlanNode,
    name: &str,
    env: &BuildEnv,
) -> Result<(), EngineError> {
    let table = env
        .ctx
        .catalog
        .get(name)
        .cloned()
        .ok_or_else(|| EngineError::Internal(format!("table {name} is not in the catalog")))?;
    let metrics = env.metrics(node);
    let worker = env.worker;
    stream.sink(Pipeline, &operator_name(node), move |(input, frontier)| {
        input.for_each(|cap, data| {
            for batch in data.drain(..) {
                let started = Instant::now();
                metrics.batches_in.inc();
                metrics.events_in.inc_by(batch.num_rows() as u64);
                // A message without a time makes no progress claim; such rows are final at once.
                table.append(cap.least().copied().unwrap_or(EventTime::MIN), batch.0);
                metrics
                    .batch_seconds
                    .observe(started.elapsed().as_secs_f64());
            }
        });
        let watermark = frontier
            .frontier()
            .first()
            .copied()
            .unwrap_or(EventTime::MAX);
        metrics.watermark.set(watermark);
        table.advance(worker, watermark);
    });
    Ok(())
}
