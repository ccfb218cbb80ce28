//! The tokenizer: pre-tokenizer + BPE + special tokens. (Being written by the lead.)
pub struct Tokenizer;
