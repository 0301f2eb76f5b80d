//! Golden plan tests: every `tests/plans/*.yaml` is compiled; a valid file's `render_text()` is
//! compared with `<name>.plan`, an invalid file's diagnostics with `<name>.errors`.
//! `UPDATE_GOLDEN=1 cargo test --test integration plan_golden` rewrites the expectations.

use std::path::{Path, PathBuf};

use edgeflow::plan;

use crate::common::repo;

fn env(name: &str) -> Option<String> {
    // A fixed environment, so the golden files do not depend on the machine.
    match name {
        "EDGEFLOW_TEST_DEVICES" => Some("25".to_owned()),
        _ => None,
    }
}

/// The plan text, or every diagnostic, for one spec file.
fn render(path: &Path) -> (String, &'static str) {
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let text = std::fs::read_to_string(path).expect("read golden spec");
    // The bare file name keeps positions and relative paths independent of where tests run.
    match plan::plan_with(file_name, &text, Path::new(""), &env) {
        Ok(plan) => (plan.render_text(), "plan"),
        Err(diags) => (format!("{diags}\n"), "errors"),
    }
}

#[test]
fn golden_plans() {
    let dir = repo("tests/plans");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut specs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/plans exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    specs.sort();
    assert!(
        specs.len() >= 4,
        "expected golden specs in {}",
        dir.display()
    );
    let mut failures = Vec::new();
    for spec_path in &specs {
        let (actual, ext) = render(spec_path);
        let expected_path = spec_path.with_extension(ext);
        let other = spec_path.with_extension(if ext == "plan" { "errors" } else { "plan" });
        if update {
            std::fs::write(&expected_path, &actual).expect("write golden");
            let _ = std::fs::remove_file(&other);
            continue;
        }
        if other.exists() {
            failures.push(format!(
                "{}: expected {} but the spec produced {ext}:\n{actual}",
                spec_path.display(),
                other.display()
            ));
            continue;
        }
        match std::fs::read_to_string(&expected_path) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => failures.push(format!(
                "{} differs.\n--- expected\n{expected}\n--- actual\n{actual}",
                expected_path.display()
            )),
            Err(_) => failures.push(format!(
                "{} is missing; actual:\n{actual}",
                expected_path.display()
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n(rerun with UPDATE_GOLDEN=1 to accept)",
        failures.join("\n\n")
    );
}
