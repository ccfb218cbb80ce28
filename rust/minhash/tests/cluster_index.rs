//! `Index`: queries against a brute-force oracle, agreement with batch `dedup`, ids across
//! batches, save/load round trips, and damaged files (flipped bytes, truncation, bad version,
//! trailing bytes) giving `Format` errors and missing files `Io` errors.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "cluster_util.rs"]
mod util;

use std::path::Path;

use minhash::dedup::{dedup, Params, Verify};
use minhash::error::MinHashError;
use minhash::index::Index;
use util::*;

const MODES: [Verify; 3] = [Verify::Exact, Verify::Estimate, Verify::None];

fn params(verify: Verify) -> Params {
    Params { threshold: 0.6, bands: 8, rows: 4, verify }
}

/// Adds `c` to a fresh index in batches of uneven sizes.
fn build(c: &Corpus, p: Params, settings: &[u8]) -> Index {
    let mut idx = Index::new(c.num_perm, p, settings.to_vec()).unwrap();
    let k = c.num_perm;
    let mut start = 0usize;
    for (b, size) in [1usize, 7, 50, 3, usize::MAX].into_iter().enumerate() {
        let end = start.saturating_add(size).min(c.len());
        let sets = if p.verify == Verify::Exact || b % 2 == 0 { c.sets[start..end].to_vec() } else { Vec::new() };
        let ids = idx.add(&c.signatures[start * k..end * k], sets, &c.exact[start..end]).unwrap();
        assert_eq!(ids, (start as u32..end as u32).collect::<Vec<_>>());
        start = end;
    }
    assert_eq!(idx.len(), c.len());
    idx
}

fn query_all(idx: &Index, c: &Corpus) -> Vec<Vec<u32>> {
    idx.query(&c.signatures, &c.sets, &c.exact).unwrap()
}

/// Brute force: indexed docs that match `q` exactly, or share a band (raw values) and verify.
fn oracle(indexed: &Corpus, q: &Corpus, p: &Params) -> Vec<Vec<u32>> {
    (0..q.len())
        .map(|i| {
            (0..indexed.len())
                .filter(|&j| {
                    let (a, b) = (&q.sets[i], &indexed.sets[j]);
                    if a.is_empty() || b.is_empty() {
                        return false; // too short: never matched, not even exactly
                    }
                    if q.exact[i] == indexed.exact[j] {
                        return true;
                    }
                    if !share_band(q.sig(i), indexed.sig(j), p.bands, p.rows) {
                        return false;
                    }
                    match p.verify {
                        Verify::Exact => naive_jaccard(a, b) >= p.threshold,
                        Verify::Estimate => naive_estimate(q.sig(i), indexed.sig(j)) >= p.threshold,
                        Verify::None => true,
                    }
                })
                .map(|j| j as u32)
                .collect()
        })
        .collect()
}

#[test]
fn query_matches_brute_force() {
    let mut rng = Rng(17);
    let indexed = mixed_corpus(&mut rng, 150, 32);
    // Queries: some indexed docs, fresh variants of them, new docs, empty docs.
    let mut qsets: Vec<Vec<u64>> = Vec::new();
    for i in 0..indexed.len() {
        match i % 4 {
            0 => qsets.push(indexed.sets[i].clone()),
            1 => {
                let k = rng.below(10);
                qsets.push(variant(&mut rng, &indexed.sets[i], k))
            }
            2 => qsets.push(random_set(&mut rng, 30)),
            _ => {}
        }
    }
    qsets.push(Vec::new());
    let q = corpus(qsets, 32);
    for verify in MODES {
        let p = params(verify);
        let idx = build(&indexed, p, b"");
        let got = idx.query(&q.signatures, &q.sets, &q.exact).unwrap();
        assert_eq!(got, oracle(&indexed, &q, &p), "{verify:?}");
        assert!(got.iter().filter(|r| !r.is_empty()).count() > q.len() / 4);
        if verify != Verify::Exact {
            assert_eq!(idx.query(&q.signatures, &[], &q.exact).unwrap(), got, "sets omitted");
        }
    }
}

#[test]
fn index_agrees_with_batch_dedup() {
    let mut rng = Rng(23);
    for trial in 0..4 {
        let c = mixed_corpus(&mut rng, 200, 32);
        for verify in MODES {
            let p = params(verify);
            let batch = dedup(&c.signatures, c.num_perm, &c.sets, &c.exact, &p).unwrap();
            let idx = build(&c, p, b"");
            let answers = query_all(&idx, &c);
            // Every doc finds itself (exact match) and only docs the batch clusters with it.
            let mut pairs = Vec::new();
            for (i, hits) in answers.iter().enumerate() {
                if c.sets[i].is_empty() {
                    assert!(hits.is_empty(), "too-short doc {i} matches nothing");
                    continue;
                }
                assert!(hits.contains(&(i as u32)), "doc {i} must match itself");
                pairs.extend(hits.iter().filter(|&&j| (j as usize) < i).map(|&j| (j, i as u32)));
            }
            let labels = components(c.len(), &pairs);
            assert_eq!(clusters_from_labels(&labels), batch.clusters, "trial {trial} {verify:?}");
            // LSH edges between documents that are not exact duplicates are the same pairs.
            let dup: Vec<bool> = (0..c.len()).map(|i| (0..i).any(|j| c.exact[j] == c.exact[i])).collect();
            let lsh_pairs = |ps: Vec<(u32, u32)>| -> Vec<(u32, u32)> {
                ps.into_iter()
                    .filter(|&(a, b)| {
                        !dup[a as usize] && !dup[b as usize] && c.exact[a as usize] != c.exact[b as usize]
                    })
                    .collect()
            };
            let mut from_index = lsh_pairs(pairs.clone());
            from_index.sort_unstable();
            let from_batch = lsh_pairs(batch.edges.iter().map(|&(a, b, _)| (a, b)).collect());
            assert_eq!(from_index, from_batch, "trial {trial} {verify:?}");
        }
    }
}

#[test]
fn query_is_the_same_on_one_and_two_threads() {
    let mut rng = Rng(29);
    let c = mixed_corpus(&mut rng, 1000, 64);
    let idx = build(&c, params(Verify::Exact), b"");
    let one = pool(1).install(|| query_all(&idx, &c));
    let two = pool(2).install(|| query_all(&idx, &c));
    assert_eq!(one, two);
}

#[test]
fn save_load_round_trip() {
    let dir = temp_dir("roundtrip");
    let mut rng = Rng(31);
    let c = mixed_corpus(&mut rng, 120, 32);
    let q = mixed_corpus(&mut rng, 60, 32);
    for verify in MODES {
        let p = params(verify);
        let settings = br#"{"seed":42,"shingle":"words:5"}"#;
        let idx = build(&c, p, settings);
        let path = dir.join(format!("idx-{verify:?}.fmh"));
        idx.write_file(&path).unwrap();
        let loaded = Index::load(&path).unwrap();
        assert_eq!(loaded.len(), idx.len());
        assert_eq!(loaded.settings(), settings);
        assert_eq!(loaded.params(), idx.params());
        assert_eq!(loaded.num_perm(), 32);
        assert_eq!(query_all(&loaded, &c), query_all(&idx, &c));
        let (qs, qe) = (&q.signatures, &q.exact);
        assert_eq!(loaded.query(qs, &q.sets, qe).unwrap(), idx.query(qs, &q.sets, qe).unwrap());
        // Saving the loaded index reproduces the file byte for byte.
        let again = dir.join("again.fmh");
        loaded.write_file(&again).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), std::fs::read(&again).unwrap());
        // A loaded index keeps growing with continuing ids.
        let mut grown = loaded;
        let ids = grown.add(&q.signatures[..32], q.sets[..1].to_vec(), &q.exact[..1]).unwrap();
        assert_eq!(ids, vec![c.len() as u32]);
    }
    // It writes the path it is given and nothing else.
    let mut names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["again.fmh", "idx-Estimate.fmh", "idx-Exact.fmh", "idx-None.fmh"]);
    // Overwriting an existing file works (truncated and rewritten).
    let empty = Index::new(16, Params { threshold: 0.5, bands: 4, rows: 4, verify: Verify::Estimate }, vec![]).unwrap();
    let path = dir.join("idx-Exact.fmh");
    empty.write_file(&path).unwrap();
    assert_eq!(Index::load(&path).unwrap().len(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn expect_format(path: &Path, what: &str) -> String {
    match Index::load(path) {
        Err(MinHashError::Format { path: p, reason }) => {
            assert_eq!(p, path.display().to_string(), "{what}");
            reason
        }
        other => panic!("{what}: expected a Format error, got {other:?}"),
    }
}

/// Rewrites the trailing checksum so a deliberate edit reaches the parser.
fn reseal(bytes: &mut [u8]) {
    let body = bytes.len() - 8;
    let sum = xxhash_rust::xxh3::xxh3_64(&bytes[..body]);
    bytes[body..].copy_from_slice(&sum.to_le_bytes());
}

#[test]
fn damaged_files_are_format_errors() {
    let dir = temp_dir("damaged");
    let mut rng = Rng(37);
    let c = mixed_corpus(&mut rng, 40, 16);
    let idx = build(&c, Params { threshold: 0.6, bands: 4, rows: 4, verify: Verify::Exact }, b"settings");
    let good = dir.join("good.fmh");
    idx.write_file(&good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let bad = dir.join("bad.fmh");

    // Every single flipped byte (sampled) is caught.
    let step = (bytes.len() / 200).max(1);
    for pos in (0..bytes.len()).step_by(step).chain([0, 8, 12, 44, bytes.len() - 1]) {
        let mut b = bytes.clone();
        b[pos] ^= 0x40;
        std::fs::write(&bad, &b).unwrap();
        let reason = expect_format(&bad, &format!("flip at {pos}"));
        assert!(reason.contains("checksum") || reason.contains("magic"), "flip at {pos}: {reason}");
    }
    // Truncations.
    for len in [0, 7, 20, 60, bytes.len() / 2, bytes.len() - 8, bytes.len() - 1] {
        std::fs::write(&bad, &bytes[..len]).unwrap();
        expect_format(&bad, &format!("truncated to {len}"));
    }
    // Edits with a valid checksum reach the parser's own checks.
    let mut b = bytes.clone();
    b[8] = 2; // version
    reseal(&mut b);
    std::fs::write(&bad, &b).unwrap();
    assert!(expect_format(&bad, "version").contains("version 2"));
    let mut b = bytes.clone();
    b[44] = 9; // verify mode
    reseal(&mut b);
    std::fs::write(&bad, &b).unwrap();
    assert!(expect_format(&bad, "verify").contains("verify mode"));
    let mut b = bytes.clone();
    b[20] = 200; // bands = 200 > num_perm
    reseal(&mut b);
    std::fs::write(&bad, &b).unwrap();
    assert!(expect_format(&bad, "bands").contains("bad parameters"));
    let mut b = bytes.clone();
    b.splice(b.len() - 8..b.len() - 8, [0u8; 5]); // trailing bytes before the checksum
    reseal(&mut b);
    std::fs::write(&bad, &b).unwrap();
    assert!(expect_format(&bad, "trailing").contains("unexpected bytes"));
    let mut b = bytes.clone();
    let n_at = 45 + 8 + 8; // after settings_len + 8 settings bytes
    b[n_at..n_at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    reseal(&mut b);
    std::fs::write(&bad, &b).unwrap();
    assert!(expect_format(&bad, "count").contains("document count"));

    // The good file still loads; a missing one is an Io error naming the path.
    assert_eq!(Index::load(&good).unwrap().len(), c.len());
    let missing = dir.join("missing.fmh");
    match Index::load(&missing) {
        Err(MinHashError::Io { path, source }) => {
            assert_eq!(path, missing.display().to_string());
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Io, got {other:?}"),
    }
    // Saving into a missing directory is an Io error too.
    assert!(matches!(idx.write_file(&dir.join("no/such/dir.fmh")), Err(MinHashError::Io { .. })));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_arguments_are_errors() {
    let p = Params { threshold: 0.5, bands: 4, rows: 4, verify: Verify::Exact };
    assert!(Index::new(15, p, vec![]).is_err());
    assert!(Index::new(0, p, vec![]).is_err());
    let mut idx = Index::new(16, p, vec![]).unwrap();
    let arg = |r: &minhash::Result<Vec<u32>>| matches!(r, Err(MinHashError::InvalidArgument { .. }));
    assert!(arg(&idx.add(&[0; 15], vec![vec![1]], &[1])));
    assert!(arg(&idx.add(&[0; 16], vec![], &[1])), "Exact needs shingle sets");
    assert!(idx.query(&[0; 16], &[], &[1]).is_err());
    assert!(idx.is_empty());
    assert_eq!(idx.add(&[0; 16], vec![vec![1]], &[1]).unwrap(), vec![0]);
    assert_eq!(idx.add(&[], vec![], &[]).unwrap(), Vec::<u32>::new());
}
