//! Window statistics of an `f64` column: non-null count, sum, sum of squares, min and max.
//!
//! Semantics follow the window aggregator (`crate::window`): null rows are skipped; `sum` and
//! `sum_sq` include every non-null value, NaN included (a NaN makes them NaN); `min` and `max`
//! ignore NaN.
//!
//! # Evaluation order (what makes every instruction set agree bit for bit)
//!
//! The input is cut into chunks of [`CHUNK`] rows. In a chunk, row `i` goes to accumulator lane
//! `i % LANES` (8 lanes; a short last block is padded with null rows); each lane adds its rows
//! in order, starting from `+0.0`, and the lanes are then combined in a pairwise tree (lane `j`
//! with lane `j + 8`, then `j + 4`, `j + 2`, `j + 1`). Chunk results are combined left to right
//! with [`WindowStats::merge`]. `min`/`max` use `if x < m { x } else { m }` per lane and in the
//! tree, so NaN never enters and, between `-0.0` and `+0.0`, which one is kept is fixed by the
//! same order.

use arrow::array::{Array, Float64Array};
use rayon::prelude::*;

use super::bitmap::{Validity, low_bits};
use super::simd::{Kernel, Lanes};
use super::{Exec, mismatch};
use crate::error::Result;

/// Accumulator lanes of the statistics kernels (part of the evaluation order: changing it
/// changes the rounding of `sum` and `sum_sq`).
pub(crate) const LANES: usize = 8;

/// Rows per chunk: the unit of parallel work and of the fixed combine order.
pub const CHUNK: usize = 1 << 16;

/// Inputs at least this long are split across threads (when [`Exec`] allows it). Measured on
/// 2 cores: below ~256k rows the fork/join costs more than it saves.
pub const PAR_MIN_ROWS: usize = 1 << 18;

/// Statistics of the non-null values of a column (see the module docs for NaN and nulls).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowStats {
    /// Number of non-null values (NaN included).
    pub count: u64,
    /// Sum of the non-null values (`0.0` when there are none).
    pub sum: f64,
    /// Sum of the squares of (value - center) of the non-null values, `center` being `0.0`
    /// except for [`window_stats_centered`].
    pub sum_sq: f64,
    /// Smallest non-NaN value, `+inf` when there is none (see [`WindowStats::min_value`]).
    pub min: f64,
    /// Largest non-NaN value, `-inf` when there is none (see [`WindowStats::max_value`]).
    pub max: f64,
}

impl WindowStats {
    /// The statistics of no value.
    pub const EMPTY: WindowStats = WindowStats {
        count: 0,
        sum: 0.0,
        sum_sq: 0.0,
        min: f64::INFINITY,
        max: f64::NEG_INFINITY,
    };

    /// True when at least one value was neither null nor NaN (then `min <= max`).
    pub fn has_ordered(&self) -> bool {
        self.min <= self.max
    }

    /// The minimum, None when every value was null or NaN (the aggregator's null output).
    pub fn min_value(&self) -> Option<f64> {
        self.has_ordered().then_some(self.min)
    }

    /// The maximum, None when every value was null or NaN.
    pub fn max_value(&self) -> Option<f64> {
        self.has_ordered().then_some(self.max)
    }

    /// The mean, None without values.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }

    /// The sample variance (divisor n - 1) from `sum_sq` centered on `center` (the value given
    /// to [`window_stats_centered`]), None below 2 values. With `center` near the mean (a
    /// second pass) this is accurate; with `center = 0` it cancels badly when the mean is
    /// large against the spread.
    pub fn sample_variance(&self, center: f64) -> Option<f64> {
        (self.count >= 2).then(|| {
            let n = self.count as f64;
            let d = self.sum / n - center;
            ((self.sum_sq - n * d * d) / (n - 1.0)).abs()
        })
    }

    /// The statistics of `self`'s values followed by `other`'s, in that order: the combine
    /// step of chunks and of the grouped kernel (`self.sum + other.sum`, ...).
    #[inline(always)]
    pub fn merge(self, other: WindowStats) -> WindowStats {
        WindowStats {
            count: self.count + other.count,
            sum: self.sum + other.sum,
            sum_sq: self.sum_sq + other.sum_sq,
            min: if other.min < self.min {
                other.min
            } else {
                self.min
            },
            max: if other.max > self.max {
                other.max
            } else {
                self.max
            },
        }
    }
}

/// Statistics of `values` with optional validity (same length as `values`), centered at 0.
///
/// ```
/// # use edgeflow_operators::kernels::{Exec, window_stats};
/// let s = window_stats(Exec::new(), &[1.0, f64::NAN, 3.0], None).unwrap();
/// assert_eq!((s.count, s.min, s.max), (3, 1.0, 3.0));
/// assert!(s.sum.is_nan());
/// ```
pub fn window_stats(
    exec: Exec,
    values: &[f64],
    validity: Option<Validity<'_>>,
) -> Result<WindowStats> {
    window_stats_centered(exec, values, validity, 0.0)
}

/// Like [`window_stats`], with `sum_sq` = Σ (x - `center`)²: pass the mean from a first pass
/// for an accurate variance ([`WindowStats::sample_variance`]).
pub fn window_stats_centered(
    exec: Exec,
    values: &[f64],
    validity: Option<Validity<'_>>,
    center: f64,
) -> Result<WindowStats> {
    if let Some(v) = validity
        && v.len() != values.len()
    {
        return Err(mismatch("window_stats", "validity", values.len(), v.len()));
    }
    Ok(stats_of(exec, values, validity, center))
}

/// [`window_stats`] of an Arrow array, read in place (slicing offsets included).
pub fn window_stats_array(exec: Exec, array: &Float64Array) -> WindowStats {
    // An array's values and null buffer always have the same length.
    stats_of(exec, array.values(), array.nulls().map(Validity::from), 0.0)
}

/// The kernel proper (lengths already checked).
pub(crate) fn stats_of(
    exec: Exec,
    values: &[f64],
    validity: Option<Validity<'_>>,
    center: f64,
) -> WindowStats {
    if exec.split(values.len(), PAR_MIN_ROWS) {
        let parts: Vec<WindowStats> = values
            .par_chunks(CHUNK)
            .enumerate()
            .map(|(i, chunk)| {
                let validity = validity.map(|v| v.slice(i * CHUNK, chunk.len()));
                exec.isa.kernel(ChunkOp {
                    values: chunk,
                    validity,
                    center,
                })
            })
            .collect();
        let mut parts = parts.into_iter();
        let first = parts.next().unwrap_or(WindowStats::EMPTY);
        parts.fold(first, WindowStats::merge)
    } else {
        exec.isa.kernel(SerialOp {
            values,
            validity,
            center,
        })
    }
}

/// Every chunk in order, on one thread, inside one dispatch.
struct SerialOp<'a> {
    values: &'a [f64],
    validity: Option<Validity<'a>>,
    center: f64,
}

impl Kernel for SerialOp<'_> {
    type Output = WindowStats;

    #[inline(always)]
    fn run<O: Lanes>(self, o: O) -> WindowStats {
        let mut chunks = self.values.chunks(CHUNK).enumerate().map(|(i, chunk)| {
            let validity = self.validity.map(|v| v.slice(i * CHUNK, chunk.len()));
            chunk_stats(o, chunk, validity, self.center)
        });
        let first = chunks.next().unwrap_or(WindowStats::EMPTY);
        chunks.fold(first, WindowStats::merge)
    }
}

/// One chunk.
struct ChunkOp<'a> {
    values: &'a [f64],
    validity: Option<Validity<'a>>,
    center: f64,
}

impl Kernel for ChunkOp<'_> {
    type Output = WindowStats;

    #[inline(always)]
    fn run<O: Lanes>(self, o: O) -> WindowStats {
        chunk_stats(o, self.values, self.validity, self.center)
    }
}

/// Lane accumulators.
struct Acc<O: Lanes> {
    sum: O::V,
    sq: O::V,
    min: O::V,
    max: O::V,
}

impl<O: Lanes> Acc<O> {
    #[inline(always)]
    fn new(o: O) -> Self {
        Acc {
            sum: o.splat(0.0),
            sq: o.splat(0.0),
            min: o.splat(f64::INFINITY),
            max: o.splat(f64::NEG_INFINITY),
        }
    }

    /// Adds one block; lane `i` takes `x[i]` when bit `i` of `bits` is set (or always when
    /// `!NULLS`, which gives the same result as all bits set).
    #[inline(always)]
    fn block<const NULLS: bool>(&mut self, o: O, x: &[f64; LANES], bits: u8, center: O::V) {
        let x = o.load(x);
        let d = o.sub(x, center);
        // Null lanes add 0 and compare as +inf / -inf, which leaves min / max unchanged
        // (`min(a, b)` is `if a < b { a } else { b }`, so NaN is skipped too).
        let (s, d, lo, hi) = if NULLS {
            let m = o.mask(bits);
            let zero = o.splat(0.0);
            (
                o.select(m, x, zero),
                o.select(m, d, zero),
                o.select(m, x, o.splat(f64::INFINITY)),
                o.select(m, x, o.splat(f64::NEG_INFINITY)),
            )
        } else {
            (x, d, x, x)
        };
        self.sum = o.add(self.sum, s);
        self.sq = o.add(self.sq, o.mul(d, d));
        self.min = o.min(lo, self.min);
        self.max = o.max(hi, self.max);
    }

    /// The pairwise tree over the lanes: lane `j` with lane `j + LANES / 2`, and so on.
    #[inline(always)]
    fn finish(self, o: O, count: u64) -> WindowStats {
        let (mut sum, mut sq) = (o.store(self.sum), o.store(self.sq));
        let (mut min, mut max) = (o.store(self.min), o.store(self.max));
        let mut w = LANES / 2;
        while w > 0 {
            for i in 0..w {
                sum[i] += sum[i + w];
                sq[i] += sq[i + w];
                let (m, other) = (min[i], min[i + w]);
                min[i] = if other < m { other } else { m };
                let (m, other) = (max[i], max[i + w]);
                max[i] = if other > m { other } else { m };
            }
            w /= 2;
        }
        WindowStats {
            count,
            sum: sum[0],
            sum_sq: sq[0],
            min: min[0],
            max: max[0],
        }
    }
}

/// The statistics of one chunk (any length works; the order is defined per chunk).
#[inline(always)]
pub(crate) fn chunk_stats<O: Lanes>(
    o: O,
    values: &[f64],
    validity: Option<Validity<'_>>,
    center: f64,
) -> WindowStats {
    let c = o.splat(center);
    let mut acc = Acc::new(o);
    let mut count = 0u64;
    let (blocks, tail) = values.as_chunks::<LANES>();
    match validity {
        None => {
            for x in blocks {
                acc.block::<false>(o, x, !0, c);
            }
            count = (blocks.len() * LANES) as u64;
        }
        Some(v) => {
            // One validity word per 64 rows.
            for (w, group) in blocks.chunks(64 / LANES).enumerate() {
                let word = v.bits64(w * 64) & low_bits(group.len() * LANES);
                count += u64::from(word.count_ones());
                for (j, x) in group.iter().enumerate() {
                    acc.block::<true>(o, x, (word >> (j * LANES)) as u8, c);
                }
            }
        }
    }
    if !tail.is_empty() {
        let mut x = [0.0; LANES];
        x[..tail.len()].copy_from_slice(tail);
        let all = validity.map_or(!0, |v| v.bits(blocks.len() * LANES));
        let bits = all & low_bits(tail.len());
        count += u64::from(bits.count_ones());
        acc.block::<true>(o, &x, bits as u8, c);
    }
    acc.finish(o, count)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::Isa;
    use super::*;
    use arrow::buffer::{BooleanBuffer, NullBuffer};
    use proptest::prelude::*;

    /// Equal bits, or both NaN (payloads are unspecified).
    pub(crate) fn same(a: f64, b: f64) -> bool {
        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
    }

    pub(crate) fn same_stats(a: &WindowStats, b: &WindowStats) -> bool {
        a.count == b.count
            && same(a.sum, b.sum)
            && same(a.sum_sq, b.sum_sq)
            && same(a.min, b.min)
            && same(a.max, b.max)
    }

    /// One value, often special.
    pub(crate) fn value() -> impl Strategy<Value = f64> {
        prop_oneof![
            6 => -1e3..1e3f64,
            1 => Just(f64::NAN),
            1 => Just(f64::INFINITY),
            1 => Just(f64::NEG_INFINITY),
            1 => Just(-0.0),
            1 => Just(0.0),
            1 => prop_oneof![Just(f64::MAX), Just(-f64::MAX), Just(f64::MIN_POSITIVE),
                             Just(5e-324), Just(-1e300), Just(1e-300)],
            1 => any::<f64>(),
        ]
    }

    /// A column: values, an optional validity with an offset (as a sliced array has).
    pub(crate) fn column(max_len: usize) -> impl Strategy<Value = (Vec<f64>, Option<NullBuffer>)> {
        let len = prop_oneof![
            Just(0usize),
            Just(1),
            Just(7),
            Just(8),
            Just(9),
            Just(15),
            Just(16),
            Just(17),
            Just(33),
            0..max_len,
        ];
        (len, 0usize..70, any::<bool>(), 0.0..1.0f64).prop_flat_map(
            move |(len, offset, nullable, null_rate)| {
                (
                    proptest::collection::vec(value(), len),
                    proptest::collection::vec(
                        proptest::bool::weighted(1.0 - null_rate),
                        len + offset,
                    ),
                )
                    .prop_map(move |(v, bits)| {
                        let nulls = nullable
                            .then(|| NullBuffer::new(BooleanBuffer::from(bits)).slice(offset, len));
                        (v, nulls)
                    })
            },
        )
    }

    /// Independent oracle: one sequential pass, the aggregator's way.
    fn naive(
        values: &[f64],
        nulls: Option<&NullBuffer>,
    ) -> (u64, f64, f64, Option<f64>, Option<f64>) {
        let (mut n, mut s, mut q) = (0u64, 0.0, 0.0);
        let (mut lo, mut hi): (Option<f64>, Option<f64>) = (None, None);
        for (i, &x) in values.iter().enumerate() {
            if nulls.is_some_and(|b| b.is_null(i)) {
                continue;
            }
            n += 1;
            s += x;
            q += x * x;
            if !x.is_nan() {
                lo = Some(lo.map_or(x, |m| m.min(x)));
                hi = Some(hi.map_or(x, |m| m.max(x)));
            }
        }
        (n, s, q, lo, hi)
    }

    fn close(got: f64, want: f64, scale: f64) -> bool {
        if want.is_nan() || got.is_nan() {
            // Overflow to ±inf in one order can meet the opposite infinity in another.
            return true;
        }
        if want.is_infinite() || got.is_infinite() || scale > 1e300 {
            return true;
        }
        (got - want).abs() <= 1e-9 * scale + 1e-300
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn every_isa_and_split_is_bit_identical((values, nulls) in column(10_000)) {
            let validity = nulls.as_ref().map(Validity::from);
            let reference = window_stats(Exec::new().with_isa(Isa::scalar()).serial(), &values, validity).unwrap();
            for isa in Isa::available() {
                for exec in [Exec::new().with_isa(isa).serial(), Exec::new().with_isa(isa)] {
                    let got = window_stats(exec, &values, validity).unwrap();
                    prop_assert!(same_stats(&got, &reference), "{}: {got:?} vs {reference:?}", isa.name());
                }
            }
            let arr = Float64Array::new(values.clone().into(), nulls.clone());
            prop_assert!(same_stats(&window_stats_array(Exec::new(), &arr), &reference));
        }

        #[test]
        fn matches_a_sequential_oracle((values, nulls) in column(10_000)) {
            let s = window_stats(Exec::new(), &values, nulls.as_ref().map(Validity::from)).unwrap();
            let (n, sum, sq, lo, hi) = naive(&values, nulls.as_ref());
            prop_assert_eq!(s.count, n);
            prop_assert_eq!(s.min_value(), lo);
            prop_assert_eq!(s.max_value(), hi);
            let abs: f64 = values.iter().map(|x| x.abs()).filter(|x| x.is_finite()).sum();
            let abs2: f64 = values.iter().map(|x| x * x).filter(|x| x.is_finite()).sum();
            prop_assert!(close(s.sum, sum, abs), "sum {} vs {}", s.sum, sum);
            prop_assert!(close(s.sum_sq, sq, abs2), "sum_sq {} vs {}", s.sum_sq, sq);
            let nan_in = values
                .iter()
                .enumerate()
                .any(|(i, x)| x.is_nan() && !nulls.as_ref().is_some_and(|b| b.is_null(i)));
            if nan_in {
                prop_assert!(s.sum.is_nan() && s.sum_sq.is_nan());
            }
        }
    }

    #[test]
    fn large_inputs_are_identical_serial_and_parallel() {
        // Longer than PAR_MIN_ROWS, with a ragged last chunk and an offset bitmap.
        let n = PAR_MIN_ROWS + 3 * CHUNK + 12_345;
        let values: Vec<f64> = (0..n)
            .map(|i| ((i * 7919) % 1000) as f64 * 0.37 - 100.0)
            .collect();
        let bits: Vec<bool> = (0..n + 5).map(|i| i % 11 != 3).collect();
        let nulls = NullBuffer::new(BooleanBuffer::from(bits)).slice(5, n);
        let v = Some(Validity::from(&nulls));
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let reference =
            window_stats(Exec::new().with_isa(Isa::scalar()).serial(), &values, v).unwrap();
        for isa in Isa::available() {
            let par = pool.install(|| window_stats(Exec::new().with_isa(isa), &values, v).unwrap());
            let ser = window_stats(Exec::new().with_isa(isa).serial(), &values, v).unwrap();
            assert!(same_stats(&par, &reference), "{} parallel", isa.name());
            assert!(same_stats(&ser, &reference), "{} serial", isa.name());
        }
        let (cnt, _, _, lo, hi) = naive(&values, Some(&nulls));
        assert_eq!(
            (
                reference.count,
                reference.min_value(),
                reference.max_value()
            ),
            (cnt, lo, hi)
        );
    }

    #[test]
    fn semantics_of_nan_null_and_empty() {
        let e = Exec::new();
        let s = window_stats(e, &[], None).unwrap();
        assert!(same_stats(&s, &WindowStats::EMPTY));
        assert_eq!((s.min_value(), s.mean()), (None, None));
        let s = window_stats(e, &[f64::NAN, f64::NAN], None).unwrap();
        assert_eq!((s.count, s.min_value(), s.max_value()), (2, None, None));
        assert!(s.sum.is_nan());
        let nulls = NullBuffer::from(vec![true, false, true]);
        let s = window_stats(e, &[2.0, f64::NAN, -1.0], Some(Validity::from(&nulls))).unwrap();
        assert_eq!(
            (s.count, s.sum, s.sum_sq, s.min, s.max),
            (2, 1.0, 5.0, -1.0, 2.0)
        );
        let s = window_stats(e, &[f64::INFINITY; 3], None).unwrap();
        assert_eq!(
            (s.min_value(), s.max_value()),
            (Some(f64::INFINITY), Some(f64::INFINITY))
        );
        assert!(window_stats(e, &[1.0], Some(Validity::from(&nulls))).is_err());
    }

    #[test]
    fn centered_sum_sq_gives_an_accurate_variance() {
        let values: Vec<f64> = (0..1000).map(|i| 1e9 + (i % 10) as f64).collect();
        let e = Exec::new();
        let first = window_stats(e, &values, None).unwrap();
        let mean = first.mean().unwrap();
        let second = window_stats_centered(e, &values, None, mean).unwrap();
        let want = values.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 999.0;
        let got = second.sample_variance(mean).unwrap();
        assert!((got - want).abs() < 1e-9 * want, "{got} vs {want}");
    }
}
