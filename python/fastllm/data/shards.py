"""Token shards on disk: raw little-endian id files plus a small JSON header, written atomically.

A split (`train`, `val`) is a sequence of shards `{split}_{index:05d}.bin`, each the token ids as
raw little-endian integers (uint16 when the vocabulary fits, else uint32: half the disk and page
cache for every tokenizer up to 65,536 ids, as in nanoGPT and llm.c), beside a header
`{split}_{index:05d}.json`:

    {"format": "fastllm-tokens", "version": 1, "dtype": "uint16", "count": N, "vocab_size": V,
     "eot_id": E, "tokenizer_sha256": "...", "documents": D}

`count` is the number of ids in the .bin, `documents` the number of end-of-text ids in it (the
documents that end in this shard; a document may start in the previous one). `tokenizer_sha256`
is the SHA-256 of the tokenizer.json bytes, so shards made by different tokenizers are never mixed.

Writing: each .bin is streamed into a temporary file beside the target (`fastllm._io.atomic_path`)
and renamed into place when the shard is full (`shard_tokens` ids) or the writer is closed; the
header is written (also atomically) after its .bin, so a header on disk always describes a complete
.bin. A reader lists shards by their headers (`list_shards`) and checks the .bin size against
`count`. A shard set is complete or refused: the shards of a split are numbered 0, 1, 2, ... without
a gap, each with its header and .bin, and in a `fastllm tokenize` output folder exactly the files its
manifest (`fastllm._io.MANIFEST`) lists; anything else raises, naming the file missing or foreign.
Sizes read from a header are checked before anything is allocated from them (`vocab_size` at most
`MAX_VOCAB_SIZE`, `count` against the .bin's size).

>>> import tempfile, numpy as np
>>> d = tempfile.mkdtemp()
>>> settings = dict(vocab_size=300, eot_id=299, tokenizer_sha256="0" * 64, shard_tokens=4)
>>> with ShardWriter(d, split="train", **settings) as w:
...     w.write(np.array([5, 6, 299, 7, 8, 9, 299], dtype=np.uint32))
>>> [p.name for p in list_shards(d, "train")]
['train_00000.json', 'train_00001.json']
>>> read_header(list_shards(d, "train")[1]).documents
1
>>> load_shard(list_shards(d, "train")[1]).tolist()
[8, 9, 299]
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fastllm._checks import check_int, check_type
from fastllm._io import atomic_path, read_manifest, write_atomic

FORMAT = "fastllm-tokens"
VERSION = 1
DTYPES = ("uint16", "uint32")
DEFAULT_SHARD_TOKENS = 100_000_000  # 200 MB of uint16 per shard: few files, each quick to map
# Ids are stored as uint32 and read back as int64; a vocabulary is capped at 2**31 ids so every id
# is also a valid int32 (what embedding tables and tokenizers index with), and a header claiming more
# (2**32, ...) is refused before a model or a count table is sized from it.
MAX_VOCAB_SIZE = 2**31

PathLike = str | os.PathLike


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    """uint16 when every id < vocab_size fits in 16 bits, else uint32 (little-endian)."""
    check_int(vocab_size, "vocab_size", minimum=1, maximum=MAX_VOCAB_SIZE)
    return np.dtype("<u2") if vocab_size <= 2**16 else np.dtype("<u4")


def _check_split(split: str) -> str:
    check_type(split, "split", str)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]*", split):
        raise ValueError(f"split must be a name of letters, digits, '.' and '-', got {split!r}")
    return split


@dataclass(frozen=True)
class ShardHeader:
    """The JSON header of one shard (see the module docstring for the fields)."""

    dtype: str
    count: int
    vocab_size: int
    eot_id: int
    tokenizer_sha256: str
    documents: int

    @property
    def itemsize(self) -> int:
        return np.dtype(self.dtype).itemsize

    def to_json(self) -> bytes:
        return (json.dumps({"format": FORMAT, "version": VERSION, **asdict(self)}, indent=1) + "\n").encode()


def read_header(path: PathLike) -> ShardHeader:
    """Reads and validates a shard header (.json); bad content raises ValueError naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a JSON shard header ({e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path}: format is {got!r}, expected {FORMAT!r}")
    if data.get("version") != VERSION:
        raise ValueError(
            f"{path}: version {data.get('version')!r} is not supported (this fastllm reads version {VERSION})"
        )
    if data.get("dtype") not in DTYPES:
        raise ValueError(f"{path}: dtype {data.get('dtype')!r} is not one of {DTYPES}")
    fields = {}
    for name in ("count", "vocab_size", "eot_id", "documents"):
        value = data.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{path}: {name} must be a non-negative integer, got {value!r}")
        fields[name] = value
    sha = data.get("tokenizer_sha256")
    if not isinstance(sha, str):
        raise ValueError(f"{path}: tokenizer_sha256 must be a string, got {sha!r}")
    header = ShardHeader(dtype=data["dtype"], tokenizer_sha256=sha, **fields)
    if not 1 <= header.vocab_size <= MAX_VOCAB_SIZE:
        raise ValueError(
            f"{path}: vocab_size {header.vocab_size} is out of range: a shard's vocabulary holds 1 to "
            f"{MAX_VOCAB_SIZE} (2**31) ids"
        )
    if header.documents > header.count:
        raise ValueError(f"{path}: documents {header.documents} is more than the count of {header.count} ids")
    if header.dtype == "uint16" and header.vocab_size > 2**16:
        raise ValueError(f"{path}: dtype uint16 cannot hold ids of a vocabulary of {header.vocab_size}")
    if header.eot_id >= header.vocab_size:
        raise ValueError(f"{path}: eot_id {header.eot_id} is out of range for vocab_size {header.vocab_size}")
    return header


def bin_path(header_path: PathLike) -> Path:
    """The .bin beside a shard's .json header."""
    return Path(header_path).with_suffix(".bin")


def list_shards(directory: PathLike, split: str) -> list[Path]:
    """Headers (.json) of the shards of `split` in `directory`, in index order; [] when none.

    The set is complete or refused: FileNotFoundError names the first file missing (a gap in the
    numbers, a header without its .bin or a .bin without its header, a file the folder's manifest
    lists), ValueError a shard file the manifest does not list or a number used twice.
    """
    directory = Path(directory)
    pattern = re.compile(rf"{re.escape(_check_split(split))}_(\d{{5,}})\.(json|bin)")
    found: dict[str, dict[int, Path]] = {"json": {}, "bin": {}}
    if directory.is_dir():
        for p in directory.iterdir():
            m = pattern.fullmatch(p.name)
            if m:
                index, kind = int(m.group(1)), m.group(2)
                if index in found[kind]:
                    raise ValueError(
                        f"{directory}: two shards numbered {index}: {found[kind][index].name}, {p.name}"
                    )
                found[kind][index] = p
    manifest = read_manifest(directory)
    if manifest is not None and manifest["command"] == "tokenize":
        listed = {f for f in manifest["files"] if pattern.fullmatch(f)}
        present = {p.name for kind in found.values() for p in kind.values()}
        missing, foreign = sorted(listed - present), sorted(present - listed)
        if missing:
            raise FileNotFoundError(
                f"shard set {split!r} in {str(directory)!r} is incomplete: {missing[0]} is missing "
                f"(the folder's manifest lists {len(listed)} files of the split)"
            )
        if foreign:
            raise ValueError(
                f"{directory / foreign[0]}: not part of the shard set fastllm tokenize wrote in "
                f"{str(directory)!r} (its manifest does not list it)"
            )
    numbers = sorted(set(found["json"]) | set(found["bin"]))
    for index in range(numbers[-1] + 1 if numbers else 0):  # stops at the first gap
        for kind in ("json", "bin"):
            if index not in found[kind]:
                raise FileNotFoundError(
                    f"shard set {split!r} in {str(directory)!r} is incomplete: {split}_{index:05d}.{kind} "
                    f"is missing (the set runs to {split}_{numbers[-1]:05d})"
                )
    return [found["json"][i] for i in numbers]


def load_shard(
    header_path: PathLike, *, check_ids: bool = False, header: ShardHeader | None = None
) -> np.ndarray:
    """Memory-maps the ids of one shard (read-only), after checking its size against the header.

    A .bin whose size is not `count * itemsize` (truncated, or written by something else) raises
    ValueError naming the file and both sizes. `check_ids` reads the whole shard and checks every
    id < vocab_size (O(shard); off by default).
    """
    header = read_header(header_path) if header is None else header
    data = bin_path(header_path)
    if not data.is_file():
        raise FileNotFoundError(
            f"shard data not found: {str(data)!r} (its header {str(header_path)!r} exists)"
        )
    expected = header.count * header.itemsize
    actual = data.stat().st_size
    if actual != expected:
        raise ValueError(
            f"{data}: size is {actual:,} bytes but its header says {header.count:,} {header.dtype} ids "
            f"= {expected:,} bytes (truncated or corrupt shard)"
        )
    dtype = np.dtype(header.dtype).newbyteorder("<")
    if header.count == 0:
        return np.zeros(0, dtype=dtype)  # np.memmap cannot map an empty file
    ids = np.memmap(data, dtype=dtype, mode="r", shape=(header.count,))
    if check_ids:
        top = int(ids.max())
        if top >= header.vocab_size:
            raise ValueError(f"{data}: id {top} is out of range for vocab_size {header.vocab_size}")
    return ids


class _OpenShard:
    """The .bin being filled: a file inside `atomic_path`, renamed into place by `commit` (after an
    fsync) or removed by `discard`. A shard outlives one `write` call, so the `with` block of
    `atomic_path` is entered here and left in one of the two methods."""

    def __init__(self, target: Path) -> None:
        self._scope = atomic_path(target)
        self.file = open(self._scope.__enter__(), "wb")  # closed by commit or discard

    def commit(self) -> None:
        self.file.close()
        self._scope.__exit__(None, None, None)

    def discard(self) -> None:
        self.file.close()
        error = _Discarded()
        self._scope.__exit__(_Discarded, error, None)  # as an error would: the temporary file goes


class _Discarded(Exception):
    """Leaves an `atomic_path` block the way an error does (never raised to a caller)."""


class ShardWriter:
    """Appends token ids to the shards of one split, starting a new shard every `shard_tokens` ids.

    `write(ids)` takes any integer array; ids must be < vocab_size (checked per call, ValueError
    naming the id). `close()` (or leaving the `with` block without an error) finishes the last shard
    and returns the header paths written; on an error the unfinished shard's temporary file is
    removed and finished shards are kept. An empty split writes no shard.
    """

    def __init__(
        self,
        directory: PathLike,
        *,
        split: str,
        vocab_size: int,
        eot_id: int,
        tokenizer_sha256: str,
        shard_tokens: int = DEFAULT_SHARD_TOKENS,
    ):
        self.directory = Path(directory)
        self.split = _check_split(split)
        self.dtype = dtype_for_vocab(vocab_size)
        self.shard_tokens = check_int(shard_tokens, "shard_tokens", minimum=1)
        self.eot_id = check_int(eot_id, "eot_id", minimum=0, maximum=vocab_size, max_open=True)
        self.vocab_size = vocab_size
        self.tokenizer_sha256 = check_type(tokenizer_sha256, "tokenizer_sha256", str)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.written: list[Path] = []  # headers of finished shards
        self.tokens = 0  # ids written over all shards
        self.documents = 0  # end-of-text ids written over all shards
        self._open: _OpenShard | None = None  # the shard being filled
        self._count = 0  # ids in the open shard
        self._docs = 0  # end-of-text ids in the open shard

    def _name(self, suffix: str) -> Path:
        return self.directory / f"{self.split}_{len(self.written):05d}{suffix}"

    def write(self, ids: np.ndarray) -> None:
        """Appends `ids` (1-D integers), rolling over to new shards as they fill."""
        ids = np.asarray(ids)
        if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
            raise ValueError(f"ids must be a 1-D integer array, got shape {ids.shape} dtype {ids.dtype}")
        if ids.size:
            lo, hi = int(ids.min()), int(ids.max())
            if lo < 0 or hi >= self.vocab_size:
                bad = lo if lo < 0 else hi
                raise ValueError(f"token id {bad} is out of range for vocab_size {self.vocab_size}")
        ids = ids.astype(self.dtype, copy=False)
        while ids.size:
            if self._open is None:
                self._open = _OpenShard(self._name(".bin"))
            room = self.shard_tokens - self._count
            part, ids = ids[:room], ids[room:]
            self._open.file.write(part.tobytes())
            self._count += part.size
            self._docs += int(np.count_nonzero(part == self.eot_id))
            if self._count == self.shard_tokens:
                self._finish()

    def _finish(self) -> None:
        assert self._open is not None
        self._open.commit()
        header = ShardHeader(
            dtype=self.dtype.name,
            count=self._count,
            vocab_size=self.vocab_size,
            eot_id=self.eot_id,
            tokenizer_sha256=self.tokenizer_sha256,
            documents=self._docs,
        )
        write_atomic(self._name(".json"), header.to_json())
        self.written.append(self._name(".json"))
        self.tokens += self._count
        self.documents += self._docs
        self._open, self._count, self._docs = None, 0, 0

    def close(self) -> list[Path]:
        """Finishes the open shard (if any ids are pending) and returns every header written."""
        if self._open is not None:
            self._finish()
        return list(self.written)

    def abort(self) -> None:
        """Drops the unfinished shard's temporary file; finished shards stay."""
        if self._open is not None:
            self._open.discard()
            self._open, self._count, self._docs = None, 0, 0

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
