//! A pipeline run in this process (`runtime::run_embedded`) and SQL over its tables.

use std::path::Path;
use std::sync::Arc;

use edgeflow::metrics::Metrics;
use edgeflow::plan;
use edgeflow::runtime::{self, RunContext, RunOptions, RunReport};
use edgeflow::sql::{QueryEngine, QueryResult};

/// Runs the pipeline in `spec` to its end with `workers` and `batch_rows`, data under
/// `data-{workers}-{batch_rows}` beside the spec; its report and an engine over its tables.
pub fn run_embedded(spec: &Path, workers: usize, batch_rows: usize) -> (RunReport, QueryEngine) {
    let plan = Arc::new(plan::load_plan(spec).unwrap_or_else(|d| panic!("{d}")));
    let dir = spec.parent().expect("a spec file has a directory");
    let options = RunOptions {
        workers,
        batch_rows,
        data_dir: dir.join(format!("data-{workers}-{batch_rows}")),
        ..RunOptions::default()
    };
    let catalog = Arc::new(runtime::catalog_for(&plan, workers));
    let ctx = RunContext::new(&plan, &options.data_dir, Metrics::new(), catalog.clone()).unwrap();
    let report = runtime::run_embedded(plan, &options, ctx).unwrap();
    (report, QueryEngine::new(catalog))
}

/// Runs one SQL statement on a fresh tokio runtime; panics with the statement on an error.
pub fn query(engine: &QueryEngine, sql: &str) -> QueryResult {
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(engine.query(sql))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}
