//! Locality-sensitive hashing over MinHash signatures: choosing (bands, rows), band keys, and
//! candidate pairs.
//!
//! A signature of `num_perm` values is cut into `bands` bands of `rows` consecutive values
//! (values past `bands * rows` are unused, as in datasketch). Two documents become a candidate
//! pair when they agree on every value of at least one band, which for Jaccard similarity `s`
//! happens with probability `P(s) = 1 - (1 - s^rows)^bands` (Mining of Massive Datasets, ch. 3).
//!
//! `optimal_params` is datasketch's `_optimal_param`: a grid search over every (b, r) with
//! `b * r <= num_perm` minimising `fp_weight * ∫_0^t P(s) ds + fn_weight * ∫_t^1 (1 - P(s)) ds`.
//! datasketch integrates with `scipy.integrate.quad` (adaptive, accurate to ~1e-14); we use
//! composite 5-point Gauss-Legendre on 256 panels, exact to well below 1e-12 for these
//! polynomials of degree <= num_perm, so the chosen (b, r) agree with datasketch's.
//!
//! Band key format (stable; stored indexes depend on it): for band `j` (0-based), the `rows`
//! values `sig[j*rows .. (j+1)*rows]` are written as little-endian u64 bytes and hashed with
//! xxh3-64 seeded with `j`. The seed keeps equal values in different bands apart.
//!
//! Candidate pairs: per band, (key, doc) entries are sorted and every pair inside a run of equal
//! keys is emitted; bands run in parallel and the union is sorted and deduplicated, so the result
//! does not depend on the thread count. A bucket of `g` documents yields `g(g-1)/2` pairs: a huge
//! bucket (thousands of near-identical documents that are not byte-identical) is quadratic.
//!
//! Performance notes: see `dedup` and `tests/cluster_bench.rs`. `optimal_params` takes ~12 ms for
//! num_perm 128 and ~0.12 s for 1024 (release, 2 threads).

use rayon::prelude::*;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::error::{try_vec, MinHashError, Result};

/// Largest `num_perm` accepted by [`optimal_params`] (its grid has ~`num_perm * ln(num_perm)`
/// points, each needing two integrals).
pub const MAX_OPTIMIZE_PERM: usize = 8192;

/// Probability that two documents with Jaccard similarity `s` share at least one band key.
pub fn candidate_probability(s: f64, bands: usize, rows: usize) -> f64 {
    let r = i32::try_from(rows).unwrap_or(i32::MAX);
    let b = i32::try_from(bands).unwrap_or(i32::MAX);
    1.0 - (1.0 - s.powi(r)).powi(b)
}

/// Gauss-Legendre 5-point nodes and weights on [-1, 1].
const GL_NODES: [f64; 5] =
    [0.0, -0.538_469_310_105_683_1, 0.538_469_310_105_683_1, -0.906_179_845_938_664, 0.906_179_845_938_664];
const GL_WEIGHTS: [f64; 5] = [
    0.568_888_888_888_888_9,
    0.478_628_670_499_366_5,
    0.478_628_670_499_366_5,
    0.236_926_885_056_189_1,
    0.236_926_885_056_189_1,
];
const PANELS: usize = 256;

/// ∫_a^b f(s) ds by composite 5-point Gauss-Legendre on [`PANELS`] equal panels.
fn integrate(f: impl Fn(f64) -> f64, a: f64, b: f64) -> f64 {
    let h = (b - a) / PANELS as f64;
    let mut total = 0.0;
    for p in 0..PANELS {
        let mid = a + (p as f64 + 0.5) * h;
        let mut panel = 0.0;
        for (x, w) in GL_NODES.iter().zip(GL_WEIGHTS.iter()) {
            panel += w * f(mid + 0.5 * h * x);
        }
        total += 0.5 * h * panel;
    }
    total
}

/// The weighted error datasketch minimises for one (b, r).
pub fn weighted_error(threshold: f64, bands: usize, rows: usize, fp_weight: f64, fn_weight: f64) -> f64 {
    let fp = integrate(|s| candidate_probability(s, bands, rows), 0.0, threshold);
    let fn_ = integrate(|s| 1.0 - candidate_probability(s, bands, rows), threshold, 1.0);
    fp_weight * fp + fn_weight * fn_
}

/// datasketch's `_optimal_param`: over all (b, r) with `b * r <= num_perm`, minimise
/// `fp_weight * ∫_0^t P(candidate|s) ds + fn_weight * ∫_t^1 (1 - P(candidate|s)) ds`.
/// Ties go to the first (b, r) in datasketch's order (b ascending, then r ascending).
/// Returns `(bands, rows)`.
///
/// Errors: `threshold` outside (0, 1), a weight negative or not finite, both weights zero,
/// `num_perm` 0 or above [`MAX_OPTIMIZE_PERM`].
pub fn optimal_params(threshold: f64, num_perm: usize, fp_weight: f64, fn_weight: f64) -> Result<(usize, usize)> {
    if !(threshold > 0.0 && threshold < 1.0) {
        return Err(MinHashError::arg("threshold", threshold, "must be in (0, 1)"));
    }
    if num_perm == 0 || num_perm > MAX_OPTIMIZE_PERM {
        return Err(MinHashError::arg("num_perm", num_perm, format!("must be in 1..={MAX_OPTIMIZE_PERM}")));
    }
    for (name, w) in [("fp_weight", fp_weight), ("fn_weight", fn_weight)] {
        if !(w.is_finite() && w >= 0.0) {
            return Err(MinHashError::arg(name, w, "must be finite and >= 0"));
        }
    }
    if fp_weight == 0.0 && fn_weight == 0.0 {
        return Err(MinHashError::arg("fn_weight", fn_weight, "fp_weight and fn_weight cannot both be 0"));
    }
    let grid: Vec<(usize, usize)> = (1..=num_perm).flat_map(|b| (1..=num_perm / b).map(move |r| (b, r))).collect();
    let errors: Vec<f64> =
        grid.par_iter().map(|&(b, r)| weighted_error(threshold, b, r, fp_weight, fn_weight)).collect();
    let mut best = (f64::INFINITY, (0, 0));
    for (&br, &e) in grid.iter().zip(errors.iter()) {
        if e < best.0 {
            best = (e, br);
        }
    }
    Ok(best.1)
}

/// Checks that a (bands, rows) split fits a signature of `num_perm` values.
pub fn check_bands(num_perm: usize, bands: usize, rows: usize) -> Result<()> {
    if bands == 0 {
        return Err(MinHashError::arg("bands", bands, "must be >= 1"));
    }
    if rows == 0 {
        return Err(MinHashError::arg("rows", rows, "must be >= 1"));
    }
    match bands.checked_mul(rows) {
        Some(used) if used <= num_perm => Ok(()),
        _ => Err(MinHashError::arg(
            "bands",
            bands,
            format!("bands * rows = {bands} * {rows} exceeds num_perm = {num_perm}"),
        )),
    }
}

/// Band keys of one signature into `out` (its first `bands` slots); see the module docs for the
/// stable format. Errors if `sig` is shorter than `bands * rows` or `out` shorter than `bands`.
pub fn band_keys(sig: &[u64], bands: usize, rows: usize, out: &mut [u64]) -> Result<()> {
    check_bands(sig.len(), bands, rows)?;
    if out.len() < bands {
        return Err(MinHashError::arg("out", out.len(), format!("needs room for {bands} band keys")));
    }
    band_keys_into(sig, rows, &mut out[..bands]);
    Ok(())
}

/// [`band_keys`] without checks: fills every slot of `out` (one per band) from `sig`.
pub(crate) fn band_keys_into(sig: &[u64], rows: usize, out: &mut [u64]) {
    let mut buf = vec![0u8; rows * 8];
    for ((j, band), key) in sig.chunks_exact(rows).enumerate().zip(out.iter_mut()) {
        for (v, dst) in band.iter().zip(buf.chunks_exact_mut(8)) {
            dst.copy_from_slice(&v.to_le_bytes());
        }
        *key = xxh3_64_with_seed(&buf, j as u64);
    }
}

/// [`band_key_matrix`] with its shapes checked: `signatures` must hold whole rows of `num_perm`
/// values and `bands * rows <= num_perm`. The stage a distributed job maps over shards.
pub fn band_key_matrix_checked(signatures: &[u64], num_perm: usize, bands: usize, rows: usize) -> Result<Vec<u64>> {
    check_bands(num_perm, bands, rows)?;
    if signatures.len() % num_perm != 0 {
        return Err(MinHashError::arg(
            "signatures",
            signatures.len(),
            format!("not whole rows of num_perm={num_perm}"),
        ));
    }
    Ok(band_key_matrix(signatures, num_perm, bands, rows))
}

/// Band keys of every row of a row-major `n x num_perm` signature matrix: a row-major
/// `n x bands` key matrix, computed in parallel. Callers validate shapes.
pub(crate) fn band_key_matrix(signatures: &[u64], num_perm: usize, bands: usize, rows: usize) -> Vec<u64> {
    let n = signatures.len() / num_perm;
    let mut keys = vec![0u64; n * bands];
    keys.par_chunks_exact_mut(bands)
        .zip(signatures.par_chunks_exact(num_perm))
        .for_each(|(out, sig)| band_keys_into(sig, rows, out));
    keys
}

/// Candidate pairs `(i, j)`, `i < j`, sorted and deduplicated: documents that share at least
/// one band key. `keys` is a row-major `n x bands` matrix; documents with `skip[i]` take no
/// part. Parallel over bands; the result does not depend on the thread count.
///
/// Errors if `keys.len() != n * bands`, `skip.len() != n`, or `n` does not fit in u32, and
/// (`OutOfMemory`) when the pairs do not fit in memory.
pub fn candidate_pairs(keys: &[u64], n: usize, bands: usize, skip: &[bool]) -> Result<Vec<(u32, u32)>> {
    if n.checked_mul(bands) != Some(keys.len()) {
        return Err(MinHashError::arg("keys", keys.len(), format!("expected n * bands = {n} * {bands} keys")));
    }
    if skip.len() != n {
        return Err(MinHashError::arg("skip", skip.len(), format!("expected one flag per document ({n})")));
    }
    if u32::try_from(n).is_err() {
        return Err(MinHashError::arg("n", n, "at most u32::MAX documents"));
    }
    Ok(candidate_pairs_packed(keys, bands, skip)?.into_iter().map(unpack).collect())
}

/// Pair `(i, j)` packed as `i << 32 | j`, so sorting packed pairs sorts by (i, j).
fn pack(i: u32, j: u32) -> u64 {
    (u64::from(i) << 32) | u64::from(j)
}

fn unpack(p: u64) -> (u32, u32) {
    ((p >> 32) as u32, p as u32)
}

/// Candidate pairs as sorted, deduplicated packed u64s. Callers validate shapes (`n` is
/// `skip.len()` and fits in u32). Each band's pairs are counted before they are stored (a bucket
/// of `g` documents gives `g(g-1)/2`), so a bucket too large for memory is `OutOfMemory`, not
/// an abort.
pub(crate) fn candidate_pairs_packed(keys: &[u64], bands: usize, skip: &[bool]) -> Result<Vec<u64>> {
    if bands == 0 {
        return Ok(Vec::new());
    }
    let per_band: Vec<Vec<u64>> = (0..bands)
        .into_par_iter()
        .map(|j| {
            let mut col: Vec<(u64, u32)> = keys
                .chunks_exact(bands)
                .zip(skip.iter())
                .enumerate()
                .filter(|(_, (_, &s))| !s)
                .map(|(i, (row, _))| (row[j], i as u32))
                .collect();
            col.sort_unstable();
            let count: u128 = col
                .chunk_by(|a, b| a.0 == b.0)
                .map(|run| {
                    let g = run.len() as u128;
                    g * (g - 1) / 2
                })
                .sum();
            let mut pairs =
                try_vec(usize::try_from(count).unwrap_or(usize::MAX), format!("band {j}'s candidate pairs"))?;
            for run in col.chunk_by(|a, b| a.0 == b.0) {
                for (a, &(_, i)) in run.iter().enumerate() {
                    for &(_, k) in &run[a + 1..] {
                        pairs.push(pack(i, k));
                    }
                }
            }
            Ok(pairs)
        })
        .collect::<Result<_>>()?;
    let mut all = try_vec(per_band.iter().map(Vec::len).sum(), "the candidate pairs of every band")?;
    for pairs in per_band {
        all.extend_from_slice(&pairs);
    }
    all.par_sort_unstable();
    all.dedup();
    Ok(all)
}

/// Unpacks packed pairs (crate-internal helper for `dedup`).
pub(crate) fn unpack_pair(p: u64) -> (u32, u32) {
    unpack(p)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    /// datasketch's scipy-free `_integration` (midpoint rule), with a finer step: the slow oracle.
    fn naive_integral(f: impl Fn(f64) -> f64, a: f64, b: f64, step: f64) -> f64 {
        let mut area = 0.0;
        let mut x = a;
        while x < b {
            let w = step.min(b - x);
            area += f(x + 0.5 * w) * w;
            x += step;
        }
        area
    }

    fn naive_optimal(t: f64, n: usize, wfp: f64, wfn: f64) -> ((usize, usize), f64) {
        let p = |s: f64, b: usize, r: usize| 1.0 - (1.0 - s.powf(r as f64)).powf(b as f64);
        let mut best = (f64::INFINITY, (0, 0));
        for b in 1..=n {
            for r in 1..=n / b {
                let fp = naive_integral(|s| p(s, b, r), 0.0, t, 1e-4);
                let fn_ = naive_integral(|s| 1.0 - p(s, b, r), t, 1.0, 1e-4);
                let e = wfp * fp + wfn * fn_;
                if e < best.0 {
                    best = (e, (b, r));
                }
            }
        }
        (best.1, best.0)
    }

    #[test]
    fn optimal_params_matches_naive_grid_search() {
        for &(t, n, wfp, wfn) in &[
            (0.8, 128, 0.5, 0.5),
            (0.8, 128, 0.1, 0.9),
            (0.5, 64, 0.5, 0.5),
            (0.9, 128, 0.5, 0.5),
            (0.7, 100, 0.3, 0.7),
            (0.3, 32, 0.5, 0.5),
        ] {
            let (b, r) = optimal_params(t, n, wfp, wfn).unwrap();
            assert!(b * r <= n);
            let (oracle, oracle_err) = naive_optimal(t, n, wfp, wfn);
            // Equal unless two grid points are within the oracle's own integration error.
            let ours = weighted_error(t, b, r, wfp, wfn);
            assert!(
                (b, r) == oracle || (ours - oracle_err).abs() < 1e-7,
                "t={t} n={n} w=({wfp},{wfn}): ours {:?} ({ours}), oracle {:?} ({oracle_err})",
                (b, r),
                oracle
            );
        }
    }

    #[test]
    fn optimal_params_known_datasketch_values() {
        // datasketch docstring: MinHashLSH(threshold=0.9, num_perm=128) -> b=5, r=25.
        assert_eq!(optimal_params(0.9, 128, 0.5, 0.5).unwrap(), (5, 25));
        // Computed with datasketch's formula (Simpson, 400 panels) in Python.
        assert_eq!(optimal_params(0.8, 128, 0.5, 0.5).unwrap(), (9, 13));
        assert_eq!(optimal_params(0.8, 128, 0.1, 0.9).unwrap(), (14, 9));
        assert_eq!(optimal_params(0.8, 128, 0.05, 0.95).unwrap(), (16, 8));
        assert_eq!(optimal_params(0.8, 128, 0.02, 0.98).unwrap(), (17, 7));
        assert_eq!(optimal_params(0.5, 128, 0.5, 0.5).unwrap(), (25, 5));
        assert_eq!(optimal_params(0.7, 256, 0.5, 0.5).unwrap(), (25, 10));
    }

    #[test]
    fn optimal_params_rejects_bad_input() {
        for t in [0.0, 1.0, -0.1, 1.5, f64::NAN] {
            assert!(matches!(optimal_params(t, 128, 0.5, 0.5), Err(MinHashError::InvalidArgument { .. })));
        }
        assert!(optimal_params(0.8, 0, 0.5, 0.5).is_err());
        assert!(optimal_params(0.8, MAX_OPTIMIZE_PERM + 1, 0.5, 0.5).is_err());
        assert!(optimal_params(0.8, 128, -0.1, 0.5).is_err());
        assert!(optimal_params(0.8, 128, 0.5, f64::INFINITY).is_err());
        assert!(optimal_params(0.8, 128, 0.0, 0.0).is_err());
        assert!(optimal_params(0.8, 1, 0.5, 0.5).unwrap() == (1, 1));
    }

    #[test]
    fn integration_is_accurate() {
        // ∫_0^1 s^127 ds = 1/128; ∫_0^0.8 (1 - (1 - s^8)^16) ds vs the fine midpoint rule.
        assert!((integrate(|s| s.powi(127), 0.0, 1.0) - 1.0 / 128.0).abs() < 1e-14);
        let a = integrate(|s| candidate_probability(s, 16, 8), 0.0, 0.8);
        let b = naive_integral(|s| candidate_probability(s, 16, 8), 0.0, 0.8, 1e-6);
        assert!((a - b).abs() < 1e-10, "{a} vs {b}");
    }

    #[test]
    fn band_keys_format_is_locked() {
        let sig: Vec<u64> = (0..12u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).collect();
        let mut out = [0u64; 3];
        band_keys(&sig, 3, 4, &mut out).unwrap();
        // Independent recomputation of the documented format.
        for (j, key) in out.iter().enumerate() {
            let bytes: Vec<u8> = sig[j * 4..(j + 1) * 4].iter().flat_map(|v| v.to_le_bytes()).collect();
            assert_eq!(*key, xxh3_64_with_seed(&bytes, j as u64));
        }
        // Hard-coded: changing the format breaks stored indexes.
        assert_eq!(out, GOLDEN);
        // Equal values in different bands give different keys.
        let flat = [7u64; 8];
        let mut k2 = [0u64; 2];
        band_keys(&flat, 2, 4, &mut k2).unwrap();
        assert_ne!(k2[0], k2[1]);
    }

    const GOLDEN: [u64; 3] = [0x8c18_e77b_36c4_3740, 0xc362_97be_1128_60f5, 0x0769_9502_a18b_5676];

    #[test]
    fn band_keys_rejects_bad_shapes() {
        let sig = [1u64; 10];
        let mut out = [0u64; 4];
        assert!(band_keys(&sig, 3, 4, &mut out).is_err());
        assert!(band_keys(&sig, 0, 4, &mut out).is_err());
        assert!(band_keys(&sig, 2, 0, &mut out).is_err());
        assert!(band_keys(&sig, 5, 2, &mut out).is_err());
        assert!(band_keys(&sig, 4, 2, &mut out).is_ok());
    }

    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn candidate_pairs_match_all_pairs_oracle() {
        let mut rng = 0x1234_5678_9abc_def1u64;
        for trial in 0..200 {
            let n = (xorshift(&mut rng) % 40) as usize;
            let bands = 1 + (xorshift(&mut rng) % 6) as usize;
            let alphabet = 1 + xorshift(&mut rng) % 12; // small key space: many collisions
            let keys: Vec<u64> = (0..n * bands).map(|_| xorshift(&mut rng) % alphabet).collect();
            let skip: Vec<bool> = (0..n).map(|_| xorshift(&mut rng) % 5 == 0).collect();
            let got = candidate_pairs(&keys, n, bands, &skip).unwrap();
            let mut want = Vec::new();
            for i in 0..n {
                for j in i + 1..n {
                    if !skip[i] && !skip[j] && (0..bands).any(|b| keys[i * bands + b] == keys[j * bands + b]) {
                        want.push((i as u32, j as u32));
                    }
                }
            }
            assert_eq!(got, want, "trial {trial}");
        }
    }

    #[test]
    fn candidate_pairs_same_on_one_and_two_threads() {
        let mut rng = 0xdead_beef_u64;
        let (n, bands) = (3000, 8);
        let keys: Vec<u64> = (0..n * bands).map(|_| xorshift(&mut rng) % 500).collect();
        let skip = vec![false; n];
        let run = |t: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap();
            pool.install(|| candidate_pairs(&keys, n, bands, &skip).unwrap())
        };
        let one = run(1);
        assert!(!one.is_empty());
        assert_eq!(one, run(2));
    }

    #[test]
    fn candidate_pairs_rejects_bad_shapes() {
        assert!(candidate_pairs(&[1, 2, 3], 2, 2, &[false, false]).is_err());
        assert!(candidate_pairs(&[1, 2, 3, 4], 2, 2, &[false]).is_err());
        assert_eq!(candidate_pairs(&[], 0, 3, &[]).unwrap(), vec![]);
    }

    #[test]
    fn candidate_probability_values() {
        assert!((candidate_probability(0.8, 16, 8) - 0.947).abs() < 1e-3);
        assert_eq!(candidate_probability(1.0, 3, 5), 1.0);
        assert_eq!(candidate_probability(0.0, 3, 5), 0.0);
    }
}
