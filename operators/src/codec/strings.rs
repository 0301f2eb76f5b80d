//! Utf8 columns: a dictionary (in order of first appearance) with an int stream of indices
//! for low-cardinality text, plain lengths + bytes otherwise. Only non-null values are
//! written; the validity bitmap says where they go.
//!
//! | tag | name  | body |
//! |-----|-------|------|
//! | 1   | dict  | varint entry count d, int stream of d entry lengths, varint byte count + entry bytes, int stream of m indices |
//! | 2   | plain | int stream of m lengths, varint byte count + bytes |

use std::borrow::Cow;

use arrow::array::{Array, StringArray};
use arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};

use super::error::{CodecError, Result};
use super::ints::{IntPolicy, decode_ints, encode_ints};
use super::wire::{Reader, put_bytes, put_varint};

const TAG_DICT: u8 = 1;
const TAG_PLAIN: u8 = 2;

/// A dictionary is used while it has at most one entry per this many values.
const DICT_MAX_RATIO: usize = 2;

/// Two words that identify a string of at most 16 bytes exactly (overlapping loads of its
/// first and last bytes; with its length, they determine every byte) and summarize a longer one.
#[inline]
fn words(s: &[u8]) -> (u64, u64) {
    let n = s.len();
    let le8 = |b: &[u8]| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[..8]);
        u64::from_le_bytes(a)
    };
    let le4 = |b: &[u8]| {
        let mut a = [0u8; 4];
        a.copy_from_slice(&b[..4]);
        u64::from(u32::from_le_bytes(a))
    };
    if n >= 8 {
        (le8(s), le8(&s[n - 8..]))
    } else if n >= 4 {
        (le4(s), le4(&s[n - 4..]))
    } else if n > 0 {
        (
            u64::from(s[0]) | (u64::from(s[n / 2]) << 8) | (u64::from(s[n - 1]) << 16),
            0,
        )
    } else {
        (0, 0)
    }
}

/// A fast non-cryptographic hash of a value (a collision only costs time): wyhash-style
/// folded multiplies, so every input bit reaches every output bit.
#[inline]
fn hash(s: &[u8]) -> u64 {
    #[inline]
    fn fold(a: u64, b: u64) -> u64 {
        let m = u128::from(a) * u128::from(b);
        (m as u64) ^ ((m >> 64) as u64)
    }
    const K1: u64 = 0xa076_1d64_78bd_642f;
    const K2: u64 = 0xe703_7ed1_a0b4_28db;
    let (a, b) = words(s);
    let mut h = fold(a ^ K1, b ^ K2 ^ s.len() as u64);
    if s.len() > 16 {
        for c in s[8..s.len() - 8].chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            h = fold(h ^ K1, u64::from_le_bytes(w) ^ K2);
        }
    }
    fold(h, K1)
}

/// Byte equality, without a `memcmp` call for short values.
#[inline]
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && if a.len() <= 16 {
            words(a) == words(b)
        } else {
            a == b
        }
}

/// Open-addressing table from value to dictionary id (ids index `entries`).
struct Table {
    slots: Vec<u32>,
}

const EMPTY: u32 = u32::MAX;

impl Table {
    fn new() -> Self {
        Table {
            slots: vec![EMPTY; 64],
        }
    }

    /// The id of `v`, adding it to `entries` if it is new.
    #[inline]
    fn id<'a>(&mut self, v: &'a [u8], entries: &mut Vec<&'a [u8]>) -> u32 {
        let mask = self.slots.len() - 1;
        let mut i = hash(v) as usize & mask;
        loop {
            let id = self.slots[i];
            if id == EMPTY {
                let id = entries.len() as u32;
                self.slots[i] = id;
                entries.push(v);
                if entries.len() * 2 > self.slots.len() {
                    self.grow(entries);
                }
                return id;
            }
            if same(entries[id as usize], v) {
                return id;
            }
            i = (i + 1) & mask;
        }
    }

    fn grow(&mut self, entries: &[&[u8]]) {
        self.slots = vec![EMPTY; self.slots.len() * 2];
        let mask = self.slots.len() - 1;
        for (id, e) in entries.iter().enumerate() {
            let mut i = hash(e) as usize & mask;
            while self.slots[i] != EMPTY {
                i = (i + 1) & mask;
            }
            self.slots[i] = id as u32;
        }
    }
}

/// How a string column will be written, decided once and written once per candidate policy.
#[derive(Debug)]
pub(crate) enum StringPlan<'a> {
    /// Distinct values in order of first appearance, and each value's index.
    Dict {
        /// The distinct values.
        entries: Vec<&'a [u8]>,
        /// One index per non-null value.
        indices: Vec<i64>,
    },
    /// Every non-null value's length, and their bytes.
    Plain {
        /// One length per non-null value.
        lengths: Vec<i64>,
        /// The values' bytes, concatenated.
        bytes: Cow<'a, [u8]>,
    },
}

/// The non-null values of `array`, in order.
fn values<'a>(array: &'a StringArray) -> impl Iterator<Item = &'a [u8]> + 'a {
    let offsets = array.value_offsets();
    let data = array.value_data();
    let nulls = array.nulls().filter(|n| n.null_count() > 0);
    (0..array.len())
        .filter(move |&i| nulls.is_none_or(|n| n.is_valid(i)))
        // Offsets of a valid StringArray are in bounds and ascending.
        .map(move |i| &data[offsets[i] as usize..offsets[i + 1] as usize])
}

/// Decides between dictionary and plain for the non-null values of `array`.
pub(crate) fn plan(array: &StringArray) -> StringPlan<'_> {
    let m = array.len() - array.null_count();
    let max_entries = m / DICT_MAX_RATIO;
    if m >= 4 {
        let mut table = Table::new();
        let mut entries: Vec<&[u8]> = Vec::new();
        let mut indices = Vec::with_capacity(m);
        let mut last: (&[u8], i64) = (&[], -1);
        let mut fits = true;
        for v in values(array) {
            // Repeats of the previous value skip the hash table.
            if last.1 >= 0 && same(v, last.0) {
                indices.push(last.1);
                continue;
            }
            let id = table.id(v, &mut entries);
            if entries.len() > max_entries {
                fits = false;
                break;
            }
            last = (v, i64::from(id));
            indices.push(i64::from(id));
        }
        if fits {
            return StringPlan::Dict { entries, indices };
        }
    }
    let lengths: Vec<i64> = values(array).map(|v| v.len() as i64).collect();
    let bytes = if array.null_count() == 0 {
        let offsets = array.value_offsets();
        let (first, last) = (offsets[0] as usize, offsets[array.len()] as usize);
        Cow::Borrowed(&array.value_data()[first..last])
    } else {
        Cow::Owned(values(array).flatten().copied().collect())
    };
    StringPlan::Plain { lengths, bytes }
}

impl StringPlan<'_> {
    /// The int stream pco could replace (indices or lengths) and its length.
    pub(crate) fn main_stream_len(&self) -> usize {
        match self {
            StringPlan::Dict { indices, .. } => indices.len(),
            StringPlan::Plain { lengths, .. } => lengths.len(),
        }
    }

    /// Appends the column's payload, coding its main int stream with `policy`.
    pub(crate) fn write(&self, policy: IntPolicy, out: &mut Vec<u8>) -> Result<String> {
        match self {
            StringPlan::Dict { entries, indices } => {
                out.push(TAG_DICT);
                put_varint(out, entries.len() as u64);
                let lengths: Vec<i64> = entries.iter().map(|e| e.len() as i64).collect();
                encode_ints(&lengths, IntPolicy::Cheap, out)?;
                let total: usize = entries.iter().map(|e| e.len()).sum();
                put_varint(out, total as u64);
                for e in entries {
                    out.extend_from_slice(e);
                }
                let d = encode_ints(indices, policy, out)?;
                Ok(format!("dict[{}]({d})", entries.len()))
            }
            StringPlan::Plain { lengths, bytes } => {
                out.push(TAG_PLAIN);
                let d = encode_ints(lengths, policy, out)?;
                put_bytes(out, bytes);
                Ok(format!("plain({d})"))
            }
        }
    }
}

/// Checked lengths of an int stream: each in `0..=i32::MAX`, summing to at most `max_bytes`.
fn checked_lengths(lengths: &[i64], max_bytes: usize) -> Result<usize> {
    let mut total: usize = 0;
    for &l in lengths {
        let l = usize::try_from(l)
            .ok()
            .filter(|&l| l <= i32::MAX as usize)
            .ok_or_else(|| CodecError::corrupt(format!("string length {l}")))?;
        total = total
            .checked_add(l)
            .filter(|&t| t <= max_bytes)
            .ok_or_else(|| CodecError::LimitExceeded(format!("string bytes exceed {max_bytes}")))?;
    }
    Ok(total)
}

/// Reads a Utf8 payload of `m` non-null values and places them at the valid rows of an
/// array of `n` rows. String bytes may total at most `max_bytes` (and `i32::MAX`).
pub(crate) fn decode_strings(
    r: &mut Reader<'_>,
    n: usize,
    nulls: Option<NullBuffer>,
    max_bytes: usize,
) -> Result<StringArray> {
    let max_bytes = max_bytes.min(i32::MAX as usize);
    let m = n - nulls.as_ref().map_or(0, |b| b.null_count());
    // Offsets of the m values.
    let mut offsets: Vec<i32> = Vec::with_capacity(m + 1);
    offsets.push(0);
    let data: Vec<u8> = match r.u8()? {
        TAG_DICT => {
            let d = r.count(m, "dictionary size")?;
            let lengths = decode_ints(r, d)?;
            let dict_bytes = checked_lengths(&lengths, max_bytes)?;
            let total = r.count(r.remaining(), "dictionary bytes")?;
            if total != dict_bytes {
                return Err(CodecError::corrupt("dictionary bytes do not match lengths"));
            }
            let dict = r.bytes(total)?;
            let mut starts = Vec::with_capacity(d + 1);
            let mut acc = 0usize;
            starts.push(0);
            for &l in &lengths {
                acc += l as usize;
                starts.push(acc);
            }
            let indices = decode_ints(r, m)?;
            let mut size = 0usize;
            for &i in &indices {
                let i = usize::try_from(i)
                    .ok()
                    .filter(|&i| i < d)
                    .ok_or_else(|| CodecError::corrupt(format!("dictionary index {i}")))?;
                size = size.saturating_add(starts[i + 1] - starts[i]);
            }
            if size > max_bytes {
                return Err(CodecError::LimitExceeded(format!(
                    "string bytes exceed {max_bytes}"
                )));
            }
            let mut data = Vec::with_capacity(size);
            for &i in &indices {
                // Checked just above: 0 <= i < d.
                let i = i as usize;
                data.extend_from_slice(&dict[starts[i]..starts[i + 1]]);
                offsets.push(data.len() as i32);
            }
            data
        }
        TAG_PLAIN => {
            let lengths = decode_ints(r, m)?;
            let total = checked_lengths(&lengths, max_bytes)?;
            let bytes = r.len_bytes(r.remaining(), "string bytes")?;
            if bytes.len() != total {
                return Err(CodecError::corrupt("string bytes do not match lengths"));
            }
            let mut acc = 0i32;
            for &l in &lengths {
                // Each length and their sum are at most i32::MAX (checked_lengths).
                acc += l as i32;
                offsets.push(acc);
            }
            bytes.to_vec()
        }
        t => return Err(CodecError::corrupt(format!("unknown string encoding {t}"))),
    };
    let offsets = match &nulls {
        Some(valid) if m < n => {
            // Null rows repeat the previous offset.
            let mut full = Vec::with_capacity(n + 1);
            full.push(0);
            let mut k = 1;
            for row in 0..n {
                if valid.is_valid(row) {
                    full.push(offsets[k]);
                    k += 1;
                } else {
                    full.push(*full.last().unwrap_or(&0));
                }
            }
            full
        }
        _ => offsets,
    };
    // Offsets start at 0 and never decrease (built from non-negative lengths above).
    let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
    StringArray::try_new(offsets, Buffer::from_vec(data), nulls).map_err(|e| {
        CodecError::CorruptStream {
            stream: "utf8",
            source: e.into(),
        }
    })
}
