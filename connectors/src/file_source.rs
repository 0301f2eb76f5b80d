//! File sources: CSV and JSON-lines files read record by record into batches of an event schema,
//! every bad record routed to a [`DeadLetter`] instead of stopping the source.
//!
//! Conversions (the same for both formats; CSV fields are text, JSON values are typed):
//! - `timestamp_ms`: integer milliseconds since the epoch, or RFC 3339 text
//!   (`2026-01-01T00:00:00Z`, `2026-01-01T00:00:00.250+01:00`);
//! - `f64`: any number (CSV: anything Rust parses as `f64`, e.g. `1`, `1.5`, `1e3`, `NaN`);
//! - `i64`: integers only (`1.5` is rejected);
//! - `bool`: `true` / `false` (CSV: any case);
//! - `string`: text (JSON: strings only).
//!
//! A missing field, a JSON `null` and an empty CSV field are null. Extra JSON keys and extra
//! CSV header columns are ignored. A record whose field does not convert becomes a dead letter
//! with a reason such as `field "value": expected f64, got "abc"`.
//!
//! Bad input costs only itself (see [`crate::line_reader`]): a line longer than
//! [`DEFAULT_MAX_LINE_BYTES`] (1 MiB; [`FileSource::set_max_line_bytes`]) is one dead letter
//! holding a sample of it, skipped without being read into memory; a CSV quote that never
//! closes into a record of the header's width is one dead letter for its line, and reading
//! resumes at the next line.

use std::fs::File;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMillisecondBuilder,
};
use arrow::datatypes::SchemaRef;
use edgeflow_operators::schema::{EventSchema, FieldType};
use serde_json::Value;

use crate::error::{ConnectorError, Result};
use crate::line_reader::{
    CsvRead, CsvRecords, DEFAULT_MAX_LINE_BYTES, LineReader, sample_text, too_long_reason, trim_eol,
};
use crate::text::parse_timestamp_ms;

/// A file format, chosen from the file's extension or named in a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileFormat {
    /// Comma-separated values (`.csv`).
    Csv,
    /// One JSON object per line (`.jsonl`, `.ndjson`, `.json`).
    JsonLines,
    /// Apache Parquet (`.parquet`).
    Parquet,
}

impl FileFormat {
    /// Every format.
    pub const ALL: [FileFormat; 3] = [FileFormat::Csv, FileFormat::JsonLines, FileFormat::Parquet];

    /// The name used in pipeline files: `csv`, `jsonl` or `parquet`.
    pub fn name(self) -> &'static str {
        match self {
            FileFormat::Csv => "csv",
            FileFormat::JsonLines => "jsonl",
            FileFormat::Parquet => "parquet",
        }
    }

    /// Parses a format name.
    pub fn from_name(name: &str) -> Option<FileFormat> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The format a path's extension implies (case-insensitive), if any.
    pub fn from_path(path: &Path) -> Option<FileFormat> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Some(FileFormat::Csv),
            "jsonl" | "ndjson" | "json" => Some(FileFormat::JsonLines),
            "parquet" => Some(FileFormat::Parquet),
            _ => None,
        }
    }
}

/// A record a source could not turn into a row, with why and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The pipeline node that read it.
    pub node: String,
    /// Why it was rejected, e.g. `field "value": expected f64, got "abc"`.
    pub reason: String,
    /// The record as it was in the file (without its line terminator).
    pub raw: String,
    /// Where it was: `path:line` (line of the record's first character, from 1).
    pub location: String,
}

/// What a [`FileSource`] reads.
#[derive(Debug, Clone)]
pub struct FileSourceOptions {
    /// The file to read.
    pub path: PathBuf,
    /// [`FileFormat::Csv`] or [`FileFormat::JsonLines`].
    pub format: FileFormat,
    /// The schema of the rows produced.
    pub schema: EventSchema,
    /// CSV only: the first record names the columns, matched to schema fields by name
    /// (default true). Without a header, columns are matched by position.
    pub has_header: bool,
    /// Records read per batch (valid and rejected ones together), at least 1.
    pub batch_rows: usize,
}

impl FileSourceOptions {
    /// Options with the defaults: header on, 8192 records per batch.
    pub fn new(path: impl Into<PathBuf>, format: FileFormat, schema: EventSchema) -> Self {
        FileSourceOptions {
            path: path.into(),
            format,
            schema,
            has_header: true,
            batch_rows: 8192,
        }
    }
}

enum Reader {
    Csv {
        reader: CsvRecords<BufReader<File>>,
        record: csv::ByteRecord,
        /// For each schema field, its column in a record (None: not in the file).
        columns: Vec<Option<usize>>,
        /// How many fields every record must have.
        width: usize,
    },
    JsonLines {
        reader: LineReader<BufReader<File>>,
    },
}

/// A CSV or JSON-lines file read as batches of a schema; see the module docs.
pub struct FileSource {
    node: String,
    path: String,
    schema: EventSchema,
    arrow_schema: SchemaRef,
    batch_rows: usize,
    reader: Reader,
}

impl std::fmt::Debug for FileSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSource")
            .field("node", &self.node)
            .field("path", &self.path)
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

/// One converted field of a record, borrowing text from it.
enum Cell<'a> {
    Null,
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(&'a str),
}

/// A column being built.
enum ColumnBuilder {
    Ts(TimestampMillisecondBuilder),
    Str(StringBuilder),
    I64(Int64Builder),
    F64(Float64Builder),
    Bool(BooleanBuilder),
}

impl ColumnBuilder {
    fn new(ty: FieldType, rows: usize) -> Self {
        match ty {
            FieldType::TimestampMs => {
                ColumnBuilder::Ts(TimestampMillisecondBuilder::with_capacity(rows))
            }
            FieldType::String => ColumnBuilder::Str(StringBuilder::with_capacity(rows, rows * 8)),
            FieldType::I64 => ColumnBuilder::I64(Int64Builder::with_capacity(rows)),
            FieldType::F64 => ColumnBuilder::F64(Float64Builder::with_capacity(rows)),
            FieldType::Bool => ColumnBuilder::Bool(BooleanBuilder::with_capacity(rows)),
        }
    }

    /// Appends a cell already converted for this column's type.
    fn append(&mut self, cell: &Cell<'_>) {
        match (self, cell) {
            (ColumnBuilder::Ts(b), Cell::Int(v)) => b.append_value(*v),
            (ColumnBuilder::Str(b), Cell::Str(v)) => b.append_value(v),
            (ColumnBuilder::I64(b), Cell::Int(v)) => b.append_value(*v),
            (ColumnBuilder::F64(b), Cell::Float(v)) => b.append_value(*v),
            (ColumnBuilder::Bool(b), Cell::Bool(v)) => b.append_value(*v),
            // Null, or (impossible by construction of the converters) a mismatched cell.
            (ColumnBuilder::Ts(b), _) => b.append_null(),
            (ColumnBuilder::Str(b), _) => b.append_null(),
            (ColumnBuilder::I64(b), _) => b.append_null(),
            (ColumnBuilder::F64(b), _) => b.append_null(),
            (ColumnBuilder::Bool(b), _) => b.append_null(),
        }
    }

    fn finish(self) -> ArrayRef {
        match self {
            ColumnBuilder::Ts(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Str(mut b) => Arc::new(b.finish()),
            ColumnBuilder::I64(mut b) => Arc::new(b.finish()),
            ColumnBuilder::F64(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Bool(mut b) => Arc::new(b.finish()),
        }
    }
}

/// At most this many characters of a bad value are quoted in a reason.
const MAX_QUOTED: usize = 60;

fn quoted(text: &str) -> String {
    if text.chars().count() <= MAX_QUOTED {
        format!("{text:?}")
    } else {
        let cut: String = text.chars().take(MAX_QUOTED).collect();
        format!("{:?}...", cut)
    }
}

fn expected(name: &str, ty: FieldType, got: String) -> String {
    format!("field {name:?}: expected {ty}, got {got}")
}

/// Converts CSV text to a cell of type `ty`; empty text is null.
fn cell_from_text<'a>(name: &str, ty: FieldType, text: &'a str) -> Result<Cell<'a>, String> {
    if text.is_empty() {
        return Ok(Cell::Null);
    }
    let t = text.trim();
    let cell = match ty {
        FieldType::String => Some(Cell::Str(text)),
        FieldType::TimestampMs => parse_timestamp_ms(t).map(Cell::Int),
        FieldType::I64 => t.parse().ok().map(Cell::Int),
        FieldType::F64 => t.parse().ok().map(Cell::Float),
        FieldType::Bool => {
            if t.eq_ignore_ascii_case("true") {
                Some(Cell::Bool(true))
            } else if t.eq_ignore_ascii_case("false") {
                Some(Cell::Bool(false))
            } else {
                None
            }
        }
    };
    cell.ok_or_else(|| expected(name, ty, quoted(text)))
}

/// Converts a JSON value to a cell of type `ty`; `null` is null.
fn cell_from_json<'a>(name: &str, ty: FieldType, value: &'a Value) -> Result<Cell<'a>, String> {
    let cell = match (ty, value) {
        (_, Value::Null) => Some(Cell::Null),
        (FieldType::String, Value::String(s)) => Some(Cell::Str(s)),
        (FieldType::TimestampMs, Value::String(s)) => parse_timestamp_ms(s).map(Cell::Int),
        (FieldType::TimestampMs | FieldType::I64, Value::Number(n)) => n.as_i64().map(Cell::Int),
        (FieldType::F64, Value::Number(n)) => n.as_f64().map(Cell::Float),
        (FieldType::Bool, Value::Bool(b)) => Some(Cell::Bool(*b)),
        _ => None,
    };
    cell.ok_or_else(|| {
        let got = value.to_string();
        let got = if got.chars().count() > MAX_QUOTED {
            format!("{}...", got.chars().take(MAX_QUOTED).collect::<String>())
        } else {
            got
        };
        expected(name, ty, got)
    })
}

impl FileSource {
    /// Opens `opts.path` for the pipeline node `node`; for CSV with a header, reads the header.
    ///
    /// A missing file, a directory, a format other than CSV / JSON lines, `batch_rows == 0` or
    /// a header naming none of the schema's fields are user errors.
    pub fn open(node: &str, opts: FileSourceOptions) -> Result<Self> {
        let user = |m: String| ConnectorError::User(format!("node {node:?}: {m}"));
        if opts.batch_rows == 0 {
            return Err(user("batch_rows must be at least 1".into()));
        }
        let shown = opts.path.display().to_string();
        if opts.path.is_dir() {
            return Err(user(format!("{shown:?} is a directory, not a file")));
        }
        let file = match File::open(&opts.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(user(format!("file {shown:?} does not exist")));
            }
            Err(e) => return Err(ConnectorError::io("open", &opts.path, e)),
        };
        let buffered = BufReader::with_capacity(64 * 1024, file);
        let reader = match opts.format {
            FileFormat::Csv => {
                let mut reader = CsvRecords::new(buffered, DEFAULT_MAX_LINE_BYTES);
                let mut record = csv::ByteRecord::new();
                let fields = opts.schema.fields();
                let (columns, width) = if opts.has_header {
                    let header = reader
                        .next_record(None, &mut record)
                        .map_err(|e| ConnectorError::io("read", &opts.path, e))?;
                    match header {
                        None => (vec![None; fields.len()], 0),
                        Some(CsvRead::Rejected { reason, .. }) => {
                            return Err(user(format!("the header of {shown:?}: {reason}")));
                        }
                        Some(CsvRead::Record { .. }) => {
                            let header: Vec<String> = record
                                .iter()
                                .map(|h| {
                                    let h = String::from_utf8_lossy(h);
                                    h.trim_start_matches('\u{feff}').trim().to_string()
                                })
                                .collect();
                            let columns: Vec<Option<usize>> = fields
                                .iter()
                                .map(|(name, _)| header.iter().position(|h| h == name))
                                .collect();
                            if columns.iter().all(Option::is_none) {
                                return Err(user(format!(
                                    "the header of {shown:?} ({}) names none of the schema's fields ({})",
                                    header.join(", "),
                                    opts.schema.names().collect::<Vec<_>>().join(", ")
                                )));
                            }
                            (columns, header.len())
                        }
                    }
                } else {
                    ((0..fields.len()).map(Some).collect(), fields.len())
                };
                Reader::Csv {
                    reader,
                    record,
                    columns,
                    width,
                }
            }
            FileFormat::JsonLines => Reader::JsonLines {
                reader: LineReader::new(buffered, DEFAULT_MAX_LINE_BYTES),
            },
            FileFormat::Parquet => {
                return Err(user(
                    "the file source reads CSV and JSON lines, not parquet".into(),
                ));
            }
        };
        Ok(FileSource {
            node: node.to_string(),
            path: shown,
            arrow_schema: opts.schema.to_arrow(),
            schema: opts.schema,
            batch_rows: opts.batch_rows,
            reader,
        })
    }

    /// Sets the bound on a line (and on a CSV record spanning lines) for the records that
    /// follow, bytes; the default is [`DEFAULT_MAX_LINE_BYTES`] (1 MiB). A longer line is one
    /// dead letter and is skipped without being held in memory.
    pub fn set_max_line_bytes(&mut self, max: usize) {
        match &mut self.reader {
            Reader::Csv { reader, .. } => reader.set_max(max),
            Reader::JsonLines { reader } => reader.set_max(max),
        }
    }

    /// The Arrow schema of the batches produced.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.arrow_schema)
    }

    /// Next batch of valid rows plus the bad records met while reading it; `Ok(None)` at the
    /// end of the file. Reads up to `batch_rows` records, so a batch may have fewer rows (even
    /// none) when records were rejected. Errors are I/O errors only.
    pub fn next_batch(&mut self) -> Result<Option<(RecordBatch, Vec<DeadLetter>)>> {
        let fields = self.schema.fields();
        let mut builders: Vec<ColumnBuilder> = fields
            .iter()
            .map(|(_, ty)| ColumnBuilder::new(*ty, self.batch_rows))
            .collect();
        let mut letters = Vec::new();
        let mut rows = 0usize;
        let mut consumed = 0usize;
        let dead = |reason: String, raw: &[u8], line: u64| DeadLetter {
            node: self.node.clone(),
            reason,
            raw: String::from_utf8_lossy(raw).into_owned(),
            location: format!("{}:{line}", self.path),
        };
        let io_error = |e| ConnectorError::io("read", Path::new(&self.path), e);
        match &mut self.reader {
            Reader::Csv {
                reader,
                record,
                columns,
                width,
            } => {
                while consumed < self.batch_rows {
                    let Some(read) = reader.next_record(Some(*width), record).map_err(io_error)?
                    else {
                        break;
                    };
                    consumed += 1;
                    match read {
                        CsvRead::Record { line, raw } => {
                            match convert_csv(fields, columns, *width, record) {
                                Ok(converted) => {
                                    for (b, c) in builders.iter_mut().zip(&converted) {
                                        b.append(c);
                                    }
                                    rows += 1;
                                }
                                Err(reason) => letters.push(dead(reason, &raw, line)),
                            }
                        }
                        CsvRead::Rejected { line, reason, raw } => {
                            letters.push(dead(reason, raw.as_bytes(), line));
                        }
                    }
                }
            }
            Reader::JsonLines { reader } => {
                while consumed < self.batch_rows {
                    let Some(line) = reader.next_line().map_err(io_error)? else {
                        break;
                    };
                    if let Some(length) = line.too_long {
                        consumed += 1;
                        let reason = too_long_reason(length, reader.max());
                        letters.push(dead(
                            reason,
                            sample_text(&line.bytes).as_bytes(),
                            line.number,
                        ));
                        continue;
                    }
                    let text = trim_eol(&line.bytes);
                    if text.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    consumed += 1;
                    let parsed = serde_json::from_slice::<Value>(text)
                        .map_err(|e| format!("invalid JSON: {e}"));
                    match convert_json(fields, &parsed) {
                        Ok(converted) => {
                            for (b, c) in builders.iter_mut().zip(&converted) {
                                b.append(c);
                            }
                            rows += 1;
                        }
                        Err(reason) => letters.push(dead(reason, text, line.number)),
                    }
                }
            }
        }
        if consumed == 0 {
            return Ok(None);
        }
        let columns = builders.into_iter().map(ColumnBuilder::finish).collect();
        let batch = RecordBatch::try_new(Arc::clone(&self.arrow_schema), columns)?;
        debug_assert_eq!(batch.num_rows(), rows);
        Ok(Some((batch, letters)))
    }
}

/// Converts records that arrive one message at a time (e.g. Kafka records) into batches of a
/// schema, with the same conversions as a [`FileSource`]: a message holds one or more JSON
/// lines or CSV records (no header: columns by position), or one Arrow IPC stream whose
/// schema must equal the expected one.
pub struct RecordDecoder {
    format: RecordFormat,
    schema: EventSchema,
    arrow_schema: SchemaRef,
    builders: Vec<ColumnBuilder>,
    rows: usize,
    /// Decoded Arrow batches waiting for [`RecordDecoder::finish`].
    ready: Vec<RecordBatch>,
}

/// The payload format of a message read by a [`RecordDecoder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordFormat {
    /// One JSON object per line.
    JsonLines,
    /// CSV records without a header, fields in schema order.
    Csv,
    /// An Arrow IPC stream.
    Arrow,
}

impl RecordFormat {
    /// Every format.
    pub const ALL: [RecordFormat; 3] = [
        RecordFormat::JsonLines,
        RecordFormat::Csv,
        RecordFormat::Arrow,
    ];

    /// The name used in pipeline files: `jsonl`, `csv` or `arrow`.
    pub fn name(self) -> &'static str {
        match self {
            RecordFormat::JsonLines => "jsonl",
            RecordFormat::Csv => "csv",
            RecordFormat::Arrow => "arrow",
        }
    }

    /// Parses a format name.
    pub fn from_name(name: &str) -> Option<RecordFormat> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }
}

impl RecordDecoder {
    /// A decoder of `format` messages into rows of `schema`.
    pub fn new(format: RecordFormat, schema: EventSchema) -> Self {
        let builders = schema
            .fields()
            .iter()
            .map(|(_, ty)| ColumnBuilder::new(*ty, 1024))
            .collect();
        RecordDecoder {
            format,
            arrow_schema: schema.to_arrow(),
            schema,
            builders,
            rows: 0,
            ready: Vec::new(),
        }
    }

    /// Rows decoded since the last [`RecordDecoder::finish`].
    pub fn rows(&self) -> usize {
        self.rows + self.ready.iter().map(RecordBatch::num_rows).sum::<usize>()
    }

    /// Decodes one message; the `(reason, raw text)` of every record in it that was rejected.
    pub fn push(&mut self, payload: &[u8]) -> Vec<(String, String)> {
        let fields = self.schema.fields();
        let mut rejected = Vec::new();
        let lossy = |raw: &[u8]| String::from_utf8_lossy(raw).into_owned();
        match self.format {
            RecordFormat::JsonLines => {
                let mut lines = LineReader::new(payload, DEFAULT_MAX_LINE_BYTES);
                // Reading a byte slice cannot fail.
                while let Ok(Some(line)) = lines.next_line() {
                    if let Some(length) = line.too_long {
                        let reason = too_long_reason(length, DEFAULT_MAX_LINE_BYTES);
                        rejected.push((reason, sample_text(&line.bytes)));
                        continue;
                    }
                    let text = trim_eol(&line.bytes);
                    if text.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let parsed = serde_json::from_slice::<Value>(text)
                        .map_err(|e| format!("invalid JSON: {e}"));
                    match convert_json(fields, &parsed) {
                        Ok(cells) => append_row(&mut self.builders, &mut self.rows, &cells),
                        Err(reason) => rejected.push((reason, lossy(text))),
                    }
                }
            }
            RecordFormat::Csv => {
                let mut records = CsvRecords::new(payload, DEFAULT_MAX_LINE_BYTES);
                let columns: Vec<Option<usize>> = (0..fields.len()).map(Some).collect();
                let mut record = csv::ByteRecord::new();
                // Reading a byte slice cannot fail.
                while let Ok(Some(read)) = records.next_record(Some(fields.len()), &mut record) {
                    match read {
                        CsvRead::Record { raw, .. } => {
                            match convert_csv(fields, &columns, fields.len(), &record) {
                                Ok(cells) => append_row(&mut self.builders, &mut self.rows, &cells),
                                Err(reason) => rejected.push((reason, lossy(&raw))),
                            }
                        }
                        CsvRead::Rejected { reason, raw, .. } => rejected.push((reason, raw)),
                    }
                }
            }
            RecordFormat::Arrow => match self.decode_arrow(payload) {
                Ok(batches) => self.ready.extend(batches),
                Err(reason) => rejected.push((reason, format!("<{} bytes>", payload.len()))),
            },
        }
        rejected
    }

    fn decode_arrow(&self, payload: &[u8]) -> std::result::Result<Vec<RecordBatch>, String> {
        let reader = arrow::ipc::reader::StreamReader::try_new(payload, None)
            .map_err(|e| format!("not an Arrow IPC stream: {e}"))?;
        let expected = &self.arrow_schema;
        crate::frame::check_schema(&reader.schema(), expected)?;
        reader
            .map(|batch| {
                let batch = batch.map_err(|e| format!("corrupt Arrow IPC stream: {e}"))?;
                RecordBatch::try_new(Arc::clone(expected), batch.columns().to_vec())
                    .map_err(|e| format!("corrupt Arrow IPC stream: {e}"))
            })
            .collect()
    }

    /// The rows decoded so far as one batch, and a fresh start.
    pub fn finish(&mut self) -> Result<RecordBatch> {
        let builders = self
            .schema
            .fields()
            .iter()
            .map(|(_, ty)| ColumnBuilder::new(*ty, 1024))
            .collect();
        let columns = std::mem::replace(&mut self.builders, builders)
            .into_iter()
            .map(ColumnBuilder::finish)
            .collect();
        self.rows = 0;
        let mut batches = vec![RecordBatch::try_new(
            Arc::clone(&self.arrow_schema),
            columns,
        )?];
        batches.append(&mut self.ready);
        Ok(arrow::compute::concat_batches(
            &self.arrow_schema,
            &batches,
        )?)
    }
}

fn append_row(builders: &mut [ColumnBuilder], rows: &mut usize, cells: &[Cell<'_>]) {
    for (b, c) in builders.iter_mut().zip(cells) {
        b.append(c);
    }
    *rows += 1;
}

/// Converts one CSV record, or says why it is rejected.
fn convert_csv<'r>(
    fields: &[(String, FieldType)],
    columns: &[Option<usize>],
    width: usize,
    record: &'r csv::ByteRecord,
) -> Result<Vec<Cell<'r>>, String> {
    if record.len() != width {
        return Err(format!("expected {width} fields, got {}", record.len()));
    }
    fields
        .iter()
        .zip(columns)
        .map(
            |((name, ty), column)| match column.and_then(|c| record.get(c)) {
                None => Ok(Cell::Null),
                Some(bytes) => {
                    let text = std::str::from_utf8(bytes)
                        .map_err(|_| format!("field {name:?}: not valid UTF-8"))?;
                    cell_from_text(name, *ty, text)
                }
            },
        )
        .collect()
}

/// Parses one JSON line and converts its fields, or says why it is rejected.
fn convert_json<'v>(
    fields: &[(String, FieldType)],
    object: &'v Result<Value, String>,
) -> Result<Vec<Cell<'v>>, String> {
    let value = object.as_ref().map_err(Clone::clone)?;
    let Value::Object(object) = value else {
        return Err(format!(
            "expected a JSON object, got {}",
            quoted(&value.to_string())
        ));
    };
    fields
        .iter()
        .map(|(name, ty)| match object.get(name) {
            Some(v) => cell_from_json(name, *ty, v),
            None => Ok(Cell::Null),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, Int64Type, TimestampMillisecondType};

    fn schema() -> EventSchema {
        EventSchema::new(vec![
            ("ts".into(), FieldType::TimestampMs),
            ("device".into(), FieldType::String),
            ("value".into(), FieldType::F64),
            ("count".into(), FieldType::I64),
            ("ok".into(), FieldType::Bool),
        ])
    }

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn read_all(node: &str, opts: FileSourceOptions) -> (Vec<RecordBatch>, Vec<DeadLetter>) {
        let mut src = FileSource::open(node, opts).unwrap();
        let (mut batches, mut letters) = (Vec::new(), Vec::new());
        while let Some((b, l)) = src.next_batch().unwrap() {
            batches.push(b);
            letters.extend(l);
        }
        (batches, letters)
    }

    fn concat(batches: &[RecordBatch]) -> RecordBatch {
        arrow::compute::concat_batches(&schema().to_arrow(), batches).unwrap()
    }

    #[test]
    fn csv_good_and_bad_lines_mixed() {
        let dir = tempfile::tempdir().unwrap();
        // Header in another order than the schema, with an extra column.
        let text = "\
device,extra,ts,value,count,ok
d1,x,1767225600000,1.5,3,true
d2,x,2026-01-01T00:00:00.250+01:00,abc,3,true
d3,x,2026-01-01T00:00:01Z,2,1.5,FALSE

d4,x,not-a-time,2,1,true
d5,x,1767225600000,2,1
\"d6, \"\"quoted\"\"
two lines\",x,,,,
d7,x,1767225600000,1e3,-4,maybe
d8,x,1767225600000,7,8,false
";
        let path = write(&dir, "in.csv", text);
        let (batches, letters) = read_all(
            "src",
            FileSourceOptions::new(&path, FileFormat::Csv, schema()),
        );
        let b = concat(&batches);
        assert_eq!(b.num_rows(), 3);
        let device = b.column(1).as_string::<i32>();
        assert_eq!(device.value(0), "d1");
        assert_eq!(device.value(1), "d6, \"quoted\"\ntwo lines");
        assert_eq!(device.value(2), "d8");
        let ts = b.column(0).as_primitive::<TimestampMillisecondType>();
        assert_eq!(ts.value(0), 1_767_225_600_000);
        assert!(ts.is_null(1), "empty CSV field is null");
        assert_eq!(b.column(2).as_primitive::<Float64Type>().value(0), 1.5);
        assert_eq!(b.column(3).as_primitive::<Int64Type>().value(2), 8);
        assert!(!b.column(4).as_boolean().value(2));

        let p = path.display().to_string();
        let got: Vec<(&str, &str, String)> = letters
            .iter()
            .map(|l| (l.reason.as_str(), l.raw.as_str(), l.location.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    r#"field "value": expected f64, got "abc""#,
                    "d2,x,2026-01-01T00:00:00.250+01:00,abc,3,true",
                    format!("{p}:3")
                ),
                (
                    r#"field "count": expected i64, got "1.5""#,
                    "d3,x,2026-01-01T00:00:01Z,2,1.5,FALSE",
                    format!("{p}:4")
                ),
                (
                    r#"field "ts": expected timestamp_ms, got "not-a-time""#,
                    "d4,x,not-a-time,2,1,true",
                    format!("{p}:6")
                ),
                (
                    "expected 6 fields, got 5",
                    "d5,x,1767225600000,2,1",
                    format!("{p}:7")
                ),
                (
                    r#"field "ok": expected bool, got "maybe""#,
                    "d7,x,1767225600000,1e3,-4,maybe",
                    format!("{p}:10")
                ),
            ]
        );
        assert!(letters.iter().all(|l| l.node == "src"));
    }

    #[test]
    fn csv_without_header_matches_columns_by_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "in.csv", "5,a,1.0,2,true\r\n6,b,x,2,true\r\n");
        let mut opts = FileSourceOptions::new(&path, FileFormat::Csv, schema());
        opts.has_header = false;
        let (batches, letters) = read_all("n", opts);
        let b = concat(&batches);
        assert_eq!(b.num_rows(), 1);
        assert_eq!(
            b.column(0)
                .as_primitive::<TimestampMillisecondType>()
                .value(0),
            5
        );
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].raw, "6,b,x,2,true");
        assert_eq!(letters[0].location, format!("{}:2", path.display()));
    }

    #[test]
    fn json_lines_good_and_bad_lines_mixed() {
        let dir = tempfile::tempdir().unwrap();
        let text = r#"{"ts": 1767225600000, "device": "d1", "value": 1, "count": 2, "ok": true, "extra": [1]}
{"ts": "2026-01-01T00:00:00.250+01:00", "device": "d2"}
{"ts": 1767225600000, "device": "d3", "value": "abc"}

not json
[1, 2]
{"ts": 1, "count": 1.5}
{"ts": 1, "device": 7}
{"ts": 1.5}
{"ts": 1, "ok": "yes"}
{"ts": null, "device": "d4", "value": -2.5e-3, "count": -9223372036854775808, "ok": false}
"#;
        let path = write(&dir, "in.jsonl", text);
        let (batches, letters) = read_all(
            "j",
            FileSourceOptions::new(&path, FileFormat::JsonLines, schema()),
        );
        let b = concat(&batches);
        assert_eq!(b.num_rows(), 3);
        let ts = b.column(0).as_primitive::<TimestampMillisecondType>();
        assert_eq!(ts.value(1), 1_767_225_600_000 - 3_600_000 + 250);
        assert!(ts.is_null(2));
        assert!(b.column(2).is_null(1), "missing field is null");
        assert_eq!(b.column(2).as_primitive::<Float64Type>().value(0), 1.0);
        assert_eq!(b.column(2).as_primitive::<Float64Type>().value(2), -2.5e-3);
        assert_eq!(b.column(3).as_primitive::<Int64Type>().value(2), i64::MIN);
        let reasons: Vec<(&str, &str)> = letters
            .iter()
            .map(|l| {
                (
                    l.reason.as_str(),
                    &l.location[l.location.rfind(':').unwrap() + 1..],
                )
            })
            .collect();
        assert_eq!(reasons.len(), 7);
        assert_eq!(
            reasons[0],
            (r#"field "value": expected f64, got "abc""#, "3")
        );
        assert!(
            reasons[1].0.starts_with("invalid JSON: "),
            "{}",
            reasons[1].0
        );
        assert_eq!(reasons[1].1, "5");
        assert_eq!(reasons[2], ("expected a JSON object, got \"[1,2]\"", "6"));
        assert_eq!(reasons[3], (r#"field "count": expected i64, got 1.5"#, "7"));
        assert_eq!(
            reasons[4],
            (r#"field "device": expected string, got 7"#, "8")
        );
        assert_eq!(
            reasons[5],
            (r#"field "ts": expected timestamp_ms, got 1.5"#, "9")
        );
        assert_eq!(
            reasons[6],
            (r#"field "ok": expected bool, got "yes""#, "10")
        );
        assert_eq!(letters[1].raw, "not json");
    }

    #[test]
    fn batches_are_bounded_and_a_batch_of_only_bad_lines_is_still_returned() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::new();
        for i in 0..10 {
            text.push_str(&format!("{{\"ts\": {i}}}\n"));
        }
        text.push_str("bad\nbad\nbad\n");
        let path = write(&dir, "in.ndjson", &text);
        let mut opts = FileSourceOptions::new(&path, FileFormat::JsonLines, schema());
        opts.batch_rows = 4;
        let mut src = FileSource::open("n", opts).unwrap();
        let mut shapes = Vec::new();
        while let Some((b, l)) = src.next_batch().unwrap() {
            shapes.push((b.num_rows(), l.len()));
        }
        assert_eq!(shapes, vec![(4, 0), (4, 0), (2, 2), (0, 1)]);
        assert!(src.next_batch().unwrap().is_none());
    }

    #[test]
    fn bad_paths_and_options_are_user_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing =
            FileSourceOptions::new(dir.path().join("nope.csv"), FileFormat::Csv, schema());
        let e = FileSource::open("n", missing).unwrap_err();
        assert!(e.is_user_error(), "{e}");
        assert!(e.to_string().contains("does not exist"), "{e}");
        let dir_opts = FileSourceOptions::new(dir.path(), FileFormat::Csv, schema());
        assert!(FileSource::open("n", dir_opts).unwrap_err().is_user_error());
        let path = write(&dir, "h.csv", "a,b\n1,2\n");
        let e = FileSource::open(
            "n",
            FileSourceOptions::new(&path, FileFormat::Csv, schema()),
        )
        .unwrap_err();
        assert!(
            e.is_user_error() && e.to_string().contains("names none"),
            "{e}"
        );
        let mut zero = FileSourceOptions::new(&path, FileFormat::JsonLines, schema());
        zero.batch_rows = 0;
        assert!(FileSource::open("n", zero).unwrap_err().is_user_error());
    }

    #[test]
    fn formats_come_from_extensions_and_names() {
        assert_eq!(
            FileFormat::from_path(Path::new("a/b.CSV")),
            Some(FileFormat::Csv)
        );
        assert_eq!(
            FileFormat::from_path(Path::new("b.ndjson")),
            Some(FileFormat::JsonLines)
        );
        assert_eq!(
            FileFormat::from_path(Path::new("b.parquet")),
            Some(FileFormat::Parquet)
        );
        assert_eq!(FileFormat::from_path(Path::new("b.txt")), None);
        for f in FileFormat::ALL {
            assert_eq!(FileFormat::from_name(f.name()), Some(f));
        }
    }

    #[test]
    fn record_decoder_reads_messages_of_each_format_and_rejects_bad_records() {
        let mut json = RecordDecoder::new(RecordFormat::JsonLines, schema());
        let bad = json.push(
            b"{\"ts\": 1000, \"device\": \"d1\", \"value\": 1.5, \"count\": 2, \"ok\": true}\n\n{\"ts\": 2000, \"value\": \"x\"}\n",
        );
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert_eq!(bad[0].0, "field \"value\": expected f64, got \"x\"");
        assert_eq!(json.push(b"not json").len(), 1);
        assert_eq!(json.rows(), 1);
        let batch = json.finish().unwrap();
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(batch.column(1).as_string::<i32>().value(0), "d1");
        assert_eq!(json.rows(), 0);

        let mut csv = RecordDecoder::new(RecordFormat::Csv, schema());
        let bad = csv.push(b"1000,d1,2.5,3,false\n2000,d2,abc,1,true\n3000,d3,1,1\n");
        assert_eq!(
            bad.iter()
                .map(|(r, raw)| (r.as_str(), raw.as_str()))
                .collect::<Vec<_>>(),
            vec![
                (
                    "field \"value\": expected f64, got \"abc\"",
                    "2000,d2,abc,1,true"
                ),
                ("expected 5 fields, got 4", "3000,d3,1,1"),
            ]
        );
        let batch = csv.finish().unwrap();
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(batch.column(2).as_primitive::<Float64Type>().value(0), 2.5);

        // Arrow: a batch of the right schema is taken whole; another schema is rejected.
        let mut arrow_decoder = RecordDecoder::new(RecordFormat::Arrow, schema());
        let mut from_csv = RecordDecoder::new(RecordFormat::Csv, schema());
        from_csv.push(b"1000,a,1,1,true\n2000,b,2,2,false\n");
        let good = from_csv.finish().unwrap();
        let ipc = |batch: &RecordBatch| {
            let mut out = Vec::new();
            let mut w =
                arrow::ipc::writer::StreamWriter::try_new(&mut out, &batch.schema()).unwrap();
            w.write(batch).unwrap();
            w.finish().unwrap();
            drop(w);
            out
        };
        assert!(arrow_decoder.push(&ipc(&good)).is_empty());
        let other = good.project(&[0, 1]).unwrap();
        let bad = arrow_decoder.push(&ipc(&other));
        assert!(
            bad[0].0.starts_with("schema mismatch: expected ("),
            "{bad:?}"
        );
        assert!(arrow_decoder.push(b"garbage").len() == 1);
        assert_eq!(arrow_decoder.finish().unwrap(), good);
    }
}
