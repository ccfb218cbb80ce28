//! Batch `dedup` against a naive O(n²) oracle: for every pair, exact Jaccard over `BTreeSet`s,
//! LSH candidacy by comparing raw band values, verification per mode, BFS components. Also the
//! exact pass, too-short documents, shape errors, and identical outcomes on 1 and 2 threads.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "cluster_util.rs"]
mod util;

use minhash::dedup::{dedup, Outcome, Params, Verify};
use minhash::error::MinHashError;
use util::*;

/// What `dedup` must return, computed the slow way.
fn oracle(c: &Corpus, p: &Params) -> Outcome {
    let n = c.len();
    let mut edges: Vec<(u32, u32, f64)> = Vec::new();
    // Too-short documents (empty sets) are always kept: they skip the exact pass as well.
    let short: Vec<bool> = c.sets.iter().map(|s| s.is_empty()).collect();
    let mut dup = vec![false; n];
    for (i, d) in dup.iter_mut().enumerate() {
        if short[i] {
            continue;
        }
        if let Some(first) = (0..i).find(|&j| !short[j] && c.exact[j] == c.exact[i]) {
            edges.push((first as u32, i as u32, 1.0));
            *d = true;
        }
    }
    let too_short = short.iter().filter(|&&s| s).count();
    let mut candidates = 0;
    for i in 0..n {
        for j in i + 1..n {
            if dup[i] || dup[j] || short[i] || short[j] || !share_band(c.sig(i), c.sig(j), p.bands, p.rows) {
                continue;
            }
            candidates += 1;
            let (exact_j, est) = (naive_jaccard(&c.sets[i], &c.sets[j]), naive_estimate(c.sig(i), c.sig(j)));
            let sim = match p.verify {
                Verify::Exact => (exact_j >= p.threshold).then_some(exact_j),
                Verify::Estimate => (est >= p.threshold).then_some(est),
                Verify::None => Some(est),
            };
            if let Some(s) = sim {
                edges.push((i as u32, j as u32, s));
            }
        }
    }
    edges.sort_by_key(|&(a, b, _)| (a, b));
    let pairs: Vec<(u32, u32)> = edges.iter().map(|&(a, b, _)| (a, b)).collect();
    let labels = components(n, &pairs);
    let clusters = clusters_from_labels(&labels);
    let mut cluster_ids = vec![-1i64; n];
    for (id, members) in clusters.iter().enumerate() {
        for &m in members {
            cluster_ids[m as usize] = id as i64;
        }
    }
    let keep = (0..n).map(|i| labels[i] == i as u32).collect();
    Outcome {
        keep,
        cluster_ids,
        clusters,
        edges,
        exact_duplicates: dup.iter().filter(|&&d| d).count(),
        too_short,
        candidates,
    }
}

fn run(c: &Corpus, p: &Params) -> Outcome {
    dedup(&c.signatures, c.num_perm, &c.sets, &c.exact, p).unwrap()
}

#[test]
fn matches_naive_oracle_in_every_mode() {
    let mut rng = Rng(1);
    let mut nonempty_clusters = 0;
    for trial in 0..12 {
        let num_perm = [16, 32, 64][trial % 3];
        let c = mixed_corpus(&mut rng, 40 + trial * 5, num_perm);
        for &(threshold, bands, rows) in &[(0.5, num_perm / 4, 4), (0.7, num_perm / 2, 2), (0.8, 3, 5)] {
            for verify in [Verify::Exact, Verify::Estimate, Verify::None] {
                let p = Params { threshold, bands, rows, verify };
                let got = run(&c, &p);
                let want = oracle(&c, &p);
                assert_eq!(got, want, "trial {trial} {p:?}");
                nonempty_clusters += usize::from(!got.clusters.is_empty());
                assert_eq!(got.keep.len(), c.len());
            }
        }
    }
    assert!(nonempty_clusters > 50, "the corpora must actually contain clusters");
}

#[test]
fn verify_modes_differ_where_they_should() {
    // Exact verification rejects candidates below the threshold; None accepts them all.
    let mut rng = Rng(7);
    let c = mixed_corpus(&mut rng, 200, 32);
    let p = Params { threshold: 0.8, bands: 16, rows: 2, verify: Verify::Exact };
    let exact = run(&c, &p);
    let none = run(&c, &Params { verify: Verify::None, ..p });
    assert_eq!(exact.candidates, none.candidates);
    assert!(none.edges.len() > exact.edges.len(), "{} vs {}", none.edges.len(), exact.edges.len());
    for &(a, b, s) in &exact.edges {
        let (x, y) = (&c.sets[a as usize], &c.sets[b as usize]);
        // Exact-text duplicates (here: equal sets, even empty ones) have Jaccard 1 by definition.
        let j = if x == y { 1.0 } else { naive_jaccard(x, y) };
        assert!(j >= 0.8 && (j - s).abs() < 1e-12, "edge ({a},{b}) {s} vs {j}");
    }
}

#[test]
fn exact_pass_joins_first_occurrence_and_skips_lsh() {
    let mut rng = Rng(3);
    let a = random_set(&mut rng, 50);
    let b = random_set(&mut rng, 50);
    let sets = vec![a.clone(), b.clone(), a.clone(), Vec::new(), a.clone(), Vec::new(), b];
    let c = corpus(sets, 32);
    let p = Params { threshold: 0.8, bands: 8, rows: 4, verify: Verify::Exact };
    let o = run(&c, &p);
    assert_eq!(o.exact_duplicates, 3); // docs 2, 4 (of 0), 6 (of 1)
    assert_eq!(o.too_short, 2); // docs 3 and 5: equal but too short, so both kept
    assert_eq!(o.edges, vec![(0, 2, 1.0), (0, 4, 1.0), (1, 6, 1.0)]);
    assert_eq!(o.candidates, 0, "exact duplicates take no part in LSH");
    assert_eq!(o.keep, vec![true, true, false, true, false, true, false]);
    assert_eq!(o.clusters, vec![vec![0, 2, 4], vec![1, 6]]);
    assert_eq!(o.cluster_ids, vec![0, 1, 0, -1, 0, -1, 1]);
}

#[test]
fn exact_duplicate_joins_cluster_found_by_lsh() {
    // 0 ~ 1 by LSH (near-duplicate), 2 is an exact copy of 1: all three in one cluster.
    let mut rng = Rng(11);
    let base = random_set(&mut rng, 200);
    let near = variant(&mut rng, &base, 4); // J = 196/204
    let c = corpus(vec![base, near.clone(), near], 128);
    let o = run(&c, &Params { threshold: 0.8, bands: 16, rows: 8, verify: Verify::Exact });
    assert_eq!(o.clusters, vec![vec![0, 1, 2]]);
    assert_eq!(o.keep, vec![true, false, false]);
    assert_eq!(o.candidates, 1);
    assert_eq!((o.edges[0].0, o.edges[0].1), (0, 1));
    assert_eq!((o.edges[1].0, o.edges[1].1, o.edges[1].2), (1, 2, 1.0));
}

#[test]
fn too_short_documents_are_kept_and_never_matched() {
    // Distinct "texts" (different exact hashes) that all have empty shingle sets.
    let sets = vec![Vec::new(); 5];
    let mut c = corpus(sets, 16);
    for (i, e) in c.exact.iter_mut().enumerate() {
        *e = i as u128;
    }
    for verify in [Verify::Exact, Verify::Estimate, Verify::None] {
        let o = run(&c, &Params { threshold: 0.5, bands: 4, rows: 4, verify });
        assert_eq!(o.too_short, 5);
        assert_eq!(o.keep, vec![true; 5]);
        assert!(o.clusters.is_empty() && o.edges.is_empty());
        assert_eq!(o.candidates, 0, "all-MAX signatures would otherwise collide in every band");
    }
}

#[test]
fn omitted_shingles_detect_too_short_from_signature() {
    let mut rng = Rng(5);
    let c = mixed_corpus(&mut rng, 80, 32);
    for verify in [Verify::Estimate, Verify::None] {
        let p = Params { threshold: 0.6, bands: 8, rows: 4, verify };
        let with = run(&c, &p);
        let without = dedup(&c.signatures, c.num_perm, &[], &c.exact, &p).unwrap();
        assert_eq!(with, without);
        assert!(with.too_short > 0);
    }
}

#[test]
fn same_outcome_on_one_and_two_threads() {
    let mut rng = Rng(99);
    let c = mixed_corpus(&mut rng, 3000, 64);
    for verify in [Verify::Exact, Verify::Estimate, Verify::None] {
        let p = Params { threshold: 0.6, bands: 16, rows: 4, verify };
        let one = pool(1).install(|| run(&c, &p));
        let two = pool(2).install(|| run(&c, &p));
        assert!(!one.clusters.is_empty());
        assert_eq!(one, two, "{verify:?}");
    }
}

#[test]
fn bad_shapes_and_params_are_errors() {
    let c = corpus(vec![vec![1, 2, 3], vec![2, 3, 4]], 8);
    let p = Params { threshold: 0.5, bands: 4, rows: 2, verify: Verify::Exact };
    let arg = |r: minhash::Result<Outcome>| matches!(r, Err(MinHashError::InvalidArgument { .. }));
    assert!(arg(dedup(&c.signatures[..15], 8, &c.sets, &c.exact, &p)));
    assert!(arg(dedup(&c.signatures, 8, &c.sets[..1], &c.exact, &p)));
    assert!(arg(dedup(&c.signatures, 8, &[], &c.exact, &p)), "Exact needs the shingle sets");
    assert!(dedup(&c.signatures, 8, &[], &c.exact, &Params { verify: Verify::Estimate, ..p }).is_ok());
    assert!(arg(dedup(&c.signatures, 8, &c.sets, &c.exact, &Params { bands: 5, ..p })));
    assert!(arg(dedup(&c.signatures, 8, &c.sets, &c.exact, &Params { rows: 0, ..p })));
    assert!(arg(dedup(&c.signatures, 8, &c.sets, &c.exact, &Params { threshold: 1.5, ..p })));
    assert!(arg(dedup(&c.signatures, 8, &c.sets, &c.exact, &Params { threshold: f64::NAN, ..p })));
    assert!(arg(dedup(&c.signatures, 0, &c.sets, &c.exact, &p)));
    let empty = dedup(&[], 8, &[], &[], &p).unwrap();
    assert!(empty.keep.is_empty() && empty.clusters.is_empty());
}

#[test]
fn optimal_params_drive_dedup() {
    let p = Params::optimal(0.8, 128, 0.5, 0.5, Verify::Exact).unwrap();
    assert_eq!((p.bands, p.rows), (9, 13));
    assert!(Params::optimal(1.0, 128, 0.5, 0.5, Verify::Exact).is_err());
}
