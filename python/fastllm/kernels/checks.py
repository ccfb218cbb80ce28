"""Argument checks shared by the attention entry points: `fastllm.attention` and the Triton kernels.

Plain torch, so `fastllm.model.attention` can use it without importing triton.
"""

from __future__ import annotations

import torch


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, caller: str) -> tuple[int, int, int, int]:
    """(n_head, T_q, n_kv_head, T_k) of q (B, H, T_q, D) and k, v (B, H_kv, T_k, D), or a ValueError
    naming the shapes (shared by `attention` and the Triton kernels' entry points)."""
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(
            f"{caller} expects 4-d (B, n_head, T, head_dim) tensors, got q{tuple(q.shape)}, "
            f"k{tuple(k.shape)}, v{tuple(v.shape)}"
        )
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got k{tuple(k.shape)} and v{tuple(v.shape)}")
    B, n_head, T_q, head_dim = q.shape
    _, n_kv_head, T_k, _ = k.shape
    if k.shape[0] != B or k.shape[3] != head_dim:
        raise ValueError(f"q{tuple(q.shape)} and k{tuple(k.shape)} disagree on batch size or head_dim")
    if n_kv_head == 0 or n_head % n_kv_head != 0:
        raise ValueError(f"n_kv_head={n_kv_head} (from k) must divide n_head={n_head} (from q)")
    return n_head, T_q, n_kv_head, T_k


def check_kernel_device(device: torch.device, interpret: bool) -> None:
    """A ValueError unless the Triton kernels can run on `device`: CUDA, or anything under the interpreter."""
    if device.type != "cuda" and not interpret:
        raise ValueError(
            f"the Triton kernels need CUDA tensors (got {device}); set TRITON_INTERPRET=1 before triton "
            "is imported (and keep it set) to run them on the CPU through triton's interpreter"
        )
