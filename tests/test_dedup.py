"""Batch near-duplicate removal (`MinHashDeduper.dedup` and `.signatures`) against exact Jaccard.

Oracles: `dedup_corpus` (the documented normalization and shingling in plain Python, exact Jaccard
of every pair of a labeled corpus of ~1300 real-prose documents and their edited copies), the LSH
candidate probability 1 - (1 - s^r)^b, a Python banding of the returned signatures, datasketch's
band-choice objective (numpy), and MinHash algebra (the signature of a union is the element-wise
minimum). Where LSH is random, either the banding is made so sensitive that a miss has probability
< 1e-20 (then results must equal the oracle exactly) or the bound is statistical with its
derivation next to it.
"""

from __future__ import annotations

import doctest
import math
import random

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastllm.data.dedup
from dedup_corpus import (
    banded_pairs,
    candidate_probability,
    check_result,
    components,
    exact_followers,
    jaccard,
    labeled_corpus,
    normalize,
    shingles,
    weighted_errors,
)
from fastllm.data.dedup import MinHashDeduper

T = 0.8
U64_MAX = np.iinfo(np.uint64).max


@pytest.fixture(scope="module")
def corpus():
    return labeled_corpus()


@pytest.fixture(scope="module")
def exact_run(corpus):
    d = MinHashDeduper(threshold=T)
    return d, d.dedup(corpus.texts)


def found_pairs(r) -> set[tuple[int, int]]:
    """Pairs counted as found: both texts in the same cluster."""
    return {(a, b) for c in r.clusters for x, a in enumerate(c) for b in c[x + 1 :]}


def estimate(sigs: np.ndarray, i: int, j: int) -> float:
    return float((sigs[i] == sigs[j]).mean())


def test_docstring_examples():
    result = doctest.testmod(fastllm.data.dedup, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# ---- verify="exact" on the labeled corpus ---------------------------------------------------------


def test_corpus_is_interesting(corpus):
    """The oracle's own sanity: enough pairs on both sides of the threshold, and near it."""
    sims = list(corpus.overlap.values())
    assert len(corpus.texts) > 1000
    assert sum(T <= s < 0.85 for s in sims) > 50 and sum(0.7 <= s < T for s in sims) > 50
    assert sum(s == 1.0 for s in sims) > 20 and len(corpus.clusters(T)) > 200


def test_exact_precision_is_one(corpus, exact_run):
    """Every reported edge is a pair whose exact Jaccard is >= the threshold, reported as such."""
    d, r = exact_run
    check_result(r, len(corpus.texts))
    assert r.pairs
    for i, j, s in r.pairs:
        truth = corpus.jaccard(i, j)
        assert truth >= T, (i, j, truth)
        assert s == pytest.approx(truth, abs=1e-6), (i, j)
        assert s >= T, f"pair {(i, j)} reported with jaccard {s!r} below the threshold {T}"


def test_exact_recall_matches_lsh_theory(corpus, exact_run, record_property):
    """Recall over pairs with Jaccard >= 0.8 is at least what the banding promises.

    A pair with Jaccard s is a candidate with probability P(s) = 1 - (1 - s^r)^b, so the expected
    fraction found directly is mean P(s) over the true pairs (clustering can only add: a pair also
    counts when a chain links it). The count of misses is a sum of Bernoullis with variance
    sum P(1-P); the bound allows 5 standard deviations. The default banding for exact verification
    leans towards recall (P(0.8) >= 0.95, P(0.9) > 0.99), so recall must also be >= 0.99 outright,
    over all pairs >= 0.8 and over those >= 0.9.
    """
    d, r = exact_run
    truth = corpus.similar_pairs(T)
    found = found_pairs(r)
    p = np.array([candidate_probability(corpus.overlap[q], d.bands, d.rows) for q in truth])
    expected, sd = p.mean(), math.sqrt((p * (1 - p)).sum()) / len(p)
    recall = len(truth & found) / len(truth)
    record_property("recall", recall)
    record_property("expected_recall", expected)
    assert recall >= expected - 5 * sd - 1e-9, (recall, expected, sd, d.bands, d.rows)
    assert (
        candidate_probability(0.8, d.bands, d.rows) >= 0.95
        and candidate_probability(0.9, d.bands, d.rows) > 0.99
    )
    assert recall >= 0.99
    high = {q for q in truth if corpus.overlap[q] >= 0.9}
    assert len(high & found) >= 0.99 * len(high)


def test_exact_recall_with_sensitive_banding(corpus):
    """32 bands of 4 rows: P(candidate | s = 0.8) = 1 - (1 - 0.8^4)^32 > 1 - 1e-7, so recall over
    pairs >= 0.8 must be >= 0.99 (in practice 1.0), and precision stays 1.0."""
    r = MinHashDeduper(threshold=T, bands=32, rows=4).dedup(corpus.texts)
    check_result(r, len(corpus.texts))
    truth = corpus.similar_pairs(T)
    assert len(truth & found_pairs(r)) >= 0.99 * len(truth)
    assert all(corpus.jaccard(i, j) >= T for i, j, _ in r.pairs)


def test_exact_mode_equals_oracle_with_one_row_bands(corpus):
    """128 bands of one row: a pair with s >= 0.8 is missed with probability 0.2^128, so the edges
    must be exactly the oracle's: (first, later) for texts equal after normalization, and every pair
    with Jaccard >= 0.8 among the rest; clusters the oracle's components."""
    r = MinHashDeduper(threshold=T, bands=128, rows=1).dedup(corpus.texts)
    check_result(r, len(corpus.texts))
    follower = exact_followers(corpus.texts)
    first_of: dict[str, int] = {}
    exact_edges = set()
    for i, t in enumerate(corpus.texts):
        key = normalize(t)
        if key in first_of:
            exact_edges.add((first_of[key], i))
        first_of.setdefault(key, i)
    near = {(i, j) for i, j in corpus.similar_pairs(T) if not follower[i] and not follower[j]}
    assert {(i, j) for i, j, _ in r.pairs} == exact_edges | near
    assert all(s == 1.0 for i, j, s in r.pairs if (i, j) in exact_edges)
    assert r.clusters == corpus.clusters(T)
    assert r.stats["exact_duplicates"] == len(exact_edges) == sum(follower)
    assert r.stats["too_short"] == 0
    assert r.stats["candidates"] >= len(near)


# ---- verify="estimate" and "none" -----------------------------------------------------------------


@pytest.fixture(scope="module")
def modes(corpus, exact_run):
    """The three modes with the exact mode's banding, so their candidate sets are the same."""
    d, r = exact_run
    out = {"exact": r}
    for mode in ("estimate", "none"):
        out[mode] = MinHashDeduper(threshold=T, verify=mode, bands=d.bands, rows=d.rows).dedup(corpus.texts)
    return d.signatures(corpus.texts), out, (d.bands, d.rows)


def test_estimate_mode(corpus, modes, record_property):
    """Each edge's similarity is the signatures' agreement and is >= the threshold. Precision against
    the exact oracle is reported; a false edge needs an estimate >= 0.8 from a Binomial(128, s)/128
    with sd <= 0.045 for s near 0.8, so no edge may have s below 0.8 - 6 * 0.045."""
    sigs, runs, _ = modes
    r = runs["estimate"]
    check_result(r, len(corpus.texts))
    follower = exact_followers(corpus.texts)
    truth = corpus.similar_pairs(T)
    for i, j, s in r.pairs:
        if follower[j] and normalize(corpus.texts[i]) == normalize(corpus.texts[j]):
            assert s == 1.0
            continue
        assert s == pytest.approx(estimate(sigs, i, j), abs=1e-6)
        assert s >= T
        assert corpus.jaccard(i, j) >= T - 6 * 0.045, (i, j, corpus.jaccard(i, j), s)
    precision = sum((i, j) in truth for i, j, _ in r.pairs) / len(r.pairs)
    recall = len(truth & found_pairs(r)) / len(truth)
    record_property("estimate_precision", precision)
    record_property("estimate_recall", recall)
    assert precision > 0.8 and recall > 0.8


def test_none_mode_is_the_lsh_candidates(corpus, modes):
    """verify="none": the edges are exactly the pairs that share a band of the returned signatures
    (banded here in Python), among texts that are neither exact followers nor too short, plus the
    exact-pass edges; stats["candidates"] counts those banded pairs."""
    sigs, runs, (bands, rows) = modes
    r = runs["none"]
    check_result(r, len(corpus.texts))
    follower = exact_followers(corpus.texts)
    lsh = banded_pairs(sigs, bands, rows, skip=follower)
    exact_edges = {(i, j) for i, j, _ in r.pairs if follower[j]}  # followers take no part in LSH
    assert {(i, j) for i, j, _ in r.pairs} - exact_edges == lsh
    assert r.stats["candidates"] == len(lsh)
    for i, j, s in r.pairs:
        if (i, j) not in exact_edges:
            assert s == pytest.approx(estimate(sigs, i, j), abs=1e-6)


def test_modes_nest(corpus, modes):
    """With the same banding, exact and estimate edges are subsets of the candidates: every exact- or
    estimate-mode cluster lies inside one none-mode cluster, and candidates are counted alike."""
    _, runs, _ = modes
    none_ids = runs["none"].cluster_ids
    for mode in ("exact", "estimate"):
        for c in runs[mode].clusters:
            assert len(set(none_ids[c].tolist())) == 1 and none_ids[c[0]] != -1
        assert runs[mode].stats["candidates"] == runs["none"].stats["candidates"]
    assert len(runs["none"].pairs) >= len(runs["exact"].pairs) - runs["exact"].stats["exact_duplicates"]


# ---- determinism ----------------------------------------------------------------------------------


def _same(a, b):
    assert a.keep.tolist() == b.keep.tolist()
    assert a.cluster_ids.tolist() == b.cluster_ids.tolist()
    assert a.clusters == b.clusters and a.pairs == b.pairs
    assert {k: v for k, v in a.stats.items() if k != "seconds"} == {
        k: v for k, v in b.stats.items() if k != "seconds"
    }


@pytest.mark.parametrize("verify", ["exact", "estimate"])
def test_deterministic_across_threads_and_runs(corpus, verify):
    results = [
        MinHashDeduper(threshold=T, verify=verify, num_threads=n).dedup(corpus.texts) for n in (1, 2, 2, None)
    ]
    for other in results[1:]:
        _same(results[0], other)


def test_order_of_input_decides_who_is_kept(corpus):
    """Reversing the input keeps the last member of each cluster instead: the same partition."""
    texts = corpus.texts[:400]
    d = MinHashDeduper(threshold=T, bands=128, rows=1)
    fwd, rev = d.dedup(texts), d.dedup(texts[::-1])
    n = len(texts)
    assert sorted(map(sorted, fwd.clusters)) == sorted(sorted(n - 1 - i for i in c) for c in rev.clusters)
    for c in fwd.clusters:
        assert rev.keep[n - 1 - c[-1]] and not rev.keep[[n - 1 - i for i in c[:-1]]].any()


# ---- signatures -----------------------------------------------------------------------------------


def test_signature_shape_dtype_and_determinism(corpus):
    texts = corpus.texts[:300]
    d = MinHashDeduper(threshold=T)
    sigs = d.signatures(texts)
    assert isinstance(sigs, np.ndarray) and sigs.dtype == np.uint64 and sigs.shape == (300, 128)
    assert np.array_equal(sigs, d.signatures(texts))
    for n in (1, 2):
        assert np.array_equal(sigs, MinHashDeduper(threshold=T, num_threads=n).signatures(texts))
    assert np.array_equal(
        sigs, MinHashDeduper(threshold=0.5, verify="none").signatures(texts)
    )  # banding is not signing
    assert np.array_equal(sigs[[5, 7]], d.signatures([texts[5], texts[7]]))  # a row depends on its text only
    assert MinHashDeduper(num_perm=64).signatures(texts).shape == (300, 64)
    assert d.signatures([]).shape == (0, 128)
    other = MinHashDeduper(threshold=T, seed=1).signatures(texts)
    assert (other != sigs).mean() > 0.99


def test_signature_rows_of_equal_texts_are_equal(corpus):
    d = MinHashDeduper()
    t = corpus.texts[3]
    sigs = d.signatures([t, t.upper(), "\n " + "\t".join(t.split()) + "  "])
    assert np.array_equal(sigs[0], sigs[1]) and np.array_equal(sigs[0], sigs[2])


def test_too_short_signature_is_all_max():
    sigs = MinHashDeduper().signatures(["", "   ", "one two three four"])
    assert (sigs == U64_MAX).all()
    assert not (MinHashDeduper().signatures(["one two three four five"]) == U64_MAX).any()


def test_estimated_jaccard_tracks_exact_jaccard(corpus):
    """Agreement fraction is an unbiased estimate of Jaccard with variance s(1-s)/num_perm.
    Checked over every pair sharing a shingle: mean error ~0 and z-scores of unit scale; pairs
    sharing no shingle agree nowhere (each permutation is a bijection of the 64-bit hashes)."""
    d = MinHashDeduper(num_perm=128)
    sigs = d.signatures(corpus.texts)
    pairs = [(p, s) for p, s in corpus.overlap.items() if 0.0 < s < 1.0]
    est = np.array([estimate(sigs, i, j) for (i, j), _ in pairs])
    truth = np.array([s for _, s in pairs])
    z = (est - truth) / np.sqrt(truth * (1 - truth) / 128)
    assert abs((est - truth).mean()) < 0.01
    assert 0.7 < math.sqrt((z**2).mean()) < 1.3
    high = truth >= 0.5
    assert np.abs(est - truth)[high].mean() < 0.05
    rng = random.Random(1)
    n = len(corpus.texts)
    for _ in range(2000):
        i, j = rng.sample(range(n), 2)
        if corpus.jaccard(i, j) == 0.0:
            assert estimate(sigs, i, j) == 0.0


@pytest.mark.parametrize("char_ngrams", [False, True])
def test_signature_of_a_union_is_the_elementwise_min(corpus, char_ngrams):
    """MinHash algebra, no hash function needed: the shingles of A + B are those of A, those of B,
    and those straddling the join, which are exactly the shingles of the join's n-1 + n-1 units;
    so sig(A + B) = min(sig(A), sig(B), sig(join))."""
    n = 5
    d = MinHashDeduper(ngram=n, char_ngrams=char_ngrams)
    checked = 0
    for k in range(0, 200, 2):
        a, b = corpus.texts[k], corpus.texts[k + 1]
        if char_ngrams:
            a, b = normalize(a), normalize(b)
            whole, join = a + b, a[-(n - 1) :] + b[: n - 1]
            if join != normalize(join):  # a space at the join's edge would be trimmed
                continue
        else:
            wa, wb = a.split(), b.split()
            whole, join = a + " " + b, " ".join(wa[-(n - 1) :] + wb[: n - 1])
        assert shingles(whole, n, char_ngrams=char_ngrams) == (
            shingles(a, n, char_ngrams=char_ngrams)
            | shingles(b, n, char_ngrams=char_ngrams)
            | shingles(join, n, char_ngrams=char_ngrams)
        )
        s = d.signatures([whole, a, b, join])
        assert np.array_equal(s[0], np.minimum.reduce([s[1], s[2], s[3]]))
        rep = d.signatures([a + " " + a if not char_ngrams else a + a, a])  # a set: repeats add nothing new
        assert (rep[0] <= rep[1]).all()
        checked += 1
    assert checked >= 20


# ---- exact pass, short and empty texts ------------------------------------------------------------

BASE = (
    "The quick brown fox jumps over the lazy dog while the cat watches from the warm windowsill "
    "and the farmer walks slowly down the long dusty road towards the old red barn"
)


def test_exact_pass_catches_normalization_variants():
    texts = [
        BASE,
        "A completely unrelated sentence about the stock market and interest rates rising again this year",
        BASE.upper(),
        "\n\t " + BASE.replace(" ", "  \n") + " \r\n",
        "\u00a0" + BASE + "\u2003",  # Unicode White_Space is trimmed too
        "Caf\u00e9 au lait, \u00c9COLE and na\u00efve r\u00e9sum\u00e9 are words that normalization composes",
        "cafe\u0301 au lait, \u00e9cole and nai\u0308ve re\u0301sume\u0301 are words "
        "that normalization composes",
    ]
    r = MinHashDeduper(threshold=T).dedup(texts)
    check_result(r, len(texts))
    assert r.clusters == [[0, 2, 3, 4], [5, 6]]
    assert {(i, j): s for i, j, s in r.pairs} == {(0, 2): 1.0, (0, 3): 1.0, (0, 4): 1.0, (5, 6): 1.0}
    assert r.stats["exact_duplicates"] == 4
    assert r.keep.tolist() == [True, True, False, False, False, True, False]


def test_strip_punctuation_and_lowercase_options():
    punct = " ".join(w + ("," if i % 3 == 0 else "") for i, w in enumerate(BASE.split())) + "!"
    plain = BASE
    assert jaccard(shingles(punct), shingles(plain)) == 0.0
    assert MinHashDeduper(threshold=T).dedup([plain, punct]).clusters == []
    r = MinHashDeduper(threshold=T, strip_punctuation=True).dedup([plain, punct])
    assert r.clusters == [[0, 1]] and r.stats["exact_duplicates"] == 1
    # lowercase=False: a case change is a real edit (here one word, so still a near-duplicate)
    upper_first = "THE" + BASE[3:]
    s = jaccard(shingles(BASE, lowercase=False), shingles(upper_first, lowercase=False))
    r = MinHashDeduper(threshold=0.7, lowercase=False, bands=64, rows=2).dedup([BASE, upper_first])
    assert r.clusters == [[0, 1]] and r.pairs[0][2] == pytest.approx(s, abs=1e-6) and s < 1.0
    assert r.stats["exact_duplicates"] == 0
    assert MinHashDeduper(threshold=0.7).dedup([BASE, upper_first]).stats["exact_duplicates"] == 1


def test_too_short_and_empty_texts_are_kept_and_counted():
    """Texts with no shingle are similar to nothing and always kept, even when equal to each other
    (they skip the exact pass); each is counted in stats["too_short"]."""
    texts = [
        "one two three four",
        "",
        BASE,
        "   \n\t",
        "five words make one shingle",
        "x",
        BASE.lower(),
        "one two three four",
        "1 2 3 4",
        "FIVE  words make one shingle",
    ]
    r = MinHashDeduper(threshold=T).dedup(texts)
    check_result(r, len(texts))
    assert r.clusters == [[2, 6], [4, 9]]  # five words = one shingle: long enough
    assert r.stats["too_short"] == 6
    assert r.stats["exact_duplicates"] == 2
    assert r.keep.tolist() == [True] * 6 + [False, True, True, False]


def test_empty_input_and_all_empty():
    r = MinHashDeduper().dedup([])
    check_result(r, 0)
    assert r.clusters == [] and r.pairs == [] and r.stats["candidates"] == 0
    r = MinHashDeduper().dedup(["", "", " ", "a b", "a b"])
    check_result(r, 5)
    assert (
        r.clusters == [] and r.keep.all() and r.stats["too_short"] == 5 and r.stats["exact_duplicates"] == 0
    )


def test_too_short_texts_never_match_by_lsh():
    """All-max signatures agree everywhere, yet distinct short texts must not be paired."""
    texts = [f"word{i} a b" for i in range(50)]
    r = MinHashDeduper(threshold=0.5, verify="none").dedup(texts)
    assert r.clusters == [] and r.stats["too_short"] == 50 and r.stats["candidates"] == 0


def test_char_ngrams_small_case():
    base = "the rain in spain stays mainly in the plain"
    texts = [base, base.replace("mainly", "mostly"), base + "!", "completely different words here", base[:20]]
    n = 4
    sets = [shingles(t, n, char_ngrams=True) for t in texts]
    expected = {(i, j) for i in range(5) for j in range(i + 1, 5) if jaccard(sets[i], sets[j]) >= 0.6}
    r = MinHashDeduper(threshold=0.6, ngram=n, char_ngrams=True, bands=128, rows=1).dedup(texts)
    check_result(r, len(texts))
    assert {(i, j) for i, j, _ in r.pairs} == expected and expected
    for i, j, s in r.pairs:
        assert s == pytest.approx(jaccard(sets[i], sets[j]), abs=1e-6)


def test_reported_jaccard_at_exactly_the_threshold():
    """|A & B| = 7, |A | B| = 10: Jaccard exactly 0.7 is a duplicate at threshold 0.7 (>=), and is
    reported as 0.7, not as a float just below the threshold."""
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    a = " ".join(words)  # 12 words: 8 shingles
    b = " ".join(words[:11] + ["nu", "xi"])  # 7 shared shingles + 2 new
    assert jaccard(shingles(a), shingles(b)) == 0.7
    r = MinHashDeduper(threshold=0.7, bands=128, rows=1).dedup([a, b])
    assert r.clusters == [[0, 1]]
    ((i, j, s),) = r.pairs
    assert s >= 0.7, f"reported jaccard {s!r} < threshold 0.7"
    assert MinHashDeduper(threshold=0.7000001, bands=128, rows=1).dedup([a, b]).clusters == []


# ---- banding parameters ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "threshold,num_perm,verify",
    [
        (0.8, 128, "exact"),
        (0.8, 128, "estimate"),
        (0.5, 64, "none"),
        (0.9, 256, "exact"),
        (0.3, 32, "estimate"),
    ],
)
def test_default_banding_minimises_datasketch_objective(threshold, num_perm, verify):
    """(bands, rows) minimise datasketch's weighted false-positive/false-negative integral over all
    b * r <= num_perm, for the weights the facade documents for the verify mode (datasketch's own
    0.5/0.5 without exact verification)."""
    d = MinHashDeduper(threshold=threshold, num_perm=num_perm, verify=verify)
    fp_w, fn_w = fastllm.data.dedup._WEIGHTS[verify]
    if verify != "exact":
        assert (fp_w, fn_w) == (0.5, 0.5)
    errors = weighted_errors(threshold, num_perm, fp_w, fn_w)
    assert d.bands * d.rows <= num_perm
    assert errors[d.bands, d.rows] <= min(errors.values()) + 1e-9, (
        d.bands,
        d.rows,
        min(errors, key=errors.get),
    )


def test_datasketch_choice_at_0_8():
    """datasketch's MinHashLSH(threshold=0.8, num_perm=128) uses b=9, r=13 (a fixed, well-known value)."""
    errors = weighted_errors(0.8, 128, 0.5, 0.5)
    assert min(errors, key=errors.get) == (9, 13)
    d = MinHashDeduper(threshold=0.8, verify="estimate")
    assert (d.bands, d.rows) == (9, 13)


@pytest.mark.parametrize("bands,rows", [(1, 1), (16, 8), (128, 1), (10, 12), (3, 40)])
def test_bands_rows_override(corpus, bands, rows):
    d = MinHashDeduper(threshold=T, bands=bands, rows=rows)
    assert (d.bands, d.rows) == (bands, rows)
    texts = corpus.texts[:300]
    r = MinHashDeduper(threshold=T, verify="none", bands=bands, rows=rows).dedup(texts)
    follower = exact_followers(texts)
    assert r.stats["candidates"] == len(banded_pairs(d.signatures(texts), bands, rows, skip=follower))


# ---- property: with one-row bands, dedup is the oracle --------------------------------------------

VOCAB = ["a", "b", "c", "D", "e,", "f.", "g!", "Hh", "i-j", "k"]
SPACES = [" ", "  ", "\n", "\t", "\r\n", "\x0b", "\x0c"]


@st.composite
def small_corpus(draw):
    """Up to 10 texts over a 10-word vocabulary with mixed spacing, plus up to 3 copies of drawn
    texts with 0-2 words appended (exact and near duplicates)."""

    def text():
        words = draw(st.lists(st.sampled_from(VOCAB), max_size=14))
        seps = draw(st.lists(st.sampled_from(SPACES), min_size=len(words) + 1, max_size=len(words) + 1))
        return seps[0] + "".join(w + s for w, s in zip(words, seps[1:]))

    docs = [text() for _ in range(draw(st.integers(0, 10)))]
    if docs:
        for _ in range(draw(st.integers(0, 3))):
            docs.append(draw(st.sampled_from(docs)) + draw(st.sampled_from(["", " k", " a b"])))
    return docs


@given(
    texts=small_corpus(),
    threshold=st.sampled_from([0.25, 0.4, 0.5, 0.6, 2 / 3, 0.75, 0.8, 0.9]),
    ngram=st.integers(1, 4),
    char_ngrams=st.booleans(),
    lowercase=st.booleans(),
    strip=st.booleans(),
)
def test_property_one_row_bands_equal_oracle(texts, threshold, ngram, char_ngrams, lowercase, strip):
    """64 one-row bands miss a pair with Jaccard >= 0.25 with probability 0.75^64 < 1e-7; exact
    verification then leaves exactly the oracle's graph: texts with shingles that are equal after
    normalization or have Jaccard >= t (too-short texts match nothing, not even each other)."""
    norm = {"lowercase": lowercase, "strip_punctuation": strip}
    d = MinHashDeduper(
        threshold=threshold, num_perm=64, bands=64, rows=1, ngram=ngram, char_ngrams=char_ngrams, **norm
    )
    r = d.dedup(texts)
    check_result(r, len(texts))
    sets = [shingles(t, ngram, char_ngrams=char_ngrams, **norm) for t in texts]
    keys = [normalize(t, **norm) for t in texts]
    n = len(texts)
    edges = [
        (i, j)
        for i in range(n)
        for j in range(i + 1, n)
        if sets[i] and sets[j] and (keys[i] == keys[j] or jaccard(sets[i], sets[j]) >= threshold)
    ]
    assert r.clusters == components(n, edges)
    followers = exact_followers(texts, ngram, char_ngrams=char_ngrams, **norm)
    assert r.stats["exact_duplicates"] == sum(followers)
    assert r.stats["too_short"] == sum(1 for s in sets if not s)
    for i, j, s in r.pairs:
        assert keys[i] == keys[j] or s == pytest.approx(jaccard(sets[i], sets[j]), abs=1e-6)


def test_whitespace_is_unicode_white_space_not_python_split():
    """Words are runs of non-White_Space; U+001C..U+001F (which str.split() treats as separators)
    are not White_Space, so 'a\\x1cb' is one word."""
    r = MinHashDeduper(ngram=1, threshold=0.9).dedup(["a\x1cb c", "a b c"])
    assert r.clusters == []
    r = MinHashDeduper(ngram=1, threshold=0.9).dedup(["a\u00a0b\u2003c", "a b c"])  # NBSP, EM SPACE are
    assert r.clusters == [[0, 1]]


def test_every_doc_is_kept_or_removed_by_a_named_cluster(corpus, exact_run):
    _, r = exact_run
    removed = ~r.keep
    assert (r.cluster_ids[removed] >= 0).all()
    for i in np.flatnonzero(removed):
        assert r.keep[r.clusters[r.cluster_ids[i]][0]]
