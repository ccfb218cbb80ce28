"""The jobs the dedup benchmarks time, the benchmark corpus, and its exact oracle.

Each `make_dedup_<impl>(path, ...)` reads a corpus file (one document per line) and returns a
zero-argument callable whose call is the timed part: everything from raw text to the list of
duplicate edges (i, j), i < j, shingling included. Run as a script (`python benches/dedup_tasks.py
NAME '{"json": "params"}'`) it does one job once in a fresh process and prints its peak RSS, like
benches/tasks.py does for the tokenizer jobs.

Corpus (`write_corpus`): documents of 100-200 words drawn with a fixed seed from the unigram
distribution of a source text's words (the benchmark corpus: the imdb reviews, else the standard
library; lowercase a-z runs, so every library's tokenizer, gaoya's punctuation-dropping one included,
sees the same words), plus ~10% near-duplicates made with the tests' seeded word edits
(`tests/dedup_corpus.py`), shuffled.

Oracle (`similar_pairs`): every pair with exact word-5-gram Jaccard >= t, by a prefix-filter
similarity join (Bayardo et al. 2007, "Scaling up all pairs similarity search"): order each set's
shingles rarest first; two sets with Jaccard >= t share a shingle within the first
|S| - ceil(t|S|) + 1 of each, so only pairs sharing a prefix shingle are checked, exactly.
"""

from __future__ import annotations

import json
import random
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent / "tests"
for p in (str(TESTS), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

import dedup_corpus  # noqa: E402
from tasks import peak_rss_mb  # noqa: E402

NGRAM = 5
MASK = (1 << 64) - 1


# ---- corpus ---------------------------------------------------------------------------------------


def word_distribution(source: str, max_bytes: int | None = None) -> tuple[list[str], np.ndarray]:
    """Words (lowercase a-z runs; `br`, imdb's HTML line breaks, dropped) of the source file, most
    frequent first, and their relative frequencies."""
    with open(source, encoding="utf-8", errors="ignore") as f:
        text = f.read(max_bytes or -1).lower()
    counts = Counter(re.findall(r"[a-z]+", text))
    counts.pop("br", None)
    words = [w for w, _ in counts.most_common()]
    freq = np.array([counts[w] for w in words], dtype=np.float64)
    return words, freq / freq.sum()


def build_corpus(source: str, n_docs: int, dup_fraction: float = 0.1, seed: int = 0) -> list[str]:
    """`n_docs` documents, about `dup_fraction` of them near-duplicates of others, shuffled."""
    words, p = word_distribution(source)
    rng = np.random.default_rng(seed)
    prng = random.Random(seed)
    n_dups = int(n_docs * dup_fraction)
    n_base = n_docs - n_dups
    lengths = rng.integers(100, 201, size=n_base)
    ids = rng.choice(len(words), size=int(lengths.sum()), p=p)
    vocab = np.array(words, dtype=object)
    docs = [list(vocab[chunk]) for chunk in np.split(ids, np.cumsum(lengths)[:-1])]
    for _ in range(n_dups):
        parent = docs[prng.randrange(len(docs))]  # an earlier duplicate now and then: chains
        child, _ = dedup_corpus.edit(parent, prng, words)
        child = [c for c in (re.sub(r"[^a-z]", "", w.lower()) for w in child) if c]  # boilerplate, recase
        docs.append(child)
    prng.shuffle(docs)
    return [" ".join(d) for d in docs]


def write_corpus(source: str, out: Path, n_docs: int, dup_fraction: float = 0.1, seed: int = 0) -> Path:
    out.write_text(
        "".join(d + "\n" for d in build_corpus(source, n_docs, dup_fraction, seed)), encoding="utf-8"
    )
    return out


def read_docs(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def python_shingles(doc: str, n: int = NGRAM) -> list[str]:
    """Word n-grams as the peers are usually fed: lowercase, split on whitespace, join by a space."""
    w = doc.lower().split()
    return [" ".join(w[i : i + n]) for i in range(len(w) - n + 1)]


# ---- exact oracle ---------------------------------------------------------------------------------


def shingle_sets(docs: list[str], n: int = NGRAM) -> list[np.ndarray]:
    """Each document's word n-grams as a sorted array of distinct 64-bit keys (Python's string hash
    of the shingle: consistent within a process; a collision among ~10^7 shingles has probability
    ~10^-5, the same regime as the 64-bit hashes the libraries use)."""
    return [
        np.unique(np.fromiter((hash(s) & MASK for s in python_shingles(d, n)), dtype=np.uint64)) for d in docs
    ]


def exact_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) == 0 or len(b) == 0:
        return 0.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)


def similar_pairs(sets: list[np.ndarray], threshold: float) -> dict[tuple[int, int], float]:
    """Every pair (i < j) with exact Jaccard >= threshold (prefix-filter join; see module docs)."""
    sizes = np.array([len(s) for s in sets])
    doc = np.repeat(np.arange(len(sets)), sizes)
    keys = np.concatenate(sets) if sets else np.zeros(0, np.uint64)
    uniq, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    freq = counts[inverse]
    order = np.lexsort((keys, freq, doc))  # per document: rarest first, ties by key (a global order)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank = np.arange(len(keys)) - np.repeat(starts, sizes)
    # |S| - ceil(t|S|) + 1, made one longer when t|S| is within float noise of an integer (safe side)
    prefix = sizes - np.ceil(threshold * sizes - 1e-9).astype(np.int64) + 1
    sel = order[rank < np.repeat(prefix, sizes)]
    pk, pd = inverse[sel], doc[sel]
    by_key = np.lexsort((pd, pk))
    pk, pd = pk[by_key], pd[by_key]
    change = np.flatnonzero(np.diff(pk)) + 1
    lo, hi = np.concatenate([[0], change]), np.concatenate([change, [len(pk)]])
    candidates: set[tuple[int, int]] = set()
    for s, e in zip(*(x[hi - lo > 1].tolist() for x in (lo, hi))):  # keys shared by 2+ prefixes
        g = pd[s:e].tolist()
        candidates.update((a, b) for x, a in enumerate(g) for b in g[x + 1 :] if a != b)
    out = {}
    for a, b in candidates:
        s = exact_jaccard(sets[a], sets[b])
        if s >= threshold:
            out[a, b] = s
    return out


def score(edges, n: int, truth: dict, sets: list[np.ndarray], threshold: float) -> dict[str, float]:
    """Precision: the fraction of reported edges whose exact Jaccard is >= threshold. Recall: the
    fraction of true pairs whose documents end up in one cluster (union-find over the edges)."""
    edges = {(min(i, j), max(i, j)) for i, j in edges if i != j}
    good = sum(1 for e in edges if e in truth or exact_jaccard(sets[e[0]], sets[e[1]]) >= threshold)
    label = {x: k for k, c in enumerate(dedup_corpus.components(n, edges)) for x in c}
    found = sum(1 for a, b in truth if a in label and label.get(b) == label[a])
    return {
        "precision": round(good / len(edges), 4) if edges else 1.0,
        "recall": round(found / len(truth), 4) if truth else 1.0,
        "edges": len(edges),
        "true_pairs": len(truth),
    }


# ---- the jobs -------------------------------------------------------------------------------------


def make_dedup_fastllm(
    path: str,
    threshold: float = 0.8,
    num_perm: int = 128,
    verify: str = "exact",
    num_threads: int | None = None,
):
    from fastllm.data.dedup import MinHashDeduper

    docs = read_docs(path)
    d = MinHashDeduper(
        threshold=threshold, num_perm=num_perm, ngram=NGRAM, verify=verify, num_threads=num_threads
    )
    return lambda: [(i, j) for i, j, _ in d.dedup(docs).pairs]


def make_signatures_fastllm(path: str, num_perm: int = 128, num_threads: int | None = None):
    from fastllm.data.dedup import MinHashDeduper

    docs = read_docs(path)
    d = MinHashDeduper(num_perm=num_perm, ngram=NGRAM, num_threads=num_threads)
    return lambda: d.signatures(docs)


def _query_edges(results) -> list[tuple[int, int]]:
    return [(i, j) for i, found in enumerate(results) for j in found if j > i]


def make_dedup_datasketch(path: str, threshold: float = 0.8, num_perm: int = 128):
    """datasketch: MinHash.bulk (update_batch) over Python shingles, MinHashLSH with its own
    optimal (b, r), insert all, query all (candidates, unverified, as its LSH returns them)."""
    from datasketch import MinHash, MinHashLSH

    docs = read_docs(path)

    def run():
        mhs = MinHash.bulk(([s.encode() for s in python_shingles(d)] for d in docs), num_perm=num_perm)
        lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        with lsh.insertion_session() as session:
            for i, m in enumerate(mhs):
                session.insert(i, m, check_duplication=False)
        return _query_edges(lsh.query(m) for m in mhs)

    return run


def make_dedup_rensa(path: str, threshold: float = 0.8, num_perm: int = 128, num_bands: int = 16):
    """rensa: RMinHash.from_token_sets over Python shingles, RMinHashLSH (num_bands must divide
    num_perm: 16 x 8), insert_many, query_all (candidates, unverified)."""
    from rensa import RMinHash, RMinHashLSH

    docs = read_docs(path)

    def run():
        mhs = RMinHash.from_token_sets([python_shingles(d) for d in docs], num_perm, 42)
        lsh = RMinHashLSH(threshold, num_perm, num_bands)
        lsh.insert_many(mhs)
        return _query_edges(lsh.query_all(mhs))

    return run


def make_dedup_gaoya(path: str, threshold: float = 0.8, bands: int = 9, rows: int = 13):
    """gaoya: MinHashStringIndex with its Rust word analyzer (5-grams, lowercase), parallel bulk
    insert and query; its query keeps candidates whose signature estimate is >= threshold."""
    from gaoya.minhash import MinHashStringIndex

    docs = read_docs(path)

    def run():
        index = MinHashStringIndex(
            hash_size=32,
            jaccard_threshold=threshold,
            num_bands=bands,
            band_size=rows,
            analyzer="word",
            lowercase=True,
            ngram_range=(NGRAM, NGRAM),
        )
        index.par_bulk_insert_docs(list(range(len(docs))), docs)
        return _query_edges(index.par_bulk_query(docs))

    return run


# ---- the pure-Python/numpy baseline ---------------------------------------------------------------


def _splitmix64(state: int) -> tuple[int, int]:
    state = (state + 0x9E3779B97F4A7C15) & MASK
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return state, z ^ (z >> 31)


def _fmix64(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> np.uint64(33))
    x = x * np.uint64(0xFF51AFD7ED558CCD)
    x = x ^ (x >> np.uint64(33))
    x = x * np.uint64(0xC4CEB9FE1A85EC53)
    return x ^ (x >> np.uint64(33))


def make_dedup_reference(
    path: str, threshold: float = 0.8, num_perm: int = 128, bands: int = 14, rows: int = 9, seed: int = 0
):
    """The same algorithm as fastllm, written plainly: Python shingling with a blake2b 64-bit hash
    per shingle; numpy signatures min(a * fmix64(x) + b) (fastllm's permutation family); exact pass
    on the normalized text; banding into a dict; exact Jaccard on Python sets; union of edges."""
    import hashlib

    docs = read_docs(path)
    state, a, b = seed, [], []
    for _ in range(num_perm):
        state, x = _splitmix64(state)
        a.append(x | 1)
        state, x = _splitmix64(state)
        b.append(x)
    A = np.array(a, dtype=np.uint64)[:, None]
    B = np.array(b, dtype=np.uint64)[:, None]

    def h64(s: str) -> int:
        return int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little")

    def run():
        first: dict[str, int] = {}
        edges, sets, sigs = [], [], []
        for i, d in enumerate(docs):
            norm = " ".join(d.lower().split())
            sh = {h64(s) for s in python_shingles(norm)}
            sets.append(sh)
            if norm in first:
                edges.append((first[norm], i))
                sigs.append(None)
                continue
            first[norm] = i
            if not sh:
                sigs.append(None)
                continue
            x = _fmix64(np.fromiter(sh, dtype=np.uint64, count=len(sh)))[None, :]
            sigs.append((A * x + B).min(axis=1))
        buckets: dict[tuple[int, bytes], list[int]] = {}
        for i, sig in enumerate(sigs):
            if sig is None:
                continue
            for j in range(bands):
                buckets.setdefault((j, sig[j * rows : (j + 1) * rows].tobytes()), []).append(i)
        candidates = {
            (x, y)
            for ids in buckets.values()
            if len(ids) > 1
            for k, x in enumerate(ids)
            for y in ids[k + 1 :]
        }
        for x, y in sorted(candidates):
            inter = len(sets[x] & sets[y])
            if inter / (len(sets[x]) + len(sets[y]) - inter) >= threshold:
                edges.append((x, y))
        return sorted(edges)

    return run


def make_noop():
    """The floor under every peak RSS figure: the interpreter with this module imported."""
    return lambda: None


if __name__ == "__main__":
    name, params = sys.argv[1], json.loads(sys.argv[2])
    globals()[f"make_{name}"](**params)()
    print(json.dumps({"peak_rss_mb": round(peak_rss_mb(), 1)}))
