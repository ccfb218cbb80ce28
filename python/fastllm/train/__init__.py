"""Pretraining: the Trainer (AdamW, cosine schedule, AMP, gradient accumulation, DDP, exact resume)
and evaluation (`trainer`), checkpoints on disk (`checkpoint`), device and precision (`device`).
"""

from fastllm.config import TrainConfig
from fastllm.train.checkpoint import list_checkpoints, load_checkpoint, model_from_checkpoint
from fastllm.train.device import resolve_device, resolve_dtype
from fastllm.train.trainer import CosineSchedule, Trainer, TrainingDiverged, TrainResult, evaluate

__all__ = [
    "CosineSchedule",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingDiverged",
    "evaluate",
    "list_checkpoints",
    "load_checkpoint",
    "model_from_checkpoint",
    "resolve_device",
    "resolve_dtype",
]
