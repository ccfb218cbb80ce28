"""`Engine`: many generation requests at once over a paged KV cache (continuous batching).

The Engine is the front: requests in (`add_request`, `generate`, `stream`), outputs out
(`RequestOutput`, `TokenEvent`), and each `step()` runs what the parts decide, as nano-vllm
splits it:

- `fastllm.generation.sequence`: a request's state (`Seq`), its tokens chosen and recorded by the
  one `Sampler` that `generate` uses too;
- `fastllm.generation.scheduler`: admission, chunked prefill within a token budget, which
  sequences decode, preemption when blocks run out, prefix-cache reuse;
- `fastllm.generation.paged`: the K/V tensors and the views the model reads and writes them
  through (prefill, and decode steps over a shared prefix once or through the Triton kernel);
- the model: `forward_cached` for prompt chunks, the fused `DecodePlan` step for decodes.

Requests join and leave between steps. Greedy outputs are the same as `model.generate` on each
prompt alone, whatever the arrival order.

>>> import torch
>>> from fastllm.model.gpt import MiniGPT, MiniGPTConfig
>>> from fastllm.generation.sampling import SamplingParams
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
from dataclasses import dataclass
from typing import Any

import torch

from fastllm._checks import check_bool, check_choice, check_int, check_type
from fastllm.generation.decode import DecodePlan
from fastllm.generation.kvcache import BlockManager
from fastllm.generation.paged import DECODE_ATTENTION, PagedKV
from fastllm.generation.sampling import Sampler, SamplingParams, choose_each
from fastllm.generation.scheduler import Chunk, Scheduler
from fastllm.generation.sequence import Seq

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


class Engine:
    """Serve many generation requests at once; see the module docstring.

    num_blocks: KV blocks of `block_size` tokens (default: room for 16 sequences of the full
    context). max_batch_size: running sequences at most. prefill_chunk: prompt tokens computed per
    step across all prefills. enable_prefix_caching: reuse the K/V of full blocks whose tokens
    (and everything before them) were computed before. decode_attention: how a decode step
    attends over the paged cache: "triton" (the paged-decode kernel of `fastllm.kernels`, reading
    K/V through the block tables; CUDA, or the CPU under TRITON_INTERPRET=1), "torch" (a gathered
    copy of the running batch's K/V with the shared prefix apart, see
    `fastllm.generation.paged.DecodeSet`; the fast one on a CPU), or "auto": "triton" for a CUDA
    model when triton is installed and the model's dtype and head_dim are ones the kernel takes,
    else "torch".
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
        c = model.config
        block_size = check_int(block_size, "block_size", minimum=1)
        if num_blocks is None:
            num_blocks = 16 * math.ceil(c.context / block_size)
        num_blocks = check_int(num_blocks, "num_blocks", minimum=1)
        max_batch_size = check_int(max_batch_size, "max_batch_size", minimum=1)
        prefill_chunk = check_int(prefill_chunk, "prefill_chunk", minimum=1)
        enable_prefix_caching = check_bool(enable_prefix_caching, "enable_prefix_caching")
        check_choice(decode_attention, "decode_attention", DECODE_ATTENTION)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.block_size = block_size
        self.num_blocks = num_blocks
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.kv = PagedKV(c, num_blocks, block_size, self.device, self.dtype, decode_attention)
        self.decode_attention = self.kv.decode_attention  # "auto" resolved
        self.blocks = BlockManager(num_blocks, block_size, enable_prefix_caching=enable_prefix_caching)
        self.scheduler = Scheduler(
            self.blocks,
            self.kv,
            max_batch_size=max_batch_size,
            prefill_chunk=prefill_chunk,
            enable_prefix_caching=enable_prefix_caching,
        )
        self.done: dict[int, RequestOutput] = {}
        self._ids = itertools.count()
        self._seqs: dict[int, Seq] = {}  # unfinished requests

    # -- requests -------------------------------------------------------------------------------

    def add_request(self, prompt: Any, params: SamplingParams | None = None) -> int:
        """Queue a request (token ids, or a str with a tokenizer); returns its id. It joins the
        running batch at the next `step()`."""
        params = check_type(params if params is not None else SamplingParams(), "params", SamplingParams)
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ValueError("a text prompt needs Engine(model, tokenizer=...)")
            prompt = list(self.tokenizer.encode(prompt, allowed_special="all"))
        c = self.model.config
        sampler = Sampler(params, [prompt], c.vocab_size, device=self.device, tokenizer=self.tokenizer)
        ids = sampler.prompts[0]
        if len(ids) >= c.context:
            raise ValueError(f"the prompt has {len(ids)} tokens; the model's context is {c.context}")
        need = math.ceil(min(len(ids) + params.max_new_tokens, c.context) / self.block_size)
        if need > self.num_blocks:
            raise ValueError(
                f"a request of {len(ids)} + {params.max_new_tokens} tokens needs {need} blocks; "
                f"the cache has {self.num_blocks}"
            )
        rid = next(self._ids)
        seq = Seq(rid, params, sampler, time.perf_counter())
        self.scheduler.add(seq)
        self._seqs[rid] = seq
        return rid

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished()

    # -- one step -------------------------------------------------------------------------------

    @torch.no_grad()
    def step(self) -> list[RequestOutput]:
        """One scheduling step: admit, prefill within the token budget, decode. Returns the
        requests that finished."""
        sched = self.scheduler
        finished: list[RequestOutput] = []
        sched.admit()
        for chunks in sched.prefill_waves():
            finished += self._prefill(chunks)
        ready = sched.decode_batch()
        if ready:
            logits = self._decode_forward(ready)  # (B, V)
            sched.decoded(ready)
            tokens = choose_each([s.sampler for s in ready], logits)
            for i, s in enumerate(ready):
                if not sched.is_running(s):
                    continue  # preempted by an earlier row's block demand: recomputed later
                self._emit(s, tokens[i], logits[i : i + 1] if s.params.logprobs else None)
                if s.finished is not None:
                    finished.append(self._finish(s))
                elif not sched.reserve_slot(s, tokens[i]):
                    s.finished = "length"
                    finished.append(self._finish(s))
        return finished

    def _prefill(self, chunks: list[Chunk]) -> list[RequestOutput]:
        """Run prompt chunks, those of one length together; sample the first token of every
        prompt that is now complete. Returns the requests that finished."""
        by_len: dict[int, list[Chunk]] = {}
        for chunk in chunks:
            by_len.setdefault(chunk.tokens, []).append(chunk)
        logits: dict[int, torch.Tensor] = {}
        for n, group in by_len.items():
            rows = self._forward(
                [c.seq for c in group], [c.start for c in group], [c.start + n for c in group]
            )  # (B, V)
            for i, c in enumerate(group):
                self.scheduler.prefilled(c.seq, c.start + n)
                logits[c.seq.rid] = rows[i : i + 1]
        finished: list[RequestOutput] = []
        for seq, _, _ in chunks:  # in admission order, as if run one by one
            if not self.scheduler.is_running(seq):
                continue  # preempted by an earlier chunk's block demand: recomputed later
            if seq.computed == len(seq.tokens) and not seq.out:  # prompt done: its first token
                row = logits[seq.rid]  # (1, V)
                token = int(seq.sampler.choose(row)[0])
                self._emit(seq, token, row)
                if seq.finished is not None or not self.scheduler.reserve_slot(seq, token):
                    seq.finished = seq.finished or "length"
                    finished.append(self._finish(seq))
        return finished

    def _forward(self, seqs: list[Seq], starts: list[int], ends: list[int]) -> torch.Tensor:
        """Run tokens [start, end) of each sequence (equal lengths, or one sequence); logits
        (B, V) of the last."""
        ids = torch.tensor(
            [s.tokens[a:b] for s, a, b in zip(seqs, starts, ends)], dtype=torch.long, device=self.device
        )  # (B, T)
        pos = torch.tensor(
            [list(range(a, b)) for a, b in zip(starts, ends)], dtype=torch.long, device=self.device
        )  # (B, T)
        tables = [self.blocks.block_table(s.rid) for s in seqs]
        kv, mask = self.kv.prefill_views(tables, pos, ends)
        return self.model.forward_cached(ids, pos, kv, mask, last_only=True)[:, -1]  # (B, V)

    def _decode_forward(self, seqs: list[Seq]) -> torch.Tensor:
        """One new token per sequence: the fused decode step when the model has one, else the
        module path, over the paged views; logits (B, V)."""
        starts = [s.computed for s in seqs]  # the newest token's position
        tables = [self.blocks.block_table(s.rid) for s in seqs]
        positions = torch.tensor(starts, dtype=torch.long, device=self.device)  # (B,)
        kv = self.kv.decode_views(tuple(s.rid for s in seqs), tables, starts, positions)
        ids = torch.tensor([s.out[-1] for s in seqs], dtype=torch.long, device=self.device)  # (B,)
        plan = DecodePlan.for_model(self.model)
        if plan is not None:
            logits = plan.step(ids, positions, kv, None)
        else:
            logits = self.model.forward_cached(ids[:, None], positions[:, None], kv, None)[:, -1]
        self.kv.decoded([p + 1 for p in starts])
        return logits

    def _emit(self, seq: Seq, token: int, logits: torch.Tensor | None) -> None:
        """Record `token` for `seq` (`logits` (1, V) it was chosen from, needed for logprobs)."""
        if seq.first_token is None:
            seq.first_token = time.perf_counter()
        stopped = seq.sampler.accept([token], logits)
        if seq.events is not None:
            piece = seq.decoder.feed(token) if seq.decoder is not None else ""
            lp = seq.sampler.logprobs[0][-1] if seq.params.logprobs else None
            seq.events.append(TokenEvent(token, piece, lp))
        if stopped:
            seq.finished = "stop"
        elif len(seq.out) >= seq.params.max_new_tokens or len(seq.prompt) + len(seq.out) >= (
            self.model.config.context
        ):
            seq.finished = "length"

    def _finish(self, seq: Seq) -> RequestOutput:
        self.scheduler.finish(seq)
        now = time.perf_counter()
        text = None
        if self.tokenizer is not None:
            text = seq.sampler.cut_stop_string(self.tokenizer.decode(seq.out))
        out = RequestOutput(
            request_id=seq.rid,
            prompt_token_ids=seq.prompt,
            token_ids=list(seq.out),
            text=text,
            logprobs=list(seq.sampler.logprobs[0]) if seq.params.logprobs else None,
            finish_reason=seq.finished or "length",
            cached_tokens=seq.cached,
            ttft_s=(seq.first_token or now) - seq.arrival,
            latency_s=now - seq.arrival,
            preemptions=seq.preemptions,
        )
        self.done[seq.rid] = out
        del self._seqs[seq.rid]
        return out

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
        seq.events = deque()
        if self.tokenizer is not None:
            seq.decoder = self.tokenizer.stream_decoder()
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
        return self.scheduler.stats()
