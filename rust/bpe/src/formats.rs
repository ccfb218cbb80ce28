//! Vocabulary files: tiktoken `.tiktoken`, GPT-2 `encoder.json` + `vocab.bpe`, and Hugging Face
//! `tokenizer.json` (byte-level BPE only), read and written.
//!
//! All functions return errors instead of panicking: a missing file is [`BpeError::Io`], anything
//! malformed or unsupported is [`BpeError::Format`] naming the path, the 1-based line where it is
//! known, and the offending field or value.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::Path;

use base64::Engine as _;
use serde_json::Value;

use crate::error::{BpeError, Result};
use crate::normalize::{normalize, read_hf_normalizer, write_hf_normalizer, NormStep};
use crate::special::{canonical_added, AddedToken, MAX_SPECIAL_BYTES};

/// The pre-tokenizer regex of HF's `ByteLevel { use_regex: true }` (GPT-2's original pattern,
/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`).
pub const HF_BYTELEVEL_PATTERN: &str = crate::pretokenize::GPT2_LEGACY_PATTERN;

/// GPT-2's byte -> printable char map (`bytes_to_unicode` in GPT-2's `encoder.py`): printable
/// Latin-1 bytes map to themselves, the other 68 bytes to U+0100.. in byte order.
pub fn bytes_to_unicode() -> [char; 256] {
    let mut map = ['\0'; 256];
    for b in 0..=255u8 {
        if is_printable_byte(b) {
            map[b as usize] = char::from(b);
        }
    }
    for (k, &b) in SHIFTED.iter().enumerate() {
        map[b as usize] = char::from_u32(0x100 + k as u32).unwrap_or('\0');
    }
    map
}

/// Inverse of [`bytes_to_unicode`] on a whole string; `None` if some char is not in the map.
pub fn unicode_to_bytes(s: &str) -> Option<Vec<u8>> {
    s.chars().map(char_to_byte).collect()
}

const fn is_printable_byte(b: u8) -> bool {
    matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// The 68 non-printable bytes in order: `bytes_to_unicode` maps the k-th to U+0100 + k.
const SHIFTED: [u8; 68] = {
    let mut t = [0u8; 68];
    let (mut b, mut k) = (0usize, 0usize);
    while b < 256 {
        if !is_printable_byte(b as u8) {
            t[k] = b as u8;
            k += 1;
        }
        b += 1;
    }
    t
};

fn char_to_byte(c: char) -> Option<u8> {
    let c = c as u32;
    match c {
        0..=0xFF if is_printable_byte(c as u8) => Some(c as u8),
        0x100..=0x143 => Some(SHIFTED[(c - 0x100) as usize]),
        _ => None,
    }
}

/// Byte-level string of token bytes (`bytes_to_unicode` applied byte by byte).
pub fn bytes_to_unicode_string(bytes: &[u8]) -> String {
    let map = bytes_to_unicode();
    bytes.iter().map(|&b| map[b as usize]).collect()
}

/// Largest vocabulary file a loader reads (`tokenizer.json`, `.tiktoken`, `encoder.json`,
/// `vocab.bpe`): 256 MiB, several times the largest published vocabularies (a 256k-token
/// `tokenizer.json` is ~20 MB). A bigger regular file is refused before reading; anything else
/// (a pipe, a device) is read up to the limit and refused there, so no loader reads without end.
pub const MAX_VOCAB_FILE_BYTES: u64 = 256 << 20;

fn too_large(path: &Path, size: Option<u64>) -> BpeError {
    let size = size.map(|n| format!(" ({n} bytes)")).unwrap_or_default();
    BpeError::format(
        path.display().to_string(),
        None,
        format!("the file is larger than the {} MiB limit on vocabulary files{size}", MAX_VOCAB_FILE_BYTES >> 20),
    )
}

/// The whole file, at most [`MAX_VOCAB_FILE_BYTES`] of it. Vocabulary files are text, so a NUL
/// byte (`/dev/zero`, a binary file) is refused as soon as it is read.
fn read_bounded(path: &Path) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| BpeError::io(path, e))?;
    let meta = file.metadata().map_err(|e| BpeError::io(path, e))?;
    if meta.is_dir() {
        return Err(BpeError::format(path.display().to_string(), None, "is a directory, not a vocabulary file"));
    }
    if meta.is_file() && meta.len() > MAX_VOCAB_FILE_BYTES {
        return Err(too_large(path, Some(meta.len())));
    }
    // A regular file's size is known (it may still grow: the limit below holds regardless).
    let expected = if meta.is_file() { meta.len() as usize } else { 0 };
    let mut data = Vec::with_capacity(expected);
    let mut reader = file.take(MAX_VOCAB_FILE_BYTES + 1);
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(BpeError::io(path, e)),
        };
        if let Some(k) = chunk[..n].iter().position(|&b| b == 0) {
            return Err(BpeError::format(
                path.display().to_string(),
                None,
                format!("NUL byte at offset {}: a vocabulary file is text", data.len() + k),
            ));
        }
        data.extend_from_slice(&chunk[..n]);
        if data.len() as u64 > MAX_VOCAB_FILE_BYTES {
            return Err(too_large(path, None));
        }
    }
    Ok(data)
}

/// A vocabulary file as UTF-8 text (bounded by [`MAX_VOCAB_FILE_BYTES`]).
pub fn read_text(path: &Path) -> Result<String> {
    let data = read_bounded(path)?;
    String::from_utf8(data).map_err(|e| {
        let upto = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = upto.iter().filter(|&&b| b == b'\n').count() + 1;
        BpeError::format(path.display().to_string(), Some(line), "the file is not valid UTF-8")
    })
}

/// Parse a `tokenizer.json` file (see [`read_hf_json`]), read with [`read_text`].
pub fn load_hf_json(path: &Path) -> Result<HfBpe> {
    let text = read_text(path)?;
    read_hf_json(&text, &path.display().to_string())
}

/// Largest id accepted for a vocabulary of `n` entries (ids index a Vec, so bound the gaps).
fn max_sane_id(n: usize) -> u64 {
    (2 * n as u64 + 65_536).min(i32::MAX as u64)
}

/// tiktoken `.tiktoken`: one `base64(token bytes) rank` per line (blank lines ignored) -> vocab
/// indexed by rank (`None` for unused ranks). Duplicate ranks or tokens are errors.
pub fn load_tiktoken(path: &Path) -> Result<Vec<Option<Vec<u8>>>> {
    let text = read_text(path)?;
    let p = path.display().to_string();
    let n_lines = text.lines().count();
    let mut vocab: Vec<Option<Vec<u8>>> = Vec::new();
    let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let ln = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(b64), Some(rank), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(BpeError::format(&p, Some(ln), format!("expected \"<base64 token> <rank>\", got {line:?}")));
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| BpeError::format(&p, Some(ln), format!("invalid base64 {b64:?}: {e}")))?;
        if bytes.is_empty() {
            return Err(BpeError::format(&p, Some(ln), "empty token"));
        }
        let rank: u64 = rank.parse().map_err(|_| BpeError::format(&p, Some(ln), format!("invalid rank {rank:?}")))?;
        if rank > max_sane_id(n_lines) {
            return Err(BpeError::format(
                &p,
                Some(ln),
                format!("rank {rank} is too large for a file of {n_lines} lines"),
            ));
        }
        let rank = rank as usize;
        if vocab.len() <= rank {
            vocab.resize(rank + 1, None);
        }
        if vocab[rank].is_some() {
            return Err(BpeError::format(&p, Some(ln), format!("rank {rank} is listed twice")));
        }
        if let Some(prev) = seen.insert(bytes.clone(), ln) {
            return Err(BpeError::format(&p, Some(ln), format!("token {b64:?} is listed twice (also on line {prev})")));
        }
        vocab[rank] = Some(bytes);
    }
    Ok(vocab)
}

/// GPT-2 `encoder.json` + `vocab.bpe` (OpenAI's data-gym format) -> (vocab by id, specials).
///
/// Entries of `encoder.json` that are `<|endoftext|>` / `<|startoftext|>` or that are not
/// byte-level strings are special tokens. The rest must be ids `0..256+M` where ids `0..256` are
/// the single bytes and merge `i` of `vocab.bpe` (after its `#version` line) produces id `256+i`,
/// as tiktoken's `data_gym_to_mergeable_bpe_ranks` asserts; the first disagreement is reported
/// with its line.
pub fn load_gpt2(encoder_json: &Path, vocab_bpe: &Path) -> Result<(Vocab, Specials)> {
    let ep = encoder_json.display().to_string();
    let bp = vocab_bpe.display().to_string();
    let enc_text = read_text(encoder_json)?;
    let bpe_text = read_text(vocab_bpe)?;
    let enc: serde_json::Map<String, Value> = serde_json::from_str(&enc_text)
        .map_err(|e| BpeError::format(&ep, Some(e.line()), format!("invalid JSON object: {e}")))?;
    let mut vocab: Vec<Option<Vec<u8>>> = Vec::new();
    let mut specials: Vec<(String, u32)> = Vec::new();
    let mut owner: HashMap<u64, &str> = HashMap::new();
    for (key, v) in &enc {
        let id = v
            .as_u64()
            .filter(|&id| id <= max_sane_id(enc.len()))
            .ok_or_else(|| BpeError::format(&ep, None, format!("entry {key:?}: id {v} is not a valid token id")))?;
        if let Some(other) = owner.insert(id, key) {
            return Err(BpeError::format(&ep, None, format!("id {id} is used by both {other:?} and {key:?}")));
        }
        let bytes = if key == "<|endoftext|>" || key == "<|startoftext|>" {
            None
        } else {
            unicode_to_bytes(key).filter(|b| !b.is_empty())
        };
        match bytes {
            None => specials.push((key.clone(), id as u32)),
            Some(b) => {
                let id = id as usize;
                if vocab.len() <= id {
                    vocab.resize(id + 1, None);
                }
                vocab[id] = Some(b);
            }
        }
    }
    specials.sort_by_key(|s| s.1);
    // Ids 0..256: the single bytes.
    let mut have_byte = [false; 256];
    for id in 0..256 {
        match vocab.get(id).and_then(|t| t.as_deref()) {
            Some([b]) if !have_byte[*b as usize] => have_byte[*b as usize] = true,
            other => {
                return Err(BpeError::format(
                    &ep,
                    None,
                    format!(
                        "id {id} must be one of the 256 single-byte tokens, found {:?}",
                        other.map(bytes_to_unicode_string)
                    ),
                ))
            }
        }
    }
    // Merges.
    let mut n_merges = 0usize;
    for (i, line) in bpe_text.lines().enumerate() {
        let ln = i + 1;
        if (i == 0 && line.starts_with("#version")) || line.trim().is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(a), Some(b), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(BpeError::format(&bp, Some(ln), format!("expected a merge \"a b\", got {line:?}")));
        };
        let (Some(mut ab), Some(bb)) = (unicode_to_bytes(a), unicode_to_bytes(b)) else {
            return Err(BpeError::format(&bp, Some(ln), format!("merge {line:?} is not made of byte-level strings")));
        };
        ab.extend_from_slice(&bb);
        let id = 256 + n_merges;
        let found = vocab.get(id).and_then(|t| t.as_deref());
        if found != Some(&ab[..]) {
            return Err(BpeError::format(
                &bp,
                Some(ln),
                format!(
                    "merge {n_merges} ({line:?}) produces {:?}, but {} has {:?} as id {id}",
                    bytes_to_unicode_string(&ab),
                    ep,
                    found.map(bytes_to_unicode_string)
                ),
            ));
        }
        n_merges += 1;
    }
    let n_tokens = vocab.iter().filter(|t| t.is_some()).count();
    if n_tokens != 256 + n_merges || vocab.len() != n_tokens {
        let extra = (256 + n_merges..vocab.len()).find(|&id| vocab[id].is_some());
        return Err(BpeError::format(
            &ep,
            None,
            format!(
                "{} has {n_merges} merges, so ids 0..{} should be the tokens, but there are {n_tokens} \
                 non-special tokens{}",
                bp,
                256 + n_merges,
                extra.map(|id| format!(" (e.g. id {id})")).unwrap_or_default()
            ),
        ));
    }
    Ok((vocab, specials))
}

/// A vocabulary indexed by id (`None` = unused id).
pub type Vocab = Vec<Option<Vec<u8>>>;
/// Special tokens as (text, id).
pub type Specials = Vec<(String, u32)>;

/// A byte-level BPE tokenizer as stored in a Hugging Face `tokenizer.json`.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HfBpe {
    /// The pre-tokenizer regex.
    pub pattern: String,
    /// id -> token bytes (`None` = unused id, and at the ids of specials); no trailing `None`.
    pub vocab: Vec<Option<Vec<u8>>>,
    /// Merge list in rank order, as (left id, right id).
    pub merges: Vec<(u32, u32)>,
    /// Special (added) tokens as (content, id), in the file's order.
    pub specials: Vec<(String, u32)>,
    /// `model.ignore_merges`: a pre-token that is a token becomes that token without merging.
    #[serde(default)]
    pub ignore_merges: bool,
    /// The ByteLevel pre-tokenizer's `add_prefix_space`, and where it applies.
    #[serde(default)]
    pub prefix_space: PrefixSpace,
    /// `model.unk_token` (a key of the vocabulary: an added token's content or a byte-level
    /// string): what a byte that is not a token becomes. `None`: such bytes are dropped.
    #[serde(default)]
    pub unk_token: Option<String>,
    /// `model.fuse_unk`: consecutive unknown bytes become one `unk_token`.
    #[serde(default)]
    pub fuse_unk: bool,
    /// A `TemplateProcessing` post-processor's single-sequence template (the special tokens it
    /// puts around the text), applied only on request (`add_special_tokens`).
    #[serde(default)]
    pub template: Option<HfTemplate>,
    /// The normalizer's steps (empty: none).
    #[serde(default)]
    pub normalizer: Vec<NormStep>,
    /// Every added token with its flags, specials included (they must be `specials`), in the
    /// file's order; empty when all are specials with the default flags.
    #[serde(default)]
    pub added_tokens: Vec<AddedToken>,
}

/// Where the ByteLevel pre-tokenizer's `add_prefix_space: true` puts a space (Hugging Face puts
/// it in front of every piece that does not start with one, at the point where ByteLevel runs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PrefixSpace {
    /// `add_prefix_space: false`.
    #[default]
    Off,
    /// `ByteLevel(use_regex=true)` alone: in front of each stretch of text between special
    /// tokens (then the stretch is split).
    Segment,
    /// `Sequence[Split, ByteLevel(use_regex=false)]`: in front of each piece of the split.
    Piece,
}

/// One special-token entry of a `TemplateProcessing` template: `special_tokens[name]`, whose
/// `ids` (with their `tokens`) are inserted in its place.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HfTemplateSpecial {
    pub name: String,
    pub ids: Vec<u32>,
    pub tokens: Vec<String>,
}

/// A `TemplateProcessing` single template `prefix... $A suffix...` (the common case: special
/// tokens around the sequence). Its pair template is written as `prefix $A suffix prefix $B
/// suffix` (Llama-3's) and not otherwise used: pairs are not encoded.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HfTemplate {
    pub prefix: Vec<HfTemplateSpecial>,
    pub suffix: Vec<HfTemplateSpecial>,
}

impl HfTemplate {
    /// Ids before the text.
    pub fn prefix_ids(&self) -> Vec<u32> {
        self.prefix.iter().flat_map(|s| s.ids.iter().copied()).collect()
    }

    /// Ids after the text.
    pub fn suffix_ids(&self) -> Vec<u32> {
        self.suffix.iter().flat_map(|s| s.ids.iter().copied()).collect()
    }
}

fn get<'a>(obj: &'a Value, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn type_of(v: &Value) -> &str {
    v.get("type").and_then(Value::as_str).unwrap_or("?")
}

/// Parse a byte-level BPE `tokenizer.json` (ours or Hugging Face's). Supported: model.type "BPE"
/// with no dropout / subword prefix / word suffix / byte_fallback, with `ignore_merges`,
/// `unk_token` and `fuse_unk` (which matter when the vocabulary lacks single bytes);
/// normalizer null, or NFC, NFD, NFKC, NFKD, Lowercase or a Sequence of them
/// ([`crate::normalize`]); pre_tokenizer `ByteLevel { use_regex: true }` (-> [`HF_BYTELEVEL_PATTERN`])
/// or `Sequence [Split { Regex, behavior: Isolated }, ByteLevel { use_regex: false }]` (-> that
/// regex, read as Oniguruma reads it: see [`pattern_from_onig`]), either with `add_prefix_space`
/// ([`PrefixSpace`]); post_processor null, ByteLevel, or a `TemplateProcessing` of special tokens
/// around `$A` ([`HfTemplate`]), alone or in a Sequence with ByteLevel. Merges as "a b" strings
/// or ["a", "b"]. `added_tokens` with `special` true become the specials; all of them, with their
/// flags, also go to `added_tokens` (unless all are plain specials). Anything else is a Format error naming the
/// field.
pub fn read_hf_json(text: &str, path: &str) -> Result<HfBpe> {
    let err = |reason: String| BpeError::format(path, None, reason);
    let root: Value =
        serde_json::from_str(text).map_err(|e| BpeError::format(path, Some(e.line()), format!("invalid JSON: {e}")))?;
    if !root.is_object() {
        return Err(err("the top level must be a JSON object".into()));
    }

    // --- model ---
    let model = get(&root, "model").ok_or_else(|| err("missing field \"model\"".into()))?;
    match model.get("type").and_then(Value::as_str) {
        Some("BPE") => {}
        None if model.get("merges").is_some() => {}
        other => {
            return Err(err(format!(
                "model.type is {:?}; only byte-level \"BPE\" models are supported",
                other.unwrap_or("(missing)")
            )))
        }
    }
    if let Some(d) = get(model, "dropout") {
        if d.as_f64() != Some(0.0) {
            return Err(err(format!("model.dropout is {d}; BPE dropout is not supported")));
        }
    }
    for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
        if let Some(v) = get(model, key) {
            if v.as_str() != Some("") {
                return Err(err(format!("model.{key} is {v}; it is not supported (must be null)")));
            }
        }
    }
    let (ignore_merges, unk_token, fuse_unk) = read_model_options(model).map_err(err)?;

    // --- normalizer ---
    let normalizer = read_hf_normalizer(get(&root, "normalizer")).map_err(err)?;

    // --- pre_tokenizer ---
    let (pattern, prefix_space) = read_pre_tokenizer(get(&root, "pre_tokenizer")).map_err(err)?;

    // --- post_processor ---
    let template = read_post_processor(get(&root, "post_processor")).map_err(err)?;

    // --- vocab ---
    let vmap = get(model, "vocab")
        .and_then(Value::as_object)
        .ok_or_else(|| err("model.vocab must be an object {token: id}".into()))?;
    let mut by_key: HashMap<&str, u32> = HashMap::with_capacity(vmap.len());
    let mut max_id = 0u64;
    for (k, v) in vmap {
        let id = v
            .as_u64()
            .filter(|&id| id <= max_sane_id(vmap.len()))
            .ok_or_else(|| err(format!("model.vocab[{k:?}]: {v} is not a valid token id")))?;
        max_id = max_id.max(id);
        by_key.insert(k.as_str(), id as u32);
    }

    // --- added tokens (specials and others) ---
    let (specials, added) = read_added_tokens(get(&root, "added_tokens"), &by_key, vmap.len()).map_err(err)?;
    // tokenizers matches `normalized` added tokens by their normalized text; two with the same
    // one would make it pick either at random.
    let mut normalized_texts: HashMap<String, &str> = HashMap::new();
    for t in added.iter().filter(|t| t.normalized) {
        let n = normalize(&normalizer, &t.content).into_owned();
        if let Some(other) = normalized_texts.insert(n.clone(), &t.content) {
            return Err(err(format!(
                "added tokens {other:?} and {:?} are both normalized to {n:?}; tokenizers would pick either",
                t.content
            )));
        }
    }
    // Ids whose model.vocab entry is not a BPE token: the specials', and the other added
    // tokens' unless BPE needs them (a single byte, or a merge's product).
    let mut drop_ids: HashSet<u32> = specials.iter().map(|s| s.1).collect();
    let in_vocab: Vec<&AddedToken> =
        added.iter().filter(|t| !t.special && by_key.contains_key(t.content.as_str())).collect();
    if !in_vocab.is_empty() {
        let products = merge_products(get(model, "merges"));
        for t in in_vocab {
            // A BPE token (a single byte, or made by a merge) must have the added token's bytes.
            let single = t.content.chars().count() == 1 && unicode_to_bytes(&t.content).is_some();
            if !single && !products.contains(t.content.as_str()) {
                drop_ids.insert(t.id);
            } else if unicode_to_bytes(&t.content).as_deref() != Some(t.content.as_bytes()) {
                return Err(err(format!(
                    "added token {:?} is model.vocab's id {}, a token whose bytes are not its text; \
                     this is not supported",
                    t.content, t.id
                )));
            }
        }
    }

    let mut vocab: Vec<Option<Vec<u8>>> = vec![None; max_id as usize + 1];
    for (&k, &id) in &by_key {
        if drop_ids.contains(&id) {
            continue;
        }
        let bytes = unicode_to_bytes(k)
            .filter(|b| !b.is_empty())
            .ok_or_else(|| err(format!("model.vocab[{k:?}] is not a byte-level token (and not an added token)")))?;
        if vocab[id as usize].is_some() {
            return Err(err(format!("model.vocab: id {id} is used by more than one token")));
        }
        vocab[id as usize] = Some(bytes);
    }
    while matches!(vocab.last(), Some(None)) {
        vocab.pop();
    }

    // --- merges ---
    let mlist =
        get(model, "merges").and_then(Value::as_array).ok_or_else(|| err("model.merges must be a list".into()))?;
    let mut merges = Vec::with_capacity(mlist.len());
    for (i, m) in mlist.iter().enumerate() {
        let (a, b) = match m {
            Value::String(s) => {
                let mut it = s.split(' ');
                match (it.next(), it.next(), it.next()) {
                    (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty() => (a, b),
                    _ => return Err(err(format!("model.merges[{i}] = {s:?} is not \"a b\""))),
                }
            }
            Value::Array(p) if p.len() == 2 => match (p[0].as_str(), p[1].as_str()) {
                (Some(a), Some(b)) => (a, b),
                _ => return Err(err(format!("model.merges[{i}] = {m} is not [\"a\", \"b\"]"))),
            },
            _ => return Err(err(format!("model.merges[{i}] = {m} is not \"a b\" or [\"a\", \"b\"]"))),
        };
        let look = |s: &str| {
            by_key
                .get(s)
                .copied()
                .ok_or_else(|| err(format!("model.merges[{i}] = ({a:?}, {b:?}): {s:?} is not in model.vocab")))
        };
        let (la, lb) = (look(a)?, look(b)?);
        look(&format!("{a}{b}"))?;
        merges.push((la, lb));
    }
    if let Some(unk) = &unk_token {
        let known = by_key.contains_key(unk.as_str()) || specials.iter().any(|s| s.0 == *unk);
        let complete = (0..=255u8).all(|b| by_key.contains_key(bytes_to_unicode_string(&[b]).as_str()));
        if !known && !complete {
            // tokenizers loads such a file but fails on the first byte that is not a token.
            return Err(err(format!(
                "model.unk_token is {unk:?}, which is not in model.vocab (and some single bytes are not \
                 tokens, so it would be needed)"
            )));
        }
    }
    Ok(HfBpe {
        pattern,
        vocab,
        merges,
        specials,
        ignore_merges,
        prefix_space,
        unk_token,
        fuse_unk,
        template,
        normalizer,
        added_tokens: canonical_added(added),
    })
}

/// The byte-level strings that `model.merges` produce (malformed entries are skipped: the merge
/// list is checked on its own).
fn merge_products(merges: Option<&Value>) -> HashSet<String> {
    let mut out = HashSet::new();
    for m in merges.and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default() {
        match m {
            Value::String(s) => {
                out.insert(s.replacen(' ', "", 1));
            }
            Value::Array(p) => {
                if let [Value::String(a), Value::String(b)] = p.as_slice() {
                    out.insert(format!("{a}{b}"));
                }
            }
            _ => {}
        }
    }
    out
}

/// `added_tokens` -> (specials as (content, id), every added token with its flags), in the
/// file's order. tokenizers gives an added token its model.vocab id, or else the next id after
/// the vocabulary and the added tokens before it; a declared id must be that one. A repeat of a
/// token with the same flags is skipped (as tokenizers does); with other flags it is an error.
type AddedTokens = (Vec<(String, u32)>, Vec<AddedToken>);
fn read_added_tokens(
    added: Option<&Value>,
    by_key: &HashMap<&str, u32>,
    vocab_len: usize,
) -> std::result::Result<AddedTokens, String> {
    let mut specials: Vec<(String, u32)> = Vec::new();
    let mut tokens: Vec<AddedToken> = Vec::new();
    // Hash maps, not scans: a file may list many added tokens.
    let mut by_id: HashMap<u32, usize> = HashMap::new();
    let mut by_content: HashMap<String, usize> = HashMap::new();
    let Some(added) = added else { return Ok((specials, tokens)) };
    let added = added.as_array().ok_or("added_tokens must be a list")?;
    let mut max_added: Option<u32> = None;
    for (i, t) in added.iter().enumerate() {
        let content = t.get("content").and_then(Value::as_str).filter(|c| !c.is_empty());
        let id = t.get("id").and_then(Value::as_u64).filter(|&id| id < i32::MAX as u64);
        let (Some(content), Some(id)) = (content, id) else {
            return Err(format!("added_tokens[{i}] needs a non-empty \"content\" and an \"id\""));
        };
        let id = id as u32;
        let flag = |name: &str, default: bool| -> std::result::Result<bool, String> {
            match t.get(name) {
                None | Some(Value::Null) => Ok(default),
                Some(Value::Bool(b)) => Ok(*b),
                Some(v) => Err(format!("added_tokens[{i}] ({content:?}): {name} is {v}, not true or false")),
            }
        };
        let special = flag("special", true)?;
        let token = AddedToken {
            content: content.to_string(),
            id,
            special,
            normalized: flag("normalized", !special)?,
            lstrip: flag("lstrip", false)?,
            rstrip: flag("rstrip", false)?,
            single_word: flag("single_word", false)?,
        };
        if let Some(&k) = by_content.get(content) {
            if tokens[k] == token {
                continue; // tokenizers skips an identical repeat
            }
            return Err(format!(
                "added_tokens[{i}] ({content:?}) repeats an earlier added token with other flags or id"
            ));
        }
        if content.len() > MAX_SPECIAL_BYTES {
            return Err(format!(
                "added_tokens[{i}] is {} bytes long; added tokens are at most {MAX_SPECIAL_BYTES} bytes",
                content.len()
            ));
        }
        let expected = match by_key.get(content) {
            Some(&vid) => vid,
            None => {
                let size = vocab_len as u32;
                match max_added {
                    Some(m) if m >= size || size == 0 => m + 1,
                    _ => size,
                }
            }
        };
        max_added = Some(max_added.map_or(expected, |m| m.max(expected)));
        if expected != id {
            return Err(format!(
                "added_tokens[{i}] ({content:?}) declares id {id}, but tokenizers would give it id {expected}"
            ));
        }
        if let Some(&k) = by_id.get(&id) {
            let c = &tokens[k].content;
            return Err(format!("added_tokens[{i}] ({content:?}) has the id {id} of {c:?}"));
        }
        by_id.insert(id, tokens.len());
        by_content.insert(content.to_string(), tokens.len());
        if special {
            specials.push((content.to_string(), id));
        }
        tokens.push(token);
    }
    Ok((specials, tokens))
}

/// `model.ignore_merges`, `model.unk_token` and `model.fuse_unk`; `byte_fallback` is refused.
fn read_model_options(model: &Value) -> std::result::Result<(bool, Option<String>, bool), String> {
    let flag = |key: &str| -> std::result::Result<bool, String> {
        match get(model, key) {
            None => Ok(false),
            Some(v) => v.as_bool().ok_or_else(|| format!("model.{key} is {v}; it must be true or false")),
        }
    };
    if flag("byte_fallback")? {
        return Err("model.byte_fallback is true; byte fallback (<0xNN> tokens) is a SentencePiece-style \
                    feature, not part of byte-level BPE, and is not supported"
            .into());
    }
    let unk = match get(model, "unk_token") {
        None => None,
        Some(Value::String(u)) if !u.is_empty() => Some(u.clone()),
        Some(v) => return Err(format!("model.unk_token is {v}; it must be null or a non-empty string")),
    };
    Ok((flag("ignore_merges")?, unk, flag("fuse_unk")?))
}

/// A `TemplateProcessing` post-processor (alone or in a `Sequence` with ByteLevel ones, which
/// change no ids), or null / ByteLevel (no template). Only a single template of special tokens
/// around `$A` is accepted.
fn read_post_processor(pp: Option<&Value>) -> std::result::Result<Option<HfTemplate>, String> {
    let Some(pp) = pp else { return Ok(None) };
    let unsupported = |what: String| {
        format!(
            "post_processor {what} is not supported; expected null, ByteLevel, TemplateProcessing or a \
             Sequence of them"
        )
    };
    let (items, field): (Vec<&Value>, &str) = match type_of(pp) {
        "Sequence" => {
            let list = pp
                .get("processors")
                .and_then(Value::as_array)
                .ok_or_else(|| "post_processor.processors must be a list".to_string())?;
            (list.iter().collect(), "post_processor.processors")
        }
        _ => (vec![pp], "post_processor"),
    };
    let mut template = None;
    for (i, p) in items.iter().enumerate() {
        let here = if field == "post_processor" { field.to_string() } else { format!("{field}[{i}]") };
        match type_of(p) {
            "ByteLevel" => {}
            "TemplateProcessing" if template.is_none() => template = Some(read_template(p, &here)?),
            "TemplateProcessing" => {
                return Err(format!("{here} is a second TemplateProcessing; only one is supported"))
            }
            other => return Err(unsupported(format!("{other:?} (at {here})"))),
        }
    }
    Ok(template)
}

fn read_template(p: &Value, field: &str) -> std::result::Result<HfTemplate, String> {
    let single = match get(p, "single").and_then(Value::as_array) {
        Some(a) if !a.is_empty() => a,
        _ => {
            return Err(format!(
                "{field}.single is missing or empty; a template without a single-sequence form (pair-only) \
                 is not supported"
            ))
        }
    };
    let specials = p.get("special_tokens").and_then(Value::as_object);
    let mut tpl = HfTemplate::default();
    let mut seen_a = false;
    for (k, item) in single.iter().enumerate() {
        let at = format!("{field}.single[{k}]");
        if let Some(seq) = item.get("Sequence") {
            let id = seq.get("id").and_then(Value::as_str).unwrap_or("?");
            if id != "A" || seen_a {
                return Err(format!(
                    "{at} is the sequence ${id}; a single template must hold $A exactly once (unusual \
                     templates are not supported)"
                ));
            }
            seen_a = true;
            continue;
        }
        let Some(name) = item.get("SpecialToken").and_then(|t| t.get("id")).and_then(Value::as_str) else {
            return Err(format!(
                "{at} is {item}; only {{\"SpecialToken\": ...}} and {{\"Sequence\": ...}} are supported"
            ));
        };
        let Some(entry) = specials.and_then(|m| m.get(name)) else {
            return Err(format!("{at} names the special token {name:?}, which {field}.special_tokens lacks"));
        };
        let ids: Option<Vec<u32>> = entry.get("ids").and_then(Value::as_array).and_then(|a| {
            a.iter().map(|v| v.as_u64().filter(|&id| id < i32::MAX as u64).map(|id| id as u32)).collect()
        });
        let tokens: Option<Vec<String>> = entry
            .get("tokens")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().map(|v| v.as_str().map(str::to_string)).collect());
        let (Some(ids), Some(tokens)) = (ids, tokens) else {
            return Err(format!("{field}.special_tokens[{name:?}] needs lists \"ids\" (token ids) and \"tokens\""));
        };
        if ids.is_empty() || ids.len() != tokens.len() {
            return Err(format!(
                "{field}.special_tokens[{name:?}] has {} ids and {} tokens; it needs as many of each (at least one)",
                ids.len(),
                tokens.len()
            ));
        }
        let part = if seen_a { &mut tpl.suffix } else { &mut tpl.prefix };
        part.push(HfTemplateSpecial { name: name.to_string(), ids, tokens });
    }
    if !seen_a {
        return Err(format!("{field}.single has no $A sequence; such a template is not supported"));
    }
    Ok(tpl)
}

/// (use_regex, add_prefix_space) of a ByteLevel pre-tokenizer.
fn read_byte_level(v: &Value) -> (bool, bool) {
    (
        v.get("use_regex").and_then(Value::as_bool).unwrap_or(true),
        v.get("add_prefix_space").and_then(Value::as_bool).unwrap_or(false),
    )
}

fn read_pre_tokenizer(pt: Option<&Value>) -> std::result::Result<(String, PrefixSpace), String> {
    let unsupported = |what: &str| {
        format!(
            "pre_tokenizer {what} is not supported; expected ByteLevel(use_regex=true) or \
             Sequence[Split(Regex, behavior=Isolated), ByteLevel(use_regex=false)]"
        )
    };
    let Some(pt) = pt else {
        return Err(unsupported("null"));
    };
    let whole = |add_prefix: bool| {
        let mode = if add_prefix { PrefixSpace::Segment } else { PrefixSpace::Off };
        (HF_BYTELEVEL_PATTERN.to_string(), mode)
    };
    match type_of(pt) {
        "ByteLevel" => match read_byte_level(pt) {
            (true, add_prefix) => Ok(whole(add_prefix)),
            (false, _) => Err(unsupported("ByteLevel(use_regex=false) alone")),
        },
        "Sequence" => {
            let items = pt
                .get("pretokenizers")
                .and_then(Value::as_array)
                .ok_or_else(|| "pre_tokenizer.pretokenizers must be a list".to_string())?;
            match items.as_slice() {
                [bl] if type_of(bl) == "ByteLevel" => match read_byte_level(bl) {
                    (true, add_prefix) => Ok(whole(add_prefix)),
                    (false, _) => Err(unsupported("Sequence[ByteLevel(use_regex=false)]")),
                },
                [split, bl] if type_of(split) == "Split" && type_of(bl) == "ByteLevel" => {
                    let (use_regex, add_prefix) = read_byte_level(bl);
                    if use_regex {
                        return Err(unsupported("Sequence[Split, ByteLevel(use_regex=true)]"));
                    }
                    let f = "pre_tokenizer.pretokenizers[0]";
                    let Some(re) = split.get("pattern").and_then(|p| p.get("Regex")).and_then(Value::as_str) else {
                        return Err(format!("{f}.pattern must be {{\"Regex\": ...}}"));
                    };
                    let behavior = split.get("behavior").and_then(Value::as_str).unwrap_or("?");
                    if behavior != "Isolated" {
                        return Err(format!("{f}.behavior is {behavior:?}; only \"Isolated\" is supported"));
                    }
                    if split.get("invert").and_then(Value::as_bool) == Some(true) {
                        return Err(format!("{f}.invert is true; it is not supported"));
                    }
                    let mode = if add_prefix { PrefixSpace::Piece } else { PrefixSpace::Off };
                    Ok((pattern_from_onig(re), mode))
                }
                _ => {
                    let types: Vec<&str> = items.iter().map(type_of).collect();
                    Err(unsupported(&format!("Sequence{types:?}")))
                }
            }
        }
        other => Err(unsupported(&format!("{other:?}"))),
    }
}

// ---- regex dialects -------------------------------------------------------------------------
//
// tokenizers runs `Split` patterns with Oniguruma (Ruby syntax), we with fancy-regex. The one
// difference that matters for the tiktoken patterns: a possessive interval `X{1,3}+` is, in Ruby
// syntax, `(X{1,3})+` (any number of repetitions), so cl100k's `\p{N}{1,3}+` would split "1977"
// as one piece. We write such intervals as atomic groups `(?>X{1,3})` (same meaning in both) and
// turn them back on reading. `++`, `*+`, `?+` are possessive in both.
//
// Both rewrites work on the pattern as a slice of `char`s and never slice a `str` by byte
// offsets, so any input (unbalanced, cut inside an escape, multi-byte characters anywhere) gives
// some output instead of a panic; the fuzz tests below hold them to that. A pattern that is not
// a valid regex comes out as some other invalid regex, which the regex compiler then rejects
// with an error naming it.

/// Length in chars of the escape starting at `c[0] == '\\'` (`\p{L}`, `\x{41}`, `\n`, ...).
fn escape_len(c: &[char]) -> usize {
    if c.len() < 2 {
        return c.len();
    }
    if matches!(c[1], 'p' | 'P' | 'x' | 'u' | 'N' | 'k' | 'g') && c.get(2) == Some(&'{') {
        if let Some(end) = c[2..].iter().position(|&x| x == '}') {
            return end + 3;
        }
    }
    2
}

/// Length in chars of the character class starting at `c[0] == '['` (nested classes included).
fn class_len(c: &[char]) -> usize {
    let mut i = 1;
    if c.get(i) == Some(&'^') {
        i += 1;
    }
    if c.get(i) == Some(&']') {
        i += 1; // a leading ']' is literal
    }
    let mut depth = 1;
    while i < c.len() {
        match c[i] {
            '\\' => i += escape_len(&c[i..]),
            '[' => {
                depth += 1;
                i += 1;
            }
            ']' => {
                depth -= 1;
                i += 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    c.len()
}

/// Whether `c` starts a comment group `(?#...)`.
fn is_comment(c: &[char]) -> bool {
    c.starts_with(&['(', '?', '#'])
}

/// Length in chars of the comment `(?#...)` at the start of `c`: it ends at the first `)` that
/// is not escaped (as in fancy-regex and Oniguruma; parentheses inside do not nest).
fn comment_len(c: &[char]) -> usize {
    let mut i = 3;
    while i < c.len() {
        match c[i] {
            '\\' => i += 2,
            ')' => return i + 1,
            _ => i += 1,
        }
    }
    c.len()
}

/// Length in chars of an interval quantifier `{n}`, `{n,}`, `{n,m}`, `{,m}` at the start of `c`
/// (`None` if `c` does not start with one).
fn interval_len(c: &[char]) -> Option<usize> {
    if c.first() != Some(&'{') {
        return None;
    }
    let end = c.iter().position(|&x| x == '}')?;
    let inner = &c[1..end];
    let digits = |s: &[char]| s.iter().all(char::is_ascii_digit);
    let ok = match inner.iter().position(|&x| x == ',') {
        Some(k) => digits(&inner[..k]) && digits(&inner[k + 1..]) && inner.len() > 1,
        None => !inner.is_empty() && digits(inner),
    };
    ok.then_some(end + 1)
}

/// Length in chars (at least 1 unless `c` is empty, at most `c.len()`) of the single atom at the
/// start of `c`: an escape, a class, a group (to its matching `)`, or the end of `c` if it has
/// none), a comment, or one char.
fn atom_len(c: &[char]) -> usize {
    let Some(&first) = c.first() else { return 0 };
    let n = match first {
        '\\' => escape_len(c),
        '[' => class_len(c),
        '(' if is_comment(c) => comment_len(c),
        '(' => {
            let mut depth = 0;
            let mut i = 0;
            while i < c.len() {
                match c[i] {
                    '\\' => i += escape_len(&c[i..]),
                    '[' => i += class_len(&c[i..]),
                    '(' if is_comment(&c[i..]) => i += comment_len(&c[i..]),
                    '(' => {
                        depth += 1;
                        i += 1;
                    }
                    ')' => {
                        depth -= 1;
                        i += 1;
                        if depth == 0 {
                            return i;
                        }
                    }
                    _ => i += 1,
                }
            }
            c.len()
        }
        _ => 1,
    };
    n.clamp(1, c.len())
}

/// The inside of a closed group atom `( ... )` (not a comment), or `None` for any other atom.
fn group_inner(atom: &[char]) -> Option<&[char]> {
    match atom {
        ['(', inner @ .., ')'] if !is_comment(atom) => Some(inner),
        _ => None,
    }
}

/// Whether an atom may carry a quantifier (the rewrite leaves `(`, `)`, `|` and comments alone).
fn quantifiable(atom: &[char]) -> bool {
    !matches!(atom, ['('] | [')'] | ['|']) && !is_comment(atom)
}

/// Whether `c` starts with a quantifier. `X{n,m}+` followed by one is left as it is (and so is
/// `(?>X{n,m})` followed by one): the engines disagree on what a second quantifier means.
fn starts_quantifier(c: &[char]) -> bool {
    matches!(c.first(), Some('{' | '*' | '+' | '?'))
}

/// Our (fancy-regex) pattern -> the form to store in a tokenizer.json for Oniguruma:
/// possessive intervals `X{n,m}+` become atomic groups `(?>X{n,m})`.
pub fn pattern_to_onig(p: &str) -> String {
    let c: Vec<char> = p.chars().collect();
    let mut out = String::with_capacity(p.len() + 8);
    to_onig(&c, &mut out);
    out
}

fn to_onig(c: &[char], out: &mut String) {
    let mut i = 0;
    while i < c.len() {
        let n = atom_len(&c[i..]);
        let atom = &c[i..i + n];
        i += n;
        if quantifiable(atom) {
            if let Some(q) = interval_len(&c[i..]) {
                if c.get(i + q) == Some(&'+') && !starts_quantifier(&c[i + q + 1..]) {
                    out.push_str("(?>");
                    to_onig(atom, out);
                    out.extend(&c[i..i + q]);
                    out.push(')');
                    i += q + 1;
                    continue;
                }
                // A lazy exact count `X{n}?` is `X{n}`; Ruby syntax reads it as `(?:X{n})?`.
                if c.get(i + q) == Some(&'?') && !c[i..i + q].contains(&',') && !starts_quantifier(&c[i + q + 1..]) {
                    to_onig(atom, out);
                    out.extend(&c[i..i + q]);
                    i += q + 1;
                    continue;
                }
            }
        }
        match group_inner(atom) {
            Some(inner) => {
                out.push('(');
                to_onig(inner, out);
                out.push(')');
            }
            None => out.extend(atom),
        }
    }
}

/// A `Split` regex of a `tokenizer.json` (Oniguruma, Ruby syntax) -> the fancy-regex pattern
/// that splits text the same way. Inverse of [`pattern_to_onig`]: atomic groups holding exactly
/// one atom and an interval, `(?>X{n,m})`, become `X{n,m}+` (the same meaning for fancy-regex).
/// And an interval followed by a quantifier means what Oniguruma makes of it, a repeat of the
/// interval, so a pattern copied verbatim from tiktoken splits as in Hugging Face (cl100k's
/// `\p{N}{1,3}+` is one piece for "12345" there):
///
/// | Oniguruma (Ruby syntax)        | fancy-regex              |
/// |--------------------------------|--------------------------|
/// | `X{n,m}+` `X{n,}+` `X{n}+`     | `(?:X{n,m})+` ...        |
/// | `X{n,m}*` ...                  | `(?:X{n,m})*` ...        |
/// | `X{n}?` (not lazy in Ruby)     | `(?:X{n})?`              |
/// | `X{n,m}?` `X{n,}?` (lazy)      | the same                 |
pub fn pattern_from_onig(p: &str) -> String {
    let c: Vec<char> = p.chars().collect();
    let mut out = String::with_capacity(p.len());
    from_onig(&c, &mut out);
    out
}

fn from_onig(c: &[char], out: &mut String) {
    let mut i = 0;
    while i < c.len() {
        let n = atom_len(&c[i..]);
        let atom = &c[i..i + n];
        i += n;
        let Some(inner) = group_inner(atom) else {
            if quantifiable(atom) {
                i += onig_repeat(atom, &c[i..], out);
            } else {
                out.extend(atom);
            }
            continue;
        };
        if let ['?', '>', body @ ..] = inner {
            let a = atom_len(body);
            if a < body.len()
                && quantifiable(&body[..a])
                && interval_len(&body[a..]) == Some(body.len() - a)
                && !starts_quantifier(&c[i..])
            {
                from_onig(&body[..a], out);
                out.extend(&body[a..]);
                out.push('+');
                continue;
            }
        }
        i += onig_repeat(atom, &c[i..], out);
    }
}

/// Writes `atom` (converted) and, when `rest` starts with an interval that Oniguruma repeats
/// (`{..}+`, `{..}*`, `{n}?`), the interval and its repeat as `(?:X{..})+`; returns how many
/// chars of `rest` it consumed.
fn onig_repeat(atom: &[char], rest: &[char], out: &mut String) -> usize {
    let write_atom = |out: &mut String| match group_inner(atom) {
        Some(inner) => {
            out.push('(');
            from_onig(inner, out);
            out.push(')');
        }
        None => out.extend(atom),
    };
    if let Some(q) = interval_len(rest) {
        let exact = !rest[..q].contains(&',');
        let repeat = match rest.get(q) {
            Some('+' | '*') => true,
            Some('?') => exact,
            _ => false,
        };
        if repeat && !starts_quantifier(&rest[q + 1..]) {
            out.push_str("(?:");
            write_atom(out);
            out.extend(&rest[..q]);
            out.push(')');
            out.push(rest[q]);
            return q + 1;
        }
    }
    write_atom(out);
    0
}

fn json_str(s: &str) -> String {
    // Serializing a &str cannot fail; fall back to Debug just in case.
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

/// The `pre_tokenizer` line: `Split(pattern) + ByteLevel(use_regex=false)`, or for a prefix
/// space per segment `ByteLevel(use_regex=true)` alone (its pattern is then the GPT-2 one).
fn write_pre_tokenizer(s: &mut String, t: &HfBpe) -> std::result::Result<(), String> {
    if t.prefix_space == PrefixSpace::Segment {
        if t.pattern != HF_BYTELEVEL_PATTERN && t.pattern != crate::pretokenize::GPT2_PATTERN {
            return Err(format!(
                "a prefix space per segment is ByteLevel(use_regex=true), whose pattern is GPT-2's, not {:?}",
                t.pattern
            ));
        }
        s.push_str(
            "  \"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, \
             \"trim_offsets\": true, \"use_regex\": true},\n",
        );
        return Ok(());
    }
    let _ = writeln!(
        s,
        "  \"pre_tokenizer\": {{\"type\": \"Sequence\", \"pretokenizers\": [\
         {{\"type\": \"Split\", \"pattern\": {{\"Regex\": {}}}, \"behavior\": \"Isolated\", \
         \"invert\": false}}, \
         {{\"type\": \"ByteLevel\", \"add_prefix_space\": {}, \"trim_offsets\": false, \
         \"use_regex\": false}}]}},",
        json_str(&pattern_to_onig(&t.pattern)),
        t.prefix_space == PrefixSpace::Piece
    );
    Ok(())
}

/// The `post_processor` line: ByteLevel, then the template if there is one.
fn write_post_processor(s: &mut String, template: Option<&HfTemplate>) {
    let byte_level = "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": false, \
                      \"use_regex\": false}";
    let Some(t) = template else {
        let _ = writeln!(s, "  \"post_processor\": {byte_level},");
        return;
    };
    let item =
        |sp: &HfTemplateSpecial| format!("{{\"SpecialToken\": {{\"id\": {}, \"type_id\": 0}}}}", json_str(&sp.name));
    let seq = |name: &str, type_id: u32| format!("{{\"Sequence\": {{\"id\": \"{name}\", \"type_id\": {type_id}}}}}");
    let mut single: Vec<String> = t.prefix.iter().map(item).collect();
    single.push(seq("A", 0));
    single.extend(t.suffix.iter().map(item));
    let mut pair = single.clone();
    pair.extend(t.prefix.iter().map(item));
    pair.push(seq("B", 1));
    pair.extend(t.suffix.iter().map(item));
    let mut specials: Vec<String> = Vec::new();
    let mut seen = HashSet::new();
    for sp in t.prefix.iter().chain(&t.suffix) {
        if seen.insert(&sp.name) {
            let tokens: Vec<String> = sp.tokens.iter().map(|x| json_str(x)).collect();
            specials.push(format!(
                "{}: {{\"id\": {}, \"ids\": {:?}, \"tokens\": [{}]}}",
                json_str(&sp.name),
                json_str(&sp.name),
                sp.ids,
                tokens.join(", ")
            ));
        }
    }
    let _ = writeln!(
        s,
        "  \"post_processor\": {{\"type\": \"Sequence\", \"processors\": [{byte_level}, \
         {{\"type\": \"TemplateProcessing\", \"single\": [{}], \"pair\": [{}], \"special_tokens\": {{{}}}}}]}},",
        single.join(", "),
        pair.join(", "),
        specials.join(", ")
    );
}

/// Write a `tokenizer.json` that `tokenizers.Tokenizer.from_file` loads and that encodes exactly as
/// this BPE does: null normalizer, `Sequence[Split(Regex, Isolated), ByteLevel(use_regex=false)]`,
/// BPE model with the vocab in id order (specials included, under their raw content, so that
/// tokenizers keeps their ids), merges as `["a", "b"]` pairs, specials as added tokens. A text
/// level (`normalizer`, `added_tokens` with their flags) is written as tokenizers writes it;
/// non-special added tokens that are not BPE tokens join the vocab under their raw content too.
pub fn write_hf_json(t: &HfBpe) -> Result<String> {
    let bad = |reason: String| BpeError::InvalidArgument { name: "tokenizer", value: "HfBpe".into(), reason };
    let map = bytes_to_unicode();
    let enc = |b: &[u8]| -> String { b.iter().map(|&x| map[x as usize]).collect() };

    // Vocab entries (id, key): tokens, then specials at their ids.
    let mut entries: Vec<(u32, String)> = Vec::with_capacity(t.vocab.len() + t.specials.len());
    let mut key_id: HashMap<String, u32> = HashMap::with_capacity(entries.capacity());
    for (id, tok) in t.vocab.iter().enumerate() {
        let Some(tok) = tok else { continue };
        if tok.is_empty() {
            return Err(bad(format!("vocab id {id} is the empty string")));
        }
        let key = enc(tok);
        if let Some(other) = key_id.insert(key.clone(), id as u32) {
            return Err(bad(format!("vocab ids {other} and {id} have the same bytes")));
        }
        entries.push((id as u32, key));
    }
    // The added tokens with their flags (plain specials unless `added_tokens` says more).
    let added: Vec<AddedToken> = if t.added_tokens.is_empty() {
        t.specials.iter().map(|(c, id)| AddedToken::special(c, *id)).collect()
    } else {
        t.added_tokens.clone()
    };
    for AddedToken { content, id, .. } in &added {
        if content.is_empty() {
            return Err(bad("an added token is the empty string".into()));
        }
        if let Some(&other) = key_id.get(content) {
            if other == *id && t.vocab.get(*id as usize).is_some_and(|v| v.is_some()) {
                continue; // the token's byte-level string is the special's text: one entry
            }
            return Err(bad(format!("special token {content:?} (id {id}) has the same text as token id {other}")));
        }
        if t.vocab.get(*id as usize).is_some_and(|v| v.is_some()) {
            return Err(bad(format!("special token {content:?} has id {id}, which is a vocab token")));
        }
        key_id.insert(content.clone(), *id);
        entries.push((*id, content.clone()));
    }
    entries.sort_by_key(|e| e.0);
    for w in entries.windows(2) {
        if w[0].0 == w[1].0 {
            return Err(bad(format!("id {} is used by two special tokens", w[0].0)));
        }
    }

    let mut s = String::with_capacity(64 * (entries.len() + t.merges.len()) + 1024);
    s.push_str("{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n");
    s.push_str("  \"added_tokens\": [");
    for (i, a) in added.iter().enumerate() {
        let _ = write!(
            s,
            "{}\n    {{\"id\": {}, \"content\": {}, \"single_word\": {}, \"lstrip\": {}, \
             \"rstrip\": {}, \"normalized\": {}, \"special\": {}}}",
            if i > 0 { "," } else { "" },
            a.id,
            json_str(&a.content),
            a.single_word,
            a.lstrip,
            a.rstrip,
            a.normalized,
            a.special
        );
    }
    s.push_str(if added.is_empty() { "],\n" } else { "\n  ],\n" });
    let _ = writeln!(s, "  \"normalizer\": {},", write_hf_normalizer(&t.normalizer));
    write_pre_tokenizer(&mut s, t).map_err(bad)?;
    write_post_processor(&mut s, t.template.as_ref());
    s.push_str(
        "  \"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \
         \"trim_offsets\": false, \"use_regex\": false},\n",
    );
    let unk = t.unk_token.as_deref().map_or_else(|| "null".to_string(), json_str);
    let _ = write!(
        s,
        "  \"model\": {{\n    \"type\": \"BPE\",\n    \"dropout\": null,\n    \"unk_token\": {unk},\n    \
         \"continuing_subword_prefix\": null,\n    \"end_of_word_suffix\": null,\n    \
         \"fuse_unk\": {},\n    \"byte_fallback\": false,\n    \"ignore_merges\": {},\n    \
         \"vocab\": {{",
        t.fuse_unk, t.ignore_merges
    );
    for (i, (id, key)) in entries.iter().enumerate() {
        let _ = write!(s, "{}\n      {}: {id}", if i > 0 { "," } else { "" }, json_str(key));
    }
    s.push_str(if entries.is_empty() { "},\n" } else { "\n    },\n" });
    s.push_str("    \"merges\": [");
    let tok = |id: u32| -> Result<String> {
        match t.vocab.get(id as usize) {
            Some(Some(b)) => Ok(enc(b)),
            _ => Err(bad(format!("a merge uses id {id}, which is not a vocab token"))),
        }
    };
    for (i, &(a, b)) in t.merges.iter().enumerate() {
        let (ka, kb) = (tok(a)?, tok(b)?);
        if !key_id.contains_key(&format!("{ka}{kb}")) {
            return Err(bad(format!("merges[{i}] = ({a}, {b}) produces a token that is not in vocab")));
        }
        let _ = write!(s, "{}\n      [{}, {}]", if i > 0 { "," } else { "" }, json_str(&ka), json_str(&kb));
    }
    s.push_str(if t.merges.is_empty() { "]\n" } else { "\n    ]\n" });
    s.push_str("  }\n}\n");
    Ok(s)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn byte_map_roundtrip() {
        let m = bytes_to_unicode();
        assert_eq!(m[b' ' as usize], 'Ġ');
        assert_eq!(m[b'\n' as usize], 'Ċ');
        assert_eq!(m[b'a' as usize], 'a');
        let all: Vec<u8> = (0..=255).collect();
        let s: String = all.iter().map(|&b| m[b as usize]).collect();
        assert_eq!(unicode_to_bytes(&s), Some(all));
        assert_eq!(unicode_to_bytes(" "), None);
    }

    #[test]
    fn onig_patterns() {
        use crate::pretokenize::{GPT2_PATTERN, GPT4_PATTERN};
        let g4 = pattern_to_onig(GPT4_PATTERN);
        assert!(g4.contains(r"|(?>\p{N}{1,3})|"), "{g4}");
        assert!(!g4.contains("{1,3}+"));
        assert_eq!(pattern_from_onig(&g4), GPT4_PATTERN);
        for p in [GPT2_PATTERN, HF_BYTELEVEL_PATTERN, r"a{2}", r"\{2}+", r"x{,"] {
            assert_eq!(pattern_to_onig(p), p);
            assert_eq!(pattern_from_onig(p), p);
        }
        for (ours, onig) in [
            (r"[{}]{2,}+x", r"(?>[{}]{2,})x"),
            (r"(ab|c){1,3}+", r"(?>(ab|c){1,3})"),
            (r"((?:\d){3}+)", r"((?>(?:\d){3}))"),
            (r"\x{41}{2}+|\\{2}", r"(?>\x{41}{2})|\\{2}"),
            (r"[^\]]{1,2}+", r"(?>[^\]]{1,2})"),
        ] {
            assert_eq!(pattern_to_onig(ours), onig);
            assert_eq!(pattern_from_onig(onig), ours);
        }
        // Comments are copied as they are (their parentheses do not nest), and multi-byte
        // characters anywhere are no problem (these used to panic on byte slicing).
        for (ours, onig) in [
            ("(?#(a)é", "(?#(a)é"),
            ("(?#a)é{1,2}+", "(?#a)(?>é{1,2})"),
            (r"(?#\)(x)é{2}+", r"(?#\)(x)(?>é{2})"),
            ("(é{2}+)", "((?>é{2}))"),
        ] {
            assert_eq!(pattern_to_onig(ours), onig);
            assert_eq!(pattern_from_onig(onig), ours);
        }
        // Malformed input gives malformed output, not a panic.
        for p in ["(?>x})", "(?>x}", "(?>", "(", ")", "(?>)", "((", "[", r"\", r"\p{", "{", "é(", "(é", "(?#"] {
            pattern_to_onig(p);
            pattern_from_onig(p);
        }
    }

    /// Sample texts the fuzz below splits with each pattern.
    const FUZZ_TEXTS: &[&str] =
        &["", "hello world 1234567 é中文 (a) {x}", "aaab  \n\n x1x22x333 ééé ((x)) }{", "x{2}+ ?# é) #"];

    /// Random patterns from regex-heavy pieces: the rewrites never panic, and for every pattern
    /// fancy-regex accepts, the Oniguruma form and its inverse split text exactly as it does.
    #[test]
    fn onig_rewrites_fuzz() {
        use crate::testutil::XorShift;
        const PIECES: &[&str] = &[
            "(", ")", "(?>", "(?:", "(?#", "(?=", "(?!", "(?<=", "(?i:", "[", "]", "[^", "{", "}", "{2}", "{1,3}",
            "{,2}", "{2,}", "+", "*", "?", "|", "\\", "\\p{L}", "\\x{41}", "\\d", "\\s", "\\{", "\\)", ".", "^", "$",
            "#", ",", "1", "x", "a", "é", "中", "😀", " ",
        ];
        let mut rng = XorShift::star(0xC0FFEE);
        let mut valid = 0;
        for _ in 0..6_000 {
            let n = 1 + rng.below_high(10);
            let p: String = (0..n).map(|_| PIECES[rng.below_high(PIECES.len())]).collect();
            let onig = pattern_to_onig(&p);
            let back = pattern_from_onig(&onig);
            pattern_from_onig(&p);
            let Ok(re) = fancy_regex::Regex::new(&p) else { continue };
            valid += 1;
            for form in [&onig, &back] {
                let other = fancy_regex::Regex::new(form).unwrap_or_else(|e| panic!("{p:?} -> {form:?}: {e}"));
                for text in FUZZ_TEXTS {
                    let pieces = |re: &fancy_regex::Regex| -> Vec<(usize, usize)> {
                        re.find_iter(text).filter_map(|m| m.ok()).map(|m| (m.start(), m.end())).collect()
                    };
                    assert_eq!(pieces(&re), pieces(&other), "{p:?} vs {form:?} on {text:?}");
                }
            }
        }
        assert!(valid > 600, "only {valid} valid patterns: the fuzz is too weak");
    }

    fn tmp_file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("fastllm-formats-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn loaders_read_bounded_text() {
        // A sparse file one byte over the limit: refused from its size, without reading it.
        let path = tmp_file("huge.json", b"");
        std::fs::File::options().write(true).open(&path).unwrap().set_len(MAX_VOCAB_FILE_BYTES + 1).unwrap();
        let err = load_hf_json(&path).unwrap_err().to_string();
        assert!(err.contains("huge.json") && err.contains("256 MiB"), "{err}");
        std::fs::remove_file(&path).unwrap();
        // An endless device: refused at its first NUL byte.
        if Path::new("/dev/zero").exists() {
            let err = load_tiktoken(Path::new("/dev/zero")).unwrap_err().to_string();
            assert!(err.contains("/dev/zero") && err.contains("NUL byte at offset 0"), "{err}");
        }
        let err = read_text(&std::env::temp_dir()).unwrap_err().to_string();
        assert!(err.contains("directory"), "{err}");
        let path = tmp_file("nul.tiktoken", b"YQ== 0\n\0");
        let err = load_tiktoken(&path).unwrap_err().to_string();
        assert!(err.contains("NUL byte at offset 7"), "{err}");
        let path = tmp_file("bad-utf8.json", b"{\n\xff}");
        assert!(load_hf_json(&path).unwrap_err().to_string().contains("bad-utf8.json:2"));
    }
}
