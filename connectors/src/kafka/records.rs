//! Plain Kafka records: the `kafka` source kind's group member ([`RecordReader`]), the
//! `kafka` sink kind's [`RecordWriter`], and [`TopicTail`], which reads every record of a
//! topic (the control channel).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use super::client::{
    Assignment, Callbacks, KafkaSettings, LinkStats, create_topic_early, kafka_error,
};
use crate::error::ConnectorError;

/// A plain Kafka record read by a `kafka` source node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainRecord {
    /// Partition.
    pub partition: i32,
    /// Offset in the partition.
    pub offset: i64,
    /// The value.
    pub payload: Vec<u8>,
}

/// Reads the records of a topic as a member of a consumer group (the `kafka` source kind):
/// the group shares the partitions among its members and remembers how far it got, so a
/// restarted reader goes on from its last committed offset (at least once: records read
/// after the last commit are read again).
pub struct RecordReader {
    consumer: BaseConsumer<Callbacks>,
    topic: String,
}

impl RecordReader {
    /// Joins `group` on `topic` (created with `partitions` partitions when missing), starting
    /// at the earliest offset when the group has none. A broker that is down only delays
    /// the first records: the reader starts anyway.
    pub fn new(
        settings: &KafkaSettings,
        topic: &str,
        partitions: i32,
        group: &str,
        stats: Arc<LinkStats>,
    ) -> Result<Self, ConnectorError> {
        create_topic_early(settings, topic, partitions);
        let consumer: BaseConsumer<Callbacks> = settings
            .config()
            .set("group.id", group)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "50")
            .create_with_context(Callbacks {
                stats,
                deliveries: Arc::default(),
            })
            .map_err(kafka_error("creating a Kafka consumer".into()))?;
        consumer
            .subscribe(&[topic])
            .map_err(kafka_error(format!("subscribing to {topic}")))?;
        Ok(RecordReader {
            consumer,
            topic: topic.to_string(),
        })
    }

    /// Up to `max` records, waiting at most `timeout` for the first.
    pub fn poll(&self, max: usize, timeout: Duration) -> Vec<PlainRecord> {
        let mut out = Vec::new();
        let mut wait = timeout;
        while out.len() < max {
            match self.consumer.poll(wait) {
                Some(Ok(message)) => out.push(PlainRecord {
                    partition: message.partition(),
                    offset: message.offset(),
                    payload: message.payload().unwrap_or_default().to_vec(),
                }),
                Some(Err(error)) => {
                    tracing::warn!(topic = %self.topic, %error, "kafka source error");
                    break;
                }
                None => break,
            }
            wait = Duration::ZERO;
        }
        out
    }

    /// Marks records up to and including these positions processed: the group commits them
    /// (every second, and on [`RecordReader::close`]).
    pub fn processed(&self, positions: &[(i32, i64)]) {
        for (partition, offset) in positions {
            if let Err(error) = self
                .consumer
                .store_offset(&self.topic, *partition, *offset + 1)
            {
                tracing::warn!(topic = %self.topic, %error, "cannot store a source offset");
            }
        }
    }

    /// Commits the stored offsets now and leaves the group.
    pub fn close(&self) {
        if let Err(error) = self
            .consumer
            .commit_consumer_state(rdkafka::consumer::CommitMode::Sync)
        {
            tracing::debug!(topic = %self.topic, %error, "final source commit");
        }
        self.consumer.unsubscribe();
    }
}

/// Reads every partition of a topic from the beginning, outside any consumer group, so that
/// each reader sees every record (the control channel: every edge reads all control records,
/// the cloud reads all acknowledgements). A broker that is down only delays the records:
/// [`TopicTail::poll`] assigns the partitions once the topic's metadata can be read.
pub struct TopicTail {
    consumer: BaseConsumer<Callbacks>,
    assignment: Assignment,
    topic: String,
    stats: Arc<LinkStats>,
}

impl TopicTail {
    /// A reader of `topic` (created with `partitions` partitions when missing).
    pub fn new(
        settings: &KafkaSettings,
        topic: &str,
        partitions: i32,
        stats: Arc<LinkStats>,
    ) -> Result<Self, ConnectorError> {
        let consumer: BaseConsumer<Callbacks> = settings
            .config()
            // Required by librdkafka; never committed to (positions are the reader's own).
            .set("group.id", format!("{}-tail", settings.client_id))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "50")
            .create_with_context(Callbacks {
                stats: stats.clone(),
                deliveries: Arc::default(),
            })
            .map_err(kafka_error("creating a Kafka consumer".into()))?;
        Ok(TopicTail {
            consumer,
            // Every record from the beginning, of the partitions the topic lists.
            assignment: Assignment::new(settings, topic, partitions, 0),
            topic: topic.to_string(),
            stats,
        })
    }

    /// Up to `max` records, waiting at most `timeout` for the first. An error (the broker is
    /// unreachable before the partitions could be assigned) can be retried.
    pub fn poll(
        &mut self,
        max: usize,
        timeout: Duration,
    ) -> Result<Vec<PlainRecord>, ConnectorError> {
        if !self
            .assignment
            .try_assign(&self.consumer, timeout, |_| None)?
        {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let mut wait = timeout;
        while out.len() < max {
            match self.consumer.poll(wait) {
                Some(Ok(message)) => {
                    self.stats.connected.store(true, Ordering::Relaxed);
                    out.push(PlainRecord {
                        partition: message.partition(),
                        offset: message.offset(),
                        payload: message.payload().unwrap_or_default().to_vec(),
                    });
                }
                Some(Err(error)) => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(topic = %self.topic, %error, "kafka reader error");
                    break;
                }
                None => break,
            }
            wait = Duration::ZERO;
        }
        Ok(out)
    }
}

/// Writes plain records to a topic (the `kafka` sink kind): idempotent, delivery retried by
/// librdkafka for `message.timeout.ms`; undelivered records are counted in [`LinkStats`].
pub struct RecordWriter {
    producer: BaseProducer<Callbacks>,
    deliveries: Arc<Mutex<Vec<(u64, bool)>>>,
    topic: String,
    stats: Arc<LinkStats>,
}

impl RecordWriter {
    /// A producer for `topic`, created on demand with `partitions` partitions.
    pub fn new(
        settings: &KafkaSettings,
        topic: &str,
        partitions: i32,
        stats: Arc<LinkStats>,
    ) -> Result<Self, ConnectorError> {
        let deliveries = Arc::new(Mutex::new(Vec::new()));
        create_topic_early(settings, topic, partitions);
        let producer = settings
            .config()
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "300000")
            .create_with_context(Callbacks {
                stats: stats.clone(),
                deliveries: deliveries.clone(),
            })
            .map_err(kafka_error("creating a Kafka producer".into()))?;
        Ok(RecordWriter {
            producer,
            deliveries,
            topic: topic.to_string(),
            stats,
        })
    }

    /// Queues one record, waiting while librdkafka's queue is full.
    pub fn send(&self, key: &[u8], payload: &[u8]) -> Result<(), ConnectorError> {
        loop {
            let record = BaseRecord::with_opaque_to(&self.topic, Box::new(0u64))
                .key(key)
                .payload(payload);
            match self.producer.send(record) {
                Ok(()) => {
                    self.producer.poll(Duration::ZERO);
                    self.count_deliveries();
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    self.producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    return Err(ConnectorError::Kafka {
                        context: format!("sending to {}", self.topic),
                        source: Box::new(e),
                    });
                }
            }
        }
    }

    /// Counts delivered and failed records in [`LinkStats`].
    fn count_deliveries(&self) {
        let done = std::mem::take(&mut *self.deliveries.lock().unwrap_or_else(|p| p.into_inner()));
        let delivered = done.iter().filter(|(_, ok)| *ok).count() as u64;
        self.stats.delivered.fetch_add(delivered, Ordering::Relaxed);
        self.stats
            .errors
            .fetch_add(done.len() as u64 - delivered, Ordering::Relaxed);
    }

    /// Waits up to `timeout` for every queued record to be delivered.
    pub fn flush(&self, timeout: Duration) -> Result<(), ConnectorError> {
        let flushed = self
            .producer
            .flush(timeout)
            .map_err(kafka_error(format!("flushing records to {}", self.topic)));
        self.count_deliveries();
        flushed
    }
}
