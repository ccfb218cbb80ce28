//! Shingle sets: the sorted, deduplicated 64-bit hashes of every word or character n-gram of a
//! normalized text, plus the exact-duplicate hash and the exact Jaccard of two sets.
//!
//! The byte string hashed for a shingle is fixed (so hashes are stable across runs, platforms and
//! versions): xxh3-64 with seed 0 of
//! - `Words(n)`: the UTF-8 bytes of n consecutive words joined by one 0x20 byte, where words are the
//!   maximal runs of characters that are not Unicode White_Space. After `normalize` with whitespace
//!   collapsing the words are already separated by one ' ', so the bytes are a slice of the text
//!   and no shingle is copied (`single_spaced`); otherwise the words are joined into one reused
//!   buffer. Both paths are checked against a split-join-hash reference in the tests.
//! - `Chars(n)`: the UTF-8 bytes of n consecutive Unicode scalar values (spaces included).
//!
//! A text with fewer than n words (characters) has no shingle: its set is empty, and callers report
//! it as too short rather than giving it a signature that matches every other short text.

use crate::error::{MinHashError, Result};
use xxhash_rust::xxh3::{xxh3_128, xxh3_64};

/// How a normalized text is cut into shingles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shingling {
    /// n consecutive words (word n-grams).
    Words(usize),
    /// n consecutive Unicode scalar values (character n-grams).
    Chars(usize),
}

impl Shingling {
    /// n, the shingle length.
    pub fn n(&self) -> usize {
        match *self {
            Shingling::Words(n) | Shingling::Chars(n) => n,
        }
    }

    /// Rejects n = 0 (which would give every text an empty set); bindings call this on user input.
    pub fn validate(&self) -> Result<()> {
        if self.n() == 0 {
            return Err(MinHashError::arg("n", 0, "shingle length must be at least 1"));
        }
        Ok(())
    }
}

/// Sorted, deduplicated xxh3-64 hashes of every shingle of `normalized` into `out` (cleared
/// first). Empty when the text has fewer than n words/characters, or when n = 0.
pub fn shingle_set(normalized: &str, kind: Shingling, out: &mut Vec<u64>) {
    out.clear();
    match kind {
        Shingling::Words(n) => word_shingles(normalized, n, out),
        Shingling::Chars(n) => char_shingles(normalized, n, out),
    }
    // Performance notes: sort_unstable takes ~1.3 µs for 146 hashes; a counting pass on the top
    // bits plus insertion sort took ~1.0 µs, not worth its 30 lines.
    out.sort_unstable();
    out.dedup();
}

/// xxh3-128 (seed 0) of the normalized text's UTF-8 bytes, for the exact-duplicate pass.
pub fn exact_hash(normalized: &str) -> u128 {
    xxh3_128(normalized.as_bytes())
}

/// Exact Jaccard |a ∩ b| / |a ∪ b| of two sorted deduplicated sets; 0.0 if either is empty (two
/// too-short texts are not near-duplicates of each other).
pub fn jaccard(a: &[u64], b: &[u64]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let (mut i, mut j, mut inter) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                inter += 1;
                i += 1;
                j += 1;
            }
        }
    }
    inter as f64 / (a.len() + b.len() - inter) as f64
}

fn word_shingles(text: &str, n: usize, out: &mut Vec<u64>) {
    if n == 0 {
        return;
    }
    let bytes = text.as_bytes();
    if let Some(spaces) = single_spaced(bytes) {
        // Word k runs from just after space k-1 (or the start) to space k (or the end), and a
        // shingle of words k..k+n is the slice from the start of word k to the end of word k+n-1.
        let words = spaces.len() + 1;
        if words < n {
            return;
        }
        out.reserve(words + 1 - n);
        for k in 0..=words - n {
            let start = if k == 0 { 0 } else { spaces[k - 1] as usize + 1 };
            let end = spaces.get(k + n - 1).map_or(bytes.len(), |&e| e as usize);
            out.push(xxh3_64(&bytes[start..end]));
        }
        return;
    }
    let spans = word_spans(text);
    if spans.len() < n {
        return;
    }
    out.reserve(spans.len() + 1 - n);
    let mut buf = Vec::new();
    for w in spans.windows(n) {
        buf.clear();
        for (k, &(s, e)) in w.iter().enumerate() {
            if k > 0 {
                buf.push(b' ');
            }
            buf.extend_from_slice(&bytes[s..e]);
        }
        out.push(xxh3_64(&buf));
    }
}

/// Positions of the spaces of a text whose words are separated by exactly one ' ' (what
/// `normalize` with whitespace collapsing produces): non-empty, no leading, trailing or repeated
/// space, and no other White_Space. `None` if the text is not of that form (or is empty).
///
/// Performance notes: one branch-free pass (positions written at a cursor that advances on ' ',
/// as in `normalize`); the first version, a loop branching on "is this byte a space", spent
/// ~3 µs per 150-word document mispredicting once per word.
fn single_spaced(bytes: &[u8]) -> Option<Vec<u32>> {
    if bytes.is_empty() || bytes.len() > u32::MAX as usize {
        return None;
    }
    let mut spaces = vec![0u32; bytes.len()];
    let mut count = 0usize;
    let mut other_space = false;
    for (i, &b) in bytes.iter().enumerate() {
        if let Some(slot) = spaces.get_mut(count) {
            *slot = i as u32; // i < bytes.len() <= u32::MAX
        }
        count += usize::from(b == b' ');
        other_space |= MAY_START_OTHER_SPACE[usize::from(b)];
    }
    spaces.truncate(count);
    let first_last_ok = bytes[0] != b' ' && bytes[bytes.len() - 1] != b' ';
    let no_repeats = spaces.windows(2).all(|w| w[1] != w[0] + 1);
    (!other_space && first_last_ok && no_repeats).then_some(spaces)
}

/// Bytes that begin a White_Space character other than ' ': TAB..CR, and the UTF-8 lead bytes
/// of U+0085 and U+00A0 (0xC2), U+1680 (0xE1), U+2000..U+205F (0xE2) and U+3000 (0xE3).
/// Conservative: a text containing, say, 'é' (0xC3) passes; one with '£' (0xC2) takes the
/// general path, which is correct for every text.
const MAY_START_OTHER_SPACE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = matches!(b as u8, b'\t'..=b'\r' | 0xC2 | 0xE1 | 0xE2 | 0xE3);
        b += 1;
    }
    t
};

/// Byte ranges of the words of `text` (maximal runs of non-White_Space): the general path.
/// ASCII bytes are classified directly; a non-ASCII character is decoded to ask
/// `char::is_whitespace` (U+00A0, U+3000, ...).
fn word_spans(text: &str) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut spans = Vec::with_capacity(bytes.len() / 5 + 1);
    let mut start: Option<usize> = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let (is_space, len) = if b < 0x80 {
            (b == b' ' || (b'\t'..=b'\r').contains(&b), 1)
        } else {
            match text.get(i..).and_then(|rest| rest.chars().next()) {
                Some(c) => (c.is_whitespace(), c.len_utf8()),
                None => (false, 1), // unreachable: `i` always sits on a char boundary
            }
        };
        if is_space {
            if let Some(s) = start.take() {
                spans.push((s, i));
            }
        } else if start.is_none() {
            start = Some(i);
        }
        i += len;
    }
    if let Some(s) = start {
        spans.push((s, bytes.len()));
    }
    spans
}

fn char_shingles(text: &str, n: usize, out: &mut Vec<u64>) {
    if n == 0 {
        return;
    }
    let bytes = text.as_bytes();
    // Window k spans from the start of character k to the start of character k + n (or the end).
    let starts = text.char_indices().map(|(i, _)| i);
    let ends = text.char_indices().map(|(i, _)| i).chain(std::iter::once(bytes.len())).skip(n);
    for (s, e) in starts.zip(ends) {
        out.push(xxh3_64(&bytes[s..e]));
    }
}
