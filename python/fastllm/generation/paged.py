"""The Engine's paged K/V: the cache tensors, and the per-forward views through which the model
reads and writes them by block table (each a `fastllm.model.cache.LayerCache`).

K and V of every layer live in two tensors shaped (num_blocks, block_size, kv_heads, head_dim) on
the model's device. A token at position p of a sequence lives in slot p % block_size of block
table[p // block_size] (PagedAttention, Kwon et al. 2023); which blocks a sequence owns is the
block manager's business (`fastllm.generation.kvcache`), what they hold is this module's.

- A prefill forward (`prefill_views`): the new tokens' K/V go to their slots, then each sequence's
  blocks are gathered back and attended over with a length mask (`PagedLayerKV`).
- A decode step (`decode_views`), one new token per running sequence, either through the running
  batch's contiguous copy with the shared prefix apart (`DecodeSet`, `DecodeLayerKV`: the fast
  one on a CPU) or, on CUDA, through the Triton paged-decode kernel that reads the block tables
  itself (`KernelDecodeKV`).

>>> import torch
>>> from fastllm.model.gpt import MiniGPTConfig
>>> kv = PagedKV(MiniGPTConfig.preset("tiny"), num_blocks=4, block_size=2, device=torch.device("cpu"),
...              dtype=torch.float32)
>>> kv.k[0].shape, kv.decode_attention  # per layer (num_blocks, block_size, kv_heads, head_dim)
(torch.Size([4, 2, 4, 16]), 'torch')
"""

from __future__ import annotations

import math
from typing import Any

import torch

from fastllm.model.cache import LayerCache, attend_all

__all__ = ["DECODE_ATTENTION", "DecodeLayerKV", "DecodeSet", "KernelDecodeKV", "PagedKV", "PagedLayerKV"]

DECODE_ATTENTION = ("auto", "triton", "torch")


class PagedLayerKV(LayerCache):
    """One layer's view of the paged cache for one prefill forward."""

    __slots__ = ("k_cache", "v_cache", "write_blocks", "write_offsets", "read_index", "read_len")

    def __init__(self, k_cache, v_cache, write_blocks, write_offsets, read_index, read_len) -> None:
        self.k_cache, self.v_cache = k_cache, v_cache
        self.write_blocks, self.write_offsets = write_blocks, write_offsets  # (B*T,) slots of the new tokens
        self.read_index, self.read_len = read_index, read_len  # (B, max_blocks) block ids; L keys to read

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        B, H, T, D = k.shape  # (B, n_kv_head, T, head_dim)
        self.k_cache[self.write_blocks, self.write_offsets] = k.transpose(1, 2).reshape(B * T, H, D)
        self.v_cache[self.write_blocks, self.write_offsets] = v.transpose(1, 2).reshape(B * T, H, D)
        L = self.read_len
        B2, nb = self.read_index.shape
        flat = self.read_index.reshape(-1)
        ks = torch.index_select(self.k_cache, 0, flat).view(B2, nb * self.k_cache.shape[1], H, D)[
            :, :L
        ]  # (B, L, n_kv_head, head_dim)
        vs = torch.index_select(self.v_cache, 0, flat).view(B2, nb * self.v_cache.shape[1], H, D)[:, :L]
        return attend_all(q, ks.transpose(1, 2), vs.transpose(1, 2), mask)  # (B, n_head, T, head_dim)


class DecodeSet:
    """The running batch's keys/values for decode steps, kept outside the paged cache in two parts:

    - shared: the leading full blocks that every sequence of the batch has in its block table (the
      same physical blocks: a common prompt prefix found by prefix caching), gathered once per
      layer as (kv_heads, P, head_dim);
    - own: each sequence's tokens after those P, in contiguous (B, kv_heads, capacity, head_dim)
      buffers that every decode step extends in place.

    Why: re-gathering every sequence's blocks at every step reads and writes the whole cache twice
    per layer (measured: two thirds of a 32-sequence decode step on the CPU), and attending over a
    shared prefix once per sequence reads the same keys B times. With the prefix apart, a step
    scores all B*heads queries against the shared keys in one matrix product (read once; the
    "cascade" split of FlashInfer and Hydragen) and only the short per-sequence tails row by row;
    one softmax over both parts keeps the result exact. The paged cache stays the source of truth
    (prefix sharing, preemption); this copy is rebuilt only when the batch's membership changes.
    """

    def __init__(self, rids, lens, prefix, shared_k, shared_v, k, v) -> None:
        self.rids, self.lens, self.prefix = rids, lens, prefix
        self.shared_k, self.shared_v = shared_k, shared_v  # per layer (kv_heads, P, head_dim), or None
        self.k, self.v = k, v  # per layer (B, kv_heads, capacity, head_dim)

    @property
    def capacity(self) -> int:
        return self.prefix + self.k[0].shape[2]


class DecodeLayerKV(LayerCache):
    """A layer's view for a decode step through a `DecodeSet`: `attend` writes the new token's K/V
    to the paged cache and to the sequence's own buffer, then attends over shared + own keys (the
    mask is its own: `own_bias`, -inf past each row's length)."""

    __slots__ = (
        "k_cache",
        "v_cache",
        "write_blocks",
        "write_offsets",
        "own_k",
        "own_v",
        "shared_k",
        "shared_v",
        "rows",
        "own_pos",
        "own_len",
        "own_bias",
    )

    def __init__(
        self,
        k_cache,
        v_cache,
        write_blocks,
        write_offsets,
        own_k,
        own_v,
        shared_k,
        shared_v,
        rows,
        own_pos,
        own_len,
        own_bias,
    ) -> None:
        self.k_cache, self.v_cache = k_cache, v_cache
        self.write_blocks, self.write_offsets = write_blocks, write_offsets
        self.own_k, self.own_v, self.shared_k, self.shared_v = own_k, own_v, shared_k, shared_v
        self.rows, self.own_pos, self.own_len, self.own_bias = rows, own_pos, own_len, own_bias

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        B, Hq, _, D = q.shape  # (B, n_head, 1, head_dim)
        H = k.shape[1]  # n_kv_head
        G = Hq // H
        kn = k[:, :, 0]  # (B, n_kv_head, head_dim): one new token per sequence
        vn = v[:, :, 0]
        self.k_cache[self.write_blocks, self.write_offsets] = kn
        self.v_cache[self.write_blocks, self.write_offsets] = vn
        self.own_k[self.rows, :, self.own_pos] = kn
        self.own_v[self.rows, :, self.own_pos] = vn
        S = self.own_len
        # (B, n_kv_head, G, head_dim): query heads grouped by kv head
        qg = q.reshape(B, H, G, D) * (1.0 / math.sqrt(D))
        ko, vo = self.own_k[:, :, :S], self.own_v[:, :, :S]  # (B, n_kv_head, S, head_dim)
        # (B, n_kv_head, G, S); -inf past each row's length
        scores = torch.matmul(qg, ko.transpose(-1, -2)) + self.own_bias
        if self.shared_k is not None:
            P = self.shared_k.shape[1]
            qs = qg.transpose(0, 1).reshape(H, B * G, D)  # (n_kv_head, B*G, head_dim): all queries together
            shared = (
                torch.bmm(qs, self.shared_k.transpose(1, 2)).view(H, B, G, P).transpose(0, 1)
            )  # (B, n_kv_head, G, P)
            scores = torch.cat((shared, scores), dim=-1)  # (B, n_kv_head, G, P + S)
        work = scores.float() if scores.dtype in (torch.float16, torch.bfloat16) else scores
        probs = torch.softmax(work, dim=-1).to(v.dtype)  # one softmax over shared + own keys: exact
        if self.shared_k is None:
            y = torch.matmul(probs, vo)  # (B, n_kv_head, G, head_dim)
        else:
            ps = probs[..., :P].transpose(0, 1).reshape(H, B * G, P)
            y = torch.matmul(probs[..., P:], vo)
            y = y + torch.bmm(ps, self.shared_v).view(H, B, G, D).transpose(
                0, 1
            )  # (B, n_kv_head, G, head_dim)
        return y.reshape(B, Hq, 1, D)  # (B, n_head, 1, head_dim)


class KernelDecodeKV(LayerCache):
    """A layer's view for a decode step through the Triton paged-decode kernel (CUDA): the new
    token's K/V go to their slots, then the kernel reads every sequence's K/V through its block
    table, so there is no gathered copy to keep (`fastllm.kernels.paged_decode_attention`)."""

    __slots__ = ("k_cache", "v_cache", "write_blocks", "write_offsets", "tables", "lens", "max_context")

    def __init__(self, k_cache, v_cache, write_blocks, write_offsets, tables, lens, max_context) -> None:
        self.k_cache, self.v_cache = k_cache, v_cache
        self.write_blocks, self.write_offsets = write_blocks, write_offsets  # (B,) slot of each new token
        self.tables, self.lens, self.max_context = tables, lens, max_context  # (B, max_blocks), (B,), int

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        from fastllm.kernels import paged_decode_attention

        self.k_cache[self.write_blocks, self.write_offsets] = k[:, :, 0]  # (B, n_kv_head, head_dim)
        self.v_cache[self.write_blocks, self.write_offsets] = v[:, :, 0]
        y = paged_decode_attention(
            q[:, :, 0], self.k_cache, self.v_cache, self.tables, self.lens, max_context=self.max_context
        )  # (B, n_head, head_dim)
        return y[:, :, None]  # (B, n_head, 1, head_dim)


class PagedKV:
    """The paged K/V of every layer and the views a forward reads and writes them through.

    decode_attention: "triton" (the paged-decode kernel; CUDA, or the CPU under
    TRITON_INTERPRET=1), "torch" (a `DecodeSet`), or "auto": "triton" for CUDA tensors when triton
    is installed and the dtype and head_dim are ones the kernel takes, else "torch". The resolved
    choice is `self.decode_attention`.
    """

    def __init__(
        self,
        config: Any,
        num_blocks: int,
        block_size: int,
        device: torch.device,
        dtype: torch.dtype,
        decode_attention: str = "auto",
    ) -> None:
        self.config, self.block_size = config, block_size
        self.device, self.dtype = device, dtype
        shape = (num_blocks, block_size, config.n_kv_head, config.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.work: DecodeSet | None = None  # the running batch's contiguous K/V (see DecodeSet)
        if decode_attention == "auto":
            from fastllm import kernels

            fits = dtype in (torch.float16, torch.bfloat16, torch.float32) and 16 <= config.head_dim <= 256
            decode_attention = (
                "triton" if device.type == "cuda" and fits and kernels.is_available() else "torch"
            )
        self.decode_attention = decode_attention

    def copy_block(self, src: int, dst: int) -> None:
        """Copy block `src` into block `dst` in every layer (copy-on-write of a shared block)."""
        for kc, vc in zip(self.k, self.v):
            kc[dst].copy_(kc[src])
            vc[dst].copy_(vc[src])

    def prefill_views(
        self, tables: list[list[int]], pos: torch.Tensor, ends: list[int]
    ) -> tuple[list[PagedLayerKV], torch.Tensor | None]:
        """Views for tokens at positions `pos` (B, T) of sequences with block tables `tables`, row i
        reading keys [0, ends[i]); and the attention mask (B, 1, T, L) (None for one sequence:
        plain causal)."""
        B, T = pos.shape
        bs = self.block_size
        L = max(ends)
        nb = math.ceil(L / bs)
        read = torch.tensor(
            [t[:nb] + [t[0]] * (nb - len(t[:nb])) for t in tables], dtype=torch.long, device=self.device
        )  # (B, nb)
        flat_pos = pos.flatten()
        rows = torch.arange(B, device=self.device).repeat_interleave(T)
        write_blocks = read[rows, flat_pos // bs]
        write_offsets = flat_pos % bs
        mask = None  # one sequence: plain causal attention over its own L keys
        if B > 1:  # rows of different lengths: each query sees its own row's keys up to itself
            keys = torch.arange(L, device=self.device)
            lens = torch.tensor(ends, device=self.device)
            mask = ((keys[None, None, :] <= pos[:, :, None]) & (keys[None, None, :] < lens[:, None, None]))[
                :, None
            ]  # (B, 1, T, L)
        kv = [
            PagedLayerKV(self.k[i], self.v[i], write_blocks, write_offsets, read, L)
            for i in range(self.config.n_layer)
        ]
        return kv, mask

    def decode_views(
        self, rids: tuple[int, ...], tables: list[list[int]], starts: list[int], positions: torch.Tensor
    ) -> list[LayerCache]:
        """Views for one new token per sequence (`rids`, with block tables `tables`) at positions
        `starts` (the same as the tensor `positions` (B,)). Call `decoded` after the forward."""
        B, bs = len(tables), self.block_size
        ends = [p + 1 for p in starts]
        write_blocks = torch.tensor(
            [t[p // bs] for t, p in zip(tables, starts)], dtype=torch.long, device=self.device
        )
        write_offsets = positions % bs  # (B,): the new tokens' slots
        n_layer = self.config.n_layer
        if self.decode_attention == "triton":
            width = max(len(t) for t in tables)
            table_t = torch.tensor(
                [t + [t[0]] * (width - len(t)) for t in tables], dtype=torch.int32, device=self.device
            )  # (B, max_blocks)
            # (B,): keys per sequence, the new token's included
            lens = torch.tensor(ends, dtype=torch.int32, device=self.device)
            return [
                KernelDecodeKV(self.k[i], self.v[i], write_blocks, write_offsets, table_t, lens, max(ends))
                for i in range(n_layer)
            ]
        work = self.work
        if work is None or work.rids != rids or work.lens != starts or max(ends) > work.capacity:
            work = self._build_decode_set(tables, rids, starts, max(ends))
        P = work.prefix
        S = max(ends) - P  # own keys to attend over
        own_pos = positions - P
        keys = torch.arange(S, device=self.device)
        bias = torch.zeros(B, 1, 1, S, dtype=self.dtype, device=self.device)
        bias.masked_fill_((keys[None, :] > own_pos[:, None])[:, None, None], float("-inf"))  # (B, 1, 1, S)
        rows = torch.arange(B, device=self.device)
        return [
            DecodeLayerKV(
                self.k[i],
                self.v[i],
                write_blocks,
                write_offsets,
                work.k[i],
                work.v[i],
                work.shared_k[i] if work.shared_k else None,
                work.shared_v[i] if work.shared_v else None,
                rows,
                own_pos,
                S,
                bias,
            )
            for i in range(n_layer)
        ]

    def decoded(self, ends: list[int]) -> None:
        """After a decode forward: the decode set now holds the K/V of tokens up to `ends`."""
        if self.work is not None and self.decode_attention != "triton":
            self.work.lens = list(ends)

    def _build_decode_set(
        self, tables: list[list[int]], rids: tuple[int, ...], starts: list[int], L: int
    ) -> DecodeSet:
        B, bs = len(tables), self.block_size
        c = self.config
        H, D = c.n_kv_head, c.head_dim
        # The shared prefix: leading blocks that are the same physical block in every table, all
        # of whose tokens every sequence has computed (one sequence alone: nothing to share).
        shared = 0
        if B > 1:
            limit = min(starts) // bs
            first = tables[0]
            while shared < limit and all(t[shared] == first[shared] for t in tables):
                shared += 1
        P = shared * bs
        cap = min(c.context, L + 64) - P  # own slots, with headroom: no rebuild for the next 64 tokens
        nb = math.ceil(max(max(starts) - P, 1) / bs)  # own blocks to copy per sequence
        read = torch.tensor(
            [t[shared : shared + nb] + [t[0]] * (nb - len(t[shared : shared + nb])) for t in tables],
            dtype=torch.long,
            device=self.device,
        ).reshape(-1)
        sk, sv, ks, vs = [], [], [], []
        prefix_index = torch.tensor(tables[0][:shared], dtype=torch.long, device=self.device)
        n = min(nb * bs, cap)
        for kc, vc in zip(self.k, self.v):
            if shared:
                sk.append(
                    torch.index_select(kc, 0, prefix_index).view(P, H, D).transpose(0, 1).contiguous()
                )  # (H, P, D)
                sv.append(torch.index_select(vc, 0, prefix_index).view(P, H, D).transpose(0, 1).contiguous())
            pair = []
            for cache in (kc, vc):
                own = torch.empty(B, H, cap, D, dtype=self.dtype, device=self.device)
                own[:, :, :n] = (
                    torch.index_select(cache, 0, read).view(B, nb * bs, H, D)[:, :n].transpose(1, 2)
                )
                # zeros, not stale memory: masked keys get probability 0, but 0 * NaN is NaN
                own[:, :, n:].zero_()
                pair.append(own)
            ks.append(pair[0])
            vs.append(pair[1])
        self.work = DecodeSet(rids, list(starts), P, sk or None, sv or None, ks, vs)
        return self.work
