//! Text normalizers of Hugging Face `tokenizer.json` files that byte-level models use: the four
//! Unicode normal forms, `Lowercase`, and a `Sequence` of them, with the semantics of the
//! `tokenizers` library:
//!
//! * NFC / NFD / NFKC / NFKD: the whole text, as `unicode-normalization` does it.
//! * Lowercase: each char by itself through `char::to_lowercase` (so no final-sigma rule:
//!   "ΣΑΣ" -> "σασ", and "İ" -> "i̇", two chars), as `NormalizedString::lowercase` does.
//!
//! A `Sequence` applies its steps in order; an empty one is the identity, as is no normalizer.

use std::borrow::Cow;

use serde_json::Value;
use unicode_normalization::{
    is_nfc_quick, is_nfd_quick, is_nfkc_quick, is_nfkd_quick, IsNormalized, UnicodeNormalization,
};

/// One normalization step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum NormStep {
    Nfc,
    Nfd,
    Nfkc,
    Nfkd,
    Lowercase,
}

impl NormStep {
    /// The step's `type` in a `tokenizer.json`.
    pub fn hf_name(self) -> &'static str {
        match self {
            NormStep::Nfc => "NFC",
            NormStep::Nfd => "NFD",
            NormStep::Nfkc => "NFKC",
            NormStep::Nfkd => "NFKD",
            NormStep::Lowercase => "Lowercase",
        }
    }

    fn from_hf_name(name: &str) -> Option<Self> {
        [NormStep::Nfc, NormStep::Nfd, NormStep::Nfkc, NormStep::Nfkd, NormStep::Lowercase]
            .into_iter()
            .find(|s| s.hf_name() == name)
    }

    /// `s` after this step, borrowed when the step leaves it as it is. The quick checks answer
    /// most text without building a copy (`Maybe` falls back to the full normalization).
    fn apply<'a>(self, s: &'a str) -> Cow<'a, str> {
        let quick = |r: IsNormalized| r == IsNormalized::Yes;
        match self {
            NormStep::Nfc if quick(is_nfc_quick(s.chars())) => Cow::Borrowed(s),
            NormStep::Nfd if quick(is_nfd_quick(s.chars())) => Cow::Borrowed(s),
            NormStep::Nfkc if quick(is_nfkc_quick(s.chars())) => Cow::Borrowed(s),
            NormStep::Nfkd if quick(is_nfkd_quick(s.chars())) => Cow::Borrowed(s),
            NormStep::Nfc => Cow::Owned(s.nfc().collect()),
            NormStep::Nfd => Cow::Owned(s.nfd().collect()),
            NormStep::Nfkc => Cow::Owned(s.nfkc().collect()),
            NormStep::Nfkd => Cow::Owned(s.nfkd().collect()),
            NormStep::Lowercase => {
                let unchanged = |c: char| {
                    let mut l = c.to_lowercase();
                    l.next() == Some(c) && l.next().is_none()
                };
                match s.char_indices().find(|&(_, c)| !unchanged(c)) {
                    None => Cow::Borrowed(s),
                    Some((i, _)) => {
                        // For speed: ASCII (most text) is lowered byte by byte, in runs.
                        let mut out = String::with_capacity(s.len() + 8);
                        out.push_str(&s[..i]);
                        let mut rest = &s[i..];
                        while !rest.is_empty() {
                            let ascii = rest.bytes().position(|b| !b.is_ascii()).unwrap_or(rest.len());
                            out.extend(rest[..ascii].bytes().map(|b| char::from(b.to_ascii_lowercase())));
                            rest = &rest[ascii..];
                            if let Some(c) = rest.chars().next() {
                                out.extend(c.to_lowercase());
                                rest = &rest[c.len_utf8()..];
                            }
                        }
                        Cow::Owned(out)
                    }
                }
            }
        }
    }
}

/// Applies `steps` in order; borrowed when no step changes the text.
pub fn normalize<'a>(steps: &[NormStep], s: &'a str) -> Cow<'a, str> {
    let mut cur = Cow::Borrowed(s);
    for &step in steps {
        cur = match cur {
            Cow::Borrowed(b) => step.apply(b),
            Cow::Owned(o) => match step.apply(&o) {
                Cow::Borrowed(_) => Cow::Owned(o),
                Cow::Owned(n) => Cow::Owned(n),
            },
        };
    }
    cur
}

/// The steps of a `tokenizer.json` `normalizer` value (`None`/null: no steps). Anything but the
/// supported types (nested `Sequence`s included) is an error naming the type.
pub fn read_hf_normalizer(n: Option<&Value>) -> std::result::Result<Vec<NormStep>, String> {
    let mut steps = Vec::new();
    if let Some(n) = n {
        push_steps(n, "normalizer", &mut steps)?;
    }
    Ok(steps)
}

fn push_steps(n: &Value, field: &str, steps: &mut Vec<NormStep>) -> std::result::Result<(), String> {
    let ty = n.get("type").and_then(Value::as_str).unwrap_or("(missing)");
    if ty == "Sequence" {
        let items = n
            .get("normalizers")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("{field} is a Sequence without a \"normalizers\" list"))?;
        for (i, item) in items.iter().enumerate() {
            push_steps(item, &format!("{field}.normalizers[{i}]"), steps)?;
        }
        return Ok(());
    }
    match NormStep::from_hf_name(ty) {
        Some(step) => {
            steps.push(step);
            Ok(())
        }
        None => {
            Err(format!("{field} is {ty:?}; only NFC, NFD, NFKC, NFKD, Lowercase and a Sequence of them are supported"))
        }
    }
}

/// The `normalizer` value for a `tokenizer.json`: null, one step, or a Sequence.
pub fn write_hf_normalizer(steps: &[NormStep]) -> String {
    let one = |s: &NormStep| format!("{{\"type\": \"{}\"}}", s.hf_name());
    match steps {
        [] => "null".to_string(),
        [s] => one(s),
        _ => {
            let items: Vec<String> = steps.iter().map(one).collect();
            format!("{{\"type\": \"Sequence\", \"normalizers\": [{}]}}", items.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use NormStep::*;

    #[test]
    fn steps_match_hf_semantics() {
        assert_eq!(normalize(&[Lowercase], "ΣΑΣ"), "σασ");
        assert_eq!(normalize(&[Lowercase], "İ"), "i\u{307}");
        assert_eq!(normalize(&[Lowercase], "ß"), "ß");
        assert_eq!(normalize(&[Nfkc], "ﬁ"), "fi");
        assert_eq!(normalize(&[Nfd], "한"), "\u{1112}\u{1161}\u{11ab}");
        assert_eq!(normalize(&[Nfd, Nfc], "e\u{301}"), "é");
        assert!(matches!(normalize(&[Nfc, Lowercase], "plain text"), Cow::Borrowed(_)));
        assert!(matches!(normalize(&[], "Any"), Cow::Borrowed(_)));
        // The ASCII-run shortcut equals lowering char by char.
        for t in ["ABC déF ÀÉ İX ΣΑΣ\u{0}Z", "é", "aB", "Ǆ1Ǆ", "x\u{10400}Y"] {
            let want: String = t.chars().flat_map(char::to_lowercase).collect();
            assert_eq!(normalize(&[Lowercase], t), want, "{t:?}");
        }
    }

    #[test]
    fn reads_and_writes_hf_json() {
        let v: Value = serde_json::from_str(
            r#"{"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "Sequence", "normalizers": [{"type": "Lowercase"}]}]}"#,
        )
        .unwrap();
        let steps = read_hf_normalizer(Some(&v)).unwrap();
        assert_eq!(steps, [Nfc, Lowercase]);
        let back: Value = serde_json::from_str(&write_hf_normalizer(&steps)).unwrap();
        assert_eq!(read_hf_normalizer(Some(&back)).unwrap(), steps);
        assert_eq!(write_hf_normalizer(&[]), "null");
        let bad: Value = serde_json::from_str(r#"{"type": "Sequence", "normalizers": [{"type": "Strip"}]}"#).unwrap();
        let err = read_hf_normalizer(Some(&bad)).unwrap_err();
        assert!(err.contains("normalizer.normalizers[0]") && err.contains("\"Strip\""), "{err}");
    }
}
