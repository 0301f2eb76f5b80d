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
        out: arrow::csv::Writer<BufWriter<File>>,
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
                out: arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .with_timestamp_format(CSV_TIMESTAMP_FORMAT.to_string())
                    .build(BufWriter::with_capacity(256 * 1024, file)),
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
        if batch.schema().fields() != self.schema.fields() {
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
            SinkWriter::Csv { out, .. } => {
                // The header is written with the first batch; flush what arrow has written.
                let inner: &mut BufWriter<File> = out.get_mut();
                inner
                    .flush()
                    .map_err(|e| ConnectorError::io("write", &self.path, e))
            }
            SinkWriter::Parquet(w) => Ok(w.flush()?),
        }
    }

    /// Flushes everything and closes the file; for Parquet, writes the footer. A CSV sink that
    /// received no batch still writes its header.
    pub fn finish(self) -> Result<()> {
        let path = self.path;
        match self.writer {
            SinkWriter::JsonLines { mut out, .. } => {
                out.flush().map_err(|e| ConnectorError::io("write", &path, e))
            }
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
