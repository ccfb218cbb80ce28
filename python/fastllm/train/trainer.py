"""`Trainer`: pretraining MiniGPT on token shards, on one CPU/GPU or many processes under torchrun.

What one optimizer step does (nanoGPT's loop, with its choices kept where they are good):
`grad_accum` micro-batches of `batch_size` windows each, forward under autocast when the dtype
asks for it, the fused chunked projection + cross-entropy of `fastllm.model.losses` (the logits are
never materialised), backward (DistributedDataParallel all-reduces only on the last micro-batch),
gradient clipping, AdamW with weight decay on matrices only (the fused implementation where the
device has one), and the learning rate of linear warmup then cosine decay.

Determinism and resume: micro-batch j of rank r is global batch j * world_size + r of
`TokenDataset.batches`, a pure function of (seed, index), so the data position is just the step
count. A checkpoint (`fastllm.train.checkpoint`) holds the model, the optimizer, every RNG state,
the step and the data position; resuming from step N and running to 2N gives the same weights, bit
for bit on the CPU, as running 2N steps straight. The last `keep_checkpoints` are kept. Ctrl-C
finishes the current step, saves a checkpoint and stops. metrics.jsonl is rewritten (atomically) at
the start of every `fit()` to the records of the run so far (none for a fresh run, the checkpoint's
for a resumed one), so a run killed at any moment and resumed has each step once.

Divergence: a non-finite training loss, or non-finite weights when a checkpoint is due, raises
`TrainingDiverged` (a FloatingPointError) naming the step; no checkpoint or model is written from
such weights, so every checkpoint on disk holds finite weights (the exception names the last).

Device, autocast dtype ("auto": bf16 where the hardware multiplies it faster) and the peak FLOP/s
for MFU come from `fastllm.train.device`.

Evaluation (`evaluate`) reads the whole validation split when it holds at most `eval_batches *
batch_size` windows, else that many windows drawn at random with `config.seed`: the same sample at
every evaluation of a run, spread over the whole split (not its first batches), so the curve's
points compare and the figure stands for the split.

>>> import tempfile, numpy as np, torch
>>> from fastllm.data.shards import ShardWriter
>>> from fastllm.data.dataset import TokenDataset
>>> from fastllm.model.gpt import MiniGPT, MiniGPTConfig
>>> d = tempfile.mkdtemp()
>>> with ShardWriter(d, split="train", vocab_size=512, eot_id=0, tokenizer_sha256="") as w:
...     w.write(np.random.default_rng(0).integers(0, 512, 5000))
>>> _ = torch.manual_seed(0)
>>> model = MiniGPT(MiniGPTConfig.preset("tiny"))
>>> cfg = TrainConfig(out_dir=d, max_steps=3, batch_size=2, progress=False, checkpoint_interval=0)
>>> result = Trainer(model, TokenDataset(d, context=32), config=cfg).fit()
>>> result.step, result.loss > 0
(3, True)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from fastllm._checks import check_int, check_type
from fastllm._io import atomic_path, write_atomic
from fastllm._progress import bar
from fastllm.config import TrainConfig
from fastllm.data.dataset import TokenDataset
from fastllm.model.gpt import MiniGPT
from fastllm.train import checkpoint
from fastllm.train.device import dist_info, peak_flops, resolve_device, resolve_dtype

__all__ = [
    "CosineSchedule",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingDiverged",
    "eval_windows",
    "evaluate",
    "plot_losses",
]


class TrainingDiverged(FloatingPointError):
    """Training produced a non-finite loss or non-finite weights (usually: the learning rate is too
    high). `step` is the optimizer step it happened at, `checkpoint` the last checkpoint written
    before it (None if none was); nothing is written from non-finite weights."""

    def __init__(self, what: str, step: int, checkpoint: str | None, lr: float) -> None:
        self.step, self.checkpoint = step, checkpoint
        last = (
            f"the last checkpoint, written before it, is {checkpoint} (resume from it with a lower lr)"
            if checkpoint is not None
            else "no checkpoint was written before it"
        )
        super().__init__(f"training diverged at step {step}: {what} (lr {lr:.3g}); {last}")


@dataclass
class TrainResult:
    """What `Trainer.fit()` returns: where it stopped and the last figures."""

    step: int
    loss: float  # mean training loss of the last logged interval
    val_loss: float | None
    tokens: int  # training tokens consumed (all processes)
    seconds: float  # wall time of this fit() call
    tokens_per_s: float  # over this fit() call
    interrupted: bool = False
    checkpoint: str | None = None  # the last checkpoint written
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def val_perplexity(self) -> float | None:
        return None if self.val_loss is None else math.exp(min(self.val_loss, 700.0))


class CosineSchedule:
    """Linear warmup to `lr`, cosine decay to `min_lr` at `decay_steps`, then flat (nanoGPT's get_lr)."""

    def __init__(self, lr: float, min_lr: float, warmup_steps: int, decay_steps: int) -> None:
        self.lr, self.min_lr, self.warmup_steps, self.decay_steps = lr, min_lr, warmup_steps, decay_steps

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        if step >= self.decay_steps:
            return self.min_lr
        progress = (step - self.warmup_steps) / max(1, self.decay_steps - self.warmup_steps)
        return self.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (self.lr - self.min_lr)


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------

_EVAL_STREAM = 0x65766131  # the evaluation sample's own RNG stream, next to the run's seed ("eva1")


def eval_windows(data: TokenDataset, max_windows: int = 0, seed: int = 0) -> np.ndarray:
    """The indices of the non-overlapping windows of `data` (`data[i]`) that `evaluate` reads.

    All of them, in order, when `max_windows` is 0 or not below the split's window count; else
    `max_windows` distinct windows drawn at random (a simple random sample), a pure function of
    (`seed`, the split's length), in the order drawn: consecutive batches of them are random
    groups, so the spread of batch losses gives the sample's standard error (sorted, each batch
    would cover one stretch of the split, and the spread would measure the stretches).

    >>> import tempfile, numpy as np
    >>> from fastllm.data.shards import ShardWriter
    >>> d = tempfile.mkdtemp()
    >>> with ShardWriter(d, split="val", vocab_size=100, eot_id=0, tokenizer_sha256="") as w:
    ...     w.write(np.arange(101) % 100)
    >>> ds = TokenDataset(d, context=10, split="val")
    >>> eval_windows(ds).tolist()
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    >>> pick = eval_windows(ds, 4, seed=1)
    >>> len(pick), pick.tolist() == eval_windows(ds, 4, seed=1).tolist()
    (4, True)
    """
    check_type(data, "data", TokenDataset)
    max_windows = check_int(max_windows, "max_windows", minimum=0)
    seed = check_int(seed, "seed", minimum=0)
    n = len(data)
    if max_windows == 0 or max_windows >= n:
        return np.arange(n, dtype=np.int64)
    # A stream of its own (seed, tag): evaluation draws nothing from training's RNGs.
    rng = np.random.default_rng([seed, _EVAL_STREAM])
    return rng.choice(n, size=max_windows, replace=False).astype(np.int64)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: TokenDataset,
    *,
    batch_size: int = 8,
    max_batches: int = 0,
    seed: int = 0,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = False,
) -> dict[str, Any]:
    """Mean next-token loss and perplexity of `model` over windows of `data` (`eval_windows`).

    max_batches=0, or a split of at most `max_batches * batch_size` windows: every window of the
    split (the last batch may be short). Otherwise `max_batches * batch_size` windows sampled at
    random with `seed`, the same ones on every call, so successive evaluations in a run compare.
    The loss is the mean over every target token read. Under torchrun each rank reads every
    world_size-th batch and the sums are added over ranks.

    Returns loss, perplexity, tokens and windows read, the split's window count (`of_windows`),
    `sampled` (False: the whole split) with its `seed`, and for a sample `stderr`, the standard
    error of the loss from the spread of its batches (None with fewer than 2 batches).
    """
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    max_batches = check_int(max_batches, "max_batches", minimum=0)
    device = torch.device(device)
    windows = eval_windows(data, max_batches * batch_size, seed)
    sampled = len(windows) < len(data)
    was_training = model.training
    model.eval()
    T = data.context
    # (sum of token losses, tokens, sum of batch losses, sum of squared batch losses, batches)
    total = torch.zeros(5, dtype=torch.float64, device=device)
    chunks = [windows[i : i + batch_size] for i in range(0, len(windows), batch_size)]
    mine = chunks[rank::world_size]
    with bar(progress and rank == 0, total=len(mine), desc="eval", unit="batch") as shown:
        for chunk in mine:
            rows = np.stack([data.tokens_at(int(w) * T, (int(w) + 1) * T + 1) for w in chunk])  # (b, T + 1)
            xy = torch.from_numpy(rows).to(device)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                _, loss = model(xy[:, :-1], xy[:, 1:], return_logits=False)
            loss = loss.double()
            n = float(xy[:, 1:].numel())
            total += torch.stack([loss * n, loss.new_tensor(n), loss, loss * loss, loss.new_tensor(1.0)])
            shown.update(1)
    if world_size > 1:
        torch.distributed.all_reduce(total)
    model.train(was_training)
    token_sum, tokens, batch_sum, batch_sq, batches = total.tolist()
    loss = token_sum / tokens
    stderr = None
    if sampled and batches >= 2:
        var = max(0.0, (batch_sq - batch_sum**2 / batches) / (batches - 1))  # of the batch losses
        stderr = math.sqrt(var / batches)
    return {
        "loss": loss,
        "perplexity": math.exp(min(loss, 700.0)),
        "tokens": int(tokens),
        "windows": len(windows),
        "of_windows": len(data),
        "sampled": sampled,
        "seed": seed,
        "stderr": stderr,
    }


# --------------------------------------------------------------------------------------------
# Trainer
# --------------------------------------------------------------------------------------------


class Trainer:
    """Trains `model` on `train_data` (a `TokenDataset`); see the module docstring for the loop.

    Under torchrun (WORLD_SIZE > 1 in the environment) the process group is initialised here (gloo
    on the CPU, nccl on CUDA) and the model wrapped in DistributedDataParallel; only rank 0 writes
    files and shows progress.
    """

    def __init__(
        self,
        model: MiniGPT,
        train_data: TokenDataset,
        val_data: TokenDataset | None = None,
        config: TrainConfig | None = None,
    ) -> None:
        check_type(model, "model", MiniGPT)
        self.config = config = check_type(
            config if config is not None else TrainConfig(), "config", TrainConfig
        )
        for name, data in (("train_data", train_data), ("val_data", val_data)):
            if data is None and name == "val_data":
                continue
            check_type(data, name, TokenDataset)
            if data.vocab_size > model.config.vocab_size:
                raise ValueError(
                    f"{name}: the shards' tokenizer has vocab_size {data.vocab_size:,} but the model only "
                    f"{model.config.vocab_size:,} embeddings; "
                    f"build the model with vocab_size >= {data.vocab_size}"
                )
            if data.context > model.config.context:
                raise ValueError(
                    f"{name}: context {data.context} is longer than the model's "
                    f"context {model.config.context}"
                )
        if val_data is not None and val_data.context != train_data.context:
            raise ValueError(
                f"val_data context {val_data.context} differs from train_data context {train_data.context}"
            )
        if config.num_threads is not None:
            torch.set_num_threads(config.num_threads)

        self.distributed, self.rank, self.local_rank, self.world_size = dist_info()
        if self.distributed and not torch.distributed.is_initialized():
            backend = "nccl" if torch.cuda.is_available() and config.device != "cpu" else "gloo"
            torch.distributed.init_process_group(backend=backend)
        if self.distributed and config.device == "auto" and torch.cuda.is_available():
            self.device = torch.device(f"cuda:{self.local_rank}")
        else:
            self.device = resolve_device(config.device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        if self.dtype == torch.float16 and self.device.type == "cpu":
            raise ValueError(
                "dtype='float16' needs a GPU (fp16 training needs a grad scaler and CUDA); "
                "use 'bfloat16' or 'float32' on the CPU"
            )

        self.model = model.to(self.device)
        self.train_data, self.val_data = train_data, val_data
        self.out_dir = Path(config.out_dir)
        self.is_main = self.rank == 0
        self.step_count = 0  # optimizer steps done
        self.tokens_per_step = config.batch_size * config.grad_accum * self.world_size * train_data.context
        self.schedule = CosineSchedule(
            config.lr,
            config.lr / 10 if config.min_lr is None else config.min_lr,
            config.warmup_steps,
            config.decay_steps or config.max_steps,
        )
        self.optimizer = self._make_optimizer()
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        self._net: nn.Module = self.model
        if config.compile:
            self._net = torch.compile(self._net)
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel

            self._net = DistributedDataParallel(
                self._net, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self._batches = None
        # Dropout draws from torch's global RNG: seed it so config.seed fixes the run (a resume
        # restores the checkpoint's RNG state instead). Each rank its own stream, as nanoGPT.
        torch.manual_seed(config.seed + self.rank)
        self._pending: list[float] = []  # losses of the current log interval (kept across a resume)
        self._stop_requested = False
        self.last_checkpoint: str | None = None
        self.history: list[dict[str, Any]] = []
        self._peak: float | None = None

    # -- pieces -------------------------------------------------------------------------------

    def _make_optimizer(self) -> torch.optim.Optimizer:
        params = [p for p in self.model.parameters() if p.requires_grad]  # tied weights appear once
        decay = [p for p in params if p.dim() >= 2]  # matrices and embedding tables
        no_decay = [p for p in params if p.dim() < 2]  # biases, norm gains
        groups = [
            {"params": decay, "weight_decay": self.config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        kwargs = dict(lr=self.schedule(0), betas=(self.config.beta1, self.config.beta2))
        # Fused AdamW: one kernel over all parameters (CUDA, and the CPU since torch 2.4); measured
        # here it takes the optimizer step from ~50 ms to ~17 ms for 14M parameters on one core.
        if self.device.type in ("cuda", "cpu") and all(
            p.dtype in (torch.float32, torch.bfloat16, torch.float16) for p in params
        ):
            try:
                return torch.optim.AdamW(groups, fused=True, **kwargs)
            except (RuntimeError, TypeError):
                pass
        return torch.optim.AdamW(groups, **kwargs)

    def _data(self):
        if self._batches is None:
            self._batches = self.train_data.batches(
                self.config.batch_size,
                seed=self.config.seed,
                rank=self.rank,
                world_size=self.world_size,
                shuffle=True,
                start=self.step_count * self.config.grad_accum,
            )
        return self._batches

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32)

    def step(self) -> float:
        """One optimizer step over `grad_accum` micro-batches; returns the mean loss (all ranks)."""
        cfg = self.config
        lr = self.schedule(self.step_count)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        data = self._data()
        total = torch.zeros((), dtype=torch.float32, device=self.device)
        for micro in range(cfg.grad_accum):
            x, y = next(data)
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            last = micro == cfg.grad_accum - 1
            sync = self._net.no_sync() if (self.distributed and not last) else contextlib.nullcontext()
            with sync:
                with self._autocast():
                    _, loss = self._net(x, y, return_logits=False)
                loss = loss / cfg.grad_accum
                self.scaler.scale(loss).backward()
            total += loss.detach()
        if cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.distributed:
            torch.distributed.all_reduce(total)  # SUM: gloo has no AVG
            total /= self.world_size
        self.step_count += 1
        return float(total)

    def evaluate(self, data: TokenDataset | None = None, max_batches: int | None = None) -> dict[str, Any]:
        """Validation loss and perplexity (of `val_data` unless `data` is given) over the sample of
        `eval_batches * batch_size` windows that `config.seed` picks, or the whole split when it is
        no larger (`evaluate`)."""
        data = data if data is not None else self.val_data
        if data is None:
            raise ValueError("no validation data: pass val_data to Trainer or data to evaluate()")
        return evaluate(
            self.model,
            data,
            batch_size=self.config.batch_size,
            max_batches=self.config.eval_batches if max_batches is None else max_batches,
            seed=self.config.seed,
            device=self.device,
            dtype=self.dtype,
            rank=self.rank,
            world_size=self.world_size,
        )

    # -- checkpoints --------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": checkpoint.FORMAT,
            "version": checkpoint.VERSION,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "model_config": dataclasses.asdict(self.model.config),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step_count,
            # The data position: each rank has read step * grad_accum micro-batches of its stream.
            "data": {
                "micro_batches": self.step_count * self.config.grad_accum,
                "seed": self.config.seed,
                "batch_size": self.config.batch_size,
                "world_size": self.world_size,
                "tokenizer_sha256": self.train_data.tokenizer_sha256,
            },
            "rng": checkpoint.rng_state(self.device),
            "train_config": self.config.to_dict(),
            "history": self.history,
            "pending_losses": list(self._pending),
        }

    def save_checkpoint(self) -> Path | None:
        """Write out_dir/checkpoints/step_XXXXXXXX.pt atomically (rank 0) and prune old ones.

        Raises `TrainingDiverged` instead if a weight is not finite."""
        self._check_finite()
        path = checkpoint.checkpoint_path(self.out_dir, self.step_count)
        if self.is_main:
            checkpoint.save_checkpoint(
                self.state_dict(), self.out_dir, step=self.step_count, keep=self.config.keep_checkpoints
            )
        if self.distributed:
            torch.distributed.barrier()
        self.last_checkpoint = str(path)
        return path

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Restore everything `save_checkpoint` wrote; the model must have the same config."""
        ckpt = checkpoint.load_checkpoint(path)  # verified against its checksum, every entry's type checked
        where = str(path)
        mine = dataclasses.asdict(self.model.config)
        theirs = ckpt["model_config"]
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        if diff:
            detail = ", ".join(f"{k}: checkpoint {theirs.get(k)!r} vs model {mine.get(k)!r}" for k in diff)
            raise ValueError(f"checkpoint {where!r} is from another model config ({detail})")
        if ckpt["data"].get("tokenizer_sha256") != self.train_data.tokenizer_sha256:
            raise ValueError(
                f"checkpoint {where!r} was trained on shards of another tokenizer "
                f"({ckpt['data'].get('tokenizer_sha256')!r} vs {self.train_data.tokenizer_sha256!r})"
            )
        checkpoint.load_model_state(self.model, ckpt["model"], where)
        try:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except (ValueError, KeyError, TypeError, IndexError, AttributeError, RuntimeError) as e:
            raise ValueError(f"checkpoint {where!r}: optimizer state does not fit: {e}") from None
        for p in self.model.parameters():
            for name, value in self.optimizer.state.get(p, {}).items():
                if name != "step" and isinstance(value, torch.Tensor) and value.shape != p.shape:
                    raise ValueError(
                        f"checkpoint {where!r}: optimizer state {name!r} has shape {tuple(value.shape)} "
                        f"for a parameter of shape {tuple(p.shape)}"
                    )
        if "scaler" in ckpt:
            try:
                self.scaler.load_state_dict(ckpt["scaler"])
            except (ValueError, KeyError, TypeError, RuntimeError) as e:
                raise ValueError(f"checkpoint {where!r}: grad scaler state does not fit: {e}") from None
        self.step_count = ckpt["step"]
        if "history" in ckpt:
            self.history = list(ckpt["history"])
        else:  # a checkpoint from before the history was kept: the metrics file up to its step
            self.history = _records_upto(self.out_dir / "metrics.jsonl", self.step_count)
        self._pending[:] = [float(x) for x in ckpt.get("pending_losses", [])]
        checkpoint.set_rng_state(ckpt["rng"], self.device, where)
        self._batches = None  # restart the data stream at the saved position
        self.last_checkpoint = where

    def _resume(self) -> None:
        target = self.config.resume
        if target is None:
            return
        if target == "latest":
            found = checkpoint.list_checkpoints(self.out_dir)
            if not found:
                return  # nothing yet: a fresh run (so `--resume latest` can always be passed)
            target = str(found[-1])
        self.load_checkpoint(target)

    def _check_finite(self) -> None:
        """TrainingDiverged unless every weight is finite: no checkpoint is written from a diverged model."""
        finite = torch.stack([p.detach().isfinite().all() for p in self.model.parameters()]).all()
        if not bool(finite):
            raise TrainingDiverged(
                "the weights became non-finite",
                self.step_count,
                self.last_checkpoint,
                self.schedule(max(self.step_count - 1, 0)),
            )

    # -- the loop -----------------------------------------------------------------------------

    def _log(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with open(self.out_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def _on_sigint(self, signum, frame) -> None:
        if self._stop_requested:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self._stop_requested = True

    def _should_stop(self) -> bool:
        flag = self._stop_requested
        if self.distributed:  # every rank must stop at the same step
            t = torch.tensor([int(flag)], dtype=torch.int64, device=self.device)
            torch.distributed.all_reduce(t)
            flag = bool(t.item())
        return flag

    def fit(self) -> TrainResult:
        """Train to `max_steps` (from a checkpoint when `config.resume` says so)."""
        cfg = self.config
        self._resume()
        if self.is_main:
            # The records of the run so far and nothing else: a resumed run does not repeat the steps
            # logged after its checkpoint, a fresh one does not append to an old run's file.
            write_atomic(self.out_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in self.history))
            settings = {"train": cfg.to_dict(), "model": dataclasses.asdict(self.model.config)}
            write_atomic(self.out_dir / "train_config.json", json.dumps(settings, indent=2))
        if self._peak is None:
            self._peak = cfg.peak_flops if cfg.peak_flops is not None else peak_flops(self.device, self.dtype)
        flops_per_token = self.model.flops_per_token()
        start_step, t_start = self.step_count, time.perf_counter()
        old_handler = None
        if self.is_main or self.distributed:
            with contextlib.suppress(ValueError):  # not the main thread: no handler
                old_handler = signal.signal(signal.SIGINT, self._on_sigint)
        show = cfg.progress and self.is_main
        progress = bar(
            show, total=cfg.max_steps, initial=self.step_count, desc="train", unit="step", leave=True
        )
        losses = self._pending
        last_loss, val_loss = float("nan"), None
        interrupted = False
        t_log = time.perf_counter()
        steps_since_log = 0
        try:
            while self.step_count < cfg.max_steps:
                loss = self.step()
                if not math.isfinite(loss):
                    raise TrainingDiverged(
                        f"the training loss became {loss}",
                        self.step_count,
                        self.last_checkpoint,
                        self.schedule(self.step_count - 1),
                    )
                losses.append(loss)
                steps_since_log += 1
                step = self.step_count
                if step % cfg.log_interval == 0 or step == cfg.max_steps:
                    dt = time.perf_counter() - t_log
                    tok_s = steps_since_log * self.tokens_per_step / dt
                    last_loss = sum(losses) / len(losses)
                    record = {
                        "step": step,
                        "loss": last_loss,
                        "lr": self.schedule(step - 1),
                        "tokens": step * self.tokens_per_step,
                        "tokens_per_s": tok_s,
                        "mfu": tok_s * flops_per_token / self._peak,
                        "time": time.time(),
                    }
                    self._log(record)
                    progress.set_postfix(
                        loss=f"{last_loss:.3f}",
                        lr=f"{record['lr']:.2e}",
                        tok_s=f"{tok_s:,.0f}",
                        mfu=f"{100 * record['mfu']:.1f}%",
                    )
                    losses.clear()
                    t_log, steps_since_log = time.perf_counter(), 0
                if self.val_data is not None and (
                    (cfg.eval_interval and step % cfg.eval_interval == 0) or step == cfg.max_steps
                ):
                    ev = self.evaluate()
                    val_loss = ev["loss"]
                    self._log(
                        {
                            "step": step,
                            "val_loss": val_loss,
                            "val_perplexity": ev["perplexity"],
                            "val_tokens": ev["tokens"],  # what was read: see evaluate()
                            "val_stderr": ev["stderr"],
                            "time": time.time(),
                        }
                    )
                    if show:  # tqdm.write prints even for a disabled bar
                        progress.write(
                            f"step {step}: val loss {val_loss:.4f}, perplexity {ev['perplexity']:.2f}"
                        )
                    t_log = time.perf_counter()  # evaluation time is not training throughput
                if cfg.checkpoint_interval and step % cfg.checkpoint_interval == 0 and step != cfg.max_steps:
                    self.save_checkpoint()
                progress.update(1)
                if self._should_stop():
                    interrupted = True
                    break
            self.save_checkpoint()
            if self.is_main and not interrupted:
                self.model.save_pretrained(self.out_dir / "model")
        finally:
            progress.close()
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)
            if self.is_main:
                self._plot()
        seconds = time.perf_counter() - t_start
        done = self.step_count - start_step
        if losses:
            last_loss = sum(losses) / len(losses)
        return TrainResult(
            step=self.step_count,
            loss=last_loss,
            val_loss=val_loss,
            tokens=self.step_count * self.tokens_per_step,
            seconds=seconds,
            tokens_per_s=done * self.tokens_per_step / seconds if seconds > 0 else 0.0,
            interrupted=interrupted,
            checkpoint=self.last_checkpoint,
            history=list(self.history),
        )

    def _plot(self) -> None:
        """loss.png: training loss per logged step and validation loss per evaluation."""
        train = [(r["step"], r["loss"]) for r in self.history if "loss" in r]
        val = [(r["step"], r["val_loss"]) for r in self.history if "val_loss" in r]
        if not train and not val:
            return
        plot_losses(train, val, self.out_dir / "loss.png")


def _records_upto(path: Path, step: int) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl up to `step` (reading stops at a torn or foreign line)."""
    records: list[dict[str, Any]] = []
    with contextlib.suppress(OSError):
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except ValueError:
                    break
                if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                    break
                if record["step"] <= step:
                    records.append(record)
    return records


def plot_losses(train: list[tuple[int, float]], val: list[tuple[int, float]], path: Path) -> None:
    """A loss-curve PNG, written atomically (matplotlib's Agg backend, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train")
    if val:
        ax.plot(*zip(*val), marker="o", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
