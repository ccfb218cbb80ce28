"""The demo's five stages, each a function of the settings and the earlier stages' files in `out`,
returning the figures `state.json` keeps for it:

1. dedup      read the corpus (`fastllm.data.documents`: the standard library, or the user's file or
              folder), drop exact and near duplicates (MinHash + LSH, exact Jaccard), write
              `corpus.jsonl`
2. tokenizer  train a byte-level BPE tokenizer (`tokenizer.json`) and measure its compression at
              several vocabulary sizes
3. tokenize   encode `corpus.jsonl` into train/val token shards (`shards/`)
4. train      pretrain a MiniGPT with the Trainer (`train/`: checkpoints, metrics, `train/model`)
5. generate   sample from the trained model (`samples.md`) and time greedy generation at several
              batch sizes

Every stage takes the same arguments, `(cfg, out, *, say, progress, device)`. The demo reads
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


def stage_dedup(cfg: DemoConfig, out: Path, *, say: Say, progress: bool, device: str) -> dict[str, Any]:
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


def stage_tokenizer(cfg: DemoConfig, out: Path, *, say: Say, progress: bool, device: str) -> dict[str, Any]:
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


def stage_tokenize(cfg: DemoConfig, out: Path, *, say: Say, progress: bool, device: str) -> dict[str, Any]:
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


def _train_config(cfg: DemoConfig, out: Path, device: str, resume: bool, progress: bool):
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
    )


def stage_train(cfg: DemoConfig, out: Path, *, say: Say, progress: bool, device: str) -> dict[str, Any]:
    import torch

    from fastllm.data.dataset import TokenDataset
    from fastllm.data.shards import list_shards, load_shard
    from fastllm.model.gpt import MiniGPT, MiniGPTConfig
    from fastllm.train.trainer import Trainer

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
    )
    resume = any((out / "train" / "checkpoints").glob("step_*.pt"))
    result = Trainer(model, train, val, _train_config(cfg, out, device, resume, progress)).fit()
    if result.interrupted:
        raise KeyboardInterrupt
    history = [
        json.loads(line)
        for line in (out / "train" / "metrics.jsonl").read_text().splitlines()
        if line.strip()
    ]
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
        "history": history,
    }
    say(
        f"train: {summary['params'] / 1e6:.2f} M params, {result.step} steps, loss {result.loss:.3f}, "
        f"val loss {result.val_loss:.3f}, {summary['tokens_per_s']:,.0f} tokens/s"
        + (f", MFU {100 * summary['mfu']:.1f}%" if summary["mfu"] is not None else "")
    )
    return summary


def stage_generate(cfg: DemoConfig, out: Path, *, say: Say, progress: bool, device: str) -> dict[str, Any]:
    import torch

    from fastllm.model.gpt import MiniGPT
    from fastllm.tokenizer import BPETokenizer

    tok = BPETokenizer.from_file(out / "tokenizer.json")
    dev = torch.device(
        "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    )
    model = MiniGPT.from_pretrained(out / "train" / "model").to(dev).eval()
    samples = []
    for i, prompt in enumerate(cfg.sample_prompts):
        ids = tok.encode(prompt)
        row = model.generate([ids], cfg.sample_tokens, temperature=0.8, top_k=50, seed=cfg.seed + i)[0]
        samples.append({"prompt": prompt, "text": tok.decode(row.tolist())})
    md = "# Samples\n\nTemperature 0.8, top-k 50, seed per prompt; the prompt is included.\n\n"
    md += "".join(f"## {json.dumps(s['prompt'])}\n\n```\n{s['text']}\n```\n\n" for s in samples)
    write_atomic(out / "samples.md", md)
    g = torch.Generator().manual_seed(cfg.seed)
    throughput = []
    with torch.inference_mode():
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
                }
            )
    summary = {"samples": samples, "throughput": throughput, "new_tokens": cfg.gen_tokens}
    best = max(throughput, key=lambda r: r["tokens_per_s"])
    say(
        f"generate: {throughput[0]['tokens_per_s']:,.0f} tokens/s at batch 1 "
        f"({throughput[0]['ms_per_token']:.2f} ms/token), {best['tokens_per_s']:,.0f} at batch "
        f"{best['batch']}; samples in {out / 'samples.md'}"
    )
    return summary
