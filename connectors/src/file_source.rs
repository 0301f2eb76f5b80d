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

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
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

/// Keeps a copy of the bytes a CSV reader pulls, so a rejected record's raw text is available.
struct Tee<R> {
    inner: R,
    kept: Vec<u8>,
    /// File offset of `kept[0]`.
    kept_from: u64,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.kept.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

impl<R> Tee<R> {
    /// The bytes in `[from, to)` of the file (they must still be kept).
    fn span(&self, from: u64, to: u64) -> &[u8] {
        let lo = (from.saturating_sub(self.kept_from) as usize).min(self.kept.len());
        let hi = (to.saturating_sub(self.kept_from) as usize).clamp(lo, self.kept.len());
        &self.kept[lo..hi]
    }

    /// Forgets the bytes before `to`.
    fn release(&mut self, to: u64) {
        let n = (to.saturating_sub(self.kept_from) as usize).min(self.kept.len());
        self.kept.drain(..n);
        self.kept_from += n as u64;
    }
}

enum Reader {
    Csv {
        reader: csv::Reader<Tee<BufReader<File>>>,
        record: csv::ByteRecord,
        /// For each schema field, its column in a record (None: not in the file).
        columns: Vec<Option<usize>>,
        /// How many fields every record must have.
        width: usize,
    },
    JsonLines {
        reader: BufReader<File>,
        line: Vec<u8>,
        line_no: u64,
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

/// Strips a trailing `\n` or `\r\n`.
fn trim_eol(raw: &[u8]) -> &[u8] {
    let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
    raw.strip_suffix(b"\r").unwrap_or(raw)
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
                let tee = Tee {
                    inner: buffered,
                    kept: Vec::new(),
                    kept_from: 0,
                };
                let mut reader = csv::ReaderBuilder::new()
                    .has_headers(false)
                    .flexible(true)
                    .from_reader(tee);
                let mut record = csv::ByteRecord::new();
                let fields = opts.schema.fields();
                let (columns, width) = if opts.has_header {
                    let found = reader
                        .read_byte_record(&mut record)
                        .map_err(|e| csv_error(&opts.path, e))?;
                    if !found {
                        (vec![None; fields.len()], 0)
                    } else {
                        let header: Vec<String> = record
                            .iter()
                            .map(|h| String::from_utf8_lossy(h).trim().to_string())
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
                } else {
                    ((0..fields.len()).map(Some).collect(), fields.len())
                };
                let end = reader.position().byte();
                reader.get_mut().release(end);
                Reader::Csv {
                    reader,
                    record,
                    columns,
                    width,
                }
            }
            FileFormat::JsonLines => Reader::JsonLines {
                reader: buffered,
                line: Vec::new(),
                line_no: 0,
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
        match &mut self.reader {
            Reader::Csv {
                reader,
                record,
                columns,
                width,
            } => {
                while consumed < self.batch_rows {
                    let found = reader
                        .read_byte_record(record)
                        .map_err(|e| csv_error(Path::new(&self.path), e))?;
                    if !found {
                        break;
                    }
                    consumed += 1;
                    let (start, line) = record
                        .position()
                        .map_or((0, 0), |p| (p.byte(), p.line()));
                    let end = reader.position().byte();
                    let result = convert_csv(fields, columns, *width, record);
                    match result {
                        Ok(converted) => {
                            for (b, c) in builders.iter_mut().zip(&converted) {
                                b.append(c);
                            }
                            rows += 1;
                        }
                        Err(reason) => {
                            let raw = reader.get_ref().span(start, end);
                            // Blank lines skipped before the record belong to its span.
                            let blank = raw.iter().take_while(|b| **b == b'\n' || **b == b'\r');
                            let newlines = blank.clone().filter(|b| **b == b'\n').count();
                            let skip = blank.count();
                            let raw = trim_eol(&raw[skip..]);
                            letters.push(dead(reason, raw, line + newlines as u64));
                        }
                    }
                    reader.get_mut().release(end);
                }
            }
            Reader::JsonLines {
                reader,
                line,
                line_no,
            } => {
                while consumed < self.batch_rows {
                    line.clear();
                    let n = reader
                        .read_until(b'\n', line)
                        .map_err(|e| ConnectorError::io("read", Path::new(&self.path), e))?;
                    if n == 0 {
                        break;
                    }
                    *line_no += 1;
                    let text = trim_eol(line);
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
                        Err(reason) => letters.push(dead(reason, text, *line_no)),
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

fn csv_error(path: &Path, e: csv::Error) -> ConnectorError {
    match e.into_kind() {
        csv::ErrorKind::Io(e) => ConnectorError::io("read", path, e),
        other => ConnectorError::Internal(format!("unexpected CSV reader error: {other:?}")),
    }
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
        .map(|((name, ty), column)| match column.and_then(|c| record.get(c)) {
            None => Ok(Cell::Null),
            Some(bytes) => {
                let text = std::str::from_utf8(bytes)
                    .map_err(|_| format!("field {name:?}: not valid UTF-8"))?;
                cell_from_text(name, *ty, text)
            }
        })
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
