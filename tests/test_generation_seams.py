"""The seams between the model and generation, and between generation's parts.

- One K/V cache protocol (`fastllm.model.cache.LayerCache`): every cache view implements it; the
  module path (`forward_cached`) and the fused decode step (`DecodePlan.step`) drive any
  implementation through `attend` alone and agree (float64); the paged prefill view against
  plain attention over the keys it gathers.
- RoPE: the decode plan's cos/sin table holds, bit for bit, what the model's attention computes
  for the same positions (`fastllm.model.rope`, one function for both).
- Import-time behaviour, in fresh interpreters: importing fastllm.generation installs no global
  nn.Module hooks (building the first plan installs them, once); importing the model imports no
  generation module, and only `MiniGPT.generate` refers to generation.
"""

from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastllm
from fastllm.generation import contiguous, paged
from fastllm.generation.contiguous import KVCache
from fastllm.generation.decode import DecodePlan
from fastllm.model.attention import attention
from fastllm.model.cache import LayerCache
from fastllm.model.gpt import MiniGPT, MiniGPTConfig
from fastllm.model.rope import rope_cos_sin

PACKAGE = Path(fastllm.__file__).parent


def _llama(dtype=torch.float64) -> MiniGPT:
    torch.manual_seed(0)
    cfg = MiniGPTConfig.preset(
        "small", vocab_size=64, n_layer=2, context=40, d_model=32, n_head=4, n_kv_head=2, mlp_hidden=48
    )
    model = MiniGPT(cfg).to(dtype).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model


# ------------------------------------------------------------------ one cache protocol


def test_every_cache_view_implements_the_one_protocol():
    views = [contiguous.ContiguousLayerKV, paged.PagedLayerKV, paged.DecodeLayerKV, paged.KernelDecodeKV]
    assert all(issubclass(v, LayerCache) for v in views)
    assert LayerCache.__abstractmethods__ == frozenset({"attend"})
    for v in views:
        assert list(inspect.signature(v.attend).parameters) == ["self", "q", "k", "v", "mask"]
    with pytest.raises(TypeError):
        LayerCache()

    class Incomplete(LayerCache):
        pass

    with pytest.raises(TypeError):
        Incomplete()


class _Recording(LayerCache):
    """A LayerCache that only forwards to another one and counts the calls."""

    def __init__(self, inner: LayerCache) -> None:
        self.inner, self.calls = inner, 0

    def attend(self, q, k, v, mask):
        self.calls += 1
        return self.inner.attend(q, k, v, mask)


def test_module_path_and_decode_plan_drive_any_cache_through_attend():
    model = _llama()
    c = model.config
    prompt = torch.tensor([[3, 1, 4, 1, 5, 9, 2]])
    pos = torch.arange(7)[None]
    caches = [KVCache(model, 1, 8, torch.device("cpu"), torch.float64) for _ in range(2)]
    with torch.no_grad():
        for cache in caches:
            rec = [_Recording(layer) for layer in cache.layers]
            model.forward_cached(prompt, pos, rec)
            cache.advance(7)
            assert [r.calls for r in rec] == [1] * c.n_layer
        ids, at = torch.tensor([6]), torch.tensor([7])
        via_module = [_Recording(layer) for layer in caches[0].layers]
        via_plan = [_Recording(layer) for layer in caches[1].layers]
        want = model.forward_cached(ids[:, None], at[:, None], via_module)[:, 0]
        plan = DecodePlan.for_model(model)
        got = plan.step(ids, at, via_plan, None)
    assert [r.calls for r in via_module] == [r.calls for r in via_plan] == [1] * c.n_layer
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    for a, b in zip(caches[0].layers, caches[1].layers):  # the same K/V written through attend
        torch.testing.assert_close(a.k[:, :, :8], b.k[:, :, :8], rtol=1e-12, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(
    lens=st.lists(st.integers(1, 11), min_size=1, max_size=3),
    T=st.integers(1, 4),
    block_size=st.sampled_from([1, 3, 4]),
    heads=st.sampled_from([(4, 4), (4, 2), (2, 1)]),
    seed=st.integers(0, 2**16),
)
def test_paged_prefill_view_equals_plain_attention(lens, T, block_size, heads, seed):
    """`PagedLayerKV.attend` after `PagedKV.prefill_views`: the new tokens' K/V land in their
    slots, and each row's output is plain attention over its own keys up to itself."""
    Hq, H = heads
    D = 8
    cfg = MiniGPTConfig(vocab_size=16, context=32, n_layer=1, n_head=Hq, n_kv_head=H, d_model=Hq * D)
    g = torch.Generator().manual_seed(seed)
    ends = [n + T for n in lens] if len(lens) > 1 else [lens[0] + T]
    B = len(ends)
    per_seq = [-(-e // block_size) for e in ends]
    kv = paged.PagedKV(cfg, sum(per_seq) + 1, block_size, torch.device("cpu"), torch.float64)
    ids = torch.randperm(sum(per_seq), generator=g).tolist()  # scattered physical blocks
    tables, at = [], 0
    for n in per_seq:
        tables.append(ids[at : at + n])
        at += n
    rnd = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    kv.k[0].copy_(rnd(*kv.k[0].shape))
    kv.v[0].copy_(rnd(*kv.v[0].shape))
    old_k, old_v = kv.k[0].clone(), kv.v[0].clone()
    pos = torch.tensor([list(range(e - T, e)) for e in ends])  # (B, T): the last T tokens of each row
    views, mask = kv.prefill_views(tables, pos, ends)
    q, k, v = rnd(B, Hq, T, D), rnd(B, H, T, D), rnd(B, H, T, D)
    y = views[0].attend(q, k, v, mask)
    for i, (table, e) in enumerate(zip(tables, ends)):
        slots = [(table[p // block_size], p % block_size) for p in range(e)]
        keys = torch.stack([kv.k[0][b, o] for b, o in slots], dim=1)[None]  # (1, H, e, D)
        values = torch.stack([kv.v[0][b, o] for b, o in slots], dim=1)[None]
        torch.testing.assert_close(keys[0, :, e - T :], k[i], rtol=0, atol=0)  # written where they belong
        torch.testing.assert_close(
            values[0, :, : e - T], torch.stack([old_v[b, o] for b, o in slots[: e - T]], 1)
        )
        torch.testing.assert_close(
            keys[0, :, : e - T], torch.stack([old_k[b, o] for b, o in slots[: e - T]], 1)
        )
        want = attention(q[i : i + 1], keys, values, causal=True)
        torch.testing.assert_close(y[i : i + 1], want, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ one RoPE table


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_plan_rope_table_is_the_models_rope_bit_for_bit(dtype):
    model = _llama(dtype)
    c = model.config
    with torch.no_grad():
        plan = DecodePlan.for_model(model)
    positions = torch.randint(0, c.context, (3, 5), generator=torch.Generator().manual_seed(0))
    cos, sin = rope_cos_sin(positions, c.head_dim, c.rope_theta, dtype)  # what the model's attention uses
    assert torch.equal(plan.rope[0][positions], cos) and torch.equal(plan.rope[1][positions], sin)


# ------------------------------------------------------------------ import-time behaviour


def _fresh(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_generation_installs_no_hooks_and_the_first_plan_does():
    got = _fresh(
        """
import json
import torch
from torch.nn.modules import module as m
def hooks():
    return [len(m._global_parameter_registration_hooks), len(m._global_buffer_registration_hooks),
            len(m._global_module_registration_hooks)]
before = hooks()
import fastllm, fastllm.generation, fastllm.generation.decode, fastllm.generation.engine
from fastllm.model import MiniGPT, MiniGPTConfig
model = MiniGPT(MiniGPTConfig.preset("tiny")).eval()
model.generate([[1, 2]], 2, temperature=0, use_cache=False)  # no plan on this path
imported = hooks()
with torch.no_grad():
    fastllm.generation.decode.DecodePlan.for_model(model)
first = hooks()
with torch.no_grad():
    fastllm.generation.decode.DecodePlan.for_model(MiniGPT(MiniGPTConfig.preset("tiny")).eval())
print(json.dumps(dict(before=before, imported=imported, first=first, second=hooks())))
"""
    )
    assert got["imported"] == got["before"]
    assert got["first"] == [n + 1 for n in got["before"]]
    assert got["second"] == got["first"]


def test_the_model_does_not_import_generation():
    got = _fresh(
        """
import json, sys
import fastllm.model, fastllm.model.gpt
print(json.dumps(sorted(m for m in sys.modules if m.startswith("fastllm.generation"))))
"""
    )
    assert got == []
    # in the source: the only reference to fastllm.generation is inside MiniGPT.generate
    for path in sorted((PACKAGE / "model").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                child.parent = node  # type: ignore[attr-defined]
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fastllm.generation"):
                scope = node
                while not isinstance(scope, (ast.FunctionDef, ast.Module)):
                    scope = scope.parent  # type: ignore[attr-defined]
                assert (path.name, getattr(scope, "name", None)) == ("gpt.py", "generate"), path
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("fastllm.generation") for a in node.names), path
