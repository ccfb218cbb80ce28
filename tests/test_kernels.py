"""The Triton attention kernels of fastllm.kernels (issue #6), run on the CPU by triton's interpreter.

Triton decides between compiling and interpreting when `@triton.jit` runs, for its own standard
library (tl.sum, tl.cdiv, ...) when `triton.language` is first imported: TRITON_INTERPRET=1 must
be set before triton is imported at all (and stay set: triton reads it again in lazy imports).
This module therefore sets it at import time, for the session, when that is safe (triton not
imported yet and no CUDA device, so nothing could be compiled anyway) and runs the kernels
in-process; otherwise (a GPU machine, or triton imported
earlier) it runs itself once more in a child pytest with the variable set, and the in-process
interpreter tests skip. Every result is compared with float64 math: outputs and the gradients of
q, k and v, causal (top-left and bottom-right) and not, grouped query heads, head_dim 16 to 128,
lengths that are not multiples of the block sizes, fp32/fp16/bf16 inputs (the kernels upcast tiles
after loading under the interpreter, whose bf16 arithmetic is wrong), the paged decode kernel
against the gather + SDPA path, and `fastllm.attention(backend=...)`: "triton" runs the kernel,
"auto" and "sdpa" run SDPA on CPU tensors, the rule of "auto" on stand-ins for CUDA tensors, and
the errors. Block sizes stay >= 16 in every tl.dot dimension, which is what the compiler accepts
(test_kernels_compile_for_sm90 compiles them). The tests marked for CUDA run only on a GPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

CHILD_FLAG = "FASTLLM_KERNEL_TESTS_CHILD"
if os.environ.get(CHILD_FLAG) == "1" or ("triton" not in sys.modules and not torch.cuda.is_available()):
    # for the whole session: triton reads it again later (lazy imports of its own modules)
    os.environ["TRITON_INTERPRET"] = "1"
triton = pytest.importorskip("triton", reason="triton not installed")
INTERPRETING = type(triton.language.standard.sum).__name__ == "InterpretedFunction"
if INTERPRETING:
    from fastllm.kernels import flash, paged

REPO = Path(__file__).resolve().parents[1]
interpreted = pytest.mark.skipif(
    not INTERPRETING,
    reason="triton runs compiled in this process; test_interpreter_in_child_process runs these",
)
if INTERPRETING:
    assert flash.INTERPRET and paged.INTERPRET, "fastllm.kernels was imported before TRITON_INTERPRET was set"


# (atol, rtol) per dtype for outputs and for gradients, against float64 math on the same inputs
TOL = {
    torch.float32: ((2e-5, 1e-4), (5e-5, 1e-4)),
    torch.float16: ((4e-3, 4e-3), (8e-3, 8e-3)),
    torch.bfloat16: ((3e-2, 3e-2), (8e-2, 4e-2)),
}


def reference(q, k, v, causal: bool) -> torch.Tensor:
    """float64 softmax(q k^T / sqrt(D)) v with repeated kv heads and a bottom-right causal mask."""
    q, k, v = q.double(), k.double(), v.double()
    g = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)
    s = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5  # (B, H, T_q, T_k)
    if causal:
        T_q, T_k = s.shape[-2:]
        s = s.masked_fill(~torch.ones(T_q, T_k, dtype=torch.bool).tril(T_k - T_q), float("-inf"))
    return s.softmax(-1) @ v


def make_qkv(B, H, H_kv, T_q, T_k, D, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, T_q, D, generator=g).to(dtype)
    k = torch.randn(B, H_kv, T_k, D, generator=g).to(dtype)
    v = torch.randn(B, H_kv, T_k, D, generator=g).to(dtype)
    do = torch.randn(B, H, T_q, D, generator=g).to(dtype)
    return q, k, v, do


def check_flash(q, k, v, do, causal, blocks=None):
    dtype = q.dtype
    (atol_o, rtol_o), (atol_g, rtol_g) = TOL[dtype]
    q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
    out = flash.flash_attention(q, k, v, causal=causal, _blocks=blocks)
    assert out.dtype == dtype and out.shape == q.shape
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), do)

    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = reference(q64, k64, v64, causal)
    rq, rk, rv = torch.autograd.grad(ref, (q64, k64, v64), do.double())
    torch.testing.assert_close(out.double(), ref, atol=atol_o, rtol=rtol_o, msg=lambda m: f"output: {m}")
    for name, got, want in (("dq", dq, rq), ("dk", dk, rk), ("dv", dv, rv)):
        assert got.dtype == dtype and got.shape == want.shape
        torch.testing.assert_close(
            got.double(), want, atol=atol_g, rtol=rtol_g, msg=lambda m, n=name: f"{n}: {m}"
        )


SHAPES = {  # B, H, H_kv, T, D
    "mha-T37-D32": (1, 2, 2, 37, 32),
    "gqa-T57-D64": (2, 4, 2, 57, 64),
    "mqa-T50-D48": (1, 3, 1, 50, 48),  # head_dim not a power of two, group of 3
}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@interpreted
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_flash_forward_backward(shape, causal, dtype):
    B, H, H_kv, T, D = SHAPES[shape]
    q, k, v, do = make_qkv(B, H, H_kv, T, T, D, DTYPES[dtype])
    check_flash(q, k, v, do, causal)


BLOCKS = {
    "m16n32": {"fwd": (16, 32), "bwd_kv": (32, 16), "bwd_q": (16, 32)},
    "m32n32": {"fwd": (32, 32), "bwd_kv": (32, 32), "bwd_q": (32, 32)},
    "m64n16": {"fwd": (64, 16), "bwd_kv": (16, 64), "bwd_q": (64, 16)},
}


@interpreted
@pytest.mark.parametrize("T", [64, 33])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
@pytest.mark.parametrize("blocks", BLOCKS)
def test_flash_block_sizes(blocks, causal, T):
    """Other (BLOCK_M, BLOCK_N) than the interpreter's default, lengths on and off the block grid."""
    q, k, v, do = make_qkv(1, 2, 1, T, T, 32, torch.float32, seed=T)
    check_flash(q, k, v, do, causal, blocks=BLOCKS[blocks])


@interpreted
@pytest.mark.parametrize("T_q", [1, 20, 45])
def test_flash_causal_bottom_right(T_q):
    """T_q < T_k: the queries are the last T_q positions (as when decoding with a KV cache)."""
    q, k, v, do = make_qkv(2, 4, 2, T_q, 45, 32, torch.float32, seed=T_q)
    check_flash(q, k, v, do, True)


@interpreted
@pytest.mark.parametrize(
    "B, H, H_kv, T_q, T_k, D, dtype, causal",
    [
        (1, 2, 2, 23, 23, 16, "fp32", True),  # the smallest head_dim: BLOCK_D == D == 16
        (1, 4, 1, 33, 33, 96, "fp16", False),  # padded to BLOCK_D 128, group of 4
        (1, 2, 1, 40, 40, 128, "bf16", True),  # the largest head_dim
        (1, 2, 1, 45, 6, 32, "fp32", False),  # more queries than keys (only without the causal mask)
    ],
    ids=["d16", "d96-g4", "d128-bf16", "tq-gt-tk"],
)
def test_flash_head_dims_and_shapes(B, H, H_kv, T_q, T_k, D, dtype, causal):
    q, k, v, do = make_qkv(B, H, H_kv, T_q, T_k, D, DTYPES[dtype], seed=D)
    check_flash(q, k, v, do, causal)


@interpreted
def test_flash_non_causal_cross_lengths():
    q, k, v, do = make_qkv(1, 2, 2, 21, 50, 32, torch.float32, seed=3)
    check_flash(q, k, v, do, False)


@interpreted
@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_flash_strided_inputs(dtype):
    """q, k, v as MiniGPT passes them: (B, T, H, D) projections viewed as (B, H, T, D)."""
    B, T, H, H_kv, D = 2, 29, 4, 2, 32
    g = torch.Generator().manual_seed(5)
    dt = DTYPES[dtype]
    q = torch.randn(B, T, H, D, generator=g).to(dt).transpose(1, 2)
    kv = torch.randn(B, T, 2, H_kv, D, generator=g).to(dt)
    k, v = kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)
    do = torch.randn(B, T, H, D, generator=g).to(dt).transpose(1, 2)
    assert not q.is_contiguous() and not k.is_contiguous()
    check_flash(q, k, v, do, True)


@interpreted
def test_flash_sm_scale_and_one_row_tail_blocks():
    """A custom softmax scale (output and gradients); T = 17 with 16x16 blocks leaves a last query
    block of one row and a last key block of one key in every kernel."""
    q, k, v, do = make_qkv(1, 2, 1, 17, 17, 32, torch.float32, seed=17)
    blocks = {"fwd": (16, 16), "bwd_kv": (16, 16), "bwd_q": (16, 16)}
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    out = flash.flash_attention(q, k, v, causal=True, sm_scale=0.5 / 32**0.5, _blocks=blocks)
    grads = torch.autograd.grad(out, (q, k, v), do)
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = reference(q64 * 0.5, k64, v64, True)  # scale 0.5/sqrt(D) == q halved at 1/sqrt(D)
    torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=1e-4)
    for got, want in zip(grads, torch.autograd.grad(ref, (q64, k64, v64), do.double())):
        torch.testing.assert_close(got.double(), want, atol=5e-5, rtol=1e-4)


@interpreted
def test_flash_double_backward_raises():
    """The backward kernels are not differentiable: asking for a graph of the gradients (as a
    gradient penalty does) must raise, not give a dq whose own gradient is silently zero."""
    q, k, v, do = make_qkv(1, 1, 1, 16, 16, 32, torch.float32)
    q.requires_grad_()
    out = flash.flash_attention(q, k, v)
    with pytest.raises(RuntimeError, match="no double backward"):
        torch.autograd.grad(out, q, do, create_graph=True)


@pytest.mark.parametrize(
    "shapes, kwargs, match",
    [
        (((1, 2, 8, 8), (1, 2, 8, 8)), {}, "head_dim 16 to 128"),
        (((1, 3, 8, 32), (1, 2, 8, 32)), {}, "must divide"),
        (((1, 2, 9, 32), (1, 2, 8, 32)), {}, "T_q <= T_k"),
        (((1, 2, 8), (1, 2, 8, 32)), {}, "4-d"),
        (((1, 2, 8, 32), (1, 2, 8, 32)), {"dtype": torch.float64}, "dtype"),
    ],
)
@interpreted
def test_flash_rejects_bad_inputs(shapes, kwargs, match):
    qs, ks = shapes
    dtype = kwargs.get("dtype", torch.float32)
    q, k = torch.zeros(qs, dtype=dtype), torch.zeros(ks, dtype=dtype)
    with pytest.raises(ValueError, match=match):
        flash.flash_attention(q, k, k, causal=True)
    with pytest.raises(TypeError, match="causal must be a bool"):
        flash.flash_attention(q, k, k, causal=None)


# ------------------------------------------------------------------- fastllm.attention(backend=...)


def _count_kernel_calls(monkeypatch) -> list:
    """Count the calls that reach the flash kernel's entry point (fastllm.kernels.flash)."""
    calls = []
    real = flash.flash_attention

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(flash, "flash_attention", spy)
    return calls


@interpreted
@pytest.mark.parametrize(
    "B, H, H_kv, T_q, T_k, D, causal",
    [(2, 4, 2, 24, 24, 32, True), (1, 3, 1, 9, 40, 48, True), (1, 2, 2, 30, 19, 32, False)],
    ids=["gqa-causal", "mqa-bottom-right", "mha-full-cross"],
)
def test_attention_backend_triton_under_interpreter(monkeypatch, B, H, H_kv, T_q, T_k, D, causal):
    """backend="triton" runs the kernel (on CPU tensors: the interpreter) and matches float64
    math in the output and the gradients of q, k and v."""
    from fastllm import attention

    calls = _count_kernel_calls(monkeypatch)
    q, k, v, do = make_qkv(B, H, H_kv, T_q, T_k, D, torch.float32, seed=T_q + T_k)
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    out = attention(q, k, v, causal=causal, backend="triton")
    assert calls == [1]
    grads = torch.autograd.grad(out, (q, k, v), do)
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = reference(q64, k64, v64, causal)
    (atol_o, rtol_o), (atol_g, rtol_g) = TOL[torch.float32]
    torch.testing.assert_close(out.double(), ref, atol=atol_o, rtol=rtol_o)
    for got, want in zip(grads, torch.autograd.grad(ref, (q64, k64, v64), do.double())):
        torch.testing.assert_close(got.double(), want, atol=atol_g, rtol=rtol_g)


@interpreted
@pytest.mark.parametrize("backend", ["auto", "sdpa"])
def test_attention_auto_and_sdpa_use_sdpa_on_cpu(monkeypatch, backend):
    """On CPU tensors "auto" is SDPA (even with triton importable and the interpreter on), as is
    "sdpa"; both match float64 math, with and without a mask."""
    from fastllm import attention

    calls = _count_kernel_calls(monkeypatch)
    q, k, v, _ = make_qkv(1, 4, 2, 7, 12, 32, torch.float32, seed=1)
    torch.testing.assert_close(
        attention(q, k, v, causal=True, backend=backend).double(),
        reference(q, k, v, True),
        atol=2e-5,
        rtol=1e-4,
    )
    mask = torch.ones(7, 12, dtype=torch.bool).tril(12 - 7)  # the bottom-right causal mask, explicitly
    torch.testing.assert_close(
        attention(q, k, v, causal=False, attn_mask=mask, backend=backend).double(), reference(q, k, v, True),
        atol=2e-5, rtol=1e-4,
    )  # fmt: skip
    assert calls == []


@interpreted
@pytest.mark.parametrize(
    "kwargs, D, exc, match",
    [
        ({"backend": "cuda"}, 32, ValueError, "'cuda'"),
        ({"backend": None}, 32, TypeError, "backend must be one of .*NoneType"),
        ({"causal": 1}, 32, TypeError, "causal must be a bool, not int"),
        ({"dropout_p": "0.1"}, 32, TypeError, "dropout_p must be a number, not str"),
        ({"backend": "Triton"}, 32, ValueError, "'Triton'"),
        (
            {"backend": "triton", "attn_mask": torch.ones(5, 5, dtype=torch.bool), "causal": False},
            32,
            ValueError,
            "attn_mask",
        ),
        ({"backend": "triton", "dropout_p": 0.1}, 32, ValueError, "dropout"),
        ({"backend": "triton"}, 8, ValueError, "head_dim 16 to 128, got 8"),
        # the checks attention() always made come first, whatever the backend
        ({"backend": "triton", "attn_mask": torch.ones(5, 5, dtype=torch.bool)}, 32, ValueError, "not both"),
        ({"backend": "triton", "dropout_p": 1.0}, 32, ValueError, r"dropout_p=1.0 .*\[0.0, 1.0\)"),
    ],
    ids=[
        "unknown",
        "none",
        "causal-int",
        "dropout-str",
        "case",
        "mask",
        "dropout",
        "head-dim",
        "mask-and-causal",
        "dropout-range",
    ],
)
def test_attention_backend_errors(kwargs, D, exc, match):
    """A backend value outside auto/triton/sdpa, and calls the kernel cannot take, raise naming why."""
    from fastllm import attention

    x = torch.zeros(1, 2, 5, D)
    with pytest.raises(exc, match=match):
        attention(x, x, x, **kwargs)


def _fake_cuda(shape, dtype=torch.float16, device="cuda:0"):
    """What _flash_fits reads of a tensor, for a CUDA tensor on a machine without one."""
    from types import SimpleNamespace

    return SimpleNamespace(is_cuda=torch.device(device).type == "cuda", device=torch.device(device),
                           shape=shape, dtype=dtype)  # fmt: skip


@pytest.mark.parametrize(
    "change, fits",
    [
        ({}, True),
        ({"dtype": torch.bfloat16}, True),
        ({"dtype": torch.float32}, True),
        ({"D": 16}, True),
        ({"D": 128}, True),
        ({"D": 8}, False),
        ({"D": 256}, False),
        ({"dtype": torch.float64}, False),
        ({"k_dtype": torch.float32}, False),
        ({"device": "cpu"}, False),
        ({"k_device": "cuda:1"}, False),
        ({"attn_mask": True}, False),
        ({"dropout_p": 0.1}, False),
        ({"no_triton": True}, False),
        ({"compiling": True}, False),
    ],
    ids=lambda x: (
        str(x) if not isinstance(x, dict) else ("-".join(f"{k}={v}" for k, v in x.items()) or "base")
    ),
)
def test_attention_auto_rule(monkeypatch, change, fits):
    """The rule of backend="auto" (the issue's: CUDA tensors, triton importable, a call the kernel
    takes; and not under torch.compile), on stand-ins for CUDA tensors so that it runs without a GPU."""
    import fastllm.kernels
    from fastllm.model import attention as _attention

    if change.get("no_triton"):
        monkeypatch.setattr(fastllm.kernels, "is_available", lambda: False)
    else:
        monkeypatch.setattr(fastllm.kernels, "is_available", lambda: True)
    if change.get("compiling"):
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    D, dtype, device = change.get("D", 64), change.get("dtype", torch.float16), change.get("device", "cuda:0")
    q = _fake_cuda((2, 8, 100, D), dtype, device)
    k = _fake_cuda((2, 2, 100, D), change.get("k_dtype", dtype), change.get("k_device", device))
    v = _fake_cuda((2, 2, 100, D), dtype, device)
    mask = object() if change.get("attn_mask") else None
    assert _attention._flash_fits(q, k, v, change.get("dropout_p", 0.0), mask) is fits


# ------------------------------------------------------------------------------------ paged decode


def paged_case(lens, page, H, H_kv, D, dtype, seed=0, index_dtype=torch.int32):
    """Caches filled with random K/V and each sequence's blocks at shuffled block ids."""
    g = torch.Generator().manual_seed(seed)
    B = len(lens)
    max_blocks = max(-(-L // page) for L in lens) + 1  # one spare (unused) table column
    num_blocks = B * max_blocks + 3
    k_cache = torch.randn(num_blocks, page, H_kv, D, generator=g).to(dtype)
    v_cache = torch.randn(num_blocks, page, H_kv, D, generator=g).to(dtype)
    ids = torch.randperm(num_blocks, generator=g)[: B * max_blocks].view(B, max_blocks).to(index_dtype)
    q = torch.randn(B, H, D, generator=g).to(dtype)
    return q, k_cache, v_cache, ids, torch.tensor(lens, dtype=torch.int64)


def gather_sdpa(q, k_cache, v_cache, block_tables, context_lens):
    """The Engine's gather path in float64: each sequence's blocks -> (H_kv, L, D), then SDPA."""
    outs = []
    page = k_cache.shape[1]
    for b, L in enumerate(context_lens.tolist()):
        blocks = block_tables[b, : -(-L // page)].long()
        ks = k_cache[blocks].flatten(0, 1)[:L].transpose(0, 1).double()  # (H_kv, L, D)
        vs = v_cache[blocks].flatten(0, 1)[:L].transpose(0, 1).double()
        g = q.shape[1] // ks.shape[0]
        ks, vs = ks.repeat_interleave(g, 0), vs.repeat_interleave(g, 0)  # (H, L, D)
        outs.append(F.scaled_dot_product_attention(q[b].double().unsqueeze(1), ks, vs).squeeze(1))  # (H, D)
    return torch.stack(outs)  # (B, H, D)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "page, H, H_kv, D",
    [(16, 4, 2, 32), (5, 6, 2, 64), (8, 4, 4, 48), (4, 16, 1, 128)],
    ids=["page16-gqa", "page5-g3", "page8-mha-d48", "page4-mqa16-d128"],
)
@interpreted
def test_paged_decode_matches_gather_sdpa(dtype, page, H, H_kv, D):
    lens = [1, 17, 40, 5]
    q, kc, vc, bt, cl = paged_case(lens, page, H, H_kv, D, DTYPES[dtype], seed=page + D)
    out = paged.paged_decode_attention(q, kc, vc, bt, cl)
    assert out.shape == q.shape and out.dtype == q.dtype
    (atol, rtol), _ = TOL[DTYPES[dtype]]
    torch.testing.assert_close(out.double(), gather_sdpa(q, kc, vc, bt, cl), atol=atol, rtol=rtol)


@interpreted
@pytest.mark.parametrize("splits", [2, 3])
def test_paged_decode_context_splits(splits):
    """Flash-decoding splits merged by log-sum-exp, including splits past a short context."""
    q, kc, vc, bt, cl = paged_case(
        [70, 3, 33], 16, 4, 1, 32, torch.float32, seed=splits, index_dtype=torch.int64
    )
    out = paged.paged_decode_attention(q, kc, vc, bt, cl, _num_splits=splits, _block_n=16)
    torch.testing.assert_close(out.double(), gather_sdpa(q, kc, vc, bt, cl), atol=2e-5, rtol=1e-4)


@interpreted
def test_paged_decode_strided_tables_and_lengths():
    """A column-major block table, every other entry of a lengths tensor, q sliced from a wider
    tensor: the kernel reads them at their strides (the Engine keeps views like these)."""
    q, kc, vc, bt, cl = paged_case([9, 26, 2], 8, 4, 2, 32, torch.float32, seed=4)
    bt_cols = bt.t().contiguous().t()  # same values, stride (1, B)
    cl_every_other = torch.stack([cl, torch.full_like(cl, 10**6)], 1).flatten()[::2]  # stride 2
    q_wide = torch.cat([q, torch.full_like(q, float("nan"))], -1)[
        ..., :32
    ]  # head_dim stride 1, row stride 64
    assert bt_cols.stride(1) != 1 and cl_every_other.stride(0) == 2 and not q_wide.is_contiguous()
    out = paged.paged_decode_attention(q_wide, kc, vc, bt_cols, cl_every_other)
    torch.testing.assert_close(out.double(), gather_sdpa(q, kc, vc, bt, cl), atol=2e-5, rtol=1e-4)


@interpreted
def test_engine_decodes_through_the_paged_kernel():
    """Engine(decode_attention="triton") (the CUDA path: the kernel reads the block tables) gives
    the tokens of the torch path and log-probabilities within fp32 rounding; ragged prompts, a
    shared prefix, block size 4."""
    import random

    from fastllm import Engine, SamplingParams
    from fastllm.model.gpt import MiniGPT, MiniGPTConfig

    torch.manual_seed(0)
    model = MiniGPT(
        MiniGPTConfig.preset(
            "small", vocab_size=64, n_layer=1, context=48, d_model=64, n_head=4, n_kv_head=2, mlp_hidden=64
        )
    ).eval()
    with torch.no_grad():  # spread the logits: no near-ties between the two fp32 paths
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    rng = random.Random(1)
    shared = [rng.randrange(64) for _ in range(9)]
    prompts = [shared + [rng.randrange(64) for _ in range(rng.randint(1, 6))] for _ in range(3)]
    params = SamplingParams(max_new_tokens=5, temperature=0, logprobs=True)
    calls = []
    real = paged.paged_decode_attention

    def spy(*args, **kw):
        calls.append(args[0].shape)
        return real(*args, **kw)

    paged.paged_decode_attention = spy
    try:
        kernel = Engine(model, num_blocks=40, block_size=4, decode_attention="triton").generate(
            prompts, params
        )
    finally:
        paged.paged_decode_attention = real
    plain = Engine(model, num_blocks=40, block_size=4, decode_attention="torch").generate(prompts, params)
    assert calls and all(shape[1:] == (4, 16) for shape in calls)  # (B, n_head, head_dim) per layer and step
    for a, b in zip(kernel, plain):
        assert a.token_ids == b.token_ids
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4, rtol=1e-4)
    assert Engine(model, num_blocks=8).decode_attention == "torch"  # "auto" on a CPU model
    with pytest.raises(ValueError, match="decode_attention must be one of"):
        Engine(model, num_blocks=8, decode_attention="paged")


@interpreted
def test_paged_decode_rejects_bad_inputs():
    q, kc, vc, bt, cl = paged_case([3, 4], 4, 4, 2, 32, torch.float32)
    with pytest.raises(ValueError, match="must divide"):
        paged.paged_decode_attention(q[:, :3], kc, vc, bt, cl)
    with pytest.raises(ValueError, match="block_tables"):
        paged.paged_decode_attention(q, kc, vc, bt.float(), cl)
    with pytest.raises(ValueError, match="context_lens"):
        paged.paged_decode_attention(q, kc, vc, bt, cl[:1])
    with pytest.raises(ValueError, match="max_context=0"):
        paged.paged_decode_attention(q, kc, vc, bt, cl, max_context=0)
    with pytest.raises(TypeError, match="max_context must be an int"):
        paged.paged_decode_attention(q, kc, vc, bt, cl, max_context=4.0)


@interpreted
def test_autotune_prune_fits_lengths_and_shared_memory(monkeypatch):
    """The pruned config lists keep blocks within the padded lengths and tiles within shared memory."""
    q = torch.zeros(1, 1, 1, 128, dtype=torch.float16)
    monkeypatch.setattr(flash, "_smem_limit", lambda device: 100 * 1024)
    for kind, table in (("fwd", flash._FWD), ("bwd_kv", flash._BWD_KV), ("bwd_q", flash._BWD_Q)):
        configs = flash._configs(table)
        kept = flash._pruner(kind)(configs, {"Q": q}, Q_BUCKET=64, K_BUCKET=64, BLOCK_D=128)
        assert kept and all(c.kwargs["BLOCK_M"] <= 64 and c.kwargs["BLOCK_N"] <= 64 for c in kept), kind
        for c in kept:
            bm, bn, st = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_stages
            resident, streamed = {"fwd": (bm, bn), "bwd_q": (2 * bm, bn), "bwd_kv": (2 * bn, bm)}[kind]
            assert 2 * 128 * (resident + 2 * st * streamed) <= 100 * 1024, (kind, c)
        tiny = flash._pruner(kind)(configs, {"Q": q}, Q_BUCKET=1, K_BUCKET=1, BLOCK_D=128)
        assert tiny and all(max(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) <= 32 for c in tiny), kind


def test_kernels_compile_for_sm90():
    """The interpreter accepts block shapes the compiler rejects: compile the kernels for an H100
    (sm_90) without a GPU, at the block sizes the tests use (head_dim 80: padded, masked d) and, at
    head_dim 128 in bf16, at the autotune configuration of each kernel that the pruner keeps with
    the most shared memory: the compiled kernel must fit the H100's 227 KiB, the limit the pruner
    was given. (Each compile is seconds; the cold triton cache makes this the file's slowest test.)"""
    code = """
        import os, sys, triton
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
        from fastllm.kernels import flash, paged
        assert not flash.INTERPRET
        target = GPUTarget("cuda", 90, 32)
        H100_SMEM = 227 * 1024

        def compile_(fn, consts, ptrs, warps=4, stages=2):
            sig = {n: "constexpr" if n in consts else ptrs.get(n, "fp32" if n == "sm_scale" else "i32")
                   for n in fn.arg_names}
            attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(fn.arg_names)
                     if n in ptrs or n.startswith("stride")}
            src = ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs)
            k = triton.compile(src, target=target, options={"num_warps": warps, "num_stages": stages})
            assert k.metadata.shared <= H100_SMEM, (fn.__name__, consts, warps, stages, k.metadata.shared)

        try:
            compile_(flash._bwd_preprocess, dict(HEAD_DIM=64, BLOCK_D=64, BLOCK_M=64),
                     dict(O="*fp16", DO="*fp16", Delta="*fp32"))
        except Exception as e:  # no ptxas / no CUDA backend in this triton build
            if "ptxas" in str(e).lower() or "backend" in str(e).lower():
                print("SKIP", e); sys.exit(0)
            raise

        def kernels(P):
            return (
                ("fwd", flash._flash_fwd, flash._FWD, dict(Q=P, K=P, V=P, O=P, LSE="*fp32")),
                ("bwd_kv", flash._flash_bwd_dkdv, flash._BWD_KV,
                 dict(Q=P, K=P, V=P, DO=P, LSE="*fp32", Delta="*fp32", DK=P, DV=P)),
                ("bwd_q", flash._flash_bwd_dq, flash._BWD_Q,
                 dict(Q=P, K=P, V=P, DO=P, LSE="*fp32", Delta="*fp32", DQ=P)),
            )

        class Arg:  # what the pruner reads of Q
            device = "cuda:0"
            def element_size(self): return 2

        flash._SMEM_CACHE["cuda:0"] = H100_SMEM
        for P, D, causal, which in (("*fp16", 80, True, "tests"), ("*bf16", 128, False, "largest")):
            base = dict(HEAD_DIM=D, BLOCK_D=128, CAUSAL=causal, EVEN_D=D == 128, UPCAST=False,
                        PRECISION="tf32")
            for kind, fn, table, ptrs in kernels(P):
                if which == "tests":
                    (m, n), w, st = flash.INTERPRET_BLOCKS[kind], 4, 2
                else:
                    kept = flash._pruner(kind)(flash._configs(table), {"Q": Arg()}, Q_BUCKET=8192,
                                               K_BUCKET=8192, BLOCK_D=128)
                    c = max(kept, key=lambda c: flash._smem_estimate(
                        kind, c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_stages, 128, 2))
                    m, n, w, st = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages
                compile_(fn, {**base, "BLOCK_M": m, "BLOCK_N": n}, ptrs, w, st)
        compile_(paged._paged_decode,
                 dict(PAGE=16, HEAD_DIM=128, BLOCK_D=128, BLOCK_G=16, BLOCK_N=32, UPCAST=False,
                      PRECISION="tf32"),
                 dict(Q="*bf16", K="*bf16", V="*bf16", BT="*i32", CL="*i64", O="*bf16", LSE="*fp32"))
        print("ok")
    """
    r = _run(code)
    assert r.returncode == 0, r.stdout + r.stderr[-4000:]
    if "SKIP" in r.stdout:
        pytest.skip(f"triton cannot compile for sm_90 here: {r.stdout.strip()[:200]}")
    assert "ok" in r.stdout, r.stdout + r.stderr[-4000:]


# ----------------------------------------------------------------------- the public package surface


def _run(code: str, **env) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, env=full_env, cwd=REPO, timeout=300,
    )  # fmt: skip


def test_public_api_under_interpreter():
    """fastllm.kernels.flash_attention / paged_decode_attention as a user calls them, with the
    variable set for the whole process; `import fastllm` alone does not import triton."""
    code = """
        import sys
        import fastllm, fastllm.kernels
        assert "triton" not in sys.modules, "import fastllm imported triton"
        assert fastllm.kernels.is_available()
        import torch
        from fastllm.kernels import flash_attention, paged_decode_attention
        torch.manual_seed(0)
        q = torch.randn(1, 2, 20, 32, requires_grad=True)
        k = torch.randn(1, 1, 20, 32); v = torch.randn(1, 1, 20, 32)
        out = flash_attention(q, k, v, causal=True)
        sdpa = torch.nn.functional.scaled_dot_product_attention
        ref = sdpa(q, k.expand(1, 2, 20, 32), v.expand(1, 2, 20, 32), is_causal=True)
        assert (out - ref).abs().max() < 1e-4, (out - ref).abs().max()
        out.sum().backward()
        assert q.grad is not None and torch.isfinite(q.grad).all()
        kc = torch.randn(4, 4, 1, 32); vc = torch.randn(4, 4, 1, 32)
        bt = torch.tensor([[2, 0], [1, 3]], dtype=torch.int32); cl = torch.tensor([6, 3])
        o = paged_decode_attention(torch.randn(2, 2, 32), kc, vc, bt, cl)
        assert o.shape == (2, 2, 32) and torch.isfinite(o).all()
        print("ok")
    """
    r = _run(code, TRITON_INTERPRET="1")
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr


def test_package_imports_without_triton():
    code = """
        import sys
        sys.modules["triton"] = None  # as if triton were not installed
        import fastllm.kernels
        assert not fastllm.kernels.is_available()
        import torch
        x = torch.zeros(1, 1, 4, 32)
        try:
            fastllm.kernels.flash_attention(x, x, x)
        except ImportError as e:
            assert "needs triton" in str(e), e
        else:
            raise AssertionError("no ImportError")
        try:
            fastllm.attention(x, x, x, backend="triton")
        except ImportError as e:
            assert "needs triton" in str(e), e
        else:
            raise AssertionError("no ImportError from backend='triton'")
        q = torch.randn(1, 2, 4, 32)
        sdpa = torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
        assert torch.equal(fastllm.attention(q, q, q, backend="auto"), sdpa)
        print("ok")
    """
    r = _run(code)
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr


def test_cpu_tensors_without_interpreter_are_refused():
    """Without TRITON_INTERPRET the kernels (and fastllm.attention(backend="triton")) ask for CUDA
    tensors, or the interpreter, instead of failing inside triton."""
    code = """
        import torch, fastllm.kernels
        x = torch.zeros(1, 1, 4, 32)
        try:
            fastllm.kernels.flash_attention(x, x, x)
        except ValueError as e:
            assert "need CUDA tensors" in str(e), e
        else:
            raise AssertionError("no ValueError")
        import fastllm
        try:
            fastllm.attention(x, x, x, backend="triton")
        except ValueError as e:
            assert "need CUDA tensors" in str(e) and "TRITON_INTERPRET=1" in str(e), e
        else:
            raise AssertionError("no ValueError from backend='triton'")
        print("ok")
    """
    r = _run(code)
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr


if not INTERPRETING:  # defined only where the interpreter tests could not run in this process

    def test_interpreter_in_child_process():
        """Where this process could not switch triton to its interpreter, run this file in a child
        pytest that can (TRITON_INTERPRET=1 set before triton is imported)."""
        r = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(Path(__file__).resolve())],
            capture_output=True, text=True, cwd=REPO, timeout=900,
            env={**os.environ, CHILD_FLAG: "1", "TRITON_INTERPRET": "1"},
        )  # fmt: skip
        assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]


@pytest.mark.skipif(
    INTERPRETING or not torch.cuda.is_available(), reason="needs a CUDA GPU (compiled kernels)"
)
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
def test_compiled_kernels_on_cuda(dtype, causal):
    """The compiled (autotuned) kernels against SDPA on the GPU, including a ragged length."""
    from fastllm.kernels import flash_attention, paged_decode_attention

    dt = DTYPES[dtype]
    for B, H, H_kv, T, D in ((2, 8, 2, 1000, 64), (1, 4, 4, 257, 128), (3, 6, 3, 77, 80)):
        g = torch.Generator(device="cuda").manual_seed(T)
        q = torch.randn(B, H, T, D, device="cuda", dtype=dt, generator=g, requires_grad=True)
        k = torch.randn(B, H_kv, T, D, device="cuda", dtype=dt, generator=g, requires_grad=True)
        v = torch.randn(B, H_kv, T, D, device="cuda", dtype=dt, generator=g, requires_grad=True)
        do = torch.randn(B, H, T, D, device="cuda", dtype=dt, generator=g)
        out = flash_attention(q, k, v, causal=causal)
        grads = torch.autograd.grad(out, (q, k, v), do)
        q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
        ref = reference(q64.cpu(), k64.cpu(), v64.cpu(), causal).cuda()
        rgrads = torch.autograd.grad(ref, (q64, k64, v64), do.double())
        (atol_o, rtol_o), (atol_g, rtol_g) = TOL[dt]
        torch.testing.assert_close(out.double(), ref, atol=atol_o, rtol=rtol_o)
        for got, want in zip(grads, rgrads):
            torch.testing.assert_close(got.double(), want, atol=atol_g, rtol=rtol_g)
    q, kc, vc, bt, cl = paged_case([1, 300, 4097, 64], 16, 8, 2, 128, dt, seed=1)
    q, kc, vc, bt, cl = (t.cuda() for t in (q, kc, vc, bt, cl))
    out = paged_decode_attention(q, kc, vc, bt, cl)
    (atol, rtol), _ = TOL[dt]
    torch.testing.assert_close(out.double(), gather_sdpa(q, kc, vc, bt, cl), atol=atol, rtol=rtol)


@pytest.mark.skipif(
    INTERPRETING or not torch.cuda.is_available(), reason="needs a CUDA GPU (compiled kernels)"
)
def test_attention_auto_dispatch_on_cuda(monkeypatch):
    """On CUDA "auto" runs the kernel for a call it takes and SDPA for one it does not (a mask,
    dropout, head_dim 8); both agree with float64 math."""
    import fastllm
    from fastllm.kernels import flash as compiled_flash

    calls = []
    real = compiled_flash.flash_attention
    monkeypatch.setattr(compiled_flash, "flash_attention", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(2, 4, 100, 64, device="cuda", dtype=torch.float16, generator=g)
    kv = torch.randn(2, 2, 100, 64, device="cuda", dtype=torch.float16, generator=g)
    (atol, rtol), _ = TOL[torch.float16]
    ref = reference(q.cpu(), kv.cpu(), kv.cpu(), True).cuda()
    torch.testing.assert_close(fastllm.attention(q, kv, kv).double(), ref, atol=atol, rtol=rtol)
    assert calls == [1]
    mask = torch.ones(100, 100, dtype=torch.bool, device="cuda").tril()
    torch.testing.assert_close(
        fastllm.attention(q, kv, kv, causal=False, attn_mask=mask).double(), ref, atol=atol, rtol=rtol
    )
    fastllm.attention(q, kv, kv, dropout_p=0.1)
    q8, kv8 = q[..., :8], kv[..., :8]
    torch.testing.assert_close(
        fastllm.attention(q8, kv8, kv8).double(),
        reference(q8.cpu(), kv8.cpu(), kv8.cpu(), True).cuda(),
        atol=atol,
        rtol=rtol,
    )
    assert calls == [1]
