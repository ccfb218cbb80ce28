//! Counting unique pre-tokens with their frequencies (the part of training where the time goes).
#![allow(unused)]
//!
//! INTERFACE (owned by the trainer helper):
//! pub type WordCounts = rustc_hash::FxHashMap<Box<[u8]>, u64>;
//! /// Count the pre-tokens of `texts` (in parallel on the current rayon pool), splitting each text
//! /// around special tokens first so specials are never counted or merged.
//! pub fn count_texts(pretok: &PreTokenizer, specials: &SpecialMatcher, texts: &[&str]) -> Result<WordCounts>;
//! pub fn merge_into(dst: &mut WordCounts, src: WordCounts);
//! /// Stream a file in blocks cut at safe points (see `safe_cut`), counting in parallel; `on_bytes`
//! /// is called with bytes consumed so far (for a progress bar). Invalid UTF-8 -> BpeError::Format
//! /// naming the path and line.
//! pub fn count_file(pretok, specials, path: &Path, counts: &mut WordCounts, on_bytes: &mut dyn FnMut(u64)) -> Result<()>;
//! /// Largest index <= buf.len() just after a b'\n' that is followed by a non-whitespace byte.
//! pub fn safe_cut(buf: &[u8]) -> Option<usize>;
