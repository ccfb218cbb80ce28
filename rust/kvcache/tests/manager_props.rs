//! Property test: random sequences of allocate / append / fork / free over a few sequence ids and
//! a small pool, against a shadow model of each sequence's tokens and a simulated K/V memory.
//!
//! Oracle: the simulated memory. The test writes each token where the manager says (prompt tokens
//! past `cached_tokens` into the allocated blocks, appended tokens into the returned slot after
//! performing the copy-on-write copy), then reads every live sequence back through its block table:
//! any leaked, double-freed, wrongly shared, prematurely evicted or aliased block shows up as a
//! wrong token. On top: `audit()` after every op, ref counts recomputed from the tables, the stats
//! partition, `Ok(None)` and `Err` leaving the manager unchanged, and nothing held after freeing all.

use std::collections::{BTreeMap, BTreeSet};

use kvcache::{BlockManager, KvError};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Allocate { seq: u64, tokens: Vec<u32> },
    Append { seq: u64, token: u32 },
    Fork { parent: u64, child: u64 },
    Free { seq: u64 },
}

const SEQS: u64 = 5;

fn op() -> impl Strategy<Value = Op> {
    // A two-letter alphabet and a few shared stems make prefix hits (and collisions of content,
    // not of hashes) common.
    let stem = prop_oneof![Just(vec![]), Just(vec![0u32, 1, 0, 1, 1, 0]), Just(vec![1u32, 1, 1, 1])];
    let prompt = (stem, 0usize..7, proptest::collection::vec(0u32..2, 0..6)).prop_map(|(s, k, tail)| {
        let mut t: Vec<u32> = s.into_iter().take(k).collect();
        t.extend(tail);
        t
    });
    prop_oneof![
        3 => (0..SEQS, prompt).prop_map(|(seq, tokens)| Op::Allocate { seq, tokens }),
        5 => (0..SEQS, 0u32..2).prop_map(|(seq, token)| Op::Append { seq, token }),
        2 => (0..SEQS, 0..SEQS).prop_map(|(parent, child)| Op::Fork { parent, child }),
        2 => (0..SEQS).prop_map(|seq| Op::Free { seq }),
    ]
}

struct World {
    mgr: BlockManager,
    bs: usize,
    n: usize,
    shadow: BTreeMap<u64, Vec<u32>>,
    mem: Vec<Vec<Option<u32>>>,
}

impl World {
    fn write(&mut self, block: u32, offset: usize, token: u32) {
        self.mem[block as usize][offset] = Some(token);
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let before = self.mgr.clone();
        let bs = self.bs;
        match op {
            Op::Allocate { seq, tokens } => {
                let expect_err = self.shadow.contains_key(seq) || tokens.is_empty();
                let seen = self.mgr.lookup_prefix(tokens);
                let available = self.mgr.stats().free + self.mgr.stats().cached_evictable;
                match self.mgr.allocate(*seq, tokens) {
                    Err(e) => {
                        prop_assert!(expect_err, "unexpected {e}");
                        prop_assert_eq!(&self.mgr, &before);
                    }
                    Ok(None) => {
                        prop_assert!(!expect_err);
                        prop_assert!(tokens.len().div_ceil(bs) > available);
                        prop_assert_eq!(&self.mgr, &before);
                    }
                    Ok(Some(a)) => {
                        prop_assert!(!expect_err);
                        prop_assert_eq!(a.cached_tokens, seen.min((tokens.len() - 1) / bs * bs));
                        prop_assert_eq!(a.blocks.len(), tokens.len().div_ceil(bs));
                        for (pos, &t) in tokens.iter().enumerate().skip(a.cached_tokens) {
                            self.write(a.blocks[pos / bs], pos % bs, t);
                        }
                        self.shadow.insert(*seq, tokens.clone());
                    }
                }
            }
            Op::Append { seq, token } => {
                let available = self.mgr.stats().free + self.mgr.stats().cached_evictable;
                match self.mgr.append(*seq, *token) {
                    Err(e) => {
                        prop_assert_eq!(e, KvError::UnknownSeq(*seq));
                        prop_assert!(!self.shadow.contains_key(seq));
                        prop_assert_eq!(&self.mgr, &before);
                    }
                    Ok(None) => {
                        prop_assert_eq!(available, 0);
                        prop_assert_eq!(&self.mgr, &before);
                    }
                    Ok(Some(slot)) => {
                        let tokens = self.shadow.get_mut(seq).ok_or(TestCaseError::fail("append to a freed seq"))?;
                        prop_assert_eq!(slot.offset, tokens.len() % bs);
                        tokens.push(*token);
                        if let Some((src, dst)) = slot.copy {
                            prop_assert_eq!(dst, slot.block);
                            prop_assert!(src != dst);
                            for j in 0..slot.offset {
                                self.mem[dst as usize][j] = self.mem[src as usize][j];
                            }
                        }
                        self.write(slot.block, slot.offset, *token);
                    }
                }
            }
            Op::Fork { parent, child } => match self.mgr.fork(*parent, *child) {
                Err(e) => {
                    let expected = if !self.shadow.contains_key(parent) {
                        KvError::UnknownSeq(*parent)
                    } else {
                        KvError::DuplicateSeq(*child)
                    };
                    prop_assert_eq!(e, expected);
                    prop_assert!(self.shadow.contains_key(child) || !self.shadow.contains_key(parent));
                    prop_assert_eq!(&self.mgr, &before);
                }
                Ok(()) => {
                    let tokens = self.shadow.get(parent).cloned().ok_or(TestCaseError::fail("fork of a freed seq"))?;
                    prop_assert!(self.shadow.insert(*child, tokens).is_none());
                }
            },
            Op::Free { seq } => match self.mgr.free(*seq) {
                Err(e) => {
                    prop_assert_eq!(e, KvError::UnknownSeq(*seq));
                    prop_assert!(!self.shadow.contains_key(seq));
                    prop_assert_eq!(&self.mgr, &before);
                }
                Ok(()) => {
                    prop_assert!(self.shadow.remove(seq).is_some());
                }
            },
        }
        self.check()
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let bs = self.bs;
        self.mgr.audit().map_err(TestCaseError::fail)?;
        let mut refs = vec![0u32; self.n];
        let live: BTreeSet<u64> = self.mgr.seq_ids().collect();
        prop_assert_eq!(&live, &self.shadow.keys().copied().collect::<BTreeSet<_>>());
        for (&id, tokens) in &self.shadow {
            let table = self.mgr.block_table(id).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(self.mgr.num_tokens(id).ok(), Some(tokens.len()));
            prop_assert_eq!(self.mgr.tokens(id).ok(), Some(tokens.as_slice()));
            prop_assert_eq!(table.len(), tokens.len().div_ceil(bs));
            prop_assert_eq!(table.iter().collect::<BTreeSet<_>>().len(), table.len(), "block twice in a table");
            for &b in table {
                refs[b as usize] += 1;
            }
            for (pos, &t) in tokens.iter().enumerate() {
                let block = table[pos / bs];
                prop_assert_eq!(
                    self.mem[block as usize][pos % bs],
                    Some(t),
                    "seq {} reads a wrong token at {}",
                    id,
                    pos
                );
            }
            for (i, chunk) in tokens.chunks_exact(bs).enumerate() {
                if let Some(cached) = self.mgr.block_tokens(table[i]) {
                    prop_assert_eq!(cached, chunk);
                }
            }
        }
        for (b, &r) in refs.iter().enumerate() {
            prop_assert_eq!(self.mgr.ref_count(b as u32), r, "ref count of block {}", b);
        }
        let s = self.mgr.stats();
        prop_assert_eq!(s.used, refs.iter().filter(|&&r| r > 0).count());
        prop_assert_eq!(s.used + s.free + s.cached_evictable, self.n);
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_ops_keep_every_invariant(
        n in 1usize..12,
        bs in 1usize..5,
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let mgr = BlockManager::new(n, bs).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut world = World { mgr, bs, n, shadow: BTreeMap::new(), mem: vec![vec![None; bs]; n] };
        for op in &ops {
            world.apply(op)?;
        }
        let ids: Vec<u64> = world.shadow.keys().copied().collect();
        for id in ids {
            world.apply(&Op::Free { seq: id })?;
        }
        let s = world.mgr.stats();
        prop_assert_eq!(s.used, 0);
        prop_assert_eq!(s.free + s.cached_evictable, n);
    }
}
