//! The integration tests, compiled into one test binary: each debug test binary links
//! DataFusion, burn and differential, so one binary instead of one per file saves gigabytes
//! of disk and a link per file. A new test file goes beside this one as a module below;
//! shared helpers (the binary, served instances, psql, the broker) live in `common`.
//!
//! `cargo test --test integration` runs them all; `cargo test --test integration cli::`
//! runs one module; `-- --skip kafka::` leaves out the tests that need the dev broker.

mod common;

mod aggregate;
mod cli;
mod control;
mod control_loop;
mod end_to_end;
mod hardening_input;
#[cfg(feature = "kafka")]
mod hardening_kafka;
mod hardening_sql;
mod hardening_validate;
#[cfg(feature = "kafka")]
mod identity_kafka;
mod insight;
#[cfg(feature = "kafka")]
mod kafka;
mod pgwire;
mod pipelines;
mod plan_golden;
mod system_tables;
