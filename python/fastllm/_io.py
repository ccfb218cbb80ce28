"""Atomic file writes: the one way fastllm writes an output or a checkpoint.

`atomic_path(target)` yields a fresh temporary path beside `target` (created exclusively, so no
other process or symlink is written through), lets the caller write it by any means (open it,
`torch.save`, `safetensors.save_file`, a child process), then fsyncs the file, renames it over
`target` and fsyncs the directory, so a crash or Ctrl-C leaves either the old file or the new one,
never a torn one. On an exception the temporary file is removed and `target` is untouched.

Permissions: the file is private (0600, `mkstemp`'s) while it is written; when it is renamed into
place it gets the mode a plain `open(target, "w")` would give it: 0o666 minus the process's umask
(0644 under the usual umask 022) for a new file, and the existing file's permission bits when it
replaces one (a file the user made private stays private, one they shared stays shared).

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
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = ["atomic_path", "current_umask", "write_atomic"]


def _umask_from_proc() -> int | None:
    """The umask as Linux reports it (/proc/self/status "Umask:", since Linux 4.7): read without
    changing it, so no other thread ever runs under a changed umask."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _umask_by_setting() -> int:
    # The portable way sets the umask to read it back: done once, at import, before the package
    # starts any thread, and only where /proc cannot tell.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_IMPORT_UMASK = _umask_from_proc()
if _IMPORT_UMASK is None:
    _IMPORT_UMASK = _umask_by_setting()


def current_umask() -> int:
    """The process's umask: read from /proc now where Linux offers it (a later `os.umask` call is
    seen), else the value it had when fastllm was imported."""
    mask = _umask_from_proc()
    return _IMPORT_UMASK if mask is None else mask


def _final_mode(target: Path) -> int:
    """The permission bits the file replacing `target` gets (see the module docstring)."""
    try:
        st = os.lstat(target)
    except OSError:
        st = None
    if st is not None and stat.S_ISREG(st.st_mode):  # not a symlink's 0777: it is replaced, not followed
        return stat.S_IMODE(st.st_mode) & 0o777  # no set-id bits carried over to new content
    return 0o666 & ~current_umask()


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
        os.chmod(tmp, _final_mode(target))
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
