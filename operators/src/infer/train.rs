//! Training the autoencoder on normal data with burn's autodiff and Adam.
//!
//! [`TrainingSet`] cuts readings into standardized windows exactly as the running operator does
//! (see [`super::channel`]); [`train`] fits the network to reconstruct them, then calibrates the
//! score on the same windows: `e_ref` is their median reconstruction error, and the default
//! threshold is a margin above the chosen quantile of their scores. Everything random (initial
//! weights, batch order) derives from the seed, so the same data and settings give the same
//! model file, byte for byte.

use arrow::array::RecordBatch;
use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Tensor, TensorData};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_xoshiro::Xoshiro256PlusPlus;

use super::KeyedReadings;
use super::channel::Channel;
use super::model::{AnomalyModel, Autoencoder, Calibration, ModelShape, cpu};
use crate::error::{OperatorError, Result};
use crate::schema::EventSchema;

/// How to train.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// The network's layer sizes.
    pub shape: ModelShape,
    /// Passes over the training windows.
    pub epochs: usize,
    /// Windows per gradient step.
    pub batch_size: usize,
    /// Adam's learning rate.
    pub learning_rate: f64,
    /// Seeds the initial weights and the batch order.
    pub seed: u64,
    /// Windows per key that only build the baseline.
    pub warmup_windows: u32,
    /// The default threshold is `margin` times this quantile of the training scores.
    pub threshold_quantile: f64,
    /// See `threshold_quantile`.
    pub threshold_margin: f64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            shape: ModelShape {
                window: 32,
                hidden: 16,
                latent: 4,
            },
            epochs: 20,
            batch_size: 64,
            learning_rate: 3e-3,
            seed: 7,
            warmup_windows: 16,
            threshold_quantile: 0.999,
            threshold_margin: 1.2,
        }
    }
}

/// What training did, for the user.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainReport {
    /// Training windows.
    pub windows: usize,
    /// Distinct keys they came from.
    pub keys: usize,
    /// Mean reconstruction error over the training windows after each epoch.
    pub epoch_loss: Vec<f64>,
}

/// Standardized training windows, cut from batches of readings.
#[derive(Debug)]
pub struct TrainingSet {
    readings: KeyedReadings,
    window: usize,
    warmup_windows: u32,
    channels: Vec<Channel>,
    windows: Vec<f32>,
}

impl TrainingSet {
    /// Windows of `config.shape.window` readings of `value` per `key`, in the order of the
    /// input's `time_field`.
    pub fn new(
        input: &EventSchema,
        key: &[String],
        value: &str,
        time_field: &str,
        config: &TrainConfig,
    ) -> Result<Self> {
        Ok(TrainingSet {
            readings: KeyedReadings::new(input, key, value, time_field)?,
            window: config.shape.window,
            warmup_windows: config.warmup_windows,
            channels: Vec::new(),
            windows: Vec::new(),
        })
    }

    /// Adds a batch of readings (in event-time order per key).
    pub fn push(&mut self, batch: &RecordBatch) -> Result<()> {
        let rows = self.readings.read(batch)?;
        self.channels
            .resize_with(self.readings.keys(), Channel::default);
        let mut z = vec![0.0f32; self.window];
        for r in rows {
            let channel = &mut self.channels[r.key as usize];
            let Some(full) = channel.push(r.ts_ms, r.value, self.window) else {
                continue;
            };
            if channel.baseline.windows() >= u64::from(self.warmup_windows) {
                channel.baseline.standardize(&full.values, &mut z);
                self.windows.extend_from_slice(&z);
            }
            channel.baseline.update(&full.values);
        }
        Ok(())
    }

    /// Windows collected so far.
    pub fn len(&self) -> usize {
        self.windows.len() / self.window
    }

    /// Whether no window was collected.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// Keys seen.
    pub fn keys(&self) -> usize {
        self.readings.keys()
    }
}

/// Trains a model on `set`. Needs at least `2 * batch_size` windows.
pub fn train(set: &TrainingSet, config: &TrainConfig) -> Result<(AnomalyModel, TrainReport)> {
    let user = |m: String| Err(OperatorError::User(m));
    let ModelShape {
        window,
        hidden,
        latent,
    } = config.shape;
    if window < 2 || hidden == 0 || latent == 0 || latent >= window {
        return user(format!(
            "layer sizes window {window}, hidden {hidden}, latent {latent}: need window >= 2 \
             and 0 < latent < window, hidden > 0"
        ));
    }
    if config.epochs == 0
        || config.batch_size == 0
        || config.learning_rate.is_nan()
        || config.learning_rate <= 0.0
    {
        return user("epochs, batch size and learning rate must be > 0".into());
    }
    if !(0.5..1.0).contains(&config.threshold_quantile)
        || config.threshold_margin.is_nan()
        || config.threshold_margin < 1.0
    {
        return user("the threshold quantile must be in [0.5, 1) and the margin >= 1".into());
    }
    let n = set.len();
    if n < 2 * config.batch_size {
        return user(format!(
            "{n} training windows from {} keys is too few: need at least {} (2 batches); give \
             more readings per key (each window takes {window} readings of one key, and the \
             first {} windows of every key only build its baseline)",
            set.keys(),
            2 * config.batch_size,
            config.warmup_windows
        ));
    }

    let device = cpu().autodiff();
    let mut network = Autoencoder::init(config.shape, config.seed, &device);
    let mut optimizer = AdamConfig::new().init();
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(config.seed.wrapping_add(1));
    let mut epoch_loss = Vec::with_capacity(config.epochs);
    for _ in 0..config.epochs {
        order.shuffle(&mut rng);
        let mut loss_sum = 0.0;
        for batch in order.chunks(config.batch_size) {
            let rows: Vec<f32> = batch
                .iter()
                .flat_map(|&i| &set.windows[i * window..(i + 1) * window])
                .copied()
                .collect();
            let x = Tensor::<2>::from_data(TensorData::new(rows, [batch.len(), window]), &device);
            let loss = network.errors(x).mean();
            loss_sum += f64::from(loss.clone().into_scalar::<f32>()) * batch.len() as f64;
            let grads = GradientsParams::from_grads(loss.backward(), &network);
            network = optimizer.step(config.learning_rate, network, grads);
        }
        epoch_loss.push(loss_sum / n as f64);
    }

    let plain = Autoencoder::init(config.shape, 0, &cpu())
        .try_load_record(network.valid().into_record())
        .map_err(|e| OperatorError::Internal(format!("moving the trained model: {e}")))?;
    let mut model = AnomalyModel::new(
        config.shape,
        Calibration {
            reference_error: 1.0,
            threshold: 1.0,
            warmup_windows: config.warmup_windows,
        },
        plain,
    );
    let mut errors: Vec<f64> = model
        .errors(&set.windows, true)?
        .into_iter()
        .map(f64::from)
        .collect();
    errors.sort_by(f64::total_cmp);
    let reference_error = errors[n / 2].max(f64::MIN_POSITIVE);
    let mut scores: Vec<f64> = errors
        .iter()
        .map(|e| (e.max(f64::MIN_POSITIVE) / reference_error).ln().abs())
        .collect();
    scores.sort_by(f64::total_cmp);
    let q = ((config.threshold_quantile * n as f64).ceil() as usize).clamp(1, n) - 1;
    model = AnomalyModel::new(
        config.shape,
        Calibration {
            reference_error,
            threshold: (scores[q] * config.threshold_margin).max(1e-3),
            warmup_windows: config.warmup_windows,
        },
        model.into_network(),
    );
    Ok((
        model,
        TrainReport {
            windows: n,
            keys: set.keys(),
            epoch_loss,
        },
    ))
}
