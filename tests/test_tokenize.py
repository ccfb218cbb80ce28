"""`fastllm tokenize` and the shard format: corpus -> train/val shards -> the corpus again.

Oracles: the input documents themselves (decoding the shards and splitting at the end-of-text id
gives them back, each in exactly one split, in input order); `hashlib` for the tokenizer hash; the
file sizes for the header counts; one big shard for the concatenation of rolled-over shards; and
synthetic ids for the uint32 shards (a >65,536-id tokenizer is too slow to train in a test).
"""

from __future__ import annotations

import doctest
import hashlib
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastllm.data.shards
import fastllm.data.tokenize
from fastllm import BPETokenizer
from fastllm.data.dataset import TokenDataset
from fastllm.data.shards import ShardWriter, list_shards, load_shard, read_header
from fastllm.data.tokenize import tokenize_to_shards

EOT = "<|endoftext|>"


@pytest.fixture(scope="module")
def tok_path(tmp_path_factory) -> Path:
    import json as json_mod
    import random as random_mod

    texts = [Path(m.__file__).read_text(encoding="utf-8") for m in (json_mod.decoder, random_mod)]
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    BPETokenizer.train(texts, 300, special_tokens=[EOT], show_progress=False).save(path)
    return path


def _documents(n: int = 120, seed: int = 0, newlines: bool = False) -> list[str]:
    """n distinct documents of stdlib words, some with emoji, accents and a literal EOT string."""
    rng = random.Random(seed)
    words = Path(random.__file__).read_text(encoding="utf-8").split()
    docs = []
    for i in range(n):
        parts = [rng.choice(words) for _ in range(rng.randint(1, 40))]
        if i % 7 == 0:
            parts.insert(rng.randrange(len(parts) + 1), "café 🐍")
        if i % 11 == 0:
            parts.insert(rng.randrange(len(parts) + 1), EOT)  # text, not the special id
        sep = "\n" if newlines and i % 3 == 0 else " "
        docs.append(f"{i}: " + sep.join(parts))
    return docs


def _split_ids(directory: Path, split: str) -> np.ndarray:
    parts = [load_shard(p) for p in list_shards(directory, split)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)


def _decoded(directory: Path, split: str, tok: BPETokenizer) -> list[str]:
    """The documents of a split: its ids cut after every end-of-text id, each decoded strictly."""
    ids = _split_ids(directory, split).tolist()
    eot = tok.special_tokens[EOT]
    docs, cur = [], []
    for i in ids:
        if i == eot:
            docs.append(tok.decode_bytes(cur).decode("utf-8"))
            cur = []
        else:
            cur.append(i)
    assert cur == [], "the stream must end with an end-of-text id"
    return docs


def _assert_round_trip(directory: Path, docs: list[str], tok: BPETokenizer) -> tuple[list[str], list[str]]:
    train, val = _decoded(directory, "train", tok), _decoded(directory, "val", tok)
    assert sorted(train + val) == sorted(docs)  # every document, exactly once (documents are distinct)
    position = {d: i for i, d in enumerate(docs)}
    for split in (train, val):
        assert [position[d] for d in split] == sorted(position[d] for d in split)  # input order
    return train, val


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fastllm", "tokenize", *args, "--quiet"],
        cwd=cwd,
        capture_output=True,
        text=True,
    )


def test_cli_lines_round_trip_and_headers(tmp_path, tok_path):
    docs = _documents()
    (tmp_path / "in.txt").write_text("\n".join(docs) + "\n", encoding="utf-8")
    r = cli(
        "in.txt",
        "-o",
        "out",
        "--tokenizer",
        str(tok_path),
        "--val-fraction",
        "0.2",
        "--threads",
        "2",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    tok = BPETokenizer.from_file(tok_path)
    train, val = _assert_round_trip(tmp_path / "out", docs, tok)
    assert 0 < len(val) < len(docs) / 2 and len(train) > len(docs) / 2
    sha = hashlib.sha256(tok_path.read_bytes()).hexdigest()
    for split, split_docs in (("train", train), ("val", val)):
        (header_path,) = list_shards(tmp_path / "out", split)
        raw = json.loads(header_path.read_text())
        count = header_path.with_suffix(".bin").stat().st_size // 2
        assert raw == {
            "format": "fastllm-tokens",
            "version": 1,
            "dtype": "uint16",
            "count": count,
            "vocab_size": tok.vocab_size,
            "eot_id": tok.special_tokens[EOT],
            "tokenizer_sha256": sha,
            "documents": len(split_docs),
        }
    n_tokens = len(_split_ids(tmp_path / "out", "train"))
    assert f"{len(docs):,} documents (0 invalid)" in r.stdout
    assert f"train {len(train):,} documents / {n_tokens:,} tokens in 1 shard(s)" in r.stdout
    assert "bytes per token" in r.stdout and "MB/s" in r.stdout
    assert not list((tmp_path / "out").glob(".*.tmp"))


def test_files_format_keeps_newlines_and_literal_specials(tmp_path, tok_path):
    docs = _documents(30, seed=1, newlines=True) + [""]
    paths = []
    for i, d in enumerate(docs):
        paths.append(tmp_path / f"doc{i:03d}.txt")
        paths[-1].write_text(d, encoding="utf-8")
    tokenize_to_shards(
        paths, tmp_path / "out", tokenizer=tok_path, fmt="files", val_fraction=0.3, num_threads=1
    )
    _assert_round_trip(tmp_path / "out", docs, BPETokenizer.from_file(tok_path))


def test_jsonl_text_field(tmp_path, tok_path):
    docs = _documents(40, seed=2, newlines=True)
    lines = [json.dumps({"id": i, "body": d}) for i, d in enumerate(docs)]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    r = cli("in.jsonl", "-o", "out", "-t", str(tok_path), "--text-field", "body", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    _assert_round_trip(tmp_path / "out", docs, BPETokenizer.from_file(tok_path))
    r = cli("in.jsonl", "-o", "out2", "-t", str(tok_path), cwd=tmp_path)  # default field "text" is missing
    assert (
        r.returncode == 1
        and "in.jsonl:1" in r.stderr
        and "'text'" in r.stderr
        and "Traceback" not in r.stderr
    )
    assert not list_shards(tmp_path / "out2", "train")


def test_rollover_concatenates_to_one_shard(tmp_path, tok_path):
    docs = _documents(80, seed=3)
    (tmp_path / "in.txt").write_text("\n".join(docs) + "\n", encoding="utf-8")
    kw = dict(tokenizer=tok_path, fmt="lines", val_fraction=0.25)
    one = tokenize_to_shards([tmp_path / "in.txt"], tmp_path / "one", **kw)
    many = tokenize_to_shards([tmp_path / "in.txt"], tmp_path / "many", shard_tokens=50, **kw)
    eot = BPETokenizer.from_file(tok_path).special_tokens[EOT]
    for split in ("train", "val"):
        headers = list_shards(tmp_path / "many", split)
        assert len(headers) > 2 and len(many.shards[split]) == len(headers)
        counts = [read_header(h).count for h in headers]
        assert all(c == 50 for c in counts[:-1]) and 0 < counts[-1] <= 50
        big = load_shard(list_shards(tmp_path / "one", split)[0])
        parts = [load_shard(h) for h in headers]
        np.testing.assert_array_equal(np.concatenate(parts), big)
        assert [read_header(h).documents for h in headers] == [int((p == eot).sum()) for p in parts]
        assert many.tokens[split] == one.tokens[split] == len(big)


def test_batch_size_does_not_change_the_output(tmp_path, tok_path):
    """Tiny batches exercise the held-back last train document across many encode calls."""
    docs = _documents(60, seed=4)
    (tmp_path / "in.txt").write_text("\n".join(docs) + "\n", encoding="utf-8")
    kw = dict(tokenizer=tok_path, fmt="lines", val_fraction=0.3, seed=5)
    tokenize_to_shards([tmp_path / "in.txt"], tmp_path / "a", **kw)
    tokenize_to_shards([tmp_path / "in.txt"], tmp_path / "b", batch_bytes=64, **kw)
    for split in ("train", "val"):
        for suffix in (".bin", ".json"):
            assert (tmp_path / "a" / f"{split}_00000{suffix}").read_bytes() == (
                tmp_path / "b" / f"{split}_00000{suffix}"
            ).read_bytes()


def test_split_is_deterministic_per_seed(tmp_path, tok_path):
    docs = _documents(100, seed=6)
    (tmp_path / "in.txt").write_text("\n".join(docs) + "\n", encoding="utf-8")
    tok = BPETokenizer.from_file(tok_path)
    vals = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        tokenize_to_shards(
            [tmp_path / "in.txt"],
            tmp_path / name,
            tokenizer=tok_path,
            fmt="lines",
            val_fraction=0.3,
            seed=seed,
        )
        vals[name] = _assert_round_trip(tmp_path / name, docs, tok)[1]
    assert vals["a"] == vals["b"] and vals["a"] != vals["c"]
    assert 10 < len(vals["a"]) < 50 and 10 < len(vals["c"]) < 50  # about 30 of 100


def test_at_least_one_val_document_and_none_at_fraction_zero(tmp_path, tok_path):
    tok = BPETokenizer.from_file(tok_path)
    (tmp_path / "in.txt").write_text("first document\nsecond document\n", encoding="utf-8")
    s = tokenize_to_shards(
        [tmp_path / "in.txt"], tmp_path / "a", tokenizer=tok_path, fmt="lines", val_fraction=1e-9
    )
    train, val = _assert_round_trip(tmp_path / "a", ["first document", "second document"], tok)
    assert len(val) == 1 and len(train) == 1 and s.docs == {"train": 1, "val": 1}
    tokenize_to_shards(
        [tmp_path / "in.txt"], tmp_path / "b", tokenizer=tok_path, fmt="lines", val_fraction=0.0
    )
    assert list_shards(tmp_path / "b", "val") == [] and len(_decoded(tmp_path / "b", "train", tok)) == 2


def test_dataset_reads_tokenize_output(tmp_path, tok_path):
    docs = _documents(50, seed=7)
    (tmp_path / "in.txt").write_text("\n".join(docs) + "\n", encoding="utf-8")
    tokenize_to_shards(
        [tmp_path / "in.txt"], tmp_path / "out", tokenizer=tok_path, fmt="lines", shard_tokens=100
    )
    ds = TokenDataset(tmp_path / "out", 16)
    tok = BPETokenizer.from_file(tok_path)
    assert (ds.vocab_size, ds.eot_id, ds.documents) == (
        tok.vocab_size,
        tok.special_tokens[EOT],
        len(_decoded(tmp_path / "out", "train", tok)),
    )
    np.testing.assert_array_equal(ds.tokens_at(0, ds.tokens), _split_ids(tmp_path / "out", "train"))


def test_cli_errors_exit_1_without_traceback(tmp_path, tok_path):
    (tmp_path / "in.txt").write_text("a b c\nd e f\n", encoding="utf-8")
    t = str(tok_path)
    plain = tmp_path / "plain.json"
    BPETokenizer.train(["a b c"] * 4, 260, special_tokens=["<|pad|>"], show_progress=False).save(plain)
    cases = [
        (("in.txt", "-o", "o1", "-t", str(plain)), ["'<|endoftext|>'", "<|pad|>"]),
        (("in.txt", "-o", "o2", "-t", t, "--eot", "<|nope|>"), ["'<|nope|>'", EOT]),
        (("missing.txt", "-o", "o3", "-t", t), ["missing.txt"]),
        (("in.txt", "-o", "o4", "-t", "missing.json"), ["missing.json"]),
        (("in.txt", "-o", "o5", "-t", t, "--val-fraction", "1.0"), ["'--val-fraction'", "1.0"]),
        (("in.txt", "-o", "o6", "-t", t, "--shard-tokens", "0"), ["'--shard-tokens'", "0"]),
        (("in.txt", "-o", "in.txt", "-t", t), ["in.txt"]),
    ]
    for args, needles in cases:
        r = cli(*args, cwd=tmp_path)
        usage = needles[0].startswith("'--")  # a value outside the option's range: a usage error
        assert r.returncode == (2 if usage else 1), (args, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr and all(n in r.stderr for n in needles), (args, r.stderr)
    assert not list(tmp_path.glob("o*/*"))


def test_existing_shards_need_overwrite(tmp_path, tok_path):
    (tmp_path / "in.txt").write_text("one two\nthree four\nfive six\n", encoding="utf-8")
    args = ("in.txt", "-o", "out", "-t", str(tok_path), "--shard-tokens", "3")
    assert cli(*args, cwd=tmp_path).returncode == 0
    many = len(list_shards(tmp_path / "out", "train"))
    r = cli(*args, cwd=tmp_path)
    assert (
        r.returncode == 1
        and "--overwrite" in r.stderr
        and "'out'" in r.stderr
        and "Traceback" not in r.stderr
    )
    r = cli("in.txt", "-o", "out", "-t", str(tok_path), "--overwrite", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert many > 1 and len(list_shards(tmp_path / "out", "train")) == 1  # old higher-index shards are gone


def test_invalid_records_are_skipped_and_counted_or_fail_cleanly(tmp_path, tok_path):
    (tmp_path / "in.jsonl").write_bytes(
        b'{"text": "good one"}\n{"text": "\\ud800 lone"}\nnot json\n{"text": "good two"}\n'
    )
    r = cli("in.jsonl", "-o", "out", "-t", str(tok_path), cwd=tmp_path)
    assert (
        r.returncode == 1
        and "in.jsonl:2" in r.stderr
        and "surrogate" in r.stderr
        and "Traceback" not in r.stderr
    )
    assert not list((tmp_path / "out").glob("*"))
    r = cli(
        "in.jsonl", "-o", "out", "-t", str(tok_path), "--skip-invalid", "--val-fraction", "0", cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    assert "2 documents (2 invalid)" in r.stdout and "in.jsonl:3" in r.stderr
    assert _decoded(tmp_path / "out", "train", BPETokenizer.from_file(tok_path)) == ["good one", "good two"]


# ---- the shard format, directly ---------------------------------------------------------------


@pytest.mark.parametrize(
    "vocab_size, dtype", [(300, "uint16"), (65536, "uint16"), (65537, "uint32"), (70000, "uint32")]
)
def test_writer_dtype_follows_vocab_size(tmp_path, vocab_size, dtype):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, vocab_size, size=1000).astype(np.uint32)
    ids[::97] = vocab_size - 1  # the top id, > 65535 for the uint32 cases
    with ShardWriter(
        tmp_path, split="train", vocab_size=vocab_size, eot_id=0, tokenizer_sha256="ab", shard_tokens=300
    ) as w:
        w.write(ids[:450])
        w.write(ids[450:])
    headers = list_shards(tmp_path, "train")
    assert [read_header(h).count for h in headers] == [300, 300, 300, 100]
    raw = np.concatenate(
        [np.fromfile(h.with_suffix(".bin"), dtype=np.dtype(dtype).newbyteorder("<")) for h in headers]
    )
    np.testing.assert_array_equal(raw, ids)
    assert all(read_header(h).dtype == dtype for h in headers)
    assert sum(read_header(h).documents for h in headers) == int((ids == 0).sum())
    assert (tmp_path / "train_00000.bin").stat().st_size == 300 * (2 if dtype == "uint16" else 4)


def test_writer_rejects_out_of_range_ids_and_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="token id 70000 .* vocab_size 70000"):
        with ShardWriter(tmp_path, split="train", vocab_size=70000, eot_id=1, tokenizer_sha256="") as w:
            w.write(np.array([1, 2, 70000]))
    assert list(tmp_path.iterdir()) == []  # the unfinished shard's temporary file is gone
    kw = dict(split="train", vocab_size=10, eot_id=1, tokenizer_sha256="")
    for change, message in (
        ({"shard_tokens": 0}, "shard_tokens=0 is out of range: it must be >= 1"),
        ({"eot_id": 10}, r"eot_id=10 is out of range: it must be in \[0, 10\)"),
        ({"eot_id": -1}, r"eot_id=-1 is out of range"),
        ({"vocab_size": 0}, r"vocab_size=0 is out of range"),
        ({"split": "../x"}, "'../x'"),
    ):
        with pytest.raises(ValueError, match=message):
            ShardWriter(tmp_path, **{**kw, **change})
    for change, message in (
        ({"shard_tokens": 5.0}, "shard_tokens must be an int, not float"),
        ({"eot_id": "1"}, "eot_id must be an int, not str"),
        ({"vocab_size": None}, "vocab_size must be an int, not NoneType"),
        ({"split": b"train"}, "split must be str, not bytes"),
        ({"tokenizer_sha256": None}, "tokenizer_sha256 must be str, not NoneType"),
    ):
        with pytest.raises(TypeError, match=message):
            ShardWriter(tmp_path, **{**kw, **change})


def test_an_error_mid_shard_keeps_the_finished_shards_and_no_temporary_file(tmp_path):
    """The open shard lives in an `atomic_path` block across `write` calls: an error drops its
    temporary file, while the shards already full stay whole (header + .bin of the stated size)."""
    with pytest.raises(RuntimeError, match="boom"):
        with ShardWriter(
            tmp_path, split="train", vocab_size=300, eot_id=0, tokenizer_sha256="", shard_tokens=4
        ) as w:
            w.write(np.arange(10))  # two full shards, two ids in the open one
            assert len(list(tmp_path.glob(".*.tmp"))) == 1
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "train_00000.bin",
        "train_00000.json",
        "train_00001.bin",
        "train_00001.json",
    ]
    assert [load_shard(h).tolist() for h in list_shards(tmp_path, "train")] == [[0, 1, 2, 3], [4, 5, 6, 7]]


def _one_shard(directory: Path, vocab_size: int = 300, n: int = 100) -> Path:
    with ShardWriter(directory, split="train", vocab_size=vocab_size, eot_id=0, tokenizer_sha256="ab") as w:
        w.write(np.arange(n) % vocab_size)
    return list_shards(directory, "train")[0]


def test_truncated_shard_names_file_and_sizes(tmp_path):
    header = _one_shard(tmp_path)
    data = header.with_suffix(".bin")
    data.write_bytes(data.read_bytes()[:150])
    for open_it in (lambda: load_shard(header), lambda: TokenDataset(tmp_path, 4)):
        with pytest.raises(ValueError, match=r"train_00000\.bin.*150 bytes.*100 uint16 ids = 200 bytes"):
            open_it()
    data.unlink()
    with pytest.raises(FileNotFoundError, match="train_00000.bin"):
        load_shard(header)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"dtype": "int8"}, "dtype 'int8'"),
        ({"dtype": "uint16", "vocab_size": 70000}, "uint16 cannot hold .* 70000"),
        ({"format": "other"}, "format is 'other'"),
        ({"version": 2}, "version 2"),
        ({"count": -1}, "count .* -1"),
        ({"eot_id": 300}, "eot_id 300"),
    ],
)
def test_bad_header_names_file_and_value(tmp_path, change, message):
    header = _one_shard(tmp_path)
    header.write_text(json.dumps({**json.loads(header.read_text()), **change}))
    with pytest.raises(ValueError, match=message) as e:
        read_header(header)
    assert "train_00000.json" in str(e.value)


def test_check_ids_finds_out_of_range_ids(tmp_path):
    header = _one_shard(tmp_path, vocab_size=300)
    header.write_text(json.dumps({**json.loads(header.read_text()), "vocab_size": 50}))
    load_shard(header)  # the spot check is off by default
    with pytest.raises(ValueError, match="id 99 .* vocab_size 50"):
        load_shard(header, check_ids=True)


@pytest.mark.parametrize("module", [fastllm.data.shards, fastllm.data.tokenize], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_arguments_are_checked_before_anything_is_read_or_written(tmp_path, tok_path):
    (tmp_path / "in.txt").write_text("one two\nthree four\n", encoding="utf-8")
    for kwargs, error, message in (
        ({"val_fraction": "0.1"}, TypeError, "val_fraction must be a number, not str"),
        (
            {"val_fraction": -0.1},
            ValueError,
            r"val_fraction=-0.1 is out of range: it must be in \[0.0, 1.0\)",
        ),
        ({"seed": -1}, ValueError, "seed=-1 is out of range"),
        ({"seed": 1.5}, TypeError, "seed must be an int, not float"),
        ({"shard_tokens": "8"}, TypeError, "shard_tokens must be an int, not str"),
        ({"num_threads": 0}, ValueError, "num_threads=0 is out of range: it must be >= 1"),
        ({"batch_bytes": 0}, ValueError, "batch_bytes=0 is out of range: it must be >= 1"),
        ({"overwrite": 1}, TypeError, "overwrite must be a bool, not int"),
        ({"skip_invalid": "yes"}, TypeError, "skip_invalid must be a bool, not str"),
        ({"fmt": "csv"}, ValueError, "fmt must be one of 'lines', 'files', 'jsonl', 'parquet'; got 'csv'"),
        ({"text_field": None}, TypeError, "text_field must be str, not NoneType"),
        ({"eot": 1}, TypeError, "eot must be str, not int"),
    ):
        with pytest.raises(error, match=message):
            tokenize_to_shards([tmp_path / "in.txt"], tmp_path / "out", tokenizer=tok_path, **kwargs)
    assert not (tmp_path / "out").exists()
