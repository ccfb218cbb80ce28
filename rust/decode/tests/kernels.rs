//! The decode kernels against slow f64 references written out here, plus their exact properties:
//! tanh's odd symmetry and saturation, gemv's thread-count independence (bitwise), RoPE's identity
//! at angle zero, one-token attention returning the value row, and SwiGLU leaving the `up` half.
//!
//! Tolerances are first-order rounding-error bounds (a small multiple of f32::EPSILON times the sum
//! of the magnitudes of the terms), so a wrong index, sign, constant or order shows up.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::OnceLock;

use decode::kernels;

mod common;
use common::Rng;
use proptest::prelude::*;

const EPS: f64 = f32::EPSILON as f64;

fn pool(n: usize) -> &'static rayon::ThreadPool {
    static POOLS: [OnceLock<rayon::ThreadPool>; 4] =
        [OnceLock::new(), OnceLock::new(), OnceLock::new(), OnceLock::new()];
    POOLS[n].get_or_init(|| rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap())
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

// ---------------------------------------------------------------------------------------------
// tanh

/// |tanh(x) - tanh_f64(x)|, in units of absolute error.
fn tanh_err(x: f32) -> f64 {
    (kernels::tanh(x) as f64 - (x as f64).tanh()).abs()
}

/// The accuracy `kernels::tanh` documents: it reaches 4.95e-7 at x = 5.7797 (f32 Horner rounding;
/// the rational itself is within 1.1e-7 on [0, 9]).
const TANH_TOL: f64 = 6e-7;

/// The worst absolute error over a grid of step 1e-4 on [-12, 12], and where.
fn tanh_worst_on_grid() -> (f64, f32) {
    let n = 240_000;
    let mut worst = (0.0f64, 0.0f32);
    for i in 0..=n {
        let x = -12.0 + 24.0 * i as f32 / n as f32;
        let e = tanh_err(x);
        if e > worst.0 {
            worst = (e, x);
        }
    }
    worst
}

#[test]
fn tanh_matches_f64_on_a_dense_grid() {
    let worst = tanh_worst_on_grid();
    assert!(worst.0 < TANH_TOL, "max abs error {:e} at x = {}", worst.0, worst.1);
    // near zero the relative error is what matters, and a 1e-4 grid step is too coarse
    for i in 0..20_000 {
        let x = i as f32 * 1e-6;
        for x in [x, -x] {
            let t = kernels::tanh(x) as f64;
            let r = (x as f64).tanh();
            assert!((t - r).abs() <= 4.0 * EPS * r.abs(), "tanh({x:e}) = {t:e}, want {r:e}");
        }
    }
}

#[test]
fn tanh_is_odd_exactly_on_a_grid() {
    for i in 0..=100_000 {
        let x = i as f32 * 1.2e-4;
        assert_eq!(kernels::tanh(-x).to_bits(), (-kernels::tanh(x)).to_bits(), "x = {x}");
    }
}

fn beyond_nine() -> Vec<f32> {
    let mut xs: Vec<f32> = (0..=10_000).map(|i| 9.0 + i as f32 * 1e-3).collect();
    xs.extend([19.0, 100.0, 1e6, 1e30, f32::MAX, f32::INFINITY]);
    xs
}

#[test]
fn tanh_is_constant_beyond_nine() {
    let (top, bottom) = (kernels::tanh(9.0), kernels::tanh(-9.0));
    assert!((top as f64 - 1.0).abs() <= EPS, "tanh(9) = {top}");
    for x in beyond_nine() {
        assert_eq!(kernels::tanh(x).to_bits(), top.to_bits(), "tanh({x})");
        assert_eq!(kernels::tanh(-x).to_bits(), bottom.to_bits(), "tanh({})", -x);
    }
}

#[test]
fn tanh_saturates_to_exactly_one_from_nine_and_never_exceeds_it() {
    for x in beyond_nine() {
        assert_eq!(kernels::tanh(x), 1.0, "tanh({x})");
        assert_eq!(kernels::tanh(-x), -1.0, "tanh({})", -x);
    }
    for i in 0..=90_000 {
        let x = i as f32 * 1e-4;
        assert!(kernels::tanh(x) <= 1.0, "tanh({x}) = {}", kernels::tanh(x));
    }
}

#[test]
fn tanh_of_nan_is_nan() {
    assert!(kernels::tanh(f32::NAN).is_nan());
    assert!(kernels::tanh(-f32::NAN).is_nan());
    let mut h = vec![f32::NAN, 1.0, f32::NAN, -2.0];
    kernels::gelu_tanh(&mut h);
    assert!(h[0].is_nan() && h[2].is_nan() && h[1].is_finite() && h[3].is_finite());
    let mut h = vec![1.0, f32::NAN, 0.5, 2.0];
    kernels::swiglu(&mut h);
    assert!(h[0].is_finite() && h[1].is_nan());
}

#[test]
fn tanh_at_zero_is_signed_zero() {
    assert_eq!(kernels::tanh(0.0).to_bits(), 0.0f32.to_bits());
    assert_eq!(kernels::tanh(-0.0).to_bits(), (-0.0f32).to_bits());
}

/// Any finite f32, of either sign, normal, subnormal or zero.
fn finite_f32() -> impl Strategy<Value = f32> {
    use proptest::num::f32::{NEGATIVE, NORMAL, POSITIVE, SUBNORMAL, ZERO};
    POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn tanh_matches_f64_and_is_odd(x in -30.0f32..30.0) {
        prop_assert!(tanh_err(x) < TANH_TOL, "x = {}: error {:e}", x, tanh_err(x));
        prop_assert_eq!(kernels::tanh(-x).to_bits(), (-kernels::tanh(x)).to_bits());
    }

    #[test]
    fn tanh_is_accurate_and_odd_for_any_float(x in finite_f32()) {
        let t = kernels::tanh(x);
        prop_assert_eq!(kernels::tanh(-x).to_bits(), (-t).to_bits());
        prop_assert!(tanh_err(x) < TANH_TOL, "x = {}: error {:e}", x, tanh_err(x));
    }
}

// ---------------------------------------------------------------------------------------------
// gemv

/// y = x W + b in f64, and the sum of the terms' magnitudes (for the error bound).
fn gemv_ref(x: &[f32], w: &[f32], b: Option<&[f32]>, out: usize) -> (Vec<f64>, Vec<f64>) {
    let mut y = vec![0.0f64; out];
    let mut mag = vec![0.0f64; out];
    for j in 0..out {
        let b = b.map_or(0.0, |b| b[j] as f64);
        let (mut s, mut m) = (b, b.abs());
        for (i, &xi) in x.iter().enumerate() {
            let t = xi as f64 * w[i * out + j] as f64;
            s += t;
            m += t.abs();
        }
        y[j] = s;
        mag[j] = m;
    }
    (y, mag)
}

fn check_gemv(y: &[f32], x: &[f32], w: &[f32], b: Option<&[f32]>) {
    let (r, mag) = gemv_ref(x, w, b, y.len());
    let k = (x.len() + 2) as f64 * EPS;
    for j in 0..y.len() {
        let e = (y[j] as f64 - r[j]).abs();
        assert!(e <= k * mag[j], "y[{j}] = {}, want {} (in {}, out {})", y[j], r[j], x.len(), y.len());
    }
}

#[test]
fn gemv_small_hand_case() {
    // x (1, 3) times W (3, 2) = [1*1 + 2*3 + 3*5, 1*2 + 2*4 + 3*6] = [22, 28]
    let x = [1.0, 2.0, 3.0];
    let w = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let mut y = [f32::NAN; 2];
    kernels::gemv(&mut y, &x, &w, None, false);
    assert_eq!(y, [22.0, 28.0]);
    kernels::gemv(&mut y, &x, &w, Some(&[0.5, -1.0]), false);
    assert_eq!(y, [22.5, 27.0]);
}

#[test]
fn gemv_with_empty_input_is_the_bias() {
    let mut y = [f32::NAN; 3];
    kernels::gemv(&mut y, &[], &[], Some(&[1.0, -2.0, 3.5]), false);
    assert_eq!(y, [1.0, -2.0, 3.5]);
    kernels::gemv(&mut y, &[], &[], None, false);
    assert_eq!(y, [0.0; 3]);
}

#[test]
fn gemv_parallel_matches_serial_at_the_threshold_and_with_ragged_tails() {
    let mut rng = Rng(7);
    for (inp, out) in [(1, 1024), (8, 1024), (9, 1025), (17, 1535), (63, 1536), (64, 2048), (70, 2600)] {
        let x = rng.vec(inp, 1.0);
        let w = rng.vec(inp * out, 1.0);
        let b = rng.vec(out, 1.0);
        for bias in [None, Some(&b[..])] {
            let mut serial = vec![f32::NAN; out];
            kernels::gemv(&mut serial, &x, &w, bias, false);
            check_gemv(&serial, &x, &w, bias);
            for n in [1, 2, 3] {
                let mut par = vec![f32::NAN; out];
                pool(n).install(|| kernels::gemv(&mut par, &x, &w, bias, true));
                assert_eq!(bits(&par), bits(&serial), "in {inp} out {out} threads {n} bias {}", bias.is_some());
            }
            // below the threshold `parallel` is a no-op, and must still be right
            let small = 1023.min(out);
            let mut y = vec![f32::NAN; small];
            let ws: Vec<f32> = (0..inp).flat_map(|i| w[i * out..i * out + small].to_vec()).collect();
            pool(2).install(|| kernels::gemv(&mut y, &x, &ws, bias.map(|b| &b[..small]), true));
            check_gemv(&y, &x, &ws, bias.map(|b| &b[..small]));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn gemv_matches_f64(inp in 1usize..70, out in 1usize..1200, bias in any::<bool>(), seed in any::<u64>(),
                        scale in 0.01f32..100.0) {
        let mut rng = Rng(seed);
        let x = rng.vec(inp, scale);
        let w = rng.vec(inp * out, 1.0);
        let b = rng.vec(out, scale);
        let b = bias.then_some(&b[..]);
        let mut y = vec![f32::NAN; out];
        kernels::gemv(&mut y, &x, &w, b, false);
        check_gemv(&y, &x, &w, b);
        // the parallel flag below the threshold changes nothing
        let mut y2 = vec![f32::NAN; out];
        pool(2).install(|| kernels::gemv(&mut y2, &x, &w, b, true));
        prop_assert_eq!(bits(&y2), bits(&y));
    }

    #[test]
    fn gemv_parallel_is_bitwise_serial(inp in 1usize..70, out in 1024usize..2600, bias in any::<bool>(), seed in any::<u64>()) {
        let mut rng = Rng(seed);
        let x = rng.vec(inp, 1.0);
        let w = rng.vec(inp * out, 1.0);
        let b = rng.vec(out, 1.0);
        let b = bias.then_some(&b[..]);
        let mut serial = vec![f32::NAN; out];
        kernels::gemv(&mut serial, &x, &w, b, false);
        check_gemv(&serial, &x, &w, b);
        for n in [2, 3] {
            let mut par = vec![f32::NAN; out];
            pool(n).install(|| kernels::gemv(&mut par, &x, &w, b, true));
            prop_assert_eq!(bits(&par), bits(&serial), "threads {}", n);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// norms

fn epsilon() -> impl Strategy<Value = f32> {
    prop::sample::select(vec![1e-5f32, 1e-6, 1e-12, 0.1])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn layer_norm_matches_f64(n in 1usize..300, bias in any::<bool>(), seed in any::<u64>(),
                              shift in -50.0f32..50.0, scale in 0.001f32..100.0, eps in epsilon()) {
        let mut rng = Rng(seed);
        let x: Vec<f32> = rng.vec(n, scale).into_iter().map(|v| v + shift).collect();
        let w: Vec<f32> = rng.vec(n, 2.0);
        let b = rng.vec(n, 1.0);
        let b = bias.then_some(&b[..]);
        let mut out = vec![f32::NAN; n];
        kernels::layer_norm(&mut out, &x, &w, b, eps);

        let xd: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let mean = xd.iter().sum::<f64>() / n as f64;
        let var = xd.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
        let inv = 1.0 / (var + eps as f64).sqrt();
        for i in 0..n {
            let bi = b.map_or(0.0, |b| b[i] as f64);
            let r = (xd[i] - mean) * inv * w[i] as f64 + bi;
            // x - mean in f32 loses up to an ulp of max(|x|, |mean|); the rest is a few roundings
            let tol = 4.0 * EPS * ((xd[i].abs() + mean.abs()) * inv * (w[i] as f64).abs() + bi.abs());
            prop_assert!((out[i] as f64 - r).abs() <= tol, "out[{}] = {}, want {} (tol {:e})", i, out[i], r, tol);
        }
    }

    #[test]
    fn rms_norm_matches_f64(n in 1usize..300, seed in any::<u64>(), scale in 0.001f32..100.0, eps in epsilon()) {
        let mut rng = Rng(seed);
        let x = rng.vec(n, scale);
        let w = rng.vec(n, 2.0);
        let mut out = vec![f32::NAN; n];
        kernels::rms_norm(&mut out, &x, &w, eps);
        let ms = x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / n as f64;
        let inv = 1.0 / (ms + eps as f64).sqrt();
        for i in 0..n {
            let r = x[i] as f64 * inv * w[i] as f64;
            prop_assert!((out[i] as f64 - r).abs() <= 4.0 * EPS * r.abs(), "out[{}] = {}, want {}", i, out[i], r);
        }
    }
}

#[test]
fn layer_norm_of_a_constant_row_is_the_bias() {
    let x = [3.25f32; 17];
    let w = [2.0f32; 17];
    let b: Vec<f32> = (0..17).map(|i| i as f32 * 0.5 - 1.0).collect();
    let mut out = [f32::NAN; 17];
    kernels::layer_norm(&mut out, &x, &w, Some(&b), 1e-5);
    assert_eq!(&out[..], &b[..]);
    kernels::layer_norm(&mut out, &x, &w, None, 1e-5);
    assert_eq!(out, [0.0; 17]);
}

#[test]
fn layer_norm_known_values() {
    // x = [1, 2, 3, 4]: mean 2.5, biased variance 1.25
    let x = [1.0f32, 2.0, 3.0, 4.0];
    let mut out = [0.0f32; 4];
    kernels::layer_norm(&mut out, &x, &[1.0; 4], None, 1e-12);
    let s = 1.25f64.sqrt();
    for (o, want) in out.iter().zip([-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s]) {
        assert!((*o as f64 - want).abs() < 1e-6, "{out:?}");
    }
    // RMSNorm of [3, 4]: rms = sqrt(12.5)
    let mut out = [0.0f32; 2];
    kernels::rms_norm(&mut out, &[3.0, 4.0], &[1.0, 2.0], 1e-12);
    let r = 12.5f64.sqrt();
    assert!((out[0] as f64 - 3.0 / r).abs() < 1e-6 && (out[1] as f64 - 8.0 / r).abs() < 1e-6, "{out:?}");
}

// ---------------------------------------------------------------------------------------------
// activations

fn gelu_ref(x: f64) -> f64 {
    0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
}

fn gelu_tanh_ref(x: f64) -> f64 {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
}

fn silu_ref(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

#[test]
fn gelu_known_values() {
    // Phi(1) = 0.841344746..., Phi(-1) = 0.158655253...
    let mut h = [0.0f32, 1.0, -1.0, 3.0];
    kernels::gelu(&mut h);
    assert_eq!(h[0], 0.0);
    assert!((h[1] as f64 - 0.841_344_746_068_543).abs() < 1e-7, "{h:?}");
    assert!((h[2] as f64 + 0.158_655_253_931_457).abs() < 1e-7, "{h:?}");
    assert!((h[3] as f64 - 3.0 * 0.998_650_101_968_37).abs() < 1e-6, "{h:?}");
    let mut h = [0.0f32, 1.0];
    kernels::gelu_tanh(&mut h);
    // 0.5 (1 + tanh(sqrt(2/pi) * 1.044715)) = 0.8411919906...
    assert_eq!(h[0], 0.0);
    assert!((h[1] as f64 - 0.841_191_990_607_477).abs() < 1e-6, "{h:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn gelu_matches_f64(seed in any::<u64>(), n in 1usize..200, scale in 0.01f32..12.0) {
        let mut rng = Rng(seed);
        let x = rng.vec(n, scale);
        let mut h = x.clone();
        kernels::gelu(&mut h);
        for (i, &xi) in x.iter().enumerate() {
            let r = gelu_ref(xi as f64);
            // 1 + erf cancels for x << 0: the error is then an ulp of 1 times x/2
            let tol = 4.0 * EPS * (r.abs() + 0.5 * (xi as f64).abs());
            prop_assert!((h[i] as f64 - r).abs() <= tol, "gelu({}) = {}, want {}", xi, h[i], r);
        }
    }

    #[test]
    fn gelu_tanh_matches_f64(seed in any::<u64>(), n in 1usize..200, scale in 0.01f32..12.0) {
        let mut rng = Rng(seed);
        let x = rng.vec(n, scale);
        let mut h = x.clone();
        kernels::gelu_tanh(&mut h);
        for (i, &xi) in x.iter().enumerate() {
            let r = gelu_tanh_ref(xi as f64);
            let tol = 4.0 * EPS * (r.abs() + 0.5 * (xi as f64).abs()) + 0.5 * TANH_TOL * (xi as f64).abs();
            prop_assert!((h[i] as f64 - r).abs() <= tol, "gelu_tanh({}) = {}, want {}", xi, h[i], r);
        }
    }

    #[test]
    fn swiglu_matches_f64(seed in any::<u64>(), n in 1usize..200, scale in 0.01f32..30.0) {
        let mut rng = Rng(seed);
        let mut h = rng.vec(2 * n, scale);
        let orig = h.clone();
        kernels::swiglu(&mut h);
        for i in 0..n {
            let (g, u) = (orig[i] as f64, orig[n + i] as f64);
            let r = silu_ref(g) * u;
            // sigmoid as (1 + tanh(g/2)) / 2: absolute error half tanh's plus an ulp, times |g u|
            let tol = 4.0 * EPS * r.abs() + (0.5 * TANH_TOL + EPS) * (g * u).abs();
            prop_assert!((h[i] as f64 - r).abs() <= tol, "silu({}) * {} = {}, want {}", g, u, h[i], r);
        }
        // the up half is left alone
        prop_assert_eq!(bits(&h[n..]), bits(&orig[n..]));
    }
}

// ---------------------------------------------------------------------------------------------
// RoPE

/// HF: x * cos + rotate_half(x) * sin, rotate_half(x) = cat(-x[half:], x[:half]), per head.
fn rope_ref(x: &[f32], head_dim: usize, cos: &[f32], sin: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let half = head_dim / 2;
    let mut out = vec![0.0; x.len()];
    let mut mag = vec![0.0; x.len()];
    for (h, xh) in x.chunks_exact(head_dim).enumerate() {
        let rot: Vec<f64> =
            (0..head_dim).map(|i| if i < half { -(xh[i + half] as f64) } else { xh[i - half] as f64 }).collect();
        for i in 0..head_dim {
            let (a, b) = (xh[i] as f64 * cos[i] as f64, rot[i] * sin[i] as f64);
            out[h * head_dim + i] = a + b;
            mag[h * head_dim + i] = a.abs() + b.abs();
        }
    }
    (out, mag)
}

fn rope_tables(head_dim: usize, pos: f64, theta: f64) -> (Vec<f32>, Vec<f32>) {
    let half = head_dim / 2;
    let ang: Vec<f64> = (0..head_dim).map(|i| pos * theta.powf(-2.0 * (i % half) as f64 / head_dim as f64)).collect();
    (ang.iter().map(|a| a.cos() as f32).collect(), ang.iter().map(|a| a.sin() as f32).collect())
}

#[test]
fn rope_rotates_pairs_i_and_i_plus_half() {
    // head_dim 4, one head, angle pi/2 on both pairs: (x0, x2) -> (-x2, x0), (x1, x3) -> (-x3, x1)
    let mut x = [1.0f32, 2.0, 3.0, 4.0];
    kernels::rope(&mut x, 4, &[0.0; 4], &[1.0; 4]);
    assert_eq!(x, [-3.0, -4.0, 1.0, 2.0]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn rope_matches_hf_rotate_half(half in 1usize..33, heads in 1usize..6, pos in 0u32..4096, seed in any::<u64>(),
                                   random_tables in any::<bool>()) {
        let hd = 2 * half;
        let mut rng = Rng(seed);
        let (cos, sin) = if random_tables {
            (rng.vec(hd, 1.0), rng.vec(hd, 1.0))
        } else {
            rope_tables(hd, pos as f64, 10000.0)
        };
        let x = rng.vec(heads * hd, 3.0);
        let (r, mag) = rope_ref(&x, hd, &cos, &sin);
        let mut y = x.clone();
        kernels::rope(&mut y, hd, &cos, &sin);
        for i in 0..y.len() {
            prop_assert!((y[i] as f64 - r[i]).abs() <= 2.0 * EPS * mag[i], "y[{}] = {}, want {}", i, y[i], r[i]);
        }
        if !random_tables {
            // a rotation: each head's norm is kept
            for (a, b) in x.chunks_exact(hd).zip(y.chunks_exact(hd)) {
                let na: f64 = a.iter().map(|&v| (v as f64).powi(2)).sum();
                let nb: f64 = b.iter().map(|&v| (v as f64).powi(2)).sum();
                prop_assert!((na - nb).abs() <= 1e-5 * na.max(1e-30));
            }
        }
    }

    #[test]
    fn rope_at_angle_zero_is_the_identity(half in 1usize..33, heads in 1usize..6, seed in any::<u64>()) {
        let hd = 2 * half;
        let mut rng = Rng(seed);
        let x = rng.vec(heads * hd, 100.0);
        let (cos, sin) = rope_tables(hd, 0.0, 10000.0);
        prop_assert!(cos.iter().all(|&c| c == 1.0) && sin.iter().all(|&s| s == 0.0));
        let mut y = x.clone();
        kernels::rope(&mut y, hd, &cos, &sin);
        prop_assert_eq!(bits(&y), bits(&x));
    }
}

// ---------------------------------------------------------------------------------------------
// exp (the softmax's)

#[test]
fn exp_matches_f64_on_the_softmax_range() {
    assert_eq!(kernels::exp(0.0), 1.0);
    assert_eq!(kernels::exp(-0.0), 1.0);
    for i in 0..=870_000 {
        let x = -(i as f32) * 1e-4;
        let (got, want) = (kernels::exp(x) as f64, (x as f64).exp());
        assert!((got - want).abs() <= 2.0 * EPS * want, "exp({x}) = {got:e}, want {want:e}");
    }
    // and a little above zero
    for i in 0..=10_000 {
        let x = i as f32 * 1e-3;
        let (got, want) = (kernels::exp(x) as f64, (x as f64).exp());
        assert!((got - want).abs() <= 2.0 * EPS * want, "exp({x}) = {got:e}, want {want:e}");
    }
    assert!(kernels::exp(f32::NAN).is_nan());
}

#[test]
fn exp_saturates_finite_at_the_top_of_the_f32_range() {
    // clamped at 88.3: accurate up to there, then constant and finite (never +inf)
    let top = kernels::exp(88.3);
    let want = (88.3f32 as f64).exp();
    assert!(((top as f64) - want).abs() <= 2.0 * EPS * want, "exp(88.3) = {top:e}, want {want:e}");
    for x in [88.4f32, 88.7, 89.0, 1e6, f32::MAX, f32::INFINITY] {
        assert_eq!(kernels::exp(x).to_bits(), top.to_bits(), "exp({x})");
    }
}

// ---------------------------------------------------------------------------------------------
// attention

struct AttnCase {
    d: usize,
    cap: usize,
    len: usize,
    q: Vec<f32>,
    /// (d, cap): slots >= len hold NaN, which must never be read
    kt: Vec<f32>,
    /// (cap, d): likewise
    v: Vec<f32>,
}

fn attn_case(d: usize, cap: usize, len: usize, seed: u64, qscale: f32) -> AttnCase {
    let mut rng = Rng(seed);
    let q = rng.vec(d, qscale);
    let mut kt = rng.vec(d * cap, 1.0);
    let mut v = rng.vec(cap * d, 2.0);
    for i in 0..d {
        for t in len..cap {
            kt[i * cap + t] = f32::NAN;
            v[t * d + i] = f32::NAN;
        }
    }
    AttnCase { d, cap, len, q, kt, v }
}

/// softmax(q K^T / sqrt(d)) V in f64, the weights p, and the scores' term magnitudes.
fn attend_ref(c: &AttnCase) -> (Vec<f64>, Vec<f64>, f64) {
    let scale = 1.0 / (c.d as f64).sqrt();
    let mut s = vec![0.0f64; c.len];
    let mut smag = 0.0f64;
    for (t, st) in s.iter_mut().enumerate() {
        let mut m = 0.0;
        for i in 0..c.d {
            let p = c.q[i] as f64 * c.kt[i * c.cap + t] as f64;
            *st += p;
            m += p.abs();
        }
        *st *= scale;
        smag = f64::max(smag, m * scale);
    }
    let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    let p: Vec<f64> = e.iter().map(|x| x / sum).collect();
    let mut out = vec![0.0f64; c.d];
    for (t, &pt) in p.iter().enumerate() {
        for (j, o) in out.iter_mut().enumerate() {
            *o += pt * c.v[t * c.d + j] as f64;
        }
    }
    (out, p, smag)
}

fn run_attend(c: &AttnCase, scratch: usize) -> Vec<f32> {
    let mut out = vec![f32::NAN; c.d];
    let mut scores = vec![f32::NAN; scratch];
    kernels::attend(&mut out, &c.q, &c.kt, &c.v, c.cap, c.len, &mut scores);
    out
}

#[test]
fn attend_two_keys_by_hand() {
    // d = 1, q = 2, keys 0 and ln(3)/2 * ... : scores 0 and 2 k / sqrt(1); pick k1 = ln(3)/2 so
    // the weights are 1/4, 3/4.
    let k1 = (3.0f32).ln() / 2.0;
    let out = run_attend(&AttnCase { d: 1, cap: 2, len: 2, q: vec![2.0], kt: vec![0.0, k1], v: vec![4.0, 8.0] }, 2);
    assert!((out[0] - 7.0).abs() < 1e-5, "{out:?}");
}

#[test]
fn attend_with_equal_scores_averages_the_values() {
    // q = 0: every score is 0, so the output is the plain mean of the value rows
    let (d, cap, len) = (5, 9, 7);
    let mut c = attn_case(d, cap, len, 3, 1.0);
    c.q = vec![0.0; d];
    let out = run_attend(&c, cap);
    for (j, &o) in out.iter().enumerate() {
        let mean = (0..len).map(|t| c.v[t * d + j] as f64).sum::<f64>() / len as f64;
        assert!((o as f64 - mean).abs() <= 16.0 * EPS * 2.0, "out[{j}] = {o}, want {mean}");
    }
}

#[test]
fn attend_does_not_overflow_on_widely_spread_scores() {
    // scores (q.k) -1000, 1000, 500 over d = 4: exp of (s - max) / 2 is (~0, 1, ~0), never an
    // overflow (which would make the output NaN), so the output is the second value row
    let q = [1000.0f32, 0.0, 0.0, 0.0];
    let mut kt = vec![0.0f32; 4 * 3];
    kt[..3].copy_from_slice(&[-1.0, 1.0, 0.5]);
    let v: Vec<f32> = (0..12).map(|i| i as f32 - 5.5).collect();
    let out = run_attend(&AttnCase { d: 4, cap: 3, len: 3, q: q.to_vec(), kt, v: v.clone() }, 3);
    for (o, want) in out.iter().zip(&v[4..8]) {
        assert!((o - want).abs() <= 1e-6, "{out:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn attend_matches_f64_softmax(d in 1usize..65, cap in 1usize..41, len_frac in 0.0f64..1.0, seed in any::<u64>(),
                                  qscale in 0.1f32..8.0, big_scratch in any::<bool>()) {
        let len = 1 + ((cap - 1) as f64 * len_frac) as usize;
        let c = attn_case(d, cap, len, seed, qscale);
        let out = run_attend(&c, if big_scratch { cap + 3 } else { len });
        let (r, p, smag) = attend_ref(&c);
        // a score's absolute error e shifts each weight by a relative ~2e; the sums add ~len ulps
        let es = (d + 2) as f64 * EPS * smag;
        let k = 2.0 * (2.0 * es + (len + d + 4) as f64 * EPS);
        for j in 0..d {
            let mag: f64 = (0..len).map(|t| p[t] * (c.v[t * d + j] as f64).abs()).sum();
            prop_assert!((out[j] as f64 - r[j]).abs() <= k * mag + 1e-30,
                         "out[{}] = {}, want {} (d {} cap {} len {})", j, out[j], r[j], d, cap, len);
        }
    }

    #[test]
    fn attend_over_one_key_is_its_value(d in 1usize..65, cap in 1usize..41, seed in any::<u64>(), qscale in 0.1f32..50.0) {
        let c = attn_case(d, cap, 1, seed, qscale);
        let out = run_attend(&c, 1);
        prop_assert_eq!(&out[..], &c.v[..d]);
    }
}
