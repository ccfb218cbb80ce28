"""Atomic file writes: the one way fastllm writes an output or a checkpoint (and, for the commands
whose output is a folder, `atomic_folder`: the one way a folder is replaced).

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
import ctypes
import errno
import json
import os
import secrets
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

__all__ = [
    "MANIFEST",
    "atomic_folder",
    "atomic_path",
    "check_output_folder",
    "current_umask",
    "read_manifest",
    "write_atomic",
]


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


# ---- output folders: checked, marked with a manifest, and switched old -> new in one step ----------

MANIFEST = ".fastllm-output.json"  # hidden: a folder reader (and a shell glob) leaves it out
_FORMAT = "fastllm-output"


def read_manifest(folder: str | os.PathLike[str]) -> dict | None:
    """The manifest fastllm wrote in an output folder ({"format", "version", "command", "files"}),
    or None when there is none; ValueError naming it when it is not one."""
    path = Path(folder) / MANIFEST
    try:
        raw = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        data = None
    files = data.get("files") if isinstance(data, dict) else None
    if (
        not isinstance(data, dict)
        or data.get("format") != _FORMAT
        or not isinstance(data.get("command"), str)
        or not isinstance(files, list)
        or not all(isinstance(f, str) and f and "/" not in f and f not in (".", "..") for f in files)
    ):
        raise ValueError(f"{path}: not a fastllm output manifest")
    return data


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_output_folder(
    target: str | os.PathLike[str],
    *,
    command: str,
    keep_out: Iterable[str | os.PathLike[str]] = (),
    legacy: Callable[[str], bool] | None = None,
) -> Path:
    """`target` (links resolved) if `fastllm <command>` may replace it as a whole; else ValueError.

    Refused: the working folder or a folder holding it (`-o .`), a folder holding any path of
    `keep_out` (the inputs), a file, and a non-empty folder that is not a previous output of the
    same command: its manifest names the command and every entry in it (or, for outputs made before
    manifests, every entry is a file passing `legacy`). Nothing fastllm did not write is replaced.
    """
    shown = str(target)
    target = Path(target).resolve()
    if target.exists() and not target.is_dir():
        raise ValueError(f"output {shown!r} is a file; fastllm {command} writes a folder")
    if _inside(Path.cwd().resolve(), target):
        raise ValueError(
            f"output folder {shown!r} is the working folder or holds it; fastllm {command} replaces its "
            "output folder as a whole, so give a new folder (or a previous output of the command)"
        )
    for path in keep_out:
        if _inside(Path(path).resolve(), target):
            raise ValueError(
                f"output folder {shown!r} holds the input {str(path)!r}; fastllm {command} replaces its "
                "output folder as a whole, so give a folder apart from the inputs"
            )
    if not target.exists():
        return target
    entries = sorted(os.listdir(target))
    if not entries:
        return target
    manifest = read_manifest(target)
    if manifest is None:
        ours = legacy is not None and all(legacy(e) and (target / e).is_file() for e in entries)
        unrelated = [e for e in entries if legacy is None or not legacy(e)]
    elif manifest["command"] != command:
        raise ValueError(
            f"output folder {shown!r} holds the output of fastllm {manifest['command']}, not of fastllm "
            f"{command}; give another folder"
        )
    else:
        unrelated = [e for e in entries if e != MANIFEST and e not in manifest["files"]]
        ours = not unrelated
    if not ours:
        example = ", ".join(repr(e) for e in (unrelated or entries)[:3])
        raise ValueError(
            f"output folder {shown!r} holds files fastllm {command} did not write ({example}); it is "
            "replaced as a whole, so give a new or empty folder"
        )
    return target


def _exchange(a: Path, b: Path) -> bool:
    """Swaps the two paths in one step (Linux renameat2 with RENAME_EXCHANGE, through ctypes: the
    standard library has no binding); False where the system or file system cannot."""
    if sys.platform != "linux":
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # a libc without the wrapper (glibc < 2.28, musl)
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _lock(folder: Path) -> int | None:
    """A descriptor of `folder` holding an exclusive lock on it (-1 where the system has no flock),
    or None when another process holds the lock: a run in progress. Closing the descriptor, or the
    process dying, releases it."""
    try:
        import fcntl
    except ImportError:  # Windows
        return -1
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _unlock(fd: int | None) -> None:
    if fd is not None and fd >= 0:
        os.close(fd)


def _fresh_folder(parent: Path, prefix: str) -> Path:
    """A new, empty folder `parent/prefix<random>`, made by mkdir (exclusive: an existing name or a
    planted link is never reused) with the usual permissions (0o777 less the umask)."""
    for _ in range(100):
        path = parent / f"{prefix}{secrets.token_hex(6)}"
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"no free temporary name {prefix}* in {str(parent)!r}")


def _remove_output(folder: Path, legacy: Callable[[str], bool] | None) -> None:
    """Deletes what fastllm wrote in a replaced output folder (the entries its manifest lists, or
    the `legacy` files), then the folder if that left it empty; anything else stays."""
    try:
        manifest = read_manifest(folder)
    except ValueError:
        return
    if manifest is not None:
        names = manifest["files"]
    else:
        names = [e for e in os.listdir(folder) if legacy is not None and legacy(e)]
    for name in [*names, MANIFEST]:
        path = folder / name
        if path.is_file() or path.is_symlink():
            path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        folder.rmdir()


def _tidy(target: Path, legacy: Callable[[str], bool] | None) -> None:
    """Clears the litter of earlier runs beside `target`: an unfinished folder of a killed run
    (`.NAME.fastllm-new-*` without a manifest: all of it fastllm's), and an output replaced or
    finished but not switched when a run was killed (with a manifest: what it lists is deleted).
    Folders a running process holds locked are left alone. A replaced output left by a kill between
    the two renames of the fallback switch (`.NAME.fastllm-old-*`, `target` missing) is put back."""
    parent, name = target.parent, target.name
    litter = sorted(
        p
        for p in parent.iterdir()
        if p.name.startswith(f".{name}.fastllm-") and p.is_dir() and not p.is_symlink()
    )
    old = [p for p in litter if p.name.startswith(f".{name}.fastllm-old-")]
    if old and not os.path.lexists(target):
        old[-1].rename(target)
        litter.remove(old[-1])
    for p in litter:
        fd = _lock(p)
        if fd is None:
            continue  # another run is writing it
        try:
            try:
                manifest = read_manifest(p)
            except ValueError:
                continue
            if manifest is None and p.name.startswith(f".{name}.fastllm-new-"):
                shutil.rmtree(p, ignore_errors=True)
            else:
                _remove_output(p, legacy)
        finally:
            _unlock(fd)


@contextlib.contextmanager
def atomic_folder(
    target: str | os.PathLike[str],
    *,
    command: str,
    keep_out: Iterable[str | os.PathLike[str]] = (),
    legacy: Callable[[str], bool] | None = None,
) -> Iterator[Path]:
    """A fresh folder beside `target` that replaces `target` as a whole when the block exits cleanly.

    `target` is checked first (`check_output_folder`), and the litter of killed runs is cleared.
    The block fills the fresh folder; on leaving it fastllm writes the manifest (`MANIFEST`: the
    command and every entry), and the new folder and the old one trade places in one rename
    (`renameat2(RENAME_EXCHANGE)`; elsewhere two renames, and a kill between them is undone by the
    next run), after which what fastllm wrote of the old one is deleted. A reader sees the old
    complete folder or the new one, never a mix; on an exception the fresh folder is removed and
    `target` is untouched.
    """
    keep_out = list(keep_out)
    target = check_output_folder(target, command=command, keep_out=keep_out, legacy=legacy)
    target.parent.mkdir(parents=True, exist_ok=True)
    _tidy(target, legacy)
    tmp = _fresh_folder(target.parent, f".{target.name}.fastllm-new-")
    lock = _lock(tmp)
    try:
        try:
            yield tmp
            files = sorted(e for e in os.listdir(tmp) if e != MANIFEST)
            manifest = {"format": _FORMAT, "version": 1, "command": command, "files": files}
            write_atomic(tmp / MANIFEST, json.dumps(manifest, indent=1) + "\n")
            _fsync_dir(tmp)
            # the old output may have gained files while this one was written: checked again
            check_output_folder(target, command=command, keep_out=keep_out, legacy=legacy)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        # From here an error leaves litter that the next run's `_tidy` clears.
        if not os.path.lexists(target):
            tmp.rename(target)
        elif _exchange(tmp, target):
            _remove_output(tmp, legacy)  # the old output, now at the temporary name
        else:
            old = _fresh_folder(target.parent, f".{target.name}.fastllm-old-")
            old.rmdir()  # its name, for the old output moved aside for one moment
            target.rename(old)
            try:
                tmp.rename(target)
            except BaseException:
                old.rename(target)
                raise
            _remove_output(old, legacy)
        _fsync_dir(target.parent)
    finally:
        _unlock(lock)
