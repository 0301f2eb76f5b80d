//! The generator's signal model: one [`Channel`] per (device, sensor) with its own seeded
//! random state, base level, periodic and slow components, noise, site drift and anomaly
//! episodes of each [`AnomalyShape`].

use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use rand_xoshiro::Xoshiro256PlusPlus;

use super::GeneratorOptions;

/// The shape of an anomaly episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnomalyShape {
    /// One reading 8..15 sigma above normal.
    Spike,
    /// +5 sigma for 200..2000 readings.
    LevelShift,
    /// The sensor repeats its last value for 100..1000 readings.
    Stuck,
    /// A linear ramp up to 8..12 sigma over 200..2000 readings.
    Drift,
}

impl AnomalyShape {
    /// Every shape, in declaration order.
    pub const ALL: [AnomalyShape; 4] = [
        AnomalyShape::Spike,
        AnomalyShape::LevelShift,
        AnomalyShape::Stuck,
        AnomalyShape::Drift,
    ];

    /// The name used in pipeline files and in the ground-truth column.
    pub fn name(self) -> &'static str {
        match self {
            AnomalyShape::Spike => "spike",
            AnomalyShape::LevelShift => "level_shift",
            AnomalyShape::Stuck => "stuck",
            AnomalyShape::Drift => "drift",
        }
    }

    /// Parses a shape name.
    pub fn from_name(name: &str) -> Option<AnomalyShape> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// log2 of the sine table's size.
pub(super) const SIN_BITS: u32 = 10;

/// One (device, sensor) signal and its random state.
#[derive(Debug, Clone)]
pub(super) struct Channel {
    pub(super) rng: Xoshiro256PlusPlus,
    base: f64,
    sigma: f64,
    amp: f64,
    phase: u32,
    phase_step: u32,
    slow_amp: f64,
    slow_phase: u32,
    slow_step: u32,
    site_drift: f64,
    site_drift_step: f64,
    /// Readings before the next episode starts.
    until_anomaly: u64,
    /// The current episode, if `remaining > 0`.
    shape: AnomalyShape,
    remaining: u32,
    /// Shape parameter: shift, or ramp step.
    param: f64,
    /// Accumulated ramp of a drift episode.
    ramp: f64,
    last: f64,
}

/// Per-sensor levels: (base, spread of the base across devices, noise sigma).
fn profile(sensor: &str) -> (f64, f64, f64) {
    match sensor {
        "vibration" => (1.0, 0.2, 0.05),
        "temperature" => (60.0, 5.0, 0.5),
        "pressure" => (101.3, 1.0, 0.1),
        "humidity" => (45.0, 10.0, 1.0),
        "current" => (10.0, 2.0, 0.2),
        _ => (100.0, 10.0, 1.0),
    }
}

/// splitmix64: decorrelates the seeds of neighbouring channels.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A phase increment per reading for a period of `period_ms`, as a fraction of 2^32.
fn phase_step(interval_ms: f64, period_ms: f64) -> u32 {
    ((interval_ms / period_ms).fract() * 4_294_967_296.0) as u32
}

/// Readings until the next episode: geometric with success probability `p`.
fn geometric(rng: &mut Xoshiro256PlusPlus, p: f64) -> u64 {
    if p <= 0.0 {
        return u64::MAX;
    }
    if p >= 1.0 {
        return 0;
    }
    // u in (0, 1]: ln(u) is finite and <= 0.
    let u = 1.0 - rng.random::<f64>();
    let n = u.ln() / (1.0 - p).ln();
    if n >= u64::MAX as f64 {
        u64::MAX
    } else {
        n as u64
    }
}

impl Channel {
    pub(super) fn new(
        opts: &GeneratorOptions,
        device: u32,
        sensor: usize,
        interval_ms: f64,
    ) -> Channel {
        let seed = mix(mix(opts.seed ^ mix(u64::from(device))) ^ sensor as u64);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let (base, spread, sigma) = profile(&opts.sensors[sensor]);
        let base = base + spread * (2.0 * rng.random::<f64>() - 1.0);
        let amp = sigma * (1.0 + 2.0 * rng.random::<f64>());
        let period_ms = 60_000.0 + 240_000.0 * rng.random::<f64>();
        let slow_amp = sigma * (0.5 + 1.5 * rng.random::<f64>());
        let slow_period_ms = 3_600_000.0 * (1.0 + 2.0 * rng.random::<f64>());
        let phase = rng.random::<u32>();
        let slow_phase = rng.random::<u32>();
        let site = device % opts.sites;
        let site_drift_step = if opts.drift_sites.contains(&site) {
            opts.drift_per_minute * sigma * interval_ms / 60_000.0
        } else {
            0.0
        };
        let until_anomaly = geometric(&mut rng, opts.anomaly_rate);
        Channel {
            rng,
            base,
            sigma,
            amp,
            phase,
            phase_step: phase_step(interval_ms, period_ms),
            slow_amp,
            slow_phase,
            slow_step: phase_step(interval_ms, slow_period_ms),
            site_drift: 0.0,
            site_drift_step,
            until_anomaly,
            shape: AnomalyShape::Spike,
            remaining: 0,
            param: 0.0,
            ramp: 0.0,
            last: base,
        }
    }

    /// The next reading's value and its anomaly label.
    #[inline]
    pub(super) fn next(
        &mut self,
        sin: &[f64],
        shapes: &[AnomalyShape],
        rate: f64,
    ) -> (f64, Option<AnomalyShape>) {
        let shift = 32 - SIN_BITS;
        let noise: f64 = StandardNormal.sample(&mut self.rng);
        let periodic = self.amp * sin[(self.phase >> shift) as usize]
            + self.slow_amp * sin[(self.slow_phase >> shift) as usize];
        self.phase = self.phase.wrapping_add(self.phase_step);
        self.slow_phase = self.slow_phase.wrapping_add(self.slow_step);
        self.site_drift += self.site_drift_step;
        let normal = self.base + periodic + self.site_drift + self.sigma * noise;

        if self.remaining == 0 {
            if self.until_anomaly > 0 {
                self.until_anomaly -= 1;
                self.last = normal;
                return (normal, None);
            }
            self.start_episode(shapes);
        }
        let value = match self.shape {
            AnomalyShape::Spike | AnomalyShape::LevelShift => normal + self.param,
            AnomalyShape::Stuck => self.last,
            AnomalyShape::Drift => {
                self.ramp += self.param;
                normal + self.ramp
            }
        };
        self.remaining -= 1;
        if self.remaining == 0 {
            self.until_anomaly = geometric(&mut self.rng, rate);
        }
        self.last = value;
        (value, Some(self.shape))
    }

    fn start_episode(&mut self, shapes: &[AnomalyShape]) {
        // `shapes` is non-empty whenever episodes can start (checked by `Generator::new`).
        let shape = shapes[self.rng.random_range(0..shapes.len())];
        let sigma = self.sigma;
        let (remaining, param) = match shape {
            AnomalyShape::Spike => (1, sigma * self.rng.random_range(8.0..15.0)),
            AnomalyShape::LevelShift => (self.rng.random_range(200..=2000), 5.0 * sigma),
            AnomalyShape::Stuck => (self.rng.random_range(100..=1000), 0.0),
            AnomalyShape::Drift => {
                let len: u32 = self.rng.random_range(200..=2000);
                (
                    len,
                    sigma * self.rng.random_range(8.0..12.0) / f64::from(len),
                )
            }
        };
        self.shape = shape;
        self.remaining = remaining;
        self.param = param;
        self.ramp = 0.0;
    }
}
