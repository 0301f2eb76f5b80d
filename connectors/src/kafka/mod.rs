//! Kafka on rdkafka (librdkafka): frames to and from topics, topic creation, and the edge's
//! forwarder that drains the spool into Kafka.
//!
//! A frame maps onto a Kafka record one to one: key = edge id (so one edge's frames stay in
//! order on one partition), headers = the [`FrameHeader`](crate::frame::FrameHeader) pairs
//! (`edgeflow-*`), value = the payload. Any Kafka client can read the topics. Producers are
//! idempotent (`enable.idempotence`); the cloud reads with manually assigned partitions at
//! offsets it tracks itself, and commits them to its consumer group so
//! `kafka-consumer-groups` shows its lag.
//!
//! - `client.rs`: client settings, connection health, topic creation and the one partition
//!   assignment of readers outside a consumer group.
//! - `frames.rs`: cut frames to and from topics (producer, consumer, dead letters).
//! - `forwarder.rs`: the edge's forwarder from its spool to the broker.
//! - `cloud_feed.rs`: the cloud's reader of a cut topic through its input log.
//! - `records.rs`: plain records (the `kafka` node kinds and the control topics).

mod client;
mod cloud_feed;
mod forwarder;
mod frames;
mod records;

pub use client::{KafkaSettings, LinkStats, ensure_topics};
pub use cloud_feed::{CloudFeed, FeedItem};
pub use forwarder::forward;
pub use frames::{
    BadRecord, DeadLetterProducer, FrameConsumer, FrameProducer, Received, SendRefused,
};
pub use records::{PlainRecord, RecordReader, RecordWriter, TopicTail};
