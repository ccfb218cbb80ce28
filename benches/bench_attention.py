"""Attention-kernel benchmark (issue #6): fastllm's Triton FlashAttention-2 against PyTorch SDPA and
a naive PyTorch attention, forward and forward+backward, on a CUDA GPU.

Shapes follow the FlashAttention-2 paper: 16k tokens per call (batch = 16384 // T) and
d_model 2048 (heads = 2048 // head_dim), T in 512 .. 8192, head_dim 64 and 128, fp16 and bf16,
causal. One benchmark group per (pass, dtype, head_dim, T) with three rows:
  flash   fastllm.kernels.flash_attention (autotuned on the first, untimed, call)
  sdpa    torch.nn.functional.scaled_dot_product_attention(is_causal=True) (FlashAttention/cuDNN)
  naive   softmax(q k^T / sqrt(D) + causal mask) v in plain PyTorch ops (skipped where it runs
          out of GPU memory)
extra_info: impl, variant, tflops and the shape. FLOPs: 4 * B * H * T^2 * D for a forward pass,
halved when causal; forward+backward counts 3.5x that (the backward does 2.5x the forward's matmul
work), the convention of the FlashAttention papers. The issue's target: flash >= sdpa for T >= 2048
on an H100.

Every row skips with "no CUDA GPU: the Triton kernels run only on CUDA" where torch sees no GPU.

Run:  pytest benches/bench_attention.py --benchmark-only
      FASTLLM_BENCH_ATTN_T=2048,4096 FASTLLM_BENCH_ATTN_D=128 \
        pytest benches/bench_attention.py --benchmark-only
      python benches/report.py -k attention
"""

from __future__ import annotations

import math
import os

import pytest

NO_GPU = "no CUDA GPU: the Triton kernels run only on CUDA"
TOKENS = 16384
D_MODEL = 2048
T_VALUES = [int(t) for t in os.environ.get("FASTLLM_BENCH_ATTN_T", "512,1024,2048,4096,8192").split(",")]
D_VALUES = [int(d) for d in os.environ.get("FASTLLM_BENCH_ATTN_D", "64,128").split(",")]
ROUNDS = int(os.environ.get("FASTLLM_BENCH_ATTN_ROUNDS", "10"))
IMPLS = {
    "flash": ("fastllm", "Triton FlashAttention-2"),
    "sdpa": ("sdpa", "torch SDPA"),
    "naive": ("naive", "PyTorch ops"),
}


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


pytestmark = pytest.mark.skipif(not _cuda(), reason=NO_GPU)


def naive_attention(q, k, v, causal: bool):
    import torch

    T = q.shape[-2]
    s = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))  # (B, H, T, T)
    if causal:
        mask = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
        s = s.masked_fill(mask, float("-inf"))
    return torch.softmax(s.float(), dim=-1).to(q.dtype) @ v


def _impl(name: str):
    import torch.nn.functional as F

    if name == "flash":
        from fastllm.kernels import flash_attention

        return lambda q, k, v: flash_attention(q, k, v, causal=True)
    if name == "sdpa":
        return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return lambda q, k, v: naive_attention(q, k, v, True)


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("T", T_VALUES)
@pytest.mark.parametrize("D", D_VALUES)
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("mode", ["fwd", "fwd_bwd"])
def test_attention(benchmark, mode, dtype, D, T, impl):
    import torch

    if impl == "flash":
        pytest.importorskip("triton", reason="triton not installed")
    benchmark.group = f"attention-{mode}-{dtype}-d{D}-T{T}"
    dt = {"fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    B, H = max(1, TOKENS // T), D_MODEL // D
    torch.manual_seed(0)
    grad = mode == "fwd_bwd"
    q, k, v = (torch.randn(B, H, T, D, device="cuda", dtype=dt, requires_grad=grad) for _ in range(3))
    do = torch.randn(B, H, T, D, device="cuda", dtype=dt)
    fn = _impl(impl)

    def step():
        if grad:
            out = fn(q, k, v)
            torch.autograd.grad(out, (q, k, v), do)
        else:
            with torch.no_grad():
                fn(q, k, v)

    def run():
        step()
        torch.cuda.synchronize()

    try:
        for _ in range(3):  # autotuning (flash) and warm-up, untimed
            step()
        torch.cuda.synchronize()
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        pytest.skip(f"{impl} runs out of GPU memory at B={B}, H={H}, T={T}, D={D}")
    benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    flops = 4 * B * H * T * T * D / 2 * (3.5 if grad else 1.0)
    impl_name, variant = IMPLS[impl]
    benchmark.extra_info.update(
        {
            "impl": impl_name,
            "variant": variant,
            "tflops": flops / benchmark.stats.stats.median / 1e12,
            "batch": B,
            "heads": H,
            "T": T,
            "head_dim": D,
            "dtype": dtype,
            "mode": mode,
            "causal": True,
            "device": torch.cuda.get_device_name(),
        }
    )
