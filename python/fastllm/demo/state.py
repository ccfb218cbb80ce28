"""The demo's settings (`DemoConfig`) and its run record, `state.json`.

`state.json` holds a format version, the settings and each finished stage's figures; it is written
atomically after every stage, so an interrupted run keeps what finished. `start_state` is the one
place that decides whether a folder may be used: a fresh run needs a new or empty folder, `--resume`
needs a run there made with the same settings.

>>> DemoConfig.quick().vocab_size
512
>>> DemoConfig(context=0)
Traceback (most recent call last):
...
ValueError: context=0 is out of range: it must be >= 1
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastllm._checks import check_float, check_int, check_optional_int, check_type
from fastllm._io import write_atomic

__all__ = ["DemoConfig", "load_state", "save_state", "start_state"]

_STATE_VERSION = 1
_MIN_VOCAB = 257  # the 256 byte tokens and the end-of-text token
_POSITIVE_INTS = (
    "context",
    "n_layer",
    "n_head",
    "d_model",
    "max_steps",
    "batch_size",
    "eval_interval",
    "eval_batches",
    "sample_tokens",
    "gen_tokens",
)


@dataclass
class DemoConfig:
    """The demo's settings: the defaults are `fastllm demo`, `full()` the longer `--full` run,
    `quick()` the under-a-minute variant the tests run."""

    corpus: str | None = None  # a file or folder of the user's text; None = the Python standard library
    max_docs: int | None = None  # read at most this many documents (None: all)
    dedup_threshold: float = 0.8  # Jaccard of word 5-gram sets at or above which texts are duplicates
    vocab_size: int = 4096  # the tokenizer's ids (256 bytes + merges + 1 special)
    compression_sizes: tuple[int, ...] = (512, 1024, 2048, 4096, 8192)  # vocab sizes of the curve
    context: int = 128  # model context (training window)
    n_layer: int = 4  # MiniGPT depth
    n_head: int = 4  # attention heads
    d_model: int = 128  # residual width
    max_steps: int = 600  # optimizer steps (1.2M tokens; the README has the measured time)
    batch_size: int = 16  # windows per step
    lr: float = 2e-3  # peak learning rate (small models take a high one)
    warmup_steps: int = 50  # linear warmup
    eval_interval: int = 200  # validation every this many steps
    # validation batches per evaluation: a seeded sample of eval_batches * batch_size windows (all of
    # them when the split is no larger); 512 windows put the standard error near 0.03 nats/token here
    eval_batches: int = 32
    seed: int = 0  # data order, weights, samples
    sample_prompts: tuple[str, ...] = ("def ", "import os\n", "class ")  # prompts of samples.md
    sample_tokens: int = 96  # new tokens per sample
    gen_batches: tuple[int, ...] = (1, 2, 4, 8, 16)  # batch sizes of the generation-throughput curve
    gen_tokens: int = 64  # new tokens per row when timing generation

    def __post_init__(self) -> None:
        # Checked here, before any stage runs: a bad setting fails in a second, not after training.
        if self.corpus is not None:
            self.corpus = os.fspath(check_type(self.corpus, "corpus", (str, os.PathLike)))
        self.max_docs = check_optional_int(self.max_docs, "max_docs", minimum=2)
        self.dedup_threshold = check_float(
            self.dedup_threshold, "dedup_threshold", minimum=0.0, maximum=1.0, min_open=True, max_open=True
        )
        self.vocab_size = check_int(self.vocab_size, "vocab_size", minimum=_MIN_VOCAB)
        self.compression_sizes = _ints(self.compression_sizes, "compression_sizes", _MIN_VOCAB)
        for name in _POSITIVE_INTS:
            setattr(self, name, check_int(getattr(self, name), name, minimum=1))
        self.lr = check_float(self.lr, "lr", minimum=0.0, min_open=True)
        self.warmup_steps = check_int(self.warmup_steps, "warmup_steps", minimum=0)
        self.seed = check_int(self.seed, "seed", minimum=0)
        self.sample_prompts = _tuple(self.sample_prompts, "sample_prompts")
        for i, prompt in enumerate(self.sample_prompts):
            check_type(prompt, f"sample_prompts[{i}]", str)
            if not prompt:
                raise ValueError(f"sample_prompts[{i}] is empty: a sample needs a prompt")
        self.gen_batches = _ints(self.gen_batches, "gen_batches", 1)

    @classmethod
    def full(cls, **overrides: Any) -> DemoConfig:
        """The longer run (`fastllm demo --full`): a 2.6M-parameter model (d_model 192) on windows of
        256 tokens, 800 steps of 4,096 tokens; about 4.5x the default's training time."""
        base = dict(context=256, d_model=192, max_steps=800)
        return cls(**{**base, **overrides})

    @classmethod
    def quick(cls, **overrides: Any) -> DemoConfig:
        """Small everything: 300 documents, a 512-id tokenizer, a 0.1M-parameter model, 300 steps."""
        base = dict(
            max_docs=300,
            vocab_size=512,
            compression_sizes=(300, 512, 1024),
            context=64,
            n_layer=2,
            n_head=2,
            d_model=64,
            max_steps=300,
            batch_size=16,
            lr=3e-3,
            warmup_steps=10,
            eval_interval=100,
            eval_batches=16,
            sample_tokens=24,
            gen_batches=(1, 2, 4),
            gen_tokens=16,
        )
        return cls(**{**base, **overrides})

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, settings: dict[str, Any]) -> DemoConfig:
        """The settings a run saved in its state.json (unknown keys are an error)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(settings) - names)
        if unknown:
            raise ValueError(f"state.json holds settings this fastllm does not know: {unknown}")
        return cls(**settings)


def _tuple(value: Any, name: str) -> tuple:
    """A list or tuple setting as a tuple (state.json stores lists), and not empty."""
    items = tuple(check_type(value, name, (tuple, list)))
    if not items:
        raise ValueError(f"{name} is empty: give at least one value")
    return items


def _ints(value: Any, name: str, minimum: int) -> tuple[int, ...]:
    return tuple(check_int(v, f"{name}[{i}]", minimum=minimum) for i, v in enumerate(_tuple(value, name)))


def load_state(out: Path) -> dict[str, Any] | None:
    """The run recorded in `out/state.json`, or None when there is none."""
    path = Path(out) / "state.json"
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{str(path)!r} is not valid JSON ({e}); remove it to start over") from e
    if not isinstance(state, dict) or state.get("version") != _STATE_VERSION:
        raise ValueError(f"{str(path)!r} was written by another fastllm version; choose another --out")
    return state


def save_state(out: Path, state: dict[str, Any]) -> None:
    write_atomic(Path(out) / "state.json", json.dumps(state, indent=2))


def start_state(out: Path, cfg: DemoConfig, resume: bool) -> dict[str, Any]:
    """The state to run with in folder `out`: a new one, or with `resume` the one there (same
    settings). Refuses a file, a folder holding something else, and mismatched settings."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file, not a folder")
    state = load_state(out) if out.is_dir() else None
    settings = cfg.to_dict()
    if state is None:
        if resume:
            raise ValueError(f"nothing to resume in {str(out)!r} (no state.json); run without --resume")
        if out.is_dir() and any(out.iterdir()):
            raise ValueError(f"--out {str(out)!r} is not empty and holds no demo run; choose another folder")
        return {"version": _STATE_VERSION, "settings": settings, "stages": {}}
    if not resume:
        raise ValueError(
            f"{str(out)!r} already holds a demo run; pass --resume to carry on or choose another --out"
        )
    differ = sorted(k for k in settings if state["settings"].get(k) != settings[k])
    if differ:
        k = differ[0]
        raise ValueError(
            f"--resume with other settings than the run in {str(out)!r}: {k} was "
            f"{state['settings'].get(k)!r}, now {settings[k]!r}"
        )
    return state
