//! Special tokens (`<|endoftext|>`, ...): finding them in text so they are never split or merged.
//!
//! Matching is leftmost-longest over all specials (aho-corasick), so `<|a|>` and `<|a|>x` both work
//! as specials and the longer one wins where both match, as in HF tokenizers' added tokens.

use aho_corasick::{AhoCorasick, MatchKind};

use crate::error::{BpeError, Result};

#[derive(Clone, Debug)]
pub struct SpecialMatcher {
    tokens: Vec<String>,
    ac: Option<AhoCorasick>,
}

impl SpecialMatcher {
    pub fn new(tokens: &[String]) -> Result<Self> {
        for (i, t) in tokens.iter().enumerate() {
            if t.is_empty() {
                return Err(BpeError::InvalidSpecial {
                    token: t.clone(),
                    reason: "special tokens must be non-empty".into(),
                });
            }
            if tokens[..i].contains(t) {
                return Err(BpeError::InvalidSpecial { token: t.clone(), reason: "listed more than once".into() });
            }
        }
        let ac = if tokens.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostLongest)
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
    fn rejects_empty_and_duplicate() {
        assert!(SpecialMatcher::new(&[String::new()]).is_err());
        assert!(SpecialMatcher::new(&["x".into(), "x".into()]).is_err());
    }
}
