"""Which windows evaluation reads (`eval_windows`), the loss it reports over them (`evaluate`, the
Trainer's evaluation and `fastllm eval`), and its bad-input errors.

Oracles: a slow reference loss (the model's full logits, `F.cross_entropy`, one window at a time)
over the windows `eval_windows` names; the sample's properties (distinct, sorted, in range, the
asked size, a pure function of the seed, spread over the split); the whole split, in order, when it
is no larger than the sample; the sum over ranks of each rank's share.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from fastllm.train.trainer import Trainer, eval_windows, evaluate
from train_util import CONTEXT, dataset, tiny_model, train_config, write_shards

VAL_TOKENS = 16 * 200 + 1  # 200 windows of CONTEXT


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("shards")
    write_shards(d, split="train", tokens=2000)
    write_shards(d, split="val", tokens=VAL_TOKENS, shard_tokens=777)  # windows span shards
    return d


@pytest.fixture(scope="module")
def model():
    m = tiny_model(0).eval()
    with torch.no_grad():  # not the uniform loss of a fresh model: windows differ in loss
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.2)
    return m


@pytest.fixture(scope="module")
def ref(data, model) -> np.ndarray:
    """The reference loss of every validation window (computed once for the module)."""
    return np.array(reference_losses(model, dataset(data, "val"), range(200)))


def reference_losses(model, ds, windows) -> list[float]:
    """Each window's mean token loss from the full logits: the slow, obvious computation."""
    out = []
    with torch.no_grad():
        for w in windows:
            x, y = ds[int(w)]
            logits = model(x[None])[0][0]  # (T, V)
            out.append(F.cross_entropy(logits.float(), y).item())
    return out


def test_trainer_eval_is_the_reference_loss_over_its_sampled_windows(data, model, ref, tmp_path):
    val = dataset(data, "val")
    cfg = train_config(tmp_path, batch_size=4, eval_batches=5, seed=3)
    trainer = Trainer(model, dataset(data), val, config=cfg)
    ev = trainer.evaluate()
    windows = eval_windows(val, 20, seed=3)
    assert ev["sampled"] and ev["windows"] == 20 and ev["of_windows"] == len(val) == 200
    assert ev["tokens"] == 20 * CONTEXT and ev["seed"] == 3
    assert ev["loss"] == pytest.approx(np.mean(ref[windows]), abs=1e-5)
    assert ev["perplexity"] == pytest.approx(math.exp(np.mean(ref[windows])), rel=1e-5)
    # the standard error from the spread of the 5 batches of 4 sampled windows
    batch_means = np.mean(np.reshape(ref[windows], (5, 4)), axis=1)
    assert ev["stderr"] == pytest.approx(np.std(batch_means, ddof=1) / math.sqrt(5), rel=1e-4)
    # the same sample at every evaluation: the same figure
    assert trainer.evaluate()["loss"] == ev["loss"]
    # not the first batches in order: the sample is spread over the split
    assert windows.min() < len(val) // 4 and windows.max() > 3 * len(val) // 4


def test_fit_logs_the_sampled_evaluation(data, tmp_path):
    val = dataset(data, "val")
    m = tiny_model(1)
    cfg = train_config(tmp_path, max_steps=3, batch_size=2, eval_batches=3, eval_interval=3, seed=5)
    result = Trainer(m, dataset(data), val, config=cfg).fit()
    record = [r for r in result.history if "val_loss" in r][-1]
    ref = reference_losses(m.eval(), val, eval_windows(val, 6, seed=5))
    assert (
        record["val_loss"] == pytest.approx(np.mean(ref), abs=1e-5) and result.val_loss == record["val_loss"]
    )
    assert record["val_tokens"] == 6 * CONTEXT and record["val_stderr"] > 0


@settings(max_examples=60, deadline=None)
@given(n_tokens=st.integers(CONTEXT + 1, 2000), want=st.integers(0, 150), seed=st.integers(0, 2**32))
def test_sample_is_a_deterministic_spread_subset(tmp_path_factory, n_tokens, want, seed):
    d = tmp_path_factory.mktemp("s")
    write_shards(d, split="val", tokens=n_tokens)
    ds = dataset(d, "val")
    w = eval_windows(ds, want, seed)
    assert np.array_equal(w, eval_windows(ds, want, seed))  # a pure function of the seed
    if want == 0 or want >= len(ds):
        assert w.tolist() == list(range(len(ds)))  # the whole split, in order
    else:
        assert len(w) == want and len(set(w.tolist())) == want
        assert 0 <= w.min() and w.max() < len(ds)


@pytest.mark.parametrize("losses", ["model", "trend"])
def test_standard_error_matches_the_spread_over_seeds(data, ref, losses):
    """The standard error evaluate reports (from its batches' spread) against the actual spread of
    the sampled loss over 400 seeds, both computed here from a loss for every window: the model's
    reference losses, and losses that climb along the split as a split of documents in order does
    (batches of neighbouring windows would overstate the error there several times)."""
    val = dataset(data, "val")
    if losses == "trend":
        noise = np.random.default_rng(0).normal(0, 0.2, len(val))
        ref = np.linspace(3.0, 6.0, len(val)) + noise
    means, errors = [], []
    for seed in range(400):
        w = eval_windows(val, 20, seed)  # 5 batches of 4
        batch = ref[w].reshape(5, 4).mean(axis=1)
        means.append(batch.mean())
        errors.append(batch.std(ddof=1) / math.sqrt(5))
    assert 0.8 < np.mean(errors) / np.std(means) < 1.25


def test_seeds_pick_different_samples(data):
    val = dataset(data, "val")
    samples = {tuple(eval_windows(val, 20, seed).tolist()) for seed in range(5)}
    assert len(samples) == 5


@pytest.mark.parametrize("batch_size, max_batches", [(4, 0), (7, 29), (7, 100), (200, 1), (256, 1)])
def test_whole_split_when_it_is_small(data, model, ref, batch_size, max_batches):
    """max_batches 0, or a sample at least as large as the split: every window, the last batch short."""
    val = dataset(data, "val")
    ev = evaluate(model, val, batch_size=batch_size, max_batches=max_batches, seed=9)
    assert not ev["sampled"] and ev["stderr"] is None
    assert ev["windows"] == ev["of_windows"] == 200 and ev["tokens"] == 200 * CONTEXT
    assert ev["loss"] == pytest.approx(np.mean(ref), abs=1e-5)


def test_ranks_share_the_windows_and_sum_to_the_whole(data, model, monkeypatch):
    """Under torchrun each rank reads every world_size-th batch; the all-reduced sums give the
    single-process figure (all_reduce stood in for by adding the other rank's sums)."""
    val = dataset(data, "val")
    whole = evaluate(model, val, batch_size=3, max_batches=7, seed=1)
    other: list[torch.Tensor] = []
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda t: other.append(t.clone()))
    evaluate(model, val, batch_size=3, max_batches=7, seed=1, rank=1, world_size=2)
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda t: t.add_(other[0]))
    shared = evaluate(model, val, batch_size=3, max_batches=7, seed=1, rank=0, world_size=2)
    assert shared["loss"] == pytest.approx(whole["loss"], abs=1e-9) and shared["tokens"] == whole["tokens"]
    assert shared["stderr"] == pytest.approx(whole["stderr"], rel=1e-9)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(batch_size=0), ValueError, "batch_size=0 is out of range"),
        (dict(batch_size=2.5), TypeError, "batch_size must be an int"),
        (dict(max_batches=-1), ValueError, "max_batches=-1 is out of range"),
        (dict(seed=-1), ValueError, "seed=-1 is out of range"),
        (dict(seed="0"), TypeError, "seed must be an int"),
    ],
)
def test_bad_arguments(data, model, kwargs, error, message):
    with pytest.raises(error, match=message):
        evaluate(model, dataset(data, "val"), **kwargs)


@pytest.mark.parametrize(
    "args, error, message",
    [
        ((None,), TypeError, "data must be TokenDataset, not NoneType"),
        (("val",), TypeError, "data must be TokenDataset, not str"),
    ],
)
def test_eval_windows_bad_data(args, error, message):
    with pytest.raises(error, match=message):
        eval_windows(*args)


def fastllm(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fastllm", *map(str, args)], capture_output=True, text=True, timeout=300
    )


def test_cli_eval_says_what_it_evaluated(data, model, tmp_path):
    model.save_pretrained(tmp_path / "m")
    val = dataset(data, "val", context=model.config.context)  # eval reads windows of the model's context
    assert len(val) == 50
    whole = fastllm("eval", tmp_path / "m", "--data", data, "--dtype", "float32", "--batch-size", 16)
    assert whole.returncode == 0, whole.stderr
    want = evaluate(model, val, batch_size=16)
    assert (
        f"val loss {want['loss']:.4f}, perplexity {want['perplexity']:.2f} over 3,200 tokens" in whole.stdout
    )
    assert "all 50 windows of 64 tokens in the split" in whole.stdout
    args = ("--dtype", "float32", "--batch-size", 4, "--max-batches", 5, "--seed", 3)
    sample = fastllm("eval", tmp_path / "m", "--data", data, *args)
    assert sample.returncode == 0, sample.stderr
    want = evaluate(model, val, batch_size=4, max_batches=5, seed=3)
    assert f"val loss {want['loss']:.4f} (standard error {want['stderr']:.4f})" in sample.stdout
    assert (
        "over 1,280 tokens: 20 of the split's 50 windows of 64 tokens, sampled with seed 3" in sample.stdout
    )
    quiet = fastllm("eval", tmp_path / "m", "--data", data, "--json", "--quiet", *args)
    assert quiet.returncode == 0 and quiet.stderr == ""
    got = json.loads(quiet.stdout)
    assert got["loss"] == pytest.approx(want["loss"], abs=1e-6) and got["windows"] == 20


def test_cli_eval_shows_a_progress_bar_over_its_batches(data, model, tmp_path, monkeypatch):
    from click.testing import CliRunner

    import fastllm.train.trainer as trainer
    from fastllm.cli import main

    model.save_pretrained(tmp_path / "m")
    bars = []
    real = trainer.bar

    def recording_bar(enabled, **kwargs):
        bars.append((enabled, kwargs["total"], kwargs["desc"]))
        return real(False, **kwargs)

    monkeypatch.setattr(trainer, "bar", recording_bar)
    args = ["eval", str(tmp_path / "m"), "--data", str(data), "--batch-size", "8", "--max-batches", "3"]
    assert CliRunner().invoke(main, args).exit_code == 0
    assert CliRunner().invoke(main, [*args, "--quiet"]).exit_code == 0
    assert bars == [(True, 3, "eval"), (False, 3, "eval")]
    bad = CliRunner().invoke(main, [*args, "--seed", "-1"])
    assert bad.exit_code == 2 and "-1 is not in the range 0<=x" in bad.output
