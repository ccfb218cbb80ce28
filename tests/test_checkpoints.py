"""Training checkpoints and the Trainer's robustness against hostile, corrupt and unlucky files.

Oracles: a real checkpoint from a 2-step run, changed one entry at a time (every change must be a
ValueError naming the file and the entry, through `load_checkpoint`, `model_from_checkpoint` and a
resuming `Trainer`); the file's bytes with 64 of them flipped inside a tensor (loaded without the
checksum they silently change the weights, with it they are refused); a pickle whose __reduce__
creates a marker file (it does when loaded with weights_only=False; through every loader and
command it must not); an uninterrupted run, whose (step, loss) records a run killed at random
moments and resumed must reproduce exactly once each; and the checkpoints a diverging run leaves,
whose weights must all be finite.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import fastllm.train.checkpoint as checkpoint
from cli_util import fastllm
from fastllm.model.gpt import MiniGPT
from fastllm.train.checkpoint import (
    UnverifiedCheckpointWarning,
    checksum_path,
    list_checkpoints,
    load_checkpoint,
    model_from_checkpoint,
)
from fastllm.train.trainer import Trainer, TrainingDiverged
from train_util import dataset, save_with_checksum, tiny_model, train_config, train_losses, write_shards

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_shards(tmp_path_factory.mktemp("shards"), tokens=3000)


@pytest.fixture(scope="module")
def run(data, tmp_path_factory) -> Path:
    """out_dir of a 2-step run with a checkpoint after each step."""
    out = tmp_path_factory.mktemp("run")
    Trainer(tiny_model(0), dataset(data), config=train_config(out, max_steps=2, checkpoint_interval=1)).fit()
    return out


@pytest.fixture
def ckpt(run) -> dict:
    return torch.load(run / "checkpoints" / "step_00000002.pt", weights_only=True)


def _resume(data, out, path, **overrides):
    return Trainer(tiny_model(0), dataset(data), config=train_config(out, resume=str(path), **overrides))


# ------------------------------------------------------------------ hostile entries, table-driven


def _set(path: str, value):
    """A change to a checkpoint dict: the entry at `path` ("a/b/c", integer keys as digits) := value."""

    def change(c):
        *parents, last = path.split("/")
        for key in parents:
            c = c[int(key) if key.isdigit() else key]
        c[int(last) if last.isdigit() else last] = value

    return change


def _drop(key: str):
    return lambda c: c.pop(key)


def _whole(value):
    def change(c):
        c.clear()
        c["__whole__"] = value

    return change


HOSTILE_ENTRIES = [
    ("not-a-dict", _whole([1, 2]), r"not a fastllm training checkpoint"),
    ("format-missing", _drop("format"), r"not a fastllm training checkpoint"),
    ("version-2", _set("version", 2), r"format version 2"),
    ("data-missing", _drop("data"), r"incomplete: no 'data'"),
    ("model_config-list", _set("model_config", [1, 2]), r"'model_config' must be dict, not list"),
    ("model_config-number", _set("model_config", 5), r"'model_config' must be dict, not int"),
    ("model_config-heads-0", _set("model_config/n_head", 0), r"bad model config: n_head=0 is out of range"),
    ("model_config-typo", _set("model_config/n_layers", 2), r"bad model config.*n_layers"),
    ("model_config-str", _set("model_config/d_model", "64"), r"bad model config: d_model must be an int"),
    ("model_config-layers", _set("model_config/n_layer", 10**6), r"n_layer=1000000 is out of range"),
    (
        "model_config-vocab-huge",
        _set("model_config/vocab_size", 10**12),
        r"model_config: this model has .*vocab_size x d_model = 1,000,000,000,000 x 64",
    ),
    ("model-list", _set("model", [torch.zeros(1)]), r"'model' must be dict, not list"),
    ("model-not-tensors", _set("model", {"tok_emb.weight": 1}), r"'model' is not a state dict"),
    ("optimizer-list", _set("optimizer", []), r"'optimizer' must be dict, not list"),
    ("optimizer-state-list", _set("optimizer/state", []), r"optimizer\['state'\]\" must be dict, not list"),
    (
        "optimizer-groups-dict",
        _set("optimizer/param_groups", {}),
        r"param_groups'\]\" must be list, not dict",
    ),
    (
        "optimizer-groups-ints",
        _set("optimizer/param_groups", [1]),
        r"param_groups'\]\" must be a list of dicts",
    ),
    ("scaler-list", _set("scaler", []), r"'scaler' must be dict, not list"),
    ("step-str", _set("step", "2"), r"'step' must be int, not str"),
    ("step-bool", _set("step", True), r"'step' must be int, not bool"),
    ("step-float", _set("step", 2.0), r"'step' must be int, not float"),
    ("step-negative", _set("step", -1), r"'step' is -1, must be >= 0"),
    ("data-list", _set("data", []), r"'data' must be dict, not list"),
    ("tokenizer-int", _set("data/tokenizer_sha256", 5), r"tokenizer_sha256'\]\" must be str, not int"),
    ("rng-list", _set("rng", []), r"'rng' must be dict, not list"),
    ("rng-torch-list", _set("rng/torch", [1]), r"rng\['torch'\]\" must be Tensor, not list"),
    ("rng-numpy-str", _set("rng/numpy", "x"), r"rng\['numpy'\]\" must be list, not str"),
    ("rng-missing", _set("rng", {}), r"rng\['torch'\]\" must be Tensor, not NoneType"),
    ("train_config-list", _set("train_config", []), r"'train_config' must be dict, not list"),
    ("history-dict", _set("history", {}), r"'history' must be list, not dict"),
    ("history-item-int", _set("history", [1]), r"'history\[0\]' must be dict, not int"),
    ("history-step-str", _set("history", [{"step": "1"}]), r"history\[0\]\['step'\]\" must be int, not str"),
    ("history-tensor", _set("history", [{"step": 1, "loss": torch.zeros(1)}]), r"has 'loss': Tensor"),
    ("pending-str", _set("pending_losses", ["x"]), r"'pending_losses\[0\]' must be int or float, not str"),
    ("pending-nan", _set("pending_losses", [math.nan]), r"'pending_losses\[0\]' is nan, not a finite loss"),
]


@pytest.mark.parametrize(
    "change,match", [c[1:] for c in HOSTILE_ENTRIES], ids=[c[0] for c in HOSTILE_ENTRIES]
)
def test_hostile_entries_are_value_errors_through_every_reader(data, tmp_path, ckpt, change, match):
    change(ckpt)
    path = save_with_checksum(ckpt.pop("__whole__", ckpt), tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=rf"bad.pt.*{match}|{match}.*bad.pt"):
        load_checkpoint(path)
    with pytest.raises(ValueError, match=match):
        model_from_checkpoint(path)
    with pytest.raises(ValueError, match=match):
        _resume(data, tmp_path / "out", path).fit()


def _exp_avg(value):
    def change(c):
        c["optimizer"]["state"][0]["exp_avg"] = value

    return change


# Entries of the right type whose contents do not fit the model being resumed.
UNFIT_ENTRIES = [
    ("exp_avg-shape", _exp_avg(torch.zeros(3)), r"optimizer state 'exp_avg' has shape \(3,\)"),
    (
        "exp_avg-huge-view",  # 10**12 elements that the file holds as one (a stride-0 view)
        _exp_avg(torch.zeros(1).expand(10**12)),
        r"optimizer state 'exp_avg' has shape \(1000000000000,\)",
    ),
    ("param_groups-one", lambda c: c["optimizer"]["param_groups"].pop(), r"optimizer state does not fit"),
    ("rng-torch-size", _set("rng/torch", torch.zeros(5, dtype=torch.uint8)), r"RNG state cannot be restored"),
    ("rng-python-short", _set("rng/python", [1, 2, 3]), r"RNG state cannot be restored"),
    ("model-shape", _set("model/ln_f.weight", torch.zeros(3)), r"does not fit this model"),
]


@pytest.mark.parametrize("change,match", [c[1:] for c in UNFIT_ENTRIES], ids=[c[0] for c in UNFIT_ENTRIES])
def test_states_that_do_not_fit_are_value_errors_on_resume(data, tmp_path, ckpt, change, match):
    change(ckpt)
    path = save_with_checksum(ckpt, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=rf"bad.pt.*{match}|{match}"):
        _resume(data, tmp_path / "out", path).fit()


def test_a_huge_model_config_is_refused_before_anything_is_allocated(data, tmp_path, ckpt, monkeypatch):
    """vocab_size 10**12 with a matching embedding the file holds as one row (a stride-0 view): the
    shapes agree, so only the size rule stands between it and a 256 TB allocation."""
    ckpt["model_config"]["vocab_size"] = 10**12
    ckpt["model"]["tok_emb.weight"] = torch.zeros(1, 64).expand(10**12, 64)
    path = save_with_checksum(ckpt, tmp_path / "huge.pt")
    assert path.stat().st_size < 10**7

    def no_model(*args, **kwargs):
        raise AssertionError("a model was built before the size was checked")

    monkeypatch.setattr(checkpoint, "MiniGPT", no_model)
    t0 = time.perf_counter()
    for load in (load_checkpoint, model_from_checkpoint, lambda p: _resume(data, tmp_path / "o", p).fit()):
        with pytest.raises(ValueError, match=r"huge.pt.*vocab_size x d_model = 1,000,000,000,000 x 64"):
            load(path)
    assert time.perf_counter() - t0 < 10


def test_a_huge_hf_bin_is_refused_before_anything_is_allocated(tmp_path):
    """The same trick in a pytorch_model.bin of a GPT-2 folder."""
    config = {"model_type": "gpt2", "vocab_size": 10**12, "n_positions": 8, "n_layer": 1, "n_head": 2}
    (tmp_path / "config.json").write_text(json.dumps({**config, "n_embd": 8}))
    torch.save({"wte.weight": torch.zeros(1, 8).expand(10**12, 8)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"config.json.*vocab_size x d_model = 1,000,000,000,000 x 8"):
        MiniGPT.from_pretrained(tmp_path)


# ------------------------------------------------------------------ checksums


def _flip_inside(path: Path, tensor: torch.Tensor, n: int = 64) -> None:
    raw = bytearray(path.read_bytes())
    needle = tensor.contiguous().numpy().tobytes()[:n]
    at = raw.find(needle)
    assert at > 0 and raw.find(needle, at + 1) < 0, "the tensor's bytes are not once in the file"
    raw[at : at + n] = bytes(b ^ 0x5A for b in raw[at : at + n])
    path.write_bytes(bytes(raw))


def test_a_checkpoint_with_flipped_bytes_is_refused(data, tmp_path, run):
    out = tmp_path / "out"
    shutil.copytree(run, out)
    path = out / "checkpoints" / "step_00000002.pt"
    original = load_checkpoint(path)["model"]["blocks.0.mlp.fc.weight"]
    # sha256sum's format, with the digest hashlib gives for the whole file
    assert (
        checksum_path(path).read_text() == f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}\n"
    )
    _flip_inside(path, original)
    match = r"step_00000002.pt.*does not match its checksum in 'step_00000002.pt.sha256'.*corrupt"
    for load in (
        load_checkpoint,
        model_from_checkpoint,
        lambda p: _resume(data, out, p).fit(),
        lambda p: _resume(data, out, "latest").fit(),
    ):
        with pytest.raises(ValueError, match=match):
            load(path)
    # the oracle that the flip is in the weights: without the checksum it loads, changed, with a warning
    checksum_path(path).unlink()
    with pytest.warns(UnverifiedCheckpointWarning, match="step_00000002.pt.*no checksum file"):
        flipped = load_checkpoint(path)["model"]["blocks.0.mlp.fc.weight"]
    assert not torch.equal(flipped, original)


@pytest.mark.parametrize(
    "text", ["", "nonsense\n", "ABC  step_00000002.pt\n", "0" * 63 + "  x\n", "0" * 65 + "\n"]
)
def test_a_malformed_checksum_file_is_named(tmp_path, run, text):
    path = tmp_path / "step_00000002.pt"
    shutil.copy(run / "checkpoints" / path.name, path)
    checksum_path(path).write_text(text)
    with pytest.raises(
        ValueError, match=r"checksum file .*step_00000002.pt.sha256.* is not a sha256sum line"
    ):
        load_checkpoint(path)


def test_a_crash_before_the_rename_leaves_no_checkpoint_without_its_checksum(tmp_path, monkeypatch, ckpt):
    """The .sha256 lands first: a crash between the two leaves an orphan .sha256 (pruned by the
    next save), never a checkpoint that loads unverified."""
    real_replace = os.replace

    def crash_on_checkpoint(src, dst):
        if str(dst).endswith(".pt"):
            raise KeyboardInterrupt("killed")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_checkpoint(ckpt, tmp_path, step=5, keep=3)
    assert list_checkpoints(tmp_path) == []
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_00000005.pt.sha256"]
    monkeypatch.setattr(os, "replace", real_replace)
    checkpoint.save_checkpoint(ckpt, tmp_path, step=6, keep=3)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "step_00000006.pt",
        "step_00000006.pt.sha256",
    ]
    assert load_checkpoint(tmp_path / "checkpoints" / "step_00000006.pt")["step"] == 2


# ------------------------------------------------------------------ metrics.jsonl after a crash


def _records(out: Path) -> list[tuple[int, float]]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return train_losses(json.loads(line) for line in lines)


@pytest.fixture(scope="module")
def straight(data, tmp_path_factory) -> list[tuple[int, float]]:
    """(step, loss) of an uninterrupted 12-step run (one CPU thread, as the subprocesses)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("straight")
        Trainer(tiny_model(0), dataset(data), config=train_config(out, max_steps=12, decay_steps=1000)).fit()
    finally:
        torch.set_num_threads(threads)
    return _records(out)


def _crash_before_first_checkpoint(out: Path) -> None:
    shutil.rmtree(out / "checkpoints")


def _crash_after_logging_past_the_checkpoint(out: Path) -> None:
    for path in list_checkpoints(out)[-1:]:  # step 5 was logged, its checkpoint never written
        path.unlink()
        checksum_path(path).unlink()


def _crash_mid_record(out: Path) -> None:
    _crash_after_logging_past_the_checkpoint(out)
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "loss": 1.2')  # a torn last line


@pytest.mark.parametrize(
    "crash",
    [_crash_before_first_checkpoint, _crash_after_logging_past_the_checkpoint, _crash_mid_record, None],
    ids=["before-first-checkpoint", "after-logging-past-checkpoint", "mid-record", "fresh-run-same-dir"],
)
def test_metrics_have_each_step_once_after_a_crash(data, tmp_path, straight, crash):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        first = train_config(tmp_path, max_steps=5, checkpoint_interval=2, decay_steps=1000)
        Trainer(tiny_model(0), dataset(data), config=first).fit()
        if crash is not None:
            crash(tmp_path)
        again = train_config(
            tmp_path, max_steps=6, checkpoint_interval=2, decay_steps=1000, resume="latest" if crash else None
        )
        Trainer(tiny_model(0), dataset(data), config=again).fit()
    finally:
        torch.set_num_threads(threads)
    assert _records(tmp_path) == straight[:6]


KILL_SCRIPT = """
import sys
from fastllm.train.trainer import Trainer
from train_util import dataset, tiny_model, train_config
out, data = sys.argv[1], sys.argv[2]
cfg = train_config(out, max_steps=12, checkpoint_interval=3, decay_steps=1000, resume="latest")
Trainer(tiny_model(0), dataset(data), config=cfg).fit()
"""


def _env() -> dict[str, str]:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH", "")]))
    return env


def test_a_run_killed_at_random_moments_and_resumed_logs_each_step_once(data, tmp_path, straight):
    """SIGKILL once the run has logged k1 steps (before its first checkpoint), then again once the
    resumed run has logged k2 (past one), each plus a random few milliseconds; then resume to the
    end. (Each run starts Python and torch; the crash points are also simulated one by one above.)"""
    rng = random.Random(1234)
    script = tmp_path / "kill_me.py"
    script.write_text(KILL_SCRIPT)
    out = tmp_path / "out"
    metrics = out / "metrics.jsonl"
    cmd = [sys.executable, str(script), str(out), str(data)]
    for k in (rng.randint(1, 2), rng.randint(7, 10)):
        proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 120
            while not (metrics.is_file() and len(metrics.read_bytes().splitlines()) >= k):
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline, "training never logged"
                time.sleep(0.002)
            time.sleep(rng.uniform(0, 0.05))
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait()
            proc.stderr.close()
        assert proc.returncode in (-signal.SIGKILL, 0)
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert _records(out) == straight  # every step once, with the loss of the uninterrupted run


# ------------------------------------------------------------------ divergence


def test_a_diverging_run_names_the_step_and_keeps_only_finite_checkpoints(data, tmp_path):
    cfg = train_config(tmp_path, max_steps=20, lr=1e30, min_lr=0.0, checkpoint_interval=1)
    with pytest.raises(TrainingDiverged, match=r"training diverged at step (\d+): .*lr") as info:
        Trainer(tiny_model(0), dataset(data), config=cfg).fit()
    err = info.value
    assert isinstance(err, FloatingPointError) and f"at step {err.step}:" in str(err)
    saved = list_checkpoints(tmp_path)
    for path in saved:
        state = load_checkpoint(path)
        assert state["step"] < err.step
        assert all(t.isfinite().all() for t in state["model"].values()), path.name
    if saved:
        assert err.checkpoint == str(saved[-1]) and str(saved[-1]) in str(err)
    else:
        assert err.checkpoint is None and "no checkpoint was written" in str(err)
    assert not (tmp_path / "model").exists()


def test_non_finite_weights_are_never_checkpointed(data, tmp_path):
    trainer = Trainer(tiny_model(0), dataset(data), config=train_config(tmp_path, max_steps=3))
    trainer.fit()
    before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    with torch.no_grad():
        trainer.model.blocks[1].mlp.fc.weight[3, 5] = math.inf
    with pytest.raises(TrainingDiverged, match=r"at step 3: the weights became non-finite.*step_00000003.pt"):
        trainer.save_checkpoint()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before


# ------------------------------------------------------------------ pickles that would run code


class _Payload:
    """Unpickling this creates the file `marker` (open(marker, "w")): code run from a checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil_checkpoint(path: Path, marker: Path, ckpt: dict) -> Path:
    """A checkpoint that passes every check but the pickle (its .sha256 is right)."""
    return save_with_checksum({**ckpt, "history": [_Payload(marker)]}, path)


def test_the_payload_is_real(tmp_path, ckpt):
    """The oracle: loaded the unsafe way, the payload runs."""
    marker = tmp_path / "ran"
    path = _evil_checkpoint(tmp_path / "evil.pt", marker, ckpt)
    torch.load(path, weights_only=False)
    assert marker.exists()


def _evil_hf(folder: Path, marker: Path, sharded: bool) -> Path:
    folder.mkdir()
    config = {
        "model_type": "gpt2",
        "vocab_size": 40,
        "n_positions": 8,
        "n_layer": 1,
        "n_head": 2,
        "n_embd": 8,
    }
    (folder / "config.json").write_text(json.dumps(config))
    name = "pytorch_model-00001-of-00001.bin" if sharded else "pytorch_model.bin"
    torch.save({"wte.weight": torch.zeros(40, 8), "x": _Payload(marker)}, folder / name)
    if sharded:
        (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": {"wte.weight": name}}))
    return folder


@pytest.mark.parametrize(
    "how",
    [
        "load_checkpoint",
        "model_from_checkpoint",
        "trainer-resume-path",
        "trainer-resume-latest",
        "from_pretrained-bin",
        "from_pretrained-shard",
        "model_from_checkpoint-folder",
    ],
)
def test_a_pickle_that_would_run_code_is_refused_everywhere(data, tmp_path, ckpt, how):
    marker = tmp_path / "ran"
    (tmp_path / "out" / "checkpoints").mkdir(parents=True)
    evil = _evil_checkpoint(tmp_path / "out" / "checkpoints" / "step_00000009.pt", marker, ckpt)
    if how.startswith("from_pretrained") or how.endswith("folder"):
        evil = _evil_hf(tmp_path / "hf", marker, sharded=how.endswith("shard"))
    load = {
        "load_checkpoint": load_checkpoint,
        "model_from_checkpoint": model_from_checkpoint,
        "trainer-resume-path": lambda p: _resume(data, tmp_path / "elsewhere", p).fit(),
        "trainer-resume-latest": lambda p: _resume(data, tmp_path / "out", "latest").fit(),
        "from_pretrained-bin": MiniGPT.from_pretrained,
        "from_pretrained-shard": MiniGPT.from_pretrained,
        "model_from_checkpoint-folder": model_from_checkpoint,
    }[how]
    with pytest.raises(
        ValueError, match=r"not plain tensors and data \(Unsupported global: .*open.*nothing in it ran"
    ):
        load(evil)
    assert not marker.exists()


def _fastllm(*args) -> subprocess.CompletedProcess:
    return fastllm(*args, env=_env())


@pytest.mark.parametrize("command", ["train-resume", "eval", "generate", "eval-flipped", "train-diverges"])
def test_cli_commands_refuse_hostile_checkpoints_in_one_line(data, tmp_path, ckpt, run, command):
    from fastllm import BPETokenizer

    marker = tmp_path / "ran"
    evil = _evil_checkpoint(tmp_path / "evil.pt", marker, ckpt)
    common = ["--data", data, "--preset", "tiny", "--context", 16, "--batch-size", 2, "--no-progress"]
    common += ["--dtype", "float32", "--device", "cpu", "--out-dir", tmp_path / "out"]
    expect = r"not plain tensors and data \(Unsupported global: .*open"
    if command == "train-resume":
        out = _fastllm("train", *common, "--max-steps", 12, "--resume", evil)
    elif command == "eval":
        out = _fastllm("eval", evil, "--data", data)
    elif command == "generate":
        tok = BPETokenizer.train(["the quick brown fox " * 20], 300, show_progress=False)
        tok.save(tmp_path / "tok.json")
        out = _fastllm("generate", "hi", "--checkpoint", evil, "--tokenizer", tmp_path / "tok.json")
    elif command == "eval-flipped":
        shutil.copy(run / "checkpoints" / "step_00000002.pt", tmp_path / "step_00000002.pt")
        shutil.copy(run / "checkpoints" / "step_00000002.pt.sha256", tmp_path / "step_00000002.pt.sha256")
        _flip_inside(tmp_path / "step_00000002.pt", ckpt["model"]["blocks.1.attn.q_proj.weight"])
        out, expect = (
            _fastllm("eval", tmp_path / "step_00000002.pt", "--data", data),
            "does not match its checksum",
        )
    else:
        out = _fastllm("train", *common, "--max-steps", 20, "--lr", "1e30", "--checkpoint-interval", 1)
        expect = r"training diverged at step \d+: .*(written before it, is .*step_\d+\.pt|no checkpoint)"
    assert out.returncode == 1, (out.stdout, out.stderr)
    errors = [line for line in out.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in out.stderr, out.stderr
    assert re.search(expect, errors[0]), errors[0]
    assert not marker.exists()


def test_cli_eval_of_a_checkpoint_without_checksum_warns_in_one_line(data, tmp_path, run):
    shutil.copy(run / "checkpoints" / "step_00000001.pt", tmp_path / "old.pt")
    out = _fastllm(
        "eval", tmp_path / "old.pt", "--data", data, "--split", "train", "--max-batches", 1, "--quiet"
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr.splitlines() == [
        f"Warning: checkpoint {str(tmp_path / 'old.pt')!r} has no checksum file 'old.pt.sha256' "
        "(written before fastllm recorded them, or copied without it): loading it unverified"
    ]
    assert "train loss" in out.stdout


def test_a_checkpoint_copied_without_its_checksum_still_resumes(data, tmp_path, run):
    """The decision for older checkpoints: they load, with an UnverifiedCheckpointWarning."""
    shutil.copy(run / "checkpoints" / "step_00000001.pt", tmp_path / "old.pt")
    with pytest.warns(UnverifiedCheckpointWarning, match="old.pt.*loading it unverified"):
        result = _resume(data, tmp_path / "out", tmp_path / "old.pt", max_steps=2).fit()
    assert result.step == 2 and [s for s, _ in train_losses(result.history)] == [1, 2]
