"""Running the real `fastllm` command in a subprocess, as a user does (`python -m fastllm`)."""

from __future__ import annotations

import subprocess
import sys


def fastllm(*args, cwd=None, env=None) -> subprocess.CompletedProcess:
    """`fastllm ARGS` in a child process (text output, 5-minute limit)."""
    return subprocess.run(
        [sys.executable, "-m", "fastllm", *map(str, args)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
        cwd=cwd,
        env=env,
    )
