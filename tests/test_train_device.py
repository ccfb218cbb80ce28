"""`fastllm.train.device`: device and dtype names, the torchrun environment, the peak FLOP/s of MFU.

Oracles: torch's own answers on this machine (`torch.cuda.is_available()`, the dtype objects), the
vendors' data-sheet figures the table copies, torchrun's documented environment variables, and for
the measured CPU peak, bounds no real machine leaves (above 1 GFLOP/s, below 1 PFLOP/s).
"""

from __future__ import annotations

import re

import pytest
import torch

import fastllm.train.device as device
from fastllm.train.device import dist_info, peak_flops, resolve_device, resolve_dtype


def test_auto_follows_cuda_availability():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_cuda_is_a_value_error_without_a_gpu(monkeypatch):
    if torch.cuda.is_available():
        assert resolve_device("cuda:0") == torch.device("cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("cuda", "cuda:1"):
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device(name)
    assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.parametrize(
    "name",
    # torch refuses the first ones; it accepts meta/mps/xla/cpu:N, which train and generate cannot use
    ["tpu", "foo", "cuda:x", "cuda:abc", "cuda:-1", "cuda:1.5", "cuda:99999999999999999999", "", " cpu"]
    + ["meta", "mps", "xla", "cpu:0", "cpu:3", "CUDA", "cuda:", "cuda:0:1", "cuda:\u0661"],
)
def test_unknown_device_names_are_value_errors(name):
    with pytest.raises(ValueError, match=f"^device {re.escape(repr(name))} is not one of 'auto', 'cpu'"):
        resolve_device(name)


@pytest.mark.parametrize("value", [None, 0, b"cpu", torch.device("cpu")])
def test_a_device_name_must_be_a_str(value):
    with pytest.raises(TypeError, match="device must be str"):
        resolve_device(value)


@pytest.mark.parametrize("count", [1, 2])
def test_cuda_index_past_the_gpus_is_a_value_error(monkeypatch, count):
    """cuda:N with N >= torch.cuda.device_count() is refused naming the GPUs there are (a GPU-less
    machine plays one with `count` GPUs: torch.device objects need no GPU to exist)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    assert resolve_device("cuda") == torch.device("cuda")
    for i in range(count):
        assert resolve_device(f"cuda:{i}") == torch.device("cuda", i)
    with pytest.raises(ValueError, match=rf"'cuda:{count}' .* {count} CUDA device\(s\): cuda:0..{count - 1}"):
        resolve_device(f"cuda:{count}")


@pytest.mark.parametrize("name", ["fp16", "float64", "int8", "", None])
def test_unknown_dtype_names_are_errors_naming_them(name):
    with pytest.raises((ValueError, TypeError), match="dtype"):
        resolve_dtype(name, torch.device("cpu"))


def test_dtype_names(monkeypatch):
    cpu = torch.device("cpu")
    for name in ("float32", "bfloat16", "float16"):
        assert resolve_dtype(name, cpu) is getattr(torch, name)
    monkeypatch.setattr(device, "_cpu_has_amx", lambda: True)
    assert resolve_dtype("auto", cpu) is torch.bfloat16
    monkeypatch.setattr(device, "_cpu_has_amx", lambda: False)
    assert resolve_dtype("auto", cpu) is torch.float32


@pytest.mark.parametrize(
    "gpu,dtype,flops",
    [
        ("NVIDIA H100 80GB HBM3", torch.bfloat16, 989e12),
        ("NVIDIA H200", torch.float32, 989e12 / 2),
        ("NVIDIA A100-SXM4-40GB", torch.float16, 312e12),
        ("Tesla T4", torch.bfloat16, 65e12),
    ],
)
def test_gpu_peaks_come_from_the_table(monkeypatch, gpu, dtype, flops):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d: gpu)
    monkeypatch.setattr(device, "_measured_matmul_peak", lambda d, t: pytest.fail("measured a listed GPU"))
    assert peak_flops(torch.device("cuda"), dtype) == flops


def test_an_unlisted_gpu_and_the_cpu_are_measured(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d: "Some Future GPU")
    monkeypatch.setattr(device, "_measured_matmul_peak", lambda d, t: 42.0)
    assert peak_flops(torch.device("cuda"), torch.bfloat16) == 42.0
    monkeypatch.undo()
    rng = torch.get_rng_state()
    measured = peak_flops(torch.device("cpu"), torch.float32)
    assert 1e9 < measured < 1e15
    assert torch.equal(torch.get_rng_state(), rng)  # a private generator: training's RNG is untouched


def test_dist_info_reads_torchrun_environment(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert dist_info() == (False, 0, 0, 1)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert dist_info() == (True, 3, 1, 4)
