//! `BlockManager`: sequences, their block tables, and the verbs of the control plane.
//!
//! allocate (a prompt: share cached leading full blocks, take the rest), append (one token: a new
//! block when the last is full, copy-on-write when the last is partly filled and shared), fork
//! (share every block, ref counts +1), free (ref counts -1, tail blocks first so that a prefix
//! outlives its extensions on the LRU list), mark_computed (the caller has written the K/V of a
//! sequence's first n tokens), lookup_prefix (how much of a prompt is cached and computed).
//!
//! A block that becomes full, by allocate or append, is registered in the prefix cache at once, so
//! that a second prompt with the same prefix shares it instead of taking a duplicate; generated
//! text is shareable too. A registered block is only *computed* once the caller says its K/V are
//! written (`mark_computed`), and only computed blocks count as cached: `allocate`'s
//! `cached_tokens` and `lookup_prefix` stop at the first hit that is not computed, so a prompt that
//! shares a block another sequence is still prefilling computes it too instead of reading garbage.
//! A block taken fresh (free, or evicted from the LRU list) is not computed. Out of blocks is
//! `Ok(None)` with nothing changed.

use rustc_hash::FxHashMap;

use crate::error::{KvError, Result};
use crate::hash::{chain, ROOT};
use crate::pool::BlockPool;

/// What `allocate` gave a new sequence: its block table, and how many leading prompt tokens are
/// already in those blocks with their K/V computed (the caller computes K/V only for
/// `tokens[cached_tokens..]`, then calls `mark_computed`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub blocks: Vec<u32>,
    pub cached_tokens: usize,
}

/// Where `append`'s token goes: slot `offset` of `block`. When `copy` is `Some((src, dst))` the
/// caller first copies slots `0..offset` of block `src` into block `dst` (copy-on-write of a
/// shared, partly filled block; `dst == block`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub block: u32,
    pub offset: usize,
    pub copy: Option<(u32, u32)>,
}

/// Occupancy and prefix-cache counters. `used + free + cached_evictable == num_blocks`;
/// `hit_rate` is `prefix_hit_tokens / prefix_query_tokens` over successful allocations, where a
/// hit is what `allocate` reported as `cached_tokens`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub num_blocks: usize,
    pub block_size: usize,
    pub used: usize,
    pub free: usize,
    pub cached_evictable: usize,
    pub prefix_queries: u64,
    pub prefix_hit_tokens: u64,
    pub prefix_query_tokens: u64,
    pub hit_rate: f64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sequence {
    pub(crate) blocks: Vec<u32>,
    pub(crate) tokens: Vec<u32>,
    /// Chain value of the last full block (`ROOT` while there is none).
    pub(crate) tail_chain: u128,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BlockManager {
    pub(crate) block_size: usize,
    pub(crate) pool: BlockPool,
    pub(crate) seqs: FxHashMap<u64, Sequence>,
    prefix_queries: u64,
    prefix_hit_tokens: u64,
    prefix_query_tokens: u64,
    /// Whether `allocate` reuses cached blocks (on by default).
    prefix_caching: bool,
}

impl BlockManager {
    /// A pool of `num_blocks` blocks of `block_size` token slots each.
    pub fn new(num_blocks: usize, block_size: usize) -> Result<Self> {
        if num_blocks == 0 {
            return Err(KvError::InvalidSize { name: "num_blocks", value: num_blocks });
        }
        if block_size == 0 {
            return Err(KvError::InvalidSize { name: "block_size", value: block_size });
        }
        // u32::MAX is the LRU list's end marker, so ids stop below it.
        let n = u32::try_from(num_blocks).map_err(|_| KvError::TooManyBlocks(num_blocks))?;
        Ok(BlockManager {
            block_size,
            pool: BlockPool::new(n),
            seqs: FxHashMap::default(),
            prefix_queries: 0,
            prefix_hit_tokens: 0,
            prefix_query_tokens: 0,
            prefix_caching: true,
        })
    }

    /// Turns prefix reuse on or off: when off, `allocate` gives every prompt fresh blocks and
    /// `lookup_prefix` answers 0 (full blocks are still named, so turning it back on finds them).
    pub fn set_prefix_caching(&mut self, enabled: bool) {
        self.prefix_caching = enabled;
    }

    pub fn prefix_caching(&self) -> bool {
        self.prefix_caching
    }

    /// Blocks for a new sequence's prompt. Leading full blocks found in the prefix cache are
    /// shared; at least the last prompt token is always left uncached (the model must run it to
    /// get logits), so at most `(len - 1) / block_size` blocks are reused. `cached_tokens` counts
    /// the leading shared blocks that are computed; a shared block after them is in the table but
    /// its K/V are the caller's to compute. `Ok(None)`, with nothing changed, when the free and
    /// evictable blocks do not cover the rest.
    pub fn allocate(&mut self, seq_id: u64, tokens: &[u32]) -> Result<Option<Allocation>> {
        if self.seqs.contains_key(&seq_id) {
            return Err(KvError::DuplicateSeq(seq_id));
        }
        if tokens.is_empty() {
            return Err(KvError::EmptyPrompt(seq_id));
        }
        let bs = self.block_size;
        let num_blocks = tokens.len().div_ceil(bs);
        let max_reuse = (tokens.len() - 1) / bs;
        let mut chains = Vec::with_capacity(tokens.len() / bs);
        let mut reused = Vec::new();
        let mut parent = ROOT;
        // Leading reused blocks whose K/V are written: the ones the caller may skip.
        let mut cached_blocks = 0;
        for chunk in tokens.chunks_exact(bs) {
            let hash = chain(parent, chunk);
            if self.prefix_caching && reused.len() == chains.len() && reused.len() < max_reuse {
                if let Some((block, computed)) = self.pool.lookup(hash, parent, chunk) {
                    if computed && cached_blocks == reused.len() {
                        cached_blocks += 1;
                    }
                    reused.push(block);
                }
            }
            chains.push(hash);
            parent = hash;
        }
        // Reused blocks that sit on the LRU list are not available for the fresh part.
        let revived = reused.iter().filter(|&&b| self.pool.ref_count(b) == 0).count();
        let fresh = num_blocks - reused.len();
        if fresh > self.pool.available() - revived {
            return Ok(None);
        }
        for &block in &reused {
            self.pool.share(block);
        }
        let mut blocks = reused;
        let reused_blocks = blocks.len();
        blocks.extend((0..fresh).map_while(|_| self.pool.take()));
        debug_assert_eq!(blocks.len(), num_blocks, "capacity check and take disagree");
        for (i, (chunk, &hash)) in tokens.chunks_exact(bs).zip(&chains).enumerate().skip(reused_blocks) {
            let parent = if i == 0 { ROOT } else { chains[i - 1] };
            self.pool.register(blocks[i], hash, parent, chunk);
        }
        let cached_tokens = cached_blocks * bs;
        self.prefix_queries += 1;
        self.prefix_query_tokens += tokens.len() as u64;
        self.prefix_hit_tokens += cached_tokens as u64;
        let tail_chain = chains.last().copied().unwrap_or(ROOT);
        self.seqs.insert(seq_id, Sequence { blocks: blocks.clone(), tokens: tokens.to_vec(), tail_chain });
        Ok(Some(Allocation { blocks, cached_tokens }))
    }

    /// Adds one token to `seq_id` and says which slot to write its K/V to. `Ok(None)`, with
    /// nothing changed, when a new block is needed and none is available.
    pub fn append(&mut self, seq_id: u64, token: u32) -> Result<Option<Slot>> {
        let bs = self.block_size;
        let seq = self.seqs.get_mut(&seq_id).ok_or(KvError::UnknownSeq(seq_id))?;
        let offset = seq.tokens.len() % bs;
        let slot = match seq.blocks.last().copied() {
            Some(last) if offset != 0 && self.pool.ref_count(last) == 1 => Slot { block: last, offset, copy: None },
            Some(last) if offset != 0 => {
                // Copy-on-write: the partly filled last block is shared with a fork.
                let Some(dst) = self.pool.take() else { return Ok(None) };
                self.pool.release(last);
                if let Some(entry) = seq.blocks.last_mut() {
                    *entry = dst;
                }
                Slot { block: dst, offset, copy: Some((last, dst)) }
            }
            _ => {
                let Some(dst) = self.pool.take() else { return Ok(None) };
                seq.blocks.push(dst);
                Slot { block: dst, offset: 0, copy: None }
            }
        };
        seq.tokens.push(token);
        if seq.tokens.len() % bs == 0 {
            let full = &seq.tokens[seq.tokens.len() - bs..];
            let hash = chain(seq.tail_chain, full);
            self.pool.register(slot.block, hash, seq.tail_chain, full);
            seq.tail_chain = hash;
        }
        Ok(Some(slot))
    }

    /// `child` becomes a copy of `parent` that shares all its blocks (ref counts +1); the first
    /// append to a shared, partly filled block copies it.
    pub fn fork(&mut self, parent: u64, child: u64) -> Result<()> {
        let seq = self.seqs.get(&parent).ok_or(KvError::UnknownSeq(parent))?.clone();
        if self.seqs.contains_key(&child) {
            return Err(KvError::DuplicateSeq(child));
        }
        for &block in &seq.blocks {
            self.pool.share(block);
        }
        self.seqs.insert(child, seq);
        Ok(())
    }

    /// Drops `seq_id`. Its blocks lose a holder, tail first: cached blocks that nobody holds wait
    /// on the LRU list, the others are free.
    pub fn free(&mut self, seq_id: u64) -> Result<()> {
        let seq = self.seqs.remove(&seq_id).ok_or(KvError::UnknownSeq(seq_id))?;
        for &block in seq.blocks.iter().rev() {
            self.pool.release(block);
        }
        Ok(())
    }

    /// Records that the caller has written the K/V of the first `num_tokens` tokens of `seq_id`:
    /// every registered full block among them becomes computed, so later prompts skip it. A full
    /// block that duplicates a cached one is not registered and stays a private copy. Never
    /// un-marks (a smaller `num_tokens` than before changes nothing); partial blocks are left for
    /// a later call. `PastEnd` when `num_tokens` exceeds the sequence's tokens.
    pub fn mark_computed(&mut self, seq_id: u64, num_tokens: usize) -> Result<()> {
        let seq = self.seqs.get(&seq_id).ok_or(KvError::UnknownSeq(seq_id))?;
        let len = seq.tokens.len();
        if num_tokens > len {
            return Err(KvError::PastEnd { seq_id, num_tokens, len });
        }
        for &block in seq.blocks.iter().take(num_tokens / self.block_size) {
            self.pool.mark_computed(block);
        }
        Ok(())
    }

    /// How many leading tokens of `tokens` are held by cached, computed full blocks (no cap, no
    /// side effects, not counted in the hit rate).
    pub fn lookup_prefix(&self, tokens: &[u32]) -> usize {
        if !self.prefix_caching {
            return 0;
        }
        let mut parent = ROOT;
        let mut hits = 0;
        for chunk in tokens.chunks_exact(self.block_size) {
            let hash = chain(parent, chunk);
            if self.pool.lookup(hash, parent, chunk).is_none_or(|(_, computed)| !computed) {
                break;
            }
            hits += 1;
            parent = hash;
        }
        hits * self.block_size
    }

    /// The block table of `seq_id` (logical block i -> physical block id).
    pub fn block_table(&self, seq_id: u64) -> Result<&[u32]> {
        self.seq(seq_id).map(|s| s.blocks.as_slice())
    }

    /// The token ids of `seq_id`, prompt and appended.
    pub fn tokens(&self, seq_id: u64) -> Result<&[u32]> {
        self.seq(seq_id).map(|s| s.tokens.as_slice())
    }

    pub fn num_tokens(&self, seq_id: u64) -> Result<usize> {
        self.seq(seq_id).map(|s| s.tokens.len())
    }

    /// Whether a prompt of `n_tokens` fits now, counting no prefix hits (a conservative answer).
    pub fn can_allocate(&self, n_tokens: usize) -> bool {
        n_tokens.div_ceil(self.block_size) <= self.pool.available()
    }

    /// How many sequence tables hold `block` (0 for an unknown id).
    pub fn ref_count(&self, block: u32) -> u32 {
        self.pool.ref_count(block)
    }

    /// The token ids a block holds if it is in the prefix cache.
    pub fn block_tokens(&self, block: u32) -> Option<&[u32]> {
        self.pool.block_tokens(block)
    }

    /// Whether `block` is in the prefix cache with its K/V computed (false for an unknown id).
    pub fn is_computed(&self, block: u32) -> bool {
        self.pool.is_computed(block)
    }

    /// The live sequence ids, in no particular order.
    pub fn seq_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.seqs.keys().copied()
    }

    pub fn stats(&self) -> Stats {
        let num_blocks = self.pool.num_blocks();
        let free = self.pool.free.len();
        let cached_evictable = self.pool.evictable.len();
        let hit_rate = if self.prefix_query_tokens == 0 {
            0.0
        } else {
            self.prefix_hit_tokens as f64 / self.prefix_query_tokens as f64
        };
        Stats {
            num_blocks,
            block_size: self.block_size,
            used: num_blocks - free - cached_evictable,
            free,
            cached_evictable,
            prefix_queries: self.prefix_queries,
            prefix_hit_tokens: self.prefix_hit_tokens,
            prefix_query_tokens: self.prefix_query_tokens,
            hit_rate,
        }
    }

    fn seq(&self, seq_id: u64) -> Result<&Sequence> {
        self.seqs.get(&seq_id).ok_or(KvError::UnknownSeq(seq_id))
    }
}
