"""The demo's five stages, each a function of the settings and the earlier stages' files in `out`,
returning the figures `state.json` keeps for it:

1. dedup      read the corpus (`fastllm.data.documents`: the standard library, or the user's file or
              folder), drop exact and near duplicates (MinHash + LSH, exact Jaccard), write
              `corpus.jsonl`
2. tokenizer  train a byte-level BPE tokenizer (`tokenizer.json`) and measure its compression at
              several vocabulary sizes
3. tokenize   encode `corpus.jsonl` into train/val token shards (`shards/`)
4. train      pretrain a MiniGPT with the Trainer (`train/`: checkpoints, metrics, `train/model`)
5. generate   sample from the trained model (`samples.md`, temperature 0.8, top-k 50) and time
              greedy generation at several batch sizes

Every stage takes the same arguments, `(cfg, out, *, say, progress, device, threads)`: `device` is a
torch device name the caller has already resolved (`fastllm.train.device.resolve_device`), `threads`
torch's CPU threads for training and generation (None: `choose_threads` measures). The demo reads
arbitrary folders, so records that are not text (a binary file, a bad JSONL line) are skipped and
counted, never fatal: the count is in the dedup stage's first line, its figures and the report.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastllm._io import write_atomic
from fastllm._progress import bar
from fastllm.data.documents import Document, DocumentReader
from fastllm.demo.state import DemoConfig, load_state

STAGES = ("dedup", "tokenizer", "tokenize", "train", "generate")
SAMPLE_TEMPERATURE = 0.8  # samples.md: sampled, not greedy (greedy text from a small model loops)
SAMPLE_TOP_K = 50
Say = Callable[[str], None]


def corpus_documents(
    corpus: str | None, max_docs: int | None = None, progress: bool = False
) -> tuple[list[Document], DocumentReader]:
    """The demo's documents and their reader (its `invalid`: the skipped records).

    `corpus` None is the standard library; else a file (one document per line, record or row, by
    its name) or a folder (`DocumentReader.folder`). Whitespace-only documents are left out; at
    most `max_docs` are read. Raises FileNotFoundError for a missing corpus and ValueError for one
    with fewer than 2 documents (the demo needs a train and a validation part).
    """
    if corpus is None:
        reader = DocumentReader.stdlib()
    else:
        reader = DocumentReader.folder(corpus, skip_invalid=True)
    docs: list[Document] = []
    for doc in bar(progress, iterable=reader, desc="read", unit="doc"):
        if doc.text.strip():
            docs.append(doc)
            if len(docs) == max_docs:
                break
    if len(docs) < 2:
        where = "the standard library" if corpus is None else repr(str(corpus))
        skipped = f" ({len(reader.invalid)} invalid records skipped)" if reader.invalid else ""
        raise ValueError(
            f"corpus {where} has {len(docs)} non-empty UTF-8 document(s){skipped}; the demo needs at "
            "least 2 (a train and a validation part)"
        )
    return docs, reader


def stage_dedup(
    cfg: DemoConfig, out: Path, *, say: Say, progress: bool, device: str, threads: int | None
) -> dict[str, Any]:
    from fastllm.data.dedup import MinHashDeduper

    docs, reader = corpus_documents(cfg.corpus, cfg.max_docs, progress)
    texts = [d.text for d in docs]
    skipped = ""
    if reader.invalid:
        skipped = f"; {len(reader.invalid):,} invalid records skipped (first: {reader.invalid[0]})"
    say(
        f"reading {reader.description}: {len(texts):,} documents, "
        f"{sum(map(len, texts)) / 1e6:.1f} M characters{skipped}"
    )
    t0 = time.perf_counter()
    seen: set[str] = set()
    exact = 0  # exact duplicates (byte-identical text), counted first with a set
    for t in texts:
        exact += t in seen
        seen.add(t)
    result = MinHashDeduper(threshold=cfg.dedup_threshold, seed=cfg.seed).dedup(texts)
    kept = result.keep.nonzero()[0].tolist()
    write_atomic(
        out / "corpus.jsonl",
        (
            json.dumps({"text": docs[i].text, "source": docs[i].where}, ensure_ascii=False).encode() + b"\n"
            for i in kept
        ),
    )
    examples = [
        {"size": len(c), "members": [docs[j].where for j in c[:4]]}
        for c in sorted(result.clusters, key=len, reverse=True)[:5]
    ]
    summary = {
        "corpus": reader.description,
        "docs_in": len(texts),
        "docs_out": len(kept),
        "invalid": len(reader.invalid),
        "invalid_examples": reader.invalid[:5],
        "exact_duplicates": exact,
        "near_duplicates": len(texts) - len(kept) - exact,
        "clusters": len(result.clusters),
        "cluster_sizes": sorted((len(c) for c in result.clusters), reverse=True),
        "largest_clusters": examples,
        "bytes_in": sum(len(t.encode("utf-8")) for t in texts),
        "bytes_out": sum(len(texts[i].encode("utf-8")) for i in kept),
        "seconds": time.perf_counter() - t0,
    }
    say(
        f"dedup: {summary['docs_in']:,} docs in, {summary['docs_out']:,} out; "
        f"{summary['clusters']:,} clusters ({summary['exact_duplicates']:,} exact and "
        f"{summary['near_duplicates']:,} near duplicates removed) in {summary['seconds']:.2f} s"
    )
    return summary


def stage_tokenizer(
    cfg: DemoConfig, out: Path, *, say: Say, progress: bool, device: str, threads: int | None
) -> dict[str, Any]:
    from fastllm.tokenizer import BPETokenizer

    texts = [doc.text for doc in DocumentReader([out / "corpus.jsonl"], "jsonl")]
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    t0 = time.perf_counter()
    tok = BPETokenizer.train(texts, cfg.vocab_size, special_tokens=["<|endoftext|>"], show_progress=progress)
    seconds = time.perf_counter() - t0
    tok.save(out / "tokenizer.json")
    # Compression against vocabulary size: bytes per token over a held-out tenth of the documents
    # (every 10th), each size trained on the other nine tenths.
    held = texts[::10]
    rest = [t for i, t in enumerate(texts) if i % 10]
    held_bytes = sum(len(t.encode("utf-8")) for t in held)
    curve = []
    for size in sorted(set(cfg.compression_sizes)):
        t = BPETokenizer.train(rest, size, special_tokens=["<|endoftext|>"], show_progress=False)
        n_tokens = sum(len(ids) for ids in t.encode_batch(held, disallowed_special=()))
        curve.append({"vocab_size": size, "bytes_per_token": held_bytes / max(1, n_tokens)})
    n_tokens = sum(len(ids) for ids in tok.encode_batch(texts, disallowed_special=()))
    summary = {
        "vocab_size": tok.vocab_size,
        "bytes": n_bytes,
        "tokens": n_tokens,
        "bytes_per_token": n_bytes / n_tokens,
        "seconds": seconds,
        "mb_per_s": n_bytes / 1e6 / seconds if seconds > 0 else 0.0,
        "compression": curve,
    }
    say(
        f"tokenizer: vocab {tok.vocab_size:,}, {summary['bytes_per_token']:.2f} bytes/token over the "
        f"corpus, trained in {seconds:.2f} s ({summary['mb_per_s']:.1f} MB/s)"
    )
    return summary


def stage_tokenize(
    cfg: DemoConfig, out: Path, *, say: Say, progress: bool, device: str, threads: int | None
) -> dict[str, Any]:
    import numpy as np

    from fastllm.data.shards import list_shards, load_shard
    from fastllm.data.tokenize import tokenize_to_shards

    # 5% of the documents for validation, more for a small corpus: enough for a few batches
    state = load_state(out)
    assert state is not None
    tokens = state["stages"]["tokenizer"]["tokens"]
    val_fraction = min(0.3, max(0.05, 4 * cfg.batch_size * (cfg.context + 1) / max(1, tokens)))
    size = (out / "corpus.jsonl").stat().st_size
    with bar(progress, total=size, desc="tokenize", unit="B", unit_scale=True) as done:
        stats = tokenize_to_shards(
            [out / "corpus.jsonl"],
            out / "shards",
            tokenizer=out / "tokenizer.json",
            fmt="jsonl",
            val_fraction=val_fraction,
            seed=cfg.seed,
            overwrite=True,
            progress=done.update,
        )
    counts = np.zeros(cfg.vocab_size, dtype=np.int64)
    for header in list_shards(out / "shards", "train"):
        counts += np.bincount(load_shard(header).astype(np.int64), minlength=cfg.vocab_size)[: cfg.vocab_size]
    p = counts[counts > 0] / counts.sum()
    entropy = float(-(p * np.log(p)).sum())  # nats per token: the loss of a model that ignores context
    summary = {"docs": dict(stats.docs), "tokens": dict(stats.tokens), "unigram_entropy": entropy}
    say(
        f"tokenize: {stats.tokens['train']:,} train and {stats.tokens['val']:,} val tokens "
        f"({stats.docs['train']:,} / {stats.docs['val']:,} documents); "
        f"unigram entropy {entropy:.3f} nats/token"
    )
    return summary


def _train_config(cfg: DemoConfig, out: Path, device: str, resume: bool, progress: bool, threads: int | None):
    from fastllm.train.trainer import TrainConfig

    return TrainConfig(
        out_dir=str(out / "train"),
        max_steps=cfg.max_steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        warmup_steps=cfg.warmup_steps,
        eval_interval=cfg.eval_interval,
        eval_batches=cfg.eval_batches,
        log_interval=max(1, min(10, cfg.max_steps // 20)),
        checkpoint_interval=max(1, cfg.max_steps // 4),
        seed=cfg.seed,
        device=device,
        resume="latest" if resume else None,
        progress=progress,
        num_threads=threads,
    )


def choose_threads(model: Any, batch_size: int) -> tuple[int, dict[int, float]]:
    """torch's CPU thread count for training `model`: 1 or torch's default, whichever runs a
    forward + backward of one batch faster here, now; and the seconds each took (median of 3).

    Why measure: with one core kept busy by another process, torch's threads wait for the one that
    shares it at every op, and 2 threads on 2 cores measured 3.5x *slower* per step than 1 (a demo
    run that way took 38 minutes instead of 7); on an idle machine 2 threads run ~1.8x faster. 1
    is kept unless the default is clearly (15%) faster: it is the choice that cannot collapse if
    the machine gets busier later. The model's weights, gradients and RNG are left as they were.
    """
    import torch

    n = torch.get_num_threads()
    if n == 1 or next(model.parameters()).device.type != "cpu":
        return n, {}
    c = model.config
    g = torch.Generator().manual_seed(0)  # a private generator: the run's RNG is untouched
    xy = torch.randint(0, c.vocab_size, (batch_size, c.context + 1), generator=g)
    was = model.training
    model.eval()  # no dropout: no draw from torch's RNG

    def once() -> float:
        t0 = time.perf_counter()
        _, loss = model(xy[:, :-1], xy[:, 1:], return_logits=False)
        loss.backward()
        return time.perf_counter() - t0

    seconds: dict[int, float] = {}
    try:
        once()  # warm-up: first-call allocations
        for k in (n, 1):
            torch.set_num_threads(k)
            seconds[k] = sorted(once() for _ in range(3))[1]
    finally:
        torch.set_num_threads(n)
        model.zero_grad(set_to_none=True)
        model.train(was)
    return (n if seconds[n] < 0.85 * seconds[1] else 1), seconds


def stage_train(
    cfg: DemoConfig, out: Path, *, say: Say, progress: bool, device: str, threads: int | None
) -> dict[str, Any]:
    import torch

    from fastllm.data.dataset import TokenDataset
    from fastllm.data.shards import list_shards, load_shard
    from fastllm.model.gpt import MiniGPT, MiniGPTConfig
    from fastllm.train.trainer import Trainer, eval_windows

    for split in ("train", "val"):
        n = sum(load_shard(h).size for h in list_shards(out / "shards", split))
        if n <= cfg.context:
            raise ValueError(
                f"the corpus is too small to train on: its {split} split holds {n} tokens, and one "
                f"training window needs {cfg.context + 1}; give more text"
            )
    train = TokenDataset(out / "shards", cfg.context, split="train")
    val = TokenDataset(out / "shards", cfg.context, split="val")
    windows = min(len(train), len(val))
    if windows < cfg.batch_size:  # a small corpus: batches as large as its validation split allows
        say(
            f"train: a small corpus ({len(train)} train and {len(val)} validation windows of "
            f"{cfg.context} tokens): batch size {windows} instead of {cfg.batch_size}"
        )
        cfg = dataclasses.replace(cfg, batch_size=windows)
    torch.manual_seed(cfg.seed)
    model = MiniGPT(
        MiniGPTConfig(
            vocab_size=cfg.vocab_size,
            context=cfg.context,
            n_layer=cfg.n_layer,
            n_head=cfg.n_head,
            d_model=cfg.d_model,
            mlp="gelu",
        )
    ).to(device)
    measured: dict[int, float] = {}
    if threads is None:
        threads, measured = choose_threads(model, cfg.batch_size)
        if measured:
            say(
                "train: torch threads "
                + ", ".join(f"{k}: {1e3 * v:.0f} ms" for k, v in sorted(measured.items()))
                + f" per forward + backward; training with {threads}"
            )
    resume = any((out / "train" / "checkpoints").glob("step_*.pt"))
    result = Trainer(model, train, val, _train_config(cfg, out, device, resume, progress, threads)).fit()
    if result.interrupted:
        raise KeyboardInterrupt
    history = [
        json.loads(line)
        for line in (out / "train" / "metrics.jsonl").read_text().splitlines()
        if line.strip()
    ]
    last_eval = [r for r in history if "val_loss" in r][-1]
    windows = eval_windows(val, cfg.eval_batches * cfg.batch_size, cfg.seed)
    evaluated = {  # what the validation figures are over (see fastllm.train.trainer.evaluate)
        "windows": len(windows),
        "of_windows": len(val),
        "tokens": len(windows) * cfg.context,
        "split_tokens": val.tokens,
        "sampled": len(windows) < len(val),
        "seed": cfg.seed,
        "stderr": last_eval.get("val_stderr"),
    }
    last = [r for r in history if "tokens_per_s" in r][-5:]
    summary = {
        "params": model.num_params(),
        "steps": result.step,
        "loss": result.loss,
        "val_loss": result.val_loss,
        "val_perplexity": result.val_perplexity,
        "tokens": result.tokens,
        "seconds": result.seconds,
        "tokens_per_s": sum(r["tokens_per_s"] for r in last) / len(last) if last else result.tokens_per_s,
        "mfu": sum(r["mfu"] for r in last) / len(last) if last else None,
        "device": str(next(model.parameters()).device),
        "batch_size": cfg.batch_size,
        "threads": threads if device == "cpu" else None,
        "threads_measured": {str(k): v for k, v in measured.items()},  # JSON keys are strings
        "eval": evaluated,
        "history": history,
    }
    what = (
        f"{evaluated['windows']:,} of {evaluated['of_windows']:,} validation windows, seed {cfg.seed}"
        if evaluated["sampled"]
        else f"all {evaluated['windows']:,} validation windows"
    )
    say(
        f"train: {summary['params'] / 1e6:.2f} M params, {result.step} steps, loss {result.loss:.3f}, "
        f"val loss {result.val_loss:.3f} ({what}), {summary['tokens_per_s']:,.0f} tokens/s"
        + (f", MFU {100 * summary['mfu']:.1f}%" if summary["mfu"] is not None else "")
    )
    return summary


def stage_generate(
    cfg: DemoConfig, out: Path, *, say: Say, progress: bool, device: str, threads: int | None
) -> dict[str, Any]:
    import torch

    from fastllm.generation.decode import DecodePlan
    from fastllm.model.gpt import MiniGPT
    from fastllm.tokenizer import BPETokenizer

    tok = BPETokenizer.from_file(out / "tokenizer.json")
    dev = torch.device(device)
    if threads is not None and dev.type == "cpu":
        torch.set_num_threads(threads)
    model = MiniGPT.from_pretrained(out / "train" / "model").to(dev).eval()
    samples = []
    for i, prompt in enumerate(cfg.sample_prompts):
        ids = tok.encode(prompt)
        row = model.generate(
            [ids], cfg.sample_tokens, temperature=SAMPLE_TEMPERATURE, top_k=SAMPLE_TOP_K, seed=cfg.seed + i
        )[0]
        samples.append({"prompt": prompt, "text": tok.decode(row.tolist())})
    md = (
        f"# Samples\n\nSampled at temperature {SAMPLE_TEMPERATURE}, top-k {SAMPLE_TOP_K}, seed "
        f"{cfg.seed} + the prompt's index; the prompt is included.\n\n"
    )
    md += "".join(f"## {json.dumps(s['prompt'])}\n\n```\n{s['text']}\n```\n\n" for s in samples)
    write_atomic(out / "samples.md", md)
    g = torch.Generator().manual_seed(cfg.seed)
    throughput = []
    with torch.inference_mode():
        plan = DecodePlan.for_model(model)
        rust_at_1 = plan is not None and plan.native is not None  # what generate() does at batch 1
        for batch in bar(progress, iterable=cfg.gen_batches, desc="generate", unit="batch size"):
            prompts = torch.randint(0, tok.vocab_size - 1, (batch, 16), generator=g).to(dev)
            model.generate(prompts, 2, temperature=0)  # warm-up
            t0 = time.perf_counter()
            model.generate(prompts, cfg.gen_tokens, temperature=0)
            seconds = time.perf_counter() - t0
            throughput.append(
                {
                    "batch": batch,
                    "tokens_per_s": batch * cfg.gen_tokens / seconds,
                    "ms_per_token": seconds / cfg.gen_tokens * 1e3,
                    "step": "rust" if batch == 1 and rust_at_1 else "torch",
                }
            )
    summary = {
        "samples": samples,
        "sampling": {"temperature": SAMPLE_TEMPERATURE, "top_k": SAMPLE_TOP_K, "seed": cfg.seed},
        "throughput": throughput,
        "new_tokens": cfg.gen_tokens,
    }
    first = throughput[0]
    best = max(throughput, key=lambda r: r["tokens_per_s"])
    also = f", {best['tokens_per_s']:,.0f} at batch {best['batch']}" if best is not first else ""
    say(
        f"generate: {first['tokens_per_s']:,.0f} tokens/s at batch {first['batch']} "
        f"({first['ms_per_token']:.2f} ms/step){also}; samples in {out / 'samples.md'}"
    )
    return summary
