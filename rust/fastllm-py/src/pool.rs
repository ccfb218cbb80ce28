//! Thread pools for the parallel paths. One rayon pool per requested size, built once and kept;
//! `set_num_threads` sets the size used when a call passes `num_threads=None`. Results never
//! depend on the pool size: the algorithms are deterministic by construction.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use rayon::ThreadPool;

static DEFAULT_THREADS: Mutex<usize> = Mutex::new(0); // 0 = all available cores
static POOLS: OnceLock<Mutex<HashMap<usize, Arc<ThreadPool>>>> = OnceLock::new();

fn available() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// The thread count a call with `num_threads` runs on.
pub fn resolve(num_threads: Option<usize>) -> PyResult<usize> {
    match num_threads {
        Some(0) => Err(PyValueError::new_err("num_threads=0 is invalid: pass a positive count or None")),
        Some(n) => Ok(n),
        None => {
            let d = *DEFAULT_THREADS.lock().map_err(|_| PyRuntimeError::new_err("thread setting poisoned"))?;
            Ok(if d == 0 { available() } else { d })
        }
    }
}

pub fn pool(num_threads: Option<usize>) -> PyResult<Arc<ThreadPool>> {
    let n = resolve(num_threads)?;
    let pools = POOLS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut pools = pools.lock().map_err(|_| PyRuntimeError::new_err("thread pools poisoned"))?;
    if let Some(p) = pools.get(&n) {
        return Ok(p.clone());
    }
    let p = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("fastllm-{i}"))
        .build()
        .map_err(|e| PyRuntimeError::new_err(format!("could not start {n} threads: {e}")))?;
    let p = Arc::new(p);
    pools.insert(n, p.clone());
    Ok(p)
}

/// Sets the default thread count (None or 0 = all cores).
#[pyfunction]
#[pyo3(signature = (num_threads=None))]
pub fn set_num_threads(num_threads: Option<i64>) -> PyResult<()> {
    let n = match num_threads {
        None => 0,
        Some(n) if n >= 0 => n as usize,
        Some(n) => {
            return Err(PyValueError::new_err(format!(
                "num_threads={n} is invalid: pass a positive count, or 0 or None for all cores"
            )))
        }
    };
    *DEFAULT_THREADS.lock().map_err(|_| PyRuntimeError::new_err("thread setting poisoned"))? = n;
    Ok(())
}

/// The thread count a call with `num_threads=None` uses.
#[pyfunction]
pub fn get_num_threads() -> PyResult<usize> {
    resolve(None)
}
