//! [`Validity`]: a borrowed Arrow validity bitmap (LSB-first bits at a bit offset), read in words.

use arrow::buffer::NullBuffer;

use super::mismatch;
use crate::error::Result;

/// Which rows are valid (non-null): bit `offset + i` of `bytes` (Arrow's LSB-first layout) is
/// set when row `i` is valid. Borrowed, so an Arrow array's bitmap is read in place, offset
/// (slicing) included.
#[derive(Debug, Clone, Copy)]
pub struct Validity<'a> {
    bytes: &'a [u8],
    offset: usize,
    len: usize,
}

impl<'a> Validity<'a> {
    /// A bitmap of `len` rows starting at bit `offset` of `bytes`; an error when `bytes` is too
    /// short.
    pub fn new(bytes: &'a [u8], offset: usize, len: usize) -> Result<Self> {
        let need = offset.saturating_add(len).div_ceil(8);
        if bytes.len() < need {
            return Err(mismatch("validity", "bitmap (bytes)", need, bytes.len()));
        }
        Ok(Validity { bytes, offset, len })
    }

    /// The number of rows it covers.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when it covers no row.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether row `i` is valid (false past the end).
    pub fn is_valid(&self, i: usize) -> bool {
        i < self.len && self.bits(i) & 1 == 1
    }

    /// Rows `start..start + len`; the caller keeps the range inside `0..self.len()`.
    #[inline(always)]
    pub(crate) fn slice(self, start: usize, len: usize) -> Self {
        debug_assert!(start + len <= self.len);
        Validity {
            bytes: self.bytes,
            offset: self.offset + start,
            len,
        }
    }

    /// The bits of rows `i, i + 1, ...` in the low bits of the result: at least 57 of them are
    /// meaningful (fewer near the end of `bytes`, where the missing ones read as 0). Bits of
    /// rows past `len()` are whatever the buffer holds: callers mask them.
    #[inline(always)]
    pub(crate) fn bits(&self, i: usize) -> u64 {
        let pos = self.offset + i;
        let (byte, shift) = (pos / 8, pos % 8);
        let word = match self.bytes.get(byte..).and_then(|b| b.first_chunk::<8>()) {
            Some(w) => u64::from_le_bytes(*w),
            None => {
                let mut w = [0u8; 8];
                let rest = self.bytes.get(byte..).unwrap_or_default();
                let n = rest.len().min(8);
                w[..n].copy_from_slice(&rest[..n]);
                u64::from_le_bytes(w)
            }
        };
        word >> shift
    }

    /// The bits of rows `i .. i + 64` (see [`Validity::bits`] for rows past the end).
    #[inline(always)]
    pub(crate) fn bits64(&self, i: usize) -> u64 {
        (self.bits(i) & 0xFFFF_FFFF) | (self.bits(i + 32) << 32)
    }
}

impl<'a> From<&'a NullBuffer> for Validity<'a> {
    fn from(nulls: &'a NullBuffer) -> Self {
        let inner = nulls.inner();
        Validity {
            bytes: inner.values(),
            offset: inner.offset(),
            len: inner.len(),
        }
    }
}

/// A mask of the low `n` bits (`n <= 64`).
#[inline(always)]
pub(crate) fn low_bits(n: usize) -> u64 {
    if n >= 64 { !0 } else { (1u64 << n) - 1 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::buffer::BooleanBuffer;

    #[test]
    fn reads_sliced_null_buffers_in_place() {
        let bools: Vec<bool> = (0..200).map(|i| i % 3 != 0 && i % 7 != 1).collect();
        let nulls = NullBuffer::new(BooleanBuffer::from(bools.clone()));
        for (start, len) in [(0, 200), (3, 100), (13, 187), (64, 1), (199, 1), (200, 0)] {
            let sliced = nulls.slice(start, len);
            let v = Validity::from(&sliced);
            assert_eq!(v.len(), len);
            for i in 0..len {
                assert_eq!(v.is_valid(i), bools[start + i], "start {start} row {i}");
            }
            assert!(!v.is_valid(len));
        }
    }

    #[test]
    fn rejects_a_short_bitmap() {
        assert!(Validity::new(&[0xff; 2], 3, 13).is_ok());
        assert!(Validity::new(&[0xff; 2], 3, 14).is_err());
        assert!(Validity::new(&[], usize::MAX, 2).is_err());
    }
}
