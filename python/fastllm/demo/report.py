"""The demo's report: `report.md` and its PNG plots, written from `state.json` alone.

Plots (matplotlib, Agg backend, each written atomically with `fastllm._io`):
- `loss.png`: training loss per logged step and validation loss per evaluation, with the unigram
  entropy of the training tokens as a line (a model below it uses context);
- `dedup_clusters.png`: how many duplicate clusters have each size;
- `tokenizer_compression.png`: bytes per token against vocabulary size (held-out documents);
- `generation_throughput.png`: greedy generation tokens/s against batch size (KV cache), each point
  marked with the decode step that ran it (batch 1: the Rust one-sequence step; larger: PyTorch).

Paths in the report are absolute, so its commands work from any folder; the demo's last line gives
the same command with the paths as the user wrote them, for the folder the demo was run from.
"""

from __future__ import annotations

import json
import os
import shlex
from collections import Counter
from pathlib import Path
from typing import Any

from fastllm._io import atomic_path, write_atomic

PLOTS = ("loss.png", "dedup_clusters.png", "tokenizer_compression.png", "generation_throughput.png")
STEP_NAMES = {"rust": "Rust one-sequence step", "torch": "PyTorch batched step"}
# Why batch 2 is slower than batch 1: said next to the table and on the plot, so the dip does not
# read as a fault.
CLIFF_NOTE = (
    "Batch 1 runs the Rust one-sequence decode step (one native call per token); larger batches run "
    "the PyTorch batched step, which costs more per step at this model size, so tokens/s drops from "
    "batch 1 to batch 2 and climbs again with the batch. That dip is the switch between the two "
    "steps, not a fault; a later release gives every batch size the fast step."
)


def generate_command(out: str | os.PathLike[str], prompt: str) -> str:
    """The `fastllm generate` command for the demo's model in `out`, paths joined onto `out` as
    given (a relative `out` gives a command for the folder it is relative to), shell-quoted.

    >>> generate_command("my demo", "def ")
    "fastllm generate 'def ' --checkpoint 'my demo/train/model' --tokenizer 'my demo/tokenizer.json'"
    """
    base = Path(out)
    return (
        f"fastllm generate {shlex.quote(prompt)} --checkpoint {shlex.quote(str(base / 'train' / 'model'))} "
        f"--tokenizer {shlex.quote(str(base / 'tokenizer.json'))}"
    )


def _save(fig: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def _curve(plt: Any, path: Path, xs: list, ys: list, xlabel: str, ylabel: str, title: str) -> None:
    """y against x on a log2 x axis, one point per measurement."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(xs, ys, "o-")
    ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    _save(fig, path)
    plt.close(fig)


def _plots(out: Path, stages: dict[str, Any]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    made = []
    if "train" in stages:
        hist = stages["train"]["history"]
        ev = stages["train"].get("eval")
        fig, ax = plt.subplots(figsize=(6, 3.6))
        train = [(r["step"], r["loss"]) for r in hist if "loss" in r]
        val = [(r["step"], r["val_loss"]) for r in hist if "val_loss" in r]
        if train:
            ax.plot(*zip(*train), label="train loss (mean of the steps since the last point)")
        if val:
            what = f"{ev['windows']:,} sampled windows" if ev and ev["sampled"] else "whole split"
            ax.plot(*zip(*val), "o-", label=f"validation loss ({what})")
        if "tokenize" in stages:
            ax.axhline(stages["tokenize"]["unigram_entropy"], color="gray", ls="--", label="unigram entropy")
        ax.set_xlabel("step")
        ax.set_ylabel("nats / token")
        ax.legend()
        ax.set_title("MiniGPT pretraining")
        _save(fig, out / "loss.png")
        plt.close(fig)
        made.append("loss.png")
    if "dedup" in stages:
        sizes = Counter(stages["dedup"]["cluster_sizes"])
        fig, ax = plt.subplots(figsize=(6, 3.6))
        if sizes:
            xs = sorted(sizes)
            ax.bar([str(x) for x in xs], [sizes[x] for x in xs])
        else:
            ax.text(0.5, 0.5, "no duplicate clusters", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("documents in the cluster")
        ax.set_ylabel("clusters")
        ax.set_title("Near-duplicate clusters (MinHash + LSH, exact Jaccard)")
        _save(fig, out / "dedup_clusters.png")
        plt.close(fig)
        made.append("dedup_clusters.png")
    if "tokenizer" in stages:
        curve = stages["tokenizer"]["compression"]
        _curve(
            plt,
            out / "tokenizer_compression.png",
            [c["vocab_size"] for c in curve],
            [c["bytes_per_token"] for c in curve],
            "vocabulary size",
            "bytes / token (held-out documents)",
            "Tokenizer compression",
        )
        made.append("tokenizer_compression.png")
    if "generate" in stages:
        rows = stages["generate"]["throughput"]
        fig, ax = plt.subplots(figsize=(6, 3.6))
        ax.plot([r["batch"] for r in rows], [r["tokens_per_s"] for r in rows], "-", color="gray", lw=1)
        for step, marker in (("rust", "s"), ("torch", "o")):
            mine = [r for r in rows if r.get("step", "torch") == step]
            if mine:
                xs, ys = [r["batch"] for r in mine], [r["tokens_per_s"] for r in mine]
                ax.plot(xs, ys, marker, ms=7, label=STEP_NAMES[step])
        ax.set_xscale("log", base=2)
        ax.set_xticks([r["batch"] for r in rows], [str(r["batch"]) for r in rows])
        ax.minorticks_off()
        ax.set_xlabel("batch size")
        ax.set_ylabel("tokens / s")
        ax.set_title("Greedy generation with the KV cache")
        ax.legend(title="decode step", fontsize=8)
        if len({r.get("step", "torch") for r in rows}) > 1:
            ax.text(
                0.0,
                -0.24,
                "Batch 1 has the Rust step, larger batches the slower PyTorch one: the dip is that switch.",
                transform=ax.transAxes,
                fontsize=7,
            )
        _save(fig, out / "generation_throughput.png")
        plt.close(fig)
        made.append("generation_throughput.png")
    return made


def _evaluated(ev: dict[str, Any] | None, perplexity: float, context: int) -> str:
    """The validation loss's perplexity, standard error and what it is over, as the end of a sentence."""
    if not ev:  # a run recorded before the figures existed
        return f"(perplexity {perplexity:.1f})."
    if not ev["sampled"]:
        return (
            f"(perplexity {perplexity:.1f}) over the whole validation split: all {ev['windows']:,} "
            f"windows of {context} tokens."
        )
    err = f"; standard error {ev['stderr']:.3f}" if ev.get("stderr") is not None else ""
    return (
        f"(perplexity {perplexity:.1f}{err}) over {ev['windows']:,} windows of {context} tokens "
        f"({ev['tokens']:,} tokens) drawn at random with seed {ev['seed']} from the "
        f"{ev['of_windows']:,} windows ({ev['split_tokens']:,} tokens) of the validation split, the "
        "same windows at every evaluation."
    )


def write_report(out: Path, state: dict[str, Any]) -> Path:
    """Write the plots and `report.md` for whatever stages `state` holds; returns the report's path."""
    st = state["stages"]
    made = _plots(out, st)
    s = state["settings"]
    md = ["# fastllm demo report", ""]
    md += ["Settings: " + ", ".join(f"{k}={json.dumps(v)}" for k, v in s.items() if v is not None), ""]
    if "dedup" in st:
        d = st["dedup"]
        skipped = ""
        if d.get("invalid"):  # runs recorded before the count existed have none
            first = "; ".join(f"`{r}`" for r in d["invalid_examples"])
            skipped = f" {d['invalid']:,} records that are not text were skipped (first: {first})."
        md += [
            "## 1. Deduplication",
            "",
            f"Corpus: {d['corpus']}.{skipped}",
            "",
            "| documents in | out | exact duplicates removed | near duplicates removed | clusters "
            "| MB in | MB out | seconds |",
            "|---|---|---|---|---|---|---|---|",
            f"| {d['docs_in']:,} | {d['docs_out']:,} | {d['exact_duplicates']:,} | "
            f"{d['near_duplicates']:,} | {d['clusters']:,} | {d['bytes_in'] / 1e6:.2f} | "
            f"{d['bytes_out'] / 1e6:.2f} | {d['seconds']:.2f} |",
            "",
        ]
        if d["largest_clusters"]:
            md += ["Largest clusters (first member kept):", ""]
            md += [
                f"- {c['size']} members: "
                + ", ".join(f"`{m}`" for m in c["members"])
                + (", ..." if c["size"] > 4 else "")
                for c in d["largest_clusters"]
            ]
            md += [""]
        md += ["![cluster sizes](dedup_clusters.png)", ""]
    if "tokenizer" in st:
        t = st["tokenizer"]
        md += [
            "## 2. Tokenizer",
            "",
            f"Byte-level BPE, GPT-4 split, vocabulary {t['vocab_size']:,} (`tokenizer.json`, Hugging "
            f"Face format): {t['bytes_per_token']:.2f} bytes per token over the deduplicated corpus, "
            f"trained in {t['seconds']:.2f} s.",
            "",
            "| vocabulary size | bytes / token (held-out tenth) |",
            "|---|---|",
        ]
        md += [f"| {c['vocab_size']:,} | {c['bytes_per_token']:.3f} |" for c in t["compression"]]
        md += ["", "![compression](tokenizer_compression.png)", ""]
    if "tokenize" in st:
        k = st["tokenize"]
        md += [
            "## 3. Token shards",
            "",
            f"`shards/`: {k['tokens']['train']:,} train and {k['tokens']['val']:,} validation tokens "
            f"({k['docs']['train']:,} / {k['docs']['val']:,} documents, an end-of-text id after each). "
            f"Unigram entropy of the train tokens: **{k['unigram_entropy']:.3f} nats/token**.",
            "",
        ]
    if "train" in st:
        r = st["train"]
        mfu = f", MFU {100 * r['mfu']:.1f}%" if r.get("mfu") is not None else ""
        n = r.get("threads")
        threads = f" ({n} torch thread{'s' if n > 1 else ''})" if n else ""
        md += [
            "## 4. Pretraining",
            "",
            f"MiniGPT, {r['params'] / 1e6:.2f} M parameters, on {r['device']}{threads}: {r['steps']:,} "
            f"steps, {r['tokens']:,} tokens, {r['tokens_per_s']:,.0f} tokens/s{mfu}.",
            "",
            f"Final training loss {r['loss']:.3f}; **validation loss {r['val_loss']:.3f} nats/token** "
            f"{_evaluated(r.get('eval'), r['val_perplexity'], s['context'])}",
        ]
        if "tokenize" in st:
            gap = st["tokenize"]["unigram_entropy"] - r["val_loss"]
            md += [
                f"That is {gap:.3f} nats/token {'below' if gap > 0 else 'ABOVE'} the unigram entropy "
                f"({st['tokenize']['unigram_entropy']:.3f}): the model "
                f"{'uses' if gap > 0 else 'does not yet use'} context."
            ]
        md += [
            "",
            "The training loss at each point is the mean over the steps since the previous point (the "
            "weights changed during them); the validation loss is the model at that step.",
            "",
            "Checkpoints in `train/checkpoints/`, the final model in `train/model/`; from any folder:",
            "",
            "```bash",
            generate_command(out.resolve(), s["sample_prompts"][0]),
            "```",
            "",
            "![loss](loss.png)",
            "",
        ]
    if "generate" in st:
        g = st["generate"]
        md += [
            "## 5. Generation",
            "",
            f"### Throughput: greedy decoding, {g['new_tokens']} new tokens per row, KV cache",
            "",
            "| batch | tokens/s | ms per step | decode step |",
            "|---|---|---|---|",
        ]
        md += [
            f"| {r['batch']} | {r['tokens_per_s']:,.0f} | {r['ms_per_token']:.2f} | "
            f"{STEP_NAMES[r.get('step', 'torch')]} |"
            for r in g["throughput"]
        ]
        if len({r.get("step", "torch") for r in g["throughput"]}) > 1:
            md += ["", CLIFF_NOTE]
        smp_cfg = g.get("sampling", {"temperature": 0.8, "top_k": 50, "seed": s["seed"]})
        md += [
            "",
            "![throughput](generation_throughput.png)",
            "",
            f"### Samples: temperature {smp_cfg['temperature']}, top-k {smp_cfg['top_k']} (not greedy), "
            f"seed {smp_cfg['seed']} + the prompt's index (`samples.md`)",
            "",
        ]
        for smp in g["samples"]:
            md += [f"Prompt {json.dumps(smp['prompt'])}:", "", "```", smp["text"], "```", ""]
    timings = state.get("timings", {})
    if timings:
        md += ["## Time", "", "| stage | seconds |", "|---|---|"]
        md += [f"| {name} | {sec:,.1f} |" for name, sec in timings.items()]
        md += [f"| total | {sum(timings.values()):,.1f} |", ""]
        measured = st.get("train", {}).get("threads_measured")
        if measured:
            each = ", ".join(
                f"{k}: {1e3 * v:.0f} ms" for k, v in sorted(measured.items(), key=lambda kv: int(kv[0]))
            )
            md += [
                f"Training and generation ran on {st['train']['threads']} torch thread(s), the faster of "
                f"1 and torch's default for one forward + backward here ({each}).",
                "",
            ]
    missing = [p for p in PLOTS if p not in made]
    if missing:
        md += [f"Not run yet: the stages behind {', '.join(missing)}.", ""]
    path = out / "report.md"
    write_atomic(path, "\n".join(md))
    return path
