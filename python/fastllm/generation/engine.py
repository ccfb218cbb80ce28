"""`Engine`: many generation requests at once over a paged KV cache (continuous batching).

The control plane is the Rust `fastllm.generation.kvcache.BlockManager` (blocks, block tables, reference
counts, prefix cache, LRU eviction); this module is the data plane and the scheduler:

- K and V of every layer live in two tensors shaped (num_blocks, block_size, kv_heads, head_dim)
  on the model's device. A token at position p of a sequence lives in slot p % block_size of
  block table[p // block_size]; new keys/values are written there, attention reads a sequence's
  blocks back (a gather, then SDPA with a length mask).
- Each `step()`: admit waiting requests while blocks last (their prompt's cached prefix is reused:
  only the rest is computed), run prefill chunks within a token budget (chunked prefill: a long
  prompt does not stall the decodes of the others), then one batched decode step for every
  running sequence. Requests join and leave between steps.
- When a sequence needs a block and none is free, the most recently admitted running sequence is
  preempted: its blocks are freed and it goes back to the waiting queue with what it has
  generated, to be recomputed when there is room (vLLM's recompute preemption).

Greedy outputs are the same as `model.generate` on each prompt alone, whatever the arrival order.

>>> import torch
>>> from fastllm.model.gpt import MiniGPT, MiniGPTConfig
>>> from fastllm.generation.loop import SamplingParams
>>> _ = torch.manual_seed(0)
>>> model = MiniGPT(MiniGPTConfig.preset("tiny")).eval()
>>> engine = Engine(model, num_blocks=32, block_size=4)
>>> outs = engine.generate([[1, 2, 3], [4, 5]], SamplingParams(max_new_tokens=5, temperature=0))
>>> [len(o.token_ids) for o in outs]
[5, 5]
>>> outs[1].token_ids == model.generate([[4, 5]], 5, temperature=0)[0][2:].tolist()
True
"""

from __future__ import annotations

import itertools
import math
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from fastllm.generation.loop import SamplingParams, sample_next, stop_sequences

__all__ = ["Engine", "RequestOutput", "TokenEvent"]


@dataclass
class RequestOutput:
    """A finished request."""

    request_id: int
    prompt_token_ids: list[int]
    token_ids: list[int]  # generated tokens (a stop id is kept)
    text: str | None  # decoded generated text when the Engine has a tokenizer (stop strings cut)
    logprobs: list[float] | None  # per generated token, when params.logprobs
    finish_reason: str  # "stop" | "length"
    cached_tokens: int  # prompt tokens served from the prefix cache
    ttft_s: float  # submission -> first generated token
    latency_s: float  # submission -> finished
    preemptions: int = 0


@dataclass
class TokenEvent:
    """One streamed token: its id, the text it completes (with a tokenizer) and its log-probability."""

    token_id: int
    text: str
    logprob: float | None


@dataclass(eq=False)  # identity: `seq in self.running` must not compare every field
class _Seq:
    rid: int
    prompt: list[int]
    params: SamplingParams
    arrival: float
    generator: torch.Generator | None
    stop_ids: list[list[int]]
    stop_strings: list[str]
    out: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    computed: int = 0  # tokens whose K/V are in the cache
    cached: int = 0
    first_token: float | None = None
    finished: str | None = None
    preemptions: int = 0
    seen: torch.Tensor | None = None
    decoder: Any = None
    streaming: bool = False
    events: deque = field(default_factory=deque)

    @property
    def tokens(self) -> list[int]:
        return self.prompt + self.out


class _PagedLayerKV:
    """One layer's view of the paged cache for one forward call (the `update` protocol of MiniGPT)."""

    __slots__ = ("k_cache", "v_cache", "write_blocks", "write_offsets", "read_index", "read_len")

    def __init__(self, k_cache, v_cache, write_blocks, write_offsets, read_index, read_len) -> None:
        self.k_cache, self.v_cache = k_cache, v_cache
        self.write_blocks, self.write_offsets = write_blocks, write_offsets  # (B*T,) slots of the new tokens
        self.read_index, self.read_len = read_index, read_len  # (B, max_blocks) block ids; L keys to return

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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
        return ks.transpose(1, 2), vs.transpose(1, 2)  # (B, n_kv_head, L, head_dim)


class _DecodeSet:
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


class _DecodeLayerKV:
    """A layer's view for a decode step through a `_DecodeSet`: `attend` writes the new token's K/V
    to the paged cache and to the sequence's own buffer, then attends over shared + own keys."""

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

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
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
        qg = q.reshape(B, H, G, D) * (
            1.0 / math.sqrt(D)
        )  # (B, n_kv_head, G, head_dim), query heads grouped by kv head
        ko, vo = self.own_k[:, :, :S], self.own_v[:, :, :S]  # (B, n_kv_head, S, head_dim)
        scores = (
            torch.matmul(qg, ko.transpose(-1, -2)) + self.own_bias
        )  # (B, n_kv_head, G, S); -inf past each row's length
        if self.shared_k is not None:
            P = self.shared_k.shape[1]
            qs = qg.transpose(0, 1).reshape(
                H, B * G, D
            )  # (n_kv_head, B*G, head_dim): every sequence's queries together
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


class _KernelDecodeKV:
    """A layer's view for a decode step through the Triton paged-decode kernel (CUDA): the new
    token's K/V go to their slots, then the kernel reads every sequence's K/V through its block
    table, so there is no gathered copy to keep (`fastllm.kernels.paged_decode_attention`)."""

    __slots__ = ("k_cache", "v_cache", "write_blocks", "write_offsets", "tables", "lens", "max_context")

    def __init__(self, k_cache, v_cache, write_blocks, write_offsets, tables, lens, max_context) -> None:
        self.k_cache, self.v_cache = k_cache, v_cache
        self.write_blocks, self.write_offsets = write_blocks, write_offsets  # (B,) slot of each new token
        self.tables, self.lens, self.max_context = tables, lens, max_context  # (B, max_blocks), (B,), int

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        from fastllm.kernels import paged_decode_attention

        self.k_cache[self.write_blocks, self.write_offsets] = k[:, :, 0]  # (B, n_kv_head, head_dim)
        self.v_cache[self.write_blocks, self.write_offsets] = v[:, :, 0]
        y = paged_decode_attention(
            q[:, :, 0], self.k_cache, self.v_cache, self.tables, self.lens, max_context=self.max_context
        )  # (B, n_head, head_dim)
        return y[:, :, None]  # (B, n_head, 1, head_dim)


_DECODE_ATTENTION = ("auto", "triton", "torch")


class Engine:
    """Serve many generation requests at once; see the module docstring.

    num_blocks: KV blocks of `block_size` tokens (default: room for 16 sequences of the full
    context). max_batch_size: running sequences at most. prefill_chunk: prompt tokens computed per
    step across all prefills. enable_prefix_caching: reuse the K/V of full blocks whose tokens
    (and everything before them) were computed before. decode_attention: how a decode step
    attends over the paged cache: "triton" (the paged-decode kernel of `fastllm.kernels`, reading
    K/V through the block tables; CUDA, or the CPU under TRITON_INTERPRET=1), "torch" (a gathered
    copy of the running batch's K/V with the shared prefix apart, see `_DecodeSet`; the fast one
    on a CPU), or "auto": "triton" for a CUDA model when triton is installed and the model's
    dtype and head_dim are ones the kernel takes, else "torch".
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        num_blocks: int | None = None,
        block_size: int = 16,
        *,
        max_batch_size: int = 64,
        prefill_chunk: int = 512,
        enable_prefix_caching: bool = True,
        decode_attention: str = "auto",
    ) -> None:
        from fastllm.generation.kvcache import BlockManager

        c = model.config
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"block_size must be an integer >= 1, got {block_size!r}")
        if num_blocks is None:
            num_blocks = 16 * math.ceil(c.context / block_size)
        if isinstance(num_blocks, bool) or not isinstance(num_blocks, int) or num_blocks < 1:
            raise ValueError(f"num_blocks must be an integer >= 1, got {num_blocks!r}")
        for name, value in (("max_batch_size", max_batch_size), ("prefill_chunk", prefill_chunk)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if decode_attention not in _DECODE_ATTENTION:
            raise ValueError(
                f"decode_attention must be one of {', '.join(map(repr, _DECODE_ATTENTION))}, got {decode_attention!r}"
            )
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.max_batch_size = max_batch_size
        self.prefill_chunk = prefill_chunk
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = BlockManager(num_blocks, block_size, enable_prefix_caching=enable_prefix_caching)
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        shape = (num_blocks, block_size, c.n_kv_head, c.head_dim)
        self.k_cache = [torch.zeros(shape, device=self.device, dtype=self.dtype) for _ in range(c.n_layer)]
        self.v_cache = [torch.zeros(shape, device=self.device, dtype=self.dtype) for _ in range(c.n_layer)]
        self.waiting: deque[_Seq] = deque()
        self.running: list[_Seq] = []  # admitted: prefilling or decoding, in admission order
        self.done: dict[int, RequestOutput] = {}
        self._ids = itertools.count()
        self._seqs: dict[int, _Seq] = {}  # unfinished requests
        # Blocks whose every slot holds computed K/V. The block manager registers a full block in
        # its prefix cache when it is allocated; until its K/V are written another request must
        # not skip computing it.
        self._ready: set[int] = set()
        self._work: _DecodeSet | None = None  # the running batch's contiguous K/V (see _DecodeSet)
        if decode_attention == "auto":
            from fastllm import kernels

            fits = self.dtype in (torch.float16, torch.bfloat16, torch.float32) and 16 <= c.head_dim <= 256
            decode_attention = (
                "triton" if self.device.type == "cuda" and fits and kernels.is_available() else "torch"
            )
        self.decode_attention = decode_attention

    # -- requests -------------------------------------------------------------------------------

    def _encode(self, prompt: Any) -> list[int]:
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ValueError("a text prompt needs Engine(model, tokenizer=...)")
            return list(self.tokenizer.encode(prompt, allowed_special="all"))
        if isinstance(prompt, torch.Tensor):
            prompt = prompt.tolist()
        if not isinstance(prompt, Sequence) or not all(
            isinstance(t, int) and not isinstance(t, bool) for t in prompt
        ):
            raise TypeError(f"a prompt must be a str or a sequence of token ids, got {prompt!r}"[:200])
        return list(prompt)

    def add_request(self, prompt: Any, params: SamplingParams | None = None) -> int:
        """Queue a request; returns its id. It joins the running batch at the next `step()`."""
        params = params if params is not None else SamplingParams()
        if not isinstance(params, SamplingParams):
            raise TypeError(f"params must be SamplingParams, got {type(params).__name__}")
        ids = self._encode(prompt)
        c = self.model.config
        if not ids:
            raise ValueError("a prompt needs at least one token")
        bad = [t for t in ids if not 0 <= t < c.vocab_size]
        if bad:
            raise ValueError(f"token id {bad[0]} is out of range for the model's vocab_size {c.vocab_size}")
        if len(ids) >= c.context:
            raise ValueError(f"the prompt has {len(ids)} tokens; the model's context is {c.context}")
        need = math.ceil(min(len(ids) + params.max_new_tokens, c.context) / self.block_size)
        if need > self.num_blocks:
            raise ValueError(
                f"a request of {len(ids)} + {params.max_new_tokens} tokens needs {need} blocks; the cache has {self.num_blocks}"
            )
        stop_ids, stop_strings = stop_sequences(params.stop)
        if stop_strings and self.tokenizer is None:
            raise ValueError(f"stop strings {stop_strings!r} need Engine(model, tokenizer=...)")
        rid = next(self._ids)
        gen = (
            torch.Generator(device=self.device).manual_seed(params.seed) if params.seed is not None else None
        )
        seq = _Seq(rid, ids, params, time.perf_counter(), gen, stop_ids, stop_strings)
        if params.repetition_penalty != 1.0:
            seq.seen = torch.zeros(1, c.vocab_size, dtype=torch.bool, device=self.device)
            seq.seen[0, ids] = True
        if self.tokenizer is not None:
            seq.decoder = self.tokenizer.stream_decoder()
        self.waiting.append(seq)
        self._seqs[rid] = seq
        return rid

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    # -- scheduling -----------------------------------------------------------------------------

    def _admit(self) -> None:
        while self.waiting and len(self.running) < self.max_batch_size:
            seq = self.waiting[0]
            tokens = seq.tokens
            # The last generated token's K/V is computed by the next decode step, so a resumed
            # sequence re-prefills everything before it.
            alloc = self.blocks.allocate(seq.rid, tokens)
            if alloc is None:
                if not self.running:
                    raise RuntimeError(
                        f"request {seq.rid} cannot fit in an empty cache of {self.num_blocks} blocks"
                    )
                return
            self.waiting.popleft()
            reused = alloc.cached_tokens // self.block_size
            usable = 0
            while usable < reused and alloc.blocks[usable] in self._ready:
                usable += 1
            for b in alloc.blocks[reused:]:
                self._ready.discard(b)  # fresh blocks: whatever they held is stale
            cached = usable * self.block_size if self.enable_prefix_caching else 0
            if not seq.out:
                seq.cached = cached
            seq.computed = cached
            self.running.append(seq)

    def _preempt(self, keep: _Seq | None = None) -> _Seq | None:
        """Free the most recently admitted running sequence (not `keep`); requeue it first in line."""
        for victim in reversed(self.running):
            if victim is not keep:
                self.running.remove(victim)
                self.blocks.free(victim.rid)
                victim.computed = 0
                victim.preemptions += 1
                self.waiting.appendleft(victim)
                return victim
        return None

    def _forward(self, seqs: list[_Seq], starts: list[int], ends: list[int]) -> torch.Tensor:
        """Run tokens [start, end) of each sequence (equal lengths, or one sequence); logits of the last."""
        B, bs = len(seqs), self.block_size
        T = ends[0] - starts[0]
        ids = torch.tensor(
            [s.tokens[a:b] for s, a, b in zip(seqs, starts, ends)], dtype=torch.long, device=self.device
        )  # (B, T)
        pos = torch.tensor(
            [list(range(a, b)) for a, b in zip(starts, ends)], dtype=torch.long, device=self.device
        )  # (B, T)
        tables = [self.blocks.block_table(s.rid) for s in seqs]
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
            _PagedLayerKV(self.k_cache[i], self.v_cache[i], write_blocks, write_offsets, read, L)
            for i in range(self.model.config.n_layer)
        ]
        logits = self.model.forward_cached(ids, pos, kv, mask, last_only=True)  # (B, 1, V)
        for s, t, a, b in zip(seqs, tables, starts, ends):  # blocks now complete hold valid K/V for reuse
            self._ready.update(t[a // bs : b // bs])
            self.blocks.mark_computed(s.rid, b)  # the manager counts them as cached from now on
        last = logits[:, -1]  # (B, V)
        return last if last.dtype == torch.float64 else last.float()

    def _decode_forward(self, seqs: list[_Seq], ends: list[int]) -> torch.Tensor:
        """One new token per sequence through the decode set (see `_DecodeSet`) or the paged kernel; logits (B, V)."""
        B = len(seqs)
        starts = [e - 1 for e in ends]
        tables = [self.blocks.block_table(s.rid) for s in seqs]
        start_t = torch.tensor(starts, dtype=torch.long, device=self.device)  # (B,)
        write_blocks = torch.tensor(
            [t[p // self.block_size] for t, p in zip(tables, starts)], dtype=torch.long, device=self.device
        )
        write_offsets = start_t % self.block_size  # (B,): the new tokens' slots
        kv: list[Any]
        if self.decode_attention == "triton":
            width = max(len(t) for t in tables)
            table_t = torch.tensor(
                [t + [t[0]] * (width - len(t)) for t in tables], dtype=torch.int32, device=self.device
            )  # (B, max_blocks)
            lens = torch.tensor(
                ends, dtype=torch.int32, device=self.device
            )  # (B,): keys per sequence, the new token's included
            kv = [
                _KernelDecodeKV(
                    self.k_cache[i], self.v_cache[i], write_blocks, write_offsets, table_t, lens, max(ends)
                )
                for i in range(self.model.config.n_layer)
            ]
        else:
            rids = tuple(s.rid for s in seqs)
            work = self._work
            if work is None or work.rids != rids or work.lens != starts or max(ends) > work.capacity:
                work = self._build_decode_set(tables, rids, starts, max(ends))
            P = work.prefix
            S = max(ends) - P  # own keys to attend over
            own_pos = start_t - P
            keys = torch.arange(S, device=self.device)
            bias = torch.zeros(B, 1, 1, S, dtype=self.dtype, device=self.device)
            bias.masked_fill_(
                (keys[None, :] > own_pos[:, None])[:, None, None], float("-inf")
            )  # (B, 1, 1, S)
            rows = torch.arange(B, device=self.device)
            kv = [
                _DecodeLayerKV(
                    self.k_cache[i],
                    self.v_cache[i],
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
                for i in range(self.model.config.n_layer)
            ]
        ids = torch.tensor([[s.out[-1]] for s in seqs], dtype=torch.long, device=self.device)  # (B, 1)
        logits = self.model.forward_cached(
            ids, start_t[:, None], kv, None, plan=self.model.decode_plan()
        )  # (B, 1, V)
        if self.decode_attention != "triton":
            self._work.lens = list(ends)  # the decode set now holds these tokens' K/V too
        last = logits[:, -1]
        return last if last.dtype == torch.float64 else last.float()

    def _build_decode_set(
        self, tables: list[list[int]], rids: tuple[int, ...], starts: list[int], L: int
    ) -> _DecodeSet:
        B, bs = len(tables), self.block_size
        c = self.model.config
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
        for kc, vc in zip(self.k_cache, self.v_cache):
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
        self._work = _DecodeSet(rids, list(starts), P, sk or None, sv or None, ks, vs)
        return self._work

    def _emit(self, seq: _Seq, token: int, logits_row: torch.Tensor) -> None:
        now = time.perf_counter()
        if seq.first_token is None:
            seq.first_token = now
        seq.out.append(token)
        lp = float(F.log_softmax(logits_row, dim=-1)[token]) if seq.params.logprobs else None
        if lp is not None:
            seq.logprobs.append(lp)
        if seq.seen is not None:
            seq.seen[0, token] = True
        piece = seq.decoder.feed(token) if seq.decoder is not None else ""
        if seq.streaming:
            seq.events.append(TokenEvent(token, piece, lp))
        p = seq.params
        for stop in seq.stop_ids:
            if len(seq.out) >= len(stop) and seq.out[-len(stop) :] == stop:
                seq.finished = "stop"
        if seq.stop_strings and seq.finished is None:
            text = self.tokenizer.decode(seq.out)
            if any(s in text for s in seq.stop_strings):
                seq.finished = "stop"
        if seq.finished is None and (
            len(seq.out) >= p.max_new_tokens or len(seq.tokens) >= self.model.config.context
        ):
            seq.finished = "length"

    def _sample(self, seq: _Seq, logits_row: torch.Tensor) -> int:
        return int(sample_next(logits_row[None], seq.params, seq.seen, seq.generator)[0])

    def _finish(self, seq: _Seq) -> RequestOutput:
        self.running.remove(seq)
        self.blocks.free(seq.rid)
        now = time.perf_counter()
        text = None
        if self.tokenizer is not None:
            text = self.tokenizer.decode(seq.out)
            for s in seq.stop_strings:
                cut = text.find(s)
                if cut >= 0:
                    text = text[:cut]
        out = RequestOutput(
            request_id=seq.rid,
            prompt_token_ids=seq.prompt,
            token_ids=list(seq.out),
            text=text,
            logprobs=list(seq.logprobs) if seq.params.logprobs else None,
            finish_reason=seq.finished or "length",
            cached_tokens=seq.cached,
            ttft_s=(seq.first_token or now) - seq.arrival,
            latency_s=now - seq.arrival,
            preemptions=seq.preemptions,
        )
        self.done[seq.rid] = out
        del self._seqs[seq.rid]
        return out

    def _reserve_slot(self, seq: _Seq, token: int) -> bool:
        """Give `token` (just sampled) a KV slot, preempting others if blocks run out."""
        while True:
            slot = self.blocks.append(seq.rid, token)
            if slot is not None:
                if slot.offset == 0:
                    self._ready.discard(slot.block)
                if slot.copy is not None:  # copy-on-write of a shared, partly filled block
                    src, dst = slot.copy
                    for kc, vc in zip(self.k_cache, self.v_cache):
                        kc[dst].copy_(kc[src])
                        vc[dst].copy_(vc[src])
                return True
            if self._preempt(keep=seq) is None:
                return False

    def _prefill(self, chunks: list[tuple[_Seq, int, int]]) -> list[RequestOutput]:
        """Run prompt chunks (seq, start, tokens), those of one length together; sample the first
        token of every prompt that is now complete. Returns the requests that finished."""
        by_len: dict[int, list[tuple[_Seq, int, int]]] = {}
        for chunk in chunks:
            by_len.setdefault(chunk[2], []).append(chunk)
        logits: dict[int, torch.Tensor] = {}
        for n, group in by_len.items():
            rows = self._forward(
                [c[0] for c in group], [c[1] for c in group], [c[1] + n for c in group]
            )  # (B, V)
            for i, (seq, _, _) in enumerate(group):
                logits[seq.rid] = rows[i]
        finished: list[RequestOutput] = []
        for seq, start, n in chunks:  # in admission order, as if run one by one
            if seq not in self.running:
                continue  # preempted by an earlier chunk's block demand: recomputed later
            seq.computed = start + n
            if seq.computed == len(seq.tokens) and not seq.out:  # prompt done: its first token
                row = logits[seq.rid]
                token = self._sample(seq, row)
                self._emit(seq, token, row)
                if seq.finished is not None or not self._reserve_slot(seq, token):
                    seq.finished = seq.finished or "length"
                    finished.append(self._finish(seq))
        return finished

    @torch.no_grad()
    def step(self) -> list[RequestOutput]:
        """One scheduling step: admit, prefill within the token budget, decode. Returns the requests that finished."""
        finished: list[RequestOutput] = []
        self._admit()
        # Prefill: chunks of the prompts not yet computed, oldest first, within the budget. Chunks
        # of equal length run as one batched forward (32 requests' suffixes after a shared system
        # prompt: one (32, 16) forward instead of 32 (1, 16) ones); a chunk that could reuse blocks
        # another pending chunk is writing waits for that chunk to run first.
        budget, bs = self.prefill_chunk, self.block_size
        pending: list[tuple[_Seq, int, int]] = []  # (seq, start, tokens)
        writing: set[int] = set()  # blocks the pending chunks fill
        for seq in list(self.running):
            if seq not in self.running:
                continue  # preempted meanwhile
            target = len(seq.tokens) - (1 if seq.out else 0)  # a resumed sequence's last token is decoded
            table = self.blocks.block_table(seq.rid)
            if self.enable_prefix_caching:
                if writing and not writing.isdisjoint(table[seq.computed // bs : target // bs]):
                    finished += self._prefill(pending)
                    pending, writing = [], set()
                    if seq not in self.running:
                        continue
                # Skip the blocks whose K/V became valid since admission: requests admitted together
                # with the one that computes a shared prefix reuse it as soon as it is written.
                while (
                    seq.computed % bs == 0
                    and seq.computed + bs <= target - 1
                    and table[seq.computed // bs] in self._ready
                ):
                    seq.computed += bs
                    if not seq.out:
                        seq.cached = max(seq.cached, seq.computed)
            if seq.computed >= target or budget <= 0:
                continue
            n = min(target - seq.computed, budget)
            pending.append((seq, seq.computed, n))
            writing.update(table[seq.computed // bs : (seq.computed + n) // bs])
            budget -= n
        finished += self._prefill(pending)
        # Decode: one token for every sequence whose prompt is computed.
        ready = [s for s in self.running if s.out and s.computed == len(s.tokens) - 1]
        if ready:
            ends = [len(s.tokens) for s in ready]
            logits = self._decode_forward(ready, ends)  # (B, V)
            for s in ready:
                s.computed += 1
                if s.computed % bs == 0:  # its last block is full and written: generated text is reusable
                    self.blocks.mark_computed(s.rid, s.computed)
            greedy = all(s.params.greedy and s.seen is None for s in ready)
            if greedy:  # numpy's argmax is SIMD (~10x torch's here); the same first-max and NaN rule
                tokens = (logits.numpy() if logits.device.type == "cpu" else logits).argmax(-1).tolist()
            else:
                tokens = [self._sample(s, logits[i]) for i, s in enumerate(ready)]
            for i, s in enumerate(ready):
                if s not in self.running:
                    continue  # preempted by an earlier row's block demand: recomputed later
                self._emit(s, tokens[i], logits[i])
                if s.finished is not None:
                    finished.append(self._finish(s))
                elif not self._reserve_slot(s, tokens[i]):
                    s.finished = "length"
                    finished.append(self._finish(s))
        return finished

    # -- convenience ----------------------------------------------------------------------------

    def generate(
        self, prompts: Sequence[Any], params: SamplingParams | Sequence[SamplingParams] | None = None
    ) -> list[RequestOutput]:
        """Run every prompt to completion; outputs in the order of `prompts`."""
        if isinstance(prompts, (str, torch.Tensor)) or (
            isinstance(prompts, Sequence) and prompts and isinstance(prompts[0], int)
        ):
            prompts = [prompts]  # one prompt
        plist = list(params) if isinstance(params, Sequence) else [params] * len(prompts)
        if len(plist) != len(prompts):
            raise ValueError(f"{len(plist)} SamplingParams for {len(prompts)} prompts")
        rids = [self.add_request(p, sp) for p, sp in zip(prompts, plist)]
        while any(r not in self.done for r in rids):
            self.step()
        return [self.done.pop(r) for r in rids]

    def stream(self, prompt: Any, params: SamplingParams | None = None) -> Iterator[TokenEvent]:
        """Yield this request's tokens as they are generated (other queued requests advance too)."""
        rid = self.add_request(prompt, params)
        seq = self._seqs[rid]
        seq.streaming = True
        while True:
            while seq.events:
                yield seq.events.popleft()
            if rid in self.done:
                if seq.decoder is not None:
                    tail = seq.decoder.flush()
                    if tail:
                        yield TokenEvent(-1, tail, None)
                self.done.pop(rid)
                return
            self.step()

    def stats(self) -> dict[str, Any]:
        """The block manager's figures plus the queue lengths."""
        s: dict[str, Any] = self.blocks.stats().as_dict()
        s.update(waiting=len(self.waiting), running=len(self.running))
        return s
