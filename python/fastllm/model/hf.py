"""Checkpoint folders in, MiniGPT config and weights out: fastllm's own and Hugging Face's.

`load_checkpoint(directory, expected)` reads a folder written by `MiniGPT.save_pretrained` (a
config.json marked "fastllm" + model.safetensors) or a local Hugging Face `GPT2LMHeadModel` /
`LlamaForCausalLM` folder (config.json + model.safetensors or pytorch_model.bin, sharded through an
index or not) and returns the `MiniGPTConfig` and a state dict in MiniGPT's names. Why a module of
its own: the name and layout mapping (GPT-2's fused, transposed Conv1D weights; Llama's names) and
the loader's safety checks are one job, apart from the model that `fastllm.model.gpt` defines.

What it never does (house rule 13): read a file outside `directory` (a shard name from an index
must be a relative path with no `..`, and every file read, config.json included, must resolve,
symlinks followed, inside the folder; the one widening is a Hugging Face cache snapshot,
.../models--ORG--NAME/snapshots/REV, whose files are links to ../../blobs/: there the model's cache
folder is the bound), parse a JSON file over `MAX_JSON_BYTES`, accept a config field of the wrong
JSON type or out of range (a ValueError names the file and the field), build anything for a model
whose parameters would not fit in memory (`fastllm.config.check_fits_in_memory`), or copy a weight
into memory before every tensor's name, shape and dtype has been checked against the model the
config describes (`expected(config)`: name -> shape). The check runs the same conversion on meta tensors
built from the safetensors headers (or from a memory map of a pytorch_model.bin), so a file whose
header claims a huge or a wrong shape is refused before anything of that size is allocated.

Checksums: `save_pretrained` records the sha256 of each weight file in config.json
(`"fastllm": {"format_version": 1, "sha256": {"model.safetensors": HEX}}`) and loading a fastllm
folder verifies them (`file_sha256`): a flipped byte is a ValueError naming the file. A fastllm
folder written before checksums were recorded loads with an `UnverifiedCheckpointWarning`; Hugging
Face folders carry no checksums and load as they are.

>>> import tempfile, torch
>>> from fastllm.model.gpt import MiniGPT, MiniGPTConfig, parameter_shapes
>>> d = tempfile.mkdtemp()
>>> MiniGPT(MiniGPTConfig.preset("tiny")).save_pretrained(d)
>>> config, state = load_checkpoint(d, parameter_shapes)
>>> config.n_layer, state["tok_emb.weight"].shape
(2, torch.Size([512, 64]))
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from fastllm._checks import check_bool, check_float, check_int, check_type
from fastllm.config import MiniGPTConfig, check_fits_in_memory

__all__ = [
    "FORMAT_VERSION",
    "MAX_JSON_BYTES",
    "UnverifiedCheckpointWarning",
    "file_sha256",
    "load_checkpoint",
    "load_error_text",
]

FORMAT_VERSION = 1  # of save_pretrained's folder; bump when its layout changes
MAX_JSON_BYTES = 16 << 20  # config.json and shard indexes are a few kB (Llama-3-70B's index: ~60 kB)

# safetensors dtype names -> torch dtypes (the float ones MiniGPT loads; others are reported by name).
_SAFETENSORS_FLOATS = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
}

State = dict[str, torch.Tensor]
Convert = Callable[[State, MiniGPTConfig], State]
_SHA256 = re.compile(r"[0-9a-f]{64}")
_REQUIRED: Any = object()  # a `_field` default: the field must be present


class UnverifiedCheckpointWarning(UserWarning):
    """A fastllm checkpoint (a folder or a training .pt) written before checksums were recorded: it
    loads, but a corrupted byte in it cannot be detected."""


def load_error_text(error: BaseException) -> str:
    """One line saying why `torch.load(..., weights_only=True)` refused a file.

    A pickle that asks for a global outside torch's weights-only allow list (what a checkpoint
    made to run code does) is named as such; torch's own multi-line text, with its advice to retry
    with weights_only=False, is not passed on.

    >>> load_error_text(RuntimeError("PytorchStreamReader failed reading zip archive:\\n  bad"))
    'PytorchStreamReader failed reading zip archive: bad'
    """
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    found = re.search(r"WeightsUnpickler error:\s*([^\n]*)", text)
    if found:
        detail = found.group(1).split(". ")[0].rstrip(".")
        return f"its pickle is not plain tensors and data ({detail}); it was refused and nothing in it ran"
    return " ".join(text.split())[:400]


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 hex digest of a file, read in 1 MiB chunks.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x"
    >>> _ = p.write_bytes(b"abc")
    >>> file_sha256(p)[:16]
    'ba7816bf8f01cfea'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def load_checkpoint(
    directory: str | os.PathLike[str], expected: Callable[[MiniGPTConfig], Mapping[str, torch.Size]]
) -> tuple[MiniGPTConfig, State]:
    """(config, state dict in MiniGPT's names) of the checkpoint folder `directory`.

    `expected(config)` gives the model's parameter shapes by name; the checkpoint must hold exactly
    those (a tied `lm_head.weight` may be absent or present: it is dropped) or a ValueError names
    what is missing, unexpected or of the wrong shape or dtype, before any weight is loaded.
    """
    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"no config.json in {str(directory)!r}")
    root = _root(directory)
    config_path = _inside(root, directory, "config.json", directory)
    raw = _read_json(config_path)
    config, convert = _config(raw, config_path)
    check_fits_in_memory(config, repr(str(config_path)))  # before anything of the config's size is built
    want = dict(expected(config))
    if config.tied_embeddings:
        want.pop("lm_head.weight", None)  # the model shares tok_emb.weight
    named = _weight_files(directory, root)
    if "fastllm" in raw:
        _verify(raw["fastllm"], named, config_path)
    _check(_convert(convert, _headers(named), config, directory), want, directory)
    return config, _convert(convert, _tensors(named), config, directory)


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise ValueError(
            f"{str(path)!r} is {size:,} bytes; a checkpoint's JSON files are at most {MAX_JSON_BYTES:,}"
        )
    try:
        data = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as e:  # bad JSON or UTF-8, an int of 5,000 digits, deep nesting
        raise ValueError(f"{str(path)!r} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{str(path)!r} must hold a JSON object, not {type(data).__name__}")
    return data


def _root(directory: Path) -> Path:
    """The folder no file the loader reads may resolve outside of: `directory` itself, or for a
    Hugging Face cache snapshot (.../models--ORG--NAME/snapshots/REV, made of links into
    ../../blobs/) that model's cache folder."""
    real = directory.resolve()
    if real.parent.name == "snapshots" and real.parent.parent.name.startswith("models--"):
        return real.parent.parent
    return real


def _inside(root: Path, directory: Path, name: Any, where: Path) -> Path:
    """`directory / name` resolved (symlinks followed), refusing a name or a link that leaves `root`."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"{str(where)!r}: shard name {name!r} is not a file name")
    parts = PurePosixPath(name.replace("\\", "/"))
    if parts.is_absolute() or ".." in parts.parts or Path(name).is_absolute() or ":" in name:
        raise ValueError(f"{str(where)!r}: shard {name!r} is outside the checkpoint folder")
    real = (directory / parts).resolve()
    if not real.is_relative_to(root):
        raise ValueError(
            f"{str(where)!r}: {name!r} is a link to {str(real)!r}, "
            f"outside the checkpoint folder {str(root)!r}"
        )
    return real


def _weight_files(directory: Path, root: Path) -> list[tuple[str, Path]]:
    """(name in the folder, resolved path) of the weight files: model.safetensors,
    pytorch_model.bin, or the shards their index names."""
    for single, index in (
        ("model.safetensors", "model.safetensors.index.json"),
        ("pytorch_model.bin", "pytorch_model.bin.index.json"),
    ):
        if (directory / single).is_file():
            return [(single, _inside(root, directory, single, directory))]
        if (directory / index).is_file():
            index_path = _inside(root, directory, index, directory)
            weight_map = _read_json(index_path).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise ValueError(
                    f"{str(index_path)!r}: weight_map must be a non-empty JSON object of weight names "
                    f"to shard files, not {type(weight_map).__name__}"
                )
            names = set(weight_map.values())
            for name in names:  # sorted below: only str names can be compared
                if not isinstance(name, str):
                    raise ValueError(f"{str(index_path)!r}: shard name {name!r} is not a file name")
            files = [(name, _inside(root, directory, name, index_path)) for name in sorted(names)]
            for _, f in files:
                if not f.is_file():
                    raise FileNotFoundError(f"shard {str(f)!r} named in {str(index_path)!r} is missing")
            return files
    raise FileNotFoundError(
        f"no weights in {str(directory)!r}: expected model.safetensors or pytorch_model.bin "
        "(or a sharded index)"
    )


def _verify(meta: Any, files: list[tuple[str, Path]], config_path: Path) -> None:
    """Each weight file of a fastllm folder against the sha256 its config.json records."""
    sums = meta.get("sha256") if isinstance(meta, dict) else None
    if sums is None:
        warnings.warn(
            f"{str(config_path)!r} records no weight checksums (written before fastllm recorded them): "
            "loading it unverified",
            UnverifiedCheckpointWarning,
            stacklevel=4,
        )
        return
    if not isinstance(sums, dict) or not all(
        isinstance(v, str) and _SHA256.fullmatch(v) for v in sums.values()
    ):
        raise ValueError(
            f"{str(config_path)!r}: fastllm.sha256 must map weight file names to sha256 hex digests"
        )
    for name, path in files:
        want = sums.get(name)
        if want is None:
            raise ValueError(f"{str(config_path)!r} records no checksum for the weight file {name!r}")
        got = file_sha256(path)
        if got != want:
            raise ValueError(
                f"weight file {str(path)!r} does not match the sha256 recorded in {str(config_path)!r} "
                f"({got[:16]}... vs {want[:16]}...): the file is corrupt or was changed"
            )


def _torch_load(path: Path) -> State:
    # mmap: the weights stay in the file until they are copied (legacy pre-zip files cannot be mapped).
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, a different file type, a pickle weights_only refuses
        raise ValueError(f"{str(path)!r} is not a readable torch checkpoint: {load_error_text(e)}") from None
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ValueError(f"{str(path)!r} does not hold a state dict (names to tensors)")
    return state


def _merge(into: State, more: State, path: Path) -> None:
    twice = sorted(set(into) & set(more))
    if twice:
        raise ValueError(f"{str(path)!r} repeats weights of another shard: {twice[:8]}")
    into.update(more)


def _is_safetensors(name: str) -> bool:
    # By the name in the folder: a Hugging Face cache links it to a blob named by its hash alone.
    return name.endswith(".safetensors")


def _headers(files: list[tuple[str, Path]]) -> State:
    """Every tensor as a meta tensor of its shape and dtype, read without loading the weights."""
    from safetensors import SafetensorError, safe_open

    out: State = {}
    for name, path in files:
        found: State = {}
        if _is_safetensors(name):
            try:
                with safe_open(str(path), framework="pt") as f:
                    for key in f.keys():
                        s = f.get_slice(key)
                        dtype = _SAFETENSORS_FLOATS.get(s.get_dtype())
                        if dtype is None:
                            raise ValueError(
                                f"weight {key!r} in {str(path)!r} has dtype {s.get_dtype()}; "
                                "MiniGPT loads F64, F32, F16 or BF16 weights"
                            )
                        found[key] = torch.empty(s.get_shape(), dtype=dtype, device="meta")
            except SafetensorError as e:
                raise ValueError(f"{str(path)!r} is not a valid safetensors file: {e}") from None
        else:
            found = {k: torch.empty_like(v, device="meta") for k, v in _torch_load(path).items()}
        _merge(out, found, path)
    return out


def _tensors(files: list[tuple[str, Path]]) -> State:
    from safetensors.torch import load_file

    out: State = {}
    for name, path in files:
        _merge(out, load_file(str(path)) if _is_safetensors(name) else _torch_load(path), path)
    return out


def _convert(convert: Convert | None, state: State, config: MiniGPTConfig, directory: Path) -> State:
    if convert is not None:
        try:
            state = convert(state, config)
        except KeyError as err:
            raise ValueError(f"checkpoint in {str(directory)!r} lacks weight {err.args[0]!r}") from None
        except RuntimeError as err:  # a transpose or split of a tensor with the wrong number of dims
            raise ValueError(
                f"checkpoint in {str(directory)!r} has a weight of the wrong shape: {err}"
            ) from None
    if config.tied_embeddings:
        state.pop("lm_head.weight", None)  # some tied checkpoints store the copy anyway
    return state


def _check(state: State, want: dict[str, torch.Size], directory: Path) -> None:
    """Names, shapes and dtypes of the (meta) checkpoint against what the model expects."""
    missing, unexpected = sorted(want.keys() - state.keys()), sorted(state.keys() - want.keys())
    if missing or unexpected:
        raise ValueError(
            f"checkpoint in {str(directory)!r} does not match the config: "
            f"missing {missing[:8]}, unexpected {unexpected[:8]}"
        )
    for name, shape in want.items():
        if tuple(state[name].shape) != tuple(shape):
            raise ValueError(
                f"weight {name!r} has shape {tuple(state[name].shape)} in the checkpoint, "
                f"expected {tuple(shape)}"
            )
        if not state[name].dtype.is_floating_point:
            raise ValueError(f"weight {name!r} has dtype {state[name].dtype} in the checkpoint, not a float")


# --------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------


def _config(raw: dict[str, Any], config_path: Path) -> tuple[MiniGPTConfig, Convert | None]:
    """MiniGPTConfig of a config.json and the function that maps its weights' names to ours."""
    try:
        if "fastllm" in raw:
            meta = raw["fastllm"]
            version = meta.get("format_version") if isinstance(meta, dict) else None
            if version != FORMAT_VERSION or isinstance(version, bool):
                raise ValueError(f"unsupported fastllm checkpoint format_version={version!r}")
            names = {f.name for f in dataclasses.fields(MiniGPTConfig)}
            return MiniGPTConfig(**{k: v for k, v in raw.items() if k in names}), None
        model_type = raw.get("model_type")
        if model_type == "gpt2":
            return _gpt2_config(raw), _gpt2_state
        if model_type == "llama":
            return _llama_config(raw), _llama_state
    except KeyError as e:
        raise ValueError(f"{str(config_path)!r} lacks {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:  # a field of the wrong type or out of range
        raise ValueError(f"{str(config_path)!r}: {e}") from None
    raise ValueError(
        f"unsupported model_type {model_type!r} in {str(config_path)!r}; "
        "supported: 'gpt2', 'llama' and fastllm's own checkpoints"
    )


def _field(raw: dict[str, Any], name: str, kind: type, default: Any = _REQUIRED, **bounds: Any) -> Any:
    """`raw[name]` checked to be a `kind` (int, float, bool, str or dict) within `bounds`, or
    `default` where it is absent or null (how transformers writes an unset option). A missing
    required field is a KeyError, a wrong one a TypeError or ValueError naming `name`; `_config`
    adds the file's name."""
    value = raw.get(name)
    if value is None:
        if default is _REQUIRED:
            raise KeyError(name)
        return default
    if kind is int:
        return check_int(value, name, **bounds)
    if kind is float:
        return check_float(value, name, **bounds)
    if kind is bool:
        return check_bool(value, name)
    return check_type(value, name, kind)


def _gpt2_config(hf: dict[str, Any]) -> MiniGPTConfig:
    act = _field(hf, "activation_function", str, "gelu_new")
    mlps = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}
    if act not in mlps:
        raise ValueError(f"unsupported GPT-2 activation_function {act!r}; supported: {sorted(mlps)}")
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
        if _field(hf, flag, bool, False):
            raise ValueError(f"unsupported GPT-2 option {flag}={hf[flag]!r}")
    if not _field(hf, "scale_attn_weights", bool, True):
        raise ValueError(f"unsupported GPT-2 option scale_attn_weights={hf['scale_attn_weights']!r}")
    d = _field(hf, "n_embd", int, minimum=1)
    return MiniGPTConfig(
        vocab_size=_field(hf, "vocab_size", int, minimum=1),
        context=_field(hf, "n_positions", int, minimum=1),
        n_layer=_field(hf, "n_layer", int, minimum=1),
        n_head=_field(hf, "n_head", int, minimum=1),
        d_model=d,
        mlp=mlps[act],
        mlp_hidden=_field(hf, "n_inner", int, 4 * d, minimum=1),
        norm="layernorm",
        norm_eps=_field(hf, "layer_norm_epsilon", float, 1e-5, minimum=0.0, min_open=True),
        positions="learned",
        tied_embeddings=_field(hf, "tie_word_embeddings", bool, True),
        dropout=0.0,
        bias=True,
    )


def _llama_config(hf: dict[str, Any]) -> MiniGPTConfig:
    act = _field(hf, "hidden_act", str, "silu")
    if act != "silu":
        raise ValueError(f"unsupported Llama hidden_act {act!r}; supported: 'silu'")
    for flag in ("attention_bias", "mlp_bias"):
        if _field(hf, flag, bool, False):
            raise ValueError(f"unsupported Llama option {flag}={hf[flag]!r}")
    n_head = _field(hf, "num_attention_heads", int, minimum=1)
    d = _field(hf, "hidden_size", int, minimum=1)
    head_dim = _field(hf, "head_dim", int, d // n_head, minimum=1)
    if head_dim * n_head != d:
        raise ValueError(
            f"unsupported Llama head_dim={head_dim} (hidden_size={d}, num_attention_heads={n_head})"
        )
    # transformers >= 5 nests RoPE settings in rope_parameters; older configs use rope_theta + rope_scaling.
    key = "rope_parameters" if hf.get("rope_parameters") is not None else "rope_scaling"
    rope = _field(hf, key, dict, {})
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise ValueError(f"unsupported Llama {key}.rope_type {rope_type!r}; supported: 'default'")
    theta = _field(hf, "rope_theta", float, 10000.0, minimum=0.0, min_open=True)
    if rope.get("rope_theta") is not None:
        theta = check_float(rope["rope_theta"], f"{key}.rope_theta", minimum=0.0, min_open=True)
    return MiniGPTConfig(
        vocab_size=_field(hf, "vocab_size", int, minimum=1),
        context=_field(hf, "max_position_embeddings", int, minimum=1),
        n_layer=_field(hf, "num_hidden_layers", int, minimum=1),
        n_head=n_head,
        n_kv_head=_field(hf, "num_key_value_heads", int, n_head, minimum=1),
        d_model=d,
        mlp="swiglu",
        mlp_hidden=_field(hf, "intermediate_size", int, minimum=1),
        norm="rmsnorm",
        norm_eps=_field(hf, "rms_norm_eps", float, 1e-6, minimum=0.0, min_open=True),
        positions="rope",
        rope_theta=theta,
        tied_embeddings=_field(hf, "tie_word_embeddings", bool, False),
        dropout=0.0,
        bias=False,
    )


# --------------------------------------------------------------------------------------------
# Weight names
# --------------------------------------------------------------------------------------------


def _strip(state: State, prefix: str) -> State:
    """Drop a base-model prefix ("transformer." / "model.") so headless checkpoints load too."""
    return {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in state.items()}


def _gpt2_state(state: State, config: MiniGPTConfig) -> State:
    """GPT-2 names -> ours. HF's GPT-2 uses Conv1D, whose weight is (in, out): transposed vs nn.Linear."""
    state = _strip(state, "transformer.")
    d = config.d_model
    out: State = {
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
        if w.shape[0] != 3 * d or bias.shape != (3 * d,):
            raise ValueError(
                f"GPT-2 weight {h}attn.c_attn has shapes {tuple(w.shape)} and {tuple(bias.shape)}, "
                f"expected ({3 * d}, {d}) and ({3 * d},)"
            )
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
    out.update(state)  # anything left over is reported as unexpected
    return out


def _llama_state(state: State, config: MiniGPTConfig) -> State:
    """Llama names -> ours (both nn.Linear, so no transposes; HF already uses rotate_half layout)."""
    lm_head = state.pop("lm_head.weight", None)
    state = _strip(state, "model.")
    out: State = {
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
