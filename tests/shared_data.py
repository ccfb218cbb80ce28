"""Where the real vocabularies and corpora live: `../shared/data` next to the repository.

Override with the environment variable FASTLLM_SHARED_DATA. Tests (and benchmarks) that need these
files skip with one fixed reason when they are absent; nothing else is ever skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_REASON = "needs ../shared/data (real vocabularies/corpora), absent here"


def shared_data_dir() -> Path:
    """`$FASTLLM_SHARED_DATA`, else `<repo>/../shared/data`."""
    env = os.environ.get("FASTLLM_SHARED_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


def shared_file(*parts: str) -> Path:
    """Path of a file under the shared data folder; skips the calling test when it is absent."""
    path = shared_data_dir().joinpath(*parts)
    if not path.is_file():
        pytest.skip(SHARED_REASON)
    return path


def shared_text(name: str, nbytes: int, offset: int = 0) -> str:
    """`nbytes` of a shared corpus from `offset`, cut back to whole lines (valid UTF-8)."""
    raw = shared_file(name).read_bytes()[offset : offset + nbytes]
    cut = raw.rfind(b"\n")
    return raw[: cut + 1 if cut > 0 else len(raw)].decode("utf-8", errors="ignore")
