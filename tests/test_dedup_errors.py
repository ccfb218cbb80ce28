"""Bad input to `fastllm.data.dedup` gets a clear Python exception naming the bad value.

Oracle: the API contract (ValueError for a bad value, TypeError for a wrong type, each message
naming the argument or the offending text's index), checked on the constructor and on every method
that takes texts.
"""

from __future__ import annotations

import math
import re

import pytest

from fastllm.data.dedup import MinHashDeduper

METHODS = ["signatures", "dedup", "add", "query"]


@pytest.mark.parametrize("threshold", [0.0, 1.0, -0.5, 1.5, math.nan, math.inf, -math.inf])
def test_threshold_outside_open_unit_interval(threshold):
    with pytest.raises(
        ValueError, match=rf"threshold.*{re.escape(repr(threshold))}|{re.escape(repr(threshold))}.*threshold"
    ):
        MinHashDeduper(threshold=threshold)


def test_threshold_wrong_type():
    with pytest.raises(TypeError, match="threshold"):
        MinHashDeduper(threshold="0.8")


@pytest.mark.parametrize(
    "name,value",
    [
        ("num_perm", 0),
        ("num_perm", -1),
        ("ngram", 0),
        ("ngram", -3),
        ("num_threads", 0),
        ("num_threads", -2),
        ("seed", -1),
        ("bands", 0),
        ("rows", 0),
    ],
)
def test_integers_below_minimum(name, value):
    kw = {name: value}
    if name in ("bands", "rows"):
        kw = {"bands": 4, "rows": 4, name: value}
    with pytest.raises(ValueError, match=rf"{name}\W*{value}"):
        MinHashDeduper(**kw)


@pytest.mark.parametrize("name", ["num_perm", "ngram", "num_threads", "seed", "bands"])
@pytest.mark.parametrize("value", [2.0, "8", True])
def test_integers_of_the_wrong_type(name, value):
    kw = {"bands": 4, "rows": 4} if name == "bands" else {}
    kw[name] = value
    with pytest.raises(TypeError, match=name):
        MinHashDeduper(**kw)


def test_num_perm_too_large():
    with pytest.raises(ValueError, match="num_perm"):
        MinHashDeduper(num_perm=1 << 20)


def test_seed_too_large():
    with pytest.raises(ValueError, match="seed"):
        MinHashDeduper(seed=1 << 64)


@pytest.mark.parametrize("verify", ["fast", "", "EXACT", "Exact ", "jaccard"])
def test_unknown_verify(verify):
    with pytest.raises(ValueError, match=re.escape(repr(verify))):
        MinHashDeduper(verify=verify)


def test_verify_wrong_type():
    with pytest.raises((TypeError, ValueError), match="verify"):
        MinHashDeduper(verify=None)


@pytest.mark.parametrize(
    "bands,rows,num_perm", [(20, 10, 128), (129, 1, 128), (1, 129, 128), (8, 9, 64), (2, 2, 3)]
)
def test_bands_times_rows_exceeds_num_perm(bands, rows, num_perm):
    with pytest.raises(ValueError, match=rf"(?s)(?=.*\b{bands}\b)(?=.*\b{rows}\b)(?=.*\b{num_perm}\b)"):
        MinHashDeduper(num_perm=num_perm, bands=bands, rows=rows)


def test_bands_and_rows_exactly_num_perm_is_fine():
    d = MinHashDeduper(num_perm=64, bands=8, rows=8)
    assert (d.bands, d.rows) == (8, 8)


@pytest.mark.parametrize("given", [{"bands": 8}, {"rows": 8}])
def test_bands_without_rows(given):
    with pytest.raises(ValueError, match="bands" if "bands" in given else "rows"):
        MinHashDeduper(**given)


def test_arguments_are_keyword_only():
    with pytest.raises(TypeError):
        MinHashDeduper(0.8, 128)  # type: ignore[misc]
    assert MinHashDeduper(0.8).config == MinHashDeduper(threshold=0.8).config


# ---- texts ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("bad", [3, None, b"bytes", ["nested"], 2.5])
def test_non_str_text_names_its_index(method, bad):
    texts = ["fine text one", "fine text two", "fine text three", bad, "later"]
    with pytest.raises(TypeError, match=r"\b3\b"):
        getattr(MinHashDeduper(), method)(texts)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("texts", ["a single string", b"bytes", 42, None])
def test_texts_must_be_a_list_of_str(method, texts):
    with pytest.raises(TypeError):
        getattr(MinHashDeduper(), method)(texts)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("surrogate", ["\ud800", "\udfff", "x\udc80y"])
def test_lone_surrogate_is_a_value_error_naming_the_text(method, surrogate):
    texts = ["ok one two three four", "ok again", f"bad {surrogate} text"]
    with pytest.raises(ValueError, match=r"\b2\b"):
        getattr(MinHashDeduper(), method)(texts)


def test_index_unchanged_after_a_failed_add():
    d = MinHashDeduper()
    d.add(["one two three four five six"])
    with pytest.raises(TypeError):
        d.add(["seven eight nine ten eleven", 5])
    with pytest.raises(ValueError):
        d.add(["seven eight nine ten eleven", "\ud800"])
    assert len(d) == 1
    assert d.add(["seven eight nine ten eleven"]) == [1]


def test_tuples_and_generators_of_str_are_accepted():
    texts = ("one two three four five six", "one two three four five six")
    assert MinHashDeduper().dedup(texts).clusters == [[0, 1]]
    assert MinHashDeduper().dedup(t for t in texts).clusters == [[0, 1]]


# ---- load -----------------------------------------------------------------------------------------


def test_load_bad_num_threads(tmp_path):
    path = tmp_path / "i.fmh"
    MinHashDeduper().save(path)
    with pytest.raises(ValueError, match="num_threads"):
        MinHashDeduper.load(path, num_threads=0)


def test_load_a_directory(tmp_path):
    with pytest.raises((IsADirectoryError, FileNotFoundError, ValueError), match=re.escape(str(tmp_path))):
        MinHashDeduper.load(tmp_path)


# ---- the shared vocabulary (fastllm._checks) on the flags and the stage functions ----------------


@pytest.mark.parametrize("name", ["char_ngrams", "lowercase", "strip_punctuation"])
@pytest.mark.parametrize("value", [1, 0, "yes", None])
def test_flags_must_be_bools(name, value):
    with pytest.raises(TypeError, match=f"{name} must be a bool, not {type(value).__name__}"):
        MinHashDeduper(**{name: value})


def test_stage_functions_check_their_integers():
    import numpy as np

    from fastllm.data.dedup import band_keys, cluster

    sig = np.zeros((2, 8), dtype=np.uint64)
    with pytest.raises(ValueError, match="bands=0 is out of range: it must be >= 1"):
        band_keys(sig, 0, 4)
    with pytest.raises(TypeError, match="rows must be an int, not float"):
        band_keys(sig, 2, 4.0)
    with pytest.raises(ValueError, match="n=-1 is out of range: it must be >= 0"):
        cluster(-1, [])
    with pytest.raises(TypeError, match="n must be an int, not str"):
        cluster("3", [])
    assert cluster(np.int64(3), [(0, 2)]).clusters == [[0, 2]]  # numpy integers are ints
