//! SQL over the materialized tables: DataFusion for planning and execution, plus the
//! output formats the HTTP endpoint and the CLI speak (JSON rows, CSV, Arrow IPC, text).
//!
//! Every query runs against a fresh snapshot of each table, taken when the query starts,
//! next to the system tables (`edgeflow_nodes`, `edgeflow_edges`, `edgeflow_topics`,
//! `edgeflow_tables`; see [`system`]).

pub mod catalog;
pub mod http;
pub mod pgwire;
pub mod system;

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;

use crate::error::EngineError;
pub use catalog::{Catalog, MaterializedTable, TableSnapshot};
pub use system::SystemState;

/// The result of one query.
#[derive(Debug, Clone)]
pub struct QueryResult {
    /// The result's schema (present even when there are no rows).
    pub schema: SchemaRef,
    /// The rows.
    pub batches: Vec<RecordBatch>,
}

impl QueryResult {
    /// Number of result rows.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// Runs SQL against a [`Catalog`] and the system tables.
#[derive(Debug, Clone)]
pub struct QueryEngine {
    catalog: Arc<Catalog>,
    system: Option<Arc<SystemState>>,
}

impl QueryEngine {
    /// An engine over these tables (the node, edge and topic system tables stay empty until
    /// [`QueryEngine::with_system`] gives it a running pipeline's state).
    pub fn new(catalog: Arc<Catalog>) -> Self {
        QueryEngine {
            catalog,
            system: None,
        }
    }

    /// The same engine, with the system tables of a running pipeline.
    pub fn with_system(self, system: Arc<SystemState>) -> Self {
        QueryEngine {
            system: Some(system),
            ..self
        }
    }

    /// The tables it queries.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Plans and runs one SQL statement. Bad SQL is an [`EngineError::Sql`] whose message
    /// is DataFusion's, meant for the user.
    ///
    /// Each table is read from one snapshot, taken before planning; `edgeflow_tables` is
    /// built from those same snapshots, so its `frontier` is the one the statement read.
    pub async fn query(&self, sql: &str) -> Result<QueryResult, EngineError> {
        let ctx = SessionContext::new();
        let mut reads = Vec::new();
        for table in self.catalog.tables() {
            let snapshot = table.snapshot();
            reads.push(system::TableRead {
                name: table.name().to_string(),
                rows: snapshot.batches.iter().map(RecordBatch::num_rows).sum(),
                frontier: snapshot.frontier,
            });
            let partitions = partition(snapshot.batches, ctx.state().config().target_partitions());
            register(&ctx, table.name(), table.schema(), partitions)?;
        }
        for (name, batch) in system::system_tables(self.system.as_deref(), &reads) {
            register(&ctx, name, batch.schema(), vec![vec![batch]])?;
        }
        let frame = ctx.sql(sql).await.map_err(sql_error)?;
        let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
        let batches = frame.collect().await.map_err(sql_error)?;
        Ok(QueryResult { schema, batches })
    }

    /// A session with every table, the user's and the system's, registered empty: for
    /// planning a statement (its result columns) without reading anything.
    pub fn planning_session(&self) -> Result<SessionContext, EngineError> {
        let ctx = SessionContext::new();
        for table in self.catalog.tables() {
            register(&ctx, table.name(), table.schema(), vec![Vec::new()])?;
        }
        for (name, schema) in system::system_schemas() {
            register(&ctx, name, schema, vec![Vec::new()])?;
        }
        Ok(ctx)
    }
}

/// Tables smaller than this are scanned as one partition.
const PARTITION_MIN_ROWS: usize = 1 << 16;

/// Cuts a snapshot into up to `partitions` partitions of about equal rows (zero-copy slices
/// of its batches), so DataFusion scans a large table on every core. A compacted table is
/// often one big batch, which a single partition would scan on one thread.
fn partition(batches: Vec<RecordBatch>, partitions: usize) -> Vec<Vec<RecordBatch>> {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if partitions <= 1 || rows < PARTITION_MIN_ROWS {
        return vec![batches];
    }
    let per_partition = rows.div_ceil(partitions);
    let mut out = vec![Vec::new()];
    let mut filled = 0;
    for batch in batches {
        let mut offset = 0;
        while offset < batch.num_rows() {
            if filled == per_partition {
                out.push(Vec::new());
                filled = 0;
            }
            let take = (batch.num_rows() - offset).min(per_partition - filled);
            if let Some(current) = out.last_mut() {
                current.push(batch.slice(offset, take));
            }
            offset += take;
            filled += take;
        }
    }
    out
}

/// Registers `partitions` (each a list of batches) as the table `name` of a session.
fn register(
    ctx: &SessionContext,
    name: &str,
    schema: SchemaRef,
    partitions: Vec<Vec<RecordBatch>>,
) -> Result<(), EngineError> {
    let provider = MemTable::try_new(schema, partitions)
        .map_err(|e| EngineError::Internal(format!("table {name}: {e}")))?;
    ctx.register_table(name, Arc::new(provider))
        .map(|_| ())
        .map_err(|e| EngineError::Internal(format!("table {name}: {e}")))
}

fn sql_error(e: datafusion::error::DataFusionError) -> EngineError {
    EngineError::Sql(e.strip_backtrace())
}

/// Output formats of a query result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultFormat {
    /// A JSON array of row objects.
    Json,
    /// CSV with a header line.
    Csv,
    /// An Arrow IPC stream (what `edgeflow sql` asks for).
    ArrowIpc,
    /// An aligned text table.
    Table,
}

impl ResultFormat {
    /// The HTTP content type.
    pub fn content_type(self) -> &'static str {
        match self {
            ResultFormat::Json => "application/json",
            ResultFormat::Csv => "text/csv",
            ResultFormat::ArrowIpc => "application/vnd.apache.arrow.stream",
            ResultFormat::Table => "text/plain; charset=utf-8",
        }
    }

    /// The format a request's `Accept` header asks for (JSON when it names none we know).
    pub fn from_accept(accept: &str) -> ResultFormat {
        let accept = accept.to_ascii_lowercase();
        if accept.contains("text/csv") {
            ResultFormat::Csv
        } else if accept.contains("arrow") {
            ResultFormat::ArrowIpc
        } else if accept.contains("text/plain") {
            ResultFormat::Table
        } else {
            ResultFormat::Json
        }
    }
}

/// Encodes a result in a format.
pub fn encode_result(result: &QueryResult, format: ResultFormat) -> Result<Vec<u8>, EngineError> {
    let internal =
        |e: arrow::error::ArrowError| EngineError::Internal(format!("encoding result: {e}"));
    let mut out = Vec::new();
    match format {
        ResultFormat::Json => {
            let mut writer = arrow::json::ArrayWriter::new(&mut out);
            for batch in &result.batches {
                writer.write(batch).map_err(internal)?;
            }
            writer.finish().map_err(internal)?;
            drop(writer);
            if out.is_empty() {
                out.extend_from_slice(b"[]");
            }
            out.push(b'\n');
        }
        ResultFormat::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut out);
            if result.batches.is_empty() {
                let header = result
                    .schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(",");
                drop(writer);
                out.extend_from_slice(header.as_bytes());
                out.push(b'\n');
            } else {
                for batch in &result.batches {
                    writer.write(batch).map_err(internal)?;
                }
            }
        }
        ResultFormat::ArrowIpc => {
            let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut out, &result.schema)
                .map_err(internal)?;
            for batch in &result.batches {
                writer.write(batch).map_err(internal)?;
            }
            writer.finish().map_err(internal)?;
        }
        ResultFormat::Table => {
            out.extend_from_slice(render_table(result).as_bytes());
        }
    }
    Ok(out)
}

/// An aligned text table of a result, with a row count line.
pub fn render_table(result: &QueryResult) -> String {
    let rows = result.num_rows();
    let table = if result.batches.is_empty() {
        let empty = RecordBatch::new_empty(result.schema.clone());
        arrow::util::pretty::pretty_format_batches(&[empty])
    } else {
        arrow::util::pretty::pretty_format_batches(&result.batches)
    };
    let table = table
        .map(|t| t.to_string())
        .unwrap_or_else(|e| format!("(cannot display: {e})"));
    format!(
        "{table}\n({rows} row{})\n",
        if rows == 1 { "" } else { "s" }
    )
}

/// Decodes an Arrow IPC stream (as sent for [`ResultFormat::ArrowIpc`]).
pub fn decode_ipc_result(bytes: &[u8]) -> Result<QueryResult, EngineError> {
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
        .map_err(|e| EngineError::Internal(format!("decoding result: {e}")))?;
    let schema = reader.schema();
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| EngineError::Internal(format!("decoding result: {e}")))?;
    Ok(QueryResult { schema, batches })
}

#[cfg(test)]
mod tests {
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(values: std::ops::Range<i64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(values))]).unwrap()
    }

    #[test]
    fn large_snapshots_are_cut_into_equal_partitions_in_row_order() {
        let rows = 3 * PARTITION_MIN_ROWS as i64 + 7;
        let batches = vec![batch(0..100), batch(100..rows - 5), batch(rows - 5..rows)];
        let parts = partition(batches, 4);
        assert_eq!(parts.len(), 4);
        let sizes: Vec<usize> = parts
            .iter()
            .map(|p| p.iter().map(RecordBatch::num_rows).sum())
            .collect();
        let per = (rows as usize).div_ceil(4);
        assert_eq!(sizes, [per, per, per, rows as usize - 3 * per]);
        let values: Vec<i64> = parts
            .iter()
            .flatten()
            .flat_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect();
        assert_eq!(values, (0..rows).collect::<Vec<_>>());
        assert_eq!(
            partition(vec![batch(0..10)], 4).len(),
            1,
            "small: one partition"
        );
    }
}
