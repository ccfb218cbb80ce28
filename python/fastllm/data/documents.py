"""The embedded default corpus: the Python standard library that ships with CPython.

Every machine with Python has it, so the main job runs with no download: the stdlib's `.py`
sources (site-packages excluded) and the pydoc topics text. Files are decoded as Python decodes
them (PEP 263 coding cookies); the few that are deliberately undecodable (test fixtures of bad
encodings) are skipped and counted.
"""

from __future__ import annotations

import sysconfig
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root: Path | None = None) -> list[Path]:
    """Sorted `.py` files of the standard library, without site-packages."""
    root = root or stdlib_root()
    return sorted(
        p for p in root.rglob("*.py") if "site-packages" not in p.parts and "dist-packages" not in p.parts
    )


@dataclass
class CorpusStats:
    files: int = 0  # files read
    skipped: list[str] = field(default_factory=list)  # files that could not be decoded
    chars: int = 0  # characters yielded


def pydoc_topics() -> str:
    """The pydoc topics text (the language reference sections `help()` shows)."""
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions strip pydoc_data
        return ""
    return "\n\n".join(topics[k] for k in sorted(topics))


def stdlib_texts(stats: CorpusStats | None = None, root: Path | None = None) -> Iterator[str]:
    """Yields the text of each stdlib source file, then the pydoc topics."""
    stats = stats if stats is not None else CorpusStats()
    for path in stdlib_files(root):
        try:
            with tokenize.open(path) as f:
                text = f.read()
        except (SyntaxError, UnicodeDecodeError, OSError):
            stats.skipped.append(str(path))
            continue
        stats.files += 1
        stats.chars += len(text)
        yield text
    topics = pydoc_topics()
    if topics:
        stats.chars += len(topics)
        yield topics
