//! SIMD kernels: window statistics, z-score scoring, threshold masks and dense (fully
//! connected) layers.
//!
//! Every kernel runs on the best instruction set of the CPU it finds at run time (AVX-512 or
//! AVX2+FMA on x86-64, NEON on aarch64, through `pulp`'s dispatch, no `unsafe` here) or on a
//! portable fallback, and **gives bit-identical results on all of them** and whatever the
//! number of threads. That holds by construction:
//!
//! - Each kernel body is ONE piece of generic Rust source written against `simd::Lanes` (8
//!   lanes of `f64`, 16 of `f32`), instantiated per instruction set: one AVX-512 register,
//!   two AVX2 registers, or plain arrays for the fallback (also used, vectorised by LLVM, on
//!   NEON). `pulp` detects the CPU and runs the body inside `#[target_feature]` code. Every lane
//!   operation is exactly rounded IEEE 754 (`+ - * /`), an ordered comparison, a bitwise select
//!   or `minpd`/`maxpd` (defined as `if a < b { a } else { b }` everywhere), so a lane's result
//!   cannot depend on the vector width. Rust never reassociates floating-point operations nor
//!   fuses `a * b + c` on its own. The activations (`math`) are element-wise array code built
//!   from the same exact operations.
//! - Reductions use a fixed number of accumulator lanes (element `i` of a block goes to lane
//!   `i`), combined at the end in a fixed pairwise tree, and large inputs are cut into
//!   fixed-size chunks whose partial results are combined in order. Rayon only decides which
//!   thread computes a chunk, never how chunks are formed or combined.
//! - No FMA anywhere (a software `fma` on a CPU without one would make the fallback very slow).
//!
//! One caveat: when a result is NaN, its payload and sign bit are not specified (LLVM may
//! commute the operands of `+`, and x86 propagates the first operand's payload); the tests
//! check that both results are NaN.
//!
//! Data never makes a kernel panic: inputs of mismatched lengths are an
//! [`OperatorError::Internal`] (a caller bug) returned before any output is written.

mod bitmap;
pub mod bounds;
pub mod dense;
pub mod grouped;
mod math;
mod simd;
pub mod stats;
pub mod zscore;

pub use bitmap::Validity;
pub use bounds::bounds_mask;
pub use dense::{Activation, Dense, Mlp, WeightLayout};
pub use grouped::GroupedStats;
pub use stats::{WindowStats, window_stats, window_stats_array, window_stats_centered};
pub use zscore::{Param, zscore, zscore_mask};

use crate::error::OperatorError;

/// An instruction set a kernel can run on, detected at run time.
#[derive(Debug, Clone, Copy)]
pub struct Isa(pulp::Arch);

impl Isa {
    /// The best instruction set of this CPU.
    pub fn detect() -> Self {
        Isa(pulp::Arch::new())
    }

    /// The portable fallback (plain Rust compiled for the target's baseline).
    pub fn scalar() -> Self {
        Isa(pulp::Arch::Scalar)
    }

    /// Every instruction set this CPU can run, the fallback first and the best last.
    pub fn available() -> Vec<Self> {
        #[allow(unused_mut)]
        let mut all = vec![Isa::scalar()];
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        {
            if let Some(v3) = pulp::x86::V3::try_new() {
                all.push(Isa(pulp::Arch::V3(v3)));
            }
            if let Some(v4) = pulp::x86::V4::try_new() {
                all.push(Isa(pulp::Arch::V4(v4)));
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            if let Some(neon) = pulp::aarch64::Neon::try_new() {
                all.push(Isa(pulp::Arch::Neon(neon)));
            }
        }
        all
    }

    /// A short name: `scalar`, `avx2`, `avx512` or `neon`.
    pub fn name(&self) -> &'static str {
        #[allow(unreachable_patterns)]
        match self.0 {
            pulp::Arch::Scalar => "scalar",
            #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
            pulp::Arch::V3(_) => "avx2",
            #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
            pulp::Arch::V4(_) => "avx512",
            #[cfg(target_arch = "aarch64")]
            pulp::Arch::Neon(_) => "neon",
            _ => "other",
        }
    }

    /// Runs a kernel with this instruction set's lanes.
    #[inline(always)]
    fn kernel<K: simd::Kernel>(self, kernel: K) -> K::Output {
        simd::dispatch(self.0, kernel)
    }
}

impl Default for Isa {
    fn default() -> Self {
        Isa::detect()
    }
}

/// How a kernel runs: on which instruction set, and whether it may split a large input across
/// the threads of the current rayon pool. Results are identical in every combination.
#[derive(Debug, Clone, Copy)]
pub struct Exec {
    isa: Isa,
    parallel: bool,
}

impl Exec {
    /// The best instruction set, parallel above each kernel's size threshold.
    pub fn new() -> Self {
        Exec {
            isa: Isa::detect(),
            parallel: true,
        }
    }

    /// The same, on `isa`.
    pub fn with_isa(self, isa: Isa) -> Self {
        Exec { isa, ..self }
    }

    /// The same, on the calling thread only.
    pub fn serial(self) -> Self {
        Exec {
            parallel: false,
            ..self
        }
    }

    /// The same, parallel above each kernel's size threshold.
    pub fn parallel(self) -> Self {
        Exec {
            parallel: true,
            ..self
        }
    }

    /// The instruction set.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Whether to use rayon for `work` units, given the kernel's threshold `min_work`.
    fn split(&self, work: usize, min_work: usize) -> bool {
        self.parallel && work >= min_work && rayon::current_num_threads() > 1
    }
}

impl Default for Exec {
    fn default() -> Self {
        Exec::new()
    }
}

/// The error for inputs whose lengths do not agree (a bug in the caller).
fn mismatch(kernel: &str, what: &str, expected: usize, got: usize) -> OperatorError {
    OperatorError::Internal(format!(
        "kernel {kernel}: {what} has length {got}, expected {expected}"
    ))
}
