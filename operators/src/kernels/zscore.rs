//! Z-score scoring: `|x - mean| / std` for every row, and the mask of rows at or above a
//! threshold.
//!
//! The score is the z-score detector's (`crate::detect`): `d = |x - mean|`, then `d / std` when
//! `std > 0`, else `0` when `d == 0`, else `+inf`. Each row is computed on its own with exactly
//! rounded operations, so every instruction set and split gives the same bits. NaN inputs give
//! a NaN (or `+inf` when `std` is 0 or NaN) score, which is never "at or above" a threshold:
//! callers that treat NaN as an exception (as the detector does) test for it themselves.

use arrow::buffer::{BooleanBuffer, Buffer};
use rayon::prelude::*;

use super::bitmap::{Validity, low_bits};
use super::simd::{Kernel, Lanes};
use super::{Exec, mismatch};
use crate::error::Result;

/// Rows per block: one word of the output mask.
const BLOCK: usize = 64;

/// Rows per parallel task (a multiple of [`BLOCK`]).
const CHUNK: usize = 1 << 14;

/// Inputs at least this long are split across threads (when [`Exec`] allows it), measured on
/// 2 cores.
pub const PAR_MIN_ROWS: usize = 1 << 16;

/// A mean or standard deviation: one for the whole batch, or one per row.
#[derive(Debug, Clone, Copy)]
pub enum Param<'a> {
    /// The same value for every row.
    Uniform(f64),
    /// One value per row (same length as the values).
    PerRow(&'a [f64]),
}

impl Param<'_> {
    fn check(&self, what: &str, len: usize) -> Result<()> {
        match self {
            Param::PerRow(v) if v.len() != len => Err(mismatch("zscore", what, len, v.len())),
            _ => Ok(()),
        }
    }

    /// Rows `start..start + len` (inside the checked length).
    fn slice(self, start: usize, len: usize) -> Self {
        match self {
            Param::PerRow(v) => Param::PerRow(&v[start..start + len]),
            u => u,
        }
    }
}

/// Writes the score of every row of `values` to `out` (same length). Null rows have no
/// meaning to this kernel: their score is computed from whatever value the slot holds.
///
/// ```
/// # use edgeflow_operators::kernels::{Exec, Param, zscore};
/// let mut out = [0.0; 3];
/// zscore(Exec::new(), &[1.0, 4.0, 3.0], Param::Uniform(2.0), Param::PerRow(&[1.0, 2.0, 0.0]), &mut out).unwrap();
/// assert_eq!(out, [1.0, 1.0, f64::INFINITY]);
/// ```
pub fn zscore(
    exec: Exec,
    values: &[f64],
    mean: Param<'_>,
    std: Param<'_>,
    out: &mut [f64],
) -> Result<()> {
    mean.check("mean", values.len())?;
    std.check("std", values.len())?;
    if out.len() != values.len() {
        return Err(mismatch("zscore", "output", values.len(), out.len()));
    }
    run(exec, values, None, mean, std, f64::NAN, Some(out), &mut []);
    Ok(())
}

/// The rows that are valid and score at or above `threshold`, as a bitmap of `values.len()`
/// bits; also writes every row's score to `scores` when given (same length as `values`).
pub fn zscore_mask(
    exec: Exec,
    values: &[f64],
    validity: Option<Validity<'_>>,
    mean: Param<'_>,
    std: Param<'_>,
    threshold: f64,
    scores: Option<&mut [f64]>,
) -> Result<BooleanBuffer> {
    let n = values.len();
    mean.check("mean", n)?;
    std.check("std", n)?;
    if let Some(v) = validity
        && v.len() != n
    {
        return Err(mismatch("zscore", "validity", n, v.len()));
    }
    if let Some(s) = &scores
        && s.len() != n
    {
        return Err(mismatch("zscore", "scores", n, s.len()));
    }
    let mut words = vec![0u64; n.div_ceil(BLOCK)];
    run(
        exec, values, validity, mean, std, threshold, scores, &mut words,
    );
    Ok(BooleanBuffer::new(Buffer::from_vec(words), 0, n))
}

/// Splits across threads when worth it, then dispatches each part. `words` is empty when no
/// mask is wanted.
#[allow(clippy::too_many_arguments)]
fn run(
    exec: Exec,
    values: &[f64],
    validity: Option<Validity<'_>>,
    mean: Param<'_>,
    std: Param<'_>,
    threshold: f64,
    scores: Option<&mut [f64]>,
    words: &mut [u64],
) {
    let part = |start: usize, values: &[f64], scores: Option<&mut [f64]>, words: &mut [u64]| {
        let len = values.len();
        exec.isa.kernel(ZOp {
            values,
            validity: validity.map(|v| v.slice(start, len)),
            mean: mean.slice(start, len),
            std: std.slice(start, len),
            threshold,
            scores,
            words,
        });
    };
    if !exec.split(values.len(), PAR_MIN_ROWS) {
        return part(0, values, scores, words);
    }
    let words_per_chunk = if words.is_empty() { 0 } else { CHUNK / BLOCK };
    let mut word_chunks: Vec<&mut [u64]> = if words.is_empty() {
        values
            .chunks(CHUNK)
            .map(|_| <&mut [u64]>::default())
            .collect()
    } else {
        words.chunks_mut(words_per_chunk).collect()
    };
    let mut score_chunks: Vec<Option<&mut [f64]>> = match scores {
        Some(s) => s.chunks_mut(CHUNK).map(Some).collect(),
        None => values.chunks(CHUNK).map(|_| None).collect(),
    };
    values
        .par_chunks(CHUNK)
        .zip(score_chunks.par_drain(..))
        .zip(word_chunks.par_drain(..))
        .enumerate()
        .for_each(|(i, ((v, s), w))| part(i * CHUNK, v, s, w));
}

struct ZOp<'a, 'b> {
    values: &'a [f64],
    validity: Option<Validity<'a>>,
    mean: Param<'a>,
    std: Param<'a>,
    threshold: f64,
    scores: Option<&'b mut [f64]>,
    words: &'b mut [u64],
}

impl Kernel for ZOp<'_, '_> {
    type Output = ();

    #[inline(always)]
    fn run<O: Lanes>(self, o: O) {
        use Param::{PerRow, Uniform};
        match (self.mean, self.std) {
            (Uniform(m), Uniform(s)) => blocks(o, self, Splat(m), Splat(s)),
            (Uniform(m), PerRow(s)) => blocks(o, self, Splat(m), Rows(s)),
            (PerRow(m), Uniform(s)) => blocks(o, self, Rows(m), Splat(s)),
            (PerRow(m), PerRow(s)) => blocks(o, self, Rows(m), Rows(s)),
        }
    }
}

/// A parameter read 8 rows at a time.
trait Source: Copy {
    /// Rows `8 * b .. 8 * b + 8` (a full block).
    fn lanes<O: Lanes>(self, o: O, b: usize) -> O::V;
    /// The last rows from `8 * b`, padded with zeros.
    fn tail<O: Lanes>(self, o: O, b: usize) -> O::V;
}

#[derive(Clone, Copy)]
struct Splat(f64);

impl Source for Splat {
    #[inline(always)]
    fn lanes<O: Lanes>(self, o: O, _: usize) -> O::V {
        o.splat(self.0)
    }
    #[inline(always)]
    fn tail<O: Lanes>(self, o: O, _: usize) -> O::V {
        o.splat(self.0)
    }
}

#[derive(Clone, Copy)]
struct Rows<'a>(&'a [f64]);

impl Source for Rows<'_> {
    #[inline(always)]
    fn lanes<O: Lanes>(self, o: O, b: usize) -> O::V {
        o.load(&self.0.as_chunks::<8>().0[b])
    }
    #[inline(always)]
    fn tail<O: Lanes>(self, o: O, b: usize) -> O::V {
        o.load(&pad(&self.0[8 * b..]))
    }
}

/// The first 8 values of `v`, padded with zeros.
#[inline(always)]
fn pad(v: &[f64]) -> [f64; 8] {
    let mut b = [0.0; 8];
    let n = v.len().min(8);
    b[..n].copy_from_slice(&v[..n]);
    b
}

/// The score of 8 lanes: exactly the detector's formula, lane-wise.
#[inline(always)]
fn score<O: Lanes>(o: O, x: O::V, mean: O::V, std: O::V) -> O::V {
    let zero = o.splat(0.0);
    let d = o.abs(o.sub(x, mean));
    let z = o.select(o.eq(d, zero), zero, o.splat(f64::INFINITY));
    o.select(o.gt(std, zero), o.div(d, std), z)
}

#[inline(always)]
fn blocks<O: Lanes>(o: O, op: ZOp<'_, '_>, mean: impl Source, std: impl Source) {
    let ZOp {
        values,
        validity,
        threshold,
        mut scores,
        words,
        ..
    } = op;
    let n = values.len();
    let want_mask = !words.is_empty();
    let t = o.splat(threshold);
    let (full, _) = values.as_chunks::<8>();
    // Mask bits of the current 64-row word.
    let mut word = 0u64;
    let mut flush = |w: usize, word: u64| {
        let base = w * BLOCK;
        let valid = validity.map_or(!0, |v| v.bits64(base));
        words[w] = word & valid & low_bits(n - base);
    };
    for (b, x) in full.iter().enumerate() {
        let z = score(o, o.load(x), mean.lanes(o, b), std.lanes(o, b));
        if let Some(out) = scores.as_deref_mut() {
            out.as_chunks_mut::<8>().0[b] = o.store(z);
        }
        if want_mask {
            word |= u64::from(o.bits(o.ge(z, t))) << ((b % 8) * 8);
            if b % 8 == 7 {
                flush(b / 8, word);
                word = 0;
            }
        }
    }
    let b = full.len();
    if n > 8 * b {
        let z = score(
            o,
            o.load(&pad(&values[8 * b..])),
            mean.tail(o, b),
            std.tail(o, b),
        );
        if let Some(out) = scores {
            let rest = &mut out[8 * b..];
            let len = rest.len();
            rest.copy_from_slice(&o.store(z)[..len]);
        }
        if want_mask {
            word |= u64::from(o.bits(o.ge(z, t))) << ((b % 8) * 8);
        }
    }
    if want_mask && n % BLOCK != 0 {
        flush(n / BLOCK, word);
    }
}

#[cfg(test)]
mod tests {
    use super::super::Isa;
    use super::super::stats::tests::{column, same, value};
    use super::*;
    use proptest::prelude::*;

    fn param(per_row: bool, len: usize) -> impl Strategy<Value = (bool, Vec<f64>)> {
        proptest::collection::vec(value(), if per_row { len } else { 1 })
            .prop_map(move |v| (per_row, v))
    }

    fn as_param(p: &(bool, Vec<f64>)) -> Param<'_> {
        if p.0 {
            Param::PerRow(&p.1)
        } else {
            Param::Uniform(p.1[0])
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn every_isa_is_bit_identical_and_matches_the_detector(
            ((values, nulls), mean, std, threshold) in column(10_000).prop_flat_map(|(v, n)| {
                let len = v.len();
                (Just((v, n)), any::<bool>().prop_flat_map(move |p| param(p, len)),
                 any::<bool>().prop_flat_map(move |p| param(p, len)), prop_oneof![0.5..5.0f64, Just(f64::INFINITY)])
            }),
        ) {
            let n = values.len();
            let validity = nulls.as_ref().map(Validity::from);
            let (m, s) = (as_param(&mean), as_param(&std));
            let mut want = vec![0.0; n];
            let want_mask = zscore_mask(Exec::new().with_isa(Isa::scalar()).serial(), &values, validity, m, s, threshold, Some(&mut want)).unwrap();
            for isa in Isa::available() {
                for exec in [Exec::new().with_isa(isa).serial(), Exec::new().with_isa(isa)] {
                    let mut got = vec![1.0; n];
                    zscore(exec, &values, m, s, &mut got).unwrap();
                    let mut got2 = vec![1.0; n];
                    let mask = zscore_mask(exec, &values, validity, m, s, threshold, Some(&mut got2)).unwrap();
                    prop_assert_eq!(&mask, &want_mask, "{}", isa.name());
                    for i in 0..n {
                        prop_assert!(same(got[i], want[i]) && same(got2[i], want[i]), "{} row {i}", isa.name());
                    }
                    let alone = zscore_mask(exec, &values, validity, m, s, threshold, None).unwrap();
                    prop_assert_eq!(&alone, &want_mask);
                }
            }
            // Oracle: the detector's formula, row by row.
            for i in 0..n {
                let mi = if mean.0 { mean.1[i] } else { mean.1[0] };
                let si = if std.0 { std.1[i] } else { std.1[0] };
                let d = (values[i] - mi).abs();
                let z = if si > 0.0 { d / si } else if d == 0.0 { 0.0 } else { f64::INFINITY };
                prop_assert!(same(want[i], z), "row {i}: {} vs {z}", want[i]);
                let valid = !nulls.as_ref().is_some_and(|b| b.is_null(i));
                prop_assert_eq!(want_mask.value(i), valid && z >= threshold, "row {}", i);
            }
        }
    }

    #[test]
    fn large_inputs_split_across_threads_identically() {
        let n = PAR_MIN_ROWS * 3 + 77;
        let values: Vec<f64> = (0..n).map(|i| ((i * 7919) % 1000) as f64).collect();
        let std: Vec<f64> = (0..n).map(|i| (i % 50) as f64).collect();
        let run = |exec: Exec| {
            let mut out = vec![0.0; n];
            let mask = zscore_mask(
                exec,
                &values,
                None,
                Param::Uniform(500.0),
                Param::PerRow(&std),
                3.0,
                Some(&mut out),
            )
            .unwrap();
            (out, mask)
        };
        let reference = run(Exec::new().with_isa(Isa::scalar()).serial());
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        for isa in Isa::available() {
            let got = pool.install(|| run(Exec::new().with_isa(isa)));
            assert_eq!(got.1, reference.1);
            assert!(got.0.iter().zip(&reference.0).all(|(a, b)| same(*a, *b)));
        }
    }

    #[test]
    fn rejects_mismatched_lengths() {
        let e = Exec::new();
        let mut out = [0.0; 2];
        assert!(
            zscore(
                e,
                &[1.0, 2.0],
                Param::PerRow(&[1.0]),
                Param::Uniform(1.0),
                &mut out
            )
            .is_err()
        );
        assert!(
            zscore(
                e,
                &[1.0, 2.0],
                Param::Uniform(1.0),
                Param::PerRow(&[1.0]),
                &mut out
            )
            .is_err()
        );
        assert!(
            zscore(
                e,
                &[1.0],
                Param::Uniform(1.0),
                Param::Uniform(1.0),
                &mut out
            )
            .is_err()
        );
        assert!(
            zscore_mask(
                e,
                &[1.0],
                None,
                Param::Uniform(1.0),
                Param::Uniform(1.0),
                1.0,
                Some(&mut out)
            )
            .is_err()
        );
        let m = zscore_mask(
            e,
            &[],
            None,
            Param::Uniform(0.0),
            Param::Uniform(1.0),
            1.0,
            None,
        )
        .unwrap();
        assert_eq!(m.len(), 0);
    }
}
