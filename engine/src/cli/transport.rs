//! The Kafka flags of `edgeflow edge` and `edgeflow cloud` (the shared ones, the edge's spool,
//! the cloud's idle timeout: each command lists only its own), and the roles they make,
//! with the edge's key and the cloud's registry of enrolled edges loaded.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use edgeflow::plan::Plan;
use edgeflow::runtime;
use edgeflow_connectors::identity::{EdgeRegistry, FrameSigner};
use edgeflow_connectors::spool::{SpoolOptions, WhenFull};

use super::run::Role;

/// How `edge` and `cloud` reach Kafka; each overrides the pipeline's `transport:` section.
#[derive(clap::Args)]
pub struct TransportArgs {
    /// Kafka bootstrap servers [default: 127.0.0.1:9092].
    #[arg(long, env = "EDGEFLOW_BROKERS")]
    brokers: Option<String>,
    /// Partitions of the topics edgeflow creates [default: 3].
    #[arg(long, env = "EDGEFLOW_PARTITIONS")]
    partitions: Option<u32>,
    /// Extra librdkafka setting NAME=VALUE (repeatable), e.g. `security.protocol=sasl_ssl`.
    #[arg(long = "kafka-option", value_parser = parse_key_value)]
    kafka_options: Vec<(String, String)>,
}

/// The edge's spool: where frames wait while the broker is unreachable.
#[derive(clap::Args)]
pub struct SpoolArgs {
    /// Bound of the edge's spool in bytes [default: 1 GiB].
    #[arg(long, env = "EDGEFLOW_SPOOL_MAX_BYTES")]
    spool_max_bytes: Option<u64>,
    /// When the spool is full: block, or drop_oldest_summaries [default: block].
    #[arg(long, env = "EDGEFLOW_SPOOL_WHEN_FULL")]
    spool_when_full: Option<String>,
}

/// How the cloud treats silent edges.
#[derive(clap::Args)]
pub struct IdleArgs {
    /// An edge silent this long stops holding back the cloud's watermark [default: 30s].
    #[arg(long, env = "EDGEFLOW_IDLE_TIMEOUT")]
    idle_timeout: Option<String>,
}

/// Parses `I/N` (share I of N, 0 <= I < N).
pub fn parse_shard(text: &str) -> Result<(usize, usize), String> {
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

/// Parses `NAME=VALUE`.
fn parse_key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .ok_or_else(|| format!("expected NAME=VALUE, got {text:?}"))
}

impl TransportArgs {
    /// Flags (and their variables) over the pipeline's `transport:` section over defaults;
    /// the other role's settings come from the section and defaults only.
    fn resolve(
        &self,
        plan: &Plan,
        spool: Option<&SpoolArgs>,
        idle: Option<&IdleArgs>,
    ) -> Result<runtime::remote::TransportOptions> {
        let yaml = &plan.transport;
        let idle_timeout_ms = match idle.and_then(|i| i.idle_timeout.as_ref()) {
            Some(text) => edgeflow::spec::parse_duration_ms(text)
                .map_err(|hint| anyhow!("--idle-timeout {text:?}: {hint}"))?,
            None => yaml.idle_timeout_ms.unwrap_or(30_000),
        };
        let when_full = match spool
            .and_then(|s| s.spool_when_full.as_deref())
            .or(yaml.spool_when_full)
        {
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
                max_bytes: spool
                    .and_then(|s| s.spool_max_bytes)
                    .or(yaml.spool_max_bytes)
                    .unwrap_or(SpoolOptions::default().max_bytes),
                when_full,
                ..SpoolOptions::default()
            },
            kafka: self.kafka_options.clone(),
        })
    }
}

/// The role of `edgeflow edge`: edge `edge_id`, generating share `shard` of the fleet,
/// signing its frames with the private key in `key` (if any).
pub fn edge_role(
    edge_id: String,
    shard: (usize, usize),
    key: Option<PathBuf>,
    transport: TransportArgs,
    spool: SpoolArgs,
) -> impl FnOnce(&Plan) -> Result<Role> {
    move |plan| {
        if !edgeflow::spec::is_valid_edge_id(&edge_id) {
            return Err(anyhow!(
                "--edge-id {edge_id:?}: use letters, digits, '-', '_' and '.'"
            ));
        }
        let signer = match &key {
            Some(path) => {
                let signer = FrameSigner::load(path)
                    .with_context(|| format!("--edge-key {}", path.display()))?;
                let named = path.file_stem().and_then(|s| s.to_str());
                if named.is_some_and(|name| name != edge_id) {
                    eprintln!(
                        "edgeflow: warning: --edge-key {} looks like the key of another edge                          than {edge_id:?}: the cloud refuses frames signed with a key not                          enrolled for their edge id",
                        path.display()
                    );
                }
                Some(Arc::new(signer))
            }
            None => {
                eprintln!(
                    "edgeflow: warning: frames are unsigned: a cloud with a registry of edges                      (--edge-keys) rejects them; create a key with `edgeflow keys new                      --edge-id {edge_id}` and pass --edge-key {edge_id}.key"
                );
                None
            }
        };
        Ok(Role::Edge(runtime::remote::EdgeOptions {
            edge_id: edge_id.clone(),
            shard,
            transport: transport.resolve(plan, Some(&spool), None)?,
            signer,
        }))
    }
}

/// The role of `edgeflow cloud`: waits for `edges`, commits offsets as `group`, and applies
/// only frames signed by the edges enrolled in `edge_keys` (if given).
pub fn cloud_role(
    edges: Vec<String>,
    group: Option<String>,
    edge_keys: Option<PathBuf>,
    transport: TransportArgs,
    idle: IdleArgs,
) -> impl FnOnce(&Plan) -> Result<Role> {
    move |plan| {
        let enrolled = match &edge_keys {
            Some(dir) => {
                let registry = EdgeRegistry::load(dir)
                    .with_context(|| format!("--edge-keys {}", dir.display()))?;
                for edge in edges.iter().filter(|e| !registry.contains(e)) {
                    tracing::warn!(
                        edge = %edge,
                        registry = %registry.dir().display(),
                        "an edge of --edges is not enrolled: its frames will be rejected and                          the cloud will not finish; add its .pub file and restart"
                    );
                }
                Some(Arc::new(registry))
            }
            None => {
                tracing::warn!(
                    "frames are not authenticated: anyone who can write to the broker can                      forge data, watermarks and ends of any edge; enroll the edges' public                      keys with --edge-keys DIR"
                );
                None
            }
        };
        Ok(Role::Cloud(runtime::remote::CloudOptions {
            edges: edges.clone(),
            group: group
                .clone()
                .unwrap_or_else(|| format!("edgeflow-{}-cloud", plan.pipeline)),
            transport: transport.resolve(plan, None, Some(&idle))?,
            enrolled,
        }))
    }
}
