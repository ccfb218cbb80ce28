//! Bindings for the paged KV-cache control plane: `_core.BlockManager` and its counters,
//! `_core.KvStats` (a frozen class the facade re-exports). The Python facade (`fastllm/kvcache.py`)
//! validates arguments and owns the user-facing API (named tuples); these signatures are private,
//! positional except the constructor's (keyword-only: two sizes side by side are easy to swap).
//!
//! The manager sits behind a mutex so that the object is shareable across Python threads; the
//! calls whose work grows with a prompt (allocate, lookup_prefix) release the GIL when the
//! prompt is long enough for that to pay.

use std::sync::{Mutex, MutexGuard};

use kvcache::{BlockManager, Stats};
use pyo3::exceptions::{PyAssertionError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors::IntoPy;

/// Below this many tokens a call keeps the GIL: hashing them costs less than releasing it.
const DETACH_TOKENS: usize = 1 << 10;

/// (block, offset, copy-on-write (src, dst)).
type SlotTuple = (u32, usize, Option<(u32, u32)>);

/// Block occupancy and prefix-cache counters of a `BlockManager`, by name.
/// `used + free + cached_evictable == num_blocks`; `hit_rate` is prompt tokens served from the
/// prefix cache (computed blocks only) over prompt tokens allocated.
#[pyclass(frozen, get_all, eq, module = "fastllm._core", name = "KvStats")]
#[derive(Clone, Copy, PartialEq)]
pub struct KvStats {
    num_blocks: usize,
    block_size: usize,
    used: usize,
    free: usize,
    cached_evictable: usize,
    prefix_queries: u64,
    prefix_hit_tokens: u64,
    prefix_query_tokens: u64,
    hit_rate: f64,
}

impl From<Stats> for KvStats {
    fn from(s: Stats) -> Self {
        KvStats {
            num_blocks: s.num_blocks,
            block_size: s.block_size,
            used: s.used,
            free: s.free,
            cached_evictable: s.cached_evictable,
            prefix_queries: s.prefix_queries,
            prefix_hit_tokens: s.prefix_hit_tokens,
            prefix_query_tokens: s.prefix_query_tokens,
            hit_rate: s.hit_rate,
        }
    }
}

#[pymethods]
impl KvStats {
    /// The fields as a new dict, in declaration order.
    fn as_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("num_blocks", self.num_blocks)?;
        d.set_item("block_size", self.block_size)?;
        d.set_item("used", self.used)?;
        d.set_item("free", self.free)?;
        d.set_item("cached_evictable", self.cached_evictable)?;
        d.set_item("prefix_queries", self.prefix_queries)?;
        d.set_item("prefix_hit_tokens", self.prefix_hit_tokens)?;
        d.set_item("prefix_query_tokens", self.prefix_query_tokens)?;
        d.set_item("hit_rate", self.hit_rate)?;
        Ok(d)
    }

    /// `KvStats(num_blocks=8, ..., hit_rate=0.25)`, built from `as_dict` so the two agree.
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let fields =
            self.as_dict(py)?.iter().map(|(k, v)| Ok(format!("{k}={}", v.repr()?))).collect::<PyResult<Vec<_>>>()?;
        Ok(format!("KvStats({})", fields.join(", ")))
    }
}

#[pyclass(module = "fastllm._core", name = "BlockManager", frozen)]
pub struct CoreBlockManager {
    inner: Mutex<BlockManager>,
}

impl CoreBlockManager {
    fn lock(&self) -> PyResult<MutexGuard<'_, BlockManager>> {
        self.inner.lock().map_err(|_| PyRuntimeError::new_err("block manager lock poisoned by an earlier panic"))
    }

    /// Runs `f` on the manager, without the GIL when `n_tokens` is large.
    fn with<T: Send>(
        &self,
        py: Python<'_>,
        n_tokens: usize,
        f: impl FnOnce(&mut BlockManager) -> T + Send,
    ) -> PyResult<T> {
        if n_tokens < DETACH_TOKENS {
            return Ok(f(&mut *self.lock()?));
        }
        py.detach(|| Ok(f(&mut *self.lock()?)))
    }
}

#[pymethods]
impl CoreBlockManager {
    #[new]
    #[pyo3(signature = (*, num_blocks, block_size, prefix_caching))]
    fn new(num_blocks: usize, block_size: usize, prefix_caching: bool) -> PyResult<Self> {
        let mut manager = BlockManager::new(num_blocks, block_size).py_err()?;
        manager.set_prefix_caching(prefix_caching);
        Ok(CoreBlockManager { inner: Mutex::new(manager) })
    }

    /// (block table, cached tokens), or None when out of blocks.
    fn allocate(&self, py: Python<'_>, seq_id: u64, tokens: Vec<u32>) -> PyResult<Option<(Vec<u32>, usize)>> {
        let out = self.with(py, tokens.len(), |m| m.allocate(seq_id, &tokens))?.py_err()?;
        Ok(out.map(|a| (a.blocks, a.cached_tokens)))
    }

    /// (block, offset, copy), or None when out of blocks.
    fn append(&self, seq_id: u64, token: u32) -> PyResult<Option<SlotTuple>> {
        let out = self.lock()?.append(seq_id, token).py_err()?;
        Ok(out.map(|s| (s.block, s.offset, s.copy)))
    }

    fn fork(&self, parent: u64, child: u64) -> PyResult<()> {
        self.lock()?.fork(parent, child).py_err()
    }

    fn free(&self, seq_id: u64) -> PyResult<()> {
        self.lock()?.free(seq_id).py_err()
    }

    /// The K/V of the first `num_tokens` tokens of `seq_id` are written: its full blocks among
    /// them count as cached from now on.
    fn mark_computed(&self, seq_id: u64, num_tokens: usize) -> PyResult<()> {
        self.lock()?.mark_computed(seq_id, num_tokens).py_err()
    }

    fn lookup_prefix(&self, py: Python<'_>, tokens: Vec<u32>) -> PyResult<usize> {
        self.with(py, tokens.len(), |m| m.lookup_prefix(&tokens))
    }

    fn block_table(&self, seq_id: u64) -> PyResult<Vec<u32>> {
        self.lock()?.block_table(seq_id).map(<[u32]>::to_vec).py_err()
    }

    fn num_tokens(&self, seq_id: u64) -> PyResult<usize> {
        self.lock()?.num_tokens(seq_id).py_err()
    }

    fn can_allocate(&self, n_tokens: usize) -> PyResult<bool> {
        Ok(self.lock()?.can_allocate(n_tokens))
    }

    fn ref_count(&self, block: u32) -> PyResult<u32> {
        Ok(self.lock()?.ref_count(block))
    }

    /// Whether `block` is in the prefix cache with its K/V computed (false for an unknown id).
    fn is_computed(&self, block: u32) -> PyResult<bool> {
        Ok(self.lock()?.is_computed(block))
    }

    fn stats(&self) -> PyResult<KvStats> {
        Ok(self.lock()?.stats().into())
    }

    /// Re-checks every invariant from scratch; AssertionError naming the first broken one.
    fn audit(&self) -> PyResult<()> {
        self.lock()?.audit().map_err(PyAssertionError::new_err)
    }
}
