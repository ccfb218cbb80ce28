"""Paged decode attention in Triton: one query token per sequence, K/V read through block tables.

Layout (the Engine's, python/fastllm/engine.py): per layer k_cache and v_cache of shape
(num_blocks, block_size, H_kv, D); token p of sequence b lives in slot p % block_size of block
block_tables[b, p // block_size]; context_lens[b] tokens are valid (>= 1). q: (B, H, D), with query
head h reading kv head h // (H // H_kv).

One program per (sequence, kv head, context split) handles all the query heads of the group at once
(a (BLOCK_G, D) query tile, BLOCK_G = max(16, next_pow2(group)) so that tl.dot compiles), so every
K/V row is loaded once per group. When there are few sequences x kv heads for the GPU and the
contexts are long, the context is split (flash-decoding) and the partial results are merged on the
host with their log-sum-exps.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from fastllm._checks import check_optional_int
from fastllm.kernels.checks import check_kernel_device
from fastllm.kernels.flash import LOG2E, online_softmax_step

__all__ = ["paged_decode_attention"]


@triton.jit(do_not_specialize=["SPLIT_LEN"])
def _paged_decode(
    Q,
    K,
    V,
    BT,
    CL,
    O,  # noqa: E741 (Q, K, V, O as in the paper)
    LSE,
    sm_scale,
    stride_qb,
    stride_qh,
    stride_kb,
    stride_ks,
    stride_kh,
    stride_vb,
    stride_vs,
    stride_vh,
    stride_btb,
    stride_ob,
    stride_oh,
    stride_os,
    stride_lb,
    stride_lh,
    GROUP,
    SPLIT_LEN,
    PAGE: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_G: tl.constexpr,
    BLOCK_N: tl.constexpr,
    UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    hk = tl.program_id(1).to(tl.int64)
    split = tl.program_id(2)
    ctx = tl.load(CL + b).to(tl.int32)
    lo = split * SPLIT_LEN
    hi = tl.minimum(lo + SPLIT_LEN, ctx)

    offs_g = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, BLOCK_D)
    heads = hk * GROUP + offs_g
    g_ok = offs_g < GROUP
    d_ok = offs_d < HEAD_DIM
    q_ptrs = Q + b * stride_qb + heads[:, None] * stride_qh + offs_d[None, :]
    q = tl.load(q_ptrs, mask=g_ok[:, None] & d_ok[None, :], other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
    qk_scale = sm_scale * LOG2E
    m_i = tl.full([BLOCK_G], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_G], dtype=tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_D], dtype=tl.float32)
    offs_n0 = tl.arange(0, BLOCK_N)
    for start in range(lo, hi, BLOCK_N):
        pos = start + offs_n0
        ok = pos < hi
        blk = tl.load(BT + b * stride_btb + pos // PAGE, mask=ok, other=0).to(tl.int64)
        slot = (pos % PAGE).to(tl.int64)
        k_rows = blk * stride_kb + slot * stride_ks + hk * stride_kh
        v_rows = blk * stride_vb + slot * stride_vs + hk * stride_vh
        kt = tl.load(K + k_rows[None, :] + offs_d[:, None], mask=ok[None, :] & d_ok[:, None], other=0.0)
        v = tl.load(V + v_rows[:, None] + offs_d[None, :], mask=ok[:, None] & d_ok[None, :], other=0.0)
        if UPCAST:
            kt = kt.to(tl.float32)
        qk = tl.dot(q, kt, input_precision=PRECISION) * qk_scale  # (BLOCK_G, BLOCK_N)
        qk = tl.where(ok[None, :], qk, float("-inf"))
        acc, l_i, m_i = online_softmax_step(acc, l_i, m_i, qk, v, UPCAST, PRECISION)
    has = l_i > 0  # an empty split (past the end of a short context) leaves l = 0, m = -inf
    acc = acc / tl.where(has, l_i, 1.0)[:, None]
    lse = tl.where(has, m_i + tl.math.log2(tl.where(has, l_i, 1.0)), float("-inf"))
    tl.store(
        O + b * stride_ob + heads[:, None] * stride_oh + split * stride_os + offs_d[None, :],
        acc.to(O.dtype.element_ty),
        mask=g_ok[:, None] & d_ok[None, :],
    )
    tl.store(LSE + b * stride_lb + heads * stride_lh + split, lse, mask=g_ok)


INTERPRET = type(_paged_decode).__name__ == "InterpretedFunction"
_SM_CACHE: dict = {}


def _num_sms(device) -> int:
    if device not in _SM_CACHE:
        try:
            _SM_CACHE[device] = torch.cuda.get_device_properties(device).multi_processor_count
        except Exception:
            _SM_CACHE[device] = 1
    return _SM_CACHE[device]


def _check(q, k_cache, v_cache, block_tables, context_lens):
    if q.ndim != 3:
        raise ValueError(f"q must be (B, n_head, head_dim), got {tuple(q.shape)}")
    if k_cache.ndim != 4 or k_cache.shape != v_cache.shape:
        raise ValueError(
            f"k_cache and v_cache must both be (num_blocks, block_size, n_kv_head, head_dim), got "
            f"{tuple(k_cache.shape)} and {tuple(v_cache.shape)}"
        )
    B, H, D = q.shape
    H_kv = k_cache.shape[2]
    if k_cache.shape[3] != D:
        raise ValueError(f"head_dim of q ({D}) and of the caches ({k_cache.shape[3]}) differ")
    if H_kv == 0 or H % H_kv:
        raise ValueError(f"n_kv_head={H_kv} (from the caches) must divide n_head={H} (from q)")
    if not 16 <= D <= 256:
        raise ValueError(f"paged_decode_attention supports head_dim 16 to 256, got {D}")
    if block_tables.ndim != 2 or block_tables.shape[0] != B or block_tables.dtype.is_floating_point:
        raise ValueError(
            f"block_tables must be an integer (B, max_blocks) tensor, got {tuple(block_tables.shape)}"
        )
    if context_lens.shape != (B,) or context_lens.dtype.is_floating_point:
        raise ValueError(f"context_lens must be an integer (B,) tensor, got {tuple(context_lens.shape)}")
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32) or not (
        k_cache.dtype == v_cache.dtype == q.dtype
    ):
        raise ValueError(
            f"q and the caches must share one of float16, bfloat16, float32; got {q.dtype}, {k_cache.dtype}, "
            f"{v_cache.dtype}"
        )
    devices = {t.device for t in (q, k_cache, v_cache, block_tables, context_lens)}
    if len(devices) != 1:
        raise ValueError(f"all tensors must be on one device, got {sorted(map(str, devices))}")
    check_kernel_device(q.device, INTERPRET)


def paged_decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    *,
    sm_scale: float | None = None,
    max_context: int | None = None,
    _block_n: int | None = None,
    _num_splits: int | None = None,
) -> torch.Tensor:
    """Attention of q (B, H, D) over each sequence's first context_lens[b] cached tokens.

    k_cache, v_cache: (num_blocks, block_size, H_kv, D); block_tables: (B, max_blocks) integer ids;
    context_lens: (B,) integers >= 1. `max_context` (an upper bound of context_lens; default
    max_blocks * block_size, which needs no device sync) sizes the context splits.
    Returns (B, H, D) in q's dtype.
    """
    _check(q, k_cache, v_cache, block_tables, context_lens)
    max_context = check_optional_int(max_context, "max_context", minimum=1)
    B, H, D = q.shape
    page, H_kv = k_cache.shape[1], k_cache.shape[2]
    group = H // H_kv
    out = torch.empty((B, H, D), device=q.device, dtype=q.dtype)
    if B == 0 or H == 0:
        return out
    q = q if q.stride(-1) == 1 else q.contiguous()
    if k_cache.stride(-1) != 1 or v_cache.stride(-1) != 1:
        raise ValueError("the caches must be contiguous in head_dim")
    # the kernel reads block ids at row stride and unit column stride, and lengths at unit stride
    block_tables = block_tables if block_tables.stride(1) == 1 else block_tables.contiguous()
    context_lens = context_lens.contiguous()
    bd = max(16, triton.next_power_of_2(D))
    block_n = _block_n or (32 if INTERPRET else (64 if bd <= 64 else 32))
    max_ctx = max_context if max_context is not None else max(1, block_tables.shape[1] * page)
    if _num_splits is not None:
        splits = max(1, int(_num_splits))
    else:
        # split long contexts while there are fewer (sequence, kv head) programs than 2 waves of SMs
        programs = B * H_kv
        want = max(1, (2 * _num_sms(q.device)) // max(1, programs))
        splits = max(1, min(want, max_ctx // 512)) if not INTERPRET else 1
    split_len = triton.cdiv(triton.cdiv(max_ctx, splits), block_n) * block_n
    splits = triton.cdiv(max_ctx, split_len)
    if splits == 1:
        o_part = out.unsqueeze(2)  # (B, H, 1, D): the kernel writes the result in place
    else:
        o_part = torch.empty((B, H, splits, D), device=q.device, dtype=torch.float32)
    lse = torch.empty((B, H, splits), device=q.device, dtype=torch.float32)
    scale = 1.0 / math.sqrt(D) if sm_scale is None else float(sm_scale)
    precision = "ieee" if q.dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32 else "tf32"
    _paged_decode[(B, H_kv, splits)](
        q, k_cache, v_cache, block_tables, context_lens, o_part, lse, scale,
        q.stride(0), q.stride(1), *k_cache.stride()[:3], *v_cache.stride()[:3],
        block_tables.stride(0), o_part.stride(0), o_part.stride(1), o_part.stride(2),
        lse.stride(0), lse.stride(1),
        group, split_len,
        PAGE=page, HEAD_DIM=D, BLOCK_D=bd, BLOCK_G=max(16, triton.next_power_of_2(group)), BLOCK_N=block_n,
        UPCAST=INTERPRET, PRECISION=precision, num_warps=4, num_stages=2,
    )  # fmt: skip
    if splits == 1:
        return out
    # merge the splits: o = sum_s 2^(lse_s - lse) o_s with lse = log2 sum_s 2^lse_s
    m = lse.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    w = torch.exp2(lse - m)  # (B, H, S); 0 for empty splits
    w = w / w.sum(dim=-1, keepdim=True).clamp_min(1e-30)
    return (o_part * w.unsqueeze(-1)).sum(dim=2).to(q.dtype)
