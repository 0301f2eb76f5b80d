//! The record batch as timely data: the unit every dataflow edge carries.
//!
//! Within a process, batches move between operators and worker threads by pointer (Arrow
//! buffers are reference-counted). Between processes (timely's cluster mode) they are
//! serialized as Arrow IPC streams, which is what the serde impls below do.

use std::ops::Deref;

use arrow::record_batch::RecordBatch;
use edgeflow_connectors::frame::{decode_batch, encode_batch};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A columnar batch of events flowing through a dataflow.
#[derive(Debug, Clone)]
pub struct Batch(pub RecordBatch);

/// The timely time of every dataflow: event time in ms since the epoch. A stream's frontier
/// is its watermark.
pub type EventTime = i64;

impl Deref for Batch {
    type Target = RecordBatch;
    fn deref(&self) -> &RecordBatch {
        &self.0
    }
}

impl Serialize for Batch {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let bytes = encode_batch(&self.0).map_err(serde::ser::Error::custom)?;
        serializer.serialize_bytes(&bytes)
    }
}

impl<'de> Deserialize<'de> for Batch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes: Vec<u8> = serde::de::Deserialize::deserialize(deserializer)?;
        decode_batch(&bytes).map(Batch).map_err(D::Error::custom)
    }
}
