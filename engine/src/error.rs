//! The engine's error type.

use edgeflow_connectors::error::ConnectorError;
use edgeflow_operators::OperatorError;

use crate::spec::Diagnostics;

/// What can go wrong running a pipeline or a query.
///
/// `Spec` and `Sql` are the user's to fix; `Connector` and `Io` are external (a connector
/// error says whether retrying can help); `Internal` is a bug in edgeflow.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The pipeline file has problems (each with file:line:column).
    #[error("{0}")]
    Spec(Diagnostics),
    /// A SQL statement failed to plan or run; the message is meant for the user.
    #[error("{0}")]
    Sql(String),
    /// A SQL statement refused (not a query) or stopped at one of its bounds (depth,
    /// memory, time); the message is meant for the user and names the bound's flag.
    #[error("{message}")]
    SqlRefused {
        /// Which bound.
        refusal: crate::sql::Refusal,
        /// What happened.
        message: String,
    },
    /// A node could not be built from its validated settings.
    #[error("node \"{node}\"")]
    Operator {
        /// The node's id.
        node: String,
        /// The cause.
        #[source]
        source: OperatorError,
    },
    /// A source, sink or transport failed.
    #[error("node \"{node}\"")]
    Connector {
        /// The node's id (or topic).
        node: String,
        /// The cause.
        #[source]
        source: ConnectorError,
    },
    /// A file or socket of the engine itself failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A control record cannot be sent (unknown or uncontrollable node, an action its kind
    /// does not take, a bad value); the message is meant for the user.
    #[error("{0}")]
    Control(String),
    /// The control channel cannot publish yet (its transport is starting) or at all (an
    /// edge process); retrying helps in the first case.
    #[error("{0}")]
    ControlUnavailable(String),
    /// The run stopped because a node, source, sink or transport failed; the message names
    /// it and the cause (an internal error keeps its own wording inside).
    #[error("the run stopped: {0}")]
    RunFailed(String),
    /// A broken invariant: a bug in edgeflow.
    #[error("internal error (a bug in edgeflow): {0}")]
    Internal(String),
}
