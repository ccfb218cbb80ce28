//! Timing of the clustering half of dedup (band keys, candidate pairs, verification, union-find;
//! index add/query/save/load) on 50k synthetic documents: shingle sets of 100-400 hashes (a
//! 100-400-word document with word 5-grams), 128 permutations, a fifth of the documents
//! near-duplicates (J 0.7-1.0) of another, 2% exact copies. Not a check: prints timings.
//!
//! cargo test --release -p fastllm-minhash --test cluster_bench -- --ignored --nocapture
//! Environment: FASTLLM_BENCH_DOCS (default 50000).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "cluster_util.rs"]
mod util;

use std::time::Instant;

use minhash::dedup::{dedup, Params, Verify};
use minhash::index::Index;
use minhash::lsh::{band_keys, candidate_pairs};
use minhash::signature::MinHasher;
use rayon::prelude::*;
use util::*;

fn best<T>(reps: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut out = None;
    let mut best = f64::MAX;
    for _ in 0..reps {
        let t = Instant::now();
        let r = f();
        best = best.min(t.elapsed().as_secs_f64());
        out = Some(r);
    }
    (best, out.unwrap())
}

#[test]
#[ignore]
fn bench_50k() {
    let n: usize = std::env::var("FASTLLM_BENCH_DOCS").ok().and_then(|s| s.parse().ok()).unwrap_or(50_000);
    let mut rng = Rng(0xbe7c);
    let mut sets: Vec<Vec<u64>> = Vec::with_capacity(n);
    for i in 0..n {
        let r = rng.below(100);
        if i > 0 && r < 20 {
            let src = rng.below(i);
            let m = sets[src].len();
            let k = rng.below(m / 6 + 1); // J >= (m - m/6)/(m + m/6) ~ 0.71
            let v = variant(&mut rng, &sets[src].clone(), k);
            sets.push(v);
        } else if i > 0 && r < 22 {
            let src = rng.below(i);
            sets.push(sets[src].clone());
        } else {
            let m = 100 + rng.below(301);
            sets.push(random_set(&mut rng, m));
        }
    }
    let num_perm = 128;
    let h = MinHasher::new(num_perm, 1).unwrap();
    let (t_sign, signatures) = best(1, || {
        let mut out = vec![0u64; n * num_perm];
        out.par_chunks_exact_mut(num_perm).zip(sets.par_iter()).for_each(|(row, s)| h.sign(s, row));
        out
    });
    let exact: Vec<u128> = sets.iter().map(|s| set_hash(s)).collect();
    let shingles: usize = sets.iter().map(Vec::len).sum();
    eprintln!(
        "{n} docs, {shingles} shingles; signing (for scale) {t_sign:.3} s on {} threads",
        rayon::current_num_threads()
    );

    for threads in [1, 2] {
        let pool = pool(threads);
        for (bands, rows) in [(9, 13), (14, 9), (16, 8), (17, 7), (21, 6)] {
            let (t_keys, keys) = pool.install(|| {
                best(3, || {
                    let mut keys = vec![0u64; n * bands];
                    keys.par_chunks_exact_mut(bands)
                        .zip(signatures.par_chunks_exact(num_perm))
                        .for_each(|(out, sig)| band_keys(sig, bands, rows, out).unwrap());
                    keys
                })
            });
            let skip = vec![false; n];
            let (t_cand, pairs) = pool.install(|| best(3, || candidate_pairs(&keys, n, bands, &skip).unwrap()));
            for verify in [Verify::Exact, Verify::Estimate] {
                let p = Params { threshold: 0.8, bands, rows, verify };
                let (t_all, o) = pool.install(|| best(3, || dedup(&signatures, num_perm, &sets, &exact, &p).unwrap()));
                eprintln!(
                    "threads {threads} (b,r)=({bands:2},{rows:2}) {verify:<8?}: keys {:6.1} ms, candidates {:6.1} ms \
                     ({} pairs), dedup total {:7.1} ms: {} candidates, {} edges, {} clusters, {} exact dups",
                    t_keys * 1e3,
                    t_cand * 1e3,
                    pairs.len(),
                    t_all * 1e3,
                    o.candidates,
                    o.edges.len(),
                    o.clusters.len(),
                    o.exact_duplicates
                );
            }
        }
    }

    for perms in [128, 256, 1024] {
        let (t, br) = best(1, || minhash::lsh::optimal_params(0.8, perms, 0.02, 0.98).unwrap());
        eprintln!("optimal_params(0.8, {perms}, 0.02, 0.98) = {br:?} in {:.1} ms", t * 1e3);
    }

    let p = Params { threshold: 0.8, bands: 17, rows: 7, verify: Verify::Exact };
    let half = n / 2;
    let (t_add, idx) = best(1, || {
        let mut idx = Index::new(num_perm, p, b"{}".to_vec()).unwrap();
        idx.add(&signatures[..half * num_perm], sets[..half].to_vec(), &exact[..half]).unwrap();
        idx
    });
    let (t_query, hits) = best(3, || idx.query(&signatures[half * num_perm..], &sets[half..], &exact[half..]).unwrap());
    let dir = temp_dir("bench");
    let path = dir.join("bench.fmh");
    let (t_save, ()) = best(1, || idx.write_file(&path).unwrap());
    let size = std::fs::metadata(&path).unwrap().len();
    let (t_load, loaded) = best(1, || Index::load(&path).unwrap());
    assert_eq!(loaded.len(), half);
    eprintln!(
        "index (17,7) Exact: add {half} docs {:.1} ms, query {} docs {:.1} ms ({} with hits), save {:.1} ms ({:.1} MB), load {:.1} ms",
        t_add * 1e3,
        n - half,
        t_query * 1e3,
        hits.iter().filter(|h| !h.is_empty()).count(),
        t_save * 1e3,
        size as f64 / 1e6,
        t_load * 1e3
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
