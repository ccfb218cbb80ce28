//! Typed errors of the decode step; the binding maps every variant to a Python `ValueError`.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("config: {0}")]
    Config(String),
    #[error("{name} holds {got} floats, expected {expected}")]
    Size { name: &'static str, got: usize, expected: usize },
    #[error("token id {token} is out of range for vocab_size {vocab}")]
    Token { token: usize, vocab: usize },
    #[error("position {position} exceeds the model context={context}")]
    Position { position: usize, context: usize },
    #[error("the cache is full: it holds {capacity} tokens")]
    Full { capacity: usize },
    #[error("layer {layer} is out of range for n_layer {n_layer}")]
    Layer { layer: usize, n_layer: usize },
}

pub type Result<T> = std::result::Result<T, DecodeError>;
