//! The codec's error type: what encoding or decoding a frame can fail on.

use arrow::datatypes::DataType;

/// A boxed cause from a compressor or Arrow.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What can go wrong while encoding or decoding a frame.
///
/// Three kinds, as everywhere in edgeflow: *user* errors (a batch or options the codec cannot
/// take: [`UnsupportedType`](Self::UnsupportedType), [`InvalidOptions`](Self::InvalidOptions),
/// [`TooLarge`](Self::TooLarge)), *data* errors (the bytes given to the decoder are not a frame
/// it can read: [`Corrupt`](Self::Corrupt), [`Checksum`](Self::Checksum),
/// [`Version`](Self::Version), [`LimitExceeded`](Self::LimitExceeded); retrying with the same
/// bytes cannot help) and *internal* errors (a bug: [`Internal`](Self::Internal)).
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// A column has an Arrow type the codec does not carry.
    #[error(
        "column \"{column}\" has type {data_type}, which the codec does not carry \
         (it carries Timestamp(ms), Int64, UInt64, Float64, Utf8 and Boolean)"
    )]
    UnsupportedType {
        /// The column's name.
        column: String,
        /// Its Arrow type.
        data_type: DataType,
    },
    /// The options are not usable (for example an error bound that is not a positive number).
    #[error("invalid codec options: {0}")]
    InvalidOptions(String),
    /// The batch is larger than a frame may be.
    #[error("batch too large for one frame: {0}")]
    TooLarge(String),
    /// The bytes are not a well-formed frame (truncated, corrupted or hostile).
    #[error("corrupt frame: {0}")]
    Corrupt(String),
    /// A compressed stream inside the frame does not decompress.
    #[error("corrupt frame: {stream} stream does not decode")]
    CorruptStream {
        /// Which stream (`zstd`, `lz4`, `pco`, `arrow`).
        stream: &'static str,
        /// The decompressor's complaint.
        #[source]
        source: Cause,
    },
    /// The frame's checksum does not match its bytes.
    #[error(
        "corrupt frame: checksum mismatch (frame says {expected:#010x}, bytes give {actual:#010x})"
    )]
    Checksum {
        /// The checksum stored in the frame.
        expected: u32,
        /// The checksum of the bytes received.
        actual: u32,
    },
    /// The frame was written by a codec version this build cannot read.
    #[error("unsupported frame version {found} (this build reads version {supported})")]
    Version {
        /// The version byte of the frame.
        found: u8,
        /// The version this build reads.
        supported: u8,
    },
    /// Decoding the frame would exceed the decoder's [`DecodeLimits`](super::DecodeLimits).
    #[error("frame exceeds decode limits: {0}")]
    LimitExceeded(String),
    /// A broken invariant inside the codec: this is a bug, please report it.
    #[error("internal error (a bug in edgeflow's codec): {what}")]
    Internal {
        /// What went wrong.
        what: String,
        /// The failing library's error, if any.
        #[source]
        source: Option<Cause>,
    },
}

impl CodecError {
    /// Whether the error comes from the batch or options the caller gave to the encoder.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            CodecError::UnsupportedType { .. }
                | CodecError::InvalidOptions(_)
                | CodecError::TooLarge(_)
        )
    }

    /// Whether the error says the bytes given to the decoder are not a readable frame.
    pub fn is_data_error(&self) -> bool {
        matches!(
            self,
            CodecError::Corrupt(_)
                | CodecError::CorruptStream { .. }
                | CodecError::Checksum { .. }
                | CodecError::Version { .. }
                | CodecError::LimitExceeded(_)
        )
    }

    /// A [`Corrupt`](Self::Corrupt) error.
    pub(crate) fn corrupt(what: impl Into<String>) -> Self {
        CodecError::Corrupt(what.into())
    }

    /// An [`Internal`](Self::Internal) error caused by a library.
    pub(crate) fn internal(what: impl Into<String>, source: impl Into<Cause>) -> Self {
        CodecError::Internal {
            what: what.into(),
            source: Some(source.into()),
        }
    }
}

/// Result alias of the codec.
pub type Result<T, E = CodecError> = std::result::Result<T, E>;
