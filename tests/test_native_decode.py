"""The Rust decode step (`fastllm.generation.decode.NativeDecode`, `_core.Decoder`) against MiniGPT's module
path, and generate's use of it.

Oracle: the same model in float64 through `forward_cached` (the nn.Module layers)
on the same cache contents; the Rust step computes in float32, so logits agree to float32
rounding. Then: greedy generation at batch 1 (which runs the Rust step after the prefill) equals
recomputing the whole sequence; seeded sampling equals the torch decode path's; the thread count
changes no bit; bad input raises ValueError naming the value.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastllm.generation.loop as gen
from fastllm import _core
from fastllm.generation.contiguous import KVCache
from fastllm.generation.decode import DecodePlan, NativeDecode
from fastllm.generation.sampling import argmax
from fastllm.model.gpt import MiniGPT, MiniGPTConfig

CONFIGS = {
    "gpt2": dict(vocab_size=97, context=48, n_layer=2, n_head=4, d_model=32),
    "gpt2_exact_gelu_untied": dict(
        vocab_size=97, context=48, n_layer=1, n_head=2, d_model=32, mlp="gelu", tied_embeddings=False
    ),
    "gpt2_no_bias": dict(
        vocab_size=97, context=48, n_layer=2, n_head=2, d_model=24, bias=False, mlp_hidden=40
    ),
    "llama_gqa": dict(
        vocab_size=97,
        context=48,
        n_layer=2,
        n_head=4,
        n_kv_head=2,
        d_model=32,
        mlp="swiglu",
        mlp_hidden=48,
        norm="rmsnorm",
        positions="rope",
        bias=False,
        tied_embeddings=False,
    ),
    "llama_mqa_bias": dict(
        vocab_size=97,
        context=48,
        n_layer=1,
        n_head=4,
        n_kv_head=1,
        d_model=32,
        mlp="swiglu",
        mlp_hidden=40,
        norm="rmsnorm",
        positions="rope",
        bias=True,
    ),
}


def _model(name: str, seed: int = 0, **overrides) -> MiniGPT:
    torch.manual_seed(seed)
    model = MiniGPT(MiniGPTConfig(**{**CONFIGS[name], **overrides})).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # spread the weights so that logits differ clearly across the vocabulary
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
    return model


def _f64(model: MiniGPT) -> MiniGPT:
    other = MiniGPT(model.config).eval()
    other.load_state_dict(model.state_dict())
    return other.double()


def _random_cache(model: MiniGPT, length: int, capacity: int, seed: int, dtype=torch.float32) -> KVCache:
    cache = KVCache(model, 1, capacity, torch.device("cpu"), dtype)
    g = torch.Generator().manual_seed(seed)
    for layer in cache.layers:
        layer.k.copy_(torch.randn(layer.k.shape, generator=g))
        layer.v.copy_(torch.randn(layer.v.shape, generator=g))
    cache.length = length
    return cache


def _plan(model: MiniGPT):
    with torch.inference_mode():
        plan = DecodePlan.for_model(model)
    assert plan is not None and plan.native is not None
    return plan


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(sorted(CONFIGS)),
    length=st.integers(1, 40),
    steps=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_native_steps_equal_module_path(name, length, steps, seed):
    model = _model(name)
    ref = _f64(model)
    c = model.config
    capacity = length + steps
    cache = _random_cache(model, length, capacity, seed)
    ref_cache = _random_cache(ref, length, capacity, seed, torch.float64)  # the same numbers in float64
    native = NativeDecode(_plan(model), cache.layers, length, capacity)
    g = torch.Generator().manual_seed(seed + 1)
    for i in range(steps):
        token = int(torch.randint(0, c.vocab_size, (1,), generator=g))
        position = length + i
        got = native.step(token, position)  # (1, vocab) float32
        with torch.no_grad():
            want = ref.forward_cached(torch.tensor([[token]]), torch.tensor([[position]]), ref_cache.layers)[
                :, 0
            ]
        ref_cache.advance(1)
        assert got.dtype == torch.float32 and got.shape == (1, c.vocab_size)
        # float32 rounding of ~d_model-term sums over weights of size ~0.2-1
        torch.testing.assert_close(got.double(), want, rtol=2e-4, atol=2e-4 * float(want.abs().max()))
    assert len(native.state) == length + steps


@settings(max_examples=20, deadline=None)
@given(name=st.sampled_from(sorted(CONFIGS)), length=st.integers(1, 30), seed=st.integers(0, 2**16))
def test_step_greedy_is_the_samplers_argmax(name, length, seed):
    """The Rust step's own argmax (what generate uses when the sampler needs no logits) against
    `fastllm.generation.sampling.argmax` of the logits of the same step."""
    model = _model(name)
    plan = _plan(model)
    fused = NativeDecode(plan, _random_cache(model, length, length + 3, seed).layers, length, length + 3)
    plain = NativeDecode(plan, _random_cache(model, length, length + 3, seed).layers, length, length + 3)
    g = torch.Generator().manual_seed(seed)
    for i in range(3):
        token = int(torch.randint(0, model.config.vocab_size, (1,), generator=g))
        assert fused.step_greedy(token, length + i) == int(argmax(plain.step(token, length + i))[0])


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_greedy_generate_b1_runs_native_and_equals_recompute(name, monkeypatch):
    model = _model(name)
    built = []

    class Counting(NativeDecode):
        __slots__ = ()

        def __init__(self, *args):
            super().__init__(*args)
            built.append(1)

    monkeypatch.setattr(gen, "NativeDecode", Counting)
    prompt = torch.tensor([[3, 14, 15, 92, 65, 35]])
    with torch.inference_mode():
        got = model.generate(prompt, 30, temperature=0)
        want = model.generate(prompt, 30, temperature=0, use_cache=False)
    assert built == [1]  # the Rust step ran after the prefill
    assert torch.equal(got, want)


def test_greedy_generate_b1_equals_float64_module_path():
    # the Rust float32 steps pick the same tokens as float64 arithmetic (no near-ties here)
    model = _model("llama_gqa")
    ref = _f64(model)
    prompt = [5, 6, 7]
    with torch.inference_mode():
        got = model.generate([prompt], 40, temperature=0)[0]
        want = ref.generate([prompt], 40, temperature=0, use_cache=False)[0]
    assert got.tolist() == want.tolist()


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(temperature=0.8, seed=3),
        dict(temperature=1.0, top_k=5, seed=4),
        dict(temperature=0.7, top_p=0.9, min_p=0.05, seed=5),
        dict(temperature=0, repetition_penalty=1.3),
    ],
)
def test_sampling_with_native_equals_torch_decode_path(kwargs):
    model = _model("gpt2")
    prompt = torch.tensor([[1, 2, 3, 4]])
    with torch.inference_mode():
        got, got_lp = model.generate(prompt, 25, logprobs=True, **kwargs)
        plan = DecodePlan.for_model(model)
        saved, plan.native = plan.native, None  # the torch plan step instead
        try:
            want, want_lp = model.generate(prompt, 25, logprobs=True, **kwargs)
        finally:
            plan.native = saved
    assert torch.equal(got, want)
    torch.testing.assert_close(torch.tensor(got_lp), torch.tensor(want_lp), rtol=1e-4, atol=1e-4)


def test_thread_count_changes_no_bit():
    # vocab 2048 and mlp_hidden 1024: the products are wide enough to split over threads
    model = _model("gpt2", vocab_size=2048, mlp_hidden=1024, d_model=64)
    plan = _plan(model)
    before = torch.get_num_threads()
    outs = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            cache = _random_cache(model, 10, 16, seed=7)
            native = NativeDecode(plan, cache.layers, 10, 16)
            outs.append(torch.cat([native.step(t, 10 + i) for i, t in enumerate([5, 900, 2047, 0])]))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_plan_buffer_is_shared_by_torch_and_rust_paths():
    model = _model("gpt2")
    plan = _plan(model)
    lo, hi = plan.flat.data_ptr(), plan.flat.data_ptr() + plan.flat.numel() * plan.flat.element_size()
    for layer in plan.layers:
        for name in ("wqkv", "bqkv", "wo", "bo", "w1", "b1", "w2", "b2"):
            assert lo <= getattr(layer, name).data_ptr() < hi  # views into the one buffer
    want = torch.cat(
        (
            model.blocks[1].attn.q_proj.weight,
            model.blocks[1].attn.k_proj.weight,
            model.blocks[1].attn.v_proj.weight,
        )
    ).t()
    assert torch.equal(plan.layers[1].wqkv, want)


def test_no_native_step_off_float32_cpu():
    model = _model("gpt2").double()
    with torch.inference_mode():
        plan = DecodePlan.for_model(model)
    assert plan.native is None
    with pytest.raises(ValueError, match="float32"):
        NativeDecode(plan, [], 1, 2)


def test_bad_input_raises_value_error():
    model = _model("gpt2")
    c = model.config
    cache = _random_cache(model, 4, 6, seed=0)
    native = NativeDecode(_plan(model), cache.layers, 4, 6)
    with pytest.raises(ValueError, match=f"token id {c.vocab_size} is out of range"):
        native.step(c.vocab_size, 4)
    with pytest.raises(ValueError, match=f"position {c.context} exceeds"):
        native.step(1, c.context)
    native.step(1, 4)
    native.step(2, 5)
    with pytest.raises(ValueError, match="cache is full"):
        native.step(3, 6)
    assert len(native.state) == 6
    core = native.core
    with pytest.raises(ValueError, match="capacity=0"):
        core.state(0)
    st = core.state(8)
    k = torch.zeros(c.n_kv_head * 3 * c.head_dim)
    with pytest.raises(ValueError, match="k holds"):
        core.load(st, layer=0, k=k[:-1].numpy(), v=k.numpy(), n=3)
    with pytest.raises(ValueError, match="layer 9 is out of range"):
        core.load(st, layer=9, k=k.numpy(), v=k.numpy(), n=3)
    with pytest.raises(TypeError):  # keyword-only: a swapped layer and n cannot slip through
        core.load(st, 0, k.numpy(), k.numpy(), 3)  # type: ignore[misc]
    config = dict(
        vocab=97,
        context=48,
        n_layer=2,
        n_head=4,
        n_kv_head=4,
        head_dim=8,
        d_model=32,
        hidden=128,
        norm="layernorm",
        eps=1e-5,
        mlp="gelu",
        positions="learned",
        bias=True,
    )
    with pytest.raises(ValueError, match="norm must be one of"):
        _core.Decoder(**{**config, "norm": "batchnorm"})
    with pytest.raises(ValueError, match="n_kv_head=3 must divide n_head=4"):
        _core.Decoder(**{**config, "n_kv_head": 3})
    with pytest.raises(TypeError):  # keyword-only: n_head and n_kv_head cannot be swapped by position
        _core.Decoder(*config.values())  # type: ignore[misc]
    fresh = _core.Decoder(**config)
    with pytest.raises(ValueError, match="set_weights was not called"):
        fresh.step(fresh.state(4), token=1, position=0, num_threads=1, greedy=True)
    with pytest.raises(TypeError):
        fresh.step(fresh.state(4), 1, 0, 1, True)  # type: ignore[misc]
    with pytest.raises(ValueError, match="weights holds 3 floats"):
        fresh.set_weights(torch.zeros(3).numpy(), torch.zeros(97 * 32).numpy(), torch.zeros(48 * 32).numpy())


def test_rust_gelu_tanh_matches_torch():
    g = torch.Generator().manual_seed(0)
    x = torch.cat((torch.randn(4096, generator=g) * 4, torch.tensor([0.0, -0.0, 20.0, -20.0, 1e4, -1e4])))
    want = torch.nn.functional.gelu(x.double(), approximate="tanh")
    got = x.clone()
    _core.gelu_tanh_(got.numpy())
    torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="contiguous"):
        _core.gelu_tanh_(torch.zeros(4, 8)[:, ::2].numpy())


def test_batched_plan_step_uses_rust_gelu_and_stays_close():
    # batch 3 through the torch plan step (the Rust GELU inside) against the float64 module path
    model = _model("gpt2")
    ref = _f64(model)
    plan = _plan(model)
    assert plan.rust_gelu
    cache = _random_cache(model, 6, 8, seed=3)
    B = 3
    big = KVCache(model, B, 8, torch.device("cpu"), torch.float32)
    ref_cache = KVCache(ref, B, 8, torch.device("cpu"), torch.float64)
    for a, b, src in zip(big.layers, ref_cache.layers, cache.layers):
        a.k.copy_(src.k.expand(B, -1, -1, -1)), a.v.copy_(src.v.expand(B, -1, -1, -1))
        b.k.copy_(src.k.expand(B, -1, -1, -1)), b.v.copy_(src.v.expand(B, -1, -1, -1))
    big.length = ref_cache.length = 6
    ids, pos = torch.tensor([[1], [50], [96]]), torch.tensor([[6], [6], [6]])
    with torch.inference_mode():
        got = plan.step(ids[:, 0], pos[:, 0], big.layers, None)[:, None]
        want = ref.forward_cached(ids, pos, ref_cache.layers)
    torch.testing.assert_close(got.double(), want, rtol=2e-4, atol=2e-4 * float(want.abs().max()))
