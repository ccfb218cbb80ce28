"""FlashAttention-2 forward and backward in Triton (Dao 2023, "FlashAttention-2: Faster Attention
with Better Parallelism and Work Partitioning"), with grouped-query heads.

Forward: one program per (query block, batch*head) streams the key/value blocks through an online
softmax in base 2 (scores scaled by sm_scale*log2(e)) and stores O and the log-sum-exp per row
(base 2, scaled units), which is all the backward needs to rebuild the probabilities.
Backward (atomic-free, three kernels): delta = rowsum(dO * O); a dK/dV kernel with one program per
(key block, batch*kv head) that loops over the query heads of its group and over the query blocks
that see the key block; a dQ kernel with one program per (query block, batch*head) looping over key
blocks. Every loop is split into a phase with no masks (blocks fully visible and in bounds) and a
masked phase (the causal diagonal, the ragged tails).

Causal masking with T_q <= T_k is aligned bottom-right (query i sees keys 0 .. T_k - T_q + i), as in
`fastllm.attention`; with T_q == T_k that is the usual top-left mask.

Matmuls take the input dtype (fp16/bf16 on tensor cores; fp32 as IEEE fp32, or TF32 when
torch.backends.cuda.matmul.allow_tf32 is set) and accumulate in fp32. Under TRITON_INTERPRET=1 every
tile is upcast to fp32 right after loading (the interpreter computes bf16 arithmetic wrongly) and
the probabilities are rounded to the input dtype and back, as the compiled kernel does.

Block sizes: every tl.dot dimension is >= 16 (BLOCK_D = max(16, next_pow2(D))), which the compiler
requires. On CUDA the block sizes are autotuned over a small list pruned to the sequence lengths
and the shared memory of the device; under the interpreter a fixed small configuration is used.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from fastllm._checks import check_bool
from fastllm.kernels import FLASH_HEAD_DIMS
from fastllm.kernels.checks import check_kernel_device, check_qkv

__all__ = ["flash_attention"]

# log2(e): scores are scaled by sm_scale * LOG2E so the softmax runs on exp2. A global read inside
# @triton.jit must be a tl.constexpr (the compiler folds it; a plain float global is refused).
LOG2E = tl.constexpr(math.log2(math.e))


# --------------------------------------------------------------------------------------- forward


@triton.jit
def _fwd_inner(
    acc,
    l_i,
    m_i,
    q,
    K,
    V,
    stride_kt,
    stride_vt,
    offs_m,
    offs_d,
    lo,
    hi,
    T_k,
    causal_off,
    qk_scale,
    HEAD_DIM: tl.constexpr,
    BLOCK_N: tl.constexpr,
    MASK: tl.constexpr,
    CAUSAL: tl.constexpr,
    EVEN_D: tl.constexpr,
    UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
):
    offs_n0 = tl.arange(0, BLOCK_N)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + offs_n0
        kt_ptrs = K + offs_n[None, :] * stride_kt + offs_d[:, None]  # (BLOCK_D, BLOCK_N)
        v_ptrs = V + offs_n[:, None] * stride_vt + offs_d[None, :]  # (BLOCK_N, BLOCK_D)
        if MASK:
            kt = tl.load(kt_ptrs, mask=(offs_n[None, :] < T_k) & (offs_d[:, None] < HEAD_DIM), other=0.0)
            v = tl.load(v_ptrs, mask=(offs_n[:, None] < T_k) & (offs_d[None, :] < HEAD_DIM), other=0.0)
        elif EVEN_D:
            kt = tl.load(kt_ptrs)
            v = tl.load(v_ptrs)
        else:
            kt = tl.load(kt_ptrs, mask=offs_d[:, None] < HEAD_DIM, other=0.0)
            v = tl.load(v_ptrs, mask=offs_d[None, :] < HEAD_DIM, other=0.0)
        if UPCAST:
            kt = kt.to(tl.float32)
        qk = tl.dot(q, kt, input_precision=PRECISION) * qk_scale  # (BLOCK_M, BLOCK_N), base-2 units
        if MASK:
            ok = offs_n[None, :] < T_k
            if CAUSAL:
                ok = ok & (offs_n[None, :] <= offs_m[:, None] + causal_off)
            qk = tl.where(ok, qk, float("-inf"))
        acc, l_i, m_i = online_softmax_step(acc, l_i, m_i, qk, v, UPCAST, PRECISION)
    return acc, l_i, m_i


@triton.jit
def online_softmax_step(acc, l_i, m_i, qk, v, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    """One block of keys into the running (acc, l, m) of FlashAttention's online softmax (base 2):
    rescale by the new row maxima, add p @ v with p cast to v's loaded dtype (fp32 accumulation).
    Shared by the flash forward kernel and the paged decode kernel."""
    m_new = tl.maximum(m_i, tl.max(qk, 1))
    p = tl.math.exp2(qk - m_new[:, None])
    alpha = tl.math.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None]
    p_lo = p.to(v.dtype)
    if UPCAST:  # the interpreter's half-precision arithmetic is wrong: compute in fp32 there
        p_lo = p_lo.to(tl.float32)
        v = v.to(tl.float32)
    acc = tl.dot(p_lo, v, acc, input_precision=PRECISION)
    return acc, l_i, m_new


@triton.jit(do_not_specialize=["T_q", "T_k"])
def _flash_fwd(
    Q,
    K,
    V,
    O,  # noqa: E741 (Q, K, V, O as in the paper)
    LSE,
    sm_scale,
    stride_qb,
    stride_qh,
    stride_qt,
    stride_kb,
    stride_kh,
    stride_kt,
    stride_vb,
    stride_vh,
    stride_vt,
    stride_ob,
    stride_oh,
    stride_ot,
    H,
    GROUP,
    T_q,
    T_k,
    Q_BUCKET,
    K_BUCKET,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr,
    EVEN_D: tl.constexpr,
    UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
):
    pid_m = tl.program_id(0)
    if CAUSAL:  # heaviest query blocks (most keys) first, for load balance
        pid_m = tl.cdiv(T_q, BLOCK_M) - 1 - pid_m
    start_m = pid_m * BLOCK_M
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    hk = h // GROUP
    Q += b * stride_qb + h * stride_qh
    K += b * stride_kb + hk * stride_kh
    V += b * stride_vb + hk * stride_vh
    O += b * stride_ob + h * stride_oh  # noqa: E741

    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    q = tl.load(
        Q + offs_m[:, None] * stride_qt + offs_d[None, :],
        mask=(offs_m[:, None] < T_q) & (offs_d[None, :] < HEAD_DIM),
        other=0.0,
    )
    if UPCAST:
        q = q.to(tl.float32)
    qk_scale = sm_scale * LOG2E
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    causal_off = T_k - T_q
    if CAUSAL:
        # keys 0 .. start_m + causal_off are visible to every row of the block
        full_hi = (tl.minimum(start_m + causal_off + 1, T_k) // BLOCK_N) * BLOCK_N
        hi = tl.minimum(start_m + BLOCK_M + causal_off, T_k)
    else:
        full_hi = (T_k // BLOCK_N) * BLOCK_N
        hi = T_k
    acc, l_i, m_i = _fwd_inner(
        acc,
        l_i,
        m_i,
        q,
        K,
        V,
        stride_kt,
        stride_vt,
        offs_m,
        offs_d,
        0,
        full_hi,
        T_k,
        causal_off,
        qk_scale,
        HEAD_DIM,
        BLOCK_N,
        False,
        CAUSAL,
        EVEN_D,
        UPCAST,
        PRECISION,
    )
    acc, l_i, m_i = _fwd_inner(
        acc,
        l_i,
        m_i,
        q,
        K,
        V,
        stride_kt,
        stride_vt,
        offs_m,
        offs_d,
        full_hi,
        hi,
        T_k,
        causal_off,
        qk_scale,
        HEAD_DIM,
        BLOCK_N,
        True,
        CAUSAL,
        EVEN_D,
        UPCAST,
        PRECISION,
    )
    acc = acc / l_i[:, None]
    m_ok = offs_m < T_q
    tl.store(LSE + bh.to(tl.int64) * T_q + offs_m, m_i + tl.math.log2(l_i), mask=m_ok)
    tl.store(
        O + offs_m[:, None] * stride_ot + offs_d[None, :],
        acc.to(O.dtype.element_ty),
        mask=m_ok[:, None] & (offs_d[None, :] < HEAD_DIM),
    )


# -------------------------------------------------------------------------------------- backward


@triton.jit(do_not_specialize=["T_q"])
def _bwd_preprocess(
    O,  # noqa: E741 (Q, K, V, O as in the paper)
    DO,
    Delta,
    stride_ob,
    stride_oh,
    stride_ot,
    stride_dob,
    stride_doh,
    stride_dot,
    H,
    T_q,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (offs_m[:, None] < T_q) & (offs_d[None, :] < HEAD_DIM)
    o = tl.load(
        O + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_ot + offs_d[None, :],
        mask=mask,
        other=0.0,
    )
    do = tl.load(
        DO + b * stride_dob + h * stride_doh + offs_m[:, None] * stride_dot + offs_d[None, :],
        mask=mask,
        other=0.0,
    )
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(Delta + bh.to(tl.int64) * T_q + offs_m, delta, mask=offs_m < T_q)


@triton.jit
def _bwd_kv_inner(
    dk,
    dv,
    k,
    v,
    Q,
    DO,
    LSE,
    Delta,
    stride_qt,
    stride_dot,
    offs_n,
    offs_d,
    lo,
    hi,
    T_q,
    causal_off,
    qk_scale,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    MASK: tl.constexpr,
    CAUSAL: tl.constexpr,
    EVEN_D: tl.constexpr,
    UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
):
    offs_m0 = tl.arange(0, BLOCK_M)
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + offs_m0
        qt_ptrs = Q + offs_m[None, :] * stride_qt + offs_d[:, None]  # (BLOCK_D, BLOCK_M)
        do_ptrs = DO + offs_m[:, None] * stride_dot + offs_d[None, :]  # (BLOCK_M, BLOCK_D)
        if MASK:
            m_ok = offs_m < T_q
            qt = tl.load(qt_ptrs, mask=m_ok[None, :] & (offs_d[:, None] < HEAD_DIM), other=0.0)
            do = tl.load(do_ptrs, mask=m_ok[:, None] & (offs_d[None, :] < HEAD_DIM), other=0.0)
            lse = tl.load(LSE + offs_m, mask=m_ok, other=0.0)
            delta = tl.load(Delta + offs_m, mask=m_ok, other=0.0)
        else:
            if EVEN_D:
                qt = tl.load(qt_ptrs)
                do = tl.load(do_ptrs)
            else:
                qt = tl.load(qt_ptrs, mask=offs_d[:, None] < HEAD_DIM, other=0.0)
                do = tl.load(do_ptrs, mask=offs_d[None, :] < HEAD_DIM, other=0.0)
            lse = tl.load(LSE + offs_m)
            delta = tl.load(Delta + offs_m)
        dtype = qt.dtype
        if UPCAST:
            qt = qt.to(tl.float32)
            do = do.to(tl.float32)
        qkt = tl.dot(k, qt, input_precision=PRECISION)  # (BLOCK_N, BLOCK_M)
        pt = tl.math.exp2(qkt * qk_scale - lse[None, :])
        if MASK:
            ok = m_ok[None, :]
            if CAUSAL:
                ok = ok & (offs_n[:, None] <= offs_m[None, :] + causal_off)
            pt = tl.where(ok, pt, 0.0)
        pt_lo = pt.to(dtype)
        if UPCAST:
            pt_lo = pt_lo.to(tl.float32)
        dv = tl.dot(pt_lo, do, dv, input_precision=PRECISION)
        dpt = tl.dot(v, tl.trans(do), input_precision=PRECISION)  # (BLOCK_N, BLOCK_M)
        dst = pt * (dpt - delta[None, :])
        dst_lo = dst.to(dtype)
        if UPCAST:
            dst_lo = dst_lo.to(tl.float32)
        dk = tl.dot(dst_lo, tl.trans(qt), dk, input_precision=PRECISION)
    return dk, dv


@triton.jit(do_not_specialize=["T_q", "T_k"])
def _flash_bwd_dkdv(
    Q,
    K,
    V,
    DO,
    LSE,
    Delta,
    DK,
    DV,
    sm_scale,
    stride_qb,
    stride_qh,
    stride_qt,
    stride_kb,
    stride_kh,
    stride_kt,
    stride_vb,
    stride_vh,
    stride_vt,
    stride_dob,
    stride_doh,
    stride_dot,
    stride_dkb,
    stride_dkh,
    stride_dkt,
    stride_dvb,
    stride_dvh,
    stride_dvt,
    H,
    H_KV,
    GROUP,
    T_q,
    T_k,
    Q_BUCKET,
    K_BUCKET,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr,
    EVEN_D: tl.constexpr,
    UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
):
    start_n = tl.program_id(0) * BLOCK_N
    bhk = tl.program_id(1)
    b = (bhk // H_KV).to(tl.int64)
    hk = (bhk % H_KV).to(tl.int64)
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    kv_mask = (offs_n[:, None] < T_k) & (offs_d[None, :] < HEAD_DIM)
    K += b * stride_kb + hk * stride_kh
    V += b * stride_vb + hk * stride_vh
    k = tl.load(K + offs_n[:, None] * stride_kt + offs_d[None, :], mask=kv_mask, other=0.0)
    v = tl.load(V + offs_n[:, None] * stride_vt + offs_d[None, :], mask=kv_mask, other=0.0)
    if UPCAST:
        k = k.to(tl.float32)
        v = v.to(tl.float32)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    qk_scale = sm_scale * LOG2E

    causal_off = T_k - T_q
    q_ceil = tl.cdiv(T_q, BLOCK_M) * BLOCK_M
    q_even = (T_q // BLOCK_M) * BLOCK_M
    # query blocks: [m_lo, masked_hi) partly see this key block (causal diagonal), [m_full, full_hi)
    # fully see it and are in bounds, [full_hi, q_ceil) hold the ragged tail of the queries
    if CAUSAL:
        # rows m >= start_n - causal_off see part of the key block, rows
        # m >= start_n + BLOCK_N - 1 - causal_off all of it
        m_lo = (tl.maximum(start_n - causal_off, 0) // BLOCK_M) * BLOCK_M
        m_full = tl.cdiv(tl.maximum(start_n + BLOCK_N - 1 - causal_off, 0), BLOCK_M) * BLOCK_M
        masked_hi = tl.minimum(m_full, q_ceil)
        full_hi = tl.maximum(m_full, q_even)
    else:
        m_lo = 0
        m_full = 0
        masked_hi = 0
        full_hi = q_even
    for g in range(0, GROUP):
        h = hk * GROUP + g
        bh = b * H + h
        Qh = Q + b * stride_qb + h * stride_qh
        DOh = DO + b * stride_dob + h * stride_doh
        LSEh = LSE + bh * T_q
        Dh = Delta + bh * T_q
        dk, dv = _bwd_kv_inner(
            dk,
            dv,
            k,
            v,
            Qh,
            DOh,
            LSEh,
            Dh,
            stride_qt,
            stride_dot,
            offs_n,
            offs_d,
            m_lo,
            masked_hi,
            T_q,
            causal_off,
            qk_scale,
            HEAD_DIM,
            BLOCK_M,
            True,
            CAUSAL,
            EVEN_D,
            UPCAST,
            PRECISION,
        )
        dk, dv = _bwd_kv_inner(
            dk,
            dv,
            k,
            v,
            Qh,
            DOh,
            LSEh,
            Dh,
            stride_qt,
            stride_dot,
            offs_n,
            offs_d,
            m_full,
            full_hi,
            T_q,
            causal_off,
            qk_scale,
            HEAD_DIM,
            BLOCK_M,
            False,
            CAUSAL,
            EVEN_D,
            UPCAST,
            PRECISION,
        )
        dk, dv = _bwd_kv_inner(
            dk,
            dv,
            k,
            v,
            Qh,
            DOh,
            LSEh,
            Dh,
            stride_qt,
            stride_dot,
            offs_n,
            offs_d,
            full_hi,
            q_ceil,
            T_q,
            causal_off,
            qk_scale,
            HEAD_DIM,
            BLOCK_M,
            True,
            CAUSAL,
            EVEN_D,
            UPCAST,
            PRECISION,
        )
    dk = dk * sm_scale
    tl.store(
        DK + b * stride_dkb + hk * stride_dkh + offs_n[:, None] * stride_dkt + offs_d[None, :],
        dk.to(DK.dtype.element_ty),
        mask=kv_mask,
    )
    tl.store(
        DV + b * stride_dvb + hk * stride_dvh + offs_n[:, None] * stride_dvt + offs_d[None, :],
        dv.to(DV.dtype.element_ty),
        mask=kv_mask,
    )


@triton.jit
def _bwd_q_inner(
    dq,
    q,
    do,
    lse,
    delta,
    K,
    V,
    stride_kt,
    stride_vt,
    offs_m,
    offs_d,
    lo,
    hi,
    T_k,
    causal_off,
    qk_scale,
    HEAD_DIM: tl.constexpr,
    BLOCK_N: tl.constexpr,
    MASK: tl.constexpr,
    CAUSAL: tl.constexpr,
    EVEN_D: tl.constexpr,
    UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
):
    offs_n0 = tl.arange(0, BLOCK_N)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + offs_n0
        kt_ptrs = K + offs_n[None, :] * stride_kt + offs_d[:, None]  # (BLOCK_D, BLOCK_N)
        vt_ptrs = V + offs_n[None, :] * stride_vt + offs_d[:, None]  # (BLOCK_D, BLOCK_N)
        if MASK:
            mask = (offs_n[None, :] < T_k) & (offs_d[:, None] < HEAD_DIM)
            kt = tl.load(kt_ptrs, mask=mask, other=0.0)
            vt = tl.load(vt_ptrs, mask=mask, other=0.0)
        elif EVEN_D:
            kt = tl.load(kt_ptrs)
            vt = tl.load(vt_ptrs)
        else:
            kt = tl.load(kt_ptrs, mask=offs_d[:, None] < HEAD_DIM, other=0.0)
            vt = tl.load(vt_ptrs, mask=offs_d[:, None] < HEAD_DIM, other=0.0)
        dtype = kt.dtype
        if UPCAST:
            kt = kt.to(tl.float32)
            vt = vt.to(tl.float32)
        qk = tl.dot(q, kt, input_precision=PRECISION)
        p = tl.math.exp2(qk * qk_scale - lse[:, None])
        if MASK:
            ok = offs_n[None, :] < T_k
            if CAUSAL:
                ok = ok & (offs_n[None, :] <= offs_m[:, None] + causal_off)
            p = tl.where(ok, p, 0.0)
        dp = tl.dot(do, vt, input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        ds_lo = ds.to(dtype)
        if UPCAST:
            ds_lo = ds_lo.to(tl.float32)
        dq = tl.dot(ds_lo, tl.trans(kt), dq, input_precision=PRECISION)
    return dq


@triton.jit(do_not_specialize=["T_q", "T_k"])
def _flash_bwd_dq(
    Q,
    K,
    V,
    DO,
    LSE,
    Delta,
    DQ,
    sm_scale,
    stride_qb,
    stride_qh,
    stride_qt,
    stride_kb,
    stride_kh,
    stride_kt,
    stride_vb,
    stride_vh,
    stride_vt,
    stride_dob,
    stride_doh,
    stride_dot,
    stride_dqb,
    stride_dqh,
    stride_dqt,
    H,
    GROUP,
    T_q,
    T_k,
    Q_BUCKET,
    K_BUCKET,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr,
    EVEN_D: tl.constexpr,
    UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
):
    pid_m = tl.program_id(0)
    if CAUSAL:
        pid_m = tl.cdiv(T_q, BLOCK_M) - 1 - pid_m
    start_m = pid_m * BLOCK_M
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    hk = h // GROUP
    K += b * stride_kb + hk * stride_kh
    V += b * stride_vb + hk * stride_vh
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m_ok = offs_m < T_q
    mask = m_ok[:, None] & (offs_d[None, :] < HEAD_DIM)
    q = tl.load(
        Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qt + offs_d[None, :],
        mask=mask,
        other=0.0,
    )
    do = tl.load(
        DO + b * stride_dob + h * stride_doh + offs_m[:, None] * stride_dot + offs_d[None, :],
        mask=mask,
        other=0.0,
    )
    if UPCAST:
        q = q.to(tl.float32)
        do = do.to(tl.float32)
    lse = tl.load(LSE + bh.to(tl.int64) * T_q + offs_m, mask=m_ok, other=0.0)
    delta = tl.load(Delta + bh.to(tl.int64) * T_q + offs_m, mask=m_ok, other=0.0)
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    qk_scale = sm_scale * LOG2E

    causal_off = T_k - T_q
    if CAUSAL:
        full_hi = (tl.minimum(start_m + causal_off + 1, T_k) // BLOCK_N) * BLOCK_N
        hi = tl.minimum(start_m + BLOCK_M + causal_off, T_k)
    else:
        full_hi = (T_k // BLOCK_N) * BLOCK_N
        hi = T_k
    dq = _bwd_q_inner(
        dq,
        q,
        do,
        lse,
        delta,
        K,
        V,
        stride_kt,
        stride_vt,
        offs_m,
        offs_d,
        0,
        full_hi,
        T_k,
        causal_off,
        qk_scale,
        HEAD_DIM,
        BLOCK_N,
        False,
        CAUSAL,
        EVEN_D,
        UPCAST,
        PRECISION,
    )
    dq = _bwd_q_inner(
        dq,
        q,
        do,
        lse,
        delta,
        K,
        V,
        stride_kt,
        stride_vt,
        offs_m,
        offs_d,
        full_hi,
        hi,
        T_k,
        causal_off,
        qk_scale,
        HEAD_DIM,
        BLOCK_N,
        True,
        CAUSAL,
        EVEN_D,
        UPCAST,
        PRECISION,
    )
    dq = dq * sm_scale
    tl.store(
        DQ + b * stride_dqb + h * stride_dqh + offs_m[:, None] * stride_dqt + offs_d[None, :],
        dq.to(DQ.dtype.element_ty),
        mask=mask,
    )


# ------------------------------------------------------------------------------------ autotuning

INTERPRET = type(_flash_fwd).__name__ == "InterpretedFunction"  # TRITON_INTERPRET=1 at import time

# (BLOCK_M, BLOCK_N, num_warps, num_stages); BLOCK_M tiles queries, BLOCK_N tiles keys.
_FWD = [
    (128, 64, 4, 3),
    (128, 64, 8, 3),
    (128, 128, 8, 3),
    (128, 32, 4, 4),
    (128, 64, 4, 4),
    (64, 64, 4, 3),
    (64, 32, 4, 4),
    (64, 128, 4, 3),
    (32, 32, 4, 2),
    (32, 64, 4, 2),
]
_BWD_KV = [
    (32, 128, 4, 3),
    (32, 128, 8, 3),
    (32, 128, 8, 2),
    (16, 128, 8, 3),
    (64, 64, 8, 3),
    (32, 64, 8, 3),
    (32, 64, 4, 3),
    (16, 64, 4, 3),
    (32, 32, 4, 2),
]
_BWD_Q = [
    (128, 32, 4, 3),
    (128, 64, 8, 2),
    (128, 32, 8, 3),
    (64, 64, 4, 3),
    (64, 32, 4, 3),
    (32, 32, 4, 2),
    (128, 64, 4, 2),
]
# Under the interpreter (tests): one fixed small configuration per kernel, every dot dimension >= 16.
INTERPRET_BLOCKS = {"fwd": (32, 16), "bwd_kv": (16, 32), "bwd_q": (32, 16)}
_KEY = ["Q_BUCKET", "K_BUCKET", "HEAD_DIM", "CAUSAL", "GROUP"]


def _configs(table):
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s) for m, n, w, s in table]


_SMEM_CACHE: dict = {}


def _smem_limit(device) -> int:
    if device not in _SMEM_CACHE:
        try:
            props = torch.cuda.get_device_properties(device)
            _SMEM_CACHE[device] = int(getattr(props, "shared_memory_per_block_optin", 0)) or 99 * 1024
        except Exception:  # no CUDA: no limit to enforce
            _SMEM_CACHE[device] = 1 << 30
    return _SMEM_CACHE[device]


def _smem_estimate(kind: str, bm: int, bn: int, stages: int, bd: int, es: int) -> int:
    """Shared memory (bytes) of one program: an upper bound, to within 1 KiB, of what triton 3.9
    allocates for sm_90 (measured in bf16 at head_dim 128 against every configuration's compiled
    metadata.shared; exact for the pipelined configurations, generous for the 2-stage 32x32 ones)."""
    if kind == "bwd_kv":  # k, v resident; q, do pipelined over num_stages
        return es * (2 * bn * bd + stages * 2 * bm * bd)
    if kind == "bwd_q":  # q, do resident; k, v pipelined
        return es * (2 * bm * bd + stages * 2 * bn * bd)
    return es * (bm * bd + stages * 2 * bn * bd)  # fwd: q resident; k, v pipelined


def _pruner(kind: str):
    """An early_config_prune: drop configurations whose blocks exceed the padded lengths or whose
    pipelined tiles do not fit the device's shared memory for this head_dim and dtype."""

    def prune(configs, named_args, **kwargs):
        args = {**named_args, **kwargs}
        q_pad = max(32, args["Q_BUCKET"])
        k_pad = max(32, args["K_BUCKET"])
        bd = args["BLOCK_D"]
        es = args["Q"].element_size()
        limit = _smem_limit(args["Q"].device)
        kept = []
        for c in configs:
            bm, bn, st = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_stages
            if bm > q_pad or bn > k_pad:
                continue
            if _smem_estimate(kind, bm, bn, st, bd, es) + 1024 <= limit:
                kept.append(c)
        if not kept:
            kept = [min(configs, key=lambda c: (c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"], c.num_stages))]
        return kept

    return prune


_fwd_tuned = triton.autotune(
    _configs(_FWD), key=_KEY, prune_configs_by={"early_config_prune": _pruner("fwd")}
)(_flash_fwd)
_bwd_kv_tuned = triton.autotune(
    _configs(_BWD_KV), key=_KEY, prune_configs_by={"early_config_prune": _pruner("bwd_kv")}
)(_flash_bwd_dkdv)
_bwd_q_tuned = triton.autotune(
    _configs(_BWD_Q), key=_KEY, prune_configs_by={"early_config_prune": _pruner("bwd_q")}
)(_flash_bwd_dq)


# ----------------------------------------------------------------------------------- host side


def _bucket(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _precision(dtype: torch.dtype) -> str:
    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return "ieee"
    return "tf32"  # the default; ignored for fp16/bf16 operands


def _launch(kernel, tuned, kind, grid_fn, args, meta, blocks):
    """Run `kernel` with fixed (BLOCK_M, BLOCK_N) (given, or the interpreter's), else autotuned."""
    if blocks is None and INTERPRET:
        blocks = INTERPRET_BLOCKS[kind]
    if blocks is None:
        tuned[lambda m: grid_fn(m["BLOCK_M"], m["BLOCK_N"])](*args, **meta)
    else:
        bm, bn = blocks
        kernel[grid_fn(bm, bn)](*args, **meta, BLOCK_M=bm, BLOCK_N=bn, num_warps=4, num_stages=2)


def _check(q, k, v, causal):
    check_bool(causal, "causal")
    _, T_q, _, T_k = check_qkv(q, k, v, "flash_attention")
    D = q.shape[3]
    lo, hi = FLASH_HEAD_DIMS
    if not lo <= D <= hi:
        raise ValueError(f"flash_attention supports head_dim {lo} to {hi}, got {D}")
    if (
        q.dtype not in (torch.float16, torch.bfloat16, torch.float32)
        or k.dtype != q.dtype
        or v.dtype != q.dtype
    ):
        raise ValueError(
            "q, k, v must share one dtype among float16, bfloat16, float32; "
            f"got {q.dtype}, {k.dtype}, {v.dtype}"
        )
    if causal and T_q > T_k:
        raise ValueError(f"causal attention needs T_q <= T_k, got T_q={T_q} and T_k={T_k}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    check_kernel_device(q.device, INTERPRET)


def _lastdim_contiguous(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def _meta(D: int, causal: bool, dtype: torch.dtype) -> dict:
    bd = max(16, triton.next_power_of_2(D))
    return dict(
        HEAD_DIM=D,
        BLOCK_D=bd,
        CAUSAL=bool(causal),
        EVEN_D=bd == D,
        UPCAST=INTERPRET,
        PRECISION=_precision(dtype),
    )


def _forward(q, k, v, causal, sm_scale, blocks=None):
    B, H, T_q, D = q.shape
    H_kv, T_k = k.shape[1], k.shape[2]
    o = torch.empty_like(q, memory_format=torch.contiguous_format)
    lse = torch.empty((B, H, T_q), device=q.device, dtype=torch.float32)
    if o.numel() == 0:
        return o, lse
    args = (
        q, k, v, o, lse, sm_scale,
        *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *o.stride()[:3],
        H, H // H_kv, T_q, T_k, _bucket(T_q), _bucket(T_k),
    )  # fmt: skip
    _launch(
        _flash_fwd,
        _fwd_tuned,
        "fwd",
        lambda bm, bn: (triton.cdiv(T_q, bm), B * H),
        args,
        _meta(D, causal, q.dtype),
        blocks,
    )
    return o, lse


def _backward(do, q, k, v, o, lse, causal, sm_scale, blocks=None):
    blocks = blocks or {}
    B, H, T_q, D = q.shape
    H_kv, T_k = k.shape[1], k.shape[2]
    do = _lastdim_contiguous(do)
    dq = torch.empty_like(q, memory_format=torch.contiguous_format)
    dk = torch.empty_like(k, memory_format=torch.contiguous_format)
    dv = torch.empty_like(v, memory_format=torch.contiguous_format)
    if q.numel() == 0 or k.numel() == 0:
        return dq.zero_(), dk.zero_(), dv.zero_()
    delta = torch.empty_like(lse)
    meta = _meta(D, causal, q.dtype)
    pre_m = 32 if INTERPRET else 64
    _bwd_preprocess[(triton.cdiv(T_q, pre_m), B * H)](
        o, do, delta, *o.stride()[:3], *do.stride()[:3], H, T_q,
        HEAD_DIM=D, BLOCK_D=meta["BLOCK_D"], BLOCK_M=pre_m,
    )  # fmt: skip
    common = (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *do.stride()[:3])
    kv_args = (
        q, k, v, do, lse, delta, dk, dv, sm_scale, *common, *dk.stride()[:3], *dv.stride()[:3],
        H, H_kv, H // H_kv, T_q, T_k, _bucket(T_q), _bucket(T_k),
    )  # fmt: skip
    _launch(
        _flash_bwd_dkdv,
        _bwd_kv_tuned,
        "bwd_kv",
        lambda bm, bn: (triton.cdiv(T_k, bn), B * H_kv),
        kv_args,
        meta,
        blocks.get("bwd_kv"),
    )
    q_args = (
        q, k, v, do, lse, delta, dq, sm_scale, *common, *dq.stride()[:3],
        H, H // H_kv, T_q, T_k, _bucket(T_q), _bucket(T_k),
    )  # fmt: skip
    _launch(
        _flash_bwd_dq,
        _bwd_q_tuned,
        "bwd_q",
        lambda bm, bn: (triton.cdiv(T_q, bm), B * H),
        q_args,
        meta,
        blocks.get("bwd_q"),
    )
    return dq, dk, dv


class FlashAttentionFunction(torch.autograd.Function):
    """Autograd wrapper: forward saves q, k, v, O and the log-sum-exp; backward runs the three
    backward kernels. `blocks` (tests) fixes {"fwd"|"bwd_kv"|"bwd_q": (BLOCK_M, BLOCK_N)}."""

    @staticmethod
    def forward(ctx, q, k, v, causal, sm_scale, blocks):
        o, lse = _forward(q, k, v, causal, sm_scale, (blocks or {}).get("fwd"))
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.causal, ctx.sm_scale, ctx.blocks = causal, sm_scale, blocks
        return o

    @staticmethod
    def backward(ctx, do):
        if torch.is_grad_enabled():  # create_graph=True: the kernels' gradients have no graph of their own
            raise RuntimeError(
                "flash_attention has no double backward (create_graph=True); use fastllm.attention(..., "
                "backend='sdpa') for higher-order gradients"
            )
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = _backward(do, q, k, v, o, lse, ctx.causal, ctx.sm_scale, ctx.blocks)
        return dq, dk, dv, None, None, None


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = True,
    sm_scale: float | None = None,
    _blocks: dict | None = None,
) -> torch.Tensor:
    """softmax(q k^T * sm_scale [+ causal mask]) v; q (B, H, T_q, D), k and v (B, H_kv, T_k, D).

    sm_scale defaults to 1/sqrt(D). Differentiable in q, k and v. Returns (B, H, T_q, D), q's dtype.
    """
    _check(q, k, v, causal)
    q, k, v = (_lastdim_contiguous(t) for t in (q, k, v))
    scale = 1.0 / math.sqrt(q.shape[-1]) if sm_scale is None else float(sm_scale)
    return FlashAttentionFunction.apply(q, k, v, bool(causal), scale, _blocks)
