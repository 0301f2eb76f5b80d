//! The system tables every query sees next to the user's tables: `edgeflow_nodes`,
//! `edgeflow_edges`, `edgeflow_topics` and `edgeflow_tables`.
//!
//! The runtime fills a [`SystemState`] while it runs (each node's watermark per worker, each
//! producer's progress across the cut); the metrics registry holds the counters. A query
//! turns both into small Arrow tables when it starts. `edgeflow_tables` is built from the very
//! snapshots the query's user tables were registered from, so its `frontier` tells exactly
//! which rows a query in the same statement read.
//!
//! What the tables mean:
//! - `edgeflow_nodes`: one row per dataflow node this process runs (the plan's nodes of the
//!   halves it runs, plus one `cut` node per topic the cloud half reads). `watermark` is the
//!   node's input frontier (a source's or a cut's: its output frontier), the minimum over
//!   workers (null until known and once `finished`); `lag_ms` is how far it is behind the newest watermark of the heads feeding it
//!   (event time, not wall clock): the sources of its half, or, for the cloud half, the
//!   newest watermark any producer sent on the cut topics it reads.
//! - `edgeflow_edges`: one row per (topic, producer edge id). A process that reads the cut
//!   (cloud, or `run` with both halves) shows each producer as it received it (`side`
//!   = `consumer`); an edge process shows its own frames as it wrote them to its spool
//!   (`side` = `producer`) with the spool's depth.
//! - `edgeflow_topics`: one row per cut topic (plus the dead-letter topic where this process
//!   writes it): what this process sent and received.
//!
//! `state.rs` holds what the runtime fills ([`SystemState`]), `tables.rs` the tables' schemas
//! and how rows become Arrow batches.

mod state;
mod tables;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

pub use state::{EdgeProgress, EdgeSide, SystemState, WatermarkSlot};
pub use tables::{
    TableRead, edges_schema, nodes_schema, tables_batch, tables_schema, topics_schema,
};

/// Per node: events, watermark, lag.
pub const NODES_TABLE: &str = "edgeflow_nodes";
/// Per (topic, producer edge): last seen, watermark, sequence, spool depth.
pub const EDGES_TABLE: &str = "edgeflow_edges";
/// Per cut topic: frames, bytes, compression, duplicates.
pub const TOPICS_TABLE: &str = "edgeflow_topics";
/// Per materialized table: rows and frontier of the snapshot a query read.
pub const TABLES_TABLE: &str = "edgeflow_tables";
/// Every system table name (reserved: the spec rejects a `table` node named like one, see
/// `kinds::SYSTEM_TABLE_NAMES`).
pub const SYSTEM_TABLES: [&str; 4] = [NODES_TABLE, EDGES_TABLE, TOPICS_TABLE, TABLES_TABLE];

/// Kind label of the pseudo node that reads a cut topic in the cloud half.
pub const CUT_KIND: &str = "cut";

/// No watermark known yet (timely's minimum time).
const UNKNOWN: i64 = i64::MIN;
/// The input has ended (timely's empty frontier).
const ENDED: i64 = i64::MAX;

/// The name and schema of every system table.
pub fn system_schemas() -> [(&'static str, SchemaRef); 4] {
    [
        (NODES_TABLE, nodes_schema()),
        (EDGES_TABLE, edges_schema()),
        (TOPICS_TABLE, topics_schema()),
        (TABLES_TABLE, tables_schema()),
    ]
}

/// The four system tables, by name, as one query sees them (`state`: `None` when the engine
/// serves no running pipeline: the node, edge and topic tables are empty).
pub fn system_tables(
    state: Option<&SystemState>,
    reads: &[TableRead],
) -> [(&'static str, RecordBatch); 4] {
    let (nodes, edges, topics) = match state {
        Some(state) => (
            state.nodes_batch(),
            state.edges_batch(),
            state.topics_batch(),
        ),
        None => (
            RecordBatch::new_empty(nodes_schema()),
            RecordBatch::new_empty(edges_schema()),
            RecordBatch::new_empty(topics_schema()),
        ),
    };
    [
        (NODES_TABLE, nodes),
        (EDGES_TABLE, edges),
        (TOPICS_TABLE, topics),
        (TABLES_TABLE, tables_batch(reads)),
    ]
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::atomic::AtomicBool;

    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Int64Type, TimestampMillisecondType};

    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;
    use crate::metrics::Metrics;
    use crate::plan::plan_with;
    use crate::sql::{Catalog, MaterializedTable, QueryEngine};

    const PIPELINE: &str = r#"
pipeline: sys
nodes:
  sensors: { kind: generator, devices: 4, sensors: [vibration] }
  per_sec: { kind: window, inputs: [sensors], key: [device], size: 1s, aggregates: [count] }
  fleet:   { kind: table, inputs: [per_sec] }
"#;

    fn column<'a>(batch: &'a RecordBatch, name: &str) -> &'a dyn Array {
        batch.column_by_name(name).unwrap().as_ref()
    }

    fn lag_of(batch: &RecordBatch, node: &str) -> Option<i64> {
        let names = column(batch, "node").as_string::<i32>();
        let row = (0..batch.num_rows())
            .find(|&i| names.value(i) == node)
            .unwrap_or_else(|| panic!("no row for {node}"));
        let lag = column(batch, "lag_ms").as_primitive::<Int64Type>();
        lag.is_valid(row).then(|| lag.value(row))
    }

    #[test]
    fn lag_is_the_newest_head_watermark_minus_the_nodes_own() {
        let plan = plan_with("p.yaml", PIPELINE, Path::new(""), &|_| None).unwrap();
        let state = SystemState::new(&plan, Metrics::new());
        // Two workers of every node, as the runtime registers them.
        let sensors = [0, 1].map(|_| state.watch_node("sensors", "generator", "edge"));
        let per_sec = [0, 1].map(|_| state.watch_node("per_sec", "window", "edge"));
        let cut = [0, 1].map(|_| state.watch_node("sys.per_sec", CUT_KIND, "cloud"));
        let fleet = [0, 1].map(|_| state.watch_node("fleet", "table", "cloud"));

        let nodes = state.nodes_batch();
        assert_eq!(lag_of(&nodes, "per_sec"), None, "no watermark yet");

        sensors[0].observe(10_000);
        sensors[1].observe(12_500);
        per_sec[0].observe(9_000);
        per_sec[1].observe(11_000);
        cut[0].observe(7_000);
        cut[1].observe(i64::MAX); // a worker that reads nothing
        fleet[0].observe(6_000);
        fleet[1].observe(6_500);
        let producers = [("embedded-0", 7_000), ("embedded-1", 8_000)];
        for (edge, watermark) in producers {
            let p = state.edge("sys.per_sec", edge, EdgeSide::Consumer, None);
            p.record_frame(3, watermark, 100);
        }
        let nodes = state.nodes_batch();
        let order: Vec<&str> = column(&nodes, "node")
            .as_string::<i32>()
            .iter()
            .flatten()
            .collect();
        assert_eq!(order, ["sensors", "per_sec", "sys.per_sec", "fleet"]);
        // The newest source watermark (12.5 s) minus the slowest worker's (9 s).
        assert_eq!(lag_of(&nodes, "per_sec"), Some(3_500));
        assert_eq!(lag_of(&nodes, "sensors"), Some(2_500));
        // The cloud half's head is the newest producer watermark on its cut topic.
        assert_eq!(lag_of(&nodes, "sys.per_sec"), Some(1_000));
        assert_eq!(lag_of(&nodes, "fleet"), Some(2_000));
        let watermark = column(&nodes, "watermark").as_primitive::<TimestampMillisecondType>();
        assert_eq!(watermark.value(1), 9_000);

        // Finished nodes: no lag, no watermark (the frontier is empty).
        per_sec[0].observe(i64::MAX);
        per_sec[1].observe(i64::MAX);
        let nodes = state.nodes_batch();
        assert_eq!(lag_of(&nodes, "per_sec"), Some(0));
        assert!(column(&nodes, "watermark").is_null(1));
        // The finished source still heads the window: its last watermark counts.
        sensors[1].observe(i64::MAX);
        let nodes = state.nodes_batch();
        assert_eq!(lag_of(&nodes, "fleet"), Some(2_000));
        assert_eq!(lag_of(&nodes, "sensors"), Some(2_500));
        assert!(column(&nodes, "finished").as_boolean().value(1));

        let edges = state.edges_batch();
        assert_eq!(edges.num_rows(), 2);
        let frames = column(&edges, "frames").as_primitive::<Int64Type>();
        assert_eq!(frames.values().to_vec(), [1, 1]);
    }

    fn rows(values: std::ops::Range<i64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("t", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(values))]).unwrap()
    }

    /// Rows the writer below appends at time `10 * i`: `i % 5 + 1` of them.
    fn rows_at(i: i64) -> i64 {
        i % 5 + 1
    }

    #[test]
    fn edgeflow_tables_reports_the_frontier_of_the_snapshot_the_statement_read() {
        let table = Arc::new(MaterializedTable::new("t", rows(0..0).schema(), 1));
        let mut catalog = Catalog::new();
        catalog.insert(table.clone());
        let engine = QueryEngine::new(Arc::new(catalog));
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (table, stop) = (table.clone(), stop.clone());
            std::thread::spawn(move || {
                // Bounded: 1M commits, or until the queries are done.
                for i in 0..1_000_000 {
                    if stop.load(Ordering::SeqCst) {
                        return i;
                    }
                    let time = 10 * i;
                    table.append(time, rows(time..time + rows_at(i)));
                    table.advance(0, time + 5);
                }
                1_000_000
            })
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let sql = "SELECT s.rows, CAST(s.frontier AS BIGINT) AS frontier, \
                   (SELECT count(*) FROM t) AS n, (SELECT max(t) FROM t) AS last \
                   FROM edgeflow_tables s WHERE s.name = 't'";
        let mut frontiers = Vec::new();
        // Bounded: 300 queries while the writer keeps committing.
        for _ in 0..300 {
            let result = runtime.block_on(engine.query(sql)).unwrap();
            let batch = &result.batches[0];
            let get = |name| column(batch, name).as_primitive::<Int64Type>();
            let (reported, frontier, n) = (get("rows"), get("frontier"), get("n"));
            if frontier.is_null(0) {
                continue;
            }
            let frontier = frontier.value(0);
            // Commits i = 0..=(frontier - 5) / 10 are visible, and nothing else.
            let committed = (frontier - 5) / 10;
            let expected: i64 = (0..=committed).map(rows_at).sum();
            assert_eq!(n.value(0), expected, "frontier {frontier}");
            assert_eq!(reported.value(0), expected);
            assert!(get("last").value(0) < frontier);
            frontiers.push(frontier);
        }
        stop.store(true, Ordering::SeqCst);
        let commits = writer.join().unwrap();
        frontiers.dedup();
        assert!(
            frontiers.len() > 10,
            "the queries saw too few distinct frontiers ({} over {commits} commits)",
            frontiers.len()
        );
    }
}
