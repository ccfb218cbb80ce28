//! Precision and recall of the full pipeline at threshold 0.8 with 128 permutations, on synthetic
//! documents whose exact Jaccard is known: groups of a base set (200 shingles) and variants with
//! `k` shingles replaced (J to the base = (200-k)/(200+k)), signed with the real `MinHasher`.
//!
//! Precision: with `Verify::Exact` every edge must have exact Jaccard >= 0.8 (recomputed here).
//! Recall: of all pairs with exact Jaccard >= 0.8, the fraction that end in the same cluster.
//! Per-pair LSH recall (a direct candidate) is printed too: it is what `P(candidate | J)` predicts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "cluster_util.rs"]
mod util;

use minhash::dedup::{dedup, Outcome, Params, Verify};
use minhash::lsh::candidate_probability;
use util::*;

const M: usize = 200;
const T: f64 = 0.8;

struct Data {
    c: Corpus,
    /// Document -> group.
    group: Vec<usize>,
    /// All pairs with exact J >= T (only within groups: sets of random u64 do not overlap).
    positives: Vec<(usize, usize, f64)>,
}

/// `groups` groups of a base and 1-4 variants; in "near" groups variants have J to the base in
/// [0.8, 1), in "far" groups in [0.6, 0.8) (near misses that must not be linked directly).
fn data(seed: u64, groups: usize) -> Data {
    let mut rng = Rng(seed);
    let (mut sets, mut group) = (Vec::new(), Vec::new());
    let k_max_near = 22; // (200-22)/(200+22) = 0.8018
    for g in 0..groups {
        let base = random_set(&mut rng, M);
        let near = g % 4 != 3;
        for _ in 0..1 + rng.below(4) {
            let k = if near { 1 + rng.below(k_max_near) } else { 23 + rng.below(28) }; // J 0.6..0.8
            sets.push(variant(&mut rng, &base, k));
            group.push(g);
        }
        sets.push(base);
        group.push(g);
    }
    let c = corpus(sets, 128);
    let mut positives = Vec::new();
    let mut start = 0;
    while start < c.len() {
        let end = (start..c.len()).find(|&i| group[i] != group[start]).unwrap_or(c.len());
        for i in start..end {
            for j in i + 1..end {
                let jac = naive_jaccard(&c.sets[i], &c.sets[j]);
                if jac >= T {
                    positives.push((i, j, jac));
                }
            }
        }
        start = end;
    }
    Data { c, group, positives }
}

struct Scores {
    precision_ok: bool,
    cluster_recall: f64,
    pair_recall: f64,
    expected_pair_recall: f64,
}

fn score(d: &Data, o: &Outcome, p: &Params) -> Scores {
    let precision_ok =
        o.edges.iter().all(|&(a, b, _)| naive_jaccard(&d.c.sets[a as usize], &d.c.sets[b as usize]) >= T);
    let same = |i: usize, j: usize| o.cluster_ids[i] >= 0 && o.cluster_ids[i] == o.cluster_ids[j];
    let together = d.positives.iter().filter(|&&(i, j, _)| same(i, j)).count();
    let direct = d.positives.iter().filter(|&&(i, j, _)| share_band(d.c.sig(i), d.c.sig(j), p.bands, p.rows)).count();
    let expected: f64 = d.positives.iter().map(|&(_, _, j)| candidate_probability(j, p.bands, p.rows)).sum();
    let n = d.positives.len() as f64;
    Scores {
        precision_ok,
        cluster_recall: together as f64 / n,
        pair_recall: direct as f64 / n,
        expected_pair_recall: expected / n,
    }
}

fn run(d: &Data, p: &Params) -> Scores {
    let o = dedup(&d.c.signatures, 128, &d.c.sets, &d.c.exact, p).unwrap();
    // No edge may cross groups (their sets are disjoint).
    assert!(o.edges.iter().all(|&(a, b, _)| d.group[a as usize] == d.group[b as usize]));
    score(d, &o, p)
}

#[test]
fn recall_weighted_optimum_reaches_99_percent_recall_with_exact_precision() {
    let d = data(2024, 1200);
    assert!(d.positives.len() > 2000, "{} positive pairs", d.positives.len());
    // Recall-weighted optimum for t = 0.8: (17, 7), P(candidate | 0.8) = 0.982.
    let p = Params::optimal(T, 128, 0.02, 0.98, Verify::Exact).unwrap();
    assert_eq!((p.bands, p.rows), (17, 7));
    let s = run(&d, &p);
    eprintln!(
        "(17,7): pairs {} cluster recall {:.4} pair recall {:.4} (expected {:.4})",
        d.positives.len(),
        s.cluster_recall,
        s.pair_recall,
        s.expected_pair_recall
    );
    assert!(s.precision_ok);
    assert!(s.cluster_recall >= 0.99, "cluster recall {}", s.cluster_recall);
    // The measured per-pair LSH recall agrees with the theory within a few standard errors.
    let se = (s.expected_pair_recall * (1.0 - s.expected_pair_recall) / d.positives.len() as f64).sqrt();
    assert!(
        (s.pair_recall - s.expected_pair_recall).abs() < 5.0 * se + 1e-3,
        "{} vs {}",
        s.pair_recall,
        s.expected_pair_recall
    );
}

#[test]
fn datasketch_default_weights_lose_recall_near_the_threshold() {
    // (0.5, 0.5) gives (9, 13): P(candidate | 0.8) = 0.40. The test documents why the default
    // weights must favour recall when verification is exact.
    let d = data(7, 600);
    let p = Params::optimal(T, 128, 0.5, 0.5, Verify::Exact).unwrap();
    assert_eq!((p.bands, p.rows), (9, 13));
    let s = run(&d, &p);
    eprintln!("(9,13): cluster recall {:.4} pair recall {:.4}", s.cluster_recall, s.pair_recall);
    assert!(s.precision_ok);
    assert!(s.pair_recall < 0.9, "pair recall {}", s.pair_recall);
}

/// Prints the recall of several (b, r) choices (not a check; run with --ignored --nocapture).
#[test]
#[ignore]
fn recall_table() {
    let d = data(31337, 3000);
    eprintln!("positive pairs: {}", d.positives.len());
    for (wfp, wfn) in [(0.5, 0.5), (0.3, 0.7), (0.1, 0.9), (0.05, 0.95), (0.02, 0.98), (0.01, 0.99)] {
        for verify in [Verify::Exact, Verify::Estimate] {
            let p = Params::optimal(T, 128, wfp, wfn, verify).unwrap();
            let o = dedup(&d.c.signatures, 128, &d.c.sets, &d.c.exact, &p).unwrap();
            let s = score(&d, &o, &p);
            let bad = o
                .edges
                .iter()
                .filter(|&&(a, b, _)| naive_jaccard(&d.c.sets[a as usize], &d.c.sets[b as usize]) < T)
                .count();
            eprintln!(
                "w=({wfp},{wfn}) {verify:?} (b,r)=({},{}) P(.8)={:.3} candidates {} edges {} (J<0.8: {bad}) \
                 pair recall {:.4} (expected {:.4}) cluster recall {:.4}",
                p.bands,
                p.rows,
                candidate_probability(T, p.bands, p.rows),
                o.candidates,
                o.edges.len(),
                s.pair_recall,
                s.expected_pair_recall,
                s.cluster_recall
            );
        }
    }
}
