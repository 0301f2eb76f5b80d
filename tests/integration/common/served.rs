//! `edgeflow run --serve` in a child process: HTTP and the Postgres protocol on ports the OS
//! picked, its stderr read line by line, killed when dropped.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::edgeflow;

/// How long a served instance may take to print a line a test waits for.
const LINE_LIMIT: Duration = Duration::from_secs(120);

/// A served instance, killed on drop.
pub struct Served {
    child: Child,
    /// `host:port` of the HTTP server (`/sql`, `/control`, `/metrics`, `/health`).
    pub http: String,
    /// The port of the Postgres-protocol server on 127.0.0.1.
    pub pg_port: u16,
    stderr: Receiver<String>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `edgeflow run PIPELINE --serve --quiet` with `args` (events, workers, pacing),
/// data under `data_dir`, and returns once both servers listen (bounded: 120 s).
pub fn serve(pipeline: &Path, data_dir: &Path, args: &[&str]) -> Served {
    let mut child = edgeflow()
        .arg("run")
        .arg(pipeline)
        .args(args)
        .args(["--serve", "--listen", "127.0.0.1:0"])
        .args(["--pg-listen", "127.0.0.1:0", "--quiet"])
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, stderr) = channel();
    let lines = BufReader::new(child.stderr.take().unwrap()).lines();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let (mut http, mut pg_port) = (None, None);
    let deadline = Instant::now() + LINE_LIMIT;
    let mut seen = Vec::new();
    // Bounded: 120 s; both addresses are printed at start-up.
    while http.is_none() || pg_port.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = stderr
            .recv_timeout(left)
            .unwrap_or_else(|e| panic!("the servers did not come up ({e}): {seen:?}"));
        if let Some(rest) = line.split("http://").nth(1) {
            http = rest.split('/').next().map(str::to_string);
        }
        if let Some(rest) = line.split("Postgres protocol on ").nth(1) {
            let address = rest.split_whitespace().next().unwrap_or_default();
            pg_port = address.rsplit(':').next().and_then(|p| p.parse().ok());
        }
        seen.push(line);
    }
    Served {
        child,
        http: http.unwrap_or_default(),
        pg_port: pg_port.unwrap_or_default(),
        stderr,
    }
}

impl Served {
    /// Waits (at most 120 s) for a stderr line containing `text`.
    pub fn wait_for(&self, text: &str) {
        let deadline = Instant::now() + LINE_LIMIT;
        // Bounded: 120 s.
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.contains(text) => return,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no line with {text:?} within {LINE_LIMIT:?}")
                }
                Err(RecvTimeoutError::Disconnected) => panic!("edgeflow exited before {text:?}"),
            }
        }
    }

    /// Waits (at most 120 s) until the pipeline has finished and the instance only serves.
    pub fn wait_finished(&self) {
        self.wait_for("still serving");
    }

    /// `POST /sql`: the JSON rows, after checking the answer is a 200 (bounded: 60 s).
    pub fn sql(&self, sql: &str) -> Vec<Value> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let mut response = agent
            .post(&format!("http://{}/sql", self.http))
            .send(sql)
            .unwrap();
        let body = response.body_mut().read_to_string().unwrap();
        assert_eq!(response.status(), 200, "{sql}: {body}");
        match serde_json::from_str(&body) {
            Ok(Value::Array(rows)) => rows,
            other => panic!("{sql}: not JSON rows: {other:?}: {body}"),
        }
    }
}
