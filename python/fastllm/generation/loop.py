"""Autoregressive generation for MiniGPT: a KV cache, a ragged batch, and the usual samplers.

Without a cache every new token re-runs the model over the whole sequence (quadratic); with one,
the prompt runs once (prefill) and each step runs one token per sequence against the stored keys
and values (decode). The contiguous cache here preallocates (B, kv_heads, prompt + new, head_dim)
per layer, which is the fastest layout for single-stream and static-batch generation; the paged
cache of `fastllm.generation.kvcache` serves many requests at once.

A ragged batch is left-padded: every row's last prompt token sits in the same column, so each
decode step is one (B, 1) forward. Pad slots are masked out of attention and do not count as
positions (each row's first real token is position 0), so a row generates what it would alone.

Sampling follows Hugging Face's order: repetition penalty (CTRL: positive logits divided by the
penalty, negative multiplied, over the tokens in the prompt and generated so far), temperature,
top-k, top-p (nucleus: the smallest set whose probability reaches p), min-p (tokens below
min_p x the top probability are dropped), then a draw; temperature=0 is greedy. A seed makes the
draw reproducible. Log-probabilities are of the chosen token under the model's unprocessed
distribution (log-softmax of the raw logits), as vLLM reports them.

>>> import torch
>>> from fastllm.model.gpt import MiniGPT, MiniGPTConfig
>>> _ = torch.manual_seed(0)
>>> model = MiniGPT(MiniGPTConfig.preset("tiny")).eval()
>>> out = generate(model, [[5, 6, 7], [8]], 3, temperature=0)
>>> [len(row) for row in out]
[6, 4]
>>> torch.equal(out[1], generate(model, torch.tensor([[8]]), 3, temperature=0)[0])
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from fastllm.generation.decode import NativeDecode

__all__ = ["KVCache", "SamplingParams", "generate", "sample_next", "process_logits"]


@dataclass
class SamplingParams:
    """How to pick each next token. temperature=0 is greedy.

    `stop`: token ids (an int or a list of ints and id sequences) and, with a tokenizer, strings;
    generation of a row ends after it produces one (the stop ids are kept in the output; the
    Engine cuts stop strings from its outputs' `text`). Only generated tokens are matched.
    """

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float = 1.0
    stop: Any = None
    seed: int | None = None
    logprobs: bool = False

    def __post_init__(self) -> None:
        if (
            isinstance(self.max_new_tokens, bool)
            or not isinstance(self.max_new_tokens, int)
            or self.max_new_tokens < 0
        ):
            raise ValueError(f"max_new_tokens must be an integer >= 0, got {self.max_new_tokens!r}")
        if not (
            isinstance(self.temperature, (int, float))
            and math.isfinite(self.temperature)
            and self.temperature >= 0
        ):
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if self.top_k is not None and (
            isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 1
        ):
            raise ValueError(f"top_k must be an integer >= 1 or None, got {self.top_k!r}")
        for name in ("top_p", "min_p"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and 0 < v <= 1):
                raise ValueError(f"{name} must be in (0, 1] or None, got {v!r}")
        if not (
            isinstance(self.repetition_penalty, (int, float))
            and math.isfinite(self.repetition_penalty)
            and self.repetition_penalty > 0
        ):
            raise ValueError(
                f"repetition_penalty must be a finite number > 0, got {self.repetition_penalty!r}"
            )
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0
        ):
            raise ValueError(f"seed must be an integer >= 0 or None, got {self.seed!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def stop_sequences(stop: Any) -> tuple[list[list[int]], list[str]]:
    """Split a `stop` argument into token-id sequences and strings."""
    if stop is None:
        return [], []
    if isinstance(stop, (int, str)) and not isinstance(stop, bool):
        stop = [stop]
    ids: list[list[int]] = []
    strings: list[str] = []
    for item in stop:
        if isinstance(item, str):
            if not item:
                raise ValueError("an empty stop string would stop at once")
            strings.append(item)
        elif isinstance(item, int) and not isinstance(item, bool):
            ids.append([item])
        elif (
            isinstance(item, Sequence)
            and item
            and all(isinstance(t, int) and not isinstance(t, bool) for t in item)
        ):
            ids.append([int(t) for t in item])
        else:
            raise TypeError(f"stop items must be token ids, id sequences or strings, got {item!r}")
    return ids, strings


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------


def process_logits(
    logits: torch.Tensor, params: SamplingParams, seen: torch.Tensor | None = None
) -> torch.Tensor:
    """The logits (B, V) after repetition penalty, temperature, top-k, top-p and min-p (-inf = excluded).

    `seen` (B, V) bool marks the tokens the repetition penalty applies to.
    """
    if logits.dtype != torch.float64:  # float64 models keep their precision (no ties from rounding)
        logits = logits.float()
    if params.repetition_penalty != 1.0 and seen is not None:
        penalised = torch.where(
            logits > 0, logits / params.repetition_penalty, logits * params.repetition_penalty
        )
        logits = torch.where(seen, penalised, logits)
    if params.greedy:
        return logits
    logits = logits / params.temperature
    if params.top_k is not None and params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k, dim=-1).values[..., -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p is not None and params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
        probs = sorted_logits.softmax(dim=-1)
        before = probs.cumsum(dim=-1) - probs  # probability mass strictly before each token
        drop_sorted = before >= params.top_p  # keep the smallest prefix that reaches top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    if params.min_p is not None:
        probs = logits.softmax(dim=-1)
        floor = params.min_p * probs.amax(dim=-1, keepdim=True)
        logits = logits.masked_fill(probs < floor, float("-inf"))
    return logits


def sample_next(
    logits: torch.Tensor,
    params: SamplingParams,
    seen: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Next token ids (B,) from logits (B, V)."""
    processed = process_logits(logits, params, seen)
    if params.greedy:
        return processed.argmax(dim=-1)
    probs = processed.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


# --------------------------------------------------------------------------------------------
# The contiguous cache
# --------------------------------------------------------------------------------------------


class _LayerKV:
    __slots__ = ("cache", "k", "v")

    def __init__(self, cache: KVCache, k: torch.Tensor, v: torch.Tensor) -> None:
        self.cache, self.k, self.v = cache, k, v

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        start, n = self.cache.length, k.shape[2]
        # narrow + copy_ rather than slice assignment: one C call each (a decode step makes 4 per layer)
        self.k.narrow(2, start, n).copy_(k)
        self.v.narrow(2, start, n).copy_(v)
        return self.k.narrow(2, 0, start + n), self.v.narrow(2, 0, start + n)  # (B, n_kv_head, end, head_dim)


class KVCache:
    """Keys and values of every layer, preallocated as (B, n_kv_head, capacity, head_dim)."""

    def __init__(
        self, model: Any, batch: int, capacity: int, device: torch.device, dtype: torch.dtype
    ) -> None:
        c = model.config
        shape = (batch, c.n_kv_head, capacity, c.head_dim)
        self.layers = [
            _LayerKV(
                self,
                torch.empty(shape, device=device, dtype=dtype),
                torch.empty(shape, device=device, dtype=dtype),
            )
            for _ in range(c.n_layer)
        ]
        self.length = 0  # slots filled (the same for every row: the batch is left-padded)
        self.capacity = capacity

    def advance(self, n: int) -> None:
        self.length += n


# --------------------------------------------------------------------------------------------
# generate
# --------------------------------------------------------------------------------------------


def _as_rows(input_ids: Any) -> tuple[list[list[int]], bool]:
    """(prompts as lists, whether the input was one tensor)."""
    if isinstance(input_ids, torch.Tensor):
        if input_ids.ndim == 1:
            input_ids = input_ids[None]
        if input_ids.ndim != 2 or input_ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise ValueError(
                f"input_ids must be an integer tensor of shape (B, T), got {input_ids.dtype} {tuple(input_ids.shape)}"
            )
        return input_ids.tolist(), True
    if (
        isinstance(input_ids, Sequence)
        and input_ids
        and all(isinstance(t, int) and not isinstance(t, bool) for t in input_ids)
    ):
        return [list(input_ids)], False
    rows = []
    for row in input_ids:
        if isinstance(row, torch.Tensor):
            row = row.tolist()
        if not isinstance(row, Sequence) or not all(
            isinstance(t, int) and not isinstance(t, bool) for t in row
        ):
            raise TypeError(f"each prompt must be a sequence of token ids, got {row!r}"[:200])
        rows.append(list(row))
    return rows, False


@torch.no_grad()
def generate(
    model: Any,
    input_ids: Any,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    repetition_penalty: float = 1.0,
    stop: Any = None,
    seed: int | None = None,
    use_cache: bool = True,
    tokenizer: Any = None,
    pad_token_id: int | None = None,
    return_logprobs: bool = False,
    callback: Any = None,
) -> Any:
    """Continue each prompt by up to `max_new_tokens` tokens.

    input_ids: a LongTensor (B, T) (or (T,)) -> a LongTensor (B, T + n), rows that stopped early
    padded with `pad_token_id` (default: the first stop id, else 0); a list of prompts (lists or
    1-D tensors, any lengths) -> a list of 1-D LongTensors, each its prompt plus what it generated.
    With `return_logprobs=True` the result is (output, logprobs): per row, the log-probability of
    each generated token. `use_cache=False` recomputes the whole sequence every step (the oracle).
    `callback(new)` is called after every step with a list of B entries: the token each row just
    produced, None for rows already stopped (the CLI streams with it).
    """
    params = SamplingParams(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        repetition_penalty=repetition_penalty,
        stop=stop,
        seed=seed,
    )
    stop_ids, stop_strings = stop_sequences(stop)
    if stop_strings and tokenizer is None:
        raise ValueError(f"stop strings {stop_strings!r} need tokenizer=... to decode the output")
    rows, tensor_in = _as_rows(input_ids)
    if not rows or any(len(r) == 0 for r in rows):
        raise ValueError("every prompt needs at least one token")
    c = model.config
    top = max(max(r) for r in rows)
    low = min(min(r) for r in rows)
    if low < 0 or top >= c.vocab_size:
        raise ValueError(
            f"token id {top if top >= c.vocab_size else low} is out of range for the model's vocab_size {c.vocab_size}"
        )
    B, P = len(rows), max(len(r) for r in rows)
    if P + max_new_tokens > c.context:
        raise ValueError(
            f"the longest prompt ({P} tokens) plus max_new_tokens={max_new_tokens} exceeds the model context={c.context}"
        )
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    was_training = model.training
    model.eval()
    total = P + max_new_tokens
    tokens = torch.zeros(B, total, dtype=torch.long, device=device)
    valid = torch.zeros(B, total, dtype=torch.bool, device=device)
    for i, r in enumerate(rows):  # left-pad
        tokens[i, P - len(r) : P] = torch.tensor(r, dtype=torch.long)
        valid[i, P - len(r) : P] = True
    padded = not bool(valid[:, :P].all())
    valid[:, P:] = True  # every generated slot is a real token (keys past `cur` are never read)
    positions_all = (valid.long().cumsum(dim=1) - 1).clamp(min=0)  # (B, total): real tokens count from 0
    seen = None
    if repetition_penalty != 1.0:
        seen = torch.zeros(B, c.vocab_size, dtype=torch.bool, device=device)
        for i, r in enumerate(rows):
            seen[i, r] = True
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    slot = torch.arange(total, device=device)

    def mask_for(q_start: int, q_end: int) -> torch.Tensor | None:
        if not padded:
            return None
        causal = slot[None, :q_end] <= slot[q_start:q_end, None]  # (Tq, Tk)
        own = slot[None, :q_end] == slot[q_start:q_end, None]  # a pad query sees itself: no empty rows
        keys = valid[:, None, :q_end] | own[None]  # (B, Tq, Tk)
        return (causal[None] & keys)[:, None]  # (B, 1, Tq, Tk)

    cache = KVCache(model, B, total, device, dtype) if use_cache else None
    plan = model.decode_plan() if use_cache and hasattr(model, "decode_plan") else None  # fused decode steps
    # Per-row state in Python lists, not tensors: at batch 1 a decode step is a few ms, and every
    # tensor op on the side (indexing, setitem, .all()) costs microseconds of dispatch.
    finished = [False] * B
    stopped: torch.Tensor | None = None  # (B,) bool mirror of `finished`, once a row has stopped
    generated: list[list[int]] = [[] for _ in range(B)]
    logprobs: list[list[float]] = [[] for _ in range(B)]
    if pad_token_id is not None and (isinstance(pad_token_id, bool) or not isinstance(pad_token_id, int)):
        raise TypeError(f"pad_token_id must be an int, got {pad_token_id!r}")
    pad = pad_token_id if pad_token_id is not None else (stop_ids[0][-1] if stop_ids else 0)
    cur = P
    native: NativeDecode | None = None  # one CPU float32 sequence: the Rust step after the prefill
    # greedy with nothing else to compute from the logits: the step answers the argmax itself
    native_greedy = params.greedy and seen is None and not return_logprobs
    new: list[int] = []
    for step in range(max_new_tokens):
        if native is not None and native_greedy:
            new = [native.step_greedy(new[0], cur - 1)]  # an unpadded row's position is its slot
        else:
            if native is not None:
                logits = native.step(new[0], cur - 1)[:, None]  # (1, 1, V)
            elif cache is not None:
                start = 0 if step == 0 else cur - 1  # prefill the prompt, then one token per step
                logits = model.forward_cached(
                    tokens[:, start:cur],
                    positions_all[:, start:cur],
                    cache.layers,
                    mask_for(start, cur),
                    last_only=True,
                    plan=plan,
                )
                cache.advance(cur - start)
                if step == 0 and B == 1 and plan is not None and getattr(plan, "native", None) is not None:
                    native = NativeDecode(plan, cache.layers, cur, total)
            else:
                logits = model.forward_cached(
                    tokens[:, :cur], positions_all[:, :cur], None, mask_for(0, cur), last_only=True
                )
            last = logits[:, -1]  # (B, V)
            if last.dtype != torch.float64:
                last = last.float()
            nxt = sample_next(last, params, seen, generator)  # (B,)
            if stopped is not None:
                nxt = nxt.masked_fill(stopped, 0)  # stopped rows: any valid id (never output)
            if return_logprobs:
                lp = F.log_softmax(last, dim=-1).gather(1, nxt[:, None]).squeeze(1).tolist()
            if native is None:
                tokens[:, cur] = nxt  # the next step's input (the native step takes ints)
            if seen is not None:
                seen[torch.arange(B, device=device), nxt] = True
            new = nxt.tolist()
        cur += 1
        if callback is not None:
            callback([None if was else t for was, t in zip(finished, new)])
        changed = False
        for i in range(B):
            if finished[i]:
                continue
            out = generated[i]
            out.append(new[i])
            if return_logprobs:
                logprobs[i].append(lp[i])
            done = any(len(out) >= len(seq) and out[-len(seq) :] == seq for seq in stop_ids)
            if stop_strings and not done:
                text = tokenizer.decode(out)
                done = any(s in text for s in stop_strings)
            if done:
                finished[i] = changed = True
        if all(finished):
            break
        if changed:
            stopped = torch.tensor(finished, dtype=torch.bool, device=device)
    model.train(was_training)
    out_rows = [torch.tensor(rows[i] + generated[i], dtype=torch.long, device=device) for i in range(B)]
    if tensor_in:
        width = P + (cur - P)
        out = torch.full((B, width), pad, dtype=torch.long, device=device)
        for i, r in enumerate(out_rows):
            out[i, : r.numel()] = r  # prompts of a tensor batch all have length P: no left padding
        result: Any = out
    else:
        result = out_rows
    if return_logprobs:
        return result, logprobs
    return result
