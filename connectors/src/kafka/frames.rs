//! Cut frames on Kafka: the edge's [`FrameProducer`], the cloud's [`FrameConsumer`] and the
//! [`DeadLetterProducer`] for records that are not frames. A frame maps onto a record one to
//! one: key = edge id, headers = the [`FrameHeader`] pairs and the signature, value = the
//! payload.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use super::client::{Callbacks, KafkaSettings, LinkStats, kafka_error};
use crate::error::ConnectorError;
use crate::frame::{Frame, FrameHeader, SIGNATURE_HEADER};

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
        for (key, value) in frame.header_pairs() {
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
                signature: pairs
                    .iter()
                    .find(|(k, _)| k == SIGNATURE_HEADER)
                    .map(|(_, v)| v.clone()),
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
    pub(super) consumer: BaseConsumer<Callbacks>,
    stats: Arc<LinkStats>,
}

impl FrameConsumer {
    /// A consumer in group `group` (used for offset commits only: the cloud's feed assigns
    /// the partitions itself).
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
