//! Vocabulary files. Owned by the encoder helper.
#![allow(unused)]
//!
//! INTERFACE:
//! pub fn bytes_to_unicode() -> [char; 256];  // GPT-2's byte <-> printable char map
//! pub fn unicode_to_bytes(s: &str) -> Option<Vec<u8>>;
//! /// tiktoken `.tiktoken`: "base64 rank" per line -> vocab indexed by rank.
//! pub fn load_tiktoken(path: &Path) -> Result<Vec<Option<Vec<u8>>>>;
//! /// GPT-2 encoder.json + vocab.bpe -> (vocab by rank, specials); checked against each other as
//! /// tiktoken's data_gym loader does.
//! pub fn load_gpt2(encoder_json: &Path, vocab_bpe: &Path) -> Result<(Vec<Option<Vec<u8>>>, Vec<(String, u32)>)>;
//! pub struct HfBpe { pub pattern: String, pub vocab: Vec<Option<Vec<u8>>>, pub merges: Vec<(u32, u32)>,
//!                    pub specials: Vec<(String, u32)> }
//! /// Parse a byte-level BPE tokenizer.json (ours or HF's: Split(regex)+ByteLevel, or ByteLevel with
//! /// use_regex=true -> GPT-2 pattern; merges as "a b" strings or [a, b] pairs).
//! pub fn read_hf_json(text: &str, path: &str) -> Result<HfBpe>;
//! pub fn write_hf_json(t: &HfBpe) -> Result<String>;
