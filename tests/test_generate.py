"""Generation (`fastllm.generation.loop`): KV cache, ragged batches, samplers, stops, bad input.

Oracles:
- the recompute path (`use_cache=False`: the whole sequence re-run every step) for the KV cache,
  and generating each prompt alone (B=1) for every row of a left-padded ragged batch;
- Hugging Face `transformers`: `GPT2LMHeadModel.generate` / `LlamaForCausalLM.generate` (greedy,
  also with a repetition penalty) on random-weight models saved with `save_pretrained` and loaded
  with `MiniGPT.from_pretrained`, both in float64; and transformers' own logits processors
  (RepetitionPenalty, Temperature, TopK, TopP, MinP, in that order) for `process_logits`;
- `model(full_sequence)` in float64 (plain forward, no cache) for the returned log-probabilities;
- exact properties: same seed -> same draw, top_k=1 / min_p=1 / tiny top_p sampling == greedy,
  seeded sampling with and without the cache agree, stops end a row right after the stop (computed
  from the unstopped greedy run), `model.generate` == `model.generate(...)`.
Models are tiny and random (weights large enough that greedy output does not collapse to one
repeated token), in float64 so that near-ties cannot flip an argmax between the two paths.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import transformers  # noqa: E402  (the `test` extra: the oracle)
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

import fastllm
from fastllm.generation import SamplingParams, generate
from fastllm.generation.sampling import process_logits
from fastllm.model.gpt import MiniGPT, MiniGPTConfig


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny matmuls on a shared 2-core machine: one thread is several times faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _randomize(model: torch.nn.Module, std: float, seed: int = 0) -> torch.nn.Module:
    """All parameters N(0, std), norm gains N(1, std): logits spread out, greedy output varied."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            gain = ("ln" in name or "norm" in name) and name.endswith("weight")
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std + (1.0 if gain else 0.0))
    return model


def _gpt2_mini(vocab_size: int = 512) -> MiniGPT:
    return _randomize(MiniGPT(MiniGPTConfig.preset("tiny", vocab_size=vocab_size)), 0.3).double().eval()


def _llama_mini() -> MiniGPT:
    cfg = MiniGPTConfig.preset("small", vocab_size=512, n_layer=2, context=128)
    return _randomize(MiniGPT(cfg), 0.15, seed=1).double().eval()


@pytest.fixture(scope="module")
def gpt2_mini() -> MiniGPT:
    return _gpt2_mini()


@pytest.fixture(scope="module")
def llama_mini() -> MiniGPT:
    return _llama_mini()


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def mini(request, gpt2_mini, llama_mini) -> MiniGPT:
    return gpt2_mini if request.param == "gpt2" else llama_mini


def _prompts(batch: int, seed: int, vocab: int = 512, max_len: int = 12) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, max_len + 1, (batch,), generator=g).tolist()
    if batch > 1:
        lengths[0], lengths[-1] = 1, max_len  # always ragged, always the extremes
    return [torch.randint(0, vocab, (n,), generator=g).tolist() for n in lengths]


def _greedy(model, prompt: list[int], n: int) -> list[int]:
    """The new tokens of greedy generation of one prompt, recompute path (no cache)."""
    return model.generate([prompt], n, temperature=0, use_cache=False)[0][len(prompt) :].tolist()


# ------------------------------------------------------------------ cache == recompute


@pytest.mark.parametrize("batch", [1, 2, 5, 16])
def test_cache_equals_recompute_ragged(mini, batch):
    prompts = _prompts(batch, seed=batch)
    cached = mini.generate(prompts, 20, temperature=0)
    recomputed = mini.generate(prompts, 20, temperature=0, use_cache=False)
    assert len(cached) == len(recomputed) == batch
    for p, a, b in zip(prompts, cached, recomputed):
        assert a.tolist() == b.tolist()
        assert a.tolist()[: len(p)] == p and a.numel() == len(p) + 20
    assert len({tuple(r[len(p) :].tolist()) for p, r in zip(prompts, cached)}) > batch // 2  # not degenerate


@pytest.mark.parametrize("batch", [2, 5, 16])
def test_ragged_row_equals_alone(mini, batch):
    prompts = _prompts(batch, seed=100 + batch)
    together = mini.generate(prompts, 16, temperature=0)
    for p, row in zip(prompts, together):
        alone = mini.generate([p], 16, temperature=0)[0]
        assert row.tolist() == alone.tolist()
        assert len(set(alone[len(p) :].tolist())) > 2  # the model does not just repeat one token


@settings(max_examples=12)
@given(data=st.data())
def test_cache_equals_recompute_property(gpt2_mini, llama_mini, data):
    model = data.draw(st.sampled_from([gpt2_mini, llama_mini]))
    prompts = data.draw(
        st.lists(st.lists(st.integers(0, 511), min_size=1, max_size=10), min_size=1, max_size=4)
    )
    n = data.draw(st.integers(0, 10))
    penalty = data.draw(st.sampled_from([1.0, 1.3]))
    cached = model.generate(prompts, n, temperature=0, repetition_penalty=penalty)
    recomputed = model.generate(prompts, n, temperature=0, repetition_penalty=penalty, use_cache=False)
    assert [r.tolist() for r in cached] == [r.tolist() for r in recomputed]
    for p, row in zip(prompts, cached):
        alone = model.generate([p], n, temperature=0, repetition_penalty=penalty)[0]
        assert row.tolist() == alone.tolist()


def test_context_boundary(gpt2_mini):
    """Learned positions: prompt + new == context is allowed (and exact); one more is refused."""
    ctx = gpt2_mini.config.context
    prompt = _prompts(1, seed=7)[0]
    n = ctx - len(prompt)
    a = gpt2_mini.generate([prompt], n, temperature=0)[0]
    b = gpt2_mini.generate([prompt], n, temperature=0, use_cache=False)[0]
    assert a.numel() == ctx and a.tolist() == b.tolist()
    with pytest.raises(ValueError, match="context"):
        gpt2_mini.generate([prompt], n + 1, temperature=0)


def test_zero_new_tokens_returns_prompt(gpt2_mini):
    assert gpt2_mini.generate([[3, 4, 5]], 0)[0].tolist() == [3, 4, 5]
    out = gpt2_mini.generate(torch.tensor([[3, 4, 5]]), 0)
    assert out.tolist() == [[3, 4, 5]]


# ------------------------------------------------------------------ input / output forms


def test_tensor_and_list_forms(gpt2_mini):
    ids = torch.tensor(_prompts(3, seed=3, max_len=6)[2:] * 3)  # (3, T) equal lengths
    ids[1, 0], ids[2, 1] = 11, 12
    T = ids.shape[1]
    out = generate(gpt2_mini, ids, SamplingParams(max_new_tokens=9, temperature=0))  # the canonical form
    assert isinstance(out, torch.Tensor) and out.dtype == torch.long and out.shape == (3, T + 9)
    assert torch.equal(out[:, :T], ids)
    as_list = gpt2_mini.generate(ids.tolist(), 9, temperature=0)
    assert isinstance(as_list, list) and all(isinstance(r, torch.Tensor) and r.ndim == 1 for r in as_list)
    assert all(r.dtype == torch.long for r in as_list)
    assert torch.equal(torch.stack(as_list), out)
    rows_as_tensors = gpt2_mini.generate(list(ids), 9, temperature=0)  # a list of 1-D tensors
    assert torch.equal(torch.stack(rows_as_tensors), out)
    one_d = gpt2_mini.generate(ids[0], 9, temperature=0)  # (T,) is one row
    assert one_d.shape == (1, T + 9) and torch.equal(one_d[0], out[0])
    flat = gpt2_mini.generate(ids[0].tolist(), 9, temperature=0)  # a flat list is one prompt
    assert isinstance(flat, list) and len(flat) == 1 and torch.equal(flat[0], out[0])
    assert torch.equal(gpt2_mini.generate(ids, 9, temperature=0), out)  # the short form
    assert torch.equal(
        gpt2_mini.generate(ids, 9, temperature=1.0, top_k=50, seed=5),
        generate(gpt2_mini, ids, SamplingParams(max_new_tokens=9, temperature=1.0, top_k=50, seed=5)),
    )
    with pytest.raises(TypeError, match="params must be SamplingParams"):
        generate(gpt2_mini, ids, 9)
    with pytest.raises(TypeError, match="unexpected keyword argument 'temprature'"):
        gpt2_mini.generate(ids, 9, temprature=0)  # a misspelt option is not ignored


def test_generate_keeps_training_mode():
    model = _gpt2_mini()
    model.train()
    model.generate([[1, 2]], 2, temperature=0)
    assert model.training
    model.eval()
    model.generate([[1, 2]], 2, temperature=0)
    assert not model.training


# ------------------------------------------------------------------ transformers parity

HF_VOCAB = 300


def _hf_gpt2():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        n_layer=2, n_head=4, n_embd=64, vocab_size=HF_VOCAB, n_positions=64, activation_function="gelu_new"
    )
    cfg._attn_implementation = "eager"
    return _randomize(transformers.GPT2LMHeadModel(cfg), 0.3, seed=2).eval()


def _hf_llama():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=HF_VOCAB,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    cfg._attn_implementation = "eager"
    return _randomize(transformers.LlamaForCausalLM(cfg), 0.15, seed=3).eval()


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def hf_pair(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    hf = (_hf_gpt2 if request.param == "gpt2" else _hf_llama)()
    hf.save_pretrained(path)
    hf = hf.double()
    hf.generation_config.eos_token_id = None  # never stop early (Llama's default eos is 2)
    hf.generation_config.bos_token_id = None
    hf.generation_config.pad_token_id = 0
    model = MiniGPT.from_pretrained(path).double().eval()
    return hf, model


def _hf_greedy(hf, ids: torch.Tensor, n: int, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        out = hf.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            pad_token_id=0,
            eos_token_id=None,
            **kwargs,
        )
    assert out.shape == (ids.shape[0], ids.shape[1] + n)
    return out


@pytest.mark.parametrize("penalty", [1.0, 1.5])
def test_greedy_matches_transformers(hf_pair, penalty):
    hf, model = hf_pair
    kw = {} if penalty == 1.0 else {"repetition_penalty": penalty}
    g = torch.Generator().manual_seed(8)
    for length in [1, 5, 11]:
        ids = torch.randint(0, HF_VOCAB, (1, length), generator=g)
        expected = _hf_greedy(hf, ids, 20, **kw)
        got = model.generate(ids, 20, temperature=0, repetition_penalty=penalty)
        assert got.tolist() == expected.tolist()
        assert len(set(got[0, ids.shape[1] :].tolist())) > 3  # a varied continuation, not one token
        nocache = model.generate(ids, 20, temperature=0, repetition_penalty=penalty, use_cache=False)
        assert nocache.tolist() == expected.tolist()


def test_greedy_batch_matches_transformers(hf_pair):
    hf, model = hf_pair
    g = torch.Generator().manual_seed(9)
    ids = torch.randint(0, HF_VOCAB, (3, 6), generator=g)
    expected = _hf_greedy(hf, ids, 20)
    assert model.generate(ids, 20, temperature=0).tolist() == expected.tolist()
    assert [r.tolist() for r in model.generate(ids.tolist(), 20, temperature=0)] == expected.tolist()


# ------------------------------------------------------------------ logits processing vs transformers


def _hf_process(logits, hist, temperature, top_k, top_p, min_p, penalty):
    """transformers' processors in generate()'s order, each added under generate()'s own condition."""
    x = logits.clone()
    if penalty != 1.0:
        x = RepetitionPenaltyLogitsProcessor(penalty)(hist, x)
    if temperature == 0:
        return x
    if temperature != 1.0:
        x = TemperatureLogitsWarper(temperature)(hist, x)
    if top_k is not None:
        x = TopKLogitsWarper(top_k)(hist, x)
    if top_p is not None and top_p < 1.0:
        x = TopPLogitsWarper(top_p)(hist, x)
    if min_p is not None:
        x = MinPLogitsWarper(min_p)(hist, x)
    return x


def _clear_of_thresholds(logits, seen, temperature, top_k, top_p, min_p, penalty, margin=1e-4) -> bool:
    """In float64: no two logits tie after the penalty, and no probability mass sits within
    `margin` of the top-p or min-p threshold (where float32 rounding could decide either way)."""
    x = logits.double()
    if penalty != 1.0:
        x = torch.where(seen, torch.where(x > 0, x / penalty, x * penalty), x)
    for row in x:
        if row.unique().numel() != row.numel():
            return False
    if temperature == 0:
        return True
    x = x / temperature
    if top_k is not None and top_k < x.shape[-1]:
        x = x.masked_fill(x < x.topk(top_k, dim=-1).values[..., -1:], float("-inf"))
    if top_p is not None and top_p < 1.0:
        s, order = x.sort(dim=-1, descending=True)
        p = s.softmax(-1)
        before = p.cumsum(-1) - p
        if ((before - top_p).abs() < margin).any():
            return False
        drop = torch.zeros_like(before, dtype=torch.bool).scatter(-1, order, before >= top_p)
        x = x.masked_fill(drop, float("-inf"))
    if min_p is not None:
        p = x.softmax(-1)
        pmax = p.amax(-1, keepdim=True)
        near = (p - min_p * pmax).abs() < margin * pmax
        if (near & (p < pmax)).any():
            return False
    return True


@st.composite
def logits_cases(draw):
    B = draw(st.integers(1, 4))
    V = draw(st.integers(2, 50))
    rows = [draw(st.lists(st.integers(-1000, 1000), min_size=V, max_size=V, unique=True)) for _ in range(B)]
    logits = torch.tensor(rows, dtype=torch.float32) / 100  # distinct, at least 0.01 apart
    L = draw(st.integers(1, 8))
    hist = torch.tensor([draw(st.lists(st.integers(0, V - 1), min_size=L, max_size=L)) for _ in range(B)])
    temperature = draw(st.one_of(st.floats(0.05, 5.0), st.floats(0.3, 2.0), st.sampled_from([0.0, 1.0])))
    top_k = draw(st.none() | st.integers(1, V + 2))
    top_p = draw(st.none() | st.just(1.0) | st.floats(0.01, 1.0))
    min_p = draw(st.none() | st.just(1.0) | st.floats(0.001, 1.0))
    penalty = draw(st.just(1.0) | st.floats(0.5, 3.0))
    return logits, hist, temperature, top_k, top_p, min_p, penalty


@settings(max_examples=300)
@given(case=logits_cases())
def test_process_logits_matches_transformers(case):
    logits, hist, temperature, top_k, top_p, min_p, penalty = case
    B, V = logits.shape
    seen = torch.zeros(B, V, dtype=torch.bool).scatter(1, hist, True)
    assume(_clear_of_thresholds(logits, seen, temperature, top_k, top_p, min_p, penalty))
    params = SamplingParams(
        temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, repetition_penalty=penalty
    )
    got = process_logits(logits, params, seen)
    expected = _hf_process(logits, hist, temperature, top_k, top_p, min_p, penalty)
    assert got.shape == expected.shape
    assert torch.equal(torch.isneginf(got), torch.isneginf(expected))
    assert not torch.isnan(got).any() and not torch.isposinf(got).any()
    fin = torch.isfinite(expected)
    torch.testing.assert_close(got[fin], expected[fin], atol=1e-6, rtol=1e-6)
    assert fin.any(dim=-1).all()  # at least one token always survives


# ------------------------------------------------------------------ sampling


@settings(max_examples=8)
@given(seed=st.integers(0, 2**31 - 1))
def test_seed_reproducible_and_seeds_differ(gpt2_mini, seed):
    prompt = [[1, 2, 3]]
    kw = dict(temperature=1.0, top_k=50)
    a = gpt2_mini.generate(prompt, 30, seed=seed, **kw)[0].tolist()
    b = gpt2_mini.generate(prompt, 30, seed=seed, **kw)[0].tolist()
    assert a == b
    others = [gpt2_mini.generate(prompt, 30, seed=seed + i, **kw)[0].tolist() for i in range(1, 4)]
    assert any(o != a for o in others)


@settings(max_examples=8)
@given(seed=st.integers(0, 2**31 - 1), which=st.sampled_from(["gpt2", "llama"]))
def test_seeded_sampling_cache_equals_recompute(gpt2_mini, llama_mini, seed, which):
    """The same draws from the same generator: the paths agree whenever their logits do."""
    model = gpt2_mini if which == "gpt2" else llama_mini
    prompts = _prompts(3, seed=seed % 1000, max_len=7)
    kw = dict(temperature=0.9, top_k=40, top_p=0.95, repetition_penalty=1.1, seed=seed)
    a = model.generate(prompts, 15, **kw)
    b = model.generate(prompts, 15, use_cache=False, **kw)
    assert [r.tolist() for r in a] == [r.tolist() for r in b]


@pytest.mark.parametrize(
    "kw",
    [
        dict(top_k=1),
        dict(top_k=1, temperature=0.5),
        dict(min_p=1.0),
        dict(top_p=1e-6),
        dict(top_k=1, top_p=0.5),
    ],
)
def test_degenerate_sampling_is_greedy(mini, kw):
    prompts = _prompts(4, seed=21)
    greedy = mini.generate(prompts, 15, temperature=0)
    sampled = mini.generate(prompts, 15, seed=3, **{"temperature": 1.0, **kw})
    assert [r.tolist() for r in sampled] == [r.tolist() for r in greedy]


def _oracle_logprobs(model, row: torch.Tensor, prompt_len: int) -> list[float]:
    """log_softmax of the plain forward's float64 logits at each generated token."""
    with torch.no_grad():
        logits, _ = model(row[None])
    lp = F.log_softmax(logits[0].double(), dim=-1)  # (T, V)
    pos = torch.arange(prompt_len - 1, row.numel() - 1)
    return lp[pos, row[prompt_len:]].tolist()


@pytest.mark.parametrize("sampling", [False, True], ids=["greedy", "sampled"])
def test_logprobs_match_forward(mini, sampling):
    prompts = _prompts(3, seed=31, max_len=8)
    kw = dict(temperature=1.0, top_k=50, seed=4) if sampling else dict(temperature=0)
    out, logprobs = mini.generate(prompts, 12, logprobs=True, **kw)
    assert [r.tolist() for r in out] == [r.tolist() for r in mini.generate(prompts, 12, **kw)]
    for p, row, lps in zip(prompts, out, logprobs):
        assert len(lps) == 12
        torch.testing.assert_close(
            torch.tensor(lps, dtype=torch.float64),
            torch.tensor(_oracle_logprobs(mini, row, len(p)), dtype=torch.float64),
            atol=1e-5,
            rtol=1e-5,
        )
    # tensor input: (tensor, per-row lists)
    ids = torch.tensor([prompts[2]] * 2)
    out_t, lps_t = mini.generate(ids, 5, logprobs=True, **kw)
    assert isinstance(out_t, torch.Tensor) and len(lps_t) == 2 and all(len(x) == 5 for x in lps_t)
    for row, lps in zip(out_t, lps_t):
        torch.testing.assert_close(
            torch.tensor(lps, dtype=torch.float64),
            torch.tensor(_oracle_logprobs(mini, row, ids.shape[1]), dtype=torch.float64),
            atol=1e-5,
            rtol=1e-5,
        )


# ------------------------------------------------------------------ stops


def _first_stop(gen: list[int], seqs: list[list[int]]) -> int:
    """Number of generated tokens kept: up to the first complete stop sequence, else all."""
    for end in range(1, len(gen) + 1):
        if any(end >= len(s) and gen[end - len(s) : end] == s for s in seqs):
            return end
    return len(gen)


def _prompt_where(model, pred, n=12, tries=40):
    for seed in range(tries):
        p = _prompts(1, seed=500 + seed, max_len=6)[0]
        gen = _greedy(model, p, n)
        if pred(gen):
            return p, gen
    raise AssertionError("no prompt found for the stop test (the model is degenerate)")


def test_stop_token_ends_row_after_it(mini):
    p, gen = _prompt_where(mini, lambda g: g[2] not in g[:2])
    t = gen[2]
    out = mini.generate([p], 12, temperature=0, stop=[t])[0].tolist()
    assert out == p + gen[:3]
    assert mini.generate([p], 12, temperature=0, stop=t)[0].tolist() == p + gen[:3]  # a bare int
    assert mini.generate([p], 12, temperature=0, stop=[t], use_cache=False)[0].tolist() == p + gen[:3]


def test_stop_in_one_row_of_ragged_batch(mini):
    prompts = _prompts(4, seed=41, max_len=9)
    gens = [_greedy(mini, p, 12) for p in prompts]
    candidates = [t for t in gens[1][1:8] if all(t not in g for i, g in enumerate(gens) if i != 1)]
    assert candidates, "no token unique to row 1"
    t = candidates[0]
    out = mini.generate(prompts, 12, temperature=0, stop=[t])
    for i, (p, g, row) in enumerate(zip(prompts, gens, out)):
        keep = _first_stop(g, [[t]])
        assert row.tolist() == p + g[:keep]
        assert (keep < 12) == (i == 1)


def test_tensor_batch_pads_stopped_rows(mini):
    g = torch.Generator().manual_seed(51)
    ids = torch.randint(0, 512, (3, 5), generator=g)
    gens = [_greedy(mini, r, 10) for r in ids.tolist()]
    candidates = [t for t in gens[0][1:6] if t not in gens[1] and t not in gens[2]]
    assert candidates, "no token unique to row 0"
    t = candidates[0]
    keep = _first_stop(gens[0], [[t]])
    for pad, expect_pad in [(7, 7), (None, t)]:  # default pad: the stop id
        out = mini.generate(ids, 10, temperature=0, stop=[t], pad_token_id=pad)
        assert out.shape == (3, 15)
        assert out[0].tolist() == ids[0].tolist() + gens[0][:keep] + [expect_pad] * (10 - keep)
        assert out[1].tolist() == ids[1].tolist() + gens[1]
        assert out[2].tolist() == ids[2].tolist() + gens[2]
    # every row stopped: the tensor is as wide as the longest row
    stops = [gens[0][1], gens[1][2], gens[2][3]]
    out = mini.generate(ids, 10, temperature=0, stop=stops, pad_token_id=0)
    keeps = [_first_stop(g, [[s] for s in stops]) for g in gens]
    assert out.shape == (3, 5 + max(keeps))
    for r, g, k in zip(out.tolist(), gens, keeps):
        assert r[5:] == g[:k] + [0] * (max(keeps) - k)


def test_pad_token_outside_vocab(mini):
    """The pad only marks the end of a stopped row in the output; -1 (a common choice) must not be
    fed to the model while the other rows go on. Refusing it up front, by name, is also fine."""
    g = torch.Generator().manual_seed(51)
    ids = torch.randint(0, 512, (3, 5), generator=g)
    gens = [_greedy(mini, r, 10) for r in ids.tolist()]
    t = next(t for t in gens[0][1:6] if t not in gens[1] and t not in gens[2])
    keep = _first_stop(gens[0], [[t]])
    try:
        out = mini.generate(ids, 10, temperature=0, stop=[t], pad_token_id=-1)
    except ValueError as e:
        assert "pad_token_id" in str(e)
        return
    assert out[0].tolist() == ids[0].tolist() + gens[0][:keep] + [-1] * (10 - keep)
    assert out[1].tolist() == ids[1].tolist() + gens[1]


def test_callback_streams_each_step(mini):
    """callback(new) per step: each row's token, None once the row has stopped."""
    prompts = _prompts(3, seed=61, max_len=6)
    gens = [_greedy(mini, p, 10) for p in prompts]
    t = gens[0][2]
    keeps = [_first_stop(g, [[t]]) for g in gens]
    calls: list[list] = []
    out = mini.generate(prompts, 10, temperature=0, stop=[t], callback=calls.append)
    assert len(calls) == max(keeps) and all(len(c) == 3 for c in calls)
    for i, (g, k) in enumerate(zip(gens, keeps)):
        column = [c[i] for c in calls]
        assert column == g[:k] + [None] * (max(keeps) - k)
        assert out[i].tolist() == prompts[i] + g[:k]


def test_stop_id_sequence(mini):
    p, gen = _prompt_where(mini, lambda g: (g[3], g[4]) not in list(zip(g, g[1:]))[:3] and g[3] not in g[:3])
    pair = [gen[3], gen[4]]
    out = mini.generate([p], 12, temperature=0, stop=[pair])[0].tolist()
    assert out == p + gen[: _first_stop(gen, [pair])] and len(out) == len(p) + 5
    # a sequence that never completes does not stop anything
    never = [gen[3], min(set(range(512)) - set(gen))]
    assert mini.generate([p], 12, temperature=0, stop=[never])[0].tolist() == p + gen
    # mixed: ids and id sequences together, the earliest wins
    out = mini.generate([p], 12, temperature=0, stop=[pair, gen[1]])[0].tolist()
    assert out == p + gen[: _first_stop(gen, [pair, [gen[1]]])]


def test_stop_string_with_tokenizer():
    text = (
        "the quick brown fox jumps over the lazy dog. " * 10
        + "pack my box with five dozen liquor jugs! " * 10
    )
    tok = fastllm.BPETokenizer.train([text], 300, show_progress=False)
    model = _gpt2_mini(vocab_size=tok.vocab_size)
    found = None
    for seed in range(60):
        p = _prompts(1, seed=700 + seed, vocab=tok.vocab_size, max_len=5)[0]
        gen = _greedy(model, p, 10)
        s = tok.decode(gen[:2])
        # the stop string first appears once the 2nd token is out (not already after the 1st)
        if s and "\ufffd" not in s and s not in tok.decode(gen[:1]):
            found = p, gen, s
            break
    assert found, "no prompt whose first two tokens decode cleanly"
    p, gen, s = found
    out = model.generate([p], 10, temperature=0, stop=[s], tokenizer=tok)[0].tolist()
    assert out == p + gen[:2]
    assert model.generate([p], 10, temperature=0, stop=s, tokenizer=tok)[0].tolist() == p + gen[:2]
    with pytest.raises(ValueError, match="tokenizer"):
        model.generate([p], 10, temperature=0, stop=[s])


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "args,kwargs,exc,match",
    [
        (([list(range(60))], 5), {}, ValueError, "context"),
        ((torch.zeros(1, 60, dtype=torch.long), 5), {}, ValueError, "context"),
        (([[1, 512]], 3), {}, ValueError, "512.*vocab_size"),
        (([[1, -1]], 3), {}, ValueError, "-1.*vocab_size"),
        ((torch.tensor([[1, 600]]), 3), {}, ValueError, "600.*vocab_size"),
        (([[]], 3), {}, ValueError, "at least one token"),
        (([[1], []], 3), {}, ValueError, "at least one token"),
        (([], 3), {}, ValueError, "at least one token"),
        ((torch.zeros(1, 0, dtype=torch.long), 3), {}, ValueError, "at least one token"),
        (([[1, 2]], 3), {"temperature": -1}, ValueError, "temperature"),
        (([[1, 2]], 3), {"temperature": float("nan")}, ValueError, "temperature"),
        (([[1, 2]], 3), {"top_p": 0}, ValueError, "top_p"),
        (([[1, 2]], 3), {"top_p": 1.5}, ValueError, "top_p"),
        (([[1, 2]], 3), {"min_p": 0}, ValueError, "min_p"),
        (([[1, 2]], 3), {"top_k": 0}, ValueError, "top_k"),
        (([[1, 2]], 3), {"top_k": 2.5}, TypeError, "top_k"),
        (([[1, 2]], 3), {"temperature": "hot"}, TypeError, "temperature"),
        (([[1, 2]], 3), {"top_p": None, "min_p": "x"}, TypeError, "min_p"),
        (([[1, 2]], 3), {"repetition_penalty": None}, TypeError, "repetition_penalty"),
        (([[1, 2]], 3), {"seed": 1.0}, TypeError, "seed"),
        (([[1, 2]], 3), {"logprobs": 1}, TypeError, "logprobs"),
        (([[1, 2]], 3), {"use_cache": 0}, TypeError, "use_cache"),
        (([[1, 2]], 3), {"pad_token_id": 1.5}, TypeError, "pad_token_id"),
        (([[1, 2]], 2.0), {}, TypeError, "max_new_tokens"),
        ((5, 3), {}, TypeError, "prompts"),
        (([[1, 2]], 3), {"repetition_penalty": 0}, ValueError, "repetition_penalty"),
        (([[1, 2]], -1), {}, ValueError, "max_new_tokens"),
        (([[1, 2]], 3), {"seed": -1}, ValueError, "seed"),
        (([[1.5, 2]], 3), {}, TypeError, "token ids"),
        (([1.0, 2.0], 3), {}, TypeError, "token ids"),
        (([["a", "b"]], 3), {}, TypeError, "token ids"),
        (([[1, 2]], 3), {"stop": [1.5]}, TypeError, "stop"),
        (([[1, 2]], 3), {"stop": [""]}, ValueError, "empty stop string"),
        (([[1, 2]], 3), {"stop": ["x"]}, ValueError, "tokenizer"),
        ((torch.tensor([[1.0, 2.0]]), 3), {}, ValueError, "integer tensor"),
        ((torch.zeros(1, 2, 2, dtype=torch.long), 3), {}, ValueError, r"\(B, T\)"),
    ],
)
def test_bad_input(gpt2_mini, args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        gpt2_mini.generate(*args, **kwargs)
