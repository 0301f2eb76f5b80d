//! The `edgeflow` command line: run, validate, graph and query pipelines, and train models.
//!
//! The commands live in `cli/`: `run.rs` (`run`, `edge`, `cloud`), `transport.rs` (the
//! Kafka flags of `edge` and `cloud`), `inspect.rs` (`validate`, `graph`), `train.rs`,
//! `client.rs` (`sql`, `control`: clients of a serving process), `keys.rs` (`keys new`: an
//! edge's key pair).

mod cli;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use cli::OutputFormat;
use cli::client::{ControlArgs, control_client, sql_client};
use cli::inspect::{GraphFormat, graph, validate};
use cli::keys::{KeysCommand, new_keys};
use cli::run::{Role, RunArgs, run};
use cli::train::{TrainArgs, train};
#[cfg(feature = "kafka")]
use cli::transport::{IdleArgs, SpoolArgs, TransportArgs, cloud_role, edge_role, parse_shard};

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
        /// This edge's private key (`edgeflow keys new` writes it): every frame is signed
        /// with it. Without it frames are unsigned, and a cloud with --edge-keys rejects them.
        #[arg(long, env = "EDGEFLOW_EDGE_KEY")]
        edge_key: Option<PathBuf>,
        #[command(flatten)]
        transport: TransportArgs,
        #[command(flatten)]
        spool: SpoolArgs,
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
        /// The registry of enrolled edges: a directory of `<edge-id>.pub` files, read at
        /// start. Only frames signed by their edge's enrolled key are applied; the others are
        /// dead letters. Without it frames are not authenticated.
        #[arg(long, env = "EDGEFLOW_EDGE_KEYS")]
        edge_keys: Option<PathBuf>,
        #[command(flatten)]
        transport: TransportArgs,
        #[command(flatten)]
        idle: IdleArgs,
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
    /// Manage edge identities: key pairs that sign the frames an edge sends.
    #[command(subcommand)]
    Keys(KeysCommand),
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

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EDGEFLOW_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: a log file or a journal gets plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Run(args) => run(args, |_| Ok(Role::Embedded)),
        #[cfg(feature = "kafka")]
        Command::Edge {
            run: args,
            edge_id,
            shard,
            edge_key,
            transport,
            spool,
        } => run(args, edge_role(edge_id, shard, edge_key, transport, spool)),
        #[cfg(feature = "kafka")]
        Command::Cloud {
            run: args,
            edges,
            group,
            edge_keys,
            transport,
            idle,
        } => run(args, cloud_role(edges, group, edge_keys, transport, idle)),
        Command::Keys(KeysCommand::New { edge_id, dir }) => new_keys(&edge_id, &dir),
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
