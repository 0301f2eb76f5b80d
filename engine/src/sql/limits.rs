//! The bounds of the SQL interfaces: per-query memory, statement timeout, expression depth,
//! request body read timeout and shutdown grace; their flags and `EDGEFLOW_*` variables; and
//! the refusals a statement meets when it crosses one (each with its SQLSTATE and HTTP status).

use std::time::Duration;

/// Per-query bounds, applied by [`super::QueryEngine`] on every path (HTTP, Postgres,
/// `--query`, insight queries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryLimits {
    /// Memory one statement may hold: its operators' state (DataFusion's memory pool, no
    /// spilling to disk) plus its collected result; also the bound of an encoded HTTP answer.
    pub memory_bytes: usize,
    /// Wall-clock time one statement may take, planning included.
    pub timeout: Duration,
    /// The deepest expression or operator chain a statement may nest (see
    /// [`super::guard::nesting_estimate`]).
    pub max_depth: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            memory_bytes: DEFAULT_MEMORY_BYTES,
            timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECS),
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }
}

/// Bounds of the servers themselves (HTTP and Postgres protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Time a client has to send a request body (a slow or half-sent body is answered 408).
    pub read_timeout: Duration,
    /// After a stop is asked, time in-flight requests get before their connections close.
    pub shutdown_grace: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            read_timeout: Duration::from_secs(DEFAULT_READ_TIMEOUT_SECS),
            shutdown_grace: Duration::from_secs(DEFAULT_SHUTDOWN_GRACE_SECS),
        }
    }
}

const DEFAULT_MEMORY_BYTES: usize = 512 << 20;
const DEFAULT_TIMEOUT_SECS: u64 = 30;
const DEFAULT_MAX_DEPTH: usize = 500;
const DEFAULT_READ_TIMEOUT_SECS: u64 = 10;
const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 5;

/// The command-line flags (and variables) of [`QueryLimits`] and [`ServerLimits`].
#[derive(Debug, Clone, clap::Args)]
pub struct SqlLimitArgs {
    /// Memory one SQL statement may use, its result included (e.g. `512MiB`, `2GiB`).
    #[arg(long, env = "EDGEFLOW_SQL_MEMORY_LIMIT", default_value = "512MiB", value_parser = parse_bytes)]
    pub sql_memory_limit: usize,
    /// Time one SQL statement may take (e.g. `30s`, `2m`).
    #[arg(long, env = "EDGEFLOW_SQL_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub sql_timeout: Duration,
    /// Deepest expression or operator chain a SQL statement may nest.
    #[arg(long, env = "EDGEFLOW_SQL_MAX_DEPTH", default_value_t = DEFAULT_MAX_DEPTH)]
    pub sql_max_depth: usize,
    /// Time an HTTP client has to send its request body.
    #[arg(long, env = "EDGEFLOW_HTTP_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub http_read_timeout: Duration,
    /// On stop, time in-flight HTTP and Postgres requests get before the servers close.
    #[arg(long, env = "EDGEFLOW_SHUTDOWN_GRACE", default_value = "5s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
}

impl SqlLimitArgs {
    /// The per-query bounds these flags set.
    pub fn query_limits(&self) -> QueryLimits {
        QueryLimits {
            memory_bytes: self.sql_memory_limit,
            timeout: self.sql_timeout,
            max_depth: self.sql_max_depth,
        }
    }

    /// The server bounds these flags set.
    pub fn server_limits(&self) -> ServerLimits {
        ServerLimits {
            read_timeout: self.http_read_timeout,
            shutdown_grace: self.shutdown_grace,
        }
    }
}

/// Parses a size: bytes, or a number with `KiB`, `MiB`, `GiB` (or `K`, `M`, `G`, `KB`,
/// `MB`, `GB`, all powers of 1024). Zero is refused: it would refuse every query.
pub fn parse_bytes(text: &str) -> Result<usize, String> {
    const HINT: &str = "expected a size such as 512MiB, 2GiB or 1048576 (bytes)";
    let t = text.trim();
    let digits = t.chars().take_while(char::is_ascii_digit).count();
    let (number, unit) = t.split_at(digits);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(HINT.to_owned()),
    };
    let bytes = number
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(1usize << shift))
        .ok_or_else(|| HINT.to_owned())?;
    if bytes == 0 {
        return Err(format!("{HINT}; zero would refuse every query"));
    }
    Ok(bytes)
}

/// Parses a duration such as `30s` or `500ms` (see [`crate::spec::parse_duration_ms`]);
/// zero is refused.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let ms = crate::spec::parse_duration_ms(text)?;
    if ms <= 0 {
        return Err("expected a positive duration such as 30s or 500ms".to_owned());
    }
    Ok(Duration::from_millis(ms.unsigned_abs()))
}

/// Why a statement was refused before it ran, or stopped while running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a query: SQL here is read-only (DDL, DML, `COPY`, `SET`, ...).
    ReadOnly,
    /// Nested deeper than [`QueryLimits::max_depth`].
    TooDeep,
    /// Needed more memory than [`QueryLimits::memory_bytes`].
    OutOfMemory,
    /// Ran longer than [`QueryLimits::timeout`].
    Timeout,
}

impl Refusal {
    /// The Postgres SQLSTATE of this refusal.
    pub fn sqlstate(self) -> &'static str {
        match self {
            Refusal::ReadOnly => "25006",    // read_only_sql_transaction
            Refusal::TooDeep => "54001",     // statement_too_complex
            Refusal::OutOfMemory => "53200", // out_of_memory
            Refusal::Timeout => "57014",     // query_canceled (as statement_timeout)
        }
    }

    /// The HTTP status of this refusal.
    pub fn http_status(self) -> u16 {
        match self {
            Refusal::ReadOnly => 403,
            Refusal::TooDeep | Refusal::OutOfMemory => 400,
            Refusal::Timeout => 504,
        }
    }
}

/// A size in the units people read (`512 MiB`).
pub fn human_bytes(bytes: usize) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 {
        format!("{value} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_powers_of_1024_and_zero_is_refused() {
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("2 GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes("64k"), Ok(64 << 10));
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("12 parsecs").is_err());
        assert!(parse_bytes("99999999999999999999GiB").is_err());
        assert_eq!(human_bytes(512 << 20), "512 MiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }

    #[test]
    fn durations_parse_and_zero_is_refused() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("30").is_err());
    }
}
