//! Checksummed, length-prefixed frame records: the on-disk format shared by the embedded log,
//! the edge's spool and the cloud's input log.
//!
//! A record is `len: u32 LE | crc32(body): u32 LE | body`, and the body is
//! `header_len: u32 LE | header (JSON object of text pairs) | payload`. The header holds the
//! frame's [`FrameHeader`] pairs (and its signature, if any) plus any extra pairs the owner of the file needs (a spool
//! index, a Kafka offset). A record cut short at the end of a file (a crash mid-write) reads
//! as "not there yet"; a record whose checksum fails is an error.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use crate::error::ConnectorError;
use crate::frame::{Frame, FrameHeader};

/// Bytes before each record body: its length and its CRC-32.
pub const RECORD_PREFIX: usize = 8;

/// Extra header pairs stored beside a frame's own.
pub type Extras = BTreeMap<String, String>;

/// Appends the record of `frame` (with `extras` in its header) to `out`.
pub fn encode_record(
    frame: &Frame,
    extras: &[(&str, String)],
    out: &mut Vec<u8>,
) -> Result<(), ConnectorError> {
    let mut header: serde_json::Map<String, serde_json::Value> = frame
        .header_pairs()
        .into_iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v)))
        .collect();
    for (k, v) in extras {
        header.insert((*k).to_string(), serde_json::Value::String(v.clone()));
    }
    let header = serde_json::to_vec(&header)?;
    let header_len = u32::try_from(header.len())
        .map_err(|_| ConnectorError::BadFrame("frame header too large".into()))?;
    let body_len = 4 + header.len() + frame.payload.len();
    let len = u32::try_from(body_len)
        .map_err(|_| ConnectorError::BadFrame("frame larger than 4 GiB".into()))?;
    let start = out.len();
    out.reserve(RECORD_PREFIX + body_len);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&header_len.to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&frame.payload);
    let crc = crc32fast::hash(&out[start + RECORD_PREFIX..]);
    out[start + 4..start + RECORD_PREFIX].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Reads the record at `offset` of `file` (whose length is `size`) into `buffer`.
///
/// Returns the offset after the record, or `None` when the file ends before the record does
/// (it is being written, or a crash cut it short). `what` names the file in errors.
pub fn read_record(
    file: &mut File,
    offset: u64,
    size: u64,
    buffer: &mut Vec<u8>,
    what: &str,
) -> Result<Option<u64>, ConnectorError> {
    if size < offset + RECORD_PREFIX as u64 {
        return Ok(None);
    }
    let io = |source| ConnectorError::Io {
        context: format!("reading {what}"),
        source,
    };
    file.seek(SeekFrom::Start(offset)).map_err(io)?;
    let mut prefix = [0u8; RECORD_PREFIX];
    file.read_exact(&mut prefix).map_err(io)?;
    let len = u64::from(u32::from_le_bytes([
        prefix[0], prefix[1], prefix[2], prefix[3],
    ]));
    let crc = u32::from_le_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]);
    if size < offset + RECORD_PREFIX as u64 + len {
        return Ok(None);
    }
    // `len` fits in memory: it is bounded by the file's size, which we just compared with.
    buffer.resize(len as usize, 0);
    file.read_exact(buffer).map_err(io)?;
    if crc32fast::hash(buffer) != crc {
        return Err(ConnectorError::BadFrame(format!(
            "{what}: checksum mismatch at offset {offset}"
        )));
    }
    Ok(Some(offset + RECORD_PREFIX as u64 + len))
}

/// Decodes a record body read by [`read_record`] into its frame and extra header pairs.
pub fn decode_body(body: &[u8], what: &str) -> Result<(Frame, Extras), ConnectorError> {
    let corrupt = |m: &str| ConnectorError::BadFrame(format!("{what}: {m}"));
    let header_len = body
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or_else(|| corrupt("record too short"))?;
    let header_bytes = body
        .get(4..4 + header_len)
        .ok_or_else(|| corrupt("header length out of range"))?;
    let mut pairs: Extras = serde_json::from_slice(header_bytes)
        .map_err(|e| corrupt(&format!("header is not a JSON object of text: {e}")))?;
    let header = FrameHeader::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    let signature = pairs.remove(crate::frame::SIGNATURE_HEADER);
    pairs.retain(|k, _| !crate::frame::HEADER_NAMES.contains(&k.as_str()));
    Ok((
        Frame {
            header,
            payload: body[4 + header_len..].to_vec(),
            signature,
        },
        pairs,
    ))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::frame::FrameKind;

    fn frame(sequence: u64) -> Frame {
        Frame {
            header: FrameHeader {
                pipeline: "p".into(),
                stream: "s".into(),
                edge_id: "e".into(),
                incarnation: 0,
                sequence,
                watermark: -3,
                schema_fingerprint: 9,
                kind: FrameKind::Data,
            },
            payload: vec![1, 2, 3],
            // The signature is stored with the frame (the spool keeps what the edge signed).
            signature: Some("5e".repeat(64)),
        }
    }

    #[test]
    fn records_round_trip_with_extras_and_torn_tails_read_as_absent() {
        let mut bytes = Vec::new();
        encode_record(&frame(1), &[("spool-index", "7".into())], &mut bytes).unwrap();
        let first = bytes.len() as u64;
        encode_record(&frame(2), &[], &mut bytes).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r");
        File::create(&path)
            .unwrap()
            .write_all(&bytes[..bytes.len() - 1])
            .unwrap();
        let mut file = File::open(&path).unwrap();
        let size = bytes.len() as u64 - 1;
        let mut buf = Vec::new();
        let next = read_record(&mut file, 0, size, &mut buf, "r").unwrap();
        assert_eq!(next, Some(first));
        let (f, extras) = decode_body(&buf, "r").unwrap();
        assert_eq!(f, frame(1));
        assert_eq!(extras.get("spool-index").map(String::as_str), Some("7"));
        assert_eq!(extras.len(), 1);
        assert_eq!(
            read_record(&mut file, first, size, &mut buf, "r").unwrap(),
            None
        );
    }

    #[test]
    fn a_flipped_byte_is_a_checksum_error() {
        let mut bytes = Vec::new();
        encode_record(&frame(1), &[], &mut bytes).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r");
        std::fs::write(&path, &bytes).unwrap();
        let mut file = File::open(&path).unwrap();
        let err = read_record(&mut file, 0, bytes.len() as u64, &mut Vec::new(), "r")
            .unwrap_err()
            .to_string();
        assert!(err.contains("checksum mismatch at offset 0"), "{err}");
    }
}
