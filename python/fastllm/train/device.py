"""Where and in what precision training runs: device and autocast dtype, the process's place under
torchrun, and the peak FLOP/s that MFU is measured against.

Why a module of its own: the Trainer, `fastllm eval` and `fastllm generate` all turn a device name
("auto", "cpu", "cuda:1") and a dtype name into torch objects the same way.

`dtype="auto"` picks bfloat16 autocast where the hardware multiplies bf16 faster than fp32 (CUDA
with bf16 support; a CPU whose AMX tile unit torch can use) and fp32 otherwise: on a CPU without
AMX, bf16 matmuls run at about 0.6x fp32 (measured with oneDNN's avx512_core_bf16 kernels), so
autocast would slow training down.

>>> resolve_device("cpu"), resolve_dtype("float32", resolve_device("cpu"))
(device(type='cpu'), torch.float32)
"""

from __future__ import annotations

import os
import re
import time

import torch

from fastllm._checks import check_choice, check_type

__all__ = ["dist_info", "peak_flops", "resolve_device", "resolve_dtype"]

# Dense bf16/fp16 tensor-core peaks (no sparsity) for MFU, from the vendors' data sheets.
_GPU_PEAK_FLOPS = {
    "H100": 989e12,
    "H200": 989e12,
    "A100": 312e12,
    "L4": 121e12,
    "A10": 125e12,
    "4090": 165e12,
    "3090": 71e12,
    "V100": 125e12,
    "T4": 65e12,
}


def resolve_device(name: str) -> torch.device:
    """The torch device `name` means: "auto" (CUDA when torch sees a GPU, else the CPU), "cpu",
    "cuda" or "cuda:N".

    Any other name, a CUDA device asked for on a machine without one, or a "cuda:N" past the GPUs
    torch sees is a ValueError naming it (rather than torch's error at the first tensor moved
    there, or a device the training and generation code cannot run on).

    >>> resolve_device("cuda:abc")
    Traceback (most recent call last):
    ...
    ValueError: device 'cuda:abc' is not one of 'auto', 'cpu', 'cuda', 'cuda:N' (N a GPU index)
    """
    check_type(name, "device", str)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    match = re.fullmatch(r"(cpu|cuda)(?::([0-9]{1,9}))?", name)
    if match is None or (match[1] == "cpu" and match[2] is not None):
        raise ValueError(f"device {name!r} is not one of 'auto', 'cpu', 'cuda', 'cuda:N' (N a GPU index)")
    if match[1] == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but torch sees no CUDA device")
    if match[2] is None:
        return torch.device("cuda")
    index, count = int(match[2]), torch.cuda.device_count()
    if index >= count:
        raise ValueError(
            f"device {name!r} asked for, but torch sees {count} CUDA device(s): cuda:0..{count - 1}"
        )
    return torch.device("cuda", index)


def _cpu_has_amx() -> bool:
    try:
        return bool(torch._C._cpu._init_amx())  # what oneDNN's bf16 matmuls need to beat fp32
    except Exception:  # older torch without the probe
        return False


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """The autocast dtype `name` ("auto", "float32", "bfloat16" or "float16") means on `device`
    (float32 = no autocast)."""
    check_choice(name, "dtype", ("auto", "float32", "bfloat16", "float16"))
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        return torch.bfloat16 if _cpu_has_amx() else torch.float32
    return getattr(torch, name)


def _measured_matmul_peak(device: torch.device, dtype: torch.dtype) -> float:
    """FLOP/s of a 1024^3 matmul in `dtype` on this device and thread count: the CPU's practical peak."""
    n = 1024
    gen = torch.Generator(device=device).manual_seed(0)  # a private generator: training's RNG is untouched
    a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    a @ b
    best, t_end = float("inf"), time.perf_counter() + 0.3
    for _ in range(50):  # the fastest of a few repetitions: the peak, not the average under noise
        t0 = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t0)
        if time.perf_counter() > t_end:
            break
    return 2 * n**3 / best


def peak_flops(device: torch.device, dtype: torch.dtype) -> float:
    """Peak FLOP/s for MFU: the data-sheet figure of a known GPU, else a measured matmul peak."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, flops in _GPU_PEAK_FLOPS.items():
            if key in name:
                return flops if dtype != torch.float32 else flops / 2  # tf32 runs at half the bf16 rate
    return _measured_matmul_peak(device, dtype)


def dist_info() -> tuple[bool, int, int, int]:
    """(distributed, rank, local_rank, world_size) from torchrun's environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return False, 0, 0, 1
    return True, int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), world
