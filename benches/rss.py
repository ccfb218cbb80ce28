"""Peak memory of one benchmark job, measured alone in a fresh interpreter.

`ru_maxrss` of a child carries the parent's peak across exec on Linux, so each task script
(tasks.py, dedup_tasks.py) reports its own VmHWM on its last stdout line as JSON.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path


def child_peak_rss(script: Path, task: str, params: dict) -> float | None:
    """Run `script task params` once and return its peak RSS in MB (None if FASTLLM_BENCH_RSS=0)."""
    if os.environ.get("FASTLLM_BENCH_RSS", "1") == "0":
        return None
    out = subprocess.run(
        [sys.executable, str(script), task, json.dumps(params)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mb"]


@functools.cache
def interpreter_rss(script: Path) -> float | None:
    """Peak RSS of the interpreter with `script` imported and no job run (the baseline to subtract)."""
    return child_peak_rss(script, "noop", {})
