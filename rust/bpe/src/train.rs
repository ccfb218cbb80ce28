//! The BPE merge loop: incremental pair counts, an index pair -> words, and a lazy max-heap.
//!
//! Each unique word is stored once (with its count) as a sequence of symbol ids in one flat
//! buffer. A merge only visits the words that contain its pair (from the index), rewrites them in
//! place, and applies the resulting pair-count changes; nothing is ever recounted from scratch.
//!
//! Tie-break: the pair with the highest count wins; among equal counts the smallest
//! `(left id, right id)` wins. The result depends only on the multiset of words and counts (words
//! are sorted by bytes up front, and every step is a sum over words), so it is the same on any
//! number of threads and for any hash-map order.
//!
//! Lazy heap: an existing pair's count can only go *down* (a merge creates adjacencies only next
//! to the new symbol, so all pairs that gain occurrences are pairs with the new id, which did not
//! exist before). Every pair is pushed when it appears, with its count at that time, so its heap
//! entry is an upper bound of its true count. Popping the max entry and finding it up to date
//! therefore gives the true best pair (ties are ordered the same way in the heap); a stale entry
//! is re-pushed with its current count. For robustness a pair whose count grows is pushed again
//! anyway (a duplicate entry is harmless: it is found stale or duplicate when popped).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rayon::prelude::*;
use rustc_hash::{FxHashMap, FxHashSet};

use crate::count::WordCounts;

type Pair = (u32, u32);

#[inline]
fn key(p: Pair) -> u64 {
    ((p.0 as u64) << 32) | p.1 as u64
}

#[inline]
fn unkey(k: u64) -> Pair {
    ((k >> 32) as u32, k as u32)
}

/// Learn up to `num_merges` merges. Symbols start as byte values (id = byte); merge i creates id
/// 256 + i. Tie-break: highest pair count first, then the smallest (left id, right id).
/// Training stops early when the best pair's count < `min_frequency` (treated as at least 1) or
/// no pairs are left. A pair whose concatenated bytes already exist as a token is skipped
/// (dropped, never re-offered), so no two ids share bytes. `progress(merges_done)` is called
/// every 64 merges and once at the end.
pub fn train_merges(
    words: WordCounts,
    num_merges: usize,
    min_frequency: u64,
    progress: &mut dyn FnMut(usize),
) -> Vec<(u32, u32)> {
    train_with_reserved(words, num_merges, min_frequency, &[], progress)
}

/// [`train_merges`] where the byte strings in `reserved` count as existing tokens too (merges
/// that would spell one of them are skipped). With plain byte-level words two merge paths to the
/// same bytes are very rare (a random search over thousands of small corpora found none), so
/// the tests use this to exercise the skip rule directly.
fn train_with_reserved(
    words: WordCounts,
    num_merges: usize,
    min_frequency: u64,
    reserved: &[&[u8]],
    progress: &mut dyn FnMut(usize),
) -> Vec<(u32, u32)> {
    let min_frequency = min_frequency.max(1) as i64;
    let mut corpus = Corpus::new(words);
    let (mut counts, mut index) = corpus.initial_pairs();

    let mut heap: BinaryHeap<(i64, Reverse<u64>)> =
        counts.iter().filter(|&(_, &c)| c > 0).map(|(&k, &c)| (c, Reverse(k))).collect();

    // Bytes of every token, to skip merges that would duplicate an existing token.
    let mut token_bytes: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    let mut known: FxHashSet<Vec<u8>> = token_bytes.iter().cloned().collect();
    known.extend(reserved.iter().map(|r| r.to_vec()));

    let mut merges: Vec<Pair> = Vec::with_capacity(num_merges.min(1 << 20));
    let mut step = Step::default();
    let mut reported = usize::MAX;
    while merges.len() < num_merges {
        let Some((c, Reverse(k))) = heap.pop() else { break };
        let current = counts.get(&k).copied().unwrap_or(0);
        if current != c {
            if current > 0 {
                heap.push((current, Reverse(k)));
            }
            continue; // stale entry
        }
        if c < min_frequency {
            break;
        }
        let pair = unkey(k);
        let mut bytes = Vec::with_capacity(token_bytes[pair.0 as usize].len() + token_bytes[pair.1 as usize].len());
        bytes.extend_from_slice(&token_bytes[pair.0 as usize]);
        bytes.extend_from_slice(&token_bytes[pair.1 as usize]);
        if known.contains(&bytes) {
            continue; // dropped: its entry is gone and its count can only go down
        }
        let new_id = 256 + merges.len() as u32;
        known.insert(bytes.clone());
        token_bytes.push(bytes);
        merges.push(pair);

        let where_ = index.remove(&k).unwrap_or_default();
        step.clear();
        corpus.merge(pair, new_id, &where_, &mut step, merges.len() as u32);
        counts.remove(&k);
        for (&pk, &d) in &step.delta {
            if d == 0 {
                continue;
            }
            let entry = counts.entry(pk).or_insert(0);
            *entry += d;
            let now = *entry;
            if now <= 0 {
                // Gone from every word: forget it (its index list is all stale).
                counts.remove(&pk);
                index.remove(&pk);
            } else if d > 0 {
                heap.push((now, Reverse(pk)));
            }
        }
        for (pk, ws) in step.new_where.drain() {
            if counts.contains_key(&pk) {
                index.entry(pk).or_default().extend(ws);
            }
        }
        if merges.len() % 64 == 0 {
            progress(merges.len());
            reported = merges.len();
        }
    }
    if reported != merges.len() {
        progress(merges.len());
    }
    merges
}

/// Pair-count changes and new index entries of one merge step.
#[derive(Default)]
struct Step {
    delta: FxHashMap<u64, i64>,
    new_where: FxHashMap<u64, Vec<u32>>,
}

impl Step {
    fn clear(&mut self) {
        self.delta.clear();
        self.new_where.clear();
    }

    #[inline]
    fn add(&mut self, p: Pair, d: i64) {
        *self.delta.entry(key(p)).or_insert(0) += d;
    }

    #[inline]
    fn add_new(&mut self, p: Pair, d: i64, word: u32) {
        let k = key(p);
        *self.delta.entry(k).or_insert(0) += d;
        let v = self.new_where.entry(k).or_default();
        if v.last() != Some(&word) {
            v.push(word);
        }
    }
}

/// All unique words as symbol sequences in one flat buffer.
struct Corpus {
    syms: Vec<u32>,
    start: Vec<u32>,
    len: Vec<u32>,
    count: Vec<i64>,
    /// `seen[w] == stamp` when word `w` was already handled in the current step (index lists
    /// may hold a word more than once).
    seen: Vec<u32>,
}

impl Corpus {
    fn new(words: WordCounts) -> Self {
        let mut words: Vec<(Box<[u8]>, u64)> = words.into_iter().filter(|(w, c)| !w.is_empty() && *c > 0).collect();
        words.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let total: usize = words.iter().map(|(w, _)| w.len()).sum();
        let mut syms = Vec::with_capacity(total);
        let mut start = Vec::with_capacity(words.len());
        let mut len = Vec::with_capacity(words.len());
        let mut count = Vec::with_capacity(words.len());
        for (w, c) in &words {
            start.push(syms.len() as u32);
            len.push(w.len() as u32);
            count.push(i64::try_from(*c).unwrap_or(i64::MAX));
            syms.extend(w.iter().map(|&b| b as u32));
        }
        let n = words.len();
        Corpus { syms, start, len, count, seen: vec![0; n] }
    }

    fn word(&self, w: usize) -> &[u32] {
        let s = self.start[w] as usize;
        &self.syms[s..s + self.len[w] as usize]
    }

    /// Pair counts and the index pair -> words containing it (each word listed once per pair).
    fn initial_pairs(&self) -> (FxHashMap<u64, i64>, FxHashMap<u64, Vec<u32>>) {
        type Acc = (FxHashMap<u64, i64>, FxHashMap<u64, Vec<u32>>);
        let n = self.len.len();
        let chunk = (n / (rayon::current_num_threads().max(1) * 8)).max(4096);
        let ranges: Vec<(usize, usize)> = (0..n).step_by(chunk).map(|s| (s, (s + chunk).min(n))).collect();
        ranges
            .into_par_iter()
            .fold(Acc::default, |(mut counts, mut index), (lo, hi)| {
                for w in lo..hi {
                    let c = self.count[w];
                    for p in self.word(w).windows(2) {
                        let k = key((p[0], p[1]));
                        *counts.entry(k).or_insert(0) += c;
                        let v = index.entry(k).or_default();
                        if v.last() != Some(&(w as u32)) {
                            v.push(w as u32);
                        }
                    }
                }
                (counts, index)
            })
            .reduce(Acc::default, |a, b| {
                let ((mut ca, mut ia), (cb, ib)) = if a.0.len() >= b.0.len() { (a, b) } else { (b, a) };
                for (k, c) in cb {
                    *ca.entry(k).or_insert(0) += c;
                }
                for (k, v) in ib {
                    ia.entry(k).or_default().extend(v);
                }
                (ca, ia)
            })
    }

    /// Merges `pair` into `new_id` in every listed word (left to right, non-overlapping),
    /// recording the pair-count changes in `step`.
    fn merge(&mut self, pair: Pair, new_id: u32, words: &[u32], step: &mut Step, stamp: u32) {
        let (a, b) = pair;
        for &w in words {
            let wi = w as usize;
            if self.seen[wi] == stamp {
                continue;
            }
            self.seen[wi] = stamp;
            let s = self.start[wi] as usize;
            let n = self.len[wi] as usize;
            let c = self.count[wi];
            let sym = &mut self.syms[s..s + n];
            // Quick reject for stale index entries.
            if !sym.windows(2).any(|p| p[0] == a && p[1] == b) {
                continue;
            }
            let mut out = 0; // write index; sym[..out] is the merged prefix
            let mut i = 0; // read index
            while i < n {
                if i + 1 < n && sym[i] == a && sym[i + 1] == b {
                    step.add(pair, -c);
                    if out > 0 {
                        // The left neighbour as it is now (it may be a `new_id` just written,
                        // whose own "right" change added (new_id, a) which this cancels).
                        let p = sym[out - 1];
                        step.add((p, a), -c);
                        step.add_new((p, new_id), c, w);
                    }
                    if i + 2 < n {
                        let nx = sym[i + 2];
                        step.add((b, nx), -c);
                        step.add_new((new_id, nx), c, w);
                    }
                    sym[out] = new_id;
                    out += 1;
                    i += 2;
                } else {
                    sym[out] = sym[i];
                    out += 1;
                    i += 1;
                }
            }
            self.len[wi] = out as u32;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub(crate) mod tests {
    use super::*;
    use crate::testutil::{naive_train, XorShift};

    pub(crate) fn wc(items: &[(&[u8], u64)]) -> WordCounts {
        let mut m = WordCounts::default();
        for (w, c) in items {
            *m.entry((*w).into()).or_insert(0) += c;
        }
        m
    }

    fn fast(words: &WordCounts, n: usize, min: u64) -> Vec<Pair> {
        train_merges(words.clone(), n, min, &mut |_| {})
    }

    fn random_words(rng: &mut XorShift) -> WordCounts {
        let alphabet = 1 + rng.below_u64(5) as u8; // tiny alphabets: many ties, repeats, overlaps
        let n_words = 1 + rng.below_u64(30);
        let mut m = WordCounts::default();
        for _ in 0..n_words {
            let len = 1 + rng.below_u64(12) as usize;
            let w: Vec<u8> = (0..len).map(|_| b'a' + rng.below_u64(alphabet as u64) as u8).collect();
            let hi = if rng.below_u64(2) == 0 { 3 } else { 50 };
            let c = 1 + rng.below_u64(hi);
            *m.entry(w.into()).or_insert(0) += c;
        }
        m
    }

    #[test]
    fn matches_naive_on_random_corpora() {
        let mut rng = XorShift::new(0x2545f4914f6cdd1d);
        for round in 0..600 {
            let words = random_words(&mut rng);
            let n = rng.below_u64(40) as usize;
            let min = 1 + rng.below_u64(4);
            assert_eq!(fast(&words, n, min), naive_train(&words, n, min, &[]), "round {round}: {words:?}");
        }
    }

    #[test]
    fn matches_naive_on_real_text() {
        let text = "The quick brown fox jumps over the lazy dog. It was the best of times, it was the \
                    worst of times, it was the age of wisdom, it was the age of foolishness... \
                    Ünïcödé wörds and 中文 text, numbers 12345 678, and   spaces\n\n and lines. \
                    the then there their they theirs thee";
        for name in ["gpt2", "gpt4"] {
            let pretok = crate::PreTokenizer::new(name).unwrap();
            let specials = crate::special::SpecialMatcher::new(&[]).unwrap();
            let words = crate::count::count_texts(&pretok, &specials, &[text, text, "the the the"]).unwrap();
            for min in [1, 2, 3] {
                let want = naive_train(&words, 400, min, &[]);
                assert_eq!(fast(&words, 400, min), want, "{name} min {min}");
                if min == 1 {
                    assert!(want.len() > 100);
                }
            }
        }
    }

    #[test]
    fn overlapping_pairs_merge_left_to_right() {
        // "aaa" with (a,a) -> "Z a": one occurrence merged, (Z, a) is then the only pair.
        let words = wc(&[(b"aaa", 1)]);
        let m = fast(&words, 10, 1);
        assert_eq!(m, vec![(97, 97), (256, 97)]);
        assert_eq!(m, naive_train(&words, 10, 1, &[]));
        let words = wc(&[(b"aaaa", 3), (b"aaaaa", 2)]);
        assert_eq!(fast(&words, 10, 1), naive_train(&words, 10, 1, &[]));
        let words = wc(&[(b"abab", 1), (b"ababab", 2)]);
        assert_eq!(fast(&words, 10, 1), naive_train(&words, 10, 1, &[]));
    }

    #[test]
    fn tie_break_is_highest_count_then_smallest_pair() {
        let words = wc(&[(b"cd", 5), (b"ab", 5), (b"xy", 7)]);
        assert_eq!(fast(&words, 3, 1), vec![(b'x' as u32, b'y' as u32), (97, 98), (99, 100)]);
    }

    #[test]
    fn min_frequency_stops_training() {
        let words = wc(&[(b"ab", 5), (b"cd", 2), (b"ef", 1)]);
        assert_eq!(fast(&words, 10, 2), vec![(97, 98), (99, 100)]);
        assert_eq!(fast(&words, 10, 6), vec![]);
        assert_eq!(fast(&words, 10, 0), fast(&words, 10, 1)); // 0 acts as 1
        assert_eq!(fast(&words, 1, 1), vec![(97, 98)]);
        assert_eq!(fast(&words, 0, 1), vec![]);
        assert_eq!(fast(&WordCounts::default(), 10, 1), vec![]);
        assert_eq!(fast(&wc(&[(b"a", 9)]), 10, 1), vec![]); // no pairs at all
    }

    #[test]
    fn duplicate_bytes_are_skipped() {
        // "ab" is taken: (a,b) is dropped for good, so (b,c) wins although (a,b) is more frequent,
        // and the "abc" word ends as [a, bc] -> (a, bc).
        let words = wc(&[(b"ab", 10), (b"bc", 4), (b"abc", 3)]);
        let m = train_with_reserved(words.clone(), 10, 1, &[b"ab"], &mut |_| {});
        assert_eq!(m, vec![(98, 99), (97, 256)]);
        assert_eq!(m, naive_train(&words, 10, 1, &[b"ab"]));
        // Dropping the best pair does not stop training; min_frequency applies to what is left.
        let m = train_with_reserved(words.clone(), 10, 5, &[b"ab"], &mut |_| {});
        assert_eq!(m, vec![(98, 99)]); // (b,c) has 7; then (a,bc) has 3 < 5
        let m = train_with_reserved(words.clone(), 10, 8, &[b"ab"], &mut |_| {});
        assert_eq!(m, vec![]);
        // A reserved token that a two-step merge would spell: (a,b) then (ab,c) -> "abc" is dropped.
        let m = train_with_reserved(words.clone(), 10, 1, &[b"abc"], &mut |_| {});
        assert_eq!(m, vec![(97, 98), (98, 99)]);
        assert_eq!(m, naive_train(&words, 10, 1, &[b"abc"]));
        // Randomised: the skip rule fires often and the results still equal the naive trainer's.
        let mut rng = XorShift::new(0xdeadbeef);
        let mut fired = 0;
        for round in 0..300 {
            let words = random_words(&mut rng);
            let reserved: Vec<Vec<u8>> = (0..1 + rng.below_u64(6))
                .map(|_| (0..2 + rng.below_u64(3)).map(|_| b'a' + rng.below_u64(3) as u8).collect())
                .collect();
            let reserved: Vec<&[u8]> = reserved.iter().map(|r| r.as_slice()).collect();
            let n = rng.below_u64(30) as usize;
            let got = train_with_reserved(words.clone(), n, 1, &reserved, &mut |_| {});
            assert_eq!(got, naive_train(&words, n, 1, &reserved), "round {round}");
            if got != naive_train(&words, n, 1, &[]) {
                fired += 1;
            }
        }
        assert!(fired > 20, "skip rule fired only {fired} times");
    }

    #[test]
    fn no_two_tokens_share_bytes() {
        let mut rng = XorShift::new(31337);
        for _ in 0..100 {
            let words = random_words(&mut rng);
            let m = fast(&words, 60, 1);
            let mut bytes: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
            for &(l, r) in &m {
                let t = [bytes[l as usize].clone(), bytes[r as usize].clone()].concat();
                assert!(!bytes.contains(&t), "duplicate token {t:?}");
                bytes.push(t);
            }
        }
    }

    #[test]
    fn progress_is_reported() {
        let mut rng = XorShift::new(5);
        let mut words = WordCounts::default();
        for _ in 0..200 {
            let w: Vec<u8> = (0..20).map(|_| rng.below_u64(256) as u8).collect();
            words.insert(w.into(), 1 + rng.below_u64(9));
        }
        let mut seen = Vec::new();
        let m = train_merges(words, 150, 1, &mut |d| seen.push(d));
        assert_eq!(m.len(), 150);
        assert_eq!(seen, vec![64, 128, 150]);
        let mut seen = Vec::new();
        train_merges(wc(&[(b"abcdefgh", 1)]), 7, 1, &mut |d| seen.push(d));
        assert_eq!(seen, vec![7]);
        let mut seen = Vec::new();
        train_merges(WordCounts::default(), 7, 1, &mut |d| seen.push(d));
        assert_eq!(seen, vec![0]);
    }

    #[test]
    fn same_merges_on_one_and_two_threads() {
        let mut rng = XorShift::new(77);
        let mut words = WordCounts::default();
        for _ in 0..20_000 {
            let len = 1 + rng.below_u64(10) as usize;
            let w: Vec<u8> = (0..len).map(|_| b'a' + rng.below_u64(8) as u8).collect();
            *words.entry(w.into()).or_insert(0) += 1 + rng.below_u64(100);
        }
        let run = |n: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap();
            pool.install(|| fast(&words, 2000, 1))
        };
        let one = run(1);
        assert_eq!(one, run(2));
        assert!(one.len() > 500);
    }
}
