//! Pre-tokenization: split text into the pieces BPE merges within.
//!
//! BASELINE (regex only). The pre-tokenizer helper replaces this with hand-written matchers for
//! the built-in patterns, keeping the public signatures below.

use crate::error::{BpeError, Result};

/// tiktoken's r50k/gpt2 split pattern.
pub const GPT2_PATTERN: &str =
    r"'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s";
/// tiktoken's cl100k split pattern (the form current tiktoken ships).
pub const GPT4_PATTERN: &str = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s";

#[derive(Clone, Debug)]
pub struct PreTokenizer {
    name: &'static str,
    source: String,
    regex: fancy_regex::Regex,
}

impl PreTokenizer {
    pub fn new(pattern: &str) -> Result<Self> {
        let (name, source) = match pattern {
            "gpt4" | "cl100k" | "cl100k_base" => ("gpt4", GPT4_PATTERN),
            "gpt2" | "r50k" | "r50k_base" | "p50k_base" => ("gpt2", GPT2_PATTERN),
            p => ("custom", p),
        };
        let regex = fancy_regex::Regex::new(source).map_err(|e| BpeError::InvalidPattern {
            pattern: source.to_string(),
            reason: e.to_string(),
        })?;
        Ok(PreTokenizer { name, source: source.to_string(), regex })
    }

    pub fn pattern(&self) -> &str {
        &self.source
    }

    pub fn name(&self) -> &str {
        self.name
    }

    pub fn for_each_piece<'a>(&self, text: &'a str, f: &mut dyn FnMut(&'a str)) -> Result<()> {
        for m in self.regex.find_iter(text) {
            let m = m.map_err(|e| BpeError::RegexRuntime(e.to_string()))?;
            if !m.as_str().is_empty() {
                f(m.as_str());
            }
        }
        Ok(())
    }

    pub fn split<'a>(&self, text: &'a str) -> Result<Vec<&'a str>> {
        let mut out = Vec::new();
        self.for_each_piece(text, &mut |p| out.push(p))?;
        Ok(out)
    }
}
