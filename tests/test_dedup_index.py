"""The incremental index (`MinHashDeduper.add` / `.query` / `.save` / `.load`).

Oracles: exact Jaccard on the labeled corpus (`dedup_corpus`), batch `dedup` on the same texts with
the same settings (same band keys, same verification: the same edges), the index itself built in
one batch or several, before and after a save/load round trip. File damage is simulated by
flipping and truncating bytes of a saved index.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from dedup_corpus import exact_followers, labeled_corpus, normalize
from fastllm.data.dedup import MinHashDeduper

T = 0.8


@pytest.fixture(scope="module")
def corpus():
    return labeled_corpus()


@pytest.fixture(scope="module")
def split(corpus):
    """First half indexed, second half queried."""
    h = len(corpus.texts) // 2
    return list(range(h)), list(range(h, len(corpus.texts)))


def expected_matches(corpus, query: int, indexed: list[int]) -> list[int]:
    """Index positions of the indexed texts that `query` is a near-duplicate of: equal after
    normalization, or exact Jaccard >= T."""
    key = normalize(corpus.texts[query])
    return [
        pos
        for pos, i in enumerate(indexed)
        if corpus.jaccard(query, i) >= T or normalize(corpus.texts[i]) == key
    ]


def test_query_equals_oracle_with_one_row_bands(corpus, split):
    """128 one-row bands miss a pair with Jaccard >= 0.8 with probability 0.2^128: the answers must be
    exactly the oracle's, ascending."""
    indexed, queries = split
    d = MinHashDeduper(threshold=T, bands=128, rows=1)
    assert d.add([corpus.texts[i] for i in indexed]) == list(range(len(indexed)))
    assert len(d) == len(indexed)
    got = d.query([corpus.texts[q] for q in queries])
    assert len(got) == len(queries)
    expected = [expected_matches(corpus, q, indexed) for q in queries]
    assert got == expected
    assert sum(map(len, expected)) > 50  # the split keeps plenty of families across it


def test_query_agrees_with_batch_dedup(corpus):
    """Default settings: indexing every text and querying every text gives, for texts that are neither
    exact followers nor too short, exactly batch dedup's LSH edges (same band keys, same check);
    every text finds itself; answers are symmetric and precise."""
    texts = corpus.texts
    d = MinHashDeduper(threshold=T)
    batch = d.dedup(texts)
    assert len(d) == 0  # dedup does not touch the index
    d.add(texts)
    got = d.query(texts)
    follower = exact_followers(texts)
    keys = [normalize(t) for t in texts]
    for i, ids in enumerate(got):
        assert i in ids and ids == sorted(set(ids))
        for j in ids:
            assert i in got[j]
            assert keys[i] == keys[j] or corpus.jaccard(i, j) >= T, (i, j)
    from_query = {
        (i, j)
        for i, ids in enumerate(got)
        for j in ids
        if i < j and not follower[i] and not follower[j] and keys[i] != keys[j]
    }
    from_batch = {(i, j) for i, j, _ in batch.pairs if keys[i] != keys[j]}
    assert from_query == from_batch


def test_add_in_batches_equals_one_batch(corpus, split):
    texts = corpus.texts
    one = MinHashDeduper(threshold=T)
    one.add(texts)
    many = MinHashDeduper(threshold=T)
    ids, cuts = [], [0, 1, 1, 100, 517, 900, len(texts)]
    for a, b in zip(cuts, cuts[1:]):
        ids += many.add(texts[a:b])
    assert ids == list(range(len(texts))) and len(many) == len(texts)
    queries = texts[::7] + ["", "short text", texts[0].upper()]
    assert many.query(queries) == one.query(queries)


def test_query_on_empty_index_and_empty_queries():
    d = MinHashDeduper()
    assert d.query(["some text here to look for", ""]) == [[], []]
    assert d.query([]) == []
    assert d.add([]) == []
    assert len(d) == 0


def test_exact_and_short_texts_in_the_index():
    d = MinHashDeduper()
    assert d.add(["tiny", "", "Tiny", "a b c d e f g h", "A  B C D E F G H"]) == [0, 1, 2, 3, 4]
    # too-short texts match nothing, not even an equal text (as in batch dedup); others match exactly
    assert d.query(["TINY ", "", "tinier", "a b c d e f g h", "a b c d e f g x"]) == [[], [], [], [3, 4], []]


def test_the_same_text_added_twice_gets_two_ids(corpus):
    d = MinHashDeduper()
    t = corpus.texts[10]
    assert d.add([t]) == [0] and d.add([t]) == [1]
    assert d.query([t]) == [[0, 1]]


def test_concurrent_queries_match_sequential(corpus):
    d = MinHashDeduper(threshold=T)
    d.add(corpus.texts[:600])
    chunks = [corpus.texts[i : i + 100] for i in range(0, len(corpus.texts), 100)]
    expected = [d.query(c) for c in chunks]
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(d.query, chunks)) == expected


# ---- save / load ----------------------------------------------------------------------------------

SETTINGS = [
    {"threshold": T},
    {
        "threshold": 0.6,
        "num_perm": 64,
        "ngram": 3,
        "seed": 7,
        "verify": "estimate",
        "strip_punctuation": True,
    },
    {
        "threshold": 0.7,
        "ngram": 6,
        "char_ngrams": True,
        "verify": "none",
        "lowercase": False,
        "bands": 10,
        "rows": 6,
    },
]


@pytest.mark.parametrize("settings", SETTINGS, ids=["default", "estimate", "chars"])
def test_save_load_round_trip(corpus, split, tmp_path, settings):
    indexed, queries = split
    d = MinHashDeduper(**settings)
    d.add([corpus.texts[i] for i in indexed])
    path = tmp_path / "index.fmh"
    d.save(path)
    loaded = MinHashDeduper.load(path)
    assert loaded.config == d.config and (loaded.bands, loaded.rows) == (d.bands, d.rows)
    assert len(loaded) == len(d)
    q = [corpus.texts[i] for i in queries] + [corpus.texts[0].upper(), ""]
    assert loaded.query(q) == d.query(q)
    assert repr(loaded) == repr(d)
    # the loaded index keeps growing with the next ids, like the original
    assert loaded.add(q[:5]) == d.add(q[:5]) == list(range(len(indexed), len(indexed) + 5))
    assert loaded.query(q) == d.query(q)
    # and saving again writes the same bytes (the format is deterministic)
    d.save(tmp_path / "a.fmh")
    loaded.save(tmp_path / "b.fmh")
    assert (tmp_path / "a.fmh").read_bytes() == (tmp_path / "b.fmh").read_bytes()


def test_load_accepts_str_and_num_threads(corpus, tmp_path):
    d = MinHashDeduper()
    d.add(corpus.texts[:50])
    d.save(str(tmp_path / "x.fmh"))
    loaded = MinHashDeduper.load(str(tmp_path / "x.fmh"), num_threads=1)
    assert loaded.query(corpus.texts[:50]) == d.query(corpus.texts[:50])


def test_save_empty_index(tmp_path):
    d = MinHashDeduper(threshold=0.5)
    d.save(tmp_path / "empty.fmh")
    loaded = MinHashDeduper.load(tmp_path / "empty.fmh")
    assert len(loaded) == 0 and loaded.query(["anything at all here"]) == [[]]
    assert loaded.config == d.config


@pytest.fixture
def saved(corpus, tmp_path):
    d = MinHashDeduper()
    d.add(corpus.texts[:40])
    path = tmp_path / "index.fmh"
    d.save(path)
    return path


def _positions(size: int) -> list[int]:
    return sorted({0, 7, 8, 12, 20, 40, 60, size // 3, size // 2, size - 9, size - 1})


def test_flipped_byte_is_detected(saved):
    raw = saved.read_bytes()
    for pos in _positions(len(raw)):
        for mask in (0x01, 0x80):
            damaged = bytearray(raw)
            damaged[pos] ^= mask
            saved.write_bytes(bytes(damaged))
            with pytest.raises(ValueError, match=re.escape(str(saved))):
                MinHashDeduper.load(saved)


def test_truncated_file_is_detected(saved):
    raw = saved.read_bytes()
    for size in [0, 1, 8, 20, 64, len(raw) // 2, len(raw) - 8, len(raw) - 1]:
        saved.write_bytes(raw[:size])
        with pytest.raises(ValueError, match=re.escape(str(saved))):
            MinHashDeduper.load(saved)
    saved.write_bytes(raw + b"\0")  # trailing garbage too
    with pytest.raises(ValueError, match=re.escape(str(saved))):
        MinHashDeduper.load(saved)


def test_foreign_file_is_rejected(tmp_path):
    path = tmp_path / "not-an-index.bin"
    path.write_bytes(b"PK\x03\x04" + bytes(200))
    with pytest.raises(ValueError, match=re.escape(str(path))):
        MinHashDeduper.load(path)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.fmh"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        MinHashDeduper.load(path)


def test_save_is_atomic_and_replaces(corpus, tmp_path):
    """save writes beside the target and renames: afterwards only the target exists, and an
    existing file is replaced whole."""
    path = tmp_path / "index.fmh"
    small = MinHashDeduper()
    small.add(corpus.texts[:5])
    small.save(path)
    big = MinHashDeduper()
    big.add(corpus.texts[:200])
    big.save(path)
    assert os.listdir(tmp_path) == ["index.fmh"]
    assert len(MinHashDeduper.load(path)) == 200
    small.save(path)
    assert os.listdir(tmp_path) == ["index.fmh"] and len(MinHashDeduper.load(path)) == 5


def test_save_into_missing_directory(tmp_path):
    """Like every fastllm output (`fastllm._io.atomic_path`), save creates the missing folders and
    leaves the index file alone in them."""
    path = tmp_path / "no" / "such" / "dir" / "index.fmh"
    d = MinHashDeduper()
    d.add(["one two three four five six seven"])
    d.save(path)
    assert os.listdir(path.parent) == ["index.fmh"] and len(MinHashDeduper.load(path)) == 1
