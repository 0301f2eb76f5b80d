//! Event-time window aggregation: tumbling and hopping windows over keyed Arrow batches.
//!
//! A [`WindowAggregator`] is a batch-in/batch-out state machine that knows nothing about timely:
//! [`WindowAggregator::push`] adds a batch (returning its late and invalid rows),
//! [`WindowAggregator::advance`] moves the watermark and returns the results of the windows it
//! closed. The work is columnar: keys are interned for the whole batch ([`keys`]), rows are
//! bucketed by window, and accumulators are updated in tight loops over primitive slices.
//!
//! Aggregate semantics (all ignore null values):
//! - `count`: the number of non-null values of its field (of rows, when the field is the time field).
//! - `sum`, `mean`: every non-null value, NaN included (so a NaN makes them NaN). An `i64` sum
//!   wraps on overflow (as DataFusion's does); `mean` is computed in `f64`.
//! - `min`, `max`: ignore NaN.
//! - `stddev`: the SAMPLE standard deviation (divisor n - 1), null when fewer than 2 values;
//!   computed with Welford's algorithm.
//! - `first`, `last`: the value with the smallest / largest timestamp; ties go to arrival order.
//! - `p50`, `p95`, `p99`: EXACT percentiles with linear interpolation between the closest ranks
//!   (numpy's default, rank `(n - 1) * q`), NaN ignored, computed at close time from every
//!   value kept for the group. Memory: 8 bytes per value per open window, shared by all the
//!   percentiles of one field; nothing is kept when no percentile is requested.
//!
//! Outputs of every aggregate but `count` are null when the group had no (non-NaN for
//! min/max/percentiles) values.
//!
//! # SIMD kernels
//!
//! `count`, `min` and `max` of an `f64` field go through the grouped statistics kernel
//! ([`GroupedStats`]) when a batch brings many rows per group of a window (see
//! `KERNEL_MIN_ROWS_PER_GROUP`); their results are bit-identical to the row-by-row loops
//! (see `FoldPlan` for the one subtle case, signed zeros). `sum`, `mean` and `stddev` stay
//! row by row: the kernels add in 8 lanes combined pairwise, which rounds differently from the
//! sequential sum (and Welford update) that defines these outputs, so using them would change
//! results.

mod fold;
pub(crate) mod keys;
mod spec;
mod state;

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, PrimitiveArray, RecordBatch,
    TimestampMillisecondArray, UInt32Array,
};
use arrow::datatypes::{Float64Type, Int64Type, TimestampMillisecondType};

use crate::error::{OperatorError, Result};
use crate::kernels::Exec;
use crate::schema::{EventSchema, FieldType};
use fold::{FoldPlan, KERNEL_MIN_ROWS_PER_GROUP, fold_column, merge_folded};
use keys::KeyInterner;
pub use spec::{AggregateFn, AggregateSpec, WindowSpec};
pub(crate) use state::percentile_sorted;
use state::{AggPlan, AggState, NO_SLOT, Window, each};

/// What [`WindowAggregator::push`] did not aggregate.
#[derive(Debug, Default)]
pub struct PushOutcome {
    /// Rows all of whose windows were already closed (input schema, input order).
    pub late: Option<RecordBatch>,
    /// Rows whose timestamp is null or out of range, with the reason (for dead letters).
    pub invalid: Option<(RecordBatch, String)>,
}

/// Checks that a batch has the columns and types of `schema`.
pub(crate) fn check_batch(schema: &EventSchema, batch: &RecordBatch) -> Result<()> {
    let fields = schema.fields();
    let ok = batch.num_columns() == fields.len()
        && batch
            .columns()
            .iter()
            .zip(fields)
            .all(|(c, (_, t))| c.data_type() == &t.arrow_type());
    if ok {
        Ok(())
    } else {
        Err(OperatorError::Internal(format!(
            "batch with schema {} does not match the operator's input schema {schema}",
            batch.schema()
        )))
    }
}

/// Takes `rows` of every column of `batch`.
pub(crate) fn take_rows(batch: &RecordBatch, rows: &[u32]) -> Result<RecordBatch> {
    let idx = UInt32Array::from(rows.to_vec());
    let cols = batch
        .columns()
        .iter()
        .map(|c| arrow::compute::take(c, &idx, None))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(batch.schema(), cols)?)
}

/// Event-time tumbling/hopping window aggregation over keyed batches. See the module docs for
/// the semantics of each aggregate.
#[derive(Debug)]
pub struct WindowAggregator {
    input: EventSchema,
    output: EventSchema,
    output_arrow: arrow::datatypes::SchemaRef,
    time_column: usize,
    time_field: String,
    key_columns: Vec<usize>,
    plans: Vec<AggPlan>,
    spec: WindowSpec,
    /// Windows open per batch row (`size / slide`).
    per_row: i64,
    watermark: i64,
    windows: BTreeMap<i64, Window>,
    interner: KeyInterner,
    /// Forget dead keys when the interner grows past this.
    gc_threshold: usize,
    // Scratch buffers reused across batches.
    key_ids: Vec<u32>,
    accepted: Vec<u32>,
    bases: Vec<i64>,
    pairs: Vec<(i64, u32)>,
    slots: Vec<u32>,
    /// How the SIMD kernels run: on this thread (a timely worker), best instruction set.
    exec: Exec,
    fold: FoldPlan,
}

const MIN_GC_KEYS: usize = 4096;

impl WindowAggregator {
    /// A window aggregator. `time_field` must be TimestampMs, aggregate fields must be I64 or
    /// F64 (count also accepts any type: it counts non-null values), key fields any type.
    pub fn new(
        input: &EventSchema,
        time_field: &str,
        key: &[String],
        aggregates: &[AggregateSpec],
        spec: WindowSpec,
    ) -> Result<Self> {
        spec.validate()?;
        let user = |m: String| OperatorError::User(m);
        let index_of = |name: &str, what: &str| -> Result<(usize, FieldType)> {
            input
                .fields()
                .iter()
                .position(|(n, _)| n == name)
                .map(|i| (i, input.fields()[i].1))
                .ok_or_else(|| {
                    user(format!(
                        "{what} field \"{name}\" is not in the input schema {input}"
                    ))
                })
        };
        let (time_column, time_type) = index_of(time_field, "time")?;
        if time_type != FieldType::TimestampMs {
            return Err(user(format!(
                "time field \"{time_field}\" must be timestamp_ms, it is {time_type}"
            )));
        }
        let mut out_fields: Vec<(String, FieldType)> = vec![
            ("window_start".into(), FieldType::TimestampMs),
            ("window_end".into(), FieldType::TimestampMs),
        ];
        let mut key_columns = Vec::new();
        let mut key_types = Vec::new();
        for k in key {
            let (i, t) = index_of(k, "key")?;
            if out_fields.iter().any(|(n, _)| n == k) {
                return Err(user(format!(
                    "key field \"{k}\" is listed twice or clashes with a window column"
                )));
            }
            key_columns.push(i);
            key_types.push(t);
            out_fields.push((k.clone(), t));
        }
        if aggregates.is_empty() {
            return Err(user("a window needs at least one aggregate".into()));
        }
        let mut plans: Vec<AggPlan> = Vec::new();
        for a in aggregates {
            let (column, t) = index_of(&a.field, &format!("{} aggregate's", a.func.name()))?;
            if a.func != AggregateFn::Count && !t.is_numeric() {
                return Err(user(format!(
                    "aggregate {}({}) needs an i64 or f64 field, \"{}\" is {t}",
                    a.func.name(),
                    a.field,
                    a.field
                )));
            }
            if out_fields.iter().any(|(n, _)| *n == a.output) {
                return Err(user(format!(
                    "aggregate output \"{}\" is used twice (window_start, window_end, key \
                     fields and outputs must have distinct names)",
                    a.output
                )));
            }
            let values_of = a.func.quantile().map(|_| {
                plans
                    .iter()
                    .position(|p| p.func.quantile().is_some() && p.column == column)
                    .unwrap_or(plans.len())
            });
            out_fields.push((a.output.clone(), a.func.output_type(t)));
            plans.push(AggPlan {
                func: a.func,
                column,
                input: t,
                values_of,
            });
        }
        let output = EventSchema::new(out_fields);
        let fold = FoldPlan::new(&plans);
        Ok(WindowAggregator {
            input: input.clone(),
            output_arrow: output.to_arrow(),
            output,
            time_column,
            time_field: time_field.to_string(),
            key_columns,
            plans,
            spec,
            per_row: spec.size_ms / spec.slide_ms,
            watermark: i64::MIN,
            windows: BTreeMap::new(),
            interner: KeyInterner::new(key_types),
            gc_threshold: MIN_GC_KEYS,
            key_ids: Vec::new(),
            accepted: Vec::new(),
            bases: Vec::new(),
            pairs: Vec::new(),
            slots: Vec::new(),
            exec: Exec::new().serial(),
            fold,
        })
    }

    /// Output schema: `window_start`, `window_end` (timestamp_ms), the key fields with their
    /// input types, then one column per aggregate named `output`, typed by `output_type`.
    pub fn output_schema(&self) -> &EventSchema {
        &self.output
    }

    /// Number of (window, key) groups currently open.
    pub fn open_groups(&self) -> usize {
        self.windows.values().map(|w| w.keys.len()).sum()
    }

    /// The start of the earliest open window.
    pub fn earliest_open_start(&self) -> Option<i64> {
        self.windows.keys().next().copied()
    }

    /// Whether the window starting at `start` is closed at watermark `wm`.
    #[inline(always)]
    fn closed(&self, start: i64, wm: i64) -> bool {
        // Starts were checked at push time so that this cannot overflow.
        start + self.spec.size_ms + self.spec.allowed_lateness_ms <= wm
    }

    /// Adds a batch. Every window with `end + allowed_lateness <= watermark` (the value last
    /// given to [`advance`](Self::advance)) is closed; a row none of whose windows is still open
    /// is late: it is not aggregated and is returned in `late`. Rows with a null timestamp, or
    /// one so close to the ends of the i64 range that its windows cannot be represented, are
    /// returned in `invalid` with the reason.
    pub fn push(&mut self, batch: &RecordBatch) -> Result<PushOutcome> {
        self.push_with_watermark(batch, i64::MIN)
    }

    /// Like [`push`](Self::push), but rows are judged late against
    /// `max(watermark, the value last given to advance)`. A dataflow passes the watermark
    /// its upstream declared when it sent the batch, which makes lateness independent of
    /// when this operator happens to observe frontier progress.
    pub fn push_with_watermark(
        &mut self,
        batch: &RecordBatch,
        watermark: i64,
    ) -> Result<PushOutcome> {
        check_batch(&self.input, batch)?;
        let n = batch.num_rows();
        if n == 0 {
            return Ok(PushOutcome::default());
        }
        if n > u32::MAX as usize {
            return Err(OperatorError::User(format!(
                "batch of {n} rows is too large (max {})",
                u32::MAX
            )));
        }
        let ts_array: &TimestampMillisecondArray = batch
            .column(self.time_column)
            .as_primitive_opt::<TimestampMillisecondType>()
            .ok_or_else(|| OperatorError::Internal("time column type".into()))?;
        let times: &[i64] = ts_array.values();
        let ts_nulls = ts_array.nulls().filter(|n| n.null_count() > 0);

        // Classify rows: invalid, late, accepted (with the start of their latest window).
        let (size, slide, lateness) = (
            self.spec.size_ms as i128,
            self.spec.slide_ms as i128,
            self.spec.allowed_lateness_ms as i128,
        );
        let span = (self.per_row as i128 - 1) * slide;
        let wm = self.watermark.max(watermark);
        let mut late = Vec::new();
        let mut null_rows = Vec::new();
        let mut out_of_range = Vec::new();
        self.accepted.clear();
        self.bases.clear();
        for (row, &t) in times.iter().enumerate() {
            if ts_nulls.is_some_and(|nb| nb.is_null(row)) {
                null_rows.push(row as u32);
                continue;
            }
            let base = (t as i128).div_euclid(slide) * slide;
            if base - span < i64::MIN as i128 || base + size + lateness > i64::MAX as i128 {
                out_of_range.push(row as u32);
                continue;
            }
            // In range, checked just above.
            let base = base as i64;
            if self.closed(base, wm) {
                late.push(row as u32);
            } else {
                self.accepted.push(row as u32);
                self.bases.push(base);
            }
        }

        if !self.accepted.is_empty() {
            let key_cols: Vec<&ArrayRef> =
                self.key_columns.iter().map(|&i| batch.column(i)).collect();
            self.interner.intern(&key_cols, n, &mut self.key_ids)?;
            for j in 0..self.per_row {
                self.aggregate_pass(batch, times, j * self.spec.slide_ms, wm)?;
            }
        }

        let mut outcome = PushOutcome::default();
        if !late.is_empty() {
            outcome.late = Some(take_rows(batch, &late)?);
        }
        if !null_rows.is_empty() || !out_of_range.is_empty() {
            let mut reasons = Vec::new();
            if !null_rows.is_empty() {
                reasons.push(format!("null timestamp in field \"{}\"", self.time_field));
            }
            if !out_of_range.is_empty() {
                reasons.push(format!(
                    "timestamp in field \"{}\" too close to the limits of the i64 range for \
                     its windows",
                    self.time_field
                ));
            }
            let mut rows = null_rows;
            rows.extend(out_of_range);
            rows.sort_unstable();
            outcome.invalid = Some((take_rows(batch, &rows)?, reasons.join("; ")));
        }
        Ok(outcome)
    }

    /// Adds the accepted rows to their windows starting `offset` ms before their latest one.
    fn aggregate_pass(
        &mut self,
        batch: &RecordBatch,
        times: &[i64],
        offset: i64,
        wm: i64,
    ) -> Result<()> {
        let (first, last) = self
            .bases
            .iter()
            .fold((i64::MAX, i64::MIN), |(a, b), &s| (a.min(s), b.max(s)));
        if first == last {
            // The common case: the whole batch falls in one window.
            let start = first - offset;
            if !self.closed(start, wm) {
                let rows = std::mem::take(&mut self.accepted);
                let r = self.update_window(batch, times, start, &rows);
                self.accepted = rows;
                r?;
            }
            return Ok(());
        }
        let mut pairs = std::mem::take(&mut self.pairs);
        pairs.clear();
        pairs.extend(
            self.bases
                .iter()
                .zip(&self.accepted)
                .map(|(&b, &r)| (b - offset, r))
                .filter(|&(s, _)| !self.closed(s, wm)),
        );
        // Stable and adaptive: rows stay in arrival order within a window.
        pairs.sort_by_key(|&(s, _)| s);
        let mut rows: Vec<u32> = Vec::new();
        let mut result = Ok(());
        for run in pairs.chunk_by(|a, b| a.0 == b.0) {
            rows.clear();
            rows.extend(run.iter().map(|&(_, r)| r));
            result = self.update_window(batch, times, run[0].0, &rows);
            if result.is_err() {
                break;
            }
        }
        self.pairs = pairs;
        result
    }

    /// Adds `rows` (ascending) to the window starting at `start`.
    fn update_window(
        &mut self,
        batch: &RecordBatch,
        times: &[i64],
        start: i64,
        rows: &[u32],
    ) -> Result<()> {
        let plans = &self.plans;
        let window = self.windows.entry(start).or_insert_with(|| Window {
            slot_of_key: Vec::new(),
            keys: Vec::new(),
            aggs: plans
                .iter()
                .enumerate()
                .map(|(i, p)| p.new_state(i))
                .collect(),
        });
        if window.slot_of_key.len() < self.interner.len() {
            window.slot_of_key.resize(self.interner.len(), NO_SLOT);
        }
        let slots = &mut self.slots;
        slots.clear();
        slots.reserve(rows.len());
        for &r in rows {
            let k = self.key_ids[r as usize] as usize;
            let mut s = window.slot_of_key[k];
            if s == NO_SLOT {
                // Fewer groups than keys, and key ids are u32.
                s = window.keys.len() as u32;
                window.keys.push(k as u32);
                window.slot_of_key[k] = s;
            }
            slots.push(s);
        }
        let groups = window.keys.len();
        let FoldPlan {
            columns,
            of_plan,
            kernel,
            accs,
            values,
            groups: group_buf,
        } = &mut self.fold;
        let folded = !columns.is_empty() && rows.len() >= KERNEL_MIN_ROWS_PER_GROUP * groups;
        if folded {
            for (&c, acc) in columns.iter().zip(accs.iter_mut()) {
                let a: &Float64Array = batch
                    .column(c)
                    .as_primitive_opt()
                    .ok_or_else(|| OperatorError::Internal(format!("column {c} type")))?;
                fold_column(
                    self.exec, kernel, a, rows, slots, values, group_buf, acc, groups,
                )?;
            }
        }
        for ((plan, state), of) in plans.iter().zip(&mut window.aggs).zip(of_plan.iter()) {
            state.resize(groups);
            if folded && let Some(k) = *of {
                merge_folded(state, &accs[k])?;
                continue;
            }
            let col = batch.column(plan.column);
            let nulls = col.nulls().filter(|n| n.null_count() > 0);
            let wrong = || OperatorError::Internal(format!("column {} type", plan.column));
            match state {
                AggState::Count(c) => each(rows, slots, nulls, |_, s| c[s] += 1),
                AggState::I(st) => {
                    let a: &PrimitiveArray<Int64Type> = col.as_primitive_opt().ok_or_else(wrong)?;
                    st.update(a.values(), nulls, times, rows, slots);
                }
                AggState::F(st) => {
                    let a: &PrimitiveArray<Float64Type> =
                        col.as_primitive_opt().ok_or_else(wrong)?;
                    st.update(a.values(), nulls, times, rows, slots);
                }
                AggState::Values(v) => match plan.input {
                    FieldType::I64 => {
                        let a: &PrimitiveArray<Int64Type> =
                            col.as_primitive_opt().ok_or_else(wrong)?;
                        let x = a.values();
                        each(rows, slots, nulls, |r, s| v[s].push(x[r] as f64));
                    }
                    _ => {
                        let a: &PrimitiveArray<Float64Type> =
                            col.as_primitive_opt().ok_or_else(wrong)?;
                        let x = a.values();
                        each(rows, slots, nulls, |r, s| {
                            if !x[r].is_nan() {
                                v[s].push(x[r]);
                            }
                        });
                    }
                },
                AggState::Shared => {}
            }
        }
        Ok(())
    }

    /// Closes every window with `end + allowed_lateness <= watermark` and returns their results
    /// (None if nothing closed), ordered by window_start then key (nulls first). A key with no
    /// events in a window has no row. A watermark smaller than the last one is ignored.
    pub fn advance(&mut self, watermark: i64) -> Result<Option<RecordBatch>> {
        if watermark <= self.watermark {
            return Ok(None);
        }
        self.watermark = watermark;
        let mut batches = Vec::new();
        while let Some(&start) = self.windows.keys().next() {
            if !self.closed(start, watermark) {
                break;
            }
            // `start` is the first key, so it is present.
            let Some(window) = self.windows.remove(&start) else {
                break;
            };
            batches.push(self.finish(start, window)?);
        }
        self.collect_keys();
        if batches.is_empty() {
            return Ok(None);
        }
        Ok(Some(arrow::compute::concat_batches(
            &self.output_arrow,
            &batches,
        )?))
    }

    /// The output rows of a closed window.
    fn finish(&self, start: i64, mut window: Window) -> Result<RecordBatch> {
        let mut order: Vec<u32> = (0..window.keys.len() as u32).collect();
        let keys = &window.keys;
        order.sort_unstable_by(|&a, &b| self.interner.cmp(keys[a as usize], keys[b as usize]));
        let n = order.len();
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(TimestampMillisecondArray::from(vec![start; n])),
            Arc::new(TimestampMillisecondArray::from(vec![
                start
                    + self.spec.size_ms;
                n
            ])),
        ];
        let ordered_keys: Vec<u32> = order.iter().map(|&s| keys[s as usize]).collect();
        columns.extend(self.interner.arrays(&ordered_keys));
        for state in &mut window.aggs {
            if let AggState::Values(v) = state {
                for vals in v {
                    vals.sort_unstable_by(f64::total_cmp);
                }
            }
        }
        for (i, plan) in self.plans.iter().enumerate() {
            let col: ArrayRef = match (&window.aggs[i], plan.func.quantile()) {
                (AggState::Count(c), _) => Arc::new(Int64Array::from_iter_values(
                    order.iter().map(|&s| c[s as usize]),
                )),
                (AggState::I(st), _) => st.finish(&order),
                (AggState::F(st), _) => st.finish(&order),
                (_, Some(q)) => {
                    let src = plan.values_of.and_then(|j| window.aggs.get(j));
                    let Some(AggState::Values(v)) = src else {
                        return Err(OperatorError::Internal(
                            "percentile without its values".into(),
                        ));
                    };
                    Arc::new(
                        order
                            .iter()
                            .map(|&s| percentile_sorted(&v[s as usize], q))
                            .collect::<Float64Array>(),
                    )
                }
                _ => {
                    return Err(OperatorError::Internal(
                        "aggregate state does not match its function".into(),
                    ));
                }
            };
            columns.push(col);
        }
        Ok(RecordBatch::try_new(self.output_arrow.clone(), columns)?)
    }

    /// Forgets interned keys that no open window uses, once there are many of them.
    fn collect_keys(&mut self) {
        let total = self.interner.len();
        if total <= self.gc_threshold {
            return;
        }
        let mut live = vec![false; total];
        for w in self.windows.values() {
            for &k in &w.keys {
                live[k as usize] = true;
            }
        }
        let live_ids: Vec<u32> = (0..total as u32).filter(|&k| live[k as usize]).collect();
        if live_ids.len() * 2 > total {
            self.gc_threshold = (live_ids.len() * 2).max(MIN_GC_KEYS);
            return;
        }
        let mut remap = vec![NO_SLOT; total];
        for (new, &old) in live_ids.iter().enumerate() {
            remap[old as usize] = new as u32;
        }
        self.interner.retain(&live_ids);
        for w in self.windows.values_mut() {
            w.slot_of_key.clear();
            w.slot_of_key.resize(live_ids.len(), NO_SLOT);
            for (slot, k) in w.keys.iter_mut().enumerate() {
                *k = remap[*k as usize];
                w.slot_of_key[*k as usize] = slot as u32;
            }
        }
        self.gc_threshold = (live_ids.len() * 2).max(MIN_GC_KEYS);
    }
}

#[cfg(test)]
mod tests;
