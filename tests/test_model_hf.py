"""`fastllm.model.hf`, the checkpoint-folder loader: sharded folders, and what it refuses (house rule 13).

Oracles: a Hugging Face model saved by `transformers` itself, sharded and not, whose weights
MiniGPT must load identically either way; for the refusals, folders crafted by hand (a shard
name leaving the folder, a header whose shapes do not fit the config, a config that describes a
huge model, a JSON file over the cap, an integer weight, a truncated file), each of which must
raise a ValueError naming the problem before any weight is loaded: the loading functions are
replaced by ones that fail the test if called.
"""

from __future__ import annotations

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


def test_a_config_of_a_huge_model_is_refused_without_allocating_it(tmp_path, no_weight_loading):
    """vocab_size 10**10 x d_model 8 would be 320 GB of fp32: the meta-device check refuses it at once."""
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"tok_emb.weight.*expected \(10000000000, 8\)"):
        MiniGPT.from_pretrained(_folder(tmp_path, _gpt2_state(), {**GPT2, "vocab_size": 10**10}))
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
        ({"n_embd": None}, "config.json.*lacks 'n_embd'|d_model must be an int"),
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
