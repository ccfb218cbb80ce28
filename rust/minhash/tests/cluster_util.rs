//! Helpers for the clustering tests (included with `#[path]` by the other `cluster_*` files):
//! a seeded RNG, synthetic documents as shingle sets with controlled overlaps, and slow,
//! obviously-correct oracles (Jaccard over `BTreeSet`s, band equality on raw signature values,
//! connected components by BFS). Compiled alone it is a test crate with no tests.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::len_without_is_empty)]

use std::collections::{BTreeSet, VecDeque};

use minhash::signature::MinHasher;

/// splitmix64 stream.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// A synthetic corpus: per-document sorted shingle sets and exact hashes, plus signatures.
pub struct Corpus {
    pub sets: Vec<Vec<u64>>,
    pub exact: Vec<u128>,
    pub signatures: Vec<u64>,
    pub num_perm: usize,
}

impl Corpus {
    pub fn len(&self) -> usize {
        self.exact.len()
    }

    pub fn sig(&self, i: usize) -> &[u64] {
        &self.signatures[i * self.num_perm..(i + 1) * self.num_perm]
    }
}

pub fn sorted(mut v: Vec<u64>) -> Vec<u64> {
    v.sort_unstable();
    v.dedup();
    v
}

pub fn random_set(rng: &mut Rng, size: usize) -> Vec<u64> {
    sorted((0..size).map(|_| rng.next_u64()).collect())
}

/// `base` with `k` elements replaced by fresh random ones: Jaccard (m-k)/(m+k) to `base`.
pub fn variant(rng: &mut Rng, base: &[u64], k: usize) -> Vec<u64> {
    let mut v = base.to_vec();
    for _ in 0..k.min(v.len()) {
        let i = rng.below(v.len());
        v.swap_remove(i);
    }
    let mut v: Vec<u64> = v.into_iter().chain((0..k).map(|_| rng.next_u64())).collect();
    v = sorted(v);
    v
}

/// Exact hash stand-in: a hash of the set (equal sets -> equal "text"), unless the caller
/// overrides it.
pub fn set_hash(set: &[u64]) -> u128 {
    let bytes: Vec<u8> = set.iter().flat_map(|v| v.to_le_bytes()).collect();
    xxhash_rust::xxh3::xxh3_128(&bytes)
}

pub fn sign_all(sets: &[Vec<u64>], num_perm: usize, seed: u64) -> Vec<u64> {
    let h = MinHasher::new(num_perm, seed).unwrap();
    let mut out = vec![0u64; sets.len() * num_perm];
    for (set, row) in sets.iter().zip(out.chunks_exact_mut(num_perm)) {
        h.sign(set, row);
    }
    out
}

pub fn corpus(sets: Vec<Vec<u64>>, num_perm: usize) -> Corpus {
    let exact = sets.iter().map(|s| set_hash(s)).collect();
    let signatures = sign_all(&sets, num_perm, 42);
    Corpus { sets, exact, signatures, num_perm }
}

/// A mixed corpus: groups of near-duplicates at similarities spread over [0.4, 1], exact
/// duplicates, too-short (empty) documents, and unrelated documents, shuffled.
pub fn mixed_corpus(rng: &mut Rng, groups: usize, num_perm: usize) -> Corpus {
    let mut sets = Vec::new();
    for _ in 0..groups {
        let m = 20 + rng.below(80);
        let base = random_set(rng, m);
        for _ in 0..rng.below(4) {
            // k up to m/2: Jaccard down to 1/3.
            let k = rng.below(m / 2 + 1);
            sets.push(variant(rng, &base, k));
        }
        if rng.below(4) == 0 {
            sets.push(base.clone()); // exact duplicate of... itself below
        }
        sets.push(base);
    }
    for _ in 0..groups / 4 {
        sets.push(Vec::new());
    }
    for _ in 0..groups / 2 {
        let m = 1 + rng.below(60);
        sets.push(random_set(rng, m));
    }
    for i in (1..sets.len()).rev() {
        let j = rng.below(i + 1);
        sets.swap(i, j);
    }
    corpus(sets, num_perm)
}

pub fn naive_jaccard(a: &[u64], b: &[u64]) -> f64 {
    let (a, b): (BTreeSet<u64>, BTreeSet<u64>) = (a.iter().copied().collect(), b.iter().copied().collect());
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    a.intersection(&b).count() as f64 / a.union(&b).count() as f64
}

pub fn naive_estimate(a: &[u64], b: &[u64]) -> f64 {
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64
}

/// Whether two signatures agree on every value of some band (the raw definition, no keys).
pub fn share_band(a: &[u64], b: &[u64], bands: usize, rows: usize) -> bool {
    (0..bands).any(|j| a[j * rows..(j + 1) * rows] == b[j * rows..(j + 1) * rows])
}

/// Component label of each node: the smallest member of its component (BFS).
pub fn components(n: usize, edges: &[(u32, u32)]) -> Vec<u32> {
    let mut adj = vec![Vec::new(); n];
    for &(a, b) in edges {
        adj[a as usize].push(b as usize);
        adj[b as usize].push(a as usize);
    }
    let mut label = vec![u32::MAX; n];
    for s in 0..n {
        if label[s] != u32::MAX {
            continue;
        }
        label[s] = s as u32;
        let mut q = VecDeque::from([s]);
        while let Some(v) = q.pop_front() {
            for &w in &adj[v] {
                if label[w] == u32::MAX {
                    label[w] = s as u32;
                    q.push_back(w);
                }
            }
        }
    }
    label
}

/// Clusters (size >= 2, members ascending, ordered by first member) from component labels.
pub fn clusters_from_labels(labels: &[u32]) -> Vec<Vec<u32>> {
    let mut by_root: std::collections::BTreeMap<u32, Vec<u32>> = Default::default();
    for (i, &r) in labels.iter().enumerate() {
        by_root.entry(r).or_default().push(i as u32);
    }
    by_root.into_values().filter(|c| c.len() >= 2).collect()
}

pub fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap()
}

pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("fastllm-minhash-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
