"""The sampler (`fastllm.generation.sampling`) alone, on random logits, against plain references.

Oracles:
- `argmax`: a pure-Python scan (the first maximum, a NaN counting as the largest) and
  `torch.argmax`, on rows full of ties, NaNs and infinities, in float32, float64 and bfloat16;
- `Sampler`: a plain reference written with Python sets and lists — the seen tokens of each row
  as a set, the repetition penalty and the greedy choice in Python floats (float64 logits, so
  Python's arithmetic is torch's bit for bit), stop matching by slicing, log-probabilities by a
  hand-written log-sum-exp — over several steps of a batch whose rows stop at different times;
  sampled choices use `process_logits` (itself checked against transformers in test_generate.py)
  and a generator of the same seed, so the reference checks the state the sampler keeps between
  steps (seen tokens, the generator advanced once per step, finished rows left alone);
- `choose_each` (the Engine's batched choice): each sampler choosing its own row alone;
- `SamplingParams`: wrong types raise TypeError, values out of range ValueError, naming the field.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fastllm.generation.sampling import Sampler, SamplingParams, argmax, choose_each, process_logits


def _first_max(row: list[float]) -> int:
    best = 0
    for j, x in enumerate(row):
        if math.isnan(x):
            return j  # NaN is the largest; the first one wins
        if x > row[best]:
            best = j
    return best


_values = st.sampled_from([0.0, 1.0, -1.0, 2.5, float("inf"), float("-inf"), float("nan"), -0.0, 1e30])


@settings(max_examples=200, deadline=None)
@given(
    rows=st.integers(1, 4).flatmap(
        lambda V: st.lists(st.lists(_values, min_size=V, max_size=V), min_size=1, max_size=4)
    ),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16]),
)
def test_argmax_is_first_max_with_nan_largest(rows, dtype):
    x = torch.tensor(rows, dtype=dtype)
    got = argmax(x)
    assert got.dtype == torch.int64 and got.shape == (len(rows),)
    assert got.tolist() == [_first_max(r) for r in x.double().tolist()]
    assert torch.equal(got, torch.argmax(x.float(), dim=-1))


class _Letters:
    """A tokenizer stand-in: token t decodes to the letter chr(97 + t)."""

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(97 + t) for t in ids)


class _Reference:
    """The sampler's job written plainly: Python sets, lists and floats."""

    def __init__(self, params: SamplingParams, prompts, stop_ids, stop_strings) -> None:
        self.params = params
        self.seen = [set(r) for r in prompts]
        self.out: list[list[int]] = [[] for _ in prompts]
        self.logprobs: list[list[float]] = [[] for _ in prompts]
        self.finished = [False] * len(prompts)
        self.stop_ids, self.stop_strings = stop_ids, stop_strings
        self.generator = None if params.seed is None else torch.Generator().manual_seed(params.seed)

    def choose(self, logits: torch.Tensor) -> list[int]:
        p = self.params
        B, V = logits.shape
        if p.greedy:
            out = []
            for i, row in enumerate(logits.tolist()):
                if p.repetition_penalty != 1.0:
                    pen = p.repetition_penalty
                    row = [
                        (x / pen if x > 0 else x * pen) if j in self.seen[i] else x for j, x in enumerate(row)
                    ]
                out.append(_first_max(row))
            return out
        seen = torch.zeros(B, V, dtype=torch.bool)
        for i, s in enumerate(self.seen):
            seen[i, sorted(s)] = True
        probs = process_logits(logits, p, seen).softmax(dim=-1)
        return torch.multinomial(probs, 1, generator=self.generator).squeeze(-1).tolist()

    def accept(self, tokens: list[int], logits: torch.Tensor) -> None:
        for i, t in enumerate(tokens):
            if self.finished[i]:
                continue
            self.seen[i].add(t)
            self.out[i].append(t)
            row = logits[i].tolist()
            m = max(row)
            self.logprobs[i].append(row[t] - (m + math.log(sum(math.exp(x - m) for x in row))))
            text = _Letters().decode(self.out[i])
            if any(self.out[i][-len(s) :] == s for s in self.stop_ids if len(self.out[i]) >= len(s)) or any(
                s in text for s in self.stop_strings
            ):
                self.finished[i] = True


@st.composite
def _cases(draw):
    V = draw(st.integers(2, 10))
    B = draw(st.integers(1, 3))
    prompts = draw(st.lists(st.lists(st.integers(0, V - 1), min_size=1, max_size=5), min_size=B, max_size=B))
    stop_ids = draw(st.lists(st.lists(st.integers(0, V - 1), min_size=1, max_size=2), max_size=2))
    letters = "".join(chr(97 + t) for t in range(V))
    stop_strings = draw(st.lists(st.text(letters, min_size=1, max_size=2), max_size=1))
    params = SamplingParams(
        max_new_tokens=8,
        temperature=draw(st.sampled_from([0.0, 0.0, 0.5, 1.0, 1.7])),
        top_k=draw(st.none() | st.integers(1, V + 1)),
        top_p=draw(st.none() | st.floats(0.2, 1.0)),
        min_p=draw(st.none() | st.floats(0.01, 1.0)),
        repetition_penalty=draw(st.sampled_from([1.0, 1.3, 0.7])),
        stop=[*stop_ids, *stop_strings] or None,
        seed=draw(st.integers(0, 2**32)),
        logprobs=draw(st.booleans()),
    )
    steps = draw(st.integers(1, 8))
    seed = draw(st.integers(0, 2**16))
    return params, prompts, stop_ids, stop_strings, V, steps, seed


@settings(max_examples=300, deadline=None)
@given(case=_cases())
def test_sampler_matches_plain_reference(case):
    params, prompts, stop_ids, stop_strings, V, steps, seed = case
    sampler = Sampler(params, prompts, V, tokenizer=_Letters())
    ref = _Reference(params, prompts, stop_ids, stop_strings)
    assert sampler.plain_greedy == (params.greedy and params.repetition_penalty == 1.0)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        # float64 logits on a coarse grid: ties are common, and Python floats compute as torch does
        logits = torch.randint(-6, 7, (len(prompts), V), generator=g).double() / 4
        got = sampler.choose(logits).tolist()
        want = ref.choose(logits)
        live = [i for i, done in enumerate(ref.finished) if not done]
        assert [got[i] for i in live] == [want[i] for i in live]
        tokens = [t if i in live else 0 for i, t in enumerate(got)]  # what generate feeds stopped rows
        stopped = sampler.accept(tokens, logits)
        before = list(ref.finished)
        ref.accept(tokens, logits)
        assert stopped == (ref.finished != before)
        assert sampler.out == ref.out and sampler.finished == ref.finished
        if params.logprobs:
            for a, b in zip(sampler.logprobs, ref.logprobs):
                assert a == pytest.approx(b, abs=1e-12)
        else:
            assert sampler.logprobs == [[] for _ in prompts]
        if all(ref.finished):
            break


def test_choose_each_equals_each_row_alone():
    V = 20
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, V, generator=g)
    kinds = [
        SamplingParams(temperature=0),
        SamplingParams(temperature=0.8, top_k=5, seed=1),
        SamplingParams(temperature=0, repetition_penalty=1.5),
        SamplingParams(temperature=1.0, seed=2),
    ]
    prompts = [[1, 2], [3], [int(logits[2].argmax())], [4, 5, 6]]
    batch = [Sampler(p, [r], V) for p, r in zip(kinds, prompts)]
    alone = [Sampler(p, [r], V) for p, r in zip(kinds, prompts)]
    got = choose_each(batch, logits)
    want = [int(s.choose(logits[i : i + 1])[0]) for i, s in enumerate(alone)]
    assert got == want
    assert got[2] != int(logits[2].argmax())  # the penalty moved the greedy choice off the prompt token
    plain = [Sampler(SamplingParams(temperature=0), [[0]], V) for _ in range(4)]
    assert choose_each(plain, logits) == logits.argmax(-1).tolist()


@pytest.mark.parametrize(
    "kw",
    [
        dict(top_p=1e-46),  # below float32's smallest value: 0 once compared with float32 sums
        dict(top_p=1e-300),
        dict(top_p=5e-324),  # the smallest positive float
        dict(top_p=1e-9),
        dict(temperature=1e-30),
        dict(temperature=1e-46),  # 0 in float32
        dict(temperature=1e-300),  # logits / temperature overflows even float64 without the shift
        dict(temperature=5e-324),
        dict(temperature=1e-300, top_p=1e-300, top_k=3, min_p=1e-300),
    ],
    ids=repr,
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_vanishing_top_p_and_temperature_sample_the_most_likely_token(kw, dtype):
    """top_p -> 0 keeps only the most likely token and temperature -> 0 puts all the mass on it:
    both are greedy in the limit, and a value that small never makes sampling raise. Oracle: the
    sampler's own greedy choice (argmax) on the same logits, whose top two are apart."""
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(64, 50, generator=g) * 4).to(dtype)
    top2 = logits.float().topk(2, dim=-1).values
    logits = logits[(top2[:, 0] - top2[:, 1]) > 0.05]  # no near-ties (in the temperature cases)
    sampler = Sampler(SamplingParams(seed=0, **kw), [[1]] * len(logits), 50)
    greedy = Sampler(SamplingParams(temperature=0), [[1]] * len(logits), 50)
    for _ in range(3):
        assert torch.equal(sampler.choose(logits), greedy.choose(logits))


def test_tiny_top_p_keeps_the_first_of_tied_maxima_as_argmax_does():
    logits = torch.tensor([[0.0, 2.0, 1.0, 2.0], [3.0, 3.0, 3.0, 3.0]])
    processed = process_logits(logits, SamplingParams(top_p=1e-300))
    assert torch.isfinite(processed).sum(-1).tolist() == [1, 1]
    assert processed.argmax(-1).tolist() == argmax(logits).tolist() == [1, 0]


def test_sampler_rejects_bad_prompts_and_stop_strings_without_tokenizer():
    p = SamplingParams()
    with pytest.raises(ValueError, match="at least one token"):
        Sampler(p, [[1], []], 8)
    with pytest.raises(ValueError, match="token id 8 is out of range for the model's vocab_size 8"):
        Sampler(p, [[1, 8]], 8)
    with pytest.raises(ValueError, match="token id -1 is out of range"):
        Sampler(p, [[-1]], 8)
    with pytest.raises(TypeError, match="sequence of token ids"):
        Sampler(p, ["ab"], 8)
    with pytest.raises(ValueError, match="need a tokenizer"):
        Sampler(SamplingParams(stop=["x"]), [[1]], 8)
    with pytest.raises(ValueError, match="logprobs=True needs the logits"):
        Sampler(SamplingParams(logprobs=True), [[1]], 8).accept([2])
    s = Sampler(SamplingParams(stop=["bc"]), [torch.tensor([1, 2])], 8, tokenizer=_Letters())
    assert s.prompts == [[1, 2]]
    assert s.cut_stop_string("abcd") == "a" and s.cut_stop_string("ad") == "ad"


@pytest.mark.parametrize(
    "field,value,exc",
    [
        ("max_new_tokens", -1, ValueError),
        ("max_new_tokens", 1.0, TypeError),
        ("max_new_tokens", True, TypeError),
        ("temperature", -0.5, ValueError),
        ("temperature", float("inf"), ValueError),
        ("temperature", "0", TypeError),
        ("top_k", 0, ValueError),
        ("top_k", 2.0, TypeError),
        ("top_p", 0.0, ValueError),
        ("top_p", 1.5, ValueError),
        ("top_p", "0.5", TypeError),
        ("min_p", 0, ValueError),
        ("min_p", [0.1], TypeError),
        ("repetition_penalty", 0.0, ValueError),
        ("repetition_penalty", None, TypeError),
        ("seed", -1, ValueError),
        ("seed", "1", TypeError),
        ("logprobs", 1, TypeError),
        ("stop", [1.5], TypeError),
        ("stop", [""], ValueError),
    ],
)
def test_sampling_params_checks(field, value, exc):
    with pytest.raises(exc, match=field if field != "stop" else "stop"):
        SamplingParams(**{field: value})


def test_sampling_params_keep_valid_values():
    p = SamplingParams(max_new_tokens=3, temperature=0, top_k=2, top_p=1, min_p=0.5, seed=0, stop=[1, [2, 3]])
    assert p.greedy and p.temperature == 0.0 and isinstance(p.top_p, float) and p.top_k == 2
    import numpy as np

    assert SamplingParams(max_new_tokens=np.int64(4)).max_new_tokens == 4  # numpy ints are ints
