"""Markdown tables from a pytest-benchmark run of benches/ (for the README).

    python benches/report.py                 # runs `pytest benches --benchmark-only` first
    python benches/report.py results.json    # or reads a run saved with --benchmark-json

One table per benchmark group: median seconds, MB/s, time relative to the fastest fastllm row of
the group (1.00x = as fast as fastllm; 8.00x = eight times slower), speed-up over the pure-Python
baseline where the group has one, and peak RSS of the job run alone in a fresh process.
Training groups (rows with tokens_per_s, benches/bench_train.py) get their own table: tokens/s
and the speed-up over the plain PyTorch reference in fp32 and under bf16 autocast.
The generation group (rows with ms_per_token, benches/bench_generate.py) gets tokens/s, ms per
token, mean time to first token and the ratios issue #5 sets targets for.
The report opens with the corpus the run used (rows' extra_info["corpus"]: imdb_reviews_train.txt
from ../shared/data, or the standard-library corpus a clone without it falls back to; see
benches/conftest.py), and each table that read it names it in its heading.
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
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "benches",
        "--benchmark-only",
        f"--benchmark-json={out}",
        "-q",
        *extra_args,
    ]
    subprocess.run(cmd, cwd=REPO, check=True)


def fmt_seconds(s: float) -> str:
    return f"{s:.3f}" if s >= 0.01 else f"{s * 1e3:.2f} ms"


def table(rows: list[dict]) -> str:
    fastllm = min(
        (r["stats"]["median"] for r in rows if r["extra_info"].get("impl") == "fastllm"), default=None
    )
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
        cells = [
            name,
            fmt_seconds(median),
            f"{mb / median:.3g}" if mb else "",
            f"{median / fastllm:.2f}x" if fastllm else "",
        ]
        if baseline:
            cells.append(f"{baseline / median:.0f}x")
        rss = info.get("peak_rss_mb")
        cells.append(f"{rss:.0f}" if rss is not None else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def train_table(rows: list[dict]) -> str:
    """tokens/s per row, speed-up over the plain reference in fp32 and under bf16 autocast, peak RSS."""

    def plain(case: str) -> float | None:
        return next(
            (r["extra_info"]["tokens_per_s"] for r in rows if r["extra_info"].get("case") == case), None
        )

    fp32, bf16 = plain("plain_fp32"), plain("plain_bf16")
    head = [
        "implementation",
        "median s / round",
        "tokens/s",
        "vs plain fp32",
        "vs plain bf16 autocast",
        "peak RSS MB",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(rows, key=lambda r: -r["extra_info"]["tokens_per_s"]):
        info, tps = r["extra_info"], r["extra_info"]["tokens_per_s"]
        name = (
            f"{info.get('impl', r['name'])} ({info['variant']})"
            if info.get("variant")
            else info.get("impl", r["name"])
        )
        if info.get("resolved_dtype"):
            name += f" [{info['resolved_dtype']}]"
        rss = info.get("peak_rss_mb")
        cells = [
            name,
            fmt_seconds(r["stats"]["median"]),
            f"{tps:,.0f}",
            f"{tps / fp32:.2f}x" if fp32 else "",
            f"{tps / bf16:.2f}x" if bf16 else "",
            f"{rss:.0f}" if rss is not None else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def train_heading(name: str, rows: list[dict]) -> str:
    info = rows[0]["extra_info"]
    notes = [
        f"{info['tokens']:,} tokens per round" if info.get("tokens") else "",
        f"{info.get('threads', 1)} torch thread",
    ]
    if info.get("params"):
        notes.append(f"{info['params'] / 1e6:.1f}M parameters")
    notes.append(
        "AMX bf16: yes"
        if info.get("amx_bf16")
        else "no AMX: bf16 matmuls are slower than fp32 here, compare the fp32 rows"
    )
    if info.get("floor_rss_mb"):
        notes.append(f"interpreter with torch imported: {info['floor_rss_mb']:.0f} MB")
    return f"\n### {name} (" + "; ".join(n for n in notes if n) + ")\n\n" + train_table(rows)


GEN_ORDER = (
    "recompute",
    "transformers",
    "fastllm_cache",
    "weights_floor",
    "shared_prefix_sequential",
    "shared_prefix_engine_noprefix",
    "shared_prefix_engine",
)


def gen_table(rows: list[dict]) -> str:
    """Generation rows: tokens/s, per-token latency, TTFT, then the ratios between rows."""

    def order(r: dict) -> tuple:
        info = r["extra_info"]
        case = info.get("case", "")
        shared = case.startswith("shared_prefix")
        return (
            shared,
            0 if shared else info.get("batch", 0),
            GEN_ORDER.index(case) if case in GEN_ORDER else 99,
        )

    head = ["row", "batch", "new tokens / seq", "median s", "tokens/s", "ms/token per seq", "mean TTFT ms"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(rows, key=order):
        info = r["extra_info"]
        name = info.get("case", r["name"])
        if info.get("attn_implementation"):
            name += f" ({info['attn_implementation']} attention)"
        ttft = info.get("mean_ttft_ms")
        cells = [
            name,
            str(info.get("batch", "")),
            str(info.get("new_tokens", "")),
            fmt_seconds(r["stats"]["median"]),
            f"{info['tokens_per_s']:,.0f}",
            f"{info['ms_per_token']:.2f}",
            f"{ttft:,.0f}" if ttft is not None else "n/a",
        ]
        lines.append("| " + " | ".join(cells) + " |")

    def get(case: str, batch: int | None = None) -> dict | None:
        return next(
            (
                r["extra_info"]
                for r in rows
                if r["extra_info"].get("case") == case
                and (batch is None or r["extra_info"].get("batch") == batch)
            ),
            None,
        )

    ratios = []

    def ratio(
        label: str,
        num: dict | None,
        den: dict | None,
        key: str = "tokens_per_s",
        target: float | None = None,
        at_most: bool = False,
    ) -> None:
        if not num or not den or not den.get(key) or num.get(key) is None:
            return
        x = num[key] / den[key]
        note = ""
        if target is not None:
            met = x <= target if at_most else x >= target
            note = f" (target {'<=' if at_most else '>='} {target:g}x: {'met' if met else 'NOT met'})"
        ratios.append(f"- {label}: {x:.2f}x{note}")

    batches = sorted(
        {r["extra_info"]["batch"] for r in rows if not r["extra_info"].get("case", "").startswith("shared")}
    )
    for b in batches:
        ratio(
            f"fastllm_cache / transformers tokens/s, batch {b}",
            get("fastllm_cache", b),
            get("transformers", b),
            target=2.0 if b == 1 else None,
        )
    for b in batches:
        ratio(f"fastllm_cache / recompute tokens/s, batch {b}", get("fastllm_cache", b), get("recompute", b))
    for b in batches:
        ratio(
            f"weights_floor (the weight matmuls alone, through torch) / transformers tokens/s, batch {b}",
            get("weights_floor", b),
            get("transformers", b),
        )
        ratio(
            f"fastllm_cache / weights_floor tokens/s, batch {b}",
            get("fastllm_cache", b),
            get("weights_floor", b),
        )
    seq = get("shared_prefix_sequential")
    ratio(
        "shared prefix: engine / sequential generate tokens/s", get("shared_prefix_engine"), seq, target=5.0
    )
    ratio(
        "shared prefix: engine without prefix caching / sequential tokens/s",
        get("shared_prefix_engine_noprefix"),
        seq,
    )
    ratio(
        "shared prefix: mean TTFT engine / engine without prefix caching",
        get("shared_prefix_engine"),
        get("shared_prefix_engine_noprefix"),
        key="mean_ttft_ms",
        target=0.5,
        at_most=True,
    )
    ratio(
        "shared prefix: mean TTFT engine / sequential", get("shared_prefix_engine"), seq, key="mean_ttft_ms"
    )
    return "\n".join(lines) + ("\n\n" + "\n".join(ratios) if ratios else "")


def gen_heading(name: str, rows: list[dict]) -> str:
    info = rows[0]["extra_info"]
    notes = [f"{info.get('threads', 1)} torch thread", "greedy", info.get("dtype", "float32")]
    if info.get("params"):
        notes.append(f"{info['params'] / 1e6:.1f}M parameters, the same weights in every row")
    batch = next(
        (r["extra_info"] for r in rows if not r["extra_info"].get("case", "").startswith("shared")), None
    )
    if batch:
        notes.append(f"batch rows: {batch['prompt_tokens']}-token prompts")
    shared = next(
        (r["extra_info"] for r in rows if r["extra_info"].get("case", "").startswith("shared")), None
    )
    if shared:
        notes.append(
            f"shared-prefix rows: {shared['requests']} requests of a {shared['system_prompt_tokens']}-token "
            f"system prompt + {shared['prompt_tokens'] - shared['system_prompt_tokens']} tokens"
        )
    legend = (
        "ms/token per seq: batch rows, median seconds / new tokens (one sequence's per-token latency, "
        "prefill included); shared-prefix rows, mean time per output token after the first. TTFT: "
        "sequential row, from the start of the whole run to the request's first token (the requests "
        "before it included); engine rows, the Engine's submission-to-first-token time."
    )
    return f"\n### {name} (" + "; ".join(notes) + ")\n\n" + gen_table(rows) + "\n\n" + legend


def summary(groups: dict[str, list[dict]]) -> str:
    """One table over every group: fastllm's row, the baseline's and the peers', with ratios
    (time ratios for timed groups, tokens/s ratios for training and generation groups)."""
    lines = [
        "| group | fastllm | baseline | peers (ratio: how many times fastllm's speed is theirs) |",
        "|---|---|---|---|",
    ]
    for name in sorted(groups):
        rows = groups[name]
        if all("tokens_per_s" in r["extra_info"] for r in rows):
            # throughput groups: compare like with like (same case and batch), fastllm's fastest row
            def key(r: dict) -> tuple:
                info = r["extra_info"]
                return (info.get("batch"), info.get("requests"))

            label = lambda r: r["extra_info"].get("case") or r["extra_info"].get("variant") or r["name"]  # noqa: E731
            for k in sorted({key(r) for r in rows}, key=str):
                same = [r for r in rows if key(r) == k and r["extra_info"].get("impl") != "bound"]
                mine = [r for r in same if r["extra_info"].get("impl") == "fastllm"]
                if not mine:
                    continue
                best = max(mine, key=lambda r: r["extra_info"]["tokens_per_s"])
                tps = best["extra_info"]["tokens_per_s"]
                others = sorted(
                    (r for r in same if r is not best), key=lambda r: -r["extra_info"]["tokens_per_s"]
                )
                peers = ", ".join(
                    f"{label(r)} {r['extra_info']['tokens_per_s']:,.0f} tok/s "
                    f"({tps / r['extra_info']['tokens_per_s']:.2f}x)"
                    for r in others
                )
                where = f" (batch {k[0]})" if k[0] is not None else ""
                lines.append(f"| {name}{where} | {label(best)} {tps:,.0f} tok/s | | {peers} |")
            continue
        mine = [r for r in rows if r["extra_info"].get("impl") == "fastllm"]
        if not mine:
            continue

        def named(r: dict) -> str:
            info = r["extra_info"]
            return info.get("impl", r["name"]) + (f" ({info['variant']})" if info.get("variant") else "")

        best = min(mine, key=lambda r: r["stats"]["median"])
        fast = best["stats"]["median"]
        base = [r for r in rows if r["extra_info"].get("impl") == "reference"]
        peers = [r for r in rows if r["extra_info"].get("impl") not in ("fastllm", "reference")]
        b = (
            f"{fmt_seconds(base[0]['stats']['median'])} ({base[0]['stats']['median'] / fast:.1f}x)"
            if base
            else ""
        )
        p = ", ".join(
            f"{named(r)} {fmt_seconds(r['stats']['median'])} ({r['stats']['median'] / fast:.1f}x)"
            for r in sorted(peers, key=lambda r: r["stats"]["median"])
        )
        lines.append(f"| {name} | {named(best)} {fmt_seconds(fast)} | {b} | {p} |")
    return "\n".join(lines)


def corpora(rows: list[dict]) -> list[str]:
    """The distinct corpora the rows ran on, in order of appearance."""
    return list(dict.fromkeys(r["extra_info"]["corpus"] for r in rows if r["extra_info"].get("corpus")))


def corpus_line(rows: list[dict]) -> str:
    names = corpora(rows)
    if not names:
        return "Corpus: none (these groups run on random token ids)."
    return (
        "Corpus: "
        + "; ".join(names)
        + " (the tokenizer groups read it, the dedup groups draw their documents from its words; "
        "training and generation run on random token ids)."
    )


def report(data: dict) -> str:
    groups: dict[str, list[dict]] = defaultdict(list)
    for bench in data["benchmarks"]:
        groups[bench.get("group") or "ungrouped"].append(bench)
    machine = data.get("machine_info", {})
    cpu = machine.get("cpu", {}).get("brand_raw", "unknown CPU")
    out = [
        f"Machine: {cpu}, {os.cpu_count()} logical cores here; Python {machine.get('python_version', '?')}.",
        corpus_line(data["benchmarks"]),
    ]
    floor = next(
        (
            b["extra_info"]["interpreter_rss_mb"]
            for b in data["benchmarks"]
            if b["extra_info"].get("interpreter_rss_mb")
        ),
        None,
    )
    if floor:
        out.append(
            f"Peak RSS is the whole process; the interpreter alone (with benches/tasks.py imported) "
            f"is {floor:.0f} MB."
        )
    out.append("\n### Summary (every group; the tables after it have the details)\n\n" + summary(groups))
    for name in sorted(groups):
        if all("ms_per_token" in b["extra_info"] for b in groups[name]):
            out.append(gen_heading(name, groups[name]))
            continue
        if all("tokens_per_s" in b["extra_info"] for b in groups[name]):
            out.append(train_heading(name, groups[name]))
            continue
        mb = groups[name][0]["extra_info"].get("MB")
        notes = [f"{mb:.2f} MB of input" if mb else "", ", ".join(corpora(groups[name]))]
        notes = [n for n in notes if n]
        out.append(
            f"\n### {name}" + (f" ({'; '.join(notes)})" if notes else "") + "\n\n" + table(groups[name])
        )
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
