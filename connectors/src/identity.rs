//! Edge identity on the data path: each edge's Ed25519 key pair, the signature every frame it
//! writes carries, and the cloud's registry of enrolled edges that checks those signatures.
//!
//! An edge signs a frame once, when the frame is built ([`FrameSigner::sign`]); the signature
//! travels with it through the spool and every re-send, in the `edgeflow-signature` header
//! (128 hexadecimal digits). It covers a canonical encoding of the whole frame (see
//! [`signed_message`]): a domain-separation prefix, then pipeline, stream, edge id,
//! incarnation, sequence, watermark, schema fingerprint, kind and the SHA-512 of the payload,
//! each string length-prefixed and each number fixed-width, so no two different frames encode
//! alike and a signature made for anything else never verifies as a frame's.
//!
//! Key files: the private key is PKCS#8 PEM (`<edge-id>.key`, mode 0600), the public key
//! SPKI PEM (`<edge-id>.pub`), both written by [`write_key_pair`]. The cloud's
//! [`EdgeRegistry`] is a directory of enrolled edges' `<edge-id>.pub` files, read once at
//! start: removing a file revokes the edge from the next start on.
//!
//! The cryptography is ed25519-dalek's (strict verification: no weak keys, no malleable
//! signatures); nothing here is hand-written crypto.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, KeypairBytes,
};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha512};

use crate::error::ConnectorError;
use crate::frame::{Frame, FrameHeader};

/// Prefix of every signed message: says what is signed, and in which version of the encoding.
const DOMAIN: &[u8] = b"edgeflow-frame-v1";

/// The extension of an edge's private key file.
pub const PRIVATE_KEY_EXTENSION: &str = "key";
/// The extension of an edge's public key file (the cloud's registry holds these).
pub const PUBLIC_KEY_EXTENSION: &str = "pub";

/// The bytes an edge signs for a frame: `edgeflow-frame-v1`, then pipeline, stream and edge id
/// (each a u64 big-endian length and the UTF-8 bytes), incarnation, sequence, watermark and
/// schema fingerprint (8 bytes big-endian each), the kind's name (length-prefixed) and the
/// 64-byte SHA-512 of the payload.
pub fn signed_message(header: &FrameHeader, payload: &[u8]) -> Vec<u8> {
    let kind = header.kind.name();
    let strings = header.pipeline.len() + header.stream.len() + header.edge_id.len() + kind.len();
    // The prefix, four length prefixes, four numbers and the payload's digest.
    let mut out = Vec::with_capacity(DOMAIN.len() + strings + 4 * 8 + 4 * 8 + 64);
    let text = |out: &mut Vec<u8>, value: &str| {
        out.extend_from_slice(&(value.len() as u64).to_be_bytes());
        out.extend_from_slice(value.as_bytes());
    };
    out.extend_from_slice(DOMAIN);
    text(&mut out, &header.pipeline);
    text(&mut out, &header.stream);
    text(&mut out, &header.edge_id);
    out.extend_from_slice(&header.incarnation.to_be_bytes());
    out.extend_from_slice(&header.sequence.to_be_bytes());
    out.extend_from_slice(&header.watermark.to_be_bytes());
    out.extend_from_slice(&header.schema_fingerprint.to_be_bytes());
    text(&mut out, kind);
    out.extend_from_slice(&Sha512::digest(payload));
    out
}

/// An edge's private key, loaded from its `.key` file: signs the frames the edge writes.
pub struct FrameSigner {
    key: SigningKey,
}

impl fmt::Debug for FrameSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret: the public half says which key this is.
        write!(
            f,
            "FrameSigner(public key {})",
            to_hex(self.key.verifying_key().as_bytes())
        )
    }
}

impl FrameSigner {
    /// Loads a PKCS#8 PEM private key (as written by [`write_key_pair`]).
    pub fn load(path: &Path) -> Result<FrameSigner, ConnectorError> {
        let text = fs::read_to_string(path).map_err(|e| ConnectorError::io("read", path, e))?;
        let key = SigningKey::from_pkcs8_pem(&text).map_err(|e| {
            ConnectorError::User(format!(
                "{}: not an Ed25519 private key in PKCS#8 PEM ({e}); create one with \
                 `edgeflow keys new --edge-id ID`",
                path.display()
            ))
        })?;
        if let Ok(meta) = fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", meta.permissions().mode() & 0o777),
                "the edge's private key is readable by other users; chmod 600 it"
            );
        }
        Ok(FrameSigner { key })
    }

    /// Signs `frame` (its header and payload as they are now) and stores the signature in it.
    pub fn sign(&self, frame: &mut Frame) {
        let signature = self
            .key
            .sign(&signed_message(&frame.header, &frame.payload));
        frame.signature = Some(to_hex(&signature.to_bytes()));
    }
}

/// Creates a new key pair for `edge_id` in `dir`: `<edge_id>.key` (PKCS#8 PEM, mode 0600) and
/// `<edge_id>.pub` (SPKI PEM). Refuses to overwrite either file. Returns both paths.
pub fn write_key_pair(edge_id: &str, dir: &Path) -> Result<(PathBuf, PathBuf), ConnectorError> {
    let private = dir.join(format!("{edge_id}.{PRIVATE_KEY_EXTENSION}"));
    let public = dir.join(format!("{edge_id}.{PUBLIC_KEY_EXTENSION}"));
    for path in [&private, &public] {
        if path.exists() {
            return Err(ConnectorError::User(format!(
                "{} exists: refusing to overwrite a key of edge {edge_id:?} (to re-key the \
                 edge, remove both files first and enroll the new .pub in the cloud's \
                 --edge-keys directory)",
                path.display()
            )));
        }
    }
    fs::create_dir_all(dir).map_err(|e| ConnectorError::io("create directory", dir, e))?;
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| ConnectorError::Io {
        context: "reading the operating system's random source for a new key".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let key = SigningKey::from_bytes(&seed);
    seed.fill(0);
    let internal = |what: &str, e: &dyn fmt::Display| {
        ConnectorError::Internal(format!("encoding a new key as {what}: {e}"))
    };
    // PKCS#8 v1 (RFC 8410: the seed only), which every tool reads (OpenSSL 3 refuses the v2
    // form with the public key inside).
    let private_pem = KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    }
    .to_pkcs8_pem(LineEnding::LF)
    .map_err(|e| internal("PKCS#8 PEM", &e))?;
    let public_pem = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| internal("SPKI PEM", &e))?;
    // `create_new`: a file that appeared since the check above is not overwritten either.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&private)
        .map_err(|e| ConnectorError::io("create", &private, e))?;
    file.write_all(private_pem.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| ConnectorError::io("write", &private, e))?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&public)
        .map_err(|e| ConnectorError::io("create", &public, e))?;
    file.write_all(public_pem.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| ConnectorError::io("write", &public, e))?;
    Ok((private, public))
}

/// Why the cloud refused a frame before applying anything of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The frame's edge id has no public key in the registry (never enrolled, or revoked).
    UnknownEdge,
    /// The frame carries no `edgeflow-signature` header.
    Unsigned,
    /// The signature is malformed or does not verify with the edge's enrolled key: the frame
    /// was changed after signing, or signed by another key.
    BadSignature,
}

impl Rejection {
    /// The reason as a metric label and dead-letter reason: `unknown edge`, `unsigned frame`,
    /// `bad signature`.
    pub fn reason(self) -> &'static str {
        match self {
            Rejection::UnknownEdge => "unknown edge",
            Rejection::Unsigned => "unsigned frame",
            Rejection::BadSignature => "bad signature",
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

/// The cloud's registry of enrolled edges: edge id -> public key, from the `<edge-id>.pub`
/// files of one directory, read once.
#[derive(Debug)]
pub struct EdgeRegistry {
    dir: PathBuf,
    keys: BTreeMap<String, VerifyingKey>,
}

impl EdgeRegistry {
    /// Reads every `<edge-id>.pub` file of `dir` (other files are ignored). A directory
    /// without any is an error: every frame would be refused.
    pub fn load(dir: &Path) -> Result<EdgeRegistry, ConnectorError> {
        let entries = fs::read_dir(dir).map_err(|e| ConnectorError::io("list", dir, e))?;
        let mut keys = BTreeMap::new();
        for entry in entries {
            let path = entry
                .map_err(|e| ConnectorError::io("list", dir, e))?
                .path();
            if path.extension().and_then(|e| e.to_str()) != Some(PUBLIC_KEY_EXTENSION) {
                continue;
            }
            let Some(edge_id) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            let text =
                fs::read_to_string(&path).map_err(|e| ConnectorError::io("read", &path, e))?;
            let key = VerifyingKey::from_public_key_pem(&text).map_err(|e| {
                ConnectorError::User(format!(
                    "{}: not an Ed25519 public key in SPKI PEM ({e}); enroll the .pub file \
                     `edgeflow keys new` wrote for edge {edge_id:?}",
                    path.display()
                ))
            })?;
            keys.insert(edge_id.to_string(), key);
        }
        if keys.is_empty() {
            return Err(ConnectorError::User(format!(
                "{}: no enrolled edges (no <edge-id>.pub files): every frame would be \
                 rejected; create keys with `edgeflow keys new --edge-id ID` and copy the \
                 .pub files here",
                dir.display()
            )));
        }
        Ok(EdgeRegistry {
            dir: dir.to_path_buf(),
            keys,
        })
    }

    /// The directory the registry was read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether `edge_id` is enrolled.
    pub fn contains(&self, edge_id: &str) -> bool {
        self.keys.contains_key(edge_id)
    }

    /// Checks that `frame` was signed, as it is, by the key enrolled for its edge id.
    pub fn verify(&self, frame: &Frame) -> Result<(), Rejection> {
        let key = self
            .keys
            .get(&frame.header.edge_id)
            .ok_or(Rejection::UnknownEdge)?;
        let text = frame.signature.as_deref().ok_or(Rejection::Unsigned)?;
        let bytes: [u8; 64] = from_hex(text).ok_or(Rejection::BadSignature)?;
        key.verify_strict(
            &signed_message(&frame.header, &frame.payload),
            &Signature::from_bytes(&bytes),
        )
        .map_err(|_| Rejection::BadSignature)
    }
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `N` bytes from exactly `2 * N` hexadecimal digits.
fn from_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameKind;

    fn frame() -> Frame {
        Frame {
            header: FrameHeader {
                pipeline: "quickstart".into(),
                stream: "per_sec".into(),
                edge_id: "press-07".into(),
                incarnation: 0x00c0_ffee,
                sequence: 42,
                watermark: 1_767_225_600_000,
                schema_fingerprint: 0x1234_5678_9abc_def0,
                kind: FrameKind::Data,
            },
            payload: b"arrow bytes".to_vec(),
            signature: None,
        }
    }

    /// What is changed, and how.
    type Tamper = (&'static str, fn(&mut Frame));

    /// A key pair written by `write_key_pair`, its signer and a registry of it.
    fn enrolled(dir: &Path) -> (FrameSigner, EdgeRegistry) {
        let (private, public) = write_key_pair("press-07", dir).unwrap();
        assert_eq!(private, dir.join("press-07.key"));
        assert_eq!(public, dir.join("press-07.pub"));
        (
            FrameSigner::load(&private).unwrap(),
            EdgeRegistry::load(dir).unwrap(),
        )
    }

    #[test]
    fn a_signed_frame_verifies_with_the_pub_file_and_any_tampering_breaks_it() {
        let dir = tempfile::tempdir().unwrap();
        let (signer, registry) = enrolled(dir.path());
        let mut signed = frame();
        signer.sign(&mut signed);
        assert_eq!(signed.signature.as_ref().map(String::len), Some(128));
        assert_eq!(registry.verify(&signed), Ok(()));

        // Every header field, and the payload, is covered.
        let tampered: [Tamper; 10] = [
            ("pipeline", |f| f.header.pipeline.push('x')),
            ("stream", |f| f.header.stream = "spikes".into()),
            ("incarnation", |f| f.header.incarnation += 1),
            ("sequence", |f| f.header.sequence = 1_000_000_000_000),
            ("watermark", |f| f.header.watermark += 1),
            ("schema", |f| f.header.schema_fingerprint ^= 1),
            ("kind", |f| f.header.kind = FrameKind::End),
            ("payload byte", |f| f.payload[3] ^= 0x01),
            ("payload length", |f| f.payload.push(0)),
            ("signature", |f| {
                let mut s = f.signature.take().unwrap();
                s.replace_range(0..2, if s.starts_with("00") { "01" } else { "00" });
                f.signature = Some(s);
            }),
        ];
        for (what, change) in tampered {
            let mut f = signed.clone();
            change(&mut f);
            assert_eq!(
                registry.verify(&f),
                Err(Rejection::BadSignature),
                "tampered {what}"
            );
        }
        // Another edge id is another key: here one that is not enrolled.
        let mut other = signed.clone();
        other.header.edge_id = "press-08".into();
        assert_eq!(registry.verify(&other), Err(Rejection::UnknownEdge));
        let mut unsigned = signed.clone();
        unsigned.signature = None;
        assert_eq!(registry.verify(&unsigned), Err(Rejection::Unsigned));
        let mut garbage = signed;
        garbage.signature = Some("zz".repeat(64));
        assert_eq!(registry.verify(&garbage), Err(Rejection::BadSignature));
    }

    #[test]
    fn a_frame_signed_by_another_key_under_an_enrolled_id_is_refused() {
        let enrolled_dir = tempfile::tempdir().unwrap();
        let thief_dir = tempfile::tempdir().unwrap();
        let (_, registry) = enrolled(enrolled_dir.path());
        let (thief, _) = enrolled(thief_dir.path());
        let mut stolen = frame();
        thief.sign(&mut stolen);
        assert_eq!(registry.verify(&stolen), Err(Rejection::BadSignature));
    }

    #[test]
    fn the_encoding_is_unambiguous_across_field_boundaries() {
        // Without length prefixes "ab" + "c" and "a" + "bc" would sign alike.
        let mut a = frame();
        a.header.pipeline = "ab".into();
        a.header.stream = "c".into();
        let mut b = frame();
        b.header.pipeline = "a".into();
        b.header.stream = "bc".into();
        assert_ne!(
            signed_message(&a.header, &a.payload),
            signed_message(&b.header, &b.payload)
        );
        assert!(signed_message(&a.header, &a.payload).starts_with(b"edgeflow-frame-v1"));
    }

    #[test]
    fn key_files_are_pem_private_is_0600_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = write_key_pair("press-07", dir.path()).unwrap();
        let private_text = fs::read_to_string(&private).unwrap();
        assert!(private_text.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(
            fs::read_to_string(&public)
                .unwrap()
                .starts_with("-----BEGIN PUBLIC KEY-----")
        );
        assert_eq!(
            fs::metadata(&private).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let err = write_key_pair("press-07", dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("refusing to overwrite"), "{err}");
        assert_eq!(fs::read_to_string(&private).unwrap(), private_text);
        // The registry refuses a directory without keys, and a .pub that is not a key.
        let empty = tempfile::tempdir().unwrap();
        let err = EdgeRegistry::load(empty.path()).unwrap_err().to_string();
        assert!(err.contains("no enrolled edges"), "{err}");
        fs::write(empty.path().join("bad.pub"), "not pem").unwrap();
        let err = EdgeRegistry::load(empty.path()).unwrap_err().to_string();
        assert!(err.contains("bad.pub: not an Ed25519 public key"), "{err}");
    }
}
