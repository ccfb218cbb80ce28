//! Property test: random sequences of allocate / append / fork / free / mark_computed /
//! lookup_prefix over a few sequence ids and a small pool.
//!
//! Oracles: (1) `Ref`, a reference model of the same semantics in plain vectors and maps that
//! names cached blocks by their whole token prefix instead of a hash chain (obviously
//! collision-free) and keeps the computed flag as a set: every answer (block ids, cached tokens,
//! slots, copies, `None`, errors), every table, ref count, cached and computed block, and the stats
//! must match it exactly. (2) A simulated K/V memory in which a slot holds a fingerprint of the
//! whole prefix up to its token (as real K/V depend on the prefix). The test writes K/V lazily, as
//! a scheduler does: a prompt's `cached_tokens` are taken as written, the rest is written only
//! when the test marks it computed (performing copy-on-write copies when `append` asks for them).
//! Every live sequence must read its written tokens back through its table, and every computed
//! block must hold its prefix: a block counted as cached before its K/V exist, or overwritten while
//! cached, shows up as a wrong fingerprint. On top: `audit()` after every op, `Ok(None)` and `Err`
//! leaving the manager unchanged, and nothing held after freeing all.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};

use kvcache::{Allocation, BlockManager, KvError, Slot, Stats};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Allocate {
        seq: u64,
        tokens: Vec<u32>,
    },
    Append {
        seq: u64,
        token: u32,
    },
    Fork {
        parent: u64,
        child: u64,
    },
    Free {
        seq: u64,
    },
    /// Write and mark the first `len - back` tokens (`back == -1`: one past the end, an error).
    MarkComputed {
        seq: u64,
        back: i64,
    },
    Lookup {
        tokens: Vec<u32>,
    },
}

const SEQS: u64 = 5;

fn prompt() -> impl Strategy<Value = Vec<u32>> {
    // A two-letter alphabet and a few shared stems make prefix hits (and collisions of content,
    // not of hashes) common.
    let stem = prop_oneof![Just(vec![]), Just(vec![0u32, 1, 0, 1, 1, 0]), Just(vec![1u32, 1, 1, 1])];
    (stem, 0usize..7, proptest::collection::vec(0u32..2, 0..6)).prop_map(|(s, k, tail)| {
        let mut t: Vec<u32> = s.into_iter().take(k).collect();
        t.extend(tail);
        t
    })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..SEQS, prompt()).prop_map(|(seq, tokens)| Op::Allocate { seq, tokens }),
        5 => (0..SEQS, 0u32..2).prop_map(|(seq, token)| Op::Append { seq, token }),
        2 => (0..SEQS, 0..SEQS).prop_map(|(parent, child)| Op::Fork { parent, child }),
        2 => (0..SEQS).prop_map(|seq| Op::Free { seq }),
        4 => (0..SEQS, -1i64..4).prop_map(|(seq, back)| Op::MarkComputed { seq, back }),
        1 => prompt().prop_map(|tokens| Op::Lookup { tokens }),
    ]
}

/// The reference model: one line per rule of the spec.
struct Ref {
    bs: usize,
    rc: Vec<u32>,
    /// A stack: `pop()` hands out 0, 1, 2, ... from a fresh pool.
    free: Vec<u32>,
    /// Evictable cached blocks, least recently freed first.
    lru: Vec<u32>,
    /// Whole prefix -> the block holding its last block.
    cache: BTreeMap<Vec<u32>, u32>,
    cached_as: BTreeMap<u32, Vec<u32>>,
    computed: BTreeSet<u32>,
    /// id -> (block table, tokens).
    seqs: BTreeMap<u64, (Vec<u32>, Vec<u32>)>,
    queries: u64,
    hits: u64,
    query_tokens: u64,
}

impl Ref {
    fn new(n: usize, bs: usize) -> Self {
        Ref {
            bs,
            rc: vec![0; n],
            free: (0..n as u32).rev().collect(),
            lru: Vec::new(),
            cache: BTreeMap::new(),
            cached_as: BTreeMap::new(),
            computed: BTreeSet::new(),
            seqs: BTreeMap::new(),
            queries: 0,
            hits: 0,
            query_tokens: 0,
        }
    }

    fn available(&self) -> usize {
        self.free.len() + self.lru.len()
    }

    /// A fresh block: free first, else evict the least recently freed cached block. Either way
    /// its old K/V no longer count.
    fn take(&mut self) -> Option<u32> {
        let b = match self.free.pop() {
            Some(b) => b,
            None if !self.lru.is_empty() => {
                let b = self.lru.remove(0);
                if let Some(prefix) = self.cached_as.remove(&b) {
                    self.cache.remove(&prefix);
                }
                b
            }
            None => return None,
        };
        self.computed.remove(&b);
        self.rc[b as usize] = 1;
        Some(b)
    }

    fn release(&mut self, b: u32) {
        self.rc[b as usize] -= 1;
        if self.rc[b as usize] == 0 {
            if self.cached_as.contains_key(&b) {
                self.lru.push(b);
            } else {
                self.free.push(b);
            }
        }
    }

    fn share(&mut self, b: u32) {
        if self.rc[b as usize] == 0 {
            self.lru.retain(|&x| x != b);
        }
        self.rc[b as usize] += 1;
    }

    /// The first block to hold a prefix keeps the name.
    fn register(&mut self, b: u32, prefix: &[u32]) {
        if !self.cache.contains_key(prefix) {
            self.cache.insert(prefix.to_vec(), b);
            self.cached_as.insert(b, prefix.to_vec());
        }
    }

    /// Leading full blocks that are cached and computed.
    fn lookup_prefix(&self, toks: &[u32]) -> usize {
        let bs = self.bs;
        let mut i = 0;
        while (i + 1) * bs <= toks.len()
            && self.cache.get(&toks[..(i + 1) * bs]).is_some_and(|b| self.computed.contains(b))
        {
            i += 1;
        }
        i * bs
    }

    fn allocate(&mut self, sid: u64, toks: &[u32]) -> Result<Option<Allocation>, KvError> {
        if self.seqs.contains_key(&sid) {
            return Err(KvError::DuplicateSeq(sid));
        }
        if toks.is_empty() {
            return Err(KvError::EmptyPrompt(sid));
        }
        let bs = self.bs;
        let mut reused = Vec::new();
        for i in 0..(toks.len() - 1) / bs {
            // at least the last token is left to compute
            match self.cache.get(&toks[..(i + 1) * bs]) {
                Some(&b) => reused.push(b),
                None => break,
            }
        }
        let cached = reused.iter().take_while(|b| self.computed.contains(b)).count() * bs;
        let fresh = toks.len().div_ceil(bs) - reused.len();
        let revived = reused.iter().filter(|&&b| self.rc[b as usize] == 0).count();
        if fresh > self.available() - revived {
            return Ok(None);
        }
        for &b in &reused {
            self.share(b);
        }
        let mut blocks = reused.clone();
        blocks.extend((0..fresh).filter_map(|_| self.take()));
        for i in reused.len()..toks.len() / bs {
            self.register(blocks[i], &toks[..(i + 1) * bs]);
        }
        self.queries += 1;
        self.query_tokens += toks.len() as u64;
        self.hits += cached as u64;
        self.seqs.insert(sid, (blocks.clone(), toks.to_vec()));
        Ok(Some(Allocation { blocks, cached_tokens: cached }))
    }

    fn append(&mut self, sid: u64, tok: u32) -> Result<Option<Slot>, KvError> {
        let bs = self.bs;
        let (mut blocks, mut toks) = self.seqs.get(&sid).cloned().ok_or(KvError::UnknownSeq(sid))?;
        let offset = toks.len() % bs;
        let last = blocks.last().copied();
        let slot = match last {
            Some(l) if offset != 0 && self.rc[l as usize] == 1 => Slot { block: l, offset, copy: None },
            _ => {
                let Some(dst) = self.take() else { return Ok(None) };
                match last {
                    Some(src) if offset != 0 => {
                        // copy-on-write of the shared, partly filled last block
                        self.release(src);
                        if let Some(entry) = blocks.last_mut() {
                            *entry = dst;
                        }
                        Slot { block: dst, offset, copy: Some((src, dst)) }
                    }
                    _ => {
                        blocks.push(dst);
                        Slot { block: dst, offset: 0, copy: None }
                    }
                }
            }
        };
        toks.push(tok);
        if toks.len() % bs == 0 {
            self.register(slot.block, &toks);
        }
        self.seqs.insert(sid, (blocks, toks));
        Ok(Some(slot))
    }

    fn fork(&mut self, parent: u64, child: u64) -> Result<(), KvError> {
        let seq = self.seqs.get(&parent).cloned().ok_or(KvError::UnknownSeq(parent))?;
        if self.seqs.contains_key(&child) {
            return Err(KvError::DuplicateSeq(child));
        }
        for &b in &seq.0 {
            self.share(b);
        }
        self.seqs.insert(child, seq);
        Ok(())
    }

    fn free_seq(&mut self, sid: u64) -> Result<(), KvError> {
        let (blocks, _) = self.seqs.remove(&sid).ok_or(KvError::UnknownSeq(sid))?;
        for &b in blocks.iter().rev() {
            // tail first: a prefix outlives its extensions on the LRU list
            self.release(b);
        }
        Ok(())
    }

    fn mark_computed(&mut self, sid: u64, n: usize) -> Result<(), KvError> {
        let (blocks, toks) = self.seqs.get(&sid).ok_or(KvError::UnknownSeq(sid))?;
        if n > toks.len() {
            return Err(KvError::PastEnd { seq_id: sid, num_tokens: n, len: toks.len() });
        }
        for b in &blocks[..n / self.bs] {
            if self.cached_as.contains_key(b) {
                self.computed.insert(*b);
            }
        }
        Ok(())
    }

    fn stats(&self) -> Stats {
        let n = self.rc.len();
        Stats {
            num_blocks: n,
            block_size: self.bs,
            used: self.rc.iter().filter(|&&r| r > 0).count(),
            free: self.free.len(),
            cached_evictable: self.lru.len(),
            prefix_queries: self.queries,
            prefix_hit_tokens: self.hits,
            prefix_query_tokens: self.query_tokens,
            hit_rate: if self.query_tokens == 0 { 0.0 } else { self.hits as f64 / self.query_tokens as f64 },
        }
    }
}

/// What the K/V of the last token of `prefix` stand for: the whole prefix.
fn fingerprint(prefix: &[u32]) -> u64 {
    let mut h = DefaultHasher::new();
    prefix.hash(&mut h);
    h.finish()
}

struct World {
    mgr: BlockManager,
    model: Ref,
    bs: usize,
    mem: Vec<Vec<Option<u64>>>,
    /// Per live sequence: how many leading tokens' K/V are in memory.
    written: BTreeMap<u64, usize>,
}

impl World {
    /// Writes the K/V of tokens `from..to` of `seq` where its block table says.
    fn write(&mut self, seq: u64, from: usize, to: usize) -> Result<(), TestCaseError> {
        let bs = self.bs;
        let table = self.mgr.block_table(seq).map_err(|e| TestCaseError::fail(e.to_string()))?.to_vec();
        let tokens = self.mgr.tokens(seq).map_err(|e| TestCaseError::fail(e.to_string()))?.to_vec();
        for pos in from..to {
            self.mem[table[pos / bs] as usize][pos % bs] = Some(fingerprint(&tokens[..=pos]));
        }
        Ok(())
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let before = self.mgr.clone();
        let unchanged = |mgr: &BlockManager| -> Result<(), TestCaseError> {
            prop_assert_eq!(mgr, &before);
            Ok(())
        };
        match op {
            Op::Allocate { seq, tokens } => {
                let got = self.mgr.allocate(*seq, tokens);
                prop_assert_eq!(&got, &self.model.allocate(*seq, tokens));
                match got {
                    Ok(Some(a)) => {
                        // The cached tokens' K/V are in memory already (checked below).
                        self.written.insert(*seq, a.cached_tokens);
                    }
                    _ => unchanged(&self.mgr)?,
                }
            }
            Op::Append { seq, token } => {
                let got = self.mgr.append(*seq, *token);
                prop_assert_eq!(&got, &self.model.append(*seq, *token));
                match got {
                    Ok(Some(slot)) => {
                        if let Some((src, dst)) = slot.copy {
                            prop_assert_eq!(dst, slot.block);
                            prop_assert!(src != dst);
                            for j in 0..slot.offset {
                                self.mem[dst as usize][j] = self.mem[src as usize][j];
                            }
                        }
                    }
                    _ => unchanged(&self.mgr)?,
                }
            }
            Op::Fork { parent, child } => {
                let got = self.mgr.fork(*parent, *child);
                prop_assert_eq!(&got, &self.model.fork(*parent, *child));
                match got {
                    Ok(()) => {
                        let w = self.written.get(parent).copied().unwrap_or(0);
                        self.written.insert(*child, w);
                    }
                    Err(_) => unchanged(&self.mgr)?,
                }
            }
            Op::Free { seq } => {
                let got = self.mgr.free(*seq);
                prop_assert_eq!(&got, &self.model.free_seq(*seq));
                match got {
                    Ok(()) => {
                        self.written.remove(seq);
                    }
                    Err(_) => unchanged(&self.mgr)?,
                }
            }
            Op::MarkComputed { seq, back } => {
                let len = self.mgr.num_tokens(*seq).unwrap_or(0);
                let n = usize::try_from(len as i64 - back).unwrap_or(0);
                let w = self.written.get(seq).copied().unwrap_or(0);
                if n <= len && n > w {
                    self.write(*seq, w, n)?;
                    self.written.insert(*seq, n);
                }
                let got = self.mgr.mark_computed(*seq, n);
                prop_assert_eq!(&got, &self.model.mark_computed(*seq, n));
                if got.is_err() {
                    unchanged(&self.mgr)?;
                }
            }
            Op::Lookup { tokens } => {
                prop_assert_eq!(self.mgr.lookup_prefix(tokens), self.model.lookup_prefix(tokens));
            }
        }
        self.check()
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let bs = self.bs;
        self.mgr.audit().map_err(TestCaseError::fail)?;
        prop_assert_eq!(self.mgr.stats(), self.model.stats());
        let live: BTreeSet<u64> = self.mgr.seq_ids().collect();
        prop_assert_eq!(&live, &self.model.seqs.keys().copied().collect::<BTreeSet<_>>());
        for (&id, (blocks, tokens)) in &self.model.seqs {
            prop_assert_eq!(self.mgr.block_table(id), Ok(blocks.as_slice()));
            prop_assert_eq!(self.mgr.tokens(id), Ok(tokens.as_slice()));
            prop_assert_eq!(self.mgr.num_tokens(id), Ok(tokens.len()));
            let written = self.written.get(&id).copied().unwrap_or(0);
            for pos in 0..written {
                let got = self.mem[blocks[pos / bs] as usize][pos % bs];
                prop_assert_eq!(got, Some(fingerprint(&tokens[..=pos])), "seq {} reads wrong K/V at {}", id, pos);
            }
        }
        for b in 0..self.model.rc.len() as u32 {
            prop_assert_eq!(self.mgr.ref_count(b), self.model.rc[b as usize], "ref count of block {}", b);
            let name = self.model.cached_as.get(&b);
            prop_assert_eq!(self.mgr.block_tokens(b), name.map(|p| &p[p.len() - bs..]), "block {} cached as", b);
            prop_assert_eq!(self.mgr.is_computed(b), self.model.computed.contains(&b), "block {} computed", b);
            if let (true, Some(prefix)) = (self.model.computed.contains(&b), name) {
                let start = prefix.len() - bs;
                for j in 0..bs {
                    let want = Some(fingerprint(&prefix[..start + j + 1]));
                    prop_assert_eq!(self.mem[b as usize][j], want, "computed block {} holds wrong K/V", b);
                }
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_ops_match_the_model_and_keep_every_invariant(
        n in 1usize..12,
        bs in 1usize..5,
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let mgr = BlockManager::new(n, bs).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut world = World { mgr, model: Ref::new(n, bs), bs, mem: vec![vec![None; bs]; n], written: BTreeMap::new() };
        for op in &ops {
            world.apply(op)?;
        }
        let ids: Vec<u64> = world.model.seqs.keys().copied().collect();
        for id in ids {
            world.apply(&Op::Free { seq: id })?;
        }
        let s = world.mgr.stats();
        prop_assert_eq!(s.used, 0);
        prop_assert_eq!(s.free + s.cached_evictable, n);
    }
}
