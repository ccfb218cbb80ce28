//! The name of a full block in the prefix cache: a hash chain over token ids.
//!
//! `chain(parent, tokens)` hashes the previous block's chain value together with this block's
//! token ids, so a block's name stands for the whole prefix up to and including it (vLLM's
//! "hash of the prefix" block identity). The chain is xxh3-128: fast, stable across runs and
//! platforms, and wide enough that two different prefixes landing on one name would take a
//! 2^-128-level accident. The cache also stores each block's token ids and its parent's chain
//! value and compares both on lookup, so a colliding name with different tokens is never served.
//!
//! Hand-written rather than borrowed from a serving framework: this is the control plane of a
//! vLLM-style block manager, a few hundred lines that must stay exact and allocation-free per
//! token; the data plane (K/V tensors, copies) stays with the caller.

use xxhash_rust::xxh3::Xxh3Default;

/// The chain value before the first block.
pub const ROOT: u128 = 0;

/// The chain value of a full block holding `tokens` after the prefix named `parent`.
pub fn chain(parent: u128, tokens: &[u32]) -> u128 {
    let mut hasher = Xxh3Default::new();
    hasher.update(&parent.to_le_bytes());
    for token in tokens {
        hasher.update(&token.to_le_bytes());
    }
    hasher.digest128()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_depends_on_parent_and_every_token() {
        let a = chain(ROOT, &[1, 2, 3]);
        assert_eq!(a, chain(ROOT, &[1, 2, 3]));
        assert_ne!(a, chain(ROOT, &[1, 2, 4]));
        assert_ne!(a, chain(ROOT, &[3, 2, 1]));
        assert_ne!(a, chain(a, &[1, 2, 3]));
        assert_ne!(chain(ROOT, &[1, 2]), chain(ROOT, &[1]));
    }
}
