//! Bindings for the BPE tokenizer: `_core.Tokenizer` (encode/decode, file formats) and
//! `_core.WordCounter` (streams texts and files into pre-token counts, then trains).
//!
//! Every call whose work grows with its input releases the GIL; parallel calls run on the pool
//! from `pool.rs`. The Python facade (`fastllm/tokenizer.py`) validates arguments and owns the
//! user-facing API; these signatures are private and positional.

use std::path::Path;
use std::sync::{Mutex, OnceLock};

use bpe::count::{count_file, count_texts, merge_into, WordCounts};
use bpe::encode::{Bpe, PieceCache};
use bpe::formats;
use bpe::special::SpecialMatcher;
use bpe::tokenizer::SpecialPolicy;
use bpe::{PreTokenizer, Tokenizer};
use numpy::{IntoPyArray, PyArray1};
use pyo3::exceptions::{PyKeyError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::{PyBytes, PyInt, PyList};

use crate::errors::{no_panic, IntoPy};
use crate::pool;

/// Slots of the piece cache that single-text calls share (a direct-mapped table: a colliding piece
/// evicts the slot's occupant). It holds pieces of 2 to `CACHE_MAX_PIECE` (15) bytes that the
/// vocabulary does not answer directly, and is reset when its arena of multi-token results passes
/// 1M ids.
const CACHE_CAPACITY: usize = 1 << 15;
/// Ids below this get a cached Python int (1M ids: ~32 MB, more than any real vocabulary).
const INT_CACHE_MAX: usize = 1 << 20;
/// Below this many bytes an encode keeps the GIL: releasing it costs more than the work.
const DETACH_BYTES: usize = 1 << 12;

/// Flat token ids of a batch and the offsets that cut them into texts.
type IdsAndOffsets<'py> = (Bound<'py, PyArray1<u32>>, Bound<'py, PyArray1<i64>>);

fn lock_err<T>(_: T) -> PyErr {
    PyRuntimeError::new_err("internal lock poisoned by an earlier panic")
}

/// An unknown id is a `KeyError` (as in tiktoken; the facade raises `UnknownTokenError`, a
/// `KeyError` and a `ValueError`); any other error as usual.
fn ids_result<T>(result: bpe::Result<T>) -> PyResult<T> {
    match result {
        Err(err @ bpe::BpeError::IdOutOfRange { .. }) => Err(PyKeyError::new_err(err.to_string())),
        other => other.py_err(),
    }
}

#[pyclass(module = "fastllm._core", name = "Tokenizer", frozen)]
pub struct CoreTokenizer {
    inner: Tokenizer,
    /// Reused by single-text calls; batch calls give each worker its own.
    cache: Mutex<PieceCache>,
    /// One Python int per id, made on first use. Building a result list then costs an incref per
    /// token instead of an int allocation: the list building is the serial, GIL-held part of a
    /// batch encode, so this is what lets batch encoding scale with threads.
    ints: OnceLock<Vec<Py<PyInt>>>,
}

impl CoreTokenizer {
    fn wrap(inner: Tokenizer) -> Self {
        CoreTokenizer { inner, cache: Mutex::new(PieceCache::new(CACHE_CAPACITY)), ints: OnceLock::new() }
    }

    /// `ids` as a Python list, reusing the cached int objects.
    fn to_list<'py>(&self, py: Python<'py>, ids: &[u32]) -> PyResult<Bound<'py, PyList>> {
        let ints = self.ints.get_or_init(|| {
            // Capped: a special token may carry a huge id (the rest are made on demand below).
            let n = self.inner.vocab_size().min(INT_CACHE_MAX) as u32;
            (0..n).map(|i| PyInt::new(py, i).unbind()).collect()
        });
        PyList::new(
            py,
            ids.iter().map(|&i| match ints.get(i as usize) {
                Some(obj) => obj.clone_ref(py).into_any(),
                None => PyInt::new(py, i).into_any().unbind(),
            }),
        )
    }

    fn policy(&self, allowed: Vec<bool>, disallowed: Vec<bool>, add_special_tokens: bool) -> PyResult<SpecialPolicy> {
        let n = self.inner.specials().len();
        if allowed.len() != n || disallowed.len() != n {
            return Err(PyValueError::new_err("special-token policy length mismatch"));
        }
        Ok(SpecialPolicy { allowed, disallowed, add_special_tokens })
    }

    fn encode_one(&self, text: &str, policy: &SpecialPolicy) -> PyResult<Vec<u32>> {
        let mut out = Vec::with_capacity(text.len() / 3);
        match self.cache.try_lock() {
            Ok(mut cache) => self.inner.encode(text, policy, &mut cache, &mut out),
            // Another thread is encoding with this tokenizer: use a private cache.
            Err(_) => self.inner.encode(text, policy, &mut PieceCache::new(1024), &mut out),
        }
        .py_err()?;
        Ok(out)
    }

    fn unknown(&self, id: i64) -> bpe::BpeError {
        bpe::BpeError::IdOutOfRange { id, vocab_size: self.inner.vocab_size() }
    }

    /// `ids` as u32, an id outside 0..2**32 being an unknown id (`KeyError`).
    fn check_ids(&self, ids: &[i64]) -> PyResult<Vec<u32>> {
        ids.iter().map(|&id| u32::try_from(id).or_else(|_| ids_result(Err(self.unknown(id))))).collect()
    }

    /// One text's ids, with the GIL released unless the text is short.
    fn encode_text(&self, py: Python<'_>, text: &str, policy: &SpecialPolicy) -> PyResult<Vec<u32>> {
        if text.len() < DETACH_BYTES {
            self.encode_one(text, policy)
        } else {
            py.detach(|| self.encode_one(text, policy))
        }
    }

    /// Flat ids and offsets of `texts`, encoded on the pool with the GIL released.
    fn encode_many(
        &self,
        py: Python<'_>,
        texts: &[PyBackedStr],
        policy: &SpecialPolicy,
        num_threads: Option<usize>,
    ) -> PyResult<(Vec<u32>, Vec<usize>)> {
        let pool = pool::pool(num_threads)?;
        py.detach(|| {
            let refs: Vec<&str> = texts.iter().map(|t| &**t).collect();
            pool.install(|| bpe::batch::encode_batch(&self.inner, &refs, policy))
        })
        .py_err()
    }
}

#[pymethods]
impl CoreTokenizer {
    /// Longest pre-token piece, in bytes (`bpe::pretokenize::MAX_PIECE_BYTES`).
    #[classattr]
    const MAX_PIECE_BYTES: usize = bpe::pretokenize::MAX_PIECE_BYTES;
    /// How far a custom pattern's search sees, in bytes (`bpe::pretokenize::REGEX_WINDOW_BYTES`).
    #[classattr]
    const REGEX_WINDOW_BYTES: usize = bpe::pretokenize::REGEX_WINDOW_BYTES;
    /// Longest special token, in bytes of UTF-8 (`bpe::special::MAX_SPECIAL_BYTES`).
    #[classattr]
    const MAX_SPECIAL_BYTES: usize = bpe::special::MAX_SPECIAL_BYTES;
    /// Largest vocabulary file the loaders read (`bpe::formats::MAX_VOCAB_FILE_BYTES`).
    #[classattr]
    const MAX_VOCAB_FILE_BYTES: u64 = formats::MAX_VOCAB_FILE_BYTES;

    #[staticmethod]
    fn from_hf_json(py: Python<'_>, text: &str, path: &str) -> PyResult<Self> {
        let tok =
            py.detach(|| no_panic(path, || formats::read_hf_json(text, path).and_then(Tokenizer::from_hf).py_err()))?;
        Ok(Self::wrap(tok))
    }

    /// A `tokenizer.json` read from `path` (bounded: see `formats::MAX_VOCAB_FILE_BYTES`).
    #[staticmethod]
    fn from_hf_file(py: Python<'_>, path: &str) -> PyResult<Self> {
        let tok = py.detach(|| {
            no_panic(path, || formats::load_hf_json(Path::new(path)).and_then(Tokenizer::from_hf).py_err())
        })?;
        Ok(Self::wrap(tok))
    }

    #[staticmethod]
    fn from_tiktoken(py: Python<'_>, path: &str, pattern: &str, specials: Vec<(String, u32)>) -> PyResult<Self> {
        let load = || -> bpe::Result<Tokenizer> {
            let vocab = formats::load_tiktoken(Path::new(path))?;
            Tokenizer::new(PreTokenizer::new(pattern)?, Bpe::from_ranks(vocab)?, specials)
        };
        let tok = py.detach(|| no_panic(path, || load().py_err()))?;
        Ok(Self::wrap(tok))
    }

    #[staticmethod]
    fn from_gpt2(py: Python<'_>, encoder_json: &str, vocab_bpe: &str) -> PyResult<Self> {
        let load = || -> bpe::Result<Tokenizer> {
            let (vocab, specials) = formats::load_gpt2(Path::new(encoder_json), Path::new(vocab_bpe))?;
            Tokenizer::new(PreTokenizer::new("gpt2")?, Bpe::from_ranks(vocab)?, specials)
        };
        let tok = py.detach(|| no_panic(encoder_json, || load().py_err()))?;
        Ok(Self::wrap(tok))
    }

    fn to_hf_json(&self, py: Python<'_>) -> PyResult<String> {
        py.detach(|| no_panic("tokenizer.json", || formats::write_hf_json(&self.inner.to_hf()).py_err()))
    }

    #[pyo3(signature = (text, allowed, disallowed, add_special_tokens=false))]
    fn encode<'py>(
        &self,
        py: Python<'py>,
        text: &str,
        allowed: Vec<bool>,
        disallowed: Vec<bool>,
        add_special_tokens: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let policy = self.policy(allowed, disallowed, add_special_tokens)?;
        let ids = self.encode_text(py, text, &policy)?;
        self.to_list(py, &ids)
    }

    #[pyo3(signature = (data, allowed, disallowed, add_special_tokens=false))]
    fn encode_bytes<'py>(
        &self,
        py: Python<'py>,
        data: &[u8],
        allowed: Vec<bool>,
        disallowed: Vec<bool>,
        add_special_tokens: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let policy = self.policy(allowed, disallowed, add_special_tokens)?;
        let ids = py
            .detach(|| {
                let mut out = Vec::with_capacity(data.len() / 3);
                let mut cache = PieceCache::new(1024);
                self.inner.encode_bytes(data, &policy, &mut cache, &mut out).map(|_| out)
            })
            .py_err()?;
        self.to_list(py, &ids)
    }

    #[pyo3(signature = (texts, allowed, disallowed, num_threads=None, add_special_tokens=false))]
    fn encode_batch<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<PyBackedStr>,
        allowed: Vec<bool>,
        disallowed: Vec<bool>,
        num_threads: Option<usize>,
        add_special_tokens: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let policy = self.policy(allowed, disallowed, add_special_tokens)?;
        let (ids, offsets) = self.encode_many(py, &texts, &policy, num_threads)?;
        let lists = offsets.windows(2).map(|w| self.to_list(py, &ids[w[0]..w[1]])).collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, lists)
    }

    /// Flat ids and offsets (`ids[offsets[i]:offsets[i+1]]` is text i): no Python int per token.
    #[pyo3(signature = (texts, allowed, disallowed, num_threads=None, add_special_tokens=false))]
    fn encode_batch_numpy<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<PyBackedStr>,
        allowed: Vec<bool>,
        disallowed: Vec<bool>,
        num_threads: Option<usize>,
        add_special_tokens: bool,
    ) -> PyResult<IdsAndOffsets<'py>> {
        let policy = self.policy(allowed, disallowed, add_special_tokens)?;
        let (ids, offsets) = self.encode_many(py, &texts, &policy, num_threads)?;
        let offsets: Vec<i64> = offsets.into_iter().map(|o| o as i64).collect();
        Ok((ids.into_pyarray(py), offsets.into_pyarray(py)))
    }

    fn decode_bytes<'py>(&self, py: Python<'py>, ids: Vec<i64>) -> PyResult<Bound<'py, PyBytes>> {
        let checked = self.check_ids(&ids)?;
        let bytes = ids_result(py.detach(|| self.inner.decode_bytes(&checked)))?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// The bytes of each id, as a list (tiktoken's `decode_tokens_bytes`).
    fn tokens_bytes<'py>(&self, py: Python<'py>, ids: Vec<i64>) -> PyResult<Bound<'py, PyList>> {
        let checked = self.check_ids(&ids)?;
        let mut out = Vec::with_capacity(checked.len());
        for id in checked {
            match self.inner.token_bytes(id) {
                Some(b) => out.push(PyBytes::new(py, b)),
                None => return ids_result(Err(self.unknown(id as i64))),
            }
        }
        PyList::new(py, out)
    }

    /// `decode_bytes` of each id list, on the pool with the GIL released.
    #[pyo3(signature = (batch, num_threads=None))]
    fn decode_bytes_batch<'py>(
        &self,
        py: Python<'py>,
        batch: Vec<Vec<i64>>,
        num_threads: Option<usize>,
    ) -> PyResult<Bound<'py, PyList>> {
        let checked = batch.iter().map(|ids| self.check_ids(ids)).collect::<PyResult<Vec<_>>>()?;
        let pool = pool::pool(num_threads)?;
        let decoded = ids_result(py.detach(|| {
            use rayon::prelude::*;
            pool.install(|| checked.par_iter().map(|ids| self.inner.decode_bytes(ids)).collect::<bpe::Result<Vec<_>>>())
        }))?;
        PyList::new(py, decoded.iter().map(|b| PyBytes::new(py, b)))
    }

    /// The id whose bytes are exactly `data` (a regular token, else a special one), or None.
    fn token_id(&self, data: &[u8]) -> Option<u32> {
        self.inner.token_id(data)
    }

    /// The bytes of every regular (non-special) token, sorted (tiktoken's `token_byte_values`).
    fn token_byte_values<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let mut values: Vec<&[u8]> = self.inner.bpe().vocab().map(|(_, b)| b).collect();
        values.sort_unstable();
        PyList::new(py, values.into_iter().map(|b| PyBytes::new(py, b)))
    }

    /// The ids of `text` as a uint32 array, with no Python list in between.
    #[pyo3(signature = (text, allowed, disallowed, add_special_tokens=false))]
    fn encode_numpy<'py>(
        &self,
        py: Python<'py>,
        text: &str,
        allowed: Vec<bool>,
        disallowed: Vec<bool>,
        add_special_tokens: bool,
    ) -> PyResult<Bound<'py, PyArray1<u32>>> {
        let policy = self.policy(allowed, disallowed, add_special_tokens)?;
        let ids = self.encode_text(py, text, &policy)?;
        Ok(ids.into_pyarray(py))
    }

    /// A compact, versioned binary snapshot (`bpe::state`), for pickling.
    fn to_state<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let bytes = py.detach(|| self.inner.to_state_bytes()).py_err()?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// The tokenizer `to_state` described, checked as a loaded file is.
    #[staticmethod]
    fn from_state(py: Python<'_>, data: &[u8]) -> PyResult<Self> {
        let tok = py.detach(|| no_panic("BPETokenizer state", || Tokenizer::from_state_bytes(data).py_err()))?;
        Ok(Self::wrap(tok))
    }

    fn token_bytes<'py>(&self, py: Python<'py>, id: i64) -> Option<Bound<'py, PyBytes>> {
        let id = u32::try_from(id).ok()?;
        self.inner.token_bytes(id).map(|b| PyBytes::new(py, b))
    }

    #[getter]
    fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }

    #[getter]
    fn specials(&self) -> Vec<(String, u32)> {
        self.inner.specials().to_vec()
    }

    /// Non-special added tokens (matched in any text, whatever the special-token policy).
    #[getter]
    fn added_tokens(&self) -> Vec<(String, u32)> {
        self.inner.added_tokens()
    }

    #[getter]
    fn merges(&self) -> Vec<(u32, u32)> {
        self.inner.merges()
    }

    #[getter]
    fn pattern(&self) -> String {
        self.inner.pretokenizer().pattern().to_string()
    }

    #[getter]
    fn pattern_name(&self) -> String {
        self.inner.pretokenizer().name().to_string()
    }

    #[getter]
    fn is_rank_based(&self) -> bool {
        self.inner.bpe().is_rank_based()
    }
}

/// Pre-token counts accumulated from text batches and files, then trained into a tokenizer.
#[pyclass(module = "fastllm._core", frozen)]
pub struct WordCounter {
    pretok: PreTokenizer,
    specials: Vec<String>,
    matcher: SpecialMatcher,
    counts: Mutex<WordCounts>,
}

fn report(progress: &Option<Py<PyAny>>, value: u64) {
    if let Some(cb) = progress {
        // A failing progress callback must not abort the work; its error is dropped.
        Python::attach(|py| {
            let _ = cb.call1(py, (value,));
        });
    }
}

#[pymethods]
impl WordCounter {
    #[new]
    fn new(pattern: &str, specials: Vec<String>) -> PyResult<Self> {
        let pretok = no_panic("pattern", || PreTokenizer::new(pattern).py_err())?;
        let matcher = SpecialMatcher::new(&specials).py_err()?;
        Ok(WordCounter { pretok, specials, matcher, counts: Mutex::new(WordCounts::default()) })
    }

    #[pyo3(signature = (texts, num_threads=None))]
    fn add_texts(&self, py: Python<'_>, texts: Vec<PyBackedStr>, num_threads: Option<usize>) -> PyResult<()> {
        let pool = pool::pool(num_threads)?;
        let batch = py
            .detach(|| {
                let refs: Vec<&str> = texts.iter().map(|t| &**t).collect();
                pool.install(|| count_texts(&self.pretok, &self.matcher, &refs))
            })
            .py_err()?;
        py.detach(|| {
            let mut counts = self.counts.lock().map_err(lock_err)?;
            merge_into(&mut counts, batch);
            Ok(())
        })
    }

    #[pyo3(signature = (path, num_threads=None, progress=None))]
    fn add_file(
        &self,
        py: Python<'_>,
        path: &str,
        num_threads: Option<usize>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        let pool = pool::pool(num_threads)?;
        py.detach(|| {
            pool.install(|| {
                let mut counts = self.counts.lock().map_err(lock_err)?;
                count_file(&self.pretok, &self.matcher, Path::new(path), &mut counts, &mut |done| {
                    report(&progress, done)
                })
                .py_err()
            })
        })
    }

    /// Unique pre-tokens counted so far.
    fn __len__(&self) -> PyResult<usize> {
        Ok(self.counts.lock().map_err(lock_err)?.len())
    }

    /// Trains on the counts (which are consumed: the counter is empty afterwards). Keyword-only:
    /// three integer arguments side by side.
    #[pyo3(signature = (*, vocab_size, min_frequency, num_threads=None, progress=None))]
    fn train(
        &self,
        py: Python<'_>,
        vocab_size: usize,
        min_frequency: u64,
        num_threads: Option<usize>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<CoreTokenizer> {
        let pool = pool::pool(num_threads)?;
        let counts = std::mem::take(&mut *self.counts.lock().map_err(lock_err)?);
        let tok = py
            .detach(|| {
                pool.install(|| {
                    Tokenizer::train(counts, vocab_size, self.pretok.clone(), &self.specials, min_frequency, &mut |n| {
                        report(&progress, n as u64)
                    })
                })
            })
            .py_err()?;
        Ok(CoreTokenizer::wrap(tok))
    }
}
