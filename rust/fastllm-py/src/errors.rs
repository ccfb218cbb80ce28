//! Maps the core crates' typed errors to Python exceptions, keeping the offending value in the
//! message: a missing file is `FileNotFoundError`, other I/O is `OSError`, everything a caller
//! passed wrong (or a malformed file) is `ValueError`; an unknown KV-cache sequence id is `KeyError`;
//! a buffer the allocator refused is `MemoryError` (instead of Rust's abort).

use bpe::BpeError;
use kvcache::KvError;
use minhash::MinHashError;
use pyo3::exceptions::{PyFileNotFoundError, PyKeyError, PyMemoryError, PyOSError, PyPermissionError, PyValueError};
use pyo3::PyErr;

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
