//! `Bpe` with the real GPT-2 and cl100k vocabularies (skipped, with a printed reason, when
//! `/work/shared/data/vocab/` or `$FASTLLM_VOCAB_DIR` is absent). Expected ids come from tiktoken
//! 0.14 (`encode_ordinary` of each piece, pieces split by its regex).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::type_complexity)]

use std::path::PathBuf;

use bpe::encode::{Bpe, PieceCache};
use bpe::formats::{load_gpt2, load_tiktoken, unicode_to_bytes};

fn vocab_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("FASTLLM_VOCAB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/shared/data/vocab"));
    if dir.join("cl100k_base.tiktoken").exists() && dir.join("gpt2_encoder.json").exists() {
        Some(dir)
    } else {
        eprintln!("SKIPPED: real vocabularies not found in {} (set FASTLLM_VOCAB_DIR)", dir.display());
        None
    }
}

fn cl100k(dir: &std::path::Path) -> Bpe {
    Bpe::from_ranks(load_tiktoken(&dir.join("cl100k_base.tiktoken")).unwrap()).unwrap()
}

/// GPT-2's merges from vocab.bpe as id pairs.
fn gpt2_file_merges(dir: &std::path::Path, bpe: &Bpe) -> Vec<(u32, u32)> {
    let text = std::fs::read_to_string(dir.join("gpt2_vocab.bpe")).unwrap();
    text.lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (a, b) = l.split_once(' ').unwrap();
            let id = |s: &str| bpe.token_id(&unicode_to_bytes(s).unwrap()).unwrap();
            (id(a), id(b))
        })
        .collect()
}

fn check(bpe: &Bpe, cases: &[(&str, &[u32])]) {
    let mut cache = PieceCache::new(1000);
    for (piece, want) in cases {
        let mut out = Vec::new();
        bpe.encode_piece(piece.as_bytes(), &mut out);
        assert_eq!(&out, want, "piece {piece:?}");
        let mut out = Vec::new();
        cache.encode(bpe, piece.as_bytes(), &mut out);
        assert_eq!(&out, want, "piece {piece:?} (cached)");
    }
}

const CL100K_CASES: &[(&str, &[u32])] = &[
    ("hello", &[15339]),
    (" world", &[1917]),
    ("Hello", &[9906]),
    ("123", &[4513]),
    ("45", &[1774]),
    ("\n\n  ", &[271, 256]),
    ("\ttabs", &[3324, 3518]),
    ("naïve", &[3458, 38672, 588]),
    (" 日本語", &[76502, 22656, 45918, 252]),
    (" 🤖", &[11410, 97, 244]),
    (
        " pneumonoultramicroscopicsilicovolcanoconiosis",
        &[57223, 263, 11206, 99040, 2823, 2445, 454, 1233, 321, 292, 869, 337, 69377, 444, 91260],
    ),
    ("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", &[45202, 45202, 45202, 45202, 45202, 45202, 4239]),
    ("                                       ", &[2623]),
];

const GPT2_CASES: &[(&str, &[u32])] = &[
    ("hello", &[31373]),
    (" world", &[995]),
    ("Hello", &[15496]),
    (" 12345", &[17031, 2231]),
    ("\n\n  ", &[628, 220, 220]),
    (" indentation", &[33793, 341]),
    ("naïve", &[2616, 38776]),
    (" 日本語", &[10545, 245, 98, 17312, 105, 45739, 252]),
    (
        " pneumonoultramicroscopicsilicovolcanoconiosis",
        &[29631, 261, 25955, 859, 2500, 1416, 404, 873, 41896, 709, 349, 5171, 36221, 42960],
    ),
    (
        "012345678901234567890123456789",
        &[486, 1954, 2231, 3134, 4531, 486, 1954, 2231, 3134, 4531, 486, 1954, 2231, 3134, 4531],
    ),
];

#[test]
fn encode_cl100k_known_ids() {
    let Some(dir) = vocab_dir() else { return };
    let vocab = load_tiktoken(&dir.join("cl100k_base.tiktoken")).unwrap();
    assert_eq!(vocab.len(), 100256);
    assert!(vocab.iter().all(Option::is_some));
    let bpe = Bpe::from_ranks(vocab).unwrap();
    assert_eq!(bpe.len(), 100256);
    check(&bpe, CL100K_CASES);
}

#[test]
fn encode_gpt2_known_ids_ranks_and_merges() {
    let Some(dir) = vocab_dir() else { return };
    let (vocab, specials) = load_gpt2(&dir.join("gpt2_encoder.json"), &dir.join("gpt2_vocab.bpe")).unwrap();
    assert_eq!(vocab.len(), 50256);
    assert_eq!(specials, vec![("<|endoftext|>".to_string(), 50256)]);
    let ranks = Bpe::from_ranks(vocab.clone()).unwrap();
    check(&ranks, GPT2_CASES);
    let merges = gpt2_file_merges(&dir, &ranks);
    assert_eq!(merges.len(), 50000);
    let merged = Bpe::from_merges(vocab, &merges).unwrap();
    check(&merged, GPT2_CASES);
}

/// tiktoken's claim that GPT-2's ranks reproduce its merge list: the merges derived from the
/// ranks must be vocab.bpe's, and no token is unreachable.
#[test]
fn encode_gpt2_derived_merges_equal_vocab_bpe() {
    let Some(dir) = vocab_dir() else { return };
    let (vocab, _) = load_gpt2(&dir.join("gpt2_encoder.json"), &dir.join("gpt2_vocab.bpe")).unwrap();
    let ranks = Bpe::from_ranks(vocab).unwrap();
    let file = gpt2_file_merges(&dir, &ranks);
    let (derived, unreachable) = ranks.derive_merges();
    let differ = derived.iter().zip(&file).filter(|(a, b)| a != b).count();
    eprintln!(
        "GPT-2: {} derived merges, {} differ from vocab.bpe, {} unreachable tokens",
        derived.len(),
        differ,
        unreachable.len()
    );
    assert!(unreachable.is_empty(), "unreachable: {:?}", &unreachable[..unreachable.len().min(20)]);
    assert_eq!(derived, file);
}

/// cl100k: every multi-byte token is either reachable by merging (and gets a merge) or not;
/// a merge-list model built from the derived merges agrees with the rank model on every piece
/// that is not itself an unreachable token (checked on a text sample).
#[test]
fn encode_cl100k_derived_merges() {
    let Some(dir) = vocab_dir() else { return };
    let ranks = cl100k(&dir);
    let (derived, unreachable) = ranks.derive_merges();
    eprintln!(
        "cl100k: {} derived merges, {} unreachable multi-byte tokens (e.g. {:?})",
        derived.len(),
        unreachable.len(),
        unreachable
            .iter()
            .take(5)
            .map(|&id| String::from_utf8_lossy(ranks.token_bytes(id).unwrap()).into_owned())
            .collect::<Vec<_>>()
    );
    assert_eq!(derived.len() + unreachable.len() + 256, ranks.num_tokens());
    let vocab: Vec<Option<Vec<u8>>> =
        (0..ranks.len() as u32).map(|id| ranks.token_bytes(id).map(<[u8]>::to_vec)).collect();
    let merged = Bpe::from_merges(vocab, &derived).unwrap();
    // Every reachable token encodes to itself with both models.
    for (id, tok) in ranks.vocab() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        ranks.encode_piece(tok, &mut a);
        merged.encode_piece(tok, &mut b);
        assert_eq!(a, vec![id]);
        if !unreachable.contains(&id) {
            assert_eq!(b, vec![id], "token {id} {:?}", String::from_utf8_lossy(tok));
        }
    }
    assert_eq!(merged.merges(), derived);
}
