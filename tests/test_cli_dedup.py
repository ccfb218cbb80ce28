"""`fastllm dedup` end to end, through the installed console entry point.

Oracle: the library (`MinHashDeduper.dedup` on the same texts) for what is kept; the input files
themselves for the output format (kept records byte for byte, in order); and accounting (every
input document kept, in a reported cluster, or reported invalid).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from fastllm._io import MANIFEST
from fastllm.data.dedup import MinHashDeduper

WORDS = (
    "data model token train loss batch layer head query value key cache merge byte text "
    "python rust kernel thread sample paper corpus vocab shard seed graph fast slow"
).split()


def _docs(n: int = 60, seed: int = 0) -> list[str]:
    """n distinct 30-word documents, every third followed by a one-word edit of itself."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(30)]
        docs.append(" ".join(words))
        if len(docs) % 3 == 0:
            edited = list(words)
            edited[rng.randrange(30)] = "edited"
            docs.append(" ".join(edited))
    return docs


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fastllm", "dedup", *args, "--quiet"], cwd=cwd, capture_output=True, text=True
    )


def test_lines_output_and_clusters_report(tmp_path):
    docs = _docs() + ["", "too short", "too short"]
    (tmp_path / "in.txt").write_text("\n".join(docs) + "\n", encoding="utf-8")
    r = run("in.txt", "-o", "out.txt", "--clusters", "clusters.jsonl", "--threads", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    expected = MinHashDeduper().dedup(docs)
    kept = [d for d, k in zip(docs, expected.keep) if k]
    assert (tmp_path / "out.txt").read_text(encoding="utf-8").split("\n")[:-1] == kept
    report = [json.loads(line) for line in (tmp_path / "clusters.jsonl").read_text().splitlines()]
    assert [[m["doc"] for m in c["members"]] for c in report] == expected.clusters
    assert all(c["members"][0]["source"] == f"in.txt:{c['kept'] + 1}" for c in report)
    removed = sum(len(c["members"]) - 1 for c in report)
    assert removed == len(docs) - len(kept) > 0  # every document accounted for
    assert f"{len(docs):,} documents in, {len(kept):,} out" in r.stdout
    assert "3 shorter than the shingle size (kept)" in r.stdout  # the empty and the two short lines
    assert not list(tmp_path.glob(".*.tmp"))


def test_jsonl_keeps_records_byte_for_byte(tmp_path):
    docs = _docs(seed=1)
    lines = [json.dumps({"id": i, "body": d}, separators=(",", ":")) for i, d in enumerate(docs)]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    r = run("in.jsonl", "-o", "out.jsonl", "--text-field", "body", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    keep = MinHashDeduper().dedup(docs).keep
    assert (tmp_path / "out.jsonl").read_text().splitlines() == [line for line, k in zip(lines, keep) if k]


def test_jsonl_missing_field_names_file_and_line(tmp_path):
    (tmp_path / "in.jsonl").write_text('{"text": "a b c"}\n{"other": 1}\nnot json\n', encoding="utf-8")
    r = run("in.jsonl", "-o", "out.jsonl", cwd=tmp_path)
    assert r.returncode == 1 and "in.jsonl:2" in r.stderr and "'text'" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "out.jsonl").exists()
    r = run("in.jsonl", "-o", "out.jsonl", "--skip-invalid", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "2 invalid" in r.stdout and "in.jsonl:3" in r.stderr
    assert (tmp_path / "out.jsonl").read_text() == '{"text": "a b c"}\n'


def test_invalid_utf8_names_file_and_line(tmp_path):
    (tmp_path / "in.txt").write_bytes(b"fine line here\n\xff\xfe broken\n")
    r = run("in.txt", "-o", "out.txt", cwd=tmp_path)
    assert r.returncode == 1 and "in.txt:2" in r.stderr and "UTF-8" in r.stderr
    r = run("in.txt", "-o", "out.txt", "--skip-invalid", cwd=tmp_path)
    assert r.returncode == 0 and "1 invalid" in r.stdout


def test_files_format_writes_a_folder(tmp_path):
    docs = _docs(n=12, seed=2)
    src = tmp_path / "src"
    src.mkdir()
    paths = []
    for i, d in enumerate(docs):
        p = src / f"doc{i:02d}.txt"
        p.write_text(d, encoding="utf-8")
        paths.append(str(p))
    r = run(*paths, "--format", "files", "-o", "kept", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    keep = MinHashDeduper().dedup(docs).keep
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == [MANIFEST] + [
        f"doc{i:02d}.txt" for i, k in enumerate(keep) if k
    ]


def test_parquet_round_trip(tmp_path):
    import pyarrow as pa  # the `test` extra
    import pyarrow.parquet as pq

    docs = _docs(seed=3)
    pq.write_table(pa.table({"text": docs, "n": list(range(len(docs)))}), tmp_path / "in.parquet")
    r = run("in.parquet", "-o", "out.parquet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    keep = MinHashDeduper().dedup(docs).keep
    out = pq.read_table(tmp_path / "out.parquet")
    assert out.column("n").to_pylist() == [i for i, k in enumerate(keep) if k]


@pytest.mark.parametrize(
    "args,needle",
    [
        (["missing.txt", "-o", "o.txt"], "missing.txt"),
        (["in.txt", "-o", "o.txt", "--threshold", "1.5"], "'--threshold': 1.5 is not in the range"),
        (["in.txt", "-o", "o.txt", "--num-perm", "0"], "'--num-perm': 0 is not in the range"),
        (["in.txt", "-o", "o.txt", "--threads", "0"], "'--threads': 0 is not in the range"),
        (["in.txt", "-o", "o.txt", "--verify", "maybe"], "maybe"),
    ],
)
def test_bad_arguments_fail_cleanly(tmp_path, args, needle):
    (tmp_path / "in.txt").write_text("one two three four five six\n", encoding="utf-8")
    r = run(*args, cwd=tmp_path)
    assert r.returncode != 0 and needle in r.stderr and "Traceback" not in r.stderr
