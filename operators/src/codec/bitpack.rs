//! Frame-of-reference bit packing in miniblocks of 128 values: each miniblock stores its
//! minimum (zigzag varint), a bit width (one byte, 0..=64) and `value - min` in that many bits,
//! least significant bit first. A miniblock of equal values costs two bytes.

use super::error::{CodecError, Result};
use super::wire::{Reader, put_varint_i, varint_len, zigzag};

/// Values per miniblock.
pub(crate) const MINIBLOCK: usize = 128;

/// Bits needed to store `span` (0 for 0).
#[inline]
fn width(span: u64) -> u32 {
    64 - span.leading_zeros()
}

/// Bytes of one packed miniblock of `len` values with this minimum and maximum.
#[inline]
fn block_cost(min: i64, max: i64, len: usize) -> usize {
    let w = width(max.wrapping_sub(min) as u64) as usize;
    varint_len(zigzag(min)) + 1 + (len * w).div_ceil(8)
}

/// The size [`pack`] gives to `values`, computed without writing.
pub(crate) fn packed_size(values: &[i64]) -> usize {
    values
        .chunks(MINIBLOCK)
        .map(|chunk| {
            let (min, max) = min_max(chunk);
            block_cost(min, max, chunk.len())
        })
        .sum()
}

/// The smallest and largest value of a non-empty chunk.
#[inline]
fn min_max(chunk: &[i64]) -> (i64, i64) {
    chunk
        .iter()
        .fold((i64::MAX, i64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}

/// Appends `values` bit-packed in miniblocks.
pub(crate) fn pack(values: &[i64], out: &mut Vec<u8>) {
    for chunk in values.chunks(MINIBLOCK) {
        let (min, max) = min_max(chunk);
        let w = width(max.wrapping_sub(min) as u64);
        put_varint_i(out, min);
        out.push(w as u8);
        if w == 0 {
            continue;
        }
        let mut acc: u128 = 0;
        let mut nbits: u32 = 0;
        for &v in chunk {
            acc |= u128::from(v.wrapping_sub(min) as u64) << nbits;
            nbits += w;
            if nbits >= 64 {
                out.extend_from_slice(&(acc as u64).to_le_bytes());
                acc >>= 64;
                nbits -= 64;
            }
        }
        let tail = nbits.div_ceil(8) as usize;
        out.extend_from_slice(&(acc as u64).to_le_bytes()[..tail]);
    }
}

/// Reads `n` values written by [`pack`] and appends them to `out`.
pub(crate) fn unpack(r: &mut Reader<'_>, n: usize, out: &mut Vec<i64>) -> Result<()> {
    out.reserve(n);
    let mut left = n;
    while left > 0 {
        let len = left.min(MINIBLOCK);
        left -= len;
        let min = r.varint_i()?;
        let w = u32::from(r.u8()?);
        if w > 64 {
            return Err(CodecError::corrupt(format!("bit width {w} > 64")));
        }
        if w == 0 {
            out.extend(std::iter::repeat_n(min, len));
            continue;
        }
        let bytes = r.bytes((len * w as usize).div_ceil(8))?;
        let mask: u64 = if w == 64 { u64::MAX } else { (1u64 << w) - 1 };
        let mut acc: u128 = 0;
        let mut nbits: u32 = 0;
        let mut pos = 0;
        for _ in 0..len {
            while nbits < w {
                if let Some(word) = bytes.get(pos..pos + 8) {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(word);
                    acc |= u128::from(u64::from_le_bytes(a)) << nbits;
                    nbits += 64;
                    pos += 8;
                } else {
                    // `bytes` holds exactly len * w bits, so this stays in bounds.
                    let b = bytes.get(pos).copied().unwrap_or(0);
                    acc |= u128::from(b) << nbits;
                    nbits += 8;
                    pos += 1;
                }
            }
            out.push(min.wrapping_add(((acc as u64) & mask) as i64));
            acc >>= w;
            nbits -= w;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_matches_its_size_estimate_and_round_trips() {
        let cases: Vec<Vec<i64>> = vec![
            vec![],
            vec![5],
            vec![7; 300],
            (0..1000).collect(),
            (0..1000)
                .map(|i| if i % 3 == 0 { i64::MIN } else { i64::MAX })
                .collect(),
            (0..257).map(|i| (i * 7919) % 1013 - 500).collect(),
        ];
        for values in cases {
            let mut out = Vec::new();
            pack(&values, &mut out);
            assert_eq!(packed_size(&values), out.len(), "{values:?}");
            let mut back = Vec::new();
            let mut r = Reader::new(&out);
            unpack(&mut r, values.len(), &mut back).unwrap();
            assert_eq!(back, values);
            assert_eq!(r.remaining(), 0);
            if !out.is_empty() {
                let mut r = Reader::new(&out[..out.len() - 1]);
                assert!(unpack(&mut r, values.len(), &mut Vec::new()).is_err());
            }
        }
    }
}
