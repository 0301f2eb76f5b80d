//! Eight `f64` lanes and sixteen `f32` lanes on every instruction set: the vector types the
//! kernels are written against, so that a kernel is ONE generic body with identical lane
//! semantics everywhere.
//!
//! [`Lanes`] is implemented by [`Portable`] (plain arrays: the fallback, also used on NEON
//! where LLVM vectorises it), by `pulp::x86::V3` (two AVX2 registers) and by `pulp::x86::V4`
//! (one AVX-512 register). Every operation is exactly rounded IEEE 754 or a bitwise select, and
//! comparisons are the ordered, quiet ones (false when either side is NaN) in every
//! implementation, so the same sequence of calls gives the same bits on all of them.

/// A kernel generic over the lane implementation.
pub(crate) trait Kernel {
    /// What it returns.
    type Output;
    /// Runs it with `ops` (called inside the instruction set's `#[target_feature]` context).
    fn run<O: Lanes>(self, ops: O) -> Self::Output;
}

/// Runs `kernel` on `arch`.
#[inline(always)]
pub(crate) fn dispatch<K: Kernel>(arch: pulp::Arch, kernel: K) -> K::Output {
    #[allow(unreachable_patterns)]
    match arch {
        #[cfg(target_arch = "x86_64")]
        pulp::Arch::V4(v4) => pulp::Simd::vectorize(v4, With { kernel, ops: v4 }),
        #[cfg(target_arch = "x86_64")]
        pulp::Arch::V3(v3) => pulp::Simd::vectorize(v3, With { kernel, ops: v3 }),
        #[cfg(target_arch = "aarch64")]
        pulp::Arch::Neon(neon) => pulp::Simd::vectorize(
            neon,
            With {
                kernel,
                ops: Portable,
            },
        ),
        _ => kernel.run(Portable),
    }
}

struct With<K, O> {
    kernel: K,
    ops: O,
}

impl<K: Kernel, O: Lanes> pulp::WithSimd for With<K, O> {
    type Output = K::Output;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) -> K::Output {
        self.kernel.run(self.ops)
    }
}

/// Eight lanes of `f64` and their masks, sixteen lanes of `f32`.
pub(crate) trait Lanes: Copy {
    /// Eight `f64`.
    type V: Copy;
    /// Eight booleans.
    type M: Copy;
    /// Sixteen `f32`.
    type W: Copy;

    fn load32(self, x: &[f32; 16]) -> Self::W;
    fn store32(self, v: Self::W) -> [f32; 16];
    fn splat32(self, x: f32) -> Self::W;
    fn add32(self, a: Self::W, b: Self::W) -> Self::W;
    fn mul32(self, a: Self::W, b: Self::W) -> Self::W;

    fn load(self, x: &[f64; 8]) -> Self::V;
    fn store(self, v: Self::V) -> [f64; 8];
    fn splat(self, x: f64) -> Self::V;
    fn add(self, a: Self::V, b: Self::V) -> Self::V;
    fn sub(self, a: Self::V, b: Self::V) -> Self::V;
    fn mul(self, a: Self::V, b: Self::V) -> Self::V;
    fn div(self, a: Self::V, b: Self::V) -> Self::V;
    /// Clears the sign bit.
    fn abs(self, a: Self::V) -> Self::V;
    /// `a > b` (false with NaN).
    fn gt(self, a: Self::V, b: Self::V) -> Self::M;
    /// `a >= b` (false with NaN).
    fn ge(self, a: Self::V, b: Self::V) -> Self::M;
    /// `a == b` (false with NaN).
    fn eq(self, a: Self::V, b: Self::V) -> Self::M;
    /// `if a < b { a } else { b }` per lane (x86's `minpd`: NaN or equal zeros give `b`).
    fn min(self, a: Self::V, b: Self::V) -> Self::V;
    /// `if a > b { a } else { b }` per lane (x86's `maxpd`).
    fn max(self, a: Self::V, b: Self::V) -> Self::V;
    /// `if m { a } else { b }` per lane.
    fn select(self, m: Self::M, a: Self::V, b: Self::V) -> Self::V;
    /// Lane `i` is bit `i` of `bits`.
    fn mask(self, bits: u8) -> Self::M;
    /// Bit `i` is lane `i`.
    fn bits(self, m: Self::M) -> u8;
}

/// The portable implementation: arrays and loops.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Portable;

macro_rules! lanes {
    (|$i:ident| $e:expr) => {{
        let mut out = [Default::default(); 8];
        for $i in 0..8 {
            out[$i] = $e;
        }
        out
    }};
}

impl Lanes for Portable {
    type V = [f64; 8];
    type M = [bool; 8];
    type W = [f32; 16];

    #[inline(always)]
    fn load32(self, x: &[f32; 16]) -> [f32; 16] {
        *x
    }
    #[inline(always)]
    fn store32(self, v: [f32; 16]) -> [f32; 16] {
        v
    }
    #[inline(always)]
    fn splat32(self, x: f32) -> [f32; 16] {
        [x; 16]
    }
    #[inline(always)]
    fn add32(self, a: [f32; 16], b: [f32; 16]) -> [f32; 16] {
        std::array::from_fn(|i| a[i] + b[i])
    }
    #[inline(always)]
    fn mul32(self, a: [f32; 16], b: [f32; 16]) -> [f32; 16] {
        std::array::from_fn(|i| a[i] * b[i])
    }

    #[inline(always)]
    fn load(self, x: &[f64; 8]) -> [f64; 8] {
        *x
    }
    #[inline(always)]
    fn store(self, v: [f64; 8]) -> [f64; 8] {
        v
    }
    #[inline(always)]
    fn splat(self, x: f64) -> [f64; 8] {
        [x; 8]
    }
    #[inline(always)]
    fn add(self, a: [f64; 8], b: [f64; 8]) -> [f64; 8] {
        lanes!(|i| a[i] + b[i])
    }
    #[inline(always)]
    fn sub(self, a: [f64; 8], b: [f64; 8]) -> [f64; 8] {
        lanes!(|i| a[i] - b[i])
    }
    #[inline(always)]
    fn mul(self, a: [f64; 8], b: [f64; 8]) -> [f64; 8] {
        lanes!(|i| a[i] * b[i])
    }
    #[inline(always)]
    fn div(self, a: [f64; 8], b: [f64; 8]) -> [f64; 8] {
        lanes!(|i| a[i] / b[i])
    }
    #[inline(always)]
    fn abs(self, a: [f64; 8]) -> [f64; 8] {
        lanes!(|i| a[i].abs())
    }
    #[inline(always)]
    fn gt(self, a: [f64; 8], b: [f64; 8]) -> [bool; 8] {
        lanes!(|i| a[i] > b[i])
    }
    #[inline(always)]
    fn ge(self, a: [f64; 8], b: [f64; 8]) -> [bool; 8] {
        lanes!(|i| a[i] >= b[i])
    }
    #[inline(always)]
    fn eq(self, a: [f64; 8], b: [f64; 8]) -> [bool; 8] {
        lanes!(|i| a[i] == b[i])
    }
    #[inline(always)]
    fn min(self, a: [f64; 8], b: [f64; 8]) -> [f64; 8] {
        lanes!(|i| if a[i] < b[i] { a[i] } else { b[i] })
    }
    #[inline(always)]
    fn max(self, a: [f64; 8], b: [f64; 8]) -> [f64; 8] {
        lanes!(|i| if a[i] > b[i] { a[i] } else { b[i] })
    }
    #[inline(always)]
    fn select(self, m: [bool; 8], a: [f64; 8], b: [f64; 8]) -> [f64; 8] {
        lanes!(|i| if m[i] { a[i] } else { b[i] })
    }
    #[inline(always)]
    fn mask(self, bits: u8) -> [bool; 8] {
        lanes!(|i| bits & (1 << i) != 0)
    }
    #[inline(always)]
    fn bits(self, m: [bool; 8]) -> u8 {
        let mut b = 0u8;
        for (i, &x) in m.iter().enumerate() {
            b |= u8::from(x) << i;
        }
        b
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Lanes;
    use pulp::x86::{V3, V4};
    use pulp::{b8, cast, f32x8, f32x16, f64x4, f64x8, m64x4, u64x4};

    /// Lanes 0-3 and 4-7.
    #[derive(Clone, Copy)]
    pub(crate) struct Pair<T>(T, T);

    impl Lanes for V3 {
        type V = Pair<f64x4>;
        type M = Pair<m64x4>;
        type W = Pair<f32x8>;

        #[inline(always)]
        fn load32(self, x: &[f32; 16]) -> Self::W {
            let (lo, hi) = x.as_chunks::<8>().0.split_at(1);
            Pair(cast(lo[0]), cast(hi[0]))
        }
        #[inline(always)]
        fn store32(self, v: Self::W) -> [f32; 16] {
            cast([cast::<f32x8, [f32; 8]>(v.0), cast::<f32x8, [f32; 8]>(v.1)])
        }
        #[inline(always)]
        fn splat32(self, x: f32) -> Self::W {
            Pair(self.splat_f32x8(x), self.splat_f32x8(x))
        }
        #[inline(always)]
        fn add32(self, a: Self::W, b: Self::W) -> Self::W {
            Pair(self.add_f32x8(a.0, b.0), self.add_f32x8(a.1, b.1))
        }
        #[inline(always)]
        fn mul32(self, a: Self::W, b: Self::W) -> Self::W {
            Pair(self.mul_f32x8(a.0, b.0), self.mul_f32x8(a.1, b.1))
        }

        #[inline(always)]
        fn load(self, x: &[f64; 8]) -> Self::V {
            let (lo, hi) = x.split_at(4);
            let lo: [f64; 4] = [lo[0], lo[1], lo[2], lo[3]];
            let hi: [f64; 4] = [hi[0], hi[1], hi[2], hi[3]];
            Pair(cast(lo), cast(hi))
        }
        #[inline(always)]
        fn store(self, v: Self::V) -> [f64; 8] {
            let lo: [f64; 4] = cast(v.0);
            let hi: [f64; 4] = cast(v.1);
            [lo[0], lo[1], lo[2], lo[3], hi[0], hi[1], hi[2], hi[3]]
        }
        #[inline(always)]
        fn splat(self, x: f64) -> Self::V {
            Pair(self.splat_f64x4(x), self.splat_f64x4(x))
        }
        #[inline(always)]
        fn add(self, a: Self::V, b: Self::V) -> Self::V {
            Pair(self.add_f64x4(a.0, b.0), self.add_f64x4(a.1, b.1))
        }
        #[inline(always)]
        fn sub(self, a: Self::V, b: Self::V) -> Self::V {
            Pair(self.sub_f64x4(a.0, b.0), self.sub_f64x4(a.1, b.1))
        }
        #[inline(always)]
        fn mul(self, a: Self::V, b: Self::V) -> Self::V {
            Pair(self.mul_f64x4(a.0, b.0), self.mul_f64x4(a.1, b.1))
        }
        #[inline(always)]
        fn div(self, a: Self::V, b: Self::V) -> Self::V {
            Pair(self.div_f64x4(a.0, b.0), self.div_f64x4(a.1, b.1))
        }
        #[inline(always)]
        fn abs(self, a: Self::V) -> Self::V {
            Pair(self.abs_f64x4(a.0), self.abs_f64x4(a.1))
        }
        #[inline(always)]
        fn gt(self, a: Self::V, b: Self::V) -> Self::M {
            Pair(self.cmp_gt_f64x4(a.0, b.0), self.cmp_gt_f64x4(a.1, b.1))
        }
        #[inline(always)]
        fn ge(self, a: Self::V, b: Self::V) -> Self::M {
            Pair(self.cmp_ge_f64x4(a.0, b.0), self.cmp_ge_f64x4(a.1, b.1))
        }
        #[inline(always)]
        fn eq(self, a: Self::V, b: Self::V) -> Self::M {
            Pair(self.cmp_eq_f64x4(a.0, b.0), self.cmp_eq_f64x4(a.1, b.1))
        }
        #[inline(always)]
        fn min(self, a: Self::V, b: Self::V) -> Self::V {
            let f = |a: f64x4, b: f64x4| cast(self.avx._mm256_min_pd(cast(a), cast(b)));
            Pair(f(a.0, b.0), f(a.1, b.1))
        }
        #[inline(always)]
        fn max(self, a: Self::V, b: Self::V) -> Self::V {
            let f = |a: f64x4, b: f64x4| cast(self.avx._mm256_max_pd(cast(a), cast(b)));
            Pair(f(a.0, b.0), f(a.1, b.1))
        }
        #[inline(always)]
        fn select(self, m: Self::M, a: Self::V, b: Self::V) -> Self::V {
            Pair(
                self.select_f64x4(m.0, a.0, b.0),
                self.select_f64x4(m.1, a.1, b.1),
            )
        }
        #[inline(always)]
        fn mask(self, bits: u8) -> Self::M {
            let b = self.splat_u64x4(u64::from(bits));
            let lo = u64x4(1, 2, 4, 8);
            let hi = u64x4(16, 32, 64, 128);
            Pair(
                self.cmp_eq_u64x4(self.and_u64x4(b, lo), lo),
                self.cmp_eq_u64x4(self.and_u64x4(b, hi), hi),
            )
        }
        #[inline(always)]
        fn bits(self, m: Self::M) -> u8 {
            let lo = self.avx._mm256_movemask_pd(cast(m.0)) as u8;
            let hi = self.avx._mm256_movemask_pd(cast(m.1)) as u8;
            lo | (hi << 4)
        }
    }

    impl Lanes for V4 {
        type V = f64x8;
        type M = b8;
        type W = f32x16;

        #[inline(always)]
        fn load32(self, x: &[f32; 16]) -> f32x16 {
            cast(*x)
        }
        #[inline(always)]
        fn store32(self, v: f32x16) -> [f32; 16] {
            cast(v)
        }
        #[inline(always)]
        fn splat32(self, x: f32) -> f32x16 {
            self.splat_f32x16(x)
        }
        #[inline(always)]
        fn add32(self, a: f32x16, b: f32x16) -> f32x16 {
            self.add_f32x16(a, b)
        }
        #[inline(always)]
        fn mul32(self, a: f32x16, b: f32x16) -> f32x16 {
            self.mul_f32x16(a, b)
        }

        #[inline(always)]
        fn load(self, x: &[f64; 8]) -> f64x8 {
            cast(*x)
        }
        #[inline(always)]
        fn store(self, v: f64x8) -> [f64; 8] {
            cast(v)
        }
        #[inline(always)]
        fn splat(self, x: f64) -> f64x8 {
            self.splat_f64x8(x)
        }
        #[inline(always)]
        fn add(self, a: f64x8, b: f64x8) -> f64x8 {
            self.add_f64x8(a, b)
        }
        #[inline(always)]
        fn sub(self, a: f64x8, b: f64x8) -> f64x8 {
            self.sub_f64x8(a, b)
        }
        #[inline(always)]
        fn mul(self, a: f64x8, b: f64x8) -> f64x8 {
            self.mul_f64x8(a, b)
        }
        #[inline(always)]
        fn div(self, a: f64x8, b: f64x8) -> f64x8 {
            self.div_f64x8(a, b)
        }
        #[inline(always)]
        fn abs(self, a: f64x8) -> f64x8 {
            self.abs_f64x8(a)
        }
        #[inline(always)]
        fn gt(self, a: f64x8, b: f64x8) -> b8 {
            self.cmp_gt_f64x8(a, b)
        }
        #[inline(always)]
        fn ge(self, a: f64x8, b: f64x8) -> b8 {
            self.cmp_ge_f64x8(a, b)
        }
        #[inline(always)]
        fn eq(self, a: f64x8, b: f64x8) -> b8 {
            self.cmp_eq_f64x8(a, b)
        }
        #[inline(always)]
        fn min(self, a: f64x8, b: f64x8) -> f64x8 {
            cast(self.avx512f._mm512_min_pd(cast(a), cast(b)))
        }
        #[inline(always)]
        fn max(self, a: f64x8, b: f64x8) -> f64x8 {
            cast(self.avx512f._mm512_max_pd(cast(a), cast(b)))
        }
        #[inline(always)]
        fn select(self, m: b8, a: f64x8, b: f64x8) -> f64x8 {
            self.select_f64x8(m, a, b)
        }
        #[inline(always)]
        fn mask(self, bits: u8) -> b8 {
            b8(bits)
        }
        #[inline(always)]
        fn bits(self, m: b8) -> u8 {
            m.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every operation of every implementation on special values, against `Portable`.
    #[test]
    fn implementations_agree_lane_by_lane() {
        let specials = [
            0.0,
            -0.0,
            1.5,
            -2.25,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            5e-324,
            f64::MAX,
            -1e-300,
        ];
        struct Check {
            a: [f64; 8],
            b: [f64; 8],
            bits: u8,
        }
        impl Kernel for Check {
            type Output = Vec<u64>;
            fn run<O: Lanes>(self, o: O) -> Vec<u64> {
                let (a, b) = (o.load(&self.a), o.load(&self.b));
                let m = o.mask(self.bits);
                let mut out = Vec::new();
                for v in [
                    o.add(a, b),
                    o.sub(a, b),
                    o.mul(a, b),
                    o.div(a, b),
                    o.abs(a),
                    o.select(m, a, b),
                    o.min(a, b),
                    o.max(a, b),
                    o.min(b, a),
                    o.max(b, a),
                    o.splat(self.a[3]),
                ] {
                    out.extend(
                        o.store(v)
                            .iter()
                            .map(|x| if x.is_nan() { u64::MAX } else { x.to_bits() }),
                    );
                }
                for m2 in [o.gt(a, b), o.ge(a, b), o.eq(a, b), o.gt(b, a)] {
                    out.push(u64::from(o.bits(m2)));
                }
                out.push(u64::from(o.bits(m)));
                out
            }
        }
        let isas = super::super::Isa::available();
        for s in 0..specials.len() * specials.len() {
            let a: [f64; 8] = std::array::from_fn(|i| specials[(s + i) % specials.len()]);
            let b: [f64; 8] =
                std::array::from_fn(|i| specials[(s / specials.len() + 3 * i) % specials.len()]);
            let bits = (s * 37) as u8;
            let want = Check { a, b, bits }.run(Portable);
            for isa in &isas {
                assert_eq!(isa.kernel(Check { a, b, bits }), want, "{}", isa.name());
            }
        }
    }
}
