"""`fastllm demo` (the whole pipeline, `fastllm.demo.run`) and `fastllm bench` (the benchmark suite as
one table)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

from fastllm.cli._errors import user_errors
from fastllm.cli._options import THREADS, count


@click.command("demo")
@click.option(
    "--out",
    "out",
    default="fastllm-demo",
    show_default=True,
    type=click.Path(path_type=Path),
    help="The report folder: report.md, plots, tokenizer.json, shards/, train/ (checkpoints, model), "
    "samples.md.",
)
@click.option(
    "--corpus",
    default=None,
    type=click.Path(path_type=Path),
    help="A file or folder of your own text (default: the Python standard library): a folder gives one "
    "document per file (.jsonl/.parquet files: per record), a file one per line (or record). Records "
    "that are not text are skipped and counted.",
)
@click.option(
    "--quick", is_flag=True, help="A small run that finishes in under a minute (what the tests run)."
)
@click.option(
    "--full",
    is_flag=True,
    help="The longer run: a 2.6M-parameter model on 256-token windows, 800 steps (several times the "
    "default's training time; the README has measured times).",
)
@click.option(
    "--resume", is_flag=True, help="Carry on an interrupted run in --out (finished stages are skipped)."
)
@click.option(
    "--device", default="auto", show_default=True, help="auto (cuda when present), cpu, cuda or cuda:N."
)
@click.option(
    "--threads",
    default=None,
    type=THREADS,
    help="torch CPU threads for training and generation (default: the faster of 1 and all, measured "
    "when training starts: 1 when another process keeps a core busy).",
)
@click.option(
    "--steps",
    "max_steps",
    default=None,
    type=count(1),
    help="Training steps (default 600; 800 with --full, 300 with --quick).",
)
@click.option("--max-docs", default=None, type=count(2), help="Read at most this many documents.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@user_errors
def demo_command(out, corpus, quick, full, resume, device, threads, max_steps, max_docs, quiet):
    """Dedup, tokenizer, token shards, pretraining and generation on one corpus, with a report.

    Ctrl-C stops cleanly after the current training step (or at once in the other stages) and
    keeps what finished; `fastllm demo --resume` carries on.
    """
    from fastllm.demo import DemoConfig, load_state

    if quick and full:
        raise click.UsageError("--quick and --full are two sizes of the demo: pass one of them")
    if resume and not (quick or full or corpus or max_steps or max_docs) and out.is_dir():
        state = load_state(out)  # `fastllm demo --resume` alone: carry on with the run's own settings
        if state is not None:
            cfg = DemoConfig.from_dict(state["settings"])
            return _run(cfg, out, resume, device, threads, quiet)
    overrides = {}
    if corpus is not None:
        overrides["corpus"] = str(corpus)
    if max_steps is not None:
        overrides["max_steps"] = max_steps
    if max_docs is not None:
        overrides["max_docs"] = max_docs
    make = DemoConfig.quick if quick else DemoConfig.full if full else DemoConfig
    _run(make(**overrides), out, resume, device, threads, quiet)


def _run(cfg, out: Path, resume: bool, device: str, threads: int | None, quiet: bool) -> None:
    from fastllm.demo import DemoInterrupted, run_demo

    t0 = time.perf_counter()
    try:
        run_demo(cfg, out, resume=resume, device=device, threads=threads, progress=not quiet, say=click.echo)
    except DemoInterrupted as e:
        click.echo(f"\n{e}", err=True)
        sys.exit(130)
    click.echo(f"demo finished in {time.perf_counter() - t0:.0f} s")


@click.command("bench")
@click.option(
    "--benches",
    "benches",
    default="benches",
    show_default=True,
    type=click.Path(path_type=Path),
    help="The benchmark folder of a fastllm checkout (pytest-benchmark files).",
)
@click.option("-k", "keyword", default=None, help="Only benchmarks matching this pytest -k expression.")
@click.option(
    "--json",
    "json_out",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also keep pytest-benchmark's JSON here.",
)
@user_errors
def bench_command(benches, keyword, json_out):
    """Run the benchmark suite (`pytest BENCHES --benchmark-only`) and print one table per group:
    every fast path, its baseline, the installed peers, medians and ratios."""
    benches = benches.resolve()
    report = benches / "report.py"
    if not report.is_file():
        raise ValueError(
            f"no benchmark suite at {str(benches)!r} (expected report.py there); run from a fastllm "
            "checkout or pass --benches PATH"
        )
    with tempfile.TemporaryDirectory(prefix="fastllm-bench-") as tmp:
        result = Path(json_out) if json_out else Path(tmp) / "bench.json"
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            str(benches),
            "--benchmark-only",
            f"--benchmark-json={result}",
            "-q",
            "-p",
            "no:cacheprovider",
        ]
        if keyword:
            cmd += ["-k", keyword]
        run = subprocess.run(cmd, cwd=benches.parent)
        if run.returncode not in (0, 5) or not result.is_file():
            raise click.ClickException(f"the benchmarks failed (pytest exit status {run.returncode})")
        subprocess.run([sys.executable, str(report), str(result)], cwd=benches.parent, check=True)
