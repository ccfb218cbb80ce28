"""Training checkpoints on disk: writing, pruning, finding, reading and checking them, and the RNG
states they carry.

A checkpoint is one `torch.save`d dictionary, out_dir/checkpoints/step_XXXXXXXX.pt, marked
{"format": "fastllm-checkpoint", "version": 1}: the model's weights and config, the optimizer and
grad scaler, the step, the data position, every RNG state (torch, CUDA, Python, numpy), the
training config and the metrics history. `Trainer.state_dict` fills it; this module owns the
file. Writes are atomic (`fastllm._io`), and the newest `keep` are kept.

Checksums: beside each checkpoint, step_XXXXXXXX.pt.sha256 holds its sha256 in `sha256sum`'s
format (`sha256sum -c` checks it), written atomically before the checkpoint itself is renamed into
place. `load_checkpoint` (so resume, `fastllm eval`, `fastllm generate`) verifies it first: a
flipped byte is a ValueError naming the file. A checkpoint without a .sha256 (written before
fastllm recorded them, or copied without it) loads with an `UnverifiedCheckpointWarning`.

Reading is `weights_only` (no code runs from a checkpoint, whatever its pickle asks for; the
tensors it allocates are the file's own bytes). Then every entry's type is checked (a ValueError
names the file and the entry), the model config must describe a model that fits in memory
(`fastllm.config.check_fits_in_memory`), and the weight shapes are checked against it
(`fastllm.model.gpt.parameter_shapes`, on the meta device) before a model of that config is built.

Older checkpoints carry a "schedule" entry (the learning-rate schedule, also rebuilt from the
training config); it is ignored.

>>> import tempfile, torch
>>> d = tempfile.mkdtemp()
>>> list_checkpoints(d)
[]
>>> path = save_checkpoint({"format": FORMAT, "version": VERSION, "step": 3}, d, step=3, keep=2)
>>> path.name, [p.name for p in list_checkpoints(d)]
('step_00000003.pt', ['step_00000003.pt'])
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from fastllm._io import atomic_path, write_atomic
from fastllm.config import MiniGPTConfig, check_fits_in_memory
from fastllm.model.gpt import MiniGPT, parameter_shapes
from fastllm.model.hf import UnverifiedCheckpointWarning, file_sha256, load_error_text

__all__ = [
    "FORMAT",
    "VERSION",
    "UnverifiedCheckpointWarning",
    "checkpoint_path",
    "checksum_path",
    "list_checkpoints",
    "load_checkpoint",
    "load_model_state",
    "model_from_checkpoint",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]

FORMAT = "fastllm-checkpoint"
VERSION = 1  # bump when the checkpoint dictionary changes incompatibly
_REQUIRED = ("model", "model_config", "optimizer", "step", "rng", "train_config", "data")
_SUM = re.compile(rb"([0-9a-fA-F]{64})(?:[ \t]+\*?(.*))?\s*")  # a `sha256sum` line: HEX  NAME
_RNG_TYPES = {
    "torch": torch.Tensor,
    "python": list,
    "python_version": int,
    "numpy": list,
    "numpy_pos": int,
}
_JSON_SCALARS = (int, float, str, bool, type(None))


def list_checkpoints(out_dir: str | os.PathLike) -> list[Path]:
    """Checkpoints in `out_dir/checkpoints`, oldest first."""
    d = Path(out_dir) / "checkpoints"
    if not d.is_dir():
        return []
    return sorted(p for p in d.glob("step_*.pt") if p.stem[5:].isdigit())


def checkpoint_path(out_dir: str | os.PathLike, step: int) -> Path:
    """Where the checkpoint of `step` goes: out_dir/checkpoints/step_XXXXXXXX.pt."""
    return Path(out_dir) / "checkpoints" / f"step_{step:08d}.pt"


def checksum_path(path: str | os.PathLike) -> Path:
    """Where the sha256 of the checkpoint at `path` is kept: the same name plus ".sha256"."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def save_checkpoint(state: dict[str, Any], out_dir: str | os.PathLike, *, step: int, keep: int) -> Path:
    """Write `state` as `checkpoint_path(out_dir, step)` atomically, with its .sha256 beside it;
    delete all but the newest `keep` (and their checksums)."""
    path = checkpoint_path(out_dir, step)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
        # The checksum is in place before the checkpoint is: a crash between the two leaves a
        # .sha256 without its checkpoint (ignored, pruned), never a new checkpoint without one.
        write_atomic(checksum_path(path), f"{file_sha256(tmp)}  {path.name}\n")
    for old in list_checkpoints(out_dir)[:-keep]:
        with contextlib.suppress(FileNotFoundError):
            old.unlink()
    for orphan in path.parent.glob("step_*.pt.sha256"):
        if not orphan.with_name(orphan.name[: -len(".sha256")]).exists():
            with contextlib.suppress(FileNotFoundError):
                orphan.unlink()
    return path


def _verify(path: Path) -> None:
    """The checkpoint's bytes against its .sha256; a warning when it has none."""
    sums = checksum_path(path)
    if not sums.is_file():
        warnings.warn(
            f"checkpoint {str(path)!r} has no checksum file {sums.name!r} (written before fastllm recorded "
            "them, or copied without it): loading it unverified",
            UnverifiedCheckpointWarning,
            stacklevel=3,
        )
        return
    with open(sums, "rb") as f:
        line = f.read(4096)
    found = _SUM.fullmatch(line)
    if found is None:
        raise ValueError(f"checksum file {str(sums)!r} is not a sha256sum line (64 hex digits, a file name)")
    want = found.group(1).decode().lower()
    got = file_sha256(path)
    if got != want:
        raise ValueError(
            f"checkpoint {str(path)!r} does not match its checksum in {sums.name!r} "
            f"({got[:16]}... vs {want[:16]}...): the file is corrupt; resume from an older checkpoint"
        )


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by `Trainer`, verified and checked, with a clear error for
    anything else (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}")
    _verify(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)  # what it allocates, the file holds
    except Exception as e:  # truncated zip, bit rot, a different file type, a pickle that runs code
        raise ValueError(
            f"checkpoint {str(path)!r} is corrupt or not a torch checkpoint: {load_error_text(e)}"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r} is not a fastllm training checkpoint")
    if ckpt.get("version") != VERSION:
        raise ValueError(
            f"checkpoint {str(path)!r} has format version {ckpt.get('version')!r}; "
            f"this fastllm reads {VERSION}"
        )
    for key in _REQUIRED:
        if key not in ckpt:
            raise ValueError(f"checkpoint {str(path)!r} is incomplete: no {key!r}")
    _check_entries(ckpt, str(path))
    return ckpt


def _check_entries(ckpt: dict[str, Any], where: str) -> None:
    """The type of every entry the Trainer and the loaders read; a ValueError names the entry."""

    def bad(entry: str, what: str) -> ValueError:
        return ValueError(f"checkpoint {where!r}: {entry!r} {what}")

    def kind(entry: str, value: Any, types: type | tuple[type, ...]) -> Any:
        if isinstance(value, bool) or not isinstance(value, types):  # True is not a step or a loss
            names = types.__name__ if isinstance(types, type) else " or ".join(t.__name__ for t in types)
            raise bad(entry, f"must be {names}, not {type(value).__name__}")
        return value

    state = kind("model", ckpt["model"], dict)
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise bad("model", "is not a state dict (weight names to tensors)")
    raw = kind("model_config", ckpt["model_config"], dict)
    try:
        config = MiniGPTConfig(**{str(k): v for k, v in raw.items()})
    except (TypeError, ValueError) as e:
        raise ValueError(f"checkpoint {where!r} has a bad model config: {e}") from None
    check_fits_in_memory(config, f"checkpoint {where!r}: model_config")
    optimizer = kind("optimizer", ckpt["optimizer"], dict)
    kind("optimizer['state']", optimizer.get("state"), dict)
    groups = kind("optimizer['param_groups']", optimizer.get("param_groups"), list)
    if not all(isinstance(g, dict) for g in groups):
        raise bad("optimizer['param_groups']", "must be a list of dicts")
    if "scaler" in ckpt:
        kind("scaler", ckpt["scaler"], dict)
    step = kind("step", ckpt["step"], int)
    if step < 0:
        raise bad("step", f"is {step}, must be >= 0")
    data = kind("data", ckpt["data"], dict)
    if data.get("tokenizer_sha256") is not None:
        kind("data['tokenizer_sha256']", data["tokenizer_sha256"], str)
    rng = kind("rng", ckpt["rng"], dict)
    for key, types in _RNG_TYPES.items():
        kind(f"rng[{key!r}]", rng.get(key), types)
    kind("train_config", ckpt["train_config"], dict)
    for i, record in enumerate(kind("history", ckpt.get("history", []), list)):
        kind(f"history[{i}]", record, dict)
        kind(f"history[{i}]['step']", record.get("step"), int)
        for k, v in record.items():
            if not isinstance(k, str) or not isinstance(v, _JSON_SCALARS):
                raise bad(f"history[{i}]", f"has {k!r}: {type(v).__name__}; records hold numbers and text")
    for i, loss in enumerate(kind("pending_losses", ckpt.get("pending_losses", []), list)):
        kind(f"pending_losses[{i}]", loss, (int, float))
        if not math.isfinite(loss):
            raise bad(f"pending_losses[{i}]", f"is {loss}, not a finite loss")


def model_from_checkpoint(path: str | os.PathLike) -> MiniGPT:
    """The MiniGPT saved in a training checkpoint (or a `save_pretrained` directory)."""
    if Path(path).is_dir():
        return MiniGPT.from_pretrained(path)
    ckpt = load_checkpoint(path)  # checks the entries' types and that the model config fits
    config = MiniGPTConfig(**ckpt["model_config"])
    state = ckpt["model"]
    shapes = parameter_shapes(config)
    missing, unexpected = sorted(shapes.keys() - state.keys()), sorted(state.keys() - shapes.keys())
    wrong = sorted(k for k in shapes.keys() & state.keys() if tuple(state[k].shape) != tuple(shapes[k]))
    if missing or unexpected or wrong:
        raise ValueError(
            f"checkpoint {str(path)!r}: the weights do not fit its model config (missing {missing[:8]}, "
            f"unexpected {unexpected[:8]}, wrong shape {wrong[:8]})"
        )
    model = MiniGPT(config)
    load_model_state(model, state, str(path))
    return model


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """`model.load_state_dict(state)`, a ValueError naming `where` if it does not fit."""
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"checkpoint {where!r} does not fit this model: {e}") from None


def rng_state(device: torch.device) -> dict[str, Any]:
    """Every RNG state a training step draws from: torch (and CUDA on a GPU), Python, numpy."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "python_gauss": random.getstate()[2],
        "numpy": np.random.get_state()[1].tolist(),
        "numpy_pos": int(np.random.get_state()[2]),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device, where: str = "checkpoint") -> None:
    """Restore what `rng_state` returned; a ValueError naming `where` if a state does not fit."""
    try:
        torch.set_rng_state(state["torch"])
        random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
        np.random.set_state(
            ("MT19937", np.array(state["numpy"], dtype=np.uint32), state["numpy_pos"], 0, 0.0)
        )
        if device.type == "cuda" and "cuda" in state:
            torch.cuda.set_rng_state(state["cuda"], device)
    except (KeyError, TypeError, ValueError, OverflowError, RuntimeError) as e:
        raise ValueError(f"checkpoint {where!r}: its RNG state cannot be restored: {e}") from None
