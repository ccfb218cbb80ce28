//! Typed errors of the BPE crate. The binding crate maps each variant to a Python exception
//! (`ValueError`, `FileNotFoundError`, ...) whose message carries the offending value.

use std::path::Path;

pub type Result<T> = std::result::Result<T, BpeError>;

#[derive(Debug, thiserror::Error)]
pub enum BpeError {
    /// A custom pre-tokenizer pattern that fancy-regex rejects.
    #[error("invalid pre-tokenizer pattern {}: {reason}", quoted(pattern))]
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
        "text contains the special token {token} at byte offset {offset}, which is disallowed; \
         pass allowed_special={{{token}}} (or \"all\") to encode it as a special token, or \
         disallowed_special=() to encode it as plain text",
        token = Clipped(token)
    )]
    DisallowedSpecial { token: String, offset: usize },
    #[error("invalid special token {}: {reason}", quoted(token))]
    InvalidSpecial { token: String, reason: String },
    #[error("{} is not a special token of this tokenizer (its special tokens: {})", quoted(token), clip(known, 2000))]
    UnknownSpecial { token: String, known: String },
    /// A malformed vocabulary / tokenizer file; `line` is 1-based where it is known.
    #[error("{path}{}: {}", line.map(|l| format!(":{l}")).unwrap_or_default(), clip(reason, 2000))]
    Format { path: String, line: Option<usize>, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid argument {name}={}: {}", clip(value, 200), clip(reason, 2000))]
    InvalidArgument { name: &'static str, value: String, reason: String },
}

/// Longest quoted value (in chars) an error message shows: a 1 MB pattern or special token is
/// named by its start and its length, not copied whole into the message.
const MAX_QUOTED_CHARS: usize = 200;

/// `s` cut to `max` chars, with a note of its full length when cut.
pub(crate) fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((end, _)) => format!("{}... ({} bytes in all)", &s[..end], s.len()),
    }
}

/// `s` as a Rust string literal (`{:?}`), cut to [`MAX_QUOTED_CHARS`] chars.
pub(crate) fn quoted(s: &str) -> String {
    format!("{}", Clipped(s))
}

/// Displays a string as `{:?}` does, cut to [`MAX_QUOTED_CHARS`] chars.
pub(crate) struct Clipped<'a>(pub &'a str);

impl std::fmt::Display for Clipped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.char_indices().nth(MAX_QUOTED_CHARS) {
            None => write!(f, "{:?}", self.0),
            Some((end, _)) => write!(f, "{:?}... ({} bytes in all)", &self.0[..end], self.0.len()),
        }
    }
}

impl BpeError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        BpeError::Io { path: path.display().to_string(), source }
    }

    pub fn format(path: impl Into<String>, line: Option<usize>, reason: impl Into<String>) -> Self {
        BpeError::Format { path: path.into(), line, reason: reason.into() }
    }
}
