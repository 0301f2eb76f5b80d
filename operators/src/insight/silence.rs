//! The `silence` rule: a key seen before and then not seen for `after_ms` of event time raises
//! one incident, at `last seen + after`, and is re-armed when it reports again.
//!
//! Event time, never the wall clock: the deadline counts once the watermark has passed it
//! *and* the input (any key, on any worker: the caller feeds that in with
//! [`Silence::observe`]) holds a row later than it. The second condition is what makes the end
//! of the input harmless: when a finite input ends, its watermark jumps to the end of time,
//! and only the keys that fell silent while others kept reporting are incidents.

use std::collections::HashMap;

use arrow::record_batch::RecordBatch;

use super::{Incident, Pending, Rejected, RuleColumns, RuleInfo, RuleKind};
use crate::error::Result;

/// Settings of a `silence` rule.
#[derive(Clone, Debug, PartialEq)]
pub struct SilenceSettings {
    /// The fields identifying a reporter (a device, an edge...).
    pub key: Vec<String>,
    /// Event time without a row after which the key is silent, ms.
    pub after_ms: i64,
    /// Whether the key names one device (incidents then count 1 device, else 0).
    pub per_device: bool,
    /// The input's event-time field.
    pub time_field: String,
}

#[derive(Debug)]
struct KeyState {
    last_seen: i64,
    /// An incident was raised for the current silence.
    raised: bool,
}

/// The state of one `silence` rule on one worker (which sees every row of its keys).
#[derive(Debug)]
pub struct Silence {
    info: RuleInfo,
    settings: SilenceSettings,
    keys: HashMap<String, KeyState>,
    pending: Pending<()>,
    /// The latest event time of any row of the whole input seen so far.
    latest: i64,
}

impl Silence {
    /// A rule that has seen nothing.
    pub fn new(info: RuleInfo, settings: SilenceSettings) -> Self {
        Silence {
            info,
            settings,
            keys: HashMap::new(),
            pending: Pending::new(),
            latest: i64::MIN,
        }
    }

    /// The latest event time of a batch (to broadcast to every worker's rule).
    pub fn latest_time(batch: &RecordBatch, time_field: &str) -> Option<i64> {
        let columns = RuleColumns::new(batch, time_field, &[]).ok()?;
        arrow::compute::max(columns.time)
    }

    /// Records that the input (anywhere) holds a row at `time`.
    pub fn observe(&mut self, time: i64) {
        self.latest = self.latest.max(time);
    }

    /// Buffers rows until the watermark passes them; hands back late and invalid ones.
    pub fn push(&mut self, batch: &RecordBatch) -> Result<Rejected> {
        let columns = RuleColumns::new(batch, &self.settings.time_field, &self.settings.key)?;
        let (mut late, mut invalid) = (Vec::new(), Vec::new());
        for row in 0..batch.num_rows() {
            let Some(t) = columns.time(row) else {
                invalid.push(row as u32);
                continue;
            };
            if t < self.pending.released_until {
                late.push(row as u32);
                continue;
            }
            self.latest = self.latest.max(t);
            self.pending.rows.push((t, columns.key(row), ()));
        }
        Rejected::from_rows(batch, late, invalid, "missing event time")
    }

    /// Replays buffered rows with time < `watermark` and raises the silences whose deadline
    /// the watermark and the input have passed.
    pub fn advance(&mut self, watermark: i64) -> Vec<Incident> {
        let mut out = Vec::new();
        let after = self.settings.after_ms;
        for (t, key, ()) in self.pending.release(watermark) {
            match self.keys.get_mut(&key) {
                Some(state) => {
                    let deadline = state.last_seen.saturating_add(after);
                    if !state.raised && t > deadline {
                        out.push(silence_incident(
                            &self.info,
                            &self.settings,
                            &key,
                            state.last_seen,
                        ));
                    }
                    state.last_seen = state.last_seen.max(t);
                    state.raised = false;
                }
                None => {
                    self.keys.insert(
                        key,
                        KeyState {
                            last_seen: t,
                            raised: false,
                        },
                    );
                }
            }
        }
        let horizon = watermark.min(self.latest);
        let mut due: Vec<(String, i64)> = Vec::new();
        for (key, state) in &mut self.keys {
            if !state.raised && state.last_seen.saturating_add(after) < horizon {
                state.raised = true;
                due.push((key.clone(), state.last_seen));
            }
        }
        for (key, last_seen) in due {
            out.push(silence_incident(
                &self.info,
                &self.settings,
                &key,
                last_seen,
            ));
        }
        out
    }

    /// The earliest deadline the watermark has passed but the input has not yet shown to be
    /// a silence: incidents may still be raised at that time, so a caller holds its output
    /// there.
    pub fn earliest_undecided(&self, watermark: i64) -> Option<i64> {
        self.keys
            .values()
            .filter(|s| !s.raised)
            .map(|s| s.last_seen.saturating_add(self.settings.after_ms))
            .filter(|d| *d < watermark)
            .min()
    }
}

fn silence_incident(
    info: &RuleInfo,
    settings: &SilenceSettings,
    key: &str,
    last_seen: i64,
) -> Incident {
    let after = settings.after_ms;
    Incident {
        time: last_seen.saturating_add(after),
        rule: info.name.clone(),
        kind: RuleKind::Silence,
        key: key.to_owned(),
        severity: info.severity,
        devices: i64::from(settings.per_device),
        value: Some(after as f64),
        message: format!("{key}: nothing for {after} ms after its row at {last_seen} ms"),
    }
}
