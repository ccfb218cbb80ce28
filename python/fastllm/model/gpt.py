"""MiniGPT: a small decoder-only transformer covering the GPT-2 and Llama families, plus checkpoints.

Why one model for both: GPT-2 (learned positions, LayerNorm, GELU MLP, biases, tied embeddings)
and Llama (RoPE, RMSNorm, SwiGLU, grouped-query attention, no biases) differ only in a handful of
switches, so `MiniGPTConfig` names those switches and `MiniGPT` is one pre-norm stack that honours
them. Structure and conventions follow nanoGPT (Karpathy): `forward(idx, targets) -> (logits, loss)`,
GPT-2 weight init, the 6N + 12·L·d·T FLOPs-per-token estimate used for MFU (PaLM appendix B).

Checkpoints: `MiniGPT.from_pretrained(dir)` reads a local Hugging Face directory of a
`GPT2LMHeadModel` or `LlamaForCausalLM` (config.json + safetensors or pytorch_model.bin, sharded
or not) and maps its weights in through `fastllm.model.hf` (which checks every name and shape
before loading); `save_pretrained(dir)` writes our own config.json (marked
"fastllm") + model.safetensors, which `from_pretrained` reads back. All attention goes through
`fastllm.attention.attention`, the dispatch point for faster kernels, except what a K/V cache
computes itself (`fastllm.model.cache`: the one protocol `forward_cached` drives; a one-query
decode step calls SDPA directly). RoPE angles come from `fastllm.model.rope`.

>>> import torch
>>> model = MiniGPT(MiniGPTConfig.preset("tiny"))
>>> logits, loss = model(torch.zeros(1, 5, dtype=torch.long), torch.zeros(1, 5, dtype=torch.long))
>>> logits.shape, loss.shape
(torch.Size([1, 5, 512]), torch.Size([]))
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from fastllm._checks import check_type
from fastllm._io import atomic_path, write_atomic
from fastllm.config import MiniGPTConfig, check_fits_in_memory
from fastllm.model import hf
from fastllm.model.attention import attention
from fastllm.model.cache import LayerCache
from fastllm.model.losses import linear_cross_entropy
from fastllm.model.rope import apply_rope, rope_cos_sin

__all__ = ["MiniGPT", "MiniGPTConfig", "parameter_shapes"]

_RESIDUAL_PROJECTIONS = ("attn.o_proj.weight", "mlp.proj.weight", "mlp.down_proj.weight")
# Keywords of MiniGPT.generate that are generate's options, not SamplingParams fields.
_GENERATE_OPTIONS = ("use_cache", "tokenizer", "pad_token_id", "callback")


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


def _norm(config: MiniGPTConfig) -> nn.Module:
    if config.norm == "layernorm":
        return nn.LayerNorm(config.d_model, eps=config.norm_eps, bias=config.bias)
    # RMSNorm (Zhang & Sennrich 2019) as in Llama: x / sqrt(mean(x^2) + eps) * weight.
    return nn.RMSNorm(config.d_model, eps=config.norm_eps)


class _Attention(nn.Module):
    """Causal self-attention with separate q/k/v projections (so GQA is just narrower k/v)."""

    def __init__(self, config: MiniGPTConfig) -> None:
        super().__init__()
        self.config = config
        hd, n_kv = config.head_dim, config.n_kv_head
        assert n_kv is not None  # resolved by MiniGPTConfig.__post_init__
        self.q_proj = nn.Linear(config.d_model, config.n_head * hd, bias=config.bias)
        self.k_proj = nn.Linear(config.d_model, n_kv * hd, bias=config.bias)
        self.v_proj = nn.Linear(config.d_model, n_kv * hd, bias=config.bias)
        self.o_proj = nn.Linear(config.n_head * hd, config.d_model, bias=config.bias)
        self.resid_drop = nn.Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor | None = None,
        kv: LayerCache | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, T, d_model). For generation: `kv` is this layer's cache (it stores the new keys
        and values and attends over everything it holds, `fastllm.model.cache.LayerCache`),
        `positions` (B, T) are the tokens' positions, `mask` (B, 1, T, T_k) bool says which keys
        each query sees."""
        c = self.config
        B, T, _ = x.shape  # (B, T, d_model)
        q = self.q_proj(x).view(B, T, c.n_head, c.head_dim).transpose(1, 2)  # (B, n_head, T, head_dim)
        k = self.k_proj(x).view(B, T, c.n_kv_head, c.head_dim).transpose(1, 2)  # (B, n_kv_head, T, head_dim)
        v = self.v_proj(x).view(B, T, c.n_kv_head, c.head_dim).transpose(1, 2)  # (B, n_kv_head, T, head_dim)
        if c.positions == "rope":
            if positions is None:
                positions = torch.arange(T, device=x.device)  # (T,)
            cos, sin = rope_cos_sin(positions, c.head_dim, c.rope_theta, q.dtype)  # (T or B, T, head_dim)
            if cos.ndim == 3:
                cos, sin = cos[:, None], sin[:, None]  # (B, 1, T, head_dim): the same for every head
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if kv is not None:
            y = kv.attend(q, k, v, mask)  # (B, n_head, T, head_dim)
        elif mask is not None:
            y = attention(q, k, v, causal=False, attn_mask=mask)  # (B, n_head, T, head_dim)
        else:
            y = attention(
                q, k, v, causal=True, dropout_p=c.dropout if self.training else 0.0
            )  # (B, n_head, T, head_dim)
        y = y.transpose(1, 2).reshape(B, T, c.d_model)  # (B, T, d_model)
        return self.resid_drop(self.o_proj(y))  # (B, T, d_model)


class _MLP(nn.Module):
    """GPT-2's GELU MLP (fc -> gelu -> proj) or Llama's SwiGLU (down(silu(gate x) * up x), Shazeer 2020)."""

    def __init__(self, config: MiniGPTConfig) -> None:
        super().__init__()
        self.swiglu = config.mlp == "swiglu"
        self.gelu_approximate = "tanh" if config.mlp == "gelu_tanh" else "none"
        d, h = config.d_model, config.mlp_hidden
        assert h is not None  # resolved by MiniGPTConfig.__post_init__
        if self.swiglu:
            self.gate_proj = nn.Linear(d, h, bias=config.bias)
            self.up_proj = nn.Linear(d, h, bias=config.bias)
            self.down_proj = nn.Linear(h, d, bias=config.bias)
        else:
            self.fc = nn.Linear(d, h, bias=config.bias)
            self.proj = nn.Linear(h, d, bias=config.bias)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, d_model)
        if self.swiglu:
            h = F.silu(self.gate_proj(x)) * self.up_proj(x)  # (B, T, mlp_hidden)
            return self.drop(self.down_proj(h))  # (B, T, d_model)
        # GPT-2 used the tanh approximation of GELU (HF "gelu_new"); matching it keeps logits exact.
        h = F.gelu(self.fc(x), approximate=self.gelu_approximate)  # (B, T, mlp_hidden)
        return self.drop(self.proj(h))  # (B, T, d_model)


class _Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x)) (GPT-2, Llama)."""

    def __init__(self, config: MiniGPTConfig) -> None:
        super().__init__()
        self.ln_1 = _norm(config)
        self.attn = _Attention(config)
        self.ln_2 = _norm(config)
        self.mlp = _MLP(config)

    def forward(
        self, x: torch.Tensor, positions=None, kv=None, mask=None
    ) -> torch.Tensor:  # x: (B, T, d_model)
        x = x + self.attn(self.ln_1(x), positions, kv, mask)  # (B, T, d_model)
        return x + self.mlp(self.ln_2(x))  # (B, T, d_model)


class MiniGPT(nn.Module):
    """Decoder-only transformer; see `MiniGPTConfig` for the switches.

    >>> model = MiniGPT(MiniGPTConfig.preset("gpt2"))  # doctest: +SKIP
    >>> model.num_params()  # doctest: +SKIP
    124439808
    """

    def __init__(self, config: MiniGPTConfig) -> None:
        super().__init__()
        check_type(config, "config", MiniGPTConfig)
        if torch.get_default_device().type == "cpu":  # the meta device (parameter_shapes) allocates nothing
            check_fits_in_memory(config, "MiniGPT")
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.context, config.d_model) if config.positions == "learned" else None
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(_Block(config) for _ in range(config.n_layer))
        self.ln_f = _norm(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tied_embeddings:
            self.lm_head.weight = self.tok_emb.weight  # weight tying (Press & Wolf 2017; GPT-2)
        self.apply(self._init_weights)
        # GPT-2 paper sec. 2.3 / nanoGPT: projections writing into the residual stream get
        # std 0.02/sqrt(2*n_layer), so the residual's variance does not grow with depth.
        for name, p in self.named_parameters():
            if name.endswith(_RESIDUAL_PROJECTIONS):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module: nn.Module) -> None:
        # GPT-2 / nanoGPT: N(0, 0.02) for Linear and Embedding weights, zero biases.
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(
        self, input_ids: torch.Tensor, targets: torch.Tensor | None = None, *, return_logits: bool = True
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Logits (B, T, vocab_size) and, if `targets` (B, T) is given, the mean cross-entropy.

        Targets equal to -1 are ignored (nanoGPT convention). With targets and
        `return_logits=False` (what the Trainer uses) the loss comes from the fused chunked
        projection + cross-entropy of `fastllm.model.losses`, the (B, T, vocab) logits are never
        materialised and None is returned in their place.
        """
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be (B, T), got shape {tuple(input_ids.shape)}")
        B, T = input_ids.shape
        if T > self.config.context:
            raise ValueError(f"input length T={T} exceeds the model context={self.config.context}")
        if targets is not None and targets.shape != input_ids.shape:
            raise ValueError(
                f"targets shape {tuple(targets.shape)} must equal input_ids shape {tuple(input_ids.shape)}"
            )
        x = self.tok_emb(input_ids)  # (B, T, d_model)
        if self.pos_emb is not None:
            x = x + self.pos_emb(torch.arange(T, device=input_ids.device))  # (B, T, d_model)
        x = self.drop(x)
        for block in self.blocks:
            x = block(x)  # (B, T, d_model)
        x = self.ln_f(x)  # (B, T, d_model)
        if targets is not None and not return_logits:
            return None, linear_cross_entropy(
                x.reshape(B * T, -1), self.lm_head.weight, targets.reshape(B * T)
            )
        logits = self.lm_head(x)  # (B, T, vocab_size)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(B * T, -1).float(), targets.reshape(B * T), ignore_index=-1)
        return logits, loss

    def forward_cached(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        kv: list[LayerCache] | None = None,
        mask: torch.Tensor | None = None,
        *,
        last_only: bool = False,
    ) -> torch.Tensor:
        """Logits (B, T, vocab) of `input_ids` (B, T) at explicit `positions` (B, T), reading and
        extending a KV cache (`kv`: one `fastllm.model.cache.LayerCache` per layer) under `mask`
        (B, 1, T, T_k) bool, None meaning causal over all keys. What generation
        (`fastllm.generation`) runs: a prompt (prefill) or one new token per sequence (decode).

        `last_only=True` projects only the last position to the vocabulary (B, 1, vocab): a
        prefill needs no other logits."""
        B, T = input_ids.shape
        if int(positions.max()) >= self.config.context and self.pos_emb is not None:
            raise ValueError(
                f"position {int(positions.max())} exceeds the model context={self.config.context}"
            )
        x = self.tok_emb(input_ids)  # (B, T, d_model)
        if self.pos_emb is not None:
            x = x + self.pos_emb(positions)  # (B, T, d_model)
        for i, block in enumerate(self.blocks):
            x = block(x, positions, None if kv is None else kv[i], mask)  # (B, T, d_model)
        if last_only:
            x = x[:, -1:]  # (B, 1, d_model)
        return self.lm_head(self.ln_f(x))  # (B, T or 1, vocab_size)

    def generate(self, input_ids: Any, max_new_tokens: int, **kwargs: Any) -> Any:
        """The short form of `fastllm.generation.generate`: `kwargs` are `SamplingParams` fields
        (temperature, top_k, top_p, min_p, repetition_penalty, stop, seed, logprobs) and
        generate's options (use_cache, tokenizer, pad_token_id, callback).

        >>> import torch
        >>> model = MiniGPT(MiniGPTConfig.preset("tiny")).eval()
        >>> model.generate(torch.tensor([[1, 2, 3]]), 4, temperature=0).shape
        torch.Size([1, 7])
        """
        # The one reference from the model floor up to generation, imported here and not at the
        # top: the model module must not depend on the floor that drives it.
        from fastllm.generation import SamplingParams, generate

        options = {k: kwargs.pop(k) for k in _GENERATE_OPTIONS if k in kwargs}
        return generate(self, input_ids, SamplingParams(max_new_tokens=max_new_tokens, **kwargs), **options)

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count (tied weights counted once).

        non_embedding=True leaves out the tables that are only looked up, never multiplied:
        the position embeddings (as nanoGPT does) and, when untied, the input token embeddings.
        With tied embeddings the shared matrix stays, since the lm_head does multiply by it.
        """
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            if self.pos_emb is not None:
                n -= self.pos_emb.weight.numel()
            if not self.config.tied_embeddings:
                n -= self.tok_emb.weight.numel()
        return n

    def flops_per_token(self) -> int:
        """Training FLOPs per token: 6N + 12·n_layer·d_model·context (nanoGPT's estimate_mfu, PaLM app. B).

        6N counts forward + backward matmuls on the non-embedding weights; the second term is the
        attention scores and weighted sum over a full context.
        """
        c = self.config
        return 6 * self.num_params(non_embedding=True) + 12 * c.n_layer * c.d_model * c.context

    # ----------------------------------------------------------------------------------------
    # Checkpoints
    # ----------------------------------------------------------------------------------------

    def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
        """Write config.json and model.safetensors into `directory` (created if needed).

        Each file is written atomically (`fastllm._io`), weights first, so a reader never sees a
        config without its complete weights; config.json records the weights' sha256, which
        `from_pretrained` verifies. Tied weights are stored once (under tok_emb.weight).
        """
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        if self.config.tied_embeddings:
            state.pop("lm_head.weight")
        with atomic_path(directory / "model.safetensors") as tmp:
            save_file(state, str(tmp), metadata={"format": "pt"})
            digest = hf.file_sha256(tmp)
        meta = {"format_version": hf.FORMAT_VERSION, "sha256": {"model.safetensors": digest}}
        config = {"fastllm": meta, "model_type": "fastllm-minigpt"}
        config.update(dataclasses.asdict(self.config))
        write_atomic(directory / "config.json", json.dumps(config, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str]) -> MiniGPT:
        """Load a local directory written by `save_pretrained`, or a Hugging Face
        `GPT2LMHeadModel` / `LlamaForCausalLM` directory (`fastllm.model.hf` reads and checks it).
        Returns the model in eval mode.

        Dropout is set to 0 for Hugging Face checkpoints (they are loaded for inference or
        fine-tuning; set `model.config.dropout` before building a new model if you want it).
        """
        config, state = hf.load_checkpoint(directory, parameter_shapes)
        model = cls(config)
        model.load_state_dict(state, strict=False)  # names and shapes checked; tied lm_head shares tok_emb
        return model.eval()


def parameter_shapes(config: MiniGPTConfig) -> dict[str, torch.Size]:
    """The shape of each of MiniGPT(config)'s parameters by name, built on the meta device (no memory).

    Only one block is built: every block has the same shapes (building 1,000 blocks, even on the
    meta device, takes seconds).

    >>> parameter_shapes(MiniGPTConfig.preset("tiny"))["tok_emb.weight"]
    torch.Size([512, 64])
    """
    with torch.device("meta"):
        one = MiniGPT(dataclasses.replace(config, n_layer=1)).state_dict()
    shapes = {}
    for name, p in one.items():
        if name.startswith("blocks.0."):
            for i in range(config.n_layer):
                shapes[f"blocks.{i}.{name[len('blocks.0.') :]}"] = p.shape
        else:
            shapes[name] = p.shape
    return shapes
