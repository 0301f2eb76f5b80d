//! Dense (fully connected) layers for batched `f32` inference: `y = act(W x + b)` per row, and
//! [`Mlp`], a stack of them (e.g. a 64 -> 16 -> 8 -> 16 -> 64 autoencoder).
//!
//! Vectorised across outputs: the weights are packed in tiles of 16 outputs and, for a block
//! of 4 rows, each input `x[k]` is broadcast and multiplied with the tile's 16 weights of row
//! `k`. So every output is computed in the plain sequential order
//! `((0 + x[0] w[0]) + x[1] w[1]) + ... + b`, rounded after each `*` and `+` (no FMA), then the
//! activation (see `math` for sigmoid/tanh, built from exact operations). That order does not
//! depend on the instruction set, the tile, the row blocking nor the split across threads: all
//! give identical bits, equal to a naive triple loop in `f32` for identity and ReLU.

use rayon::prelude::*;

use super::simd::{Kernel, Lanes};
use super::{Exec, math, mismatch};
use crate::error::{OperatorError, Result};

/// Outputs per tile (one AVX-512 register of `f32`, two AVX2 ones).
const TILE: usize = 16;

/// Rows computed together (independent accumulator chains).
const ROWS: usize = 4;

/// Rows per parallel task.
const CHUNK_ROWS: usize = 256;

/// Batches of at least this many multiply-adds (rows x sum over layers of inputs x outputs)
/// are split across threads (when [`Exec`] allows it), measured on 2 cores.
pub const PAR_MIN_MACS: usize = 1 << 19;

/// The activation applied to `W x + b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `y`.
    Identity,
    /// `max(y, 0)` (`-0.0` becomes `0.0`, NaN stays NaN).
    Relu,
    /// `1 / (1 + e^-y)`.
    Sigmoid,
    /// `tanh(y)`.
    Tanh,
}

impl Activation {
    #[inline(always)]
    fn apply(self, y: &mut [f32; TILE]) {
        match self {
            Activation::Identity => {}
            Activation::Relu => {
                for v in y {
                    *v = if *v <= 0.0 { 0.0 } else { *v };
                }
            }
            Activation::Sigmoid => {
                for v in y {
                    *v = math::sigmoid(*v);
                }
            }
            Activation::Tanh => {
                for v in y {
                    *v = math::tanh(*v);
                }
            }
        }
    }
}

/// How a weight matrix given to [`Dense::new`] is laid out (row-major either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightLayout {
    /// `[outputs][inputs]`: PyTorch's `nn.Linear.weight`, ONNX `Gemm` with `transB`.
    OutIn,
    /// `[inputs][outputs]`: burn's `Linear` weight.
    InOut,
}

/// One dense layer, its weights packed for the kernel.
#[derive(Debug, Clone)]
pub struct Dense {
    inputs: usize,
    outputs: usize,
    activation: Activation,
    /// `[tile][input][TILE]`, zero past `outputs`.
    packed: Vec<[f32; TILE]>,
    /// `[tile][TILE]`, zero past `outputs`.
    bias: Vec<[f32; TILE]>,
}

impl Dense {
    /// A layer of `inputs -> outputs` with `weights` (`inputs * outputs` values in `layout`)
    /// and `bias` (`outputs` values). Errors on sizes that do not agree or are zero.
    pub fn new(
        inputs: usize,
        outputs: usize,
        weights: &[f32],
        layout: WeightLayout,
        bias: &[f32],
        activation: Activation,
    ) -> Result<Self> {
        if inputs == 0 || outputs == 0 {
            return Err(OperatorError::User(format!(
                "a dense layer needs at least one input and one output, got {inputs} -> {outputs}"
            )));
        }
        let size = inputs.checked_mul(outputs).ok_or_else(|| {
            OperatorError::User(format!("dense layer {inputs} -> {outputs} is too large"))
        })?;
        if weights.len() != size {
            return Err(OperatorError::User(format!(
                "dense layer {inputs} -> {outputs} needs {size} weights, got {}",
                weights.len()
            )));
        }
        if bias.len() != outputs {
            return Err(OperatorError::User(format!(
                "dense layer {inputs} -> {outputs} needs {outputs} biases, got {}",
                bias.len()
            )));
        }
        let tiles = outputs.div_ceil(TILE);
        let mut packed = vec![[0.0; TILE]; tiles * inputs];
        let mut padded_bias = vec![[0.0; TILE]; tiles];
        for o in 0..outputs {
            let (t, j) = (o / TILE, o % TILE);
            padded_bias[t][j] = bias[o];
            for k in 0..inputs {
                packed[t * inputs + k][j] = match layout {
                    WeightLayout::OutIn => weights[o * inputs + k],
                    WeightLayout::InOut => weights[k * outputs + o],
                };
            }
        }
        Ok(Dense {
            inputs,
            outputs,
            activation,
            packed,
            bias: padded_bias,
        })
    }

    /// Number of inputs per row.
    pub fn inputs(&self) -> usize {
        self.inputs
    }

    /// Number of outputs per row.
    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// The activation.
    pub fn activation(&self) -> Activation {
        self.activation
    }

    /// Computes `output` (`rows * outputs`, row-major) from `input` (`rows * inputs`). Errors
    /// when `input` is not a whole number of rows or `output` has not the matching length.
    pub fn forward(&self, exec: Exec, input: &[f32], output: &mut [f32]) -> Result<()> {
        let rows = rows_of("dense", input.len(), self.inputs)?;
        if output.len() != rows * self.outputs {
            return Err(mismatch(
                "dense",
                "output",
                rows * self.outputs,
                output.len(),
            ));
        }
        let work = rows.saturating_mul(self.inputs * self.outputs);
        if exec.split(work, PAR_MIN_MACS) {
            input
                .par_chunks(CHUNK_ROWS * self.inputs)
                .zip(output.par_chunks_mut(CHUNK_ROWS * self.outputs))
                .for_each(|(x, y)| exec.isa.kernel(LayerOp { layer: self, x, y }));
        } else {
            exec.isa.kernel(LayerOp {
                layer: self,
                x: input,
                y: output,
            });
        }
        Ok(())
    }

    /// The kernel on whole rows (lengths already checked).
    #[inline(always)]
    fn compute<O: Lanes>(&self, o: O, x: &[f32], y: &mut [f32]) {
        let (n_in, n_out) = (self.inputs, self.outputs);
        let mut xs = x.chunks_exact(n_in * ROWS);
        let mut ys = y.chunks_exact_mut(n_out * ROWS);
        for (xb, yb) in (&mut xs).zip(&mut ys) {
            self.rows::<O, ROWS>(o, xb, yb);
        }
        let xr = xs.remainder().chunks_exact(n_in);
        let yr = ys.into_remainder().chunks_exact_mut(n_out);
        for (xb, yb) in xr.zip(yr) {
            self.rows::<O, 1>(o, xb, yb);
        }
    }

    /// `R` rows: `x` holds `R * inputs` values, `y` `R * outputs`.
    #[inline(always)]
    fn rows<O: Lanes, const R: usize>(&self, o: O, x: &[f32], y: &mut [f32]) {
        let (n_in, n_out) = (self.inputs, self.outputs);
        let xr: [&[f32]; R] = std::array::from_fn(|r| &x[r * n_in..(r + 1) * n_in]);
        for (t, (w, b)) in self.packed.chunks_exact(n_in).zip(&self.bias).enumerate() {
            let mut acc = [o.splat32(0.0); R];
            for (k, wk) in w.iter().enumerate() {
                let wk = o.load32(wk);
                for r in 0..R {
                    acc[r] = o.add32(acc[r], o.mul32(o.splat32(xr[r][k]), wk));
                }
            }
            let (first, width) = (t * TILE, TILE.min(n_out - t * TILE));
            let b = o.load32(b);
            for (r, a) in acc.into_iter().enumerate() {
                let mut a = o.store32(o.add32(a, b));
                self.activation.apply(&mut a);
                let out = &mut y[r * n_out + first..][..width];
                match out.as_mut_array::<TILE>() {
                    Some(full) => *full = a,
                    None => out.copy_from_slice(&a[..width]),
                }
            }
        }
    }
}

fn rows_of(kernel: &str, len: usize, width: usize) -> Result<usize> {
    if !len.is_multiple_of(width) {
        return Err(OperatorError::Internal(format!(
            "kernel {kernel}: input of {len} values is not a whole number of rows of {width}"
        )));
    }
    Ok(len / width)
}

struct LayerOp<'a, 'b> {
    layer: &'a Dense,
    x: &'a [f32],
    y: &'b mut [f32],
}

impl Kernel for LayerOp<'_, '_> {
    type Output = ();

    #[inline(always)]
    fn run<O: Lanes>(self, o: O) {
        self.layer.compute(o, self.x, self.y);
    }
}

/// A stack of dense layers applied in order, e.g. an autoencoder.
#[derive(Debug, Clone)]
pub struct Mlp {
    layers: Vec<Dense>,
}

impl Mlp {
    /// Layers in order; each one's inputs must be the previous one's outputs.
    pub fn new(layers: Vec<Dense>) -> Result<Self> {
        if layers.is_empty() {
            return Err(OperatorError::User(
                "a network needs at least one layer".into(),
            ));
        }
        for (i, pair) in layers.windows(2).enumerate() {
            if pair[0].outputs != pair[1].inputs {
                return Err(OperatorError::User(format!(
                    "layer {} has {} outputs but layer {} has {} inputs",
                    i,
                    pair[0].outputs,
                    i + 1,
                    pair[1].inputs
                )));
            }
        }
        Ok(Mlp { layers })
    }

    /// The layers.
    pub fn layers(&self) -> &[Dense] {
        &self.layers
    }

    /// Inputs per row.
    pub fn inputs(&self) -> usize {
        self.layers[0].inputs
    }

    /// Outputs per row.
    pub fn outputs(&self) -> usize {
        self.layers[self.layers.len() - 1].outputs
    }

    /// Runs every layer on `input` (`rows * inputs()`, row-major) and returns
    /// `rows * outputs()` values. Large batches are split by rows across threads, each task
    /// running the whole stack on its rows.
    ///
    /// ```
    /// # use edgeflow_operators::kernels::{Activation, Dense, Exec, Mlp, WeightLayout};
    /// let l1 = Dense::new(2, 1, &[1.0, -1.0], WeightLayout::OutIn, &[0.5], Activation::Relu).unwrap();
    /// let l2 = Dense::new(1, 2, &[2.0, 3.0], WeightLayout::OutIn, &[0.0, 1.0], Activation::Identity).unwrap();
    /// let net = Mlp::new(vec![l1, l2]).unwrap();
    /// assert_eq!(net.forward(Exec::new(), &[3.0, 1.0, 0.0, 4.0]).unwrap(), [5.0, 8.5, 0.0, 1.0]);
    /// ```
    pub fn forward(&self, exec: Exec, input: &[f32]) -> Result<Vec<f32>> {
        let rows = rows_of("mlp", input.len(), self.inputs())?;
        let mut out = vec![0.0; rows * self.outputs()];
        let macs: usize = self.layers.iter().map(|l| l.inputs * l.outputs).sum();
        if exec.split(rows.saturating_mul(macs), PAR_MIN_MACS) {
            input
                .par_chunks(CHUNK_ROWS * self.inputs())
                .zip(out.par_chunks_mut(CHUNK_ROWS * self.outputs()))
                .for_each(|(x, y)| exec.isa.kernel(MlpOp { net: self, x, y }));
        } else {
            exec.isa.kernel(MlpOp {
                net: self,
                x: input,
                y: &mut out,
            });
        }
        Ok(out)
    }
}

struct MlpOp<'a, 'b> {
    net: &'a Mlp,
    x: &'a [f32],
    y: &'b mut [f32],
}

impl Kernel for MlpOp<'_, '_> {
    type Output = ();

    #[inline(always)]
    fn run<O: Lanes>(self, o: O) {
        let MlpOp { net, x, y } = self;
        let rows = x.len() / net.inputs();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let last = net.layers.len() - 1;
        for (i, layer) in net.layers.iter().enumerate() {
            let src: &[f32] = if i == 0 { x } else { &a };
            if i == last {
                layer.compute(o, src, y);
            } else {
                b.clear();
                b.resize(rows * layer.outputs, 0.0);
                layer.compute(o, src, &mut b);
                std::mem::swap(&mut a, &mut b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Isa;
    use super::*;
    use proptest::prelude::*;

    fn act() -> impl Strategy<Value = Activation> {
        prop_oneof![
            Just(Activation::Identity),
            Just(Activation::Relu),
            Just(Activation::Sigmoid),
            Just(Activation::Tanh)
        ]
    }

    fn weight() -> impl Strategy<Value = f32> {
        prop_oneof![8 => -2.0..2.0f32, 1 => Just(0.0), 1 => Just(-0.0)]
    }

    /// Independent oracle: the triple loop on `[out][in]` weights, in f32 and in f64.
    /// Also returns, per output, the f32 rounding error bound of the sum.
    fn naive(
        x: &[f32],
        w: &[f32],
        b: &[f32],
        n_in: usize,
        n_out: usize,
    ) -> (Vec<f32>, Vec<(f64, f64)>) {
        let rows = x.len() / n_in;
        let (mut y32, mut y64) = (Vec::new(), Vec::new());
        for r in 0..rows {
            for o in 0..n_out {
                let (mut a, mut d, mut abs) = (0.0f32, 0.0f64, f64::from(b[o].abs()));
                for k in 0..n_in {
                    a += x[r * n_in + k] * w[o * n_in + k];
                    let p = f64::from(x[r * n_in + k]) * f64::from(w[o * n_in + k]);
                    d += p;
                    abs += p.abs();
                }
                y32.push(a + b[o]);
                let bound = (n_in as f64 + 2.0) * f64::from(f32::EPSILON) * abs;
                y64.push((d + f64::from(b[o]), bound));
            }
        }
        (y32, y64)
    }

    fn activate(a: Activation, y: f64) -> f64 {
        match a {
            Activation::Identity => y,
            Activation::Relu => y.max(0.0),
            Activation::Sigmoid => 1.0 / (1.0 + (-y).exp()),
            Activation::Tanh => y.tanh(),
        }
    }

    fn same32(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn every_isa_is_bit_identical_and_matches_a_triple_loop(
            (n_in, n_out, rows) in (1usize..70, 1usize..70, 0usize..40),
            activation in act(),
            seed in proptest::collection::vec(weight(), 70 * 70 + 70 + 70 * 40),
            transposed in any::<bool>(),
        ) {
            let w = &seed[..n_in * n_out];
            let b = &seed[n_in * n_out..n_in * n_out + n_out];
            let x: Vec<f32> = seed[seed.len() - rows * n_in..].iter().map(|v| v * 3.0).collect();
            let layer = if transposed {
                let t: Vec<f32> = (0..n_in * n_out).map(|i| w[(i % n_out) * n_in + i / n_out]).collect();
                Dense::new(n_in, n_out, &t, WeightLayout::InOut, b, activation).unwrap()
            } else {
                Dense::new(n_in, n_out, w, WeightLayout::OutIn, b, activation).unwrap()
            };
            let mut reference = vec![0.0; rows * n_out];
            layer.forward(Exec::new().with_isa(Isa::scalar()).serial(), &x, &mut reference).unwrap();
            for isa in Isa::available() {
                let mut got = vec![0.0; rows * n_out];
                layer.forward(Exec::new().with_isa(isa), &x, &mut got).unwrap();
                prop_assert!(same32(&got, &reference), "{}", isa.name());
            }
            let (y32, y64) = naive(&x, w, b, n_in, n_out);
            match activation {
                Activation::Identity => prop_assert!(same32(&reference, &y32)),
                Activation::Relu => {
                    let relu: Vec<f32> = y32.iter().map(|&v| if v <= 0.0 { 0.0 } else { v }).collect();
                    prop_assert!(same32(&reference, &relu));
                }
                _ => {}
            }
            for (i, (&got, &(want, bound))) in reference.iter().zip(&y64).enumerate() {
                let want = activate(activation, want);
                // Activations are 1-Lipschitz (sigmoid 1/4), plus their own approximation error.
                prop_assert!((f64::from(got) - want).abs() <= bound + 2e-6, "value {i}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn autoencoder_is_identical_across_isas_and_threads() {
        let dims = [64, 16, 8, 16, 64];
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        let layers: Vec<Dense> = dims
            .windows(2)
            .enumerate()
            .map(|(i, d)| {
                let w: Vec<f32> = (0..d[0] * d[1]).map(|_| next()).collect();
                let b: Vec<f32> = (0..d[1]).map(|_| next()).collect();
                let act = [
                    Activation::Relu,
                    Activation::Tanh,
                    Activation::Relu,
                    Activation::Sigmoid,
                ][i];
                Dense::new(d[0], d[1], &w, WeightLayout::OutIn, &b, act).unwrap()
            })
            .collect();
        let net = Mlp::new(layers.clone()).unwrap();
        let rows = 3 * CHUNK_ROWS + 5;
        let x: Vec<f32> = (0..rows * 64).map(|_| next() * 4.0).collect();
        let reference = net
            .forward(Exec::new().with_isa(Isa::scalar()).serial(), &x)
            .unwrap();
        // Layer by layer gives the same as the fused stack.
        let mut cur = x.clone();
        for l in &layers {
            let mut y = vec![0.0; rows * l.outputs()];
            l.forward(Exec::new(), &cur, &mut y).unwrap();
            cur = y;
        }
        assert!(same32(&cur, &reference));
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        for isa in Isa::available() {
            let par = pool.install(|| net.forward(Exec::new().with_isa(isa), &x).unwrap());
            assert!(same32(&par, &reference), "{}", isa.name());
            let ser = net.forward(Exec::new().with_isa(isa).serial(), &x).unwrap();
            assert!(same32(&ser, &reference), "{}", isa.name());
        }
    }

    #[test]
    fn rejects_bad_shapes() {
        let a = Activation::Identity;
        assert!(Dense::new(0, 1, &[], WeightLayout::OutIn, &[0.0], a).is_err());
        assert!(Dense::new(2, 1, &[1.0], WeightLayout::OutIn, &[0.0], a).is_err());
        assert!(Dense::new(1, 2, &[1.0, 1.0], WeightLayout::OutIn, &[0.0], a).is_err());
        let l = Dense::new(2, 1, &[1.0, 1.0], WeightLayout::OutIn, &[0.0], a).unwrap();
        let e = Exec::new();
        assert!(l.forward(e, &[1.0, 2.0, 3.0], &mut [0.0; 1]).is_err());
        assert!(l.forward(e, &[1.0, 2.0], &mut [0.0; 2]).is_err());
        let l3 = Dense::new(3, 1, &[1.0; 3], WeightLayout::OutIn, &[0.0], a).unwrap();
        assert!(Mlp::new(vec![l.clone(), l3]).is_err());
        assert!(Mlp::new(vec![]).is_err());
        assert!(Mlp::new(vec![l]).unwrap().forward(e, &[1.0]).is_err());
    }
}
