//! The arithmetic of one decode step on single f32 rows: GEMV, norms, activations, RoPE and
//! one-query attention.
//!
//! Written by hand (not BLAS) because at batch 1 a step is ~40 tiny products and ~80 tiny
//! element-wise ops: PyTorch spends more time dispatching those ops than computing them (measured
//! 2-4 ms of a 6-8 ms step for the 14M-parameter bench model on the 2-core box), and the products
//! are bound by reading the weights, which a plain loop does as fast as MKL. Every loop is written
//! so that rustc vectorises it at the baseline target (SSE2), with no `unsafe` and no
//! reassociation: each output element sums its terms in input order, so results do not depend on
//! the thread count. The hot loops run under `pulp::Arch::dispatch`, which compiles them again for
//! AVX2+FMA and AVX-512 and picks one at run time (measured 10-15% faster than SSE2 for the
//! products); rustc never contracts a*b+c into an FMA, so every path computes the same bits.

use pulp::Arch;
use rayon::prelude::*;

/// Output columns per parallel task (a multiple of every SIMD width).
const COLS_PER_TASK: usize = 512;

/// y = x W + b for one row x (in), W (in, out) row-major, b (out) or none. Streams W row by row,
/// eight rows per pass so y is loaded and stored once per eight rows. With `parallel`, splits the
/// output columns over the current rayon pool (the same sums in the same order).
pub fn gemv(y: &mut [f32], x: &[f32], w: &[f32], b: Option<&[f32]>, parallel: bool) {
    let out = y.len();
    debug_assert_eq!(w.len(), x.len() * out);
    if parallel && out >= 2 * COLS_PER_TASK {
        y.par_chunks_mut(COLS_PER_TASK).enumerate().for_each(|(t, yc)| {
            let c0 = t * COLS_PER_TASK;
            let b = b.map(|b| &b[c0..c0 + yc.len()]);
            Arch::new().dispatch(Gemv { y: yc, x, w, stride: out, c0, b });
        });
    } else {
        Arch::new().dispatch(Gemv { y, x, w, stride: out, c0: 0, b });
    }
}

/// `gemv_cols` as a pulp op: `with_simd` is compiled once per instruction set, with the loop
/// inlined into it (a closure there is not reliably inlined, and then runs at the baseline).
struct Gemv<'a> {
    y: &'a mut [f32],
    x: &'a [f32],
    w: &'a [f32],
    stride: usize,
    c0: usize,
    b: Option<&'a [f32]>,
}

impl pulp::WithSimd for Gemv<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        gemv_cols(self.y, self.x, self.w, self.stride, self.c0, self.b)
    }
}

/// Columns c0..c0+y.len() of x W + b, W with row stride `stride`.
#[inline(always)]
fn gemv_cols(y: &mut [f32], x: &[f32], w: &[f32], stride: usize, c0: usize, b: Option<&[f32]>) {
    let n = y.len();
    match b {
        Some(b) => y.copy_from_slice(b),
        None => y.fill(0.0),
    }
    let row = |i: usize| &w[i * stride + c0..i * stride + c0 + n];
    let blocks = x.len() / 8;
    for blk in 0..blocks {
        let i = blk * 8;
        let xs = &x[i..i + 8];
        let (r0, r1, r2, r3) = (row(i), row(i + 1), row(i + 2), row(i + 3));
        let (r4, r5, r6, r7) = (row(i + 4), row(i + 5), row(i + 6), row(i + 7));
        for j in 0..n {
            // left to right: the same order as one row at a time
            y[j] = y[j]
                + xs[0] * r0[j]
                + xs[1] * r1[j]
                + xs[2] * r2[j]
                + xs[3] * r3[j]
                + xs[4] * r4[j]
                + xs[5] * r5[j]
                + xs[6] * r6[j]
                + xs[7] * r7[j];
        }
    }
    for (i, &xi) in x.iter().enumerate().skip(blocks * 8) {
        for (yj, wj) in y.iter_mut().zip(row(i)) {
            *yj += xi * wj;
        }
    }
}

/// LayerNorm over the whole row (biased variance, as torch), statistics accumulated in f64.
pub fn layer_norm(out: &mut [f32], x: &[f32], w: &[f32], b: Option<&[f32]>, eps: f32) {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let inv = 1.0 / (var + eps as f64).sqrt();
    let (mean, inv) = (mean as f32, inv as f32);
    for (i, o) in out.iter_mut().enumerate() {
        *o = (x[i] - mean) * inv * w[i] + b.map_or(0.0, |b| b[i]);
    }
}

/// RMSNorm (Zhang & Sennrich 2019, Llama): x / sqrt(mean(x^2) + eps) * w.
pub fn rms_norm(out: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
    let ms = x.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / x.len() as f64;
    let inv = (1.0 / (ms + eps as f64).sqrt()) as f32;
    for (i, o) in out.iter_mut().enumerate() {
        *o = x[i] * inv * w[i];
    }
}

/// Exact GELU: x/2 (1 + erf(x / sqrt 2)).
pub fn gelu(x: &mut [f32]) {
    for v in x {
        *v = 0.5 * *v * (1.0 + libm::erff(*v * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// tanh as a 13/6-degree rational function of x (the interpolant of Eigen's vectorised
/// `generic_fast_tanh_float`, coefficients from there): within 6e-7 of tanh in f32 (measured:
/// 5e-7 worst, near |x| = 5.8), inputs clamped to +-7.90531 as Eigen does and the result to
/// [-1, 1], so it saturates at exactly +-1. Written out so the loops that call it vectorise
/// (libm's tanhf is a scalar call per element): a (32, 1536) GELU measured ~35 us against
/// ATen's 125 us.
#[inline(always)]
#[allow(clippy::excessive_precision)] // Eigen's coefficients, as published
pub fn tanh(x: f32) -> f32 {
    const A: [f32; 7] =
        [4.893_524_6e-3, 6.372_619_3e-4, 1.485_722_4e-5, 5.122_297e-8, -8.604_672e-11, 2.000_188e-13, -2.760_768_5e-16];
    const B: [f32; 4] = [4.893_525_2e-3, 2.268_434_6e-3, 1.185_347e-4, 1.198_258_4e-6];
    let x = x.clamp(-7.905_311, 7.905_311);
    let x2 = x * x;
    let mut p = A[6];
    for &a in A[..6].iter().rev() {
        p = p * x2 + a;
    }
    let q = ((B[3] * x2 + B[2]) * x2 + B[1]) * x2 + B[0];
    (x * p / q).clamp(-1.0, 1.0)
}

/// e^x in the manner of Cephes' expf (S. Moshier): x = n ln 2 + r with |r| <= ln(2)/2, e^r by
/// a degree-7 polynomial, 2^n put in the exponent bits. Within 2 ulp of e^x on [-87.3, 88.3];
/// inputs are clamped to that range (so e^x saturates near 2.1e38 instead of reaching +inf at
/// 88.72; a softmax only passes x <= 0). Written out so that softmax loops vectorise (libm's
/// expf is a scalar call per element).
#[inline(always)]
#[allow(clippy::excessive_precision)] // Cephes' coefficients, as published
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_375; // ln 2 split in two: an exact part
    const C2: f32 = -2.121_944_4e-4; // and the rest
    const P: [f32; 6] =
        [1.987_569_15e-4, 1.398_199_95e-3, 8.333_451_9e-3, 4.166_579_59e-2, 1.666_666_55e-1, 5.000_000_12e-1];
    let x = x.clamp(-87.3, 88.3);
    let n = (x * LOG2E + 0.5).floor();
    let r = x - n * C1 - n * C2;
    let mut y = P[0];
    for &c in &P[1..] {
        y = y * r + c;
    }
    let y = y * r * r + r + 1.0;
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// GELU, tanh approximation (Hendrycks & Gimpel; GPT-2, HF "gelu_new").
pub fn gelu_tanh(x: &mut [f32]) {
    Arch::new().dispatch(GeluTanh(x))
}

/// `gelu_tanh`'s loop as a pulp op (a closure there is not reliably inlined into the
/// instruction-set function, and then runs at the baseline).
struct GeluTanh<'a>(&'a mut [f32]);

impl pulp::WithSimd for GeluTanh<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        const C: f32 = 0.797_884_6; // sqrt(2 / pi)
        for v in self.0.iter_mut() {
            let u = *v;
            *v = 0.5 * u * (1.0 + tanh(C * (u + 0.044715 * u * u * u)));
        }
    }
}

/// h[i] = silu(gate[i]) * up[i] for gate|up = h[..n], h[n..2n]; the result in h[..n]. The
/// sigmoid is (1 + tanh(x/2)) / 2, so the loop vectorises (see `tanh`).
pub fn swiglu(h: &mut [f32]) {
    Arch::new().dispatch(SwiGlu(h))
}

struct SwiGlu<'a>(&'a mut [f32]);

impl pulp::WithSimd for SwiGlu<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let n = self.0.len() / 2;
        let (gate, up) = self.0.split_at_mut(n);
        for (g, u) in gate.iter_mut().zip(up.iter()) {
            *g = *g * (0.5 + 0.5 * tanh(0.5 * *g)) * u;
        }
    }
}

/// RoPE in HF Llama's rotate_half layout on each head of `x` (heads * head_dim):
/// x * cos + rotate_half(x) * sin, rotate_half(x) = (-x2, x1).
pub fn rope(x: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32]) {
    let half = head_dim / 2;
    for h in x.chunks_exact_mut(head_dim) {
        for i in 0..half {
            let (a, b) = (h[i], h[i + half]);
            h[i] = a * cos[i] - b * sin[i];
            h[i + half] = b * cos[i + half] + a * sin[i + half];
        }
    }
}

/// Attention of one query head q (head_dim) over the first `len` cached keys/values of one KV
/// head: softmax(q K^T / sqrt(d)) V into `out`. Keys are stored transposed, (head_dim, cap), so
/// the scores are head_dim axpys over contiguous key rows (vectorised, no reassociation); values
/// are (cap, head_dim). `scores` is scratch of at least `len`.
pub fn attend(out: &mut [f32], q: &[f32], kt: &[f32], v: &[f32], cap: usize, len: usize, scores: &mut [f32]) {
    Arch::new().dispatch(Attend { out, q, kt, v, cap, len, scores })
}

struct Attend<'a> {
    out: &'a mut [f32],
    q: &'a [f32],
    kt: &'a [f32],
    v: &'a [f32],
    cap: usize,
    len: usize,
    scores: &'a mut [f32],
}

impl pulp::WithSimd for Attend<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        attend_impl(self.out, self.q, self.kt, self.v, self.cap, self.len, self.scores)
    }
}

#[inline(always)]
fn attend_impl(out: &mut [f32], q: &[f32], kt: &[f32], v: &[f32], cap: usize, len: usize, scores: &mut [f32]) {
    let d = q.len();
    let scale = 1.0 / (d as f32).sqrt();
    let scores = &mut scores[..len];
    scores.fill(0.0);
    for (i, &qi) in q.iter().enumerate() {
        for (s, &k) in scores.iter_mut().zip(&kt[i * cap..i * cap + len]) {
            *s += qi * k;
        }
    }
    let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
    for s in scores.iter_mut() {
        *s = exp((*s - max) * scale); // a loop of its own: it vectorises
    }
    let sum = scores.iter().sum::<f32>();
    out.fill(0.0);
    for (t, &p) in scores.iter().enumerate() {
        for (o, &x) in out.iter_mut().zip(&v[t * d..t * d + d]) {
            *o += p * x;
        }
    }
    let inv = 1.0 / sum;
    for o in out.iter_mut() {
        *o *= inv;
    }
}
