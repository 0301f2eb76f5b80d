//! The cloud's input log: every record the cloud consumed from a topic, with the Kafka
//! partition and offset it came from, appended before the record is applied.
//!
//! It is the cloud's checkpoint. The cloud's state (open windows, tables, the dedupe table of
//! the highest sequence applied per edge and stream) is a deterministic function of the
//! records it applied, in order; so a cloud killed at any point recovers by replaying its
//! input log and resumes consuming at the offset after the last logged record — the state
//! and the offsets it reflects are one file, written in one order, and cannot disagree. What
//! crosses the cut is summaries and exceptions, so the log stays small; a torn record at its
//! end (a crash mid-write) is cut off at open.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::ConnectorError;
use crate::frame::{Frame, FrameHeader, FrameKind};
use crate::record::{decode_body, encode_record, read_record};

/// Where a record was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// Kafka partition.
    pub partition: i32,
    /// Offset in the partition.
    pub offset: i64,
}

/// One consumed record: a frame, or a record that was rejected (and why).
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedRecord {
    /// Where it came from.
    pub position: Position,
    /// The frame, or the reason it was rejected and a description of it.
    pub content: Result<Frame, (String, String)>,
}

/// An append-only input log file.
#[derive(Debug)]
pub struct InputLog {
    path: PathBuf,
    file: File,
    buffer: Vec<u8>,
}

fn io_error(context: String) -> impl FnOnce(std::io::Error) -> ConnectorError {
    move |source| ConnectorError::Io { context, source }
}

fn rejected_frame() -> Frame {
    Frame {
        header: FrameHeader {
            pipeline: String::new(),
            stream: String::new(),
            edge_id: String::new(),
            incarnation: 0,
            sequence: 0,
            watermark: 0,
            schema_fingerprint: 0,
            kind: FrameKind::Watermark,
        },
        payload: Vec::new(),
        signature: None,
    }
}

impl InputLog {
    /// Opens (creating it if needed) the log at `path` and returns what it already holds.
    pub fn open(path: &Path) -> Result<(InputLog, Vec<LoggedRecord>), ConnectorError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(io_error(format!("creating {}", dir.display())))?;
        }
        let what = path.display().to_string();
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_error(format!("opening {what}")))?;
        let size = file
            .metadata()
            .map_err(io_error(format!("reading {what}")))?
            .len();
        let mut records = Vec::new();
        let mut offset = 0;
        let mut buffer = Vec::new();
        while let Some(next) = read_record(&mut file, offset, size, &mut buffer, &what)? {
            let (frame, extras) = decode_body(&buffer, &what)?;
            let number = |k: &str| extras.get(k).and_then(|v| v.parse::<i64>().ok());
            let (Some(partition), Some(kafka_offset)) = (number("partition"), number("offset"))
            else {
                return Err(ConnectorError::BadFrame(format!(
                    "{what}: record at {offset} has no partition/offset"
                )));
            };
            let content = match extras.get("rejected") {
                Some(reason) => Err((
                    reason.clone(),
                    extras.get("description").cloned().unwrap_or_default(),
                )),
                None => Ok(frame),
            };
            records.push(LoggedRecord {
                position: Position {
                    partition: partition as i32,
                    offset: kafka_offset,
                },
                content,
            });
            offset = next;
        }
        if offset < size {
            tracing::warn!(path = %what, bytes = size - offset, "cutting off a torn record");
            file.set_len(offset)
                .map_err(io_error(format!("truncating {what}")))?;
        }
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(io_error(format!("opening {what}")))?;
        Ok((
            InputLog {
                path: path.to_path_buf(),
                file,
                buffer: Vec::new(),
            },
            records,
        ))
    }

    /// Appends a record (a `write`, which survives the process being killed).
    pub fn append(&mut self, record: &LoggedRecord) -> Result<(), ConnectorError> {
        let mut extras = vec![
            ("partition", record.position.partition.to_string()),
            ("offset", record.position.offset.to_string()),
        ];
        let placeholder;
        let frame = match &record.content {
            Ok(frame) => frame,
            Err((reason, description)) => {
                extras.push(("rejected", reason.clone()));
                extras.push(("description", description.clone()));
                placeholder = rejected_frame();
                &placeholder
            }
        };
        self.buffer.clear();
        encode_record(frame, &extras, &mut self.buffer)?;
        self.file
            .write_all(&self.buffer)
            .map_err(io_error(format!("appending to {}", self.path.display())))
    }

    /// Flushes the log to stable storage.
    pub fn sync(&self) -> Result<(), ConnectorError> {
        self.file
            .sync_data()
            .map_err(io_error(format!("syncing {}", self.path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(sequence: u64) -> Frame {
        Frame {
            header: FrameHeader {
                pipeline: "p".into(),
                stream: "s".into(),
                edge_id: "e".into(),
                incarnation: 0,
                sequence,
                watermark: 5,
                schema_fingerprint: 3,
                kind: FrameKind::Data,
            },
            payload: vec![7; 10],
            signature: None,
        }
    }

    #[test]
    fn records_survive_reopen_and_a_torn_tail_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.log");
        let records = vec![
            LoggedRecord {
                position: Position {
                    partition: 0,
                    offset: 4,
                },
                content: Ok(frame(1)),
            },
            LoggedRecord {
                position: Position {
                    partition: 2,
                    offset: 9,
                },
                content: Err(("corrupt payload".into(), "key e".into())),
            },
        ];
        {
            let (mut log, old) = InputLog::open(&path).unwrap();
            assert!(old.is_empty());
            for r in &records {
                log.append(r).unwrap();
            }
        }
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&[200, 0, 0, 0, 1]);
        std::fs::write(&path, &bytes).unwrap();
        let (mut log, back) = InputLog::open(&path).unwrap();
        assert_eq!(back, records);
        log.append(&records[0]).unwrap();
        drop(log);
        let (_, again) = InputLog::open(&path).unwrap();
        assert_eq!(again.len(), 3);
    }
}
