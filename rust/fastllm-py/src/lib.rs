//! `fastllm._core`: the private native module. Thin bindings only; algorithms live in the pure
//! Rust crates. One `py_*.rs` per domain; `errors.rs` maps core errors to Python exceptions.
use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
