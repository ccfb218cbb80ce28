"""Data and helpers for the benchmarks (run only by `pytest --benchmark-only`; see the root conftest).

The corpus: `imdb_reviews_train.txt` (33 MB of movie reviews) from the shared data folder when it is
there, else the embedded standard-library corpus (this Python's .py sources + pydoc topics, ~32 MB
on Python 3.11; tests/shared_data.py), so a fresh clone runs every benchmark. Each row records the
corpus it ran on (extra_info["corpus"]), the run's header names it, and benches/report.py prints it.
The vocabularies: ../shared/data/vocab, else the copies in tests/fixtures/vocab (the same files).

Environment knobs:
  FASTLLM_SHARED_DATA   where the corpora and vocabularies live (default ../shared/data)
  FASTLLM_BENCH_BYTES   cap on the bytes of corpus used (quick runs); default: the whole corpus
                        for training and 4 MB of it for encoding
  FASTLLM_BENCH_ROUNDS  rounds per long benchmark (default 3)
  FASTLLM_BENCH_RSS     0 to skip the extra subprocess run that measures each job's peak RSS
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

import rss

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))

import shared_data  # noqa: E402

TASKS = Path(__file__).resolve().parent / "tasks.py"
ENCODE_BYTES = 4 << 20
SMALL_TRAIN_BYTES = 200_000
SMALL_ENCODE_BYTES = 100_000
ROUNDS = int(os.environ.get("FASTLLM_BENCH_ROUNDS", "3"))
CORPUS = "imdb_reviews_train.txt"


def corpus_label() -> str:
    """The corpus every corpus-reading benchmark of this run uses (the shared file or the stdlib)."""
    return shared_data.corpus_label(CORPUS)


def pytest_report_header(config):
    if not (config.getoption("benchmark_only", False) or config.getoption("benchmark_enable", False)):
        return None
    source = shared_data.corpus_source(CORPUS)
    return [f"benchmark corpus: {corpus_label()}, from {source}", f"vocabularies: {shared_data.vocab_dir()}"]


def _cap(default: int) -> int:
    cap = os.environ.get("FASTLLM_BENCH_BYTES")
    return min(default, int(cap)) if cap else default


@pytest.fixture(scope="session")
def vocab_dir() -> str:
    return str(shared_data.vocab_dir())


@pytest.fixture(scope="session")
def corpus_name() -> str:
    """`corpus_label()`, for the rows' extra_info."""
    return corpus_label()


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """The whole benchmark corpus as one file (see the module docstring)."""
    return shared_data.corpus_file(CORPUS, tmp_path_factory.mktemp("corpus"))


def _slice(corpus: Path, folder: Path, nbytes: int) -> Path:
    """A file of the first `nbytes` of the corpus, cut at a line end (the file itself if it fits)."""
    if nbytes >= corpus.stat().st_size:
        return corpus
    raw = corpus.read_bytes()[:nbytes]
    out = folder / f"{corpus.stem}-{nbytes}.txt"
    out.write_bytes(raw[: raw.rfind(b"\n") + 1])
    return out


@pytest.fixture(scope="session")
def train_file(corpus, tmp_path_factory) -> Path:
    return _slice(corpus, tmp_path_factory.mktemp("bench"), _cap(corpus.stat().st_size))


@pytest.fixture(scope="session")
def small_train_file(corpus, tmp_path_factory) -> Path:
    return _slice(corpus, tmp_path_factory.mktemp("bench-small"), _cap(SMALL_TRAIN_BYTES))


@pytest.fixture(scope="session")
def encode_bytes() -> int:
    return _cap(ENCODE_BYTES)


@pytest.fixture(scope="session")
def small_encode_bytes() -> int:
    return _cap(SMALL_ENCODE_BYTES)


def child_peak_rss(task: str, params: dict) -> float | None:
    return rss.child_peak_rss(TASKS, task, params)


@pytest.fixture
def run_task(benchmark):
    """`run_task(impl, task, params, mb, rounds=ROUNDS)`: time tasks.make_<task>(**params)() and
    record library, input size, corpus and the job's peak RSS; returns the job's result."""
    import tasks

    def run(impl: str, task: str, params: dict, mb: float, rounds: int = ROUNDS, **extra):
        fn = getattr(tasks, f"make_{task}")(**params)
        result = benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0)
        benchmark.extra_info.update(
            impl=impl,
            MB=mb,
            corpus=corpus_label(),
            peak_rss_mb=child_peak_rss(task, params),
            interpreter_rss_mb=rss.interpreter_rss(TASKS),
            **extra,
        )
        return result

    return run
