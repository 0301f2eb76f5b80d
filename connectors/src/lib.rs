//! edgeflow-connectors: every source and sink of edgeflow, i.e. all of its I/O.
//!
//! Sources produce Arrow [`RecordBatch`](arrow::record_batch::RecordBatch)es of an
//! [`EventSchema`](edgeflow_operators::schema::EventSchema): the synthetic sensor fleet
//! ([`generator`]) and CSV / JSON-lines files ([`file_source`], bad lines become
//! [`DeadLetter`]s), and Parquet files for training ([`parquet_file`]). Sinks write batches to files ([`file_sink`]: JSON lines, CSV, Parquet),
//! dead letters to a JSON-lines file, and format batches for a terminal. [`frame`]s carry
//! batches between the edge and cloud halves: through the embedded log ([`embedded_log`]) in
//! one process, or through Kafka ([`kafka`]) with the edge's store-and-forward [`spool`] in
//! front; [`identity`] signs frames at the edge and verifies them in the cloud. Nothing here knows about timely or the plan: the engine's runtime drives these types.

pub mod embedded_log;
pub mod error;
pub mod file_sink;
pub mod file_source;
pub mod frame;
pub mod generator;
pub mod identity;
pub mod input_log;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod line_reader;
pub mod model_file;
pub mod parquet_file;
pub mod record;
pub mod spool;
mod text;

pub use error::ConnectorError;
pub use file_sink::{DeadLetterWriter, FileSink, TextFormat, format_batch};
pub use file_source::{
    DeadLetter, FileFormat, FileSource, FileSourceOptions, RecordDecoder, RecordFormat,
};
pub use generator::{AnomalyShape, Generator, GeneratorOptions};
pub use text::rfc3339_ms;
