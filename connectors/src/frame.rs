//! The wire format of everything that crosses the edge -> cloud cut.
//!
//! A [`Frame`] is one Arrow record batch, encoded by the content-aware codec
//! (`edgeflow_operators::codec`, the default) or as an Arrow IPC stream (schema + batch),
//! plus a [`FrameHeader`] that says where it comes from and how far its producer has
//! progressed: pipeline, stream, edge id, incarnation, sequence number, watermark and the
//! fingerprint of the batch's schema. The header maps one-to-one onto Kafka record headers
//! (see [`FrameHeader::to_pairs`]); `(edge, incarnation, stream, sequence)` makes delivery
//! idempotent. The incarnation is chosen once per edge data directory, so an edge
//! re-provisioned under the same id with a fresh directory (its sequences start again at 1)
//! opens a new sequence range instead of having its frames taken for duplicates.
//!
//! A frame may carry its producer's signature of header and payload (`edgeflow-signature`,
//! see [`crate::identity`]); the cloud checks it against its registry of edges before it
//! trusts any other field.
//!
//! The fingerprint is a claim, not a proof: a consumer decodes a payload with
//! [`decode_batch_as`], which checks the decoded batch's own schema against the one the
//! topic carries, so a batch of another schema never reaches a table.

use std::io::Cursor;

use arrow::datatypes::{Schema, SchemaRef};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use edgeflow_operators::codec;
use edgeflow_operators::schema::{EventSchema, FieldType};

use crate::error::ConnectorError;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// A batch of records.
    Data,
    /// No records: the producer's watermark advanced.
    Watermark,
    /// The producer finished: no more frames will follow on this stream.
    End,
}

impl FrameKind {
    /// Name used in headers.
    pub fn name(self) -> &'static str {
        match self {
            FrameKind::Data => "data",
            FrameKind::Watermark => "watermark",
            FrameKind::End => "end",
        }
    }

    fn from_name(name: &str) -> Option<FrameKind> {
        [FrameKind::Data, FrameKind::Watermark, FrameKind::End]
            .into_iter()
            .find(|k| k.name() == name)
    }
}

/// Metadata of a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameHeader {
    /// Pipeline name.
    pub pipeline: String,
    /// Stream name, e.g. `per_sec` or `per_sec.late`.
    pub stream: String,
    /// The producing edge.
    pub edge_id: String,
    /// Which life of `edge_id` produced the frame: chosen when its spool directory was
    /// created (see `Spool::incarnation`), so sequence numbers are unique per
    /// `(edge_id, incarnation)`. 0 for producers without a spool (the embedded log, control
    /// records).
    pub incarnation: u64,
    /// Position of this frame in the producer's sequence for this stream, from 1.
    pub sequence: u64,
    /// Every record the producer sends after this frame has event time >= this.
    pub watermark: i64,
    /// [`schema_fingerprint`] of the payload's schema (0 for frames without payload).
    pub schema_fingerprint: u64,
    /// What the frame carries.
    pub kind: FrameKind,
}

/// Header names, in the order [`FrameHeader::to_pairs`] writes them.
pub const HEADER_NAMES: [&str; 8] = [
    "edgeflow-pipeline",
    "edgeflow-stream",
    "edgeflow-edge",
    "edgeflow-incarnation",
    "edgeflow-seq",
    "edgeflow-watermark",
    "edgeflow-schema",
    "edgeflow-kind",
];

/// The header carrying a frame's Ed25519 signature (see [`crate::identity`]).
pub const SIGNATURE_HEADER: &str = "edgeflow-signature";

impl FrameHeader {
    /// The header as `(name, value)` text pairs, the form Kafka record headers take.
    pub fn to_pairs(&self) -> Vec<(&'static str, String)> {
        let values = [
            self.pipeline.clone(),
            self.stream.clone(),
            self.edge_id.clone(),
            format!("{:016x}", self.incarnation),
            self.sequence.to_string(),
            self.watermark.to_string(),
            format!("{:016x}", self.schema_fingerprint),
            self.kind.name().to_string(),
        ];
        HEADER_NAMES.into_iter().zip(values).collect()
    }

    /// Reads a header back from `(name, value)` pairs; every name must be present.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, ConnectorError> {
        let mut values: [Option<&str>; 8] = [None; 8];
        for (name, value) in pairs {
            if let Some(i) = HEADER_NAMES.iter().position(|n| *n == name) {
                values[i] = Some(value);
            }
        }
        let get = |i: usize| {
            values[i].ok_or_else(|| {
                ConnectorError::BadFrame(format!("missing header {}", HEADER_NAMES[i]))
            })
        };
        let number = |i: usize| -> Result<i128, ConnectorError> {
            get(i)?.parse::<i128>().map_err(|_| {
                ConnectorError::BadFrame(format!("header {} is not a number", HEADER_NAMES[i]))
            })
        };
        let hexadecimal = |i: usize| {
            u64::from_str_radix(get(i)?, 16).map_err(|_| {
                ConnectorError::BadFrame(format!("header {} is not hexadecimal", HEADER_NAMES[i]))
            })
        };
        Ok(FrameHeader {
            pipeline: get(0)?.to_string(),
            stream: get(1)?.to_string(),
            edge_id: get(2)?.to_string(),
            incarnation: hexadecimal(3)?,
            sequence: u64::try_from(number(4)?)
                .map_err(|_| ConnectorError::BadFrame("header edgeflow-seq out of range".into()))?,
            watermark: i64::try_from(number(5)?).map_err(|_| {
                ConnectorError::BadFrame("header edgeflow-watermark out of range".into())
            })?,
            schema_fingerprint: hexadecimal(6)?,
            kind: FrameKind::from_name(get(7)?).ok_or_else(|| {
                ConnectorError::BadFrame(
                    "header edgeflow-kind must be data, watermark or end".into(),
                )
            })?,
        })
    }
}

/// A header, its encoded payload and the producer's signature of both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Metadata.
    pub header: FrameHeader,
    /// Arrow IPC stream bytes (empty unless `header.kind` is `Data`).
    pub payload: Vec<u8>,
    /// The `edgeflow-signature` header as sent: the hexadecimal Ed25519 signature of header
    /// and payload by the edge's key ([`crate::identity::FrameSigner`]), `None` when the
    /// producer has no key. Only the cloud's registry of edges gives it meaning.
    pub signature: Option<String>,
}

impl Frame {
    /// The record headers of the frame: its header's pairs, then the signature if any.
    pub fn header_pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = self.header.to_pairs();
        if let Some(signature) = &self.signature {
            pairs.push((SIGNATURE_HEADER, signature.clone()));
        }
        pairs
    }
}

/// A stable 64-bit fingerprint of a schema (FNV-1a over its pipeline-syntax text), so a
/// consumer can tell without decoding whether a payload has the schema it expects.
pub fn schema_fingerprint(schema: &EventSchema) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in schema.to_string().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Encodes a batch as an Arrow IPC stream.
pub fn encode_batch(batch: &RecordBatch) -> Result<Vec<u8>, ConnectorError> {
    let mut out = Vec::with_capacity(batch.get_array_memory_size() / 2 + 256);
    let mut writer = StreamWriter::try_new(&mut out, batch.schema_ref())?;
    writer.write(batch)?;
    writer.finish()?;
    drop(writer);
    Ok(out)
}

/// Decodes a payload: a frame of the content-aware codec (it starts with `EFC`), or an
/// Arrow IPC stream holding one batch. Neither needs any configuration.
pub fn decode_batch(bytes: &[u8]) -> Result<RecordBatch, ConnectorError> {
    if bytes.starts_with(codec::MAGIC) {
        return codec::decode(bytes).map_err(|e| ConnectorError::BadFrame(e.to_string()));
    }
    let mut reader = StreamReader::try_new(Cursor::new(bytes), None)?;
    match reader.next() {
        Some(batch) => Ok(batch?),
        None => Err(ConnectorError::BadFrame(
            "payload holds no record batch".into(),
        )),
    }
}

/// Decodes a payload (as [`decode_batch`]) that must hold a batch of `expected`: the same
/// field names and types in the same order. The batch comes back carrying `expected` itself,
/// so it matches every other batch of the stream exactly. A payload of another schema is a
/// [`ConnectorError::BadFrame`] saying `schema mismatch: expected (...), got (...)`.
pub fn decode_batch_as(bytes: &[u8], expected: &SchemaRef) -> Result<RecordBatch, ConnectorError> {
    let batch = decode_batch(bytes)?;
    check_schema(batch.schema_ref(), expected).map_err(ConnectorError::BadFrame)?;
    Ok(RecordBatch::try_new(
        std::sync::Arc::clone(expected),
        batch.columns().to_vec(),
    )?)
}

/// Checks that `got` has the field names and types of `expected`, in order (nullability and
/// metadata aside); the error reads `schema mismatch: expected (...), got (...)`.
pub fn check_schema(got: &Schema, expected: &Schema) -> Result<(), String> {
    let same = got.fields().len() == expected.fields().len()
        && got
            .fields()
            .iter()
            .zip(expected.fields())
            .all(|(g, e)| g.name() == e.name() && g.data_type() == e.data_type());
    if same {
        return Ok(());
    }
    Err(format!(
        "schema mismatch: expected ({}), got ({})",
        show_schema(expected),
        show_schema(got)
    ))
}

/// A schema as pipeline-syntax `name: type` pairs (Arrow's type name where there is none).
fn show_schema(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| match FieldType::from_arrow(f.data_type()) {
            Some(ty) => format!("{}: {ty}", f.name()),
            None => format!("{}: {}", f.name(), f.data_type()),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Float64Array, StringArray};
    use edgeflow_operators::schema::FieldType;

    use super::*;

    fn header() -> FrameHeader {
        FrameHeader {
            pipeline: "p".into(),
            stream: "per_sec.late".into(),
            edge_id: "press-07".into(),
            incarnation: 0x00c0_ffee,
            sequence: 42,
            watermark: -5,
            schema_fingerprint: u64::MAX - 3,
            kind: FrameKind::Data,
        }
    }

    #[test]
    fn header_round_trips_through_text_pairs() {
        let h = header();
        let pairs = h.to_pairs();
        let back = FrameHeader::from_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str()))).unwrap();
        assert_eq!(back, h);
    }

    #[test]
    fn header_with_missing_or_bad_field_is_rejected() {
        let pairs = header().to_pairs();
        let missing = FrameHeader::from_pairs(pairs.iter().skip(1).map(|(k, v)| (*k, v.as_str())));
        assert!(
            missing
                .unwrap_err()
                .to_string()
                .contains("edgeflow-pipeline")
        );
        let bad = FrameHeader::from_pairs(pairs.iter().map(|(k, v)| {
            (
                *k,
                if *k == "edgeflow-seq" {
                    "x"
                } else {
                    v.as_str()
                },
            )
        }));
        assert!(bad.unwrap_err().to_string().contains("edgeflow-seq"));
    }

    #[test]
    fn batch_round_trips_through_ipc() {
        let schema = EventSchema::new(vec![
            ("device".into(), FieldType::String),
            ("value".into(), FieldType::F64),
        ]);
        let batch = RecordBatch::try_new(
            schema.to_arrow(),
            vec![
                Arc::new(StringArray::from(vec![Some("a"), None])),
                Arc::new(Float64Array::from(vec![1.5, f64::NAN])),
            ],
        )
        .unwrap();
        let back = decode_batch(&encode_batch(&batch).unwrap()).unwrap();
        assert_eq!(back.schema(), batch.schema());
        assert_eq!(format!("{back:?}"), format!("{batch:?}"));
        assert!(decode_batch(b"not arrow").is_err());
    }

    #[test]
    fn a_payload_whose_schema_differs_from_the_topics_is_refused() {
        // Regression (issue 12, case 19): a frame with the right fingerprint header but a
        // batch of swapped types was accepted, and every SQL query on the table failed.
        let expected = EventSchema::new(vec![
            ("device".into(), FieldType::String),
            ("value".into(), FieldType::F64),
        ]);
        let swapped = EventSchema::new(vec![
            ("device".into(), FieldType::F64),
            ("value".into(), FieldType::String),
        ]);
        let batch = RecordBatch::try_new(
            swapped.to_arrow(),
            vec![
                Arc::new(Float64Array::from(vec![1.0])),
                Arc::new(StringArray::from(vec!["a"])),
            ],
        )
        .unwrap();
        let err = decode_batch_as(&encode_batch(&batch).unwrap(), &expected.to_arrow())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "bad frame: schema mismatch: expected (device: string, value: f64), \
             got (device: f64, value: string)"
        );
        // Same types in another order, or a missing field, are refused too.
        let fewer = batch.project(&[0]).unwrap();
        assert!(decode_batch_as(&encode_batch(&fewer).unwrap(), &expected.to_arrow()).is_err());

        // A batch of the topic's schema (here: written non-nullable) comes back carrying the
        // topic's own schema.
        let strict = Arc::new(Schema::new(vec![
            arrow::datatypes::Field::new("device", arrow::datatypes::DataType::Utf8, false),
            arrow::datatypes::Field::new("value", arrow::datatypes::DataType::Float64, false),
        ]));
        let good = RecordBatch::try_new(
            strict,
            vec![
                Arc::new(StringArray::from(vec!["a"])),
                Arc::new(Float64Array::from(vec![1.0])),
            ],
        )
        .unwrap();
        let back = decode_batch_as(&encode_batch(&good).unwrap(), &expected.to_arrow()).unwrap();
        assert_eq!(back.schema(), expected.to_arrow());
        assert_eq!(back.num_rows(), 1);
    }

    #[test]
    fn fingerprint_tells_schemas_apart() {
        let a = EventSchema::new(vec![("v".into(), FieldType::F64)]);
        let b = EventSchema::new(vec![("v".into(), FieldType::I64)]);
        assert_ne!(schema_fingerprint(&a), schema_fingerprint(&b));
        assert_eq!(schema_fingerprint(&a), schema_fingerprint(&a.clone()));
    }
}
