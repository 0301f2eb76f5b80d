//! Threshold masks: the valid rows whose value is NaN or outside `[min, max]`, the exceptions
//! of the threshold detector (`crate::detect`).
//!
//! Each row is decided on its own by two ordered comparisons (`x >= min`, `max >= x`, false for
//! NaN), so every instruction set gives the same mask, and it is exactly the detector's
//! row-by-row test `x.is_nan() || x < min || x > max`.

use arrow::buffer::{BooleanBuffer, Buffer};

use super::bitmap::{Validity, low_bits};
use super::simd::{Kernel, Lanes};
use super::{Exec, mismatch};
use crate::error::Result;

/// Rows per mask word.
const WORD: usize = 64;

/// The rows that are valid and NaN, below `min` or above `max` (a missing bound does not
/// bound), as a bitmap of `values.len()` bits. Runs on the calling thread: it is a single pass
/// at memory speed, for which forking does not pay at batch sizes.
///
/// ```
/// # use edgeflow_operators::kernels::{Exec, bounds_mask};
/// let m = bounds_mask(Exec::new(), &[-1.0, 0.5, f64::NAN, 2.0], None, Some(0.0), Some(1.0)).unwrap();
/// assert_eq!(m.iter().collect::<Vec<_>>(), [true, false, true, true]);
/// ```
pub fn bounds_mask(
    exec: Exec,
    values: &[f64],
    validity: Option<Validity<'_>>,
    min: Option<f64>,
    max: Option<f64>,
) -> Result<BooleanBuffer> {
    let n = values.len();
    if let Some(v) = validity
        && v.len() != n
    {
        return Err(mismatch("bounds_mask", "validity", n, v.len()));
    }
    let mut words = vec![0u64; n.div_ceil(WORD)];
    exec.isa.kernel(BoundsOp {
        values,
        validity,
        // `x >= -inf` and `+inf >= x` hold for every non-NaN x: no bound.
        min: min.unwrap_or(f64::NEG_INFINITY),
        max: max.unwrap_or(f64::INFINITY),
        words: &mut words,
    });
    Ok(BooleanBuffer::new(Buffer::from_vec(words), 0, n))
}

struct BoundsOp<'a, 'b> {
    values: &'a [f64],
    validity: Option<Validity<'a>>,
    min: f64,
    max: f64,
    words: &'b mut [u64],
}

impl Kernel for BoundsOp<'_, '_> {
    type Output = ();

    #[inline(always)]
    fn run<O: Lanes>(self, o: O) {
        let BoundsOp {
            values,
            validity,
            min,
            max,
            words,
        } = self;
        let (lo, hi) = (o.splat(min), o.splat(max));
        // The bits of 8 rows that are NaN or outside the bounds (padding lanes included).
        let outside = |x: &[f64; 8]| {
            let x = o.load(x);
            !(o.bits(o.ge(x, lo)) & o.bits(o.ge(hi, x)))
        };
        let n = values.len();
        for (w, (rows, word)) in values.chunks(WORD).zip(words.iter_mut()).enumerate() {
            let (full, rest) = rows.as_chunks::<8>();
            let mut bits = 0u64;
            for (b, x) in full.iter().enumerate() {
                bits |= u64::from(outside(x)) << (b * 8);
            }
            if !rest.is_empty() {
                let mut pad = [0.0; 8];
                pad[..rest.len()].copy_from_slice(rest);
                bits |= u64::from(outside(&pad)) << (full.len() * 8);
            }
            let base = w * WORD;
            let valid = validity.map_or(!0, |v| v.bits64(base));
            *word = bits & valid & low_bits(n - base);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Isa;
    use super::super::stats::tests::{column, value};
    use super::*;
    use proptest::prelude::*;

    fn bound() -> impl Strategy<Value = Option<f64>> {
        prop_oneof![
            Just(None),
            value()
                .prop_filter("a bound is not NaN", |b| !b.is_nan())
                .prop_map(Some)
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn every_isa_matches_the_row_by_row_test(
            (values, nulls) in column(3_000),
            min in bound(),
            max in bound(),
        ) {
            let validity = nulls.as_ref().map(Validity::from);
            let want: Vec<bool> = values
                .iter()
                .enumerate()
                .map(|(i, &x)| {
                    !nulls.as_ref().is_some_and(|b| b.is_null(i))
                        && (x.is_nan() || min.is_some_and(|lo| x < lo) || max.is_some_and(|hi| x > hi))
                })
                .collect();
            for isa in Isa::available() {
                let got = bounds_mask(Exec::new().with_isa(isa), &values, validity, min, max).unwrap();
                prop_assert_eq!(got.len(), values.len());
                prop_assert_eq!(got.iter().collect::<Vec<_>>(), want.clone(), "{}", isa.name());
            }
        }
    }

    #[test]
    fn empty_input_and_bad_validity() {
        let e = Exec::new();
        assert_eq!(bounds_mask(e, &[], None, Some(0.0), None).unwrap().len(), 0);
        let v = Validity::new(&[0xff], 0, 1).unwrap();
        assert!(bounds_mask(e, &[1.0, 2.0], Some(v), None, Some(1.0)).is_err());
    }
}
