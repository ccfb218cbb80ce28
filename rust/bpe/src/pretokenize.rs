//! Pre-tokenization: split text into the pieces BPE merges within.
//!
//! The built-in patterns (tiktoken's cl100k "gpt4" and r50k "gpt2") run on hand-written
//! matchers that produce exactly the pieces of the regex (leftmost-first alternation, as in the
//! regex crate / fancy-regex), with an ASCII fast path and table lookups for other characters
//! (see [`crate::unicode`]). Any other pattern is compiled with fancy-regex.
//!
//! Both built-in patterns match at every position (each character is a letter, a number, white
//! space or "other", and each class has an alternative that takes it), so the matches tile the
//! text and the matcher is a plain left-to-right scanner: at position `i` it computes the end of
//! the piece starting at `i`.
//!
//! ## cl100k (`GPT4_PATTERN`), alternative by alternative
//! 1. `'(?i:[sdmt]|ll|ve|re)` — apostrophe + contraction, Unicode simple case folding (`'ſ`).
//! 2. `[^\r\n\p{L}\p{N}]?+\p{L}++` — a letter run, optionally preceded by one character that is
//!    neither `\r`, `\n`, a letter nor a number (so also a space, tab, `'`, `"`, U+3000 ...).
//! 3. `\p{N}{1,3}+` — one to three numbers.
//! 4. ` ?[^\s\p{L}\p{N}]++[\r\n]*+` — optional space, a run of "other", then any `\r`/`\n`.
//! 5. `\s++$|\s*[\r\n]|\s+(?!\S)|\s` — white space: with `run` the maximal white-space run from
//!    here: if it reaches the end of the text, all of it; else if it contains `\r`/`\n`, up to and
//!    including the last one; else if it has at least two characters, all but the last; else the
//!    single character.
//!
//! ## r50k (`GPT2_PATTERN`)
//! `'(?:[sdmt]|ll|ve|re)` (case-sensitive), then ` ?` + a letter run / number run / "other" run,
//! then white space as above without the newline rule.
//!
//! ## Older source forms
//! The pre-possessive forms of both patterns are recognised too. The old r50k form (also the one
//! Hugging Face ships for GPT-2) is piece-for-piece identical to the current one. The old cl100k
//! form is **not**: its `\s*[\r\n]+` comes before any end-of-text rule, so a white-space run that
//! ends the text and contains a newline followed by more white space splits after the last
//! newline (`"a\n  "` -> `"a"`, `"\n"`, `"  "`), where the current form keeps it whole
//! (`"a"`, `"\n  "`). It runs on the cl100k matcher with that one rule switched (name `"custom"`).

use crate::error::{BpeError, Result};
use crate::unicode::{char_classes, CharClasses, LETTER, NEWLINE, NUMBER, OTHER, SPACE};

/// tiktoken's r50k/gpt2 split pattern.
pub const GPT2_PATTERN: &str = r"'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s";
/// tiktoken's cl100k split pattern (the form current tiktoken ships).
pub const GPT4_PATTERN: &str = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s";

/// [`GPT4_PATTERN`] spelled for Oniguruma, the engine Hugging Face tokenizers runs: there
/// `\p{N}{1,3}+` means "one or more runs of 1-3 digits" (a repeat, not possessive), which would
/// glue whole numbers together. Dropping that `+` changes nothing for the regex crate (nothing
/// follows the digits in that alternative), so this is the form `tokenizer.json` carries.
pub const GPT4_HF_PATTERN: &str = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s";

/// The older cl100k form (tiktoken before possessive quantifiers). Differs from
/// [`GPT4_PATTERN`] on trailing white space that contains a newline (see the module docs).
pub const GPT4_LEGACY_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// The older r50k form (also Hugging Face's GPT-2 pattern). Equivalent to [`GPT2_PATTERN`].
pub const GPT2_LEGACY_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// Longest pre-token piece, in bytes: a longer run (200 MB of letters without a space, say) is
/// cut into parts of this size at char boundaries before BPE sees it. It bounds the memory of
/// encoding and training on any input (BPE's working set is a few dozen bytes per byte of a
/// piece); only runs of more than 1 MiB encode differently from tiktoken / Hugging Face
/// tokenizers (which have no such cap), so ids equal theirs on any real text.
pub const MAX_PIECE_BYTES: usize = 1 << 20;

/// How far a custom pattern's search sees, in bytes, on either side of where it starts (see
/// [`PreTokenizer::for_each_piece`]): it keeps splitting linear in the text for any pattern, so
/// no custom pattern's match is longer than this. The built-in patterns run on hand-written
/// matchers that need no window.
pub const REGEX_WINDOW_BYTES: usize = 4096;

#[derive(Clone, Debug)]
enum Matcher {
    /// Hand-written cl100k; `legacy_tail` selects the old form's trailing-white-space rule.
    Gpt4 {
        classes: &'static CharClasses,
        legacy_tail: bool,
    },
    /// Hand-written r50k.
    Gpt2 {
        classes: &'static CharClasses,
    },
    Regex(Box<fancy_regex::Regex>),
}

#[derive(Clone, Debug)]
pub struct PreTokenizer {
    name: &'static str,
    source: String,
    matcher: Matcher,
}

/// Which hand-written matcher a pattern maps to.
#[derive(Clone, Copy)]
enum Builtin {
    Gpt4 { legacy_tail: bool },
    Gpt2,
}

impl PreTokenizer {
    /// A pre-tokenizer for `pattern`: one of the names `gpt4`/`cl100k`/`cl100k_base`,
    /// `gpt2`/`r50k`/`r50k_base`/`p50k_base`, the exact regex source of a built-in (current or
    /// older tiktoken form), or any other regex (run with fancy-regex).
    pub fn new(pattern: &str) -> Result<Self> {
        let (name, source, builtin) = match pattern {
            "gpt4" | "cl100k" | "cl100k_base" | GPT4_PATTERN => {
                ("gpt4", GPT4_PATTERN, Some(Builtin::Gpt4 { legacy_tail: false }))
            }
            GPT4_HF_PATTERN => ("gpt4", GPT4_PATTERN, Some(Builtin::Gpt4 { legacy_tail: false })),
            "gpt2" | "r50k" | "r50k_base" | "p50k_base" | GPT2_PATTERN => ("gpt2", GPT2_PATTERN, Some(Builtin::Gpt2)),
            GPT2_LEGACY_PATTERN => ("gpt2", GPT2_LEGACY_PATTERN, Some(Builtin::Gpt2)),
            GPT4_LEGACY_PATTERN => ("custom", GPT4_LEGACY_PATTERN, Some(Builtin::Gpt4 { legacy_tail: true })),
            p => ("custom", p, None),
        };
        let fast = match (builtin, char_classes()) {
            (Some(Builtin::Gpt4 { legacy_tail }), Some(classes)) => Some(Matcher::Gpt4 { classes, legacy_tail }),
            (Some(Builtin::Gpt2), Some(classes)) => Some(Matcher::Gpt2 { classes }),
            _ => None,
        };
        let matcher = match fast {
            Some(m) => m,
            None => Matcher::Regex(Box::new(
                fancy_regex::Regex::new(source)
                    .map_err(|e| BpeError::InvalidPattern { pattern: source.to_string(), reason: e.to_string() })?,
            )),
        };
        Ok(PreTokenizer { name, source: source.to_string(), matcher })
    }

    /// The regex source of the pattern (for a name alias, the built-in's current source).
    pub fn pattern(&self) -> &str {
        &self.source
    }

    /// The source to store in a Hugging Face `tokenizer.json` (see [`GPT4_HF_PATTERN`]).
    pub fn hf_pattern(&self) -> &str {
        if self.name == "gpt4" {
            GPT4_HF_PATTERN
        } else {
            &self.source
        }
    }

    /// `"gpt4"`, `"gpt2"` or `"custom"`.
    pub fn name(&self) -> &str {
        self.name
    }

    /// Whether this pre-tokenizer runs on a hand-written matcher (not the regex engine).
    pub fn is_hand_written(&self) -> bool {
        !matches!(self.matcher, Matcher::Regex(_))
    }

    /// Call `f` on every piece of `text`, in order (dyn version of
    /// [`for_each_piece_fast`](Self::for_each_piece_fast)).
    ///
    /// Pieces are at most [`MAX_PIECE_BYTES`] long: a longer match is cut into parts of that size.
    /// A custom pattern's searches see [`REGEX_WINDOW_BYTES`] on either side of where they start, so
    /// a match or lookaround that would need to see further behaves as if the text ended there;
    /// this keeps the work linear in the text for any pattern (the built-in patterns need no
    /// window).
    pub fn for_each_piece<'a>(&self, text: &'a str, f: &mut dyn FnMut(&'a str)) -> Result<()> {
        self.for_each_piece_fast(text, f)
    }

    /// Call `f` on every piece of `text`, in order; monomorphised over `f` for the hot loops.
    /// The hand-written matchers cannot fail; only a custom regex can (backtrack limit).
    #[inline]
    pub fn for_each_piece_fast<'a, F: FnMut(&'a str)>(&self, text: &'a str, mut f: F) -> Result<()> {
        match &self.matcher {
            Matcher::Gpt4 { classes, legacy_tail: false } => {
                scan(text, |b, i| gpt4_piece_end::<false>(classes, b, i), f);
                Ok(())
            }
            Matcher::Gpt4 { classes, legacy_tail: true } => {
                scan(text, |b, i| gpt4_piece_end::<true>(classes, b, i), f);
                Ok(())
            }
            Matcher::Gpt2 { classes } => {
                scan(text, |b, i| gpt2_piece_end(classes, b, i), f);
                Ok(())
            }
            Matcher::Regex(re) => regex_pieces(re, text, &mut f),
        }
    }

    /// All pieces of `text`, in order.
    pub fn split<'a>(&self, text: &'a str) -> Result<Vec<&'a str>> {
        let mut out = Vec::with_capacity(text.len() / 4 + 1);
        self.for_each_piece_fast(text, |p| out.push(p))?;
        Ok(out)
    }
}

/// Calls `f` on `piece`, cut into parts of at most `CAP` bytes (at char boundaries):
/// [`MAX_PIECE_BYTES`] for the built-in patterns, [`REGEX_WINDOW_BYTES`] for a custom one.
#[inline(always)]
fn emit<'a, const CAP: usize, F: FnMut(&'a str)>(piece: &'a str, f: &mut F) {
    if piece.len() <= CAP {
        f(piece)
    } else {
        emit_long::<CAP, F>(piece, f)
    }
}

#[cold]
fn emit_long<'a, const CAP: usize, F: FnMut(&'a str)>(piece: &'a str, f: &mut F) {
    let mut rest = piece;
    while rest.len() > CAP {
        let end = floor_char_boundary(rest, CAP);
        let (head, tail) = rest.split_at(end);
        f(head);
        rest = tail;
    }
    if !rest.is_empty() {
        f(rest);
    }
}

/// The largest char boundary of `s` at or below `i` (`i` clamped to `s.len()`): at most 3 below
/// `i`, so cutting at `floor_char_boundary(s, CAP)` (CAP >= 4) always makes progress.
fn floor_char_boundary(s: &str, i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    let mut k = i;
    while k > 0 && !s.is_char_boundary(k) {
        k -= 1;
    }
    k
}

/// The pieces of `text` under a custom regex, in order, each given to `f` through [`emit`] with
/// the window's size as the cap (so no piece of a custom pattern is longer than a window).
///
/// Text the pattern does not match becomes a piece of its own, as in Hugging Face's
/// Split(behavior="isolated"): nothing is dropped, so decode(encode(s)) == s for any pattern, and
/// a saved tokenizer.json encodes the same in `tokenizers`. Empty matches are no pieces, but
/// they do end an unmatched stretch.
///
/// Each search sees only [`REGEX_WINDOW_BYTES`] of text on either side of where it starts: a match
/// running to the end of that window is cut there, and
/// a pattern behaves at the window's end as at the end of the text. That bounds the work of one
/// search, and so of the whole split, to linear in the text: without it a pattern like `a*b|.`
/// or `(?=(a+)+b)a|.` rescans the rest of a long run of `a` at every position, quadratic in the
/// run (the regex engines bound the steps of one search, not of all of them). A result can only
/// differ from an unbounded search's where a match or its lookaround needs to see more than
/// REGEX_WINDOW_BYTES ahead; the worst case, a pattern that does so at every position, costs a
/// window's worth of matching per byte of text.
fn regex_pieces<'a, F: FnMut(&'a str)>(re: &fancy_regex::Regex, text: &'a str, f: &mut F) -> Result<()> {
    let n = text.len();
    let mut last = 0; // end of the text given to `f` so far
    let mut at = 0; // where the next search starts
    while at < n {
        let lo = floor_char_boundary(text, at.saturating_sub(REGEX_WINDOW_BYTES));
        let hi = floor_char_boundary(text, at.saturating_add(REGEX_WINDOW_BYTES));
        let input = fancy_regex::RegexInput::new(&text[lo..hi]).from_pos(at - lo);
        let found = re
            .find_input(input)
            .map_err(|e| BpeError::RegexRuntime(e.to_string()))?
            .map(|m| (lo + m.start(), lo + m.end()));
        match found {
            // No match starts in this window: none that fits it, at least. Move on by half a
            // window, so that a match starting late in this one is looked for again with room.
            None if hi == n => break,
            None => at = floor_char_boundary(text, at + REGEX_WINDOW_BYTES / 2),
            Some((start, end)) if start == end => {
                // An empty match ends the unmatched stretch before it (as fancy-regex's
                // `find_iter` reports it); search again one char further on.
                if end > last {
                    emit::<REGEX_WINDOW_BYTES, F>(&text[last..end], f);
                    last = end;
                }
                at = end + text[end..].chars().next().map_or(1, char::len_utf8);
            }
            Some((start, end)) => {
                if start > last {
                    emit::<REGEX_WINDOW_BYTES, F>(&text[last..start], f);
                }
                emit::<REGEX_WINDOW_BYTES, F>(&text[start..end], f);
                last = end;
                at = end;
            }
        }
    }
    if last < n {
        emit::<REGEX_WINDOW_BYTES, F>(&text[last..], f);
    }
    Ok(())
}

/// Drive a piece-end function over `text`: pieces tile the text.
#[inline(always)]
fn scan<'a, E, F>(text: &'a str, piece_end: E, mut f: F)
where
    E: Fn(&[u8], usize) -> usize,
    F: FnMut(&'a str),
{
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let e = piece_end(b, i);
        debug_assert!(e > i && e <= b.len() && text.is_char_boundary(e));
        if let Some(piece) = text.get(i..e) {
            emit::<MAX_PIECE_BYTES, F>(piece, &mut f);
        }
        i = e;
    }
}

/// End of the `[\r\n]*` run starting at byte `i`.
#[inline(always)]
fn newlines_end(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b'\r' | b'\n')) {
        i += 1;
    }
    i
}

/// End of the white-space piece starting at byte `i` (which holds a white-space character).
/// `NL` enables the cl100k `\s*[\r\n]` rule; `LEGACY` lets that rule apply before the
/// end-of-text rule (old cl100k form).
#[inline(always)]
fn whitespace_end<const NL: bool, const LEGACY: bool>(t: &CharClasses, b: &[u8], i: usize) -> usize {
    let mut e = i;
    let mut last_start = i; // start of the run's last character
    let mut nl_end = 0; // end of the run's last \r / \n (0: none)
    while e < b.len() {
        let (c, n) = t.class_at(b, e);
        if c & SPACE == 0 {
            break;
        }
        if NL && c & NEWLINE != 0 {
            nl_end = e + 1;
        }
        last_start = e;
        e += n;
    }
    if e == b.len() && !(LEGACY && nl_end != 0) {
        e // \s++$
    } else if NL && nl_end != 0 {
        nl_end // \s*[\r\n]
    } else if last_start > i {
        last_start // \s+(?!\S): all but the last character
    } else {
        e // \s
    }
}

/// cl100k: end of the piece starting at byte `i < b.len()`.
#[inline(always)]
fn gpt4_piece_end<const LEGACY: bool>(t: &CharClasses, b: &[u8], i: usize) -> usize {
    let c0 = b[i];
    let (cls, n) = t.class_at(b, i);
    let j = i + n;
    // '(?i:[sdmt]|ll|ve|re)
    if c0 == b'\'' {
        let (f1, n1) = t.fold_at(b, j);
        match f1 {
            b's' | b'd' | b'm' | b't' => return j + n1,
            b'l' | b'v' | b'r' => {
                let (f2, n2) = t.fold_at(b, j + n1);
                if (f1 == b'l' && f2 == b'l') || (f1 != b'l' && f2 == b'e') {
                    return j + n1 + n2;
                }
            }
            _ => {}
        }
    }
    // [^\r\n\p{L}\p{N}]?+\p{L}++
    if cls & LETTER != 0 {
        return t.letters_end(b, j);
    }
    let (next, nn) = t.class_at_or_end(b, j);
    if cls & (NEWLINE | NUMBER) == 0 && next & LETTER != 0 {
        return t.letters_end(b, j + nn);
    }
    // \p{N}{1,3}+
    if cls & NUMBER != 0 {
        if next & NUMBER == 0 {
            return j;
        }
        let k = j + nn;
        let (third, n3) = t.class_at_or_end(b, k);
        return if third & NUMBER != 0 { k + n3 } else { k };
    }
    // ` ?[^\s\p{L}\p{N}]++[\r\n]*+`
    if cls & OTHER != 0 {
        return newlines_end(b, t.run_end(b, j, OTHER));
    }
    if c0 == b' ' && next & OTHER != 0 {
        return newlines_end(b, t.run_end(b, j + nn, OTHER));
    }
    // \s++$|\s*[\r\n]|\s+(?!\S)|\s
    whitespace_end::<true, LEGACY>(t, b, i)
}

/// r50k: end of the piece starting at byte `i < b.len()`.
#[inline(always)]
fn gpt2_piece_end(t: &CharClasses, b: &[u8], i: usize) -> usize {
    let c0 = b[i];
    // '(?:[sdmt]|ll|ve|re)
    if c0 == b'\'' {
        match (b.get(i + 1), b.get(i + 2)) {
            (Some(b's' | b'd' | b'm' | b't'), _) => return i + 2,
            (Some(b'l'), Some(b'l')) | (Some(b'v' | b'r'), Some(b'e')) => return i + 3,
            _ => {}
        }
    }
    let (cls, n) = t.class_at(b, i);
    // ` ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++`
    if cls & LETTER != 0 {
        return t.letters_end(b, i + n);
    }
    let run = cls & (NUMBER | OTHER);
    if run != 0 {
        return t.run_end(b, i + n, run);
    }
    if c0 == b' ' {
        let (next, nn) = t.class_at_or_end(b, i + 1);
        if next & LETTER != 0 {
            return t.letters_end(b, i + 1 + nn);
        }
        let run = next & (NUMBER | OTHER);
        if run != 0 {
            return t.run_end(b, i + 1 + nn, run);
        }
    }
    // \s++$|\s+(?!\S)|\s
    whitespace_end::<false, false>(t, b, i)
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;
    use crate::testutil::XorShift;

    fn regex_pieces<'a>(re: &fancy_regex::Regex, text: &'a str) -> Vec<&'a str> {
        re.find_iter(text).map(|m| m.expect("no runtime error").as_str()).collect()
    }

    /// (pattern source, pre-tokenizer that must be hand-written for it)
    fn fast_cases() -> Vec<(&'static str, PreTokenizer, fancy_regex::Regex)> {
        [GPT4_PATTERN, GPT2_PATTERN, GPT4_LEGACY_PATTERN, GPT2_LEGACY_PATTERN, GPT4_HF_PATTERN]
            .into_iter()
            .map(|src| {
                let p = PreTokenizer::new(src).expect("builtin");
                assert!(p.is_hand_written(), "{src} must map to a fast path");
                (src, p, fancy_regex::Regex::new(src).expect("valid"))
            })
            .collect()
    }

    fn check(src: &str, p: &PreTokenizer, re: &fancy_regex::Regex, text: &str) {
        let expected = regex_pieces(re, text);
        let got = p.split(text).expect("infallible");
        assert_eq!(got, expected, "pattern {src}\ntext {text:?}");
        let mut dyn_got = Vec::new();
        p.for_each_piece(text, &mut |s| dyn_got.push(s)).expect("infallible");
        assert_eq!(dyn_got, expected);
        assert_eq!(got.concat(), text);
    }

    const EDGE_CASES: &[&str] = &[
        "",
        " ",
        "  ",
        "\n",
        "\r\n",
        "\n\n",
        " \n",
        "\n ",
        "a\n  ",
        "a\n \n ",
        "a \n\t",
        "a\r\n",
        "\r\n\r\na",
        "  \n  x",
        " \n\r \t y",
        "a  \t b",
        "a   ",
        "\t\tx",
        "x \u{3000}y",
        "Hello, world! How's it going?",
        "'S 'ſ 'll 'LL 'Ll 'lL 'x 'VE 'Re 'rE 'ſſ 'M 'D 'T",
        // contractions glued to letters: the contraction must win over `'` + letter run
        "'Sam 'ſx 'sx 'llama 'LLx 'lx 'vex 'VEx 'REd 'rex 'Dx 'dx 'mx 'Mx 'tx 'Tx 'ſé",
        "'\u{212A}x 'kx 'ex 'ſ1 's1 '1 ' x",
        "'",
        "a'",
        "''s",
        "'\u{212A}",
        "don't I'll we've they're she'd I'm",
        "1 12 123 1234 12345 123456 1234567",
        " 1",
        "  1",
        "a1b2",
        "\t!",
        "  !",
        " !!\n\n",
        "!!\r\n\r\nx",
        " \"quoted\"",
        "\u{1F642}\u{1F642} \u{1F642}abc",
        "中文 字符 中",
        "e\u{301}galite\u{301} \u{301}x",
        "\u{85}a \u{85}\u{85}b\u{85}",
        "\u{a0}a\u{a0}\u{a0}b \u{a0}",
        "x\u{2028}y\u{2028}\u{2028}",
        "\u{3000}\u{3000}z\u{3000}",
        "½²Ⅻ 1½ ²³⁴⁵",
        "مرحبا ١٢٣٤ नमस्ते ४५६",
        "\x0b\x0c \x0ba\x0c",
        "a\r",
        "\r",
        "x\n\n\ny",
        "...\n",
        "  \n\n  \n\t",
    ];

    #[test]
    fn pretok_edge_cases_match_regex() {
        for (src, p, re) in fast_cases() {
            for text in EDGE_CASES {
                check(src, &p, &re, text);
            }
            // digit runs of every length, with and without neighbours
            for k in 0..8 {
                let digits = "7".repeat(k);
                for text in [digits.clone(), format!(" {digits}"), format!("a{digits}b")] {
                    check(src, &p, &re, &text);
                }
            }
        }
    }

    const ALPHABET: &[char] = &[
        'a',
        'b',
        's',
        'S',
        'd',
        'D',
        'm',
        't',
        'T',
        'l',
        'L',
        'v',
        'V',
        'e',
        'E',
        'r',
        'R',
        'x',
        'Z',
        '0',
        '1',
        '9',
        '!',
        '.',
        ',',
        '"',
        '-',
        '(',
        '\'',
        '\'',
        ' ',
        ' ',
        ' ',
        '\t',
        '\r',
        '\n',
        '\n',
        '\x0b',
        '\x0c',
        'ſ',
        '\u{212A}',
        'é',
        '\u{301}',
        '½',
        '²',
        'Ⅻ',
        '\u{85}',
        '\u{a0}',
        '\u{2028}',
        '\u{3000}',
        '中',
        '\u{1F642}',
        'ب',
        '٣',
        'क',
        '४',
        '\u{94d}',
        '€',
        '\u{1D7D8}',
        '\u{10400}',
        '\u{E0001}',
    ];

    fn random_text(rng: &mut XorShift) -> String {
        let len = rng.below_high(41);
        (0..len).map(|_| ALPHABET[rng.below_high(ALPHABET.len())]).collect()
    }

    #[test]
    fn pretok_random_strings_match_regex() {
        let cases = fast_cases();
        let mut rng = XorShift::star(0x9E37_79B9_7F4A_7C15);
        let n = 100_000;
        for _ in 0..n {
            let text = random_text(&mut rng);
            for (src, p, re) in &cases {
                check(src, p, re, &text);
            }
        }
    }

    /// Random strings from a small whitespace-heavy alphabet, which hits the white-space rules
    /// (and the old/new cl100k difference) much more often.
    #[test]
    fn pretok_random_whitespace_heavy_strings_match_regex() {
        const WS: &[char] = &[' ', ' ', '\t', '\n', '\r', '\u{a0}', 'a', '1', '!', '\''];
        let cases = fast_cases();
        let mut rng = XorShift::star(12345);
        for _ in 0..100_000 {
            let len = rng.below_high(12);
            let text: String = (0..len).map(|_| WS[rng.below_high(WS.len())]).collect();
            for (src, p, re) in &cases {
                check(src, p, re, &text);
            }
        }
    }

    #[test]
    fn pretok_legacy_cl100k_differs_only_on_trailing_newline_whitespace() {
        let new = PreTokenizer::new(GPT4_PATTERN).expect("builtin");
        let old = PreTokenizer::new(GPT4_LEGACY_PATTERN).expect("builtin");
        let text = "a\n  ";
        assert_eq!(new.split(text).expect("ok"), ["a", "\n  "]);
        assert_eq!(old.split(text).expect("ok"), ["a", "\n", "  "]);
        // and the regex engine agrees on both
        for src in [GPT4_PATTERN, GPT4_LEGACY_PATTERN] {
            let re = fancy_regex::Regex::new(src).expect("valid");
            let p = PreTokenizer::new(src).expect("builtin");
            assert_eq!(p.split(text).expect("ok"), regex_pieces(&re, text));
        }
        // Exhaustively over short strings of a relevant alphabet: old == new unless the text
        // ends in a white-space run with a newline followed by more white space.
        let alphabet = ['a', ' ', '\n', '\r', '\t', '!', '1'];
        let mut differ = 0;
        for len in 0..=6u32 {
            for code in 0..alphabet.len().pow(len) {
                let mut c = code;
                let text: String = (0..len)
                    .map(|_| {
                        let ch = alphabet[c % alphabet.len()];
                        c /= alphabet.len();
                        ch
                    })
                    .collect();
                let tail: String = text
                    .chars()
                    .rev()
                    .take_while(|c| c.is_whitespace())
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                // A preceding "other" run swallows the tail's leading newlines (`[\r\n]*+`).
                let head = &text[..text.len() - tail.len()];
                let tail = if head.ends_with('!') { tail.trim_start_matches(['\r', '\n']) } else { tail.as_str() };
                let splits = tail.rfind(['\r', '\n']).is_some_and(|k| k + 1 < tail.len());
                let same = new.split(&text).expect("ok") == old.split(&text).expect("ok");
                assert_eq!(same, !splits, "{text:?}");
                differ += usize::from(!same);
            }
        }
        assert!(differ > 0);
    }

    #[test]
    fn pretok_legacy_gpt2_is_equivalent() {
        let new = PreTokenizer::new(GPT2_PATTERN).expect("builtin");
        let old = PreTokenizer::new(GPT2_LEGACY_PATTERN).expect("builtin");
        let re_new = fancy_regex::Regex::new(GPT2_PATTERN).expect("valid");
        let re_old = fancy_regex::Regex::new(GPT2_LEGACY_PATTERN).expect("valid");
        let mut rng = XorShift::star(7);
        for _ in 0..20_000 {
            let text = random_text(&mut rng);
            assert_eq!(regex_pieces(&re_new, &text), regex_pieces(&re_old, &text), "{text:?}");
            assert_eq!(new.split(&text).expect("ok"), old.split(&text).expect("ok"));
        }
    }

    #[test]
    fn pretok_names_and_aliases() {
        for alias in ["gpt4", "cl100k", "cl100k_base", GPT4_PATTERN] {
            let p = PreTokenizer::new(alias).expect("builtin");
            assert_eq!((p.name(), p.pattern(), p.is_hand_written()), ("gpt4", GPT4_PATTERN, true));
        }
        for alias in ["gpt2", "r50k", "r50k_base", "p50k_base", GPT2_PATTERN] {
            let p = PreTokenizer::new(alias).expect("builtin");
            assert_eq!((p.name(), p.pattern(), p.is_hand_written()), ("gpt2", GPT2_PATTERN, true));
        }
        let p = PreTokenizer::new(GPT2_LEGACY_PATTERN).expect("builtin");
        assert_eq!((p.name(), p.pattern(), p.is_hand_written()), ("gpt2", GPT2_LEGACY_PATTERN, true));
        let p = PreTokenizer::new(GPT4_LEGACY_PATTERN).expect("builtin");
        assert_eq!((p.name(), p.pattern(), p.is_hand_written()), ("custom", GPT4_LEGACY_PATTERN, true));
        // a near-miss of a built-in source is a custom regex
        let near = format!("{GPT2_PATTERN}|x");
        let p = PreTokenizer::new(&near).expect("valid");
        assert_eq!((p.name(), p.is_hand_written()), ("custom", false));
        assert_eq!(p.split("ab  c").expect("ok"), ["ab", " ", " c"]);
        let err = PreTokenizer::new("(unclosed").expect_err("invalid");
        assert!(matches!(err, BpeError::InvalidPattern { .. }));
    }

    #[test]
    fn pretok_custom_regex_keeps_unmatched_text() {
        let p = PreTokenizer::new(r"[a-z]+").expect("valid");
        assert_eq!(p.split("  ab, cd!").expect("ok"), ["  ", "ab", ", ", "cd", "!"]);
        assert_eq!(p.split("").expect("ok"), Vec::<&str>::new());
    }

    #[test]
    fn pretok_custom_regex_skips_empty_matches() {
        let p = PreTokenizer::new(r"a*").expect("valid");
        assert_eq!(p.split("baab").expect("ok"), ["b", "aa", "b"]);
    }

    /// The old, unwindowed split (fancy-regex's own iterator), for texts the windows cover.
    fn unbounded_pieces<'a>(re: &fancy_regex::Regex, text: &'a str) -> Vec<&'a str> {
        let mut out = Vec::new();
        let mut last = 0;
        for m in re.find_iter(text) {
            let m = m.expect("no runtime error");
            if m.start() > last {
                out.push(&text[last..m.start()]);
            }
            if !m.as_str().is_empty() {
                out.push(m.as_str());
            }
            last = m.end();
        }
        if last < text.len() {
            out.push(&text[last..]);
        }
        out
    }

    /// On texts shorter than a window, the windowed split is the plain one, for patterns with
    /// lookarounds, empty matches, anchors and unmatched stretches.
    #[test]
    fn pretok_custom_regex_same_as_unbounded_on_short_texts() {
        let patterns = [
            r"[a-z]+",
            r"a*",
            r"\s+(?!\S)|\s+|\S+",
            r"(?=(a+)+b)a|.",
            r"a+(?=b)|.",
            r"(?<=a)b+|x",
            r"^a|b$|\bc",
            // Llama 3's split (cl100k's old form plus `(?:)`, so that it runs on the regex engine)
            r"(?:)(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
            r"",
            r"x?",
        ];
        let mut rng = XorShift::star(99);
        // Texts with runs longer than the first windows (up to 3 KiB, within the last one).
        let runs = [" ", "a", "b", "\n", " \n", "1", "é", "!", "ab", "x y"];
        let long_texts: Vec<String> = (0..60)
            .map(|_| {
                (0..1 + rng.below_high(4))
                    .map(|_| runs[rng.below_high(runs.len())].repeat(1 + rng.below_high(1000)))
                    .collect()
            })
            .filter(|t: &String| t.len() <= 3000)
            .collect();
        for src in patterns {
            let p = PreTokenizer::new(src).expect("valid");
            assert!(!p.is_hand_written(), "{src}");
            let re = fancy_regex::Regex::new(src).expect("valid");
            let short = EDGE_CASES.iter().map(|t| t.to_string()).chain((0..2000).map(|_| random_text(&mut rng)));
            // `a+(?=b)|.` takes "." for an "a" whose "b" lies beyond the first window (see below).
            let long = long_texts.iter().filter(|_| src != r"a+(?=b)|.").cloned();
            for text in short.chain(long) {
                assert_eq!(p.split(&text).expect("ok"), unbounded_pieces(&re, &text), "{src} on {text:?}");
            }
        }
    }

    /// No piece is longer than MAX_PIECE_BYTES, whatever the pattern (no custom pattern's piece
    /// longer than its window): long runs are cut at char boundaries, and the pieces tile the text.
    #[test]
    fn pretok_pieces_are_capped() {
        let runs = |m: usize| {
            [
                "a".repeat(3 * m + 5),
                " ".repeat(2 * m + 1),
                "é".repeat(m + 1),
                format!("x{}", "😀".repeat(m / 2)),
                format!("{}!{}", "1".repeat(3 * m), "-".repeat(m + 7)),
            ]
        };
        let (m, w) = (MAX_PIECE_BYTES, REGEX_WINDOW_BYTES);
        // The legacy cl100k form runs on the hand-written matcher too.
        let builtin = ["gpt4", "gpt2", GPT4_LEGACY_PATTERN].map(|s| (s, m));
        let custom = [r"\S+|\s+", r"(?=(a+)+b)a|[^b]+", r"b+"].map(|s| (s, w));
        for (src, cap) in builtin.into_iter().chain(custom) {
            let p = PreTokenizer::new(src).expect("valid");
            for text in &runs(cap) {
                let pieces = p.split(text).expect("ok");
                assert_eq!(pieces.concat(), *text, "{src}");
                assert!(pieces.iter().all(|s| !s.is_empty() && s.len() <= cap), "{src}: a piece over the cap");
            }
        }
        // A run is cut into whole parts of the cap (less up to 3 bytes for a char boundary).
        let gpt4 = PreTokenizer::new("gpt4").expect("builtin");
        let run = "a".repeat(2 * m + 5);
        assert_eq!(gpt4.split(&run).expect("ok"), [&run[..m], &run[m..2 * m], &run[2 * m..]]);
        let wide = "é".repeat(m); // 2 * m bytes, cut between characters
        assert_eq!(gpt4.split(&wide).expect("ok").iter().map(|s| s.len()).collect::<Vec<_>>(), [m, m]);
        let four = format!(" {}", "😀".repeat(m / 4)); // one piece; the cut falls back 3 bytes
        let lens: Vec<usize> = gpt4.split(&four).expect("ok").iter().map(|s| s.len()).collect();
        assert_eq!(lens, [m - 3, 4]);
    }

    /// A custom pattern's search sees REGEX_WINDOW_BYTES ahead: `a+(?=b)|.` on a run of `a` that
    /// ends in `b` takes the "." alternative until the `b` is within reach. So the work of each
    /// search is bounded (without windows, each search rescans the rest of the run).
    #[test]
    fn pretok_custom_regex_searches_are_windowed() {
        let m = REGEX_WINDOW_BYTES;
        let p = PreTokenizer::new(r"a+(?=b)|.").expect("valid");
        let b = m + 10; // where the "b" is
        let text = format!("{}b", "a".repeat(b));
        let reach = b - (m - 1); // the first position whose window holds the "b"
        let mut want: Vec<&str> = vec!["a"; reach];
        want.push(&text[reach..b]);
        want.push("b");
        assert_eq!(p.split(&text).expect("ok"), want);
        // A match running to the end of the window is cut there.
        let greedy = PreTokenizer::new(r"a+|.").expect("valid");
        assert_eq!(greedy.split(&text).expect("ok"), [&text[..m], &text[m..b], "b"]);
        // No match within a window: the search moves on by half a window; unmatched text
        // becomes capped pieces; a match starting late in one window is found from the next.
        let late = format!("{}abc{}", " ".repeat(m - 2), " ".repeat(m));
        let abc = PreTokenizer::new(r"abc").expect("valid");
        let lens: Vec<usize> = abc.split(&late).expect("ok").iter().map(|s| s.len()).collect();
        assert_eq!(lens, [m - 2, 3, m]);
        // The quadratic case of the issue finishes; the pieces tile the text.
        let q = PreTokenizer::new(r"(?=(a+)+b)a|.").expect("valid");
        let long = "a".repeat(3 * m);
        let pieces = q.split(&long).expect("ok");
        assert_eq!((pieces.len(), pieces.concat()), (long.len(), long.clone()));
    }

    fn read_corpus(path: &str) -> Option<String> {
        std::fs::read_to_string(path).ok()
    }

    /// Differential check on real corpora (a few MB; part of the normal suite when present).
    #[test]
    fn pretok_corpus_matches_regex() {
        for path in ["/work/shared/data/tinyshakespeare.txt", "/work/shared/data/imdb_reviews_train.txt"] {
            let Some(text) = read_corpus(path) else { continue };
            let end = (0..=text.len().min(300_000)).rev().find(|&k| text.is_char_boundary(k));
            let text = &text[..end.unwrap_or(0)];
            for (src, p, re) in fast_cases() {
                check(src, &p, &re, text);
            }
        }
    }

    /// On-CPU nanoseconds of this thread so far (Linux), to see through a loaded machine.
    fn thread_cpu_ns() -> Option<u64> {
        let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
        s.split_whitespace().next()?.parse().ok()
    }

    /// Throughput of the hand-written matchers vs fancy-regex on real text:
    /// `cargo test --release -p fastllm-bpe pretok_bench -- --ignored --nocapture`.
    /// Prints the best wall-clock rate and the rate by this thread's on-CPU time (summed over
    /// the repetitions; robust against other load on the machine).
    #[test]
    #[ignore = "benchmark; run with --release -- --ignored --nocapture"]
    fn pretok_bench() {
        use std::time::Instant;
        fn measure(reps: usize, mut run: impl FnMut() -> usize) -> (f64, f64, usize) {
            let mut best = f64::INFINITY;
            let cpu0 = thread_cpu_ns();
            let mut out = 0;
            for _ in 0..reps {
                let t0 = Instant::now();
                out = std::hint::black_box(run());
                best = best.min(t0.elapsed().as_secs_f64());
            }
            let cpu = match (cpu0, thread_cpu_ns()) {
                (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e9 / reps as f64,
                _ => f64::NAN,
            };
            (best, cpu, out)
        }
        for path in ["/work/shared/data/tinyshakespeare.txt", "/work/shared/data/imdb_reviews_train.txt"] {
            let Some(text) = read_corpus(path) else {
                eprintln!("skip {path}: missing");
                continue;
            };
            let mb = text.len() as f64 / 1e6;
            for name in ["gpt4", "gpt2"] {
                let p = PreTokenizer::new(name).expect("builtin");
                let re = fancy_regex::Regex::new(p.pattern()).expect("valid");
                let fast_reps = (200.0 / mb).ceil() as usize;
                let (fast_wall, fast_cpu, n_fast) = measure(fast_reps, || {
                    let mut count = 0usize;
                    p.for_each_piece_fast(&text, |s| count += 1 + (s.len() & 1)).expect("ok");
                    count
                });
                let (re_wall, re_cpu, n_re) = measure(if mb > 10.0 { 1 } else { 3 }, || {
                    let mut count = 0usize;
                    for m in re.find_iter(&text) {
                        count += 1 + (m.expect("ok").as_str().len() & 1);
                    }
                    count
                });
                assert_eq!(n_fast, n_re);
                eprintln!(
                    "{path} ({mb:.1} MB) {name}: hand-written {:.0} MB/s (cpu {:.0}), \
                     fancy-regex {:.1} MB/s (cpu {:.1})",
                    mb / fast_wall,
                    mb / fast_cpu,
                    mb / re_wall,
                    mb / re_cpu,
                );
            }
        }
    }
}
