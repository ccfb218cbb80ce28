//! Union-find against the naive oracle: BFS components over the same random edges, in either
//! union order (each root must be the smallest member of its component).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "cluster_util.rs"]
mod util;

use minhash::unionfind::UnionFind;
use util::*;

#[test]
fn matches_bfs_components_in_any_union_order() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..300 {
        let n = 1 + rng.below(60);
        let m = rng.below(2 * n);
        let mut edges: Vec<(u32, u32)> = (0..m).map(|_| (rng.below(n) as u32, rng.below(n) as u32)).collect();
        let want = components(n, &edges);
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
        // The one-pass, in-place roots agree (without a `find` before them).
        let mut uf4 = UnionFind::try_new(n).unwrap();
        for &(a, b) in &edges {
            uf4.union(a, b);
        }
        assert_eq!(uf4.into_roots(), want);
    }
}
