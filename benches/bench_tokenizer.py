"""Tokenizer benchmarks: fastllm against its peers and a pure-Python baseline, in one run.

Groups (rows in a group run on the same input, so their ratios are meaningful):
  train-8192, train-32768  fastllm train_files vs HF tokenizers and bpeasy (GPT-4 split) and
                           sentencepiece (BPE, its own pre-tokenization: time only), the whole corpus
  train-small              fastllm vs the pure-Python reference trainer, 200 KB, vocab 512
  encode-gpt2              one 4 MB text: fastllm vs tiktoken vs HF tokenizers (GPT-2 vocabulary)
  encode-gpt2-small        100 KB: fastllm vs the pure-Python reference encoder
  encode-cl100k            one 4 MB text: fastllm vs tiktoken vs rs-bpe (cl100k vocabulary)
  encode-batch             the 4 MB as a list of lines, 1 and 2 threads (GPT-2 vocabulary)
The corpus is imdb_reviews_train.txt from ../shared/data, else the standard-library corpus (see
benches/conftest.py); every row records which in extra_info["corpus"].
Each row records extra_info: impl, MB (input size), peak_rss_mb (the job alone, in a fresh
process). `python benches/report.py` turns a run into markdown tables. Correctness is asserted
once, outside the timed part. HF encodes the 4 MB text as one sequence, which it is slow at; the
batch group shows it on documents.
"""

from __future__ import annotations

import pytest

from tasks import megabytes

PEERS = "the `bench` extra installs the peers: pip install -e '.[bench]'"


def _peer(name: str):
    return pytest.importorskip(name, reason=f"{name} missing; {PEERS}")


# ---- training -----------------------------------------------------------------------------------


@pytest.mark.parametrize("vocab_size", [8192, 32768])
@pytest.mark.parametrize("impl", ["fastllm", "hf", "sentencepiece", "bpeasy"])
def test_train(benchmark, run_task, train_file, impl, vocab_size):
    benchmark.group = f"train-{vocab_size}"
    if impl != "fastllm":
        _peer("tokenizers" if impl == "hf" else impl)
    task = f"train_{impl}"
    run_task(impl, task, {"path": str(train_file), "vocab_size": vocab_size}, megabytes(train_file))


@pytest.mark.parametrize("impl", ["fastllm", "reference"])
def test_train_small(benchmark, run_task, small_train_file, impl):
    benchmark.group = "train-small"
    task = "train_fastllm" if impl == "fastllm" else "train_reference"
    result = run_task(
        impl,
        task,
        {"path": str(small_train_file), "vocab_size": 512},
        megabytes(small_train_file),
        rounds=1 if impl == "reference" else 3,
    )
    if impl == "fastllm":  # the oracle, once, untimed: same merges as the reference
        import tasks

        assert result.merges == tasks.make_train_reference(str(small_train_file), 512)()


# ---- encoding -----------------------------------------------------------------------------------


def _expected(vocab: str, vocab_dir, corpus, nbytes):
    import tasks

    return tasks.make_encode("tiktoken", vocab, vocab_dir, str(corpus), nbytes)()


@pytest.mark.parametrize("impl", ["fastllm", "tiktoken", "hf"])
def test_encode_gpt2(benchmark, run_task, vocab_dir, corpus, encode_bytes, impl):
    benchmark.group = "encode-gpt2"
    _peer("tiktoken")
    if impl == "hf":
        _peer("tokenizers")
    params = {
        "lib": impl,
        "vocab": "gpt2",
        "vocab_dir": vocab_dir,
        "path": str(corpus),
        "nbytes": encode_bytes,
    }
    ids = run_task(impl, "encode", params, megabytes(nbytes=encode_bytes))
    benchmark.extra_info["n_tokens"] = len(ids)
    if impl == "fastllm":
        assert ids == _expected("gpt2", vocab_dir, corpus, encode_bytes)
    else:
        benchmark.extra_info["same_ids_as_tiktoken"] = ids == _expected(
            "gpt2", vocab_dir, corpus, encode_bytes
        )


@pytest.mark.parametrize("impl", ["fastllm", "reference"])
def test_encode_gpt2_small(benchmark, run_task, vocab_dir, corpus, small_encode_bytes, impl):
    benchmark.group = "encode-gpt2-small"
    _peer("tiktoken")  # its data-gym loader turns the GPT-2 files into the reference's ranks
    params = {
        "lib": impl,
        "vocab": "gpt2",
        "vocab_dir": vocab_dir,
        "path": str(corpus),
        "nbytes": small_encode_bytes,
    }
    ids = run_task(
        impl, "encode", params, megabytes(nbytes=small_encode_bytes), rounds=1 if impl == "reference" else 3
    )
    assert ids == _expected("gpt2", vocab_dir, corpus, small_encode_bytes)


@pytest.mark.parametrize("impl", ["fastllm", "tiktoken", "rs-bpe"])
def test_encode_cl100k(benchmark, run_task, vocab_dir, corpus, encode_bytes, impl):
    benchmark.group = "encode-cl100k"
    _peer("tiktoken")
    if impl == "rs-bpe":
        _peer("rs_bpe")
    params = {
        "lib": impl,
        "vocab": "cl100k",
        "vocab_dir": vocab_dir,
        "path": str(corpus),
        "nbytes": encode_bytes,
    }
    ids = run_task(impl, "encode", params, megabytes(nbytes=encode_bytes))
    benchmark.extra_info["n_tokens"] = len(ids)
    if impl == "fastllm":
        assert ids == _expected("cl100k", vocab_dir, corpus, encode_bytes)
    else:
        benchmark.extra_info["same_ids_as_tiktoken"] = list(ids) == _expected(
            "cl100k", vocab_dir, corpus, encode_bytes
        )


BATCH = [
    ("fastllm", 1, False),
    ("fastllm", 2, False),
    ("fastllm", 1, True),
    ("fastllm", 2, True),
    ("tiktoken", 1, False),
    ("tiktoken", 2, False),
    ("hf", None, False),
]


@pytest.mark.parametrize(
    "impl,threads,numpy", BATCH, ids=[f"{i}-t{t or 'all'}{'-numpy' if n else ''}" for i, t, n in BATCH]
)
def test_encode_batch(benchmark, run_task, vocab_dir, corpus, encode_bytes, impl, threads, numpy):
    benchmark.group = "encode-batch"
    if impl != "fastllm":
        _peer(impl if impl != "hf" else "tokenizers")
    params = {
        "lib": impl,
        "vocab_dir": vocab_dir,
        "path": str(corpus),
        "nbytes": encode_bytes,
        "num_threads": threads,
    }
    if numpy:
        params["numpy"] = True
    result = run_task(
        impl,
        "encode_batch",
        params,
        megabytes(nbytes=encode_bytes),
        variant=f"threads={threads or 'all'}" + (", numpy" if numpy else ""),
    )
    if impl == "fastllm" and not numpy:
        import tasks

        assert result == tasks.make_encode_batch("tiktoken", vocab_dir, str(corpus), encode_bytes, 1)()
