//! The tokenizer: pre-tokenizer + BPE + special tokens, with training, encoding and decoding.
//!
//! Ids of a trained tokenizer: 0..=255 are the single bytes (id == byte value), 256 + i is merge i,
//! and the special tokens follow the merges in the order they were given (as GPT-2 puts
//! `<|endoftext|>` last). Loaded vocabularies keep their own ids.
//!
//! Special-token semantics follow tiktoken: text that spells a *disallowed* special raises; an
//! *allowed* special becomes its id; any other special text is encoded as plain text.
//!
//! A tokenizer loaded from a `tokenizer.json` may also have a text level
//! ([`crate::special::TextLevel`]): a normalizer and non-special added tokens (found in any text,
//! always their id), matched and normalized as Hugging Face tokenizers does before pre-tokenizing.

use rustc_hash::FxHashMap;

use crate::count::WordCounts;
use crate::encode::MergeOptions;
use crate::encode::{Bpe, PieceCache};
use crate::error::{BpeError, Result};
use crate::formats::{unicode_to_bytes, HfBpe, HfTemplate, PrefixSpace};
use crate::normalize::NormStep;
use crate::pretokenize::PreTokenizer;
use crate::special::{canonical_added, check_specials, AddedToken, Piece, SpecialMatcher, TextLevel};
use crate::train::train_merges;

/// Which specials an `encode` call treats as special (`allowed`) or rejects (`disallowed`); both
/// are indexed like `Tokenizer::specials()`.
#[derive(Clone, Debug, Default)]
pub struct SpecialPolicy {
    pub allowed: Vec<bool>,
    pub disallowed: Vec<bool>,
    /// Put the template's special tokens around the text (a `tokenizer.json`'s
    /// `TemplateProcessing`, as `tokenizers`' `add_special_tokens=True`); no-op without one.
    pub add_special_tokens: bool,
}

#[derive(Clone, Debug)]
pub struct Tokenizer {
    pretok: PreTokenizer,
    bpe: Bpe,
    specials: Vec<(String, u32)>,
    matcher: SpecialMatcher,
    special_by_id: FxHashMap<u32, usize>,
    /// What a `tokenizer.json` says beyond the vocabulary (defaults for other tokenizers).
    hf: HfExtras,
    /// No prefix space and all 256 single bytes: `encode_ordinary` takes the plain fast path.
    plain: bool,
    /// A normalizer and/or added tokens beyond plain specials (`None`: the plain fast path).
    text: Option<Box<TextLevel>>,
    /// Non-special added token id -> index into `text.tokens`.
    added_by_id: FxHashMap<u32, usize>,
}

/// The parts of a `tokenizer.json` that [`Tokenizer::to_hf`] writes back and that are not the
/// pre-tokenizer, the BPE model or the specials.
#[derive(Clone, Debug, Default)]
struct HfExtras {
    prefix_space: PrefixSpace,
    unk_token: Option<String>,
    fuse_unk: bool,
    template: Option<HfTemplate>,
    /// The template's ids before and after the text.
    prefix_ids: Vec<u32>,
    suffix_ids: Vec<u32>,
}

impl Tokenizer {
    /// Assembles a tokenizer, checking that special ids and texts are unique and do not collide
    /// with the BPE vocabulary.
    pub fn new(pretok: PreTokenizer, bpe: Bpe, specials: Vec<(String, u32)>) -> Result<Self> {
        let names: Vec<String> = specials.iter().map(|(s, _)| s.clone()).collect();
        let matcher = SpecialMatcher::new(&names)?;
        let mut special_by_id = FxHashMap::default();
        for (i, (text, id)) in specials.iter().enumerate() {
            if bpe.token_bytes(*id).is_some() {
                return Err(BpeError::InvalidSpecial {
                    token: text.clone(),
                    reason: format!("its id {id} is already a regular token"),
                });
            }
            if special_by_id.insert(*id, i).is_some() {
                return Err(BpeError::InvalidSpecial {
                    token: text.clone(),
                    reason: format!("its id {id} is used by another special token"),
                });
            }
        }
        let plain = bpe.has_all_bytes();
        Ok(Tokenizer {
            pretok,
            bpe,
            specials,
            matcher,
            special_by_id,
            hf: HfExtras::default(),
            plain,
            text: None,
            added_by_id: FxHashMap::default(),
        })
    }

    /// Trains merges on counted pre-tokens; `vocab_size` counts the 256 bytes, the merges and the
    /// specials. Training may stop early (min_frequency, or no pairs left): the vocabulary is
    /// then smaller than asked.
    pub fn train(
        counts: WordCounts,
        vocab_size: usize,
        pretok: PreTokenizer,
        specials: &[String],
        min_frequency: u64,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Self> {
        let minimum = 256 + specials.len();
        if vocab_size < minimum {
            return Err(BpeError::VocabTooSmall { vocab_size, minimum, n_special: specials.len() });
        }
        if min_frequency == 0 {
            return Err(BpeError::InvalidArgument {
                name: "min_frequency",
                value: "0".into(),
                reason: "must be at least 1".into(),
            });
        }
        if counts.is_empty() {
            return Err(BpeError::EmptyCorpus);
        }
        check_specials(specials)?; // reject bad specials before the long part
        let merges = train_merges(counts, vocab_size - minimum, min_frequency, progress);
        let mut vocab: Vec<Option<Vec<u8>>> = (0..=255u8).map(|b| Some(vec![b])).collect();
        for &(l, r) in &merges {
            let mut bytes = vocab[l as usize].clone().unwrap_or_default();
            bytes.extend_from_slice(vocab[r as usize].as_deref().unwrap_or_default());
            vocab.push(Some(bytes));
        }
        let bpe = Bpe::from_merges(vocab, &merges)?;
        let first = bpe.len() as u32;
        let specials = specials.iter().enumerate().map(|(i, s)| (s.clone(), first + i as u32)).collect();
        Tokenizer::new(pretok, bpe, specials)
    }

    /// A tokenizer from a parsed `tokenizer.json`.
    pub fn from_hf(hf: HfBpe) -> Result<Self> {
        let pretok = PreTokenizer::new(&hf.pattern)?;
        let unk = match &hf.unk_token {
            None => None,
            Some(name) => hf.specials.iter().find(|s| s.0 == *name).map(|s| s.1).or_else(|| {
                let bytes = unicode_to_bytes(name)?;
                hf.vocab.iter().position(|t| t.as_deref() == Some(&bytes[..])).map(|id| id as u32)
            }),
        };
        let opts = MergeOptions { ignore_merges: hf.ignore_merges, unk, fuse_unk: hf.fuse_unk };
        let bpe = Bpe::from_merges_with(hf.vocab, &hf.merges, &opts)?;
        if !bpe.has_all_bytes() && hf.unk_token.is_some() && unk.is_none() {
            return Err(BpeError::InvalidArgument {
                name: "unk_token",
                value: format!("{:?}", hf.unk_token.unwrap_or_default()),
                reason: "is not a token, and the vocabulary lacks some single bytes".into(),
            });
        }
        let mut tok = Tokenizer::new(pretok, bpe, hf.specials)?;
        if let Some(t) = &hf.template {
            for s in t.prefix.iter().chain(&t.suffix) {
                if let Some(&id) = s.ids.iter().find(|&&id| tok.token_bytes(id).is_none()) {
                    return Err(BpeError::InvalidArgument {
                        name: "post_processor",
                        value: format!("template special token {:?} (id {id})", s.name),
                        reason: "the id is not a token of the vocabulary".into(),
                    });
                }
            }
        }
        tok.hf = HfExtras {
            prefix_space: hf.prefix_space,
            unk_token: hf.unk_token,
            fuse_unk: hf.fuse_unk,
            prefix_ids: hf.template.as_ref().map(HfTemplate::prefix_ids).unwrap_or_default(),
            suffix_ids: hf.template.as_ref().map(HfTemplate::suffix_ids).unwrap_or_default(),
            template: hf.template,
        };
        tok.plain = tok.bpe.has_all_bytes() && tok.hf.prefix_space == PrefixSpace::Off;
        tok.with_text_level(hf.normalizer, hf.added_tokens)
    }

    /// Adds a normalizer and added tokens with flags (`added`: every added token, specials
    /// included, or empty for plain specials). A non-special added token's id must be new, or
    /// the id of a vocabulary token with the same bytes.
    pub fn with_text_level(mut self, steps: Vec<NormStep>, added: Vec<AddedToken>) -> Result<Self> {
        let added = canonical_added(added);
        if steps.is_empty() && added.is_empty() {
            return Ok(self);
        }
        let added = if added.is_empty() {
            self.specials.iter().map(|(c, id)| AddedToken::special(c, *id)).collect()
        } else {
            added
        };
        let text = TextLevel::new(steps, added, &self.specials)?;
        let mut added_by_id = FxHashMap::default();
        for (k, t) in text.tokens().iter().enumerate().filter(|(_, t)| !t.special) {
            let bad = |reason: String| Err(BpeError::InvalidSpecial { token: t.content.clone(), reason });
            if let Some(b) = self.bpe.token_bytes(t.id) {
                if b != t.content.as_bytes() {
                    return bad(format!("its id {} is a vocabulary token with other bytes", t.id));
                }
            }
            if self.special_by_id.contains_key(&t.id) || added_by_id.insert(t.id, k).is_some() {
                return bad(format!("its id {} is used by another added token", t.id));
            }
        }
        self.text = Some(Box::new(text));
        self.added_by_id = added_by_id;
        Ok(self)
    }

    /// The parts of a `tokenizer.json`.
    pub fn to_hf(&self) -> HfBpe {
        let mut vocab: Vec<Option<Vec<u8>>> = vec![None; self.bpe.len()];
        for (id, bytes) in self.bpe.vocab() {
            vocab[id as usize] = Some(bytes.to_vec());
        }
        HfBpe {
            pattern: self.pretok.hf_pattern().to_string(),
            vocab,
            merges: self.bpe.merges(),
            specials: self.specials.clone(),
            ignore_merges: self.bpe.ignore_merges(),
            prefix_space: self.hf.prefix_space,
            unk_token: self.hf.unk_token.clone(),
            fuse_unk: self.hf.fuse_unk,
            template: self.hf.template.clone(),
            normalizer: self.text.as_ref().map(|t| t.steps().to_vec()).unwrap_or_default(),
            added_tokens: canonical_added(self.text.as_ref().map(|t| t.tokens().to_vec()).unwrap_or_default()),
        }
    }

    pub fn pretokenizer(&self) -> &PreTokenizer {
        &self.pretok
    }

    pub fn bpe(&self) -> &Bpe {
        &self.bpe
    }

    pub fn specials(&self) -> &[(String, u32)] {
        &self.specials
    }

    /// The non-special added tokens as (content, id), in the file's order.
    pub fn added_tokens(&self) -> Vec<(String, u32)> {
        let tokens = self.text.as_ref().map(|t| t.tokens()).unwrap_or_default();
        tokens.iter().filter(|t| !t.special).map(|t| (t.content.clone(), t.id)).collect()
    }

    /// 1 + the highest id, specials included.
    pub fn vocab_size(&self) -> usize {
        let top = self.specials.iter().map(|&(_, id)| id as usize + 1).max().unwrap_or(0);
        let top = self.added_by_id.keys().map(|&id| id as usize + 1).max().unwrap_or(0).max(top);
        top.max(self.bpe.len())
    }

    pub fn merges(&self) -> Vec<(u32, u32)> {
        self.bpe.merges()
    }

    /// The bytes of one id (a special's text for a special id).
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        match self.special_by_id.get(&id) {
            Some(&i) => Some(self.specials[i].0.as_bytes()),
            None => match (self.added_by_id.get(&id), &self.text) {
                (Some(&k), Some(text)) => Some(text.tokens()[k].content.as_bytes()),
                _ => self.bpe.token_bytes(id),
            },
        }
    }

    /// Encodes text with every special spelled in it treated as plain text.
    pub fn encode_ordinary(&self, text: &str, cache: &mut PieceCache, out: &mut Vec<u32>) -> Result<()> {
        if !self.plain {
            return self.encode_ordinary_hf(text, cache, out);
        }
        let bpe = &self.bpe;
        self.pretok.for_each_piece_fast(text, |piece| cache.encode(bpe, piece.as_bytes(), out))
    }

    /// [`Tokenizer::encode_ordinary`] for `tokenizer.json` features off the fast path: a prefix
    /// space (added where Hugging Face's ByteLevel adds it: in front of the text, or of each
    /// piece of a Split, that does not start with a space) and vocabularies without all single
    /// bytes ([`Bpe::encode_piece`] instead of the cache).
    #[inline(never)]
    fn encode_ordinary_hf(&self, text: &str, cache: &mut PieceCache, out: &mut Vec<u32>) -> Result<()> {
        if text.is_empty() {
            return Ok(()); // HF has no piece to put a space in front of
        }
        match self.hf.prefix_space {
            PrefixSpace::Segment if !text.starts_with(' ') => {
                let spaced = format!(" {text}");
                self.pretok.for_each_piece_fast(&spaced, |p| self.encode_piece(p.as_bytes(), cache, out))
            }
            PrefixSpace::Piece => {
                let mut spaced = Vec::new();
                self.pretok.for_each_piece_fast(text, |p| {
                    if p.starts_with(' ') {
                        self.encode_piece(p.as_bytes(), cache, out)
                    } else {
                        spaced.clear();
                        spaced.push(b' ');
                        spaced.extend_from_slice(p.as_bytes());
                        self.encode_piece(&spaced, cache, out)
                    }
                })
            }
            _ => self.pretok.for_each_piece_fast(text, |p| self.encode_piece(p.as_bytes(), cache, out)),
        }
    }

    /// One piece, through the cache when the model has all single bytes.
    fn encode_piece(&self, piece: &[u8], cache: &mut PieceCache, out: &mut Vec<u32>) {
        if self.bpe.has_all_bytes() {
            cache.encode(&self.bpe, piece, out)
        } else {
            self.bpe.encode_piece(piece, out)
        }
    }

    /// Encodes text under a special-token policy (tiktoken's `encode`); with
    /// `policy.add_special_tokens`, between the template's special tokens.
    pub fn encode(&self, text: &str, policy: &SpecialPolicy, cache: &mut PieceCache, out: &mut Vec<u32>) -> Result<()> {
        if policy.add_special_tokens {
            out.extend_from_slice(&self.hf.prefix_ids);
            self.encode_text(text, policy, cache, out)?;
            out.extend_from_slice(&self.hf.suffix_ids);
            return Ok(());
        }
        self.encode_text(text, policy, cache, out)
    }

    /// [`Tokenizer::encode`] without the template.
    fn encode_text(
        &self,
        text: &str,
        policy: &SpecialPolicy,
        cache: &mut PieceCache,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        if let Some(level) = &self.text {
            return self.encode_text_level(level, text, policy, cache, out);
        }
        if self.matcher.is_empty() {
            return self.encode_ordinary(text, cache, out);
        }
        let flag = |v: &Vec<bool>, i: usize| v.get(i).copied().unwrap_or(false);
        let mut last = 0;
        for (start, end, i) in self.matcher.find_iter(text) {
            if flag(&policy.disallowed, i) {
                return Err(BpeError::DisallowedSpecial { token: self.specials[i].0.clone(), offset: start });
            }
            if flag(&policy.allowed, i) {
                self.encode_ordinary(&text[last..start], cache, out)?;
                out.push(self.specials[i].1);
                last = end;
            }
        }
        self.encode_ordinary(&text[last..], cache, out)
    }

    /// `encode` for a tokenizer with a text level: added tokens and specials found as tokenizers
    /// finds them, the stretches between them normalized and encoded one by one.
    fn encode_text_level(
        &self,
        level: &TextLevel,
        text: &str,
        policy: &SpecialPolicy,
        cache: &mut PieceCache,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        let flag = |v: &Vec<bool>, i: usize| v.get(i).copied().unwrap_or(false);
        let mut keep = |k: usize, offset: usize| -> Result<bool> {
            let Some(i) = level.special_index[k] else { return Ok(true) };
            if flag(&policy.disallowed, i) {
                return Err(BpeError::DisallowedSpecial { token: self.specials[i].0.clone(), offset });
            }
            Ok(flag(&policy.allowed, i))
        };
        level.for_each_piece(text, &mut keep, &mut |piece| match piece {
            Piece::Token(id) => {
                out.push(id);
                Ok(())
            }
            Piece::Text(s) => self.encode_ordinary(s, cache, out),
        })
    }

    /// Encodes arbitrary bytes: valid UTF-8 stretches as text (under `policy`, exactly as
    /// `encode` of that text); each maximal run of bytes that are not valid UTF-8 (adjacent invalid
    /// sequences joined) is BPE'd as one piece of its own, cut at `MAX_PIECE_BYTES` like any other
    /// piece. So `decode_bytes(encode_bytes(b)) == b` for any `b`, and input made only of invalid
    /// bytes encodes as tiktoken's `_encode_bytes` does. (tiktoken instead BPEs everything from the
    /// last valid piece on as one piece, without pre-tokenizing: a Latin-1 document would lose its
    /// pre-tokenization after its first non-ASCII byte.)
    pub fn encode_bytes(
        &self,
        bytes: &[u8],
        policy: &SpecialPolicy,
        cache: &mut PieceCache,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        if policy.add_special_tokens {
            out.extend_from_slice(&self.hf.prefix_ids);
        }
        let mut pos = 0;
        // Start of the pending run of invalid bytes (it ends at `pos`).
        let mut run: Option<usize> = None;
        for chunk in bytes.utf8_chunks() {
            let (valid, invalid) = (chunk.valid(), chunk.invalid());
            if !valid.is_empty() {
                if let Some(start) = run.take() {
                    self.encode_raw_piece(&bytes[start..pos], cache, out);
                }
                self.encode_text(valid, policy, cache, out)?;
            }
            pos += valid.len();
            if !invalid.is_empty() {
                run.get_or_insert(pos);
                pos += invalid.len();
            }
        }
        if let Some(start) = run {
            self.encode_raw_piece(&bytes[start..pos], cache, out);
        }
        if policy.add_special_tokens {
            out.extend_from_slice(&self.hf.suffix_ids);
        }
        Ok(())
    }

    /// BPE of bytes taken as one piece (no pre-tokenization), in parts of at most
    /// `MAX_PIECE_BYTES` as the pre-tokenizer cuts its pieces.
    fn encode_raw_piece(&self, piece: &[u8], cache: &mut PieceCache, out: &mut Vec<u32>) {
        for part in piece.chunks(crate::pretokenize::MAX_PIECE_BYTES) {
            self.encode_piece(part, cache, out);
        }
    }

    /// The id of the token whose bytes are exactly `bytes`: a regular token, else a special token
    /// spelled so (tiktoken's `encode_single_token` order).
    pub fn token_id(&self, bytes: &[u8]) -> Option<u32> {
        self.bpe
            .token_id(bytes)
            .or_else(|| self.specials.iter().find(|(text, _)| text.as_bytes() == bytes).map(|&(_, id)| id))
    }

    /// Whether `id` is the id of a special token.
    pub fn is_special_id(&self, id: u32) -> bool {
        self.special_by_id.contains_key(&id)
    }

    /// Concatenated bytes of `ids`; an unknown id is an error naming it.
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            match self.token_bytes(id) {
                Some(b) => out.extend_from_slice(b),
                None => return Err(BpeError::IdOutOfRange { id: id as i64, vocab_size: self.vocab_size() }),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::count::count_texts;

    fn trained(texts: &[&str], vocab: usize, specials: &[&str]) -> Tokenizer {
        let pretok = PreTokenizer::new("gpt4").unwrap();
        let specials: Vec<String> = specials.iter().map(|s| s.to_string()).collect();
        let matcher = SpecialMatcher::new(&specials).unwrap();
        let counts = count_texts(&pretok, &matcher, texts).unwrap();
        Tokenizer::train(counts, vocab, pretok, &specials, 1, &mut |_| {}).unwrap()
    }

    #[test]
    fn round_trips_and_handles_specials() {
        let text = "hello world, hello there<|endoftext|>hello again 123456";
        let tok = trained(&[text, "hello hello hello"], 300, &["<|endoftext|>"]);
        let eot = tok.specials()[0].1;
        assert_eq!(eot as usize, tok.vocab_size() - 1);
        let mut cache = PieceCache::new(64);
        let all = SpecialPolicy { allowed: vec![true], disallowed: vec![false], ..Default::default() };
        let mut ids = Vec::new();
        tok.encode(text, &all, &mut cache, &mut ids).unwrap();
        assert!(ids.contains(&eot));
        assert_eq!(tok.decode_bytes(&ids).unwrap(), text.as_bytes());

        let strict = SpecialPolicy { allowed: vec![false], disallowed: vec![true], ..Default::default() };
        let err = tok.encode(text, &strict, &mut cache, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("<|endoftext|>"), "{err}");

        let plain = SpecialPolicy::default();
        let mut ids = Vec::new();
        tok.encode(text, &plain, &mut cache, &mut ids).unwrap();
        assert!(!ids.contains(&eot));
        assert_eq!(tok.decode_bytes(&ids).unwrap(), text.as_bytes());
    }

    #[test]
    fn bytes_input_round_trips_invalid_utf8() {
        let tok = trained(&["abc abc abd"], 260, &[]);
        let raw = b"ab\xffc \xe2\x82 abc";
        let mut ids = Vec::new();
        tok.encode_bytes(raw, &SpecialPolicy::default(), &mut PieceCache::new(8), &mut ids).unwrap();
        assert_eq!(tok.decode_bytes(&ids).unwrap(), raw);
    }

    #[test]
    fn a_run_of_invalid_bytes_is_one_piece() {
        // "¥µ" is c2 a5 c2 b5: the first merge is (0xa5, 0xc2), the smallest of the tied pairs.
        let tok = trained(&["\u{a5}\u{b5}\u{a5}\u{b5}"], 257, &[]);
        assert_eq!(tok.merges(), vec![(0xa5, 0xc2)]);
        let mut cache = PieceCache::new(8);
        let encode = |b: &[u8], cache: &mut PieceCache| {
            let mut ids = Vec::new();
            tok.encode_bytes(b, &SpecialPolicy::default(), cache, &mut ids).unwrap();
            ids
        };
        // a5, c2 and ff are three invalid sequences in a row: one piece, so BPE merges across them.
        let whole = vec![256, 0xff];
        assert_eq!(encode(b"\xa5\xc2\xff", &mut cache), whole);
        // Valid stretches encode as text.
        let mut text = Vec::new();
        tok.encode(" abc", &SpecialPolicy::default(), &mut cache, &mut text).unwrap();
        let mut expect = whole.clone();
        expect.extend(&text);
        assert_eq!(encode(b"\xa5\xc2\xff abc", &mut cache), expect);
        let raw = b"\xff\xfe ab\xa5\xb5c\xe2\x82";
        assert_eq!(tok.decode_bytes(&encode(raw, &mut cache)).unwrap(), raw);
    }

    #[test]
    fn token_id_finds_regular_and_special_tokens() {
        let tok = trained(&["abab abab"], 260, &["<|eot|>"]);
        assert_eq!(tok.token_id(b"a"), Some(97));
        assert_eq!(tok.token_id(b"<|eot|>"), Some(tok.specials()[0].1));
        assert!(tok.is_special_id(tok.specials()[0].1) && !tok.is_special_id(97));
        assert_eq!(tok.token_id(b"zzzz"), None);
        assert_eq!(tok.token_id(b""), None);
    }

    #[test]
    fn rejects_bad_training_input() {
        let pretok = PreTokenizer::new("gpt2").unwrap();
        let err = Tokenizer::train(WordCounts::default(), 300, pretok.clone(), &[], 1, &mut |_| {});
        assert!(matches!(err, Err(BpeError::EmptyCorpus)));
        let counts = count_texts(&pretok, &SpecialMatcher::new(&[]).unwrap(), &["x y"]).unwrap();
        let err = Tokenizer::train(counts, 256, pretok, &["<s>".to_string()], 1, &mut |_| {});
        assert!(matches!(err, Err(BpeError::VocabTooSmall { minimum: 257, .. })));
    }

    #[test]
    fn decode_rejects_unknown_id() {
        let tok = trained(&["aaaa"], 257, &[]);
        let err = tok.decode_bytes(&[97, 9999]).unwrap_err();
        assert!(err.to_string().contains("9999"));
    }
}
