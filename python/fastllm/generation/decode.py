"""One decode step of MiniGPT (one new token per row), hand-inlined over fused weights.

Why: at batch 1 a decode step is ~40 GEMVs on (1, d_model) rows, and on a CPU the module path
adds a lot of per-op overhead around them (nn.Module calls, three q/k/v projections, views and
transposes, the argument checks of the generic `attention`). This step makes ~12 ATen calls per
layer: one GEMV for the fused q|k|v projection (one for the fused gate|up of SwiGLU), RoPE once
over q and k together, the cache's `attend` (the one K/V cache protocol of
`fastllm.model.cache`), the residual adds. `generate` and the `Engine` fetch the model's plan with
`DecodePlan.for_model(model)` and call its `step` for a one-token step, `model.forward_cached`
otherwise; the model knows nothing of the plan, and its module path stays the reference
(tests/test_decode.py checks that the two agree).

For one sequence on the CPU in float32, `NativeDecode` goes further: the whole step is one call
into Rust (`rust/decode`), with no ATen op at all. A step streams ~56 MB of weights (the bench
model), which evicts torch's code and data from the caches, so each small op after it cost
20-100 us; the Rust step measured at or below the cost of the step's matrix products alone
through torch (benches: `weights_floor`). `generate` switches to it after the prefill at batch 1.

The weights are laid out (in, out) in one flat buffer whose layout the Rust decoder defines
(`_core.Decoder.layout`): each GEMV then streams its matrix row by row (measured 1.15-1.5x faster
than the (out, in) layout for a single row on the 2-core box), and the torch step works on views
into the same buffer the Rust step reads, so both paths together hold one extra copy of the
weights. The plan is built on first use and rebuilt when any parameter changes (its storage or
version counter: an optimizer step, `load_state_dict`, `.to()`) or a module or parameter of the
model is replaced. To notice the latter without walking the module tree at every step, building
the first plan installs torch's global registration hooks (importing this module installs none).

>>> import torch
>>> from fastllm.model.gpt import MiniGPT, MiniGPTConfig
>>> model = MiniGPT(MiniGPTConfig.preset("tiny")).eval()
>>> DecodePlan.for_model(model) is None  # gradients enabled: the fused step would not track them
True
>>> with torch.no_grad():
...     plan = DecodePlan.for_model(model)
...     same = plan is DecodePlan.for_model(model)  # cached until the weights change
...     model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
...     replaced = plan is DecodePlan.for_model(model)  # or a parameter is replaced
>>> same, replaced
(True, False)
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from fastllm import _core
from fastllm.generation.contiguous import ContiguousLayerKV
from fastllm.model.cache import LayerCache
from fastllm.model.gpt import MiniGPT
from fastllm.model.rope import apply_rope, rope_cos_sin

__all__ = ["DecodePlan", "NativeDecode"]


class _Layer:
    __slots__ = ("ln1", "ln2", "wqkv", "bqkv", "wo", "bo", "w1", "b1", "w2", "b2")

    def __init__(self, block: Any, views: dict[str, torch.Tensor], i: int) -> None:
        self.ln1, self.ln2 = block.ln_1, block.ln_2
        for name in self.__slots__[2:]:
            setattr(self, name, views.get(f"layers.{i}.{name}"))


def _sources(model: Any) -> dict[str, torch.Tensor]:
    """Every tensor of the flat decode buffer, by the name `_core.Decoder.layout` gives it:
    Linear weights (out, in) transposed to (in, out) (x @ W then streams W row by row, measured
    1.3-1.5x faster than the (out, in) layout at batch 1), q|k|v and gate|up concatenated."""
    c = model.config
    out: dict[str, torch.Tensor] = {}

    def norm(name: str, m: Any) -> None:
        out[f"{name}.weight"] = m.weight
        if getattr(m, "bias", None) is not None:
            out[f"{name}.bias"] = m.bias

    def bias(name: str, *linears: Any) -> None:
        if linears[0].bias is not None:
            out[name] = torch.cat([lin.bias for lin in linears])

    for i, block in enumerate(model.blocks):
        a, m, p = block.attn, block.mlp, f"layers.{i}."
        norm(p + "ln1", block.ln_1)
        norm(p + "ln2", block.ln_2)
        out[p + "wqkv"] = torch.cat(
            (a.q_proj.weight, a.k_proj.weight, a.v_proj.weight)
        ).t()  # (d_model, (H + 2 H_kv) D)
        bias(p + "bqkv", a.q_proj, a.k_proj, a.v_proj)
        out[p + "wo"] = a.o_proj.weight.t()
        bias(p + "bo", a.o_proj)
        first = (m.gate_proj, m.up_proj) if c.mlp == "swiglu" else (m.fc,)
        out[p + "w1"] = torch.cat([lin.weight for lin in first]).t()  # (d_model, hidden or 2 hidden)
        bias(p + "b1", *first)
        last = m.down_proj if c.mlp == "swiglu" else m.proj
        out[p + "w2"] = last.weight.t()
        bias(p + "b2", last)
    norm("ln_f", model.ln_f)
    out["lm_head"] = model.lm_head.weight.t()  # (d_model, vocab)
    if c.positions == "rope":
        # cos/sin of every position, by the function the model's attention uses for its
        # positions: a table lookup gives the module path's values bit for bit.
        p = model.tok_emb.weight
        positions = torch.arange(c.context, device=p.device)
        out["rope.cos"], out["rope.sin"] = rope_cos_sin(positions, c.head_dim, c.rope_theta, p.dtype)
    return out


def _linear(x: torch.Tensor, wt: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    return torch.mm(x, wt) if b is None else torch.addmm(b, x, wt)


def _weights_key(params: list[torch.Tensor]) -> tuple:
    return tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)


# Bumped whenever any module anywhere registers a parameter, buffer or submodule (an assignment
# like `model.lm_head = ...`), once the first plan is built. A plan keeps its model's module and
# parameter lists while this stands, so checking it per decode step (the Engine does) walks no
# module tree: measured ~2 ms per 32-sequence step (5% of it) for the walks of
# `model.modules()` and `model.parameters()`.
_structure = [0]
_hooks: list[Any] = []  # the handles of the three global hooks, once installed


def _bump(*_: Any) -> None:
    _structure[0] += 1


def _install_hooks() -> None:
    """Install the global registration hooks that bump `_structure`, the first time a plan is
    built: a process that never decodes through a plan pays nothing for them."""
    if _hooks:
        return
    from torch.nn.modules import module

    _hooks.extend(
        (
            module.register_module_parameter_registration_hook(_bump),
            module.register_module_buffer_registration_hook(_bump),
            module.register_module_module_registration_hook(_bump),
        )
    )


class DecodePlan:
    """The fused weights of a MiniGPT and its single-token forward (`step`)."""

    def __init__(self, model: Any) -> None:
        _install_hooks()  # before the stamp: every later registration moves `_structure`
        c = model.config
        self.config = c
        self.structure = _structure[0]
        self.modules = list(model.modules())[1:]  # not the model itself: no reference cycle
        self.params = list(model.parameters())
        self.key = _weights_key(self.params)
        p = model.tok_emb.weight
        # The layout of the fused weights is the Rust decoder's (one flat buffer); the torch step
        # below works on views into the same buffer, so the two paths share one copy.
        core = _core.Decoder(
            vocab=c.vocab_size,
            context=c.context,
            n_layer=c.n_layer,
            n_head=c.n_head,
            n_kv_head=c.n_kv_head,
            head_dim=c.head_dim,
            d_model=c.d_model,
            hidden=c.mlp_hidden,
            norm=c.norm,
            eps=float(c.norm_eps),
            mlp=c.mlp,
            positions=c.positions,
            bias=c.bias,
        )
        with torch.inference_mode(False), torch.no_grad():  # this order: no_grad must be innermost
            flat = torch.empty(core.total, dtype=p.dtype, device=p.device)
            sources = _sources(model)
            views = {}
            for name, offset, shape in core.layout():
                view = flat.narrow(0, offset, math.prod(shape)).view(shape)
                view.copy_(sources[name])
                views[name] = view
            self.flat = flat
            self.layers = [_Layer(b, views, i) for i, b in enumerate(model.blocks)]
            self.rope: tuple[torch.Tensor, torch.Tensor] | None = None
            if c.positions == "rope":
                self.rope = (views["rope.cos"], views["rope.sin"])
            self.lm_head = views["lm_head"]  # (d_model, vocab)
            self.tok_emb = model.tok_emb.weight.detach()
            self.pos_emb = None if model.pos_emb is None else model.pos_emb.weight.detach()
            # The Rust step (one call per token) where it applies: CPU, float32.
            self.native = None
            if (
                p.device.type == "cpu"
                and p.dtype == torch.float32
                and self.tok_emb.is_contiguous()
                and (self.pos_emb is None or self.pos_emb.is_contiguous())
            ):
                core.set_weights(
                    flat.numpy(),
                    self.tok_emb.reshape(-1).numpy(),
                    None if self.pos_emb is None else self.pos_emb.reshape(-1).numpy(),
                )
                self.native = core
        self.ln_f = model.ln_f
        self.gelu = "tanh" if c.mlp == "gelu_tanh" else "none"
        self.rust_gelu = self.native is not None and self.gelu == "tanh"  # CPU float32

    @classmethod
    def for_model(cls, model: Any) -> DecodePlan | None:
        """The plan of `model` (a MiniGPT) for its current weights, (re)built when they changed
        since the last call; None where the fused step would not be the module path's
        computation: gradients enabled, training mode (dropout), forward hooks on the model or a
        submodule (the fused step would skip them), or not a MiniGPT. Cheap to call per step while nothing
        changed (no walk of the module tree)."""
        if torch.is_grad_enabled() or model.training or not isinstance(model, MiniGPT):
            return None
        plan = model.__dict__.get("_fastllm_decode_plan")
        if plan is not None and plan.structure == _structure[0]:
            modules, params = plan.modules, plan.params
        else:
            modules, params = list(model.modules())[1:], list(model.parameters())
        if any(m._forward_hooks or m._forward_pre_hooks for m in (model, *modules)):
            return None
        if (
            plan is not None
            and plan.structure != _structure[0]
            and modules == plan.modules
            and _weights_key(params) == plan.key
        ):
            # something registered elsewhere (another module built): still valid
            plan.structure = _structure[0]
        elif plan is None or plan.structure != _structure[0] or plan.key != _weights_key(params):
            plan = cls(model)
            model.__dict__["_fastllm_decode_plan"] = plan  # not a submodule: not in state_dict
        return plan

    def _norm(self, norm: Any, x: torch.Tensor) -> torch.Tensor:
        if isinstance(norm, torch.nn.LayerNorm):
            return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
        return F.rms_norm(x, norm.normalized_shape, norm.weight, norm.eps)

    def step(
        self, ids: torch.Tensor, positions: torch.Tensor, kv: list[LayerCache], mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Logits (B, vocab) of one new token per row: `ids` (B,) at `positions` (B,), reading and
        extending `kv` (one `LayerCache` per layer) under `mask` (B, 1, 1, T_k) bool or None
        (every cached key). What `model.forward_cached` computes for one token, in fewer ops."""
        c = self.config
        B = ids.shape[0]
        H, Hkv, D = c.n_head, c.n_kv_head, c.head_dim
        QK = (H + Hkv) * D
        x = F.embedding(ids, self.tok_emb)  # (B, d_model)
        if self.pos_emb is not None:
            x = x + F.embedding(positions, self.pos_emb)
        if self.rope is not None:
            cos = F.embedding(positions, self.rope[0])[:, None]  # (B, 1, head_dim)
            sin = F.embedding(positions, self.rope[1])[:, None]
        for layer, cache in zip(self.layers, kv):
            qkv = _linear(self._norm(layer.ln1, x), layer.wqkv, layer.bqkv)  # (B, (H + 2 H_kv) D)
            qk = qkv[:, :QK].view(B, H + Hkv, D)  # (B, H + H_kv, head_dim): RoPE on both at once
            if self.rope is not None:
                qk = apply_rope(qk, cos, sin)
            q = qk[:, :H].unsqueeze(2)  # (B, H, 1, head_dim)
            k = qk[:, H:].unsqueeze(2)  # (B, H_kv, 1, head_dim)
            v = qkv[:, QK:].view(B, Hkv, 1, D)  # (B, H_kv, 1, head_dim)
            y = cache.attend(q, k, v, mask)  # (B, H, 1, head_dim)
            x = x + _linear(y.reshape(B, H * D), layer.wo, layer.bo)  # (B, d_model)
            h = _linear(self._norm(layer.ln2, x), layer.w1, layer.b1)  # (B, hidden) or (B, 2 hidden)
            if c.mlp == "swiglu":
                gate, up = h.chunk(2, dim=-1)
                h = F.silu(gate) * up  # (B, hidden)
            elif self.rust_gelu:
                _core.gelu_tanh_(h.numpy())  # in place on the fresh product: vectorised, ~3.5x ATen's here
            else:
                h = F.gelu(h, approximate=self.gelu)
            x = x + _linear(h, layer.w2, layer.b2)
        return torch.mm(self._norm(self.ln_f, x), self.lm_head)  # (B, vocab)


class NativeDecode:
    """One sequence decoded by the Rust step (`_core.Decoder`): a CPU float32 plan's fastest path
    at batch 1, where the whole step is one call instead of ~80 ATen ops. Built after a prefill
    from the first `length` slots of a contiguous cache (`layers`: a `KVCache`'s layers, `k`, `v`
    of shape (1, n_kv_head, capacity, head_dim)); its own K/V then grow one token per `step`.

    The arithmetic is the module path's in float32 with a different summation order; tests
    compare the two under hypothesis (tests/test_decode.py)."""

    __slots__ = ("core", "state")

    def __init__(self, plan: DecodePlan, layers: list[ContiguousLayerKV], length: int, capacity: int) -> None:
        if plan.native is None:
            raise ValueError("this plan has no native step (it needs CPU float32 weights)")
        self.core = plan.native
        self.state = self.core.state(capacity)
        for i, layer in enumerate(layers):
            k = layer.k[0, :, :length].contiguous().reshape(-1)  # (n_kv_head * length * head_dim,)
            v = layer.v[0, :, :length].contiguous().reshape(-1)
            self.core.load(self.state, layer=i, k=k.numpy(), v=v.numpy(), n=length)
        self.core.set_len(self.state, length)

    def step(self, token: int, position: int) -> torch.Tensor:
        """Logits (1, vocab) float32 of `token` at `position`, on torch's thread count."""
        logits = self.core.step(
            self.state, token=token, position=position, num_threads=torch.get_num_threads(), greedy=False
        )
        return torch.from_numpy(logits)[None]

    def step_greedy(self, token: int, position: int) -> int:
        """The argmax of `step`'s logits (the rule of `fastllm.generation.sampling.argmax`: first
        maximum, NaN largest), with no tensor made: after a step has streamed the weights through
        the caches, every torch op costs tens of microseconds. For a sampler whose choice is the
        plain argmax (`Sampler.needs_logits` False); tests check it against `argmax`."""
        return self.core.step(
            self.state, token=token, position=position, num_threads=torch.get_num_threads(), greedy=True
        )
