"""`fastllm.train` (Trainer, schedule, checkpoints) and `fastllm.model.losses`, against independent oracles.

Oracles: `F.cross_entropy(h @ w.T, y)` and its autograd gradients for the fused chunked loss; the
closed-form nanoGPT `get_lr` for the schedule; a plain hand-written training loop (non-fused
torch.optim.AdamW, full-logits cross-entropy, clip_grad_norm_) whose parameters the Trainer must
reproduce; a straight run for resumed runs (bit for bit on the CPU); a single process with
grad_accum 2 for a 2-process torchrun (gloo) run; the model's own full-logits loss for the
validation records. Properties: schedule monotonicity, checkpoint pruning/atomicity, metrics
without duplicated steps, Ctrl-C stopping cleanly. Everything is CPU, float32, the "tiny" model.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import fastllm.model.losses
from fastllm.model.gpt import MiniGPT
from fastllm.model.losses import linear_cross_entropy
from fastllm.train.checkpoint import (
    UnverifiedCheckpointWarning,
    list_checkpoints,
    load_checkpoint,
    model_from_checkpoint,
)
from fastllm.train.trainer import CosineSchedule, TrainConfig, Trainer, eval_windows
from train_util import (
    CONTEXT,
    dataset,
    params,
    save_with_checksum,
    tiny_model,
    train_config,
    train_losses,
    write_shards,
)

TESTS = Path(__file__).resolve().parent


def _assert_params_equal(
    a: dict, b: dict, *, exact: bool = False, atol: float = 1e-5, noise_atol: float | None = None
) -> None:
    """Equal parameters (torch.equal when exact, else within atol).

    The key-projection biases are special: attention's softmax is invariant to adding q.b_k to a
    whole row of scores, so their true gradient is 0 and what they receive is rounding noise, which
    AdamW normalises into steps of up to lr each. Two runs whose roundings differ legitimately
    (fused vs plain loss, thread counts) can therefore differ there by up to ~lr per step:
    `noise_atol` is that bound, used for those tensors only when the comparison is not exact.
    """
    assert a.keys() == b.keys()
    for k in a:
        if exact:
            assert torch.equal(a[k], b[k]), f"{k} differs by {(a[k] - b[k]).abs().max().item()}"
        else:
            tol = noise_atol if (noise_atol is not None and k.endswith("k_proj.bias")) else atol
            torch.testing.assert_close(a[k], b[k], atol=tol, rtol=1e-5, msg=lambda m, k=k: f"{k}: {m}")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("shards")
    write_shards(d, split="train", tokens=3000)
    write_shards(d, split="val", tokens=700)
    return d


def _subprocess_env() -> dict[str, str]:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH", "")]))
    return env


# ------------------------------------------------------------------ fused linear cross-entropy


def _ref_ce(h, w, t):
    return F.cross_entropy(h @ w.T, t, ignore_index=-1)


def _loss_and_grads(fn, h, w, t, scale):
    h = h.detach().clone().requires_grad_(True)
    w = w.detach().clone().requires_grad_(True)
    loss = fn(h, w, t)
    (loss * scale).backward()
    return loss.detach(), h.grad, w.grad


@st.composite
def ce_problem(draw):
    n = draw(st.integers(1, 40))
    d = draw(st.integers(1, 8))
    v = draw(st.integers(1, 24))
    seed = draw(st.integers(0, 2**31 - 1))
    spread = draw(st.sampled_from([0.1, 1.0, 5.0]))
    valid = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, generator=g, dtype=torch.float64) * spread
    w = torch.randn(v, d, generator=g, dtype=torch.float64)
    t = torch.randint(0, v, (n,), generator=g)
    t[~torch.tensor(valid)] = -1
    return h, w, t


@given(ce_problem(), st.sampled_from([1, 5, 24, 97, 1 << 22]), st.floats(-3, 3))
def test_linear_cross_entropy_matches_full_logits(problem, chunk_elements, scale):
    h, w, t = problem
    old = fastllm.model.losses._CHUNK_ELEMENTS
    fastllm.model.losses._CHUNK_ELEMENTS = chunk_elements  # small values: one row (or a few) per chunk
    try:
        got = _loss_and_grads(linear_cross_entropy, h, w, t, scale)
    finally:
        fastllm.model.losses._CHUNK_ELEMENTS = old
    ref = _loss_and_grads(_ref_ce, h, w, t, scale)
    if (t == -1).all():
        assert torch.isnan(got[0]) and torch.isnan(ref[0])  # as F.cross_entropy: mean over no rows
    # softmax and loss are computed in float32 by design (module docstring), hence fp32 tolerances
    for a, b, name in zip(got, ref, ("loss", "dh", "dw")):
        torch.testing.assert_close(
            a.double(), b, atol=1e-5, rtol=1e-5, equal_nan=True, msg=lambda m, n=name: f"{n}: {m}"
        )
    assert got[1].dtype == h.dtype and got[2].dtype == w.dtype


@settings(max_examples=50)
@given(ce_problem())
def test_linear_cross_entropy_no_grad_same_loss(problem):
    h, w, t = problem
    h, w = h.float().requires_grad_(True), w.float().requires_grad_(True)
    with_grad = linear_cross_entropy(h, w, t)
    with torch.no_grad():
        without = linear_cross_entropy(h, w, t)
    assert without.grad_fn is None
    assert torch.equal(with_grad.detach(), without) or (torch.isnan(without) and torch.isnan(with_grad))


@settings(max_examples=30)
@given(ce_problem(), st.sampled_from([7, 1 << 22]))
def test_linear_cross_entropy_bf16_autocast_close_to_reference(problem, chunk_elements):
    h, w, t = problem
    if (t == -1).all():
        t = t.clone()
        t[0] = 0
    h, w = h.float(), w.float()
    old = fastllm.model.losses._CHUNK_ELEMENTS
    fastllm.model.losses._CHUNK_ELEMENTS = chunk_elements
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = _loss_and_grads(linear_cross_entropy, h, w, t, 1.0)
    finally:
        fastllm.model.losses._CHUNK_ELEMENTS = old
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = _loss_and_grads(
            lambda a, b, y: F.cross_entropy((a @ b.T).float(), y, ignore_index=-1), h, w, t, 1.0
        )
    exact = _loss_and_grads(_ref_ce, h, w, t, 1.0)  # and both are near the fp32 value
    assert got[1].dtype == got[2].dtype == torch.float32
    for a, b, c in zip(got, ref, exact):
        tol = 3e-2 * max(1.0, b.abs().max().item())
        torch.testing.assert_close(a, b, atol=tol, rtol=3e-2)
        torch.testing.assert_close(a, c, atol=2 * tol, rtol=6e-2)


def test_linear_cross_entropy_rejects_bad_shapes():
    h, w = torch.randn(4, 3), torch.randn(5, 3)
    with pytest.raises(ValueError, match="agree on d"):
        linear_cross_entropy(h, torch.randn(5, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="targets must have shape"):
        linear_cross_entropy(h, w, torch.zeros(3, dtype=torch.long))


def test_model_fused_loss_equals_full_logits_loss():
    model = tiny_model(1)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 512, (3, 20), generator=g)
    y = torch.randint(0, 512, (3, 20), generator=g)
    y[0, :5] = -1
    logits, full = model(x, y)
    none, fused = model(x, y, return_logits=False)
    assert none is None and logits.shape == (3, 20, 512)
    torch.testing.assert_close(fused, full, atol=1e-6, rtol=1e-6)
    g_full = torch.autograd.grad(full, list(model.parameters()))
    g_fused = torch.autograd.grad(model(x, y, return_logits=False)[1], list(model.parameters()))
    for a, b in zip(g_fused, g_full):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------ learning-rate schedule


def nanogpt_lr(it: int, lr: float, min_lr: float, warmup: int, decay: int) -> float:
    """nanoGPT's get_lr, with the warmup documented by TrainConfig: lr/warmup at step 0, lr at warmup-1."""
    if it < warmup:
        return lr * (it + 1) / warmup
    if it >= decay:
        return min_lr
    ratio = (it - warmup) / (decay - warmup)
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))
    return min_lr + coeff * (lr - min_lr)


def test_schedule_closed_form_points():
    s = CosineSchedule(1.0, 0.1, 10, 110)
    assert s(0) == pytest.approx(0.1) and s(4) == pytest.approx(0.5) and s(9) == pytest.approx(1.0)
    assert s(10) == pytest.approx(1.0)
    assert s(60) == pytest.approx(0.55)  # halfway through the cosine: the mean of lr and min_lr
    assert s(110) == pytest.approx(0.1) and s(10_000) == pytest.approx(0.1)
    assert CosineSchedule(1.0, 0.1, 0, 10)(0) == pytest.approx(1.0)  # no warmup: starts at the peak


@given(
    st.floats(1e-6, 1.0),
    st.floats(0.0, 1.0),
    st.integers(0, 50),
    st.integers(1, 200),
    st.lists(st.integers(0, 300), min_size=1, max_size=20),
)
def test_schedule_properties(lr, min_frac, warmup, decay, steps):
    min_lr = lr * min_frac
    s = CosineSchedule(lr, min_lr, warmup, decay)
    for it in steps:
        assert s(it) == pytest.approx(nanogpt_lr(it, lr, min_lr, warmup, decay), rel=1e-12, abs=1e-15)
    if decay > warmup:
        assert s(decay) == pytest.approx(min_lr, rel=1e-12, abs=1e-15)
        values = [s(i) for i in range(max(warmup - 1, 0), decay + 5)]
        assert all(b <= a + 1e-15 for a, b in zip(values, values[1:]))  # non-increasing after the warmup
        assert all(min_lr - 1e-15 <= v <= lr + 1e-15 for v in values)
    if warmup:
        ramp = [s(i) for i in range(warmup)]
        assert ramp == pytest.approx([lr * (i + 1) / warmup for i in range(warmup)], rel=1e-12)


# ------------------------------------------------------------------ the training loop vs a plain oracle


def reference_training(model: MiniGPT, ds, cfg: TrainConfig) -> tuple[list[float], list[float]]:
    """The plain loop the Trainer must reproduce; returns (loss per step, grad norm per step)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    assert decay and no_decay
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
        foreach=False,
        fused=False,
    )
    batches = ds.batches(cfg.batch_size, seed=cfg.seed, start=0)
    losses, norms = [], []
    model.train()
    for step in range(cfg.max_steps):
        for group in opt.param_groups:
            group["lr"] = nanogpt_lr(step, cfg.lr, cfg.min_lr, cfg.warmup_steps, cfg.decay_steps)
        total = 0.0
        for _ in range(cfg.grad_accum):
            x, y = next(batches)
            logits, _ = model(x)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)) / cfg.grad_accum
            loss.backward()
            total += loss.item()
        if cfg.grad_clip > 0:
            norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)))
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(total)
    return losses, norms


@pytest.mark.parametrize("grad_clip", [0.0, 0.5])
def test_trainer_matches_reference_loop(data, tmp_path, grad_clip):
    cfg = train_config(
        tmp_path,
        max_steps=5,
        batch_size=3,
        grad_accum=2,
        lr=3e-3,
        min_lr=3e-4,
        warmup_steps=2,
        decay_steps=6,
        weight_decay=0.1,
        grad_clip=grad_clip,
        seed=3,
    )
    model = tiny_model(0)
    ref_model = copy.deepcopy(model)
    result = Trainer(model, dataset(data), config=cfg).fit()
    ref_losses, norms = reference_training(ref_model, dataset(data), cfg)
    if grad_clip:
        assert any(n > grad_clip for n in norms)  # clipping was exercised
    _assert_params_equal(params(model), params(ref_model), atol=1e-5, noise_atol=2 * cfg.lr * cfg.max_steps)
    got = train_losses(result.history)
    assert [s for s, _ in got] == [1, 2, 3, 4, 5]
    np.testing.assert_allclose([loss for _, loss in got], ref_losses, rtol=1e-5, atol=1e-5)
    lrs = [r["lr"] for r in result.history if "lr" in r]
    assert lrs == pytest.approx(
        [nanogpt_lr(i, cfg.lr, cfg.min_lr, cfg.warmup_steps, cfg.decay_steps) for i in range(5)]
    )
    assert result.step == 5 and result.tokens == 5 * 3 * 2 * CONTEXT and not result.interrupted


def test_config_seed_fixes_dropout(data, tmp_path):
    """TrainConfig.seed is documented as seeding 'data order and dropout': two runs of the same model
    and config must agree whatever the global torch RNG state was before fit()."""
    runs = []
    for i, outer_seed in enumerate((11, 12)):
        model = tiny_model(0, dropout=0.2)
        torch.manual_seed(outer_seed)  # unrelated RNG use in the caller's process
        Trainer(model, dataset(data), config=train_config(tmp_path / str(i), max_steps=2)).fit()
        runs.append(params(model))
    _assert_params_equal(runs[0], runs[1], exact=True)


# ------------------------------------------------------------------ exact resume


@pytest.fixture(scope="module")
def straight_run(data, tmp_path_factory):
    """6 steps straight, dropout 0.1, grad_accum 2, checkpoints at 2, 4 and 6."""
    out = tmp_path_factory.mktemp("straight")
    model = tiny_model(0, dropout=0.1)
    cfg = train_config(out, max_steps=6, checkpoint_interval=2, grad_accum=2)
    result = Trainer(model, dataset(data), config=cfg).fit()
    return out, params(model), result


def test_resume_from_step_n_equals_straight_run(data, tmp_path, straight_run):
    out, final, straight = straight_run
    assert [p.name for p in list_checkpoints(out)] == [
        "step_00000002.pt",
        "step_00000004.pt",
        "step_00000006.pt",
    ]
    torch.manual_seed(999)  # the RNG state at resume must come from the checkpoint, not from here
    model = tiny_model(7, dropout=0.1)  # other initial weights: all overwritten by the checkpoint
    cfg = train_config(
        tmp_path,
        max_steps=6,
        checkpoint_interval=2,
        grad_accum=2,
        resume=str(out / "checkpoints" / "step_00000004.pt"),
    )
    result = Trainer(model, dataset(data), config=cfg).fit()
    _assert_params_equal(params(model), final, exact=True)
    assert result.loss == pytest.approx(straight.loss, abs=1e-6, rel=0)
    assert train_losses(result.history) == train_losses(straight.history)


def test_resume_from_step_2_equals_straight_run(data, tmp_path, straight_run):
    out, final, straight = straight_run
    model = tiny_model(7, dropout=0.1)
    cfg = train_config(
        tmp_path, max_steps=6, grad_accum=2, resume=str(out / "checkpoints" / "step_00000002.pt")
    )
    result = Trainer(model, dataset(data), config=cfg).fit()
    _assert_params_equal(params(model), final, exact=True)
    assert result.loss == pytest.approx(straight.loss, abs=1e-6, rel=0)


def test_resume_from_an_older_checkpoint_with_a_schedule_entry(data, tmp_path, straight_run):
    """Checkpoints written before the unread "schedule" entry was dropped still resume exactly."""
    out, final, straight = straight_run
    ckpt = torch.load(out / "checkpoints" / "step_00000004.pt", weights_only=True)
    assert "schedule" not in ckpt  # no longer written
    ckpt["schedule"] = dict(lr=3e-3, min_lr=3e-4, warmup_steps=2, decay_steps=50)
    torch.save(ckpt, tmp_path / "old.pt")  # and no .sha256: older checkpoints had none
    model = tiny_model(7, dropout=0.1)
    cfg = train_config(tmp_path, max_steps=6, grad_accum=2, resume=str(tmp_path / "old.pt"))
    with pytest.warns(UnverifiedCheckpointWarning, match="old.pt.*no checksum"):
        result = Trainer(model, dataset(data), config=cfg).fit()
    _assert_params_equal(params(model), final, exact=True)
    assert result.loss == pytest.approx(straight.loss, abs=1e-6, rel=0)


def test_resume_latest_picks_newest(data, tmp_path, straight_run):
    out, final, straight = straight_run
    (tmp_path / "checkpoints").mkdir()
    for name in ("step_00000002.pt", "step_00000004.pt"):
        for file in (name, name + ".sha256"):
            shutil.copy(out / "checkpoints" / file, tmp_path / "checkpoints" / file)
    model = tiny_model(7, dropout=0.1)
    trainer = Trainer(
        model, dataset(data), config=train_config(tmp_path, max_steps=6, grad_accum=2, resume="latest")
    )
    loaded = []
    original = trainer.load_checkpoint
    trainer.load_checkpoint = lambda path: (loaded.append(Path(path).name), original(path))[1]
    trainer.fit()
    assert loaded == ["step_00000004.pt"]
    _assert_params_equal(params(model), final, exact=True)


def test_resume_latest_without_checkpoints_starts_fresh(data, tmp_path):
    fresh = tiny_model(0)
    Trainer(fresh, dataset(data), config=train_config(tmp_path / "a", max_steps=3)).fit()
    model = tiny_model(0)
    result = Trainer(
        model, dataset(data), config=train_config(tmp_path / "b", max_steps=3, resume="latest")
    ).fit()
    assert [s for s, _ in train_losses(result.history)] == [1, 2, 3]
    _assert_params_equal(params(model), params(fresh), exact=True)


# ------------------------------------------------------------------ files: checkpoints, model, metrics, plot


@pytest.fixture(scope="module")
def full_run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    model = tiny_model(0)
    cfg = train_config(
        out,
        max_steps=7,
        checkpoint_interval=1,
        keep_checkpoints=2,
        log_interval=2,
        eval_interval=3,
        eval_batches=3,
    )
    result = Trainer(model, dataset(data), val_data=dataset(data, "val"), config=cfg).fit()
    return out, model, result, cfg


def test_checkpoint_pruning_and_no_temporaries(full_run):
    out, _, result, _ = full_run
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "step_00000006.pt",
        "step_00000006.pt.sha256",
        "step_00000007.pt",
        "step_00000007.pt.sha256",
    ]
    assert result.checkpoint == str(out / "checkpoints" / "step_00000007.pt")
    leftovers = [p for p in out.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".")]
    assert leftovers == []


def test_checkpoint_contents_and_models(full_run):
    out, model, _, _ = full_run
    ckpt = load_checkpoint(out / "checkpoints" / "step_00000007.pt")
    assert isinstance(ckpt, dict) and {"model", "optimizer", "step", "rng", "data"} <= ckpt.keys()
    assert ckpt["step"] == 7 and ckpt["data"]["micro_batches"] == 7
    _assert_params_equal(ckpt["model"], params(model), exact=True)
    x = torch.randint(0, 512, (2, CONTEXT), generator=torch.Generator().manual_seed(5))
    model.eval()
    with torch.no_grad():
        want = model(x)[0]
        for other in (
            model_from_checkpoint(out / "checkpoints" / "step_00000007.pt"),
            MiniGPT.from_pretrained(out / "model"),
        ):
            other.eval()
            assert torch.equal(other(x)[0], want)
    assert model_from_checkpoint(out / "model").config == model.config


def test_metrics_records_and_validation_oracle(full_run, data):
    out, model, result, cfg = full_run
    lines = (out / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    train = [r for r in records if "loss" in r]
    val = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in train] == [2, 4, 6, 7]
    assert [r["step"] for r in val] == [3, 6, 7]
    for r in train:
        assert {"step", "loss", "lr", "tokens_per_s", "mfu"} <= r.keys()
        assert r["tokens_per_s"] > 0 and r["mfu"] > 0 and math.isfinite(r["loss"])
        assert r["lr"] == pytest.approx(
            nanogpt_lr(r["step"] - 1, cfg.lr, cfg.min_lr, cfg.warmup_steps, cfg.decay_steps)
        )
    assert records == result.history
    # the last validation loss, recomputed with the full-logits loss over the seeded sample of
    # eval_batches * batch_size windows (tests/test_eval.py checks the sample itself)
    vds = dataset(data, "val")
    windows = eval_windows(vds, cfg.eval_batches * cfg.batch_size, cfg.seed)
    assert 0 < len(windows) < len(vds)
    model.eval()
    with torch.no_grad():
        ref = [model(*(t[None] for t in vds[int(w)]))[1].item() for w in windows]
    assert val[-1]["val_loss"] == pytest.approx(sum(ref) / len(ref), abs=1e-5)
    assert result.val_loss == val[-1]["val_loss"]


def test_loss_png(full_run):
    out = full_run[0]
    png = out / "loss.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    img = matplotlib.image.imread(png)
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50


def test_metrics_have_no_duplicate_steps_after_resume(data, tmp_path):
    Trainer(
        tiny_model(0), dataset(data), config=train_config(tmp_path, max_steps=4, checkpoint_interval=2)
    ).fit()
    cfg = train_config(
        tmp_path,
        max_steps=6,
        checkpoint_interval=2,
        resume=str(tmp_path / "checkpoints" / "step_00000002.pt"),
    )
    Trainer(tiny_model(0), dataset(data), config=cfg).fit()
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


# ------------------------------------------------------------------ Ctrl-C


CTRL_C_SCRIPT = """
import json, sys
from fastllm.train.trainer import Trainer
from train_util import dataset, tiny_model, train_config
out, data = sys.argv[1], sys.argv[2]
cfg = train_config(out, max_steps=100_000, decay_steps=1000)
r = Trainer(tiny_model(0), dataset(data), config=cfg).fit()
print(json.dumps({"step": r.step, "interrupted": r.interrupted, "checkpoint": r.checkpoint}))
"""


def test_ctrl_c_saves_checkpoint_and_resumes(data, tmp_path):
    out = tmp_path / "out"
    script = tmp_path / "train_script.py"
    script.write_text(CTRL_C_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(out), str(data)],
        env=_subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        metrics = out / "metrics.jsonl"
        deadline = time.monotonic() + 90
        while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 3):
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "training never logged 3 steps"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    result = json.loads(stdout.strip().splitlines()[-1])
    stopped = result["step"]
    assert result["interrupted"] and 3 <= stopped < 100_000
    ckpt = out / "checkpoints" / f"step_{stopped:08d}.pt"
    assert result["checkpoint"] == str(ckpt) and ckpt.is_file()
    assert load_checkpoint(ckpt)["step"] == stopped
    # resume two more steps; the result equals a straight in-process run of stopped + 2 steps
    # (one thread here too, as in the subprocess: then the CPU arithmetic is the same, bit for bit)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = tiny_model(5)
        res = Trainer(
            model,
            dataset(data),
            config=train_config(out, max_steps=stopped + 2, decay_steps=1000, resume=str(ckpt)),
        ).fit()
        assert res.step == stopped + 2 and not res.interrupted
        straight = tiny_model(0)
        Trainer(
            straight,
            dataset(data),
            config=train_config(tmp_path / "straight", max_steps=stopped + 2, decay_steps=1000),
        ).fit()
    finally:
        torch.set_num_threads(threads)
    _assert_params_equal(params(model), params(straight), exact=True)
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, stopped + 3))


# ------------------------------------------------------------------ DDP (torchrun, gloo)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_matches_single_process_grad_accum(data, tmp_path):
    steps, batch = 3, 2
    out = tmp_path / "ddp"
    out.mkdir()
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={_free_port()}",
        str(TESTS / "ddp_worker.py"),
        str(out),
        str(data),
        str(steps),
        str(batch),
    ]
    proc = subprocess.run(cmd, env=_subprocess_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r0, r1 = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert (r0["rank"], r1["rank"], r0["world_size"], r0["step"]) == (0, 1, 2, steps)
    assert r0["tokens_per_step"] == 2 * batch * CONTEXT
    _assert_params_equal(r0["params"], r1["params"], exact=True)
    single = tiny_model(0)
    result = Trainer(
        single,
        dataset(data),
        config=train_config(tmp_path / "single", max_steps=steps, batch_size=batch, grad_accum=2),
    ).fit()
    _assert_params_equal(r0["params"], params(single), atol=1e-5, noise_atol=2 * 3e-3 * steps)
    want = train_losses(result.history)
    for r in (r0, r1):
        assert [s for s, _ in r["losses"]] == [s for s, _ in want]
        got, expected = [loss for _, loss in r["losses"]], [loss for _, loss in want]
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    assert sorted(p.name for p in (out / "run" / "checkpoints").iterdir()) == [
        f"step_{steps:08d}.pt",
        f"step_{steps:08d}.pt.sha256",
    ]


# ------------------------------------------------------------------ bad input


def test_dataset_vocab_larger_than_model(tmp_path):
    write_shards(tmp_path, tokens=500, vocab_size=1000)
    with pytest.raises(ValueError, match="vocab_size"):
        Trainer(tiny_model(0), dataset(tmp_path), config=train_config(tmp_path))


def test_dataset_context_longer_than_model(data, tmp_path):
    with pytest.raises(ValueError, match="context"):
        Trainer(tiny_model(0), dataset(data, context=100), config=train_config(tmp_path))
    with pytest.raises(ValueError, match="context"):
        Trainer(
            tiny_model(0),
            dataset(data),
            val_data=dataset(data, "val", context=8),
            config=train_config(tmp_path),
        )


@pytest.mark.parametrize(
    "field,value",
    [
        ("batch_size", 0),
        ("lr", -1),
        ("lr", float("nan")),
        ("dtype", "fp8"),
        ("device", "tpu"),
        ("max_steps", 0),
        ("beta2", 1.0),
        ("beta1", -0.1),
        ("warmup_steps", -1),
        ("keep_checkpoints", 0),
        ("decay_steps", 0),
        ("num_threads", 0),
        ("min_lr", 1.0),  # above lr
        ("peak_flops", 0.0),
        ("device", "cuda:x"),
        ("grad_clip", float("inf")),
    ],
)
def test_train_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=f"^{field}"):
        TrainConfig(**{field: value})


@pytest.mark.parametrize(
    "field,value",
    [
        ("grad_accum", 1.5),
        ("max_steps", "10"),
        ("seed", None),
        ("lr", "1e-3"),
        ("beta1", True),
        ("dtype", None),
        ("device", 0),
        ("compile", "yes"),
        ("progress", 1),
        ("out_dir", 3),
        ("resume", 1),
        ("num_threads", 2.0),
        ("peak_flops", "1e12"),
    ],
)
def test_train_config_rejects_wrong_types_with_type_error(field, value):
    with pytest.raises(TypeError, match=f"^{field} must be"):
        TrainConfig(**{field: value})


def test_train_config_normalises_paths_and_numbers(tmp_path):
    cfg = TrainConfig(out_dir=tmp_path, resume=tmp_path / "c.pt", lr=1, batch_size=np.int64(2))
    assert cfg.out_dir == str(tmp_path) and cfg.resume == str(tmp_path / "c.pt")
    assert type(cfg.lr) is float and type(cfg.batch_size) is int
    assert json.loads(json.dumps(cfg.to_dict()))["batch_size"] == 2


def test_float16_on_cpu_rejected(data, tmp_path):
    with pytest.raises(ValueError, match="float16"):
        Trainer(tiny_model(0), dataset(data), config=train_config(tmp_path, dtype="float16"))


@pytest.fixture(scope="module")
def a_checkpoint(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ckpt")
    return Path(Trainer(tiny_model(0), dataset(data), config=train_config(out, max_steps=1)).fit().checkpoint)


def test_checkpoint_from_another_model_config(data, tmp_path, a_checkpoint):
    trainer = Trainer(
        tiny_model(0, n_layer=1), dataset(data), config=train_config(tmp_path, resume=str(a_checkpoint))
    )
    with pytest.raises(ValueError, match="n_layer"):
        trainer.fit()


def test_checkpoint_from_another_tokenizer(tmp_path, a_checkpoint):
    write_shards(tmp_path / "d", sha="cd" * 32)
    trainer = Trainer(
        tiny_model(0), dataset(tmp_path / "d"), config=train_config(tmp_path, resume=str(a_checkpoint))
    )
    with pytest.raises(ValueError, match="tokenizer"):
        trainer.fit()


def test_model_from_checkpoint_checks_weights_against_the_config_first(tmp_path, a_checkpoint, monkeypatch):
    """A checkpoint whose config and weights disagree is refused from the shapes alone: no MiniGPT
    of the stored config is built. (A config of a huge model: tests/test_checkpoints.py.)"""
    import fastllm.train.checkpoint as checkpoint

    ckpt = torch.load(a_checkpoint, weights_only=True)
    cases = {
        "wider.pt": {**ckpt, "model_config": {**ckpt["model_config"], "d_model": 128}},
        "fewer.pt": {**ckpt, "model": {k: v for k, v in ckpt["model"].items() if "blocks.1." not in k}},
    }

    def no_model(*args, **kwargs):
        raise AssertionError("a model was built before the checkpoint was checked")

    monkeypatch.setattr(checkpoint, "MiniGPT", no_model)
    for name, bad in cases.items():
        save_with_checksum(bad, tmp_path / name)
        with pytest.raises(ValueError, match="do not fit its model config"):
            model_from_checkpoint(tmp_path / name)
    save_with_checksum(
        {**ckpt, "model_config": {**ckpt["model_config"], "n_layers": 2}}, tmp_path / "typo.pt"
    )
    with pytest.raises(ValueError, match="bad model config.*n_layers"):
        model_from_checkpoint(tmp_path / "typo.pt")


def test_corrupt_and_foreign_checkpoints(data, tmp_path, a_checkpoint):
    raw = a_checkpoint.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "random.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    for name in ("truncated.pt", "random.pt"):
        with pytest.raises(ValueError, match="corrupt"):
            load_checkpoint(tmp_path / name)
    for name in ("foreign.pt", "tensor.pt"):
        with pytest.raises(ValueError, match="not a fastllm"):
            load_checkpoint(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    trainer = Trainer(
        tiny_model(0),
        dataset(data),
        config=train_config(tmp_path / "out", resume=str(tmp_path / "truncated.pt")),
    )
    with pytest.raises(ValueError, match="corrupt"):
        trainer.fit()


def test_compile_trains_like_eager(data, tmp_path):
    """TrainConfig(compile=True) (torch.compile, inductor on the CPU) follows the eager run's losses
    and weights."""
    eager = tiny_model(0)
    compiled = tiny_model(0)
    r1 = Trainer(eager, dataset(data), config=train_config(tmp_path / "eager", max_steps=3)).fit()
    r2 = Trainer(
        compiled, dataset(data), config=train_config(tmp_path / "compiled", max_steps=3, compile=True)
    ).fit()
    assert [s for s, _ in train_losses(r2.history)] == [s for s, _ in train_losses(r1.history)]
    assert [v for _, v in train_losses(r2.history)] == pytest.approx(
        [v for _, v in train_losses(r1.history)], abs=1e-4
    )
    for name, p in params(eager).items():
        assert torch.allclose(p, params(compiled)[name], atol=1e-4), name
