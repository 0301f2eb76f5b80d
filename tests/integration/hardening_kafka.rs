//! Honest mistakes across the cut, over a real broker (hardening cases 20 and 21): a cloud
//! started without `--edges` makes every window it received final once the edges it heard
//! from have ended, and an edge re-provisioned under the same id with a fresh data directory
//! (its sequence numbers start again at 1) is a new incarnation whose frames all count, not
//! duplicates of the old one's. And an unreachable broker does not hold up a stopping
//! process (case 22): no call that waits for the broker runs on a timely worker thread. And
//! the development broker looks up a fetched record's headers with an index, not a scan of
//! every header ever stored (case 25).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::broker::Broker;
use crate::common::{Running, edgeflow, free_port, http, text, write_pipeline};

/// One pipeline, two lives of the fleet: the re-provisioned edge's generator starts an hour
/// later (a device that comes back continues in time) with another seed.
fn fleet(start: &str, seed: u32) -> String {
    format!(
        r#"
pipeline: reprovisioned
nodes:
  sensors: {{ kind: generator, devices: 8, sites: 2, sensors: [vibration], rate_per_device: 100/s, seed: {seed}, start: "{start}" }}
  per_sec: {{ kind: window, inputs: [sensors], key: [device, sensor], size: 1s, aggregates: [count, mean] }}
  fleet:   {{ kind: table, inputs: [per_sec] }}
"#
    )
}

const EVENTS: u64 = 40_000;
const LIMIT: Duration = Duration::from_secs(240);
const TOTALS: &str = "SELECT count(*) AS windows, CAST(sum(count) AS BIGINT) AS events FROM fleet";

/// (windows, events) of `fleet` after an embedded run of `pipeline`: both halves in one
/// process, where every producer is known and ends, so every window is final.
fn embedded_totals(pipeline: &Path, data: &Path) -> (u64, u64) {
    let out = edgeflow()
        .args([
            "run",
            pipeline.to_str().unwrap(),
            "--quiet",
            "--format",
            "csv",
        ])
        .args(["--events", &EVENTS.to_string(), "--query", TOTALS])
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let csv = text(&out.stdout);
    let row = csv.lines().nth(1).unwrap_or_else(|| panic!("{csv}"));
    let (windows, events) = row.split_once(',').unwrap();
    (windows.parse().unwrap(), events.parse().unwrap())
}

/// The cloud's (windows, events) of `fleet`, when it answers.
fn cloud_totals(address: &str) -> Option<(u64, u64)> {
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&http(address, "/sql", Some(TOTALS))?).ok()?;
    let row = rows.first()?;
    Some((
        row["windows"].as_u64()?,
        row["events"].as_u64().unwrap_or(0),
    ))
}

/// `edgeflow_edges` of the per-second topic as `edge_id -> (incarnation, ended, duplicates)`.
fn edge_rows(address: &str) -> Vec<(String, Option<String>, bool, u64)> {
    let sql = "SELECT edge_id, incarnation, ended, duplicates FROM edgeflow_edges \
               WHERE topic = 'reprovisioned.per_sec' ORDER BY edge_id";
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&http(address, "/sql", Some(sql)).unwrap()).unwrap();
    rows.iter()
        .map(|r| {
            (
                r["edge_id"].as_str().unwrap().to_string(),
                r["incarnation"].as_str().map(str::to_string),
                r["ended"].as_bool().unwrap(),
                r["duplicates"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn edge(pipeline: &Path, data: &Path, broker: &Broker, id: &str, shard: &str) -> Running {
    Running::start(
        edgeflow()
            .args(["edge", pipeline.to_str().unwrap(), "--edge-id", id])
            .args(["--shard", shard, "--brokers", &broker.address(), "--quiet"])
            .args(["--events", &EVENTS.to_string()])
            .arg("--data-dir")
            .arg(data),
    )
}

fn finish(broker: &Broker, run: Running, what: &str) {
    let out = broker.wait(run, what, LIMIT);
    assert!(out.status.success(), "{what} failed: {}", text(&out.stderr));
}

#[test]
fn a_cloud_without_edges_finalizes_what_ended_edges_sent_and_a_reprovisioned_edge_counts() {
    let dir = tempfile::tempdir().unwrap();
    let first_life = write_pipeline(dir.path(), "first.yaml", &fleet("2026-01-01T00:00:00Z", 5));
    let second_life = write_pipeline(dir.path(), "second.yaml", &fleet("2026-01-01T01:00:00Z", 6));
    let first = embedded_totals(&first_life, &dir.path().join("embedded-1"));
    let second = embedded_totals(&second_life, &dir.path().join("embedded-2"));
    assert!(first.0 > 100 && first.1 == EVENTS, "{first:?}");

    let broker = Broker::start(dir.path());
    let address = format!("127.0.0.1:{}", free_port());
    // No --edges: the cloud waits for whichever edges it hears from.
    let _cloud = Running::start(
        edgeflow()
            .args(["cloud", first_life.to_str().unwrap(), "--serve", "--quiet"])
            .args(["--listen", &address, "--pg-listen", "off"])
            .args(["--brokers", &broker.address(), "--idle-timeout", "10m"])
            .arg("--data-dir")
            .arg(dir.path().join("cloud")),
    );
    broker.eventually("the cloud to serve", LIMIT, || {
        http(&address, "/health", None)
    });

    // Case 20: two edges end; every window they sent becomes queryable.
    let a = edge(&first_life, &dir.path().join("a-1"), &broker, "a", "0/2");
    let b = edge(&first_life, &dir.path().join("b"), &broker, "b", "1/2");
    finish(&broker, a, "edge a");
    finish(&broker, b, "edge b");
    broker.eventually("every window of the ended edges in fleet", LIMIT, || {
        (cloud_totals(&address) == Some(first)).then_some(())
    });
    let before = edge_rows(&address);
    assert_eq!(before.len(), 2, "{before:?}");
    assert!(
        before
            .iter()
            .all(|(_, inc, ended, dup)| inc.is_some() && *ended && *dup == 0)
    );

    // Case 21: edge a comes back with a fresh data directory, its sequences from 1 again.
    let a = edge(&second_life, &dir.path().join("a-2"), &broker, "a", "0/1");
    finish(&broker, a, "re-provisioned edge a");
    let both = (first.0 + second.0, first.1 + second.1);
    broker.eventually("the re-provisioned edge's windows in fleet", LIMIT, || {
        (cloud_totals(&address) == Some(both)).then_some(())
    });
    let after = edge_rows(&address);
    assert_eq!(after.len(), 2, "{after:?}");
    let (a_before, a_after) = (&before[0], &after[0]);
    assert_eq!(a_after.0, "a");
    assert_ne!(
        a_after.1, a_before.1,
        "a new incarnation: {before:?} {after:?}"
    );
    assert!(a_after.2, "the new incarnation ended: {after:?}");
    assert_eq!(a_after.3, 0, "no frame taken for a duplicate: {after:?}");
    assert_eq!(after[1], before[1], "edge b untouched");
}

/// How long after SIGTERM a process that cannot reach its broker may take to exit (it was
/// 51 s for an edge and 2 min for a cloud while blocking broker calls ran on its threads).
const STOP_WITHIN: Duration = Duration::from_secs(8);

#[test]
fn an_unreachable_broker_does_not_hold_up_a_stopping_edge_or_cloud() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(dir.path(), "p.yaml", &fleet("2026-01-01T00:00:00Z", 5));
    // Nothing listens there.
    let nowhere = format!("127.0.0.1:{}", free_port());
    let address = format!("127.0.0.1:{}", free_port());
    let cloud = Running::start(
        edgeflow()
            .args(["cloud", p.to_str().unwrap(), "--serve", "--quiet"])
            .args(["--listen", &address, "--pg-listen", "off"])
            .args(["--brokers", &nowhere])
            .arg("--data-dir")
            .arg(dir.path().join("cloud")),
    );
    let edge = Running::start(
        edgeflow()
            .args(["edge", p.to_str().unwrap(), "--edge-id", "a"])
            .args(["--brokers", &nowhere, "--events", "4000"])
            .arg("--data-dir")
            .arg(dir.path().join("edge")),
    );
    // Bounded: 60 s in steps of 100 ms.
    let serving = (0..600).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        http(&address, "/health", None).is_some()
    });
    assert!(serving, "the cloud never served /health");
    // Long enough for the edge to have finished its input and to be waiting for the broker
    // to take its spool, and for both to be deep in their attempts to reach the broker.
    std::thread::sleep(Duration::from_secs(4));
    for (run, what) in [(edge, "edge"), (cloud, "cloud")] {
        let (took, out) = run.terminate(what, Duration::from_secs(60));
        assert!(
            took < STOP_WITHIN,
            "the {what} took {took:?} to stop: {}",
            text(&out.stderr)
        );
    }
}

/// Issue 12 case 25: tansu 0.6 looked up each fetched record's headers with a full scan of
/// its header table, so a backlog fetch cost records x all headers ever stored and, with
/// unpaced edges, outlasted the client's timeout and left the broker at 100% CPU.
/// `scripts/dev-broker` adds the index; SQLite's own planner (Python's `sqlite3`) says
/// whether tansu's lookup (`header_fetch.sql`, reduced to the header table) uses it.
#[test]
fn the_development_broker_finds_a_records_headers_by_index() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let plan = Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3, sys\n\
             db = sqlite3.connect(sys.argv[1], timeout=30)\n\
             for row in db.execute('explain query plan select h.k, h.v from header h \
             where h.topition = ? and h.offset_id = ?', (1, 1)): print(row[3])",
        )
        .arg(broker.database())
        .output()
        .unwrap();
    assert!(plan.status.success(), "{}", text(&plan.stderr));
    let plan = text(&plan.stdout);
    assert!(
        plan.contains("SEARCH h USING INDEX edgeflow_header_by_record"),
        "{plan}"
    );
}
