"""`fastllm train` and `fastllm eval`, run as `python -m fastllm` in a subprocess.

Oracles: the dataclasses (every field of MiniGPTConfig and TrainConfig is a flag with a help
text), the precedence rule (flag > TOML > preset > default) read back from the run's
train_config.json, the Python API (`fastllm eval` prints what `fastllm.train.trainer.evaluate` returns on
the same model and split), and the checkpoint's step after `--resume latest`. Bad input exits
non-zero with one line naming the problem and no traceback.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from cli_util import fastllm
from fastllm.cli.train import field_help
from fastllm.config import MiniGPTConfig, TrainConfig
from fastllm.data.shards import ShardWriter

VOCAB = 300


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    d = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(0)
    # A learnable stream: a repeated random "sentence" with noise, so a few steps lower the loss.
    base = rng.integers(1, VOCAB, 50)
    stream = np.tile(base, 200)
    noise = rng.random(stream.size) < 0.1
    stream[noise] = rng.integers(1, VOCAB, noise.sum())
    for split, part in (("train", stream[:9000]), ("val", stream[9000:])):
        with ShardWriter(d, split=split, vocab_size=VOCAB, eot_id=0, tokenizer_sha256="cd" * 32) as w:
            w.write(part)
    return d


def test_every_config_field_is_a_flag_with_help():
    out = fastllm("train", "--help")
    assert out.returncode == 0, out.stderr
    for cls in (MiniGPTConfig, TrainConfig):
        helps = field_help(cls)
        for f in dataclasses.fields(cls):
            assert f"--{f.name.replace('_', '-')}" in out.stdout, f.name
            assert helps.get(f.name), f"{cls.__name__}.{f.name} has no `# comment` to serve as --help"


def test_toml_flags_precedence_train_and_eval(tmp_path, shards):
    toml = tmp_path / "train.toml"
    toml.write_text(
        f'preset = "tiny"\ndata = "{shards}"\n'
        "[model]\nn_layer = 1\ncontext = 32\n"
        "[train]\nmax_steps = 50\nbatch_size = 4\nlr = 0.003\nwarmup_steps = 2\n"
        f'out_dir = "{tmp_path / "run"}"\n'
        'progress = false\nlog_interval = 1\neval_interval = 2\neval_batches = 0\ndtype = "float32"\n',
        encoding="utf-8",
    )
    out = fastllm("train", "--config", toml, "--max-steps", 4, "--no-bias")
    assert out.returncode == 0, out.stderr
    assert "done: step 4" in out.stdout
    cfg = json.loads((tmp_path / "run" / "train_config.json").read_text())
    # flag > TOML > preset > dataclass default; vocab from the shards
    assert cfg["train"]["max_steps"] == 4 and cfg["train"]["lr"] == 0.003 and cfg["train"]["batch_size"] == 4
    assert cfg["model"]["n_layer"] == 1 and cfg["model"]["context"] == 32 and cfg["model"]["bias"] is False
    assert cfg["model"]["d_model"] == MiniGPTConfig.preset("tiny").d_model
    assert cfg["model"]["vocab_size"] == VOCAB
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "loss" in r]
    val = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in train] == [1, 2, 3, 4] and [r["step"] for r in val] == [2, 4]
    assert train[-1]["loss"] < train[0]["loss"]  # lr 3e-3 on a repetitive stream: it learns

    # eval prints evaluate()'s figures for the same model and split
    import torch

    from fastllm.data.dataset import TokenDataset
    from fastllm.model.gpt import MiniGPT
    from fastllm.train.trainer import evaluate

    ev = fastllm(
        "eval",
        tmp_path / "run" / "model",
        "--data",
        shards,
        "--json",
        "--batch-size",
        2,
        "--dtype",
        "float32",
    )
    assert ev.returncode == 0, ev.stderr
    got = json.loads(ev.stdout)
    model = MiniGPT.from_pretrained(tmp_path / "run" / "model")
    want = evaluate(model, TokenDataset(shards, context=32, split="val"), batch_size=2, dtype=torch.float32)
    assert got["loss"] == pytest.approx(want["loss"], abs=1e-6)
    assert got["tokens"] == want["tokens"]
    # the last checkpoint holds the same weights as the saved model
    ck = fastllm(
        "eval",
        tmp_path / "run" / "checkpoints" / "step_00000004.pt",
        "--data",
        shards,
        "--json",
        "--batch-size",
        2,
        "--dtype",
        "float32",
    )
    assert ck.returncode == 0, ck.stderr
    assert json.loads(ck.stdout)["loss"] == pytest.approx(got["loss"], abs=1e-6)
    # the validation loss of the last in-training evaluation is the full-split loss at batch 4
    want4 = evaluate(model, TokenDataset(shards, context=32, split="val"), batch_size=4, dtype=torch.float32)
    assert val[-1]["val_loss"] == pytest.approx(want4["loss"], abs=1e-5)


def test_resume_latest_and_config_mismatch(tmp_path, shards):
    common = [
        "--data",
        shards,
        "--preset",
        "tiny",
        "--context",
        32,
        "--batch-size",
        2,
        "--out-dir",
        tmp_path / "run",
        "--no-progress",
        "--checkpoint-interval",
        2,
        "--dtype",
        "float32",
    ]
    first = fastllm("train", *common, "--max-steps", 2)
    assert first.returncode == 0, first.stderr
    again = fastllm("train", *common, "--max-steps", 3, "--resume", "latest")
    assert again.returncode == 0, again.stderr
    assert "done: step 3" in again.stdout
    steps = [
        json.loads(line)["step"]
        for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
        if "loss" in json.loads(line)
    ]
    assert steps == sorted(set(steps)) and steps[-1] == 3  # resumed, not restarted, no duplicated records
    other = fastllm("train", *common, "--max-steps", 4, "--resume", "latest", "--n-layer", 1)
    assert other.returncode == 1
    assert "another model config" in other.stderr and "n_layer" in other.stderr
    assert "Traceback" not in other.stderr


@pytest.mark.parametrize(
    "case",
    [
        "unknown_toml_key",
        "bad_toml",
        "no_data",
        "small_vocab",
        "bad_value",
        "corrupt_checkpoint",
        "context_too_long",
    ],
)
def test_errors_name_the_problem(tmp_path, shards, case):
    if case == "unknown_toml_key":
        (tmp_path / "t.toml").write_text("max_stepz = 3\n")
        out, expect, code = (
            fastllm("train", "--config", tmp_path / "t.toml", "--data", shards),
            "max_stepz",
            1,
        )
    elif case == "bad_toml":
        (tmp_path / "t.toml").write_text("max_steps = = 3\n")
        out, expect, code = (
            fastllm("train", "--config", tmp_path / "t.toml", "--data", shards),
            "not valid TOML",
            1,
        )
    elif case == "no_data":
        out, expect, code = fastllm("train", "--preset", "tiny"), "--data", 2
    elif case == "small_vocab":
        out, expect, code = (
            fastllm(
                "train", "--data", shards, "--preset", "tiny", "--vocab-size", 100, "--out-dir", tmp_path
            ),
            "vocab_size",
            1,
        )
    elif case == "bad_value":
        out, expect, code = (
            fastllm("train", "--data", shards, "--preset", "tiny", "--batch-size", 0, "--out-dir", tmp_path),
            "'--batch-size': 0 is not in the range",  # a usage error naming the flag
            2,
        )
    elif case == "corrupt_checkpoint":
        bad = tmp_path / "step_00000001.pt"
        bad.write_bytes(b"PK\x03\x04 definitely not a checkpoint")
        out, expect, code = fastllm("eval", bad, "--data", shards), "corrupt", 1
    else:
        out, expect, code = (
            fastllm("train", "--data", shards, "--preset", "tiny", "--context", 20000, "--out-dir", tmp_path),
            "context",
            1,
        )
    assert out.returncode == code, (out.stdout, out.stderr)
    assert expect in out.stderr
    assert "Traceback" not in out.stderr


def test_generate_streams_what_the_api_generates(tmp_path, shards):
    """`fastllm generate` prints the prompt plus the decoded greedy continuation of `generate()`."""
    import torch

    from fastllm import BPETokenizer
    from fastllm.generation import SamplingParams, generate
    from fastllm.model.gpt import MiniGPT

    tok = BPETokenizer.train(
        ["the quick brown fox jumps over the lazy dog. " * 20],
        VOCAB - 1,
        special_tokens=["<|endoftext|>"],
        show_progress=False,
    )
    assert tok.vocab_size <= VOCAB
    tok.save(tmp_path / "tok.json")
    torch.manual_seed(0)
    model = MiniGPT(MiniGPTConfig.preset("tiny", vocab_size=VOCAB, context=64))
    model.save_pretrained(tmp_path / "model")
    prompt = "the quick"
    out = fastllm(
        "generate",
        prompt,
        "--checkpoint",
        tmp_path / "model",
        "--tokenizer",
        tmp_path / "tok.json",
        "--temperature",
        0,
        "--max-new-tokens",
        12,
    )
    assert out.returncode == 0, out.stderr
    ids = tok.encode(prompt)
    eot = tok.special_tokens["<|endoftext|>"]
    params = SamplingParams(max_new_tokens=12, temperature=0, stop=[eot])
    want = generate(MiniGPT.from_pretrained(tmp_path / "model"), [ids], params)[0][len(ids) :].tolist()
    want = [t for t in want if t != eot]
    assert out.stdout == prompt + tok.decode(want) + "\n"
    assert "tokens/s" in out.stderr
    too_long = fastllm(
        "generate", "x " * 200, "--checkpoint", tmp_path / "model", "--tokenizer", tmp_path / "tok.json"
    )
    assert too_long.returncode == 1 and "context" in too_long.stderr and "Traceback" not in too_long.stderr
