//! [`RunOptions`]: how a plan is run (workers, event limit, pacing, data directory, batch
//! size, sharding, brokers), shared by every layer of the runtime.

use std::path::PathBuf;

/// Rows per batch a source emits when nothing else is asked for.
pub const DEFAULT_BATCH_ROWS: usize = 8192;

/// How to run a plan.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Worker threads.
    pub workers: usize,
    /// Stop every generator after this many readings in total (overrides the YAML).
    pub events: Option<u64>,
    /// Pace generators to wall-clock time instead of running as fast as possible.
    pub realtime: bool,
    /// Where the embedded log and the dead-letter file live.
    pub data_dir: PathBuf,
    /// Rows per source batch.
    pub batch_rows: usize,
    /// Print a progress line to stderr every second.
    pub progress: bool,
    /// `(i, n)`: this process generates share `i` of `n` of every generator's fleet (an edge
    /// of a fleet split over `n` edge processes). `(0, 1)` generates all of it.
    pub shard: (usize, usize),
    /// Brokers of `kafka` nodes that name none (else the pipeline's `transport:` brokers,
    /// else `EDGEFLOW_BROKERS`, else `127.0.0.1:9092`).
    pub brokers: Option<String>,
    /// Extra librdkafka settings for `kafka` nodes.
    pub kafka_options: Vec<(String, String)>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            workers: 1,
            events: None,
            realtime: false,
            data_dir: PathBuf::from("edgeflow-data"),
            batch_rows: DEFAULT_BATCH_ROWS,
            progress: false,
            shard: (0, 1),
            brokers: None,
            kafka_options: Vec::new(),
        }
    }
}
