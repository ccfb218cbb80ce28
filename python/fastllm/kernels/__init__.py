"""Triton attention kernels (CUDA): FlashAttention-2 forward/backward and paged decode attention.

- `flash_attention(q, k, v, *, causal=True)`: q (B, H, T_q, D), k and v (B, H_kv, T_k, D) with
  H_kv dividing H (grouped-query heads), D from 16 to 128, fp16/bf16/fp32 (fp32 accumulation),
  differentiable (a `torch.autograd.Function` around the forward and backward kernels). With
  causal=True and T_q < T_k the mask is aligned bottom-right, as in `fastllm.attention`.
- `paged_decode_attention(q, k_cache, v_cache, block_tables, context_lens)`: one query token per
  sequence, q (B, H, D), K/V read through the Engine's block tables: caches of shape
  (num_blocks, block_size, H_kv, D), block_tables (B, max_blocks), context_lens (B,) >= 1.

This package imports without triton; triton is imported (and a clear ImportError raised when it
is missing) only when a kernel is called. `import fastllm` never imports it. The kernels need CUDA
tensors, or `TRITON_INTERPRET=1` set before triton is first imported (triton then runs them
on the CPU through its interpreter, which is what the tests do).
"""

from __future__ import annotations

import importlib
import importlib.util

__all__ = ["FLASH_HEAD_DIMS", "flash_attention", "is_available", "paged_decode_attention"]

# The head_dim range (inclusive) of the flash kernels: tl.dot tiles are >= 16 wide, and the autotune
# tables (block sizes, pipeline stages) are sized for head_dim up to 128.
FLASH_HEAD_DIMS = (16, 128)

_MISSING = (
    "fastllm.kernels needs triton (pip install triton; it ships with the CUDA builds of torch on "
    "Linux); use fastllm.attention(..., backend='sdpa') without it"
)


def is_available() -> bool:
    """Whether triton can be imported (does not import it)."""
    try:
        return importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):  # e.g. sys.modules["triton"] = None
        return False


def _load(name: str):
    try:
        import triton  # noqa: F401
    except ImportError as e:
        raise ImportError(_MISSING) from e
    return importlib.import_module(f"fastllm.kernels.{name}")


def flash_attention(q, k, v, *, causal: bool = True):
    """softmax(q k^T / sqrt(D) [+ causal mask]) v with the FlashAttention-2 Triton kernels.

    q: (B, H, T_q, D); k, v: (B, H_kv, T_k, D). Returns (B, H, T_q, D) in q's dtype.
    """
    return _load("flash").flash_attention(q, k, v, causal=causal)


def paged_decode_attention(q, k_cache, v_cache, block_tables, context_lens, *, max_context=None):
    """Attention of one query token per sequence over its paged K/V cache.

    q: (B, H, D); k_cache, v_cache: (num_blocks, block_size, H_kv, D); block_tables: (B, max_blocks)
    integer block ids; context_lens: (B,) tokens of each sequence (>= 1). Returns (B, H, D).
    `max_context`: an upper bound of context_lens known on the host (default: what the block
    table covers), which sizes the context splits without a device sync.
    """
    return _load("paged").paged_decode_attention(
        q, k_cache, v_cache, block_tables, context_lens, max_context=max_context
    )
