"""Round trips and internal consistency of encode / decode / stream_decoder / batch encoding.

Oracles: the input itself (decode(encode(s)) == s, decode_bytes(encode(b)) == b), single-text
`encode` for the batch calls, and `decode` for the stream decoder. Run on a small trained
tokenizer and on the real GPT-2 and cl100k vocabularies (tests/fixtures/vocab).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastllm import BPETokenizer
from shared_data import vocab_file
from strategies import SPECIALS, any_text, source_corpus, text_with_specials, wordy_text

CL100K_SPECIALS = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}


def _trained(pattern):
    return BPETokenizer.train(
        [source_corpus(8000), "é中文😀 1234567\n\n  "],
        256 + 300,
        pattern=pattern,
        special_tokens=SPECIALS,
        show_progress=False,
    )


@pytest.fixture(scope="module", params=["trained-gpt4", "trained-gpt2", "gpt2", "cl100k"])
def tok(request) -> BPETokenizer:
    kind = request.param
    if kind.startswith("trained-"):
        return _trained(kind.removeprefix("trained-"))
    if kind == "gpt2":
        return BPETokenizer.from_gpt2(vocab_file("gpt2_encoder.json"), vocab_file("gpt2_vocab.bpe"))
    return BPETokenizer.from_tiktoken(vocab_file("cl100k_base.tiktoken"), "gpt4", CL100K_SPECIALS)


texts = st.one_of(any_text, wordy_text(), st.text(st.sampled_from(" \t\n\r\xa0\u3000"), max_size=40))


@given(text=texts)
def test_decode_inverts_encode(tok, text):
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text
    assert tok.decode_bytes(ids) == text.encode("utf-8")
    assert tok.encode_ordinary(text) == ids  # no specials spelled in these texts


@given(text=text_with_specials())
def test_decode_inverts_encode_with_specials(tok, text):
    specials = [s for s in SPECIALS if s in tok.special_tokens]
    assert tok.decode(tok.encode(text, allowed_special="all")) == text
    assert tok.decode(tok.encode_ordinary(text)) == text
    assert tok.decode(tok.encode(text, disallowed_special=())) == text
    if not any(s in text for s in specials):
        assert tok.encode(text) == tok.encode_ordinary(text)


@given(data=st.binary(max_size=300))
def test_bytes_round_trip_including_invalid_utf8(tok, data):
    ids = tok.encode(data)
    assert tok.decode_bytes(ids) == data
    assert tok.decode(ids) == data.decode("utf-8", errors="replace")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    assert ids == tok.encode(text)  # valid UTF-8 bytes encode exactly like the str


@given(
    text=st.text(
        st.characters(blacklist_categories=("Cs", "Cn"), blacklist_characters="\ufffd"), max_size=200
    )
)
def test_stream_decoder_never_splits_a_character(tok, text):
    # Plain text throughout: hypothesis also tries the string literals it finds in the package's
    # source, "<|endoftext|>" among them, which encode() refuses by default (as tiktoken does).
    ids = tok.encode(text, disallowed_special=())
    dec = tok.stream_decoder()
    chunks = [dec.feed(i) for i in ids]
    tail = dec.flush()
    assert "".join(chunks) + tail == tok.decode(ids) == text
    assert not any("\ufffd" in c for c in chunks)
    assert tail == ""


def test_stream_decoder_holds_back_a_cut_character(tok):
    """Byte tokens of one 4-byte emoji: nothing comes out until the last byte arrives."""
    emoji = "😀".encode()
    dec = tok.stream_decoder()
    out = [dec.feed(b) for b in tok.encode(emoji[:1]) + tok.encode(emoji[1:2]) + tok.encode(emoji[2:])]
    assert out[:-1] == [""] * (len(out) - 1) and out[-1] == "😀"
    dec = tok.stream_decoder()
    assert dec.feed(tok.encode(emoji[:2])[0]) == "" and dec.flush() == "\ufffd"


@settings(max_examples=60)
@given(batch=st.lists(st.one_of(any_text, wordy_text()), max_size=20), threads=st.sampled_from([None, 1, 2]))
def test_batch_equals_single(tok, batch, threads):
    singles = [tok.encode(t) for t in batch]
    assert tok.encode_batch(batch, num_threads=threads) == singles
    ids, offsets = tok.encode_batch_numpy(batch, num_threads=threads)
    assert ids.dtype == np.uint32 and offsets.dtype == np.int64
    assert ids.ndim == offsets.ndim == 1 and len(offsets) == len(batch) + 1
    assert offsets[0] == 0 and offsets[-1] == len(ids) and np.all(np.diff(offsets) >= 0)
    assert [ids[offsets[i] : offsets[i + 1]].tolist() for i in range(len(batch))] == singles


def test_batch_with_specials_follows_the_same_policy(tok):
    batch = ["a<|endoftext|>b", "<|endoftext|>", "plain"]
    allowed = [tok.encode(t, allowed_special="all") for t in batch]
    assert tok.encode_batch(batch, allowed_special="all") == allowed
    ids, offsets = tok.encode_batch_numpy(batch, num_threads=2, disallowed_special=())
    assert ids.tolist() == [i for t in batch for i in tok.encode_ordinary(t)]
    with pytest.raises(ValueError, match="endoftext"):
        tok.encode_batch(batch)
    with pytest.raises(ValueError, match="endoftext"):
        tok.encode_batch_numpy(batch, num_threads=2)


def test_decode_accepts_numpy_and_empty(tok):
    ids = tok.encode("hello world")
    assert tok.decode(np.array(ids, dtype=np.uint32)) == "hello world"
    assert tok.decode([]) == "" and tok.decode_bytes([]) == b"" and tok.encode("") == []
    ids, offsets = tok.encode_batch_numpy([])
    assert len(ids) == 0 and offsets.tolist() == [0]
    assert tok.encode_batch([]) == []
