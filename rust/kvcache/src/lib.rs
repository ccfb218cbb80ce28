//! The control plane of a paged KV cache (vLLM's block manager, PagedAttention, Kwon et al. 2023),
//! with no Python and no tensors in sight.
//!
//! K/V memory is cut into `num_blocks` fixed-size blocks of `block_size` token slots; each
//! sequence owns a block table (logical block i -> physical block id). This crate decides which
//! block ids a sequence gets and when data must be copied; the caller owns the tensors and does the
//! copies. Verbs: `allocate` (a prompt), `append` (one token), `fork` (share with ref counts,
//! copy-on-write later), `free`, `mark_computed` (the caller has written a sequence's K/V up to a
//! point), `lookup_prefix`. Full blocks are named by a hash chain over their token ids (`hash`) and
//! kept in a prefix cache so later prompts reuse them; a prompt skips computing only the cached
//! blocks that are marked computed, so the manager, not the caller, knows which cached K/V are
//! valid. Freed cached blocks wait on an LRU list (`lru`) until evicted. Running out of blocks is
//! `Ok(None)`: the caller preempts a sequence and tries again.

mod audit;
pub mod error;
pub mod hash;
mod lru;
pub mod manager;
mod pool;

pub use error::{KvError, Result};
pub use manager::{Allocation, BlockManager, Slot, Stats};
