//! Counting unique pre-tokens with their frequencies (the part of training where the time goes).
//!
//! Text is split around special tokens, pre-tokenized, and every piece is counted as a byte
//! slice. Inside one parallel job the map keys *borrow* from the text (no allocation at all);
//! only when a job's map is folded into the caller's [`WordCounts`] is a key allocated, and only
//! the first time that word is seen.
//!
//! Parallelism: a text (or a block of a file) is cut into sub-chunks at *safe cuts* (see
//! [`safe_cut`]), which never change the pieces the pre-tokenizer produces, so counting the
//! chunks independently and adding the counts up gives exactly the counts of the whole text.
//! Each rayon worker folds into its own map; the maps are reduced pairwise at the end.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use aho_corasick::{AhoCorasick, MatchKind};
use rayon::prelude::*;
use rustc_hash::FxHashMap;

use crate::error::{BpeError, Result};
use crate::pretokenize::PreTokenizer;
use crate::special::{self, SpecialMatcher};

/// Unique pre-tokens (as bytes) with their number of occurrences.
pub type WordCounts = FxHashMap<Box<[u8]>, u64>;

/// Counts of one parallel job, keys borrowed from the text being counted. (Packing short words
/// into integer keys was tried: no faster; the time goes into cache misses on the table.)
type BorrowedCounts<'a> = FxHashMap<&'a [u8], u64>;

/// Size of the blocks `count_file` reads (the unit of memory use while streaming a file).
const FILE_BLOCK_SIZE: usize = 8 << 20;
/// Texts shorter than this are never split further for parallelism.
const MIN_CHUNK: usize = 64 << 10;

/// Count pre-tokens of `texts` in parallel on the current rayon pool (callers choose the pool via
/// `pool.install`), splitting each text around special tokens first
/// ([`SpecialMatcher::for_each_ordinary`]) so specials are never counted.
pub fn count_texts(pretok: &PreTokenizer, specials: &SpecialMatcher, texts: &[&str]) -> Result<WordCounts> {
    let guards = SpecialGuards::new(specials)?;
    let total: usize = texts.iter().map(|t| t.len()).sum();
    let target = chunk_target(total);
    // Long texts are cut at safe points so one huge text still uses every worker.
    let mut chunks: Vec<&str> = Vec::new();
    for &text in texts {
        if text.len() >= 2 * target {
            split_chunks(text, target, &guards, &mut chunks);
        } else if !text.is_empty() {
            chunks.push(text);
        }
    }
    let local = count_chunks(pretok, specials, &chunks)?;
    let mut out = WordCounts::default();
    out.reserve(local.len());
    add_borrowed(&mut out, local);
    Ok(out)
}

/// Adds the counts of `src` into `dst` (keys of `src` are moved, never copied).
pub fn merge_into(dst: &mut WordCounts, src: WordCounts) {
    if dst.is_empty() {
        *dst = src;
        return;
    }
    for (word, n) in src {
        *dst.entry(word).or_insert(0) += n;
    }
}

/// Stream one file in blocks (a few MB), cut at safe points, count blocks in parallel, add into
/// `counts`. `on_bytes(total_bytes_consumed_so_far)` after each block (progress bar). Invalid
/// UTF-8 -> [`BpeError::Format`] naming the path and the 1-based line number; missing file ->
/// [`BpeError::Io`]. Memory stays bounded by the block size, not the file size (unless the file
/// has no safe cut for a long stretch: a block grows until it finds one, like a very long line).
pub fn count_file(
    pretok: &PreTokenizer,
    specials: &SpecialMatcher,
    path: &Path,
    counts: &mut WordCounts,
    on_bytes: &mut dyn FnMut(u64),
) -> Result<()> {
    count_file_blocks(pretok, specials, path, counts, on_bytes, FILE_BLOCK_SIZE)
}

/// [`count_file`] with an explicit block size (tests use tiny blocks).
pub(crate) fn count_file_blocks(
    pretok: &PreTokenizer,
    specials: &SpecialMatcher,
    path: &Path,
    counts: &mut WordCounts,
    on_bytes: &mut dyn FnMut(u64),
    block_size: usize,
) -> Result<()> {
    let block_size = block_size.max(1);
    let mut file = File::open(path).map_err(|e| BpeError::io(path, e))?;
    let guards = SpecialGuards::new(specials)?;
    let mut buf: Vec<u8> = Vec::with_capacity(block_size + block_size / 4);
    let mut consumed: u64 = 0;
    let mut lines_before: usize = 0;
    // Cut candidates below this index were already rejected (the block is growing).
    let mut scanned: usize = 0;
    let mut eof = false;
    while !eof || !buf.is_empty() {
        // Fill up to one more block past what is buffered.
        if !eof {
            let want = buf.len() + block_size;
            eof = fill(&mut file, &mut buf, want).map_err(|e| BpeError::io(path, e))?;
        }
        let end = if eof {
            buf.len()
        } else {
            // Re-examine a few bytes before the previous end: a candidate needs the bytes around it.
            let from = scanned.saturating_sub(guards.lookback());
            match last_cut_from(&buf, from, &guards) {
                Some(c) => c,
                None => {
                    scanned = buf.len();
                    continue; // no safe cut yet: read more
                }
            }
        };
        scanned = 0;
        let block = &buf[..end];
        let text = match std::str::from_utf8(block) {
            Ok(t) => t,
            Err(e) => {
                let line = lines_before + count_newlines(&block[..e.valid_up_to()]) + 1;
                return Err(BpeError::format(
                    path.display().to_string(),
                    Some(line),
                    format!("invalid UTF-8 at byte offset {}", consumed + e.valid_up_to() as u64),
                ));
            }
        };
        let mut chunks = Vec::new();
        split_chunks(text, chunk_target(text.len()), &guards, &mut chunks);
        let local = count_chunks(pretok, specials, &chunks)?;
        add_borrowed(counts, local);
        lines_before += count_newlines(block);
        consumed += end as u64;
        buf.drain(..end);
        on_bytes(consumed);
    }
    Ok(())
}

/// Reads until `buf` holds `want` bytes or the file ends; returns true at end of file.
fn fill(file: &mut File, buf: &mut Vec<u8>, want: usize) -> std::io::Result<bool> {
    let start = buf.len();
    buf.resize(want, 0);
    let mut len = start;
    while len < want {
        match file.read(&mut buf[len..]) {
            Ok(0) => {
                buf.truncate(len);
                return Ok(true);
            }
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                buf.truncate(len);
                return Err(e);
            }
        }
    }
    Ok(false)
}

fn count_newlines(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'\n').count()
}

/// Target sub-chunk size: about 4 chunks per worker, but never tiny.
fn chunk_target(total: usize) -> usize {
    let parts = rayon::current_num_threads().max(1) * 4;
    (total / parts).max(MIN_CHUNK)
}

/// Counts `chunks` in parallel: one map per rayon fold, reduced pairwise (smaller into larger).
fn count_chunks<'a>(
    pretok: &PreTokenizer,
    specials: &SpecialMatcher,
    chunks: &[&'a str],
) -> Result<BorrowedCounts<'a>> {
    chunks
        .par_iter()
        .try_fold(BorrowedCounts::default, |mut map, &chunk| {
            count_str(pretok, specials, chunk, &mut map)?;
            Ok(map)
        })
        .try_reduce(BorrowedCounts::default, |a, b| {
            let (mut big, small) = if a.len() >= b.len() { (a, b) } else { (b, a) };
            for (k, v) in small {
                *big.entry(k).or_insert(0) += v;
            }
            Ok(big)
        })
}

/// Sequential count of one text into a borrowing map (the single pre-tokenizer call site).
fn count_str<'a>(
    pretok: &PreTokenizer,
    specials: &SpecialMatcher,
    text: &'a str,
    map: &mut BorrowedCounts<'a>,
) -> Result<()> {
    let mut count_ordinary = |part: &'a str| -> Result<()> {
        pretok.for_each_piece_fast(part, |piece: &'a str| {
            *map.entry(piece.as_bytes()).or_insert(0) += 1;
        })
    };
    if specials.is_empty() {
        count_ordinary(text)
    } else {
        specials.for_each_ordinary(text, &mut count_ordinary)
    }
}

/// Adds borrowed counts into owned ones, allocating a key only for a word seen the first time.
fn add_borrowed(dst: &mut WordCounts, src: BorrowedCounts<'_>) {
    for (word, n) in src {
        match dst.get_mut(word) {
            Some(c) => *c += n,
            None => {
                dst.insert(word.into(), n);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Safe cuts
// ---------------------------------------------------------------------------------------------
//
// A cut at index `c` is *safe* when
//   * `buf[c - 1] == b'\n'`,
//   * the character before that newline (at `c - 2`, decoded) is not whitespace, and
//   * the character at `c` (decoded) is not whitespace,
// where "whitespace" is Unicode White_Space, the regex `\s` (`char::is_whitespace`).
//
// Why this never changes the GPT-2 / GPT-4 pieces (both patterns have no look-behind, no `^`,
// and no empty matches, so the pieces right of a boundary that the full text also has depend
// only on the text right of it; what needs checking is that the full text has a piece boundary
// at `c` and that the left part ends with the same pieces):
//   * No alternative of either pattern matches "\n" followed by a non-whitespace character:
//     letters / digits / `'s` pieces contain no "\n"; the punctuation alternative of GPT-4 only
//     *ends* with `[\r\n]*+`; the whitespace alternatives match whitespace only. So every piece
//     of the full text ends at or before `c`, or starts at or after `c`.
//   * The newline at `c - 1` is preceded by a non-whitespace character, so the whitespace run
//     containing it is just "\n". In the full text that "\n" is one piece (GPT-2: `\s+(?!\S)`
//     fails because the next char is `\S`, then `\s` matches; GPT-4: `\s*[\r\n]`, or the
//     `[\r\n]*+` tail of a punctuation piece); in the left part alone it is the same piece
//     (`\s++$` / the same punctuation tail). The "preceded by non-whitespace" condition matters
//     for GPT-2: in "a \nb" the full text gives " ", "\n" but "a \n" alone gives " \n".
//     Checking the *decoded* neighbours (not just "ASCII non-whitespace" bytes) matters too:
//     GPT-4 reads "\n\u{3000}\nb" as one piece "\n\u{3000}\n".
// This is also how Hugging Face `tokenizers` sees files: it trains on one line at a time.
// Custom patterns are cut at the same points; a custom pattern whose pieces can span such a
// newline would see slightly different pieces at block boundaries.
//
// Special tokens: a cut must not fall inside an occurrence of a special token. Only a special
// that contains "\n" followed by more bytes can contain the cut (the byte before the cut is
// "\n"). The occurrences of those ("guarded" specials), overlapping ones included, and the
// prefixes of one that run past the end of the buffer (the next block may complete them) are
// found once per window of candidates by an Aho-Corasick search, so the work stays linear in
// the text whatever the specials are (checking every alignment of every special at every
// candidate would be quadratic in their length). If no occurrence spans the cut, leftmost-longest
// matching on the two parts finds exactly the matches of the whole.

/// Unicode White_Space, as the regex `\s`.
fn is_ws(c: char) -> bool {
    c.is_whitespace()
}

/// The character starting at `i`, if it is complete and valid.
fn char_at(buf: &[u8], i: usize) -> Option<char> {
    let b = *buf.get(i)?;
    let len = match b {
        0x00..=0x7f => return Some(b as char),
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => return None,
    };
    let bytes = buf.get(i..i + len)?;
    std::str::from_utf8(bytes).ok()?.chars().next()
}

/// The character ending just before `end` (exclusive), if it is complete and valid.
fn char_before(buf: &[u8], end: usize) -> Option<char> {
    let mut start = end.checked_sub(1)?;
    while start > 0 && end - start < 4 && (buf[start] & 0xc0) == 0x80 {
        start -= 1;
    }
    let s = std::str::from_utf8(buf.get(start..end)?).ok()?;
    let mut chars = s.chars();
    let c = chars.next_back()?;
    Some(c)
}

/// The guarded specials (those with a "\n" followed by more bytes), which a cut must not split.
struct SpecialGuards {
    /// Standard-semantics automaton over the guarded specials (for overlapping occurrences).
    ac: Option<AhoCorasick>,
    /// The guarded specials, sorted (to find a prefix of one at the end of a buffer).
    sorted: Vec<Vec<u8>>,
    max_len: usize,
}

/// Candidates examined per search of the guarded specials.
const GUARD_WINDOW: usize = 64 << 10;

impl SpecialGuards {
    fn none() -> Self {
        SpecialGuards { ac: None, sorted: Vec::new(), max_len: 0 }
    }

    fn new(specials: &SpecialMatcher) -> Result<Self> {
        let mut sorted: Vec<Vec<u8>> = specials
            .tokens()
            .iter()
            .map(|t| t.as_bytes())
            .filter(|b| b.len() > 1 && b[..b.len() - 1].contains(&b'\n'))
            .map(<[u8]>::to_vec)
            .collect();
        if sorted.is_empty() {
            return Ok(Self::none());
        }
        sorted.sort();
        let max_len = sorted.iter().map(Vec::len).max().unwrap_or(0);
        let ac = AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .kind(special::automaton_kind(&sorted))
            .build(&sorted)
            .map_err(|e| BpeError::InvalidSpecial {
                token: String::from_utf8_lossy(&sorted[0]).into(),
                reason: e.to_string(),
            })?;
        Ok(SpecialGuards { ac: Some(ac), sorted, max_len })
    }

    /// How far before an already-scanned end a candidate can still change its verdict.
    fn lookback(&self) -> usize {
        8 + self.max_len
    }

    /// For each cut `c` in `lo..hi` (`0 < lo <= hi <= buf.len()`): whether an occurrence of a
    /// guarded special in `buf` contains bytes `c - 1` and `c`, counting a prefix of a special
    /// that runs to the end of `buf` as an occurrence. `None`: no guarded specials.
    fn covered(&self, buf: &[u8], lo: usize, hi: usize) -> Option<Vec<bool>> {
        let ac = self.ac.as_ref()?;
        // Occurrences covering a cut in lo..hi lie within from..to.
        let from = lo.saturating_sub(self.max_len);
        let to = (hi + self.max_len).min(buf.len());
        let mut depth = vec![0i32; hi - lo + 1];
        let mut mark = |a: usize, b: usize| {
            // cuts a..b (clipped to lo..hi)
            let (a, b) = (a.max(lo), b.min(hi));
            if a < b {
                depth[a - lo] += 1;
                depth[b - lo] -= 1;
            }
        };
        for m in ac.find_overlapping_iter(&buf[from..to]) {
            mark(from + m.start() + 1, from + m.end());
        }
        if to == buf.len() {
            // The first start from which the rest of `buf` is a proper prefix of a special: every
            // cut after it may fall inside that special once the text goes on.
            let first = buf.len().saturating_sub(self.max_len - 1).max(from);
            let prefix_at = (first..buf.len()).find(|&s| {
                let rest = &buf[s..];
                let i = self.sorted.partition_point(|t| t.as_slice() < rest);
                self.sorted.get(i).is_some_and(|t| t.starts_with(rest))
            });
            if let Some(s) = prefix_at {
                mark(s + 1, buf.len() + 1);
            }
        }
        let mut level = 0;
        Some(
            depth[..hi - lo]
                .iter()
                .map(|d| {
                    level += d;
                    level > 0
                })
                .collect(),
        )
    }
}

/// Whether `c` (with `buf[c - 1] == b'\n'` already checked) is a safe cut, specials aside.
fn is_plain_cut(buf: &[u8], c: usize) -> bool {
    if c < 2 {
        return false;
    }
    match (char_before(buf, c - 1), char_at(buf, c)) {
        (Some(before), Some(after)) => !is_ws(before) && !is_ws(after),
        _ => false,
    }
}

/// Whether `c` is a candidate (right after a "\n", before the end) and a safe cut, specials aside.
fn is_candidate(buf: &[u8], c: usize) -> bool {
    c >= 2 && c < buf.len() && buf[c - 1] == b'\n' && is_plain_cut(buf, c)
}

/// Largest cut index in buf (exclusive end of the first part) lying just after a b'\n' that is
/// followed by a non-whitespace character (and preceded by one; see the comment above on why
/// splitting there never changes GPT-2/GPT-4 pieces: no piece spans "\n" followed by
/// non-whitespace). `None` if there is no such point.
pub fn safe_cut(buf: &[u8]) -> Option<usize> {
    last_cut_from(buf, 0, &SpecialGuards::none())
}

/// Largest safe cut `c` with `c > from`.
fn last_cut_from(buf: &[u8], from: usize, guards: &SpecialGuards) -> Option<usize> {
    let mut hi = buf.len();
    while hi > from + 1 {
        let lo = hi.saturating_sub(GUARD_WINDOW).max(from + 1);
        let mut candidates = (lo..hi).rev().filter(|&c| is_candidate(buf, c)).peekable();
        if candidates.peek().is_some() {
            match guards.covered(buf, lo, hi) {
                None => return candidates.next(),
                Some(cov) => {
                    if let Some(c) = candidates.find(|&c| !cov[c - lo]) {
                        return Some(c);
                    }
                }
            }
        }
        hi = lo;
    }
    None
}

/// Smallest safe cut `c` with `c >= from`.
fn next_cut_from(buf: &[u8], from: usize, guards: &SpecialGuards) -> Option<usize> {
    let mut lo = from.max(2);
    while lo < buf.len() {
        let hi = (lo + GUARD_WINDOW).min(buf.len());
        // Candidates follow a "\n": find those quickly.
        let mut candidates =
            (lo - 1..hi - 1).filter(|&i| buf[i] == b'\n').map(|i| i + 1).filter(|&c| is_candidate(buf, c)).peekable();
        if candidates.peek().is_some() {
            match guards.covered(buf, lo, hi) {
                None => return candidates.next(),
                Some(cov) => {
                    if let Some(c) = candidates.find(|&c| !cov[c - lo]) {
                        return Some(c);
                    }
                }
            }
        }
        lo = hi;
    }
    None
}

/// Cuts `text` at safe points into chunks of about `target` bytes (appended to `out`).
fn split_chunks<'a>(text: &'a str, target: usize, guards: &SpecialGuards, out: &mut Vec<&'a str>) {
    let bytes = text.as_bytes();
    let target = target.max(1);
    let mut start = 0;
    while bytes.len() - start > target + target / 2 {
        match next_cut_from(bytes, start + target, guards) {
            // Safe cuts lie right after an ASCII "\n", so they are char boundaries.
            Some(c) if c < bytes.len() => {
                out.push(&text[start..c]);
                start = c;
            }
            _ => break,
        }
    }
    if start < bytes.len() {
        out.push(&text[start..]);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::testutil::XorShift;
    use std::io::Write;

    fn naive(pretok: &PreTokenizer, specials: &SpecialMatcher, texts: &[&str]) -> WordCounts {
        let mut out = WordCounts::default();
        for t in texts {
            specials
                .for_each_ordinary(t, &mut |part| {
                    for p in pretok.split(part).unwrap() {
                        *out.entry(p.as_bytes().into()).or_insert(0) += 1;
                    }
                    Ok(())
                })
                .unwrap();
        }
        out
    }

    fn sorted(c: &WordCounts) -> Vec<(Vec<u8>, u64)> {
        let mut v: Vec<_> = c.iter().map(|(k, v)| (k.to_vec(), *v)).collect();
        v.sort();
        v
    }

    fn no_specials() -> SpecialMatcher {
        SpecialMatcher::new(&[]).unwrap()
    }

    fn pool(n: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap()
    }

    /// Random text from an alphabet full of whitespace, newlines, digits, apostrophes and
    /// non-ASCII letters / spaces, to stress cut points.
    fn random_text(rng: &mut XorShift, len: usize) -> String {
        const ATOMS: &[&str] = &[
            "a", "b", "Z", "é", "ж", "中", "1", "23", "'s", "'LL", " ", " ", "  ", "\t", "\n", "\n", "\r\n", "\n\n",
            ".", "!?", "\u{3000}", "\u{a0}", "\u{2028}", "\u{b}", "\u{c}", "🙂", "<|s|>", "-", "\r",
        ];
        let mut s = String::new();
        while s.len() < len {
            s.push_str(ATOMS[rng.below(ATOMS.len())]);
        }
        s
    }

    fn write_tmp(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("fastllm-count-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        let mut f = File::create(&p).unwrap();
        f.write_all(bytes).unwrap();
        p
    }

    fn file_counts(pretok: &PreTokenizer, specials: &SpecialMatcher, path: &Path, block: usize) -> WordCounts {
        let mut counts = WordCounts::default();
        let mut last = 0;
        count_file_blocks(
            pretok,
            specials,
            path,
            &mut counts,
            &mut |n| {
                assert!(n >= last);
                last = n;
            },
            block,
        )
        .unwrap();
        assert_eq!(last, std::fs::metadata(path).unwrap().len());
        counts
    }

    /// The property `safe_cut` promises: splitting there keeps the pieces, for both patterns.
    #[test]
    fn safe_cuts_keep_pieces() {
        let mut rng = XorShift::new(0x9e3779b97f4a7c15);
        use crate::pretokenize::{GPT2_LEGACY_PATTERN, GPT2_PATTERN, GPT4_LEGACY_PATTERN, GPT4_PATTERN};
        let regex_gpt2 = format!("(?:){GPT2_PATTERN}"); // the regex engine, not the hand-written matcher
        let regex_gpt4 = format!("(?:){GPT4_PATTERN}");
        for name in ["gpt2", "gpt4", GPT2_LEGACY_PATTERN, GPT4_LEGACY_PATTERN, &regex_gpt2, &regex_gpt4] {
            let pretok = PreTokenizer::new(name).unwrap();
            for round in 0..300 {
                let text = random_text(&mut rng, 5 + round % 60);
                let whole = pretok.split(&text).unwrap();
                let bytes = text.as_bytes();
                for c in 1..bytes.len() {
                    if bytes[c - 1] != b'\n' || !is_plain_cut(bytes, c) {
                        continue;
                    }
                    let mut parts = pretok.split(&text[..c]).unwrap();
                    parts.extend(pretok.split(&text[c..]).unwrap());
                    assert_eq!(parts, whole, "{name}: cut at {c} in {text:?}");
                }
            }
        }
    }

    #[test]
    fn safe_cut_points() {
        assert_eq!(safe_cut(b"ab\ncd\nef"), Some(6));
        assert_eq!(safe_cut(b"ab\ncd\n"), Some(3));
        assert_eq!(safe_cut(b"ab\n cd"), None);
        assert_eq!(safe_cut(b"ab \ncd"), None); // GPT-2 would read " \n" differently
        assert_eq!(safe_cut(b"ab\n\ncd"), None);
        assert_eq!(safe_cut(b"\ncd"), None);
        assert_eq!(safe_cut(b"ab\r\ncd"), None);
        assert_eq!(safe_cut("ab\n\u{3000}x".as_bytes()), None);
        assert_eq!(safe_cut("\u{a0}\nx".as_bytes()), None);
        assert_eq!(safe_cut("é\n中".as_bytes()), Some(3));
        assert_eq!(safe_cut("é\n\u{e4}".as_bytes()[..4].as_ref()), None); // incomplete char
        assert_eq!(safe_cut(b"no newline at all"), None);
        assert_eq!(safe_cut(b""), None);
    }

    #[test]
    fn cuts_avoid_specials_with_newlines() {
        let m = SpecialMatcher::new(&["<|a\nb|>".to_string(), "x\ny".to_string()]).unwrap();
        let g = SpecialGuards::new(&m).unwrap();
        assert_eq!(last_cut_from(b"q<|a\nb|>", 0, &g), None);
        assert_eq!(last_cut_from(b"q<|a\nb", 0, &g), None); // may continue as a special
        assert_eq!(last_cut_from(b"q<|a\nc", 0, &g), Some(5));
        assert_eq!(last_cut_from(b"1x\ny2", 0, &g), None);
        assert_eq!(last_cut_from(b"1x\nz2\nw", 0, &g), Some(6));
    }

    /// Long specials full of newlines, and a text made of them: every candidate cut lies inside
    /// an occurrence, at every alignment the special nearly matches. Checking each alignment at
    /// each candidate took time quadratic in the special's length per candidate (minutes here);
    /// the windowed Aho-Corasick search is linear. Counts still equal the naive ones.
    #[test]
    fn hostile_specials_with_newlines_count_exactly() {
        let long = format!("{}bb", "a\n".repeat(crate::special::MAX_SPECIAL_BYTES / 2 - 1));
        let specials = SpecialMatcher::new(&[long.clone(), "a\na\nc".to_string()]).unwrap();
        let pretok = PreTokenizer::new("gpt4").unwrap();
        let text = format!("{}x\ny\n{}", long.repeat(150), "a\n".repeat(2000));
        let want = sorted(&naive(&pretok, &specials, &[&text]));
        assert_eq!(sorted(&count_texts(&pretok, &specials, &[&text]).unwrap()), want);
        let path = write_tmp("hostile-specials.txt", text.as_bytes());
        for block in [4096, 50_000] {
            assert_eq!(sorted(&file_counts(&pretok, &specials, &path, block)), want, "block {block}");
        }
        // Chunks for the threads are cut only outside the specials.
        let guards = SpecialGuards::new(&specials).unwrap();
        let mut chunks = Vec::new();
        split_chunks(&text, 1000, &guards, &mut chunks);
        assert_eq!(chunks.concat(), text);
        let mut at = 0;
        for c in &chunks[..chunks.len() - 1] {
            at += c.len();
            assert!(at > 150 * long.len(), "cut at {at}, inside the specials");
        }
    }

    #[test]
    fn count_texts_matches_naive_and_skips_specials() {
        let pretok = PreTokenizer::new("gpt4").unwrap();
        let specials = SpecialMatcher::new(&["<|s|>".to_string(), "<|endoftext|>".to_string()]).unwrap();
        let mut rng = XorShift::new(42);
        let mut owned: Vec<String> = (0..40).map(|i| random_text(&mut rng, i * 37)).collect();
        owned.push("hello<|endoftext|>world hello<|s|><|s|> x".into());
        owned.push(random_text(&mut rng, 300_000)); // long enough to be split into chunks
        let texts: Vec<&str> = owned.iter().map(|s| s.as_str()).collect();
        let got = count_texts(&pretok, &specials, &texts).unwrap();
        assert_eq!(sorted(&got), sorted(&naive(&pretok, &specials, &texts)));
        // Only the specials contain '<' or '|': no counted piece may.
        assert!(got.keys().all(|k| !k.contains(&b'<') && !k.contains(&b'|')));
        assert_eq!(got.get(b"hello".as_slice()), Some(&1));
        assert_eq!(got.get(b"world".as_slice()), Some(&1));
        let plain = count_texts(&pretok, &no_specials(), &texts).unwrap();
        assert!(plain.keys().any(|k| k.contains(&b'<')));
    }

    #[test]
    fn count_texts_same_on_one_and_two_threads() {
        let pretok = PreTokenizer::new("gpt2").unwrap();
        let mut rng = XorShift::new(7);
        let big = random_text(&mut rng, 400_000);
        let texts = [big.as_str(), "a b c", ""];
        let one = pool(1).install(|| count_texts(&pretok, &no_specials(), &texts)).unwrap();
        let two = pool(2).install(|| count_texts(&pretok, &no_specials(), &texts)).unwrap();
        assert_eq!(sorted(&one), sorted(&two));
        assert_eq!(sorted(&one), sorted(&naive(&pretok, &no_specials(), &texts)));
    }

    #[test]
    fn merge_into_adds() {
        let mut a = WordCounts::default();
        a.insert(b"x".as_slice().into(), 2);
        let mut b = WordCounts::default();
        b.insert(b"x".as_slice().into(), 3);
        b.insert(b"y".as_slice().into(), 1);
        merge_into(&mut a, b);
        assert_eq!(sorted(&a), vec![(b"x".to_vec(), 5), (b"y".to_vec(), 1)]);
        let mut empty = WordCounts::default();
        merge_into(&mut empty, a.clone());
        assert_eq!(sorted(&empty), sorted(&a));
    }

    #[test]
    fn count_file_matches_count_texts_for_any_block_size() {
        let mut rng = XorShift::new(2024);
        let mut cases: Vec<String> = vec![
            "line one\r\nline two\r\n\r\nthird line\r\n".into(),
            format!("start{}end\n{}x\n", " ".repeat(50), "\n".repeat(30)),
            "no newline at all, just one long line of text with words".into(),
            "".into(),
            "a\nb\nc\nd\ne\nf\ng\n".into(),
            "tail<|s|>\n<|s|>next\nword<|s|>".into(),
            "ünïcödé\n中文字\n🙂🙂\n".into(),
        ];
        for i in 0..12 {
            cases.push(random_text(&mut rng, 50 + i * 200));
        }
        let specials = SpecialMatcher::new(&["<|s|>".to_string(), "<|x\ny|>".to_string()]).unwrap();
        for name in ["gpt2", "gpt4"] {
            let pretok = PreTokenizer::new(name).unwrap();
            for (i, text) in cases.iter().enumerate() {
                let path = write_tmp(&format!("case-{name}-{i}.txt"), text.as_bytes());
                for sp in [&no_specials(), &specials] {
                    let want = sorted(&count_texts(&pretok, sp, &[text]).unwrap());
                    assert_eq!(want, sorted(&naive(&pretok, sp, &[text])));
                    for block in [1, 2, 7, 13, 64, 1000, 1 << 20] {
                        let got = file_counts(&pretok, sp, &path, block);
                        assert_eq!(sorted(&got), want, "{name} case {i} block {block}");
                    }
                }
            }
        }
    }

    #[test]
    fn count_file_respects_specials_with_newlines() {
        let specials = SpecialMatcher::new(&["<|x\ny|>".to_string()]).unwrap();
        let pretok = PreTokenizer::new("gpt4").unwrap();
        let text = "ab<|x\ny|>cd\nef<|x\ny|>\ngh<|x\nz|>\n".repeat(5);
        let path = write_tmp("special-nl.txt", text.as_bytes());
        let want = sorted(&naive(&pretok, &specials, &[&text]));
        for block in [1, 3, 7, 11] {
            assert_eq!(sorted(&file_counts(&pretok, &specials, &path, block)), want, "block {block}");
        }
    }

    #[test]
    fn count_file_adds_to_existing_counts_and_is_thread_independent() {
        let pretok = PreTokenizer::new("gpt4").unwrap();
        let mut rng = XorShift::new(99);
        let text = random_text(&mut rng, 200_000);
        let path = write_tmp("threads.txt", text.as_bytes());
        let run = |n: usize| {
            pool(n).install(|| {
                let mut counts = count_texts(&pretok, &no_specials(), &["extra words"]).unwrap();
                count_file_blocks(&pretok, &no_specials(), &path, &mut counts, &mut |_| {}, 4096).unwrap();
                sorted(&counts)
            })
        };
        let want = sorted(&naive(&pretok, &no_specials(), &[&text, "extra words"]));
        assert_eq!(run(1), want);
        assert_eq!(run(2), want);
    }

    #[test]
    fn count_file_reports_invalid_utf8_line() {
        let pretok = PreTokenizer::new("gpt4").unwrap();
        let mut bytes = b"first line\nsecond line\nthird \xff line\nfourth\n".to_vec();
        bytes.extend(b"more\n".repeat(10));
        let path = write_tmp("bad.txt", &bytes);
        for block in [1, 5, 16, 1 << 20] {
            let mut counts = WordCounts::default();
            let err = count_file_blocks(&pretok, &no_specials(), &path, &mut counts, &mut |_| {}, block).unwrap_err();
            match &err {
                BpeError::Format { path: p, line, .. } => {
                    assert_eq!(*line, Some(3), "block {block}: {err}");
                    assert!(p.ends_with("bad.txt"));
                }
                other => panic!("unexpected error {other:?}"),
            }
            assert!(err.to_string().contains("bad.txt:3"), "{err}");
        }
        // A truncated multi-byte character at the very end.
        let path = write_tmp("bad-end.txt", b"ok\nok\n\xe4\xb8");
        let err = count_file(&pretok, &no_specials(), &path, &mut WordCounts::default(), &mut |_| {}).unwrap_err();
        assert!(matches!(err, BpeError::Format { line: Some(3), .. }), "{err}");
    }

    #[test]
    fn count_file_missing_is_io_error() {
        let pretok = PreTokenizer::new("gpt4").unwrap();
        let path = std::env::temp_dir().join("fastllm-definitely-missing-file.txt");
        let err = count_file(&pretok, &no_specials(), &path, &mut WordCounts::default(), &mut |_| {}).unwrap_err();
        assert!(matches!(err, BpeError::Io { .. }), "{err}");
        assert!(err.to_string().contains("fastllm-definitely-missing-file.txt"));
    }
}
