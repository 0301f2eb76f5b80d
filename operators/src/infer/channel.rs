//! One key's readings on their way into the model: consecutive readings cut into windows, and
//! the key's baseline that standardizes them.
//!
//! A window is `window` consecutive non-null readings of one key (device, sensor...). Before
//! the model sees it, every reading becomes `(x - mean) / stddev` against the key's *baseline*:
//! an exponentially weighted mean and variance over the key's earlier windows (weight
//! `max(1/n, 1/16)` for the n-th window, so the first 16 windows are a plain average). The same
//! code standardizes training windows and live ones, so the model always sees the same units.
//! Every window updates the baseline after it was standardized, anomalous or not: the baseline
//! follows the signal's slow wander, and a long anomaly (a level shift) is absorbed after
//! some tens of windows. Keeping flagged windows out instead looked attractive and measured
//! badly: a key whose baseline went stale during an anomaly kept flagging every later window.

/// Weight of a new window in the baseline once 16 windows were seen.
const BASELINE_WEIGHT: f64 = 1.0 / 16.0;

/// A key's exponentially weighted mean and variance of readings.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Baseline {
    windows: u64,
    mean: f64,
    var: f64,
}

impl Baseline {
    /// Windows folded in so far.
    pub(crate) fn windows(&self) -> u64 {
        self.windows
    }

    /// Folds a window in (its mean and population variance).
    pub(crate) fn update(&mut self, values: &[f64]) {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        self.windows += 1;
        let a = (1.0 / self.windows as f64).max(BASELINE_WEIGHT);
        let d = mean - self.mean;
        self.mean += a * d;
        self.var = (1.0 - a) * (self.var + a * d * d) + a * var;
    }

    /// Writes the standardized window into `out` (same length as `values`). A key whose
    /// readings never varied gets a tiny floor instead of a zero deviation.
    pub(crate) fn standardize(&self, values: &[f64], out: &mut [f32]) {
        let floor = 1e-6 * self.mean.abs().max(1.0);
        let sd = self.var.sqrt().max(floor);
        for (o, v) in out.iter_mut().zip(values) {
            *o = ((v - self.mean) / sd) as f32;
        }
    }
}

/// What scoring needs of a full window besides its standardized values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct WindowSummary {
    pub start_ms: i64,
    pub end_ms: i64,
    pub nan_readings: u32,
}

/// A window that is full: its readings, first and last event time, and NaN readings seen.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FullWindow {
    pub values: Vec<f64>,
    pub start_ms: i64,
    pub end_ms: i64,
    pub nan_readings: u32,
}

/// One key's open window and baseline.
#[derive(Debug, Clone, Default)]
pub(crate) struct Channel {
    pub baseline: Baseline,
    values: Vec<f64>,
    start_ms: i64,
    nan_readings: u32,
}

impl FullWindow {
    /// Times and NaN count, without the readings.
    pub(crate) fn summary(&self) -> WindowSummary {
        WindowSummary {
            start_ms: self.start_ms,
            end_ms: self.end_ms,
            nan_readings: self.nan_readings,
        }
    }
}

impl Channel {
    /// Adds a reading; returns the window it completes, if any. NaN readings are counted
    /// against the open window but take no slot in it.
    pub(crate) fn push(&mut self, ts_ms: i64, value: f64, window: usize) -> Option<FullWindow> {
        if self.values.is_empty() && self.nan_readings == 0 {
            self.start_ms = ts_ms;
        }
        if value.is_nan() {
            self.nan_readings += 1;
            return None;
        }
        self.values.push(value);
        if self.values.len() < window {
            return None;
        }
        let full = FullWindow {
            values: std::mem::replace(&mut self.values, Vec::with_capacity(window)),
            start_ms: self.start_ms,
            end_ms: ts_ms,
            nan_readings: std::mem::take(&mut self.nan_readings),
        };
        Some(full)
    }

    /// Drops the open window (after a model with another window length is swapped in).
    pub(crate) fn reset_open_window(&mut self) {
        self.values.clear();
        self.nan_readings = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_is_a_plain_average_for_the_first_windows_then_exponential() {
        let mut b = Baseline::default();
        b.update(&[1.0, 3.0]);
        assert_eq!((b.mean, b.var), (2.0, 1.0));
        b.update(&[5.0, 5.0]);
        // Two windows, weight 1/2: the mean of all four readings and their variance.
        let all = [1.0, 3.0, 5.0, 5.0];
        let mean = all.iter().sum::<f64>() / 4.0;
        let var = all.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / 4.0;
        assert!((b.mean - mean).abs() < 1e-12 && (b.var - var).abs() < 1e-12);
        for _ in 0..100 {
            b.update(&[10.0, 10.0]);
        }
        assert!((b.mean - 10.0).abs() < 1e-2, "{}", b.mean);
        let mut out = [0.0f32; 2];
        b.standardize(&[10.0, 10.0], &mut out);
        assert!(out.iter().all(|z| z.abs() < 1.0), "{out:?}");
    }

    #[test]
    fn channel_cuts_windows_and_counts_nan() {
        let mut c = Channel::default();
        assert_eq!(c.push(1, 1.0, 3), None);
        assert_eq!(c.push(2, f64::NAN, 3), None);
        assert_eq!(c.push(3, 2.0, 3), None);
        let w = c.push(4, 3.0, 3).unwrap();
        assert_eq!(w.values, vec![1.0, 2.0, 3.0]);
        assert_eq!((w.start_ms, w.end_ms, w.nan_readings), (1, 4, 1));
        assert_eq!(c.push(5, 4.0, 3), None);
        c.reset_open_window();
        assert_eq!(c.push(6, 5.0, 2), None);
        assert_eq!(c.push(7, 6.0, 2).unwrap().start_ms, 6);
    }
}
