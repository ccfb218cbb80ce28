"""Parallel calls in a forked child (issue 15's bug): `fork()` copies the parent's thread pools but
none of their threads, so before the fix a child's parallel call waited forever. The pools now
belong to the process that built them (rust/fastllm-py/src/pool.rs); a child builds its own.

Oracle: the same calls in the parent, which must give the same results (they do not depend on the
thread count). Each child runs under a timeout, so a regression fails instead of hanging the suite.
"""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pytest
import torch

from fastllm import BPETokenizer, MinHashDeduper

TEXTS = ["hello world there", "the quick brown fox", "jumps over the lazy dog"] * 20
DOCS = [f"doc {i % 7} shares words with its twin number {i % 7} and some filler text" for i in range(40)]
TIMEOUT = 60  # seconds: far above what each child needs; a hang fails the test


def _work(tok: BPETokenizer, dedup: MinHashDeduper) -> dict:
    """Every parallel path: training, both batch encoders (explicit and default thread counts),
    MinHash signatures and dedup."""
    trained = BPETokenizer.train(TEXTS, 280, num_threads=2, show_progress=False)
    ids, offsets = tok.encode_batch_numpy(TEXTS)
    return {
        "trained": trained.merges,
        "batch": tok.encode_batch(TEXTS, num_threads=2),
        "numpy": (ids.tolist(), offsets.tolist()),
        "signatures": dedup.signatures(DOCS).tolist(),
        "keep": dedup.dedup(DOCS).keep.tolist(),
    }


def _child(tok, dedup, queue) -> None:
    queue.put(_work(tok, dedup))


def _in_forked_child(target, tok, dedup):
    """(what `target(tok, dedup, queue)` put on the queue, the child's exit code), from a child
    started by fork; a child that hangs fails the test at TIMEOUT instead of hanging the suite."""
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=target, args=(tok, dedup, queue))
    child.start()
    try:
        got = queue.get(timeout=TIMEOUT)
    finally:
        child.join(TIMEOUT)
        if child.is_alive():
            child.kill()
    return got, child.exitcode


@pytest.fixture(scope="module")
def used_in_parent():
    """A tokenizer and a deduper whose pools the parent has already started (the bug's setup)."""
    tok = BPETokenizer.train(TEXTS, 270, num_threads=2, show_progress=False)
    dedup = MinHashDeduper(0.5, num_perm=64, bands=16, rows=4, ngram=2, num_threads=2)
    return tok, dedup, _work(tok, dedup)


def test_a_forked_child_runs_every_parallel_call(used_in_parent):
    tok, dedup, expected = used_in_parent
    got, exitcode = _in_forked_child(_child, tok, dedup)
    assert exitcode == 0
    assert got == expected


def test_a_grandchild_too(used_in_parent):
    """A fork of a fork: the child's own pools are again not the grandchild's."""
    tok, dedup, expected = used_in_parent
    got, exitcode = _in_forked_child(_fork_again, tok, dedup)
    assert exitcode == 0
    assert got == [expected, expected]


def _fork_again(tok, dedup, queue) -> None:
    mine = _work(tok, dedup)  # the child builds pools of its own, then forks
    theirs, _ = _in_forked_child(_child, tok, dedup)
    queue.put([mine, theirs])


def test_dataloader_workers_encode_in_parallel(used_in_parent):
    """The usual way a tokenizer ends up in a forked child: DataLoader workers (fork on Linux)."""
    tok, _, _ = used_in_parent

    class Batches(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 6

        def __getitem__(self, i: int):
            ids, offsets = tok.encode_batch_numpy(TEXTS[i:] + TEXTS[:i], num_threads=2)
            return torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(offsets)

    loader = torch.utils.data.DataLoader(
        Batches(), batch_size=None, num_workers=2, multiprocessing_context="fork", timeout=TIMEOUT
    )
    got = [(ids.tolist(), offsets.tolist()) for ids, offsets in loader]
    want = []
    for i in range(6):
        ids, offsets = tok.encode_batch_numpy(TEXTS[i:] + TEXTS[:i], num_threads=1)
        want.append((ids.astype(np.int64).tolist(), offsets.tolist()))
    assert got == want
