"""`fastllm demo`: the whole pipeline on one corpus, stage by stage, into one report folder.

Stages, each a function of the previous stages' files (so every output is reusable by the other
commands, and a run can stop and carry on):

1. dedup      read the corpus (default: the Python standard library), drop exact and near
              duplicates (MinHash + LSH, exact Jaccard), write `corpus.jsonl`
2. tokenizer  train a byte-level BPE tokenizer (`tokenizer.json`) and measure its compression
              at several vocabulary sizes
3. tokenize   encode `corpus.jsonl` into train/val token shards (`shards/`)
4. train      pretrain a MiniGPT with the Trainer (`train/`: checkpoints, metrics, `train/model`)
5. generate   sample from the trained model with the KV cache (`samples.md`) and time greedy
              generation at several batch sizes

`state.json` records the settings and each finished stage's figures, written atomically after
every stage; `--resume` skips the finished stages (the train stage continues from its newest
checkpoint) and refuses to mix settings. The report (`report.md` + PNG plots,
`fastllm.demo.report`) is written from `state.json` at the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STAGES = ("dedup", "tokenizer", "tokenize", "train", "generate")
_STATE_VERSION = 1
_SKIP_DIRS = {".git", ".hg", ".svn", "__pycache__", "node_modules", ".venv", "venv", "site-packages"}


@dataclass
class DemoConfig:
    """The demo's settings; `quick()` is the under-a-minute variant the tests run."""

    corpus: str | None = None  # a file or folder of the user's text; None = the Python standard library
    max_docs: int | None = None  # read at most this many documents (None: all)
    dedup_threshold: float = 0.8  # Jaccard of word 5-gram sets at or above which two documents are duplicates
    vocab_size: int = 4096  # the tokenizer's ids (256 bytes + merges + 1 special)
    compression_sizes: tuple[int, ...] = (512, 1024, 2048, 4096, 8192)  # vocab sizes of the compression curve
    context: int = 256  # model context (training window)
    n_layer: int = 4  # MiniGPT depth
    n_head: int = 4  # attention heads
    d_model: int = 192  # residual width
    max_steps: int = 800  # optimizer steps (3.3M tokens: ~6 min on 2 CPU cores)
    batch_size: int = 16  # windows per step
    lr: float = 2e-3  # peak learning rate (small models take a high one)
    warmup_steps: int = 50  # linear warmup
    eval_interval: int = 200  # validation every this many steps
    eval_batches: int = 10  # validation batches per evaluation
    seed: int = 0  # data order, weights, samples
    sample_prompts: tuple[str, ...] = ("def ", "import os\n", "class ")  # prompts of samples.md
    sample_tokens: int = 96  # new tokens per sample
    gen_batches: tuple[int, ...] = (1, 2, 4, 8, 16)  # batch sizes of the generation-throughput curve
    gen_tokens: int = 64  # new tokens per row when timing generation

    @classmethod
    def quick(cls, **overrides: Any) -> DemoConfig:
        """Small everything: 300 documents, a 512-id tokenizer, a 0.1M-parameter model, 300 steps."""
        base = dict(
            max_docs=300,
            vocab_size=512,
            compression_sizes=(300, 512, 1024),
            context=64,
            n_layer=2,
            n_head=2,
            d_model=64,
            max_steps=300,
            batch_size=16,
            lr=3e-3,
            warmup_steps=10,
            eval_interval=100,
            eval_batches=4,
            sample_tokens=24,
            gen_batches=(1, 2, 4),
            gen_tokens=16,
        )
        return cls(**{**base, **overrides})

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, settings: dict[str, Any]) -> DemoConfig:
        """The settings a run saved in its state.json (unknown keys are an error)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(settings) - names)
        if unknown:
            raise ValueError(f"state.json holds settings this fastllm does not know: {unknown}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()})


class DemoInterrupted(Exception):
    """Ctrl-C during a stage: what finished is kept; `fastllm demo --resume` carries on."""

    def __init__(self, stage: str, out: Path) -> None:
        super().__init__(
            f"interrupted during the {stage} stage; the finished stages are kept in {str(out)!r}: "
            f"run `fastllm demo --resume --out {out}` to carry on"
        )
        self.stage = stage


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write to a temporary file beside `path`, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def load_state(out: Path) -> dict[str, Any] | None:
    path = out / "state.json"
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{str(path)!r} is not valid JSON ({e}); remove it to start over") from e
    if state.get("version") != _STATE_VERSION:
        raise ValueError(f"{str(path)!r} was written by another fastllm version; choose another --out")
    return state


def save_state(out: Path, state: dict[str, Any]) -> None:
    write_atomic(out / "state.json", json.dumps(state, indent=2))


def _bar(enabled: bool, **kwargs: Any) -> Any:
    """A tqdm progress bar, or one that shows nothing."""
    from tqdm.auto import tqdm

    return tqdm(disable=not enabled, dynamic_ncols=True, **kwargs)


# --------------------------------------------------------------------------------------------
# the corpus
# --------------------------------------------------------------------------------------------


def _user_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        files += [Path(dirpath) / f for f in sorted(filenames) if not f.startswith(".")]
    return files


def read_documents(
    corpus: str | None, max_docs: int | None = None, progress: bool = False
) -> tuple[list[str], list[str], str]:
    """(texts, sources, description). The default corpus: the stdlib's `.py` files and the pydoc
    topics (one document per topic). A user folder: one document per UTF-8 file (`.jsonl` files:
    one per record's "text"); a single text file: one document per blank-line-separated block.
    Undecodable files are skipped. Raises FileNotFoundError / ValueError for a missing or empty corpus."""
    texts: list[str] = []
    sources: list[str] = []
    if corpus is None:
        import tokenize

        from fastllm.data.documents import stdlib_files, stdlib_root

        for path in _bar(progress, iterable=stdlib_files(), desc="read", unit="file", leave=False):
            try:
                with tokenize.open(path) as f:
                    texts.append(f.read())
            except (SyntaxError, UnicodeDecodeError, OSError):
                continue
            sources.append(str(path.relative_to(stdlib_root())))
        try:
            from pydoc_data.topics import topics
        except ImportError:
            topics = {}
        for key in sorted(topics):
            texts.append(topics[key])
            sources.append(f"pydoc_data/topics:{key}")
        description = f"the Python standard library ({stdlib_root()}: .py sources and pydoc topics)"
    else:
        root = Path(corpus).expanduser()
        if not root.exists():
            raise FileNotFoundError(f"corpus not found: {str(root)!r}")
        files = _user_files(root)
        single = root.is_file()
        for path in _bar(progress, iterable=files, desc="read", unit="file", leave=False):
            try:
                raw = path.read_bytes().decode("utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            if path.suffix.lower() in (".jsonl", ".ndjson"):
                for n, line in enumerate(raw.splitlines(), start=1):
                    try:
                        record = json.loads(line) if line.strip() else None
                    except json.JSONDecodeError:
                        continue
                    if isinstance(record, dict) and isinstance(record.get("text"), str):
                        texts.append(record["text"])
                        sources.append(f"{path}:{n}")
            elif single:
                blocks = [b for b in raw.split("\n\n") if b.strip()]
                texts += [b + "\n\n" for b in blocks]
                sources += [f"{path}:block{i}" for i in range(len(blocks))]
            else:
                texts.append(raw)
                sources.append(str(path))
        description = f"{str(root)!r} ({len(files)} file(s))"
    keep = [i for i, t in enumerate(texts) if t.strip()]
    texts, sources = [texts[i] for i in keep], [sources[i] for i in keep]
    if max_docs is not None:
        texts, sources = texts[:max_docs], sources[:max_docs]
    if len(texts) < 2:
        where = "the standard library" if corpus is None else repr(str(corpus))
        raise ValueError(
            f"corpus {where} has {len(texts)} non-empty UTF-8 document(s); the demo needs at least 2 "
            "(a train and a validation part)"
        )
    return texts, sources, description


# --------------------------------------------------------------------------------------------
# stages
# --------------------------------------------------------------------------------------------


def stage_dedup(cfg: DemoConfig, out: Path, say: Callable[[str], None], progress: bool) -> dict[str, Any]:
    from fastllm.data.dedup import MinHashDeduper

    texts, sources, description = read_documents(cfg.corpus, cfg.max_docs, progress)
    say(f"reading {description}: {len(texts):,} documents, {sum(map(len, texts)) / 1e6:.1f} M characters")
    t0 = time.perf_counter()
    exact: dict[str, int] = {}
    exact_of = []  # exact duplicates (byte-identical text), found first with a dict
    for i, t in enumerate(texts):
        if t in exact:
            exact_of.append(i)
        else:
            exact[t] = i
    result = MinHashDeduper(threshold=cfg.dedup_threshold, seed=cfg.seed).dedup(texts)
    keep = result.keep.tolist()
    kept = [i for i in range(len(texts)) if keep[i]]
    lines = "".join(
        json.dumps({"text": texts[i], "source": sources[i]}, ensure_ascii=False) + "\n" for i in kept
    )
    write_atomic(out / "corpus.jsonl", lines)
    sizes = sorted((len(c) for c in result.clusters), reverse=True)
    examples = [
        {"size": len(c), "members": [sources[j] for j in c[:4]]}
        for c in sorted(result.clusters, key=len, reverse=True)[:5]
    ]
    summary = {
        "corpus": description,
        "docs_in": len(texts),
        "docs_out": len(kept),
        "exact_duplicates": len(exact_of),
        "near_duplicates": len(texts) - len(kept) - len(exact_of),
        "clusters": len(result.clusters),
        "cluster_sizes": sizes,
        "largest_clusters": examples,
        "bytes_in": sum(len(t.encode("utf-8")) for t in texts),
        "bytes_out": sum(len(texts[i].encode("utf-8")) for i in kept),
        "seconds": time.perf_counter() - t0,
    }
    say(
        f"dedup: {summary['docs_in']:,} docs in, {summary['docs_out']:,} out; {summary['clusters']:,} clusters "
        f"({summary['exact_duplicates']:,} exact and {summary['near_duplicates']:,} near duplicates removed) "
        f"in {summary['seconds']:.2f} s"
    )
    return summary


def _corpus_texts(out: Path) -> Iterator[str]:
    with open(out / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)["text"]


def stage_tokenizer(cfg: DemoConfig, out: Path, say: Callable[[str], None], progress: bool) -> dict[str, Any]:
    from fastllm.tokenizer import BPETokenizer

    texts = list(_corpus_texts(out))
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
        f"tokenizer: vocab {tok.vocab_size:,}, {summary['bytes_per_token']:.2f} bytes/token over the corpus, "
        f"trained in {seconds:.2f} s ({summary['mb_per_s']:.1f} MB/s)"
    )
    return summary


def stage_tokenize(cfg: DemoConfig, out: Path, say: Callable[[str], None], progress: bool) -> dict[str, Any]:
    import numpy as np

    from fastllm.data.shards import list_shards, load_shard
    from fastllm.data.tokenize import tokenize_to_shards

    # 5% of the documents for validation, more for a small corpus: enough for a few batches
    tokens = json.loads((out / "state.json").read_text(encoding="utf-8"))["stages"]["tokenizer"]["tokens"]
    val_fraction = min(0.3, max(0.05, 4 * cfg.batch_size * (cfg.context + 1) / max(1, tokens)))
    with _bar(
        progress,
        total=(out / "corpus.jsonl").stat().st_size,
        desc="tokenize",
        unit="B",
        unit_scale=True,
        leave=False,
    ) as bar:
        stats = tokenize_to_shards(
            [out / "corpus.jsonl"],
            out / "shards",
            tokenizer=out / "tokenizer.json",
            fmt="jsonl",
            val_fraction=val_fraction,
            seed=cfg.seed,
            overwrite=True,
            progress=bar.update,
        )
    counts = np.zeros(cfg.vocab_size, dtype=np.int64)
    for header in list_shards(out / "shards", "train"):
        counts += np.bincount(load_shard(header).astype(np.int64), minlength=cfg.vocab_size)[: cfg.vocab_size]
    p = counts[counts > 0] / counts.sum()
    entropy = float(-(p * np.log(p)).sum())  # nats per token: the loss of a model that ignores context
    summary = {"docs": dict(stats.docs), "tokens": dict(stats.tokens), "unigram_entropy": entropy}
    say(
        f"tokenize: {stats.tokens['train']:,} train and {stats.tokens['val']:,} val tokens "
        f"({stats.docs['train']:,} / {stats.docs['val']:,} documents); unigram entropy {entropy:.3f} nats/token"
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


def stage_train(
    cfg: DemoConfig, out: Path, say: Callable[[str], None], device: str, progress: bool
) -> dict[str, Any]:
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
            f"train: a small corpus ({len(train)} train and {len(val)} validation windows of {cfg.context} tokens): "
            f"batch size {windows} instead of {cfg.batch_size}"
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


def stage_generate(
    cfg: DemoConfig, out: Path, say: Callable[[str], None], device: str, progress: bool
) -> dict[str, Any]:
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
        for batch in _bar(
            progress, iterable=cfg.gen_batches, desc="generate", unit="batch size", leave=False
        ):
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
        f"generate: {throughput[0]['tokens_per_s']:,.0f} tokens/s at batch 1 ({throughput[0]['ms_per_token']:.2f} ms/token), "
        f"{best['tokens_per_s']:,.0f} at batch {best['batch']}; samples in {out / 'samples.md'}"
    )
    return summary


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------


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
    progress: bool = True,
    say: Callable[[str], None] = print,
) -> DemoResult:
    """Run (or, with `resume`, carry on) the demo into folder `out`; writes report.md at the end.

    Raises DemoInterrupted on Ctrl-C (the finished stages are kept), ValueError for bad settings,
    a corpus that is empty, or an `out` that holds another run (or none, with `resume`)."""
    from fastllm.demo.report import write_report

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file, not a folder")
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    state = load_state(out) if out.is_dir() else None
    settings = cfg.to_dict()
    if state is None:
        if resume:
            raise ValueError(f"nothing to resume in {str(out)!r} (no state.json); run without --resume")
        if out.is_dir() and any(out.iterdir()):
            raise ValueError(f"--out {str(out)!r} is not empty and holds no demo run; choose another folder")
        state = {"version": _STATE_VERSION, "settings": settings, "stages": {}}
    else:
        if not resume:
            raise ValueError(
                f"{str(out)!r} already holds a demo run; pass --resume to carry on or choose another --out"
            )
        differ = sorted(k for k in settings if state["settings"].get(k) != settings[k])
        if differ:
            k = differ[0]
            raise ValueError(
                f"--resume with other settings than the run in {str(out)!r}: {k} was "
                f"{state['settings'].get(k)!r}, now {settings[k]!r}"
            )
    out.mkdir(parents=True, exist_ok=True)
    save_state(out, state)
    result = DemoResult(out, state)
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "dedup": lambda: stage_dedup(cfg, out, say, progress),
        "tokenizer": lambda: stage_tokenizer(cfg, out, say, progress),
        "tokenize": lambda: stage_tokenize(cfg, out, say, progress),
        "train": lambda: stage_train(cfg, out, say, device, progress),
        "generate": lambda: stage_generate(cfg, out, say, device, progress),
    }
    for name in STAGES:
        if name in state["stages"]:
            say(f"{name}: done before (resumed)")
            continue
        try:
            state["stages"][name] = runners[name]()
        except KeyboardInterrupt:
            raise DemoInterrupted(name, out) from None
        result.ran.append(name)
        save_state(out, state)
    write_report(out, state)
    if "train" in state["stages"] and "tokenize" in state["stages"]:
        tr, tk = state["stages"]["train"], state["stages"]["tokenize"]
        verdict = "below" if tr["val_loss"] < tk["unigram_entropy"] else "NOT below"
        say(
            f"report: {out / 'report.md'} (val loss {tr['val_loss']:.3f} nats/token, {verdict} the unigram "
            f"entropy {tk['unigram_entropy']:.3f})"
        )
    return result


def unigram_gap(state: dict[str, Any]) -> float:
    """Unigram entropy minus validation loss, nats per token (positive: the model uses context)."""
    return state["stages"]["tokenize"]["unigram_entropy"] - state["stages"]["train"]["val_loss"]


__all__ = [
    "DemoConfig",
    "DemoInterrupted",
    "DemoResult",
    "STAGES",
    "read_documents",
    "run_demo",
    "unigram_gap",
]
