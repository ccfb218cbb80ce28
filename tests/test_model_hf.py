"""`fastllm.model.hf`, the checkpoint-folder loader: sharded folders, and what it refuses (house rule 13).

Oracles: a Hugging Face model saved by `transformers` itself, sharded and not, whose weights
MiniGPT must load identically either way; for the refusals, folders crafted by hand (a shard
name leaving the folder, a header whose shapes do not fit the config, a config that describes a
huge model, a JSON file over the cap, an integer weight, a truncated file), each of which must
raise a ValueError naming the problem before any weight is loaded: the loading functions are
replaced by ones that fail the test if called.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time

import pytest
import torch
import transformers
from safetensors.torch import save_file

import fastllm.model.hf as hf
from fastllm.model.gpt import MiniGPT, MiniGPTConfig, parameter_shapes

GPT2 = {"model_type": "gpt2", "vocab_size": 40, "n_positions": 8, "n_layer": 1, "n_head": 2, "n_embd": 8}


def _gpt2_state(vocab: int = 40, d: int = 8, positions: int = 8) -> dict[str, torch.Tensor]:
    """A GPT-2 state dict of one layer in Hugging Face's names and Conv1D (in, out) layout."""
    g = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.randn(*shape, generator=g)

    state = {"wte.weight": r(vocab, d), "wpe.weight": r(positions, d), "ln_f.weight": r(d), "ln_f.bias": r(d)}
    h = "h.0."
    state |= {
        h + "attn.c_attn.weight": r(d, 3 * d),
        h + "attn.c_attn.bias": r(3 * d),
        h + "attn.c_proj.weight": r(d, d),
        h + "attn.c_proj.bias": r(d),
        h + "mlp.c_fc.weight": r(d, 4 * d),
        h + "mlp.c_fc.bias": r(4 * d),
        h + "mlp.c_proj.weight": r(4 * d, d),
        h + "mlp.c_proj.bias": r(d),
    }
    for ln in ("ln_1", "ln_2"):
        state |= {h + f"{ln}.weight": r(d), h + f"{ln}.bias": r(d)}
    return state


def _folder(tmp_path, state, config=GPT2):
    (tmp_path / "config.json").write_text(json.dumps(config))
    save_file(state, str(tmp_path / "model.safetensors"))
    return tmp_path


@pytest.fixture
def no_weight_loading(monkeypatch):
    """Loading a weight fails the test: what is refused must be refused from the headers alone."""

    def forbidden(*args, **kwargs):
        raise AssertionError("a weight was loaded before the checkpoint was checked")

    monkeypatch.setattr(hf, "_tensors", forbidden)


def test_a_hand_made_gpt2_folder_loads_with_the_transposes(tmp_path):
    state = _gpt2_state()
    model = MiniGPT.from_pretrained(_folder(tmp_path, state))
    d = 8
    q, k, v = state["h.0.attn.c_attn.weight"].t().split(d)
    assert torch.equal(model.blocks[0].attn.k_proj.weight, k)
    assert torch.equal(model.blocks[0].mlp.fc.weight, state["h.0.mlp.c_fc.weight"].t())
    assert model.lm_head.weight is model.tok_emb.weight


def _as_bin(folder):
    """The same checkpoint as pytorch_model.bin files (what older transformers wrote)."""
    from safetensors.torch import load_file

    for path in folder.glob("*.safetensors"):
        torch.save(
            load_file(str(path)), path.with_name(path.name.replace("model", "pytorch_model")[:-12] + ".bin")
        )
        path.unlink()
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        data = json.loads(index.read_text())
        data["weight_map"] = {
            k: v.replace("model", "pytorch_model")[:-12] + ".bin" for k, v in data["weight_map"].items()
        }
        (folder / "pytorch_model.bin.index.json").write_text(json.dumps(data))
        index.unlink()


@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "bin"])
def test_sharded_folders_load_like_single_files(tmp_path, safe):
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=64, vocab_size=300, n_positions=64)
    ref = transformers.GPT2LMHeadModel(cfg)
    ref.save_pretrained(tmp_path / "one")
    ref.save_pretrained(tmp_path / "many", max_shard_size="100KB")
    if not safe:
        _as_bin(tmp_path / "one")
        _as_bin(tmp_path / "many")
    index = "model.safetensors.index.json" if safe else "pytorch_model.bin.index.json"
    assert (tmp_path / "many" / index).is_file() and len(list((tmp_path / "many").iterdir())) > 3
    one, many = MiniGPT.from_pretrained(tmp_path / "one"), MiniGPT.from_pretrained(tmp_path / "many")
    for name, p in one.state_dict().items():
        assert torch.equal(p, many.state_dict()[name]), name
    assert torch.equal(one.tok_emb.weight, ref.transformer.wte.weight)


@pytest.mark.parametrize(
    "shard", ["../outside.safetensors", "/tmp/outside.safetensors", "sub/../../outside.safetensors", ""]
)
def test_an_index_cannot_point_outside_the_folder(tmp_path, shard, no_weight_loading):
    inner = tmp_path / "ckpt"
    inner.mkdir()
    save_file(_gpt2_state(), str(tmp_path / "outside.safetensors"))  # a valid file, out of bounds
    (inner / "config.json").write_text(json.dumps(GPT2))
    weight_map = {name: shard for name in _gpt2_state()}
    (inner / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(ValueError, match="outside the checkpoint folder|not a file name"):
        MiniGPT.from_pretrained(inner)


def test_a_shard_inside_the_folder_is_fine_and_a_missing_one_is_named(tmp_path):
    (tmp_path / "sub").mkdir()
    save_file(_gpt2_state(), str(tmp_path / "sub" / "w.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(GPT2))
    index = {"weight_map": {name: "sub/w.safetensors" for name in _gpt2_state()}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    assert MiniGPT.from_pretrained(tmp_path).config.n_layer == 1
    index["weight_map"]["wte.weight"] = "gone.safetensors"
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(FileNotFoundError, match="gone.safetensors"):
        MiniGPT.from_pretrained(tmp_path)


def test_shapes_are_checked_from_the_headers(tmp_path, no_weight_loading):
    state = _gpt2_state()
    state["h.0.mlp.c_fc.weight"] = torch.zeros(8, 31)
    with pytest.raises(ValueError, match=r"blocks.0.mlp.fc.weight.*\(31, 8\).*expected \(32, 8\)"):
        MiniGPT.from_pretrained(_folder(tmp_path, state))


def test_a_fused_qkv_of_the_wrong_width_is_named(tmp_path, no_weight_loading):
    state = _gpt2_state()
    state["h.0.attn.c_attn.weight"] = torch.zeros(8, 20)
    with pytest.raises(ValueError, match=r"c_attn.*expected \(24, 8\)"):
        MiniGPT.from_pretrained(_folder(tmp_path, state))


@pytest.mark.parametrize("vocab", [10**10, 10**12, 10**30])
def test_a_config_of_a_huge_model_is_refused_without_allocating_it(tmp_path, vocab, no_weight_loading):
    """vocab_size 10**10 x d_model 8 is 320 GB of fp32 (this test fixes the machine's memory at
    64 GB): refused from the config, naming the field, before the headers are even read."""
    import fastllm.config

    t0 = time.perf_counter()
    with pytest.MonkeyPatch.context() as m:
        m.setattr(fastllm.config, "memory_bytes", lambda: 64 * 10**9)
        with pytest.raises(ValueError, match=rf"config.json.*64.0 GB.*vocab_size x d_model = {vocab:,} x 8"):
            MiniGPT.from_pretrained(_folder(tmp_path, _gpt2_state(), {**GPT2, "vocab_size": vocab}))
    assert time.perf_counter() - t0 < 10


def test_missing_and_unexpected_weights_are_named(tmp_path, no_weight_loading):
    state = _gpt2_state()
    del state["ln_f.bias"]
    with pytest.raises(ValueError, match="lacks weight 'ln_f.bias'"):
        MiniGPT.from_pretrained(_folder(tmp_path, state))
    state = _gpt2_state() | {"h.0.attn.extra": torch.zeros(2)}
    with pytest.raises(ValueError, match=r"unexpected \['h.0.attn.extra'\]"):
        MiniGPT.from_pretrained(_folder(tmp_path, state))


def test_integer_weights_are_refused(tmp_path, no_weight_loading):
    state = _gpt2_state()
    state["ln_f.bias"] = torch.zeros(8, dtype=torch.int32)
    with pytest.raises(ValueError, match="'ln_f.bias'.*I32"):
        MiniGPT.from_pretrained(_folder(tmp_path, state))


def test_truncated_and_foreign_weight_files(tmp_path, no_weight_loading):
    path = _folder(tmp_path, _gpt2_state()) / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-16])
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        MiniGPT.from_pretrained(tmp_path)
    path.unlink()
    (tmp_path / "pytorch_model.bin").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(ValueError, match="not a readable torch checkpoint"):
        MiniGPT.from_pretrained(tmp_path)
    # not a zip: torch reads it as a pre-zip (legacy) file, which cannot be memory-mapped
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x02 random bytes, no pickle")
    with pytest.raises(ValueError, match="not a readable torch checkpoint"):
        MiniGPT.from_pretrained(tmp_path)
    torch.save([torch.zeros(2)], tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="does not hold a state dict"):
        MiniGPT.from_pretrained(tmp_path)


def test_json_files_are_size_capped_and_must_be_objects(tmp_path, monkeypatch):
    _folder(tmp_path, _gpt2_state())
    monkeypatch.setattr(hf, "MAX_JSON_BYTES", 64)
    with pytest.raises(ValueError, match="config.json.*at most 64"):
        MiniGPT.from_pretrained(tmp_path)
    monkeypatch.setattr(hf, "MAX_JSON_BYTES", 1 << 20)
    for text, match in (("[1, 2]", "JSON object"), ("{nope", "not valid JSON")):
        (tmp_path / "config.json").write_text(text)
        with pytest.raises(ValueError, match=match):
            MiniGPT.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    "change,match",
    [
        ({"vocab_size": "40"}, "config.json.*vocab_size must be an int"),
        ({"n_head": 3}, "config.json.*n_head=3 must divide"),
        ({"n_embd": None}, "config.json.*lacks 'n_embd'"),
        ({"activation_function": "relu"}, "activation_function 'relu'"),
    ],
)
def test_bad_config_values_name_the_file(tmp_path, change, match, no_weight_loading):
    config = {k: v for k, v in {**GPT2, **change}.items() if v is not None}
    with pytest.raises(ValueError, match=match):
        MiniGPT.from_pretrained(_folder(tmp_path, _gpt2_state(), config))


def test_fastllm_folders_check_their_format_version(tmp_path, no_weight_loading):
    MiniGPT(MiniGPTConfig.preset("tiny")).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    for bad in ({"format_version": 2}, "1", None):
        (tmp_path / "config.json").write_text(json.dumps({**config, "fastllm": bad}))
        with pytest.raises(ValueError, match="format_version"):
            MiniGPT.from_pretrained(tmp_path)


def test_parameter_shapes_are_the_models_and_allocate_nothing():
    huge = parameter_shapes(MiniGPTConfig(vocab_size=10**10, d_model=64, n_head=4, n_layer=2))
    assert huge["tok_emb.weight"] == (10**10, 64)  # 2.5 TB had it been allocated
    for overrides in (
        {},
        dict(positions="rope", mlp="swiglu", n_kv_head=2, bias=False, tied_embeddings=False),
    ):
        config = MiniGPTConfig.preset("tiny", **overrides)
        real = {k: v.shape for k, v in MiniGPT(config).state_dict().items()}
        assert parameter_shapes(config) == real


# ------------------------------------------------------------------ hostile JSON, table-driven

LLAMA = {
    "model_type": "llama",
    "vocab_size": 40,
    "max_position_embeddings": 8,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "hidden_size": 8,
    "intermediate_size": 16,
}
FASTLLM = {
    "fastllm": {"format_version": 1},
    "model_type": "fastllm-minigpt",
    **dataclasses.asdict(MiniGPTConfig(vocab_size=40, context=8, n_layer=1, n_head=2, d_model=8)),
}
INDEX = "model.safetensors.index.json"


def _deep(n: int) -> str:
    return "[" * n + "]" * n


# (id, files to write: name -> JSON value or raw text, expected ValueError message). Every message
# must name the file it is about (config.json or the index) and the field.
HOSTILE_JSON = [
    ("config-list", {"config.json": [GPT2]}, r"config.json.*must hold a JSON object, not list"),
    ("config-number", {"config.json": 5}, r"config.json.*JSON object, not int"),
    ("config-deep", {"config.json": _deep(100_000)}, r"config.json.*not valid JSON"),
    (
        "config-huge-int",
        {"config.json": '{"vocab_size": ' + "9" * 5000 + "}"},
        r"config.json.*not valid JSON",
    ),
    ("model_type-list", {"config.json": {**GPT2, "model_type": [1]}}, r"model_type \[1\] in .*config.json"),
    (
        "gpt2-n_embd-list",
        {"config.json": {**GPT2, "n_embd": [8]}},
        r"config.json.*n_embd must be an int, not list",
    ),
    (
        "gpt2-n_embd-object",
        {"config.json": {**GPT2, "n_embd": {}}},
        r"config.json.*n_embd must be an int, not dict",
    ),
    ("gpt2-n_head-0", {"config.json": {**GPT2, "n_head": 0}}, r"config.json.*n_head=0 is out of range"),
    (
        "gpt2-vocab-float",
        {"config.json": {**GPT2, "vocab_size": 40.5}},
        r"config.json.*vocab_size must be an int",
    ),
    (
        "gpt2-n_layer-bool",
        {"config.json": {**GPT2, "n_layer": True}},
        r"config.json.*n_layer must be an int, not bool",
    ),
    (
        "gpt2-n_layer-huge",
        {"config.json": {**GPT2, "n_layer": 10**6}},
        r"config.json.*n_layer=1000000 is out of range",
    ),
    ("gpt2-n_inner-0", {"config.json": {**GPT2, "n_inner": 0}}, r"config.json.*n_inner=0 is out of range"),
    (
        "gpt2-act-list",
        {"config.json": {**GPT2, "activation_function": []}},
        r"config.json.*activation_function must be str",
    ),
    (
        "gpt2-eps-str",
        {"config.json": {**GPT2, "layer_norm_epsilon": "1e-5"}},
        r"config.json.*layer_norm_epsilon must be a number",
    ),
    (
        "gpt2-eps-negative",
        {"config.json": {**GPT2, "layer_norm_epsilon": -1}},
        r"config.json.*layer_norm_epsilon=-1.0",
    ),
    (
        "gpt2-tie-str",
        {"config.json": {**GPT2, "tie_word_embeddings": "yes"}},
        r"config.json.*tie_word_embeddings must be a bool",
    ),
    (
        "gpt2-scale-str",
        {"config.json": {**GPT2, "scale_attn_weights": "no"}},
        r"config.json.*scale_attn_weights must be a bool",
    ),
    (
        "gpt2-context-huge",
        {"config.json": {**GPT2, "n_positions": 10**13}},
        r"config.json.*pos_emb.weight, context x d_model",
    ),
    (
        "llama-heads-0",
        {"config.json": {**LLAMA, "num_attention_heads": 0}},
        r"config.json.*num_attention_heads=0 is out of range",
    ),
    (
        "llama-kv-heads-0",
        {"config.json": {**LLAMA, "num_key_value_heads": 0}},
        r"config.json.*num_key_value_heads=0 is out of range",
    ),
    (
        "llama-kv-heads-3",
        {"config.json": {**LLAMA, "num_key_value_heads": 3}},
        r"config.json.*n_kv_head=3 must divide",
    ),
    (
        "llama-hidden-list",
        {"config.json": {**LLAMA, "hidden_size": [8]}},
        r"config.json.*hidden_size must be an int, not list",
    ),
    (
        "llama-head_dim-str",
        {"config.json": {**LLAMA, "head_dim": "x"}},
        r"config.json.*head_dim must be an int, not str",
    ),
    ("llama-head_dim-wrong", {"config.json": {**LLAMA, "head_dim": 3}}, r"config.json.*head_dim=3"),
    (
        "llama-rope_parameters-list",
        {"config.json": {**LLAMA, "rope_parameters": [1]}},
        r"config.json.*rope_parameters must be dict, not list",
    ),
    (
        "llama-rope_scaling-str",
        {"config.json": {**LLAMA, "rope_scaling": "linear"}},
        r"config.json.*rope_scaling must be dict, not str",
    ),
    (
        "llama-rope_theta-str",
        {"config.json": {**LLAMA, "rope_parameters": {"rope_theta": "big"}}},
        r"config.json.*rope_parameters.rope_theta must be a number",
    ),
    (
        "llama-rope_theta-0",
        {"config.json": {**LLAMA, "rope_theta": 0}},
        r"config.json.*rope_theta=0.0 is out of range",
    ),
    (
        "llama-rope-type",
        {"config.json": {**LLAMA, "rope_parameters": {"rope_type": "yarn"}}},
        r"config.json.*rope_type 'yarn'",
    ),
    (
        "llama-act-int",
        {"config.json": {**LLAMA, "hidden_act": 5}},
        r"config.json.*hidden_act must be str, not int",
    ),
    (
        "llama-eps-list",
        {"config.json": {**LLAMA, "rms_norm_eps": [1]}},
        r"config.json.*rms_norm_eps must be a number",
    ),
    (
        "llama-intermediate-missing",
        {"config.json": {k: v for k, v in LLAMA.items() if k != "intermediate_size"}},
        r"config.json.*lacks 'intermediate_size'",
    ),
    ("fastllm-meta-number", {"config.json": {**FASTLLM, "fastllm": 5}}, r"config.json.*format_version=None"),
    (
        "fastllm-version-bool",
        {"config.json": {**FASTLLM, "fastllm": {"format_version": True}}},
        r"config.json.*format_version=True",
    ),
    (
        "fastllm-sha256-list",
        {"config.json": {**FASTLLM, "fastllm": {"format_version": 1, "sha256": [1]}}},
        r"config.json.*fastllm.sha256 must map",
    ),
    (
        "fastllm-sha256-short",
        {"config.json": {**FASTLLM, "fastllm": {"format_version": 1, "sha256": {"model.safetensors": "ab"}}}},
        r"config.json.*fastllm.sha256 must map",
    ),
    ("fastllm-n_head-0", {"config.json": {**FASTLLM, "n_head": 0}}, r"config.json.*n_head=0 is out of range"),
    (
        "fastllm-vocab-str",
        {"config.json": {**FASTLLM, "vocab_size": "40"}},
        r"config.json.*vocab_size must be an int",
    ),
    (
        "fastllm-vocab-huge",
        {"config.json": {**FASTLLM, "vocab_size": 10**12}},
        r"config.json.*vocab_size x d_model = 1,000,000,000,000 x 8",
    ),
    ("index-list", {INDEX: [1]}, r"index.json.*must hold a JSON object, not list"),
    ("index-string", {INDEX: "weights"}, r"index.json.*JSON object, not str"),
    (
        "weight_map-list",
        {INDEX: {"weight_map": ["model-1.safetensors"]}},
        r"index.json.*weight_map must be a non-empty JSON object.*not list",
    ),
    (
        "weight_map-empty",
        {INDEX: {"weight_map": {}}},
        r"index.json.*weight_map must be a non-empty JSON object",
    ),
    (
        "weight_map-missing",
        {INDEX: {"metadata": {}}},
        r"index.json.*weight_map must be a non-empty JSON object.*not NoneType",
    ),
    (
        "weight_map-number-name",
        {INDEX: {"weight_map": {"wte.weight": 3}}},
        r"index.json.*shard name 3 is not a file name",
    ),
    (
        "weight_map-mixed-names",
        {INDEX: {"weight_map": {"a": "x.safetensors", "b": 3}}},
        r"index.json.*shard name 3",
    ),
]


@pytest.mark.parametrize("files,match", [c[1:] for c in HOSTILE_JSON], ids=[c[0] for c in HOSTILE_JSON])
def test_hostile_json_is_a_value_error_naming_file_and_field(tmp_path, files, match, no_weight_loading):
    import fastllm.config

    _folder(tmp_path, _gpt2_state())
    if INDEX in files:  # the sharded layout: no single weight file
        (tmp_path / "model.safetensors").unlink()
    for name, value in files.items():
        (tmp_path / name).write_text(
            value if isinstance(value, str) and name == "config.json" else json.dumps(value)
        )
    with pytest.MonkeyPatch.context() as m:
        m.setattr(fastllm.config, "memory_bytes", lambda: 64 * 10**9)
        with pytest.raises(ValueError, match=match):
            MiniGPT.from_pretrained(tmp_path)


def test_every_llama_and_gpt2_config_field_is_checked_for_type(tmp_path, no_weight_loading):
    """Property: whatever JSON value of a wrong kind replaces a field (list, object, string, bool),
    loading raises a ValueError naming config.json and that field; never another exception."""
    for base in (GPT2, LLAMA):
        for field in (k for k in base if k != "model_type"):
            for bad in ([1], {"a": 1}, "7", True):
                (tmp_path / "config.json").write_text(json.dumps({**base, field: bad}))
                with pytest.raises(ValueError, match=rf"config.json.*{field}"):
                    MiniGPT.from_pretrained(tmp_path)


# ------------------------------------------------------------------ links leaving the folder


def _link(link, target):
    link.symlink_to(target)
    return link


@pytest.mark.parametrize("what", ["config", "weights", "shard", "shard-dir"])
def test_a_symlink_leaving_the_folder_is_refused(tmp_path, what, no_weight_loading):
    outside = tmp_path / "outside"
    outside.mkdir()
    save_file(_gpt2_state(), str(outside / "w.safetensors"))
    (outside / "config.json").write_text(json.dumps(GPT2))
    inner = tmp_path / "ckpt"
    inner.mkdir()
    if what == "config":
        _link(inner / "config.json", outside / "config.json")
        save_file(_gpt2_state(), str(inner / "model.safetensors"))
    else:
        (inner / "config.json").write_text(json.dumps(GPT2))
    if what == "weights":
        _link(inner / "model.safetensors", outside / "w.safetensors")
    elif what == "shard":
        _link(inner / "part-1.safetensors", outside / "w.safetensors")
        (inner / INDEX).write_text(
            json.dumps({"weight_map": {k: "part-1.safetensors" for k in _gpt2_state()}})
        )
    elif what == "shard-dir":
        _link(inner / "sub", outside)
        (inner / INDEX).write_text(
            json.dumps({"weight_map": {k: "sub/w.safetensors" for k in _gpt2_state()}})
        )
    with pytest.raises(ValueError, match=r"is a link to .*outside the checkpoint folder"):
        MiniGPT.from_pretrained(inner)


def test_links_inside_the_folder_and_the_hf_cache_layout_load(tmp_path):
    """Links that stay inside are fine: a linked folder, a linked shard, and the Hugging Face
    cache's snapshots/REV/file -> ../../blobs/HASH (the one place a link may reach a sibling)."""
    state = _gpt2_state()
    (tmp_path / "real").mkdir()
    real = _folder(tmp_path / "real", state)
    linked = _link(tmp_path / "linked", real)
    assert MiniGPT.from_pretrained(linked).config.n_layer == 1
    repo = tmp_path / "hub" / "models--org--tiny"
    (repo / "blobs").mkdir(parents=True)
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    save_file(state, str(repo / "blobs" / "1111"))
    (repo / "blobs" / "2222").write_text(json.dumps(GPT2))
    _link(snap / "model.safetensors", "../../blobs/1111")
    _link(snap / "config.json", "../../blobs/2222")
    model = MiniGPT.from_pretrained(snap)
    assert torch.equal(model.tok_emb.weight, state["wte.weight"])
    (tmp_path / "elsewhere").mkdir()
    save_file(state, str(tmp_path / "elsewhere" / "x"))
    (snap / "model.safetensors").unlink()
    _link(snap / "model.safetensors", tmp_path / "elsewhere" / "x")
    with pytest.raises(ValueError, match="outside the checkpoint folder"):
        MiniGPT.from_pretrained(snap)


# ------------------------------------------------------------------ checksums of save_pretrained folders


def _flip_inside_a_tensor(path, tensor: torch.Tensor, n: int = 64) -> None:
    """Flip `n` bytes of `tensor`'s data where it lies in the file at `path`."""
    raw = bytearray(path.read_bytes())
    needle = tensor.detach().contiguous().numpy().tobytes()[:n]
    at = raw.find(needle)
    assert at > 0 and raw.find(needle, at + 1) < 0
    raw[at : at + n] = bytes(b ^ 0xFF for b in raw[at : at + n])
    path.write_bytes(bytes(raw))


def test_a_flipped_weight_byte_in_a_saved_folder_is_refused(tmp_path):
    model = MiniGPT(MiniGPTConfig.preset("tiny"))
    model.save_pretrained(tmp_path)
    recorded = json.loads((tmp_path / "config.json").read_text())["fastllm"]["sha256"]["model.safetensors"]
    assert recorded == hashlib.sha256((tmp_path / "model.safetensors").read_bytes()).hexdigest()
    _flip_inside_a_tensor(tmp_path / "model.safetensors", model.blocks[1].mlp.fc.weight)
    with pytest.raises(ValueError, match=r"model.safetensors.*does not match the sha256.*config.json"):
        MiniGPT.from_pretrained(tmp_path)
    # without the checksum the flipped bytes would load silently: the oracle that they are weights
    config = json.loads((tmp_path / "config.json").read_text())
    del config["fastllm"]["sha256"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.warns(hf.UnverifiedCheckpointWarning, match="no weight checksums"):
        loaded = MiniGPT.from_pretrained(tmp_path)
    assert not torch.equal(loaded.blocks[1].mlp.fc.weight, model.blocks[1].mlp.fc.weight)
    assert torch.equal(loaded.blocks[0].mlp.fc.weight, model.blocks[0].mlp.fc.weight)


def test_a_checksum_map_without_the_weight_file_is_refused(tmp_path):
    MiniGPT(MiniGPTConfig.preset("tiny")).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["fastllm"]["sha256"] = {"other.safetensors": "0" * 64}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="no checksum for the weight file 'model.safetensors'"):
        MiniGPT.from_pretrained(tmp_path)
