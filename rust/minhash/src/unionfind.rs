//! Union-find (disjoint sets) over document indices, for turning verified pairs into clusters.
//!
//! Union links the larger root under the smaller one, so every set's root is its smallest
//! index: the first-seen document, which dedup keeps. That rule also makes the final partition
//! and the roots independent of the order of unions (and hence of any parallel schedule).
//! `find` halves paths as it walks them (Tarjan & van Leeuwen's path halving), which keeps trees
//! shallow without recursion. Without union by rank the amortised bound is O(log n) per operation
//! rather than near-constant; the linking rule is what dedup needs, and trees stay shallow in
//! practice.

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
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use std::collections::VecDeque;

    /// Naive components: BFS over an adjacency list; each component labelled by its minimum.
    fn bfs_components(n: usize, edges: &[(u32, u32)]) -> Vec<u32> {
        let mut adj = vec![Vec::new(); n];
        for &(a, b) in edges {
            adj[a as usize].push(b as usize);
            adj[b as usize].push(a as usize);
        }
        let mut label = vec![u32::MAX; n];
        for start in 0..n {
            if label[start] != u32::MAX {
                continue;
            }
            // Visiting in index order, `start` is the smallest member of its component.
            let mut queue = VecDeque::from([start]);
            label[start] = start as u32;
            while let Some(v) = queue.pop_front() {
                for &w in &adj[v] {
                    if label[w] == u32::MAX {
                        label[w] = start as u32;
                        queue.push_back(w);
                    }
                }
            }
        }
        label
    }

    #[test]
    fn matches_bfs_components_in_any_union_order() {
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for _ in 0..300 {
            let n = 1 + (next() % 60) as usize;
            let m = (next() % (2 * n as u64)) as usize;
            let mut edges: Vec<(u32, u32)> =
                (0..m).map(|_| ((next() % n as u64) as u32, (next() % n as u64) as u32)).collect();
            let want = bfs_components(n, &edges);
            let mut uf = UnionFind::new(n);
            for &(a, b) in &edges {
                uf.union(a, b);
            }
            assert_eq!(uf.roots(), want);
            edges.reverse();
            let mut uf2 = UnionFind::new(n);
            for &(a, b) in &edges {
                uf2.union(b, a);
            }
            assert_eq!(uf2.roots(), want);
        }
    }

    #[test]
    fn union_reports_merges() {
        let mut uf = UnionFind::new(4);
        assert!(uf.union(3, 2));
        assert!(!uf.union(2, 3));
        assert!(uf.union(1, 3));
        assert_eq!(uf.roots(), vec![0, 1, 1, 1]);
        assert_eq!(uf.len(), 4);
        assert!(!uf.is_empty());
    }
}
