//! The control topics on Kafka, between `edgeflow cloud` and `edgeflow edge`.

use std::sync::Arc;
use std::time::Duration;

use edgeflow_connectors::error::chain;
use edgeflow_connectors::kafka::{KafkaSettings, LinkStats, RecordWriter, TopicTail};

use super::{MessageSink, MessageSource};
use crate::error::EngineError;

/// A control topic written through Kafka (JSON records keyed by issuer or edge id).
pub struct KafkaMessageSink {
    writer: RecordWriter,
}

impl KafkaMessageSink {
    /// Writes `topic` (created with `partitions` partitions when missing) on the broker of
    /// `settings`.
    pub fn open(
        settings: &KafkaSettings,
        topic: &str,
        partitions: i32,
    ) -> Result<Self, EngineError> {
        let writer = RecordWriter::new(settings, topic, partitions, Arc::new(LinkStats::default()))
            .map_err(|source| EngineError::Connector {
                node: topic.to_owned(),
                source,
            })?;
        Ok(KafkaMessageSink { writer })
    }
}

impl MessageSink for KafkaMessageSink {
    fn send(&mut self, key: &str, json: &[u8]) -> Result<(), EngineError> {
        self.writer
            .send(key.as_bytes(), json)
            .map_err(|source| EngineError::Connector {
                node: "control topic".into(),
                source,
            })
    }
}

impl Drop for KafkaMessageSink {
    /// Hands queued records and acknowledgements to the broker before the process ends.
    fn drop(&mut self) {
        if let Err(e) = self.writer.flush(Duration::from_secs(10)) {
            tracing::warn!(error = %chain(&e), "control messages not delivered before exit");
        }
    }
}

/// A control topic read through Kafka, every partition from the beginning.
pub struct KafkaMessageSource {
    tail: TopicTail,
}

impl KafkaMessageSource {
    /// Reads `topic` (with `partitions` partitions) on the broker of `settings`.
    pub fn open(
        settings: &KafkaSettings,
        topic: &str,
        partitions: i32,
    ) -> Result<Self, EngineError> {
        let tail = TopicTail::new(settings, topic, partitions, Arc::new(LinkStats::default()))
            .map_err(|source| EngineError::Connector {
                node: topic.to_owned(),
                source,
            })?;
        Ok(KafkaMessageSource { tail })
    }
}

impl MessageSource for KafkaMessageSource {
    fn poll(&mut self) -> Result<Vec<Vec<u8>>, EngineError> {
        let records = self
            .tail
            .poll(1024, Duration::from_millis(50))
            .map_err(|source| EngineError::Connector {
                node: "control topic".into(),
                source,
            })?;
        Ok(records.into_iter().map(|r| r.payload).collect())
    }
}
