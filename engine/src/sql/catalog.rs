//! Materialized tables: what `table` nodes write and SQL reads, with consistent snapshots.
//!
//! Rows reach a table tagged with their timely time. They stay *pending* until every worker
//! that writes the table has reported a frontier beyond that time; only then do they become
//! visible. A snapshot therefore holds every row with time < its frontier and nothing else:
//! a query never sees half of a window's results.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

/// Committed batches are merged once there are this many, to keep scans cheap.
const COMPACT_AFTER_BATCHES: usize = 64;

/// A table materialized by a `table` node.
#[derive(Debug)]
pub struct MaterializedTable {
    name: String,
    schema: SchemaRef,
    state: Mutex<TableState>,
}

#[derive(Debug)]
struct TableState {
    pending: BTreeMap<i64, Vec<RecordBatch>>,
    committed: Vec<RecordBatch>,
    committed_rows: usize,
    /// Frontier reported by each writer (worker); `i64::MIN` until it reports.
    writer_frontiers: Vec<i64>,
    visible_frontier: i64,
}

/// A consistent view of a table.
#[derive(Debug, Clone)]
pub struct TableSnapshot {
    /// Every row with time < `frontier`.
    pub batches: Vec<RecordBatch>,
    /// The event-time frontier the snapshot is complete up to (`i64::MAX` once the input ended).
    pub frontier: i64,
}

impl MaterializedTable {
    /// An empty table written by `writers` workers.
    pub fn new(name: &str, schema: SchemaRef, writers: usize) -> Self {
        MaterializedTable {
            name: name.to_string(),
            schema,
            state: Mutex::new(TableState {
                pending: BTreeMap::new(),
                committed: Vec::new(),
                committed_rows: 0,
                writer_frontiers: vec![i64::MIN; writers.max(1)],
                visible_frontier: i64::MIN,
            }),
        }
    }

    /// The SQL name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The Arrow schema of every batch.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn lock(&self) -> MutexGuard<'_, TableState> {
        // A writer that panicked mid-append leaves whole batches only; keep serving.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds rows produced at timely time `time`; they become visible once every writer's
    /// frontier has passed `time`.
    pub fn append(&self, time: i64, batch: RecordBatch) {
        if batch.num_rows() == 0 {
            return;
        }
        let mut state = self.lock();
        if time < state.visible_frontier {
            // Cannot happen with a correct frontier; keep the rows rather than lose them.
            state.committed_rows += batch.num_rows();
            state.committed.push(batch);
        } else {
            state.pending.entry(time).or_default().push(batch);
        }
    }

    /// Records that `writer` will append nothing at times < `frontier` (`i64::MAX`: done).
    pub fn advance(&self, writer: usize, frontier: i64) {
        let mut state = self.lock();
        let Some(slot) = state.writer_frontiers.get_mut(writer) else {
            return;
        };
        *slot = (*slot).max(frontier);
        let visible = state
            .writer_frontiers
            .iter()
            .copied()
            .min()
            .unwrap_or(i64::MIN);
        if visible <= state.visible_frontier {
            return;
        }
        state.visible_frontier = visible;
        let still_pending = if visible == i64::MAX {
            BTreeMap::new()
        } else {
            state.pending.split_off(&visible)
        };
        let ready = std::mem::replace(&mut state.pending, still_pending);
        for batch in ready.into_values().flatten() {
            state.committed_rows += batch.num_rows();
            state.committed.push(batch);
        }
        if state.committed.len() >= COMPACT_AFTER_BATCHES
            && let Ok(merged) = concat_batches(&self.schema, &state.committed)
        {
            state.committed = vec![merged];
        }
    }

    /// The rows visible now, with the frontier they are complete up to.
    pub fn snapshot(&self) -> TableSnapshot {
        let state = self.lock();
        TableSnapshot {
            batches: state.committed.clone(),
            frontier: state.visible_frontier,
        }
    }

    /// Number of visible rows.
    pub fn visible_rows(&self) -> usize {
        self.lock().committed_rows
    }
}

/// Every materialized table of a running pipeline, by SQL name.
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    tables: BTreeMap<String, Arc<MaterializedTable>>,
}

impl Catalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a table (replacing one of the same name).
    pub fn insert(&mut self, table: Arc<MaterializedTable>) {
        self.tables.insert(table.name().to_string(), table);
    }

    /// A table by name.
    pub fn get(&self, name: &str) -> Option<&Arc<MaterializedTable>> {
        self.tables.get(name)
    }

    /// Every table, by name.
    pub fn tables(&self) -> impl Iterator<Item = &Arc<MaterializedTable>> {
        self.tables.values()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(values: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values.to_vec()))]).unwrap()
    }

    #[test]
    fn rows_become_visible_only_when_every_writer_passed_their_time() {
        let t = MaterializedTable::new("t", batch(&[]).schema(), 2);
        t.append(10, batch(&[1, 2]));
        t.append(20, batch(&[3]));
        t.advance(0, 15);
        assert_eq!(t.visible_rows(), 0, "writer 1 has not reported yet");
        t.advance(1, 11);
        assert_eq!(t.visible_rows(), 2);
        assert_eq!(t.snapshot().frontier, 11);
        t.advance(1, 20);
        assert_eq!(t.visible_rows(), 2, "time 20 is not < frontier 15");
        t.advance(0, i64::MAX);
        t.advance(1, i64::MAX);
        assert_eq!(t.visible_rows(), 3);
        assert_eq!(t.snapshot().frontier, i64::MAX);
    }

    #[test]
    fn many_small_batches_are_compacted_without_losing_rows() {
        let t = MaterializedTable::new("t", batch(&[]).schema(), 1);
        for i in 0..200 {
            t.append(i, batch(&[i]));
            t.advance(0, i + 1);
        }
        let snap = t.snapshot();
        assert!(snap.batches.len() < COMPACT_AFTER_BATCHES);
        assert_eq!(
            snap.batches.iter().map(|b| b.num_rows()).sum::<usize>(),
            200
        );
    }
}
