"""Corpus -> token shards: what `fastllm tokenize` does, as a function the tests and scripts can call.

Documents are streamed from the inputs (`fastllm.data.documents.DocumentReader`, whose rule for
bad records applies), gathered into batches of a few MB and encoded with
`BPETokenizer.encode_batch_numpy` (no Python int per token). Special tokens spelled in the text are
encoded as plain text (`disallowed_special=()`), so the only end-of-text ids in a shard are the ones
appended after every document: splitting a shard at them gives the documents back. This is what
nanoGPT's and llm.c's data scripts do (`encode_ordinary` + EOT).

Each document goes to "val" or "train" by a seeded hash of its index in the input (splitmix64):
the split of a document does not depend on batch sizes or threads, only on (seed, index,
val_fraction). When val_fraction > 0 and there are at least two documents, at least one goes to
val: the last train document is held back until the end and moved to val if val is still empty.

The output folder holds one shard set and is replaced as a whole (`fastllm._io.atomic_folder`): the
new set is written beside it and switched in one step, with a manifest listing every shard, so a
reader (`TokenDataset`) sees the old complete set or the new one, and a killed run leaves the old
set (plus litter the next run clears). The folder must be new, empty, or a previous output of
tokenize (`overwrite=True` to replace it); it may not hold the inputs, the tokenizer or the working
folder.

>>> import tempfile, pathlib
>>> from fastllm import BPETokenizer
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> tok = BPETokenizer.train(["hello world"] * 8, 270, special_tokens=["<|endoftext|>"], show_progress=False)
>>> tok.save(d / "tok.json")
>>> _ = (d / "in.txt").write_text("hello\\nworld\\nhello world\\n")
>>> stats = tokenize_to_shards([d / "in.txt"], d / "out", tokenizer=d / "tok.json", val_fraction=0.5)
>>> stats.documents, stats.docs["train"] + stats.docs["val"]
(3, 3)
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fastllm._checks import check_bool, check_float, check_int, check_optional_int, check_type
from fastllm._io import atomic_folder, check_output_folder
from fastllm.data.documents import DocumentReader
from fastllm.data.shards import DEFAULT_SHARD_TOKENS, ShardWriter
from fastllm.tokenizer import BPETokenizer

SPLITS = ("train", "val")
BATCH_BYTES = 4_000_000  # text per encode call: big enough to amortise the call, small in memory
_SHARD_FILE = re.compile(r"(train|val)_\d{5,}\.(bin|json)")
_M64 = (1 << 64) - 1


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 (wrapping arithmetic): a cheap, well-mixed hash."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def val_mask(indices: np.ndarray, *, seed: int, val_fraction: float) -> np.ndarray:
    """True where the document with that input index goes to "val" (before the at-least-one rule).

    >>> val_mask(np.arange(8), seed=0, val_fraction=0.5).tolist()
    [False, True, False, False, True, True, True, True]
    >>> bool(val_mask(np.arange(8), seed=0, val_fraction=0.0).any())
    False
    """
    with np.errstate(over="ignore"):
        key = _splitmix64(np.array([seed & _M64], dtype=np.uint64))[0]
        h = _splitmix64(np.asarray(indices, dtype=np.uint64) ^ key)
    u = (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)  # uniform in [0, 1)
    return u < val_fraction


@dataclass
class TokenizeStats:
    """What a run read and wrote."""

    documents: int = 0  # documents read (valid ones)
    text_bytes: int = 0  # UTF-8 bytes of their text
    invalid: list[str] = field(default_factory=list)  # "file:line: reason" of skipped records
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))  # EOT included
    docs: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    shards: dict[str, list[Path]] = field(default_factory=lambda: {s: [] for s in SPLITS})  # headers
    seconds: float = 0.0


def _is_shard_file(name: str) -> bool:
    """Whether a file name is one `fastllm tokenize` writes (what an output folder made before
    output manifests may hold and a new run may replace)."""
    return _SHARD_FILE.fullmatch(name) is not None


def existing_shards(directory: Path) -> list[Path]:
    """Shard files (train_/val_ .bin/.json) already in `directory`."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _is_shard_file(p.name))


def _append_eot(ids: np.ndarray, offsets: np.ndarray, eot: int) -> tuple[np.ndarray, np.ndarray]:
    """The ids with `eot` after every document, and the per-document lengths (EOT included)."""
    n = len(offsets) - 1
    lengths = np.diff(offsets)
    out = np.empty(len(ids) + n, dtype=ids.dtype)
    out[np.arange(len(ids)) + np.repeat(np.arange(n), lengths)] = ids  # token j of doc i moves right by i
    out[offsets[1:] + np.arange(n)] = eot  # doc i's EOT sits after its last token
    return out, lengths + 1


def tokenize_to_shards(
    inputs: list[Path],
    output: Path,
    *,
    tokenizer: Path,
    fmt: str | None = None,
    text_field: str = "text",
    val_fraction: float = 0.005,
    seed: int = 0,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    num_threads: int | None = None,
    skip_invalid: bool = False,
    eot: str = "<|endoftext|>",
    overwrite: bool = False,
    batch_bytes: int = BATCH_BYTES,
    progress: Callable[[int], None] | None = None,
) -> TokenizeStats:
    """Encodes the documents of `inputs` into train/val shards in `output`; see the module docstring.

    `fmt` is one of `fastllm.data.documents.FORMATS` (None: from the file names); bad records raise
    `InvalidRecord` naming file and line, or with `skip_invalid` are skipped and listed in
    `TokenizeStats.invalid`. `progress(n)` is called after each batch with the input bytes it consumed.
    """
    t0 = time.perf_counter()
    val_fraction = check_float(val_fraction, "val_fraction", minimum=0.0, maximum=1.0, max_open=True)
    seed = check_int(seed, "seed", minimum=0, maximum=_M64)
    shard_tokens = check_int(shard_tokens, "shard_tokens", minimum=1)
    num_threads = check_optional_int(num_threads, "num_threads", minimum=1)
    batch_bytes = check_int(batch_bytes, "batch_bytes", minimum=1)
    eot = check_type(eot, "eot", str)
    overwrite = check_bool(overwrite, "overwrite")
    reader = DocumentReader(inputs, fmt, text_field=text_field, skip_invalid=skip_invalid)
    tokenizer = Path(tokenizer)
    if not tokenizer.is_file():
        raise FileNotFoundError(f"tokenizer not found: {str(tokenizer)!r}")
    tok_bytes = tokenizer.read_bytes()
    tok = BPETokenizer.from_file(tokenizer)
    specials = tok.special_tokens
    if eot not in specials:
        raise ValueError(
            f"tokenizer {str(tokenizer)!r} has no special token {eot!r} (its special tokens: "
            f"{sorted(specials)}); pass --eot"
        )
    eot_id = specials[eot]
    output = Path(output)
    keep_out = [*inputs, tokenizer]
    check_output_folder(output, command="tokenize", keep_out=keep_out, legacy=_is_shard_file)
    old = existing_shards(output)
    if old and not overwrite:
        raise ValueError(
            f"{str(output)!r} already holds {len(old)} shard file(s) ({old[0].name}, ...); "
            "pass --overwrite to replace them"
        )

    stats = TokenizeStats()
    sha = hashlib.sha256(tok_bytes).hexdigest()
    pending: np.ndarray | None = None  # the last train document so far, held back (see module docstring)

    # The new shard set is written into a fresh folder beside `output` and replaces it in one step
    # (`fastllm._io.atomic_folder`): a reader sees the old complete set or the new one, never a mix,
    # and a killed run leaves the old set and litter that the next run clears.
    with atomic_folder(output, command="tokenize", keep_out=keep_out, legacy=_is_shard_file) as folder:
        writers = {
            s: ShardWriter(
                folder,
                split=s,
                vocab_size=tok.vocab_size,
                eot_id=eot_id,
                tokenizer_sha256=sha,
                shard_tokens=shard_tokens,
            )
            for s in SPLITS
        }

        def flush(texts: list[str], consumed: int) -> None:
            nonlocal pending
            ids, offsets = tok.encode_batch_numpy(texts, num_threads=num_threads, disallowed_special=())
            stream, lengths = _append_eot(ids, offsets, eot_id)
            first = stats.documents - len(texts)
            is_val = val_mask(np.arange(first, first + len(texts)), seed=seed, val_fraction=val_fraction)
            token_val = np.repeat(is_val, lengths)
            writers["val"].write(stream[token_val])
            stats.docs["val"] += int(is_val.sum())
            train = stream[~token_val]
            if not is_val.all():
                last = len(lengths) - 1 - int(np.argmin(is_val[::-1]))  # the batch's last train document
                if pending is not None:
                    writers["train"].write(pending)
                writers["train"].write(train[: len(train) - lengths[last]])
                pending = train[len(train) - lengths[last] :].copy()
                stats.docs["train"] += int((~is_val).sum())
            if progress is not None:
                progress(consumed)

        try:
            texts: list[str] = []
            size = consumed = 0
            for doc in reader:
                n = len(doc.text.encode("utf-8"))  # the reader yields only encodable text
                texts.append(doc.text)
                stats.documents += 1
                stats.text_bytes += n
                size += n
                consumed += len(doc.raw) if isinstance(doc.raw, bytes) else n
                if size >= batch_bytes:
                    flush(texts, consumed)
                    texts, size, consumed = [], 0, 0
            if texts:
                flush(texts, consumed)
            stats.invalid = reader.invalid
            if stats.documents == 0:
                raise ValueError(f"no documents in {', '.join(map(str, inputs))} (format {reader.fmt!r})")
            if pending is not None:
                if val_fraction > 0 and stats.docs["val"] == 0 and stats.documents >= 2:
                    writers["val"].write(pending)
                    stats.docs["val"] += 1
                    stats.docs["train"] -= 1
                else:
                    writers["train"].write(pending)
            for s, w in writers.items():
                stats.shards[s] = [output / p.name for p in w.close()]
                stats.tokens[s] = w.tokens
        except BaseException:
            for w in writers.values():  # close the open shards; the folder goes with them
                w.abort()
            raise
    stats.seconds = time.perf_counter() - t0
    return stats


def input_size(inputs: list[Path], fmt: str) -> int | None:
    """Total bytes of the inputs for a progress bar (None for Parquet, whose size is not text)."""
    if fmt == "parquet":
        return None
    return sum(os.path.getsize(p) for p in inputs if Path(p).is_file())
