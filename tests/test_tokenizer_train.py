"""BPETokenizer.train / train_files against the pure-Python reference trainer (reference_bpe.py).

Oracle: `reference_bpe.train` (naive full recount each step) on the pieces `reference_bpe.pretokenize`
cuts (the `regex` module running the same split pattern). Checked: identical merges, ids layout
(bytes, merges, then specials), vocab_size, identical results on 1 and 2 threads and from files,
and encodings equal to the reference encoder.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastllm
import reference_bpe as ref
from fastllm import BPETokenizer
from shared_data import corpus_text
from strategies import SPECIALS, any_text, corpus, source_corpus, text_with_specials, wordy_text

CUSTOM = r"\w+|\s+|[^\w\s]+"
PATTERNS = ["gpt4", "gpt2", CUSTOM]


def train(texts, vocab_size, **kw) -> BPETokenizer:
    return BPETokenizer.train(texts, vocab_size, show_progress=False, **kw)


def reference(texts, vocab_size, pattern="gpt4", specials=(), min_frequency=1):
    counts = ref.count_pieces(texts, pattern, specials)
    return ref.train(counts, vocab_size, min_frequency, len(specials))


@pytest.fixture(scope="module")
def source() -> str:
    return source_corpus(8000)


@pytest.mark.parametrize("pattern", PATTERNS, ids=["gpt4", "gpt2", "custom"])
def test_merges_match_reference_on_source_code(source, pattern):
    tok = train([source], 256 + 300, pattern=pattern)
    expected = reference([source], 256 + 300, pattern)
    assert len(expected) == 300
    assert tok.merges == expected
    assert tok.vocab_size == 256 + 300


def test_builtin_pattern_sources_are_tiktokens():
    assert train(["x"], 256, pattern="gpt4").pattern == ref.GPT4_PATTERN
    assert train(["x"], 256, pattern="gpt2").pattern == ref.GPT2_PATTERN
    assert train(["x"], 256, pattern=CUSTOM).pattern == CUSTOM


@given(
    texts=corpus,
    extra=st.integers(0, 120),
    pattern=st.sampled_from(PATTERNS),
    min_frequency=st.integers(1, 4),
)
def test_merges_match_reference_on_generated_corpora(texts, extra, pattern, min_frequency):
    if not any(ref.pretokenize(t, pattern) for t in texts):
        return  # an empty corpus is an error, checked in test_tokenizer_errors.py
    tok = train(texts, 256 + extra, pattern=pattern, min_frequency=min_frequency)
    expected = reference(texts, 256 + extra, pattern, min_frequency=min_frequency)
    assert tok.merges == expected
    assert tok.vocab_size == 256 + len(expected)  # stops early when pairs run out


@given(texts=st.lists(text_with_specials(), min_size=1, max_size=4), extra=st.integers(0, 60))
def test_specials_are_cut_out_and_numbered_after_the_merges(texts, extra):
    if not any(ref.pretokenize(t, "gpt4", SPECIALS) for t in texts):
        return
    tok = train(texts, 256 + extra + len(SPECIALS), special_tokens=SPECIALS)
    expected = reference(texts, 256 + extra + len(SPECIALS), "gpt4", SPECIALS)
    assert tok.merges == expected
    n = 256 + len(expected)
    assert tok.special_tokens == {s: n + i for i, s in enumerate(SPECIALS)}
    assert tok.vocab_size == n + len(SPECIALS)
    for s, i in tok.special_tokens.items():
        assert tok.encode(s, allowed_special="all") == [i]
        assert tok.token_bytes(i) == s.encode()


def test_specials_in_a_repetitive_corpus_never_merge():
    """ "<|endoftext|>" is the most frequent string here; it must still never become a merge."""
    texts = ["<|endoftext|>hello<|endoftext|><|endoftext|> world<|endoftext|>"] * 50
    tok = train(texts, 400, special_tokens=["<|endoftext|>"])
    assert tok.merges == reference(texts, 400, "gpt4", ["<|endoftext|>"])
    learned = {tok.token_bytes(256 + i) for i in range(len(tok.merges))}
    assert not any(b"<|" in t or b"|>" in t for t in learned)
    assert tok.encode("<|endoftext|>", allowed_special="all") == [tok.special_tokens["<|endoftext|>"]]


@pytest.mark.parametrize("min_frequency", [2, 5, 50])
def test_min_frequency_stops_early(source, min_frequency):
    tok = train([source], 256 + 2000, min_frequency=min_frequency)
    expected = reference([source], 256 + 2000, min_frequency=min_frequency)
    assert tok.merges == expected
    assert len(expected) < 2000  # really stopped by min_frequency, not by vocab_size


def test_ids_layout_bytes_then_merges(source):
    tok = train([source], 256 + 200)
    assert [tok.token_bytes(i) for i in range(256)] == [bytes([i]) for i in range(256)]
    assert [tok.token_bytes(i) for i in range(tok.vocab_size)] == ref.vocab_bytes(tok.merges)
    assert len(set(ref.vocab_bytes(tok.merges))) == tok.vocab_size  # no duplicate tokens


def test_duplicate_bytes_pairs_are_skipped():
    """ " a"+"b" and " "+"ab" both spell " ab": only the first may become a token."""
    texts = ["ab ab ab  ab a ab abab"] * 3 + ["x ab"] * 7
    tok = train(texts, 300)
    assert tok.merges == reference(texts, 300)
    spelled = ref.vocab_bytes(tok.merges)
    assert len(set(spelled)) == len(spelled)


@pytest.mark.parametrize("pattern", ["gpt4", "gpt2"])
def test_threads_do_not_change_the_result(source, pattern):
    texts = [source[i : i + 700] for i in range(0, len(source), 700)]
    one = train(texts, 256 + 400, pattern=pattern, num_threads=1)
    two = train(texts, 256 + 400, pattern=pattern, num_threads=2)
    assert one.merges == two.merges
    fastllm.set_num_threads(1)
    try:
        pooled = train(texts, 256 + 400, pattern=pattern)
    finally:
        fastllm.set_num_threads(None)
    assert pooled.merges == one.merges


def test_iterable_of_texts_is_streamed(source):
    lines = source.splitlines(keepends=True)
    from_list = train(lines, 256 + 150)
    from_generator = train((line for line in lines), 256 + 150)
    assert from_generator.merges == from_list.merges == reference(lines, 256 + 150)


@pytest.mark.parametrize("pattern", PATTERNS, ids=["gpt4", "gpt2", "custom"])
def test_train_files_equals_train(tmp_path, source, pattern):
    texts = [source[:3000], source[3000:5000] + "\n<|endoftext|>\n", source[5000:]]
    paths = []
    for i, text in enumerate(texts):
        paths.append(tmp_path / f"part{i}.txt")
        paths[-1].write_text(text, encoding="utf-8")
    kw = dict(pattern=pattern, special_tokens=["<|endoftext|>"], min_frequency=2)
    from_files = BPETokenizer.train_files(paths, 256 + 300, show_progress=False, **kw)
    from_texts = train(texts, 256 + 300, **kw)
    assert from_files.merges == from_texts.merges
    assert from_files.special_tokens == from_texts.special_tokens
    assert from_files.merges == reference(texts, 256 + 300, pattern, ["<|endoftext|>"], 2)


def test_train_files_on_a_real_corpus_equals_train(tmp_path):
    """A ~1 MB file spans several read blocks; block cuts must not change a single count.
    (tinyshakespeare from ../shared/data, else 1 MB of the standard-library corpus.)"""
    text = corpus_text("tinyshakespeare.txt", 1 << 20)
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    for threads in (1, 2):
        from_file = BPETokenizer.train_files([path], 256 + 500, show_progress=False, num_threads=threads)
        assert from_file.merges == train([text], 256 + 500).merges


def test_show_progress_does_not_change_the_result(source, capsys):
    quiet = train([source], 256 + 50)
    loud = BPETokenizer.train([source], 256 + 50, show_progress=True)
    assert loud.merges == quiet.merges


@pytest.fixture(scope="module")
def trained(source):
    specials = ["<|endoftext|>", "<|pad|>"]
    tok = train([source, "<|endoftext|>é中文😀 1234567\n\n  "], 256 + 400, special_tokens=specials)
    return tok, specials


@settings(max_examples=300)
@given(text=st.one_of(any_text, wordy_text(), text_with_specials()))
def test_encode_matches_reference_encoder(trained, text):
    tok, specials = trained
    expected = ref.encode(text, tok.merges, "gpt4", specials)
    assert tok.encode(text, allowed_special="all") == expected
    assert tok.encode_ordinary(text) == ref.encode(text, tok.merges, "gpt4")


@pytest.mark.parametrize("pattern", ["gpt4", "gpt2"])
def test_train_files_across_read_blocks(tmp_path, pattern):
    """~9 MB of whitespace-heavy lines: the file is read in more than one block, and counts must
    not change at the cut (GPT-2 reads "a \\n" differently from "a " + "\\n"; GPT-4 reads
    "\\n\\u3000\\n" as one piece; a special may itself contain a newline)."""
    import random

    rng = random.Random(1234)
    lines = [
        "a \n",
        "\n\u3000\n",
        "x\r\n",
        "  \n",
        "\n",
        "word\n",
        "<|sep|>\nafter\n",
        "é中\n",
        "\t\n",
        "y  \n",
        "!!\n\n",
        "'s\n",
        "9999\n",
        "\xa0\n",
    ]
    text = "".join(rng.choices(lines, k=2_200_000))
    data = text.encode()
    assert len(data) > (8 << 20), "must span more than one 8 MB read block"
    path = tmp_path / "big.txt"
    path.write_bytes(data)
    kw = dict(pattern=pattern, special_tokens=["<|sep|>\n"])
    from_file = BPETokenizer.train_files([path], 256 + 300, show_progress=False, num_threads=2, **kw)
    assert from_file.merges == train([text], 256 + 300, **kw).merges
