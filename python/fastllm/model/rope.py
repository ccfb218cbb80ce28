"""Rotary position embedding (Su et al., RoFormer) in Hugging Face Llama's rotate_half layout.

The one place RoPE angles are computed: the model's attention computes cos/sin for the positions
of each forward, and the fused decode step (`fastllm.generation.decode`) looks them up in a table
made by the same function over every position of the context. Element-wise float32 arithmetic on
the same position gives the same bits, so the two paths agree exactly.

The pairs rotated together are (i, i + head_dim/2), not adjacent lanes (Meta's complex layout);
Hugging Face permutes q/k weights on conversion to get this. Angles are computed in float32 and
cast, as Hugging Face does.

>>> import torch
>>> cos, sin = rope_cos_sin(torch.arange(3), head_dim=4, theta=10000.0, dtype=torch.float32)
>>> cos.shape, cos[0].tolist(), sin[0].tolist()
(torch.Size([3, 4]), [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0])
>>> x = torch.randn(1, 2, 3, 4)  # (B, H, T, head_dim)
>>> torch.equal(apply_rope(x, cos[:1], sin[:1]), x)  # position 0: no rotation
True
"""

from __future__ import annotations

import torch

__all__ = ["apply_rope", "rope_cos_sin"]


def rope_cos_sin(
    positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotation angles at `positions` (any shape), each (*positions.shape,
    head_dim): computed in float32, then cast to `dtype`."""
    inv_freq = 1.0 / (
        theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    )  # (head_dim/2,)
    freqs = positions.to(torch.float32)[..., None] * inv_freq  # (*positions.shape, head_dim/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (*positions.shape, head_dim)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (..., head_dim) rotated by the angles whose `cos`, `sin` broadcast against it."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)  # rotate_half (HF Llama)
    return x * cos + rotated * sin
