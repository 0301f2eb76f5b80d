//! The HTTP interface of a serving process: `POST /sql`, `POST /control`, `GET /metrics`,
//! `GET /health`.
//!
//! `POST /sql` takes the statement as the request body (plain text, or JSON `{"sql": ...}`)
//! and answers JSON rows, or CSV / Arrow IPC / a text table as the `Accept` header asks.
//! Bad SQL is a 400 with `{"error": ...}`.
//!
//! `POST /control` takes a control record as JSON (`{"node": "spikes", "action":
//! "set_threshold", "value": 6, "apply_at": 1767225660000, "reason": "..."}`; `apply_at`
//! defaults to the process's current watermark) and publishes it on the control topic; the
//! answer is the record as sent, with its id.
//!
//! Bounds (see [`ServerLimits`]): a request body must arrive within the read timeout (408
//! otherwise) and hold at most 2 MiB (413); `POST /sql` and `POST /control` refuse (403) a
//! request a browser sent from another site (an `Origin` that is not this server's own, or
//! `Sec-Fetch-Site: cross-site`), so a web page cannot reach them; a client without
//! `Origin` (curl, `edgeflow sql`) is served. On stop, the server stops accepting, gives
//! in-flight requests the shutdown grace, then closes their connections.

use std::future::{Future, IntoFuture};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use edgeflow_operators::control::{ControlAction, ControlRecord};
use serde::Deserialize;

use super::{QueryEngine, ResultFormat, ServerLimits, encode_result_within};
use crate::error::EngineError;
use crate::metrics::Metrics;
use crate::runtime::control::ControlChannel;

/// What the server needs from the running pipeline.
pub struct ServerState {
    /// Pipeline name, reported by `/health`.
    pub pipeline: String,
    /// Runs queries.
    pub engine: QueryEngine,
    /// Exposed at `/metrics`.
    pub metrics: Metrics,
    /// Set once the pipeline's dataflows have finished (the tables are final).
    pub finished: AtomicBool,
    /// Where `POST /control` publishes (none: the endpoint answers 404).
    pub control: Option<Arc<ControlChannel>>,
    /// Read timeout and shutdown grace.
    pub limits: ServerLimits,
}

/// The largest request body read (a statement, or a control record with model weights).
const MAX_BODY_BYTES: usize = 2 << 20;

/// The body of `POST /control`.
#[derive(Debug, Deserialize)]
struct ControlRequest {
    node: String,
    #[serde(flatten)]
    action: ControlAction,
    apply_at: Option<i64>,
    #[serde(default)]
    reason: String,
    issued_by: Option<String>,
    id: Option<String>,
}

/// The router of the HTTP interface.
pub fn router(state: Arc<ServerState>) -> Router {
    Router::new()
        .route("/sql", post(sql))
        .route("/control", post(control))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .with_state(state)
}

/// Serves until `shutdown` completes; then stops accepting, waits at most the shutdown
/// grace for in-flight requests, and returns (their connections close with the runtime).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ServerState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = state.limits.shutdown_grace;
    let stopping = Arc::new(tokio::sync::Notify::new());
    let stop = stopping.clone();
    let server = axum::serve(listener, router(state)).with_graceful_shutdown(async move {
        shutdown.await;
        stop.notify_one();
    });
    tokio::select! {
        served = server.into_future() => served,
        () = async {
            stopping.notified().await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(
                grace_ms = grace.as_millis() as u64,
                "HTTP requests still in flight after the shutdown grace; closing them"
            );
            Ok(())
        }
    }
}

fn error_response(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Why a POST from a browser must be refused: its `Origin` is not this server's own (any
/// web page can make a browser send a "simple" POST to 127.0.0.1), or the browser says the
/// request is not same-origin. A request without `Origin` does not come from a web page.
fn cross_site(headers: &HeaderMap) -> Option<String> {
    let fetch_site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none");
    if !matches!(fetch_site, "none" | "same-origin") {
        return Some(format!(
            "refused: a {fetch_site} request from a web page (Sec-Fetch-Site); \
             edgeflow serves its own origin and clients without Origin (curl, edgeflow sql)"
        ));
    }
    let origin = headers.get(header::ORIGIN)?;
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let origin = origin.to_str().unwrap_or("(not text)");
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    let same_origin = authority.is_some_and(|a| a.eq_ignore_ascii_case(host));
    if same_origin && is_literal_host(host) {
        None
    } else {
        Some(format!(
            "refused: a request from the web page at {origin}, not from this server ({host}); \
             edgeflow serves its own origin and clients without Origin (curl, edgeflow sql)"
        ))
    }
}

/// Whether a `Host` is an IP address or `localhost` (a name another site may not have
/// pointed at this address: DNS rebinding).
fn is_literal_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// Reads a request body within the read timeout and [`MAX_BODY_BYTES`].
async fn read_body(body: Body, limits: &ServerLimits) -> Result<Bytes, Response> {
    match tokio::time::timeout(
        limits.read_timeout,
        axum::body::to_bytes(body, MAX_BODY_BYTES),
    )
    .await
    {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => {
            // axum's limit error (http-body-util's LengthLimitError) is only nameable by text.
            let too_large = std::error::Error::source(&e)
                .is_some_and(|cause| cause.to_string().contains("length limit exceeded"));
            Err(if too_large {
                error_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("the request body exceeds {MAX_BODY_BYTES} bytes"),
                )
            } else {
                error_response(
                    StatusCode::BAD_REQUEST,
                    &format!("reading the request body: {e}"),
                )
            })
        }
        Err(_elapsed) => Err(error_response(
            StatusCode::REQUEST_TIMEOUT,
            &format!(
                "the request body did not arrive within {} s (--http-read-timeout, \
                 EDGEFLOW_HTTP_READ_TIMEOUT)",
                limits.read_timeout.as_secs_f64()
            ),
        )),
    }
}

/// The statement of a `POST /sql` body: JSON `{"sql": ...}` when the content type says
/// JSON, the body's text otherwise.
fn statement(headers: &HeaderMap, body: &Bytes) -> Result<String, String> {
    let text =
        std::str::from_utf8(body).map_err(|_| "the request body is not UTF-8".to_string())?;
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    if is_json {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("the JSON body is malformed: {e}"))?;
        return value
            .get("sql")
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| r#"a JSON body must look like {"sql": "SELECT ..."}"#.to_string());
    }
    Ok(text.to_string())
}

/// The HTTP answer of an engine error.
fn engine_error_response(e: &EngineError) -> Response {
    let status = match e {
        EngineError::Sql(_) => StatusCode::BAD_REQUEST,
        EngineError::SqlRefused { refusal, .. } => {
            StatusCode::from_u16(refusal.http_status()).unwrap_or(StatusCode::BAD_REQUEST)
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error_response(status, &e.to_string())
}

async fn sql(State(state): State<Arc<ServerState>>, headers: HeaderMap, body: Body) -> Response {
    if let Some(refusal) = cross_site(&headers) {
        return error_response(StatusCode::FORBIDDEN, &refusal);
    }
    let body = match read_body(body, &state.limits).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let sql = match statement(&headers, &body) {
        Ok(sql) if !sql.trim().is_empty() => sql,
        Ok(_) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "the request body holds no SQL statement",
            );
        }
        Err(message) => return error_response(StatusCode::BAD_REQUEST, &message),
    };
    let format = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(ResultFormat::from_accept)
        .unwrap_or(ResultFormat::Json);
    let result = match state.engine.query(&sql).await {
        Ok(result) => result,
        Err(e) => return engine_error_response(&e),
    };
    match encode_result_within(&result, format, state.engine.limits().memory_bytes) {
        Ok(bytes) => ([(header::CONTENT_TYPE, format.content_type())], bytes).into_response(),
        Err(e) => engine_error_response(&e),
    }
}

async fn control(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Some(refusal) = cross_site(&headers) {
        return error_response(StatusCode::FORBIDDEN, &refusal);
    }
    let Some(channel) = &state.control else {
        return error_response(
            StatusCode::NOT_FOUND,
            "this process does not publish control records: add \
             `control: { nodes: [<node>] }` to the pipeline, listing the edge nodes to reconfigure",
        );
    };
    let body = match read_body(body, &state.limits).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let request: ControlRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &format!(
                    "a control request looks like {{\"node\": \"spikes\", \"action\": \"set_threshold\", \"value\": 6}}: {e}"
                ),
            );
        }
    };
    let record = ControlRecord {
        id: request.id.unwrap_or_default(),
        node: request.node,
        action: request.action,
        apply_at: request.apply_at.unwrap_or_else(|| channel.watermark()),
        issued_by: request.issued_by.unwrap_or_else(|| "http".to_owned()),
        reason: request.reason,
    };
    // Publishing may wait for the transport to start, and writes a file or a Kafka queue.
    let channel = channel.clone();
    let sent = match tokio::task::spawn_blocking(move || channel.send(record)).await {
        Ok(sent) => sent,
        Err(e) => {
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("publishing the control record: {e}"),
            );
        }
    };
    match sent {
        Ok(issued) => (
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_string(&issued).unwrap_or_default(),
        )
            .into_response(),
        Err(EngineError::Control(message)) => error_response(StatusCode::BAD_REQUEST, &message),
        Err(e) => error_response(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

async fn metrics(State(state): State<Arc<ServerState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

async fn health(State(state): State<Arc<ServerState>>) -> Response {
    let tables: Vec<_> = state
        .engine
        .catalog()
        .tables()
        .map(|t| serde_json::json!({ "name": t.name(), "rows": t.visible_rows() }))
        .collect();
    let body = serde_json::json!({
        "status": "ok",
        "pipeline": state.pipeline,
        "state": if state.finished.load(Ordering::Relaxed) { "finished" } else { "running" },
        "tables": tables,
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}
