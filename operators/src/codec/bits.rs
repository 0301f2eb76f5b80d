//! Bitmap streams: validity bitmaps and boolean values.
//!
//! One tag byte, then:
//!
//! | tag | name      | body |
//! |-----|-----------|------|
//! | 0   | all true  | nothing |
//! | 1   | all false | nothing |
//! | 2   | raw       | `ceil(n / 8)` bytes, Arrow's LSB-first layout, unused bits zero |
//! | 3   | runs      | first bit (byte), varint run count, varint run lengths (each >= 1) |
//!
//! Runs are chosen when they are smaller than the raw bitmap (sparse nulls, rare flags).

use arrow::array::BooleanBufferBuilder;
use arrow::buffer::{BooleanBuffer, Buffer};

use super::error::{CodecError, Result};
use super::wire::{Reader, put_varint, varint_len};

const TAG_TRUE: u8 = 0;
const TAG_FALSE: u8 = 1;
const TAG_RAW: u8 = 2;
const TAG_RUNS: u8 = 3;

/// Appends `bits` as a bitmap stream and returns the encoding's name.
pub(crate) fn encode_bits(bits: &BooleanBuffer, out: &mut Vec<u8>) -> &'static str {
    let n = bits.len();
    let set = bits.count_set_bits();
    if set == n {
        out.push(TAG_TRUE);
        return "all-true";
    }
    if set == 0 {
        out.push(TAG_FALSE);
        return "all-false";
    }
    // Runs alternate between unset and set slices; each costs at least one byte, so stop
    // counting once they cannot beat the raw bitmap.
    let raw_len = n.div_ceil(8);
    let mut runs: Vec<u64> = Vec::new();
    let mut pos = 0usize;
    let mut too_many = false;
    for (start, end) in bits.set_slices() {
        if start > pos {
            runs.push((start - pos) as u64);
        }
        runs.push((end - start) as u64);
        pos = end;
        if runs.len() >= raw_len {
            too_many = true;
            break;
        }
    }
    if !too_many {
        if pos < n {
            runs.push((n - pos) as u64);
        }
        let size =
            1 + varint_len(runs.len() as u64) + runs.iter().map(|&r| varint_len(r)).sum::<usize>();
        if size < raw_len {
            out.push(TAG_RUNS);
            out.push(u8::from(bits.value(0)));
            put_varint(out, runs.len() as u64);
            for r in runs {
                put_varint(out, r);
            }
            return "runs";
        }
    }
    out.push(TAG_RAW);
    let start = out.len();
    if bits.offset().is_multiple_of(8) {
        let from = bits.offset() / 8;
        out.extend_from_slice(&bits.inner().as_slice()[from..from + raw_len]);
    } else {
        out.extend_from_slice(&bits.sliced().as_slice()[..raw_len]);
    }
    if !n.is_multiple_of(8) {
        // Zero the bits past the end so equal bitmaps give equal frames.
        out[start + raw_len - 1] &= (1u8 << (n % 8)) - 1;
    }
    "raw"
}

/// Reads a bitmap stream of `n` bits.
pub(crate) fn decode_bits(r: &mut Reader<'_>, n: usize) -> Result<BooleanBuffer> {
    match r.u8()? {
        TAG_TRUE => Ok(BooleanBuffer::new_set(n)),
        TAG_FALSE => Ok(BooleanBuffer::new_unset(n)),
        TAG_RAW => {
            let bytes = r.bytes(n.div_ceil(8))?;
            Ok(BooleanBuffer::new(Buffer::from(bytes), 0, n))
        }
        TAG_RUNS => {
            let mut bit = match r.u8()? {
                0 => false,
                1 => true,
                b => return Err(CodecError::corrupt(format!("bad first bit {b}"))),
            };
            let runs = r.count(n, "bitmap run count")?;
            let mut b = BooleanBufferBuilder::new(n);
            for _ in 0..runs {
                let len = r.count(n - b.len(), "bitmap run length")?;
                if len == 0 {
                    return Err(CodecError::corrupt("empty bitmap run"));
                }
                b.append_n(len, bit);
                bit = !bit;
            }
            if b.len() != n {
                return Err(CodecError::corrupt(format!(
                    "bitmap runs cover {} bits, expected {n}",
                    b.len()
                )));
            }
            Ok(b.finish())
        }
        t => Err(CodecError::corrupt(format!("unknown bitmap encoding {t}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(bits: &[bool]) -> &'static str {
        let buf = BooleanBuffer::from_iter(bits.iter().copied());
        // Also through an unaligned slice.
        let mut padded = vec![true, false, true];
        padded.extend_from_slice(bits);
        let sliced = BooleanBuffer::from_iter(padded).slice(3, bits.len());
        let mut out = Vec::new();
        let name = encode_bits(&buf, &mut out);
        let mut out2 = Vec::new();
        encode_bits(&sliced, &mut out2);
        assert_eq!(out, out2);
        let back = decode_bits(&mut Reader::new(&out), bits.len()).unwrap();
        assert_eq!(back.iter().collect::<Vec<_>>(), bits);
        name
    }

    #[test]
    fn bitmaps_pick_runs_or_raw() {
        assert_eq!(round_trip(&[]), "all-true");
        assert_eq!(round_trip(&[true; 10]), "all-true");
        assert_eq!(round_trip(&[false; 10]), "all-false");
        let sparse: Vec<bool> = (0..1000).map(|i| i % 300 != 7).collect();
        assert_eq!(round_trip(&sparse), "runs");
        let dense: Vec<bool> = (0..1000).map(|i| (i * 7919) % 3 == 0).collect();
        assert_eq!(round_trip(&dense), "raw");
        assert_eq!(round_trip(&[true, false, true]), "raw");
    }

    #[test]
    fn hostile_runs_are_errors() {
        assert!(decode_bits(&mut Reader::new(&[TAG_RUNS, 0, 2, 3, 3]), 5).is_err());
        assert!(decode_bits(&mut Reader::new(&[TAG_RUNS, 0, 2, 0, 5]), 5).is_err());
        assert!(decode_bits(&mut Reader::new(&[TAG_RUNS, 2, 1, 5]), 5).is_err());
        assert!(decode_bits(&mut Reader::new(&[TAG_RAW, 1]), 9).is_err());
    }
}
