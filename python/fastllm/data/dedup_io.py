"""Reading documents for `fastllm dedup` / `fastllm tokenize` and writing back the kept ones.

Formats: `lines` (one document per line of a text file), `files` (one document per file), `jsonl`
(one JSON object per line, text under `--text-field`) and `parquet` (a text column; needs pyarrow).
Each document remembers where it came from (file and line or row) so a report can name it, and the
raw record, so the output is the input minus the removed documents, byte for byte. Outputs are
written to a temporary file beside the target and renamed into place: an interrupted run never
leaves a half-written file. `iter_documents` streams the documents (tokenize reads corpora larger
than memory); `read_corpus` collects them for dedup, which needs them all at once.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

FORMATS = ("lines", "files", "jsonl", "parquet")


@dataclass
class Corpus:
    """Documents read from the inputs, in order, plus what could not be read."""

    format: str
    texts: list[str] = field(default_factory=list)
    where: list[str] = field(default_factory=list)  # "file:line" / "file" / "file:row"
    raw: list[object] = field(default_factory=list)  # the record to write back (bytes line, path, row index)
    invalid: list[str] = field(default_factory=list)  # "file:line: reason" of skipped records
    tables: list[object] = field(default_factory=list)  # parquet: one pyarrow table per input


def infer_format(paths: list[Path]) -> str:
    suffixes = {p.suffix.lower() for p in paths}
    if suffixes <= {".jsonl", ".json", ".ndjson"}:
        return "jsonl"
    if suffixes <= {".parquet"}:
        return "parquet"
    if suffixes & {".jsonl", ".json", ".ndjson", ".parquet"}:
        raise ValueError(f"inputs mix formats ({', '.join(sorted(suffixes))}); pass --format")
    return "lines"


class InvalidRecord(ValueError):
    """A record that cannot be read (bad UTF-8, bad JSON, missing text field)."""


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            yield number, line


class Document(NamedTuple):
    """One document read from the inputs: where it came from, its text, and its raw record."""

    where: str  # "file:line" / "file" / "file:row N"
    text: str
    raw: object  # the record to write back: bytes line, path, or (table index, row)


def _invalid(invalid: list[str], skip_invalid: bool, where: str, reason: str) -> None:
    if not skip_invalid:
        raise InvalidRecord(f"{where}: {reason} (pass --skip-invalid to skip and count such records)")
    invalid.append(f"{where}: {reason}")


def iter_documents(
    paths: list[Path],
    fmt: str,
    *,
    text_field: str = "text",
    skip_invalid: bool = False,
    invalid: list[str] | None = None,
    tables: list[object] | None = None,
) -> Iterator[Document]:
    """Yields the documents of `paths` in `fmt`, in order, one at a time (streaming).

    Bad records raise `InvalidRecord` naming file and line, or with `skip_invalid` are appended to
    `invalid` as "file:line: reason". Parquet inputs are read one table at a time; each table is
    appended to `tables` (when given) so that `Document.raw` = (table index, row) can find it.
    Every path is checked to exist before the first document is yielded.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {FORMATS}")
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"input not found: {str(p)!r}")
    invalid = [] if invalid is None else invalid
    tables = [] if tables is None else tables
    for path in paths:
        if fmt == "files":
            try:
                text = path.read_bytes().decode("utf-8")
            except UnicodeDecodeError as e:
                _invalid(invalid, skip_invalid, str(path), f"invalid UTF-8 at byte {e.start}")
                continue
            yield Document(str(path), text, path)
        elif fmt == "lines":
            for number, line in _lines(path):
                where = f"{path}:{number}"
                try:
                    text = line.decode("utf-8")
                except UnicodeDecodeError as e:
                    _invalid(invalid, skip_invalid, where, f"invalid UTF-8 at byte {e.start} of the line")
                    continue
                yield Document(where, text.rstrip("\r\n"), line)
        elif fmt == "jsonl":
            for number, line in _lines(path):
                where = f"{path}:{number}"
                if not line.strip():
                    continue  # blank lines are not records
                try:
                    record = json.loads(line)
                except UnicodeDecodeError as e:
                    _invalid(invalid, skip_invalid, where, f"invalid UTF-8 at byte {e.start} of the line")
                    continue
                except json.JSONDecodeError as e:
                    _invalid(invalid, skip_invalid, where, f"invalid JSON ({e.msg})")
                    continue
                text = record.get(text_field) if isinstance(record, dict) else None
                if not isinstance(text, str):
                    _invalid(invalid, skip_invalid, where, f"no string field {text_field!r}")
                    continue
                yield Document(where, text, line if line.endswith(b"\n") else line + b"\n")
        else:  # parquet
            try:
                import pyarrow.parquet as pq
            except ImportError:
                raise ValueError("reading Parquet needs pyarrow: pip install pyarrow") from None
            table = pq.read_table(path)
            if text_field not in table.column_names:
                raise ValueError(f"{path}: no column {text_field!r} (columns: {table.column_names})")
            table_index = len(tables)
            tables.append(table)
            for row, text in enumerate(table.column(text_field).to_pylist()):
                where = f"{path}:row {row}"
                if not isinstance(text, str):
                    _invalid(invalid, skip_invalid, where, f"{text_field!r} is not a string")
                    continue
                yield Document(where, text, (table_index, row))


def read_corpus(
    paths: list[Path], fmt: str, *, text_field: str = "text", skip_invalid: bool = False
) -> Corpus:
    """Reads every document of `paths` in `fmt`; bad records raise unless `skip_invalid`."""
    corpus = Corpus(fmt)
    for doc in iter_documents(
        paths,
        fmt,
        text_field=text_field,
        skip_invalid=skip_invalid,
        invalid=corpus.invalid,
        tables=corpus.tables,
    ):
        corpus.texts.append(doc.text)
        corpus.where.append(doc.where)
        corpus.raw.append(doc.raw)
    return corpus


def _atomic_file(target: Path):
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    return os.fdopen(fd, "wb"), Path(tmp)


def write_atomic(target: Path, chunks) -> None:
    """Writes the byte chunks to `target` via a temporary file renamed into place."""
    f, tmp = _atomic_file(target)
    try:
        with f:
            for chunk in chunks:
                f.write(chunk)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_kept(corpus: Corpus, keep: list[bool], output: Path) -> None:
    """Writes the kept documents to `output` in the corpus's format."""
    kept = [raw for raw, k in zip(corpus.raw, keep) if k]
    if corpus.format in ("lines", "jsonl"):
        write_atomic(output, (r if r.endswith(b"\n") else r + b"\n" for r in kept))  # type: ignore[union-attr]
    elif corpus.format == "files":
        # A folder of kept files, built beside the target and renamed into place.
        if output.exists() and not output.is_dir():
            raise ValueError(f"--format files writes a folder, but {str(output)!r} is a file")
        tmp = Path(
            tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent if str(output.parent) else ".")
        )
        try:
            names: set[str] = set()
            for path in kept:
                name = path.name  # type: ignore[union-attr]
                stem, n = name, 1
                while name in names:  # same file name from two folders: number the later ones
                    n += 1
                    name = f"{Path(stem).stem}.{n}{Path(stem).suffix}"
                names.add(name)
                shutil.copyfile(path, tmp / name)  # type: ignore[arg-type]
            if output.exists():
                shutil.rmtree(output)
            os.replace(tmp, output)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    elif corpus.format == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        parts = []
        for t_index, table in enumerate(corpus.tables):
            rows = [row for (ti, row), k in zip(corpus.raw, keep) if k and ti == t_index]  # type: ignore[misc]
            parts.append(table.take(pa.array(rows, type=pa.int64())))
        result = pa.concat_tables(parts, promote_options="default") if parts else pa.table({})
        f, tmp = _atomic_file(output)
        f.close()
        try:
            pq.write_table(result, tmp)
            os.replace(tmp, output)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
