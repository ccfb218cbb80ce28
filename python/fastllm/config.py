"""The configurations of the model and of a training run: plain dataclasses, no torch import.

Why a module of its own: the command line builds one flag per field of both dataclasses, and
`fastllm --help` should not pay for importing torch. `fastllm.model.gpt` and `fastllm.train.trainer`
re-export these names.

>>> MiniGPTConfig.preset("small").n_kv_head
2
>>> TrainConfig(batch_size=4).grad_accum
1

Size limits, what every loader checks before it allocates (`check_fits_in_memory`): a model is
refused when its float32 parameters (`MiniGPTConfig.num_params() * 4` bytes) exceed this machine's
physical memory (or 1 TiB where that cannot be read); `n_layer` is at most `MAX_LAYERS`. The
ValueError names the largest weight and the fields that size it.

>>> MiniGPTConfig.preset("tiny").num_params()
136960
>>> check_fits_in_memory(MiniGPTConfig.preset("tiny", vocab_size=10**12), "config.json")
Traceback (most recent call last):
...
ValueError: config.json: this model has 64,000,000,104,192 parameters (256,000.0 GB in float32), more ...
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass
from typing import Any

from fastllm._checks import (
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_optional_int,
    check_type,
)

__all__ = ["MAX_LAYERS", "MiniGPTConfig", "PRESETS", "TrainConfig", "check_fits_in_memory", "memory_bytes"]

# 8x the deepest published GPT/Llama (Llama-3.1-405B: 126 layers). A bound so that a hostile
# config cannot make a loader build (even on the meta device) millions of blocks.
MAX_LAYERS = 1024
_FALLBACK_MEMORY = 1 << 40  # 1 TiB, where the physical memory cannot be read

_MLPS = ("gelu", "gelu_tanh", "swiglu")
_NORMS = ("layernorm", "rmsnorm")
_POSITIONS = ("learned", "rope")
_DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class MiniGPTConfig:
    """Shape and flavour of a MiniGPT. The defaults are GPT-2 small (124M)."""

    vocab_size: int = 50257  # token ids the model embeds (GPT-2: 50257); `fastllm train` takes the shards'
    context: int = 1024  # block size: the longest sequence the model accepts (GPT-2: n_positions)
    n_layer: int = 12  # transformer blocks (GPT-2 small: 12)
    n_head: int = 12  # query heads; must divide d_model (GPT-2 small: 12)
    n_kv_head: int | None = None  # key/value heads for GQA; None = n_head (plain multi-head)
    d_model: int = 768  # residual stream width (GPT-2 small: 768)
    # "gelu" is 2.4x faster than the tanh form on a CPU (measured, one thread, 2048 x 1536)
    mlp: str = "gelu_tanh"  # "gelu_tanh" (GPT-2, HF "gelu_new") | "gelu" (exact, nanoGPT) | "swiglu" (Llama)
    mlp_hidden: int | None = None  # None = 4*d_model (gelu, gelu_tanh), Llama's 8d/3 up to 256 (swiglu)
    norm: str = "layernorm"  # "layernorm" (GPT-2) | "rmsnorm" (Llama)
    norm_eps: float = 1e-5  # GPT-2's layer_norm_epsilon; Llama checkpoints use 1e-5 or 1e-6
    positions: str = "learned"  # "learned" absolute embeddings (GPT-2) | "rope" (Llama)
    rope_theta: float = 10000.0  # RoPE base (RoFormer, Llama 1/2); only used with positions="rope"
    tied_embeddings: bool = True  # lm_head shares the token embedding (GPT-2, nanoGPT)
    dropout: float = 0.0  # embedding/residual/attention dropout; 0 for pretraining as in nanoGPT
    bias: bool = True  # biases in Linear layers and LayerNorm (GPT-2: True, Llama: False)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context", "n_layer", "n_head", "d_model"):
            setattr(self, name, check_int(getattr(self, name), name, minimum=1))
        check_int(self.n_layer, "n_layer", maximum=MAX_LAYERS)
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        self.n_kv_head = check_int(self.n_kv_head, "n_kv_head", minimum=1)
        if self.d_model % self.n_head != 0:
            raise ValueError(f"n_head={self.n_head} must divide d_model={self.d_model}")
        if self.n_head % self.n_kv_head != 0:
            raise ValueError(f"n_kv_head={self.n_kv_head} must divide n_head={self.n_head}")
        check_choice(self.mlp, "mlp", _MLPS)
        check_choice(self.norm, "norm", _NORMS)
        check_choice(self.positions, "positions", _POSITIONS)
        if self.positions == "rope" and self.head_dim % 2 != 0:
            raise ValueError(f"RoPE needs an even head_dim, got head_dim={self.head_dim}")
        if self.mlp_hidden is None:
            if self.mlp != "swiglu":
                self.mlp_hidden = 4 * self.d_model  # GPT-2 / nanoGPT
            else:
                # Llama (Meta reference, = HF LlamaConfig's 11008 for d=4096): 2/3 of 4d keeps the
                # parameter count of a 4d GELU MLP with three matrices; rounded up to 256.
                self.mlp_hidden = 256 * math.ceil(int(8 * self.d_model / 3) / 256)
        self.mlp_hidden = check_int(self.mlp_hidden, "mlp_hidden", minimum=1)
        self.norm_eps = check_float(self.norm_eps, "norm_eps", minimum=0.0, min_open=True)
        self.rope_theta = check_float(self.rope_theta, "rope_theta", minimum=0.0, min_open=True)
        self.dropout = check_float(self.dropout, "dropout", minimum=0.0, maximum=1.0, max_open=True)
        check_bool(self.tied_embeddings, "tied_embeddings")
        check_bool(self.bias, "bias")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    def parameter_groups(self) -> list[tuple[str, str, int]]:
        """(weight, the fields that size it, parameter count) of each part of the model, counted
        from the config alone (tied embeddings once): what `num_params` sums and
        `check_fits_in_memory` reports."""
        d, h, kv = self.d_model, self.mlp_hidden, self.n_kv_head
        assert h is not None and kv is not None  # resolved by __post_init__
        b = int(self.bias)
        norm = d * (2 if self.norm == "layernorm" and self.bias else 1)  # LayerNorm's bias; RMSNorm has none
        kv_width = kv * self.head_dim
        attention = 2 * (d * d + b * d) + 2 * (d * kv_width + b * kv_width)  # q, o; k, v
        mlp = 3 * d * h + b * (2 * h + d) if self.mlp == "swiglu" else 2 * d * h + b * (h + d)
        groups = [
            ("tok_emb.weight", f"vocab_size x d_model = {self.vocab_size:,} x {d:,}", self.vocab_size * d),
            (
                "blocks",
                f"n_layer x (attention and MLP of d_model, mlp_hidden) = {self.n_layer:,} x ({d:,}, {h:,})",
                self.n_layer * (2 * norm + attention + mlp),
            ),
            ("ln_f", f"d_model = {d:,}", norm),
        ]
        if self.positions == "learned":
            groups.append(
                ("pos_emb.weight", f"context x d_model = {self.context:,} x {d:,}", self.context * d)
            )
        if not self.tied_embeddings:
            groups.append(
                ("lm_head.weight", f"vocab_size x d_model = {self.vocab_size:,} x {d:,}", self.vocab_size * d)
            )
        return groups

    def num_params(self) -> int:
        """The parameter count of `MiniGPT(self)` (tied weights once), without building it."""
        return sum(n for _, _, n in self.parameter_groups())

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> MiniGPTConfig:
        """A named configuration, with optional field overrides.

        "tiny": CI-sized (2 layers, d 64); "small": ~10M parameters, Llama-style; "gpt2": GPT-2
        small, 124M (124,439,808 parameters).

        >>> MiniGPTConfig.preset("tiny", vocab_size=300).vocab_size
        300
        """
        check_choice(name, "preset", tuple(PRESETS))
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ValueError(f"unknown MiniGPTConfig field(s) {unknown}")
        return cls(**{**PRESETS[name], **overrides})


def memory_bytes() -> int | None:
    """This machine's physical memory in bytes, or None where the OS does not say (POSIX sysconf)."""
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # Windows has no sysconf
        return None
    return pages * size if pages > 0 and size > 0 else None


def check_fits_in_memory(config: MiniGPTConfig, where: str) -> None:
    """A ValueError (naming `where`, the largest weight and its fields) unless `config`'s model fits.

    The rule: its float32 parameters must fit in this machine's physical memory (1 TiB where that is
    unknown). A loader calls it before it builds anything of the config's size, so a file whose
    config says vocab_size 10**12 is refused instead of sending the allocator for terabytes.
    """
    need = 4 * config.num_params()
    have = memory_bytes()
    limit = have if have is not None else _FALLBACK_MEMORY
    if need <= limit:
        return
    name, fields, _ = max(config.parameter_groups(), key=lambda g: g[2])
    machine = (
        f"this machine's {limit / 1e9:,.1f} GB" if have is not None else f"the {limit / 1e9:,.1f} GB limit"
    )
    raise ValueError(
        f"{where}: this model has {config.num_params():,} parameters ({need / 1e9:,.1f} GB in float32), "
        f"more than {machine} of memory; the largest weight is {name}, {fields}"
    )


PRESETS: dict[str, dict[str, Any]] = {
    # Small enough for a CPU test to build and run in milliseconds.
    "tiny": dict(vocab_size=512, context=64, n_layer=2, n_head=4, d_model=64),
    # ~9.4M parameters, Llama-style (llama2.c's 15M width, 8k vocabulary), for a laptop run.
    "small": dict(
        vocab_size=8192,
        context=512,
        n_layer=8,
        n_head=6,
        n_kv_head=2,
        d_model=288,
        mlp="swiglu",
        mlp_hidden=768,
        norm="rmsnorm",
        positions="rope",
        tied_embeddings=True,
        bias=False,
    ),
    # GPT-2 small (Radford et al. 2019), identical to the dataclass defaults.
    "gpt2": dict(
        vocab_size=50257,
        context=1024,
        n_layer=12,
        n_head=12,
        d_model=768,
        mlp="gelu_tanh",
        norm="layernorm",
        positions="learned",
        tied_embeddings=True,
        bias=True,
    ),
}


@dataclass
class TrainConfig:
    """Everything about a training run except the model's shape (see `MiniGPTConfig`).

    The defaults are nanoGPT's GPT-2 recipe scaled to a small run: AdamW (0.9, 0.95), weight
    decay 0.1, peak lr 6e-4 with a floor of 10% of it, gradient clipping at 1.0.
    """

    out_dir: str = "out"  # checkpoints/, metrics.jsonl, loss.png and the final model/ go here
    max_steps: int = 1000  # optimizer steps
    batch_size: int = 8  # windows per micro-batch per process
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 6e-4  # peak learning rate
    min_lr: float | None = None  # floor of the cosine; None = lr / 10 (Chinchilla, nanoGPT)
    warmup_steps: int = 100  # linear warmup from lr/warmup_steps to lr
    decay_steps: int | None = None  # cosine reaches min_lr at this step; None = max_steps
    weight_decay: float = 0.1  # on matrices only (>= 2-D parameters), never on biases and norms
    beta1: float = 0.9  # AdamW first-moment decay
    beta2: float = 0.95  # AdamW second-moment decay (0.95 as GPT-3 and nanoGPT)
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    dtype: str = "auto"  # "auto" | "float32" | "bfloat16" | "float16" (autocast; weights stay fp32)
    compile: bool = False  # torch.compile the model (pays off on CUDA; no gain measured on the CPU)
    device: str = "auto"  # "auto" (cuda if available) | "cpu" | "cuda" | "cuda:N"
    seed: int = 0  # data order and dropout
    eval_interval: int = 200  # evaluate on val_data every this many steps (0: only at the end)
    eval_batches: int = 20  # val batches per evaluation, windows drawn by seed (0 or >= the split: all of it)
    log_interval: int = 10  # a metrics.jsonl record every this many steps
    checkpoint_interval: int = 500  # a checkpoint every this many steps (0: only at the end)
    keep_checkpoints: int = 3  # newest checkpoints kept on disk
    resume: str | None = None  # "latest" (newest checkpoint in out_dir) or a checkpoint path
    progress: bool = True  # a tqdm progress bar (rank 0 only)
    num_threads: int | None = None  # torch CPU threads; None leaves torch's default
    peak_flops: float | None = None  # for MFU; None = a table for CUDA GPUs, a measured matmul peak on CPU

    def __post_init__(self) -> None:
        self.out_dir = os.fspath(check_type(self.out_dir, "out_dir", (str, os.PathLike)))
        for name in ("max_steps", "batch_size", "grad_accum", "keep_checkpoints", "log_interval"):
            setattr(self, name, check_int(getattr(self, name), name, minimum=1))
        for name in ("warmup_steps", "eval_interval", "eval_batches", "checkpoint_interval", "seed"):
            setattr(self, name, check_int(getattr(self, name), name, minimum=0))
        self.decay_steps = check_optional_int(self.decay_steps, "decay_steps", minimum=1)
        self.num_threads = check_optional_int(self.num_threads, "num_threads", minimum=1)
        for name in ("lr", "weight_decay", "grad_clip"):
            setattr(self, name, check_float(getattr(self, name), name, minimum=0.0))
        if self.min_lr is not None:
            self.min_lr = check_float(self.min_lr, "min_lr", minimum=0.0, maximum=self.lr)
        for name in ("beta1", "beta2"):
            setattr(
                self, name, check_float(getattr(self, name), name, minimum=0.0, maximum=1.0, max_open=True)
            )
        check_choice(self.dtype, "dtype", _DTYPES)
        check_type(self.device, "device", str)
        if not (self.device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", self.device)):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got {self.device!r}")
        check_bool(self.compile, "compile")
        check_bool(self.progress, "progress")
        if self.resume is not None:
            self.resume = os.fspath(check_type(self.resume, "resume", (str, os.PathLike)))
        if self.peak_flops is not None:
            self.peak_flops = check_float(self.peak_flops, "peak_flops", minimum=0.0, min_open=True)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
