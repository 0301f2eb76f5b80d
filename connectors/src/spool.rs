//! The edge's store-and-forward spool: a bounded, crash-safe, on-disk FIFO of outgoing frames.
//!
//! Every frame an edge sends to the cloud is appended here first; a forwarder reads frames
//! in order ([`Spool::read`]) and acknowledges them once the broker has them
//! ([`Spool::acknowledge`]). While the link is down the spool simply grows, so the edge keeps
//! running and nothing is lost.
//!
//! Storage: segment files `seg-<first index>.log` in one directory, each a sequence of
//! checksummed records ([`crate::record`]) carrying the frame, its spool index, the time it
//! was spooled, its topic and whether it must be kept when the spool is full. A `cursor`
//! file (written atomically) holds the first index not yet acknowledged and the highest
//! sequence number spooled per stream. Appends are `write`s straight to the file, so a
//! `kill -9` loses nothing that was appended; `fsync` runs on segment rotation and on
//! [`Spool::sync`]. At open, a record cut short by a crash is truncated away.
//!
//! When appending would exceed `max_bytes`, the [`WhenFull`] policy decides: `block` waits
//! for the forwarder to make room; `drop_oldest_summaries` deletes the oldest frames that are
//! not marked `keep` (window summaries; exceptions are kept) and, when only kept frames are
//! left, drops an incoming summary or blocks an incoming exception.
//!
//! Sequence numbers make replays idempotent: an edge restarted after a crash regenerates its
//! frames with the same `(stream, sequence)`, and [`Spool::append`] skips every frame whose
//! sequence it already holds. An `incarnation` file, written once when the directory is
//! created, names this spool's sequence space ([`Spool::incarnation`]): an edge given a fresh
//! directory numbers its frames from 1 again, and the new incarnation tells the cloud that
//! these are new frames, not replays.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, RandomState};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::ConnectorError;
use crate::frame::Frame;
use crate::record::{decode_body, encode_record, read_record};

/// What to do when an append would make the spool larger than its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Wait until the forwarder has made room (back-pressure on the edge pipeline).
    Block,
    /// Delete the oldest frames not marked `keep`; exceptions are never dropped.
    DropOldestSummaries,
}

impl WhenFull {
    /// The policy's name in pipeline files and flags.
    pub fn name(self) -> &'static str {
        match self {
            WhenFull::Block => "block",
            WhenFull::DropOldestSummaries => "drop_oldest_summaries",
        }
    }

    /// Parses a policy name.
    pub fn from_name(name: &str) -> Option<WhenFull> {
        [WhenFull::Block, WhenFull::DropOldestSummaries]
            .into_iter()
            .find(|w| w.name() == name)
    }
}

/// Settings of a spool.
#[derive(Debug, Clone)]
pub struct SpoolOptions {
    /// Upper bound of the bytes held on disk.
    pub max_bytes: u64,
    /// A segment file is closed and a new one started past this size.
    pub segment_bytes: u64,
    /// The policy when full.
    pub when_full: WhenFull,
}

impl Default for SpoolOptions {
    fn default() -> Self {
        SpoolOptions {
            max_bytes: 1 << 30,
            segment_bytes: 4 << 20,
            when_full: WhenFull::Block,
        }
    }
}

/// What [`Spool::append`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Stored under this spool index.
    Stored(u64),
    /// The spool already held this stream's sequence number (a replay after a restart).
    AlreadySpooled,
    /// The spool was full of frames that must be kept and this one may be dropped.
    Dropped,
    /// `stop` returned true while waiting for room.
    Stopped,
}

/// A frame read back from the spool.
#[derive(Debug, Clone, PartialEq)]
pub struct SpooledFrame {
    /// Position in the spool: acknowledge `index + 1` once it is delivered.
    pub index: u64,
    /// The topic it goes to.
    pub topic: String,
    /// The frame.
    pub frame: Frame,
}

/// A snapshot of the spool's size and history, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Bytes on disk.
    pub bytes: u64,
    /// Frames not yet acknowledged.
    pub depth: u64,
    /// Age of the oldest unacknowledged frame, in ms (0 when empty).
    pub oldest_age_ms: u64,
    /// Frames dropped by the `drop_oldest_summaries` policy since the spool was opened.
    pub dropped: u64,
    /// How long the pipeline has been waiting for room, in ms (0 when it is not): the spool
    /// is full of frames it may not drop (everything under `block`; exceptions under
    /// `drop_oldest_summaries`) and the broker is not taking them.
    pub blocked_ms: u64,
}

#[derive(Debug, Clone, Copy)]
struct RecordMeta {
    index: u64,
    offset: u64,
    len: u64,
    keep: bool,
    spooled_at_ms: u64,
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    bytes: u64,
    records: Vec<RecordMeta>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Cursor {
    /// First index not yet acknowledged.
    acknowledged: u64,
    /// Highest sequence spooled per stream, including frames whose segments are deleted.
    last_sequence: BTreeMap<String, u64>,
}

#[derive(Debug)]
struct State {
    segments: VecDeque<Segment>,
    /// Open for appending: the last segment.
    writer: Option<File>,
    next_index: u64,
    cursor: Cursor,
    /// Highest sequence per stream among frames in the spool (or ever spooled).
    last_sequence: BTreeMap<String, u64>,
    bytes: u64,
    dropped: u64,
    /// Since when an append waits for room (a full spool it may not drop from).
    blocked_since: Option<u64>,
    buffer: Vec<u8>,
}

/// The spool; share it between the edge pipeline (appending) and the forwarder (reading)
/// behind an `Arc`.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    options: SpoolOptions,
    incarnation: u64,
    state: Mutex<State>,
    room: Condvar,
}

fn io_error(context: String) -> impl FnOnce(std::io::Error) -> ConnectorError {
    move |source| ConnectorError::Io { context, source }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn segment_path(dir: &Path, first_index: u64) -> PathBuf {
    dir.join(format!("seg-{first_index:020}.log"))
}

impl Spool {
    /// Opens (creating it if needed) the spool in `dir`, recovering what a crash left behind.
    pub fn open(dir: &Path, options: SpoolOptions) -> Result<Spool, ConnectorError> {
        fs::create_dir_all(dir).map_err(io_error(format!(
            "creating spool directory {}",
            dir.display()
        )))?;
        let incarnation = read_or_create_incarnation(dir)?;
        let cursor_path = dir.join("cursor");
        let cursor: Cursor = match fs::read(&cursor_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                ConnectorError::User(format!(
                    "spool cursor {} is not valid: {e}; remove the spool directory to start afresh",
                    cursor_path.display()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Cursor::default(),
            Err(e) => return Err(io_error(format!("reading {}", cursor_path.display()))(e)),
        };
        let mut names: Vec<PathBuf> = fs::read_dir(dir)
            .map_err(io_error(format!("listing {}", dir.display())))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("seg-") && n.ends_with(".log"))
            })
            .collect();
        names.sort();
        let mut state = State {
            segments: VecDeque::new(),
            writer: None,
            next_index: cursor.acknowledged,
            last_sequence: cursor.last_sequence.clone(),
            cursor,
            bytes: 0,
            dropped: 0,
            blocked_since: None,
            buffer: Vec::new(),
        };
        for path in names {
            let segment = recover_segment(&path, &mut state)?;
            if segment.records.is_empty() {
                fs::remove_file(&path).map_err(io_error(format!("removing {}", path.display())))?;
                continue;
            }
            state.bytes += segment.bytes;
            state.segments.push_back(segment);
        }
        let spool = Spool {
            dir: dir.to_path_buf(),
            options,
            incarnation,
            state: Mutex::new(state),
            room: Condvar::new(),
        };
        {
            let mut state = spool.lock();
            spool.release_acknowledged(&mut state)?;
        }
        Ok(spool)
    }

    /// This spool's incarnation: a random nonzero number chosen when its directory was
    /// created and kept for its life, so `(edge id, incarnation, stream, sequence)` names a
    /// frame uniquely even when an edge is re-provisioned with a fresh directory.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means another thread panicked while holding it; the state itself
        // is still consistent at every await point, so keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `frame` for `topic`, unless its `(stream, sequence)` is already spooled.
    ///
    /// `keep` marks frames the `drop_oldest_summaries` policy never drops. When the spool is
    /// full this waits (policy `block`, or a kept frame) until there is room or `stop()`.
    pub fn append(
        &self,
        topic: &str,
        frame: &Frame,
        keep: bool,
        stop: &dyn Fn() -> bool,
    ) -> Result<Appended, ConnectorError> {
        let mut state = self.lock();
        let stream_key = format!("{}/{}", topic, frame.header.stream);
        if state
            .last_sequence
            .get(&stream_key)
            .is_some_and(|&s| frame.header.sequence <= s)
        {
            return Ok(Appended::AlreadySpooled);
        }
        let index = state.next_index;
        let mut record = std::mem::take(&mut state.buffer);
        record.clear();
        encode_record(
            frame,
            &[
                ("spool-index", index.to_string()),
                ("spool-at", now_ms().to_string()),
                ("spool-topic", topic.to_string()),
                ("spool-keep", keep.to_string()),
            ],
            &mut record,
        )?;
        let len = record.len() as u64;
        loop {
            if state.bytes + len <= self.options.max_bytes || state.segments.is_empty() {
                break;
            }
            if self.options.when_full == WhenFull::DropOldestSummaries {
                if self.drop_oldest_summaries(&mut state, len)? {
                    continue;
                }
                if !keep {
                    state.dropped += 1;
                    state
                        .last_sequence
                        .insert(stream_key, frame.header.sequence);
                    state.buffer = record;
                    return Ok(Appended::Dropped);
                }
            }
            if stop() {
                state.blocked_since = None;
                state.buffer = record;
                return Ok(Appended::Stopped);
            }
            if state.blocked_since.is_none() {
                state.blocked_since = Some(now_ms());
                let why = match self.options.when_full {
                    WhenFull::Block => "policy block",
                    WhenFull::DropOldestSummaries => {
                        "what is left are exceptions, which drop_oldest_summaries never drops"
                    }
                };
                tracing::warn!(
                    dir = %self.dir.display(),
                    bytes = state.bytes,
                    max_bytes = self.options.max_bytes,
                    "the spool is full ({why}): the pipeline waits until the broker takes frames (edgeflow_spool_blocked_ms)"
                );
            }
            state = self
                .room
                .wait_timeout(state, Duration::from_millis(50))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        if let Some(since) = state.blocked_since.take() {
            tracing::info!(
                dir = %self.dir.display(),
                waited_ms = now_ms().saturating_sub(since),
                "the spool has room again"
            );
        }
        let rotate = state
            .segments
            .back()
            .is_none_or(|s| s.bytes >= self.options.segment_bytes);
        if rotate || state.writer.is_none() {
            self.start_segment(&mut state, index, rotate)?;
        }
        let segment = state
            .segments
            .back_mut()
            .ok_or_else(|| ConnectorError::Internal("spool has no segment to append to".into()))?;
        let offset = segment.bytes;
        let path = segment.path.clone();
        segment.records.push(RecordMeta {
            index,
            offset,
            len,
            keep,
            spooled_at_ms: now_ms(),
        });
        segment.bytes += len;
        let writer = state
            .writer
            .as_mut()
            .ok_or_else(|| ConnectorError::Internal("spool writer missing".into()))?;
        writer
            .write_all(&record)
            .map_err(io_error(format!("appending to {}", path.display())))?;
        state.bytes += len;
        state.next_index = index + 1;
        state
            .last_sequence
            .insert(stream_key, frame.header.sequence);
        state.buffer = record;
        Ok(Appended::Stored(index))
    }

    fn start_segment(
        &self,
        state: &mut State,
        first_index: u64,
        new_file: bool,
    ) -> Result<(), ConnectorError> {
        if let Some(old) = state.writer.take() {
            old.sync_data()
                .map_err(io_error("syncing spool segment".into()))?;
        }
        if new_file {
            let path = segment_path(&self.dir, first_index);
            state.segments.push_back(Segment {
                path,
                bytes: 0,
                records: Vec::new(),
            });
        }
        let path = match state.segments.back() {
            Some(s) => s.path.clone(),
            None => return Err(ConnectorError::Internal("no spool segment".into())),
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_error(format!("opening {}", path.display())))?;
        state.writer = Some(file);
        Ok(())
    }

    /// Deletes the oldest droppable frames until `needed` more bytes fit; false when none
    /// could be dropped. Only closed segments are rewritten.
    fn drop_oldest_summaries(
        &self,
        state: &mut State,
        needed: u64,
    ) -> Result<bool, ConnectorError> {
        let mut freed_any = false;
        let closed = state.segments.len().saturating_sub(1);
        for i in 0..closed {
            if state.bytes + needed <= self.options.max_bytes {
                break;
            }
            let segment = &state.segments[i];
            if segment.records.iter().all(|r| r.keep) {
                continue;
            }
            let old = fs::read(&segment.path)
                .map_err(io_error(format!("reading {}", segment.path.display())))?;
            let mut kept = Vec::new();
            let mut bytes = Vec::new();
            let mut dropped = 0;
            for r in &segment.records {
                if r.keep {
                    kept.push(RecordMeta {
                        offset: bytes.len() as u64,
                        ..*r
                    });
                    bytes.extend_from_slice(&old[r.offset as usize..(r.offset + r.len) as usize]);
                } else {
                    dropped += 1;
                }
            }
            if bytes.is_empty() {
                fs::remove_file(&segment.path)
                    .map_err(io_error(format!("removing {}", segment.path.display())))?;
            } else {
                let tmp = segment.path.with_extension("tmp");
                write_synced(&tmp, &bytes)?;
                fs::rename(&tmp, &segment.path)
                    .map_err(io_error(format!("replacing {}", segment.path.display())))?;
            }
            let freed = segment.bytes - bytes.len() as u64;
            let segment = &mut state.segments[i];
            segment.records = kept;
            segment.bytes = bytes.len() as u64;
            state.bytes -= freed;
            state.dropped += dropped;
            freed_any = true;
        }
        let open_has_droppable = state
            .segments
            .back()
            .is_some_and(|s| s.records.iter().any(|r| !r.keep));
        if !freed_any && open_has_droppable {
            // No closed segment holds droppable frames but the open one does: close it so
            // the next round can rewrite it.
            let first = state.next_index;
            self.start_segment(state, first, true)?;
            return Ok(true);
        }
        let last = state.segments.len().saturating_sub(1);
        let mut i = 0;
        state.segments.retain(|s| {
            i += 1;
            i - 1 == last || !s.records.is_empty()
        });
        Ok(freed_any)
    }

    /// Up to `max` frames from index `from` on, in order.
    pub fn read(&self, from: u64, max: usize) -> Result<Vec<SpooledFrame>, ConnectorError> {
        let state = self.lock();
        let mut out = Vec::new();
        let mut buffer = Vec::new();
        for segment in &state.segments {
            if segment.records.last().is_none_or(|r| r.index < from) {
                continue;
            }
            let mut file = File::open(&segment.path)
                .map_err(io_error(format!("opening {}", segment.path.display())))?;
            let what = segment.path.display().to_string();
            for r in segment.records.iter().filter(|r| r.index >= from) {
                if out.len() >= max {
                    return Ok(out);
                }
                read_record(&mut file, r.offset, r.offset + r.len, &mut buffer, &what)?
                    .ok_or_else(|| ConnectorError::BadFrame(format!("{what}: record missing")))?;
                let (frame, extras) = decode_body(&buffer, &what)?;
                out.push(SpooledFrame {
                    index: r.index,
                    topic: extras.get("spool-topic").cloned().unwrap_or_default(),
                    frame,
                });
            }
        }
        Ok(out)
    }

    /// Marks every frame before index `upto` delivered, deleting segments that hold only
    /// delivered frames.
    pub fn acknowledge(&self, upto: u64) -> Result<(), ConnectorError> {
        let mut state = self.lock();
        if upto <= state.cursor.acknowledged {
            return Ok(());
        }
        state.cursor.acknowledged = upto.min(state.next_index);
        self.release_acknowledged(&mut state)?;
        self.room.notify_all();
        Ok(())
    }

    fn release_acknowledged(&self, state: &mut State) -> Result<(), ConnectorError> {
        let acknowledged = state.cursor.acknowledged;
        let removable = state
            .segments
            .iter()
            .take(state.segments.len().saturating_sub(1))
            .take_while(|s| s.records.last().is_none_or(|r| r.index < acknowledged))
            .count();
        let open_done = state.segments.len() == removable + 1
            && state.segments.back().is_some_and(|s| {
                s.bytes >= self.options.segment_bytes
                    && s.records.last().is_none_or(|r| r.index < acknowledged)
            });
        if removable == 0 && !open_done {
            // Nothing to delete: the cursor on disk may lag, which only means a restarted
            // forwarder sends a few delivered frames again (the cloud drops duplicates).
            return Ok(());
        }
        // The cursor must name every sequence of the segments about to go before they go.
        state.cursor.last_sequence = state.last_sequence.clone();
        self.write_cursor(&state.cursor)?;
        for _ in 0..removable {
            if let Some(s) = state.segments.pop_front() {
                fs::remove_file(&s.path)
                    .map_err(io_error(format!("removing {}", s.path.display())))?;
                state.bytes -= s.bytes;
            }
        }
        if open_done {
            state.writer = None;
            if let Some(s) = state.segments.pop_front() {
                fs::remove_file(&s.path)
                    .map_err(io_error(format!("removing {}", s.path.display())))?;
                state.bytes -= s.bytes;
            }
        }
        Ok(())
    }

    fn write_cursor(&self, cursor: &Cursor) -> Result<(), ConnectorError> {
        let path = self.dir.join("cursor");
        let tmp = self.dir.join("cursor.tmp");
        write_synced(&tmp, &serde_json::to_vec(cursor)?)?;
        fs::rename(&tmp, &path).map_err(io_error(format!("replacing {}", path.display())))
    }

    /// The first index not yet acknowledged: where a forwarder starts reading.
    pub fn acknowledged(&self) -> u64 {
        self.lock().cursor.acknowledged
    }

    /// Flushes appended frames and the cursor to stable storage (a `kill -9` needs no sync; a
    /// power cut does).
    pub fn sync(&self) -> Result<(), ConnectorError> {
        let mut state = self.lock();
        if let Some(w) = &state.writer {
            w.sync_data()
                .map_err(io_error("syncing the spool".into()))?;
        }
        state.cursor.last_sequence = state.last_sequence.clone();
        self.write_cursor(&state.cursor)
    }

    /// Size and age figures for metrics.
    pub fn stats(&self) -> SpoolStats {
        let state = self.lock();
        let acknowledged = state.cursor.acknowledged;
        let pending = state
            .segments
            .iter()
            .flat_map(|s| &s.records)
            .filter(|r| r.index >= acknowledged);
        let (mut depth, mut oldest) = (0u64, None);
        for r in pending {
            depth += 1;
            oldest.get_or_insert(r.spooled_at_ms);
        }
        SpoolStats {
            bytes: state.bytes,
            depth,
            oldest_age_ms: oldest.map_or(0, |t| now_ms().saturating_sub(t)),
            dropped: state.dropped,
            blocked_ms: state
                .blocked_since
                .map_or(0, |since| now_ms().saturating_sub(since)),
        }
    }
}

/// Reads the spool's `incarnation` file (16 hexadecimal digits), creating it with a fresh
/// random number when the spool has none.
fn read_or_create_incarnation(dir: &Path) -> Result<u64, ConnectorError> {
    let path = dir.join("incarnation");
    match fs::read_to_string(&path) {
        Ok(text) => u64::from_str_radix(text.trim(), 16)
            .ok()
            .filter(|&n| n != 0)
            .ok_or_else(|| {
                ConnectorError::User(format!(
                    "spool incarnation {} is not valid (expected 16 hexadecimal digits); \
                     remove the spool directory to start afresh",
                    path.display()
                ))
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // RandomState's keys come from the operating system's random source; hashing the
            // time and process id with them gives a number no other spool is likely to have.
            let random = RandomState::new().hash_one((SystemTime::now(), std::process::id()));
            let incarnation = random.max(1);
            let tmp = dir.join("incarnation.tmp");
            write_synced(&tmp, format!("{incarnation:016x}\n").as_bytes())?;
            fs::rename(&tmp, &path).map_err(io_error(format!(
                "renaming {} to {}",
                tmp.display(),
                path.display()
            )))?;
            Ok(incarnation)
        }
        Err(e) => Err(io_error(format!("reading {}", path.display()))(e)),
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), ConnectorError> {
    let mut file = File::create(path).map_err(io_error(format!("creating {}", path.display())))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io_error(format!("writing {}", path.display())))
}

/// Reads a segment's records, truncating a torn or corrupt tail, and updates `state`'s
/// next index and sequence table from them.
fn recover_segment(path: &Path, state: &mut State) -> Result<Segment, ConnectorError> {
    let what = path.display().to_string();
    let mut file = File::open(path).map_err(io_error(format!("opening {what}")))?;
    let size = file
        .metadata()
        .map_err(io_error(format!("reading {what}")))?
        .len();
    let mut records = Vec::new();
    let mut offset = 0;
    let mut buffer = Vec::new();
    loop {
        let next = match read_record(&mut file, offset, size, &mut buffer, &what) {
            Ok(Some(next)) => next,
            Ok(None) => break,
            Err(ConnectorError::BadFrame(_)) => break, // corrupt tail: cut it off below
            Err(e) => return Err(e),
        };
        let Ok((frame, extras)) = decode_body(&buffer, &what) else {
            break;
        };
        let number = |k: &str| extras.get(k).and_then(|v| v.parse::<u64>().ok());
        let (Some(index), Some(at)) = (number("spool-index"), number("spool-at")) else {
            break;
        };
        let topic = extras.get("spool-topic").cloned().unwrap_or_default();
        let key = format!("{topic}/{}", frame.header.stream);
        let seq = state.last_sequence.entry(key).or_insert(0);
        *seq = (*seq).max(frame.header.sequence);
        state.next_index = state.next_index.max(index + 1);
        records.push(RecordMeta {
            index,
            offset,
            len: next - offset,
            keep: extras.get("spool-keep").is_some_and(|v| v == "true"),
            spooled_at_ms: at,
        });
        offset = next;
    }
    if offset < size {
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io_error(format!("opening {what}")))?;
        file.set_len(offset)
            .map_err(io_error(format!("truncating the torn tail of {what}")))?;
    }
    Ok(Segment {
        path: path.to_path_buf(),
        bytes: offset,
        records,
    })
}

#[cfg(test)]
mod tests;
