//! `edgeflow sql` and `edgeflow control`: HTTP clients of a serving edgeflow process.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use edgeflow::sql::{ResultFormat, decode_ipc_result, render_table};

use super::{OutputFormat, print_result};

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("action").required(true).args([
    "set_threshold", "swap_model", "model_weights", "enable", "disable", "window_size", "sampling",
])))]
pub struct ControlArgs {
    /// Address of the serving process.
    #[arg(long, env = "EDGEFLOW_SERVER", default_value = "127.0.0.1:7878")]
    server: String,
    /// The edge node to reconfigure (listed under `control: { nodes }`).
    #[arg(long)]
    node: String,
    /// A detector's threshold (`detect` z-score threshold or upper bound, `infer` score).
    #[arg(long)]
    set_threshold: Option<f64>,
    /// Swap an `infer` node's model for this file, as the edge sees it (relative to the
    /// pipeline file's directory).
    #[arg(long)]
    swap_model: Option<String>,
    /// Swap an `infer` node's model for this local file, sent in the record (base64).
    #[arg(long)]
    model_weights: Option<PathBuf>,
    /// Resume a disabled node.
    #[arg(long)]
    enable: bool,
    /// Stop a node's processing (it drops its input until enabled).
    #[arg(long)]
    disable: bool,
    /// A tumbling window's new size, e.g. `10s`.
    #[arg(long)]
    window_size: Option<String>,
    /// Keep one reading in N at a generator.
    #[arg(long)]
    sampling: Option<u32>,
    /// Event time (ms since the epoch) from which it applies [default: the current watermark].
    #[arg(long)]
    apply_at: Option<i64>,
    /// Why (shown in the control log).
    #[arg(long, default_value = "")]
    reason: String,
}

/// The base URL of a serving process and an HTTP client that returns error statuses.
fn http_client(server: &str) -> (String, ureq::Agent) {
    let base = if server.starts_with("http://") || server.starts_with("https://") {
        server.trim_end_matches('/').to_string()
    } else {
        format!("http://{server}")
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(300)))
        .build()
        .into();
    (base, agent)
}

/// The body of a successful response; for an error status, prints the error and gives the
/// exit code instead.
fn success_body(
    response: &mut ureq::http::Response<ureq::Body>,
) -> Result<Result<Vec<u8>, ExitCode>> {
    let status = response.status();
    let body = response
        .body_mut()
        .read_to_vec()
        .context("reading the response")?;
    if !status.is_success() {
        eprintln!("error: {}", error_message(&body));
        return Ok(Err(ExitCode::FAILURE));
    }
    Ok(Ok(body))
}

/// The `error` of a JSON error body, or the body as text.
fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}

/// Sends a control record through a serving process and prints it as sent.
pub fn control_client(args: ControlArgs) -> Result<ExitCode> {
    use base64::Engine as _;
    let mut body = serde_json::json!({ "node": args.node, "reason": args.reason });
    let action = if let Some(value) = args.set_threshold {
        serde_json::json!({ "action": "set_threshold", "value": value })
    } else if let Some(path) = args.swap_model {
        serde_json::json!({ "action": "swap_model", "model": { "path": path } })
    } else if let Some(file) = args.model_weights {
        let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        let weights = base64::engine::general_purpose::STANDARD.encode(bytes);
        serde_json::json!({ "action": "swap_model", "model": { "weights": weights } })
    } else if args.enable {
        serde_json::json!({ "action": "enable" })
    } else if args.disable {
        serde_json::json!({ "action": "disable" })
    } else if let Some(size) = args.window_size {
        let size_ms = edgeflow::spec::parse_duration_ms(&size)
            .map_err(|hint| anyhow!("--window-size {size:?}: {hint}"))?;
        serde_json::json!({ "action": "set_window_size", "size_ms": size_ms })
    } else if let Some(every) = args.sampling {
        serde_json::json!({ "action": "set_sampling", "every": every })
    } else {
        return Err(anyhow!("name an action (--set-threshold, --enable, ...)"));
    };
    if let (Some(body), Some(action)) = (body.as_object_mut(), action.as_object()) {
        body.extend(action.clone());
        if let Some(at) = args.apply_at {
            body.insert("apply_at".into(), at.into());
        }
    }
    let (base, agent) = http_client(&args.server);
    // 503: the process is up but its control transport is still starting; retry for 10 s.
    let mut attempts = 0;
    let mut response = loop {
        let response = agent
            .post(&format!("{base}/control"))
            .header("Content-Type", "application/json")
            .send(body.to_string())
            .with_context(|| {
                format!("cannot reach edgeflow at {base} (is `edgeflow cloud --serve` running?)")
            })?;
        attempts += 1;
        if response.status() != 503 || attempts >= 50 {
            break response;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let body = match success_body(&mut response)? {
        Ok(body) => body,
        Err(failure) => return Ok(failure),
    };
    println!("{}", String::from_utf8_lossy(&body));
    Ok(ExitCode::SUCCESS)
}

/// Runs `sql` on a serving process and prints the result in `format`.
pub fn sql_client(sql: &str, server: &str, format: OutputFormat) -> Result<ExitCode> {
    let (base, agent) = http_client(server);
    let mut response = agent
        .post(&format!("{base}/sql"))
        .header("Accept", ResultFormat::ArrowIpc.content_type())
        .header("Content-Type", "text/plain")
        .send(sql)
        .with_context(|| {
            format!("cannot reach edgeflow at {base} (is `edgeflow run --serve` running?)")
        })?;
    let body = match success_body(&mut response)? {
        Ok(body) => body,
        Err(failure) => return Ok(failure),
    };
    let result = decode_ipc_result(&body).map_err(|e| anyhow!("{e}"))?;
    match format {
        OutputFormat::Table => print!("{}", render_table(&result)),
        other => print_result(&result, other)?,
    }
    Ok(ExitCode::SUCCESS)
}
