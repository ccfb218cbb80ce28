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

Outputs are handed over once: `step()` returns the requests that finished (and forgets them),
`generate` returns its own, `stream` yields its tokens. A stream whose consumer stops early (the
generator closed or garbage-collected) aborts its request, as `abort(request_id)` does: it leaves
the batch and its KV blocks are freed at once. `max_new_tokens=0` finishes a request with no
tokens (finish reason "length"), as `generate` makes none.

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
>>> first = next(engine.stream([1, 2, 3], SamplingParams(max_new_tokens=50)))  # then abandoned
>>> engine.stats()["used"], engine.stats()["running"]
(0, 0)
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

from fastllm._checks import check_bool, check_choice, check_int, check_type, check_vocab_pair
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
        if tokenizer is not None and hasattr(tokenizer, "vocab_size"):
            check_vocab_pair(tokenizer.vocab_size, c.vocab_size)
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
        # Finished outputs not yet handed over: those of `add_request` requests that finished
        # during a `generate` or `stream` call (the next `step()` returns them), and those with
        # max_new_tokens=0 (finished on arrival). Nothing stays here once taken.
        self.done: dict[int, RequestOutput] = {}
        self._ids = itertools.count()
        self._seqs: dict[int, Seq] = {}  # unfinished requests
        # Requests a `generate` or `stream` call is waiting for: their output (None until done)
        # goes to that call, never to `step()`'s caller.
        self._claimed: dict[int, RequestOutput | None] = {}
        self._stepping = False
        self._deferred_aborts: list[int] = []  # aborts asked for during a step (by a finalizer)

    # -- requests -------------------------------------------------------------------------------

    def add_request(self, prompt: Any, params: SamplingParams | None = None) -> int:
        """Queue a request (token ids, or a str with a tokenizer); returns its id. It joins the
        running batch at the next `step()`, which returns its `RequestOutput` when it finishes."""
        return self._add(prompt, params, claimed=False)

    def _add(self, prompt: Any, params: SamplingParams | None, *, claimed: bool) -> int:
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
        if claimed:
            self._claimed[rid] = None
        if params.max_new_tokens == 0:  # done before it starts: no tokens, no blocks
            seq.finished = "length"
            self._deliver([self._output(seq)], pending=True)
            return rid
        self.scheduler.add(seq)
        self._seqs[rid] = seq
        return rid

    def abort(self, request_id: int) -> bool:
        """Stop request `request_id`: it leaves the queue or the running batch and its KV blocks
        are freed; no output is made (one finished but not yet handed over is dropped). Returns
        whether there was such a request. Safe from a finalizer: during a step, the abort is
        applied as the step ends."""
        if self._stepping:
            self._deferred_aborts.append(request_id)
            return request_id in self._seqs or request_id in self.done or request_id in self._claimed
        seq = self._seqs.pop(request_id, None)
        if seq is not None:
            self.scheduler.abort(seq)
        found = seq is not None
        found |= self.done.pop(request_id, None) is not None
        if request_id in self._claimed:
            del self._claimed[request_id]
            found = True
        return found

    def has_unfinished(self) -> bool:
        """Whether `step()` has work left or outputs to hand over."""
        return self.scheduler.has_unfinished() or bool(self.done)

    # -- one step -------------------------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        """One scheduling step: admit, prefill within the token budget, decode. Returns the
        `add_request` requests that finished (now, or during an earlier `generate`/`stream` call);
        each output is returned once and not kept."""
        new = self._run_step()
        out = list(self.done.values())
        self.done.clear()
        return out + new

    def _run_step(self) -> list[RequestOutput]:
        """One step; the outputs of requests a `generate`/`stream` call waits for go to it, the
        rest are returned."""
        self._stepping = True
        try:
            finished = self._step()
        finally:
            self._stepping = False
        unclaimed = self._deliver(finished, pending=False)
        while self._deferred_aborts:
            rid = self._deferred_aborts.pop()
            self.abort(rid)
            unclaimed = [o for o in unclaimed if o.request_id != rid]
        return unclaimed

    def _deliver(self, outputs: list[RequestOutput], *, pending: bool) -> list[RequestOutput]:
        """Hand claimed outputs to their `generate`/`stream` call; the others are returned, or kept
        in `done` for the next `step()` when `pending`."""
        rest = []
        for o in outputs:
            if o.request_id in self._claimed:
                self._claimed[o.request_id] = o
            elif pending:
                self.done[o.request_id] = o
            else:
                rest.append(o)
        return rest

    def _advance(self) -> None:
        """A step run by `generate` or `stream`: other requests' outputs wait in `done`."""
        for o in self._run_step():
            self.done[o.request_id] = o

    @torch.no_grad()
    def _step(self) -> list[RequestOutput]:
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
        del self._seqs[seq.rid]
        return self._output(seq)

    def _output(self, seq: Seq) -> RequestOutput:
        now = time.perf_counter()
        text = None
        if self.tokenizer is not None:
            text = seq.sampler.cut_stop_string(self.tokenizer.decode(seq.out))
        return RequestOutput(
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
        rids: list[int] = []
        try:
            for p, sp in zip(prompts, plist):
                rids.append(self._add(p, sp, claimed=True))
            while any(self._claimed.get(r, 0) is None for r in rids):
                self._advance()
            lost = [r for r in rids if r not in self._claimed]
            if lost:
                raise RuntimeError(f"request(s) {lost} were aborted before they finished")
            outs = [self._claimed.pop(r) for r in rids]
            return [o for o in outs if o is not None]  # all of them: none was lost
        finally:
            for r in rids:  # an error or an interrupt: nothing of this call stays queued
                if r in self._claimed:
                    self.abort(r)

    def stream(self, prompt: Any, params: SamplingParams | None = None) -> Iterator[TokenEvent]:
        """Yield this request's tokens as they are generated (other queued requests advance too).

        Closing the generator early (`break` out of the loop, `.close()`, or dropping it) aborts
        the request: it stops decoding and its KV blocks are freed."""
        rid = self._add(prompt, params, claimed=True)
        seq = self._seqs.get(rid)  # None: finished on arrival (max_new_tokens=0)
        if seq is not None:
            seq.events = deque()
            if self.tokenizer is not None:
                seq.decoder = self.tokenizer.stream_decoder()
        try:
            while True:
                while seq is not None and seq.events:
                    yield seq.events.popleft()
                if self._claimed.get(rid, 0) is not None:  # finished, or aborted (gone)
                    if (
                        self._claimed.pop(rid, None) is not None
                        and seq is not None
                        and seq.decoder is not None
                    ):
                        tail = seq.decoder.flush()
                        if tail:
                            yield TokenEvent(-1, tail, None)
                    return
                self._advance()
        finally:
            if rid in self._claimed:  # the consumer stopped early
                self.abort(rid)

    def stats(self) -> dict[str, Any]:
        """The block manager's figures plus the queue lengths."""
        return self.scheduler.stats()
