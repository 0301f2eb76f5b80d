//! The SQL system tables (`edgeflow_nodes`, `edgeflow_edges`, `edgeflow_topics`,
//! `edgeflow_tables`) of a served instance, read through psql, tokio-postgres and HTTP, and
//! checked against what the pipeline must have done (known event counts, window counts,
//! the embedded producers of each worker).

use std::path::Path;
use std::time::Duration;

use crate::common::served::{Served, serve};
use crate::common::{block_on, postgres, psql, text, write_pipeline};

const EVENTS: u64 = 60_000;
const DEVICES: u64 = 30;
const SENSORS: u64 = 2;
const RATE_PER_SECOND: u64 = 10;
const WORKERS: usize = 2;
/// 2026-01-01T00:00:00Z, the generator's `start`.
const START_MS: i64 = 1_767_225_600_000;

fn pipeline(events: u64) -> String {
    format!(
        r#"
pipeline: sys
nodes:
  sensors: {{ kind: generator, devices: {DEVICES}, sites: 3, sensors: [vibration, temperature], rate_per_device: {RATE_PER_SECOND}/s, seed: 3, start: "2026-01-01T00:00:00Z", events: {events} }}
  per_sec: {{ kind: window, inputs: [sensors], key: [site, device, sensor], size: 1s, aggregates: [count, mean] }}
  spikes:  {{ kind: detect, inputs: [sensors], key: [device, sensor], method: zscore, threshold: 3 }}
  fleet:   {{ kind: table, inputs: [per_sec] }}
  exceptions: {{ kind: table, inputs: [spikes] }}
"#
    )
}

/// Windows the fleet table holds after `events` readings: one per series per second.
fn expected_windows(events: u64) -> u64 {
    let series = DEVICES * SENSORS;
    series * (events / series / RATE_PER_SECOND)
}

/// Starts `edgeflow run --serve` on the pipeline, data under `dir`, and returns once both
/// servers listen.
fn serve_pipeline(dir: &Path, events: u64, realtime: bool) -> Served {
    let file = write_pipeline(dir, "sys.yaml", &pipeline(events));
    let workers = WORKERS.to_string();
    let mut args = vec!["--workers", &workers];
    if realtime {
        args.push("--realtime");
    }
    serve(&file, &dir.join("data"), &args)
}

/// `psql -X -A -t -c SQL` against the served instance: its stdout, after checking it
/// succeeded.
fn psql_rows(served: &Served, sql: &str) -> String {
    let output = psql(served.pg_port, &["-c", sql]);
    assert!(
        output.status.success(),
        "psql -c {sql:?}: {}",
        text(&output.stderr)
    );
    text(&output.stdout)
}

#[test]
fn system_tables_count_what_a_finished_run_did() {
    let dir = tempfile::tempdir().unwrap();
    let served = serve_pipeline(dir.path(), EVENTS, false);
    served.wait_finished();
    let windows = expected_windows(EVENTS);

    // psql: the node counters against the known event and window counts.
    let nodes = psql_rows(
        &served,
        "SELECT node, kind, placement, events_in, events_out, errors, dead_letters, late_events, \
         finished, lag_ms, watermark IS NULL FROM edgeflow_nodes",
    );
    let exceptions: u64 = psql_rows(&served, "SELECT count(*) FROM exceptions")
        .trim()
        .parse()
        .unwrap();
    assert!(exceptions > 0, "a z-score of 3 flags some readings");
    let expected = format!(
        "sensors|generator|edge|0|{EVENTS}|0|0|0|t|0|t\n\
         per_sec|window|edge|{EVENTS}|{windows}|0|0|0|t|0|t\n\
         sys.per_sec|cut|cloud|0|{windows}|0|0|0|t|0|t\n\
         spikes|detect|edge|{EVENTS}|{exceptions}|0|0|0|t|0|t\n\
         sys.spikes|cut|cloud|0|{exceptions}|0|0|0|t|0|t\n\
         fleet|table|cloud|{windows}|0|0|0|0|t|0|t\n\
         exceptions|table|cloud|{exceptions}|0|0|0|0|t|0|t\n"
    );
    assert_eq!(nodes, expected);
    // The table rows agree with the table node's input, in one statement.
    assert_eq!(
        psql_rows(
            &served,
            "SELECT t.rows, t.finished, t.frontier IS NULL, (SELECT count(*) FROM fleet) \
             FROM edgeflow_tables t WHERE t.name = 'fleet'"
        ),
        format!("{windows}|t|t|{windows}\n")
    );

    // HTTP: one consumer-side row per (topic, embedded producer = worker); frames add up to
    // what the topic sent.
    let edges = served.sql(
        "SELECT topic, edge_id, side, ended, frames, duplicates, sequence, \
         last_seen IS NOT NULL AS seen, spool_frames IS NULL AS no_spool, \
         link_up IS NULL AS no_link FROM edgeflow_edges ORDER BY topic, edge_id",
    );
    let mut expected_ids = Vec::new();
    for topic in ["sys.per_sec", "sys.spikes"] {
        for worker in 0..WORKERS {
            expected_ids.push((topic.to_string(), format!("embedded-{worker}")));
        }
    }
    let ids: Vec<(String, String)> = edges
        .iter()
        .map(|r| {
            (
                r["topic"].as_str().unwrap().to_string(),
                r["edge_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(ids, expected_ids);
    for row in &edges {
        assert_eq!(row["side"], "consumer", "{row}");
        assert_eq!(row["ended"], true, "{row}");
        assert_eq!(row["duplicates"], 0, "{row}");
        assert_eq!(row["seen"], true, "{row}");
        assert_eq!(row["no_spool"], true, "{row}");
        // One process: no broker, so no link to report on.
        assert_eq!(row["no_link"], true, "{row}");
        // Every frame was applied once, in order: the last sequence is the frame count.
        assert_eq!(row["sequence"], row["frames"], "{row}");
    }
    let topics = served.sql(
        "SELECT topic, stream, producer, consumers, frames, frames_received, duplicates, \
         raw_bytes > 0 AS has_raw, bytes > 0 AS has_bytes FROM edgeflow_topics ORDER BY topic",
    );
    assert_eq!(topics.len(), 2, "{topics:?}");
    for (row, (stream, consumer)) in topics
        .iter()
        .zip([("per_sec", "fleet"), ("spikes", "exceptions")])
    {
        assert_eq!(row["stream"], stream, "{row}");
        assert_eq!(row["producer"], stream, "{row}");
        assert_eq!(row["consumers"], consumer, "{row}");
        assert_eq!(row["frames"], row["frames_received"], "{row}");
        assert_eq!(row["duplicates"], 0, "{row}");
        assert_eq!(row["has_raw"], true, "{row}");
        assert_eq!(row["has_bytes"], true, "{row}");
        let received: i64 = edges
            .iter()
            .filter(|e| e["topic"] == row["topic"])
            .map(|e| e["frames"].as_i64().unwrap())
            .sum();
        assert_eq!(row["frames"].as_i64(), Some(received), "{row}");
    }

    // tokio-postgres: typed columns (int8, timestamp, bool) through the extended protocol.
    block_on(Duration::from_secs(120), async {
        let (client, _connection) = postgres(served.pg_port).await;
        let row = client
            .query_one(
                "SELECT events_out, finished, lag_ms FROM edgeflow_nodes WHERE node = 'sensors'",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>("events_out"), EVENTS as i64);
        assert!(row.get::<_, bool>("finished"));
        assert_eq!(row.get::<_, Option<i64>>("lag_ms"), Some(0));
        // The last watermark each producer sent (none when its frontier went from unknown
        // straight to the end) lies within the event time generated.
        let seconds = (EVENTS / (DEVICES * SENSORS) / RATE_PER_SECOND) as i64;
        let rows = client
            .query("SELECT watermark, last_seen FROM edgeflow_edges", &[])
            .await
            .unwrap();
        assert_eq!(rows.len(), 2 * WORKERS);
        for row in rows {
            let watermark: Option<std::time::SystemTime> = row.get("watermark");
            if let Some(watermark) = watermark {
                let ms = watermark
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as i64;
                assert!(
                    (START_MS - 1000..=START_MS + seconds * 1000).contains(&ms),
                    "{ms}"
                );
            }
            let seen: std::time::SystemTime = row.get("last_seen");
            assert!(seen.elapsed().unwrap() < Duration::from_secs(600));
        }
        let columns: Vec<String> = client
            .prepare("SELECT name, rows, frontier, finished FROM edgeflow_tables")
            .await
            .unwrap()
            .columns()
            .iter()
            .map(|c| c.type_().name().to_string())
            .collect();
        assert_eq!(columns, ["text", "int8", "timestamp", "bool"]);
        let tables = client
            .query("SELECT name, rows FROM edgeflow_tables ORDER BY name", &[])
            .await
            .unwrap();
        let tables: Vec<(String, i64)> = tables.iter().map(|r| (r.get(0), r.get(1))).collect();
        assert_eq!(
            tables,
            [
                ("exceptions".to_string(), exceptions as i64),
                ("fleet".to_string(), windows as i64)
            ]
        );
    });
}

#[test]
fn a_running_pipeline_shows_lag_and_the_frontier_each_query_read() {
    // 20 s of event time, paced in real time: the queries run while it ingests.
    let events = DEVICES * SENSORS * RATE_PER_SECOND * 20;
    let dir = tempfile::tempdir().unwrap();
    let served = serve_pipeline(dir.path(), events, true);
    let series = (DEVICES * SENSORS) as i64;
    let observed = block_on(Duration::from_secs(120), async {
        let (client, _connection) = postgres(served.pg_port).await;
        let mut frontiers = Vec::new();
        let mut watermarks = Vec::new();
        // Bounded: 200 polls, 100 ms apart; stops once 3 snapshots with different non-zero
        // counts of complete windows were read while running.
        for _ in 0..200 {
            let row = client
                .query_one(
                    "SELECT CAST(t.frontier AS BIGINT) AS frontier, t.finished, t.rows, \
                     (SELECT count(*) FROM fleet) AS n, \
                     (SELECT count(*) FROM fleet, edgeflow_tables s \
                      WHERE s.name = 'fleet' AND fleet.window_start < s.frontier) AS before \
                     FROM edgeflow_tables t WHERE t.name = 'fleet'",
                    &[],
                )
                .await
                .unwrap();
            if row.get::<_, bool>("finished") {
                break;
            }
            if let Some(frontier) = row.get::<_, Option<i64>>("frontier") {
                // Every window that starts before the frontier is in, of every series: as
                // many as a run to completion has (a window's event time is its start).
                let seconds = (frontier - START_MS + 999).div_euclid(1000).max(0);
                let (n, before): (i64, i64) = (row.get("n"), row.get("before"));
                assert_eq!(before, series * seconds, "frontier {frontier}");
                // The system table describes the snapshot the statement read.
                assert_eq!(row.get::<_, i64>("rows"), n);
                assert!(n >= before);
                if before > 0 && frontiers.last().is_none_or(|&(_, last)| last != before) {
                    frontiers.push((frontier, before));
                }
            }
            let node = client
                .query_one(
                    "SELECT CAST(watermark AS BIGINT) AS watermark, lag_ms, finished \
                     FROM edgeflow_nodes WHERE node = 'per_sec'",
                    &[],
                )
                .await
                .unwrap();
            if let (Some(watermark), false) = (
                node.get::<_, Option<i64>>("watermark"),
                node.get::<_, bool>("finished"),
            ) {
                let lag: Option<i64> = node.get("lag_ms");
                assert!(lag.is_some_and(|l| l >= 0), "lag {lag:?}");
                watermarks.push(watermark);
            }
            if frontiers.len() >= 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (frontiers, watermarks)
    });
    let (frontiers, watermarks) = observed;
    assert!(
        frontiers.len() >= 3,
        "too few running snapshots with windows: {frontiers:?}"
    );
    assert!(
        frontiers
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1),
        "{frontiers:?}"
    );

    assert!(
        watermarks.windows(2).all(|w| w[0] <= w[1]) && watermarks.len() >= 2,
        "the window's watermark moves forward: {watermarks:?}"
    );
    // HTTP sees the same running pipeline: the embedded producers, not yet ended.
    let edges = served.sql(
        "SELECT edge_id, ended FROM edgeflow_edges WHERE topic = 'sys.per_sec' ORDER BY edge_id",
    );
    assert_eq!(edges.len(), WORKERS, "{edges:?}");
    assert_eq!(edges[0]["edge_id"], "embedded-0");
}
