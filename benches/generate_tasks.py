"""The generation jobs benches/bench_generate.py times, and the models and prompts they share.

One ~14M-parameter GPT-2-shaped model (vocab 8192, context 512, 6 layers, 6 heads, d_model 384,
tanh GELU) with random weights (seed 0). With transformers installed the weights are made by
transformers' GPT2LMHeadModel, saved with save_pretrained and read into MiniGPT with
`MiniGPT.from_pretrained`, so the transformers rows and the fastllm rows run the same weights;
without it MiniGPT is built directly with the same seed. Everything runs on one torch thread, in
eval mode, under torch.inference_mode().

`make_<case>(models, prompts, new_tokens)` returns a callable `run(n=new_tokens)` that generates
greedily and returns the output ids; `run(4)` is the benches' short, untimed warm-up.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import torch

VOCAB, CONTEXT, N_LAYER, N_HEAD, D_MODEL = 8192, 512, 6, 6, 384
PROMPT = 32  # tokens per prompt of the batch rows
SYSTEM = 200  # the shared system prompt of the concurrent-requests rows
SUFFIX = 16  # distinct tokens after it, per request
CASES = ("recompute", "transformers", "fastllm_cache", "weights_floor")


@dataclass
class Models:
    minigpt: Any
    hf: Any = None  # transformers' GPT2LMHeadModel with the same weights, or None without transformers
    directory: str | None = None  # the save_pretrained folder (kept alive with the object)
    _tmp: Any = field(default=None, repr=False)


def hf_gpt2():
    """transformers' GPT2LMHeadModel of the benchmark's shape, random weights (seed 0), no dropout."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=VOCAB,
        n_positions=CONTEXT,
        n_embd=D_MODEL,
        n_layer=N_LAYER,
        n_head=N_HEAD,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=None,
        pad_token_id=0,
    )
    return GPT2LMHeadModel(cfg).eval()


def build_models(with_hf: bool = True) -> Models:
    """MiniGPT (and transformers' GPT-2 with the same weights when `with_hf` and it is installed)."""
    from fastllm.model.gpt import MiniGPT, MiniGPTConfig

    torch.set_num_threads(1)
    hf = None
    if with_hf:
        try:
            hf = hf_gpt2()
        except ImportError:
            hf = None
    if hf is None:
        torch.manual_seed(0)
        model = MiniGPT(
            MiniGPTConfig(
                vocab_size=VOCAB,
                context=CONTEXT,
                n_layer=N_LAYER,
                n_head=N_HEAD,
                d_model=D_MODEL,
                mlp="gelu_tanh",
            )
        ).eval()
        return Models(model)
    tmp = tempfile.TemporaryDirectory(prefix="fastllm-bench-gen-")
    hf.save_pretrained(tmp.name)
    model = MiniGPT.from_pretrained(tmp.name).eval()
    assert model.config.mlp == "gelu_tanh" and model.config.context == CONTEXT, model.config
    return Models(model, hf, tmp.name, tmp)


def batch_prompts(batch: int, length: int = PROMPT, seed: int = 0) -> torch.Tensor:
    """(batch, length) uniform random ids in [1, VOCAB), fixed seed."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, VOCAB, (batch, length), generator=g)


def shared_prefix_prompts(requests: int, seed: int = 1) -> list[list[int]]:
    """`requests` prompts: one SYSTEM-token system prompt + SUFFIX distinct random tokens each."""
    g = torch.Generator().manual_seed(seed)
    system = torch.randint(1, VOCAB, (SYSTEM,), generator=g).tolist()
    return [system + torch.randint(1, VOCAB, (SUFFIX,), generator=g).tolist() for _ in range(requests)]


# --------------------------------------------------------------------------------------------
# Batch rows: B prompts of PROMPT tokens, new_tokens each, greedy
# --------------------------------------------------------------------------------------------


def make_recompute(models: Models, prompts: torch.Tensor, new_tokens: int):
    def run(n: int = new_tokens) -> torch.Tensor:
        with torch.inference_mode():
            return models.minigpt.generate(prompts, n, temperature=0, use_cache=False)

    return run


def make_fastllm_cache(models: Models, prompts: torch.Tensor, new_tokens: int):
    def run(n: int = new_tokens) -> torch.Tensor:
        with torch.inference_mode():
            return models.minigpt.generate(prompts, n, temperature=0)

    return run


def make_transformers(models: Models, prompts: torch.Tensor, new_tokens: int):
    mask = torch.ones_like(prompts)

    def run(n: int = new_tokens) -> torch.Tensor:
        with torch.inference_mode():
            # eos_token_id=None and min_new_tokens=n: every row produces exactly n tokens
            return models.hf.generate(
                prompts,
                attention_mask=mask,
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                eos_token_id=None,
                pad_token_id=0,
            )

    return run


def make_weights_floor(models: Models, prompts: torch.Tensor, new_tokens: int):
    """Not generation: a bound on it. Per new token, only the weight matrix products of a decode
    step (fastllm's fused decode plan: q|k|v, o, fc, proj per layer, then the vocabulary
    projection) on B rows through torch (MKL), nothing else (no attention, norms, activations,
    sampling). A batch-1 decode step on a CPU is bound by reading every weight once per token, so
    a torch implementation of the step cannot beat this row; fastllm's batch-1 step (Rust, see
    fastllm.generation.decode.NativeDecode) streams the weights at least as fast and can."""
    from fastllm.generation.decode import DecodePlan

    model = models.minigpt
    B = prompts.shape[0]

    def run(n: int = new_tokens) -> torch.Tensor:
        with torch.inference_mode():
            plan = DecodePlan.for_model(model)
            mats = [
                (w, b)
                for layer in plan.layers
                for w, b in (
                    (layer.wqkv, layer.bqkv),
                    (layer.wo, layer.bo),
                    (layer.w1, layer.b1),
                    (layer.w2, layer.b2),
                )
            ]
            rows = {w.shape[0]: torch.randn(B, w.shape[0]) for w, _ in mats}  # inputs by width
            x = rows[model.config.d_model]
            for _ in range(n):
                for w, b in mats:
                    torch.addmm(b, rows[w.shape[0]], w) if b is not None else torch.mm(rows[w.shape[0]], w)
                torch.mm(x, plan.lm_head)
        return torch.cat(
            (prompts, torch.zeros(B, n, dtype=prompts.dtype)), dim=1
        )  # the shape of a generate output

    return run


# --------------------------------------------------------------------------------------------
# Concurrent requests sharing a system prompt
# --------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    token_ids: list[list[int]]  # the new tokens of each request
    ttft_s: list[float]  # per request: seconds from the start of the whole run to its first token
    latency_s: list[float]  # per request: seconds from the start of the whole run to its last token
    seconds: float  # the whole run

    def tpot_s(self) -> list[float]:
        """Per request: time per output token after the first, (latency - ttft) / (n - 1)."""
        rows = zip(self.token_ids, self.ttft_s, self.latency_s)
        return [(lat - first) / max(1, len(ids) - 1) for ids, first, lat in rows]


def make_shared_prefix_sequential(models: Models, prompts: list[list[int]], new_tokens: int):
    """The requests one by one with `model.generate` (contiguous cache). Request i's TTFT counts
    from the start of the run, so it includes the requests before it: a streaming callback notes
    the moment each request's first token comes out (its prefill done)."""
    model = models.minigpt

    def run(n: int = new_tokens) -> RunResult:
        outs, ttft, latency = [], [], []
        start = time.perf_counter()
        with torch.inference_mode():
            for prompt in prompts:
                first: list[float] = []

                def note(_new, first=first):
                    if not first:
                        first.append(time.perf_counter())

                out = model.generate(torch.tensor([prompt]), n, temperature=0, callback=note)
                latency.append(time.perf_counter() - start)
                ttft.append(first[0] - start)
                outs.append(out[0, len(prompt) :].tolist())
        return RunResult(outs, ttft, latency, time.perf_counter() - start)

    return run


def engine_available() -> str | None:
    """None if `fastllm.Engine` can be imported, else why not."""
    try:
        import fastllm

        fastllm.Engine  # noqa: B018
    except (AttributeError, ImportError) as e:
        return f"fastllm.Engine not available yet ({e})"
    return None


def new_engine(models: Models, prefix_caching: bool):
    from fastllm import Engine

    return Engine(
        models.minigpt, tokenizer=None, num_blocks=None, block_size=16, enable_prefix_caching=prefix_caching
    )


def run_engine(engine: Any, prompts: list[list[int]], n: int) -> RunResult:
    """All the requests submitted at once to `engine`; TTFT as the Engine reports it."""
    from fastllm import SamplingParams

    start = time.perf_counter()
    with torch.inference_mode():
        outs = engine.generate(prompts, SamplingParams(max_new_tokens=n, temperature=0))
    seconds = time.perf_counter() - start
    ids = []
    for prompt, o in zip(prompts, outs):
        row = list(o.token_ids)
        if len(row) > len(prompt) and row[: len(prompt)] == prompt:  # the output carries its prompt
            row = row[len(prompt) :]
        ids.append(row)
    return RunResult(ids, [float(o.ttft_s) for o in outs], [float(o.latency_s) for o in outs], seconds)
