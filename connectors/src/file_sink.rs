//! File sinks (JSON lines, CSV, Parquet), the dead-letter file, and text formatting of batches
//! for a terminal.
//!
//! JSON lines and CSV write timestamps as RFC 3339 UTC with milliseconds
//! (`2026-01-01T00:00:01.000Z`) and nulls as `null` / an empty field, which is what
//! [`FileSource`](crate::file_source::FileSource) reads back. Parquet files are Snappy-compressed
//! and keep the Arrow schema.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow::util::display::FormatOptions;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde::Serialize;

use crate::error::{ConnectorError, Result};
use crate::file_source::{DeadLetter, FileFormat};
use crate::text::push_json_lines;

/// The timestamp format of CSV output (chrono syntax), matching the JSON-lines encoding.
const CSV_TIMESTAMP_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.3fZ";

/// Creates `path`'s parent directories and the file itself (truncating it).
fn create_file(path: &Path) -> Result<File> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| ConnectorError::io("create directory", parent, e))?;
    }
    File::create(path).map_err(|e| ConnectorError::io("create", path, e))
}

enum SinkWriter {
    JsonLines {
        out: BufWriter<File>,
        scratch: Vec<u8>,
    },
    Csv {
        out: Box<arrow::csv::Writer<BufWriter<File>>>,
        wrote: bool,
    },
    Parquet(Box<ArrowWriter<File>>),
}

/// A file that batches of one schema are written to.
///
/// Call [`FileSink::finish`] at the end: a dropped sink flushes JSON lines and CSV on a best
/// effort basis, but a Parquet file is only readable once its footer is written by `finish`.
pub struct FileSink {
    path: PathBuf,
    schema: SchemaRef,
    writer: SinkWriter,
}

impl std::fmt::Debug for FileSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSink")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl FileSink {
    /// Creates (or truncates) `path`, and its parent directories, for batches of `schema`.
    pub fn create(path: &Path, format: FileFormat, schema: SchemaRef) -> Result<Self> {
        let file = create_file(path)?;
        let writer = match format {
            FileFormat::JsonLines => SinkWriter::JsonLines {
                out: BufWriter::with_capacity(256 * 1024, file),
                scratch: Vec::new(),
            },
            FileFormat::Csv => SinkWriter::Csv {
                out: Box::new(
                    arrow::csv::WriterBuilder::new()
                        .with_header(true)
                        .with_timestamp_format(CSV_TIMESTAMP_FORMAT.to_string())
                        .build(BufWriter::with_capacity(256 * 1024, file)),
                ),
                wrote: false,
            },
            FileFormat::Parquet => {
                let props = WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .build();
                SinkWriter::Parquet(Box::new(ArrowWriter::try_new(
                    file,
                    schema.clone(),
                    Some(props),
                )?))
            }
        };
        Ok(FileSink {
            path: path.to_path_buf(),
            schema,
            writer,
        })
    }

    /// Appends a batch, which must have the sink's schema.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let same = |a: &arrow::datatypes::Field, b: &arrow::datatypes::Field| {
            a.name() == b.name() && a.data_type() == b.data_type()
        };
        let fields = batch.schema_ref().fields();
        if fields.len() != self.schema.fields().len()
            || !fields
                .iter()
                .zip(self.schema.fields())
                .all(|(a, b)| same(a, b))
        {
            return Err(ConnectorError::Internal(format!(
                "batch written to {:?} has schema {:?}, the sink expects {:?}",
                self.path,
                batch.schema(),
                self.schema
            )));
        }
        match &mut self.writer {
            SinkWriter::JsonLines { out, scratch } => {
                scratch.clear();
                push_json_lines(batch, scratch)?;
                out.write_all(scratch)
                    .map_err(|e| ConnectorError::io("write", &self.path, e))?;
            }
            SinkWriter::Csv { out, wrote } => {
                out.write(batch)?;
                *wrote = true;
            }
            SinkWriter::Parquet(w) => w.write(batch)?,
        }
        Ok(())
    }

    /// Pushes buffered rows to the file (for Parquet: closes the current row group).
    pub fn flush(&mut self) -> Result<()> {
        match &mut self.writer {
            SinkWriter::JsonLines { out, .. } => out
                .flush()
                .map_err(|e| ConnectorError::io("write", &self.path, e)),
            // Arrow's CSV writer flushes through to the file after every batch.
            SinkWriter::Csv { .. } => Ok(()),
            SinkWriter::Parquet(w) => Ok(w.flush()?),
        }
    }

    /// Flushes everything and closes the file; for Parquet, writes the footer. A CSV sink that
    /// received no batch still writes its header.
    pub fn finish(self) -> Result<()> {
        let path = self.path;
        match self.writer {
            SinkWriter::JsonLines { mut out, .. } => out
                .flush()
                .map_err(|e| ConnectorError::io("write", &path, e)),
            SinkWriter::Csv { mut out, wrote } => {
                if !wrote {
                    out.write(&RecordBatch::new_empty(self.schema))?;
                }
                out.into_inner()
                    .flush()
                    .map_err(|e| ConnectorError::io("write", &path, e))
            }
            SinkWriter::Parquet(w) => {
                w.close()?;
                Ok(())
            }
        }
    }
}

/// One line of the dead-letter file.
#[derive(Serialize)]
struct DeadLetterLine<'a> {
    node: &'a str,
    reason: &'a str,
    raw: &'a str,
    location: &'a str,
    at_ms: i64,
}

/// Appends dead letters to a JSON-lines file, one object per letter:
/// `{"node":..,"reason":..,"raw":..,"location":..,"at_ms":..}` (`at_ms`: when it was written,
/// ms since the epoch).
pub struct DeadLetterWriter {
    path: PathBuf,
    out: BufWriter<File>,
    line: Vec<u8>,
}

impl std::fmt::Debug for DeadLetterWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetterWriter")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl DeadLetterWriter {
    /// Opens `path` for appending (earlier runs' letters are kept), creating it and its parent
    /// directories if needed.
    pub fn create(path: &Path) -> Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| ConnectorError::io("create directory", parent, e))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| ConnectorError::io("open", path, e))?;
        Ok(DeadLetterWriter {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
            line: Vec::new(),
        })
    }

    /// Writes `letters` stamped with the current wall-clock time.
    pub fn write(&mut self, letters: &[DeadLetter]) -> Result<()> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        self.write_at(letters, now)
    }

    /// Writes `letters` stamped with `at_ms` (for callers that own the clock, and tests).
    pub fn write_at(&mut self, letters: &[DeadLetter], at_ms: i64) -> Result<()> {
        for l in letters {
            self.line.clear();
            serde_json::to_writer(
                &mut self.line,
                &DeadLetterLine {
                    node: &l.node,
                    reason: &l.reason,
                    raw: &l.raw,
                    location: &l.location,
                    at_ms,
                },
            )?;
            self.line.push(b'\n');
            self.out
                .write_all(&self.line)
                .map_err(|e| ConnectorError::io("write", &self.path, e))?;
        }
        Ok(())
    }

    /// Pushes buffered letters to the file.
    pub fn flush(&mut self) -> Result<()> {
        self.out
            .flush()
            .map_err(|e| ConnectorError::io("write", &self.path, e))
    }
}

/// How [`format_batch`] renders a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TextFormat {
    /// An aligned table (arrow's pretty printer), nulls shown as `null`.
    Table,
    /// One JSON object per row, as the JSON-lines sink writes them.
    JsonLines,
}

/// Formats a batch for a terminal. A table ends without a newline; JSON lines end with one.
pub fn format_batch(batch: &RecordBatch, format: TextFormat) -> Result<String> {
    match format {
        TextFormat::Table => {
            let options = FormatOptions::default()
                .with_null("null")
                .with_timestamp_format(Some(CSV_TIMESTAMP_FORMAT));
            let table = arrow::util::pretty::pretty_format_batches_with_options(
                std::slice::from_ref(batch),
                &options,
            )?;
            Ok(table.to_string())
        }
        TextFormat::JsonLines => {
            let mut out = Vec::new();
            push_json_lines(batch, &mut out)?;
            String::from_utf8(out)
                .map_err(|e| ConnectorError::Internal(format!("JSON encoder wrote bad UTF-8: {e}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file_source::{FileSource, FileSourceOptions};
    use crate::generator::{Generator, GeneratorOptions};
    use arrow::array::{
        ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray, TimestampMillisecondArray,
    };
    use edgeflow_operators::schema::{EventSchema, FieldType};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn schema() -> EventSchema {
        EventSchema::new(vec![
            ("ts".into(), FieldType::TimestampMs),
            ("name".into(), FieldType::String),
            ("n".into(), FieldType::I64),
            ("x".into(), FieldType::F64),
            ("b".into(), FieldType::Bool),
        ])
    }

    type Row = (
        Option<i64>,
        Option<String>,
        Option<i64>,
        Option<f64>,
        Option<bool>,
    );

    fn batch(rows: &[Row]) -> RecordBatch {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(
                rows.iter()
                    .map(|r| r.0)
                    .collect::<TimestampMillisecondArray>(),
            ),
            Arc::new(rows.iter().map(|r| r.1.clone()).collect::<StringArray>()),
            Arc::new(rows.iter().map(|r| r.2).collect::<Int64Array>()),
            Arc::new(rows.iter().map(|r| r.3).collect::<Float64Array>()),
            Arc::new(rows.iter().map(|r| r.4).collect::<BooleanArray>()),
        ];
        RecordBatch::try_new(schema().to_arrow(), cols).unwrap()
    }

    fn sample() -> Vec<Row> {
        vec![
            (
                Some(1_767_225_601_000),
                Some("plain".into()),
                Some(1),
                Some(0.1),
                Some(true),
            ),
            (
                Some(-1),
                Some("a,b \"q\"\nline ü".into()),
                Some(i64::MIN),
                Some(1e300),
                Some(false),
            ),
            (None, None, None, None, None),
            (
                Some(0),
                Some("{\"json\": 1}".into()),
                Some(i64::MAX),
                Some(-2.5e-7),
                None,
            ),
        ]
    }

    fn write_file(path: &Path, format: FileFormat, batches: &[RecordBatch]) {
        let mut sink = FileSink::create(path, format, schema().to_arrow()).unwrap();
        for b in batches {
            sink.write(b).unwrap();
        }
        sink.finish().unwrap();
    }

    fn read_back(path: &Path, format: FileFormat, schema: EventSchema) -> RecordBatch {
        let arrow_schema = schema.to_arrow();
        let mut batches = Vec::new();
        if format == FileFormat::Parquet {
            let file = File::open(path).unwrap();
            for b in ParquetRecordBatchReaderBuilder::try_new(file)
                .unwrap()
                .build()
                .unwrap()
            {
                batches.push(b.unwrap());
            }
        } else {
            let mut opts = FileSourceOptions::new(path, format, schema);
            opts.batch_rows = 3;
            let mut src = FileSource::open("rt", opts).unwrap();
            while let Some((b, letters)) = src.next_batch().unwrap() {
                assert!(letters.is_empty(), "{letters:?}");
                batches.push(b);
            }
        }
        arrow::compute::concat_batches(&arrow_schema, &batches).unwrap()
    }

    #[test]
    fn every_format_round_trips_through_the_file_source_or_parquet_reader() {
        let dir = tempfile::tempdir().unwrap();
        let rows = sample();
        let batches = [batch(&rows[..1]), batch(&rows[1..])];
        let whole = batch(&rows);
        for format in FileFormat::ALL {
            let path = dir.path().join(format!("nested/dir/out.{}", format.name()));
            write_file(&path, format, &batches);
            assert_eq!(read_back(&path, format, schema()), whole, "{format:?}");
        }
    }

    #[test]
    fn generator_output_round_trips_through_every_format() {
        let opts = GeneratorOptions {
            ground_truth: true,
            anomaly_rate: 0.05,
            disorder_ms: 20,
            ..GeneratorOptions::default()
        };
        let gen_schema = Generator::schema(&opts);
        let mut g = Generator::new(opts, 0, 1).unwrap();
        let b = g.next_batch(500).unwrap();
        let dir = tempfile::tempdir().unwrap();
        for format in FileFormat::ALL {
            let path = dir.path().join(format!("gen.{}", format.name()));
            let mut sink = FileSink::create(&path, format, gen_schema.to_arrow()).unwrap();
            sink.write(&b).unwrap();
            sink.finish().unwrap();
            assert_eq!(
                read_back(&path, format, gen_schema.clone()),
                b,
                "{format:?}"
            );
        }
    }

    #[test]
    fn json_lines_use_rfc3339_millis_and_explicit_nulls() {
        let text = format_batch(&batch(&sample()[..3]), TextFormat::JsonLines).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            r#"{"ts":"2026-01-01T00:00:01.000Z","name":"plain","n":1,"x":0.1,"b":true}"#
        );
        assert_eq!(
            lines[2],
            r#"{"ts":null,"name":null,"n":null,"x":null,"b":null}"#
        );
        let nan = batch(&[(None, None, None, Some(f64::NAN), None)]);
        assert!(
            format_batch(&nan, TextFormat::JsonLines)
                .unwrap()
                .contains(r#""x":null"#)
        );
    }

    #[test]
    fn table_format_aligns_columns_with_a_header() {
        let text = format_batch(&batch(&sample()[..1]), TextFormat::Table).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[1].contains("| ts ") && lines[1].contains("| name "),
            "{text}"
        );
        assert!(lines[3].contains("2026-01-01T00:00:01.000Z"), "{text}");
        assert!(
            lines
                .iter()
                .all(|l| l.chars().count() == lines[0].chars().count())
        );
    }

    #[test]
    fn a_csv_sink_without_batches_still_writes_its_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.csv");
        write_file(&path, FileFormat::Csv, &[]);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "ts,name,n,x,b\n");
    }

    #[test]
    fn writing_a_batch_of_another_schema_is_an_internal_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = FileSink::create(
            &dir.path().join("o.jsonl"),
            FileFormat::JsonLines,
            EventSchema::new(vec![("ts".into(), FieldType::TimestampMs)]).to_arrow(),
        )
        .unwrap();
        let e = sink.write(&batch(&sample())).unwrap_err();
        assert!(matches!(e, ConnectorError::Internal(_)), "{e}");
    }

    #[test]
    fn dead_letters_are_appended_as_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dlq/letters.jsonl");
        let letter = DeadLetter {
            node: "src".into(),
            reason: "field \"value\": expected f64, got \"abc\"".into(),
            raw: "d2,abc".into(),
            location: "in.csv:3".into(),
        };
        for _ in 0..2 {
            // A second writer appends to the same file.
            let mut w = DeadLetterWriter::create(&path).unwrap();
            w.write_at(std::slice::from_ref(&letter), 42).unwrap();
            w.flush().unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0],
            serde_json::json!({"node": "src", "reason": letter.reason, "raw": "d2,abc",
                               "location": "in.csv:3", "at_ms": 42})
        );
    }

    fn row_strategy() -> impl Strategy<Value = Row> {
        (
            proptest::option::of(-10_000_000_000_000i64..10_000_000_000_000),
            // CSV cannot tell an empty string from null, so strings are non-empty here.
            proptest::option::of("[a-zA-Z0-9 ,\"\n\\\\é{}:]{1,12}"),
            proptest::option::of(any::<i64>()),
            proptest::option::of(any::<f64>().prop_filter("finite", |x| x.is_finite())),
            proptest::option::of(any::<bool>()),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn random_rows_round_trip_through_csv_and_json_lines(
            rows in proptest::collection::vec(row_strategy(), 1..20)
        ) {
            let dir = tempfile::tempdir().unwrap();
            let b = batch(&rows);
            for format in [FileFormat::Csv, FileFormat::JsonLines] {
                let path = dir.path().join(format!("p.{}", format.name()));
                write_file(&path, format, std::slice::from_ref(&b));
                prop_assert_eq!(read_back(&path, format, schema()), b.clone());
            }
        }
    }
}
