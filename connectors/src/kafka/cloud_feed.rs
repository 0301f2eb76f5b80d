//! [`CloudFeed`]: the cloud's reader of one cut topic, through its input log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::client::{Assignment, KafkaSettings, LinkStats};
use super::frames::{BadRecord, DeadLetterProducer, FrameConsumer};
use crate::error::ConnectorError;
use crate::frame::Frame;
use crate::input_log::{InputLog, LoggedRecord, Position};

/// What the cloud applies from a cut topic.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedItem {
    /// A well-formed frame.
    Frame(Frame),
    /// A record that is not a frame: the reason and a description of it.
    Rejected(String, String),
}

/// How often the cloud commits its offsets to the consumer group.
const COMMIT_EVERY: Duration = Duration::from_secs(1);
/// Assignment attempts (one a second) that wait for a topic to list all the configured
/// partitions.
const PARTITION_WAIT_ATTEMPTS: u32 = 30;

/// The cloud's reader of one cut topic: first everything its [`InputLog`] holds (the replay
/// after a restart), then new records from Kafka, each appended to the input log before it
/// is handed out. Records that are not frames go to the dead-letter topic too.
pub struct CloudFeed {
    topic: String,
    consumer: FrameConsumer,
    assignment: Assignment,
    log: InputLog,
    replay: std::collections::VecDeque<FeedItem>,
    next_offsets: std::collections::BTreeMap<i32, i64>,
    dead_letters: DeadLetterProducer,
    last_commit: Instant,
}

impl CloudFeed {
    /// Opens the input log at `log_path` and a consumer of `topic` in `group`. Nothing talks
    /// to the broker yet: the cloud starts even when Kafka is down.
    pub fn open(
        settings: &KafkaSettings,
        topic: &str,
        partitions: i32,
        group: &str,
        log_path: &std::path::Path,
        dead_letter_topic: &str,
        stats: Arc<LinkStats>,
    ) -> Result<Self, ConnectorError> {
        let (log, records) = InputLog::open(log_path)?;
        let mut next_offsets = std::collections::BTreeMap::new();
        let mut replay = std::collections::VecDeque::with_capacity(records.len());
        for record in records {
            next_offsets.insert(record.position.partition, record.position.offset + 1);
            replay.push_back(match record.content {
                Ok(frame) => FeedItem::Frame(frame),
                Err((reason, description)) => FeedItem::Rejected(reason, description),
            });
        }
        Ok(CloudFeed {
            topic: topic.to_string(),
            consumer: FrameConsumer::new(settings, group, stats.clone())?,
            assignment: Assignment::new(settings, topic, partitions, PARTITION_WAIT_ATTEMPTS),
            log,
            replay,
            next_offsets,
            dead_letters: DeadLetterProducer::new(settings, dead_letter_topic, stats)?,
            last_commit: Instant::now(),
        })
    }

    /// Up to `max` items, without waiting. The flag says they come from the replay of the
    /// input log (their dead letters were written before the restart).
    pub fn poll(&mut self, max: usize) -> Result<(Vec<FeedItem>, bool), ConnectorError> {
        if !self.replay.is_empty() {
            let n = max.min(self.replay.len());
            return Ok((self.replay.drain(..n).collect(), true));
        }
        let next_offsets = &self.next_offsets;
        let assigned = self
            .assignment
            .try_assign(&self.consumer.consumer, Duration::ZERO, |p| {
                next_offsets.get(&p).copied()
            });
        match assigned {
            Ok(true) => {}
            Ok(false) => return Ok((Vec::new(), false)),
            Err(error) => {
                tracing::warn!(topic = %self.topic, error = %crate::error::chain(&error), "cannot assign partitions yet; retrying");
                return Ok((Vec::new(), false));
            }
        }
        let mut items = Vec::new();
        for received in self.consumer.poll(max, Duration::ZERO) {
            let content = match received.frame {
                Ok(frame) => Ok(frame),
                Err(bad) => {
                    if let Err(error) = self.dead_letters.send(&bad) {
                        tracing::warn!(error = %crate::error::chain(&error), "dead-letter topic write failed");
                    }
                    Err((bad.reason, bad.description))
                }
            };
            let record = LoggedRecord {
                position: Position {
                    partition: received.partition,
                    offset: received.offset,
                },
                content,
            };
            self.log.append(&record)?;
            self.next_offsets
                .insert(received.partition, received.offset + 1);
            items.push(match record.content {
                Ok(frame) => FeedItem::Frame(frame),
                Err((reason, description)) => FeedItem::Rejected(reason, description),
            });
        }
        if self.last_commit.elapsed() >= COMMIT_EVERY && !self.next_offsets.is_empty() {
            self.last_commit = Instant::now();
            let positions: Vec<(String, i32, i64)> = self
                .next_offsets
                .iter()
                .map(|(p, o)| (self.topic.clone(), *p, *o))
                .collect();
            if let Err(error) = self.consumer.commit(&positions) {
                tracing::debug!(error = %crate::error::chain(&error), "offset commit failed");
            }
        }
        Ok((items, false))
    }

    /// Sends a frame the cloud cannot apply to the dead-letter topic with `reason`.
    pub fn reject(&self, frame: &Frame, reason: &str) {
        let bad = BadRecord {
            reason: reason.to_string(),
            description: String::new(),
            key: frame.header.edge_id.as_bytes().to_vec(),
            headers: frame
                .header_pairs()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.into_bytes()))
                .collect(),
            payload: frame.payload.clone(),
        };
        if let Err(error) = self.dead_letters.send(&bad) {
            tracing::warn!(error = %crate::error::chain(&error), "dead-letter topic write failed");
        }
    }

    /// Syncs the input log and flushes the dead-letter producer.
    pub fn close(&self) {
        if let Err(error) = self.log.sync() {
            tracing::warn!(error = %crate::error::chain(&error), "input log not synced");
        }
        self.dead_letters.flush(Duration::from_secs(5));
    }
}
