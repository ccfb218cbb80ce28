"""A fresh clone runs everything: the shipped vocabularies and the corpus fallback of
tests/shared_data.py, and the benchmark report naming the corpus it ran on.

Oracles: the SHA-256 hashes tiktoken checks its downloads of these vocabularies against (and the
shared copies, byte for byte, when they are there); the standard-library corpus read independently
here with `DocumentReader.stdlib()`; a shared folder made here with known contents.
"""

from __future__ import annotations

import hashlib
import importlib.util

import pytest

import shared_data
from fastllm.data.documents import DocumentReader

# tiktoken's openai_public.py pins these (its gpt2 encoder.json is another serialisation of the
# same mapping, which tiktoken's loader checks against vocab.bpe: see tests/fixtures/vocab/README.md)
PINNED = {
    "cl100k_base.tiktoken": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "gpt2_vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}
CORPORA = ["imdb_reviews_train.txt", "tinyshakespeare.txt"]


@pytest.fixture(scope="module")
def stdlib_docs() -> list[str]:
    return [d.text if d.text.endswith("\n") else d.text + "\n" for d in DocumentReader.stdlib()]


@pytest.fixture
def no_shared(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTLLM_SHARED_DATA", str(tmp_path / "absent"))


@pytest.mark.parametrize("name", sorted(PINNED))
def test_shipped_vocabularies_are_the_published_files(name):
    data = (shared_data.FIXTURE_VOCAB / name).read_bytes()
    assert hashlib.sha256(data).hexdigest() == PINNED[name]


@pytest.mark.parametrize("name", shared_data.VOCAB_FILES)
def test_shipped_vocabularies_equal_the_shared_ones_when_present(name):
    shipped = (shared_data.FIXTURE_VOCAB / name).read_bytes()
    shared = shared_data.REPO_ROOT.parent / "shared" / "data" / "vocab" / name
    assert shipped  # shipped, whatever the machine has
    if shared.is_file():  # on the project's machine: the same bytes
        assert shared.read_bytes() == shipped


def test_without_shared_data_the_vocabularies_are_the_shipped_ones(no_shared):
    assert shared_data.vocab_dir() == shared_data.FIXTURE_VOCAB
    for name in shared_data.VOCAB_FILES:
        assert shared_data.vocab_file(name).is_file()
    with pytest.raises(ValueError, match="nope.json"):
        shared_data.vocab_file("nope.json")


@pytest.mark.parametrize("name", CORPORA)
@pytest.mark.parametrize("nbytes,offset", [(1 << 20, 0), (300_000, 5 << 20), (10, 0)])
def test_without_shared_data_corpora_fall_back_to_the_stdlib(no_shared, stdlib_docs, name, nbytes, offset):
    assert shared_data.corpus_path(name) is None
    text = shared_data.corpus_text(name, nbytes, offset)
    docs = stdlib_docs
    whole = "".join(docs).encode("utf-8")
    raw = text.encode("utf-8")
    assert 0 < len(raw) <= nbytes
    assert whole[offset : offset + len(raw)] == raw  # the slice at the offset, cut at a line end
    if len(raw) > 10:
        assert raw.endswith(b"\n")
    if offset == 0 and nbytes > len(docs[0].encode("utf-8")):
        assert text.startswith(docs[0])
    assert "standard library" in shared_data.corpus_label(name)


def test_without_shared_data_corpus_file_is_the_stdlib(no_shared, tmp_path):
    whole = shared_data.stdlib_bytes()
    path = shared_data.corpus_file("imdb_reviews_train.txt", tmp_path)
    assert path.read_bytes() == whole  # every document ends in a newline, so nothing is cut
    part = shared_data.corpus_file("imdb_reviews_train.txt", tmp_path, 100_000)
    raw = part.read_bytes()
    assert len(raw) <= 100_000 and raw == whole[: len(raw)] and raw.endswith(b"\n")


def test_shared_corpora_win_when_present(monkeypatch, tmp_path):
    (tmp_path / "vocab").mkdir()
    lines = "".join(f"review {i}: a fine film\n" for i in range(1000))
    (tmp_path / "imdb_reviews_train.txt").write_text(lines, encoding="utf-8")
    monkeypatch.setenv("FASTLLM_SHARED_DATA", str(tmp_path))
    assert (
        shared_data.corpus_text("imdb_reviews_train.txt", 100, 0) == lines[: lines.rindex("\n", 0, 100) + 1]
    )
    assert shared_data.corpus_file("imdb_reviews_train.txt", tmp_path / "out") == (
        tmp_path / "imdb_reviews_train.txt"
    )
    assert shared_data.corpus_label("imdb_reviews_train.txt").startswith("imdb_reviews_train.txt (")
    assert "standard library" in shared_data.corpus_label("tinyshakespeare.txt")  # absent: the stdlib
    assert shared_data.vocab_dir() == shared_data.FIXTURE_VOCAB  # an incomplete vocab folder is not used


def _report_module():
    spec = importlib.util.spec_from_file_location(
        "bench_report", shared_data.REPO_ROOT / "benches" / "report.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(group: str, impl: str, median: float, corpus: str | None) -> dict:
    info = {"impl": impl, "MB": 1.0}
    if corpus:
        info["corpus"] = corpus
    return {"group": group, "name": f"test[{impl}]", "stats": {"median": median}, "extra_info": info}


def test_bench_report_names_the_corpus():
    report = _report_module()
    label = "the Python 3.11 standard library (.py sources + pydoc topics, 32.0 MB)"
    data = {
        "machine_info": {},
        "benchmarks": [
            _row("encode-gpt2", "fastllm", 0.005, label),
            _row("encode-gpt2", "tiktoken", 0.05, label),
            _row("dedup-5k", "fastllm", 0.1, label),
        ],
    }
    text = report.report(data)
    first = text.splitlines()[1]
    assert first.startswith("Corpus: " + label)
    assert f"### encode-gpt2 (1.00 MB of input; {label})" in text
    assert "| encode-gpt2 | fastllm 5.00 ms |  | tiktoken 0.050 (10.0x) |" in text
    data["benchmarks"] = [_row("x", "fastllm", 0.1, None)]
    assert report.report(data).splitlines()[1].startswith("Corpus: none")
