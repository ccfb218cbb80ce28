"""Option parsing of every `fastllm` command, and the checks every command that pairs a tokenizer
with a model makes.

Oracles: the command tree itself (walked, so a command or option added later is covered): every
integer and float option has a bounded type, and a huge, negative, NaN or infinite value gives a
usage error naming the flag (exactly one `Error:` line, no traceback), before any work; the real
`python -m fastllm` for the values the issue met (OverflowError tracebacks before). Pairing: the
rule of `fastllm._checks.check_vocab_pair` with the sizes read back from the files (the
tokenizer's `vocab_size`, the model's config, the shards' header), named in the error.
"""

from __future__ import annotations

import dataclasses
import math

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cli_util import fastllm
from fastllm import BPETokenizer
from fastllm.cli import main
from fastllm.cli._options import FiniteFloatRange
from fastllm.cli.train import RANGES
from fastllm.config import MiniGPTConfig, TrainConfig
from fastllm.data.shards import ShardWriter
from fastllm.generation import Engine, SamplingParams, generate
from fastllm.model.gpt import MiniGPT
from strategies import source_corpus


def _commands(group: click.Group = main, path: tuple[str, ...] = ()):
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name), command


def _numeric_options():
    for path, command in _commands():
        for param in command.params:
            if isinstance(param.type, (click.types.IntParamType, click.types.FloatParamType)):
                yield path, param


NUMERIC = [(path, p.opts[-1], p) for path, p in _numeric_options()]


def test_the_walk_sees_the_commands_and_their_numeric_options():
    commands = {" ".join(path) for path, _ in _commands()}
    assert {"tokenizer train", "dedup", "tokenize", "train", "eval", "generate", "demo"} <= commands
    flags = {(" ".join(path), flag) for path, flag, _ in NUMERIC}
    for expected in [
        ("tokenizer train", "--vocab-size"),
        ("tokenizer train", "--threads"),
        ("dedup", "--num-perm"),
        ("dedup", "--threshold"),
        ("tokenize", "--shard-tokens"),
        ("train", "--lr"),
        ("train", "--n-layer"),
        ("eval", "--batch-size"),
        ("generate", "--top-p"),
    ]:
        assert expected in flags


@pytest.mark.parametrize("path,flag,param", NUMERIC, ids=[f"{' '.join(p)} {f}" for p, f, _ in NUMERIC])
def test_every_numeric_option_has_a_range(path, flag, param):
    if isinstance(param.type, click.types.IntParamType):
        assert isinstance(param.type, click.IntRange), f"{flag} is a plain int"
        assert param.type.min is not None and param.type.max is not None, f"{flag}: {param.type!r}"
    else:
        assert isinstance(param.type, FiniteFloatRange), f"{flag} takes NaN/inf: {param.type!r}"


def test_every_numeric_config_field_has_its_own_range():
    for cls in (MiniGPTConfig, TrainConfig):
        for f in dataclasses.fields(cls):
            if any(t in str(f.type) for t in ("int", "float")):
                assert f.name in RANGES, f"{cls.__name__}.{f.name} has no entry in cli/train.py RANGES"


HOSTILE = ["1" + "0" * 30, "-" + "1" + "0" * 30, "nan", "inf", "-inf", "1e400"]


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("path,flag,param", NUMERIC, ids=[f"{' '.join(p)} {f}" for p, f, _ in NUMERIC])
def test_hostile_numbers_are_one_line_errors_naming_the_flag(path, flag, param, value):
    """NaN, infinities and integers past the range are refused; a float option with no natural
    maximum (a temperature, a learning rate) takes a huge finite value, which is no error."""
    try:
        param.type.convert(value, param, None)
    except click.BadParameter:
        pass
    else:
        assert isinstance(param.type, FiniteFloatRange) and math.isfinite(float(value)), (flag, value)
        return
    # The option comes first: click converts parameters in the order they are given, so it is
    # refused before a missing argument could be reported, and before any work starts.
    result = CliRunner().invoke(main, [*path, flag, value])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # not an exception escaping the command
    lines = result.output.splitlines()  # one line: no usage block above it
    assert len(lines) == 1 and lines[0].startswith("Error:") and f"'{flag}'" in lines[0], result.output
    assert "Traceback" not in result.output


# ------------------------------------------------------------------ the real command, as the issue ran it


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tokenizer of 289 ids and one of 1,000, models of 300 (the first's: padded) and 4,096 ids,
    shards of 300 ids."""
    d = tmp_path_factory.mktemp("pairs")
    (d / "in.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 50, encoding="utf-8")
    tok = BPETokenizer.train(
        ["the quick brown fox jumps over the lazy dog. " * 20],
        299,
        special_tokens=["<|endoftext|>"],
        show_progress=False,
    )
    tok.save(d / "tok.json")
    big = BPETokenizer.train(
        [source_corpus(20000)], 1000, special_tokens=["<|endoftext|>"], show_progress=False
    )
    big.save(d / "big.json")
    torch.manual_seed(0)
    for vocab in (300, 4096):
        MiniGPT(MiniGPTConfig.preset("tiny", vocab_size=vocab, context=64)).save_pretrained(d / f"m{vocab}")
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        with ShardWriter(
            d / "shards", split=split, vocab_size=300, eot_id=0, tokenizer_sha256="cd" * 32
        ) as w:
            w.write(rng.integers(1, 300, 3000))
    return d


def _one_error_line(files, args, monkeypatch) -> str:
    """The one `Error:` line of `fastllm ARGS` run in `files`: a subprocess for the commands that
    do not import torch, in this process (torch is loaded already) for the others."""
    args = [str(a) for a in args]
    if args[0] in ("tokenizer", "dedup", "tokenize"):
        out = fastllm(*args, cwd=files)
        code, text = out.returncode, out.stderr + out.stdout
    else:
        monkeypatch.chdir(files)
        result = CliRunner().invoke(main, args)
        assert isinstance(result.exception, SystemExit), result.exception  # nothing escaped
        code, text = result.exit_code, result.output
    assert code != 0 and "Traceback" not in text, text
    errors = [line for line in text.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, text
    if code == 2:  # a usage error (a bad flag or value): that one line and nothing else
        assert text.strip() == errors[0], text
    return errors[0]


BIG = "1" + "0" * 30  # 10**30


GEN = ["generate", "hi", "--checkpoint", "m300", "--tokenizer", "tok.json"]
ISSUE_CALLS = {
    "vocab-size": (["tokenizer", "train", "in.txt", "--vocab-size", BIG, "--quiet"], "'--vocab-size'"),
    "threads": (["tokenizer", "train", "in.txt", "--threads", BIG, "--quiet"], "'--threads'"),
    "num-perm": (["dedup", "in.txt", "-o", "o.txt", "--num-perm", BIG, "--quiet"], "'--num-perm'"),
    "dedup-threads": (["dedup", "in.txt", "-o", "o.txt", "--threads", BIG], "'--threads'"),
    "generate-cuda-abc": ([*GEN, "--device", "cuda:abc"], "device 'cuda:abc' is not one of"),
    "generate-foo": ([*GEN, "--device", "foo"], "device 'foo' is not one of"),
    "generate-meta": ([*GEN, "--device", "meta"], "device 'meta' is not one of"),
    "eval-cuda-abc": (["eval", "m300", "--data", "shards", "--device", "cuda:abc"], "'cuda:abc'"),
    "eval-meta": (["eval", "m300", "--data", "shards", "--device", "meta"], "'meta'"),
    "train-foo": (
        ["train", "--data", "shards", "--preset", "tiny", "--device", "foo", "--out-dir", "out"],
        "'foo'",
    ),
}


@pytest.mark.parametrize("case", sorted(ISSUE_CALLS))
def test_the_issues_calls_are_one_line_errors(files, case, monkeypatch):
    args, needle = ISSUE_CALLS[case]
    error = _one_error_line(files, args, monkeypatch)
    assert needle in error
    assert not (files / "o.txt").exists() and not (files / "out").exists()


# ------------------------------------------------------------------ a tokenizer with a model


def _gen_args(model: str, tokenizer: str) -> list[str]:
    return ["generate", "the", "--checkpoint", model, "--tokenizer", tokenizer, "--max-new-tokens", "3"]


def test_generate_refuses_another_models_tokenizer(files, monkeypatch):
    """A 289-id tokenizer with a 4,096-id model ran and printed garbage: refused, both sizes named."""
    tok = BPETokenizer.from_file(files / "tok.json")
    error = _one_error_line(files, _gen_args("m4096", "tok.json"), monkeypatch)
    assert f"{tok.vocab_size:,} ids" in error and "4,096" in error
    big = BPETokenizer.from_file(files / "big.json")
    assert big.vocab_size == 1000
    error = _one_error_line(files, _gen_args("m300", "big.json"), monkeypatch)
    assert f"{big.vocab_size:,} ids" in error and "300" in error and "no embedding" in error


def test_eval_and_train_refuse_a_model_that_does_not_pair_with_the_shards(files, monkeypatch):
    error = _one_error_line(files, ["eval", "m4096", "--data", "shards"], monkeypatch)
    assert "300 ids" in error and "4,096" in error
    train = ["train", "--data", "shards", "--preset", "tiny", "--vocab-size", 4096, "--out-dir", "t"]
    error = _one_error_line(files, train, monkeypatch)
    assert "300 ids" in error and "4,096" in error and not (files / "t").exists()


def test_the_python_api_refuses_the_pair_too(files):
    tok = BPETokenizer.from_file(files / "tok.json")
    model = MiniGPT.from_pretrained(files / "m4096")
    with pytest.raises(ValueError, match=rf"{tok.vocab_size} ids \(vocab_size\) but the model embeds 4,096"):
        Engine(model, tokenizer=tok, num_blocks=8)
    with pytest.raises(ValueError, match="4,096"):
        generate(model, [[1, 2]], SamplingParams(max_new_tokens=2, stop=["x"]), tokenizer=tok)
    padded = MiniGPT.from_pretrained(files / "m300")  # 289 ids in 300 rows: padding, accepted
    assert Engine(padded, tokenizer=tok, num_blocks=8).generate("the", SamplingParams(max_new_tokens=2))


@pytest.mark.parametrize(
    "args,needle",
    [
        (["bogus"], "No such command 'bogus'"),
        (["generate", "--no-such-flag"], "--no-such-flag"),
        (["train", "--steps"], "--steps"),
        (["dedup", "--format", "xml", "in.txt"], "'--format'"),
    ],
)
def test_usage_errors_are_one_line(args, needle):
    """click prints a usage block, a hint and the message for a usage error; fastllm prints the
    message alone, in one line that says where the help is, with click's status 2."""
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    lines = result.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and needle in lines[0], result.output
    assert "--help" in lines[0]


def test_help_and_bare_groups_still_show_the_help():
    for args in (["--help"], ["generate", "--help"], ["tokenizer"]):
        result = CliRunner().invoke(main, args)
        assert result.output.startswith("Usage:"), (args, result.output)
        assert "Error" not in result.output
