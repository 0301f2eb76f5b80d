//! Every pipeline in `pipelines/` is validated and run (briefly) by the real binary.

use crate::common::{edgeflow, repo};

#[test]
fn every_example_pipeline_validates_and_runs() {
    let dir = repo("pipelines");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 2,
        "pipelines/ should hold the quickstart and a realistic pipeline"
    );
    for file in files {
        let data = tempfile::tempdir().unwrap();
        let validate = edgeflow().arg("validate").arg(&file).output().unwrap();
        assert!(
            validate.status.success(),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&validate.stderr)
        );
        let run = edgeflow()
            .arg("run")
            .arg(&file)
            .args(["--events", "40000", "--workers", "2", "--quiet"])
            .env("EDGEFLOW_DATA_DIR", data.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(run.status.success(), "{}: {stderr}", file.display());
        assert!(!stderr.contains("panicked"), "{}: {stderr}", file.display());
    }
}
