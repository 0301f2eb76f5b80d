//! The rows an `aggregate` keeps in differential dataflow: totally ordered field values,
//! conversions from and to Arrow columns, and [`Accum`], the difference type holding the
//! adding-up part of a group's aggregates.

use arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use std::sync::Arc;

use edgeflow_operators::schema::{EventSchema, FieldType};
use serde::{Deserialize, Serialize};

/// A field value inside the differential dataflow: totally ordered and hashable (floats by
/// `f64::total_cmp`), so rows can be keys, arranged and consolidated.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Value {
    /// A null.
    Null,
    /// A `bool`.
    Bool(bool),
    /// An `i64`.
    Int(i64),
    /// A `timestamp_ms`.
    Time(i64),
    /// An `f64`.
    Float(OrdF64),
    /// A `string`.
    Str(String),
}

/// An `f64` ordered by [`f64::total_cmp`] (equal exactly when the bits are equal).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct OrdF64(pub f64);

impl PartialEq for OrdF64 {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}
impl Eq for OrdF64 {}
impl PartialOrd for OrdF64 {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OrdF64 {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}
impl std::hash::Hash for OrdF64 {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state);
    }
}

impl Value {
    pub(super) fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(v) | Value::Time(v) => Some(*v as f64),
            Value::Float(v) => Some(v.0),
            _ => None,
        }
    }
}

/// A row of values, in the order of the field list it was read by.
pub type Row = Vec<Value>;

/// The values of one column, row by row.
pub(super) fn column_values(
    array: &dyn Array,
    field_type: FieldType,
) -> Result<Vec<Value>, String> {
    let wrong = || format!("column is not {field_type}");
    let any = array.as_any();
    let values = match field_type {
        FieldType::TimestampMs => {
            let a = any
                .downcast_ref::<TimestampMillisecondArray>()
                .ok_or_else(wrong)?;
            a.iter()
                .map(|v| v.map_or(Value::Null, Value::Time))
                .collect()
        }
        FieldType::I64 => {
            let a = any.downcast_ref::<Int64Array>().ok_or_else(wrong)?;
            a.iter()
                .map(|v| v.map_or(Value::Null, Value::Int))
                .collect()
        }
        FieldType::F64 => {
            let a = any.downcast_ref::<Float64Array>().ok_or_else(wrong)?;
            a.iter()
                .map(|v| v.map_or(Value::Null, |f| Value::Float(OrdF64(f))))
                .collect()
        }
        FieldType::String => {
            let a = any.downcast_ref::<StringArray>().ok_or_else(wrong)?;
            a.iter()
                .map(|v| v.map_or(Value::Null, |s| Value::Str(s.to_owned())))
                .collect()
        }
        FieldType::Bool => {
            let a = any.downcast_ref::<BooleanArray>().ok_or_else(wrong)?;
            a.iter()
                .map(|v| v.map_or(Value::Null, Value::Bool))
                .collect()
        }
    };
    Ok(values)
}

/// The rows of `batch` restricted to `fields` (names of `schema`), in that order.
pub(super) fn batch_rows(
    batch: &RecordBatch,
    schema: &EventSchema,
    fields: &[String],
) -> Result<Vec<Row>, String> {
    let columns = fields
        .iter()
        .map(|name| {
            let index = schema
                .fields()
                .iter()
                .position(|(n, _)| n == name)
                .ok_or_else(|| format!("no field {name}"))?;
            let array = batch
                .columns()
                .get(index)
                .ok_or_else(|| format!("batch has no column {index}"))?;
            column_values(array.as_ref(), schema.fields()[index].1)
                .map_err(|e| format!("field {name}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((0..batch.num_rows())
        .map(|row| columns.iter().map(|c| c[row].clone()).collect())
        .collect())
}

/// A column of `field_type` from values (anything of another type becomes null).
pub(super) fn values_to_array<'a>(
    values: impl Iterator<Item = &'a Value>,
    field_type: FieldType,
) -> ArrayRef {
    match field_type {
        FieldType::TimestampMs => {
            Arc::new(TimestampMillisecondArray::from_iter(values.map(
                |v| match v {
                    Value::Time(t) | Value::Int(t) => Some(*t),
                    _ => None,
                },
            )))
        }
        FieldType::I64 => Arc::new(Int64Array::from_iter(values.map(|v| match v {
            Value::Int(t) | Value::Time(t) => Some(*t),
            _ => None,
        }))),
        FieldType::F64 => Arc::new(Float64Array::from_iter(values.map(Value::as_f64))),
        FieldType::String => Arc::new(StringArray::from_iter(values.map(|v| match v {
            Value::Str(s) => Some(s.as_str()),
            _ => None,
        }))),
        FieldType::Bool => Arc::new(BooleanArray::from_iter(values.map(|v| match v {
            Value::Bool(b) => Some(*b),
            _ => None,
        }))),
    }
}

/// One aggregate of the view: its function and its column in the reduce input.
#[derive(Clone, Copy, Debug)]
pub(super) enum ViewFn {
    Count,
    Sum { integer: bool },
    Min,
    Max,
    Mean,
    CountDistinct,
}

impl ViewFn {
    pub(super) fn parse(name: &str, input: FieldType) -> Option<ViewFn> {
        Some(match name {
            "count" => ViewFn::Count,
            "sum" => ViewFn::Sum {
                integer: input != FieldType::F64,
            },
            "min" => ViewFn::Min,
            "max" => ViewFn::Max,
            "mean" => ViewFn::Mean,
            "count_distinct" => ViewFn::CountDistinct,
            _ => return None,
        })
    }

    /// Whether the function is kept as a running sum (its state is an [`Accum`] slot) rather
    /// than as an extreme of the group's values.
    pub(super) fn is_abelian(self) -> bool {
        !matches!(self, ViewFn::Min | ViewFn::Max)
    }
}

/// The part of a group's aggregates that adds up: per aggregate, the number of non-null
/// (non-NaN) values (distinct values for `count_distinct`), their float sum and their
/// integer sum. It is the *difference* type of a differential collection, so differential
/// keeps one consolidated `Accum` per group and time, and a retraction is a subtraction:
/// updating a group costs the same whatever its size.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Accum {
    pub(super) rows: i64,
    pub(super) counts: Vec<i64>,
    pub(super) sums: Vec<OrdF64>,
    pub(super) ints: Vec<i64>,
}

impl Accum {
    pub(super) fn zero(n: usize) -> Self {
        Accum {
            rows: 0,
            counts: vec![0; n],
            sums: vec![OrdF64(0.0); n],
            ints: vec![0; n],
        }
    }

    /// One row's contribution, from its aggregate values (count_distinct slots excluded:
    /// see [`Accum::distinct`]).
    pub(super) fn of_values(values: &Row, aggregates: &[ViewFn]) -> Self {
        let mut accum = Accum::zero(aggregates.len());
        accum.rows = 1;
        for (i, f) in aggregates.iter().enumerate() {
            if !f.is_abelian() || matches!(f, ViewFn::CountDistinct) {
                continue;
            }
            match &values[i] {
                Value::Null => {}
                Value::Float(v) if v.0.is_nan() => {}
                Value::Int(v) | Value::Time(v) => {
                    accum.counts[i] = 1;
                    accum.ints[i] = *v;
                    accum.sums[i] = OrdF64(*v as f64);
                }
                Value::Float(v) => {
                    accum.counts[i] = 1;
                    accum.sums[i] = *v;
                }
                _ => accum.counts[i] = 1,
            }
        }
        accum
    }

    /// One distinct value of aggregate `i`.
    pub(super) fn distinct(n: usize, i: usize) -> Self {
        let mut accum = Accum::zero(n);
        accum.counts[i] = 1;
        accum
    }
}

impl differential_dataflow::difference::IsZero for Accum {
    /// Exactly zero. A correction that keeps a group's counts changes its sums, so counts
    /// alone do not tell; a group emptied with rounding left in its float sums stays as an
    /// entry without rows, which has no extremes and so never reaches the view.
    fn is_zero(&self) -> bool {
        self.rows == 0
            && self.counts.iter().all(|c| *c == 0)
            && self.ints.iter().all(|i| *i == 0)
            && self.sums.iter().all(|s| s.0 == 0.0)
    }
}

impl differential_dataflow::difference::Semigroup for Accum {
    fn plus_equals(&mut self, rhs: &Self) {
        // `Monoid::zero` has no slots: it takes the width of what is added to it.
        if self.counts.len() < rhs.counts.len() {
            let n = rhs.counts.len();
            self.counts.resize(n, 0);
            self.sums.resize(n, OrdF64(0.0));
            self.ints.resize(n, 0);
        }
        self.rows += rhs.rows;
        for (a, b) in self.counts.iter_mut().zip(&rhs.counts) {
            *a += b;
        }
        for (a, b) in self.sums.iter_mut().zip(&rhs.sums) {
            a.0 += b.0;
        }
        for (a, b) in self.ints.iter_mut().zip(&rhs.ints) {
            *a = a.wrapping_add(*b);
        }
    }
}

impl differential_dataflow::difference::Monoid for Accum {
    fn zero() -> Self {
        Accum::zero(0)
    }
}

impl differential_dataflow::difference::Abelian for Accum {
    fn negate(&mut self) {
        self.multiply_in_place(-1);
    }
}

impl differential_dataflow::difference::Multiply<isize> for Accum {
    type Output = Accum;
    fn multiply(mut self, rhs: &isize) -> Accum {
        self.multiply_in_place(*rhs as i64);
        self
    }
}

impl Accum {
    pub(super) fn multiply_in_place(&mut self, by: i64) {
        self.rows *= by;
        for c in &mut self.counts {
            *c *= by;
        }
        for s in &mut self.sums {
            s.0 *= by as f64;
        }
        for i in &mut self.ints {
            *i = i.wrapping_mul(by);
        }
    }
}
