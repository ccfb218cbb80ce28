"""`fastllm dedup`'s files: the whole corpus in memory, and the kept records written back.

Dedup needs every document at once (`read_corpus` collects what `DocumentReader` yields), and its
output is the input minus the removed documents, byte for byte, in the input's format
(`write_kept`): the kept lines of a text or JSONL file as they were, the kept rows of the Parquet
tables with every column, or a folder of the kept files. Writing records back is dedup's job alone
(tokenize and the demo only read), so it lives here rather than in the reader. Every output
appears whole or not at all (`fastllm._io`). An output is never one of the inputs; a folder output
is replaced as a whole (`fastllm._io.atomic_folder`), so it may not hold the inputs or the working
folder, and an existing one must be empty or a previous output of `fastllm dedup` (its manifest
lists every file): nothing fastllm did not write is deleted.

>>> import tempfile, pathlib
>>> from fastllm.data.documents import DocumentReader
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "in.txt").write_text("a\\nb\\na\\n")
>>> corpus = read_corpus(DocumentReader([d / "in.txt"]))
>>> corpus.texts, corpus.where[2].endswith("in.txt:3")
(['a', 'b', 'a'], True)
>>> write_kept(corpus, [True, True, False], d / "out.txt")
>>> (d / "out.txt").read_text()
'a\\nb\\n'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fastllm._io import atomic_folder, atomic_path, check_output_folder, write_atomic
from fastllm.data.documents import FORMATS, DocumentReader

__all__ = ["Corpus", "check_output", "read_corpus", "write_kept"]


@dataclass
class Corpus:
    """Documents read from the inputs, in order, plus what could not be read."""

    format: str
    texts: list[str] = field(default_factory=list)
    where: list[str] = field(default_factory=list)  # "file:line" / "file" / "file:row N"
    raw: list[object] = field(default_factory=list)  # the record to write back (bytes line, path, row)
    invalid: list[str] = field(default_factory=list)  # "file:line: reason" of skipped records
    tables: list[object] = field(default_factory=list)  # parquet: one pyarrow table per input
    inputs: list[Path] = field(default_factory=list)  # the files read (never overwritten)


def read_corpus(reader: DocumentReader) -> Corpus:
    """Every document `reader` yields (one format: `write_kept` writes records back in it)."""
    if reader.fmt is None:
        raise ValueError(f"dedup reads files of one format, not {reader.description}")
    corpus = Corpus(reader.fmt)
    for doc in reader:
        corpus.texts.append(doc.text)
        corpus.where.append(doc.where)
        corpus.raw.append(doc.raw)
    corpus.invalid, corpus.tables = reader.invalid, reader.tables
    corpus.inputs = [path for path, _ in reader.inputs]
    return corpus


def check_output(output: Path, fmt: str, inputs: list[Path]) -> None:
    """Refuses, before any work, an output `write_kept` would refuse: one of the inputs, or (for
    `files`) a folder `fastllm._io.check_output_folder` refuses."""
    output = Path(output)
    if fmt == "files":
        check_output_folder(output, command="dedup", keep_out=inputs)
        return
    for path in inputs:
        if output.resolve() == Path(path).resolve():
            raise ValueError(f"output {str(output)!r} is also an input; write the kept documents elsewhere")
    if output.is_dir():
        raise ValueError(f"output {str(output)!r} is a folder; --format {fmt} writes a file")


def _write_folder(kept: list[Path], output: Path, inputs: list[Path]) -> None:
    """The kept files as the folder `output`, replacing a previous output as a whole."""
    with atomic_folder(output, command="dedup", keep_out=inputs) as tmp:
        names: set[str] = set()
        for path in kept:
            name, n = path.name, 1
            while name in names:  # the same file name from two folders: number the later ones
                n += 1
                name = f"{path.stem}.{n}{path.suffix}"
            names.add(name)
            write_atomic(tmp / name, path.read_bytes())


def write_kept(corpus: Corpus, keep: list[bool], output: Path) -> None:
    """Writes the kept documents' records to `output` in the corpus's format."""
    assert corpus.format in FORMATS, corpus.format
    output = Path(output)
    check_output(output, corpus.format, corpus.inputs)
    kept = [raw for raw, k in zip(corpus.raw, keep) if k]
    if corpus.format in ("lines", "jsonl"):
        write_atomic(output, (r if r.endswith(b"\n") else r + b"\n" for r in kept))  # type: ignore[union-attr]
    elif corpus.format == "files":
        _write_folder(kept, output, corpus.inputs)  # type: ignore[arg-type]
    else:  # parquet
        import pyarrow as pa
        import pyarrow.parquet as pq

        parts = []
        for t_index, table in enumerate(corpus.tables):
            rows = [row for (ti, row), k in zip(corpus.raw, keep) if k and ti == t_index]  # type: ignore[misc]
            parts.append(table.take(pa.array(rows, type=pa.int64())))
        result = pa.concat_tables(parts, promote_options="default") if parts else pa.table({})
        with atomic_path(output) as tmp:
            pq.write_table(result, tmp)
