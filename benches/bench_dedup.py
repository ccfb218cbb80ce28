"""Near-duplicate removal benchmarks: fastllm against its peers and a pure-Python/numpy baseline.

Groups (rows in a group run on the same input, so their ratios are meaningful):
  dedup-50k   50,000 documents of 100-200 words (the benchmark corpus's word distribution: imdb,
              else the standard library, see benches/conftest.py; ~10% near-duplicates),
              word 5-grams, 128 permutations, threshold 0.8, raw text to duplicate pairs, end to end:
              fastllm (exact verification; and verify="none", as the peers do not verify) vs
              datasketch (MinHash.bulk + MinHashLSH, Python shingling), rensa (RMinHash.from_token_sets
              + RMinHashLSH, Python shingling) and gaoya (MinHashStringIndex, its Rust shingling)
  dedup-5k    5,000 such documents: fastllm vs the same algorithm in plain Python + numpy
  signatures  fastllm signatures of the 50k documents on 1 and 2 threads
Each row records extra_info: impl, MB (input size), docs, peak_rss_mb (the job alone, in a fresh
process), and for dedup rows precision and recall against the exact Jaccard oracle (every pair with
word-5-gram Jaccard >= 0.8, computed once per session, untimed; see benches/dedup_tasks.py), plus
the LSH banding each library used. `python benches/report.py` turns a run into tables.

Environment knobs (besides those in benches/conftest.py): FASTLLM_BENCH_DOCS caps the document
count of both corpora (quick runs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

import dedup_tasks
import rss
from dedup_tasks import read_docs, score, shingle_sets, similar_pairs, write_corpus

PEERS = "the `bench` extra installs the peers: pip install -e '.[bench]'"
ROUNDS = int(os.environ.get("FASTLLM_BENCH_ROUNDS", "3"))
THRESHOLD = 0.8
TASKS = Path(dedup_tasks.__file__).resolve()


def _peer(name: str):
    return pytest.importorskip(name, reason=f"{name} missing; {PEERS}")


def _docs(default: int) -> int:
    cap = os.environ.get("FASTLLM_BENCH_DOCS")
    return min(default, int(cap)) if cap else default


@dataclass
class Corpus:
    path: Path
    n: int
    mb: float
    sets: list
    truth: dict


def _corpus(source: Path, folder: Path, n_docs: int) -> Corpus:
    path = write_corpus(str(source), folder / f"dedup-{n_docs}.txt", n_docs)
    docs = read_docs(str(path))
    sets = shingle_sets(docs)
    return Corpus(path, len(docs), round(path.stat().st_size / 1e6, 3), sets, similar_pairs(sets, THRESHOLD))


@pytest.fixture(scope="session")
def corpus_50k(corpus, tmp_path_factory) -> Corpus:
    return _corpus(corpus, tmp_path_factory.mktemp("dedup-50k"), _docs(50_000))


@pytest.fixture(scope="session")
def corpus_5k(corpus, tmp_path_factory) -> Corpus:
    return _corpus(corpus, tmp_path_factory.mktemp("dedup-5k"), _docs(5_000))


def child_peak_rss(task: str, params: dict) -> float | None:
    return rss.child_peak_rss(TASKS, task, params)


@pytest.fixture
def run_dedup(benchmark, corpus_name):
    """`run_dedup(impl, task, params, corpus, rounds=ROUNDS, **extra)`: time
    dedup_tasks.make_<task>(**params)(), record library, input size, peak RSS and, for edge lists,
    precision/recall against the oracle; returns the job's result."""

    def run(impl: str, task: str, params: dict, corpus: Corpus, rounds: int = ROUNDS, **extra):
        fn = getattr(dedup_tasks, f"make_{task}")(**params)
        result = benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0)
        benchmark.extra_info.update(
            impl=impl,
            MB=corpus.mb,
            docs=corpus.n,
            corpus=corpus_name,  # the documents are drawn from its words
            peak_rss_mb=child_peak_rss(task, params),
            interpreter_rss_mb=rss.interpreter_rss(TASKS),
            **extra,
        )
        if task.startswith("dedup_"):
            benchmark.extra_info.update(score(result, corpus.n, corpus.truth, corpus.sets, THRESHOLD))
        return result

    return run


def _fastllm_banding(verify: str = "exact") -> tuple[int, int]:
    from fastllm.data.dedup import MinHashDeduper

    d = MinHashDeduper(threshold=THRESHOLD, verify=verify)
    return d.bands, d.rows


# ---- dedup-50k ------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["fastllm", "fastllm-none", "datasketch", "rensa", "gaoya"])
def test_dedup_50k(benchmark, run_dedup, corpus_50k, impl):
    benchmark.group = "dedup-50k"
    params = {"path": str(corpus_50k.path), "threshold": THRESHOLD}
    if impl.startswith("fastllm"):
        verify = "none" if impl == "fastllm-none" else "exact"
        bands, rows = _fastllm_banding(verify)
        run_dedup(
            "fastllm",
            "dedup_fastllm",
            {**params, "verify": verify},
            corpus_50k,
            variant=f"verify={verify}",
            bands=bands,
            rows=rows,
        )
        if verify == "exact":  # the oracle, untimed: every reported pair is a true one
            assert benchmark.extra_info["precision"] == 1.0
        return
    _peer(impl)
    if impl == "datasketch":
        from datasketch.lsh import _optimal_param

        bands, rows = _optimal_param(THRESHOLD, 128, 0.5, 0.5)  # what MinHashLSH picks
        run_dedup(impl, "dedup_datasketch", params, corpus_50k, rounds=1, bands=bands, rows=rows)
    elif impl == "rensa":
        run_dedup(impl, "dedup_rensa", {**params, "num_bands": 16}, corpus_50k, bands=16, rows=8)
    else:
        bands, rows = _fastllm_banding("estimate")  # datasketch's choice, (9, 13) at 0.8
        run_dedup(
            impl, "dedup_gaoya", {**params, "bands": bands, "rows": rows}, corpus_50k, bands=bands, rows=rows
        )


# ---- dedup-5k -------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["fastllm", "reference"])
def test_dedup_5k(benchmark, run_dedup, corpus_5k, impl):
    benchmark.group = "dedup-5k"
    bands, rows = _fastllm_banding("exact")
    params = {"path": str(corpus_5k.path), "threshold": THRESHOLD}
    if impl == "fastllm":
        run_dedup(impl, "dedup_fastllm", params, corpus_5k, bands=bands, rows=rows)
    else:
        run_dedup(
            impl,
            "dedup_reference",
            {**params, "bands": bands, "rows": rows},
            corpus_5k,
            rounds=1,
            bands=bands,
            rows=rows,
        )
    assert benchmark.extra_info["precision"] == 1.0  # both verify with exact Jaccard


# ---- signatures -----------------------------------------------------------------------------------


@pytest.mark.parametrize("threads", [1, 2])
def test_signatures(benchmark, run_dedup, corpus_50k, threads):
    benchmark.group = "signatures"
    params = {"path": str(corpus_50k.path), "num_threads": threads}
    sigs = run_dedup("fastllm", "signatures_fastllm", params, corpus_50k, variant=f"threads={threads}")
    assert sigs.shape == (corpus_50k.n, 128)
    if threads != 1:  # untimed: the thread count does not change a signature
        import numpy as np

        assert np.array_equal(
            sigs, dedup_tasks.make_signatures_fastllm(str(corpus_50k.path), num_threads=1)()
        )
