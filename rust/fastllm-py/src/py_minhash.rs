//! Bindings for near-duplicate detection: `_core.Deduper` (signatures, batch dedup, and the
//! incremental on-disk index). The Python facade (`fastllm/dedup.py`) validates arguments and
//! owns the user-facing API; these signatures are private, and keyword-only where several
//! arguments share a type (the constructor, `optimal_params`).
//!
//! Texts are featurized (normalize -> shingle -> sign, one pass per text) on the pool with the
//! GIL released; results come back as numpy arrays where they are per-document.

use std::path::Path;
use std::sync::Mutex;

use minhash::dedup::{clusters, dedup, Params, Verify};
use minhash::features::{featurize, Features};
use minhash::index::Index;
use minhash::lsh::{band_key_matrix_checked, candidate_pairs, optimal_params};
use minhash::normalize::NormalizeOptions;
use minhash::shingle::Shingling;
use minhash::signature::MinHasher;
use numpy::{IntoPyArray, PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;

use crate::errors::IntoPy;
use crate::pool;

/// `(keep, cluster_ids, clusters)`: which documents to keep, each one's cluster, the clusters.
type ClustersOut<'py> = (Bound<'py, PyArray1<bool>>, Bound<'py, PyArray1<i64>>, Vec<Vec<u32>>);
/// `Deduper.dedup`'s answer: `ClustersOut`'s three, the verified edges `(a, b, similarity)`, and
/// the counts `(exact_duplicates, too_short, candidates)`.
type DedupOut<'py> =
    (Bound<'py, PyArray1<bool>>, Bound<'py, PyArray1<i64>>, Vec<Vec<u32>>, Vec<(u32, u32, f64)>, (usize, usize, usize));

/// Everything needed to featurize text the same way later (stored in the index file).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Settings {
    num_perm: usize,
    seed: u64,
    ngram: usize,
    char_ngrams: bool,
    lowercase: bool,
    strip_punctuation: bool,
}

impl Settings {
    fn encode(&self) -> Vec<u8> {
        format!(
            "num_perm={};seed={};ngram={};char_ngrams={};lowercase={};strip_punctuation={}",
            self.num_perm, self.seed, self.ngram, self.char_ngrams, self.lowercase, self.strip_punctuation
        )
        .into_bytes()
    }

    /// The settings stored in an index file, checked as the constructor checks its arguments (and
    /// against the index itself: the file's checksum only proves the bytes are the ones written,
    /// not that they make sense). Every key exactly once; nothing is allocated from them here.
    fn decode(bytes: &[u8], path: &str, index: &Index) -> PyResult<Self> {
        let bad = |why: String| PyValueError::new_err(format!("{path}: bad settings in the index file: {why}"));
        let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8".into()))?;
        let mut values: [Option<&str>; 6] = [None; 6];
        const KEYS: [&str; 6] = ["num_perm", "seed", "ngram", "char_ngrams", "lowercase", "strip_punctuation"];
        for kv in text.split(';') {
            let (k, v) = kv.split_once('=').ok_or_else(|| bad(format!("{kv:?} is not key=value")))?;
            let slot = KEYS.iter().position(|&key| key == k).ok_or_else(|| bad(format!("unknown key {k:?}")))?;
            if values[slot].replace(v).is_some() {
                return Err(bad(format!("{k} given twice")));
            }
        }
        let get = |i: usize| values[i].ok_or_else(|| bad(format!("no {}", KEYS[i])));
        fn parse<T: std::str::FromStr>(v: &str, k: &str, bad: impl Fn(String) -> PyErr) -> PyResult<T> {
            v.parse().map_err(|_| bad(format!("{k}={v:?} is not a valid value")))
        }
        let s = Settings {
            num_perm: parse(get(0)?, KEYS[0], bad)?,
            seed: parse(get(1)?, KEYS[1], bad)?,
            ngram: parse(get(2)?, KEYS[2], bad)?,
            char_ngrams: parse(get(3)?, KEYS[3], bad)?,
            lowercase: parse(get(4)?, KEYS[4], bad)?,
            strip_punctuation: parse(get(5)?, KEYS[5], bad)?,
        };
        if s.num_perm != index.num_perm() {
            return Err(bad(format!(
                "num_perm={} but the index holds signatures of {} values",
                s.num_perm,
                index.num_perm()
            )));
        }
        s.shingling().validate().map_err(|e| bad(e.to_string()))?;
        Ok(s)
    }

    fn normalize(&self) -> NormalizeOptions {
        NormalizeOptions {
            lowercase: self.lowercase,
            strip_punctuation: self.strip_punctuation,
            ..NormalizeOptions::default()
        }
    }

    fn shingling(&self) -> Shingling {
        if self.char_ngrams {
            Shingling::Chars(self.ngram)
        } else {
            Shingling::Words(self.ngram)
        }
    }
}

fn parse_verify(verify: &str) -> PyResult<Verify> {
    match verify {
        "exact" => Ok(Verify::Exact),
        "estimate" => Ok(Verify::Estimate),
        "none" => Ok(Verify::None),
        other => {
            Err(PyValueError::new_err(format!("verify={other:?} is invalid: use \"exact\", \"estimate\" or \"none\"")))
        }
    }
}

fn verify_name(v: Verify) -> &'static str {
    match v {
        Verify::Exact => "exact",
        Verify::Estimate => "estimate",
        Verify::None => "none",
    }
}

#[pyclass(module = "fastllm._core", frozen)]
pub struct Deduper {
    settings: Settings,
    hasher: MinHasher,
    params: Params,
    index: Mutex<Index>,
}

impl Deduper {
    fn features(
        &self,
        py: Python<'_>,
        texts: &[PyBackedStr],
        num_threads: Option<usize>,
        keep_shingles: bool,
    ) -> PyResult<Features> {
        let pool = pool::pool(num_threads)?;
        let (opts, kind) = (self.settings.normalize(), self.settings.shingling());
        py.detach(|| {
            let refs: Vec<&str> = texts.iter().map(|t| &**t).collect();
            pool.install(|| featurize(&refs, &opts, kind, &self.hasher, keep_shingles))
        })
        .py_err()
    }

    fn lock(&self) -> PyResult<std::sync::MutexGuard<'_, Index>> {
        self.index.lock().map_err(|_| PyRuntimeError::new_err("index lock poisoned by an earlier panic"))
    }
}

#[pymethods]
impl Deduper {
    #[new]
    #[pyo3(signature = (
        *, num_perm, seed, ngram, char_ngrams, lowercase, strip_punctuation, threshold, bands, rows, verify
    ))]
    // pyo3 binds each keyword of the Python signature to one parameter: many, but all named.
    #[allow(clippy::too_many_arguments)]
    fn new(
        num_perm: usize,
        seed: u64,
        ngram: usize,
        char_ngrams: bool,
        lowercase: bool,
        strip_punctuation: bool,
        threshold: f64,
        bands: usize,
        rows: usize,
        verify: &str,
    ) -> PyResult<Self> {
        let settings = Settings { num_perm, seed, ngram, char_ngrams, lowercase, strip_punctuation };
        settings.shingling().validate().py_err()?;
        let params = Params { threshold, bands, rows, verify: parse_verify(verify)? };
        // The index checks num_perm (and the bands) before the hasher allocates num_perm of anything.
        let index = Index::new(num_perm, params, settings.encode()).py_err()?;
        let hasher = MinHasher::new(num_perm, seed).py_err()?;
        Ok(Deduper { settings, hasher, params, index: Mutex::new(index) })
    }

    /// (bands, rows) minimising the weighted false-positive and false-negative probabilities.
    #[staticmethod]
    #[pyo3(signature = (*, threshold, num_perm, fp_weight, fn_weight))]
    fn optimal_params(threshold: f64, num_perm: usize, fp_weight: f64, fn_weight: f64) -> PyResult<(usize, usize)> {
        optimal_params(threshold, num_perm, fp_weight, fn_weight).py_err()
    }

    #[pyo3(signature = (texts, num_threads=None))]
    fn signatures<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<PyBackedStr>,
        num_threads: Option<usize>,
    ) -> PyResult<Bound<'py, PyArray2<u64>>> {
        let f = self.features(py, &texts, num_threads, false)?;
        f.signatures.into_pyarray(py).reshape([texts.len(), self.settings.num_perm])
    }

    /// (keep, cluster_ids, clusters, edges, (exact_duplicates, too_short, candidates)).
    #[pyo3(signature = (texts, num_threads=None))]
    fn dedup<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<PyBackedStr>,
        num_threads: Option<usize>,
    ) -> PyResult<DedupOut<'py>> {
        let keep_shingles = self.params.verify == Verify::Exact;
        let f = self.features(py, &texts, num_threads, keep_shingles)?;
        let pool = pool::pool(num_threads)?;
        let out = py
            .detach(|| pool.install(|| dedup(&f.signatures, f.num_perm, &f.shingles, &f.exact, &self.params)))
            .py_err()?;
        Ok((
            out.keep.into_pyarray(py),
            out.cluster_ids.into_pyarray(py),
            out.clusters,
            out.edges,
            (out.exact_duplicates, out.too_short, out.candidates),
        ))
    }

    /// Adds texts to the index; returns their ids.
    #[pyo3(signature = (texts, num_threads=None))]
    fn add(&self, py: Python<'_>, texts: Vec<PyBackedStr>, num_threads: Option<usize>) -> PyResult<Vec<u32>> {
        let f = self.features(py, &texts, num_threads, self.params.verify == Verify::Exact)?;
        py.detach(|| self.lock()?.add(&f.signatures, f.shingles, &f.exact).py_err())
    }

    /// For each text, the ids of indexed texts it is a near-duplicate of.
    #[pyo3(signature = (texts, num_threads=None))]
    fn query(&self, py: Python<'_>, texts: Vec<PyBackedStr>, num_threads: Option<usize>) -> PyResult<Vec<Vec<u32>>> {
        let f = self.features(py, &texts, num_threads, self.params.verify == Verify::Exact)?;
        let pool = pool::pool(num_threads)?;
        py.detach(|| {
            let index = self.lock()?;
            pool.install(|| index.query(&f.signatures, &f.shingles, &f.exact)).py_err()
        })
    }

    fn __len__(&self) -> PyResult<usize> {
        Ok(self.lock()?.len())
    }

    /// Writes the index to exactly `path`; the facade makes it atomic (`fastllm._io.atomic_path`).
    fn save(&self, py: Python<'_>, path: &str) -> PyResult<()> {
        py.detach(|| self.lock()?.write_file(Path::new(path)).py_err())
    }

    #[staticmethod]
    fn load(py: Python<'_>, path: &str) -> PyResult<Self> {
        let index = py.detach(|| Index::load(Path::new(path))).py_err()?;
        let settings = Settings::decode(index.settings(), path, &index)?;
        let params = *index.params();
        let hasher = MinHasher::new(settings.num_perm, settings.seed).py_err()?;
        Ok(Deduper { settings, hasher, params, index: Mutex::new(index) })
    }

    /// The settings as a dict-friendly list of pairs (for the facade's repr and `load`).
    fn config(&self) -> Vec<(&'static str, String)> {
        let s = &self.settings;
        vec![
            ("threshold", self.params.threshold.to_string()),
            ("num_perm", s.num_perm.to_string()),
            ("ngram", s.ngram.to_string()),
            ("char_ngrams", s.char_ngrams.to_string()),
            ("verify", verify_name(self.params.verify).to_string()),
            ("seed", s.seed.to_string()),
            ("bands", self.params.bands.to_string()),
            ("rows", self.params.rows.to_string()),
            ("lowercase", s.lowercase.to_string()),
            ("strip_punctuation", s.strip_punctuation.to_string()),
        ]
    }
}

// ---- the stages as functions, for sharded and distributed runs --------------------------------

/// Band keys (n, bands) of a signature matrix (n, num_perm).
#[pyfunction]
pub fn band_keys<'py>(
    py: Python<'py>,
    signatures: PyReadonlyArray2<'py, u64>,
    bands: usize,
    rows: usize,
) -> PyResult<Bound<'py, PyArray2<u64>>> {
    let n = signatures.shape()[0];
    let num_perm = signatures.shape()[1];
    let sig = signatures.as_slice().map_err(|_| PyValueError::new_err("signatures must be a C-contiguous array"))?;
    let keys = py.detach(|| band_key_matrix_checked(sig, num_perm, bands, rows)).py_err()?;
    keys.into_pyarray(py).reshape([n, bands])
}

/// Candidate pairs (m, 2), i < j, sorted: rows of a band-key matrix (n, bands) sharing a key.
#[pyfunction]
pub fn lsh_candidates<'py>(py: Python<'py>, keys: PyReadonlyArray2<'py, u64>) -> PyResult<Bound<'py, PyArray2<u32>>> {
    let (n, bands) = (keys.shape()[0], keys.shape()[1]);
    let flat = keys.as_slice().map_err(|_| PyValueError::new_err("keys must be a C-contiguous array"))?;
    let pairs = py.detach(|| candidate_pairs(flat, n, bands, &vec![false; n])).py_err()?;
    let m = pairs.len();
    let flat: Vec<u32> = pairs.into_iter().flat_map(|(a, b)| [a, b]).collect();
    flat.into_pyarray(py).reshape([m, 2])
}

/// (keep, cluster_ids, clusters) of n documents joined by pairs (m, 2).
#[pyfunction]
pub fn cluster_pairs<'py>(py: Python<'py>, n: usize, pairs: PyReadonlyArray2<'py, u32>) -> PyResult<ClustersOut<'py>> {
    if pairs.shape()[1] != 2 {
        return Err(PyValueError::new_err(format!("pairs must have shape (m, 2), not {:?}", pairs.shape())));
    }
    let flat = pairs.as_slice().map_err(|_| PyValueError::new_err("pairs must be a C-contiguous array"))?;
    let edges: Vec<(u32, u32)> = flat.chunks_exact(2).map(|p| (p[0], p[1])).collect();
    let (keep, ids, groups) = py.detach(|| clusters(n, &edges)).py_err()?;
    Ok((keep.into_pyarray(py), ids.into_pyarray(py), groups))
}
