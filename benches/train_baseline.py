"""The pure-PyTorch reference for the training benchmark: a plain nanoGPT-style GPT and its loop.

What it is: the model and training step of Karpathy's nanoGPT (model.py / train.py), written
again in our own words and kept deliberately plain: token + learned position embeddings, pre-norm
blocks with bias-ful nn.LayerNorm, causal self-attention through one fused c_attn Linear(d, 3d)
and the *naive* attention (q k^T / sqrt(hd), masked_fill with a registered lower-triangular buffer,
softmax, @ v; no SDPA), an MLP Linear(d, 4d) -> exact GELU -> Linear(4d, d), a final LayerNorm,
an lm_head tied to the token embedding and F.cross_entropy on the full (B*T, vocab) logits. The
optimizer is torch.optim.AdamW as nanoGPT builds it on a CPU (lr 6e-4, betas (0.9, 0.95), weight
decay 0.1 on the 2-D parameters only, PyTorch's default foreach implementation: nanoGPT asks for
the fused one only on CUDA); a step clips the gradient norm at 1.0. Dropout is 0 here (as for
pretraining), so the dropout modules are left out.

Why it is here: issue #4 measures MiniGPT's training path against "what you would write by hand",
in fp32 and under the same bf16 autocast, in one run (benches/bench_train.py). Nothing in it is
tuned; that is the point.

The init matters for timing, not only for learning: with PyTorch's default Linear/Embedding init
the logits are large, and the backward produces float denormals that make the CPU matmuls about
ten times slower. nanoGPT's init (N(0, 0.02), zero biases, residual projections N(0, 0.02 /
sqrt(2 n_layer))) keeps every number normal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GPTConfig:
    vocab_size: int = 8192
    block_size: int = 256  # context
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # q, k, v in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        T = config.block_size
        self.register_buffer("bias", torch.tril(torch.ones(T, T)).view(1, 1, T, T))  # causal mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        hd = C // self.n_head
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, self.n_head, hd).transpose(1, 2)  # (B, nh, T, hd)
        k = k.view(B, T, self.n_head, hd).transpose(1, 2)
        v = v.view(B, T, self.n_head, hd).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))  # (B, nh, T, T)
        att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
        att = F.softmax(att, dim=-1)
        y = att @ v  # (B, nh, T, hd)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.gelu = nn.GELU()  # exact (erf) GELU, as nanoGPT
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=True)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=True)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """`forward(idx)` returns the logits (B, T, vocab_size); the loss is taken by `plain_step`."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=True)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.wte.weight = self.lm_head.weight  # weight tying
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # residual projections, scaled by depth (GPT-2)
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        B, T = idx.shape
        assert T <= self.config.block_size
        pos = torch.arange(T, dtype=torch.long, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)  # (B, T, C)
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))  # (B, T, vocab_size)


def configure_optimizer(model: nn.Module, lr: float = 6e-4, weight_decay: float = 0.1) -> torch.optim.AdamW:
    """nanoGPT's AdamW: decay the 2-D parameters (matmul weights, embeddings), not biases or norms."""
    params = [p for p in model.parameters() if p.requires_grad]  # tied weights appear once
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))  # foreach by default; fused only on CUDA


def plain_step(
    model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, bf16: bool
) -> float:
    """One optimizer step on (x, y) of shape (B, T): forward (under bf16 autocast if asked), full-logits
    cross-entropy, backward, clip the gradient norm at 1.0, AdamW step, zero the grads. Returns the loss.

    `model(x)` may return the logits or an object with a `.logits` (a transformers model)."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = model(x)
        logits = out.logits if hasattr(out, "logits") else out
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1), ignore_index=-1)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()
