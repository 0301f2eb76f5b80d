//! The error type of every connector in this crate, telling user mistakes from external failures.

use std::io;
use std::path::Path;

/// What can go wrong in a source or sink.
///
/// Three kinds, visible in the variant: `User` errors come from what a pipeline author wrote or
/// pointed at (a bad option, a path that is not a file) and retrying cannot help; `Io` and the
/// library variants are external failures, and [`ConnectorError::is_retryable`] tells whether
/// trying again may succeed; `Internal` errors are bugs in edgeflow and say so.
///
/// Bad *data* (a malformed line in a file) is not an error: sources route it to a
/// [`DeadLetter`](crate::file_source::DeadLetter) and keep going.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// A bad option or a path that cannot be used; the message is meant for the pipeline author.
    #[error("{0}")]
    User(String),
    /// An I/O operation failed; `context` says which one and on what path.
    #[error("{context}")]
    Io {
        /// What was being done, e.g. `cannot open "data/in.csv"`.
        context: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// Arrow failed while building, encoding or decoding a batch.
    #[error("arrow error")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Parquet failed while writing or reading a file.
    #[error("parquet error")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// JSON encoding failed.
    #[error("json error")]
    Json(#[from] serde_json::Error),
    /// Kafka (librdkafka) failed; `context` says doing what.
    #[cfg(feature = "kafka")]
    #[error("{context}")]
    Kafka {
        /// What was being done, e.g. `creating topic x`.
        context: String,
        /// librdkafka's error (boxed: it is large).
        #[source]
        source: Box<rdkafka::error::KafkaError>,
    },
    /// A frame of the edge -> cloud wire format is malformed (bad header, corrupt record).
    #[error("bad frame: {0}")]
    BadFrame(String),
    /// A broken invariant inside edgeflow: this is a bug, please report it.
    #[error("internal error (a bug in edgeflow): {0}")]
    Internal(String),
}

impl ConnectorError {
    /// An I/O error with what was being done on which path.
    pub fn io(action: &str, path: &Path, source: io::Error) -> Self {
        ConnectorError::Io {
            context: format!("cannot {action} {:?}", path.display().to_string()),
            source,
        }
    }

    /// Whether the error comes from the pipeline author (config, path) rather than the world.
    pub fn is_user_error(&self) -> bool {
        matches!(self, ConnectorError::User(_))
    }

    /// Whether retrying the same operation may succeed (a transient external failure).
    ///
    /// User errors, internal errors and corrupt data never are; I/O errors are when their
    /// kind is transient (interrupted, timed out, connection trouble, disk full, busy).
    pub fn is_retryable(&self) -> bool {
        match self {
            ConnectorError::Io { source, .. } => io_kind_is_transient(source.kind()),
            ConnectorError::Arrow(arrow::error::ArrowError::IoError(_, e)) => {
                io_kind_is_transient(e.kind())
            }
            ConnectorError::Json(e) => e.io_error_kind().is_some_and(io_kind_is_transient),
            #[cfg(feature = "kafka")]
            ConnectorError::Kafka { source, .. } => !matches!(
                source.rdkafka_error_code(),
                Some(
                    rdkafka::error::RDKafkaErrorCode::InvalidConfig
                        | rdkafka::error::RDKafkaErrorCode::Fatal
                        | rdkafka::error::RDKafkaErrorCode::TopicAuthorizationFailed
                        | rdkafka::error::RDKafkaErrorCode::SaslAuthenticationFailed
                )
            ),
            _ => false,
        }
    }
}

fn io_kind_is_transient(kind: io::ErrorKind) -> bool {
    use io::ErrorKind::*;
    matches!(
        kind,
        Interrupted
            | WouldBlock
            | TimedOut
            | ConnectionRefused
            | ConnectionReset
            | ConnectionAborted
            | NotConnected
            | BrokenPipe
            | StorageFull
            | ResourceBusy
    )
}

/// An error and its causes, joined by ": " (for logs, where `{:#}` is not available).
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Result alias for this crate.
pub type Result<T, E = ConnectorError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_depends_on_the_io_kind_and_user_errors_never_are() {
        let p = Path::new("x.csv");
        let transient = ConnectorError::io("write", p, io::Error::from(io::ErrorKind::TimedOut));
        let permanent = ConnectorError::io("open", p, io::Error::from(io::ErrorKind::NotFound));
        assert!(transient.is_retryable());
        assert!(!permanent.is_retryable());
        assert!(!permanent.is_user_error());
        let user = ConnectorError::User("bad".into());
        assert!(user.is_user_error() && !user.is_retryable());
        assert_eq!(permanent.to_string(), r#"cannot open "x.csv""#);
    }
}
