//! `BlockManager::audit`: a from-scratch check of every invariant the verbs maintain, for tests
//! and for debugging a scheduler. O(blocks + tokens); never called by the verbs themselves.
//!
//! Checked: each block is exactly one of held / free / evictable; a block's ref count equals the
//! number of table slots that name it; free-list and LRU entries are distinct and consistent with
//! the cache; each cache entry sits under the chain value of its own tokens and parent; each
//! table has `ceil(tokens / block_size)` distinct blocks; a cached full block of a sequence holds
//! exactly that sequence's tokens after exactly its prefix. That a computed block is a registered
//! full block needs no check: the flag lives in the block's cache entry, dropped on eviction.

use crate::hash::{chain, ROOT};
use crate::manager::BlockManager;

impl BlockManager {
    /// `Err` with a description of the first broken invariant found.
    pub fn audit(&self) -> Result<(), String> {
        let pool = &self.pool;
        let n = pool.num_blocks();
        let bs = self.block_size;
        let mut holders = vec![0u32; n];
        for (&id, seq) in &self.seqs {
            if seq.tokens.is_empty() || seq.blocks.len() != seq.tokens.len().div_ceil(bs) {
                return Err(format!("seq {id}: {} blocks for {} tokens", seq.blocks.len(), seq.tokens.len()));
            }
            let mut parent = ROOT;
            for (i, &block) in seq.blocks.iter().enumerate() {
                let slot = holders.get_mut(block as usize).ok_or(format!("seq {id}: block {block} out of range"))?;
                *slot += 1;
                if seq.blocks[..i].contains(&block) {
                    return Err(format!("seq {id}: block {block} twice in one table"));
                }
                let Some(chunk) = seq.tokens.get(i * bs..(i + 1) * bs) else { continue };
                let hash = chain(parent, chunk);
                if let Some(h) = pool.cached_as[block as usize] {
                    if h != hash || pool.lookup(h, parent, chunk).map(|(b, _)| b) != Some(block) {
                        return Err(format!("seq {id}: cached block {block} does not hold its tokens"));
                    }
                }
                parent = hash;
            }
            if parent != seq.tail_chain {
                return Err(format!("seq {id}: stale tail chain"));
            }
        }
        if holders != pool.ref_counts {
            return Err(format!("ref counts {:?} != table references {holders:?}", pool.ref_counts));
        }
        let mut on_free = vec![false; n];
        for &block in &pool.free {
            let b = block as usize;
            if b >= n || on_free[b] || holders[b] != 0 || pool.cached_as[b].is_some() {
                return Err(format!("free list entry {block} is duplicated, held or cached"));
            }
            on_free[b] = true;
        }
        let lru: Vec<u32> = pool.evictable.iter().collect();
        if lru.len() != pool.evictable.len() {
            return Err(format!("LRU list links {} blocks, counts {}", lru.len(), pool.evictable.len()));
        }
        for b in 0..n {
            let block = b as u32;
            let on_lru = pool.evictable.contains(block);
            let states = usize::from(holders[b] > 0) + usize::from(on_free[b]) + usize::from(on_lru);
            if states != 1 {
                return Err(format!("block {block} is in {states} of held/free/evictable"));
            }
            if on_lru && pool.cached_as[b].is_none() {
                return Err(format!("evictable block {block} is not cached"));
            }
            if let Some(h) = pool.cached_as[b] {
                match pool.cache.get(&h) {
                    Some(e) if e.block == block && e.tokens.len() == bs && chain(e.parent, &e.tokens) == h => {}
                    _ => return Err(format!("cache entry of block {block} is inconsistent")),
                }
            }
        }
        if pool.cache.values().any(|e| pool.cached_as.get(e.block as usize).copied().flatten().is_none()) {
            return Err("a cache entry names a block that is not marked cached".into());
        }
        Ok(())
    }
}
