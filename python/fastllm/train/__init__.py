"""Pretraining: the Trainer (AdamW, cosine schedule, AMP, gradient accumulation, DDP, exact resume),
evaluation, and checkpoints.
"""

from fastllm.config import TrainConfig
from fastllm.train.trainer import (
    CosineSchedule,
    Trainer,
    TrainResult,
    evaluate,
    list_checkpoints,
    load_checkpoint,
    model_from_checkpoint,
    resolve_dtype,
)

__all__ = [
    "CosineSchedule",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "evaluate",
    "list_checkpoints",
    "load_checkpoint",
    "model_from_checkpoint",
    "resolve_dtype",
]
