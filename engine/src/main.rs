//! The `edgeflow` command line: run, validate, graph and query pipelines.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result, anyhow};
use clap::{Parser, Subcommand, ValueEnum};
use edgeflow::metrics::Metrics;
use edgeflow::plan::{self, Plan};
use edgeflow::runtime::{self, RunContext, RunOptions};
use edgeflow::spec::Diagnostics;
use edgeflow::sql::http::{ServerState, serve};
use edgeflow::sql::{
    QueryEngine, QueryResult, ResultFormat, decode_ipc_result, encode_result, render_table,
};

#[derive(Parser)]
#[command(
    name = "edgeflow",
    version,
    about = "Stream processing for edge-cloud systems: YAML pipelines on timely dataflow"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline end to end in this process: edge and cloud halves joined by the embedded log.
    Run(RunArgs),
    /// Check pipeline files and report every problem with file:line:column.
    Validate {
        /// Pipeline files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print a pipeline's plan: nodes, placement and the edge/cloud cut with topic names.
    Graph {
        /// Pipeline file.
        file: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = GraphFormat::Text)]
        format: GraphFormat,
    },
    /// Run SQL against a serving edgeflow (`edgeflow run --serve`).
    Sql {
        /// The statement.
        sql: String,
        /// Address of the serving process.
        #[arg(long, env = "EDGEFLOW_SERVER", default_value = "127.0.0.1:7878")]
        server: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Pipeline file.
    file: PathBuf,
    /// Worker threads.
    #[arg(long, short = 'w', env = "EDGEFLOW_WORKERS", default_value_t = 1)]
    workers: usize,
    /// Stop every generator after this many readings in total.
    #[arg(long, env = "EDGEFLOW_EVENTS")]
    events: Option<u64>,
    /// Pace generators to wall-clock time instead of running as fast as possible.
    #[arg(long)]
    realtime: bool,
    /// After (or while) running, serve SQL, metrics and health over HTTP until Ctrl-C.
    #[arg(long)]
    serve: bool,
    /// Address to serve on.
    #[arg(long, env = "EDGEFLOW_LISTEN", default_value = "127.0.0.1:7878")]
    listen: SocketAddr,
    /// Run these queries when the pipeline has finished and print their results.
    #[arg(long = "query", short = 'q')]
    queries: Vec<String>,
    /// Format of query results.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    format: OutputFormat,
    /// Directory for the embedded log and dead letters.
    #[arg(long, env = "EDGEFLOW_DATA_DIR", default_value = "edgeflow-data")]
    data_dir: PathBuf,
    /// Rows per source batch.
    #[arg(long, default_value_t = runtime::DEFAULT_BATCH_ROWS)]
    batch_rows: usize,
    /// No progress line and no summary.
    #[arg(long)]
    quiet: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum GraphFormat {
    Text,
    Dot,
    Mermaid,
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputFormat {
    Table,
    Json,
    Csv,
}

impl OutputFormat {
    fn result_format(self) -> ResultFormat {
        match self {
            OutputFormat::Table => ResultFormat::Table,
            OutputFormat::Json => ResultFormat::Json,
            OutputFormat::Csv => ResultFormat::Csv,
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EDGEFLOW_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Run(args) => run(args),
        Command::Validate { files } => validate(&files),
        Command::Graph { file, format } => graph(&file, format),
        Command::Sql {
            sql,
            server,
            format,
        } => sql_client(&sql, &server, format),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Loads a plan, printing its diagnostics on failure.
fn load(file: &Path) -> Result<Plan, ExitCode> {
    plan::load_plan(file).map_err(|diagnostics: Diagnostics| {
        eprintln!("{diagnostics}");
        ExitCode::FAILURE
    })
}

fn validate(files: &[PathBuf]) -> Result<ExitCode> {
    let mut code = ExitCode::SUCCESS;
    for file in files {
        match load(file) {
            Ok(plan) => println!(
                "{}: ok (pipeline {}, {} nodes, {} cut topics)",
                file.display(),
                plan.pipeline,
                plan.nodes.len(),
                plan.topics.len()
            ),
            Err(failure) => code = failure,
        }
    }
    Ok(code)
}

fn graph(file: &Path, format: GraphFormat) -> Result<ExitCode> {
    let plan = match load(file) {
        Ok(plan) => plan,
        Err(code) => return Ok(code),
    };
    let text = match format {
        GraphFormat::Text => plan.render_text(),
        GraphFormat::Dot => plan.render_dot(),
        GraphFormat::Mermaid => plan.render_mermaid(),
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

fn run(args: RunArgs) -> Result<ExitCode> {
    let plan = match load(&args.file) {
        Ok(plan) => Arc::new(plan),
        Err(code) => return Ok(code),
    };
    let options = RunOptions {
        workers: args.workers.max(1),
        events: args.events,
        realtime: args.realtime,
        data_dir: args.data_dir.clone(),
        batch_rows: args.batch_rows.max(1),
        progress: !args.quiet,
    };
    let metrics = Metrics::new();
    let catalog = Arc::new(runtime::catalog_for(&plan, options.workers));
    let ctx = RunContext::new(&plan, &options.data_dir, metrics.clone(), catalog.clone())?;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let engine = QueryEngine::new(catalog);
    let state = Arc::new(ServerState {
        pipeline: plan.pipeline.clone(),
        engine: engine.clone(),
        metrics,
        finished: Default::default(),
    });
    let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let server = if args.serve {
        let listener = tokio
            .block_on(tokio::net::TcpListener::bind(args.listen))
            .with_context(|| format!("listening on {}", args.listen))?;
        let address = listener
            .local_addr()
            .context("reading the listening address")?;
        eprintln!(
            "edgeflow: serving SQL on http://{address}/sql (metrics at /metrics, health at /health)"
        );
        let state = state.clone();
        Some(tokio.spawn(serve(listener, state, async {
            let _ = shutdown_rx.await;
        })))
    } else {
        None
    };
    {
        let stop = ctx.stop.clone();
        tokio.spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\nedgeflow: stopping (Ctrl-C again to abort)");
                stop.store(true, Ordering::SeqCst);
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        });
    }
    let report = runtime::run_embedded(plan.clone(), &options, ctx.clone())?;
    state.finished.store(true, Ordering::SeqCst);
    if !args.quiet {
        eprintln!("edgeflow: {} finished: {report}", plan.pipeline);
        if report.dead_letters > 0 {
            eprintln!(
                "edgeflow: dead letters written to {}",
                ctx.dead_letter_path().display()
            );
        }
    }
    for sql in &args.queries {
        let result = tokio
            .block_on(engine.query(sql))
            .map_err(|e| anyhow!("{e}"))?;
        print_result(&result, args.format)?;
    }
    if let Some(server) = server {
        if !ctx.stopping() {
            eprintln!("edgeflow: pipeline finished; still serving SQL until Ctrl-C");
            let stop = ctx.stop.clone();
            tokio.block_on(async move {
                while !stop.load(Ordering::SeqCst) {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            });
        }
        let _ = shutdown_tx.send(());
        tokio
            .block_on(server)
            .context("the HTTP server task failed")?
            .context("serving HTTP")?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_result(result: &QueryResult, format: OutputFormat) -> Result<()> {
    let bytes = encode_result(result, format.result_format()).map_err(|e| anyhow!("{e}"))?;
    use std::io::Write;
    std::io::stdout()
        .write_all(&bytes)
        .context("writing to stdout")?;
    Ok(())
}

fn sql_client(sql: &str, server: &str, format: OutputFormat) -> Result<ExitCode> {
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
    let mut response = agent
        .post(&format!("{base}/sql"))
        .header("Accept", ResultFormat::ArrowIpc.content_type())
        .header("Content-Type", "text/plain")
        .send(sql)
        .with_context(|| {
            format!("cannot reach edgeflow at {base} (is `edgeflow run --serve` running?)")
        })?;
    let status = response.status();
    let body = response
        .body_mut()
        .read_to_vec()
        .context("reading the response")?;
    if !status.is_success() {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        eprintln!("error: {message}");
        return Ok(ExitCode::FAILURE);
    }
    let result = decode_ipc_result(&body).map_err(|e| anyhow!("{e}"))?;
    match format {
        OutputFormat::Table => print!("{}", render_table(&result)),
        other => print_result(&result, other)?,
    }
    Ok(ExitCode::SUCCESS)
}
