//! Kafka on rdkafka (librdkafka): frames to and from topics, topic creation, and the edge's
//! forwarder that drains the spool into Kafka.
//!
//! A frame maps onto a Kafka record one to one: key = edge id (so one edge's frames stay in
//! order on one partition), headers = the [`FrameHeader`] pairs (`edgeflow-*`), value = the
//! payload. Any Kafka client can read the topics. Producers are idempotent
//! (`enable.idempotence`); the cloud reads with manually assigned partitions at offsets it
//! tracks itself, and commits them to its consumer group so `kafka-consumer-groups` shows
//! its lag.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};

use crate::error::ConnectorError;
use crate::frame::{Frame, FrameHeader};
use crate::input_log::{InputLog, LoggedRecord, Position};
use crate::spool::Spool;

/// How to reach a Kafka cluster.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// `bootstrap.servers`, e.g. `127.0.0.1:9092`.
    pub brokers: String,
    /// Sent as `client.id`, shown in broker logs.
    pub client_id: String,
    /// Further librdkafka settings (`name`, `value`), applied last.
    pub extra: Vec<(String, String)>,
}

impl KafkaSettings {
    fn config(&self) -> ClientConfig {
        self.config_with(&[])
    }

    /// The client configuration with `defaults` that the user's settings may override.
    fn config_with(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", &self.client_id)
            .set("reconnect.backoff.ms", "100")
            .set("reconnect.backoff.max.ms", "5000")
            .set("log_level", "3");
        for (k, v) in defaults {
            config.set(*k, *v);
        }
        for (k, v) in &self.extra {
            config.set(k, v);
        }
        config
    }
}

fn kafka_error(context: String) -> impl FnOnce(KafkaError) -> ConnectorError {
    move |source| ConnectorError::Kafka {
        context,
        source: Box::new(source),
    }
}

/// Connection health shared by a client's callbacks and whoever reports metrics.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// False after librdkafka reported every broker down, true again once a request succeeds.
    pub connected: AtomicBool,
    /// Errors librdkafka reported (transport, all brokers down, ...).
    pub errors: AtomicU64,
    /// Frames the broker acknowledged.
    pub delivered: AtomicU64,
    /// Frames re-sent after a failed delivery.
    pub retries: AtomicU64,
    /// Milliseconds the forwarder is backing off for (0 when not).
    pub backoff_ms: AtomicI64,
}

/// librdkafka callbacks: errors go to the log and to [`LinkStats`].
#[derive(Clone)]
struct Callbacks {
    stats: Arc<LinkStats>,
    deliveries: Arc<Mutex<Vec<(u64, bool)>>>,
}

impl ClientContext for Callbacks {
    fn error(&self, error: KafkaError, reason: &str) {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        if matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::AllBrokersDown)
        ) {
            self.stats.connected.store(false, Ordering::Relaxed);
        }
        tracing::warn!(%error, reason, "kafka client error");
    }
}

impl ProducerContext for Callbacks {
    type DeliveryOpaque = Box<u64>;

    fn delivery(&self, result: &DeliveryResult<'_>, index: Box<u64>) {
        let ok = result.is_ok();
        if let Err((error, _)) = result {
            tracing::warn!(%error, index = *index, "kafka delivery failed");
        } else {
            self.stats.connected.store(true, Ordering::Relaxed);
        }
        // A poisoned lock only means a panic elsewhere; the Vec is still usable.
        let mut deliveries = self.deliveries.lock().unwrap_or_else(|p| p.into_inner());
        deliveries.push((*index, ok));
    }
}

impl ConsumerContext for Callbacks {}

/// Creates the topics that do not exist yet, with `partitions` partitions each.
pub fn ensure_topics(
    settings: &KafkaSettings,
    topics: &[String],
    partitions: i32,
    timeout: Duration,
) -> Result<(), ConnectorError> {
    let admin: AdminClient<DefaultClientContext> = settings
        .config()
        .create()
        .map_err(kafka_error("creating a Kafka admin client".into()))?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(timeout));
    let results = futures_executor::block_on(admin.create_topics(&new, &options)).map_err(
        kafka_error(format!("creating topics {}", topics.join(", "))),
    )?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(ConnectorError::Kafka {
                    context: format!("creating topic {topic}"),
                    source: Box::new(KafkaError::AdminOp(code)),
                });
            }
        }
    }
    Ok(())
}

/// Creates `topic` if it is missing, as a node starts. A failure (e.g. the broker is down)
/// is logged, not returned: where the broker allows it, the topic is created on first use.
fn create_topic_early(settings: &KafkaSettings, topic: &str, partitions: i32) {
    if let Err(error) = ensure_topics(
        settings,
        &[topic.to_string()],
        partitions,
        Duration::from_secs(5),
    ) {
        tracing::warn!(topic, error = %crate::error::chain(&error), "cannot create the topic yet");
    }
}

/// Sends frames to Kafka and reports which were delivered.
pub struct FrameProducer {
    producer: BaseProducer<Callbacks>,
    deliveries: Arc<Mutex<Vec<(u64, bool)>>>,
}

/// Why a frame could not be handed to the producer.
#[derive(Debug)]
pub enum SendRefused {
    /// librdkafka's queue is full: poll, then try again.
    QueueFull,
    /// Another error.
    Failed(ConnectorError),
}

impl FrameProducer {
    /// A producer that keeps each partition in order; `stats` receives its connection health.
    ///
    /// Order, not librdkafka's idempotence, is what exactly-once needs here: the cloud drops
    /// every frame at or below the highest sequence it applied, so a frame overtaken by a
    /// later one would be lost, while a frame sent twice is harmless. One request in flight
    /// per broker keeps the order through retries. (An idempotent producer would allow more
    /// in flight, but one that lived through a tansu 0.6 restart in our outage test got
    /// "unknown server error" for every resend; turn it on with
    /// `--kafka-option enable.idempotence=true` against other brokers.)
    pub fn new(settings: &KafkaSettings, stats: Arc<LinkStats>) -> Result<Self, ConnectorError> {
        let deliveries = Arc::new(Mutex::new(Vec::new()));
        let producer = settings
            .config_with(&[
                ("enable.idempotence", "false"),
                ("max.in.flight.requests.per.connection", "1"),
            ])
            .set("linger.ms", "5")
            .set("message.timeout.ms", "30000")
            .create_with_context(Callbacks {
                stats,
                deliveries: deliveries.clone(),
            })
            .map_err(kafka_error("creating a Kafka producer".into()))?;
        Ok(FrameProducer {
            producer,
            deliveries,
        })
    }

    /// Queues `frame` for `topic`; `index` comes back from [`FrameProducer::take_deliveries`].
    pub fn send(&self, topic: &str, frame: &Frame, index: u64) -> Result<(), SendRefused> {
        let mut headers = OwnedHeaders::new();
        for (key, value) in frame.header.to_pairs() {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        }
        let record = BaseRecord::with_opaque_to(topic, Box::new(index))
            .key(frame.header.edge_id.as_bytes())
            .payload(&frame.payload)
            .headers(headers);
        match self.producer.send(record) {
            Ok(()) => Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                Err(SendRefused::QueueFull)
            }
            Err((e, _)) => Err(SendRefused::Failed(ConnectorError::Kafka {
                context: format!("sending to {topic}"),
                source: Box::new(e),
            })),
        }
    }

    /// Serves delivery callbacks, waiting up to `timeout` for one.
    pub fn poll(&self, timeout: Duration) {
        self.producer.poll(timeout);
    }

    /// Delivery reports since the last call: `(index, delivered)`.
    pub fn take_deliveries(&self) -> Vec<(u64, bool)> {
        std::mem::take(&mut *self.deliveries.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Waits up to `timeout` for every queued frame to be delivered.
    pub fn flush(&self, timeout: Duration) -> Result<(), ConnectorError> {
        self.producer
            .flush(timeout)
            .map_err(kafka_error("flushing the Kafka producer".into()))
    }
}

/// A record read from Kafka: where it was and what it held.
#[derive(Debug)]
pub struct Received {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset in the partition.
    pub offset: i64,
    /// The frame, or why the record is not one (with a printable description of it).
    pub frame: Result<Frame, BadRecord>,
}

/// A Kafka record that is not a valid frame.
#[derive(Debug, Clone)]
pub struct BadRecord {
    /// Why.
    pub reason: String,
    /// Key, headers and payload size, for the dead-letter output.
    pub description: String,
    /// The record's key.
    pub key: Vec<u8>,
    /// The record's headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The record's value.
    pub payload: Vec<u8>,
}

fn to_received(message: &BorrowedMessage<'_>) -> Received {
    let mut pairs = Vec::new();
    let mut headers = Vec::new();
    let mut bad_header = None;
    if let Some(h) = message.headers() {
        for header in h.iter() {
            let value = header.value.unwrap_or_default();
            headers.push((header.key.to_string(), value.to_vec()));
            match std::str::from_utf8(value) {
                Ok(v) => pairs.push((header.key.to_string(), v.to_string())),
                Err(_) => bad_header = Some(format!("header {} is not UTF-8", header.key)),
            }
        }
    }
    let payload = message.payload().unwrap_or_default().to_vec();
    let frame = match bad_header {
        Some(reason) => Err(reason),
        None => FrameHeader::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map(|header| Frame {
                header,
                payload: payload.clone(),
            })
            .map_err(|e| e.to_string()),
    };
    let key = message.key().unwrap_or_default().to_vec();
    Received {
        topic: message.topic().to_string(),
        partition: message.partition(),
        offset: message.offset(),
        frame: frame.map_err(|reason| BadRecord {
            description: format!(
                "key {:?}, headers [{}], {} payload bytes",
                String::from_utf8_lossy(&key),
                pairs
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                payload.len()
            ),
            reason,
            key,
            headers,
            payload,
        }),
    }
}

/// Reads frames from assigned topic partitions.
pub struct FrameConsumer {
    consumer: BaseConsumer<Callbacks>,
    stats: Arc<LinkStats>,
}

impl FrameConsumer {
    /// A consumer in group `group` (used for offset commits only: partitions are assigned
    /// with [`FrameConsumer::assign`]).
    pub fn new(
        settings: &KafkaSettings,
        group: &str,
        stats: Arc<LinkStats>,
    ) -> Result<Self, ConnectorError> {
        let consumer = settings
            .config()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "20")
            .create_with_context(Callbacks {
                stats: stats.clone(),
                deliveries: Arc::default(),
            })
            .map_err(kafka_error("creating a Kafka consumer".into()))?;
        Ok(FrameConsumer { consumer, stats })
    }

    /// The number of partitions of `topic`.
    pub fn partitions(&self, topic: &str, timeout: Duration) -> Result<i32, ConnectorError> {
        let metadata = self
            .consumer
            .fetch_metadata(Some(topic), timeout)
            .map_err(kafka_error(format!("reading metadata of {topic}")))?;
        let t = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .ok_or_else(|| ConnectorError::User(format!("topic {topic} does not exist")))?;
        if let Some(err) = t.error() {
            return Err(ConnectorError::Kafka {
                context: format!("reading metadata of {topic}"),
                source: Box::new(KafkaError::MetadataFetch(err.into())),
            });
        }
        Ok(t.partitions().len() as i32)
    }

    /// Reads `(topic, partition)` from `next_offset` (or the beginning when `None`).
    pub fn assign(&self, positions: &[(String, i32, Option<i64>)]) -> Result<(), ConnectorError> {
        let mut list = TopicPartitionList::new();
        for (topic, partition, next) in positions {
            let offset = next.map_or(Offset::Beginning, Offset::Offset);
            list.add_partition_offset(topic, *partition, offset)
                .map_err(kafka_error(format!("assigning {topic}/{partition}")))?;
        }
        self.consumer
            .assign(&list)
            .map_err(kafka_error("assigning partitions".into()))
    }

    /// Up to `max` records, waiting at most `timeout` for the first.
    pub fn poll(&self, max: usize, timeout: Duration) -> Vec<Received> {
        let mut out = Vec::new();
        let deadline = Instant::now() + timeout;
        while out.len() < max {
            let wait = if out.is_empty() {
                deadline.saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            match self.consumer.poll(wait) {
                Some(Ok(message)) => {
                    self.stats.connected.store(true, Ordering::Relaxed);
                    out.push(to_received(&message));
                }
                Some(Err(error)) => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%error, "kafka consumer error");
                    break;
                }
                None => break,
            }
        }
        out
    }

    /// Commits `next offsets` to the consumer group (for lag monitoring; edgeflow's own
    /// position is kept in the cloud's input log).
    pub fn commit(&self, positions: &[(String, i32, i64)]) -> Result<(), ConnectorError> {
        let mut list = TopicPartitionList::new();
        for (topic, partition, next) in positions {
            list.add_partition_offset(topic, *partition, Offset::Offset(*next))
                .map_err(kafka_error(format!("committing {topic}/{partition}")))?;
        }
        self.consumer
            .commit(&list, rdkafka::consumer::CommitMode::Async)
            .map_err(kafka_error("committing offsets".into()))
    }
}

/// Writes records that are not frames (or frames the cloud rejected) to a dead-letter topic,
/// with the reason in an `edgeflow-dead-letter-reason` header.
pub struct DeadLetterProducer {
    producer: BaseProducer<Callbacks>,
    topic: String,
}

impl DeadLetterProducer {
    /// A producer for `topic`.
    pub fn new(
        settings: &KafkaSettings,
        topic: &str,
        stats: Arc<LinkStats>,
    ) -> Result<Self, ConnectorError> {
        let producer = settings
            .config()
            .create_with_context(Callbacks {
                stats,
                deliveries: Arc::default(),
            })
            .map_err(kafka_error("creating the dead-letter producer".into()))?;
        Ok(DeadLetterProducer {
            producer,
            topic: topic.to_string(),
        })
    }

    /// Queues `record` with its reason (delivery is best effort: the local dead-letter file
    /// has it too).
    pub fn send(&self, record: &BadRecord) -> Result<(), ConnectorError> {
        let mut headers = OwnedHeaders::new();
        for (key, value) in &record.headers {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        headers = headers.insert(Header {
            key: "edgeflow-dead-letter-reason",
            value: Some(record.reason.as_bytes()),
        });
        let to = BaseRecord::with_opaque_to(&self.topic, Box::new(0u64))
            .key(&record.key)
            .payload(&record.payload)
            .headers(headers);
        self.producer
            .send(to)
            .map_err(|(e, _)| ConnectorError::Kafka {
                context: format!("sending to {}", self.topic),
                source: Box::new(e),
            })?;
        self.producer.poll(Duration::ZERO);
        Ok(())
    }

    /// Waits up to `timeout` for queued dead letters to be delivered.
    pub fn flush(&self, timeout: Duration) {
        if let Err(error) = self.producer.flush(timeout) {
            tracing::warn!(%error, "dead-letter topic not flushed");
        }
    }
}

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
    settings: KafkaSettings,
    topic: String,
    partitions: i32,
    assigned: bool,
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
            settings: settings.clone(),
            topic: topic.to_string(),
            partitions,
            assigned: false,
            stats,
        })
    }

    fn assign(&mut self) -> Result<(), ConnectorError> {
        ensure_topics(
            &self.settings,
            std::slice::from_ref(&self.topic),
            self.partitions,
            Duration::from_secs(5),
        )?;
        let metadata = self
            .consumer
            .fetch_metadata(Some(&self.topic), Duration::from_secs(5))
            .map_err(kafka_error(format!("reading metadata of {}", self.topic)))?;
        let count = metadata
            .topics()
            .iter()
            .find(|t| t.name() == self.topic)
            .map_or(0, |t| t.partitions().len() as i32);
        if count == 0 {
            return Err(ConnectorError::User(format!(
                "topic {} has no partitions yet",
                self.topic
            )));
        }
        let mut list = TopicPartitionList::new();
        for partition in 0..count {
            list.add_partition_offset(&self.topic, partition, Offset::Beginning)
                .map_err(kafka_error(format!("assigning {}/{partition}", self.topic)))?;
        }
        self.consumer
            .assign(&list)
            .map_err(kafka_error("assigning partitions".into()))?;
        self.assigned = true;
        Ok(())
    }

    /// Up to `max` records, waiting at most `timeout` for the first. An error (the broker is
    /// unreachable before the partitions could be assigned) can be retried.
    pub fn poll(
        &mut self,
        max: usize,
        timeout: Duration,
    ) -> Result<Vec<PlainRecord>, ConnectorError> {
        if !self.assigned {
            self.assign()?;
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

/// Frames in flight at most between the spool and the broker.
const MAX_IN_FLIGHT: usize = 2048;
/// First and largest pause after a failed delivery.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(10));

/// Drains `spool` into Kafka in order until `stop` is set and the spool is empty (or
/// `stop_now` is set). A failed delivery rewinds to the first undelivered frame and retries
/// after an exponential backoff with jitter, with a producer from `new_producer`; duplicates
/// this may cause are dropped by the cloud (same edge, stream and sequence).
pub fn forward(
    spool: &Spool,
    producer: &mut FrameProducer,
    new_producer: &dyn Fn() -> Result<FrameProducer, ConnectorError>,
    stats: &LinkStats,
    stop: &AtomicBool,
    stop_now: &AtomicBool,
) -> Result<(), ConnectorError> {
    let mut next = spool.acknowledged();
    // Indices sent and not yet reported, in order, with whether they were delivered.
    let mut in_flight: std::collections::BTreeMap<u64, Option<bool>> = Default::default();
    let mut backoff = BACKOFF.0;
    let mut jitter_state = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
    loop {
        if stop_now.load(Ordering::Relaxed) {
            return Ok(());
        }
        // Send what fits.
        let mut sent = 0;
        if in_flight.len() < MAX_IN_FLIGHT {
            for f in spool.read(next, MAX_IN_FLIGHT - in_flight.len())? {
                match producer.send(&f.topic, &f.frame, f.index) {
                    Ok(()) => {
                        in_flight.insert(f.index, None);
                        next = f.index + 1;
                        sent += 1;
                    }
                    Err(SendRefused::QueueFull) => break,
                    Err(SendRefused::Failed(e)) => return Err(e),
                }
            }
        }
        producer.poll(if sent == 0 {
            Duration::from_millis(20)
        } else {
            Duration::ZERO
        });
        let mut failed = false;
        for (index, ok) in producer.take_deliveries() {
            if let Some(slot) = in_flight.get_mut(&index) {
                *slot = Some(ok);
            }
            failed |= !ok;
        }
        // Acknowledge the delivered prefix.
        let mut upto = None;
        let mut delivered = 0;
        while let Some((&index, &Some(true))) = in_flight.first_key_value() {
            in_flight.remove(&index);
            upto = Some(index + 1);
            delivered += 1;
        }
        if let Some(upto) = upto {
            stats.delivered.fetch_add(delivered, Ordering::Relaxed);
            spool.acknowledge(upto)?;
            backoff = BACKOFF.0;
        }
        if failed {
            // Wait for every outstanding report, then resend from the first failure.
            while in_flight.values().any(Option::is_none) && !stop_now.load(Ordering::Relaxed) {
                producer.poll(Duration::from_millis(50));
                for (index, ok) in producer.take_deliveries() {
                    if let Some(slot) = in_flight.get_mut(&index) {
                        *slot = Some(ok);
                    }
                }
            }
            let first_failed = in_flight
                .iter()
                .find(|(_, ok)| **ok == Some(false))
                .map(|(i, _)| *i);
            if let Some(first) = first_failed {
                let resend = in_flight.range(first..).count() as u64;
                stats.retries.fetch_add(resend, Ordering::Relaxed);
                let delivered_before: Vec<u64> =
                    in_flight.range(..first).map(|(i, _)| *i).collect();
                if let Some(last) = delivered_before.last() {
                    spool.acknowledge(last + 1)?;
                }
                in_flight.clear();
                next = first;
                jitter_state ^= jitter_state << 13;
                jitter_state ^= jitter_state >> 7;
                jitter_state ^= jitter_state << 17;
                let jitter =
                    Duration::from_millis(jitter_state % (backoff.as_millis() as u64 / 2 + 1));
                let pause = backoff + jitter;
                stats
                    .backoff_ms
                    .store(pause.as_millis() as i64, Ordering::Relaxed);
                let until = Instant::now() + pause;
                while Instant::now() < until && !stop_now.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                stats.backoff_ms.store(0, Ordering::Relaxed);
                backoff = (backoff * 2).min(BACKOFF.1);
                // An idempotent producer whose sequence the broker no longer accepts (e.g.
                // after a broker restart) fails every later frame: resend with a new one
                // (a new producer id). The cloud drops whatever this sends twice.
                *producer = new_producer()?;
            }
        }
        if stop.load(Ordering::Relaxed) && in_flight.is_empty() && spool.stats().depth == 0 {
            return Ok(());
        }
    }
}

/// What the cloud applies from a cut topic.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedItem {
    /// A well-formed frame.
    Frame(Frame),
    /// A record that is not a frame: the reason and a description of it.
    Rejected(String, String),
}

/// How often the cloud commits its offsets to the consumer group, and retries a failed
/// partition assignment.
const COMMIT_EVERY: Duration = Duration::from_secs(1);
/// Assignment attempts (one per [`COMMIT_EVERY`]) that wait for a topic to list all the
/// configured partitions.
const PARTITION_WAIT_ATTEMPTS: u32 = 30;

/// The cloud's reader of one cut topic: first everything its [`InputLog`] holds (the replay
/// after a restart), then new records from Kafka, each appended to the input log before it
/// is handed out. Records that are not frames go to the dead-letter topic too.
pub struct CloudFeed {
    topic: String,
    settings: KafkaSettings,
    partitions: i32,
    consumer: FrameConsumer,
    assigned: bool,
    last_attempt: Option<Instant>,
    assign_attempts: u32,
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
            settings: settings.clone(),
            partitions,
            consumer: FrameConsumer::new(settings, group, stats.clone())?,
            assigned: false,
            assign_attempts: 0,
            last_attempt: None,
            log,
            replay,
            next_offsets,
            dead_letters: DeadLetterProducer::new(settings, dead_letter_topic, stats)?,
            last_commit: Instant::now(),
        })
    }

    fn assign(&mut self) -> Result<(), ConnectorError> {
        ensure_topics(
            &self.settings,
            std::slice::from_ref(&self.topic),
            self.partitions,
            Duration::from_secs(5),
        )?;
        let partitions = self
            .consumer
            .partitions(&self.topic, Duration::from_secs(5))?;
        self.assign_attempts += 1;
        // A topic created a moment ago may not list all its partitions yet; reading only
        // those listed would miss the others for good. After a while an existing topic with
        // fewer partitions than configured is read as it is.
        if partitions == 0
            || (partitions < self.partitions && self.assign_attempts < PARTITION_WAIT_ATTEMPTS)
        {
            return Err(ConnectorError::User(format!(
                "topic {} lists {partitions} of {} partitions",
                self.topic, self.partitions
            )));
        }
        if partitions < self.partitions {
            tracing::warn!(topic = %self.topic, partitions, expected = self.partitions, "topic has fewer partitions than configured; reading those it has");
        }
        let positions: Vec<(String, i32, Option<i64>)> = (0..partitions)
            .map(|p| (self.topic.clone(), p, self.next_offsets.get(&p).copied()))
            .collect();
        self.consumer.assign(&positions)
    }

    /// Up to `max` items, without waiting. The flag says they come from the replay of the
    /// input log (their dead letters were written before the restart).
    pub fn poll(&mut self, max: usize) -> Result<(Vec<FeedItem>, bool), ConnectorError> {
        if !self.replay.is_empty() {
            let n = max.min(self.replay.len());
            return Ok((self.replay.drain(..n).collect(), true));
        }
        if !self.assigned {
            if self
                .last_attempt
                .is_some_and(|t| t.elapsed() < COMMIT_EVERY)
            {
                return Ok((Vec::new(), false));
            }
            self.last_attempt = Some(Instant::now());
            match self.assign() {
                Ok(()) => self.assigned = true,
                Err(error) => {
                    tracing::warn!(topic = %self.topic, error = %crate::error::chain(&error), "cannot assign partitions yet; retrying");
                    return Ok((Vec::new(), false));
                }
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
                .header
                .to_pairs()
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
