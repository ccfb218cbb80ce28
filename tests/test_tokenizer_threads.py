"""Concurrent use from Python threads: the GIL is released during encoding and training, so calls
overlap in Rust. Oracle: the same calls made one after another.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import fastllm
from fastllm import BPETokenizer
from strategies import source_corpus


def test_concurrent_encode_matches_sequential():
    text = source_corpus(20000)
    tok = BPETokenizer.train([text], 256 + 300, special_tokens=["<|endoftext|>"], show_progress=False)
    docs = [text[i : i + 997] * (1 + i % 3) for i in range(0, len(text), 997)]
    expected = [tok.encode(d) for d in docs]
    with ThreadPoolExecutor(4) as pool:
        singles = list(pool.map(tok.encode, docs * 4))
        batches = list(pool.map(lambda n: tok.encode_batch(docs, num_threads=n), [1, 2, None, 2]))
        arrays = list(
            pool.map(lambda n: tok.encode_batch_numpy(docs, num_threads=n)[0].tolist(), [1, 2, None])
        )
    assert singles == expected * 4
    assert all(b == expected for b in batches)
    assert all(a == [i for e in expected for i in e] for a in arrays)


def test_concurrent_training_and_thread_settings():
    text = source_corpus(20000)
    chunks = [text[i : i + 1500] for i in range(0, len(text), 1500)]
    expected = BPETokenizer.train(chunks, 256 + 200, show_progress=False, num_threads=1).merges

    def job(n):
        if n == 0:
            fastllm.set_num_threads(1)
            fastllm.set_num_threads(None)
        return BPETokenizer.train(chunks, 256 + 200, show_progress=False, num_threads=n or None).merges

    try:
        with ThreadPoolExecutor(3) as pool:
            results = list(pool.map(job, [1, 2, 0, 2, 1, 0]))
    finally:
        fastllm.set_num_threads(None)
    assert all(r == expected for r in results)
