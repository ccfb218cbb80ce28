//! Typed errors of the block manager; the binding crate maps them to Python exceptions
//! (`UnknownSeq` -> `KeyError`, the rest -> `ValueError`). Running out of blocks is not an error:
//! the verbs answer `Ok(None)` and the caller preempts.

pub type Result<T> = std::result::Result<T, KvError>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    #[error("{name} must be >= 1, got {value}")]
    InvalidSize { name: &'static str, value: usize },
    #[error("num_blocks={0} is too large: block ids are u32")]
    TooManyBlocks(usize),
    #[error("unknown seq id {0}")]
    UnknownSeq(u64),
    #[error("seq id {0} already allocated")]
    DuplicateSeq(u64),
    #[error("seq id {0}: a prompt needs at least one token")]
    EmptyPrompt(u64),
    #[error("seq id {seq_id}: num_tokens={num_tokens} is more than the sequence's {len} tokens")]
    PastEnd { seq_id: u64, num_tokens: usize, len: usize },
}
