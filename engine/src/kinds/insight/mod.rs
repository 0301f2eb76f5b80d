//! The `insight` kind: fleet rules (correlated, drift, silence, sql) raising incidents into
//! the `incidents` table, and the control records they send to edge nodes. Its settings and
//! reader are in [`read`], its typing and whole-plan checks in [`plan`], its operators in
//! [`build`].

mod build;
mod plan;
mod read;

use std::fmt::Write as _;
use std::sync::Arc;

use timely::dataflow::Scope;

use super::{NodeKind, NodeSettings, Role};
use crate::error::EngineError;
use crate::plan::render::{duration, list};
use crate::plan::{Placement, PlanNode, Port, TypeCx, Typed};
use crate::runtime::batch::EventTime;
use crate::runtime::node::{BatchStream, BuildEnv, NodeOutputs};
use crate::spec::settings::{Context, Settings};
use crate::spec::{NodeSpec, Reporter};

pub use build::insight_count;
pub use plan::{INCIDENTS_TABLE, words_of};
pub use read::{ControlRule, InsightRule, InsightSettings, RuleCondition};

/// The `insight` kind.
pub struct Insight;

impl NodeKind for Insight {
    fn name(&self) -> &'static str {
        "insight"
    }

    fn role(&self) -> Role {
        Role::Transform
    }

    fn settings(&self) -> &'static [&'static str] {
        &["rules", "control"]
    }

    fn ports(&self) -> &'static [Port] {
        &[Port::Control]
    }

    fn read(&self, s: &mut Settings, ctx: &Context, _role: Role) -> Option<Arc<dyn NodeSettings>> {
        s.insight(ctx).map(|x| Arc::new(x) as Arc<dyn NodeSettings>)
    }

    fn check_plan(&self, r: &mut Reporter, specs: &[NodeSpec], nodes: &[PlanNode]) {
        plan::check_insights(r, specs, nodes);
    }

    fn example(&self) -> &'static str {
        "{ kind: insight, inputs: [src], rules: [{ name: quiet, silence: { after: 30s } }] }"
    }
}

impl NodeSettings for InsightSettings {
    fn kind(&self) -> &'static dyn NodeKind {
        &Insight
    }

    fn default_placement(&self, _inputs: &[Placement]) -> Placement {
        Placement::Cloud
    }

    fn check_placement(&self, r: &mut Reporter, node: &NodeSpec, at: Placement) -> bool {
        if at == Placement::Edge {
            r.error(
                node.pos_of("placement"),
                format!("node \"{}\": an insight runs in the cloud", node.id),
                Some("remove `placement: edge`".into()),
            );
            return false;
        }
        true
    }

    // The inputs of an insight may differ: each rule is typed against its own.
    fn types_each_input(&self) -> bool {
        true
    }

    fn typed(&self, cx: &mut TypeCx) -> Option<Typed> {
        let settings = plan::type_insight(
            cx.r,
            cx.fields.node,
            self,
            cx.inputs,
            cx.streams,
            cx.changelogs,
        )?;
        let mut typed = Typed::new(settings, Some(plan::incident_stream()));
        typed.ports.push((Port::Control, plan::control_stream()));
        Some(typed)
    }

    fn control_requests(&self) -> Vec<(String, String)> {
        self.control
            .iter()
            .enumerate()
            .map(|(i, rule)| (rule.node.clone(), format!("control[{i}].node")))
            .collect()
    }

    fn render(&self) -> String {
        render(self)
    }

    fn build<'scope>(
        &self,
        _scope: Scope<'scope, EventTime>,
        node: &PlanNode,
        inputs: Vec<BatchStream<'scope>>,
        env: &BuildEnv,
    ) -> Result<NodeOutputs<'scope>, EngineError> {
        build::insight(inputs, node, self, env)
    }
}

/// An insight's rules and control actions on one line.
fn render(settings: &InsightSettings) -> String {
    let rules: Vec<String> = settings
        .rules
        .iter()
        .map(|r| {
            let input = r
                .input
                .as_ref()
                .map_or(String::new(), |i| format!(" on {i}"));
            let what = match &r.condition {
                RuleCondition::Correlated {
                    by,
                    device,
                    devices,
                    within_ms,
                } => format!(
                    "correlated by={} {devices}+ {device} within {}",
                    list(by),
                    duration(*within_ms)
                ),
                RuleCondition::Drift {
                    key,
                    value,
                    baseline_ms,
                    shift,
                    min_samples,
                } => format!(
                    "drift key={} value={value} baseline={} shift={shift} min_samples={min_samples}",
                    list(key),
                    duration(*baseline_ms)
                ),
                RuleCondition::Silence { key, after_ms } => {
                    format!("silence key={} after={}", list(key), duration(*after_ms))
                }
                RuleCondition::Sql {
                    query,
                    every_ms,
                    key,
                } => format!(
                    "sql every={} key={} query={query:?}",
                    duration(*every_ms),
                    key.as_deref().unwrap_or("(row)")
                ),
            };
            format!("{}({}{input}, {})", r.name, what, r.severity.name())
        })
        .collect();
    let mut s = format!("rules={}", list(&rules));
    for c in &settings.control {
        let action = serde_json::to_string(&c.action).unwrap_or_default();
        let _ = write!(s, " control({} -> {} {action})", c.on, c.node);
    }
    s
}
