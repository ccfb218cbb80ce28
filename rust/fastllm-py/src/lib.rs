//! `fastllm._core`: the private native module. Thin bindings only; algorithms live in the pure
//! Rust crates. One `py_*.rs` per domain; `errors.rs` maps core errors to Python exceptions.

mod errors;
mod pool;
mod py_bpe;
mod py_decode;
mod py_kvcache;
mod py_minhash;

use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<py_bpe::CoreTokenizer>()?;
    m.add_class::<py_bpe::WordCounter>()?;
    m.add_class::<py_minhash::Deduper>()?;
    m.add_class::<py_kvcache::CoreBlockManager>()?;
    m.add_class::<py_kvcache::KvStats>()?;
    m.add_class::<py_decode::CoreDecoder>()?;
    m.add_class::<py_decode::CoreDecodeState>()?;
    m.add_function(wrap_pyfunction!(py_minhash::band_keys, m)?)?;
    m.add_function(wrap_pyfunction!(py_minhash::lsh_candidates, m)?)?;
    m.add_function(wrap_pyfunction!(py_minhash::cluster_pairs, m)?)?;
    m.add_function(wrap_pyfunction!(py_decode::gelu_tanh_, m)?)?;
    m.add_function(wrap_pyfunction!(pool::set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(pool::get_num_threads, m)?)?;
    Ok(())
}
