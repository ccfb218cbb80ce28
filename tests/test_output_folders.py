"""Output folders (`fastllm dedup --format files -o DIR`, `fastllm tokenize -o DIR`): replaced as a
whole through `fastllm._io.atomic_folder`, never at the cost of anything fastllm did not write.

Oracles: the file system itself. Every refused run leaves every file under the working folder
byte for byte as it was (a snapshot before and after); a run killed at a chosen point (a child
process that SIGKILLs itself there) leaves the old output exactly as it was, or the new one whole,
which `TokenDataset` loads; and the next run clears the litter. What a finished run wrote is
checked against the shards a fresh folder gets from the same call.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

import fastllm._io
from fastllm import BPETokenizer
from fastllm._checks import available_memory, check_memory
from fastllm._io import MANIFEST, atomic_folder, read_manifest
from fastllm.cli import main
from fastllm.data.dataset import TokenDataset
from fastllm.data.tokenize import tokenize_to_shards

EOT = "<|endoftext|>"


@pytest.fixture(scope="module")
def tok_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    texts = ["the quick brown fox jumps over the lazy dog"] * 4
    BPETokenizer.train(texts, 280, special_tokens=[EOT], show_progress=False).save(path)
    return path


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under `root` (links as links) -> its bytes (None for a folder)."""
    out: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = b"-> " + os.readlink(p).encode()
            else:
                out[rel] = None if p.is_dir() else p.read_bytes()
    return out


def litter(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".fastllm-" in p.name)


@pytest.fixture
def work(tmp_path, monkeypatch, tok_path) -> Path:
    """A working folder: inputs in src/, a tokenizer beside them, a notes file; cwd is it."""
    (tmp_path / "src").mkdir()
    docs = [f"document {i} about the quick brown fox number {i % 7}" for i in range(40)]
    (tmp_path / "src" / "in.txt").write_text("\n".join(docs) + "\n")
    for i in range(3):
        (tmp_path / "src" / f"doc{i}.txt").write_text(docs[i])
    (tmp_path / "tokenizer.json").write_bytes(tok_path.read_bytes())
    (tmp_path / "notes.txt").write_text("mine")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def invoke(*args: str):
    return CliRunner().invoke(main, [*args, "--quiet"])


def one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.output.count("Error:") == 1, result.output
    return result.output


# ---- refused: nothing under the working folder changes ---------------------------------------------


def _unrelated(w: Path) -> None:
    (w / "out").mkdir()
    (w / "out" / "keep-me.txt").write_text("not fastllm's")


def _other_command(w: Path) -> None:
    (w / "out").mkdir()
    (w / "out" / "a.txt").write_text("x")
    (w / "out" / MANIFEST).write_text(
        json.dumps({"format": "fastllm-output", "version": 1, "command": "dedup", "files": ["a.txt"]})
    )


def _bad_manifest(w: Path) -> None:
    (w / "out").mkdir()
    (w / "out" / MANIFEST).write_text("[1, 2")


def _a_file(w: Path) -> None:
    (w / "out").write_text("a file")


def _listed_plus_one(w: Path) -> None:
    _other_command(w)
    (w / "out" / "extra.txt").write_text("added by hand")


DEDUP_FILES = ["src/doc0.txt", "src/doc1.txt", "src/doc2.txt", "--format", "files"]
TOKENIZE = ["src/in.txt", "-t", "tokenizer.json"]

REFUSED = [
    # (command args, setup, message regex)
    (["dedup", *DEDUP_FILES, "-o", "."], None, r"output folder '\.' is the working folder or holds it"),
    (["dedup", *DEDUP_FILES, "-o", ".."], None, r"output folder '\.\.' is the working folder or holds it"),
    (["dedup", *DEDUP_FILES, "-o", "src"], None, r"output folder 'src' holds the input 'src/doc0.txt'"),
    (
        ["dedup", *DEDUP_FILES, "-o", "out"],
        _unrelated,
        r"holds files fastllm dedup did not write \('keep-me.txt'\)",
    ),
    (["dedup", *DEDUP_FILES, "-o", "out"], _listed_plus_one, r"did not write \('extra.txt'\)"),
    (
        ["dedup", *DEDUP_FILES, "-o", "out"],
        _bad_manifest,
        r"out/\.fastllm-output\.json: not a fastllm output manifest",
    ),
    (["dedup", *DEDUP_FILES, "-o", "out"], _a_file, r"output 'out' is a file; fastllm dedup writes a folder"),
    (["dedup", "src/in.txt", "-o", "src/in.txt"], None, r"output 'src/in.txt' is also an input"),
    (["dedup", "src/in.txt", "-o", "src"], None, r"output 'src' is a folder; --format lines writes a file"),
    (["dedup", "src/in.txt", "-o", "k.txt", "--clusters", "src/in.txt"], None, r"would overwrite an input"),
    (
        ["dedup", "src/in.txt", "-o", "k.txt", "--clusters", "k.txt"],
        None,
        r"--clusters 'k.txt' would overwrite",
    ),
    (
        ["dedup", *DEDUP_FILES, "-o", "out", "--clusters", "out/c.jsonl"],
        None,
        r"would overwrite an input or the",
    ),
    (["tokenize", *TOKENIZE, "-o", "."], None, r"output folder '\.' is the working folder or holds it"),
    (["tokenize", *TOKENIZE, "-o", "src"], None, r"output folder 'src' holds the input 'src/in.txt'"),
    (["tokenize", "src/in.txt", "-t", "out/tok.json", "-o", "out"], None, r"holds the input 'out/tok.json'"),
    (["tokenize", *TOKENIZE, "-o", "out"], _unrelated, r"fastllm tokenize did not write \('keep-me.txt'\)"),
    (
        ["tokenize", *TOKENIZE, "-o", "out"],
        _other_command,
        r"holds the output of fastllm dedup, not of fastllm tokenize",
    ),
    (["tokenize", *TOKENIZE, "-o", "out"], _a_file, r"output 'out' is a file"),
    (["tokenize", *TOKENIZE, "-o", "out", "--overwrite"], _unrelated, r"did not write \('keep-me.txt'\)"),
]


@pytest.mark.parametrize(
    "args,setup,message", REFUSED, ids=[f"{a[0]}{i}" for i, (a, _, _) in enumerate(REFUSED)]
)
def test_refused_outputs_change_nothing(work, tok_path, args, setup, message):
    if "out/tok.json" in args:
        (work / "out").mkdir()
        (work / "out" / "tok.json").write_bytes(tok_path.read_bytes())
    if setup is not None:
        setup(work)
    before = snapshot(work)
    output = one_line_error(invoke(*args))
    assert re.search(message, output), output
    assert snapshot(work) == before


def test_a_previous_output_is_replaced_and_nothing_else(work):
    r = invoke("dedup", *DEDUP_FILES, "-o", "out")
    assert r.exit_code == 0, r.output
    assert sorted(os.listdir("out")) == [MANIFEST, "doc0.txt", "doc1.txt", "doc2.txt"]
    (work / "src" / "doc2.txt").write_text("document 0 about the quick brown fox number 0")  # now a duplicate
    r = invoke("dedup", *DEDUP_FILES, "-o", "out")
    assert r.exit_code == 0, r.output
    assert sorted(os.listdir("out")) == [MANIFEST, "doc0.txt", "doc1.txt"]
    assert read_manifest(work / "out") == {
        "format": "fastllm-output",
        "version": 1,
        "command": "dedup",
        "files": ["doc0.txt", "doc1.txt"],
    }
    assert sorted(os.listdir(work)) == ["notes.txt", "out", "src", "tokenizer.json"]  # no litter
    # tokenize: again only with --overwrite, and then whole
    assert invoke("tokenize", *TOKENIZE, "-o", "shards").exit_code == 0
    first = snapshot(work / "shards")
    r = invoke("tokenize", *TOKENIZE, "-o", "shards")
    assert re.search(r"already holds \d+ shard file\(s\) .* pass --overwrite", one_line_error(r))
    assert snapshot(work / "shards") == first
    assert (
        invoke("tokenize", *TOKENIZE, "-o", "shards", "--overwrite", "--val-fraction", "0.3").exit_code == 0
    )
    assert invoke("tokenize", *TOKENIZE, "-o", "fresh", "--val-fraction", "0.3").exit_code == 0
    assert snapshot(work / "shards") == snapshot(work / "fresh") != first
    assert TokenDataset("shards", 4).tokens > 0 and litter(work) == []


def test_a_shard_folder_from_before_manifests_is_replaced_with_overwrite(work, tok_path):
    tokenize_to_shards([work / "src" / "in.txt"], work / "old", tokenizer=tok_path, val_fraction=0.2)
    (work / "old" / MANIFEST).unlink()  # what tokenize wrote before output manifests
    stats = tokenize_to_shards(
        [work / "src" / "in.txt"], work / "old", tokenizer=tok_path, val_fraction=0.5, overwrite=True
    )
    assert read_manifest(work / "old")["command"] == "tokenize"
    assert sorted(p.name for p in stats.shards["val"]) == [p.name for p in (work / "old").glob("val_*.json")]


def test_an_error_mid_write_leaves_the_old_output_and_no_litter(work, monkeypatch):
    assert invoke("dedup", *DEDUP_FILES, "-o", "out").exit_code == 0
    before = snapshot(work)
    calls = []

    def failing_write(path, data):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device", str(path))
        return real(path, data)

    import fastllm.data.dedup_io as dedup_io

    real = dedup_io.write_atomic
    monkeypatch.setattr(dedup_io, "write_atomic", failing_write)
    assert "No space left on device" in one_line_error(invoke("dedup", *DEDUP_FILES, "-o", "out"))
    assert snapshot(work) == before


# ---- killed: the old output or the new one, whole; the next run clears the litter ------------------

CHILD = """
import os, signal, sys
from pathlib import Path
import fastllm._io as io
import fastllm.data.shards as shards
from fastllm.data.tokenize import tokenize_to_shards

point = sys.argv[4]
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
if point == "mid-write":  # after the second shard of the new set is finished
    finish = shards.ShardWriter._finish
    def _finish(self):
        finish(self)
        if len(self.written) == 2:
            die()
    shards.ShardWriter._finish = _finish
elif point == "after-exchange":  # the new set switched in, the old one not yet deleted
    exchange = io._exchange
    def _exchange(a, b):
        exchange(a, b)
        die()
    io._exchange = _exchange
elif point == "between-renames":  # no exchange on this system: killed between the two renames
    io._exchange = lambda a, b: False
    rename = Path.rename
    def _rename(self, target):
        if self.name.startswith(".out.fastllm-new-"):
            die()
        return rename(self, target)
    Path.rename = _rename
tokenize_to_shards([Path(sys.argv[1])], Path(sys.argv[2]), tokenizer=Path(sys.argv[3]),
                   shard_tokens=40, val_fraction=0.1, seed=1, overwrite=True)
"""


def killed_run(work: Path, tok_path: Path, point: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(work / "src" / "in.txt"), str(work / "out"), str(tok_path), point],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -9, proc.stderr[-2000:]


def test_killed_mid_write_the_old_set_stays_whole(work, tok_path):
    old = tokenize_to_shards([work / "src" / "in.txt"], work / "out", tokenizer=tok_path, shard_tokens=40)
    before = snapshot(work / "out")
    killed_run(work, tok_path, "mid-write")
    assert snapshot(work / "out") == before  # not one byte of the new set in it
    ds = TokenDataset(work / "out", 4)
    assert ds.tokens == old.tokens["train"]
    assert len(litter(work)) == 1  # the unfinished new set, beside
    new = tokenize_to_shards(
        [work / "src" / "in.txt"], work / "out", tokenizer=tok_path, shard_tokens=40, seed=1, overwrite=True
    )
    assert litter(work) == [] and TokenDataset(work / "out", 4).tokens == new.tokens["train"]
    fresh = tokenize_to_shards(
        [work / "src" / "in.txt"], work / "fresh", tokenizer=tok_path, shard_tokens=40, seed=1
    )
    assert snapshot(work / "out") == snapshot(work / "fresh") and new.tokens == fresh.tokens


def test_killed_after_the_switch_the_new_set_is_whole(work, tok_path):
    tokenize_to_shards(
        [work / "src" / "in.txt"],
        work / "fresh",
        tokenizer=tok_path,
        shard_tokens=40,
        seed=1,
        val_fraction=0.1,
    )
    tokenize_to_shards([work / "src" / "in.txt"], work / "out", tokenizer=tok_path, shard_tokens=40)
    killed_run(work, tok_path, "after-exchange")
    assert snapshot(work / "out") == snapshot(work / "fresh")
    assert TokenDataset(work / "out", 4).tokens == TokenDataset(work / "fresh", 4).tokens
    assert len(litter(work)) == 1  # the old set, at the temporary name
    tokenize_to_shards(
        [work / "src" / "in.txt"],
        work / "out",
        tokenizer=tok_path,
        shard_tokens=40,
        seed=1,
        val_fraction=0.1,
        overwrite=True,
    )
    assert litter(work) == [] and snapshot(work / "out") == snapshot(work / "fresh")


def test_killed_between_the_two_renames_the_next_run_puts_the_old_set_back(work, tok_path):
    tokenize_to_shards([work / "src" / "in.txt"], work / "out", tokenizer=tok_path, shard_tokens=40)
    before = snapshot(work / "out")
    killed_run(work, tok_path, "between-renames")
    assert not (work / "out").exists() and len(litter(work)) == 2  # the one moment of the fallback
    (work / "bad.txt").write_bytes(b"fine\n\xff not utf-8\n")
    with pytest.raises(ValueError, match=r"bad\.txt:2: invalid UTF-8"):  # a run that fails...
        tokenize_to_shards([work / "bad.txt"], work / "out", tokenizer=tok_path, overwrite=True)
    assert snapshot(work / "out") == before and litter(work) == []  # ...has put the old set back


def test_the_fallback_switch_without_exchange(work, tok_path, monkeypatch):
    monkeypatch.setattr(fastllm._io, "_exchange", lambda a, b: False)
    tokenize_to_shards([work / "src" / "in.txt"], work / "out", tokenizer=tok_path, shard_tokens=40)
    tokenize_to_shards([work / "src" / "in.txt"], work / "fresh", tokenizer=tok_path, shard_tokens=40, seed=1)
    tokenize_to_shards(
        [work / "src" / "in.txt"], work / "out", tokenizer=tok_path, shard_tokens=40, seed=1, overwrite=True
    )
    assert snapshot(work / "out") == snapshot(work / "fresh") and litter(work) == []


def test_litter_of_a_running_process_is_left_alone(work, tok_path):
    busy = work / ".out.fastllm-new-abc123"
    busy.mkdir()
    (busy / "train_00000.bin").write_bytes(b"\0\0")
    fd = os.open(busy, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as the writing run holds it
        tokenize_to_shards([work / "src" / "in.txt"], work / "out", tokenizer=tok_path)
        assert (busy / "train_00000.bin").read_bytes() == b"\0\0"
    finally:
        os.close(fd)
    tokenize_to_shards([work / "src" / "in.txt"], work / "out", tokenizer=tok_path, overwrite=True)
    assert not busy.exists()


def test_a_planted_link_at_the_litter_names_is_not_followed(work, tok_path):
    victim = work / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("precious")
    (work / ".out.fastllm-new-planted").symlink_to(victim)
    (work / ".out.fastllm-old-planted").symlink_to(victim)
    tokenize_to_shards([work / "src" / "in.txt"], work / "out", tokenizer=tok_path)
    assert (victim / "precious.txt").read_text() == "precious" and sorted(os.listdir(victim)) == [
        "precious.txt"
    ]


def test_atomic_folder_on_an_exception_leaves_target_untouched(tmp_path):
    with atomic_folder(tmp_path / "out", command="demo") as tmp:
        (tmp / "a").write_text("1")
    before = snapshot(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        with atomic_folder(tmp_path / "out", command="demo") as tmp:
            (tmp / "b").write_text("2")
            raise KeyboardInterrupt
    assert snapshot(tmp_path) == before


# ---- memory: sizes refused before they are allocated ---------------------------------------------


def test_check_memory_refuses_what_is_not_available():
    avail = available_memory()
    assert avail is None or avail > 0
    assert check_memory(1024, "a small buffer") == 1024
    with pytest.raises(
        ValueError, match=r"^cluster\(n=10\) needs about 1000000000\.0 GB of memory, more than"
    ):
        check_memory(10**18, "cluster(n=10)")


def test_available_memory_respects_an_address_space_limit():
    code = textwrap.dedent(
        """
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
        from fastllm._checks import available_memory
        print(available_memory())
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert 0 < int(proc.stdout) < 2 << 30
