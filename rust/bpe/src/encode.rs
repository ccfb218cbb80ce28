//! BPE over one pre-token piece. Owned by the encoder helper.
#![allow(unused)]
//!
//! INTERFACE:
//! pub struct Bpe { .. }   // Send + Sync, no interior mutability
//! impl Bpe {
//!     /// Merge-list BPE (our trainer, Hugging Face): vocab[id] = bytes; merges[rank] = (left, right);
//!     /// the result id is the id of bytes(left)+bytes(right) in vocab. All 256 single bytes must be
//!     /// tokens. Errors: BpeError::InvalidArgument / Format with the offending merge.
//!     pub fn from_merges(vocab: Vec<Vec<u8>>, merges: &[(u32, u32)]) -> Result<Self>;
//!     /// tiktoken semantics: vocab[rank] = bytes (id = rank, gaps allowed as None); the pair merged
//!     /// next is the one whose concatenation has the lowest rank; a piece that is itself a token is
//!     /// emitted directly (exactly as tiktoken's encode does).
//!     pub fn from_ranks(vocab: Vec<Option<Vec<u8>>>) -> Result<Self>;
//!     pub fn encode_piece(&self, piece: &[u8], out: &mut Vec<u32>);  // O(n log n) worst case
//!     pub fn token_bytes(&self, id: u32) -> Option<&[u8]>;
//!     pub fn token_id(&self, bytes: &[u8]) -> Option<u32>;
//!     pub fn len(&self) -> usize;            // 1 + highest id
//!     pub fn merges(&self) -> Vec<(u32, u32)>;   // rank order; derived for from_ranks
//!     pub fn is_rank_based(&self) -> bool;
//! }
//! pub struct PieceCache { .. }  // bounded piece -> ids cache, one per thread
//! impl PieceCache { pub fn new(capacity: usize) -> Self;
//!     pub fn encode(&mut self, bpe: &Bpe, piece: &[u8], out: &mut Vec<u32>); }
