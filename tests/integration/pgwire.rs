//! SQL over the Postgres wire protocol of a served instance, through the real `psql`
//! (Debian's postgresql-client, installed by CI) and through tokio-postgres.

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::common::served::{Served, serve};
use crate::common::{SMALL_FLEET, block_on, postgres, psql, text, write_pipeline};

const EVENTS: u64 = 60_000;
const DEVICES: u64 = 30;
const SENSORS: u64 = 2;
const RATE_PER_SECOND: u64 = 10;

/// Windows the table holds: one per series (device x sensor) per second of event time.
fn expected_windows() -> u64 {
    let series = DEVICES * SENSORS;
    let seconds = EVENTS / series / RATE_PER_SECOND;
    series * seconds
}

/// Runs the small fleet to completion with `--serve`, data under `dir`, and waits until it
/// says so.
fn serve_small_fleet(dir: &Path) -> Served {
    let pipeline = write_pipeline(dir, "small.yaml", SMALL_FLEET);
    let served = serve(
        &pipeline,
        &dir.join("data"),
        &["--events", &EVENTS.to_string()],
    );
    served.wait_finished();
    served
}

#[test]
fn psql_counts_every_window_and_survives_bad_sql() {
    let dir = tempfile::tempdir().unwrap();
    let served = serve_small_fleet(dir.path());

    let output = psql(
        served.pg_port,
        &[
            "-c",
            "SELECT sum(count) AS events, count(*) AS windows FROM fleet",
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stdout),
        format!("{EVENTS}|{}\n", expected_windows()),
        "{}",
        text(&output.stderr)
    );

    // Three statements on one connection: a syntax error, an unknown table, then a good
    // query, which must still be answered (psql exits 2 when the connection goes bad).
    let output = psql(
        served.pg_port,
        &[
            "-v",
            "VERBOSITY=verbose",
            "-c",
            "SELEC 1",
            "-c",
            "SELECT * FROM no_such_table",
            "-c",
            "SELECT count(*) FROM fleet",
        ],
    );
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_ne!(output.status.code(), Some(2), "connection lost: {stderr}");
    assert!(stderr.contains("ERROR:  42601: "), "{stderr}");
    assert!(stderr.contains("SELEC"), "DataFusion's message: {stderr}");
    assert!(stderr.contains("ERROR:  42P01: "), "{stderr}");
    assert!(stderr.contains("no_such_table"), "{stderr}");
    assert_eq!(stdout, format!("{}\n", expected_windows()), "{stderr}");

    // Several statements in one query string (simple protocol) all run.
    let output = psql(
        served.pg_port,
        &[
            "-c",
            "SELECT 1 AS a; SELECT count(*) FROM fleet WHERE count > 0",
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(
        stdout.ends_with(&format!("{}\n", expected_windows())),
        "{stdout}"
    );
}

#[test]
fn tokio_postgres_reads_typed_values_with_the_extended_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let served = serve_small_fleet(dir.path());
    block_on(Duration::from_secs(60), typed_queries(served.pg_port));
}

async fn typed_queries(port: u16) {
    let (client, connection) = postgres(port).await;

    // `query` prepares (Parse/Describe) and then binds and executes, with binary results.
    let rows = client
        .query(
            "SELECT sensor, count(*) AS windows, CAST(sum(count) AS DOUBLE) / count(*) AS per_window, \
             min(window_start) AS first, max(window_start) AS last \
             FROM fleet GROUP BY sensor ORDER BY sensor",
            &[],
        )
        .await
        .unwrap();
    let per_sensor = expected_windows() / SENSORS;
    let sensors: Vec<String> = rows.iter().map(|r| r.get("sensor")).collect();
    assert_eq!(sensors, ["temperature", "vibration"]);
    for row in &rows {
        assert_eq!(row.get::<_, i64>("windows"), per_sensor as i64);
        assert_eq!(row.get::<_, f64>("per_window"), RATE_PER_SECOND as f64);
        let first: SystemTime = row.get("first");
        let last: SystemTime = row.get("last");
        let seconds = EVENTS / (DEVICES * SENSORS) / RATE_PER_SECOND;
        assert_eq!(
            last.duration_since(first).unwrap(),
            Duration::from_secs(seconds - 1)
        );
    }
    let columns: Vec<_> = rows[0]
        .columns()
        .iter()
        .map(|c| c.type_().name().to_string())
        .collect();
    assert_eq!(
        columns,
        ["text", "int8", "float8", "timestamp", "timestamp"]
    );

    // Bad SQL is an error with a SQLSTATE; the connection keeps working.
    let error = client
        .query("SELECT nope FROM fleet", &[])
        .await
        .unwrap_err();
    assert_eq!(error.code().map(|c| c.code()), Some("42703"), "{error}");
    let message = error.as_db_error().map(|e| e.message().to_string());
    assert!(
        message.as_deref().unwrap_or_default().contains("nope"),
        "{message:?}"
    );
    let error = client.query("SELEC 1", &[]).await.unwrap_err();
    assert_eq!(error.code().map(|c| c.code()), Some("42601"), "{error}");
    let row = client
        .query_one("SELECT count(*) AS n, true AS ok FROM fleet", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>("n"), expected_windows() as i64);
    assert!(row.get::<_, bool>("ok"));

    // The simple protocol through the same client: text values.
    let messages = client
        .simple_query("SELECT count(*) AS n FROM fleet")
        .await
        .unwrap();
    let values: Vec<_> = messages
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .collect();
    assert_eq!(values, [expected_windows().to_string()]);

    drop(client);
    let _ = connection.await;
}
