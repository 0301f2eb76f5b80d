//! Kernel micro-benchmarks: per kernel, a naive sequential loop, the portable fallback, each
//! SIMD instruction set on one thread and the best one on every core, on the same data.
//!
//! `cargo bench -p edgeflow-operators --bench kernels`, then `scripts/criterion-ratios` prints
//! medians and speed-ups.

use std::hint::black_box;

use arrow::buffer::{BooleanBuffer, NullBuffer};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use edgeflow_operators::kernels::{
    Activation, Dense, Exec, GroupedStats, Isa, Mlp, Param, Validity, WeightLayout, WindowStats,
    window_stats, zscore_mask,
};

const SIZES: [usize; 2] = [8192, 1_000_000];

/// Deterministic pseudo-random numbers in [0, 1).
fn rng(seed: u64) -> impl FnMut() -> f64 {
    let mut s = seed | 1;
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn column(n: usize) -> (Vec<f64>, NullBuffer) {
    let mut r = rng(n as u64);
    let values = (0..n).map(|_| r() * 100.0 - 20.0).collect();
    // 5% nulls, sliced by 3 rows as an array slice would be.
    let bits: Vec<bool> = (0..n + 3).map(|_| r() >= 0.05).collect();
    (
        values,
        NullBuffer::new(BooleanBuffer::from(bits)).slice(3, n),
    )
}

/// Every way to run a kernel: (label, exec).
fn execs() -> Vec<(String, Exec)> {
    let mut v: Vec<(String, Exec)> = Isa::available()
        .into_iter()
        .map(|isa| (isa.name().to_string(), Exec::new().with_isa(isa).serial()))
        .collect();
    v.push(("best_parallel".into(), Exec::new().parallel()));
    v
}

/// The window aggregator's way: one pass, one accumulator per statistic.
fn naive_stats(values: &[f64], nulls: &NullBuffer) -> WindowStats {
    let mut s = WindowStats::EMPTY;
    for (i, &x) in values.iter().enumerate() {
        if nulls.is_valid(i) {
            s.count += 1;
            s.sum += x;
            s.sum_sq += x * x;
            if x < s.min {
                s.min = x;
            }
            if x > s.max {
                s.max = x;
            }
        }
    }
    s
}

fn bench_stats(c: &mut Criterion) {
    let mut g = c.benchmark_group("window_stats");
    for n in SIZES {
        let (values, nulls) = column(n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::new("naive", n), |b| {
            b.iter(|| naive_stats(black_box(&values), black_box(&nulls)))
        });
        for (name, exec) in execs() {
            g.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter(|| {
                    window_stats(exec, black_box(&values), Some(Validity::from(&nulls))).unwrap()
                })
            });
        }
    }
    g.finish();
}

fn bench_grouped(c: &mut Criterion) {
    let mut g = c.benchmark_group("grouped_stats");
    for n in SIZES {
        let (values, nulls) = column(n);
        for (groups, sorted) in [(16u32, false), (1024, false), (16, true)] {
            let mut r = rng(7);
            let mut ids: Vec<u32> = (0..n).map(|_| (r() * groups as f64) as u32).collect();
            // Sorted keys without nulls: the kernel's no-bucketing path.
            let all_valid = NullBuffer::new_valid(n);
            let nulls = if sorted {
                ids.sort_unstable();
                &all_valid
            } else {
                &nulls
            };
            let validity = (!sorted).then(|| Validity::from(nulls));
            g.throughput(Throughput::Elements(n as u64));
            let param = format!("{n}/g{groups}{}", if sorted { "_sorted" } else { "" });
            g.bench_function(BenchmarkId::new("naive", &param), |b| {
                let mut accs = vec![WindowStats::EMPTY; groups as usize];
                b.iter(|| {
                    for (i, (&x, &k)) in values.iter().zip(&ids).enumerate() {
                        if nulls.is_valid(i) {
                            let s = &mut accs[k as usize];
                            s.count += 1;
                            s.sum += x;
                            s.sum_sq += x * x;
                            if x < s.min {
                                s.min = x;
                            }
                            if x > s.max {
                                s.max = x;
                            }
                        }
                    }
                    black_box(&accs);
                })
            });
            for (name, exec) in execs() {
                if name == "best_parallel" {
                    continue;
                }
                let mut k = GroupedStats::new();
                let mut accs = vec![WindowStats::EMPTY; groups as usize];
                g.bench_function(BenchmarkId::new(name, &param), |b| {
                    b.iter(|| {
                        k.fold(exec, black_box(&values), validity, &ids, &mut accs)
                            .unwrap()
                    })
                });
            }
        }
    }
    g.finish();
}

fn bench_zscore(c: &mut Criterion) {
    let mut g = c.benchmark_group("zscore");
    for n in SIZES {
        let (values, nulls) = column(n);
        let mut r = rng(3);
        let std: Vec<f64> = (0..n).map(|_| 1.0 + r() * 20.0).collect();
        let mut scores = vec![0.0; n];
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::new("naive", n), |b| {
            b.iter(|| {
                let mut mask = vec![false; n];
                for i in 0..n {
                    let d = (values[i] - 30.0).abs();
                    let z = if std[i] > 0.0 {
                        d / std[i]
                    } else if d == 0.0 {
                        0.0
                    } else {
                        f64::INFINITY
                    };
                    scores[i] = z;
                    mask[i] = nulls.is_valid(i) && z >= 3.0;
                }
                black_box(BooleanBuffer::from(mask))
            })
        });
        for (name, exec) in execs() {
            g.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter(|| {
                    zscore_mask(
                        exec,
                        black_box(&values),
                        Some(Validity::from(&nulls)),
                        Param::Uniform(30.0),
                        Param::PerRow(&std),
                        3.0,
                        Some(&mut scores),
                    )
                    .unwrap()
                })
            });
        }
    }
    g.finish();
}

/// One layer as plain data for the naive loop: weights `[out][in]`, bias, inputs, outputs.
type RawLayer = (Vec<f32>, Vec<f32>, usize, usize, Activation);

fn autoencoder() -> (Mlp, Vec<RawLayer>) {
    let dims = [64, 16, 8, 16, 64];
    let acts = [
        Activation::Relu,
        Activation::Relu,
        Activation::Relu,
        Activation::Sigmoid,
    ];
    let mut r = rng(11);
    let mut raw = Vec::new();
    let layers = dims
        .windows(2)
        .zip(acts)
        .map(|(d, a)| {
            let w: Vec<f32> = (0..d[0] * d[1]).map(|_| (r() - 0.5) as f32).collect();
            let b: Vec<f32> = (0..d[1]).map(|_| (r() - 0.5) as f32).collect();
            let l = Dense::new(d[0], d[1], &w, WeightLayout::OutIn, &b, a).unwrap();
            raw.push((w, b, d[0], d[1], a));
            l
        })
        .collect();
    (Mlp::new(layers).unwrap(), raw)
}

/// Naive triple loop per layer with std's exp.
fn naive_mlp(raw: &[RawLayer], x: &[f32]) -> Vec<f32> {
    let mut cur = x.to_vec();
    for (w, b, n_in, n_out, act) in raw {
        let rows = cur.len() / n_in;
        let mut y = vec![0.0f32; rows * n_out];
        for r in 0..rows {
            for o in 0..*n_out {
                let mut a = 0.0f32;
                for k in 0..*n_in {
                    a += cur[r * n_in + k] * w[o * n_in + k];
                }
                let v = a + b[o];
                y[r * n_out + o] = match act {
                    Activation::Identity => v,
                    Activation::Relu => v.max(0.0),
                    Activation::Sigmoid => 1.0 / (1.0 + (-v).exp()),
                    Activation::Tanh => v.tanh(),
                };
            }
        }
        cur = y;
    }
    cur
}

fn bench_dense(c: &mut Criterion) {
    let mut g = c.benchmark_group("dense_autoencoder");
    let (net, raw) = autoencoder();
    for rows in [8192usize, 100_000] {
        let mut r = rng(5);
        let x: Vec<f32> = (0..rows * 64).map(|_| (r() * 4.0 - 2.0) as f32).collect();
        // Elements = rows (one inference per row).
        g.throughput(Throughput::Elements(rows as u64));
        g.bench_function(BenchmarkId::new("naive", rows), |b| {
            b.iter(|| naive_mlp(&raw, black_box(&x)))
        });
        for (name, exec) in execs() {
            g.bench_function(BenchmarkId::new(name, rows), |b| {
                b.iter(|| net.forward(exec, black_box(&x)).unwrap())
            });
        }
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_stats, bench_grouped, bench_zscore, bench_dense
}
criterion_main!(benches);
