//! A compact binary snapshot of a [`Tokenizer`], for pickling (`BPETokenizer.__reduce__`).
//!
//! Layout: the 8 bytes [`STATE_MAGIC`], [`STATE_VERSION`] as a little-endian u32, then a
//! [postcard](https://docs.rs/postcard) encoding of [`TokenizerState`]: the tokenizer's
//! [`HfBpe`] (its whole description) and whether its BPE is rank-based (tiktoken semantics,
//! [`Bpe::from_ranks`]) or merge-list based ([`Bpe::from_merges`]). A rank-based state carries no
//! merge list: the ranks are the vocabulary order, and deriving merges would cost more than the
//! rest of the snapshot.
//!
//! Loading a state goes through the same checks as loading a file: its size is bounded
//! ([`MAX_STATE_BYTES`]) before anything is decoded, serde never preallocates more than a small
//! bound for a declared length (elements are read one by one, so memory follows the bytes
//! actually present), id gaps are bounded as in the file loaders, and the vocabulary, merges,
//! pattern and special tokens are validated by the same constructors. A malformed state is a
//! `Format` error, never a panic.

use serde::{Deserialize, Serialize};

use crate::encode::Bpe;
use crate::error::{BpeError, Result};
use crate::formats::HfBpe;
use crate::pretokenize::PreTokenizer;
use crate::tokenizer::Tokenizer;

/// First bytes of every state.
pub const STATE_MAGIC: &[u8; 8] = b"fastbpe\x00";
/// Bumped whenever [`TokenizerState`] or [`HfBpe`] changes shape (postcard is not
/// self-describing, so a state is only read by the version that wrote it).
pub const STATE_VERSION: u32 = 2;
/// Largest state written or read: cl100k's state is 0.85 MB, a 2M-token vocabulary with its
/// merges fits. A token costs at least 3 bytes of state and a few tens of bytes of memory once
/// decoded, so this also bounds what a hostile state can make the loader allocate (well under
/// what a hostile 256 MiB `tokenizer.json` can).
pub const MAX_STATE_BYTES: usize = 32 << 20;
/// Largest id accepted (ids index vectors).
const MAX_STATE_ID: u64 = i32::MAX as u64;

const WHAT: &str = "BPETokenizer state";

/// Everything a [`Tokenizer`] is built from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenizerState {
    /// tiktoken semantics (`Bpe::from_ranks`; `hf.merges` is empty) or a merge list.
    pub rank_based: bool,
    pub hf: HfBpe,
}

fn bad(reason: impl Into<String>) -> BpeError {
    BpeError::format(WHAT, None, reason)
}

impl Tokenizer {
    /// What [`Tokenizer::to_state_bytes`] encodes.
    pub fn to_state(&self) -> TokenizerState {
        let rank_based = self.bpe().is_rank_based();
        let hf = if rank_based {
            let mut vocab: Vec<Option<Vec<u8>>> = vec![None; self.bpe().len()];
            for (id, bytes) in self.bpe().vocab() {
                vocab[id as usize] = Some(bytes.to_vec());
            }
            HfBpe {
                pattern: self.pretokenizer().hf_pattern().to_string(),
                vocab,
                merges: Vec::new(),
                specials: self.specials().to_vec(),
                // Rank-based BPEs come only from the tiktoken and GPT-2 loaders, which set none
                // of the tokenizer.json options (`from_state` refuses a rank-based state with any).
                ..HfBpe::default()
            }
        } else {
            self.to_hf()
        };
        TokenizerState { rank_based, hf }
    }

    /// The versioned binary snapshot (see the module docs).
    pub fn to_state_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.bpe().len() * 8 + 64);
        out.extend_from_slice(STATE_MAGIC);
        out.extend_from_slice(&STATE_VERSION.to_le_bytes());
        let out = postcard::to_extend(&self.to_state(), out).map_err(|e| bad(format!("cannot encode: {e}")))?;
        if out.len() > MAX_STATE_BYTES {
            return Err(bad(format!("{} bytes, more than the {MAX_STATE_BYTES}-byte limit", out.len())));
        }
        Ok(out)
    }

    /// The tokenizer a state describes, validated as a loaded file is.
    pub fn from_state(state: TokenizerState) -> Result<Self> {
        let TokenizerState { rank_based, hf } = state;
        let tokens = hf.vocab.iter().filter(|t| t.is_some()).count() as u64;
        let limit = (2 * tokens + 65_536).min(MAX_STATE_ID);
        if hf.vocab.len() as u64 > limit {
            return Err(bad(format!("{} ids for {tokens} tokens: at most {limit} are accepted", hf.vocab.len())));
        }
        if let Some((text, id)) = hf.specials.iter().find(|(_, id)| *id as u64 >= MAX_STATE_ID) {
            return Err(bad(format!("special token {text:?} has id {id}, above the limit {MAX_STATE_ID}")));
        }
        if !rank_based {
            return Tokenizer::from_hf(hf);
        }
        let mut hf = hf;
        let (pattern, vocab, specials) =
            (std::mem::take(&mut hf.pattern), std::mem::take(&mut hf.vocab), std::mem::take(&mut hf.specials));
        if hf != HfBpe::default() {
            return Err(bad("a rank-based state carries only a pattern, a vocabulary and special tokens (no merges, no tokenizer.json options)"));
        }
        Tokenizer::new(PreTokenizer::new(&pattern)?, Bpe::from_ranks(vocab)?, specials)
    }

    /// Reads [`Tokenizer::to_state_bytes`]'s output; anything else is a `Format` error.
    pub fn from_state_bytes(data: &[u8]) -> Result<Self> {
        if data.len() > MAX_STATE_BYTES {
            return Err(bad(format!("{} bytes, more than the {MAX_STATE_BYTES}-byte limit", data.len())));
        }
        let Some(body) = data.strip_prefix(STATE_MAGIC.as_slice()) else {
            return Err(bad("not a fastllm BPETokenizer state (wrong magic bytes)"));
        };
        let (Some(version), Some(body)) = (body.get(..4), body.get(4..)) else {
            return Err(bad("truncated header"));
        };
        let version = u32::from_le_bytes([version[0], version[1], version[2], version[3]]);
        if version != STATE_VERSION {
            return Err(bad(format!(
                "state version {version}; this fastllm reads version {STATE_VERSION} (pickle and unpickle with \
                 the same fastllm version)"
            )));
        }
        let (state, rest) =
            postcard::take_from_bytes::<TokenizerState>(body).map_err(|e| bad(format!("malformed: {e}")))?;
        if !rest.is_empty() {
            return Err(bad(format!("{} unexpected bytes after the state", rest.len())));
        }
        Tokenizer::from_state(state)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::count::count_texts;
    use crate::encode::PieceCache;
    use crate::special::SpecialMatcher;
    use crate::tokenizer::SpecialPolicy;

    fn trained() -> Tokenizer {
        let pretok = PreTokenizer::new("gpt2").unwrap();
        let specials = vec!["<|endoftext|>".to_string()];
        let counts =
            count_texts(&pretok, &SpecialMatcher::new(&specials).unwrap(), &["hello world, hello there"]).unwrap();
        Tokenizer::train(counts, 270, pretok, &specials, 1, &mut |_| {}).unwrap()
    }

    fn ranked() -> Tokenizer {
        let mut vocab: Vec<Option<Vec<u8>>> = (0..=255u8).map(|b| Some(vec![b])).collect();
        vocab.push(Some(b"ab".to_vec()));
        vocab.push(None);
        vocab.push(Some(b"abc".to_vec()));
        Tokenizer::new(PreTokenizer::new("gpt4").unwrap(), Bpe::from_ranks(vocab).unwrap(), vec![("<s>".into(), 300)])
            .unwrap()
    }

    fn ids(tok: &Tokenizer, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        let all = SpecialPolicy { allowed: vec![true; tok.specials().len()], disallowed: vec![], ..Default::default() };
        tok.encode(text, &all, &mut PieceCache::new(8), &mut out).unwrap();
        out
    }

    #[test]
    fn round_trips() {
        for tok in [trained(), ranked()] {
            let bytes = tok.to_state_bytes().unwrap();
            let back = Tokenizer::from_state_bytes(&bytes).unwrap();
            assert_eq!(back.to_state(), tok.to_state());
            assert_eq!(back.bpe().is_rank_based(), tok.bpe().is_rank_based());
            assert_eq!(back.pretokenizer().pattern(), tok.pretokenizer().pattern());
            for text in ["hello world<|endoftext|>", "abcab<s> xyz", ""] {
                assert_eq!(ids(&back, text), ids(&tok, text));
            }
        }
    }

    #[test]
    fn rejects_malformed_states() {
        let good = ranked().to_state_bytes().unwrap();
        let mut wrong_version = good.clone();
        wrong_version[8] = 9;
        let mut trailing = good.clone();
        trailing.push(0);
        let mut huge_len = good[..12].to_vec();
        huge_len.push(1); // rank_based
        huge_len.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]); // a 4 GiB pattern length
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![0; MAX_STATE_BYTES + 1], "-byte limit"),
            (Vec::new(), "magic"),
            (b"fastbpe".to_vec(), "magic"),
            (good[..10].to_vec(), "truncated"),
            (wrong_version, "version 9"),
            (trailing, "unexpected bytes"),
            (good[..good.len() - 3].to_vec(), "malformed"),
            (huge_len, "malformed"),
        ];
        for (data, needle) in cases {
            let err = Tokenizer::from_state_bytes(&data).expect_err("must fail");
            assert!(err.to_string().contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn validates_like_a_file() {
        let mut state = ranked().to_state();
        state.hf.vocab[97] = None; // a missing byte token
        assert!(Tokenizer::from_state(state).is_err());
        let mut state = ranked().to_state();
        state.hf.merges.push((97, 98));
        assert!(Tokenizer::from_state(state).unwrap_err().to_string().contains("merges"));
        let mut state = ranked().to_state();
        state.hf.vocab.resize(1 << 20, None);
        assert!(Tokenizer::from_state(state).unwrap_err().to_string().contains("ids for"));
        let mut state = trained().to_state();
        state.hf.merges.push((0, 1)); // "\x00\x01" is not a token
        assert!(Tokenizer::from_state(state).is_err());
        let mut state = trained().to_state();
        state.hf.specials.push(("<x>".into(), u32::MAX));
        assert!(Tokenizer::from_state(state).unwrap_err().to_string().contains("limit"));
        let mut state = trained().to_state();
        state.hf.pattern = "(".into();
        assert!(Tokenizer::from_state(state).is_err());
    }

    #[test]
    fn garbage_never_panics() {
        let good = trained().to_state_bytes().unwrap();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..2000 {
            let mut data = good.clone();
            for _ in 0..1 + i % 4 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = 12 + (seed as usize % (data.len() - 12));
                data[at] = (seed >> 32) as u8;
            }
            if i % 7 == 0 {
                data.truncate(12 + (seed as usize >> 8) % (good.len() - 12));
            }
            let _ = Tokenizer::from_state_bytes(&data);
        }
    }
}
