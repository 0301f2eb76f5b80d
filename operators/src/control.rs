//! Control records: what the cloud asks a running edge node to change, and the edge's
//! acknowledgement. Plain data (serde); the engine carries them on the control topics and
//! the operators apply them.
//!
//! A record names one edge node and one action, and the event time from which it applies:
//! an edge node applies it to the first data at or after `apply_at` that it processes once
//! the record has arrived (a record that arrives after `apply_at` applies from its arrival).
//! Every edge that applies (or refuses) a record answers with a [`ControlAck`].

use serde::{Deserialize, Serialize};

/// One instruction for one edge node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ControlRecord {
    /// Unique id (the issuer's name and a sequence number); acknowledgements repeat it and
    /// an edge applies a given id once.
    pub id: String,
    /// The edge node it is for (its id in the pipeline).
    pub node: String,
    /// What to change.
    #[serde(flatten)]
    pub action: ControlAction,
    /// Event time (ms since the epoch) from which the change applies.
    pub apply_at: i64,
    /// Who issued it: an `insight` node's id, or `cli`.
    pub issued_by: String,
    /// Why (shown in the control log).
    #[serde(default)]
    pub reason: String,
}

/// A change to a running edge node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ControlAction {
    /// A detector's (`detect` z-score or `infer`) threshold.
    SetThreshold {
        /// The new threshold.
        value: f64,
    },
    /// A `window`'s size (tumbling), ms.
    SetWindowSize {
        /// The new size, ms.
        size_ms: i64,
    },
    /// Keep one reading in `every` (a sampling rate of 1/`every`); 1 keeps all.
    SetSampling {
        /// The sampling divisor (>= 1).
        every: u32,
    },
    /// Replace an `infer` node's model.
    SwapModel {
        /// Where the new model comes from.
        model: ModelSource,
    },
    /// Resume a disabled node.
    Enable,
    /// Stop a node's processing: it drops its input until enabled again.
    Disable,
}

/// The model of a [`ControlAction::SwapModel`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelSource {
    /// A model file (as written by `edgeflow train`) the edge can read.
    Path(String),
    /// The model file's bytes, base64 (standard alphabet, padded).
    Weights(String),
}

/// Whether an edge applied a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckStatus {
    /// Applied from `applied_at`.
    Applied,
    /// Refused (unknown node, an action the node does not support, a bad value); see
    /// `detail`.
    Rejected,
}

/// An edge's answer to a [`ControlRecord`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ControlAck {
    /// The record's id.
    pub id: String,
    /// The record's node.
    pub node: String,
    /// The edge that answers.
    pub edge_id: String,
    /// Applied or refused.
    pub status: AckStatus,
    /// Event time from which it took effect (for `applied`).
    pub applied_at: Option<i64>,
    /// Why it was refused, or what was applied.
    #[serde(default)]
    pub detail: String,
}
