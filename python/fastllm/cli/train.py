"""`fastllm train` and `fastllm eval`: the Trainer and its evaluation from the command line.

Every field of `MiniGPTConfig` and `TrainConfig` is a flag (`--n-layer 6`, `--max-steps 2000`,
`--compile/--no-compile`), built from the dataclasses so the two can never drift apart. A TOML
file (`--config train.toml`) sets the same names, at the top level or under `[model]` and
`[train]` tables; flags override the file, the file overrides the preset, the preset the defaults.
Without a `vocab_size` the model takes the shards' vocabulary size; a given one must pair with the
shards' tokenizer as `fastllm generate` will check (`fastllm._checks.check_vocab_pair`: every id
embedded, and more rows only as padding up to a multiple of 128).

Under `torchrun --nproc_per_node N -m fastllm train ...` the same command trains with
DistributedDataParallel; only rank 0 prints.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

import click

from fastllm._checks import check_vocab_pair
from fastllm.cli._errors import user_errors
from fastllm.cli._options import I32, I64, SEED, THREADS, U32, count, finite
from fastllm.config import PRESETS, MiniGPTConfig, TrainConfig

_CLI_KEYS = ("data", "preset")  # TOML keys that are not dataclass fields

# Every numeric field's range as a flag: the dataclasses' own minimums, and maxima that keep a huge
# value from reaching torch as an OverflowError (a usage error naming the flag instead).
# tests/test_cli_options.py checks that every int and float field has an entry here.
_UNIT = finite(0.0, 1.0, max_open=True)
RANGES: dict[str, click.ParamType] = {
    # MiniGPTConfig
    "vocab_size": count(1, U32),
    "context": count(1, I32),
    "n_layer": count(1, I32),
    "n_head": count(1, I32),
    "n_kv_head": count(1, I32),
    "d_model": count(1, I32),
    "mlp_hidden": count(1, I32),
    "norm_eps": finite(0.0, min_open=True),
    "rope_theta": finite(0.0, min_open=True),
    "dropout": _UNIT,
    # TrainConfig
    "max_steps": count(1),
    "batch_size": count(1, I32),
    "grad_accum": count(1, I32),
    "lr": finite(0.0),
    "min_lr": finite(0.0),
    "warmup_steps": count(0),
    "decay_steps": count(1),
    "weight_decay": finite(0.0),
    "beta1": _UNIT,
    "beta2": _UNIT,
    "grad_clip": finite(0.0),
    "seed": SEED,
    "eval_interval": count(0),
    "eval_batches": count(0),
    "log_interval": count(1),
    "checkpoint_interval": count(0),
    "keep_checkpoints": count(1),
    "num_threads": THREADS,
    "peak_flops": finite(0.0, min_open=True),
}


def _click_type(name: str, annotation: Any) -> tuple[Any, bool]:
    """(click type, is_flag) for the dataclass field `name` annotated like `int | None`."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in args if a is not type(None))
    if annotation is bool:
        return None, True
    if annotation is str:
        return click.STRING, False
    # a field added without a RANGES entry still gets bounds (the test asks for its own entry)
    fallback = count(-I64 - 1, I64) if annotation is int else finite()
    return RANGES.get(name, fallback), False


def field_help(cls: type) -> dict[str, str]:
    """Each field's trailing `# comment` in fastllm/config.py: the one place the fields are documented."""
    import inspect
    import re

    source = inspect.getsource(cls)
    found = {}
    for m in re.finditer(r"^    (\w+): [^=\n]+= [^#\n]+#\s*(.+)$", source, re.M):
        found[m.group(1)] = m.group(2).strip()
    return found


def _field_options(cls: type, section: str) -> list[click.Option]:
    hints = typing.get_type_hints(cls)
    helps = field_help(cls)
    options = []
    for f in dataclasses.fields(cls):
        kind, is_flag = _click_type(f.name, hints[f.name])
        flag = f.name.replace("_", "-")
        default = (
            repr(f.default)
            if section != "model"
            else "the shards' vocabulary"
            if f.name == "vocab_size"
            else "the preset's"
        )
        help_text = f"{helps.get(f.name, section + ' setting')} [default: {default}]"
        if is_flag:
            options.append(click.Option([f"--{flag}/--no-{flag}", f.name], default=None, help=help_text))
        else:
            options.append(click.Option([f"--{flag}", f.name], type=kind, default=None, help=help_text))
    return options


def _read_toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML: {e}") from None
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if key in ("model", "train") and isinstance(value, dict):
            for k, v in value.items():
                if k in flat:
                    raise ValueError(f"{path}: {k!r} is set twice")
                flat[k] = v
        elif key in flat:
            raise ValueError(f"{path}: {key!r} is set twice")
        else:
            flat[key] = value
    known = (
        {f.name for f in dataclasses.fields(MiniGPTConfig)}
        | {f.name for f in dataclasses.fields(TrainConfig)}
        | set(_CLI_KEYS)
    )
    unknown = sorted(set(flat) - known)
    if unknown:
        raise ValueError(f"{path}: unknown setting(s) {unknown}; see `fastllm train --help` for the names")
    return flat


def build_configs(settings: dict[str, Any], data_vocab: int) -> tuple[MiniGPTConfig, TrainConfig]:
    """The model and training configs for merged `settings` (preset < settings); the vocabulary
    size is the data's unless the settings give one."""
    preset = settings.get("preset") or "small"
    model_fields = {f.name for f in dataclasses.fields(MiniGPTConfig)}
    model_kw = {k: v for k, v in settings.items() if k in model_fields}
    model_kw.setdefault("vocab_size", data_vocab)
    train_kw = {k: v for k, v in settings.items() if k in {f.name for f in dataclasses.fields(TrainConfig)}}
    return MiniGPTConfig.preset(preset, **model_kw), TrainConfig(**train_kw)


def _train(config_path, data, preset, **flags):
    settings: dict[str, Any] = _read_toml(config_path) if config_path else {}
    settings.update({k: v for k, v in flags.items() if v is not None})
    if data is not None:
        settings["data"] = str(data)
    if preset is not None:
        settings["preset"] = preset
    if "data" not in settings:
        raise click.UsageError(
            "no data: pass --data DIR (a folder of `fastllm tokenize` shards) or set data in the TOML file"
        )
    data_dir = Path(settings["data"])
    if config_path and not data_dir.is_absolute() and data is None:
        data_dir = (
            Path(config_path).parent / data_dir
        )  # relative to the TOML file, as paths in config files are

    from fastllm.data.shards import list_shards, read_header

    shards = list_shards(data_dir, "train")
    if not shards:
        raise ValueError(
            f"no training shards in {str(data_dir)!r}: run "
            f"`fastllm tokenize INPUT -o {data_dir} --tokenizer tokenizer.json` first"
        )
    data_vocab = read_header(shards[0]).vocab_size
    model_cfg, train_cfg = build_configs(settings, data_vocab)
    # the model must pair with the shards' tokenizer as `fastllm generate` and `eval` will check
    check_vocab_pair(data_vocab, model_cfg.vocab_size, f"the tokenizer of the shards in {str(data_dir)!r}")

    import torch

    from fastllm.data.dataset import TokenDataset
    from fastllm.model.gpt import MiniGPT
    from fastllm.train.trainer import Trainer

    train_ds = TokenDataset(data_dir, context=model_cfg.context, split="train")
    val_ds = (
        TokenDataset(data_dir, context=model_cfg.context, split="val")
        if list_shards(data_dir, "val")
        else None
    )
    torch.manual_seed(train_cfg.seed)
    model = MiniGPT(model_cfg)
    trainer = Trainer(model, train_ds, val_ds, config=train_cfg)
    if trainer.is_main:
        dtype = str(trainer.dtype).replace("torch.", "")
        click.echo(
            f"model: {model.num_params():,} parameters ({settings.get('preset') or 'small'} preset, "
            f"{model_cfg.n_layer} layers, d_model {model_cfg.d_model}, context {model_cfg.context}, "
            f"vocab {model_cfg.vocab_size:,}); "
            f"data: {train_ds.tokens:,} training tokens"
            + (f", {val_ds.tokens:,} validation" if val_ds is not None else ", no validation split")
            + f"; {trainer.device}, {dtype}, {trainer.world_size} process(es), "
            f"{trainer.tokens_per_step:,} tokens/step",
            err=True,
        )
    result = trainer.fit()
    if trainer.is_main:
        val = (
            f", val loss {result.val_loss:.4f} (perplexity {result.val_perplexity:.2f})"
            if result.val_loss is not None
            else ""
        )
        state = "interrupted at" if result.interrupted else "done:"
        click.echo(
            f"{state} step {result.step:,}, train loss {result.loss:.4f}{val}, "
            f"{result.tokens_per_s:,.0f} tokens/s over {result.seconds:.1f} s; checkpoint {result.checkpoint}"
            + ("" if result.interrupted else f"; model {Path(train_cfg.out_dir) / 'model'}")
        )
        if result.interrupted:
            click.echo(
                f"resume with the same command and --resume latest (or --resume {result.checkpoint})",
                err=True,
            )
    if trainer.distributed:
        torch.distributed.destroy_process_group()


def _train_command() -> click.Command:
    params: list[click.Parameter] = [
        click.Option(
            ["--config", "config_path"],
            type=click.Path(dir_okay=False, exists=True, path_type=Path),
            help="TOML file with any of the settings below (flags override it).",
        ),
        click.Option(
            ["--data"],
            type=click.Path(file_okay=False, path_type=Path),
            help="Folder of token shards from `fastllm tokenize` (train_*.bin, val_*.bin).",
        ),
        click.Option(
            ["--preset"],
            type=click.Choice(sorted(PRESETS)),
            default=None,
            help="Model preset the model fields start from (default small).",
        ),
    ]
    params += _field_options(MiniGPTConfig, "model")
    params += _field_options(TrainConfig, "training")
    return click.Command(
        "train",
        callback=user_errors(_train),
        params=params,
        help=(
            "Pretrain a MiniGPT on token shards. Writes OUT_DIR/checkpoints/, metrics.jsonl, loss.png "
            "and the final model (save_pretrained) to OUT_DIR/model. Ctrl-C saves a checkpoint and stops; "
            "--resume latest carries on. Under torchrun it trains data-parallel."
        ),
    )


def _eval(checkpoint, data, split, batch_size, max_batches, seed, device, dtype, as_json, quiet):
    from fastllm.data.dataset import TokenDataset
    from fastllm.train.checkpoint import model_from_checkpoint
    from fastllm.train.device import resolve_device, resolve_dtype
    from fastllm.train.trainer import evaluate

    dev = resolve_device(device)  # a bad --device fails before anything loads
    model = model_from_checkpoint(checkpoint)
    ds = TokenDataset(data, context=model.config.context, split=split)
    check_vocab_pair(ds.vocab_size, model.config.vocab_size, f"the tokenizer of the shards in {str(data)!r}")
    result = evaluate(
        model.to(dev),
        ds,
        batch_size=batch_size,
        max_batches=max_batches,
        seed=seed,
        device=dev,
        dtype=resolve_dtype(dtype, dev),
        progress=not quiet,
    )
    if as_json:
        click.echo(json.dumps({"checkpoint": str(checkpoint), "split": split, **result}))
        return
    what = (
        f"{result['windows']:,} of the split's {result['of_windows']:,} windows of {ds.context} tokens, "
        f"sampled with seed {seed}"
        if result["sampled"]
        else f"all {result['windows']:,} windows of {ds.context} tokens in the split"
    )
    err = f" (standard error {result['stderr']:.4f})" if result["stderr"] is not None else ""
    click.echo(
        f"{split} loss {result['loss']:.4f}{err}, perplexity {result['perplexity']:.2f} over "
        f"{result['tokens']:,} tokens: {what}"
    )


def _eval_command() -> click.Command:
    return click.Command(
        "eval",
        callback=user_errors(_eval),
        params=[
            click.Argument(["checkpoint"], type=click.Path(exists=True, path_type=Path)),
            click.Option(
                ["--data"],
                required=True,
                type=click.Path(file_okay=False, exists=True, path_type=Path),
                help="Folder of token shards from `fastllm tokenize`.",
            ),
            click.Option(["--split"], default="val", show_default=True, help="Which shards to read."),
            click.Option(["--batch-size"], default=8, show_default=True, type=count(1, I32)),
            click.Option(
                ["--max-batches"],
                default=0,
                show_default=True,
                type=count(0, I64),
                help="Read a random sample of this many batches of windows (what `fastllm train "
                "--eval-batches` reads); 0, or a split no larger, reads the whole split.",
            ),
            click.Option(
                ["--seed"],
                default=0,
                show_default=True,
                type=SEED,
                help="Which windows the sample holds (`fastllm train --seed` of the run gives its sample).",
            ),
            click.Option(
                ["--device"],
                default="auto",
                show_default=True,
                help="auto (cuda when present), cpu, cuda or cuda:N.",
            ),
            click.Option(
                ["--dtype"],
                default="auto",
                show_default=True,
                type=click.Choice(["auto", "float32", "bfloat16", "float16"]),
            ),
            click.Option(["--json", "as_json"], is_flag=True, help="Print one JSON object."),
            click.Option(["--quiet"], is_flag=True, help="No progress bar."),
        ],
        help=(
            "Loss and perplexity of a model (a training checkpoint .pt or a save_pretrained folder) "
            "on a shard folder: the whole split, or a seeded sample of its windows with --max-batches. "
            "The line printed says which."
        ),
    )


train_command = _train_command()
eval_command = _eval_command()
