//! The event data model: the five field types a pipeline can declare and their Arrow mapping.
//!
//! A pipeline declares schemas as `name: type` maps (`{ ts: timestamp_ms, value: f64 }`).
//! Each [`FieldType`] maps to exactly one Arrow [`DataType`]; every field is nullable.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};

use crate::error::OperatorError;

/// A field type as written in a pipeline's `schema:` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// Milliseconds since the Unix epoch (Arrow `Timestamp(Millisecond)`).
    TimestampMs,
    /// UTF-8 text (Arrow `Utf8`).
    String,
    /// 64-bit signed integer (Arrow `Int64`).
    I64,
    /// 64-bit float (Arrow `Float64`).
    F64,
    /// Boolean (Arrow `Boolean`).
    Bool,
}

impl FieldType {
    /// Every type, in the order the docs list them.
    pub const ALL: [FieldType; 5] = [
        FieldType::TimestampMs,
        FieldType::String,
        FieldType::I64,
        FieldType::F64,
        FieldType::Bool,
    ];

    /// The name used in pipeline files.
    pub fn name(self) -> &'static str {
        match self {
            FieldType::TimestampMs => "timestamp_ms",
            FieldType::String => "string",
            FieldType::I64 => "i64",
            FieldType::F64 => "f64",
            FieldType::Bool => "bool",
        }
    }

    /// Parses a type name as written in pipeline files.
    pub fn from_name(name: &str) -> Option<FieldType> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The Arrow type that carries values of this type.
    pub fn arrow_type(self) -> DataType {
        match self {
            FieldType::TimestampMs => DataType::Timestamp(TimeUnit::Millisecond, None),
            FieldType::String => DataType::Utf8,
            FieldType::I64 => DataType::Int64,
            FieldType::F64 => DataType::Float64,
            FieldType::Bool => DataType::Boolean,
        }
    }

    /// The pipeline type of an Arrow type, if it is one edgeflow carries.
    ///
    /// Integer and float widths other than 64 bits are not accepted: expressions that produce
    /// them must cast (`CAST(x AS BIGINT)`).
    pub fn from_arrow(data_type: &DataType) -> Option<FieldType> {
        match data_type {
            DataType::Timestamp(TimeUnit::Millisecond, None) => Some(FieldType::TimestampMs),
            DataType::Utf8 => Some(FieldType::String),
            DataType::Int64 => Some(FieldType::I64),
            DataType::Float64 => Some(FieldType::F64),
            DataType::Boolean => Some(FieldType::Bool),
            _ => None,
        }
    }

    /// Whether values of this type are numbers an aggregate such as `mean` can use.
    pub fn is_numeric(self) -> bool {
        matches!(self, FieldType::I64 | FieldType::F64)
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An ordered list of named, typed fields: the schema of one stream.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EventSchema {
    fields: Vec<(String, FieldType)>,
}

impl EventSchema {
    /// Builds a schema from `(name, type)` pairs, in order.
    pub fn new(fields: Vec<(String, FieldType)>) -> Self {
        EventSchema { fields }
    }

    /// The column of field `name`, or a user error saying which `role` (key, value...) field
    /// is missing.
    pub fn column_of(&self, name: &str, role: &str) -> Result<usize, OperatorError> {
        self.fields
            .iter()
            .position(|(n, _)| n == name)
            .ok_or_else(|| {
                OperatorError::User(format!(
                    "{role} field \"{name}\" is not in the input schema {self}"
                ))
            })
    }

    /// The column of the numeric value field `name` that `operator` (e.g. "detector") scores.
    pub fn value_column_of(&self, name: &str, operator: &str) -> Result<usize, OperatorError> {
        let column = self.column_of(name, "value")?;
        let t = self.fields[column].1;
        if t.is_numeric() {
            Ok(column)
        } else {
            Err(OperatorError::User(format!(
                "{operator} value field \"{name}\" must be i64 or f64, it is {t}"
            )))
        }
    }

    /// The fields, in order.
    pub fn fields(&self) -> &[(String, FieldType)] {
        &self.fields
    }

    /// The type of a field, if the schema has it.
    pub fn field_type(&self, name: &str) -> Option<FieldType> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, t)| *t)
    }

    /// The field names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|(n, _)| n.as_str())
    }

    /// The Arrow schema of batches of this stream (every field nullable).
    pub fn to_arrow(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.fields
                .iter()
                .map(|(name, ty)| Field::new(name, ty.arrow_type(), true))
                .collect::<Vec<_>>(),
        ))
    }

    /// The schema of an Arrow schema, or the name of the first field whose type edgeflow
    /// does not carry.
    pub fn from_arrow(schema: &Schema) -> Result<Self, String> {
        schema
            .fields()
            .iter()
            .map(|f| {
                FieldType::from_arrow(f.data_type())
                    .map(|t| (f.name().clone(), t))
                    .ok_or_else(|| f.name().clone())
            })
            .collect::<Result<Vec<_>, _>>()
            .map(EventSchema::new)
    }
}

impl fmt::Display for EventSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{ ")?;
        for (i, (name, ty)) in self.fields.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{name}: {ty}")?;
        }
        f.write_str(" }")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_round_trips_through_arrow_and_its_name() {
        for t in FieldType::ALL {
            assert_eq!(FieldType::from_arrow(&t.arrow_type()), Some(t));
            assert_eq!(FieldType::from_name(t.name()), Some(t));
        }
        assert_eq!(FieldType::from_arrow(&DataType::Int32), None);
    }

    #[test]
    fn schema_displays_in_pipeline_syntax() {
        let s = EventSchema::new(vec![
            ("ts".into(), FieldType::TimestampMs),
            ("value".into(), FieldType::F64),
        ]);
        assert_eq!(s.to_string(), "{ ts: timestamp_ms, value: f64 }");
        assert_eq!(EventSchema::from_arrow(&s.to_arrow()).unwrap(), s);
    }
}
