//! What `edgeflow validate` must catch and what a run must say (issue 12, cases 12, 13, 14
//! and 16, and the dead-letter storm): against the real binary, on pipelines written to a temp
//! dir. A pipeline that would reject every row, drop a node or fail on a missing file is
//! refused (or warned about) before it runs; a run that rejects most of its input says so in
//! its exit code; a summary counts only what was flagged.

use std::path::Path;
use std::process::Output;

use crate::common::{edgeflow, write_pipeline};

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn validate(file: &Path) -> Output {
    edgeflow()
        .args(["validate", file.to_str().unwrap()])
        .output()
        .unwrap()
}

const GENERATOR: &str = "  sensors: { kind: generator, devices: 4, sensors: [temperature], rate_per_device: 10/s, events: 400, seed: 3 }\n";

#[test]
fn a_required_setting_written_as_null_is_an_error_at_its_line() {
    // Regression (case 13): `size:`, `size: ~` and `method: null` passed validate and silently
    // removed the node and everything downstream of it.
    let dir = tempfile::tempdir().unwrap();
    for (line, node) in [
        (
            "  per_sec:\n    kind: window\n    inputs: [sensors]\n    key: [device]\n    size:\n",
            "size",
        ),
        (
            "  per_sec: { kind: window, inputs: [sensors], key: [device], size: ~ }\n",
            "size",
        ),
        (
            "  per_sec: { kind: detect, inputs: [sensors], key: [device], method: null }\n",
            "method",
        ),
    ] {
        let yaml = format!(
            "pipeline: nulls\nnodes:\n{GENERATOR}{line}  out: {{ kind: table, inputs: [per_sec] }}\n"
        );
        let file = write_pipeline(dir.path(), "nulls.yaml", &yaml);
        let output = validate(&file);
        let all = text(&output);
        assert!(!output.status.success(), "{yaml}\n{all}");
        assert!(
            all.contains(&format!(
                "node \"per_sec\": required field \"{node}\" is empty (null)"
            )),
            "{all}"
        );
        // Reported at the null, on the node's lines (after the generator's line 3).
        let at = all
            .lines()
            .find(|l| l.contains("is empty (null)"))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap();
        assert!(at >= 4, "{all}");
        assert!(all.contains("= help:"), "{all}");
    }
}

#[test]
fn an_expression_that_fails_on_every_row_is_refused_by_validate() {
    // Regression (case 12): `value > 'high'` and `device > 3` passed validate; at run time
    // every row became a dead letter and the run exited 0.
    let dir = tempfile::tempdir().unwrap();
    for (predicate, expected) in [
        ("value > 'high'", "high"),
        ("device > 3", "field \"device\" is a string"),
    ] {
        let yaml = format!(
            "pipeline: exprs\nnodes:\n{GENERATOR}  hot: {{ kind: filter, inputs: [sensors], where: \"{predicate}\" }}\n  out: {{ kind: table, inputs: [hot] }}\n"
        );
        let file = write_pipeline(dir.path(), "exprs.yaml", &yaml);
        let output = validate(&file);
        let all = text(&output);
        assert!(!output.status.success(), "{predicate}: {all}");
        assert!(
            all.contains("node \"hot\": field \"where\"") && all.contains(expected),
            "{predicate}: {all}"
        );
    }
    // A correct comparison still validates.
    let yaml = format!(
        "pipeline: exprs\nnodes:\n{GENERATOR}  hot: {{ kind: filter, inputs: [sensors], where: \"value > 0.5 AND device = 'device-1'\" }}\n  out: {{ kind: table, inputs: [hot] }}\n"
    );
    let file = write_pipeline(dir.path(), "exprs.yaml", &yaml);
    let output = validate(&file);
    assert!(output.status.success(), "{}", text(&output));
}

#[test]
fn a_missing_input_file_is_warned_about_by_validate_and_named_with_its_cause_by_run() {
    // Regression (case 14): a missing file or a directory as `path` gave `internal error (a
    // bug in edgeflow): node "src"` with the cause dropped, while validate said ok.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("a_directory")).unwrap();
    for (path, cause) in [
        ("missing.csv", "does not exist"),
        ("a_directory", "is a directory"),
    ] {
        let yaml = format!(
            "pipeline: files\nnodes:\n  src: {{ kind: file, path: {path}, format: csv, schema: {{ ts: timestamp_ms, value: f64 }} }}\n  out: {{ kind: table, inputs: [src] }}\n"
        );
        let file = write_pipeline(dir.path(), "files.yaml", &yaml);
        let output = validate(&file);
        let all = text(&output);
        assert!(output.status.success(), "{all}");
        assert!(
            all.contains("warning: node \"src\": cannot read") && all.contains(path),
            "{all}"
        );

        let output = edgeflow()
            .args(["run", file.to_str().unwrap(), "--quiet"])
            .args(["--data-dir", dir.path().join("data").to_str().unwrap()])
            .output()
            .unwrap();
        let all = text(&output);
        assert!(!output.status.success(), "{all}");
        assert!(!all.contains("internal error"), "{all}");
        assert!(
            all.contains("node \"src\"") && all.contains(path) && all.contains(cause),
            "{all}"
        );
    }
}

/// The `N exceptions` figure of a run's summary line.
fn summary_exceptions(stderr: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.contains(" finished: "))
        .unwrap_or_else(|| panic!("no summary in {stderr}"));
    line.split(" | ")
        .find_map(|part| part.strip_suffix(" exceptions"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no exception count in {line}"))
}

#[test]
fn with_emit_all_the_summary_counts_only_the_flagged_rows() {
    // Regression (case 16): with `emit: all` the summary counted every emitted row as an
    // exception ("22683 exceptions" where 4 were flagged).
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "pipeline: emit_all\nnodes:\n{GENERATOR}  scored: {{ kind: detect, inputs: [sensors], key: [device], method: zscore, threshold: 1.5, min_samples: 5, emit: all }}\n  out: {{ kind: table, inputs: [scored] }}\n"
    );
    let file = write_pipeline(dir.path(), "emit_all.yaml", &yaml);
    let output = edgeflow()
        .args(["run", file.to_str().unwrap(), "--format", "csv"])
        .args(["--data-dir", dir.path().join("data").to_str().unwrap()])
        .args([
            "--query",
            "SELECT count(*) AS total, count(reason) AS flagged FROM out",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stdout}{stderr}");
    let counts: Vec<u64> = stdout
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .map(|v| v.trim().parse().unwrap())
        .collect();
    let (total, flagged) = (counts[0], counts[1]);
    assert_eq!(total, 400, "{stdout}");
    assert!(flagged < total, "{stdout}");
    assert_eq!(summary_exceptions(&stderr), flagged, "{stderr}");
}

#[test]
fn a_run_that_rejects_most_of_its_input_exits_with_code_2_and_says_why() {
    // The dead-letter storm: every row fails at run time (a division by zero is data, not
    // type, so validate cannot see it). The run finishes, the counts are exact, the summary
    // and the exit code say that most rows were rejected.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    let mut csv = String::from("ts,value\n");
    for i in 0..300 {
        csv.push_str(&format!("{i},not-a-number-{i}\n"));
    }
    for i in 300..400 {
        csv.push_str(&format!("{i},{}.5\n", i % 10));
    }
    std::fs::write(&input, csv).unwrap();
    let yaml = "pipeline: storm\nnodes:\n  src: { kind: file, path: in.csv, schema: { ts: timestamp_ms, value: f64 } }\n  out: { kind: table, inputs: [src] }\n";
    let file = write_pipeline(dir.path(), "storm.yaml", yaml);
    let data = dir.path().join("data");
    let run = |extra: &[&str]| {
        edgeflow()
            .args(["run", file.to_str().unwrap(), "--format", "csv"])
            .args(["--data-dir", data.to_str().unwrap()])
            .args(["--query", "SELECT count(*) AS n FROM out"])
            .args(extra)
            .output()
            .unwrap()
    };
    let output = run(&[]);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(2), "{stdout}{stderr}");
    // The good rows are all kept and queryable.
    assert_eq!(
        stdout.lines().nth(1).map(str::trim),
        Some("100"),
        "{stdout}"
    );
    assert!(
        stderr.contains("300 dead letters") && stderr.contains("--max-dead-letter-ratio"),
        "{stderr}"
    );
    let stored = std::fs::read_to_string(data.join("storm/dead_letter.jsonl")).unwrap();
    assert_eq!(stored.lines().count(), 300);

    // The bound is a setting.
    let output = run(&["--max-dead-letter-ratio", "1"]);
    assert!(output.status.success(), "{}", text(&output));
    let output = run(&["--max-dead-letter-ratio", "2"]);
    assert!(!output.status.success());
    assert!(text(&output).contains("not a fraction between 0 and 1"));
}

#[cfg(feature = "kafka")]
#[test]
fn edge_and_cloud_list_only_their_own_flags() {
    // Regression (case 17): `edgeflow cloud --help` listed the edge's spool flags.
    let help = |command: &str| {
        let output = edgeflow().args([command, "--help"]).output().unwrap();
        assert!(output.status.success());
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let (edge, cloud) = (help("edge"), help("cloud"));
    for flag in [
        "--spool-max-bytes",
        "--spool-when-full",
        "--edge-id",
        "--shard",
    ] {
        assert!(edge.contains(flag), "edge lacks {flag}: {edge}");
        assert!(!cloud.contains(flag), "cloud lists {flag}: {cloud}");
    }
    for flag in ["--idle-timeout", "--edges", "--group"] {
        assert!(cloud.contains(flag), "cloud lacks {flag}: {cloud}");
        assert!(!edge.contains(flag), "edge lists {flag}: {edge}");
    }
    for flag in ["--brokers", "--kafka-option", "--data-dir"] {
        assert!(edge.contains(flag) && cloud.contains(flag), "{flag}");
    }
}

#[test]
fn a_file_sink_under_edgeflow_data_dir_follows_the_data_dir_flag() {
    // Regression (case 17): `--data-dir` did not reach file sinks whose path uses
    // `${EDGEFLOW_DATA_DIR:-...}`, so pipelines/fleet-insights.yaml wrote into the repository.
    let dir = tempfile::tempdir().unwrap();
    let pipelines = dir.path().join("pipelines");
    std::fs::create_dir(&pipelines).unwrap();
    let yaml = format!(
        "pipeline: sinks\nnodes:\n{GENERATOR}  out: {{ kind: file, inputs: [sensors], path: \"${{EDGEFLOW_DATA_DIR:-../fallback}}/sinks/out.jsonl\" }}\n"
    );
    let file = write_pipeline(&pipelines, "sinks.yaml", &yaml);
    let data = dir.path().join("chosen");
    let output = edgeflow()
        .args(["run", file.to_str().unwrap(), "--quiet"])
        .args(["--data-dir", data.to_str().unwrap()])
        .env_remove("EDGEFLOW_DATA_DIR")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let written = std::fs::read_to_string(data.join("sinks/out.jsonl")).unwrap();
    assert_eq!(written.lines().count(), 400);
    assert!(!dir.path().join("fallback").exists());
}
