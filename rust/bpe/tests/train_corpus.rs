//! Counting and training on the real corpora under /work/shared/data (skipped when absent).
//!
//! The hand-written pre-tokenizers plus the block/chunk cutting of `count_file` must count
//! exactly what the reference regex (fancy-regex, whole text at once) counts, and the trainer must
//! match a naive recount-everything trainer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use bpe::count::{count_file, count_texts, WordCounts};
use bpe::pretokenize::{GPT2_PATTERN, GPT4_PATTERN};
use bpe::special::SpecialMatcher;
use bpe::testutil::naive_train;
use bpe::train::train_merges;
use bpe::PreTokenizer;

const SHAKESPEARE: &str = "/work/shared/data/tinyshakespeare.txt";
const IMDB: &str = "/work/shared/data/imdb_reviews_train.txt";

fn sorted(c: &WordCounts) -> Vec<(Vec<u8>, u64)> {
    let mut v: Vec<_> = c.iter().map(|(k, v)| (k.to_vec(), *v)).collect();
    v.sort();
    v
}

fn pool(n: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap()
}

/// The same pattern run by the regex engine (a leading empty group keeps it from being
/// recognised as a built-in).
fn regex_pretok(pattern: &str) -> PreTokenizer {
    let p = PreTokenizer::new(&format!("(?:){pattern}")).unwrap();
    assert!(!p.is_hand_written());
    p
}

fn check_file_counts(path: &str) {
    if !Path::new(path).exists() {
        eprintln!("skipping: {path} not found");
        return;
    }
    let text = std::fs::read_to_string(path).unwrap();
    let none = SpecialMatcher::new(&[]).unwrap();
    for (name, pattern) in [("gpt4", GPT4_PATTERN), ("gpt2", GPT2_PATTERN)] {
        let want = sorted(&count_texts(&regex_pretok(pattern), &none, &[&text]).unwrap());
        let fast = PreTokenizer::new(name).unwrap();
        for threads in [1, 2] {
            let got = pool(threads).install(|| {
                let mut counts = WordCounts::default();
                count_file(&fast, &none, Path::new(path), &mut counts, &mut |_| {}).unwrap();
                counts
            });
            assert!(sorted(&got) == want, "{name} on {threads} threads: counts differ from the regex");
        }
    }
}

#[test]
fn count_file_equals_regex_on_shakespeare() {
    check_file_counts(SHAKESPEARE);
}

#[test]
#[ignore = "slow in debug builds; run with --release -- --ignored"]
fn count_file_equals_regex_on_imdb() {
    check_file_counts(IMDB);
}

#[test]
fn merges_match_naive_and_thread_count_on_shakespeare() {
    if !Path::new(SHAKESPEARE).exists() {
        eprintln!("skipping: {SHAKESPEARE} not found");
        return;
    }
    let pretok = PreTokenizer::new("gpt4").unwrap();
    let none = SpecialMatcher::new(&[]).unwrap();
    let mut counts = WordCounts::default();
    count_file(&pretok, &none, Path::new(SHAKESPEARE), &mut counts, &mut |_| {}).unwrap();
    let fast = train_merges(counts.clone(), 120, 1, &mut |_| {});
    assert_eq!(fast, naive_train(&counts, 120, 1, &[]));
    let one = pool(1).install(|| train_merges(counts.clone(), 3000, 1, &mut |_| {}));
    let two = pool(2).install(|| train_merges(counts.clone(), 3000, 1, &mut |_| {}));
    assert_eq!(one.len(), 3000);
    assert_eq!(one, two);
    assert_eq!(one[..120], fast[..]);
}
