"""Scaled dot-product attention (`fastllm.attention`): the single dispatch point every MiniGPT layer calls.

The module is private (`_attention`) so that the package attribute `fastllm.attention` stays the
function: importing a submodule of the same name would replace it.

Why a module of its own: all attention in fastllm goes through `attention()`, so that a faster
kernel can be plugged in here, in one place, without touching the model. `backend` picks it:
- "sdpa": PyTorch's `torch.nn.functional.scaled_dot_product_attention` (SDPA), which picks its own
  FlashAttention / memory-efficient / math kernels; it takes every call (masks, dropout, any dtype).
- "triton": the FlashAttention-2 Triton kernels of `fastllm.kernels` (causal or not, GQA, no
  attn_mask, no dropout, head_dim 16..128, fp16/bf16/fp32). A call they cannot take raises, naming
  why: ValueError (attn_mask, dropout, head_dim, dtype, CPU tensors) or ImportError (no triton).
  CPU tensors run only under TRITON_INTERPRET=1 (triton's interpreter; what the tests do).
- "auto" (the default): "triton" when q is on CUDA, triton is importable and the call is one the
  kernels take, else "sdpa". Under torch.compile "auto" stays with SDPA, which the compiler knows;
  the kernels' host code (autotuner, launch grid) has not been run through it.

Grouped-query attention (Ainslie et al. 2023, "GQA"; as in Llama 2/3): k and v may carry fewer
heads than q. Key/value head j serves the query heads j*g .. (j+1)*g - 1 with g = n_head // n_kv_head,
which is what Hugging Face's `repeat_kv` and SDPA's `enable_gqa` both do (repeat_interleave on
the head axis).

>>> import torch
>>> q = torch.randn(1, 4, 3, 8); kv = torch.randn(1, 2, 3, 8)  # 4 query heads, 2 kv heads
>>> attention(q, kv, kv).shape
torch.Size([1, 4, 3, 8])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fastllm.kernels.checks import check_qkv

__all__ = ["attention"]

# SDPA grew `enable_gqa` in torch 2.5; on older torch we repeat the kv heads ourselves.
# (SDPA is a builtin without an inspectable signature, so go by version.)
SDPA_HAS_GQA = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 5)

_BACKENDS = ("auto", "triton", "sdpa")
# What the Triton flash kernels take (fastllm.kernels.flash checks the same and raises otherwise).
_FLASH_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _flash_fits(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float, attn_mask) -> bool:
    """Whether backend="auto" runs the Triton kernel: CUDA tensors, triton importable (looked up,
    not imported), no mask or dropout, a head_dim and dtype the kernel takes, not under compile."""
    if not (q.is_cuda and k.device == q.device and v.device == q.device):
        return False
    if attn_mask is not None or dropout_p != 0.0 or torch.compiler.is_compiling():
        return False
    from fastllm import kernels

    lo, hi = kernels.FLASH_HEAD_DIMS
    return (
        lo <= q.shape[-1] <= hi
        and q.dtype in _FLASH_DTYPES
        and k.dtype == q.dtype
        and v.dtype == q.dtype
        and kernels.is_available()
    )


def _flash(q, k, v, causal: bool, dropout_p: float, attn_mask) -> torch.Tensor:
    """The Triton FlashAttention-2 kernel, or a ValueError / ImportError saying why it cannot run."""
    if attn_mask is not None:
        raise ValueError(
            "backend='triton' does not take an attn_mask (the kernel masks causally or not at all); "
            "use backend='sdpa' or 'auto'"
        )
    if dropout_p != 0.0:
        raise ValueError(
            f"backend='triton' has no attention dropout, got dropout_p={dropout_p}; "
            "use backend='sdpa' or 'auto'"
        )
    from fastllm import kernels

    # ImportError without triton; ValueError for head_dim, dtype, or CPU tensors outside the interpreter
    return kernels.flash_attention(q, k, v, causal=causal)  # (B, n_head, T_q, head_dim)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = True,
    dropout_p: float = 0.0,
    attn_mask: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """softmax(q k^T / sqrt(head_dim) [+ causal mask]) v, per head.

    q: (B, n_head, T_q, head_dim); k, v: (B, n_kv_head, T_k, head_dim) with n_kv_head dividing
    n_head. Returns (B, n_head, T_q, head_dim).

    With `causal=True` and T_q < T_k (queries are the last T_q positions, as when decoding with a
    KV cache) the mask is aligned bottom-right: query i sees keys 0 .. T_k - T_q + i.
    `dropout_p` is the attention-probability dropout (pass 0.0 at eval time). `attn_mask` (bool,
    True = may attend, broadcastable to (B, n_head, T_q, T_k)) replaces the causal mask; pass it
    with causal=False (generation over padded batches builds its own).
    `backend`: "auto", "triton" or "sdpa" (see the module docstring); any other value raises.

    >>> import torch
    >>> x = torch.ones(1, 1, 2, 4)
    >>> attention(x, x, x).tolist() == x.tolist()
    True
    >>> attention(x, x, x, backend="sdpa").shape  # "auto" on CPU tensors is SDPA too
    torch.Size([1, 1, 2, 4])
    """
    if not isinstance(backend, str) or backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, _BACKENDS))}, got {backend!r}")
    n_head, T_q, n_kv_head, T_k = check_qkv(q, k, v, "attention")
    if causal and T_q > T_k:
        raise ValueError(f"causal attention needs T_q <= T_k, got T_q={T_q} and T_k={T_k}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")

    if attn_mask is not None and causal:
        raise ValueError("pass either causal=True or an attn_mask (with causal=False), not both")
    if backend == "triton" or (backend == "auto" and _flash_fits(q, k, v, dropout_p, attn_mask)):
        return _flash(q, k, v, causal, dropout_p, attn_mask)  # (B, n_head, T_q, head_dim)

    # Explicit bottom-right mask only when the shapes differ: SDPA's is_causal aligns top-left.
    mask = attn_mask
    is_causal = causal
    if causal and T_q == 1:
        is_causal = False  # one query (a decode step) sees every key: no mask to build
    elif causal and T_q != T_k:
        mask = torch.ones(T_q, T_k, dtype=torch.bool, device=q.device).tril(diagonal=T_k - T_q)  # (T_q, T_k)
        is_causal = False

    if n_kv_head != n_head:
        if SDPA_HAS_GQA:
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal, enable_gqa=True
            )  # (B, n_head, T_q, head_dim)
        g = n_head // n_kv_head
        k = k.repeat_interleave(g, dim=1)  # (B, n_head, T_k, head_dim)
        v = v.repeat_interleave(g, dim=1)  # (B, n_head, T_k, head_dim)
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal
    )  # (B, n_head, T_q, head_dim)
