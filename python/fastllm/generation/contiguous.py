"""The contiguous KV cache of `generate`: per layer, K and V preallocated as (B, n_kv_head,
capacity, head_dim), filled left to right.

Why: for one stream or a static batch every row advances one slot per step, so one preallocated
buffer per layer is the fastest layout (a step writes one slot per row with `narrow` + `copy_`
and attends over a view of the filled part: no gather, no allocation). The paged cache of the
Engine (`fastllm.generation.paged`) serves requests that come and go.

>>> import torch
>>> from fastllm.model.gpt import MiniGPT, MiniGPTConfig
>>> model = MiniGPT(MiniGPTConfig.preset("tiny")).eval()
>>> cache = KVCache(model, batch=2, capacity=8, device=torch.device("cpu"), dtype=torch.float32)
>>> ids, pos = torch.tensor([[1, 2, 3], [4, 5, 6]]), torch.arange(3).expand(2, 3)
>>> with torch.no_grad():
...     logits = model.forward_cached(ids, pos, cache.layers)
>>> cache.advance(3)
>>> logits.shape, cache.length
(torch.Size([2, 3, 512]), 3)
"""

from __future__ import annotations

from typing import Any

import torch

from fastllm.model.cache import LayerCache, attend_all

__all__ = ["ContiguousLayerKV", "KVCache"]


class ContiguousLayerKV(LayerCache):
    """One layer of a `KVCache`: `k`, `v` (B, n_kv_head, capacity, head_dim); the new tokens go to
    the slots from the cache's `length` on."""

    __slots__ = ("cache", "k", "v")

    def __init__(self, cache: KVCache, k: torch.Tensor, v: torch.Tensor) -> None:
        self.cache, self.k, self.v = cache, k, v

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        start, n = self.cache.length, k.shape[2]
        # narrow + copy_ rather than slice assignment: one C call each (a decode step makes 4 per layer)
        self.k.narrow(2, start, n).copy_(k)
        self.v.narrow(2, start, n).copy_(v)
        ks, vs = (
            self.k.narrow(2, 0, start + n),
            self.v.narrow(2, 0, start + n),
        )  # (B, n_kv_head, end, head_dim)
        return attend_all(q, ks, vs, mask)  # (B, n_head, n, head_dim)


class KVCache:
    """Keys and values of every layer, preallocated as (B, n_kv_head, capacity, head_dim).

    `length` is the number of slots filled, the same for every row (`generate` left-pads a
    ragged batch); a forward writes at `length` and the caller then `advance`s it."""

    def __init__(
        self, model: Any, batch: int, capacity: int, device: torch.device, dtype: torch.dtype
    ) -> None:
        c = model.config
        shape = (batch, c.n_kv_head, capacity, c.head_dim)
        self.layers = [
            ContiguousLayerKV(
                self,
                torch.empty(shape, device=device, dtype=dtype),
                torch.empty(shape, device=device, dtype=dtype),
            )
            for _ in range(c.n_layer)
        ]
        self.length = 0
        self.capacity = capacity

    def advance(self, n: int) -> None:
        self.length += n
