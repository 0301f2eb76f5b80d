//! Grouping keys: interning the key columns of a batch into dense `u32` key ids, columnar.
//!
//! Used by the window aggregator and the detectors. A batch's key columns are hashed column by
//! column into one `u64` per row, rows are mapped to ids with a `hashbrown::HashTable`, and the
//! distinct keys are stored once, typed, in [`KeyStore`] columns (no per-row allocation and no
//! row-format conversion of the whole batch; only new keys are copied).

use std::cmp::Ordering;
use std::hash::BuildHasher;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, StringArray,
    TimestampMillisecondArray,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{Float64Type, Int64Type, TimestampMillisecondType};
use hashbrown::{DefaultHashBuilder, HashTable};

use crate::error::{OperatorError, Result};
use crate::schema::FieldType;

/// The distinct values of one key column, in key-id order.
#[derive(Debug)]
enum KeyColumn {
    /// Utf8: concatenated bytes and `offsets[id]..offsets[id + 1]`.
    Str {
        offsets: Vec<usize>,
        data: Vec<u8>,
        valid: Vec<bool>,
    },
    /// I64 and timestamps.
    Int {
        values: Vec<i64>,
        valid: Vec<bool>,
        ts: bool,
    },
    /// F64, compared by bit pattern (so NaN keys group together).
    Float { values: Vec<f64>, valid: Vec<bool> },
    /// Booleans.
    Bool { values: Vec<bool>, valid: Vec<bool> },
}

/// A batch's key column, downcast once.
enum BatchColumn<'a> {
    Str(&'a StringArray),
    Int(&'a [i64], Option<&'a NullBuffer>),
    Float(&'a [f64], Option<&'a NullBuffer>),
    Bool(&'a BooleanArray),
}

impl BatchColumn<'_> {
    fn is_valid(&self, row: usize) -> bool {
        match self {
            BatchColumn::Str(a) => a.is_valid(row),
            BatchColumn::Bool(a) => a.is_valid(row),
            BatchColumn::Int(_, n) | BatchColumn::Float(_, n) => n.is_none_or(|n| n.is_valid(row)),
        }
    }
}

fn downcast(array: &ArrayRef, ty: FieldType) -> Result<BatchColumn<'_>> {
    let wrong = || {
        OperatorError::Internal(format!(
            "key column has Arrow type {} but the schema says {ty}",
            array.data_type()
        ))
    };
    Ok(match ty {
        FieldType::String => BatchColumn::Str(array.as_string_opt::<i32>().ok_or_else(wrong)?),
        FieldType::I64 => {
            let a = array.as_primitive_opt::<Int64Type>().ok_or_else(wrong)?;
            BatchColumn::Int(a.values(), a.nulls())
        }
        FieldType::TimestampMs => {
            let a = array
                .as_primitive_opt::<TimestampMillisecondType>()
                .ok_or_else(wrong)?;
            BatchColumn::Int(a.values(), a.nulls())
        }
        FieldType::F64 => {
            let a = array.as_primitive_opt::<Float64Type>().ok_or_else(wrong)?;
            BatchColumn::Float(a.values(), a.nulls())
        }
        FieldType::Bool => BatchColumn::Bool(array.as_boolean_opt().ok_or_else(wrong)?),
    })
}

/// Mixes one column's hash into a row's running hash.
#[inline(always)]
fn mix(acc: u64, h: u64) -> u64 {
    (acc.rotate_left(23) ^ h).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The hash of a null key value.
const NULL_HASH: u64 = 0x51_7c_c1_b7_27_22_0a_95;

/// Interns composite keys (zero or more columns of any [`FieldType`]) into dense ids.
#[derive(Debug)]
pub(crate) struct KeyInterner {
    types: Vec<FieldType>,
    columns: Vec<KeyColumn>,
    table: HashTable<u32>,
    hashes: Vec<u64>,
    state: DefaultHashBuilder,
    /// Scratch: per-row hashes of the current batch.
    row_hashes: Vec<u64>,
}

impl KeyInterner {
    /// An interner for keys made of columns of these types.
    pub(crate) fn new(types: Vec<FieldType>) -> Self {
        let columns = types
            .iter()
            .map(|t| match t {
                FieldType::String => KeyColumn::Str {
                    offsets: vec![0],
                    data: Vec::new(),
                    valid: Vec::new(),
                },
                FieldType::I64 | FieldType::TimestampMs => KeyColumn::Int {
                    values: Vec::new(),
                    valid: Vec::new(),
                    ts: *t == FieldType::TimestampMs,
                },
                FieldType::F64 => KeyColumn::Float {
                    values: Vec::new(),
                    valid: Vec::new(),
                },
                FieldType::Bool => KeyColumn::Bool {
                    values: Vec::new(),
                    valid: Vec::new(),
                },
            })
            .collect();
        KeyInterner {
            types,
            columns,
            table: HashTable::new(),
            hashes: Vec::new(),
            state: DefaultHashBuilder::default(),
            row_hashes: Vec::new(),
        }
    }

    /// Number of distinct keys seen.
    pub(crate) fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Maps every row of `columns` (the key columns of a batch, in key order) to its key id,
    /// interning new keys; `out` is cleared and filled with one id per row.
    pub(crate) fn intern(
        &mut self,
        columns: &[&ArrayRef],
        num_rows: usize,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        out.clear();
        if self.types.is_empty() {
            if self.hashes.is_empty() {
                self.hashes.push(0);
            }
            out.resize(num_rows, 0);
            return Ok(());
        }
        let cols = columns
            .iter()
            .zip(&self.types)
            .map(|(a, t)| downcast(a, *t))
            .collect::<Result<Vec<_>>>()?;
        self.hash_rows(&cols, num_rows);
        out.reserve(num_rows);
        for row in 0..num_rows {
            let hash = self.row_hashes[row];
            let columns = &self.columns;
            let found = self
                .table
                .find(hash, |&id| key_eq(columns, id as usize, &cols, row));
            let id = match found {
                Some(&id) => id,
                None => {
                    let id = u32::try_from(self.hashes.len()).map_err(|_| {
                        OperatorError::User("more than 4 billion distinct keys".into())
                    })?;
                    for (kc, bc) in self.columns.iter_mut().zip(&cols) {
                        push_key(kc, bc, row);
                    }
                    self.hashes.push(hash);
                    let hashes = &self.hashes;
                    self.table.insert_unique(hash, id, |&k| hashes[k as usize]);
                    id
                }
            };
            out.push(id);
        }
        Ok(())
    }

    fn hash_rows(&mut self, cols: &[BatchColumn<'_>], num_rows: usize) {
        let hashes = &mut self.row_hashes;
        hashes.clear();
        hashes.resize(num_rows, 0);
        let s = &self.state;
        for col in cols {
            match col {
                BatchColumn::Str(a) => {
                    let offsets = a.value_offsets();
                    let data = a.value_data();
                    for (row, h) in hashes.iter_mut().enumerate() {
                        // Offsets of a valid StringArray are in bounds and increasing.
                        let bytes = &data[offsets[row] as usize..offsets[row + 1] as usize];
                        *h = mix(*h, s.hash_one(bytes));
                    }
                    if let Some(n) = a.nulls() {
                        // A null's (empty) bytes were hashed above; the marker tells it from "".
                        for row in n.iter().enumerate().filter(|(_, v)| !v).map(|(i, _)| i) {
                            hashes[row] = mix(hashes[row], NULL_HASH);
                        }
                    }
                }
                BatchColumn::Int(values, nulls) => {
                    for (h, v) in hashes.iter_mut().zip(values.iter()) {
                        *h = mix(*h, s.hash_one(*v));
                    }
                    if let Some(n) = nulls {
                        for row in n.iter().enumerate().filter(|(_, v)| !v).map(|(i, _)| i) {
                            hashes[row] = mix(hashes[row], NULL_HASH);
                        }
                    }
                }
                BatchColumn::Float(values, nulls) => {
                    for (h, v) in hashes.iter_mut().zip(values.iter()) {
                        *h = mix(*h, s.hash_one(v.to_bits()));
                    }
                    if let Some(n) = nulls {
                        for row in n.iter().enumerate().filter(|(_, v)| !v).map(|(i, _)| i) {
                            hashes[row] = mix(hashes[row], NULL_HASH);
                        }
                    }
                }
                BatchColumn::Bool(a) => {
                    for (row, h) in hashes.iter_mut().enumerate() {
                        let v = if a.is_valid(row) {
                            a.value(row) as u64
                        } else {
                            NULL_HASH
                        };
                        *h = mix(*h, s.hash_one(v));
                    }
                }
            }
        }
    }

    /// Total order of two interned keys: column by column, nulls first, strings by bytes,
    /// floats by `total_cmp` (the order of the output rows of a window).
    pub(crate) fn cmp(&self, a: u32, b: u32) -> Ordering {
        let (a, b) = (a as usize, b as usize);
        for col in &self.columns {
            let ord = match col {
                KeyColumn::Str {
                    offsets,
                    data,
                    valid,
                } => valid[a].cmp(&valid[b]).then_with(|| {
                    data[offsets[a]..offsets[a + 1]].cmp(&data[offsets[b]..offsets[b + 1]])
                }),
                KeyColumn::Int { values, valid, .. } => valid[a]
                    .cmp(&valid[b])
                    .then_with(|| values[a].cmp(&values[b])),
                KeyColumn::Float { values, valid } => valid[a]
                    .cmp(&valid[b])
                    .then_with(|| values[a].total_cmp(&values[b])),
                KeyColumn::Bool { values, valid } => valid[a]
                    .cmp(&valid[b])
                    .then_with(|| values[a].cmp(&values[b])),
            };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        Ordering::Equal
    }

    /// The key columns for these key ids, in order, as Arrow arrays.
    pub(crate) fn arrays(&self, ids: &[u32]) -> Vec<ArrayRef> {
        self.columns
            .iter()
            .map(|col| -> ArrayRef {
                match col {
                    KeyColumn::Str {
                        offsets,
                        data,
                        valid,
                    } => Arc::new(
                        ids.iter()
                            .map(|&i| {
                                let i = i as usize;
                                // Stored keys were valid UTF-8 when copied from a StringArray.
                                valid[i].then(|| {
                                    std::str::from_utf8(&data[offsets[i]..offsets[i + 1]])
                                        .unwrap_or_default()
                                })
                            })
                            .collect::<StringArray>(),
                    ),
                    KeyColumn::Int { values, valid, ts } => {
                        let it = ids
                            .iter()
                            .map(|&i| valid[i as usize].then(|| values[i as usize]));
                        if *ts {
                            Arc::new(it.collect::<TimestampMillisecondArray>())
                        } else {
                            Arc::new(it.collect::<Int64Array>())
                        }
                    }
                    KeyColumn::Float { values, valid } => Arc::new(
                        ids.iter()
                            .map(|&i| valid[i as usize].then(|| values[i as usize]))
                            .collect::<Float64Array>(),
                    ),
                    KeyColumn::Bool { values, valid } => Arc::new(
                        ids.iter()
                            .map(|&i| valid[i as usize].then(|| values[i as usize]))
                            .collect::<BooleanArray>(),
                    ),
                }
            })
            .collect()
    }

    /// Forgets every key not in `live` (sorted ascending, unique) and renumbers the rest
    /// densely in that order: afterwards old id `live[i]` is id `i`.
    pub(crate) fn retain(&mut self, live: &[u32]) {
        for col in &mut self.columns {
            match col {
                KeyColumn::Str {
                    offsets,
                    data,
                    valid,
                } => {
                    let mut new_off = Vec::with_capacity(live.len() + 1);
                    let mut new_data = Vec::new();
                    new_off.push(0);
                    for &i in live {
                        let i = i as usize;
                        new_data.extend_from_slice(&data[offsets[i]..offsets[i + 1]]);
                        new_off.push(new_data.len());
                    }
                    *offsets = new_off;
                    *data = new_data;
                    *valid = live.iter().map(|&i| valid[i as usize]).collect();
                }
                KeyColumn::Int { values, valid, .. } => {
                    *values = live.iter().map(|&i| values[i as usize]).collect();
                    *valid = live.iter().map(|&i| valid[i as usize]).collect();
                }
                KeyColumn::Float { values, valid } => {
                    *values = live.iter().map(|&i| values[i as usize]).collect();
                    *valid = live.iter().map(|&i| valid[i as usize]).collect();
                }
                KeyColumn::Bool { values, valid } => {
                    *values = live.iter().map(|&i| values[i as usize]).collect();
                    *valid = live.iter().map(|&i| valid[i as usize]).collect();
                }
            }
        }
        self.hashes = live.iter().map(|&i| self.hashes[i as usize]).collect();
        self.table.clear();
        let hashes = &self.hashes;
        for (id, &h) in hashes.iter().enumerate() {
            // `id < live.len()`, which fits in u32 because the old ids did.
            self.table
                .insert_unique(h, id as u32, |&k| hashes[k as usize]);
        }
    }
}

#[inline]
fn key_eq(columns: &[KeyColumn], id: usize, cols: &[BatchColumn<'_>], row: usize) -> bool {
    columns.iter().zip(cols).all(|(kc, bc)| {
        let bv = bc.is_valid(row);
        match (kc, bc) {
            (
                KeyColumn::Str {
                    offsets,
                    data,
                    valid,
                },
                BatchColumn::Str(a),
            ) => {
                valid[id] == bv
                    && (!bv || &data[offsets[id]..offsets[id + 1]] == a.value(row).as_bytes())
            }
            (KeyColumn::Int { values, valid, .. }, BatchColumn::Int(v, _)) => {
                valid[id] == bv && (!bv || values[id] == v[row])
            }
            (KeyColumn::Float { values, valid }, BatchColumn::Float(v, _)) => {
                valid[id] == bv && (!bv || values[id].to_bits() == v[row].to_bits())
            }
            (KeyColumn::Bool { values, valid }, BatchColumn::Bool(a)) => {
                valid[id] == bv && (!bv || values[id] == a.value(row))
            }
            _ => false,
        }
    })
}

fn push_key(kc: &mut KeyColumn, bc: &BatchColumn<'_>, row: usize) {
    let bv = bc.is_valid(row);
    match (kc, bc) {
        (
            KeyColumn::Str {
                offsets,
                data,
                valid,
            },
            BatchColumn::Str(a),
        ) => {
            if bv {
                data.extend_from_slice(a.value(row).as_bytes());
            }
            offsets.push(data.len());
            valid.push(bv);
        }
        (KeyColumn::Int { values, valid, .. }, BatchColumn::Int(v, _)) => {
            values.push(if bv { v[row] } else { 0 });
            valid.push(bv);
        }
        (KeyColumn::Float { values, valid }, BatchColumn::Float(v, _)) => {
            values.push(if bv { v[row] } else { 0.0 });
            valid.push(bv);
        }
        (KeyColumn::Bool { values, valid }, BatchColumn::Bool(a)) => {
            values.push(bv && a.value(row));
            valid.push(bv);
        }
        // `downcast` built each batch column from the same type list as the key columns.
        _ => unreachable!("key column type mismatch"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_keys_get_equal_ids_and_nulls_are_their_own_key() {
        let a: ArrayRef = Arc::new(StringArray::from(vec![
            Some("x"),
            None,
            Some("x"),
            Some(""),
            None,
        ]));
        let b: ArrayRef = Arc::new(Int64Array::from(vec![1, 1, 1, 1, 2]));
        let mut k = KeyInterner::new(vec![FieldType::String, FieldType::I64]);
        let mut ids = Vec::new();
        k.intern(&[&a, &b], 5, &mut ids).unwrap();
        assert_eq!(ids, vec![0, 1, 0, 2, 3]);
        assert_eq!(k.len(), 4);
        let out = k.arrays(&[3, 2]);
        assert_eq!(out[0].as_string::<i32>().value(1), "");
        assert!(out[0].is_null(0));
        k.retain(&[2, 3]);
        k.intern(&[&a, &b], 5, &mut ids).unwrap();
        assert_eq!(ids, vec![2, 3, 2, 0, 1]);
    }
}
