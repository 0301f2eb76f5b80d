//! The `edgeflow` command line: run, validate, graph and query pipelines, and train models.

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
use edgeflow::sql::pgwire;
use edgeflow::sql::{
    QueryEngine, QueryResult, ResultFormat, SqlLimitArgs, decode_ipc_result, encode_result,
    render_table,
};
#[cfg(feature = "kafka")]
use edgeflow_connectors::spool::{SpoolOptions, WhenFull};

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
    #[cfg(feature = "kafka")]
    /// Run the edge half of a pipeline as one edge, sending to the cloud through Kafka.
    Edge {
        #[command(flatten)]
        run: RunArgs,
        /// This edge's id (the Kafka key of its frames).
        #[arg(long, env = "EDGEFLOW_EDGE_ID")]
        edge_id: String,
        /// Generate share I of N of every generator's fleet (`I/N`): one edge of N.
        #[arg(long, env = "EDGEFLOW_SHARD", value_parser = parse_shard, default_value = "0/1")]
        shard: (usize, usize),
        #[command(flatten)]
        transport: TransportArgs,
    },
    #[cfg(feature = "kafka")]
    /// Run the cloud half of a pipeline, reading the edges' topics from Kafka.
    Cloud {
        #[command(flatten)]
        run: RunArgs,
        /// Edges to wait for from the start (comma-separated); the cloud finishes when all
        /// of them have. Without it, the cloud takes whatever edges appear until stopped.
        #[arg(long, env = "EDGEFLOW_EDGES", value_delimiter = ',')]
        edges: Vec<String>,
        /// Kafka consumer group (offset commits, for lag monitoring).
        #[arg(long, env = "EDGEFLOW_GROUP")]
        group: Option<String>,
        #[command(flatten)]
        transport: TransportArgs,
    },
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
    /// Train the anomaly autoencoder of `infer` nodes on normal readings; write the model file.
    Train(TrainArgs),
    /// Send a control record to an edge node through a serving cloud (or `edgeflow run
    /// --serve`) process; prints the record as sent, with its id.
    Control(ControlArgs),
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
#[command(group(clap::ArgGroup::new("action").required(true).args([
    "set_threshold", "swap_model", "model_weights", "enable", "disable", "window_size", "sampling",
])))]
struct ControlArgs {
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

#[derive(clap::Args)]
struct TrainArgs {
    /// Normal readings: a .csv, .jsonl or .parquet file, in event-time order per device.
    /// Without it, the synthetic fleet with anomalies switched off.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Schema of a CSV or JSON-lines input, `name:type,...` (default: the generator's
    /// `ts:timestamp_ms,device:string,site:string,sensor:string,value:f64`).
    #[arg(long)]
    schema: Option<String>,
    /// The model file to write (burn record, conventionally `.bpk`).
    #[arg(long, short)]
    out: PathBuf,
    /// Fields that identify a device's signal (default: device and sensor, those present).
    #[arg(long, value_delimiter = ',')]
    key: Vec<String>,
    /// The numeric field to model.
    #[arg(long, default_value = "value")]
    value: String,
    /// The event-time field.
    #[arg(long, default_value = "ts")]
    time_field: String,
    /// Readings per window (the model's input width).
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// Width of the hidden layers.
    #[arg(long, default_value_t = 16)]
    hidden: usize,
    /// Width of the bottleneck.
    #[arg(long, default_value_t = 4)]
    latent: usize,
    /// Passes over the training windows.
    #[arg(long, default_value_t = 20)]
    epochs: usize,
    /// Windows per gradient step.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 3e-3)]
    learning_rate: f64,
    /// Seed of the initial weights and the batch order (and of the generator).
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Windows per device that only build its baseline before scoring.
    #[arg(long, default_value_t = 16)]
    warmup: u32,
    /// Generator input: number of devices.
    #[arg(long, default_value_t = 50)]
    devices: u32,
    /// Generator input: readings in total.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
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
    /// With `--serve`, also serve SQL over the Postgres wire protocol here (`off`: don't).
    #[arg(long, env = "EDGEFLOW_PG_LISTEN", default_value = "127.0.0.1:5433", value_parser = parse_pg_listen)]
    pg_listen: PgListen,
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
    #[command(flatten)]
    sql_limits: SqlLimitArgs,
}

/// Where the Postgres wire protocol server listens, if anywhere.
#[derive(Clone, Copy)]
struct PgListen(Option<SocketAddr>);

fn parse_pg_listen(value: &str) -> Result<PgListen, String> {
    if value.eq_ignore_ascii_case("off") {
        return Ok(PgListen(None));
    }
    value
        .parse()
        .map(|address| PgListen(Some(address)))
        .map_err(|e| format!("{e} (expected ADDRESS:PORT or `off`)"))
}

/// How `edge` and `cloud` reach Kafka; each overrides the pipeline's `transport:` section.
#[cfg(feature = "kafka")]
#[derive(clap::Args)]
struct TransportArgs {
    /// Kafka bootstrap servers [default: 127.0.0.1:9092].
    #[arg(long, env = "EDGEFLOW_BROKERS")]
    brokers: Option<String>,
    /// Partitions of the topics edgeflow creates [default: 3].
    #[arg(long, env = "EDGEFLOW_PARTITIONS")]
    partitions: Option<u32>,
    /// An edge silent this long stops holding back the cloud's watermark [default: 30s].
    #[arg(long, env = "EDGEFLOW_IDLE_TIMEOUT")]
    idle_timeout: Option<String>,
    /// Bound of the edge's spool in bytes [default: 1 GiB].
    #[arg(long, env = "EDGEFLOW_SPOOL_MAX_BYTES")]
    spool_max_bytes: Option<u64>,
    /// When the spool is full: block, or drop_oldest_summaries [default: block].
    #[arg(long, env = "EDGEFLOW_SPOOL_WHEN_FULL")]
    spool_when_full: Option<String>,
    /// Extra librdkafka setting NAME=VALUE (repeatable), e.g. `security.protocol=sasl_ssl`.
    #[arg(long = "kafka-option", value_parser = parse_key_value)]
    kafka_options: Vec<(String, String)>,
}

#[cfg(feature = "kafka")]
fn parse_shard(text: &str) -> Result<(usize, usize), String> {
    let (i, n) = text
        .split_once('/')
        .ok_or_else(|| format!("expected I/N such as 0/2, got {text:?}"))?;
    let (i, n): (usize, usize) = (
        i.trim()
            .parse()
            .map_err(|_| format!("bad shard index {i:?}"))?,
        n.trim()
            .parse()
            .map_err(|_| format!("bad shard count {n:?}"))?,
    );
    if n == 0 || i >= n {
        return Err(format!("shard {i}/{n}: need 0 <= I < N"));
    }
    Ok((i, n))
}

#[cfg(feature = "kafka")]
fn parse_key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .ok_or_else(|| format!("expected NAME=VALUE, got {text:?}"))
}

#[cfg(feature = "kafka")]
impl TransportArgs {
    /// Flags (and their variables) over the pipeline's `transport:` section over defaults.
    fn resolve(&self, plan: &Plan) -> Result<runtime::remote::TransportOptions> {
        let yaml = &plan.transport;
        let idle_timeout_ms = match &self.idle_timeout {
            Some(text) => edgeflow::spec::parse_duration_ms(text)
                .map_err(|hint| anyhow!("--idle-timeout {text:?}: {hint}"))?,
            None => yaml.idle_timeout_ms.unwrap_or(30_000),
        };
        let when_full = match self.spool_when_full.as_deref().or(yaml.spool_when_full) {
            None => WhenFull::Block,
            Some(name) => WhenFull::from_name(name).ok_or_else(|| {
                anyhow!("--spool-when-full {name:?}: expected block or drop_oldest_summaries")
            })?,
        };
        Ok(runtime::remote::TransportOptions {
            brokers: self
                .brokers
                .clone()
                .or_else(|| yaml.brokers.clone())
                .unwrap_or_else(|| "127.0.0.1:9092".into()),
            partitions: self.partitions.or(yaml.partitions).unwrap_or(3).max(1) as i32,
            idle_timeout: std::time::Duration::from_millis(idle_timeout_ms.max(0) as u64),
            spool: SpoolOptions {
                max_bytes: self
                    .spool_max_bytes
                    .or(yaml.spool_max_bytes)
                    .unwrap_or(SpoolOptions::default().max_bytes),
                when_full,
                ..SpoolOptions::default()
            },
            kafka: self.kafka_options.clone(),
        })
    }
}

/// Which process a run is.
enum Role {
    Embedded,
    #[cfg(feature = "kafka")]
    Edge(runtime::remote::EdgeOptions),
    #[cfg(feature = "kafka")]
    Cloud(runtime::remote::CloudOptions),
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
        Command::Run(args) => run(args, |_| Ok(Role::Embedded)),
        #[cfg(feature = "kafka")]
        Command::Edge {
            run: args,
            edge_id,
            shard,
            transport,
        } => run(args, move |plan| {
            if !edgeflow::spec::is_valid_edge_id(&edge_id) {
                return Err(anyhow!(
                    "--edge-id {edge_id:?}: use letters, digits, '-', '_' and '.'"
                ));
            }
            Ok(Role::Edge(runtime::remote::EdgeOptions {
                edge_id: edge_id.clone(),
                shard,
                transport: transport.resolve(plan)?,
            }))
        }),
        #[cfg(feature = "kafka")]
        Command::Cloud {
            run: args,
            edges,
            group,
            transport,
        } => run(args, move |plan| {
            Ok(Role::Cloud(runtime::remote::CloudOptions {
                edges: edges.clone(),
                group: group
                    .clone()
                    .unwrap_or_else(|| format!("edgeflow-{}-cloud", plan.pipeline)),
                transport: transport.resolve(plan)?,
            }))
        }),
        Command::Validate { files } => validate(&files),
        Command::Train(args) => train(args),
        Command::Graph { file, format } => graph(&file, format),
        Command::Sql {
            sql,
            server,
            format,
        } => sql_client(&sql, &server, format),
        Command::Control(args) => control_client(args),
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

fn run(args: RunArgs, role: impl FnOnce(&Plan) -> Result<Role>) -> Result<ExitCode> {
    let plan = match load(&args.file) {
        Ok(plan) => Arc::new(plan),
        Err(code) => return Ok(code),
    };
    let role = role(&plan)?;
    let (shard, brokers, kafka_options) = match &role {
        #[cfg(feature = "kafka")]
        Role::Edge(edge) => (
            edge.shard,
            Some(edge.transport.brokers.clone()),
            edge.transport.kafka.clone(),
        ),
        #[cfg(feature = "kafka")]
        Role::Cloud(cloud) => (
            (0, 1),
            Some(cloud.transport.brokers.clone()),
            cloud.transport.kafka.clone(),
        ),
        Role::Embedded => ((0, 1), None, Vec::new()),
    };
    let options = RunOptions {
        shard,
        brokers,
        kafka_options,
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
    let engine = QueryEngine::new(catalog)
        .with_system(ctx.system.clone())
        .with_limits(args.sql_limits.query_limits());
    let state = Arc::new(ServerState {
        pipeline: plan.pipeline.clone(),
        engine: engine.clone(),
        metrics,
        finished: Default::default(),
        control: plan.control.is_some().then(|| ctx.control.clone()),
        limits: args.sql_limits.server_limits(),
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
    let (pg_shutdown_tx, pg_shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let pg_server = match args.pg_listen.0 {
        Some(pg_listen) if args.serve => {
            let listener = tokio
                .block_on(tokio::net::TcpListener::bind(pg_listen))
                .with_context(|| format!("listening on {pg_listen} (--pg-listen)"))?;
            let address = listener
                .local_addr()
                .context("reading the listening address")?;
            eprintln!(
                "edgeflow: serving SQL over the Postgres protocol on {address} (psql -h {} -p {})",
                address.ip(),
                address.port()
            );
            let grace = args.sql_limits.shutdown_grace;
            Some(
                tokio.spawn(pgwire::serve(listener, engine.clone(), grace, async {
                    let _ = pg_shutdown_rx.await;
                })),
            )
        }
        _ => None,
    };
    {
        let stop = ctx.stop.clone();
        tokio.spawn(async move {
            let mut terminate =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(signal) => signal,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot watch SIGTERM");
                        return;
                    }
                };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            eprintln!("\nedgeflow: stopping (Ctrl-C again to abort)");
            stop.store(true, Ordering::SeqCst);
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        });
    }
    let report = match &role {
        Role::Embedded => runtime::run_embedded(plan.clone(), &options, ctx.clone())?,
        #[cfg(feature = "kafka")]
        Role::Edge(edge) => runtime::remote::run_edge(plan.clone(), &options, edge, ctx.clone())?,
        #[cfg(feature = "kafka")]
        Role::Cloud(cloud) => {
            runtime::remote::run_cloud(plan.clone(), &options, cloud, ctx.clone())?
        }
    };
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
        // Each statement of the text in order, as psql does; an error ends the text.
        for result in tokio.block_on(engine.query_script(sql, None)) {
            print_result(&result.map_err(|e| anyhow!("{e}"))?, args.format)?;
        }
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
        let _ = pg_shutdown_tx.send(());
        tokio
            .block_on(server)
            .context("the HTTP server task failed")?
            .context("serving HTTP")?;
    }
    if let Some(pg_server) = pg_server {
        tokio
            .block_on(pg_server)
            .context("the Postgres protocol server task failed")?
            .context("serving the Postgres protocol")?;
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

fn train(args: TrainArgs) -> Result<ExitCode> {
    use edgeflow::train::{TrainOptions, TrainingInput, parse_schema, train_model, write_model};
    use edgeflow_operators::infer::model::ModelShape;
    use edgeflow_operators::infer::train::TrainConfig;

    let input = match args.input {
        Some(path) => TrainingInput::File {
            path,
            schema: args
                .schema
                .as_deref()
                .map(parse_schema)
                .transpose()
                .map_err(|e| anyhow!("--schema: {e}"))?,
        },
        None => TrainingInput::Generator {
            devices: args.devices,
            events: args.events,
            seed: args.seed,
        },
    };
    let options = TrainOptions {
        input,
        key: args.key,
        value: args.value,
        time_field: args.time_field,
        config: TrainConfig {
            shape: ModelShape {
                window: args.window,
                hidden: args.hidden,
                latent: args.latent,
            },
            epochs: args.epochs,
            batch_size: args.batch_size,
            learning_rate: args.learning_rate,
            seed: args.seed,
            warmup_windows: args.warmup,
            ..TrainConfig::default()
        },
    };
    let outcome = train_model(&options)?;
    let size = write_model(&outcome.model, &args.out)?;
    let report = &outcome.report;
    let calibration = outcome.model.calibration();
    println!(
        "read {} readings ({} skipped as malformed) -> {} windows of {} from {} keys",
        outcome.readings, outcome.skipped, report.windows, options.config.shape.window, report.keys
    );
    if let Some(first) = &outcome.first_skipped {
        println!("first skipped record: {first}");
    }
    println!(
        "loss (mean squared reconstruction error, standardized units) per epoch: {}",
        report
            .epoch_loss
            .iter()
            .map(|l| format!("{l:.4}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "wrote {} ({size} bytes, {} parameters): reference error {:.4}, default threshold {:.3}, {:.1}s",
        args.out.display(),
        outcome.model.parameters(),
        calibration.reference_error,
        calibration.threshold,
        outcome.seconds
    );
    Ok(ExitCode::SUCCESS)
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

/// The `error` of a JSON error body, or the body as text.
fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}

fn control_client(args: ControlArgs) -> Result<ExitCode> {
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
    let status = response.status();
    let body = response
        .body_mut()
        .read_to_vec()
        .context("reading the response")?;
    if !status.is_success() {
        eprintln!("error: {}", error_message(&body));
        return Ok(ExitCode::FAILURE);
    }
    println!("{}", String::from_utf8_lossy(&body));
    Ok(ExitCode::SUCCESS)
}

fn sql_client(sql: &str, server: &str, format: OutputFormat) -> Result<ExitCode> {
    let (base, agent) = http_client(server);
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
        eprintln!("error: {}", error_message(&body));
        return Ok(ExitCode::FAILURE);
    }
    let result = decode_ipc_result(&body).map_err(|e| anyhow!("{e}"))?;
    match format {
        OutputFormat::Table => print!("{}", render_table(&result)),
        other => print_result(&result, other)?,
    }
    Ok(ExitCode::SUCCESS)
}
