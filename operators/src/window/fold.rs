//! The grouped statistics kernel on the window's hot path: `count`, `min` and `max` of `f64`
//! fields folded by [`GroupedStats`] when a batch brings many rows per group, with results
//! bit-identical to the row-by-row loops (see [`FoldPlan`]).

use arrow::array::{Array, Float64Array};
use arrow::buffer::NullBuffer;

use super::spec::AggregateFn;
use super::state::{AggPlan, AggState, NumState, each};
use crate::error::{OperatorError, Result};
use crate::kernels::{Exec, GroupedStats, Validity, WindowStats};
use crate::schema::FieldType;

/// Rows per group of a window, on average over one window update, from which `count`, `min`
/// and `max` of `f64` fields go through the grouped kernel. Below it the row-by-row loops win:
/// the kernel buckets rows by group and runs once per group, which short runs do not pay for
/// (`benches/window.rs`: ~4 rows per group per batch is faster row by row).
pub(super) const KERNEL_MIN_ROWS_PER_GROUP: usize = 16;

/// The `f64` fields whose `count`, `min` and `max` the grouped kernel computes, with its
/// scratch buffers.
///
/// Exactness: the kernel's count is exact, and its min (max) is the smallest (largest)
/// non-NaN value, as in the loops, merged into the state with the loops' comparison. Equal
/// values have identical bits except `-0.0` and `+0.0`: the loops keep the first in row order,
/// the kernel the one of its lowest accumulator lane, so when a group's min (max) is a zero,
/// [`fix_zeros`] takes it from the group's first zero in row order.
#[derive(Debug, Default)]
pub(super) struct FoldPlan {
    /// Input columns folded by the kernel (f64 fields with a `min` or `max`).
    pub(super) columns: Vec<usize>,
    /// Per aggregate: the index in `columns` of its field when the kernel computes it.
    pub(super) of_plan: Vec<Option<usize>>,
    pub(super) kernel: GroupedStats,
    /// Per entry of `columns`: this update's statistics per group slot.
    pub(super) accs: Vec<Vec<WindowStats>>,
    pub(super) values: Vec<f64>,
    pub(super) groups: Vec<u32>,
}

impl FoldPlan {
    pub(super) fn new(plans: &[AggPlan]) -> Self {
        let folds = |p: &AggPlan| p.input == FieldType::F64;
        let mut columns: Vec<usize> = Vec::new();
        for p in plans {
            if folds(p)
                && matches!(p.func, AggregateFn::Min | AggregateFn::Max)
                && !columns.contains(&p.column)
            {
                columns.push(p.column);
            }
        }
        let of_plan = plans
            .iter()
            .map(|p| {
                let kind = matches!(
                    p.func,
                    AggregateFn::Count | AggregateFn::Min | AggregateFn::Max
                );
                columns
                    .iter()
                    .position(|&c| c == p.column)
                    .filter(|_| kind && folds(p))
            })
            .collect();
        FoldPlan {
            accs: vec![Vec::new(); columns.len()],
            columns,
            of_plan,
            ..FoldPlan::default()
        }
    }
}

/// The count, min and max of `a` at `rows` (ascending, non-empty) per group slot (`slots`, one
/// per row), into `accs` (`n_groups` long), exactly as the row-by-row loops compute them.
#[allow(clippy::too_many_arguments)]
pub(super) fn fold_column(
    exec: Exec,
    kernel: &mut GroupedStats,
    a: &Float64Array,
    rows: &[u32],
    slots: &[u32],
    values: &mut Vec<f64>,
    groups: &mut Vec<u32>,
    accs: &mut Vec<WindowStats>,
    n_groups: usize,
) -> Result<()> {
    accs.clear();
    accs.resize(n_groups, WindowStats::EMPTY);
    let (Some(&first), Some(&last)) = (rows.first(), rows.last()) else {
        return Ok(());
    };
    let x = a.values();
    let nulls = a.nulls().filter(|n| n.null_count() > 0);
    let (first, last) = (first as usize, last as usize);
    if last - first + 1 == rows.len() {
        // Ascending and as many as the span: every row in between, so read the column in place.
        let validity = nulls.map(|n| Validity::from(n).slice(first, rows.len()));
        kernel.fold(exec, &x[first..=last], validity, slots, accs)?;
    } else {
        values.clear();
        groups.clear();
        each(rows, slots, nulls, |r, s| {
            values.push(x[r]);
            groups.push(s as u32);
        });
        kernel.fold(exec, values, None, groups, accs)?;
    }
    fix_zeros(x, nulls, rows, slots, accs);
    Ok(())
}

/// Gives each group whose min (max) is a zero the sign of its first zero in row order, as the
/// row-by-row loops keep it (see [`FoldPlan`]).
fn fix_zeros(
    x: &[f64],
    nulls: Option<&NullBuffer>,
    rows: &[u32],
    slots: &[u32],
    accs: &mut [WindowStats],
) {
    // Bit 0: the min is a zero, bit 1: the max is.
    let todo = |a: &WindowStats| u8::from(a.min == 0.0) | (u8::from(a.max == 0.0) << 1);
    if !accs.iter().any(|a| todo(a) != 0) {
        return;
    }
    let mut pending: Vec<u8> = accs.iter().map(todo).collect();
    each(rows, slots, nulls, |r, s| {
        if pending[s] != 0 && x[r] == 0.0 {
            if pending[s] & 1 != 0 {
                accs[s].min = x[r];
            }
            if pending[s] & 2 != 0 {
                accs[s].max = x[r];
            }
            pending[s] = 0;
        }
    });
}

/// Merges a kernel fold into the state of a `count`, `min` or `max` aggregate, as the
/// row-by-row loops would have updated it.
pub(super) fn merge_folded(state: &mut AggState, folded: &[WindowStats]) -> Result<()> {
    match state {
        AggState::Count(c) => {
            for (c, a) in c.iter_mut().zip(folded) {
                *c += a.count as i64;
            }
        }
        AggState::F(NumState::Min { v, seen }) => {
            for ((v, seen), a) in v.iter_mut().zip(seen.iter_mut()).zip(folded) {
                if a.min < *v {
                    *v = a.min;
                }
                *seen |= a.has_ordered();
            }
        }
        AggState::F(NumState::Max { v, seen }) => {
            for ((v, seen), a) in v.iter_mut().zip(seen.iter_mut()).zip(folded) {
                if a.max > *v {
                    *v = a.max;
                }
                *seen |= a.has_ordered();
            }
        }
        _ => {
            return Err(OperatorError::Internal(
                "kernel fold planned for an aggregate other than count, min or max".into(),
            ));
        }
    }
    Ok(())
}
