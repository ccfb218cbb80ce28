//! Bindings for the paged KV-cache control plane: `_core.BlockManager`. The Python facade
//! (`fastllm/kvcache.py`) validates arguments and owns the user-facing API (named tuples, the
//! stats dict); these signatures are private and positional.
//!
//! The manager sits behind a mutex so that the object is shareable across Python threads; the
//! calls whose work grows with a prompt (allocate, lookup_prefix) release the GIL when the
//! prompt is long enough for that to pay.

use std::sync::{Mutex, MutexGuard};

use kvcache::BlockManager;
use pyo3::exceptions::{PyAssertionError, PyRuntimeError};
use pyo3::prelude::*;

use crate::errors::IntoPy;

/// Below this many tokens a call keeps the GIL: hashing them costs less than releasing it.
const DETACH_TOKENS: usize = 1 << 10;

type Stats = (usize, usize, usize, usize, usize, u64, u64, u64, f64);
/// (block, offset, copy-on-write (src, dst)).
type SlotTuple = (u32, usize, Option<(u32, u32)>);

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

    /// (num_blocks, block_size, used, free, cached_evictable, prefix_queries, prefix_hit_tokens,
    /// prefix_query_tokens, hit_rate)
    fn stats(&self) -> PyResult<Stats> {
        let s = self.lock()?.stats();
        Ok((
            s.num_blocks,
            s.block_size,
            s.used,
            s.free,
            s.cached_evictable,
            s.prefix_queries,
            s.prefix_hit_tokens,
            s.prefix_query_tokens,
            s.hit_rate,
        ))
    }

    /// Re-checks every invariant from scratch; AssertionError naming the first broken one.
    fn audit(&self) -> PyResult<()> {
        self.lock()?.audit().map_err(PyAssertionError::new_err)
    }
}
