//! Shingle sets, exact hashes and exact Jaccard against naive references (split, join, hash,
//! sort, dedup; a HashSet intersection) on random text and sets.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use minhash::normalize::{normalize, NormalizeOptions};
use minhash::shingle::{exact_hash, jaccard, shingle_set, Shingling};
use minhash::signature::splitmix64;
use std::collections::HashSet;
use xxhash_rust::xxh3::xxh3_64;

fn naive_words(text: &str, n: usize) -> Vec<u64> {
    let words: Vec<&str> = text.split_whitespace().collect();
    if n == 0 || words.len() < n {
        return Vec::new();
    }
    let mut out: Vec<u64> = words.windows(n).map(|w| xxh3_64(w.join(" ").as_bytes())).collect();
    out.sort();
    out.dedup();
    out
}

fn naive_chars(text: &str, n: usize) -> Vec<u64> {
    let chars: Vec<char> = text.chars().collect();
    if n == 0 || chars.len() < n {
        return Vec::new();
    }
    let mut out: Vec<u64> = chars.windows(n).map(|w| xxh3_64(w.iter().collect::<String>().as_bytes())).collect();
    out.sort();
    out.dedup();
    out
}

fn set(text: &str, kind: Shingling) -> Vec<u64> {
    let mut out = vec![42]; // must be cleared
    shingle_set(text, kind, &mut out);
    out
}

fn pick<'a>(state: &mut u64, items: &[&'a str]) -> &'a str {
    items[(splitmix64(state) % items.len() as u64) as usize]
}

/// Random text from a small vocabulary (so shingles repeat) with varied separators.
fn random_text(state: &mut u64, separators: &[&str]) -> String {
    let vocab = ["the", "cat", "sat", "on", "a", "mat", "Ünïcode", "日本語", "é", "x", "naïve", "🎉", "don't"];
    let len = splitmix64(state) % 30;
    let mut s = String::new();
    if splitmix64(state) % 4 == 0 {
        s.push_str(pick(state, separators)); // leading separator
    }
    for k in 0..len {
        if k > 0 {
            s.push_str(pick(state, separators));
        }
        s.push_str(pick(state, &vocab));
    }
    if splitmix64(state) % 4 == 0 {
        s.push_str(pick(state, separators)); // trailing separator
    }
    s
}

#[test]
fn word_shingles_match_naive_reference_on_single_spaced_text() {
    let mut state = 1;
    for _ in 0..2000 {
        let text = random_text(&mut state, &[" "]);
        for n in 1..=6 {
            assert_eq!(set(&text, Shingling::Words(n)), naive_words(&text, n), "{text:?} n={n}");
        }
    }
}

#[test]
fn word_shingles_match_naive_reference_on_irregular_whitespace() {
    let separators = [" ", "  ", "\t", "\n", " \u{A0}", "\u{3000}", "\u{2028}", "\u{85}", "\r\n", "\u{0B}"];
    let mut state = 2;
    for _ in 0..2000 {
        let text = random_text(&mut state, &separators);
        for n in 1..=6 {
            let got = set(&text, Shingling::Words(n));
            assert_eq!(got, naive_words(&text, n), "{text:?} n={n}");
            // Collapsing whitespace first gives the same words, hence the same set.
            let collapsed = normalize(&text, &NormalizeOptions { lowercase: false, nfc: false, ..Default::default() });
            assert_eq!(set(&collapsed, Shingling::Words(n)), got, "{text:?} n={n}");
        }
    }
}

#[test]
fn word_shingle_bytes_are_the_words_joined_by_one_space() {
    let want = {
        let mut v = vec![xxh3_64(b"the cat"), xxh3_64(b"cat sat")];
        v.sort();
        v
    };
    assert_eq!(set("the cat sat", Shingling::Words(2)), want);
    assert_eq!(set("the\t cat\u{3000}sat ", Shingling::Words(2)), want);
    // Pinned value: xxh3-64 with seed 0 is a published function; this guards the "stable across
    // versions" promise against an accidental change of seed or byte string.
    assert_eq!(set("", Shingling::Words(1)), Vec::<u64>::new());
    assert_eq!(xxh3_64(b""), 0x2D06_8005_38D3_94C2);
}

#[test]
fn long_texts_match_naive_reference() {
    // Hundreds to thousands of shingles, with many repeats for the dedup.
    let vocab: Vec<String> = (0..300).map(|i| format!("w{i}")).collect();
    let mut state = 6;
    for round in 0..60 {
        let len = 50 + splitmix64(&mut state) % 2000;
        let modulus = if round % 3 == 0 { 5 } else { vocab.len() as u64 }; // few words: many repeats
        let words: Vec<&str> = (0..len).map(|_| vocab[(splitmix64(&mut state) % modulus) as usize].as_str()).collect();
        let text = words.join(if round % 2 == 0 { " " } else { " \u{A0}" });
        for n in [1, 2, 5, 9] {
            assert_eq!(set(&text, Shingling::Words(n)), naive_words(&text, n), "round {round} n={n}");
        }
        assert_eq!(set(&text, Shingling::Chars(4)), naive_chars(&text, 4), "round {round}");
    }
}

#[test]
fn too_short_texts_have_empty_sets() {
    assert!(set("one two three four", Shingling::Words(5)).is_empty());
    assert_eq!(set("one two three four five", Shingling::Words(5)).len(), 1);
    assert!(set("abcd", Shingling::Chars(5)).is_empty());
    assert_eq!(set("abcde", Shingling::Chars(5)), vec![xxh3_64(b"abcde")]);
    assert!(set("", Shingling::Chars(1)).is_empty());
    assert!(set("   ", Shingling::Words(1)).is_empty());
    assert!(set("a b c", Shingling::Words(0)).is_empty());
    assert!(set("abc", Shingling::Chars(0)).is_empty());
    assert!(Shingling::Words(0).validate().is_err());
    assert!(Shingling::Chars(0).validate().is_err());
    assert!(Shingling::Words(1).validate().is_ok());
}

#[test]
fn repeated_shingles_are_deduplicated_and_sorted() {
    let s = set("a b a b a b", Shingling::Words(2));
    assert_eq!(s.len(), 2); // "a b", "b a"
    assert!(s.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn char_shingles_count_unicode_scalar_values() {
    // 'é' is 2 bytes, '日' 3, '🎉' 4: a 3-gram is 3 characters whatever its byte length.
    let text = "héllo 日本🎉";
    let got = set(text, Shingling::Chars(3));
    assert_eq!(got, naive_chars(text, 3));
    assert!(got.contains(&xxh3_64("日本🎉".as_bytes())));
    assert!(got.contains(&xxh3_64("hél".as_bytes())));
    assert_eq!(got.len(), text.chars().count() - 2);
    let mut state = 3;
    for _ in 0..2000 {
        let text = random_text(&mut state, &[" ", "\u{A0}", ""]);
        for n in 1..=7 {
            assert_eq!(set(&text, Shingling::Chars(n)), naive_chars(&text, n), "{text:?} n={n}");
        }
    }
}

#[test]
fn exact_hash_equal_iff_normalized_texts_equal() {
    let o = NormalizeOptions::default();
    let a = exact_hash(&normalize("Caf\u{e9}  Au LAIT\n", &o));
    let b = exact_hash(&normalize("cafe\u{301} au\u{A0}lait", &o));
    assert_eq!(a, b);
    assert_eq!(a, xxhash_rust::xxh3::xxh3_128("café au lait".as_bytes()));
    assert_ne!(a, exact_hash(&normalize("cafe au lait", &o)));
    assert_ne!(exact_hash(""), exact_hash(" "));
}

fn naive_jaccard(a: &[u64], b: &[u64]) -> f64 {
    let (a, b): (HashSet<u64>, HashSet<u64>) = (a.iter().copied().collect(), b.iter().copied().collect());
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    a.intersection(&b).count() as f64 / a.union(&b).count() as f64
}

#[test]
fn jaccard_matches_hashset_reference() {
    let mut state = 4;
    for _ in 0..3000 {
        // Small universe so that sets overlap a lot.
        let draw = |state: &mut u64| {
            let len = splitmix64(state) % 25;
            let mut v: Vec<u64> = (0..len).map(|_| splitmix64(state) % 40).collect();
            v.sort();
            v.dedup();
            v
        };
        let (a, b) = (draw(&mut state), draw(&mut state));
        assert_eq!(jaccard(&a, &b), naive_jaccard(&a, &b), "{a:?} {b:?}");
        assert_eq!(jaccard(&a, &b), jaccard(&b, &a));
    }
    assert_eq!(jaccard(&[], &[]), 0.0);
    assert_eq!(jaccard(&[1, 2], &[]), 0.0);
    assert_eq!(jaccard(&[1, 2, 3], &[1, 2, 3]), 1.0);
    assert_eq!(jaccard(&[1, 2, 3], &[2, 3, 4]), 0.5);
}
