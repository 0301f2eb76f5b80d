//! The Postgres wire protocol interface of a serving process: `psql` and Postgres client
//! libraries query the materialized tables through the same [`QueryEngine`] as `POST /sql`.
//!
//! - Simple query protocol (what `psql -c` speaks): a query string may hold several
//!   statements separated by `;`; they run in order and, as in Postgres, the first error
//!   ends the string.
//! - Extended query protocol (Parse/Bind/Describe/Execute, what tokio-postgres, psycopg and
//!   JDBC speak): a statement is planned at Parse (its result columns are known before
//!   it runs) and executed at Execute against fresh table snapshots. Results are sent in
//!   text or binary, per column, as the client asks. Query parameters (`$1`) are not
//!   supported yet: such a statement is refused with SQLSTATE 0A000.
//! - Types: Int64 -> `int8`, Int32 -> `int4`, Int8/Int16 -> `int2`, UInt8..UInt32 -> the
//!   next wider signed type, Float64 -> `float8`, Float32 -> `float4`, Utf8 -> `text`,
//!   Boolean -> `bool`, Timestamp without time zone (any unit) -> `timestamp`, Date32 ->
//!   `date`; every other type is sent as `text`, formatted by Arrow.
//! - Errors are Postgres `ErrorResponse`s carrying DataFusion's message and a SQLSTATE
//!   (42601 syntax error, 42P01 undefined table, 42703 undefined column, 0A000 not
//!   supported, XX000 otherwise); the connection stays usable. SQL is read-only: a statement
//!   that is not a query is refused with 25006 (read_only_sql_transaction), at Parse as at
//!   a simple query; the engine's bounds answer 54001 (too deep), 53200 (memory) and 57014
//!   (statement timeout).
//! - Shutdown: the server stops accepting, gives running statements the shutdown grace,
//!   then closes every connection.
//! - A client that closes its connection while a statement runs cancels that statement
//!   (its memory is freed at once), as a closed HTTP request does.
//! - Authentication: none ("trust", like a local Postgres's loopback entry in pg_hba.conf).
//!   The server listens on loopback by default; authenticating clients belongs to the
//!   edge-cloud boundary, not to this local interface. No TLS.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, Schema,
    SchemaRef, TimeUnit, TimestampMicrosecondType, UInt8Type, UInt16Type, UInt32Type,
};
use arrow::temporal_conversions::{date32_to_datetime, timestamp_us_to_datetime};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use async_trait::async_trait;
use futures::{Sink, stream};
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{DataRowEncoder, FieldInfo, QueryResponse, Response};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::data::DataRow;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::{QueryEngine, QueryResult};
use crate::error::EngineError;

/// Serves the Postgres wire protocol on `listener` until `shutdown` completes; then it
/// stops accepting, waits at most `grace` for running statements, and closes the open
/// connections.
///
/// Every connection is a task owned by this function (a [`JoinSet`]), ended with it.
pub async fn serve(
    listener: TcpListener,
    engine: QueryEngine,
    grace: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let handlers = Arc::new(PgHandlers::new(engine));
    let running = handlers.handler.running.clone();
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let handlers = handlers.clone();
                    let (socket, watch) = match watch_handle(socket) {
                        Ok(pair) => pair,
                        Err(e) => {
                            tracing::warn!(%peer, error = %e, "preparing a postgres connection");
                            continue;
                        }
                    };
                    connections.spawn(async move {
                        // pgwire reads the next message only after a statement's answer is
                        // sent, so a client that leaves mid-statement is noticed here:
                        // dropping `process_socket` drops the running statement, which
                        // cancels it and frees its memory.
                        tokio::select! {
                            ended = pgwire::tokio::process_socket(socket, None, handlers) => {
                                if let Err(e) = ended {
                                    tracing::debug!(%peer, error = %e, "postgres connection ended with an error");
                                }
                            }
                            () = peer_closed(watch) => {
                                tracing::debug!(%peer, "postgres client went away; its running statement, if any, is cancelled");
                            }
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accepting a postgres connection");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    // Bounded: until the grace ends, in steps of at most 20 ms.
    let deadline = Instant::now() + grace;
    while running.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        tokio::select! {
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
    connections.shutdown().await;
    Ok(())
}

/// The accepted socket and a second handle of it (a duplicated descriptor) that
/// [`peer_closed`] watches while pgwire owns the first.
fn watch_handle(socket: TcpStream) -> std::io::Result<(TcpStream, TcpStream)> {
    let socket = socket.into_std()?;
    let watch = socket.try_clone()?;
    Ok((TcpStream::from_std(socket)?, TcpStream::from_std(watch)?))
}

/// Completes when the client has closed the connection (a peek sees the end of the stream)
/// or it failed. Never consumes bytes: while unread messages wait for pgwire (a client
/// pipelining behind a running statement), it looks again every 200 ms instead of spinning.
async fn peer_closed(watch: TcpStream) {
    let mut byte = [0u8; 1];
    loop {
        match watch.peek(&mut byte).await {
            Ok(0) | Err(_) => return,
            Ok(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The protocol handlers of one server: startup ("trust"), simple and extended queries.
#[derive(Debug)]
pub struct PgHandlers {
    handler: Arc<PgQueryHandler>,
}

impl PgHandlers {
    /// Handlers answering from this engine.
    pub fn new(engine: QueryEngine) -> Self {
        PgHandlers {
            handler: Arc::new(PgQueryHandler {
                parser: Arc::new(PgParser {
                    engine: engine.clone(),
                }),
                engine,
                running: Arc::default(),
            }),
        }
    }
}

impl PgWireServerHandlers for PgHandlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.handler.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.handler.clone()
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        self.handler.clone()
    }
}

/// Answers queries of every connection.
#[derive(Debug)]
struct PgQueryHandler {
    engine: QueryEngine,
    parser: Arc<PgParser>,
    /// Statements running now, on every connection (what shutdown waits for).
    running: Arc<AtomicUsize>,
}

/// Counts a running statement for as long as it lives.
struct Running(Arc<AtomicUsize>);

impl Running {
    fn start(counter: &Arc<AtomicUsize>) -> Running {
        counter.fetch_add(1, Ordering::SeqCst);
        Running(counter.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// No authentication: see the module documentation.
impl NoopStartupHandler for PgQueryHandler {}

#[async_trait]
impl SimpleQueryHandler for PgQueryHandler {
    async fn do_query<C>(&self, _client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let _running = Running::start(&self.running);
        // As in Postgres, statements run in order and an error ends the query string.
        let mut responses = Vec::new();
        for result in self.engine.query_script(query, None).await {
            responses.push(match result {
                Ok(result) => Response::Query(query_response(result, &Format::UnifiedText)?),
                Err(e) => Response::Error(Box::new(error_info(&e))),
            });
        }
        Ok(responses)
    }
}

#[async_trait]
impl ExtendedQueryHandler for PgQueryHandler {
    type Statement = PgStatement;
    type QueryParser = PgParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        _client: &mut C,
        portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let _running = Running::start(&self.running);
        match self.engine.query(&portal.statement.statement.sql).await {
            Ok(result) => Ok(Response::Query(query_response(
                result,
                &portal.result_column_format,
            )?)),
            Err(e) => Ok(Response::Error(Box::new(error_info(&e)))),
        }
    }
}

/// A statement of the extended protocol: its text and its result schema, planned at Parse.
#[derive(Debug, Clone)]
struct PgStatement {
    sql: String,
    schema: SchemaRef,
}

/// Plans statements at Parse, against empty tables of the catalog's and the system tables'
/// schemas (cheap: no snapshot is taken).
#[derive(Debug)]
struct PgParser {
    engine: QueryEngine,
}

impl PgParser {
    async fn plan(&self, sql: &str) -> Result<PgStatement, ErrorInfo> {
        let described = self
            .engine
            .describe(sql)
            .await
            .map_err(|e| error_info(&e))?;
        if !described.parameters.is_empty() {
            return Err(ErrorInfo::new(
                "ERROR".into(),
                "0A000".into(),
                format!(
                    "query parameters are not supported yet ({}); write the values into the statement",
                    described.parameters.join(", ")
                ),
            ));
        }
        Ok(PgStatement {
            sql: sql.to_string(),
            schema: described.schema,
        })
    }
}

#[async_trait]
impl QueryParser for PgParser {
    type Statement = PgStatement;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        match self.plan(sql).await {
            Ok(statement) => Ok(Some(statement)),
            Err(info) => Err(PgWireError::UserError(Box::new(info))),
        }
    }

    fn get_parameter_types(&self, _statement: &Self::Statement) -> PgWireResult<Vec<Type>> {
        Ok(Vec::new())
    }

    fn get_result_schema(
        &self,
        statement: &Self::Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        Ok(field_infos(
            &statement.schema,
            column_format.unwrap_or(&Format::UnifiedText),
        ))
    }
}

/// The Postgres error for an engine error: DataFusion's message with a SQLSTATE.
fn error_info(e: &EngineError) -> ErrorInfo {
    let (code, message) = match e {
        EngineError::Sql(message) => (sqlstate(message), message.clone()),
        EngineError::SqlRefused { refusal, message } => (refusal.sqlstate(), message.clone()),
        other => ("XX000", other.to_string()),
    };
    ErrorInfo::new("ERROR".into(), code.into(), message)
}

/// The SQLSTATE of a DataFusion error message.
fn sqlstate(message: &str) -> &'static str {
    if message.contains("ParserError")
        || message.contains("sql parser error")
        || message.contains("send one at a time")
    {
        "42601" // syntax_error
    } else if message.contains("table '") && message.contains("' not found") {
        "42P01" // undefined_table
    } else if message.contains("No field named") {
        "42703" // undefined_column
    } else if message.contains("This feature is not implemented")
        || message.contains("Unsupported SQL statement")
    {
        "0A000" // feature_not_supported
    } else {
        "XX000" // internal_error
    }
}

/// The Postgres type a column of this Arrow type is sent as.
fn pg_type(data_type: &DataType) -> Type {
    match data_type {
        DataType::Boolean => Type::BOOL,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => Type::INT2,
        DataType::Int32 | DataType::UInt16 => Type::INT4,
        DataType::Int64 | DataType::UInt32 => Type::INT8,
        DataType::Float32 => Type::FLOAT4,
        DataType::Float64 => Type::FLOAT8,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Type::TEXT,
        DataType::Timestamp(_, None) => Type::TIMESTAMP,
        DataType::Date32 => Type::DATE,
        _ => Type::TEXT,
    }
}

fn field_infos(schema: &Schema, format: &Format) -> Vec<FieldInfo> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, field)| {
            FieldInfo::new(
                field.name().clone(),
                None,
                None,
                pg_type(field.data_type()),
                format.format_for(i),
            )
        })
        .collect()
}

fn query_response(result: QueryResult, format: &Format) -> PgWireResult<QueryResponse> {
    let fields = Arc::new(field_infos(&result.schema, format));
    let rows = encode_rows(&result.batches, fields.clone())?;
    Ok(QueryResponse::new(
        fields,
        stream::iter(rows.into_iter().map(Ok)),
    ))
}

fn encoding_error(e: impl std::fmt::Display) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        "XX000".into(),
        format!("encoding a result for the postgres protocol: {e}"),
    )))
}

/// The data rows of a result, encoded as `fields` say (type and text/binary per column).
fn encode_rows(batches: &[RecordBatch], fields: Arc<Vec<FieldInfo>>) -> PgWireResult<Vec<DataRow>> {
    let mut encoder = DataRowEncoder::new(fields);
    let mut rows = Vec::with_capacity(batches.iter().map(RecordBatch::num_rows).sum());
    let display = FormatOptions::default();
    for batch in batches {
        // Timestamps of every unit become microseconds, Postgres's resolution.
        let columns = batch
            .columns()
            .iter()
            .map(|column| match column.data_type() {
                DataType::Timestamp(unit, None) if *unit != TimeUnit::Microsecond => {
                    arrow::compute::cast(column, &DataType::Timestamp(TimeUnit::Microsecond, None))
                }
                _ => Ok(column.clone()),
            })
            .collect::<Result<Vec<ArrayRef>, _>>()
            .map_err(encoding_error)?;
        let formatters = columns
            .iter()
            .map(|column| {
                let data_type = column.data_type();
                if pg_type(data_type) == Type::TEXT && !is_string(data_type) {
                    ArrayFormatter::try_new(column.as_ref(), &display).map(Some)
                } else {
                    Ok(None)
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(encoding_error)?;
        for row in 0..batch.num_rows() {
            for (column, formatter) in columns.iter().zip(&formatters) {
                encode_cell(&mut encoder, column, formatter.as_ref(), row)?;
            }
            rows.push(encoder.take_row());
        }
    }
    Ok(rows)
}

fn is_string(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

/// Encodes one value; its Postgres type is [`pg_type`] of the column's type, and columns
/// sent as `text` that are not strings come with their Arrow `formatter`.
fn encode_cell(
    encoder: &mut DataRowEncoder,
    column: &ArrayRef,
    formatter: Option<&ArrayFormatter<'_>>,
    row: usize,
) -> PgWireResult<()> {
    if column.is_null(row) {
        return encoder.encode_field(&None::<i64>);
    }
    if let Some(formatter) = formatter {
        return encoder.encode_field(&formatter.value(row).to_string());
    }
    match column.data_type() {
        DataType::Boolean => encoder.encode_field(&column.as_boolean().value(row)),
        DataType::Int8 => {
            encoder.encode_field(&i16::from(column.as_primitive::<Int8Type>().value(row)))
        }
        DataType::Int16 => encoder.encode_field(&column.as_primitive::<Int16Type>().value(row)),
        DataType::UInt8 => {
            encoder.encode_field(&i16::from(column.as_primitive::<UInt8Type>().value(row)))
        }
        DataType::Int32 => encoder.encode_field(&column.as_primitive::<Int32Type>().value(row)),
        DataType::UInt16 => {
            encoder.encode_field(&i32::from(column.as_primitive::<UInt16Type>().value(row)))
        }
        DataType::Int64 => encoder.encode_field(&column.as_primitive::<Int64Type>().value(row)),
        DataType::UInt32 => {
            encoder.encode_field(&i64::from(column.as_primitive::<UInt32Type>().value(row)))
        }
        DataType::Float32 => encoder.encode_field(&column.as_primitive::<Float32Type>().value(row)),
        DataType::Float64 => encoder.encode_field(&column.as_primitive::<Float64Type>().value(row)),
        DataType::Utf8 => encoder.encode_field(&column.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => encoder.encode_field(&column.as_string::<i64>().value(row)),
        DataType::Utf8View => encoder.encode_field(&column.as_string_view().value(row)),
        DataType::Timestamp(TimeUnit::Microsecond, None) => {
            let micros = column.as_primitive::<TimestampMicrosecondType>().value(row);
            encoder.encode_field(&timestamp_us_to_datetime(micros))
        }
        DataType::Date32 => {
            let days = column
                .as_primitive::<arrow::datatypes::Date32Type>()
                .value(row);
            encoder.encode_field(&date32_to_datetime(days).map(|t| t.date()))
        }
        other => Err(encoding_error(format!(
            "no encoding for {other} (a bug in edgeflow: pg_type and encode_cell disagree)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::{Catalog, MaterializedTable};
    use arrow::array::{
        BooleanArray, Date32Array, Float64Array, Int64Array, StringArray,
        TimestampMillisecondArray, UInt64Array,
    };
    use arrow::datatypes::Field;

    fn text_of(row: &DataRow) -> Vec<Option<String>> {
        // A data row's body: per field, an i32 length (-1 for null) and the bytes.
        let mut out = Vec::new();
        let mut body = &row.data[..];
        for _ in 0..row.field_count {
            let len = i32::from_be_bytes(body[..4].try_into().unwrap());
            body = &body[4..];
            if len < 0 {
                out.push(None);
            } else {
                let (value, rest) = body.split_at(len as usize);
                out.push(Some(String::from_utf8(value.to_vec()).unwrap()));
                body = rest;
            }
        }
        out
    }

    fn sample() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, true),
            Field::new("x", DataType::Float64, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("b", DataType::Boolean, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
            Field::new("d", DataType::Date32, true),
            Field::new("u", DataType::UInt64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![Some(-7), None])),
                Arc::new(Float64Array::from(vec![Some(1.5), None])),
                Arc::new(StringArray::from(vec![Some("a,b"), None])),
                Arc::new(BooleanArray::from(vec![Some(true), None])),
                Arc::new(TimestampMillisecondArray::from(vec![
                    Some(1_767_225_600_250),
                    None,
                ])),
                Arc::new(Date32Array::from(vec![Some(20454), None])),
                Arc::new(UInt64Array::from(vec![Some(u64::MAX), None])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn arrow_types_map_to_postgres_types() {
        let batch = sample();
        let fields = field_infos(&batch.schema(), &Format::UnifiedText);
        let types: Vec<_> = fields.iter().map(|f| f.datatype().clone()).collect();
        assert_eq!(
            types,
            [
                Type::INT8,
                Type::FLOAT8,
                Type::TEXT,
                Type::BOOL,
                Type::TIMESTAMP,
                Type::DATE,
                Type::TEXT
            ]
        );
    }

    #[test]
    fn text_format_writes_postgres_text_and_nulls() {
        let batch = sample();
        let fields = Arc::new(field_infos(&batch.schema(), &Format::UnifiedText));
        let rows = encode_rows(&[batch], fields).unwrap();
        assert_eq!(rows.len(), 2);
        let first = text_of(&rows[0]);
        let first: Vec<_> = first.iter().map(|v| v.as_deref().unwrap()).collect();
        assert_eq!(first[..4], ["-7", "1.5", "a,b", "t"]);
        assert!(
            first[4].starts_with("2026-01-01 00:00:00.25"),
            "timestamp: {}",
            first[4]
        );
        assert_eq!(first[5], "2026-01-01");
        assert_eq!(first[6], u64::MAX.to_string());
        assert!(text_of(&rows[1]).iter().all(Option::is_none));
    }

    #[test]
    fn binary_format_writes_network_order_values() {
        let batch = sample();
        let fields = Arc::new(field_infos(&batch.schema(), &Format::UnifiedBinary));
        let rows = encode_rows(&[batch], fields).unwrap();
        let body = &rows[0].data[..];
        // int8: length 8, then -7 big-endian.
        assert_eq!(&body[..4], &8i32.to_be_bytes());
        assert_eq!(&body[4..12], &(-7i64).to_be_bytes());
        // float8.
        assert_eq!(&body[12..16], &8i32.to_be_bytes());
        assert_eq!(&body[16..24], &1.5f64.to_be_bytes());
    }

    async fn planned(sql: &str) -> Result<PgStatement, ErrorInfo> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("device", DataType::Utf8, false),
            Field::new("count", DataType::Int64, false),
        ]));
        let mut catalog = Catalog::new();
        catalog.insert(Arc::new(MaterializedTable::new("fleet", schema, 1)));
        let parser = PgParser {
            engine: QueryEngine::new(Arc::new(catalog)),
        };
        parser.plan(sql).await
    }

    #[test]
    fn parse_plans_the_result_columns_without_running() {
        let statement = futures_block_on(planned("SELECT device, count * 2 AS c FROM fleet"));
        let fields = field_infos(&statement.unwrap().schema, &Format::UnifiedText);
        let names: Vec<_> = fields
            .iter()
            .map(|f| (f.name().to_string(), f.datatype().clone()))
            .collect();
        assert_eq!(
            names,
            [("device".into(), Type::TEXT), ("c".into(), Type::INT8)]
        );
    }

    #[test]
    fn datafusion_errors_get_postgres_sqlstates() {
        for (sql, code) in [
            ("SELEC 1", "42601"),
            ("SELECT * FROM nope", "42P01"),
            ("SELECT nope FROM fleet", "42703"),
            ("SELECT device FROM fleet WHERE count = $1", "0A000"),
            ("SELECT 1; SELECT 2", "42601"),
        ] {
            let error = futures_block_on(planned(sql)).unwrap_err();
            assert_eq!(error.code, code, "{sql}: {}", error.message);
        }
        assert_eq!(
            error_info(&EngineError::Internal("boom".into())).code,
            "XX000"
        );
    }

    fn futures_block_on<F: Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }
}
