"""Data and helpers for the benchmarks (run only by `pytest --benchmark-only`; see the root conftest).

Environment knobs:
  FASTLLM_SHARED_DATA   where the corpora and vocabularies live (default ../shared/data)
  FASTLLM_BENCH_BYTES   cap on the bytes of corpus used (quick runs); default: the full 33 MB
                        imdb file for training and 4 MB of it for encoding
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

from shared_data import SHARED_REASON, shared_data_dir  # noqa: E402

TASKS = Path(__file__).resolve().parent / "tasks.py"
ENCODE_BYTES = 4 << 20
SMALL_TRAIN_BYTES = 200_000
SMALL_ENCODE_BYTES = 100_000
ROUNDS = int(os.environ.get("FASTLLM_BENCH_ROUNDS", "3"))


def _cap(default: int) -> int:
    cap = os.environ.get("FASTLLM_BENCH_BYTES")
    return min(default, int(cap)) if cap else default


@pytest.fixture(scope="session")
def vocab_dir() -> str:
    path = shared_data_dir() / "vocab"
    if not (path / "gpt2_encoder.json").is_file() or not (path / "cl100k_base.tiktoken").is_file():
        pytest.skip(SHARED_REASON)
    return str(path)


@pytest.fixture(scope="session")
def imdb() -> Path:
    path = shared_data_dir() / "imdb_reviews_train.txt"
    if not path.is_file():
        pytest.skip(SHARED_REASON)
    return path


def _slice(imdb: Path, folder: Path, nbytes: int) -> Path:
    """A file of the first `nbytes` of the corpus, cut at a line end (the file itself if it fits)."""
    if nbytes >= imdb.stat().st_size:
        return imdb
    raw = imdb.read_bytes()[:nbytes]
    out = folder / f"imdb-{nbytes}.txt"
    out.write_bytes(raw[: raw.rfind(b"\n") + 1])
    return out


@pytest.fixture(scope="session")
def train_file(imdb, tmp_path_factory) -> Path:
    return _slice(imdb, tmp_path_factory.mktemp("bench"), _cap(imdb.stat().st_size))


@pytest.fixture(scope="session")
def small_train_file(imdb, tmp_path_factory) -> Path:
    return _slice(imdb, tmp_path_factory.mktemp("bench-small"), _cap(SMALL_TRAIN_BYTES))


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
    record library, input size and the job's peak RSS; returns the job's result."""
    import tasks

    def run(impl: str, task: str, params: dict, mb: float, rounds: int = ROUNDS, **extra):
        fn = getattr(tasks, f"make_{task}")(**params)
        result = benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0)
        benchmark.extra_info.update(
            impl=impl,
            MB=mb,
            peak_rss_mb=child_peak_rss(task, params),
            interpreter_rss_mb=rss.interpreter_rss(TASKS),
            **extra,
        )
        return result

    return run
