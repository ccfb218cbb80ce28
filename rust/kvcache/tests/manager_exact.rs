//! Exact behaviour of the block manager on small hand-worked cases: which block ids come back,
//! prefix reuse and its cap, which shared blocks count as cached (computed ones, leading only),
//! least-recently-used eviction order, copy-on-write, capacity answers, stats, and the error
//! messages.

use kvcache::{Allocation, BlockManager, KvError, Slot};

fn mgr(n: usize, bs: usize) -> BlockManager {
    match BlockManager::new(n, bs) {
        Ok(m) => m,
        Err(e) => unreachable!("{e}"),
    }
}

fn alloc(m: &mut BlockManager, seq: u64, tokens: &[u32]) -> Option<Allocation> {
    let out = m.allocate(seq, tokens);
    assert!(m.audit().is_ok(), "{:?}", m.audit());
    out.ok().flatten()
}

fn append(m: &mut BlockManager, seq: u64, token: u32) -> Option<Slot> {
    let out = m.append(seq, token);
    assert!(m.audit().is_ok(), "{:?}", m.audit());
    out.ok().flatten()
}

/// The caller has written the K/V of the first `n` tokens of `seq`.
fn computed(m: &mut BlockManager, seq: u64, n: usize) {
    assert_eq!(m.mark_computed(seq, n), Ok(()));
    assert!(m.audit().is_ok(), "{:?}", m.audit());
}

#[test]
fn two_prompts_sharing_two_full_blocks_share_them() {
    let mut m = mgr(16, 4);
    let a: Vec<u32> = (0..8).chain([100, 101]).collect();
    let b: Vec<u32> = (0..8).chain([200]).collect();
    assert_eq!(alloc(&mut m, 1, &a), Some(Allocation { blocks: vec![0, 1, 2], cached_tokens: 0 }));
    // Registered at once, but not cached until the caller has written the K/V.
    assert_eq!(m.lookup_prefix(&b), 0);
    computed(&mut m, 1, 10);
    assert_eq!(m.lookup_prefix(&b), 8);
    assert_eq!(alloc(&mut m, 2, &b), Some(Allocation { blocks: vec![0, 1, 3], cached_tokens: 8 }));
    assert_eq!((m.ref_count(0), m.ref_count(1), m.ref_count(2), m.ref_count(3)), (2, 2, 1, 1));
    let s = m.stats();
    assert_eq!((s.used, s.free, s.cached_evictable), (4, 12, 0));
    assert_eq!((s.prefix_queries, s.prefix_hit_tokens, s.prefix_query_tokens), (2, 8, 19));
    assert!((s.hit_rate - 8.0 / 19.0).abs() < 1e-12);
    // A different first block breaks the chain even when the second block's tokens match.
    let c: Vec<u32> = [9, 1, 2, 3].into_iter().chain(4..8).collect();
    assert_eq!(m.lookup_prefix(&c), 0);
}

#[test]
fn at_least_one_prompt_token_is_left_uncached() {
    let mut m = mgr(8, 4);
    let p: Vec<u32> = (0..8).collect();
    assert_eq!(alloc(&mut m, 1, &p), Some(Allocation { blocks: vec![0, 1], cached_tokens: 0 }));
    computed(&mut m, 1, 8);
    assert_eq!(m.lookup_prefix(&p), 8);
    // Fully cached, yet only the first block is reused: the last token must be computed.
    assert_eq!(alloc(&mut m, 2, &p), Some(Allocation { blocks: vec![0, 2], cached_tokens: 4 }));
    // The recomputed block duplicates a cached one and stays out of the cache.
    assert_eq!(m.block_tokens(2), None);
    assert_eq!(alloc(&mut m, 3, &p[..4]), Some(Allocation { blocks: vec![3], cached_tokens: 0 }));
}

#[test]
fn freed_cached_blocks_are_evicted_least_recently_used_first() {
    let mut m = mgr(4, 2);
    assert_eq!(alloc(&mut m, 1, &[1, 2, 3, 4]).map(|a| a.blocks), Some(vec![0, 1]));
    assert_eq!(alloc(&mut m, 2, &[5, 6, 7, 8]).map(|a| a.blocks), Some(vec![2, 3]));
    computed(&mut m, 1, 4);
    computed(&mut m, 2, 4);
    // Tail first: the LRU list becomes 1, 0 (seq 1), then 3, 2 (seq 2).
    assert_eq!(m.free(1), Ok(()));
    assert_eq!(m.free(2), Ok(()));
    let s = m.stats();
    assert_eq!((s.used, s.free, s.cached_evictable), (0, 0, 4));
    assert_eq!(alloc(&mut m, 3, &[9, 9]).map(|a| a.blocks), Some(vec![1]));
    assert_eq!(m.lookup_prefix(&[1, 2, 3, 4]), 2);
    assert_eq!(m.lookup_prefix(&[5, 6, 7, 8]), 4);
    // Block 0 is revived off the LRU list; the two fresh blocks evict 3 then 2.
    assert_eq!(alloc(&mut m, 4, &[1, 2, 3, 4, 0]), Some(Allocation { blocks: vec![0, 3, 2], cached_tokens: 2 }));
    assert_eq!(m.lookup_prefix(&[5, 6, 7, 8]), 0);
    // Block 3 now holds [3, 4] after [1, 2], registered but not computed yet.
    assert_eq!(m.lookup_prefix(&[1, 2, 3, 4]), 2);
    computed(&mut m, 4, 4);
    assert_eq!(m.lookup_prefix(&[1, 2, 3, 4]), 4);
    // Freeing seq 3 then seq 4 (tail first) leaves block 2 (partly filled, never cached) free and
    // the LRU list 1, 3, 0: free blocks go first, then the least recently freed cached ones.
    assert_eq!(m.free(3), Ok(()));
    assert_eq!(m.free(4), Ok(()));
    let order: Vec<u32> = (10..14).filter_map(|s| alloc(&mut m, s, &[s as u32]).map(|a| a.blocks[0])).collect();
    assert_eq!(order, [2, 1, 3, 0]);
}

#[test]
fn appends_fill_blocks_and_share_generated_text() {
    let mut m = mgr(8, 2);
    assert_eq!(alloc(&mut m, 1, &[1, 2, 3]).map(|a| a.blocks), Some(vec![0, 1]));
    assert_eq!(append(&mut m, 1, 4), Some(Slot { block: 1, offset: 1, copy: None }));
    assert_eq!(append(&mut m, 1, 5), Some(Slot { block: 2, offset: 0, copy: None }));
    assert_eq!(m.block_table(1), Ok(&[0, 1, 2][..]));
    assert_eq!(m.num_tokens(1), Ok(5));
    // Blocks filled by append are registered; they count once their K/V are written.
    assert_eq!(m.lookup_prefix(&[1, 2, 3, 4, 5, 6]), 0);
    computed(&mut m, 1, 5);
    assert_eq!(m.lookup_prefix(&[1, 2, 3, 4, 5, 6]), 4);
    assert_eq!(m.free(1), Ok(()));
    assert_eq!(alloc(&mut m, 2, &[1, 2, 3, 4, 5]), Some(Allocation { blocks: vec![0, 1, 2], cached_tokens: 4 }));
}

#[test]
fn fork_shares_and_copies_on_write() {
    let mut m = mgr(8, 4);
    assert_eq!(alloc(&mut m, 1, &[1, 2, 3, 4, 5, 6]).map(|a| a.blocks), Some(vec![0, 1]));
    assert_eq!(m.fork(1, 2), Ok(()));
    assert_eq!((m.ref_count(0), m.ref_count(1)), (2, 2));
    assert_eq!(append(&mut m, 2, 7), Some(Slot { block: 2, offset: 2, copy: Some((1, 2)) }));
    assert_eq!((m.ref_count(1), m.ref_count(2)), (1, 1));
    // Now sole holder of block 1: seq 1 writes in place.
    assert_eq!(append(&mut m, 1, 8), Some(Slot { block: 1, offset: 2, copy: None }));
    assert_eq!(append(&mut m, 2, 9), Some(Slot { block: 2, offset: 3, copy: None }));
    assert_eq!(m.block_table(2), Ok(&[0, 2][..]));
    computed(&mut m, 2, 8);
    assert_eq!(m.lookup_prefix(&[1, 2, 3, 4, 5, 6, 7, 9]), 8);
    // A fork whose last block is full needs no copy: the next token opens a new block.
    assert_eq!(m.fork(2, 3), Ok(()));
    assert_eq!(append(&mut m, 3, 10), Some(Slot { block: 3, offset: 0, copy: None }));
    assert_eq!(m.ref_count(2), 2);
}

#[test]
fn out_of_blocks_is_none_and_changes_nothing() {
    let mut m = mgr(2, 2);
    assert!(m.can_allocate(4));
    assert!(!m.can_allocate(5));
    assert!(alloc(&mut m, 1, &[1, 2, 3]).is_some());
    let before = m.clone();
    assert_eq!(m.allocate(2, &[1]), Ok(None));
    assert_eq!(m, before);
    assert_eq!(append(&mut m, 1, 4), Some(Slot { block: 1, offset: 1, copy: None }));
    let before = m.clone();
    assert_eq!(m.append(1, 5), Ok(None));
    assert_eq!(m, before);
    assert_eq!(m.free(1), Ok(()));
    assert!(m.can_allocate(4));
    assert_eq!(m.stats().used, 0);
    // Copy-on-write needs a block too.
    assert!(alloc(&mut m, 1, &[1, 2, 3]).is_some());
    assert_eq!(m.fork(1, 2), Ok(()));
    let before = m.clone();
    assert_eq!(m.append(2, 9), Ok(None));
    assert_eq!(m, before);
}

#[test]
fn bad_input_is_a_typed_error_naming_the_value() {
    assert_eq!(BlockManager::new(0, 4).err().map(|e| e.to_string()), Some("num_blocks must be >= 1, got 0".into()));
    assert_eq!(BlockManager::new(4, 0).err().map(|e| e.to_string()), Some("block_size must be >= 1, got 0".into()));
    let huge = u32::MAX as usize + 1;
    assert_eq!(BlockManager::new(huge, 1).err(), Some(KvError::TooManyBlocks(huge)));
    let mut m = mgr(4, 2);
    assert_eq!(m.allocate(3, &[]), Err(KvError::EmptyPrompt(3)));
    assert!(alloc(&mut m, 3, &[1]).is_some());
    assert_eq!(m.allocate(3, &[1]).map_err(|e| e.to_string()), Err("seq id 3 already allocated".into()));
    assert_eq!(m.append(7, 1).map_err(|e| e.to_string()), Err("unknown seq id 7".into()));
    assert_eq!(m.free(7), Err(KvError::UnknownSeq(7)));
    assert_eq!(m.fork(7, 8), Err(KvError::UnknownSeq(7)));
    assert_eq!(m.fork(3, 3), Err(KvError::DuplicateSeq(3)));
    assert_eq!(m.block_table(7), Err(KvError::UnknownSeq(7)));
    assert_eq!(m.num_tokens(7), Err(KvError::UnknownSeq(7)));
    assert_eq!(m.mark_computed(7, 0), Err(KvError::UnknownSeq(7)));
    let before = m.clone();
    assert_eq!(
        m.mark_computed(3, 2).map_err(|e| e.to_string()),
        Err("seq id 3: num_tokens=2 is more than the sequence's 1 tokens".into())
    );
    assert_eq!(m, before);
    assert_eq!(m.free(3), Ok(()));
    assert_eq!(m.free(3), Err(KvError::UnknownSeq(3)));
    assert!(m.audit().is_ok());
}

#[test]
fn with_prefix_caching_off_every_prompt_gets_fresh_blocks() {
    let mut m = mgr(8, 4);
    m.set_prefix_caching(false);
    assert!(!m.prefix_caching());
    let p: Vec<u32> = (0..9).collect();
    assert_eq!(alloc(&mut m, 1, &p), Some(Allocation { blocks: vec![0, 1, 2], cached_tokens: 0 }));
    computed(&mut m, 1, 9);
    assert_eq!(m.lookup_prefix(&p), 0);
    assert_eq!(alloc(&mut m, 2, &p), Some(Allocation { blocks: vec![3, 4, 5], cached_tokens: 0 }));
    assert_eq!(m.stats().prefix_hit_tokens, 0);
    // Turned back on, the blocks the first prompt filled are found again.
    m.set_prefix_caching(true);
    assert_eq!(m.lookup_prefix(&p), 8);
    assert_eq!(alloc(&mut m, 3, &p).map(|a| a.cached_tokens), Some(8));
}

#[test]
fn a_shared_block_counts_as_cached_once_computed_and_marking_is_idempotent() {
    let mut m = mgr(8, 4);
    let a: Vec<u32> = (0..9).collect();
    let b: Vec<u32> = (0..8).chain([50]).collect();
    assert_eq!(alloc(&mut m, 1, &a), Some(Allocation { blocks: vec![0, 1, 2], cached_tokens: 0 }));
    // Seq 1 has not written its K/V: seq 2 shares its blocks but must compute them too.
    assert_eq!(alloc(&mut m, 2, &b), Some(Allocation { blocks: vec![0, 1, 3], cached_tokens: 0 }));
    assert_eq!((m.ref_count(0), m.ref_count(1)), (2, 2));
    assert_eq!(m.stats().prefix_hit_tokens, 0);
    computed(&mut m, 1, 4);
    assert_eq!((m.is_computed(0), m.is_computed(1)), (true, false));
    assert_eq!(m.lookup_prefix(&a), 4);
    // A partly written block is not computed; marking less than before un-marks nothing.
    computed(&mut m, 1, 7);
    assert_eq!(m.lookup_prefix(&a), 4);
    let before = m.clone();
    computed(&mut m, 1, 0);
    computed(&mut m, 1, 4);
    assert_eq!(m, before);
    // Either holder may mark a shared block.
    computed(&mut m, 2, 8);
    assert_eq!(m.lookup_prefix(&a), 8);
    assert_eq!(alloc(&mut m, 3, &a), Some(Allocation { blocks: vec![0, 1, 4], cached_tokens: 8 }));
    let s = m.stats();
    assert_eq!((s.prefix_queries, s.prefix_hit_tokens, s.prefix_query_tokens), (3, 8, 27));
}

#[test]
fn only_leading_computed_hits_count_as_cached() {
    let mut m = mgr(8, 2);
    // Block 0 is named [1, 2] but never computed.
    assert_eq!(alloc(&mut m, 1, &[1, 2, 9]).map(|a| a.blocks), Some(vec![0, 1]));
    // Seq 2 computes its own copy of [1, 2] (block 2, a duplicate, so not registered), then fills
    // block 3 with [3, 4] after it: registered, and computed once marked.
    assert_eq!(alloc(&mut m, 2, &[1, 2]).map(|a| a.blocks), Some(vec![2]));
    assert_eq!(append(&mut m, 2, 3).map(|s| s.block), Some(3));
    assert_eq!(append(&mut m, 2, 4).map(|s| s.block), Some(3));
    computed(&mut m, 2, 4);
    assert_eq!((m.block_tokens(2), m.is_computed(2), m.is_computed(3)), (None, false, true));
    assert_eq!(m.lookup_prefix(&[1, 2, 3, 4]), 0);
    // Both cached blocks are shared, but the computed one sits behind one that is not.
    assert_eq!(alloc(&mut m, 3, &[1, 2, 3, 4, 5]), Some(Allocation { blocks: vec![0, 3, 4], cached_tokens: 0 }));
    computed(&mut m, 1, 2);
    assert_eq!(m.lookup_prefix(&[1, 2, 3, 4]), 4);
    assert_eq!(alloc(&mut m, 4, &[1, 2, 3, 4, 6]), Some(Allocation { blocks: vec![0, 3, 5], cached_tokens: 4 }));
}

#[test]
fn a_block_taken_fresh_is_not_computed_even_with_the_same_tokens() {
    let mut m = mgr(1, 2);
    assert_eq!(alloc(&mut m, 1, &[1, 2]).map(|a| a.blocks), Some(vec![0]));
    computed(&mut m, 1, 2);
    assert_eq!(m.lookup_prefix(&[1, 2]), 2);
    assert_eq!(m.free(1), Ok(()));
    // The cap leaves the whole one-block prompt to compute: block 0 is evicted, taken fresh and
    // registered again under the same name, and its old K/V no longer count.
    assert_eq!(alloc(&mut m, 2, &[1, 2]), Some(Allocation { blocks: vec![0], cached_tokens: 0 }));
    assert!(!m.is_computed(0));
    assert_eq!(m.lookup_prefix(&[1, 2]), 0);
    assert_eq!(m.free(2), Ok(()));
    // Taken for other tokens: no longer cached at all.
    assert_eq!(alloc(&mut m, 3, &[7]).map(|a| a.blocks), Some(vec![0]));
    assert_eq!((m.block_tokens(0), m.is_computed(0)), (None, false));
}
