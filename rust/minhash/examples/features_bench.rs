//! Benchmark of `featurize` (normalize -> shingle -> sign -> exact hash) on the dedup workload:
//! 50,000 documents of 100-200 words, word 5-grams, 128 permutations, on 1 and 2 threads, plus a
//! per-stage split on one thread to show where the time goes.
//!
//! Documents are words drawn with a fixed seed from the running text of
//! shared/data/imdb_reviews_train.txt (so word frequencies, case and punctuation are realistic),
//! or from synthetic words if that file is absent. Every tenth document is a near-duplicate of
//! the one before it (a few words replaced), as in a dedup corpus.
//!
//! Run: `cargo run --release -p fastllm-minhash --example features_bench [-- DOCS [PATH]]`
//!
//! Performance notes (2-core Xeon, baseline x86-64 build, best of 7, 42 MB):
//!   featurize 1 thread 0.72 s (70k docs/s), 2 threads 0.36 s (140k docs/s);
//!   stages on 1 thread: normalize 0.06 s, + shingle 0.24 s, + sign 0.69 s, + exact hash 0.69 s.
//!   Built with `-C target-cpu=native` (AVX-512: vector 64-bit multiply and min) sign drops from
//!   0.45 s to 0.19 s and 2 threads take 0.23 s; `x86-64-v3` (AVX2) gains nothing.

use minhash::features::featurize;
use minhash::normalize::{normalize_into, NormalizeOptions};
use minhash::shingle::{exact_hash, shingle_set, Shingling};
use minhash::signature::{splitmix64, MinHasher};
use std::time::{Duration, Instant};

const DEFAULT_PATH: &str = "/work/shared/data/imdb_reviews_train.txt";

fn words_source(path: &str) -> Vec<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => text.split_whitespace().map(str::to_string).collect(),
        Err(_) => {
            eprintln!("{path} not readable: using synthetic words");
            let mut s = 1;
            (0..200_000)
                .map(|_| {
                    let len = 2 + splitmix64(&mut s) % 8;
                    (0..len).map(|_| char::from(b'a' + (splitmix64(&mut s) % 26) as u8)).collect()
                })
                .collect()
        }
    }
}

fn make_docs(n: usize, words: &[String]) -> Vec<String> {
    let mut s = 42;
    let mut docs: Vec<String> = Vec::with_capacity(n);
    let pick = |s: &mut u64| words[(splitmix64(s) % words.len() as u64) as usize].as_str();
    for i in 0..n {
        if i % 10 == 9 {
            // Near-duplicate of the previous document: replace ~3 words.
            let mut w: Vec<&str> = docs[i - 1].split(' ').collect();
            for _ in 0..3 {
                let k = (splitmix64(&mut s) % w.len() as u64) as usize;
                w[k] = pick(&mut s);
            }
            docs.push(w.join(" "));
        } else {
            let len = 100 + splitmix64(&mut s) % 101;
            docs.push((0..len).map(|_| pick(&mut s)).collect::<Vec<_>>().join(" "));
        }
    }
    docs
}

/// CPU time of all threads of this process, from /proc (ns resolution; None off Linux). On a
/// shared machine wall time includes waiting for a core, CPU time does not.
fn process_cpu() -> Option<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(total))
}

/// (wall, CPU) of the run with the smallest wall time.
fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, Duration) {
    (0..runs)
        .map(|_| {
            let (t, c) = (Instant::now(), process_cpu());
            std::hint::black_box(f());
            let cpu = process_cpu().zip(c).map(|(b, a)| b.saturating_sub(a)).unwrap_or_default();
            (t.elapsed(), cpu)
        })
        .min()
        .unwrap_or_default()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(50_000);
    let path = args.get(2).map_or(DEFAULT_PATH, String::as_str);
    let words = words_source(path);
    let docs = make_docs(n, &words);
    let texts: Vec<&str> = docs.iter().map(String::as_str).collect();
    let bytes: usize = docs.iter().map(String::len).sum();
    let opts = NormalizeOptions::default();
    let kind = Shingling::Words(5);
    let Ok(hasher) = MinHasher::new(128, 1) else { return };
    println!("{n} docs, {:.1} MB, Words(5), 128 perms", bytes as f64 / 1e6);

    // Per-stage split on the calling thread: each line adds one stage to the previous one.
    let mut norm = String::new();
    let mut set = Vec::new();
    let mut sig = vec![0u64; hasher.num_perm()];
    let stages: [(&str, u8); 4] = [("normalize", 0), ("+ shingle", 1), ("+ sign", 2), ("+ exact hash", 3)];
    for (name, upto) in stages {
        let (t, cpu) = best_of(5, || {
            let mut acc = 0u64;
            for text in &texts {
                normalize_into(text, &opts, &mut norm);
                acc = acc.wrapping_add(norm.len() as u64);
                if upto >= 1 {
                    shingle_set(&norm, kind, &mut set);
                    acc = acc.wrapping_add(set.len() as u64);
                }
                if upto >= 2 {
                    hasher.sign(&set, &mut sig);
                    acc = acc.wrapping_add(sig[0]);
                }
                if upto >= 3 {
                    acc = acc.wrapping_add(exact_hash(&norm) as u64);
                }
            }
            acc
        });
        println!("  1 thread, {name:<14} {:>7.3} s wall, {:.3} s CPU", t.as_secs_f64(), cpu.as_secs_f64());
    }

    for threads in [1, 2] {
        let Ok(pool) = rayon::ThreadPoolBuilder::new().num_threads(threads).build() else { return };
        for keep in [false, true] {
            let (t, cpu) = best_of(7, || pool.install(|| featurize(&texts, &opts, kind, &hasher, keep).ok()));
            println!(
                "featurize {threads} thread(s), keep_shingles={keep:<5}: {:.3} s wall ({:.3} s CPU), {:>7.0} docs/s, {:.0} MB/s",
                t.as_secs_f64(),
                cpu.as_secs_f64(),
                n as f64 / t.as_secs_f64(),
                bytes as f64 / 1e6 / t.as_secs_f64()
            );
        }
    }
}
