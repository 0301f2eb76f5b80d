//! The anomaly model: a small dense autoencoder in burn, its file format and batched scoring.
//!
//! The network maps a standardized window of `window` readings through
//! `window -> hidden -> latent -> hidden -> window` linear layers, with ReLU after the hidden
//! layers and tanh after the bottleneck. The bounded bottleneck matters: a ReLU network
//! extrapolates linearly and would happily reconstruct a window shifted far beyond anything
//! it saw in training (a level shift); a tanh code can only describe what training covered. A
//! window's reconstruction error `e` is the mean squared difference between the window and its
//! reconstruction; the anomaly score is `|ln(e / e_ref)|`, where `e_ref` is the median error on
//! the training data. Two-sided on purpose: a window much harder to reconstruct than normal
//! (spike, level shift, drift) scores high, and so does one much *easier* than normal, which is
//! what a flat, stuck signal is for a model that learned to remove sensor noise.
//!
//! The file is burn's own record format (burnpack, written by [`Module::into_record`]) with
//! edgeflow's settings in the burnpack metadata (`edgeflow.*` keys): the layer sizes, `e_ref`,
//! the default threshold and the warm-up, so a model file is self-describing. Loading checks the
//! format, the metadata and every tensor's shape, and reports what is wrong.

use std::collections::BTreeMap;
use std::fmt;

use burn::module::{Module, Param, ParamId};
use burn::nn::Linear;
use burn::store::ModuleRecord;
use burn::tensor::activation::{relu, tanh};
use burn::tensor::{Bytes, Device, Tensor, TensorData};
use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;

use crate::error::{OperatorError, Result};
use crate::kernels::{Activation, Dense, Mlp, WeightLayout};

/// The value of the `edgeflow.format` metadata key of a model file.
pub const FORMAT: &str = "edgeflow-autoencoder-v1";

/// The largest model file (or decoded `weights` of a control record) edgeflow reads: 64 MiB,
/// about 16 M f32 parameters (the models `edgeflow train` writes are a few KiB).
pub const MAX_MODEL_BYTES: u64 = 64 << 20;

/// Windows scored per burn forward pass (and per parallel task).
const CHUNK_WINDOWS: usize = 512;

/// The network's shape and the calibration that turns its error into a score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelShape {
    /// Readings per window (the input and output width).
    pub window: usize,
    /// Width of the two hidden layers.
    pub hidden: usize,
    /// Width of the bottleneck.
    pub latent: usize,
}

/// What a model file carries besides the weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calibration {
    /// Median reconstruction error over the training windows.
    pub reference_error: f64,
    /// The default exception threshold on the score.
    pub threshold: f64,
    /// Windows per key that only build the key's baseline before scoring starts.
    pub warmup_windows: u32,
}

/// The burn module: four linear layers.
#[derive(Module, Debug)]
pub(crate) struct Autoencoder {
    encode: Linear,
    bottleneck: Linear,
    expand: Linear,
    decode: Linear,
}

impl Autoencoder {
    /// Fresh weights on `device`, drawn like burn's default initializer (uniform in
    /// `+-sqrt(1 / inputs)`) but from `seed` alone, and fixed parameter ids: burn draws both
    /// from process-wide generators, which would make a model depend on what else the process
    /// did. So the same seed always gives the same network and the same file.
    pub(crate) fn init(shape: ModelShape, seed: u64, device: &Device) -> Self {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut next_id = 0u64;
        let mut layer = |inputs: usize, outputs: usize| {
            let k = (1.0 / inputs as f64).sqrt() as f32;
            let mut draw =
                |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-k..k)).collect() };
            let weight = Tensor::<2>::from_data(
                TensorData::new(draw(inputs * outputs), [inputs, outputs]),
                device,
            );
            let bias = Tensor::<1>::from_data(TensorData::new(draw(outputs), [outputs]), device);
            let mut weight = Param::from_tensor(weight);
            let mut bias = Param::from_tensor(bias);
            weight.id = ParamId::from(next_id);
            bias.id = ParamId::from(next_id + 1);
            next_id += 2;
            Linear {
                weight,
                bias: Some(bias),
            }
        };
        Autoencoder {
            encode: layer(shape.window, shape.hidden),
            bottleneck: layer(shape.hidden, shape.latent),
            expand: layer(shape.latent, shape.hidden),
            decode: layer(shape.hidden, shape.window),
        }
    }

    /// Reconstructions of `[n, window]` inputs.
    pub(crate) fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let h = relu(self.encode.forward(x));
        let z = tanh(self.bottleneck.forward(h));
        let h = relu(self.expand.forward(z));
        self.decode.forward(h)
    }

    /// Per-row mean squared reconstruction error of `[n, window]` inputs, as `[n, 1]`.
    pub(crate) fn errors(&self, x: Tensor<2>) -> Tensor<2> {
        let y = self.forward(x.clone());
        (y - x).square().mean_dim(1)
    }
}

/// The CPU device inference and training run on: burn's ndarray backend.
pub(crate) fn cpu() -> Device {
    // The ndarray backend is what the project standardised on; burn 0.22 deprecates it in
    // favour of `flex`, which can replace it here once it is the measured better choice.
    #[allow(deprecated)]
    Device::ndarray()
}

/// A loaded, ready-to-score autoencoder.
pub struct AnomalyModel {
    shape: ModelShape,
    calibration: Calibration,
    network: Autoencoder,
}

impl fmt::Debug for AnomalyModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnomalyModel")
            .field("shape", &self.shape)
            .field("calibration", &self.calibration)
            .finish_non_exhaustive()
    }
}

impl AnomalyModel {
    pub(crate) fn new(shape: ModelShape, calibration: Calibration, network: Autoencoder) -> Self {
        AnomalyModel {
            shape,
            calibration,
            network,
        }
    }

    pub(crate) fn into_network(self) -> Autoencoder {
        self.network
    }

    /// The layer sizes.
    pub fn shape(&self) -> ModelShape {
        self.shape
    }

    /// The calibration stored with the weights.
    pub fn calibration(&self) -> Calibration {
        self.calibration
    }

    /// Number of trained parameters.
    pub fn parameters(&self) -> usize {
        self.network.num_params()
    }

    /// Reads a model file's bytes. Every problem (not a burn record, not an edgeflow model,
    /// missing or bad metadata, a tensor of the wrong shape) is an error that says which.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = |m: String| OperatorError::User(format!("not a valid edgeflow model: {m}"));
        if bytes.len() as u64 > MAX_MODEL_BYTES {
            return Err(bad(format!(
                "it is {} bytes, larger than the {MAX_MODEL_BYTES}-byte bound",
                bytes.len()
            )));
        }
        let bytes = Bytes::from_bytes_vec(bytes.to_vec());
        let reader = burn_pack::Reader::from_bytes(bytes.clone())
            .map_err(|e| bad(format!("cannot read it as a burn record ({e})")))?;
        let meta = reader.metadata();
        match meta.get("edgeflow.format").map(String::as_str) {
            Some(FORMAT) => {}
            Some(other) => {
                return Err(bad(format!(
                    "its format is \"{other}\", this edgeflow reads \"{FORMAT}\""
                )));
            }
            None => {
                return Err(bad(
                    "it is a burn record without edgeflow metadata (train one with `edgeflow train`)"
                        .into(),
                ));
            }
        }
        let get = |key: &str| -> Result<f64> {
            let text = meta
                .get(&format!("edgeflow.{key}"))
                .ok_or_else(|| bad(format!("metadata edgeflow.{key} is missing")))?;
            text.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| {
                    bad(format!(
                        "metadata edgeflow.{key} = \"{text}\" is not a number"
                    ))
                })
        };
        let size = |key: &str| -> Result<usize> {
            let v = get(key)?;
            if (1.0..=65_536.0).contains(&v) && v.fract() == 0.0 {
                Ok(v as usize)
            } else {
                Err(bad(format!(
                    "metadata edgeflow.{key} = {v} is not a layer size"
                )))
            }
        };
        let shape = ModelShape {
            window: size("window")?,
            hidden: size("hidden")?,
            latent: size("latent")?,
        };
        let calibration = Calibration {
            reference_error: get("reference_error")?,
            threshold: get("threshold")?,
            warmup_windows: get("warmup_windows")? as u32,
        };
        if calibration.reference_error <= 0.0 || calibration.threshold <= 0.0 {
            return Err(bad("reference_error and threshold must be > 0".into()));
        }
        let record = ModuleRecord::from_bytes(bytes).map_err(|e| bad(e.to_string()))?;
        let network = Autoencoder::init(shape, 0, &cpu())
            .try_load_record(record)
            .map_err(|e| bad(e.to_string()))?;
        Ok(AnomalyModel::new(shape, calibration, network))
    }

    /// The model file's bytes: burn's record of the weights plus the metadata.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let internal = |e: String| OperatorError::Internal(format!("writing a model: {e}"));
        let record = self
            .network
            .clone()
            .into_record()
            .into_bytes()
            .map_err(|e| internal(e.to_string()))?;
        let tensors = burn_pack::Reader::from_bytes(record)
            .and_then(burn_pack::Reader::into_tensors)
            .map_err(|e| internal(e.to_string()))?;
        let mut meta = BTreeMap::new();
        meta.insert("format", FORMAT.to_owned());
        meta.insert("window", self.shape.window.to_string());
        meta.insert("hidden", self.shape.hidden.to_string());
        meta.insert("latent", self.shape.latent.to_string());
        meta.insert(
            "reference_error",
            format!("{:e}", self.calibration.reference_error),
        );
        meta.insert("threshold", format!("{}", self.calibration.threshold));
        meta.insert(
            "warmup_windows",
            self.calibration.warmup_windows.to_string(),
        );
        let writer = meta
            .iter()
            .fold(burn_pack::Writer::new(tensors), |w, (k, v)| {
                w.with_metadata(&format!("edgeflow.{k}"), v)
            });
        let bytes = writer.into_bytes().map_err(|e| internal(e.to_string()))?;
        Ok(bytes.to_vec())
    }

    /// The reconstruction error of each standardized window in `windows` (row-major,
    /// `window` values per row). Runs burn's forward pass in chunks of 512 windows, in parallel
    /// on rayon's pool when `parallel` and there is more than one chunk.
    pub fn errors(&self, windows: &[f32], parallel: bool) -> Result<Vec<f32>> {
        let w = self.shape.window;
        if !windows.len().is_multiple_of(w) {
            return Err(OperatorError::Internal(format!(
                "{} values are not whole windows of {w}",
                windows.len()
            )));
        }
        let chunk = |values: &[f32]| -> Result<Vec<f32>> {
            let rows = values.len() / w;
            let x = Tensor::<2>::from_data(TensorData::new(values.to_vec(), [rows, w]), &cpu());
            self.network
                .errors(x)
                .into_data()
                .try_to_vec::<f32>()
                .map_err(|e| OperatorError::Internal(format!("reading scores: {e:?}")))
        };
        let chunks = windows.chunks(CHUNK_WINDOWS * w);
        let parts: Vec<Result<Vec<f32>>> = if parallel && windows.len() > CHUNK_WINDOWS * w {
            chunks
                .collect::<Vec<_>>()
                .into_par_iter()
                .map(chunk)
                .collect()
        } else {
            chunks.map(chunk).collect()
        };
        let mut out = Vec::with_capacity(windows.len() / w);
        for part in parts {
            out.extend(part?);
        }
        Ok(out)
    }

    /// The same network as the SIMD dense-layer kernel ([`Mlp`]), for comparing the two
    /// forward passes (see the detection bench). The kernel rounds after every multiply and add
    /// in sequential order, burn's matmul does not, so outputs agree to float tolerance, not
    /// bit for bit.
    pub fn to_kernel(&self) -> Result<Mlp> {
        let layers = [
            (&self.network.encode, Activation::Relu),
            (&self.network.bottleneck, Activation::Tanh),
            (&self.network.expand, Activation::Relu),
            (&self.network.decode, Activation::Identity),
        ];
        let read = |t: TensorData| {
            t.try_to_vec::<f32>()
                .map_err(|e| OperatorError::Internal(format!("reading weights: {e:?}")))
        };
        let dense = layers
            .into_iter()
            .map(|(layer, activation)| {
                let [inputs, outputs] = layer.weight.dims();
                let weights = read(layer.weight.val().into_data())?;
                let bias = match &layer.bias {
                    Some(b) => read(b.val().into_data())?,
                    None => vec![0.0; outputs],
                };
                Dense::new(
                    inputs,
                    outputs,
                    &weights,
                    WeightLayout::InOut,
                    &bias,
                    activation,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Mlp::new(dense)
    }

    /// The anomaly score of a reconstruction error: `|ln(e / e_ref)|` (see the module docs).
    pub fn score(&self, error: f32) -> f64 {
        (f64::from(error).max(f64::MIN_POSITIVE) / self.calibration.reference_error)
            .ln()
            .abs()
    }
}
