//! The `drift` rule: each key's value (typically a window mean, or a window stddev to watch
//! the variance) compared with the key's own baseline.
//!
//! The baseline is learned from the key's first `baseline_ms` of event time (and at least
//! `min_samples` values): its mean and population standard deviation, then frozen. A trailing
//! baseline would follow a slow drift and never see it; a frozen one sees the level leave its
//! normal band however slowly it moves. A value fires when `|value - mean| > shift * stddev`;
//! the key then stays *drifting* (no further incidents) until a value is back inside the band.
//! One incident per onset, at the event time of the value that crossed.

use std::collections::HashMap;

use arrow::record_batch::RecordBatch;

use super::{Incident, Pending, Rejected, RuleColumns, RuleInfo, RuleKind, numeric};
use crate::error::Result;

/// Settings of a `drift` rule.
#[derive(Clone, Debug, PartialEq)]
pub struct DriftSettings {
    /// The fields identifying a series.
    pub key: Vec<String>,
    /// The watched numeric field.
    pub value: String,
    /// Event time over which a key's baseline is learned, ms.
    pub baseline_ms: i64,
    /// How many baseline standard deviations away a value must be to fire.
    pub shift: f64,
    /// Values needed before the baseline is used.
    pub min_samples: u64,
    /// Whether the key names one device (incidents then count 1 device, else 0).
    pub per_device: bool,
    /// The input's event-time field.
    pub time_field: String,
}

#[derive(Debug)]
enum KeyState {
    /// Still learning: Welford's running mean and sum of squared deviations.
    Learning {
        start: i64,
        n: u64,
        mean: f64,
        m2: f64,
    },
    /// Baseline frozen.
    Watching {
        mean: f64,
        stddev: f64,
        drifting: bool,
    },
}

/// The state of one `drift` rule on one worker (which sees every row of its keys).
#[derive(Debug)]
pub struct Drift {
    info: RuleInfo,
    settings: DriftSettings,
    keys: HashMap<String, KeyState>,
    pending: Pending<f64>,
}

impl Drift {
    /// A rule that has seen nothing.
    pub fn new(info: RuleInfo, settings: DriftSettings) -> Self {
        Drift {
            info,
            settings,
            keys: HashMap::new(),
            pending: Pending::new(),
        }
    }

    /// Buffers rows until the watermark passes them; hands back late and invalid ones.
    pub fn push(&mut self, batch: &RecordBatch) -> Result<Rejected> {
        let columns = RuleColumns::new(batch, &self.settings.time_field, &self.settings.key)?;
        let values = numeric(batch, &self.settings.value)?;
        let (mut late, mut invalid) = (Vec::new(), Vec::new());
        for (row, value) in values.into_iter().enumerate() {
            let (Some(t), Some(v)) = (columns.time(row), value.filter(|v| v.is_finite())) else {
                invalid.push(row as u32);
                continue;
            };
            if t < self.pending.released_until {
                late.push(row as u32);
                continue;
            }
            self.pending.rows.push((t, columns.key(row), v));
        }
        Rejected::from_rows(
            batch,
            late,
            invalid,
            "missing event time or a non-finite value",
        )
    }

    /// Scores every buffered row with time < `watermark`, in event-time order.
    pub fn advance(&mut self, watermark: i64) -> Vec<Incident> {
        let mut out = Vec::new();
        let s = &self.settings;
        for (t, key, v) in self.pending.release(watermark) {
            let state = self.keys.entry(key.clone()).or_insert(KeyState::Learning {
                start: t,
                n: 0,
                mean: 0.0,
                m2: 0.0,
            });
            if let KeyState::Learning { start, n, mean, m2 } = state {
                if t < start.saturating_add(s.baseline_ms) || *n < s.min_samples.max(2) {
                    *n += 1;
                    let delta = v - *mean;
                    *mean += delta / *n as f64;
                    *m2 += delta * (v - *mean);
                    continue;
                }
                *state = KeyState::Watching {
                    mean: *mean,
                    stddev: (*m2 / *n as f64).sqrt(),
                    drifting: false,
                };
            }
            let KeyState::Watching {
                mean,
                stddev,
                drifting,
            } = state
            else {
                continue;
            };
            // A constant baseline still has a band: a relative epsilon of its level.
            let band = s.shift * stddev.max(f64::EPSILON * mean.abs().max(1.0));
            let outside = (v - *mean).abs() > band;
            if outside && !*drifting {
                let sigmas = (v - *mean).abs() / stddev.max(f64::MIN_POSITIVE);
                out.push(Incident {
                    time: t,
                    rule: self.info.name.clone(),
                    kind: RuleKind::Drift,
                    message: format!(
                        "{key}: {} {v:.4} is {sigmas:.1} standard deviations from its baseline {mean:.4} (stddev {stddev:.4}, shift {})",
                        s.value, s.shift
                    ),
                    key,
                    severity: self.info.severity,
                    devices: i64::from(s.per_device),
                    value: Some(v),
                });
            }
            *drifting = outside;
        }
        out
    }
}
