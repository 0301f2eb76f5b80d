//! The embedded log: the default transport between the edge and cloud halves of a pipeline.
//!
//! Each topic is a directory; each producer appends [`Frame`]s to its own file in it, so
//! per-producer order is kept without locks. A consumer tails every producer file of a topic
//! that its filter accepts, discovering new producers as they appear. Records are
//! length-prefixed and CRC-checked: a torn write at the end of a file is simply not read
//! yet, a corrupt record is an error. This is the same producer/consumer shape the Kafka
//! transport has (topic, producer key = edge id, headers + payload).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::ConnectorError;
use crate::frame::Frame;
use crate::record::{self, decode_body, encode_record};
/// How often a consumer looks for new producer files.
const RESCAN_EVERY: Duration = Duration::from_millis(50);

/// A directory of topics.
#[derive(Debug, Clone)]
pub struct EmbeddedLog {
    dir: PathBuf,
}

fn io_error(what: String) -> impl FnOnce(std::io::Error) -> ConnectorError {
    move |source| ConnectorError::Io {
        context: what,
        source,
    }
}

impl EmbeddedLog {
    /// Opens (creating it if needed) a log directory.
    pub fn open(dir: &Path) -> Result<Self, ConnectorError> {
        fs::create_dir_all(dir).map_err(io_error(format!(
            "creating log directory {}",
            dir.display()
        )))?;
        Ok(EmbeddedLog {
            dir: dir.to_path_buf(),
        })
    }

    /// Opens a log directory after deleting everything in it.
    pub fn open_empty(dir: &Path) -> Result<Self, ConnectorError> {
        if dir.exists() {
            fs::remove_dir_all(dir).map_err(io_error(format!(
                "clearing log directory {}",
                dir.display()
            )))?;
        }
        Self::open(dir)
    }

    fn topic_dir(&self, topic: &str) -> PathBuf {
        self.dir.join(topic)
    }

    /// A producer appending to `topic` under the name `producer` (e.g. the edge id).
    pub fn producer(&self, topic: &str, producer: &str) -> Result<LogProducer, ConnectorError> {
        let dir = self.topic_dir(topic);
        fs::create_dir_all(&dir).map_err(io_error(format!(
            "creating topic directory {}",
            dir.display()
        )))?;
        let path = dir.join(format!("{producer}.log"));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_error(format!("opening {}", path.display())))?;
        Ok(LogProducer {
            path,
            out: BufWriter::new(file),
            record: Vec::new(),
        })
    }

    /// A consumer of `topic` reading the producers whose name `accept` returns true for.
    pub fn consumer(
        &self,
        topic: &str,
        accept: impl Fn(&str) -> bool + Send + 'static,
    ) -> LogConsumer {
        LogConsumer {
            dir: self.topic_dir(topic),
            accept: Box::new(accept),
            files: BTreeMap::new(),
            last_scan: None,
            buffer: Vec::new(),
        }
    }
}

/// Appends frames to one producer file.
#[derive(Debug)]
pub struct LogProducer {
    path: PathBuf,
    out: BufWriter<File>,
    record: Vec<u8>,
}

impl LogProducer {
    /// Appends a frame and hands it to the OS (readers in other threads see it at once).
    /// Returns the number of bytes written.
    pub fn append(&mut self, frame: &Frame) -> Result<usize, ConnectorError> {
        self.record.clear();
        encode_record(frame, &[], &mut self.record)?;
        let what = || format!("appending to {}", self.path.display());
        self.out.write_all(&self.record).map_err(io_error(what()))?;
        self.out.flush().map_err(io_error(what()))?;
        Ok(self.record.len())
    }
}

struct TailedFile {
    file: File,
    offset: u64,
}

/// Tails the producer files of one topic.
pub struct LogConsumer {
    dir: PathBuf,
    accept: Box<dyn Fn(&str) -> bool + Send>,
    files: BTreeMap<String, TailedFile>,
    last_scan: Option<Instant>,
    buffer: Vec<u8>,
}

impl LogConsumer {
    fn rescan(&mut self) -> Result<(), ConnectorError> {
        if self.last_scan.is_some_and(|t| t.elapsed() < RESCAN_EVERY) {
            return Ok(());
        }
        self.last_scan = Some(Instant::now());
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Ok(()); // no producer has written yet
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(producer) = name.strip_suffix(".log") else {
                continue;
            };
            if self.files.contains_key(producer) || !(self.accept)(producer) {
                continue;
            }
            let path = entry.path();
            let file =
                File::open(&path).map_err(io_error(format!("opening {}", path.display())))?;
            self.files
                .insert(producer.to_string(), TailedFile { file, offset: 0 });
        }
        Ok(())
    }

    /// Up to `max` frames not read before, in per-producer order.
    pub fn poll(&mut self, max: usize) -> Result<Vec<Frame>, ConnectorError> {
        self.rescan()?;
        let mut frames = Vec::new();
        for (producer, tailed) in self.files.iter_mut() {
            while frames.len() < max {
                match read_record(tailed, &mut self.buffer, producer)? {
                    Some(frame) => frames.push(frame),
                    None => break,
                }
            }
        }
        Ok(frames)
    }
}

fn read_record(
    tailed: &mut TailedFile,
    buffer: &mut Vec<u8>,
    producer: &str,
) -> Result<Option<Frame>, ConnectorError> {
    let what = format!("producer {producer}");
    let size = tailed
        .file
        .metadata()
        .map_err(io_error(format!("reading {what}")))?
        .len();
    let Some(next) = record::read_record(&mut tailed.file, tailed.offset, size, buffer, &what)?
    else {
        return Ok(None); // the producer is still writing this record
    };
    tailed.offset = next;
    Ok(Some(decode_body(buffer, &what)?.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{FrameHeader, FrameKind};

    fn frame(edge: &str, sequence: u64, payload: &[u8]) -> Frame {
        Frame {
            header: FrameHeader {
                pipeline: "p".into(),
                stream: "s".into(),
                edge_id: edge.into(),
                incarnation: 0,
                sequence,
                watermark: sequence as i64 * 10,
                schema_fingerprint: 7,
                kind: FrameKind::Data,
            },
            payload: payload.to_vec(),
            signature: None,
        }
    }

    #[test]
    fn consumer_reads_every_accepted_producer_in_order_and_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open_empty(dir.path()).unwrap();
        let mut a = log.producer("t", "edge-a").unwrap();
        let mut b = log.producer("t", "edge-b").unwrap();
        let mut ignored = log.producer("t", "other").unwrap();
        for seq in 1..=3 {
            a.append(&frame("edge-a", seq, b"aa")).unwrap();
            b.append(&frame("edge-b", seq, b"b")).unwrap();
            ignored.append(&frame("other", seq, b"x")).unwrap();
        }
        let mut consumer = log.consumer("t", |p| p.starts_with("edge-"));
        let frames = consumer.poll(100).unwrap();
        assert_eq!(frames.len(), 6);
        let seqs_a: Vec<u64> = frames
            .iter()
            .filter(|f| f.header.edge_id == "edge-a")
            .map(|f| f.header.sequence)
            .collect();
        assert_eq!(seqs_a, vec![1, 2, 3]);
        assert!(consumer.poll(100).unwrap().is_empty());
        a.append(&frame("edge-a", 4, b"late")).unwrap();
        let more = consumer.poll(100).unwrap();
        assert_eq!(more.len(), 1);
        assert_eq!(more[0].payload, b"late");
    }

    #[test]
    fn torn_tail_is_not_read_and_corruption_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open_empty(dir.path()).unwrap();
        let mut p = log.producer("t", "e").unwrap();
        p.append(&frame("e", 1, b"one")).unwrap();
        let path = dir.path().join("t").join("e.log");
        let mut bytes = fs::read(&path).unwrap();
        let whole = bytes.clone();
        bytes.extend_from_slice(&whole[..whole.len() - 3]); // a second record, torn
        fs::write(&path, &bytes).unwrap();
        let mut consumer = log.consumer("t", |_| true);
        assert_eq!(consumer.poll(10).unwrap().len(), 1);
        assert!(consumer.poll(10).unwrap().is_empty());

        let mut corrupt = whole.clone();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        fs::write(&path, &corrupt).unwrap();
        let mut fresh = log.consumer("t", |_| true);
        let err = fresh.poll(10).unwrap_err().to_string();
        assert!(err.contains("checksum"), "{err}");
    }
}
