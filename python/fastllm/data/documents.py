"""Reading documents: the one reader behind `fastllm dedup`, `fastllm tokenize`, `fastllm tokenizer
train` and `fastllm demo`, and the embedded default corpus (the Python standard library).

Formats (`FORMATS`), each a list of files:
- `lines`: one document per line of a UTF-8 text file (the line ending is not part of it);
- `files`: one document per UTF-8 file;
- `jsonl`: one JSON object per line with the text under `text_field` (blank lines are no records);
- `parquet`: one document per row, the text in column `text_field` (needs pyarrow).
`infer_format` picks one from the file names. Two more sources:
- a folder (`DocumentReader.folder`, the demo's `--corpus`): its files in sorted order (hidden files,
  tool folders such as `.git` or `__pycache__`, and links leading out of the folder left out), each
  read by its extension: `.jsonl`/`.ndjson` as JSONL, `.parquet` as Parquet, any other file as one
  document;
- the Python standard library (`DocumentReader.stdlib`), on every machine with Python, so the default
  runs need no download: its `.py` files (site-packages left out), one document per file, decoded as
  Python decodes them (PEP 263 coding cookies, universal newlines), then the pydoc topics (the
  language reference sections `help()` shows), one document per topic.

Bad records, one rule everywhere: a record that is not text (invalid UTF-8, invalid JSON or JSON
nested too deeply to parse, no string text field, a lone surrogate escaped in JSON, a Python file
that does not decode, an unreadable Parquet file) raises `InvalidRecord`, a ValueError naming the
file and line (or row), unless the reader was made with `skip_invalid=True`: then it is skipped and
recorded in `reader.invalid` as "file:line: reason", which every caller counts in its summary and
shows (the first ten, for the commands). The standard library is always read that way: it ships
deliberately undecodable test fixtures (`test/tokenizedata/bad_coding.py`, ...).

Each document keeps where it came from (`where`) and its raw record (`raw`: the line's bytes, the
file's path, or (table index, row) into `reader.tables`), so `fastllm dedup` writes the kept
records back byte for byte (`fastllm.data.dedup_io.write_kept`). Reading is lazy: a corpus larger
than memory streams through, and a caller that wants the first N documents reads only those.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "in.jsonl").write_text('{"text": "one"}\\nnot json\\n{"text": "two"}\\n')
>>> reader = DocumentReader([d / "in.jsonl"], skip_invalid=True)
>>> [doc.text for doc in reader], [bad.split(": ", 1)[1] for bad in reader.invalid]
(['one', 'two'], ['invalid JSON (Expecting value)'])
>>> list(DocumentReader([d / "in.jsonl"]))
Traceback (most recent call last):
...
fastllm.data.documents.InvalidRecord: ...in.jsonl:2: invalid JSON (Expecting value) (...)
"""

from __future__ import annotations

import json
import os
import sysconfig
import tokenize
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

from fastllm._checks import check_bool, check_choice, check_type

__all__ = ["FORMATS", "Document", "DocumentReader", "InvalidRecord", "infer_format", "stdlib_root"]

FORMATS = ("lines", "files", "jsonl", "parquet")
_PYTHON = "python"  # a standard-library source file (PEP 263 decoding); not a user format
_TOPICS = "pydoc-topics"  # the pydoc topics, one document each
_JSONL_SUFFIXES = {".jsonl", ".json", ".ndjson"}
# In a folder a `.json` file is one document (a config, a notebook), not JSON Lines.
_FOLDER_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
_SKIP_DIRS = {".git", ".hg", ".svn", "__pycache__", "node_modules", ".venv", "venv", "site-packages"}
_HINT = "skip_invalid=True (--skip-invalid) skips and counts such records"


class InvalidRecord(ValueError):
    """A record that is not text; `where` is "file:line" (or "file", "file:row N"), `reason` why."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason} ({_HINT})")
        self.where = where
        self.reason = reason


class Document(NamedTuple):
    """One document: where it came from, its text, and its raw record (see the module docstring)."""

    where: str  # "file:line" / "file" / "file:row N"; standard-library files relative to its root
    text: str
    raw: object  # the record to write back: bytes line, path, or (table index, row)


def infer_format(paths: Sequence[Path]) -> str:
    """`jsonl` for .jsonl/.json/.ndjson files, `parquet` for .parquet ones, else `lines`.

    >>> infer_format([Path("a.jsonl"), Path("b.ndjson")]), infer_format([Path("notes.txt")])
    ('jsonl', 'lines')
    """
    suffixes = {Path(p).suffix.lower() for p in paths}
    if suffixes <= _JSONL_SUFFIXES:
        return "jsonl"
    if suffixes <= {".parquet"}:
        return "parquet"
    if suffixes & (_JSONL_SUFFIXES | {".parquet"}):
        raise ValueError(f"inputs mix formats ({', '.join(sorted(suffixes))}); pass --format")
    return "lines"


def stdlib_root() -> Path:
    """The folder of the running Python's standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def _stdlib_files(root: Path) -> list[Path]:
    """Sorted `.py` files under `root`, without site-packages."""
    skip = {"site-packages", "dist-packages"}
    return sorted(p for p in root.rglob("*.py") if not skip & set(p.relative_to(root).parts) and p.is_file())


def _folder_files(root: Path) -> list[Path]:
    """The files of a folder, sorted per folder, hidden files and tool folders left out, and links
    that lead outside the folder too (only what the user gave is read)."""
    files = []
    for dirpath, dirnames, filenames in os.walk(root):  # does not descend into linked folders
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        files += [Path(dirpath) / f for f in sorted(filenames) if not f.startswith(".")]
    inside = root.resolve()
    return [p for p in files if p.is_file() and p.resolve().is_relative_to(inside)]


def _pydoc_topics() -> dict[str, str]:
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions strip pydoc_data
        return {}
    return dict(topics)


class DocumentReader:
    """The documents of `paths` in format `fmt` (inferred from the names when None), in order.

    Iterate it for `Document`s; each pass reads the inputs again and refills `invalid` (the skipped
    records, "where: reason") and `tables` (Parquet inputs, for `Document.raw`). Every input is
    checked to exist when the reader is made, before any document is read.
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike[str]],
        fmt: str | None = None,
        *,
        text_field: str = "text",
        skip_invalid: bool = False,
    ) -> None:
        if isinstance(paths, (str, bytes, os.PathLike)):
            raise TypeError("paths must be a list of paths, not a single path; wrap it in a list")
        paths = [Path(p) for p in paths]
        for p in paths:
            if not p.exists():
                raise FileNotFoundError(f"input not found: {str(p)!r}")
            if not p.is_file():
                raise ValueError(f"input {str(p)!r} is not a file")
        self.fmt = infer_format(paths) if fmt is None else check_choice(fmt, "fmt", FORMATS)
        self._setup([(p, self.fmt) for p in paths], text_field, skip_invalid)
        self.description = f"{len(paths)} file(s) ({self.fmt})"

    def _setup(self, inputs: list[tuple[Path, str]], text_field: str, skip_invalid: bool) -> None:
        self.inputs = inputs  # (path, format) pairs, read in order
        self.text_field = check_type(text_field, "text_field", str)
        self.skip_invalid = check_bool(skip_invalid, "skip_invalid")
        self.invalid: list[str] = []
        self.tables: list[object] = []
        self._root: Path | None = None  # standard-library documents are named relative to it

    @classmethod
    def folder(
        cls, root: str | os.PathLike[str], *, text_field: str = "text", skip_invalid: bool = False
    ) -> DocumentReader:
        """The documents of the files in folder `root` (or of the one file `root`, by its name)."""
        root = Path(root).expanduser()
        if not root.exists():
            raise FileNotFoundError(f"corpus not found: {str(root)!r}")
        if root.is_file():
            reader = cls([root], text_field=text_field, skip_invalid=skip_invalid)
            reader.description = f"{str(root)!r} ({reader.fmt})"
            return reader
        files = _folder_files(root)
        self = cls.__new__(cls)
        self.fmt = None
        self._setup(
            [(p, _FOLDER_FORMATS.get(p.suffix.lower(), "files")) for p in files], text_field, skip_invalid
        )
        self.description = f"{str(root)!r} ({len(files)} file(s))"
        return self

    @classmethod
    def stdlib(cls, root: str | os.PathLike[str] | None = None) -> DocumentReader:
        """The embedded default corpus: the standard library at `root` (default: this Python's)."""
        root = stdlib_root() if root is None else Path(root)
        self = cls.__new__(cls)
        self.fmt = None
        self._setup([(p, _PYTHON) for p in _stdlib_files(root)] + [(root, _TOPICS)], "text", True)
        self._root = root
        self.description = f"the Python standard library ({root}: .py sources and pydoc topics)"
        return self

    def __iter__(self) -> Iterator[Document]:
        self.invalid = []
        self.tables = []
        read = {
            "lines": self._read_lines,
            "files": self._read_files,
            "jsonl": self._read_jsonl,
            "parquet": self._read_parquet,
            _PYTHON: self._read_python,
            _TOPICS: self._read_pydoc_topics,
        }
        for path, fmt in self.inputs:
            yield from read[fmt](path)

    def _bad(self, where: str, reason: str) -> None:
        """The one rule: raise, or with `skip_invalid` record the record as skipped."""
        if not self.skip_invalid:
            raise InvalidRecord(where, reason)
        self.invalid.append(f"{where}: {reason}")

    def _read_files(self, path: Path) -> Iterator[Document]:
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            self._bad(str(path), f"invalid UTF-8 at byte {e.start}")
            return
        yield Document(str(path), text, path)

    def _read_lines(self, path: Path) -> Iterator[Document]:
        with open(path, "rb") as f:
            for number, line in enumerate(f, start=1):
                try:
                    text = line.decode("utf-8")
                except UnicodeDecodeError as e:
                    self._bad(f"{path}:{number}", f"invalid UTF-8 at byte {e.start} of the line")
                    continue
                yield Document(f"{path}:{number}", text.rstrip("\r\n"), line)

    def _jsonl_text(self, line: bytes) -> str:
        """The text field of one JSONL line, or InvalidRecord's reason as a ValueError."""
        try:
            record = json.loads(line)
        except UnicodeDecodeError as e:
            raise ValueError(f"invalid UTF-8 at byte {e.start} of the line") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"invalid JSON ({e.msg})") from None
        except RecursionError:  # arrays or objects nested deeper than Python's parser recurses
            raise ValueError("invalid JSON (nested too deeply to parse)") from None
        text = record.get(self.text_field) if isinstance(record, dict) else None
        if not isinstance(text, str):
            raise ValueError(f"no string field {self.text_field!r}")
        if b"\\u" in line:  # only a \u escape can make a lone surrogate out of valid UTF-8
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as e:
                raise ValueError(
                    f"text has a lone surrogate {text[e.start]!r} at character {e.start}, "
                    "not encodable as UTF-8"
                ) from None
        return text

    def _read_jsonl(self, path: Path) -> Iterator[Document]:
        with open(path, "rb") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    text = self._jsonl_text(line)
                except ValueError as e:
                    self._bad(f"{path}:{number}", str(e))
                    continue
                yield Document(f"{path}:{number}", text, line if line.endswith(b"\n") else line + b"\n")

    def _read_parquet(self, path: Path) -> Iterator[Document]:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ValueError("reading Parquet needs pyarrow: pip install pyarrow") from None
        try:
            table = pq.read_table(path)
        except pa.ArrowInvalid as e:
            self._bad(str(path), f"not a readable Parquet file ({e})")
            return
        if self.text_field not in table.column_names:
            self._bad(str(path), f"no column {self.text_field!r} (columns: {table.column_names})")
            return
        table_index = len(self.tables)
        self.tables.append(table)
        for row, text in enumerate(table.column(self.text_field).to_pylist()):
            if not isinstance(text, str):
                self._bad(f"{path}:row {row}", f"{self.text_field!r} is not a string")
                continue
            yield Document(f"{path}:row {row}", text, (table_index, row))

    def _read_python(self, path: Path) -> Iterator[Document]:
        assert self._root is not None
        where = str(path.relative_to(self._root))
        try:
            with tokenize.open(path) as f:
                text = f.read()
        except SyntaxError as e:  # a bad coding cookie
            self._bad(where, f"does not decode as Python source ({e.msg})")
            return
        except UnicodeDecodeError as e:
            self._bad(where, f"invalid {e.encoding} at byte {e.start}")
            return
        yield Document(where, text, path)

    def _read_pydoc_topics(self, path: Path) -> Iterator[Document]:
        topics = _pydoc_topics()
        for key in sorted(topics):
            yield Document(f"pydoc_data/topics:{key}", topics[key], key)
