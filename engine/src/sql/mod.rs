//! SQL over the materialized tables: DataFusion for planning and execution, plus the
//! output formats the HTTP endpoint and the CLI speak (JSON rows, CSV, Arrow IPC, text).
//!
//! Every query runs against a fresh snapshot of each table, taken when the query starts,
//! next to the system tables (`edgeflow_nodes`, `edgeflow_edges`, `edgeflow_topics`,
//! `edgeflow_tables`; see [`system`]).

pub mod catalog;
pub mod guard;
pub mod http;
pub mod limits;
pub mod pgwire;
mod runtime;
pub mod system;

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParserBuilder, Statement as DfStatement};
use datafusion::sql::sqlparser::parser::ParserError;
use futures::StreamExt;

use crate::error::EngineError;
pub use catalog::{Catalog, MaterializedTable, TableSnapshot};
pub use limits::{QueryLimits, Refusal, ServerLimits, SqlLimitArgs};
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

/// A statement planned without running it: its result columns and its parameters (`$1`).
#[derive(Debug, Clone)]
pub struct Described {
    /// The result's schema.
    pub schema: SchemaRef,
    /// The names of its parameters, sorted (`$1`, `$2`).
    pub parameters: Vec<String>,
}

/// Runs SQL against a [`Catalog`] and the system tables.
///
/// SQL here is read-only: only queries run (see [`guard::read_only`]), on a thread pool of
/// its own whose threads have stacks deep enough for any statement [`guard`] lets through,
/// each statement within its [`QueryLimits`]. A caller that stops waiting (a client that
/// went away) cancels its statement and frees what it held.
#[derive(Debug, Clone)]
pub struct QueryEngine {
    catalog: Arc<Catalog>,
    system: Option<Arc<SystemState>>,
    limits: QueryLimits,
    runtime: Arc<runtime::SqlRuntime>,
}

impl QueryEngine {
    /// An engine over these tables, with the default [`QueryLimits`] (the node, edge and
    /// topic system tables stay empty until [`QueryEngine::with_system`] gives it a running
    /// pipeline's state).
    pub fn new(catalog: Arc<Catalog>) -> Self {
        QueryEngine {
            catalog,
            system: None,
            limits: QueryLimits::default(),
            runtime: Arc::new(runtime::SqlRuntime::default()),
        }
    }

    /// The same engine, with the system tables of a running pipeline.
    pub fn with_system(self, system: Arc<SystemState>) -> Self {
        QueryEngine {
            system: Some(system),
            ..self
        }
    }

    /// The same engine, with these bounds on every statement.
    pub fn with_limits(self, limits: QueryLimits) -> Self {
        QueryEngine { limits, ..self }
    }

    /// The tables it queries.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The bounds of every statement.
    pub fn limits(&self) -> QueryLimits {
        self.limits
    }

    /// Plans and runs one SQL statement. Bad SQL is an [`EngineError::Sql`] whose message
    /// is DataFusion's, meant for the user; a statement that is not a query, nests too
    /// deep, needs too much memory or runs too long is an [`EngineError::SqlRefused`].
    ///
    /// Each table is read from one snapshot, taken before planning; `edgeflow_tables` is
    /// built from those same snapshots, so its `frontier` is the one the statement read.
    pub async fn query(&self, sql: &str) -> Result<QueryResult, EngineError> {
        let mut results = self.query_script(sql, Some(1)).await;
        match results.pop() {
            Some(result) => result,
            None => Err(EngineError::Sql(
                "the text holds no SQL statement".to_owned(),
            )),
        }
    }

    /// Runs each statement of `sql` (separated by `;`) in order, each against fresh
    /// snapshots, as `psql` does: one result per statement, and the first error ends the
    /// text (it is the last element). `at_most`: refuse a text of more statements.
    pub async fn query_script(
        &self,
        sql: &str,
        at_most: Option<usize>,
    ) -> Vec<Result<QueryResult, EngineError>> {
        let engine = self.clone();
        let sql = sql.to_owned();
        let ran = self
            .runtime
            .run(async move { engine.run_script(&sql, at_most).await })
            .await;
        match ran {
            Ok(results) => results,
            Err(e) => vec![Err(e)],
        }
    }

    /// Plans one statement against empty tables, without reading anything: its result
    /// columns and parameters (what the Postgres protocol's Parse needs).
    pub async fn describe(&self, sql: &str) -> Result<Described, EngineError> {
        let engine = self.clone();
        let sql = sql.to_owned();
        self.runtime
            .run(async move {
                let statement = engine.single_statement(&sql)?;
                let ctx = engine.planning_session()?;
                let plan =
                    runtime::within(engine.limits.timeout, engine.plan(&ctx, statement)).await?;
                let mut parameters: Vec<String> = plan
                    .get_parameter_names()
                    .map_err(sql_error)?
                    .into_iter()
                    .collect();
                parameters.sort();
                Ok(Described {
                    schema: Arc::new(plan.schema().as_arrow().clone()),
                    parameters,
                })
            })
            .await?
    }

    /// The statements of `sql`, after the depth bound (on the text) and the read-only
    /// check (on each statement).
    fn statements(&self, sql: &str) -> Result<Vec<DfStatement>, EngineError> {
        let max_depth = self.limits.max_depth;
        if guard::nesting_estimate(sql, max_depth).is_none() {
            return Err(too_deep(max_depth));
        }
        let statements = DFParserBuilder::new(sql)
            .build()
            .and_then(|mut parser| parser.parse_statements())
            .map_err(|e| match e.find_root() {
                DataFusionError::SQL(cause, _)
                    if matches!(**cause, ParserError::RecursionLimitExceeded) =>
                {
                    too_deep(max_depth)
                }
                _ => sql_error(e),
            })?;
        Ok(statements.into_iter().collect())
    }

    fn single_statement(&self, sql: &str) -> Result<DfStatement, EngineError> {
        let mut statements = self.statements(sql)?;
        match statements.len() {
            1 => Ok(statements.remove(0)),
            0 => Err(EngineError::Sql(
                "the text holds no SQL statement".to_owned(),
            )),
            n => Err(EngineError::Sql(format!(
                "the text holds {n} statements; send one at a time"
            ))),
        }
    }

    async fn run_script(
        &self,
        sql: &str,
        at_most: Option<usize>,
    ) -> Vec<Result<QueryResult, EngineError>> {
        let statements = match self.statements(sql) {
            Ok(statements) => statements,
            Err(e) => return vec![Err(e)],
        };
        if statements.is_empty() {
            return vec![Err(EngineError::Sql(
                "the text holds no SQL statement".to_owned(),
            ))];
        }
        if let Some(at_most) = at_most
            && statements.len() > at_most
        {
            return vec![Err(EngineError::Sql(format!(
                "the text holds {} statements; send one at a time",
                statements.len()
            )))];
        }
        let mut results = Vec::with_capacity(statements.len());
        for statement in statements {
            let result = runtime::within(self.limits.timeout, self.run(statement)).await;
            let failed = result.is_err();
            results.push(result);
            if failed {
                break;
            }
        }
        results
    }

    /// Runs one checked statement against fresh snapshots, within the memory limit.
    async fn run(&self, statement: DfStatement) -> Result<QueryResult, EngineError> {
        let ctx = self.session()?;
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
        let plan = self.plan(&ctx, statement).await?;
        let frame = ctx
            .execute_logical_plan(plan)
            .await
            .map_err(|e| self.execution_error(e))?;
        let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
        let mut stream = frame
            .execute_stream()
            .await
            .map_err(|e| self.execution_error(e))?;
        // The collected result counts against the statement's memory too.
        let result_memory =
            MemoryConsumer::new("query result").register(&ctx.runtime_env().memory_pool);
        let mut batches = Vec::new();
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| self.execution_error(e))?;
            result_memory
                .try_grow(slice_memory_size(&batch))
                .map_err(|_| self.result_too_large())?;
            batches.push(batch);
        }
        Ok(QueryResult { schema, batches })
    }

    /// A logical plan of a statement that passed [`QueryEngine::statements`]; the plan is
    /// checked again (`SELECT ... INTO` is a query that creates a table).
    async fn plan(
        &self,
        ctx: &SessionContext,
        statement: DfStatement,
    ) -> Result<LogicalPlan, EngineError> {
        guard::read_only(&statement).map_err(|words| read_only_refusal(&words))?;
        let plan = ctx
            .state()
            .statement_to_plan(statement)
            .await
            .map_err(sql_error)?;
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
            .verify_plan(&plan)
            .map_err(|e| match e {
                DataFusionError::Plan(message) => {
                    read_only_refusal(&format!("a statement that writes ({message})"))
                }
                other => sql_error(other),
            })?;
        Ok(plan)
    }

    /// A session whose memory pool is this statement's limit, with no spilling to disk.
    fn session(&self) -> Result<SessionContext, EngineError> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(self.limits.memory_bytes, 1.0)
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc()
            .map_err(|e| EngineError::Internal(format!("a query session: {e}")))?;
        Ok(SessionContext::new_with_config_rt(
            SessionConfig::new(),
            runtime,
        ))
    }

    /// A session with every table, the user's and the system's, registered empty: for
    /// planning a statement (its result columns) without reading anything.
    fn planning_session(&self) -> Result<SessionContext, EngineError> {
        let ctx = self.session()?;
        for table in self.catalog.tables() {
            register(&ctx, table.name(), table.schema(), vec![Vec::new()])?;
        }
        for (name, schema) in system::system_schemas() {
            register(&ctx, name, schema, vec![Vec::new()])?;
        }
        Ok(ctx)
    }

    /// The error of a running statement: its memory limit, or DataFusion's message.
    fn execution_error(&self, e: DataFusionError) -> EngineError {
        if matches!(e.find_root(), DataFusionError::ResourcesExhausted(_)) {
            EngineError::SqlRefused {
                refusal: Refusal::OutOfMemory,
                message: format!(
                    "the statement needs more than its memory limit of {} \
                     (--sql-memory-limit, EDGEFLOW_SQL_MEMORY_LIMIT): {}",
                    limits::human_bytes(self.limits.memory_bytes),
                    e.find_root().strip_backtrace()
                ),
            }
        } else {
            sql_error(e)
        }
    }

    fn result_too_large(&self) -> EngineError {
        EngineError::SqlRefused {
            refusal: Refusal::OutOfMemory,
            message: format!(
                "the statement's result exceeds its memory limit of {} \
                 (--sql-memory-limit, EDGEFLOW_SQL_MEMORY_LIMIT): add a LIMIT, a filter or an aggregate",
                limits::human_bytes(self.limits.memory_bytes)
            ),
        }
    }
}

/// The bytes a batch's rows hold (a slice of a larger batch counts only its rows).
fn slice_memory_size(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|column| {
            column
                .to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| column.get_array_memory_size())
        })
        .sum()
}

fn too_deep(max_depth: usize) -> EngineError {
    EngineError::SqlRefused {
        refusal: Refusal::TooDeep,
        message: format!(
            "the statement nests too deep: its expressions, joins or set operations chain more \
             than {max_depth} levels (--sql-max-depth, EDGEFLOW_SQL_MAX_DEPTH); \
             write a long OR of equalities as IN (...), or split the statement"
        ),
    }
}

fn read_only_refusal(what: &str) -> EngineError {
    EngineError::SqlRefused {
        refusal: Refusal::ReadOnly,
        message: format!(
            "SQL here is read-only: {what} is refused; only queries run \
             (SELECT, WITH, VALUES, EXPLAIN)"
        ),
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
    encode_result_within(result, format, usize::MAX)
}

/// Encodes a result in a format, refusing (with [`Refusal::OutOfMemory`]) an encoding
/// longer than `max_bytes`: a JSON or CSV answer can be several times the size of the
/// Arrow result it encodes.
pub fn encode_result_within(
    result: &QueryResult,
    format: ResultFormat,
    max_bytes: usize,
) -> Result<Vec<u8>, EngineError> {
    let mut out = BoundedBuffer {
        bytes: Vec::new(),
        max_bytes,
        exceeded: false,
    };
    let encoded = encode_into(result, format, &mut out);
    if out.exceeded || out.bytes.len() > max_bytes {
        return Err(EngineError::SqlRefused {
            refusal: Refusal::OutOfMemory,
            message: format!(
                "the encoded result exceeds the statement's memory limit of {} \
                 (--sql-memory-limit, EDGEFLOW_SQL_MEMORY_LIMIT): add a LIMIT, a filter or an \
                 aggregate, or ask for Arrow IPC",
                limits::human_bytes(max_bytes)
            ),
        });
    }
    encoded.map_err(|e| EngineError::Internal(format!("encoding result: {e}")))?;
    Ok(out.bytes)
}

/// A buffer that refuses to grow beyond `max_bytes` (the write fails, `exceeded` is set).
struct BoundedBuffer {
    bytes: Vec<u8>,
    max_bytes: usize,
    exceeded: bool,
}

impl std::io::Write for BoundedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len().saturating_add(buf.len()) > self.max_bytes {
            self.exceeded = true;
            return Err(std::io::Error::other("the result's size limit"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn encode_into(
    result: &QueryResult,
    format: ResultFormat,
    out: &mut BoundedBuffer,
) -> Result<(), arrow::error::ArrowError> {
    use std::io::Write;
    match format {
        ResultFormat::Json => {
            let mut writer = arrow::json::ArrayWriter::new(&mut *out);
            for batch in &result.batches {
                writer.write(batch)?;
            }
            writer.finish()?;
            drop(writer);
            if out.bytes.is_empty() {
                out.write_all(b"[]")?;
            }
            out.write_all(b"\n")?;
        }
        ResultFormat::Csv => {
            if result.batches.is_empty() {
                let header = result
                    .schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(",");
                out.write_all(header.as_bytes())?;
                out.write_all(b"\n")?;
            } else {
                let mut writer = arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut *out);
                for batch in &result.batches {
                    writer.write(batch)?;
                }
            }
        }
        ResultFormat::ArrowIpc => {
            let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut *out, &result.schema)?;
            for batch in &result.batches {
                writer.write(batch)?;
            }
            writer.finish()?;
        }
        ResultFormat::Table => {
            out.write_all(render_table(result).as_bytes())?;
        }
    }
    Ok(())
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
