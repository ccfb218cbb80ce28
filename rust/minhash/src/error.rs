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
}

impl MinHashError {
    pub fn arg(name: &'static str, value: impl ToString, reason: impl Into<String>) -> Self {
        MinHashError::InvalidArgument { name, value: value.to_string(), reason: reason.into() }
    }
}
