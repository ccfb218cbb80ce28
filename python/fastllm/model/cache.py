"""The K/V cache protocol: what `MiniGPT.forward_cached` (and the fused decode step of
`fastllm.generation.decode`) asks of one layer's cache.

Why one method that returns the attention output rather than one that returns the stored keys:
caches differ in how they attend, not only in where they keep K/V. A contiguous cache attends
over its filled slots; a paged cache gathers a sequence's blocks first; the Engine's decode view
attends over a batch-wide shared prefix once (a cascade split), and the CUDA view hands its block
tables to a Triton kernel. Each is one `attend(q, k, v, mask)` here, so the model and the decode
step call one protocol and never ask which cache they hold. The model floor defines it (the
consumer owns the interface); generation implements it.

`attend_all` is the plain attention most caches finish with, over every key they hold.

>>> import torch
>>> class Plain(LayerCache):  # no storage: attends over this call's keys only
...     def attend(self, q, k, v, mask):
...         return attend_all(q, k, v, mask)
>>> q = k = v = torch.ones(1, 2, 3, 4)  # (B, H, T, head_dim)
>>> Plain().attend(q, k, v, None).shape
torch.Size([1, 2, 3, 4])
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F

from fastllm.model.attention import SDPA_HAS_GQA, attention

__all__ = ["LayerCache", "attend_all"]


class LayerCache(ABC):
    """One layer's K/V store for one forward call."""

    __slots__ = ()

    @abstractmethod
    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Store the new tokens' keys and values `k`, `v` (B, n_kv_head, T, head_dim) and return
        the attention output (B, n_head, T, head_dim) of `q` (B, n_head, T, head_dim) over every
        key the cache holds for each row, these included. `mask` (B, 1, T, T_k) bool says which
        keys each query sees; None means causal (the new tokens are the last T). No dropout:
        cached attention is inference."""


def attend_all(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Attention of `q` (B, n_head, T, head_dim) over all of `k`, `v` (B, n_kv_head, T_k,
    head_dim): causal, aligned bottom-right, when `mask` is None, else under `mask` (B, 1, T, T_k).

    One query per row (a decode step) goes straight to SDPA: a step runs this once per layer and
    `fastllm.attention`'s argument checks cost more than the arithmetic at batch 1. The result is
    the same call `attention` would make (one query sees every key; GQA as `attention` does it).
    """
    if q.shape[2] != 1:
        return attention(q, k, v, causal=mask is None, attn_mask=mask)  # (B, n_head, T, head_dim)
    if k.shape[1] != q.shape[1]:
        if SDPA_HAS_GQA:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        g = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)  # (B, n_head, T_k, head_dim)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, n_head, 1, head_dim)
