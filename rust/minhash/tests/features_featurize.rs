//! `featurize`: equal to the per-document sequential pipeline, identical on 1 and 2 threads,
//! and honest about too-short documents and `keep_shingles = false`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use minhash::features::{featurize, Features};
use minhash::normalize::{normalize, NormalizeOptions};
use minhash::shingle::{exact_hash, jaccard, shingle_set, Shingling};
use minhash::signature::{estimate_jaccard, splitmix64, MinHasher};

fn corpus() -> Vec<String> {
    let vocab =
        ["The", "movie", "was", "GREAT", "bad", "film", "acting", "plot", "é", "Café", "e\u{301}", "!", "and", "but"];
    let mut state = 99;
    let mut docs: Vec<String> = (0..300)
        .map(|_| {
            let len = splitmix64(&mut state) % 60;
            (0..len)
                .map(|_| vocab[(splitmix64(&mut state) % vocab.len() as u64) as usize])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    docs.push(String::new());
    docs.push("too short".into());
    docs.push("  The  MOVIE was\tgreat ".into());
    docs.push("the movie was great".into());
    docs
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap()
}

fn sequential(texts: &[&str], opts: &NormalizeOptions, kind: Shingling, h: &MinHasher) -> Features {
    let mut f = Features { num_perm: h.num_perm(), ..Default::default() };
    for t in texts {
        let norm = normalize(t, opts);
        let mut set = Vec::new();
        shingle_set(&norm, kind, &mut set);
        let mut sig = vec![0; h.num_perm()];
        h.sign(&set, &mut sig);
        f.signatures.extend(sig);
        f.set_sizes.push(set.len());
        f.shingles.push(set);
        f.exact.push(exact_hash(&norm));
    }
    f
}

#[test]
fn featurize_equals_sequential_pipeline_on_one_and_two_threads() {
    let docs = corpus();
    let texts: Vec<&str> = docs.iter().map(String::as_str).collect();
    let h = MinHasher::new(64, 3).unwrap();
    for (opts, kind) in [
        (NormalizeOptions::default(), Shingling::Words(3)),
        (NormalizeOptions { strip_punctuation: true, ..Default::default() }, Shingling::Chars(5)),
    ] {
        let want = sequential(&texts, &opts, kind, &h);
        let one = pool(1).install(|| featurize(&texts, &opts, kind, &h, true).unwrap());
        let two = pool(2).install(|| featurize(&texts, &opts, kind, &h, true).unwrap());
        assert_eq!(one, want);
        assert_eq!(two, want);
        assert_eq!(two.len(), texts.len());
    }
}

#[test]
fn too_short_documents_are_reported_and_sign_to_max() {
    let texts = ["", "two words", "one two three four five", "   "];
    let h = MinHasher::new(16, 0).unwrap();
    let f = featurize(&texts, &NormalizeOptions::default(), Shingling::Words(5), &h, true).unwrap();
    assert_eq!(f.set_sizes, vec![0, 0, 1, 0]);
    assert!(f.is_too_short(0) && f.is_too_short(1) && !f.is_too_short(2) && f.is_too_short(3));
    assert!(!f.is_too_short(4)); // past the end
    assert_eq!(f.signature(1), Some(&[u64::MAX; 16][..]));
    assert_ne!(f.signature(2), Some(&[u64::MAX; 16][..]));
    assert_eq!(f.signature(4), None);
    assert_eq!(f.exact[0], f.exact[3]); // both normalize to ""
}

#[test]
fn dropping_shingles_keeps_everything_else() {
    let docs = corpus();
    let texts: Vec<&str> = docs.iter().map(String::as_str).collect();
    let h = MinHasher::new(32, 8).unwrap();
    let opts = NormalizeOptions::default();
    let kept = featurize(&texts, &opts, Shingling::Words(2), &h, true).unwrap();
    let dropped = featurize(&texts, &opts, Shingling::Words(2), &h, false).unwrap();
    assert!(dropped.shingles.is_empty());
    assert_eq!(dropped.signatures, kept.signatures);
    assert_eq!(dropped.exact, kept.exact);
    assert_eq!(dropped.set_sizes, kept.set_sizes);
    assert_eq!(kept.shingles.iter().map(Vec::len).collect::<Vec<_>>(), kept.set_sizes);
}

#[test]
fn normalization_variants_are_exact_duplicates_and_estimates_track_jaccard() {
    let docs = corpus();
    let texts: Vec<&str> = docs.iter().map(String::as_str).collect();
    let n = texts.len();
    let h = MinHasher::new(128, 1).unwrap();
    let f = featurize(&texts, &NormalizeOptions::default(), Shingling::Words(2), &h, true).unwrap();
    assert_eq!(f.exact[n - 1], f.exact[n - 2]);
    assert_eq!(f.signature(n - 1), f.signature(n - 2));
    // Over many pairs, the estimate is within 5 standard deviations of the exact Jaccard.
    for i in 0..60 {
        for j in i + 1..60 {
            let (Some(a), Some(b)) = (f.signature(i), f.signature(j)) else { panic!("missing row") };
            if f.is_too_short(i) || f.is_too_short(j) {
                continue;
            }
            let truth = jaccard(&f.shingles[i], &f.shingles[j]);
            let sd = (truth * (1.0 - truth) / 128.0).sqrt().max(0.01);
            assert!((estimate_jaccard(a, b) - truth).abs() < 5.0 * sd, "{i} {j}: {truth}");
        }
    }
}

#[test]
fn empty_input_gives_empty_features() {
    let h = MinHasher::new(4, 0).unwrap();
    let f = featurize(&[], &NormalizeOptions::default(), Shingling::Words(5), &h, true).unwrap();
    assert!(f.is_empty());
    assert!(f.signatures.is_empty());
    assert_eq!(f.num_perm, 4);
}
