//! SQL over the Postgres wire protocol of a served instance, through the real `psql`
//! (Debian's postgresql-client, installed by CI) and through tokio-postgres.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

const SMALL_FLEET: &str = r#"
pipeline: small
nodes:
  sensors: { kind: generator, devices: 30, sites: 3, sensors: [vibration, temperature], rate_per_device: 10/s, seed: 3 }
  per_sec: { kind: window, inputs: [sensors], key: [site, device, sensor], size: 1s, aggregates: [count, mean] }
  fleet:   { kind: table, inputs: [per_sec] }
"#;
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

/// A served instance (HTTP and Postgres protocol on ports the OS picked), killed on drop.
struct Served {
    child: Child,
    pg_port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the small fleet to completion with `--serve` and waits until it says so.
fn serve() -> Served {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = dir.path().join("small.yaml");
    std::fs::write(&pipeline, SMALL_FLEET).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgeflow"))
        .args([
            "run",
            pipeline.to_str().unwrap(),
            "--events",
            &EVENTS.to_string(),
        ])
        .args(["--serve", "--listen", "127.0.0.1:0"])
        .args(["--pg-listen", "127.0.0.1:0", "--quiet"])
        .args(["--data-dir", dir.path().join("data").to_str().unwrap()])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut pg_port = None;
    let mut finished = false;
    let mut seen = Vec::new();
    // Bounded: at most 100 lines and 120 s (checked after each line).
    for _ in 0..100 {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(rest) = line.split("Postgres protocol on ").nth(1) {
            let address = rest.split_whitespace().next().unwrap_or_default();
            pg_port = address.rsplit(':').next().and_then(|p| p.parse().ok());
        }
        finished = line.contains("still serving");
        seen.push(line);
        if finished || Instant::now() > deadline {
            break;
        }
    }
    assert!(finished, "the pipeline did not finish serving: {seen:?}");
    std::thread::spawn(move || for _ in lines {});
    Served {
        child,
        pg_port: pg_port.unwrap_or_else(|| panic!("no Postgres address printed: {seen:?}")),
        _dir: dir,
    }
}

/// Runs `psql` against the served instance with these extra arguments, killed after 60 s.
fn psql(served: &Served, args: &[&str]) -> Output {
    let psql = Path::new("/usr/bin/psql");
    assert!(
        psql.exists(),
        "/usr/bin/psql is missing: install Debian's postgresql-client (CI does, in .ci/run)"
    );
    let port = served.pg_port.to_string();
    let mut child = Command::new(psql)
        .args(["-X", "-A", "-t", "-w", "-h", "127.0.0.1", "-p", &port])
        .args(["-U", "edgeflow", "-d", "edgeflow"])
        .args(args)
        .env_remove("PGPASSWORD")
        .env_remove("PGSERVICE")
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut text = Vec::new();
        stdout.read_to_end(&mut text).map(|_| text)
    });
    let err = std::thread::spawn(move || {
        let mut text = Vec::new();
        stderr.read_to_end(&mut text).map(|_| text)
    });
    let started = Instant::now();
    // Bounded: 60 s in steps of 20 ms.
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("psql {args:?} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap().unwrap(),
        stderr: err.join().unwrap().unwrap(),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn psql_counts_every_window_and_survives_bad_sql() {
    let served = serve();

    let output = psql(
        &served,
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
        &served,
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
        &served,
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
    let served = serve();
    let port = served.pg_port;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        tokio::time::timeout(Duration::from_secs(60), typed_queries(port))
            .await
            .expect("the Postgres client did not finish within 60 s");
    });
}

async fn typed_queries(port: u16) {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (client, connection) = tokio_postgres::Config::new()
        .user("edgeflow")
        .dbname("edgeflow")
        .connect_raw(stream, tokio_postgres::NoTls)
        .await
        .unwrap();
    let connection = tokio::spawn(connection);

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
