//! `edgeflow validate` and `edgeflow graph`: load a pipeline's plan and report or print it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::ValueEnum;
use edgeflow::plan::{self, Plan};
use edgeflow::spec::Diagnostics;

/// How `edgeflow graph` prints a plan.
#[derive(Clone, Copy, ValueEnum)]
pub enum GraphFormat {
    Text,
    Dot,
    Mermaid,
}

/// Loads a plan, printing its diagnostics on failure.
pub fn load(file: &Path) -> Result<Plan, ExitCode> {
    plan::load_plan(file).map_err(|diagnostics: Diagnostics| {
        eprintln!("{diagnostics}");
        ExitCode::FAILURE
    })
}

/// Loads a plan to run with its data in `data_dir`: `${EDGEFLOW_DATA_DIR}` in the pipeline
/// file is that directory (as an absolute path), whether it came from `--data-dir`, the
/// variable or the default, so a file sink written there lands beside the run's other files.
pub fn load_to_run(file: &Path, data_dir: &Path) -> Result<Plan, ExitCode> {
    let data_dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let env = |name: &str| match name {
        "EDGEFLOW_DATA_DIR" => Some(data_dir.display().to_string()),
        _ => std::env::var(name).ok(),
    };
    plan::load_plan_with(file, &env).map_err(|diagnostics: Diagnostics| {
        eprintln!("{diagnostics}");
        ExitCode::FAILURE
    })
}

/// Checks pipeline files, printing a line per valid file and the diagnostics of the others.
pub fn validate(files: &[PathBuf]) -> Result<ExitCode> {
    let mut code = ExitCode::SUCCESS;
    for file in files {
        match load(file) {
            Ok(plan) => {
                println!(
                    "{}: ok (pipeline {}, {} nodes, {} cut topics)",
                    file.display(),
                    plan.pipeline,
                    plan.nodes.len(),
                    plan.topics.len()
                );
                warn_unreadable_inputs(file, &plan);
            }
            Err(failure) => code = failure,
        }
    }
    Ok(code)
}

/// Warns about input files that cannot be read now: valid pipelines may name files that
/// appear later, but a run started now would fail on them.
fn warn_unreadable_inputs(file: &Path, plan: &Plan) {
    for node in &plan.nodes {
        let Some(path) = node.settings.input_file() else {
            continue;
        };
        let problem = match std::fs::metadata(path) {
            Ok(meta) if meta.is_file() => continue,
            Ok(_) => "not a regular file".to_owned(),
            Err(e) => e.to_string(),
        };
        eprintln!(
            "{}: warning: node \"{}\": cannot read {}: {problem} (a run started now fails)",
            file.display(),
            node.id,
            path.display()
        );
    }
}

/// Prints a pipeline's plan.
pub fn graph(file: &Path, format: GraphFormat) -> Result<ExitCode> {
    let plan = match load(file) {
        Ok(plan) => plan,
        Err(code) => return Ok(code),
    };
    let text = match format {
        GraphFormat::Text => plan.render_text(),
        GraphFormat::Dot => plan.render_dot(),
        GraphFormat::Mermaid => plan.render_mermaid(),
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}
