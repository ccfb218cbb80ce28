//! Special tokens (`<|endoftext|>`, ...): finding them in text so they are never split or merged.
//!
//! Matching is leftmost-longest over all specials (aho-corasick), so `<|a|>` and `<|a|>x` both work
//! as specials and the longer one wins where both match, as in HF tokenizers' added tokens.

use std::collections::HashSet;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};

use crate::error::{BpeError, Result};
use crate::normalize::{normalize, NormStep};

/// Longest special token, in bytes of UTF-8: 1 KiB, far more than any real one (`<|endoftext|>`
/// is 13). Special tokens are searched for in every text, and training must never cut a text
/// inside one; the cap keeps both cheap whatever the tokens are.
pub const MAX_SPECIAL_BYTES: usize = 1024;

/// Above this many bytes of special tokens in all, the matcher is a contiguous NFA rather than a
/// DFA: aho-corasick's DFA takes time quadratic in the length of a repetitive pattern to build
/// (one 1 KB token of one letter: 11 ms; four: 86 ms; 40 KB: seconds), the NFA linear time.
/// Below it (the usual few short specials) the DFA, which searches faster. (aho-corasick itself
/// picks an NFA for more than 100 patterns.)
const DFA_MAX_TOTAL_BYTES: usize = 1024;

/// The Aho-Corasick automaton kind for `tokens`: aho-corasick's choice unless they are long in
/// all (see [`DFA_MAX_TOTAL_BYTES`]).
pub(crate) fn automaton_kind<T: AsRef<[u8]>>(tokens: &[T]) -> Option<AhoCorasickKind> {
    let total: usize = tokens.iter().map(|t| t.as_ref().len()).sum();
    (total > DFA_MAX_TOTAL_BYTES).then_some(AhoCorasickKind::ContiguousNFA)
}

#[derive(Clone, Debug)]
pub struct SpecialMatcher {
    tokens: Vec<String>,
    ac: Option<AhoCorasick>,
}

/// Checks special tokens: each non-empty, at most [`MAX_SPECIAL_BYTES`] long, none listed twice.
pub fn check_specials(tokens: &[String]) -> Result<()> {
    let mut seen: HashSet<&str> = HashSet::with_capacity(tokens.len());
    for t in tokens {
        let bad = |reason: String| Err(BpeError::InvalidSpecial { token: t.clone(), reason });
        if t.is_empty() {
            return bad("special tokens must be non-empty".into());
        }
        if t.len() > MAX_SPECIAL_BYTES {
            return bad(format!(
                "it is {} bytes long; special tokens are at most {MAX_SPECIAL_BYTES} bytes (UTF-8)",
                t.len()
            ));
        }
        if !seen.insert(t) {
            return bad("listed more than once".into());
        }
    }
    Ok(())
}

impl SpecialMatcher {
    pub fn new(tokens: &[String]) -> Result<Self> {
        check_specials(tokens)?;
        let ac = if tokens.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostLongest)
                    .kind(automaton_kind(tokens))
                    .build(tokens)
                    .map_err(|e| BpeError::InvalidSpecial { token: tokens.join(", "), reason: e.to_string() })?,
            )
        };
        Ok(SpecialMatcher { tokens: tokens.to_vec(), ac })
    }

    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Non-overlapping occurrences as (start, end, index into `tokens`), left to right.
    pub fn find_iter<'a>(&'a self, text: &'a str) -> impl Iterator<Item = (usize, usize, usize)> + 'a {
        self.ac.iter().flat_map(move |ac| ac.find_iter(text)).map(|m| (m.start(), m.end(), m.pattern().as_usize()))
    }

    /// Calls `f` on each stretch of `text` between special tokens (never on an empty stretch).
    pub fn for_each_ordinary<'a>(&self, text: &'a str, f: &mut dyn FnMut(&'a str) -> Result<()>) -> Result<()> {
        let mut last = 0;
        for (start, end, _) in self.find_iter(text) {
            if start > last {
                f(&text[last..start])?;
            }
            last = end;
        }
        if last < text.len() {
            f(&text[last..])?;
        }
        Ok(())
    }
}

/// A Hugging Face added token (an entry of `tokenizer.json`'s `added_tokens`) with its flags.
///
/// `special` ones are the tokenizer's special tokens (subject to `allowed_special` /
/// `disallowed_special`); the others are matched in any text and always give their id.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AddedToken {
    pub content: String,
    pub id: u32,
    pub special: bool,
    /// Matched in the normalized text (after the normalizer) rather than in the raw text.
    pub normalized: bool,
    /// Takes the whitespace on its left (`lstrip`) / right (`rstrip`) with it.
    pub lstrip: bool,
    pub rstrip: bool,
    /// Matches only where it is not inside a word (no `\w` char right before or after).
    pub single_word: bool,
}

impl AddedToken {
    /// A special token with the flags tokenizers gives one by default (not normalized, no strip).
    pub fn special(content: &str, id: u32) -> Self {
        AddedToken {
            content: content.to_string(),
            id,
            special: true,
            normalized: false,
            lstrip: false,
            rstrip: false,
            single_word: false,
        }
    }

    /// A special token with the default flags: the plain special-token path handles it.
    pub fn is_plain_special(&self) -> bool {
        *self == AddedToken::special(&self.content, self.id)
    }
}

/// The added tokens worth storing: none when all are plain specials (the specials list says it
/// all), else all of them.
pub fn canonical_added(tokens: Vec<AddedToken>) -> Vec<AddedToken> {
    if tokens.iter().all(AddedToken::is_plain_special) {
        Vec::new()
    } else {
        tokens
    }
}

/// A stretch of text, or an added token's id, in the order they occur.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    Text(&'a str),
    Token(u32),
}

/// Added tokens found in text as tokenizers' `AddedVocabulary::find_matches` finds them.
#[derive(Clone, Debug)]
pub struct AddedMatcher {
    ac: AhoCorasick,
    /// pattern index -> index into the token list the matcher was built for.
    index: Vec<usize>,
}

fn is_word_char(c: char) -> bool {
    regex_syntax::try_is_word_character(c).unwrap_or(c.is_alphanumeric() || c == '_')
}

impl AddedMatcher {
    /// Leftmost-longest matcher over `patterns` (pattern i stands for token `index[i]`); `None`
    /// when there are none. Duplicate patterns are an error (tokenizers refuses them too).
    pub fn new(patterns: &[String], index: Vec<usize>) -> Result<Option<Self>> {
        if patterns.is_empty() {
            return Ok(None);
        }
        let mut seen: HashSet<&str> = HashSet::with_capacity(patterns.len());
        for p in patterns {
            if !seen.insert(p) {
                return Err(BpeError::InvalidSpecial {
                    token: p.clone(),
                    reason: "two added tokens match this same text".into(),
                });
            }
        }
        let ac = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .kind(automaton_kind(patterns))
            .build(patterns)
            .map_err(|e| BpeError::InvalidSpecial { token: patterns.join(", "), reason: e.to_string() })?;
        Ok(Some(AddedMatcher { ac, index }))
    }

    /// Cuts `text` into pieces exactly as tokenizers' `find_matches` does: leftmost-longest
    /// matches; `keep(token, start)` may skip a match (a special not allowed) or fail (one
    /// disallowed); `single_word` tokens only match between non-word chars; `lstrip` / `rstrip`
    /// tokens swallow the whitespace beside them.
    pub fn split<'a>(
        &self,
        text: &'a str,
        tokens: &[AddedToken],
        keep: &mut dyn FnMut(usize, usize) -> Result<bool>,
        out: &mut Vec<Piece<'a>>,
    ) -> Result<()> {
        let mut start_offset = 0;
        for m in self.ac.find_iter(text) {
            let (mut start, mut stop) = (m.start(), m.end());
            let k = self.index[m.pattern().as_usize()];
            let t = &tokens[k];
            if !keep(k, start)? {
                continue;
            }
            if t.single_word {
                let start_space = !text[..start].chars().next_back().is_some_and(is_word_char);
                let stop_space = !text[stop..].chars().next().is_some_and(is_word_char);
                if !(start_space && stop_space) {
                    continue;
                }
            }
            if t.lstrip {
                // The whitespace before may already belong to the previous match (its rstrip).
                start = text[..start].trim_end_matches(char::is_whitespace).len().max(start_offset);
            }
            if t.rstrip {
                stop = text.len() - text[stop..].trim_start_matches(char::is_whitespace).len();
            }
            if start_offset < start {
                out.push(Piece::Text(&text[start_offset..start]));
            }
            out.push(Piece::Token(t.id));
            start_offset = stop;
        }
        if start_offset < text.len() {
            out.push(Piece::Text(&text[start_offset..]));
        }
        Ok(())
    }
}

/// The text level of a tokenizer loaded from a `tokenizer.json` that needs more than plain
/// specials: a normalizer and/or added tokens with flags (non-special ones, normalized ones...).
///
/// tokenizers' order (`AddedVocabulary::extract_and_normalize`): the tokens that are not
/// `normalized` are found in the raw text; each stretch between them is normalized, and the
/// `normalized` tokens (themselves normalized) are found in it; what is left goes to the
/// pre-tokenizer stretch by stretch.
#[derive(Clone, Debug)]
pub struct TextLevel {
    pub(crate) steps: Vec<NormStep>,
    /// Every added token, specials included, in the file's order.
    pub(crate) tokens: Vec<AddedToken>,
    /// Per token: its index among the tokenizer's specials (for the policy), if special.
    pub(crate) special_index: Vec<Option<usize>>,
    raw: Option<AddedMatcher>,
    normalized: Option<AddedMatcher>,
}

impl TextLevel {
    /// Builds the matchers; `specials` are the tokenizer's specials, which must be exactly the
    /// `special` tokens of `tokens`.
    pub fn new(steps: Vec<NormStep>, tokens: Vec<AddedToken>, specials: &[(String, u32)]) -> Result<Self> {
        let mut special_index = Vec::with_capacity(tokens.len());
        let mut seen: HashSet<&str> = HashSet::with_capacity(tokens.len());
        for t in &tokens {
            let bad = |reason: String| Err(BpeError::InvalidSpecial { token: t.content.clone(), reason });
            if t.content.is_empty() {
                return bad("added tokens must be non-empty".into());
            }
            if t.content.len() > MAX_SPECIAL_BYTES {
                return bad(format!(
                    "it is {} bytes long; added tokens are at most {MAX_SPECIAL_BYTES} bytes (UTF-8)",
                    t.content.len()
                ));
            }
            if !seen.insert(&t.content) {
                return bad("listed more than once".into());
            }
            let i = specials.iter().position(|(c, id)| *c == t.content && *id == t.id);
            if t.special != i.is_some() {
                return bad("the added tokens' special ones must be the tokenizer's special tokens".into());
            }
            special_index.push(i);
        }
        if special_index.iter().flatten().count() != specials.len() {
            let missing = specials.iter().find(|(c, _)| !seen.contains(c.as_str())).map(|s| s.0.clone());
            return Err(BpeError::InvalidSpecial {
                token: missing.unwrap_or_default(),
                reason: "a special token is missing from the added tokens".into(),
            });
        }
        let (mut raw, mut raw_ix, mut norm, mut norm_ix) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (k, t) in tokens.iter().enumerate() {
            if t.normalized {
                norm.push(normalize(&steps, &t.content).into_owned());
                norm_ix.push(k);
            } else {
                raw.push(t.content.clone());
                raw_ix.push(k);
            }
        }
        let raw = AddedMatcher::new(&raw, raw_ix)?;
        let normalized = AddedMatcher::new(&norm, norm_ix)?;
        Ok(TextLevel { steps, tokens, special_index, raw, normalized })
    }

    pub fn steps(&self) -> &[NormStep] {
        &self.steps
    }

    pub fn tokens(&self) -> &[AddedToken] {
        &self.tokens
    }

    /// Cuts `text` into added tokens and normalized stretches of text; `encode` gets each
    /// stretch (with its byte offset in `text`, exact unless a normalizer changed the text
    /// before it), `keep` decides on each special found (see [`AddedMatcher::split`]).
    pub fn for_each_piece(
        &self,
        text: &str,
        keep: &mut dyn FnMut(usize, usize) -> Result<bool>,
        emit: &mut dyn FnMut(Piece<'_>) -> Result<()>,
    ) -> Result<()> {
        let mut first = Vec::new();
        match &self.raw {
            Some(m) => m.split(text, &self.tokens, keep, &mut first)?,
            None => first.push(Piece::Text(text)),
        }
        for piece in first {
            let Piece::Text(stretch) = piece else {
                emit(piece)?;
                continue;
            };
            // Offsets of `stretch` in `text` (the pieces are slices of it).
            let base = stretch.as_ptr() as usize - text.as_ptr() as usize;
            let normalized = normalize(&self.steps, stretch);
            match &self.normalized {
                Some(m) => {
                    let mut second = Vec::new();
                    let exact = matches!(normalized, std::borrow::Cow::Borrowed(_));
                    let mut shifted = |k: usize, at: usize| keep(k, base + if exact { at } else { 0 });
                    m.split(&normalized, &self.tokens, &mut shifted, &mut second)?;
                    for &p in &second {
                        emit(p)?;
                    }
                }
                None => emit(Piece::Text(&normalized))?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn splits_around_specials_leftmost_longest() {
        let m = SpecialMatcher::new(&["<|a|>".to_string(), "<|a|>x".to_string()]).unwrap();
        let mut parts = Vec::new();
        m.for_each_ordinary("1<|a|>x2<|a|>3", &mut |s| {
            parts.push(s.to_string());
            Ok(())
        })
        .unwrap();
        assert_eq!(parts, ["1", "2", "3"]);
        let found: Vec<_> = m.find_iter("1<|a|>x2<|a|>3").map(|(_, _, i)| i).collect();
        assert_eq!(found, [1, 0]);
    }

    #[test]
    fn rejects_empty_duplicate_and_too_long() {
        assert!(SpecialMatcher::new(&[String::new()]).is_err());
        assert!(SpecialMatcher::new(&["x".into(), "x".into()]).is_err());
        let longest = "é".repeat(MAX_SPECIAL_BYTES / 2);
        assert!(SpecialMatcher::new(std::slice::from_ref(&longest)).is_ok());
        let err = SpecialMatcher::new(&[format!("{longest}x")]).unwrap_err().to_string();
        assert!(err.contains(&format!("{} bytes long", MAX_SPECIAL_BYTES + 1)), "{err}");
        assert!(err.len() < 1000, "the message quotes the token's start only: {err}");
    }

    fn added(content: &str, id: u32) -> AddedToken {
        AddedToken { special: false, normalized: false, ..AddedToken::special(content, id) }
    }

    /// tokenizers' `find_matches` on hand-checked cases: leftmost-longest, single_word between
    /// non-word chars only, lstrip/rstrip taking the whitespace beside the token.
    #[test]
    fn added_matcher_follows_find_matches() {
        let tokens = vec![
            added("ab", 1),
            added("abc", 2),
            AddedToken { single_word: true, ..added("w", 3) },
            AddedToken { lstrip: true, rstrip: true, ..added("<m>", 4) },
        ];
        let patterns: Vec<String> = tokens.iter().map(|t| t.content.clone()).collect();
        let m = AddedMatcher::new(&patterns, (0..tokens.len()).collect()).unwrap().unwrap();
        let split = |text: &'static str| {
            let mut out = Vec::new();
            m.split(text, &tokens, &mut |_, _| Ok(true), &mut out).unwrap();
            out
        };
        use Piece::{Text, Token};
        assert_eq!(split("xabcab"), [Text("x"), Token(2), Token(1)]);
        assert_eq!(split("w xw w_ é w."), [Token(3), Text(" xw w_ é "), Token(3), Text(".")]);
        assert_eq!(split("a  <m>\t b"), [Text("a"), Token(4), Text("b")]);
        assert_eq!(split("<m> <m>"), [Token(4), Token(4)]);
        assert_eq!(split(""), []);
        let mut out = Vec::new();
        let skip_ab = &mut |k: usize, _| Ok(k != 0);
        m.split("ab abc", &tokens, skip_ab, &mut out).unwrap();
        assert_eq!(out, [Text("ab "), Token(2)]);
        assert!(AddedMatcher::new(&["x".into(), "x".into()], vec![0, 1]).is_err());
    }

    /// Raw tokens are found first; the stretches between are normalized, then searched for the
    /// normalized tokens (by their normalized text).
    #[test]
    fn text_level_matches_raw_then_normalized() {
        let specials = vec![("<S>".to_string(), 9)];
        let tokens = vec![AddedToken::special("<S>", 9), AddedToken { normalized: true, ..added("AB", 5) }];
        let level = TextLevel::new(vec![NormStep::Lowercase], tokens, &specials).unwrap();
        let mut pieces: Vec<String> = Vec::new();
        level
            .for_each_piece("xAb<S>ab<s>", &mut |_, _| Ok(true), &mut |p| {
                pieces.push(match p {
                    Piece::Text(t) => t.to_string(),
                    Piece::Token(id) => format!("#{id}"),
                });
                Ok(())
            })
            .unwrap();
        assert_eq!(pieces, ["x", "#5", "#9", "#5", "<s>"]);
        let bad = TextLevel::new(vec![], vec![added("<S>", 9)], &specials).unwrap_err();
        assert!(bad.to_string().contains("special"), "{bad}");
    }

    #[test]
    fn long_repetitive_specials_build_as_an_nfa_and_match() {
        // Many maximal tokens of one repeated char: the worst case for a DFA build.
        let tokens: Vec<String> = (0..100).map(|i| "x".repeat(MAX_SPECIAL_BYTES - i)).collect();
        let m = SpecialMatcher::new(&tokens).unwrap();
        let text = format!("a{}b", "x".repeat(MAX_SPECIAL_BYTES + 3));
        let found: Vec<_> = m.find_iter(&text).collect();
        assert_eq!(found, [(1, 1 + MAX_SPECIAL_BYTES, 0)]);
    }
}
