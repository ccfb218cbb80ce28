"""Small shared pieces of the training tests (tests/test_train.py) and the torchrun worker
(tests/ddp_worker.py).

Token shards of random ids, a seeded tiny MiniGPT, and a TrainConfig with test-friendly defaults:
CPU, float32, no progress bar, a fixed peak_flops (no matmul timing), a schedule that does not
depend on max_steps (so runs of different lengths share their first steps).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fastllm.data.dataset import TokenDataset
from fastllm.data.shards import ShardWriter
from fastllm.model.gpt import MiniGPT, MiniGPTConfig
from fastllm.model.hf import file_sha256
from fastllm.train.checkpoint import checksum_path
from fastllm.train.trainer import TrainConfig

VOCAB = 512  # the "tiny" preset's vocabulary
CONTEXT = 16
SHA = "ab" * 32


def write_shards(
    directory,
    *,
    split: str = "train",
    tokens: int = 3000,
    vocab_size: int = VOCAB,
    seed: int = 0,
    sha: str = SHA,
    shard_tokens: int = 1009,
) -> Path:
    """`tokens` random ids in [0, vocab_size) as shards of `split` in `directory`."""
    ids = np.random.default_rng([seed, split == "val"]).integers(0, vocab_size, size=tokens)
    with ShardWriter(
        directory,
        split=split,
        vocab_size=vocab_size,
        eot_id=0,
        tokenizer_sha256=sha,
        shard_tokens=shard_tokens,
    ) as w:
        w.write(ids)
    return Path(directory)


def dataset(directory, split: str = "train", context: int = CONTEXT) -> TokenDataset:
    return TokenDataset(directory, context=context, split=split)


def tiny_model(seed: int = 0, **overrides) -> MiniGPT:
    torch.manual_seed(seed)
    return MiniGPT(MiniGPTConfig.preset("tiny", **overrides))


def train_config(out_dir, **overrides) -> TrainConfig:
    kw = dict(
        out_dir=str(out_dir),
        max_steps=4,
        batch_size=2,
        grad_accum=1,
        lr=3e-3,
        min_lr=3e-4,
        warmup_steps=2,
        decay_steps=50,
        dtype="float32",
        device="cpu",
        progress=False,
        peak_flops=1e12,
        log_interval=1,
        checkpoint_interval=0,
        eval_interval=0,
        eval_batches=4,
        seed=0,
    )
    kw.update(overrides)
    return TrainConfig(**kw)


def params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def train_losses(history) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in history if "loss" in r]


def save_with_checksum(obj, path) -> Path:
    """`torch.save(obj, path)` with the .sha256 beside it that `Trainer` writes, so a test's
    hand-made checkpoint gets past the checksum to the check it is about."""
    path = Path(path)
    torch.save(obj, path)
    checksum_path(path).write_text(f"{file_sha256(path)}  {path.name}\n")
    return path
