//! Materialized tables: what `table` nodes write and SQL reads, with consistent snapshots.
//!
//! Rows reach a table tagged with their timely time. They stay *pending* until every worker
//! that writes the table has reported a frontier beyond that time; only then do they become
//! visible. A snapshot therefore holds every row with time < its frontier and nothing else:
//! a query never sees half of a window's results.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use arrow::array::{Array, Int64Array, UInt32Array};
use arrow::compute::{concat_batches, take_record_batch};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow::row::{OwnedRow, RowConverter, SortField};

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
    /// Changelog tables: the committed multiplicity of every distinct row.
    changes: Option<Changelog>,
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

/// The state of a changelog table: rows (in Arrow's row format) and their summed diffs.
#[derive(Debug)]
struct Changelog {
    converter: RowConverter,
    counts: HashMap<OwnedRow, i64>,
    /// Whether `committed` must be rebuilt from `counts` before the next snapshot.
    stale: bool,
}

impl Changelog {
    /// Adds the changes of `batch` (the table's columns, then `diff`).
    fn apply(&mut self, batch: &RecordBatch) -> Result<(), String> {
        let width = batch.num_columns().saturating_sub(1);
        let diffs = batch
            .column(width)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or("the last column of a changelog batch is not an i64 diff")?;
        let rows = self
            .converter
            .convert_columns(&batch.columns()[..width])
            .map_err(|e| e.to_string())?;
        for (i, row) in rows.iter().enumerate() {
            let diff = if diffs.is_null(i) { 0 } else { diffs.value(i) };
            if diff == 0 {
                continue;
            }
            match self.counts.entry(row.owned()) {
                Entry::Occupied(mut count) => {
                    *count.get_mut() += diff;
                    if *count.get() == 0 {
                        count.remove();
                    }
                }
                Entry::Vacant(slot) => {
                    slot.insert(diff);
                }
            }
        }
        self.stale = true;
        Ok(())
    }

    /// Every row with a positive count, as many times as its count.
    fn rows(&self, schema: &SchemaRef) -> Result<RecordBatch, String> {
        let mut present: Vec<(&OwnedRow, i64)> = self
            .counts
            .iter()
            .filter(|(_, c)| **c > 0)
            .map(|(r, c)| (r, *c))
            .collect();
        present.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let columns = self
            .converter
            .convert_rows(present.iter().map(|(r, _)| r.row()))
            .map_err(|e| e.to_string())?;
        let batch = RecordBatch::try_new(schema.clone(), columns).map_err(|e| e.to_string())?;
        if present.iter().all(|(_, c)| *c == 1) {
            return Ok(batch);
        }
        let repeat: UInt32Array = present
            .iter()
            .enumerate()
            .flat_map(|(i, (_, c))| std::iter::repeat_n(i as u32, *c as usize))
            .collect();
        take_record_batch(&batch, &repeat).map_err(|e| e.to_string())
    }
}

impl MaterializedTable {
    /// An empty changelog table with columns `schema` (its input has them and a `diff`),
    /// written by `writers` workers.
    pub fn changelog(name: &str, schema: SchemaRef, writers: usize) -> Self {
        let table = Self::new(name, schema.clone(), writers);
        let fields = schema
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        match RowConverter::new(fields) {
            Ok(converter) => {
                table.lock().changes = Some(Changelog {
                    converter,
                    counts: HashMap::new(),
                    stale: false,
                });
            }
            // Every edgeflow field type has a row encoding.
            Err(e) => tracing::error!(table = name, error = %e, "no row format for the table"),
        }
        table
    }

    /// An empty table written by `writers` workers.
    pub fn new(name: &str, schema: SchemaRef, writers: usize) -> Self {
        MaterializedTable {
            name: name.to_string(),
            schema,
            state: Mutex::new(TableState {
                pending: BTreeMap::new(),
                changes: None,
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
            state.commit(&self.name, batch);
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
            state.commit(&self.name, batch);
        }
        if state.changes.is_none()
            && state.committed.len() >= COMPACT_AFTER_BATCHES
            && let Ok(merged) = concat_batches(&self.schema, &state.committed)
        {
            state.committed = vec![merged];
        }
    }

    /// The rows visible now, with the frontier they are complete up to.
    pub fn snapshot(&self) -> TableSnapshot {
        let mut state = self.lock();
        state.refresh(&self.name, &self.schema);
        TableSnapshot {
            batches: state.committed.clone(),
            frontier: state.visible_frontier,
        }
    }

    /// Number of visible rows.
    pub fn visible_rows(&self) -> usize {
        let mut state = self.lock();
        state.refresh(&self.name, &self.schema);
        state.committed_rows
    }

    /// Whether the table holds the sum of a changelog rather than appended rows.
    pub fn is_changelog(&self) -> bool {
        self.lock().changes.is_some()
    }
}

impl TableState {
    /// Makes a batch visible: appends it, or applies its changes.
    fn commit(&mut self, table: &str, batch: RecordBatch) {
        match &mut self.changes {
            Some(changes) => {
                if let Err(e) = changes.apply(&batch) {
                    tracing::error!(table, error = %e, "changes not applied");
                }
            }
            None => {
                self.committed_rows += batch.num_rows();
                self.committed.push(batch);
            }
        }
    }

    /// Rebuilds a changelog table's rows after changes were committed.
    fn refresh(&mut self, table: &str, schema: &SchemaRef) {
        let Some(changes) = self.changes.as_mut().filter(|c| c.stale) else {
            return;
        };
        changes.stale = false;
        match changes.rows(schema) {
            Ok(batch) => {
                self.committed_rows = batch.num_rows();
                self.committed = vec![batch];
            }
            Err(e) => tracing::error!(table, error = %e, "cannot rebuild the table's rows"),
        }
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

    fn changes(values: &[i64], diffs: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("v", DataType::Int64, true),
            Field::new("diff", DataType::Int64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(values.to_vec())),
                Arc::new(Int64Array::from(diffs.to_vec())),
            ],
        )
        .unwrap()
    }

    fn values(t: &MaterializedTable) -> Vec<i64> {
        let mut out: Vec<i64> = t
            .snapshot()
            .batches
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn a_changelog_table_holds_the_sum_of_its_committed_changes() {
        let t = MaterializedTable::changelog("t", batch(&[]).schema(), 1);
        assert!(t.is_changelog());
        t.append(1, changes(&[10, 20, 20], &[1, 1, 1]));
        t.append(5, changes(&[10, 11], &[-1, 1]));
        t.advance(0, 2);
        assert_eq!(
            values(&t),
            vec![10, 20, 20],
            "the correction at 5 is not visible yet"
        );
        t.advance(0, 6);
        assert_eq!(values(&t), vec![11, 20, 20]);
        t.append(7, changes(&[20, 20, 11], &[-1, -1, -1]));
        t.advance(0, i64::MAX);
        assert_eq!(values(&t), Vec::<i64>::new());
        assert_eq!(t.visible_rows(), 0);
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
