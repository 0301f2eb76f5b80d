//! The `edgeflow` command line's commands, one module per command group, and what they share.

pub mod client;
pub mod inspect;
pub mod keys;
pub mod run;
pub mod train;
#[cfg(feature = "kafka")]
pub mod transport;

use anyhow::{Context, Result, anyhow};
use clap::ValueEnum;
use edgeflow::sql::{QueryResult, ResultFormat, encode_result};

/// How query results are printed.
#[derive(Clone, Copy, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Csv,
}

impl OutputFormat {
    fn result_format(self) -> ResultFormat {
        match self {
            OutputFormat::Table => ResultFormat::Table,
            OutputFormat::Json => ResultFormat::Json,
            OutputFormat::Csv => ResultFormat::Csv,
        }
    }
}

/// Prints a query result to stdout in `format`.
pub fn print_result(result: &QueryResult, format: OutputFormat) -> Result<()> {
    let bytes = encode_result(result, format.result_format()).map_err(|e| anyhow!("{e}"))?;
    use std::io::Write;
    std::io::stdout()
        .write_all(&bytes)
        .context("writing to stdout")?;
    Ok(())
}
