"""Training checkpoints on disk: writing, pruning, finding, reading and checking them, and the RNG
states they carry.

A checkpoint is one `torch.save`d dictionary, out_dir/checkpoints/step_XXXXXXXX.pt, marked
{"format": "fastllm-checkpoint", "version": 1}: the model's weights and config, the optimizer and
grad scaler, the step, the data position, every RNG state (torch, CUDA, Python, numpy), the
training config and the metrics history. `Trainer.state_dict` fills it; this module owns the
file. Writes are atomic (`fastllm._io`), and the newest `keep` are kept. Reading is
`weights_only` (no code runs from a checkpoint; the tensors it allocates are the file's own bytes),
and the stored model config and weight shapes are checked (`fastllm.model.gpt.parameter_shapes`,
on the meta device) before a model of that config is built.

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
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from fastllm._io import atomic_path
from fastllm.config import MiniGPTConfig
from fastllm.model.gpt import MiniGPT, parameter_shapes

__all__ = [
    "FORMAT",
    "VERSION",
    "checkpoint_path",
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
_REQUIRED = ("model", "model_config", "optimizer", "step", "rng", "train_config")


def list_checkpoints(out_dir: str | os.PathLike) -> list[Path]:
    """Checkpoints in `out_dir/checkpoints`, oldest first."""
    d = Path(out_dir) / "checkpoints"
    if not d.is_dir():
        return []
    return sorted(p for p in d.glob("step_*.pt") if p.stem[5:].isdigit())


def checkpoint_path(out_dir: str | os.PathLike, step: int) -> Path:
    """Where the checkpoint of `step` goes: out_dir/checkpoints/step_XXXXXXXX.pt."""
    return Path(out_dir) / "checkpoints" / f"step_{step:08d}.pt"


def save_checkpoint(state: dict[str, Any], out_dir: str | os.PathLike, *, step: int, keep: int) -> Path:
    """Write `state` as `checkpoint_path(out_dir, step)` atomically; delete all but the newest `keep`."""
    path = checkpoint_path(out_dir, step)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    for old in list_checkpoints(out_dir)[:-keep]:
        with contextlib.suppress(FileNotFoundError):
            old.unlink()
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by `Trainer`, with a clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)  # what it allocates, the file holds
    except Exception as e:  # truncated zip, bit rot, a different file type
        raise ValueError(f"checkpoint {str(path)!r} is corrupt or not a torch checkpoint: {e}") from None
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
    return ckpt


def model_from_checkpoint(path: str | os.PathLike) -> MiniGPT:
    """The MiniGPT saved in a training checkpoint (or a `save_pretrained` directory)."""
    if Path(path).is_dir():
        return MiniGPT.from_pretrained(path)
    ckpt = load_checkpoint(path)
    try:
        config = MiniGPTConfig(**ckpt["model_config"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"checkpoint {str(path)!r} has a bad model config: {e}") from None
    state = ckpt["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"checkpoint {str(path)!r}: 'model' is not a state dict")
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


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Restore what `rng_state` returned."""
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    np.random.set_state(("MT19937", np.array(state["numpy"], dtype=np.uint32), state["numpy_pos"], 0, 0.0))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
