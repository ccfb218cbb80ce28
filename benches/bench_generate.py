"""Generation benchmark (issue #5): fastllm's KV-cache generate and Engine against recomputing
without a cache and transformers' `generate`, on the same weights.

Group lm-generate (one run, so the ratios between rows are meaningful). Model: GPT-2 shape, vocab
8192, context 512, 6 layers, 6 heads, d_model 384, tanh GELU (~14.0M parameters), random weights
(seed 0) made by transformers' GPT2LMHeadModel and read into MiniGPT with
`MiniGPT.from_pretrained`, so both libraries run identical weights (benches/generate_tasks.py).
Every row runs on ONE torch thread (torch.set_num_threads(1)), eval mode, torch.inference_mode(),
greedy (temperature=0), float32, CPU.

Batch rows, batch 1 and batch 16, random 32-token prompts (fixed seed), 128 new tokens per row:
  recompute        model.generate(ids, 128, temperature=0, use_cache=False): the whole sequence
                   re-run for every new token
  transformers     GPT2LMHeadModel.generate(ids, max_new_tokens=128, min_new_tokens=128,
                   do_sample=False, eos_token_id=None, pad_token_id=0), its default cache and
                   attention (skipped without transformers)
  fastllm_cache    model.generate(ids, 128, temperature=0): the contiguous KV cache; at batch 1
                   every step after the prefill runs in Rust (fastllm.generation.decode.NativeDecode)
  weights_floor    not generation, a bound: per new token only the decode step's weight matrix
                   products through torch (fastllm's fused plan, B rows), nothing else. At batch 1
                   on a CPU the step is bound by reading every weight once per token; this row
                   says how fast a torch fp32 step could be (the Rust batch-1 step streams the
                   weights at least as fast, so it can come close to it or pass it)
Before timing, the fastllm_cache and transformers outputs are checked to be identical to the
recompute output at batch 1 (greedy, same weights).

Concurrent-request rows: 32 requests, each a common 200-token system prompt + 16 distinct random
tokens, 64 new tokens each:
  shared_prefix_sequential       one by one with model.generate (contiguous cache). TTFT of
                                 request i = time from the start of the whole run to its first
                                 token, i.e. the requests before it + its own prefill, noted by a
                                 streaming callback during the timed run
  shared_prefix_engine           all 32 submitted at once to fastllm.Engine (block_size 16, prefix
                                 caching on); TTFT = the Engine's ttft_s (submission to first token)
  shared_prefix_engine_noprefix  the same with enable_prefix_caching=False
Each Engine round gets a fresh Engine (built untimed), so the prefix cache starts cold every
round. The Engine rows are skipped while fastllm.Engine does not exist.

A round is one full generation, after one short untimed warm-up (4 new tokens). Each row records
extra_info: impl, case, batch, prompt_tokens, new_tokens (per sequence), tokens (new tokens over
all sequences), tokens_per_s (tokens / median seconds), ms_per_token (median seconds / new_tokens:
per-token latency of one sequence, prefill included), params, threads. The concurrent rows record
instead ms_per_token = the mean over requests of the time per output token after the first,
(latency - TTFT) / (new_tokens - 1), and also mean_ttft_ms and max_ttft_ms (of the round nearest
the median), requests, system_prompt_tokens and matches_sequential (the Engine's greedy outputs
equal the one-by-one outputs). No peak-RSS column: the weights are 56 MB
and the caches a few MB; the training and tokenizer benches measure memory.

Knobs: FASTLLM_BENCH_ROUNDS (default 3), FASTLLM_BENCH_GEN_TOKENS (new tokens of the batch rows,
default 128; the concurrent rows generate half of it), FASTLLM_BENCH_GEN_REQUESTS (default 32).

Run:  pytest benches/bench_generate.py --benchmark-only
      python benches/report.py -k generate     (runs the benchmarks, prints the tables)
"""

from __future__ import annotations

import os
import statistics

import pytest

import generate_tasks as gt

ROUNDS = int(os.environ.get("FASTLLM_BENCH_ROUNDS", "3"))
NEW_TOKENS = int(os.environ.get("FASTLLM_BENCH_GEN_TOKENS", "128"))
SHARED_NEW = max(1, NEW_TOKENS // 2)
REQUESTS = int(os.environ.get("FASTLLM_BENCH_GEN_REQUESTS", "32"))
WARMUP_TOKENS = 4
BATCHES = (1, 16)
PEERS = "the `test` extra installs transformers: pip install -e '.[test]'"
GROUP = "lm-generate"


@pytest.fixture(scope="module")
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def models(one_thread):
    return gt.build_models()


@pytest.fixture(scope="module")
def checked(models):
    """Batch 1, outside the timed part: every implementation's greedy output equals recompute's."""
    import torch

    ids = gt.batch_prompts(1)
    want = gt.make_recompute(models, ids, NEW_TOKENS)()
    got = gt.make_fastllm_cache(models, ids, NEW_TOKENS)()
    assert torch.equal(got, want), "fastllm_cache and recompute disagree at batch 1"
    if models.hf is not None:
        hf = gt.make_transformers(models, ids, NEW_TOKENS)()
        assert torch.equal(hf, want), "transformers and MiniGPT (same weights) disagree at batch 1"
    return True


def _info(models, **extra) -> dict:
    return {
        "params": sum(p.numel() for p in models.minigpt.parameters()),
        "threads": 1,
        "dtype": "float32",
        **extra,
    }


@pytest.mark.parametrize("batch", BATCHES, ids=lambda b: f"b{b}")
@pytest.mark.parametrize("case", gt.CASES)
def test_generate(benchmark, models, checked, case, batch):
    benchmark.group = GROUP
    if case == "transformers" and models.hf is None:
        pytest.skip(f"transformers missing; {PEERS}")
    ids = gt.batch_prompts(batch)
    run = getattr(gt, f"make_{case}")(models, ids, NEW_TOKENS)
    run(WARMUP_TOKENS)  # untimed warm-up
    outs = []
    benchmark.pedantic(lambda: outs.append(run()), rounds=ROUNDS, iterations=1, warmup_rounds=0)
    assert outs[-1].shape == (batch, gt.PROMPT + NEW_TOKENS), outs[-1].shape
    median = benchmark.stats.stats.median
    tokens = batch * NEW_TOKENS
    impl = {"transformers": "transformers", "weights_floor": "bound"}.get(case, "fastllm")
    info = _info(
        models,
        impl=impl,
        case=case,
        batch=batch,
        prompt_tokens=gt.PROMPT,
        new_tokens=NEW_TOKENS,
        tokens=tokens,
        tokens_per_s=tokens / median,
        ms_per_token=median / NEW_TOKENS * 1e3,
    )
    if case == "transformers":
        import transformers

        info.update(
            attn_implementation=getattr(models.hf.config, "_attn_implementation", None),
            transformers_version=transformers.__version__,
        )
    benchmark.extra_info.update(info)


# --------------------------------------------------------------------------------------------
# 32 concurrent requests sharing a 200-token system prompt
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_prompts():
    return gt.shared_prefix_prompts(REQUESTS)


@pytest.fixture(scope="module")
def sequential_outputs(models, shared_prompts):
    """The one-by-one greedy outputs, the reference the Engine rows are checked against (untimed)."""
    return gt.make_shared_prefix_sequential(models, shared_prompts, SHARED_NEW)().token_ids


def _record_shared(benchmark, models, results, prompts, case, reference=None, **extra) -> None:
    median = benchmark.stats.stats.median
    # the round whose time is closest to the median gives the TTFT figures
    mid = min(results, key=lambda r: abs(r.seconds - median))
    tokens = sum(len(t) for t in mid.token_ids)
    assert tokens == len(prompts) * SHARED_NEW, (tokens, len(prompts) * SHARED_NEW)
    info = _info(
        models,
        impl="fastllm",
        case=case,
        batch=len(prompts),
        requests=len(prompts),
        system_prompt_tokens=gt.SYSTEM,
        prompt_tokens=gt.SYSTEM + gt.SUFFIX,
        new_tokens=SHARED_NEW,
        tokens=tokens,
        tokens_per_s=tokens / median,
        ms_per_token=statistics.fmean(mid.tpot_s()) * 1e3,
        mean_ttft_ms=statistics.fmean(mid.ttft_s) * 1e3,
        max_ttft_ms=max(mid.ttft_s) * 1e3,
        mean_ttft_ms_rounds=[statistics.fmean(r.ttft_s) * 1e3 for r in results],
        **extra,
    )
    if reference is not None:
        info["matches_sequential"] = all(r.token_ids == reference for r in results)
    benchmark.extra_info.update(info)


def test_generate_shared_prefix_sequential(benchmark, models, shared_prompts):
    benchmark.group = GROUP
    run = gt.make_shared_prefix_sequential(models, shared_prompts[:2], SHARED_NEW)
    run(WARMUP_TOKENS)  # untimed warm-up on two requests
    run = gt.make_shared_prefix_sequential(models, shared_prompts, SHARED_NEW)
    results = []
    benchmark.pedantic(lambda: results.append(run()), rounds=ROUNDS, iterations=1, warmup_rounds=0)
    _record_shared(
        benchmark,
        models,
        results,
        shared_prompts,
        "shared_prefix_sequential",
        ttft="measured: run start to first token, streaming callback",
    )


@pytest.mark.parametrize("prefix_caching", [True, False], ids=["engine", "engine_noprefix"])
def test_generate_shared_prefix_engine(benchmark, models, shared_prompts, sequential_outputs, prefix_caching):
    benchmark.group = GROUP
    why = gt.engine_available()
    if why:
        pytest.skip(why)
    warm = gt.new_engine(models, prefix_caching)  # untimed warm-up on an engine of its own
    gt.run_engine(warm, [p[::-1] for p in shared_prompts[:2]], WARMUP_TOKENS)
    del warm
    results = []

    def setup():  # a fresh engine per round (untimed): the prefix cache starts cold
        return (gt.new_engine(models, prefix_caching),), {}

    def run(engine):
        results.append(gt.run_engine(engine, shared_prompts, SHARED_NEW))

    benchmark.pedantic(run, setup=setup, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    case = "shared_prefix_engine" if prefix_caching else "shared_prefix_engine_noprefix"
    _record_shared(
        benchmark,
        models,
        results,
        shared_prompts,
        case,
        reference=sequential_outputs,
        prefix_caching=prefix_caching,
        block_size=16,
        ttft="Engine ttft_s: submission to first token",
    )
