"""The fused decode step (`fastllm.generation.decode.DecodePlan`) against MiniGPT's module path.

Oracle: `model.forward_cached(...)`, the nn.Module layers, on the same cache contents
and the same new token, in float64 (the two differ only in rounding); plus the K/V each writes.
Covers GPT-2 (learned positions, LayerNorm, GELU, biases) and Llama (RoPE, RMSNorm, SwiGLU,
grouped-query heads, no biases), batch 1 to 4, left-padded rows (a key mask), and the plan's
cache invalidation when the weights change.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fastllm.generation.contiguous import KVCache
from fastllm.generation.decode import DecodePlan
from fastllm.model.gpt import MiniGPT, MiniGPTConfig

CONFIGS = {
    "gpt2": dict(vocab_size=97, context=48, n_layer=2, n_head=4, d_model=32),
    "gpt2_exact_gelu": dict(vocab_size=97, context=48, n_layer=1, n_head=2, d_model=32, mlp="gelu"),
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
    "llama_mha": dict(
        vocab_size=97,
        context=48,
        n_layer=1,
        n_head=2,
        d_model=32,
        mlp="swiglu",
        mlp_hidden=40,
        norm="rmsnorm",
        positions="rope",
        bias=False,
    ),
}


def _model(name: str, dtype=torch.float64, seed: int = 0) -> MiniGPT:
    torch.manual_seed(seed)
    model = MiniGPT(MiniGPTConfig(**CONFIGS[name])).to(dtype).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # spread the weights so that logits differ clearly across the vocabulary
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.2)
    return model


def _filled_cache(model: MiniGPT, B: int, length: int, seed: int) -> KVCache:
    c = model.config
    dtype = next(model.parameters()).dtype
    cache = KVCache(model, B, length + 1, torch.device("cpu"), dtype)
    g = torch.Generator().manual_seed(seed)
    for layer in cache.layers:
        layer.k.copy_(torch.randn(layer.k.shape, generator=g, dtype=dtype))
        layer.v.copy_(torch.randn(layer.v.shape, generator=g, dtype=dtype))
    cache.length = length
    assert cache.layers[0].k.shape == (B, c.n_kv_head, length + 1, c.head_dim)
    return cache


def _clone(cache: KVCache, model: MiniGPT) -> KVCache:
    other = KVCache(
        model, cache.layers[0].k.shape[0], cache.capacity, torch.device("cpu"), cache.layers[0].k.dtype
    )
    for a, b in zip(other.layers, cache.layers):
        a.k.copy_(b.k)
        a.v.copy_(b.v)
    other.length = cache.length
    return other


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(sorted(CONFIGS)),
    B=st.integers(1, 4),
    length=st.integers(1, 40),
    padded=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_step_equals_module_path(name, B, length, padded, seed):
    model = _model(name)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (B, 1), generator=g)
    positions = torch.randint(0, model.config.context - 1, (B, 1), generator=g)
    mask = None
    if padded:  # each row sees a random nonempty subset of the cached keys, and itself
        mask = torch.rand(B, 1, 1, length + 1, generator=g) < 0.6
        mask[..., -1] = True
    cache = _filled_cache(model, B, length, seed)
    ref_cache = _clone(cache, model)
    with torch.no_grad():
        plan = DecodePlan.for_model(model)
        assert isinstance(plan, DecodePlan)
        got = plan.step(ids[:, 0], positions[:, 0], cache.layers, mask)[:, None]
        want = model.forward_cached(ids, positions, ref_cache.layers, mask)
    assert got.shape == want.shape == (B, 1, model.config.vocab_size)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    for a, b in zip(cache.layers, ref_cache.layers):  # the new token's K/V written alike
        torch.testing.assert_close(a.k, b.k, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(a.v, b.v, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["gpt2", "llama_gqa"])
def test_float32_step_close_to_module_path(name):
    model = _model(name, torch.float32)
    cache = _filled_cache(model, 3, 20, seed=1)
    ref_cache = _clone(cache, model)
    ids, pos = torch.tensor([[1], [2], [3]]), torch.tensor([[20], [7], [33]])
    with torch.no_grad():
        got = DecodePlan.for_model(model).step(ids[:, 0], pos[:, 0], cache.layers, None)[:, None]
        want = model.forward_cached(ids, pos, ref_cache.layers, None)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_plan_follows_weight_changes():
    model = _model("gpt2")
    with torch.no_grad():
        plan = DecodePlan.for_model(model)
        assert DecodePlan.for_model(model) is plan  # cached while the weights stand
        model.blocks[0].attn.k_proj.weight.mul_(2.0)  # in place: the version counter moves
        fresh = DecodePlan.for_model(model)
        assert fresh is not plan
        cache, ref = _filled_cache(model, 1, 5, 2), None
        ref = _clone(cache, model)
        ids, pos = torch.tensor([[4]]), torch.tensor([[5]])
        got = fresh.step(ids[:, 0], pos[:, 0], cache.layers, None)[:, None]
        want = model.forward_cached(ids, pos, ref.layers, None)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
        stale = plan.step(ids[:, 0], pos[:, 0], _clone(ref, model).layers, None)[:, None]
        assert not torch.allclose(stale, want)  # the old plan really held the old weights


def test_no_plan_where_it_would_differ():
    model = _model("gpt2")
    assert DecodePlan.for_model(model) is None  # gradients enabled
    with torch.no_grad():
        assert DecodePlan.for_model(model) is not None
        model.train()
        assert DecodePlan.for_model(model) is None  # training mode: dropout
        model.eval()
        calls = []
        handle = model.blocks[0].mlp.register_forward_hook(lambda *a: calls.append(1))
        assert DecodePlan.for_model(model) is None  # a hook the fused step would skip
        model.generate([[1, 2, 3]], 2, temperature=0)
        assert calls  # generate took the module path and the hook ran
        handle.remove()
        assert DecodePlan.for_model(model) is not None


def test_plan_follows_replaced_parameters_and_modules():
    model = _model("gpt2")
    with torch.no_grad():
        plan = DecodePlan.for_model(model)
        model.blocks[1].attn.o_proj.weight = torch.nn.Parameter(
            torch.zeros_like(model.blocks[1].attn.o_proj.weight)
        )
        fresh = DecodePlan.for_model(model)
        assert fresh is not plan and torch.equal(fresh.layers[1].wo, torch.zeros_like(fresh.layers[1].wo))
        model.blocks[0].mlp = type(model.blocks[0].mlp)(model.config).double()  # a new submodule
        newer = DecodePlan.for_model(model)
        assert newer is not fresh
        torch.testing.assert_close(newer.layers[0].w1, model.blocks[0].mlp.fc.weight.t())
        assert DecodePlan.for_model(model) is newer  # and cached again
        torch.nn.Linear(3, 3)  # a module built elsewhere registers parameters: no rebuild for that
        assert DecodePlan.for_model(model) is newer
        model.blocks[1].ln_1 = torch.nn.LayerNorm(model.config.d_model).double()  # a new module: rebuilt
        assert DecodePlan.for_model(model) is not newer
        handle = model.register_forward_hook(lambda *a: None)  # a hook on the root module
        assert DecodePlan.for_model(model) is None
        handle.remove()
