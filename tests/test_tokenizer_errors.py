"""Bad input gets a clear Python exception of the right type whose message names the bad value.

Oracle: the API contract (ValueError / TypeError / FileNotFoundError, offending value in the
message). Also: pathological inputs that a quadratic encoder would hang on finish (their speed is
measured in benches/, not asserted here).
"""

from __future__ import annotations

import base64
import re

import pytest

import fastllm
from fastllm import BPETokenizer

SPECIAL = "<|endoftext|>"


@pytest.fixture(scope="module")
def tok() -> BPETokenizer:
    return BPETokenizer.train(
        ["hello world, hello there"] * 20, 280, special_tokens=[SPECIAL], show_progress=False
    )


def train(texts, vocab_size=300, **kw):
    return BPETokenizer.train(texts, vocab_size, show_progress=False, **kw)


# ---- training arguments ---------------------------------------------------------------------------


@pytest.mark.parametrize("vocab_size,specials", [(0, ()), (255, ()), (257, ("<a>", "<b>")), (-5, ())])
def test_vocab_size_too_small(vocab_size, specials):
    with pytest.raises(ValueError, match=re.escape(str(vocab_size))):
        train(["some text"], vocab_size, special_tokens=specials)


def test_vocab_size_exactly_the_minimum_is_fine():
    tok = train(["aaaa bbbb"], 256 + 2, special_tokens=["<a>", "<b>"])
    assert tok.merges == [] and tok.special_tokens == {"<a>": 256, "<b>": 257}


@pytest.mark.parametrize("texts", [[], [""], ["", ""], [SPECIAL], [SPECIAL * 3, ""]], ids=repr)
def test_empty_corpus(texts):
    with pytest.raises(ValueError, match="empty"):
        train(texts, special_tokens=[SPECIAL])


def test_empty_training_files(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text(SPECIAL + SPECIAL, encoding="utf-8")
    with pytest.raises(ValueError, match="empty"):
        BPETokenizer.train_files([path], 300, special_tokens=[SPECIAL], show_progress=False)


@pytest.mark.parametrize("pattern", ["(", "a)", "[a-", r"\p{Nope}", "*x"])
def test_invalid_pattern(pattern, tmp_path):
    with pytest.raises(ValueError, match=re.escape(pattern)):
        train(["text"], pattern=pattern)
    path = tmp_path / "bytes.tiktoken"
    path.write_text(
        "".join(f"{base64.b64encode(bytes([b])).decode()} {b}\n" for b in range(256)), encoding="utf-8"
    )
    assert BPETokenizer.from_tiktoken(path, "gpt2").encode("ab") == [97, 98]
    with pytest.raises(ValueError, match=re.escape(pattern)):
        BPETokenizer.from_tiktoken(path, pattern)


@pytest.mark.parametrize("value", [0, -1])
def test_min_frequency_below_one(value):
    with pytest.raises(ValueError, match="min_frequency"):
        train(["text"], min_frequency=value)


def test_bad_special_tokens():
    with pytest.raises(ValueError, match="''"):
        train(["text"], special_tokens=[""])
    with pytest.raises(ValueError, match=re.escape("<a>")):
        train(["text"], special_tokens=["<a>", "<a>"])


def test_surrogates_in_training_text():
    with pytest.raises(ValueError, match="surrogate"):
        train(["fine", "a\ud800b"])


def test_wrong_types_in_training():
    with pytest.raises(TypeError):
        train(["text", 42])
    with pytest.raises(TypeError):
        train([b"bytes"])
    with pytest.raises(TypeError):
        train("a bare string is not a list of texts")
    with pytest.raises(TypeError):
        train(["text"], "300")
    with pytest.raises(TypeError):
        train(["text"], pattern=None)
    with pytest.raises(TypeError, match="^vocab_size must be an int, not float"):
        train(["text"], 300.0)
    with pytest.raises(TypeError, match="^min_frequency must be an int, not float"):
        train(["text"], min_frequency=1.5)
    with pytest.raises(TypeError, match="^show_progress must be a bool, not int"):
        BPETokenizer.train(["text"], 300, show_progress=0)
    with pytest.raises(TypeError, match=r"^special_tokens\[1\] must be str, not int"):
        train(["text"], special_tokens=["<a>", 3])
    with pytest.raises(TypeError, match=r"^num_threads must be an int, not float"):
        train(["text"], num_threads=2.0)


def test_numpy_integers_are_counts():
    import numpy as np

    tok = train(["aaab"] * 4, np.int64(258), min_frequency=np.int32(1), num_threads=np.int64(1))
    assert tok.merges == [(97, 97), (97, 98)]


def test_wrong_types_of_tiktoken_special_ids(tmp_path):
    path = _byte_ranks(tmp_path)
    with pytest.raises(TypeError, match="must be an int, not bool"):
        BPETokenizer.from_tiktoken(path, "gpt2", special_tokens={SPECIAL: True})
    with pytest.raises(TypeError, match="must be an int, not str"):
        BPETokenizer.from_tiktoken(path, "gpt2", special_tokens={SPECIAL: "300"})
    with pytest.raises(TypeError, match="special token must be str, not int"):
        BPETokenizer.from_tiktoken(path, "gpt2", special_tokens={3: 300})
    with pytest.raises(ValueError, match="''"):
        BPETokenizer.from_tiktoken(path, "gpt2", special_tokens={"": 300})


# ---- threads ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-1, -8])
def test_negative_thread_counts(tok, bad):
    with pytest.raises(ValueError, match=str(bad)):
        train(["text"], num_threads=bad)
    with pytest.raises(ValueError, match=str(bad)):
        tok.encode_batch(["text"], num_threads=bad)
    with pytest.raises(ValueError, match=str(bad)):
        tok.encode_batch_numpy(["text"], num_threads=bad)
    with pytest.raises(ValueError, match=str(bad)):
        fastllm.set_num_threads(bad)


def test_zero_threads_per_call_is_invalid(tok):
    with pytest.raises(ValueError, match="num_threads"):
        tok.encode_batch(["text"], num_threads=0)


def test_set_num_threads_none_and_zero_mean_all_cores():
    for value in (1, 2, None, 0, 2):
        fastllm.set_num_threads(value)
    fastllm.set_num_threads(None)
    assert fastllm.get_num_threads() >= 1


# ---- files -----------------------------------------------------------------------------------------


def test_missing_files(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        BPETokenizer.train_files([missing], 300, show_progress=False)
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        BPETokenizer.from_file(missing)
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        BPETokenizer.from_tiktoken(missing, "gpt4")
    real = tmp_path / "real.bpe"
    real.write_text("#version: 0.2\n", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        BPETokenizer.from_gpt2(missing, real)
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        BPETokenizer.from_gpt2(real, missing)


def test_invalid_utf8_training_file_names_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"line one\nline two\nline \xff three\nline four\n")
    with pytest.raises(ValueError, match="bad.txt") as info:
        BPETokenizer.train_files([path], 300, show_progress=False)
    assert re.search(r"\bline 3\b|:3\b", str(info.value)), str(info.value)


@pytest.mark.parametrize(
    "content",
    [
        "",
        "not json",
        "{}",
        '{"model": {"type": "WordPiece", "vocab": {}}}',
        "[1, 2, 3]",
        '{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}}',
    ],
    ids=["empty", "not-json", "no-model", "wordpiece", "list", "dangling-merge"],
)
def test_malformed_tokenizer_json(tmp_path, content):
    path = tmp_path / "broken.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match="broken.json"):
        BPETokenizer.from_file(path)


def test_malformed_tiktoken_file_names_the_line(tmp_path):
    good = [f"{base64.b64encode(bytes([b])).decode()} {b}" for b in range(256)]
    for bad_line, lineno in [("!!notbase64 256", 257), ("YWI=", 257), ("YWI= x", 257)]:
        path = tmp_path / "broken.tiktoken"
        path.write_text("\n".join(good + [bad_line]) + "\n", encoding="utf-8")
        with pytest.raises(ValueError, match="broken.tiktoken") as info:
            BPETokenizer.from_tiktoken(path, "gpt4")
        assert re.search(rf"\bline {lineno}\b|:{lineno}\b", str(info.value)), str(info.value)


def test_malformed_gpt2_files(tmp_path):
    encoder, bpe = tmp_path / "encoder.json", tmp_path / "vocab.bpe"
    encoder.write_text("not json", encoding="utf-8")
    bpe.write_text("#version: 0.2\n", encoding="utf-8")
    with pytest.raises(ValueError, match="encoder.json"):
        BPETokenizer.from_gpt2(encoder, bpe)


# ---- encoding and decoding -------------------------------------------------------------------------


@pytest.mark.parametrize("bad_id", [-1, 281, 10**6, 2**32, 2**40])
def test_decode_out_of_range_id(tok, bad_id):
    with pytest.raises(ValueError, match=re.escape(str(bad_id))):
        tok.decode([1, 2, bad_id])
    with pytest.raises(ValueError, match=re.escape(str(bad_id))):
        tok.decode_bytes([bad_id])
    with pytest.raises(ValueError, match=re.escape(str(bad_id))):
        tok.token_bytes(bad_id)
    with pytest.raises(ValueError, match=re.escape(str(bad_id))):
        tok.stream_decoder().feed(bad_id)


def test_lone_surrogate(tok):
    for call in (
        tok.encode,
        tok.encode_ordinary,
        lambda t: tok.encode_batch(["ok", t]),
        lambda t: tok.encode_batch_numpy(["ok", t]),
    ):
        with pytest.raises(ValueError, match="surrogate"):
            call("a\ud800b")


def test_disallowed_special(tok):
    with pytest.raises(ValueError, match=re.escape(SPECIAL)):
        tok.encode(f"before {SPECIAL} after")
    with pytest.raises(ValueError, match=re.escape(SPECIAL)):
        tok.encode(f"x{SPECIAL}".encode())
    assert tok.encode(SPECIAL, allowed_special="all") == [tok.special_tokens[SPECIAL]]


def test_unknown_special_in_policy(tok):
    with pytest.raises(ValueError, match="<|nope|>"):
        tok.encode("x", allowed_special={"<|nope|>"})


def test_wrong_types_in_encoding(tok):
    for bad in (None, 42, ["a list"], 3.5):
        with pytest.raises(TypeError):
            tok.encode(bad)
    with pytest.raises(TypeError):
        tok.encode_batch("a bare string")
    with pytest.raises(TypeError):
        tok.encode_batch(["ok", 7])
    with pytest.raises(TypeError):
        tok.decode("not ids")
    with pytest.raises(TypeError):
        tok.decode([1.5])
    with pytest.raises(TypeError):
        tok.encode_batch(["ok"], num_threads="2")


def test_pathological_inputs_finish(tok):
    """A quadratic piece encoder would take minutes here; speed itself is measured in benches/."""
    for text in (" " * 1_000_000, "a" * 200_000, "ab" * 100_000, "\n" * 200_000, "1" * 200_000):
        assert tok.decode(tok.encode(text)) == text


def _byte_ranks(tmp_path):
    path = tmp_path / "bytes.tiktoken"
    path.write_text("".join(f"{base64.b64encode(bytes([b])).decode()} {b}\n" for b in range(256)))
    return path


def test_special_ids_far_above_the_vocabulary(tmp_path):
    path = _byte_ranks(tmp_path)
    with pytest.raises(ValueError, match=re.escape(str(2**40))):
        BPETokenizer.from_tiktoken(path, "gpt2", special_tokens={SPECIAL: 2**40})
    tok = BPETokenizer.from_tiktoken(path, "gpt2", special_tokens={SPECIAL: 2**30})
    ids = tok.encode("hi" + SPECIAL, allowed_special="all")
    assert ids == [104, 105, 2**30] and tok.decode(ids) == "hi" + SPECIAL
