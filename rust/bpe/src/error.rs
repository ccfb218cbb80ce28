//! Typed errors of the BPE crate. The binding crate maps each variant to a Python exception
//! (`ValueError`, `FileNotFoundError`, ...) whose message carries the offending value.

use std::path::Path;

pub type Result<T> = std::result::Result<T, BpeError>;

#[derive(Debug, thiserror::Error)]
pub enum BpeError {
    /// A custom pre-tokenizer pattern that fancy-regex rejects.
    #[error("invalid pre-tokenizer pattern {pattern:?}: {reason}")]
    InvalidPattern { pattern: String, reason: String },
    /// fancy-regex gave up at match time (backtrack limit) on some input.
    #[error("pre-tokenizer pattern failed on input: {0}")]
    RegexRuntime(String),
    #[error(
        "vocab_size {vocab_size} is too small: it must be at least {minimum} \
         (256 byte tokens + {n_special} special tokens)"
    )]
    VocabTooSmall { vocab_size: usize, minimum: usize, n_special: usize },
    #[error("empty corpus: the training texts contain no pre-tokens")]
    EmptyCorpus,
    #[error("token id {id} is out of range for a vocabulary of {vocab_size} ids")]
    IdOutOfRange { id: i64, vocab_size: usize },
    #[error(
        "text contains the special token {token:?} at byte offset {offset}, which is disallowed; \
         pass allowed_special={{{token:?}}} (or \"all\") to encode it as a special token, or \
         disallowed_special=() to encode it as plain text"
    )]
    DisallowedSpecial { token: String, offset: usize },
    #[error("invalid special token {token:?}: {reason}")]
    InvalidSpecial { token: String, reason: String },
    #[error("{token:?} is not a special token of this tokenizer (its special tokens: {known})")]
    UnknownSpecial { token: String, known: String },
    /// A malformed vocabulary / tokenizer file; `line` is 1-based where it is known.
    #[error("{path}{}: {reason}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Format { path: String, line: Option<usize>, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid argument {name}={value}: {reason}")]
    InvalidArgument { name: &'static str, value: String, reason: String },
}

impl BpeError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        BpeError::Io { path: path.display().to_string(), source }
    }

    pub fn format(path: impl Into<String>, line: Option<usize>, reason: impl Into<String>) -> Self {
        BpeError::Format { path: path.into(), line, reason: reason.into() }
    }
}
