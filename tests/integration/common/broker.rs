//! The development Kafka broker for a test: tansu, started by `scripts/dev-broker` on a free
//! loopback port with its own storage, checked to answer Kafka requests, stopped on drop.
//! A broker that is missing fails with the script's message; one that accepts connections
//! but stopped answering (issue 12, case 25: tansu at 100% CPU) fails with a message saying
//! so and the end of its log, instead of a test that waits for its whole time limit.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::{Running, free_port, repo};

/// How long a started broker may take to answer its first Kafka request.
const ANSWER_LIMIT: Duration = Duration::from_secs(30);
/// How long one probe waits for the broker's answer.
const PROBE_LIMIT: Duration = Duration::from_secs(5);

/// A tansu broker on a free port, storing its data under `dir`; stopped when dropped.
pub struct Broker {
    dir: PathBuf,
    port: u16,
}

impl Broker {
    /// Starts a broker with its data under `dir/broker` (installing tansu first when it is
    /// missing) and returns once it answers Kafka requests.
    pub fn start(dir: &Path) -> Broker {
        let broker = Broker {
            dir: dir.join("broker"),
            port: free_port(),
        };
        broker.up();
        broker
    }

    fn script(&self, command: &str) -> Output {
        Command::new(repo("scripts/dev-broker"))
            .args([command, "--port", &self.port.to_string(), "--dir"])
            .arg(&self.dir)
            .output()
            .unwrap()
    }

    /// Starts (or restarts) the broker process and waits until it answers (bounded: 60 s for
    /// the port in the script, then 30 s for an answer).
    pub fn up(&self) {
        let out = self.script("start");
        assert!(
            out.status.success(),
            "dev-broker start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let started = Instant::now();
        // Bounded: 30 s of probes, each at most 5 s, 100 ms apart.
        loop {
            match self.answers() {
                Ok(()) => return,
                Err(error) if started.elapsed() > ANSWER_LIMIT => panic!(
                    "the broker on {} accepts connections but did not answer a Kafka request \
                     within {ANSWER_LIMIT:?} ({error}); {}",
                    self.address(),
                    self.log_tail()
                ),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// The broker's SQLite database.
    pub fn database(&self) -> PathBuf {
        self.dir.join("broker.db")
    }

    /// Stops the broker process (its data stays).
    pub fn down(&self) {
        let out = self.script("stop");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `127.0.0.1:port`, for `--brokers` and `bootstrap.servers`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Sends a Kafka `ApiVersions` (v0) request and reads the answer's header, within 5 s.
    fn answers(&self) -> Result<(), String> {
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut stream = TcpStream::connect_timeout(&address, PROBE_LIMIT)
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .set_read_timeout(Some(PROBE_LIMIT))
            .and_then(|()| stream.set_write_timeout(Some(PROBE_LIMIT)))
            .map_err(|e| format!("socket timeouts: {e}"))?;
        const API_VERSIONS: i16 = 18;
        const CORRELATION_ID: i32 = 0x00ED_6EF1;
        let client_id = b"edgeflow-tests";
        let mut request = Vec::new();
        request.extend(API_VERSIONS.to_be_bytes());
        request.extend(0i16.to_be_bytes());
        request.extend(CORRELATION_ID.to_be_bytes());
        request.extend((client_id.len() as i16).to_be_bytes());
        request.extend(client_id);
        let mut frame = (request.len() as i32).to_be_bytes().to_vec();
        frame.extend(request);
        stream
            .write_all(&frame)
            .map_err(|e| format!("send ApiVersions: {e}"))?;
        // The answer: length, then the correlation id of the request.
        let mut header = [0u8; 8];
        stream
            .read_exact(&mut header)
            .map_err(|e| format!("no ApiVersions answer within {PROBE_LIMIT:?}: {e}"))?;
        let correlation = i32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        if correlation == CORRELATION_ID {
            Ok(())
        } else {
            Err(format!("answer for correlation id {correlation:#x}"))
        }
    }

    /// Whether the broker answers now, as a phrase for a timeout message.
    fn health(&self) -> String {
        match self.answers() {
            Ok(()) => format!(" (the broker on {} still answers)", self.address()),
            Err(error) => format!(
                " (the broker on {} does not answer Kafka requests: {error}; it may have \
                 stalled; {})",
                self.address(),
                self.log_tail()
            ),
        }
    }

    /// The last lines of the broker's log, or why they cannot be read.
    fn log_tail(&self) -> String {
        let path = self.dir.join("broker.log");
        match std::fs::read_to_string(&path) {
            Ok(log) => {
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(20)..].join("\n");
                format!("last lines of {}:\n{tail}", path.display())
            }
            Err(e) => format!("{}: {e}", path.display()),
        }
    }

    /// Waits at most `limit` for a process that talks to this broker; its output. A timeout
    /// says whether the broker still answers, so a stalled broker is named as the cause.
    pub fn wait(&self, run: Running, what: &str, limit: Duration) -> Output {
        run.wait_or(what, limit, || self.health())
    }

    /// Polls `probe` every 100 ms until it returns a value (bounded by `limit`); a timeout
    /// says whether the broker still answers.
    pub fn eventually<T>(
        &self,
        what: &str,
        limit: Duration,
        mut probe: impl FnMut() -> Option<T>,
    ) -> T {
        let started = Instant::now();
        loop {
            if let Some(value) = probe() {
                return value;
            }
            assert!(
                started.elapsed() < limit,
                "timed out waiting for {what}{}",
                self.health()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.script("stop");
    }
}
