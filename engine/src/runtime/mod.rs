//! Running a plan: each half (edge, cloud) becomes a timely dataflow on every worker thread.
//!
//! Batches of Arrow records flow through the dataflows; timely timestamps are event time
//! in ms, so a stream's frontier is its watermark. In the embedded role both halves run in
//! one process and meet through the embedded log, exactly where the Kafka transport will
//! join separate edge and cloud processes.
//!
//! Layers, each using only those before it: `batch` and `options` (data and settings);
//! `control` (the control channel) and `context` (what every worker shares); `node`
//! (what a kind's builder gets: stream types, metrics, names, dead letters, watermarks);
//! the shared operators (`batch_operator`, `exchange`, `cut`, `publish`); `build`
//! (wires a half's graph from the kinds' builders); `drive` (runs the workers) and the
//! roles (`embedded`, `remote`).

pub mod batch;
pub(crate) mod batch_operator;
mod build;
pub(crate) mod context;
pub mod control;
mod cut;
mod drive;
mod embedded;
pub(crate) mod exchange;
pub mod node;
mod options;
mod publish;
#[cfg(feature = "kafka")]
pub mod remote;

use std::sync::Arc;

use crate::plan::Plan;
use crate::sql::{Catalog, MaterializedTable};
pub use context::{DEAD_LETTER_SAMPLING, DEAD_LETTERS_STORED_IN_FULL, RunContext};
pub use drive::RunReport;
pub use embedded::run_embedded;
pub use options::{DEFAULT_BATCH_ROWS, RunOptions};

/// The tables a plan materializes, empty, for `writers` workers; with the control log when
/// the plan has a control channel, and the `incidents` table when it has insight nodes.
pub fn catalog_for(plan: &Plan, writers: usize) -> Catalog {
    let mut catalog = Catalog::new();
    control::add_control_log(plan, &mut catalog);
    let insights = crate::kinds::insight_count(&plan.nodes);
    if insights > 0 {
        catalog.insert(Arc::new(MaterializedTable::new(
            crate::kinds::INCIDENTS_TABLE,
            edgeflow_operators::insight::incident_schema().to_arrow(),
            insights * writers.max(1),
        )));
    }
    for node in &plan.nodes {
        match node.settings.table() {
            Some((name, false)) => catalog.insert(Arc::new(MaterializedTable::new(
                name,
                node.schema.to_arrow(),
                writers,
            ))),
            Some((name, true)) => {
                // The table's columns are the changelog's but its `diff`.
                let mut fields = node.schema.fields().to_vec();
                fields.pop();
                let schema = edgeflow_operators::schema::EventSchema::new(fields);
                catalog.insert(Arc::new(MaterializedTable::changelog(
                    name,
                    schema.to_arrow(),
                    writers,
                )))
            }
            None => {}
        }
    }
    catalog
}
