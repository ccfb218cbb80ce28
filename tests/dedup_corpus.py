"""Labeled near-duplicate corpora and the exact-Jaccard oracle for the dedup tests and benchmarks.

The oracle is fastllm.data.dedup's documented rules written the slow, obvious way, for ASCII text:
normalize (lowercase; punctuation deleted if asked; whitespace runs collapsed to one space and
trimmed; NFC is the identity on ASCII), cut into word n-grams (n consecutive whitespace-separated
words) or character n-grams, and compare the *sets* of shingles with exact Jaccard
|A & B| / |A | B| (0.0 when either set is empty: too-short documents are nobody's near-duplicate).
Shingles are compared as strings here, as 64-bit hashes in Rust; a 64-bit collision in a corpus of
a few hundred thousand shingles has probability ~1e-9.

The corpus is real prose, not random words: windows of 100-200 words cut from the docstrings of
Python standard-library modules (no files outside the repository needed; the exact text follows the
Python version, and every label is computed from the text, never assumed). Near-duplicates come from
seeded word-level edits (substitute/delete/insert k words, swap two spans, append boilerplate,
truncate, change case and spacing), some applied to earlier variants so that clusters are chains.
Every pair's exact Jaccard is then computed from the texts (an inverted index over shingles, so
only pairs sharing a shingle are touched): the labels are the oracle's, the edits only make sure
the interesting range around a threshold of 0.8 is well populated.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import random
import string
from collections import Counter, defaultdict
from dataclasses import dataclass

WORD_NGRAM = 5

# Standard-library modules whose docstrings make the base documents. Modules missing from this
# Python (removed, frozen or built in) are skipped; the corpus only needs ~100k words.
STDLIB_MODULES = (
    "argparse",
    "difflib",
    "textwrap",
    "json.decoder",
    "collections",
    "functools",
    "inspect",
    "typing",
    "email.message",
    "http.client",
    "logging",
    "pathlib",
    "subprocess",
    "tarfile",
    "zipfile",
    "unittest.case",
    "configparser",
    "calendar",
    "datetime",
    "fractions",
    "statistics",
    "random",
    "shutil",
    "tempfile",
    "threading",
    "pydoc",
    "doctest",
    "pickle",
    "smtplib",
    "ftplib",
    "imaplib",
    "urllib.parse",
    "urllib.request",
    "xml.dom.minidom",
    "csv",
    "gettext",
    "locale",
    "optparse",
    "pprint",
    "queue",
    "shlex",
    "socket",
    "ssl",
    "tokenize",
    "traceback",
    "uuid",
    "weakref",
    "contextlib",
    "dataclasses",
    "enum",
    "heapq",
    "ipaddress",
    "mailbox",
    "plistlib",
    "_pydecimal",
    "asyncio.events",
    "asyncio.tasks",
    "concurrent.futures._base",
    "multiprocessing.pool",
    "ast",
    "_pyio",
    "string",
    "base64",
    "sched",
    "selectors",
    "socketserver",
    "http.server",
    "http.cookiejar",
    "email.utils",
    "email.feedparser",
    "poplib",
    "netrc",
    "wave",
    "cmd",
    "code",
    "bdb",
    "pdb",
    "profile",
    "pstats",
    "timeit",
    "trace",
    "warnings",
    "numbers",
    "copy",
    "glob",
)

# Appended (or prepended) by the "boilerplate" edit: the footers that real crawled copies carry.
BOILERPLATE = (
    "This page was generated automatically; please report mistakes to the maintainers.",
    "Copyright the authors. All rights reserved. Redistribution is permitted under the license terms.",
    "Subscribe to our newsletter for more articles like this one, sent every week.",
    "Posted in documentation and tagged python, library, reference. Leave a comment below!",
)

ASCII_PUNCTUATION = frozenset(string.punctuation) - frozenset("$+<=>^`|~")  # category P*, not S*


# ---- the oracle -----------------------------------------------------------------------------------


def normalize(text: str, *, lowercase: bool = True, strip_punctuation: bool = False) -> str:
    """The documented normalization, for ASCII text only (NFC is the identity there)."""
    assert text.isascii(), "the oracle only covers ASCII text"
    if lowercase:
        text = text.lower()
    if strip_punctuation:
        text = "".join(c for c in text if c not in ASCII_PUNCTUATION)
    return " ".join(text.split())


def shingles(
    text: str,
    n: int = WORD_NGRAM,
    *,
    char_ngrams: bool = False,
    lowercase: bool = True,
    strip_punctuation: bool = False,
) -> frozenset[str]:
    """The shingle set of `text`: word n-grams (joined by one space) or character n-grams."""
    norm = normalize(text, lowercase=lowercase, strip_punctuation=strip_punctuation)
    units = list(norm) if char_ngrams else norm.split(" ") if norm else []
    sep = "" if char_ngrams else " "
    return frozenset(sep.join(units[i : i + n]) for i in range(len(units) - n + 1))


def jaccard(a: frozenset, b: frozenset) -> float:
    """Exact Jaccard of two shingle sets; 0.0 when either is empty."""
    if not a or not b:
        return 0.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


def overlapping_pairs(sets: list[frozenset]) -> dict[tuple[int, int], float]:
    """Exact Jaccard of every pair (i < j) that shares at least one shingle (all others are 0.0)."""
    postings: dict[str, list[int]] = defaultdict(list)
    for doc, s in enumerate(sets):
        for sh in s:
            postings[sh].append(doc)
    inter: Counter[tuple[int, int]] = Counter()
    for docs in postings.values():
        for a in range(len(docs)):
            for b in range(a + 1, len(docs)):
                inter[docs[a], docs[b]] += 1
    return {(i, j): c / (len(sets[i]) + len(sets[j]) - c) for (i, j), c in inter.items()}


def components(n: int, pairs) -> list[list[int]]:
    """Connected components with at least two members of the graph on 0..n-1 with edges `pairs`,
    each sorted, ordered by first member (the shape of `DedupResult.clusters`)."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in pairs:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[int]] = defaultdict(list)
    for x in range(n):
        groups[find(x)].append(x)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: g[0])


# ---- base documents -------------------------------------------------------------------------------


@functools.cache
def stdlib_words(max_words: int = 200_000) -> tuple[str, ...]:
    """Printable-ASCII words of standard-library docstrings, in a fixed order (module list order,
    then `ast.walk` order), at most `max_words` of them."""
    words: list[str] = []
    for name in STDLIB_MODULES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            continue
        with open(spec.origin, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node, clean=True)
                if doc:
                    words += (w for w in doc.split() if w.isascii() and w.isprintable())
        if len(words) >= max_words:
            break
    return tuple(words[:max_words])


def word_windows(words, n_docs: int, rng: random.Random, lo: int = 100, hi: int = 200) -> list[list[str]]:
    """`n_docs` consecutive, non-overlapping windows of lo..hi words."""
    docs, pos = [], 0
    for _ in range(n_docs):
        size = rng.randint(lo, hi)
        if pos + size > len(words):
            raise ValueError(f"only {len(words)} words for {n_docs} documents")
        docs.append(list(words[pos : pos + size]))
        pos += size
    return docs


# ---- edits ----------------------------------------------------------------------------------------


def _substitute(w, rng, vocab):
    k = rng.randint(1, 6)
    w = list(w)
    for p in rng.sample(range(len(w)), min(k, len(w))):
        w[p] = rng.choice(vocab)
    return w, f"substitute-{k}"


def _delete(w, rng, vocab):
    k = rng.randint(1, 6)
    drop = set(rng.sample(range(len(w)), min(k, len(w) - 1)))
    return [x for i, x in enumerate(w) if i not in drop], f"delete-{k}"


def _insert(w, rng, vocab):
    k = rng.randint(1, 6)
    w = list(w)
    for _ in range(k):
        w.insert(rng.randint(0, len(w)), rng.choice(vocab))
    return w, f"insert-{k}"


def _swap(w, rng, vocab):
    """Swap two non-overlapping spans of 5-25 words (a moved sentence)."""
    size = rng.randint(5, 25)
    if len(w) < 2 * size + 2:
        return list(w), "swap-0"
    a = rng.randint(0, len(w) - 2 * size)
    b = rng.randint(a + size, len(w) - size)
    w = list(w)
    w[a : a + size], w[b : b + size] = w[b : b + size], w[a : a + size]
    return w, f"swap-{size}"


def _boilerplate(w, rng, vocab):
    extra = rng.choice(BOILERPLATE).split()
    return (extra + list(w), "prepend") if rng.random() < 0.3 else (list(w) + extra, "append")


def _truncate(w, rng, vocab):
    pct = rng.randint(3, 30)
    return list(w[: max(WORD_NGRAM, len(w) * (100 - pct) // 100)]), f"truncate-{pct}"


def _recase(w, rng, vocab):
    """Changes that normalization undoes (case); `render` also varies the spacing."""
    fns = (str.upper, str.lower, str.title, str.swapcase)
    return [rng.choice(fns)(x) if rng.random() < 0.3 else x for x in w], "recase"


EDITS = (_substitute, _substitute, _delete, _insert, _swap, _boilerplate, _truncate, _recase)


def edit(words: list[str], rng: random.Random, vocab) -> tuple[list[str], str]:
    """One or (a quarter of the time) two random edits of a word list, and their label."""
    out, label = rng.choice(EDITS)(words, rng, vocab)
    if rng.random() < 0.25:
        out, label2 = rng.choice(EDITS)(out, rng, vocab)
        label += "+" + label2
    return out, label


def render(words: list[str], rng: random.Random, messy: bool = False) -> str:
    """Words joined by single spaces and the odd newline; `messy` adds tabs, runs and outer spaces
    (all undone by normalization)."""
    seps = (" ", "  ", "\n", "\t", " \n\t ", "\r\n") if messy else (" ",) * 19 + ("\n",)
    text = "".join(x + rng.choice(seps) for x in words[:-1]) + words[-1]
    return f"  {text}\n" if messy else text


# ---- the labeled corpus ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LabeledCorpus:
    texts: list[str]
    origin: list[int]  # the base document each text derives from
    label: list[str]  # "base" or the edits that made it
    sets: list[frozenset]  # word 5-gram shingle sets (default normalization)
    overlap: dict[tuple[int, int], float]  # exact Jaccard of every pair (i < j) sharing a shingle

    def jaccard(self, i: int, j: int) -> float:
        return self.overlap.get((min(i, j), max(i, j)), 0.0)

    def similar_pairs(self, threshold: float) -> set[tuple[int, int]]:
        """Pairs (i < j) with exact Jaccard >= threshold."""
        return {p for p, s in self.overlap.items() if s >= threshold}

    def clusters(self, threshold: float) -> list[list[int]]:
        """The clusters a perfect deduper would report: components of the Jaccard >= threshold graph."""
        return components(len(self.texts), self.similar_pairs(threshold))


def build_labeled_corpus(n_base: int, seed: int, words=None) -> LabeledCorpus:
    """`n_base` base documents plus roughly as many near-duplicates, in a seeded shuffled order."""
    rng = random.Random(seed)
    words = stdlib_words() if words is None else words
    base = word_windows(words, n_base, rng)
    docs: list[tuple[list[str], int, str]] = [(w, i, "base") for i, w in enumerate(base)]
    for i, w in enumerate(base):
        family = [w]
        for _ in range(rng.choice((0, 0, 1, 1, 1, 2, 3))):
            parent = rng.choice(family) if rng.random() < 0.4 else w  # chains: edits of edits
            child, label = edit(parent, rng, words)
            family.append(child)
            docs.append((child, i, label))
    rng.shuffle(docs)
    texts = [render(w, rng, messy=label.startswith("recase")) for w, _, label in docs]
    sets = [shingles(t) for t in texts]
    return LabeledCorpus(
        texts, [o for _, o, _ in docs], [lab for _, _, lab in docs], sets, overlapping_pairs(sets)
    )


@functools.cache
def labeled_corpus(n_base: int = 600, seed: int = 0) -> LabeledCorpus:
    """The tests' shared corpus (built once per process)."""
    return build_labeled_corpus(n_base, seed)


# ---- LSH oracles ----------------------------------------------------------------------------------


def candidate_probability(s, bands: int, rows: int):
    """P(two documents with Jaccard s share at least one of `bands` bands of `rows` values)."""
    return 1.0 - (1.0 - s**rows) ** bands


def weighted_errors(threshold: float, num_perm: int, fp_weight: float, fn_weight: float) -> dict:
    """datasketch's `_optimal_param` objective for every (b, r) with b * r <= num_perm:
    fp_weight * ∫_0^t P(s) ds + fn_weight * ∫_t^1 (1 - P(s)) ds, by composite Simpson on 4096
    panels per side (numpy, all grid points at once)."""
    import numpy as np

    def simpson(lo, hi, f):
        s = np.linspace(lo, hi, 8193)
        w = np.ones_like(s)
        w[1:-1:2], w[2:-1:2] = 4, 2
        return (f(s) * w).sum(axis=-1) * (hi - lo) / (3 * 8192)

    grid = [(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)]
    b = np.array([g[0] for g in grid], dtype=float)[:, None]
    r = np.array([g[1] for g in grid], dtype=float)[:, None]
    fp = simpson(0.0, threshold, lambda s: candidate_probability(s, b, r))
    fn = simpson(threshold, 1.0, lambda s: 1.0 - candidate_probability(s, b, r))
    return dict(zip(grid, (fp_weight * fp + fn_weight * fn).tolist()))


def banded_pairs(signatures, bands: int, rows: int, skip=None) -> set[tuple[int, int]]:
    """Pairs (i < j) whose signatures agree on every value of at least one band (bands of `rows`
    consecutive values from the start; values past bands * rows unused), docs with skip[i] left out."""
    buckets: dict[tuple[int, bytes], list[int]] = defaultdict(list)
    for i, sig in enumerate(signatures):
        if skip is not None and skip[i]:
            continue
        for j in range(bands):
            buckets[j, sig[j * rows : (j + 1) * rows].tobytes()].append(i)
    return {(a, b) for docs in buckets.values() for x, a in enumerate(docs) for b in docs[x + 1 :]}


def exact_followers(texts, n: int = WORD_NGRAM, *, char_ngrams: bool = False, **norm) -> list[bool]:
    """follower[i]: text i equals an earlier text after normalization and is not too short (has a
    shingle): the exact pass removes it. Too-short texts skip the exact pass and are always kept."""
    seen: set[str] = set()
    out = []
    for t in texts:
        key = normalize(t, **norm)
        long_enough = bool(shingles(t, n, char_ngrams=char_ngrams, **norm))
        out.append(long_enough and key in seen)
        if long_enough:
            seen.add(key)
    return out


# ---- checks on a DedupResult ----------------------------------------------------------------------


def check_result(r, n: int) -> None:
    """The accounting every DedupResult must satisfy: types and shapes; each cluster sorted, of two
    or more, ordered by first member, disjoint; its first member kept and the rest removed; every
    text in no cluster kept; every edge inside one cluster and each cluster connected by its edges;
    stats consistent with all of it."""
    import numpy as np

    assert isinstance(r.keep, np.ndarray) and r.keep.dtype == np.bool_ and r.keep.shape == (n,)
    assert (
        isinstance(r.cluster_ids, np.ndarray)
        and r.cluster_ids.dtype == np.int64
        and r.cluster_ids.shape == (n,)
    )
    expected_ids = np.full(n, -1, dtype=np.int64)
    firsts = [c[0] for c in r.clusters]
    assert firsts == sorted(firsts)
    for k, c in enumerate(r.clusters):
        assert len(c) >= 2 and c == sorted(set(c)), c
        assert (expected_ids[c] == -1).all(), f"cluster {k} overlaps another"
        expected_ids[c] = k
    assert r.cluster_ids.tolist() == expected_ids.tolist()
    expected_keep = expected_ids == -1
    expected_keep[firsts] = True
    assert r.keep.tolist() == expected_keep.tolist()
    edges = [(i, j) for i, j, _ in r.pairs]
    assert all(i < j for i, j in edges) and len(set(edges)) == len(edges)
    for i, j in edges:
        assert r.cluster_ids[i] == r.cluster_ids[j] != -1, (i, j)
    assert components(n, edges) == r.clusters
    s = r.stats
    assert s["documents_in"] == n
    assert s["documents_out"] == int(r.keep.sum()) == n - sum(len(c) - 1 for c in r.clusters)
    assert s["clusters"] == len(r.clusters)
    assert s["seconds"] >= 0
