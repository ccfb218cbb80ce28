"""Every CPU path works without triton, with the same numbers.

triton ships with the CUDA builds of torch on Linux but is needed only by the Triton kernels on a
GPU; fastllm does not depend on it (checked in pyproject.toml here), and a machine with CPU-only
torch has none. tests/cpu_paths_worker.py runs import, tokenizer training and encoding, tokenizing
into shards, training and evaluating a tiny MiniGPT, `generate`, the Engine, `fastllm.attention` and
the CLI (`tokenizer train`, `tokenize`, `train`, `eval`, `generate`) in a fresh process, once as
the environment is and once with triton made unimportable (`sys.modules["triton"] = None`).

Oracle: the run with triton available: every id, loss and attention value must be the same.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
WORKER = HERE / "cpu_paths_worker.py"
PYPROJECT = HERE.parent / "pyproject.toml"


def _start(mode: str, out: Path) -> subprocess.Popen:
    out.mkdir()
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # the CPU paths, also on a machine with a GPU
    return subprocess.Popen(
        [sys.executable, str(WORKER), mode, str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        env=env,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict]:
    base = tmp_path_factory.mktemp("cpu-paths")
    procs = {mode: _start(mode, base / mode) for mode in ("blocked", "plain")}  # side by side
    results = {}
    for mode, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{mode}: {stderr[-4000:]}"
        results[mode] = json.loads(stdout.strip().splitlines()[-1])
    return results


def test_fastllm_does_not_depend_on_triton():
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10: tomli, a dependency there
        import tomli as tomllib
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    assert not [r for r in requirements if r.lower().startswith("triton")], requirements


def test_blocked_run_had_no_triton(runs):
    blocked = runs["blocked"]
    assert blocked["triton_blocked"]
    assert blocked["kernels_available"] is False
    assert blocked["kernel_error"].startswith("ImportError: fastllm.kernels needs triton")
    assert blocked["torch_after_import"] is False  # `import fastllm` + BPETokenizer: no torch yet


def test_every_cpu_path_gives_the_same_numbers_without_triton(runs):
    blocked, plain = runs["blocked"], runs["plain"]
    compared = [k for k in plain if k not in ("triton_blocked", "kernels_available", "kernel_error")]
    assert set(compared) <= set(blocked)
    for key in compared:
        assert blocked[key] == plain[key], key
    # and the runs did real work: a trained tokenizer, a finite loss, tokens generated
    assert 0 < len(plain["merges"]) <= 300 - 256 - 1  # the corpus runs out of pairs before 300
    assert 0 < plain["train_loss"] < 10 and 0 < plain["cli_eval"]["loss"] < 10
    assert plain["generate"][: len(plain["prompt"])] == plain["prompt"]
    assert len(plain["generate"]) == len(plain["prompt"]) + 8 and len(plain["engine"]) == 8
    assert plain["cli_generate"].startswith("the quick")
