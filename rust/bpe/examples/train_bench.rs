//! Training benchmark: `cargo run --release -p fastllm-bpe --example train_bench -- [FILE] [THREADS] [VOCAB...]`
//!
//! Counts the pre-tokens of FILE (default: the IMDB corpus under /work/shared/data) with the
//! GPT-4 pre-tokenizer on a pool of THREADS workers (default 2), then learns `vocab - 256` merges
//! for each VOCAB (default 8192 32768). Prints seconds for counting and for each merge run, and the
//! peak resident set size (VmHWM). Run one process per configuration for a clean peak RSS.

use std::path::PathBuf;
use std::time::Instant;

use bpe::count::{count_file, WordCounts};
use bpe::special::SpecialMatcher;
use bpe::train::train_merges;
use bpe::PreTokenizer;

fn vm_hwm_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = PathBuf::from(args.next().unwrap_or_else(|| "/work/shared/data/imdb_reviews_train.txt".into()));
    if !path.exists() {
        eprintln!("skipping: {} not found", path.display());
        return Ok(());
    }
    let threads: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(2);
    let mut vocabs: Vec<usize> = args.map(|s| s.parse()).collect::<Result<_, _>>()?;
    if vocabs.is_empty() {
        vocabs = vec![8192, 32768];
    }
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build()?;
    let pretok = PreTokenizer::new("gpt4")?;
    let specials = SpecialMatcher::new(&[])?;

    pool.install(|| -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let t = Instant::now();
        let mut counts = WordCounts::default();
        count_file(&pretok, &specials, &path, &mut counts, &mut |_| {})?;
        let count_s = t.elapsed().as_secs_f64();
        let total: u64 = counts.values().sum();
        println!(
            "threads={threads} count: {count_s:.3}s ({} unique words, {total} pieces), peak RSS so far {:.1} MB",
            counts.len(),
            vm_hwm_mb()
        );
        if std::env::var_os("TRAIN_BENCH_SPLIT").is_some() {
            // Where counting time goes: pre-tokenizing alone (one thread, no hashing) vs counting.
            let text = std::fs::read_to_string(&path)?;
            let t = Instant::now();
            let mut pieces = 0usize;
            pretok.for_each_piece_fast(&text, |_| pieces += 1)?;
            let split_s = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let c = bpe::count::count_texts(&pretok, &specials, &[&text])?;
            let texts_s = t.elapsed().as_secs_f64();
            println!(
                "threads={threads} pre-tokenize only (1 thread): {split_s:.3}s ({pieces} pieces); \
                 count_texts in memory: {texts_s:.3}s ({} unique)",
                c.len()
            );
        }
        let n = vocabs.len();
        for (i, &vocab) in vocabs.iter().enumerate() {
            let words = if i + 1 == n { std::mem::take(&mut counts) } else { counts.clone() };
            let t = Instant::now();
            let merges = train_merges(words, vocab.saturating_sub(256), 1, &mut |_| {});
            let merge_s = t.elapsed().as_secs_f64();
            if let Ok(dir) = std::env::var("TRAIN_BENCH_DUMP") {
                // One merge per line: hex bytes of the left and right token.
                let mut bytes: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
                let mut out = String::new();
                for &(l, r) in &merges {
                    let (a, b) = (bytes[l as usize].clone(), bytes[r as usize].clone());
                    let hex = |v: &[u8]| v.iter().map(|x| format!("{x:02x}")).collect::<String>();
                    out.push_str(&format!("{} {}\n", hex(&a), hex(&b)));
                    bytes.push([a, b].concat());
                }
                std::fs::write(format!("{dir}/merges_{vocab}.txt"), out)?;
            }
            println!(
                "threads={threads} vocab={vocab}: merges {merge_s:.3}s ({} merges), count+merge {:.3}s, peak RSS {:.1} MB",
                merges.len(),
                count_s + merge_s,
                vm_hwm_mb()
            );
        }
        Ok(())
    })
    .map_err(|e| e as Box<dyn std::error::Error>)
}
