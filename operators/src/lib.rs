//! edgeflow-operators: the data model and every computation of edgeflow that does no I/O.
//!
//! Events travel as Arrow [`RecordBatch`](arrow::record_batch::RecordBatch)es whose schema is
//! described by [`schema::EventSchema`]. The modules here transform such batches: SQL expressions
//! ([`expr`]), event-time windows ([`window`]), anomaly detectors ([`detect`]) and model
//! inference ([`infer`]). Nothing here
//! knows about timely, files or the network; the engine wires these pieces into dataflows.

pub mod codec;
pub mod control;
pub mod detect;
pub mod error;
pub mod expr;
pub mod infer;
pub mod insight;
pub mod kernels;
pub mod schema;
pub mod window;

pub use error::OperatorError;
