//! Grouped window statistics: fold the rows of a batch into per-group [`WindowStats`].
//!
//! The rows are first bucketed by group with a counting sort (the non-null values of each group,
//! in row order, become one contiguous run; skipped when the groups are already sorted and
//! there are no nulls), then each run goes through the dense statistics kernel
//! ([`super::stats`]) and is merged into its group's accumulator. The evaluation order is thus
//! defined per group and per batch: `acc[g] = acc[g].merge(stats(run of g))`, identical on every
//! instruction set.

use super::bitmap::Validity;
use super::simd::{Kernel, Lanes};
use super::stats::{CHUNK, WindowStats, chunk_stats};
use super::{Exec, mismatch};
use crate::error::{OperatorError, Result};

/// The grouped statistics kernel, with scratch buffers reused from batch to batch.
#[derive(Debug, Default)]
pub struct GroupedStats {
    /// Start of each group's run in `buf` (one more entry than groups).
    starts: Vec<usize>,
    /// Values bucketed by group.
    buf: Vec<f64>,
}

impl GroupedStats {
    /// A kernel with empty scratch buffers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Folds row `i` (when valid) into `accs[groups[i]]`, for every row. Errors, before
    /// changing anything, when the lengths of `values`, `validity` and `groups` differ or a
    /// group index is not below `accs.len()`. Groups without a valid row are left unchanged.
    ///
    /// ```
    /// # use edgeflow_operators::kernels::{Exec, GroupedStats, WindowStats};
    /// let mut accs = [WindowStats::EMPTY; 2];
    /// let mut k = GroupedStats::new();
    /// k.fold(Exec::new(), &[1.0, 5.0, 2.0], None, &[0, 1, 0], &mut accs).unwrap();
    /// assert_eq!((accs[0].count, accs[0].sum, accs[1].max), (2, 3.0, 5.0));
    /// ```
    pub fn fold(
        &mut self,
        exec: Exec,
        values: &[f64],
        validity: Option<Validity<'_>>,
        groups: &[u32],
        accs: &mut [WindowStats],
    ) -> Result<()> {
        if groups.len() != values.len() {
            return Err(mismatch(
                "grouped_stats",
                "groups",
                values.len(),
                groups.len(),
            ));
        }
        if let Some(v) = validity
            && v.len() != values.len()
        {
            return Err(mismatch("grouped_stats", "validity", values.len(), v.len()));
        }
        let max = groups.iter().copied().max().unwrap_or(0) as usize;
        if !groups.is_empty() && max >= accs.len() {
            return Err(OperatorError::Internal(format!(
                "kernel grouped_stats: group index {max} out of range for {} accumulators",
                accs.len()
            )));
        }
        exec.isa.kernel(FoldOp {
            this: self,
            values,
            validity,
            groups,
            accs,
        });
        Ok(())
    }
}

struct FoldOp<'a, 'b> {
    this: &'b mut GroupedStats,
    values: &'a [f64],
    validity: Option<Validity<'a>>,
    groups: &'a [u32],
    accs: &'b mut [WindowStats],
}

impl Kernel for FoldOp<'_, '_> {
    type Output = ();

    #[inline(always)]
    fn run<O: Lanes>(self, o: O) {
        let FoldOp {
            this,
            values,
            validity,
            groups,
            accs,
        } = self;
        if validity.is_none() && groups.is_sorted() {
            // Runs are already contiguous: no bucketing.
            let mut start = 0;
            while start < groups.len() {
                let g = groups[start];
                let len = groups[start..].partition_point(|&x| x == g);
                fold_run(o, &mut accs[g as usize], &values[start..start + len]);
                start += len;
            }
            return;
        }
        // Validity of rows 64 * w .. 64 * w + 64.
        let word = |w: usize| validity.map_or(!0, |v| v.bits64(w * 64));
        // Counting sort of the valid rows by group.
        let starts = &mut this.starts;
        starts.clear();
        starts.resize(accs.len() + 1, 0);
        for (w, gs) in groups.chunks(64).enumerate() {
            let bits = word(w);
            for (j, &g) in gs.iter().enumerate() {
                starts[g as usize + 1] += ((bits >> j) & 1) as usize;
            }
        }
        for g in 0..accs.len() {
            starts[g + 1] += starts[g];
        }
        let total = starts[accs.len()];
        this.buf.clear();
        this.buf.resize(total, 0.0);
        // `starts[g]` walks through group g's run, ending where group g + 1 starts.
        for (w, (gs, xs)) in groups.chunks(64).zip(values.chunks(64)).enumerate() {
            let bits = word(w);
            for (j, (&g, &x)) in gs.iter().zip(xs).enumerate() {
                if (bits >> j) & 1 == 1 {
                    let at = &mut starts[g as usize];
                    this.buf[*at] = x;
                    *at += 1;
                }
            }
        }
        let mut start = 0;
        for (g, acc) in accs.iter_mut().enumerate() {
            let end = starts[g];
            if end > start {
                fold_run(o, acc, &this.buf[start..end]);
            }
            start = end;
        }
    }
}

/// Merges the statistics of one group's run of valid values into its accumulator.
#[inline(always)]
fn fold_run<O: Lanes>(o: O, acc: &mut WindowStats, run: &[f64]) {
    let mut chunks = run.chunks(CHUNK).map(|c| chunk_stats(o, c, None, 0.0));
    if let Some(first) = chunks.next() {
        *acc = acc.merge(chunks.fold(first, WindowStats::merge));
    }
}

#[cfg(test)]
mod tests {
    use super::super::Isa;
    use super::super::stats::tests::{column, same_stats};
    use super::super::stats::window_stats;
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn every_isa_is_bit_identical_and_matches_per_group_stats(
            (values, nulls) in column(5_000),
            ngroups in 1usize..40,
            seed in any::<u64>(),
            sorted in any::<bool>(),
        ) {
            let mut groups: Vec<u32> = (0..values.len() as u64)
                .map(|i| ((i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed) >> 7) as u32 % ngroups as u32)
                .collect();
            if sorted {
                groups.sort_unstable();
            }
            let validity = nulls.as_ref().map(Validity::from);
            let init: Vec<WindowStats> = (0..ngroups)
                .map(|g| if g % 3 == 0 { WindowStats::EMPTY } else {
                    WindowStats { count: 1, sum: g as f64, sum_sq: 1.0, min: -1.0, max: g as f64 }
                })
                .collect();
            let mut reference = init.clone();
            GroupedStats::new()
                .fold(Exec::new().with_isa(Isa::scalar()), &values, validity, &groups, &mut reference)
                .unwrap();
            let mut k = GroupedStats::new();
            for isa in Isa::available() {
                let mut accs = init.clone();
                k.fold(Exec::new().with_isa(isa), &values, validity, &groups, &mut accs).unwrap();
                for g in 0..ngroups {
                    prop_assert!(same_stats(&accs[g], &reference[g]), "{} group {g}", isa.name());
                }
            }
            // Oracle: each group's valid values gathered by hand, through the dense kernel.
            for (g, start) in init.iter().enumerate() {
                let run: Vec<f64> = (0..values.len())
                    .filter(|&i| groups[i] as usize == g && !nulls.as_ref().is_some_and(|b| b.is_null(i)))
                    .map(|i| values[i])
                    .collect();
                let want = if run.is_empty() {
                    *start
                } else {
                    start.merge(window_stats(Exec::new(), &run, None).unwrap())
                };
                prop_assert!(same_stats(&reference[g], &want), "group {g}");
            }
        }
    }

    #[test]
    fn rejects_bad_inputs_without_changing_anything() {
        let mut accs = [WindowStats::EMPTY; 2];
        let mut k = GroupedStats::new();
        let e = Exec::new();
        assert!(k.fold(e, &[1.0, 2.0], None, &[0], &mut accs).is_err());
        assert!(k.fold(e, &[1.0, 2.0], None, &[0, 2], &mut accs).is_err());
        let v = Validity::new(&[0xff], 0, 1).unwrap();
        assert!(k.fold(e, &[1.0, 2.0], Some(v), &[0, 1], &mut accs).is_err());
        assert!(same_stats(&accs[0], &WindowStats::EMPTY));
        k.fold(e, &[], None, &[], &mut []).unwrap();
    }
}
