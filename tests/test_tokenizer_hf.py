"""Hugging Face `tokenizer.json` interop, both directions.

Oracle: the `tokenizers` library. A file fastllm saves must load in HF and give the same ids; a
file HF trains and saves must load in fastllm and give HF's ids; saving and reloading in fastllm
must change nothing (merges, specials, pattern, ids).
"""

from __future__ import annotations

import json

import pytest
import tokenizers  # noqa: E402  (the `test` extra: the tokenizer.json oracle)
from hypothesis import example, given, settings
from hypothesis import strategies as st
from tokenizers import Regex, decoders, models, pre_tokenizers, trainers  # noqa: E402

from fastllm import BPETokenizer
from shared_data import corpus_text
from strategies import SPECIALS, any_text, source_corpus, text_with_specials, wordy_text

DIGITS = "100 200 2000 2020 2024 10000 1000000 0.001 $1,000,000 " * 5
CORPUS = [source_corpus(8000), DIGITS + "1234567 98765 3.14159 2024-01-01 é中文😀 'S 'll\n\n  \r\n"]
digit_runs = st.lists(
    st.sampled_from(["1", "2", "4", "0", "00", "000", "20", " ", ",", "\n"]), max_size=30
).map("".join)
texts = st.one_of(any_text, wordy_text(), text_with_specials(), digit_runs)


@pytest.fixture(scope="module", params=["gpt4", "gpt2"])
def saved(request, tmp_path_factory):
    tok = BPETokenizer.train(
        CORPUS, 256 + 400, pattern=request.param, special_tokens=SPECIALS, show_progress=False
    )
    path = tmp_path_factory.mktemp("hf") / f"{request.param}.json"
    tok.save(path)
    return tok, path


def test_saved_file_is_a_tokenizer_json(saved):
    tok, path = saved
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["model"]["type"] == "BPE"
    assert len(data["model"]["merges"]) == len(tok.merges)
    vocab = data["model"]["vocab"]
    assert sorted(vocab.values()) == list(range(tok.vocab_size))  # HF keeps specials in the vocab too
    assert all(vocab[s] == i for s, i in tok.special_tokens.items())
    assert {t["content"]: t["id"] for t in data["added_tokens"]} == tok.special_tokens
    assert all(t["special"] for t in data["added_tokens"])
    assert not list(path.parent.glob("*.tmp"))  # the atomic write left no temporary behind


@settings(max_examples=300)
@given(text=texts)
@example(text="2000 0000 1000000 6200")  # digit runs longer than 3: `\p{N}{1,3}+` reads differently in HF
def test_hf_loads_our_file_and_agrees(saved, text):
    tok, path = saved
    hf = _hf(path)
    ids = tok.encode(text, allowed_special="all")
    assert hf.encode(text, add_special_tokens=False).ids == ids
    assert hf.decode(ids, skip_special_tokens=False) == text


def test_hf_agrees_on_real_text(saved):
    tok, path = saved
    text = corpus_text("imdb_reviews_train.txt", 300_000)  # else 300 KB of the stdlib corpus
    lines = text.splitlines(keepends=True)
    hf = _hf(path)
    assert [e.ids for e in hf.encode_batch(lines, add_special_tokens=False)] == tok.encode_batch(lines)


def _hf(path):
    return tokenizers.Tokenizer.from_file(str(path))


@given(text=texts)
def test_reload_is_identical(saved, text):
    tok, path = saved
    again = BPETokenizer.from_file(path)
    assert again.encode(text, allowed_special="all") == tok.encode(text, allowed_special="all")
    assert again.encode_ordinary(text) == tok.encode_ordinary(text)


def test_reload_keeps_everything(saved, tmp_path):
    tok, path = saved
    again = BPETokenizer.from_file(path)
    assert again.merges == tok.merges
    assert again.special_tokens == tok.special_tokens
    assert again.pattern == tok.pattern
    assert again.vocab_size == tok.vocab_size
    assert [again.token_bytes(i) for i in range(tok.vocab_size)] == [
        tok.token_bytes(i) for i in range(tok.vocab_size)
    ]
    again.save(tmp_path / "again.json")  # a second save is byte-for-byte stable
    assert (tmp_path / "again.json").read_text(encoding="utf-8") == path.read_text(encoding="utf-8")


def _train_hf(pre_tokenizer, path):
    hf = tokenizers.Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizer
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<|endoftext|>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    hf.train_from_iterator(CORPUS, trainer=trainer)
    hf.save(str(path))
    return tokenizers.Tokenizer.from_file(str(path))


# HF's regex engine (Oniguruma) reads `\p{N}{1,3}+` as "one or more runs of 1-3 digits", so an HF
# pipeline meant to match GPT-4 writes `\p{N}{1,3}`, as Llama 3's tokenizer.json does.
HF_GPT4 = (
    r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*+"
    r"|\s++$|\s*[\r\n]|\s+(?!\S)|\s"
)
HF_PIPELINES = {
    "bytelevel-regex": lambda: pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    "split-gpt4": lambda: pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(HF_GPT4), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    ),
}


@pytest.fixture(scope="module", params=sorted(HF_PIPELINES))
def hf_made(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("hf-made") / "tokenizer.json"
    hf = _train_hf(HF_PIPELINES[request.param](), path)
    return hf, BPETokenizer.from_file(path)


def test_hf_made_file_loads(hf_made):
    hf, tok = hf_made
    assert tok.vocab_size == hf.get_vocab_size()
    assert tok.special_tokens == {"<|endoftext|>": 0, "<pad>": 1}
    assert len(tok.merges) == hf.get_vocab_size() - 256 - 2


@settings(max_examples=300)
@given(text=texts)
def test_hf_made_file_encodes_like_hf(hf_made, text):
    hf, tok = hf_made
    ids = hf.encode(text, add_special_tokens=False).ids
    assert tok.encode(text, allowed_special="all") == ids
    assert tok.decode(ids) == text


# Files fastllm cannot reproduce exactly must be refused with a ValueError, never mis-encoded.
def _variant_prefix_space(data):
    for p in data["pre_tokenizer"]["pretokenizers"]:
        if p["type"] == "ByteLevel":
            p["add_prefix_space"] = True


def _variant_ignore_merges(data):
    data["model"]["ignore_merges"] = True


def _variant_lowercase(data):
    data["normalizer"] = {"type": "Lowercase"}


def _variant_nfkc(data):
    data["normalizer"] = {"type": "NFKC"}


@pytest.mark.parametrize(
    "variant",
    [_variant_prefix_space, _variant_ignore_merges, _variant_lowercase, _variant_nfkc],
    ids=lambda f: f.__name__.removeprefix("_variant_"),
)
def test_variants_are_honoured_or_refused(tmp_path, variant):
    tok = BPETokenizer.train(CORPUS, 256 + 400, special_tokens=SPECIALS, show_progress=False)
    path = tmp_path / "variant.json"
    tok.save(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    variant(data)
    path.write_text(json.dumps(data), encoding="utf-8")
    hf = _hf(path)
    try:
        ours = BPETokenizer.from_file(path)
    except ValueError as e:
        assert "variant.json" in str(e)
        return
    for text in [
        "Hello World",
        "hello world",
        " def return self",
        "ﬁ ① Ｈｅｌｌｏ",
        "import json\n    return None",
    ]:
        assert ours.encode(text) == hf.encode(text, add_special_tokens=False).ids, text


@settings(max_examples=150)
@given(text=st.one_of(any_text, wordy_text()))
def test_custom_pattern_that_leaves_gaps(tmp_path_factory, text):
    """A custom regex that matches only letters: the text between matches becomes pieces of its
    own (HF's Split "isolated"), so nothing is lost and HF agrees on the saved file."""
    key = "letters-only"
    cache = test_custom_pattern_that_leaves_gaps.__dict__.setdefault("cache", {})
    if key not in cache:
        tok = BPETokenizer.train(CORPUS, 256 + 120, pattern=r"[A-Za-z]+", show_progress=False)
        path = tmp_path_factory.mktemp("gaps") / "tok.json"
        tok.save(path)
        cache[key] = (tok, _hf(path))
    tok, hf = cache[key]
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert hf.encode(text, add_special_tokens=False).ids == ids
