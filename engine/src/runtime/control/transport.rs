//! The transport of the control topics: the [`MessageSink`] / [`MessageSource`] pair the
//! channel threads use, and its embedded-log implementation (one process; Kafka's is in
//! `kafka.rs`).

use edgeflow_connectors::embedded_log::{EmbeddedLog, LogConsumer, LogProducer};
use edgeflow_connectors::frame::{Frame, FrameHeader, FrameKind};

use crate::error::EngineError;

/// One side of a control topic: writes JSON messages.
pub trait MessageSink: Send {
    /// Writes one message, keyed by `key` (the issuer or the edge id).
    fn send(&mut self, key: &str, json: &[u8]) -> Result<(), EngineError>;
}

/// The other side: reads every message of a topic from its beginning, in order per writer.
pub trait MessageSource: Send {
    /// The messages that arrived since the last call (possibly none).
    fn poll(&mut self) -> Result<Vec<Vec<u8>>, EngineError>;
}

/// A control topic on the embedded log: each message is a frame whose payload is the JSON.
pub struct LogSink {
    producer: LogProducer,
    header: FrameHeader,
}

impl LogSink {
    /// Writes `topic` of `log` as producer `writer`.
    pub fn open(
        log: &EmbeddedLog,
        pipeline: &str,
        topic: &str,
        writer: &str,
    ) -> Result<Self, EngineError> {
        let producer = log
            .producer(topic, writer)
            .map_err(|source| EngineError::Connector {
                node: topic.to_owned(),
                source,
            })?;
        Ok(LogSink {
            producer,
            header: FrameHeader {
                pipeline: pipeline.to_owned(),
                stream: topic.to_owned(),
                edge_id: writer.to_owned(),
                incarnation: 0,
                sequence: 0,
                watermark: 0,
                schema_fingerprint: 0,
                kind: FrameKind::Data,
            },
        })
    }
}

impl MessageSink for LogSink {
    fn send(&mut self, _key: &str, json: &[u8]) -> Result<(), EngineError> {
        self.header.sequence += 1;
        let frame = Frame {
            header: self.header.clone(),
            payload: json.to_vec(),
            signature: None,
        };
        self.producer
            .append(&frame)
            .map(|_| ())
            .map_err(|source| EngineError::Connector {
                node: self.header.stream.clone(),
                source,
            })
    }
}

/// Reads a control topic of the embedded log (every writer).
pub struct LogSource {
    consumer: LogConsumer,
    topic: String,
}

impl LogSource {
    /// Reads `topic` of `log` from its beginning.
    pub fn open(log: &EmbeddedLog, topic: &str) -> Self {
        LogSource {
            consumer: log.consumer(topic, |_| true),
            topic: topic.to_owned(),
        }
    }
}

impl MessageSource for LogSource {
    fn poll(&mut self) -> Result<Vec<Vec<u8>>, EngineError> {
        let frames = self
            .consumer
            .poll(1024)
            .map_err(|source| EngineError::Connector {
                node: self.topic.clone(),
                source,
            })?;
        Ok(frames.into_iter().map(|f| f.payload).collect())
    }
}
