"""One decode step of MiniGPT (one new token per row), hand-inlined over fused weights.

Why: at batch 1 a decode step is ~40 GEMVs on (1, d_model) rows, and on a CPU the module path
adds a lot of per-op overhead around them (nn.Module calls, three q/k/v projections, views and
transposes, the argument checks of the generic `attention`). This step makes ~12 ATen calls per
layer: one GEMV for the fused q|k|v projection (one for the fused gate|up of SwiGLU), RoPE once
over q and k together, the cache write, SDPA, the residual adds. `generate` and the `Engine`
fetch it with `MiniGPT.decode_plan()` and pass it to `forward_cached`; the module path stays the
reference (tests/test_decode.py checks that the two agree).

The weights are copies laid out (in, out), so each GEMV streams its matrix row by row (measured
1.15-1.5x faster than the (out, in) layout for a single row on the 2-core box; a batch-1 step is
bound by reading the weights: ~56 MB per token at fp32 for the 14M-parameter bench model). That
doubles the weight memory while generating; the plan is built on first use and rebuilt when any
parameter changes (its storage or version counter: an optimizer step, `load_state_dict`, `.to()`).

>>> import torch
>>> from fastllm.model import MiniGPT, MiniGPTConfig
>>> model = MiniGPT(MiniGPTConfig.preset("tiny")).eval()
>>> plan = DecodePlan.for_model(model)
>>> plan is DecodePlan.for_model(model)  # cached until the weights change
True
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from fastllm._attention import _SDPA_HAS_GQA

__all__ = ["DecodePlan"]


class _Layer:
    __slots__ = ("ln1", "ln2", "wqkv", "bqkv", "wo", "bo", "w1", "b1", "w2", "b2")

    def __init__(self, block: Any, swiglu: bool) -> None:
        a, m = block.attn, block.mlp
        self.ln1, self.ln2 = block.ln_1, block.ln_2
        self.wqkv = _t(torch.cat((a.q_proj.weight, a.k_proj.weight, a.v_proj.weight)))  # (d_model, (H + 2 H_kv) D)
        self.bqkv = None if a.q_proj.bias is None else torch.cat((a.q_proj.bias, a.k_proj.bias, a.v_proj.bias))
        self.wo, self.bo = _t(a.o_proj.weight), a.o_proj.bias
        if swiglu:
            self.w1 = _t(torch.cat((m.gate_proj.weight, m.up_proj.weight)))  # (d_model, 2 hidden)
            self.b1 = None if m.gate_proj.bias is None else torch.cat((m.gate_proj.bias, m.up_proj.bias))
            self.w2, self.b2 = _t(m.down_proj.weight), m.down_proj.bias
        else:
            self.w1, self.b1 = _t(m.fc.weight), m.fc.bias
            self.w2, self.b2 = _t(m.proj.weight), m.proj.bias


def _t(weight: torch.Tensor) -> torch.Tensor:
    """A Linear weight (out, in) as a contiguous (in, out) copy: x @ W^T then streams W row by row
    (an axpy-style GEMV), measured 1.3-1.5x faster than reading the (out, in) layout at batch 1."""
    return weight.detach().t().contiguous()


def _linear(x: torch.Tensor, wt: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    return torch.mm(x, wt) if b is None else torch.addmm(b, x, wt)


def _weights_key(model: Any) -> tuple:
    return tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in model.parameters())


class DecodePlan:
    """The fused weights of a MiniGPT and its single-token forward (`step`)."""

    def __init__(self, model: Any) -> None:
        c = model.config
        self.config = c
        self.key = _weights_key(model)
        with torch.no_grad(), torch.inference_mode(False):
            self.layers = [_Layer(b, c.mlp == "swiglu") for b in model.blocks]
            self.rope: tuple[torch.Tensor, torch.Tensor] | None = None
            if c.positions == "rope":
                # cos/sin of every position, computed as fastllm.model._rope does (float32, then
                # cast), so that table lookups give the module path's values bit for bit.
                p = model.tok_emb.weight
                hd = c.head_dim
                inv_freq = 1.0 / (c.rope_theta ** (torch.arange(0, hd, 2, device=p.device, dtype=torch.float32) / hd))
                freqs = torch.arange(c.context, device=p.device).to(torch.float32)[:, None] * inv_freq  # (context, hd/2)
                emb = torch.cat((freqs, freqs), dim=-1)  # (context, hd)
                self.rope = (emb.cos().to(p.dtype), emb.sin().to(p.dtype))
            self.lm_head = _t(model.lm_head.weight)  # (d_model, vocab)
        self.tok_emb = model.tok_emb.weight
        self.pos_emb = None if model.pos_emb is None else model.pos_emb.weight
        self.ln_f = model.ln_f
        self.gelu = "tanh" if c.mlp == "gelu_tanh" else "none"

    @classmethod
    def for_model(cls, model: Any) -> DecodePlan:
        """The model's plan, (re)built when its weights changed since the last call."""
        plan = model.__dict__.get("_fastllm_decode_plan")
        if plan is None or plan.key != _weights_key(model):
            plan = cls(model)
            model.__dict__["_fastllm_decode_plan"] = plan  # not a submodule: not in state_dict
        return plan

    def _norm(self, norm: Any, x: torch.Tensor) -> torch.Tensor:
        if isinstance(norm, torch.nn.LayerNorm):
            return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
        return F.rms_norm(x, norm.normalized_shape, norm.weight, norm.eps)

    def step(self, ids: torch.Tensor, positions: torch.Tensor, kv: list[Any], mask: torch.Tensor | None) -> torch.Tensor:
        """Logits (B, vocab) of one new token per row: `ids` (B,) at `positions` (B,), reading and
        extending `kv` (one object per layer with MiniGPT's `update(k, v)` or `attend(q, k, v)`
        protocol) under `mask` (B, 1, 1, T_k) bool or None (every cached key)."""
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
        gqa = Hkv != H
        for layer, cache in zip(self.layers, kv):
            qkv = _linear(self._norm(layer.ln1, x), layer.wqkv, layer.bqkv)  # (B, (H + 2 H_kv) D)
            qk = qkv[:, :QK].view(B, H + Hkv, D)  # (B, H + H_kv, head_dim): RoPE on both at once
            if self.rope is not None:
                half = D // 2
                rotated = torch.cat((-qk[..., half:], qk[..., :half]), dim=-1)  # rotate_half (HF Llama)
                qk = qk * cos + rotated * sin
            q = qk[:, :H].unsqueeze(2)  # (B, H, 1, head_dim)
            k = qk[:, H:].unsqueeze(2)  # (B, H_kv, 1, head_dim)
            v = qkv[:, QK:].view(B, Hkv, 1, D)  # (B, H_kv, 1, head_dim)
            if hasattr(cache, "attend"):
                y = cache.attend(q, k, v)  # (B, H, 1, head_dim): the cache's own attention
            else:
                ks, vs = cache.update(k, v)  # (B, H_kv, T_k, head_dim)
                if gqa and not _SDPA_HAS_GQA:
                    ks, vs = ks.repeat_interleave(H // Hkv, dim=1), vs.repeat_interleave(H // Hkv, dim=1)
                    y = F.scaled_dot_product_attention(q, ks, vs, attn_mask=mask)  # (B, H, 1, head_dim)
                elif gqa:
                    y = F.scaled_dot_product_attention(q, ks, vs, attn_mask=mask, enable_gqa=True)
                else:
                    y = F.scaled_dot_product_attention(q, ks, vs, attn_mask=mask)
            x = x + _linear(y.reshape(B, H * D), layer.wo, layer.bo)  # (B, d_model)
            h = _linear(self._norm(layer.ln2, x), layer.w1, layer.b1)  # (B, hidden) or (B, 2 hidden)
            if c.mlp == "swiglu":
                gate, up = h.chunk(2, dim=-1)
                h = F.silu(gate) * up  # (B, hidden)
            else:
                h = F.gelu(h, approximate=self.gelu)
            x = x + _linear(h, layer.w2, layer.b2)
        return torch.mm(self._norm(self.ln_f, x), self.lm_head)  # (B, vocab)
