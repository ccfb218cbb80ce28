"""Sampling: the settings (`SamplingParams`) and the one sampler (`Sampler`) that both `generate`
and the `Engine` pick tokens with.

Why one object per request: everything that depends on a request's history lives in it — the
prompt (validated once), the tokens generated so far, the seen-token mask of the repetition
penalty, the seeded random generator, stop matching (ids and strings) and log-probabilities — so
`generate` (a static batch: one sampler over B rows that share their settings) and the Engine (one
sampler per request) cannot drift apart, and a new penalty lands here only.

Processing follows Hugging Face's order: repetition penalty (CTRL: positive logits divided by the
penalty, negative multiplied, over the tokens in the prompt and generated so far), temperature,
top-k, top-p (nucleus: the smallest set whose probability reaches p), min-p (tokens below
min_p x the top probability are dropped), then a draw; temperature=0 is greedy, and a greedy
choice is `argmax`: the first maximum, NaN counting as the largest (torch.argmax's rule). A seed
makes the draw reproducible. Log-probabilities are of the chosen token under the model's
unprocessed distribution (log-softmax of the raw logits), as vLLM reports them. Logits are worked
on in float32, or float64 when the model computes in float64 (no ties made by rounding).

>>> import torch
>>> sampler = Sampler(SamplingParams(temperature=0, stop=[2], logprobs=True), [[1, 3]], vocab_size=4)
>>> logits = torch.tensor([[0.0, 0.0, 1.0, 0.5]])
>>> token = sampler.choose(logits)
>>> token.tolist(), sampler.accept(token.tolist(), logits)  # token 2 is a stop id: the row is done
([2], True)
>>> sampler.out, sampler.finished, [round(x, 3) for x in sampler.logprobs[0]]
([[2]], [True], [-0.851])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from fastllm._checks import check_bool, check_float, check_int, check_optional_int, check_vocab_pair

__all__ = ["Sampler", "SamplingParams", "argmax", "choose_each", "process_logits", "stop_sequences"]


@dataclass
class SamplingParams:
    """How to pick each next token. temperature=0 is greedy.

    `stop`: token ids (an int or a list of ints and id sequences) and, with a tokenizer, strings;
    generation of a row ends after it produces one (the stop ids are kept in the output; the
    Engine cuts stop strings from its outputs' `text`). Only generated tokens are matched.
    Wrong types raise TypeError, values out of range ValueError, each naming the field.
    """

    max_new_tokens: int = 64
    temperature: float = 1.0  # 0 = greedy
    top_k: int | None = None  # None = no top-k cut
    top_p: float | None = None  # in (0, 1]; None = no nucleus cut; the top token always stays
    min_p: float | None = None  # in (0, 1]; None = no min-p cut
    repetition_penalty: float = 1.0  # 1.0 = none (CTRL's penalty, > 0)
    stop: Any = None  # token ids, id sequences and strings
    seed: int | None = None  # None = torch's global generator
    logprobs: bool = False  # report each generated token's log-probability

    def __post_init__(self) -> None:
        self.max_new_tokens = check_int(self.max_new_tokens, "max_new_tokens", minimum=0)
        self.temperature = check_float(self.temperature, "temperature", minimum=0.0)
        self.top_k = check_optional_int(self.top_k, "top_k", minimum=1)
        for name in ("top_p", "min_p"):
            v = getattr(self, name)
            if v is not None:
                setattr(self, name, check_float(v, name, minimum=0.0, maximum=1.0, min_open=True))
        self.repetition_penalty = check_float(
            self.repetition_penalty, "repetition_penalty", minimum=0.0, min_open=True
        )
        self.seed = check_optional_int(self.seed, "seed", minimum=0)
        self.logprobs = check_bool(self.logprobs, "logprobs")
        stop_sequences(self.stop)  # raises for a malformed stop argument now, not at the first token

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


def _upcast(logits: torch.Tensor) -> torch.Tensor:
    """float32 logits, or float64 ones kept (float64 models keep their precision: no rounding ties)."""
    return logits if logits.dtype in (torch.float64, torch.float32) else logits.float()


def argmax(logits: torch.Tensor) -> torch.Tensor:
    """The greedy choice (B,) int64 of logits (B, V): the first maximum of each row, a NaN counting
    as the largest (torch.argmax's rule). On the CPU through numpy, whose argmax is SIMD and has
    the same rule (~10x faster than torch's for one row of a large vocabulary)."""
    x = _upcast(logits)
    if x.device.type != "cpu":
        return x.argmax(dim=-1)
    if x.requires_grad:
        x = x.detach()
    return torch.from_numpy(x.numpy().argmax(-1))


_TINY_TEMPERATURE = 1e-4  # below it, logits are shifted before scaling (see process_logits)


def process_logits(
    logits: torch.Tensor, params: SamplingParams, seen: torch.Tensor | None = None
) -> torch.Tensor:
    """The logits (B, V) after repetition penalty, temperature, top-k, top-p and min-p (-inf = excluded).

    `seen` (B, V) bool marks the tokens the repetition penalty applies to.
    """
    logits = _upcast(logits)
    if params.repetition_penalty != 1.0 and seen is not None:
        penalised = torch.where(
            logits > 0, logits / params.repetition_penalty, logits * params.repetition_penalty
        )
        logits = torch.where(seen, penalised, logits)
    if params.greedy:
        return logits
    if params.temperature < _TINY_TEMPERATURE:
        # logits / temperature could overflow to +inf (float32 tops out at 3.4e38; softmax of inf
        # is NaN), and a temperature below 1.4e-45 is 0 in float32: in float64 (which holds any
        # positive float temperature), with the row's largest logit moved to 0 first, the largest
        # scaled logit is 0 and no probability changes. Only tiny temperatures pay for this.
        logits = logits.double()
        logits = logits - logits.amax(dim=-1, keepdim=True)
    logits = logits / params.temperature
    if params.top_k is not None and params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k, dim=-1).values[..., -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p is not None and params.top_p < 1.0:
        # stable: among equal logits the first id leads, as in argmax
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True, stable=True)  # (B, V)
        probs = sorted_logits.softmax(dim=-1)
        before = probs.cumsum(dim=-1) - probs  # probability mass strictly before each token
        drop_sorted = before >= params.top_p  # keep the smallest prefix that reaches top_p
        # The most likely token always stays (HF's min_tokens_to_keep=1): a top_p below float32's
        # smallest value compares as 0 and would drop every token; top_p -> 0 is greedy.
        drop_sorted[..., 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    if params.min_p is not None:
        probs = logits.softmax(dim=-1)
        floor = params.min_p * probs.amax(dim=-1, keepdim=True)
        logits = logits.masked_fill(probs < floor, float("-inf"))
    return logits


def _token_ids(prompt: Any) -> list[int]:
    if isinstance(prompt, torch.Tensor):
        prompt = prompt.tolist()
    if (
        not isinstance(prompt, Sequence)
        or isinstance(prompt, str)
        or not all(isinstance(t, int) and not isinstance(t, bool) for t in prompt)
    ):
        raise TypeError(f"each prompt must be a sequence of token ids, got {prompt!r}"[:200])
    return list(prompt)


class Sampler:
    """The sampling state of one request: `prompts` (one row, or a static batch of rows that share
    `params`), the tokens each row generated (`out`), their log-probabilities (`logprobs`, with
    params.logprobs) and which rows have stopped (`finished`).

    The prompts are checked here (token-id sequences, at least one token each, every id below
    `vocab_size`), as are stop strings (they need `tokenizer` to be matched). `choose` picks the
    next token of every row from the model's logits; `accept` records them.
    """

    __slots__ = (
        "params",
        "prompts",
        "out",
        "logprobs",
        "finished",
        "seen",
        "generator",
        "stop_ids",
        "stop_strings",
        "tokenizer",
        "plain_greedy",
        "_rows",
    )

    def __init__(
        self,
        params: SamplingParams,
        prompts: Sequence[Any],
        vocab_size: int,
        *,
        device: torch.device | str = "cpu",
        tokenizer: Any = None,
    ) -> None:
        if not isinstance(params, SamplingParams):
            raise TypeError(f"params must be SamplingParams, not {type(params).__name__}")
        rows = [_token_ids(p) for p in prompts]
        if not rows or any(not r for r in rows):
            raise ValueError("every prompt needs at least one token")
        low, top = min(min(r) for r in rows), max(max(r) for r in rows)
        if low < 0 or top >= vocab_size:
            bad = top if top >= vocab_size else low
            raise ValueError(f"token id {bad} is out of range for the model's vocab_size {vocab_size}")
        if tokenizer is not None and hasattr(tokenizer, "vocab_size"):
            check_vocab_pair(tokenizer.vocab_size, vocab_size)
        self.stop_ids, self.stop_strings = stop_sequences(params.stop)
        if self.stop_strings and tokenizer is None:
            raise ValueError(f"stop strings {self.stop_strings!r} need a tokenizer to be matched")
        self.params, self.prompts, self.tokenizer = params, rows, tokenizer
        B = len(rows)
        self.out: list[list[int]] = [[] for _ in range(B)]
        self.logprobs: list[list[float]] = [[] for _ in range(B)]
        self.finished = [False] * B
        self._rows = torch.arange(B, device=device)
        self.seen: torch.Tensor | None = None  # (B, V) bool: the tokens the repetition penalty hits
        if params.repetition_penalty != 1.0:
            self.seen = torch.zeros(B, vocab_size, dtype=torch.bool, device=device)
            for i, r in enumerate(rows):
                self.seen[i, r] = True
        self.generator = None
        if params.seed is not None:
            self.generator = torch.Generator(device=device).manual_seed(params.seed)
        # The choice is the argmax of the raw logits: no state to apply, nothing to draw.
        self.plain_greedy = params.greedy and self.seen is None

    @property
    def needs_logits(self) -> bool:
        """Whether `choose` or `accept` reads the logits (False: the argmax alone will do, which a
        fused decode step can answer without making them)."""
        return not self.plain_greedy or self.params.logprobs

    def choose(self, logits: torch.Tensor) -> torch.Tensor:
        """The next token (B,) int64 of every row, from its logits (B, V); changes no state except
        advancing the random generator."""
        if self.plain_greedy:
            return argmax(logits)
        processed = process_logits(logits, self.params, self.seen)
        if self.params.greedy:
            return argmax(processed)
        probs = processed.softmax(dim=-1)
        return torch.multinomial(probs, 1, generator=self.generator).squeeze(-1)

    def accept(self, tokens: list[int], logits: torch.Tensor | None = None) -> bool:
        """Record one new token per row (rows already finished are left alone; their entry can
        be any valid id) and whether it completes a stop; `logits` (B, V) are the ones the tokens
        were chosen from (needed with params.logprobs). Returns whether a row stopped now."""
        assert len(tokens) == len(self.out), (len(tokens), len(self.out))  # one token per row
        lps = None
        if self.params.logprobs:
            if logits is None:
                raise ValueError("logprobs=True needs the logits the tokens were chosen from")
            lps = F.log_softmax(_upcast(logits), dim=-1)[self._rows, tokens].tolist()
        if self.seen is not None:
            self.seen[self._rows, tokens] = True
        stopped = False
        for i, token in enumerate(tokens):
            if self.finished[i]:
                continue
            out = self.out[i]
            out.append(token)
            if lps is not None:
                self.logprobs[i].append(lps[i])
            if self._stops(out):
                self.finished[i] = stopped = True
        return stopped

    def _stops(self, out: list[int]) -> bool:
        """Whether the generated tokens `out` end with a stop id sequence or contain a stop string."""
        for stop in self.stop_ids:
            if len(out) >= len(stop) and out[-len(stop) :] == stop:
                return True
        if self.stop_strings:
            text = self.tokenizer.decode(out)
            return any(s in text for s in self.stop_strings)
        return False

    def cut_stop_string(self, text: str) -> str:
        """`text` up to the first stop string it contains (the Engine's output text)."""
        for s in self.stop_strings:
            cut = text.find(s)
            if cut >= 0:
                text = text[:cut]
        return text


def choose_each(samplers: Sequence[Sampler], logits: torch.Tensor) -> list[int]:
    """Row i of `logits` (B, V) chosen by `samplers[i]` (one row each): the Engine's decode step.
    The plain greedy rows share one `argmax` call over the batch."""
    tokens: list[int] = (
        argmax(logits).tolist() if any(s.plain_greedy for s in samplers) else [0] * len(samplers)
    )
    for i, s in enumerate(samplers):
        if not s.plain_greedy:
            tokens[i] = int(s.choose(logits[i : i + 1])[0])
    return tokens
