"""The dedup stages as separate functions (for sharded and distributed runs) give the batch
answer: signatures per shard -> band keys -> candidate pairs -> verification -> clusters.

Oracles: `MinHashDeduper.dedup` on the whole corpus (verify="none" and "estimate" with the same
banding), and the exact Jaccard of the labeled corpus for the pairs the stages report.
"""

from __future__ import annotations

import numpy as np
import pytest

from dedup_corpus import labeled_corpus
from fastllm.data.dedup import MinHashDeduper, band_keys, candidate_pairs, cluster


@pytest.fixture(scope="module")
def corpus():
    return labeled_corpus()


def _staged(d: MinHashDeduper, texts: list[str], shards: int, verify) -> tuple:
    cuts = np.linspace(0, len(texts), shards + 1).astype(int)
    sig = np.concatenate([d.signatures(texts[a:b]) for a, b in zip(cuts[:-1], cuts[1:])])
    keys = np.concatenate([band_keys(sig[a:b], d.bands, d.rows) for a, b in zip(cuts[:-1], cuts[1:])])
    pairs = candidate_pairs(keys)
    if verify:
        agree = (sig[pairs[:, 0]] == sig[pairs[:, 1]]).mean(axis=1)
        pairs = pairs[agree >= 0.8]
    return sig, pairs, cluster(len(texts), pairs)


@pytest.mark.parametrize("verify", ["none", "estimate"])
def test_sharded_stages_equal_batch_dedup(corpus, verify):
    d = MinHashDeduper(verify=verify, bands=17, rows=7)
    texts = [t for t in corpus.texts if len(t.split()) >= 5]  # too-short texts skip LSH in dedup
    sig, pairs, staged = _staged(d, texts, shards=4, verify=verify == "estimate")
    assert np.array_equal(sig, d.signatures(texts))  # signatures are a pure function of the text
    batch = d.dedup(texts)
    assert staged.clusters == batch.clusters
    assert np.array_equal(staged.keep, batch.keep) and np.array_equal(staged.cluster_ids, batch.cluster_ids)
    assert len(staged.clusters) > 50


def test_candidate_pairs_are_exactly_rows_sharing_a_key(corpus):
    d = MinHashDeduper()
    keys = band_keys(d.signatures(corpus.texts[:300]), d.bands, d.rows)
    expected = sorted(
        (i, j) for i in range(len(keys)) for j in range(i + 1, len(keys)) if (keys[i] == keys[j]).any()
    )
    assert [tuple(p) for p in candidate_pairs(keys).tolist()] == expected


def test_cluster_is_connected_components():
    r = cluster(7, np.array([[5, 6], [1, 5], [2, 3]]))
    assert r.clusters == [[1, 5, 6], [2, 3]]
    assert r.keep.tolist() == [True, True, True, False, True, False, False]
    assert cluster(3, []).clusters == []


@pytest.mark.parametrize(
    "call,needle",
    [
        (lambda: band_keys(np.zeros((2, 8), np.uint64), 3, 3), "exceeds num_perm = 8"),
        (lambda: band_keys(np.zeros(8, np.uint64), 2, 2), "2-d"),
        (lambda: candidate_pairs(np.zeros(4, np.uint64)), "2-d"),
        (lambda: cluster(3, [(0, 3)]), "outside 0..2"),
        (lambda: cluster(3, [(-1, 0)]), "outside"),
    ],
)
def test_stage_errors_name_the_problem(call, needle):
    with pytest.raises(ValueError, match=needle):
        call()
