"""Id-for-id parity with tiktoken on the real cl100k_base and GPT-2 vocabularies.

Oracle: tiktoken itself, built locally from the same files (tests/fixtures/vocab, or
../shared/data/vocab; no network): cl100k from the `.tiktoken` rank file, GPT-2 from encoder.json +
vocab.bpe through tiktoken's own data-gym loader. Checked on generated text, hand-picked edge cases,
two ~1 MB slices of real text (tinyshakespeare and imdb from ../shared/data, else two slices of the
standard-library corpus; see tests/shared_data.py), decoding of arbitrary id sequences, every
token's bytes, and tiktoken's special-token rules.
"""

from __future__ import annotations

import pytest
import tiktoken  # noqa: E402  (the `test` extra: the parity oracle)
from hypothesis import given, settings
from hypothesis import strategies as st
from tiktoken.load import data_gym_to_mergeable_bpe_ranks, load_tiktoken_bpe  # noqa: E402

from fastllm import BPETokenizer
from reference_bpe import GPT2_PATTERN, GPT4_PATTERN
from shared_data import STDLIB, corpus_path, corpus_text, vocab_file
from strategies import any_text, text_with_specials, wordy_text

CL100K_SPECIALS = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}

TRICKY = [
    "",
    " ",
    "  ",
    "\n",
    "hello ",
    "hello  ",
    "hello\n",
    "hello\n  ",
    "x\n  \ny",
    " \n \n ",
    "\t\t\n",
    "'S",
    "'s",
    "'ſ",
    "'LL",
    "don't",
    "DON'T",
    "I'M",
    "we'Ve",
    "''s",
    "'",
    "a'",
    "1",
    "12",
    "123",
    "1234",
    "1234567890",
    "١٢٣٤",
    "3.14159",
    "v1.2.3",
    " 42",
    "x²³",
    "中文字符",
    "日本語のテキスト",
    "한국어",
    "Ελληνικά",
    "résumé",
    "e\u0301",
    "ﬁ",
    "👨\u200d👩\u200d👧\u200d👦",
    "👍🏽",
    "🇫🇷",
    "😀😀😀",
    "a😀b",
    "\r\n",
    "a\r\nb",
    "\r\r\n\n",
    "\u2028",
    "\xa0a",
    "\u3000x",
    "\x00\x01\x1f",
    "\x1c\x1d",
    "<|endoftext|>",
    "<|endof",
    "<|endoftext|",
    "def f(x):\n    return x  # ok\n",
    " " * 1000,
    "\n" * 500,
    "a" * 3000,
    "ab" * 1500,
    "😀" * 300,
    "1" * 1000,
]


@pytest.fixture(scope="module", autouse=True)
def _fresh_tiktoken_files():
    """tiktoken caches even local files under /tmp, keyed by path; an empty dir turns that off."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TIKTOKEN_CACHE_DIR", "")
        yield


@pytest.fixture(scope="module")
def cl100k(_fresh_tiktoken_files):
    path = vocab_file("cl100k_base.tiktoken")
    enc = tiktoken.Encoding(
        "cl100k_local",
        pat_str=GPT4_PATTERN,
        mergeable_ranks=load_tiktoken_bpe(str(path)),
        special_tokens=CL100K_SPECIALS,
    )
    return BPETokenizer.from_tiktoken(path, "gpt4", special_tokens=CL100K_SPECIALS), enc


@pytest.fixture(scope="module")
def gpt2(_fresh_tiktoken_files):
    encoder, bpe = vocab_file("gpt2_encoder.json"), vocab_file("gpt2_vocab.bpe")
    ranks = data_gym_to_mergeable_bpe_ranks(vocab_bpe_file=str(bpe), encoder_json_file=str(encoder))
    enc = tiktoken.Encoding(
        "gpt2_local",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": 50256},
        explicit_n_vocab=50257,
    )
    return BPETokenizer.from_gpt2(encoder, bpe), enc


@pytest.fixture(scope="module", params=["cl100k", "gpt2"])
def pair(request):
    return request.getfixturevalue(request.param)


def test_vocabulary_metadata(cl100k, gpt2):
    tok, enc = cl100k
    assert tok.vocab_size == enc.n_vocab == 100277
    assert tok.special_tokens == CL100K_SPECIALS
    assert tok.pattern == GPT4_PATTERN
    tok, enc = gpt2
    assert tok.vocab_size == enc.n_vocab == 50257
    assert tok.special_tokens == {"<|endoftext|>": 50256}
    assert tok.pattern == GPT2_PATTERN


@given(text=st.one_of(any_text, wordy_text()))
def test_generated_text(pair, text):
    tok, enc = pair
    try:
        expected = enc.encode(text)
    except ValueError:  # the text spells a special token: tiktoken raises, and so must we
        with pytest.raises(ValueError, match="special token"):
            tok.encode(text)
    else:
        assert tok.encode(text) == expected
    assert tok.encode_ordinary(text) == enc.encode_ordinary(text)


@given(text=text_with_specials())
def test_generated_text_with_specials(pair, text):
    tok, enc = pair
    assert tok.encode(text, allowed_special="all") == enc.encode(text, allowed_special="all")
    assert tok.encode(text, disallowed_special=()) == enc.encode(text, disallowed_special=())
    assert tok.encode_ordinary(text) == enc.encode_ordinary(text)


@pytest.mark.parametrize("text", TRICKY, ids=range(len(TRICKY)))
def test_tricky_strings(pair, text):
    tok, enc = pair
    assert tok.encode(text, allowed_special="all") == enc.encode(text, allowed_special="all")
    assert tok.encode_ordinary(text) == enc.encode_ordinary(text)


REAL_TEXT = [("tinyshakespeare.txt", 0), ("imdb_reviews_train.txt", 5 << 20)]


@pytest.mark.parametrize(
    "corpus,offset", REAL_TEXT, ids=[f"{c if corpus_path(c) else STDLIB}@{o}" for c, o in REAL_TEXT]
)
def test_real_text(pair, corpus, offset):
    tok, enc = pair
    text = corpus_text(corpus, 1 << 20, offset)
    expected = enc.encode_ordinary(text)
    assert tok.encode_ordinary(text) == expected
    assert tok.encode_batch(text.splitlines(keepends=True), num_threads=2) == enc.encode_ordinary_batch(
        text.splitlines(keepends=True), num_threads=2
    )
    assert tok.decode(expected) == text


@settings(max_examples=100)
@given(data=st.data())
def test_decode_of_arbitrary_ids(pair, data):
    tok, enc = pair
    ids = data.draw(
        st.lists(st.integers(0, enc.max_token_value).filter(lambda i: _is_token(enc, i)), max_size=50)
    )
    assert tok.decode_bytes(ids) == enc.decode_bytes(ids)
    assert tok.decode(ids) == enc.decode(ids)


def _is_token(enc, i: int) -> bool:
    try:
        enc.decode_single_token_bytes(i)
    except KeyError:
        return False
    return True


def test_every_token_bytes(pair):
    tok, enc = pair
    for i in range(enc.n_vocab):
        if _is_token(enc, i):
            assert tok.token_bytes(i) == enc.decode_single_token_bytes(i), i
        else:  # cl100k has unused ids between its specials
            with pytest.raises(ValueError, match=str(i)):
                tok.decode_bytes([i])


def test_special_token_rules(pair):
    tok, enc = pair
    text = "hello <|endoftext|> world"
    with pytest.raises(ValueError, match="endoftext"):
        enc.encode(text)
    with pytest.raises(ValueError, match="endoftext"):
        tok.encode(text)
    for kw in (
        {"allowed_special": "all"},
        {"allowed_special": {"<|endoftext|>"}},
        {"disallowed_special": ()},
    ):
        assert tok.encode(text, **kw) == enc.encode(text, **kw), kw
    assert enc.encode(text, allowed_special="all").count(tok.special_tokens["<|endoftext|>"]) == 1
    assert tok.encode_ordinary(text) == enc.encode_ordinary(text)
    assert tok.decode(tok.encode(text, allowed_special="all")) == text


def test_special_token_rules_cl100k(cl100k):
    tok, enc = cl100k
    text = "<|fim_prefix|>def f():<|fim_suffix|>\n<|fim_middle|>pass<|endoftext|>"
    allowed = {"<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"}
    with pytest.raises(ValueError, match="endoftext"):
        tok.encode(text, allowed_special=allowed)
    with pytest.raises(ValueError):
        enc.encode(text, allowed_special=allowed)
    kw = {"allowed_special": allowed, "disallowed_special": ()}
    assert tok.encode(text, **kw) == enc.encode(text, **kw)
    assert tok.encode(text, allowed_special="all") == enc.encode(text, allowed_special="all")
