"""Markdown tables from a pytest-benchmark run of benches/ (for the README).

    python benches/report.py                 # runs `pytest benches --benchmark-only` first
    python benches/report.py results.json    # or reads a run saved with --benchmark-json

One table per benchmark group: median seconds, MB/s, time relative to the fastest fastllm row of
the group (1.00x = as fast as fastllm; 8.00x = eight times slower), speed-up over the pure-Python
baseline where the group has one, and peak RSS of the job run alone in a fresh process.
Training groups (rows with tokens_per_s, benches/bench_train.py) get their own table: tokens/s
and the speed-up over the plain PyTorch reference in fp32 and under bf16 autocast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_benchmarks(out: Path, extra_args: list[str]) -> None:
    cmd = [sys.executable, "-m", "pytest", "benches", "--benchmark-only", f"--benchmark-json={out}", "-q", *extra_args]
    subprocess.run(cmd, cwd=REPO, check=True)


def fmt_seconds(s: float) -> str:
    return f"{s:.3f}" if s >= 0.01 else f"{s * 1e3:.2f} ms"


def table(rows: list[dict]) -> str:
    fastllm = min((r["stats"]["median"] for r in rows if r["extra_info"].get("impl") == "fastllm"), default=None)
    baseline = next((r["stats"]["median"] for r in rows if r["extra_info"].get("impl") == "reference"), None)
    head = ["implementation", "median s", "MB/s", "time vs fastllm"]
    head += ["speed-up vs Python baseline"] if baseline else []
    head += ["peak RSS MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(rows, key=lambda r: r["stats"]["median"]):
        info, median = r["extra_info"], r["stats"]["median"]
        name = info.get("impl", r["name"])
        if info.get("variant"):
            name += f" ({info['variant']})"
        if info.get("same_ids_as_tiktoken") is False:
            name += " [ids differ from tiktoken]"
        mb = info.get("MB")
        cells = [name, fmt_seconds(median), f"{mb / median:.3g}" if mb else "", f"{median / fastllm:.2f}x" if fastllm else ""]
        if baseline:
            cells.append(f"{baseline / median:.0f}x")
        rss = info.get("peak_rss_mb")
        cells.append(f"{rss:.0f}" if rss is not None else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def train_table(rows: list[dict]) -> str:
    """tokens/s per row, speed-up over the plain reference in fp32 and under bf16 autocast, peak RSS."""
    def plain(case: str) -> float | None:
        return next((r["extra_info"]["tokens_per_s"] for r in rows if r["extra_info"].get("case") == case), None)

    fp32, bf16 = plain("plain_fp32"), plain("plain_bf16")
    head = ["implementation", "median s / round", "tokens/s", "vs plain fp32", "vs plain bf16 autocast", "peak RSS MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(rows, key=lambda r: -r["extra_info"]["tokens_per_s"]):
        info, tps = r["extra_info"], r["extra_info"]["tokens_per_s"]
        name = f"{info.get('impl', r['name'])} ({info['variant']})" if info.get("variant") else info.get("impl", r["name"])
        if info.get("resolved_dtype"):
            name += f" [{info['resolved_dtype']}]"
        rss = info.get("peak_rss_mb")
        cells = [name, fmt_seconds(r["stats"]["median"]), f"{tps:,.0f}", f"{tps / fp32:.2f}x" if fp32 else "",
                 f"{tps / bf16:.2f}x" if bf16 else "", f"{rss:.0f}" if rss is not None else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def train_heading(name: str, rows: list[dict]) -> str:
    info = rows[0]["extra_info"]
    notes = [f"{info['tokens']:,} tokens per round" if info.get("tokens") else "", f"{info.get('threads', 1)} torch thread"]
    if info.get("params"):
        notes.append(f"{info['params'] / 1e6:.1f}M parameters")
    notes.append("AMX bf16: yes" if info.get("amx_bf16") else "no AMX: bf16 matmuls are slower than fp32 here, compare the fp32 rows")
    if info.get("floor_rss_mb"):
        notes.append(f"interpreter with torch imported: {info['floor_rss_mb']:.0f} MB")
    return f"\n### {name} (" + "; ".join(n for n in notes if n) + ")\n\n" + train_table(rows)


def report(data: dict) -> str:
    groups: dict[str, list[dict]] = defaultdict(list)
    for bench in data["benchmarks"]:
        groups[bench.get("group") or "ungrouped"].append(bench)
    machine = data.get("machine_info", {})
    cpu = machine.get("cpu", {}).get("brand_raw", "unknown CPU")
    out = [f"Machine: {cpu}, {os.cpu_count()} logical cores here; Python {machine.get('python_version', '?')}."]
    floor = next((b["extra_info"]["interpreter_rss_mb"] for b in data["benchmarks"] if b["extra_info"].get("interpreter_rss_mb")), None)
    if floor:
        out.append(f"Peak RSS is the whole process; the interpreter alone (with benches/tasks.py imported) is {floor:.0f} MB.")
    for name in sorted(groups):
        if all("tokens_per_s" in b["extra_info"] for b in groups[name]):
            out.append(train_heading(name, groups[name]))
            continue
        mb = groups[name][0]["extra_info"].get("MB")
        out.append(f"\n### {name}" + (f" ({mb:.2f} MB of input)" if mb else "") + "\n\n" + table(groups[name]))
    return "\n".join(out)


def main(argv: list[str]) -> None:
    if argv and argv[0].endswith(".json"):
        data = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "bench.json"
            run_benchmarks(out, argv)
            data = json.loads(out.read_text(encoding="utf-8"))
    print(report(data))


if __name__ == "__main__":
    main(sys.argv[1:])
