//! Typed errors of the MinHash crate; the binding crate maps them to Python exceptions.

pub type Result<T> = std::result::Result<T, MinHashError>;

#[derive(Debug, thiserror::Error)]
pub enum MinHashError {
    #[error("invalid argument {name}={value}: {reason}")]
    InvalidArgument { name: &'static str, value: String, reason: String },
    #[error("{path}: {reason}")]
    Format { path: String, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The allocator refused (or the size overflowed): reported, where `vec!` would abort the
    /// process (and the Python interpreter that called in).
    #[error("cannot allocate {what}: {len} x {item} bytes is more than this process can get")]
    OutOfMemory { what: String, len: usize, item: usize },
}

impl MinHashError {
    pub fn arg(name: &'static str, value: impl ToString, reason: impl Into<String>) -> Self {
        MinHashError::InvalidArgument { name, value: value.to_string(), reason: reason.into() }
    }
}

/// An empty `Vec` with room for `len` items, or `MinHashError::OutOfMemory` naming `what`.
/// For every buffer whose size comes from a caller or a file (Rust's `Vec::with_capacity` and
/// `vec!` abort the whole process when the allocator says no).
pub fn try_vec<T>(len: usize, what: impl Into<String>) -> Result<Vec<T>> {
    let mut v = Vec::new();
    match v.try_reserve_exact(len) {
        Ok(()) => Ok(v),
        Err(_) => Err(MinHashError::OutOfMemory { what: what.into(), len, item: std::mem::size_of::<T>() }),
    }
}

/// `len` copies of `value`, allocated as [`try_vec`] does.
pub fn try_filled<T: Clone>(len: usize, value: T, what: impl Into<String>) -> Result<Vec<T>> {
    let mut v = try_vec(len, what)?;
    v.resize(len, value);
    Ok(v)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn impossible_sizes_are_errors_not_aborts() {
        // Beyond isize::MAX bytes: the reservation fails up front, whatever the machine.
        let err = try_filled(usize::MAX / 2, 0u64, "the test buffer").unwrap_err();
        assert!(matches!(err, MinHashError::OutOfMemory { len, item: 8, .. } if len == usize::MAX / 2));
        assert!(err.to_string().contains("the test buffer"), "{err}");
        assert_eq!(try_filled(3, 7u32, "small").unwrap(), vec![7, 7, 7]);
        assert!(try_vec::<u8>(0, "empty").unwrap().is_empty());
    }
}
