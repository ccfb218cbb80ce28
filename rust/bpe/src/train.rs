//! The BPE merge loop. Owned by the trainer helper.
#![allow(unused)]
//!
//! INTERFACE:
//! /// Learn up to `num_merges` merges from unique words with counts. Symbols start as byte values
//! /// (id = byte); merge i creates id 256 + i. Deterministic tie-break (documented in the code):
//! /// highest pair count first, then the smallest (left id, right id). A pair whose count is below
//! /// `min_frequency` stops training early. A pair whose concatenated bytes already exist as a token
//! /// is skipped (never produces a duplicate token). `progress(done)` is called every few merges.
//! pub fn train_merges(words: WordCounts, num_merges: usize, min_frequency: u64,
//!                     progress: &mut dyn FnMut(usize)) -> Vec<(u32, u32)>;
