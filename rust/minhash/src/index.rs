//! A persistent near-duplicate index, for deduplicating across batches and runs.
//!
//! It holds, per indexed document, its exact hash, its signature, and (for `Verify::Exact`) its
//! shingle set; per band a map from band key to the documents with that key; and a map from
//! exact hash to documents (both maps as a head per key plus a per-document chain of earlier
//! documents with the same key). `query` answers "which indexed documents is this one a near-duplicate
//! of" with the same rules as batch [`dedup`](crate::dedup::dedup): exact-text matches, then LSH
//! candidates verified per `Params::verify`. Too-short documents (empty shingle set, or an
//! all-`u64::MAX` signature when sets are not kept) are never matched, not even exactly. The caller's
//! settings (normalization, shingling, seed: whatever makes features comparable) travel with the
//! index as opaque bytes.
//!
//! File format (all integers little-endian; version 1):
//!
//! ```text
//! magic        8 bytes   b"FLLMMH01"
//! version      u32       1
//! num_perm     u64
//! bands        u64
//! rows         u64
//! threshold    f64       IEEE-754 bits
//! verify       u8        0 = Exact, 1 = Estimate, 2 = None
//! settings_len u64       S
//! settings     S bytes
//! n_docs       u64       N (<= u32::MAX)
//! N records, in id order:
//!   exact      u128      16 bytes
//!   signature  num_perm x u64
//!   set_len    u64       L (0 unless verify = Exact)
//!   shingles   L x u64   strictly ascending
//! checksum     u64       xxh3-64 (seed 0) of every byte before it
//! ```
//!
//! Band maps are not stored: `load` rebuilds them from the signatures (band keys are stable, see
//! `lsh`). `write_file` writes exactly the path it is given (created or truncated) and syncs it;
//! making that atomic is the caller's job, done once for the whole package by Python's
//! `fastllm._io.atomic_path` (a temporary file created exclusively beside the target, renamed
//! over it), so no name here is predictable and no planted link is followed.
//! `load` first checks the length and checksum, then parses with every count bounded by the
//! bytes left, so a damaged file gives `MinHashError::Format` naming the path and the problem.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use rayon::prelude::*;
use rustc_hash::FxHashMap;
use xxhash_rust::xxh3::Xxh3;

use crate::dedup::{check_shapes, too_short_mask, verified, Params, Verify};
use crate::error::{MinHashError, Result};
use crate::lsh::{band_key_matrix, band_keys_into};

const MAGIC: &[u8; 8] = b"FLLMMH01";
const VERSION: u32 = 1;
/// Bytes of the fixed header before the settings.
const HEADER: u64 = 8 + 4 + 8 + 8 + 8 + 8 + 1 + 8;

/// Incremental near-duplicate index; see the module docs.
#[derive(Clone, Debug)]
pub struct Index {
    num_perm: usize,
    params: Params,
    settings: Vec<u8>,
    /// Row-major `len x num_perm`.
    signatures: Vec<u64>,
    /// One set per document when `params.verify == Exact`, else empty.
    shingles: Vec<Vec<u64>>,
    exact: Vec<u128>,
    /// Exact hash -> the latest document with it; `exact_next[id]` is the previous one, or NONE.
    exact_head: FxHashMap<u128, u32>,
    exact_next: Vec<u32>,
    /// Per band: band key -> the latest document with that key; `band_next[id * bands + j]` is
    /// the previous document with the same key in band j, or NONE. One map entry per distinct
    /// key and 4 bytes per (document, band), instead of a `Vec` per key.
    band_head: Vec<FxHashMap<u64, u32>>,
    band_next: Vec<u32>,
}

/// End of a chain (ids stay below u32::MAX).
const NONE: u32 = u32::MAX;

impl Index {
    /// An empty index for signatures of `num_perm` values.
    pub fn new(num_perm: usize, params: Params, settings: Vec<u8>) -> Result<Self> {
        params.validate(num_perm)?;
        Ok(Self {
            num_perm,
            params,
            settings,
            signatures: Vec::new(),
            shingles: Vec::new(),
            exact: Vec::new(),
            exact_head: FxHashMap::default(),
            exact_next: Vec::new(),
            band_head: vec![FxHashMap::default(); params.bands],
            band_next: Vec::new(),
        })
    }

    /// Number of indexed documents.
    pub fn len(&self) -> usize {
        self.exact.len()
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty()
    }

    /// The opaque settings bytes given to [`Index::new`].
    pub fn settings(&self) -> &[u8] {
        &self.settings
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    pub fn num_perm(&self) -> usize {
        self.num_perm
    }

    /// Adds `m = exact.len()` documents (signature rows, sorted shingle sets, exact hashes) and
    /// returns their ids: `len()..len() + m`, continuing across calls. Shingle sets are required
    /// for `Verify::Exact` and otherwise may be omitted (an empty `Vec`); they are stored only for
    /// `Verify::Exact`.
    pub fn add(&mut self, signatures: &[u64], shingles: Vec<Vec<u64>>, exact: &[u128]) -> Result<Vec<u32>> {
        let m = exact.len();
        check_shapes(signatures, self.num_perm, shingles.len(), m, self.params.verify)?;
        let start = self.len();
        if u32::try_from(start + m).is_err() {
            return Err(MinHashError::arg("n", start + m, "an index holds at most u32::MAX documents"));
        }
        let short = too_short_mask(signatures, self.num_perm, &shingles, m);
        self.signatures.extend_from_slice(signatures);
        self.exact.extend_from_slice(exact);
        if self.params.verify == Verify::Exact {
            self.shingles.extend(shingles);
        }
        self.insert(start, &short);
        Ok((start as u32..(start + m) as u32).collect())
    }

    /// Registers documents `start..len()` (already stored) in the exact map and, unless too
    /// short, in the band maps.
    fn insert(&mut self, start: usize, short: &[bool]) {
        let (k, bands, rows) = (self.num_perm, self.params.bands, self.params.rows);
        let keys = band_key_matrix(&self.signatures[start * k..], k, bands, rows);
        self.band_next.resize(self.exact.len() * bands, NONE);
        for (off, (&h, row)) in self.exact[start..].iter().zip(keys.chunks_exact(bands)).enumerate() {
            let id = (start + off) as u32;
            if short[off] {
                // Too short to shingle: never matched, not even exactly (as in batch `dedup`).
                self.exact_next.push(NONE);
                continue;
            }
            self.exact_next.push(self.exact_head.insert(h, id).unwrap_or(NONE));
            let next = &mut self.band_next[(start + off) * bands..(start + off + 1) * bands];
            for ((head, &key), slot) in self.band_head.iter_mut().zip(row).zip(next) {
                *slot = head.insert(key, id).unwrap_or(NONE);
            }
        }
    }

    /// For each query document, the ids of indexed documents it is a near-duplicate of
    /// (exact-text matches, then LSH candidates verified per `params`), ascending. Queries run in
    /// parallel; answers do not depend on the thread count.
    pub fn query(&self, signatures: &[u64], shingles: &[Vec<u64>], exact: &[u128]) -> Result<Vec<Vec<u32>>> {
        let m = exact.len();
        check_shapes(signatures, self.num_perm, shingles.len(), m, self.params.verify)?;
        let short = too_short_mask(signatures, self.num_perm, shingles, m);
        let k = self.num_perm;
        Ok((0..m)
            .into_par_iter()
            .map(|q| {
                let sig = &signatures[q * k..(q + 1) * k];
                let set = shingles.get(q).map(Vec::as_slice);
                if short[q] {
                    return Vec::new(); // too short: a near-duplicate of nothing
                }
                let mut hits = chain(self.exact_head.get(&exact[q]), |d| self.exact_next[d as usize]);
                hits.reverse(); // chains run newest first: now ascending
                let n_exact = hits.len();
                if !short[q] {
                    let bands = self.params.bands;
                    let mut keys = vec![0u64; bands];
                    band_keys_into(sig, self.params.rows, &mut keys);
                    let mut cands: Vec<u32> = Vec::new();
                    for (j, (key, head)) in keys.iter().zip(&self.band_head).enumerate() {
                        cands.extend(chain(head.get(key), |d| self.band_next[d as usize * bands + j]));
                    }
                    cands.sort_unstable();
                    cands.dedup();
                    for c in cands {
                        if hits[..n_exact].binary_search(&c).is_ok() {
                            continue;
                        }
                        let stored = self.shingles.get(c as usize).map(Vec::as_slice);
                        if verified(&self.params, sig, self.signature(c), set, stored).is_some() {
                            hits.push(c);
                        }
                    }
                }
                hits.sort_unstable();
                hits
            })
            .collect())
    }

    fn signature(&self, id: u32) -> &[u64] {
        let i = id as usize * self.num_perm;
        &self.signatures[i..i + self.num_perm]
    }

    /// Writes the index to exactly `path` (created, or truncated if it exists) and syncs it.
    /// Not atomic by itself: write a fresh temporary path and rename it over the target (see the
    /// module docs).
    pub fn write_file(&self, path: &Path) -> Result<()> {
        self.write_to(path).map_err(|source| MinHashError::Io { path: path.display().to_string(), source })
    }

    fn write_to(&self, path: &Path) -> std::io::Result<()> {
        let file = File::create(path)?;
        let mut w = HashingWriter { inner: BufWriter::with_capacity(1 << 20, file), hash: Xxh3::new() };
        w.put(MAGIC)?;
        w.put(&VERSION.to_le_bytes())?;
        for v in [self.num_perm, self.params.bands, self.params.rows] {
            w.put(&(v as u64).to_le_bytes())?;
        }
        w.put(&self.params.threshold.to_bits().to_le_bytes())?;
        w.put(&[match self.params.verify {
            Verify::Exact => 0u8,
            Verify::Estimate => 1,
            Verify::None => 2,
        }])?;
        w.put(&(self.settings.len() as u64).to_le_bytes())?;
        w.put(&self.settings)?;
        w.put(&(self.len() as u64).to_le_bytes())?;
        let mut buf = Vec::new();
        for (i, h) in self.exact.iter().enumerate() {
            buf.clear();
            buf.extend_from_slice(&h.to_le_bytes());
            for v in self.signature(i as u32) {
                buf.extend_from_slice(&v.to_le_bytes());
            }
            let set = self.shingles.get(i).map(Vec::as_slice).unwrap_or(&[]);
            buf.extend_from_slice(&(set.len() as u64).to_le_bytes());
            for v in set {
                buf.extend_from_slice(&v.to_le_bytes());
            }
            w.put(&buf)?;
        }
        let checksum = w.hash.digest();
        w.inner.write_all(&checksum.to_le_bytes())?;
        let file = w.inner.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()
    }

    /// Reads an index written by [`Index::write_file`]. A missing or unreadable file gives
    /// `MinHashError::Io`; a damaged or foreign one `MinHashError::Format`.
    pub fn load(path: &Path) -> Result<Self> {
        let shown = path.display().to_string();
        let io = |source| MinHashError::Io { path: shown.clone(), source };
        let format = |reason: String| MinHashError::Format { path: shown.clone(), reason };

        // Pass 1: length and checksum.
        let mut file = File::open(path).map_err(io)?;
        let total = file.metadata().map_err(io)?.len();
        if total < HEADER + 8 + 8 {
            return Err(format(format!("truncated: {total} bytes, an index has at least {}", HEADER + 16)));
        }
        let body = total - 8;
        let mut magic = [0u8; 8];
        file.read_exact(&mut magic).map_err(io)?;
        if &magic != MAGIC {
            return Err(format(format!("not a MinHash index (magic {magic:?}, expected {MAGIC:?})")));
        }
        let mut hash = Xxh3::new();
        hash.update(&magic);
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut left = body - 8;
        let mut chunk = vec![0u8; 1 << 20];
        while left > 0 {
            let take = left.min(chunk.len() as u64) as usize;
            reader.read_exact(&mut chunk[..take]).map_err(io)?;
            hash.update(&chunk[..take]);
            left -= take as u64;
        }
        let mut stored = [0u8; 8];
        reader.read_exact(&mut stored).map_err(io)?;
        let (want, got) = (u64::from_le_bytes(stored), hash.digest());
        if want != got {
            return Err(format(format!("checksum mismatch (stored {want:#018x}, computed {got:#018x})")));
        }
        drop(chunk);

        // Pass 2: parse, every count bounded by the bytes left.
        let file = File::open(path).map_err(io)?;
        let mut r = Parser { inner: BufReader::with_capacity(1 << 20, file.take(body)), left: body };
        let e = |what: &str| format(format!("truncated while reading {what}"));
        let _magic = r.bytes::<8>().map_err(io)?.ok_or_else(|| e("magic"))?;
        let version = u32::from_le_bytes(r.bytes::<4>().map_err(io)?.ok_or_else(|| e("version"))?);
        if version != VERSION {
            return Err(format(format!("unsupported version {version} (this build reads {VERSION})")));
        }
        let u64_field = |r: &mut Parser, what: &str| -> Result<u64> {
            Ok(u64::from_le_bytes(r.bytes::<8>().map_err(io)?.ok_or_else(|| e(what))?))
        };
        let num_perm = u64_field(&mut r, "num_perm")?;
        let bands = u64_field(&mut r, "bands")?;
        let rows = u64_field(&mut r, "rows")?;
        let threshold = f64::from_bits(u64_field(&mut r, "threshold")?);
        let verify = match r.bytes::<1>().map_err(io)?.ok_or_else(|| e("verify"))?[0] {
            0 => Verify::Exact,
            1 => Verify::Estimate,
            2 => Verify::None,
            v => return Err(format(format!("unknown verify mode {v}"))),
        };
        let to_usize = |v: u64, what: &str| usize::try_from(v).map_err(|_| format(format!("{what} {v} too large")));
        let (num_perm, bands, rows) =
            (to_usize(num_perm, "num_perm")?, to_usize(bands, "bands")?, to_usize(rows, "rows")?);
        let params = Params { threshold, bands, rows, verify };
        params.validate(num_perm).map_err(|err| format(format!("bad parameters: {err}")))?;
        let settings_len = u64_field(&mut r, "settings length")?;
        if settings_len > r.left {
            return Err(format(format!("settings length {settings_len} exceeds the {} bytes left", r.left)));
        }
        let settings = r.vec(settings_len as usize).map_err(io)?.ok_or_else(|| e("settings"))?;
        let n = u64_field(&mut r, "document count")?;
        let per_doc = 24 + 8 * num_perm as u64; // num_perm <= MAX_NUM_PERM: no overflow
        if n > u64::from(u32::MAX) || n.saturating_mul(per_doc) > r.left {
            return Err(format(format!("document count {n} does not fit the {} bytes left", r.left)));
        }
        let n = n as usize;
        let mut idx = Index::new(num_perm, params, settings).map_err(|err| format(err.to_string()))?;
        idx.signatures.reserve(n * num_perm);
        idx.exact.reserve(n);
        for i in 0..n {
            let h = u128::from_le_bytes(r.bytes::<16>().map_err(io)?.ok_or_else(|| e("an exact hash"))?);
            idx.exact.push(h);
            let raw = r.vec(8 * num_perm).map_err(io)?.ok_or_else(|| e("a signature"))?;
            idx.signatures.extend(raw.chunks_exact(8).map(le_u64));
            let len = u64_field(&mut r, "a shingle-set length")?;
            if len.saturating_mul(8) > r.left {
                return Err(format(format!("document {i}: shingle-set length {len} exceeds the bytes left")));
            }
            if verify != Verify::Exact && len != 0 {
                return Err(format(format!("document {i}: shingle set stored for verify={verify:?}")));
            }
            let raw = r.vec(8 * len as usize).map_err(io)?.ok_or_else(|| e("a shingle set"))?;
            let set: Vec<u64> = raw.chunks_exact(8).map(le_u64).collect();
            if set.windows(2).any(|w| w[0] >= w[1]) {
                return Err(format(format!("document {i}: shingle set is not strictly ascending")));
            }
            if verify == Verify::Exact {
                idx.shingles.push(set);
            }
        }
        if r.left != 0 {
            return Err(format(format!("{} unexpected bytes before the checksum", r.left)));
        }
        let short = too_short_mask(&idx.signatures, num_perm, &idx.shingles, n);
        idx.insert(0, &short);
        Ok(idx)
    }
}

/// The documents of one chain, from `head` back along `next`.
fn chain(head: Option<&u32>, next: impl Fn(u32) -> u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut d = head.copied().unwrap_or(NONE);
    while d != NONE {
        out.push(d);
        d = next(d);
    }
    out
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    u64::from_le_bytes(a)
}

/// Buffered writer that hashes everything it writes.
struct HashingWriter {
    inner: BufWriter<File>,
    hash: Xxh3,
}

impl HashingWriter {
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.hash.update(bytes);
        self.inner.write_all(bytes)
    }
}

/// Reader over the body (everything before the checksum) that knows how many bytes are left.
/// Reads return `Ok(None)` when fewer bytes are left than asked for.
struct Parser {
    inner: BufReader<std::io::Take<File>>,
    left: u64,
}

impl Parser {
    fn bytes<const N: usize>(&mut self) -> std::io::Result<Option<[u8; N]>> {
        if (N as u64) > self.left {
            return Ok(None);
        }
        let mut a = [0u8; N];
        self.inner.read_exact(&mut a)?;
        self.left -= N as u64;
        Ok(Some(a))
    }

    fn vec(&mut self, len: usize) -> std::io::Result<Option<Vec<u8>>> {
        if len as u64 > self.left {
            return Ok(None);
        }
        let mut v = vec![0u8; len];
        self.inner.read_exact(&mut v)?;
        self.left -= len as u64;
        Ok(Some(v))
    }
}
