"""The one document reader (`fastllm.data.documents`) and its one rule for bad records.

Oracles: the texts written into each format (read back exactly, property-tested); the exception a
bad JSONL line raises in the reader, which `fastllm dedup`, `fastllm tokenize`, `tokenize_to_shards`
and the demo must raise or count identically; a hand-decoded miniature standard library (PEP 263
cookies, CRLF, undecodable files) for the embedded corpus, which the reader, the demo and
`fastllm tokenizer train` must all see as the same documents.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import fastllm.data.documents as documents
from fastllm import BPETokenizer
from fastllm._io import MANIFEST, read_manifest
from fastllm.cli import main
from fastllm.data.dedup_io import read_corpus, write_kept
from fastllm.data.documents import DocumentReader, InvalidRecord, infer_format
from fastllm.data.tokenize import tokenize_to_shards
from fastllm.demo.stages import corpus_documents

EOT = "<|endoftext|>"
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
LINE = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=40)


@pytest.fixture(scope="module")
def tok_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    BPETokenizer.train(["good one good two"] * 4, 270, special_tokens=[EOT], show_progress=False).save(path)
    return path


# ---- formats ------------------------------------------------------------------------------------


@settings(max_examples=60)
@given(texts=st.lists(TEXT, max_size=8), lines=st.lists(LINE, max_size=8))
def test_every_format_reads_back_what_was_written(texts, lines):
    import pyarrow as pa
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "in.txt").write_bytes("".join(f"{t}\n" for t in lines).encode())
        (d / "in.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
        pq.write_table(pa.table({"text": pa.array(texts, type=pa.string())}), d / "in.parquet")
        files = [d / f"doc{i}.txt" for i in range(len(texts))]
        for p, t in zip(files, texts):
            p.write_bytes(t.encode())
        for paths, fmt, want in (
            ([d / "in.txt"], "lines", lines),
            ([d / "in.jsonl"], "jsonl", texts),
            ([d / "in.parquet"], "parquet", texts),
            (files, "files", texts),
        ):
            reader = DocumentReader(paths, fmt)
            docs = list(reader)
            assert [doc.text for doc in docs] == want and reader.invalid == []
        assert [doc.where for doc in DocumentReader([d / "in.txt"])] == [
            f"{d / 'in.txt'}:{i}" for i in range(1, len(lines) + 1)
        ]


def test_infer_format_and_folder_rules(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    assert infer_format([Path("a.JSONL"), Path("b.json")]) == "jsonl"
    assert infer_format([Path("a.parquet")]) == "parquet"
    assert infer_format([Path("a.txt"), Path("b")]) == "lines"
    with pytest.raises(ValueError, match="inputs mix formats .*--format"):
        infer_format([Path("a.txt"), Path("b.jsonl")])
    f = tmp_path / "folder"
    for name in ("sub", ".git", "__pycache__"):
        (f / name).mkdir(parents=True)
    (f / "a.txt").write_text("doc a\nstill doc a")
    (f / "b.jsonl").write_text('{"text": "b1"}\n\n{"text": "b2"}\n')
    (f / "c.json").write_text('{"k": 1}')  # in a folder: one document, not JSON Lines
    pq.write_table(pa.table({"text": ["d0", "d1"]}), f / "d.parquet")
    (f / "img.bin").write_bytes(b"PNG\xff\x00")
    (f / "sub" / "e.md").write_text("doc e")
    (f / ".hidden.txt").write_text("hidden")
    (f / ".git" / "x.txt").write_text("git")
    (f / "__pycache__" / "y.txt").write_text("cache")
    (tmp_path / "outside.txt").write_text("outside")
    (f / "sub" / "link.txt").symlink_to(tmp_path / "outside.txt")  # leads out of the folder: not read
    (f / "sub" / "broken.txt").symlink_to(tmp_path / "nowhere.txt")
    reader = DocumentReader.folder(f, skip_invalid=True)
    assert [d.text for d in reader] == ["doc a\nstill doc a", "b1", "b2", '{"k": 1}', "d0", "d1", "doc e"]
    assert reader.invalid == [f"{f / 'img.bin'}: invalid UTF-8 at byte 3"]
    assert "6 file(s)" in reader.description
    with pytest.raises(InvalidRecord, match="img.bin: invalid UTF-8"):
        list(DocumentReader.folder(f))
    # one file: read by its name, as the commands read it
    assert [d.text for d in DocumentReader.folder(f / "a.txt")] == ["doc a", "still doc a"]
    assert [d.where for d in DocumentReader.folder(f / "b.jsonl")] == [
        f"{f / 'b.jsonl'}:1",
        f"{f / 'b.jsonl'}:3",
    ]
    with pytest.raises(FileNotFoundError, match="corpus not found"):
        DocumentReader.folder(f / "missing")


def test_parquet_bad_cells_column_and_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["ok", None, "fine"]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "b.parquet")
    (tmp_path / "c.parquet").write_bytes(b"PAR1 not really")
    reader = DocumentReader(
        [tmp_path / n for n in ("a.parquet", "b.parquet", "c.parquet")], skip_invalid=True
    )
    assert [(d.text, d.raw) for d in reader] == [("ok", (0, 0)), ("fine", (0, 2))]
    assert [r.split(": ", 1)[0] for r in reader.invalid] == [
        f"{tmp_path / 'a.parquet'}:row 1",
        str(tmp_path / "b.parquet"),
        str(tmp_path / "c.parquet"),
    ]
    assert "'text' is not a string" in reader.invalid[0] and "no column 'text'" in reader.invalid[1]
    with pytest.raises(InvalidRecord, match=r"a\.parquet:row 1: 'text' is not a string"):
        list(DocumentReader([tmp_path / "a.parquet"]))


def test_bad_arguments(tmp_path):
    (tmp_path / "in.txt").write_text("x\n")
    p = [tmp_path / "in.txt"]
    with pytest.raises(
        ValueError, match="fmt must be one of 'lines', 'files', 'jsonl', 'parquet'; got 'csv'"
    ):
        DocumentReader(p, "csv")
    with pytest.raises(TypeError, match="fmt must be one of"):
        DocumentReader(p, 3)
    with pytest.raises(TypeError, match="text_field must be str, not int"):
        DocumentReader(p, text_field=1)
    with pytest.raises(TypeError, match="skip_invalid must be a bool, not int"):
        DocumentReader(p, skip_invalid=1)
    with pytest.raises(TypeError, match="not a single path"):
        DocumentReader(tmp_path / "in.txt")
    with pytest.raises(FileNotFoundError, match="input not found: .*nope.txt"):
        DocumentReader([*p, tmp_path / "nope.txt"])  # checked before anything is read
    with pytest.raises(ValueError, match="is not a file"):
        DocumentReader([tmp_path])


# ---- one rule for bad records, everywhere ------------------------------------------------------

BAD_LINES = {
    "json": b"not json\n",
    "utf8": b'{"text": "caf\xc3\xa9 \xff"}\n',
    "missing": b'{"body": "x"}\n',
    "not-a-string": b'{"text": 5}\n',
    "not-an-object": b'["text"]\n',
    "surrogate": b'{"text": "\\ud800 lone"}\n',
    "deep": b'{"text": "x", "n": ' + b"[" * 200_000 + b"]" * 200_000 + b"}\n",
}
REASONS = {
    "json": "invalid JSON (Expecting value)",
    "utf8": "invalid UTF-8 at byte 16 of the line",
    "missing": "no string field 'text'",
    "not-a-string": "no string field 'text'",
    "not-an-object": "no string field 'text'",
    "surrogate": "text has a lone surrogate '\\ud800' at character 0, not encodable as UTF-8",
    "deep": "invalid JSON (nested too deeply to parse)",
}


@pytest.mark.parametrize("kind", sorted(BAD_LINES))
def test_a_bad_jsonl_line_is_the_same_error_or_the_same_count_everywhere(tmp_path, tok_path, kind):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"text": "good one"}\n' + BAD_LINES[kind] + b'{"text": "good two"}\n')
    with pytest.raises(InvalidRecord) as caught:
        list(DocumentReader([path]))
    error = caught.value
    assert (error.where, error.reason) == (f"{path}:2", REASONS[kind]) and isinstance(error, ValueError)
    message = str(error)
    assert message.startswith(f"{path}:2: {REASONS[kind]} (") and "--skip-invalid" in message

    # the same error from the library and from both commands
    with pytest.raises(InvalidRecord) as caught:
        tokenize_to_shards([path], tmp_path / "shards", tokenizer=tok_path, fmt="jsonl")
    assert str(caught.value) == message
    with pytest.raises(InvalidRecord) as caught:
        read_corpus(DocumentReader([path]))
    assert str(caught.value) == message
    dedup = ["dedup", str(path), "-o", str(tmp_path / "kept.jsonl"), "--quiet"]
    tokenize = ["tokenize", str(path), "-o", str(tmp_path / "shards"), "-t", str(tok_path), "--quiet"]
    for args in (dedup, tokenize):
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 1 and f"Error: {message}\n" in r.output, r.output
    assert not (tmp_path / "kept.jsonl").exists() and not list((tmp_path / "shards").glob("*"))

    # skipped: the same record, counted and named, everywhere
    reader = DocumentReader([path], skip_invalid=True)
    assert [d.text for d in reader] == ["good one", "good two"]
    skipped = f"{path}:2: {REASONS[kind]}"
    assert reader.invalid == [skipped]
    stats = tokenize_to_shards(
        [path], tmp_path / "shards", tokenizer=tok_path, fmt="jsonl", skip_invalid=True, val_fraction=0.0
    )
    assert stats.invalid == [skipped] and stats.documents == 2
    assert read_corpus(DocumentReader([path], skip_invalid=True)).invalid == [skipped]
    docs, demo_reader = corpus_documents(str(path))
    assert [d.text for d in docs] == ["good one", "good two"] and demo_reader.invalid == [skipped]
    r = CliRunner().invoke(main, [*dedup, "--skip-invalid"])
    assert r.exit_code == 0 and "1 invalid" in r.output and f"invalid: {skipped}\n" in r.output, r.output
    assert (tmp_path / "kept.jsonl").read_bytes() == b'{"text": "good one"}\n{"text": "good two"}\n'
    r = CliRunner().invoke(main, [*tokenize, "--skip-invalid", "--overwrite"])
    assert r.exit_code == 0 and "(1 invalid)" in r.output and f"invalid: {skipped}\n" in r.output, r.output


def test_lines_and_files_name_the_bad_line_or_file(tmp_path):
    (tmp_path / "in.txt").write_bytes(b"fine\n\xfe bad\nfine again\n")
    with pytest.raises(InvalidRecord, match=r"in\.txt:2: invalid UTF-8 at byte 0 of the line"):
        list(DocumentReader([tmp_path / "in.txt"]))
    (tmp_path / "bad.txt").write_bytes(b"ok \xff")
    with pytest.raises(InvalidRecord, match=r"bad\.txt: invalid UTF-8 at byte 3 \("):
        list(DocumentReader([tmp_path / "bad.txt"], "files"))
    reader = DocumentReader([tmp_path / "in.txt", tmp_path / "bad.txt"], "files", skip_invalid=True)
    assert len(list(reader)) == 0 and len(reader.invalid) == 2
    assert len(list(reader)) == 0 and len(reader.invalid) == 2  # each pass counts afresh


# ---- the standard library, defined once -------------------------------------------------------


@pytest.fixture
def mini_stdlib(tmp_path, monkeypatch) -> Path:
    """A miniature standard library, installed as this Python's for the test."""
    root = tmp_path / "lib"
    (root / "pkg").mkdir(parents=True)
    (root / "site-packages").mkdir()
    (root / "a.py").write_bytes(b"x = 1\n")
    (root / "crlf.py").write_bytes(b"a = 1\r\nb = 2\r\n")
    (root / "latin.py").write_bytes(b"# -*- coding: latin-1 -*-\ns = '\xe9'\n")
    (root / "pkg" / "__init__.py").write_bytes(b"")
    (root / "pkg" / "bad.py").write_bytes(b"# -*- coding: no-such-codec -*-\n")
    (root / "pkg" / "badutf.py").write_bytes(b"a = 1\nb = 2\ns = '\xff'\n")
    (root / "site-packages" / "x.py").write_bytes(b"not the stdlib\n")
    (root / "notes.txt").write_bytes(b"not python\n")
    monkeypatch.setattr(documents, "stdlib_root", lambda: root)
    return root


def test_stdlib_documents(mini_stdlib):
    from pydoc_data.topics import topics

    reader = DocumentReader.stdlib()
    docs = list(reader)
    files = [
        ("a.py", "x = 1\n"),
        ("crlf.py", "a = 1\nb = 2\n"),  # universal newlines, as Python reads source
        ("latin.py", "# -*- coding: latin-1 -*-\ns = '\xe9'\n"),  # PEP 263
        ("pkg/__init__.py", ""),
    ]
    want = files + [(f"pydoc_data/topics:{k}", topics[k]) for k in sorted(topics)]
    assert [(d.where, d.text) for d in docs] == want
    assert [r.split(": ", 1)[0] for r in reader.invalid] == ["pkg/bad.py", "pkg/badutf.py"]
    assert "unknown encoding" in reader.invalid[0] and "invalid utf-8 at byte" in reader.invalid[1]
    assert str(mini_stdlib) in reader.description


def test_the_stdlib_corpus_is_the_same_for_the_demo_and_tokenizer_train(mini_stdlib, tmp_path, monkeypatch):
    texts = [d.text for d in DocumentReader.stdlib()]
    docs, reader = corpus_documents(None)
    assert [d.text for d in docs] == [t for t in texts if t.strip()]  # the demo leaves out empty ones
    assert len(reader.invalid) == 2
    assert [d.text for d in corpus_documents(None, max_docs=2)[0]] == texts[:2]

    seen: list[list[str]] = []
    real = BPETokenizer.train

    def spy(corpus, *args, **kwargs):
        seen.append(list(corpus))
        return real(seen[-1], *args, **kwargs)

    monkeypatch.setattr(BPETokenizer, "train", spy)
    r = CliRunner().invoke(
        main, ["tokenizer", "train", "--vocab-size", "300", "-o", str(tmp_path / "t.json"), "--quiet"]
    )
    assert r.exit_code == 0, r.output
    assert seen == [texts]
    assert f"{len(texts):,} documents, 2 invalid skipped" in r.output
    assert "invalid: pkg/bad.py: " in r.output


# ---- dedup's writer ------------------------------------------------------------------------------


def test_files_output_replaces_only_a_previous_dedup_output(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    for folder in ("x", "y"):
        (tmp_path / folder / "same.txt").write_text(f"from {folder}")
    corpus = read_corpus(DocumentReader([tmp_path / "x" / "same.txt", tmp_path / "y" / "same.txt"], "files"))
    out = tmp_path / "out"
    write_kept(corpus, [True, True], out)
    files = {p.name: p.read_text() for p in out.iterdir() if p.name != MANIFEST}
    assert files == {"same.txt": "from x", "same.2.txt": "from y"}
    assert read_manifest(out)["files"] == ["same.2.txt", "same.txt"]
    write_kept(corpus, [False, True], out)  # a previous output of dedup: replaced as a whole
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "same.txt"]
    assert (out / "same.txt").read_text() == "from y"
    (out / "mine.txt").write_text("a file dedup did not write")
    with pytest.raises(ValueError, match=r"holds files fastllm dedup did not write \('mine.txt'\)"):
        write_kept(corpus, [True, False], out)
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "mine.txt", "same.txt"]  # untouched
    empty = tmp_path / "empty"
    empty.mkdir()
    write_kept(corpus, [False, True], empty)
    assert sorted(p.name for p in empty.iterdir()) == [MANIFEST, "same.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    with pytest.raises(ValueError, match="is a file"):
        write_kept(corpus, [True, True], tmp_path / "x" / "same.txt")
