//! The `filter` kind: keeps the events for which an SQL boolean expression is true. Over a
//! changelog (an aggregate's output) it keeps the changes of the rows it selects, so its
//! output is a changelog too.

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use edgeflow_operators::expr::CompiledFilter;
use timely::dataflow::Scope;

use super::{NodeKind, NodeSettings, Role, follow_inputs};
use crate::error::EngineError;
use crate::plan::{Placement, PlanNode, TypeCx, Typed, user_message};
use crate::runtime::batch::EventTime;
use crate::runtime::batch_operator::{FnLogic, map_batches};
use crate::runtime::node::{BatchStream, BuildEnv, NodeOutputs, operator_error, require_input};
use crate::spec::settings::{Context, Settings};

/// The `filter` kind.
pub struct Filter;

impl NodeKind for Filter {
    fn name(&self) -> &'static str {
        "filter"
    }

    fn role(&self) -> Role {
        Role::Transform
    }

    fn settings(&self) -> &'static [&'static str] {
        &["where"]
    }

    fn read(&self, s: &mut Settings, _ctx: &Context, _role: Role) -> Option<Arc<dyn NodeSettings>> {
        s.filter().map(|x| Arc::new(x) as Arc<dyn NodeSettings>)
    }

    fn example(&self) -> &'static str {
        "{ kind: filter, inputs: [src], where: value > 1.5 }"
    }
}

/// Settings of a `filter`.
#[derive(Clone, Debug, PartialEq)]
pub struct FilterSettings {
    /// SQL boolean expression.
    pub predicate: String,
}

impl NodeSettings for FilterSettings {
    fn kind(&self) -> &'static dyn NodeKind {
        &Filter
    }

    fn default_placement(&self, inputs: &[Placement]) -> Placement {
        follow_inputs(inputs)
    }

    fn typed(&self, cx: &mut TypeCx) -> Option<Typed> {
        let changelog = cx.inputs_changelog;
        let (r, f) = cx.split();
        let (node, input) = (f.node, f.input);
        let (id, schema) = (&node.id, &input.schema);
        let predicate = &self.predicate;

        if let Err(e) = CompiledFilter::new(schema, predicate) {
            r.error(
                node.pos_of("where"),
                format!("node \"{id}\": field \"where\": {}", user_message(e)),
                None,
            );
            return None;
        }
        let mut typed = Typed::new(self.clone(), Some(input.clone()));
        typed.changelog = changelog;
        f.ok.get().then_some(typed)
    }

    fn render(&self) -> String {
        format!("where {}", self.predicate)
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
            CompiledFilter::new(&input, &self.predicate).map_err(operator_error(node))?;
        Ok(NodeOutputs::main(map_batches(
            stream,
            node,
            env,
            FnLogic(move |batch: &RecordBatch| compiled.apply(batch).map(Some)),
        )))
    }
}

impl Settings<'_, '_> {
    fn filter(&mut self) -> Option<FilterSettings> {
        match self.string("where") {
            Some(p) if !p.trim().is_empty() => Some(FilterSettings { predicate: p }),
            Some(_) => {
                let pos = self.positions["where"];
                self.err(pos, "where", "must not be empty", None);
                None
            }
            None => {
                self.missing("where", "add `where: \"<SQL boolean expression>\"`");
                None
            }
        }
    }
}
