//! Maps the core crates' typed errors to Python exceptions, keeping the offending value in the
//! message: a missing file is `FileNotFoundError`, other I/O is `OSError`, everything a caller
//! passed wrong is `ValueError`.

use bpe::BpeError;
use pyo3::exceptions::{PyFileNotFoundError, PyOSError, PyPermissionError, PyValueError};
use pyo3::PyErr;

pub fn to_py(err: BpeError) -> PyErr {
    match &err {
        BpeError::Io { source, .. } => match source.kind() {
            std::io::ErrorKind::NotFound => PyFileNotFoundError::new_err(err.to_string()),
            std::io::ErrorKind::PermissionDenied => PyPermissionError::new_err(err.to_string()),
            _ => PyOSError::new_err(err.to_string()),
        },
        _ => PyValueError::new_err(err.to_string()),
    }
}

/// `result.map_err(to_py)` in one word.
pub trait IntoPy<T> {
    fn py_err(self) -> pyo3::PyResult<T>;
}

impl<T> IntoPy<T> for Result<T, BpeError> {
    fn py_err(self) -> pyo3::PyResult<T> {
        self.map_err(to_py)
    }
}
