"""The vocabularies and corpora the tests and benchmarks read, in a fresh clone as well.

Real data lives in `../shared/data` next to the repository (override with the environment variable
FASTLLM_SHARED_DATA). Nothing here ever skips when it is absent:
- vocabularies: the GPT-2 and cl100k files ship in `tests/fixtures/vocab` (the same files, MIT);
  the shared copy is used when it has all three;
- corpora (`imdb_reviews_train.txt`, `tinyshakespeare.txt`): the shared file when it is there, else
  the embedded standard-library corpus every fastllm user has (`DocumentReader.stdlib()`: this
  Python's `.py` sources, then its pydoc topics, ~32 MB on Python 3.11), each document followed by
  a newline. `corpus_label` names the one in use, for test ids and benchmark reports.
The tests that read a corpus assert against an oracle (tiktoken, HF tokenizers, the in-memory
trainer), so any text serves; the corpus only changes which text is checked.
"""

from __future__ import annotations

import functools
import os
import sys
import sysconfig
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURE_VOCAB = REPO_ROOT / "tests" / "fixtures" / "vocab"
VOCAB_FILES = ("gpt2_encoder.json", "gpt2_vocab.bpe", "cl100k_base.tiktoken")
STDLIB = "stdlib"


def shared_data_dir() -> Path:
    """`$FASTLLM_SHARED_DATA`, else `<repo>/../shared/data`."""
    env = os.environ.get("FASTLLM_SHARED_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


def vocab_dir() -> Path:
    """The shared `vocab/` folder when it has every file of VOCAB_FILES, else the shipped copies."""
    shared = shared_data_dir() / "vocab"
    return shared if all((shared / f).is_file() for f in VOCAB_FILES) else FIXTURE_VOCAB


def vocab_file(name: str) -> Path:
    """Path of one of VOCAB_FILES (never skips: the repository ships them)."""
    if name not in VOCAB_FILES:
        raise ValueError(f"unknown vocabulary file {name!r}; known: {VOCAB_FILES}")
    return vocab_dir() / name


def corpus_path(name: str) -> Path | None:
    """The shared corpus file `name`, or None when it is absent (the standard library stands in)."""
    path = shared_data_dir() / name
    return path if path.is_file() else None


def corpus_label(name: str) -> str:
    """What `corpus_text(name, ...)` / `corpus_file(name, ...)` read, with its size: the shared file
    or the standard-library corpus (reads the latter once, ~1 s)."""
    path = corpus_path(name)
    if path is not None:
        return f"{name} ({path.stat().st_size / 1e6:.1f} MB)"
    return (
        f"the Python {sys.version_info.major}.{sys.version_info.minor} standard library "
        f"(.py sources + pydoc topics, {len(stdlib_bytes()) / 1e6:.1f} MB)"
    )


def corpus_source(name: str) -> str:
    """Where corpus `name` is read from: the shared file's path or the standard library's folder."""
    path = corpus_path(name)
    return str(path) if path is not None else sysconfig.get_paths()["stdlib"]


@functools.lru_cache(maxsize=1)
def stdlib_bytes() -> bytes:
    """The standard-library corpus as UTF-8: its documents one after another, each ending in a
    newline (~1 s to read). Deterministic for one Python installation."""
    from fastllm.data.documents import DocumentReader

    return b"".join(
        (doc.text if doc.text.endswith("\n") else doc.text + "\n").encode("utf-8")
        for doc in DocumentReader.stdlib()
    )


def _whole_lines(raw: bytes) -> str:
    cut = raw.rfind(b"\n")
    return raw[: cut + 1 if cut > 0 else len(raw)].decode("utf-8", errors="ignore")


def corpus_text(name: str, nbytes: int, offset: int = 0) -> str:
    """`nbytes` of corpus `name` from `offset`, cut back to whole lines (valid UTF-8); the same
    slice of the standard-library corpus when the shared file is absent."""
    path = corpus_path(name)
    if path is not None:
        with open(path, "rb") as f:
            f.seek(offset)
            return _whole_lines(f.read(nbytes))
    raw = stdlib_bytes()
    if len(raw) < offset + nbytes:  # a stripped-down Python: wrap around rather than come up short
        raw = raw * (-(-(offset + nbytes) // max(len(raw), 1)))
    return _whole_lines(raw[offset : offset + nbytes])


def corpus_file(name: str, folder: Path, nbytes: int | None = None) -> Path:
    """A file of the first `nbytes` (default: all) of corpus `name`, cut at a line end: the shared
    file itself when it fits, else a slice of it, or of the standard-library corpus, in `folder`."""
    path = corpus_path(name)
    if path is not None:
        if nbytes is None or nbytes >= path.stat().st_size:
            return path
        raw = path.read_bytes()[:nbytes]
        stem = path.stem
    else:
        raw = stdlib_bytes()[:nbytes]
        stem = f"{STDLIB}-py{sys.version_info.major}{sys.version_info.minor}"
    out = folder / f"{stem}-{len(raw)}.txt"
    out.write_bytes(raw[: raw.rfind(b"\n") + 1])
    return out
