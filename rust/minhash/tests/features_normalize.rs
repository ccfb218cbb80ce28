//! Normalization: each step on hand-picked cases, and `normalize` (branch-free loop for ASCII
//! runs, per-character path for the rest) against a plain multi-pass oracle on random ASCII,
//! random Unicode, and ASCII runs interleaved with non-ASCII characters.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use minhash::normalize::{is_punctuation, normalize, normalize_into, NormalizeOptions, PUNCTUATION};
use minhash::signature::splitmix64;
use unicode_normalization::UnicodeNormalization;

fn opts(lowercase: bool, nfc: bool, collapse_whitespace: bool, strip_punctuation: bool) -> NormalizeOptions {
    NormalizeOptions { lowercase, nfc, collapse_whitespace, strip_punctuation }
}

fn all_options() -> Vec<NormalizeOptions> {
    (0..16u8).map(|m| opts(m & 1 != 0, m & 2 != 0, m & 4 != 0, m & 8 != 0)).collect()
}

/// Obviously-correct reference: one whole-string pass per step, in the documented order.
fn oracle(text: &str, o: &NormalizeOptions) -> String {
    let mut s: String = if o.nfc { text.nfc().collect() } else { text.to_string() };
    if o.lowercase {
        s = s.chars().flat_map(char::to_lowercase).collect();
    }
    if o.strip_punctuation {
        s = s.chars().filter(|&c| !is_punctuation(c)).collect();
    }
    if o.collapse_whitespace {
        s = s.split(char::is_whitespace).filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ");
    }
    s
}

#[test]
fn default_options_are_the_documented_ones() {
    assert_eq!(NormalizeOptions::default(), opts(true, true, true, false));
}

#[test]
fn nfc_composes_combining_marks() {
    let o = NormalizeOptions::default();
    assert_eq!(normalize("e\u{301}", &o), "é");
    assert_eq!(normalize("Cafe\u{301}", &o), normalize("Café", &o));
    assert_eq!(normalize("A\u{30A}", &o), "\u{e5}"); // Å decomposed -> å
    let no_nfc = opts(true, false, true, false);
    assert_ne!(normalize("e\u{301}", &no_nfc), normalize("é", &no_nfc));
}

#[test]
fn lowercase_is_full_unicode() {
    let o = NormalizeOptions::default();
    assert_eq!(normalize("HELLO World", &o), "hello world");
    assert_eq!(normalize("ÀÉÎÕÜ", &o), "àéîõü");
    assert_eq!(normalize("ΣΑΣ ПРИВЕТ ǅ", &o), "σασ привет ǆ"); // context-free: final Σ -> σ
    assert_eq!(normalize("İ", &o), "i\u{307}"); // full mapping: one char to two
    assert_eq!(normalize("Straße", &o), "straße");
    assert_eq!(normalize("HeLLo", &opts(false, true, true, false)), "HeLLo");
}

#[test]
fn punctuation_is_stripped_but_symbols_kept() {
    let strip = opts(true, true, true, true);
    assert_eq!(normalize("Hello, world! (it's) \"ok\"?", &strip), "hello world its ok");
    assert_eq!(normalize("a—b «c» “d” 、e。 ¿f? ‹g› h_i", &strip), "ab c d e f g hi");
    assert_eq!(normalize("$5 + 3 = 8 < 9 > ^ ` | ~ € © °", &strip), "$5 + 3 = 8 < 9 > ^ ` | ~ € © °");
    assert_eq!(normalize("a , b", &strip), "a b"); // removed punctuation does not leave a gap
    assert_eq!(normalize("Hello, world!", &NormalizeOptions::default()), "hello, world!");
}

#[test]
fn punctuation_table_is_sorted_disjoint_and_right_on_samples() {
    for w in PUNCTUATION.windows(2) {
        assert!(w[0].0 <= w[0].1 && w[0].1 < w[1].0, "{w:x?}");
    }
    for c in "!\"#%&'()*,-./:;?@[\\]_{}¡§«¶·»¿;·՚־׀׃׆׳،؛؟٪۔܀।॥෴๏‐‑‒–—―‖‗‘’‚‛“”„‟†‡•‣․‥…‧‰‱′″‴‵‶‷‸‹›※‼‽‾⁁⁂⁃⁅⁆、。〃〈〉《》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〽゠・﹐﹑﹒！＂＃％＆＇（）＊，－．／：；？＠［＼］＿｛｝｡｢｣､･".chars() {
        assert!(is_punctuation(c), "{c:?} U+{:04X} should be punctuation", u32::from(c));
    }
    for c in "$+<=>^`|~aZ09 \t€£¥©®°±×÷¬¦¨¯´¸ˆ˜←→∀∑≠⊂⌘☺✓�\u{301}\u{200B}\u{FEFF}日本éß".chars()
    {
        assert!(!is_punctuation(c), "{c:?} U+{:04X} should not be punctuation", u32::from(c));
    }
    assert_eq!(PUNCTUATION.iter().map(|(lo, hi)| hi - lo + 1).sum::<u32>(), 860);
}

#[test]
fn whitespace_runs_collapse_to_one_space_and_are_trimmed() {
    let o = NormalizeOptions::default();
    let text = "  a\t\tb\n\nc\u{A0}d\u{3000}e\u{2028}f\u{0B}g\u{85}h\r\n\u{2003}i\u{1680}j\u{202F}k\u{205F}l \u{0C}";
    assert_eq!(normalize(text, &o), "a b c d e f g h i j k l");
    // Not White_Space: zero-width space, byte-order mark, the ASCII information separators.
    assert_eq!(normalize("a\u{200B}b\u{FEFF}c\u{1C}d", &o), "a\u{200B}b\u{FEFF}c\u{1C}d");
    assert_eq!(normalize(" \t\n ", &o), "");
    assert_eq!(normalize("", &o), "");
    assert_eq!(normalize(" a  b ", &opts(true, true, false, false)), " a  b ");
}

#[test]
fn normalize_into_reuses_and_clears_the_buffer() {
    let mut buf = String::from("left over");
    normalize_into("New  Text", &NormalizeOptions::default(), &mut buf);
    assert_eq!(buf, "new text");
    normalize_into("Ünïcödé  Text", &NormalizeOptions::default(), &mut buf);
    assert_eq!(buf, "ünïcödé text");
}

fn random_string(state: &mut u64, alphabet: &[char], max_len: u64) -> String {
    let len = splitmix64(state) % (max_len + 1);
    (0..len).map(|_| alphabet[(splitmix64(state) % alphabet.len() as u64) as usize]).collect()
}

fn check_against_oracle(seed: u64, alphabet: &[char], rounds: usize, max_len: u64) {
    let mut state = seed;
    let mut out = String::from("stale");
    for _ in 0..rounds {
        let text = random_string(&mut state, alphabet, max_len);
        for o in all_options() {
            normalize_into(&text, &o, &mut out);
            assert_eq!(out, oracle(&text, &o), "text {text:?} options {o:?}");
        }
    }
}

#[test]
fn matches_the_multi_pass_oracle_on_random_unicode() {
    let alphabet: Vec<char> = "aAzZ09 \t\n\u{0B}\u{A0}\u{3000}\u{2028}\u{85}.,!?-_()$+~\u{301}\u{308}\u{327}eEoOcCnNİΣσςΑДжßẞǅ\u{212A}「」—…«»€日本\u{200B}\u{1C}🎉"
        .chars()
        .collect();
    check_against_oracle(7, &alphabet, 3000, 40);
}

#[test]
fn matches_the_multi_pass_oracle_on_random_ascii() {
    // All 128 code points (controls, VT, the P*/S* boundary), then mostly words and spaces.
    let all: Vec<char> = (0u8..128).map(char::from).collect();
    check_against_oracle(11, &all, 3000, 60);
    let wordy: Vec<char> = "Hello, World!  \t\nabc XYZ.$+'\u{0B}".chars().collect();
    check_against_oracle(12, &wordy, 3000, 60);
}

#[test]
fn matches_the_multi_pass_oracle_on_ascii_runs_between_other_characters() {
    // Mostly ASCII with an occasional non-ASCII whitespace, punctuation, letter or combining mark,
    // so the state (pending space, trimming) crosses between the two loops.
    let mut alphabet: Vec<char> = "ab C  ,.\t".repeat(6).chars().collect();
    alphabet.extend("\u{A0}\u{3000}—«É\u{301}İ".chars());
    check_against_oracle(13, &alphabet, 5000, 50);
}
