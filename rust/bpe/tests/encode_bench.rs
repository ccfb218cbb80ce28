//! Throughput of `Bpe::encode_piece` (MB/s of piece bytes, pre-tokenization excluded) on the IMDB
//! reviews, for GPT-2 (ranks and merge list) and cl100k, with and without `PieceCache`.
//!
//! cargo test --release -p fastllm-bpe --test encode_bench -- --ignored --nocapture
//!
//! Environment: FASTLLM_BENCH_MB (text prefix to use, default: all), FASTLLM_BENCH_TEXT (file),
//! FASTLLM_VOCAB_DIR, FASTLLM_DUMP_IDS=dir (writes the text and the cl100k / GPT-2 ids as u32 LE
//! for a comparison against tiktoken).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::type_complexity)]

use std::path::PathBuf;
use std::time::Instant;

use bpe::encode::{Bpe, PieceCache};
use bpe::formats::{load_gpt2, load_tiktoken};
use bpe::PreTokenizer;

fn env_path(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(default))
}

/// CPU time of this thread in seconds (Linux `schedstat`; less disturbed by other processes on
/// a shared machine than wall time), or wall time where unavailable.
fn cpu_time() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: f64 = s.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1e9)
}

fn time_it(label: &str, bytes: usize, mut f: impl FnMut() -> usize) -> Vec<u32> {
    let mut best = f64::MAX;
    let mut n = 0;
    for _ in 0..7 {
        let (c, t) = (cpu_time(), Instant::now());
        n = f();
        let secs = match (c, cpu_time()) {
            (Some(a), Some(b)) => b - a,
            _ => t.elapsed().as_secs_f64(),
        };
        best = best.min(secs);
    }
    eprintln!("{label:<44} {:>8.1} MB/s  ({:.3} s, {n} tokens)", bytes as f64 / best / 1e6, best);
    Vec::new()
}

fn encode_all(bpe: &Bpe, pieces: &[&str], out: &mut Vec<u32>) {
    out.clear();
    for p in pieces {
        bpe.encode_piece(p.as_bytes(), out);
    }
}

fn encode_all_cached(bpe: &Bpe, pieces: &[&str], out: &mut Vec<u32>, cap: usize) {
    out.clear();
    let mut cache = PieceCache::new(cap);
    for p in pieces {
        cache.encode(bpe, p.as_bytes(), out);
    }
}

#[test]
#[ignore = "benchmark; run with --release -- --ignored --nocapture"]
fn encode_bench_imdb() {
    let text_path = env_path("FASTLLM_BENCH_TEXT", "/work/shared/data/imdb_reviews_train.txt");
    let dir = env_path("FASTLLM_VOCAB_DIR", "/work/shared/data/vocab");
    let (Ok(text), true) = (std::fs::read_to_string(&text_path), dir.exists()) else {
        eprintln!("SKIPPED: {} or {} missing", text_path.display(), dir.display());
        return;
    };
    let mb: usize = std::env::var("FASTLLM_BENCH_MB").ok().and_then(|s| s.parse().ok()).unwrap_or(usize::MAX >> 20);
    let mut end = text.len().min(mb << 20);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let end = text[..end].rfind('\n').map_or(end, |i| i + 1);
    let text = &text[..end];

    let (gvocab, _) = load_gpt2(&dir.join("gpt2_encoder.json"), &dir.join("gpt2_vocab.bpe")).unwrap();
    let t = Instant::now();
    let g_ranks = Bpe::from_ranks(gvocab.clone()).unwrap();
    eprintln!("build gpt2 ranks: {:.3} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let g_merges_list = g_ranks.merges();
    eprintln!("derive gpt2 merges: {:.3} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let g_merges = Bpe::from_merges(gvocab, &g_merges_list).unwrap();
    eprintln!("build gpt2 merges: {:.3} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let cl = Bpe::from_ranks(load_tiktoken(&dir.join("cl100k_base.tiktoken")).unwrap()).unwrap();
    eprintln!("load+build cl100k ranks: {:.3} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let cl_merges_list = cl.merges();
    let cl_vocab: Vec<Option<Vec<u8>>> =
        (0..cl.len() as u32).map(|id| cl.token_bytes(id).map(<[u8]>::to_vec)).collect();
    let cl_merges = Bpe::from_merges(cl_vocab, &cl_merges_list).unwrap();
    eprintln!("derive+build cl100k merges: {:.3} s", t.elapsed().as_secs_f64());

    let t = Instant::now();
    let gpt2_pieces = PreTokenizer::new("gpt2").unwrap().split(text).unwrap();
    let gpt4_pieces = PreTokenizer::new("gpt4").unwrap().split(text).unwrap();
    eprintln!(
        "text: {:.1} MB, {} gpt2 pieces, {} gpt4 pieces (pre-tokenized in {:.2} s)",
        text.len() as f64 / 1e6,
        gpt2_pieces.len(),
        gpt4_pieces.len(),
        t.elapsed().as_secs_f64()
    );
    let bytes = text.len();
    for (label, bpe, pieces) in [("gpt2", &g_ranks, &gpt2_pieces), ("cl100k", &cl, &gpt4_pieces)] {
        let whole = pieces.iter().filter(|p| p.len() == 1 || bpe.token_id(p.as_bytes()).is_some()).count();
        let long = pieces.iter().filter(|p| p.len() > 32).count();
        eprintln!(
            "{label}: {:.1}% of pieces are tokens, {long} pieces > 32 bytes, mean piece {:.2} bytes",
            100.0 * whole as f64 / pieces.len() as f64,
            bytes as f64 / pieces.len() as f64
        );
    }
    let mut out = Vec::with_capacity(bytes / 3);
    for (label, bpe, pieces) in [
        ("gpt2 ranks / gpt2 pieces", &g_ranks, &gpt2_pieces),
        ("gpt2 merges / gpt2 pieces", &g_merges, &gpt2_pieces),
        ("cl100k ranks / gpt4 pieces", &cl, &gpt4_pieces),
        ("cl100k merges / gpt4 pieces", &cl_merges, &gpt4_pieces),
        ("cl100k ranks / gpt2 pieces", &cl, &gpt2_pieces),
    ] {
        time_it(label, bytes, || {
            encode_all(bpe, pieces, &mut out);
            out.len()
        });
        for cap in [4096usize, 65536] {
            time_it(&format!("{label} + cache {cap}"), bytes, || {
                encode_all_cached(bpe, pieces, &mut out, cap);
                out.len()
            });
        }
    }

    // End to end with the current pre-tokenizer (streaming, one cache), for reference.
    for (label, bpe, pat) in [("gpt2 ranks", &g_ranks, "gpt2"), ("cl100k ranks", &cl, "gpt4")] {
        let pre = PreTokenizer::new(pat).unwrap();
        time_it(&format!("END TO END {label} (pretokenize + encode)"), bytes, || {
            out.clear();
            let mut cache = PieceCache::new(65536);
            pre.for_each_piece(text, &mut |p| cache.encode(bpe, p.as_bytes(), &mut out)).unwrap();
            out.len()
        });
    }

    // Rank model vs the merge-list model with its derived merges: same ids?
    for (label, a, b, pieces) in
        [("gpt2", &g_ranks, &g_merges, &gpt2_pieces), ("cl100k", &cl, &cl_merges, &gpt4_pieces)]
    {
        let mut differ = 0usize;
        let mut example = None;
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for p in pieces.iter() {
            x.clear();
            y.clear();
            a.encode_piece(p.as_bytes(), &mut x);
            b.encode_piece(p.as_bytes(), &mut y);
            if x != y {
                differ += 1;
                example.get_or_insert_with(|| (p.to_string(), x.clone(), y.clone()));
            }
        }
        eprintln!("{label}: ranks vs derived merge list differ on {differ} pieces; first: {example:?}");
    }

    if let Some(dump) = std::env::var_os("FASTLLM_DUMP_IDS") {
        let dump = PathBuf::from(dump);
        std::fs::create_dir_all(&dump).unwrap();
        std::fs::write(dump.join("text.txt"), text).unwrap();
        for (name, bpe, pieces) in [("cl100k", &cl, &gpt4_pieces), ("gpt2", &g_ranks, &gpt2_pieces)] {
            encode_all(bpe, pieces, &mut out);
            let raw: Vec<u8> = out.iter().flat_map(|id| id.to_le_bytes()).collect();
            std::fs::write(dump.join(format!("{name}.u32")), raw).unwrap();
        }
        // tokenizer.json files for a check with HF tokenizers
        use bpe::formats::{write_hf_json, HfBpe};
        use bpe::pretokenize::{GPT2_PATTERN, GPT4_PATTERN};
        for (name, bpe, pattern, specials) in [
            ("gpt2", &g_ranks, GPT2_PATTERN, vec![("<|endoftext|>".to_string(), 50256)]),
            ("cl100k", &cl, GPT4_PATTERN, vec![("<|endoftext|>".to_string(), 100257)]),
        ] {
            let vocab = (0..bpe.len() as u32).map(|id| bpe.token_bytes(id).map(<[u8]>::to_vec)).collect();
            let t = HfBpe {
                pattern: pattern.to_string(),
                vocab,
                merges: bpe.merges(),
                specials,
                normalizer: vec![],
                added_tokens: vec![],
            };
            std::fs::write(dump.join(format!("{name}.json")), write_hf_json(&t).unwrap()).unwrap();
        }
        eprintln!("dumped to {}", dump.display());
    }
}
