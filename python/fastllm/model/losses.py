"""Fused output projection + cross-entropy: the loss without the (B*T, vocab) logits tensor.

Why by hand: the last layer of a language model multiplies every position by the vocabulary matrix
and takes a softmax over it. Done the plain way (`F.cross_entropy(h @ W.T, y)`) that materialises
the full logits (64 MB for 2,048 positions x 8,192 ids in fp32, 400 MB for GPT-2's vocabulary),
then a log-softmax copy, then in backward a zero-filled gradient of the same size and another pass
over it. Here rows are processed in chunks that stay cache-sized: each chunk's logits are turned
into the softmax and the gradient in place, and the gradients of `h` and `W` are computed right
away (the trick of Liger-Kernel's fused linear cross-entropy and of Apple's "cut cross-entropy"),
so the backward pass only rescales them by the incoming gradient. Same FLOPs as the plain way,
one read of each chunk instead of five, and peak memory independent of the vocabulary size.

Matmuls run in the autocast dtype when autocast is on (bf16/fp16), the softmax and the loss in
fp32 (fp64 for fp64 inputs), the weight gradient accumulates in that precision too.

>>> import torch
>>> h = torch.randn(6, 4, requires_grad=True); w = torch.randn(10, 4, requires_grad=True)
>>> y = torch.tensor([1, 2, 3, -1, 5, 6])
>>> ref = torch.nn.functional.cross_entropy(h @ w.T, y, ignore_index=-1)
>>> torch.allclose(linear_cross_entropy(h, w, y), ref)
True
"""

from __future__ import annotations

import torch

__all__ = ["linear_cross_entropy"]

_CHUNK_ELEMENTS = 1 << 22  # logits per chunk: 16 MB in fp32


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, w, targets, compute_dtype, ignore_index, need_grad):  # type: ignore[override]
        # h: (N, d), w: (V, d), targets: (N,)
        N, V = h.shape[0], w.shape[0]
        valid = targets != ignore_index  # (N,)
        count = int(valid.sum())
        with torch.autocast(h.device.type, enabled=False):
            wc = w.to(compute_dtype)  # (V, d)
            acc = (
                torch.float64 if compute_dtype == torch.float64 else torch.float32
            )  # softmax/loss/grad dtype
            gh = torch.empty(h.shape, dtype=acc, device=h.device) if need_grad else None
            gw = torch.zeros(w.shape, dtype=acc, device=w.device) if need_grad else None
            total = torch.zeros((), dtype=acc, device=h.device)
            rows = max(1, _CHUNK_ELEMENTS // V)
            for s in range(0, N, rows):
                hc = h[s : s + rows].to(compute_dtype)  # (c, d)
                tc = targets[s : s + rows]  # (c,)
                vc = valid[s : s + rows]  # (c,)
                tsafe = torch.where(vc, tc, 0)  # (c,)
                logits = (hc @ wc.T).to(acc)  # (c, V)
                picked = logits.gather(1, tsafe[:, None]).squeeze(1)  # (c,)
                # log-sum-exp by hand, in place (torch.logsumexp allocates a shifted copy: 3x slower here)
                peak = logits.amax(dim=-1)  # (c,)
                g = logits.sub_(peak[:, None]).exp_()  # (c, V) unnormalised softmax
                z = g.sum(dim=-1)  # (c,)
                lse = peak + z.log()  # (c,)
                total += torch.where(vc, lse - picked, 0.0).sum()
                if need_grad:
                    # d loss / d logits = (softmax - onehot) / count, zero on ignored rows.
                    g.mul_((vc.to(acc) / (z * max(count, 1)))[:, None])
                    g[torch.arange(g.shape[0], device=g.device), tsafe] -= vc.to(acc) / max(count, 1)
                    gc = g.to(compute_dtype)  # (c, V)
                    if compute_dtype == acc:
                        torch.mm(gc, wc, out=gh[s : s + rows])  # (c, d)
                        gw.addmm_(gc.T, hc)  # (V, d), accumulated in place
                    else:
                        gh[s : s + rows] = (gc @ wc).to(acc)  # (c, d)
                        gw += (gc.T @ hc).to(acc)  # (V, d)
        ctx.save_for_backward(gh, gw)
        ctx.dtypes = (h.dtype, w.dtype)
        # mean over the counted rows; nan when every target is ignored (as F.cross_entropy)
        return total / count if count else total * float("nan")

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        gh, gw = ctx.saved_tensors
        hdt, wdt = ctx.dtypes
        dh = (gh * grad).to(hdt) if ctx.needs_input_grad[0] else None
        dw = (gw * grad).to(wdt) if ctx.needs_input_grad[1] else None
        return dh, dw, None, None, None, None


def linear_cross_entropy(
    h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *, ignore_index: int = -1
) -> torch.Tensor:
    """mean cross-entropy of `h @ weight.T` against `targets`, never holding all the logits.

    h: (N, d); weight: (V, d); targets: (N,) int64, `ignore_index` rows left out of the mean.
    Equals `F.cross_entropy(h @ weight.T, targets, ignore_index=ignore_index)` and its gradients.
    """
    if h.ndim != 2 or weight.ndim != 2 or h.shape[1] != weight.shape[1]:
        raise ValueError(
            "h (N, d) and weight (V, d) must agree on d, got "
            f"h{tuple(h.shape)} and weight{tuple(weight.shape)}"
        )
    if targets.shape != (h.shape[0],):
        raise ValueError(f"targets must have shape ({h.shape[0]},), got {tuple(targets.shape)}")
    device = h.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else h.dtype
    need_grad = torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad)
    return _LinearCrossEntropy.apply(h, weight, targets, dtype, ignore_index, need_grad)
