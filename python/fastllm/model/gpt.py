"""MiniGPT: a small decoder-only transformer covering the GPT-2 and Llama families, plus checkpoints.

Why one model for both: GPT-2 (learned positions, LayerNorm, GELU MLP, biases, tied embeddings)
and Llama (RoPE, RMSNorm, SwiGLU, grouped-query attention, no biases) differ only in a handful of
switches, so `MiniGPTConfig` names those switches and `MiniGPT` is one pre-norm stack that honours
them. Structure and conventions follow nanoGPT (Karpathy): `forward(idx, targets) -> (logits, loss)`,
GPT-2 weight init, the 6N + 12·L·d·T FLOPs-per-token estimate used for MFU (PaLM appendix B).

Checkpoints: `MiniGPT.from_pretrained(dir)` reads a local Hugging Face directory of a
`GPT2LMHeadModel` or `LlamaForCausalLM` (config.json + safetensors or pytorch_model.bin, sharded
or not) and maps its weights in; `save_pretrained(dir)` writes our own config.json (marked
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
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from fastllm.config import MiniGPTConfig
from fastllm.model.attention import attention
from fastllm.model.cache import LayerCache
from fastllm.model.losses import linear_cross_entropy
from fastllm.model.rope import apply_rope, rope_cos_sin

__all__ = ["MiniGPT", "MiniGPTConfig"]

_RESIDUAL_PROJECTIONS = ("attn.o_proj.weight", "mlp.proj.weight", "mlp.down_proj.weight")
_FORMAT_VERSION = 1  # bump when save_pretrained's layout changes
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
        if not isinstance(config, MiniGPTConfig):
            raise TypeError(f"config must be a MiniGPTConfig, got {type(config).__name__}")
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

        Each file is written to a temporary name in the same directory and renamed into place,
        weights first, so a reader never sees a config without its complete weights. Tied
        weights are stored once (under tok_emb.weight).
        """
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        if self.config.tied_embeddings:
            state.pop("lm_head.weight")
        config = {"fastllm": {"format_version": _FORMAT_VERSION}, "model_type": "fastllm-minigpt"}
        config.update(dataclasses.asdict(self.config))

        def write(name: str, writer) -> None:
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
            os.close(fd)
            try:
                writer(tmp)
                os.replace(tmp, directory / name)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise

        write("model.safetensors", lambda p: save_file(state, p, metadata={"format": "pt"}))
        write("config.json", lambda p: Path(p).write_text(json.dumps(config, indent=2) + "\n"))

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str]) -> MiniGPT:
        """Load a local directory written by `save_pretrained`, or a Hugging Face
        `GPT2LMHeadModel` / `LlamaForCausalLM` directory. Returns the model in eval mode.

        Dropout is set to 0 for Hugging Face checkpoints (they are loaded for inference or fine-tuning;
        set `model.config.dropout` before building a new model if you want it).
        """
        directory = Path(directory)
        config_path = directory / "config.json"
        if not config_path.is_file():
            raise FileNotFoundError(f"no config.json in {str(directory)!r}")
        hf = json.loads(config_path.read_text())
        if "fastllm" in hf:
            version = hf["fastllm"].get("format_version")
            if version != _FORMAT_VERSION:
                raise ValueError(
                    f"unsupported fastllm checkpoint format_version={version!r} in {str(config_path)!r}"
                )
            names = {f.name for f in dataclasses.fields(MiniGPTConfig)}
            config = MiniGPTConfig(**{k: v for k, v in hf.items() if k in names})
            convert = None
        else:
            model_type = hf.get("model_type")
            if model_type == "gpt2":
                config, convert = _gpt2_config(hf), _gpt2_state
            elif model_type == "llama":
                config, convert = _llama_config(hf), _llama_state
            else:
                raise ValueError(
                    f"unsupported model_type {model_type!r} in {str(config_path)!r}; "
                    "supported: 'gpt2', 'llama' and fastllm's own checkpoints"
                )
        state = _read_weights(directory)
        if convert is not None:
            try:
                state = convert(state, config)
            except KeyError as err:
                raise ValueError(f"checkpoint in {str(directory)!r} lacks weight {err.args[0]!r}") from None
        model = cls(config)
        expected = set(model.state_dict())
        if config.tied_embeddings:
            expected.discard("lm_head.weight")
            state.pop("lm_head.weight", None)  # some tied checkpoints store the copy anyway
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise ValueError(
                f"checkpoint in {str(directory)!r} does not match the config: "
                f"missing {missing[:8]}, unexpected {unexpected[:8]}"
            )
        for name, tensor in model.state_dict().items():
            if name in state and tuple(state[name].shape) != tuple(tensor.shape):
                raise ValueError(
                    f"weight {name!r} has shape {tuple(state[name].shape)} in the checkpoint, "
                    f"expected {tuple(tensor.shape)}"
                )
        model.load_state_dict(state, strict=False)  # keys checked above; tied lm_head shares tok_emb
        return model.eval()


# --------------------------------------------------------------------------------------------
# Hugging Face checkpoint mapping
# --------------------------------------------------------------------------------------------


def _read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint: model.safetensors, pytorch_model.bin, or their sharded indexes."""
    from safetensors.torch import load_file

    def load(path: Path) -> dict[str, torch.Tensor]:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)

    for single, index in (
        ("model.safetensors", "model.safetensors.index.json"),
        ("pytorch_model.bin", "pytorch_model.bin.index.json"),
    ):
        if (directory / single).is_file():
            return load(directory / single)
        if (directory / index).is_file():
            shards = sorted(set(json.loads((directory / index).read_text())["weight_map"].values()))
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(load(directory / shard))
            return state
    raise FileNotFoundError(
        f"no weights in {str(directory)!r}: expected model.safetensors or pytorch_model.bin "
        "(or a sharded index)"
    )


def _strip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Drop a base-model prefix ("transformer." / "model.") so headless checkpoints load too."""
    return {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in state.items()}


def _gpt2_config(hf: dict[str, Any]) -> MiniGPTConfig:
    act = hf.get("activation_function", "gelu_new")
    mlps = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}
    if act not in mlps:
        raise ValueError(f"unsupported GPT-2 activation_function {act!r}; supported: {sorted(mlps)}")
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
        if hf.get(flag):
            raise ValueError(f"unsupported GPT-2 option {flag}={hf[flag]!r}")
    if hf.get("scale_attn_weights", True) is not True:
        raise ValueError(f"unsupported GPT-2 option scale_attn_weights={hf['scale_attn_weights']!r}")
    return MiniGPTConfig(
        vocab_size=hf["vocab_size"],
        context=hf["n_positions"],
        n_layer=hf["n_layer"],
        n_head=hf["n_head"],
        d_model=hf["n_embd"],
        mlp=mlps[act],
        mlp_hidden=hf.get("n_inner") or 4 * hf["n_embd"],
        norm="layernorm",
        norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        positions="learned",
        tied_embeddings=hf.get("tie_word_embeddings", True),
        dropout=0.0,
        bias=True,
    )


def _gpt2_state(state: dict[str, torch.Tensor], config: MiniGPTConfig) -> dict[str, torch.Tensor]:
    """GPT-2 names -> ours. HF's GPT-2 uses Conv1D, whose weight is (in, out): transposed vs nn.Linear."""
    state = _strip(state, "transformer.")
    d = config.d_model
    out: dict[str, torch.Tensor] = {
        "tok_emb.weight": state.pop("wte.weight"),
        "pos_emb.weight": state.pop("wpe.weight"),
        "ln_f.weight": state.pop("ln_f.weight"),
        "ln_f.bias": state.pop("ln_f.bias"),
    }
    if "lm_head.weight" in state:
        out["lm_head.weight"] = state.pop("lm_head.weight")
    for i in range(config.n_layer):
        h, b = f"h.{i}.", f"blocks.{i}."
        w = state.pop(h + "attn.c_attn.weight").t()  # (3*d_model, d_model)
        bias = state.pop(h + "attn.c_attn.bias")  # (3*d_model,)
        for name, wi, bi in zip(("q_proj", "k_proj", "v_proj"), w.split(d, dim=0), bias.split(d)):
            out[b + f"attn.{name}.weight"] = wi.contiguous()  # (d_model, d_model)
            out[b + f"attn.{name}.bias"] = bi.contiguous()
        out[b + "attn.o_proj.weight"] = state.pop(h + "attn.c_proj.weight").t().contiguous()
        out[b + "attn.o_proj.bias"] = state.pop(h + "attn.c_proj.bias")
        out[b + "mlp.fc.weight"] = state.pop(h + "mlp.c_fc.weight").t().contiguous()  # (mlp_hidden, d_model)
        out[b + "mlp.fc.bias"] = state.pop(h + "mlp.c_fc.bias")
        out[b + "mlp.proj.weight"] = (
            state.pop(h + "mlp.c_proj.weight").t().contiguous()
        )  # (d_model, mlp_hidden)
        out[b + "mlp.proj.bias"] = state.pop(h + "mlp.c_proj.bias")
        for ln in ("ln_1", "ln_2"):
            out[b + f"{ln}.weight"] = state.pop(h + f"{ln}.weight")
            out[b + f"{ln}.bias"] = state.pop(h + f"{ln}.bias")
        # Old checkpoints carry the causal-mask buffers; they are not weights.
        state.pop(h + "attn.bias", None)
        state.pop(h + "attn.masked_bias", None)
    out.update(state)  # anything left over is reported as unexpected by from_pretrained
    return out


def _llama_config(hf: dict[str, Any]) -> MiniGPTConfig:
    if hf.get("hidden_act", "silu") != "silu":
        raise ValueError(f"unsupported Llama hidden_act {hf['hidden_act']!r}; supported: 'silu'")
    for flag in ("attention_bias", "mlp_bias"):
        if hf.get(flag):
            raise ValueError(f"unsupported Llama option {flag}={hf[flag]!r}")
    n_head, d = hf["num_attention_heads"], hf["hidden_size"]
    head_dim = hf.get("head_dim") or d // n_head
    if head_dim * n_head != d:
        raise ValueError(
            f"unsupported Llama head_dim={head_dim} (hidden_size={d}, num_attention_heads={n_head})"
        )
    # transformers >= 5 nests RoPE settings in rope_parameters; older configs use rope_theta + rope_scaling.
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise ValueError(f"unsupported Llama rope_type {rope_type!r}; supported: 'default'")
    return MiniGPTConfig(
        vocab_size=hf["vocab_size"],
        context=hf["max_position_embeddings"],
        n_layer=hf["num_hidden_layers"],
        n_head=n_head,
        n_kv_head=hf.get("num_key_value_heads") or n_head,
        d_model=d,
        mlp="swiglu",
        mlp_hidden=hf["intermediate_size"],
        norm="rmsnorm",
        norm_eps=hf.get("rms_norm_eps", 1e-6),
        positions="rope",
        rope_theta=rope.get("rope_theta", hf.get("rope_theta", 10000.0)),
        tied_embeddings=hf.get("tie_word_embeddings", False),
        dropout=0.0,
        bias=False,
    )


def _llama_state(state: dict[str, torch.Tensor], config: MiniGPTConfig) -> dict[str, torch.Tensor]:
    """Llama names -> ours (both nn.Linear, so no transposes; HF already uses rotate_half layout)."""
    lm_head = state.pop("lm_head.weight", None)
    state = _strip(state, "model.")
    out: dict[str, torch.Tensor] = {
        "tok_emb.weight": state.pop("embed_tokens.weight"),
        "ln_f.weight": state.pop("norm.weight"),
    }
    if lm_head is not None:
        out["lm_head.weight"] = lm_head
    names = {
        "input_layernorm.weight": "ln_1.weight",
        "post_attention_layernorm.weight": "ln_2.weight",
        "self_attn.q_proj.weight": "attn.q_proj.weight",
        "self_attn.k_proj.weight": "attn.k_proj.weight",
        "self_attn.v_proj.weight": "attn.v_proj.weight",
        "self_attn.o_proj.weight": "attn.o_proj.weight",
        "mlp.gate_proj.weight": "mlp.gate_proj.weight",
        "mlp.up_proj.weight": "mlp.up_proj.weight",
        "mlp.down_proj.weight": "mlp.down_proj.weight",
    }
    for i in range(config.n_layer):
        for theirs, ours in names.items():
            out[f"blocks.{i}.{ours}"] = state.pop(f"layers.{i}.{theirs}")
        state.pop(f"layers.{i}.self_attn.rotary_emb.inv_freq", None)  # a buffer in old checkpoints
    out.update(state)
    return out
