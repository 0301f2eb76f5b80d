//! What a window aggregation computes: the aggregate functions ([`AggregateFn`]), an output
//! column ([`AggregateSpec`]) and the window geometry ([`WindowSpec`]).

use crate::error::{OperatorError, Result};
use crate::schema::FieldType;

/// One aggregate function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AggregateFn {
    /// Number of non-null values.
    Count,
    /// Sum of the values (i64 wraps on overflow).
    Sum,
    /// Smallest value (NaN ignored).
    Min,
    /// Largest value (NaN ignored).
    Max,
    /// Arithmetic mean, as f64.
    Mean,
    /// Sample standard deviation (n - 1), null below 2 values.
    Stddev,
    /// Value with the smallest timestamp (ties: first arrived).
    First,
    /// Value with the largest timestamp (ties: last arrived).
    Last,
    /// Exact median (linear interpolation).
    P50,
    /// Exact 95th percentile (linear interpolation).
    P95,
    /// Exact 99th percentile (linear interpolation).
    P99,
}

impl AggregateFn {
    /// Every aggregate function, in the order the docs list them.
    pub const ALL: [AggregateFn; 11] = [
        AggregateFn::Count,
        AggregateFn::Sum,
        AggregateFn::Min,
        AggregateFn::Max,
        AggregateFn::Mean,
        AggregateFn::Stddev,
        AggregateFn::First,
        AggregateFn::Last,
        AggregateFn::P50,
        AggregateFn::P95,
        AggregateFn::P99,
    ];

    /// The name used in pipeline files.
    pub fn name(self) -> &'static str {
        match self {
            AggregateFn::Count => "count",
            AggregateFn::Sum => "sum",
            AggregateFn::Min => "min",
            AggregateFn::Max => "max",
            AggregateFn::Mean => "mean",
            AggregateFn::Stddev => "stddev",
            AggregateFn::First => "first",
            AggregateFn::Last => "last",
            AggregateFn::P50 => "p50",
            AggregateFn::P95 => "p95",
            AggregateFn::P99 => "p99",
        }
    }

    /// Parses a name as written in pipeline files.
    pub fn from_name(name: &str) -> Option<AggregateFn> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The type of the output column for an input field of type `input`: count is i64;
    /// sum/min/max/first/last keep the input type; mean/stddev/percentiles are f64.
    pub fn output_type(self, input: FieldType) -> FieldType {
        match self {
            AggregateFn::Count => FieldType::I64,
            AggregateFn::Sum
            | AggregateFn::Min
            | AggregateFn::Max
            | AggregateFn::First
            | AggregateFn::Last => input,
            AggregateFn::Mean
            | AggregateFn::Stddev
            | AggregateFn::P50
            | AggregateFn::P95
            | AggregateFn::P99 => FieldType::F64,
        }
    }

    /// The quantile of a percentile function.
    pub(super) fn quantile(self) -> Option<f64> {
        match self {
            AggregateFn::P50 => Some(0.5),
            AggregateFn::P95 => Some(0.95),
            AggregateFn::P99 => Some(0.99),
            _ => None,
        }
    }
}

/// One output column: `output = func(field)`.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregateSpec {
    /// The function.
    pub func: AggregateFn,
    /// The input field it reads.
    pub field: String,
    /// The name of the output column.
    pub output: String,
}

/// Window geometry. Tumbling when `slide_ms == size_ms`, hopping (sliding) when
/// `slide_ms < size_ms`; `size_ms` must be a multiple of `slide_ms`. Windows are
/// `[start, start + size_ms)` with starts at multiples of `slide_ms` from the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    /// Window length in ms.
    pub size_ms: i64,
    /// Distance between window starts in ms.
    pub slide_ms: i64,
    /// A window stays open until the watermark reaches `end + allowed_lateness_ms`.
    pub allowed_lateness_ms: i64,
}

impl WindowSpec {
    /// Tumbling windows of `size_ms` with no allowed lateness.
    pub fn tumbling(size_ms: i64) -> Self {
        WindowSpec {
            size_ms,
            slide_ms: size_ms,
            allowed_lateness_ms: 0,
        }
    }

    pub(super) fn validate(&self) -> Result<()> {
        let err = |m: String| Err(OperatorError::User(m));
        if self.size_ms <= 0 {
            return err(format!("window size must be > 0 ms, got {}", self.size_ms));
        }
        if self.slide_ms <= 0 || self.slide_ms > self.size_ms {
            return err(format!(
                "window slide must be > 0 ms and at most the size ({} ms), got {}",
                self.size_ms, self.slide_ms
            ));
        }
        if self.size_ms % self.slide_ms != 0 {
            return err(format!(
                "window size ({} ms) must be a multiple of the slide ({} ms)",
                self.size_ms, self.slide_ms
            ));
        }
        if self.allowed_lateness_ms < 0 {
            return err(format!(
                "allowed lateness must be >= 0 ms, got {}",
                self.allowed_lateness_ms
            ));
        }
        Ok(())
    }
}
