"""Training-throughput benchmark (issue #4): MiniGPT's Trainer against a plain nanoGPT-style model.

Group lm-train (one run, so the ratios between rows are meaningful). Shape: vocab 8192, context
256, 6 layers, 6 heads, d_model 384 (~13.9M parameters), batch 8 x 256 = 2,048 tokens per
optimizer step, random token ids (fixed seed) read through fastllm's TokenDataset by every row.
Every row runs on ONE torch thread (torch.set_num_threads(1)):
  plain_fp32, plain_bf16   the pure-PyTorch reference (benches/train_baseline.py: nanoGPT's model,
                           naive attention, full-logits cross-entropy, foreach AdamW, clip 1.0),
                           in fp32 and with nothing changed but bf16 autocast
  transformers_gpt2_fp32   transformers' GPT2LMHeadModel of the same shape (exact GELU, its default
                           attention), trained by the same plain loop (skipped without transformers)
  minigpt_default          fastllm.train.trainer.Trainer with its defaults (dtype="auto") on
                           MiniGPT(MiniGPTConfig(..., mlp="gelu")): the same math as the reference
  minigpt_bf16, minigpt_fp32   the same with TrainConfig(dtype="bfloat16") / dtype="float32"
A round is K optimizer steps (FASTLLM_BENCH_TRAIN_STEPS, default 3) after 2 untimed warm-up steps.
Each row records extra_info: impl, variant, tokens (per round), tokens_per_s (tokens / median),
params, final_loss, peak_rss_mb (a fresh process doing 3 steps, optimizer state included; see
benches/train_tasks.py) and floor_rss_mb (that interpreter with torch and fastllm imported only).

bf16 autocast only pays on a CPU with bf16 matrix units (Intel AMX); without them bf16 matmuls
are slower than fp32 and the fp32 rows are the comparison that matters. Each row records
amx_bf16 (whether torch sees AMX), and report.py states it.

Run:  pytest benches/bench_train.py --benchmark-only
      python benches/report.py -k train     (runs the benchmarks, prints the tables)
"""

from __future__ import annotations

import math
import os

import pytest

import rss
import train_tasks
from train_tasks import CASES, TOKENS_PER_STEP

ROUNDS = int(os.environ.get("FASTLLM_BENCH_ROUNDS", "3"))
STEPS = int(os.environ.get("FASTLLM_BENCH_TRAIN_STEPS", "3"))
WARMUP = 2
RSS_STEPS = 3
PEERS = "the `test` extra installs transformers: pip install -e '.[test]'"
VARIANTS = {
    "plain_fp32": ("plain", "fp32"),
    "plain_bf16": ("plain", "bf16 autocast"),
    "transformers_gpt2_fp32": ("transformers", "GPT2LMHeadModel, fp32"),
    "minigpt_default": ("fastllm", "default, dtype=auto"),
    "minigpt_bf16": ("fastllm", "dtype=bfloat16"),
    "minigpt_fp32": ("fastllm", "dtype=float32"),
}


def amx_bf16() -> bool:
    import torch

    try:
        return bool(torch._C._cpu._init_amx())  # True only where the CPU and the OS enable AMX tiles
    except AttributeError:  # older torch: no probe
        return False


@pytest.fixture(scope="session")
def token_data(tmp_path_factory) -> str:
    return str(train_tasks.write_corpus(tmp_path_factory.mktemp("train-tokens")))


@pytest.fixture
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("case", CASES)
def test_train_step(benchmark, one_thread, token_data, tmp_path, case):
    benchmark.group = "lm-train"
    impl, variant = VARIANTS[case]
    if impl == "transformers":
        pytest.importorskip("transformers", reason=f"transformers missing; {PEERS}")
    if impl == "fastllm":
        pytest.importorskip("fastllm.train.trainer", reason="fastllm.train.trainer not available yet")
    params = {"data": token_data}
    if impl == "fastllm":
        params["out_dir"] = str(tmp_path)
    step = getattr(train_tasks, f"make_{case}")(**params)

    warmed = []
    losses = []

    def setup():  # the warm-up steps, untimed, before the first round only
        if not warmed:
            for _ in range(WARMUP):
                step()
            warmed.append(True)

    def run():
        for _ in range(STEPS):
            losses.append(step())

    benchmark.pedantic(run, setup=setup, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    assert losses and all(math.isfinite(v) for v in losses), losses
    tokens = TOKENS_PER_STEP * STEPS
    model = getattr(step, "model", None)
    info = {
        "impl": impl,
        "variant": variant,
        "case": case,
        "tokens": tokens,
        "tokens_per_s": tokens / benchmark.stats.stats.median,
        "params": sum(p.numel() for p in model.parameters()) if model is not None else None,
        "final_loss": losses[-1],
        "threads": 1,
        "amx_bf16": amx_bf16(),
    }
    if impl == "transformers":
        info["attn_implementation"] = getattr(model.config, "_attn_implementation", None)
    trainer = getattr(step, "trainer", None)
    for name in (
        "autocast_dtype",
        "dtype",
        "amp_dtype",
    ):  # what dtype="auto" resolved to, if the Trainer says
        value = getattr(trainer, name, None)
        if value is not None:
            info["resolved_dtype"] = str(value)
            break
    rss_params = {"data": token_data, "steps": RSS_STEPS}
    if impl == "fastllm":
        rss_params["out_dir"] = str(tmp_path / "rss")
    info["peak_rss_mb"] = rss.child_peak_rss(train_tasks.__file__, case, rss_params)
    info["floor_rss_mb"] = rss.interpreter_rss(train_tasks.__file__)
    benchmark.extra_info.update(info)
