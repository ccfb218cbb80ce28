//! BPE over one pre-token piece: the speed-critical inner loop of encoding.
//!
//! Both vocabulary kinds share one representation:
//!
//! * a **pair table** `(left id, right id) -> (rank, new id)` (an `FxHashMap<u64, u64>`; the value
//!   packs `rank << 32 | new_id`, so comparing packed values compares ranks, and equal ranks always
//!   mean the same result token);
//! * a byte -> id table for the initial symbols;
//! * a bytes -> id map for `token_id` and the whole-piece shortcut.
//!
//! **Merge-list BPE** (`from_merges`, our trainer and Hugging Face models) takes the pair table from
//! the merge list (rank = index in the list). Encoding is HF tokenizers' `Word::merge_all` with
//! `ignore_merges = false`: repeatedly apply the lowest-rank adjacent pair, leftmost first.
//!
//! **Rank BPE** (`from_ranks`, tiktoken): for every token `t` and every split of its bytes into two
//! tokens `(l, r)`, the table holds `(l, r) -> (rank(t), t)`. That is exactly tiktoken's "rank of the
//! concatenation", since the concatenation only depends on the bytes of `l` and `r`. A piece that is
//! itself a token is emitted directly, as tiktoken's `encode` does.
//!
//! The whole-piece shortcut is also used for merge-list BPE, but only for tokens whose own bytes
//! encode to themselves (computed once at construction), so it never changes a result.
//!
//! Pieces of up to [`SHORT_MAX`] bytes use an O(n^2) scan over two small stack arrays (like
//! tiktoken's `byte_pair_merge`, caching each adjacent pair's packed rank and updating only the
//! neighbours of a merge); longer pieces use a binary heap over a linked list with lazy
//! invalidation, O(n log n), so a 1 MB run of spaces or digits never hangs. Both give identical
//! results (tested).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use rustc_hash::FxHashMap;

use crate::error::{BpeError, Result};

/// Pieces up to this many bytes take the O(n^2) array path; longer ones the heap path.
pub const SHORT_MAX: usize = 64;
/// `PieceCache` only caches pieces up to this many bytes.
pub const CACHE_MAX_PIECE: usize = 15;

/// Packed value of "no such pair" (higher than any real `rank << 32 | id`).
const NO_PAIR: u64 = u64::MAX;
/// Flag in the bytes -> id map: this token may NOT be emitted for a piece equal to its bytes.
const NOT_DIRECT: u32 = 1 << 31;
/// Largest id we accept (the high bit is used as a flag).
const MAX_ID: usize = (1 << 31) - 1;

static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(1);

#[inline(always)]
fn pair_key(l: u32, r: u32) -> u64 {
    ((l as u64) << 32) | r as u64
}

#[inline(always)]
fn pack(rank: u32, id: u32) -> u64 {
    ((rank as u64) << 32) | id as u64
}

#[inline(always)]
fn read8(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

#[inline(always)]
fn read4(b: &[u8]) -> u64 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a) as u64
}

/// A piece of at most 15 bytes as two words: its bytes, little-endian and zero-padded, with the
/// length in the top byte. Built from overlapping fixed-size reads (few length-dependent branches,
/// no memcpy call): the hot path of every lookup.
#[inline(always)]
fn short_key(b: &[u8]) -> (u64, u64) {
    let n = b.len();
    debug_assert!(n <= 15);
    let (lo, hi) = if n >= 8 {
        let tail = read8(&b[n - 8..]);
        (read8(b), ((tail as u128) >> (8 * (16 - n))) as u64)
    } else if n >= 4 {
        (read4(b) | (read4(&b[n - 4..]) << (8 * (n - 4))), 0)
    } else if n > 0 {
        let m = n / 2;
        ((b[0] as u64) | ((b[m] as u64) << (8 * m)) | ((b[n - 1] as u64) << (8 * (n - 1))), 0)
    } else {
        (0, 0)
    };
    (lo, hi | ((n as u64) << 56))
}

/// A bytes -> V map that keeps keys of up to 15 bytes inline (no pointer to chase on lookup):
/// most pieces and tokens are short.
#[derive(Clone, Debug)]
pub(crate) struct BytesMap<V> {
    short: FxHashMap<(u64, u64), V>,
    long: FxHashMap<Box<[u8]>, V>,
}

impl<V> Default for BytesMap<V> {
    fn default() -> Self {
        BytesMap { short: FxHashMap::default(), long: FxHashMap::default() }
    }
}

impl<V> BytesMap<V> {
    #[inline(always)]
    fn get(&self, b: &[u8]) -> Option<&V> {
        if b.len() <= 15 {
            self.short.get(&short_key(b))
        } else {
            self.long.get(b)
        }
    }

    fn get_mut(&mut self, b: &[u8]) -> Option<&mut V> {
        if b.len() <= 15 {
            self.short.get_mut(&short_key(b))
        } else {
            self.long.get_mut(b)
        }
    }

    fn insert(&mut self, b: &[u8], v: V) -> Option<V> {
        if b.len() <= 15 {
            self.short.insert(short_key(b), v)
        } else {
            self.long.insert(b.into(), v)
        }
    }

    fn len(&self) -> usize {
        self.short.len() + self.long.len()
    }
}

/// Hugging Face BPE model options for [`Bpe::from_merges_with`] (all off by default, which is
/// [`Bpe::from_merges`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MergeOptions {
    /// `model.ignore_merges`: a piece whose bytes are a token becomes that token without merging
    /// (Llama-3 files). Costs nothing: it only lifts the whole-piece shortcut's restriction.
    pub ignore_merges: bool,
    /// The id of `model.unk_token`, for bytes that are not tokens (`None`: they are dropped).
    pub unk: Option<u32>,
    /// `model.fuse_unk`: consecutive unknown bytes become one `unk`.
    pub fuse_unk: bool,
}

/// A byte-level BPE model (immutable after construction; `Send + Sync`).
#[derive(Clone)]
pub struct Bpe {
    /// id -> token bytes (`None` = unused id); no trailing `None`.
    vocab: Vec<Option<Box<[u8]>>>,
    /// bytes -> id, with [`NOT_DIRECT`] set on tokens the whole-piece shortcut must not emit.
    ids: BytesMap<u32>,
    byte_ids: [u32; 256],
    /// `pair_key(l, r) -> pack(rank, new_id)`.
    pairs: FxHashMap<u64, u64>,
    /// The same for pairs of single-byte tokens, dense: `[a << 8 | b]` (the first round of every
    /// piece looks these up).
    byte_pairs: Box<[u64; 65536]>,
    /// The merge list as given (merge-list BPE only).
    merges: Vec<(u32, u32)>,
    rank_based: bool,
    /// Longest token, in bytes (pieces longer than this skip the whole-piece lookup).
    max_token_len: usize,
    /// Hugging Face `ignore_merges`: every token is emitted for a piece equal to its bytes.
    ignore_merges: bool,
    /// Whether all 256 single bytes are tokens. If not (a Hugging Face vocabulary trained
    /// without the full alphabet), pieces take [`Bpe::encode_piece_sparse`].
    all_bytes: bool,
    /// Hugging Face `unk_token` (its id) and `fuse_unk`, for bytes that have no token.
    unk: Option<u32>,
    fuse_unk: bool,
    /// Identifies this model (and its clones) for [`PieceCache`].
    instance: u64,
}

impl fmt::Debug for Bpe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bpe")
            .field("len", &self.vocab.len())
            .field("tokens", &self.ids.len())
            .field("pairs", &self.pairs.len())
            .field("rank_based", &self.rank_based)
            .finish()
    }
}

fn bad_vocab(value: String, reason: impl Into<String>) -> BpeError {
    BpeError::InvalidArgument { name: "vocab", value, reason: reason.into() }
}

fn show_bytes(b: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(b))
}

impl Bpe {
    /// Common part: trimmed vocab, bytes -> id map (all direct), byte table. All 256 single
    /// bytes must be tokens unless `missing_bytes_ok`.
    fn base(vocab: Vec<Option<Vec<u8>>>, rank_based: bool, missing_bytes_ok: bool) -> Result<Self> {
        let mut vocab: Vec<Option<Box<[u8]>>> = vocab.into_iter().map(|t| t.map(Vec::into_boxed_slice)).collect();
        while matches!(vocab.last(), Some(None)) {
            vocab.pop();
        }
        if vocab.len() > MAX_ID {
            return Err(bad_vocab(format!("<{} ids>", vocab.len()), format!("at most {MAX_ID} ids are supported")));
        }
        let mut ids: BytesMap<u32> = BytesMap::default();
        let mut byte_ids = [u32::MAX; 256];
        let mut max_token_len = 0;
        for (id, tok) in vocab.iter().enumerate() {
            let Some(tok) = tok else { continue };
            let id = id as u32;
            if tok.is_empty() {
                return Err(bad_vocab(format!("id {id}"), "the empty string is not a valid token"));
            }
            if let Some(&other) = ids.get(tok) {
                return Err(bad_vocab(
                    format!("id {id}"),
                    format!("token {} is also id {other}; token bytes must be unique", show_bytes(tok)),
                ));
            }
            ids.insert(tok, id);
            if tok.len() == 1 {
                byte_ids[tok[0] as usize] = id;
            }
            max_token_len = max_token_len.max(tok.len());
        }
        let missing = byte_ids.iter().position(|&id| id == u32::MAX);
        if let (Some(b), false) = (missing, missing_bytes_ok) {
            return Err(bad_vocab(
                format!("byte 0x{b:02x}"),
                "all 256 single bytes must be tokens of a byte-level BPE vocabulary",
            ));
        }
        // Built on the heap (a 512 KiB array literal would sit on the stack first in debug builds).
        let Ok(byte_pairs) = Box::<[u64; 65536]>::try_from(vec![NO_PAIR; 65536].into_boxed_slice()) else {
            return Err(bad_vocab(String::new(), "internal error: byte pair table"));
        };
        Ok(Bpe {
            vocab,
            ids,
            byte_ids,
            pairs: FxHashMap::default(),
            byte_pairs,
            merges: Vec::new(),
            rank_based,
            max_token_len,
            ignore_merges: false,
            all_bytes: missing.is_none(),
            unk: None,
            fuse_unk: false,
            instance: NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// Merge-list BPE (our trainer and Hugging Face BPE models). `vocab[id]` = token bytes (`None` =
    /// unused id); `merges[rank] = (left id, right id)`, producing the id whose bytes are
    /// `bytes(left) + bytes(right)` (it must be in `vocab`). All 256 single bytes must be tokens.
    /// A pair listed twice keeps its last rank (as HF's merge map does).
    pub fn from_merges(vocab: Vec<Option<Vec<u8>>>, merges: &[(u32, u32)]) -> Result<Self> {
        Self::from_merges_with(vocab, merges, &MergeOptions::default())
    }

    /// [`Bpe::from_merges`] with Hugging Face's BPE model options (see [`MergeOptions`]): with
    /// `ignore_merges`, a piece that is a token is that token; a vocabulary may lack single
    /// bytes, which then become `unk` (fused if `fuse_unk`) or are dropped, as in HF.
    pub fn from_merges_with(vocab: Vec<Option<Vec<u8>>>, merges: &[(u32, u32)], opts: &MergeOptions) -> Result<Self> {
        let mut bpe = Self::base(vocab, false, true)?;
        bpe.ignore_merges = opts.ignore_merges;
        bpe.unk = opts.unk;
        bpe.fuse_unk = opts.fuse_unk;
        let mut pairs: FxHashMap<u64, u64> = FxHashMap::default();
        pairs.reserve(merges.len());
        let mut buf = Vec::new();
        for (rank, &(l, r)) in merges.iter().enumerate() {
            let bad = |reason: String| BpeError::InvalidArgument {
                name: "merges",
                value: format!("merges[{rank}] = ({l}, {r})"),
                reason,
            };
            let (Some(lb), Some(rb)) = (bpe.token_bytes(l), bpe.token_bytes(r)) else {
                return Err(bad(format!(
                    "an id of the pair is not a token of the vocabulary ({} ids)",
                    bpe.vocab.len()
                )));
            };
            if rank > MAX_ID {
                return Err(bad(format!("at most {MAX_ID} merges are supported")));
            }
            buf.clear();
            buf.extend_from_slice(lb);
            buf.extend_from_slice(rb);
            let Some(new) = bpe.token_id(&buf) else {
                return Err(bad(format!(
                    "the merged token {} ({} + {}) is not in the vocabulary",
                    show_bytes(&buf),
                    show_bytes(lb),
                    show_bytes(rb)
                )));
            };
            pairs.insert(pair_key(l, r), pack(rank as u32, new));
        }
        bpe.merges = merges.to_vec();
        bpe.pairs = pairs;
        bpe.fill_byte_pairs();
        if bpe.ignore_merges {
            return Ok(bpe); // every token is emitted for its own bytes: HF's vocabulary lookup
        }
        // The whole-piece shortcut may only emit tokens that BPE itself produces for their bytes.
        let mut out = Vec::new();
        let mut not_direct = Vec::new();
        for (id, tok) in bpe.vocab.iter().enumerate() {
            let Some(tok) = tok else { continue };
            if tok.len() < 2 {
                continue;
            }
            out.clear();
            if bpe.all_bytes {
                bpe.merge_piece(tok, &mut out);
            } else {
                bpe.merge_ids(bpe.initial_ids(tok), &mut out);
            }
            if out.len() != 1 || out[0] != id as u32 {
                not_direct.push(id);
            }
        }
        for id in not_direct {
            let Some(Some(tok)) = bpe.vocab.get(id) else { continue };
            if let Some(v) = bpe.ids.get_mut(tok) {
                *v |= NOT_DIRECT;
            }
        }
        Ok(bpe)
    }

    /// tiktoken semantics: `vocab[rank]` = token bytes (id == rank; `None` = gap). Encoding equals
    /// tiktoken's: a piece that is a token is emitted directly; otherwise the adjacent pair whose
    /// concatenation has the lowest rank is merged, leftmost on ties, until no pair is a token.
    pub fn from_ranks(vocab: Vec<Option<Vec<u8>>>) -> Result<Self> {
        let mut bpe = Self::base(vocab, true, false)?;
        let mut pairs: FxHashMap<u64, u64> = FxHashMap::default();
        pairs.reserve(bpe.ids.len() * 3);
        for (id, tok) in bpe.vocab.iter().enumerate() {
            let Some(tok) = tok else { continue };
            for k in 1..tok.len() {
                let (Some(&l), Some(&r)) = (bpe.ids.get(&tok[..k]), bpe.ids.get(&tok[k..])) else {
                    continue;
                };
                pairs.insert(pair_key(l, r), pack(id as u32, id as u32));
            }
        }
        bpe.pairs = pairs;
        bpe.fill_byte_pairs();
        Ok(bpe)
    }

    /// Fill `byte_pairs` from `pairs` (after `pairs` is complete).
    fn fill_byte_pairs(&mut self) {
        for a in 0..256usize {
            for b in 0..256usize {
                self.byte_pairs[a << 8 | b] = self.pair(self.byte_ids[a], self.byte_ids[b]);
            }
        }
    }

    #[inline(always)]
    fn byte_pair(&self, a: u8, b: u8) -> u64 {
        self.byte_pairs[(a as usize) << 8 | b as usize]
    }

    /// Appends the ids of one pre-token piece to `out`.
    #[inline]
    pub fn encode_piece(&self, piece: &[u8], out: &mut Vec<u32>) {
        if !self.all_bytes {
            return self.encode_piece_sparse(piece, out);
        }
        if !self.encode_direct(piece, out) {
            self.merge_piece(piece, out);
        }
    }

    /// [`Bpe::encode_piece`] for a vocabulary that lacks some single bytes (slower: the first
    /// symbols are built one by one and merged with hash lookups). As Hugging Face's
    /// `BPE::merge_word` does on the byte-level string: a byte without a token becomes the
    /// `unk` id (consecutive ones fused into one with `fuse_unk`), or is dropped if there is no
    /// `unk`; then merges apply to the symbols that are left (neighbours of a dropped byte
    /// included). Kept out of line (cold) so that it does not weigh on the inlining of
    /// [`Bpe::encode_piece`], the hot path of every other model.
    #[cold]
    #[inline(never)]
    pub fn encode_piece_sparse(&self, piece: &[u8], out: &mut Vec<u32>) {
        if piece.is_empty() {
            return;
        }
        if piece.len() <= self.max_token_len {
            if let Some(&v) = self.ids.get(piece) {
                if v & NOT_DIRECT == 0 {
                    out.push(v);
                    return;
                }
            }
        }
        self.merge_ids(self.initial_ids(piece), out);
    }

    /// The first symbols of a piece when some bytes have no token (see
    /// [`Bpe::encode_piece_sparse`]).
    fn initial_ids(&self, piece: &[u8]) -> Vec<u32> {
        let mut ids = Vec::with_capacity(piece.len());
        let mut after_unk = false;
        for &b in piece {
            let id = self.byte_ids[b as usize];
            if id != u32::MAX {
                ids.push(id);
                after_unk = false;
            } else if let Some(unk) = self.unk {
                if !(self.fuse_unk && after_unk) {
                    ids.push(unk);
                }
                after_unk = true;
            }
        }
        ids
    }

    /// Merges a symbol sequence (any ids) to the end with [`Bpe::heap_merge`], every first pair
    /// looked up in the pair table. Used only for vocabularies that lack single bytes.
    fn merge_ids(&self, ids: Vec<u32>, out: &mut Vec<u32>) {
        self.heap_merge(ids, |ids, i| self.pair(ids[i], ids[i + 1]), out)
    }

    /// Whether all 256 single bytes are tokens (always, except for some Hugging Face files).
    pub fn has_all_bytes(&self) -> bool {
        self.all_bytes
    }

    /// Hugging Face `ignore_merges` (see [`MergeOptions`]).
    pub fn ignore_merges(&self) -> bool {
        self.ignore_merges
    }

    /// Testing hook: the merge loop only (no whole-piece shortcut), forcing the O(n log n) heap
    /// path (`long = true`, any length) or the O(n^2) array path (`long = false`, at most
    /// [`SHORT_MAX`] bytes; longer pieces take the heap path anyway).
    #[doc(hidden)]
    pub fn merge_piece_with(&self, piece: &[u8], out: &mut Vec<u32>, long: bool) {
        if piece.len() < 2 {
            self.merge_piece(piece, out);
        } else if long || piece.len() > SHORT_MAX {
            self.merge_long(piece, out);
        } else {
            self.merge_short(piece, out);
        }
    }

    /// Pieces of one byte and pieces that are tokens reachable as a whole: push and return true.
    #[inline(always)]
    fn encode_direct(&self, piece: &[u8], out: &mut Vec<u32>) -> bool {
        match piece.len() {
            0 => true,
            1 => {
                out.push(self.byte_ids[piece[0] as usize]);
                true
            }
            n if n <= self.max_token_len => match self.ids.get(piece) {
                Some(&v) if v & NOT_DIRECT == 0 => {
                    out.push(v);
                    true
                }
                _ => false,
            },
            _ => false,
        }
    }

    /// The merge loop without the whole-piece shortcut.
    #[inline]
    fn merge_piece(&self, piece: &[u8], out: &mut Vec<u32>) {
        match piece.len() {
            0 => {}
            1 => out.push(self.byte_ids[piece[0] as usize]),
            2 => match self.byte_pair(piece[0], piece[1]) {
                NO_PAIR => out.extend_from_slice(&[self.byte_ids[piece[0] as usize], self.byte_ids[piece[1] as usize]]),
                p => out.push(p as u32),
            },
            n if n <= SHORT_MAX => self.merge_short(piece, out),
            _ => self.merge_long(piece, out),
        }
    }

    #[inline(always)]
    fn pair(&self, l: u32, r: u32) -> u64 {
        match self.pairs.get(&pair_key(l, r)) {
            Some(&p) => p,
            None => NO_PAIR,
        }
    }

    /// O(n^2) merge over stack arrays; `2 <= piece.len() <= SHORT_MAX`.
    fn merge_short(&self, piece: &[u8], out: &mut Vec<u32>) {
        let mut ids = [0u32; SHORT_MAX];
        let mut ranks = [NO_PAIR; SHORT_MAX];
        let mut n = piece.len();
        for (slot, &b) in ids.iter_mut().zip(piece) {
            *slot = self.byte_ids[b as usize];
        }
        for (r, w) in ranks.iter_mut().zip(piece.windows(2)) {
            *r = self.byte_pair(w[0], w[1]);
        }
        loop {
            let mut best = NO_PAIR;
            let mut at = 0;
            for (i, &r) in ranks[..n - 1].iter().enumerate() {
                if r < best {
                    best = r;
                    at = i;
                }
            }
            if best == NO_PAIR {
                break;
            }
            ids[at] = best as u32;
            ids.copy_within(at + 2..n, at + 1);
            ranks.copy_within(at + 2..n, at + 1);
            n -= 1;
            ranks[n - 1] = NO_PAIR;
            if at + 1 < n {
                ranks[at] = self.pair(ids[at], ids[at + 1]);
            } else {
                ranks[at] = NO_PAIR;
            }
            if at > 0 {
                ranks[at - 1] = self.pair(ids[at - 1], ids[at]);
            }
            if n == 1 {
                break;
            }
        }
        out.extend_from_slice(&ids[..n]);
    }

    /// O(n log n) merge of a piece of bytes (all of them tokens): [`Bpe::heap_merge`] with the
    /// first round of pairs from the dense byte-pair table.
    fn merge_long(&self, piece: &[u8], out: &mut Vec<u32>) {
        let ids: Vec<u32> = piece.iter().map(|&b| self.byte_ids[b as usize]).collect();
        self.heap_merge(ids, |_, i| self.byte_pair(piece[i], piece[i + 1]), out)
    }

    /// O(n log n) merge: binary heap of (packed rank, position) over a linked list, with lazy
    /// invalidation (an entry is live iff its node is alive and still has that packed rank).
    /// `first_pair(ids, i)` is the packed pair of symbols i and i + 1 before any merge (generic,
    /// so each caller's lookup is inlined).
    #[inline(always)]
    fn heap_merge<F: Fn(&[u32], usize) -> u64>(&self, mut ids: Vec<u32>, first_pair: F, out: &mut Vec<u32>) {
        let n = ids.len();
        if n < 2 {
            out.extend_from_slice(&ids);
            return;
        }
        const NIL: u32 = u32::MAX;
        let mut next: Vec<u32> = (1..=n as u32).collect();
        next[n - 1] = NIL;
        let mut prev: Vec<u32> = (0..n as u32).map(|i| i.wrapping_sub(1)).collect();
        prev[0] = NIL;
        let mut cur = vec![NO_PAIR; n];
        let mut heap_vec = Vec::with_capacity(n);
        for (i, c) in cur.iter_mut().enumerate().take(n - 1) {
            let p = first_pair(&ids, i);
            *c = p;
            if p != NO_PAIR {
                heap_vec.push(Reverse((p, i as u32)));
            }
        }
        let mut heap = BinaryHeap::from(heap_vec);
        while let Some(Reverse((p, pos))) = heap.pop() {
            let i = pos as usize;
            if cur[i] != p {
                continue; // stale (node merged away or its pair changed)
            }
            let j = next[i] as usize; // exists: cur[i] != NO_PAIR
            ids[i] = p as u32;
            // unlink j
            let k = next[j];
            next[i] = k;
            if k != NIL {
                prev[k as usize] = i as u32;
            }
            cur[j] = NO_PAIR;
            cur[i] = if k != NIL { self.pair(ids[i], ids[k as usize]) } else { NO_PAIR };
            if cur[i] != NO_PAIR {
                heap.push(Reverse((cur[i], i as u32)));
            }
            let h = prev[i];
            if h != NIL {
                let h = h as usize;
                cur[h] = self.pair(ids[h], ids[i]);
                if cur[h] != NO_PAIR {
                    heap.push(Reverse((cur[h], h as u32)));
                }
            }
        }
        let mut i = 0u32;
        while i != NIL {
            out.push(ids[i as usize]);
            i = next[i as usize];
        }
    }

    /// The reference merge loop that also reports the last merge applied (for `merges()` of rank
    /// BPE); simple O(n^2) vectors, only used at derivation time.
    fn merge_with_last(&self, piece: &[u8]) -> (Vec<u32>, Option<(u32, u32)>) {
        let mut ids: Vec<u32> = self.initial_ids(piece);
        let mut last = None;
        loop {
            let mut best = NO_PAIR;
            let mut at = 0;
            for i in 0..ids.len().saturating_sub(1) {
                let p = self.pair(ids[i], ids[i + 1]);
                if p < best {
                    best = p;
                    at = i;
                }
            }
            if best == NO_PAIR {
                return (ids, last);
            }
            last = Some((ids[at], ids[at + 1]));
            ids[at] = best as u32;
            ids.remove(at + 1);
        }
    }

    /// Bytes of token `id` (`None` for an unused or out-of-range id).
    #[inline]
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        self.vocab.get(id as usize).and_then(|t| t.as_deref())
    }

    /// Id of the token with exactly these bytes.
    #[inline]
    pub fn token_id(&self, bytes: &[u8]) -> Option<u32> {
        self.ids.get(bytes).map(|&v| v & !NOT_DIRECT)
    }

    /// 1 + the highest token id (0 for an empty model).
    pub fn len(&self) -> usize {
        self.vocab.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vocab.is_empty()
    }

    /// Number of tokens (ids in use).
    pub fn num_tokens(&self) -> usize {
        self.ids.len()
    }

    pub fn is_rank_based(&self) -> bool {
        self.rank_based
    }

    /// `(id, bytes)` of every token, in id order.
    pub fn vocab(&self) -> impl Iterator<Item = (u32, &[u8])> + '_ {
        self.vocab.iter().enumerate().filter_map(|(id, t)| t.as_deref().map(|t| (id as u32, t)))
    }

    /// The merge list in rank order. For merge-list BPE: as given. For rank BPE: derived, see
    /// [`Bpe::derive_merges`].
    pub fn merges(&self) -> Vec<(u32, u32)> {
        if self.rank_based {
            self.derive_merges().0
        } else {
            self.merges.clone()
        }
    }

    /// For rank BPE: for each multi-byte token in rank order, the last merge that tiktoken's merge
    /// process applies when encoding the token's own bytes (with no whole-piece shortcut). Tokens
    /// whose bytes do not encode to themselves get no merge; they are returned second (ids in rank
    /// order). For merge-list BPE: the given merges, and the multi-byte tokens that no merge of the
    /// list produces for their own bytes.
    pub fn derive_merges(&self) -> (Vec<(u32, u32)>, Vec<u32>) {
        let mut merges = Vec::new();
        let mut unreachable = Vec::new();
        for (id, tok) in self.vocab() {
            if tok.len() < 2 {
                continue;
            }
            let (ids, last) = self.merge_with_last(tok);
            match (ids.as_slice(), last) {
                ([single], Some(pair)) if *single == id => merges.push(pair),
                _ => unreachable.push(id),
            }
        }
        if !self.rank_based {
            merges = self.merges.clone();
        }
        (merges, unreachable)
    }
}

/// A bounded piece -> ids cache in front of [`Bpe::encode_piece`]; one per thread (or call).
///
/// Pieces that are tokens (about 95% of pieces of English text) are answered by the vocabulary
/// lookup directly; the cache holds the others, whose merge loop costs a few hundred ns. It is a
/// direct-mapped table of `capacity` (rounded up to a power of two) slots keyed by the piece's
/// bytes held inline, so a hit costs one hash and one cache line; a collision evicts.
/// Only pieces of 2 to [`CACHE_MAX_PIECE`] bytes are cached. Results of more than one token live
/// in an arena that is reset (with the table) when it grows past a bound. The cache remembers
/// which `Bpe` filled it and starts over when used with another one.
#[derive(Clone, Debug, Default)]
pub struct PieceCache {
    slots: Vec<Slot>,
    arena: Vec<u32>,
    owner: u64,
    filled: usize,
}

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    lo: u64,
    hi: u64,
    /// The token if `len == 1`, else the start of the ids in the arena.
    id: u32,
    len: u32,
}

/// The arena is reset past this many ids.
const ARENA_MAX: usize = 1 << 20;

impl PieceCache {
    /// A cache of about `capacity` pieces (0 disables caching).
    pub fn new(capacity: usize) -> Self {
        let n = if capacity == 0 { 0 } else { capacity.clamp(16, 1 << 24).next_power_of_two() };
        PieceCache { slots: vec![Slot::default(); n], arena: Vec::new(), owner: 0, filled: 0 }
    }

    /// Number of slots holding a piece.
    pub fn len(&self) -> usize {
        self.filled
    }

    pub fn is_empty(&self) -> bool {
        self.filled == 0
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    pub fn clear(&mut self) {
        self.slots.fill(Slot::default());
        self.arena.clear();
        self.filled = 0;
    }

    /// Same result as `bpe.encode_piece(piece, out)` for a model with all 256 single bytes
    /// ([`Bpe::has_all_bytes`]); pieces for any other model go to [`Bpe::encode_piece`] directly
    /// (as [`crate::Tokenizer`] does), so this hot path tests no flag.
    #[inline]
    pub fn encode(&mut self, bpe: &Bpe, piece: &[u8], out: &mut Vec<u32>) {
        if bpe.encode_direct(piece, out) {
            return;
        }
        if piece.len() <= 1 || piece.len() > CACHE_MAX_PIECE || self.slots.is_empty() {
            bpe.encode_piece(piece, out);
            return;
        }
        if self.owner != bpe.instance {
            self.clear();
            self.owner = bpe.instance;
        }
        let (lo, hi) = short_key(piece);
        let h = ((lo ^ hi.rotate_left(23)).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize & (self.slots.len() - 1);
        let slot = self.slots[h];
        if slot.lo == lo && slot.hi == hi {
            if slot.len == 1 {
                out.push(slot.id);
            } else {
                out.extend_from_slice(&self.arena[slot.id as usize..(slot.id + slot.len) as usize]);
            }
            return;
        }
        let start = out.len();
        bpe.encode_piece(piece, out);
        let ids = &out[start..];
        let (id, len) = if ids.len() == 1 {
            (ids[0], 1)
        } else {
            if self.arena.len() + ids.len() > ARENA_MAX {
                self.clear();
            }
            let at = self.arena.len() as u32;
            self.arena.extend_from_slice(ids);
            (at, ids.len() as u32)
        };
        let slot = &mut self.slots[h];
        if slot.len == 0 {
            self.filled += 1;
        }
        *slot = Slot { lo, hi, id, len };
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn bytes_vocab() -> Vec<Option<Vec<u8>>> {
        (0..=255u8).map(|b| Some(vec![b])).collect()
    }

    #[test]
    fn short_keys_are_exact() {
        let mut seen = std::collections::HashMap::new();
        let mut rng = crate::testutil::XorShift::new(0x1234_5678_9abc_def1);
        for n in 0..=15usize {
            for _ in 0..2000 {
                let b: Vec<u8> = (0..n).map(|_| [0u8, 1, 255, b'a'][rng.below(4)]).collect();
                let mut padded = [0u8; 16];
                padded[..n].copy_from_slice(&b);
                padded[15] = n as u8;
                let want = u128::from_le_bytes(padded);
                let (lo, hi) = short_key(&b);
                assert_eq!((lo as u128) | ((hi as u128) << 64), want, "{b:?}");
                seen.insert((lo, hi), b);
            }
        }
        assert!(seen.len() > 1000);
    }

    #[test]
    fn merges_basic() {
        let mut v = bytes_vocab();
        v.push(Some(b"ab".to_vec())); // 256
        v.push(Some(b"abc".to_vec())); // 257
        let bpe = Bpe::from_merges(v, &[(97, 98), (256, 99)]).unwrap();
        let mut out = Vec::new();
        bpe.encode_piece(b"abcab", &mut out);
        assert_eq!(out, vec![257, 256]);
        assert_eq!(bpe.len(), 258);
        assert_eq!(bpe.merges(), vec![(97, 98), (256, 99)]);
    }

    #[test]
    fn errors() {
        let mut v = bytes_vocab();
        v[7] = None;
        assert!(Bpe::from_ranks(v).is_err());
        let v = bytes_vocab();
        assert!(Bpe::from_merges(v.clone(), &[(97, 98)]).is_err());
        assert!(Bpe::from_merges(v, &[(97, 999)]).is_err());
        let mut v = bytes_vocab();
        v.push(Some(b"a".to_vec()));
        assert!(Bpe::from_ranks(v).is_err());
    }

    #[test]
    fn ignore_merges_emits_whole_tokens() {
        let mut v = bytes_vocab();
        v.push(Some(b"ab".to_vec())); // 256
        v.push(Some(b"bc".to_vec())); // 257
        v.push(Some(b"abc".to_vec())); // 258: not what the merges make of "abc"
        let merges = [(98, 99), (97, 98), (256, 99)];
        let plain = Bpe::from_merges(v.clone(), &merges).unwrap();
        let opts = MergeOptions { ignore_merges: true, ..Default::default() };
        let ignoring = Bpe::from_merges_with(v, &merges, &opts).unwrap();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        plain.encode_piece(b"abc", &mut a);
        ignoring.encode_piece(b"abc", &mut b);
        assert_eq!((a, b), (vec![97, 257], vec![258]));
        let mut c = Vec::new();
        ignoring.encode_piece(b"abcab", &mut c);
        assert_eq!(c, vec![97, 257, 256]); // not a token: merged as usual
    }

    #[test]
    fn missing_bytes_become_unk_or_vanish() {
        let mut v = bytes_vocab();
        v[0xC3] = None;
        v[0xA9] = None;
        v.push(Some(b"ab".to_vec())); // 256
        v.push(Some(b"<unk>".to_vec())); // 257
        let merges = [(97, 98)];
        let piece = "aébé\u{e9}a".as_bytes(); // a C3 A9 b C3 A9 C3 A9 a
        let cases = [
            (None, false, vec![256, 97]),
            (Some(257), false, vec![97, 257, 257, 98, 257, 257, 257, 257, 97]),
            (Some(257), true, vec![97, 257, 98, 257, 97]),
        ];
        for (unk, fuse_unk, want) in cases {
            let bpe = Bpe::from_merges_with(v.clone(), &merges, &MergeOptions { ignore_merges: false, unk, fuse_unk })
                .unwrap();
            let mut out = Vec::new();
            bpe.encode_piece(piece, &mut out);
            assert_eq!(out, want, "unk {unk:?} fuse {fuse_unk}");
        }
    }
}
