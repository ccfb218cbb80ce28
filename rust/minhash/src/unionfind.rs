//! Union-find (disjoint sets) over document indices, for turning verified pairs into clusters.
//!
//! Union links the larger root under the smaller one, so every set's root is its smallest
//! index: the first-seen document, which dedup keeps. That rule also makes the final partition
//! and the roots independent of the order of unions (and hence of any parallel schedule).
//! `find` halves paths as it walks them (Tarjan & van Leeuwen's path halving), which keeps trees
//! shallow without recursion. Without union by rank the amortised bound is O(log n) per operation
//! rather than near-constant; the linking rule is what dedup needs, and trees stay shallow in
//! practice.

use crate::error::{try_vec, Result};

/// Disjoint sets over `0..n`.
#[derive(Clone, Debug)]
pub struct UnionFind {
    parent: Vec<u32>,
}

impl UnionFind {
    /// `n` singleton sets. `n` must fit in u32 (callers validate document counts).
    pub fn new(n: usize) -> Self {
        Self { parent: (0..n as u32).collect() }
    }

    /// [`UnionFind::new`], with an allocation failure reported instead of aborting.
    pub fn try_new(n: usize) -> Result<Self> {
        let mut parent = try_vec(n, format!("union-find over {n} documents"))?;
        parent.extend(0..n as u32);
        Ok(Self { parent })
    }

    pub fn len(&self) -> usize {
        self.parent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.parent.is_empty()
    }

    /// The root (smallest member) of `x`'s set.
    pub fn find(&mut self, mut x: u32) -> u32 {
        loop {
            let p = self.parent[x as usize];
            if p == x {
                return x;
            }
            let gp = self.parent[p as usize];
            self.parent[x as usize] = gp;
            x = gp;
        }
    }

    /// Merges the sets of `a` and `b`; the smaller root becomes the root. Returns whether they
    /// were apart.
    pub fn union(&mut self, a: u32, b: u32) -> bool {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra == rb {
            return false;
        }
        let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
        self.parent[hi as usize] = lo;
        true
    }

    /// Root of every element, fully compressed.
    pub fn roots(&mut self) -> Vec<u32> {
        (0..self.parent.len() as u32).map(|x| self.find(x)).collect()
    }

    /// [`UnionFind::roots`] in place, without a second array: every parent is at or below its
    /// child (the linking rule, and halving only skips to smaller ancestors), so one ascending
    /// pass sees each parent already pointing at its root.
    pub fn into_roots(mut self) -> Vec<u32> {
        for x in 0..self.parent.len() {
            let p = self.parent[x] as usize;
            self.parent[x] = self.parent[p];
        }
        self.parent
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    // Union-find against BFS components: tests/cluster_unionfind.rs (beside the shared oracle).

    #[test]
    fn union_reports_merges() {
        let mut uf = UnionFind::new(4);
        assert!(uf.union(3, 2));
        assert!(!uf.union(2, 3));
        assert!(uf.union(1, 3));
        assert_eq!(uf.roots(), vec![0, 1, 1, 1]);
        assert_eq!(uf.len(), 4);
        assert!(!uf.is_empty());
        assert_eq!(uf.into_roots(), vec![0, 1, 1, 1]);
    }
}
