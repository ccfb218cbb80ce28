"""Near-duplicate removal: MinHash + LSH in Rust, with exact verification.

A thin, typed facade over `fastllm._core.Deduper`. Each text is normalized (Unicode NFC,
lowercase, whitespace collapsed, optionally punctuation stripped), cut into word n-grams (or
character n-grams), hashed with xxh3-64 (stable across runs, platforms and versions), and signed
with `num_perm` MinHash permutations — one pass per text in Rust, in parallel, with the GIL
released. LSH bands propose candidate pairs; by default each candidate is verified with the exact
Jaccard similarity of the two shingle sets, so every reported pair really is at or above the
threshold. Texts equal after normalization are caught first by an exact hash. Clusters come from
union-find; the first-seen member of each cluster is kept.

The stages are separate calls, so a corpus can be deduplicated in pieces across runs (the
incremental `add`/`query` index with `save`/`load`) or spread over a distributed engine (Ray,
Spark) without rewriting anything:

1. map over shards: `MinHashDeduper(...).signatures(texts)` -> (n, num_perm) uint64 (pure function
   of the text and the settings: shards need no coordination);
2. map: `band_keys(signatures, d.bands, d.rows)` -> (n, bands) uint64;
3. shuffle: group documents by (band, key) -- the engine's groupby -- or, on one machine, gather the
   key matrix and call `candidate_pairs(keys)` -> (m, 2) pairs of global row indices;
4. map over pairs: verify (e.g. the signatures' agreement, or exact Jaccard where the texts are);
5. reduce: `cluster(n, verified_pairs)` -> keep mask, cluster ids and members (union-find).

>>> d = MinHashDeduper(threshold=0.8, ngram=3)
>>> base = "the quick brown fox jumps over the lazy dog near the river bank today"
>>> other = "a completely different sentence about cats and dogs"
>>> r = d.dedup([base, base.replace("today", "yesterday"), other])
>>> r.keep.tolist(), r.clusters
([True, False, True], [[0, 1]])
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np

from fastllm import _core
from fastllm._checks import (
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_memory,
    check_optional_int,
    check_texts,
)
from fastllm._io import atomic_path

__all__ = ["DedupResult", "MinHashDeduper", "band_keys", "candidate_pairs", "cluster"]

PathLike = Union[str, "os.PathLike[str]"]
VERIFY = ("exact", "estimate", "none")
MAX_NUM_PERM = 1 << 16  # the Rust crate's limit (rust/minhash/src/signature.rs): 512 KiB per signature

# LSH band choice: datasketch's weighted false-positive/false-negative integral. With exact
# verification a false positive only costs one Jaccard check, while a false negative is a missed
# duplicate, so the weights lean hard towards recall: at threshold 0.8 and 128 permutations they
# give 17 bands x 7 rows (P(candidate | J=0.8) = 0.98; measured pair recall 0.998), where
# datasketch's 0.5/0.5 gives 9 x 13 (P = 0.40). Without verification they are datasketch's.
_WEIGHTS = {"exact": (0.02, 0.98), "estimate": (0.5, 0.5), "none": (0.5, 0.5)}


@dataclass(frozen=True)
class DedupResult:
    """What `MinHashDeduper.dedup` found.

    `keep[i]` is True for the first-seen member of each cluster and for every text in no cluster;
    `cluster_ids[i]` is the cluster of text i (-1 for none); `clusters` lists each cluster's
    members ascending (the first is the kept one); `pairs` are the verified (i, j, jaccard) edges.
    """

    keep: np.ndarray
    cluster_ids: np.ndarray
    clusters: list[list[int]]
    pairs: list[tuple[int, int, float]]
    stats: dict[str, float] = field(default_factory=dict)


def _surrogates(items: list[str]) -> ValueError:
    for i, t in enumerate(items):
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as e:
            return ValueError(
                f"texts[{i}] contains a lone surrogate at index {e.start}, which is not valid Unicode text"
            )
    return ValueError("texts contain text that is not valid Unicode")


class MinHashDeduper:
    """MinHash + LSH near-duplicate detection, exact where it matters.

    `threshold`: Jaccard similarity of the shingle sets at or above which two texts are duplicates.
    `verify`: "exact" (Jaccard of the shingle sets, the default), "estimate" (the signatures'
    agreement; faster, looser) or "none" (every LSH candidate). `bands`/`rows` override the LSH
    banding, which is otherwise chosen from the threshold. `num_threads`: None for the default
    (`fastllm.set_num_threads`), else 1 to 1024 (more is a ValueError when a method runs).
    """

    __slots__ = ("_core", "_threads")

    def __init__(
        self,
        threshold: float = 0.8,
        *,
        num_perm: int = 128,
        ngram: int = 5,
        char_ngrams: bool = False,
        verify: str = "exact",
        seed: int = 0,
        num_threads: int | None = None,
        bands: int | None = None,
        rows: int | None = None,
        lowercase: bool = True,
        strip_punctuation: bool = False,
    ):
        threshold = check_float(
            threshold, "threshold", minimum=0.0, maximum=1.0, min_open=True, max_open=True
        )
        num_perm = check_int(num_perm, "num_perm", minimum=1, maximum=MAX_NUM_PERM)
        ngram = check_int(ngram, "ngram", minimum=1)
        seed = check_int(seed, "seed", minimum=0, maximum=2**64 - 1)
        verify = check_choice(verify, "verify", VERIFY)
        num_threads = check_optional_int(num_threads, "num_threads", minimum=1)
        char_ngrams = check_bool(char_ngrams, "char_ngrams")
        lowercase = check_bool(lowercase, "lowercase")
        strip_punctuation = check_bool(strip_punctuation, "strip_punctuation")
        if (bands is None) != (rows is None):
            raise ValueError(f"give both bands and rows or neither (got bands={bands}, rows={rows})")
        if bands is None:
            fp_weight, fn_weight = _WEIGHTS[verify]
            bands, rows = _core.Deduper.optimal_params(
                threshold=threshold, num_perm=num_perm, fp_weight=fp_weight, fn_weight=fn_weight
            )
        else:
            bands = check_int(bands, "bands", minimum=1)
            rows = check_int(rows, "rows", minimum=1)
            if bands * rows > num_perm:
                raise ValueError(f"bands*rows = {bands}*{rows} = {bands * rows} exceeds num_perm={num_perm}")
        self._core = _core.Deduper(
            num_perm=num_perm,
            seed=seed,
            ngram=ngram,
            char_ngrams=char_ngrams,
            lowercase=lowercase,
            strip_punctuation=strip_punctuation,
            threshold=threshold,
            bands=bands,
            rows=rows,
            verify=verify,
        )
        self._threads = num_threads

    @property
    def config(self) -> dict[str, str]:
        """The settings, as stored in a saved index."""
        return dict(self._core.config())

    @property
    def bands(self) -> int:
        return int(self.config["bands"])

    @property
    def rows(self) -> int:
        return int(self.config["rows"])

    def __repr__(self) -> str:
        c = self.config
        return (
            f"MinHashDeduper(threshold={c['threshold']}, num_perm={c['num_perm']}, ngram={c['ngram']}, "
            f"verify={c['verify']!r}, bands={c['bands']}, rows={c['rows']})"
        )

    def __len__(self) -> int:
        """Texts in the incremental index."""
        return len(self._core)

    def _call(self, method, texts):
        items = check_texts(texts)
        k = int(self.config["num_perm"])
        check_memory(8 * k * len(items), f"{len(items)} signatures of num_perm={k}")
        try:
            return items, method(items, self._threads)
        except UnicodeEncodeError:
            raise _surrogates(items) from None

    def signatures(self, texts: Sequence[str]) -> np.ndarray:
        """MinHash signatures, a uint64 array of shape (len(texts), num_perm).

        A text with no shingle (shorter than `ngram`) has an all-max row.
        """
        return self._call(self._core.signatures, texts)[1]

    def dedup(self, texts: Sequence[str]) -> DedupResult:
        """Clusters near-duplicate texts and marks one of each cluster to keep."""
        t0 = time.perf_counter()
        items, (keep, cluster_ids, clusters, pairs, (exact, short, candidates)) = self._call(
            self._core.dedup, texts
        )
        seconds = time.perf_counter() - t0
        stats = {
            "documents_in": len(items),
            "documents_out": int(keep.sum()),
            "clusters": len(clusters),
            "exact_duplicates": exact,
            "too_short": short,
            "candidates": candidates,
            "seconds": seconds,
        }
        return DedupResult(keep, cluster_ids, clusters, [(i, j, float(s)) for i, j, s in pairs], stats)

    def add(self, texts: Sequence[str]) -> list[int]:
        """Adds texts to the incremental index; returns their ids (0, 1, ... across calls)."""
        return self._call(self._core.add, texts)[1]

    def query(self, texts: Sequence[str]) -> list[list[int]]:
        """For each text, the ids of indexed texts it is a near-duplicate of (ascending)."""
        return self._call(self._core.query, texts)[1]

    def save(self, path: PathLike) -> None:
        """Writes the index and its settings (binary format documented in rust/minhash/src/index.rs),
        atomically (`fastllm._io.atomic_path`: a fresh temporary file beside `path`, renamed over it)."""
        with atomic_path(path) as tmp:
            self._core.save(os.fspath(tmp))

    @classmethod
    def load(cls, path: PathLike, *, num_threads: int | None = None) -> MinHashDeduper:
        """Reads an index written by `save`, with the settings it was built with."""
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"dedup index not found: {str(p)!r}")
        num_threads = check_optional_int(num_threads, "num_threads", minimum=1)
        self = cls.__new__(cls)
        self._core = _core.Deduper.load(os.fspath(p))
        self._threads = num_threads
        return self


# ---- the stages, for sharded and distributed runs (see the module docstring) --------------------


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """LSH band keys, (n, bands) uint64, of a signature matrix: key j hashes values
    [j*rows, (j+1)*rows) of a row with xxh3-64 seeded by j. Rows sharing a key are candidates.

    >>> d = MinHashDeduper(ngram=2)
    >>> keys = band_keys(d.signatures(["a b c d", "a b c d", "x y z w"]), d.bands, d.rows)
    >>> keys.shape == (3, d.bands), bool((keys[0] == keys[1]).all()), bool((keys[0] == keys[2]).any())
    (True, True, False)
    """
    sig = np.ascontiguousarray(signatures, dtype=np.uint64)
    if sig.ndim != 2:
        raise ValueError(f"signatures must be a 2-d (n, num_perm) array, not shape {sig.shape}")
    bands = check_int(bands, "bands", minimum=1)
    rows = check_int(rows, "rows", minimum=1)
    return _core.band_keys(sig, bands, rows)


def candidate_pairs(keys: np.ndarray) -> np.ndarray:
    """Candidate pairs (m, 2) uint32, i < j, sorted: rows of a band-key matrix sharing any key.

    >>> candidate_pairs(np.array([[1, 2], [3, 2], [5, 6]], dtype=np.uint64)).tolist()
    [[0, 1]]
    """
    k = np.ascontiguousarray(keys, dtype=np.uint64)
    if k.ndim != 2:
        raise ValueError(f"keys must be a 2-d (n, bands) array, not shape {k.shape}")
    return _core.lsh_candidates(k)


def cluster(n: int, pairs: np.ndarray | Sequence[tuple[int, int]]) -> DedupResult:
    """Clusters of `n` documents joined by (verified) `pairs`; the first member of each is kept.

    >>> r = cluster(5, [(0, 3), (3, 4)])
    >>> r.keep.tolist(), r.cluster_ids.tolist(), r.clusters
    ([True, True, True, False, False], [0, -1, -1, 0, 0], [[0, 3, 4]])
    """
    n = check_int(n, "n", minimum=0)
    p = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    # union-find, cluster sizes, ids and the keep mask: 17 bytes a document (rust/minhash/src/dedup.rs)
    check_memory(17 * n + 16 * len(p), f"cluster(n={n}) of {len(p)} pairs")
    if p.size and (p.min() < 0 or p.max() >= n):
        raise ValueError(f"pairs name documents outside 0..{n - 1}")
    keep, cluster_ids, groups = _core.cluster_pairs(n, np.ascontiguousarray(p, dtype=np.uint32))
    return DedupResult(
        keep, cluster_ids, groups, [(int(a), int(b), float("nan")) for a, b in p], {"clusters": len(groups)}
    )
