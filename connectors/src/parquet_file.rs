//! Reading a Parquet file as batches of an event schema (used by `edgeflow train`).
//!
//! The schema comes from the file: every column whose type edgeflow carries, or can carry
//! after a lossless cast, becomes a field (timestamps of any unit become `timestamp_ms`,
//! narrower integers `i64`, `f32` `f64`, large strings `string`); other columns are skipped.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::cast;
use arrow::datatypes::{DataType, SchemaRef};
use edgeflow_operators::schema::{EventSchema, FieldType};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

use crate::error::{ConnectorError, Result};

/// A Parquet file read batch by batch; see the module docs.
pub struct ParquetFile {
    schema: EventSchema,
    arrow_schema: SchemaRef,
    reader: ParquetRecordBatchReader,
}

/// The field type a Parquet column becomes, if any.
fn carried(data_type: &DataType) -> Option<FieldType> {
    match data_type {
        DataType::Timestamp(_, _) | DataType::Date64 => Some(FieldType::TimestampMs),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Some(FieldType::String),
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32 => Some(FieldType::I64),
        DataType::Float16 | DataType::Float32 | DataType::Float64 => Some(FieldType::F64),
        DataType::Boolean => Some(FieldType::Bool),
        _ => None,
    }
}

impl ParquetFile {
    /// Opens `path`, reading `batch_rows` rows per batch.
    pub fn open(path: &Path, batch_rows: usize) -> Result<Self> {
        let file = File::open(path).map_err(|e| ConnectorError::io("open", path, e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)?;
        let file_schema = builder.schema().clone();
        let mut keep = Vec::new();
        let mut fields = Vec::new();
        for (i, f) in file_schema.fields().iter().enumerate() {
            if let Some(t) = carried(f.data_type()) {
                keep.push(i);
                fields.push((f.name().clone(), t));
            }
        }
        if fields.is_empty() {
            return Err(ConnectorError::User(format!(
                "{}: no column has a type edgeflow reads (timestamp, string, integer, float, bool)",
                path.display()
            )));
        }
        let mask = ProjectionMask::roots(builder.parquet_schema(), keep);
        let reader = builder
            .with_projection(mask)
            .with_batch_size(batch_rows.max(1))
            .build()?;
        let schema = EventSchema::new(fields);
        Ok(ParquetFile {
            arrow_schema: schema.to_arrow(),
            schema,
            reader,
        })
    }

    /// The schema of the batches.
    pub fn schema(&self) -> &EventSchema {
        &self.schema
    }

    /// The next batch, cast to [`ParquetFile::schema`], or `None` at the end of the file.
    pub fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        let Some(batch) = self.reader.next().transpose()? else {
            return Ok(None);
        };
        let columns = batch
            .columns()
            .iter()
            .zip(self.arrow_schema.fields())
            .map(|(c, f)| cast(c, f.data_type()))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Some(RecordBatch::try_new(
            Arc::clone(&self.arrow_schema),
            columns,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, ListArray};
    use arrow::array::{Float32Array, Int32Array, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{
        Field, Float64Type, Int64Type, Schema, TimeUnit, TimestampMillisecondType,
    };
    use parquet::arrow::ArrowWriter;

    #[test]
    fn columns_are_cast_to_the_event_types_and_others_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.parquet");
        let schema = Arc::new(Schema::new(vec![
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
            Field::new("device", DataType::Utf8, true),
            Field::new("value", DataType::Float32, true),
            Field::new("count", DataType::Int32, true),
            Field::new(
                "tags",
                DataType::List(Arc::new(Field::new("item", DataType::Int32, true))),
                true,
            ),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(TimestampMicrosecondArray::from(vec![1_500_000, 2_500_999])),
                Arc::new(StringArray::from(vec!["a", "b"])),
                Arc::new(Float32Array::from(vec![0.5, -2.25])),
                Arc::new(Int32Array::from(vec![Some(7), None])),
                Arc::new(ListArray::from_iter_primitive::<
                    arrow::datatypes::Int32Type,
                    _,
                    _,
                >(vec![Some(vec![Some(1)]), None])),
            ],
        )
        .unwrap();
        let mut w = ArrowWriter::try_new(File::create(&path).unwrap(), schema, None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();

        let mut file = ParquetFile::open(&path, 1).unwrap();
        assert_eq!(
            file.schema().to_string(),
            EventSchema::new(vec![
                ("ts".into(), FieldType::TimestampMs),
                ("device".into(), FieldType::String),
                ("value".into(), FieldType::F64),
                ("count".into(), FieldType::I64),
            ])
            .to_string()
        );
        let first = file.next_batch().unwrap().unwrap();
        let second = file.next_batch().unwrap().unwrap();
        assert!(file.next_batch().unwrap().is_none());
        let ts = |b: &RecordBatch| {
            b.column(0)
                .as_primitive::<TimestampMillisecondType>()
                .value(0)
        };
        assert_eq!((ts(&first), ts(&second)), (1500, 2500));
        assert_eq!(
            second.column(2).as_primitive::<Float64Type>().value(0),
            -2.25
        );
        assert_eq!(first.column(3).as_primitive::<Int64Type>().value(0), 7);
        assert!(second.column(3).is_null(0));

        let err = ParquetFile::open(&dir.path().join("missing.parquet"), 10)
            .err()
            .unwrap();
        assert!(err.to_string().contains("missing.parquet"), "{err}");
    }
}
