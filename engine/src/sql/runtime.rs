//! The thread pool SQL runs on: a Tokio runtime of its own whose threads have stacks deep
//! enough for the deepest statement [`super::guard`] admits, so that planning and executing a
//! deep plan never overflows a server's thread; with the statement timeout, and cancellation
//! when the caller stops waiting.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::limits::Refusal;
use crate::error::EngineError;

/// Stack of each SQL thread. DataFusion recurses per plan and expression level (a few
/// kilobytes per level in a debug build); this leaves an ample margin at the default
/// `--sql-max-depth`. Only the pages a statement touches are ever resident.
const SQL_THREAD_STACK_BYTES: usize = 256 << 20;

/// The SQL thread pool, started on first use and stopped (without waiting) when dropped.
#[derive(Debug, Default)]
pub(super) struct SqlRuntime {
    runtime: OnceLock<Result<tokio::runtime::Runtime, String>>,
}

impl SqlRuntime {
    fn handle(&self) -> Result<&tokio::runtime::Handle, EngineError> {
        let runtime = self.runtime.get_or_init(|| {
            let threads = std::thread::available_parallelism().map_or(2, usize::from);
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name("edgeflow-sql")
                .thread_stack_size(SQL_THREAD_STACK_BYTES)
                .enable_time()
                .build()
                .map_err(|e| e.to_string())
        });
        match runtime {
            Ok(runtime) => Ok(runtime.handle()),
            Err(e) => Err(EngineError::Internal(format!(
                "cannot start the SQL threads: {e}"
            ))),
        }
    }

    /// Runs `work` on the SQL threads. Dropping the returned future cancels `work` (dropped
    /// on a SQL thread, with whatever it holds).
    pub(super) async fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, EngineError> {
        AbortOnDrop(self.handle()?.spawn(work))
            .await
            .map_err(|e| EngineError::Internal(format!("a SQL task failed: {e}")))
    }
}

/// Runs one statement's `work` for at most `timeout` (the statement timeout).
pub(super) async fn within<T>(
    timeout: Duration,
    work: impl Future<Output = Result<T, EngineError>>,
) -> Result<T, EngineError> {
    match tokio::time::timeout(timeout, work).await {
        Ok(outcome) => outcome,
        Err(_elapsed) => Err(EngineError::SqlRefused {
            refusal: Refusal::Timeout,
            message: format!(
                "the statement ran longer than its limit of {} s and was cancelled \
                 (--sql-timeout, EDGEFLOW_SQL_TIMEOUT)",
                timeout.as_secs_f64()
            ),
        }),
    }
}

impl Drop for SqlRuntime {
    fn drop(&mut self) {
        // Dropping a runtime blocks until its tasks end, which an async context forbids.
        if let Some(Ok(runtime)) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A task handle that aborts its task when dropped.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T, tokio::task::JoinError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
