"""The training jobs benches/bench_train.py times: one `make_<case>(data)` per row, each returning a
zero-argument callable that does one optimizer step on the next batch (building the model, the
optimizer and the batch stream happens in `make_*`), and the random-token corpus they all read.

Every case runs on one torch thread, batch 8 x 256, the ~13.9M-parameter shape below, and reads
its batches from the same `fastllm.data.dataset.TokenDataset`, so data loading costs the same everywhere.

Run as a script (`python benches/train_tasks.py CASE '{"data": DIR, "steps": 3}'`) it does `steps`
optimizer steps in a fresh process and prints `{"peak_rss_mb": ...}` (VmHWM, like
benches/tasks.py): the peak memory of that training setup alone, optimizer state included.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from tasks import peak_rss_mb  # noqa: E402
from train_baseline import GPT, GPTConfig, configure_optimizer, plain_step  # noqa: E402

VOCAB, CONTEXT, N_LAYER, N_HEAD, D_MODEL, BATCH = 8192, 256, 6, 6, 384, 8
TOKENS_PER_STEP = BATCH * CONTEXT
CORPUS_TOKENS = 1 << 20  # random ids; windows are drawn at random offsets, so size barely matters
CASES = (
    "plain_fp32",
    "plain_bf16",
    "transformers_gpt2_fp32",
    "minigpt_default",
    "minigpt_bf16",
    "minigpt_fp32",
)


def write_corpus(directory: str | Path, tokens: int = CORPUS_TOKENS, seed: int = 0) -> Path:
    """Uniform random ids in [0, VOCAB) with a fixed seed, as one train shard in `directory`."""
    from fastllm.data.shards import ShardWriter

    ids = np.random.default_rng(seed).integers(0, VOCAB, size=tokens, dtype=np.int64)
    with ShardWriter(directory, split="train", vocab_size=VOCAB, eot_id=0, tokenizer_sha256="0" * 64) as w:
        w.write(ids)
    return Path(directory)


def _dataset(data: str):
    from fastllm.data.dataset import TokenDataset

    return TokenDataset(data, context=CONTEXT)


def _plain_loop(model: torch.nn.Module, data: str, bf16: bool):
    torch.manual_seed(0)
    model.train()
    opt = configure_optimizer(model)
    batches = _dataset(data).batches(BATCH, seed=0)

    def step() -> float:
        x, y = next(batches)
        return plain_step(model, opt, x, y, bf16)

    step.model = model
    return step


def make_plain(data: str, bf16: bool = False):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = GPT(
        GPTConfig(vocab_size=VOCAB, block_size=CONTEXT, n_layer=N_LAYER, n_head=N_HEAD, n_embd=D_MODEL)
    )
    return _plain_loop(model, data, bf16)


def make_plain_fp32(data: str):
    return make_plain(data, bf16=False)


def make_plain_bf16(data: str):
    return make_plain(data, bf16=True)


def gpt2_model():
    """transformers' GPT2LMHeadModel of the benchmark's shape (exact GELU, no dropout), default attention."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=VOCAB,
        n_positions=CONTEXT,
        n_embd=D_MODEL,
        n_layer=N_LAYER,
        n_head=N_HEAD,
        activation_function="gelu",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
        use_cache=False,
    )
    return GPT2LMHeadModel(cfg)


def make_transformers_gpt2_fp32(data: str):
    torch.set_num_threads(1)
    return _plain_loop(gpt2_model(), data, bf16=False)


def minigpt_trainer(data: str, dtype: str, out_dir: str):
    """fastllm's Trainer with its defaults but for `dtype`, on MiniGPT of the benchmark's shape."""
    from fastllm.model.gpt import MiniGPT, MiniGPTConfig
    from fastllm.train.trainer import TrainConfig, Trainer

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = MiniGPT(
        MiniGPTConfig(
            vocab_size=VOCAB, context=CONTEXT, n_layer=N_LAYER, n_head=N_HEAD, d_model=D_MODEL, mlp="gelu"
        )
    )
    # device="cpu": the rows compare CPU training (dtype="auto" would otherwise follow a GPU if one is there)
    cfg = TrainConfig(
        out_dir=out_dir,
        batch_size=BATCH,
        max_steps=1_000_000,
        dtype=dtype,
        device="cpu",
        progress=False,
        eval_interval=0,
        checkpoint_interval=0,
        seed=0,
    )
    return Trainer(model, _dataset(data), val_data=None, config=cfg)


def _make_minigpt(data: str, dtype: str, out_dir: str | None):
    import tempfile

    out = out_dir or tempfile.mkdtemp(prefix="fastllm-bench-train-")
    trainer = minigpt_trainer(data, dtype, out)

    def step() -> float:
        return trainer.step()

    step.model, step.trainer = trainer.model if hasattr(trainer, "model") else None, trainer
    return step


def make_minigpt_default(data: str, out_dir: str | None = None):
    return _make_minigpt(data, "auto", out_dir)


def make_minigpt_bf16(data: str, out_dir: str | None = None):
    return _make_minigpt(data, "bfloat16", out_dir)


def make_minigpt_fp32(data: str, out_dir: str | None = None):
    return _make_minigpt(data, "float32", out_dir)


def make_noop(data: str | None = None):
    """The floor under the peak RSS figures: the interpreter with torch and fastllm's model imported."""
    import fastllm.model.gpt  # noqa: F401

    return lambda: None


if __name__ == "__main__":
    name, params = sys.argv[1], json.loads(sys.argv[2])
    steps = params.pop("steps", 1)
    step = globals()[f"make_{name}"](**params)
    for _ in range(steps):
        step()
    print(json.dumps({"peak_rss_mb": round(peak_rss_mb(), 1)}))
