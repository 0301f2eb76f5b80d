//! Integer streams: the cascade every integer-valued sequence goes through (timestamp and
//! integer columns, dictionary indices, string lengths, run lengths, quantized floats).
//!
//! A stream of `n` values (n known to the reader from context; nothing is written for
//! n = 0) starts with a tag byte:
//!
//! | tag | name  | body |
//! |-----|-------|------|
//! | 1   | const | zigzag varint value |
//! | 2   | for   | bit-packed values ([`bitpack`](super::bitpack)) |
//! | 3   | delta | zigzag varint first value, bit-packed `x[i] - x[i-1]` (n - 1 values) |
//! | 4   | dod   | first value, first delta (zigzag varints), bit-packed delta-of-deltas (n - 2) |
//! | 5   | rle   | varint run count r, int stream of r run values, int stream of r `length - 1` |
//! | 6   | pco   | varint length, a pco standalone file of n `i64` |
//!
//! All arithmetic wraps, so any `i64` (or `u64` bit pattern) sequence round-trips. The
//! cheap encodings' sizes are computed in one pass without writing; RLE is tried when runs
//! average 2+ values; pco is tried when the cheap encodings need more than 1 bit per value.

use pco::ChunkConfig;
use pco::standalone::{simple_compress, simple_decompress_into};

use super::bitpack::{pack, packed_size, unpack};
use super::error::{CodecError, Result};
use super::wire::{Reader, put_bytes, put_varint, put_varint_i, varint_len, zigzag};

const TAG_CONST: u8 = 1;
const TAG_FOR: u8 = 2;
const TAG_DELTA: u8 = 3;
const TAG_DOD: u8 = 4;
const TAG_RLE: u8 = 5;
const TAG_PCO: u8 = 6;

/// Deepest nesting of RLE streams the writer produces and the reader accepts.
const MAX_DEPTH: u8 = 2;

/// pco's compression level for integers (including decimal-scaled floats). Measured on the
/// bench data (window summaries, TMY3, water flow): level 6 is within 0-1.5% of the default
/// (8) in size at up to twice its speed; levels 2-3 are faster still but lose up to 20%.
pub(crate) const PCO_LEVEL: usize = 6;

/// pco's level for full-precision floats and for floats quantized to a bound (noise in the
/// low bits): there level 2 is within ~1-3% of level 8 in size at 3 to 10 times its speed.
pub(crate) const PCO_FLOAT_LEVEL: usize = 2;

/// Streams shorter than this never try pco (its header outweighs any gain).
pub(crate) const PCO_MIN_N: usize = 32;

/// Which encodings a stream may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IntPolicy {
    /// Const, FOR, delta, delta-of-delta, RLE: fast to write and read.
    Cheap,
    /// The cheap ones or pco, whichever is smaller before packing.
    Best,
    /// pco only (if the stream has at least one value), at this compression level.
    PcoOnly(usize),
}

/// Writes `values` as a pco stream (length-prefixed) compressed at `level`.
pub(crate) fn put_pco<T: pco::data_types::Number>(
    values: &[T],
    level: usize,
    out: &mut Vec<u8>,
) -> Result<()> {
    let config = ChunkConfig::default().with_compression_level(level);
    let bytes = simple_compress(values, &config).map_err(|e| CodecError::internal("pco", e))?;
    put_bytes(out, &bytes);
    Ok(())
}

/// Reads a pco stream of exactly `n` values.
pub(crate) fn read_pco<T: pco::data_types::Number + Default>(
    r: &mut Reader<'_>,
    n: usize,
) -> Result<Vec<T>> {
    let bytes = r.len_bytes(r.remaining(), "pco length")?;
    let mut out = vec![T::default(); n];
    let progress =
        simple_decompress_into(bytes, &mut out).map_err(|e| CodecError::CorruptStream {
            stream: "pco",
            source: e.into(),
        })?;
    if progress.n_processed != n || !progress.finished {
        return Err(CodecError::corrupt(format!(
            "pco stream holds {}{} values, expected {n}",
            progress.n_processed,
            if progress.finished { "" } else { "+" }
        )));
    }
    Ok(out)
}

/// The cheap encodings' inputs and sizes, computed once.
struct Analysis {
    deltas: Vec<i64>,
    dods: Vec<i64>,
    runs: usize,
    for_bytes: usize,
    delta_bytes: usize,
    dod_bytes: usize,
}

fn analyse(values: &[i64]) -> Analysis {
    let deltas: Vec<i64> = values.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
    let dods: Vec<i64> = deltas.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
    let runs = usize::from(!values.is_empty()) + deltas.iter().filter(|&&d| d != 0).count();
    let first = varint_len(zigzag(values.first().copied().unwrap_or(0)));
    let first_delta = varint_len(zigzag(deltas.first().copied().unwrap_or(0)));
    Analysis {
        runs,
        for_bytes: packed_size(values),
        delta_bytes: first + packed_size(&deltas),
        dod_bytes: if values.len() >= 2 {
            first + first_delta + packed_size(&dods)
        } else {
            usize::MAX
        },
        deltas,
        dods,
    }
}

/// Appends `values` as an int stream and returns a short description of the encoding
/// (e.g. `dod`, `rle(delta,const)`).
pub(crate) fn encode_ints(values: &[i64], policy: IntPolicy, out: &mut Vec<u8>) -> Result<String> {
    encode_at(values, policy, 0, out)
}

fn encode_at(values: &[i64], policy: IntPolicy, depth: u8, out: &mut Vec<u8>) -> Result<String> {
    let n = values.len();
    if n == 0 {
        return Ok("empty".into());
    }
    if let IntPolicy::PcoOnly(level) = policy {
        out.push(TAG_PCO);
        put_pco(values, level, out)?;
        return Ok("pco".into());
    }
    let a = analyse(values);
    if a.runs == 1 {
        out.push(TAG_CONST);
        put_varint_i(out, values[0]);
        return Ok("const".into());
    }
    let (mut best_tag, mut best_bytes) = (TAG_FOR, a.for_bytes);
    if a.delta_bytes < best_bytes {
        (best_tag, best_bytes) = (TAG_DELTA, a.delta_bytes);
    }
    if a.dod_bytes < best_bytes {
        (best_tag, best_bytes) = (TAG_DOD, a.dod_bytes);
    }
    let start = out.len();
    // RLE: worth a try when runs average at least 2 values.
    if depth < MAX_DEPTH && a.runs * 2 <= n {
        out.push(TAG_RLE);
        put_varint(out, a.runs as u64);
        let mut run_values = Vec::with_capacity(a.runs);
        let mut run_lengths = Vec::with_capacity(a.runs);
        let mut len = 1i64;
        for (i, &d) in a.deltas.iter().enumerate() {
            if d != 0 {
                run_values.push(values[i]);
                run_lengths.push(len - 1);
                len = 0;
            }
            len += 1;
        }
        run_values.push(values[n - 1]);
        run_lengths.push(len - 1);
        let child = if policy == IntPolicy::Best {
            IntPolicy::Best
        } else {
            IntPolicy::Cheap
        };
        let dv = encode_at(&run_values, child, depth + 1, out)?;
        let dl = encode_at(&run_lengths, child, depth + 1, out)?;
        if out.len() - start <= 1 + best_bytes {
            return Ok(format!("rle({dv},{dl})"));
        }
        out.truncate(start);
    }
    if policy == IntPolicy::Best && n >= PCO_MIN_N && best_bytes > n / 8 {
        out.push(TAG_PCO);
        put_pco(values, PCO_LEVEL, out)?;
        if out.len() - start <= 1 + best_bytes {
            return Ok("pco".into());
        }
        out.truncate(start);
    }
    out.push(best_tag);
    Ok(match best_tag {
        TAG_DELTA => {
            put_varint_i(out, values[0]);
            pack(&a.deltas, out);
            "delta"
        }
        TAG_DOD => {
            put_varint_i(out, values[0]);
            put_varint_i(out, a.deltas[0]);
            pack(&a.dods, out);
            "dod"
        }
        _ => {
            pack(values, out);
            "for"
        }
    }
    .into())
}

/// Reads an int stream of `n` values (written by [`encode_ints`]).
pub(crate) fn decode_ints(r: &mut Reader<'_>, n: usize) -> Result<Vec<i64>> {
    decode_at(r, n, 0)
}

fn decode_at(r: &mut Reader<'_>, n: usize, depth: u8) -> Result<Vec<i64>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let tag = r.u8()?;
    let mut out = Vec::new();
    match tag {
        TAG_CONST => {
            let v = r.varint_i()?;
            out.resize(n, v);
        }
        TAG_FOR => unpack(r, n, &mut out)?,
        TAG_DELTA => {
            let first = r.varint_i()?;
            out.reserve(n);
            out.push(first);
            unpack(r, n - 1, &mut out)?;
            let mut acc = first;
            for v in &mut out[1..] {
                acc = acc.wrapping_add(*v);
                *v = acc;
            }
        }
        TAG_DOD => {
            if n < 2 {
                return Err(CodecError::corrupt("dod stream of fewer than 2 values"));
            }
            let first = r.varint_i()?;
            let mut delta = r.varint_i()?;
            out.reserve(n);
            out.push(first);
            out.push(first.wrapping_add(delta));
            unpack(r, n - 2, &mut out)?;
            let mut acc = out[1];
            for v in &mut out[2..] {
                delta = delta.wrapping_add(*v);
                acc = acc.wrapping_add(delta);
                *v = acc;
            }
        }
        TAG_RLE => {
            if depth >= MAX_DEPTH {
                return Err(CodecError::corrupt("rle nested too deeply"));
            }
            let runs = r.count(n, "run count")?;
            let values = decode_at(r, runs, depth + 1)?;
            let lengths = decode_at(r, runs, depth + 1)?;
            out.reserve(n);
            for (&v, &l) in values.iter().zip(&lengths) {
                let len = usize::try_from(l)
                    .ok()
                    .and_then(|l| l.checked_add(1))
                    .filter(|&l| l <= n - out.len())
                    .ok_or_else(|| CodecError::corrupt("run lengths exceed the stream"))?;
                out.extend(std::iter::repeat_n(v, len));
            }
            if out.len() != n {
                return Err(CodecError::corrupt(format!(
                    "runs cover {} values, expected {n}",
                    out.len()
                )));
            }
        }
        TAG_PCO => out = read_pco::<i64>(r, n)?,
        t => return Err(CodecError::corrupt(format!("unknown int encoding {t}"))),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(values: &[i64], policy: IntPolicy) -> String {
        let mut out = Vec::new();
        let desc = encode_ints(values, policy, &mut out).unwrap();
        let mut r = Reader::new(&out);
        assert_eq!(decode_ints(&mut r, values.len()).unwrap(), values, "{desc}");
        assert_eq!(r.remaining(), 0);
        desc
    }

    #[test]
    fn each_shape_gets_its_encoding() {
        let ts: Vec<i64> = (0..8192).map(|i| 1_767_225_600_000 + i / 2).collect();
        assert_eq!(round_trip(&[42; 100], IntPolicy::Best), "const");
        assert_eq!(round_trip(&[3, 1, 2, 0, 3], IntPolicy::Best), "for");
        let steps: Vec<i64> = (0..1000).map(|i| 1_000_000 + 10 * i).collect();
        assert_eq!(round_trip(&steps, IntPolicy::Best), "delta");
        assert!(round_trip(&ts, IntPolicy::Cheap).starts_with("rle("));
        assert_eq!(round_trip(&ts, IntPolicy::PcoOnly(PCO_LEVEL)), "pco");
        let wild = [i64::MIN, i64::MAX, 0, -1, 1, i64::MIN + 1];
        round_trip(&wild, IntPolicy::Best);
        round_trip(&[i64::MIN, i64::MAX], IntPolicy::Cheap);
    }

    #[test]
    fn hostile_streams_are_errors() {
        // RLE claiming runs longer than the stream.
        let mut out = vec![TAG_RLE];
        put_varint(&mut out, 1);
        out.extend([TAG_CONST, 2, TAG_CONST, 200]);
        assert!(decode_ints(&mut Reader::new(&out), 10).is_err());
        // RLE nested beyond the limit.
        let deep = [TAG_RLE, 1, TAG_RLE, 1, TAG_RLE, 1, TAG_CONST, 0];
        assert!(decode_ints(&mut Reader::new(&deep), 1).is_err());
        assert!(decode_ints(&mut Reader::new(&[99]), 1).is_err());
        assert!(decode_ints(&mut Reader::new(&[TAG_PCO, 3, 1, 2, 3]), 4).is_err());
    }
}
