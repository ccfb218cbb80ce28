"""The Engine: continuous batching over the paged KV cache.

Oracle: `fastllm.generation.generate` on each prompt alone (contiguous cache, itself checked against
full recomputation and transformers in test_generate.py). Greedy outputs, and seeded sampled ones,
must be the same token for token whatever the arrival order, the batch size, the block size, the
prefill chunk, prefix caching on or off, and however often sequences are preempted for lack of
blocks. Models run in float64 so that batching's different summation orders cannot flip a choice.
"""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fastllm.generation import Engine, SamplingParams, generate
from fastllm.generation.paged import PagedKV
from fastllm.model.gpt import MiniGPT, MiniGPTConfig


def _model(kind: str) -> MiniGPT:
    torch.manual_seed(0)
    if kind == "gpt2":
        cfg = MiniGPTConfig.preset("tiny", vocab_size=128, context=96)
    else:
        cfg = MiniGPTConfig.preset(
            "small", vocab_size=128, n_layer=2, context=96, d_model=48, n_head=4, n_kv_head=2, mlp_hidden=64
        )
    return MiniGPT(cfg).double().eval()


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def model(request):
    return _model(request.param)


def _prompts(n: int, seed: int, shared: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    prefix = [rng.randrange(128) for _ in range(shared)]
    return [prefix + [rng.randrange(128) for _ in range(rng.randint(1, 20))] for _ in range(n)]


def _alone(model, prompt, params: SamplingParams) -> list[int]:
    out = generate(model, [prompt], dataclasses.replace(params, logprobs=False))[0]
    return out[len(prompt) :].tolist()


@pytest.mark.parametrize("block_size,num_blocks,chunk", [(4, 200, 512), (16, 60, 7), (3, 40, 5)])
def test_greedy_equals_generate_alone(model, block_size, num_blocks, chunk):
    prompts = _prompts(12, seed=block_size, shared=10)
    params = SamplingParams(max_new_tokens=15, temperature=0)
    engine = Engine(model, num_blocks=num_blocks, block_size=block_size, prefill_chunk=chunk)
    outs = engine.generate(prompts, params)
    for p, o in zip(prompts, outs):
        assert o.token_ids == _alone(model, p, params)
        assert o.finish_reason == "length" and len(o.token_ids) == 15
    s = engine.stats()
    assert s["used"] == 0 and s["running"] == 0 and s["waiting"] == 0  # every block returned


def test_arrival_order_and_joining_between_steps(model):
    prompts = _prompts(10, seed=3, shared=8)
    params = [SamplingParams(max_new_tokens=5 + i, temperature=0) for i in range(10)]
    want = [_alone(model, p, sp) for p, sp in zip(prompts, params)]
    for order_seed in range(3):
        order = list(range(10))
        random.Random(order_seed).shuffle(order)
        engine = Engine(model, num_blocks=80, block_size=4, prefill_chunk=9)
        rids = {}
        pending = list(order)
        joins = random.Random(order_seed)
        finished = []
        while pending or engine.has_unfinished():
            for _ in range(joins.randint(0, 2)):  # a few join per step (some steps none)
                if pending:
                    i = pending.pop()
                    rids[engine.add_request(prompts[i], params[i])] = i
            finished += engine.step()
        got = {rids[o.request_id]: o.token_ids for o in finished}
        assert [got[i] for i in range(10)] == want


def test_preemption_recomputes_the_same_tokens(model):
    # 8 requests, each needing up to 9 blocks of 4, in a cache of 14 blocks: constant preemption.
    prompts = _prompts(8, seed=5)
    params = SamplingParams(max_new_tokens=16, temperature=0)
    engine = Engine(model, num_blocks=14, block_size=4)
    outs = engine.generate(prompts, params)
    assert sum(o.preemptions for o in outs) > 0
    for p, o in zip(prompts, outs):
        assert o.token_ids == _alone(model, p, params)


def test_seeded_sampling_equals_alone(model):
    prompts = _prompts(6, seed=9, shared=5)
    params = [
        SamplingParams(
            max_new_tokens=10, temperature=0.9, top_k=20, top_p=0.9, repetition_penalty=1.2, seed=i
        )
        for i in range(6)
    ]
    outs = Engine(model, num_blocks=100, block_size=4).generate(prompts, params)
    for p, sp, o in zip(prompts, params, outs):
        assert o.token_ids == _alone(model, p, sp)


def test_prefix_caching_reuses_and_matches(model):
    shared = _prompts(1, seed=11)[0] * 3  # a long common system prompt
    prompts = [shared + [i] for i in range(6)]
    params = SamplingParams(max_new_tokens=6, temperature=0)
    engine = Engine(model, num_blocks=120, block_size=4)
    first = engine.generate(prompts[:1], params)[0]
    rest = engine.generate(prompts[1:], params)
    assert first.cached_tokens == 0
    full_blocks = (len(shared)) // 4
    for o in rest:
        assert o.cached_tokens == full_blocks * 4
    # The engine tells the manager which K/V it wrote: prompt blocks after a prefill, generated ones
    # when a decode step fills them (all but the last token, which no step has run yet).
    assert engine.stats()["prefix_hit_tokens"] == sum(o.cached_tokens for o in rest)
    written = len(prompts[0]) + len(first.token_ids) - 1
    assert engine.blocks.lookup_prefix(prompts[0] + first.token_ids) == written // 4 * 4
    prefill_only = Engine(model, num_blocks=120, block_size=4)
    prefill_only.generate(prompts[:1], SamplingParams(max_new_tokens=1, temperature=0))  # no decode step
    assert prefill_only.blocks.lookup_prefix(prompts[0]) == len(prompts[0]) // 4 * 4
    for p, o in zip(prompts, [first, *rest]):
        assert o.token_ids == _alone(model, p, params)
    # submitted together: the first computes the shared blocks, the others reuse them in the same step
    together = Engine(model, num_blocks=120, block_size=4).generate(prompts, params)
    assert together[0].cached_tokens == 0 and all(o.cached_tokens == full_blocks * 4 for o in together[1:])
    assert [o.token_ids for o in together] == [o.token_ids for o in [first, *rest]]
    off = Engine(model, num_blocks=120, block_size=4, enable_prefix_caching=False).generate(prompts, params)
    assert all(o.cached_tokens == 0 for o in off)
    assert [o.token_ids for o in off] == [o.token_ids for o in [first, *rest]]


def test_generated_blocks_are_reused_by_the_next_turn(model):
    """Blocks a request filled while decoding are marked computed as they complete, so a next
    turn whose prompt repeats the conversation reuses them (the prompt's and the generated
    text's), and still generates what it would alone."""
    prompt = _prompts(1, seed=17)[0]
    params = SamplingParams(max_new_tokens=12, temperature=0)
    engine = Engine(model, num_blocks=60, block_size=4)
    first = engine.generate([prompt], params)[0]
    turn = prompt + first.token_ids + [5, 6]
    second = engine.generate([turn], params)[0]
    # every full block of the first turn's tokens but its last one, whose K/V it never computed
    done = len(prompt) + len(first.token_ids) - 1
    assert second.cached_tokens == done // 4 * 4 > len(prompt) // 4 * 4
    assert second.token_ids == _alone(model, turn, params)


def test_stops_logprobs_and_stream(model):
    prompt = _prompts(1, seed=13)[0]
    greedy = _alone(model, prompt, SamplingParams(max_new_tokens=8, temperature=0))
    stop = greedy[3]
    first_at = greedy.index(stop)
    engine = Engine(model, num_blocks=50, block_size=4)
    o = engine.generate(
        [prompt], SamplingParams(max_new_tokens=8, temperature=0, stop=[stop], logprobs=True)
    )[0]
    assert o.token_ids == greedy[: first_at + 1] and o.finish_reason == "stop"
    # log-probabilities: the model's own distribution at each step (full recomputation in float64)
    seq = torch.tensor([prompt + o.token_ids])
    with torch.no_grad():
        logits, _ = model(seq)
    lp = torch.log_softmax(logits[0].double(), -1)
    for i, t in enumerate(o.token_ids):
        assert o.logprobs[i] == pytest.approx(float(lp[len(prompt) - 1 + i, t]), abs=1e-9)
    streamed = [e.token_id for e in engine.stream(prompt, SamplingParams(max_new_tokens=8, temperature=0))]
    assert streamed == greedy


def test_bad_requests_name_the_problem():
    model = _model("gpt2")
    engine = Engine(model, num_blocks=8, block_size=4)
    with pytest.raises(ValueError, match="at least one token"):
        engine.add_request([])
    with pytest.raises(ValueError, match="token id 999 is out of range"):
        engine.add_request([1, 999])
    with pytest.raises(ValueError, match="needs 9 blocks; the cache has 8"):
        engine.add_request([1, 2, 3], SamplingParams(max_new_tokens=33))
    with pytest.raises(ValueError, match="text prompt needs"):
        engine.add_request("hello")
    with pytest.raises(ValueError, match="block_size=0 is out of range"):
        Engine(model, block_size=0)
    with pytest.raises(ValueError, match="num_blocks=0 is out of range"):
        Engine(model, num_blocks=0)
    with pytest.raises(TypeError, match="block_size must be an int"):
        Engine(model, block_size=4.0)
    with pytest.raises(TypeError, match="enable_prefix_caching must be a bool"):
        Engine(model, enable_prefix_caching=1)
    with pytest.raises(TypeError, match="params must be SamplingParams"):
        engine.add_request([1], {"max_new_tokens": 3})
    with pytest.raises(TypeError, match="sequence of token ids"):
        engine.add_request([1.5])
    with pytest.raises(ValueError, match="need a tokenizer"):
        engine.add_request([1], SamplingParams(stop=["x"]))
    with pytest.raises(ValueError, match="2 SamplingParams for 3 prompts"):
        engine.generate([[1], [2], [3]], [SamplingParams(), SamplingParams()])


def test_text_prompts_stop_strings_and_streamed_text():
    """With a tokenizer: str prompts, `.text` = decode(token_ids) cut at the stop string, streamed text
    adds up."""
    from fastllm import BPETokenizer

    tok = BPETokenizer.train(["to be or not to be, that is the question. " * 30], 280, show_progress=False)
    torch.manual_seed(1)
    model = MiniGPT(MiniGPTConfig.preset("tiny", vocab_size=300, context=96)).double().eval()
    engine = Engine(model, tokenizer=tok, num_blocks=40, block_size=4)
    prompt = "to be or"
    ids = tok.encode(prompt)
    greedy = _alone(model, ids, SamplingParams(max_new_tokens=10, temperature=0))
    text = tok.decode(greedy)
    o = engine.generate(prompt, SamplingParams(max_new_tokens=10, temperature=0))[0]
    assert o.prompt_token_ids == ids and o.token_ids == greedy and o.text == text
    streamed = "".join(
        e.text for e in engine.stream(prompt, SamplingParams(max_new_tokens=10, temperature=0))
    )
    assert streamed == text
    # a stop string: generation ends once the decoded text contains it, and .text is cut before it
    stop = tok.decode(greedy[2:4])
    s = engine.generate(prompt, SamplingParams(max_new_tokens=10, temperature=0, stop=[stop]))[0]
    assert s.finish_reason == "stop" and stop not in s.text and text.startswith(s.text)
    assert s.text == text[: text.find(stop)]


def test_decode_steps_attend_over_the_shared_prefix_once(model, monkeypatch):
    """Requests sharing a prompt prefix decode with the prefix's keys apart (`DecodeSet.prefix` >
    0) and still match generate alone; without prefix caching nothing is shared."""
    prefixes = []
    build = PagedKV._build_decode_set

    def spy(self, *args):
        work = build(self, *args)
        prefixes.append(work.prefix)
        return work

    monkeypatch.setattr(PagedKV, "_build_decode_set", spy)
    shared = _prompts(1, seed=21)[0] * 2
    prompts = [shared + [i, i + 1] * (i + 1) for i in range(5)]  # ragged tails after the shared part
    params = SamplingParams(max_new_tokens=9, temperature=0)
    outs = Engine(model, num_blocks=100, block_size=4).generate(prompts, params)
    assert max(prefixes) == len(shared) // 4 * 4
    for p, o in zip(prompts, outs):
        assert o.token_ids == _alone(model, p, params)
    prefixes.clear()
    Engine(model, num_blocks=100, block_size=4, enable_prefix_caching=False).generate(prompts, params)
    assert max(prefixes) == 0


@settings(max_examples=40, deadline=None)
@given(
    B=st.integers(1, 5),
    heads=st.sampled_from([(4, 4), (4, 2), (6, 1)]),
    blocks=st.integers(0, 3),
    block_size=st.sampled_from([1, 4]),
    tails=st.lists(st.integers(1, 9), min_size=5, max_size=5),
    seed=st.integers(0, 2**16),
)
def test_shared_prefix_attention_equals_plain_attention(B, heads, blocks, block_size, tails, seed):
    """`DecodeLayerKV.attend` (shared keys once + each sequence's own tail, one softmax) against
    `fastllm.attention` over each sequence's whole key list, in float64; the new token's K/V land
    in the paged cache and in the sequence's own buffer."""
    from fastllm import attention
    from fastllm.generation.paged import DecodeLayerKV

    Hq, H = heads
    D, P = 8, blocks * block_size
    g = torch.Generator().manual_seed(seed)
    lens = [P + t for t in tails[:B]]  # keys per sequence, the new token's included
    S, cap = max(lens) - P, max(lens) - P + 3
    rnd = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    shared_k, shared_v = rnd(H, P, D), rnd(H, P, D)
    own_k, own_v = rnd(B, H, cap, D), rnd(B, H, cap, D)
    q, k, v = rnd(B, Hq, 1, D), rnd(B, H, 1, D), rnd(B, H, 1, D)
    k_cache, v_cache = (
        torch.zeros(B, 1, H, D, dtype=torch.float64),
        torch.zeros(B, 1, H, D, dtype=torch.float64),
    )
    own_pos = torch.tensor([n - 1 - P for n in lens])
    bias = torch.zeros(B, 1, 1, S, dtype=torch.float64)
    bias.masked_fill_((torch.arange(S)[None] > own_pos[:, None])[:, None, None], float("-inf"))
    layer = DecodeLayerKV(
        k_cache,
        v_cache,
        torch.arange(B),
        torch.zeros(B, dtype=torch.long),
        own_k,
        own_v,
        shared_k if P else None,
        shared_v if P else None,
        torch.arange(B),
        own_pos,
        S,
        bias,
    )
    y = layer.attend(q, k, v, None)
    assert torch.equal(k_cache[:, 0], k[:, :, 0]) and torch.equal(v_cache[:, 0], v[:, :, 0])
    for i, n in enumerate(lens):
        assert torch.equal(own_k[i, :, n - 1 - P], k[i, :, 0])
        keys = torch.cat((shared_k, own_k[i, :, : n - P]), dim=1)[None]  # (1, H, n, D)
        values = torch.cat((shared_v, own_v[i, :, : n - P]), dim=1)[None]
        want = attention(q[i : i + 1], keys, values, causal=True)
        torch.testing.assert_close(y[i : i + 1], want, rtol=1e-12, atol=1e-12)


def test_equal_length_prefills_run_batched_and_match_alone(model, monkeypatch):
    """Chunks of one length run as one batched forward (the spy sees B > 1), a chunk waits for a
    pending one whose blocks it would reuse, and outputs still equal generate alone, also when
    the cache is so small that requests are preempted."""
    calls = []
    forward = Engine._forward

    def spy(self, seqs, starts, ends):
        calls.append(len(seqs))
        return forward(self, seqs, starts, ends)

    monkeypatch.setattr(Engine, "_forward", spy)
    rng = random.Random(7)
    shared = [rng.randrange(128) for _ in range(12)]
    prompts = [shared + [rng.randrange(128) for _ in range(5)] for _ in range(6)]  # equal lengths
    prompts += [[rng.randrange(128) for _ in range(9)] for _ in range(3)]  # unrelated, equal lengths
    params = SamplingParams(max_new_tokens=6, temperature=0)
    want = [_alone(model, p, params) for p in prompts]
    outs = Engine(model, num_blocks=200, block_size=4).generate(prompts, params)
    assert [o.token_ids for o in outs] == want
    assert max(calls) > 1
    assert sum(o.cached_tokens for o in outs) >= 5 * 12  # the shared prompt was computed once
    calls.clear()
    small = Engine(model, num_blocks=14, block_size=4, max_batch_size=9)
    outs = small.generate(prompts, params)
    assert [o.token_ids for o in outs] == want
    assert small.stats()["used"] == 0


# ------------------------------------------------------------------ zero tokens, abort, handover


def _idle(engine: Engine) -> bool:
    """Nothing queued or running, every block back (free or cached for reuse), nothing kept."""
    s = engine.stats()
    return (
        s["used"] == 0
        and s["running"] == 0
        and s["waiting"] == 0
        and s["free"] + s["cached_evictable"] == s["num_blocks"]
        and not engine.done
        and not engine.has_unfinished()
    )


def test_max_new_tokens_zero_makes_no_token_like_generate():
    """`generate` makes no token for max_new_tokens=0; the Engine's three ways agree: no tokens,
    finish reason "length", no blocks taken."""
    model = _model("gpt2")
    prompt = [3, 1, 4, 1, 5]
    zero = SamplingParams(max_new_tokens=0, temperature=0)
    assert generate(model, [prompt], zero)[0].tolist() == prompt  # the oracle
    engine = Engine(model, num_blocks=16, block_size=4)
    outs = engine.generate([prompt, [2, 7]], [zero, SamplingParams(max_new_tokens=3, temperature=0)])
    assert outs[0].token_ids == [] and outs[0].finish_reason == "length"
    assert outs[1].token_ids == _alone(model, [2, 7], SamplingParams(max_new_tokens=3, temperature=0))
    assert list(engine.stream(prompt, zero)) == []
    rid = engine.add_request(prompt, zero)
    assert engine.has_unfinished()
    (out,) = engine.step()
    assert out.request_id == rid and out.token_ids == [] and out.finish_reason == "length"
    assert _idle(engine)


@pytest.mark.parametrize("how", ["close", "drop"])
def test_abandoned_streams_abort_and_free_their_blocks(monkeypatch, how):
    """50 streams each read for a few tokens and then abandoned (closed, or just forgotten), then
    one stream runs to the end: none of the abandoned requests decodes another token, and every
    block comes back."""
    model = _model("gpt2")
    engine = Engine(model, num_blocks=400, block_size=4)
    params = SamplingParams(max_new_tokens=40, temperature=0)
    rng = random.Random(0)
    for i in range(50):
        stream = engine.stream(_prompts(1, seed=100 + i)[0], params)
        for _ in range(rng.randint(1, 4)):
            next(stream)
        if how == "close":
            stream.close()
        del stream  # "drop": CPython finalizes a forgotten generator at once
    assert engine.stats()["running"] == 0 and engine.stats()["used"] == 0
    batch_sizes = []
    decode = Engine._decode_forward
    monkeypatch.setattr(
        Engine, "_decode_forward", lambda self, seqs: batch_sizes.append(len(seqs)) or decode(self, seqs)
    )
    survivor = _prompts(1, seed=99)[0]
    assert [e.token_id for e in engine.stream(survivor, params)] == _alone(model, survivor, params)
    assert set(batch_sizes) == {1}  # only the survivor decoded
    assert _idle(engine)


def test_a_stream_collected_during_a_step_is_aborted_when_the_step_ends(monkeypatch):
    """A stream caught in a reference cycle is finalized whenever the cycle collector runs, maybe
    in the middle of another request's step: its abort waits for the step's end, then applies."""
    import gc

    model = _model("gpt2")
    engine = Engine(model, num_blocks=200, block_size=4)
    params = SamplingParams(max_new_tokens=30, temperature=0)
    batch_sizes, deferred = [], []
    decode = Engine._decode_forward

    def spy(self, seqs):
        if not batch_sizes:
            gc.collect()  # finalizes the abandoned streams now, inside this step
            deferred.append(len(self._deferred_aborts))
        batch_sizes.append(len(seqs))
        return decode(self, seqs)

    gc.disable()  # the abandoned streams stay alive until the collection inside the step
    try:
        for i in range(5):
            stream = engine.stream(_prompts(1, seed=200 + i)[0], params)
            next(stream)
            holder: list = [stream]
            holder.append(holder)
            del stream, holder
        assert engine.stats()["running"] == 5
        monkeypatch.setattr(Engine, "_decode_forward", spy)
        survivor = _prompts(1, seed=99)[0]
        assert [e.token_id for e in engine.stream(survivor, params)] == _alone(model, survivor, params)
    finally:
        gc.enable()
    assert deferred == [5] and batch_sizes[0] == 6 and set(batch_sizes[1:]) == {1}
    assert _idle(engine)


def test_abort_frees_waiting_running_and_unclaimed_requests():
    model = _model("gpt2")
    engine = Engine(model, num_blocks=12, block_size=4, max_batch_size=1)
    params = SamplingParams(max_new_tokens=5, temperature=0)
    running, waiting, done_early = (engine.add_request(p, params) for p in _prompts(3, seed=4))
    engine.step()  # admits one (max_batch_size=1)
    assert engine.stats()["running"] == 1 and engine.stats()["used"] > 0
    assert engine.abort(waiting) and engine.abort(running)
    assert not engine.abort(running) and not engine.abort(12345)  # nothing left to abort
    outs = []
    while engine.has_unfinished():
        outs += engine.step()
    assert [o.request_id for o in outs] == [done_early]
    # an output not yet handed over (its request finished during another call) is dropped by abort
    kept = engine.add_request([1, 2, 3], params)
    engine.generate([[4, 5]], params)
    assert kept in engine.done and engine.abort(kept) and kept not in engine.done
    assert engine.step() == [] and _idle(engine)


def test_outputs_are_handed_over_once():
    """step() returns each finished `add_request` output once, including those that finished while a
    `generate` call was stepping; `generate` keeps its own; nothing stays in `done`."""
    model = _model("gpt2")
    engine = Engine(model, num_blocks=100, block_size=4)
    params = SamplingParams(max_new_tokens=4, temperature=0)
    mine = [engine.add_request(p, params) for p in _prompts(5, seed=8)]
    theirs = engine.generate(_prompts(2, seed=9), SamplingParams(max_new_tokens=9, temperature=0))
    assert {o.request_id for o in theirs}.isdisjoint(mine)
    assert set(engine.done) == set(mine)  # finished during generate, waiting for the next step()
    got = []
    while engine.has_unfinished():
        got += engine.step()
    assert sorted(o.request_id for o in got) == sorted(mine)
    for o, p in zip(sorted(got, key=lambda o: o.request_id), _prompts(5, seed=8)):
        assert o.token_ids == _alone(model, p, params)
    assert _idle(engine) and engine.step() == []


def test_interrupted_generate_leaves_nothing_running(monkeypatch):
    model = _model("gpt2")
    engine = Engine(model, num_blocks=100, block_size=4)
    calls = []
    decode = Engine._decode_forward

    def interrupt(self, seqs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return decode(self, seqs)

    monkeypatch.setattr(Engine, "_decode_forward", interrupt)
    with pytest.raises(KeyboardInterrupt):
        engine.generate(_prompts(4, seed=2), SamplingParams(max_new_tokens=10, temperature=0))
    assert _idle(engine)
    with pytest.raises(ValueError, match="token id 999"):  # a bad prompt after good ones: none stay
        engine.generate([[1, 2], [3], [999]], SamplingParams(max_new_tokens=3))
    assert _idle(engine)
