//! Hostile and unlucky SQL against the real `edgeflow` binary on 127.0.0.1 (issue 12, cases
//! 1, 4, 5, 6 and 17): deep expressions, statements that are not queries, cross-site
//! requests, runaway queries, shutdown with requests in flight, several statements in one
//! `--query`. Each test asserts the process stays up (or exits in bounded time when told
//! to), the exact answers of good queries, and the error text of bad ones.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::edgeflow;

const SMALL_FLEET: &str = r#"
pipeline: small
nodes:
  sensors: { kind: generator, devices: 30, sites: 3, sensors: [vibration, temperature], rate_per_device: 10/s, seed: 3 }
  per_sec: { kind: window, inputs: [sensors], key: [site, device, sensor], size: 1s, aggregates: [count, mean] }
  fleet:   { kind: table, inputs: [per_sec] }
"#;
/// 60,000 readings of 30 devices x 2 sensors at 10/s: 100 s, one window per series and second.
const EVENTS: &str = "60000";
const FLEET_WINDOWS: u64 = 30 * 2 * 100;

/// A served instance (HTTP and Postgres protocol on ports the OS picked), killed on drop.
struct Served {
    child: Child,
    http: String,
    pg_port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_pipeline(dir: &Path) -> PathBuf {
    let pipeline = dir.join("small.yaml");
    std::fs::write(&pipeline, SMALL_FLEET).unwrap();
    pipeline
}

/// Runs the small fleet to completion with `--serve` and these extra flags, in a fresh
/// directory that is also its working directory, and waits until it serves.
fn serve(extra: &[&str]) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = write_pipeline(dir.path());
    let mut child = edgeflow()
        .current_dir(dir.path())
        .args(["run", pipeline.to_str().unwrap(), "--events", EVENTS])
        .args([
            "--serve",
            "--listen",
            "127.0.0.1:0",
            "--pg-listen",
            "127.0.0.1:0",
        ])
        .args(["--quiet", "--data-dir", "data"])
        .args(extra)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut http, mut pg_port, mut finished) = (None, None, false);
    let mut seen = Vec::new();
    // Bounded: at most 100 lines and 120 s (checked after each line).
    for _ in 0..100 {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(rest) = line.split("http://").nth(1) {
            http = rest.split('/').next().map(str::to_owned);
        }
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
        http: http.unwrap_or_else(|| panic!("no HTTP address printed: {seen:?}")),
        pg_port: pg_port.unwrap_or_else(|| panic!("no Postgres address printed: {seen:?}")),
        dir,
    }
}

/// An HTTP answer: status and body.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: String,
}

/// Sends one HTTP/1.1 request over a fresh connection (closed after the answer), with
/// these extra header lines; waits at most 120 s.
fn request(address: &str, method: &str, path: &str, headers: &[&str], body: &str) -> Answer {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers
        .iter()
        .any(|h| h.to_ascii_lowercase().starts_with("host:"))
    {
        head.push_str(&format!("Host: {address}\r\n"));
    }
    for header in headers {
        head.push_str(header);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Answer { status, body }
}

/// `POST /sql` as curl sends it (`curl -d`: a form content type, no Origin).
fn post_sql(served: &Served, sql: &str) -> Answer {
    request(
        &served.http,
        "POST",
        "/sql",
        &["Content-Type: application/x-www-form-urlencoded"],
        sql,
    )
}

fn fleet_count(served: &Served) -> String {
    post_sql(served, "SELECT count(*) AS n FROM fleet").body
}

/// `edgeflow run` of the test pipeline to completion in a new temp dir (returned, with what
/// the run printed), with `events` readings and `args` added.
fn run_to_completion(events: &str, args: &[&str]) -> (tempfile::TempDir, std::process::Output) {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = write_pipeline(dir.path());
    let output = edgeflow()
        .current_dir(dir.path())
        .args([
            "run",
            pipeline.to_str().unwrap(),
            "--events",
            events,
            "--quiet",
        ])
        .args(["--data-dir", "data"])
        .args(args)
        .output()
        .unwrap();
    (dir, output)
}

fn expected_count() -> String {
    format!("[{{\"n\":{FLEET_WINDOWS}}}]\n")
}

/// `SELECT 1+1+...` with `terms` terms.
fn deep_sum(terms: usize) -> String {
    format!("SELECT {}", vec!["1"; terms].join("+"))
}

/// Runs `work` with a tokio-postgres client of the served instance, for at most 120 s.
fn with_postgres<F, Fut>(served: &Served, work: F)
where
    F: FnOnce(tokio_postgres::Client) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let port = served.pg_port;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
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
        tokio::time::timeout(Duration::from_secs(120), work(client))
            .await
            .expect("the Postgres client did not finish within 120 s");
        connection.abort();
    });
}

/// The SQLSTATE and message of a failed Postgres call.
fn pg_error(error: tokio_postgres::Error) -> (String, String) {
    let db = error
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {error}"));
    (db.code().code().to_owned(), db.message().to_owned())
}

fn assert_alive(served: &mut Served) {
    assert!(
        served.child.try_wait().unwrap().is_none(),
        "the server process ended"
    );
}

/// Issue 12 case 1: a 2 KB `SELECT 1+1+...` overflowed a tokio worker's stack and aborted
/// the process (HTTP, Postgres and `--query`).
#[test]
fn deep_expressions_are_refused_and_the_server_stays_up() {
    let mut served = serve(&[]);
    for terms in [1000, 100_000] {
        let answer = post_sql(&served, &deep_sum(terms));
        assert_eq!(answer.status, 400, "{terms} terms: {answer:?}");
        assert!(
            answer.body.contains("nests too deep") && answer.body.contains("--sql-max-depth"),
            "{terms} terms: {answer:?}"
        );
        assert_alive(&mut served);
    }
    // Below the bound, a long chain is computed on the SQL threads' deep stacks.
    let answer = post_sql(&served, &format!("{} AS n", deep_sum(200)));
    assert_eq!(answer.body, "[{\"n\":200}]\n", "{answer:?}");
    // Nested parentheses are bounded by the parser's recursion limit.
    let nested = format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000));
    let answer = post_sql(&served, &nested);
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(answer.body.contains("nests too deep"), "{answer:?}");
    assert_eq!(fleet_count(&served), expected_count());

    with_postgres(&served, |client| async move {
        for terms in [1000, 100_000] {
            let sql = deep_sum(terms);
            let messages = client.simple_query(&sql).await.unwrap_err();
            let (code, message) = pg_error(messages);
            assert_eq!(code, "54001", "simple, {terms} terms: {message}");
            let prepared = client.prepare(&sql).await.unwrap_err();
            assert_eq!(pg_error(prepared).0, "54001", "Parse, {terms} terms");
        }
        let row = client
            .query_one("SELECT count(*) AS n FROM fleet", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>("n"), FLEET_WINDOWS as i64);
    });
    assert_alive(&mut served);

    let (_dir, output) = run_to_completion("600", &["--query", &deep_sum(1000)]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(1),
        "an error, not a crash: {stderr}"
    );
    assert!(stderr.contains("nests too deep"), "{stderr}");
}

/// Issue 12 case 5: `COPY (SELECT 'owned' AS a) TO 'owned.txt'` wrote a file of the caller's
/// choosing, and DELETE/UPDATE answered `{"count":20000}`.
#[test]
fn sql_is_read_only_on_every_path() {
    let mut served = serve(&[]);
    let copy = "COPY (SELECT 'owned' AS a) TO 'owned.txt' STORED AS CSV";
    for (sql, words) in [
        (copy, "COPY"),
        ("DELETE FROM fleet", "DELETE"),
        ("UPDATE fleet SET count = 0", "UPDATE"),
        ("INSERT INTO fleet SELECT * FROM fleet", "INSERT"),
        (
            "CREATE EXTERNAL TABLE secrets (line VARCHAR) STORED AS CSV LOCATION '/etc/passwd'",
            "CREATE EXTERNAL TABLE",
        ),
        ("CREATE TABLE t AS SELECT 1", "CREATE TABLE"),
        ("DROP TABLE fleet", "DROP TABLE"),
        ("EXPLAIN ANALYZE COPY (SELECT 1) TO 'owned.txt'", "COPY"),
        ("SELECT 1 AS a INTO copied", "read-only"),
    ] {
        let answer = post_sql(&served, sql);
        assert_eq!(answer.status, 403, "{sql}: {answer:?}");
        assert!(
            answer.body.contains("read-only") && answer.body.contains(words),
            "{sql}: {answer:?}"
        );
        assert!(!answer.body.contains("count\":"), "{sql}: {answer:?}");
    }
    assert_eq!(fleet_count(&served), expected_count());

    with_postgres(&served, |client| async move {
        let (code, message) = pg_error(client.simple_query(copy).await.unwrap_err());
        assert_eq!(code, "25006", "{message}");
        assert!(message.contains("read-only"), "{message}");
        let (code, _) = pg_error(client.prepare(copy).await.unwrap_err());
        assert_eq!(code, "25006", "Parse");
        let (code, _) = pg_error(client.execute("DELETE FROM fleet", &[]).await.unwrap_err());
        assert_eq!(code, "25006", "extended DELETE");
        // A statement before the refused one ran; the one after did not.
        let messages = client
            .simple_query("SELECT 1; DELETE FROM fleet; SELECT 2")
            .await
            .unwrap_err();
        assert_eq!(pg_error(messages).0, "25006");
        let row = client
            .query_one("SELECT count(*) AS n FROM fleet", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>("n"), FLEET_WINDOWS as i64);
    });
    assert_alive(&mut served);

    let (dir, output) = run_to_completion("600", &["--query", copy]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("read-only"), "{stderr}");
    for place in [served.dir.path(), dir.path()] {
        assert!(
            !place.join("owned.txt").exists(),
            "COPY wrote {}",
            place.display()
        );
    }
}

/// Issue 12 case 5: a `text/plain` POST is a CORS simple request, so any web page could
/// query and reconfigure a local edgeflow.
#[test]
fn cross_site_posts_are_refused_and_local_clients_are_served() {
    let served = serve(&[]);
    let own_origin = format!("Origin: http://{}", served.http);
    let count = "SELECT count(*) AS n FROM fleet";
    let control = r#"{"node":"sensors","action":"set_sampling","every":2}"#;
    for path in ["/sql", "/control"] {
        let body = if path == "/sql" { count } else { control };
        for headers in [
            vec!["Origin: http://evil.example", "Content-Type: text/plain"],
            vec!["Origin: null", "Content-Type: text/plain"],
            vec![
                "Origin: http://localhost:3000",
                "Content-Type: application/x-www-form-urlencoded",
            ],
            vec!["Sec-Fetch-Site: cross-site", "Content-Type: text/plain"],
            vec!["Sec-Fetch-Site: same-site", "Content-Type: text/plain"],
        ] {
            let answer = request(&served.http, "POST", path, &headers, body);
            assert_eq!(answer.status, 403, "{path} {headers:?}: {answer:?}");
            assert!(answer.body.contains("refused"), "{answer:?}");
        }
        // DNS rebinding: a name the attacker points at 127.0.0.1 is same-origin to the browser.
        let port = served.http.rsplit(':').next().unwrap();
        let host = format!("Host: evil.example:{port}");
        let origin = format!("Origin: http://evil.example:{port}");
        let answer = request(&served.http, "POST", path, &[&host, &origin], body);
        assert_eq!(answer.status, 403, "rebinding {path}: {answer:?}");
    }
    // The server's own origin, curl and `edgeflow sql` are served.
    let answer = request(&served.http, "POST", "/sql", &[&own_origin], count);
    assert_eq!(answer.body, expected_count(), "{answer:?}");
    assert_eq!(post_sql(&served, count).body, expected_count());
    let json = request(
        &served.http,
        "POST",
        "/sql",
        &["Content-Type: application/json"],
        &format!(r#"{{"sql": "{count}"}}"#),
    );
    assert_eq!(json.body, expected_count(), "{json:?}");
    let cli = edgeflow()
        .args(["sql", "--server", &served.http, "--format", "csv", count])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&cli.stdout),
        format!("n\n{FLEET_WINDOWS}\n"),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    // Issue 12 case 17: the 404 of a pipeline without `control:` says how to enable it.
    let answer = request(
        &served.http,
        "POST",
        "/control",
        &["Content-Type: application/json"],
        control,
    );
    assert_eq!(answer.status, 404, "{answer:?}");
    assert!(
        answer.body.contains("control: { nodes: [<node>] }"),
        "{answer:?}"
    );
}

/// Peak and current resident memory of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// CPU time a process has used, in clock ticks (user + system).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses): state is field 3; utime 14.
    let after = stat.rsplit_once(')').unwrap().1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Issue 12 case 6: a three-way cross join took RSS from 110 MB to 4.2 GB, and 2.8 GB stayed
/// after the client disconnected.
#[test]
fn a_runaway_query_is_stopped_by_its_memory_and_time_bounds() {
    let mut served = serve(&["--sql-memory-limit", "128MiB", "--sql-timeout", "4s"]);
    let pid = served.child.id();
    let (_, before) = memory_kib(pid);
    let started = Instant::now();
    let answer = post_sql(
        &served,
        "SELECT * FROM fleet a CROSS JOIN fleet b CROSS JOIN fleet c",
    );
    let took = started.elapsed();
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(
        answer.body.contains("memory limit of 128 MiB")
            && answer.body.contains("--sql-memory-limit"),
        "{answer:?}"
    );
    assert!(took < Duration::from_secs(30), "took {took:?}");
    let (peak, _) = memory_kib(pid);
    // The bound is 128 MiB of query memory; allow the allocator and the runtime their share.
    assert!(
        peak < before + 3 * 128 * 1024,
        "peak RSS {peak} KiB from {before} KiB"
    );

    let started = Instant::now();
    let answer = post_sql(
        &served,
        "SELECT max(a.mean + b.mean + c.mean) AS m FROM fleet a CROSS JOIN fleet b CROSS JOIN fleet c",
    );
    let took = started.elapsed();
    assert_eq!(answer.status, 504, "{answer:?}");
    assert!(answer.body.contains("--sql-timeout"), "{answer:?}");
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(20),
        "took {took:?}"
    );
    assert_eq!(fleet_count(&served), expected_count());
    assert_alive(&mut served);
}

/// Issue 12 case 6: a client that goes away must not leave its query running, over HTTP or
/// the Postgres protocol. (A `count(*)` of the cross join would be answered from statistics:
/// the query sums columns.)
#[test]
fn a_query_stops_when_its_client_goes_away() {
    let mut served = serve(&["--sql-timeout", "10m"]);
    let sql =
        "SELECT max(a.mean + b.mean + c.mean) FROM fleet a CROSS JOIN fleet b CROSS JOIN fleet c";

    let mut stream = TcpStream::connect(&served.http).unwrap();
    write!(
        stream,
        "POST /sql HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n{sql}",
        served.http,
        sql.len()
    )
    .unwrap();
    assert_stops_when_its_client_leaves(&served, "HTTP", move || drop(stream));

    // psql, killed mid-statement: its socket closes as a crashed or cancelled client's does.
    let mut psql = Command::new("psql")
        .args(["-X", "-h", "127.0.0.1", "-U", "edgeflow", "-d", "edgeflow"])
        .args(["-p", &served.pg_port.to_string(), "-c", sql])
        .env("PGCONNECT_TIMEOUT", "10")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("psql (postgresql-client) is installed");
    assert_stops_when_its_client_leaves(&served, "Postgres", move || {
        psql.kill().unwrap();
        psql.wait().unwrap();
    });

    assert_eq!(fleet_count(&served), expected_count());
    assert_alive(&mut served);
}

/// Checks that the statement a client just sent keeps the process busy, calls `leave`, and
/// checks that the process is idle again soon after.
fn assert_stops_when_its_client_leaves(served: &Served, protocol: &str, leave: impl FnOnce()) {
    let pid = served.child.id();
    std::thread::sleep(Duration::from_secs(2));
    let running = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(1));
    // On a loaded machine the query gets what CPU it can: at least a tenth of a core.
    let busy = cpu_ticks(pid) - running;
    assert!(
        busy >= 10,
        "{protocol}: the query does not seem to run ({busy} ticks in 1 s)"
    );
    leave();
    std::thread::sleep(Duration::from_secs(1));
    let after = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2));
    let spent = cpu_ticks(pid) - after;
    assert!(
        spent < busy.min(20),
        "{protocol}: {spent} ticks of CPU in 2 s after the client left ({busy} in 1 s while it ran)"
    );
}

/// Sends SIGTERM and waits for the process to end; the time it took.
fn terminate(served: &mut Served) -> Duration {
    let started = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &served.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // Bounded: 60 s in steps of 50 ms.
    for _ in 0..1200 {
        if served.child.try_wait().unwrap().is_some() {
            return started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the process did not exit within 60 s of SIGTERM");
}

/// Issue 12 case 4: SIGTERM while a client held a half-sent HTTP body never exited; SIGTERM
/// during a huge query let memory keep growing.
#[test]
fn shutdown_is_bounded_with_a_half_sent_body_or_a_running_query() {
    // A half-sent body is answered 408 after the read timeout.
    let mut served = serve(&["--http-read-timeout", "1s"]);
    let mut stream = TcpStream::connect(&served.http).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "POST /sql HTTP/1.1\r\nHost: {}\r\nContent-Length: 1000\r\n\r\nSELECT",
        served.http
    )
    .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("--http-read-timeout"), "{answer}");

    // SIGTERM with a body still half-sent (the read timeout is longer than the grace).
    let mut served_slow = serve(&["--http-read-timeout", "10m"]);
    let mut held = TcpStream::connect(&served_slow.http).unwrap();
    write!(
        held,
        "POST /sql HTTP/1.1\r\nHost: {}\r\nContent-Length: 1000\r\n\r\nSELECT",
        served_slow.http
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let took = terminate(&mut served_slow);
    assert!(took < Duration::from_secs(15), "exit took {took:?}");
    drop(held);

    // SIGTERM during a long query, over HTTP and over Postgres.
    let sql =
        "SELECT max(a.mean + b.mean + c.mean) FROM fleet a CROSS JOIN fleet b CROSS JOIN fleet c";
    let mut query = TcpStream::connect(&served.http).unwrap();
    write!(
        query,
        "POST /sql HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n{sql}",
        served.http,
        sql.len()
    )
    .unwrap();
    let pg_port = served.pg_port;
    let pg = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let Ok(stream) = tokio::net::TcpStream::connect(("127.0.0.1", pg_port)).await else {
                return;
            };
            let Ok((client, connection)) = tokio_postgres::Config::new()
                .user("edgeflow")
                .connect_raw(stream, tokio_postgres::NoTls)
                .await
            else {
                return;
            };
            let connection = tokio::spawn(connection);
            let _ = tokio::time::timeout(Duration::from_secs(60), client.simple_query(sql)).await;
            connection.abort();
        });
    });
    std::thread::sleep(Duration::from_secs(2));
    let took = terminate(&mut served);
    assert!(took < Duration::from_secs(15), "exit took {took:?}");
    drop(query);
    pg.join().unwrap();
}

/// Issue 12 case 17: `--query "a; b"` failed with "only supports a single SQL statement".
#[test]
fn a_query_of_several_statements_prints_each_result() {
    let (_dir, output) = run_to_completion(
        EVENTS,
        &[
            "--format",
            "csv",
            "--query",
            "SELECT count(*) AS n FROM fleet; SELECT 'a;b' AS text",
            "--query",
            "SELECT 1 AS one",
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("n\n{FLEET_WINDOWS}\ntext\na;b\none\n1\n")
    );
}
