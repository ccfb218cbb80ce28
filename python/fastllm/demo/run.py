"""`fastllm demo`: the whole pipeline on one corpus, stage by stage, into one report folder.

`run_demo` runs the five stages of `fastllm.demo.stages` in order (each a function of the earlier
stages' files, so every output is reusable by the other commands), records each finished stage in
`state.json` (`fastllm.demo.state`) and ends with the report (`report.md` + PNG plots,
`fastllm.demo.report`). Ctrl-C keeps the finished stages; `--resume` skips them (the train stage
continues from its newest checkpoint) and refuses to mix settings.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastllm._checks import check_optional_int, check_type
from fastllm.demo import stages
from fastllm.demo.state import DemoConfig, save_state, start_state

__all__ = ["DemoInterrupted", "DemoResult", "run_demo"]


class DemoInterrupted(Exception):
    """Ctrl-C during a stage: what finished is kept; `fastllm demo --resume` carries on."""

    def __init__(self, stage: str, out: Path) -> None:
        super().__init__(
            f"interrupted during the {stage} stage; the finished stages are kept in {str(out)!r}: "
            f"run `fastllm demo --resume --out {out}` to carry on"
        )
        self.stage = stage


@dataclass
class DemoResult:
    out: Path
    state: dict[str, Any] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)  # the stages this call ran (the others were done before)


def run_demo(
    cfg: DemoConfig,
    out: str | os.PathLike[str],
    *,
    resume: bool = False,
    device: str = "auto",
    threads: int | None = None,
    progress: bool = True,
    say: Callable[[str], None] = print,
) -> DemoResult:
    """Run (or, with `resume`, carry on) the demo into folder `out`; writes report.md at the end.

    `device` is resolved before anything runs (`cuda` on a machine without one fails at once);
    `threads` is torch's CPU thread count for training and generation (None: the train stage
    measures 1 against torch's default, `stages.choose_threads`). Each stage's wall time goes into
    `state.json` (`timings`) and the report.

    Raises DemoInterrupted on Ctrl-C (the finished stages are kept), ValueError for bad settings,
    a device this machine lacks, a corpus that is empty, or an `out` that holds another run (or
    none, with `resume`)."""
    from fastllm.demo.report import generate_command, write_report
    from fastllm.train.device import resolve_device

    check_type(cfg, "cfg", DemoConfig)
    out = Path(out)
    check_type(device, "device", str)
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    threads = check_optional_int(threads, "threads", minimum=1)
    resolved = str(resolve_device(device))  # before any stage: no CUDA fails now, not after three
    state = start_state(out, cfg, resume)
    out.mkdir(parents=True, exist_ok=True)
    save_state(out, state)
    result = DemoResult(out, state)
    timings = state.setdefault("timings", {})
    for name in stages.STAGES:
        if name in state["stages"]:
            say(f"{name}: done before (resumed)")
            continue
        stage = getattr(stages, f"stage_{name}")
        t0 = time.perf_counter()
        try:
            state["stages"][name] = stage(
                cfg, out, say=say, progress=progress, device=resolved, threads=threads
            )
        except KeyboardInterrupt:
            raise DemoInterrupted(name, out) from None
        timings[name] = time.perf_counter() - t0
        result.ran.append(name)
        save_state(out, state)
    write_report(out, state)
    if "train" in state["stages"] and "tokenize" in state["stages"]:
        tr, tk = state["stages"]["train"], state["stages"]["tokenize"]
        verdict = "below" if tr["val_loss"] < tk["unigram_entropy"] else "NOT below"
        say(
            f"report: {out / 'report.md'} (val loss {tr['val_loss']:.3f} nats/token, {verdict} the "
            f"unigram entropy {tk['unigram_entropy']:.3f})"
        )
    if "generate" in state["stages"]:  # paths as given: they work from where the demo was run
        say(f"try: {generate_command(out, cfg.sample_prompts[0])}")
    return result
