//! Byte-level BPE for the GPT-2 / GPT-4 family, with no Python in sight.
//!
//! The data path is `pretokenize` (split text into pre-tokens, hand-written matchers for the
//! built-in patterns, fancy-regex for custom ones) -> `count` (unique pre-tokens with their
//! frequencies, in parallel) -> `train` (merge loop with incremental pair counts and a priority
//! queue) -> `encode` (pair-table BPE over a piece, with a cache) -> `tokenizer` (special tokens,
//! decoding, the public Rust API) -> `formats` (tiktoken, GPT-2 and Hugging Face files).

pub mod batch;
pub mod count;
pub mod encode;
pub mod error;
pub mod formats;
pub mod normalize;
pub mod pretokenize;
pub mod special;
pub mod state;
#[doc(hidden)]
pub mod testutil;
pub mod tokenizer;
pub mod train;
pub mod unicode;

pub use error::{BpeError, Result};
pub use pretokenize::PreTokenizer;
pub use tokenizer::Tokenizer;
