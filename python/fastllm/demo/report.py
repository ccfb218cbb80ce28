"""The demo's report: `report.md` and its PNG plots, written from `state.json` alone.

Plots (matplotlib, Agg backend, each written atomically with `fastllm._io`):
- `loss.png`: training loss per logged step and validation loss per evaluation, with the unigram
  entropy of the training tokens as a line (a model below it uses context);
- `dedup_clusters.png`: how many duplicate clusters have each size;
- `tokenizer_compression.png`: bytes per token against vocabulary size (held-out documents);
- `generation_throughput.png`: greedy generation tokens/s against batch size (KV cache).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from fastllm._io import atomic_path, write_atomic

PLOTS = ("loss.png", "dedup_clusters.png", "tokenizer_compression.png", "generation_throughput.png")


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
        fig, ax = plt.subplots(figsize=(6, 3.6))
        train = [(r["step"], r["loss"]) for r in hist if "loss" in r]
        val = [(r["step"], r["val_loss"]) for r in hist if "val_loss" in r]
        if train:
            ax.plot(*zip(*train), label="train loss")
        if val:
            ax.plot(*zip(*val), "o-", label="validation loss")
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
        _curve(
            plt,
            out / "generation_throughput.png",
            [r["batch"] for r in rows],
            [r["tokens_per_s"] for r in rows],
            "batch size",
            "tokens / s",
            "Greedy generation with the KV cache",
        )
        made.append("generation_throughput.png")
    return made


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
        md += [
            "## 4. Pretraining",
            "",
            f"MiniGPT, {r['params'] / 1e6:.2f} M parameters, on {r['device']}: {r['steps']:,} steps, "
            f"{r['tokens']:,} tokens, {r['tokens_per_s']:,.0f} tokens/s{mfu}.",
            "",
            f"Final training loss {r['loss']:.3f}; **validation loss {r['val_loss']:.3f} nats/token** "
            f"(perplexity {r['val_perplexity']:.1f}).",
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
            "Checkpoints in `train/checkpoints/`, the final model in `train/model/` "
            "(`fastllm generate --checkpoint train/model --tokenizer tokenizer.json`).",
            "",
            "![loss](loss.png)",
            "",
        ]
    if "generate" in st:
        g = st["generate"]
        md += [
            "## 5. Generation",
            "",
            f"Greedy, {g['new_tokens']} new tokens per row, KV cache:",
            "",
            "| batch | tokens/s | ms per step |",
            "|---|---|---|",
        ]
        md += [
            f"| {r['batch']} | {r['tokens_per_s']:,.0f} | {r['ms_per_token']:.2f} |" for r in g["throughput"]
        ]
        md += ["", "![throughput](generation_throughput.png)", "", "Samples (`samples.md`):", ""]
        for smp in g["samples"]:
            md += [f"Prompt {json.dumps(smp['prompt'])}:", "", "```", smp["text"], "```", ""]
    missing = [p for p in PLOTS if p not in made]
    if missing:
        md += [f"Not run yet: the stages behind {', '.join(missing)}.", ""]
    path = out / "report.md"
    write_atomic(path, "\n".join(md))
    return path
