"""MiniGPT, its attention dispatch and its checkpoints, against independent oracles.

Oracles: Hugging Face `transformers` (GPT2LMHeadModel, LlamaForCausalLM with eager attention) built
with random weights and saved to a temp dir, whose logits MiniGPT must reproduce after
`from_pretrained`; a naive softmax(QK^T/sqrt(d) + mask)V for `attention()`; `F.cross_entropy` for
the loss; the published GPT-2 small parameter count (124,439,808); and properties (causality,
save/load round trip). Everything is CPU, fp32, tiny shapes.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
import transformers
from hypothesis import given, settings
from hypothesis import strategies as st  # noqa: E402  (the `test` extra: the logits oracle)

from fastllm import attention
from fastllm.model.gpt import MiniGPT, MiniGPTConfig

VOCAB = 300


def _ids(batch: int = 2, length: int = 17, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (batch, length), generator=g)


def _naive_attention(q, k, v, causal=True):
    """softmax(q k^T / sqrt(d) + mask) v with kv heads repeated by hand; bottom-right causal mask."""
    n_head, n_kv = q.shape[1], k.shape[1]
    k = k.repeat_interleave(n_head // n_kv, dim=1)
    v = v.repeat_interleave(n_head // n_kv, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, H, Tq, Tk)
    if causal:
        tq, tk = scores.shape[-2:]
        allowed = torch.ones(tq, tk, dtype=torch.bool).tril(diagonal=tk - tq)
        scores = scores.masked_fill(~allowed, float("-inf"))
    return scores.softmax(dim=-1) @ v


# ------------------------------------------------------------------ attention


@pytest.mark.parametrize("n_head,n_kv", [(4, 4), (4, 2), (6, 1)])
@pytest.mark.parametrize("causal", [True, False])
def test_attention_matches_naive(n_head, n_kv, causal):
    torch.manual_seed(0)
    q = torch.randn(2, n_head, 9, 8)
    k, v = torch.randn(2, n_kv, 9, 8), torch.randn(2, n_kv, 9, 8)
    torch.testing.assert_close(
        attention(q, k, v, causal=causal), _naive_attention(q, k, v, causal), atol=1e-5, rtol=1e-5
    )


def test_attention_gqa_fallback_without_enable_gqa(monkeypatch):
    """The repeat_interleave path used on torch < 2.5 (no SDPA enable_gqa) agrees with the oracle."""
    import fastllm.model.attention as mod

    monkeypatch.setattr(mod, "SDPA_HAS_GQA", False)
    torch.manual_seed(2)
    q, k, v = torch.randn(2, 6, 5, 8), torch.randn(2, 2, 5, 8), torch.randn(2, 2, 5, 8)
    torch.testing.assert_close(attention(q, k, v), _naive_attention(q, k, v), atol=1e-5, rtol=1e-5)


def test_attention_fewer_queries_is_bottom_right_causal():
    torch.manual_seed(1)
    q, k, v = torch.randn(1, 4, 3, 8), torch.randn(1, 2, 7, 8), torch.randn(1, 2, 7, 8)
    torch.testing.assert_close(attention(q, k, v), _naive_attention(q, k, v), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "q_shape,k_shape,match",
    [
        ((1, 4, 3, 8), (1, 3, 3, 8), "n_kv_head=3"),
        ((1, 4, 3, 8), (1, 2, 3, 4), "head_dim"),
        ((4, 3, 8), (1, 2, 3, 8), "4-d"),
        ((1, 4, 5, 8), (1, 4, 3, 8), "T_q=5"),
    ],
)
def test_attention_rejects_bad_shapes(q_shape, k_shape, match):
    with pytest.raises(ValueError, match=match):
        attention(torch.zeros(q_shape), torch.zeros(k_shape), torch.zeros(k_shape))


# ------------------------------------------------------------------ Hugging Face parity


def _randomize(ref, std):
    """Every parameter random (norm gains/biases too, which HF inits to 1/0 and would hide a
    mix-up), large enough that exact vs tanh GELU or a wrong RoPE layout changes the logits."""
    with torch.no_grad():
        for name, p in ref.named_parameters():
            p.normal_(1.0 if "ln" in name or "norm" in name else 0.0, std)
    return ref


def _gpt2(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=64, vocab_size=VOCAB, n_positions=64)
    cfg._attn_implementation = "eager"
    ref = _randomize(transformers.GPT2LMHeadModel(cfg).eval(), 0.15)
    ref.save_pretrained(tmp_path)
    return ref


def _llama(tmp_path, tied):
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        max_position_embeddings=64,
        tie_word_embeddings=tied,
    )
    cfg._attn_implementation = "eager"
    ref = _randomize(transformers.LlamaForCausalLM(cfg).eval(), 0.15)
    ref.save_pretrained(tmp_path)
    return ref


def _assert_same_logits(ref, model):
    ids = _ids()
    with torch.no_grad():
        expected = ref(ids).logits
        got, loss = model(ids)
    assert loss is None
    assert got.shape == (2, 17, VOCAB)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_gpt2_logits_match_transformers(tmp_path):
    ref = _gpt2(tmp_path)
    model = MiniGPT.from_pretrained(tmp_path)
    c = model.config
    assert (c.positions, c.norm, c.mlp, c.tied_embeddings, c.bias) == (
        "learned",
        "layernorm",
        "gelu_tanh",
        True,
        True,
    )
    assert model.lm_head.weight is model.tok_emb.weight
    assert model.num_params() == ref.num_parameters()
    _assert_same_logits(ref, model)


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_llama_logits_match_transformers(tmp_path, tied):
    ref = _llama(tmp_path, tied)
    model = MiniGPT.from_pretrained(tmp_path)
    c = model.config
    assert (c.positions, c.norm, c.mlp, c.n_kv_head, c.tied_embeddings, c.bias) == (
        "rope",
        "rmsnorm",
        "swiglu",
        2,
        tied,
        False,
    )
    assert model.num_params() == ref.num_parameters()
    _assert_same_logits(ref, model)


def test_loads_pytorch_model_bin(tmp_path):
    ref = _gpt2(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save(ref.state_dict(), tmp_path / "pytorch_model.bin")
    _assert_same_logits(ref, MiniGPT.from_pretrained(tmp_path))


# ------------------------------------------------------------------ save / load


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        dict(positions="rope", norm="rmsnorm", mlp="swiglu", n_kv_head=2, bias=False, tied_embeddings=False),
    ],
    ids=["gpt2-style", "llama-style"],
)
def test_save_pretrained_round_trip(tmp_path, overrides):
    torch.manual_seed(0)
    model = MiniGPT(MiniGPTConfig.preset("tiny", vocab_size=VOCAB, **overrides)).eval()
    model.save_pretrained(tmp_path / "ckpt")
    files = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert files == ["config.json", "model.safetensors"]  # no temp files left behind
    meta = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert "fastllm" in meta
    from safetensors.torch import load_file

    stored = load_file(str(tmp_path / "ckpt" / "model.safetensors"))
    assert ("lm_head.weight" in stored) == (not model.config.tied_embeddings)  # tied: stored once
    loaded = MiniGPT.from_pretrained(tmp_path / "ckpt")
    assert loaded.config == model.config
    ids = _ids()
    with torch.no_grad():
        assert torch.equal(loaded(ids)[0], model(ids)[0])


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        MiniGPT.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="'bert'"):
        MiniGPT.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(
        json.dumps(
            {"model_type": "gpt2", "vocab_size": 10, "n_positions": 8, "n_layer": 1, "n_head": 2, "n_embd": 8}
        )
    )
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        MiniGPT.from_pretrained(tmp_path)


# ------------------------------------------------------------------ forward properties


def test_loss_equals_cross_entropy():
    torch.manual_seed(0)
    model = MiniGPT(MiniGPTConfig.preset("tiny", vocab_size=VOCAB)).eval()
    ids, targets = _ids(seed=1), _ids(seed=2)
    targets[0, :5] = -1  # ignored positions
    logits, loss = model(ids, targets)
    kept = targets.reshape(-1) != -1
    expected = F.cross_entropy(logits.reshape(-1, VOCAB)[kept], targets.reshape(-1)[kept])
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("positions", ["learned", "rope"])
def test_causality(positions):
    torch.manual_seed(0)
    model = MiniGPT(MiniGPTConfig.preset("tiny", vocab_size=VOCAB, positions=positions, n_kv_head=2)).eval()
    ids = _ids(batch=1, length=12)
    changed = ids.clone()
    t = 7
    changed[0, t] = (ids[0, t] + 1) % VOCAB
    with torch.no_grad():
        a, b = model(ids)[0], model(changed)[0]
    assert torch.equal(a[:, :t], b[:, :t])  # the past does not see the future
    assert not torch.allclose(a[:, t:], b[:, t:])  # but position t onwards does see the change


def test_rejects_too_long_input_and_bad_targets():
    model = MiniGPT(MiniGPTConfig.preset("tiny", vocab_size=VOCAB, context=16))
    with pytest.raises(ValueError, match=r"T=17.*context=16"):
        model(_ids(length=17))
    with pytest.raises(ValueError, match=r"\(2, 15\).*\(2, 16\)"):
        model(_ids(length=16), torch.zeros(2, 15, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(16,\)"):
        model(torch.zeros(16, dtype=torch.long))


# ------------------------------------------------------------------ config


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(d_model=66, n_head=4), "n_head=4.*d_model=66"),
        (dict(n_head=4, n_kv_head=3), "n_kv_head=3"),
        (dict(vocab_size=0), "vocab_size.*0"),
        (dict(context=-5), "context.*-5"),
        (dict(n_layer=0), "n_layer.*0"),
        (dict(mlp_hidden=0), "mlp_hidden.*0"),
        (dict(mlp="relu"), "mlp.*'relu'"),
        (dict(norm="batchnorm"), "norm.*'batchnorm'"),
        (dict(positions="alibi"), "positions.*'alibi'"),
        (dict(dropout=1.5), "dropout.*1.5"),
        (dict(norm_eps=0.0), "norm_eps.*0.0"),
        (dict(positions="rope", d_model=12, n_head=4), "head_dim=3"),
        (dict(n_layer=1025), r"n_layer=1025 is out of range: it must be <= 1024"),
    ],
)
def test_bad_config_raises_naming_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MiniGPTConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(n_layer=2.0), "n_layer must be an int, not float"),
        (dict(vocab_size="512"), "vocab_size must be an int, not str"),
        (dict(n_head=True), "n_head must be an int, not bool"),
        (dict(n_kv_head=1.5), "n_kv_head must be an int, not float"),
        (dict(mlp_hidden="big"), "mlp_hidden must be an int, not str"),
        (dict(mlp=None), "mlp must be one of 'gelu', 'gelu_tanh', 'swiglu'; got NoneType"),
        (dict(norm_eps="1e-5"), "norm_eps must be a number, not str"),
        (dict(rope_theta=None), "rope_theta must be a number, not NoneType"),
        (dict(dropout=True), "dropout must be a number, not bool"),
        (dict(tied_embeddings=1), "tied_embeddings must be a bool, not int"),
        (dict(bias="no"), "bias must be a bool, not str"),
    ],
)
def test_config_wrong_types_raise_type_error_naming_the_field(kwargs, match):
    with pytest.raises(TypeError, match=match):
        MiniGPTConfig(**kwargs)


def test_config_normalises_numbers_so_it_serialises():
    """numpy integers and int-valued floats are accepted and stored as plain int / float."""
    import dataclasses

    import numpy as np

    cfg = MiniGPTConfig(vocab_size=np.int64(300), n_layer=np.int32(2), norm_eps=1, dropout=0, rope_theta=10)
    assert type(cfg.vocab_size) is int and type(cfg.n_layer) is int
    assert type(cfg.norm_eps) is float and type(cfg.dropout) is float and type(cfg.rope_theta) is float
    assert json.loads(json.dumps(dataclasses.asdict(cfg)))["vocab_size"] == 300


def test_model_takes_only_a_config():
    with pytest.raises(TypeError, match="config must be MiniGPTConfig, not dict"):
        MiniGPT({"n_layer": 2})


def test_unknown_preset_and_field():
    with pytest.raises(ValueError, match="'huge'"):
        MiniGPTConfig.preset("huge")
    with pytest.raises(TypeError, match="preset must be one of"):
        MiniGPTConfig.preset(None)
    with pytest.raises(ValueError, match="n_layers"):
        MiniGPTConfig.preset("tiny", n_layers=3)


def test_config_defaults_resolve():
    assert MiniGPTConfig().n_kv_head == 12
    assert MiniGPTConfig().mlp_hidden == 4 * 768
    assert MiniGPTConfig(d_model=4096, n_head=32, mlp="swiglu").mlp_hidden == 11008  # Llama-7B


def test_preset_param_counts():
    gpt2 = MiniGPT(MiniGPTConfig.preset("gpt2"))
    assert gpt2.config == MiniGPTConfig()
    assert gpt2.num_params() == 124_439_808  # GPT-2 small, tied embeddings, learned positions
    assert gpt2.num_params(non_embedding=True) == 124_439_808 - 1024 * 768  # nanoGPT's 123.65M
    expected_flops = 6 * (124_439_808 - 1024 * 768) + 12 * 12 * 768 * 1024
    assert gpt2.flops_per_token() == expected_flops
    small = MiniGPT(MiniGPTConfig.preset("small")).num_params()
    assert 8_000_000 <= small <= 12_000_000
    tiny = MiniGPT(MiniGPTConfig.preset("tiny")).num_params()
    assert tiny < 200_000


@settings(max_examples=40)
@given(
    n_head=st.integers(1, 4),
    kv_div=st.sampled_from([1, 2, 4]),
    head_dim=st.sampled_from([2, 4]),
    n_layer=st.integers(1, 3),
    vocab=st.integers(1, 50),
    context=st.integers(1, 20),
    mlp=st.sampled_from(["gelu", "gelu_tanh", "swiglu"]),
    mlp_hidden=st.one_of(st.none(), st.integers(1, 40)),
    norm=st.sampled_from(["layernorm", "rmsnorm"]),
    positions=st.sampled_from(["learned", "rope"]),
    tied=st.booleans(),
    bias=st.booleans(),
)
def test_num_params_from_the_config_is_the_built_models(
    n_head, kv_div, head_dim, n_layer, vocab, context, mlp, mlp_hidden, norm, positions, tied, bias
):
    """Oracle: MiniGPT(config).num_params(), counted from the built model's tensors."""
    n_kv = n_head // kv_div if n_head % kv_div == 0 else n_head
    config = MiniGPTConfig(
        vocab_size=vocab,
        context=context,
        n_layer=n_layer,
        n_head=n_head,
        n_kv_head=n_kv,
        d_model=n_head * head_dim,
        mlp=mlp,
        mlp_hidden=mlp_hidden,
        norm=norm,
        positions=positions,
        tied_embeddings=tied,
        bias=bias,
    )
    assert config.num_params() == MiniGPT(config).num_params()
    assert sum(n for _, _, n in config.parameter_groups()) == config.num_params()


@pytest.mark.parametrize(
    "memory,fits",
    [(4 * 136960, True), (4 * 136960 - 1, False), (None, True)],
    ids=["exactly", "one-byte-short", "unknown-memory"],
)
def test_the_memory_rule_is_float32_parameters_against_physical_memory(monkeypatch, memory, fits):
    """The documented rule at its boundary: 4 bytes per parameter (tiny: 136,960) <= memory."""
    import fastllm.config

    monkeypatch.setattr(fastllm.config, "memory_bytes", lambda: memory)
    config = MiniGPTConfig.preset("tiny")
    if fits:
        fastllm.config.check_fits_in_memory(config, "here")
        assert MiniGPT(config).num_params() == 136960
    else:
        with pytest.raises(ValueError, match=r"here: .* 136,960 parameters .*tok_emb.weight|blocks"):
            fastllm.config.check_fits_in_memory(config, "here")
        with pytest.raises(ValueError, match=r"MiniGPT: this model has 136,960 parameters"):
            MiniGPT(config)
    with pytest.raises(ValueError, match=r"1,099.5 GB limit|GB of memory"):  # 1 TiB when unknown
        fastllm.config.check_fits_in_memory(MiniGPTConfig.preset("tiny", vocab_size=2**34), "here")


@pytest.mark.parametrize(
    "overrides,field",
    [
        (dict(vocab_size=10**12), "tok_emb.weight, vocab_size x d_model = 1,000,000,000,000 x 64"),
        (dict(context=10**12), "pos_emb.weight, context x d_model = 1,000,000,000,000 x 64"),
        (dict(mlp_hidden=10**12), "blocks, n_layer x .* = 2 x \\(64, 1,000,000,000,000\\)"),
        (dict(vocab_size=10**30, tied_embeddings=False), "vocab_size x d_model = 1(,000){10} x 64"),
    ],
)
def test_a_model_too_big_for_memory_is_refused_before_allocating(overrides, field):
    """The model names the field that makes it huge, at once; on the meta device it still builds."""
    config = MiniGPTConfig.preset("tiny", **overrides)
    with pytest.raises(ValueError, match=f"MiniGPT: this model has .* GB in float32.*{field}"):
        MiniGPT(config)
    if "vocab_size" in overrides and overrides["vocab_size"] < 2**62:
        with torch.device("meta"):
            assert MiniGPT(config).tok_emb.weight.shape[0] == overrides["vocab_size"]


def test_init_follows_gpt2():
    torch.manual_seed(0)
    model = MiniGPT(MiniGPTConfig.preset("gpt2", n_layer=8, vocab_size=VOCAB, context=64))
    scaled = 0.02 / math.sqrt(2 * 8)
    assert model.blocks[0].attn.q_proj.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.blocks[0].attn.o_proj.weight.std().item() == pytest.approx(scaled, rel=0.05)
    assert model.blocks[0].mlp.proj.weight.std().item() == pytest.approx(scaled, rel=0.05)
    assert torch.count_nonzero(model.blocks[0].attn.q_proj.bias) == 0
    llama = MiniGPT(MiniGPTConfig.preset("small", n_layer=8, vocab_size=VOCAB))
    assert llama.blocks[0].mlp.down_proj.weight.std().item() == pytest.approx(scaled, rel=0.05)
    assert llama.blocks[0].mlp.up_proj.weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_package_attention_stays_the_function_after_model_import():
    """`fastllm.attention` is the dispatch function, also once the model (which uses it) is imported."""
    import fastllm
    import fastllm.model.gpt  # noqa: F401  (imports the implementation module)

    q = torch.randn(1, 2, 3, 4)
    assert callable(fastllm.attention)
    torch.testing.assert_close(
        fastllm.attention(q, q, q), _naive_attention(q, q, q, True), atol=1e-5, rtol=1e-5
    )
