"""The jobs the tokenizer benchmarks time: one `make_*` per (library, job), returning a zero-argument
callable whose call is the timed part (loading vocabularies and reading text happen in `make_*`).

Run as a script (`python benches/tasks.py NAME '{"json": "params"}'`) it does the job once in a
fresh process and prints `{"peak_rss_mb": ...}`: the benchmarks use that to report each job's
peak resident memory (whole process, interpreter and imports included) without it being skewed by
whatever the benchmark process loaded before.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

import reference_bpe as ref  # noqa: E402

# tiktoken caches even local files under /tmp keyed by path (a stale copy survives a changed
# file); an empty cache dir makes its loaders read the files themselves.
os.environ["TIKTOKEN_CACHE_DIR"] = ""

# HF's Oniguruma reads `\p{N}{1,3}+` as "one or more runs of 1-3 digits"; `\p{N}{1,3}` is the
# GPT-4 split as HF pipelines (Llama 3's tokenizer.json) write it.
HF_GPT4 = ref.GPT4_PATTERN.replace(r"\p{N}{1,3}+", r"\p{N}{1,3}")
assert HF_GPT4 != ref.GPT4_PATTERN


def read_text(path: str, nbytes: int, offset: int = 0) -> str:
    """`nbytes` of a UTF-8 file from `offset`, cut back to whole lines."""
    with open(path, "rb") as f:
        f.seek(offset)
        raw = f.read(nbytes)
    cut = raw.rfind(b"\n")
    return raw[: cut + 1 if cut > 0 else len(raw)].decode("utf-8", errors="ignore")


def megabytes(path: Path | None = None, nbytes: int | None = None) -> float:
    """Input size in MB (10^6 bytes), for MB/s: a file's size, or a byte count."""
    return round((path.stat().st_size if path is not None else nbytes) / 1e6, 3)


# ---- training -----------------------------------------------------------------------------------


def make_train_fastllm(path: str, vocab_size: int, num_threads: int | None = None):
    from fastllm import BPETokenizer

    return lambda: BPETokenizer.train_files([path], vocab_size, show_progress=False, num_threads=num_threads)


def make_train_hf(path: str, vocab_size: int):
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

    def run():
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(HF_GPT4), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
        )
        tok.train([path], trainer=trainer)
        return tok

    return run


def make_train_sentencepiece(path: str, vocab_size: int):
    """sentencepiece's BPE trainer on the whole file. Not comparable output: its own pre-tokenization
    (NFKC, whitespace as U+2581, splits by script/number/whitespace, pieces of at most 16 characters,
    byte fallback instead of byte-level BPE), so only the time and memory compare."""
    import io

    import sentencepiece as spm

    def run():
        model = io.BytesIO()  # the model proto, in memory rather than in model_prefix files
        spm.SentencePieceTrainer.train(
            input=path,
            model_writer=model,
            vocab_size=vocab_size,
            model_type="bpe",
            byte_fallback=True,
            character_coverage=1.0,
            num_threads=2,
            input_sentence_size=0,
            max_sentence_length=1 << 20,  # every line, any length
            hard_vocab_limit=False,  # a small slice (FASTLLM_BENCH_BYTES) may not reach vocab_size
            minloglevel=2,
        )
        return model.getvalue()

    return run


def make_train_bpeasy(path: str, vocab_size: int):
    """bpeasy: byte-level BPE on the GPT-4 split (its fancy-regex), the file's lines as the iterator."""
    import bpeasy

    def run():
        with open(path, encoding="utf-8") as f:
            return bpeasy.train_bpe(f, ref.GPT4_PATTERN, max_token_length=128, vocab_size=vocab_size)

    return run


def make_train_reference(path: str, vocab_size: int):
    text = Path(path).read_text(encoding="utf-8")
    return lambda: ref.train(ref.count_pieces([text], "gpt4"), vocab_size)


# ---- encoding -----------------------------------------------------------------------------------


def fastllm_gpt2(vocab_dir: str):
    from fastllm import BPETokenizer

    return BPETokenizer.from_gpt2(f"{vocab_dir}/gpt2_encoder.json", f"{vocab_dir}/gpt2_vocab.bpe")


def gpt2_ranks(vocab_dir: str) -> dict[bytes, int]:
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    return data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=f"{vocab_dir}/gpt2_vocab.bpe", encoder_json_file=f"{vocab_dir}/gpt2_encoder.json"
    )


def tiktoken_gpt2(vocab_dir: str):
    import tiktoken

    return tiktoken.Encoding(
        "gpt2_local",
        pat_str=ref.GPT2_PATTERN,
        mergeable_ranks=gpt2_ranks(vocab_dir),
        special_tokens={"<|endoftext|>": 50256},
    )


def hf_gpt2(vocab_dir: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(
        models.BPE.from_file(vocab=f"{vocab_dir}/gpt2_encoder.json", merges=f"{vocab_dir}/gpt2_vocab.bpe")
    )
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


CL100K_SPECIALS = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}


def fastllm_cl100k(vocab_dir: str):
    from fastllm import BPETokenizer

    return BPETokenizer.from_tiktoken(f"{vocab_dir}/cl100k_base.tiktoken", "gpt4", CL100K_SPECIALS)


def tiktoken_cl100k(vocab_dir: str):
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    ranks = load_tiktoken_bpe(f"{vocab_dir}/cl100k_base.tiktoken")
    return tiktoken.Encoding(
        "cl100k_local", pat_str=ref.GPT4_PATTERN, mergeable_ranks=ranks, special_tokens=CL100K_SPECIALS
    )


def rs_bpe_cl100k(vocab_dir: str):
    from rs_bpe.bpe import openai  # bundles its own cl100k; it cannot load a file

    return openai.cl100k_base()


def make_encode(lib: str, vocab: str, vocab_dir: str, path: str, nbytes: int, offset: int = 0):
    """Encode one long text, single-threaded where the library lets us choose."""
    text = read_text(path, nbytes, offset)
    if lib == "fastllm":
        tok = fastllm_gpt2(vocab_dir) if vocab == "gpt2" else fastllm_cl100k(vocab_dir)
        return lambda: tok.encode_ordinary(text)
    if lib == "tiktoken":
        enc = tiktoken_gpt2(vocab_dir) if vocab == "gpt2" else tiktoken_cl100k(vocab_dir)
        return lambda: enc.encode_ordinary(text)
    if lib == "hf":
        assert vocab == "gpt2"
        tok = hf_gpt2(vocab_dir)
        return lambda: tok.encode(text, add_special_tokens=False).ids
    if lib == "rs-bpe":
        assert vocab == "cl100k"
        tok = rs_bpe_cl100k(vocab_dir)
        return lambda: tok.encode(text)
    if lib == "reference":
        assert vocab == "gpt2"
        ranks = gpt2_ranks(vocab_dir)
        return lambda: [
            i for piece in ref.pretokenize(text, "gpt2") for i in ref.encode_piece_ranks(piece, ranks)
        ]
    raise ValueError(f"unknown library {lib!r}")


def make_encode_batch(
    lib: str, vocab_dir: str, path: str, nbytes: int, num_threads: int | None = None, numpy: bool = False
):
    """Encode a list of documents (the lines of the text) with the GPT-2 vocabulary."""
    docs = read_text(path, nbytes).splitlines(keepends=True)
    if lib == "fastllm":
        tok = fastllm_gpt2(vocab_dir)
        if numpy:
            return lambda: tok.encode_batch_numpy(docs, num_threads=num_threads)
        return lambda: tok.encode_batch(docs, num_threads=num_threads)
    if lib == "tiktoken":
        enc = tiktoken_gpt2(vocab_dir)
        return lambda: enc.encode_ordinary_batch(docs, num_threads=num_threads or 8)
    if lib == "hf":
        tok = hf_gpt2(vocab_dir)  # HF's own rayon pool: all cores
        return lambda: [e.ids for e in tok.encode_batch(docs, add_special_tokens=False)]
    raise ValueError(f"unknown library {lib!r}")


def make_noop():
    """The floor under every peak RSS figure: the interpreter with this module imported."""
    return lambda: None


def peak_rss_mb() -> float:
    """Peak resident set of this process in MB: VmHWM from /proc (ru_maxrss survives exec on Linux,
    so in a child it would report the parent's peak), else ru_maxrss (KiB on Linux, bytes on macOS)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


if __name__ == "__main__":
    name, params = sys.argv[1], json.loads(sys.argv[2])
    globals()[f"make_{name}"](**params)()
    print(json.dumps({"peak_rss_mb": round(peak_rss_mb(), 1)}))
