"""The `fastllm` command line, run as `python -m fastllm` in a subprocess (the installed package).

Oracle: the Python API. `tokenizer train` must write the tokenizer `BPETokenizer.train_files` makes
from the same files and options; `tokenizer encode` must print the ids `encode` returns. Bad input
exits non-zero with a one-line error naming the problem and no traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from tqdm import tqdm

from fastllm import BPETokenizer
from strategies import source_corpus


def fastllm(*args, input=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fastllm", *map(str, args)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        input=input,
        timeout=120,
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    text = source_corpus(8000)
    paths = [folder / "a.txt", folder / "b.txt"]
    paths[0].write_text(text[:5000], encoding="utf-8")
    paths[1].write_text(text[5000:] + "\n<|endoftext|>\n1234567 é😀\n", encoding="utf-8")
    return paths


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["tokenizer", "--help"],
        ["tokenizer", "train", "--help"],
        ["tokenizer", "encode", "--help"],
        ["--version"],
    ],
    ids=" ".join,
)
def test_help(args):
    out = fastllm(*args)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()


def test_help_lists_the_options():
    text = fastllm("tokenizer", "train", "--help").stdout
    for option in (
        "--vocab-size",
        "--output",
        "--pattern",
        "--special-token",
        "--min-frequency",
        "--threads",
    ):
        assert option in text


@pytest.mark.parametrize(
    "extra,kw",
    [
        ([], {}),
        (
            ["--pattern", "gpt2", "--min-frequency", "40", "--threads", "1"],
            {"pattern": "gpt2", "min_frequency": 40, "num_threads": 1},
        ),
        (
            ["--special-token", "<|endoftext|>", "--special-token", "<|pad|>", "--threads", "2"],
            {"special_tokens": ["<|endoftext|>", "<|pad|>"], "num_threads": 2},
        ),
    ],
    ids=["defaults", "gpt2-minfreq", "specials"],
)
def test_train_writes_the_api_tokenizer(corpus, tmp_path, extra, kw):
    out_path = tmp_path / "tok.json"
    out = fastllm("tokenizer", "train", *corpus, "--vocab-size", 300, "-o", out_path, "--quiet", *extra)
    assert out.returncode == 0, out.stderr
    kw.setdefault("special_tokens", ["<|endoftext|>"])  # the command's default special token
    expected = BPETokenizer.train_files(corpus, 300, show_progress=False, **kw)
    written = BPETokenizer.from_file(out_path)
    assert written.merges == expected.merges
    assert written.special_tokens == expected.special_tokens
    assert written.pattern == expected.pattern
    if "min_frequency" in kw:  # really stopped by --min-frequency, not by --vocab-size
        assert len(written.merges) < 300 - 256 - len(kw["special_tokens"])


@pytest.fixture(scope="module")
def tok_path(corpus, tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "tok.json"
    BPETokenizer.train_files(corpus, 400, special_tokens=["<|endoftext|>"], show_progress=False).save(path)
    return path


def test_encode_ids_and_json(corpus, tok_path, tmp_path):
    tok = BPETokenizer.from_file(tok_path)
    plain = tmp_path / "plain.txt"
    plain.write_text("def f(x):\n    return x + 1234567  # é😀\n\n", encoding="utf-8")
    out = fastllm("tokenizer", "encode", "--tokenizer", tok_path, plain)
    assert out.returncode == 0, out.stderr
    assert [int(t) for t in out.stdout.split()] == tok.encode(plain.read_text(encoding="utf-8"))
    out = fastllm("tokenizer", "encode", "--tokenizer", tok_path, "--format", "json", plain, corpus[0])
    assert out.returncode == 0, out.stderr
    lists = [json.loads(line) for line in out.stdout.splitlines()]
    assert lists == [tok.encode(p.read_text(encoding="utf-8")) for p in (plain, corpus[0])]


def test_encode_specials_need_the_flag(corpus, tok_path):
    tok = BPETokenizer.from_file(tok_path)
    out = fastllm("tokenizer", "encode", "--tokenizer", tok_path, corpus[1])
    assert out.returncode != 0 and "<|endoftext|>" in out.stderr and "Traceback" not in out.stderr
    # the error speaks the command's language: its flag and the input, not the Python argument
    (error,) = out.stderr.splitlines()
    text = corpus[1].read_text(encoding="utf-8")
    at = len(text[: text.index("<|endoftext|>")].encode("utf-8"))
    assert error.startswith(f"Error: {corpus[1]}: ") and f"byte offset {at};" in error
    assert "--allow-special" in error and "allowed_special" not in error
    out = fastllm(
        "tokenizer", "encode", "--tokenizer", tok_path, "--allow-special", "--format", "json", corpus[1]
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == tok.encode(corpus[1].read_text(encoding="utf-8"), allowed_special="all")


def _final_states(stderr: str) -> dict[str, str]:
    """The last state each progress bar drew (tqdm redraws a line in place with \r)."""
    last: dict[str, str] = {}
    for piece in stderr.replace("\n", "\r").split("\r"):
        name, _, rest = piece.strip().partition(":")
        if rest:
            last[name] = rest
    return last


def test_train_progress_bars_end_in_their_true_state(corpus, tmp_path):
    """The bars used to end at their first frame ("counting: 0.00/303k", "merging: 0/743"): the
    last frame drawn is the work done (the bytes counted; the merges made, with the reason when
    training stopped short of the vocabulary size)."""
    out_path = tmp_path / "tok.json"
    out = fastllm("tokenizer", "train", *corpus, "--vocab-size", 5000, "-o", out_path)
    assert out.returncode == 0, out.stderr
    last = _final_states(out.stderr)
    size = sum(p.stat().st_size for p in corpus)
    merges = len(BPETokenizer.from_file(out_path).merges)
    assert merges < 5000 - 256 - 1  # stopped short: the corpus ran out of pairs
    shown = tqdm.format_sizeof(size)  # the byte count as tqdm prints it
    assert last["counting"].lstrip().startswith("100%") and f" {shown}/{shown} " in last["counting"]
    assert last["merging"].lstrip().startswith("100%") and f" {merges}/{merges} " in last["merging"]
    assert "no pair left to merge" in last["merging"]


def test_train_on_texts_counts_every_text(capsys):
    texts = [f"text number {i} " * 3 for i in range(5000)]
    tok = BPETokenizer.train(texts, 300)
    last = _final_states(capsys.readouterr().err)
    assert last["counting"].lstrip().startswith("5000 texts")
    n = len(tok.merges)
    assert f" {n}/{n} " in last["merging"] and last["merging"].lstrip().startswith("100%")


def test_encode_reads_stdin(tok_path):
    tok = BPETokenizer.from_file(tok_path)
    out = fastllm(
        "tokenizer", "encode", "--tokenizer", tok_path, "--format", "json", input="hello stdin 😀\n"
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == tok.encode("hello stdin 😀\n")


def _bad_invalid_utf8(tmp_path, corpus, tok_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok\n\xff\xfe\n")
    return ["tokenizer", "train", bad, "--vocab-size", 300, "-o", tmp_path / "o.json", "--quiet"], "bad.txt"


BAD_CALLS = {
    "missing-training-file": lambda t, c, k: (
        ["tokenizer", "train", t / "nope.txt", "--vocab-size", 300, "-o", t / "o.json", "--quiet"],
        "nope.txt",
    ),
    "vocab-too-small": lambda t, c, k: (
        ["tokenizer", "train", *c, "--vocab-size", 100, "-o", t / "o.json", "--quiet"],
        "100",
    ),
    "bad-pattern": lambda t, c, k: (
        ["tokenizer", "train", *c, "--pattern", "(", "-o", t / "o.json", "--quiet"],
        "(",
    ),
    "bad-threads": lambda t, c, k: (
        ["tokenizer", "train", *c, "--threads", -3, "-o", t / "o.json", "--quiet"],
        "-3",
    ),
    "invalid-utf8": _bad_invalid_utf8,
    "missing-tokenizer": lambda t, c, k: (
        ["tokenizer", "encode", "--tokenizer", t / "none.json", c[0]],
        "none.json",
    ),
    "missing-input": lambda t, c, k: (["tokenizer", "encode", "--tokenizer", k, t / "gone.txt"], "gone.txt"),
    "unknown-command": lambda t, c, k: (["tokenizer", "frobnicate"], "frobnicate"),
}


@pytest.mark.parametrize("case", sorted(BAD_CALLS))
def test_bad_input_exits_nonzero_without_traceback(case, tmp_path, corpus, tok_path):
    args, named = BAD_CALLS[case](tmp_path, corpus, tok_path)
    out = fastllm(*args)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr and "Traceback" not in out.stdout
    assert named in out.stderr, out.stderr
    assert not (tmp_path / "o.json").exists()


def test_encode_refuses_invalid_utf8_on_stdin_in_one_line(tok_path):
    """Standard input is decoded strictly, as files are, whatever the locale: under LC_ALL=C Python
    would read invalid bytes as lone surrogates, which encode() would turn into U+FFFD silently."""
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0"}
    out = subprocess.run(
        [sys.executable, "-m", "fastllm", "tokenizer", "encode", "--tokenizer", str(tok_path)],
        input=b"ok \xff\xfe bytes\n",
        capture_output=True,
        env=env,
        timeout=300,
    )
    err = out.stderr.decode("utf-8", "replace").strip()
    assert out.returncode == 1 and out.stdout == b"", err
    assert len(err.splitlines()) == 1 and "utf-8" in err and "0xff" in err, err
