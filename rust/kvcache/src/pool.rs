//! The physical blocks: reference counts, the free list, the prefix cache and its LRU list.
//!
//! Every block is in exactly one state: held (ref count > 0, by one or more sequence tables),
//! free (ref count 0, on the free list, no cached content) or evictable (ref count 0, still in the
//! prefix cache, on the LRU list). New blocks come from the free list first, then by evicting the
//! least recently freed cached block; a cached block that a new prompt reuses is taken back off
//! the LRU list. A cached block is also computed or not (the caller has written its K/V, or not
//! yet); the flag lives in the cache entry, so only a registered full block can carry it and a
//! block that is evicted or taken from the free list starts out not computed. `BlockManager`
//! (manager.rs) owns the sequences and calls these primitives.

use rustc_hash::FxHashMap;

use crate::lru::LruList;

/// A full block in the prefix cache: the block id plus what its chain value was computed from,
/// compared on every lookup so that a hash collision is never served as a hit, and whether the
/// caller has written its K/V (`computed`: only then may a new prompt skip computing it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CachedBlock {
    pub(crate) block: u32,
    pub(crate) parent: u128,
    pub(crate) tokens: Box<[u32]>,
    pub(crate) computed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlockPool {
    pub(crate) ref_counts: Vec<u32>,
    /// A stack: the most recently freed block is handed out first (its memory is warm).
    pub(crate) free: Vec<u32>,
    pub(crate) evictable: LruList,
    /// Chain value -> the block holding that prefix's last full block.
    pub(crate) cache: FxHashMap<u128, CachedBlock>,
    /// Block -> the chain value it is cached under (write-once until evicted).
    pub(crate) cached_as: Vec<Option<u128>>,
}

impl BlockPool {
    /// `num_blocks` must fit below `u32::MAX` (checked by the manager).
    pub(crate) fn new(num_blocks: u32) -> Self {
        let n = num_blocks as usize;
        BlockPool {
            ref_counts: vec![0; n],
            // Reversed so that a fresh pool hands out 0, 1, 2, ...
            free: (0..num_blocks).rev().collect(),
            evictable: LruList::new(n),
            cache: FxHashMap::default(),
            cached_as: vec![None; n],
        }
    }

    pub(crate) fn num_blocks(&self) -> usize {
        self.ref_counts.len()
    }

    /// Blocks a caller could get now: free plus evictable.
    pub(crate) fn available(&self) -> usize {
        self.free.len() + self.evictable.len()
    }

    pub(crate) fn ref_count(&self, block: u32) -> u32 {
        self.ref_counts.get(block as usize).copied().unwrap_or(0)
    }

    /// A block for new content (ref count 1): a free one, else the least recently used cached one,
    /// whose cache entry is dropped. `None` when every block is held.
    pub(crate) fn take(&mut self) -> Option<u32> {
        let block = match self.free.pop() {
            Some(block) => block,
            None => {
                let block = self.evictable.pop_front()?;
                if let Some(hash) = self.cached_as[block as usize].take() {
                    self.cache.remove(&hash);
                }
                block
            }
        };
        debug_assert_eq!(self.ref_counts[block as usize], 0, "block {block} handed out while held");
        self.ref_counts[block as usize] = 1;
        Some(block)
    }

    /// One more holder of `block` (a fork, or a prompt reusing a cached block).
    pub(crate) fn share(&mut self, block: u32) {
        let rc = &mut self.ref_counts[block as usize];
        if *rc == 0 {
            let was_evictable = self.evictable.remove(block);
            debug_assert!(was_evictable, "shared block {block} was neither held nor cached");
        }
        *rc += 1;
    }

    /// One holder fewer; at zero the block waits on the LRU list if cached, else it is free.
    pub(crate) fn release(&mut self, block: u32) {
        let rc = &mut self.ref_counts[block as usize];
        debug_assert!(*rc > 0, "block {block} released more often than held");
        *rc = rc.saturating_sub(1);
        if *rc == 0 {
            if self.cached_as[block as usize].is_some() {
                self.evictable.push_back(block);
            } else {
                self.free.push(block);
            }
        }
    }

    /// The cached block for chain value `hash`, if it really holds `tokens` after `parent`, and
    /// whether it is computed.
    pub(crate) fn lookup(&self, hash: u128, parent: u128, tokens: &[u32]) -> Option<(u32, bool)> {
        let entry = self.cache.get(&hash)?;
        (entry.parent == parent && *entry.tokens == *tokens).then_some((entry.block, entry.computed))
    }

    /// Registers the just-filled `block` under `hash`. A name already taken (the same prefix
    /// computed twice, e.g. by two forks, or a collision) keeps its first block; the newcomer
    /// stays uncached and goes to the free list when released.
    pub(crate) fn register(&mut self, block: u32, hash: u128, parent: u128, tokens: &[u32]) {
        debug_assert!(self.cached_as[block as usize].is_none(), "block {block} registered twice");
        if let std::collections::hash_map::Entry::Vacant(slot) = self.cache.entry(hash) {
            slot.insert(CachedBlock { block, parent, tokens: tokens.into(), computed: false });
            self.cached_as[block as usize] = Some(hash);
        }
    }

    /// The cache entry of `block`, if it is registered.
    fn entry(&self, block: u32) -> Option<&CachedBlock> {
        let hash = self.cached_as.get(block as usize).copied().flatten()?;
        self.cache.get(&hash)
    }

    /// Token ids a cached block was registered with.
    pub(crate) fn block_tokens(&self, block: u32) -> Option<&[u32]> {
        self.entry(block).map(|entry| &*entry.tokens)
    }

    /// Whether `block` is registered and its K/V are written.
    pub(crate) fn is_computed(&self, block: u32) -> bool {
        self.entry(block).is_some_and(|entry| entry.computed)
    }

    /// Records that the K/V of `block` are written. A block that is not registered (not full, or
    /// a duplicate of a cached block) can never be a hit, so there is nothing to record.
    pub(crate) fn mark_computed(&mut self, block: u32) {
        let Some(hash) = self.cached_as.get(block as usize).copied().flatten() else { return };
        if let Some(entry) = self.cache.get_mut(&hash) {
            entry.computed = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_colliding_name_with_other_tokens_or_parent_is_no_hit() {
        // Forge a collision: register under a name that other content would also look up.
        let mut pool = BlockPool::new(4);
        let block = pool.take();
        assert_eq!(block, Some(0));
        pool.register(0, 42, 7, &[1, 2]);
        assert_eq!(pool.lookup(42, 7, &[1, 2]), Some((0, false)));
        assert_eq!(pool.lookup(42, 7, &[1, 3]), None);
        assert_eq!(pool.lookup(42, 8, &[1, 2]), None);
        // The name stays with its first block; a second registration leaves the newcomer uncached.
        let other = pool.take();
        assert_eq!(other, Some(1));
        pool.register(1, 42, 7, &[1, 3]);
        assert_eq!(pool.block_tokens(1), None);
        assert_eq!(pool.block_tokens(0), Some(&[1, 2][..]));
        // Only the registered block can be computed.
        pool.mark_computed(1);
        pool.mark_computed(0);
        assert!(!pool.is_computed(1));
        assert_eq!(pool.lookup(42, 7, &[1, 2]), Some((0, true)));
        pool.release(1);
        pool.release(0);
        assert_eq!(pool.free.last(), Some(&1));
        assert_eq!(pool.evictable.iter().collect::<Vec<_>>(), [0]);
        // Evicted and reused, the block is no longer cached, hence not computed.
        pool.free.clear();
        assert_eq!(pool.take(), Some(0));
        assert!(!pool.is_computed(0));
        assert_eq!(pool.lookup(42, 7, &[1, 2]), None);
    }
}
