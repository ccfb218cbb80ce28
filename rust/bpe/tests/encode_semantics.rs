//! `Bpe` against naive references (tiktoken-style and HF-style), short vs long path, PieceCache.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::type_complexity)]

use std::collections::HashMap;

use bpe::encode::{Bpe, PieceCache, SHORT_MAX};
use bpe::testutil::XorShift;

const ALPHABET: &[u8] = b"abcd ";

fn random_piece(rng: &mut XorShift, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| {
            if rng.below(20) == 0 {
                rng.below(256) as u8 // occasionally any byte
            } else {
                ALPHABET[rng.below(ALPHABET.len())]
            }
        })
        .collect()
}

/// A random merge list over the alphabet: merges of random existing tokens (so several merges can
/// produce the same bytes from different splits), plus the vocab it implies.
fn random_merges(rng: &mut XorShift, n: usize) -> (Vec<Option<Vec<u8>>>, Vec<(u32, u32)>) {
    let mut vocab: Vec<Option<Vec<u8>>> = (0..=255u8).map(|b| Some(vec![b])).collect();
    let mut index: HashMap<Vec<u8>, u32> = (0..=255u8).map(|b| (vec![b], b as u32)).collect();
    let mut merges = Vec::new();
    let mut pool: Vec<u32> = ALPHABET.iter().map(|&b| b as u32).collect();
    let mut tries = 0;
    while merges.len() < n && tries < 100 * n {
        tries += 1;
        let l = pool[rng.below(pool.len())];
        let r = pool[rng.below(pool.len())];
        let mut bytes = vocab[l as usize].clone().unwrap();
        bytes.extend_from_slice(vocab[r as usize].as_ref().unwrap());
        if bytes.len() > 12 {
            continue;
        }
        if merges.contains(&(l, r)) {
            continue;
        }
        if !index.contains_key(&bytes) {
            let id = vocab.len() as u32;
            index.insert(bytes.clone(), id);
            vocab.push(Some(bytes));
            pool.push(id);
        }
        merges.push((l, r));
    }
    (vocab, merges)
}

/// A random rank vocabulary: the bytes at shuffled low ranks, then multi-byte tokens built from
/// pairs of existing tokens, with rank gaps, some unreachable "junk" tokens, and ranks that do not
/// follow creation order.
fn random_ranks(rng: &mut XorShift, n: usize) -> Vec<Option<Vec<u8>>> {
    let mut toks: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    // shuffle the byte ranks
    for i in (1..toks.len()).rev() {
        let j = rng.below(i + 1);
        toks.swap(i, j);
    }
    let mut seen: std::collections::HashSet<Vec<u8>> = toks.iter().cloned().collect();
    let mut multi: Vec<Vec<u8>> = ALPHABET.iter().map(|&b| vec![b]).collect();
    let mut tries = 0;
    while toks.len() < 256 + n && tries < 100 * n {
        tries += 1;
        let t = if rng.below(10) == 0 {
            {
                let n = 2 + rng.below(5);
                random_piece(rng, n)
            } // maybe unreachable
        } else {
            let mut t = multi[rng.below(multi.len())].clone();
            t.extend_from_slice(&multi[rng.below(multi.len())]);
            t
        };
        if t.len() > 12 || !seen.insert(t.clone()) {
            continue;
        }
        // occasionally insert not at the end (ranks not in creation order)
        if rng.below(4) == 0 {
            let at = 256 + rng.below(toks.len() - 255);
            toks.insert(at, t.clone());
        } else {
            toks.push(t.clone());
        }
        multi.push(t);
    }
    let mut vocab = Vec::new();
    for t in toks {
        if rng.below(15) == 0 {
            vocab.push(None); // gap
        }
        vocab.push(Some(t));
    }
    vocab
}

/// tiktoken's byte_pair_encode, literally: whole piece first, then merge the adjacent pair whose
/// concatenation has the lowest rank, leftmost on ties.
fn naive_tiktoken(vocab: &[Option<Vec<u8>>], piece: &[u8]) -> Vec<u32> {
    naive_tiktoken_with(&rank_map(vocab), piece)
}

fn rank_map(vocab: &[Option<Vec<u8>>]) -> HashMap<&[u8], u32> {
    vocab.iter().enumerate().filter_map(|(i, t)| t.as_deref().map(|t| (t, i as u32))).collect()
}

fn naive_tiktoken_with(rank: &HashMap<&[u8], u32>, piece: &[u8]) -> Vec<u32> {
    if let Some(&r) = rank.get(piece) {
        return vec![r];
    }
    let mut parts: Vec<Vec<u8>> = piece.iter().map(|&b| vec![b]).collect();
    loop {
        let mut best: Option<(u32, usize)> = None;
        for i in 0..parts.len().saturating_sub(1) {
            let cat = [parts[i].as_slice(), parts[i + 1].as_slice()].concat();
            if let Some(&r) = rank.get(cat.as_slice()) {
                if best.is_none_or(|(b, _)| r < b) {
                    best = Some((r, i));
                }
            }
        }
        let Some((_, i)) = best else { break };
        let right = parts.remove(i + 1);
        parts[i].extend_from_slice(&right);
    }
    parts.iter().map(|p| rank[p.as_slice()]).collect()
}

/// HF tokenizers' BPE (no dropout, ignore_merges=false): apply the lowest-rank merge of the list
/// present between adjacent symbols, leftmost first; a pair listed twice keeps its last rank.
type MergeRanks = HashMap<(Vec<u8>, Vec<u8>), usize>;

fn merge_ranks(vocab: &[Option<Vec<u8>>], merges: &[(u32, u32)]) -> MergeRanks {
    let mut rank = HashMap::new();
    for (k, &(l, r)) in merges.iter().enumerate() {
        rank.insert((vocab[l as usize].clone().unwrap(), vocab[r as usize].clone().unwrap()), k);
    }
    rank
}

fn naive_hf(vocab: &[Option<Vec<u8>>], merges: &[(u32, u32)], piece: &[u8]) -> Vec<u32> {
    naive_hf_with(&rank_map(vocab), &merge_ranks(vocab, merges), piece)
}

fn naive_hf_with(ids: &HashMap<&[u8], u32>, rank: &MergeRanks, piece: &[u8]) -> Vec<u32> {
    let mut parts: Vec<Vec<u8>> = piece.iter().map(|&b| vec![b]).collect();
    loop {
        let mut best: Option<(usize, usize)> = None;
        for i in 0..parts.len().saturating_sub(1) {
            if let Some(&r) = rank.get(&(parts[i].clone(), parts[i + 1].clone())) {
                if best.is_none_or(|(b, _)| r < b) {
                    best = Some((r, i));
                }
            }
        }
        let Some((_, i)) = best else { break };
        let right = parts.remove(i + 1);
        parts[i].extend_from_slice(&right);
    }
    parts.iter().map(|p| ids[p.as_slice()]).collect()
}

fn enc(bpe: &Bpe, piece: &[u8]) -> Vec<u32> {
    let mut out = Vec::new();
    bpe.encode_piece(piece, &mut out);
    out
}

fn both_paths(bpe: &Bpe, piece: &[u8]) -> (Vec<u32>, Vec<u32>) {
    let (mut s, mut l) = (Vec::new(), Vec::new());
    bpe.merge_piece_with(piece, &mut s, false);
    bpe.merge_piece_with(piece, &mut l, true);
    (s, l)
}

#[test]
fn encode_ranks_match_naive_tiktoken() {
    let mut rng = XorShift::star(0x9E37_79B9_7F4A_7C15);
    for round in 0..20 {
        let vocab = random_ranks(&mut rng, 40 + 20 * round);
        let bpe = Bpe::from_ranks(vocab.clone()).unwrap();
        let rmap = rank_map(&vocab);
        assert!(bpe.is_rank_based());
        for _ in 0..300 {
            let max = if rng.below(10) == 0 { 200 } else { 24 };
            let len = 1 + rng.below(max);
            let piece = random_piece(&mut rng, len);
            assert_eq!(enc(&bpe, &piece), naive_tiktoken_with(&rmap, &piece), "piece {piece:?}");
        }
        // pieces that are tokens (some unreachable by merging: emitted whole all the same)
        for t in vocab.iter().flatten() {
            assert_eq!(enc(&bpe, t), naive_tiktoken_with(&rmap, t));
        }
    }
}

#[test]
fn encode_merges_match_naive_hf() {
    let mut rng = XorShift::star(0x1234_5678_9ABC_DEF1);
    for round in 0..20 {
        let (vocab, mut merges) = random_merges(&mut rng, 30 + 20 * round);
        if round % 3 == 0 && merges.len() > 4 {
            let dup = merges[1];
            merges.push(dup); // a pair listed twice: its last rank counts
        }
        let bpe = Bpe::from_merges(vocab.clone(), &merges).unwrap();
        let (imap, mranks) = (rank_map(&vocab), merge_ranks(&vocab, &merges));
        assert!(!bpe.is_rank_based());
        for _ in 0..300 {
            let max = if rng.below(10) == 0 { 200 } else { 24 };
            let len = 1 + rng.below(max);
            let piece = random_piece(&mut rng, len);
            assert_eq!(enc(&bpe, &piece), naive_hf_with(&imap, &mranks, &piece), "piece {piece:?}");
        }
        // pieces equal to tokens: NOT shortcut unless merging reproduces the token
        for t in vocab.iter().flatten() {
            assert_eq!(enc(&bpe, t), naive_hf_with(&imap, &mranks, t), "token {t:?}");
        }
        assert_eq!(bpe.merges(), merges);
    }
}

/// A token whose bytes merge into something else: HF does not emit it whole, tiktoken does.
#[test]
fn encode_whole_piece_shortcut_semantics() {
    let mut vocab: Vec<Option<Vec<u8>>> = (0..=255u8).map(|b| Some(vec![b])).collect();
    vocab.push(Some(b"bc".to_vec())); // 256
    vocab.push(Some(b"ab".to_vec())); // 257
    vocab.push(Some(b"abc".to_vec())); // 258: merge-reachable only as ab+c, but bc merges first
    vocab.push(Some(b"xyz".to_vec())); // 259: no merge path at all
    let merges = [(98, 99), (97, 98), (257, 99)];
    let hf = Bpe::from_merges(vocab.clone(), &merges).unwrap();
    assert_eq!(enc(&hf, b"abc"), vec![97, 256]);
    assert_eq!(enc(&hf, b"ab"), vec![257]);
    let tk = Bpe::from_ranks(vocab.clone()).unwrap();
    assert_eq!(enc(&tk, b"abc"), vec![258]); // whole-piece lookup
                                             // tiktoken merges by the rank of the concatenation: a + bc -> abc (HF has no (a, bc) merge)
    assert_eq!(enc(&tk, b"xabc"), vec![b'x' as u32, 258]);
    assert_eq!(enc(&hf, b"xabc"), vec![b'x' as u32, 97, 256]);
    assert_eq!(enc(&tk, b"xyz"), vec![259]);
    assert_eq!(enc(&tk, b"xyzz"), vec![120, 121, 122, 122]);
    assert_eq!(enc(&hf, b"xyz"), vec![120, 121, 122]);
    let (merges, unreachable) = tk.derive_merges();
    assert_eq!(merges, vec![(98, 99), (97, 98), (97, 256)]);
    assert_eq!(unreachable, vec![259]);
    assert_eq!(tk.merges(), merges);
    assert_eq!(hf.derive_merges().1, vec![258, 259]);
}

#[test]
fn encode_short_and_long_paths_agree() {
    let mut rng = XorShift::star(42);
    for round in 0..10 {
        let vocab = random_ranks(&mut rng, 100 + 30 * round);
        let ranks = Bpe::from_ranks(vocab.clone()).unwrap();
        let (mvocab, merges) = random_merges(&mut rng, 100 + 30 * round);
        let merged = Bpe::from_merges(mvocab.clone(), &merges).unwrap();
        for _ in 0..300 {
            let n = 2 + rng.below(SHORT_MAX - 1);
            let piece = random_piece(&mut rng, n);
            for bpe in [&ranks, &merged] {
                let (s, l) = both_paths(bpe, &piece);
                assert_eq!(s, l, "piece {piece:?}");
            }
        }
        // long pieces (heap path) against the references
        for _ in 0..10 {
            let n = SHORT_MAX + 1 + rng.below(250);
            let piece = random_piece(&mut rng, n);
            assert_eq!(enc(&ranks, &piece), naive_tiktoken(&vocab, &piece));
            assert_eq!(enc(&merged, &piece), naive_hf(&mvocab, &merges, &piece));
        }
    }
}

#[test]
fn encode_long_runs_do_not_hang() {
    let mut vocab: Vec<Option<Vec<u8>>> = (0..=255u8).map(|b| Some(vec![b])).collect();
    let mut merges = Vec::new();
    // "  " -> 256, "    " -> 257, ..., 2^k spaces
    let mut prev = b' ' as u32;
    for k in 1..8 {
        vocab.push(Some(vec![b' '; 1 << k]));
        merges.push((prev, prev));
        prev = 255 + k as u32;
    }
    let merged = Bpe::from_merges(vocab.clone(), &merges).unwrap();
    let ranks = Bpe::from_ranks(vocab).unwrap();
    let piece = vec![b' '; 200_001]; // quadratic would take minutes (debug build)
    let start = std::time::Instant::now();
    for bpe in [&merged, &ranks] {
        let out = enc(bpe, &piece);
        let total: usize = out.iter().map(|&id| bpe.token_bytes(id).unwrap().len()).sum();
        assert_eq!(total, piece.len());
        assert_eq!(out.len(), 1562 + 2); // 1562 runs of 128, then 64 + 1
    }
    assert!(start.elapsed().as_secs() < 60);
}

#[test]
fn encode_piece_cache_is_transparent() {
    let mut rng = XorShift::star(7);
    let vocab = random_ranks(&mut rng, 300);
    let ranks = Bpe::from_ranks(vocab).unwrap();
    let (mvocab, merges) = random_merges(&mut rng, 300);
    let merged = Bpe::from_merges(mvocab, &merges).unwrap();
    let mut cache = PieceCache::new(50); // small: exercises clearing
    let pieces: Vec<Vec<u8>> = (0..3000)
        .map(|_| {
            let n = 1 + rng.below(40);
            random_piece(&mut rng, n)
        })
        .collect();
    for _ in 0..2 {
        for p in &pieces {
            // alternate models through one cache: it must notice the switch
            for bpe in [&ranks, &merged] {
                let mut a = vec![1, 2, 3];
                let mut b = vec![1, 2, 3];
                bpe.encode_piece(p, &mut a);
                cache.encode(bpe, p, &mut b);
                assert_eq!(a, b);
            }
        }
    }
    assert!(cache.len() <= 50);
}

#[test]
fn encode_accessors() {
    let mut vocab: Vec<Option<Vec<u8>>> = (0..=255u8).map(|b| Some(vec![b])).collect();
    vocab.push(None);
    vocab.push(Some(b"ab".to_vec())); // 257
    vocab.push(None); // trailing None: trimmed
    let bpe = Bpe::from_ranks(vocab).unwrap();
    assert_eq!(bpe.len(), 258);
    assert_eq!(bpe.num_tokens(), 257);
    assert_eq!(bpe.token_id(b"ab"), Some(257));
    assert_eq!(bpe.token_bytes(257), Some(&b"ab"[..]));
    assert_eq!(bpe.token_bytes(256), None);
    assert_eq!(bpe.token_bytes(9999), None);
    assert_eq!(bpe.vocab().count(), 257);
    assert_eq!(bpe.merges(), vec![(97, 98)]);
    let mut out = Vec::new();
    bpe.encode_piece(b"", &mut out);
    assert!(out.is_empty());
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Bpe>();
}

#[test]
fn encode_construction_errors() {
    let bytes: Vec<Option<Vec<u8>>> = (0..=255u8).map(|b| Some(vec![b])).collect();
    // missing byte: refused for tiktoken ranks; a merge list (Hugging Face) may lack bytes
    let mut v = bytes.clone();
    v[200] = None;
    let e = Bpe::from_ranks(v.clone()).unwrap_err().to_string();
    assert!(e.contains("0xc8"), "{e}");
    let sparse = Bpe::from_merges(v, &[]).unwrap();
    assert!(!sparse.has_all_bytes());
    let mut out = Vec::new();
    sparse.encode_piece(&[1, 200, 2], &mut out);
    assert_eq!(out, vec![1, 2]); // the byte without a token is dropped, as in tokenizers
                                 // merge result not in vocab
    let e = Bpe::from_merges(bytes.clone(), &[(97, 98)]).unwrap_err().to_string();
    assert!(e.contains("merges[0]") && e.contains("\"ab\""), "{e}");
    // merge id out of range
    let e = Bpe::from_merges(bytes.clone(), &[(97, 4000)]).unwrap_err().to_string();
    assert!(e.contains("merges[0]"), "{e}");
    // duplicate token bytes
    let mut v = bytes.clone();
    v.push(Some(b"x".to_vec()));
    assert!(Bpe::from_ranks(v).is_err());
    // empty token
    let mut v = bytes;
    v.push(Some(Vec::new()));
    assert!(Bpe::from_ranks(v).is_err());
}
