//! The accumulators of one window: per aggregate, a struct of arrays indexed by group slot
//! ([`AggState`], [`NumState`]), how each aggregate reads its input ([`AggPlan`]) and the
//! open groups of a window ([`Window`]); exact percentiles at close time.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array};
use arrow::buffer::{NullBuffer, ScalarBuffer};

use super::spec::AggregateFn;
use crate::schema::FieldType;

/// The value types aggregates compute on.
pub(super) trait Num: Copy + PartialOrd + Default + 'static {
    const LOWEST: Self;
    const HIGHEST: Self;
    fn to_f64(self) -> f64;
    fn add(self, other: Self) -> Self;
    /// False for NaN.
    fn ordered(self) -> bool;
    fn array(values: Vec<Self>, valid: Option<NullBuffer>) -> ArrayRef;
}

impl Num for i64 {
    const LOWEST: Self = i64::MIN;
    const HIGHEST: Self = i64::MAX;
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn add(self, other: Self) -> Self {
        self.wrapping_add(other)
    }
    #[inline(always)]
    fn ordered(self) -> bool {
        true
    }
    fn array(values: Vec<Self>, valid: Option<NullBuffer>) -> ArrayRef {
        Arc::new(Int64Array::new(ScalarBuffer::from(values), valid))
    }
}

impl Num for f64 {
    const LOWEST: Self = f64::NEG_INFINITY;
    const HIGHEST: Self = f64::INFINITY;
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn add(self, other: Self) -> Self {
        self + other
    }
    #[inline(always)]
    fn ordered(self) -> bool {
        !self.is_nan()
    }
    fn array(values: Vec<Self>, valid: Option<NullBuffer>) -> ArrayRef {
        Arc::new(Float64Array::new(ScalarBuffer::from(values), valid))
    }
}

/// Accumulators of one numeric aggregate for every group of a window (struct of arrays,
/// indexed by the group's slot).
#[derive(Debug)]
pub(super) enum NumState<T> {
    Sum {
        sum: Vec<T>,
        seen: Vec<bool>,
    },
    Min {
        v: Vec<T>,
        seen: Vec<bool>,
    },
    Max {
        v: Vec<T>,
        seen: Vec<bool>,
    },
    Mean {
        sum: Vec<f64>,
        n: Vec<u64>,
    },
    Stddev {
        n: Vec<u64>,
        mean: Vec<f64>,
        m2: Vec<f64>,
    },
    First {
        v: Vec<T>,
        ts: Vec<i64>,
        seen: Vec<bool>,
    },
    Last {
        v: Vec<T>,
        ts: Vec<i64>,
        seen: Vec<bool>,
    },
}

/// Accumulators of one aggregate for every group of a window.
#[derive(Debug)]
pub(super) enum AggState {
    Count(Vec<i64>),
    I(NumState<i64>),
    F(NumState<f64>),
    /// Values kept for the percentiles of one field.
    Values(Vec<Vec<f64>>),
    /// A percentile reading the values kept by another aggregate.
    Shared,
}

/// Calls `f(row, slot)` for every row whose value is not null.
#[inline(always)]
pub(super) fn each(
    rows: &[u32],
    slots: &[u32],
    nulls: Option<&NullBuffer>,
    mut f: impl FnMut(usize, usize),
) {
    match nulls {
        None => {
            for (&r, &s) in rows.iter().zip(slots) {
                f(r as usize, s as usize);
            }
        }
        Some(n) => {
            for (&r, &s) in rows.iter().zip(slots) {
                if n.is_valid(r as usize) {
                    f(r as usize, s as usize);
                }
            }
        }
    }
}

impl<T: Num> NumState<T> {
    pub(super) fn new(func: AggregateFn) -> Option<Self> {
        Some(match func {
            AggregateFn::Sum => NumState::Sum {
                sum: Vec::new(),
                seen: Vec::new(),
            },
            AggregateFn::Min => NumState::Min {
                v: Vec::new(),
                seen: Vec::new(),
            },
            AggregateFn::Max => NumState::Max {
                v: Vec::new(),
                seen: Vec::new(),
            },
            AggregateFn::Mean => NumState::Mean {
                sum: Vec::new(),
                n: Vec::new(),
            },
            AggregateFn::Stddev => NumState::Stddev {
                n: Vec::new(),
                mean: Vec::new(),
                m2: Vec::new(),
            },
            AggregateFn::First => NumState::First {
                v: Vec::new(),
                ts: Vec::new(),
                seen: Vec::new(),
            },
            AggregateFn::Last => NumState::Last {
                v: Vec::new(),
                ts: Vec::new(),
                seen: Vec::new(),
            },
            _ => return None,
        })
    }

    pub(super) fn resize(&mut self, n: usize) {
        match self {
            NumState::Sum { sum, seen } => {
                sum.resize(n, T::default());
                seen.resize(n, false);
            }
            NumState::Min { v, seen } => {
                v.resize(n, T::HIGHEST);
                seen.resize(n, false);
            }
            NumState::Max { v, seen } => {
                v.resize(n, T::LOWEST);
                seen.resize(n, false);
            }
            NumState::Mean { sum, n: c } => {
                sum.resize(n, 0.0);
                c.resize(n, 0);
            }
            NumState::Stddev { n: c, mean, m2 } => {
                c.resize(n, 0);
                mean.resize(n, 0.0);
                m2.resize(n, 0.0);
            }
            NumState::First { v, ts, seen } | NumState::Last { v, ts, seen } => {
                v.resize(n, T::default());
                ts.resize(n, 0);
                seen.resize(n, false);
            }
        }
    }

    #[inline(never)]
    pub(super) fn update(
        &mut self,
        vals: &[T],
        nulls: Option<&NullBuffer>,
        times: &[i64],
        rows: &[u32],
        slots: &[u32],
    ) {
        match self {
            NumState::Sum { sum, seen } => each(rows, slots, nulls, |r, s| {
                sum[s] = sum[s].add(vals[r]);
                seen[s] = true;
            }),
            NumState::Min { v, seen } => each(rows, slots, nulls, |r, s| {
                let x = vals[r];
                if x < v[s] {
                    v[s] = x;
                }
                seen[s] |= x.ordered();
            }),
            NumState::Max { v, seen } => each(rows, slots, nulls, |r, s| {
                let x = vals[r];
                if x > v[s] {
                    v[s] = x;
                }
                seen[s] |= x.ordered();
            }),
            NumState::Mean { sum, n } => each(rows, slots, nulls, |r, s| {
                sum[s] += vals[r].to_f64();
                n[s] += 1;
            }),
            NumState::Stddev { n, mean, m2 } => each(rows, slots, nulls, |r, s| {
                let x = vals[r].to_f64();
                n[s] += 1;
                let d = x - mean[s];
                mean[s] += d / n[s] as f64;
                m2[s] += d * (x - mean[s]);
            }),
            NumState::First { v, ts, seen } => each(rows, slots, nulls, |r, s| {
                let t = times[r];
                if !seen[s] || t < ts[s] {
                    v[s] = vals[r];
                    ts[s] = t;
                    seen[s] = true;
                }
            }),
            NumState::Last { v, ts, seen } => each(rows, slots, nulls, |r, s| {
                let t = times[r];
                if !seen[s] || t >= ts[s] {
                    v[s] = vals[r];
                    ts[s] = t;
                    seen[s] = true;
                }
            }),
        }
    }

    /// The output column for the groups in `order`.
    pub(super) fn finish(&self, order: &[u32]) -> ArrayRef {
        fn pick<V: Copy>(v: &[V], order: &[u32]) -> Vec<V> {
            order.iter().map(|&s| v[s as usize]).collect()
        }
        fn valid(seen: impl Iterator<Item = bool>) -> Option<NullBuffer> {
            let n = NullBuffer::from_iter(seen);
            (n.null_count() > 0).then_some(n)
        }
        let f64s = |v: Vec<f64>, ok: Option<NullBuffer>| f64::array(v, ok);
        match self {
            NumState::Sum { sum: v, seen }
            | NumState::Min { v, seen }
            | NumState::Max { v, seen }
            | NumState::First { v, seen, .. }
            | NumState::Last { v, seen, .. } => {
                let ok = valid(order.iter().map(|&s| seen[s as usize]));
                // Nulls carry the neutral element; write 0 there so outputs are deterministic.
                let mut vals = pick(v, order);
                for (x, &s) in vals.iter_mut().zip(order) {
                    if !seen[s as usize] {
                        *x = T::default();
                    }
                }
                T::array(vals, ok)
            }
            NumState::Mean { sum, n } => {
                let ok = valid(order.iter().map(|&s| n[s as usize] > 0));
                let vals = order
                    .iter()
                    .map(|&s| {
                        let c = n[s as usize];
                        if c > 0 {
                            sum[s as usize] / c as f64
                        } else {
                            0.0
                        }
                    })
                    .collect();
                f64s(vals, ok)
            }
            NumState::Stddev { n, m2, .. } => {
                let ok = valid(order.iter().map(|&s| n[s as usize] >= 2));
                let vals = order
                    .iter()
                    .map(|&s| {
                        let c = n[s as usize];
                        if c >= 2 {
                            // m2 >= 0 (abs only guards -0.0); NaN must stay NaN, so no max(0).
                            (m2[s as usize] / (c - 1) as f64).abs().sqrt()
                        } else {
                            0.0
                        }
                    })
                    .collect();
                f64s(vals, ok)
            }
        }
    }
}

/// The exact `q` quantile of sorted, NaN-free `v` (numpy's linear method).
pub(crate) fn percentile_sorted(v: &[f64], q: f64) -> Option<f64> {
    let n = v.len();
    if n == 0 {
        return None;
    }
    let pos = (n - 1) as f64 * q;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(n - 1);
    let t = pos - lo as f64;
    let (a, b) = (v[lo], v[hi]);
    Some(if t == 0.0 || a == b {
        a
    } else if a.is_infinite() || b.is_infinite() {
        // The limit of the interpolation: the infinite end wins, both infinite is undefined.
        if a.is_infinite() && b.is_infinite() {
            f64::NAN
        } else if a.is_infinite() {
            a
        } else {
            b
        }
    } else if t >= 0.5 {
        // numpy's _lerp: exact at both ends.
        b - (b - a) * (1.0 - t)
    } else {
        a + (b - a) * t
    })
}

impl AggState {
    pub(super) fn resize(&mut self, n: usize) {
        match self {
            AggState::Count(c) => c.resize(n, 0),
            AggState::I(s) => s.resize(n),
            AggState::F(s) => s.resize(n),
            AggState::Values(v) => v.resize_with(n, Vec::new),
            AggState::Shared => {}
        }
    }
}

/// How one aggregate reads its input.
#[derive(Debug, Clone)]
pub(super) struct AggPlan {
    pub(super) func: AggregateFn,
    /// Index of the input column.
    pub(super) column: usize,
    pub(super) input: FieldType,
    /// For percentiles: the index of the aggregate that keeps the field's values.
    pub(super) values_of: Option<usize>,
}

impl AggPlan {
    pub(super) fn new_state(&self, index: usize) -> AggState {
        if self.func == AggregateFn::Count {
            return AggState::Count(Vec::new());
        }
        if self.func.quantile().is_some() {
            return if self.values_of == Some(index) {
                AggState::Values(Vec::new())
            } else {
                AggState::Shared
            };
        }
        // `new` accepted only numeric inputs for these functions, and NumState::new
        // covers every non-count, non-percentile function.
        match self.input {
            FieldType::I64 => AggState::I(NumState::new(self.func).expect("numeric aggregate")),
            _ => AggState::F(NumState::new(self.func).expect("numeric aggregate")),
        }
    }
}

/// The open groups of one window.
#[derive(Debug)]
pub(super) struct Window {
    /// Slot of each key id in this window (`NO_SLOT` when absent), indexed by key id.
    pub(super) slot_of_key: Vec<u32>,
    /// Key id of each slot.
    pub(super) keys: Vec<u32>,
    pub(super) aggs: Vec<AggState>,
}

pub(super) const NO_SLOT: u32 = u32::MAX;
