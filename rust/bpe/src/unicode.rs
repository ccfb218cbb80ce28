//! Character classes for the hand-written pre-tokenizers.
//!
//! The built-in split patterns only ever ask four questions about a character: is it a letter
//! (`\p{L}`), a number (`\p{N}`), white space (`\s`, Unicode `White_Space`) or none of these
//! ("other")? The three classes are disjoint, so every scalar value gets exactly one of the flags
//! [`LETTER`], [`NUMBER`], [`SPACE`], [`OTHER`]; `\r` and `\n` additionally carry [`NEWLINE`].
//!
//! The classes are built once, from `regex_syntax` — the very crate (and Unicode tables) that the
//! fancy-regex fallback compiles its patterns with — so the fast path and the regex can never
//! disagree about the Unicode version. Lookup is a 128-entry table for ASCII, a flat 64 KiB table
//! for the rest of the BMP and a binary search over ranges above it.
//!
//! The cl100k contractions are case-insensitive (`'(?i:[sdmt]|ll|ve|re)`), which in the regex
//! crate means Unicode simple case folding (e.g. `'ſ` matches like `'s`). The fold sets of the
//! eight letters involved are derived from `regex_syntax` as well.

use std::fmt;
use std::sync::LazyLock;

use regex_syntax::hir::{Class, Hir, HirKind};

/// `\p{L}`: General_Category = Letter.
pub const LETTER: u8 = 1;
/// `\p{N}`: General_Category = Number (Nd | Nl | No).
pub const NUMBER: u8 = 2;
/// `\s`: the Unicode `White_Space` property.
pub const SPACE: u8 = 4;
/// Neither a letter, a number nor white space (`[^\s\p{L}\p{N}]`).
pub const OTHER: u8 = 8;
/// `\r` or `\n` (always together with [`SPACE`]).
pub const NEWLINE: u8 = 16;

/// Number of code points covered by the flat table.
const BMP: usize = 0x1_0000;

/// The lookup tables. Obtain the shared instance with [`char_classes`].
pub struct CharClasses {
    ascii: [u8; 128],
    bmp: Box<[u8; BMP]>,
    /// Sorted, disjoint `(first, last, flags)` ranges of code points >= U+10000 whose class is
    /// not [`OTHER`].
    astral: Box<[(u32, u32, u8)]>,
    /// For ASCII bytes: the lower-case letter among `sdmtlvre` whose `(?i:..)` class contains
    /// the byte, else 0.
    fold_ascii: [u8; 128],
    /// The same for the non-ASCII members of those fold classes (e.g. U+017F ſ -> `s`).
    fold_other: Box<[(u32, u8)]>,
}

impl fmt::Debug for CharClasses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CharClasses")
            .field("astral_ranges", &self.astral.len())
            .field("fold_other", &self.fold_other)
            .finish_non_exhaustive()
    }
}

static CLASSES: LazyLock<Option<CharClasses>> = LazyLock::new(CharClasses::build);

/// The shared tables, built on first use. `None` only if `regex_syntax` refused to translate one
/// of the fixed class expressions, which cannot happen with a working build (a test asserts it);
/// callers then fall back to the regex engine instead of panicking.
pub fn char_classes() -> Option<&'static CharClasses> {
    CLASSES.as_ref()
}

/// The code-point ranges of a single-class expression such as `\p{L}` or `(?i:s)`.
fn class_ranges(expr: &str) -> Option<Vec<(u32, u32)>> {
    let hir: Hir = regex_syntax::parse(expr).ok()?;
    match hir.kind() {
        HirKind::Class(Class::Unicode(c)) => {
            Some(c.ranges().iter().map(|r| (u32::from(r.start()), u32::from(r.end()))).collect())
        }
        HirKind::Literal(lit) => {
            let s = std::str::from_utf8(&lit.0).ok()?;
            let mut chars = s.chars();
            let c = u32::from(chars.next()?);
            chars.next().is_none().then(|| vec![(c, c)])
        }
        _ => None,
    }
}

impl CharClasses {
    fn build() -> Option<CharClasses> {
        // Every code point starts as OTHER; the three (disjoint) classes overwrite it.
        let mut bmp: Box<[u8; BMP]> = vec![OTHER; BMP].into_boxed_slice().try_into().ok()?;
        let mut astral: Vec<(u32, u32, u8)> = Vec::new();
        for (expr, flag) in [(r"\p{L}", LETTER), (r"\p{N}", NUMBER), (r"\s", SPACE)] {
            for (lo, hi) in class_ranges(expr)? {
                for cp in lo..=hi.min(BMP as u32 - 1) {
                    if let Some(slot) = bmp.get_mut(cp as usize) {
                        *slot = flag;
                    }
                }
                if hi >= BMP as u32 {
                    astral.push((lo.max(BMP as u32), hi, flag));
                }
            }
        }
        astral.sort_unstable();
        // Adjacent ranges of the same class are merged (fewer binary-search steps).
        let mut merged: Vec<(u32, u32, u8)> = Vec::with_capacity(astral.len());
        for r in astral {
            match merged.last_mut() {
                Some(last) if last.2 == r.2 && last.1 + 1 == r.0 => last.1 = r.1,
                _ => merged.push(r),
            }
        }
        bmp[usize::from(b'\r')] |= NEWLINE;
        bmp[usize::from(b'\n')] |= NEWLINE;
        let mut ascii = [0u8; 128];
        ascii.copy_from_slice(&bmp[..128]);

        let mut fold_ascii = [0u8; 128];
        let mut fold_other = Vec::new();
        for letter in *b"sdmtlvre" {
            let expr = format!("(?i:{})", char::from(letter));
            for (lo, hi) in class_ranges(&expr)? {
                for cp in lo..=hi {
                    match fold_ascii.get_mut(cp as usize) {
                        Some(slot) => *slot = letter,
                        None => fold_other.push((cp, letter)),
                    }
                }
            }
        }
        fold_other.sort_unstable();
        Some(CharClasses {
            ascii,
            bmp,
            astral: merged.into_boxed_slice(),
            fold_ascii,
            fold_other: fold_other.into_boxed_slice(),
        })
    }

    /// The class flags of a code point (exactly one of LETTER/NUMBER/SPACE/OTHER, plus NEWLINE
    /// for `\r` and `\n`).
    #[inline]
    pub fn class_of(&self, cp: u32) -> u8 {
        if cp < BMP as u32 {
            self.bmp[(cp & 0xFFFF) as usize]
        } else {
            self.astral_class(cp)
        }
    }

    #[inline(never)]
    fn astral_class(&self, cp: u32) -> u8 {
        let idx = self.astral.partition_point(|&(lo, _, _)| lo <= cp);
        match idx.checked_sub(1).and_then(|k| self.astral.get(k)) {
            Some(&(_, hi, flag)) if cp <= hi => flag,
            _ => OTHER,
        }
    }

    /// Class flags and UTF-8 length of the character starting at byte `i` of `b`, which must be
    /// the bytes of a `str` with `i < b.len()` on a character boundary.
    #[inline(always)]
    pub fn class_at(&self, b: &[u8], i: usize) -> (u8, usize) {
        let c = b[i];
        if c < 0x80 {
            (self.ascii[usize::from(c)], 1)
        } else {
            let (cp, n) = decode_at(b, i);
            (self.class_of(cp), n)
        }
    }

    /// Like [`class_at`](Self::class_at) but 0 (no class) past the end of `b`.
    #[inline(always)]
    pub fn class_at_or_end(&self, b: &[u8], i: usize) -> (u8, usize) {
        if i < b.len() {
            self.class_at(b, i)
        } else {
            (0, 0)
        }
    }

    /// End (exclusive byte offset) of the maximal run, starting at byte `i`, of characters whose
    /// flags intersect `mask`.
    #[inline(always)]
    pub fn run_end(&self, b: &[u8], mut i: usize, mask: u8) -> usize {
        while let Some(&c) = b.get(i) {
            if c < 0x80 {
                if self.ascii[usize::from(c)] & mask == 0 {
                    break;
                }
                i += 1;
            } else {
                let (cp, n) = decode_at(b, i);
                if self.class_of(cp) & mask == 0 {
                    break;
                }
                i += n;
            }
        }
        i
    }

    /// End of the maximal `\p{L}` run starting at byte `i`. ASCII letters are scanned eight
    /// bytes at a time (the loop exit then depends on one well-predicted branch per word instead
    /// of one per byte); a non-ASCII byte falls back to the table lookup.
    #[inline(always)]
    pub fn letters_end(&self, b: &[u8], mut i: usize) -> usize {
        loop {
            let Some(chunk) = b.get(i..i + 8) else {
                // Fewer than 8 bytes left: byte at a time.
                return self.run_end(b, i, LETTER);
            };
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(chunk);
            let word = u64::from_le_bytes(bytes);
            let stop = non_ascii_letter_mask(word);
            if stop == 0 {
                i += 8;
                continue;
            }
            let shift = stop.trailing_zeros() & !7;
            i += (shift / 8) as usize;
            // The first byte that is not an ASCII letter: an ASCII byte ends the run, a lead
            // byte needs the table.
            if (word >> shift) as u8 & 0x80 == 0 {
                return i;
            }
            let (cp, n) = decode_at(b, i);
            if self.class_of(cp) & LETTER == 0 {
                return i;
            }
            i += n;
        }
    }

    /// Case-insensitive contraction letter at byte `i`: the lower-case ASCII letter among
    /// `sdmtlvre` whose simple case-fold class contains the character, with the character's
    /// UTF-8 length; `(0, 0)` if there is none (or `i` is past the end).
    #[inline]
    pub fn fold_at(&self, b: &[u8], i: usize) -> (u8, usize) {
        match b.get(i) {
            None => (0, 0),
            Some(&c) if c < 0x80 => (self.fold_ascii[usize::from(c)], 1),
            Some(_) => {
                let (cp, n) = decode_at(b, i);
                match self.fold_other.binary_search_by_key(&cp, |&(c, _)| c) {
                    Ok(k) => (self.fold_other.get(k).map_or(0, |p| p.1), n),
                    Err(_) => (0, n),
                }
            }
        }
    }

    /// The non-ASCII characters that fold onto one of `sdmtlvre` (for tests and diagnostics).
    pub fn non_ascii_folds(&self) -> &[(u32, u8)] {
        &self.fold_other
    }
}

/// SWAR: the high bit of each byte of the result is set iff that byte of `w` is NOT an ASCII
/// letter (`A-Z`, `a-z`); all other bits are clear.
#[inline(always)]
pub fn non_ascii_letter_mask(w: u64) -> u64 {
    const HI: u64 = 0x8080_8080_8080_8080;
    const LO7: u64 = 0x7F7F_7F7F_7F7F_7F7F;
    // Fold to lower case (| 0x20) and drop the high bit, so per-byte additions cannot carry.
    let v = (w | 0x2020_2020_2020_2020) & LO7;
    let ge_a = v + 0x1F1F_1F1F_1F1F_1F1F; // high bit set iff v >= 0x61 ('a')
    let gt_z = v + 0x0505_0505_0505_0505; // high bit set iff v >= 0x7B ('z' + 1)
    let letter = ge_a & !gt_z & !w & HI;
    !letter & HI
}

/// Decode the (non-ASCII or ASCII) UTF-8 sequence starting at byte `i` of valid UTF-8 `b`:
/// `(code point, byte length)`.
#[inline(always)]
pub fn decode_at(b: &[u8], i: usize) -> (u32, usize) {
    let c = u32::from(b[i]);
    if c < 0x80 {
        (c, 1)
    } else if c < 0xE0 {
        (((c & 0x1F) << 6) | (u32::from(b[i + 1]) & 0x3F), 2)
    } else if c < 0xF0 {
        (((c & 0x0F) << 12) | ((u32::from(b[i + 1]) & 0x3F) << 6) | (u32::from(b[i + 2]) & 0x3F), 3)
    } else {
        (
            ((c & 0x07) << 18)
                | ((u32::from(b[i + 1]) & 0x3F) << 12)
                | ((u32::from(b[i + 2]) & 0x3F) << 6)
                | (u32::from(b[i + 3]) & 0x3F),
            4,
        )
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    fn tables() -> &'static CharClasses {
        char_classes().expect("tables must build")
    }

    /// A string holding every Unicode scalar value once, in order, with each char's byte offset.
    fn all_chars() -> (String, Vec<(usize, char)>) {
        let mut s = String::with_capacity(4 * 0x11_0000);
        let mut offs = Vec::with_capacity(0x11_0000);
        for cp in 0..=0x10_FFFFu32 {
            if let Some(c) = char::from_u32(cp) {
                offs.push((s.len(), c));
                s.push(c);
            }
        }
        (s, offs)
    }

    /// Set of chars (by byte offset into `all_chars`) that the real regex engine matches with
    /// the single-char expression `expr`.
    fn regex_set(hay: &str, expr: &str) -> std::collections::HashSet<usize> {
        let re = fancy_regex::Regex::new(expr).expect("valid");
        re.find_iter(hay)
            .map(|m| {
                let m = m.expect("no runtime error");
                assert_eq!(m.as_str().chars().count(), 1, "{expr} matched {:?}", m.as_str());
                m.start()
            })
            .collect()
    }

    #[test]
    fn pretok_unicode_classes_match_regex_for_every_scalar_value() {
        let t = tables();
        let (hay, offs) = all_chars();
        let letters = regex_set(&hay, r"\p{L}");
        let numbers = regex_set(&hay, r"\p{N}");
        let spaces = regex_set(&hay, r"\s");
        assert!(letters.len() > 100_000 && numbers.len() > 1_000 && spaces.len() == 25);
        let mut checked = 0usize;
        for &(off, c) in &offs {
            let expected = if letters.contains(&off) {
                LETTER
            } else if numbers.contains(&off) {
                NUMBER
            } else if spaces.contains(&off) {
                SPACE
            } else {
                OTHER
            };
            let expected = if c == '\r' || c == '\n' { expected | NEWLINE } else { expected };
            assert_eq!(t.class_of(u32::from(c)), expected, "class of U+{:04X}", u32::from(c));
            // and through the byte-level entry points
            let mut buf = [0u8; 4];
            let enc = c.encode_utf8(&mut buf).as_bytes();
            assert_eq!(t.class_at(enc, 0), (expected, c.len_utf8()));
            assert_eq!(decode_at(enc, 0), (u32::from(c), c.len_utf8()));
            checked += 1;
        }
        assert_eq!(checked, 0x11_0000 - 0x800);
    }

    #[test]
    fn pretok_unicode_fold_sets_match_regex_for_every_scalar_value() {
        let t = tables();
        let (hay, offs) = all_chars();
        for letter in *b"sdmtlvre" {
            let set = regex_set(&hay, &format!("(?i:{})", char::from(letter)));
            assert!(set.len() >= 2);
            for &(off, c) in &offs {
                let mut buf = [0u8; 4];
                let (fold, n) = t.fold_at(c.encode_utf8(&mut buf).as_bytes(), 0);
                assert_eq!(n, c.len_utf8());
                assert_eq!(fold == letter, set.contains(&off), "(?i:{}) vs U+{:04X}", char::from(letter), u32::from(c));
            }
        }
        // The one well-known non-ASCII member: U+017F LATIN SMALL LETTER LONG S folds to s.
        assert_eq!(t.non_ascii_folds(), &[(0x17F, b's')]);
        assert_eq!(t.fold_at(b"x", 1), (0, 0));
    }

    #[test]
    fn pretok_unicode_swar_letter_mask() {
        for byte in 0..=255u8 {
            let is_letter = byte.is_ascii_alphabetic();
            for pos in 0..8 {
                // the byte at `pos`, surrounded by letters and by non-letters
                for fill in [b'q', b'Q', b'@', b'[', 0x80, 0xFF, b'z' + 1, b'a' - 1] {
                    let mut bytes = [fill; 8];
                    bytes[pos] = byte;
                    let mask = non_ascii_letter_mask(u64::from_le_bytes(bytes));
                    for (k, &x) in bytes.iter().enumerate() {
                        let flagged = (mask >> (8 * k + 7)) & 1 == 1;
                        assert_eq!(flagged, !x.is_ascii_alphabetic(), "{bytes:?} byte {k}");
                    }
                    assert_eq!(mask & !0x8080_8080_8080_8080, 0);
                    assert_eq!((mask >> (8 * pos + 7)) & 1 == 0, is_letter);
                }
            }
        }
    }

    #[test]
    fn pretok_unicode_letters_end_matches_run_end() {
        let t = tables();
        let pieces = ["a", "Zz", "é", "中", "\u{10400}", "1", " ", "@", "[", "`", "{", "\u{301}", "ß"];
        let mut rng = crate::testutil::XorShift::new(0x1234_5678_9ABC_DEF1);
        for _ in 0..20_000 {
            let mut s = String::new();
            let state = rng.next_u64();
            let len = (state % 30) as usize;
            let mut r = state;
            for _ in 0..len {
                r = r.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                let k = (r >> 33) as usize % pieces.len();
                // letters much more often than the rest, so runs cross 8-byte words
                let k = if r & 1 == 0 { k % 5 } else { k };
                s.push_str(pieces[k]);
            }
            let b = s.as_bytes();
            for (i, _) in s.char_indices() {
                assert_eq!(t.letters_end(b, i), t.run_end(b, i, LETTER), "{s:?} at {i}");
            }
        }
    }

    #[test]
    fn pretok_unicode_run_end() {
        let t = tables();
        let s = "abcé\u{1F642}x中1½ \u{3000}\r\n!";
        let b = s.as_bytes();
        assert_eq!(t.run_end(b, 0, LETTER), "abcé".len());
        assert_eq!(t.run_end(b, "abcé\u{1F642}".len(), LETTER), "abcé\u{1F642}x中".len());
        assert_eq!(t.run_end(b, "abcé\u{1F642}x中".len(), NUMBER), "abcé\u{1F642}x中1½".len());
        assert_eq!(t.run_end(b, "abcé\u{1F642}x中1½".len(), SPACE), s.len() - 1);
        assert_eq!(t.run_end(b, s.len(), SPACE), s.len());
        assert_eq!(t.class_at_or_end(b, s.len()), (0, 0));
    }
}
