//! `edgeflow run`, `edge` and `cloud`: run a plan (both halves, or one as an edge or the
//! cloud), serve SQL over HTTP and the Postgres protocol, and answer `--query`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result, anyhow};
use edgeflow::metrics::Metrics;
use edgeflow::plan::Plan;
use edgeflow::runtime::{self, RunContext, RunOptions};
use edgeflow::sql::http::{ServerState, serve};
use edgeflow::sql::pgwire;
use edgeflow::sql::{QueryEngine, SqlLimitArgs};

use super::inspect::load_to_run;
use super::{OutputFormat, print_result};

#[derive(clap::Args)]
pub struct RunArgs {
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
    /// Exit with code 2 when more than this fraction of the source events became dead
    /// letters: a pipeline that rejects most of its input has not done its job (1: never).
    #[arg(long, env = "EDGEFLOW_MAX_DEAD_LETTER_RATIO", default_value_t = 0.5, value_parser = parse_ratio)]
    max_dead_letter_ratio: f64,
    #[command(flatten)]
    sql_limits: SqlLimitArgs,
}

fn parse_ratio(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("\"{value}\" is not a fraction between 0 and 1")),
    }
}

/// Exit code of a run that finished but rejected more of its input than allowed.
const EXIT_DEAD_LETTER_STORM: u8 = 2;

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

/// Which process a run is.
pub enum Role {
    Embedded,
    #[cfg(feature = "kafka")]
    Edge(runtime::remote::EdgeOptions),
    #[cfg(feature = "kafka")]
    Cloud(runtime::remote::CloudOptions),
}

/// Runs the pipeline of `args` as the process `role` says (given its plan).
pub fn run(args: RunArgs, role: impl FnOnce(&Plan) -> Result<Role>) -> Result<ExitCode> {
    let plan = match load_to_run(&args.file, &args.data_dir) {
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
        let stored = ctx.dead_letters_stored();
        if stored < report.dead_letters {
            eprintln!(
                "edgeflow: dead letters written to {} ({stored} of {} stored: the first {} in full, then one in {})",
                ctx.dead_letter_path().display(),
                report.dead_letters,
                runtime::DEAD_LETTERS_STORED_IN_FULL,
                runtime::DEAD_LETTER_SAMPLING,
            );
        } else if report.dead_letters > 0 {
            eprintln!(
                "edgeflow: dead letters written to {}",
                ctx.dead_letter_path().display()
            );
        }
    }
    // Loud even with --quiet: a pipeline that rejects most of its input is broken.
    let storm = report.source_events > 0
        && args.max_dead_letter_ratio < 1.0
        && report.dead_letters as f64 > args.max_dead_letter_ratio * report.source_events as f64;
    if storm {
        eprintln!(
            "edgeflow: error: {} dead letters for {} source events (more than --max-dead-letter-ratio {}): the pipeline rejected most of its input; the reasons are in {}",
            report.dead_letters,
            report.source_events,
            args.max_dead_letter_ratio,
            ctx.dead_letter_path().display()
        );
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
    Ok(if storm {
        ExitCode::from(EXIT_DEAD_LETTER_STORM)
    } else {
        ExitCode::SUCCESS
    })
}
