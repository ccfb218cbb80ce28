//! Special tokens (`<|endoftext|>`, ...): finding them in text so they are never split or merged.
//!
//! Matching is leftmost-longest over all specials (aho-corasick), so `<|a|>` and `<|a|>x` both work
//! as specials and the longer one wins where both match, as in HF tokenizers' added tokens.

use std::collections::HashSet;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};

use crate::error::{BpeError, Result};

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
