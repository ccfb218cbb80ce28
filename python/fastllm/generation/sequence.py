"""`Seq`: one Engine request's state as it moves between the waiting queue and the running batch.

What it generated, its log-probabilities, its stop matching and its random generator are its
`Sampler`'s (the one `generate` uses); this adds what scheduling needs: how many of its tokens
have K/V in the cache (`computed`), how many prompt tokens the prefix cache served (`cached`),
timings for the output, preemptions, and the streaming side (a text decoder and the events not
yet yielded). A preempted sequence keeps all of it and is recomputed from its tokens.

>>> from fastllm.generation.sampling import Sampler, SamplingParams
>>> params = SamplingParams(max_new_tokens=4)
>>> seq = Seq(0, params, Sampler(params, [[1, 2, 3]], vocab_size=8), arrival=0.0)
>>> seq.sampler.accept([5])
False
>>> seq.prompt, seq.out, seq.tokens, seq.computed
([1, 2, 3], [5], [1, 2, 3, 5], 0)
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from fastllm.generation.sampling import Sampler, SamplingParams

__all__ = ["Seq"]


@dataclass(eq=False)  # identity: `seq in running` must not compare every field
class Seq:
    """One request: its prompt and generated tokens are its sampler's single row."""

    rid: int
    params: SamplingParams
    sampler: Sampler
    arrival: float  # time.perf_counter() at submission
    computed: int = 0  # leading tokens whose K/V are in the cache
    cached: int = 0  # prompt tokens served from the prefix cache
    first_token: float | None = None  # time of the first generated token
    finished: str | None = None  # "stop" | "length" once done
    preemptions: int = 0
    decoder: Any = None  # the tokenizer's stream decoder, with a tokenizer
    events: deque | None = None  # streamed TokenEvents not yet yielded, while streaming
    prompt: list[int] = field(init=False)  # the sampler's row, by reference
    out: list[int] = field(init=False)  # generated so far (the sampler's row, by reference)

    def __post_init__(self) -> None:
        self.prompt, self.out = self.sampler.prompts[0], self.sampler.out[0]

    @property
    def tokens(self) -> list[int]:
        return self.prompt + self.out
