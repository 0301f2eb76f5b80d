//! The error type of every operator in this crate.

/// What can go wrong inside an operator.
///
/// `User` errors come from what a pipeline author wrote (a bad expression, a field that is
/// missing or has the wrong type) and carry a message meant for them. `Internal` errors are
/// bugs in edgeflow and say so.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// The pipeline asks for something that cannot work (bad field, bad type, bad expression).
    #[error("{0}")]
    User(String),
    /// Arrow failed while computing on a batch.
    #[error("arrow error")]
    Arrow(#[from] arrow::error::ArrowError),
    /// DataFusion failed while planning or evaluating an expression.
    #[error("expression error")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    /// A broken invariant inside edgeflow: this is a bug, please report it.
    #[error("internal error (a bug in edgeflow): {0}")]
    Internal(String),
}

/// Result alias for this crate.
pub type Result<T, E = OperatorError> = std::result::Result<T, E>;
