//! What every operator of a run shares: metrics, tables, the system tables' state, the
//! dead-letter output, file sinks, the stop flag and the first failure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arrow::record_batch::RecordBatch;
use edgeflow_connectors::file_sink::{DeadLetterWriter, FileSink};
use edgeflow_connectors::file_source::DeadLetter;

use super::control::ControlChannel;
use crate::error::EngineError;
use crate::metrics::{Metrics, NodeMetrics};
use crate::plan::Plan;
use crate::sql::{Catalog, SystemState};

/// Shared state of one run; cheap to clone (everything is behind `Arc`s).
#[derive(Clone)]
pub struct RunContext {
    /// Pipeline name.
    pub pipeline: String,
    /// `<data_dir>/<pipeline>`: the run's files.
    pub pipeline_dir: PathBuf,
    /// The process's metrics.
    pub metrics: Metrics,
    /// The tables `table` nodes write.
    pub catalog: Arc<Catalog>,
    /// What the SQL system tables show: node watermarks, cut producers.
    pub system: Arc<SystemState>,
    /// Set to ask every source to finish (Ctrl-C, or a failure).
    pub stop: Arc<AtomicBool>,
    /// The control channel: records from the cloud to edge nodes, and acknowledgements.
    pub control: Arc<ControlChannel>,
    dead_letters: Arc<Mutex<DeadLetterStore>>,
    file_sinks: Arc<Mutex<BTreeMap<String, FileSink>>>,
    failure: Arc<Mutex<Option<String>>>,
}

/// Dead letters stored in full before sampling starts.
pub const DEAD_LETTERS_STORED_IN_FULL: u64 = 10_000;
/// After the first [`DEAD_LETTERS_STORED_IN_FULL`], one dead letter in this many is stored.
pub const DEAD_LETTER_SAMPLING: u64 = 100;

/// The dead-letter file and how much of a storm it has taken: a pipeline that rejects every
/// row must not fill the disk with copies of its input, so after the first
/// [`DEAD_LETTERS_STORED_IN_FULL`] records one in [`DEAD_LETTER_SAMPLING`] is stored. The
/// counts (metrics, the run's summary) stay exact.
struct DeadLetterStore {
    writer: DeadLetterWriter,
    seen: u64,
    stored: u64,
}

impl DeadLetterStore {
    /// Whether the next dead letter is stored.
    fn keep_next(&mut self) -> bool {
        let index = self.seen;
        self.seen += 1;
        let keep = index < DEAD_LETTERS_STORED_IN_FULL
            || (index - DEAD_LETTERS_STORED_IN_FULL).is_multiple_of(DEAD_LETTER_SAMPLING);
        self.stored += u64::from(keep);
        keep
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking writer cannot leave these half-updated in a way that matters more than
    // losing the rest of the run's output.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl RunContext {
    /// Prepares a run: creates `<data_dir>/<pipeline>/`, the dead-letter file in it, and
    /// every file sink of the plan.
    pub fn new(
        plan: &Plan,
        data_dir: &Path,
        metrics: Metrics,
        catalog: Arc<Catalog>,
    ) -> Result<Self, EngineError> {
        let pipeline_dir = data_dir.join(&plan.pipeline);
        std::fs::create_dir_all(&pipeline_dir).map_err(|source| EngineError::Io {
            what: format!("creating data directory {}", pipeline_dir.display()),
            source,
        })?;
        let dead_letter_path = pipeline_dir.join("dead_letter.jsonl");
        let dead_letters = DeadLetterWriter::create(&dead_letter_path).map_err(|source| {
            EngineError::Connector {
                node: "dead letters".into(),
                source,
            }
        })?;
        let mut file_sinks = BTreeMap::new();
        for node in &plan.nodes {
            if let Some((path, format)) = node.settings.output_file() {
                let sink =
                    FileSink::create(path, format, node.schema.to_arrow()).map_err(|source| {
                        EngineError::Connector {
                            node: node.id.clone(),
                            source,
                        }
                    })?;
                file_sinks.insert(node.id.clone(), sink);
            }
        }
        Ok(RunContext {
            pipeline: plan.pipeline.clone(),
            pipeline_dir,
            control: Arc::new(ControlChannel::new(plan, &metrics, &catalog)),
            system: Arc::new(SystemState::new(plan, metrics.clone())),
            metrics,
            catalog,
            stop: Arc::new(AtomicBool::new(false)),
            dead_letters: Arc::new(Mutex::new(DeadLetterStore {
                writer: dead_letters,
                seen: 0,
                stored: 0,
            })),
            file_sinks: Arc::new(Mutex::new(file_sinks)),
            failure: Arc::new(Mutex::new(None)),
        })
    }

    /// Where dead letters are written.
    pub fn dead_letter_path(&self) -> PathBuf {
        self.pipeline_dir.join("dead_letter.jsonl")
    }

    /// Records a failure that ends the run (the first one is kept) and asks sources to stop.
    pub fn fail(&self, message: String) {
        tracing::error!(pipeline = %self.pipeline, %message, "pipeline failed");
        let mut failure = lock(&self.failure);
        if failure.is_none() {
            *failure = Some(message);
        }
        self.stop.store(true, Ordering::SeqCst);
    }

    /// The failure that ended the run, if any.
    pub fn failure(&self) -> Option<String> {
        lock(&self.failure).clone()
    }

    /// Whether sources should finish now.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// How many dead letters were stored in the dead-letter file (all of them unless a storm
    /// made it sample).
    pub fn dead_letters_stored(&self) -> u64 {
        lock(&self.dead_letters).stored
    }

    /// Writes records that could not be processed, with their reasons, and counts them
    /// (every one; beyond [`DEAD_LETTERS_STORED_IN_FULL`] a sample is stored).
    pub fn dead_letter(&self, metrics: &NodeMetrics, letters: &[DeadLetter]) {
        if letters.is_empty() {
            return;
        }
        metrics.dead_letters.inc_by(letters.len() as u64);
        let mut store = lock(&self.dead_letters);
        let keep: Vec<bool> = letters.iter().map(|_| store.keep_next()).collect();
        let written = if keep.iter().all(|k| *k) {
            store.writer.write(letters)
        } else {
            let sampled: Vec<DeadLetter> = letters
                .iter()
                .zip(&keep)
                .filter(|(_, keep)| **keep)
                .map(|(letter, _)| letter.clone())
                .collect();
            store.writer.write(&sampled)
        };
        if let Err(e) = written {
            drop(store);
            self.fail(format!(
                "writing dead letters to {}: {e}",
                self.dead_letter_path().display()
            ));
        }
    }

    /// Appends a batch to a `file` sink node's file.
    pub fn write_file_sink(&self, node: &str, batch: &RecordBatch) {
        let mut sinks = lock(&self.file_sinks);
        let Some(sink) = sinks.get_mut(node) else {
            drop(sinks);
            self.fail(format!(
                "internal error (a bug in edgeflow): file sink {node} was not opened"
            ));
            return;
        };
        if let Err(e) = sink.write(batch) {
            drop(sinks);
            self.fail(format!("node \"{node}\": {e}"));
        }
    }

    /// Flushes the dead letters and finishes every file sink (writes Parquet footers).
    pub fn finish_sinks(&self) -> Result<(), EngineError> {
        let sinks = std::mem::take(&mut *lock(&self.file_sinks));
        for (node, sink) in sinks {
            sink.finish()
                .map_err(|source| EngineError::Connector { node, source })?;
        }
        lock(&self.dead_letters)
            .writer
            .flush()
            .map_err(|source| EngineError::Connector {
                node: "dead letters".into(),
                source,
            })
    }
}
