//! Edge -> broker -> cloud over a real Kafka-protocol broker (tansu via `scripts/dev-broker`):
//! throughput and end-to-end latency.
//!
//! 1. Throughput: one edge runs `benches/pipelines/link.yaml` as fast as it can; the cloud
//!    waits for it. Events/s and cut bytes/s are over the edge's whole run, start to the
//!    cloud having applied everything (`edgeflow cloud` exits when the edge has ended).
//! 2. Latency at a fixed offered rate: the edge paces the generator to real time
//!    (`--realtime`, event time = wall clock); the cloud serves SQL; the bench polls
//!    `max(window_start)` of the cloud table every 20 ms and records, for every newly visible
//!    1 s window, `seen_at - window_end`: the time from the moment the window's last event
//!    could have happened to the moment its summary is queryable in the cloud. The poll
//!    interval bounds the error (+0..20 ms).
//!
//! `cargo bench --bench link` (env `EDGEFLOW_BENCH_LINK_EVENTS`, `EDGEFLOW_BENCH_LINK_SECONDS`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

struct Broker {
    dir: PathBuf,
    port: u16,
}

impl Broker {
    fn script(&self, command: &str) -> bool {
        Command::new(repo("scripts/dev-broker"))
            .args([command, "--port", &self.port.to_string(), "--dir"])
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.script("stop");
    }
}

fn edgeflow() -> Command {
    Command::new(env!("CARGO_BIN_EXE_edgeflow"))
}

fn wait(mut child: Child, what: &str) -> String {
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "{what} did not finish"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The `N B/event` figure of an edge's summary line.
fn bytes_per_event(summary: &str) -> f64 {
    summary
        .rsplit_once(" B/event")
        .and_then(|(head, _)| head.rsplit_once('(').map(|(_, n)| n))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn percentile(sorted: &[i64], q: f64) -> i64 {
    if sorted.is_empty() {
        return -1;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = Broker {
        dir: dir.path().join("broker"),
        port: free_port(),
    };
    assert!(broker.script("start"), "the dev broker did not start");
    let brokers = format!("127.0.0.1:{}", broker.port);
    let pipeline = repo("benches/pipelines/link.yaml");
    let common = |c: &mut Command, data: &Path| {
        c.arg(&pipeline)
            .args(["--brokers", &brokers])
            .arg("--data-dir")
            .arg(data);
    };

    // 1. Throughput.
    let events = env_or("EDGEFLOW_BENCH_LINK_EVENTS", 5_000_000);
    let data = dir.path().join("throughput");
    let mut cloud = edgeflow();
    cloud.args(["cloud", "--edges", "e0", "--quiet"]);
    common(&mut cloud, &data);
    let cloud = cloud.stderr(Stdio::piped()).spawn().expect("cloud");
    let started = Instant::now();
    let mut edge = edgeflow();
    edge.args(["edge", "--edge-id", "e0", "--events", &events.to_string()]);
    common(&mut edge, &data);
    let edge = edge.stderr(Stdio::piped()).spawn().expect("edge");
    let summary = wait(edge, "edge");
    let edge_done = started.elapsed();
    wait(cloud, "cloud");
    let total = started.elapsed();
    let bpe = bytes_per_event(&summary);
    println!(
        "throughput: {events} events, edge done in {:.2}s, cloud caught up in {:.2}s: {:.0} events/s, {:.3} B/event -> {:.1} KiB/s edge->broker->cloud",
        edge_done.as_secs_f64(),
        total.as_secs_f64(),
        events as f64 / total.as_secs_f64(),
        bpe,
        bpe * events as f64 / total.as_secs_f64() / 1024.0
    );

    // 2. Latency at a fixed offered rate.
    let seconds = env_or("EDGEFLOW_BENCH_LINK_SECONDS", 20);
    let data = dir.path().join("latency");
    let listen = format!("127.0.0.1:{}", free_port());
    let mut cloud = edgeflow();
    cloud.args(["cloud", "--serve", "--listen", &listen, "--quiet"]);
    cloud.args(["--pg-listen", "127.0.0.1:0"]);
    common(&mut cloud, &data);
    let mut cloud = cloud.stderr(Stdio::null()).spawn().expect("cloud");
    let mut edge = edgeflow();
    // Another edge id than phase 1's: the cloud reads the topics from the start and would
    // drop a second `e0`'s frames as duplicates of the first's sequence numbers.
    edge.args(["edge", "--edge-id", "live", "--realtime", "--quiet"]);
    common(&mut edge, &data);
    let mut edge = edge.stderr(Stdio::null()).spawn().expect("edge");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .into();
    let mut latencies = Vec::new();
    let mut last_seen = i64::MIN;
    let until = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < until {
        let response = agent
            .post(&format!("http://{listen}/sql"))
            .header("Accept", "text/csv")
            .send("SELECT CAST(max(window_start) AS BIGINT) AS w FROM fleet");
        let seen_at = now_ms();
        if let Ok(mut r) = response
            && let Ok(body) = r.body_mut().read_to_string()
            && let Some(w) = body
                .lines()
                .nth(1)
                .and_then(|l| l.trim().parse::<i64>().ok())
            // Phase 1's windows (event time of the generator's default start) are in the
            // same table; only live windows count.
            && seen_at - w < 60_000
        {
            if w > last_seen && last_seen != i64::MIN {
                // Every window from last_seen + 1 s to w became visible by now.
                let mut window = last_seen + 1000;
                while window <= w {
                    latencies.push(seen_at - (window + 1000));
                    window += 1000;
                }
            }
            last_seen = last_seen.max(w);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = edge.kill();
    let _ = cloud.kill();
    let _ = edge.wait();
    let _ = cloud.wait();
    latencies.sort_unstable();
    println!(
        "latency: {} windows at 100k events/s offered (500 devices x 2 sensors x 100/s): window end -> visible in the cloud table p50 {} ms, p99 {} ms, max {} ms",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(-1)
    );
}
