//! Byte-level building blocks of a frame: varints, zigzag, a bounds-checked reader, the
//! frame checksum and the general-purpose compressors ("packers": zstd, lz4) wrapped around
//! column bodies.

use std::borrow::Cow;

use super::error::{CodecError, Result};

/// Maps a signed integer to an unsigned one with small magnitudes staying small.
#[inline]
pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Inverse of [`zigzag`].
#[inline]
pub(crate) fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Appends `v` as a LEB128 varint (1 to 10 bytes).
#[inline]
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends `v` zigzag-encoded as a varint.
#[inline]
pub(crate) fn put_varint_i(out: &mut Vec<u8>, v: i64) {
    put_varint(out, zigzag(v));
}

/// The number of bytes [`put_varint`] writes for `v`.
#[inline]
pub(crate) fn varint_len(v: u64) -> usize {
    // 1 byte per started group of 7 bits, at least 1.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Appends a length-prefixed byte string.
pub(crate) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A cursor over untrusted bytes: every read is bounds-checked and fails with
/// [`CodecError::Corrupt`], never panics.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Fails unless every byte was read.
    pub(crate) fn expect_end(&self, what: &str) -> Result<()> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(CodecError::corrupt(format!(
                "{} unexpected trailing bytes after {what}",
                self.remaining()
            )))
        }
    }

    /// One byte.
    #[inline]
    pub(crate) fn u8(&mut self) -> Result<u8> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or_else(|| CodecError::corrupt("truncated (reading a byte)"))?;
        self.pos += 1;
        Ok(b)
    }

    /// The next `n` bytes.
    #[inline]
    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                CodecError::corrupt(format!(
                    "truncated (need {n} bytes, {} left)",
                    self.remaining()
                ))
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// A little-endian u64.
    pub(crate) fn u64_le(&mut self) -> Result<u64> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// A LEB128 varint of at most 10 bytes that fits in 64 bits.
    #[inline]
    pub(crate) fn varint(&mut self) -> Result<u64> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.u8()?;
            let low = u64::from(b & 0x7f);
            if i == 9 && low > 1 {
                return Err(CodecError::corrupt("varint overflows 64 bits"));
            }
            v |= low << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CodecError::corrupt("varint longer than 10 bytes"))
    }

    /// A zigzag varint.
    #[inline]
    pub(crate) fn varint_i(&mut self) -> Result<i64> {
        Ok(unzigzag(self.varint()?))
    }

    /// A varint that must be at most `max`, as a usize; `what` names it in the error.
    pub(crate) fn count(&mut self, max: usize, what: &str) -> Result<usize> {
        let v = self.varint()?;
        usize::try_from(v)
            .ok()
            .filter(|&v| v <= max)
            .ok_or_else(|| CodecError::corrupt(format!("{what} {v} is larger than {max}")))
    }

    /// A length-prefixed byte string of at most `max` bytes.
    pub(crate) fn len_bytes(&mut self, max: usize, what: &str) -> Result<&'a [u8]> {
        let n = self.count(max, what)?;
        self.bytes(n)
    }
}

/// The frame checksum: a 64-bit multiply-rotate hash over 8-byte words, finalized with
/// splitmix64's mixer and truncated to 32 bits.
///
/// Each step is a bijection of the state for a fixed input word, so a frame that differs in
/// one word always reaches a different 64-bit state; two random frames collide with
/// probability ~2^-32. It runs at several GB/s, so it costs little next to the encoders.
pub(crate) fn checksum(bytes: &[u8]) -> u32 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h: u64 = 0x2545_F491_4F6C_DD1D ^ (bytes.len() as u64).wrapping_mul(K);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut a = [0u8; 8];
        a.copy_from_slice(c);
        h = (h ^ u64::from_le_bytes(a)).wrapping_mul(K).rotate_left(29);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut a = [0u8; 8];
        a[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(a)).wrapping_mul(K).rotate_left(29);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^= h >> 31;
    h as u32
}

/// The general-purpose compressor wrapped around a column body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Packer {
    /// Stored as is.
    None = 0,
    /// zstd ([`ZSTD_LEVEL`]).
    Zstd = 1,
    /// lz4 block format (lz4_flex).
    Lz4 = 2,
}

impl Packer {
    /// Name in encoding descriptions.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Packer::None => "",
            Packer::Zstd => "+zstd",
            Packer::Lz4 => "+lz4",
        }
    }
}

/// zstd level used in `Auto` mode.
pub(crate) const ZSTD_LEVEL: i32 = 3;

/// Bodies shorter than this are never worth a compressor's header and time.
const MIN_PACK_LEN: usize = 48;

/// Reusable compressor state of one encoder.
pub(crate) struct Packers {
    zstd: Option<zstd::bulk::Compressor<'static>>,
}

impl std::fmt::Debug for Packers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packers")
            .field("zstd", &self.zstd.is_some())
            .finish()
    }
}

impl Packers {
    /// No context yet: the zstd one is made on first use.
    pub(crate) fn new() -> Self {
        Packers { zstd: None }
    }

    /// Compresses `body` with `packer` and returns the packed bytes if they are smaller
    /// than the body by at least 1/32 (else storing it raw is as good and faster to read).
    pub(crate) fn try_pack(&mut self, packer: Packer, body: &[u8]) -> Result<Option<Vec<u8>>> {
        if body.len() < MIN_PACK_LEN {
            return Ok(None);
        }
        let packed = match packer {
            Packer::None => return Ok(None),
            Packer::Zstd => {
                let c = match &mut self.zstd {
                    Some(c) => c,
                    None => self.zstd.insert(
                        zstd::bulk::Compressor::new(ZSTD_LEVEL)
                            .map_err(|e| CodecError::internal("zstd context", e))?,
                    ),
                };
                c.compress(body)
                    .map_err(|e| CodecError::internal("zstd compression", e))?
            }
            Packer::Lz4 => lz4_flex::block::compress(body),
        };
        Ok((packed.len() + packed.len() / 32 < body.len()).then_some(packed))
    }
}

/// Writes a body as `[packer u8][stored length varint][raw length varint, if packed][bytes]`.
pub(crate) fn put_block(out: &mut Vec<u8>, packer: Packer, raw_len: usize, stored: &[u8]) {
    out.push(packer as u8);
    put_varint(out, stored.len() as u64);
    if packer != Packer::None {
        put_varint(out, raw_len as u64);
    }
    out.extend_from_slice(stored);
}

/// Reusable decompressor state of one decoder.
#[derive(Default)]
pub(crate) struct Unpackers {
    zstd: Option<zstd::bulk::Decompressor<'static>>,
}

impl std::fmt::Debug for Unpackers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unpackers")
            .field("zstd", &self.zstd.is_some())
            .finish()
    }
}

/// Reads a block written by [`put_block`], decompressing it; its raw length may be at most
/// `max_raw` bytes.
pub(crate) fn read_block<'a>(
    r: &mut Reader<'a>,
    max_raw: usize,
    unpackers: &mut Unpackers,
) -> Result<Cow<'a, [u8]>> {
    let packer = r.u8()?;
    let stored_len = r.count(r.remaining(), "block length")?;
    match packer {
        0 => Ok(Cow::Borrowed(r.bytes(stored_len)?)),
        1 | 2 => {
            let raw_len = r.varint()?;
            let raw_len = usize::try_from(raw_len)
                .ok()
                .filter(|&l| l <= max_raw)
                .ok_or_else(|| {
                    CodecError::LimitExceeded(format!(
                        "column body of {raw_len} bytes (limit {max_raw})"
                    ))
                })?;
            let stored = r.bytes(stored_len)?;
            let raw = if packer == 1 {
                let mut out = Vec::with_capacity(raw_len);
                let d = match &mut unpackers.zstd {
                    Some(d) => d,
                    None => unpackers.zstd.insert(
                        zstd::bulk::Decompressor::new()
                            .map_err(|e| CodecError::internal("zstd context", e))?,
                    ),
                };
                d.decompress_to_buffer(stored, &mut out).map_err(|e| {
                    CodecError::CorruptStream {
                        stream: "zstd",
                        source: e.into(),
                    }
                })?;
                out
            } else {
                let mut out = vec![0u8; raw_len];
                let n = lz4_flex::block::decompress_into(stored, &mut out).map_err(|e| {
                    CodecError::CorruptStream {
                        stream: "lz4",
                        source: e.into(),
                    }
                })?;
                out.truncate(n);
                out
            };
            if raw.len() != raw_len {
                return Err(CodecError::corrupt(format!(
                    "block decompressed to {} bytes, header says {raw_len}",
                    raw.len()
                )));
            }
            Ok(Cow::Owned(raw))
        }
        p => Err(CodecError::corrupt(format!("unknown packer {p}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_reject_overlong_input() {
        let values = [
            0u64,
            1,
            127,
            128,
            300,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ];
        let mut out = Vec::new();
        for &v in &values {
            let before = out.len();
            put_varint(&mut out, v);
            assert_eq!(out.len() - before, varint_len(v), "{v}");
        }
        let mut r = Reader::new(&out);
        for &v in &values {
            assert_eq!(r.varint().unwrap(), v);
        }
        assert!(r.varint().is_err());
        assert!(Reader::new(&[0xff; 11]).varint().is_err());
        assert!(
            Reader::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02])
                .varint()
                .is_err()
        );
        for v in [0i64, -1, 1, i64::MIN, i64::MAX] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
    }

    #[test]
    fn checksum_sees_every_single_byte_flip() {
        let data: Vec<u8> = (0..100u32).map(|i| (i * 7 + 3) as u8).collect();
        let c = checksum(&data);
        for i in 0..data.len() {
            for bit in 0..8 {
                let mut d = data.clone();
                d[i] ^= 1 << bit;
                assert_ne!(checksum(&d), c, "byte {i} bit {bit}");
            }
        }
        assert_ne!(checksum(&data[..99]), c);
    }
}
