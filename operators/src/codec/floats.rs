//! Float64 columns: pco, byte-stream-split, integer coding of the bit patterns, and the
//! optional lossy quantization to an absolute error bound. Only non-null values are written.
//!
//! | tag | name  | body |
//! |-----|-------|------|
//! | 1   | pco   | a pco stream of m `f64` (lossless, bit-exact) |
//! | 2   | bss   | 8 byte planes of m bytes each (byte k of every value, little-endian) |
//! | 3   | bits  | int stream of the m bit patterns as `i64` (for constant / run-heavy columns) |
//! | 4   | quant | bound e (f64 LE), exceptions, int stream of m grid indices q |
//! | 5   | dec   | decimal digits d (byte), exceptions, int stream of m scaled integers q |
//!
//! Exceptions: varint count k, int stream of k ascending positions, k raw f64 bit patterns;
//! they replace the decoded values at those positions, bit-exactly.
//!
//! `dec` (lossless) is for values that are decimals with at most [`MAX_DIGITS`] digits after
//! the point, as most real sensor data is (a value printed as `100.59` and parsed back):
//! value i decodes as `q[i] as f64 / 10^d`, which IEEE division makes bit-exact for every
//! value the encoder did not turn into an exception (it checks each one). The digits are
//! chosen on a sample of 64 values: the fewest that round-trip 90% of them.
//!
//! `quant` (lossy) decodes value i as `q[i] as f64 * step` with `step = 2e (1 - 2^-20)`: the
//! grid is a hair finer than `2e` so that values halfway between two grid points still land
//! within `e` despite f64 rounding. The encoder makes a value an exception when it is NaN or
//! infinite, when its grid index would exceed 2^53, or when the decoded value would miss the
//! bound in f64 arithmetic, so `|decoded - original| <= e` holds for every value, as
//! computed in f64.

use super::error::{CodecError, Result};
use super::ints::{IntPolicy, PCO_FLOAT_LEVEL, decode_ints, encode_ints, put_pco, read_pco};
use super::wire::{Reader, put_varint};

pub(crate) const TAG_PCO: u8 = 1;
pub(crate) const TAG_BSS: u8 = 2;
pub(crate) const TAG_BITS: u8 = 3;
pub(crate) const TAG_QUANT: u8 = 4;
pub(crate) const TAG_DEC: u8 = 5;

/// Most decimal digits `dec` looks for.
pub(crate) const MAX_DIGITS: usize = 12;

/// 10^d for d in 0..=MAX_DIGITS, all exact in f64.
const POW10: [f64; MAX_DIGITS + 1] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12,
];

/// The quantization step of a bound: a hair under `2e` (see the module docs).
fn step_of(e: f64) -> f64 {
    e * 2.0 * (1.0 - 1.0 / 1_048_576.0)
}
/// Largest grid index: beyond 2^53 an `i64 -> f64` conversion is no longer exact.
const MAX_Q: f64 = 9_007_199_254_740_992.0;

/// The number of runs of equal bit patterns.
pub(crate) fn runs(values: &[f64]) -> usize {
    usize::from(!values.is_empty())
        + values
            .windows(2)
            .filter(|w| w[0].to_bits() != w[1].to_bits())
            .count()
}

/// Appends a `pco` payload.
pub(crate) fn write_pco(values: &[f64], out: &mut Vec<u8>) -> Result<String> {
    out.push(TAG_PCO);
    put_pco(values, PCO_FLOAT_LEVEL, out)?;
    Ok("pco".into())
}

/// Appends a `bss` payload.
pub(crate) fn write_bss(values: &[f64], out: &mut Vec<u8>) -> Result<String> {
    out.push(TAG_BSS);
    let m = values.len();
    let start = out.len();
    out.resize(start + 8 * m, 0);
    let planes = &mut out[start..];
    for (i, v) in values.iter().enumerate() {
        for (k, b) in v.to_bits().to_le_bytes().into_iter().enumerate() {
            planes[k * m + i] = b;
        }
    }
    Ok("bss".into())
}

/// Appends a `bits` payload.
pub(crate) fn write_bits(values: &[f64], policy: IntPolicy, out: &mut Vec<u8>) -> Result<String> {
    out.push(TAG_BITS);
    let bits: Vec<i64> = values.iter().map(|v| v.to_bits() as i64).collect();
    Ok(format!("bits({})", encode_ints(&bits, policy, out)?))
}

/// A column as integers plus the values kept exactly: the output of [`quantize`] and
/// [`decimals`].
#[derive(Debug)]
pub(crate) struct Scaled {
    /// `quant`'s bound, or `dec`'s digits.
    kind: ScaledKind,
    q: Vec<i64>,
    exceptions: Vec<(usize, u64)>,
}

#[derive(Debug, Clone, Copy)]
enum ScaledKind {
    Quant(f64),
    Dec(u8),
}

/// Maps each value through `to_int` (None: keep it exactly), repeating the previous integer
/// at exceptions so deltas stay small.
fn scale(values: &[f64], kind: ScaledKind, to_int: impl Fn(f64) -> Option<i64>) -> Scaled {
    let mut q = Vec::with_capacity(values.len());
    let mut exceptions = Vec::new();
    let mut prev = 0i64;
    for (i, &x) in values.iter().enumerate() {
        match to_int(x) {
            Some(v) => {
                q.push(v);
                prev = v;
            }
            None => {
                exceptions.push((i, x.to_bits()));
                q.push(prev);
            }
        }
    }
    Scaled {
        kind,
        q,
        exceptions,
    }
}

/// Quantizes `values` to the bound `e` (finite and > 0, with `2e` finite; checked by the
/// options).
pub(crate) fn quantize(values: &[f64], e: f64) -> Scaled {
    let step = step_of(e);
    scale(values, ScaledKind::Quant(e), |x| {
        let g = (x / step).round();
        // NaN and infinities fail the first test; values off the grid the second.
        if g.abs() <= MAX_Q {
            let qi = g as i64;
            ((qi as f64 * step - x).abs() <= e).then_some(qi)
        } else {
            None
        }
    })
}

/// `x` as an integer number of `10^-d`, if that round-trips bit-exactly.
#[inline]
fn to_decimal(x: f64, p: f64) -> Option<i64> {
    let g = (x * p).round();
    if g.abs() <= MAX_Q {
        let qi = g as i64;
        ((qi as f64 / p).to_bits() == x.to_bits()).then_some(qi)
    } else {
        None
    }
}

/// The fewest decimal digits that represent 90% of a sample of `values` exactly, if any.
pub(crate) fn decimal_digits(values: &[f64]) -> Option<usize> {
    const SAMPLE: usize = 64;
    let stride = (values.len() / SAMPLE).max(1);
    let sample: Vec<f64> = values
        .iter()
        .step_by(stride)
        .take(SAMPLE)
        .copied()
        .collect();
    let need = (sample.len() * 9).div_ceil(10).max(1);
    let allowed_misses = sample.len().saturating_sub(need);
    (0..=MAX_DIGITS).find(|&d| {
        // Stop at the first miss too many: full-precision data fails fast at every d.
        let mut misses = 0;
        sample.iter().all(|&x| {
            misses += usize::from(to_decimal(x, POW10[d]).is_none());
            misses <= allowed_misses
        }) && !sample.is_empty()
    })
}

/// Whether the quantization grid of bound `e` is at least as fine as the decimal resolution
/// `10^-digits`, so quantizing would keep every distinct value apart.
pub(crate) fn grid_within(e: f64, digits: usize) -> bool {
    e * 2.0 <= 1.000_001 / POW10[digits.min(MAX_DIGITS)]
}

/// `values` as integer multiples of `10^-digits` (`digits <= MAX_DIGITS`).
pub(crate) fn decimals(values: &[f64], digits: usize) -> Scaled {
    let p = POW10[digits.min(MAX_DIGITS)];
    scale(values, ScaledKind::Dec(digits.min(MAX_DIGITS) as u8), |x| {
        to_decimal(x, p)
    })
}

impl Scaled {
    /// How many values are kept exactly.
    pub(crate) fn exceptions(&self) -> usize {
        self.exceptions.len()
    }

    /// Appends the payload, coding the integers with `policy`.
    pub(crate) fn write(&self, policy: IntPolicy, out: &mut Vec<u8>) -> Result<String> {
        let name = match self.kind {
            ScaledKind::Quant(e) => {
                out.push(TAG_QUANT);
                out.extend_from_slice(&e.to_bits().to_le_bytes());
                "quant".to_string()
            }
            ScaledKind::Dec(d) => {
                out.push(TAG_DEC);
                out.push(d);
                format!("dec{d}")
            }
        };
        put_varint(out, self.exceptions.len() as u64);
        let positions: Vec<i64> = self.exceptions.iter().map(|&(i, _)| i as i64).collect();
        encode_ints(&positions, IntPolicy::Cheap, out)?;
        for &(_, bits) in &self.exceptions {
            out.extend_from_slice(&bits.to_le_bytes());
        }
        let d = encode_ints(&self.q, policy, out)?;
        Ok(if self.exceptions.is_empty() {
            format!("{name}({d})")
        } else {
            format!("{name}({d};{} exact)", self.exceptions.len())
        })
    }
}

/// Reads exceptions: ascending positions below `m` and their values.
fn read_exceptions(r: &mut Reader<'_>, m: usize) -> Result<Vec<(usize, f64)>> {
    let k = r.count(m, "exception count")?;
    let positions = decode_ints(r, k)?;
    let mut exceptions = Vec::with_capacity(k);
    let mut next = 0usize;
    for &p in &positions {
        let p = usize::try_from(p)
            .ok()
            .filter(|&p| p >= next && p < m)
            .ok_or_else(|| CodecError::corrupt("exception positions out of order"))?;
        next = p + 1;
        exceptions.push((p, f64::from_bits(r.u64_le()?)));
    }
    Ok(exceptions)
}

/// Decodes the integers of a `quant` or `dec` payload with `f` and puts the exceptions back.
fn read_scaled(r: &mut Reader<'_>, m: usize, f: impl Fn(i64) -> f64) -> Result<Vec<f64>> {
    let exceptions = read_exceptions(r, m)?;
    let mut values: Vec<f64> = decode_ints(r, m)?.into_iter().map(f).collect();
    for (p, v) in exceptions {
        // p < m == values.len(), checked by read_exceptions.
        values[p] = v;
    }
    Ok(values)
}

/// Reads a Float64 payload of `m` values.
pub(crate) fn decode_floats(r: &mut Reader<'_>, m: usize) -> Result<Vec<f64>> {
    match r.u8()? {
        TAG_PCO => read_pco::<f64>(r, m),
        TAG_BSS => {
            let planes = r.bytes(
                m.checked_mul(8)
                    .ok_or_else(|| CodecError::corrupt("byte planes overflow"))?,
            )?;
            Ok((0..m)
                .map(|i| {
                    let mut b = [0u8; 8];
                    for (k, byte) in b.iter_mut().enumerate() {
                        *byte = planes[k * m + i];
                    }
                    f64::from_bits(u64::from_le_bytes(b))
                })
                .collect())
        }
        TAG_BITS => Ok(decode_ints(r, m)?
            .into_iter()
            .map(|b| f64::from_bits(b as u64))
            .collect()),
        TAG_QUANT => {
            let e = f64::from_bits(r.u64_le()?);
            if !(e.is_finite() && e > 0.0 && (e * 2.0).is_finite()) {
                return Err(CodecError::corrupt(format!("error bound {e}")));
            }
            let step = step_of(e);
            read_scaled(r, m, |q| q as f64 * step)
        }
        TAG_DEC => {
            let d = usize::from(r.u8()?);
            let p = *POW10
                .get(d)
                .ok_or_else(|| CodecError::corrupt(format!("{d} decimal digits")))?;
            read_scaled(r, m, |q| q as f64 / p)
        }
        t => Err(CodecError::corrupt(format!("unknown float encoding {t}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_found_and_round_trip_bit_exactly() {
        let values: Vec<f64> = ["100.59", "100.6", "-3.07", "0", "1e-2", "123456.78"]
            .iter()
            .map(|s| s.parse().unwrap())
            .chain([f64::NAN, -0.0, 0.1 + 0.2])
            .collect();
        assert_eq!(decimal_digits(&values[..6]), Some(2));
        assert_eq!(decimal_digits(&values[..2]), Some(2));
        assert_eq!(decimal_digits(&[1.0, 2.0, 5.0]), Some(0));
        let d = decimals(&values, 2);
        assert_eq!(d.exceptions(), 3);
        let mut out = Vec::new();
        d.write(IntPolicy::Cheap, &mut out).unwrap();
        let back = decode_floats(&mut Reader::new(&out), values.len()).unwrap();
        for (x, y) in values.iter().zip(&back) {
            assert_eq!(x.to_bits(), y.to_bits());
        }
        assert_eq!(
            decimal_digits(&[0.1 + 0.2, 1.0 / 3.0, std::f64::consts::PI]),
            None
        );
    }

    #[test]
    fn quantization_keeps_the_bound_and_special_values() {
        let values = [
            0.0,
            -0.0,
            1.234_567,
            -1e300,
            f64::MAX,
            f64::MIN_POSITIVE,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e17,
            0.3,
        ];
        for e in [1e-9, 0.001, 0.5, 1e20] {
            let q = quantize(&values, e);
            let mut out = Vec::new();
            q.write(IntPolicy::Best, &mut out).unwrap();
            let back = decode_floats(&mut Reader::new(&out), values.len()).unwrap();
            for (x, y) in values.iter().zip(&back) {
                if x.is_finite() {
                    assert!((x - y).abs() <= e, "{x} -> {y} with e = {e}");
                } else {
                    assert_eq!(x.to_bits(), y.to_bits());
                }
            }
        }
    }
}
