//! Helpers shared by this crate's unit and integration tests: a seeded xorshift RNG and the slow,
//! obviously-correct reference trainer. Not part of the API.

use std::collections::{BTreeMap, BTreeSet};

use crate::count::WordCounts;

/// A deterministic xorshift generator, in one of two flavours: Marsaglia's xorshift64
/// (shifts 13, 7, 17; [`XorShift::new`]) or xorshift64* (shifts 12, 25, 27, then a multiply;
/// [`XorShift::star`]). The seed must be non-zero.
#[derive(Clone, Debug)]
pub struct XorShift {
    state: u64,
    star: bool,
}

impl XorShift {
    /// xorshift64 (13, 7, 17): the output is the new state.
    pub fn new(seed: u64) -> Self {
        Self { state: seed, star: false }
    }

    /// xorshift64* (12, 25, 27): the output is the new state times `0x2545_F491_4F6C_DD1D`.
    pub fn star(seed: u64) -> Self {
        Self { state: seed, star: true }
    }

    /// The next 64-bit output.
    pub fn next_u64(&mut self) -> u64 {
        if self.star {
            self.state ^= self.state >> 12;
            self.state ^= self.state << 25;
            self.state ^= self.state >> 27;
            self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
        } else {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            self.state
        }
    }

    /// `next_u64() % n`, as a `usize` (`n` must be non-zero).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// `next_u64() % n` (`n` must be non-zero).
    pub fn below_u64(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// `(next_u64() >> 33) % n`: from the high bits only (`n` must be non-zero).
    pub fn below_high(&mut self, n: usize) -> usize {
        (self.next_u64() >> 33) as usize % n
    }
}

/// Obviously-correct BPE: recounts every pair before every merge. Same rules as
/// `train::train_merges` (and its reserved-token variant): the most frequent pair wins, ties go to
/// the smallest pair; a pair whose bytes are already a token (a byte, an earlier merge or one of
/// `reserved`) is dropped for good and training goes on; training stops at `num_merges` merges,
/// when no pair is left, or when the best remaining pair occurs fewer than `min_frequency` times
/// (0 acts as 1). Merge `i` makes token `256 + i`.
pub fn naive_train(words: &WordCounts, num_merges: usize, min_frequency: u64, reserved: &[&[u8]]) -> Vec<(u32, u32)> {
    let mut ws: Vec<(Vec<u32>, u64)> = words.iter().map(|(w, &c)| (w.iter().map(|&b| b as u32).collect(), c)).collect();
    let mut vocab: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    let mut known: BTreeSet<Vec<u8>> = vocab.iter().cloned().collect();
    known.extend(reserved.iter().map(|r| r.to_vec()));
    let mut dropped: BTreeSet<(u32, u32)> = BTreeSet::new();
    let mut merges = Vec::new();
    while merges.len() < num_merges {
        let mut counts: BTreeMap<(u32, u32), u64> = BTreeMap::new();
        for (w, c) in &ws {
            for p in w.windows(2) {
                *counts.entry((p[0], p[1])).or_insert(0) += c;
            }
        }
        let best = counts.iter().filter(|(p, _)| !dropped.contains(p)).max_by(|x, y| x.1.cmp(y.1).then(y.0.cmp(x.0)));
        let Some((&pair, &c)) = best else { break };
        if c < min_frequency.max(1) {
            break;
        }
        let bytes: Vec<u8> = [vocab[pair.0 as usize].clone(), vocab[pair.1 as usize].clone()].concat();
        if known.contains(&bytes) {
            dropped.insert(pair);
            continue;
        }
        let id = 256 + merges.len() as u32;
        known.insert(bytes.clone());
        vocab.push(bytes);
        merges.push(pair);
        for (w, _) in ws.iter_mut() {
            let mut out = Vec::with_capacity(w.len());
            let mut i = 0;
            while i < w.len() {
                if i + 1 < w.len() && (w[i], w[i + 1]) == pair {
                    out.push(id);
                    i += 2;
                } else {
                    out.push(w[i]);
                    i += 1;
                }
            }
            *w = out;
        }
    }
    merges
}
