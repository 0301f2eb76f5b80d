//! The content-aware codec: one Arrow [`RecordBatch`] <-> one compact, self-describing frame.
//!
//! [`encode`] picks, per column and per batch, the encoding that fits the content (by
//! measuring or trying the candidates) and records the choice in the frame, so [`decode`]
//! needs no configuration. Decoding is lossless and bit-exact (floats by bit pattern, NaN
//! payloads and `-0.0` included) unless the options declare an error bound for a Float64
//! column; decoding never panics, whatever the bytes: a frame that is truncated, corrupted or
//! hostile gives a [`CodecError`].
//!
//! # Types
//!
//! `Timestamp(Millisecond, None)`, `Int64`, `UInt64`, `Float64`, `Utf8` and `Boolean`: every
//! type of the data model (`schema::FieldType` in edgeflow-operators) and so every type a window
//! summary has, plus `UInt64`. Any other type is refused with
//! [`CodecError::UnsupportedType`] naming the column: no generic fallback, so the decoder reads
//! nothing but this module's own formats (and pco, zstd and lz4 streams), and every decoded
//! batch has a schema the engine can carry. Field names, nullability and schema/field
//! metadata are kept.
//!
//! # Encodings
//!
//! Each column's encoding is chosen per batch from its content; [`EncodeStats`] names it.
//!
//! - Timestamps and integers: an int-stream cascade (`ints.rs`): const, frame-of-reference
//!   bit packing, delta or delta-of-delta + bit packing in miniblocks of 128 (their sizes are
//!   computed in one pass, without writing), run-length (whose run values and lengths go
//!   through the cascade again), and in `Auto` mode pco when the best of those, after zstd,
//!   needs more than 1 bit per value and pco comes out smaller.
//! - Float64, lossless: decimal scaling (`dec`: values that are decimals with few digits,
//!   found on a sample, become exact integers for the int cascade or pco; most real sensor
//!   data), else pco in `Auto` / byte-stream-split in `Fast` (full-precision noise), and
//!   integer coding of the bit patterns for constant or run-heavy columns (`floats.rs`).
//! - Float64 with an error bound: quantization to a grid (`quant`), integer-coded like the
//!   above; in `Auto` mode the lossless encoding is used instead when it is smaller.
//! - Utf8: dictionary in first-appearance order + int-stream indices for low-cardinality text
//!   (device, site, sensor names), plain lengths + bytes otherwise (`strings.rs`).
//! - Boolean and validity: constant, raw bitmap or runs (`bits.rs`).
//! - Each column body (validity + payload) then goes through zstd (level 3, `Auto`) or lz4
//!   (`Fast`) when that makes it smaller; pco bodies are not packed again.
//!
//! Nulls: only non-null values are encoded; the validity bitmap puts them back.
//!
//! # Frame layout (version 1)
//!
//! ```text
//! "EFC" | version u8 = 1 | flags u8 (bit 0: schema metadata, bit 1: written in Fast mode)
//! varint rows | varint columns | [schema metadata: varint count, (key, value) strings]
//! per column:  name (varint length + UTF-8) | type u8 | field flags u8 (bit 0: nullable,
//!              bit 1: metadata follows) | [field metadata]
//! per column:  packer u8 (0 none, 1 zstd, 2 lz4) | varint stored length |
//!              [varint raw length, if packed] | body = validity bitmap stream + payload
//! checksum:    u32 LE over every byte before it
//! ```
//!
//! Type tags: 1 `Timestamp(ms)`, 2 `Int64`, 3 `UInt64`, 4 `Float64`, 5 `Utf8`, 6 `Boolean`.
//! The payload formats are described in `ints.rs`, `floats.rs`, `strings.rs` and `bits.rs`.
//!
//! # Limits
//!
//! A frame holds at most [`DecodeLimits::default`]`.max_rows` rows (2^24, the generator's
//! largest batch); [`encode`] refuses larger batches, so every frame it writes decodes with
//! [`decode`]. Since a few hostile bytes can claim any size, [`Decoder::new`] takes the most
//! rows and decompressed bytes it may allocate for.

mod bitpack;
mod bits;
mod error;
mod floats;
mod ints;
mod strings;
mod wire;

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, ArrowPrimitiveType, AsArray, BooleanArray, BooleanBufferBuilder,
    PrimitiveArray, RecordBatch, RecordBatchOptions,
};
use arrow::buffer::{BooleanBuffer, NullBuffer, ScalarBuffer};
use arrow::datatypes::{
    DataType, Field, Float64Type, Int64Type, Schema, TimeUnit, TimestampMillisecondType, UInt64Type,
};

pub use error::{CodecError, Result};
use ints::{IntPolicy, PCO_FLOAT_LEVEL, PCO_LEVEL, PCO_MIN_N};
use wire::{Packer, Packers, Reader, Unpackers, put_block, put_bytes, put_varint};

/// The first bytes of every frame, so a reader can tell a codec frame from other payloads.
pub const MAGIC: &[u8; 3] = b"EFC";
/// The frame version this build writes and reads.
pub const VERSION: u8 = 1;

const FLAG_SCHEMA_METADATA: u8 = 1;
const FLAG_FAST: u8 = 2;
const FIELD_NULLABLE: u8 = 1;
const FIELD_METADATA: u8 = 2;

const TYPE_TIMESTAMP_MS: u8 = 1;
const TYPE_INT64: u8 = 2;
const TYPE_UINT64: u8 = 3;
const TYPE_FLOAT64: u8 = 4;
const TYPE_UTF8: u8 = 5;
const TYPE_BOOLEAN: u8 = 6;

/// What the encoder optimizes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CodecMode {
    /// The smallest frame: tries pco where it can win and packs column bodies with zstd.
    #[default]
    Auto,
    /// Lower latency: cheap transforms only (dictionary, delta, bit packing, byte-stream
    /// split) and lz4; no pco, no zstd.
    Fast,
}

/// How to encode.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CodecOptions {
    /// Smallest output or lowest latency.
    pub mode: CodecMode,
    /// Per Float64 column (by name), an absolute error bound `e > 0`: values are decoded
    /// within `e` of the original (NaN and infinities exactly). A bound is an allowance, not
    /// a requirement: a name with no Float64 column in the batch is ignored (lossless always
    /// satisfies it), so one option list can serve streams with different schemas.
    pub error_bounds: Vec<(String, f64)>,
}

impl CodecOptions {
    /// The default options in `Fast` mode.
    pub fn fast() -> Self {
        CodecOptions {
            mode: CodecMode::Fast,
            ..CodecOptions::default()
        }
    }

    /// Adds an error bound for the Float64 column `column`.
    pub fn with_error_bound(mut self, column: impl Into<String>, e: f64) -> Self {
        self.error_bounds.push((column.into(), e));
        self
    }

    fn validate(&self) -> Result<()> {
        for (i, (name, e)) in self.error_bounds.iter().enumerate() {
            if !(e.is_finite() && *e > 0.0 && (e * 2.0).is_finite()) {
                return Err(CodecError::InvalidOptions(format!(
                    "error bound of column \"{name}\" must be a positive finite number \
                     (at most f64::MAX / 2), got {e}"
                )));
            }
            if self.error_bounds[..i].iter().any(|(n, _)| n == name) {
                return Err(CodecError::InvalidOptions(format!(
                    "column \"{name}\" has more than one error bound"
                )));
            }
        }
        Ok(())
    }
}

/// How much a decoder may allocate for one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Most rows a frame may have (default 2^24).
    pub max_rows: usize,
    /// Most bytes one decompressed column body or one column's string data may take
    /// (default 1 GiB).
    pub max_bytes: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_rows: 1 << 24,
            max_bytes: 1 << 30,
        }
    }
}

/// What the encoder did with one column.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnStats {
    /// The column's name.
    pub name: String,
    /// The chosen encoding, e.g. `dict[100](rle(delta,const))+zstd`, `pco`, `quant(pco)`.
    pub encoding: String,
    /// Arrow buffer bytes of the column's rows (see [`EncodeStats::raw_bytes`]).
    pub raw_bytes: usize,
    /// Bytes of the column's body in the frame (without its schema entry).
    pub wire_bytes: usize,
    /// Whether the column was quantized to its error bound (false when a bounded column
    /// came out smaller lossless).
    pub lossy: bool,
}

/// What the encoder did with one batch: what the engine reports as raw vs wire bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodeStats {
    /// Rows in the batch.
    pub rows: usize,
    /// Arrow buffer bytes of the batch's rows: values, offsets, string data and validity
    /// bitmaps, counting only the sliced rows (not `get_array_memory_size`'s capacity).
    pub raw_bytes: usize,
    /// Bytes of the frame.
    pub wire_bytes: usize,
    /// Per column, in schema order.
    pub columns: Vec<ColumnStats>,
}

impl EncodeStats {
    /// `raw_bytes / wire_bytes`.
    pub fn ratio(&self) -> f64 {
        self.raw_bytes as f64 / self.wire_bytes.max(1) as f64
    }
}

/// Arrow buffer bytes of `array`'s rows (see [`EncodeStats::raw_bytes`]).
pub fn raw_bytes(array: &dyn Array) -> usize {
    let n = array.len();
    let validity = if array.nulls().is_some() {
        n.div_ceil(8)
    } else {
        0
    };
    let values = match array.data_type() {
        DataType::Boolean => n.div_ceil(8),
        DataType::Utf8 => {
            let a = array.as_string::<i32>();
            let o = a.value_offsets();
            4 * (n + 1) + (o[n] - o[0]) as usize
        }
        t => t.primitive_width().unwrap_or(0) * n,
    };
    validity + values
}

/// An encoded column body.
struct Body {
    packer: Packer,
    raw_len: usize,
    stored: Vec<u8>,
    encoding: String,
    lossy: bool,
}

/// Encodes batches into frames, keeping compressor state between calls.
#[derive(Debug)]
pub struct Encoder {
    opts: CodecOptions,
    packers: Packers,
}

impl Encoder {
    /// An encoder with these options (checked here).
    pub fn new(opts: CodecOptions) -> Result<Self> {
        opts.validate()?;
        Ok(Encoder {
            opts,
            packers: Packers::new(),
        })
    }

    /// Encodes one batch into a frame.
    pub fn encode(&mut self, batch: &RecordBatch) -> Result<Vec<u8>> {
        self.encode_with_stats(batch).map(|(frame, _)| frame)
    }

    /// Encodes one batch into a frame and says what it did.
    pub fn encode_with_stats(&mut self, batch: &RecordBatch) -> Result<(Vec<u8>, EncodeStats)> {
        let rows = batch.num_rows();
        let max_rows = DecodeLimits::default().max_rows;
        if rows > max_rows {
            return Err(CodecError::TooLarge(format!(
                "{rows} rows (a frame holds at most {max_rows})"
            )));
        }
        let schema = batch.schema();
        let mut out = Vec::with_capacity(1024);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        let mut flags = 0;
        if !schema.metadata().is_empty() {
            flags |= FLAG_SCHEMA_METADATA;
        }
        if self.opts.mode == CodecMode::Fast {
            flags |= FLAG_FAST;
        }
        out.push(flags);
        put_varint(&mut out, rows as u64);
        put_varint(&mut out, schema.fields().len() as u64);
        if !schema.metadata().is_empty() {
            put_metadata(&mut out, schema.metadata());
        }
        for field in schema.fields() {
            put_bytes(&mut out, field.name().as_bytes());
            out.push(type_tag(field)?);
            let mut f = 0;
            if field.is_nullable() {
                f |= FIELD_NULLABLE;
            }
            if !field.metadata().is_empty() {
                f |= FIELD_METADATA;
            }
            out.push(f);
            if !field.metadata().is_empty() {
                put_metadata(&mut out, field.metadata());
            }
        }
        let mut columns = Vec::with_capacity(batch.num_columns());
        for (field, array) in schema.fields().iter().zip(batch.columns()) {
            let bound = match field.data_type() {
                DataType::Float64 => self
                    .opts
                    .error_bounds
                    .iter()
                    .find(|(n, _)| n == field.name())
                    .map(|&(_, e)| e),
                _ => None,
            };
            let body = self.encode_column(array.as_ref(), bound)?;
            let before = out.len();
            put_block(&mut out, body.packer, body.raw_len, &body.stored);
            columns.push(ColumnStats {
                name: field.name().clone(),
                encoding: body.encoding,
                raw_bytes: raw_bytes(array.as_ref()),
                wire_bytes: out.len() - before,
                lossy: body.lossy,
            });
        }
        let sum = wire::checksum(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        let stats = EncodeStats {
            rows,
            raw_bytes: columns.iter().map(|c| c.raw_bytes).sum(),
            wire_bytes: out.len(),
            columns,
        };
        Ok((out, stats))
    }

    /// The packer of this mode.
    fn packer(&self) -> Packer {
        match self.opts.mode {
            CodecMode::Auto => Packer::Zstd,
            CodecMode::Fast => Packer::Lz4,
        }
    }

    /// Packs a candidate body if that helps.
    fn candidate(&mut self, raw: Vec<u8>, encoding: String, packable: bool) -> Result<Body> {
        let packer = if packable {
            self.packer()
        } else {
            Packer::None
        };
        Ok(match self.packers.try_pack(packer, &raw)? {
            Some(stored) => Body {
                packer,
                raw_len: raw.len(),
                stored,
                encoding: encoding + packer.name(),
                lossy: false,
            },
            None => Body {
                packer: Packer::None,
                raw_len: raw.len(),
                stored: raw,
                encoding,
                lossy: false,
            },
        })
    }

    /// The smaller of the best body so far and a pco-coded alternative, tried in `Auto` mode
    /// when there are enough values and the best body needs more than 1 bit per value.
    fn try_pco(
        &mut self,
        best: Body,
        prefix: &[u8],
        m: usize,
        write: impl FnOnce(&mut Vec<u8>) -> Result<String>,
    ) -> Result<Body> {
        if self.opts.mode != CodecMode::Auto
            || m < PCO_MIN_N
            || best.stored.len() <= prefix.len() + m / 8 + 16
        {
            return Ok(best);
        }
        let mut raw = prefix.to_vec();
        let encoding = write(&mut raw)?;
        let alt = self.candidate(raw, encoding, false)?;
        Ok(if alt.stored.len() < best.stored.len() {
            alt
        } else {
            best
        })
    }

    /// Encodes one column's body: validity, then the payload the content calls for.
    fn encode_column(&mut self, array: &dyn Array, bound: Option<f64>) -> Result<Body> {
        let n = array.len();
        let nulls = array.nulls().filter(|b| b.null_count() > 0);
        let mut prefix = Vec::new();
        let validity_name = match nulls {
            Some(b) => bits::encode_bits(b.inner(), &mut prefix),
            None => bits::encode_bits(&BooleanBuffer::new_set(n), &mut prefix),
        };
        let m = n - nulls.map_or(0, |b| b.null_count());
        let mut body = match array.data_type() {
            DataType::Timestamp(TimeUnit::Millisecond, None) => {
                let values = compact(array.as_primitive::<TimestampMillisecondType>(), nulls);
                self.encode_int_body(&values, &prefix)?
            }
            DataType::Int64 => {
                let values = compact(array.as_primitive::<Int64Type>(), nulls);
                self.encode_int_body(&values, &prefix)?
            }
            DataType::UInt64 => {
                let values: Vec<i64> = compact(array.as_primitive::<UInt64Type>(), nulls)
                    .iter()
                    .map(|&v| v as i64)
                    .collect();
                self.encode_int_body(&values, &prefix)?
            }
            DataType::Float64 => {
                let values = compact(array.as_primitive::<Float64Type>(), nulls);
                self.encode_float_body(&values, bound, &prefix)?
            }
            DataType::Utf8 => {
                let plan = strings::plan(array.as_string::<i32>());
                let mut raw = prefix.clone();
                let encoding = plan.write(IntPolicy::Cheap, &mut raw)?;
                let best = self.candidate(raw, encoding, true)?;
                self.try_pco(best, &prefix, plan.main_stream_len(), |out| {
                    plan.write(IntPolicy::PcoOnly(PCO_LEVEL), out)
                })?
            }
            DataType::Boolean => {
                let a = array.as_boolean();
                let values = match nulls {
                    None => a.values().clone(),
                    Some(v) => {
                        let mut b = BooleanBufferBuilder::new(m);
                        for i in v.valid_indices() {
                            b.append(a.values().value(i));
                        }
                        b.finish()
                    }
                };
                let mut raw = prefix.clone();
                let encoding = bits::encode_bits(&values, &mut raw).to_string();
                self.candidate(raw, encoding, true)?
            }
            t => {
                return Err(CodecError::Internal {
                    what: format!("type {t} passed the schema check"),
                    source: None,
                });
            }
        };
        if nulls.is_some() {
            body.encoding = format!("{} nulls:{validity_name}", body.encoding);
        }
        Ok(body)
    }

    fn encode_int_body(&mut self, values: &[i64], prefix: &[u8]) -> Result<Body> {
        let mut raw = prefix.to_vec();
        let encoding = ints::encode_ints(values, IntPolicy::Cheap, &mut raw)?;
        let best = self.candidate(raw, encoding, true)?;
        self.try_pco(best, prefix, values.len(), |out| {
            ints::encode_ints(values, IntPolicy::PcoOnly(PCO_LEVEL), out)
        })
    }

    fn encode_float_body(
        &mut self,
        values: &[f64],
        bound: Option<f64>,
        prefix: &[u8],
    ) -> Result<Body> {
        let m = values.len();
        let auto = self.opts.mode == CodecMode::Auto;
        let digits = floats::decimal_digits(values);
        // A bound at or under half the data's decimal resolution cannot remove information:
        // the grid would have a point for every value, so stay lossless.
        let bound = bound.filter(|&e| digits.is_none_or(|d| !floats::grid_within(e, d)));
        if let Some(e) = bound {
            let q = floats::quantize(values, e);
            let mut raw = prefix.to_vec();
            let encoding = q.write(IntPolicy::Cheap, &mut raw)?;
            let best = self.candidate(raw, encoding, true)?;
            let mut best = self.try_pco(best, prefix, m, |out| {
                q.write(IntPolicy::PcoOnly(PCO_FLOAT_LEVEL), out)
            })?;
            best.lossy = true;
            // Lossless satisfies any bound: use it when it may well be smaller, i.e. for
            // decimal data or when the bound is so tight the grid costs 6+ bytes a value.
            if !(auto && (digits.is_some() || best.stored.len() > prefix.len() + 6 * m)) {
                return Ok(best);
            }
            let exact = self.encode_exact_floats(values, digits, prefix)?;
            return Ok(if exact.stored.len() <= best.stored.len() {
                exact
            } else {
                best
            });
        }
        self.encode_exact_floats(values, digits, prefix)
    }

    /// The lossless encodings of a Float64 column (see `floats.rs`).
    fn encode_exact_floats(
        &mut self,
        values: &[f64],
        digits: Option<usize>,
        prefix: &[u8],
    ) -> Result<Body> {
        let m = values.len();
        let mut raw = prefix.to_vec();
        if let Some(d) = digits {
            let dec = floats::decimals(values, d);
            // Too many exceptions: the data are not decimals after all.
            if dec.exceptions() * 8 <= m {
                let encoding = dec.write(IntPolicy::Cheap, &mut raw)?;
                let best = self.candidate(raw, encoding, true)?;
                return self.try_pco(best, prefix, m, |out| {
                    dec.write(IntPolicy::PcoOnly(PCO_LEVEL), out)
                });
            }
        }
        if floats::runs(values) * 2 <= m {
            let encoding = floats::write_bits(values, IntPolicy::Cheap, &mut raw)?;
            return self.candidate(raw, encoding, true);
        }
        match self.opts.mode {
            CodecMode::Auto if m >= PCO_MIN_N => {
                let encoding = floats::write_pco(values, &mut raw)?;
                self.candidate(raw, encoding, false)
            }
            _ => {
                let encoding = floats::write_bss(values, &mut raw)?;
                self.candidate(raw, encoding, true)
            }
        }
    }
}

/// The non-null values of a primitive array (borrowed when it has no nulls).
fn compact<'a, T: ArrowPrimitiveType>(
    array: &'a PrimitiveArray<T>,
    nulls: Option<&NullBuffer>,
) -> Cow<'a, [T::Native]> {
    match nulls {
        None => Cow::Borrowed(array.values()),
        Some(v) => Cow::Owned(v.valid_indices().map(|i| array.values()[i]).collect()),
    }
}

/// A primitive array, its lengths checked by Arrow.
fn primitive<T: ArrowPrimitiveType>(
    values: Vec<T::Native>,
    nulls: Option<NullBuffer>,
) -> Result<ArrayRef> {
    PrimitiveArray::<T>::try_new(ScalarBuffer::from(values), nulls)
        .map(|a| Arc::new(a) as ArrayRef)
        .map_err(|e| CodecError::CorruptStream {
            stream: "arrow",
            source: e.into(),
        })
}

/// Spreads `values` (one per valid row) over `n` rows, `T::default()` at null rows.
fn expand<T: Copy + Default>(values: Vec<T>, nulls: Option<&NullBuffer>, n: usize) -> Vec<T> {
    match nulls {
        None => values,
        Some(v) => {
            let mut out = vec![T::default(); n];
            for (i, x) in v.valid_indices().zip(values) {
                out[i] = x;
            }
            out
        }
    }
}

fn type_tag(field: &Field) -> Result<u8> {
    Ok(match field.data_type() {
        DataType::Timestamp(TimeUnit::Millisecond, None) => TYPE_TIMESTAMP_MS,
        DataType::Int64 => TYPE_INT64,
        DataType::UInt64 => TYPE_UINT64,
        DataType::Float64 => TYPE_FLOAT64,
        DataType::Utf8 => TYPE_UTF8,
        DataType::Boolean => TYPE_BOOLEAN,
        t => {
            return Err(CodecError::UnsupportedType {
                column: field.name().clone(),
                data_type: t.clone(),
            });
        }
    })
}

fn data_type(tag: u8) -> Result<DataType> {
    Ok(match tag {
        TYPE_TIMESTAMP_MS => DataType::Timestamp(TimeUnit::Millisecond, None),
        TYPE_INT64 => DataType::Int64,
        TYPE_UINT64 => DataType::UInt64,
        TYPE_FLOAT64 => DataType::Float64,
        TYPE_UTF8 => DataType::Utf8,
        TYPE_BOOLEAN => DataType::Boolean,
        t => return Err(CodecError::corrupt(format!("unknown type tag {t}"))),
    })
}

fn put_metadata(out: &mut Vec<u8>, metadata: &HashMap<String, String>) {
    // Sorted, so equal batches give equal frames.
    let mut pairs: Vec<_> = metadata.iter().collect();
    pairs.sort();
    put_varint(out, pairs.len() as u64);
    for (k, v) in pairs {
        put_bytes(out, k.as_bytes());
        put_bytes(out, v.as_bytes());
    }
}

fn read_string(r: &mut Reader<'_>, what: &str) -> Result<String> {
    let bytes = r.len_bytes(r.remaining(), what)?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| CodecError::corrupt(format!("{what} is not UTF-8")))
}

fn read_metadata(r: &mut Reader<'_>) -> Result<HashMap<String, String>> {
    // Each pair takes at least 2 bytes.
    let count = r.count(r.remaining() / 2, "metadata entry count")?;
    let mut map = HashMap::with_capacity(count);
    for _ in 0..count {
        let k = read_string(r, "metadata key")?;
        let v = read_string(r, "metadata value")?;
        map.insert(k, v);
    }
    Ok(map)
}

/// Decodes frames, keeping decompressor state between calls.
#[derive(Debug, Default)]
pub struct Decoder {
    limits: DecodeLimits,
    unpackers: Unpackers,
}

impl Decoder {
    /// A decoder that refuses frames needing more than `limits`.
    pub fn new(limits: DecodeLimits) -> Self {
        Decoder {
            limits,
            unpackers: Unpackers::default(),
        }
    }

    /// Decodes one frame.
    pub fn decode(&mut self, frame: &[u8]) -> Result<RecordBatch> {
        if frame.len() < MAGIC.len() + 1 || &frame[..3] != MAGIC {
            return Err(CodecError::corrupt(
                "not an edgeflow codec frame (bad magic)",
            ));
        }
        if frame[3] != VERSION {
            return Err(CodecError::Version {
                found: frame[3],
                supported: VERSION,
            });
        }
        let Some(split) = frame.len().checked_sub(4).filter(|&s| s >= 4) else {
            return Err(CodecError::corrupt("truncated (no checksum)"));
        };
        let (content, tail) = frame.split_at(split);
        let expected = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
        let actual = wire::checksum(content);
        if expected != actual {
            return Err(CodecError::Checksum { expected, actual });
        }
        self.decode_content(content)
    }

    /// Decodes a frame whose checksum was checked (or is not wanted: hostile-input tests).
    fn decode_content(&mut self, content: &[u8]) -> Result<RecordBatch> {
        let mut r = Reader::new(content);
        r.bytes(4)?;
        let flags = r.u8()?;
        if flags & !(FLAG_SCHEMA_METADATA | FLAG_FAST) != 0 {
            return Err(CodecError::corrupt(format!("unknown flags {flags:#04x}")));
        }
        let n = r.varint()?;
        let n = usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.limits.max_rows)
            .ok_or_else(|| {
                CodecError::LimitExceeded(format!("{n} rows (limit {})", self.limits.max_rows))
            })?;
        // A column takes at least 6 bytes (name length, type, flags, packer, length, validity).
        let ncols = r.count(r.remaining() / 6, "column count")?;
        let metadata = if flags & FLAG_SCHEMA_METADATA != 0 {
            read_metadata(&mut r)?
        } else {
            HashMap::new()
        };
        let mut fields = Vec::with_capacity(ncols);
        for _ in 0..ncols {
            let name = read_string(&mut r, "column name")?;
            let data_type = data_type(r.u8()?)?;
            let f = r.u8()?;
            if f & !(FIELD_NULLABLE | FIELD_METADATA) != 0 {
                return Err(CodecError::corrupt(format!("unknown field flags {f:#04x}")));
            }
            let mut field = Field::new(name, data_type, f & FIELD_NULLABLE != 0);
            if f & FIELD_METADATA != 0 {
                field = field.with_metadata(read_metadata(&mut r)?);
            }
            fields.push(field);
        }
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(ncols);
        for field in &fields {
            let body = wire::read_block(&mut r, self.limits.max_bytes, &mut self.unpackers)?;
            let mut br = Reader::new(&body);
            columns.push(self.decode_column(&mut br, field, n)?);
            br.expect_end(&format!("column \"{}\"", field.name()))?;
        }
        r.expect_end("the last column")?;
        let schema = Arc::new(Schema::new_with_metadata(fields, metadata));
        RecordBatch::try_new_with_options(
            schema,
            columns,
            &RecordBatchOptions::new().with_row_count(Some(n)),
        )
        .map_err(|e| CodecError::CorruptStream {
            stream: "arrow",
            source: e.into(),
        })
    }

    fn decode_column(&mut self, r: &mut Reader<'_>, field: &Field, n: usize) -> Result<ArrayRef> {
        let validity = bits::decode_bits(r, n)?;
        let nulls = Some(NullBuffer::new(validity)).filter(|b| b.null_count() > 0);
        let m = n - nulls.as_ref().map_or(0, |b| b.null_count());
        let nb = nulls.as_ref();
        Ok(match field.data_type() {
            DataType::Timestamp(TimeUnit::Millisecond, None) => {
                let v = expand(ints::decode_ints(r, m)?, nb, n);
                primitive::<TimestampMillisecondType>(v, nulls)?
            }
            DataType::Int64 => {
                primitive::<Int64Type>(expand(ints::decode_ints(r, m)?, nb, n), nulls)?
            }
            DataType::UInt64 => {
                let v: Vec<u64> = ints::decode_ints(r, m)?
                    .into_iter()
                    .map(|x| x as u64)
                    .collect();
                primitive::<UInt64Type>(expand(v, nb, n), nulls)?
            }
            DataType::Float64 => {
                primitive::<Float64Type>(expand(floats::decode_floats(r, m)?, nb, n), nulls)?
            }
            DataType::Utf8 => {
                Arc::new(strings::decode_strings(r, n, nulls, self.limits.max_bytes)?)
            }
            DataType::Boolean => {
                let values = bits::decode_bits(r, m)?;
                let values = match nb {
                    None => values,
                    Some(v) => {
                        let mut b = BooleanBufferBuilder::new(n);
                        b.append_n(n, false);
                        for (i, x) in v.valid_indices().zip(values.iter()) {
                            b.set_bit(i, x);
                        }
                        b.finish()
                    }
                };
                if values.len() != n {
                    return Err(CodecError::corrupt("boolean column length"));
                }
                Arc::new(BooleanArray::new(values, nulls))
            }
            t => {
                return Err(CodecError::Internal {
                    what: format!("decoded type {t} has no decoder"),
                    source: None,
                });
            }
        })
    }
}

/// Encodes one batch with `opts` (see the module docs).
pub fn encode(batch: &RecordBatch, opts: &CodecOptions) -> Result<Vec<u8>> {
    Encoder::new(opts.clone())?.encode(batch)
}

/// Encodes one batch with `opts` and says what it did.
pub fn encode_with_stats(
    batch: &RecordBatch,
    opts: &CodecOptions,
) -> Result<(Vec<u8>, EncodeStats)> {
    Encoder::new(opts.clone())?.encode_with_stats(batch)
}

/// Decodes one frame with the default [`DecodeLimits`].
pub fn decode(frame: &[u8]) -> Result<RecordBatch> {
    Decoder::default().decode(frame)
}
