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

/// Checks pipeline files, printing a line per valid file and the diagnostics of the others.
pub fn validate(files: &[PathBuf]) -> Result<ExitCode> {
    let mut code = ExitCode::SUCCESS;
    for file in files {
        match load(file) {
            Ok(plan) => println!(
                "{}: ok (pipeline {}, {} nodes, {} cut topics)",
                file.display(),
                plan.pipeline,
                plan.nodes.len(),
                plan.topics.len()
            ),
            Err(failure) => code = failure,
        }
    }
    Ok(code)
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
