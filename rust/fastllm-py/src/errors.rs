//! Maps the core crates' typed errors to Python exceptions, keeping the offending value in the
//! message: a missing file is `FileNotFoundError`, other I/O is `OSError`, everything a caller
//! passed wrong (or a malformed file) is `ValueError`; an unknown KV-cache sequence id is `KeyError`;
//! a buffer the allocator refused is `MemoryError` (instead of Rust's abort).
//!
//! The crates report bad input as errors and never panic on it (their tests fuzz for that);
//! [`no_panic`] is the last resort for calls that parse untrusted input, should a root cause
//! have been missed: a panic there becomes a `ValueError`, not a `PanicException`.

use bpe::BpeError;
use kvcache::KvError;
use minhash::MinHashError;
use pyo3::exceptions::{PyFileNotFoundError, PyKeyError, PyMemoryError, PyOSError, PyPermissionError, PyValueError};
use pyo3::{PyErr, PyResult};

/// Runs `f`; a panic inside (a bug) becomes a `ValueError` naming `what` and the panic message.
pub fn no_panic<T>(what: &str, f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        Err(PyValueError::new_err(format!("{what}: internal error ({msg}); please report this input")))
    })
}

fn io_to_py(source: &std::io::Error, message: String) -> PyErr {
    match source.kind() {
        std::io::ErrorKind::NotFound => PyFileNotFoundError::new_err(message),
        std::io::ErrorKind::PermissionDenied => PyPermissionError::new_err(message),
        _ => PyOSError::new_err(message),
    }
}

/// `result.map_err(..)` to the matching Python exception, in one word.
pub trait IntoPy<T> {
    fn py_err(self) -> pyo3::PyResult<T>;
}

impl<T> IntoPy<T> for Result<T, BpeError> {
    fn py_err(self) -> pyo3::PyResult<T> {
        self.map_err(|err| match &err {
            BpeError::Io { source, .. } => io_to_py(source, err.to_string()),
            _ => PyValueError::new_err(err.to_string()),
        })
    }
}

impl<T> IntoPy<T> for Result<T, MinHashError> {
    fn py_err(self) -> pyo3::PyResult<T> {
        self.map_err(|err| match &err {
            MinHashError::Io { source, .. } => io_to_py(source, err.to_string()),
            MinHashError::OutOfMemory { .. } => PyMemoryError::new_err(err.to_string()),
            _ => PyValueError::new_err(err.to_string()),
        })
    }
}

impl<T> IntoPy<T> for Result<T, KvError> {
    fn py_err(self) -> pyo3::PyResult<T> {
        self.map_err(|err| match &err {
            KvError::UnknownSeq(_) => PyKeyError::new_err(err.to_string()),
            _ => PyValueError::new_err(err.to_string()),
        })
    }
}

impl<T> IntoPy<T> for Result<T, decode::DecodeError> {
    fn py_err(self) -> pyo3::PyResult<T> {
        self.map_err(|err| PyValueError::new_err(err.to_string()))
    }
}
