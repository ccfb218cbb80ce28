"""The Engine's scheduler: which requests run, which prompt chunks are computed in a step, and
who gives up its blocks when they run out.

The control plane is the Rust block manager (`fastllm.generation.kvcache.BlockManager`: blocks,
block tables, reference counts, prefix cache, LRU eviction); the scheduler drives it in the order
of nano-vllm's and vLLM's schedulers:

- `admit`: waiting requests join the running batch while blocks last (a prompt's cached prefix is
  reused: only the rest is computed) and the batch has room.
- `prefill_waves`: chunks of the prompts not yet computed, oldest first, within a token budget per
  step (chunked prefill: a long prompt does not stall the decodes of the others). Chunks of equal
  length run as one batched forward; a chunk that would reuse blocks another pending chunk is
  writing waits for that chunk to run first (a new wave).
- `decode_batch`: every running sequence whose prompt is computed decodes one token per step.
- `reserve_slot`: a block slot for each new token; when none is free the most recently admitted
  running sequence is preempted: its blocks are freed and it goes back to the front of the queue
  with what it has generated, to be recomputed when there is room (vLLM's recompute preemption).

The block manager registers a full block in its prefix cache when the block is allocated, before
its K/V are computed, so the scheduler tracks which cached blocks hold K/V (the readiness
section at the end of `Scheduler`: the only code that knows how).

>>> import torch
>>> from fastllm.generation.kvcache import BlockManager
>>> from fastllm.generation.paged import PagedKV
>>> from fastllm.generation.sampling import Sampler, SamplingParams
>>> from fastllm.generation.sequence import Seq
>>> from fastllm.model.gpt import MiniGPTConfig
>>> c = MiniGPTConfig.preset("tiny")
>>> kv = PagedKV(c, num_blocks=8, block_size=4, device=torch.device("cpu"), dtype=torch.float32)
>>> sched = Scheduler(BlockManager(8, 4), kv, max_batch_size=4, prefill_chunk=6)
>>> p = SamplingParams()
>>> for rid, prompt in enumerate([[1, 2, 3, 4, 5], [6, 7, 8]]):
...     sched.add(Seq(rid, p, Sampler(p, [prompt], c.vocab_size), arrival=0.0))
>>> sched.admit()
>>> [(chunk.seq.rid, chunk.start, chunk.tokens) for wave in sched.prefill_waves() for chunk in wave]
[(0, 0, 5), (1, 0, 1)]
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any, NamedTuple

from fastllm.generation.kvcache import BlockManager
from fastllm.generation.paged import PagedKV
from fastllm.generation.sequence import Seq

__all__ = ["Chunk", "Scheduler"]


class Chunk(NamedTuple):
    """Prompt tokens [start, start + tokens) of `seq` to compute in one forward."""

    seq: Seq
    start: int
    tokens: int


class Scheduler:
    """Admission, chunked prefill, decode batches and preemption over one block manager.

    `waiting` (a queue) and `running` (in admission order) hold the unfinished requests. The
    caller runs the forwards: for each wave of `prefill_waves` it computes the chunks and calls
    `prefilled`, then `decode_batch`, `decoded`, and `reserve_slot` for each sampled token;
    `finish` drops a finished request, `abort` an unfinished one.
    """

    def __init__(
        self,
        blocks: BlockManager,
        kv: PagedKV,
        *,
        max_batch_size: int,
        prefill_chunk: int,
        enable_prefix_caching: bool = True,
    ) -> None:
        self.blocks, self.kv = blocks, kv
        self.block_size = kv.block_size
        self.max_batch_size, self.prefill_chunk = max_batch_size, prefill_chunk
        self.enable_prefix_caching = enable_prefix_caching
        self.waiting: deque[Seq] = deque()
        self.running: list[Seq] = []  # admitted: prefilling or decoding, in admission order

    def add(self, seq: Seq) -> None:
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def is_running(self, seq: Seq) -> bool:
        return seq in self.running

    def admit(self) -> None:
        """Move waiting requests into the running batch while their blocks fit."""
        while self.waiting and len(self.running) < self.max_batch_size:
            seq = self.waiting[0]
            # The last generated token's K/V is computed by the next decode step, so a resumed
            # sequence re-prefills everything before it.
            alloc = self.blocks.allocate(seq.rid, seq.tokens)
            if alloc is None:
                if not self.running:
                    raise RuntimeError(
                        f"request {seq.rid} cannot fit in an empty cache of {self.blocks.num_blocks} blocks"
                    )
                return
            self.waiting.popleft()
            # `cached_tokens` counts the leading shared blocks whose K/V are written (the block
            # manager is told by `mark_computed`); shared blocks still being written are skipped
            # later, in `prefill_waves`, once their writer has run.
            seq.computed = alloc.cached_tokens
            if not seq.out:
                seq.cached = seq.computed
            self.running.append(seq)

    def prefill_waves(self) -> Iterator[list[Chunk]]:
        """This step's prompt chunks, in waves: run (and `prefilled`) each wave before asking for
        the next, since a later chunk may reuse the blocks an earlier one writes."""
        budget, bs = self.prefill_chunk, self.block_size
        pending: list[Chunk] = []
        writing: set[int] = set()  # blocks the pending chunks fill
        for seq in list(self.running):
            if seq not in self.running:
                continue  # preempted meanwhile
            target = len(seq.tokens) - (1 if seq.out else 0)  # a resumed sequence's last token is decoded
            table = self.blocks.block_table(seq.rid)
            if self.enable_prefix_caching:
                if writing and not writing.isdisjoint(table[seq.computed // bs : target // bs]):
                    yield pending
                    pending, writing = [], set()
                    if seq not in self.running:
                        continue
                # Skip the blocks whose K/V became valid since admission: requests admitted together
                # with the one that computes a shared prefix reuse it as soon as it is written.
                skip = self._computed_prefix(seq, table, target - 1)
                if skip > seq.computed:
                    seq.computed = skip
                    if not seq.out:
                        seq.cached = max(seq.cached, skip)
            if seq.computed >= target or budget <= 0:
                continue
            n = min(target - seq.computed, budget)
            pending.append(Chunk(seq, seq.computed, n))
            writing.update(table[seq.computed // bs : (seq.computed + n) // bs])
            budget -= n
        if pending:
            yield pending

    def prefilled(self, seq: Seq, end: int) -> None:
        """The forward of a chunk of `seq` ending at token `end` has run: its K/V are written."""
        self._mark_written(seq, end)

    def decode_batch(self) -> list[Seq]:
        """The running sequences that decode this step: those whose prompt is computed."""
        return [s for s in self.running if s.out and s.computed == len(s.prompt) + len(s.out) - 1]

    def decoded(self, seqs: list[Seq]) -> None:
        """A decode forward over `seqs` has run: each one's newest token has K/V now."""
        for s in seqs:
            self._mark_written(s, s.computed + 1)

    def reserve_slot(self, seq: Seq, token: int) -> bool:
        """Give `token` (just sampled for `seq`) a KV slot, preempting others if blocks run out;
        False when even that cannot make room."""
        while True:
            slot = self.blocks.append(seq.rid, token)
            if slot is not None:
                if slot.copy is not None:  # copy-on-write of a shared, partly filled block
                    self.kv.copy_block(*slot.copy)
                return True
            if self._preempt(keep=seq) is None:
                return False

    def finish(self, seq: Seq) -> None:
        """Drop a finished running request and free its blocks."""
        self.running.remove(seq)
        self.blocks.free(seq.rid)

    def abort(self, seq: Seq) -> None:
        """Drop an unfinished request wherever it is: a waiting one (no blocks: never admitted, or
        preempted) leaves the queue, a running one also frees its blocks."""
        if seq in self.running:
            self.finish(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)

    def _preempt(self, keep: Seq | None = None) -> Seq | None:
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

    def stats(self) -> dict[str, Any]:
        """The block manager's figures plus the queue lengths."""
        s: dict[str, Any] = self.blocks.stats().as_dict()
        s.update(waiting=len(self.waiting), running=len(self.running))
        return s

    # -- readiness: which cached blocks hold K/V --------------------------------------------------
    # The block manager is the one source of truth: a full block is in its prefix cache from
    # allocation on, but counts as holding K/V only once `mark_computed` says a forward wrote it
    # (a block handed out again is not computed until it is written anew).

    def _computed_prefix(self, seq: Seq, table: list[int], limit: int) -> int:
        """How far `seq.computed` can advance over whole blocks of `table` whose K/V are in the
        cache, without passing `limit` tokens."""
        n, bs = seq.computed, self.block_size
        if not self.enable_prefix_caching:
            return n
        while n % bs == 0 and n + bs <= limit and self.blocks.is_computed(table[n // bs]):
            n += bs
        return n

    def _mark_written(self, seq: Seq, end: int) -> None:
        """`seq`'s tokens [seq.computed, end) now have K/V in the cache; blocks they complete are
        computed from now on."""
        if end // self.block_size > seq.computed // self.block_size:
            self.blocks.mark_computed(seq.rid, end)
        seq.computed = end
