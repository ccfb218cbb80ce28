"""Atomic file writes: the one way fastllm writes an output or a checkpoint.

`atomic_path(target)` yields a fresh temporary path beside `target` (created exclusively, so no
other process or symlink is written through), lets the caller write it by any means (open it,
`torch.save`, `safetensors.save_file`, a child process), then fsyncs the file, renames it over
`target` and fsyncs the directory, so a crash or Ctrl-C leaves either the old file or the new one,
never a torn one. On an exception the temporary file is removed and `target` is untouched.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> with atomic_path(d / "out.txt") as tmp:
...     _ = tmp.write_text("hello")
>>> (d / "out.txt").read_text(), sorted(p.name for p in d.iterdir())
('hello', ['out.txt'])
>>> write_atomic(d / "out.txt", "bye")
>>> (d / "out.txt").read_text()
'bye'
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = ["atomic_path", "write_atomic"]


def _fsync_dir(directory: Path) -> None:
    # Makes the rename durable. Windows cannot open a directory; its rename is durable enough.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path beside `target` that replaces `target` when the block exits cleanly.

    The parent folder is created. The temporary file exists (empty, created with O_EXCL by
    `tempfile.mkstemp`) when the block starts; writers may truncate or replace it.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(target.parent)


def write_atomic(target: str | os.PathLike[str], data: str | bytes | Iterable[bytes]) -> None:
    """Writes `data` (text as UTF-8, bytes, or an iterable of byte chunks) to `target` atomically."""
    with atomic_path(target) as tmp, open(tmp, "wb") as f:
        if isinstance(data, str):
            f.write(data.encode("utf-8"))
        elif isinstance(data, (bytes, bytearray, memoryview)):
            f.write(data)
        else:
            for chunk in data:
                f.write(chunk)
