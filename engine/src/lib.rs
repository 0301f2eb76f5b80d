//! edgeflow: YAML pipelines compiled to timely dataflows split between edge and cloud.
//!
//! `spec` reads and validates pipeline files, `kinds` holds every node kind (one module
//! each, one registry), `plan` turns a spec into a placed, cut graph,
//! `runtime` runs a plan on timely, `sql` serves the materialized tables, `metrics` counts
//! everything.

pub mod error;
pub mod kinds;
pub mod metrics;
pub mod plan;
pub mod runtime;
pub mod spec;
pub mod sql;
pub mod train;
