"""`generate`: autoregressive generation of a static batch with a contiguous KV cache.

Without a cache every new token re-runs the model over the whole sequence (quadratic); with one,
the prompt runs once (prefill) and each step runs one token per sequence against the stored keys
and values (decode). The contiguous cache (`fastllm.generation.contiguous`) is the fastest layout
for single-stream and static-batch generation; the Engine serves many requests at once.

A ragged batch is left-padded: every row's last prompt token sits in the same column, so each
decode step is one (B, 1) forward. Pad slots are masked out of attention and do not count as
positions (each row's first real token is position 0), so a row generates what it would alone.

Which forward runs is decided here: the prompt goes through `model.forward_cached`, each one-token
step through the model's fused `DecodePlan` when it has one (else `forward_cached` again), and at
batch 1 on a CPU in float32 every step after the prefill through the Rust step (`NativeDecode`),
which answers the argmax itself when the sampler needs nothing else. Tokens are chosen and
recorded by one `Sampler` (`fastllm.generation.sampling`), the Engine's too.

>>> import torch
>>> from fastllm.model.gpt import MiniGPT, MiniGPTConfig
>>> _ = torch.manual_seed(0)
>>> model = MiniGPT(MiniGPTConfig.preset("tiny")).eval()
>>> greedy = SamplingParams(max_new_tokens=3, temperature=0)
>>> out = generate(model, [[5, 6, 7], [8]], greedy)
>>> [len(row) for row in out]
[6, 4]
>>> torch.equal(out[1], generate(model, torch.tensor([[8]]), greedy)[0])
True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from fastllm._checks import check_bool, check_optional_int
from fastllm.generation.contiguous import KVCache
from fastllm.generation.decode import DecodePlan, NativeDecode
from fastllm.generation.sampling import Sampler, SamplingParams

__all__ = ["generate"]


def _as_rows(input_ids: Any) -> tuple[list[Any], bool]:
    """(the prompts, whether the input was one tensor); each prompt is checked by the Sampler."""
    if isinstance(input_ids, torch.Tensor):
        if input_ids.ndim == 1:
            input_ids = input_ids[None]
        if input_ids.ndim != 2 or input_ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise ValueError(
                "input_ids must be an integer tensor of shape (B, T), got "
                f"{input_ids.dtype} {tuple(input_ids.shape)}"
            )
        return input_ids.tolist(), True
    if (
        isinstance(input_ids, Sequence)
        and input_ids
        and all(isinstance(t, int) and not isinstance(t, bool) for t in input_ids)
    ):
        return [input_ids], False  # a flat list of ids is one prompt
    if not isinstance(input_ids, Sequence) or isinstance(input_ids, str):
        raise TypeError(f"prompts must be a tensor or a list of prompts, not {type(input_ids).__name__}")
    return list(input_ids), False


@torch.no_grad()
def generate(
    model: Any,
    prompts: Any,
    params: SamplingParams,
    *,
    use_cache: bool = True,
    tokenizer: Any = None,
    pad_token_id: int | None = None,
    callback: Callable[[list[int | None]], Any] | None = None,
) -> Any:
    """Continue each prompt by up to `params.max_new_tokens` tokens.

    prompts: a LongTensor (B, T) (or (T,)) -> a LongTensor (B, T + n), rows that stopped early
    padded with `pad_token_id` (default: the first stop id, else 0); a list of prompts (lists or
    1-D tensors, any lengths; a flat list of ids is one prompt) -> a list of 1-D LongTensors,
    each its prompt plus what it generated. With `params.logprobs` the result is (output,
    logprobs): per row, the log-probability of each generated token. `use_cache=False`
    recomputes the whole sequence every step (the oracle). `tokenizer` decodes the output for
    stop strings. `callback(new)` is called after every step with a list of B entries: the token
    each row just produced, None for rows already stopped (the CLI streams with it).
    `MiniGPT.generate(input_ids, max_new_tokens, **kwargs)` is the short form.
    """
    use_cache = check_bool(use_cache, "use_cache")
    pad_token_id = check_optional_int(pad_token_id, "pad_token_id")
    rows, tensor_in = _as_rows(prompts)
    c = model.config
    p0 = next(model.parameters())
    device, dtype = p0.device, p0.dtype
    sampler = Sampler(params, rows, c.vocab_size, device=device, tokenizer=tokenizer)
    rows = sampler.prompts
    B, P = len(rows), max(len(r) for r in rows)
    max_new = params.max_new_tokens
    if P + max_new > c.context:
        raise ValueError(
            f"the longest prompt ({P} tokens) plus max_new_tokens={max_new} exceeds the model "
            f"context={c.context}"
        )
    was_training = model.training
    model.eval()
    total = P + max_new
    tokens = torch.zeros(B, total, dtype=torch.long, device=device)
    valid = torch.zeros(B, total, dtype=torch.bool, device=device)
    for i, r in enumerate(rows):  # left-pad
        tokens[i, P - len(r) : P] = torch.tensor(r, dtype=torch.long)
        valid[i, P - len(r) : P] = True
    padded = not bool(valid[:, :P].all())
    valid[:, P:] = True  # every generated slot is a real token (keys past `cur` are never read)
    positions_all = (valid.long().cumsum(dim=1) - 1).clamp(min=0)  # (B, total): real tokens count from 0
    slot = torch.arange(total, device=device)

    def mask_for(q_start: int, q_end: int) -> torch.Tensor | None:
        if not padded:
            return None
        causal = slot[None, :q_end] <= slot[q_start:q_end, None]  # (Tq, Tk)
        own = slot[None, :q_end] == slot[q_start:q_end, None]  # a pad query sees itself: no empty rows
        keys = valid[:, None, :q_end] | own[None]  # (B, Tq, Tk)
        return (causal[None] & keys)[:, None]  # (B, 1, Tq, Tk)

    cache = KVCache(model, B, total, device, dtype) if use_cache else None
    plan = DecodePlan.for_model(model) if use_cache else None  # the fused one-token step, or None
    # Per-row state in Python lists (the sampler's), not tensors: at batch 1 a decode step is a
    # few ms, and every tensor op on the side (indexing, setitem, .all()) costs microseconds.
    stopped: torch.Tensor | None = None  # (B,) bool mirror of sampler.finished, once a row has stopped
    pad = pad_token_id if pad_token_id is not None else (sampler.stop_ids[0][-1] if sampler.stop_ids else 0)
    cur = P
    native: NativeDecode | None = None  # one CPU float32 sequence: the Rust step after the prefill
    new: list[int] = []
    for step in range(max_new):
        logits: torch.Tensor | None = None  # (B, V)
        if native is not None and not sampler.needs_logits:
            new = [native.step_greedy(new[0], cur - 1)]  # an unpadded row's position is its slot
        else:
            if native is not None:
                logits = native.step(new[0], cur - 1)
            elif cache is not None:
                start = 0 if step == 0 else cur - 1  # prefill the prompt, then one token per step
                if plan is not None and cur - start == 1:
                    logits = plan.step(
                        tokens[:, start], positions_all[:, start], cache.layers, mask_for(start, cur)
                    )
                else:
                    logits = model.forward_cached(
                        tokens[:, start:cur],
                        positions_all[:, start:cur],
                        cache.layers,
                        mask_for(start, cur),
                        last_only=True,
                    )[:, -1]
                cache.advance(cur - start)
                if step == 0 and B == 1 and plan is not None and plan.native is not None:
                    native = NativeDecode(plan, cache.layers, cur, total)
            else:
                logits = model.forward_cached(
                    tokens[:, :cur], positions_all[:, :cur], None, mask_for(0, cur), last_only=True
                )[:, -1]
            nxt = sampler.choose(logits)  # (B,)
            if stopped is not None:
                nxt = nxt.masked_fill(stopped, 0)  # stopped rows: any valid id (never output)
            if native is None:
                tokens[:, cur] = nxt  # the next step's input (the native step takes ints)
            new = nxt.tolist()
        cur += 1
        if callback is not None:
            callback([None if was else t for was, t in zip(sampler.finished, new)])
        if sampler.accept(new, logits):
            if all(sampler.finished):
                break
            stopped = torch.tensor(sampler.finished, dtype=torch.bool, device=device)
    model.train(was_training)
    out_rows = [torch.tensor(r + g, dtype=torch.long, device=device) for r, g in zip(rows, sampler.out)]
    result: Any = out_rows
    if tensor_in:
        out = torch.full((B, cur), pad, dtype=torch.long, device=device)
        for i, r in enumerate(out_rows):
            out[i, : r.numel()] = r  # prompts of a tensor batch all have length P: no left padding
        result = out
    if params.logprobs:
        return result, sampler.logprobs
    return result
