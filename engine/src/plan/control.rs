//! Planning the control arcs: who may send control records to which edge nodes, checked
//! against the typed nodes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{Placement, PlanNode};
use crate::spec::{PipelineSpec, Pos, Reporter, did_you_mean};

/// The control arcs of a plan: the topics control records and their acknowledgements travel
/// on, and the edge nodes they may reconfigure.
#[derive(Clone, Debug, PartialEq)]
pub struct ControlPlan {
    /// `<pipeline>.control`: control records, cloud -> every edge.
    pub topic: String,
    /// `<pipeline>.control.acks`: acknowledgements, edges -> cloud.
    pub acks_topic: String,
    /// The controllable edge nodes, in plan order.
    pub targets: Vec<ControlTarget>,
    /// The pipeline file's directory: model paths of `swap_model` records are relative to it.
    pub base_dir: PathBuf,
}

/// An edge node the cloud may reconfigure.
#[derive(Clone, Debug, PartialEq)]
pub struct ControlTarget {
    /// The node id.
    pub node: String,
    /// The actions its kind supports (`NodeSettings::control_actions`).
    pub actions: &'static [&'static str],
    /// Who may send it records: `control` (the top-level section, i.e. people through
    /// `edgeflow control` / `POST /control`) and/or the `insight` nodes that list it.
    pub issuers: Vec<String>,
}

impl ControlPlan {
    /// The target for `node`, if it is controllable.
    pub fn target(&self, node: &str) -> Option<&ControlTarget> {
        self.targets.iter().find(|t| t.node == node)
    }
}

/// A request, somewhere in a pipeline file, to make an edge node controllable: the node id,
/// where it is written, and who asks (`control` for the top-level section, else the id of the
/// `insight` node whose `control:` list names it).
#[derive(Clone, Debug, PartialEq)]
pub struct ControlRequest {
    /// The node to control.
    pub node: String,
    /// Where it is named.
    pub pos: Pos,
    /// Who asks.
    pub issuer: String,
}

/// Every control request of a spec: the top-level `control: { nodes }` section (issuer
/// `control`). An `insight` node's `control:` list adds its own requests here, with the
/// insight's id as issuer, so that both reach the same [`ControlPlan`] (the insight's own
/// checks report its bad targets; [`control_plan`] reports those of the top-level section).
pub fn control_requests(spec: &PipelineSpec) -> Vec<ControlRequest> {
    let mut requests: Vec<ControlRequest> = spec
        .control
        .iter()
        .map(|(node, pos)| ControlRequest {
            node: node.clone(),
            pos: *pos,
            issuer: "control".to_owned(),
        })
        .collect();
    for node in &spec.nodes {
        for (target, path) in node.settings.control_requests() {
            requests.push(ControlRequest {
                node: target,
                pos: node.pos_of(&path),
                issuer: node.id.clone(),
            });
        }
    }
    requests
}

/// Checks control requests against the typed nodes and builds the control plan (`None`
/// without requests).
pub(super) fn control_plan(
    r: &mut Reporter,
    spec: &PipelineSpec,
    nodes: &[PlanNode],
    base_dir: &Path,
) -> Option<ControlPlan> {
    let requests = control_requests(spec);
    if requests.is_empty() {
        return None;
    }
    let mut targets: Vec<ControlTarget> = Vec::new();
    for request in requests {
        // An insight's own checks report its bad targets, with the action it names; here
        // they are only left out.
        if request.issuer != "control"
            && !nodes.iter().any(|n| {
                n.id == request.node
                    && n.placement == Placement::Edge
                    && !n.settings.control_actions().is_empty()
            })
        {
            continue;
        }
        let Some(node) = nodes.iter().find(|n| n.id == request.node) else {
            if spec.broken.contains_key(&request.node) {
                continue;
            }
            let ids = nodes.iter().map(|n| n.id.as_str());
            let hint = match did_you_mean(&request.node, ids) {
                Some(m) => format!("did you mean \"{m}\"?"),
                None => format!(
                    "controllable edge nodes are: {}",
                    nodes
                        .iter()
                        .filter(|n| n.placement == Placement::Edge
                            && !n.settings.control_actions().is_empty())
                        .map(|n| n.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            r.error(
                request.pos,
                format!(
                    "{}: control target \"{}\" is not a node",
                    issuer_text(&request.issuer),
                    request.node
                ),
                Some(hint),
            );
            continue;
        };
        if node.placement != Placement::Edge {
            r.error(
                request.pos,
                format!(
                    "{}: control target \"{}\" runs in the cloud; control records reconfigure edge nodes",
                    issuer_text(&request.issuer),
                    node.id
                ),
                Some(format!(
                    "name an edge node, or place \"{}\" at the edge (`placement: edge`)",
                    node.id
                )),
            );
            continue;
        }
        let actions = node.settings.control_actions();
        if actions.is_empty() {
            r.error(
                request.pos,
                format!(
                    "{}: control target \"{}\" is a {} node, which takes no control records",
                    issuer_text(&request.issuer),
                    node.id,
                    node.kind
                ),
                Some("controllable kinds are: infer, detect, window, generator".into()),
            );
            continue;
        }
        match targets.iter_mut().find(|t| t.node == node.id) {
            Some(t) => {
                if !t.issuers.contains(&request.issuer) {
                    t.issuers.push(request.issuer);
                }
            }
            None => targets.push(ControlTarget {
                node: node.id.clone(),
                actions,
                issuers: vec![request.issuer],
            }),
        }
    }
    let position: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    targets.sort_by_key(|t| position.get(t.node.as_str()).copied());
    Some(ControlPlan {
        topic: format!("{}.control", spec.pipeline),
        acks_topic: format!("{}.control.acks", spec.pipeline),
        targets,
        base_dir: base_dir.to_path_buf(),
    })
}

fn issuer_text(issuer: &str) -> String {
    if issuer == "control" {
        "\"control.nodes\"".to_owned()
    } else {
        format!("node \"{issuer}\": field \"control\"")
    }
}
