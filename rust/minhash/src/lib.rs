//! Near-duplicate detection with MinHash and LSH, with no Python in sight.
//!
//! Per document (`normalize` -> `shingle` -> `signature`): normalized text, a sorted set of
//! 64-bit shingle hashes (xxh3-64, stable across runs, platforms and versions), a MinHash
//! signature. Across documents (`lsh` -> `unionfind` -> `dedup`): band keys, candidate pairs,
//! verification (exact Jaccard on the shingle sets, or the signature estimate), clusters, and
//! one kept representative per cluster. `index` keeps all of it incrementally, on disk.

pub mod dedup;
pub mod error;
pub mod features;
pub mod index;
pub mod lsh;
pub mod normalize;
pub mod shingle;
pub mod signature;
pub mod unionfind;

pub use error::{MinHashError, Result};
