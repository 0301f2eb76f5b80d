//! edgeflow: YAML pipelines compiled to timely dataflows split between edge and cloud.
//!
//! `spec` reads and validates pipeline files, `plan` turns a spec into a placed, cut graph,
//! `runtime` runs a plan on timely, `sql` serves the materialized tables.

pub mod plan;
pub mod spec;
