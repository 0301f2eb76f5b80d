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

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use edgeflow_operators::control::{ControlAction, ControlRecord};
use serde::Deserialize;

use super::{QueryEngine, ResultFormat, encode_result};
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
}

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

/// Serves until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ServerState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

fn error_response(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

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

async fn sql(State(state): State<Arc<ServerState>>, headers: HeaderMap, body: Bytes) -> Response {
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
        Err(EngineError::Sql(message)) => return error_response(StatusCode::BAD_REQUEST, &message),
        Err(e) => return error_response(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    match encode_result(&result, format) {
        Ok(bytes) => ([(header::CONTENT_TYPE, format.content_type())], bytes).into_response(),
        Err(e) => error_response(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn control(State(state): State<Arc<ServerState>>, body: Bytes) -> Response {
    let Some(channel) = &state.control else {
        return error_response(
            StatusCode::NOT_FOUND,
            "this process does not publish control records",
        );
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
