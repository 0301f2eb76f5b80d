//! Helpers every integration test shares: the `edgeflow` binary, repository paths, child
//! processes bounded in time, `psql`, and a tokio runtime for the async clients. One copy
//! each; the test modules never start a process or a server another way.

pub mod embedded;
pub mod served;

#[cfg(feature = "kafka")]
pub mod broker;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The `edgeflow` binary cargo built for these tests.
pub fn edgeflow() -> Command {
    Command::new(env!("CARGO_BIN_EXE_edgeflow"))
}

/// A path inside the repository (`pipelines/quickstart.yaml`, `scripts/dev-broker`).
pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Writes `yaml` to `dir/name` and returns the path.
pub fn write_pipeline(dir: &Path, name: &str, yaml: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, yaml).unwrap();
    path
}

/// A loopback port that was free a moment ago (for a server that must be told its port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

/// A child process whose stdout and stderr are drained by threads while it runs (a full pipe
/// would otherwise block it); killed when dropped, so a failing test leaves nothing behind.
pub struct Running {
    child: Child,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

impl Running {
    /// Spawns `command` with stdin closed and both output pipes drained.
    pub fn start(command: &mut Command) -> Running {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let stdout = Some(drain(child.stdout.take()));
        let stderr = Some(drain(child.stderr.take()));
        Running {
            child,
            stdout,
            stderr,
        }
    }

    /// SIGKILL, and reap the process.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends SIGTERM, then waits at most `limit` for the process to exit: how long it took
    /// and its output.
    pub fn terminate(self, what: &str, limit: Duration) -> (Duration, Output) {
        let started = Instant::now();
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM {what}");
        let out = self.wait(what, limit);
        (started.elapsed(), out)
    }

    /// Waits at most `limit` for the process to exit; its status and output. Panics with
    /// `what` and its stderr when it does not finish in time (the process is killed).
    pub fn wait(self, what: &str, limit: Duration) -> Output {
        self.wait_or(what, limit, String::new)
    }

    /// [`Running::wait`], adding `diagnose()` to the panic message of a timeout (for
    /// example whether the broker the process talks to still answers).
    pub fn wait_or(
        mut self,
        what: &str,
        limit: Duration,
        diagnose: impl FnOnce() -> String,
    ) -> Output {
        let started = Instant::now();
        // Bounded: `limit`, polled every 20 ms.
        let timed_out = loop {
            if self.child.try_wait().unwrap().is_some() {
                break false;
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                break true;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let status = self.child.wait().unwrap();
        let joined =
            |pipe: Option<JoinHandle<Vec<u8>>>| pipe.map(|p| p.join().unwrap()).unwrap_or_default();
        let stdout = joined(self.stdout.take());
        let stderr = joined(self.stderr.take());
        if timed_out {
            panic!(
                "{what} did not finish within {limit:?}{}: {}",
                diagnose(),
                String::from_utf8_lossy(&stderr)
            );
        }
        Output {
            status,
            stdout,
            stderr,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

/// Runs the real `psql` (Debian's postgresql-client) against `127.0.0.1:port` as user and
/// database `edgeflow`, with these extra arguments, unaligned and tuples only; killed after
/// 60 s. Its output, whether it succeeded or not.
pub fn psql(port: u16, args: &[&str]) -> Output {
    let psql = Path::new("/usr/bin/psql");
    assert!(
        psql.exists(),
        "/usr/bin/psql is missing: install Debian's postgresql-client (CI does, in .ci/run)"
    );
    Running::start(
        Command::new(psql)
            .args(["-X", "-A", "-t", "-w", "-h", "127.0.0.1"])
            .args(["-p", &port.to_string()])
            .args(["-U", "edgeflow", "-d", "edgeflow"])
            .args(args)
            .env_remove("PGPASSWORD")
            .env_remove("PGSERVICE")
            .env("PGCONNECT_TIMEOUT", "10"),
    )
    .wait(&format!("psql {args:?}"), Duration::from_secs(60))
}

/// Runs `future` on a fresh current-thread tokio runtime, failing the test after `limit`.
pub fn block_on<F: std::future::Future>(limit: Duration, future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            tokio::time::timeout(limit, future)
                .await
                .unwrap_or_else(|_| panic!("the client did not finish within {limit:?}"))
        })
}

/// A small fleet (30 devices x 2 sensors at 10 readings/s, seed 3) summarized per device,
/// sensor and second into the table `fleet`: with N readings, N / 60 / 10 one-second windows
/// per series.
pub const SMALL_FLEET: &str = r#"
pipeline: small
nodes:
  sensors: { kind: generator, devices: 30, sites: 3, sensors: [vibration, temperature], rate_per_device: 10/s, seed: 3 }
  per_sec: { kind: window, inputs: [sensors], key: [site, device, sensor], size: 1s, aggregates: [count, mean] }
  fleet:   { kind: table, inputs: [per_sec] }
"#;

/// A tokio-postgres client connected to `127.0.0.1:port` as user and database `edgeflow`,
/// and the task driving its connection (it ends when the client is dropped).
pub async fn postgres(
    port: u16,
) -> (
    tokio_postgres::Client,
    tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
) {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (client, connection) = tokio_postgres::Config::new()
        .user("edgeflow")
        .dbname("edgeflow")
        .connect_raw(stream, tokio_postgres::NoTls)
        .await
        .unwrap();
    (client, tokio::spawn(connection))
}

/// `GET path` (or `POST path` with `body`) at a served process: the response body when the
/// status is 200, `None` otherwise or on a connection error (10 s bound).
pub fn http(address: &str, path: &str, body: Option<&str>) -> Option<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let url = format!("http://{address}{path}");
    let mut response = match body {
        Some(body) => agent.post(&url).send(body).ok()?,
        None => agent.get(&url).call().ok()?,
    };
    let text = response.body_mut().read_to_string().ok()?;
    (response.status() == 200).then_some(text)
}

/// Stdout or stderr bytes as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
