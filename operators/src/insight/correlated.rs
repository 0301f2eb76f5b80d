//! The `correlated` rule: k or more distinct devices of one group (site, line...) with
//! exception rows in the same tumbling event-time window raise one incident per group and
//! window, when the watermark passes the window's end.

use std::collections::{BTreeMap, BTreeSet};

use arrow::record_batch::RecordBatch;

use super::{Incident, Rejected, RuleColumns, RuleInfo, RuleKind, cell_text, column};
use crate::error::Result;

/// Settings of a `correlated` rule.
#[derive(Clone, Debug, PartialEq)]
pub struct CorrelatedSettings {
    /// The group fields (empty: the whole fleet is one group).
    pub by: Vec<String>,
    /// The field naming a device.
    pub device: String,
    /// Distinct devices needed (k).
    pub devices: u32,
    /// Window length, ms; windows are aligned to the epoch.
    pub within_ms: i64,
    /// The input's event-time field.
    pub time_field: String,
}

/// Per group: the distinct devices with exceptions and the number of exception rows.
type Groups = BTreeMap<String, (BTreeSet<String>, u64)>;

/// The state of one `correlated` rule on one worker (which sees every row of its groups).
#[derive(Debug)]
pub struct Correlated {
    info: RuleInfo,
    settings: CorrelatedSettings,
    /// Open windows by start.
    windows: BTreeMap<i64, Groups>,
    /// Windows ending at or before this are closed.
    closed_until: i64,
}

impl Correlated {
    /// A rule with no windows open.
    pub fn new(info: RuleInfo, settings: CorrelatedSettings) -> Self {
        Correlated {
            info,
            settings,
            windows: BTreeMap::new(),
            closed_until: i64::MIN,
        }
    }

    /// Adds exception rows; hands back late and invalid ones.
    pub fn push(&mut self, batch: &RecordBatch) -> Result<Rejected> {
        let columns = RuleColumns::new(batch, &self.settings.time_field, &self.settings.by)?;
        let device = column(batch, &self.settings.device)?;
        let within = self.settings.within_ms;
        let (mut late, mut invalid) = (Vec::new(), Vec::new());
        for row in 0..batch.num_rows() {
            let Some(t) = columns.time(row) else {
                invalid.push(row as u32);
                continue;
            };
            if device.is_null(row) {
                invalid.push(row as u32);
                continue;
            }
            let start = t.div_euclid(within) * within;
            if start.saturating_add(within) <= self.closed_until {
                late.push(row as u32);
                continue;
            }
            let group = self
                .windows
                .entry(start)
                .or_default()
                .entry(columns.key(row))
                .or_default();
            group.0.insert(cell_text(device, row));
            group.1 += 1;
        }
        Rejected::from_rows(batch, late, invalid, "missing event time or device")
    }

    /// Closes the windows that end at or before `watermark`; one incident per group with at
    /// least `devices` distinct devices, at the window's end.
    pub fn advance(&mut self, watermark: i64) -> Vec<Incident> {
        if watermark <= self.closed_until {
            return Vec::new();
        }
        self.closed_until = watermark;
        let within = self.settings.within_ms;
        let mut out = Vec::new();
        while let Some(entry) = self.windows.first_entry() {
            let start = *entry.key();
            let end = start.saturating_add(within);
            if end > watermark {
                break;
            }
            for (group, (devices, rows)) in entry.remove() {
                if devices.len() < self.settings.devices as usize {
                    continue;
                }
                let names: Vec<&str> = devices.iter().map(String::as_str).collect();
                let scope = if group.is_empty() {
                    "the fleet".to_owned()
                } else {
                    group.clone()
                };
                out.push(Incident {
                    time: end,
                    rule: self.info.name.clone(),
                    kind: RuleKind::Correlated,
                    key: group,
                    severity: self.info.severity,
                    devices: devices.len() as i64,
                    value: Some(rows as f64),
                    message: format!(
                        "{} devices of {scope} had exceptions within {} ms ({rows} exceptions): {}",
                        devices.len(),
                        within,
                        names.join(", ")
                    ),
                });
            }
        }
        out
    }
}
