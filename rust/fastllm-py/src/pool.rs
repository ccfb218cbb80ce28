//! Thread pools for the parallel paths. One rayon pool per requested size, built on first use and
//! kept while it is among the few most recently used; `set_num_threads` sets the size used when a
//! call passes `num_threads=None`. Results never depend on the pool size: the algorithms are
//! deterministic by construction.
//!
//! Every parallel call of the package (tokenizer training and batch encoding, MinHash
//! deduplication, native decoding) gets its pool here, so the cap on thread counts,
//! [`MAX_THREADS`], holds for all of them.
//!
//! Fork safety: a child made by `fork()` (multiprocessing's default start method on Linux, and
//! PyTorch DataLoader workers) inherits the parent's pools but none of their threads, so a job
//! sent to one would wait forever. The pools therefore belong to the process that built them:
//! the first call in a child sees another process id and starts from a fresh, empty set (the
//! parent's pools are leaked, never dropped: their locks and condition variables may have been
//! held by a parent thread at the moment of the fork). HF tokenizers instead turns parallelism off
//! in the child; here the child gets working pools of its own.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use rayon::ThreadPool;

/// Most threads one call may run on (and the most `set_num_threads` accepts): far above any
/// machine's core count. A larger `num_threads` is a ValueError: starting that many OS threads
/// (100,000, say) takes minutes or exhausts the process's thread limit.
pub const MAX_THREADS: usize = 1024;
/// Pools kept alive at once: the most recently used sizes. An evicted pool's threads exit once
/// the calls still running on it finish, so calls cycling through many sizes cannot pile up
/// threads.
const MAX_POOLS: usize = 4;

static DEFAULT_THREADS: AtomicUsize = AtomicUsize::new(0); // 0 = all available cores

/// Pools by size, most recently used last.
type Pools = Vec<(usize, Arc<ThreadPool>)>;

/// The pools of the process that built them (see the module docs on fork).
struct ProcessPools {
    pid: u32,
    pools: Pools,
}

/// Locked only while the GIL is held (every `pool` call happens before the GIL is released), so
/// no thread holds it when Python forks (`os.fork` holds the GIL too): a child never finds it
/// locked by a thread that the fork left behind.
static POOLS: Mutex<ProcessPools> = Mutex::new(ProcessPools { pid: 0, pools: Vec::new() });

fn available() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(MAX_THREADS)
}

fn out_of_range(n: impl std::fmt::Display, what: &str) -> PyErr {
    PyValueError::new_err(format!("num_threads={n} is out of range: it must be {what} <= {MAX_THREADS}"))
}

/// The thread count a call with `num_threads` runs on.
pub fn resolve(num_threads: Option<usize>) -> PyResult<usize> {
    match num_threads {
        Some(0) => Err(PyValueError::new_err("num_threads=0 is invalid: pass a positive count or None")),
        Some(n) if n > MAX_THREADS => Err(out_of_range(n, "a positive count")),
        Some(n) => Ok(n),
        None => {
            let d = DEFAULT_THREADS.load(Ordering::Relaxed);
            Ok(if d == 0 { available() } else { d })
        }
    }
}

pub fn pool(num_threads: Option<usize>) -> PyResult<Arc<ThreadPool>> {
    let n = resolve(num_threads)?;
    let mut state = POOLS.lock().map_err(|_| PyRuntimeError::new_err("thread pools poisoned"))?;
    let pid = std::process::id();
    if state.pid != pid {
        // A forked child (or the first call): the inherited pools have no threads here. Leak
        // them: dropping one would signal, through its locks, threads that do not exist.
        std::mem::forget(std::mem::take(&mut state.pools));
        state.pid = pid;
    }
    let pools = &mut state.pools;
    if let Some(k) = pools.iter().position(|(size, _)| *size == n) {
        let entry = pools.remove(k);
        let p = entry.1.clone();
        pools.push(entry);
        return Ok(p);
    }
    let p = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("fastllm-{i}"))
        .build()
        .map_err(|e| PyRuntimeError::new_err(format!("could not start {n} threads: {e}")))?;
    let p = Arc::new(p);
    if pools.len() >= MAX_POOLS {
        pools.remove(0);
    }
    pools.push((n, p.clone()));
    Ok(p)
}

/// Sets the default thread count (None or 0 = all cores; at most 1024, a larger count is a
/// ValueError).
#[pyfunction]
#[pyo3(signature = (num_threads=None))]
pub fn set_num_threads(num_threads: Option<i64>) -> PyResult<()> {
    let n = match num_threads {
        None => 0,
        Some(n) if n > MAX_THREADS as i64 => return Err(out_of_range(n, "0 (all cores) or a count")),
        Some(n) if n >= 0 => n as usize,
        Some(n) => {
            return Err(PyValueError::new_err(format!(
                "num_threads={n} is invalid: pass a positive count, or 0 or None for all cores"
            )))
        }
    };
    DEFAULT_THREADS.store(n, Ordering::Relaxed);
    Ok(())
}

/// The thread count a call with `num_threads=None` uses.
#[pyfunction]
pub fn get_num_threads() -> PyResult<usize> {
    resolve(None)
}
