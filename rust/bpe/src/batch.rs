//! Batch encoding on the current rayon pool.
//!
//! Texts are cut into contiguous chunks of about equal byte size (a few per thread, so a slow
//! chunk does not leave a core idle); each chunk is encoded by one task with its own piece cache
//! into one flat buffer, and the buffers are joined in input order. The ids therefore never depend
//! on the thread count. One flat result (ids + offsets) serves both the list and the numpy API,
//! with no per-text allocation.
//!
//! Performance notes (4 MB of IMDB reviews, GPT-2, 2 cores): per-text tasks with per-task caches
//! (rayon `map_init`) scaled 1.6x on 2 threads; chunked tasks avoid re-initialising a cache per
//! split and the per-text `Vec`s.

use rayon::prelude::*;

use crate::encode::PieceCache;
use crate::error::Result;
use crate::tokenizer::{SpecialPolicy, Tokenizer};

/// Slots in each task's piece cache (small: a chunk is short-lived).
const TASK_CACHE: usize = 4096;
/// Chunks per thread.
const CHUNKS_PER_THREAD: usize = 4;

/// Encodes `texts`; returns flat ids and `offsets` (len `texts.len() + 1`): text i is
/// `ids[offsets[i]..offsets[i + 1]]`.
pub fn encode_batch(tok: &Tokenizer, texts: &[&str], policy: &SpecialPolicy) -> Result<(Vec<u32>, Vec<usize>)> {
    let total: usize = texts.iter().map(|t| t.len()).sum();
    let n_chunks = (rayon::current_num_threads() * CHUNKS_PER_THREAD).max(1);
    let target = (total / n_chunks).max(1);
    let mut bounds = vec![0];
    let mut acc = 0;
    for (i, t) in texts.iter().enumerate() {
        acc += t.len();
        if acc >= target && i + 1 < texts.len() {
            bounds.push(i + 1);
            acc = 0;
        }
    }
    bounds.push(texts.len());

    let parts = bounds
        .par_windows(2)
        .map(|w| {
            let mut cache = PieceCache::new(TASK_CACHE);
            let chunk = &texts[w[0]..w[1]];
            let mut ids = Vec::with_capacity(chunk.iter().map(|t| t.len()).sum::<usize>() / 3);
            let mut ends = Vec::with_capacity(chunk.len());
            for text in chunk {
                tok.encode(text, policy, &mut cache, &mut ids)?;
                ends.push(ids.len());
            }
            Ok((ids, ends))
        })
        .collect::<Result<Vec<_>>>()?;

    let mut ids = Vec::with_capacity(parts.iter().map(|(p, _)| p.len()).sum());
    let mut offsets = Vec::with_capacity(texts.len() + 1);
    offsets.push(0);
    for (part, ends) in parts {
        let base = ids.len();
        ids.extend_from_slice(&part);
        offsets.extend(ends.into_iter().map(|e| base + e));
    }
    Ok((ids, offsets))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::count::count_texts;
    use crate::pretokenize::PreTokenizer;
    use crate::special::SpecialMatcher;

    #[test]
    fn batch_equals_one_by_one_on_any_thread_count() {
        let texts: Vec<String> = (0..200).map(|i| format!("doc {i}: {} end", "word ".repeat(i % 17))).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let pretok = PreTokenizer::new("gpt2").unwrap();
        let counts = count_texts(&pretok, &SpecialMatcher::new(&[]).unwrap(), &refs).unwrap();
        let tok = Tokenizer::train(counts, 400, pretok, &[], 1, &mut |_| {}).unwrap();
        let policy = SpecialPolicy::default();
        let mut expected = Vec::new();
        let mut ends = vec![0];
        for t in &refs {
            tok.encode(t, &policy, &mut PieceCache::new(16), &mut expected).unwrap();
            ends.push(expected.len());
        }
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let got = pool.install(|| encode_batch(&tok, &refs, &policy)).unwrap();
            assert_eq!(got, (expected.clone(), ends.clone()), "threads={threads}");
        }
        let empty = encode_batch(&tok, &[], &policy).unwrap();
        assert_eq!(empty, (vec![], vec![0]));
    }
}
